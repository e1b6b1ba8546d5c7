/* The public store API: open, append, ingest, read, verify. */
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "core/alloc.h"
#include "core/buckets.h"
#include "core/hlc.h"
#include "core/ingest.h"
#include "core/project.h"
#include "core/store.h"
#include "core/signer.h"
#include "core/walbuf.h"
#include "platform/platform.h"

static const char schema_base[] =
	"CREATE TABLE weft_meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;"
	"CREATE TABLE weft_author("
	"  ref INTEGER PRIMARY KEY,"
	"  pk BLOB NOT NULL UNIQUE,"
	"  forked INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE weft_scope(ref INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
	"CREATE TABLE weft_kind(ref INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
	"CREATE TABLE weft_trust("
	"  pk BLOB PRIMARY KEY,"
	"  scopes TEXT NOT NULL,"           /* comma-separated, or '*' */
	"  perms INTEGER NOT NULL,"
	"  tls_hash BLOB,"                  /* pinned once endorsed */
	"  added INTEGER NOT NULL) WITHOUT ROWID;";

/* Own events stored with a seal, not signed yet (core/signer.h): found
 * after a crash. Schema 4. */
#define SCHEMA_SEALED_INDEX \
	"CREATE INDEX IF NOT EXISTS weft_event_sealed ON weft_event(n) WHERE typeof(sig) = 'text';"

/* Layout: docs/FORMAT.md section 5 and core/store.h. What can be
 * re-derived is not stored: the id (but its first 6 bytes), prev when
 * the row of the event it names is known, the payload's length and hash
 * while the payload is there. */
static const char schema_events[] =
	"CREATE TABLE weft_event("
	"  n INTEGER PRIMARY KEY,"          /* local arrival order */
	"  idp INTEGER NOT NULL,"           /* the id's first 6 bytes */
	"  author INTEGER NOT NULL,"
	"  seq INTEGER NOT NULL,"
	"  hlc INTEGER NOT NULL,"
	"  scope INTEGER NOT NULL,"
	"  kind INTEGER NOT NULL,"
	"  sig BLOB NOT NULL,"
	"  payload BLOB,"                   /* NULL once erased */
	"  prev,"                           /* NULL (seq 1), the id, or n minus its row */
	"  erased BLOB,"                    /* once erased: payload length (u32) and hash */
	"  idem TEXT);"
	"CREATE INDEX weft_event_idp ON weft_event(idp);"
	"CREATE INDEX weft_event_time ON weft_event(hlc);"
	"CREATE INDEX weft_event_idem ON weft_event(scope, idem) WHERE idem IS NOT NULL;"
	/* Events stored before their predecessor, found when it arrives. */
	"CREATE INDEX weft_event_waiting ON weft_event(author, seq) WHERE typeof(prev) = 'blob';"
	SCHEMA_SEALED_INDEX
	/* The sequence numbers stored per author, as runs [lo, hi]. */
	/* open_n, on this device's last run only: every row after row open_n
	 * is this device's next event (the run is not rewritten per append;
	 * core/store.c, store_settle_own). */
	"CREATE TABLE weft_chain(author INTEGER NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL,"
	"  hi_n INTEGER NOT NULL, open_n INTEGER, PRIMARY KEY(author, lo)) WITHOUT ROWID;"
	/* Every event of an author with a fork. */
	"CREATE TABLE weft_fork(author INTEGER NOT NULL, seq INTEGER NOT NULL, n INTEGER NOT NULL,"
	"  PRIMARY KEY(author, seq, n)) WITHOUT ROWID;";

/* Schema 2 to 3: the same events, n kept (derived rows refer to it). */
static const char migrate_v2_before[] =
	"DROP INDEX weft_event_idp; DROP INDEX weft_event_time; DROP INDEX weft_event_idem;"
	"ALTER TABLE weft_event RENAME TO weft_event_v2;";
