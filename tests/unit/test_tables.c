/*
 * Derived tables: one test per merge rule of docs/MERGE.md, with several
 * stores (one per device, fixed keys, fake clocks) exchanging events in
 * chosen orders. Every test ends by checking that each store's tables equal
 * a rebuild from its log.
 */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <sqlite3.h>

#include "core/codec.h"
#include "core/rows.h"
#include "core/store.h"

#define T0 UINT64_C(1700000000000)

#define TODO                                                                                       \
	"CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT, done INTEGER NOT NULL DEFAULT 0, "      \
	"votes INTEGER, note TEXT DEFAULT 'none', owner TEXT UNIQUE)"

#define NDEV 4

typedef struct fixture {
	char *dir;
	tu_clock clock[NDEV];
	weft_db *db[NDEV];
} fixture;

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	f->dir = tu_mkdtemp();
	for (int i = 0; i < NDEV; i++)
		f->clock[i].now_ms = T0;
	*state = f;
	return 0;
}

/* Checks incremental = rebuild on every open store, then closes them. */
static void check_rebuild(weft_db *db)
{
	char *before = tu_dump(db);
	tu_ok(db, weft_db_rebuild(db, NULL, NULL));
	char *after = tu_dump(db);
	if (strcmp(before, after) != 0)
		print_error("incremental:\n%s\nrebuilt:\n%s\n", before, after);
	assert_string_equal(before, after);
	free(before);
	free(after);
}

static int teardown(void **state)
{
	fixture *f = *state;
	for (int i = 0; i < NDEV; i++) {
		if (f->db[i])
			check_rebuild(f->db[i]);
		weft_db_close(f->db[i]);
	}
	tu_rmdir(f->dir);
	free(f);
	return 0;
}

/* Opens device i (key seed i + 1) and declares ddl (if not NULL). */
static weft_db *dev(fixture *f, int i, const char *ddl)
{
	char name[16];
	snprintf(name, sizeof(name), "d%d.db", i);
	f->db[i] = tu_open(f->dir, name, &f->clock[i], i + 1);
	if (ddl)
		tu_ok(f->db[i], weft_schema_define(f->db[i], ddl));
	return f->db[i];
}

/* ------------------------------------------------------------ writing */

static weft_id set1(weft_db *db, const char *table, weft_value pk, const char *col, weft_value v)
{
	weft_txn *t;
	weft_id id;
	tu_ok(db, weft_txn_begin(&t, db, "home", NULL));
	tu_ok(db, weft_txn_set(t, table, pk, col, v));
	tu_ok(db, weft_txn_commit(&id, t));
	return id;
}

static weft_id del1(weft_db *db, const char *table, weft_value pk)
{
	weft_txn *t;
	weft_id id;
	tu_ok(db, weft_txn_begin(&t, db, "home", NULL));
	tu_ok(db, weft_txn_delete(t, table, pk));
	tu_ok(db, weft_txn_commit(&id, t));
	return id;
}

static weft_id incr1(weft_db *db, const char *table, weft_value pk, const char *col, int64_t d)
{
	weft_txn *t;
	weft_id id;
	tu_ok(db, weft_txn_begin(&t, db, "home", NULL));
	tu_ok(db, weft_txn_incr(t, table, pk, col, d));
	tu_ok(db, weft_txn_commit(&id, t));
	return id;
}

#define K(s) weft_text(s)

/* Sends the events ids[0..n) of src to dst, in that order. */
static void send(weft_db *dst, weft_db *src, const weft_id *ids, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		weft_event *ev;
		tu_ok(src, weft_db_get(&ev, src, &ids[i]));
		size_t len;
		const void *b = weft_event_bytes(ev, &len);
		weft_ingest_status st;
		tu_ok(dst, weft_db_ingest(&st, dst, b, len));
		weft_event_free(ev);
	}
}

/* Appends a raw "weft.rows" payload (for operations weft_txn refuses). */
static weft_id append_raw(weft_db *db, const char *scope, const char *idem, const void *p, size_t n)
{
	weft_id id;
	tu_ok(db, weft_db_append(&id, db, scope, ROWS_KIND, idem, p, n));
	return id;
}

/* A payload builder following docs/MERGE.md byte by byte. */
typedef struct pb {
	unsigned char b[4096];
	size_t n;
	uint32_t nops;
} pb;

static void pb_init(pb *p)
{
	memset(p, 0, sizeof(*p));
	p->b[0] = 1;
	p->n = 5;
}
static void pb_byte(pb *p, unsigned v) { p->b[p->n++] = (unsigned char)v; }
static void pb_name(pb *p, const char *s)
{
	size_t n = strlen(s);
	pb_byte(p, (unsigned)n);
	memcpy(p->b + p->n, s, n);
	p->n += n;
}
static void pb_value(pb *p, weft_value v)
{
	pb_byte(p, v.type);
	if (v.type == WEFT_INTEGER) {
		codec_put_u64(p->b + p->n, (uint64_t)v.i);
		p->n += 8;
	} else if (v.type == WEFT_REAL) {
		uint64_t bits;
		memcpy(&bits, &v.r, 8);
		codec_put_u64(p->b + p->n, bits);
		p->n += 8;
	} else if (v.type == WEFT_TEXT || v.type == WEFT_BLOB) {
		codec_put_u32(p->b + p->n, (uint32_t)v.n);
		memcpy(p->b + p->n + 4, v.p, v.n);
		p->n += 4 + v.n;
	}
}
/* A put of one column (col NULL: a put of no columns). */
static void pb_put(pb *p, const char *table, weft_value pk, const char *col, weft_value v)
{
	pb_byte(p, ROWOP_PUT);
	pb_name(p, table);
	pb_value(p, pk);
	pb_byte(p, 0);
	pb_byte(p, col ? 1 : 0);
	if (col) {
		pb_name(p, col);
		pb_value(p, v);
	}
	p->nops++;
}
static void pb_del(pb *p, const char *table, weft_value pk)
{
	pb_byte(p, ROWOP_DELETE);
	pb_name(p, table);
	pb_value(p, pk);
	p->nops++;
}
static void pb_incr(pb *p, const char *table, weft_value pk, const char *col, int64_t d)
{
	pb_byte(p, ROWOP_INCR);
	pb_name(p, table);
	pb_value(p, pk);
	pb_name(p, col);
	codec_put_u64(p->b + p->n, (uint64_t)d);
	p->n += 8;
	p->nops++;
}
static const unsigned char *pb_done(pb *p)
{
	codec_put_u32(p->b + 1, p->nops);
	return p->b;
}

/* ------------------------------------------------------------ reading */

static void expect_q(weft_db *db, const char *sql, const char *want)
{
	char *got = tu_query(db, sql);
	if (strcmp(got, want) != 0)
		print_error("%s\n  got:  %s\n  want: %s\n", sql, got, want);
	assert_string_equal(got, want);
	free(got);
}

static void expect_same_dump(weft_db *a, weft_db *b)
{
	char *x = tu_dump(a), *y = tu_dump(b);
	if (strcmp(x, y) != 0)
		print_error("first:\n%s\nsecond:\n%s\n", x, y);
	assert_string_equal(x, y);
	free(x);
	free(y);
}

#define ROW(db, pk, want) expect_q(db, "SELECT * FROM todo WHERE id = '" pk "'", want)

typedef struct conflicts {
	int n;
	char text[1024];
} conflicts;

static int collect_conflict(const weft_conflict *c, void *payload)
{
	conflicts *x = payload;
	tu_str b = {NULL, 0, 0};
	char h[65];
	tu_str_add(&b, "%s.%s=", c->table, c->column);
	tu_str_value(&b, &c->value);
	tu_str_add(&b, " winner=");
	tu_str_value(&b, &c->winner_pk);
	tu_str_add(&b, " loser=");
	tu_str_value(&b, &c->loser_pk);
	tu_str_add(&b, " event=%.8s;", weft_id_to_hex(h, &c->loser_event));
	size_t used = strlen(x->text);
	snprintf(x->text + used, sizeof(x->text) - used, "%s", b.s);
	free(b.s);
	x->n++;
	return 0;
}

static void expect_conflicts(weft_db *db, const char *want)
{
	conflicts c = {0, ""};
	tu_ok(db, weft_db_conflicts(db, collect_conflict, &c));
	if (strcmp(c.text, want) != 0)
		print_error("conflicts\n  got:  %s\n  want: %s\n", c.text, want);
	assert_string_equal(c.text, want);
}

typedef struct dups {
	int n;
	weft_id event[8], winner[8];
	char scope[8][WEFT_SCOPE_MAX + 1], key[8][WEFT_IDEM_KEY_MAX + 1];
} dups;

static int collect_dup(const weft_id *event, const weft_id *winner, const char *scope, const char *key,
                       void *payload)
{
	dups *d = payload;
	assert_true(d->n < 8);
	d->event[d->n] = *event;
	d->winner[d->n] = *winner;
	snprintf(d->scope[d->n], sizeof(d->scope[0]), "%s", scope);
	snprintf(d->key[d->n], sizeof(d->key[0]), "%s", key);
	d->n++;
	return 0;
}

/* ------------------------------------------------------ last writer wins */

/* Erases an event's payload behind weft's back (weft has no call for it
 * yet), in the closed store dir/name. */
