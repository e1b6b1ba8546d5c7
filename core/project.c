/* Derived tables: row merge, uniqueness, idempotency, rebuild, schema. */
#include "core/project.h"

#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "core/alloc.h"
#include "core/rows.h"
#include "core/schema.h"

const char project_schema_sql[] =
	"CREATE TABLE weft_schema(version INTEGER PRIMARY KEY, ddl TEXT NOT NULL);"
	/* Every applied row operation, per cell; the input of every rule.
	 * Keyed by row, so a row's operations are one range and inserting
	 * a cell writes one b-tree. */
	"CREATE TABLE weft_op("
	"  tbl TEXT NOT NULL, pk NOT NULL, event INTEGER NOT NULL, idx INTEGER NOT NULL,"
	"  col TEXT, kind INTEGER NOT NULL, value,"
	"  PRIMARY KEY(tbl, pk, event, idx)) WITHOUT ROWID;"
	/* The event that took effect for each (scope, idempotency key). */
	"CREATE TABLE weft_effect(scope INTEGER NOT NULL, idem TEXT NOT NULL, event INTEGER NOT NULL,"
	"  PRIMARY KEY(scope, idem)) WITHOUT ROWID;"
	"CREATE TABLE weft_dup(event INTEGER PRIMARY KEY, winner INTEGER NOT NULL);"
	"CREATE TABLE weft_conflict(tbl TEXT NOT NULL, col TEXT NOT NULL, loser_pk NOT NULL,"
	"  value, winner_pk, loser_event BLOB, PRIMARY KEY(tbl, col, loser_pk)) WITHOUT ROWID;"
	"CREATE TABLE weft_change(seq INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT NOT NULL, pk,"
	"  op INTEGER NOT NULL, cols TEXT NOT NULL, event BLOB);"
	"CREATE TABLE weft_feed(name TEXT PRIMARY KEY, cursor INTEGER NOT NULL) WITHOUT ROWID;";

/* ------------------------------------------------------ statement cache */

/*
 * Statements are prepared on first use and kept until the schema changes:
 * per derived table (TS_*), per UNIQUE column (CS_*), and a few that do not
 * depend on the schema (GS_*). Preparing lazily keeps a schema change cheap
 * (it swaps the cache several times) and keeps SQL parsing off the per-event
 * path.
 */
enum { TS_UPSERT, TS_DELETE, TS_SELECT, TS__COUNT };
enum { CS_GET, CS_SET, CS_DEL, CS_RANK, CS_HOLDERS, CS_SETCOL, CS_CLEARCOL, CS__COUNT };
enum {
	GS_CONSUMERS,
	GS_PENDING_LIST,
	GS_PENDING_CLEAR,
	GS_TOUCHED_LIST,
	GS_TOUCHED_CLEAR,
	GS_CHANGE_ADD,
	GS_CHANGE_CLEAR,
	GS_CONFLICT_CLEAR,
	GS_CONFLICT_ADD,
	GS_EVENT_PAYLOAD,
	GS_OPS_DELETE_ROW,
	GS_ROW_OPS,
	GS_EVENT_STAMP,
	GS__COUNT
};

static const char *const gs_sql[GS__COUNT] = {
	[GS_CONSUMERS] = "SELECT EXISTS (SELECT 1 FROM weft_feed)",
	[GS_PENDING_LIST] = "SELECT tbl, pk FROM temp.weft_pending",
	[GS_PENDING_CLEAR] = "DELETE FROM temp.weft_pending",
	[GS_TOUCHED_LIST] = "SELECT tbl, pk, existed, old, event FROM temp.weft_touched",
	[GS_TOUCHED_CLEAR] = "DELETE FROM temp.weft_touched",
	[GS_CHANGE_ADD] = "INSERT INTO weft_change(tbl, pk, op, cols, event) VALUES (?1, ?2, ?3, ?4, ?5)",
	[GS_CHANGE_CLEAR] = "DELETE FROM weft_change",
	[GS_CONFLICT_CLEAR] = "DELETE FROM weft_conflict WHERE tbl = ?1 AND col = ?2 AND value = ?3",
	[GS_CONFLICT_ADD] = "INSERT OR REPLACE INTO weft_conflict(tbl, col, loser_pk, value, winner_pk, loser_event) "
	                    "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
	[GS_EVENT_PAYLOAD] = "SELECT payload FROM weft_event WHERE n = ?1",
	[GS_OPS_DELETE_ROW] = "DELETE FROM weft_op WHERE tbl = ?1 AND pk = ?2 AND event = ?3",
	[GS_ROW_OPS] = "SELECT kind, col, value, idx, event FROM weft_op WHERE tbl = ?1 AND pk = ?2",
	[GS_EVENT_STAMP] = "SELECT e.hlc, a.pk, e.id FROM weft_event e JOIN weft_author a ON a.ref = e.author "
	                   "WHERE e.n = ?1",
};

/* -------------------------------------------------------------- stamps */

/* Order of writes: (HLC, author key, event id, cell index). */
typedef struct stamp {
	uint64_t hlc;
	unsigned char author[32];
	unsigned char id[32];
	uint32_t idx;
} stamp;

static int stamp_cmp(const stamp *a, const stamp *b)
{
	if (a->hlc != b->hlc)
		return a->hlc < b->hlc ? -1 : 1;
	int c = memcmp(a->author, b->author, 32);
	if (!c)
		c = memcmp(a->id, b->id, 32);
	if (c)
		return c < 0 ? -1 : 1;
	return a->idx < b->idx ? -1 : a->idx > b->idx;
}

typedef struct proj_table {
	sqlite3_stmt *ts[TS__COUNT];
	sqlite3_stmt **cs; /* CS__COUNT per column; only unique columns use them */
	int ncols;         /* of the schema the cache was made for */
} proj_table;

struct proj_cache {
	int ntables;
	proj_table *t;
	sqlite3_stmt *gs[GS__COUNT];
	/* Someone wants to know what changed (a feed consumer or a commit
	 * callback): only then are rows' old contents recorded. */
	int listening;
	/* Stamps (idx unused) of the event being applied and of the last one
	 * looked up, by weft_event.n: most cells gathered are from these. */
	int64_t cur_n, last_n;
	stamp cur, last;
	/* Rows the event being applied wrote, to derive at its end (keys
	 * point into its payload); pend_sql: temp.weft_pending has more. */
	struct pend *pend;
	size_t npend, cappend;
	int pend_sql;
	/* A bind that failed (copying text or a blob can run out of memory):
	 * the next step() returns it instead of running the statement. */
	int bind_rc;
};

typedef struct pend {
	char table[SCHEMA_NAME_MAX + 1];
	weft_value pk;
} pend;

static void cache_free(weft_db *db)
{
	struct proj_cache *c = db->proj;
	if (!c)
		return;
	for (int i = 0; i < c->ntables; i++) {
		for (int k = 0; k < TS__COUNT; k++)
			sqlite3_finalize(c->t[i].ts[k]);
		if (c->t[i].cs) {
			/* Not db->schema: a schema change swaps it under the cache. */
			int n = c->t[i].ncols * CS__COUNT;
			for (int k = 0; k < n; k++)
				sqlite3_finalize(c->t[i].cs[k]);
			weft__free(c->t[i].cs);
		}
	}
	for (int k = 0; k < GS__COUNT; k++)
		sqlite3_finalize(c->gs[k]);
	weft__free(c->pend);
	weft__free(c->t);
	weft__free(c);
	db->proj = NULL;
}

void project_unload(weft_db *db)
{
	cache_free(db);
	schema_free(db->schema);
	db->schema = NULL;
	db->schema_version = 0;
}

/* A growable SQL text. */
typedef struct sqlbuf {
	char *s;
	size_t len, cap;
	int oom;
} sqlbuf;

static void sb_add(sqlbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(sqlbuf *b, const char *fmt, ...)
{
	if (b->oom)
		return;
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->oom = 1;
			return;
		}
		if (b->s && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = (b->cap ? b->cap * 2 : 256) + (size_t)n;
		char *s = weft__realloc(b->s, cap);
		if (!s) {
			b->oom = 1;
			return;
		}
		b->s = s;
		b->cap = cap;
	}
}