/* Then schema_events, then: */
static const char migrate_v2_after[] =
	"INSERT INTO weft_event(n, idp, author, seq, hlc, scope, kind, sig, payload, prev, erased, idem) "
	"SELECT e.n, weft_idp(e.id), e.author, e.seq, e.hlc, e.scope, e.kind, e.sig, e.payload,"
	"  CASE WHEN e.seq = 1 THEN NULL"
	"    WHEN coalesce(p.n < e.n, 0) AND e.seq % " STORE_STR(STORE_PREV_EVERY) " <> 0 THEN e.n - p.n"
	"    ELSE coalesce(e.prev, p.id) END,"
	"  CASE WHEN e.payload IS NULL THEN weft_erased(e.payload_len, e.payload_hash) END, e.idem "
	"FROM weft_event_v2 e LEFT JOIN weft_event_v2 p ON p.author = e.author AND p.seq = e.seq - 1 "
	"  AND (e.prev IS NULL OR p.id = e.prev) ORDER BY e.n;"
	"WITH s AS (SELECT DISTINCT author, seq FROM weft_event_v2),"
	"  g AS (SELECT author, seq, seq - row_number() OVER (PARTITION BY author ORDER BY seq) AS k FROM s) "
	"INSERT INTO weft_chain(author, lo, hi, hi_n) SELECT author, min(seq), max(seq), 0 FROM g GROUP BY author, k;"
	"UPDATE weft_chain SET hi_n = (SELECT min(n) FROM weft_event_v2 e WHERE e.author = weft_chain.author "
	"  AND e.seq = weft_chain.hi);"
	"INSERT INTO weft_fork(author, seq, n) SELECT e.author, e.seq, e.n FROM weft_event_v2 e "
	"  JOIN weft_author a ON a.ref = e.author WHERE a.forked;"
	"DROP TABLE weft_event_v2;";
/* Schema 3 to 4: a seal may stand in for a signature; the index finds them. */
static const char migrate_v3[] = SCHEMA_SEALED_INDEX "PRAGMA user_version = 4;";

const char *weft_version(void) { return WEFT_VERSION_STRING; }
int weft_version_number(void) { return WEFT_VERSION_NUMBER; }
size_t weft_id_bytes(void) { return WEFT_ID_BYTES; }
size_t weft_public_key_bytes(void) { return WEFT_PUBLIC_KEY_BYTES; }
size_t weft_secret_key_bytes(void) { return WEFT_SECRET_KEY_BYTES; }
size_t weft_signature_bytes(void) { return WEFT_SIGNATURE_BYTES; }
size_t weft_device_id_len(void) { return WEFT_DEVICE_ID_LEN; }
size_t weft_scope_max(void) { return WEFT_SCOPE_MAX; }
size_t weft_kind_max(void) { return WEFT_KIND_MAX; }
size_t weft_idem_key_max(void) { return WEFT_IDEM_KEY_MAX; }
size_t weft_payload_default_max(void) { return WEFT_PAYLOAD_DEFAULT_MAX; }

const char *weft_errmsg(const weft_db *db)
{
	if (!db)
		return weft_error_last();
	return db->err.msg[0] ? db->err.msg : "no error";
}

const unsigned char *weft_db_public_key(const weft_db *db)
{
	return db->id.pk;
}

const char *weft_db_device_id(const weft_db *db)
{
	return db->id.device_id;
}

static int meta_blob(weft_db *db, const char *key, void *out, int len, int *found)
{
	sqlite3_stmt *st = store_stmt(db, STMT_META_GET);
	if (!st)
		return db->err.code;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	*found = 0;
	if (rc == SQLITE_ROW) {
		if (sqlite3_column_bytes(st, 0) == len && sqlite3_column_blob(st, 0)) {
			memcpy(out, sqlite3_column_blob(st, 0), (size_t)len);
			*found = 1;
		}
		rc = SQLITE_DONE;
	}
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, "reading store metadata");
}

static int pragma_int(weft_db *db, const char *sql, int *out)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db->sql, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return store_sqlite_error(db, rc, "reading the store's version");
	rc = sqlite3_step(st);
	*out = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
	sqlite3_finalize(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? WEFT_OK
	                                             : store_sqlite_error(db, rc, "reading the store's version");
}

static int create_schema(weft_db *db)
{
	int rc = store_begin(db);
	if (rc < 0)
		return rc;
	char sql[128];
	snprintf(sql, sizeof(sql), "PRAGMA application_id = %d; PRAGMA user_version = %d;",
	         STORE_APPLICATION_ID, STORE_SCHEMA_VERSION);
	if ((rc = store_exec(db, schema_base, "creating the store")) < 0 ||
	    (rc = store_exec(db, schema_events, "creating the store")) < 0 ||
	    (rc = store_exec(db, project_schema_sql, "creating the store")) < 0 ||
	    (rc = store_exec(db, sql, "creating the store")) < 0)
		goto fail;
	sqlite3_stmt *st = store_stmt(db, STMT_META_SET);
	if (!st) {
		rc = db->err.code;
		goto fail;
	}
	sqlite3_bind_text(st, 1, "device_pk", -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, db->id.pk, 32, SQLITE_STATIC);
	int src = sqlite3_step(st);
	sqlite3_reset(st);
	if (src != SQLITE_DONE) {
		rc = store_sqlite_error(db, src, "creating the store");
		goto fail;
	}
	return store_commit(db);
fail:
	store_rollback(db);
	return rc;
}

