/* The change feed (durable consumer cursors) and the commit callback. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T0 UINT64_C(1700000000000)

#define TODO                                                                                       \
	"CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT, done INTEGER NOT NULL DEFAULT 0, "      \
	"votes INTEGER, owner TEXT UNIQUE)"
#define ALL_COLS "id,title,done,votes,owner"

typedef struct fixture {
	char *dir;
	tu_clock clock;
} fixture;

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	f->dir = tu_mkdtemp();
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

static weft_db *open_a(fixture *f)
{
	weft_db *db = tu_open(f->dir, "a.db", &f->clock, 1);
	tu_ok(db, weft_schema_define(db, TODO));
	return db;
}

static weft_id set1(weft_db *db, const char *pk, const char *col, weft_value v)
{
	weft_txn *t;
	weft_id id;
	tu_ok(db, weft_txn_begin(&t, db, "home", NULL));
	tu_ok(db, weft_txn_set(t, "todo", weft_text(pk), col, v));
	tu_ok(db, weft_txn_commit(&id, t));
	return id;
}

/* A change, copied out of the feed. */
typedef struct chg {
	uint64_t seq;
	char table[65];
	char pk[64];
	weft_change_op op;
	char cols[128];
	weft_id event;
} chg;

static int next(chg *c, weft_feed *f)
{
	const weft_change *w;
	int rc = weft_feed_next(&w, f);
	if (rc == WEFT_ITEROVER)
		return 0;
	assert_int_equal(rc, WEFT_OK);
	memset(c, 0, sizeof(*c));
	c->seq = w->seq;
	snprintf(c->table, sizeof(c->table), "%s", w->table);
	tu_str b = {NULL, 0, 0};
	tu_str_value(&b, &w->pk);
	snprintf(c->pk, sizeof(c->pk), "%s", b.s);
	free(b.s);
	c->op = w->op;
	snprintf(c->cols, sizeof(c->cols), "%s", w->columns);
	c->event = w->event;
	return 1;
}

/* Reads every pending change as "op table pk [cols]" lines. */
static char *drain(weft_feed *f, chg *last)
{
	tu_str b = {NULL, 0, 0};
	tu_str_add(&b, "%s", "");
	chg c;
	while (next(&c, f)) {
		tu_str_add(&b, "%s %s %s [%s]\n", c.op == WEFT_CHANGE_UPSERT ? "upsert" : "delete", c.table, c.pk, c.cols);
		if (last)
			*last = c;
	}
	return b.s;
}

static void expect_drain(weft_feed *f, const char *want, chg *last)
{
	char *got = drain(f, last);
	if (strcmp(got, want) != 0)
		print_error("feed\n--- got:\n%s--- want:\n%s", got, want);
	assert_string_equal(got, want);
	free(got);
}

static const weft_id zero_id;

/* ------------------------------------------------------------- cursors */

