/* Unit tests for sync/negentropy.c (Negentropy V1 reconciliation). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "sync/negentropy.h"

#include "core/alloc.h"
#include "weft.h"

#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

/* ----------------------------------------------------------------- helpers */

struct item {
	uint64_t ts;
	uint8_t id[32];
};

static uint64_t rng_state;

static uint64_t rng_next(void)
{
	/* xorshift64*: deterministic for a given seed, so failures replay. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1DULL;
}

static void rng_seed(uint64_t seed)
{
	rng_state = seed * 0x9E3779B97F4A7C15ULL + 1;
	for (int i = 0; i < 4; i++)
		rng_next();
}

static void rng_id(uint8_t id[32])
{
	for (int k = 0; k < 4; k++) {
		uint64_t v = rng_next();
		memcpy(id + 8 * k, &v, 8);
	}
}

/* A seed from NEG_TEST_SEED, to replay a failure printed by a test. */
static uint64_t base_seed(uint64_t dflt)
{
	const char *env = getenv("NEG_TEST_SEED");

	return env ? strtoull(env, NULL, 10) : dflt;
}

static neg_set *build(const struct item *items, size_t n)
{
	neg_set *s = NULL;

	assert_int_equal(neg_set_new(&s), WEFT_OK);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(neg_set_add(s, items[i].ts, items[i].id), WEFT_OK);
	assert_int_equal(neg_set_seal(s), WEFT_OK);
	return s;
}

struct idvec {
	uint8_t (*v)[32];
	size_t n, cap;
};

static void idvec_push(struct idvec *iv, const uint8_t id[32])
{
	if (iv->n == iv->cap) {
		iv->cap = iv->cap ? iv->cap * 2 : 64;
		iv->v = realloc(iv->v, iv->cap * 32);
		assert_non_null(iv->v);
	}
	memcpy(iv->v[iv->n++], id, 32);
}

static int cmp_id(const void *a, const void *b)
{
	return memcmp(a, b, 32);
}

/* Sorts and drops duplicates; returns how many were dropped. */
static size_t idvec_sort_unique(struct idvec *iv)
{
	size_t m = 0, dropped;

	if (iv->n)
		qsort(iv->v, iv->n, 32, cmp_id);
	for (size_t i = 0; i < iv->n; i++)
		if (m == 0 || memcmp(iv->v[m - 1], iv->v[i], 32) != 0)
			memmove(iv->v[m++], iv->v[i], 32);
	dropped = iv->n - m;
	iv->n = m;
	return dropped;
}

static void idvec_free(struct idvec *iv)
{
	free(iv->v);
	memset(iv, 0, sizeof(*iv));
}

struct diffs {
	struct idvec have, need;
};

static int collect(void *payload, enum neg_diff_kind kind, const uint8_t id[32])
{
	struct diffs *d = payload;

	idvec_push(kind == NEG_HAVE ? &d->have : &d->need, id);
	return 0;
}

/*
 * Every range a side sends must describe exactly that side's items in it:
 * a Fingerprint of them, or an IdList of all of them. This also holds for
 * the closing range of a message cut short by the frame size limit.
 */
static void check_message(const neg_set *s, const uint8_t *m, size_t len)
{
	size_t pos = 1, lo = 0, used;
	uint64_t prev_ts = 0, enc, plen, mode, n;

	assert_true(len >= 1);
	assert_int_equal(m[0], 0x61);
	while (pos < len) {
		uint8_t id[32] = { 0 }, fp[16];
		uint64_t ts;
		size_t hi;

		assert_int_equal(neg_varint_decode(&enc, &used, m + pos, len - pos), WEFT_OK);
		pos += used;
		assert_int_equal(neg_varint_decode(&plen, &used, m + pos, len - pos), WEFT_OK);
		pos += used;
		assert_true(plen <= 32 && plen <= len - pos);
		memcpy(id, m + pos, (size_t)plen);
		pos += (size_t)plen;
		ts = enc == 0 ? UINT64_MAX : prev_ts + enc - 1;
		hi = ts == UINT64_MAX ? neg_set_size(s) : neg_set_lower_bound(s, ts, id);
		assert_true(hi >= lo);
		assert_int_equal(neg_varint_decode(&mode, &used, m + pos, len - pos), WEFT_OK);
		pos += used;
		if (mode == 1) {
			assert_true(len - pos >= 16);
			neg_set_fingerprint(fp, s, lo, hi);
			if (memcmp(fp, m + pos, 16) != 0)
				fail_msg("Fingerprint range [%zu, %zu) at byte %zu does "
					 "not match the sender's items", lo, hi, pos);
			pos += 16;
		} else if (mode == 2) {
			assert_int_equal(neg_varint_decode(&n, &used, m + pos, len - pos), WEFT_OK);
			pos += used;
			assert_int_equal(n, hi - lo);
			for (size_t i = 0; i < n; i++, pos += 32)
				assert_memory_equal(m + pos, neg_set_id(s, lo + i), 32);
		} else {
			assert_int_equal(mode, 0);
		}
		prev_ts = ts;
		lo = hi;
	}
}

struct stats {
	unsigned rounds;
	size_t up, down, max_msg, first_up, first_down;
};

/* Runs a whole reconciliation in process; returns the first error. */
static int run(const neg_set *c, const neg_set *s, size_t limit_c,
	       size_t limit_s, struct diffs *d, struct stats *st)
{
	neg_reconciler *cl = NULL, *sv = NULL;
	const uint8_t *m, *reply;
	size_t mlen, rlen;
	int rc;

	memset(st, 0, sizeof(*st));
	rc = neg_reconciler_new(&cl, c, 0, neg_set_size(c), limit_c);
	if (rc < 0)
		goto out;
	rc = neg_reconciler_new(&sv, s, 0, neg_set_size(s), limit_s);
	if (rc < 0)
		goto out;
	rc = neg_reconciler_initiate(&m, &mlen, cl);
	if (rc < 0)
		goto out;
	st->first_up = mlen;
	for (;;) {
		check_message(c, m, mlen);
		if (limit_c)
			assert_true(mlen <= limit_c);
		st->up += mlen;
		st->max_msg = mlen > st->max_msg ? mlen : st->max_msg;
		rc = neg_reconciler_reconcile(&reply, &rlen, sv, m, mlen, NULL, NULL);
		if (rc < 0)
			goto out;
		assert_true(rlen >= 1);
		check_message(s, reply, rlen);
		if (limit_s)
			assert_true(rlen <= limit_s);
		if (st->rounds == 0)
			st->first_down = rlen;
		st->down += rlen;
		st->max_msg = rlen > st->max_msg ? rlen : st->max_msg;
		st->rounds++;
		if (st->rounds > 1000)
			fail_msg("no convergence after 1000 rounds");
		rc = neg_reconciler_reconcile(&m, &mlen, cl, reply, rlen, collect, d);
		if (rc < 0)
			goto out;
		if (mlen == 0) {
			assert_null(m);
			break;
		}
	}
out:
	neg_reconciler_free(cl);
	neg_reconciler_free(sv);
	return rc;
}

/* Ids in a but not in b, sorted. */
static void truth(struct idvec *out, const struct item *a, size_t na,
		  const struct item *b, size_t nb)
{
	struct idvec bs = { 0 };

	for (size_t i = 0; i < nb; i++)
		idvec_push(&bs, b[i].id);
	idvec_sort_unique(&bs);
	for (size_t i = 0; i < na; i++)
		if (!bs.n || !bsearch(a[i].id, bs.v, bs.n, 32, cmp_id))
			idvec_push(out, a[i].id);
	idvec_sort_unique(out);
	idvec_free(&bs);
}

static void expect_same(struct idvec *got, struct idvec *want, int allow_dups,
			const char *what, uint64_t seed)
{
	size_t dups = idvec_sort_unique(got);

	if (dups && !allow_dups)
		fail_msg("seed %llu: %zu %s ids reported twice",
			 (unsigned long long)seed, dups, what);
	if (got->n != want->n)
		fail_msg("seed %llu: %zu %s ids, expected %zu",
			 (unsigned long long)seed, got->n, what, want->n);
	if (got->n && memcmp(got->v, want->v, got->n * 32) != 0)
		fail_msg("seed %llu: %s ids differ from the true difference",
			 (unsigned long long)seed, what);
}

/* Reconciles and checks have/need against the exact set differences. */
static void reconcile_and_check(const struct item *ci, size_t nc,
				const struct item *si, size_t ns, size_t limit,
				uint64_t seed, struct stats *st)
{
	neg_set *c = build(ci, nc), *s = build(si, ns);
	struct diffs d = { { 0 }, { 0 } };
	struct idvec want_have = { 0 }, want_need = { 0 };
	struct stats local;
	int rc;

	rc = run(c, s, limit, limit, &d, st ? st : &local);
	if (rc != WEFT_OK)
		fail_msg("seed %llu: reconciliation failed with %d",
			 (unsigned long long)seed, rc);
	truth(&want_have, ci, nc, si, ns);
	truth(&want_need, si, ns, ci, nc);
	expect_same(&d.have, &want_have, limit != 0, "have", seed);
	expect_same(&d.need, &want_need, limit != 0, "need", seed);
	idvec_free(&d.have);
	idvec_free(&d.need);
	idvec_free(&want_have);
	idvec_free(&want_need);
	neg_set_free(c);
	neg_set_free(s);
}

/* Independent of the library: varint MSB-first, and the fingerprint. */
static size_t ref_varint(uint8_t *out, uint64_t v)
{
	uint8_t groups[10];
	size_t n = 0;

	while (v >= 128) {
		groups[n++] = v % 128;
		v /= 128;
	}
	groups[n++] = (uint8_t)v;
	for (size_t i = 0; i < n; i++)
		out[i] = groups[n - 1 - i] + (i == n - 1 ? 0 : 128);
	return n;
}

static void ref_fingerprint(uint8_t out[16], const struct item *items,
			    size_t lo, size_t hi)
{
	uint8_t sum[32 + 10] = { 0 }, hash[32];

	for (size_t i = lo; i < hi; i++) {
		unsigned carry = 0;

		for (int k = 0; k < 32; k++) { /* byte 0 is least significant */
			unsigned t = sum[k] + items[i].id[k] + carry;
			sum[k] = (uint8_t)t;
			carry = t >> 8;
		}
	}
	size_t n = 32 + ref_varint(sum + 32, hi - lo);
	crypto_hash_sha256(hash, sum, n);
	memcpy(out, hash, 16);
}

static int cmp_item(const void *a, const void *b)
{
	const struct item *x = a, *y = b;

	if (x->ts != y->ts)
		return x->ts < y->ts ? -1 : 1;
	return memcmp(x->id, y->id, 32);
}

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------ varints */

static void test_varint_encodes_msb_first_shortest(void **state)
{
	static const struct {
		uint64_t v;
		uint8_t bytes[10];
		size_t len;
	} vec[] = {
		{ 0, { 0x00 }, 1 },
		{ 1, { 0x01 }, 1 },
		{ 127, { 0x7f }, 1 },
		{ 128, { 0x81, 0x00 }, 2 },
		{ 300, { 0x82, 0x2c }, 2 },
		{ 16383, { 0xff, 0x7f }, 2 },
		{ 16384, { 0x81, 0x80, 0x00 }, 3 },
		{ UINT64_MAX,
		  { 0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f },
		  10 },
	};
	uint8_t buf[NEG_VARINT_MAX];
	uint64_t v;
	size_t used;

	for (size_t i = 0; i < sizeof(vec) / sizeof(vec[0]); i++) {
		assert_int_equal(neg_varint_encode(buf, vec[i].v), vec[i].len);
		assert_memory_equal(buf, vec[i].bytes, vec[i].len);
		assert_int_equal(neg_varint_decode(&v, &used, vec[i].bytes,
						   vec[i].len), WEFT_OK);
		assert_true(v == vec[i].v);
		assert_int_equal(used, vec[i].len);
	}
	rng_seed(base_seed(11));
	for (int i = 0; i < 10000; i++) {
		uint64_t x = rng_next() >> (rng_next() % 64);
		uint8_t ref[10];
		size_t n = neg_varint_encode(buf, x);

		assert_int_equal(n, ref_varint(ref, x));
		assert_memory_equal(buf, ref, n);
		assert_int_equal(neg_varint_decode(&v, &used, buf, n), WEFT_OK);
		assert_true(v == x);
		assert_int_equal(used, n);
	}
	/* Decoding stops at the last group; trailing bytes are left. */
	static const uint8_t two[] = { 0x81, 0x00, 0x05 };
	assert_int_equal(neg_varint_decode(&v, &used, two, 3), WEFT_OK);
	assert_true(v == 128);
	assert_int_equal(used, 2);
}

static void test_varint_rejects_non_shortest_truncated_overlong(void **state)
{
	static const uint8_t nonshort1[] = { 0x80, 0x00 };
	static const uint8_t nonshort2[] = { 0x80, 0x01 };
	static const uint8_t nonshort3[] = { 0x80, 0x80, 0x7f };
	static const uint8_t trunc[] = { 0x81, 0x80 };
	/* 2^64: one bit too wide. */
	static const uint8_t wide[] = { 0x82, 0x80, 0x80, 0x80, 0x80,
					0x80, 0x80, 0x80, 0x80, 0x00 };
	static const uint8_t eleven[] = { 0x81, 0xff, 0xff, 0xff, 0xff, 0xff,
					  0xff, 0xff, 0xff, 0xff, 0x7f };
	uint64_t v;
	size_t used;

	assert_int_equal(neg_varint_decode(&v, &used, nonshort1, 2), WEFT_EPROTO);
	assert_int_equal(neg_varint_decode(&v, &used, nonshort2, 2), WEFT_EPROTO);
	assert_int_equal(neg_varint_decode(&v, &used, nonshort3, 3), WEFT_EPROTO);
	assert_int_equal(neg_varint_decode(&v, &used, trunc, 2), WEFT_EPROTO);
	assert_int_equal(neg_varint_decode(&v, &used, trunc, 0), WEFT_EPROTO);
	assert_int_equal(neg_varint_decode(&v, &used, wide, 10), WEFT_EPROTO);
	assert_int_equal(neg_varint_decode(&v, &used, eleven, 11), WEFT_EPROTO);
}

/* ------------------------------------------------------------ known vectors */

static void test_known_vector_idlist_reply(void **state)
{
	static const uint8_t msg[] = { 0x61, 0x00, 0x00, 0x02, 0x00 };
	struct item it = { 12345, { 0 } };
	uint8_t want[5 + 32] = { 0x61, 0x00, 0x00, 0x02, 0x01 };
	neg_reconciler *r;
	const uint8_t *out;
	size_t len;

	memset(it.id, 0xee, 32);
	memset(want + 5, 0xee, 32);
	neg_set *s = build(&it, 1);
	assert_int_equal(neg_reconciler_new(&r, s, 0, 1, 0), WEFT_OK);
	assert_int_equal(neg_reconciler_reconcile(&out, &len, r, msg, sizeof(msg),
						  NULL, NULL), WEFT_OK);
	assert_int_equal(len, sizeof(want));
	assert_memory_equal(out, want, sizeof(want));
	assert_false(neg_reconciler_is_client(r));
	neg_reconciler_free(r);
	neg_set_free(s);
}

static void test_known_vector_unsupported_version(void **state)
{
	static const uint8_t versions[] = { 0x62, 0x60, 0x6f };
	uint8_t msg[] = { 0x62, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff };
	neg_set *s = build(NULL, 0);

	for (size_t i = 0; i < sizeof(versions); i++) {
		neg_reconciler *r;
		const uint8_t *out;
		size_t len;

		msg[0] = versions[i];
		assert_int_equal(neg_reconciler_new(&r, s, 0, 0, 0), WEFT_OK);
		assert_int_equal(neg_reconciler_reconcile(&out, &len, r, msg,
							  sizeof(msg), NULL, NULL),
				 WEFT_OK);
		assert_int_equal(len, 1);
		assert_int_equal(out[0], 0x61);
		neg_reconciler_free(r);
	}
	neg_set_free(s);
}

/* ------------------------------------------------------------- item sets */

static void test_fingerprint_matches_independent_computation(void **state)
{
	enum { N = 1500 };
	struct item *items = malloc(N * sizeof(*items));
	uint8_t got[16], want[16];
	uint64_t seed = base_seed(21);

	assert_non_null(items);
	rng_seed(seed);
	for (size_t i = 0; i < N; i++) {
		items[i].ts = 1000 + rng_next() % 300;
		rng_id(items[i].id);
	}
	/* Large ids make the 256-bit sum wrap around. */
	for (size_t i = 0; i < 40; i++)
		memset(items[i].id, 0xff - (uint8_t)i, 32);
	neg_set *s = build(items, N);
	qsort(items, N, sizeof(*items), cmp_item);
	assert_int_equal(neg_set_size(s), N);

	/* Empty range: sha256(32 zero bytes || 0x00). */
	uint8_t zero[33] = { 0 }, hash[32];
	crypto_hash_sha256(hash, zero, sizeof(zero));
	neg_set_fingerprint(got, s, 7, 7);
	assert_memory_equal(got, hash, 16);

	static const size_t fixed[][2] = { { 0, N }, { 0, 1 }, { 0, 64 },
					   { 0, 65 }, { 63, 129 }, { 1, N - 1 },
					   { 64, 128 }, { 100, 1400 }, { N, N } };
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
		neg_set_fingerprint(got, s, fixed[i][0], fixed[i][1]);
		ref_fingerprint(want, items, fixed[i][0], fixed[i][1]);
		assert_memory_equal(got, want, 16);
	}
	for (int k = 0; k < 3000; k++) {
		size_t a = rng_next() % (N + 1), b = rng_next() % (N + 1);
		size_t lo = a < b ? a : b, hi = a < b ? b : a;

		neg_set_fingerprint(got, s, lo, hi);
		ref_fingerprint(want, items, lo, hi);
		if (memcmp(got, want, 16) != 0)
			fail_msg("seed %llu: fingerprint [%zu, %zu) wrong",
				 (unsigned long long)seed, lo, hi);
	}
	neg_set_free(s);
	free(items);
}

