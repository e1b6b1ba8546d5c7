/* SQLite plumbing of the store: statements, transactions, event rows. */
#include "core/store.h"

#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "core/alloc.h"
#include "core/buckets.h"
#include "core/hlc.h"
#include "core/project.h"
#include "platform/platform.h"

#define STORE_STR_(x) #x
#define STORE_STR(x) STORE_STR_(x)

static const char *const stmt_sql[STMT__COUNT] = {
	[STMT_AUTHOR_REF] = "SELECT ref FROM weft_author WHERE pk = ?1",
	[STMT_AUTHOR_INSERT] = "INSERT INTO weft_author(pk) VALUES (?1)",
	[STMT_AUTHOR_FLAG_FORK] = "UPDATE weft_author SET forked = 1 WHERE ref = ?1",
	[STMT_SCOPE_REF] = "SELECT ref FROM weft_scope WHERE name = ?1",
	[STMT_SCOPE_INSERT] = "INSERT INTO weft_scope(name) VALUES (?1)",
	[STMT_KIND_REF] = "SELECT ref FROM weft_kind WHERE name = ?1",
	[STMT_KIND_INSERT] = "INSERT INTO weft_kind(name) VALUES (?1)",
	[STMT_EVENT_BY_ID_EXISTS] = "SELECT 1 FROM weft_event e WHERE " STORE_EVENT_ID_IS("?1"),
	/* Through the time index: a new event's stamp is near the end of it. */
	[STMT_EVENT_AT_EXISTS] = "SELECT 1 FROM weft_event WHERE hlc = ?1 AND id = ?2",
	[STMT_EVENT_SAME_SEQ] =
		"SELECT seq, id, prev FROM weft_event WHERE author = ?1 AND seq BETWEEN ?2 - 1 AND ?2 + 1",
	/* A second event at (author, seq - 1): successors stop deriving prev. */
	[STMT_PREV_MATERIALIZE] =
		"UPDATE weft_event SET prev = ?3 WHERE author = ?1 AND seq = ?2 AND prev IS NULL",
	[STMT_EVENT_ID_AT] = "SELECT id FROM weft_event WHERE author = ?1 AND seq = ?2",
	[STMT_EVENT_INSERT] =
		"INSERT INTO weft_event(id, author, seq, prev, hlc, scope, kind, idem, "
		"payload_len, payload_hash, sig, payload) "
		"VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
	[STMT_EVENT_GET] = "SELECT " STORE_EVENT_COLUMNS ", e.n" STORE_EVENT_FROM "WHERE " STORE_EVENT_ID_IS("?1"),
	/* The rows after (hlc ?1, n ?2) in the time index, which holds (hlc, n). */
	[STMT_EVENT_AFTER] =
		"SELECT " STORE_EVENT_COLUMNS ", e.n" STORE_EVENT_FROM
		"WHERE e.hlc >= ?1 AND (e.hlc > ?1 OR e.n > ?2) ORDER BY e.hlc, e.n LIMIT " STORE_STR(STORE_READ_AHEAD),
	[STMT_IDEM_LOOKUP] =
		"SELECT e.id FROM weft_event e JOIN weft_scope s ON s.ref = e.scope "
		"WHERE s.name = ?1 AND e.idem = ?2 ORDER BY e.hlc, e.id LIMIT 1",
	[STMT_OWN_HEAD] =
		"SELECT e.seq, e.id, a.forked FROM weft_event e JOIN weft_author a ON a.ref = e.author "
		"WHERE e.author = ?1 ORDER BY e.seq DESC, e.id LIMIT 1",
	[STMT_DATA_VERSION] = "PRAGMA data_version",
	[STMT_META_GET] = "SELECT value FROM weft_meta WHERE key = ?1",
	[STMT_META_SET] = "INSERT OR REPLACE INTO weft_meta(key, value) VALUES (?1, ?2)",
	[STMT_HLC_MAX] = "SELECT coalesce(max(hlc), 0) FROM weft_event",
	[STMT_EFFECT_GET] =
		"SELECT f.event, e.hlc, e.id FROM weft_effect f JOIN weft_event e ON e.n = f.event "
		"WHERE f.scope = ?1 AND f.idem = ?2",
	[STMT_EFFECT_SET] = "INSERT OR REPLACE INTO weft_effect(scope, idem, event) VALUES (?1, ?2, ?3)",
	[STMT_DUP_INSERT] = "INSERT OR REPLACE INTO weft_dup(event, winner) VALUES (?1, ?2)",
	[STMT_DUP_MOVE] = "UPDATE weft_dup SET winner = ?2 WHERE winner = ?1",
	[STMT_TOUCHED_GET] = "SELECT 1 FROM temp.weft_touched WHERE tbl = ?1 AND pk = ?2",
	[STMT_TOUCHED_ADD] =
		"INSERT INTO temp.weft_touched(tbl, pk, existed, old, event) VALUES (?1, ?2, ?3, ?4, ?5)",
	[STMT_TOUCHED_EVENT] = "UPDATE temp.weft_touched SET event = ?3 WHERE tbl = ?1 AND pk = ?2",
	[STMT_BUCKET_ADD] =
		"INSERT INTO weft_neg_bucket(scope, cell, count, sum) VALUES (?1, ?2, ?4, ?3) "
		"ON CONFLICT(scope, cell) DO UPDATE SET count = count + excluded.count, sum = weft_u256_add(sum, excluded.sum)",
	[STMT_BUCKET_MARK] = "SELECT value FROM weft_meta WHERE key = 'neg_watermark'",
	/* Prepared once: sqlite3_exec would parse them on every commit. */
	[STMT_BEGIN] = "BEGIN IMMEDIATE",
	[STMT_COMMIT] = "COMMIT",
};

