/*
 * weft.h — the public API of weft, a local-first sync engine.
 *
 * A weft store is one SQLite database per device holding an append-only log
 * of Ed25519-signed, hash-chained events. Own events are appended with
 * weft_db_append(); events from other devices are checked and stored with
 * weft_db_ingest().
 *
 * Conventions (the same everywhere in this header):
 *  - Functions that can fail return int: WEFT_OK (0) or a negative WEFT_E*
 *    code. A few return a positive status on success (WEFT_DUPLICATE); test
 *    for failure with `rc < 0`.
 *  - After a failure, weft_errmsg(db) (or weft_error_last() where no handle
 *    exists yet) says what happened and what to do. The string is never NULL,
 *    belongs to the library and stays valid until the next call on the same
 *    handle (or thread).
 *  - Output parameters come first. What comes back through `**out` belongs
 *    to the caller and is freed with the matching weft_<object>_free();
 *    getters return borrowed pointers valid while the object lives. Every
 *    free/close accepts NULL.
 *  - A weft_db handle may be used by one thread at a time. Open one handle
 *    per thread to work in parallel; SQLite's WAL mode lets them share the
 *    database file safely.
 */
#ifndef WEFT_H
#define WEFT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(WEFT_STATIC)
#define WEFT_EXTERN
#elif defined(__GNUC__)
#define WEFT_EXTERN __attribute__((visibility("default")))
#else
#define WEFT_EXTERN
#endif

/* ---------------------------------------------------------------- version */

#define WEFT_VERSION_MAJOR 0
#define WEFT_VERSION_MINOR 1
#define WEFT_VERSION_PATCH 0
#define WEFT_VERSION_STRING "0.1.0"
/* MAJOR * 10000 + MINOR * 100 + PATCH */
#define WEFT_VERSION_NUMBER 100

/* The library's version, to compare with WEFT_VERSION_* at run time. */
WEFT_EXTERN const char *weft_version(void);
WEFT_EXTERN int weft_version_number(void);

/* ----------------------------------------------------------------- errors */

#define WEFT_OK 0
/* Success, but nothing new: the event or idempotency key was already known. */
#define WEFT_DUPLICATE 1

#define WEFT_ERROR (-1)     /* unexpected failure; see weft_errmsg */
#define WEFT_ENOMEM (-2)    /* out of memory */
#define WEFT_EINVAL (-3)    /* a caller's argument is invalid */
#define WEFT_ENOTFOUND (-4) /* no such store, file, event or device */
#define WEFT_EEXISTS (-5)   /* refusing to overwrite something that exists */
#define WEFT_ECORRUPT (-6)  /* bytes are malformed, truncated or non-canonical */
#define WEFT_EAUTH (-7)     /* signature, id or passphrase check failed */
#define WEFT_EFUTURE (-8)   /* timestamp beyond the allowed clock drift */
#define WEFT_ELIMIT (-9)    /* a size limit was exceeded */
#define WEFT_EVERSION (-10) /* unsupported format, store or protocol version */
#define WEFT_EBUSY (-11)    /* the store is locked by another writer */
#define WEFT_EIO (-12)      /* the operating system failed to read or write */
#define WEFT_EPERM (-13)    /* permission denied (file mode, scope) */
#define WEFT_EPROTO (-14)   /* a peer broke the sync protocol */
#define WEFT_EUSER (-15)    /* a callback asked to stop */
#define WEFT_ITEROVER (-16) /* an iterator has no more items (not a failure) */
#define WEFT_ETIMEOUT (-17) /* a network peer did not answer in time */

/* Generic text for a code ("signature or id check failed"); never NULL. */
WEFT_EXTERN const char *weft_strerror(int code);
/* The symbolic name of a code ("WEFT_EAUTH"); never NULL. */
WEFT_EXTERN const char *weft_errname(int code);
/* The message of the last failure on this thread; never NULL. */
WEFT_EXTERN const char *weft_error_last(void);

/* ------------------------------------------------------------- constants */

#define WEFT_ID_BYTES 32          /* event id: BLAKE2b-256 */
#define WEFT_PUBLIC_KEY_BYTES 32  /* Ed25519 public key */
#define WEFT_SECRET_KEY_BYTES 32  /* Ed25519 seed, as kept in a keychain */
#define WEFT_SIGNATURE_BYTES 64   /* Ed25519 signature */
#define WEFT_DEVICE_ID_LEN 63     /* printable device id, without the NUL */
#define WEFT_SCOPE_MAX 64         /* bytes in a scope name */
#define WEFT_KIND_MAX 64          /* bytes in an event kind */
#define WEFT_IDEM_KEY_MAX 128     /* bytes in an idempotency key */
#define WEFT_PAYLOAD_DEFAULT_MAX (1u << 20) /* default payload limit: 1 MiB */
#define WEFT_PAYLOAD_HARD_MAX (64u << 20)   /* no configuration goes beyond */
#define WEFT_DRIFT_DEFAULT_MS 300000u       /* 5 minutes */