static int prep(weft_db *db, sqlite3_stmt **st, sqlbuf *b)
{
	if (b->oom) {
		weft__free(b->s);
		memset(b, 0, sizeof(*b));
		return err_set(&db->err, WEFT_ENOMEM, "out of memory preparing derived-table statements");
	}
	int rc = sqlite3_prepare_v3(db->sql, b->s, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
	weft__free(b->s);
	memset(b, 0, sizeof(*b));
	return rc == SQLITE_OK ? WEFT_OK : store_sqlite_error(db, rc, "preparing derived-table statements");
}

/* Claim tables record, per UNIQUE column, the value each row claims. */
#define CLAIM "\"weft_claim:%s.%s\""

/* An empty cache shaped for db->schema (which may be NULL), replacing any
 * cache made for another schema. */
static int cache_build(weft_db *db)
{
	cache_free(db);
	const schema *s = db->schema;
	int n = s ? s->ntables : 0;
	struct proj_cache *c = weft__calloc(1, sizeof(*c));
	if (!c || (n && !(c->t = weft__calloc((size_t)n, sizeof(proj_table))))) {
		weft__free(c);
		return err_set(&db->err, WEFT_ENOMEM, "out of memory preparing derived tables");
	}
	db->proj = c;
	c->ntables = n;
	for (int i = 0; i < n; i++) {
		const schema_table *t = &s->tables[i];
		c->t[i].ncols = t->ncols;
		if (!(c->t[i].cs = weft__calloc((size_t)t->ncols * CS__COUNT, sizeof(sqlite3_stmt *)))) {
			cache_free(db);
			return err_set(&db->err, WEFT_ENOMEM, "out of memory preparing derived tables");
		}
	}
	return WEFT_OK;
}

static struct proj_cache *cache(weft_db *db)
{
	if (!db->proj && cache_build(db) < 0)
		return NULL;
	return db->proj;
}

/* A schema-independent statement, reset. NULL with db->err set on failure. */
static sqlite3_stmt *gstmt(weft_db *db, int which)
{
	struct proj_cache *c = cache(db);
	if (!c)
		return NULL;
	if (c->gs[which]) {
		sqlite3_reset(c->gs[which]);
		sqlite3_clear_bindings(c->gs[which]);
		return c->gs[which];
	}
	int rc = sqlite3_prepare_v3(db->sql, gs_sql[which], -1, SQLITE_PREPARE_PERSISTENT, &c->gs[which], NULL);
	if (rc != SQLITE_OK) {
		store_sqlite_error(db, rc, "preparing derived-table statements");
		return NULL;
	}
	return c->gs[which];
}

/* The statements of derived table ti (TS_*), prepared. */
static sqlite3_stmt **table_stmts(weft_db *db, int ti)
{
	struct proj_cache *c = cache(db);
	if (!c)
		return NULL;
	proj_table *pt = &c->t[ti];
	if (pt->ts[TS__COUNT - 1])
		return pt->ts;
	const schema_table *t = &db->schema->tables[ti];
	const char *pk = t->cols[t->pk].name;
	sqlbuf b = {0};
	int rc;
	sb_add(&b, "INSERT INTO \"%s\"(", t->name);
	for (int k = 0; k < t->ncols; k++)
		sb_add(&b, "%s\"%s\"", k ? "," : "", t->cols[k].name);
	sb_add(&b, ") VALUES (");
	for (int k = 0; k < t->ncols; k++)
		sb_add(&b, "%s?%d", k ? "," : "", k + 1);
	sb_add(&b, ") ON CONFLICT(\"%s\") DO ", pk);
	if (t->ncols == 1) {
		sb_add(&b, "NOTHING");
	} else {
		sb_add(&b, "UPDATE SET ");
		int first = 1;
		for (int k = 0; k < t->ncols; k++) {
			if (k == t->pk)
				continue;
			sb_add(&b, "%s\"%s\" = excluded.\"%s\"", first ? "" : ",", t->cols[k].name, t->cols[k].name);
			first = 0;
		}
	}
	if (!pt->ts[TS_UPSERT] && (rc = prep(db, &pt->ts[TS_UPSERT], &b)) < 0)
		return NULL;
	weft__free(b.s);
	memset(&b, 0, sizeof(b));
	sb_add(&b, "DELETE FROM \"%s\" WHERE \"%s\" = ?1", t->name, pk);
	if (!pt->ts[TS_DELETE] && (rc = prep(db, &pt->ts[TS_DELETE], &b)) < 0)
		return NULL;
	weft__free(b.s);
	memset(&b, 0, sizeof(b));
	sb_add(&b, "SELECT ");
	for (int k = 0; k < t->ncols; k++)
		sb_add(&b, "%s\"%s\"", k ? "," : "", t->cols[k].name);
	sb_add(&b, " FROM \"%s\" WHERE \"%s\" = ?1", t->name, pk);
	if ((rc = prep(db, &pt->ts[TS_SELECT], &b)) < 0)
		return NULL;
	return pt->ts;
}

/* The statements of UNIQUE column k of table ti (CS_*), prepared. */
static sqlite3_stmt **claim_stmts(weft_db *db, int ti, int k)
{
	struct proj_cache *c = cache(db);
	if (!c)
		return NULL;
	sqlite3_stmt **cs = &c->t[ti].cs[k * CS__COUNT];
	if (cs[CS__COUNT - 1])
		return cs;
	const schema_table *t = &db->schema->tables[ti];
	const char *pk = t->cols[t->pk].name, *tn = t->lname, *cn = t->cols[k].lname;
	for (int which = 0; which < CS__COUNT; which++) {
		if (cs[which])
			continue;
		sqlbuf b = {0};
		switch (which) {
		case CS_GET:
			sb_add(&b, "SELECT value FROM " CLAIM " WHERE pk = ?1", tn, cn);
			break;
		case CS_SET:
			sb_add(&b, "INSERT OR REPLACE INTO " CLAIM "(pk, value, hlc, eid, idx) VALUES (?1, ?2, ?3, ?4, ?5)",
			       tn, cn);
			break;
		case CS_DEL:
			sb_add(&b, "DELETE FROM " CLAIM " WHERE pk = ?1", tn, cn);
			break;
		case CS_RANK:
			sb_add(&b, "SELECT pk, eid, value FROM " CLAIM " WHERE value = ?1 ORDER BY hlc, eid, idx", tn, cn);
			break;
		case CS_HOLDERS:
			sb_add(&b, "SELECT \"%s\" FROM \"%s\" WHERE \"%s\" = ?1", pk, t->name, t->cols[k].name);
			break;
		case CS_SETCOL:
			sb_add(&b, "UPDATE \"%s\" SET \"%s\" = ?2 WHERE \"%s\" = ?1", t->name, t->cols[k].name, pk);
			break;
		default:
			sb_add(&b, "UPDATE \"%s\" SET \"%s\" = NULL WHERE \"%s\" = ?1", t->name, t->cols[k].name, pk);
		}
		if (prep(db, &cs[which], &b) < 0)
			return NULL;
	}
	return cs;
}

/* Keeps the first failed bind for the next step(). */
static void bind_rc(weft_db *db, int rc)
{
	if (rc != SQLITE_OK && db->proj && !db->proj->bind_rc)
		db->proj->bind_rc = rc;
}

/* sqlite3_step, unless a bind failed since the last step: a statement never
 * runs with a value missing. Every caller checks the result: after some
 * errors SQLite has rolled the transaction back, and nothing may go on. */
static int step(weft_db *db, sqlite3_stmt *st)
{
	if (!db->proj && !cache(db))
		return SQLITE_NOMEM;
	int rc = db->proj->bind_rc;
	if (rc) {
		db->proj->bind_rc = 0;
		return rc;
	}
	return sqlite3_step(st);
}

/* Creates the derived tables and claim tables of the current schema. */
static int create_tables(weft_db *db)
{
	const schema *s = db->schema;
	int rc = WEFT_OK;
	for (int i = 0; i < s->ntables && rc == WEFT_OK; i++) {
		const schema_table *t = &s->tables[i];
		sqlbuf b = {0};
		sb_add(&b, "CREATE TABLE \"%s\"(", t->name);
		for (int k = 0; k < t->ncols; k++) {
			const schema_col *c = &t->cols[k];
			sb_add(&b, "%s\"%s\" %s%s%s%s", k ? ", " : "", c->name, schema_type_sql(c->type),
			       c->pk ? " PRIMARY KEY" : "", c->unique ? " UNIQUE" : "", c->notnull ? " NOT NULL" : "");
		}
		sb_add(&b, ") WITHOUT ROWID;");
		for (int k = 0; k < t->ncols; k++) {
			const schema_col *c = &t->cols[k];
			if (!c->unique)
				continue;
			sb_add(&b, "CREATE TABLE " CLAIM "(pk %s PRIMARY KEY, value %s, hlc INTEGER, eid BLOB, idx INTEGER)"
			       " WITHOUT ROWID;", t->lname, c->lname, schema_type_sql(t->cols[t->pk].type),
			       schema_type_sql(c->type));
			sb_add(&b, "CREATE INDEX \"weft_claim:%s.%s:rank\" ON " CLAIM "(value, hlc, eid, idx);",
			       t->lname, c->lname, t->lname, c->lname);
		}
		if (b.oom) {
			weft__free(b.s);
			return err_set(&db->err, WEFT_ENOMEM, "out of memory creating derived tables");
		}
		rc = store_exec(db, b.s, "creating a derived table");
		weft__free(b.s);
	}
	return rc;
}

/* Drops every derived and claim table (whatever schema made them). */
static int drop_tables(weft_db *db)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db->sql,
		"SELECT name FROM sqlite_schema WHERE type = 'table' AND "
		"(name LIKE 'weft\\_claim:%' ESCAPE '\\' OR name IN (SELECT value FROM json_each(?1)))",
		-1, &st, NULL);
	if (rc != SQLITE_OK)
		return store_sqlite_error(db, rc, "listing derived tables");
	/* The derived tables are those the stored schema declares. */
	sqlbuf names = {0};
	sb_add(&names, "[");
	for (int i = 0; db->schema && i < db->schema->ntables; i++)
		sb_add(&names, "%s\"%s\"", i ? "," : "", db->schema->tables[i].name);
	sb_add(&names, "]");
	if (names.oom) {
		sqlite3_finalize(st);
		weft__free(names.s);
		return err_set(&db->err, WEFT_ENOMEM, "out of memory dropping derived tables");
	}
	bind_rc(db, sqlite3_bind_text(st, 1, names.s, -1, SQLITE_TRANSIENT));
	weft__free(names.s);
	sqlbuf b = {0};
	while ((rc = step(db, st)) == SQLITE_ROW)
		sb_add(&b, "DROP TABLE IF EXISTS \"%s\";", (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		weft__free(b.s);
		return store_sqlite_error(db, rc, "listing derived tables");
	}
	if (b.oom) {
		weft__free(b.s);
		return err_set(&db->err, WEFT_ENOMEM, "out of memory dropping derived tables");
	}
	rc = b.s ? store_exec(db, b.s, "dropping derived tables") : WEFT_OK;
	weft__free(b.s);
	return rc;
}

/* ------------------------------------------------------- value helpers */

/* A failed statement may make SQLite roll the whole transaction back; the
 * caller must then not go on as if its earlier writes were pending. */
static int in_transaction(weft_db *db, const char *doing)
{
	if (!sqlite3_get_autocommit(db->sql))
		return WEFT_OK;
	return err_set(&db->err, WEFT_ERROR, "SQLite rolled the transaction back while %s; nothing was written",
	               doing);
}

static void bind_value(weft_db *db, sqlite3_stmt *st, int i, const weft_value *v)
{
	int rc;
	switch (v->type) {
	case WEFT_INTEGER:
		rc = sqlite3_bind_int64(st, i, v->i);
		break;
	case WEFT_REAL:
		rc = sqlite3_bind_double(st, i, v->r);
		break;
	case WEFT_TEXT:
		rc = sqlite3_bind_text(st, i, v->p, (int)v->n, SQLITE_TRANSIENT);
		break;
	case WEFT_BLOB:
		if (v->n)
			rc = sqlite3_bind_blob(st, i, v->p, (int)v->n, SQLITE_TRANSIENT);
		else
			rc = sqlite3_bind_zeroblob(st, i, 0);
		break;
	default:
		rc = sqlite3_bind_null(st, i);
	}
	bind_rc(db, rc);
}

