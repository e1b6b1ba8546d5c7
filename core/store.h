/*
 * The store: one SQLite database holding the event log (and, later, the
 * derived tables), plus the device identity and clock. Only core/ talks SQL.
 */
#ifndef WEFT_CORE_STORE_H
#define WEFT_CORE_STORE_H

#include <sqlite3.h>

#include "core/codec.h"
#include "core/error.h"
#include "core/identity.h"
#include "weft.h"

/* 3: ids re-derived (only their first 6 bytes kept), chains as runs.
 * 2: events by id prefix, interned kinds, per-row merge state, buckets
 * (migrated on open). Schema 1 was never released (development builds
 * before 0.1). */
#define STORE_SCHEMA_VERSION 4
/* Every STORE_PREV_EVERY-th event of a chain keeps its prev in full, so
 * re-deriving an id reads at most that many rows. */
#define STORE_PREV_EVERY 32
/* Ids re-derived, remembered by row number: enough for the rows a
 * reconciliation round reads in id order (random in time) to be derived
 * about once each (2.5 MiB per handle, allocated on first use). */
#define STORE_ID_CACHE 65536
/* Events just stored, remembered by id (a power of 2). */
#define STORE_RECENT 1024
#define STORE_APPLICATION_ID 0x77656674 /* "weft" */
#define STORE_STR_(x) #x
#define STORE_STR(x) STORE_STR_(x)

enum store_stmt {
	STMT_AUTHOR_REF,
	STMT_AUTHOR_INSERT,
	STMT_AUTHOR_FLAG_FORK,
	STMT_SCOPE_REF,
	STMT_SCOPE_INSERT,
	STMT_KIND_REF,
	STMT_KIND_INSERT,
	STMT_AUTHOR_FORKED,
	STMT_EVENT_BY_IDP,
	STMT_EVENT_AT_IDP,
	STMT_EVENT_ROW,
	STMT_SIG_SET,
	STMT_SEALED,
	STMT_NEXT_N,
	STMT_RUNS,
	STMT_RUN_SET,
	STMT_RUN_DEL,
	STMT_RUN_EXTEND,
	STMT_WAITING,
	STMT_FORK_NEAR,
	STMT_FORK_ADD,
	STMT_FORK_FILL,
	STMT_FORK_AT,
	STMT_EVENT_INSERT,
	STMT_EVENT_GET,
	STMT_EVENT_AFTER,
	STMT_IDEM_LOOKUP,
	STMT_OWN_HEAD,
	STMT_OWN_SETTLE,
	STMT_OWN_RUN_OPEN,
	STMT_DATA_VERSION,
	STMT_META_GET,
	STMT_META_SET,
	STMT_HLC_MAX,
	STMT_EFFECT_GET,
	STMT_EFFECT_SET,
	STMT_DUP_INSERT,
	STMT_DUP_MOVE,
	STMT_TOUCHED_GET,
	STMT_TOUCHED_ADD,
	STMT_TOUCHED_EVENT,
	STMT_BUCKET_ADD,
	STMT_BUCKET_MARK,
	STMT_BEGIN,
	STMT_COMMIT,
	STMT__COUNT
};

/* Distinct (scope, cell) bucket additions held per write transaction. */
#define STORE_BUCKET_PENDING 32
/* A remembered author key, scope or kind name and its reference. */
#define STORE_REF_CACHE 16
typedef struct store_ref_cache {
	int64_t ref; /* 0: empty */
	size_t len;
	unsigned char key[64]; /* longer keys are not remembered */
} store_ref_cache;