int store_sqlite_error(weft_db *db, int rc, const char *doing)
{
	const char *msg = db->sql ? sqlite3_errmsg(db->sql) : sqlite3_errstr(rc);
	int code;
	const char *hint = "";
	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		code = WEFT_EBUSY;
		hint = "; another process holds the store's write lock, try again";
		break;
	case SQLITE_NOMEM:
		code = WEFT_ENOMEM;
		break;
	case SQLITE_FULL:
		code = WEFT_EIO;
		hint = "; the disk is full, free some space";
		break;
	case SQLITE_IOERR:
	case SQLITE_CANTOPEN:
	case SQLITE_PROTOCOL:
		code = WEFT_EIO;
		break;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		code = WEFT_ECORRUPT;
		hint = "; the database file is damaged";
		break;
	case SQLITE_READONLY:
	case SQLITE_PERM:
	case SQLITE_AUTH:
		code = WEFT_EPERM;
		break;
	default:
		code = WEFT_ERROR;
	}
	return err_set(&db->err, code, "%s failed in %s: %s%s", doing,
	               db->path ? db->path : "store", msg, hint);
}

sqlite3_stmt *store_stmt(weft_db *db, enum store_stmt which)
{
	sqlite3_stmt *st = db->stmts[which];
	if (!st) {
		int rc = sqlite3_prepare_v3(db->sql, stmt_sql[which], -1,
		                            SQLITE_PREPARE_PERSISTENT, &db->stmts[which], NULL);
		if (rc != SQLITE_OK) {
			store_sqlite_error(db, rc, "preparing a statement");
			return NULL;
		}
		st = db->stmts[which];
	} else {
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
	}
	return st;
}

int store_exec(weft_db *db, const char *sql, const char *doing)
{
	int rc = sqlite3_exec(db->sql, sql, NULL, NULL, NULL);
	return rc == SQLITE_OK ? WEFT_OK : store_sqlite_error(db, rc, doing);
}

static int step_once(weft_db *db, enum store_stmt which, const char *doing)
{
	sqlite3_stmt *st = store_stmt(db, which);
	if (!st)
		return db->err.code;
	int rc = sqlite3_step(st);
	rc = rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, doing);
	sqlite3_reset(st);
	return rc;
}

int store_begin(weft_db *db)
{
	db->mark_valid = 0;
	db->nbpend = 0;
	return step_once(db, STMT_BEGIN, "starting a write transaction");
}