static void bind_sqlvalue(weft_db *db, sqlite3_stmt *st, int i, const sqlite3_value *v)
{
	bind_rc(db, sqlite3_bind_value(st, i, v));
}

static weft_value column_value(sqlite3_stmt *st, int i)
{
	switch (sqlite3_column_type(st, i)) {
	case SQLITE_INTEGER:
		return weft_int(sqlite3_column_int64(st, i));
	case SQLITE_FLOAT:
		return weft_real(sqlite3_column_double(st, i));
	case SQLITE_TEXT: {
		/* The blob accessor gives the bytes without adding a NUL,
		 * which could fail for want of memory. */
		const char *t = sqlite3_column_blob(st, i);
		return weft_textn(t, (size_t)sqlite3_column_bytes(st, i));
	}
	case SQLITE_BLOB: {
		const void *p = sqlite3_column_blob(st, i);
		return weft_blob(p, (size_t)sqlite3_column_bytes(st, i));
	}
	default:
		return weft_null();
	}
}

/* A table or column name from a result column, NUL-terminated, without
 * sqlite3_column_text's allocation. 0, or -1 if NULL or too long. */
static int column_name(sqlite3_stmt *st, int i, char out[SCHEMA_NAME_MAX + 1])
{
	int n = sqlite3_column_bytes(st, i);
	const void *p = sqlite3_column_blob(st, i);
	if (!p || n < 1 || n > SCHEMA_NAME_MAX)
		return -1;
	memcpy(out, p, (size_t)n);
	out[n] = '\0';
	return 0;
}

static int pk_matches(const schema_table *t, const weft_value *pk)
{
	return pk->type == t->cols[t->pk].type;
}

/* ------------------------------------------------------------- touch/feed */

/* Records a row's content before its first change in this transaction, so
 * project_finish can report exactly what changed. absent: the caller knows
 * the row did not exist before (a rebuild re-created it). */
static int touch(weft_db *db, const schema_table *t, int ti, const weft_value *pk, int absent)
{
	if (!db->proj || !db->proj->listening)
		return WEFT_OK;
	sqlite3_stmt *st = store_stmt(db, STMT_TOUCHED_GET);
	if (!st)
		return db->err.code;
	sqlite3_bind_text(st, 1, t->lname, -1, SQLITE_STATIC);
	bind_value(db, st, 2, pk);
	int rc = step(db, st);
	sqlite3_reset(st);
	if (rc == SQLITE_ROW) {
		if (!(st = store_stmt(db, STMT_TOUCHED_EVENT)))
			return db->err.code;
		sqlite3_bind_text(st, 1, t->lname, -1, SQLITE_STATIC);
		bind_value(db, st, 2, pk);
		sqlite3_bind_blob(st, 3, db->cur_event.bytes, 32, SQLITE_STATIC);
		rc = step(db, st);
		sqlite3_reset(st);
		return rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, "tracking changes");
	}
	if (rc != SQLITE_DONE)
		return store_sqlite_error(db, rc, "tracking changes");
	/* Old content as (name, value) pairs, so it compares across schemas. */
	sqlite3_stmt **ts = table_stmts(db, ti);
	if (!ts)
		return db->err.code;
	sqlite3_stmt *sel = ts[TS_SELECT];
	sqlite3_reset(sel);
	bind_value(db, sel, 1, pk);
	int existed = 0;
	if (!absent) {
		int s = step(db, sel);
		if (s != SQLITE_ROW && s != SQLITE_DONE) {
			sqlite3_reset(sel);
			return store_sqlite_error(db, s, "tracking changes");
		}
		existed = s == SQLITE_ROW;
	}
	size_t size = 0;
	for (int k = 0; existed && k < t->ncols; k++) {
		weft_value v = column_value(sel, k);
		size += 1 + strlen(t->cols[k].lname) + rows_value_size(&v);
	}
	unsigned char *blob = weft__malloc(size + 1), *p = blob;
	if (!blob) {
		sqlite3_reset(sel);
		return err_set(&db->err, WEFT_ENOMEM, "out of memory tracking changes");
	}
	for (int k = 0; existed && k < t->ncols; k++) {
		weft_value v = column_value(sel, k);
		size_t n = strlen(t->cols[k].lname);
		*p++ = (unsigned char)n;
		memcpy(p, t->cols[k].lname, n);
		p = rows_value_put(p + n, &v);
	}
	sqlite3_reset(sel);
	if (!(st = store_stmt(db, STMT_TOUCHED_ADD))) {
		weft__free(blob);
		return db->err.code;
	}
	sqlite3_bind_text(st, 1, t->lname, -1, SQLITE_STATIC);
	bind_value(db, st, 2, pk);
	sqlite3_bind_int(st, 3, existed);
	sqlite3_bind_blob(st, 4, blob, (int)size, SQLITE_STATIC);
	sqlite3_bind_blob(st, 5, db->cur_event.bytes, 32, SQLITE_STATIC);
	rc = step(db, st);
	sqlite3_reset(st);
	weft__free(blob);
	return rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, "tracking changes");
}

/* Finds the old value of column lname in an encoded old row. */
static int old_value(const unsigned char *p, const unsigned char *end, const char *lname, weft_value *out)
{
	size_t want = strlen(lname);
	while (p < end) {
		size_t n = *p++;
		if ((size_t)(end - p) < n)
			return 0;
		const unsigned char *name = p;
		p += n;
		if (rows_value_get(out, &p, end) < 0)
			return 0;
		if (n == want && memcmp(name, lname, n) == 0)
			return 1;
	}
	return 0;
}

static int table_index(const schema *s, const char *lname)
{
	for (int i = 0; s && i < s->ntables; i++)
		if (strcmp(s->tables[i].lname, lname) == 0)
			return i;
	return -1;
}

static int feed_has_consumers(weft_db *db, int *yes)
{
	sqlite3_stmt *st = gstmt(db, GS_CONSUMERS);
	if (!st)
		return db->err.code;
	int rc = step(db, st);
	*yes = rc == SQLITE_ROW && sqlite3_column_int(st, 0);
	sqlite3_reset(st);
	return rc == SQLITE_ROW ? WEFT_OK : store_sqlite_error(db, rc, "reading feed consumers");
}

int project_finish(weft_db *db)
{
	int consumers, rc;
	if ((rc = in_transaction(db, "recording changes")) < 0)
		return rc;
	/* Nobody listened: no row was recorded, and nothing is to report. */
	if (db->proj && !db->proj->listening)
		return WEFT_OK;
	if ((rc = feed_has_consumers(db, &consumers)) < 0)
		return rc;
	sqlite3_stmt *st = gstmt(db, GS_TOUCHED_LIST), *ins = gstmt(db, GS_CHANGE_ADD);
	if (!st || !ins)
		return db->err.code;
	int out = WEFT_OK;
	while (out == WEFT_OK && (rc = step(db, st)) == SQLITE_ROW) {
		char tl[SCHEMA_NAME_MAX + 1];
		if (column_name(st, 0, tl) < 0) {
			out = err_set(&db->err, WEFT_ECORRUPT, "a changed row's table name is unreadable");
			break;
		}
		weft_value pk = column_value(st, 1);
		int existed = sqlite3_column_int(st, 2);
		const unsigned char *old = sqlite3_column_blob(st, 3);
		const unsigned char *old_end = old ? old + sqlite3_column_bytes(st, 3) : NULL;
		int ti = table_index(db->schema, tl);
		const schema_table *t = ti >= 0 ? &db->schema->tables[ti] : NULL;
		sqlite3_stmt **ts = t ? table_stmts(db, ti) : NULL;
		if (t && !ts) {
			out = db->err.code;
			break;
		}
		sqlite3_stmt *sel = ts ? ts[TS_SELECT] : NULL;
		int exists = 0;
		if (sel) {
			sqlite3_reset(sel);
			bind_value(db, sel, 1, &pk);
			int s = step(db, sel);
			if (s != SQLITE_ROW && s != SQLITE_DONE) {
				sqlite3_reset(sel);
				out = store_sqlite_error(db, s, "recording changes");
				break;
			}
			exists = s == SQLITE_ROW;
		}
		sqlbuf cols = {0};
		sb_add(&cols, "%s", "");
		for (int k = 0; exists && k < t->ncols; k++) {
			weft_value was, now = column_value(sel, k);
			if (!existed || !old_value(old, old_end, t->cols[k].lname, &was) || rows_value_cmp(&was, &now))
				sb_add(&cols, "%s%s", cols.len ? "," : "", t->cols[k].name);
		}
		/* Columns a schema change removed changed too. */
		for (const unsigned char *p = old; exists && existed && p && p < old_end;) {
			size_t n = *p++;
			char lname[SCHEMA_NAME_MAX + 1];
			weft_value was;
			if (n > SCHEMA_NAME_MAX || (size_t)(old_end - p) < n)
				break;
			memcpy(lname, p, n);
			lname[n] = '\0';
			p += n;
			if (rows_value_get(&was, &p, old_end) < 0)
				break;
			if (schema_col_find(t, lname) < 0)
				sb_add(&cols, "%s%s", cols.len ? "," : "", lname);
		}
		if (sel)
			sqlite3_reset(sel);
		if (cols.oom) {
			out = err_set(&db->err, WEFT_ENOMEM, "out of memory recording changes");
		} else if ((existed && !exists) || (exists && cols.len)) {
			db->txn_changes++;
			if (consumers) {
				sqlite3_reset(ins);
				bind_rc(db, sqlite3_bind_text(ins, 1, t ? t->name : tl, -1, SQLITE_TRANSIENT));
				bind_value(db, ins, 2, &pk);
				sqlite3_bind_int(ins, 3, exists ? WEFT_CHANGE_UPSERT : WEFT_CHANGE_DELETE);
				bind_rc(db, sqlite3_bind_text(ins, 4, exists ? cols.s : "", -1, SQLITE_TRANSIENT));
				if (sqlite3_column_bytes(st, 4) == 32)
					bind_rc(db, sqlite3_bind_blob(ins, 5, sqlite3_column_blob(st, 4), 32, SQLITE_TRANSIENT));
				else
					sqlite3_bind_null(ins, 5);
				int irc = step(db, ins);
				if (irc != SQLITE_DONE)
					out = store_sqlite_error(db, irc, "recording changes");
			}
		}
		weft__free(cols.s);
	}
	if (out == WEFT_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
		out = store_sqlite_error(db, rc, "recording changes");
	sqlite3_reset(st);
	sqlite3_reset(ins);
	if (out == WEFT_OK && (st = gstmt(db, GS_TOUCHED_CLEAR)) == NULL)
		out = db->err.code;
	if (out == WEFT_OK && (rc = step(db, st)) != SQLITE_DONE)
		out = store_sqlite_error(db, rc, "recording changes");
	if (out == WEFT_OK && !consumers) {
		if ((st = gstmt(db, GS_CHANGE_CLEAR)) == NULL)
			out = db->err.code;
		else if ((rc = step(db, st)) != SQLITE_DONE)
			out = store_sqlite_error(db, rc, "pruning the change feed");
	}
	if (st)
		sqlite3_reset(st);
	return out;
}

/* ------------------------------------------------------------ one row */

typedef struct op {
	int kind;
	int col; /* declared column index, -1 if none/undeclared */
	stamp s;
	weft_value value; /* bytes owned by the row_ops */
} op;

/* The cells of one row, and the bytes their values point to. */
typedef struct row_ops {
	op *v;
	size_t n, cap;
	unsigned char **bufs;
	size_t nbufs, capbufs;
} row_ops;

static void ops_clear(row_ops *r)
{
	for (size_t i = 0; i < r->nbufs; i++)
		weft__free(r->bufs[i]);
	r->nbufs = 0;
	r->n = 0;
}

static void ops_free(row_ops *r)
{
	ops_clear(r);
	weft__free(r->v);
	weft__free(r->bufs);
	memset(r, 0, sizeof(*r));
}

static op *ops_push(weft_db *db, row_ops *r)
{
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 16;
		op *v = weft__realloc(r->v, cap * sizeof(op));
		if (!v) {
			err_set(&db->err, WEFT_ENOMEM, "out of memory deriving a row");
			return NULL;
		}
		r->v = v;
		r->cap = cap;
	}
	op *o = &r->v[r->n++];
	memset(o, 0, sizeof(*o));
	return o;
}

