/*
 * Hostile peers: a test peer that speaks the sync protocol (a real
 * session of its own store for the handshake, then hand-built frames) and
 * lies. Each case checks what the victim relies on:
 *  - the session ends with a typed error (a replay is a no-op instead, a
 *    fork is kept as evidence), and an ERROR frame tells the peer why;
 *  - nothing invalid is stored: weft_db_verify passes, the bad events are
 *    absent, the valid ones of the same batch are kept, the local clock
 *    did not move for a refused timestamp;
 *  - memory stays bounded (RSS measured before and after).
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "faultutil.h"
#include "sync/frame.h"

#define SEED_VICTIM 0x71
#define SEED_PEER 0x72
#define RSS_BOUND (48u << 20)

static char victim_tpl[700], peer_tpl[700], victim[700], peer[700];

static int setup(void **state)
{
	(void)state;
	fu_path_to(victim_tpl, "victim-template.db");
	fu_path_to(peer_tpl, "peer-template.db");
	fu_path_to(victim, "victim.db");
	fu_path_to(peer, "peer.db");
	fu_make_store(victim_tpl, SEED_VICTIM, 20, 1);
	fu_make_store(peer_tpl, SEED_PEER, 20, 2);
	return 0;
}

/* ---------------------------------------------------------------- bytes */

typedef struct buf {
	unsigned char *p;
	size_t len, cap;
} buf;

static void add(buf *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		while (b->len + n > b->cap)
			b->cap = b->cap ? b->cap * 2 : 1024;
		b->p = realloc(b->p, b->cap);
	}
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
}

static void add_u8(buf *b, uint8_t v)
{
	add(b, &v, 1);
}

static void add_u32(buf *b, uint32_t v)
{
	unsigned char x[4];
	codec_put_u32(x, v);
	add(b, x, 4);
}

static void add_frame(buf *b, uint8_t type, const void *payload, uint32_t len)
{
	add_u8(b, type);
	add_u32(b, len);
	add(b, payload, len);
}

static void add_varint(buf *b, uint64_t v)
{
	unsigned char tmp[10];
	int n = 0;
	do {
		tmp[n++] = (unsigned char)(v & 0x7f);
		v >>= 7;
	} while (v);
	for (int i = n - 1; i >= 0; i--)
		add_u8(b, (uint8_t)(tmp[i] | (i ? 0x80 : 0)));
}

