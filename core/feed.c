/* The change feed: named consumers with durable cursors; and read queries. */
#include <string.h>

#include "core/alloc.h"
#include "core/store.h"

struct weft_feed {
	weft_db *db;
	char *name;
	uint64_t cursor; /* last change delivered by weft_feed_next */
	sqlite3_stmt *next;
	weft_change cur;
	char *table, *cols;
	void *pk_bytes;
};

int weft_feed_open(weft_feed **out, weft_db *db, const char *name)
{
	if (!db)
		return err_set(NULL, WEFT_EINVAL, "weft_feed_open: db must not be NULL");
	if (!out || !name || !name[0] || strlen(name) > 128)
		return err_set(&db->err, WEFT_EINVAL, "weft_feed_open: a consumer name of 1 to 128 bytes is required");
	if (db->readonly)
		return err_set(&db->err, WEFT_EPERM, "the change feed needs a store opened for writing (cursors are saved)");
	*out = NULL;
	weft_feed *f = weft__calloc(1, sizeof(*f));
	if (!f || !(f->name = weft__strdup(name))) {
		weft__free(f);
		return err_set(&db->err, WEFT_ENOMEM, "out of memory opening a feed");
	}
	f->db = db;
	int rc = store_begin(db);
	sqlite3_stmt *st = NULL;
	if (rc == WEFT_OK) {
		/* A new consumer starts at the end: it reads the tables for the
		 * state so far, and the feed for what changes after. */
		int s = sqlite3_prepare_v2(db->sql,
			"INSERT OR IGNORE INTO weft_feed(name, cursor) VALUES (?1, "
			"coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'weft_change'), 0))", -1, &st, NULL);
		if (s == SQLITE_OK) {
			sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
			s = sqlite3_step(st);
		}
		sqlite3_finalize(st);
		if (s == SQLITE_DONE)
			s = sqlite3_prepare_v2(db->sql, "SELECT cursor FROM weft_feed WHERE name = ?1", -1, &st, NULL);
		if (s == SQLITE_OK) {
			sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
			s = sqlite3_step(st);
			f->cursor = (uint64_t)sqlite3_column_int64(st, 0);
			sqlite3_finalize(st);
		}
		rc = s == SQLITE_ROW ? store_commit(db) : store_sqlite_error(db, s, "opening a feed");
		if (rc < 0)
			store_rollback(db);
	}
	if (rc == WEFT_OK) {
		int s = sqlite3_prepare_v2(db->sql, "SELECT seq, tbl, pk, op, cols, event FROM weft_change "
		                           "WHERE seq > ?1 ORDER BY seq LIMIT 1", -1, &f->next, NULL);
		if (s != SQLITE_OK)
			rc = store_sqlite_error(db, s, "opening a feed");
	}
	if (rc < 0) {
		weft_feed_free(f);
		return rc;
	}
	*out = f;
	return WEFT_OK;
}

void weft_feed_free(weft_feed *f)
{
	if (!f)
		return;
	sqlite3_finalize(f->next);
	weft__free(f->name);
	weft__free(f->table);
	weft__free(f->cols);
	weft__free(f->pk_bytes);
	weft__free(f);
}

/* A NUL-terminated copy of a text (or NULL: empty) column. */
static char *copy_column(sqlite3_stmt *st, int i)
{
	size_t n = (size_t)sqlite3_column_bytes(st, i);
	const void *p = sqlite3_column_blob(st, i);
	char *s = weft__malloc(n + 1);
	if (!s)
		return NULL;
	if (n && p)
		memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

int weft_feed_next(const weft_change **out, weft_feed *f)
{
	if (!out || !f)
		return err_set(NULL, WEFT_EINVAL, "weft_feed_next: NULL argument");
	*out = NULL;
	weft_db *db = f->db;
	sqlite3_reset(f->next);
	sqlite3_bind_int64(f->next, 1, (sqlite3_int64)f->cursor);
	int rc = sqlite3_step(f->next);
	if (rc == SQLITE_DONE) {
		sqlite3_reset(f->next);
		return WEFT_ITEROVER;
	}
	if (rc != SQLITE_ROW) {
		sqlite3_reset(f->next);
		return store_sqlite_error(db, rc, "reading the change feed");
	}
	weft__free(f->table);
	weft__free(f->cols);
	weft__free(f->pk_bytes);
	/* Text is read through the blob accessor: no NUL to add, so no
	 * allocation that could fail unseen. */
	f->table = copy_column(f->next, 1);
	f->cols = copy_column(f->next, 4);
	size_t n = (size_t)sqlite3_column_bytes(f->next, 2);
	int type = sqlite3_column_type(f->next, 2);
	f->pk_bytes = weft__malloc(n + 1);
	if (!f->table || !f->cols || !f->pk_bytes) {
		sqlite3_reset(f->next);
		return err_set(&db->err, WEFT_ENOMEM, "out of memory reading the change feed");
	}
	memset(&f->cur, 0, sizeof(f->cur));
	f->cur.seq = (uint64_t)sqlite3_column_int64(f->next, 0);
	f->cur.table = f->table;
	f->cur.columns = f->cols;
	f->cur.op = (weft_change_op)sqlite3_column_int(f->next, 3);
	if (type == SQLITE_INTEGER) {
		f->cur.pk = weft_int(sqlite3_column_int64(f->next, 2));
	} else {
		const void *p = sqlite3_column_blob(f->next, 2);
		if (n && p)
			memcpy(f->pk_bytes, p, n);
		((char *)f->pk_bytes)[n] = '\0';
		f->cur.pk = type == SQLITE_TEXT ? weft_textn(f->pk_bytes, n) : weft_blob(f->pk_bytes, n);
	}
	if (sqlite3_column_bytes(f->next, 5) == 32)
		memcpy(f->cur.event.bytes, sqlite3_column_blob(f->next, 5), 32);
	sqlite3_reset(f->next);
	f->cursor = f->cur.seq;
	*out = &f->cur;
	return WEFT_OK;
}

int weft_feed_ack(weft_feed *f, uint64_t seq)
{
	if (!f)
		return err_set(NULL, WEFT_EINVAL, "weft_feed_ack: f must not be NULL");
	weft_db *db = f->db;
	int rc = store_begin(db);
	if (rc < 0)
		return rc;
	sqlite3_stmt *st;
	int s = sqlite3_prepare_v2(db->sql, "UPDATE weft_feed SET cursor = max(cursor, ?2) WHERE name = ?1",
	                           -1, &st, NULL);
	if (s == SQLITE_OK) {
		sqlite3_bind_text(st, 1, f->name, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)seq);
		s = sqlite3_step(st);
		sqlite3_finalize(st);
	}
	if (s == SQLITE_DONE)
		rc = store_exec(db, "DELETE FROM weft_change WHERE seq <= (SELECT min(cursor) FROM weft_feed)",
		                "pruning the change feed");
	else
		rc = store_sqlite_error(db, s, "saving a feed cursor");
	if (rc == WEFT_OK)
		return store_commit(db);
	store_rollback(db);
	return rc;
}

