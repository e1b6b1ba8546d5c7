/* Reconciliation buckets (core/buckets.c) and the store view over them
 * (sync/neg_view.c), checked against an in-memory neg_set of the same items. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testutil.h"

#include "core/buckets.h"
#include "core/store.h"
#include "sync/neg_view.h"
#include "sync/negentropy.h"

#define T0 1700000000000ull

typedef struct fixture {
	char *dir;
	tu_clock clock;
} fixture;

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	f->dir = tu_mkdtemp_shm();
	f->clock.now_ms = T0;
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

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static const char *const SCOPES[] = {"s0", "s1", "s2"};

/* n events in random scopes: mostly a few ms apart, some jumps over many
 * cells, some bursts in one millisecond. */
static void fill(weft_db *db, tu_clock *clock, int n)
{
	for (int i = 0; i < n;) {
		uint64_t r = rnd() % 100;
		int burst = r < 3 ? 100 + (int)(rnd() % 200) : 1;
		if (r >= 3 && r < 20)
			clock->now_ms += rnd() % 5000;
		else
			clock->now_ms += rnd() % 4;
		for (int k = 0; k < burst && i < n; k++, i++) {
			weft_id id;
			char p[32];
			snprintf(p, sizeof(p), "e%d", i);
			tu_ok(db, weft_db_append(&id, db, SCOPES[rnd() % 3], "note", NULL, p, strlen(p)));
		}
	}
}

static int add_item(void *payload, uint64_t hlc, const unsigned char id[32])
{
	return neg_set_add(payload, hlc, id);
}

static neg_set *brute_set(weft_db *db, const char *const *scopes, size_t n)
{
	neg_set *s;
	assert_int_equal(neg_set_new(&s), WEFT_OK);
	tu_ok(db, store_scan_items(db, scopes, n, STORE_HLC_ALL_LO, STORE_HLC_ALL_HI, add_item, s));
	assert_int_equal(neg_set_seal(s), WEFT_OK);
	return s;
}

static void check_buckets(weft_db *db, int expect_ok)
{
	int ok = -1;
	tu_ok(db, buckets_check(db, &ok));
	assert_int_equal(ok, expect_ok);
}

static size_t clampz(size_t x, size_t lo, size_t hi)
{
	return x < lo ? lo : x > hi ? hi : x;
}

/* Every storage operation of the view against the brute-force set. */
static void compare_view(weft_db *db, const char *const *scopes, size_t nscopes, size_t seg)
{
	neg_set *s = brute_set(db, scopes, nscopes);
	neg_view *v;
	neg_storage st;
	assert_int_equal(neg_view_new(&v, db, scopes, nscopes), WEFT_OK);
	neg_view_set_segment_items(v, seg);
	tu_ok(db, neg_view_refresh(v));
	neg_view_storage(v, &st);
	size_t n = neg_set_size(s);
	assert_int_equal(st.size(st.ctx), n);
	assert_true(n > 100);
	for (int round = 0; round < 400; round++) {
		size_t lo = rnd() % (n + 1), hi = rnd() % (n + 1);
		if (lo > hi) {
			size_t t = lo;
			lo = hi;
			hi = t;
		}
		if (round % 4 == 0)
			hi = n;
		/* Fingerprints over any range. */
		if (lo < hi) {
			uint8_t sum[32], a[16], b[16];
			tu_ok(db, st.sum(st.ctx, lo, hi, sum));
			neg_fingerprint_of_sum(a, sum, hi - lo);
			neg_set_fingerprint(b, s, lo, hi);
			assert_memory_equal(a, b, 16);
		}
		/* Items by rank. */
		size_t i = rnd() % n;
		uint64_t ts;
		uint8_t id[32];
		tu_ok(db, st.item(st.ctx, i, &ts, id));
		assert_int_equal(ts, neg_set_ts(s, i));
		assert_memory_equal(id, neg_set_id(s, i), 32);
		/* Lower bounds: exact items, zero ids, id prefixes, cell starts,
		 * stamps between items. */
		uint8_t bid[32];
		uint64_t bts = neg_set_ts(s, i);
		switch (rnd() % 5) {
		case 0:
			memcpy(bid, neg_set_id(s, i), 32);
			break;
		case 1:
			memset(bid, 0, 32);
			break;
		case 2:
			memset(bid, 0, 32);
			memcpy(bid, neg_set_id(s, i), 1 + rnd() % 31);
			break;
		case 3:
			memset(bid, 0, 32);
			bts = (bts >> BUCKET_SHIFT) << BUCKET_SHIFT;
			break;
		default:
			memset(bid, 0, 32);
			bts += rnd() % 100000;
			break;
		}
		size_t got;
		tu_ok(db, st.lower_bound(st.ctx, lo, hi, bts, bid, &got));
		assert_int_equal(got, clampz(neg_set_lower_bound(s, bts, bid), lo, hi));
		/* Boundaries split between stamps. */
		size_t at;
		uint64_t bts2;
		if (lo < hi && st.boundary(st.ctx, lo, hi, lo + rnd() % (hi - lo + 1), &at, &bts2)) {
			assert_true(at > lo && at < hi);
			assert_true(neg_set_ts(s, at - 1) < bts2);
			assert_true(neg_set_ts(s, at) >= bts2);
		}
	}
	neg_view_free(v);
	neg_set_free(s);
}