static void test_set_sorts_dedupes_and_stays_compact(void **state)
{
	enum { N = 100000 };
	struct item *items = malloc(N * sizeof(*items));
	neg_set *s;
	uint8_t id[32];

	assert_non_null(items);
	rng_seed(base_seed(31));
	for (size_t i = 0; i < N; i++) {
		items[i].ts = rng_next() % 5000;
		rng_id(items[i].id);
	}
	assert_int_equal(neg_set_new(&s), WEFT_OK);
	for (size_t i = 0; i < N; i++)
		assert_int_equal(neg_set_add(s, items[i].ts, items[i].id), WEFT_OK);
	/* Exact duplicates collapse; same id at another ts is another item. */
	for (size_t i = 0; i < 100; i++)
		assert_int_equal(neg_set_add(s, items[i].ts, items[i].id), WEFT_OK);
	assert_int_equal(neg_set_add(s, items[0].ts + 1, items[0].id), WEFT_OK);
	assert_int_equal(neg_set_seal(s), WEFT_OK);
	assert_int_equal(neg_set_seal(s), WEFT_OK);
	assert_int_equal(neg_set_size(s), N + 1);
	for (size_t i = 1; i < neg_set_size(s); i++) {
		struct item a = { neg_set_ts(s, i - 1), { 0 } };
		struct item b = { neg_set_ts(s, i), { 0 } };

		memcpy(a.id, neg_set_id(s, i - 1), 32);
		memcpy(b.id, neg_set_id(s, i), 32);
		assert_true(cmp_item(&a, &b) < 0);
	}
	/* Memory budget: well under 48 bytes an item. */
	assert_true(neg_set_memory_usage(s) <= (size_t)N * 41 + 4096);
	print_message("set of %d items: %zu bytes (%.1f B/item)\n", N,
		      neg_set_memory_usage(s),
		      (double)neg_set_memory_usage(s) / N);

	/* lower_bound on timestamps and full keys. */
	size_t i = neg_set_lower_bound(s, 2500, NULL);
	assert_true(i > 0 && i < neg_set_size(s));
	assert_true(neg_set_ts(s, i) >= 2500 && neg_set_ts(s, i - 1) < 2500);
	assert_int_equal(neg_set_lower_bound(s, neg_set_ts(s, 77), neg_set_id(s, 77)), 77);
	assert_int_equal(neg_set_lower_bound(s, UINT64_MAX, NULL), neg_set_size(s));

	/* Sealed sets are read-only; infinity is not a timestamp. */
	memset(id, 1, sizeof(id));
	assert_int_equal(neg_set_add(s, 1, id), WEFT_EINVAL);
	assert_int_equal(neg_set_reserve(s, 10), WEFT_EINVAL);
	neg_set_free(s);
	assert_int_equal(neg_set_new(&s), WEFT_OK);
	assert_int_equal(neg_set_add(s, UINT64_MAX, id), WEFT_EINVAL);
	assert_int_equal(neg_set_reserve(s, N), WEFT_OK);
	for (size_t k = 0; k < N; k++)
		assert_int_equal(neg_set_add(s, items[k].ts, items[k].id), WEFT_OK);
	assert_int_equal(neg_set_seal(s), WEFT_OK);
	assert_true(neg_set_memory_usage(s) <= (size_t)N * 41 + 4096);
	neg_set_free(s);

	/* Descending input with long runs of equal items sorts and dedupes. */
	assert_int_equal(neg_set_new(&s), WEFT_OK);
	for (size_t k = 0; k < 20000; k++) {
		memset(id, (int)(k % 7), sizeof(id));
		assert_int_equal(neg_set_add(s, 1000 - k / 100, id), WEFT_OK);
	}
	assert_int_equal(neg_set_seal(s), WEFT_OK);
	assert_int_equal(neg_set_size(s), 200 * 7);
	for (size_t k = 0; k < neg_set_size(s); k++) {
		assert_true(neg_set_ts(s, k) == 801 + k / 7);
		assert_int_equal(neg_set_id(s, k)[5], k % 7);
	}
	neg_set_free(s);
	free(items);
}

