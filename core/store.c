/* SQLite plumbing of the store: statements, transactions, event rows. */
#include "core/store.h"

#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "core/alloc.h"
#include "core/buckets.h"
#include "core/hlc.h"
#include "core/project.h"
#include "core/signer.h"
#include "platform/platform.h"

static const char *const stmt_sql[STMT__COUNT] = {
	[STMT_AUTHOR_REF] = "SELECT ref FROM weft_author WHERE pk = ?1",
	[STMT_AUTHOR_INSERT] = "INSERT INTO weft_author(pk) VALUES (?1)",
	[STMT_AUTHOR_FLAG_FORK] = "UPDATE weft_author SET forked = 1 WHERE ref = ?1",
	[STMT_SCOPE_REF] = "SELECT ref FROM weft_scope WHERE name = ?1",
	[STMT_SCOPE_INSERT] = "INSERT INTO weft_scope(name) VALUES (?1)",
	[STMT_KIND_REF] = "SELECT ref FROM weft_kind WHERE name = ?1",
	[STMT_KIND_INSERT] = "INSERT INTO weft_kind(name) VALUES (?1)",
	[STMT_AUTHOR_FORKED] = "SELECT forked FROM weft_author WHERE ref = ?1",
	/* Candidates by the id's first 6 bytes; the whole id is derived. */
	[STMT_EVENT_BY_IDP] = "SELECT n, author, seq FROM weft_event WHERE idp = ?1",
	/* Through the time index (+idp: not the id index): a new event's stamp
	 * is near the end of it, its id anywhere in the other. */
	[STMT_EVENT_AT_IDP] = "SELECT n, author, seq FROM weft_event WHERE hlc = ?2 AND +idp = ?1",
	[STMT_EVENT_ROW] = "SELECT " STORE_EVENT_COLUMNS STORE_EVENT_FROM "WHERE e.n = ?1",
	/* A signature over the seal it replaces (core/signer.c). */
	[STMT_SIG_SET] = "UPDATE weft_event SET sig = ?2 WHERE n = ?1 AND sig = ?3",
	/* Own events stored sealed (weft_event_sealed). */
	[STMT_SEALED] = "SELECT " STORE_EVENT_COLUMNS STORE_EVENT_FROM "WHERE typeof(e.sig) = 'text'",
	[STMT_NEXT_N] = "SELECT coalesce(max(n), 0) + 1 FROM weft_event",
	[STMT_RUNS] = "SELECT lo, hi, hi_n FROM weft_chain WHERE author = ?1 AND lo <= ?2 ORDER BY lo DESC LIMIT 2",
	[STMT_RUN_SET] = "INSERT OR REPLACE INTO weft_chain(author, lo, hi, hi_n) VALUES (?1, ?2, ?3, ?4)",
	[STMT_RUN_DEL] = "DELETE FROM weft_chain WHERE author = ?1 AND lo = ?2",
	[STMT_RUN_EXTEND] = "UPDATE weft_chain SET hi = ?3, hi_n = ?4 WHERE author = ?1 AND lo = ?2",
	[STMT_WAITING] = "SELECT prev FROM weft_event WHERE author = ?1 AND seq = ?2 AND typeof(prev) = 'blob'",
	[STMT_FORK_NEAR] = "SELECT f.seq, e.prev FROM weft_fork f JOIN weft_event e ON e.n = f.n "
	                   "WHERE f.author = ?1 AND f.seq BETWEEN ?2 - 1 AND ?2 + 1",
	[STMT_FORK_ADD] = "INSERT OR IGNORE INTO weft_fork(author, seq, n) VALUES (?1, ?2, ?3)",
	/* Once per forked author: a scan of the log. */
	[STMT_FORK_FILL] = "INSERT OR IGNORE INTO weft_fork(author, seq, n) SELECT author, seq, n FROM weft_event "
	                   "WHERE author = ?1",
	[STMT_FORK_AT] = "SELECT n FROM weft_fork WHERE author = ?1 AND seq = ?2",
	[STMT_EVENT_INSERT] =
		"INSERT INTO weft_event(n, idp, author, seq, prev, hlc, scope, kind, idem, erased, sig, payload) "
		"VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
	[STMT_EVENT_GET] = "SELECT " STORE_EVENT_COLUMNS STORE_EVENT_FROM "WHERE e.idp = ?1",
	/* The rows after (hlc ?1, n ?2) in the time index, which holds (hlc, n). */
	[STMT_EVENT_AFTER] =
		"SELECT " STORE_EVENT_COLUMNS STORE_EVENT_FROM
		"WHERE e.hlc >= ?1 AND (e.hlc > ?1 OR e.n > ?2) ORDER BY e.hlc, e.n LIMIT " STORE_STR(STORE_READ_AHEAD),
	[STMT_IDEM_LOOKUP] =
		"SELECT weft_id(e.n) AS id FROM weft_event e JOIN weft_scope s ON s.ref = e.scope "
		"WHERE s.name = ?1 AND e.idem = ?2 ORDER BY e.hlc, id LIMIT 1",
	/* The last run of the author's chain: its head. */
	[STMT_OWN_HEAD] =
		"SELECT " STORE_RUN_HI("c") ", " STORE_RUN_HI_N("c") ", a.forked, c.lo, c.open_n IS NOT NULL "
		"FROM weft_chain c JOIN weft_author a ON a.ref = c.author WHERE c.author = ?1 ORDER BY c.lo DESC LIMIT 1",
	[STMT_OWN_SETTLE] =
		"UPDATE weft_chain SET hi = " STORE_RUN_HI("weft_chain") ", hi_n = " STORE_RUN_HI_N("weft_chain") ", "
		"open_n = NULL WHERE author = (SELECT ref FROM weft_author WHERE pk = ?1) AND open_n IS NOT NULL",
	[STMT_OWN_RUN_OPEN] =
		"INSERT INTO weft_chain(author, lo, hi, hi_n, open_n) VALUES (?1, ?2, ?3, ?4, ?4) "
		"ON CONFLICT(author, lo) DO UPDATE SET hi = ?3, hi_n = ?4, open_n = ?4",
	[STMT_DATA_VERSION] = "PRAGMA data_version",
	[STMT_META_GET] = "SELECT value FROM weft_meta WHERE key = ?1",
	[STMT_META_SET] = "INSERT OR REPLACE INTO weft_meta(key, value) VALUES (?1, ?2)",
	[STMT_HLC_MAX] = "SELECT coalesce(max(hlc), 0) FROM weft_event",
	[STMT_EFFECT_GET] =
		"SELECT f.event, e.hlc, weft_id(e.n) FROM weft_effect f JOIN weft_event e ON e.n = f.event "
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
	db->n_valid = 0;
	db->own_settled = 0;
	/* Another connection may have flagged an author since. */
	memset(db->forks, 0, sizeof(db->forks));
	db->nbpend = 0;
	int rc = step_once(db, STMT_BEGIN, "starting a write transaction");
	/* Signatures of own events stored sealed go out with this commit. */
	if (rc == WEFT_OK && (rc = signer_write(db)) < 0)
		store_rollback(db);
	return rc;
}