static void erase_payload(fixture *f, const char *name, const weft_id *id)
{
	sqlite3 *raw;
	assert_int_equal(sqlite3_open(tu_path(f->dir, name), &raw), SQLITE_OK);
	/* As weft keeps an erased payload: its length and hash stay, for the
	 * header (and the id, which the store re-derives from it). */
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(raw, "SELECT payload FROM weft_event WHERE idp = ?1", -1, &st, NULL),
	                 SQLITE_OK);
	sqlite3_bind_int64(st, 1, store_idp(id->bytes));
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	int len = sqlite3_column_bytes(st, 0);
	unsigned char hash[32];
	crypto_generichash(hash, 32, sqlite3_column_blob(st, 0), (size_t)len, NULL, 0);
	sqlite3_finalize(st);
	unsigned char erased[STORE_ERASED_BYTES];
	store_erased_put(erased, (uint32_t)len, hash);
	assert_int_equal(sqlite3_prepare_v2(raw, "UPDATE weft_event SET payload = NULL, erased = ?2 WHERE idp = ?1", -1,
	                                    &st, NULL),
	                 SQLITE_OK);
	sqlite3_bind_int64(st, 1, store_idp(id->bytes));
	sqlite3_bind_blob(st, 2, erased, sizeof(erased), SQLITE_STATIC);
	assert_int_equal(sqlite3_step(st), SQLITE_DONE);
	sqlite3_finalize(st);
	sqlite3_close(raw);
}

static void test_tables_put_creates_a_row_with_defaults(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO);
	set1(a, "todo", K("a"), "title", K("milk"));
	ROW(a, "a", "'a'|'milk'|0|NULL|'none'|NULL");
	expect_q(a, "SELECT typeof(done), typeof(votes) FROM todo", "'integer'|'null'");
	/* A put of only the key creates the row too (raw: weft_txn has no such call). */
	pb p;
	pb_init(&p);
	pb_put(&p, "todo", K("b"), NULL, weft_null());
	append_raw(a, "home", NULL, pb_done(&p), p.n);
	ROW(a, "b", "'b'|NULL|0|NULL|'none'|NULL");
}

static void test_tables_last_writer_wins_per_column(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO), *b = dev(f, 1, TODO);
	f->clock[0].now_ms = T0 + 10;
	set1(a, "todo", K("x"), "title", K("from a"));
	f->clock[1].now_ms = T0 + 20;
	set1(b, "todo", K("x"), "title", K("from b"));
	f->clock[0].now_ms = T0 + 30;
	set1(a, "todo", K("x"), "done", weft_int(1));
	f->clock[1].now_ms = T0 + 5; /* b's clock is behind: its later write is older */
	set1(b, "todo", K("x"), "votes", weft_int(7));
	f->clock[0].now_ms = T0 + 6;
	set1(a, "todo", K("x"), "votes", weft_int(8));
	/* b's own table shows its last write until it hears of a's newer one. */
	ROW(b, "x", "'x'|'from b'|0|7|'none'|NULL");
	tu_ingest_all(a, b);
	tu_ingest_all(b, a);
	ROW(a, "x", "'x'|'from b'|1|8|'none'|NULL");
	ROW(b, "x", "'x'|'from b'|1|8|'none'|NULL");
	expect_same_dump(a, b);
}

/* Equal timestamps: the larger author key wins. */
static void test_tables_equal_timestamps_tie_broken_by_author_key(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO), *b = dev(f, 1, TODO);
	int a_key_larger = memcmp(weft_db_public_key(a), weft_db_public_key(b), 32) > 0;
	/* Find a row where the event ids order the other way round than the
	 * author keys, so the test tells "author first" from "id first". */
	char pk[16];
	for (int n = 0;; n++) {
		assert_true(n < 64);
		snprintf(pk, sizeof(pk), "x%d", n);
		weft_id ia = set1(a, "todo", K(pk), "title", K("from a"));
		weft_id ib = set1(b, "todo", K(pk), "title", K("from b"));
		assert_int_equal(tu_event_hlc(a, &ia), tu_event_hlc(b, &ib)); /* same clock, same stamp */
		if ((memcmp(ia.bytes, ib.bytes, 32) > 0) != a_key_larger)
			break;
	}
	char sql[64];
	snprintf(sql, sizeof(sql), "SELECT title FROM todo WHERE id = '%s'", pk);
	const char *want = a_key_larger ? "'from a'" : "'from b'";
	weft_db *c = dev(f, 2, TODO), *d = dev(f, 3, TODO);
	tu_ingest_all(c, a);
	tu_ingest_all(c, b);
	tu_ingest_all(d, b);
	tu_ingest_all(d, a);
	tu_ingest_all(a, b);
	tu_ingest_all(b, a);
	for (int i = 0; i < 4; i++)
		expect_q(f->db[i], sql, want);
	expect_same_dump(a, d);
	expect_same_dump(b, c);
}

/* Equal timestamps and one author (a key restored on two devices): the
 * larger event id wins. */
static void test_tables_equal_timestamps_same_author_tie_broken_by_event_id(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO);
	weft_db *twin = tu_open(f->dir, "twin.db", &f->clock[1], 1); /* same key as a */
	tu_ok(twin, weft_schema_define(twin, TODO));
	weft_id ia = set1(a, "todo", K("x"), "title", K("one"));
	weft_id it = set1(twin, "todo", K("x"), "title", K("two"));
	assert_int_equal(tu_event_hlc(a, &ia), tu_event_hlc(twin, &it));
	const char *want = memcmp(ia.bytes, it.bytes, 32) > 0 ? "'one'" : "'two'";
	weft_db *c = dev(f, 2, TODO), *d = dev(f, 3, TODO);
	send(c, a, &ia, 1);
	send(c, twin, &it, 1); /* a fork: kept, and applied like any event */
	send(d, twin, &it, 1);
	send(d, a, &ia, 1);
	expect_q(c, "SELECT title FROM todo", want);
	expect_q(d, "SELECT title FROM todo", want);
	weft_db_close(twin);
}

/* Within one event, later operations win over earlier ones. */
static void test_tables_later_operation_of_one_event_wins(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO);
	weft_txn *t;
	tu_ok(a, weft_txn_begin(&t, a, "home", NULL));
	tu_ok(a, weft_txn_set(t, "todo", K("x"), "title", K("first")));
	tu_ok(a, weft_txn_set(t, "todo", K("y"), "title", K("other row")));
	tu_ok(a, weft_txn_set(t, "todo", K("x"), "title", K("second")));
	tu_ok(a, weft_txn_set(t, "todo", K("x"), "votes", weft_int(3)));
	tu_ok(a, weft_txn_delete(t, "todo", K("y")));
	tu_ok(a, weft_txn_delete(t, "todo", K("z")));
	tu_ok(a, weft_txn_set(t, "todo", K("z"), "note", K("revived in the same event")));
	tu_ok(a, weft_txn_commit(NULL, t));
	expect_q(a, "SELECT id, title, votes, note FROM todo ORDER BY id",
	         "'x'|'second'|3|'none'\n'z'|NULL|NULL|'revived in the same event'");
}

/* -------------------------------------------------- deletes and revive */

static void test_tables_delete_then_later_concurrent_put_revives(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO), *b = dev(f, 1, TODO);
	weft_id base = set1(a, "todo", K("x"), "title", K("old"));
	set1(a, "todo", K("x"), "votes", weft_int(4));
	tu_ingest_all(b, a);
	f->clock[0].now_ms = T0 + 100;
	weft_id del = del1(a, "todo", K("x"));
	f->clock[1].now_ms = T0 + 200; /* b did not see the delete */
	weft_id put = set1(b, "todo", K("x"), "done", weft_int(1));
	(void)base;
	weft_db *c = dev(f, 2, TODO), *d = dev(f, 3, TODO);
	tu_ingest_all(c, a);
	send(c, b, &put, 1); /* delete first, then the put */
	tu_ingest_all(d, b);
	send(d, a, &del, 1); /* put first, then the delete */
	tu_ingest_all(a, b);
	tu_ingest_all(b, a);
	for (int i = 0; i < 4; i++)
		expect_q(f->db[i], "SELECT * FROM todo", "'x'|NULL|1|NULL|'none'|NULL");
}

static void test_tables_put_then_later_concurrent_delete_removes(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO), *b = dev(f, 1, TODO);
	set1(a, "todo", K("x"), "title", K("old"));
	tu_ingest_all(b, a);
	f->clock[1].now_ms = T0 + 100;
	weft_id put = set1(b, "todo", K("x"), "title", K("edited"));
	f->clock[0].now_ms = T0 + 200; /* a deletes later, not having seen the edit */
	weft_id del = del1(a, "todo", K("x"));
	weft_db *c = dev(f, 2, TODO), *d = dev(f, 3, TODO);
	tu_ingest_all(c, a);
	send(c, b, &put, 1);
	tu_ingest_all(d, b);
	send(d, a, &del, 1);
	tu_ingest_all(a, b);
	tu_ingest_all(b, a);
	for (int i = 0; i < 4; i++)
		expect_q(f->db[i], "SELECT count(*) FROM todo", "0");
	expect_same_dump(c, d);
}

/* A delete and a put with the same HLC: the stamp order (author key, then
 * id) decides, the same way everywhere. */
static void test_tables_delete_and_put_with_equal_timestamps(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO), *b = dev(f, 1, TODO);
	weft_id ia = del1(a, "todo", K("x"));
	weft_id ib = set1(b, "todo", K("x"), "title", K("put"));
	assert_int_equal(tu_event_hlc(a, &ia), tu_event_hlc(b, &ib));
	int put_wins = memcmp(weft_db_public_key(b), weft_db_public_key(a), 32) > 0;
	tu_ingest_all(a, b);
	tu_ingest_all(b, a);
	expect_q(a, "SELECT count(*) FROM todo", put_wins ? "1" : "0");
	expect_same_dump(a, b);
}