/* Checks that the file is a weft store this library can read. */
static int check_schema(weft_db *db, int *is_new, int *ver_out)
{
	int app, ver, tables, rc;
	*ver_out = 0;
	if ((rc = pragma_int(db, "PRAGMA application_id", &app)) < 0 ||
	    (rc = pragma_int(db, "PRAGMA user_version", &ver)) < 0 ||
	    (rc = pragma_int(db, "SELECT count(*) FROM sqlite_schema", &tables)) < 0)
		return rc;
	*is_new = app == 0 && ver == 0 && tables == 0;
	if (*is_new)
		return WEFT_OK;
	if (app != STORE_APPLICATION_ID)
		return err_set(&db->err, WEFT_ECORRUPT, "%s is a SQLite database but not a weft store; "
		               "give weft its own file", db->path);
	if (ver > STORE_SCHEMA_VERSION)
		return err_set(&db->err, WEFT_EVERSION, "%s was written by a newer weft (store schema %d; "
		               "this library %s knows up to %d); upgrade weft to open it",
		               db->path, ver, WEFT_VERSION_STRING, STORE_SCHEMA_VERSION);
	if (ver == 1)
		return err_set(&db->err, WEFT_EVERSION, "%s was written by a development build of weft before 0.1 "
		               "(store schema 1), which this version cannot read; with that build, `weft export` "
		               "its events, then `weft import` them into a new store", db->path);
	if (ver < 1)
		return err_set(&db->err, WEFT_ECORRUPT, "%s has an unknown store schema version %d", db->path, ver);
	/* Schema 3 reads as 4 (no row of it holds a seal). */
	if (ver < 3 && db->readonly)
		return err_set(&db->err, WEFT_EVERSION, "%s has store schema %d, which this version upgrades to %d "
		               "when it opens the store read-write; open it once without WEFT_OPEN_READONLY",
		               db->path, ver, STORE_SCHEMA_VERSION);
	*ver_out = ver;
	return WEFT_OK;
}

/* Schema 2 or 3 to 4 in one transaction: all or nothing. */
static int upgrade_schema(weft_db *db, int ver)
{
	const char *doing = "upgrading the store to schema 4";
	int rc = store_begin(db);
	if (rc < 0)
		return rc;
	if ((ver == 2 && ((rc = store_exec(db, migrate_v2_before, doing)) < 0 ||
	                  (rc = store_exec(db, schema_events, doing)) < 0 ||
	                  (rc = store_exec(db, migrate_v2_after, doing)) < 0)) ||
	    (rc = store_exec(db, migrate_v3, doing)) < 0) {
		store_rollback(db);
		return rc;
	}
	return store_commit(db);
}

/* weft_id(n): the id of the event at row n (core/store.h). */
static void sql_weft_id(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	(void)argc;
	weft_db *db = sqlite3_user_data(ctx);
	weft_id id;
	if (sqlite3_value_type(argv[0]) != SQLITE_INTEGER) {
		sqlite3_result_null(ctx);
		return;
	}
	if (store_event_id(db, sqlite3_value_int64(argv[0]), &id) < 0) {
		sqlite3_result_error(ctx, db->err.msg, -1);
		return;
	}
	sqlite3_result_blob(ctx, id.bytes, 32, SQLITE_TRANSIENT);
}

/* weft_erased(len, hash): weft_event.erased of an erased payload. */
static void sql_weft_erased(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	(void)argc;
	sqlite3_int64 len = sqlite3_value_int64(argv[0]);
	if (sqlite3_value_type(argv[0]) != SQLITE_INTEGER || len < 0 || len > UINT32_MAX ||
	    sqlite3_value_bytes(argv[1]) != 32 || sqlite3_value_type(argv[1]) != SQLITE_BLOB) {
		sqlite3_result_null(ctx);
		return;
	}
	unsigned char b[STORE_ERASED_BYTES];
	store_erased_put(b, (uint32_t)len, sqlite3_value_blob(argv[1]));
	sqlite3_result_blob(ctx, b, sizeof(b), SQLITE_TRANSIENT);
}