struct weft_db {
	sqlite3 *sql;
	char *path;
	identity id;
	int readonly;
	uint32_t max_payload;
	uint64_t max_drift_ms;
	weft_clock_fn clock;
	void *clock_payload;
	sqlite3_stmt *stmts[STMT__COUNT];
	int64_t self_ref; /* weft_author.ref of this device */
	/* This device's chain head, valid while PRAGMA data_version is own_dv
	 * (no other connection wrote since); store_rollback clears it. */
	int own_valid;
	int64_t own_dv;
	/* The newest stored stamp, valid while data_version is hlc_dv;
	 * store_insert_event raises it, store_rollback clears it. */
	int hlc_valid;
	int64_t hlc_dv;
	uint64_t hlc_last;
	store_ref_cache refs[3][STORE_REF_CACHE]; /* authors, scopes, kinds */
	unsigned refs_next[3];
	/* Ids derived or stored recently, by row (store_event_id); a row
	 * number may be reused after a rollback, which clears them. */
	struct store_id_slot {
		int64_t n; /* 0: empty */
		weft_id id;
	} *ids; /* STORE_ID_CACHE of them, or NULL */
	/* Whether recently seen authors have a fork, by reference. */
	struct {
		int64_t author; /* 0: empty */
		int forked;
	} forks[STORE_REF_CACHE];
	unsigned forks_next;
	/* Events stored recently, by their id's first bytes: where the next
	 * events' predecessors usually are (store_insert_event). */
	struct store_recent {
		int64_t n; /* 0: empty */
		int64_t author;
		uint64_t seq;
		weft_id id;
	} recent[STORE_RECENT];
	/* The next event's row number, read once per write transaction. */
	int n_valid;
	int64_t n_next;
	uint64_t own_seq;
	weft_id own_id;
	int64_t own_n;      /* the head's row */
	int64_t own_run_lo; /* the first seq of the head's run, 0: none */
	int own_run_open;   /* that run is open (weft_chain.open_n) */
	int own_settled;    /* store_settle_own ran in this transaction */
	int own_forked; /* this device's chain has a fork (with own_valid) */
	/* The reconciliation watermark, read once per write transaction
	 * (core/buckets.c); store_begin, store_commit and store_rollback
	 * clear it. */
	int mark_valid;
	uint64_t mark;
	/* Bucket additions of the current write transaction, written by
	 * buckets_flush before it commits (core/buckets.c). */
	struct store_bucket_add {
		int64_t scope;
		uint64_t cell, count;
		unsigned char sum[32];
	} bpend[STORE_BUCKET_PENDING];
	size_t nbpend;
	weft_err err;
	/* Derived tables (core/project.c). */
	struct schema *schema; /* current declared schema, or NULL */
	int schema_version;
	struct proj_cache *proj; /* prepared statements per declared table */
	int rebuilding;          /* rows are derived in batches of events */
	weft_id cur_event;       /* the event being applied, for the feed */
	uint64_t txn_changes;    /* rows changed in the open transaction */
	weft_commit_cb on_commit;
	void *on_commit_payload;
	struct signer *signer;    /* signs own events after their commit, or NULL */
	int signer_off;           /* none could be started: appends sign inline */
	struct ingest_pool *pool; /* verifier threads (core/ingest.c), or NULL */
	int pool_off;             /* none could be started: check inline */
};

/* A prepared, reset statement from the handle's cache. */
sqlite3_stmt *store_stmt(weft_db *db, enum store_stmt which);
/* Translates a SQLite failure into a WEFT_E* code with a message. */
int store_sqlite_error(weft_db *db, int rc, const char *doing);
/* Runs SQL without results. */
int store_exec(weft_db *db, const char *sql, const char *doing);

/* BEGIN IMMEDIATE / COMMIT / ROLLBACK. */
int store_begin(weft_db *db);
int store_commit(weft_db *db);
void store_rollback(weft_db *db);

/* A read transaction around many reads: one snapshot and one lock
 * instead of one per statement. Does nothing (*began = 0) inside a
 * transaction already; store_read_end(db, began) ends what it began. */
int store_read_begin(weft_db *db, int *began);
void store_read_end(weft_db *db, int began);

uint64_t store_wall_ms(weft_db *db);
/* The clock's last value: the newest stored stamp (inside a transaction,
 * for a consistent view). */
int store_hlc_get(weft_db *db, uint64_t *hlc);

/*
 * Inside a transaction: stores a decoded, verified event. Sets *status
 * to WEFT_INGEST_NEW, _DUPLICATE or _FORK. own_next says that ev is this
 * device's next event, built on the head and stamp read in this
 * transaction, on a chain with no fork: nothing stored can equal it or
 * share its sequence number, so those lookups are skipped.
 */
int store_insert_event(weft_db *db, const struct weft_event *ev, int own_next,
                       weft_ingest_status *status);
/* Commits a write transaction that stored events: first finishes derived
 * work (change feed) and writes the gathered bucket rows, then COMMIT,
 * then tells the commit callback. */
int store_commit_events(weft_db *db);

/*
 * Calls cb(payload, hlc, id) for every stored event with hlc_lo <= hlc <=
 * hlc_hi, in (hlc, id) order, whose scope is one of scopes[0..n) (all
 * scopes when scopes is NULL). A non-zero return from cb stops with that
 * value. STORE_HLC_ALL_LO/HI cover every stamp.
 */
#define STORE_HLC_ALL_LO 0
#define STORE_HLC_ALL_HI INT64_MAX /* stamps keep their top bit clear */
typedef int (*store_item_cb)(void *payload, uint64_t hlc, const unsigned char id[32]);
int store_scan_items(weft_db *db, const char *const *scopes, size_t n, uint64_t hlc_lo, uint64_t hlc_hi,
                     store_item_cb cb, void *payload);
/* The names of the scopes the store holds events of, sorted, in a new
 * array of new strings (weft__free each, then the array; *out is set even
 * on failure). WEFT_ELIMIT when there are more than max. */
