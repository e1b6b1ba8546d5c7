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
	/* Older history entries of the rows' merge state (tables
	 * "weft_clock:<table>", see "one row"); tbl is the table's index in
	 * the current schema. */
	"CREATE TABLE weft_clock_hist(tbl INTEGER NOT NULL, pk NOT NULL, chunk INTEGER NOT NULL,"
	"  ns BLOB NOT NULL, PRIMARY KEY(tbl, pk, chunk)) WITHOUT ROWID;"
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
enum { TS_UPSERT, TS_UPDATE, TS_DELETE, TS_CLOCK_GET, TS_CLOCK_SET, TS_SELECT, TS__COUNT };
enum { CS_GET, CS_SET, CS_DEL, CS_RANK, CS_HOLDERS, CS_SETCOL, CS_CLEARCOL, CS__COUNT };
enum {
	GS_CONSUMERS,
	GS_TOUCHED_LIST,
	GS_TOUCHED_CLEAR,
	GS_CHANGE_ADD,
	GS_CHANGE_CLEAR,
	GS_CONFLICT_CLEAR,
	GS_CONFLICT_ADD,
	GS_HIST_GET,
	GS_HIST_SET,
	GS_HIST_ALL,
	GS_EVENT_PAYLOAD,
	GS_EVENT_STAMP,
	GS_EVENT_ROW,
	GS__COUNT
};

static const char *const gs_sql[GS__COUNT] = {
	[GS_CONSUMERS] = "SELECT EXISTS (SELECT 1 FROM weft_feed)",
	[GS_TOUCHED_LIST] = "SELECT tbl, pk, existed, old, event FROM temp.weft_touched",
	[GS_TOUCHED_CLEAR] = "DELETE FROM temp.weft_touched",
	[GS_CHANGE_ADD] = "INSERT INTO weft_change(tbl, pk, op, cols, event) VALUES (?1, ?2, ?3, ?4, ?5)",
	[GS_CHANGE_CLEAR] = "DELETE FROM weft_change",
	[GS_CONFLICT_CLEAR] = "DELETE FROM weft_conflict WHERE tbl = ?1 AND col = ?2 AND value = ?3",
	[GS_CONFLICT_ADD] = "INSERT OR REPLACE INTO weft_conflict(tbl, col, loser_pk, value, winner_pk, loser_event) "
	                    "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
	[GS_HIST_GET] = "SELECT chunk, ns FROM weft_clock_hist WHERE tbl = ?1 AND pk = ?2 ORDER BY chunk",
	[GS_HIST_SET] = "INSERT OR REPLACE INTO weft_clock_hist(tbl, pk, chunk, ns) VALUES (?1, ?2, ?3, ?4)",
	[GS_HIST_ALL] = "SELECT tbl, pk, ns FROM weft_clock_hist",
	/* The only reads of weft_event (besides the rebuild's scan, REBUILD_SCAN):
	 * by its row number n. */
	[GS_EVENT_PAYLOAD] = "SELECT payload FROM weft_event WHERE n = ?1",
	[GS_EVENT_STAMP] = "SELECT e.hlc, a.pk, weft_id(e.n) FROM weft_event e JOIN weft_author a ON a.ref = e.author "
	                   "WHERE e.n = ?1",
	[GS_EVENT_ROW] = "SELECT e.hlc, a.pk, weft_id(e.n), e.payload FROM weft_event e JOIN weft_author a ON a.ref = e.author "
	                 "WHERE e.n = ?1",
};

/* The events a rebuild applies, in (HLC, id) order: n, scope ref, id
 * (re-derived only for ties of HLC), (author key: looked up by n when
 * needed), hlc, idempotency key, payload. */
#define REBUILD_COLS(id) "SELECT e.n, e.scope, " id ", NULL, e.hlc, e.idem, e.payload FROM weft_event e "
/* By the time index alone: ties of HLC are rare, and REBUILD_TIES puts
 * each tie in id order (ORDER BY e.hlc, id sorted every HLC's events on
 * its own: a sorter per event). Without a tie, an event's id is not
 * needed: stamps are compared by HLC first (the stamp of the event
 * being applied is partial, see cur_partial). */
#define REBUILD_SCAN REBUILD_COLS("NULL") "WHERE " STORE_EVENT_KIND_IS(ROWS_KIND) " ORDER BY e.hlc"
#define REBUILD_TIES REBUILD_COLS("weft_id(e.n) AS id") "WHERE e.hlc = ?1 AND " STORE_EVENT_KIND_IS(ROWS_KIND) \
	" ORDER BY id"
#define REBUILD_COUNT "SELECT count(*) FROM weft_event e WHERE " STORE_EVENT_KIND_IS(ROWS_KIND)

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
	/* Rows being derived (struct crow), by key: those of the event
	 * being applied, or of a rebuild's batch of events. Their memory is
	 * an arena freed when they are written. */
	struct crow **slots, **rows;
	size_t nslots, nrows;
	struct ablk *arena, *spare; /* spare: blocks kept for reuse */
	size_t arena_bytes, nspare;
	int clock_empty; /* the clock tables are empty (a rebuild's first batch) */
	/* A rebuild's filter of the rows written so far: a row it does not
	 * name has no clock row to read. */
	uint64_t *bloom;
	size_t bloom_bits;
	int cur_partial; /* cur lacks the author key (looked up when needed) */
	struct snap {
		struct crow *r, *copy;
	} *snaps; /* rows before the current event (rebuild) */
	size_t nsnaps, capsnaps;
	unsigned char *enc; /* encoding buffer */
	size_t enccap;
	/* A bind that failed (copying text or a blob can run out of memory):
	 * the next step() returns it instead of running the statement. */
	int bind_rc;
};

typedef struct ablk {
	struct ablk *next;
	size_t used, cap, pad; /* header size a multiple of 16 */
} ablk;

