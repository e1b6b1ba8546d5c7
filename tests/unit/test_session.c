/* Sync sessions: both directions, exact transfer, byte bounds, interruption,
 * hostile input, scopes. Byte counts are deterministic, so they are asserted. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <sodium.h>

#include "core/alloc.h"
#include "core/codec.h"
#include "sync/frame.h"

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

static int asan_scale(void)
{
	const char *s = getenv("WEFT_TEST_SCALE");
	return s && strcmp(s, "asan") == 0;
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

static uint64_t count_scope(weft_db *db, const char *scope)
{
	weft_iter *it;
	weft_iter_options o = WEFT_ITER_OPTIONS_INIT;
	o.scope = scope;
	tu_ok(db, weft_db_iter(&it, db, &o));
	const weft_event *ev;
	uint64_t n = 0;
	while (weft_iter_next(&ev, it) == WEFT_OK)
		n++;
	weft_iter_free(it);
	return n;
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

static void verify_ok(weft_db *db)
{
	weft_verify_report r;
	tu_ok(db, weft_db_verify(&r, db, NULL, NULL));
	assert_int_equal(r.bad, 0);
	assert_int_equal(r.broken_links, 0);
}

/* ------------------------------------------------------------ the link */

/* Parses one direction of a connection, frame by frame. */
typedef struct dir_scan {
	frame_reader rd;
	uint64_t frames[FRAME__MAX + 1];
	uint64_t payload[FRAME__MAX + 1]; /* payload bytes per frame type */
	uint64_t events, event_bytes;     /* inside EVENTS frames */
	uint64_t neg_max;                 /* largest NEG message */
	uint64_t bytes;
	uint16_t last_error;              /* code of an ERROR frame seen */
} dir_scan;

static void scan(dir_scan *d, const void *p, size_t n)
{
	const unsigned char *q = p;
	d->bytes += n;
	while (n) {
		frame f;
		char why[160];
		int rc = frame_read(&d->rd, &f, &q, &n, why);
		if (rc < 0)
			print_error("scan: %s\n", why);
		assert_true(rc >= 0);
		if (rc == 0)
			break;
		d->frames[f.type]++;
		d->payload[f.type] += f.len;
		if (f.type == FRAME_NEG && f.len > d->neg_max)
			d->neg_max = f.len;
		if (f.type == FRAME_ERROR && f.len >= 2)
			d->last_error = (uint16_t)(f.payload[0] << 8 | f.payload[1]);
		if (f.type == FRAME_EVENTS) {
			uint32_t count = codec_get_u32(f.payload);
			size_t off = 4;
			for (uint32_t i = 0; i < count; i++) {
				uint32_t len = codec_get_u32(f.payload + off);
				off += 4 + len;
				d->event_bytes += len;
			}
			assert_int_equal(off, f.len);
			d->events += count;
		}
	}
}

typedef struct link {
	dir_scan up, down; /* client to server, server to client */
	uint64_t delivered;
} link;

static void link_init(link *l)
{
	memset(l, 0, sizeof(*l));
	frame_reader_init(&l->up.rd, FRAME_MAX_HARD);
	frame_reader_init(&l->down.rd, FRAME_MAX_HARD);
}

static void link_free(link *l)
{
	frame_reader_free(&l->up.rd);
	frame_reader_free(&l->down.rd);
}

static int move(weft_session *from, weft_session *to, dir_scan *d, link *l, uint64_t cut)
{
	const void *b;
	size_t n;
	weft_session_output(from, &b, &n);
	if (n > cut - l->delivered)
		n = (size_t)(cut - l->delivered);
	if (!n)
		return 0;
	scan(d, b, n);
	weft_session_feed(to, b, n, 1);
	weft_session_consume(from, n);
	l->delivered += n;
	return 1;
}

static int ended(weft_session *s)
{
	weft_session_state st = weft_session_state_get(s);
	return st == WEFT_SESSION_DONE || st == WEFT_SESSION_FAILED;
}

/* Moves bytes both ways until both sessions end or nothing moves, or until
 * `cut` bytes (both directions together) were delivered. */
static void run_link(link *l, weft_session *c, weft_session *s, uint64_t cut)
{
	for (;;) {
		int moved = move(c, s, &l->up, l, cut);
		moved |= move(s, c, &l->down, l, cut);
		if (!moved || (ended(c) && ended(s)))
			break;
	}
	/* Error frames still waiting get delivered, if the cut allows. */
	move(c, s, &l->up, l, cut);
	move(s, c, &l->down, l, cut);
}

/* A full session between a (client) and b (server) through the scanner. */
static void sync_pair(link *l, weft_session_stats *cst, weft_session_stats *sst, weft_db *a, weft_db *b,
                      const weft_session_options *co, const weft_session_options *so, int expect)
{
	weft_session *c, *s;
	tu_ok(a, weft_session_new(&c, a, WEFT_ROLE_CLIENT, co));
	tu_ok(b, weft_session_new(&s, b, WEFT_ROLE_SERVER, so));
	link_init(l);
	run_link(l, c, s, UINT64_MAX);
	weft_session_stats x, y;
	weft_session_stats_get(&x, c);
	weft_session_stats_get(&y, s);
	if (x.result != expect)
		print_error("client: %s / %s\n", weft_errname(x.result), weft_session_errmsg(c));
	assert_int_equal(x.result, expect);
	if (expect == WEFT_OK) {
		assert_int_equal(y.result, WEFT_OK);
		assert_int_equal(weft_session_state_get(c), WEFT_SESSION_DONE);
		assert_int_equal(weft_session_state_get(s), WEFT_SESSION_DONE);
	}
	/* Every byte one side sent, the other received. */
	assert_int_equal(x.bytes_sent, y.bytes_received);
	assert_int_equal(y.bytes_sent, x.bytes_received);
	assert_int_equal(x.bytes_sent, l->up.bytes);
	if (cst)
		*cst = x;
	if (sst)
		*sst = y;
	weft_session_free(c);
	weft_session_free(s);
}

/* ------------------------------------------------------------- basics */

static void test_session_syncs_both_directions(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	append_n(a, &f->clock, 30, "home");
	append_n(b, &f->clock, 20, "home");
	weft_session_stats st, sv;
	link l;
	sync_pair(&l, &st, &sv, a, b, NULL, NULL, WEFT_OK);
	assert_int_equal(events(a), 50);
	assert_int_equal(events(b), 50);
	assert_int_equal(st.events_sent, 30);
	assert_int_equal(st.events_received, 20);
	assert_int_equal(sv.events_sent, 20);
	assert_int_equal(sv.events_received, 30);
	assert_int_equal(st.events_to_fetch, 0);
	assert_int_equal(st.events_refused, 0);
	/* Exactly the missing events crossed, each once. */
	assert_int_equal(l.up.events, 30);
	assert_int_equal(l.down.events, 20);
	assert_int_equal(l.up.frames[FRAME_DONE], 1);
	assert_int_equal(l.down.frames[FRAME_DONE], 1);
	assert_int_equal(l.up.frames[FRAME_ERROR] + l.down.frames[FRAME_ERROR], 0);
	link_free(&l);
	assert_same_events(a, b);
	/* Again: nothing moves, in one round trip. */
	sync_pair(&l, &st, &sv, a, b, NULL, NULL, WEFT_OK);
	assert_int_equal(st.events_sent, 0);
	assert_int_equal(st.events_received, 0);
	assert_int_equal(st.round_trips, 1);
	assert_int_equal(l.up.events + l.down.events, 0);
	assert_int_equal(l.up.frames[FRAME_WANT], 0);
	link_free(&l);
	/* The same through weft_sync_local, with b as the client. */
	append_n(a, &f->clock, 3, "work");
	tu_ok(b, weft_sync_local(&st, b, a, NULL));
	assert_int_equal(st.events_received, 3);
	assert_int_equal(st.events_sent, 0);
	assert_int_equal(st.result, WEFT_OK);
	assert_same_events(a, b);
	verify_ok(a);
	verify_ok(b);
	weft_db_close(a);
	weft_db_close(b);
}

