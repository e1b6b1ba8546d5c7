/*
 * Allocation failure: the Nth allocation fails, through weft's hook
 * (alloc_fail_after, the Nth and all after it) and through SQLite's
 * (SQLITE_CONFIG_MALLOC: the Nth only, or the Nth and all after it),
 * swept over N across opening a store, an append, a row transaction, the
 * ingest of a batch, a rebuild and a whole sync. After each:
 *  - the call returned WEFT_ENOMEM (or another clean error) with a message;
 *  - no crash, and no leak (LeakSanitizer checks at exit in the ASan
 *    build);
 *  - no partial commit: the reopened store verifies, its tables equal a
 *    rebuild, a batch is all or nothing, and what was reported written is
 *    there.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "faultutil.h"

#define SEED_VICTIM 0x61
#define SEED_PEER 0x62
#define SEED_SOURCE 0x63

/* ------------------------------------------------- SQLite's allocator */

static sqlite3_mem_methods orig;
static unsigned long sq_count, sq_fail_at;
static int sq_persistent;
static unsigned long sq_failures;

static int sq_should_fail(void)
{
	unsigned long n = __atomic_add_fetch(&sq_count, 1, __ATOMIC_RELAXED);
	if (sq_fail_at && (n == sq_fail_at || (sq_persistent && n > sq_fail_at))) {
		__atomic_add_fetch(&sq_failures, 1, __ATOMIC_RELAXED);
		return 1;
	}
	return 0;
}

static void *sq_malloc(int n)
{
	return sq_should_fail() ? NULL : orig.xMalloc(n);
}

static void *sq_realloc(void *p, int n)
{
	return sq_should_fail() ? NULL : orig.xRealloc(p, n);
}

static void sq_arm(unsigned long nth, int persistent)
{
	sq_fail_at = nth;
	sq_persistent = persistent;
	sq_count = sq_failures = 0;
}

/* ------------------------------------------------------------ templates */

static char victim_tpl[700], peer_tpl[700], source_tpl[700], victim[700], peer[700];

static int setup(void **state)
{
	(void)state;
	fu_path_to(victim_tpl, "victim-template.db");
	fu_path_to(peer_tpl, "peer-template.db");
	fu_path_to(source_tpl, "source-template.db");
	fu_path_to(victim, "victim.db");
	fu_path_to(peer, "peer.db");
	fu_make_store(victim_tpl, SEED_VICTIM, 16, 1);
	fu_make_store(peer_tpl, SEED_PEER, 12, 2);
	/* Under 32 events: one verification thread, so the counts of the
	 * (not thread-safe) weft hook stay exact. */
	fu_make_store(source_tpl, SEED_SOURCE, 20, 3);
	return 0;
}

/* ------------------------------------------------------------ workloads */

typedef struct ctx {
	weft_db *v, *p;
	fu_ids acked, batch;
	weft_bytes bytes[64];
	weft_event *evs[64];
	int result[64];
	size_t n;
	int opened; /* the open workload: did the open succeed */
} ctx;

enum wl { WL_OPEN, WL_APPEND, WL_TXN, WL_INGEST, WL_REBUILD, WL_SYNC };
static const char *const wl_names[] = {"open", "append", "row transaction", "ingest batch", "rebuild",
                                       "sync"};

static int run(enum wl w, ctx *c)
{
	weft_id id;
	weft_session_stats st;
	switch (w) {
	case WL_OPEN:
		c->v = fu_open(victim, SEED_VICTIM, 0);
		return c->v ? WEFT_OK : WEFT_ENOMEM;
	case WL_APPEND: {
		int rc = weft_db_append(&id, c->v, "notes", "note.put", "alloc-key", "payload", 7);
		if (rc == WEFT_OK)
			fu_ids_add(&c->acked, &id);
		return rc;
	}
	case WL_TXN:
		return fu_write(c->v, 6, 7, &c->acked);
	case WL_INGEST:
		for (size_t i = 0; i < c->n; i++)
			c->result[i] = WEFT_ERROR;
		return weft_db_ingest_batch(c->result, c->v, c->bytes, c->n);
	case WL_REBUILD:
		return weft_db_rebuild(c->v, NULL, NULL);
	case WL_SYNC:
		return weft_sync_local(&st, c->v, c->p, NULL);
	}
	return WEFT_ERROR;
}