static void arena_free(struct proj_cache *c)
{
	for (int spare = 0; spare < 2; spare++) {
		for (ablk *b = spare ? c->spare : c->arena, *next; b; b = next) {
			next = b->next;
			weft__free(b);
		}
	}
	c->arena = c->spare = NULL;
	c->arena_bytes = 0;
	c->nspare = 0;
}

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
	arena_free(c);
	weft__free(c->slots);
	weft__free(c->rows);
	weft__free(c->snaps);
	weft__free(c->bloom);
	weft__free(c->enc);
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
/* Clock tables hold each row's merge state (see "one row"). */
#define CLOCK "\"weft_clock:%s\""

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
	/* ?(ncols + k + 1): column k changed; the others keep their value. */
	sb_add(&b, "UPDATE \"%s\" SET ", t->name);
	for (int k = 0, first = 1; k < t->ncols; k++) {
		if (k == t->pk)
			continue;
		sb_add(&b, "%s\"%s\" = CASE WHEN ?%d THEN ?%d ELSE \"%s\" END", first ? "" : ",", t->cols[k].name,
		       t->ncols + k + 1, k + 1, t->cols[k].name);
		first = 0;
	}
	sb_add(&b, " WHERE \"%s\" = ?%d", pk, t->pk + 1);
	if (t->ncols > 1 && !pt->ts[TS_UPDATE] && (rc = prep(db, &pt->ts[TS_UPDATE], &b)) < 0)
		return NULL;
	weft__free(b.s);
	memset(&b, 0, sizeof(b));
	sb_add(&b, "DELETE FROM \"%s\" WHERE \"%s\" = ?1", t->name, pk);
	if (!pt->ts[TS_DELETE] && (rc = prep(db, &pt->ts[TS_DELETE], &b)) < 0)
		return NULL;
	weft__free(b.s);
	memset(&b, 0, sizeof(b));
	sb_add(&b, "SELECT state FROM " CLOCK " WHERE pk = ?1", t->lname);
	if (!pt->ts[TS_CLOCK_GET] && (rc = prep(db, &pt->ts[TS_CLOCK_GET], &b)) < 0)
		return NULL;
	weft__free(b.s);
	memset(&b, 0, sizeof(b));
	sb_add(&b, "INSERT OR REPLACE INTO " CLOCK "(pk, state) VALUES (?1, ?2)", t->lname);
	if (!pt->ts[TS_CLOCK_SET] && (rc = prep(db, &pt->ts[TS_CLOCK_SET], &b)) < 0)
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
		/* An INTEGER key is the rowid: cheaper to find than a key in a
		 * WITHOUT ROWID b-tree. */
		int rowid = t->cols[t->pk].type == WEFT_INTEGER;
		sb_add(&b, ")%s;", rowid ? "" : " WITHOUT ROWID");
		sb_add(&b, "CREATE TABLE " CLOCK "(pk %s PRIMARY KEY, state BLOB NOT NULL)%s;", t->lname,
		       schema_type_sql(t->cols[t->pk].type), rowid ? "" : " WITHOUT ROWID");
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
		"(name LIKE 'weft\\_claim:%' ESCAPE '\\' OR name LIKE 'weft\\_clock:%' ESCAPE '\\' OR name IN (SELECT value FROM json_each(?1)))",
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
	/* What the dropped tables held is derived from payloads the log still
	 * holds (none is erased in place): zero-filling every freed page
	 * (secure_delete, Debian's default) only costs writes. FAST still
	 * clears what it can without extra I/O. A pragma takes effect when
	 * prepared. */
	int secure = 0;
	if (sqlite3_prepare_v2(db->sql, "PRAGMA secure_delete", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		secure = sqlite3_column_int(st, 0) == 1;
	sqlite3_finalize(st);
	rc = secure ? store_exec(db, "PRAGMA secure_delete = FAST", "dropping derived tables") : WEFT_OK;
	if (rc == WEFT_OK && b.s)
		rc = store_exec(db, b.s, "dropping derived tables");
	weft__free(b.s);
	/* Put back even after a failure (a second try, for a passing lack
	 * of memory): later deletes must zero-fill again. */
	if (secure && sqlite3_exec(db->sql, "PRAGMA secure_delete = 1", NULL, NULL, NULL) != SQLITE_OK) {
		int r2 = store_exec(db, "PRAGMA secure_delete = 1", "restoring secure_delete after dropping derived tables");
		if (rc == WEFT_OK)
			rc = r2;
	}
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

/* As bind_value, for bytes that outlive the statement's next reset. */
static void bind_static(weft_db *db, sqlite3_stmt *st, int i, const weft_value *v)
{
	if ((v->type == WEFT_TEXT || v->type == WEFT_BLOB) && v->n)
		bind_rc(db, v->type == WEFT_TEXT ? sqlite3_bind_text(st, i, v->p, (int)v->n, SQLITE_STATIC)
		                                 : sqlite3_bind_blob(st, i, v->p, (int)v->n, SQLITE_STATIC));
	else
		bind_value(db, st, i, v);
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

/*
 * Merge state per derived row (table "weft_clock:<table>"): the stamps that decide the
 * row under the rules of docs/MERGE.md section 2, not the values (those are
 * in the derived row). A stamp is kept as (HLC, weft_event.n, cell index);
 * the author key and event id are looked up by n only when HLCs tie.
 *
 * Tombstone and "live" (newest put or increment) are maxima, a column's
 * winning put is a maximum, counted increments are a sum: applying a cell
 * compares it with the kept stamps. Only a late put or delete that falls
 * between a counter's counted increments, and the withdrawal of a
 * displaced event, need the row's other cells: those re-read the events
 * listed in the row's history (weft_event.n of every event that touched
 * it: inline in the clock row, older entries in weft_clock_hist).
 */
typedef struct cstamp {
	uint64_t hlc;
	int64_t n; /* 0: no stamp */
	uint32_t idx;
} cstamp;

typedef struct ccol {
	cstamp put;        /* winning put (newer than the tombstone) */
	int64_t base;      /* its value if INTEGER, else 0 */
	uint64_t nincr;    /* counted increments (newer than tombstone and put) */
	int64_t sum;       /* their deltas, modulo 2^64 */
	cstamp imax, imin; /* newest and oldest counted increment */
	/* In memory only. */
	int dirty;         /* the derived column must be rewritten */
	int has_val;       /* val holds the winning put's value */
	weft_value val;
} ccol;

typedef struct crow {
	int ti;
	weft_value pk;
	uint64_t hash;
	cstamp tomb;     /* newest delete */
	cstamp live;     /* newest put or increment newer than tomb: the row exists */
	ccol *cols;      /* per declared column */
	int64_t *hist;   /* inline history (not yet spilled) */
	uint32_t nhist, caphist;
	uint32_t chunks; /* history chunks spilled to weft_clock_hist */
	int64_t last_n;  /* the last event added to the history */
	int existed;     /* the derived row exists as stored */
	int loaded;      /* the state was read from a clock row */
	int recompute;   /* the state needs the row's history */
} crow;

#define HIST_INLINE 32          /* history entries kept in the clock row */
#define ARENA_BLOCK 65536
#define ARENA_SPARE 64          /* blocks kept between batches: 4 MiB */
#define REBUILD_FLUSH_ROWS 65536 /* rows kept in memory by a rebuild */
#define REBUILD_FLUSH_BYTES (4u << 20)

static void *arena_alloc(weft_db *db, size_t n)
{
	struct proj_cache *c = db->proj;
	n = (n + 15) & ~(size_t)15;
	ablk *b = c->arena;
	if (!b || b->cap - b->used < n) {
		size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
		ablk *nb = cap == ARENA_BLOCK ? c->spare : NULL;
		if (nb) {
			c->spare = nb->next;
			c->nspare--;
		} else if (!(nb = weft__malloc(sizeof(ablk) + cap))) {
			err_set(&db->err, WEFT_ENOMEM, "out of memory deriving rows");
			return NULL;
		}
		nb->next = b;
		nb->used = 0;
		nb->cap = cap;
		c->arena = b = nb;
		c->arena_bytes += cap;
	}
	void *p = (unsigned char *)(b + 1) + b->used;
	b->used += n;
	return p;
}

/* Frees what the arena gave out since it was at block b, offset used. */
static void arena_rewind(struct proj_cache *c, ablk *b, size_t used)
{
	while (c->arena && c->arena != b) {
		ablk *next = c->arena->next;
		c->arena_bytes -= c->arena->cap;
		weft__free(c->arena);
		c->arena = next;
	}
	if (b)
		b->used = used;
}

/* Copies a value's bytes into the arena. */
static int arena_value(weft_db *db, weft_value *out, const weft_value *v)
{
	*out = *v;
	if ((v->type == WEFT_TEXT || v->type == WEFT_BLOB)) {
		void *p = arena_alloc(db, v->n ? v->n : 1);
		if (!p)
			return db->err.code;
		if (v->n)
			memcpy(p, v->p, v->n);
		out->p = p;
	}
	return WEFT_OK;
}

/* Forgets the rows held in memory. */
static void rows_reset(struct proj_cache *c)
{
	if (c->nrows && c->slots)
		memset(c->slots, 0, c->nslots * sizeof(*c->slots));
	c->nrows = 0;
	/* Blocks are kept for the next rows (up to ARENA_SPARE of them). */
	for (ablk *b = c->arena, *next; b; b = next) {
		next = b->next;
		if (b->cap == ARENA_BLOCK && c->nspare < ARENA_SPARE) {
			b->used = 0;
			b->next = c->spare;
			c->spare = b;
			c->nspare++;
		} else {
			weft__free(b);
		}
	}
	c->arena = NULL;
	c->arena_bytes = 0;
}

static uint64_t row_hash(int ti, const weft_value *pk)
{
	uint64_t h = 0xcbf29ce484222325ull ^ (uint64_t)(unsigned)ti ^ ((uint64_t)pk->type << 32);
	if (pk->type == WEFT_INTEGER) {
		h ^= (uint64_t)pk->i;
		h *= 0x100000001b3ull;
		h ^= h >> 29;
	} else {
		const unsigned char *p = pk->p;
		for (size_t i = 0; i < pk->n; i++) {
			h ^= p[i];
			h *= 0x100000001b3ull;
		}
	}
	h *= 0x9e3779b97f4a7c15ull;
	return h ^ (h >> 32);
}

/* ------------------------------------------------------ clock encoding */

static unsigned char *put_uv(unsigned char *p, uint64_t v)
{
	while (v >= 0x80) {
		*p++ = (unsigned char)(v | 0x80);
		v >>= 7;
	}
	*p++ = (unsigned char)v;
	return p;
}

static int get_uv(const unsigned char **p, const unsigned char *end, uint64_t *v)
{
	uint64_t r = 0;
	for (int s = 0; s < 70; s += 7) {
		if (*p >= end)
			return -1;
		unsigned b = *(*p)++;
		r |= (uint64_t)(b & 0x7f) << s;
		if (!(b & 0x80)) {
			*v = r;
			return 0;
		}
	}
	return -1;
}

static uint64_t zig(int64_t v)
{
	uint64_t u = (uint64_t)v;
	return (u << 1) ^ (0 - (u >> 63));
}

static int64_t unzig(uint64_t z)
{
	return (int64_t)((z >> 1) ^ (0 - (z & 1)));
}

/* A stamp, as its cell index alone when its event is ref's. */
static unsigned char *put_stamp(unsigned char *p, const cstamp *s, const cstamp *ref)
{
	int full = !ref->n || s->hlc != ref->hlc || s->n != ref->n;
	p = put_uv(p, (uint64_t)s->idx << 1 | (uint64_t)full);
	if (full) {
		codec_put_u64(p, s->hlc);
		p = put_uv(p + 8, (uint64_t)s->n);
	}
	return p;
}

static int get_stamp(const unsigned char **p, const unsigned char *end, cstamp *s, const cstamp *ref)
{
	uint64_t v, n;
	if (get_uv(p, end, &v) < 0 || (v >> 1) > UINT32_MAX)
		return -1;
	s->idx = (uint32_t)(v >> 1);
	if (!(v & 1)) {
		if (!ref->n)
			return -1;
		s->hlc = ref->hlc;
		s->n = ref->n;
		return 0;
	}
	if (end - *p < 8)
		return -1;
	s->hlc = codec_get_u64(*p);
	*p += 8;
	if (get_uv(p, end, &n) < 0 || n == 0 || n > INT64_MAX)
		return -1;
	s->n = (int64_t)n;
	return 0;
}

/* A list of weft_event.n as varint deltas. */
static unsigned char *put_hist(unsigned char *p, const int64_t *v, size_t n)
{
	int64_t prev = 0;
	for (size_t i = 0; i < n; i++) {
		p = put_uv(p, zig(v[i] - prev));
		prev = v[i];
	}
	return p;
}

/* Bytes a state can take at most. */
static size_t clock_max(const schema_table *t, const crow *r)
{
	return 64 + (size_t)t->ncols * 128 + (size_t)r->nhist * 10;
}

/*
 * The clock row's state: flags (1 tombstone, 2 live), the reference event
 * (hlc u64, n) other stamps abbreviate to, tombstone, live, per column
 * with a state: column index, flags (1 put, 2 increments), put stamp and
 * base, increment count, sum, newest and oldest increment; then the number
 * of spilled history chunks and the inline history.
 */
static size_t clock_encode(const schema_table *t, const crow *r, unsigned char *buf)
{
	unsigned char *p = buf;
	const cstamp *ref = r->live.n ? &r->live : &r->tomb;
	*p++ = (unsigned char)((r->tomb.n ? 1 : 0) | (r->live.n ? 2 : 0));
	if (ref->n) {
		codec_put_u64(p, ref->hlc);
		p = put_uv(p + 8, (uint64_t)ref->n);
	}
	if (r->tomb.n)
		p = put_stamp(p, &r->tomb, ref);
	if (r->live.n)
		p = put_stamp(p, &r->live, ref);
	uint64_t n = 0;
	for (int k = 0; k < t->ncols; k++)
		n += r->cols[k].put.n || r->cols[k].nincr;
	p = put_uv(p, n);
	for (int k = 0; k < t->ncols; k++) {
		const ccol *c = &r->cols[k];
		if (!c->put.n && !c->nincr)
			continue;
		p = put_uv(p, (uint64_t)k);
		*p++ = (unsigned char)((c->put.n ? 1 : 0) | (c->nincr ? 2 : 0));
		if (c->put.n) {
			p = put_stamp(p, &c->put, ref);
			p = put_uv(p, zig(c->base));
		}
		if (c->nincr) {
			p = put_uv(p, c->nincr);
			p = put_uv(p, zig(c->sum));
			p = put_stamp(p, &c->imax, ref);
			p = put_stamp(p, &c->imin, ref);
		}
	}
	p = put_uv(p, r->chunks);
	p = put_uv(p, r->nhist);
	p = put_hist(p, r->hist, r->nhist);
	return (size_t)(p - buf);
}

static int hist_reserve(weft_db *db, crow *r, uint32_t want)
{
	if (want <= r->caphist)
		return WEFT_OK;
	uint32_t cap = r->caphist ? r->caphist * 2 : 4;
	while (cap < want)
		cap *= 2;
	int64_t *h = arena_alloc(db, (size_t)cap * sizeof(int64_t));
	if (!h)
		return db->err.code;
	if (r->nhist)
		memcpy(h, r->hist, (size_t)r->nhist * sizeof(int64_t));
	r->hist = h;
	r->caphist = cap;
	return WEFT_OK;
}

static int clock_corrupt(weft_db *db, const schema_table *t)
{
	return err_set(&db->err, WEFT_ECORRUPT, "the merge state of a row of %s is malformed; "
	               "run `weft rebuild` to re-derive the tables from the log", t->name);
}

static int clock_decode(weft_db *db, crow *r, const unsigned char *p, size_t len)
{
	const schema_table *t = &db->schema->tables[r->ti];
	const unsigned char *end = p + len;
	cstamp ref = {0, 0, 0};
	uint64_t v, n;
	if (len < 1 || (*p & ~3u))
		return clock_corrupt(db, t);
	unsigned flags = *p++;
	if (flags) {
		if (end - p < 8)
			return clock_corrupt(db, t);
		ref.hlc = codec_get_u64(p);
		p += 8;
		if (get_uv(&p, end, &v) < 0 || v == 0 || v > INT64_MAX)
			return clock_corrupt(db, t);
		ref.n = (int64_t)v;
	}
	if (((flags & 1) && get_stamp(&p, end, &r->tomb, &ref) < 0) ||
	    ((flags & 2) && get_stamp(&p, end, &r->live, &ref) < 0) || get_uv(&p, end, &n) < 0 ||
	    n > (uint64_t)t->ncols)
		return clock_corrupt(db, t);
	for (uint64_t i = 0; i < n; i++) {
		if (get_uv(&p, end, &v) < 0 || v >= (uint64_t)t->ncols || p >= end || (*p & ~3u) || !*p)
			return clock_corrupt(db, t);
		ccol *c = &r->cols[v];
		unsigned f = *p++;
		if (f & 1) {
			if (get_stamp(&p, end, &c->put, &ref) < 0 || get_uv(&p, end, &v) < 0)
				return clock_corrupt(db, t);
			c->base = unzig(v);
		}
		if (f & 2) {
			if (get_uv(&p, end, &c->nincr) < 0 || !c->nincr || get_uv(&p, end, &v) < 0 ||
			    get_stamp(&p, end, &c->imax, &ref) < 0 || get_stamp(&p, end, &c->imin, &ref) < 0)
				return clock_corrupt(db, t);
			c->sum = unzig(v);
		}
	}
	if (get_uv(&p, end, &v) < 0 || v > UINT32_MAX || get_uv(&p, end, &n) < 0 || n > (uint64_t)(end - p))
		return clock_corrupt(db, t);
	r->chunks = (uint32_t)v;
	int rc = hist_reserve(db, r, (uint32_t)n + 1);
	if (rc < 0)
		return rc;
	int64_t prev = 0;
	for (uint64_t i = 0; i < n; i++) {
		if (get_uv(&p, end, &v) < 0)
			return clock_corrupt(db, t);
		prev = (int64_t)((uint64_t)prev + (uint64_t)unzig(v));
		if (prev <= 0)
			return clock_corrupt(db, t);
		r->hist[i] = prev;
	}
	r->nhist = (uint32_t)n;
	if (p != end)
		return clock_corrupt(db, t);
	return WEFT_OK;
}

/* Decodes a spilled history chunk, calling cb for each n. */
static int hist_chunk_each(const unsigned char *p, size_t len, int (*cb)(int64_t n, void *ctx), void *ctx)
{
	const unsigned char *end = p + len;
	int64_t prev = 0;
	while (p < end) {
		uint64_t v;
		if (get_uv(&p, end, &v) < 0)
			return -1;
		prev = (int64_t)((uint64_t)prev + (uint64_t)unzig(v));
		if (prev <= 0)
			return -1;
		int rc = cb(prev, ctx);
		if (rc)
			return rc;
	}
	return 0;
}

/* ------------------------------------------------------ rows in memory */

static int bloom_has(const struct proj_cache *c, uint64_t h)
{
	if (!c->bloom)
		return 1;
	size_t a = (size_t)(h % c->bloom_bits), b = (size_t)((h >> 32 ^ h * 0x9e3779b97f4a7c15ull) % c->bloom_bits);
	return (c->bloom[a / 64] >> (a % 64) & 1) && (c->bloom[b / 64] >> (b % 64) & 1);
}

static void bloom_add(struct proj_cache *c, uint64_t h)
{
	if (!c->bloom)
		return;
	size_t a = (size_t)(h % c->bloom_bits), b = (size_t)((h >> 32 ^ h * 0x9e3779b97f4a7c15ull) % c->bloom_bits);
	c->bloom[a / 64] |= UINT64_C(1) << (a % 64);
	c->bloom[b / 64] |= UINT64_C(1) << (b % 64);
}

/* The row (ti, pk): from memory, else from its clock row, else new. */
static crow *row_get(weft_db *db, int ti, const weft_value *pk)
{
	struct proj_cache *c = db->proj;
	uint64_t h = row_hash(ti, pk);
	if (c->nslots) {
		for (size_t i = h & (c->nslots - 1);; i = (i + 1) & (c->nslots - 1)) {
			crow *r = c->slots[i];
			if (!r)
				break;
			if (r->hash == h && r->ti == ti && rows_value_cmp(&r->pk, pk) == 0)
				return r;
		}
	}
	if ((c->nrows + 1) * 2 > c->nslots) {
		size_t ns = c->nslots ? c->nslots * 2 : 256;
		crow **slots = weft__calloc(ns, sizeof(*slots)), **rows = weft__realloc(c->rows, ns / 2 * sizeof(*rows));
		if (!slots || !rows) {
			weft__free(slots);
			if (rows)
				c->rows = rows;
			err_set(&db->err, WEFT_ENOMEM, "out of memory deriving rows");
			return NULL;
		}
		c->rows = rows;
		for (size_t k = 0; k < c->nrows; k++) {
			size_t i = c->rows[k]->hash & (ns - 1);
			while (slots[i])
				i = (i + 1) & (ns - 1);
			slots[i] = c->rows[k];
		}
		weft__free(c->slots);
		c->slots = slots;
		c->nslots = ns;
	}
	const schema_table *t = &db->schema->tables[ti];
	crow *r = arena_alloc(db, sizeof(*r));
	ccol *cols = r ? arena_alloc(db, (size_t)t->ncols * sizeof(ccol)) : NULL;
	if (!cols)
		return NULL;
	memset(r, 0, sizeof(*r));
	memset(cols, 0, (size_t)t->ncols * sizeof(ccol));
	r->ti = ti;
	r->hash = h;
	r->cols = cols;
	if (arena_value(db, &r->pk, pk) < 0)
		return NULL;
	if (!c->clock_empty && bloom_has(c, h)) {
		sqlite3_stmt **ts = table_stmts(db, ti);
		if (!ts)
			return NULL;
		sqlite3_stmt *st = ts[TS_CLOCK_GET];
		sqlite3_reset(st);
		bind_static(db, st, 1, pk);
		int s = step(db, st), rc = WEFT_OK;
		if (s == SQLITE_ROW) {
			r->loaded = 1;
			rc = clock_decode(db, r, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0));
		}
		else if (s != SQLITE_DONE)
			rc = store_sqlite_error(db, s, "reading a row's merge state");
		sqlite3_reset(st);
		if (rc < 0)
			return NULL;
	}
	r->existed = r->live.n != 0;
	size_t i = h & (c->nslots - 1);
	while (c->slots[i])
		i = (i + 1) & (c->nslots - 1);
	c->slots[i] = r;
	c->rows[c->nrows++] = r;
	return r;
}

static int hist_add(weft_db *db, crow *r, int64_t n)
{
	if (r->last_n == n)
		return WEFT_OK;
	int rc = hist_reserve(db, r, r->nhist + 1);
	if (rc < 0)
		return rc;
	r->hist[r->nhist++] = n;
	r->last_n = n;
	return WEFT_OK;
}

/* ------------------------------------------------------ applying cells */

/* Compares two present stamps into *out (<0, 0, >0). */
static int event_stamp(weft_db *db, int64_t n, stamp *out);

static int cs_cmp(weft_db *db, const cstamp *a, const cstamp *b, int *out)
{
	if (a->hlc != b->hlc) {
		*out = a->hlc < b->hlc ? -1 : 1;
		return WEFT_OK;
	}
	if (a->n == b->n) {
		*out = a->idx < b->idx ? -1 : a->idx > b->idx;
		return WEFT_OK;
	}
	stamp sa, sb;
	int rc;
	if ((rc = event_stamp(db, a->n, &sa)) < 0 || (rc = event_stamp(db, b->n, &sb)) < 0)
		return rc;
	sa.idx = a->idx;
	sb.idx = b->idx;
	*out = stamp_cmp(&sa, &sb);
	return WEFT_OK;
}

#define CMP(a, b)                                                                                  \
	do {                                                                                       \
		int rc_ = cs_cmp(db, (a), (b), &c);                                                \
		if (rc_ < 0)                                                                       \
			return rc_;                                                                \
	} while (0)

static void col_clear(ccol *col)
{
	memset(&col->put, 0, sizeof(col->put));
	col->base = 0;
	col->has_val = 0;
	col->nincr = 0;
	col->sum = 0;
	memset(&col->imax, 0, sizeof(col->imax));
	memset(&col->imin, 0, sizeof(col->imin));
}

static void incr_clear(ccol *col)
{
	col->nincr = 0;
	col->sum = 0;
	memset(&col->imax, 0, sizeof(col->imax));
	memset(&col->imin, 0, sizeof(col->imin));
}

static int cell_delete(weft_db *db, crow *r, const cstamp *s)
{
	const schema_table *t = &db->schema->tables[r->ti];
	int c;
	if (r->tomb.n) {
		CMP(s, &r->tomb);
		if (c <= 0)
			return WEFT_OK;
	}
	r->tomb = *s;
	if (r->live.n) {
		CMP(&r->live, s);
		if (c <= 0)
			memset(&r->live, 0, sizeof(r->live));
	}
	for (int k = 0; k < t->ncols; k++) {
		ccol *col = &r->cols[k];
		if (!col->put.n && !col->nincr)
			continue;
		if (!r->live.n) {
			col_clear(col);
			col->dirty = 1;
			continue;
		}
		if (col->put.n) {
			CMP(&col->put, s);
			if (c <= 0) {
				memset(&col->put, 0, sizeof(col->put));
				col->base = 0;
				col->has_val = 0;
				col->dirty = 1;
			}
		}
		if (col->nincr) {
			CMP(&col->imax, s);
			if (c <= 0) {
				incr_clear(col);
				col->dirty = 1;
			} else {
				CMP(&col->imin, s);
				if (c <= 0)
					r->recompute = 1; /* some increments go, some stay */
			}
		}
	}
	return WEFT_OK;
}

/*
 * What a put or an increment at s of column k (-1: none, or an undeclared
 * column) does first: the row is live at s unless a delete is newer, and
 * *out is the column to change, or NULL when a newer delete or a newer put
 * of the column wins (a put resets a counter).
 */
static int cell_target(weft_db *db, crow *r, int k, const cstamp *s, ccol **out)
{
	int c;
	*out = NULL;
	if (r->tomb.n) {
		CMP(s, &r->tomb);
		if (c <= 0)
			return WEFT_OK;
	}
	if (r->live.n)
		CMP(s, &r->live);
	if (!r->live.n || c > 0)
		r->live = *s;
	if (k < 0)
		return WEFT_OK;
	ccol *col = &r->cols[k];
	if (col->put.n) {
		CMP(s, &col->put);
		if (c <= 0)
			return WEFT_OK;
	}
	*out = col;
	return WEFT_OK;
}

/* A put of column k (-1: a column-less put or an undeclared column). */
static int cell_put(weft_db *db, crow *r, int k, const cstamp *s, const weft_value *v)
{
	int c;
	ccol *col;
	int rc = cell_target(db, r, k, s, &col);
	if (rc < 0 || !col)
		return rc;
	if (col->nincr) {
		CMP(&col->imax, s);
		if (c < 0) {
			incr_clear(col);
		} else {
			CMP(&col->imin, s);
			if (c < 0)
				r->recompute = 1; /* a put between counted increments */
		}
	}
	col->put = *s;
	col->base = v->type == WEFT_INTEGER ? v->i : 0;
	col->dirty = 1;
	col->has_val = 1;
	return arena_value(db, &col->val, v);
}

static int cell_incr(weft_db *db, crow *r, int k, const cstamp *s, int64_t delta)
{
	int c;
	ccol *col;
	int rc = cell_target(db, r, k, s, &col);
	if (rc < 0 || !col)
		return rc;
	col->sum = (int64_t)((uint64_t)col->sum + (uint64_t)delta);
	if (!col->nincr++) {
		col->imax = col->imin = *s;
	} else {
		CMP(s, &col->imax);
		if (c > 0)
			col->imax = *s;
		CMP(s, &col->imin);
		if (c < 0)
			col->imin = *s;
	}
	col->dirty = 1;
	return WEFT_OK;
}

#undef CMP

/* ------------------------------------------------ history (rare paths) */

typedef struct op {
	int kind;
	int col; /* declared column index, -1 if none/undeclared */
	stamp s;
	int64_t n;
	weft_value value; /* bytes owned by the row_ops */
} op;

/* The cells of one row, and the bytes their values point to. */
typedef struct row_ops {
	op *v;
	size_t n, cap;
	unsigned char **bufs;
	size_t nbufs, capbufs;
} row_ops;

static void ops_free(row_ops *r)
{
	for (size_t i = 0; i < r->nbufs; i++)
		weft__free(r->bufs[i]);
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

/* A copy of n bytes that lives until ops_free. */
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
	if (n == c->cur_n && !c->cur_partial) {
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
			               ? err_set(&db->err, WEFT_ECORRUPT, "a row's merge state names a missing or malformed "
			                         "event; run `weft verify`, then `weft rebuild`")
			               : store_sqlite_error(db, rc, "reading an event's stamp");
		}
		memset(&c->last, 0, sizeof(c->last));
		c->last.hlc = (uint64_t)sqlite3_column_int64(st, 0);
		memcpy(c->last.author, sqlite3_column_blob(st, 1), 32);
		memcpy(c->last.id, sqlite3_column_blob(st, 2), 32);
		c->last_n = n;
		sqlite3_reset(st);
		if (n == c->cur_n) {
			c->cur = c->last;
			c->cur_partial = 0;
		}
	}
	*out = c->last;
	return WEFT_OK;
}

typedef struct nlist {
	int64_t *v;
	size_t n, cap;
	int oom;
} nlist;

static int nlist_add(int64_t n, void *arg)
{
	nlist *l = arg;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		int64_t *v = weft__realloc(l->v, cap * sizeof(*v));
		if (!v) {
			l->oom = 1;
			return 1;
		}
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = n;
	return 0;
}

/* The row's whole history: spilled chunks, then the inline entries. */
static int hist_all(weft_db *db, crow *r, nlist *l)
{
	if (r->chunks) {
		sqlite3_stmt *st = gstmt(db, GS_HIST_GET);
		if (!st)
			return db->err.code;
		sqlite3_bind_int(st, 1, r->ti);
		bind_value(db, st, 2, &r->pk);
		int s, bad = 0;
		while (!bad && (s = step(db, st)) == SQLITE_ROW)
			bad = hist_chunk_each(sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1), nlist_add, l);
		sqlite3_reset(st);
		if (l->oom)
			return err_set(&db->err, WEFT_ENOMEM, "out of memory reading a row's history");
		if (bad)
			return clock_corrupt(db, &db->schema->tables[r->ti]);
		if (s != SQLITE_DONE)
			return store_sqlite_error(db, s, "reading a row's history");
	}
	for (uint32_t i = 0; i < r->nhist; i++)
		if (nlist_add(r->hist[i], l))
			return err_set(&db->err, WEFT_ENOMEM, "out of memory reading a row's history");
	return WEFT_OK;
}