struct array_iter {
	const struct item *items;
	size_t n, pos, fail_at;
};

static int array_next(void *payload, uint64_t *ts, uint8_t id[32])
{
	struct array_iter *it = payload;

	if (it->pos == it->fail_at)
		return WEFT_EIO;
	if (it->pos == it->n)
		return WEFT_ITEROVER;
	*ts = it->items[it->pos].ts;
	memcpy(id, it->items[it->pos].id, 32);
	it->pos++;
	return WEFT_OK;
}

static void test_set_builds_from_iterator(void **state)
{
	struct item items[300];
	neg_set *a, *b;
	uint8_t fa[16], fb[16];

	rng_seed(base_seed(41));
	for (size_t i = 0; i < 300; i++) {
		items[i].ts = i / 3; /* sorted input: no sort needed */
		rng_id(items[i].id);
	}
	qsort(items, 300, sizeof(items[0]), cmp_item);
	struct array_iter it = { items, 300, 0, (size_t)-1 };
	assert_int_equal(neg_set_new(&a), WEFT_OK);
	assert_int_equal(neg_set_add_iter(a, array_next, &it), WEFT_OK);
	assert_int_equal(neg_set_seal(a), WEFT_OK);
	b = build(items, 300);
	assert_int_equal(neg_set_size(a), 300);
	neg_set_fingerprint(fa, a, 0, 300);
	neg_set_fingerprint(fb, b, 0, 300);
	assert_memory_equal(fa, fb, 16);
	neg_set_free(a);
	neg_set_free(b);

	/* An iterator's error comes back as is. */
	struct array_iter bad = { items, 300, 0, 150 };
	assert_int_equal(neg_set_new(&a), WEFT_OK);
	assert_int_equal(neg_set_add_iter(a, array_next, &bad), WEFT_EIO);
	neg_set_free(a);
}