/* weft_idp(id): an id's first 6 bytes as weft_event.idp holds them. */
static void sql_weft_idp(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	(void)argc;
	if (sqlite3_value_bytes(argv[0]) != 32 || sqlite3_value_type(argv[0]) != SQLITE_BLOB) {
		sqlite3_result_null(ctx);
		return;
	}
	sqlite3_result_int64(ctx, store_idp(sqlite3_value_blob(argv[0])));
}

static int self_ref(weft_db *db)
{
	sqlite3_stmt *st = store_stmt(db, STMT_AUTHOR_REF);
	if (!st)
		return db->err.code;
	sqlite3_bind_blob(st, 1, db->id.pk, 32, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	db->self_ref = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
	sqlite3_reset(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, "opening the store");
}

static void db_free(weft_db *db)
{
	ingest_pool_free(db->pool);
	project_unload(db);
	for (int i = 0; i < STMT__COUNT; i++)
		sqlite3_finalize(db->stmts[i]);
	if (db->sql)
		sqlite3_close_v2(db->sql);
	identity_wipe(&db->id);
	weft__free(db->ids);
	weft__free(db->path);
	weft__free(db);
}

void weft_db_close(weft_db *db)
{
	if (!db)
		return;
	signer_close(db);
	db_free(db);
}

static int open_fail(weft_db *db, int rc)
{
	weft_err e = db->err;
	db_free(db);
	err_copy(NULL, &e);
	return rc;
}

int weft_db_open(weft_db **out, const char *path, const weft_open_options *opts)
{
	static const weft_open_options defaults = WEFT_OPEN_OPTIONS_INIT;
	if (!out || !path)
		return err_set(NULL, WEFT_EINVAL, "weft_db_open: out and path must not be NULL");
	*out = NULL;
	if (!opts)
		opts = &defaults;
	if (opts->version != WEFT_OPEN_OPTIONS_VERSION)
		return err_set(NULL, WEFT_EVERSION, "weft_open_options version %u is not supported by weft %s (expected %d); "
		               "initialise options with WEFT_OPEN_OPTIONS_INIT", opts->version, WEFT_VERSION_STRING,
		               WEFT_OPEN_OPTIONS_VERSION);
	if (opts->max_payload > WEFT_PAYLOAD_HARD_MAX)
		return err_set(NULL, WEFT_EINVAL, "max_payload %u is above the hard limit of %u bytes",
		               opts->max_payload, WEFT_PAYLOAD_HARD_MAX);
	if (sodium_init() < 0)
		return err_set(NULL, WEFT_ERROR, "libsodium failed to initialise");

	weft_db *db = weft__calloc(1, sizeof(*db));
	if (!db)
		return err_set(NULL, WEFT_ENOMEM, "out of memory opening %s", path);
	db->path = weft__strdup(path);
	if (!db->path) {
		weft__free(db);
		return err_set(NULL, WEFT_ENOMEM, "out of memory opening %s", path);
	}
	db->readonly = (opts->flags & WEFT_OPEN_READONLY) != 0;
	db->max_payload = opts->max_payload ? opts->max_payload : WEFT_PAYLOAD_DEFAULT_MAX;
	db->max_drift_ms = opts->max_drift_ms ? opts->max_drift_ms : WEFT_DRIFT_DEFAULT_MS;
	db->clock = opts->clock;
	db->clock_payload = opts->clock_payload;
	db->self_ref = -1;

	int exists = plat_file_exists(path);
	int create = (opts->flags & WEFT_OPEN_CREATE) && !db->readonly;
	if (!exists && !create) {
		err_set(&db->err, WEFT_ENOTFOUND, "no weft store at %s; create one with `weft init` "
		        "(or WEFT_OPEN_CREATE)", path);
		return open_fail(db, WEFT_ENOTFOUND);
	}

	char keypath[4096];
	if (snprintf(keypath, sizeof(keypath), "%s%s", opts->key_path ? opts->key_path : path,
	             opts->key_path ? "" : ".key") >= (int)sizeof(keypath)) {
		err_set(&db->err, WEFT_EINVAL, "path too long: %s", path);
		return open_fail(db, WEFT_EINVAL);
	}

	int rc;
	int made_key = 0;
	if (!exists) {
		/* New store: the identity first, so a store never exists without
		 * the key that signs for it. */
		if ((rc = identity_from_seed(&db->id, opts->secret_key, &db->err)) < 0)
			return open_fail(db, rc);
		if (!opts->secret_key) {
			if ((rc = identity_save(&db->id, keypath, opts->passphrase, &db->err)) < 0)
				return open_fail(db, rc);
			made_key = 1;
		}
	}

	if (!exists) {
		/* SQLite gives its -wal and -shm files the database's mode. */
		char perr[PLAT_ERR_LEN];
		if ((rc = plat_create_private(path, perr)) < 0) {
			err_set(&db->err, rc, "%s", perr);
			exists = rc == WEFT_EEXISTS; /* raced: not ours to remove */
			goto fail_nodb;
		}
	}
	int flags = db->readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0);
	rc = sqlite3_open_v2(path, &db->sql, flags | SQLITE_OPEN_NOMUTEX, walbuf_vfs_name());
	if (rc != SQLITE_OK) {
		rc = store_sqlite_error(db, rc, "opening the database");
		goto fail;
	}
	sqlite3_extended_result_codes(db->sql, 1);
	sqlite3_busy_timeout(db->sql, 5000);
	if (sqlite3_create_function_v2(db->sql, "weft_id", 1, SQLITE_UTF8 | SQLITE_DIRECTONLY, db, sql_weft_id, NULL,
	                               NULL, NULL) != SQLITE_OK ||
	    sqlite3_create_function_v2(db->sql, "weft_idp", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL, sql_weft_idp,
	                               NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_create_function_v2(db->sql, "weft_erased", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL,
	                               sql_weft_erased, NULL, NULL, NULL) != SQLITE_OK) {
		rc = store_sqlite_error(db, sqlite3_errcode(db->sql), "opening the store");
		goto fail;
	}
	int is_new, ver;
	if ((rc = check_schema(db, &is_new, &ver)) < 0)
		goto fail;
	/* Reads map the file instead of copying pages (at most 64 MiB). */
	if ((rc = store_exec(db, "PRAGMA mmap_size=67108864;", "configuring the database")) < 0)
		goto fail;
	if (!db->readonly) {
		/* WAL + synchronous=FULL: a commit is on disk before it returns. */
		if ((rc = store_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
		                     "configuring the database")) < 0)
			goto fail;
	}
	if (is_new) {
		if (exists) {
			/* An empty file: adopt it only when asked to create. */
			if (!create) {
				rc = err_set(&db->err, WEFT_ENOTFOUND, "%s is empty, not a weft store; "
				             "create one with `weft init`", path);
				goto fail;
			}
			if ((rc = identity_from_seed(&db->id, opts->secret_key, &db->err)) < 0)
				goto fail;
			if (!opts->secret_key) {
				if ((rc = identity_save(&db->id, keypath, opts->passphrase, &db->err)) < 0)
					goto fail;
				made_key = 1;
			}
		}
		if ((rc = create_schema(db)) < 0)
			goto fail;
	} else if (ver < STORE_SCHEMA_VERSION && !db->readonly && (rc = upgrade_schema(db, ver)) < 0) {
		goto fail;
	}

	unsigned char stored_pk[32];
	int found;
	if ((rc = meta_blob(db, "device_pk", stored_pk, 32, &found)) < 0)
		goto fail;
	if (!found) {
		rc = err_set(&db->err, WEFT_ECORRUPT, "%s has no device key recorded: the store is damaged", path);
		goto fail;
	}
	if (db->readonly) {
		identity_public_only(&db->id, stored_pk);
	} else if (!db->id.sk) {
		if (opts->secret_key)
			rc = identity_from_seed(&db->id, opts->secret_key, &db->err);
		else
			rc = identity_load(&db->id, keypath, opts->passphrase, &db->err);
		if (rc < 0)
			goto fail;
	}
	if (sodium_memcmp(stored_pk, db->id.pk, 32) != 0) {
		char a[WEFT_DEVICE_ID_LEN + 1];
		weft_device_id_format(a, stored_pk);
		rc = err_set(&db->err, WEFT_EAUTH, "the key given (device %s) is not this store's device key "
		             "(the store belongs to %s); use that device's key file", db->id.device_id, a);
		goto fail;
	}
	if ((rc = self_ref(db)) < 0 || (rc = project_load(db)) < 0 || (rc = buckets_open(db)) < 0 ||
	    (!db->readonly && (rc = signer_recover(db)) < 0))
		goto fail;
	err_clear(&db->err);
	*out = db;
	return WEFT_OK;
fail:
fail_nodb:
	open_fail(db, rc); /* closes the database before its files go */
	if (!exists) {
		char side[4096 + 8];
		remove(path);
		snprintf(side, sizeof(side), "%s-wal", path);
		remove(side);
		snprintf(side, sizeof(side), "%s-shm", path);
		remove(side);
	}
	if (made_key)
		remove(keypath);
	return rc;
}

