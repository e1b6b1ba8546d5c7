/*
 * Storage faults: the Nth read, write, sync or lock of a store fails with
 * SQLITE_IOERR (or the disk is full), once or from then on, swept over N
 * across an append, the ingest of a batch, a rebuild and a whole sync
 * (faulting either side). After every fault:
 *  - the call that hit it returned a negative code and a message;
 *  - the store reopens (faults off), PRAGMA integrity_check is ok, every
 *    event verifies, and the derived tables equal a rebuild;
 *  - every event reported written is present, a batch is all or nothing,
 *    and the store keeps working (an append after it chains correctly, a
 *    sync after it converges).
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultutil.h"
#include "faultvfs.h"

#define SEED_VICTIM 0x41
#define SEED_PEER 0x42
#define SEED_SOURCE 0x43

static char victim_tpl[700], peer_tpl[700], source_tpl[700];
static char victim[700], peer[700];

/* ------------------------------------------------------------ templates */

static int setup(void **state)
{
	(void)state;
	fu_path_to(victim_tpl, "victim-template.db");
	fu_path_to(peer_tpl, "peer-template.db");
	fu_path_to(source_tpl, "source-template.db");
	fu_path_to(victim, "victim.db");
	fu_path_to(peer, "peer.db");
	fu_make_store(victim_tpl, SEED_VICTIM, 24, 1);
	fu_make_store(peer_tpl, SEED_PEER, 18, 2);
	fu_make_store(source_tpl, SEED_SOURCE, 40, 3);
	return 0;
}

/* ------------------------------------------------------------ workloads */

typedef struct ctx {
	weft_db *v, *p;  /* victim and peer (or source) */
	fu_ids acked;     /* events the victim reported written */
	fu_ids batch;     /* ids of the batch being ingested */
	weft_bytes *bytes;
	size_t nbytes;
	weft_event **evs;
} ctx;

typedef struct workload {
	const char *name;
	const char *peer_tpl; /* NULL: no second store */
	int (*run)(ctx *c);
	void (*after)(ctx *c, int rc); /* checks on the reopened stores */
} workload;

static int run_append(ctx *c)
{
	return fu_write(c->v, 7, 9, &c->acked);
}

static void after_append(ctx *c, int rc)
{
	(void)rc;
	for (size_t i = 0; i < c->acked.n; i++)
		assert_true(fu_has(c->v, &c->acked.v[i]));
	/* The chain goes on from what is stored: no gap, no fork. */
	weft_id id;
	assert_int_equal(weft_db_append(&id, c->v, "notes", "note.put", NULL, "after", 5), WEFT_OK);
	weft_db_stats st;
	assert_int_equal(weft_db_stats_get(&st, c->v), WEFT_OK);
	assert_int_equal(st.forked_authors, 0);
}

static void load_batch(ctx *c)
{
	weft_iter *it;
	assert_int_equal(weft_db_iter(&it, c->p, NULL), WEFT_OK);
	const weft_event *ev;
	size_t cap = 64;
	c->bytes = calloc(cap, sizeof(weft_bytes));
	c->evs = calloc(cap, sizeof(weft_event *));
	while (weft_iter_next(&ev, it) == WEFT_OK && c->nbytes < cap) {
		weft_event *copy;
		assert_int_equal(weft_db_get(&copy, c->p, weft_event_id(ev)), WEFT_OK);
		c->evs[c->nbytes] = copy;
		c->bytes[c->nbytes].data = weft_event_bytes(copy, &c->bytes[c->nbytes].len);
		fu_ids_add(&c->batch, weft_event_id(copy));
		c->nbytes++;
	}
	weft_iter_free(it);
}

static int run_ingest(ctx *c)
{
	int result[64];
	return weft_db_ingest_batch(result, c->v, c->bytes, c->nbytes);
}

