/* The WAL write buffer (core/walbuf.c): what SQLite promises through it
 * must hold as without it — commits visible to other connections at once,
 * a transaction's own spilled pages readable, any page size, WAL restarts,
 * and commits on disk when the process dies without closing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include "testutil.h"

#include "core/walbuf.h"

static void exec(sqlite3 *db, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
	if (rc != SQLITE_OK)
		fail_msg("%s: %s", sql, msg ? msg : sqlite3_errstr(rc));
}

static int64_t q_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	int64_t v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* Through the buffering VFS (writer) or SQLite's default one (reader). */
static sqlite3 *open_db(const char *path, int buffered)
{
	const char *vfs = buffered ? walbuf_vfs_name() : NULL;
	if (buffered)
		assert_non_null(vfs);
	sqlite3 *db;
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs), SQLITE_OK);
	exec(db, "PRAGMA journal_mode=WAL");
	return db;
}

/* With synchronous=OFF nothing syncs: only the commit frame tells the
 * buffer to write out before SQLite publishes the commit. */
static void test_walbuf_commit_is_visible_to_another_connection(void **state)
{
	const char *dir = *state;
	const char *path = tu_path(dir, "v.db");
	sqlite3 *w = open_db(path, 1), *r = open_db(path, 0);
	exec(w, "PRAGMA synchronous=OFF; CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
	for (int i = 1; i <= 300; i++) {
		char sql[128];
		snprintf(sql, sizeof(sql), "INSERT INTO t VALUES (%d, randomblob(%d))", i, 100 + i * 37 % 3000);
		exec(w, sql);
		assert_int_equal(q_int(r, "SELECT count(*) FROM t"), i);
		assert_int_equal(q_int(r, "SELECT max(k) FROM t"), i);
	}
	assert_int_equal(q_int(r, "SELECT sum(length(v)) FROM t"), q_int(w, "SELECT sum(length(v)) FROM t"));
	sqlite3_close(w);
	sqlite3_close(r);
}

/* Without powersafe overwrite SQLite pads a commit to the sector boundary
 * with copies of its last frame, syncing in the middle of the frame that
 * crosses it; readers use the last copy, so its tail must not wait in the
 * buffer. */
static void test_walbuf_padded_commits_are_visible(void **state)
{
	const char *dir = *state;
	char uri[4200];
	snprintf(uri, sizeof(uri), "file:%s?psow=0", tu_path(dir, "p.db"));
	sqlite3 *w, *r;
	int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI;
	assert_int_equal(sqlite3_open_v2(uri, &w, flags, walbuf_vfs_name()), SQLITE_OK);
	exec(w, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
	assert_int_equal(sqlite3_open_v2(uri, &r, flags, NULL), SQLITE_OK);
	for (int i = 1; i <= 120; i++) {
		char sql[128];
		snprintf(sql, sizeof(sql), "INSERT INTO t VALUES (%d, randomblob(%d))", i, 50 + i * 211 % 1500);
		exec(w, sql);
		assert_int_equal(q_int(r, "SELECT count(*) FROM t"), i);
		assert_int_equal(q_int(r, "SELECT sum(length(v)) FROM t"), q_int(w, "SELECT sum(length(v)) FROM t"));
	}
	sqlite3_close(r);
	sqlite3_close(w);
}

/* A transaction larger than the page cache spills pages to the WAL and
 * reads them back before it commits. */
static void test_walbuf_spilled_pages_read_back(void **state)
{
	const char *dir = *state;
	const char *path = tu_path(dir, "s.db");
	sqlite3 *w = open_db(path, 1);
	exec(w, "PRAGMA cache_size=8; CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB); CREATE INDEX t_v ON t(v)");
	exec(w, "BEGIN");
	exec(w, "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000) "
	        "INSERT INTO t SELECT i, randomblob(64) FROM c");
	assert_int_equal(q_int(w, "SELECT count(*) FROM t WHERE v IS NOT NULL"), 20000);
	assert_int_equal(q_int(w, "SELECT count(*) FROM t INDEXED BY t_v WHERE v > x''"), 20000);
	exec(w, "UPDATE t SET v = zeroblob(64) WHERE k % 3 = 0");
	exec(w, "COMMIT");
	sqlite3 *r = open_db(path, 0);
	assert_int_equal(q_int(r, "SELECT count(*) FROM t WHERE v = zeroblob(64)"), 6666);
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(r, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
	sqlite3_finalize(st);
	sqlite3_close(r);
	sqlite3_close(w);
}

/* Frames as large as the buffer or larger go straight to the file; the
 * WAL restarting from its start after a checkpoint is a write elsewhere. */
static void test_walbuf_large_pages_and_wal_restarts(void **state)
{
	const char *dir = *state;
	static const int page_sizes[] = {512, 4096, 65536};
	for (size_t p = 0; p < sizeof(page_sizes) / sizeof(page_sizes[0]); p++) {
		char name[32], sql[160];
		snprintf(name, sizeof(name), "p%d.db", page_sizes[p]);
		const char *path = tu_path(dir, name);
		sqlite3 *w;
		assert_int_equal(sqlite3_open_v2(path, &w, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, walbuf_vfs_name()),
		                 SQLITE_OK);
		snprintf(sql, sizeof(sql), "PRAGMA page_size=%d; PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL", page_sizes[p]);
		exec(w, sql);
		exec(w, "CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
		sqlite3 *r = open_db(path, 0);
		for (int i = 1; i <= 60; i++) {
			snprintf(sql, sizeof(sql), "INSERT INTO t VALUES (%d, randomblob(%d))", i, i * 997 % 70000);
			exec(w, sql);
			if (i % 20 == 0)
				exec(w, "PRAGMA wal_checkpoint(RESTART)");
			assert_int_equal(q_int(r, "SELECT count(*) FROM t"), i);
		}
		assert_int_equal(q_int(w, "PRAGMA page_size"), page_sizes[p]);
		assert_int_equal(q_int(r, "SELECT sum(length(v)) FROM t"), q_int(w, "SELECT sum(length(v)) FROM t"));
		sqlite3_close(r);
		sqlite3_close(w);
	}
}

/* A store's commits are on disk when weft_db_append returns, even if the
 * process then dies without closing anything. */
static void test_walbuf_commits_survive_exit_without_close(void **state)
{
	const char *dir = *state;
	tu_clock clock = {1700000000000ull};
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		weft_db *db = tu_open(dir, "x.db", &clock, 7);
		for (int i = 0; i < 50; i++) {
			weft_id id;
			char payload[200];
			memset(payload, 'a' + i % 26, sizeof(payload));
			if (weft_db_append(&id, db, "home", "note", NULL, payload, sizeof(payload)) != WEFT_OK)
				_exit(2);
		}
		_exit(0); /* no weft_db_close: nothing left in memory may matter */
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	weft_db *db = tu_open(dir, "x.db", &clock, 7);
	char *n = tu_query(db, "SELECT count(*), max(seq) FROM weft_event");
	assert_string_equal(n, "50|50");
	free(n);
	weft_verify_report rep;
	tu_ok(db, weft_db_verify(&rep, db, NULL, NULL));
	assert_int_equal(rep.checked, 50);
	weft_db_close(db);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_walbuf_commit_is_visible_to_another_connection, tu_setup_dir, tu_teardown_dir),
		cmocka_unit_test_setup_teardown(test_walbuf_padded_commits_are_visible, tu_setup_dir, tu_teardown_dir),
		cmocka_unit_test_setup_teardown(test_walbuf_spilled_pages_read_back, tu_setup_dir, tu_teardown_dir),
		cmocka_unit_test_setup_teardown(test_walbuf_large_pages_and_wal_restarts, tu_setup_dir, tu_teardown_dir),
		cmocka_unit_test_setup_teardown(test_walbuf_commits_survive_exit_without_close, tu_setup_dir, tu_teardown_dir),
	};
	return cmocka_run_group_tests_name("walbuf", tests, NULL, NULL);
}
