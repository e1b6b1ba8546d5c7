/* The event codec: test vectors, round trips, tampering, truncation, limits. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "core/alloc.h"
#include "core/codec.h"
#include "core/hlc.h"

#define VECTORS_PATH WEFT_SOURCE_DIR "/tests/vectors/events.txt"

/* ------------------------------------------------------ vector file reader */

#define VEC_MAX_KEYS 16

typedef struct vec {
	int valid; /* 1: "valid" record, 0: "invalid" */
	char *name;
	int line;
	int nkeys;
	char *key[VEC_MAX_KEYS];
	char *val[VEC_MAX_KEYS];
} vec;

typedef struct vecfile {
	vec *v;
	size_t n;
} vecfile;

static char *xstrdup(const char *s)
{
	char *d = strdup(s);
	assert_non_null(d);
	return d;
}

static void vecfile_load(vecfile *vf)
{
	FILE *f = fopen(VECTORS_PATH, "r");
	if (!f)
		fail_msg("cannot open %s", VECTORS_PATH);
	char *line = NULL;
	size_t cap = 0;
	ssize_t got;
	int lineno = 0;
	vf->v = NULL;
	vf->n = 0;
	while ((got = getline(&line, &cap, f)) >= 0) {
		lineno++;
		while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r' || line[got - 1] == ' '))
			line[--got] = '\0';
		if (got == 0 || line[0] == '#')
			continue;
		char *sp = line + strcspn(line, " \t");
		char *value = sp + strspn(sp, " \t");
		*sp = '\0';
		if (strcmp(line, "valid") == 0 || strcmp(line, "invalid") == 0) {
			vec *nv = realloc(vf->v, (vf->n + 1) * sizeof(*nv));
			assert_non_null(nv);
			vf->v = nv;
			vec *r = &vf->v[vf->n++];
			memset(r, 0, sizeof(*r));
			r->valid = line[0] == 'v';
			r->name = xstrdup(value);
			r->line = lineno;
			continue;
		}
		if (vf->n == 0)
			fail_msg("%s:%d: \"%s\" before the first record", VECTORS_PATH, lineno, line);
		vec *r = &vf->v[vf->n - 1];
		if (r->nkeys == VEC_MAX_KEYS)
			fail_msg("%s:%d: too many keys in record %s", VECTORS_PATH, lineno, r->name);
		r->key[r->nkeys] = xstrdup(line);
		r->val[r->nkeys] = xstrdup(value);
		r->nkeys++;
	}
	free(line);
	fclose(f);
}

static void vecfile_free(vecfile *vf)
{
	for (size_t i = 0; i < vf->n; i++) {
		free(vf->v[i].name);
		for (int k = 0; k < vf->v[i].nkeys; k++) {
			free(vf->v[i].key[k]);
			free(vf->v[i].val[k]);
		}
	}
	free(vf->v);
}

static const char *vec_opt(const vec *r, const char *key)
{
	for (int k = 0; k < r->nkeys; k++)
		if (strcmp(r->key[k], key) == 0)
			return r->val[k];
	return NULL;
}

static const char *vec_get(const vec *r, const char *key)
{
	const char *v = vec_opt(r, key);
	if (!v)
		fail_msg("%s:%d: record %s lacks \"%s\"", VECTORS_PATH, r->line, r->name, key);
	return v;
}

/* Hex (or "-" for nothing) into a malloc'd buffer. */
static unsigned char *vec_hex(const vec *r, const char *key, size_t *len)
{
	const char *h = vec_get(r, key);
	if (strcmp(h, "-") == 0) {
		*len = 0;
		unsigned char *b = malloc(1);
		assert_non_null(b);
		return b;
	}
	size_t n = strlen(h);
	if (n % 2)
		fail_msg("%s:%d: %s.%s has an odd number of hex digits", VECTORS_PATH, r->line, r->name, key);
	unsigned char *b = malloc(n / 2 + 1);
	assert_non_null(b);
	if (codec_unhex(b, n / 2, h) != 0)
		fail_msg("%s:%d: %s.%s is not hex", VECTORS_PATH, r->line, r->name, key);
	*len = n / 2;
	return b;
}

static void vec_hex_fixed(const vec *r, const char *key, unsigned char *out, size_t n)
{
	size_t len;
	unsigned char *b = vec_hex(r, key, &len);
	if (len != n)
		fail_msg("%s:%d: %s.%s must be %zu bytes, is %zu", VECTORS_PATH, r->line, r->name, key, n, len);
	memcpy(out, b, n);
	free(b);
}

static uint64_t vec_u64(const vec *r, const char *key)
{
	const char *s = vec_get(r, key);
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	if (!*s || *end)
		fail_msg("%s:%d: %s.%s is not a decimal number", VECTORS_PATH, r->line, r->name, key);
	return (uint64_t)v;
}

/* "-" means none. */
static const char *vec_str_or_null(const vec *r, const char *key)
{
	const char *s = vec_get(r, key);
	return strcmp(s, "-") == 0 ? NULL : s;
}

static int error_code_by_name(const char *name)
{
	for (int c = WEFT_ERROR; c >= WEFT_ITEROVER; c--)
		if (strcmp(weft_errname(c), name) == 0)
			return c;
	fail_msg("unknown error name %s", name);
	return 0;
}

/* A valid vector's fields, decoded from the file. */
typedef struct vfields {
	unsigned char pk[32], sk[64];
	uint64_t seq;
	int has_prev;
	weft_id prev;
	uint64_t hlc;
	const char *scope, *kind, *idem;
	unsigned char *payload;
	size_t payload_len;
} vfields;