static void test_feed_crash_before_ack_redelivers(void **state)
{
	fixture *f = *state;
	weft_db *db = open_a(f);
	weft_feed *fd;
	tu_ok(db, weft_feed_open(&fd, db, "cache"));
	weft_id e1 = set1(db, "x", "title", weft_text("milk"));
	weft_txn *t;
	weft_id e2;
	tu_ok(db, weft_txn_begin(&t, db, "home", NULL));
	tu_ok(db, weft_txn_set(t, "todo", weft_text("y"), "title", weft_text("eggs")));
	tu_ok(db, weft_txn_incr(t, "todo", weft_text("x"), "votes", 2));
	tu_ok(db, weft_txn_commit(&e2, t));

	chg first[3];
	for (int i = 0; i < 3; i++)
		assert_true(next(&first[i], fd));
	chg c;
	assert_false(next(&c, fd));
	assert_true(first[0].seq < first[1].seq && first[1].seq < first[2].seq);
	assert_string_equal(first[0].table, "todo");
	assert_string_equal(first[0].pk, "'x'");
	assert_int_equal(first[0].op, WEFT_CHANGE_UPSERT);
	assert_string_equal(first[0].cols, ALL_COLS);
	assert_memory_equal(first[0].event.bytes, e1.bytes, 32);
	assert_string_equal(first[1].pk, "'x'");
	assert_string_equal(first[1].cols, "votes");
	assert_memory_equal(first[1].event.bytes, e2.bytes, 32);
	assert_string_equal(first[2].pk, "'y'");
	assert_string_equal(first[2].cols, ALL_COLS);
	assert_memory_equal(first[2].event.bytes, e2.bytes, 32);

	/* Crash: the consumer read but did not ack. */
	weft_feed_free(fd);
	weft_db_close(db);
	db = tu_open(f->dir, "a.db", &f->clock, 1);
	tu_ok(db, weft_feed_open(&fd, db, "cache"));
	for (int i = 0; i < 3; i++) {
		assert_true(next(&c, fd));
		assert_int_equal(c.seq, first[i].seq);
		assert_string_equal(c.pk, first[i].pk);
		assert_string_equal(c.cols, first[i].cols);
		assert_memory_equal(c.event.bytes, first[i].event.bytes, 32);
	}
	assert_false(next(&c, fd));
	/* Acked up to the second: only the third comes back. */
	tu_ok(db, weft_feed_ack(fd, first[1].seq));
	weft_feed_free(fd);
	weft_db_close(db);
	db = tu_open(f->dir, "a.db", &f->clock, 1);
	tu_ok(db, weft_feed_open(&fd, db, "cache"));
	assert_true(next(&c, fd));
	assert_int_equal(c.seq, first[2].seq);
	assert_false(next(&c, fd));
	tu_ok(db, weft_feed_ack(fd, c.seq));
	weft_feed_free(fd);
	/* Acked: never again, also after reopening. */
	weft_db_close(db);
	db = tu_open(f->dir, "a.db", &f->clock, 1);
	tu_ok(db, weft_feed_open(&fd, db, "cache"));
	assert_false(next(&c, fd));
	set1(db, "z", "done", weft_int(1));
	assert_true(next(&c, fd));
	assert_string_equal(c.pk, "'z'");
	assert_true(c.seq > first[2].seq);
	/* An ack below the cursor does not move it back. */
	tu_ok(db, weft_feed_ack(fd, c.seq));
	tu_ok(db, weft_feed_ack(fd, 1));
	weft_feed_free(fd);
	tu_ok(db, weft_feed_open(&fd, db, "cache"));
	assert_false(next(&c, fd));
	weft_feed_free(fd);
	weft_db_close(db);
}

static void test_feed_consumers_are_independent(void **state)
{
	fixture *f = *state;
	weft_db *db = open_a(f);
	weft_feed *one, *two;
	tu_ok(db, weft_feed_open(&one, db, "search-index"));
	tu_ok(db, weft_feed_open(&two, db, "cache"));
	set1(db, "x", "title", weft_text("a"));
	set1(db, "y", "title", weft_text("b"));
	chg last;
	expect_drain(one, "upsert todo 'x' [" ALL_COLS "]\nupsert todo 'y' [" ALL_COLS "]\n", &last);
	tu_ok(db, weft_feed_ack(one, last.seq));
	/* The other consumer still has everything. */
	expect_drain(two, "upsert todo 'x' [" ALL_COLS "]\nupsert todo 'y' [" ALL_COLS "]\n", NULL);
	weft_feed_free(two);
	tu_ok(db, weft_feed_open(&two, db, "cache"));
	expect_drain(two, "upsert todo 'x' [" ALL_COLS "]\nupsert todo 'y' [" ALL_COLS "]\n", &last);
	/* A consumer opened now starts at the end. */
	weft_feed *three;
	tu_ok(db, weft_feed_open(&three, db, "late"));
	expect_drain(three, "", NULL);
	set1(db, "x", "title", weft_text("c"));
	expect_drain(three, "upsert todo 'x' [title]\n", NULL);
	expect_drain(one, "upsert todo 'x' [title]\n", NULL);
	/* Changes every consumer acked are pruned. */
	tu_ok(db, weft_feed_ack(two, last.seq));
	char *n = tu_query(db, "SELECT count(*) FROM weft_change");
	assert_string_equal(n, "1");
	free(n);
	weft_feed_free(one);
	weft_feed_free(two);
	weft_feed_free(three);
	weft_db_close(db);
}