static void test_tables_revive_after_delete_keeps_only_newer_columns(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO), *b = dev(f, 1, TODO);
	weft_txn *t;
	tu_ok(a, weft_txn_begin(&t, a, "home", NULL));
	tu_ok(a, weft_txn_set(t, "todo", K("x"), "title", K("old title")));
	tu_ok(a, weft_txn_set(t, "todo", K("x"), "done", weft_int(1)));
	tu_ok(a, weft_txn_set(t, "todo", K("x"), "note", K("old note")));
	tu_ok(a, weft_txn_set(t, "todo", K("x"), "owner", K("ann")));
	tu_ok(a, weft_txn_incr(t, "todo", K("x"), "votes", 5));
	tu_ok(a, weft_txn_commit(NULL, t));
	f->clock[1].now_ms = T0 + 50; /* b writes a column before the delete */
	set1(b, "todo", K("x"), "note", K("b's note, older than the delete"));
	f->clock[0].now_ms = T0 + 100;
	del1(a, "todo", K("x"));
	expect_q(a, "SELECT count(*) FROM todo", "0");
	f->clock[0].now_ms = T0 + 200;
	set1(a, "todo", K("x"), "title", K("new title"));
	ROW(a, "x", "'x'|'new title'|0|NULL|'none'|NULL");
	tu_ingest_all(a, b);
	tu_ingest_all(b, a);
	ROW(a, "x", "'x'|'new title'|0|NULL|'none'|NULL");
	ROW(b, "x", "'x'|'new title'|0|NULL|'none'|NULL");
	/* Deleting twice is one tombstone; a write after both revives again. */
	f->clock[0].now_ms = T0 + 300;
	del1(a, "todo", K("x"));
	del1(a, "todo", K("x"));
	incr1(a, "todo", K("x"), "votes", 2);
	ROW(a, "x", "'x'|NULL|0|2|'none'|NULL");
}

/* ------------------------------------------------------------ counters */

static void test_tables_increments_from_two_devices_are_summed(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO), *b = dev(f, 1, TODO);
	incr1(a, "todo", K("x"), "votes", 2);
	incr1(b, "todo", K("x"), "votes", 3); /* same stamp as a's first: both count */
	f->clock[0].now_ms = T0 + 10;
	incr1(a, "todo", K("x"), "votes", -1);
	f->clock[1].now_ms = T0 + 5;
	incr1(b, "todo", K("x"), "votes", 10);
	expect_q(a, "SELECT votes FROM todo", "1");
	expect_q(b, "SELECT votes FROM todo", "13");
	weft_db *c = dev(f, 2, TODO);
	tu_ingest_all(c, b);
	tu_ingest_all(c, a);
	tu_ingest_all(a, b);
	tu_ingest_all(b, a);
	for (int i = 0; i < 3; i++)
		expect_q(f->db[i], "SELECT votes FROM todo", "14");
	/* Receiving an increment again changes nothing. */
	tu_ingest_all(c, a);
	expect_q(c, "SELECT votes FROM todo", "14");
}

static void test_tables_counter_after_delete_counts_only_newer_increments(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO), *b = dev(f, 1, TODO);
	incr1(a, "todo", K("x"), "votes", 5);
	f->clock[1].now_ms = T0 + 50;
	incr1(b, "todo", K("x"), "votes", 100); /* before the delete: does not count */
	f->clock[0].now_ms = T0 + 100;
	del1(a, "todo", K("x"));
	f->clock[0].now_ms = T0 + 200;
	incr1(a, "todo", K("x"), "votes", 2);
	f->clock[1].now_ms = T0 + 300;
	incr1(b, "todo", K("x"), "votes", 1); /* after: counts */
	tu_ingest_all(a, b);
	tu_ingest_all(b, a);
	expect_q(a, "SELECT votes, title, done FROM todo", "3|NULL|0");
	expect_same_dump(a, b);
}

static void test_tables_put_resets_a_counter(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO), *b = dev(f, 1, TODO);
	incr1(a, "todo", K("x"), "votes", 5);
	f->clock[1].now_ms = T0 + 50;
	incr1(b, "todo", K("x"), "votes", 1000); /* older than the put: lost */
	f->clock[0].now_ms = T0 + 100;
	set1(a, "todo", K("x"), "votes", weft_int(10));
	f->clock[0].now_ms = T0 + 200;
	incr1(a, "todo", K("x"), "votes", 1);
	f->clock[1].now_ms = T0 + 300;
	incr1(b, "todo", K("x"), "votes", 2);
	tu_ingest_all(a, b);
	tu_ingest_all(b, a);
	expect_q(a, "SELECT votes FROM todo", "13");
	expect_q(b, "SELECT votes FROM todo", "13");
	/* A put of NULL resets the counter to nothing; increments start at 0. */
	f->clock[0].now_ms = T0 + 400;
	set1(a, "todo", K("x"), "votes", weft_null());
	expect_q(a, "SELECT votes FROM todo", "NULL");
	incr1(a, "todo", K("x"), "votes", 4);
	expect_q(a, "SELECT votes FROM todo", "4");
	/* A put of a non-integer is a base of 0 for later increments. */
	set1(a, "todo", K("x"), "votes", weft_real(2.5));
	expect_q(a, "SELECT votes FROM todo", "r:2.5");
	incr1(a, "todo", K("x"), "votes", 1);
	expect_q(a, "SELECT votes FROM todo", "1");
}

static void test_tables_counter_starts_at_its_default_and_wraps(void **state)
{
	fixture *f = *state;
	const char *ddl = "CREATE TABLE stock(sku TEXT PRIMARY KEY, n INTEGER NOT NULL DEFAULT 100, "
	                  "m INTEGER DEFAULT 'not a number', w INTEGER)";
	weft_db *a = dev(f, 0, ddl);
	incr1(a, "stock", K("s1"), "n", -1);
	incr1(a, "stock", K("s1"), "m", 3);
	expect_q(a, "SELECT n, m, w FROM stock", "99|3|NULL");
	incr1(a, "stock", K("s1"), "w", INT64_MAX);
	incr1(a, "stock", K("s1"), "w", 1);
	expect_q(a, "SELECT w FROM stock", "-9223372036854775808"); /* sums wrap modulo 2^64 */
	incr1(a, "stock", K("s1"), "w", -1);
	expect_q(a, "SELECT w FROM stock", "9223372036854775807");
	/* After a delete the counter starts at its default again. */
	del1(a, "stock", K("s1"));
	incr1(a, "stock", K("s1"), "n", 5);
	expect_q(a, "SELECT n, m, w FROM stock", "105|'not a number'|NULL");
}

/* ------------------------------------------------- schema evolution */

static void test_tables_unknown_column_appears_when_declared(void **state)
{
	fixture *f = *state;
	const char *v2 = "CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT, prio INTEGER DEFAULT 3)";
	weft_db *a = dev(f, 0, v2);
	weft_db *b = dev(f, 1, "CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT)");
	weft_txn *t;
	tu_ok(a, weft_txn_begin(&t, a, "home", NULL));
	tu_ok(a, weft_txn_set(t, "todo", K("x"), "title", K("milk")));
	tu_ok(a, weft_txn_set(t, "todo", K("x"), "prio", weft_int(1)));
	tu_ok(a, weft_txn_commit(NULL, t));
	incr1(a, "todo", K("y"), "prio", 5); /* a row b knows only by an unknown column */
	/* b cannot write the column it does not know... */
	tu_ok(b, weft_txn_begin(&t, b, "home", NULL));
	tu_expect(b, weft_txn_set(t, "todo", K("x"), "prio", weft_int(9)), WEFT_EINVAL);
	assert_non_null(strstr(weft_errmsg(b), "prio"));
	weft_txn_abort(t);
	/* ...but keeps it in its log. */
	tu_ingest_all(b, a);
	expect_q(b, "SELECT * FROM todo ORDER BY id", "'x'|'milk'\n'y'|NULL");
	f->clock[1].now_ms = T0 + 10;
	set1(b, "todo", K("x"), "title", K("oat milk"));
	tu_ok(b, weft_schema_define(b, v2));
	/* y's counter: its DEFAULT 3 plus the increment of 5. */
	expect_q(b, "SELECT * FROM todo ORDER BY id", "'x'|'oat milk'|1\n'y'|NULL|8");
	tu_ingest_all(a, b);
	expect_same_dump(a, b);
	/* And it goes away again, data kept, when a schema leaves it out. */
	tu_ok(b, weft_schema_define(b, "CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT)"));
	expect_q(b, "SELECT * FROM todo ORDER BY id", "'x'|'oat milk'\n'y'|NULL");
	tu_ok(b, weft_schema_define(b, v2));
	expect_q(b, "SELECT * FROM todo ORDER BY id", "'x'|'oat milk'|1\n'y'|NULL|8");
}

static void test_tables_unknown_table_appears_when_declared(void **state)
{
	fixture *f = *state;
	const char *both = TODO "; CREATE TABLE tag(name TEXT PRIMARY KEY, n INTEGER, code TEXT UNIQUE)";
	weft_db *a = dev(f, 0, both), *b = dev(f, 1, TODO);
	set1(a, "tag", K("red"), "n", weft_int(1));
	set1(a, "tag", K("red"), "code", K("R"));
	set1(a, "tag", K("rose"), "code", K("R")); /* a later claim: loses */
	incr1(a, "tag", K("blue"), "n", 2);
	del1(a, "tag", K("blue"));
	incr1(a, "tag", K("blue"), "n", 7);
	set1(a, "todo", K("x"), "title", K("known"));
	tu_ingest_all(b, a);
	expect_q(b, "SELECT count(*) FROM sqlite_schema WHERE name = 'tag'", "0");
	expect_q(b, "SELECT title FROM todo", "'known'");
	expect_conflicts(b, "");
	tu_ok(b, weft_schema_define(b, both));
	expect_q(b, "SELECT * FROM tag ORDER BY name", "'blue'|7|NULL\n'red'|1|'R'\n'rose'|NULL|NULL");
	expect_q(b, "SELECT count(*) FROM weft_conflict", "1");
	expect_same_dump(a, b);
	/* Events for a table that appears only later are applied on arrival
	 * once it is declared. */
	set1(a, "tag", K("green"), "n", weft_int(3));
	tu_ingest_all(b, a);
	expect_q(b, "SELECT n FROM tag WHERE name = 'green'", "3");
}