/* Folds the buckets as if the clock read ms. */
static void fold_at(weft_db *db, tu_clock *clock, uint64_t ms)
{
	uint64_t now = clock->now_ms;
	clock->now_ms = ms;
	tu_ok(db, buckets_fold(db));
	clock->now_ms = now;
}

static uint64_t rows(weft_db *db)
{
	char *s = tu_query(db, "SELECT count(*) FROM weft_neg_bucket");
	uint64_t n = strtoull(s, NULL, 10);
	free(s);
	return n;
}

static void test_buckets_match_brute_force(void **state)
{
	fixture *f = *state;
	weft_db *db = tu_open(f->dir, "a.db", &f->clock, 1);
	uint64_t start = f->clock.now_ms;
	fill(db, &f->clock, 3000);
	check_buckets(db, 1);
	const char *one[] = {"s0"}, *two[] = {"s1", "s2"};
	static const size_t segs[] = {1, 7, 64, NEG_VIEW_SEGMENT};
	/* Nothing folded (every event read from the index), half, all. */
	for (int fold = 0; fold < 3; fold++) {
		if (fold == 1)
			fold_at(db, &f->clock, start + (f->clock.now_ms - start) / 2);
		if (fold == 2)
			tu_ok(db, buckets_fold(db));
		check_buckets(db, 1);
		for (size_t k = 0; k < 4; k++) {
			compare_view(db, NULL, 0, segs[k]);
			compare_view(db, one, 1, segs[k]);
			compare_view(db, two, 2, segs[k]);
		}
	}
	weft_db_close(db);
}

/* An event stamped now writes no bucket row; a fold adds it. */
static void test_buckets_recent_events_wait_for_a_fold(void **state)
{
	fixture *f = *state;
	weft_db *db = tu_open(f->dir, "a.db", &f->clock, 1);
	fill(db, &f->clock, 200);
	tu_ok(db, buckets_fold(db));
	uint64_t n = rows(db), w0, w1;
	tu_ok(db, buckets_watermark(db, &w0));
	weft_id id;
	tu_ok(db, weft_db_append(&id, db, "s0", "note", NULL, "x", 1));
	assert_int_equal(rows(db), n);
	check_buckets(db, 1);
	/* An event from a peer stamped long ago does write its row. */
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	uint64_t now = f->clock.now_ms;
	f->clock.now_ms = T0 - 100000;
	tu_ok(b, weft_db_append(&id, b, "s9", "note", NULL, "y", 1));
	f->clock.now_ms = now;
	tu_ingest_all(db, b);
	assert_int_equal(rows(db), n + 1);
	check_buckets(db, 1);
	f->clock.now_ms += 5000;
	tu_ok(db, buckets_fold(db));
	tu_ok(db, buckets_watermark(db, &w1));
	assert_true(w1 > w0);
	assert_true(rows(db) > n + 1);
	check_buckets(db, 1);
	weft_db_close(b);
	weft_db_close(db);
}

/* ------------------------------------------------- reconciliation */

typedef struct diffs {
	uint8_t (*have)[32], (*need)[32];
	size_t nhave, nneed;
} diffs;

static int on_diff(void *payload, enum neg_diff_kind kind, const uint8_t id[32])
{
	diffs *d = payload;
	if (kind == NEG_HAVE) {
		d->have = realloc(d->have, (d->nhave + 1) * 32);
		memcpy(d->have[d->nhave++], id, 32);
	} else {
		d->need = realloc(d->need, (d->nneed + 1) * 32);
		memcpy(d->need[d->nneed++], id, 32);
	}
	return 0;
}

static int cmp_id(const void *a, const void *b)
{
	return memcmp(a, b, 32);
}

static size_t uniq(uint8_t (*ids)[32], size_t n)
{
	size_t m = 0;
	qsort(ids, n, 32, cmp_id);
	for (size_t i = 0; i < n; i++)
		if (!m || memcmp(ids[m - 1], ids[i], 32) != 0)
			memmove(ids[m++], ids[i], 32);
	return m;
}