/* ---------------------------------------------------------------- append */

static int lookup_idem(weft_db *db, const char *scope, const char *idem, weft_id *out, int *found)
{
	sqlite3_stmt *st = store_stmt(db, STMT_IDEM_LOOKUP);
	if (!st)
		return db->err.code;
	sqlite3_bind_text(st, 1, scope, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, idem, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	*found = 0;
	if (rc == SQLITE_ROW && sqlite3_column_bytes(st, 0) == 32) {
		memcpy(out->bytes, sqlite3_column_blob(st, 0), 32);
		*found = 1;
	}
	sqlite3_reset(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? WEFT_OK
	                                             : store_sqlite_error(db, rc, "looking up an idempotency key");
}

/* Changes only when another connection commits. */
static int data_version(weft_db *db, int64_t *v)
{
	sqlite3_stmt *st = store_stmt(db, STMT_DATA_VERSION);
	if (!st)
		return db->err.code;
	int rc = sqlite3_step(st);
	*v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
	sqlite3_reset(st);
	return rc == SQLITE_ROW ? WEFT_OK : store_sqlite_error(db, rc, "reading this device's chain");
}

/* Of this device's events at seq (a fork), the one with the lowest id. */
static int forked_head(weft_db *db, uint64_t seq, weft_id *id, int64_t *n)
{
	sqlite3_stmt *st = store_stmt(db, STMT_FORK_AT);
	if (!st)
		return db->err.code;
	sqlite3_bind_int64(st, 1, db->self_ref);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)seq);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		weft_id other;
		int64_t on = sqlite3_column_int64(st, 0);
		if ((rc = store_event_id(db, on, &other)) < 0)
			break;
		if (memcmp(other.bytes, id->bytes, 32) < 0) {
			*id = other;
			*n = on;
		}
	}
	sqlite3_reset(st);
	return rc < 0 ? rc : rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, "reading this device's chain");
}