int store_commit(weft_db *db)
{
	db->mark_valid = 0;
	db->n_valid = 0;
	int rc = step_once(db, STMT_COMMIT, "committing");
	if (rc < 0)
		store_rollback(db);
	else
		signer_committed(db);
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
	if (db->ids)
		memset(db->ids, 0, STORE_ID_CACHE * sizeof(*db->ids));
	memset(db->forks, 0, sizeof(db->forks));
	memset(db->recent, 0, sizeof(db->recent));
	db->n_valid = 0;
	signer_rolled_back(db);
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
int64_t store_idp(const unsigned char id[32])
{
	/* Sign-extended: SQLite stores it in 6 bytes. */
	uint64_t v = codec_get_u64(id) >> (64 - 8 * STORE_IDP_BYTES);
	uint64_t sign = UINT64_C(1) << (8 * STORE_IDP_BYTES - 1);
	return (int64_t)(v ^ sign) - (int64_t)sign;
}

/* ---------------------------------------------------------------- ids
 *
 * A row keeps its id's first 6 bytes (idp) but not the id: the id is the
 * hash of the header, re-derived from the row. The header holds prev, the
 * id of the author's previous event, which the row keeps either in full
 * or as link, the distance back to that event's row; every
 * STORE_PREV_EVERY-th event of a chain keeps it in full, so deriving an
 * id reads at most that many rows. Ids derived are remembered by row.
 */

static int id_cache_get(weft_db *db, int64_t n, weft_id *out)
{
	if (!db->ids)
		return 0;
	const struct store_id_slot *s = &db->ids[(uint64_t)n % STORE_ID_CACHE];
	if (s->n != n)
		return 0;
	*out = s->id;
	return 1;
}

static void id_cache_put(weft_db *db, int64_t n, const weft_id *id)
{
	if (!db->ids && !(db->ids = weft__calloc(STORE_ID_CACHE, sizeof(*db->ids))))
		return; /* only slower */
	struct store_id_slot *s = &db->ids[(uint64_t)n % STORE_ID_CACHE];
	s->n = n;
	s->id = *id;
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

const char *store_seal_hex(char out[STORE_SEAL_HEX + 1], const unsigned char seal[IDENTITY_SEAL_BYTES])
{
	return sodium_bin2hex(out, STORE_SEAL_HEX + 1, seal, IDENTITY_SEAL_BYTES);
}

int store_seal_get(sqlite3_stmt *st, unsigned char seal[IDENTITY_SEAL_BYTES])
{
	size_t got;
	const char *hex = (const char *)sqlite3_column_text(st, EC_SIG);
	return !hex || sqlite3_column_bytes(st, EC_SIG) != STORE_SEAL_HEX ||
	               sodium_hex2bin(seal, IDENTITY_SEAL_BYTES, hex, STORE_SEAL_HEX, NULL, &got, NULL) != 0 ||
	               got != IDENTITY_SEAL_BYTES
	           ? -1
	           : 0;
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

void store_erased_put(unsigned char out[STORE_ERASED_BYTES], uint32_t len, const unsigned char hash[32])
{
	codec_put_u32(out, len);
	memcpy(out + 4, hash, 32);
}

static int idp_corrupt(weft_db *db, int64_t idp, int64_t n, const char *what)
{
	/* Named by the bytes of its id the row keeps, as hex. */
	uint64_t v = (uint64_t)idp & ((UINT64_C(1) << (8 * STORE_IDP_BYTES)) - 1);
	return err_set(&db->err, WEFT_ECORRUPT, "stored event %0*llx… (row %lld) %s: the store was altered; "
	               "run `weft verify` and restore from a peer", 2 * STORE_IDP_BYTES, (unsigned long long)v,
	               (long long)n, what);
}

static int row_corrupt(weft_db *db, sqlite3_stmt *st, const char *what)
{
	return idp_corrupt(db, sqlite3_column_int64(st, EC_IDP), sqlite3_column_int64(st, EC_N), what);
}

/*
 * The fields of the event at st's row (STORE_EVENT_COLUMNS) but its prev
 * and id. *pred: 0 when the row keeps prev (or seq is 1), else the row
 * whose id prev is. *payload points into st's row (NULL: erased).
 */
static int row_fields(weft_db *db, sqlite3_stmt *st, struct weft_event *f, const void **payload, int64_t *pred)
{
	memset(f, 0, sizeof(*f));
	*pred = 0;
	*payload = NULL;
	f->version = EVENT_FORMAT_VERSION;
	int bad = blob_col(st, EC_PK, f->author, 32);
	f->seq = (uint64_t)sqlite3_column_int64(st, EC_SEQ);
	bad |= f->seq < 1 || f->seq > EVENT_SEQ_MAX;
	int prev_type = sqlite3_column_type(st, EC_PREV);
	if (f->seq == 1) {
		bad |= prev_type != SQLITE_NULL;
	} else if (prev_type == SQLITE_INTEGER) {
		int64_t link = sqlite3_column_int64(st, EC_PREV), n = sqlite3_column_int64(st, EC_N);
		/* A link goes back to an older row, so walking links ends. */
		bad |= link < 1 || link >= n;
		*pred = n - link;
	} else {
		bad |= prev_type != SQLITE_BLOB || blob_col(st, EC_PREV, f->prev.bytes, 32);
	}
	f->hlc = (uint64_t)sqlite3_column_int64(st, EC_HLC);
	bad |= text_col(st, EC_SCOPE, f->scope, WEFT_SCOPE_MAX, 0);
	bad |= text_col(st, EC_KIND, f->kind, WEFT_KIND_MAX, 0);
	bad |= text_col(st, EC_IDEM, f->idem, WEFT_IDEM_KEY_MAX, 1);
	/* A seal instead (core/signer.h): store_row_event checks it. */
	f->sealed = STORE_SEALED(st);
	bad |= f->sealed ? store_seal_get(st, f->sig) : blob_col(st, EC_SIG, f->sig, 64);
	if (sqlite3_column_type(st, EC_PAYLOAD) != SQLITE_NULL) {
		/* Present: its length is re-derived here, its hash by the caller. */
		*payload = sqlite3_column_blob(st, EC_PAYLOAD);
		if (!*payload)
			*payload = "";
		int plen = sqlite3_column_bytes(st, EC_PAYLOAD);
		bad |= plen < 0 || (unsigned)plen > WEFT_PAYLOAD_HARD_MAX;
		f->payload_len = (uint32_t)plen;
	} else {
		unsigned char erased[STORE_ERASED_BYTES];
		bad |= blob_col(st, EC_ERASED, erased, STORE_ERASED_BYTES);
		f->payload_len = codec_get_u32(erased);
		bad |= f->payload_len > WEFT_PAYLOAD_HARD_MAX;
		memcpy(f->payload_hash, erased + 4, 32);
	}
	return bad ? row_corrupt(db, st, "has a malformed column") : WEFT_OK;
}

/* Checks the id derived from st's row against the 6 bytes the row keeps. */
static int row_check_id(weft_db *db, sqlite3_stmt *st, const weft_id *id)
{
	if (store_idp(id->bytes) == sqlite3_column_int64(st, EC_IDP))
		return WEFT_OK;
	return row_corrupt(db, st, "does not hash to its id");
}

/* A row on the way down a chain of links: all but prev, payload hashed. */
typedef struct walk_row {
	struct weft_event f;
	int64_t n, idp, pred;
} walk_row;

static int walk_read(weft_db *db, int64_t n, walk_row *w)
{
	sqlite3_stmt *st = store_stmt(db, STMT_EVENT_ROW);
	if (!st)
		return db->err.code;
	sqlite3_bind_int64(st, 1, n);
	int rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(st);
		return rc == SQLITE_DONE ? err_set(&db->err, WEFT_ECORRUPT, "event row %lld is missing: the store was "
		                                   "altered; run `weft verify`", (long long)n)
		                         : store_sqlite_error(db, rc, "reading an event");
	}
	const void *payload;
	if ((rc = row_fields(db, st, &w->f, &payload, &w->pred)) == WEFT_OK && payload)
		crypto_generichash(w->f.payload_hash, 32, payload, w->f.payload_len, NULL, 0);
	w->n = n;
	w->idp = sqlite3_column_int64(st, EC_IDP);
	sqlite3_reset(st);
	return rc;
}

int store_event_id(weft_db *db, int64_t n, weft_id *out)
{
	if (id_cache_get(db, n, out))
		return WEFT_OK;
	/* Down the links to a row whose prev is known (kept in the row, or
	 * the id of a row remembered), then back up, hashing each header. */
	walk_row path[STORE_PREV_EVERY + 1];
	size_t depth = 0;
	weft_id prev;
	int rc;
	for (int64_t cur = n;;) {
		if (depth == sizeof(path) / sizeof(path[0]))
			return err_set(&db->err, WEFT_ECORRUPT, "event row %lld is more than %d links from a stored prev: "
			               "the store was altered; run `weft verify`", (long long)n, STORE_PREV_EVERY);
		walk_row *w = &path[depth++];
		if ((rc = walk_read(db, cur, w)) < 0)
			return rc;
		if (!w->pred || id_cache_get(db, w->pred, &prev))
			break;
		cur = w->pred;
	}
	while (depth) {
		walk_row *w = &path[--depth];
		if (w->pred)
			w->f.prev = prev;
		codec_event_hash_id(&w->f);
		if (store_idp(w->f.id.bytes) != w->idp)
			return idp_corrupt(db, w->idp, w->n, "does not hash to its id");
		id_cache_put(db, w->n, &w->f.id);
		prev = w->f.id;
	}
	*out = prev;
	return WEFT_OK;
}

/* ev, read from st's row, carries a seal: this device stored it and has
 * not written its signature yet. Signs it, if the seal is this device's. */
static int row_sign(weft_db *db, sqlite3_stmt *st, struct weft_event *ev)
{
	if (memcmp(ev->author, db->id.pk, 32) != 0)
		return row_corrupt(db, st, "holds a seal where an event of another device has its signature");
	/* Without the key (read-only): all but its bytes (weft_event_bytes). */
	if (!db->id.sk) {
		memset(ev->sig, 0, sizeof(ev->sig));
		ev->sealed = 1;
		return WEFT_OK;
	}
	unsigned char seal[IDENTITY_SEAL_BYTES], sig[64];
	identity_seal(&db->id, ev->id.bytes, seal);
	if (sodium_memcmp(seal, ev->sig, IDENTITY_SEAL_BYTES) != 0)
		return row_corrupt(db, st, "holds a seal this device did not make (the row was altered)");
	codec_sign_id(sig, &ev->id, db->id.sk);
	codec_event_set_sig(ev, sig);
	ev->sealed = 0;
	return WEFT_OK;
}

int store_row_event(struct weft_event **out, weft_db *db, sqlite3_stmt *st)
{
	*out = NULL;
	struct weft_event f;
	const void *payload;
	int64_t pred;
	int rc = row_fields(db, st, &f, &payload, &pred);
	if (rc == WEFT_OK && pred)
		rc = store_event_id(db, pred, &f.prev);
	if (rc < 0)
		return rc;
	if (payload)
		crypto_generichash(f.payload_hash, 32, payload, f.payload_len, NULL, 0);
	if ((rc = codec_event_layout(out, &f, payload, &db->err)) < 0)
		return rc;
	if ((rc = row_check_id(db, st, &(*out)->id)) < 0 || (f.sealed && (rc = row_sign(db, st, *out)) < 0)) {
		codec_event_free(*out);
		*out = NULL;
		return rc;
	}
	id_cache_put(db, sqlite3_column_int64(st, EC_N), &(*out)->id);
	return WEFT_OK;
}

/*
 * Finds the stored event with this id: its row, author and seq (*n = 0
 * when it is not stored). With hlc > 0, only among events of that stamp.
 * Events just stored are found without SQL (db->recent). A damaged row
 * among the candidates is passed over: a good copy of the event may be
 * stored again (weft_db_verify reports the damage).
 */
static int find_event(weft_db *db, const unsigned char id[32], int64_t hlc, int64_t *n, int64_t *author, uint64_t *seq)
{
	const struct store_recent *r = &db->recent[(uint64_t)store_idp(id) % STORE_RECENT];
	if (r->n && memcmp(r->id.bytes, id, 32) == 0) {
		*n = r->n, *author = r->author, *seq = r->seq;
		return WEFT_OK;
	}
	sqlite3_stmt *st = store_stmt(db, hlc ? STMT_EVENT_AT_IDP : STMT_EVENT_BY_IDP);
	if (!st)
		return db->err.code;
	*n = 0;
	sqlite3_bind_int64(st, 1, store_idp(id));
	if (hlc)
		sqlite3_bind_int64(st, 2, hlc);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		weft_id got;
		int64_t cand = sqlite3_column_int64(st, 0);
		int drc = store_event_id(db, cand, &got);
		if (drc == WEFT_ECORRUPT)
			continue;
		if (drc < 0) {
			sqlite3_reset(st);
			return drc;
		}
		if (memcmp(got.bytes, id, 32) == 0) {
			*n = cand;
			*author = sqlite3_column_int64(st, 1);
			*seq = (uint64_t)sqlite3_column_int64(st, 2);
			break;
		}
	}
	sqlite3_reset(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, "looking up an event");
}

/* ------------------------------------------------------------- chains
 *
 * Which sequence numbers of an author are stored: runs [lo, hi] in
 * weft_chain (hi_n: the row of the event at hi). While an author has no
 * fork, each stored number is one event. Once it has, all its events are
 * also listed by (seq, n) in weft_fork.
 */

typedef struct chain_near {
	int held, held_prev, held_next; /* seq, seq - 1, seq + 1 are stored */
	int64_t left_lo;                /* the run ending at seq - 1, or 0 */
	int64_t right_lo, right_hi, right_n; /* the run starting at seq + 1 (right_lo 0: none) */
} chain_near;

static int chain_runs(weft_db *db, int64_t author, uint64_t seq, chain_near *c)
{
	memset(c, 0, sizeof(*c));
	sqlite3_stmt *st = store_stmt(db, STMT_RUNS);
	if (!st)
		return db->err.code;
	sqlite3_bind_int64(st, 1, author);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)seq + 1);
	int rc, k = 0;
	int64_t s = (int64_t)seq;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int64_t lo = sqlite3_column_int64(st, 0), hi = sqlite3_column_int64(st, 1);
		if (k++ == 0 && lo == s + 1) {
			c->held_next = 1;
			c->right_lo = lo;
			c->right_hi = hi;
			c->right_n = sqlite3_column_int64(st, 2);
			continue;
		}
		if (hi >= s) {
			c->held = 1;
			c->held_prev = lo <= s - 1;
			c->held_next |= hi >= s + 1;
		} else if (hi == s - 1) {
			c->held_prev = 1;
			c->left_lo = lo;
		}
		break;
	}
	sqlite3_reset(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, "reading an author's chain");
}

