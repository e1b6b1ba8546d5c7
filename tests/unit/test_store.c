/* The log store: append, chain, ingest, forks, idempotency, verify, versions. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/codec.h"
#include "core/store.h"

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

static uint64_t count_events(weft_db *db)
{
	weft_db_stats s;
	tu_ok(db, weft_db_stats_get(&s, db));
	return s.events;
}

/* The encoding of a stored event, copied out. */
static unsigned char *encoded(weft_db *db, const weft_id *id, size_t *len)
{
	weft_event *ev;
	tu_ok(db, weft_db_get(&ev, db, id));
	const void *b = weft_event_bytes(ev, len);
	unsigned char *copy = malloc(*len);
	memcpy(copy, b, *len);
	weft_event_free(ev);
	return copy;
}

/* The stored event id: at seq, its prev the id given. */
static void expect_link(weft_db *db, const weft_id *id, uint64_t seq, const weft_id *prev)
{
	weft_event *ev;
	tu_ok(db, weft_db_get(&ev, db, id));
	assert_int_equal(weft_event_seq(ev), seq);
	assert_non_null(weft_event_prev(ev));
	assert_memory_equal(weft_event_prev(ev)->bytes, prev->bytes, 32);
	weft_event_free(ev);
}

static void test_store_append_links_a_signed_chain(void **state)
{
	fixture *f = *state;
	weft_db *db = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_id ids[3];
	for (int i = 0; i < 3; i++) {
		char payload[16];
		snprintf(payload, sizeof(payload), "note %d", i);
		tu_ok(db, weft_db_append(&ids[i], db, "home", "note", NULL, payload, strlen(payload)));
		f->clock.now_ms++;
	}
	for (int i = 0; i < 3; i++) {
		weft_event *ev;
		tu_ok(db, weft_db_get(&ev, db, &ids[i]));
		assert_int_equal(weft_event_seq(ev), (uint64_t)i + 1);
		assert_memory_equal(weft_event_author(ev), weft_db_public_key(db), 32);
		if (i == 0)
			assert_null(weft_event_prev(ev));
		else
			assert_memory_equal(weft_event_prev(ev)->bytes, ids[i - 1].bytes, 32);
		size_t len;
		const char *p = weft_event_payload(ev, &len);
		char want[16];
		snprintf(want, sizeof(want), "note %d", i);
		assert_int_equal(len, strlen(want));
		assert_memory_equal(p, want, len);
		/* What the store hands out verifies on its own. */
		size_t elen;
		const void *bytes = weft_event_bytes(ev, &elen);
		weft_event *again;
		assert_int_equal(weft_event_decode(&again, bytes, elen, 0), WEFT_OK);
		assert_memory_equal(weft_event_id(again)->bytes, ids[i].bytes, 32);
		weft_event_free(again);
		weft_event_free(ev);
	}
	weft_verify_report r;
	tu_ok(db, weft_db_verify(&r, db, NULL, NULL));
	assert_int_equal(r.checked, 3);
	assert_int_equal(r.bad, 0);
	weft_db_close(db);
}