/* A copy of n bytes that lives until ops_clear. */
static const unsigned char *ops_keep(weft_db *db, row_ops *r, const void *p, size_t n)
{
	if (r->nbufs == r->capbufs) {
		size_t cap = r->capbufs ? r->capbufs * 2 : 8;
		unsigned char **b = weft__realloc(r->bufs, cap * sizeof(*b));
		if (!b)
			goto oom;
		r->bufs = b;
		r->capbufs = cap;
	}
	unsigned char *copy = weft__malloc(n ? n : 1);
	if (!copy)
		goto oom;
	if (n)
		memcpy(copy, p, n);
	r->bufs[r->nbufs++] = copy;
	return copy;
oom:
	err_set(&db->err, WEFT_ENOMEM, "out of memory deriving a row");
	return NULL;
}

/* The stamp (idx 0) of the event stored as weft_event.n. */
static int event_stamp(weft_db *db, int64_t n, stamp *out)
{
	struct proj_cache *c = db->proj;
	if (n == c->cur_n) {
		*out = c->cur;
		return WEFT_OK;
	}
	if (n != c->last_n) {
		sqlite3_stmt *st = gstmt(db, GS_EVENT_STAMP);
		if (!st)
			return db->err.code;
		sqlite3_bind_int64(st, 1, n);
		int rc = step(db, st);
		if (rc != SQLITE_ROW || sqlite3_column_bytes(st, 1) != 32 || sqlite3_column_bytes(st, 2) != 32) {
			sqlite3_reset(st);
			return rc == SQLITE_ROW || rc == SQLITE_DONE
			               ? err_set(&db->err, WEFT_ECORRUPT, "a row operation names a missing or malformed "
			                         "event; run `weft verify`, then `weft rebuild`")
			               : store_sqlite_error(db, rc, "reading row operations");
		}
		memset(&c->last, 0, sizeof(c->last));
		c->last.hlc = (uint64_t)sqlite3_column_int64(st, 0);
		memcpy(c->last.author, sqlite3_column_blob(st, 1), 32);
		memcpy(c->last.id, sqlite3_column_blob(st, 2), 32);
		c->last_n = n;
		sqlite3_reset(st);
	}
	*out = c->last;
	return WEFT_OK;
}

/*
 * Reads the operations of one row (tbl, pk) into r, one op per cell. A
 * put of columns is stored as one weft_op row whose value is the put's
 * span of the payload (col NULL, value a BLOB); a single cell (an
 * increment, or a put from a store written before spans) has its column
 * and value; a delete or a put of no columns has neither.
 */
static int gather(weft_db *db, const schema_table *t, const weft_value *pk, row_ops *r)
{
	sqlite3_stmt *st = gstmt(db, GS_ROW_OPS);
	if (!st)
		return db->err.code;
	sqlite3_bind_text(st, 1, t->lname, -1, SQLITE_STATIC);
	bind_value(db, st, 2, pk);
	int rc;
	ops_clear(r);
	while ((rc = step(db, st)) == SQLITE_ROW) {
		stamp s;
		int kind = sqlite3_column_int(st, 0);
		if ((rc = event_stamp(db, sqlite3_column_int64(st, 4), &s)) < 0) {
			sqlite3_reset(st);
			return rc;
		}
		s.idx = (uint32_t)sqlite3_column_int64(st, 3);
		char colbuf[SCHEMA_NAME_MAX + 1];
		const char *col = NULL;
		if (sqlite3_column_type(st, 1) != SQLITE_NULL) {
			if (column_name(st, 1, colbuf) < 0) {
				sqlite3_reset(st);
				return err_set(&db->err, WEFT_ECORRUPT, "a stored row operation names no valid column; "
				               "run `weft rebuild` to re-derive it from the log");
			}
			col = colbuf;
		}
		weft_value v = column_value(st, 2);
		if (v.type == WEFT_TEXT || v.type == WEFT_BLOB) {
			if (!(v.p = ops_keep(db, r, v.p, v.n)))
				goto fail;
		}
		if (kind == ROWOP_PUT && !col && v.type == WEFT_BLOB) {
			const unsigned char *p = v.p, *end = p + v.n;
			char name[ROWS_NAME_MAX + 1];
			weft_value cv;
			int got;
			while ((got = rows_cells_next(&p, end, name, &cv)) > 0) {
				op *o = ops_push(db, r);
				if (!o)
					goto fail;
				o->kind = ROWOP_PUT;
				o->col = schema_col_find(t, name);
				o->s = s;
				o->value = cv;
				s.idx++;
			}
			if (got < 0) {
				sqlite3_reset(st);
				return err_set(&db->err, WEFT_ECORRUPT, "a stored row operation is malformed; "
				               "run `weft rebuild` to re-derive it from the log");
			}
			continue;
		}
		op *o = ops_push(db, r);
		if (!o)
			goto fail;
		o->kind = kind;
		o->col = col ? schema_col_find(t, col) : -1;
		o->s = s;
		o->value = v;
	}
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, "reading row operations");
fail:
	sqlite3_reset(st);
	return db->err.code;
}

/* The merged state of one row: see docs/MERGE.md. */
typedef struct row_state {
	int exists;
	const op **put;  /* per column: winning put after the tombstone, or NULL */
	int64_t *sum;    /* per column: sum of counted increments */
	uint64_t *nincr; /* per column: increments counted */
	const op **last; /* per column: latest contributing write */
} row_state;

static void merge(const schema_table *t, const row_ops *r, row_state *rs)
{
	const stamp *tomb = NULL;
	for (size_t i = 0; i < r->n; i++)
		if (r->v[i].kind == ROWOP_DELETE && (!tomb || stamp_cmp(&r->v[i].s, tomb) > 0))
			tomb = &r->v[i].s;
	rs->exists = 0;
	for (int k = 0; k < t->ncols; k++) {
		rs->put[k] = rs->last[k] = NULL;
		rs->sum[k] = 0;
		rs->nincr[k] = 0;
	}
	for (size_t i = 0; i < r->n; i++) {
		const op *o = &r->v[i];
		if (o->kind == ROWOP_DELETE || (tomb && stamp_cmp(&o->s, tomb) <= 0))
			continue;
		rs->exists = 1;
		if (o->kind == ROWOP_PUT && o->col >= 0 &&
		    (!rs->put[o->col] || stamp_cmp(&o->s, &rs->put[o->col]->s) > 0))
			rs->put[o->col] = o;
	}
	/* Increments count when newer than both the tombstone and the put
	 * they add to; a put resets a counter. Sums wrap modulo 2^64. */
	for (size_t i = 0; i < r->n; i++) {
		const op *o = &r->v[i];
		if (o->kind != ROWOP_INCR || o->col < 0 || (tomb && stamp_cmp(&o->s, tomb) <= 0))
			continue;
		const op *base = rs->put[o->col];
		if (base && stamp_cmp(&o->s, &base->s) <= 0)
			continue;
		rs->sum[o->col] = (int64_t)((uint64_t)rs->sum[o->col] + (uint64_t)(o->value.type == WEFT_INTEGER ? o->value.i : 0));
		rs->nincr[o->col]++;
		if (!rs->last[o->col] || stamp_cmp(&o->s, &rs->last[o->col]->s) > 0)
			rs->last[o->col] = o;
	}
	for (int k = 0; k < t->ncols; k++)
		if (!rs->last[k])
			rs->last[k] = rs->put[k];
}