/* ------------------------------------------------------- message layout */

static void test_initiate_message_layout(void **state)
{
	enum { N = 1000 };
	struct item items[N];
	uint8_t want[1 + 16 * 19], *p = want;
	neg_reconciler *r;
	const uint8_t *out;
	size_t len, at = 0;
	uint64_t prev_ts = 0;

	rng_seed(base_seed(51));
	for (size_t i = 0; i < N; i++) {
		items[i].ts = i + 1;
		rng_id(items[i].id);
	}
	neg_set *s = build(items, N);
	assert_int_equal(neg_reconciler_new(&r, s, 0, N, 0), WEFT_OK);
	assert_int_equal(neg_reconciler_initiate(&out, &len, r), WEFT_OK);

	/* 16 buckets: the first N % 16 hold one more; distinct timestamps
	 * give bounds with no id prefix; the last bound is infinity. */
	*p++ = 0x61;
	for (size_t b = 0; b < 16; b++) {
		size_t size = N / 16 + (b < N % 16), next = at + size;

		if (b == 15) {
			*p++ = 0x00;
		} else {
			p += ref_varint(p, items[next].ts - prev_ts + 1);
			prev_ts = items[next].ts;
		}
		*p++ = 0x00; /* id prefix length */
		*p++ = 0x01; /* Fingerprint */
		ref_fingerprint(p, items, at, next);
		p += 16;
		at = next;
	}
	assert_int_equal(len, (size_t)(p - want));
	assert_int_equal(len, 305);
	assert_memory_equal(out, want, len);
	assert_true(neg_reconciler_is_client(r));
	/* Initiating twice is a misuse. */
	assert_int_equal(neg_reconciler_initiate(&out, &len, r), WEFT_EINVAL);
	neg_reconciler_free(r);
	neg_set_free(s);
}

static void test_initiate_uses_minimal_id_prefix_bounds(void **state)
{
	struct item items[32];
	uint8_t want[1024], *p = want;
	neg_reconciler *r;
	const uint8_t *out;
	size_t len;

	/* All at one timestamp; item 2k shares k % 5 leading bytes with 2k-1,
	 * so the bound between them is k % 5 + 1 bytes of item 2k. */
	memset(items, 0, sizeof(items));
	for (size_t i = 0; i < 32; i++) {
		items[i].ts = 7;
		items[i].id[0] = (uint8_t)(i / 2);
		items[i].id[31] = (uint8_t)i;
	}
	for (size_t k = 1; k < 16; k++) {
		size_t shared = k % 5;

		memcpy(items[2 * k].id, items[2 * k - 1].id, 32);
		items[2 * k].id[shared] = (uint8_t)(items[2 * k - 1].id[shared] + 1);
		for (size_t j = shared + 1; j < 32; j++)
			items[2 * k].id[j] = 0;
		items[2 * k + 1] = items[2 * k];
		items[2 * k + 1].id[31] = 0xaa;
	}
	neg_set *s = build(items, 32);
	assert_int_equal(neg_set_size(s), 32);
	for (size_t i = 0; i < 32; i++)
		assert_memory_equal(neg_set_id(s, i), items[i].id, 32);
	assert_int_equal(neg_reconciler_new(&r, s, 0, 32, 0), WEFT_OK);
	assert_int_equal(neg_reconciler_initiate(&out, &len, r), WEFT_OK);

	*p++ = 0x61;
	for (size_t k = 1; k <= 16; k++) {
		if (k == 16) {
			*p++ = 0x00;
			*p++ = 0x00;
		} else {
			size_t plen = k % 5 + 1;

			*p++ = k == 1 ? 8 : 1; /* ts 7 = 0 + 8 - 1, then delta 0 */
			*p++ = (uint8_t)plen;
			memcpy(p, items[2 * k].id, plen);
			p += plen;
		}
		*p++ = 0x01;
		ref_fingerprint(p, items, 2 * k - 2, 2 * k);
		p += 16;
	}
	assert_int_equal(len, (size_t)(p - want));
	assert_memory_equal(out, want, len);
	neg_reconciler_free(r);
	neg_set_free(s);

	/* Under 32 items the whole range goes as one IdList. */
	s = build(items, 31);
	assert_int_equal(neg_reconciler_new(&r, s, 0, 31, 0), WEFT_OK);
	assert_int_equal(neg_reconciler_initiate(&out, &len, r), WEFT_OK);
	assert_int_equal(len, 5 + 31 * 32);
	static const uint8_t head[] = { 0x61, 0x00, 0x00, 0x02, 31 };
	assert_memory_equal(out, head, 5);
	for (size_t i = 0; i < 31; i++)
		assert_memory_equal(out + 5 + 32 * i, items[i].id, 32);
	neg_reconciler_free(r);
	neg_set_free(s);
}

/* ------------------------------------------------------ reconciliation */

static void test_identical_sets_take_one_round_trip(void **state)
{
	enum { N = 1000 };
	struct item items[N];
	struct diffs d = { { 0 }, { 0 } };
	struct stats st;

	rng_seed(base_seed(61));
	for (size_t i = 0; i < N; i++) {
		items[i].ts = i + 1;
		rng_id(items[i].id);
	}
	neg_set *a = build(items, N), *b = build(items, N);
	assert_int_equal(run(a, b, 0, 0, &d, &st), WEFT_OK);
	assert_int_equal(st.rounds, 1);
	assert_int_equal(st.first_up, 305);
	assert_int_equal(st.first_down, 1); /* the bare version byte */
	assert_int_equal(d.have.n + d.need.n, 0);
	neg_set_free(a);
	neg_set_free(b);
}