static void vfields_read(vfields *f, const vec *r)
{
	unsigned char seed[32];
	vec_hex_fixed(r, "seed", seed, 32);
	crypto_sign_seed_keypair(f->pk, f->sk, seed);
	f->seq = vec_u64(r, "seq");
	f->has_prev = vec_str_or_null(r, "prev") != NULL;
	memset(&f->prev, 0, sizeof(f->prev));
	if (f->has_prev)
		vec_hex_fixed(r, "prev", f->prev.bytes, 32);
	f->hlc = vec_u64(r, "hlc");
	f->scope = vec_get(r, "scope");
	f->kind = vec_get(r, "kind");
	f->idem = vec_str_or_null(r, "idem");
	f->payload = vec_hex(r, "payload", &f->payload_len);
}

/* Fails unless the decoded event ev carries exactly the fields f. */
static void expect_fields(const weft_event *ev, const vfields *f, int erased, const char *name)
{
	if (memcmp(weft_event_author(ev), f->pk, 32) != 0)
		fail_msg("%s: author differs", name);
	assert_int_equal(weft_event_seq(ev), f->seq);
	if (f->has_prev) {
		assert_non_null(weft_event_prev(ev));
		assert_memory_equal(weft_event_prev(ev)->bytes, f->prev.bytes, 32);
	} else {
		assert_null(weft_event_prev(ev));
	}
	assert_int_equal(weft_event_hlc(ev), f->hlc);
	assert_string_equal(weft_event_scope(ev), f->scope);
	assert_string_equal(weft_event_kind(ev), f->kind);
	if (f->idem)
		assert_string_equal(weft_event_idem_key(ev), f->idem);
	else
		assert_null(weft_event_idem_key(ev));
	size_t plen = 12345;
	const void *p = weft_event_payload(ev, &plen);
	assert_int_equal(plen, f->payload_len);
	if (erased) {
		assert_null(p);
	} else {
		assert_non_null(p); /* an empty payload is present, not erased */
		if (plen)
			assert_memory_equal(p, f->payload, plen);
	}
}

static vecfile g_vf;

static int group_setup(void **state)
{
	(void)state;
	if (sodium_init() < 0)
		return -1;
	vecfile_load(&g_vf);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	vecfile_free(&g_vf);
	return 0;
}

static int reset_alloc(void **state)
{
	(void)state;
	alloc_fail_after(0);
	return 0;
}

/* -------------------------------------------------------------- vectors */

static void test_codec_vector_file_covers_required_cases(void **state)
{
	(void)state;
	static const char *const required[] = {
		"truncated-empty", "truncated-author", "truncated-seq", "truncated-prev",
		"truncated-hlc", "truncated-scope-length", "truncated-scope",
		"truncated-kind-length", "truncated-kind", "truncated-idem-length",
		"truncated-idem", "truncated-payload-length", "truncated-payload-hash",
		"truncated-signature", "truncated-payload-flag", "truncated-payload",
		"version-2", "seq-0", "seq-1-with-prev", "seq-2-without-prev", "hlc-top-bit",
		"scope-length-0", "scope-length-65", "scope-space", "kind-length-0",
		"kind-length-65", "idem-space", "idem-length-129",
		"payload-length-over-default-limit", "payload-length-over-hard-max",
		"payload-flag-2", "erased-empty-payload", "trailing-byte",
		"wrong-payload-hash", "bad-signature",
	};
	size_t nvalid = 0, nerased = 0;
	for (size_t i = 0; i < g_vf.n; i++) {
		nvalid += g_vf.v[i].valid;
		nerased += g_vf.v[i].valid && vec_opt(&g_vf.v[i], "erased");
	}
	assert_true(nvalid >= 5);
	assert_true(nerased >= 3);
	for (size_t k = 0; k < sizeof(required) / sizeof(required[0]); k++) {
		int found = 0;
		for (size_t i = 0; i < g_vf.n; i++)
			found |= !g_vf.v[i].valid && strcmp(g_vf.v[i].name, required[k]) == 0;
		if (!found)
			fail_msg("%s lacks the invalid vector %s", VECTORS_PATH, required[k]);
	}
}

static void test_codec_builds_valid_vectors_exactly(void **state)
{
	(void)state;
	for (size_t i = 0; i < g_vf.n; i++) {
		const vec *r = &g_vf.v[i];
		if (!r->valid)
			continue;
		vfields f;
		vfields_read(&f, r);
		size_t enc_len, id_len, sig_len;
		unsigned char *enc = vec_hex(r, "enc", &enc_len);
		unsigned char *id = vec_hex(r, "id", &id_len);
		unsigned char *sig = vec_hex(r, "sig", &sig_len);
		assert_int_equal(id_len, 32);
		assert_int_equal(sig_len, 64);

		event_fields ef = {f.seq, f.has_prev ? &f.prev : NULL, f.hlc, f.scope, f.kind,
		                   f.idem, f.payload, f.payload_len};
		struct weft_event *ev = NULL;
		weft_err err;
		int rc = codec_event_build(&ev, &ef, f.sk, 0, &err);
		if (rc != WEFT_OK)
			fail_msg("vector %s: build failed: %s", r->name, err.msg);
		if (ev->enc_len != enc_len || memcmp(ev->enc, enc, enc_len) != 0)
			fail_msg("vector %s: encoding differs from %s", r->name, VECTORS_PATH);
		if (memcmp(ev->id.bytes, id, 32) != 0)
			fail_msg("vector %s: id differs", r->name);
		if (memcmp(ev->sig, sig, 64) != 0)
			fail_msg("vector %s: signature differs", r->name);
		char hex[65];
		assert_string_equal(weft_id_to_hex(hex, &ev->id), vec_get(r, "id"));
		codec_event_free(ev);
		free(enc);
		free(id);
		free(sig);
		free(f.payload);
	}
}