/* Binds the merged value of column k; *claim gets what a UNIQUE column claims. */
static void bind_column(weft_db *db, sqlite3_stmt *st, int i, const schema_col *c, int k, const row_state *rs,
                        const weft_value *pk)
{
	if (c->pk) {
		bind_value(db, st, i, pk);
		return;
	}
	const op *put = rs->put[k];
	if (rs->nincr[k]) {
		/* Increments add to the put they follow, or to the DEFAULT a
		 * row starts with (as UPDATE SET n = n + 1 would). */
		int64_t base = 0;
		if (put)
			base = put->value.type == WEFT_INTEGER ? put->value.i : 0;
		else if (c->has_default && c->def.type == WEFT_INTEGER)
			base = c->def.i;
		sqlite3_bind_int64(st, i, (int64_t)((uint64_t)base + (uint64_t)rs->sum[k]));
	} else if (put && put->value.type != WEFT_NULL) {
		bind_value(db, st, i, &put->value);
	} else if (c->has_default && !put) {
		bind_value(db, st, i, &c->def);
	} else if (c->notnull) {
		/* A NOT NULL column no write filled (a row revived after a
		 * delete): the type's zero, the same on every device. */
		static const weft_value zero_int = {WEFT_INTEGER, 0, 0, NULL, 0};
		static const weft_value zero_real = {WEFT_REAL, 0, 0, NULL, 0};
		static const weft_value zero_text = {WEFT_TEXT, 0, 0, "", 0};
		static const weft_value zero_blob = {WEFT_BLOB, 0, 0, "", 0};
		const weft_value *z = c->type == WEFT_INTEGER ? &zero_int : c->type == WEFT_REAL ? &zero_real
		                      : c->type == WEFT_TEXT ? &zero_text : &zero_blob;
		bind_value(db, st, i, c->has_default ? &c->def : z);
	} else {
		sqlite3_bind_null(st, i);
	}
}

static int resolve_unique(weft_db *db, const schema_table *t, int ti, int k, sqlite3_value *v);

/* The value row pk claims in a UNIQUE column (*out NULL: none), a copy. */
static int claim_get(weft_db *db, sqlite3_stmt *get, const weft_value *pk, sqlite3_value **out)
{
	*out = NULL;
	sqlite3_reset(get);
	bind_value(db, get, 1, pk);
	int s = step(db, get);
	if (s == SQLITE_ROW && !(*out = sqlite3_value_dup(sqlite3_column_value(get, 0))))
		s = SQLITE_NOMEM;
	sqlite3_reset(get);
	return s == SQLITE_ROW || s == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, s, "reading a unique claim");
}

/* Re-derives one row from its operations and writes it. */
static int materialize(weft_db *db, int ti, const weft_value *pk, row_ops *r)
{
	const schema_table *t = &db->schema->tables[ti];
	if (!pk_matches(t, pk))
		return WEFT_OK; /* a key of another type never names a row here */
	sqlite3_stmt **ts = table_stmts(db, ti);
	if (!ts)
		return db->err.code;
	int rc = gather(db, t, pk, r);
	if (rc < 0)
		return rc;
	size_t n = (size_t)t->ncols;
	void *mem = weft__calloc(n, 3 * sizeof(void *) + 2 * sizeof(uint64_t));
	if (!mem)
		return err_set(&db->err, WEFT_ENOMEM, "out of memory deriving a row");
	row_state rs = {0, mem, (int64_t *)((const op **)mem + n), NULL, NULL};
	rs.nincr = (uint64_t *)(rs.sum + n);
	rs.last = (const op **)(rs.nincr + n);
	merge(t, r, &rs);
	if (!db->rebuilding && (rc = touch(db, t, ti, pk, 0)) < 0)
		goto out;

	sqlite3_stmt *st;
	if (!rs.exists) {
		st = ts[TS_DELETE];
		sqlite3_reset(st);
		bind_value(db, st, 1, pk);
		int s = step(db, st);
		rc = s == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, s, "deleting a row");
		sqlite3_reset(st);
	} else {
		st = ts[TS_UPSERT];
		sqlite3_reset(st);
		for (int k = 0; k < t->ncols; k++) {
			if (t->cols[k].unique)
				sqlite3_bind_null(st, k + 1); /* set by resolve_unique */
			else
				bind_column(db, st, k + 1, &t->cols[k], k, &rs, pk);
		}
		int s = step(db, st);
		rc = s == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, s, "writing a row");
		sqlite3_reset(st);
	}
	/* UNIQUE columns: update this row's claim, then settle the old and
	 * the new value among all rows claiming them. */
	for (int k = 0; rc == WEFT_OK && k < t->ncols; k++) {
		if (!t->cols[k].unique)
			continue;
		sqlite3_stmt **cs = claim_stmts(db, ti, k);
		if (!cs) {
			rc = db->err.code;
			break;
		}
		sqlite3_value *old = NULL, *now = NULL;
		if ((rc = claim_get(db, cs[CS_GET], pk, &old)) < 0)
			break;
		int claims = rs.exists && (rs.nincr[k] || (rs.put[k] && rs.put[k]->value.type != WEFT_NULL));
		st = claims ? cs[CS_SET] : cs[CS_DEL];
		sqlite3_reset(st);
		bind_value(db, st, 1, pk);
		if (claims) {
			bind_column(db, st, 2, &t->cols[k], k, &rs, pk);
			const stamp *s = &rs.last[k]->s;
			sqlite3_bind_int64(st, 3, (sqlite3_int64)s->hlc);
			bind_rc(db, sqlite3_bind_blob(st, 4, s->id, 32, SQLITE_TRANSIENT));
			sqlite3_bind_int64(st, 5, s->idx);
		}
		int s = step(db, st);
		if (s != SQLITE_DONE)
			rc = store_sqlite_error(db, s, "recording a unique claim");
		sqlite3_reset(st);
		if (rc == WEFT_OK && claims)
			rc = claim_get(db, cs[CS_GET], pk, &now);
		if (rc == WEFT_OK && old && (!now || sqlite3_value_type(old) != sqlite3_value_type(now) ||
		                             sqlite3_value_bytes(old) != sqlite3_value_bytes(now) ||
		                             memcmp(sqlite3_value_blob(old), sqlite3_value_blob(now),
		                                    (size_t)sqlite3_value_bytes(old)) != 0))
			rc = resolve_unique(db, t, ti, k, old);
		if (rc == WEFT_OK && now)
			rc = resolve_unique(db, t, ti, k, now);
		sqlite3_value_free(old);
		sqlite3_value_free(now);
	}
out:
	weft__free(mem);
	return rc;
}

/* Gives value v of UNIQUE column k to its earliest claim by (HLC, id);
 * every other claimant holds NULL and is listed as a conflict. */