typedef struct gather_ctx {
	weft_db *db;
	const schema_table *t;
	const crow *r;
	row_ops *ro;
	stamp s;
	int64_t n;
} gather_ctx;

static int gather_op(const rowop *o, void *arg)
{
	gather_ctx *g = arg;
	weft_db *db = g->db;
	if (strcmp(o->table, g->t->lname) != 0 || rows_value_cmp(&o->pk, &g->r->pk) != 0)
		return 0;
	stamp s = g->s;
	s.idx = o->idx;
	if (o->kind == ROWOP_PUT && o->ncells) {
		const unsigned char *p = o->cells, *end = p + o->cells_len;
		char name[ROWS_NAME_MAX + 1];
		weft_value v;
		while (rows_cells_next(&p, end, name, &v) > 0) {
			op *x = ops_push(db, g->ro);
			if (!x)
				return db->err.code;
			x->kind = ROWOP_PUT;
			x->col = schema_col_find(g->t, name);
			x->s = s;
			x->n = g->n;
			if ((v.type == WEFT_TEXT || v.type == WEFT_BLOB) && !(v.p = ops_keep(db, g->ro, v.p, v.n)))
				return db->err.code;
			x->value = v;
			s.idx++;
		}
		return 0;
	}
	op *x = ops_push(db, g->ro);
	if (!x)
		return db->err.code;
	x->kind = (int)o->kind;
	x->col = o->kind == ROWOP_INCR ? schema_col_find(g->t, o->col) : -1;
	x->s = s;
	x->n = g->n;
	x->value = o->kind == ROWOP_INCR ? o->value : weft_null();
	return 0;
}