/* The same constants as functions, for bindings. */
WEFT_EXTERN size_t weft_id_bytes(void);
WEFT_EXTERN size_t weft_public_key_bytes(void);
WEFT_EXTERN size_t weft_secret_key_bytes(void);
WEFT_EXTERN size_t weft_signature_bytes(void);
WEFT_EXTERN size_t weft_device_id_len(void);
WEFT_EXTERN size_t weft_scope_max(void);
WEFT_EXTERN size_t weft_kind_max(void);
WEFT_EXTERN size_t weft_idem_key_max(void);
WEFT_EXTERN size_t weft_payload_default_max(void);

/* An event id. */
typedef struct weft_id {
	unsigned char bytes[WEFT_ID_BYTES];
} weft_id;

/* Lowercase hex of an id into out (65 bytes with the NUL). Returns out. */
WEFT_EXTERN char *weft_id_to_hex(char out[2 * WEFT_ID_BYTES + 1],
                                 const weft_id *id);
/* Parses 64 hex digits. WEFT_EINVAL if text is anything else. */
WEFT_EXTERN int weft_id_from_hex(weft_id *out, const char *text);

/* ------------------------------------------------------------ device ids */

/*
 * A device id is the person-facing form of a device's Ed25519 public key:
 * base32 (RFC 4648 alphabet) with one Luhn mod-32 check character after
 * every 13, shown in 8 groups of 7 joined by '-' (like Syncthing's).
 * Parsing ignores case, spaces and dashes and reads 0/1/8 as O/I/B, so ids
 * read aloud or retyped still parse; a wrong check character is refused.
 */
WEFT_EXTERN int weft_device_id_format(char out[WEFT_DEVICE_ID_LEN + 1],
                                      const unsigned char pk[WEFT_PUBLIC_KEY_BYTES]);
/* WEFT_EINVAL with a message naming the bad group if text is not a valid id. */
WEFT_EXTERN int weft_device_id_parse(unsigned char pk[WEFT_PUBLIC_KEY_BYTES],
                                     const char *text);

/* ------------------------------------------------------------------ store */

typedef struct weft_db weft_db;

/* Returns the wall clock in milliseconds since the Unix epoch. */
typedef uint64_t (*weft_clock_fn)(void *payload);

#define WEFT_OPEN_CREATE 0x1u   /* create the store and a new identity if absent */
#define WEFT_OPEN_READONLY 0x2u /* open for reading only; no key needed */

typedef struct weft_open_options {
	unsigned version; /* WEFT_OPEN_OPTIONS_VERSION */
	unsigned flags;   /* WEFT_OPEN_* */
	/* Key file of the device identity; NULL means "<db path>.key". */
	const char *key_path;
	/* Passphrase protecting the key file (NULL: none). With
	 * WEFT_OPEN_CREATE it encrypts the new key file. */
	const char *passphrase;
	/* Instead of a key file, the device's 32-byte Ed25519 seed (for
	 * example from the OS keychain). Copied; the caller may wipe it after
	 * the call. */
	const unsigned char *secret_key;
	/* Largest payload accepted, appended or ingested (0: 1 MiB).
	 * At most WEFT_PAYLOAD_HARD_MAX. */
	uint32_t max_payload;
	/* How far in the future a remote timestamp may be (0: 5 minutes). */
	uint64_t max_drift_ms;
	/* Wall clock override (tests, simulators); NULL: the system clock. */
	weft_clock_fn clock;
	void *clock_payload;
} weft_open_options;

#define WEFT_OPEN_OPTIONS_VERSION 1
#define WEFT_OPEN_OPTIONS_INIT {WEFT_OPEN_OPTIONS_VERSION, 0, NULL, NULL, NULL, 0, 0, NULL, NULL}

/*
 * Opens the store at path. With WEFT_OPEN_CREATE a missing store is created
 * together with a new device identity (key file mode 0600, or the
 * secret_key given). opts may be NULL for defaults.
 *
 * Errors: WEFT_ENOTFOUND (no store and no WEFT_OPEN_CREATE, or no key
 * file), WEFT_EPERM (key file readable by others), WEFT_EAUTH (wrong or
 * missing passphrase, or the key does not belong to this store),
 * WEFT_EVERSION (store written by a newer weft, or a store of weft 0.1
 * opened read-only: older stores are upgraded in place, in one
 * transaction, the first time they are opened read-write), WEFT_ECORRUPT, WEFT_EIO,
 * WEFT_EBUSY, WEFT_EINVAL. On failure *out is NULL and weft_error_last()
 * holds the message.
 *
 * Memory: a handle that reads or stores events keeps a cache of event ids
 * of up to 2.5 MiB (the store keeps only 6 bytes of each id and re-derives
 * the rest; docs/FORMAT.md section 5), freed by weft_db_close.
 *
 * Threads: a read-write handle that appends starts one thread of its own,
 * which signs its events after their commit (weft_db_append); it polls
 * for 2 ms after its last event, then sleeps until the next one.
 * weft_db_close stops it. A read-write open first signs this device's
 * events that a crash left unsigned.
 */
WEFT_EXTERN int weft_db_open(weft_db **out, const char *path,
                             const weft_open_options *opts);
/* Closes the store. Everything reported written is already durable; the
 * signatures of the last events appended (weft_db_append) are written
 * first. */
