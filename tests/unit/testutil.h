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
void tu_rmdir(char *dir);
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

#endif