/* Reads the cells of row r from the events of its history. */
static int gather(weft_db *db, crow *r, row_ops *ro)
{
	nlist l = {0};
	int rc = hist_all(db, r, &l);
	gather_ctx g = {db, &db->schema->tables[r->ti], r, ro, {0}, 0};
	for (size_t i = 0; rc == WEFT_OK && i < l.n; i++) {
		sqlite3_stmt *st = gstmt(db, GS_EVENT_ROW);
		if (!st) {
			rc = db->err.code;
			break;
		}
		sqlite3_bind_int64(st, 1, l.v[i]);
		int s = step(db, st);
		if (s != SQLITE_ROW || sqlite3_column_bytes(st, 1) != 32 || sqlite3_column_bytes(st, 2) != 32) {
			sqlite3_reset(st);
			rc = s == SQLITE_ROW || s == SQLITE_DONE
			             ? err_set(&db->err, WEFT_ECORRUPT, "a row's history names a missing or malformed event; "
			                       "run `weft verify`, then `weft rebuild`")
			             : store_sqlite_error(db, s, "reading a row's history");
			break;
		}
		memset(&g.s, 0, sizeof(g.s));
		g.s.hlc = (uint64_t)sqlite3_column_int64(st, 0);
		memcpy(g.s.author, sqlite3_column_blob(st, 1), 32);
		memcpy(g.s.id, sqlite3_column_blob(st, 2), 32);
		g.n = l.v[i];
		/* An erased payload has no cells left. */
		if (sqlite3_column_type(st, 3) != SQLITE_NULL) {
			const void *p = sqlite3_column_blob(st, 3);
			weft_err e;
			e.code = 0;
			rc = rows_decode_ops(p ? p : "", (size_t)sqlite3_column_bytes(st, 3), gather_op, &g, &e);
			if (rc == WEFT_ECORRUPT && e.code == WEFT_ECORRUPT)
				rc = WEFT_OK; /* malformed: no effect (never applied either) */
		}
		sqlite3_reset(st);
	}
	weft__free(l.v);
	return rc;
}