int weft_db_query(weft_db *db, const char *sql, weft_row_cb cb, void *payload)
{
	if (!db)
		return err_set(NULL, WEFT_EINVAL, "weft_db_query: db must not be NULL");
	if (!sql || !cb)
		return err_set(&db->err, WEFT_EINVAL, "weft_db_query: sql and cb must not be NULL");
	sqlite3_stmt *st;
	const char *tail;
	int rc = sqlite3_prepare_v2(db->sql, sql, -1, &st, &tail);
	if (rc != SQLITE_OK)
		return err_set(&db->err, WEFT_EINVAL, "query failed: %s", sqlite3_errmsg(db->sql));
	if (!st)
		return err_set(&db->err, WEFT_EINVAL, "the query is empty");
	while (*tail == ' ' || *tail == '\n' || *tail == '\t' || *tail == ';' || *tail == '\r')
		tail++;
	if (*tail) {
		sqlite3_finalize(st);
		return err_set(&db->err, WEFT_EINVAL, "give one statement at a time (extra text: \"%.40s\")", tail);
	}
	if (!sqlite3_stmt_readonly(st)) {
		sqlite3_finalize(st);
		return err_set(&db->err, WEFT_EPERM, "weft query only reads; change derived tables through weft "
		               "transactions (weft_txn_*, or `weft put`, `weft del`, `weft incr`)");
	}
	int n = sqlite3_column_count(st);
	const char **names = weft__calloc((size_t)n + 1, sizeof(char *));
	weft_value *vals = weft__calloc((size_t)n + 1, sizeof(weft_value));
	if (!names || !vals) {
		weft__free(names);
		weft__free(vals);
		sqlite3_finalize(st);
		return err_set(&db->err, WEFT_ENOMEM, "out of memory running a query");
	}
	for (int i = 0; i < n; i++) {
		names[i] = sqlite3_column_name(st, i);
		if (!names[i]) {
			weft__free(names);
			weft__free(vals);
			sqlite3_finalize(st);
			return err_set(&db->err, WEFT_ENOMEM, "out of memory running a query");
		}
	}
	int out = WEFT_OK;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		for (int i = 0; i < n; i++) {
			switch (sqlite3_column_type(st, i)) {
			case SQLITE_INTEGER:
				vals[i] = weft_int(sqlite3_column_int64(st, i));
				break;
			case SQLITE_FLOAT:
				vals[i] = weft_real(sqlite3_column_double(st, i));
				break;
			case SQLITE_TEXT: {
				/* NUL-terminated for the callback's convenience; adding
				 * the NUL can fail for want of memory. */
				const char *t = (const char *)sqlite3_column_text(st, i);
				if (!t) {
					rc = SQLITE_NOMEM;
					goto stop;
				}
				vals[i] = weft_textn(t, (size_t)sqlite3_column_bytes(st, i));
				break;
			}
			case SQLITE_BLOB:
				vals[i] = weft_blob(sqlite3_column_blob(st, i), (size_t)sqlite3_column_bytes(st, i));
				break;
			default:
				vals[i] = weft_null();
			}
		}
		if (cb(n, names, vals, payload)) {
			out = err_set(&db->err, WEFT_EUSER, "stopped by the query callback");
			break;
		}
	}
stop:
	if (out == WEFT_OK && rc == SQLITE_NOMEM)
		out = err_set(&db->err, WEFT_ENOMEM, "out of memory running a query");
	if (out == WEFT_OK && rc != SQLITE_DONE)
		out = err_set(&db->err, WEFT_EINVAL, "query failed: %s", sqlite3_errmsg(db->sql));
	sqlite3_finalize(st);
	weft__free(names);
	weft__free(vals);
	return out;
}