static void test_store_commits_durably_in_wal_mode(void **state)
{
	fixture *f = *state;
	weft_db *db = tu_open(f->dir, "a.db", &f->clock, 1);
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(db->sql, "PRAGMA synchronous", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(st, 0), 2); /* FULL */
	sqlite3_finalize(st);
	assert_int_equal(sqlite3_prepare_v2(db->sql, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
	sqlite3_finalize(st);
	weft_db_close(db);
}

static void test_store_persists_across_reopen(void **state)
{
	fixture *f = *state;
	weft_db *db = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_id a, b;
	tu_ok(db, weft_db_append(&a, db, "home", "note", NULL, "x", 1));
	weft_db_close(db);
	db = tu_open(f->dir, "a.db", &f->clock, 1);
	assert_int_equal(count_events(db), 1);
	tu_ok(db, weft_db_append(&b, db, "home", "note", NULL, "y", 1));
	expect_link(db, &b, 2, &a);
	weft_db_close(db);
}

static void test_store_ingest_is_idempotent(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	weft_id ids[5];
	for (int i = 0; i < 5; i++)
		tu_ok(a, weft_db_append(&ids[i], a, "home", "note", NULL, "p", 1));
	for (int round = 0; round < 2; round++) {
		for (int i = 4; i >= 0; i--) { /* newest first: order does not matter */
			size_t len;
			unsigned char *e = encoded(a, &ids[i], &len);
			weft_ingest_status st;
			tu_ok(b, weft_db_ingest(&st, b, e, len));
			assert_int_equal(st, round ? WEFT_INGEST_DUPLICATE : WEFT_INGEST_NEW);
			free(e);
		}
	}
	assert_int_equal(count_events(b), 5);
	weft_verify_report r;
	tu_ok(b, weft_db_verify(&r, b, NULL, NULL));
	assert_int_equal(r.broken_links, 0);
	weft_db_close(a);
	weft_db_close(b);
}

static void test_store_ingest_refuses_any_flipped_byte(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	weft_id id;
	tu_ok(a, weft_db_append(&id, a, "home", "note", "key-1", "payload", 7));
	size_t len;
	unsigned char *e = encoded(a, &id, &len);
	for (size_t i = 0; i < len; i++) {
		for (int bit = 0; bit < 8; bit++) {
			e[i] ^= (unsigned char)(1u << bit);
			weft_ingest_status st;
			int rc = weft_db_ingest(&st, b, e, len);
			if (rc >= 0)
				print_error("flipping bit %d of byte %zu was accepted\n", bit, i);
			assert_true(rc < 0);
			e[i] ^= (unsigned char)(1u << bit);
		}
	}
	assert_int_equal(count_events(b), 0);
	weft_ingest_status st;
	tu_ok(b, weft_db_ingest(&st, b, e, len));
	assert_int_equal(count_events(b), 1);
	free(e);
	weft_db_close(a);
	weft_db_close(b);
}

/* Builds an event by hand, as a misbehaving author could. */
static unsigned char *forge(size_t *len, int seed_byte, uint64_t seq, const weft_id *prev,
                            uint64_t hlc, const char *payload, weft_id *id)
{
	unsigned char seed[32], pk[32], sk[64];
	memset(seed, seed_byte, 32);
	crypto_sign_seed_keypair(pk, sk, seed);
	event_fields fl = {.seq = seq, .prev = prev, .hlc = hlc, .scope = "home", .kind = "note",
	                   .payload = payload, .payload_len = strlen(payload)};
	struct weft_event *ev;
	assert_int_equal(codec_event_build(&ev, &fl, sk, 0, NULL), WEFT_OK);
	unsigned char *out = malloc(ev->enc_len);
	memcpy(out, ev->enc, ev->enc_len);
	*len = ev->enc_len;
	if (id)
		*id = ev->id;
	codec_event_free(ev);
	return out;
}

static int count_heads(const unsigned char *author, uint64_t seq, const weft_id *id, int forked, void *p)
{
	int *n = p;
	n[0]++;
	n[1] += forked;
	n[2] = (int)seq;
	return 0;
}

/* Author 7 (seed byte) signs 1 <- 2x and 1 <- 2y at stamps t, t+1, t+2. */
typedef struct fork2 {
	weft_id first, x, y;
	unsigned char *e[3];
	size_t len[3];
} fork2;

static void fork2_forge(fork2 *k, uint64_t t)
{
	k->e[0] = forge(&k->len[0], 7, 1, NULL, t, "genesis", &k->first);
	k->e[1] = forge(&k->len[1], 7, 2, &k->first, t + 1, "left", &k->x);
	k->e[2] = forge(&k->len[2], 7, 2, &k->first, t + 2, "right", &k->y);
}

/* Ingests them in order: new, new, then the fork. */
static void fork2_ingest(weft_db *db, const fork2 *k)
{
	static const weft_ingest_status want[3] = {WEFT_INGEST_NEW, WEFT_INGEST_NEW, WEFT_INGEST_FORK};
	for (int i = 0; i < 3; i++) {
		weft_ingest_status st;
		tu_ok(db, weft_db_ingest(&st, db, k->e[i], k->len[i]));
		assert_int_equal(st, want[i]);
	}
}

static void fork2_free(fork2 *k)
{
	for (int i = 0; i < 3; i++)
		free(k->e[i]);
}

static void test_store_keeps_both_sides_of_a_fork(void **state)
{
	fixture *f = *state;
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	fork2 k;
	fork2_forge(&k, (f->clock.now_ms - 1000) << 16);
	fork2_ingest(b, &k);
	/* Both are evidence: neither overwrote the other. */
	weft_event *ev;
	tu_ok(b, weft_db_get(&ev, b, &k.x));
	weft_event_free(ev);
	tu_ok(b, weft_db_get(&ev, b, &k.y));
	weft_event_free(ev);
	weft_db_stats s;
	tu_ok(b, weft_db_stats_get(&s, b));
	assert_int_equal(s.events, 3);
	assert_int_equal(s.forked_authors, 1);
	int heads[3] = {0};
	tu_ok(b, weft_db_heads(b, count_heads, heads));
	assert_int_equal(heads[0], 1);
	assert_int_equal(heads[1], 1);
	assert_int_equal(heads[2], 2);
	weft_verify_report r;
	tu_ok(b, weft_db_verify(&r, b, NULL, NULL));
	assert_int_equal(r.forks, 1);
	fork2_free(&k);
	weft_db_close(b);
}

static void test_store_flags_a_fork_hidden_in_the_chain(void **state)
{
	fixture *f = *state;
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	uint64_t t = (f->clock.now_ms - 1000) << 16;
	weft_id first, x, y, z;
	size_t l1, l2, l3, l4;
	/* The author signs 1 <- 2x and 1 <- 2y <- 3z; b never sees 2y. */
	unsigned char *e1 = forge(&l1, 7, 1, NULL, t, "genesis", &first);
	unsigned char *e2 = forge(&l2, 7, 2, &first, t + 1, "left", &x);
	unsigned char *e3 = forge(&l3, 7, 2, &first, t + 2, "right", &y);
	unsigned char *e4 = forge(&l4, 7, 3, &y, t + 3, "after right", &z);
	weft_ingest_status st;
	tu_ok(b, weft_db_ingest(&st, b, e1, l1));
	tu_ok(b, weft_db_ingest(&st, b, e2, l2));
	tu_ok(b, weft_db_ingest(&st, b, e4, l4));
	assert_int_equal(st, WEFT_INGEST_FORK);
	weft_db_stats s;
	tu_ok(b, weft_db_stats_get(&s, b));
	assert_int_equal(s.forked_authors, 1);
	/* Evidence, not damage: verify passes and counts the disagreeing link. */
	weft_verify_report r;
	tu_ok(b, weft_db_verify(&r, b, NULL, NULL));
	assert_int_equal(r.bad, 0);
	assert_int_equal(r.broken_links, 1);
	/* The other order: the successor first, then a conflicting predecessor. */
	weft_db *c = tu_open(f->dir, "c.db", &f->clock, 3);
	tu_ok(c, weft_db_ingest(&st, c, e4, l4));
	assert_int_equal(st, WEFT_INGEST_NEW);
	tu_ok(c, weft_db_ingest(&st, c, e2, l2));
	assert_int_equal(st, WEFT_INGEST_FORK);
	tu_ok(c, weft_db_ingest(&st, c, e3, l3));
	assert_int_equal(st, WEFT_INGEST_FORK);
	free(e1), free(e2), free(e3), free(e4);
	weft_db_close(b);
	weft_db_close(c);
}

static void test_store_idempotency_key_writes_once(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_id first, again, other;
	tu_ok(a, weft_db_append(&first, a, "home", "order", "order-42", "buy", 3));
	tu_expect(a, weft_db_append(&again, a, "home", "order", "order-42", "buy!", 4), WEFT_DUPLICATE);
	assert_memory_equal(first.bytes, again.bytes, 32);
	assert_int_equal(count_events(a), 1);
	/* Keys are per scope. */
	tu_ok(a, weft_db_append(&other, a, "work", "order", "order-42", "buy", 3));
	assert_memory_not_equal(first.bytes, other.bytes, 32);
	assert_int_equal(count_events(a), 2);
	/* A key used on another device counts too once its event arrived. */
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	size_t len;
	unsigned char *e = encoded(a, &first, &len);
	weft_ingest_status st;
	tu_ok(b, weft_db_ingest(&st, b, e, len));
	tu_expect(b, weft_db_append(&again, b, "home", "order", "order-42", "buy", 3), WEFT_DUPLICATE);
	assert_memory_equal(first.bytes, again.bytes, 32);
	assert_int_equal(count_events(b), 1);
	free(e);
	weft_db_close(a);
	weft_db_close(b);
}

static void test_store_batch_refuses_bad_events_alone(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	weft_id i1, i2;
	tu_ok(a, weft_db_append(&i1, a, "home", "note", NULL, "one", 3));
	tu_ok(a, weft_db_append(&i2, a, "home", "note", NULL, "two", 3));
	size_t l1, l2;
	unsigned char *e1 = encoded(a, &i1, &l1);
	unsigned char *e2 = encoded(a, &i2, &l2);
	unsigned char *bad = malloc(l2);
	memcpy(bad, e2, l2);
	bad[l2 - 1] ^= 1; /* payload altered */
	weft_bytes batch[4] = {{e1, l1}, {bad, l2}, {e2, l2}, {e1, l1}};
	int result[4];
	tu_ok(b, weft_db_ingest_batch(result, b, batch, 4));
	assert_int_equal(result[0], WEFT_INGEST_NEW);
	assert_int_equal(result[1], WEFT_EAUTH);
	assert_int_equal(result[2], WEFT_INGEST_NEW);
	assert_int_equal(result[3], WEFT_INGEST_DUPLICATE);
	assert_non_null(strstr(weft_errmsg(b), "event 1 of the batch"));
	assert_int_equal(count_events(b), 2);
	free(e1), free(e2), free(bad);
	weft_db_close(a);
	weft_db_close(b);
}

static void test_store_refuses_events_from_the_future(void **state)
{
	fixture *f = *state;
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	weft_db_stats before, after;
	tu_ok(b, weft_db_stats_get(&before, b));
	size_t len;
	uint64_t far = (f->clock.now_ms + WEFT_DRIFT_DEFAULT_MS + 1) << 16;
	unsigned char *e = forge(&len, 9, 1, NULL, far, "later", NULL);
	weft_ingest_status st;
	tu_expect(b, weft_db_ingest(&st, b, e, len), WEFT_EFUTURE);
	tu_ok(b, weft_db_stats_get(&after, b));
	assert_int_equal(after.events, 0);
	assert_int_equal(after.hlc, before.hlc);
	/* Once the local clock catches up, the same event is welcome. */
	f->clock.now_ms += 2;
	tu_ok(b, weft_db_ingest(&st, b, e, len));
	free(e);
	weft_db_close(b);
}

static void test_store_restored_device_continues_its_chain(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_id ids[3], next;
	for (int i = 0; i < 3; i++)
		tu_ok(a, weft_db_append(&ids[i], a, "home", "note", NULL, "p", 1));
	/* Same key, new database: its own events come back from a peer first. */
	weft_db *a2 = tu_open(f->dir, "a2.db", &f->clock, 1);
	for (int i = 0; i < 3; i++) {
		size_t len;
		unsigned char *e = encoded(a, &ids[i], &len);
		weft_ingest_status st;
		tu_ok(a2, weft_db_ingest(&st, a2, e, len));
		free(e);
	}
	tu_ok(a2, weft_db_append(&next, a2, "home", "note", NULL, "q", 1));
	expect_link(a2, &next, 4, &ids[2]);
	weft_db_stats s;
	tu_ok(a2, weft_db_stats_get(&s, a2));
	assert_int_equal(s.forked_authors, 0);
	assert_int_equal(s.own_events, 4);
	weft_db_close(a);
	weft_db_close(a2);
}

/* The head and id of this device's chain as weft_db_heads reports it. */
typedef struct own_head_seen {
	const unsigned char *pk;
	uint64_t seq;
	weft_id id;
} own_head_seen;

static int find_own_head(const unsigned char *author, uint64_t seq, const weft_id *id, int forked, void *p)
{
	own_head_seen *h = p;
	(void)forked;
	if (memcmp(author, h->pk, 32) == 0) {
		h->seq = seq;
		h->id = *id;
	}
	return 0;
}

/* Appends do not rewrite the device's chain run (core/store.h, open_n): its
 * head, count and next seq stay right across ingests in between, a second
 * handle on the same store, and reopening. */
static void test_store_own_run_stays_right_without_rewrites(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_db *a2 = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_id last, id;
	uint64_t t = (f->clock.now_ms - 1000) << 16;
	fork2 k;
	fork2_forge(&k, t);
	int appended = 0;
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 5; i++, appended++)
			tu_ok(a, weft_db_append(&last, a, "home", "note", NULL, "p", 1));
		/* Another author's event stored in between, by either handle. */
		weft_ingest_status st;
		weft_db *via = round % 2 ? a2 : a;
		tu_ok(via, weft_db_ingest(&st, via, k.e[round], k.len[round]));
	}
	/* The second handle appends next: it continues the chain. */
	tu_ok(a2, weft_db_append(&id, a2, "home", "note", NULL, "q", 1));
	appended++;
	expect_link(a2, &id, appended, &last);
	tu_ok(a, weft_db_append(&last, a, "home", "note", NULL, "r", 1));
	appended++;
	weft_db_close(a2);
	weft_db_close(a);

	a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_db_stats s;
	tu_ok(a, weft_db_stats_get(&s, a));
	assert_int_equal(s.own_events, appended);
	assert_int_equal(s.forked_authors, 1); /* author 7 */
	own_head_seen h = {weft_db_public_key(a), 0, {{0}}};
	tu_ok(a, weft_db_heads(a, find_own_head, &h));
	assert_int_equal(h.seq, appended);
	assert_memory_equal(h.id.bytes, last.bytes, 32);
	tu_ok(a, weft_db_append(&id, a, "home", "note", NULL, "s", 1));
	expect_link(a, &id, appended + 1, &last);
	/* Own events arriving back from a peer are duplicates, not a fork. */
	size_t len;
	unsigned char *e = encoded(a, &last, &len);
	weft_ingest_status st;
	tu_ok(a, weft_db_ingest(&st, a, e, len));
	assert_int_equal(st, WEFT_INGEST_DUPLICATE);
	free(e);
	weft_verify_report r;
	tu_ok(a, weft_db_verify(&r, a, NULL, NULL));
	assert_int_equal(r.broken_links, 0);
	fork2_free(&k);
	weft_db_close(a);
}