/* The merged state of one row's cells: see docs/MERGE.md. */
typedef struct row_state {
	const op *tomb, *live;
	const op **put;  /* per column: winning put after the tombstone, or NULL */
	int64_t *sum;    /* per column: sum of counted increments */
	uint64_t *nincr; /* per column: increments counted */
	const op **imax, **imin; /* per column: newest, oldest counted increment */
} row_state;

static void merge(const schema_table *t, const row_ops *r, row_state *rs)
{
	const op *tomb = NULL;
	for (size_t i = 0; i < r->n; i++)
		if (r->v[i].kind == ROWOP_DELETE && (!tomb || stamp_cmp(&r->v[i].s, &tomb->s) > 0))
			tomb = &r->v[i];
	rs->tomb = tomb;
	rs->live = NULL;
	for (int k = 0; k < t->ncols; k++) {
		rs->put[k] = rs->imax[k] = rs->imin[k] = NULL;
		rs->sum[k] = 0;
		rs->nincr[k] = 0;
	}
	for (size_t i = 0; i < r->n; i++) {
		const op *o = &r->v[i];
		if (o->kind == ROWOP_DELETE || (tomb && stamp_cmp(&o->s, &tomb->s) <= 0))
			continue;
		if (!rs->live || stamp_cmp(&o->s, &rs->live->s) > 0)
			rs->live = o;
		if (o->kind == ROWOP_PUT && o->col >= 0 &&
		    (!rs->put[o->col] || stamp_cmp(&o->s, &rs->put[o->col]->s) > 0))
			rs->put[o->col] = o;
	}
	/* Increments count when newer than both the tombstone and the put
	 * they add to; a put resets a counter. Sums wrap modulo 2^64. */
	for (size_t i = 0; i < r->n; i++) {
		const op *o = &r->v[i];
		if (o->kind != ROWOP_INCR || o->col < 0 || (tomb && stamp_cmp(&o->s, &tomb->s) <= 0))
			continue;
		const op *base = rs->put[o->col];
		if (base && stamp_cmp(&o->s, &base->s) <= 0)
			continue;
		int k = o->col;
		rs->sum[k] = (int64_t)((uint64_t)rs->sum[k] + (uint64_t)(o->value.type == WEFT_INTEGER ? o->value.i : 0));
		rs->nincr[k]++;
		if (!rs->imax[k] || stamp_cmp(&o->s, &rs->imax[k]->s) > 0)
			rs->imax[k] = o;
		if (!rs->imin[k] || stamp_cmp(&o->s, &rs->imin[k]->s) < 0)
			rs->imin[k] = o;
	}
}

static cstamp to_cstamp(const op *o)
{
	cstamp s = {0, 0, 0};
	if (o) {
		s.hlc = o->s.hlc;
		s.n = o->n;
		s.idx = o->s.idx;
	}
	return s;
}

/* Re-derives row r's state from the events of its history. */
static int recompute(weft_db *db, crow *r)
{
	const schema_table *t = &db->schema->tables[r->ti];
	row_ops ro = {0};
	int rc = gather(db, r, &ro);
	size_t n = (size_t)t->ncols;
	void *mem = rc == WEFT_OK ? weft__calloc(n, 4 * sizeof(void *) + 2 * sizeof(uint64_t)) : NULL;
	if (rc == WEFT_OK && !mem)
		rc = err_set(&db->err, WEFT_ENOMEM, "out of memory deriving a row");
	if (rc < 0) {
		ops_free(&ro);
		return rc;
	}
	row_state rs;
	rs.put = mem;
	rs.imax = rs.put + n;
	rs.imin = rs.imax + n;
	rs.sum = (int64_t *)(rs.imin + n);
	rs.nincr = (uint64_t *)(rs.sum + n);
	merge(t, &ro, &rs);
	r->tomb = to_cstamp(rs.tomb);
	r->live = to_cstamp(rs.live);
	for (int k = 0; k < t->ncols && rc == WEFT_OK; k++) {
		ccol *c = &r->cols[k];
		col_clear(c);
		c->dirty = 1;
		if (rs.put[k]) {
			c->put = to_cstamp(rs.put[k]);
			c->base = rs.put[k]->value.type == WEFT_INTEGER ? rs.put[k]->value.i : 0;
			c->has_val = 1;
			rc = arena_value(db, &c->val, &rs.put[k]->value);
		}
		if (rs.nincr[k]) {
			c->nincr = rs.nincr[k];
			c->sum = rs.sum[k];
			c->imax = to_cstamp(rs.imax[k]);
			c->imin = to_cstamp(rs.imin[k]);
		}
	}
	weft__free(mem);
	ops_free(&ro);
	r->recompute = 0;
	return rc;
}

/* ---------------------------------------------------- writing a row */

/* The merged value of column k (docs/MERGE.md, "Counters" and "Unwritten
 * columns"); a put's value must be in memory (has_val). */
static weft_value col_value(const schema_col *c, const ccol *s)
{
	static const weft_value zero_int = {WEFT_INTEGER, 0, 0, NULL, 0};
	static const weft_value zero_real = {WEFT_REAL, 0, 0, NULL, 0};
	static const weft_value zero_text = {WEFT_TEXT, 0, 0, "", 0};
	static const weft_value zero_blob = {WEFT_BLOB, 0, 0, "", 0};
	if (s->nincr) {
		/* Increments add to the put they follow, or to the DEFAULT a
		 * row starts with (as UPDATE SET n = n + 1 would). */
		int64_t base = 0;
		if (s->put.n)
			base = s->base;
		else if (c->has_default && c->def.type == WEFT_INTEGER)
			base = c->def.i;
		return weft_int((int64_t)((uint64_t)base + (uint64_t)s->sum));
	}
	if (s->put.n && s->val.type != WEFT_NULL)
		return s->val;
	if (c->has_default && !s->put.n)
		return c->def;
	if (c->notnull) {
		/* A NOT NULL column no write filled (a row revived after a
		 * delete): the type's zero, the same on every device. */
		if (c->has_default)
			return c->def;
		return c->type == WEFT_INTEGER ? zero_int : c->type == WEFT_REAL ? zero_real
		       : c->type == WEFT_TEXT ? zero_text : zero_blob;
	}
	return weft_null();
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

/* UNIQUE column k of row r changed: updates its claim, then settles the
 * old and the new value among all rows claiming them. */
static int settle_claim(weft_db *db, crow *r, int k, int exists)
{
	const schema_table *t = &db->schema->tables[r->ti];
	const ccol *col = &r->cols[k];
	sqlite3_stmt **cs = claim_stmts(db, r->ti, k);
	if (!cs)
		return db->err.code;
	sqlite3_value *old = NULL, *now = NULL;
	int rc = claim_get(db, cs[CS_GET], &r->pk, &old);
	if (rc < 0)
		return rc;
	int claims = exists && (col->nincr || (col->put.n && col->val.type != WEFT_NULL));
	sqlite3_stmt *st = claims ? cs[CS_SET] : cs[CS_DEL];
	sqlite3_reset(st);
	bind_value(db, st, 1, &r->pk);
	if (claims) {
		weft_value v = col_value(&t->cols[k], col);
		bind_value(db, st, 2, &v);
		const cstamp *last = col->nincr ? &col->imax : &col->put;
		stamp s;
		if ((rc = event_stamp(db, last->n, &s)) < 0) {
			sqlite3_value_free(old);
			return rc;
		}
		sqlite3_bind_int64(st, 3, (sqlite3_int64)last->hlc);
		bind_rc(db, sqlite3_bind_blob(st, 4, s.id, 32, SQLITE_TRANSIENT));
		sqlite3_bind_int64(st, 5, last->idx);
	}
	int s = step(db, st);
	if (s != SQLITE_DONE)
		rc = store_sqlite_error(db, s, "recording a unique claim");
	sqlite3_reset(st);
	if (rc == WEFT_OK && claims)
		rc = claim_get(db, cs[CS_GET], &r->pk, &now);
	if (rc == WEFT_OK && old && (!now || sqlite3_value_type(old) != sqlite3_value_type(now) ||
	                             sqlite3_value_bytes(old) != sqlite3_value_bytes(now) ||
	                             memcmp(sqlite3_value_blob(old), sqlite3_value_blob(now),
	                                    (size_t)sqlite3_value_bytes(old)) != 0))
		rc = resolve_unique(db, t, r->ti, k, old);
	if (rc == WEFT_OK && now)
		rc = resolve_unique(db, t, r->ti, k, now);
	sqlite3_value_free(old);
	sqlite3_value_free(now);
	return rc;
}

/* The encoding buffer, at least need bytes. */
static int enc_reserve(weft_db *db, size_t need)
{
	struct proj_cache *c = db->proj;
	if (need <= c->enccap)
		return WEFT_OK;
	unsigned char *b = weft__realloc(c->enc, need);
	if (!b)
		return err_set(&db->err, WEFT_ENOMEM, "out of memory deriving rows");
	c->enc = b;
	c->enccap = need;
	return WEFT_OK;
}

static int clock_write(weft_db *db, crow *r)
{
	struct proj_cache *c = db->proj;
	const schema_table *t = &db->schema->tables[r->ti];
	sqlite3_stmt *st;
	int s;
	if (r->nhist >= HIST_INLINE) {
		/* Spill the inline history: rows written often stay small. */
		int rc = enc_reserve(db, (size_t)r->nhist * 10);
		if (rc < 0)
			return rc;
		size_t len = (size_t)(put_hist(c->enc, r->hist, r->nhist) - c->enc);
		if (!(st = gstmt(db, GS_HIST_SET)))
			return db->err.code;
		sqlite3_bind_int(st, 1, r->ti);
		bind_value(db, st, 2, &r->pk);
		sqlite3_bind_int64(st, 3, r->chunks);
		sqlite3_bind_blob(st, 4, c->enc, (int)len, SQLITE_STATIC);
		s = step(db, st);
		sqlite3_reset(st);
		if (s != SQLITE_DONE)
			return store_sqlite_error(db, s, "recording a row's history");
		r->chunks++;
		r->nhist = 0;
	}
	int rc = enc_reserve(db, clock_max(t, r));
	if (rc < 0)
		return rc;
	size_t len = clock_encode(t, r, c->enc);
	sqlite3_stmt **ts = table_stmts(db, r->ti);
	if (!ts)
		return db->err.code;
	st = ts[TS_CLOCK_SET];
	sqlite3_reset(st);
	bind_static(db, st, 1, &r->pk);
	sqlite3_bind_blob(st, 2, c->enc, (int)len, SQLITE_STATIC);
	s = step(db, st);
	sqlite3_reset(st);
	return s == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, s, "recording a row's merge state");
}