int store_commit(weft_db *db)
{
	db->mark_valid = 0;
	int rc = step_once(db, STMT_COMMIT, "committing");
	if (rc < 0)
		store_rollback(db);
	return rc;
}

void store_rollback(weft_db *db)
{
	db->txn_changes = 0;
	db->own_valid = 0;
	db->hlc_valid = 0;
	db->mark_valid = 0;
	db->nbpend = 0;
	memset(db->refs, 0, sizeof(db->refs));
	memset(db->read_ids, 0, sizeof(db->read_ids));
	if (!sqlite3_get_autocommit(db->sql))
		sqlite3_exec(db->sql, "ROLLBACK", NULL, NULL, NULL);
}

int store_read_begin(weft_db *db, int *began)
{
	*began = 0;
	if (!sqlite3_get_autocommit(db->sql))
		return WEFT_OK;
	int rc = store_exec(db, "BEGIN", "starting a read transaction");
	if (rc == WEFT_OK)
		*began = 1;
	return rc;
}

void store_read_end(weft_db *db, int began)
{
	if (began && !sqlite3_get_autocommit(db->sql) && sqlite3_exec(db->sql, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		sqlite3_exec(db->sql, "ROLLBACK", NULL, NULL, NULL);
}

uint64_t store_wall_ms(weft_db *db)
{
	return db->clock ? db->clock(db->clock_payload) : plat_wall_ms();
}

int store_hlc_get(weft_db *db, uint64_t *hlc)
{
	/* Every stamp the clock issued or accepted belongs to a stored event,
	 * so the clock is the newest stored stamp (the last entry of the time
	 * index): nothing to write per commit, and it survives any crash that
	 * the events survive. */
	sqlite3_stmt *st = store_stmt(db, STMT_HLC_MAX);
	if (!st)
		return db->err.code;
	int rc = sqlite3_step(st);
	*hlc = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
	sqlite3_reset(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, "reading the clock");
}

/* The integer reference of a key or name, created on first use; recent
 * ones are remembered (store_rollback forgets them: refs created by a
 * rolled-back transaction may be handed out again). */
static int intern(weft_db *db, int64_t *ref, int which, const void *val, int is_blob)
{
	static const enum store_stmt get[3] = {STMT_AUTHOR_REF, STMT_SCOPE_REF, STMT_KIND_REF};
	static const enum store_stmt put[3] = {STMT_AUTHOR_INSERT, STMT_SCOPE_INSERT, STMT_KIND_INSERT};
	store_ref_cache *c = db->refs[which];
	size_t len = is_blob ? 32 : strlen(val);
	for (int i = 0; i < STORE_REF_CACHE; i++) {
		if (c[i].ref && c[i].len == len && len <= sizeof(c->key) && memcmp(c[i].key, val, len) == 0) {
			*ref = c[i].ref;
			return WEFT_OK;
		}
	}
	*ref = 0;
	for (int attempt = 0; attempt < 2 && !*ref; attempt++) {
		sqlite3_stmt *st = store_stmt(db, attempt ? put[which] : get[which]);
		if (!st)
			return db->err.code;
		if (is_blob)
			sqlite3_bind_blob(st, 1, val, (int)len, SQLITE_STATIC);
		else
			sqlite3_bind_text(st, 1, val, (int)len, SQLITE_STATIC);
		int rc = sqlite3_step(st);
		if (!attempt && rc == SQLITE_ROW)
			*ref = sqlite3_column_int64(st, 0);
		sqlite3_reset(st);
		if (attempt && rc == SQLITE_DONE)
			*ref = sqlite3_last_insert_rowid(db->sql);
		else if (rc != SQLITE_DONE && rc != SQLITE_ROW)
			return store_sqlite_error(db, rc, "recording an author, scope or kind");
	}
	if (*ref <= 0)
		return err_set(&db->err, WEFT_ECORRUPT, "an author, scope or kind has an invalid reference in the store; "
		               "run `weft verify`");
	if (len > sizeof(c->key))
		return WEFT_OK;
	store_ref_cache *slot = &c[db->refs_next[which]++ % STORE_REF_CACHE];
	slot->ref = *ref;
	slot->len = len;
	memcpy(slot->key, val, len);
	return WEFT_OK;
}

/* Whether ev is stored already (by its stamp and id). */
static int event_at_exists(weft_db *db, const struct weft_event *ev, int *exists)
{
	sqlite3_stmt *st = store_stmt(db, STMT_EVENT_AT_EXISTS);
	if (!st)
		return db->err.code;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)ev->hlc);
	sqlite3_bind_blob(st, 2, ev->id.bytes, 32, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	*exists = rc == SQLITE_ROW;
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, "looking up an event");
}

