#include "faultutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

uint64_t fu_clock(void *payload)
{
	(void)payload;
	return FU_NOW_MS;
}

static char dir[512];

static void remove_dir(void)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (dir[0] && system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
}

const char *fu_dir(void)
{
	if (dir[0])
		return dir;
	/* Memory-backed when possible: the sweeps sync thousands of times,
	 * and what they test is the VFS layer above the disk. */
	const char *base = getenv("TMPDIR");
	if (!base || !*base)
		base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	snprintf(dir, sizeof(dir), "%s/weft-fault-XXXXXX", base);
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		abort();
	}
	atexit(remove_dir);
	return dir;
}

const char *fu_path(const char *name)
{
	static char bufs[8][700];
	static int next;
	char *b = bufs[next++ % 8];
	snprintf(b, sizeof(bufs[0]), "%s/%s", fu_dir(), name);
	return b;
}

weft_db *fu_open(const char *path, int seed_byte, int create)
{
	unsigned char seed[32];
	memset(seed, seed_byte, sizeof(seed));
	weft_open_options o = WEFT_OPEN_OPTIONS_INIT;
	o.flags = create ? WEFT_OPEN_CREATE : 0;
	o.secret_key = seed;
	o.clock = fu_clock;
	weft_db *db = NULL;
	if (weft_db_open(&db, path, &o) < 0)
		return NULL;
	return db;
}

weft_db *fu_open_ok(const char *path, int seed_byte)
{
	weft_db *db = fu_open(path, seed_byte, 0);
	if (!db)
		print_error("cannot reopen %s: %s\n", path, weft_error_last());
	assert_non_null(db);
	return db;
}

void fu_remove(const char *path)
{
	static const char *const sfx[] = {"", "-wal", "-shm", "-journal"};
	char p[800];
	for (size_t i = 0; i < 4; i++) {
		snprintf(p, sizeof(p), "%s%s", path, sfx[i]);
		unlink(p);
	}
}

void fu_copy(const char *from, const char *to)
{
	fu_remove(to);
	FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
	assert_non_null(in);
	assert_non_null(out);
	char buf[65536];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		assert_int_equal(fwrite(buf, 1, n, out), n);
	fclose(in);
	assert_int_equal(fclose(out), 0);
}

const char fu_schema[] =
	"CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT NOT NULL DEFAULT '', votes INTEGER DEFAULT 0,"
	" owner TEXT UNIQUE);\n"
	"CREATE TABLE tag(k INTEGER PRIMARY KEY, v TEXT, w REAL);\n";

void fu_ids_add(fu_ids *s, const weft_id *id)
{
	if (!s)
		return;
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 64;
		s->v = realloc(s->v, s->cap * sizeof(weft_id));
	}
	s->v[s->n++] = *id;
}

void fu_ids_free(fu_ids *s)
{
	free(s->v);
	memset(s, 0, sizeof(*s));
}

static int one_write(weft_db *db, int i, int salt, weft_id *id)
{
	char pk[32], text[64], idem[32];
	int k = (salt * 7 + i) % 9;
	snprintf(pk, sizeof(pk), "r%d", k);
	snprintf(text, sizeof(text), "title %d/%d", salt, i);
	if (i % 6 == 0) {
		return weft_db_append(id, db, "notes", "note.put", NULL, text, strlen(text));
	}
	weft_txn *t;
	const char *key = NULL;
	if (i % 6 == 5) {
		snprintf(idem, sizeof(idem), "op-%d", (salt + i) % 4);
		key = idem;
	}
	int rc = weft_txn_begin(&t, db, "todo", key);
	if (rc < 0)
		return rc;
	switch (i % 6) {
	case 1:
		rc = weft_txn_set(t, "todo", weft_text(pk), "title", weft_text(text));
		break;
	case 2:
		rc = weft_txn_incr(t, "todo", weft_text(pk), "votes", i);
		if (rc >= 0)
			rc = weft_txn_set(t, "tag", weft_int(k), "w", weft_real(i / 4.0));
		break;
	case 3: {
		char owner[16];
		snprintf(owner, sizeof(owner), "own%d", i % 3);
		rc = weft_txn_set(t, "todo", weft_text(pk), "owner", weft_text(owner));
		break;
	}
	case 4:
		rc = weft_txn_delete(t, "todo", weft_text(pk));
		if (rc >= 0)
			rc = weft_txn_set(t, "tag", weft_int(k), "v", weft_text(text));
		break;
	default:
		rc = weft_txn_set(t, "todo", weft_text(pk), "title", weft_text("idempotent"));
		break;
	}
	if (rc < 0) {
		weft_txn_abort(t);
		return rc;
	}
	return weft_txn_commit(id, t);
}