int store_list_scopes(weft_db *db, char ***out, size_t *n, size_t max);
/* 1 if the event is stored, 0 if not, negative on error. */
int store_has_event(weft_db *db, const unsigned char id[32]);
/*
 * Event rows (core/db.c, docs/FORMAT.md section 5). A row keeps its id's
 * first 6 bytes (idp, big-endian, sign-extended) and not the id, which is
 * the hash of its header; prev is a blob (the id in full) or an integer
 * (the link: the distance back to the row of the event it names; every
 * STORE_PREV_EVERY-th event of a chain keeps the id). kind is interned
 * like scope; erased is NULL while the payload is present (its length and
 * hash are re-derived on read), then STORE_ERASED_BYTES: length, hash.
 */
#define STORE_ERASED_BYTES 36
void store_erased_put(unsigned char out[STORE_ERASED_BYTES], uint32_t len, const unsigned char hash[32]);
/* The id's first STORE_IDP_BYTES bytes as stored in weft_event.idp (a
 * signed integer that SQLite stores in as many bytes). */
#define STORE_IDP_BYTES 6
int64_t store_idp(const unsigned char id[32]);
/* The id of the event at row n, re-derived and checked against its idp
 * (WEFT_ECORRUPT if not); also the SQL function weft_id(n). */
int store_event_id(weft_db *db, int64_t n, weft_id *out);
/* A condition on weft_event e: its kind is the string literal k. */
#define STORE_EVENT_KIND_IS(k) "e.kind = (SELECT ref FROM weft_kind WHERE name = '" k "')"
/* Reads the event at the current row of a statement whose columns are
 * STORE_EVENT_COLUMNS (from STORE_EVENT_FROM), re-deriving its id and
 * encoding and checking the id against the row's idp. */
#define STORE_EVENT_COLUMNS                                                  \
	"e.idp, a.pk, e.seq, e.prev, e.hlc, s.name, k.name, e.idem, "         \
	"e.erased, e.sig, e.payload, e.author, e.n"
/*
 * The last run of this device's chain may be open (weft_chain.open_n): the
 * rows after open_n are this device's next events, so an append does not
 * rewrite the run. Its true end, as SQL over weft_chain row r.
 */
#define STORE_RUN_HI(r) r ".hi + coalesce((SELECT max(n) FROM weft_event) - " r ".open_n, 0)"
#define STORE_RUN_HI_N(r)                                                                    \
	"CASE WHEN " r ".open_n < (SELECT max(n) FROM weft_event) THEN (SELECT max(n) FROM weft_event) " \
	"ELSE " r ".hi_n END"
/* Closes this device's open run (before anything else is stored in the
 * transaction: other rows must not follow open_n). */
int store_settle_own(weft_db *db);
/* Their indexes. */
/* A seal is kept as 64 hexadecimal characters of TEXT where a signature
 * is a 64-byte BLOB: the row keeps its size when the signature replaces
 * it, and no signature can pass for a seal (core/signer.h). */
#define STORE_SEAL_HEX (2 * IDENTITY_SEAL_BYTES)
#define STORE_SEALED(st) (sqlite3_column_type((st), EC_SIG) == SQLITE_TEXT)
const char *store_seal_hex(char out[STORE_SEAL_HEX + 1], const unsigned char seal[IDENTITY_SEAL_BYTES]);
/* The seal of st's row (STORE_EVENT_COLUMNS); -1 if malformed. */
int store_seal_get(sqlite3_stmt *st, unsigned char seal[IDENTITY_SEAL_BYTES]);
enum { EC_IDP, EC_PK, EC_SEQ, EC_PREV, EC_HLC, EC_SCOPE, EC_KIND, EC_IDEM, EC_ERASED, EC_SIG, EC_PAYLOAD, EC_AUTHOR,
       EC_N };
#define STORE_EVENT_FROM                                                     \
	" FROM weft_event e LEFT JOIN weft_author a ON a.ref = e.author "     \
	"LEFT JOIN weft_scope s ON s.ref = e.scope "                          \
	"LEFT JOIN weft_kind k ON k.ref = e.kind "
int store_row_event(struct weft_event **out, weft_db *db, sqlite3_stmt *st);

/*
 * Where the last event read through it sits in time order, (hlc, n): the
 * next read tries the rows after it first. Zeroed: empty. Only a hint (a
 * row is taken only when its whole id matches), so it may outlive a
 * transaction.
 */
typedef struct store_read_hint {
	int valid;
	int64_t hlc, n;
	unsigned misses; /* tries in a row that missed */
	unsigned skip;   /* reads left that go straight to the id index */
} store_read_hint;
/* Rows after the hint tried before the id index. */
#define STORE_READ_AHEAD 4
/* After 2 misses in a row (ids not asked in time order), and after each
 * further miss until a hit, this many reads skip the try. */
#define STORE_READ_SKIP 32
/*
 * Reads and checks the event with this id (weft_db_get). With a hint, the
 * next STORE_READ_AHEAD rows after it in time order are tried first; the
 * hint moves to the event read. WEFT_ENOTFOUND when it is not stored.
 */
int store_get_event(struct weft_event **out, weft_db *db, const unsigned char id[32], store_read_hint *hint);

#endif