/* Writes row r's derived row, claims and clock row. */
static int write_row(weft_db *db, crow *r)
{
	const schema_table *t = &db->schema->tables[r->ti];
	int rc = WEFT_OK;
	for (int k = 0; k < t->ncols; k++) {
		const ccol *c = &r->cols[k];
		if (c->dirty && c->put.n && !c->nincr && !c->has_val)
			r->recompute = 1; /* not expected: the value is not at hand */
	}
	if (r->recompute && (rc = recompute(db, r)) < 0)
		return rc;
	/* For the feed: the row as it was, and the event that touched it. */
	if (!db->rebuilding && (rc = touch(db, t, r->ti, &r->pk, 0)) < 0)
		return rc;
	int exists = r->live.n != 0;
	if (exists || r->existed) {
		sqlite3_stmt **ts = table_stmts(db, r->ti);
		if (!ts)
			return db->err.code;
		int any = !exists;
		for (int k = 0; k < t->ncols; k++) {
			if (!r->existed)
				r->cols[k].dirty = 1;
			any |= r->cols[k].dirty;
		}
		sqlite3_stmt *st = NULL;
		if (!exists) {
			st = ts[TS_DELETE];
			sqlite3_reset(st);
			bind_value(db, st, 1, &r->pk);
		} else if (any && (!r->existed || ts[TS_UPDATE])) {
			/* A row that was there keeps the columns that did not change. */
			st = r->existed ? ts[TS_UPDATE] : ts[TS_UPSERT];
			sqlite3_reset(st);
			for (int k = 0; k < t->ncols; k++) {
				const schema_col *c = &t->cols[k];
				if (c->pk) {
					bind_static(db, st, k + 1, &r->pk);
				} else if (c->unique || !r->cols[k].dirty) {
					sqlite3_bind_null(st, k + 1); /* unique: set by resolve_unique */
				} else {
					weft_value v = col_value(c, &r->cols[k]);
					bind_static(db, st, k + 1, &v);
				}
				if (r->existed)
					sqlite3_bind_int(st, t->ncols + k + 1, r->cols[k].dirty);
			}
		}
		if (st) {
			int s = step(db, st);
			rc = s == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, s, exists ? "writing a row" : "deleting a row");
			sqlite3_reset(st);
		}
		for (int k = 0; rc == WEFT_OK && k < t->ncols; k++)
			if (t->cols[k].unique && (!exists || r->cols[k].dirty))
				rc = settle_claim(db, r, k, exists);
		if (rc < 0)
			return rc;
	}
	if ((rc = clock_write(db, r)) < 0)
		return rc;
	r->existed = exists;
	for (int k = 0; k < t->ncols; k++)
		r->cols[k].dirty = 0;
	return WEFT_OK;
}

static int row_order(const void *a, const void *b)
{
	const crow *x = *(const crow *const *)a, *y = *(const crow *const *)b;
	if (x->ti != y->ti)
		return x->ti < y->ti ? -1 : 1;
	return rows_value_cmp(&x->pk, &y->pk);
}

/* Writes every row held in memory, in key order, then forgets them. */
static int flush_rows(weft_db *db)
{
	struct proj_cache *c = db->proj;
	int rc = WEFT_OK;
	/* Rows often come in key order already (keys that grow with time). */
	size_t in_order = 1;
	while (in_order < c->nrows && row_order(&c->rows[in_order - 1], &c->rows[in_order]) < 0)
		in_order++;
	if (in_order < c->nrows)
		qsort(c->rows, c->nrows, sizeof(*c->rows), row_order);
	for (size_t i = 0; rc == WEFT_OK && i < c->nrows; i++) {
		rc = write_row(db, c->rows[i]);
		bloom_add(c, c->rows[i]->hash);
	}
	if (c->nrows)
		c->clock_empty = 0;
	rows_reset(c);
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

/* ---------------------------------------------------------- one event */

typedef struct apply_ctx {
	weft_db *db;
	int64_t n;
	uint64_t hlc;
	int ti;      /* table of the previous operation (-1: undeclared) */
	char table[SCHEMA_NAME_MAX + 1];
} apply_ctx;

/* The declared table an operation names, remembered across operations. */
static int op_table(apply_ctx *x, const char *table)
{
	if (!x->table[0] || strcmp(x->table, table) != 0) {
		size_t n = strlen(table); /* at most ROWS_NAME_MAX: checked by the decoder */
		memcpy(x->table, table, n + 1);
		x->ti = table_index(x->db->schema, table);
	}
	return x->ti;
}

/* Keeps row r's state before the current event changes it: a rebuild
 * decodes a payload in one pass, and takes a malformed one back. */
static int snapshot(weft_db *db, crow *r)
{
	struct proj_cache *c = db->proj;
	size_t cols = (size_t)db->schema->tables[r->ti].ncols * sizeof(ccol);
	if (c->nsnaps == c->capsnaps) {
		size_t cap = c->capsnaps ? c->capsnaps * 2 : 64;
		struct snap *v = weft__realloc(c->snaps, cap * sizeof(*v));
		if (!v)
			return err_set(&db->err, WEFT_ENOMEM, "out of memory deriving rows");
		c->snaps = v;
		c->capsnaps = cap;
	}
	crow *copy = NULL;
	/* A row new to this batch goes back to empty: no copy needed. */
	if (r->loaded || r->last_n) {
		if (!(copy = arena_alloc(db, sizeof(crow) + cols)))
			return db->err.code;
		*copy = *r;
		memcpy(copy + 1, r->cols, cols);
	}
	c->snaps[c->nsnaps].r = r;
	c->snaps[c->nsnaps++].copy = copy;
	return WEFT_OK;
}

static void snapshot_restore(weft_db *db)
{
	struct proj_cache *c = db->proj;
	while (c->nsnaps) {
		struct snap *s = &c->snaps[--c->nsnaps];
		size_t cols = (size_t)db->schema->tables[s->r->ti].ncols * sizeof(ccol);
		if (s->copy) {
			*s->r = *s->copy;
			memcpy(s->r->cols, s->copy + 1, cols);
		} else {
			crow *r = s->r;
			memset(&r->tomb, 0, sizeof(r->tomb));
			memset(&r->live, 0, sizeof(r->live));
			memset(r->cols, 0, cols);
			r->nhist = 0;
			r->last_n = 0;
			r->recompute = 0;
		}
	}
}

/* Applies the cells of one operation of the current event to its row. */
static int apply_op(const rowop *o, void *arg)
{
	apply_ctx *x = arg;
	weft_db *db = x->db;
	int ti = op_table(x, o->table);
	if (ti < 0)
		return WEFT_OK; /* not declared: applied when a schema declares it */
	const schema_table *t = &db->schema->tables[ti];
	if (!pk_matches(t, &o->pk))
		return WEFT_OK; /* a key of another type never names a row here */
	crow *r = row_get(db, ti, &o->pk);
	if (!r)
		return db->err.code;
	int rc;
	if (db->rebuilding && r->last_n != x->n && (rc = snapshot(db, r)) < 0)
		return rc;
	if ((rc = hist_add(db, r, x->n)) < 0 || r->recompute)
		return rc;
	cstamp s = {x->hlc, x->n, o->idx};
	switch (o->kind) {
	case ROWOP_DELETE:
		return cell_delete(db, r, &s);
	case ROWOP_INCR:
		return cell_incr(db, r, schema_col_find(t, o->col), &s,
		                 o->value.type == WEFT_INTEGER ? o->value.i : 0);
	default:
		break;
	}
	if (!o->ncells)
		return cell_put(db, r, -1, &s, NULL);
	const unsigned char *p = o->cells, *end = p + o->cells_len;
	char name[ROWS_NAME_MAX + 1];
	weft_value v;
	while (rc == WEFT_OK && !r->recompute && rows_cells_next(&p, end, name, &v) > 0) {
		rc = cell_put(db, r, schema_col_find(t, name), &s, &v);
		s.idx++;
	}
	return rc;
}

static int step_done(weft_db *db, sqlite3_stmt *st, const char *doing)
{
	int rc = step(db, st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, doing);
}

/* Rewrites the history chunk of row r that holds n without it. */
static int hist_chunk_drop(weft_db *db, crow *r, int64_t n)
{
	sqlite3_stmt *st = gstmt(db, GS_HIST_GET);
	if (!st)
		return db->err.code;
	sqlite3_bind_int(st, 1, r->ti);
	bind_value(db, st, 2, &r->pk);
	int s, rc = WEFT_OK, found = 0;
	int64_t chunk = 0;
	nlist l = {0};
	while (!found && (s = step(db, st)) == SQLITE_ROW) {
		l.n = 0;
		chunk = sqlite3_column_int64(st, 0);
		if (hist_chunk_each(sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1), nlist_add, &l)) {
			rc = l.oom ? err_set(&db->err, WEFT_ENOMEM, "out of memory withdrawing a duplicate")
			           : clock_corrupt(db, &db->schema->tables[r->ti]);
			break;
		}
		for (size_t i = 0; i < l.n && !found; i++) {
			if (l.v[i] == n) {
				memmove(&l.v[i], &l.v[i + 1], (l.n - i - 1) * sizeof(int64_t));
				l.n--;
				found = 1;
			}
		}
	}
	sqlite3_reset(st);
	if (rc == WEFT_OK && !found && s != SQLITE_DONE)
		rc = store_sqlite_error(db, s, "withdrawing a duplicate");
	if (rc == WEFT_OK && found) {
		unsigned char *b = weft__malloc(l.n * 10 + 1);
		if (!b) {
			rc = err_set(&db->err, WEFT_ENOMEM, "out of memory withdrawing a duplicate");
		} else if (!(st = gstmt(db, GS_HIST_SET))) {
			rc = db->err.code;
		} else {
			size_t len = (size_t)(put_hist(b, l.v, l.n) - b);
			sqlite3_bind_int(st, 1, r->ti);
			bind_value(db, st, 2, &r->pk);
			sqlite3_bind_int64(st, 3, chunk);
			sqlite3_bind_blob(st, 4, b, (int)len, SQLITE_STATIC);
			rc = step_done(db, st, "withdrawing a duplicate");
		}
		weft__free(b);
	}
	weft__free(l.v);
	return rc;
}