WEFT_EXTERN void weft_db_close(weft_db *db);

/* The message of the last failure on this handle; never NULL. */
WEFT_EXTERN const char *weft_errmsg(const weft_db *db);

/* This device's public key and printable id (borrowed, valid while open). */
WEFT_EXTERN const unsigned char *weft_db_public_key(const weft_db *db);
WEFT_EXTERN const char *weft_db_device_id(const weft_db *db);

/*
 * Appends an own event: stamps it with the hybrid logical clock, links it
 * to this device's previous event and commits it durably
 * (synchronous=FULL) before returning. Its id is final then; its Ed25519
 * signature (a function of the id and the key alone) is computed by the
 * handle's signing thread after the commit and written with the handle's
 * next write transaction or when it closes, so the disk wait and the
 * signing overlap. Until then the row holds a seal only this device can
 * make (docs/FORMAT.md section 5): a handle with the device key that reads
 * the event signs it on the spot, so peers and weft_event_bytes always see
 * a signed event; a read-only handle gets the event without its encoding
 * (weft_event_bytes returns NULL; retry after the writer's next write). A
 * crash loses no event: the next read-write open signs what was left. With
 * 64 events of the handle waiting, an append signs before it commits.
 *
 * scope and kind: 1..64 bytes of [A-Za-z0-9._:/-]. idem_key: NULL, or
 * 1..128 printable ASCII bytes; if an event in the same scope already
 * carries it (written here or received from any device), nothing is
 * written, *out receives that earlier event's id and WEFT_DUPLICATE is
 * returned.
 *
 * Returns WEFT_OK or WEFT_DUPLICATE; errors: WEFT_EINVAL, WEFT_ELIMIT
 * (payload over the limit), WEFT_EPERM (store opened read-only), WEFT_EBUSY,
 * WEFT_EIO.
 */
WEFT_EXTERN int weft_db_append(weft_id *out, weft_db *db, const char *scope,
                               const char *kind, const char *idem_key,
                               const void *payload, size_t payload_len);

/* What weft_db_ingest did with one event. */
typedef enum weft_ingest_status {
	WEFT_INGEST_NEW = 0,       /* verified and stored */
	WEFT_INGEST_DUPLICATE = 1, /* already stored: nothing changed */
	WEFT_INGEST_FORK = 2       /* stored as evidence: its author forked */
} weft_ingest_status;

/*
 * Verifies and stores one encoded event from another store. The id and
 * signature are checked, the timestamp must not be more than the drift bound
 * ahead of the local clock (and then does not move it). Two events of one
 * author with the same sequence number are both kept and the author is
 * flagged as forked (status WEFT_INGEST_FORK).
 *
 * Errors: WEFT_ECORRUPT / WEFT_ELIMIT / WEFT_EVERSION (bad encoding),
 * WEFT_EAUTH (id or signature wrong), WEFT_EFUTURE, WEFT_EBUSY, WEFT_EIO.
 * Nothing is stored on error.
 */
WEFT_EXTERN int weft_db_ingest(weft_ingest_status *status, weft_db *db,
                               const void *bytes, size_t len);

/* One encoded event in a batch. */
typedef struct weft_bytes {
	const void *data;
	size_t len;
} weft_bytes;

/*
 * Ingests n events in one transaction. Each event is checked on its own: a
 * bad event is refused alone (its result[i] is its negative error code) and
 * the valid ones are committed together. result[i] otherwise holds a
 * weft_ingest_status. Returns WEFT_OK when the transaction committed (even
 * if some events were refused; weft_errmsg names the first refused one), or
 * an error if nothing could be committed (then no result[i] is NEW).
 */
WEFT_EXTERN int weft_db_ingest_batch(int *result, weft_db *db,
                                     const weft_bytes *events, size_t n);

/* ---------------------------------------------------------------- events */

typedef struct weft_event weft_event;

/* Reads the event with this id. WEFT_ENOTFOUND if the store lacks it. */
WEFT_EXTERN int weft_db_get(weft_event **out, weft_db *db, const weft_id *id);
WEFT_EXTERN void weft_event_free(weft_event *ev);

/*
 * Decodes and checks one encoded event without any store: structure,
 * limits (max_payload 0 means 1 MiB), payload hash, id and signature.
 * Same errors as weft_db_ingest, minus the clock and store ones.
 */
WEFT_EXTERN int weft_event_decode(weft_event **out, const void *bytes,
                                  size_t len, uint32_t max_payload);

/* Borrowed views of an event's fields. */
WEFT_EXTERN const weft_id *weft_event_id(const weft_event *ev);
WEFT_EXTERN const unsigned char *weft_event_author(const weft_event *ev);
WEFT_EXTERN uint64_t weft_event_seq(const weft_event *ev);
/* The id of the author's previous event; NULL for the first (seq 1). */
WEFT_EXTERN const weft_id *weft_event_prev(const weft_event *ev);
/* Hybrid logical clock: milliseconds << 16 | counter. */
WEFT_EXTERN uint64_t weft_event_hlc(const weft_event *ev);
WEFT_EXTERN const char *weft_event_scope(const weft_event *ev);
WEFT_EXTERN const char *weft_event_kind(const weft_event *ev);
/* NULL when the event has no idempotency key. */
WEFT_EXTERN const char *weft_event_idem_key(const weft_event *ev);
/* The payload; NULL with *len = the declared length if it was erased. */
WEFT_EXTERN const void *weft_event_payload(const weft_event *ev, size_t *len);
/* The canonical encoding, as sent to peers. NULL (*len 0) for one of this
 * device's newest events read through a read-only handle before its writer
 * wrote its signature (weft_db_append). */