/* An EVENTS frame of the given encoded events. */
static void add_events_frame(buf *b, const buf *const *evs, size_t n)
{
	buf fr = {0};
	add_u32(&fr, (uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		add_u32(&fr, (uint32_t)evs[i]->len);
		add(&fr, evs[i]->p, evs[i]->len);
	}
	add_frame(b, FRAME_EVENTS, fr.p, (uint32_t)fr.len);
	free(fr.p);
}

/* ---------------------------------------------------------- the peers */

typedef struct duel {
	weft_db *v, *p;       /* victim and hostile peer stores */
	weft_session *vs, *ps; /* their sessions */
	uint64_t now;
	size_t rss0;
} duel;

/* Moves the bytes of one side to the other; returns bytes moved. */
static size_t shuttle(weft_session *from, weft_session *to, uint64_t now)
{
	const void *b;
	size_t n;
	weft_session_output(from, &b, &n);
	if (n) {
		weft_session_feed(to, b, n, now);
		weft_session_consume(from, n);
	}
	return n;
}

/* Both stores fresh; honest sessions until the victim has agreed on scopes
 * (state SYNCING). From then on the test speaks for the peer. */
static void duel_start(duel *d, weft_role victim_role)
{
	memset(d, 0, sizeof(*d));
	fu_copy(victim_tpl, victim);
	fu_copy(peer_tpl, peer);
	d->v = fu_open_ok(victim, SEED_VICTIM);
	d->p = fu_open_ok(peer, SEED_PEER);
	weft_session_options o = WEFT_SESSION_OPTIONS_INIT;
	o.idle_timeout_ms = 5000;
	assert_int_equal(weft_session_new(&d->vs, d->v, victim_role, &o), WEFT_OK);
	assert_int_equal(weft_session_new(&d->ps, d->p,
	                                  victim_role == WEFT_ROLE_SERVER ? WEFT_ROLE_CLIENT : WEFT_ROLE_SERVER, &o),
	                 WEFT_OK);
	d->now = 1000;
	for (int i = 0; i < 10 && weft_session_state_get(d->vs) != WEFT_SESSION_SYNCING; i++) {
		shuttle(d->ps, d->vs, d->now);
		if (weft_session_state_get(d->vs) == WEFT_SESSION_SYNCING)
			break;
		shuttle(d->vs, d->ps, d->now);
	}
	assert_int_equal(weft_session_state_get(d->vs), WEFT_SESSION_SYNCING);
	/* The honest peer is done: the test peer takes over. */
	weft_session_free(d->ps);
	d->ps = NULL;
	const void *b;
	size_t n;
	weft_session_output(d->vs, &b, &n);
	weft_session_consume(d->vs, n);
	d->rss0 = fu_rss();
}

/* Feeds hostile bytes in chunks, reading (and dropping) the victim's
 * output as a peer would. Returns the last feed's result. */
static int feed(duel *d, const void *bytes, size_t len, size_t chunk)
{
	int rc = WEFT_OK;
	const unsigned char *p = bytes;
	while (len && weft_session_state_get(d->vs) != WEFT_SESSION_FAILED) {
		size_t n = len < chunk ? len : chunk;
		rc = weft_session_feed(d->vs, p, n, d->now);
		p += n;
		len -= n;
		const void *o;
		size_t on;
		weft_session_output(d->vs, &o, &on);
		weft_session_consume(d->vs, on);
	}
	return rc;
}

/* The last frame the victim sent (its type), reading its output. */
static uint8_t last_frame(duel *d)
{
	const void *o;
	size_t on;
	weft_session_output(d->vs, &o, &on);
	frame_reader r;
	frame_reader_init(&r, FRAME_MAX_HARD);
	const unsigned char *p = o;
	uint8_t last = 0;
	for (;;) {
		frame f;
		char why[160];
		if (frame_read(&r, &f, &p, &on, why) != 1)
			break;
		last = f.type;
	}
	frame_reader_free(&r);
	weft_session_consume(d->vs, (size_t)((const unsigned char *)p - (const unsigned char *)o));
	return last;
}

/* The session failed with code, told the peer, stored nothing invalid,
 * and memory stayed bounded. */
static void expect_failed(duel *d, int rc, int code, const char *what)
{
	weft_session_stats st;
	weft_session_stats_get(&st, d->vs);
	if (weft_session_state_get(d->vs) != WEFT_SESSION_FAILED || st.result != code)
		print_error("%s: session %s with %s (%s), expected %s\n", what,
		            weft_session_state_get(d->vs) == WEFT_SESSION_FAILED ? "failed" : "did not fail",
		            weft_errname(st.result), weft_session_errmsg(d->vs), weft_errname(code));
	assert_int_equal(weft_session_state_get(d->vs), WEFT_SESSION_FAILED);
	assert_int_equal(st.result, code);
	assert_int_equal(rc, code);
	assert_true(weft_session_errmsg(d->vs)[0] != '\0');
	printf("  %s: %s: %s\n", what, weft_errname(code), weft_session_errmsg(d->vs));
}

static void duel_end(duel *d, const char *what)
{
	size_t rss = fu_rss();
	if (rss > d->rss0 && rss - d->rss0 > RSS_BOUND)
		print_error("%s: RSS grew by %zu MiB\n", what, (rss - d->rss0) >> 20);
	assert_true(rss <= d->rss0 || rss - d->rss0 <= RSS_BOUND);
	weft_session_free(d->vs);
	weft_session_free(d->ps);
	weft_verify_report rep;
	int rc = weft_db_verify(&rep, d->v, NULL, NULL);
	if (rc != WEFT_OK)
		print_error("%s: store does not verify: %s\n", what, weft_errmsg(d->v));
	assert_int_equal(rc, WEFT_OK);
	assert_int_equal(rep.bad, 0);
	weft_db_close(d->v);
	weft_db_close(d->p);
	d->v = fu_open_ok(victim, SEED_VICTIM);
	fu_check_store(d->v, what);
	weft_db_close(d->v);
}

/* --------------------------------------------------------------- events */

static unsigned char peer_sk[64], peer_pk[32];

static void peer_keys(void)
{
	unsigned char seed[32];
	memset(seed, SEED_PEER, sizeof(seed));
	crypto_sign_seed_keypair(peer_pk, peer_sk, seed);
}

/* An event signed by the peer's key, encoded into out. */
static void signed_event(buf *out, uint64_t seq, const weft_id *prev, uint64_t hlc, const char *payload)
{
	peer_keys();
	event_fields f = {seq, prev, hlc, "notes", "note.put", NULL, payload, strlen(payload)};
	struct weft_event *ev;
	weft_err err;
	assert_int_equal(codec_event_build(&ev, &f, peer_sk, 0, &err), WEFT_OK);
	out->len = 0;
	add(out, ev->enc, ev->enc_len);
	codec_event_free(ev);
}

/* A valid, new event of a third author (the peer relays it). */
static void third_party_event(buf *out, const char *payload)
{
	unsigned char seed[32], pk[32], sk[64];
	memset(seed, 0x7e, sizeof(seed));
	crypto_sign_seed_keypair(pk, sk, seed);
	event_fields f = {1, NULL, FU_NOW_MS << 16, "notes", "note.put", NULL, payload, strlen(payload)};
	struct weft_event *ev;
	weft_err err;
	assert_int_equal(codec_event_build(&ev, &f, sk, 0, &err), WEFT_OK);
	out->len = 0;
	add(out, ev->enc, ev->enc_len);
	codec_event_free(ev);
}

static int stored(weft_db *db, const buf *enc)
{
	struct weft_event *ev;
	weft_err err;
	if (codec_event_decode(&ev, enc->p, enc->len, 0, &err) < 0)
		return 0; /* cannot even be named: certainly not stored as such */
	weft_id id = ev->id;
	codec_event_free(ev);
	return fu_has(db, &id);
}

/* ---------------------------------------------------------------- cases */

static void test_hostile_frame_claiming_4gib(void **state)
{
	(void)state;
	duel d;
	duel_start(&d, WEFT_ROLE_SERVER);
	unsigned char hdr[5] = {FRAME_EVENTS, 0xff, 0xff, 0xff, 0xff};
	int rc = feed(&d, hdr, sizeof(hdr), 5);
	expect_failed(&d, rc, WEFT_ELIMIT, "frame header claiming 4 GiB");
	duel_end(&d, "4 GiB frame");
}

static void test_hostile_million_tiny_empty_frames(void **state)
{
	(void)state;
	/* A million empty DONE frames: the second one already breaks the
	 * protocol, the rest is never looked at. */
	duel d;
	duel_start(&d, WEFT_ROLE_SERVER);
	buf b = {0};
	for (int i = 0; i < 1000000; i++)
		add_frame(&b, FRAME_DONE, NULL, 0);
	int rc = feed(&d, b.p, b.len, 64 << 10);
	expect_failed(&d, rc, WEFT_EPROTO, "a million empty frames");
	duel_end(&d, "a million empty frames");
	free(b.p);
}

static void test_hostile_million_tiny_reconciliation_frames(void **state)
{
	(void)state;
	/* A million one-byte reconciliation messages, each answered: memory
	 * must stay bounded and the session must end. */
	duel d;
	duel_start(&d, WEFT_ROLE_SERVER);
	buf b = {0};
	unsigned char v1 = 0x61;
	for (int i = 0; i < 1000000; i++)
		add_frame(&b, FRAME_NEG, &v1, 1);
	int rc = feed(&d, b.p, b.len, 64 << 10);
	weft_session_stats st;
	weft_session_stats_get(&st, d.vs);
	int ended = weft_session_state_get(d.vs) == WEFT_SESSION_FAILED;
	printf("  a million tiny reconciliation frames: %s after %llu round trips (%s)\n",
	       ended ? weft_errname(st.result) : "still running", (unsigned long long)st.round_trips,
	       weft_session_errmsg(d.vs));
	(void)rc;
	duel_end(&d, "a million tiny frames");
	free(b.p);
	assert_true(ended);
}

typedef struct mutation {
	const char *name;
	int code;
	void (*apply)(buf *ev);
} mutation;

static void m_bad_signature(buf *ev)
{
	/* The signature follows the 120-byte fixed header and the strings. */
	ev->p[ev->len - 1 - 5 - 10] ^= 0x80;
}

static void m_forged_author(buf *ev)
{
	unsigned char seed[32], pk[32], sk[64];
	memset(seed, SEED_VICTIM, sizeof(seed));
	crypto_sign_seed_keypair(pk, sk, seed);
	memcpy(ev->p + 1, pk, 32); /* claims to be the victim's own event */
}

static void m_wrong_id(buf *ev)
{
	ev->p[1 + 32 + 8 + 32 + 7] ^= 1; /* the timestamp: the id changes */
}

static void m_trailing_byte(buf *ev)
{
	add_u8(ev, 0);
}

static void m_payload_flag(buf *ev)
{
	ev->p[ev->len - 6] = 2; /* payload "hello": flag is 6 bytes from the end */
}

static void m_seq_zero(buf *ev)
{
	memset(ev->p + 33, 0, 8);
}

static void m_bad_scope(buf *ev)
{
	ev->p[1 + 32 + 8 + 32 + 8 + 1] = ' '; /* first byte of the scope */
}

static void m_truncated(buf *ev)
{
	ev->len -= 3;
}

static void m_version(buf *ev)
{
	ev->p[0] = 9;
}

static void m_payload_altered(buf *ev)
{
	ev->p[ev->len - 1] ^= 0x20;
}

static void test_hostile_invalid_events(void **state)
{
	(void)state;
	static const mutation muts[] = {
		{"bad signature", WEFT_EAUTH, m_bad_signature},
		{"forged author (the victim's own key)", WEFT_EAUTH, m_forged_author},
		{"wrong id (a field changed after signing)", WEFT_EAUTH, m_wrong_id},
		{"altered payload", WEFT_EAUTH, m_payload_altered},
		{"non-canonical: trailing byte", WEFT_ECORRUPT, m_trailing_byte},
		{"non-canonical: payload flag 2", WEFT_ECORRUPT, m_payload_flag},
		{"non-canonical: sequence 0", WEFT_ECORRUPT, m_seq_zero},
		{"non-canonical: space in the scope", WEFT_ECORRUPT, m_bad_scope},
		{"truncated", WEFT_ECORRUPT, m_truncated},
		{"unknown format version", WEFT_EVERSION, m_version},
	};
	for (size_t i = 0; i < sizeof(muts) / sizeof(muts[0]); i++) {
		duel d;
		duel_start(&d, WEFT_ROLE_SERVER);
		buf good = {0}, bad = {0}, fr = {0};
		third_party_event(&good, "a valid event in the same batch");
		signed_event(&bad, 100, &(weft_id){{1}}, FU_NOW_MS << 16, "hello");
		muts[i].apply(&bad);
		const buf *evs[2] = {&good, &bad};
		add_events_frame(&fr, evs, 2);
		int rc = feed(&d, fr.p, fr.len, fr.len);
		expect_failed(&d, rc, muts[i].code, muts[i].name);
		assert_false(stored(d.v, &bad));
		/* Refused alone: the valid event of the batch is kept. */
		assert_true(stored(d.v, &good));
		duel_end(&d, muts[i].name);
		free(good.p);
		free(bad.p);
		free(fr.p);
	}
}

static void test_hostile_fork_of_known_author(void **state)
{
	(void)state;
	duel d;
	duel_start(&d, WEFT_ROLE_SERVER);
	/* The victim learns the peer's first event honestly... */
	weft_iter *it;
	weft_iter_options io = WEFT_ITER_OPTIONS_INIT;
	assert_int_equal(weft_db_iter(&it, d.p, &io), WEFT_OK);
	const weft_event *ev;
	buf first = {0}, fork = {0}, fr = {0};
	while (weft_iter_next(&ev, it) == WEFT_OK) {
		if (weft_event_seq(ev) == 1 && memcmp(weft_event_author(ev), weft_db_public_key(d.p), 32) == 0) {
			size_t n;
			const void *enc = weft_event_bytes(ev, &n);
			add(&first, enc, n);
		}
	}
	weft_iter_free(it);
	assert_true(first.len > 0);
	/* ...then a second, different event with the same sequence number. */
	signed_event(&fork, 1, NULL, FU_NOW_MS << 16, "the other history");
	const buf *evs[2] = {&first, &fork};
	add_events_frame(&fr, evs, 2);
	int rc = feed(&d, fr.p, fr.len, fr.len);
	assert_int_equal(rc, WEFT_OK);
	assert_true(stored(d.v, &first));
	assert_true(stored(d.v, &fork)); /* kept as evidence */
	weft_db_stats st;
	assert_int_equal(weft_db_stats_get(&st, d.v), WEFT_OK);
	assert_int_equal(st.forked_authors, 1);
	weft_verify_report rep;
	assert_int_equal(weft_db_verify(&rep, d.v, NULL, NULL), WEFT_OK);
	assert_int_equal(rep.forks, 1);
	printf("  fork of a known author: both events kept, author flagged\n");
	duel_end(&d, "fork");
	free(first.p);
	free(fork.p);
	free(fr.p);
}

static void test_hostile_fork_hidden_in_chain(void **state)
{
	(void)state;
	/* Found by the session fuzzer (fuzz/regressions/session/
	 * fork-hidden-in-chain): once reported the store as damaged. */
	duel d;
	duel_start(&d, WEFT_ROLE_SERVER);
	/* The peer's real seq-2 event (its prev is the real seq 1), and
	 * another seq-1 event: the victim never sees the real seq 1. */
	weft_iter *it;
	assert_int_equal(weft_db_iter(&it, d.p, NULL), WEFT_OK);
	const weft_event *ev;
	buf second = {0}, other_first = {0}, fr = {0};
	while (weft_iter_next(&ev, it) == WEFT_OK) {
		if (weft_event_seq(ev) == 2 && memcmp(weft_event_author(ev), weft_db_public_key(d.p), 32) == 0) {
			size_t n;
			const void *enc = weft_event_bytes(ev, &n);
			add(&second, enc, n);
		}
	}
	weft_iter_free(it);
	assert_true(second.len > 0);
	signed_event(&other_first, 1, NULL, FU_NOW_MS << 16, "the other first event");
	const buf *evs[2] = {&other_first, &second};
	add_events_frame(&fr, evs, 2);
	feed(&d, fr.p, fr.len, fr.len);
	weft_db_stats st;
	assert_int_equal(weft_db_stats_get(&st, d.v), WEFT_OK);
	weft_verify_report rep;
	int rc = weft_db_verify(&rep, d.v, NULL, NULL);
	printf("  fork hidden in a chain: forked authors %llu, verify %s (%s)\n",
	       (unsigned long long)st.forked_authors, weft_errname(rc), rc ? weft_errmsg(d.v) : "");
	/* Evidence of a fork, not damage. */
	assert_int_equal(st.forked_authors, 1);
	assert_int_equal(rc, WEFT_OK);
	duel_end(&d, "fork hidden in a chain");
	free(second.p);
	free(other_first.p);
	free(fr.p);
}

static void test_hostile_future_timestamp(void **state)
{
	(void)state;
	duel d;
	duel_start(&d, WEFT_ROLE_SERVER);
	weft_db_stats before, after;
	assert_int_equal(weft_db_stats_get(&before, d.v), WEFT_OK);
	buf ev = {0}, fr = {0};
	signed_event(&ev, 1, NULL, (FU_NOW_MS + 3600 * 1000) << 16, "from the future");
	const buf *evs[1] = {&ev};
	add_events_frame(&fr, evs, 1);
	int rc = feed(&d, fr.p, fr.len, fr.len);
	expect_failed(&d, rc, WEFT_EFUTURE, "timestamp an hour ahead");
	assert_false(stored(d.v, &ev));
	assert_int_equal(weft_db_stats_get(&after, d.v), WEFT_OK);
	assert_int_equal(after.hlc, before.hlc); /* the clock did not move */
	duel_end(&d, "future timestamp");
	free(ev.p);
	free(fr.p);
}

/* Records everything the peer (client) sends in a complete session. */
static void record_session(buf *out)
{
	fu_copy(victim_tpl, victim);
	fu_copy(peer_tpl, peer);
	weft_db *v = fu_open_ok(victim, SEED_VICTIM), *p = fu_open_ok(peer, SEED_PEER);
	weft_session *vs, *ps;
	assert_int_equal(weft_session_new(&vs, v, WEFT_ROLE_SERVER, NULL), WEFT_OK);
	assert_int_equal(weft_session_new(&ps, p, WEFT_ROLE_CLIENT, NULL), WEFT_OK);
	for (int i = 0; i < 1000; i++) {
		const void *b;
		size_t n;
		weft_session_output(ps, &b, &n);
		add(out, b, n);
		size_t moved = shuttle(ps, vs, 1000) + shuttle(vs, ps, 1000);
		if (!moved)
			break;
	}
	assert_int_equal(weft_session_state_get(vs), WEFT_SESSION_DONE);
	weft_session_free(vs);
	weft_session_free(ps);
	weft_db_close(v);
	weft_db_close(p);
}

static void test_hostile_replay_is_a_no_op(void **state)
{
	(void)state;
	buf rec = {0};
	record_session(&rec);
	/* The victim keeps what it got; the same bytes again change nothing. */
	weft_db *v = fu_open_ok(victim, SEED_VICTIM);
	char *events = fu_event_list(v), *tables = fu_dump(v);
	weft_db_stats before;
	assert_int_equal(weft_db_stats_get(&before, v), WEFT_OK);
	weft_session *vs;
	assert_int_equal(weft_session_new(&vs, v, WEFT_ROLE_SERVER, NULL), WEFT_OK);
	size_t rss0 = fu_rss();
	assert_int_equal(weft_session_feed(vs, rec.p, rec.len, 1000), WEFT_OK);
	weft_session_stats st;
	weft_session_stats_get(&st, vs);
	assert_int_equal(st.events_received, 0);
	weft_session_free(vs);
	weft_db_stats after;
	assert_int_equal(weft_db_stats_get(&after, v), WEFT_OK);
	assert_int_equal(after.events, before.events);
	assert_int_equal(after.hlc, before.hlc);
	char *events2 = fu_event_list(v), *tables2 = fu_dump(v);
	assert_string_equal(events, events2);
	assert_string_equal(tables, tables2);
	assert_true(fu_rss() <= rss0 + RSS_BOUND);
	printf("  replay of a whole recorded session (%zu bytes): no-op\n", rec.len);
	fu_check_store(v, "replay");
	weft_db_close(v);
	free(events);
	free(tables);
	free(events2);
	free(tables2);
	free(rec.p);
}

static void neg_frame(buf *b, const buf *msg)
{
	add_frame(b, FRAME_NEG, msg->p, (uint32_t)msg->len);
}

static void test_hostile_negentropy_ranges(void **state)
{
	(void)state;
	struct {
		const char *name;
		buf msg;
	} cases[4];
	memset(cases, 0, sizeof(cases));
	/* Bounds out of order: same timestamp, the second id prefix lower. */
	cases[0].name = "ranges out of order";
	add_u8(&cases[0].msg, 0x61);
	add_varint(&cases[0].msg, 6); /* ts 5 */
	add_varint(&cases[0].msg, 1);
	add_u8(&cases[0].msg, 0xf0);
	add_varint(&cases[0].msg, 0); /* Skip */
	add_varint(&cases[0].msg, 1); /* ts +0 */
	add_varint(&cases[0].msg, 1);
	add_u8(&cases[0].msg, 0x10);
	add_varint(&cases[0].msg, 0);
	/* A range after the infinity bound. */
	cases[1].name = "range past the infinity bound";
	add_u8(&cases[1].msg, 0x61);
	add_varint(&cases[1].msg, 0); /* infinity */
	add_varint(&cases[1].msg, 0);
	add_varint(&cases[1].msg, 0);
	add_varint(&cases[1].msg, 2);
	add_varint(&cases[1].msg, 0);
	add_varint(&cases[1].msg, 0);
	/* Timestamps whose deltas add up past 2^64. */
	cases[2].name = "timestamp deltas overflowing 64 bits";
	add_u8(&cases[2].msg, 0x61);
	add_varint(&cases[2].msg, (UINT64_C(1) << 63) + 1);
	add_varint(&cases[2].msg, 0);
	add_varint(&cases[2].msg, 0);
	add_varint(&cases[2].msg, (UINT64_C(1) << 63) + 1);
	add_varint(&cases[2].msg, 0);
	add_varint(&cases[2].msg, 0);
	/* An id list claiming more ids than the message holds. */
	cases[3].name = "id list longer than the message";
	add_u8(&cases[3].msg, 0x61);
	add_varint(&cases[3].msg, 0);
	add_varint(&cases[3].msg, 0);
	add_varint(&cases[3].msg, 2); /* IdList */
	add_varint(&cases[3].msg, UINT64_C(1) << 40);
	for (size_t i = 0; i < 4; i++) {
		duel d;
		duel_start(&d, WEFT_ROLE_SERVER);
		buf fr = {0};
		neg_frame(&fr, &cases[i].msg);
		int rc = feed(&d, fr.p, fr.len, fr.len);
		expect_failed(&d, rc, WEFT_EPROTO, cases[i].name);
		duel_end(&d, cases[i].name);
		free(fr.p);
		free(cases[i].msg.p);
	}
}

static void test_hostile_peer_stops_mid_frame(void **state)
{
	(void)state;
	duel d;
	duel_start(&d, WEFT_ROLE_SERVER);
	unsigned char part[15] = {FRAME_EVENTS, 0, 0, 0, 100, 0, 0, 0, 1};
	assert_int_equal(feed(&d, part, sizeof(part), sizeof(part)), WEFT_OK);
	assert_int_equal(weft_session_tick(d.vs, d.now + 4999), WEFT_OK);
	assert_int_equal(weft_session_state_get(d.vs), WEFT_SESSION_SYNCING);
	int rc = weft_session_tick(d.vs, d.now + 5001);
	assert_int_equal(last_frame(&d), FRAME_ERROR);
	expect_failed(&d, rc, WEFT_ETIMEOUT, "peer stops mid-frame");
	duel_end(&d, "stops mid-frame");
}

/* A hostile server: every reconciliation reply lists fresh ids the client
 * lacks (an IdList) and a fingerprint that never matches, so there is
 * always another round; every WANT is answered with nothing. */
static void test_hostile_endless_idlists(void **state)
{
	(void)state;
	duel d;
	duel_start(&d, WEFT_ROLE_CLIENT);
	unsigned rounds = 0;
	uint32_t x = 12345;
	const unsigned max_rounds = fu_slow_build() ? 500 : 3000;
	while (rounds < max_rounds && weft_session_state_get(d.vs) == WEFT_SESSION_SYNCING) {
		buf reply = {0}, msg = {0};
		add_u8(&msg, 0x61);
		add_varint(&msg, 2); /* [0, 1): an IdList of 8 ids nobody has */
		add_varint(&msg, 0);
		add_varint(&msg, 2);
		add_varint(&msg, 8);
		for (int i = 0; i < 8 * 32; i++) {
			x ^= x << 13, x ^= x >> 17, x ^= x << 5;
			add_u8(&msg, (uint8_t)x);
		}
		add_varint(&msg, 0); /* [1, infinity): a fingerprint that never matches */
		add_varint(&msg, 0);
		add_varint(&msg, 1);
		for (int i = 0; i < 16; i++)
			add_u8(&msg, (uint8_t)(rounds + (unsigned)i));
		neg_frame(&reply, &msg);
		/* Whatever the client asked for: nothing comes. */
		const void *o;
		size_t on;
		weft_session_output(d.vs, &o, &on);
		frame_reader r;
		frame_reader_init(&r, FRAME_MAX_HARD);
		const unsigned char *p = o;
		size_t left = on;
		frame f;
		char why[160];
		while (frame_read(&r, &f, &p, &left, why) == 1)
			if (f.type == FRAME_WANT)
				add_frame(&reply, FRAME_WANT_END, NULL, 0);
		frame_reader_free(&r);
		weft_session_consume(d.vs, on);
		weft_session_feed(d.vs, reply.p, reply.len, d.now);
		/* Answer the WANTs of this round before the next reply. */
		weft_session_output(d.vs, &o, &on);
		buf ends = {0};
		frame_reader_init(&r, FRAME_MAX_HARD);
		p = o;
		left = on;
		int wants = 0;
		while (frame_read(&r, &f, &p, &left, why) == 1)
			wants += f.type == FRAME_WANT;
		frame_reader_free(&r);
		weft_session_consume(d.vs, on);
		for (int i = 0; i < wants; i++)
			add_frame(&ends, FRAME_WANT_END, NULL, 0);
		if (ends.len)
			weft_session_feed(d.vs, ends.p, ends.len, d.now);
		free(ends.p);
		free(reply.p);
		free(msg.p);
		rounds++;
	}
	weft_session_stats st;
	weft_session_stats_get(&st, d.vs);
	printf("  endless IdLists: %s after %u rounds (%s)\n",
	       weft_session_state_get(d.vs) == WEFT_SESSION_FAILED ? weft_errname(st.result) : "still running", rounds,
	       weft_session_errmsg(d.vs));
	int ended = weft_session_state_get(d.vs) == WEFT_SESSION_FAILED;
	duel_end(&d, "endless IdLists");
	if (!ended)
		print_error("a server that keeps the reconciliation going is never cut off (%u rounds)\n", rounds);
	assert_true(ended);
}

static void test_hostile_endless_wants_of_held_events(void **state)
{
	(void)state;
	/* WANTs of events the victim holds, never acknowledged: the queue of
	 * wanted ids is bounded. */
	duel d;
	duel_start(&d, WEFT_ROLE_SERVER);
	weft_iter *it;
	assert_int_equal(weft_db_iter(&it, d.v, NULL), WEFT_OK);
	const weft_event *ev;
	assert_int_equal(weft_iter_next(&ev, it), WEFT_OK);
	unsigned char known[32];
	memcpy(known, weft_event_id(ev)->bytes, 32);
	weft_iter_free(it);
	buf b = {0}, ids = {0};
	for (int i = 0; i < 4096; i++)
		add(&ids, known, 32);
	for (int i = 0; i < 40; i++)
		add_frame(&b, FRAME_WANT, ids.p, (uint32_t)ids.len);
	int rc = feed(&d, b.p, b.len, 64 << 10);
	expect_failed(&d, rc, WEFT_EPROTO, "endless WANTs, never acknowledged");
	duel_end(&d, "endless WANTs (known)");
	free(b.p);
	free(ids.p);
}

static void test_hostile_endless_wants_of_unknown_ids(void **state)
{
	(void)state;
	/* WANTs of ids nobody has, forever: each is answered with nothing. */
	duel d;
	duel_start(&d, WEFT_ROLE_SERVER);
	buf b = {0}, ids = {0};
	for (int i = 0; i < 4096; i++) {
		unsigned char id[32];
		memset(id, 0, 32);
		memcpy(id, &i, sizeof(i));
		id[31] = 0xee;
		add(&ids, id, 32);
	}
	const int frames = fu_slow_build() ? 40 : 200;
	for (int i = 0; i < frames; i++)
		add_frame(&b, FRAME_WANT, ids.p, (uint32_t)ids.len);
	int rc = feed(&d, b.p, b.len, 64 << 10);
	weft_session_stats st;
	weft_session_stats_get(&st, d.vs);
	int ended = weft_session_state_get(d.vs) == WEFT_SESSION_FAILED;
	printf("  endless WANTs of unknown ids: %s after %d frames of 4096 ids (%s)\n",
	       ended ? weft_errname(st.result) : "still running", frames, weft_session_errmsg(d.vs));
	duel_end(&d, "endless WANTs (unknown)");
	free(b.p);
	free(ids.p);
	(void)rc;
	if (!ended)
		print_error("a client asking for events forever is never cut off\n");
	assert_true(ended);
}

/* ------------------------------------------- a peer that never reads */

typedef struct lazy_peer {
	weft_session *honest; /* the peer's session for the handshake */
	int hostile;          /* from now on: never read, flood */
	buf flood;            /* 64 KiB of one-byte reconciliation frames */
	size_t delivered_blocked; /* bytes we made the victim take while it could not send */
	size_t limit;
} lazy_peer;

static int lp_send(void *conn, const void *b, size_t len, size_t *sent)
{
	lazy_peer *lp = conn;
	*sent = 0;
	if (lp->hostile)
		return WEFT_OK; /* never reads */
	weft_session_feed(lp->honest, b, len, 1000);
	*sent = len;
	return WEFT_OK;
}

static int lp_recv(void *conn, void *b, size_t cap, size_t *got)
{
	lazy_peer *lp = conn;
	*got = 0;
	if (!lp->hostile) {
		const void *o;
		size_t n;
		weft_session_output(lp->honest, &o, &n);
		if (n > cap)
			n = cap;
		memcpy(b, o, n);
		weft_session_consume(lp->honest, n);
		*got = n;
		if (weft_session_state_get(lp->honest) == WEFT_SESSION_SYNCING) {
			weft_session_output(lp->honest, &o, &n);
			if (!n)
				lp->hostile = 1; /* handshake done: start lying */
		}
		return WEFT_OK;
	}
	if (lp->delivered_blocked >= lp->limit)
		return err_set(NULL, WEFT_EIO, "test peer hung up");
	size_t n = cap < lp->flood.len ? cap - cap % 6 : lp->flood.len;
	memcpy(b, lp->flood.p, n);
	*got = n;
	lp->delivered_blocked += n;
	return WEFT_OK;
}

static int lp_wait(void *conn, int want_write, uint64_t timeout_ms)
{
	(void)conn, (void)want_write, (void)timeout_ms;
	return WEFT_OK;
}

static void lp_close(void *conn)
{
	(void)conn;
}

static void test_hostile_peer_that_never_reads(void **state)
{
	(void)state;
	fu_copy(victim_tpl, victim);
	fu_copy(peer_tpl, peer);
	weft_db *v = fu_open_ok(victim, SEED_VICTIM), *p = fu_open_ok(peer, SEED_PEER);
	assert_int_equal(weft_trust_add(v, weft_db_public_key(p), NULL, 0, WEFT_TRUST_READ | WEFT_TRUST_WRITE),
	                 WEFT_OK);
	lazy_peer lp;
	memset(&lp, 0, sizeof(lp));
	lp.limit = 16u << 20;
	assert_int_equal(weft_session_new(&lp.honest, p, WEFT_ROLE_CLIENT, NULL), WEFT_OK);
	unsigned char v1 = 0x61;
	while (lp.flood.len + 6 <= (64u << 10))
		add_frame(&lp.flood, FRAME_NEG, &v1, 1);
	weft_transport t;
	memset(&t, 0, sizeof(t));
	t.version = WEFT_TRANSPORT_VERSION;
	t.send = lp_send;
	t.recv = lp_recv;
	t.wait = lp_wait;
	t.close = lp_close;
	weft_session_options o = WEFT_SESSION_OPTIONS_INIT;
	o.idle_timeout_ms = 2000;
	size_t rss0 = fu_rss();
	weft_session_stats st;
	int rc = weft_sync_conn(&st, v, &t, &lp, WEFT_ROLE_SERVER, &o, NULL, NULL);
	size_t rss = fu_rss();
	printf("  a peer that never reads: %s; it made the victim take %zu KiB it could not answer; RSS +%zu MiB\n",
	       weft_errname(rc), lp.delivered_blocked >> 10, rss > rss0 ? (rss - rss0) >> 20 : 0);
	weft_session_free(lp.honest);
	free(lp.flood.p);
	weft_db_close(v);
	weft_db_close(p);
	/* A driver with back-pressure stops reading after about a frame. */
	assert_true(rc < 0);
	assert_true(lp.delivered_blocked <= (4u << 20));
}

int main(void)
{
	if (sodium_init() < 0)
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hostile_frame_claiming_4gib),
		cmocka_unit_test(test_hostile_million_tiny_empty_frames),
		cmocka_unit_test(test_hostile_million_tiny_reconciliation_frames),
		cmocka_unit_test(test_hostile_invalid_events),
		cmocka_unit_test(test_hostile_fork_of_known_author),
		cmocka_unit_test(test_hostile_fork_hidden_in_chain),
		cmocka_unit_test(test_hostile_future_timestamp),
		cmocka_unit_test(test_hostile_replay_is_a_no_op),
		cmocka_unit_test(test_hostile_negentropy_ranges),
		cmocka_unit_test(test_hostile_peer_stops_mid_frame),
		cmocka_unit_test(test_hostile_endless_idlists),
		cmocka_unit_test(test_hostile_endless_wants_of_held_events),
		cmocka_unit_test(test_hostile_endless_wants_of_unknown_ids),
		cmocka_unit_test(test_hostile_peer_that_never_reads),
	};
	return cmocka_run_group_tests_name("hostile", tests, setup, NULL);
}