static void test_session_moves_events_from_one_empty_side(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	append_n(b, &f->clock, 700, "home");
	weft_session_options o = WEFT_SESSION_OPTIONS_INIT;
	o.batch_events = 50;
	weft_session_stats st;
	link l;
	/* The client lacks everything: it asks, the server streams. */
	sync_pair(&l, &st, NULL, a, b, &o, &o, WEFT_OK);
	assert_int_equal(st.events_received, 700);
	assert_int_equal(l.down.events, 700);
	assert_int_equal(l.down.frames[FRAME_EVENTS], 14);
	assert_int_equal(l.up.frames[FRAME_ACK], 14);
	assert_int_equal(l.up.payload[FRAME_WANT], 700 * 32);
	link_free(&l);
	/* And pushed from the client to an empty server. */
	weft_db *c = tu_open(f->dir, "c.db", &f->clock, 3);
	sync_pair(&l, &st, NULL, a, c, &o, &o, WEFT_OK);
	assert_int_equal(st.events_sent, 700);
	assert_int_equal(l.up.events, 700);
	assert_int_equal(l.up.frames[FRAME_WANT], 0);
	link_free(&l);
	assert_same_events(b, c);
	weft_db_close(a);
	weft_db_close(b);
	weft_db_close(c);
}

/* More differences than one reconciliation message can name: several
 * rounds under the smallest frame limit, still each event exactly once. */
static void test_session_large_difference_under_small_frames(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	int n = asan_scale() ? 2500 : 6000;
	append_n(a, &f->clock, n, "home");
	append_n(b, &f->clock, n / 2, "home");
	weft_session_options o = WEFT_SESSION_OPTIONS_INIT;
	o.max_frame = 64 << 10;
	weft_session_options big = WEFT_SESSION_OPTIONS_INIT;
	weft_session_stats st;
	link l;
	/* Only the client limits frames: the server must honour it. */
	sync_pair(&l, &st, NULL, b, a, &o, &big, WEFT_OK);
	assert_int_equal(st.events_received, n);
	assert_int_equal(st.events_sent, n / 2);
	assert_int_equal(l.down.events, n);
	assert_int_equal(l.up.events, n / 2);
	assert_true(l.down.neg_max <= (64 << 10));
	assert_true(st.round_trips > 1);
	link_free(&l);
	assert_same_events(a, b);
	weft_db_close(a);
	weft_db_close(b);
}

/* ---------------------------------------------------------- efficiency */

typedef struct author {
	unsigned char pk[32], sk[64];
	uint64_t seq;
	weft_id prev;
} author;

static void author_init(author *au, unsigned char seed_byte)
{
	unsigned char seed[32];
	memset(seed, seed_byte, sizeof(seed));
	assert_int_equal(crypto_sign_seed_keypair(au->pk, au->sk, seed), 0);
	au->seq = 0;
}

/* Builds n signed events of one author, ms apart from start_ms, and ingests
 * them in large batches. Returns the total of their encoded sizes. */