/* Takes event n out of row r's history; the row is re-derived. */
static int hist_drop(weft_db *db, crow *r, int64_t n)
{
	r->recompute = 1;
	for (uint32_t i = 0; i < r->nhist; i++) {
		if (r->hist[i] == n) {
			memmove(&r->hist[i], &r->hist[i + 1], (size_t)(r->nhist - i - 1) * sizeof(int64_t));
			r->nhist--;
			return WEFT_OK;
		}
	}
	return r->chunks ? hist_chunk_drop(db, r, n) : WEFT_OK;
}

typedef struct withdraw_ctx {
	weft_db *db;
	int64_t n;
} withdraw_ctx;

static int withdraw_op(const rowop *o, void *arg)
{
	withdraw_ctx *x = arg;
	weft_db *db = x->db;
	int ti = table_index(db->schema, o->table);
	if (ti < 0 || !pk_matches(&db->schema->tables[ti], &o->pk))
		return WEFT_OK;
	crow *r = row_get(db, ti, &o->pk);
	if (!r)
		return db->err.code;
	return r->recompute ? WEFT_OK : hist_drop(db, r, x->n);
}

typedef struct found_row {
	int ti;
	weft_value pk; /* bytes in the arena */
} found_row;

static int nlist_has(int64_t n, void *arg)
{
	return *(int64_t *)arg == n;
}

/*
 * The rows whose history holds event n, found by reading every clock row:
 * for an event whose payload was erased after it took effect (its payload
 * no longer names its rows). Rare; slow.
 */
static int rows_with_event(weft_db *db, int64_t n, found_row **out, size_t *nout)
{
	*out = NULL;
	*nout = 0;
	size_t cap = 0;
	int rc = WEFT_OK;
	/* Pass ti < ntables: the clock table of table ti; then the chunks. */
	for (int pass = 0; db->schema && pass <= db->schema->ntables && rc == WEFT_OK; pass++) {
		int hist = pass == db->schema->ntables;
		sqlite3_stmt *st = NULL;
		if (hist) {
			st = gstmt(db, GS_HIST_ALL);
		} else {
			char sql[200];
			snprintf(sql, sizeof(sql), "SELECT %d, pk, state FROM " CLOCK, pass, db->schema->tables[pass].lname);
			int s = sqlite3_prepare_v2(db->sql, sql, -1, &st, NULL);
			if (s != SQLITE_OK)
				return store_sqlite_error(db, s, "withdrawing a duplicate");
		}
		if (!st)
			return db->err.code;
		int s;
		while (rc == WEFT_OK && (s = step(db, st)) == SQLITE_ROW) {
			int ti = sqlite3_column_int(st, 0);
			if (ti < 0 || ti >= db->schema->ntables)
				continue;
			const unsigned char *p = sqlite3_column_blob(st, 2);
			size_t len = (size_t)sqlite3_column_bytes(st, 2);
			int hit = 0;
			weft_value pk = column_value(st, 1);
			if (hist) {
				int64_t want = n;
				hit = hist_chunk_each(p, len, nlist_has, &want);
				if (hit < 0)
					rc = clock_corrupt(db, &db->schema->tables[ti]);
			} else {
				/* The decoded state is dropped right after. */
				ablk *mark = db->proj->arena;
				size_t used = mark ? mark->used : 0;
				crow tmp;
				memset(&tmp, 0, sizeof(tmp));
				tmp.ti = ti;
				tmp.cols = arena_alloc(db, (size_t)db->schema->tables[ti].ncols * sizeof(ccol));
				if (!tmp.cols) {
					rc = db->err.code;
					break;
				}
				memset(tmp.cols, 0, (size_t)db->schema->tables[ti].ncols * sizeof(ccol));
				if ((rc = clock_decode(db, &tmp, p ? p : (const unsigned char *)"", len)) < 0)
					break;
				for (uint32_t i = 0; i < tmp.nhist && !hit; i++)
					hit = tmp.hist[i] == n;
				arena_rewind(db->proj, mark, used);
			}
			if (rc == WEFT_OK && hit) {
				if (*nout == cap) {
					size_t nc = cap ? cap * 2 : 16;
					found_row *v = weft__realloc(*out, nc * sizeof(*v));
					if (!v) {
						rc = err_set(&db->err, WEFT_ENOMEM, "out of memory withdrawing a duplicate");
						break;
					}
					*out = v;
					cap = nc;
				}
				(*out)[*nout].ti = ti;
				if ((rc = arena_value(db, &(*out)[*nout].pk, &pk)) == WEFT_OK)
					(*nout)++;
			}
		}
		if (rc == WEFT_OK && s != SQLITE_DONE)
			rc = store_sqlite_error(db, s, "withdrawing a duplicate");
		if (hist)
			sqlite3_reset(st);
		else
			sqlite3_finalize(st);
	}
	return rc;
}

/* Takes back the cells of event n (displaced by an earlier event with its
 * idempotency key): its rows are re-derived from their other events. */
static int withdraw(weft_db *db, int64_t n)
{
	int rc = flush_rows(db);
	if (rc < 0 || !db->schema)
		return rc;
	sqlite3_stmt *st = gstmt(db, GS_EVENT_PAYLOAD);
	if (!st)
		return db->err.code;
	sqlite3_bind_int64(st, 1, n);
	rc = step(db, st);
	if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
		withdraw_ctx x = {db, n};
		const void *p = sqlite3_column_blob(st, 0);
		size_t len = (size_t)sqlite3_column_bytes(st, 0);
		weft_err e;
		rc = rows_decode_ops(p ? p : "", len, withdraw_op, &x, &e);
		sqlite3_reset(st);
		if (rc < 0)
			return rc;
	} else {
		sqlite3_reset(st);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE)
			return store_sqlite_error(db, rc, "withdrawing a duplicate");
		/* The payload is gone (erased since it took effect). */
		found_row *v;
		size_t nv;
		rc = rows_with_event(db, n, &v, &nv);
		for (size_t i = 0; rc == WEFT_OK && i < nv; i++) {
			crow *r = row_get(db, v[i].ti, &v[i].pk);
			rc = !r ? db->err.code : r->recompute ? WEFT_OK : hist_drop(db, r, n);
		}
		weft__free(v);
		if (rc < 0)
			return rc;
	}
	return flush_rows(db);
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
	 * only its content is gone. Without a key, the payload is checked as
	 * it is applied below, and a malformed one taken back. */
	if (ev->idem[0] && ev->payload && rows_decode_ops(ev->payload, ev->payload_len, NULL, NULL, NULL) < 0)
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
	c->cur_partial = db->rebuilding; /* a rebuild's scan does not read the author */
	c->nsnaps = 0;
	if (!db->rebuilding) {
		rows_reset(c); /* left by a failed event */
		int consumers;
		if ((rc = feed_has_consumers(db, &consumers)) < 0 || !cache(db))
			return rc < 0 ? rc : db->err.code;
		db->proj->listening = consumers || db->on_commit;
	}
	if (!ev->idem[0]) {
		effective = 1;
	} else if ((rc = settle_idempotency(db, ev, n, scope_ref, &effective)) < 0) {
		return rc;
	}
	if (effective && ev->payload && db->schema) {
		apply_ctx x;
		memset(&x, 0, sizeof(x));
		x.db = db;
		x.n = n;
		x.hlc = ev->hlc;
		int malformed;
		rc = rows_walk_ops(ev->payload, ev->payload_len, apply_op, &x, &malformed);
		if (malformed) {
			/* No effect: forget what its first operations did. */
			if (db->rebuilding)
				snapshot_restore(db);
			else
				rows_reset(c);
			return WEFT_OK;
		}
		if (rc < 0)
			return rc;
	}
	if (!db->rebuilding || c->nrows >= REBUILD_FLUSH_ROWS || c->arena_bytes >= REBUILD_FLUSH_BYTES)
		if ((rc = flush_rows(db)) < 0)
			return rc;
	return in_transaction(db, "applying an event");
}

