#define _XOPEN_SOURCE 700
#include "testutil.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *tu_mkdtemp(void)
{
	const char *base = getenv("TMPDIR");
	char buf[4096];
	snprintf(buf, sizeof(buf), "%s/weft-test-XXXXXX", base && *base ? base : "/tmp");
	char *d = mkdtemp(buf);
	assert_non_null(d);
	return strdup(d);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

void tu_rmdir(char *dir)
{
	if (!dir)
		return;
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(dir);
}

const char *tu_path(const char *dir, const char *name)
{
	static char bufs[4][4096];
	static int next;
	char *b = bufs[next++ % 4];
	snprintf(b, sizeof(bufs[0]), "%s/%s", dir, name);
	return b;
}

uint64_t tu_clock_fn(void *payload)
{
	return ((tu_clock *)payload)->now_ms;
}

weft_db *tu_open(const char *dir, const char *name, tu_clock *clock, int seed_byte)
{
	weft_open_options o = WEFT_OPEN_OPTIONS_INIT;
	unsigned char seed[32];
	o.flags = WEFT_OPEN_CREATE;
	if (clock) {
		o.clock = tu_clock_fn;
		o.clock_payload = clock;
	}
	if (seed_byte) {
		memset(seed, seed_byte, sizeof(seed));
		o.secret_key = seed;
	}
	weft_db *db = NULL;
	int rc = weft_db_open(&db, tu_path(dir, name), &o);
	if (rc != WEFT_OK)
		print_error("tu_open: %s\n", weft_error_last());
	assert_int_equal(rc, WEFT_OK);
	return db;
}