static void test_both_empty_and_one_side_empty(void **state)
{
	enum { N = 2000 };
	struct item *items = malloc(N * sizeof(*items));
	struct stats st;

	assert_non_null(items);
	rng_seed(base_seed(71));
	for (size_t i = 0; i < N; i++) {
		items[i].ts = rng_next() % 100;
		rng_id(items[i].id);
	}
	reconcile_and_check(NULL, 0, NULL, 0, 0, 71, &st);
	assert_int_equal(st.rounds, 1);
	assert_int_equal(st.first_up, 5); /* 61, infinity, IdList of 0 */
	assert_int_equal(st.first_down, 5);
	reconcile_and_check(items, N, NULL, 0, 0, 71, &st);
	assert_true(st.rounds <= 2);
	reconcile_and_check(NULL, 0, items, N, 0, 71, &st);
	assert_int_equal(st.rounds, 1);
	for (size_t n = 1; n <= 33; n++) {
		reconcile_and_check(items, n, NULL, 0, 0, 71, NULL);
		reconcile_and_check(NULL, 0, items, n, 0, 71, NULL);
		reconcile_and_check(items, n, items + 1, n, 0, 71, NULL);
	}
	free(items);
}

/* Random sets: shared items plus differences scattered or in clusters. */
static void random_case(uint64_t seed, size_t n, int clustered, size_t limit,
			unsigned max_rounds)
{
	struct item *ci = malloc((n + 1) * sizeof(*ci));
	struct item *si = malloc((n + 1) * sizeof(*si));
	size_t nc = 0, ns = 0, lo, hi;
	uint64_t spread;
	struct stats st;

	assert_non_null(ci);
	assert_non_null(si);
	rng_seed(seed);
	spread = (uint64_t[]){ 1, 16, n + 1, 1000000 }[rng_next() % 4];
	lo = rng_next() % (n + 1);
	hi = lo + rng_next() % (n / 8 + 2);
	for (size_t i = 0; i < n; i++) {
		struct item it;
		unsigned side; /* 0 both, 1 client, 2 server */

		it.ts = 1700000000000ULL + rng_next() % spread;
		rng_id(it.id);
		if (clustered)
			side = i >= lo && i < hi ? 1 + (unsigned)(rng_next() % 2) : 0;
		else
			side = rng_next() % 100 < 3 ? 1 + (unsigned)(rng_next() % 2) : 0;
		if (side != 2)
			ci[nc++] = it;
		if (side != 1)
			si[ns++] = it;
	}
	reconcile_and_check(ci, nc, si, ns, limit, seed, &st);
	if (st.rounds > max_rounds)
		fail_msg("seed %llu: %u rounds", (unsigned long long)seed,
			 st.rounds);
	free(ci);
	free(si);
}

static void test_random_scattered_differences(void **state)
{
	uint64_t seed = base_seed(1000);

	for (uint64_t k = 0; k < 24; k++) {
		size_t n = (size_t[]){ 10, 40, 700, 5000, 20000 }[k % 5];

		random_case(seed + k, n, 0, 0, 8);
	}
}

static void test_random_clustered_differences(void**state)
{
	uint64_t seed = base_seed(2000);

	for (uint64_t k = 0; k < 24; k++) {
		size_t n = (size_t[]){ 10, 40, 700, 5000, 20000 }[k % 5];

		random_case(seed + k, n, 1, 0, 8);
	}
}

static void test_100k_identical_one_small_round_trip(void **state)
{
	enum { N = 100000 };
	struct item *items = malloc(N * sizeof(*items));
	struct diffs d = { { 0 }, { 0 } };
	struct stats st;

	assert_non_null(items);
	rng_seed(base_seed(81));
	for (size_t i = 0; i < N; i++) {
		items[i].ts = 1700000000000ULL + rng_next() % 86400000;
		rng_id(items[i].id);
	}
	neg_set *a = build(items, N), *b = build(items, N);
	assert_int_equal(run(a, b, 0, 0, &d, &st), WEFT_OK);
	assert_int_equal(st.rounds, 1);
	assert_true(st.first_up < 512);
	assert_true(st.first_down < 512);
	assert_int_equal(st.first_down, 1);
	assert_int_equal(d.have.n + d.need.n, 0);
	print_message("100k identical: %u round trip, %zu B up, %zu B down\n",
		      st.rounds, st.up, st.down);
	neg_set_free(a);
	neg_set_free(b);
	free(items);
}

static void test_100k_with_100_newest_differing(void **state)
{
	enum { N = 100000, D = 100 };
	struct item *ci = malloc((N + D) * sizeof(*ci));
	struct item *si = malloc((N + D) * sizeof(*si));
	uint64_t base = 1700000000000ULL, seed = base_seed(91);
	struct stats st;

	assert_non_null(ci);
	assert_non_null(si);
	rng_seed(seed);
	for (size_t i = 0; i < N; i++) {
		ci[i].ts = base + i * 1000 + rng_next() % 1000;
		rng_id(ci[i].id);
		si[i] = ci[i];
	}
	/* Each side wrote 100 events the other has not seen yet. */
	for (size_t i = 0; i < D; i++) {
		ci[N + i].ts = base + N * 1000ULL + rng_next() % 100000;
		rng_id(ci[N + i].id);
		si[N + i].ts = base + N * 1000ULL + rng_next() % 100000;
		rng_id(si[N + i].id);
	}
	reconcile_and_check(ci, N + D, si, N + D, 0, seed, &st);
	print_message("100k + 100 newest differing each side: %u round trips, "
		      "%zu B up, %zu B down, %zu B total\n",
		      st.rounds, st.up, st.down, st.up + st.down);
	assert_true(st.rounds <= 4);
	assert_true(st.up + st.down < 16 * 1024);
	free(ci);
	free(si);
}

static void test_frame_size_limit_bounds_every_message(void **state)
{
	enum { N = 20000 };
	struct item *a = malloc(N * sizeof(*a)), *b = malloc(N * sizeof(*b));
	uint64_t seed = base_seed(101);
	struct stats st;

	assert_non_null(a);
	assert_non_null(b);
	rng_seed(seed);
	for (size_t i = 0; i < N; i++) {
		a[i].ts = rng_next() % 5000;
		rng_id(a[i].id);
		b[i].ts = rng_next() % 5000;
		rng_id(b[i].id);
	}
	for (size_t i = 0; i < N / 2; i++)
		b[i] = a[i];
	/* Big differences both ways; then everything on one side. */
	reconcile_and_check(a, N, b, N, 4096, seed, &st);
	print_message("20k vs 20k, half shared, limit 4096: %u rounds, "
		      "max message %zu B, %zu B up, %zu B down\n",
		      st.rounds, st.max_msg, st.up, st.down);
	assert_true(st.max_msg <= 4096);
	assert_true(st.rounds > 10); /* the limit really applied */
	reconcile_and_check(NULL, 0, a, N, 4096, seed, &st);
	assert_true(st.max_msg <= 4096);
	reconcile_and_check(a, N, NULL, 0, 4096, seed, &st);
	assert_true(st.max_msg <= 4096);
	reconcile_and_check(a, N, b, N, 8192, seed, &st);
	assert_true(st.max_msg <= 8192);
	for (uint64_t k = 0; k < 6; k++)
		random_case(seed + k, 6000, (int)(k % 2), 4096, 200);

	/* Mixed: only one side limited. */
	neg_set *x = build(a, N), *y = build(b, N);
	struct diffs d = { { 0 }, { 0 } };
	assert_int_equal(run(x, y, 0, 4096, &d, &st), WEFT_OK);
	idvec_free(&d.have);
	idvec_free(&d.need);
	assert_int_equal(run(x, y, 4096, 0, &d, &st), WEFT_OK);
	idvec_free(&d.have);
	idvec_free(&d.need);
	neg_set_free(x);
	neg_set_free(y);
	free(a);
	free(b);
}