static void test_codec_decodes_valid_vectors_back_to_their_fields(void **state)
{
	(void)state;
	for (size_t i = 0; i < g_vf.n; i++) {
		const vec *r = &g_vf.v[i];
		if (!r->valid)
			continue;
		vfields f;
		vfields_read(&f, r);
		size_t enc_len, id_len;
		unsigned char *enc = vec_hex(r, "enc", &enc_len);
		unsigned char *id = vec_hex(r, "id", &id_len);

		weft_event *ev = NULL;
		int rc = weft_event_decode(&ev, enc, enc_len, 0);
		if (rc != WEFT_OK)
			fail_msg("vector %s: decode gave %s: %s", r->name, weft_errname(rc), weft_error_last());
		expect_fields(ev, &f, 0, r->name);
		assert_memory_equal(weft_event_id(ev)->bytes, id, 32);
		size_t blen;
		const void *b = weft_event_bytes(ev, &blen);
		assert_int_equal(blen, enc_len);
		assert_memory_equal(b, enc, enc_len);

		/* Re-encoding the decoded fields gives the same bytes, both
		 * by signing again and by the store's assemble path. */
		event_fields ef = {ev->seq, ev->seq > 1 ? &ev->prev : NULL, ev->hlc, ev->scope,
		                   ev->kind, ev->idem, ev->payload, ev->payload_len};
		struct weft_event *again = NULL;
		assert_int_equal(codec_event_build(&again, &ef, f.sk, 0, NULL), WEFT_OK);
		assert_int_equal(again->enc_len, enc_len);
		assert_memory_equal(again->enc, enc, enc_len);
		codec_event_free(again);
		assert_int_equal(codec_event_assemble(&again, ev, ev->payload, NULL), WEFT_OK);
		assert_int_equal(again->enc_len, enc_len);
		assert_memory_equal(again->enc, enc, enc_len);
		codec_event_free(again);

		weft_event_free(ev);
		free(enc);
		free(id);
		free(f.payload);
	}
}

static void test_codec_erased_vectors_keep_id_and_verify(void **state)
{
	(void)state;
	size_t checked = 0;
	for (size_t i = 0; i < g_vf.n; i++) {
		const vec *r = &g_vf.v[i];
		if (!r->valid || !vec_opt(r, "erased"))
			continue;
		vfields f;
		vfields_read(&f, r);
		size_t enc_len, er_len, id_len;
		unsigned char *enc = vec_hex(r, "enc", &enc_len);
		unsigned char *er = vec_hex(r, "erased", &er_len);
		unsigned char *id = vec_hex(r, "id", &id_len);
		/* Same header and signature, flag 0, no payload bytes. */
		assert_int_equal(er_len, enc_len - f.payload_len);
		assert_memory_equal(er, enc, er_len - 1);
		assert_int_equal(er[er_len - 1], 0);

		weft_event *ev = NULL;
		int rc = weft_event_decode(&ev, er, er_len, 0);
		if (rc != WEFT_OK)
			fail_msg("vector %s (erased): decode gave %s: %s", r->name, weft_errname(rc), weft_error_last());
		expect_fields(ev, &f, 1, r->name);
		assert_memory_equal(weft_event_id(ev)->bytes, id, 32);

		/* The store's assemble path with no payload gives these bytes too. */
		struct weft_event *again = NULL;
		assert_int_equal(codec_event_assemble(&again, ev, NULL, NULL), WEFT_OK);
		assert_int_equal(again->enc_len, er_len);
		assert_memory_equal(again->enc, er, er_len);
		codec_event_free(again);

		weft_event_free(ev);
		free(enc);
		free(er);
		free(id);
		free(f.payload);
		checked++;
	}
	assert_true(checked >= 3);
}

static void test_codec_rejects_invalid_vectors_with_named_code(void **state)
{
	(void)state;
	size_t checked = 0;
	for (size_t i = 0; i < g_vf.n; i++) {
		const vec *r = &g_vf.v[i];
		if (r->valid)
			continue;
		size_t len;
		unsigned char *enc = vec_hex(r, "enc", &len);
		const char *mp = vec_opt(r, "max_payload");
		uint32_t max_payload = mp ? (uint32_t)vec_u64(r, "max_payload") : 0;
		int expected = error_code_by_name(vec_get(r, "error"));
		assert_non_null(vec_opt(r, "reason"));

		weft_event *ev = (weft_event *)(uintptr_t)1; /* must be cleared */
		int rc = weft_event_decode(&ev, enc, len, max_payload);
		if (rc != expected)
			fail_msg("vector %s (%s): got %s, expected %s: %s", r->name, vec_get(r, "reason"),
			         weft_errname(rc), weft_errname(expected), weft_error_last());
		assert_true(ev == NULL || ev == (weft_event *)(uintptr_t)1);
		assert_string_not_equal(weft_error_last(), "no error");

		/* The store-internal decoder agrees, except that it leaves the
		 * signature to codec_event_verify_sig. */
		struct weft_event *e2 = NULL;
		weft_err err;
		rc = codec_event_decode(&e2, enc, len, max_payload, &err);
		if (rc == WEFT_OK) {
			assert_int_equal(expected, WEFT_EAUTH);
			assert_int_equal(codec_event_verify_sig(e2, &err), WEFT_EAUTH);
			codec_event_free(e2);
		} else {
			assert_int_equal(rc, expected);
			assert_null(e2);
			assert_int_equal(err.code, expected);
		}
		free(enc);
		checked++;
	}
	assert_true(checked >= 40);
}

/* ------------------------------------------------------------ helpers */

/* splitmix64: a tiny seeded PRNG so failures replay. */
static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static size_t rng_below(uint64_t *s, size_t n)
{
	return (size_t)(rng_next(s) % n);
}

static const char name_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:/-";

static void rng_name(uint64_t *s, char *out, size_t max)
{
	size_t n = 1 + rng_below(s, max);
	for (size_t i = 0; i < n; i++)
		out[i] = name_chars[rng_below(s, sizeof(name_chars) - 1)];
	out[n] = '\0';
}

static uint64_t test_seed(void)
{
	const char *e = getenv("WEFT_TEST_SEED");
	return e && *e ? strtoull(e, NULL, 0) : (uint64_t)time(NULL);
}