static void prepare(enum wl w, ctx *c)
{
	memset(c, 0, sizeof(*c));
	fu_copy(victim_tpl, victim);
	if (w != WL_OPEN)
		c->v = fu_open_ok(victim, SEED_VICTIM);
	if (w == WL_SYNC || w == WL_INGEST) {
		fu_copy(w == WL_SYNC ? peer_tpl : source_tpl, peer);
		c->p = fu_open_ok(peer, w == WL_SYNC ? SEED_PEER : SEED_SOURCE);
	}
	if (w == WL_INGEST) {
		weft_iter *it;
		assert_int_equal(weft_db_iter(&it, c->p, NULL), WEFT_OK);
		const weft_event *ev;
		while (weft_iter_next(&ev, it) == WEFT_OK && c->n < 64) {
			assert_int_equal(weft_db_get(&c->evs[c->n], c->p, weft_event_id(ev)), WEFT_OK);
			c->bytes[c->n].data = weft_event_bytes(c->evs[c->n], &c->bytes[c->n].len);
			fu_ids_add(&c->batch, weft_event_id(ev));
			c->n++;
		}
		weft_iter_free(it);
		weft_db_close(c->p);
		c->p = NULL;
	}
}

static void finish(enum wl w, ctx *c, int rc, const char *what)
{
	weft_db_close(c->v);
	weft_db_close(c->p);
	c->v = fu_open(victim, SEED_VICTIM, 0);
	if (!c->v)
		print_error("%s: the store does not reopen: %s\n", what, weft_error_last());
	assert_non_null(c->v);
	fu_check_store(c->v, what);
	for (size_t i = 0; i < c->acked.n; i++)
		assert_true(fu_has(c->v, &c->acked.v[i]));
	if (w == WL_INGEST) {
		/* A failed batch commits nothing. */
		size_t present = 0;
		for (size_t i = 0; i < c->batch.n; i++)
			present += (size_t)fu_has(c->v, &c->batch.v[i]);
		if (rc < 0 && present)
			print_error("%s: a failed batch committed %zu of %zu events\n", what, present, c->batch.n);
		assert_true(rc == WEFT_OK || present == 0);
		/* A committed batch holds every event it accepted; an event
		 * refused alone (here: no memory to decode it) is absent. */
		for (size_t i = 0; rc == WEFT_OK && i < c->n; i++) {
			if (fu_has(c->v, &c->batch.v[i]) != (c->result[i] >= 0))
				print_error("%s: event %zu has result %d but is %s\n", what, i, c->result[i],
				            fu_has(c->v, &c->batch.v[i]) ? "stored" : "missing");
			assert_int_equal(fu_has(c->v, &c->batch.v[i]), c->result[i] >= 0);
		}
	}
	if (w == WL_SYNC) {
		c->p = fu_open_ok(peer, SEED_PEER);
		fu_check_store(c->p, what);
		weft_session_stats st;
		int r = weft_sync_local(&st, c->v, c->p, NULL);
		if (r != WEFT_OK)
			print_error("%s: sync afterwards: %s\n", what, weft_errmsg(c->v));
		assert_int_equal(r, WEFT_OK);
		char *a = fu_dump(c->v), *b = fu_dump(c->p);
		assert_string_equal(a, b);
		free(a);
		free(b);
	}
	weft_db_close(c->v);
	weft_db_close(c->p);
	for (size_t i = 0; i < c->n; i++)
		weft_event_free(c->evs[i]);
	fu_ids_free(&c->acked);
	fu_ids_free(&c->batch);
}

typedef enum hook { HOOK_WEFT, HOOK_SQLITE_ONCE, HOOK_SQLITE_ALL } hook;
static const char *const hook_names[] = {"weft's allocator (Nth and after)", "SQLite's allocator (Nth only)",
                                         "SQLite's allocator (Nth and after)"};

static void arm(hook h, unsigned long nth)
{
	alloc_fail_after(h == HOOK_WEFT ? nth : 0);
	sq_arm(h == HOOK_WEFT ? 0 : nth, h == HOOK_SQLITE_ALL);
}