static void test_slice_limits_reconciliation_to_a_window(void **state)
{
	enum { N = 3000 };
	struct item *a = malloc(N * sizeof(*a)), *b = malloc(N * sizeof(*b));
	neg_reconciler *cl, *sv;
	const uint8_t *m, *reply;
	size_t mlen, rlen;
	struct diffs d = { { 0 }, { 0 } };

	assert_non_null(a);
	assert_non_null(b);
	rng_seed(base_seed(111));
	for (size_t i = 0; i < N; i++) {
		a[i].ts = i;
		rng_id(a[i].id);
		b[i] = a[i];
	}
	/* Differences outside [1000, 2000) only, plus one inside. */
	rng_id(b[10].id);
	rng_id(b[2500].id);
	rng_id(b[1500].id);
	neg_set *x = build(a, N), *y = build(b, N);
	size_t xb = neg_set_lower_bound(x, 1000, NULL), xe = neg_set_lower_bound(x, 2000, NULL);
	size_t yb = neg_set_lower_bound(y, 1000, NULL), ye = neg_set_lower_bound(y, 2000, NULL);
	assert_int_equal(xe - xb, 1000);
	assert_int_equal(neg_reconciler_new(&cl, x, xb, xe, 0), WEFT_OK);
	assert_int_equal(neg_reconciler_new(&sv, y, yb, ye, 0), WEFT_OK);
	assert_int_equal(neg_reconciler_initiate(&m, &mlen, cl), WEFT_OK);
	while (mlen) {
		assert_int_equal(neg_reconciler_reconcile(&reply, &rlen, sv, m, mlen, NULL, NULL), WEFT_OK);
		assert_int_equal(neg_reconciler_reconcile(&m, &mlen, cl, reply, rlen, collect, &d), WEFT_OK);
	}
	assert_int_equal(d.have.n, 1);
	assert_int_equal(d.need.n, 1);
	assert_memory_equal(d.have.v[0], a[1500].id, 32);
	assert_memory_equal(d.need.v[0], b[1500].id, 32);
	idvec_free(&d.have);
	idvec_free(&d.need);
	neg_reconciler_free(cl);
	neg_reconciler_free(sv);

	/* A bad slice or frame limit is refused. */
	assert_int_equal(neg_reconciler_new(&cl, x, 5, 4, 0), WEFT_EINVAL);
	assert_null(cl);
	assert_int_equal(neg_reconciler_new(&cl, x, 0, N + 1, 0), WEFT_EINVAL);
	assert_int_equal(neg_reconciler_new(&cl, x, 0, N, 4095), WEFT_EINVAL);
	neg_set_free(x);
	neg_set_free(y);
	free(a);
	free(b);
}

static void test_1m_identical_sets_reconcile_quickly(void **state)
{
	enum { N = 1000000 };
	neg_set *a, *b;
	uint8_t id[32];
	struct diffs d = { { 0 }, { 0 } };
	struct stats st;
	double t0, t1, t2;

	rng_seed(base_seed(121));
	assert_int_equal(neg_set_new(&a), WEFT_OK);
	assert_int_equal(neg_set_new(&b), WEFT_OK);
	/* Known size: no growth slack, as the sync session will do. */
	assert_int_equal(neg_set_reserve(a, N), WEFT_OK);
	assert_int_equal(neg_set_reserve(b, N), WEFT_OK);
	t0 = now();
	for (size_t i = 0; i < N; i++) {
		uint64_t ts = 1700000000000ULL + i * 7 + rng_next() % 7;

		rng_id(id);
		assert_int_equal(neg_set_add(a, ts, id), WEFT_OK);
		assert_int_equal(neg_set_add(b, ts, id), WEFT_OK);
	}
	assert_int_equal(neg_set_seal(a), WEFT_OK);
	assert_int_equal(neg_set_seal(b), WEFT_OK);
	t1 = now();
	assert_int_equal(run(a, b, 0, 0, &d, &st), WEFT_OK);
	t2 = now();
	assert_int_equal(st.rounds, 1);
	assert_int_equal(st.first_down, 1);
	print_message("1M identical: build+seal both %.3f s, reconcile %.3f s, "
		      "%zu B up, %zu B down, %zu B per set\n",
		      t1 - t0, t2 - t1, st.up, st.down,
		      neg_set_memory_usage(a));
	assert_true(neg_set_memory_usage(a) <= (size_t)N * 48);
	neg_set_free(a);
	neg_set_free(b);
}

static int stop_at_first(void *payload, enum neg_diff_kind kind,
			 const uint8_t id[32])
{
	return 1;
}

static void test_callback_can_stop_the_client(void **state)
{
	struct item it = { 5, { 1 } };
	neg_set *empty = build(NULL, 0), *one = build(&it, 1);
	neg_reconciler *cl, *sv;
	const uint8_t *m, *reply;
	size_t mlen, rlen;

	assert_int_equal(neg_reconciler_new(&cl, empty, 0, 0, 0), WEFT_OK);
	assert_int_equal(neg_reconciler_new(&sv, one, 0, 1, 0), WEFT_OK);
	assert_int_equal(neg_reconciler_initiate(&m, &mlen, cl), WEFT_OK);
	assert_int_equal(neg_reconciler_reconcile(&reply, &rlen, sv, m, mlen, NULL, NULL), WEFT_OK);
	assert_int_equal(neg_reconciler_reconcile(&m, &mlen, cl, reply, rlen, stop_at_first, NULL), WEFT_EUSER);
	assert_true(strlen(neg_last_error(cl)) > 0);
	/* Once failed, the reconciler refuses to go on. */
	assert_int_equal(neg_reconciler_reconcile(&m, &mlen, cl, reply, rlen, NULL, NULL), WEFT_EINVAL);
	/* A server cannot initiate. */
	assert_int_equal(neg_reconciler_initiate(&m, &mlen, sv), WEFT_EINVAL);
	neg_reconciler_free(cl);
	neg_reconciler_free(sv);
	neg_set_free(empty);
	neg_set_free(one);

	/* A reconciler needs a sealed set. */
	neg_set *unsealed;
	assert_int_equal(neg_set_new(&unsealed), WEFT_OK);
	assert_int_equal(neg_reconciler_new(&cl, unsealed, 0, 0, 0), WEFT_EINVAL);
	neg_set_free(unsealed);
}

static void test_client_reports_each_peer_id_once(void **state)
{
	struct item mine[2] = { { 10, { 0xa1 } }, { 20, { 0xa2 } } };
	uint8_t msg[5 + 4 * 32] = { 0x61, 0x00, 0x00, 0x02, 0x04 };
	struct diffs d = { { 0 }, { 0 } };
	neg_reconciler *r;
	const uint8_t *out;
	size_t len;

	/* The server lists B twice, A (which we have) and C. */
	memset(msg + 5, 0xbb, 32);
	memset(msg + 5 + 32, 0xbb, 32);
	memcpy(msg + 5 + 64, mine[0].id, 32);
	memset(msg + 5 + 96, 0xcc, 32);
	neg_set *s = build(mine, 2);
	assert_int_equal(neg_reconciler_new(&r, s, 0, 2, 0), WEFT_OK);
	assert_int_equal(neg_reconciler_initiate(&out, &len, r), WEFT_OK);
	assert_int_equal(neg_reconciler_reconcile(&out, &len, r, msg, sizeof(msg),
						  collect, &d), WEFT_OK);
	assert_int_equal(len, 0); /* nothing left to say: done */
	assert_int_equal(d.have.n, 1);
	assert_memory_equal(d.have.v[0], mine[1].id, 32);
	assert_int_equal(d.need.n, 2);
	assert_int_equal(d.need.v[0][0], 0xbb);
	assert_int_equal(d.need.v[1][0], 0xcc);
	idvec_free(&d.have);
	idvec_free(&d.need);
	neg_reconciler_free(r);
	neg_set_free(s);
}

/* -------------------------------------------------------- hostile input */