static void test_tables_type_change_follows_sqlite_affinity(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, "CREATE TABLE m(k INTEGER PRIMARY KEY, v TEXT, r TEXT)");
	set1(a, "m", weft_int(1), "v", K("42"));
	set1(a, "m", weft_int(2), "v", K("abc"));
	set1(a, "m", weft_int(3), "v", weft_int(7));
	set1(a, "m", weft_int(4), "v", K("2.5"));
	set1(a, "m", weft_int(5), "v", weft_real(3.0));
	set1(a, "m", weft_int(6), "v", weft_blob("\x01", 1));
	set1(a, "m", weft_int(1), "r", weft_int(10));
	/* As TEXT: numbers become text (SQLite's TEXT affinity). */
	expect_q(a, "SELECT k, v, typeof(v) FROM m ORDER BY k",
	         "1|'42'|'text'\n2|'abc'|'text'\n3|'7'|'text'\n4|'2.5'|'text'\n5|'3.0'|'text'\n6|x'01'|'blob'");
	tu_ok(a, weft_schema_define(a, "CREATE TABLE m(k INTEGER PRIMARY KEY, v INTEGER, r REAL)"));
	/* Re-derived from the log as written, then INTEGER affinity. */
	expect_q(a, "SELECT k, v, typeof(v) FROM m ORDER BY k",
	         "1|42|'integer'\n2|'abc'|'text'\n3|7|'integer'\n4|r:2.5|'real'\n5|3|'integer'\n6|x'01'|'blob'");
	expect_q(a, "SELECT r FROM m WHERE k = 1", "r:10");
	tu_ok(a, weft_schema_define(a, "CREATE TABLE m(k INTEGER PRIMARY KEY, v BLOB, r TEXT)"));
	expect_q(a, "SELECT k, v FROM m ORDER BY k",
	         "1|'42'\n2|'abc'\n3|7\n4|'2.5'\n5|r:3\n6|x'01'"); /* BLOB: values as written */
	/* A remote store with the other declaration converges on the same
	 * tables once it declares the same schema. */
	weft_db *b = dev(f, 1, "CREATE TABLE m(k INTEGER PRIMARY KEY, v INTEGER, r REAL)");
	tu_ingest_all(b, a);
	tu_ok(b, weft_schema_define(b, "CREATE TABLE m(k INTEGER PRIMARY KEY, v BLOB, r TEXT)"));
	expect_same_dump(a, b);
}

static void test_tables_key_of_another_type_never_applies(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, "CREATE TABLE t(k TEXT PRIMARY KEY, v TEXT)");
	weft_db *b = dev(f, 1, "CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT)");
	set1(a, "t", K("1"), "v", K("text key"));
	set1(b, "t", weft_int(1), "v", K("integer key"));
	/* weft_txn refuses a key of the wrong type. */
	weft_txn *t;
	tu_ok(a, weft_txn_begin(&t, a, "home", NULL));
	tu_expect(a, weft_txn_set(t, "t", weft_int(1), "v", K("x")), WEFT_EINVAL);
	assert_non_null(strstr(weft_errmsg(a), "TEXT"));
	tu_expect(a, weft_txn_commit(NULL, t), WEFT_EINVAL); /* the failed op poisons the txn */
	tu_ingest_all(a, b);
	tu_ingest_all(b, a);
	expect_q(a, "SELECT * FROM t", "'1'|'text key'");
	expect_q(b, "SELECT * FROM t", "1|'integer key'");
	/* Declaring the other type swaps which rows exist. */
	tu_ok(a, weft_schema_define(a, "CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT)"));
	expect_same_dump(a, b);
	/* A blob key never names a text row either. */
	weft_db *c = dev(f, 2, "CREATE TABLE t(k BLOB PRIMARY KEY, v TEXT)");
	tu_ingest_all(c, a);
	expect_q(c, "SELECT count(*) FROM t", "0");
	set1(c, "t", weft_blob("1", 1), "v", K("blob key"));
	expect_q(c, "SELECT * FROM t", "x'31'|'blob key'");
}

/* ---------------------------------------------- defaults and NOT NULL */

static void test_tables_not_null_columns_are_filled(void **state)
{
	fixture *f = *state;
	const char *strict = "CREATE TABLE n(k INTEGER PRIMARY KEY, i INTEGER NOT NULL, r REAL NOT NULL, "
	                     "s TEXT NOT NULL, b BLOB NOT NULL, d INTEGER NOT NULL DEFAULT 5, x TEXT)";
	weft_db *a = dev(f, 0, strict);
	set1(a, "n", weft_int(1), "x", K("only x"));
	expect_q(a, "SELECT * FROM n", "1|0|r:0|''|x''|5|'only x'");
	expect_q(a, "SELECT typeof(i), typeof(r), typeof(s), typeof(b) FROM n", "'integer'|'real'|'text'|'blob'");
	/* weft_txn refuses NULL in a NOT NULL column... */
	weft_txn *t;
	tu_ok(a, weft_txn_begin(&t, a, "home", NULL));
	tu_expect(a, weft_txn_set(t, "n", weft_int(1), "i", weft_null()), WEFT_EINVAL);
	assert_non_null(strstr(weft_errmsg(a), "NOT NULL"));
	weft_txn_abort(t);
	/* ...but a device with another schema may have written one. */
	weft_db *b = dev(f, 1, "CREATE TABLE n(k INTEGER PRIMARY KEY, i INTEGER, r REAL, s TEXT, b BLOB, "
	                       "d INTEGER, x TEXT)");
	f->clock[1].now_ms = T0 + 10;
	weft_txn_begin(&t, b, "home", NULL);
	tu_ok(b, weft_txn_set(t, "n", weft_int(1), "i", weft_null()));
	tu_ok(b, weft_txn_set(t, "n", weft_int(1), "d", weft_null()));
	tu_ok(b, weft_txn_set(t, "n", weft_int(1), "s", weft_null()));
	tu_ok(b, weft_txn_commit(NULL, t));
	tu_ingest_all(a, b);
	expect_q(a, "SELECT * FROM n", "1|0|r:0|''|x''|5|'only x'");
	expect_q(b, "SELECT * FROM n", "1|NULL|NULL|NULL|NULL|NULL|NULL");
	tu_ingest_all(b, a);
	expect_q(b, "SELECT * FROM n", "1|NULL|NULL|NULL|NULL|NULL|'only x'");
	tu_ok(b, weft_schema_define(b, strict));
	expect_same_dump(a, b);
}

static void test_tables_defaults_fill_unwritten_columns(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, "CREATE TABLE d(k INTEGER PRIMARY KEY, i INTEGER DEFAULT -7, r REAL DEFAULT 2.5, "
	                       "s TEXT DEFAULT 'it''s', b BLOB DEFAULT X'CAFE', n TEXT DEFAULT NULL, "
	                       "z INTEGER, x TEXT)");
	set1(a, "d", weft_int(1), "x", K("x"));
	expect_q(a, "SELECT * FROM d", "1|-7|r:2.5|'it''s'|x'cafe'|NULL|NULL|'x'");
	/* An explicit NULL is a value: it replaces the default. */
	set1(a, "d", weft_int(1), "i", weft_null());
	set1(a, "d", weft_int(1), "s", K("set"));
	expect_q(a, "SELECT i, s FROM d", "NULL|'set'");
	/* A new DEFAULT applies to rows derived after the schema change. */
	tu_ok(a, weft_schema_define(a, "CREATE TABLE d(k INTEGER PRIMARY KEY, i INTEGER DEFAULT -7, "
	                               "r REAL DEFAULT 2.5, s TEXT DEFAULT 'it''s', b BLOB DEFAULT X'CAFE', "
	                               "n TEXT DEFAULT NULL, z INTEGER DEFAULT 9, x TEXT)"));
	expect_q(a, "SELECT i, s, z FROM d", "NULL|'set'|9");
}

/* ------------------------------------------------------------- unique */

static void test_tables_unique_earliest_claim_wins_everywhere(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO), *b = dev(f, 1, TODO);
	f->clock[0].now_ms = T0 + 10;
	set1(a, "todo", K("a1"), "owner", K("ann"));
	f->clock[1].now_ms = T0 + 20;
	weft_id lost = set1(b, "todo", K("b1"), "owner", K("ann"));
	set1(b, "todo", K("b1"), "title", K("b's row"));
	expect_q(b, "SELECT id, owner FROM todo", "'b1'|'ann'"); /* b alone: it holds the value */
	weft_db *c = dev(f, 2, TODO), *d = dev(f, 3, TODO);
	tu_ingest_all(c, a);
	tu_ingest_all(c, b);
	tu_ingest_all(d, b);
	tu_ingest_all(d, a);
	tu_ingest_all(a, b);
	tu_ingest_all(b, a);
	char want[256], h[65];
	snprintf(want, sizeof(want), "todo.owner='ann' winner='a1' loser='b1' event=%.8s;", weft_id_to_hex(h, &lost));
	for (int i = 0; i < 4; i++) {
		expect_q(f->db[i], "SELECT id, title, owner FROM todo ORDER BY id", "'a1'|NULL|'ann'\n'b1'|'b''s row'|NULL");
		expect_conflicts(f->db[i], want);
	}
	expect_same_dump(c, d);
	/* The app resolves the conflict by writing a new value. */
	set1(b, "todo", K("b1"), "owner", K("bob"));
	expect_q(b, "SELECT id, owner FROM todo ORDER BY id", "'a1'|'ann'\n'b1'|'bob'");
	expect_conflicts(b, "");
}

