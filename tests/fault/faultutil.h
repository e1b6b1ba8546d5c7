/*
 * Helpers shared by the fault-injection tests: scratch stores built from
 * templates, the workloads that are interrupted, and the checks run after
 * every fault (the store reopens, SQLite's integrity check passes, every
 * event verifies, derived tables equal a rebuild).
 */
#ifndef WEFT_FAULTUTIL_H
#define WEFT_FAULTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "weft.h"

/* The fixed wall clock of every test store. */
#define FU_NOW_MS UINT64_C(1700000000000)
uint64_t fu_clock(void *payload);

/* A private directory for the process, removed at exit. */
const char *fu_dir(void);
/* dir/name in a rotating static buffer. */
const char *fu_path(const char *name);

/* Opens (creating) the store at path with the fixed clock and the device
 * key derived from seed_byte. NULL on failure (weft_error_last says why). */
weft_db *fu_open(const char *path, int seed_byte, int create);
/* Like fu_open, failing the test when the store does not open. */
weft_db *fu_open_ok(const char *path, int seed_byte);

/* Removes a store and its -wal/-shm/-journal files. */
void fu_remove(const char *path);
/* Copies a closed store (main file only: closed stores have no WAL). */
void fu_copy(const char *from, const char *to);

/* The schema of the test stores. */
extern const char fu_schema[];
/* A fresh store at path with fu_schema and `writes` own writes (a template
 * to copy before each case). */
void fu_make_store(const char *path, int seed_byte, int writes, int salt);
/* fu_path(name) copied into out (700 bytes). */
void fu_path_to(char out[700], const char *name);
/* Writes n row events (puts, deletes, counters, a UNIQUE conflict, an
 * idempotent retry) plus plain notes, deterministically from salt. Each
 * acknowledged event id is added to acked (may be NULL). Returns the first
 * error. */
typedef struct fu_ids {
	weft_id *v;
	size_t n, cap;
} fu_ids;
void fu_ids_add(fu_ids *s, const weft_id *id);
void fu_ids_free(fu_ids *s);
int fu_write(weft_db *db, int n, int salt, fu_ids *acked);

/* A text dump of the derived state: every table of fu_schema ordered by
 * key, the conflict list and the duplicate list. malloc'd. */
char *fu_dump(weft_db *db);
/* Every event id of the store, as a sorted hex list (malloc'd). */
char *fu_event_list(weft_db *db);
/* 1 if the store holds the event. */
int fu_has(weft_db *db, const weft_id *id);

/*
 * The checks after a fault, on a store reopened without faults: SQLite's
 * integrity check is "ok", weft_db_verify passes, and the derived tables
 * equal a rebuild from the log. Fails the test (naming `what`) otherwise.
 */
void fu_check_store(weft_db *db, const char *what);

/* Resident set size of this process in bytes (/proc/self/statm). */
size_t fu_rss(void);

/* Scale of sweeps: WEFT_TEST_SCALE=asan (slower builds) gives fewer steps. */
int fu_slow_build(void);

#endif