/* Builds a fixed event with seed byte sb and the given payload. */
static struct weft_event *build_simple(unsigned char sb, uint64_t seq, const char *idem,
                                       const void *payload, size_t len)
{
	unsigned char seed[32], pk[32], sk[64];
	memset(seed, sb, 32);
	crypto_sign_seed_keypair(pk, sk, seed);
	weft_id prev;
	memset(prev.bytes, 0x5a, 32);
	event_fields f = {seq, seq > 1 ? &prev : NULL, HLC_MAKE(UINT64_C(1700000000000), 3), "notes",
	                  "note.put", idem, payload, len};
	struct weft_event *ev = NULL;
	weft_err err;
	if (codec_event_build(&ev, &f, sk, 0, &err) != WEFT_OK)
		fail_msg("build_simple: %s", err.msg);
	return ev;
}

/* ---------------------------------------------------------- round trip */

#define CHECK(cond)                                                                  \
	do {                                                                         \
		if (!(cond))                                                         \
			fail_msg("WEFT_TEST_SEED=%llu iteration %d: %s failed (line %d)", \
			         (unsigned long long)seed, it, #cond, __LINE__);     \
	} while (0)

static void test_codec_round_trips_random_events_byte_identical(void **state)
{
	(void)state;
	const uint64_t seed = test_seed();
	uint64_t s = seed;
	print_message("random round trip with WEFT_TEST_SEED=%llu\n", (unsigned long long)seed);
	static unsigned char payload[4096];
	for (int it = 0; it < 300; it++) {
		unsigned char key_seed[32], pk[32], sk[64];
		for (size_t i = 0; i < 32; i++)
			key_seed[i] = (unsigned char)rng_next(&s);
		crypto_sign_seed_keypair(pk, sk, key_seed);
		/* 1..2^63-1: see docs/FORMAT.md on sequence numbers of 2^63 and up */
		uint64_t seq = it % 4 == 0 ? 1 : 1 + rng_next(&s) % ((UINT64_C(1) << 63) - 1);
		weft_id prev;
		for (size_t i = 0; i < 32; i++)
			prev.bytes[i] = (unsigned char)rng_next(&s);
		prev.bytes[rng_below(&s, 32)] |= 1; /* never all zero */
		uint64_t hlc = it % 7 == 0 ? EVENT_HLC_MAX : rng_next(&s) & EVENT_HLC_MAX;
		char scope[WEFT_SCOPE_MAX + 1], kind[WEFT_KIND_MAX + 1], idem[WEFT_IDEM_KEY_MAX + 1];
		rng_name(&s, scope, WEFT_SCOPE_MAX);
		rng_name(&s, kind, WEFT_KIND_MAX);
		size_t idem_len = rng_below(&s, WEFT_IDEM_KEY_MAX + 1);
		for (size_t i = 0; i < idem_len; i++)
			idem[i] = (char)(0x21 + rng_below(&s, 94));
		idem[idem_len] = '\0';
		size_t plen = it % 5 == 0 ? 0 : rng_below(&s, sizeof(payload) + 1);
		for (size_t i = 0; i < plen; i++)
			payload[i] = (unsigned char)rng_next(&s);

		event_fields f = {seq, seq > 1 ? &prev : NULL, hlc, scope, kind,
		                  idem_len ? idem : (it % 2 ? "" : NULL), payload, plen};
		struct weft_event *built = NULL;
		weft_err err;
		int rc = codec_event_build(&built, &f, sk, 0, &err);
		if (rc != WEFT_OK)
			fail_msg("WEFT_TEST_SEED=%llu iteration %d: build: %s", (unsigned long long)seed, it, err.msg);
		CHECK(built->enc_len == EVENT_FIXED_HEADER + strlen(scope) + strlen(kind) + idem_len + 64 + 1 + plen);

		weft_event *ev = NULL;
		rc = weft_event_decode(&ev, built->enc, built->enc_len, 0);
		if (rc != WEFT_OK)
			fail_msg("WEFT_TEST_SEED=%llu iteration %d: decode: %s", (unsigned long long)seed, it, weft_error_last());
		CHECK(memcmp(weft_event_id(ev)->bytes, built->id.bytes, 32) == 0);
		CHECK(memcmp(weft_event_author(ev), pk, 32) == 0);
		CHECK(weft_event_seq(ev) == seq);
		CHECK(seq == 1 ? weft_event_prev(ev) == NULL
		               : memcmp(weft_event_prev(ev)->bytes, prev.bytes, 32) == 0);
		CHECK(weft_event_hlc(ev) == hlc);
		CHECK(strcmp(weft_event_scope(ev), scope) == 0);
		CHECK(strcmp(weft_event_kind(ev), kind) == 0);
		CHECK(idem_len ? strcmp(weft_event_idem_key(ev), idem) == 0 : weft_event_idem_key(ev) == NULL);
		size_t got_len;
		const void *got = weft_event_payload(ev, &got_len);
		CHECK(got != NULL && got_len == plen && memcmp(got, payload, plen) == 0);

		/* Re-encode the decoded fields: sign again and assemble. */
		event_fields f2 = {ev->seq, ev->seq > 1 ? &ev->prev : NULL, ev->hlc, ev->scope, ev->kind,
		                   ev->idem, ev->payload, ev->payload_len};
		struct weft_event *again = NULL;
		CHECK(codec_event_build(&again, &f2, sk, 0, NULL) == WEFT_OK);
		CHECK(again->enc_len == built->enc_len && memcmp(again->enc, built->enc, built->enc_len) == 0);
		codec_event_free(again);
		CHECK(codec_event_assemble(&again, ev, ev->payload, NULL) == WEFT_OK);
		CHECK(again->enc_len == built->enc_len && memcmp(again->enc, built->enc, built->enc_len) == 0);
		codec_event_free(again);

		weft_event_free(ev);
		codec_event_free(built);
	}
}

/* ----------------------------------------------------- tampering, cuts */

static int name_char(unsigned char c)
{
	return c && strchr(name_chars, c) != NULL;
}

/*
 * What decoding enc with byte pos replaced by nb must return (1 MiB limit).
 * 0 where the answer depends on how the rest is re-parsed (the three
 * string length bytes): then any format error will do, but not success.
 */
static int flip_expected(const struct weft_event *ev, const unsigned char *enc, int erased,
                         size_t pos, unsigned char nb)
{
	size_t s = strlen(ev->scope), k = strlen(ev->kind), i = strlen(ev->idem);
	size_t o_kind = 82 + s, o_idem = 83 + s + k, o_plen = 84 + s + k + i;
	size_t o_hash = o_plen + 4, o_sig = o_hash + 32, o_flag = o_sig + 64;
	unsigned char m[8];
	if (pos == 0)
		return WEFT_EVERSION;
	if (pos < 33)
		return WEFT_EAUTH; /* another author: the signature fails */
	if (pos < 41) {
		memcpy(m, enc + 33, 8);
		m[pos - 33] = nb;
		uint64_t seq = codec_get_u64(m);
		int prev_zero = ev->seq == 1;
		if (seq == 0 || seq > EVENT_SEQ_MAX || (seq == 1) != prev_zero)
			return WEFT_ECORRUPT;
		return WEFT_EAUTH;
	}
	if (pos < 73) {
		static const unsigned char zero[32];
		unsigned char p[32];
		memcpy(p, enc + 41, 32);
		p[pos - 41] = nb;
		int prev_zero = memcmp(p, zero, 32) == 0;
		return (ev->seq == 1) != prev_zero ? WEFT_ECORRUPT : WEFT_EAUTH;
	}
	if (pos < 81) {
		memcpy(m, enc + 73, 8);
		m[pos - 73] = nb;
		return codec_get_u64(m) > EVENT_HLC_MAX ? WEFT_ECORRUPT : WEFT_EAUTH;
	}
	if (pos == 81 || pos == o_kind || pos == o_idem)
		return 0;
	if (pos < o_idem)
		return name_char(nb) ? WEFT_EAUTH : WEFT_ECORRUPT;
	if (pos < o_plen)
		return nb >= 0x21 && nb <= 0x7e ? WEFT_EAUTH : WEFT_ECORRUPT;
	if (pos < o_hash) {
		memcpy(m, enc + o_plen, 4);
		m[pos - o_plen] = nb;
		uint32_t len = codec_get_u32(m);
		if (len > WEFT_PAYLOAD_DEFAULT_MAX)
			return WEFT_ELIMIT;
		if (erased)
			return len == 0 ? WEFT_ECORRUPT : WEFT_EAUTH;
		/* longer: the payload is cut short; shorter: its prefix does
		 * not match the hash (checked before the trailing bytes). */
		return len > ev->payload_len ? WEFT_ECORRUPT : WEFT_EAUTH;
	}
	if (pos < o_flag)
		return WEFT_EAUTH; /* payload hash or signature */
	if (pos == o_flag)
		return WEFT_ECORRUPT; /* 2+, empty-erased, trailing or missing payload */
	return WEFT_EAUTH;        /* payload bytes */
}

static void flip_all(const struct weft_event *ev, const unsigned char *enc, size_t len,
                     int erased, const char *name)
{
	static const unsigned char masks[] = {0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff};
	unsigned char *b = malloc(len);
	assert_non_null(b);
	for (size_t pos = 0; pos < len; pos++) {
		for (size_t m = 0; m < sizeof(masks); m++) {
			memcpy(b, enc, len);
			b[pos] ^= masks[m];
			int want = flip_expected(ev, enc, erased, pos, b[pos]);
			weft_event *out = NULL;
			int rc = weft_event_decode(&out, b, len, 0);
			if (rc == WEFT_OK || (want && rc != want) ||
			    (!want && rc != WEFT_ECORRUPT && rc != WEFT_ELIMIT && rc != WEFT_EAUTH))
				fail_msg("%s%s: byte %zu ^ 0x%02x gave %s, expected %s: %s", name,
				         erased ? " (erased)" : "", pos, masks[m], weft_errname(rc),
				         want ? weft_errname(want) : "a format error", weft_error_last());
			assert_null(out);
		}
	}
	free(b);
}

static void test_codec_rejects_any_flipped_byte(void **state)
{
	(void)state;
	size_t events = 0;
	for (size_t i = 0; i < g_vf.n; i++) {
		const vec *r = &g_vf.v[i];
		if (!r->valid)
			continue;
		size_t len;
		unsigned char *enc = vec_hex(r, "enc", &len);
		weft_event *ev = NULL;
		assert_int_equal(weft_event_decode(&ev, enc, len, 0), WEFT_OK);
		flip_all(ev, enc, len, 0, r->name);
		if (vec_opt(r, "erased")) {
			size_t elen;
			unsigned char *er = vec_hex(r, "erased", &elen);
			flip_all(ev, er, elen, 1, r->name);
			free(er);
		}
		weft_event_free(ev);
		free(enc);
		events++;
	}
	assert_true(events >= 5);
}

static void truncate_all(const unsigned char *enc, size_t len, const char *name)
{
	for (size_t cut = 0; cut < len; cut++) {
		unsigned char *b = malloc(cut ? cut : 1); /* exact size: ASan catches over-reads */
		assert_non_null(b);
		memcpy(b, enc, cut);
		weft_event *out = NULL;
		int rc = weft_event_decode(&out, b, cut, 0);
		if (rc != WEFT_ECORRUPT)
			fail_msg("%s cut to %zu of %zu bytes gave %s, expected WEFT_ECORRUPT", name, cut, len,
			         weft_errname(rc));
		assert_null(out);
		free(b);
	}
}

static void test_codec_rejects_truncated_event_at_every_length(void **state)
{
	(void)state;
	for (size_t i = 0; i < g_vf.n; i++) {
		const vec *r = &g_vf.v[i];
		if (!r->valid)
			continue;
		size_t len;
		unsigned char *enc = vec_hex(r, "enc", &len);
		truncate_all(enc, len, r->name);
		free(enc);
		if (vec_opt(r, "erased")) {
			enc = vec_hex(r, "erased", &len);
			truncate_all(enc, len, r->name);
			free(enc);
		}
	}
	/* Even an empty input is "truncated", not a version mismatch. */
	weft_event *out = NULL;
	assert_int_equal(weft_event_decode(&out, "", 0, 0), WEFT_ECORRUPT);
	assert_int_equal(weft_event_decode(&out, NULL, 0, 0), WEFT_ECORRUPT);
}

/* --------------------------------------------------------------- limits */

static void test_codec_rejects_oversized_input_before_allocating(void **state)
{
	(void)state;
	struct weft_event *ev = build_simple(1, 1, NULL, "hello", 5);
	struct {
		uint32_t max_payload;
		size_t limit;
	} cases[] = {
		{0, WEFT_PAYLOAD_DEFAULT_MAX},
		{100, 100},
		{WEFT_PAYLOAD_HARD_MAX, WEFT_PAYLOAD_HARD_MAX},
		{UINT32_MAX, WEFT_PAYLOAD_HARD_MAX}, /* clamped to the hard max */
	};
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		size_t len = EVENT_OVERHEAD_MAX + cases[c].limit + 1;
		unsigned char *b = calloc(1, len);
		assert_non_null(b);
		memcpy(b, ev->enc, ev->enc_len); /* a valid start, then zeros */
		alloc_fail_after(1);
		weft_event *out = NULL;
		int rc = weft_event_decode(&out, b, len, cases[c].max_payload);
		unsigned long allocs = alloc_count();
		alloc_fail_after(0);
		if (rc != WEFT_ELIMIT)
			fail_msg("max_payload %u, %zu bytes: got %s, expected WEFT_ELIMIT", cases[c].max_payload, len,
			         weft_errname(rc));
		assert_int_equal(allocs, 0);
		assert_null(out);
		free(b);
	}
	codec_event_free(ev);
}