static void test_tables_unique_claims_with_equal_timestamps(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO), *b = dev(f, 1, TODO);
	int a_key_larger = memcmp(weft_db_public_key(a), weft_db_public_key(b), 32) > 0;
	/* Claims rank by (HLC, event id), not by author: find a value where the
	 * two orders disagree. */
	char value[16];
	weft_id ia, ib;
	for (int n = 0;; n++) {
		assert_true(n < 64);
		snprintf(value, sizeof(value), "v%d", n);
		ia = set1(a, "todo", K("a1"), "owner", K(value));
		ib = set1(b, "todo", K("b1"), "owner", K(value));
		assert_int_equal(tu_event_hlc(a, &ia), tu_event_hlc(b, &ib));
		if ((memcmp(ia.bytes, ib.bytes, 32) < 0) == a_key_larger)
			break;
	}
	const char *want = memcmp(ia.bytes, ib.bytes, 32) < 0 ? "'a1'" : "'b1'";
	tu_ingest_all(a, b);
	tu_ingest_all(b, a);
	char sql[80];
	snprintf(sql, sizeof(sql), "SELECT id FROM todo WHERE owner = '%s'", value);
	expect_q(a, sql, want);
	expect_q(b, sql, want);
	expect_same_dump(a, b);
}

static void test_tables_unique_loser_gets_value_when_winner_lets_go(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO), *b = dev(f, 1, TODO);
	f->clock[0].now_ms = T0 + 10;
	set1(a, "todo", K("a1"), "owner", K("ann"));
	f->clock[1].now_ms = T0 + 20;
	set1(b, "todo", K("b1"), "owner", K("ann"));
	f->clock[1].now_ms = T0 + 30;
	set1(b, "todo", K("b2"), "owner", K("ann"));
	tu_ingest_all(a, b);
	tu_ingest_all(b, a);
	expect_q(a, "SELECT id, owner FROM todo ORDER BY id", "'a1'|'ann'\n'b1'|NULL\n'b2'|NULL");
	conflicts c = {0, ""};
	tu_ok(a, weft_db_conflicts(a, collect_conflict, &c));
	assert_int_equal(c.n, 2);
	/* The winner changes its value: the next earliest claim gets it. */
	f->clock[0].now_ms = T0 + 100;
	set1(a, "todo", K("a1"), "owner", K("amy"));
	expect_q(a, "SELECT id, owner FROM todo ORDER BY id", "'a1'|'amy'\n'b1'|'ann'\n'b2'|NULL");
	c.n = 0;
	c.text[0] = '\0';
	tu_ok(a, weft_db_conflicts(a, collect_conflict, &c));
	assert_int_equal(c.n, 1);
	assert_non_null(strstr(c.text, "winner='b1' loser='b2'"));
	/* The new winner is deleted: the last claimant gets it. */
	del1(a, "todo", K("b1"));
	expect_q(a, "SELECT id, owner FROM todo ORDER BY id", "'a1'|'amy'\n'b2'|'ann'");
	expect_conflicts(a, "");
	/* Clearing the value (NULL) also lets go. */
	set1(a, "todo", K("a2"), "owner", K("amy"));
	expect_q(a, "SELECT owner FROM todo WHERE id = 'a2'", "NULL");
	set1(a, "todo", K("a1"), "owner", weft_null());
	expect_q(a, "SELECT id, owner FROM todo ORDER BY id", "'a1'|NULL\n'a2'|'amy'\n'b2'|'ann'");
	tu_ingest_all(b, a);
	expect_same_dump(a, b);
}

/* ------------------------------------------------------- idempotency */

static void test_tables_idempotency_earliest_event_takes_effect_everywhere(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO), *b = dev(f, 1, TODO);
	weft_txn *t;
	weft_id ia, ib, again;
	f->clock[0].now_ms = T0 + 10;
	tu_ok(a, weft_txn_begin(&t, a, "home", "order-17"));
	tu_ok(a, weft_txn_incr(t, "todo", K("x"), "votes", 1));
	tu_ok(a, weft_txn_set(t, "todo", K("x"), "title", K("from a")));
	tu_ok(a, weft_txn_commit(&ia, t));
	f->clock[1].now_ms = T0 + 20; /* b submits the same operation offline, later */
	tu_ok(b, weft_txn_begin(&t, b, "home", "order-17"));
	tu_ok(b, weft_txn_incr(t, "todo", K("x"), "votes", 1));
	tu_ok(b, weft_txn_set(t, "todo", K("x"), "title", K("from b")));
	tu_ok(b, weft_txn_set(t, "todo", K("y"), "title", K("only in b's copy")));
	tu_ok(b, weft_txn_commit(&ib, t));
	expect_q(b, "SELECT count(*) FROM todo", "2");
	/* A double submit on one device writes nothing. */
	tu_ok(a, weft_txn_begin(&t, a, "home", "order-17"));
	tu_ok(a, weft_txn_incr(t, "todo", K("x"), "votes", 1));
	tu_expect(a, weft_txn_commit(&again, t), WEFT_DUPLICATE);
	assert_memory_equal(again.bytes, ia.bytes, 32);

	weft_db *c = dev(f, 2, TODO), *d = dev(f, 3, TODO);
	send(c, a, &ia, 1);
	send(c, b, &ib, 1); /* the later one arrives second */
	send(d, b, &ib, 1);
	send(d, a, &ia, 1); /* the earlier one arrives second and displaces it */
	tu_ingest_all(a, b);
	tu_ingest_all(b, a);
	for (int i = 0; i < 4; i++) {
		weft_db *db = f->db[i];
		expect_q(db, "SELECT id, title, votes FROM todo", "'x'|'from a'|1");
		dups du;
		memset(&du, 0, sizeof(du));
		tu_ok(db, weft_db_duplicates(db, collect_dup, &du));
		assert_int_equal(du.n, 1);
		assert_memory_equal(du.event[0].bytes, ib.bytes, 32);
		assert_memory_equal(du.winner[0].bytes, ia.bytes, 32);
		assert_string_equal(du.scope[0], "home");
		assert_string_equal(du.key[0], "order-17");
	}
	expect_same_dump(c, d);
	/* b now knows the key too. */
	tu_ok(b, weft_txn_begin(&t, b, "home", "order-17"));
	tu_ok(b, weft_txn_incr(t, "todo", K("x"), "votes", 1));
	tu_expect(b, weft_txn_commit(&again, t), WEFT_DUPLICATE);
	assert_memory_equal(again.bytes, ia.bytes, 32);
}

/* Events that share an HLC and an idempotency key, arriving largest id
 * first, between other events: the smallest id takes effect, incrementally
 * and after a rebuild (which reads tied events apart from the others). */
static void test_tables_rebuild_applies_tied_events_in_id_order(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO), *b = dev(f, 1, TODO), *c = dev(f, 2, TODO);
	weft_txn *t;
	weft_id id[3];
	weft_db *src[3] = {a, b, c};
	for (int i = 0; i < 3; i++) {
		f->clock[i].now_ms = T0 + 10;
		tu_ok(src[i], weft_txn_begin(&t, src[i], "home", "order-9"));
		tu_ok(src[i], weft_txn_incr(t, "todo", K("x"), "votes", 1));
		tu_ok(src[i], weft_txn_set(t, "todo", K("x"), "note", K(i == 0 ? "a" : i == 1 ? "b" : "c")));
		tu_ok(src[i], weft_txn_commit(&id[i], t));
	}
	assert_int_equal(tu_event_hlc(a, &id[0]), tu_event_hlc(b, &id[1]));
	assert_int_equal(tu_event_hlc(a, &id[0]), tu_event_hlc(c, &id[2]));
	int lo = 0, hi = 0;
	for (int i = 1; i < 3; i++) {
		if (memcmp(id[i].bytes, id[lo].bytes, 32) < 0)
			lo = i;
		if (memcmp(id[i].bytes, id[hi].bytes, 32) > 0)
			hi = i;
	}
	weft_db *d = dev(f, 3, TODO);
	f->clock[3].now_ms = T0;
	set1(d, "todo", K("before"), "title", K("first"));
	/* Largest id first: the arrival order is not the id order. */
	send(d, src[hi], &id[hi], 1);
	send(d, src[3 - lo - hi], &id[3 - lo - hi], 1);
	send(d, src[lo], &id[lo], 1);
	f->clock[3].now_ms = T0 + 20;
	set1(d, "todo", K("x"), "title", K("after"));
	char want[64];
	snprintf(want, sizeof(want), "'first'|NULL|'none'\n'after'|1|'%c'", "abc"[lo]);
	const char *q = "SELECT title, votes, note FROM todo ORDER BY id";
	expect_q(d, q, want);
	tu_ok(d, weft_db_rebuild(d, NULL, NULL));
	expect_q(d, q, want);
	/* teardown compares each store with its rebuild */
}

/* Three events with one key arriving latest-first: each arrival displaces
 * the previous one, and all duplicates point at the final winner. */
static void test_tables_idempotency_chain_of_displacements(void **state)
{
	fixture *f = *state;
	weft_db *dv[3];
	weft_id ids[3];
	for (int i = 0; i < 3; i++) {
		dv[i] = dev(f, i, TODO);
		f->clock[i].now_ms = T0 + 10 * (uint64_t)(i + 1);
		weft_txn *t;
		tu_ok(dv[i], weft_txn_begin(&t, dv[i], "home", "k"));
		tu_ok(dv[i], weft_txn_incr(t, "todo", K("x"), "votes", 1 << i));
		tu_ok(dv[i], weft_txn_commit(&ids[i], t));
	}
	weft_db *d = dev(f, 3, TODO);
	send(d, dv[2], &ids[2], 1);
	expect_q(d, "SELECT votes FROM todo", "4");
	send(d, dv[1], &ids[1], 1);
	expect_q(d, "SELECT votes FROM todo", "2");
	send(d, dv[0], &ids[0], 1);
	expect_q(d, "SELECT votes FROM todo", "1");
	dups du;
	memset(&du, 0, sizeof(du));
	tu_ok(d, weft_db_duplicates(d, collect_dup, &du));
	assert_int_equal(du.n, 2);
	for (int i = 0; i < 2; i++) {
		assert_memory_equal(du.event[i].bytes, ids[i + 1].bytes, 32);
		assert_memory_equal(du.winner[i].bytes, ids[0].bytes, 32);
	}
	for (int i = 0; i < 3; i++)
		tu_ingest_all(dv[i], d);
	for (int i = 0; i < 3; i++)
		expect_same_dump(dv[i], d);
}