/*
 * A fork: another event at this author's sequence number, or a chain link
 * that disagrees with a stored neighbour. Both events are validly signed,
 * so the author signed two histories: keep both as evidence and flag the
 * author. Sets *prev_derivable when ev's prev is the id of the only stored
 * event at seq - 1 (so the row need not keep it).
 */
static int chain_check(weft_db *db, const struct weft_event *ev, int64_t author, weft_ingest_status *status,
                       int *prev_derivable)
{
	sqlite3_stmt *st = store_stmt(db, STMT_EVENT_SAME_SEQ);
	if (!st)
		return db->err.code;
	int rc;
	sqlite3_bind_int64(st, 1, author);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)ev->seq);
	int same = 0, before = 0, before_links = 0, after = 0, after_links = 0;
	weft_id same_id;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		uint64_t seq = (uint64_t)sqlite3_column_int64(st, 0);
		const void *id = sqlite3_column_blob(st, 1), *prev = sqlite3_column_blob(st, 2);
		int id_ok = sqlite3_column_bytes(st, 1) == 32, prev_ok = sqlite3_column_bytes(st, 2) == 32;
		if (seq == ev->seq) {
			if (!same && id_ok)
				memcpy(same_id.bytes, id, 32);
			same = id_ok ? same + 1 : same;
		} else if (seq + 1 == ev->seq) {
			before++;
			before_links |= id_ok && memcmp(id, ev->prev.bytes, 32) == 0;
		} else if (seq == ev->seq + 1) {
			after = 1;
			/* A NULL prev is the id of the only event at ev->seq, and
			 * there is none yet: ev cannot be it. */
			after_links |= prev_ok && memcmp(prev, ev->id.bytes, 32) == 0;
		}
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return store_sqlite_error(db, rc, "checking an author's chain");
	if (same || (before && !before_links) || (after && !after_links)) {
		*status = WEFT_INGEST_FORK;
		if (!(st = store_stmt(db, STMT_AUTHOR_FLAG_FORK)))
			return db->err.code;
		sqlite3_bind_int64(st, 1, author);
		rc = sqlite3_step(st);
		sqlite3_reset(st);
		if (rc != SQLITE_DONE)
			return store_sqlite_error(db, rc, "flagging a forked author");
	}
	if (same == 1) {
		/* ev is the second event at its seq: successors of the first
		 * stop deriving their prev from (author, seq). */
		if (!(st = store_stmt(db, STMT_PREV_MATERIALIZE)))
			return db->err.code;
		sqlite3_bind_int64(st, 1, author);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)ev->seq + 1);
		sqlite3_bind_blob(st, 3, same_id.bytes, 32, SQLITE_STATIC);
		rc = sqlite3_step(st);
		sqlite3_reset(st);
		if (rc != SQLITE_DONE)
			return store_sqlite_error(db, rc, "recording a forked chain");
	}
	*prev_derivable = before == 1 && before_links;
	return WEFT_OK;
}