/* Feeds msg to a fresh server (or an initiated client). */
static int feed(const neg_set *s, int as_client, const uint8_t *msg, size_t len,
		char *err, size_t errlen)
{
	neg_reconciler *r;
	const uint8_t *out;
	size_t olen;
	int rc;

	assert_int_equal(neg_reconciler_new(&r, s, 0, neg_set_size(s), 0), WEFT_OK);
	if (as_client)
		assert_int_equal(neg_reconciler_initiate(&out, &olen, r), WEFT_OK);
	rc = neg_reconciler_reconcile(&out, &olen, r, msg, len, NULL, NULL);
	if (err)
		snprintf(err, errlen, "%s", neg_last_error(r));
	if (rc < 0)
		assert_true(strncmp(neg_last_error(r), "negentropy: ", 12) == 0);
	neg_reconciler_free(r);
	return rc;
}

static void test_truncated_messages_are_rejected_at_every_length(void **state)
{
	enum { N = 1000 };
	struct item items[N];
	neg_reconciler *r;
	const uint8_t *out;
	uint8_t *msg;
	size_t len;

	rng_seed(base_seed(131));
	for (size_t i = 0; i < N; i++) {
		items[i].ts = i + 1;
		rng_id(items[i].id);
	}
	neg_set *s = build(items, N), *other = build(items + 1, N - 1);
	/* The client's first message: 16 ranges of 19 bytes. */
	assert_int_equal(neg_reconciler_new(&r, s, 0, N, 0), WEFT_OK);
	assert_int_equal(neg_reconciler_initiate(&out, &len, r), WEFT_OK);
	msg = malloc(len);
	assert_non_null(msg);
	memcpy(msg, out, len);
	neg_reconciler_free(r);
	for (size_t k = 0; k <= len; k++) {
		/* A cut at a range boundary is itself a valid message. */
		int boundary = k >= 1 && (k - 1) % 19 == 0;
		int rc = feed(other, 0, msg, k, NULL, 0);

		if (boundary)
			assert_int_equal(rc, WEFT_OK);
		else
			assert_int_equal(rc, WEFT_EPROTO);
	}
	free(msg);

	/* A server's IdList reply, cut anywhere inside, to a client. */
	neg_set *empty = build(NULL, 0), *small = build(items, 20);
	static const uint8_t ask[] = { 0x61, 0x00, 0x00, 0x02, 0x00 };
	assert_int_equal(neg_reconciler_new(&r, small, 0, 20, 0), WEFT_OK);
	assert_int_equal(neg_reconciler_reconcile(&out, &len, r, ask, sizeof(ask), NULL, NULL), WEFT_OK);
	assert_int_equal(len, 5 + 20 * 32);
	msg = malloc(len);
	assert_non_null(msg);
	memcpy(msg, out, len);
	neg_reconciler_free(r);
	for (size_t k = 0; k <= len; k++) {
		int rc = feed(empty, 1, msg, k, NULL, 0);

		if (k == 1 || k == len)
			assert_int_equal(rc, WEFT_OK);
		else
			assert_int_equal(rc, WEFT_EPROTO);
	}
	free(msg);
	neg_set_free(s);
	neg_set_free(other);
	neg_set_free(empty);
	neg_set_free(small);
}

static void test_bad_version_bytes(void **state)
{
	static const uint8_t outside[] = { 0x00, 0x01, 0x5f, 0x70, 0x7f, 0xff };
	static const uint8_t unsupported[] = { 0x60, 0x62, 0x6f };
	neg_set *s = build(NULL, 0);
	char err[256];

	for (size_t i = 0; i < sizeof(outside); i++) {
		uint8_t msg[] = { outside[i], 0x00, 0x00, 0x00 };

		assert_int_equal(feed(s, 0, msg, sizeof(msg), err, sizeof(err)), WEFT_EPROTO);
		assert_non_null(strstr(err, "version"));
		assert_int_equal(feed(s, 1, msg, sizeof(msg), NULL, 0), WEFT_EPROTO);
	}
	for (size_t i = 0; i < sizeof(unsupported); i++) {
		uint8_t msg[] = { unsupported[i] };

		assert_int_equal(feed(s, 0, msg, 1, NULL, 0), WEFT_OK);
		assert_int_equal(feed(s, 1, msg, 1, err, sizeof(err)), WEFT_EVERSION);
		assert_non_null(strstr(err, "version"));
	}
	assert_int_equal(feed(s, 0, (const uint8_t *)"", 0, NULL, 0), WEFT_EPROTO);
	neg_set_free(s);
}

static void test_hostile_ranges_are_protocol_errors(void **state)
{
	static const struct {
		const char *what;
		uint8_t msg[48];
		size_t len;
		const char *err;
	} bad[] = {
		{ "same ts, id prefix going backwards",
		  { 0x61, 0x05, 0x01, 0x50, 0x00, 0x01, 0x01, 0x40, 0x00 }, 9,
		  "not ascending at byte 5" },
		{ "timestamp overflows past infinity",
		  { 0x61, 0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
		    0x01, 0x00, 0x00, 0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
		    0x80, 0x80, 0x01, 0x00, 0x00 }, 25,
		  "past infinity at byte 13" },
		{ "finite bound reaching infinity",
		  { 0x61, 0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		    0x7f, 0x00, 0x00, 0x02, 0x00, 0x00 }, 16,
		  "past infinity at byte 13" },
		{ "infinity with an id prefix",
		  { 0x61, 0x00, 0x01, 0xaa, 0x00 }, 5, "past infinity" },
		{ "range after infinity",
		  { 0x61, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00 }, 7,
		  "after the infinity bound at byte 4" },
		{ "id prefix longer than 32",
		  { 0x61, 0x01, 0x21 }, 3, "max 32" },
		{ "unknown mode",
		  { 0x61, 0x00, 0x00, 0x03 }, 4, "unknown mode 3" },
		{ "IdList count past the end",
		  { 0x61, 0x00, 0x00, 0x02, 0x01, 0xaa }, 6, "longer than the message" },
		{ "IdList count near 2^63",
		  { 0x61, 0x00, 0x00, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		    0xff, 0xff, 0x7f }, 13, "longer than the message" },
		{ "non-shortest varint",
		  { 0x61, 0x80, 0x01, 0x00, 0x00 }, 5, "shortest form at byte 1" },
		{ "varint wider than 64 bits",
		  { 0x61, 0x83, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		    0x7f }, 11, "wider than 64 bits" },
		{ "truncated fingerprint",
		  { 0x61, 0x00, 0x00, 0x01, 0x00, 0x00 }, 6, "fingerprint" },
	};
	struct item items[40];
	char err[256];

	rng_seed(base_seed(141));
	for (size_t i = 0; i < 40; i++) {
		items[i].ts = i;
		rng_id(items[i].id);
	}
	neg_set *s = build(items, 40);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		for (int client = 0; client < 2; client++) {
			int rc = feed(s, client, bad[i].msg, bad[i].len, err, sizeof(err));

			if (rc != WEFT_EPROTO || !strstr(err, bad[i].err))
				fail_msg("%s (%s): rc %d, \"%s\"", bad[i].what,
					 client ? "client" : "server", rc, err);
		}
	}
	/* The counts are checked before anything is allocated. */
	neg_reconciler *r;
	const uint8_t *out;
	size_t olen;
	assert_int_equal(neg_reconciler_new(&r, s, 0, 40, 0), WEFT_OK);
	assert_int_equal(neg_reconciler_initiate(&out, &olen, r), WEFT_OK);
	alloc_fail_after(1);
	int rc = neg_reconciler_reconcile(&out, &olen, r, bad[9].msg, bad[9].len,
					  NULL, NULL);
	alloc_fail_after(0);
	assert_int_equal(rc, WEFT_EPROTO);
	neg_reconciler_free(r);

	/* Equal neighbouring bounds (an empty range) are tolerated. */
	static const uint8_t empty_range[] = { 0x61, 0x05, 0x00, 0x00, 0x01, 0x00, 0x00 };
	assert_int_equal(feed(s, 0, empty_range, sizeof(empty_range), NULL, 0), WEFT_OK);
	neg_set_free(s);
}