static void sweep(enum wl w, hook h)
{
	ctx c;
	/* Count the allocations of a clean run. */
	prepare(w, &c);
	arm(h, 0);
	int rc = run(w, &c);
	unsigned long total = h == HOOK_WEFT ? alloc_count() : sq_count;
	arm(h, 0);
	alloc_fail_after(0);
	assert_int_equal(rc, WEFT_OK);
	finish(w, &c, rc, "clean run");
	unsigned long max_steps = fu_slow_build() ? 10 : 40;
	unsigned long stride = total / max_steps + 1;
	unsigned steps = 0, failed = 0, nomem = 0;
	for (unsigned long nth = 1; nth <= total; nth += nth < 8 ? 1 : stride) {
		char what[600];
		snprintf(what, sizeof(what), "%s: allocation %lu of %lu failed in %s", wl_names[w], nth, total,
		         hook_names[h]);
		prepare(w, &c);
		arm(h, nth);
		rc = run(w, &c);
		arm(h, 0);
		alloc_fail_after(0);
		snprintf(what + strlen(what), sizeof(what) - strlen(what), "; the call returned %s", weft_errname(rc));
		if (rc < 0 && c.v)
			snprintf(what + strlen(what), sizeof(what) - strlen(what), " (%.200s)", weft_errmsg(c.v));
		if (rc < 0) {
			failed++;
			nomem += rc == WEFT_ENOMEM;
			const char *msg = c.v ? weft_errmsg(c.v) : weft_error_last();
			if (!msg[0])
				print_error("%s: %s without a message\n", what, weft_errname(rc));
			assert_true(msg[0] != '\0');
		}
		finish(w, &c, rc, what);
		steps++;
	}
	printf("%s, %s: %lu allocations, %u failures injected, %u calls failed (%u with WEFT_ENOMEM); "
	       "no partial commit\n", wl_names[w], hook_names[h], total, steps, failed, nomem);
}

static void test_alloc_open_weft(void **state)
{
	(void)state;
	sweep(WL_OPEN, HOOK_WEFT);
}

static void test_alloc_open_sqlite(void **state)
{
	(void)state;
	sweep(WL_OPEN, HOOK_SQLITE_ONCE);
	sweep(WL_OPEN, HOOK_SQLITE_ALL);
}

static void test_alloc_append_weft(void **state)
{
	(void)state;
	sweep(WL_APPEND, HOOK_WEFT);
}

static void test_alloc_append_sqlite(void **state)
{
	(void)state;
	sweep(WL_APPEND, HOOK_SQLITE_ONCE);
	sweep(WL_APPEND, HOOK_SQLITE_ALL);
}

static void test_alloc_row_transaction_weft(void **state)
{
	(void)state;
	sweep(WL_TXN, HOOK_WEFT);
}

static void test_alloc_row_transaction_sqlite(void **state)
{
	(void)state;
	sweep(WL_TXN, HOOK_SQLITE_ONCE);
	sweep(WL_TXN, HOOK_SQLITE_ALL);
}

static void test_alloc_ingest_batch_weft(void **state)
{
	(void)state;
	sweep(WL_INGEST, HOOK_WEFT);
}

static void test_alloc_ingest_batch_sqlite(void **state)
{
	(void)state;
	sweep(WL_INGEST, HOOK_SQLITE_ONCE);
	sweep(WL_INGEST, HOOK_SQLITE_ALL);
}

static void test_alloc_rebuild_weft(void **state)
{
	(void)state;
	sweep(WL_REBUILD, HOOK_WEFT);
}

static void test_alloc_rebuild_sqlite(void **state)
{
	(void)state;
	sweep(WL_REBUILD, HOOK_SQLITE_ONCE);
	sweep(WL_REBUILD, HOOK_SQLITE_ALL);
}

static void test_alloc_sync_weft(void **state)
{
	(void)state;
	sweep(WL_SYNC, HOOK_WEFT);
}

static void test_alloc_sync_sqlite(void **state)
{
	(void)state;
	sweep(WL_SYNC, HOOK_SQLITE_ONCE);
	sweep(WL_SYNC, HOOK_SQLITE_ALL);
}

int main(void)
{
	/* Before anything initialises SQLite. */
	sqlite3_mem_methods m;
	if (sqlite3_config(SQLITE_CONFIG_GETMALLOC, &orig) != SQLITE_OK)
		return 1;
	m = orig;
	m.xMalloc = sq_malloc;
	m.xRealloc = sq_realloc;
	if (sqlite3_config(SQLITE_CONFIG_MALLOC, &m) != SQLITE_OK) {
		fprintf(stderr, "cannot install the SQLite allocator wrapper\n");
		return 1;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_alloc_open_weft),
		cmocka_unit_test(test_alloc_open_sqlite),
		cmocka_unit_test(test_alloc_append_weft),
		cmocka_unit_test(test_alloc_append_sqlite),
		cmocka_unit_test(test_alloc_row_transaction_weft),
		cmocka_unit_test(test_alloc_row_transaction_sqlite),
		cmocka_unit_test(test_alloc_ingest_batch_weft),
		cmocka_unit_test(test_alloc_ingest_batch_sqlite),
		cmocka_unit_test(test_alloc_rebuild_weft),
		cmocka_unit_test(test_alloc_rebuild_sqlite),
		cmocka_unit_test(test_alloc_sync_weft),
		cmocka_unit_test(test_alloc_sync_sqlite),
	};
	return cmocka_run_group_tests_name("alloc_fault", tests, setup, NULL);
}
