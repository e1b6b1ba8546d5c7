/* The DDL subset: what is accepted, and what is refused with which message. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "core/schema.h"

static schema *parse_ok(const char *ddl)
{
	schema *s = NULL;
	weft_err e;
	err_clear(&e);
	int rc = schema_parse(&s, ddl, &e);
	if (rc != WEFT_OK)
		print_error("schema refused: %s\n--- ddl:\n%s\n", e.msg, ddl);
	assert_int_equal(rc, WEFT_OK);
	assert_non_null(s);
	return s;
}

/* Asserts ddl is refused with WEFT_EINVAL and a message holding each of the
 * fragments (NULL-terminated), e.g. the line and the offending word. */
static void refused(const char *ddl, ...)
{
	schema *s = (schema *)1;
	weft_err e;
	err_clear(&e);
	int rc = schema_parse(&s, ddl, &e);
	if (rc != WEFT_EINVAL)
		print_error("expected WEFT_EINVAL for:\n%s\ngot %s: %s\n", ddl, weft_errname(rc), e.msg);
	assert_int_equal(rc, WEFT_EINVAL);
	assert_null(s);
	va_list ap;
	va_start(ap, ddl);
	for (const char *frag; (frag = va_arg(ap, const char *)) != NULL;) {
		if (!strstr(e.msg, frag))
			print_error("message \"%s\" lacks \"%s\"\n", e.msg, frag);
		assert_non_null(strstr(e.msg, frag));
	}
	va_end(ap);
}

static const schema_col *col(const schema *s, const char *table, const char *lname)
{
	const schema_table *t = schema_table_find(s, table);
	assert_non_null(t);
	int i = schema_col_find(t, lname);
	assert_true(i >= 0);
	return &t->cols[i];
}

/* -------------------------------------------------------------- accepted */

static void test_schema_parses_columns_types_and_defaults(void **state)
{
	(void)state;
	schema *s = parse_ok(
		"-- a todo list\n"
		"CREATE TABLE Todo(\n"
		"  ID text PRIMARY KEY,          /* the key\n spans lines */\n"
		"  title TEXT NOT NULL DEFAULT 'untitled',\n"
		"  done INTEGER NOT NULL DEFAULT 0,\n"
		"  votes INT,\n"
		"  weight REAL DEFAULT -1.5e2,\n"
		"  icon BLOB DEFAULT X'00fF',\n"
		"  owner TEXT UNIQUE,\n"
		"  note TEXT DEFAULT 'it''s',\n"
		"  spare TEXT DEFAULT NULL,\n"
		"  big INTEGER DEFAULT -9223372036854775808\n"
		");\n"
		"create table if not exists \"tag\"(name TEXT, n INTEGER DEFAULT +7, PRIMARY KEY(name)) WITHOUT ROWID;;\n"
		"CREATE TABLE kv(k BLOB PRIMARY KEY, v BLOB) STRICT;");
	assert_int_equal(s->ntables, 3);
	const schema_table *t = schema_table_find(s, "todo");
	assert_non_null(t);
	assert_string_equal(t->name, "Todo");
	assert_int_equal(t->ncols, 10);
	assert_int_equal(t->pk, 0);
	assert_string_equal(t->cols[0].name, "ID");
	assert_string_equal(t->cols[0].lname, "id");
	assert_int_equal(t->cols[0].type, WEFT_TEXT);
	assert_true(t->cols[0].pk);

	const schema_col *c = col(s, "todo", "title");
	assert_true(c->notnull && c->has_default && !c->unique);
	assert_int_equal(c->def.type, WEFT_TEXT);
	assert_int_equal(c->def.n, 8);
	assert_memory_equal(c->def.p, "untitled", 8);
	c = col(s, "todo", "done");
	assert_int_equal(c->def.type, WEFT_INTEGER);
	assert_int_equal(c->def.i, 0);
	assert_int_equal(col(s, "todo", "votes")->type, WEFT_INTEGER); /* INT is INTEGER */
	assert_false(col(s, "todo", "votes")->has_default);
	c = col(s, "todo", "weight");
	assert_int_equal(c->type, WEFT_REAL);
	assert_int_equal(c->def.type, WEFT_REAL);
	assert_true(c->def.r == -150.0);
	c = col(s, "todo", "icon");
	assert_int_equal(c->def.type, WEFT_BLOB);
	assert_int_equal(c->def.n, 2);
	assert_memory_equal(c->def.p, "\x00\xff", 2);
	c = col(s, "todo", "owner");
	assert_true(c->unique && !c->notnull && !c->pk);
	c = col(s, "todo", "note");
	assert_int_equal(c->def.n, 4);
	assert_memory_equal(c->def.p, "it's", 4);
	c = col(s, "todo", "spare");
	assert_true(c->has_default);
	assert_int_equal(c->def.type, WEFT_NULL);
	c = col(s, "todo", "big");
	assert_int_equal(c->def.type, WEFT_INTEGER);
	assert_true(c->def.i == INT64_MIN);

	t = schema_table_find(s, "tag");
	assert_non_null(t);
	assert_int_equal(t->pk, 0); /* table-level PRIMARY KEY(name) */
	assert_int_equal(col(s, "tag", "n")->def.i, 7);
	t = schema_table_find(s, "kv");
	assert_int_equal(t->cols[t->pk].type, WEFT_BLOB);
	assert_null(schema_table_find(s, "nope"));
	assert_string_equal(s->ddl + strlen(s->ddl) - 7, "STRICT;");
	schema_free(s);
}

