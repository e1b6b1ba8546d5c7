/*
 * Deterministic sync simulator: N stores in one process, a seeded RNG and a
 * fake clock drive random local writes (raw events and derived-table
 * transactions), random pairwise sessions over faulty links, and crashes
 * (close + reopen) between transactions. After the network heals and a final
 * round of syncs, every store must hold the same events (exactly those the
 * stores committed: nothing acknowledged lost, nothing forged) and identical
 * derived tables, equal to a rebuild from the log.
 *
 * Links model an ordered byte stream (TCP): bytes are never reordered or
 * duplicated inside a connection, but they arrive in random chunks, with
 * random delays, interleaved with the other direction; a simlink may cut the
 * connection at any byte, stall past the idle timeout, or (a malicious simlink)
 * flip a bit inside an EVENTS frame. Duplicate delivery is modelled the way
 * it happens: the same events arriving again through a second, concurrent
 * session, or a repeated sync.
 *
 * Usage: weft_sim [--first N] [--count N] [--shard K/N] [--replay] [--forks]
 *   env WEFT_SIM_SEEDS (count), WEFT_SIM_SEED (run one seed), WEFT_SIM_FORKS=1,
 *   WEFT_TEST_SCALE=asan (fewer seeds by default), WEFT_SIM_VERBOSE=1.
 * A failure prints the seed; WEFT_SIM_SEED=<seed> replays it exactly.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/codec.h"
#include "sync/frame.h"
#include "weft.h"

#define MAX_STORES 5
#define IDLE_MS 10000
#define SCHEMA                                                                                     \
	"CREATE TABLE item(id TEXT PRIMARY KEY, title TEXT, qty INTEGER DEFAULT 0, tag TEXT UNIQUE);\n" \
	"CREATE TABLE kv(k INTEGER PRIMARY KEY, v BLOB);\n"

/* ------------------------------------------------------------------ rng */

typedef struct rng {
	uint64_t s;
} rng;

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rnd(rng *r)
{
	return splitmix(&r->s);
}

/* Uniform in [0, n). */
static uint64_t below(rng *r, uint64_t n)
{
	return n ? rnd(r) % n : 0;
}

static int chance(rng *r, unsigned percent)
{
	return below(r, 100) < percent;
}

/* ------------------------------------------------------------- the world */

typedef struct store {
	weft_db *db;
	char path[640];
	unsigned char key[32];
	uint64_t clock_ms; /* this store's wall clock: sim time + skew */
	int64_t skew;
	uint64_t seen;     /* events it held when last looked at: never fewer */
} store;

typedef struct world {
	uint64_t seed;
	rng r;
	uint64_t now; /* simulated monotonic time, ms */
	int n;
	store st[MAX_STORES + 1]; /* + a short-lived twin (forks) */
	weft_id *acked; /* every event a store said it committed */
	size_t nacked, capacked;
	char dir[512];
	uint64_t trace; /* hash of everything observable, for replay checks */
	uint64_t forks_flagged;
	int all_scopes; /* links sync every scope */
	/* counters for the summary */
	uint64_t sessions, cuts, tampers, stalls, crashes, concurrent, writes, forks;
	char fail[1024];
} world;

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static void trace_u64(world *w, uint64_t v)
{
	w->trace = fnv(w->trace, &v, sizeof(v));
}