WEFT_EXTERN const void *weft_event_bytes(const weft_event *ev, size_t *len);

/* ------------------------------------------------------------- iteration */

typedef struct weft_iter weft_iter;

/*
 * Range of an iteration in (hlc, id) order — the order reconciliation
 * walks. from is inclusive, to exclusive; a zero `to_hlc` means no upper
 * bound. scope NULL means all scopes.
 */
typedef struct weft_iter_options {
	unsigned version; /* WEFT_ITER_OPTIONS_VERSION */
	uint64_t from_hlc;
	uint64_t to_hlc;
	const char *scope;
} weft_iter_options;

#define WEFT_ITER_OPTIONS_VERSION 1
#define WEFT_ITER_OPTIONS_INIT {WEFT_ITER_OPTIONS_VERSION, 0, 0, NULL}

WEFT_EXTERN int weft_db_iter(weft_iter **out, weft_db *db,
                             const weft_iter_options *opts);
/* *ev is borrowed until the next call; returns WEFT_ITEROVER at the end. */
WEFT_EXTERN int weft_iter_next(const weft_event **ev, weft_iter *it);
WEFT_EXTERN void weft_iter_free(weft_iter *it);

/* Counts of what the store holds. */
typedef struct weft_db_stats {
	uint64_t events;        /* stored events, own and remote */
	uint64_t own_events;    /* events this device wrote */
	uint64_t authors;       /* distinct authors */
	uint64_t forked_authors;/* authors seen with two events at one sequence */
	uint64_t hlc;           /* the clock's last issued or observed value */
} weft_db_stats;

WEFT_EXTERN int weft_db_stats_get(weft_db_stats *out, weft_db *db);

/* The latest event of each author, by sequence number. */
typedef int (*weft_head_cb)(const unsigned char author[WEFT_PUBLIC_KEY_BYTES],
                            uint64_t seq, const weft_id *id, int forked,
                            void *payload);
/* Calls cb for each author; a non-zero return stops with WEFT_EUSER. */
WEFT_EXTERN int weft_db_heads(weft_db *db, weft_head_cb cb, void *payload);

/* ---------------------------------------------------------------- verify */

typedef struct weft_verify_report {
	uint64_t checked;     /* events checked */
	uint64_t bad;         /* events whose id, signature or payload is wrong, or whose id can no
	                         longer be re-derived (the store keeps only an id's first 6 bytes and
	                         re-derives the rest from the event and the one before it, so a damaged
	                         event also makes up to 31 of its author's next events unreadable) */
	uint64_t broken_links;/* validly signed events whose prev disagrees with the author's stored
	                         previous event: fork evidence (not damage), kept */
	uint64_t forks;       /* (author, seq) pairs holding more than one event */
	weft_id first_bad;    /* the first bad event, if bad > 0: its id, or when it no longer hashes
	                         to one, the 6 bytes the store keeps followed by zeros */
	uint64_t unsigned_own;/* read-only handles: this device's events stored but not signed yet
	                         (weft_db_append signs after the commit; a crash can leave the last
	                         few so until the next read-write open signs them). Their ids are
	                         checked; their signatures cannot be without the device key. Not bad. */
} weft_verify_report;

/* Progress: done of total events; return non-zero to stop (WEFT_EUSER). */
typedef int (*weft_progress_cb)(uint64_t done, uint64_t total, void *payload);

/*
 * Re-checks every stored event's id, signature and payload hash and every
 * chain link, and counts forks (two events at one sequence number, or links
 * that disagree between validly signed events: evidence, not damage). Returns WEFT_OK when all is well,
 * WEFT_ECORRUPT when anything is bad (weft_errmsg names the first bad event
 * and what is wrong with it), or another error if the check could not run.
 * report may be NULL; cb may be NULL.
 */
WEFT_EXTERN int weft_db_verify(weft_verify_report *report, weft_db *db,
                               weft_progress_cb cb, void *payload);


/* -------------------------------------------------------- derived tables */

/*
 * Apps declare tables with SQL DDL and write rows through weft
 * transactions; weft keeps them as ordinary SQLite tables in the same
 * database, which any SQLite client may read (writes from elsewhere are
 * refused). Every device that has seen the same events holds identical
 * tables; docs/MERGE.md gives the rules.
 */

/*
 * Declares the complete schema: one or more CREATE TABLE statements in a
 * checked subset of SQL (column types INTEGER, REAL, TEXT, BLOB; column
 * constraints PRIMARY KEY (exactly one per table, INTEGER/TEXT/BLOB), UNIQUE,
 * NOT NULL, DEFAULT literal). A declaration identical to the current one is
 * a no-op; otherwise it becomes a new schema version and every derived
 * table is re-derived from the log (values already in the log for new
 * columns and tables appear). Tables left out are dropped (their data stays
 * in the log). WEFT_EINVAL with the line and the offending word for
 * anything outside the subset.
 */