static int run_write(weft_db *db, enum store_stmt which, int64_t author, int64_t lo, int64_t hi, int64_t hi_n)
{
	sqlite3_stmt *st = store_stmt(db, which);
	if (!st)
		return db->err.code;
	sqlite3_bind_int64(st, 1, author);
	sqlite3_bind_int64(st, 2, lo);
	if (which != STMT_RUN_DEL) {
		sqlite3_bind_int64(st, 3, hi);
		sqlite3_bind_int64(st, 4, hi_n);
	}
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, "recording an author's chain");
}

/* Records seq (stored as row n) in the author's runs; c from chain_runs. */
static int chain_add(weft_db *db, int64_t author, uint64_t seq, int64_t n, const chain_near *c)
{
	if (c->held)
		return WEFT_OK;
	int64_t s = (int64_t)seq;
	int rc = WEFT_OK;
	if (c->right_lo && (rc = run_write(db, STMT_RUN_DEL, author, c->right_lo, 0, 0)) < 0)
		return rc;
	/* The run ending at seq - 1 grows in place (the common case). */
	enum store_stmt how = c->left_lo ? STMT_RUN_EXTEND : STMT_RUN_SET;
	int64_t lo = c->left_lo ? c->left_lo : s;
	return c->right_lo ? run_write(db, how, author, lo, c->right_hi, c->right_n) : run_write(db, how, author, lo, s, n);
}