static void test_codec_accepts_largest_event_and_refuses_one_byte_more(void **state)
{
	(void)state;
	enum { LIMIT = 1000 };
	unsigned char seed[32], pk[32], sk[64];
	memset(seed, 9, 32);
	crypto_sign_seed_keypair(pk, sk, seed);
	char scope[WEFT_SCOPE_MAX + 1], kind[WEFT_KIND_MAX + 1], idem[WEFT_IDEM_KEY_MAX + 1];
	memset(scope, 's', WEFT_SCOPE_MAX), scope[WEFT_SCOPE_MAX] = '\0';
	memset(kind, 'k', WEFT_KIND_MAX), kind[WEFT_KIND_MAX] = '\0';
	memset(idem, 'i', WEFT_IDEM_KEY_MAX), idem[WEFT_IDEM_KEY_MAX] = '\0';
	static unsigned char payload[LIMIT + 1];
	memset(payload, 0xee, sizeof(payload));
	weft_id prev;
	memset(prev.bytes, 1, 32);
	event_fields f = {7, &prev, 42, scope, kind, idem, payload, LIMIT};
	struct weft_event *ev = NULL;
	assert_int_equal(codec_event_build(&ev, &f, sk, LIMIT, NULL), WEFT_OK);
	assert_int_equal(ev->enc_len, EVENT_OVERHEAD_MAX + LIMIT);

	weft_event *out = NULL;
	assert_int_equal(weft_event_decode(&out, ev->enc, ev->enc_len, LIMIT), WEFT_OK);
	weft_event_free(out);
	/* One byte more is refused by the size check, before parsing. */
	unsigned char *b = malloc(ev->enc_len + 1);
	assert_non_null(b);
	memcpy(b, ev->enc, ev->enc_len);
	b[ev->enc_len] = 0;
	assert_int_equal(weft_event_decode(&out, b, ev->enc_len + 1, LIMIT), WEFT_ELIMIT);
	/* A lower limit refuses the event itself. */
	assert_int_equal(weft_event_decode(&out, ev->enc, ev->enc_len, LIMIT - 1), WEFT_ELIMIT);
	free(b);
	codec_event_free(ev);

	/* The builder refuses payloads over the limit too, and clamps the
	 * limit to the hard maximum. */
	f.payload_len = LIMIT + 1;
	assert_int_equal(codec_event_build(&ev, &f, sk, LIMIT, NULL), WEFT_ELIMIT);
	assert_null(ev);
	f.payload_len = (size_t)WEFT_PAYLOAD_HARD_MAX + 1; /* never read: refused first */
	assert_int_equal(codec_event_build(&ev, &f, sk, UINT32_MAX, NULL), WEFT_ELIMIT);
	assert_null(ev);
	f.payload_len = (size_t)WEFT_PAYLOAD_DEFAULT_MAX + 1;
	assert_int_equal(codec_event_build(&ev, &f, sk, 0, NULL), WEFT_ELIMIT);
	assert_null(ev);
}