WEFT_EXTERN int weft_schema_define(weft_db *db, const char *ddl);
/* The current schema version (0: none) and its DDL (borrowed, may be NULL). */
WEFT_EXTERN int weft_schema_version(int *version, const char **ddl, weft_db *db);

/* A value of one of SQLite's storage classes. */
typedef enum weft_type {
	WEFT_NULL = 0,
	WEFT_INTEGER = 1,
	WEFT_REAL = 2,
	WEFT_TEXT = 3,
	WEFT_BLOB = 4
} weft_type;

typedef struct weft_value {
	weft_type type;
	int64_t i;     /* WEFT_INTEGER */
	double r;      /* WEFT_REAL (NaN is refused) */
	const void *p; /* WEFT_TEXT (UTF-8, no NUL needed) / WEFT_BLOB */
	size_t n;      /* bytes at p */
} weft_value;

/* Value constructors; text and blob point at the caller's bytes. */
WEFT_EXTERN weft_value weft_null(void);
WEFT_EXTERN weft_value weft_int(int64_t i);
WEFT_EXTERN weft_value weft_real(double r);
WEFT_EXTERN weft_value weft_text(const char *s);
WEFT_EXTERN weft_value weft_textn(const char *s, size_t n);
WEFT_EXTERN weft_value weft_blob(const void *p, size_t n);

typedef struct weft_txn weft_txn;

/*
 * Starts a weft transaction: any number of row operations that commit as
 * one signed event in scope, applied atomically. idem_key (NULL: none)
 * makes the operation take effect once: if an event in the same scope
 * already carries the key — from this device or any other — commit writes
 * nothing and returns WEFT_DUPLICATE; if two devices used it offline, only
 * the earliest event by (HLC, id) takes effect everywhere.
 * Nothing touches the store until weft_txn_commit.
 */
WEFT_EXTERN int weft_txn_begin(weft_txn **out, weft_db *db, const char *scope,
                               const char *idem_key);
/* Sets one column of the row with primary key pk (creating the row). */
WEFT_EXTERN int weft_txn_set(weft_txn *t, const char *table, weft_value pk,
                             const char *column, weft_value value);
/* Deletes the row; a later write revives it with only the newer columns. */
WEFT_EXTERN int weft_txn_delete(weft_txn *t, const char *table, weft_value pk);
/* Adds delta to an INTEGER column, merged as a sum across devices. */
WEFT_EXTERN int weft_txn_incr(weft_txn *t, const char *table, weft_value pk,
                              const char *column, int64_t delta);
/*
 * Signs and appends the event, applies it to the tables, and frees t (also
 * on failure). out (may be NULL) receives the event id, or for
 * WEFT_DUPLICATE the earlier event's id. Errors: those of weft_db_append.
 * Operation errors (unknown table or column, wrong type, NULL in a NOT NULL
 * column) are reported by the weft_txn_* call that made them.
 */
WEFT_EXTERN int weft_txn_commit(weft_id *out, weft_txn *t);
/* Discards the transaction and frees it. NULL is fine. */
WEFT_EXTERN void weft_txn_abort(weft_txn *t);

/*
 * Drops and re-derives every derived table from the log. The result is
 * identical to the incrementally maintained tables. cb (may be NULL) sees
 * progress over events.
 */
WEFT_EXTERN int weft_db_rebuild(weft_db *db, weft_progress_cb cb, void *payload);

/* A uniqueness conflict: loser_pk's row lost column's value to winner_pk. */
typedef struct weft_conflict {
	const char *table;
	const char *column;
	weft_value value;
	weft_value winner_pk;
	weft_value loser_pk;
	weft_id loser_event; /* the event whose write lost */
} weft_conflict;

typedef int (*weft_conflict_cb)(const weft_conflict *c, void *payload);
/* Calls cb for each current conflict (values borrowed for the call). The app
 * resolves one by writing new events (e.g. giving the loser another value). */
WEFT_EXTERN int weft_db_conflicts(weft_db *db, weft_conflict_cb cb, void *payload);

/* Events with an idempotency key that did not take effect (an earlier event in
 * the same scope carried the key). */
typedef int (*weft_duplicate_cb)(const weft_id *event, const weft_id *winner,
                                 const char *scope, const char *idem_key, void *payload);
WEFT_EXTERN int weft_db_duplicates(weft_db *db, weft_duplicate_cb cb, void *payload);

/* Who set a column's current value: one call per column of the row. For a
 * counter, event is the latest contributing write and contributions counts
 * the writes summed. */
typedef struct weft_blame {
	const char *column;
	weft_value value;
	weft_id event;
	const unsigned char *author; /* 32-byte public key */
	uint64_t hlc;
	uint64_t contributions;
} weft_blame;
typedef int (*weft_blame_cb)(const weft_blame *b, void *payload);
/* WEFT_ENOTFOUND if the row does not exist. */
WEFT_EXTERN int weft_db_blame(weft_db *db, const char *table, weft_value pk,
                              weft_blame_cb cb, void *payload);