/* For an author with a fork: which of seq - 1, seq, seq + 1 weft_fork
 * lists (replacing what the runs said; the rest of c stays). */
static int chain_forked(weft_db *db, int64_t author, const struct weft_event *ev, chain_near *c, int *next_links)
{
	c->held = c->held_prev = c->held_next = 0;
	sqlite3_stmt *st = store_stmt(db, STMT_FORK_NEAR);
	if (!st)
		return db->err.code;
	sqlite3_bind_int64(st, 1, author);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)ev->seq);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		uint64_t seq = (uint64_t)sqlite3_column_int64(st, 0);
		if (seq == ev->seq) {
			c->held = 1;
		} else if (seq + 1 == ev->seq) {
			c->held_prev = 1;
		} else {
			/* A successor of ev stored before it keeps prev in full. */
			c->held_next = 1;
			*next_links |= sqlite3_column_type(st, 1) == SQLITE_BLOB && sqlite3_column_bytes(st, 1) == 32 &&
			               memcmp(sqlite3_column_blob(st, 1), ev->id.bytes, 32) == 0;
		}
	}
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, "checking an author's chain");
}

/* Whether the author's event at seq, stored before ev, names ev as prev
 * (it then keeps prev in full: ev was not there to link to). */
static int successor_links(weft_db *db, int64_t author, const struct weft_event *ev, int *links)
{
	sqlite3_stmt *st = store_stmt(db, STMT_WAITING);
	if (!st)
		return db->err.code;
	sqlite3_bind_int64(st, 1, author);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)ev->seq + 1);
	int rc;
	*links = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		*links |= sqlite3_column_bytes(st, 0) == 32 && memcmp(sqlite3_column_blob(st, 0), ev->id.bytes, 32) == 0;
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, "checking an author's chain");
}