static uint64_t bulk_ingest(weft_db **dbs, size_t ndb, author *au, size_t n, uint64_t start_ms)
{
	const size_t chunk = 4096;
	struct weft_event **evs = calloc(chunk, sizeof(*evs));
	weft_bytes *b = calloc(chunk, sizeof(*b));
	int *res = calloc(chunk, sizeof(int));
	uint64_t total = 0;
	for (size_t done = 0; done < n;) {
		size_t k = n - done < chunk ? n - done : chunk;
		for (size_t i = 0; i < k; i++) {
			char payload[48];
			int plen = snprintf(payload, sizeof(payload), "row %zu of the bulk set", done + i);
			event_fields ef = {0};
			ef.seq = ++au->seq;
			ef.prev = ef.seq > 1 ? &au->prev : NULL;
			ef.hlc = (start_ms + done + i) << 16;
			ef.scope = "home";
			ef.kind = "bulk";
			ef.payload = payload;
			ef.payload_len = (size_t)plen;
			weft_err e;
			assert_int_equal(codec_event_build(&evs[i], &ef, au->sk, WEFT_PAYLOAD_DEFAULT_MAX, &e), WEFT_OK);
			au->prev = evs[i]->id;
			b[i].data = evs[i]->enc;
			b[i].len = evs[i]->enc_len;
			total += evs[i]->enc_len;
		}
		for (size_t d = 0; d < ndb; d++) {
			tu_ok(dbs[d], weft_db_ingest_batch(res, dbs[d], b, k));
			for (size_t i = 0; i < k; i++)
				assert_int_equal(res[i], WEFT_INGEST_NEW);
		}
		for (size_t i = 0; i < k; i++)
			codec_event_free(evs[i]);
		done += k;
	}
	free(evs);
	free(b);
	free(res);
	return total;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Traffic that is not event bytes: everything both ways minus the events. */
static uint64_t overhead(const link *l)
{
	return l->up.bytes + l->down.bytes - l->up.event_bytes - l->down.event_bytes;
}

static void report(const char *what, const link *l, const weft_session_stats *st)
{
	print_message("  %-34s round trips %llu, NEG up %llu B (max %llu), NEG down %llu B (max %llu), "
	              "events %llu/%llu, non-event bytes %llu\n",
	              what, (unsigned long long)st->round_trips, (unsigned long long)l->up.payload[FRAME_NEG],
	              (unsigned long long)l->up.neg_max, (unsigned long long)l->down.payload[FRAME_NEG],
	              (unsigned long long)l->down.neg_max, (unsigned long long)l->up.events,
	              (unsigned long long)l->down.events, (unsigned long long)overhead(l));
}

static void test_session_efficiency_at_scale(void **state)
{
	fixture *f = *state;
	const size_t n = asan_scale() ? 20000 : 100000;
	double t0 = now_s();
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	author base, ka, kb;
	author_init(&base, 7);
	author_init(&ka, 8);
	author_init(&kb, 9);
	/* a gets the base set by bulk ingest; b gets it by syncing, which
	 * measures the framing of a large transfer. */
	uint64_t base_bytes = bulk_ingest(&a, 1, &base, n, T0 - 400000);
	double t1 = now_s();
	weft_session_stats st, sv;
	link l;
	sync_pair(&l, &st, &sv, a, b, NULL, NULL, WEFT_OK);
	double t2 = now_s();
	assert_int_equal(st.events_sent, n);
	assert_int_equal(l.up.events, n);
	assert_int_equal(l.up.event_bytes, base_bytes);
	/* Framing: what the sender sent beyond the events themselves. */
	uint64_t framing = st.bytes_sent - base_bytes;
	print_message("  %zu events, %llu event bytes: sender overhead %llu B (%.2f B/event), "
	              "whole non-event traffic %llu B (%.2f B/event); build %.1fs, sync %.1fs\n",
	              n, (unsigned long long)base_bytes, (unsigned long long)framing, (double)framing / (double)n,
	              (unsigned long long)overhead(&l), (double)overhead(&l) / (double)n, t1 - t0, t2 - t1);
	assert_true(framing < 16 * n);
	assert_true(l.up.payload[FRAME_EVENTS] + FRAME_HEADER * l.up.frames[FRAME_EVENTS] - base_bytes < 16 * n);
	link_free(&l);

	/* Identical stores: one round trip, under 512 bytes each way. */
	sync_pair(&l, &st, &sv, a, b, NULL, NULL, WEFT_OK);
	report("identical:", &l, &st);
	assert_int_equal(st.round_trips, 1);
	assert_int_equal(l.up.frames[FRAME_NEG], 1);
	assert_int_equal(l.down.frames[FRAME_NEG], 1);
	assert_true(l.up.payload[FRAME_NEG] < 512);
	assert_true(l.down.payload[FRAME_NEG] < 512);
	assert_int_equal(l.up.events + l.down.events, 0);
	assert_int_equal(st.reconcile_bytes, l.up.payload[FRAME_NEG] + l.down.payload[FRAME_NEG]);
	link_free(&l);

	/* The 100 newest differ, 50 on each side. */
	f->clock.now_ms += 1000;
	bulk_ingest(&a, 1, &ka, 50, T0 - 1000);
	bulk_ingest(&b, 1, &kb, 50, T0 - 1000);
	sync_pair(&l, &st, &sv, a, b, NULL, NULL, WEFT_OK);
	report("100 newest, 50 per side:", &l, &st);
	assert_true(st.round_trips <= 4);
	assert_true(st.reconcile_bytes < 16 * 1024);
	assert_true(overhead(&l) < 16 * 1024);
	assert_int_equal(st.events_sent, 50);
	assert_int_equal(st.events_received, 50);
	assert_int_equal(l.up.events, 50);
	assert_int_equal(l.down.events, 50);
	link_free(&l);

	/* The 100 newest only on the client. */
	bulk_ingest(&a, 1, &ka, 100, T0 - 500);
	sync_pair(&l, &st, &sv, a, b, NULL, NULL, WEFT_OK);
	report("100 newest on the client:", &l, &st);
	assert_true(st.round_trips <= 4);
	assert_true(st.reconcile_bytes < 16 * 1024);
	assert_true(overhead(&l) < 16 * 1024);
	assert_int_equal(st.events_sent, 100);
	assert_int_equal(l.up.events, 100);
	assert_int_equal(l.down.events, 0);
	link_free(&l);

	/* The 100 newest only on the server. */
	bulk_ingest(&b, 1, &kb, 100, T0 - 300);
	sync_pair(&l, &st, &sv, a, b, NULL, NULL, WEFT_OK);
	report("100 newest on the server:", &l, &st);
	assert_true(st.round_trips <= 4);
	assert_true(st.reconcile_bytes < 16 * 1024);
	assert_true(overhead(&l) < 16 * 1024);
	assert_int_equal(st.events_received, 100);
	assert_int_equal(l.down.events, 100);
	assert_int_equal(l.up.events, 0);
	link_free(&l);
	assert_int_equal(events(a), n + 300);
	assert_same_events(a, b);
	print_message("  total %.1fs\n", now_s() - t0);
	weft_db_close(a);
	weft_db_close(b);
}

/* -------------------------------------------------------- interruption */

static void copy_file(const char *from, const char *to)
{
	FILE *in = fopen(from, "rb");
	if (!in)
		return; /* e.g. no -wal file */
	FILE *out = fopen(to, "wb");
	assert_non_null(out);
	char buf[1 << 16];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		assert_int_equal(fwrite(buf, 1, n, out), n);
	fclose(in);
	assert_int_equal(fclose(out), 0);
}

static void copy_store(const char *dir, const char *from, const char *to)
{
	static const char *const sfx[] = {"", "-wal", "-shm"};
	for (int i = 0; i < 3; i++) {
		char a[256], b[256];
		snprintf(a, sizeof(a), "%s%s", from, sfx[i]);
		snprintf(b, sizeof(b), "%s%s", to, sfx[i]);
		remove(tu_path(dir, b));
		copy_file(tu_path(dir, a), tu_path(dir, b));
	}
}

static void test_session_interrupted_at_every_byte_resumes(void **state)
{
	fixture *f = *state;
	/* The starting point: 24 events on a, 17 on b, 5 in common. */
	weft_db *a = tu_open(f->dir, "a0.db", &f->clock, 1);
	weft_db *b = tu_open(f->dir, "b0.db", &f->clock, 2);
	append_n(a, &f->clock, 5, "home");
	tu_ok(a, weft_sync_local(NULL, a, b, NULL));
	append_n(a, &f->clock, 19, "home");
	append_n(b, &f->clock, 12, "work");
	const uint64_t a0 = events(a), b0 = events(b), all = 36;
	assert_int_equal(a0 + b0 - 5, all);
	weft_db_close(a);
	weft_db_close(b);

	weft_session_options o = WEFT_SESSION_OPTIONS_INIT;
	o.batch_events = 3;
	/* The whole session, to know its length. */
	copy_store(f->dir, "a0.db", "a.db");
	copy_store(f->dir, "b0.db", "b.db");
	a = tu_open(f->dir, "a.db", &f->clock, 1);
	b = tu_open(f->dir, "b.db", &f->clock, 2);
	link l;
	sync_pair(&l, NULL, NULL, a, b, &o, &o, WEFT_OK);
	const uint64_t total = l.delivered;
	assert_true(l.up.frames[FRAME_EVENTS] >= 6 && l.down.frames[FRAME_EVENTS] >= 4);
	link_free(&l);
	weft_db_close(a);
	weft_db_close(b);

	unsigned runs = 0;
	const uint64_t dense = 700, step = asan_scale() ? 23 : 5;
	for (uint64_t cut = 0; cut <= total; cut += cut < dense ? (asan_scale() ? 7 : 1) : step) {
		copy_store(f->dir, "a0.db", "a.db");
		copy_store(f->dir, "b0.db", "b.db");
		a = tu_open(f->dir, "a.db", &f->clock, 1);
		b = tu_open(f->dir, "b.db", &f->clock, 2);
		weft_session *c, *s;
		tu_ok(a, weft_session_new(&c, a, WEFT_ROLE_CLIENT, &o));
		tu_ok(b, weft_session_new(&s, b, WEFT_ROLE_SERVER, &o));
		link_init(&l);
		run_link(&l, c, s, cut);
		assert_int_equal(l.delivered, cut);
		weft_session_free(c);
		weft_session_free(s);
		link_free(&l);
		/* Only whole, valid events; what arrived is what was committed. */
		verify_ok(a);
		verify_ok(b);
		uint64_t arrived = events(a) - a0 + events(b) - b0;
		assert_true(arrived <= all * 2 - a0 - b0);
		/* The next session finishes the job without re-sending. */
		weft_session_stats st;
		sync_pair(&l, &st, NULL, a, b, &o, &o, WEFT_OK);
		assert_int_equal(st.events_sent + st.events_received + arrived, all * 2 - a0 - b0);
		assert_int_equal(l.up.events, st.events_sent);
		assert_int_equal(l.down.events, st.events_received);
		link_free(&l);
		assert_int_equal(events(a), all);
		assert_int_equal(events(b), all);
		weft_db_close(a);
		weft_db_close(b);
		runs++;
	}
	print_message("  session of %llu bytes cut at %u points\n", (unsigned long long)total, runs);
	assert_true(runs >= 100);
}

/* ------------------------------------------------------- hostile input */

static size_t put_frame(unsigned char *buf, uint8_t type, const void *payload, uint32_t len)
{
	buf[0] = type;
	codec_put_u32(buf + 1, len);
	if (len)
		memcpy(buf + FRAME_HEADER, payload, len);
	return FRAME_HEADER + len;
}

/* The last frame of the output is an ERROR frame with this code. */
static void assert_error_frame(weft_session *s, int code)
{
	const void *out;
	size_t len;
	weft_session_output(s, &out, &len);
	const unsigned char *p = out;
	size_t off = 0, last = SIZE_MAX;
	while (off + FRAME_HEADER <= len) {
		last = off;
		off += FRAME_HEADER + codec_get_u32(p + off + 1);
	}
	assert_int_equal(off, len);
	assert_true(last != SIZE_MAX);
	assert_int_equal(p[last], FRAME_ERROR);
	assert_true(codec_get_u32(p + last + 1) > 2);
	assert_int_equal(-(int)(p[last + FRAME_HEADER] << 8 | p[last + FRAME_HEADER + 1]), code);
	assert_int_equal(weft_session_state_get(s), WEFT_SESSION_FAILED);
	weft_session_stats st;
	weft_session_stats_get(&st, s);
	assert_int_equal(st.result, code);
	assert_true(weft_session_errmsg(s)[0] != '\0');
}

/* Feeds one frame to a fresh server session and expects the failure. */
static void server_refuses(weft_db *db, const unsigned char *bytes, size_t len, int code)
{
	weft_session *s;
	tu_ok(db, weft_session_new(&s, db, WEFT_ROLE_SERVER, NULL));
	int rc = weft_session_feed(s, bytes, len, 1);
	if (rc != code)
		print_error("got %s: %s\n", weft_errname(rc), weft_session_errmsg(s));
	assert_int_equal(rc, code);
	assert_error_frame(s, code);
	/* A failed session stays failed and says so again. */
	assert_int_equal(weft_session_feed(s, bytes, len, 2), code);
	weft_session_free(s);
}

/* A client hello as the session would write it, for tampering. */
static size_t client_hello(weft_db *db, unsigned char *buf)
{
	weft_session *c;
	tu_ok(db, weft_session_new(&c, db, WEFT_ROLE_CLIENT, NULL));
	const void *out;
	size_t len;
	weft_session_output(c, &out, &len);
	memcpy(buf, out, len);
	weft_session_free(c);
	return len;
}

static void test_session_refuses_malformed_frames(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	unsigned char buf[4096];
	/* Garbage. */
	const unsigned char junk[] = "GET / HTTP/1.1\r\nHost: example\r\n\r\n";
	server_refuses(a, junk, sizeof(junk) - 1, WEFT_EPROTO);
	/* Unknown frame types. */
	server_refuses(a, buf, put_frame(buf, 0, NULL, 0), WEFT_EPROTO);
	server_refuses(a, buf, put_frame(buf, FRAME__MAX + 1, "x", 1), WEFT_EPROTO);
	server_refuses(a, buf, put_frame(buf, 0xff, NULL, 0), WEFT_EPROTO);
	/* A header claiming 4 GiB is refused before any allocation. */
	weft_session *s;
	tu_ok(a, weft_session_new(&s, a, WEFT_ROLE_SERVER, NULL));
	const unsigned char huge[] = {FRAME_HELLO, 0xff, 0xff, 0xff, 0xff};
	/* With every allocation failing, the answer is still the limit. */
	alloc_fail_after(1);
	int rc = weft_session_feed(s, huge, sizeof(huge), 1);
	alloc_fail_after(0);
	assert_int_equal(rc, WEFT_ELIMIT);
	assert_int_equal(weft_session_state_get(s), WEFT_SESSION_FAILED);
	weft_session_free(s);
	/* Just over the limit, also refused. */
	unsigned char over[] = {FRAME_EVENTS, 0, 0, 0, 0};
	codec_put_u32(over + 1, FRAME_MAX_DEFAULT + (64u << 10));
	server_refuses(a, over, sizeof(over), WEFT_ELIMIT);

	size_t hl = client_hello(a, buf);
	/* Truncated hellos, at every length: the frame says less. */
	for (size_t cut = FRAME_HEADER; cut < hl; cut++) {
		unsigned char t[4096];
		memcpy(t, buf, cut);
		codec_put_u32(t + 1, (uint32_t)(cut - FRAME_HEADER));
		server_refuses(a, t, cut, WEFT_EPROTO);
	}
	/* Trailing bytes. */
	{
		unsigned char t[4096];
		memcpy(t, buf, hl);
		t[hl] = 0;
		codec_put_u32(t + 1, (uint32_t)(hl + 1 - FRAME_HEADER));
		server_refuses(a, t, hl + 1, WEFT_EPROTO);
	}
	/* Wrong magic. */
	buf[FRAME_HEADER] = 'X';
	server_refuses(a, buf, hl, WEFT_EPROTO);
	buf[FRAME_HEADER] = 'W';
	/* Another version: refused with a message naming both. */
	buf[FRAME_HEADER + 4] = 0;
	buf[FRAME_HEADER + 5] = 2;
	tu_ok(a, weft_session_new(&s, a, WEFT_ROLE_SERVER, NULL));
	assert_int_equal(weft_session_feed(s, buf, hl, 1), WEFT_EVERSION);
	assert_error_frame(s, WEFT_EVERSION);
	assert_non_null(strstr(weft_session_errmsg(s), "version 2"));
	assert_non_null(strstr(weft_session_errmsg(s), "version 1"));
	weft_session_free(s);
	buf[FRAME_HEADER + 5] = 1;
	/* A client posing as a server. */
	buf[FRAME_HEADER + 6] = WEFT_ROLE_SERVER;
	server_refuses(a, buf, hl, WEFT_EPROTO);
	buf[FRAME_HEADER + 6] = WEFT_ROLE_CLIENT;
	/* A frame limit below the minimum. */
	codec_put_u32(buf + FRAME_HEADER + 7 + 32, 1000);
	server_refuses(a, buf, hl, WEFT_EPROTO);
	weft_db_close(a);
}

/* Drives a real client and server up to the point where both are syncing
 * and returns the server (the client's NEG not yet delivered). */
static weft_session *server_syncing(weft_db *cdb, weft_db *sdb, weft_session **client,
                                    const weft_session_options *co, const weft_session_options *so)
{
	weft_session *c, *s;
	tu_ok(cdb, weft_session_new(&c, cdb, WEFT_ROLE_CLIENT, co));
	tu_ok(sdb, weft_session_new(&s, sdb, WEFT_ROLE_SERVER, so));
	const void *out;
	size_t len;
	weft_session_output(c, &out, &len);
	assert_int_equal(weft_session_feed(s, out, len, 1), WEFT_OK);
	weft_session_consume(c, len);
	weft_session_output(s, &out, &len);
	assert_int_equal(weft_session_feed(c, out, len, 1), WEFT_OK);
	weft_session_consume(s, len);
	/* The client's START, without its NEG: the server now syncs. */
	weft_session_output(c, &out, &len);
	size_t start = FRAME_HEADER + codec_get_u32((const unsigned char *)out + 1);
	assert_int_equal(((const unsigned char *)out)[0], FRAME_HELLO);
	assert_int_equal(weft_session_feed(s, out, start, 1), WEFT_OK);
	weft_session_consume(c, start);
	assert_int_equal(weft_session_state_get(s), WEFT_SESSION_SYNCING);
	assert_int_equal(weft_session_state_get(c), WEFT_SESSION_SYNCING);
	*client = c;
	return s;
}

/* An EVENTS frame of the given encoded events. */
static size_t events_frame(unsigned char *buf, const weft_event *const *evs, const int *flip, size_t n)
{
	size_t off = FRAME_HEADER + 4;
	for (size_t i = 0; i < n; i++) {
		size_t len;
		const unsigned char *b = weft_event_bytes(evs[i], &len);
		codec_put_u32(buf + off, (uint32_t)len);
		memcpy(buf + off + 4, b, len);
		if (flip && flip[i] >= 0)
			buf[off + 4 + (size_t)flip[i]] ^= 0x01;
		off += 4 + len;
	}
	buf[0] = FRAME_EVENTS;
	codec_put_u32(buf + 1, (uint32_t)(off - FRAME_HEADER));
	codec_put_u32(buf + FRAME_HEADER, (uint32_t)n);
	return off;
}

static weft_event *get_nth(weft_db *db, int n)
{
	weft_iter *it;
	tu_ok(db, weft_db_iter(&it, db, NULL));
	const weft_event *ev = NULL;
	for (int i = 0; i <= n; i++)
		tu_ok(db, weft_iter_next(&ev, it));
	size_t len;
	const void *b = weft_event_bytes(ev, &len);
	weft_event *copy;
	tu_ok(db, weft_event_decode(&copy, b, len, 0));
	weft_iter_free(it);
	return copy;
}

static void test_session_refuses_events_out_of_turn(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	append_n(a, &f->clock, 3, "home");
	weft_event *e0 = get_nth(a, 0);
	unsigned char buf[8192];
	size_t n = events_frame(buf, (const weft_event *const *)&e0, NULL, 1);
	/* Events before any hello. */
	server_refuses(b, buf, n, WEFT_EPROTO);
	/* Events after the hello but before the scopes were agreed. */
	weft_session *c, *s;
	tu_ok(a, weft_session_new(&c, a, WEFT_ROLE_CLIENT, NULL));
	tu_ok(b, weft_session_new(&s, b, WEFT_ROLE_SERVER, NULL));
	const void *out;
	size_t len;
	weft_session_output(c, &out, &len);
	assert_int_equal(weft_session_feed(s, out, len, 1), WEFT_OK);
	assert_int_equal(weft_session_feed(s, buf, n, 1), WEFT_EPROTO);
	assert_error_frame(s, WEFT_EPROTO);
	weft_session_free(c);
	weft_session_free(s);
	assert_int_equal(events(b), 0);

	/* Unsolicited ACK, WANT_END and DONE. */
	unsigned char ack[9];
	put_frame(ack, FRAME_ACK, "\0\0\0\1", 4);
	s = server_syncing(a, b, &c, NULL, NULL);
	assert_int_equal(weft_session_feed(s, ack, sizeof(ack), 1), WEFT_EPROTO);
	assert_error_frame(s, WEFT_EPROTO);
	weft_session_free(s);
	assert_int_equal(weft_session_feed(c, ack, sizeof(ack), 1), WEFT_EPROTO);
	assert_error_frame(c, WEFT_EPROTO);
	weft_session_free(c);
	unsigned char end[FRAME_HEADER];
	put_frame(end, FRAME_WANT_END, NULL, 0);
	s = server_syncing(a, b, &c, NULL, NULL);
	assert_int_equal(weft_session_feed(c, end, sizeof(end), 1), WEFT_EPROTO);
	assert_error_frame(c, WEFT_EPROTO);
	assert_int_equal(weft_session_feed(s, end, sizeof(end), 1), WEFT_EPROTO);
	weft_session_free(s);
	weft_session_free(c);
	unsigned char done[FRAME_HEADER];
	put_frame(done, FRAME_DONE, NULL, 0);
	s = server_syncing(a, b, &c, NULL, NULL);
	/* The client did not say DONE: the server may not either. */
	assert_int_equal(weft_session_feed(c, done, sizeof(done), 1), WEFT_EPROTO);
	assert_error_frame(c, WEFT_EPROTO);
	weft_session_free(s);
	weft_session_free(c);
	/* DONE before any hello. */
	server_refuses(b, done, sizeof(done), WEFT_EPROTO);
	/* A WANT sent to a client, a NEG nobody asked for, a second hello. */
	unsigned char want[FRAME_HEADER + 32];
	put_frame(want, FRAME_WANT, weft_event_id(e0)->bytes, 32);
	s = server_syncing(a, b, &c, NULL, NULL);
	assert_int_equal(weft_session_feed(c, want, sizeof(want), 1), WEFT_EPROTO);
	weft_session_free(c);
	unsigned char hello[4096];
	size_t hl = client_hello(a, hello);
	assert_int_equal(weft_session_feed(s, hello, hl, 1), WEFT_EPROTO);
	assert_error_frame(s, WEFT_EPROTO);
	weft_session_free(s);
	/* A malformed WANT. */
	s = server_syncing(a, b, &c, NULL, NULL);
	put_frame(want, FRAME_WANT, weft_event_id(e0)->bytes, 31);
	assert_int_equal(weft_session_feed(s, want, FRAME_HEADER + 31, 1), WEFT_EPROTO);
	weft_session_free(s);
	weft_session_free(c);
	/* An error frame from the peer ends the session with its code. */
	s = server_syncing(a, b, &c, NULL, NULL);
	unsigned char err[64];
	size_t el = put_frame(err, FRAME_ERROR, "\0\x0b" "busy\x01", 7);
	assert_int_equal(weft_session_feed(c, err, el, 1), WEFT_EBUSY);
	assert_int_equal(weft_session_state_get(c), WEFT_SESSION_FAILED);
	assert_non_null(strstr(weft_session_errmsg(c), "busy?"));
	weft_session_free(s);
	weft_session_free(c);
	assert_int_equal(events(b), 0);
	weft_event_free(e0);
	weft_db_close(a);
	weft_db_close(b);
}

static void test_session_invalid_event_fails_the_session_but_keeps_valid_ones(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	append_n(a, &f->clock, 3, "home");
	weft_event *ev[3] = {get_nth(a, 0), get_nth(a, 1), get_nth(a, 2)};
	unsigned char buf[8192];
	struct {
		int flip; /* byte of the middle event to change */
		int code;
	} cases[] = {
		{40, WEFT_EAUTH},                  /* in the header: the signature no longer matches */
		{-2, WEFT_EAUTH},                  /* in the payload: its hash no longer matches */
	};
	for (size_t k = 0; k < 2; k++) {
		weft_db *c = tu_open(f->dir, k ? "c1.db" : "c0.db", &f->clock, (int)(3 + k));
		weft_session *cl, *s = server_syncing(a, c, &cl, NULL, NULL);
		size_t len;
		weft_event_bytes(ev[1], &len);
		int flips[3] = {-1, cases[k].flip >= 0 ? cases[k].flip : (int)len + cases[k].flip, -1};
		size_t n = events_frame(buf, (const weft_event *const *)ev, flips, 3);
		int rc = weft_session_feed(s, buf, n, 1);
		if (rc != cases[k].code)
			print_error("got %s: %s\n", weft_errname(rc), weft_session_errmsg(s));
		assert_int_equal(rc, cases[k].code);
		assert_error_frame(s, cases[k].code);
		assert_non_null(strstr(weft_session_errmsg(s), "invalid event"));
		weft_session_stats st;
		weft_session_stats_get(&st, s);
		assert_int_equal(st.events_received, 2);
		assert_int_equal(st.events_refused, 1);
		/* The valid ones were committed; the bad one is nowhere. */
		assert_int_equal(events(c), 2);
		verify_ok(c);
		weft_event *got;
		assert_int_equal(weft_db_get(&got, c, weft_event_id(ev[1])), WEFT_ENOTFOUND);
		tu_ok(c, weft_db_get(&got, c, weft_event_id(ev[2])));
		weft_event_free(got);
		/* The client learns why from the error frame. */
		const void *out;
		size_t ol;
		weft_session_output(s, &out, &ol);
		assert_int_equal(weft_session_feed(cl, out, ol, 1), cases[k].code);
		assert_non_null(strstr(weft_session_errmsg(cl), "invalid event"));
		weft_session_free(s);
		weft_session_free(cl);
		weft_db_close(c);
	}
	/* A batch whose lengths do not add up stores nothing. */
	weft_session *cl, *s = server_syncing(a, b, &cl, NULL, NULL);
	size_t n = events_frame(buf, (const weft_event *const *)ev, NULL, 3);
	codec_put_u32(buf + FRAME_HEADER, 4);
	assert_int_equal(weft_session_feed(s, buf, n, 1), WEFT_EPROTO);
	assert_int_equal(events(b), 0);
	weft_session_free(s);
	weft_session_free(cl);
	s = server_syncing(a, b, &cl, NULL, NULL);
	n = events_frame(buf, (const weft_event *const *)ev, NULL, 3);
	codec_put_u32(buf + FRAME_HEADER, 0);
	assert_int_equal(weft_session_feed(s, buf, n, 1), WEFT_EPROTO);
	weft_session_free(s);
	weft_session_free(cl);
	assert_int_equal(events(b), 0);
	for (int i = 0; i < 3; i++)
		weft_event_free(ev[i]);
	weft_db_close(a);
	weft_db_close(b);
}

/* The frames of a session's output: types and, for ACKs, their counts. */
static size_t output_frames(weft_session *s, uint8_t *types, uint32_t *acks, size_t max)
{
	const void *out;
	size_t len, n = 0, off = 0;
	weft_session_output(s, &out, &len);
	const unsigned char *p = out;
	while (off + FRAME_HEADER <= len && n < max) {
		uint32_t fl = codec_get_u32(p + off + 1);
		types[n] = p[off];
		acks[n] = p[off] == FRAME_ACK ? codec_get_u32(p + off + FRAME_HEADER) : 0;
		n++;
		off += FRAME_HEADER + fl;
	}
	assert_int_equal(off, len);
	return n;
}

/*
 * Batches large enough for the verifier threads: the receiver checks one
 * while it stores the one before, and acknowledges each after its commit,
 * in order. A refusal keeps the valid events of its batch and of earlier
 * ones; a batch that arrived after the refused one is not stored.
 */
static void test_session_pipelined_batches(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	enum { PER = 40, NB = 3 };
	append_n(a, &f->clock, PER * NB, "home");
	weft_event *ev[PER * NB];
	weft_iter *it;
	tu_ok(a, weft_db_iter(&it, a, NULL));
	for (int i = 0; i < PER * NB; i++) {
		const weft_event *e;
		tu_ok(a, weft_iter_next(&e, it));
		size_t len;
		const void *b = weft_event_bytes(e, &len);
		tu_ok(a, weft_event_decode(&ev[i], b, len, 0));
	}
	weft_iter_free(it);
	unsigned char *buf = malloc(NB * 64 * 1024);
	/* bad: which batch holds an altered event (-1: none) */
	for (int bad = -1; bad < NB; bad++) {
		char name[16];
		snprintf(name, sizeof(name), "c%d.db", bad + 1);
		weft_db *c = tu_open(f->dir, name, &f->clock, 3 + bad + 1);
		weft_session *cl, *s = server_syncing(a, c, &cl, NULL, NULL);
		size_t n = 0;
		for (int k = 0; k < NB; k++) {
			int flips[PER];
			for (int i = 0; i < PER; i++)
				flips[i] = k == bad && i == 7 ? 40 : -1;
			n += events_frame(buf + n, (const weft_event *const *)ev + k * PER, flips, PER);
		}
		int rc = weft_session_feed(s, buf, n, 1);
		/* What the driver sends, until nothing more comes: the last
		 * batch is stored once the driver has sent the rest and asks
		 * for more output. */
		uint8_t types[8];
		uint32_t acks[8];
		size_t nf = 0, more;
		do {
			more = output_frames(s, types + nf, acks + nf, 8 - nf);
			nf += more;
			const void *out;
			size_t len;
			weft_session_output(s, &out, &len);
			weft_session_consume(s, len);
		} while (more && nf < 8);
		weft_session_stats st;
		weft_session_stats_get(&st, s);
		for (int i = 0; i < (bad < 0 ? NB : bad); i++) {
			assert_int_equal(types[i], FRAME_ACK);
			assert_int_equal(acks[i], PER);
		}
		if (bad < 0) {
			assert_int_equal(rc, WEFT_OK);
			assert_int_equal(nf, NB);
			assert_int_equal(st.events_received, PER * NB);
			assert_int_equal(events(c), PER * NB);
		} else {
			/* The refusal shows when its batch is stored: during
			 * the feed, or when the driver next asks for output. */
			assert_true(rc == WEFT_OK || rc == WEFT_EAUTH);
			assert_int_equal(weft_session_state_get(s), WEFT_SESSION_FAILED);
			assert_int_equal(st.result, WEFT_EAUTH);
			assert_non_null(strstr(weft_session_errmsg(s), "invalid event"));
			assert_int_equal(nf, (size_t)bad + 1);
			assert_int_equal(types[bad], FRAME_ERROR);
			assert_int_equal(st.events_received, (uint64_t)bad * PER + PER - 1);
			assert_int_equal(st.events_refused, 1);
			assert_int_equal(events(c), (uint64_t)bad * PER + PER - 1);
			/* Nothing of a later batch. */
			if (bad + 1 < NB) {
				weft_event *got;
				assert_int_equal(weft_db_get(&got, c, weft_event_id(ev[(bad + 1) * PER])), WEFT_ENOTFOUND);
			}
		}
		verify_ok(c);
		weft_session_free(s);
		weft_session_free(cl);
		weft_db_close(c);
	}
	/* A session freed with a batch still being checked stores nothing of
	 * it and leaks nothing. */
	weft_db *c = tu_open(f->dir, "z.db", &f->clock, 9);
	weft_session *cl, *s = server_syncing(a, c, &cl, NULL, NULL);
	size_t n = events_frame(buf, (const weft_event *const *)ev, NULL, PER);
	assert_int_equal(weft_session_feed(s, buf, n, 1), WEFT_OK);
	weft_session_free(s);
	weft_session_free(cl);
	assert_true(events(c) == 0 || events(c) == PER);
	weft_db_close(c);
	free(buf);
	for (int i = 0; i < PER * NB; i++)
		weft_event_free(ev[i]);
	weft_db_close(a);
}

/* Server: answers what the session output holds, checking each event sent
 * against want[*pos..] (absent ids skipped by the caller); returns the
 * number of EVENTS frames and counts WANT_ENDs. */
static int check_sent(weft_session *s, weft_db *db, const weft_id *want, size_t nwant, size_t *pos, int *ends)
{
	const void *out;
	size_t len, off = 0;
	int frames = 0;
	weft_session_output(s, &out, &len);
	const unsigned char *p = out;
	while (off + FRAME_HEADER <= len) {
		uint32_t fl = codec_get_u32(p + off + 1);
		const unsigned char *q = p + off + FRAME_HEADER;
		if (p[off] == FRAME_EVENTS) {
			uint32_t count = codec_get_u32(q);
			size_t at = 4;
			for (uint32_t i = 0; i < count; i++) {
				uint32_t el = codec_get_u32(q + at);
				assert_true(*pos < nwant);
				weft_event *ev;
				tu_ok(db, weft_db_get(&ev, db, &want[(*pos)++]));
				size_t wl;
				const void *wb = weft_event_bytes(ev, &wl);
				assert_int_equal(el, wl);
				assert_memory_equal(q + at + 4, wb, wl);
				weft_event_free(ev);
				at += 4 + el;
			}
			assert_int_equal(at, fl);
			frames++;
		} else {
			assert_int_equal(p[off], FRAME_WANT_END);
			(*ends)++;
		}
		off += FRAME_HEADER + fl;
	}
	assert_int_equal(off, len);
	weft_session_consume(s, len);
	return frames;
}

/*
 * The server sends exactly the events asked for, in the order asked, however
 * that order relates to its storage order (its read cursor is only a hint):
 * time order, backwards, shuffled, shared stamps, an absent id, a repeat,
 * and events stored between batches.
 */
static void test_session_sends_the_events_asked_for(void **state)
{
	fixture *f = *state;
	enum { N = 20 };
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	weft_db *c = tu_open(f->dir, "c.db", &f->clock, 3);
	append_n(a, &f->clock, N, "home");
	f->clock.now_ms = T0; /* b's stamps equal a's */
	append_n(b, &f->clock, N, "home");
	tu_ingest_all(a, b);
	weft_id ids[2 * N];
	weft_iter *it;
	tu_ok(a, weft_db_iter(&it, a, NULL));
	for (int i = 0; i < 2 * N; i++) {
		const weft_event *e;
		tu_ok(a, weft_iter_next(&e, it));
		ids[i] = *weft_event_id(e);
	}
	weft_iter_free(it);
	assert_int_equal(tu_event_hlc(a, &ids[0]), tu_event_hlc(a, &ids[1])); /* a shared stamp */

	/* Time order, then backwards, an absent id, a repeat, shuffled. */
	weft_id want[3 * N + 2], sent[3 * N + 2];
	size_t nwant = 0, nsent = 0;
	for (int i = 0; i < 10; i++)
		want[nwant++] = ids[i];
	for (int i = 19; i >= 10; i--)
		want[nwant++] = ids[i];
	weft_id absent = ids[20];
	absent.bytes[31] ^= 1;
	want[nwant++] = absent;
	want[nwant++] = ids[3];
	for (int i = 0; i < 2 * N - 20; i++)
		want[nwant++] = ids[20 + (i * 7) % (2 * N - 20)];
	for (size_t i = 0; i < nwant; i++)
		if (memcmp(want[i].bytes, absent.bytes, 32) != 0)
			sent[nsent++] = want[i];

	weft_session_options so = WEFT_SESSION_OPTIONS_INIT;
	so.batch_events = 3;
	weft_session *cl, *s = server_syncing(c, a, &cl, NULL, &so);
	unsigned char *buf = malloc(FRAME_HEADER + 32 * (3 * N + 2));
	unsigned char *w = malloc(32 * nwant);
	for (size_t i = 0; i < nwant; i++)
		memcpy(w + 32 * i, want[i].bytes, 32);
	tu_ok(a, weft_session_feed(s, buf, put_frame(buf, FRAME_WANT, w, (uint32_t)(32 * nwant)), 1));
	size_t pos = 0;
	int ends = 0, round = 0, frames;
	weft_id later[4];
	while ((frames = check_sent(s, a, sent, nsent, &pos, &ends)) > 0) {
		/* Between batches: a newer event, and an older one. */
		if (round < 2) {
			f->clock.now_ms += 1000;
			tu_ok(a, weft_db_append(&later[2 * round], a, "home", "note", NULL, "later", 5));
			weft_db *d = tu_open(f->dir, round ? "d1.db" : "d0.db", &f->clock, 4 + round);
			f->clock.now_ms = T0 + 5;
			tu_ok(d, weft_db_append(&later[2 * round + 1], d, "home", "note", NULL, "older", 5));
			tu_ingest_all(a, d);
			weft_db_close(d);
			f->clock.now_ms = T0 + 5000;
		}
		round++;
		for (int k = 0; k < frames; k++) {
			unsigned char ack[4];
			codec_put_u32(ack, 1);
			tu_ok(a, weft_session_feed(s, buf, put_frame(buf, FRAME_ACK, ack, 4), 1));
		}
	}
	assert_int_equal(pos, nsent);
	assert_int_equal(ends, 1);
	assert_true(round > 4);

	/* The events stored meanwhile, asked for with others around them. */
	weft_id again[6] = {later[0], ids[0], later[1], later[2], ids[2 * N - 1], later[3]};
	for (int i = 0; i < 6; i++)
		memcpy(w + 32 * i, again[i].bytes, 32);
	tu_ok(a, weft_session_feed(s, buf, put_frame(buf, FRAME_WANT, w, 32 * 6), 1));
	pos = 0;
	while ((frames = check_sent(s, a, again, 6, &pos, &ends)) > 0) {
		for (int k = 0; k < frames; k++) {
			unsigned char ack[4];
			codec_put_u32(ack, 1);
			tu_ok(a, weft_session_feed(s, buf, put_frame(buf, FRAME_ACK, ack, 4), 1));
		}
	}
	assert_int_equal(pos, 6);
	assert_int_equal(ends, 2);
	assert_int_equal(weft_session_state_get(s), WEFT_SESSION_SYNCING);
	free(buf);
	free(w);
	weft_session_free(s);
	weft_session_free(cl);
	weft_db_close(a);
	weft_db_close(b);
	weft_db_close(c);
}

static void test_session_idle_timeout(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_session *s;
	weft_session_options o = WEFT_SESSION_OPTIONS_INIT;
	o.idle_timeout_ms = 5000;
	tu_ok(a, weft_session_new(&s, a, WEFT_ROLE_CLIENT, &o));
	assert_int_equal(weft_session_tick(s, 1000), WEFT_OK);
	assert_int_equal(weft_session_tick(s, 6000), WEFT_OK);
	assert_int_equal(weft_session_state_get(s), WEFT_SESSION_HANDSHAKE);
	assert_int_equal(weft_session_tick(s, 6001), WEFT_ETIMEOUT);
	assert_error_frame(s, WEFT_ETIMEOUT);
	assert_non_null(strstr(weft_session_errmsg(s), "idle"));
	weft_session_free(s);
	/* Bytes arriving reset the clock. */
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	weft_session *c;
	tu_ok(a, weft_session_new(&c, a, WEFT_ROLE_CLIENT, &o));
	tu_ok(b, weft_session_new(&s, b, WEFT_ROLE_SERVER, &o));
	assert_int_equal(weft_session_tick(s, 0), WEFT_OK);
	const void *out;
	size_t len;
	weft_session_output(c, &out, &len);
	assert_int_equal(weft_session_feed(s, out, 1, 4000), WEFT_OK);
	assert_int_equal(weft_session_tick(s, 8000), WEFT_OK);
	assert_int_equal(weft_session_feed(s, (const char *)out + 1, len - 1, 9500), WEFT_OK);
	assert_int_equal(weft_session_tick(s, 14500), WEFT_OK);
	assert_int_equal(weft_session_tick(s, 14501), WEFT_ETIMEOUT);
	weft_session_free(s);
	/* So does the transport taking our output (a slow upload). */
	assert_int_equal(weft_session_tick(c, 0), WEFT_OK);
	weft_session_consume(c, 1);
	assert_int_equal(weft_session_tick(c, 4000), WEFT_OK);
	assert_int_equal(weft_session_tick(c, 9000), WEFT_OK);
	assert_int_equal(weft_session_tick(c, 9001), WEFT_ETIMEOUT);
	/* A zero-byte feed checks the deadline like a tick. */
	weft_session_free(c);
	tu_ok(a, weft_session_new(&c, a, WEFT_ROLE_CLIENT, &o));
	assert_int_equal(weft_session_feed(c, NULL, 0, 100), WEFT_OK);
	assert_int_equal(weft_session_feed(c, NULL, 0, 5101), WEFT_ETIMEOUT);
	weft_session_free(c);
	weft_db_close(a);
	weft_db_close(b);
}

/* -------------------------------------------------------------- scopes */

static void test_session_client_scope_subset(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	append_n(a, &f->clock, 4, "home");
	append_n(a, &f->clock, 5, "work");
	append_n(b, &f->clock, 6, "home");
	append_n(b, &f->clock, 7, "work");
	append_n(b, &f->clock, 2, "other");
	const char *const home[] = {"home"};
	weft_session_options o = WEFT_SESSION_OPTIONS_INIT;
	o.scopes = home;
	o.nscopes = 1;
	weft_session_stats st;
	link l;
	sync_pair(&l, &st, NULL, a, b, &o, NULL, WEFT_OK);
	assert_int_equal(st.events_sent, 4);
	assert_int_equal(st.events_received, 6);
	assert_int_equal(l.up.events, 4);
	assert_int_equal(l.down.events, 6);
	link_free(&l);
	assert_int_equal(count_scope(a, "home"), 10);
	assert_int_equal(count_scope(b, "home"), 10);
	assert_int_equal(count_scope(a, "work"), 5);
	assert_int_equal(count_scope(b, "work"), 7);
	assert_int_equal(count_scope(a, "other"), 0);
	/* A subset the server does not know: nothing to do. */
	const char *const none[] = {"nowhere"};
	o.scopes = none;
	sync_pair(&l, &st, NULL, a, b, &o, NULL, WEFT_OK);
	assert_int_equal(st.events_sent + st.events_received, 0);
	link_free(&l);
	/* Then everything. */
	sync_pair(&l, &st, NULL, a, b, NULL, NULL, WEFT_OK);
	assert_int_equal(st.events_sent, 5);
	assert_int_equal(st.events_received, 9);
	link_free(&l);
	assert_same_events(a, b);
	weft_db_close(a);
	weft_db_close(b);
}


/* Appends n events in random scopes of s0..s2: mostly a few ms apart, some
 * jumps over many reconciliation cells, some bursts in one millisecond. */
static uint64_t mix_state = 0x9e3779b97f4a7c15ull;
static uint64_t mix_rnd(void)
{
	mix_state ^= mix_state << 13;
	mix_state ^= mix_state >> 7;
	mix_state ^= mix_state << 17;
	return mix_state;
}

static void append_mixed(weft_db *db, tu_clock *clock, int n)
{
	static const char *const sc[] = {"s0", "s1", "s2"};
	for (int i = 0; i < n;) {
		uint64_t r = mix_rnd() % 100;
		int burst = r < 3 ? 100 + (int)(mix_rnd() % 300) : 1;
		clock->now_ms += r < 20 ? mix_rnd() % 4000 : mix_rnd() % 3;
		for (int k = 0; k < burst && i < n; k++, i++) {
			weft_id id;
			char p[32];
			snprintf(p, sizeof(p), "m%d", i);
			tu_ok(db, weft_db_append(&id, db, sc[mix_rnd() % 3], "note", NULL, p, strlen(p)));
		}
	}
}

/* Stores whose reconciliation buckets differ (shared history, then each its
 * own events, old and new, in several scopes and bursts) converge, first
 * over two of three scopes, then over all. */
static void test_session_converges_with_differing_buckets(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	weft_db *c = tu_open(f->dir, "c.db", &f->clock, 3);
	weft_db *d = tu_open(f->dir, "d.db", &f->clock, 4);
	append_mixed(c, &f->clock, 3000);
	tu_ingest_all(a, c);
	tu_ingest_all(b, c);
	/* Events of other devices, stamped in the shared past, that only one
	 * side has; then each side's own new events. */
	uint64_t now = f->clock.now_ms;
	f->clock.now_ms = T0 + 1000;
	append_mixed(d, &f->clock, 400);
	f->clock.now_ms = now;
	weft_iter *it;
	tu_ok(d, weft_db_iter(&it, d, NULL));
	const weft_event *ev;
	for (int k = 0; weft_iter_next(&ev, it) == WEFT_OK; k++) {
		size_t len;
		const void *e = weft_event_bytes(ev, &len);
		weft_ingest_status stt;
		tu_ok(k % 2 ? a : b, weft_db_ingest(&stt, k % 2 ? a : b, e, len));
	}
	weft_iter_free(it);
	append_mixed(a, &f->clock, 700);
	append_mixed(b, &f->clock, 500);
	uint64_t a0 = count_scope(a, "s1"), b0 = count_scope(b, "s1");

	const char *const two[] = {"s0", "s2"};
	weft_session_options o = WEFT_SESSION_OPTIONS_INIT;
	o.scopes = two;
	o.nscopes = 2;
	weft_session_stats st;
	link l;
	sync_pair(&l, &st, NULL, a, b, &o, NULL, WEFT_OK);
	link_free(&l);
	assert_int_equal(count_scope(a, "s0"), count_scope(b, "s0"));
	assert_int_equal(count_scope(a, "s2"), count_scope(b, "s2"));
	assert_int_equal(count_scope(a, "s1"), a0);
	assert_int_equal(count_scope(b, "s1"), b0);
	sync_pair(&l, &st, NULL, a, b, NULL, NULL, WEFT_OK);
	assert_true(st.round_trips <= 6);
	link_free(&l);
	assert_same_events(a, b);
	verify_ok(a);
	verify_ok(b);
	/* Identical now: one round trip. */
	sync_pair(&l, &st, NULL, a, b, NULL, NULL, WEFT_OK);
	assert_int_equal(st.round_trips, 1);
	link_free(&l);
	weft_db_close(a);
	weft_db_close(b);
	weft_db_close(c);
	weft_db_close(d);
}

typedef struct policy {
	const char *read, *write; /* comma-free lists: "home work" */
	int refuse;
	int calls;
	unsigned char last_peer[32];
} policy;

static int in_list(const char *list, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = list; p && (p = strstr(p, name)) != NULL; p += n)
		if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
			return 1;
	return 0;
}