static void test_schema_primary_key_is_unique_by_itself(void **state)
{
	(void)state;
	schema *s = parse_ok("CREATE TABLE t(id INTEGER PRIMARY KEY UNIQUE NOT NULL, v TEXT)");
	assert_false(s->tables[0].cols[0].unique); /* no claim table for the key */
	assert_true(s->tables[0].cols[0].pk);
	schema_free(s);
	s = parse_ok("CREATE TABLE t(id INTEGER UNIQUE, v TEXT, PRIMARY KEY(id))");
	assert_false(s->tables[0].cols[0].unique);
	schema_free(s);
}

static void test_schema_real_defaults_and_big_numbers(void **state)
{
	(void)state;
	schema *s = parse_ok("CREATE TABLE t(id INTEGER PRIMARY KEY, a REAL DEFAULT .5, b INTEGER DEFAULT 1e3, "
	                     "c INTEGER DEFAULT 9223372036854775808, d TEXT DEFAULT '')");
	assert_true(col(s, "t", "a")->def.r == 0.5);
	assert_int_equal(col(s, "t", "b")->def.type, WEFT_REAL); /* as SQLite reads 1e3 */
	assert_int_equal(col(s, "t", "c")->def.type, WEFT_REAL); /* too big for INTEGER */
	assert_int_equal(col(s, "t", "d")->def.type, WEFT_TEXT);
	assert_int_equal(col(s, "t", "d")->def.n, 0);
	schema_free(s);
}

/* --------------------------------------------------------------- refused */

static void test_schema_refuses_check_and_references(void **state)
{
	(void)state;
	refused("CREATE TABLE t(\n  id INTEGER PRIMARY KEY,\n  n INTEGER CHECK (n > 0)\n)", "line 3", "'CHECK'",
	        "CHECK", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY,\n\n p INTEGER REFERENCES parent(id))", "line 3",
	        "'REFERENCES'", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT COLLATE NOCASE)", "line 1", "'COLLATE'", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY AUTOINCREMENT)", "'AUTOINCREMENT'", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER GENERATED ALWAYS AS (1))", "'GENERATED'", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER,\n CHECK (v > 0))", "line 2", "'CHECK'", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY, p INTEGER,\n FOREIGN KEY (p) REFERENCES q(id))", "line 2",
	        "'FOREIGN'", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT,\n CONSTRAINT u UNIQUE (a))", "line 2",
	        "'CONSTRAINT'", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, UNIQUE (a))", "line 1", "'UNIQUE'",
	        "put UNIQUE on the column", NULL);
}

static void test_schema_refuses_composite_missing_and_real_keys(void **state)
{
	(void)state;
	refused("CREATE TABLE t(a TEXT, b TEXT,\n  PRIMARY KEY (a, b))", "line 2", "near ','", "single-column",
	        NULL);
	refused("CREATE TABLE t(\n a TEXT PRIMARY KEY,\n b TEXT PRIMARY KEY)", "line 3", "'PRIMARY'",
	        "single-column", NULL);
	refused("CREATE TABLE t(a TEXT PRIMARY KEY, b TEXT, PRIMARY KEY (b))", "'PRIMARY'", "single-column", NULL);
	refused("CREATE TABLE t(a TEXT, b TEXT, PRIMARY KEY (c))", "'c'", "does not have", NULL);
	refused("CREATE TABLE\n notes(a TEXT, b TEXT)", "line 2", "'notes'", "needs a PRIMARY KEY", NULL);
	refused("CREATE TABLE t(\n  x REAL PRIMARY KEY, v TEXT)", "line 2", "'x'", "REAL", NULL);
	refused("CREATE TABLE t(x REAL, v TEXT,\n PRIMARY KEY(x))", "line 2", "'x'", "REAL", NULL);
}