static int author_stmt(weft_db *db, enum store_stmt which, int64_t author, int64_t seq, int64_t n, const char *doing)
{
	sqlite3_stmt *st = store_stmt(db, which);
	if (!st)
		return db->err.code;
	sqlite3_bind_int64(st, 1, author);
	if (which == STMT_FORK_ADD) {
		sqlite3_bind_int64(st, 2, seq);
		sqlite3_bind_int64(st, 3, n);
	}
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, doing);
}

static void fork_known(weft_db *db, int64_t author, int forked)
{
	for (int i = 0; i < STORE_REF_CACHE; i++) {
		if (db->forks[i].author == author) {
			db->forks[i].forked = forked;
			return;
		}
	}
	unsigned k = db->forks_next++ % STORE_REF_CACHE;
	db->forks[k].author = author;
	db->forks[k].forked = forked;
}

/* Whether the author has a fork (remembered for the transaction). */
static int author_forked(weft_db *db, int64_t author, int *forked)
{
	for (int i = 0; i < STORE_REF_CACHE; i++) {
		if (db->forks[i].author == author) {
			*forked = db->forks[i].forked;
			return WEFT_OK;
		}
	}
	sqlite3_stmt *st = store_stmt(db, STMT_AUTHOR_FORKED);
	if (!st)
		return db->err.code;
	sqlite3_bind_int64(st, 1, author);
	int rc = sqlite3_step(st);
	*forked = rc == SQLITE_ROW && sqlite3_column_int(st, 0);
	sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return store_sqlite_error(db, rc, "reading an author");
	fork_known(db, author, *forked);
	return WEFT_OK;
}