/* An effective event whose payload was erased since (crypto-shredding)
 * is still withdrawn when an earlier event with its key arrives. */
static void test_tables_idempotency_displaces_an_erased_event(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO), *b = dev(f, 1, TODO);
	weft_txn *t;
	weft_id ia, ib;
	f->clock[1].now_ms = T0 + 10;
	tu_ok(b, weft_txn_begin(&t, b, "home", "k"));
	tu_ok(b, weft_txn_set(t, "todo", K("x"), "title", K("from b, earlier")));
	tu_ok(b, weft_txn_commit(&ib, t));
	f->clock[0].now_ms = T0 + 20;
	tu_ok(a, weft_txn_begin(&t, a, "home", "k"));
	tu_ok(a, weft_txn_set(t, "todo", K("y"), "title", K("from a, later")));
	tu_ok(a, weft_txn_incr(t, "todo", K("x"), "votes", 5));
	tu_ok(a, weft_txn_commit(&ia, t));
	expect_q(a, "SELECT id, title, votes FROM todo ORDER BY id", "'x'|NULL|5\n'y'|'from a, later'|NULL");
	/* Erase a's payload behind weft's back (weft has no call for it yet). */
	erase_payload(f, "d0.db", &ia);
	send(a, b, &ib, 1);
	expect_q(a, "SELECT id, title, votes FROM todo ORDER BY id", "'x'|'from b, earlier'|NULL");
	dups du;
	memset(&du, 0, sizeof(du));
	tu_ok(a, weft_db_duplicates(a, collect_dup, &du));
	assert_int_equal(du.n, 1);
	assert_memory_equal(du.event[0].bytes, ia.bytes, 32);
}

static void test_tables_idempotency_keys_are_per_scope(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO), *b = dev(f, 1, TODO);
	weft_txn *t;
	tu_ok(a, weft_txn_begin(&t, a, "home", "k"));
	tu_ok(a, weft_txn_incr(t, "todo", K("x"), "votes", 1));
	tu_ok(a, weft_txn_commit(NULL, t));
	tu_ok(b, weft_txn_begin(&t, b, "work", "k"));
	tu_ok(b, weft_txn_incr(t, "todo", K("x"), "votes", 10));
	tu_ok(b, weft_txn_commit(NULL, t));
	tu_ingest_all(a, b);
	expect_q(a, "SELECT votes FROM todo", "11");
	dups du;
	memset(&du, 0, sizeof(du));
	tu_ok(a, weft_db_duplicates(a, collect_dup, &du));
	assert_int_equal(du.n, 0);
}

/* ------------------------------------------------ malformed and invalid */

static void test_tables_malformed_payloads_have_no_effect(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO);
	set1(a, "todo", K("x"), "title", K("before"));
	char *before = tu_dump(a);
	pb good;
	pb_init(&good);
	pb_put(&good, "todo", K("x"), "title", K("bad"));
	pb_done(&good);
	/* Every strict prefix of a good payload is malformed. */
	for (size_t n = 0; n < good.n; n++)
		append_raw(a, "home", NULL, good.b, n);
	/* Trailing bytes, a wrong version, zero operations, bad kinds. */
	unsigned char buf[4200];
	memcpy(buf, good.b, good.n);
	buf[good.n] = 0;
	append_raw(a, "home", NULL, buf, good.n + 1);
	buf[0] = 2;
	append_raw(a, "home", NULL, buf, good.n);
	memcpy(buf, good.b, good.n);
	codec_put_u32(buf + 1, 0);
	append_raw(a, "home", NULL, buf, good.n);
	codec_put_u32(buf + 1, 2); /* claims two operations, holds one */
	append_raw(a, "home", NULL, buf, good.n);
	memcpy(buf, good.b, good.n);
	buf[5] = 3; /* operation kind 3 */
	append_raw(a, "home", NULL, buf, good.n);
	/* A table name in capitals, a reserved name, a REAL key, a NaN value,
	 * a value of an unknown type. Each event holds one good operation too:
	 * a bad payload has no effect at all. */
	const char *tables[] = {"Todo", "weft_op", "todo"};
	for (int i = 0; i < 5; i++) {
		pb p;
		pb_init(&p);
		pb_put(&p, "todo", K("x"), "done", weft_int(1));
		if (i < 2)
			pb_put(&p, tables[i], K("x"), "title", K("bad"));
		else if (i == 2)
			pb_put(&p, "todo", weft_real(1.0), "title", K("bad"));
		else if (i == 3)
			pb_put(&p, "todo", K("x"), "title", weft_real(NAN));
		else {
			pb_put(&p, "todo", K("x"), "title", weft_int(5));
			p.b[p.n - 9] = 9;
		}
		pb_done(&p);
		append_raw(a, "home", NULL, p.b, p.n);
	}
	/* A malformed event with an idempotency key does not take the key. */
	append_raw(a, "home", "key-1", good.b, good.n - 1);
	char *after = tu_dump(a);
	assert_string_equal(before, after);
	free(after);
	free(before);
	weft_db *b = dev(f, 1, TODO);
	tu_ingest_all(b, a);
	expect_same_dump(a, b);
	/* Events of other kinds are not row operations. */
	weft_id id;
	tu_ok(a, weft_db_append(&id, a, "home", "note", NULL, good.b, good.n));
	expect_q(a, "SELECT title, done FROM todo", "'before'|0");
}

/* The example of docs/MERGE.md section 7, byte for byte. */
static void test_tables_payload_bytes_match_the_documentation(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO);
	weft_id id = set1(a, "todo", K("a"), "title", K("milk"));
	static const unsigned char want[] = {
		0x01, 0x00, 0x00, 0x00, 0x01,                   /* version 1, one operation */
		0x00, 0x04, 't', 'o', 'd', 'o',                 /* put, table "todo" */
		0x03, 0x00, 0x00, 0x00, 0x01, 'a',              /* pk TEXT 'a' */
		0x00, 0x01, 0x05, 't', 'i', 't', 'l', 'e',      /* one column, "title" */
		0x03, 0x00, 0x00, 0x00, 0x04, 'm', 'i', 'l', 'k' /* TEXT 'milk' */
	};
	weft_event *ev;
	tu_ok(a, weft_db_get(&ev, a, &id));
	assert_string_equal(weft_event_kind(ev), "weft.rows");
	size_t len;
	const unsigned char *p = weft_event_payload(ev, &len);
	assert_int_equal(len, sizeof(want));
	assert_memory_equal(p, want, sizeof(want));
	weft_event_free(ev);
	/* Consecutive sets on one row share one put; other operations follow. */
	weft_txn *t;
	tu_ok(a, weft_txn_begin(&t, a, "home", NULL));
	tu_ok(a, weft_txn_set(t, "todo", K("a"), "title", weft_int(-2)));
	tu_ok(a, weft_txn_set(t, "todo", K("a"), "note", weft_real(0.5)));
	tu_ok(a, weft_txn_incr(t, "todo", K("a"), "votes", -1));
	tu_ok(a, weft_txn_delete(t, "todo", K("b")));
	tu_ok(a, weft_txn_commit(&id, t));
	pb x;
	pb_init(&x);
	pb_byte(&x, ROWOP_PUT);
	pb_name(&x, "todo");
	pb_value(&x, K("a"));
	pb_byte(&x, 0);
	pb_byte(&x, 2);
	pb_name(&x, "title");
	pb_value(&x, weft_int(-2));
	pb_name(&x, "note");
	pb_value(&x, weft_real(0.5));
	x.nops++;
	pb_incr(&x, "todo", K("a"), "votes", -1);
	pb_del(&x, "todo", K("b"));
	pb_done(&x);
	tu_ok(a, weft_db_get(&ev, a, &id));
	p = weft_event_payload(ev, &len);
	assert_int_equal(len, x.n);
	assert_memory_equal(p, x.b, x.n);
	weft_event_free(ev);
}

static void test_tables_raw_operations_weft_txn_would_refuse(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO);
	pb p;
	pb_init(&p);
	pb_incr(&p, "todo", K("x"), "title", 5);   /* increment of a TEXT column */
	pb_put(&p, "todo", K("x"), "id", K("y"));  /* put of the key column: no effect */
	pb_put(&p, "todo", K("x"), "nope", K("?")); /* unknown column: kept */
	pb_put(&p, "todo", K("x"), "done", K("text in an INTEGER column"));
	pb_incr(&p, "todo", K("x"), "votes", 3);
	pb_incr(&p, "todo", K("x"), "votes", 4);
	pb_put(&p, "todo", K("z"), "title", K("gone"));
	pb_del(&p, "todo", K("z"));
	pb_done(&p);
	append_raw(a, "home", NULL, p.b, p.n);
	expect_q(a, "SELECT * FROM todo", "'x'|'5'|'text in an INTEGER column'|7|'none'|NULL");
}