/* --------------------------------------------------------- rebuild */

static int temp_tables(weft_db *db)
{
	return store_exec(db,
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

/* One event of a rebuild's scan: only the fields projection reads. */
static int scan_read(weft_db *db, sqlite3_stmt *st, struct weft_event *f, int64_t *n, int64_t *scope)
{
	memset(f, 0, sizeof(*f));
	*n = sqlite3_column_int64(st, 0);
	*scope = sqlite3_column_int64(st, 1);
	if (sqlite3_column_bytes(st, 2) == 32) {
		memcpy(f->id.bytes, sqlite3_column_blob(st, 2), 32);
	} else if (db->proj && db->proj->listening) {
		/* The feed names the event that last changed each row. */
		int rc = store_event_id(db, *n, &f->id);
		if (rc < 0)
			return rc;
	}
	if (sqlite3_column_bytes(st, 3) == 32)
		memcpy(f->author, sqlite3_column_blob(st, 3), 32);
	f->hlc = (uint64_t)sqlite3_column_int64(st, 4);
	snprintf(f->kind, sizeof(f->kind), "%s", ROWS_KIND);
	if (sqlite3_column_type(st, 5) != SQLITE_NULL) {
		const void *idem = sqlite3_column_blob(st, 5);
		int len = sqlite3_column_bytes(st, 5);
		if (!idem || len < 1 || len > WEFT_IDEM_KEY_MAX)
			return err_set(&db->err, WEFT_ECORRUPT, "a stored event has a malformed idempotency key; "
			               "run `weft verify`");
		memcpy(f->idem, idem, (size_t)len);
		f->idem[len] = '\0';
	}
	if (sqlite3_column_type(st, 6) != SQLITE_NULL) {
		f->payload_len = (uint32_t)sqlite3_column_bytes(st, 6);
		f->payload = f->payload_len ? sqlite3_column_blob(st, 6) : (const unsigned char *)"";
	}
	return WEFT_OK;
}

/* An event read by the scan, kept (payload copied) until the next one
 * shows whether its HLC is tied. */
typedef struct scan_ev {
	struct weft_event f;
	int64_t n, scope;
	unsigned char *buf;
	size_t cap;
	int has;
} scan_ev;

static int scan_hold(weft_db *db, sqlite3_stmt *st, scan_ev *h)
{
	int rc = scan_read(db, st, &h->f, &h->n, &h->scope);
	if (rc < 0)
		return rc;
	if (h->f.payload && h->f.payload_len) {
		if (h->f.payload_len > h->cap) {
			size_t cap = h->cap ? h->cap : 256;
			while (cap < h->f.payload_len)
				cap *= 2;
			unsigned char *b = weft__realloc(h->buf, cap);
			if (!b)
				return err_set(&db->err, WEFT_ENOMEM, "out of memory re-deriving tables");
			h->buf = b;
			h->cap = cap;
		}
		memcpy(h->buf, h->f.payload, h->f.payload_len);
		h->f.payload = h->buf;
	}
	h->has = 1;
	return WEFT_OK;
}

static int rebuild_apply(weft_db *db, const struct weft_event *ev, int64_t n, int64_t scope, weft_progress_cb cb,
                         void *payload, uint64_t *done, uint64_t total)
{
	int rc = project_event(db, ev, n, scope);
	if (rc == WEFT_OK && cb && (++*done % 1024 == 0 || *done == total) && cb(*done, total, payload))
		rc = err_set(&db->err, WEFT_EUSER, "rebuild stopped by the progress callback");
	return rc;
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
	if ((rc = store_exec(db, "DELETE FROM weft_clock_hist; DELETE FROM weft_effect;"
	                         "DELETE FROM weft_dup; DELETE FROM weft_conflict;", "clearing derived state")) < 0)
		goto out;
	cache_free(db);
	if (db->schema && ((rc = create_tables(db)) < 0 || (rc = cache_build(db)) < 0))
		goto out;

	sqlite3_stmt *st;
	uint64_t total = 0, done = 0;
	rc = sqlite3_prepare_v2(db->sql, REBUILD_COUNT, -1, &st, NULL);
	if (rc == SQLITE_OK && (rc = step(db, st)) == SQLITE_ROW)
		total = (uint64_t)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW) {
		rc = store_sqlite_error(db, rc, "re-deriving tables");
		goto out;
	}
	/* Events in (HLC, id) order: the first event of each idempotency key
	 * is the one that takes effect, and nothing is withdrawn. Rows are
	 * kept in memory and written in batches. */
	rc = sqlite3_prepare_v2(db->sql, REBUILD_SCAN, -1, &st, NULL);
	if (rc != SQLITE_OK) {
		rc = store_sqlite_error(db, rc, "re-deriving tables");
		goto out;
	}
	if (!cache(db)) {
		sqlite3_finalize(st);
		rc = db->err.code;
		goto out;
	}
	db->rebuilding = 1;
	db->proj->clock_empty = 1;
	/* 16 bits per event (most write one row), 2 probes: a few % false hits. */
	size_t words = (size_t)((total < 65536 ? 65536 : total > (UINT64_C(1) << 22) ? UINT64_C(1) << 22 : total) / 4);
	if ((db->proj->bloom = weft__calloc(words, sizeof(uint64_t))))
		db->proj->bloom_bits = words * 64; /* without it, every row is read */
	int s;
	rc = WEFT_OK;
	scan_ev held = {0};
	sqlite3_stmt *ties = NULL;
	while (rc == WEFT_OK && (s = step(db, st)) == SQLITE_ROW) {
		uint64_t hlc = (uint64_t)sqlite3_column_int64(st, 4);
		if (held.has && held.f.hlc != hlc) {
			rc = rebuild_apply(db, &held.f, held.n, held.scope, cb, payload, &done, total);
			held.has = 0;
		} else if (held.has) {
			/* A tie: every event of this HLC, in id order. */
			held.has = 0;
			if (!ties && sqlite3_prepare_v2(db->sql, REBUILD_TIES, -1, &ties, NULL) != SQLITE_OK) {
				rc = store_sqlite_error(db, sqlite3_errcode(db->sql), "re-deriving tables");
				break;
			}
			sqlite3_reset(ties);
			sqlite3_bind_int64(ties, 1, (int64_t)hlc);
			int t = SQLITE_DONE;
			while (rc == WEFT_OK && (t = step(db, ties)) == SQLITE_ROW) {
				struct weft_event f;
				int64_t n, scope;
				if ((rc = scan_read(db, ties, &f, &n, &scope)) == WEFT_OK)
					rc = rebuild_apply(db, &f, n, scope, cb, payload, &done, total);
			}
			sqlite3_reset(ties);
			if (rc == WEFT_OK && t != SQLITE_DONE)
				rc = store_sqlite_error(db, t, "re-deriving tables");
			/* The scan's other events of this HLC were applied. */
			while (rc == WEFT_OK && (s = step(db, st)) == SQLITE_ROW &&
			       (uint64_t)sqlite3_column_int64(st, 4) == hlc)
				;
			if (rc < 0 || s != SQLITE_ROW)
				break;
		}
		if (rc == WEFT_OK)
			rc = scan_hold(db, st, &held);
	}
	if (rc == WEFT_OK && s == SQLITE_DONE && held.has)
		rc = rebuild_apply(db, &held.f, held.n, held.scope, cb, payload, &done, total);
	weft__free(held.buf);
	sqlite3_finalize(ties);
	sqlite3_finalize(st);
	if (rc == WEFT_OK && s != SQLITE_DONE)
		rc = store_sqlite_error(db, s, "re-deriving tables");
	if (rc == WEFT_OK)
		rc = cache(db) ? flush_rows(db) : db->err.code;
	if (db->proj) {
		db->proj->clock_empty = 0;
		weft__free(db->proj->bloom);
		db->proj->bloom = NULL;
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
		"SELECT weft_id(e.n) AS id, weft_id(w.n), s.name, e.idem FROM weft_dup d JOIN weft_event e ON e.n = d.event "
		"JOIN weft_event w ON w.n = d.winner JOIN weft_scope s ON s.ref = e.scope ORDER BY e.hlc, id",
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
	if (!pk_matches(t, &pk))
		return err_set(&db->err, WEFT_ENOTFOUND, "table %s has no row with that key", t->name);
	struct proj_cache *c = cache(db);
	if (!c)
		return db->err.code;
	rows_reset(c);
	int rc = WEFT_OK;
	stamp *last = weft__calloc((size_t)t->ncols, sizeof(stamp));
	crow *r = last ? row_get(db, ti, &pk) : NULL;
	if (!last || !r) {
		rc = last ? db->err.code : err_set(&db->err, WEFT_ENOMEM, "out of memory");
		goto out;
	}
	if (!r->live.n) {
		rc = err_set(&db->err, WEFT_ENOTFOUND, "table %s has no row with that key", t->name);
		goto out;
	}
	/* The latest contributing write: the newest counted increment, else
	 * the winning put. */
	for (int k = 0; k < t->ncols && rc == WEFT_OK; k++) {
		const ccol *col = &r->cols[k];
		const cstamp *w = col->nincr ? &col->imax : &col->put;
		if (w->n)
			rc = event_stamp(db, w->n, &last[k]);
	}
	if (rc < 0)
		goto out;
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
		const ccol *col = &r->cols[k];
		weft_blame b;
		memset(&b, 0, sizeof(b));
		b.column = t->cols[k].name;
		b.value = found ? column_value(sel, k) : weft_null();
		if (col->nincr || col->put.n) {
			memcpy(b.event.bytes, last[k].id, 32);
			b.author = last[k].author;
			b.hlc = last[k].hlc;
			b.contributions = col->nincr + (col->put.n ? 1 : 0);
		}
		if (cb(&b, payload))
			rc = err_set(&db->err, WEFT_EUSER, "stopped by the blame callback");
	}
	sqlite3_reset(sel);
out:
	if (db->proj)
		rows_reset(db->proj);
	weft__free(last);
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