static int next_row(weft_db *db, int64_t *n)
{
	if (!db->n_valid) {
		sqlite3_stmt *st = store_stmt(db, STMT_NEXT_N);
		if (!st)
			return db->err.code;
		int rc = sqlite3_step(st);
		db->n_next = sqlite3_column_int64(st, 0);
		sqlite3_reset(st);
		if (rc != SQLITE_ROW)
			return store_sqlite_error(db, rc, "numbering an event");
		db->n_valid = 1;
	}
	*n = db->n_next;
	return WEFT_OK;
}

int store_settle_own(weft_db *db)
{
	if (db->own_settled)
		return WEFT_OK;
	sqlite3_stmt *st = store_stmt(db, STMT_OWN_SETTLE);
	if (!st)
		return db->err.code;
	sqlite3_bind_blob(st, 1, db->id.pk, 32, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return store_sqlite_error(db, rc, "recording this device's chain");
	db->own_settled = 1;
	db->own_run_open = 0;
	return WEFT_OK;
}

/* This device's next event, stored as row n: its run stays open. */
static int own_run_grow(weft_db *db, int64_t author, uint64_t seq, int64_t n)
{
	if (db->own_run_open)
		return WEFT_OK; /* the row follows open_n: nothing to write */
	sqlite3_stmt *st = store_stmt(db, STMT_OWN_RUN_OPEN);
	if (!st)
		return db->err.code;
	int64_t lo = db->own_run_lo ? db->own_run_lo : (int64_t)seq;
	sqlite3_bind_int64(st, 1, author);
	sqlite3_bind_int64(st, 2, lo);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)seq);
	sqlite3_bind_int64(st, 4, n);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return store_sqlite_error(db, rc, "recording this device's chain");
	db->own_run_lo = lo;
	db->own_run_open = 1;
	return WEFT_OK;
}