static void test_tables_txn_refuses_invalid_operations(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO);
	weft_txn *t;
	tu_ok(a, weft_txn_begin(&t, a, "home", NULL));
	tu_expect(a, weft_txn_set(t, "nope", K("x"), "title", K("v")), WEFT_EINVAL);
	assert_non_null(strstr(weft_errmsg(a), "nope"));
	tu_expect(a, weft_txn_set(t, "todo", K("x"), "nope", K("v")), WEFT_EINVAL);
	tu_expect(a, weft_txn_set(t, "todo", K("x"), "id", K("v")), WEFT_EINVAL);
	tu_expect(a, weft_txn_set(t, "todo", K("x"), "title", weft_real(NAN)), WEFT_EINVAL);
	tu_expect(a, weft_txn_incr(t, "todo", K("x"), "title", 1), WEFT_EINVAL);
	tu_expect(a, weft_txn_delete(t, "weft_op", K("x")), WEFT_EINVAL);
	tu_expect(a, weft_txn_commit(NULL, t), WEFT_EINVAL);
	expect_q(a, "SELECT count(*) FROM weft_event", "0");
	tu_ok(a, weft_txn_begin(&t, a, "home", NULL));
	tu_expect(a, weft_txn_commit(NULL, t), WEFT_EINVAL); /* no operations */
	tu_expect(a, weft_txn_begin(&t, a, "bad scope", NULL), WEFT_EINVAL);
	tu_expect(a, weft_txn_begin(&t, a, "home", "bad key"), WEFT_EINVAL);
	/* Table and column names are case-insensitive, as in SQL. */
	tu_ok(a, weft_txn_begin(&t, a, "home", NULL));
	tu_ok(a, weft_txn_set(t, "TODO", K("x"), "Title", K("v")));
	tu_ok(a, weft_txn_commit(NULL, t));
	expect_q(a, "SELECT title FROM todo", "'v'");
	weft_txn_abort(NULL);
}

static int count_rows(int n, const char *const *names, const weft_value *v, void *payload)
{
	(void)n, (void)names, (void)v;
	++*(int *)payload;
	return 0;
}

static int stop_rows(int n, const char *const *names, const weft_value *v, void *payload)
{
	(void)n, (void)names, (void)v, (void)payload;
	return 1;
}

static void test_tables_query_refuses_writes_and_reports_errors(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO);
	set1(a, "todo", K("x"), "title", K("v"));
	int n = 0;
	tu_expect(a, weft_db_query(a, "DELETE FROM todo", count_rows, &n), WEFT_EPERM);
	tu_expect(a, weft_db_query(a, "UPDATE todo SET title = 'w'", count_rows, &n), WEFT_EPERM);
	tu_expect(a, weft_db_query(a, "INSERT INTO todo(id) VALUES ('y')", count_rows, &n), WEFT_EPERM);
	tu_expect(a, weft_db_query(a, "SELECT * FROM nope", count_rows, &n), WEFT_EINVAL);
	tu_expect(a, weft_db_query(a, "SELECT 1; DELETE FROM todo", count_rows, &n), WEFT_EINVAL);
	tu_expect(a, weft_db_query(a, "SELECT * FROM todo", stop_rows, &n), WEFT_EUSER);
	assert_int_equal(n, 0);
	tu_ok(a, weft_db_query(a, "SELECT * FROM todo", count_rows, &n));
	assert_int_equal(n, 1);
	expect_q(a, "SELECT title FROM todo", "'v'");
}

typedef struct blames {
	int n;
	char text[1024];
	weft_id title_event;
	uint64_t votes_contrib;
} blames;

static int collect_blame(const weft_blame *b, void *payload)
{
	blames *x = payload;
	if (strcmp(b->column, "title") == 0)
		x->title_event = b->event;
	if (strcmp(b->column, "votes") == 0)
		x->votes_contrib = b->contributions;
	x->n++;
	return 0;
}

static void test_tables_blame_names_the_writer(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO), *b = dev(f, 1, TODO);
	set1(a, "todo", K("x"), "title", K("a's"));
	f->clock[1].now_ms = T0 + 10;
	weft_id ib = set1(b, "todo", K("x"), "title", K("b's"));
	incr1(b, "todo", K("x"), "votes", 1);
	incr1(a, "todo", K("x"), "votes", 1);
	tu_ingest_all(a, b);
	blames x;
	memset(&x, 0, sizeof(x));
	tu_ok(a, weft_db_blame(a, "todo", K("x"), collect_blame, &x));
	assert_int_equal(x.n, 6);
	assert_memory_equal(x.title_event.bytes, ib.bytes, 32);
	assert_int_equal(x.votes_contrib, 2);
	tu_expect(a, weft_db_blame(a, "todo", K("nope"), collect_blame, &x), WEFT_ENOTFOUND);
	tu_expect(a, weft_db_blame(a, "nope", K("x"), collect_blame, &x), WEFT_ENOTFOUND);
}

/* ------------------------------------------------ incremental = rebuild */

typedef struct rng {
	uint64_t s;
} rng;

static uint32_t rnd(rng *r, uint32_t n)
{
	r->s = r->s * 6364136223846793005ull + 1442695040888963407ull;
	return (uint32_t)((r->s >> 33) % n);
}

static int progress(uint64_t done, uint64_t total, void *payload)
{
	uint64_t *last = payload;
	assert_true(done <= total);
	assert_true(done >= *last);
	*last = done;
	return 0;
}

static int stop_progress(uint64_t done, uint64_t total, void *payload)
{
	(void)done, (void)total, (void)payload;
	return 1;
}

static void test_tables_rebuild_equals_incremental(void **state)
{
	fixture *f = *state;
	const char *ddl = TODO "; CREATE TABLE kv(k INTEGER PRIMARY KEY, v BLOB, r REAL NOT NULL, u INTEGER UNIQUE)";
	for (int i = 0; i < 3; i++)
		dev(f, i, ddl);
	rng r = {12345};
	const char *keys[] = {"a", "b", "c", "d"};
	const char *owners[] = {"ann", "bob", "cy"};
	for (int step = 0; step < 300; step++) {
		int i = (int)rnd(&r, 3);
		weft_db *db = f->db[i];
		f->clock[i].now_ms += rnd(&r, 3);
		char idem[16];
		snprintf(idem, sizeof(idem), "k%u", rnd(&r, 20));
		weft_txn *t;
		tu_ok(db, weft_txn_begin(&t, db, rnd(&r, 4) ? "home" : "work", rnd(&r, 5) ? NULL : idem));
		int nops = 1 + (int)rnd(&r, 4);
		for (int k = 0; k < nops; k++) {
			weft_value pk = K(keys[rnd(&r, 4)]);
			weft_value ipk = weft_int(rnd(&r, 5));
			switch (rnd(&r, 9)) {
			case 0: tu_ok(db, weft_txn_delete(t, "todo", pk)); break;
			case 1: tu_ok(db, weft_txn_incr(t, "todo", pk, "votes", (int64_t)rnd(&r, 7) - 3)); break;
			case 2: tu_ok(db, weft_txn_set(t, "todo", pk, "owner", K(owners[rnd(&r, 3)]))); break;
			case 3: tu_ok(db, weft_txn_set(t, "todo", pk, "title", weft_int(rnd(&r, 100)))); break;
			case 4: tu_ok(db, weft_txn_set(t, "todo", pk, "votes", weft_int(rnd(&r, 100)))); break;
			case 5: tu_ok(db, weft_txn_set(t, "kv", ipk, "u", weft_int(rnd(&r, 3)))); break;
			case 6: tu_ok(db, weft_txn_delete(t, "kv", ipk)); break;
			case 7: tu_ok(db, weft_txn_set(t, "kv", ipk, "r", weft_real(rnd(&r, 10) / 4.0))); break;
			default: tu_ok(db, weft_txn_set(t, "todo", pk, "owner", weft_null())); break;
			}
		}
		int rc = weft_txn_commit(NULL, t);
		assert_true(rc == WEFT_OK || rc == WEFT_DUPLICATE);
		if (rnd(&r, 10) == 0) {
			int j = (int)rnd(&r, 3);
			if (j != i)
				tu_ingest_all(f->db[j], db);
		}
		if (step % 50 == 49) {
			char *x = tu_dump(db);
			uint64_t last = 0;
			tu_ok(db, weft_db_rebuild(db, progress, &last));
			assert_true(last > 0);
			char *y = tu_dump(db);
			if (strcmp(x, y))
				print_error("step %d store %d\nincremental:\n%s\nrebuilt:\n%s\n", step, i, x, y);
			assert_string_equal(x, y);
			free(x);
			free(y);
		}
	}
	for (int i = 0; i < 3; i++)
		for (int j = 0; j < 3; j++)
			if (i != j)
				tu_ingest_all(f->db[j], f->db[i]);
	expect_same_dump(f->db[0], f->db[1]);
	expect_same_dump(f->db[0], f->db[2]);
	/* A progress callback may stop the rebuild: nothing changes. */
	char *x = tu_dump(f->db[0]);
	tu_expect(f->db[0], weft_db_rebuild(f->db[0], stop_progress, NULL), WEFT_EUSER);
	char *y = tu_dump(f->db[0]);
	assert_string_equal(x, y);
	free(x);
	free(y);
}

/* Acceptance: two stores that ingested the same events in opposite orders
 * dump identical tables. */
static void test_tables_opposite_arrival_orders_dump_identically(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO), *b = dev(f, 1, TODO);
	weft_id ids[60];
	weft_db *from[60];
	rng r = {99};
	for (int n = 0; n < 60; n++) {
		int i = (int)rnd(&r, 2);
		weft_db *db = f->db[i];
		f->clock[i].now_ms += rnd(&r, 2);
		weft_txn *t;
		char idem[8];
		snprintf(idem, sizeof(idem), "i%u", rnd(&r, 6));
		tu_ok(db, weft_txn_begin(&t, db, "home", rnd(&r, 3) ? NULL : idem));
		weft_value pk = K(rnd(&r, 2) ? "p" : "q");
		switch (rnd(&r, 4)) {
		case 0: tu_ok(db, weft_txn_delete(t, "todo", pk)); break;
		case 1: tu_ok(db, weft_txn_incr(t, "todo", pk, "votes", 1)); break;
		case 2: tu_ok(db, weft_txn_set(t, "todo", pk, "owner", K(rnd(&r, 2) ? "x" : "y"))); break;
		default: tu_ok(db, weft_txn_set(t, "todo", pk, "title", weft_int(n))); break;
		}
		int rc = weft_txn_commit(&ids[n], t);
		if (rc == WEFT_DUPLICATE) {
			n--;
			continue;
		}
		tu_ok(db, rc);
		from[n] = db;
	}
	weft_db *c = dev(f, 2, TODO), *d = dev(f, 3, TODO);
	for (int n = 0; n < 60; n++)
		send(c, from[n], &ids[n], 1);
	for (int n = 59; n >= 0; n--)
		send(d, from[n], &ids[n], 1);
	expect_same_dump(c, d);
	tu_ingest_all(a, b);
	tu_ingest_all(b, a);
	expect_same_dump(a, c);
	expect_same_dump(b, c);
}