static int authorize(const unsigned char peer[32], const char *const *scopes, size_t n, int *readable,
                     int *writable, void *payload)
{
	policy *p = payload;
	p->calls++;
	memcpy(p->last_peer, peer, 32);
	if (p->refuse)
		return WEFT_EPERM;
	for (size_t i = 0; i < n; i++) {
		readable[i] = in_list(p->read, scopes[i]);
		writable[i] = in_list(p->write, scopes[i]);
	}
	return WEFT_OK;
}

static void test_session_authorize_limits_read_and_write(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	append_n(a, &f->clock, 3, "home");
	append_n(a, &f->clock, 4, "inbox");
	append_n(a, &f->clock, 5, "secret");
	append_n(a, &f->clock, 2, "news");
	append_n(b, &f->clock, 6, "home");
	append_n(b, &f->clock, 7, "inbox");
	append_n(b, &f->clock, 8, "secret");
	append_n(b, &f->clock, 9, "news");
	/* b lets a: read and write home, only write inbox (a drop box), only
	 * read news, nothing of secret. */
	policy p = {"home news", "home inbox", 0, 0, {0}};
	weft_session_options so = WEFT_SESSION_OPTIONS_INIT;
	so.authorize = authorize;
	so.authorize_payload = &p;
	weft_session_stats st, sv;
	link l;
	sync_pair(&l, &st, &sv, a, b, NULL, &so, WEFT_OK);
	assert_int_equal(p.calls, 1);
	assert_memory_equal(p.last_peer, weft_db_public_key(a), 32);
	assert_int_equal(st.events_sent, 3 + 4);
	assert_int_equal(st.events_received, 6 + 9);
	assert_int_equal(l.up.events, 7);
	assert_int_equal(l.down.events, 15);
	link_free(&l);
	assert_int_equal(count_scope(a, "home"), 9);
	assert_int_equal(count_scope(b, "home"), 9);
	assert_int_equal(count_scope(a, "inbox"), 4);
	assert_int_equal(count_scope(b, "inbox"), 11);
	assert_int_equal(count_scope(a, "secret"), 5);
	assert_int_equal(count_scope(b, "secret"), 8);
	assert_int_equal(count_scope(a, "news"), 11);
	assert_int_equal(count_scope(b, "news"), 9);
	/* Again: nothing new moves either way. */
	sync_pair(&l, &st, &sv, a, b, NULL, &so, WEFT_OK);
	assert_int_equal(st.events_sent + st.events_received, 0);
	assert_int_equal(l.up.events + l.down.events, 0);
	link_free(&l);

	/* A client ignoring its grants: an event of a scope it may not write
	 * is refused with WEFT_EPERM and not stored. */
	weft_event *sec = NULL;
	{
		weft_iter *it;
		weft_iter_options io = WEFT_ITER_OPTIONS_INIT;
		io.scope = "secret";
		tu_ok(a, weft_db_iter(&it, a, &io));
		const weft_event *ev;
		tu_ok(a, weft_iter_next(&ev, it));
		size_t len;
		const void *bytes = weft_event_bytes(ev, &len);
		tu_ok(a, weft_event_decode(&sec, bytes, len, 0));
		weft_iter_free(it);
	}
	weft_session *c, *s = server_syncing(a, b, &c, NULL, &so);
	unsigned char buf[4096];
	size_t n = events_frame(buf, (const weft_event *const *)&sec, NULL, 1);
	assert_int_equal(weft_session_feed(s, buf, n, 1), WEFT_EPERM);
	assert_error_frame(s, WEFT_EPERM);
	assert_non_null(strstr(weft_session_errmsg(s), "secret"));
	weft_event *got;
	assert_int_equal(weft_db_get(&got, b, weft_event_id(sec)), WEFT_ENOTFOUND);
	weft_session_free(s);
	weft_session_free(c);
	/* Same for a read-only scope. */
	s = server_syncing(a, b, &c, NULL, &so);
	{
		weft_iter *it;
		weft_iter_options io = WEFT_ITER_OPTIONS_INIT;
		io.scope = "news";
		tu_ok(a, weft_db_iter(&it, a, &io));
		const weft_event *ev = NULL;
		/* One of a's own news events: b has them all but a's 2. */
		weft_event *mine = NULL;
		while (weft_iter_next(&ev, it) == WEFT_OK) {
			if (memcmp(weft_event_author(ev), weft_db_public_key(a), 32) == 0) {
				size_t len;
				const void *bytes = weft_event_bytes(ev, &len);
				tu_ok(a, weft_event_decode(&mine, bytes, len, 0));
				break;
			}
		}
		weft_iter_free(it);
		assert_non_null(mine);
		n = events_frame(buf, (const weft_event *const *)&mine, NULL, 1);
		assert_int_equal(weft_session_feed(s, buf, n, 1), WEFT_EPERM);
		assert_int_equal(weft_db_get(&got, b, weft_event_id(mine)), WEFT_ENOTFOUND);
		weft_event_free(mine);
	}
	weft_session_free(s);
	weft_session_free(c);
	assert_int_equal(count_scope(b, "secret"), 8);
	assert_int_equal(count_scope(b, "news"), 9);

	/* The client may restrict the server too. */
	policy q = {"home", "home news", 0, 0, {0}};
	weft_session_options co = WEFT_SESSION_OPTIONS_INIT;
	co.authorize = authorize;
	co.authorize_payload = &q;
	weft_db *d = tu_open(f->dir, "d.db", &f->clock, 4);
	sync_pair(&l, &st, NULL, d, b, &co, NULL, WEFT_OK);
	assert_int_equal(q.calls, 1);
	assert_int_equal(st.events_received, 9 + 9);
	assert_int_equal(count_scope(d, "home"), 9);
	assert_int_equal(count_scope(d, "news"), 9);
	assert_int_equal(count_scope(d, "inbox"), 0);
	link_free(&l);

	/* A refused peer learns nothing. */
	p.refuse = 1;
	sync_pair(&l, &st, NULL, a, b, NULL, &so, WEFT_EPERM);
	assert_int_equal(l.down.frames[FRAME_HELLO], 0);
	assert_int_equal(l.down.frames[FRAME_ERROR], 1);
	assert_int_equal(l.down.last_error, -WEFT_EPERM);
	link_free(&l);
	weft_event_free(sec);
	weft_db_close(a);
	weft_db_close(b);
	weft_db_close(d);
}