/* A result row of weft_db_query; names and values borrowed for the call. */
typedef int (*weft_row_cb)(int ncols, const char *const *names, const weft_value *values,
                           void *payload);
/*
 * Runs one read-only SQL statement (SELECT, or a read-only PRAGMA) and calls
 * cb per row; a non-zero return stops with WEFT_EUSER. Statements that
 * would write are refused with WEFT_EPERM: derived tables change only
 * through weft transactions. SQL errors are WEFT_EINVAL with SQLite's text.
 */
WEFT_EXTERN int weft_db_query(weft_db *db, const char *sql, weft_row_cb cb, void *payload);

/* ------------------------------------------------------------ change feed */

typedef enum weft_change_op { WEFT_CHANGE_UPSERT = 1, WEFT_CHANGE_DELETE = 2 } weft_change_op;

/* One row change, borrowed until the next weft_feed_next. */
typedef struct weft_change {
	uint64_t seq;          /* position in the feed, for weft_feed_ack */
	const char *table;
	weft_value pk;
	weft_change_op op;
	const char *columns;   /* changed columns, comma-separated ("" for delete) */
	weft_id event;         /* the event that caused it (zero for rebuilds) */
} weft_change;

typedef struct weft_feed weft_feed;

/*
 * Opens the named consumer's feed (created at the current end of the feed
 * if new). Changes after its durable cursor are delivered in order;
 * weft_feed_ack makes the cursor durable. A consumer that crashes before
 * acking sees the same changes again; acked ones never come back.
 */
WEFT_EXTERN int weft_feed_open(weft_feed **out, weft_db *db, const char *name);
/* WEFT_ITEROVER when the consumer is up to date. */
WEFT_EXTERN int weft_feed_next(const weft_change **out, weft_feed *f);
/* Acknowledges everything up to and including seq. */
WEFT_EXTERN int weft_feed_ack(weft_feed *f, uint64_t seq);
WEFT_EXTERN void weft_feed_free(weft_feed *f);

/* Called after every commit that changed derived tables (local or remote),
 * for UI refresh. Runs on the committing thread; must not call into db. */
typedef void (*weft_commit_cb)(uint64_t changes, void *payload);
WEFT_EXTERN int weft_db_on_commit(weft_db *db, weft_commit_cb cb, void *payload);

/* ----------------------------------------------------------------- trust */

/*
 * The trust store: which devices may sync with this one, and what they may
 * do per scope. Unknown and removed devices are refused during the TLS
 * handshake, before any weft frame. Pairing: run `weft id` on both devices,
 * compare the ids out of band, then `weft trust add ID` on each side.
 */
#define WEFT_TRUST_READ 0x1u  /* the device may receive events of its scopes */
#define WEFT_TRUST_WRITE 0x2u /* the device may send events of its scopes */

/* Adds the entry for pk, or replaces its scopes and permissions (a TLS key
 * already pinned stays pinned: to accept a reinstalled device with a new
 * key, remove it first). scopes[0..n) limits it to those scopes; scopes
 * NULL means every scope. */
WEFT_EXTERN int weft_trust_add(weft_db *db, const unsigned char pk[WEFT_PUBLIC_KEY_BYTES],
                               const char *const *scopes, size_t n, unsigned perms);
/* Revokes a device: refused from its next connection on. WEFT_ENOTFOUND. */
WEFT_EXTERN int weft_trust_remove(weft_db *db, const unsigned char pk[WEFT_PUBLIC_KEY_BYTES]);

typedef struct weft_trust_entry {
	const unsigned char *pk; /* 32 bytes */
	const char *scopes;      /* comma-separated, or "*" for every scope */
	unsigned perms;          /* WEFT_TRUST_* */
	int tls_pinned;          /* its TLS key was seen and endorsed */
	unsigned char tls_key_hash[32];
} weft_trust_entry;

typedef int (*weft_trust_cb)(const weft_trust_entry *e, void *payload);
WEFT_EXTERN int weft_trust_list(weft_db *db, weft_trust_cb cb, void *payload);
/* The entry for one device (borrowed for the call), WEFT_ENOTFOUND if absent. */
WEFT_EXTERN int weft_trust_get(weft_db *db, const unsigned char pk[WEFT_PUBLIC_KEY_BYTES],
                               weft_trust_cb cb, void *payload);

/* ------------------------------------------------------------------ sync */

/*
 * A sync session reconciles this store with one peer over any ordered byte
 * stream (TLS, a pipe, an app's own transport). It is a pure state machine:
 * feed it the bytes that arrive, send what weft_session_output returns, and
 * pass the time in; it never touches sockets or clocks itself. Both sides
 * exchange exactly the events the other lacks (Negentropy reconciliation of
 * the scopes they share), in both directions, in bounded batches; each
 * received batch is verified and committed in one transaction, then
 * acknowledged. docs/PROTOCOL.md gives the frames.
 */
typedef struct weft_session weft_session;