static void test_codec_build_rejects_invalid_fields(void **state)
{
	(void)state;
	unsigned char seed[32], pk[32], sk[64];
	memset(seed, 3, 32);
	crypto_sign_seed_keypair(pk, sk, seed);
	weft_id prev;
	memset(prev.bytes, 1, 32);
	char s65[66], i129[130];
	memset(s65, 'a', 65), s65[65] = '\0';
	memset(i129, 'a', 129), i129[129] = '\0';
	const event_fields good = {1, NULL, 5, "notes", "note.put", NULL, "x", 1};
	struct {
		const char *what;
		event_fields f;
		int rc;
	} cases[] = {
		{"empty scope", {1, NULL, 5, "", "k", NULL, "x", 1}, WEFT_EINVAL},
		{"NULL scope", {1, NULL, 5, NULL, "k", NULL, "x", 1}, WEFT_EINVAL},
		{"65-byte scope", {1, NULL, 5, s65, "k", NULL, "x", 1}, WEFT_EINVAL},
		{"scope with space", {1, NULL, 5, "a b", "k", NULL, "x", 1}, WEFT_EINVAL},
		{"empty kind", {1, NULL, 5, "s", "", NULL, "x", 1}, WEFT_EINVAL},
		{"65-byte kind", {1, NULL, 5, "s", s65, NULL, "x", 1}, WEFT_EINVAL},
		{"kind with '@'", {1, NULL, 5, "s", "a@b", NULL, "x", 1}, WEFT_EINVAL},
		{"idem with space", {1, NULL, 5, "s", "k", "a b", "x", 1}, WEFT_EINVAL},
		{"idem with DEL", {1, NULL, 5, "s", "k", "a\x7f", "x", 1}, WEFT_EINVAL},
		{"129-byte idem", {1, NULL, 5, "s", "k", i129, "x", 1}, WEFT_EINVAL},
		{"NULL payload with a length", {1, NULL, 5, "s", "k", NULL, NULL, 1}, WEFT_EINVAL},
		{"seq 0", {0, NULL, 5, "s", "k", NULL, "x", 1}, WEFT_EINVAL},
		{"seq 1 with prev", {1, &prev, 5, "s", "k", NULL, "x", 1}, WEFT_EINVAL},
		{"seq 2 without prev", {2, NULL, 5, "s", "k", NULL, "x", 1}, WEFT_EINVAL},
		{"hlc top bit", {1, NULL, EVENT_HLC_MAX + 1, "s", "k", NULL, "x", 1}, WEFT_EINVAL},
	};
	struct weft_event *ev = NULL;
	assert_int_equal(codec_event_build(&ev, &good, sk, 0, NULL), WEFT_OK);
	codec_event_free(ev);
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		ev = (struct weft_event *)(uintptr_t)1;
		weft_err err;
		int rc = codec_event_build(&ev, &cases[c].f, sk, 0, &err);
		if (rc != cases[c].rc)
			fail_msg("%s: got %s, expected %s", cases[c].what, weft_errname(rc), weft_errname(cases[c].rc));
		assert_null(ev);
		assert_int_equal(err.code, cases[c].rc);
	}
	/* A NULL payload with length 0 is an empty payload, as is "". */
	event_fields f = {1, NULL, 5, "s", "k", NULL, NULL, 0};
	assert_int_equal(codec_event_build(&ev, &f, sk, 0, NULL), WEFT_OK);
	size_t len = 99;
	assert_non_null(weft_event_payload(ev, &len));
	assert_int_equal(len, 0);
	codec_event_free(ev);
}

