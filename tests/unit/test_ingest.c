/* Ingest jobs checked on the verifier threads (core/ingest.c). */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ingest.h"
#include "core/store.h"

#define N 200 /* events of the source store: several chunks per job */

typedef struct fixture {
	char *dir;
	tu_clock clock;
	weft_db *src;
	unsigned char *bytes[N];
	weft_bytes ev[N];
} fixture;

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	f->dir = tu_mkdtemp();
	f->clock.now_ms = 1700000000000ull;
	f->src = tu_open(f->dir, "src.db", &f->clock, 1);
	for (int i = 0; i < N; i++) {
		weft_id id;
		char p[32];
		snprintf(p, sizeof(p), "event %d", i);
		f->clock.now_ms++;
		tu_ok(f->src, weft_db_append(&id, f->src, "home", "note", NULL, p, strlen(p)));
	}
	weft_iter *it;
	tu_ok(f->src, weft_db_iter(&it, f->src, NULL));
	const weft_event *e;
	for (int i = 0; i < N; i++) {
		tu_ok(f->src, weft_iter_next(&e, it));
		size_t len;
		const void *b = weft_event_bytes(e, &len);
		f->bytes[i] = malloc(len);
		memcpy(f->bytes[i], b, len);
		f->ev[i] = (weft_bytes){f->bytes[i], len};
	}
	weft_iter_free(it);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	for (int i = 0; i < N; i++)
		free(f->bytes[i]);
	weft_db_close(f->src);
	tu_rmdir(f->dir);
	free(f);
	return 0;
}

static uint64_t events(weft_db *db)
{
	weft_db_stats s;
	tu_ok(db, weft_db_stats_get(&s, db));
	return s.events;
}

/* Jobs submitted back to back finish in the caller's order, a cancelled
 * one stores nothing, and the bytes are the job's own once submitted. */
static void test_ingest_jobs_overlap_and_cancel(void **state)
{
	fixture *f = *state;
	weft_db *db = tu_open(f->dir, "dst.db", &f->clock, 2);
	weft_bytes copy[N];
	unsigned char *scratch[N];
	for (int i = 0; i < N; i++) {
		scratch[i] = malloc(f->ev[i].len);
		memcpy(scratch[i], f->ev[i].data, f->ev[i].len);
		copy[i] = (weft_bytes){scratch[i], f->ev[i].len};
	}
	ingest_job *j1, *j2, *j3;
	tu_ok(db, ingest_submit(&j1, db, copy, 80));
	tu_ok(db, ingest_submit(&j2, db, copy + 80, 60));
	tu_ok(db, ingest_submit(&j3, db, copy + 140, 60));
	assert_int_equal(ingest_count(j2), 60);
	/* The caller's buffers may go at once. */
	for (int i = 0; i < N; i++) {
		memset(scratch[i], 0xee, copy[i].len);
		free(scratch[i]);
	}
	int result[N];
	tu_ok(db, ingest_finish(j1, result));
	for (int i = 0; i < 80; i++)
		assert_int_equal(result[i], WEFT_INGEST_NEW);
	assert_int_equal(events(db), 80);
	ingest_cancel(j2);
	assert_int_equal(events(db), 80);
	tu_ok(db, ingest_finish(j3, result));
	for (int i = 0; i < 60; i++)
		assert_int_equal(result[i], WEFT_INGEST_NEW);
	assert_int_equal(events(db), 140);
	/* Again: duplicates are no-ops, the cancelled ones arrive now. */
	tu_ok(db, ingest_submit(&j1, db, f->ev, N));
	assert_true(ingest_ready(j1) == 0 || ingest_ready(j1) == 1);
	tu_ok(db, ingest_finish(j1, result));
	for (int i = 0; i < N; i++)
		assert_int_equal(result[i], i >= 80 && i < 140 ? WEFT_INGEST_NEW : WEFT_INGEST_DUPLICATE);
	assert_int_equal(events(db), N);
	/* Closing with a job still queued is the caller's bug, but a job
	 * cancelled right after submission leaves nothing behind. */
	tu_ok(db, ingest_submit(&j1, db, f->ev, N));
	ingest_cancel(j1);
	ingest_cancel(NULL);
	weft_db_close(db);
}

/* A session asks ingest_job_ids what is on its way to the store while the
 * checks run: the ids of the job's events, zero for bytes that do not
 * decode, and the job is unaffected. */