static void after_ingest(ctx *c, int rc)
{
	size_t present = 0;
	for (size_t i = 0; i < c->batch.n; i++)
		present += (size_t)fu_has(c->v, &c->batch.v[i]);
	if (present != 0 && present != c->batch.n)
		print_error("a failed batch was committed in part: %zu of %zu events\n", present, c->batch.n);
	assert_true(present == 0 || present == c->batch.n);
	if (rc == WEFT_OK)
		assert_int_equal(present, c->batch.n);
}

static int run_rebuild(ctx *c)
{
	return weft_db_rebuild(c->v, NULL, NULL);
}

static void after_nothing(ctx *c, int rc)
{
	(void)c, (void)rc;
}

static int run_sync(ctx *c)
{
	weft_session_stats st;
	return weft_sync_local(&st, c->v, c->p, NULL);
}

static void after_sync(ctx *c, int rc)
{
	(void)rc;
	/* Resuming works: a sync without faults converges. */
	weft_session_stats st;
	int r = weft_sync_local(&st, c->v, c->p, NULL);
	if (r != WEFT_OK)
		print_error("sync after the fault: %s\n", weft_errmsg(c->v));
	assert_int_equal(r, WEFT_OK);
	char *a = fu_event_list(c->v), *b = fu_event_list(c->p);
	assert_string_equal(a, b);
	free(a);
	free(b);
	a = fu_dump(c->v);
	b = fu_dump(c->p);
	assert_string_equal(a, b);
	free(a);
	free(b);
}

static const workload workloads[] = {
	{"append", NULL, run_append, after_append},
	{"ingest-batch", source_tpl, run_ingest, after_ingest},
	{"rebuild", NULL, run_rebuild, after_nothing},
	{"sync-client-side", peer_tpl, run_sync, after_sync},
	{"sync-server-side", peer_tpl, run_sync, after_sync},
};

/* --------------------------------------------------------------- sweeps */

static void ctx_open(ctx *c, const workload *w)
{
	fu_copy(victim_tpl, victim);
	c->v = fu_open_ok(victim, SEED_VICTIM);
	if (w->peer_tpl) {
		fu_copy(w->peer_tpl, peer);
		c->p = fu_open_ok(peer, w->peer_tpl == source_tpl ? SEED_SOURCE : SEED_PEER);
	}
	if (w->run == run_ingest)
		load_batch(c);
}

static void ctx_close(ctx *c)
{
	weft_db_close(c->v);
	weft_db_close(c->p);
	c->v = c->p = NULL;
}

static void ctx_free(ctx *c)
{
	for (size_t i = 0; i < c->nbytes; i++)
		weft_event_free(c->evs[i]);
	free(c->evs);
	free(c->bytes);
	fu_ids_free(&c->acked);
	fu_ids_free(&c->batch);
	memset(c, 0, sizeof(*c));
}

typedef struct tally {
	unsigned steps, failed_calls, ok_despite_fault;
} tally;

/* One step: fault the nth op of classes; returns 1 if the fault hit. */
static int step(const workload *w, int fault_peer, unsigned classes, unsigned long nth, int code,
                int persistent, tally *t)
{
	ctx c;
	memset(&c, 0, sizeof(c));
	ctx_open(&c, w);
	fv_target(fault_peer ? peer : victim);
	fv_fail(classes, nth, code, persistent);
	int rc = w->run(&c);
	int hit = fv_failures() > 0;
	char what[200];
	snprintf(what, sizeof(what), "%s, %s fault at op %lu of class %u (%s)", w->name,
	         persistent ? "persistent" : "one-time", nth, classes, code == SQLITE_FULL ? "disk full" : "I/O error");
	if (rc < 0) {
		/* A clear error: a code, and a message saying what failed. */
		const char *msg = weft_errmsg(c.v);
		if (!msg[0])
			print_error("%s: %s without a message\n", what, weft_errname(rc));
		assert_true(msg[0] != '\0');
		t->failed_calls++;
	} else if (hit) {
		t->ok_despite_fault++;
	}
	ctx_close(&c); /* still faulty: closing must cope */
	fv_disarm();
	fv_target(NULL);
	c.v = fu_open(victim, SEED_VICTIM, 0);
	if (!c.v)
		print_error("%s: the store does not reopen: %s\n", what, weft_error_last());
	assert_non_null(c.v);
	if (w->peer_tpl)
		c.p = fu_open_ok(peer, w->peer_tpl == source_tpl ? SEED_SOURCE : SEED_PEER);
	fu_check_store(c.v, what);
	if (c.p)
		fu_check_store(c.p, what);
	w->after(&c, rc);
	ctx_close(&c);
	ctx_free(&c);
	t->steps++;
	return hit;
}