typedef enum weft_role {
	WEFT_ROLE_CLIENT = 1, /* the side that connected: it drives reconciliation */
	WEFT_ROLE_SERVER = 2
} weft_role;

typedef enum weft_session_state {
	WEFT_SESSION_HANDSHAKE = 1, /* exchanging hellos */
	WEFT_SESSION_SYNCING = 2,   /* reconciling and moving events */
	WEFT_SESSION_DONE = 3,      /* both sides hold the same events (of shared scopes) */
	WEFT_SESSION_FAILED = 4     /* ended by an error; see weft_session_errmsg */
} weft_session_state;

/*
 * Decides what a peer may do (e.g. from a trust store). Called once, when
 * the peer's hello arrives, with its public key and the scopes it asks for
 * (all scopes when n == 0). Fill readable[i] / writable[i] (0 or 1) for
 * each scope of the union of the peer's request and our own scopes, listed in
 * scopes[0..n). Return WEFT_OK, or WEFT_EPERM to refuse the peer entirely.
 */
typedef int (*weft_authorize_fn)(const unsigned char peer[WEFT_PUBLIC_KEY_BYTES],
                                 const char *const *scopes, size_t n, int *readable,
                                 int *writable, void *payload);

typedef struct weft_session_options {
	unsigned version;            /* WEFT_SESSION_OPTIONS_VERSION */
	const char *const *scopes;   /* scopes to sync; NULL: all (the peer may narrow) */
	size_t nscopes;
	uint32_t max_frame;          /* largest frame accepted or sent (0: 1 MiB, or more so the largest
	                                event the store accepts fits; >= 64 KiB) */
	uint32_t batch_events;       /* events per batch (0: 2048) */
	uint64_t idle_timeout_ms;    /* fail when the peer is silent this long (0: 60 s) */
	weft_authorize_fn authorize; /* NULL: the peer may read and write every scope */
	void *authorize_payload;
} weft_session_options;

#define WEFT_SESSION_OPTIONS_VERSION 1
#define WEFT_SESSION_OPTIONS_INIT {WEFT_SESSION_OPTIONS_VERSION, NULL, 0, 0, 0, 0, NULL, NULL}

typedef struct weft_session_stats {
	uint64_t events_sent, events_received; /* new events the peer / we stored */
	uint64_t bytes_sent, bytes_received;
	uint64_t round_trips;       /* reconciliation messages answered */
	uint64_t reconcile_bytes;   /* reconciliation traffic, both ways */
	uint64_t events_to_fetch;   /* asked for, not yet received (progress) */
	uint64_t events_refused;    /* received events refused (invalid, not permitted) */
	int result;                 /* WEFT_OK when done, the error when failed, 1 while running */
} weft_session_stats;

/* Creates a session over db (which must outlive it). The client's hello is
 * ready in the output at once. opts may be NULL. */
WEFT_EXTERN int weft_session_new(weft_session **out, weft_db *db, weft_role role,
                                 const weft_session_options *opts);
/* Frees a session; events of batches it received whole but had not yet
 * stored are stored first (not acknowledged), as after a cut connection. */
WEFT_EXTERN void weft_session_free(weft_session *s);

/*
 * Feeds bytes received from the peer (any split). now_ms is a monotonic
 * clock for the idle timeout. Returns WEFT_OK, or the error that ended the
 * session (then an error frame for the peer waits in the output: send it
 * before closing). Errors: WEFT_EPROTO, WEFT_EVERSION, WEFT_ELIMIT,
 * WEFT_EAUTH/WEFT_EPERM (refused peer, scope or event), WEFT_EFUTURE, and
 * store errors. Committed events stay committed.
 */
WEFT_EXTERN int weft_session_feed(weft_session *s, const void *bytes, size_t len, uint64_t now_ms);
/* Pending output (borrowed, valid until the next call); *len 0 when none.
 * Received batches are checked on the store's verifier threads while the
 * session goes on; when there is nothing else to send, this call first
 * stores the oldest one held (waiting for its checks) and its
 * acknowledgement becomes the output. Check the state afterwards: storing
 * can fail the session (a refused event), like weft_session_feed. */
WEFT_EXTERN void weft_session_output(weft_session *s, const void **bytes, size_t *len);
/* Marks n bytes of the output as sent. */
WEFT_EXTERN void weft_session_consume(weft_session *s, size_t n);
/* Checks deadlines: fails with WEFT_ETIMEOUT (error frame in the output) when
 * for idle_timeout_ms the peer sent nothing and took none of our output
 * (weft_session_consume). Call it periodically. */
WEFT_EXTERN int weft_session_tick(weft_session *s, uint64_t now_ms);
WEFT_EXTERN weft_session_state weft_session_state_get(const weft_session *s);
WEFT_EXTERN void weft_session_stats_get(weft_session_stats *out, const weft_session *s);
/* The peer's public key once its hello arrived, else NULL. */
WEFT_EXTERN const unsigned char *weft_session_peer(const weft_session *s);
/* What ended the session ("" while it runs); never NULL. */
WEFT_EXTERN const char *weft_session_errmsg(const weft_session *s);

/*
 * Syncs two open stores in this process, both directions (a as client,
 * b as server). stats (may be NULL) receives a's view. Returns WEFT_OK when
 * both hold the same events of the shared scopes.
 */