int fu_write(weft_db *db, int n, int salt, fu_ids *acked)
{
	for (int i = 0; i < n; i++) {
		weft_id id;
		int rc = one_write(db, i, salt, &id);
		if (rc < 0)
			return rc;
		if (rc == WEFT_OK)
			fu_ids_add(acked, &id);
	}
	return WEFT_OK;
}

/* --------------------------------------------------------------- dumps */

typedef struct sb {
	char *s;
	size_t len, cap;
} sb;

static void sb_add(sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(sb *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (b->len + (size_t)n + 1 > b->cap) {
		while (b->len + (size_t)n + 1 > b->cap)
			b->cap = b->cap ? b->cap * 2 : 1024;
		b->s = realloc(b->s, b->cap);
	}
	va_start(ap, fmt);
	vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

static void sb_value(sb *b, const weft_value *v)
{
	switch (v->type) {
	case WEFT_NULL:
		sb_add(b, "NULL");
		break;
	case WEFT_INTEGER:
		sb_add(b, "%lld", (long long)v->i);
		break;
	case WEFT_REAL:
		sb_add(b, "r:%.17g", v->r);
		break;
	case WEFT_TEXT:
		sb_add(b, "'%.*s'", (int)v->n, (const char *)v->p);
		break;
	case WEFT_BLOB:
		sb_add(b, "x'");
		for (size_t i = 0; i < v->n; i++)
			sb_add(b, "%02x", ((const unsigned char *)v->p)[i]);
		sb_add(b, "'");
		break;
	}
}

static int row_cb(int ncols, const char *const *names, const weft_value *values, void *payload)
{
	sb *b = payload;
	for (int i = 0; i < ncols; i++) {
		sb_add(b, "%s%s=", i ? "|" : "", names[i]);
		sb_value(b, &values[i]);
	}
	sb_add(b, "\n");
	return 0;
}

static int conflict_cb(const weft_conflict *c, void *payload)
{
	sb *b = payload;
	char h[65];
	sb_add(b, "conflict %s.%s ", c->table, c->column);
	sb_value(b, &c->value);
	sb_add(b, " winner ");
	sb_value(b, &c->winner_pk);
	sb_add(b, " loser ");
	sb_value(b, &c->loser_pk);
	sb_add(b, " %s\n", weft_id_to_hex(h, &c->loser_event));
	return 0;
}

static int dup_cb(const weft_id *event, const weft_id *winner, const char *scope, const char *idem_key,
                  void *payload)
{
	sb *b = payload;
	char e[65], w[65];
	sb_add(b, "dup %s -> %s %s %s\n", weft_id_to_hex(e, event), weft_id_to_hex(w, winner), scope, idem_key);
	return 0;
}

char *fu_dump(weft_db *db)
{
	sb b = {0};
	sb_add(&b, "todo:\n");
	int rc = weft_db_query(db, "SELECT * FROM todo ORDER BY id", row_cb, &b);
	if (rc == WEFT_OK) {
		sb_add(&b, "tag:\n");
		rc = weft_db_query(db, "SELECT * FROM tag ORDER BY k", row_cb, &b);
	}
	if (rc == WEFT_OK)
		rc = weft_db_conflicts(db, conflict_cb, &b);
	if (rc == WEFT_OK)
		rc = weft_db_duplicates(db, dup_cb, &b);
	if (rc != WEFT_OK)
		print_error("dump failed: %s\n", weft_errmsg(db));
	assert_int_equal(rc, WEFT_OK);
	return b.s;
}

char *fu_event_list(weft_db *db)
{
	sb b = {0};
	sb_add(&b, "%s", "");
	weft_iter *it;
	assert_int_equal(weft_db_iter(&it, db, NULL), WEFT_OK);
	const weft_event *ev;
	while (weft_iter_next(&ev, it) == WEFT_OK) {
		char h[65];
		sb_add(&b, "%s\n", weft_id_to_hex(h, weft_event_id(ev)));
	}
	weft_iter_free(it);
	return b.s;
}

int fu_has(weft_db *db, const weft_id *id)
{
	weft_event *ev = NULL;
	int rc = weft_db_get(&ev, db, id);
	weft_event_free(ev);
	if (rc != WEFT_OK && rc != WEFT_ENOTFOUND)
		print_error("weft_db_get: %s\n", weft_errmsg(db));
	assert_true(rc == WEFT_OK || rc == WEFT_ENOTFOUND);
	return rc == WEFT_OK;
}

static int integrity_cb(int ncols, const char *const *names, const weft_value *values, void *payload)
{
	(void)names;
	sb *b = payload;
	for (int i = 0; i < ncols; i++)
		sb_value(b, &values[i]);
	return 0;
}

/* Lines of a missing from b (prefix '-') and of b missing from a ('+'). */
static void print_diff(const char *a, const char *b)
{
	for (int pass = 0; pass < 2; pass++) {
		const char *x = pass ? b : a, *y = pass ? a : b;
		for (const char *l = x; *l;) {
			const char *e = strchr(l, '\n');
			size_t n = e ? (size_t)(e - l) : strlen(l);
			int found = 0;
			for (const char *m = y; *m && !found;) {
				const char *f = strchr(m, '\n');
				size_t k = f ? (size_t)(f - m) : strlen(m);
				found = k == n && memcmp(l, m, n) == 0;
				m = f ? f + 1 : m + k;
			}
			if (!found)
				print_error("%c %.*s\n", pass ? '+' : '-', (int)n, l);
			l = e ? e + 1 : l + n;
		}
	}
}

void fu_check_store(weft_db *db, const char *what)
{
	sb ic = {0};
	int rc = weft_db_query(db, "PRAGMA integrity_check", integrity_cb, &ic);
	if (rc != WEFT_OK || !ic.s || strcmp(ic.s, "'ok'") != 0)
		print_error("%s: integrity_check: %s (%s)\n", what, ic.s ? ic.s : "", weft_errmsg(db));
	assert_int_equal(rc, WEFT_OK);
	assert_string_equal(ic.s, "'ok'");
	free(ic.s);
	weft_verify_report rep;
	rc = weft_db_verify(&rep, db, NULL, NULL);
	if (rc != WEFT_OK)
		print_error("%s: verify: %s\n", what, weft_errmsg(db));
	assert_int_equal(rc, WEFT_OK);
	char *before = fu_dump(db);
	rc = weft_db_rebuild(db, NULL, NULL);
	if (rc != WEFT_OK)
		print_error("%s: rebuild: %s\n", what, weft_errmsg(db));
	assert_int_equal(rc, WEFT_OK);
	char *after = fu_dump(db);
	if (strcmp(before, after) != 0) {
		print_error("%s: derived tables differ from a rebuild (- incremental, + rebuilt):\n", what);
		print_diff(before, after);
	}
	assert_true(strcmp(before, after) == 0);
	free(before);
	free(after);
}

size_t fu_rss(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long size = 0, rss = 0;
	if (f) {
		if (fscanf(f, "%lu %lu", &size, &rss) != 2)
			rss = 0;
		fclose(f);
	}
	return (size_t)rss * (size_t)sysconf(_SC_PAGESIZE);
}

int fu_slow_build(void)
{
	const char *s = getenv("WEFT_TEST_SCALE");
	return s && strcmp(s, "asan") == 0;
}

void fu_make_store(const char *path, int seed_byte, int writes, int salt)
{
	fu_remove(path);
	weft_db *db = fu_open(path, seed_byte, 1);
	assert_non_null(db);
	assert_int_equal(weft_schema_define(db, fu_schema), WEFT_OK);
	assert_int_equal(fu_write(db, writes, salt, NULL), WEFT_OK);
	weft_db_close(db);
}

void fu_path_to(char out[700], const char *name)
{
	snprintf(out, 700, "%s", fu_path(name));
}