static int resolve_unique(weft_db *db, const schema_table *t, int ti, int k, sqlite3_value *v)
{
	sqlite3_stmt **cs = claim_stmts(db, ti, k);
	if (!cs)
		return db->err.code;
	int rc = WEFT_OK, s;
	/* Whoever holds v now lets go of it first (the table's UNIQUE
	 * constraint allows one holder at most). */
	sqlite3_stmt *h = cs[CS_HOLDERS];
	sqlite3_reset(h);
	bind_sqlvalue(db, h, 1, v);
	s = step(db, h);
	if (s == SQLITE_ROW) {
		sqlite3_value *holder = sqlite3_value_dup(sqlite3_column_value(h, 0));
		sqlite3_reset(h);
		if (!holder)
			return err_set(&db->err, WEFT_ENOMEM, "out of memory settling a unique value");
		weft_value pk = weft_null();
		switch (sqlite3_value_type(holder)) {
		case SQLITE_INTEGER:
			pk = weft_int(sqlite3_value_int64(holder));
			break;
		case SQLITE_TEXT:
			pk = weft_textn(sqlite3_value_blob(holder), (size_t)sqlite3_value_bytes(holder));
			break;
		default:
			pk = weft_blob(sqlite3_value_blob(holder), (size_t)sqlite3_value_bytes(holder));
		}
		if (db->rebuilding || (rc = touch(db, t, ti, &pk, 0)) == WEFT_OK) {
			sqlite3_stmt *clr = cs[CS_CLEARCOL];
			sqlite3_reset(clr);
			bind_value(db, clr, 1, &pk);
			s = step(db, clr);
			sqlite3_reset(clr);
			if (s != SQLITE_DONE)
				rc = store_sqlite_error(db, s, "settling a unique value");
		}
		sqlite3_value_free(holder);
		if (rc < 0)
			return rc;
	} else {
		sqlite3_reset(h);
		if (s != SQLITE_DONE)
			return store_sqlite_error(db, s, "settling a unique value");
	}
	sqlite3_stmt *del = gstmt(db, GS_CONFLICT_CLEAR);
	if (!del)
		return db->err.code;
	sqlite3_bind_text(del, 1, t->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(del, 2, t->cols[k].name, -1, SQLITE_STATIC);
	bind_sqlvalue(db, del, 3, v);
	s = step(db, del);
	sqlite3_reset(del);
	if (s != SQLITE_DONE)
		return store_sqlite_error(db, s, "settling a unique value");

	sqlite3_stmt *rank = cs[CS_RANK], *ins = NULL;
	sqlite3_reset(rank);
	bind_sqlvalue(db, rank, 1, v);
	sqlite3_value *winner = NULL;
	while (rc == WEFT_OK && (s = step(db, rank)) == SQLITE_ROW) {
		weft_value pk = column_value(rank, 0);
		if (!winner) {
			winner = sqlite3_value_dup(sqlite3_column_value(rank, 0));
			if (!winner) {
				rc = err_set(&db->err, WEFT_ENOMEM, "out of memory settling a unique value");
				break;
			}
			if (!db->rebuilding && (rc = touch(db, t, ti, &pk, 0)) < 0)
				break;
			sqlite3_stmt *set = cs[CS_SETCOL];
			sqlite3_reset(set);
			bind_value(db, set, 1, &pk);
			bind_sqlvalue(db, set, 2, sqlite3_column_value(rank, 2));
			int w = step(db, set);
			sqlite3_reset(set);
			if (w != SQLITE_DONE)
				rc = store_sqlite_error(db, w, "settling a unique value");
			continue;
		}
		if (!ins && !(ins = gstmt(db, GS_CONFLICT_ADD))) {
			rc = db->err.code;
			break;
		}
		sqlite3_reset(ins);
		sqlite3_bind_text(ins, 1, t->name, -1, SQLITE_STATIC);
		sqlite3_bind_text(ins, 2, t->cols[k].name, -1, SQLITE_STATIC);
		bind_value(db, ins, 3, &pk);
		bind_sqlvalue(db, ins, 4, sqlite3_column_value(rank, 2));
		bind_sqlvalue(db, ins, 5, winner);
		bind_sqlvalue(db, ins, 6, sqlite3_column_value(rank, 1));
		int w = step(db, ins);
		sqlite3_reset(ins);
		if (w != SQLITE_DONE)
			rc = store_sqlite_error(db, w, "recording a conflict");
	}
	if (rc == WEFT_OK && s != SQLITE_DONE)
		rc = store_sqlite_error(db, s, "settling a unique value");
	sqlite3_reset(rank);
	sqlite3_value_free(winner);
	return rc;
}

/* Marks a row the current event wrote. */
static int pend_add(weft_db *db, const char *table, const weft_value *pk)
{
	struct proj_cache *c = db->proj;
	if (c->npend == c->cappend) {
		size_t cap = c->cappend ? c->cappend * 2 : 64;
		pend *v = weft__realloc(c->pend, cap * sizeof(*v));
		if (!v)
			return err_set(&db->err, WEFT_ENOMEM, "out of memory deriving rows");
		c->pend = v;
		c->cappend = cap;
	}
	pend *e = &c->pend[c->npend++];
	snprintf(e->table, sizeof(e->table), "%s", table);
	e->pk = *pk;
	return WEFT_OK;
}

/* Materializes the rows the current event wrote and every row listed in
 * temp.weft_pending, then forgets them. */
static int materialize_pending(weft_db *db)
{
	struct proj_cache *c = db->proj;
	row_ops r = {0};
	int out = WEFT_OK, rc = SQLITE_DONE;
	for (size_t i = 0; out == WEFT_OK && i < c->npend; i++) {
		int ti = table_index(db->schema, c->pend[i].table);
		if (ti >= 0) /* else not declared: kept until a schema declares it */
			out = materialize(db, ti, &c->pend[i].pk, &r);
	}
	c->npend = 0;
	if (out < 0 || !c->pend_sql) {
		ops_free(&r);
		return out;
	}
	c->pend_sql = 0;
	sqlite3_stmt *st = gstmt(db, GS_PENDING_LIST);
	if (!st) {
		ops_free(&r);
		return db->err.code;
	}
	while (out == WEFT_OK && (rc = step(db, st)) == SQLITE_ROW) {
		char tl[SCHEMA_NAME_MAX + 1];
		if (column_name(st, 0, tl) < 0) {
			out = err_set(&db->err, WEFT_ECORRUPT, "a pending row's table name is unreadable");
			break;
		}
		int ti = table_index(db->schema, tl);
		if (ti < 0)
			continue; /* not declared: kept until a schema declares it */
		weft_value pk = column_value(st, 1);
		out = materialize(db, ti, &pk, &r);
	}
	if (out == WEFT_OK && rc != SQLITE_DONE)
		out = store_sqlite_error(db, rc, "deriving rows");
	sqlite3_reset(st);
	ops_free(&r);
	if (out == WEFT_OK && !(st = gstmt(db, GS_PENDING_CLEAR)))
		out = db->err.code;
	if (out == WEFT_OK && (rc = step(db, st)) != SQLITE_DONE)
		out = store_sqlite_error(db, rc, "deriving rows");
	if (st)
		sqlite3_reset(st);
	return out;
}

/* ---------------------------------------------------------- one event */

typedef struct op_ctx {
	weft_db *db;
	int64_t n;
	/* The row of the previous cell: the cells of a put share one row. */
	char table[SCHEMA_NAME_MAX + 1];
	weft_value pk;
} op_ctx;

/* Records one operation in weft_op and marks its row for derivation. */
static int insert_op(const rowop *o, void *arg)
{
	op_ctx *x = arg;
	weft_db *db = x->db;
	sqlite3_stmt *st = store_stmt(db, STMT_OP_INSERT);
	if (!st)
		return db->err.code;
	sqlite3_bind_int64(st, 1, x->n);
	sqlite3_bind_int64(st, 2, o->idx);
	sqlite3_bind_text(st, 3, o->table, -1, SQLITE_STATIC);
	bind_value(db, st, 4, &o->pk);
	if (o->col)
		sqlite3_bind_text(st, 5, o->col, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 6, (int)o->kind);
	if (o->kind == ROWOP_INCR)
		bind_value(db, st, 7, &o->value);
	else if (o->kind == ROWOP_PUT && o->ncells)
		sqlite3_bind_blob(st, 7, o->cells, (int)o->cells_len, SQLITE_STATIC);
	int rc = step(db, st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return store_sqlite_error(db, rc, "recording a row operation");
	if (db->rebuilding)
		return WEFT_OK;
	if (x->table[0] && strcmp(x->table, o->table) == 0 && rows_value_cmp(&x->pk, &o->pk) == 0)
		return WEFT_OK; /* already pending */
	snprintf(x->table, sizeof(x->table), "%s", o->table);
	x->pk = o->pk; /* points into the payload, which outlives the decode */
	return pend_add(db, o->table, &o->pk);
}

static int step_done(weft_db *db, sqlite3_stmt *st, const char *doing)
{
	int rc = step(db, st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, doing);
}

/* Removes one row's cells of the withdrawn event x->n, and marks the row. */
static int withdraw_op(const rowop *c, void *arg)
{
	op_ctx *x = arg;
	weft_db *db = x->db;
	if (x->table[0] && strcmp(x->table, c->table) == 0 && rows_value_cmp(&x->pk, &c->pk) == 0)
		return WEFT_OK;
	snprintf(x->table, sizeof(x->table), "%s", c->table);
	x->pk = c->pk;
	sqlite3_stmt *st = gstmt(db, GS_OPS_DELETE_ROW);
	if (!st)
		return db->err.code;
	sqlite3_bind_text(st, 1, c->table, -1, SQLITE_STATIC);
	bind_value(db, st, 2, &c->pk);
	sqlite3_bind_int64(st, 3, x->n);
	int rc = step_done(db, st, "withdrawing a duplicate");
	if (rc < 0 || db->rebuilding)
		return rc;
	if (!(st = store_stmt(db, STMT_PENDING_ADD)))
		return db->err.code;
	sqlite3_bind_text(st, 1, c->table, -1, SQLITE_STATIC);
	bind_value(db, st, 2, &c->pk);
	db->proj->pend_sql = 1;
	return step_done(db, st, "withdrawing a duplicate");
}

/* Takes back the operations of event n (displaced by an earlier event with
 * its idempotency key); their rows are re-derived. The event's own payload
 * names the rows, so weft_op needs no index by event. */
static int withdraw(weft_db *db, int64_t n)
{
	sqlite3_stmt *st = gstmt(db, GS_EVENT_PAYLOAD);
	if (!st)
		return db->err.code;
	sqlite3_bind_int64(st, 1, n);
	int rc = step(db, st);
	if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
		op_ctx x;
		memset(&x, 0, sizeof(x));
		x.db = db;
		x.n = n;
		const void *p = sqlite3_column_blob(st, 0);
		size_t len = (size_t)sqlite3_column_bytes(st, 0);
		weft_err e;
		rc = rows_decode_ops(p ? p : "", len, withdraw_op, &x, &e);
		sqlite3_reset(st);
		if (rc != WEFT_ECORRUPT)
			return rc;
	} else {
		sqlite3_reset(st);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE)
			return store_sqlite_error(db, rc, "withdrawing a duplicate");
	}
	/* The payload is gone (erased since it took effect): find its cells
	 * the slow way. */
	if (!db->rebuilding) {
		db->proj->pend_sql = 1;
		if (!(st = store_stmt(db, STMT_EVENT_OPS_ROWS)))
			return db->err.code;
		sqlite3_bind_int64(st, 1, n);
		if ((rc = step_done(db, st, "withdrawing a duplicate")) < 0)
			return rc;
	}
	if (!(st = store_stmt(db, STMT_OPS_DELETE_EVENT)))
		return db->err.code;
	sqlite3_bind_int64(st, 1, n);
	return step_done(db, st, "withdrawing a duplicate");
}

/*
 * Idempotency: of the events in one scope carrying one key, only the
 * earliest by (HLC, id) takes effect. Sets *effective; when ev displaces
 * an earlier-seen event, that one's operations are withdrawn.
 */