static int failf(world *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int failf(world *w, const char *fmt, ...)
{
	if (w->fail[0])
		return -1;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(w->fail, sizeof(w->fail), fmt, ap);
	va_end(ap);
	return -1;
}

#define CHECK(w, cond, ...)                                                                        \
	do {                                                                                       \
		if (!(cond))                                                                       \
			return failf((w), __VA_ARGS__);                                            \
	} while (0)

static uint64_t clock_fn(void *payload)
{
	return ((store *)payload)->clock_ms;
}

static void set_time(world *w, uint64_t now)
{
	w->now = now;
	for (int i = 0; i < w->n; i++)
		w->st[i].clock_ms = (uint64_t)((int64_t)(1700000000000ull + now) + w->st[i].skew);
}

static void advance(world *w, uint64_t ms)
{
	set_time(w, w->now + ms);
}

static int open_store(world *w, int i)
{
	store *s = &w->st[i];
	weft_open_options o = WEFT_OPEN_OPTIONS_INIT;
	o.flags = WEFT_OPEN_CREATE;
	o.secret_key = s->key;
	o.clock = clock_fn;
	o.clock_payload = s;
	int rc = weft_db_open(&s->db, s->path, &o);
	CHECK(w, rc == WEFT_OK, "open store %d: %s", i, weft_error_last());
	/* An app declares its schema at every start: a no-op once known. */
	rc = weft_schema_define(s->db, SCHEMA);
	CHECK(w, rc == WEFT_OK, "schema on store %d: %s", i, weft_errmsg(s->db));
	weft_db_stats stats;
	CHECK(w, weft_db_stats_get(&stats, s->db) == WEFT_OK, "stats: %s", weft_errmsg(s->db));
	CHECK(w, stats.events >= s->seen, "store %d lost events across a crash: %llu before, %llu after", i,
	      (unsigned long long)s->seen, (unsigned long long)stats.events);
	s->seen = stats.events;
	return 0;
}

static int note_events(world *w, int i)
{
	weft_db_stats stats;
	CHECK(w, weft_db_stats_get(&stats, w->st[i].db) == WEFT_OK, "stats: %s", weft_errmsg(w->st[i].db));
	CHECK(w, stats.events >= w->st[i].seen, "store %d lost events", i);
	w->st[i].seen = stats.events;
	return 0;
}

static int crash(world *w, int i)
{
	if (note_events(w, i) < 0)
		return -1;
	weft_db_close(w->st[i].db);
	w->st[i].db = NULL;
	w->crashes++;
	return open_store(w, i);
}

static void ack(world *w, const weft_id *id)
{
	if (w->nacked == w->capacked) {
		w->capacked = w->capacked ? w->capacked * 2 : 64;
		w->acked = realloc(w->acked, w->capacked * sizeof(weft_id));
		if (!w->acked)
			abort();
	}
	w->acked[w->nacked++] = *id;
	w->trace = fnv(w->trace, id->bytes, 32);
}

/* --------------------------------------------------------------- writes */

static const char *const scopes[] = {"a", "b"};

static int local_write(world *w, int i)
{
	store *s = &w->st[i];
	rng *r = &w->r;
	const char *scope = scopes[below(r, 2)];
	char idem[16];
	const char *key = NULL;
	if (chance(r, 20)) {
		snprintf(idem, sizeof(idem), "op%u", (unsigned)below(r, 8));
		key = idem;
	}
	weft_id id;
	int rc;
	w->writes++;
	if (chance(r, 35)) {
		char payload[64];
		int n = snprintf(payload, sizeof(payload), "note %llu from %d", (unsigned long long)rnd(r), i);
		rc = weft_db_append(&id, s->db, scope, "note", key, payload, (size_t)n);
	} else {
		weft_txn *t;
		rc = weft_txn_begin(&t, s->db, scope, key);
		CHECK(w, rc == WEFT_OK, "txn_begin on %d: %s", i, weft_errmsg(s->db));
		int ops = 1 + (int)below(r, 3);
		for (int k = 0; k < ops && rc == WEFT_OK; k++) {
			char pk[8], text[32];
			snprintf(pk, sizeof(pk), "i%u", (unsigned)below(r, 6));
			switch (below(r, 5)) {
			case 0:
				snprintf(text, sizeof(text), "title %u", (unsigned)below(r, 1000));
				rc = weft_txn_set(t, "item", weft_text(pk), "title", weft_text(text));
				break;
			case 1:
				snprintf(text, sizeof(text), "t%u", (unsigned)below(r, 4));
				rc = weft_txn_set(t, "item", weft_text(pk), "tag", weft_text(text));
				break;
			case 2:
				rc = weft_txn_incr(t, "item", weft_text(pk), "qty", (int64_t)below(r, 9) - 3);
				break;
			case 3:
				rc = weft_txn_delete(t, "item", weft_text(pk));
				break;
			default: {
				unsigned char blob[8];
				uint64_t v = rnd(r);
				memcpy(blob, &v, sizeof(blob));
				rc = weft_txn_set(t, "kv", weft_int((int64_t)below(r, 5)), "v",
				                  weft_blob(blob, 1 + below(r, 8)));
			}
			}
		}
		if (rc != WEFT_OK) {
			weft_txn_abort(t);
			return failf(w, "txn op on %d: %s: %s", i, weft_errname(rc), weft_errmsg(s->db));
		}
		rc = weft_txn_commit(&id, t);
	}
	CHECK(w, rc == WEFT_OK || rc == WEFT_DUPLICATE, "write on store %d: %s: %s", i, weft_errname(rc),
	      weft_errmsg(s->db));
	trace_u64(w, (uint64_t)rc);
	if (rc == WEFT_OK)
		ack(w, &id);
	return note_events(w, i);
}

/* ---------------------------------------------------------------- links */

/* Follows one direction's frames to find EVENTS payload bytes to tamper. */
typedef struct tracker {
	unsigned char hdr[FRAME_HEADER];
	size_t nh;
	uint8_t type;
	uint32_t len, pos;
	uint64_t events_frames; /* EVENTS frames begun */
} tracker;

typedef struct dir {
	weft_session *from, *to;
	int to_store;
	tracker t;
	uint64_t delivered;
	/* malice: flip one bit of EVENTS frame number `tamper_frame` */
	int tamper;
	uint64_t tamper_frame;
	uint32_t tamper_off;
	uint8_t tamper_bit;
	int tamper_state; /* 0 waiting, 1 flipped, 2 the whole frame was delivered */
} simdir;

typedef struct simlink {
	int a, b; /* client store, server store */
	weft_session *c, *s;
	simdir d[2];   /* 0: client to server, 1: server to client */
	uint64_t cut_at; /* total bytes after which the connection dies */
	uint64_t total;
	unsigned max_chunk;
	unsigned max_delay;
	int stall;  /* the simlink goes silent past the idle timeout at cut_at */
	int dead;
	int scoped; /* the client asked for scope "a" only */
} simlink;

/* Passes byte b at the tracker; returns the byte to deliver. */
static unsigned char track(rng *r, simdir *d, unsigned char b)
{
	tracker *t = &d->t;
	if (t->nh < FRAME_HEADER) {
		t->hdr[t->nh++] = b;
		if (t->nh == FRAME_HEADER) {
			t->type = t->hdr[0];
			t->len = codec_get_u32(t->hdr + 1);
			t->pos = 0;
			if (t->type == FRAME_EVENTS) {
				if (d->tamper && d->tamper_state == 0 && t->events_frames == d->tamper_frame && t->len) {
					d->tamper_off = (uint32_t)below(r, t->len);
					d->tamper_bit = (uint8_t)(1u << below(r, 8));
				}
				t->events_frames++;
			}
			if (t->len == 0)
				t->nh = 0;
		}
		return b;
	}
	int target = d->tamper && t->type == FRAME_EVENTS && t->events_frames == d->tamper_frame + 1;
	if (target && d->tamper_state == 0 && t->pos == d->tamper_off) {
		b ^= d->tamper_bit;
		d->tamper_state = 1;
	}
	if (++t->pos == t->len) {
		t->nh = 0;
		if (target && d->tamper_state == 1)
			d->tamper_state = 2;
	}
	return b;
}

static int ended(weft_session *s)
{
	weft_session_state st = weft_session_state_get(s);
	return st == WEFT_SESSION_DONE || st == WEFT_SESSION_FAILED;
}

static int link_open(world *w, simlink *l, int a, int b)
{
	rng *r = &w->r;
	memset(l, 0, sizeof(*l));
	l->a = a;
	l->b = b;
	weft_session_options co = WEFT_SESSION_OPTIONS_INIT, so = WEFT_SESSION_OPTIONS_INIT;
	co.idle_timeout_ms = so.idle_timeout_ms = IDLE_MS;
	co.batch_events = (uint32_t)(1 + below(r, 6));
	so.batch_events = (uint32_t)(1 + below(r, 6));
	if (chance(r, 30))
		co.max_frame = 64u << 10;
	if (chance(r, 30))
		so.max_frame = 64u << 10;
	static const char *const only_a[] = {"a"};
	if (chance(r, 15) && !w->all_scopes) {
		co.scopes = only_a;
		co.nscopes = 1;
		l->scoped = 1;
	}
	int rc = weft_session_new(&l->c, w->st[a].db, WEFT_ROLE_CLIENT, &co);
	CHECK(w, rc == WEFT_OK, "session_new client: %s", weft_errmsg(w->st[a].db));
	rc = weft_session_new(&l->s, w->st[b].db, WEFT_ROLE_SERVER, &so);
	CHECK(w, rc == WEFT_OK, "session_new server: %s", weft_errmsg(w->st[b].db));
	weft_session_tick(l->c, w->now);
	weft_session_tick(l->s, w->now);
	l->d[0] = (simdir){.from = l->c, .to = l->s, .to_store = b};
	l->d[1] = (simdir){.from = l->s, .to = l->c, .to_store = a};
	l->cut_at = UINT64_MAX;
	l->max_chunk = chance(r, 30) ? 1 + (unsigned)below(r, 64) : 1 + (unsigned)below(r, 20000);
	l->max_delay = (unsigned)below(r, 200);
	return 0;
}

/* Delivers one random chunk of one direction; 0 when nothing can move. */
static int link_step(world *w, simlink *l, unsigned char *scratch)
{
	rng *r = &w->r;
	if (l->dead)
		return 0;
	int first = (int)below(r, 2);
	for (int k = 0; k < 2; k++) {
		simdir *d = &l->d[(first + k) % 2];
		const void *out;
		size_t len;
		weft_session_output(d->from, &out, &len);
		if (!len)
			continue;
		size_t n = 1 + (size_t)below(r, l->max_chunk);
		if (n > len)
			n = len;
		if (l->total + n >= l->cut_at) {
			n = (size_t)(l->cut_at - l->total);
			l->dead = 1;
		}
		for (size_t i = 0; i < n; i++)
			scratch[i] = track(r, d, ((const unsigned char *)out)[i]);
		if (n)
			weft_session_feed(d->to, scratch, n, w->now);
		weft_session_consume(d->from, n);
		d->delivered += n;
		l->total += n;
		if (l->dead && l->stall) {
			/* Silence past the timeout: both sides give up on their own. */
			advance(w, IDLE_MS + 1 + below(r, 1000));
			weft_session_tick(l->c, w->now);
			weft_session_tick(l->s, w->now);
		}
		advance(w, below(r, l->max_delay + 1));
		weft_session_tick(l->c, w->now);
		weft_session_tick(l->s, w->now);
		return 1;
	}
	return 0;
}

static void trace_stats(world *w, weft_session *s)
{
	weft_session_stats st;
	weft_session_stats_get(&st, s);
	trace_u64(w, st.events_sent);
	trace_u64(w, st.events_received);
	trace_u64(w, st.bytes_sent);
	trace_u64(w, st.bytes_received);
	trace_u64(w, st.round_trips);
	trace_u64(w, (uint64_t)(int64_t)st.result);
}

/* Checks what a finished simlink must satisfy, then frees its sessions. */
static int link_close(world *w, simlink *l)
{
	trace_stats(w, l->c);
	trace_stats(w, l->s);
	int clean = l->cut_at == UINT64_MAX && !l->d[0].tamper && !l->d[1].tamper;
	for (int k = 0; k < 2; k++) {
		simdir *d = &l->d[k];
		if (d->tamper_state == 2 && weft_session_state_get(d->to) != WEFT_SESSION_FAILED) {
			failf(w, "a tampered EVENTS frame was accepted (store %d, session state %d)", d->to_store,
			      weft_session_state_get(d->to));
			break;
		}
		if (d->tamper_state == 2) {
			weft_session_stats st;
			weft_session_stats_get(&st, d->to);
			if (st.result >= 0)
				failf(w, "tampered frame: the session did not report an error");
		}
	}
	if (clean && (weft_session_state_get(l->c) != WEFT_SESSION_DONE ||
	              weft_session_state_get(l->s) != WEFT_SESSION_DONE))
		failf(w, "a clean session %d<->%d did not finish: client %d (%s), server %d (%s)", l->a, l->b,
		      weft_session_state_get(l->c), weft_session_errmsg(l->c), weft_session_state_get(l->s),
		      weft_session_errmsg(l->s));
	weft_session_free(l->c);
	weft_session_free(l->s);
	l->c = l->s = NULL;
	if (w->fail[0])
		return -1;
	if (note_events(w, l->a) < 0 || note_events(w, l->b) < 0)
		return -1;
	return 0;
}

/* Runs links (interleaved) until none can move. */
static int run_links(world *w, simlink *ls, int n)
{
	static unsigned char scratch[FRAME_MAX_HARD > (1u << 21) ? (1u << 21) : FRAME_MAX_HARD];
	for (int i = 0; i < n; i++)
		if (ls[i].max_chunk > sizeof(scratch))
			ls[i].max_chunk = sizeof(scratch);
	for (;;) {
		int live[4], nl = 0;
		for (int i = 0; i < n; i++)
			if (!ls[i].dead && !(ended(ls[i].c) && ended(ls[i].s)))
				live[nl++] = i;
		if (!nl)
			break;
		int moved = 0;
		int start = (int)below(&w->r, (uint64_t)nl);
		for (int k = 0; k < nl && !moved; k++)
			moved = link_step(w, &ls[live[(start + k) % nl]], scratch);
		if (!moved) {
			/* Nothing to send anywhere: error frames delivered, or a
			 * stall the sessions must notice through their clocks. */
			int open = 0;
			for (int k = 0; k < nl; k++)
				open |= !ended(ls[live[k]].c) || !ended(ls[live[k]].s);
			if (!open)
				break;
			if (getenv("WEFT_SIM_DEBUG"))
				for (int k = 0; k < nl; k++) {
					weft_session_stats a, b;
					weft_session_stats_get(&a, ls[live[k]].c);
					weft_session_stats_get(&b, ls[live[k]].s);
					fprintf(stderr, "stall: link %d<->%d states %d/%d sent %llu/%llu cut %llu total %llu\n",
					        ls[live[k]].a, ls[live[k]].b, weft_session_state_get(ls[live[k]].c),
					        weft_session_state_get(ls[live[k]].s), (unsigned long long)a.bytes_sent,
					        (unsigned long long)b.bytes_sent, (unsigned long long)ls[live[k]].cut_at,
					        (unsigned long long)ls[live[k]].total);
				}
			advance(w, IDLE_MS + 1);
			for (int k = 0; k < nl; k++) {
				weft_session_tick(ls[live[k]].c, w->now);
				weft_session_tick(ls[live[k]].s, w->now);
				ls[live[k]].dead = 1;
			}
			for (int k = 0; k < nl; k++)
				if (ls[live[k]].cut_at == UINT64_MAX && !ls[live[k]].d[0].tamper &&
				    !ls[live[k]].d[1].tamper)
					return failf(w, "a clean session %d<->%d stalled", ls[live[k]].a, ls[live[k]].b);
		}
	}
	return 0;
}

static uint64_t count_events(weft_db *db)
{
	weft_db_stats st;
	if (weft_db_stats_get(&st, db) != WEFT_OK)
		return UINT64_MAX;
	return st.events;
}

/* Hash of the ids (in (hlc, id) order) of one scope, or all (NULL). */
static uint64_t event_set_hash(weft_db *db, const char *scope, uint64_t *count)
{
	weft_iter *it;
	weft_iter_options o = WEFT_ITER_OPTIONS_INIT;
	o.scope = scope;
	uint64_t h = 0xcbf29ce484222325ull;
	*count = 0;
	if (weft_db_iter(&it, db, &o) != WEFT_OK)
		return 0;
	const weft_event *ev;
	while (weft_iter_next(&ev, it) == WEFT_OK) {
		h = fnv(h, weft_event_id(ev)->bytes, 32);
		(*count)++;
	}
	weft_iter_free(it);
	return h;
}

/* One session between two distinct stores, with random faults. */
static int random_session(world *w)
{
	rng *r = &w->r;
	int a = (int)below(r, (uint64_t)w->n), b = (int)below(r, (uint64_t)w->n - 1);
	if (b >= a)
		b++;
	simlink ls[2];
	int n = 1;
	if (link_open(w, &ls[0], a, b) < 0)
		return -1;
	w->sessions++;
	simlink *l = &ls[0];
	int faulty = chance(r, 45);
	if (faulty) {
		switch (below(r, 3)) {
		case 0: /* cut at a random byte (the length is unknown: guess) */
			l->cut_at = below(r, 6000);
			w->cuts++;
			break;
		case 1:
			l->cut_at = below(r, 6000);
			l->stall = 1;
			w->stalls++;
			break;
		default: {
			simdir *d = &l->d[below(r, 2)];
			d->tamper = 1;
			d->tamper_frame = below(r, 3);
			w->tampers++;
		}
		}
	}
	/* Sometimes a second session runs at the same time, sharing a store:
	 * the same events may then arrive twice. (Not with a stall: the
	 * silence would time the other session out too.) */
	if (chance(r, 20) && !l->stall) {
		int c = (int)below(r, (uint64_t)w->n);
		int other = chance(r, 50) ? a : b;
		if (c == other)
			c = (c + 1) % w->n;
		if (link_open(w, &ls[1], other, c) < 0) {
			weft_session_free(ls[0].c);
			weft_session_free(ls[0].s);
			return -1;
		}
		n = 2;
		w->concurrent++;
		w->sessions++;
	}
	uint64_t ea = count_events(w->st[a].db), eb = count_events(w->st[b].db);
	int rc = run_links(w, ls, n);
	weft_session_stats cs, ss;
	weft_session_stats_get(&cs, ls[0].c);
	weft_session_stats_get(&ss, ls[0].s);
	int exact = n == 1 && !faulty;
	for (int i = 0; i < n; i++)
		if (link_close(w, &ls[i]) < 0)
			rc = -1;
	if (rc < 0)
		return -1;
	if (exact) {
		/* Alone and clean: exactly the missing events moved. */
		uint64_t ea2 = count_events(w->st[a].db), eb2 = count_events(w->st[b].db);
		CHECK(w, cs.events_sent == ss.events_received && ss.events_sent == cs.events_received,
		      "session stats disagree: client sent %llu / server got %llu, server sent %llu / client got %llu",
		      (unsigned long long)cs.events_sent, (unsigned long long)ss.events_received,
		      (unsigned long long)ss.events_sent, (unsigned long long)cs.events_received);
		CHECK(w, eb2 - eb == cs.events_sent && ea2 - ea == cs.events_received,
		      "store counts moved by %llu/%llu but the session reported %llu/%llu",
		      (unsigned long long)(eb2 - eb), (unsigned long long)(ea2 - ea),
		      (unsigned long long)cs.events_sent, (unsigned long long)cs.events_received);
		for (int k = 0; k < 2; k++) {
			const char *scope = k == 0 ? "a" : "b";
			if (k == 1 && ls[0].scoped)
				continue;
			uint64_t na, nb;
			uint64_t ha = event_set_hash(w->st[a].db, scope, &na), hb = event_set_hash(w->st[b].db, scope, &nb);
			CHECK(w, ha == hb && na == nb, "after a clean session %d<->%d scope %s differs (%llu vs %llu)", a,
			      b, scope, (unsigned long long)na, (unsigned long long)nb);
		}
		/* Syncing again moves nothing. */
		if (chance(r, 30)) {
			simlink again;
			if (link_open(w, &again, a, b) < 0)
				return -1;
			w->sessions++;
			if (run_links(w, &again, 1) < 0)
				return -1;
			weft_session_stats_get(&cs, again.c);
			if (link_close(w, &again) < 0)
				return -1;
			if (!ls[0].scoped || again.scoped)
				CHECK(w, cs.events_sent + cs.events_received == 0, "a repeated sync moved %llu events",
				      (unsigned long long)(cs.events_sent + cs.events_received));
		}
	}
	/* After any fault both stores hold only whole, valid events. */
	if (faulty) {
		int who[2] = {a, b};
		for (int k = 0; k < 2; k++) {
			weft_verify_report rep;
			int vrc = weft_db_verify(&rep, w->st[who[k]].db, NULL, NULL);
			CHECK(w, vrc == WEFT_OK, "store %d does not verify after a faulty session: %s", who[k],
			      weft_errmsg(w->st[who[k]].db));
		}
	}
	/* A cut connection sometimes takes a store down with it. */
	if (l->cut_at != UINT64_MAX && chance(r, 30))
		return crash(w, chance(r, 50) ? a : b);
	return 0;
}

static int copy_file(world *w, const char *from, const char *to)
{
	FILE *in = fopen(from, "rb");
	if (!in)
		return 0; /* no -wal file: nothing to copy */
	FILE *out = fopen(to, "wb");
	CHECK(w, out != NULL, "cannot create %s: %s", to, strerror(errno));
	char buf[1 << 15];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		if (fwrite(buf, 1, n, out) != n)
			break;
	fclose(in);
	CHECK(w, fclose(out) == 0, "cannot write %s", to);
	return 0;
}

/*
 * A device restored from an old backup (or cloned) writes again: its author
 * forks. The twin writes, syncs with one store over a clean link and is
 * gone; the fork must spread only as evidence (kept, flagged, verifiable).
 */
static int fork_device(world *w)
{
	rng *r = &w->r;
	int i = (int)below(r, (uint64_t)w->n), t = w->n;
	int j = (int)below(r, (uint64_t)w->n);
	if (note_events(w, i) < 0)
		return -1;
	weft_db_close(w->st[i].db);
	w->st[i].db = NULL;
	store *tw = &w->st[t];
	memset(tw, 0, sizeof(*tw));
	snprintf(tw->path, sizeof(tw->path), "%s/s%d.db", w->dir, t);
	memcpy(tw->key, w->st[i].key, sizeof(tw->key));
	tw->skew = w->st[i].skew;
	tw->clock_ms = w->st[i].clock_ms;
	static const char *const sfx[] = {"", "-wal"};
	for (int k = 0; k < 2; k++) {
		char from[700], to[700];
		snprintf(from, sizeof(from), "%s%s", w->st[i].path, sfx[k]);
		snprintf(to, sizeof(to), "%s%s", tw->path, sfx[k]);
		unlink(to);
		if (copy_file(w, from, to) < 0)
			return -1;
	}
	if (open_store(w, i) < 0 || open_store(w, t) < 0)
		return -1;
	/* Both write their next event: the same sequence number (unless an
	 * idempotency key makes one write nothing). */
	size_t before = w->nacked;
	int rc = local_write(w, i);
	size_t mid = w->nacked;
	if (rc == 0)
		rc = local_write(w, t);
	if (mid > before && w->nacked > mid)
		w->forks++;
	if (rc == 0 && chance(r, 50))
		rc = local_write(w, t);
	simlink l;
	w->all_scopes = 1;
	rc = rc == 0 ? link_open(w, &l, t, j) : rc;
	w->all_scopes = 0;
	if (rc == 0) {
		w->sessions++;
		l.cut_at = UINT64_MAX;
		for (int k = 0; k < 2; k++)
			l.d[k].tamper = 0;
		rc = run_links(w, &l, 1);
		if (link_close(w, &l) < 0)
			rc = -1;
	}
	weft_db_close(tw->db);
	tw->db = NULL;
	static const char *const all[] = {"", "-wal", "-shm"};
	for (int k = 0; k < 3; k++) {
		char p[700];
		snprintf(p, sizeof(p), "%s%s", tw->path, all[k]);
		unlink(p);
	}
	return rc;
}

/* --------------------------------------------------------- final checks */

typedef struct dump {
	uint64_t h;
	uint64_t rows;
} dump;

static void hash_value(dump *d, const weft_value *v)
{
	d->h = fnv(d->h, &v->type, sizeof(v->type));
	switch (v->type) {
	case WEFT_INTEGER:
		d->h = fnv(d->h, &v->i, sizeof(v->i));
		break;
	case WEFT_REAL:
		d->h = fnv(d->h, &v->r, sizeof(v->r));
		break;
	case WEFT_TEXT:
	case WEFT_BLOB:
		d->h = fnv(d->h, &v->n, sizeof(v->n));
		if (v->n)
			d->h = fnv(d->h, v->p, v->n);
		break;
	default:
		break;
	}
}

static int row_cb(int ncols, const char *const *names, const weft_value *values, void *payload)
{
	dump *d = payload;
	for (int i = 0; i < ncols; i++) {
		d->h = fnv(d->h, names[i], strlen(names[i]) + 1);
		hash_value(d, &values[i]);
	}
	d->rows++;
	return 0;
}

static int conflict_cb(const weft_conflict *c, void *payload)
{
	dump *d = payload;
	d->h = fnv(d->h, c->table, strlen(c->table) + 1);
	d->h = fnv(d->h, c->column, strlen(c->column) + 1);
	hash_value(d, &c->value);
	hash_value(d, &c->winner_pk);
	hash_value(d, &c->loser_pk);
	d->h = fnv(d->h, c->loser_event.bytes, 32);
	return 0;
}

static int dup_cb(const weft_id *event, const weft_id *winner, const char *scope, const char *idem_key,
                  void *payload)
{
	dump *d = payload;
	d->h = fnv(d->h, event->bytes, 32);
	d->h = fnv(d->h, winner->bytes, 32);
	d->h = fnv(d->h, scope, strlen(scope) + 1);
	d->h = fnv(d->h, idem_key, strlen(idem_key) + 1);
	return 0;
}

static int dump_tables(world *w, int i, dump *d)
{
	weft_db *db = w->st[i].db;
	d->h = 0xcbf29ce484222325ull;
	d->rows = 0;
	int rc = weft_db_query(db, "SELECT * FROM item ORDER BY id", row_cb, d);
	if (rc == WEFT_OK)
		rc = weft_db_query(db, "SELECT * FROM kv ORDER BY k", row_cb, d);
	if (rc == WEFT_OK)
		rc = weft_db_conflicts(db, conflict_cb, d);
	if (rc == WEFT_OK)
		rc = weft_db_duplicates(db, dup_cb, d);
	CHECK(w, rc == WEFT_OK, "dump of store %d: %s", i, weft_errmsg(db));
	return 0;
}

static int heal(world *w)
{
	/* Full pairwise syncs over clean links until a round moves nothing. */
	for (int round = 0;; round++) {
		CHECK(w, round < 4, "the network did not converge after %d rounds of full syncs", round);
		uint64_t moved = 0;
		for (int a = 0; a < w->n; a++) {
			for (int b = a + 1; b < w->n; b++) {
				weft_session_options o = WEFT_SESSION_OPTIONS_INIT;
				o.idle_timeout_ms = IDLE_MS;
				simlink l;
				memset(&l, 0, sizeof(l));
				l.a = a;
				l.b = b;
				int rc = weft_session_new(&l.c, w->st[a].db, WEFT_ROLE_CLIENT, &o);
				CHECK(w, rc == WEFT_OK, "heal: %s", weft_errmsg(w->st[a].db));
				rc = weft_session_new(&l.s, w->st[b].db, WEFT_ROLE_SERVER, &o);
				CHECK(w, rc == WEFT_OK, "heal: %s", weft_errmsg(w->st[b].db));
				l.d[0] = (simdir){.from = l.c, .to = l.s, .to_store = b};
				l.d[1] = (simdir){.from = l.s, .to = l.c, .to_store = a};
				l.cut_at = UINT64_MAX;
				l.max_chunk = 1u << 20;
				if (run_links(w, &l, 1) < 0)
					return -1;
				weft_session_stats st;
				weft_session_stats_get(&st, l.c);
				moved += st.events_sent + st.events_received;
				if (link_close(w, &l) < 0)
					return -1;
			}
		}
		if (!moved)
			break;
	}
	return 0;
}

static int final_checks(world *w)
{
	uint64_t count0 = 0, h0 = 0;
	dump d0 = {0, 0};
	for (int i = 0; i < w->n; i++) {
		weft_db *db = w->st[i].db;
		weft_verify_report rep;
		int rc = weft_db_verify(&rep, db, NULL, NULL);
		CHECK(w, rc == WEFT_OK, "store %d does not verify: %s", i, weft_errmsg(db));
		uint64_t count;
		uint64_t h = event_set_hash(db, NULL, &count);
		/* Exactly the events the stores committed: nothing lost,
		 * nothing forged or tampered. */
		for (size_t k = 0; k < w->nacked; k++) {
			weft_event *ev;
			rc = weft_db_get(&ev, db, &w->acked[k]);
			char hex[65];
			CHECK(w, rc == WEFT_OK, "store %d lacks committed event %s: %s", i,
			      weft_id_to_hex(hex, &w->acked[k]), weft_errname(rc));
			weft_event_free(ev);
		}
		CHECK(w, count == w->nacked, "store %d holds %llu events, the stores committed %llu", i,
		      (unsigned long long)count, (unsigned long long)w->nacked);
		weft_db_stats stats;
		CHECK(w, weft_db_stats_get(&stats, db) == WEFT_OK, "stats: %s", weft_errmsg(db));
		CHECK(w, stats.forked_authors == w->forks_flagged || i == 0, "store %d flags %llu forked authors, store 0 %llu",
		      i, (unsigned long long)stats.forked_authors, (unsigned long long)w->forks_flagged);
		if (i == 0) {
			w->forks_flagged = stats.forked_authors;
			CHECK(w, w->forks == 0 || stats.forked_authors > 0, "%llu forks made, %llu forked authors flagged",
			      (unsigned long long)w->forks, (unsigned long long)stats.forked_authors);
		}
		dump d;
		if (dump_tables(w, i, &d) < 0)
			return -1;
		if (i == 0) {
			count0 = count;
			h0 = h;
			d0 = d;
			trace_u64(w, h);
			trace_u64(w, d.h);
		} else {
			CHECK(w, h == h0 && count == count0, "event sets of stores 0 and %d differ", i);
			CHECK(w, d.h == d0.h && d.rows == d0.rows,
			      "derived tables of stores 0 and %d differ (%llu vs %llu rows)", i,
			      (unsigned long long)d0.rows, (unsigned long long)d.rows);
		}
	}
	/* The views equal a rebuild from the log. */
	int k = (int)below(&w->r, (uint64_t)w->n);
	int rc = weft_db_rebuild(w->st[k].db, NULL, NULL);
	CHECK(w, rc == WEFT_OK, "rebuild of store %d: %s", k, weft_errmsg(w->st[k].db));
	dump d;
	if (dump_tables(w, k, &d) < 0)
		return -1;
	CHECK(w, d.h == d0.h && d.rows == d0.rows, "store %d: rebuilt tables differ from the maintained ones", k);
	return 0;
}

/* ----------------------------------------------------------------- seeds */

static void rm_tree(const char *dir, int n)
{
	static const char *const sfx[] = {"", "-wal", "-shm", ".key"};
	char p[600];
	for (int i = 0; i < n; i++)
		for (int k = 0; k < 4; k++) {
			snprintf(p, sizeof(p), "%s/s%d.db%s", dir, i, sfx[k]);
			unlink(p);
		}
	rmdir(dir);
}

/* Devices restored from a backup write again (their authors fork): off by
 * default until stores holding part of a forked chain verify (see
 * tests/sim/tests.cmake); --forks or WEFT_SIM_FORKS=1 turns it on. */
static int fork_devices;

static int run_seed(uint64_t seed, const char *base, uint64_t *trace, world *summary)
{
	world *w = calloc(1, sizeof(*w));
	if (!w)
		abort();
	w->seed = seed;
	w->r.s = seed * 0x2545f4914f6cdd1dull + 1;
	w->trace = 0xcbf29ce484222325ull;
	w->n = 3 + (int)below(&w->r, 3);
	snprintf(w->dir, sizeof(w->dir), "%s/seed-%llu", base, (unsigned long long)seed);
	rm_tree(w->dir, MAX_STORES + 1);
	int rc = mkdir(w->dir, 0700);
	if (rc != 0) {
		failf(w, "mkdir %s: %s", w->dir, strerror(errno));
		goto out;
	}
	for (int i = 0; i < w->n; i++) {
		store *s = &w->st[i];
		snprintf(s->path, sizeof(s->path), "%s/s%d.db", w->dir, i);
		for (size_t k = 0; k < 32; k += 8) {
			uint64_t v = rnd(&w->r);
			memcpy(s->key + k, &v, 8);
		}
		s->skew = (int64_t)below(&w->r, 40001) - 20000;
	}
	set_time(w, 0);
	for (int i = 0; i < w->n && !w->fail[0]; i++)
		open_store(w, i);
	int forks = fork_devices;
	int steps = 12 + (int)below(&w->r, 30);
	for (int step = 0; step < steps && !w->fail[0]; step++) {
		advance(w, below(&w->r, 3000));
		uint64_t what = below(&w->r, 100);
		if (what < 45)
			local_write(w, (int)below(&w->r, (uint64_t)w->n));
		else if (what < 90)
			random_session(w);
		else if (what < 97 || !forks)
			crash(w, (int)below(&w->r, (uint64_t)w->n));
		else
			fork_device(w);
	}
	if (!w->fail[0])
		heal(w);
	if (!w->fail[0])
		final_checks(w);
out:
	for (int i = 0; i < w->n; i++)
		weft_db_close(w->st[i].db);
	int failed = w->fail[0] != 0;
	if (failed)
		fprintf(stderr, "weft_sim: seed %llu FAILED (%d stores): %s\n  replay: WEFT_SIM_SEED=%llu %s\n",
		        (unsigned long long)seed, w->n, w->fail, (unsigned long long)seed, "weft_sim");
	if (!failed || !getenv("WEFT_SIM_KEEP"))
		rm_tree(w->dir, MAX_STORES + 1);
	*trace = w->trace;
	if (getenv("WEFT_SIM_VERBOSE"))
		printf("seed %llu: %d stores, %zu events, %llu sessions (%llu concurrent), %llu cuts, %llu stalls, "
		       "%llu tampers, %llu crashes, trace %016llx\n",
		       (unsigned long long)seed, w->n, w->nacked, (unsigned long long)w->sessions,
		       (unsigned long long)w->concurrent, (unsigned long long)w->cuts, (unsigned long long)w->stalls,
		       (unsigned long long)w->tampers, (unsigned long long)w->crashes, (unsigned long long)w->trace);
	summary->sessions += w->sessions;
	summary->concurrent += w->concurrent;
	summary->cuts += w->cuts;
	summary->stalls += w->stalls;
	summary->tampers += w->tampers;
	summary->crashes += w->crashes;
	summary->writes += w->writes;
	summary->forks += w->forks;
	summary->nacked += w->nacked;
	free(w->acked);
	free(w);
	return failed ? -1 : 0;
}

static uint64_t parse_u64(const char *s, const char *what)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || end == s) {
		fprintf(stderr, "weft_sim: bad %s \"%s\"\n", what, s);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	const char *scale = getenv("WEFT_TEST_SCALE");
	uint64_t first = 1, count = scale && strcmp(scale, "asan") == 0 ? 100 : 2000;
	unsigned shard = 0, nshards = 1;
	int replay = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--first") == 0 && i + 1 < argc) {
			first = parse_u64(argv[++i], "--first");
		} else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc) {
			count = parse_u64(argv[++i], "--count");
		} else if (strcmp(argv[i], "--shard") == 0 && i + 1 < argc) {
			if (sscanf(argv[++i], "%u/%u", &shard, &nshards) != 2 || nshards == 0 || shard >= nshards) {
				fprintf(stderr, "weft_sim: --shard K/N with K < N\n");
				return 2;
			}
		} else if (strcmp(argv[i], "--replay") == 0) {
			replay = 1;
		} else if (strcmp(argv[i], "--forks") == 0) {
			fork_devices = 1;
		} else {
			fprintf(stderr, "usage: weft_sim [--first N] [--count N] [--shard K/N] [--replay] [--forks]\n"
			                "  env WEFT_SIM_SEEDS=count, WEFT_SIM_SEED=seed (one seed), WEFT_SIM_FORKS=1\n");
			return 2;
		}
	}
	if (getenv("WEFT_SIM_FORKS"))
		fork_devices = strcmp(getenv("WEFT_SIM_FORKS"), "0") != 0;
	if (getenv("WEFT_SIM_SEEDS"))
		count = parse_u64(getenv("WEFT_SIM_SEEDS"), "WEFT_SIM_SEEDS");
	if (getenv("WEFT_SIM_SEED")) {
		first = parse_u64(getenv("WEFT_SIM_SEED"), "WEFT_SIM_SEED");
		count = shard == 0 ? 1 : 0;
		nshards = 1;
		shard = 0;
	}
	struct stat sb;
	const char *tmp = getenv("TMPDIR");
	char base[512];
	snprintf(base, sizeof(base), "%s/weft-sim-XXXXXX",
	         stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) ? "/dev/shm" : tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(base)) {
		fprintf(stderr, "weft_sim: cannot create %s: %s\n", base, strerror(errno));
		return 1;
	}
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	world sum;
	memset(&sum, 0, sizeof(sum));
	uint64_t ran = 0, failed = 0;
	for (uint64_t i = 0; i < count; i++) {
		if (i % nshards != shard)
			continue;
		uint64_t seed = first + i, trace, again;
		ran++;
		if (run_seed(seed, base, &trace, &sum) < 0) {
			failed++;
			continue;
		}
		if (replay) {
			world dummy;
			memset(&dummy, 0, sizeof(dummy));
			if (run_seed(seed, base, &again, &dummy) < 0 || again != trace) {
				fprintf(stderr, "weft_sim: seed %llu does not replay exactly (trace %016llx then %016llx)\n",
				        (unsigned long long)seed, (unsigned long long)trace, (unsigned long long)again);
				failed++;
			}
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	rmdir(base);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("weft_sim: %llu seeds from %llu (shard %u/%u)%s in %.1fs: %llu writes, %llu events committed, "
	       "%llu sessions (%llu concurrent), %llu cut, %llu stalled, %llu tampered, %llu crashes, %llu forks; %llu failed\n",
	       (unsigned long long)ran, (unsigned long long)first, shard, nshards, replay ? " run twice" : "", secs,
	       (unsigned long long)sum.writes, (unsigned long long)sum.nacked, (unsigned long long)sum.sessions,
	       (unsigned long long)sum.concurrent, (unsigned long long)sum.cuts, (unsigned long long)sum.stalls,
	       (unsigned long long)sum.tampers, (unsigned long long)sum.crashes, (unsigned long long)sum.forks,
	       (unsigned long long)failed);
	return failed ? 1 : 0;
}