int store_insert_event(weft_db *db, const struct weft_event *ev, int own_next,
                       weft_ingest_status *status)
{
	int rc, exists = 0, prev_derivable = 1;
	if (!own_next && (rc = event_at_exists(db, ev, &exists)) < 0)
		return rc;
	if (exists) {
		*status = WEFT_INGEST_DUPLICATE;
		return WEFT_OK;
	}
	int64_t author, scope, kind;
	if ((rc = intern(db, &author, 0, ev->author, 1)) < 0 || (rc = intern(db, &scope, 1, ev->scope, 0)) < 0 ||
	    (rc = intern(db, &kind, 2, ev->kind, 0)) < 0)
		return rc;
	*status = WEFT_INGEST_NEW;
	if (!own_next) {
		if (memcmp(ev->author, db->id.pk, 32) == 0)
			db->own_valid = 0; /* own events may come back from a peer */
		if ((rc = chain_check(db, ev, author, status, &prev_derivable)) < 0)
			return rc;
	}

	sqlite3_stmt *st = store_stmt(db, STMT_EVENT_INSERT);
	if (!st)
		return db->err.code;
	sqlite3_bind_blob(st, 1, ev->id.bytes, 32, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, author);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)ev->seq);
	if (ev->seq > 1 && !prev_derivable)
		sqlite3_bind_blob(st, 4, ev->prev.bytes, 32, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)ev->hlc);
	sqlite3_bind_int64(st, 6, scope);
	sqlite3_bind_int64(st, 7, kind);
	if (ev->idem[0])
		sqlite3_bind_text(st, 8, ev->idem, -1, SQLITE_STATIC);
	if (!ev->payload) {
		/* Erased: what the header needs can no longer be re-derived. */
		sqlite3_bind_int64(st, 9, ev->payload_len);
		sqlite3_bind_blob(st, 10, ev->payload_hash, 32, SQLITE_STATIC);
	}
	sqlite3_bind_blob(st, 11, ev->sig, 64, SQLITE_STATIC);
	if (ev->payload && ev->payload_len)
		sqlite3_bind_blob(st, 12, ev->payload, (int)ev->payload_len, SQLITE_STATIC);
	else if (ev->payload)
		sqlite3_bind_zeroblob(st, 12, 0);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	if (rc != SQLITE_DONE)
		return store_sqlite_error(db, rc, "storing an event");
	int64_t n = sqlite3_last_insert_rowid(db->sql);
	if (ev->hlc > db->hlc_last)
		db->hlc_last = ev->hlc;
	/* A new event is stored: (scope, ev->hlc, ev->id) joins the log. */
	if ((rc = buckets_add(db, scope, ev->hlc, ev->id.bytes)) < 0)
		return rc;
	return project_event(db, ev, n, scope);
}

int store_commit_events(weft_db *db)
{
	int rc = project_finish(db);
	if (rc == 0)
		rc = buckets_flush(db);
	if (rc < 0) {
		store_rollback(db);
		db->txn_changes = 0;
		return rc;
	}
	uint64_t changes = db->txn_changes;
	db->txn_changes = 0;
	if ((rc = store_commit(db)) < 0)
		return rc;
	if (changes && db->on_commit)
		db->on_commit(changes, db->on_commit_payload);
	return WEFT_OK;
}

static int blob_col(sqlite3_stmt *st, int col, void *dst, int len)
{
	if (sqlite3_column_bytes(st, col) != len)
		return -1;
	const void *p = sqlite3_column_blob(st, col);
	if (!p)
		return -1;
	memcpy(dst, p, (size_t)len);
	return 0;
}

static int text_col(sqlite3_stmt *st, int col, char *dst, size_t max, int allow_null)
{
	const unsigned char *t = sqlite3_column_text(st, col);
	if (!t) {
		dst[0] = '\0';
		return allow_null ? 0 : -1;
	}
	size_t n = (size_t)sqlite3_column_bytes(st, col);
	if (n > max)
		return -1;
	memcpy(dst, t, n + 1);
	return 0;
}

static unsigned read_slot(int64_t author, uint64_t seq)
{
	return (unsigned)(((uint64_t)author * 0x9e3779b97f4a7c15u + seq) % 64);
}

/* A NULL prev is the id of the author's only stored event at seq - 1. */
static int derived_prev(weft_db *db, int64_t author, uint64_t seq, weft_id *out)
{
	unsigned slot = read_slot(author, seq - 1);
	if (db->read_ids[slot].author == author && db->read_ids[slot].seq == seq - 1) {
		*out = db->read_ids[slot].id;
		return 0;
	}
	sqlite3_stmt *st = store_stmt(db, STMT_EVENT_ID_AT);
	if (!st)
		return db->err.code;
	sqlite3_bind_int64(st, 1, author);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)seq - 1);
	/* Two would mean an altered store: a wrong one fails the header check. */
	int rc = sqlite3_step(st);
	int bad = rc != SQLITE_ROW || blob_col(st, 0, out->bytes, 32) < 0;
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return store_sqlite_error(db, rc, "reading a chain link");
	return bad; /* 1: malformed */
}