WEFT_EXTERN int weft_sync_local(weft_session_stats *stats, weft_db *a, weft_db *b,
                                const weft_session_options *opts);

/* ------------------------------------------------------------- transport */

/*
 * A transport moves the bytes of a session. weft brings TLS over TCP
 * (weft_tls_transport_new); an app can bring its own (WebSocket,
 * Bluetooth) by filling this table. All calls but connect/accept/handshake
 * are non-blocking; wait blocks until the connection can make progress.
 * Failures return a negative WEFT_E* code with weft_error_last() set.
 */
typedef struct weft_transport {
	unsigned version; /* WEFT_TRANSPORT_VERSION */
	void *ctx;
	/* Client side: a connection to address ("host:port"), authenticated. */
	int (*connect)(void **conn, void *ctx, const char *address, uint64_t timeout_ms);
	/* Server side: the next incoming connection (handshake not yet done);
	 * WEFT_ETIMEOUT when none came in time. */
	int (*accept)(void **conn, void *ctx, uint64_t timeout_ms);
	/* Server side: authenticates an accepted connection (may be NULL). */
	int (*handshake)(void *conn, uint64_t timeout_ms);
	/* Sends up to len bytes; *sent may be 0 when the connection is busy.
	 * send and recv fail with WEFT_EAUTH until the peer is authenticated. */
	int (*send)(void *conn, const void *buf, size_t len, size_t *sent);
	/* Receives up to cap bytes; *got 0: nothing yet. WEFT_EIO once closed. */
	int (*recv)(void *conn, void *buf, size_t cap, size_t *got);
	/* Waits until readable (or writable too, with want_write 1; only
	 * writable, with WEFT_WAIT_WRITE_ONLY) or timeout (WEFT_ETIMEOUT). */
	int (*wait)(void *conn, int want_write, uint64_t timeout_ms);
	void (*close)(void *conn);
	/* The peer's authenticated device key, or NULL if not authenticated. */
	const unsigned char *(*peer)(void *conn);
} weft_transport;

#define WEFT_TRANSPORT_VERSION 1
/* weft_transport.wait: the caller will not read until it could write. */
#define WEFT_WAIT_WRITE_ONLY 2

typedef struct weft_tls_options {
	unsigned version;            /* WEFT_TLS_OPTIONS_VERSION */
	const char *listen;          /* "host:port" to accept on (port 0: any free); NULL: client only */
	uint64_t connect_timeout_ms; /* 0: 10 s */
	uint64_t handshake_timeout_ms; /* 0: 10 s */
	/* Called (from any thread) once per connection that fails to
	 * authenticate, on either side, with a sentence naming the device
	 * and what to do (e.g. the `weft trust add` to run); for logging. */
	void (*on_refused)(const char *message, void *payload);
	void *on_refused_payload;
} weft_tls_options;

#define WEFT_TLS_OPTIONS_VERSION 1
#define WEFT_TLS_OPTIONS_INIT {WEFT_TLS_OPTIONS_VERSION, NULL, 0, 0, NULL, NULL}

/*
 * TLS 1.2 over TCP with mbedTLS: ECDHE-ECDSA P-256, AEAD suites only,
 * extended master secret required, TCP_NODELAY. Each device's TLS key is
 * derived from its device key; its self-signed certificate names the
 * device. A peer is accepted only if it is in db's trust store (and, once
 * pinned, with the same TLS key); after the handshake both sides exchange
 * Ed25519 endorsements of their TLS key and of the TLS channel, so a
 * certificate cannot be replayed with another key. db is used (under a
 * lock) for trust lookups only and must outlive the transport.
 */
WEFT_EXTERN int weft_tls_transport_new(weft_transport **out, weft_db *db, const weft_tls_options *opts);
WEFT_EXTERN void weft_tls_transport_free(weft_transport *t);
/* The address actually listened on ("127.0.0.1:41234"), or NULL. */
WEFT_EXTERN const char *weft_tls_listen_address(const weft_transport *t);
/* SHA-256 of this device's TLS public key (SubjectPublicKeyInfo), to
 * compare out of band when pairing. */
WEFT_EXTERN int weft_tls_key_hash(unsigned char out[32], weft_db *db);

/* Progress of a running sync, for a UI. */
typedef void (*weft_sync_progress_fn)(const weft_session_stats *st, void *payload);

/*
 * Runs one session over a connection until both sides hold the same
 * events or it fails. Handshakes first when the transport has one; the
 * session's peer must be the device the transport authenticated. With
 * opts->authorize NULL the trust store decides (permissions per scope).
 * Returns WEFT_EPERM when scopes named in opts were not all granted by the
 * peer (the granted ones still synced). stats is zeroed on entry.
 * Closes nothing: the caller closes conn.
 */
WEFT_EXTERN int weft_sync_conn(weft_session_stats *stats, weft_db *db, const weft_transport *t, void *conn,
                               weft_role role, const weft_session_options *opts,
                               weft_sync_progress_fn progress, void *payload);

#ifdef __cplusplus
}
#endif

#endif /* WEFT_H */
