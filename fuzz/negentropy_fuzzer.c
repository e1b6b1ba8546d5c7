/*
 * Negentropy message processing (sync/negentropy.c).
 *
 * Input: mode byte, limit byte, then data. Modes:
 *  0  server: the data, split at "\n--\n", are hostile messages from a
 *     client to a server over a small sealed set;
 *  1  client: the client initiates over the set (or a slice of it), then
 *     the data are hostile replies from a server;
 *  2  honest: two sets built from the data reconcile with each other.
 * Properties:
 *  - nothing crashes, overreads or leaks; failures are typed errors with a
 *    message, after which the reconciler refuses further calls;
 *  - every message produced fits the frame size limit, and a server's
 *    reply is never empty;
 *  - a client reports as HAVE only ids of its own slice, whatever the
 *    server says;
 *  - honest reconciliation finds exactly the symmetric difference, in a
 *    bounded number of rounds.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_common.h"
#include "sync/negentropy.h"

static neg_set *fixed;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	fixed = fuzz_neg_fixed_set();
	return 0;
}

static size_t pick_limit(uint8_t b)
{
	return b < 64 ? 0 : NEG_FRAME_SIZE_MIN + (size_t)(b - 64) * 37;
}

static int in_slice(const neg_set *s, size_t lo, size_t hi, const uint8_t id[32])
{
	for (size_t i = lo; i < hi; i++)
		if (memcmp(neg_set_id(s, i), id, 32) == 0)
			return 1;
	return 0;
}

typedef struct client_check {
	const neg_set *set;
	size_t lo, hi;
	size_t reports;
} client_check;

static int on_diff_checked(void *payload, enum neg_diff_kind kind, const uint8_t id[NEG_ID_BYTES])
{
	client_check *c = payload;
	FUZZ_CHECK(kind == NEG_HAVE || kind == NEG_NEED);
	/* NEED ids come from the server and may be anything (the session
	 * looks each one up in the store); HAVE ids must be our own. */
	if (kind == NEG_HAVE)
		FUZZ_CHECK(in_slice(c->set, c->lo, c->hi, id));
	c->reports++;
	return 0;
}

/* The next message of data split at "\n--\n". */
static int next_msg(const uint8_t **msg, size_t *len, const uint8_t **p, const uint8_t *end)
{
	if (*p > end)
		return 0;
	const uint8_t *s = *p, *q = s;
	while (q + 4 <= end && memcmp(q, "\n--\n", 4) != 0)
		q++;
	if (q + 4 > end)
		q = end;
	*msg = s;
	*len = (size_t)(q - s);
	*p = q + 4;
	return 1;
}

static void check_failed(neg_reconciler *r, int rc)
{
	FUZZ_CHECK(rc == WEFT_EPROTO || rc == WEFT_EVERSION || rc == WEFT_EUSER || rc == WEFT_ENOMEM ||
	           rc == WEFT_EINVAL);
	FUZZ_CHECK(neg_last_error(r)[0] != '\0');
	if (rc == WEFT_EINVAL)
		return; /* misuse: the reconciler may go on */
	/* A failed reconciler refuses to go on. */
	const uint8_t *out;
	size_t out_len;
	static const uint8_t v1[1] = {NEG_PROTOCOL_VERSION};
	FUZZ_CHECK(neg_reconciler_reconcile(&out, &out_len, r, v1, 1, NULL, NULL) == WEFT_EINVAL);
}

static void run_server(const uint8_t *p, const uint8_t *end, size_t limit)
{
	neg_reconciler *r;
	FUZZ_CHECK(neg_reconciler_new(&r, fixed, 0, neg_set_size(fixed), limit) == 0);
	const uint8_t *msg;
	size_t len;
	for (int round = 0; round < 64 && next_msg(&msg, &len, &p, end); round++) {
		const uint8_t *out = NULL;
		size_t out_len = 0;
		int rc = neg_reconciler_reconcile(&out, &out_len, r, msg, len, NULL, NULL);
		if (rc < 0) {
			check_failed(r, rc);
			break;
		}
		FUZZ_CHECK(out_len >= 1 && out != NULL);
		FUZZ_CHECK(out[0] == NEG_PROTOCOL_VERSION);
		FUZZ_CHECK(limit == 0 || out_len <= limit);
		FUZZ_CHECK(!neg_reconciler_is_client(r));
	}
	neg_reconciler_free(r);
}