/* Inside the write transaction: this device's head, from the cache while
 * no other connection wrote since it was filled. */
static int own_head(weft_db *db, uint64_t *seq, weft_id *id, int64_t *dv_out)
{
	*seq = 0;
	int64_t dv;
	int rc;
	if ((rc = data_version(db, &dv)) < 0)
		return rc;
	*dv_out = dv;
	if (db->own_valid && dv == db->own_dv) {
		*seq = db->own_seq;
		*id = db->own_id;
		return WEFT_OK;
	}
	/* Own events may have arrived from a peer (a restored device). */
	int forked = 0;
	if ((rc = self_ref(db)) < 0)
		return rc;
	int64_t n = 0;
	if (db->self_ref >= 0) {
		sqlite3_stmt *st = store_stmt(db, STMT_OWN_HEAD);
		if (!st)
			return db->err.code;
		sqlite3_bind_int64(st, 1, db->self_ref);
		rc = sqlite3_step(st);
		db->own_run_lo = 0;
		db->own_run_open = 0;
		if (rc == SQLITE_ROW) {
			*seq = (uint64_t)sqlite3_column_int64(st, 0);
			n = sqlite3_column_int64(st, 1);
			forked = sqlite3_column_int(st, 2) != 0;
			db->own_run_lo = sqlite3_column_int64(st, 3);
			db->own_run_open = sqlite3_column_int(st, 4);
		}
		sqlite3_reset(st);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE)
			return store_sqlite_error(db, rc, "reading this device's chain");
		if (n && (rc = store_event_id(db, n, id)) < 0)
			return rc;
		if (forked && (rc = forked_head(db, *seq, id, &n)) < 0)
			return rc;
	}
	db->own_valid = 1;
	db->own_dv = dv;
	db->own_seq = *seq;
	db->own_id = *id;
	db->own_n = n;
	db->own_forked = forked;
	return WEFT_OK;
}