static void test_schema_refuses_duplicates_and_reserved_names(void **state)
{
	(void)state;
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY,\n  Title TEXT,\n  title TEXT)", "line 3", "'title'",
	        "declared twice", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY);\nCREATE TABLE T(id INTEGER PRIMARY KEY)", "line 2", "'T'",
	        "declared twice", NULL);
	refused("CREATE TABLE weft_x(id INTEGER PRIMARY KEY)", "line 1", "'weft_x'", "weft_", NULL);
	refused("CREATE TABLE WEFT_op(id INTEGER PRIMARY KEY)", "'WEFT_op'", NULL);
	refused("CREATE TABLE sqlite_stat9(id INTEGER PRIMARY KEY)", "'sqlite_stat9'", "sqlite_", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY,\n weft_n INTEGER)", "line 2", "'weft_n'", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY, \"sqlite_x\" INTEGER)", "'sqlite_x'", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY, \"two words\" INTEGER)", "'two words'", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY, \"q INTEGER)", "closing", NULL);
	char longname[200];
	snprintf(longname, sizeof(longname), "CREATE TABLE t(id INTEGER PRIMARY KEY, %065d INTEGER)", 0);
	refused(longname, "expected a column name", NULL);
	snprintf(longname, sizeof(longname), "CREATE TABLE t(id INTEGER PRIMARY KEY, a%064d INTEGER)", 0);
	refused(longname, "1-64", NULL);
}

static void test_schema_refuses_unique_not_null_and_unique_default(void **state)
{
	(void)state;
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY,\n  email TEXT UNIQUE NOT NULL)", "line 2", "'email'",
	        "UNIQUE and NOT NULL", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE)", "'email'", "UNIQUE", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY,\n email TEXT UNIQUE DEFAULT 'x')", "line 2", "'email'",
	        "DEFAULT", NULL);
	schema *s = parse_ok("CREATE TABLE t(id INTEGER PRIMARY KEY, email TEXT UNIQUE DEFAULT NULL)");
	schema_free(s);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER NOT NULL DEFAULT NULL)", "'n'",
	        "defaults to NULL", NULL);
}

static void test_schema_refuses_statements_other_than_create_table(void **state)
{
	(void)state;
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY);\nCREATE INDEX i ON t(id)", "line 2", "'INDEX'",
	        "only CREATE TABLE", NULL);
	refused("CREATE UNIQUE INDEX i ON t(id)", "'UNIQUE'", NULL);
	refused("CREATE VIEW v AS SELECT 1", "'VIEW'", NULL);
	refused("CREATE TRIGGER x AFTER INSERT ON t BEGIN SELECT 1; END", "'TRIGGER'", NULL);
	refused("CREATE TEMP TABLE t(id INTEGER PRIMARY KEY)", "'TEMP'", NULL);
	refused("CREATE VIRTUAL TABLE t USING fts5(a)", "'VIRTUAL'", NULL);
	refused("DROP TABLE t", "line 1", "'DROP'", "expected CREATE", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1)", "'INSERT'", NULL);
	refused("CREATE TABLE t AS SELECT 1", "'AS'", NULL);
}