/* A put or a delete that arrives late and falls between a counter's
 * increments keeps exactly the increments newer than it. */
static void test_tables_late_put_or_delete_between_increments(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO), *b = dev(f, 1, TODO), *c = dev(f, 2, TODO);
	f->clock[0].now_ms = T0 + 10;
	incr1(a, "todo", K("x"), "votes", 1);
	f->clock[0].now_ms = T0 + 30;
	incr1(a, "todo", K("x"), "votes", 2);
	f->clock[0].now_ms = T0 + 40;
	incr1(a, "todo", K("x"), "votes", 4);
	set1(a, "todo", K("x"), "title", K("a's"));
	expect_q(a, "SELECT votes FROM todo", "7");
	f->clock[1].now_ms = T0 + 20;
	weft_id put = set1(b, "todo", K("x"), "votes", weft_int(100));
	send(a, b, &put, 1);
	expect_q(a, "SELECT votes, title FROM todo", "106|'a''s'");
	f->clock[2].now_ms = T0 + 35;
	weft_id gone = del1(c, "todo", K("x"));
	send(a, c, &gone, 1);
	/* Only the increment at +40 and the title at +40 are newer. */
	expect_q(a, "SELECT votes, title, done, note FROM todo", "4|'a''s'|0|'none'");
	/* The other order gives the same row. */
	weft_db *d = dev(f, 3, TODO);
	send(d, c, &gone, 1);
	send(d, b, &put, 1);
	tu_ingest_all(d, a);
	expect_same_dump(a, d);
}

/* A row written more often than its merge state keeps inline: the older
 * history is still found when an event must be withdrawn, also when that
 * event's payload was erased, and when a late put needs the increments. */
static void test_tables_long_history_is_re_derived(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, TODO), *b = dev(f, 1, TODO), *c = dev(f, 2, TODO), *d = dev(f, 3, TODO);
	weft_txn *t;
	weft_id late, early;
	f->clock[1].now_ms = T0 + 500;
	tu_ok(b, weft_txn_begin(&t, b, "home", "k"));
	tu_ok(b, weft_txn_set(t, "todo", K("x"), "title", K("b's, later")));
	tu_ok(b, weft_txn_incr(t, "todo", K("x"), "votes", 1000));
	tu_ok(b, weft_txn_set(t, "todo", K("y"), "title", K("only b")));
	tu_ok(b, weft_txn_commit(&late, t));
	f->clock[2].now_ms = T0 + 400;
	tu_ok(c, weft_txn_begin(&t, c, "home", "k"));
	tu_ok(c, weft_txn_set(t, "todo", K("x"), "note", K("c's, earlier")));
	tu_ok(c, weft_txn_commit(&early, t));
	send(a, b, &late, 1);
	send(d, b, &late, 1);
	weft_id ids[100];
	int n = 0;
	for (int i = 0; i < 100; i++) {
		f->clock[0].now_ms = T0 + 600 + 2 * (uint64_t)i; /* even: never b's millisecond below */
		ids[n++] = incr1(a, "todo", K("x"), "votes", 1);
	}
	send(d, a, ids, (size_t)n);
	expect_q(a, "SELECT votes, title FROM todo WHERE id = 'x'", "1100|'b''s, later'");
	/* In d, b's payload is erased behind weft's back. */
	weft_db_close(d);
	f->db[3] = NULL;
	erase_payload(f, "d3.db", &late);
	d = dev(f, 3, NULL);
	/* c's event displaces b's: its cells go, the 100 increments stay. */
	send(a, c, &early, 1);
	send(d, c, &early, 1);
	for (int i = 0; i < 2; i++) {
		weft_db *db = i ? d : a;
		expect_q(db, "SELECT id, title, votes, note FROM todo", "'x'|NULL|100|'c''s, earlier'");
	}
	/* A late put between the increments keeps the 75 newer ones. */
	f->clock[1].now_ms = T0 + 649;
	weft_id put = set1(b, "todo", K("x"), "votes", weft_int(0));
	send(a, b, &put, 1);
	send(d, b, &put, 1);
	expect_q(a, "SELECT votes FROM todo", "75");
	expect_q(d, "SELECT votes FROM todo", "75");
}

/* A rebuild keeps rows in memory and writes them in batches; rows written
 * by an earlier batch and changed by a later one come out the same as
 * when kept event by event. */
static void test_tables_rebuild_in_batches(void **state)
{
	fixture *f = *state;
	weft_db *a = dev(f, 0, NULL);
	char *before = tu_query(a, "PRAGMA secure_delete"); /* as SQLite was built */
	tu_ok(a, weft_schema_define(a, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v INTEGER, n INTEGER DEFAULT 5);"
	                               "CREATE TABLE tk(k TEXT PRIMARY KEY, v TEXT)"));
	expect_q(a, "PRAGMA secure_delete", before);
	const int per = 35000, rounds = 2;
	for (int r = 0; r < rounds; r++) {
		weft_txn *t;
		tu_ok(a, weft_txn_begin(&t, a, "home", NULL));
		for (int i = 0; i < per; i++)
			tu_ok(a, weft_txn_set(t, "kv", weft_int(r * per + i), "v", weft_int(i)));
		tu_ok(a, weft_txn_set(t, "tk", K(r ? "b" : "a"), "v", K("first")));
		tu_ok(a, weft_txn_commit(NULL, t));
	}
	weft_txn *t;
	tu_ok(a, weft_txn_begin(&t, a, "home", NULL));
	tu_ok(a, weft_txn_set(t, "kv", weft_int(7), "v", weft_int(-7)));
	tu_ok(a, weft_txn_incr(t, "kv", weft_int(8), "n", 3));
	tu_ok(a, weft_txn_delete(t, "kv", weft_int(per + 9)));
	tu_ok(a, weft_txn_set(t, "tk", K("a"), "v", K("second")));
	tu_ok(a, weft_txn_commit(NULL, t));
	expect_q(a, "SELECT count(*), sum(v), sum(n) FROM kv", "69999|1224964977|349998");
	expect_q(a, "SELECT k, v FROM tk ORDER BY k", "'a'|'second'\n'b'|'first'");
	expect_q(a, "SELECT k, v, n FROM kv WHERE k IN (7, 8, 35009) ORDER BY k", "7|-7|5\n8|8|8");
	/* A rebuild drops the old tables with secure_delete FAST, and puts
	 * the setting back. */
	tu_ok(a, weft_db_rebuild(a, NULL, NULL));
	expect_q(a, "PRAGMA secure_delete", before);
	free(before);
	/* teardown compares with a rebuild */
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_tables_put_creates_a_row_with_defaults),
		T(test_tables_last_writer_wins_per_column),
		T(test_tables_equal_timestamps_tie_broken_by_author_key),
		T(test_tables_equal_timestamps_same_author_tie_broken_by_event_id),
		T(test_tables_later_operation_of_one_event_wins),
		T(test_tables_delete_then_later_concurrent_put_revives),
		T(test_tables_put_then_later_concurrent_delete_removes),
		T(test_tables_delete_and_put_with_equal_timestamps),
		T(test_tables_revive_after_delete_keeps_only_newer_columns),
		T(test_tables_increments_from_two_devices_are_summed),
		T(test_tables_counter_after_delete_counts_only_newer_increments),
		T(test_tables_put_resets_a_counter),
		T(test_tables_counter_starts_at_its_default_and_wraps),
		T(test_tables_unknown_column_appears_when_declared),
		T(test_tables_unknown_table_appears_when_declared),
		T(test_tables_type_change_follows_sqlite_affinity),
		T(test_tables_key_of_another_type_never_applies),
		T(test_tables_not_null_columns_are_filled),
		T(test_tables_defaults_fill_unwritten_columns),
		T(test_tables_unique_earliest_claim_wins_everywhere),
		T(test_tables_unique_claims_with_equal_timestamps),
		T(test_tables_unique_loser_gets_value_when_winner_lets_go),
		T(test_tables_idempotency_earliest_event_takes_effect_everywhere),
		T(test_tables_idempotency_chain_of_displacements),
		T(test_tables_idempotency_displaces_an_erased_event),
		T(test_tables_idempotency_keys_are_per_scope),
		T(test_tables_malformed_payloads_have_no_effect),
		T(test_tables_payload_bytes_match_the_documentation),
		T(test_tables_raw_operations_weft_txn_would_refuse),
		T(test_tables_txn_refuses_invalid_operations),
		T(test_tables_query_refuses_writes_and_reports_errors),
		T(test_tables_blame_names_the_writer),
		T(test_tables_rebuild_equals_incremental),
		T(test_tables_opposite_arrival_orders_dump_identically),
		T(test_tables_late_put_or_delete_between_increments),
		T(test_tables_long_history_is_re_derived),
		T(test_tables_rebuild_in_batches),
		T(test_tables_rebuild_applies_tied_events_in_id_order),
	};
	return cmocka_run_group_tests_name("tables", tests, NULL, NULL);
}