/* Two stores with one key each wrote a seq 2: once the other side's
 * event arrives, this device's chain is forked, and its next event must
 * still read back with the prev it was signed with. */
static void test_store_appends_after_its_own_chain_forked(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_id first, mine, theirs, next;
	tu_ok(a, weft_db_append(&first, a, "home", "note", NULL, "p", 1));
	weft_db *clone = tu_open(f->dir, "clone.db", &f->clock, 1);
	size_t len;
	unsigned char *e = encoded(a, &first, &len);
	weft_ingest_status st;
	tu_ok(clone, weft_db_ingest(&st, clone, e, len));
	free(e);
	tu_ok(a, weft_db_append(&mine, a, "home", "note", NULL, "mine", 4));
	f->clock.now_ms += 5;
	tu_ok(clone, weft_db_append(&theirs, clone, "home", "note", NULL, "theirs", 6));
	e = encoded(clone, &theirs, &len);
	tu_ok(a, weft_db_ingest(&st, a, e, len));
	assert_int_equal(st, WEFT_INGEST_FORK);
	free(e);
	for (int i = 0; i < 2; i++) {
		f->clock.now_ms += 5;
		tu_ok(a, weft_db_append(&next, a, "home", "note", NULL, "next", 4));
		weft_event *ev;
		tu_ok(a, weft_db_get(&ev, a, &next));
		assert_int_equal(weft_event_seq(ev), 3 + i);
		if (i == 0)
			assert_true(memcmp(weft_event_prev(ev)->bytes, mine.bytes, 32) == 0 ||
			            memcmp(weft_event_prev(ev)->bytes, theirs.bytes, 32) == 0);
		weft_event_free(ev);
	}
	weft_verify_report r;
	tu_ok(a, weft_db_verify(&r, a, NULL, NULL));
	assert_int_equal(r.checked, 5);
	assert_int_equal(r.bad, 0);
	assert_int_equal(r.forks, 1);
	weft_db_close(clone);
	weft_db_close(a);
}