/* ------------------------------------------------------------- erasure */

static void test_codec_erased_payload_decodes_with_same_id(void **state)
{
	(void)state;
	struct weft_event *full = build_simple(4, 2, "op-1", "secret payload", 14);
	/* Erase: keep the header and signature, flag 0, drop the payload. */
	size_t elen = full->header_len + 64 + 1;
	unsigned char *er = malloc(elen);
	assert_non_null(er);
	memcpy(er, full->enc, elen);
	er[elen - 1] = 0;
	weft_event *ev = NULL;
	assert_int_equal(weft_event_decode(&ev, er, elen, 0), WEFT_OK);
	size_t len = 0;
	assert_null(weft_event_payload(ev, &len));
	assert_int_equal(len, 14);
	assert_memory_equal(weft_event_id(ev)->bytes, full->id.bytes, 32);
	assert_string_equal(weft_event_idem_key(ev), "op-1");
	size_t blen;
	const void *b = weft_event_bytes(ev, &blen);
	assert_int_equal(blen, elen);
	assert_memory_equal(b, er, elen);
	/* weft_event_payload tolerates a NULL length pointer. */
	assert_null(weft_event_payload(ev, NULL));
	weft_event_free(ev);

	/* The erased form also passes the store-internal decoder + verify. */
	struct weft_event *e2 = NULL;
	assert_int_equal(codec_event_decode(&e2, er, elen, 0, NULL), WEFT_OK);
	assert_int_equal(codec_event_verify_sig(e2, NULL), WEFT_OK);
	assert_null(e2->payload);
	codec_event_free(e2);
	free(er);
	codec_event_free(full);
}

/* ---------------------------------------------------- allocation failure */

static void test_codec_build_returns_enomem_at_every_allocation(void **state)
{
	(void)state;
	unsigned char seed[32], pk[32], sk[64];
	memset(seed, 5, 32);
	crypto_sign_seed_keypair(pk, sk, seed);
	event_fields f = {1, NULL, 5, "notes", "note.put", "k", "payload", 7};
	unsigned long n;
	for (n = 1; n < 64; n++) {
		struct weft_event *ev = (struct weft_event *)(uintptr_t)1;
		weft_err err;
		alloc_fail_after(n);
		int rc = codec_event_build(&ev, &f, sk, 0, &err);
		alloc_fail_after(0);
		if (rc == WEFT_OK) {
			codec_event_free(ev);
			break;
		}
		if (rc != WEFT_ENOMEM)
			fail_msg("allocation %lu failing gave %s, expected WEFT_ENOMEM", n, weft_errname(rc));
		assert_null(ev);
		assert_int_equal(err.code, WEFT_ENOMEM);
	}
	assert_true(n > 1 && n < 64); /* at least one failure point was exercised */
}

