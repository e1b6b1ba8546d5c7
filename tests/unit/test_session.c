/* Sync sessions: both directions, exact transfer, byte bounds, hostile input. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "sync/frame.h"

typedef struct fixture {
	char *dir;
	tu_clock clock;
} fixture;

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	f->dir = tu_mkdtemp();
	f->clock.now_ms = 1700000000000ull;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
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

static void append_n(weft_db *db, tu_clock *clock, int n, const char *scope)
{
	for (int i = 0; i < n; i++) {
		weft_id id;
		char p[32];
		snprintf(p, sizeof(p), "event %d", i);
		clock->now_ms++;
		tu_ok(db, weft_db_append(&id, db, scope, "note", NULL, p, strlen(p)));
	}
}

/* Same event ids in (hlc, id) order on both stores. */
static void assert_same_events(weft_db *a, weft_db *b)
{
	weft_iter *ia, *ib;
	tu_ok(a, weft_db_iter(&ia, a, NULL));
	tu_ok(b, weft_db_iter(&ib, b, NULL));
	for (;;) {
		const weft_event *ea, *eb;
		int ra = weft_iter_next(&ea, ia), rb = weft_iter_next(&eb, ib);
		assert_int_equal(ra, rb);
		if (ra != WEFT_OK)
			break;
		assert_memory_equal(weft_event_id(ea)->bytes, weft_event_id(eb)->bytes, 32);
	}
	weft_iter_free(ia);
	weft_iter_free(ib);
}

static void test_session_syncs_both_directions(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	append_n(a, &f->clock, 30, "home");
	append_n(b, &f->clock, 20, "home");
	weft_session_stats st;
	tu_ok(a, weft_sync_local(&st, a, b, NULL));
	assert_int_equal(events(a), 50);
	assert_int_equal(events(b), 50);
	assert_int_equal(st.events_sent, 30);
	assert_int_equal(st.events_received, 20);
	assert_same_events(a, b);
	/* Again: nothing moves. */
	tu_ok(a, weft_sync_local(&st, a, b, NULL));
	assert_int_equal(st.events_sent, 0);
	assert_int_equal(st.events_received, 0);
	assert_int_equal(st.round_trips, 1);
	weft_db_close(a);
	weft_db_close(b);
}

static void test_session_identical_large_stores_take_one_round_trip(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	append_n(a, &f->clock, 5000, "home");
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	weft_session_stats st;
	tu_ok(a, weft_sync_local(&st, a, b, NULL));
	assert_int_equal(st.events_sent, 5000);
	tu_ok(a, weft_sync_local(&st, a, b, NULL));
	assert_int_equal(st.round_trips, 1);
	assert_true(st.reconcile_bytes < 1024);
	weft_db_close(a);
	weft_db_close(b);
}

static void test_session_rejects_garbage_with_a_typed_error(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_session *s;
	tu_ok(a, weft_session_new(&s, a, WEFT_ROLE_SERVER, NULL));
	const unsigned char junk[] = {0x09, 0, 0, 0, 1, 0};
	int rc = weft_session_feed(s, junk, sizeof(junk), 1);
	assert_int_equal(rc, WEFT_EPROTO);
	assert_int_equal(weft_session_state_get(s), WEFT_SESSION_FAILED);
	const void *out;
	size_t len;
	weft_session_output(s, &out, &len);
	assert_true(len > FRAME_HEADER);
	assert_int_equal(((const unsigned char *)out)[0], FRAME_ERROR);
	weft_session_free(s);
	/* A header claiming 4 GiB is refused before any allocation. */
	tu_ok(a, weft_session_new(&s, a, WEFT_ROLE_SERVER, NULL));
	const unsigned char huge[] = {FRAME_HELLO, 0xff, 0xff, 0xff, 0xff};
	assert_int_equal(weft_session_feed(s, huge, sizeof(huge), 1), WEFT_ELIMIT);
	weft_session_free(s);
	weft_db_close(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_session_syncs_both_directions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_identical_large_stores_take_one_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_rejects_garbage_with_a_typed_error, setup, teardown),
	};
	return cmocka_run_group_tests_name("session", tests, NULL, NULL);
}