int store_row_event(struct weft_event **out, weft_db *db, sqlite3_stmt *st)
{
	struct weft_event f;
	memset(&f, 0, sizeof(f));
	*out = NULL;
	f.version = EVENT_FORMAT_VERSION;
	int bad = blob_col(st, 0, f.id.bytes, 32) || blob_col(st, 1, f.author, 32);
	f.seq = (uint64_t)sqlite3_column_int64(st, 2);
	int64_t author = sqlite3_column_int64(st, 12);
	if (f.seq > 1 && sqlite3_column_type(st, 3) != SQLITE_NULL) {
		bad |= blob_col(st, 3, f.prev.bytes, 32);
	} else if (f.seq > 1 && !bad) {
		int rc = derived_prev(db, author, f.seq, &f.prev);
		if (rc < 0)
			return rc;
		bad |= rc;
	}
	f.hlc = (uint64_t)sqlite3_column_int64(st, 4);
	bad |= text_col(st, 5, f.scope, WEFT_SCOPE_MAX, 0);
	bad |= text_col(st, 6, f.kind, WEFT_KIND_MAX, 0);
	bad |= text_col(st, 7, f.idem, WEFT_IDEM_KEY_MAX, 1);
	bad |= blob_col(st, 10, f.sig, 64);
	const void *payload = NULL;
	if (sqlite3_column_type(st, 11) != SQLITE_NULL) {
		/* Present: its length and hash are re-derived. */
		payload = sqlite3_column_blob(st, 11);
		if (!payload)
			payload = "";
		int plen = sqlite3_column_bytes(st, 11);
		bad |= plen < 0 || (unsigned)plen > WEFT_PAYLOAD_HARD_MAX;
		f.payload_len = (uint32_t)plen;
		crypto_generichash(f.payload_hash, 32, payload, f.payload_len, NULL, 0);
	} else {
		sqlite3_int64 plen = sqlite3_column_int64(st, 8);
		bad |= sqlite3_column_type(st, 8) != SQLITE_INTEGER || plen < 0 || plen > WEFT_PAYLOAD_HARD_MAX;
		f.payload_len = (uint32_t)plen;
		bad |= blob_col(st, 9, f.payload_hash, 32);
	}
	if (bad) {
		char h[16];
		return err_set(&db->err, WEFT_ECORRUPT, "stored event %s has a malformed column: the store was altered; "
		               "run `weft verify` and restore from a peer", err_short_hex(h, f.id.bytes));
	}
	int rc = codec_event_assemble(out, &f, payload, &db->err);
	if (rc == WEFT_OK) {
		/* Checked against its header: the next event's prev, if derived. */
		unsigned slot = read_slot(author, f.seq);
		db->read_ids[slot].author = author;
		db->read_ids[slot].seq = f.seq;
		db->read_ids[slot].id = f.id;
	}
	return rc;
}

/* Column 13 of STMT_EVENT_GET and STMT_EVENT_AFTER: the row's n. */
#define EVENT_COL_N 13

static int read_row(struct weft_event **out, weft_db *db, sqlite3_stmt *st, store_read_hint *hint)
{
	int rc = store_row_event(out, db, st);
	if (rc == WEFT_OK && hint) {
		hint->valid = 1;
		hint->hlc = sqlite3_column_int64(st, 4);
		hint->n = sqlite3_column_int64(st, EVENT_COL_N);
	}
	return rc;
}

