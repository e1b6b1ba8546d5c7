#define _XOPEN_SOURCE 700
#include "testutil.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *mkdtemp_in(const char *base)
{
	char buf[4096];
	snprintf(buf, sizeof(buf), "%s/weft-test-XXXXXX", base);
	char *d = mkdtemp(buf);
	assert_non_null(d);
	return strdup(d);
}

char *tu_mkdtemp(void)
{
	const char *base = getenv("TMPDIR");
	return mkdtemp_in(base && *base ? base : "/tmp");
}

char *tu_mkdtemp_shm(void)
{
	struct stat st;
	if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0)
		return mkdtemp_in("/dev/shm");
	return tu_mkdtemp();
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

int tu_setup_dir(void **state)
{
	*state = tu_mkdtemp();
	return 0;
}

int tu_setup_dir_shm(void **state)
{
	*state = tu_mkdtemp_shm();
	return 0;
}

int tu_teardown_dir(void **state)
{
	tu_rmdir(*state);
	return 0;
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

/* ------------------------------------------------ derived-table helpers */

void tu_str_add(tu_str *b, const char *fmt, ...)
{
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		size_t room = b->cap - b->len;
		int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? room : 0, fmt, ap);
		va_end(ap);
		assert_true(n >= 0);
		if (b->s && (size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = b->cap * 2 + (size_t)n + 64;
		b->s = realloc(b->s, cap);
		assert_non_null(b->s);
		b->cap = cap;
		b->s[b->len] = '\0';
	}
}

void tu_str_value(tu_str *b, const weft_value *v)
{
	const unsigned char *p = v->p;
	switch (v->type) {
	case WEFT_INTEGER:
		tu_str_add(b, "%lld", (long long)v->i);
		break;
	case WEFT_REAL:
		tu_str_add(b, "r:%.17g", v->r);
		break;
	case WEFT_TEXT:
		tu_str_add(b, "'");
		for (size_t i = 0; i < v->n; i++) {
			if (p[i] == '\'')
				tu_str_add(b, "''");
			else if (p[i] < 0x20 || p[i] > 0x7e || p[i] == '\\')
				tu_str_add(b, "\\x%02x", p[i]);
			else
				tu_str_add(b, "%c", p[i]);
		}
		tu_str_add(b, "'");
		break;
	case WEFT_BLOB:
		tu_str_add(b, "x'");
		for (size_t i = 0; i < v->n; i++)
			tu_str_add(b, "%02x", p[i]);
		tu_str_add(b, "'");
		break;
	default:
		tu_str_add(b, "NULL");
	}
}

typedef struct tu_rows {
	tu_str out;
	int rows;
	int header; /* also print column names before the first row */
} tu_rows;

static int tu_row_cb(int ncols, const char *const *names, const weft_value *values, void *payload)
{
	tu_rows *r = payload;
	if (r->header && r->rows == 0) {
		for (int i = 0; i < ncols; i++)
			tu_str_add(&r->out, "%s%s", i ? "|" : "", names[i]);
		tu_str_add(&r->out, "\n");
	}
	if (!r->header && r->rows)
		tu_str_add(&r->out, "\n");
	for (int i = 0; i < ncols; i++) {
		if (i)
			tu_str_add(&r->out, "|");
		tu_str_value(&r->out, &values[i]);
	}
	if (r->header)
		tu_str_add(&r->out, "\n");
	r->rows++;
	return 0;
}

char *tu_query(weft_db *db, const char *sql)
{
	tu_rows r = {{NULL, 0, 0}, 0, 0};
	tu_str_add(&r.out, "%s", "");
	int rc = weft_db_query(db, sql, tu_row_cb, &r);
	if (rc != WEFT_OK)
		print_error("tu_query(%s): %s\n", sql, weft_errmsg(db));
	assert_int_equal(rc, WEFT_OK);
	return r.out.s;
}

static int tu_name_cb(int ncols, const char *const *names, const weft_value *values, void *payload)
{
	(void)ncols, (void)names;
	tu_str *b = payload;
	tu_str_add(b, "%.*s", (int)values[0].n, (const char *)values[0].p);
	tu_str_add(b, "%c", '\0');
	return 0;
}

static int tu_conflict_cb(const weft_conflict *c, void *payload)
{
	tu_str *b = payload;
	char h[65];
	tu_str_add(b, "%s.%s ", c->table, c->column);
	tu_str_value(b, &c->value);
	tu_str_add(b, " winner ");
	tu_str_value(b, &c->winner_pk);
	tu_str_add(b, " loser ");
	tu_str_value(b, &c->loser_pk);
	tu_str_add(b, " event %s\n", weft_id_to_hex(h, &c->loser_event));
	return 0;
}

static int tu_dup_cb(const weft_id *event, const weft_id *winner, const char *scope, const char *idem_key,
                     void *payload)
{
	tu_str *b = payload;
	char h1[65], h2[65];
	tu_str_add(b, "%s -> %s scope %s key %s\n", weft_id_to_hex(h1, event), weft_id_to_hex(h2, winner), scope,
	           idem_key);
	return 0;
}

char *tu_dump(weft_db *db)
{
	tu_str names = {NULL, 0, 0}, out = {NULL, 0, 0};
	tu_str_add(&out, "%s", "");
	tu_str_add(&names, "%s", "");
	/* Derived tables are the app's names; weft's own start with weft_. */
	int rc = weft_db_query(db, "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'weft\\_%' "
	                           "ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
	                       tu_name_cb, &names);
	if (rc != WEFT_OK)
		print_error("tu_dump: %s\n", weft_errmsg(db));
	assert_int_equal(rc, WEFT_OK);
	for (size_t off = 0; off < names.len; off += strlen(names.s + off) + 1) {
		const char *t = names.s + off;
		char sql[512];
		tu_str pk = {NULL, 0, 0};
		tu_str_add(&pk, "%s", "");
		snprintf(sql, sizeof(sql), "SELECT name FROM pragma_table_info('%s') WHERE pk = 1", t);
		tu_ok(db, weft_db_query(db, sql, tu_name_cb, &pk));
		assert_true(pk.len > 0);
		snprintf(sql, sizeof(sql), "SELECT * FROM \"%s\" ORDER BY \"%s\"", t, pk.s);
		free(pk.s);
		tu_rows r = {{NULL, 0, 0}, 0, 1};
		tu_str_add(&r.out, "%s", "");
		tu_ok(db, weft_db_query(db, sql, tu_row_cb, &r));
		tu_str_add(&out, "table %s: %d rows\n%s", t, r.rows, r.out.s);
		free(r.out.s);
	}
	free(names.s);
	tu_str_add(&out, "conflicts\n");
	tu_ok(db, weft_db_conflicts(db, tu_conflict_cb, &out));
	tu_str_add(&out, "duplicates\n");
	tu_ok(db, weft_db_duplicates(db, tu_dup_cb, &out));
	return out.s;
}

uint64_t tu_hash(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

void tu_ingest_all(weft_db *dst, weft_db *src)
{
	weft_iter *it;
	tu_ok(src, weft_db_iter(&it, src, NULL));
	const weft_event *ev;
	int rc;
	while ((rc = weft_iter_next(&ev, it)) == WEFT_OK) {
		size_t len;
		const void *b = weft_event_bytes(ev, &len);
		weft_ingest_status st;
		tu_ok(dst, weft_db_ingest(&st, dst, b, len));
	}
	assert_int_equal(rc, WEFT_ITEROVER);
	weft_iter_free(it);
}

uint64_t tu_event_hlc(weft_db *db, const weft_id *id)
{
	weft_event *ev;
	tu_ok(db, weft_db_get(&ev, db, id));
	uint64_t h = weft_event_hlc(ev);
	weft_event_free(ev);
	return h;
}