int weft_db_append(weft_id *out, weft_db *db, const char *scope, const char *kind,
                   const char *idem_key, const void *payload, size_t payload_len)
{
	if (!db)
		return err_set(NULL, WEFT_EINVAL, "weft_db_append: db must not be NULL");
	if (!out)
		return err_set(&db->err, WEFT_EINVAL, "weft_db_append: out must not be NULL");
	if (db->readonly)
		return err_set(&db->err, WEFT_EPERM, "the store was opened read-only; reopen it without WEFT_OPEN_READONLY to append");
	if (idem_key && !idem_key[0])
		idem_key = NULL;

	int rc = store_begin(db);
	if (rc < 0)
		return rc;
	if (idem_key && codec_name_ok(scope, WEFT_SCOPE_MAX)) {
		int found;
		if ((rc = lookup_idem(db, scope, idem_key, out, &found)) < 0)
			goto fail;
		if (found) {
			store_rollback(db);
			return WEFT_DUPLICATE;
		}
	}
	uint64_t seq, last;
	weft_id prev;
	int64_t dv;
	if ((rc = own_head(db, &seq, &prev, &dv)) < 0)
		goto fail;
	if (db->hlc_valid && dv == db->hlc_dv) {
		last = db->hlc_last;
	} else {
		if ((rc = store_hlc_get(db, &last)) < 0)
			goto fail;
		db->hlc_valid = 1;
		db->hlc_dv = dv;
		db->hlc_last = last;
	}
	event_fields f = {
		.seq = seq + 1,
		.prev = seq ? &prev : NULL,
		.hlc = hlc_next(last, store_wall_ms(db)),
		.scope = scope,
		.kind = kind,
		.idem = idem_key,
		.payload = payload,
		.payload_len = payload_len,
	};
	/* Sealed now, signed after the commit (core/signer.h), unless too
	 * many wait already. */
	int sealed = signer_room(db);
	struct weft_event *ev;
	if ((rc = sealed ? codec_event_build_unsigned(&ev, &f, db->id.pk, db->max_payload, &db->err)
	                 : codec_event_build(&ev, &f, db->id.sk, db->max_payload, &db->err)) < 0)
		goto fail;
	if (sealed) {
		identity_seal(&db->id, ev->id.bytes, ev->sig);
		ev->sealed = 1;
	}
	/* Built on the head and the newest stamp just read: unless this
	 * device's chain is forked, nothing stored can collide with it. */
	weft_ingest_status status;
	rc = store_insert_event(db, ev, !db->own_forked, &status);
	if (rc == 0 && db->self_ref < 0)
		rc = self_ref(db);
	if (rc == 0) {
		*out = ev->id;
		/* The new head; a failed commit rolls back and clears it. */
		db->own_valid = 1;
		db->own_seq = f.seq;
		db->own_id = ev->id; /* own_n: set by store_insert_event */
	}
	unsigned char seal[IDENTITY_SEAL_BYTES];
	if (sealed)
		memcpy(seal, ev->sig, sizeof(seal));
	codec_event_free(ev);
	if (rc < 0)
		goto fail;
	int64_t n = db->n_next - 1; /* its row */
	if ((rc = store_commit_events(db)) < 0)
		return rc;
	if (sealed)
		signer_push(db, n, out, seal);
	return rc;
fail:
	store_rollback(db);
	return rc;
}

/* ingest: core/ingest.c */

/* ------------------------------------------------------------------ read */

int weft_db_get(weft_event **out, weft_db *db, const weft_id *id)
{
	if (!db)
		return err_set(NULL, WEFT_EINVAL, "weft_db_get: db must not be NULL");
	if (!out || !id)
		return err_set(&db->err, WEFT_EINVAL, "weft_db_get: out and id must not be NULL");
	return store_get_event(out, db, id->bytes, NULL);
}

struct weft_iter {
	weft_db *db;
	sqlite3_stmt *st;
	struct weft_event *cur;
};

int weft_db_iter(weft_iter **out, weft_db *db, const weft_iter_options *opts)
{
	static const weft_iter_options defaults = WEFT_ITER_OPTIONS_INIT;
	if (!db)
		return err_set(NULL, WEFT_EINVAL, "weft_db_iter: db must not be NULL");
	if (!out)
		return err_set(&db->err, WEFT_EINVAL, "weft_db_iter: out must not be NULL");
	*out = NULL;
	if (!opts)
		opts = &defaults;
	if (opts->version != WEFT_ITER_OPTIONS_VERSION)
		return err_set(&db->err, WEFT_EVERSION, "weft_iter_options version %u is not supported; use WEFT_ITER_OPTIONS_INIT",
		               opts->version);
	weft_iter *it = weft__calloc(1, sizeof(*it));
	if (!it)
		return err_set(&db->err, WEFT_ENOMEM, "out of memory starting an iteration");
	it->db = db;
	int rc = sqlite3_prepare_v2(db->sql,
		"SELECT " STORE_EVENT_COLUMNS STORE_EVENT_FROM
		"WHERE e.hlc >= ?1 AND (?2 = 0 OR e.hlc < ?2) AND (?3 IS NULL OR s.name = ?3) "
		"ORDER BY e.hlc, weft_id(e.n)", -1, &it->st, NULL); /* ties sorted by SQLite */
	if (rc != SQLITE_OK) {
		weft__free(it);
		return store_sqlite_error(db, rc, "starting an iteration");
	}
	sqlite3_bind_int64(it->st, 1, (sqlite3_int64)(opts->from_hlc > EVENT_HLC_MAX ? EVENT_HLC_MAX : opts->from_hlc));
	sqlite3_bind_int64(it->st, 2, (sqlite3_int64)(opts->to_hlc > EVENT_HLC_MAX ? EVENT_HLC_MAX : opts->to_hlc));
	if (opts->scope)
		sqlite3_bind_text(it->st, 3, opts->scope, -1, SQLITE_TRANSIENT);
	*out = it;
	return WEFT_OK;
}