/* ------------------------------------------------------------ contents */

static void test_feed_changes_carry_table_pk_op_columns_and_event(void **state)
{
	fixture *f = *state;
	weft_db *db = tu_open(f->dir, "a.db", &f->clock, 1);
	tu_ok(db, weft_schema_define(db, TODO "; CREATE TABLE n(k INTEGER PRIMARY KEY, v TEXT);"
	                                 "CREATE TABLE b(k BLOB PRIMARY KEY, v TEXT)"));
	weft_feed *fd;
	tu_ok(db, weft_feed_open(&fd, db, "app"));
	weft_txn *t;
	weft_id e;
	tu_ok(db, weft_txn_begin(&t, db, "home", NULL));
	tu_ok(db, weft_txn_set(t, "n", weft_int(-5), "v", weft_text("int key")));
	tu_ok(db, weft_txn_set(t, "b", weft_blob("\x00\x01", 2), "v", weft_text("blob key")));
	tu_ok(db, weft_txn_commit(&e, t));
	chg c;
	assert_true(next(&c, fd));
	assert_string_equal(c.table, "b");
	assert_string_equal(c.pk, "x'0001'");
	assert_string_equal(c.cols, "k,v");
	assert_memory_equal(c.event.bytes, e.bytes, 32);
	assert_true(next(&c, fd));
	assert_string_equal(c.table, "n");
	assert_string_equal(c.pk, "-5");
	assert_false(next(&c, fd));

	set1(db, "x", "title", weft_text("v1"));
	expect_drain(fd, "upsert todo 'x' [" ALL_COLS "]\n", NULL);
	/* Writing the same value again changes nothing. */
	set1(db, "x", "title", weft_text("v1"));
	expect_drain(fd, "", NULL);
	set1(db, "x", "done", weft_int(1));
	expect_drain(fd, "upsert todo 'x' [done]\n", NULL);
	/* Several writes to a row in one transaction are one change. */
	tu_ok(db, weft_txn_begin(&t, db, "home", NULL));
	tu_ok(db, weft_txn_set(t, "todo", weft_text("x"), "title", weft_text("v2")));
	tu_ok(db, weft_txn_incr(t, "todo", weft_text("x"), "votes", 1));
	tu_ok(db, weft_txn_set(t, "todo", weft_text("x"), "title", weft_text("v3")));
	tu_ok(db, weft_txn_commit(NULL, t));
	expect_drain(fd, "upsert todo 'x' [title,votes]\n", NULL);
	/* A row written and deleted in one transaction is no change. */
	tu_ok(db, weft_txn_begin(&t, db, "home", NULL));
	tu_ok(db, weft_txn_set(t, "todo", weft_text("tmp"), "title", weft_text("v")));
	tu_ok(db, weft_txn_delete(t, "todo", weft_text("tmp")));
	tu_ok(db, weft_txn_commit(NULL, t));
	expect_drain(fd, "", NULL);
	weft_id del;
	tu_ok(db, weft_txn_begin(&t, db, "home", NULL));
	tu_ok(db, weft_txn_delete(t, "todo", weft_text("x")));
	tu_ok(db, weft_txn_commit(&del, t));
	chg last;
	expect_drain(fd, "delete todo 'x' []\n", &last);
	assert_int_equal(last.op, WEFT_CHANGE_DELETE);
	assert_memory_equal(last.event.bytes, del.bytes, 32);

	/* Remote events carry their own id. */
	tu_clock c2 = {T0 + 1000};
	weft_db *other = tu_open(f->dir, "b.db", &c2, 2);
	tu_ok(other, weft_schema_define(other, TODO));
	weft_id remote = set1(other, "r", "title", weft_text("from afar"));
	tu_ingest_all(db, other);
	expect_drain(fd, "upsert todo 'r' [" ALL_COLS "]\n", &last);
	assert_memory_equal(last.event.bytes, remote.bytes, 32);
	/* Receiving it again is no change. */
	tu_ingest_all(db, other);
	expect_drain(fd, "", NULL);
	weft_db_close(other);
	weft_feed_free(fd);
	weft_db_close(db);
}