static void test_ingest_job_ids_while_checking(void **state)
{
	fixture *f = *state;
	weft_db *db = tu_open(f->dir, "dst.db", &f->clock, 2);
	weft_bytes b[N];
	memcpy(b, f->ev, sizeof(b));
	unsigned char junk[3] = {1, 2, 3};
	b[5] = (weft_bytes){junk, sizeof(junk)};
	ingest_job *j;
	tu_ok(db, ingest_submit(&j, db, b, N));
	weft_id ids[N], zero;
	memset(&zero, 0, sizeof(zero));
	ingest_job_ids(j, ids);
	for (int i = 0; i < N; i++) {
		if (i == 5) {
			assert_memory_equal(ids[i].bytes, zero.bytes, 32);
			continue;
		}
		weft_event *ev;
		tu_ok(f->src, weft_event_decode(&ev, f->ev[i].data, f->ev[i].len, 0));
		assert_memory_equal(ids[i].bytes, weft_event_id(ev)->bytes, 32);
		weft_event_free(ev);
	}
	int result[N];
	tu_ok(db, ingest_finish(j, result));
	assert_true(result[5] < 0);
	assert_int_equal(events(db), N - 1);
	weft_db_close(db);
}

/* A batch checked in chunks on several threads reports the first refusal
 * by its index, refuses bad events alone and stores the rest together. */
static void test_ingest_batch_refuses_bad_events_alone(void **state)
{
	fixture *f = *state;
	weft_db *db = tu_open(f->dir, "dst.db", &f->clock, 2);
	unsigned char *bad[2];
	weft_bytes b[N];
	memcpy(b, f->ev, sizeof(b));
	int at[2] = {37, 170};
	for (int k = 0; k < 2; k++) {
		bad[k] = malloc(b[at[k]].len);
		memcpy(bad[k], b[at[k]].data, b[at[k]].len);
		bad[k][40] ^= 1; /* in the header: the signature no longer matches */
		b[at[k]].data = bad[k];
	}
	int result[N];
	tu_ok(db, weft_db_ingest_batch(result, db, b, N));
	for (int i = 0; i < N; i++) {
		if (i == at[0] || i == at[1])
			assert_int_equal(result[i], WEFT_EAUTH);
		else
			assert_int_equal(result[i], WEFT_INGEST_NEW);
	}
	assert_non_null(strstr(weft_errmsg(db), "event 37 of the batch refused"));
	assert_int_equal(events(db), N - 2);
	/* The same through a job, with the whole batch bad but one. */
	for (int i = 0; i < N; i++)
		b[i] = (weft_bytes){bad[0], f->ev[at[0]].len};
	b[N - 1] = f->ev[at[0]];
	ingest_job *j;
	tu_ok(db, ingest_submit(&j, db, b, N));
	tu_ok(db, ingest_finish(j, result));
	assert_int_equal(result[0], WEFT_EAUTH);
	assert_int_equal(result[N - 2], WEFT_EAUTH);
	assert_int_equal(result[N - 1], WEFT_INGEST_NEW);
	assert_non_null(strstr(weft_errmsg(db), "event 0 of the batch refused"));
	assert_int_equal(events(db), N - 1);
	free(bad[0]);
	free(bad[1]);
	weft_db_close(db);
}

/* A read transaction spans many reads and nests in nothing. */
static void test_ingest_read_transaction(void **state)
{
	fixture *f = *state;
	int began, inner;
	tu_ok(f->src, store_read_begin(f->src, &began));
	assert_int_equal(began, 1);
	tu_ok(f->src, store_read_begin(f->src, &inner));
	assert_int_equal(inner, 0);
	weft_iter *it;
	tu_ok(f->src, weft_db_iter(&it, f->src, NULL));
	const weft_event *e;
	for (int i = 0; i < N; i++) {
		tu_ok(f->src, weft_iter_next(&e, it));
		weft_event *got;
		tu_ok(f->src, weft_db_get(&got, f->src, weft_event_id(e)));
		weft_event_free(got);
	}
	weft_iter_free(it);
	store_read_end(f->src, inner);
	store_read_end(f->src, began);
	/* Writing works again afterwards. */
	weft_id id;
	tu_ok(f->src, weft_db_append(&id, f->src, "home", "note", NULL, "x", 1));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ingest_jobs_overlap_and_cancel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ingest_job_ids_while_checking, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ingest_batch_refuses_bad_events_alone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ingest_read_transaction, setup, teardown),
	};
	return cmocka_run_group_tests_name("ingest", tests, NULL, NULL);
}
