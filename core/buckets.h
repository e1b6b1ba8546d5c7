/*
 * Reconciliation buckets: per (scope, cell) the number of stored events and
 * the sum of their ids (256-bit little-endian, mod 2^256), cell = hlc >>
 * BUCKET_SHIFT. Negentropy fingerprints of any union of whole cells come
 * from these rows without reading the events (sync/neg_view.c).
 *
 * The table is derived data: store_insert_event() adds every stored event
 * in its transaction; a store without the table gets it built at open;
 * weft_db_verify() checks it and rebuilds it if it disagrees.
 */
#ifndef WEFT_CORE_BUCKETS_H
#define WEFT_CORE_BUCKETS_H

#include <stddef.h>
#include <stdint.h>

#include "weft.h"

/* A cell spans 2^26 stamp units: 1024 ms of wall clock. */
#define BUCKET_SHIFT 26

/* At open: registers the SQL helpers; creates and fills the table if the
 * store has none (writable stores only). */
int buckets_open(weft_db *db);
/*
 * Rows exist for the cells below a watermark (weft_meta "neg_watermark");
 * events of newer cells are read from the event index by the sessions, so
 * an event stamped now writes no bucket row. buckets_fold() (at the start
 * of a session) moves the watermark to the cell before the clock's and
 * adds the rows of the cells it passes. *w = the watermark (every cell
 * when none is recorded).
 */
int buckets_watermark(weft_db *db, uint64_t *w);
int buckets_fold(weft_db *db);
/* Inside the write transaction that stored the event. */
int buckets_add(weft_db *db, int64_t scope_ref, uint64_t hlc, const unsigned char id[32]);
/* Writes what buckets_add gathered in this transaction (store_commit_events
 * calls it before COMMIT). */
int buckets_flush(weft_db *db);
/* 1 if the store has the table (a read-only store of an older weft may
 * not), 0 if not, negative on error. */
int buckets_available(weft_db *db);

/*
 * Calls cb for every bucket of the given scopes (all when scopes is NULL),
 * ordered by cell; buckets of several scopes in one cell come one after
 * another (the caller adds them). A non-zero return from cb stops with it.
 */
typedef int (*bucket_cb)(void *payload, uint64_t cell, uint64_t count, const unsigned char sum[32]);
int buckets_scan(weft_db *db, const char *const *scopes, size_t n, bucket_cb cb, void *payload);

/* Recomputes the table from the events (own transaction unless one is
 * open). */
int buckets_rebuild(weft_db *db);
/* Compares the table with the events: *ok = 1 if they agree. */
int buckets_check(weft_db *db, int *ok);

/* For weft_db_verify: checks the table and rebuilds it if it disagrees
 * with the events (WEFT_ECORRUPT if it does and the store is read-only). */
int buckets_verify(weft_db *db);


#endif