int weft_iter_next(const weft_event **ev, weft_iter *it)
{
	if (!ev || !it)
		return err_set(NULL, WEFT_EINVAL, "weft_iter_next: NULL argument");
	codec_event_free(it->cur);
	it->cur = NULL;
	*ev = NULL;
	int rc = sqlite3_step(it->st);
	if (rc == SQLITE_DONE)
		return WEFT_ITEROVER;
	if (rc != SQLITE_ROW)
		return store_sqlite_error(it->db, rc, "reading events");
	if ((rc = store_row_event(&it->cur, it->db, it->st)) < 0) {
		codec_event_free(it->cur);
		it->cur = NULL;
		return rc;
	}
	*ev = it->cur;
	return WEFT_OK;
}

void weft_iter_free(weft_iter *it)
{
	if (!it)
		return;
	codec_event_free(it->cur);
	sqlite3_finalize(it->st);
	weft__free(it);
}

static int query_u64(weft_db *db, const char *sql, uint64_t *out)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db->sql, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return store_sqlite_error(db, rc, "counting");
	sqlite3_bind_int64(st, 1, db->self_ref);
	rc = sqlite3_step(st);
	*out = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
	sqlite3_finalize(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, "counting");
}

int weft_db_stats_get(weft_db_stats *out, weft_db *db)
{
	if (!db || !out)
		return err_set(db ? &db->err : NULL, WEFT_EINVAL, "weft_db_stats_get: NULL argument");
	memset(out, 0, sizeof(*out));
	int rc;
	if ((rc = query_u64(db, "SELECT count(*) FROM weft_event WHERE ?1 = ?1", &out->events)) < 0 ||
	    (rc = query_u64(db, "SELECT CASE WHEN (SELECT forked FROM weft_author WHERE ref = ?1) "
	                        "THEN (SELECT count(*) FROM weft_fork WHERE author = ?1) "
	                        "ELSE (SELECT coalesce(sum(" STORE_RUN_HI("c") " - c.lo + 1), 0) "
	                        "FROM weft_chain c WHERE c.author = ?1) END",
	                    &out->own_events)) < 0 ||
	    (rc = query_u64(db, "SELECT count(*) FROM weft_author WHERE ?1 = ?1", &out->authors)) < 0 ||
	    (rc = query_u64(db, "SELECT count(*) FROM weft_author WHERE forked AND ?1 = ?1", &out->forked_authors)) < 0)
		return rc;
	return store_hlc_get(db, &out->hlc);
}

int weft_db_heads(weft_db *db, weft_head_cb cb, void *payload)
{
	if (!db || !cb)
		return err_set(db ? &db->err : NULL, WEFT_EINVAL, "weft_db_heads: NULL argument");
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db->sql,
		"SELECT a.pk, " STORE_RUN_HI("c") ", weft_id(" STORE_RUN_HI_N("c") "), a.forked FROM weft_author a "
		"JOIN weft_chain c ON c.author = a.ref AND c.lo = (SELECT max(lo) FROM weft_chain WHERE author = a.ref) "
		"ORDER BY a.pk", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return store_sqlite_error(db, rc, "reading heads");
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		weft_id id;
		if (sqlite3_column_bytes(st, 0) != 32 || sqlite3_column_bytes(st, 2) != 32) {
			sqlite3_finalize(st);
			return err_set(&db->err, WEFT_ECORRUPT, "malformed author or event id in the store; run `weft verify`");
		}
		memcpy(id.bytes, sqlite3_column_blob(st, 2), 32);
		if (cb(sqlite3_column_blob(st, 0), (uint64_t)sqlite3_column_int64(st, 1), &id,
		       sqlite3_column_int(st, 3), payload)) {
			sqlite3_finalize(st);
			return err_set(&db->err, WEFT_EUSER, "stopped by the heads callback");
		}
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, "reading heads");
}
