#include "fuzz/fuzz_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "sync/negentropy.h"

void fuzz_fail(const char *file, int line, const char *what)
{
	fprintf(stderr, "%s:%d: property violated: %s\n", file, line, what);
	fflush(stderr);
	abort();
}

uint64_t fuzz_clock(void *payload)
{
	(void)payload;
	return FUZZ_NOW_MS;
}

static char tmpdir[512];

static void remove_tmpdir(void)
{
	char cmd[600];
	if (!tmpdir[0])
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "fuzz: could not remove %s\n", tmpdir);
}

const char *fuzz_tmpdir(void)
{
	if (tmpdir[0])
		return tmpdir;
	const char *base = getenv("TMPDIR");
	/* Prefer memory-backed storage: the session target rewrites its
	 * store often. */
	if (!base || !*base)
		base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	snprintf(tmpdir, sizeof(tmpdir), "%s/weft-fuzz-XXXXXX", base);
	if (!mkdtemp(tmpdir)) {
		perror("fuzz: mkdtemp");
		abort();
	}
	atexit(remove_tmpdir);
	return tmpdir;
}

void fuzz_remove_db(const char *path)
{
	static const char *const sfx[] = {"", "-wal", "-shm", "-journal", ".key"};
	char p[1024];
	for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
		snprintf(p, sizeof(p), "%s%s", path, sfx[i]);
		unlink(p);
	}
}

void *fuzz_read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 4096, n = 0;
	unsigned char *buf = malloc(cap);
	for (;;) {
		if (n == cap) {
			cap *= 2;
			buf = realloc(buf, cap);
		}
		size_t got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	fclose(f);
	*len = n;
	return buf;
}

int fuzz_write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		return -1;
	size_t put = len ? fwrite(data, 1, len, f) : 0;
	return fclose(f) == 0 && put == len ? 0 : -1;
}

static weft_db *open_with(const char *path, int seed_byte, unsigned flags)
{
	unsigned char seed[32];
	memset(seed, seed_byte, sizeof(seed));
	weft_open_options o = WEFT_OPEN_OPTIONS_INIT;
	o.flags = flags;
	o.secret_key = seed;
	o.clock = fuzz_clock;
	weft_db *db = NULL;
	if (weft_db_open(&db, path, &o) < 0) {
		fprintf(stderr, "fuzz: cannot open %s: %s\n", path, weft_error_last());
		return NULL;
	}
	return db;
}

weft_db *fuzz_open_store(const char *path, int seed_byte)
{
	return open_with(path, seed_byte, 0);
}

static const char schema_sql[] =
	"CREATE TABLE todo(\n"
	"  id    TEXT PRIMARY KEY,\n"
	"  title TEXT NOT NULL DEFAULT '',\n"
	"  done  INTEGER DEFAULT 0,\n"
	"  votes INTEGER DEFAULT 0,\n"
	"  owner TEXT UNIQUE\n"
	");\n";

static int put_row(weft_db *db, const char *scope, const char *idem, const char *pk, const char *title,
                   int64_t votes, const char *owner)
{
	weft_txn *t;
	int rc = weft_txn_begin(&t, db, scope, idem);
	if (rc < 0)
		return rc;
	if ((rc = weft_txn_set(t, "todo", weft_text(pk), "title", weft_text(title))) < 0 ||
	    (votes && (rc = weft_txn_incr(t, "todo", weft_text(pk), "votes", votes)) < 0) ||
	    (owner && (rc = weft_txn_set(t, "todo", weft_text(pk), "owner", weft_text(owner))) < 0)) {
		weft_txn_abort(t);
		return rc;
	}
	weft_id id;
	rc = weft_txn_commit(&id, t);
	return rc < 0 ? rc : 0;
}

weft_db *fuzz_make_store(const char *path, int seed_byte, int variant)
{
	fuzz_remove_db(path);
	weft_db *db = open_with(path, seed_byte, WEFT_OPEN_CREATE);
	if (!db)
		return NULL;
	weft_id id;
	int rc = weft_schema_define(db, schema_sql);
	char note[64];
	if (variant == 0) {
		for (int i = 0; rc >= 0 && i < 12; i++) {
			snprintf(note, sizeof(note), "local note %d", i);
			rc = weft_db_append(&id, db, "notes", "note.put", NULL, note, strlen(note));
		}
		if (rc >= 0)
			rc = put_row(db, "todo", "milk-once", "milk", "buy milk", 2, "ann");
		if (rc >= 0)
			rc = put_row(db, "todo", NULL, "rent", "pay rent", 0, NULL);
	} else {
		for (int i = 0; rc >= 0 && i < 9; i++) {
			snprintf(note, sizeof(note), "peer note %d", i);
			rc = weft_db_append(&id, db, i % 3 ? "notes" : "private", "note.put", NULL, note,
			                    strlen(note));
		}
		if (rc >= 0)
			rc = put_row(db, "todo", NULL, "milk", "buy oat milk", 3, NULL);
		if (rc >= 0)
			rc = put_row(db, "todo", "milk-once", "bike", "fix bike", 1, "ann");
		if (rc >= 0)
			rc = weft_db_append(&id, db, "todo", "note.put", "idem-1", "", 0);
	}
	if (rc < 0) {
		fprintf(stderr, "fuzz: cannot fill %s: %s\n", path, weft_errmsg(db));
		weft_db_close(db);
		return NULL;
	}
	return db;
}

void fuzz_neg_item_id(uint8_t id[32], uint32_t k)
{
	uint8_t in[4] = {(uint8_t)(k >> 24), (uint8_t)(k >> 16), (uint8_t)(k >> 8), (uint8_t)k};
	if (sodium_init() < 0)
		abort();
	crypto_generichash(id, 32, in, sizeof(in), NULL, 0);
}

struct neg_set *fuzz_neg_fixed_set(void)
{
	neg_set *s;
	FUZZ_CHECK(neg_set_new(&s) == 0);
	for (uint32_t k = 0; k < FUZZ_NEG_ITEMS; k++) {
		uint8_t id[32];
		fuzz_neg_item_id(id, k);
		/* Several items share a timestamp, so bounds need id prefixes. */
		FUZZ_CHECK(neg_set_add(s, 1000 + k / 3, id) == 0);
	}
	FUZZ_CHECK(neg_set_seal(s) == 0);
	return s;
}