static void tamper(const char *path, const char *sql)
{
	sqlite3 *s;
	assert_int_equal(sqlite3_open(path, &s), SQLITE_OK);
	assert_int_equal(sqlite3_exec(s, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(s);
}

static void test_store_verify_names_a_tampered_event(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_id ids[3];
	for (int i = 0; i < 3; i++)
		tu_ok(a, weft_db_append(&ids[i], a, "home", "note", NULL, "abc", 3));
	weft_db_close(a);
	tamper(tu_path(f->dir, "a.db"), "UPDATE weft_event SET payload = X'616263FF' WHERE seq = 2");
	a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_verify_report r;
	tu_expect(a, weft_db_verify(&r, a, NULL, NULL), WEFT_ECORRUPT);
	assert_int_equal(r.checked, 3);
	/* The event, and the next one: its id hashes the damaged one's. */
	assert_int_equal(r.bad, 2);
	static const unsigned char zero[32 - STORE_IDP_BYTES];
	assert_memory_equal(r.first_bad.bytes, ids[1].bytes, STORE_IDP_BYTES);
	assert_memory_equal(r.first_bad.bytes + STORE_IDP_BYTES, zero, sizeof(zero));
	char hex[65];
	weft_id_to_hex(hex, &ids[1]);
	hex[2 * STORE_IDP_BYTES] = '\0';
	assert_non_null(strstr(weft_errmsg(a), hex));
	/* The event before it is still readable. */
	weft_event *ev;
	tu_ok(a, weft_db_get(&ev, a, &ids[0]));
	weft_event_free(ev);
	tu_expect(a, weft_db_get(&ev, a, &ids[1]), WEFT_ECORRUPT);
	weft_db_close(a);

	/* A changed header field breaks the id; a swapped signature breaks
	 * the signature check. */
	tamper(tu_path(f->dir, "a.db"), "INSERT INTO weft_kind(name) VALUES ('other'); UPDATE weft_event SET "
	       "payload = X'616263', kind = (SELECT ref FROM weft_kind WHERE name = 'other') WHERE seq = 2");
	a = tu_open(f->dir, "a.db", &f->clock, 1);
	tu_expect(a, weft_db_verify(&r, a, NULL, NULL), WEFT_ECORRUPT);
	assert_memory_equal(r.first_bad.bytes, ids[1].bytes, STORE_IDP_BYTES);
	weft_db_close(a);
	tamper(tu_path(f->dir, "a.db"), "UPDATE weft_event SET kind = (SELECT ref FROM weft_kind WHERE name = 'note') "
	       "WHERE seq = 2; "
	       "UPDATE weft_event SET sig = (SELECT sig FROM weft_event WHERE seq = 1) WHERE seq = 3");
	a = tu_open(f->dir, "a.db", &f->clock, 1);
	tu_expect(a, weft_db_verify(&r, a, NULL, NULL), WEFT_ECORRUPT);
	assert_int_equal(r.bad, 1);
	assert_memory_equal(r.first_bad.bytes, ids[2].bytes, 32);
	assert_non_null(strstr(weft_errmsg(a), "signature"));
	weft_db_close(a);
}

static int stop_early(uint64_t done, uint64_t total, void *p)
{
	*(uint64_t *)p = total;
	return 1;
}

static void test_store_verify_reports_progress_and_can_stop(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_id id;
	for (int i = 0; i < 1100; i++)
		tu_ok(a, weft_db_append(&id, a, "home", "note", NULL, "p", 1));
	uint64_t total = 0;
	tu_expect(a, weft_db_verify(NULL, a, stop_early, &total), WEFT_EUSER);
	assert_int_equal(total, 1100);
	weft_db_close(a);
}

static void test_store_refuses_newer_schema_and_foreign_files(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_db_close(a);
	tamper(tu_path(f->dir, "a.db"), "PRAGMA user_version = 99");
	weft_open_options o = WEFT_OPEN_OPTIONS_INIT;
	unsigned char seed[32];
	memset(seed, 1, 32);
	o.secret_key = seed;
	assert_int_equal(weft_db_open(&a, tu_path(f->dir, "a.db"), &o), WEFT_EVERSION);
	assert_null(a);
	assert_non_null(strstr(weft_error_last(), "newer weft"));

	/* The unreleased schema 1 is named, with the way out. */
	tamper(tu_path(f->dir, "a.db"), "PRAGMA user_version = 1");
	assert_int_equal(weft_db_open(&a, tu_path(f->dir, "a.db"), &o), WEFT_EVERSION);
	assert_null(a);
	assert_non_null(strstr(weft_error_last(), "weft export"));

	tamper(tu_path(f->dir, "other.db"), "CREATE TABLE t(x)");
	assert_int_equal(weft_db_open(&a, tu_path(f->dir, "other.db"), &o), WEFT_ECORRUPT);
	assert_non_null(strstr(weft_error_last(), "not a weft store"));

	assert_int_equal(weft_db_open(&a, tu_path(f->dir, "missing.db"), NULL), WEFT_ENOTFOUND);
	assert_non_null(strstr(weft_error_last(), "weft init"));
	assert_false(access(tu_path(f->dir, "missing.db"), F_OK) == 0);
}

static void test_store_new_files_are_private(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 0);
	weft_id id;
	tu_ok(a, weft_db_append(&id, a, "home", "note", NULL, "p", 1));
	struct stat st;
	assert_int_equal(stat(tu_path(f->dir, "a.db"), &st), 0);
	assert_int_equal(st.st_mode & 077, 0);
	assert_int_equal(stat(tu_path(f->dir, "a.db.key"), &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	weft_db_close(a);
}

static int raw_int(const char *path, const char *sql);

/* The event table of store schema 2 (weft 0.1), as it was created. */
static const char schema2_events[] =
	"CREATE TABLE weft_event(n INTEGER PRIMARY KEY, id BLOB NOT NULL, author INTEGER NOT NULL,"
	"  seq INTEGER NOT NULL, hlc INTEGER NOT NULL, scope INTEGER NOT NULL, kind INTEGER NOT NULL,"
	"  sig BLOB NOT NULL, payload BLOB, prev BLOB, payload_len INTEGER, payload_hash BLOB, idem TEXT);"
	"CREATE INDEX weft_event_idp ON weft_event(substr(id, 1, 8));"
	"CREATE INDEX weft_event_time ON weft_event(hlc);"
	"CREATE INDEX weft_event_chain ON weft_event(author, seq);"
	"CREATE INDEX weft_event_idem ON weft_event(scope, idem) WHERE idem IS NOT NULL;";

typedef struct held_events {
	int n;
	weft_id id[80];
	unsigned char *enc[80];
	size_t len[80];
} held_events;

static void held_all(weft_db *db, held_events *out)
{
	weft_iter *it;
	const weft_event *ev;
	out->n = 0;
	tu_ok(db, weft_db_iter(&it, db, NULL));
	while (weft_iter_next(&ev, it) == WEFT_OK) {
		assert_true(out->n < 80);
		out->id[out->n] = *weft_event_id(ev);
		const void *b = weft_event_bytes(ev, &out->len[out->n]);
		out->enc[out->n] = malloc(out->len[out->n]);
		memcpy(out->enc[out->n], b, out->len[out->n]);
		out->n++;
	}
	weft_iter_free(it);
}

/* A store written by weft 0.1 (schema 2: ids stored, chains indexed) is
 * upgraded when opened read-write: every event reads back byte for byte,
 * chains, heads and forks carry over, and it takes new events. */
static int get_checked(weft_db *db, const weft_id *id);
static weft_db *open_ro(const char *dir, const char *name);
/* Rows that hold a seal, not a signature (docs/FORMAT.md section 5). */
#define SEALED_ROWS "SELECT count(*) FROM weft_event WHERE typeof(sig) = 'text'"
static void expect_all_signed(const char *dir, const char *name, const weft_id *ids, int n);

/* Schema 3 (weft before signing after the commit) reads as it is and
 * gets the index of sealed rows on the first read-write open. */
static void test_store_upgrades_a_schema_3_store(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_id id;
	tu_ok(a, weft_db_append(&id, a, "home", "note", NULL, "abc", 3));
	weft_db_close(a);
	tamper(tu_path(f->dir, "a.db"), "DROP INDEX weft_event_sealed; PRAGMA user_version = 3");
	a = open_ro(f->dir, "a.db");
	tu_ok(a, get_checked(a, &id));
	weft_db_close(a);
	assert_int_equal(raw_int(tu_path(f->dir, "a.db"), "PRAGMA user_version"), 3);
	a = tu_open(f->dir, "a.db", &f->clock, 1);
	assert_int_equal(raw_int(tu_path(f->dir, "a.db"), "PRAGMA user_version"), STORE_SCHEMA_VERSION);
	assert_int_equal(raw_int(tu_path(f->dir, "a.db"),
	                         "SELECT count(*) FROM sqlite_schema WHERE name = 'weft_event_sealed'"), 1);
	weft_id id2;
	tu_ok(a, weft_db_append(&id2, a, "home", "note", NULL, "def", 3));
	weft_db_close(a);
	assert_int_equal(raw_int(tu_path(f->dir, "a.db"), SEALED_ROWS), 0);
}

static void test_store_upgrades_a_schema_2_store(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_id id;
	/* Past two every-32nd events that keep prev in full. */
	for (int i = 0; i < 70; i++)
		tu_ok(a, weft_db_append(&id, a, i % 3 ? "home" : "work", "note", i == 5 ? "key-5" : NULL, "payload", 7));
	/* Another author, forked at seq 2. */
	uint64_t t = (f->clock.now_ms - 1000) << 16;
	fork2 k;
	fork2_forge(&k, t);
	fork2_ingest(a, &k);
	held_events before;
	held_all(a, &before);
	assert_int_equal(before.n, 73);
	weft_db_close(a);

	/* Back to schema 2, with every prev in full (valid there). */
	sqlite3 *s;
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_open(tu_path(f->dir, "a.db"), &s), SQLITE_OK);
	assert_int_equal(sqlite3_exec(s, "CREATE TEMP TABLE ids(idp INTEGER, id BLOB, prev BLOB)", NULL, NULL, NULL),
	                 SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(s, "INSERT INTO ids VALUES (?1, ?2, ?3)", -1, &st, NULL), SQLITE_OK);
	for (int i = 0; i < before.n; i++) {
		weft_event *ev;
		tu_ok(NULL, weft_event_decode(&ev, before.enc[i], before.len[i], WEFT_PAYLOAD_HARD_MAX));
		sqlite3_reset(st);
		sqlite3_bind_int64(st, 1, store_idp(before.id[i].bytes));
		sqlite3_bind_blob(st, 2, before.id[i].bytes, 32, SQLITE_TRANSIENT);
		if (weft_event_prev(ev))
			sqlite3_bind_blob(st, 3, weft_event_prev(ev)->bytes, 32, SQLITE_TRANSIENT);
		else
			sqlite3_bind_null(st, 3);
		assert_int_equal(sqlite3_step(st), SQLITE_DONE);
		weft_event_free(ev);
	}
	sqlite3_finalize(st);
	assert_int_equal(sqlite3_exec(s, "DROP INDEX weft_event_idp; DROP INDEX weft_event_time; DROP INDEX weft_event_idem;"
	                                 "DROP INDEX weft_event_waiting; ALTER TABLE weft_event RENAME TO v3;"
	                                 "DROP TABLE weft_chain; DROP TABLE weft_fork;", NULL, NULL, NULL),
	                 SQLITE_OK);
	assert_int_equal(sqlite3_exec(s, schema2_events, NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_exec(s, "INSERT INTO weft_event SELECT v.n, i.id, v.author, v.seq, v.hlc, v.scope, v.kind,"
	                                 " v.sig, v.payload, i.prev, NULL, NULL, v.idem FROM v3 v JOIN temp.ids i"
	                                 " ON i.idp = v.idp; DROP TABLE v3; PRAGMA user_version = 2;", NULL, NULL, NULL),
	                 SQLITE_OK);
	sqlite3_close(s);
	assert_int_equal(raw_int(tu_path(f->dir, "a.db"), "SELECT count(*) FROM weft_event"), 73);

	/* Read-only cannot upgrade: it says how to. */
	weft_open_options o = WEFT_OPEN_OPTIONS_INIT;
	o.flags = WEFT_OPEN_READONLY;
	assert_int_equal(weft_db_open(&a, tu_path(f->dir, "a.db"), &o), WEFT_EVERSION);
	assert_non_null(strstr(weft_error_last(), "WEFT_OPEN_READONLY"));

	a = tu_open(f->dir, "a.db", &f->clock, 1);
	assert_int_equal(raw_int(tu_path(f->dir, "a.db"), "PRAGMA user_version"), STORE_SCHEMA_VERSION);
	held_events after;
	held_all(a, &after);
	assert_int_equal(after.n, before.n);
	for (int i = 0; i < before.n; i++) {
		assert_memory_equal(after.id[i].bytes, before.id[i].bytes, 32);
		assert_int_equal(after.len[i], before.len[i]);
		assert_memory_equal(after.enc[i], before.enc[i], before.len[i]);
		free(after.enc[i]);
	}
	weft_verify_report r;
	tu_ok(a, weft_db_verify(&r, a, NULL, NULL));
	assert_int_equal(r.checked, 73);
	assert_int_equal(r.forks, 1);
	weft_db_stats ds;
	tu_ok(a, weft_db_stats_get(&ds, a));
	assert_int_equal(ds.own_events, 70);
	assert_int_equal(ds.forked_authors, 1);
	/* The chain goes on from its head; the idempotency key still holds. */
	weft_id next;
	tu_ok(a, weft_db_append(&next, a, "home", "note", NULL, "71", 2));
	expect_link(a, &next, 71, &id);
	tu_expect(a, weft_db_append(&next, a, "home", "note", "key-5", "again", 5), WEFT_DUPLICATE);
	/* The forked author's next event joins the branch it names. */
	weft_id z;
	size_t l4;
	weft_ingest_status ist;
	unsigned char *e4 = forge(&l4, 7, 3, &k.y, t + 3, "after right", &z);
	tu_ok(a, weft_db_ingest(&ist, a, e4, l4));
	assert_int_equal(ist, WEFT_INGEST_NEW);
	tu_ok(a, weft_db_verify(&r, a, NULL, NULL));
	assert_int_equal(r.broken_links, 0);
	for (int i = 0; i < before.n; i++)
		free(before.enc[i]);
	fork2_free(&k);
	free(e4);
	weft_db_close(a);
}

static void test_store_readonly_refuses_writes(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_db_close(a);
	weft_open_options o = WEFT_OPEN_OPTIONS_INIT;
	o.flags = WEFT_OPEN_READONLY;
	tu_ok(NULL, weft_db_open(&a, tu_path(f->dir, "a.db"), &o));
	weft_id id;
	tu_expect(a, weft_db_append(&id, a, "home", "note", NULL, "p", 1), WEFT_EPERM);
	assert_non_null(strstr(weft_errmsg(a), "read-only"));
	weft_db_close(a);
}

static void test_store_iterates_in_time_order_with_filters(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_id id;
	for (int i = 0; i < 10; i++) {
		f->clock.now_ms += 10;
		tu_ok(a, weft_db_append(&id, a, i % 2 ? "odd" : "even", "note", NULL, "p", 1));
	}
	weft_iter_options o = WEFT_ITER_OPTIONS_INIT;
	o.scope = "odd";
	weft_iter *it;
	tu_ok(a, weft_db_iter(&it, a, &o));
	const weft_event *ev;
	uint64_t last = 0;
	int n = 0, rc;
	while ((rc = weft_iter_next(&ev, it)) == WEFT_OK) {
		assert_string_equal(weft_event_scope(ev), "odd");
		assert_true(weft_event_hlc(ev) > last);
		last = weft_event_hlc(ev);
		n++;
	}
	assert_int_equal(rc, WEFT_ITEROVER);
	assert_int_equal(n, 5);
	weft_iter_free(it);
	/* A time window: [from, to). */
	o.scope = NULL;
	o.from_hlc = (f->clock.now_ms - 50) << 16;
	o.to_hlc = (f->clock.now_ms - 10) << 16;
	tu_ok(a, weft_db_iter(&it, a, &o));
	n = 0;
	while (weft_iter_next(&ev, it) == WEFT_OK)
		n++;
	assert_int_equal(n, 4);
	weft_iter_free(it);
	weft_db_close(a);
}

static int raw_int(const char *path, const char *sql)
{
	sqlite3 *s;
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_open(path, &s), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(s, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	int v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(s);
	return v;
}

/* A copy of dir/from's files as dir/to: what a crash would leave of a
 * store that is still open (no write may run meanwhile). */
static void crash_copy(const char *dir, const char *from, const char *to)
{
	static const char *const side[] = {"", "-wal", ".key"};
	assert_int_equal(access(tu_path(dir, from), F_OK), 0);
	for (int i = 0; i < 3; i++) {
		char a[512], b[512];
		snprintf(a, sizeof(a), "%s%s", tu_path(dir, from), side[i]);
		snprintf(b, sizeof(b), "%s%s", tu_path(dir, to), side[i]);
		FILE *in = fopen(a, "rb");
		if (!in && i == 2)
			continue; /* no key file: tu_open gives the key */
		assert_non_null(in);
		FILE *out = fopen(b, "wb");
		assert_non_null(out);
		char buf[8192];
		size_t n;
		while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
			assert_int_equal(fwrite(buf, 1, n, out), n);
		fclose(in);
		assert_int_equal(fclose(out), 0);
		assert_int_equal(chmod(b, 0600), 0);
	}
}

/* The event id as weft_db_get gives it, checked as a peer would: its
 * bytes decode and its signature verifies. */
static int get_checked(weft_db *db, const weft_id *id)
{
	weft_event *ev;
	int rc = weft_db_get(&ev, db, id);
	if (rc < 0)
		return rc;
	size_t len;
	const void *bytes = weft_event_bytes(ev, &len);
	weft_event *back;
	rc = weft_event_decode(&back, bytes, len, 0);
	if (rc == WEFT_OK)
		weft_event_free(back);
	weft_event_free(ev);
	return rc;
}

static weft_db *open_ro(const char *dir, const char *name)
{
	weft_open_options o = WEFT_OPEN_OPTIONS_INIT;
	o.flags = WEFT_OPEN_READONLY;
	weft_db *db;
	tu_ok(NULL, weft_db_open(&db, tu_path(dir, name), &o));
	return db;
}

/* Read-only, as a peer's copy would be read: every event verifies, none
 * is left sealed, and each one's bytes decode with a valid signature. */
static void expect_all_signed(const char *dir, const char *name, const weft_id *ids, int n)
{
	assert_int_equal(raw_int(tu_path(dir, name), SEALED_ROWS), 0);
	weft_db *db = open_ro(dir, name);
	weft_verify_report r;
	tu_ok(db, weft_db_verify(&r, db, NULL, NULL));
	assert_int_equal(r.checked, n);
	assert_int_equal(r.bad + r.unsigned_own, 0);
	for (int i = 0; i < n; i++)
		tu_ok(db, get_checked(db, &ids[i]));
	weft_db_close(db);
}

static void test_store_signs_own_events_after_the_commit(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_id id[3];
	for (int i = 0; i < 3; i++)
		tu_ok(a, weft_db_append(&id[i], a, "home", "note", NULL, "abc", 3));
	/* Committed with a seal; the next write or close brings the signature. */
	assert_int_equal(raw_int(tu_path(f->dir, "a.db"), "SELECT typeof(sig) = 'text' FROM weft_event ORDER BY n DESC LIMIT 1"),
	                 1);
	for (int i = 0; i < 3; i++)
		tu_ok(a, get_checked(a, &id[i]));
	weft_db_close(a);
	expect_all_signed(f->dir, "a.db", id, 3);
}

static void test_store_signs_what_a_crash_left(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_id id[5];
	for (int i = 0; i < 5; i++)
		tu_ok(a, weft_db_append(&id[i], a, "home", "note", NULL, "abc", 3));
	crash_copy(f->dir, "a.db", "c.db");
	weft_db_close(a);
	int sealed = raw_int(tu_path(f->dir, "c.db"), SEALED_ROWS);
	assert_true(sealed >= 1);

	/* Read-only: no key to sign with; the ids still check. */
	weft_db *c = open_ro(f->dir, "c.db");
	weft_verify_report r;
	tu_ok(c, weft_db_verify(&r, c, NULL, NULL));
	assert_int_equal(r.checked, 5);
	assert_int_equal(r.bad, 0);
	assert_int_equal(r.unsigned_own, sealed);
	/* All of the event but its bytes, which need the signature. */
	weft_event *ev;
	tu_ok(c, weft_db_get(&ev, c, &id[4]));
	size_t len = 1;
	assert_null(weft_event_bytes(ev, &len));
	assert_int_equal(len, 0);
	const void *p = weft_event_payload(ev, &len);
	assert_int_equal(len, 3);
	assert_memory_equal(p, "abc", 3);
	weft_event_free(ev);
	weft_db_close(c);

	/* A read-write open signs them. */
	c = tu_open(f->dir, "c.db", &f->clock, 1);
	assert_int_equal(raw_int(tu_path(f->dir, "c.db"), SEALED_ROWS), 0);
	weft_db_close(c);
	expect_all_signed(f->dir, "c.db", id, 5);
}

static void test_store_never_signs_a_seal_it_did_not_make(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_id id;
	tu_ok(a, weft_db_append(&id, a, "home", "note", NULL, "abc", 3));
	crash_copy(f->dir, "a.db", "c.db");
	weft_db_close(a);
	/* Someone with the file but not the key puts a seal of their own. */
	assert_int_equal(raw_int(tu_path(f->dir, "c.db"), SEALED_ROWS), 1);
	tamper(tu_path(f->dir, "c.db"), "UPDATE weft_event SET sig = lower(hex(randomblob(32))) WHERE typeof(sig) = 'text'");

	weft_db *c = tu_open(f->dir, "c.db", &f->clock, 1);
	assert_int_equal(raw_int(tu_path(f->dir, "c.db"), SEALED_ROWS), 1);
	tu_expect(c, get_checked(c, &id), WEFT_ECORRUPT);
	assert_non_null(strstr(weft_errmsg(c), "seal"));
	weft_verify_report r;
	tu_expect(c, weft_db_verify(&r, c, NULL, NULL), WEFT_ECORRUPT);
	assert_int_equal(r.bad, 1);
	assert_memory_equal(r.first_bad.bytes, id.bytes, 32);
	weft_db_close(c);
}

typedef struct items {
	int n;
	uint64_t hlc[8];
	unsigned char id[8][32];
} items;

static int collect_item(void *p, uint64_t hlc, const unsigned char id[32])
{
	items *it = p;
	if (it->n < 8) {
		it->hlc[it->n] = hlc;
		memcpy(it->id[it->n], id, 32);
	}
	it->n++;
	return 0;
}

/* Ids are found through their first 6 bytes: a row sharing them (here
 * planted by hand, as damage or a crafted collision would) must not be
 * taken for the event, nor hide it. */
static void test_store_tells_apart_ids_sharing_a_prefix(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_id ids[2], absent;
	tu_ok(a, weft_db_append(&ids[0], a, "home", "note", NULL, "one", 3));
	tu_ok(a, weft_db_append(&ids[1], a, "home", "note", NULL, "two", 3));
	size_t len;
	unsigned char *e0 = encoded(a, &ids[0], &len);
	weft_db_close(a);
	absent = ids[0];
	memset(absent.bytes + STORE_IDP_BYTES, 0x5a, 32 - STORE_IDP_BYTES);
	if (memcmp(absent.bytes, ids[0].bytes, 32) == 0)
		absent.bytes[31] ^= 1;
	/* The decoy: another event's row under the first one's 6 bytes, at
	 * the same stamp, found before it (a lower row number). */
	sqlite3 *s;
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_open(tu_path(f->dir, "a.db"), &s), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(s, "INSERT INTO weft_event(n, idp, author, seq, hlc, scope, kind, sig, payload, "
	                                    "prev) SELECT -1, ?1, author, 7, (SELECT hlc FROM weft_event WHERE seq = 1), "
	                                    "scope, kind, sig, payload, zeroblob(32) FROM weft_event WHERE seq = 2",
	                                    -1, &st, NULL),
	                 SQLITE_OK);
	sqlite3_bind_int64(st, 1, store_idp(ids[0].bytes));
	assert_int_equal(sqlite3_step(st), SQLITE_DONE);
	sqlite3_finalize(st);
	sqlite3_close(s);

	a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_event *ev;
	tu_ok(a, weft_db_get(&ev, a, &ids[0]));
	assert_memory_equal(weft_event_id(ev)->bytes, ids[0].bytes, 32);
	assert_int_equal(weft_event_seq(ev), 1);
	weft_event_free(ev);
	/* An id sharing the 6 bytes: the damaged row may have been it. */
	tu_expect(a, weft_db_get(&ev, a, &absent), WEFT_ECORRUPT);
	assert_int_equal(store_has_event(a, ids[0].bytes), 1);
	assert_int_equal(store_has_event(a, absent.bytes), 0);
	/* The real event is still a duplicate of itself. */
	weft_ingest_status ist;
	tu_ok(a, weft_db_ingest(&ist, a, e0, len));
	assert_int_equal(ist, WEFT_INGEST_DUPLICATE);
	/* A row that hashes to no id cannot be listed to a peer. */
	items it;
	memset(&it, 0, sizeof(it));
	tu_expect(a, store_scan_items(a, NULL, 0, STORE_HLC_ALL_LO, STORE_HLC_ALL_HI, collect_item, &it), WEFT_ECORRUPT);
	/* verify names the decoy by the 6 bytes it keeps. */
	weft_verify_report r;
	tu_expect(a, weft_db_verify(&r, a, NULL, NULL), WEFT_ECORRUPT);
	assert_int_equal(r.bad, 1);
	assert_memory_equal(r.first_bad.bytes, ids[0].bytes, STORE_IDP_BYTES);
	assert_non_null(strstr(weft_errmsg(a), "row -1"));
	free(e0);
	weft_db_close(a);
}

/* Events for the read hint test, and their encodings. */
typedef struct hinted {
	int n;
	weft_id id[16];
	unsigned char *enc[16];
	size_t len[16];
} hinted;

static int hinted_add(hinted *h, int seed_byte, uint64_t seq, const weft_id *prev, uint64_t hlc, const char *payload)
{
	assert_true(h->n < 16);
	h->enc[h->n] = forge(&h->len[h->n], seed_byte, seq, prev, hlc, payload, &h->id[h->n]);
	return h->n++;
}

static void hinted_ingest(weft_db *db, const hinted *h, int i)
{
	weft_ingest_status st;
	tu_ok(db, weft_db_ingest(&st, db, h->enc[i], h->len[i]));
	assert_int_equal(st, WEFT_INGEST_NEW);
}

/* Reads event i through the hint: it must be that event, byte for byte. */
static void read_hinted(weft_db *db, store_read_hint *hint, const hinted *h, int i)
{
	struct weft_event *ev;
	tu_ok(db, store_get_event(&ev, db, h->id[i].bytes, hint));
	size_t len;
	const void *b = weft_event_bytes(ev, &len);
	assert_int_equal(len, h->len[i]);
	assert_memory_equal(b, h->enc[i], len);
	weft_event_free(ev);
	assert_true(hint->valid);
}

/* Indexes into h of the stored events in the order of a query on id. */
static int hinted_order(weft_db *db, const hinted *h, const char *sql, int *order)
{
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(db->sql, sql, -1, &st, NULL), SQLITE_OK);
	int n = 0;
	while (sqlite3_step(st) == SQLITE_ROW) {
		assert_int_equal(sqlite3_column_bytes(st, 0), 32);
		int k = 0;
		while (k < h->n && memcmp(sqlite3_column_blob(st, 0), h->id[k].bytes, 32) != 0)
			k++;
		assert_true(k < h->n);
		order[n++] = k;
	}
	sqlite3_finalize(st);
	return n;
}

static int stmt_runs(weft_db *db, enum store_stmt which)
{
	return db->stmts[which] ? sqlite3_stmt_status(db->stmts[which], SQLITE_STMTSTATUS_RUN, 0) : 0;
}

/* A read hint (a sync sender's cursor) only saves the id lookup: in any
 * order of ids, with shared stamps, absent ids, events stored between
 * reads or a stale hint, the event read is the one asked for, checked. */
static void test_store_read_hint_returns_the_event_asked_for(void **state)
{
	fixture *f = *state;
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	uint64_t t = (f->clock.now_ms - 1000) << 16;
	/* Three authors; stamps t and t + 2 are shared, stored out of time order. */
	static const struct {
		int seed;
		uint64_t seq, dt;
	} spec[] = {{9, 1, 2}, {7, 1, 0}, {8, 1, 0}, {7, 2, 2}, {8, 2, 2}, {9, 2, 6}, {7, 3, 4}, {8, 3, 5}};
	hinted h = {0};
	weft_id last[3];
	for (size_t i = 0; i < sizeof(spec) / sizeof(spec[0]); i++) {
		char payload[16];
		snprintf(payload, sizeof(payload), "event %zu", i);
		int k = hinted_add(&h, spec[i].seed, spec[i].seq, spec[i].seq > 1 ? &last[spec[i].seed - 7] : NULL,
		                   t + spec[i].dt, payload);
		last[spec[i].seed - 7] = h.id[k];
		hinted_ingest(b, &h, k);
	}
	int n = h.n, sent[16], stored[16];
	assert_int_equal(hinted_order(b, &h, "SELECT weft_id(n) AS id FROM weft_event ORDER BY hlc, id", sent), n);
	assert_int_equal(hinted_order(b, &h, "SELECT weft_id(n) FROM weft_event ORDER BY hlc, n", stored), n);
	assert_true(memcmp(sent, stored, sizeof(int) * (size_t)n) != 0); /* ties stored out of id order */

	/* In the order a sender lists them, and in storage order: the id
	 * index is used for the first read only. */
	int began;
	store_read_hint hint = {0};
	tu_ok(b, store_read_begin(b, &began));
	for (int k = 0; k < n; k++)
		read_hinted(b, &hint, &h, sent[k]);
	store_read_end(b, began);
	hint = (store_read_hint){0};
	int by_id = stmt_runs(b, STMT_EVENT_GET);
	for (int k = 0; k < n; k++)
		read_hinted(b, &hint, &h, stored[k]);
	assert_int_equal(stmt_runs(b, STMT_EVENT_GET), by_id + 1);
	/* Backwards, and every pair: each read after any other. Out of time
	 * order, the rows after the hint are soon not tried any more. */
	int tries = stmt_runs(b, STMT_EVENT_AFTER);
	for (int k = n - 1; k >= 0; k--)
		read_hinted(b, &hint, &h, sent[k]);
	assert_true(stmt_runs(b, STMT_EVENT_AFTER) - tries <= 2);
	for (int i = 0; i < n; i++) {
		for (int j = 0; j < n; j++) {
			hint = (store_read_hint){0};
			read_hinted(b, &hint, &h, i);
			read_hinted(b, &hint, &h, j);
		}
	}

	/* An absent id, differing from the next row's only in its last byte:
	 * not found, hint kept. */
	weft_id absent = h.id[stored[1]];
	absent.bytes[31] ^= 1;
	hint = (store_read_hint){0};
	read_hinted(b, &hint, &h, stored[0]);
	store_read_hint before = hint;
	struct weft_event *ev = (struct weft_event *)&hint; /* must be cleared */
	tu_expect(b, store_get_event(&ev, b, absent.bytes, &hint), WEFT_ENOTFOUND);
	assert_null(ev);
	assert_true(hint.valid && hint.hlc == before.hlc && hint.n == before.n);
	read_hinted(b, &hint, &h, stored[1]);

	/* Stale hints: past every row, before every row, a row that never was. */
	const store_read_hint stale[] = {{.valid = 1, .hlc = INT64_MAX, .n = INT64_MAX},
	                                 {.valid = 1, .hlc = 0, .n = 0},
	                                 {.valid = 1, .hlc = (int64_t)t + 1, .n = 1000},
	                                 {.valid = 1, .hlc = 0, .n = 0, .misses = 1, .skip = 3}};
	for (size_t s = 0; s < sizeof(stale) / sizeof(stale[0]); s++) {
		for (int k = 0; k < n; k++) {
			hint = stale[s];
			read_hinted(b, &hint, &h, k);
		}
	}

	/* Events stored between two reads (between two batches), at the hint's
	 * stamp and between it and the next: each read is still the right one. */
	hint = (store_read_hint){0};
	read_hinted(b, &hint, &h, stored[0]); /* at t */
	int x = hinted_add(&h, 10, 1, NULL, t + 1, "between");
	int y = hinted_add(&h, 11, 1, NULL, t, "tied");
	hinted_ingest(b, &h, x);
	hinted_ingest(b, &h, y);
	tu_ok(b, store_read_begin(b, &began));
	read_hinted(b, &hint, &h, y);
	read_hinted(b, &hint, &h, x);
	for (int k = 1; k < n; k++)
		read_hinted(b, &hint, &h, stored[k]);
	store_read_end(b, began);

	/* A damaged row found through the hint is still refused. */
	hint = (store_read_hint){0};
	read_hinted(b, &hint, &h, stored[0]);
	before = hint;
	read_hinted(b, &hint, &h, stored[1]);
	char sql[128];
	snprintf(sql, sizeof(sql), "UPDATE weft_event SET payload = x'00' WHERE n = %lld", (long long)hint.n);
	tamper(tu_path(f->dir, "b.db"), sql);
	hint = before;
	tu_expect(b, store_get_event(&ev, b, h.id[stored[1]].bytes, &hint), WEFT_ECORRUPT);
	assert_null(ev);
	tu_expect(b, store_get_event(&ev, b, h.id[stored[1]].bytes, NULL), WEFT_ECORRUPT);
	read_hinted(b, &hint, &h, stored[2]);

	for (int i = 0; i < h.n; i++)
		free(h.enc[i]);
	weft_db_close(b);
}

/* prev is not stored while the row of the event it names is known (link);
 * a second event at seq - 1 (a fork) leaves successors' links as they are. */
static void test_store_keeps_links_when_a_fork_arrives_below(void **state)
{
	fixture *f = *state;
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	uint64_t t = (f->clock.now_ms - 1000) << 16;
	weft_id first, x, y, z;
	size_t l1, l2, l3, l4;
	unsigned char *e1 = forge(&l1, 7, 1, NULL, t, "genesis", &first);
	unsigned char *e2 = forge(&l2, 7, 2, &first, t + 1, "left", &x);
	unsigned char *e3 = forge(&l3, 7, 3, &x, t + 2, "after left", &z);
	unsigned char *e4 = forge(&l4, 7, 2, &first, t + 3, "right", &y);
	weft_ingest_status st;
	tu_ok(b, weft_db_ingest(&st, b, e1, l1));
	tu_ok(b, weft_db_ingest(&st, b, e2, l2));
	tu_ok(b, weft_db_ingest(&st, b, e3, l3));
	assert_int_equal(st, WEFT_INGEST_NEW);
	const char *path = tu_path(f->dir, "b.db");
	assert_int_equal(raw_int(path, "SELECT count(*) FROM weft_event WHERE typeof(prev) <> 'blob'"), 3);
	tu_ok(b, weft_db_ingest(&st, b, e4, l4));
	assert_int_equal(st, WEFT_INGEST_FORK);
	/* Its successor names its predecessor's row, not a sequence number. */
	assert_int_equal(raw_int(path, "SELECT prev FROM weft_event WHERE seq = 3"), 1);
	weft_event *ev;
	tu_ok(b, weft_db_get(&ev, b, &z));
	assert_memory_equal(weft_event_prev(ev)->bytes, x.bytes, 32);
	size_t len;
	const void *bytes = weft_event_bytes(ev, &len);
	assert_int_equal(len, l3);
	assert_memory_equal(bytes, e3, l3);
	weft_event_free(ev);
	tu_ok(b, weft_db_get(&ev, b, &y));
	assert_memory_equal(weft_event_prev(ev)->bytes, first.bytes, 32);
	weft_event_free(ev);
	weft_verify_report r;
	tu_ok(b, weft_db_verify(&r, b, NULL, NULL));
	assert_int_equal(r.bad, 0);
	assert_int_equal(r.forks, 1);
	assert_int_equal(r.broken_links, 0);
	free(e1), free(e2), free(e3), free(e4);
	weft_db_close(b);
}

/* An erased event (payload flag 0) keeps what its header needs. */
static void test_store_keeps_erased_events_readable(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	weft_id id;
	tu_ok(a, weft_db_append(&id, a, "home", "note", NULL, "secret", 6));
	size_t len;
	unsigned char *e = encoded(a, &id, &len);
	e[len - 6 - 1] = 0; /* the payload flag; the payload goes */
	weft_ingest_status st;
	tu_ok(b, weft_db_ingest(&st, b, e, len - 6));
	assert_int_equal(st, WEFT_INGEST_NEW);
	weft_event *ev;
	tu_ok(b, weft_db_get(&ev, b, &id));
	size_t plen;
	assert_null(weft_event_payload(ev, &plen));
	assert_int_equal(plen, 6);
	size_t elen;
	const void *bytes = weft_event_bytes(ev, &elen);
	assert_int_equal(elen, len - 6);
	assert_memory_equal(bytes, e, len - 6);
	weft_event_free(ev);
	tu_ok(b, weft_db_verify(NULL, b, NULL, NULL));
	free(e);
	weft_db_close(a);
	weft_db_close(b);
}

/* The chain head is cached per handle; another handle's appends must not
 * make this one reuse a sequence number (an own fork). */
static void test_store_two_handles_append_one_chain(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_db *a2 = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_id id;
	for (int i = 0; i < 6; i++)
		tu_ok(a, weft_db_append(&id, i % 3 == 1 ? a2 : a, "home", "note", NULL, "p", 1));
	tu_expect(a, weft_db_append(&id, a, "home", "note", "k", "p", 1), WEFT_OK);
	tu_expect(a, weft_db_append(&id, a, "home", "note", "k", "p", 1), WEFT_DUPLICATE);
	tu_ok(a2, weft_db_append(&id, a2, "home", "note", NULL, "p", 1));
	weft_event *ev;
	tu_ok(a, weft_db_get(&ev, a, &id));
	assert_int_equal(weft_event_seq(ev), 8);
	weft_event_free(ev);
	weft_db_stats s;
	tu_ok(a, weft_db_stats_get(&s, a));
	assert_int_equal(s.forked_authors, 0);
	assert_int_equal(s.own_events, 8);
	weft_verify_report r;
	tu_ok(a, weft_db_verify(&r, a, NULL, NULL));
	assert_int_equal(r.forks, 0);
	/* Own events arriving from a peer move the head too. */
	weft_db *c = tu_open(f->dir, "c.db", &f->clock, 1);
	tu_ok(c, weft_db_append(&id, c, "home", "note", NULL, "c", 1));
	tu_ingest_all(c, a);
	tu_ok(c, weft_db_append(&id, c, "home", "note", NULL, "c", 1));
	tu_ok(c, weft_db_get(&ev, c, &id));
	assert_int_equal(weft_event_seq(ev), 9);
	weft_event_free(ev);
	weft_db_close(c);
	weft_db_close(a2);
	weft_db_close(a);
}

static void test_store_survives_allocation_failures(void **state)
{
	fixture *f = *state;
	weft_db *a = tu_open(f->dir, "a.db", &f->clock, 1);
	weft_db *b = tu_open(f->dir, "b.db", &f->clock, 2);
	uint64_t written = 0;
	for (unsigned long n = 1; n < 40; n++) {
		weft_id id;
		alloc_fail_after(n);
		int rc = weft_db_append(&id, a, "home", "note", NULL, "p", 1);
		alloc_fail_after(0);
		assert_true(rc == WEFT_OK || rc == WEFT_ENOMEM);
		written += rc == WEFT_OK;
		assert_int_equal(count_events(a), written);
		if (rc == WEFT_OK) {
			size_t len;
			unsigned char *e = encoded(a, &id, &len);
			weft_ingest_status st;
			alloc_fail_after(n);
			rc = weft_db_ingest(&st, b, e, len);
			alloc_fail_after(0);
			assert_true(rc == WEFT_OK || rc == WEFT_ENOMEM);
			free(e);
		}
	}
	assert_true(written > 0);
	tu_ok(a, weft_db_verify(NULL, a, NULL, NULL));
	tu_ok(b, weft_db_verify(NULL, b, NULL, NULL));
	weft_db_close(a);
	weft_db_close(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_store_append_links_a_signed_chain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_commits_durably_in_wal_mode, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_persists_across_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_signs_own_events_after_the_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_signs_what_a_crash_left, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_upgrades_a_schema_3_store, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_never_signs_a_seal_it_did_not_make, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_ingest_is_idempotent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_ingest_refuses_any_flipped_byte, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_keeps_both_sides_of_a_fork, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_flags_a_fork_hidden_in_the_chain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_idempotency_key_writes_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_batch_refuses_bad_events_alone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_refuses_events_from_the_future, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_restored_device_continues_its_chain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_appends_after_its_own_chain_forked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_verify_names_a_tampered_event, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_tells_apart_ids_sharing_a_prefix, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_read_hint_returns_the_event_asked_for, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_keeps_links_when_a_fork_arrives_below, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_keeps_erased_events_readable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_two_handles_append_one_chain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_verify_reports_progress_and_can_stop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_refuses_newer_schema_and_foreign_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_new_files_are_private, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_readonly_refuses_writes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_own_run_stays_right_without_rewrites, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_upgrades_a_schema_2_store, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_iterates_in_time_order_with_filters, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_survives_allocation_failures, setup, teardown),
	};
	return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