static void run_client(const uint8_t *p, const uint8_t *end, size_t limit, uint8_t slice)
{
	size_t n = neg_set_size(fixed);
	size_t lo = (slice & 0x80) ? (slice & 0x0f) % n : 0;
	size_t hi = (slice & 0x80) ? lo + ((slice >> 4) & 7) * 5 : n;
	if (hi > n)
		hi = n;
	neg_reconciler *r;
	FUZZ_CHECK(neg_reconciler_new(&r, fixed, lo, hi, limit) == 0);
	const uint8_t *out = NULL;
	size_t out_len = 0;
	FUZZ_CHECK(neg_reconciler_initiate(&out, &out_len, r) == 0);
	FUZZ_CHECK(out_len >= 1 && (limit == 0 || out_len <= limit));
	FUZZ_CHECK(neg_reconciler_is_client(r));
	client_check c = {fixed, lo, hi, 0};
	const uint8_t *msg;
	size_t len;
	for (int round = 0; round < 64 && next_msg(&msg, &len, &p, end); round++) {
		int rc = neg_reconciler_reconcile(&out, &out_len, r, msg, len, on_diff_checked, &c);
		if (rc < 0) {
			check_failed(r, rc);
			break;
		}
		FUZZ_CHECK(limit == 0 || out_len <= limit);
		if (out_len == 0)
			break; /* the client says it is complete */
	}
	neg_reconciler_free(r);
}

/* Honest mode: every data byte b adds item (b & 0x3f) to A (bit 6), B
 * (bit 7), or both (neither bit: both). */
typedef struct diff_seen {
	uint8_t have[64], need[64];
	const neg_set *a;
	size_t rounds;
} diff_seen;

static int on_diff_honest(void *payload, enum neg_diff_kind kind, const uint8_t id[NEG_ID_BYTES])
{
	diff_seen *d = payload;
	for (uint32_t k = 0; k < 64; k++) {
		uint8_t x[32];
		fuzz_neg_item_id(x, 5000 + k);
		if (memcmp(x, id, 32) == 0) {
			(kind == NEG_HAVE ? d->have : d->need)[k] = 1;
			return 0;
		}
	}
	FUZZ_CHECK(!"reported an id neither side holds");
	return 1;
}

static void run_honest(const uint8_t *p, const uint8_t *end, size_t limit)
{
	uint8_t in_a[64] = {0}, in_b[64] = {0};
	for (; p < end; p++) {
		uint8_t k = *p & 0x3f;
		int bits = *p >> 6;
		if (bits == 0 || bits == 1)
			in_a[k] = 1;
		if (bits == 0 || bits == 2)
			in_b[k] = 1;
		if (bits == 3)
			in_a[k] = in_b[k] = 0;
	}
	neg_set *a, *b;
	FUZZ_CHECK(neg_set_new(&a) == 0 && neg_set_new(&b) == 0);
	for (uint32_t k = 0; k < 64; k++) {
		uint8_t id[32];
		fuzz_neg_item_id(id, 5000 + k);
		uint64_t ts = 10 + k / 4; /* shared timestamps */
		if (in_a[k])
			FUZZ_CHECK(neg_set_add(a, ts, id) == 0);
		if (in_b[k])
			FUZZ_CHECK(neg_set_add(b, ts, id) == 0);
	}
	FUZZ_CHECK(neg_set_seal(a) == 0 && neg_set_seal(b) == 0);
	neg_reconciler *c, *s;
	FUZZ_CHECK(neg_reconciler_new(&c, a, 0, neg_set_size(a), limit) == 0);
	FUZZ_CHECK(neg_reconciler_new(&s, b, 0, neg_set_size(b), limit) == 0);
	diff_seen d;
	memset(&d, 0, sizeof(d));
	const uint8_t *msg;
	size_t len;
	FUZZ_CHECK(neg_reconciler_initiate(&msg, &len, c) == 0);
	for (;;) {
		FUZZ_CHECK(++d.rounds < 200);
		FUZZ_CHECK(limit == 0 || len <= limit);
		const uint8_t *reply;
		size_t rlen;
		FUZZ_CHECK(neg_reconciler_reconcile(&reply, &rlen, s, msg, len, NULL, NULL) == 0);
		FUZZ_CHECK(rlen >= 1 && (limit == 0 || rlen <= limit));
		FUZZ_CHECK(neg_reconciler_reconcile(&msg, &len, c, reply, rlen, on_diff_honest, &d) == 0);
		if (len == 0)
			break;
	}
	for (uint32_t k = 0; k < 64; k++) {
		FUZZ_CHECK(d.have[k] == (in_a[k] && !in_b[k]));
		FUZZ_CHECK(d.need[k] == (in_b[k] && !in_a[k]));
	}
	neg_reconciler_free(c);
	neg_reconciler_free(s);
	neg_set_free(a);
	neg_set_free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 3)
		return 0;
	const uint8_t *p = data + 3, *end = data + size;
	size_t limit = pick_limit(data[1]);
	switch (data[0] % 3) {
	case 0:
		run_server(p, end, limit);
		break;
	case 1:
		run_client(p, end, limit, data[2]);
		break;
	default:
		run_honest(p, end, limit);
		break;
	}
	return 0;
}