/* client over the store's view (or its set), server over another set. */
static void reconcile(neg_reconciler *c, neg_reconciler *s, diffs *d)
{
	const uint8_t *msg, *reply;
	size_t len, rlen;
	assert_int_equal(neg_reconciler_initiate(&msg, &len, c), WEFT_OK);
	for (int rounds = 0; len; rounds++) {
		assert_true(rounds < 100);
		uint8_t *copy = malloc(len);
		memcpy(copy, msg, len);
		assert_int_equal(neg_reconciler_reconcile(&reply, &rlen, s, copy, len, NULL, NULL), WEFT_OK);
		free(copy);
		copy = malloc(rlen);
		memcpy(copy, reply, rlen);
		assert_int_equal(neg_reconciler_reconcile(&msg, &len, c, copy, rlen, on_diff, d), WEFT_OK);
		free(copy);
	}
}

static void test_buckets_view_reconciles_with_a_set(void **state)
{
	fixture *f = *state;
	weft_db *db = tu_open(f->dir, "a.db", &f->clock, 1);
	uint64_t start = f->clock.now_ms;
	fill(db, &f->clock, 3000);
	fold_at(db, &f->clock, start + (f->clock.now_ms - start) / 2);
	neg_set *all = brute_set(db, NULL, 0);
	size_t n = neg_set_size(all);
	for (int trial = 0; trial < 6; trial++) {
		/* The other side: ours minus some, plus some of its own. */
		neg_set *other;
		diffs want = {0}, got = {0};
		assert_int_equal(neg_set_new(&other), WEFT_OK);
		int cluster = trial % 2; /* differences among the newest, or spread */
		for (size_t i = 0; i < n; i++) {
			int drop = cluster ? i >= n - 300 && rnd() % 2 : rnd() % 20 == 0;
			if (drop) {
				want.have = realloc(want.have, (want.nhave + 1) * 32);
				memcpy(want.have[want.nhave++], neg_set_id(all, i), 32);
			} else {
				assert_int_equal(neg_set_add(other, neg_set_ts(all, i), neg_set_id(all, i)), WEFT_OK);
			}
		}
		for (int k = 0; k < 40; k++) {
			uint8_t id[32];
			for (int j = 0; j < 32; j++)
				id[j] = (uint8_t)rnd();
			uint64_t ts = neg_set_ts(all, cluster ? n - 1 - rnd() % 300 : rnd() % n) + (k % 2);
			assert_int_equal(neg_set_add(other, ts, id), WEFT_OK);
			want.need = realloc(want.need, (want.nneed + 1) * 32);
			memcpy(want.need[want.nneed++], id, 32);
		}
		assert_int_equal(neg_set_seal(other), WEFT_OK);
		size_t limit = trial < 4 ? 0 : NEG_FRAME_SIZE_MIN;

		neg_view *v;
		neg_storage st;
		neg_reconciler *rv, *rs;
		assert_int_equal(neg_view_new(&v, db, NULL, 0), WEFT_OK);
		neg_view_set_segment_items(v, trial % 2 ? 16 : 200);
		tu_ok(db, neg_view_refresh(v));
		neg_view_storage(v, &st);
		assert_int_equal(neg_reconciler_new_storage(&rv, &st, limit), WEFT_OK);
		assert_int_equal(neg_reconciler_new(&rs, other, 0, neg_set_size(other), limit), WEFT_OK);
		if (trial % 3 != 2) {
			reconcile(rv, rs, &got);
		} else {
			/* The view as the server: swap the roles of the differences. */
			reconcile(rs, rv, &got);
			uint8_t(*t)[32] = got.have;
			size_t tn = got.nhave;
			got.have = got.need;
			got.nhave = got.nneed;
			got.need = t;
			got.nneed = tn;
		}
		assert_int_equal(uniq(got.have, got.nhave), uniq(want.have, want.nhave));
		assert_int_equal(uniq(got.need, got.nneed), uniq(want.need, want.nneed));
		assert_memory_equal(got.have, want.have, 32 * want.nhave);
		assert_memory_equal(got.need, want.need, 32 * want.nneed);
		neg_reconciler_free(rv);
		neg_reconciler_free(rs);
		neg_view_free(v);
		neg_set_free(other);
		free(want.have);
		free(want.need);
		free(got.have);
		free(got.need);
	}
	neg_set_free(all);
	weft_db_close(db);
}

/* ------------------------------------------ maintenance and repair */