static void test_codec_decode_returns_enomem_at_every_allocation(void **state)
{
	(void)state;
	struct weft_event *src = build_simple(6, 3, NULL, "abc", 3);
	unsigned long n;
	for (n = 1; n < 64; n++) {
		weft_event *ev = (weft_event *)(uintptr_t)1;
		alloc_fail_after(n);
		int rc = weft_event_decode(&ev, src->enc, src->enc_len, 0);
		alloc_fail_after(0);
		if (rc == WEFT_OK) {
			weft_event_free(ev);
			break;
		}
		if (rc != WEFT_ENOMEM)
			fail_msg("allocation %lu failing gave %s, expected WEFT_ENOMEM", n, weft_errname(rc));
		assert_true(ev == NULL || ev == (weft_event *)(uintptr_t)1);
	}
	assert_true(n > 1 && n < 64);

	/* The store's assemble path too. */
	for (n = 1; n < 64; n++) {
		struct weft_event *ev = (struct weft_event *)(uintptr_t)1;
		alloc_fail_after(n);
		int rc = codec_event_assemble(&ev, src, src->payload, NULL);
		alloc_fail_after(0);
		if (rc == WEFT_OK) {
			assert_memory_equal(ev->enc, src->enc, src->enc_len);
			codec_event_free(ev);
			break;
		}
		if (rc != WEFT_ENOMEM)
			fail_msg("allocation %lu failing gave %s, expected WEFT_ENOMEM", n, weft_errname(rc));
		assert_null(ev);
	}
	assert_true(n > 1 && n < 64);
	codec_event_free(src);
}

/* ---------------------------------------------------------------- misc */

static void test_codec_decode_rejects_null_arguments(void **state)
{
	(void)state;
	weft_event *ev = NULL;
	assert_int_equal(weft_event_decode(NULL, "x", 1, 0), WEFT_EINVAL);
	assert_int_equal(weft_event_decode(&ev, NULL, 10, 0), WEFT_EINVAL);
	assert_null(ev);
}

static void test_codec_id_hex_round_trips_and_rejects_bad_text(void **state)
{
	(void)state;
	weft_id id, back;
	char hex[2 * WEFT_ID_BYTES + 1];
	for (int i = 0; i < 32; i++)
		id.bytes[i] = (unsigned char)(i * 37 + 11);
	memset(hex, 'X', sizeof(hex));
	assert_ptr_equal(weft_id_to_hex(hex, &id), hex);
	assert_string_equal(hex, "0b30557a9fc4e90e33587da2c7ec1136"
	                         "5b80a5caef14395e83a8cdf2173c6186");
	assert_int_equal(weft_id_from_hex(&back, hex), WEFT_OK);
	assert_memory_equal(back.bytes, id.bytes, 32);
	/* Upper case digits are hex digits too. */
	assert_int_equal(weft_id_from_hex(&back, "0B30557A9FC4E90E33587DA2C7EC1136"
	                                         "5B80A5CAEF14395E83A8CDF2173C6186"), WEFT_OK);
	assert_memory_equal(back.bytes, id.bytes, 32);

	char bad[80];
	static const char *const bads[] = {
		"",
		"0b30557a9fc4e90e33587da2c7ec11365b80a5caef14395e83a8cdf2173c618",   /* 63 */
		"0b30557a9fc4e90e33587da2c7ec11365b80a5caef14395e83a8cdf2173c61860", /* 65 */
		"0b30557a9fc4e90e33587da2c7ec11365b80a5caef14395e83a8cdf2173c618g",  /* not hex */
		" b30557a9fc4e90e33587da2c7ec11365b80a5caef14395e83a8cdf2173c6186",  /* space */
		"0x30557a9fc4e90e33587da2c7ec11365b80a5caef14395e83a8cdf2173c6186",  /* prefix */
	};
	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		memset(back.bytes, 0, 32);
		if (weft_id_from_hex(&back, bads[i]) != WEFT_EINVAL)
			fail_msg("weft_id_from_hex accepted \"%s\"", bads[i]);
	}
	/* Every position rejects a non-hex character. */
	for (size_t pos = 0; pos < 64; pos++) {
		strcpy(bad, hex);
		bad[pos] = 'z';
		assert_int_equal(weft_id_from_hex(&back, bad), WEFT_EINVAL);
	}
	assert_int_equal(weft_id_from_hex(&back, NULL), WEFT_EINVAL);
	assert_int_equal(weft_id_from_hex(NULL, hex), WEFT_EINVAL);
	assert_non_null(strstr(weft_error_last(), "64 hex digits"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_codec_vector_file_covers_required_cases, reset_alloc),
		cmocka_unit_test_setup(test_codec_builds_valid_vectors_exactly, reset_alloc),
		cmocka_unit_test_setup(test_codec_decodes_valid_vectors_back_to_their_fields, reset_alloc),
		cmocka_unit_test_setup(test_codec_erased_vectors_keep_id_and_verify, reset_alloc),
		cmocka_unit_test_setup(test_codec_rejects_invalid_vectors_with_named_code, reset_alloc),
		cmocka_unit_test_setup(test_codec_round_trips_random_events_byte_identical, reset_alloc),
		cmocka_unit_test_setup(test_codec_rejects_any_flipped_byte, reset_alloc),
		cmocka_unit_test_setup(test_codec_rejects_truncated_event_at_every_length, reset_alloc),
		cmocka_unit_test_setup(test_codec_rejects_oversized_input_before_allocating, reset_alloc),
		cmocka_unit_test_setup(test_codec_accepts_largest_event_and_refuses_one_byte_more, reset_alloc),
		cmocka_unit_test_setup(test_codec_build_rejects_invalid_fields, reset_alloc),
		cmocka_unit_test_setup(test_codec_erased_payload_decodes_with_same_id, reset_alloc),
		cmocka_unit_test_setup(test_codec_build_returns_enomem_at_every_allocation, reset_alloc),
		cmocka_unit_test_setup(test_codec_decode_returns_enomem_at_every_allocation, reset_alloc),
		cmocka_unit_test_setup(test_codec_decode_rejects_null_arguments, reset_alloc),
		cmocka_unit_test_setup(test_codec_id_hex_round_trips_and_rejects_bad_text, reset_alloc),
	};
	return cmocka_run_group_tests_name("codec", tests, group_setup, group_teardown);
}