/*
 * A fork: another event at this author's sequence number, or a chain link
 * that disagrees with a stored neighbour. Both events are validly signed,
 * so the author signed two histories: keep both as evidence and flag the
 * author (from then on its events are also listed in weft_fork).
 */
int store_insert_event(weft_db *db, const struct weft_event *ev, int own_next,
                       weft_ingest_status *status)
{
	int rc, forked = 0, next_links = 0;
	int64_t n = 0, pred = 0, pauthor = 0, author, scope, kind;
	uint64_t pseq = 0;
	if (!own_next && (rc = find_event(db, ev->id.bytes, (int64_t)ev->hlc, &n, &pauthor, &pseq)) < 0)
		return rc;
	if (!own_next && n) {
		*status = WEFT_INGEST_DUPLICATE;
		return WEFT_OK;
	}
	if ((rc = intern(db, &author, 0, ev->author, 1)) < 0 || (rc = intern(db, &scope, 1, ev->scope, 0)) < 0 ||
	    (rc = intern(db, &kind, 2, ev->kind, 0)) < 0 || (rc = next_row(db, &n)) < 0)
		return rc;
	*status = WEFT_INGEST_NEW;
	chain_near c;
	memset(&c, 0, sizeof(c));
	if (own_next) {
		pred = ev->seq > 1 ? db->own_n : 0;
	} else {
		if ((rc = store_settle_own(db)) < 0)
			return rc;
		if (memcmp(ev->author, db->id.pk, 32) == 0)
			db->own_valid = 0; /* own events may come back from a peer */
		if (ev->seq > 1 && (rc = find_event(db, ev->prev.bytes, 0, &pred, &pauthor, &pseq)) < 0)
			return rc;
		if (pred && (pauthor != author || pseq + 1 != ev->seq))
			pred = 0; /* names an event that is not the author's previous one */
		if ((rc = author_forked(db, author, &forked)) < 0 || (rc = chain_runs(db, author, ev->seq, &c)) < 0)
			return rc;
		if (forked) {
			if ((rc = chain_forked(db, author, ev, &c, &next_links)) < 0)
				return rc;
		} else if (c.held_next && (rc = successor_links(db, author, ev, &next_links)) < 0) {
			return rc;
		}
		if (c.held || (c.held_prev && !pred) || (c.held_next && !next_links))
			*status = WEFT_INGEST_FORK;
	}

	sqlite3_stmt *st = store_stmt(db, STMT_EVENT_INSERT);
	if (!st)
		return db->err.code;
	sqlite3_bind_int64(st, 1, n);
	sqlite3_bind_int64(st, 2, store_idp(ev->id.bytes));
	sqlite3_bind_int64(st, 3, author);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)ev->seq);
	if (pred && ev->seq % STORE_PREV_EVERY != 0)
		sqlite3_bind_int64(st, 5, n - pred);
	else if (ev->seq > 1)
		sqlite3_bind_blob(st, 5, ev->prev.bytes, 32, SQLITE_STATIC);
	sqlite3_bind_int64(st, 6, (sqlite3_int64)ev->hlc);
	sqlite3_bind_int64(st, 7, scope);
	sqlite3_bind_int64(st, 8, kind);
	if (ev->idem[0])
		sqlite3_bind_text(st, 9, ev->idem, -1, SQLITE_STATIC);
	unsigned char erased[STORE_ERASED_BYTES];
	if (!ev->payload) {
		/* Erased: what the header needs can no longer be re-derived. */
		store_erased_put(erased, ev->payload_len, ev->payload_hash);
		sqlite3_bind_blob(st, 10, erased, sizeof(erased), SQLITE_STATIC);
	}
	char seal_hex[STORE_SEAL_HEX + 1];
	if (ev->sealed)
		sqlite3_bind_text(st, 11, store_seal_hex(seal_hex, ev->sig), STORE_SEAL_HEX, SQLITE_STATIC);
	else
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
	db->n_next = n + 1;
	id_cache_put(db, n, &ev->id);
	struct store_recent *w = &db->recent[(uint64_t)store_idp(ev->id.bytes) % STORE_RECENT];
	w->n = n, w->author = author, w->seq = ev->seq, w->id = ev->id;
	if (own_next)
		db->own_n = n;
	if ((rc = own_next ? own_run_grow(db, author, ev->seq, n) : chain_add(db, author, ev->seq, n, &c)) < 0)
		return rc;
	if (forked)
		rc = author_stmt(db, STMT_FORK_ADD, author, (int64_t)ev->seq, n, "recording a forked chain");
	else if (*status == WEFT_INGEST_FORK && (rc = author_stmt(db, STMT_AUTHOR_FLAG_FORK, author, 0, 0,
	                                                          "flagging a forked author")) == WEFT_OK) {
		fork_known(db, author, 1);
		rc = author_stmt(db, STMT_FORK_FILL, author, 0, 0, "recording a forked chain");
	}
	if (rc < 0)
		return rc;
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