static int settle_idempotency(weft_db *db, const struct weft_event *ev, int64_t n, int64_t scope_ref,
                              int *effective)
{
	*effective = 1;
	if (!ev->idem[0])
		return WEFT_OK;
	sqlite3_stmt *st = store_stmt(db, STMT_EFFECT_GET);
	if (!st)
		return db->err.code;
	sqlite3_bind_int64(st, 1, scope_ref);
	sqlite3_bind_text(st, 2, ev->idem, -1, SQLITE_STATIC);
	int rc = step(db, st);
	int64_t other = 0;
	int earlier = 0;
	if (rc == SQLITE_ROW) {
		other = sqlite3_column_int64(st, 0);
		uint64_t ohlc = (uint64_t)sqlite3_column_int64(st, 1);
		const void *oid = sqlite3_column_blob(st, 2);
		if (!oid || sqlite3_column_bytes(st, 2) != 32) {
			sqlite3_reset(st);
			return err_set(&db->err, WEFT_ENOMEM, "could not read an event id checking an idempotency key");
		}
		earlier = ohlc < ev->hlc || (ohlc == ev->hlc && memcmp(oid, ev->id.bytes, 32) < 0);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return store_sqlite_error(db, rc, "checking an idempotency key");
	if (rc == SQLITE_ROW && earlier) {
		*effective = 0;
		if (!(st = store_stmt(db, STMT_DUP_INSERT)))
			return db->err.code;
		sqlite3_bind_int64(st, 1, n);
		sqlite3_bind_int64(st, 2, other);
		return step_done(db, st, "recording a duplicate");
	}
	if (rc == SQLITE_ROW) {
		/* ev is earlier: the other event stops taking effect. */
		if (!(st = store_stmt(db, STMT_DUP_MOVE)))
			return db->err.code;
		sqlite3_bind_int64(st, 1, other);
		sqlite3_bind_int64(st, 2, n);
		if ((rc = step_done(db, st, "recording a duplicate")) < 0)
			return rc;
		if (!(st = store_stmt(db, STMT_DUP_INSERT)))
			return db->err.code;
		sqlite3_bind_int64(st, 1, other);
		sqlite3_bind_int64(st, 2, n);
		if ((rc = step_done(db, st, "recording a duplicate")) < 0)
			return rc;
		if ((rc = withdraw(db, other)) < 0)
			return rc;
	}
	if (!(st = store_stmt(db, STMT_EFFECT_SET)))
		return db->err.code;
	sqlite3_bind_int64(st, 1, scope_ref);
	sqlite3_bind_text(st, 2, ev->idem, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, n);
	return step_done(db, st, "recording an idempotency key");
}

int project_event(weft_db *db, const struct weft_event *ev, int64_t n, int64_t scope_ref)
{
	if (strcmp(ev->kind, ROWS_KIND) != 0)
		return WEFT_OK;
	/* A malformed payload is kept in the log with no effect anywhere. An
	 * erased one still holds its idempotency key: the operation happened,
	 * only its content is gone. */
	if (ev->payload && rows_decode_ops(ev->payload, ev->payload_len, NULL, NULL, NULL) < 0)
		return WEFT_OK;
	int effective, rc;
	db->cur_event = ev->id;
	if (!cache(db))
		return db->err.code;
	struct proj_cache *c = db->proj;
	c->bind_rc = 0;
	c->cur_n = n;
	memset(&c->cur, 0, sizeof(c->cur));
	c->cur.hlc = ev->hlc;
	memcpy(c->cur.author, ev->author, 32);
	memcpy(c->cur.id, ev->id.bytes, 32);
	c->last_n = 0; /* n may be reused after a rollback */
	c->npend = 0;   /* left by a failed event: its payload is gone */
	if (!db->rebuilding) {
		int consumers;
		if ((rc = feed_has_consumers(db, &consumers)) < 0 || !cache(db))
			return rc < 0 ? rc : db->err.code;
		db->proj->listening = consumers || db->on_commit;
	}
	if ((rc = settle_idempotency(db, ev, n, scope_ref, &effective)) < 0)
		return rc;
	if (effective && ev->payload) {
		op_ctx x;
		memset(&x, 0, sizeof(x));
		x.db = db;
		x.n = n;
		weft_err e;
		if ((rc = rows_decode_ops(ev->payload, ev->payload_len, insert_op, &x, &e)) < 0)
			return rc;
	}
	if (!db->rebuilding && (rc = materialize_pending(db)) < 0)
		return rc;
	return in_transaction(db, "applying an event");
}

/* --------------------------------------------------------- rebuild */

static int temp_tables(weft_db *db)
{
	return store_exec(db,
		"CREATE TEMP TABLE IF NOT EXISTS weft_pending(tbl TEXT NOT NULL, pk NOT NULL,"
		"  PRIMARY KEY(tbl, pk)) WITHOUT ROWID;"
		"CREATE TEMP TABLE IF NOT EXISTS weft_touched(tbl TEXT NOT NULL, pk NOT NULL, existed INTEGER,"
		"  old BLOB, event BLOB, PRIMARY KEY(tbl, pk)) WITHOUT ROWID;",
		"preparing derived tables");
}

/* Touches every row of every derived table, for the change feed and the
 * commit callback: before a rebuild to record the old rows, after it
 * (absent = 1) to list the rows that were not there before. */
static int touch_all(weft_db *db, int absent)
{
	int consumers, rc;
	if ((rc = feed_has_consumers(db, &consumers)) < 0 || (!consumers && !db->on_commit) || !db->schema)
		return rc;
	if (!cache(db))
		return db->err.code;
	db->proj->listening = 1;
	memset(db->cur_event.bytes, 0, 32);
	for (int ti = 0; ti < db->schema->ntables; ti++) {
		const schema_table *t = &db->schema->tables[ti];
		char sql[200];
		snprintf(sql, sizeof(sql), "SELECT \"%s\" FROM \"%s\"", t->cols[t->pk].name, t->name);
		sqlite3_stmt *st;
		if ((rc = sqlite3_prepare_v2(db->sql, sql, -1, &st, NULL)) != SQLITE_OK)
			return store_sqlite_error(db, rc, "tracking changes");
		int s;
		rc = WEFT_OK;
		while (rc == WEFT_OK && (s = step(db, st)) == SQLITE_ROW) {
			weft_value pk = column_value(st, 0);
			rc = touch(db, t, ti, &pk, absent);
		}
		if (rc == WEFT_OK && s != SQLITE_DONE)
			rc = store_sqlite_error(db, s, "tracking changes");
		sqlite3_finalize(st);
		if (rc < 0)
			return rc;
	}
	return WEFT_OK;
}

/* Inside a transaction: drops and re-derives everything under db->schema.
 * old: the previous schema when it changes (its rows are recorded for the
 * feed); made: the schema whose derived tables exist now, the only ones
 * dropped (NULL: none yet; an app's own table of a newly declared name is
 * never dropped: creating the derived table fails instead). */
static int rederive(weft_db *db, schema *old, schema *made, weft_progress_cb cb, void *payload)
{
	int rc;
	schema *now = db->schema;
	/* Old rows are recorded under the old schema, new ones under the new. */
	if (old) {
		cache_free(db);
		db->schema = old;
		if ((rc = cache_build(db)) < 0 || (rc = touch_all(db, 0)) < 0)
			goto out;
	}
	db->schema = made;
	if ((rc = drop_tables(db)) < 0)
		goto out;
	db->schema = now;
	if ((rc = store_exec(db, "DELETE FROM weft_op; DELETE FROM weft_effect; DELETE FROM weft_dup;"
	                         "DELETE FROM weft_conflict;", "clearing derived state")) < 0)
		goto out;
	cache_free(db);
	if (db->schema && ((rc = create_tables(db)) < 0 || (rc = cache_build(db)) < 0))
		goto out;

	sqlite3_stmt *st;
	uint64_t total = 0, done = 0;
	rc = sqlite3_prepare_v2(db->sql, "SELECT count(*) FROM weft_event e WHERE " STORE_EVENT_KIND_IS(ROWS_KIND), -1, &st,
	                        NULL);
	if (rc == SQLITE_OK && (rc = step(db, st)) == SQLITE_ROW)
		total = (uint64_t)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW) {
		rc = store_sqlite_error(db, rc, "re-deriving tables");
		goto out;
	}
	/* Events in (HLC, id) order: the first event of each idempotency key
	 * is the one that takes effect, and nothing is withdrawn. */
	rc = sqlite3_prepare_v2(db->sql, "SELECT e.n, e.scope, " STORE_EVENT_COLUMNS STORE_EVENT_FROM
	                        "WHERE " STORE_EVENT_KIND_IS(ROWS_KIND) " ORDER BY e.hlc, e.id", -1, &st, NULL);
	if (rc != SQLITE_OK) {
		rc = store_sqlite_error(db, rc, "re-deriving tables");
		goto out;
	}
	db->rebuilding = 1;
	int s;
	rc = WEFT_OK;
	while (rc == WEFT_OK && (s = step(db, st)) == SQLITE_ROW) {
		/* Only the fields projection reads (columns after n, scope). */
		struct weft_event f;
		memset(&f, 0, sizeof(f));
		int64_t n = sqlite3_column_int64(st, 0), scope = sqlite3_column_int64(st, 1);
		if (sqlite3_column_bytes(st, 2) == 32)
			memcpy(f.id.bytes, sqlite3_column_blob(st, 2), 32);
		if (sqlite3_column_bytes(st, 3) == 32)
			memcpy(f.author, sqlite3_column_blob(st, 3), 32);
		f.hlc = (uint64_t)sqlite3_column_int64(st, 6);
		snprintf(f.kind, sizeof(f.kind), "%s", ROWS_KIND);
		if (sqlite3_column_type(st, 9) != SQLITE_NULL) {
			const void *idem = sqlite3_column_blob(st, 9);
			int len = sqlite3_column_bytes(st, 9);
			if (!idem || len < 1 || len > WEFT_IDEM_KEY_MAX) {
				rc = err_set(&db->err, WEFT_ECORRUPT, "a stored event has a malformed idempotency key; "
				             "run `weft verify`");
				break;
			}
			memcpy(f.idem, idem, (size_t)len);
			f.idem[len] = '\0';
		}
		if (sqlite3_column_type(st, 13) != SQLITE_NULL) {
			f.payload_len = (uint32_t)sqlite3_column_bytes(st, 13);
			f.payload = f.payload_len ? sqlite3_column_blob(st, 13) : (const unsigned char *)"";
		}
		const struct weft_event *ev = &f;
		rc = project_event(db, ev, n, scope);
		if (rc == WEFT_OK && cb && (++done % 1024 == 0 || done == total) && cb(done, total, payload))
			rc = err_set(&db->err, WEFT_EUSER, "rebuild stopped by the progress callback");
	}
	sqlite3_finalize(st);
	if (rc == WEFT_OK && s != SQLITE_DONE)
		rc = store_sqlite_error(db, s, "re-deriving tables");
	if (rc == WEFT_OK && db->schema) {
		rc = store_exec(db, "INSERT OR IGNORE INTO temp.weft_pending(tbl, pk) SELECT tbl, pk FROM weft_op",
		                "re-deriving tables");
		if (rc == WEFT_OK && cache(db)) {
			db->proj->pend_sql = 1;
			rc = materialize_pending(db);
		} else if (rc == WEFT_OK) {
			rc = db->err.code;
		}
	}
	db->rebuilding = 0;
	if (rc == WEFT_OK)
		rc = touch_all(db, 1);
out:
	db->rebuilding = 0;
	db->schema = now;
	return rc;
}

static int finish_commit(weft_db *db)
{
	return store_commit_events(db);
}

int weft_db_rebuild(weft_db *db, weft_progress_cb cb, void *payload)
{
	if (!db)
		return err_set(NULL, WEFT_EINVAL, "weft_db_rebuild: db must not be NULL");
	if (db->readonly)
		return err_set(&db->err, WEFT_EPERM, "the store was opened read-only; reopen it to rebuild");
	int rc = store_begin(db);
	if (rc < 0)
		return rc;
	if ((rc = temp_tables(db)) < 0 || (rc = touch_all(db, 0)) < 0 || (rc = rederive(db, NULL, db->schema, cb, payload)) < 0) {
		store_rollback(db);
		/* Statements were rebuilt against rolled-back tables. */
		cache_free(db);
		if (db->schema)
			cache_build(db);
		return rc;
	}
	return finish_commit(db);
}

