/*
 * Ingest of remote events in two steps, so that a caller can store one
 * batch while the next is checked: ingest_submit() queues the checks
 * (decode, id, signature, clock drift) on the store's verifier threads;
 * ingest_finish() waits for them (checking on the calling thread too) and
 * stores the accepted events in one transaction, exactly as
 * weft_db_ingest_batch(). Jobs of one store finish in the order the caller
 * chooses; their checks read no store state, only their own bytes.
 */
#ifndef WEFT_CORE_INGEST_H
#define WEFT_CORE_INGEST_H

#include <stddef.h>

#include "weft.h"

typedef struct ingest_job ingest_job;
struct ingest_pool;

/* Copies the n events (their bytes) and starts checking them. */
int ingest_submit(ingest_job **out, weft_db *db, const weft_bytes *events, size_t n);
/* 1 once every event of the job has been checked (never blocks). */
int ingest_ready(ingest_job *j);
/* Number of events in the job. */
size_t ingest_count(const ingest_job *j);
/* The ids of the job's events (ingest_count entries), decoded from their
 * bytes but not checked: zero for bytes that do not decode. Safe while
 * the checks run. */
void ingest_job_ids(const ingest_job *j, weft_id *ids);
/*
 * Waits for the checks, then stores the accepted events in one
 * transaction: result[i] (ingest_count entries) as in
 * weft_db_ingest_batch(), and the same return value. Frees the job.
 */
int ingest_finish(ingest_job *j, int *result);
/* Drops a job, storing nothing. NULL is fine. */
void ingest_cancel(ingest_job *j);

/* Stops and frees a store's verifier threads (weft_db_close). */
void ingest_pool_free(struct ingest_pool *p);


#endif