static void test_buckets_verify_rebuilds_and_open_upgrades(void **state)
{
	fixture *f = *state;
	weft_db *db = tu_open(f->dir, "a.db", &f->clock, 1);
	fill(db, &f->clock, 600);
	tu_ok(db, buckets_fold(db));
	assert_true(rows(db) > 0);
	check_buckets(db, 1);

	/* A damaged count: a view reading that segment refuses it. */
	tu_ok(db, store_exec(db, "UPDATE weft_neg_bucket SET count = count + 1 "
	                         "WHERE cell = (SELECT max(cell) FROM weft_neg_bucket)", "test"));
	check_buckets(db, 0);
	neg_view *v;
	neg_storage st;
	assert_int_equal(neg_view_new(&v, db, NULL, 0), WEFT_OK);
	tu_ok(db, neg_view_refresh(v));
	neg_view_storage(v, &st);
	uint64_t ts;
	uint8_t id[32];
	tu_expect(db, st.item(st.ctx, st.size(st.ctx) - 1, &ts, id), WEFT_ECORRUPT);
	assert_non_null(strstr(weft_errmsg(db), "weft verify"));
	neg_view_free(v);
	/* verify repairs the buckets; the events were fine. */
	weft_verify_report r;
	tu_ok(db, weft_db_verify(&r, db, NULL, NULL));
	assert_int_equal(r.bad, 0);
	check_buckets(db, 1);

	/* A damaged sum, and a row no event backs. */
	tu_ok(db, store_exec(db, "UPDATE weft_neg_bucket SET sum = zeroblob(32) "
	                         "WHERE cell = (SELECT min(cell) FROM weft_neg_bucket)", "test"));
	check_buckets(db, 0);
	tu_ok(db, weft_db_verify(&r, db, NULL, NULL));
	check_buckets(db, 1);
	tu_ok(db, store_exec(db, "INSERT INTO weft_neg_bucket VALUES (999, 5, 1, zeroblob(32))", "test"));
	check_buckets(db, 0);
	tu_ok(db, weft_db_verify(&r, db, NULL, NULL));
	check_buckets(db, 1);
	/* A row above the watermark. */
	tu_ok(db, store_exec(db, "INSERT INTO weft_neg_bucket SELECT scope, cell + 1000000, count, sum "
	                         "FROM weft_neg_bucket LIMIT 1", "test"));
	check_buckets(db, 0);
	tu_ok(db, weft_db_verify(&r, db, NULL, NULL));
	check_buckets(db, 1);

	/* A store from before the buckets gets them at open. */
	tu_ok(db, store_exec(db, "DROP TABLE weft_neg_bucket", "test"));
	assert_int_equal(buckets_available(db), 0);
	weft_db_close(db);
	db = tu_open(f->dir, "a.db", &f->clock, 1);
	assert_int_equal(buckets_available(db), 1);
	check_buckets(db, 1);
	/* New events, also duplicates and events from a peer, keep them right. */
	fill(db, &f->clock, 200);
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	fill(b, &f->clock, 200);
	tu_ingest_all(b, db);
	tu_ingest_all(b, db);
	check_buckets(b, 1);
	check_buckets(db, 1);
	weft_db_close(b);
	weft_db_close(db);
}


/* Sessions: a store without buckets (dropped under an open handle) still
 * serves, listing its items in memory; a store with a damaged bucket fails
 * the session with a message, and syncs again once verified. */
static void test_buckets_sessions_without_and_with_damaged_buckets(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	fill(b, &f->clock, 500);
	tu_ok(b, store_exec(b, "DROP TABLE weft_neg_bucket", "test"));
	assert_int_equal(buckets_available(b), 0);
	weft_session_stats st;
	tu_ok(a, weft_sync_local(&st, a, b, NULL));
	assert_int_equal(st.events_received, 500);
	weft_db_close(b);

	/* b writable again: buckets built at open; then one gets damaged. */
	b = tu_open(f->dir, "b.db", &f->clock, 2);
	check_buckets(b, 1);
	fill(b, &f->clock, 300);
	f->clock.now_ms += 5000;
	tu_ok(b, buckets_fold(b));
	tu_ok(b, store_exec(b, "UPDATE weft_neg_bucket SET sum = zeroblob(32) "
	                       "WHERE cell = (SELECT max(cell) FROM weft_neg_bucket)", "test"));
	int rc = weft_sync_local(&st, a, b, NULL);
	assert_int_equal(rc, WEFT_ECORRUPT);
	assert_non_null(strstr(weft_error_last(), "weft verify"));
	weft_verify_report r;
	tu_ok(b, weft_db_verify(&r, b, NULL, NULL));
	tu_ok(a, weft_sync_local(&st, a, b, NULL));
	assert_int_equal(st.events_received, 300);
	check_buckets(a, 1);
	weft_db_close(a);
	weft_db_close(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_buckets_match_brute_force, setup, teardown),
		cmocka_unit_test_setup_teardown(test_buckets_recent_events_wait_for_a_fold, setup, teardown),
		cmocka_unit_test_setup_teardown(test_buckets_view_reconciles_with_a_set, setup, teardown),
		cmocka_unit_test_setup_teardown(test_buckets_verify_rebuilds_and_open_upgrades, setup, teardown),
		cmocka_unit_test_setup_teardown(test_buckets_sessions_without_and_with_damaged_buckets, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