/* 1 and the event if it is one of the rows after the hint, 0 if not. */
static int read_after(struct weft_event **out, weft_db *db, const unsigned char id[32], store_read_hint *hint)
{
	sqlite3_stmt *st = store_stmt(db, STMT_EVENT_AFTER);
	if (!st)
		return db->err.code;
	sqlite3_bind_int64(st, 1, hint->hlc);
	sqlite3_bind_int64(st, 2, hint->n);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const void *rid = sqlite3_column_blob(st, 0);
		if (rid && sqlite3_column_bytes(st, 0) == 32 && memcmp(rid, id, 32) == 0)
			break;
	}
	if (rc == SQLITE_ROW) {
		if ((rc = read_row(out, db, st, hint)) == WEFT_OK)
			rc = 1;
	} else if (rc == SQLITE_DONE) {
		rc = 0;
	} else {
		rc = store_sqlite_error(db, rc, "reading an event");
	}
	sqlite3_reset(st);
	return rc;
}

int store_get_event(struct weft_event **out, weft_db *db, const unsigned char id[32], store_read_hint *hint)
{
	*out = NULL;
	int rc = 0;
	if (hint && hint->valid && hint->skip) {
		hint->skip--;
	} else if (hint && hint->valid) {
		rc = read_after(out, db, id, hint);
		if (rc) {
			hint->misses = 0;
		} else if (++hint->misses >= 2) {
			hint->misses = 2; /* until a hit, each miss skips again */
			hint->skip = STORE_READ_SKIP;
		}
	}
	if (rc != 0) {
		if (rc < 0 && *out) {
			codec_event_free(*out);
			*out = NULL;
		}
		return rc < 0 ? rc : WEFT_OK;
	}
	sqlite3_stmt *st = store_stmt(db, STMT_EVENT_GET);
	if (!st)
		return db->err.code;
	sqlite3_bind_blob(st, 1, id, 32, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		rc = read_row(out, db, st, hint);
	} else if (rc == SQLITE_DONE) {
		char h[65];
		weft_id wid;
		memcpy(wid.bytes, id, 32);
		rc = err_set(&db->err, WEFT_ENOTFOUND, "event %s is not in this store", weft_id_to_hex(h, &wid));
	} else {
		rc = store_sqlite_error(db, rc, "reading an event");
	}
	sqlite3_reset(st);
	if (rc < 0 && *out) {
		codec_event_free(*out);
		*out = NULL;
	}
	return rc;
}

typedef struct scan_item {
	uint64_t hlc;
	unsigned char id[32];
} scan_item;

static int scan_item_cmp(const void *a, const void *b)
{
	return memcmp(((const scan_item *)a)->id, ((const scan_item *)b)->id, 32);
}

/* Items with equal stamps, gathered to be handed out in id order. */
typedef struct scan_ties {
	scan_item *v;
	size_t n, cap;
	scan_item small[16];
} scan_ties;

static int ties_flush(scan_ties *t, store_item_cb cb, void *payload)
{
	if (t->n > 1)
		qsort(t->v, t->n, sizeof(*t->v), scan_item_cmp);
	int out = 0;
	for (size_t i = 0; i < t->n && !out; i++)
		out = cb(payload, t->v[i].hlc, t->v[i].id);
	t->n = 0;
	return out;
}

static int ties_push(scan_ties *t, uint64_t hlc, const void *id)
{
	if (t->n == t->cap) {
		size_t cap = t->cap * 2;
		scan_item *v = t->v == t->small ? weft__malloc(cap * sizeof(*v)) : weft__realloc(t->v, cap * sizeof(*v));
		if (!v)
			return -1;
		if (t->v == t->small)
			memcpy(v, t->small, sizeof(t->small));
		t->v = v;
		t->cap = cap;
	}
	t->v[t->n].hlc = hlc;
	memcpy(t->v[t->n].id, id, 32);
	t->n++;
	return 0;
}