/* ---------------------------------------------------------- schema */

static int load_schema_row(weft_db *db, int *version, char **ddl)
{
	sqlite3_stmt *st;
	*version = 0;
	*ddl = NULL;
	int rc = sqlite3_prepare_v2(db->sql, "SELECT version, ddl FROM weft_schema ORDER BY version DESC LIMIT 1",
	                            -1, &st, NULL);
	if (rc != SQLITE_OK)
		return store_sqlite_error(db, rc, "reading the schema");
	rc = step(db, st);
	if (rc == SQLITE_ROW) {
		*version = sqlite3_column_int(st, 0);
		const char *t = (const char *)sqlite3_column_text(st, 1);
		*ddl = weft__strdup(t ? t : "");
		if (!*ddl) {
			sqlite3_finalize(st);
			return err_set(&db->err, WEFT_ENOMEM, "out of memory reading the schema");
		}
	}
	sqlite3_finalize(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, "reading the schema");
}

int project_load(weft_db *db)
{
	int version, rc;
	char *ddl;
	if ((rc = temp_tables(db)) < 0 || (rc = load_schema_row(db, &version, &ddl)) < 0)
		return rc;
	if (!ddl)
		return WEFT_OK;
	schema *s;
	rc = schema_parse(&s, ddl, &db->err);
	weft__free(ddl);
	if (rc < 0)
		return err_set(&db->err, WEFT_ECORRUPT, "the stored schema version %d no longer parses: %s",
		               version, db->err.msg);
	db->schema = s;
	db->schema_version = version;
	return cache_build(db);
}

int weft_schema_define(weft_db *db, const char *ddl)
{
	if (!db)
		return err_set(NULL, WEFT_EINVAL, "weft_schema_define: db must not be NULL");
	if (db->readonly)
		return err_set(&db->err, WEFT_EPERM, "the store was opened read-only; reopen it to change the schema");
	schema *s;
	int rc = schema_parse(&s, ddl, &db->err);
	if (rc < 0)
		return rc;
	if (db->schema && strcmp(db->schema->ddl, s->ddl) == 0) {
		schema_free(s);
		return WEFT_OK;
	}
	if ((rc = store_begin(db)) < 0) {
		schema_free(s);
		return rc;
	}
	sqlite3_stmt *st;
	rc = sqlite3_prepare_v2(db->sql, "INSERT INTO weft_schema(version, ddl) VALUES (?1, ?2)", -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int(st, 1, db->schema_version + 1);
		sqlite3_bind_text(st, 2, ddl, -1, SQLITE_STATIC);
		rc = step(db, st);
		rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
		sqlite3_finalize(st);
	}
	schema *old = db->schema;
	if (rc != SQLITE_OK) {
		rc = store_sqlite_error(db, rc, "saving the schema");
	} else {
		db->schema = s;
		rc = rederive(db, old, old, NULL, NULL);
	}
	if (rc == WEFT_OK)
		rc = finish_commit(db);
	else
		store_rollback(db);
	cache_free(db);
	if (rc < 0) {
		db->schema = old;
		schema_free(s);
		if (old)
			cache_build(db);
		return rc;
	}
	schema_free(old);
	db->schema_version++;
	return cache_build(db);
}

int weft_schema_version(int *version, const char **ddl, weft_db *db)
{
	if (!db)
		return err_set(NULL, WEFT_EINVAL, "weft_schema_version: db must not be NULL");
	if (version)
		*version = db->schema_version;
	if (ddl)
		*ddl = db->schema ? db->schema->ddl : NULL;
	return WEFT_OK;
}

/* ---------------------------------------------------------- reading */

int weft_db_conflicts(weft_db *db, weft_conflict_cb cb, void *payload)
{
	if (!db || !cb)
		return err_set(db ? &db->err : NULL, WEFT_EINVAL, "weft_db_conflicts: NULL argument");
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db->sql, "SELECT tbl, col, value, winner_pk, loser_pk, loser_event "
	                            "FROM weft_conflict ORDER BY tbl, col, loser_pk", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return store_sqlite_error(db, rc, "reading conflicts");
	while ((rc = step(db, st)) == SQLITE_ROW) {
		weft_conflict c;
		memset(&c, 0, sizeof(c));
		c.table = (const char *)sqlite3_column_text(st, 0);
		c.column = (const char *)sqlite3_column_text(st, 1);
		if (!c.table || !c.column) {
			sqlite3_finalize(st);
			return err_set(&db->err, WEFT_ENOMEM, "out of memory reading conflicts");
		}
		c.value = column_value(st, 2);
		c.winner_pk = column_value(st, 3);
		c.loser_pk = column_value(st, 4);
		if (sqlite3_column_bytes(st, 5) == 32)
			memcpy(c.loser_event.bytes, sqlite3_column_blob(st, 5), 32);
		if (cb(&c, payload)) {
			sqlite3_finalize(st);
			return err_set(&db->err, WEFT_EUSER, "stopped by the conflicts callback");
		}
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, "reading conflicts");
}

int weft_db_duplicates(weft_db *db, weft_duplicate_cb cb, void *payload)
{
	if (!db || !cb)
		return err_set(db ? &db->err : NULL, WEFT_EINVAL, "weft_db_duplicates: NULL argument");
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db->sql,
		"SELECT e.id, w.id, s.name, e.idem FROM weft_dup d JOIN weft_event e ON e.n = d.event "
		"JOIN weft_event w ON w.n = d.winner JOIN weft_scope s ON s.ref = e.scope ORDER BY e.hlc, e.id",
		-1, &st, NULL);
	if (rc != SQLITE_OK)
		return store_sqlite_error(db, rc, "reading duplicates");
	while ((rc = step(db, st)) == SQLITE_ROW) {
		weft_id a, b;
		if (sqlite3_column_bytes(st, 0) != 32 || sqlite3_column_bytes(st, 1) != 32)
			continue;
		memcpy(a.bytes, sqlite3_column_blob(st, 0), 32);
		memcpy(b.bytes, sqlite3_column_blob(st, 1), 32);
		const char *scope = (const char *)sqlite3_column_text(st, 2);
		const char *key = (const char *)sqlite3_column_text(st, 3);
		if (!scope || !key) {
			sqlite3_finalize(st);
			return err_set(&db->err, WEFT_ENOMEM, "out of memory reading duplicates");
		}
		if (cb(&a, &b, scope, key, payload)) {
			sqlite3_finalize(st);
			return err_set(&db->err, WEFT_EUSER, "stopped by the duplicates callback");
		}
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, "reading duplicates");
}

int weft_db_blame(weft_db *db, const char *table, weft_value pk, weft_blame_cb cb, void *payload)
{
	if (!db || !table || !cb)
		return err_set(db ? &db->err : NULL, WEFT_EINVAL, "weft_db_blame: NULL argument");
	char lname[SCHEMA_NAME_MAX + 1];
	size_t n = strnlen(table, SCHEMA_NAME_MAX + 1);
	if (!schema_name_ok(table, n))
		return err_set(&db->err, WEFT_EINVAL, "\"%.80s\" is not a table name", table);
	for (size_t i = 0; i <= n; i++)
		lname[i] = (char)(table[i] >= 'A' && table[i] <= 'Z' ? table[i] + 32 : table[i]);
	int ti = table_index(db->schema, lname);
	if (ti < 0)
		return err_set(&db->err, WEFT_ENOTFOUND, "table %s is not declared in the current schema", table);
	const schema_table *t = &db->schema->tables[ti];
	row_ops r = {0};
	int rc = pk_matches(t, &pk) ? gather(db, t, &pk, &r) : WEFT_OK;
	if (rc < 0) {
		ops_free(&r);
		return rc;
	}
	size_t nc = (size_t)t->ncols;
	void *mem = weft__calloc(nc, 3 * sizeof(void *) + 2 * sizeof(uint64_t));
	if (!mem) {
		ops_free(&r);
		return err_set(&db->err, WEFT_ENOMEM, "out of memory");
	}
	row_state rs = {0, mem, (int64_t *)((const op **)mem + nc), NULL, NULL};
	rs.nincr = (uint64_t *)(rs.sum + nc);
	rs.last = (const op **)(rs.nincr + nc);
	merge(t, &r, &rs);
	if (!rs.exists) {
		rc = err_set(&db->err, WEFT_ENOTFOUND, "table %s has no row with that key", t->name);
		goto out;
	}
	sqlite3_stmt **ts = table_stmts(db, ti);
	if (!ts) {
		rc = db->err.code;
		goto out;
	}
	sqlite3_stmt *sel = ts[TS_SELECT];
	sqlite3_reset(sel);
	bind_value(db, sel, 1, &pk);
	int s = step(db, sel);
	if (s != SQLITE_ROW && s != SQLITE_DONE) {
		sqlite3_reset(sel);
		rc = store_sqlite_error(db, s, "reading a row");
		goto out;
	}
	int found = s == SQLITE_ROW;
	for (int k = 0; k < t->ncols && rc == WEFT_OK; k++) {
		weft_blame b;
		memset(&b, 0, sizeof(b));
		b.column = t->cols[k].name;
		b.value = found ? column_value(sel, k) : weft_null();
		const op *w = rs.last[k];
		if (w) {
			memcpy(b.event.bytes, w->s.id, 32);
			b.author = w->s.author;
			b.hlc = w->s.hlc;
			b.contributions = rs.nincr[k] + (rs.put[k] ? 1 : 0);
		}
		if (cb(&b, payload))
			rc = err_set(&db->err, WEFT_EUSER, "stopped by the blame callback");
	}
	sqlite3_reset(sel);
out:
	weft__free(mem);
	ops_free(&r);
	return rc;
}

int weft_db_on_commit(weft_db *db, weft_commit_cb cb, void *payload)
{
	if (!db)
		return err_set(NULL, WEFT_EINVAL, "weft_db_on_commit: db must not be NULL");
	db->on_commit = cb;
	db->on_commit_payload = payload;
	return WEFT_OK;
}