/* A row whose UNIQUE value moves because of another row's write changes. */
static void test_feed_reports_rows_changed_by_unique_resolution(void **state)
{
	fixture *f = *state;
	weft_db *db = open_a(f);
	set1(db, "a", "owner", weft_text("ann"));
	f->clock.now_ms++;
	set1(db, "b", "owner", weft_text("ann"));
	weft_feed *fd;
	tu_ok(db, weft_feed_open(&fd, db, "app"));
	f->clock.now_ms++;
	weft_id e = set1(db, "a", "owner", weft_text("amy"));
	chg c;
	assert_true(next(&c, fd));
	assert_string_equal(c.pk, "'a'");
	assert_string_equal(c.cols, "owner");
	assert_true(next(&c, fd));
	assert_string_equal(c.pk, "'b'");
	assert_string_equal(c.cols, "owner");
	assert_memory_equal(c.event.bytes, e.bytes, 32);
	assert_false(next(&c, fd));
	weft_feed_free(fd);
	weft_db_close(db);
}

static void test_feed_schema_change_and_rebuild(void **state)
{
	fixture *f = *state;
	weft_db *db = open_a(f);
	set1(db, "x", "title", weft_text("a"));
	set1(db, "y", "title", weft_text("b"));
	weft_feed *fd;
	tu_ok(db, weft_feed_open(&fd, db, "app"));
	/* A rebuild that changes nothing reports nothing. */
	tu_ok(db, weft_db_rebuild(db, NULL, NULL));
	expect_drain(fd, "", NULL);
	/* A new column: every row changes in that column, caused by no event. */
	tu_ok(db, weft_schema_define(db, "CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT, done INTEGER NOT "
	                                 "NULL DEFAULT 0, votes INTEGER, owner TEXT UNIQUE, prio INTEGER DEFAULT 1)"));
	chg last;
	expect_drain(fd, "upsert todo 'x' [prio]\nupsert todo 'y' [prio]\n", &last);
	assert_memory_equal(last.event.bytes, zero_id.bytes, 32);
	/* A column left out changes every row that had it. */
	tu_ok(db, weft_schema_define(db, TODO));
	expect_drain(fd, "upsert todo 'x' [prio]\nupsert todo 'y' [prio]\n", NULL);
	/* A table left out: its rows are deleted. */
	tu_ok(db, weft_schema_define(db, "CREATE TABLE other(k INTEGER PRIMARY KEY)"));
	expect_drain(fd, "delete todo 'x' []\ndelete todo 'y' []\n", NULL);
	tu_ok(db, weft_schema_define(db, TODO));
	expect_drain(fd, "upsert todo 'x' [" ALL_COLS "]\nupsert todo 'y' [" ALL_COLS "]\n", NULL);
	weft_feed_free(fd);
	weft_db_close(db);
}