static void test_session_new_checks_options(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_session *s = (weft_session *)1;
	weft_session_options o = WEFT_SESSION_OPTIONS_INIT;
	o.max_frame = 1000;
	assert_int_equal(weft_session_new(&s, a, WEFT_ROLE_CLIENT, &o), WEFT_EINVAL);
	assert_null(s);
	o.max_frame = 0;
	o.version = 99;
	assert_int_equal(weft_session_new(&s, a, WEFT_ROLE_CLIENT, &o), WEFT_EVERSION);
	o.version = WEFT_SESSION_OPTIONS_VERSION;
	const char *const bad[] = {"no spaces allowed"};
	o.scopes = bad;
	o.nscopes = 1;
	assert_int_equal(weft_session_new(&s, a, WEFT_ROLE_CLIENT, &o), WEFT_EINVAL);
	assert_int_equal(weft_session_new(&s, a, (weft_role)7, NULL), WEFT_EINVAL);
	assert_int_equal(weft_sync_local(NULL, a, a, NULL), WEFT_EINVAL);
	weft_session_free(NULL);
	weft_db_close(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_session_syncs_both_directions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_moves_events_from_one_empty_side, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_large_difference_under_small_frames, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_efficiency_at_scale, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_interrupted_at_every_byte_resumes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_refuses_malformed_frames, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_refuses_events_out_of_turn, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_invalid_event_fails_the_session_but_keeps_valid_ones, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_session_pipelined_batches, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_sends_the_events_asked_for, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_idle_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_client_scope_subset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_converges_with_differing_buckets, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_authorize_limits_read_and_write, setup, teardown),
		cmocka_unit_test_setup_teardown(test_session_new_checks_options, setup, teardown),
	};
	return cmocka_run_group_tests_name("session", tests, NULL, NULL);
}