static void test_schema_refuses_garbage(void **state)
{
	(void)state;
	refused("", "declares no tables", NULL);
	refused("  -- only a comment\n ; ;", "declares no tables", NULL);
	refused("hello world", "line 1", "'hello'", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY) garbage", "'garbage'", "expected ';'", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY", "end of input", NULL);
	refused("CREATE TABLE t(id VARCHAR(10) PRIMARY KEY)", "'VARCHAR'", "needs a type", NULL);
	refused("CREATE TABLE t(id PRIMARY KEY)", "'PRIMARY'", "needs a type", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT DEFAULT CURRENT_TIMESTAMP)", "'CURRENT_TIMESTAMP'",
	        "literal", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER DEFAULT (1 + 2))", "'('", "literal", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER DEFAULT 1 DEFAULT 2)", "two DEFAULTs", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER DEFAULT 0x10)", "'0x10'", "decimal", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER DEFAULT 1.2.3)", "'1.2.3'", "not a number", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY, v REAL DEFAULT 1e999)", "not a number", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER DEFAULT -x)", "after the sign", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT DEFAULT 'abc)", "unterminated", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT DEFAULT 'abc'')", "unterminated", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB DEFAULT X'abc')", "even number", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB DEFAULT X'zz')", "hex digit", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB DEFAULT X'", "even number", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT 5)", "expected NULL", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT) WITHOUT", "expected ROWID", NULL);
	/* Line numbers count newlines inside strings too. */
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY,\n a TEXT DEFAULT 'two\nlines',\n b TEXT CHECK (1))", "line 4",
	        "'CHECK'", NULL);
	/* Bytes that are not SQL at all. */
	refused("\x01\x02\x03", "line 1", NULL);
	refused("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT DEFAULT 'x' \xff)", "line 1", NULL);
}

static void test_schema_refuses_oversized_input(void **state)
{
	(void)state;
	size_t n = SCHEMA_DDL_MAX + 16;
	char *big = malloc(n + 1);
	memset(big, ' ', n);
	big[n] = '\0';
	schema *s;
	weft_err e;
	assert_int_equal(schema_parse(&s, big, &e), WEFT_ELIMIT);
	free(big);
	assert_int_equal(schema_parse(&s, NULL, &e), WEFT_EINVAL);
	/* More than 256 columns. */
	tu_str b = {NULL, 0, 0};
	tu_str_add(&b, "CREATE TABLE t(id INTEGER PRIMARY KEY");
	for (int i = 0; i < 256; i++)
		tu_str_add(&b, ", c%d INTEGER", i);
	tu_str_add(&b, ")");
	refused(b.s, "at most 256 columns", NULL);
	free(b.s);
}

/* ----------------------------------------------- through the public API */

static void test_schema_define_reports_errors_and_versions(void **state)
{
	(void)state;
	char *dir = tu_mkdtemp();
	tu_clock clock = {1700000000000ull};
	weft_db *db = tu_open(dir, "a.db", &clock, 1);
	int version = -1;
	const char *ddl = "x";
	tu_ok(db, weft_schema_version(&version, &ddl, db));
	assert_int_equal(version, 0);
	assert_null(ddl);

	tu_expect(db, weft_schema_define(db, "CREATE TABLE t(\n id INTEGER PRIMARY KEY,\n n INTEGER CHECK (n > 0))"),
	          WEFT_EINVAL);
	assert_non_null(strstr(weft_errmsg(db), "line 3"));
	assert_non_null(strstr(weft_errmsg(db), "CHECK"));
	tu_ok(db, weft_schema_version(&version, NULL, db));
	assert_int_equal(version, 0); /* nothing changed */

	const char *v1 = "CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER)";
	tu_ok(db, weft_schema_define(db, v1));
	tu_ok(db, weft_schema_version(&version, &ddl, db));
	assert_int_equal(version, 1);
	assert_string_equal(ddl, v1);
	tu_ok(db, weft_schema_define(db, v1)); /* identical: no new version */
	tu_ok(db, weft_schema_version(&version, NULL, db));
	assert_int_equal(version, 1);
	tu_expect(db, weft_schema_define(db, "CREATE TABLE t(id REAL PRIMARY KEY)"), WEFT_EINVAL);
	tu_ok(db, weft_schema_define(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER, m TEXT)"));
	tu_ok(db, weft_schema_version(&version, NULL, db));
	assert_int_equal(version, 2);
	char *cols = tu_query(db, "SELECT group_concat(name, ',') FROM pragma_table_info('t')");
	assert_string_equal(cols, "'id,n,m'");
	free(cols);
	/* A derived table with an INTEGER key is a rowid table; with any
	 * other key, WITHOUT ROWID. */
	char *sql = tu_query(db, "SELECT sql LIKE '%WITHOUT ROWID' FROM sqlite_schema WHERE name = 't'");
	assert_string_equal(sql, "0");
	free(sql);
	tu_ok(db, weft_schema_define(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER, m TEXT);"
	                                 "CREATE TABLE u(k TEXT PRIMARY KEY)"));
	sql = tu_query(db, "SELECT sql LIKE '%WITHOUT ROWID' FROM sqlite_schema WHERE name = 'u'");
	assert_string_equal(sql, "1");
	free(sql);
	weft_db_close(db);

	/* The version and the DDL survive reopening. */
	db = tu_open(dir, "a.db", &clock, 1);
	tu_ok(db, weft_schema_version(&version, &ddl, db));
	assert_int_equal(version, 3);
	assert_non_null(strstr(ddl, "m TEXT"));
	weft_db_close(db);
	tu_rmdir(dir);
}