int store_scan_items(weft_db *db, const char *const *scopes, size_t n, uint64_t hlc_lo, uint64_t hlc_hi,
                     store_item_cb cb, void *payload)
{
	sqlite3_stmt *st;
	/* Scopes as a JSON array keep one statement for any number of them.
	 * The time index orders by hlc alone: ties are ordered here. */
	const char *sql = scopes
		? "SELECT e.hlc, e.id FROM weft_event e WHERE e.hlc >= ?2 AND e.hlc <= ?3 AND e.scope IN "
		  "(SELECT ref FROM weft_scope WHERE name IN (SELECT value FROM json_each(?1))) ORDER BY e.hlc"
		: "SELECT hlc, id FROM weft_event WHERE hlc >= ?2 AND hlc <= ?3 ORDER BY hlc";
	int rc = sqlite3_prepare_v2(db->sql, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return store_sqlite_error(db, rc, "listing events to reconcile");
	char *json = NULL;
	if (scopes) {
		size_t len = 3;
		for (size_t i = 0; i < n; i++)
			len += strlen(scopes[i]) + 3;
		json = weft__malloc(len);
		if (!json) {
			sqlite3_finalize(st);
			return err_set(&db->err, WEFT_ENOMEM, "out of memory listing events");
		}
		char *p = json;
		*p++ = '[';
		for (size_t i = 0; i < n; i++) {
			/* Scope names are [A-Za-z0-9._:/-]: nothing to escape. */
			p += sprintf(p, "%s\"%s\"", i ? "," : "", scopes[i]);
		}
		*p++ = ']';
		*p = '\0';
		sqlite3_bind_text(st, 1, json, -1, SQLITE_STATIC);
	}
	/* Stamps keep their top bit clear, so both bounds fit an int64. */
	sqlite3_bind_int64(st, 2, (sqlite3_int64)(hlc_lo > INT64_MAX ? INT64_MAX : hlc_lo));
	sqlite3_bind_int64(st, 3, (sqlite3_int64)(hlc_hi > INT64_MAX ? INT64_MAX : hlc_hi));
	scan_ties t;
	t.v = t.small;
	t.n = 0;
	t.cap = sizeof(t.small) / sizeof(t.small[0]);
	int out = WEFT_OK;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		uint64_t hlc = (uint64_t)sqlite3_column_int64(st, 0);
		const void *id = sqlite3_column_blob(st, 1);
		if (sqlite3_column_bytes(st, 1) != 32 || !id) {
			out = err_set(&db->err, WEFT_ECORRUPT, "a stored event id is malformed; run `weft verify`");
			break;
		}
		if (t.n && t.v[0].hlc != hlc && (out = ties_flush(&t, cb, payload)) != 0)
			break;
		if (ties_push(&t, hlc, id) < 0) {
			out = err_set(&db->err, WEFT_ENOMEM, "out of memory listing events");
			break;
		}
	}
	if (out == WEFT_OK && rc != SQLITE_DONE)
		out = store_sqlite_error(db, rc, "listing events to reconcile");
	if (out == WEFT_OK)
		out = ties_flush(&t, cb, payload);
	if (t.v != t.small)
		weft__free(t.v);
	sqlite3_finalize(st);
	weft__free(json);
	return out;
}

int store_has_event(weft_db *db, const unsigned char id[32])
{
	sqlite3_stmt *st = store_stmt(db, STMT_EVENT_BY_ID_EXISTS);
	if (!st)
		return db->err.code;
	sqlite3_bind_blob(st, 1, id, 32, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc == SQLITE_ROW)
		return 1;
	return rc == SQLITE_DONE ? 0 : store_sqlite_error(db, rc, "looking up an event");
}

int store_list_scopes(weft_db *db, char ***out, size_t *n, size_t max)
{
	*out = NULL;
	*n = 0;
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db->sql, "SELECT name FROM weft_scope ORDER BY name", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return store_sqlite_error(db, rc, "listing scopes");
	char **v = weft__calloc(max ? max : 1, sizeof(char *));
	if (!v) {
		sqlite3_finalize(st);
		return err_set(&db->err, WEFT_ENOMEM, "out of memory");
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW && *n < max) {
		if (!(v[*n] = weft__strdup((const char *)sqlite3_column_text(st, 0)))) {
			rc = SQLITE_NOMEM;
			break;
		}
		(*n)++;
	}
	sqlite3_finalize(st);
	*out = v;
	if (rc == SQLITE_NOMEM)
		return err_set(&db->err, WEFT_ENOMEM, "out of memory");
	if (rc == SQLITE_ROW)
		return err_set(&db->err, WEFT_ELIMIT, "the store holds more than %zu scopes: name the scopes to sync", max);
	return rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, "listing scopes");
}