/*
 * Steps st (rows of STORE_EVENT_COLUMNS) to the event with this id: 1 and
 * the event (the hint moved to it), 0 if none of the rows is it, and
 * WEFT_ECORRUPT if none is but a damaged one (it may have been).
 */
static int take_match(struct weft_event **out, weft_db *db, sqlite3_stmt *st, const unsigned char id[32],
                      store_read_hint *hint)
{
	int64_t idp = store_idp(id);
	int rc, damaged = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (sqlite3_column_int64(st, EC_IDP) != idp)
			continue;
		if ((rc = store_row_event(out, db, st)) == WEFT_ECORRUPT) {
			damaged = 1;
			continue;
		}
		if (rc < 0)
			return rc;
		if (memcmp((*out)->id.bytes, id, 32) == 0) {
			if (hint) {
				hint->valid = 1;
				hint->hlc = sqlite3_column_int64(st, EC_HLC);
				hint->n = sqlite3_column_int64(st, EC_N);
			}
			return 1;
		}
		codec_event_free(*out); /* the same 6 bytes, another event */
		*out = NULL;
	}
	if (rc != SQLITE_DONE)
		return store_sqlite_error(db, rc, "reading an event");
	return damaged ? WEFT_ECORRUPT : 0;
}

int store_get_event(struct weft_event **out, weft_db *db, const unsigned char id[32], store_read_hint *hint)
{
	*out = NULL;
	int rc = 0;
	sqlite3_stmt *st;
	if (hint && hint->valid && hint->skip) {
		hint->skip--;
	} else if (hint && hint->valid) {
		if (!(st = store_stmt(db, STMT_EVENT_AFTER)))
			return db->err.code;
		sqlite3_bind_int64(st, 1, hint->hlc);
		sqlite3_bind_int64(st, 2, hint->n);
		rc = take_match(out, db, st, id, hint);
		sqlite3_reset(st);
		if (rc) {
			hint->misses = 0;
		} else if (++hint->misses >= 2) {
			hint->misses = 2; /* until a hit, each miss skips again */
			hint->skip = STORE_READ_SKIP;
		}
	}
	if (rc == 0) {
		if (!(st = store_stmt(db, STMT_EVENT_GET)))
			return db->err.code;
		sqlite3_bind_int64(st, 1, store_idp(id));
		rc = take_match(out, db, st, id, hint);
		sqlite3_reset(st);
	}
	if (rc == 0) {
		char h[65];
		weft_id wid;
		memcpy(wid.bytes, id, 32);
		return err_set(&db->err, WEFT_ENOTFOUND, "event %s is not in this store", weft_id_to_hex(h, &wid));
	}
	return rc < 0 ? rc : WEFT_OK;
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
		? "SELECT e.hlc, e.n FROM weft_event e WHERE e.hlc >= ?2 AND e.hlc <= ?3 AND e.scope IN "
		  "(SELECT ref FROM weft_scope WHERE name IN (SELECT value FROM json_each(?1))) ORDER BY e.hlc"
		: "SELECT hlc, n FROM weft_event WHERE hlc >= ?2 AND hlc <= ?3 ORDER BY hlc";
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
		weft_id id;
		if ((out = store_event_id(db, sqlite3_column_int64(st, 1), &id)) < 0)
			break;
		if (t.n && t.v[0].hlc != hlc && (out = ties_flush(&t, cb, payload)) != 0)
			break;
		if (ties_push(&t, hlc, id.bytes) < 0) {
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
	int64_t n, author;
	uint64_t seq;
	int rc = find_event(db, id, 0, &n, &author, &seq);
	return rc < 0 ? rc : n != 0;
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
