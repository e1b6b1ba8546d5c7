/* Helpers shared by the unit tests: temp dirs, fake clocks, store setup. */
#ifndef WEFT_TESTUTIL_H
#define WEFT_TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "weft.h"

/* A fresh private directory under $TMPDIR, removed by tu_rmdir. */
char *tu_mkdtemp(void);
/* The same under /dev/shm when it exists (fsync is free there), for
 * tests that sync many stores. */
char *tu_mkdtemp_shm(void);
void tu_rmdir(char *dir);
/* cmocka setup/teardown for tests whose state is just such a directory
 * (a char *): under $TMPDIR, or under /dev/shm. */
int tu_setup_dir(void **state);
int tu_setup_dir_shm(void **state);
int tu_teardown_dir(void **state);
/* dir + "/" + name in a static rotating buffer. */
const char *tu_path(const char *dir, const char *name);

/* A settable clock for weft_open_options.clock. */
typedef struct tu_clock {
	uint64_t now_ms;
} tu_clock;
uint64_t tu_clock_fn(void *payload);

/* Opens (creating) a store at dir/name with a fake clock and a fixed seed
 * derived from seed_byte (0: random key). Fails the test on error. */
weft_db *tu_open(const char *dir, const char *name, tu_clock *clock, int seed_byte);

/* Asserts rc == expected, printing weft_errmsg(db) when it is not. */
#define tu_expect(db, rc, expected)                                                    \
	do {                                                                           \
		int tu_rc_ = (rc);                                                     \
		if (tu_rc_ != (expected))                                              \
			print_error("%s:%d: got %s, expected %s: %s\n", __FILE__, __LINE__, \
			            weft_errname(tu_rc_), weft_errname(expected), weft_errmsg(db)); \
		assert_int_equal(tu_rc_, (expected));                                  \
	} while (0)
#define tu_ok(db, rc) tu_expect(db, rc, WEFT_OK)

/* ------------------------------------------------ derived-table helpers */

/* A value as text: NULL, 42, r:2.5, 'text' ('' doubles a quote, \xHH for
 * bytes outside printable ASCII), x'hex'. Appended to a malloc'd string. */
typedef struct tu_str {
	char *s;
	size_t len, cap;
} tu_str;
void tu_str_add(tu_str *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tu_str_value(tu_str *b, const weft_value *v);

/* Runs a read-only query; rows joined by '\n', values by '|' (formatted as
 * tu_str_value). Returns a malloc'd string ("" for no rows). Fails the test
 * on error. */
char *tu_query(weft_db *db, const char *sql);

/* A canonical text dump of the derived state: every derived table (name,
 * columns, rows ordered by primary key, typed values), the conflict list
 * and the duplicate list. Byte-equal dumps mean identical tables.
 * Malloc'd; fails the test on error. */
char *tu_dump(weft_db *db);

/* FNV-1a 64 of bytes, for printing short fingerprints of dumps. */
uint64_t tu_hash(const void *p, size_t n);

/* Ingests every event of src into dst, one at a time, in (hlc, id) order. */
void tu_ingest_all(weft_db *dst, weft_db *src);
/* The HLC stamp of a stored event. */
uint64_t tu_event_hlc(weft_db *db, const weft_id *id);

#endif