static void test_schema_define_drops_tables_left_out(void **state)
{
	(void)state;
	char *dir = tu_mkdtemp();
	tu_clock clock = {1700000000000ull};
	weft_db *db = tu_open(dir, "a.db", &clock, 1);
	tu_ok(db, weft_schema_define(db, "CREATE TABLE t(id INTEGER PRIMARY KEY)"));
	/* Dropping a table from the schema drops the derived table. */
	tu_ok(db, weft_schema_define(db, "CREATE TABLE u(id INTEGER PRIMARY KEY)"));
	char *n = tu_query(db, "SELECT group_concat(name) FROM sqlite_schema WHERE type = 'table' AND name IN ('t', 'u')");
	assert_string_equal(n, "'u'");
	free(n);
	weft_db_close(db);
	tu_rmdir(dir);
}

/* Declaring a table of the same name as one the app made itself fails; the
 * app's table and its rows stay. */
static void test_schema_define_never_drops_an_app_table(void **state)
{
	(void)state;
	char *dir = tu_mkdtemp();
	tu_clock clock = {1700000000000ull};
	weft_db *db = tu_open(dir, "a.db", &clock, 1);
	sqlite3 *raw;
	assert_int_equal(sqlite3_open(tu_path(dir, "a.db"), &raw), SQLITE_OK);
	assert_int_equal(sqlite3_exec(raw, "CREATE TABLE mine(k INTEGER PRIMARY KEY, v TEXT);"
	                                   "INSERT INTO mine VALUES (1, 'kept')", NULL, NULL, NULL),
	                 SQLITE_OK);
	sqlite3_close(raw);
	int rc = weft_schema_define(db, "CREATE TABLE mine(k INTEGER PRIMARY KEY, v TEXT)");
	assert_true(rc < 0);
	assert_non_null(strstr(weft_errmsg(db), "mine"));
	int version;
	tu_ok(db, weft_schema_version(&version, NULL, db));
	assert_int_equal(version, 0);
	char *v = tu_query(db, "SELECT v FROM mine");
	assert_string_equal(v, "'kept'");
	free(v);
	/* Nor when it comes with a later schema. */
	tu_ok(db, weft_schema_define(db, "CREATE TABLE t(k INTEGER PRIMARY KEY)"));
	assert_true(weft_schema_define(db, "CREATE TABLE t(k INTEGER PRIMARY KEY); "
	                                   "CREATE TABLE mine(k INTEGER PRIMARY KEY, v TEXT)") < 0);
	v = tu_query(db, "SELECT v FROM mine");
	assert_string_equal(v, "'kept'");
	free(v);
	tu_ok(db, weft_schema_version(&version, NULL, db));
	assert_int_equal(version, 1);
	weft_db_close(db);
	tu_rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_schema_parses_columns_types_and_defaults),
		cmocka_unit_test(test_schema_primary_key_is_unique_by_itself),
		cmocka_unit_test(test_schema_real_defaults_and_big_numbers),
		cmocka_unit_test(test_schema_refuses_check_and_references),
		cmocka_unit_test(test_schema_refuses_composite_missing_and_real_keys),
		cmocka_unit_test(test_schema_refuses_duplicates_and_reserved_names),
		cmocka_unit_test(test_schema_refuses_unique_not_null_and_unique_default),
		cmocka_unit_test(test_schema_refuses_statements_other_than_create_table),
		cmocka_unit_test(test_schema_refuses_garbage),
		cmocka_unit_test(test_schema_refuses_oversized_input),
		cmocka_unit_test(test_schema_define_reports_errors_and_versions),
		cmocka_unit_test(test_schema_define_drops_tables_left_out),
		cmocka_unit_test(test_schema_define_never_drops_an_app_table),
	};
	return cmocka_run_group_tests_name("schema", tests, NULL, NULL);
}