static void sweep(const workload *w, int fault_peer)
{
	static const struct {
		unsigned classes;
		int code;
	} kinds[] = {
		{FV_READ, SQLITE_IOERR},
		{FV_WRITE, SQLITE_IOERR},
		{FV_WRITE, SQLITE_FULL},
		{FV_SYNC, SQLITE_IOERR},
		{FV_LOCK, SQLITE_IOERR},
	};
	unsigned max_steps = fu_slow_build() ? 6 : 20;
	tally t = {0, 0, 0};
	/* Count the operations of a clean run first. */
	ctx c;
	memset(&c, 0, sizeof(c));
	ctx_open(&c, w);
	fv_target(fault_peer ? peer : victim);
	fv_fail(0, 0, 0, 0);
	int rc = w->run(&c);
	if (rc < 0)
		print_error("%s: clean run failed: %s\n", w->name, weft_errmsg(c.v));
	assert_int_equal(rc, WEFT_OK);
	unsigned long total[4];
	for (int k = 0; k < 4; k++)
		total[k] = fv_count(1u << k);
	ctx_close(&c);
	ctx_free(&c);
	fv_target(NULL);
	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		int idx = kinds[k].classes == FV_READ ? 0 : kinds[k].classes == FV_WRITE ? 1
		                                        : kinds[k].classes == FV_SYNC ? 2 : 3;
		unsigned long n = total[idx];
		if (n == 0)
			continue;
		unsigned long stride = n / max_steps + 1;
		for (int persistent = 0; persistent <= 1; persistent++) {
			/* The first few ops, then spread, then the last one. */
			for (unsigned long nth = 1; nth <= n; nth += nth < 4 ? 1 : stride)
				step(w, fault_peer, kinds[k].classes, nth, kinds[k].code, persistent, &t);
			step(w, fault_peer, kinds[k].classes, n, kinds[k].code, persistent, &t);
		}
	}
	printf("%s%s: ops read %lu write %lu sync %lu lock %lu; %u faults injected, %u calls failed, "
	       "%u succeeded despite a fault; every store reopened, verified and matched a rebuild\n",
	       w->name, fault_peer ? " (faults on the server's store)" : "", total[0], total[1], total[2], total[3],
	       t.steps, t.failed_calls, t.ok_despite_fault);
}

static void test_io_faults_during_append(void **state)
{
	(void)state;
	sweep(&workloads[0], 0);
}

static void test_io_faults_during_ingest_batch(void **state)
{
	(void)state;
	sweep(&workloads[1], 0);
}

static void test_io_faults_during_rebuild(void **state)
{
	(void)state;
	sweep(&workloads[2], 0);
}

static void test_io_faults_during_sync_on_client(void **state)
{
	(void)state;
	sweep(&workloads[3], 0);
}

static void test_io_faults_during_sync_on_server(void **state)
{
	(void)state;
	sweep(&workloads[4], 1);
}

int main(void)
{
	fv_install();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_io_faults_during_append),
		cmocka_unit_test(test_io_faults_during_ingest_batch),
		cmocka_unit_test(test_io_faults_during_rebuild),
		cmocka_unit_test(test_io_faults_during_sync_on_client),
		cmocka_unit_test(test_io_faults_during_sync_on_server),
	};
	return cmocka_run_group_tests_name("vfs_fault", tests, setup, NULL);
}