static void test_feed_refuses_bad_arguments(void **state)
{
	fixture *f = *state;
	weft_db *db = open_a(f);
	weft_feed *fd;
	tu_expect(db, weft_feed_open(&fd, db, ""), WEFT_EINVAL);
	tu_expect(db, weft_feed_open(&fd, db, NULL), WEFT_EINVAL);
	char longname[200];
	memset(longname, 'n', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	tu_expect(db, weft_feed_open(&fd, db, longname), WEFT_EINVAL);
	assert_int_equal(weft_feed_open(&fd, NULL, "x"), WEFT_EINVAL);
	const weft_change *c;
	assert_int_equal(weft_feed_next(&c, NULL), WEFT_EINVAL);
	assert_int_equal(weft_feed_ack(NULL, 1), WEFT_EINVAL);
	weft_feed_free(NULL);
	weft_db_close(db);
}

/* ------------------------------------------------------ commit callback */

typedef struct calls {
	int n;
	uint64_t changes[16];
} calls;

static void on_commit(uint64_t changes, void *payload)
{
	calls *c = payload;
	assert_true(c->n < 16);
	c->changes[c->n++] = changes;
}

static void test_feed_commit_callback_fires_once_per_commit(void **state)
{
	fixture *f = *state;
	weft_db *db = open_a(f);
	calls c;
	memset(&c, 0, sizeof(c));
	tu_ok(db, weft_db_on_commit(db, on_commit, &c));
	weft_txn *t;
	tu_ok(db, weft_txn_begin(&t, db, "home", "once"));
	tu_ok(db, weft_txn_set(t, "todo", weft_text("a"), "title", weft_text("1")));
	tu_ok(db, weft_txn_set(t, "todo", weft_text("b"), "title", weft_text("2")));
	tu_ok(db, weft_txn_incr(t, "todo", weft_text("c"), "votes", 1));
	tu_ok(db, weft_txn_set(t, "todo", weft_text("a"), "done", weft_int(1)));
	tu_ok(db, weft_txn_commit(NULL, t));
	assert_int_equal(c.n, 1);
	assert_int_equal(c.changes[0], 3); /* rows, not operations */
	/* Nothing changed: no call. */
	set1(db, "a", "title", weft_text("1"));
	assert_int_equal(c.n, 1);
	tu_ok(db, weft_txn_begin(&t, db, "home", "once"));
	tu_ok(db, weft_txn_set(t, "todo", weft_text("z"), "title", weft_text("dup")));
	tu_expect(db, weft_txn_commit(NULL, t), WEFT_DUPLICATE);
	assert_int_equal(c.n, 1);

	/* An ingested batch is one commit. */
	tu_clock c2 = {T0 + 10};
	weft_db *other = tu_open(f->dir, "b.db", &c2, 2);
	tu_ok(other, weft_schema_define(other, TODO));
	weft_id ids[3];
	ids[0] = set1(other, "a", "title", weft_text("changed"));
	ids[1] = set1(other, "d", "title", weft_text("new"));
	ids[2] = set1(other, "e", "title", weft_text("new too"));
	weft_bytes ev[3];
	weft_event *e[3];
	for (int i = 0; i < 3; i++) {
		tu_ok(other, weft_db_get(&e[i], other, &ids[i]));
		ev[i].data = weft_event_bytes(e[i], &ev[i].len);
	}
	int result[3];
	tu_ok(db, weft_db_ingest_batch(result, db, ev, 3));
	assert_int_equal(c.n, 2);
	assert_int_equal(c.changes[1], 3);
	/* The same batch again changes nothing. */
	tu_ok(db, weft_db_ingest_batch(result, db, ev, 3));
	assert_int_equal(result[0], WEFT_INGEST_DUPLICATE);
	assert_int_equal(c.n, 2);
	for (int i = 0; i < 3; i++)
		weft_event_free(e[i]);
	weft_db_close(other);

	/* Schema changes and rebuilds that change rows are commits too. */
	tu_ok(db, weft_schema_define(db, "CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT)"));
	assert_int_equal(c.n, 3);
	assert_int_equal(c.changes[2], 5);
	tu_ok(db, weft_db_rebuild(db, NULL, NULL));
	assert_int_equal(c.n, 3);
	/* Removing the callback. */
	tu_ok(db, weft_db_on_commit(db, NULL, NULL));
	set1(db, "f", "title", weft_text("quiet"));
	assert_int_equal(c.n, 3);
	weft_db_close(db);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_feed_crash_before_ack_redelivers),
		T(test_feed_consumers_are_independent),
		T(test_feed_changes_carry_table_pk_op_columns_and_event),
		T(test_feed_reports_rows_changed_by_unique_resolution),
		T(test_feed_schema_change_and_rebuild),
		T(test_feed_refuses_bad_arguments),
		T(test_feed_commit_callback_fires_once_per_commit),
	};
	return cmocka_run_group_tests_name("feed", tests, NULL, NULL);
}