static void test_random_garbage_never_crashes(void **state)
{
	struct item items[100];
	uint8_t msg[300];
	uint64_t seed = base_seed(151);

	rng_seed(seed);
	for (size_t i = 0; i < 100; i++) {
		items[i].ts = rng_next() % 50;
		rng_id(items[i].id);
	}
	neg_set *s = build(items, 100);
	for (int k = 0; k < 3000; k++) {
		size_t len = 1 + rng_next() % sizeof(msg);

		for (size_t i = 0; i < len; i++) {
			uint64_t r = rng_next();
			/* Mostly small bytes so that some messages parse far. */
			msg[i] = (uint8_t)(r % 4 == 0 ? r >> 8 : (r >> 8) % 4);
		}
		msg[0] = 0x61;
		int rc = feed(s, k % 2, msg, len, NULL, 0);
		if (rc != WEFT_OK && rc != WEFT_EPROTO)
			fail_msg("seed %llu: unexpected %d", (unsigned long long)seed, rc);
	}
	neg_set_free(s);
}

/* -------------------------------------------------- allocation failures */

static size_t heap_in_use(void)
{
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
#else
	return 0;
#endif
}

/* Every allocation fails in turn; each failure is ENOMEM and frees all. */
static int alloc_scenario(const struct item *a, size_t na, const struct item *b,
			  size_t nb, size_t limit)
{
	neg_set *x = NULL, *y = NULL;
	neg_reconciler *cl = NULL, *sv = NULL;
	const uint8_t *m, *reply;
	size_t mlen, rlen;
	struct diffs d = { { 0 }, { 0 } };
	int rc;

	if ((rc = neg_set_new(&x)) < 0 || (rc = neg_set_new(&y)) < 0)
		goto out;
	for (size_t i = 0; i < na; i++)
		if ((rc = neg_set_add(x, a[i].ts, a[i].id)) < 0)
			goto out;
	if ((rc = neg_set_reserve(y, nb)) < 0)
		goto out;
	for (size_t i = 0; i < nb; i++)
		if ((rc = neg_set_add(y, b[i].ts, b[i].id)) < 0)
			goto out;
	if ((rc = neg_set_seal(x)) < 0 || (rc = neg_set_seal(y)) < 0)
		goto out;
	if ((rc = neg_reconciler_new(&cl, x, 0, na, limit)) < 0 ||
	    (rc = neg_reconciler_new(&sv, y, 0, nb, limit)) < 0)
		goto out;
	if ((rc = neg_reconciler_initiate(&m, &mlen, cl)) < 0)
		goto out;
	while (mlen) {
		if ((rc = neg_reconciler_reconcile(&reply, &rlen, sv, m, mlen, NULL, NULL)) < 0)
			goto out;
		if ((rc = neg_reconciler_reconcile(&m, &mlen, cl, reply, rlen, collect, &d)) < 0)
			goto out;
	}
out:
	idvec_free(&d.have);
	idvec_free(&d.need);
	neg_reconciler_free(cl);
	neg_reconciler_free(sv);
	neg_set_free(x);
	neg_set_free(y);
	return rc;
}

static void test_allocation_failures_never_crash_or_leak(void **state)
{
	enum { N = 3000 };
	struct item *a = malloc(N * sizeof(*a)), *b = malloc(N * sizeof(*b));
	size_t limits[] = { 0, 4096 };

	assert_non_null(a);
	assert_non_null(b);
	rng_seed(base_seed(161));
	for (size_t i = 0; i < N; i++) {
		a[i].ts = rng_next() % 1000;
		rng_id(a[i].id);
		b[i] = a[i];
		if (i % 10 == 0)
			rng_id(b[i].id);
	}
	/* Warm up stdio and the like before measuring the heap. */
	assert_int_equal(alloc_scenario(a, N, b, N, 0), WEFT_OK);
	for (size_t l = 0; l < 2; l++) {
		unsigned long n, failures = 0;

		for (n = 1;; n++) {
			size_t before;
			int rc;

			before = heap_in_use();
			alloc_fail_after(n);
			rc = alloc_scenario(a, N, b, N, limits[l]);
			unsigned long used = alloc_count();
			alloc_fail_after(0);
			if (heap_in_use() != before)
				fail_msg("allocation %lu failing leaked %zd bytes", n,
					 (ssize_t)(heap_in_use() - before));
			if (used < n) {
				assert_int_equal(rc, WEFT_OK);
				break;
			}
			if (rc != WEFT_ENOMEM)
				fail_msg("allocation %lu failed but rc = %d", n, rc);
			failures++;
			assert_true(n < 10000);
		}
		print_message("limit %zu: %lu allocations, each failure handled\n",
			      limits[l], failures);
		assert_true(failures >= 5);
	}
	free(a);
	free(b);
}

int main(int argc, char **argv)
{
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)
	/* glibc's per-thread malloc cache counts freed chunks as in use, so
	 * heap statistics drift; without it the leak check above is exact.
	 * (Under AddressSanitizer, LeakSanitizer does the checking.) */
	if (!getenv("NEG_TEST_NO_TCACHE")) {
		setenv("NEG_TEST_NO_TCACHE", "1", 1);
		setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0", 1);
		execv("/proc/self/exe", argv);
	}
#endif
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_varint_encodes_msb_first_shortest),
		cmocka_unit_test(test_varint_rejects_non_shortest_truncated_overlong),
		cmocka_unit_test(test_known_vector_idlist_reply),
		cmocka_unit_test(test_known_vector_unsupported_version),
		cmocka_unit_test(test_fingerprint_matches_independent_computation),
		cmocka_unit_test(test_set_sorts_dedupes_and_stays_compact),
		cmocka_unit_test(test_set_builds_from_iterator),
		cmocka_unit_test(test_initiate_message_layout),
		cmocka_unit_test(test_initiate_uses_minimal_id_prefix_bounds),
		cmocka_unit_test(test_identical_sets_take_one_round_trip),
		cmocka_unit_test(test_both_empty_and_one_side_empty),
		cmocka_unit_test(test_random_scattered_differences),
		cmocka_unit_test(test_random_clustered_differences),
		cmocka_unit_test(test_100k_identical_one_small_round_trip),
		cmocka_unit_test(test_100k_with_100_newest_differing),
		cmocka_unit_test(test_frame_size_limit_bounds_every_message),
		cmocka_unit_test(test_slice_limits_reconciliation_to_a_window),
		cmocka_unit_test(test_1m_identical_sets_reconcile_quickly),
		cmocka_unit_test(test_callback_can_stop_the_client),
		cmocka_unit_test(test_client_reports_each_peer_id_once),
		cmocka_unit_test(test_truncated_messages_are_rejected_at_every_length),
		cmocka_unit_test(test_bad_version_bytes),
		cmocka_unit_test(test_hostile_ranges_are_protocol_errors),
		cmocka_unit_test(test_random_garbage_never_crashes),
		cmocka_unit_test(test_allocation_failures_never_crash_or_leak),
	};

	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests_name("negentropy", tests, NULL, NULL);
}
