/*
 * weft-bench: the performance targets of issue 7, each measured as a ratio
 * against a baseline run in the same process on the same machine (absolute
 * times on shared machines drift; ratios much less).
 *
 *   weft-bench [--quick] [--runs N] [--only 1,3,5] [--big]
 *              [--dir DIR] [--cache DIR] [--weft PATH-TO-CLI]
 *
 * Every figure is the median of --runs runs (default 3). --quick uses small
 * sizes (CI). --big adds the 1M-event sizes. Built stores are cached in
 * --cache (deterministic events: fixed keys, fixed clock), so a second run
 * skips the building. See bench/RESULTS.md for what each row means.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/version.h>
#include <sodium.h>
#include <sqlite3.h>

#include "core/codec.h"
#include "core/identity.h"
#include "core/rows.h"
#include "core/store.h"
#include "weft.h"

extern char **environ;

/* Bump when the generated events change: the cache keys on it. */
#define GEN_VERSION 1
#define DIFF 1000          /* target 5: differing events (half per side) */
#define NOTE_PAYLOAD 100   /* bytes of payload of a plain event */
#define COMMON_AUTHORS 8
#define HLC_BASE_MS UINT64_C(1704067200000) /* 2024-01-01: fixed, in the past */
#define INGEST_CHUNK 4096
#define SCOPE "bench"
#define NOTE_KIND "note"
#define ROWS_SCHEMA "CREATE TABLE item(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, price REAL);"
#define PLAIN_SCHEMA "CREATE TABLE item(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, price REAL)"
#define MAX_RUNS 15

/* ------------------------------------------------------------ utilities */

static struct {
	int quick, big, runs;
	unsigned only; /* bit per target number; 0: all */
	char dir[3072], cache[3072], weft[3072], self[3072];
	char schema_tag[17]; /* hash of a new store's SQL schema: keys the cache */
} cfg;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("weft-bench: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("  .. ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU time of this process (user + system), to tell CPU from I/O wait. */
static double cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       (double)ru.ru_stime.tv_usec / 1e6;
}

/* Bytes this process has passed to write() so far (/proc/self/io wchar):
 * WAL frames and checkpoints, to tell how many pages a commit dirties. */
static double written_bytes(void)
{
	FILE *f = fopen("/proc/self/io", "r");
	if (!f)
		return 0;
	char line[128];
	double v = 0;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "wchar:", 6) == 0)
			v = strtod(line + 6, NULL);
	fclose(f);
	return v;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
	double s[MAX_RUNS];
	memcpy(s, v, (size_t)n * sizeof(double));
	qsort(s, (size_t)n, sizeof(double), cmp_double);
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* What one side's commit times look like: median, 99th percentile, and
 * the share of all time spent in the slowest 2 % of commits (those that
 * run a WAL checkpoint). Sorts lat. */
static void commit_spread(char *out, size_t cap, double *lat, int n)
{
	double all = 0, slow = 0;
	for (int i = 0; i < n; i++)
		all += lat[i];
	qsort(lat, (size_t)n, sizeof(double), cmp_double);
	for (int i = n - n / 50; i < n; i++)
		slow += lat[i];
	snprintf(out, cap, "p50 %.0f us, p99 %.0f us, slowest 2%% %.1f%% of the time", lat[n / 2] * 1e6,
	         lat[n - 1 - n / 100] * 1e6, all > 0 ? 100 * slow / all : 0);
}

/* snprintf into a path buffer; a path that does not fit is fatal. */
static void fmt_path(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fmt_path(char *out, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(out, cap, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= cap)
		die("path too long: %s", out);
}

static void path_join(char *out, size_t cap, const char *dir, const char *name)
{
	fmt_path(out, cap, "%s/%s", dir, name);
}

static void mkdirs(const char *path)
{
	char p[4096];
	snprintf(p, sizeof(p), "%s", path);
	for (char *s = p + 1; *s; s++) {
		if (*s == '/') {
			*s = '\0';
			mkdir(p, 0700);
			*s = '/';
		}
	}
	if (mkdir(p, 0700) < 0 && errno != EEXIST)
		die("cannot create %s: %s", p, strerror(errno));
}

static int file_exists(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0;
}

static long long file_size(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0 ? (long long)st.st_size : -1;
}

/* Removes a store: the database, its WAL/SHM and its key file. */
static void rm_store(const char *db)
{
	static const char *const sfx[] = {"", "-wal", "-shm", "-journal", ".key"};
	char p[4200];
	for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
		fmt_path(p, sizeof(p), "%s%s", db, sfx[i]);
		unlink(p);
	}
}

static void copy_file(const char *src, const char *dst)
{
	int in = open(src, O_RDONLY);
	if (in < 0)
		die("cannot read %s: %s", src, strerror(errno));
	int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (out < 0)
		die("cannot write %s: %s", dst, strerror(errno));
	static char buf[1 << 20];
	ssize_t n;
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, (size_t)n) != n)
			die("cannot write %s: %s", dst, strerror(errno));
	if (n < 0)
		die("cannot read %s: %s", src, strerror(errno));
	close(in);
	close(out);
}

/* Copies a closed store (no WAL left) and its key file. */
static void copy_store(const char *src, const char *dst)
{
	char a[4200], b[4200];
	rm_store(dst);
	fmt_path(a, sizeof(a), "%s-wal", src);
	if (file_size(a) > 0)
		die("%s still has a WAL: close it before copying", src);
	copy_file(src, dst);
	fmt_path(a, sizeof(a), "%s.key", src);
	fmt_path(b, sizeof(b), "%s.key", dst);
	copy_file(a, b);
}

static weft_db *open_store(const char *path, int create)
{
	weft_open_options o = WEFT_OPEN_OPTIONS_INIT;
	o.flags = create ? WEFT_OPEN_CREATE : 0;
	weft_db *db;
	if (weft_db_open(&db, path, &o) < 0)
		die("opening %s: %s", path, weft_error_last());
	return db;
}

static void fresh_store_path(char *out, size_t cap, const char *name)
{
	path_join(out, cap, cfg.dir, name);
	rm_store(out);
}

static int count_cb(int ncols, const char *const *names, const weft_value *v, void *p)
{
	(void)names;
	if (ncols > 0 && v[0].type == WEFT_INTEGER)
		*(int64_t *)p = v[0].i;
	return 0;
}

static int64_t query_count(weft_db *db, const char *sql)
{
	int64_t n = -1;
	if (weft_db_query(db, sql, count_cb, &n) < 0)
		die("query %s: %s", sql, weft_errmsg(db));
	return n;
}

static uint64_t store_events(weft_db *db)
{
	weft_db_stats st;
	if (weft_db_stats_get(&st, db) < 0)
		die("stats: %s", weft_errmsg(db));
	return st.events;
}

static sqlite3 *plain_open(const char *path)
{
	rm_store(path);
	sqlite3 *s;
	if (sqlite3_open_v2(path, &s, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK)
		die("sqlite open %s", path);
	if (sqlite3_exec(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; " PLAIN_SCHEMA ";", NULL, NULL,
	                 NULL) != SQLITE_OK)
		die("sqlite setup: %s", sqlite3_errmsg(s));
	return s;
}

static void plain_exec(sqlite3 *s, const char *sql)
{
	if (sqlite3_exec(s, sql, NULL, NULL, NULL) != SQLITE_OK)
		die("sqlite %s: %s", sql, sqlite3_errmsg(s));
}

/* The row every workload writes: id, a 24-byte name, a quantity, a price. */
static void row_name(char out[32], int64_t id)
{
	snprintf(out, 32, "item-%019lld", (long long)id);
}

static sqlite3_stmt *plain_insert(sqlite3 *s)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(s, "INSERT INTO item(id, name, qty, price) VALUES (?1, ?2, ?3, ?4)", -1, &st,
	                       NULL) != SQLITE_OK)
		die("sqlite prepare: %s", sqlite3_errmsg(s));
	return st;
}

static void plain_row(sqlite3 *s, sqlite3_stmt *st, int64_t id)
{
	char name[32];
	row_name(name, id);
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 3, id % 1000);
	sqlite3_bind_double(st, 4, (double)id * 0.25);
	if (sqlite3_step(st) != SQLITE_DONE)
		die("sqlite insert: %s", sqlite3_errmsg(s));
	sqlite3_reset(st);
}

static void weft_row(weft_txn *t, weft_db *db, int64_t id)
{
	char name[32];
	row_name(name, id);
	if (weft_txn_set(t, "item", weft_int(id), "name", weft_text(name)) < 0 ||
	    weft_txn_set(t, "item", weft_int(id), "qty", weft_int(id % 1000)) < 0 ||
	    weft_txn_set(t, "item", weft_int(id), "price", weft_real((double)id * 0.25)) < 0)
		die("txn set: %s", weft_errmsg(db));
}

/* ------------------------------------------------------------ results */

typedef struct result {
	char num[4], workload[80], size[24], weft[40], base[40], ratio[24], target[28], status[12];
} result;

static result results[128];
static size_t nresults;
static int missed;

static void add_result(const char *num, const char *workload, const char *size, const char *w, const char *b,
                       const char *ratio, const char *target, int met)
{
	if (nresults == sizeof(results) / sizeof(results[0]))
		return;
	result *r = &results[nresults++];
	snprintf(r->num, sizeof(r->num), "%s", num);
	snprintf(r->workload, sizeof(r->workload), "%s", workload);
	snprintf(r->size, sizeof(r->size), "%s", size);
	snprintf(r->weft, sizeof(r->weft), "%s", w);
	snprintf(r->base, sizeof(r->base), "%s", b);
	snprintf(r->ratio, sizeof(r->ratio), "%s", ratio);
	snprintf(r->target, sizeof(r->target), "%s", target);
	snprintf(r->status, sizeof(r->status), "%s", met < 0 ? "info" : met ? "met" : "**MISSED**");
	if (met == 0)
		missed++;
	fprintf(stderr, "  => %s %s [%s]: weft %s | baseline %s | %s (target %s) %s\n", num, workload, size, w, b,
	        ratio, target, r->status);
}

static const char *size_label(char out[24], size_t n)
{
	if (n >= 1000000 && n % 1000000 == 0)
		snprintf(out, 24, "%zuM", n / 1000000);
	else if (n >= 1000 && n % 1000 == 0)
		snprintf(out, 24, "%zuk", n / 1000);
	else
		snprintf(out, 24, "%zu", n);
	return out;
}

static const char *fmt_time(char out[16], double s)
{
	if (s < 1e-3)
		snprintf(out, 16, "%.0f us", s * 1e6);
	else if (s < 1)
		snprintf(out, 16, "%.1f ms", s * 1e3);
	else
		snprintf(out, 16, "%.2f s", s);
	return out;
}

static int should(int target)
{
	return !cfg.only || (cfg.only & (1u << target));
}

/* ------------------------------------------------------- event generation */

/*
 * The event universe of size N: event i is written by common author i % 8
 * (sequence i / 8 + 1), except the DIFF newest of a "log" universe, which
 * alternate between author 8 (only in store A) and author 9 (only in B).
 * Clock: 4 events per millisecond from a fixed past instant, so events are
 * deterministic and the cache of built stores stays valid.
 */
typedef enum { GEN_NOTE, GEN_ROWS } gen_kind;

typedef struct evset {
	size_t N, diff, lo, hi, slot;
	gen_kind kind;
	unsigned char *arena; /* slot bytes per event */
	uint32_t *len;
	uint64_t payload_bytes;
} evset;

static unsigned char author_sk[COMMON_AUTHORS + 2][64];
static unsigned char author_pk[COMMON_AUTHORS + 2][32];

static void authors_init(void)
{
	for (int a = 0; a < COMMON_AUTHORS + 2; a++) {
		unsigned char seed[32];
		memset(seed, 0, sizeof(seed));
		memcpy(seed, "weft-bench-author", 17);
		seed[31] = (unsigned char)a;
		crypto_sign_seed_keypair(author_pk[a], author_sk[a], seed);
	}
}

static int author_of(const evset *s, size_t i)
{
	if (s->diff && i >= s->N - s->diff)
		return COMMON_AUTHORS + (int)((i - (s->N - s->diff)) % 2);
	return (int)(i % COMMON_AUTHORS);
}

static uint64_t seq_of(const evset *s, size_t i)
{
	if (s->diff && i >= s->N - s->diff)
		return (i - (s->N - s->diff)) / 2 + 1;
	return i / COMMON_AUTHORS + 1;
}

static uint64_t hlc_of(size_t i)
{
	return ((HLC_BASE_MS + i / 4) << 16) | (i % 4);
}

static size_t rows_payload(unsigned char *buf, int64_t id)
{
	char name[32];
	row_name(name, id);
	weft_value pk = weft_int(id), nm = weft_text(name), qty = weft_int(id % 1000),
	           price = weft_real((double)id * 0.25);
	unsigned char *p = buf;
	*p++ = ROWS_FORMAT_VERSION;
	codec_put_u32(p, 1); /* one operation */
	p += 4;
	*p++ = ROWOP_PUT;
	*p++ = 4;
	memcpy(p, "item", 4);
	p = rows_value_put(p + 4, &pk);
	*p++ = 0;
	*p++ = 3; /* columns */
	*p++ = 4;
	memcpy(p, "name", 4);
	p = rows_value_put(p + 4, &nm);
	*p++ = 3;
	memcpy(p, "qty", 3);
	p = rows_value_put(p + 3, &qty);
	*p++ = 5;
	memcpy(p, "price", 5);
	p = rows_value_put(p + 5, &price);
	return (size_t)(p - buf);
}

typedef struct gen_job {
	evset *s;
	int t, nt;
	uint64_t payload_bytes;
} gen_job;

static void *gen_worker(void *arg)
{
	gen_job *j = arg;
	evset *s = j->s;
	for (int a = j->t; a < COMMON_AUTHORS + 2; a += j->nt) {
		weft_id prev;
		int have_prev = 0;
		for (size_t i = s->lo; i < s->hi; i++) {
			if (author_of(s, i) != a)
				continue;
			unsigned char payload[256];
			size_t plen;
			if (s->kind == GEN_NOTE) {
				uint64_t x = (uint64_t)i * 0x9e3779b97f4a7c15u + 1;
				for (size_t k = 0; k < NOTE_PAYLOAD; k++) {
					x ^= x << 13;
					x ^= x >> 7;
					x ^= x << 17;
					payload[k] = (unsigned char)x;
				}
				plen = NOTE_PAYLOAD;
			} else {
				plen = rows_payload(payload, (int64_t)i);
			}
			uint64_t seq = seq_of(s, i);
			if (seq > 1 && !have_prev)
				die("internal: generating range [%zu, %zu) starts inside a chain", s->lo, s->hi);
			event_fields f = {
				.seq = seq,
				.prev = seq > 1 ? &prev : NULL,
				.hlc = hlc_of(i),
				.scope = SCOPE,
				.kind = s->kind == GEN_NOTE ? NOTE_KIND : ROWS_KIND,
				.idem = NULL,
				.payload = payload,
				.payload_len = plen,
			};
			struct weft_event *ev;
			weft_err err;
			if (codec_event_build(&ev, &f, author_sk[a], 0, &err) < 0)
				die("building an event: %s", err.msg);
			if (ev->enc_len > s->slot)
				die("internal: event of %zu bytes over the slot of %zu", ev->enc_len, s->slot);
			memcpy(s->arena + (i - s->lo) * s->slot, ev->enc, ev->enc_len);
			s->len[i - s->lo] = (uint32_t)ev->enc_len;
			j->payload_bytes += plen;
			prev = ev->id;
			have_prev = 1;
			codec_event_free(ev);
		}
	}
	return NULL;
}

static void gen(evset *s, gen_kind kind, size_t N, size_t diff, size_t lo, size_t hi)
{
	memset(s, 0, sizeof(*s));
	s->N = N;
	s->diff = diff;
	s->lo = lo;
	s->hi = hi;
	s->kind = kind;
	s->slot = EVENT_FIXED_HEADER + 16 + 64 + 1 + 160;
	s->arena = malloc((hi - lo) * s->slot);
	s->len = calloc(hi - lo, sizeof(uint32_t));
	if (!s->arena || !s->len)
		die("out of memory generating %zu events", hi - lo);
	gen_job jobs[2];
	pthread_t th[2];
	for (int t = 0; t < 2; t++) {
		jobs[t] = (gen_job){s, t, 2, 0};
		if (pthread_create(&th[t], NULL, gen_worker, &jobs[t]) != 0)
			die("cannot start a thread");
	}
	for (int t = 0; t < 2; t++) {
		pthread_join(th[t], NULL);
		s->payload_bytes += jobs[t].payload_bytes;
	}
}

static void evset_free(evset *s)
{
	free(s->arena);
	free(s->len);
	memset(s, 0, sizeof(*s));
}

/* Ingests the events [lo, hi) of s whose author passes the filter (-1: all). */
static double ingest_range(weft_db *db, const evset *s, size_t lo, size_t hi, int only_author)
{
	weft_bytes *b = malloc(INGEST_CHUNK * sizeof(weft_bytes));
	int *res = malloc(INGEST_CHUNK * sizeof(int));
	if (!b || !res)
		die("out of memory");
	double t = 0;
	size_t i = lo;
	while (i < hi) {
		size_t n = 0;
		for (; i < hi && n < INGEST_CHUNK; i++) {
			if (only_author >= 0 && author_of(s, i) != only_author)
				continue;
			b[n].data = s->arena + (i - s->lo) * s->slot;
			b[n].len = s->len[i - s->lo];
			n++;
		}
		if (!n)
			continue;
		double t0 = now_s();
		if (weft_db_ingest_batch(res, db, b, n) < 0)
			die("ingest: %s", weft_errmsg(db));
		t += now_s() - t0;
		for (size_t k = 0; k < n; k++)
			if (res[k] != WEFT_INGEST_NEW)
				die("ingest: event refused or duplicate (%d: %s)", res[k], weft_errmsg(db));
	}
	free(b);
	free(res);
	return t;
}

/* ---------------------------------------------------------- built stores */

/* Paths of the cached stores of a log universe of size N:
 * C = common events, A = C + author 8, B = C + author 9, S = all N. */
static void log_path(char *out, size_t cap, size_t N, char which)
{
	char name[128];
	snprintf(name, sizeof(name), "log-v%d-%s-%zu-%c.db", GEN_VERSION, cfg.schema_tag, N, which);
	path_join(out, cap, cfg.cache, name);
}

static void rows_path(char *out, size_t cap, size_t N)
{
	char name[128];
	snprintf(name, sizeof(name), "rows-v%d-%s-%zu.db", GEN_VERSION, cfg.schema_tag, N);
	path_join(out, cap, cfg.cache, name);
}

/* Cached stores are only valid for the store layout that built them: tag
 * them with a hash of the SQL schema of a new store. */
static void schema_tag_init(void)
{
	char p[4200];
	fresh_store_path(p, sizeof(p), "schema-probe.db");
	weft_db_close(open_store(p, 1));
	sqlite3 *s;
	sqlite3_stmt *st;
	if (sqlite3_open_v2(p, &s, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(s, "SELECT group_concat(coalesce(sql, name), ';') FROM "
	                       "(SELECT sql, name FROM sqlite_schema ORDER BY name)", -1, &st, NULL) != SQLITE_OK)
		die("reading the store schema: %s", sqlite3_errmsg(s));
	unsigned char h[8];
	const unsigned char *sql = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_text(st, 0) : NULL;
	crypto_generichash(h, sizeof(h), sql, sql ? strlen((const char *)sql) : 0, NULL, 0);
	for (int i = 0; i < 8; i++)
		snprintf(cfg.schema_tag + 2 * i, 3, "%02x", h[i]);
	sqlite3_finalize(st);
	sqlite3_close(s);
	rm_store(p);
}

static void build_log_stores(size_t N)
{
	char c[4200], a[4200], b[4200], s[4200];
	log_path(c, sizeof(c), N, 'C');
	log_path(a, sizeof(a), N, 'A');
	log_path(b, sizeof(b), N, 'B');
	log_path(s, sizeof(s), N, 'S');
	if (file_exists(c) && file_exists(a) && file_exists(b) && file_exists(s))
		return;
	char lbl[24];
	note("building the %s-event stores (cached in %s)", size_label(lbl, N), cfg.cache);
	double t0 = now_s();
	evset ev;
	gen(&ev, GEN_NOTE, N, DIFF, 0, N);
	note("generated %zu signed events in %.1f s", N, now_s() - t0);
	rm_store(c);
	weft_db *db = open_store(c, 1);
	double ti = ingest_range(db, &ev, 0, N - DIFF, -1);
	weft_db_close(db);
	note("ingested %zu events in %.1f s (%.0f events/s)", N - DIFF, ti, (double)(N - DIFF) / ti);
	copy_store(c, a);
	db = open_store(a, 0);
	ingest_range(db, &ev, N - DIFF, N, COMMON_AUTHORS);
	weft_db_close(db);
	copy_store(c, b);
	db = open_store(b, 0);
	ingest_range(db, &ev, N - DIFF, N, COMMON_AUTHORS + 1);
	weft_db_close(db);
	char tmp[4300];
	fmt_path(tmp, sizeof(tmp), "%s.tmp", s);
	copy_store(a, tmp);
	db = open_store(tmp, 0);
	ingest_range(db, &ev, N - DIFF, N, COMMON_AUTHORS + 1);
	if (store_events(db) != N)
		die("built store S has %llu events, not %zu", (unsigned long long)store_events(db), N);
	weft_db_close(db);
	copy_store(tmp, s);
	rm_store(tmp);
	evset_free(&ev);
	note("stores built in %.1f s", now_s() - t0);
}

static void build_rows_store(size_t N)
{
	char p[4200];
	rows_path(p, sizeof(p), N);
	if (file_exists(p))
		return;
	char lbl[24], tmp[4300];
	note("building the %s-event derived-table store (cached)", size_label(lbl, N));
	double t0 = now_s();
	evset ev;
	gen(&ev, GEN_ROWS, N, 0, 0, N);
	fmt_path(tmp, sizeof(tmp), "%s.tmp", p);
	rm_store(tmp);
	weft_db *db = open_store(tmp, 1);
	ingest_range(db, &ev, 0, N, -1);
	/* Declaring the schema after the log is in derives the table once. */
	if (weft_schema_define(db, ROWS_SCHEMA) < 0)
		die("schema: %s", weft_errmsg(db));
	int64_t rows = query_count(db, "SELECT count(*) FROM item");
	if (rows != (int64_t)N)
		die("derived table has %lld rows, not %zu: did the rows payload format change? "
		    "(bench/weft_bench.c rows_payload mirrors core/txn.c)", (long long)rows, N);
	weft_db_close(db);
	copy_store(tmp, p);
	rm_store(tmp);
	evset_free(&ev);
	note("built in %.1f s", now_s() - t0);
}

/*
 * Which b-trees a commit dirties: runs ntx transactions with automatic
 * checkpoints off, then reads the page number of every frame in the WAL and
 * names its b-tree with dbstat. Diagnostic only (not timed).
 */
static void wal_breakdown(const char *who, sqlite3 *s, const char *path, int ntx)
{
	char wal[4200];
	fmt_path(wal, sizeof(wal), "%s-wal", path);
	FILE *f = fopen(wal, "rb");
	unsigned char hdr[32];
	if (!f || fread(hdr, 1, 32, f) != 32) {
		note("%s: cannot read %s", who, wal);
		if (f)
			fclose(f);
		return;
	}
	uint32_t psz = (uint32_t)hdr[8] << 24 | (uint32_t)hdr[9] << 16 | (uint32_t)hdr[10] << 8 | hdr[11];
	unsigned char *frame = malloc(24 + (size_t)psz);
	uint32_t *pages = NULL;
	size_t n = 0, cap = 0;
	while (frame && fread(frame, 1, 24 + (size_t)psz, f) == 24 + (size_t)psz) {
		if (n == cap) {
			cap = cap ? 2 * cap : 1024;
			pages = realloc(pages, cap * sizeof(uint32_t));
			if (!pages)
				die("out of memory");
		}
		pages[n++] = (uint32_t)frame[0] << 24 | (uint32_t)frame[1] << 16 | (uint32_t)frame[2] << 8 | frame[3];
	}
	fclose(f);
	free(frame);
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(s, "SELECT name FROM dbstat WHERE pageno = ?1", -1, &st, NULL) != SQLITE_OK)
		die("dbstat: %s", sqlite3_errmsg(s));
	struct {
		char name[64];
		size_t frames;
	} by[32];
	size_t nb = 0;
	for (size_t i = 0; i < n; i++) {
		sqlite3_bind_int64(st, 1, pages[i]);
		const char *name = sqlite3_step(st) == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : "(free)";
		size_t k = 0;
		while (k < nb && strcmp(by[k].name, name) != 0)
			k++;
		if (k == nb && nb < 32) {
			snprintf(by[nb].name, sizeof(by[nb].name), "%s", name);
			by[nb++].frames = 0;
		}
		if (k < nb)
			by[k].frames++;
		sqlite3_reset(st);
	}
	sqlite3_finalize(st);
	free(pages);
	fprintf(stderr, "  .. %s: %.1f pages written per commit:", who, (double)n / ntx);
	for (size_t k = 0; k < nb; k++)
		fprintf(stderr, " %s %.2f;", by[k].name, (double)by[k].frames / ntx);
	fputc('\n', stderr);
}

static void diag_pages(int ntx, int per_tx)
{
	char wp[4200], bp[4200];
	/* Warm up past the first pages of each b-tree, then look at ntx commits. */
	int warm = 200;
	path_join(bp, sizeof(bp), cfg.dir, "diag-plain.db");
	sqlite3 *s = plain_open(bp);
	sqlite3_stmt *ins = plain_insert(s);
	for (int t = 0; t < warm + ntx; t++) {
		if (t == warm) {
			plain_exec(s, "PRAGMA wal_checkpoint(TRUNCATE); PRAGMA wal_autocheckpoint=0");
		}
		plain_exec(s, "BEGIN");
		for (int k = 0; k < per_tx; k++)
			plain_row(s, ins, (int64_t)t * per_tx + k);
		plain_exec(s, "COMMIT");
	}
	sqlite3_finalize(ins);
	wal_breakdown("SQLite", s, bp, ntx);
	sqlite3_close(s);
	rm_store(bp);

	fresh_store_path(wp, sizeof(wp), "diag-weft.db");
	weft_db *db = open_store(wp, 1);
	if (weft_schema_define(db, ROWS_SCHEMA) < 0)
		die("schema: %s", weft_errmsg(db));
	for (int t = 0; t < warm + ntx; t++) {
		if (t == warm)
			sqlite3_exec(db->sql, "PRAGMA wal_checkpoint(TRUNCATE); PRAGMA wal_autocheckpoint=0", NULL, NULL, NULL);
		weft_txn *tx;
		if (weft_txn_begin(&tx, db, SCOPE, NULL) < 0)
			die("txn begin: %s", weft_errmsg(db));
		for (int k = 0; k < per_tx; k++)
			weft_row(tx, db, (int64_t)t * per_tx + k);
		if (weft_txn_commit(NULL, tx) < 0)
			die("txn commit: %s", weft_errmsg(db));
	}
	wal_breakdown("weft", db->sql, wp, ntx);
	weft_db_close(db);
	rm_store(wp);
}

/* ---------------------------------------------------------- target 1, 2 */

static void bench_txn(int target, int ntx, int per_tx)
{
	double w[MAX_RUNS], b[MAX_RUNS];
	char wp[4200], bp[4200];
	int rows = ntx * per_tx;
	double *wlat = malloc((size_t)ntx * sizeof(double)), *bl = malloc((size_t)ntx * sizeof(double));
	if (!wlat || !bl)
		die("out of memory");
	for (int r = 0; r < cfg.runs; r++) {
		/* Baseline: plain SQLite, same rows, same batching. */
		path_join(bp, sizeof(bp), cfg.dir, "plain.db");
		sqlite3 *s = plain_open(bp);
		sqlite3_stmt *ins = plain_insert(s);
		double t0 = now_s(), c0 = cpu_s(), io0 = written_bytes();
		for (int t = 0; t < ntx; t++) {
			double c = now_s();
			plain_exec(s, "BEGIN");
			for (int k = 0; k < per_tx; k++)
				plain_row(s, ins, (int64_t)t * per_tx + k);
			plain_exec(s, "COMMIT");
			bl[t] = now_s() - c;
		}
		b[r] = now_s() - t0;
		double bc = cpu_s() - c0, bio = written_bytes() - io0;
		sqlite3_finalize(ins);
		sqlite3_close(s);
		rm_store(bp);

		fresh_store_path(wp, sizeof(wp), "txn.db");
		weft_db *db = open_store(wp, 1);
		if (weft_schema_define(db, ROWS_SCHEMA) < 0)
			die("schema: %s", weft_errmsg(db));
		t0 = now_s();
		c0 = cpu_s();
		io0 = written_bytes();
		for (int t = 0; t < ntx; t++) {
			double c = now_s();
			weft_txn *tx;
			if (weft_txn_begin(&tx, db, SCOPE, NULL) < 0)
				die("txn begin: %s", weft_errmsg(db));
			for (int k = 0; k < per_tx; k++)
				weft_row(tx, db, (int64_t)t * per_tx + k);
			if (weft_txn_commit(NULL, tx) < 0)
				die("txn commit: %s", weft_errmsg(db));
			wlat[t] = now_s() - c;
		}
		w[r] = now_s() - t0;
		double wc = cpu_s() - c0, wio = written_bytes() - io0;
		if (query_count(db, "SELECT count(*) FROM item") != rows)
			die("weft table has the wrong number of rows");
		weft_db_close(db);
		rm_store(wp);
		note("target %d run %d: weft %.3f s (cpu %.3f s, wrote %.1f KiB/txn), sqlite %.3f s (cpu %.3f s, "
		     "wrote %.1f KiB/txn)", target, r + 1, w[r], wc, wio / 1024 / ntx, b[r], bc, bio / 1024 / ntx);
		char ws[96], bs[96];
		commit_spread(ws, sizeof(ws), wlat, ntx);
		commit_spread(bs, sizeof(bs), bl, ntx);
		note("  per commit: weft %s; sqlite %s", ws, bs);
	}
	free(wlat);
	free(bl);
	double mw = median(w, cfg.runs), mb = median(b, cfg.runs), ratio = mw / mb;
	char sw[40], sb[40], t1[16], t2[16], rs[24], wl[80], lbl[24];
	double limit = target == 1 ? 2.5 : 1.25;
	snprintf(sw, sizeof(sw), "%s (%s/txn)", fmt_time(t1, mw), fmt_time(t2, mw / ntx));
	snprintf(sb, sizeof(sb), "%s (%s/txn)", fmt_time(t1, mb), fmt_time(t2, mb / ntx));
	snprintf(rs, sizeof(rs), "%.2f×", ratio);
	snprintf(wl, sizeof(wl), "%d durable txns × %d put%s", ntx, per_tx, per_tx > 1 ? "s" : "");
	char tg[28];
	snprintf(tg, sizeof(tg), "≤ %s× SQLite", target == 1 ? "2.5" : "1.25");
	add_result(target == 1 ? "1" : "2", wl, size_label(lbl, (size_t)rows), sw, sb, rs, tg, ratio <= limit);
	diag_pages(cfg.quick ? 20 : 100, per_tx);
}

/* ------------------------------------------------------------- target 3 */

static double t3_rate[8];
static size_t t3_size[8];
static int t3_n;

/* Single-core verify rate of the events stored in path. */
static double verify_rate(const char *path, size_t N)
{
	weft_db *db = open_store(path, 0);
	weft_iter *it;
	if (weft_db_iter(&it, db, NULL) < 0)
		die("iter: %s", weft_errmsg(db));
	unsigned char *pk = malloc(N * 32), *msg = malloc(N * 48), *sig = malloc(N * 64);
	if (!pk || !msg || !sig)
		die("out of memory");
	size_t n = 0;
	const weft_event *ev;
	int rc;
	while ((rc = weft_iter_next(&ev, it)) == WEFT_OK && n < N) {
		memcpy(pk + n * 32, weft_event_author(ev), 32);
		memcpy(msg + n * 48, EVENT_SIG_DOMAIN, sizeof(EVENT_SIG_DOMAIN));
		memcpy(msg + n * 48 + sizeof(EVENT_SIG_DOMAIN), weft_event_id(ev)->bytes, 32);
		memcpy(sig + n * 64, ev->sig, 64);
		n++;
	}
	weft_iter_free(it);
	weft_db_close(db);
	if (n != N)
		die("read %zu events from %s, expected %zu", n, path, N);
	double t0 = now_s();
	for (size_t i = 0; i < n; i++)
		if (crypto_sign_verify_detached(sig + i * 64, msg + i * 48, sizeof(EVENT_SIG_DOMAIN) + 32, pk + i * 32) != 0)
			die("event %zu does not verify", i);
	double t = now_s() - t0;
	free(pk);
	free(msg);
	free(sig);
	return (double)n / t;
}

/* Which b-trees an ingest batch of 256 events (a session's batch) dirties
 * in a store of N events: the 1,000 newest events into the common store. */
static void diag_ingest_pages(size_t N)
{
	char c[4200], t[4200];
	log_path(c, sizeof(c), N, 'C');
	path_join(t, sizeof(t), cfg.dir, "diag-ingest.db");
	copy_store(c, t);
	evset ev;
	gen(&ev, GEN_NOTE, N, DIFF, N - DIFF, N);
	weft_db *db = open_store(t, 0);
	sqlite3_exec(db->sql, "PRAGMA wal_autocheckpoint=0", NULL, NULL, NULL);
	int batches = 0;
	for (size_t i = N - DIFF; i < N; i += 256, batches++)
		ingest_range(db, &ev, i, i + 256 < N ? i + 256 : N, -1);
	char who[64], lbl[24];
	snprintf(who, sizeof(who), "ingest into %s events, per 256-event batch", size_label(lbl, N));
	wal_breakdown(who, db->sql, t, batches);
	weft_db_close(db);
	rm_store(t);
	evset_free(&ev);
}

static void bench_ingest_local(size_t N, int runs)
{
	build_log_stores(N);
	char src[4200], dst[4200];
	log_path(src, sizeof(src), N, 'S');
	double w[MAX_RUNS], b[MAX_RUNS];
	for (int r = 0; r < runs; r++) {
		b[r] = verify_rate(src, N);
		fresh_store_path(dst, sizeof(dst), "ingest.db");
		weft_db *to = open_store(dst, 1), *from = open_store(src, 0);
		weft_session_stats st;
		double t0 = now_s(), c0 = cpu_s();
		if (weft_sync_local(&st, to, from, NULL) < 0)
			die("sync_local: %s", weft_errmsg(to));
		double t = now_s() - t0, c = cpu_s() - c0;
		if (st.events_received != N)
			die("sync_local received %llu events, not %zu", (unsigned long long)st.events_received, N);
		weft_db_close(from);
		weft_db_close(to);
		rm_store(dst);
		w[r] = (double)N / t;
		note("target 3 [%zu] run %d: weft %.0f events/s (%.1f s, cpu %.1f s), verify %.0f/s", N, r + 1, w[r], t,
		     c, b[r]);
	}
	double mw = median(w, runs), mb = median(b, runs);
	if (t3_n < 8) {
		t3_size[t3_n] = N;
		t3_rate[t3_n++] = mw;
	}
	char sw[40], sb[40], rs[24], lbl[24], sz[40];
	snprintf(sw, sizeof(sw), "%.0f events/s", mw);
	snprintf(sb, sizeof(sb), "%.0f verifies/s (1 core)", mb);
	snprintf(rs, sizeof(rs), "%.2f×", mw / mb);
	snprintf(sz, sizeof(sz), "%s%s", size_label(lbl, N), runs == 1 ? " (1 run)" : "");
	add_result("3", "ingest in process (weft_sync_local)", sz, sw, sb, rs, "≥ 1.3× verify rate",
	           mw / mb >= 1.3);
	diag_ingest_pages(N);
}

/* ------------------------------------------------------------- processes */

/*
 * Child processes are started by a small "spawner" forked at startup, not by
 * this process: Linux gives an exec'd process the peak RSS of the address
 * space it replaced (ours, vfork-shared, hundreds of MiB once events are
 * generated), so ru_maxrss of a child spawned from here would report our
 * peak, not its own. The spawner stays a few MiB, so a child's ru_maxrss is
 * its own peak (floored at the spawner's size).
 */
static int spawner_req = -1, spawner_rep = -1;
static pid_t spawner_pid = -1;

static void put_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t k = write(fd, c, n);
		if (k <= 0)
			die("spawner pipe: %s", strerror(errno));
		c += k;
		n -= (size_t)k;
	}
}

static int get_all(int fd, void *p, size_t n)
{
	char *c = p;
	while (n) {
		ssize_t k = read(fd, c, n);
		if (k <= 0)
			return -1;
		c += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Request: 'S' len bytes (NUL-separated argv, then out, then err paths) ->
 * pid; 'W' pid -> status, maxrss (KiB). */
static void spawner_loop(int req, int rep)
{
	char cmd;
	while (get_all(req, &cmd, 1) == 0) {
		if (cmd == 'S') {
			uint32_t len;
			static char buf[65536];
			if (get_all(req, &len, 4) < 0 || len >= sizeof(buf) || get_all(req, buf, len) < 0)
				_exit(1);
			buf[len] = '\0';
			char *args[64];
			int n = 0;
			for (char *c = buf; c < buf + len && n < 63; c += strlen(c) + 1)
				args[n++] = c;
			if (n < 3)
				_exit(1);
			const char *out = args[n - 2], *err = args[n - 1];
			args[n - 2] = NULL;
			posix_spawn_file_actions_t fa;
			posix_spawn_file_actions_init(&fa);
			posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
			posix_spawn_file_actions_addopen(&fa, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
			pid_t pid;
			int rc = posix_spawn(&pid, args[0], &fa, NULL, args, environ);
			posix_spawn_file_actions_destroy(&fa);
			int32_t r = rc == 0 ? (int32_t)pid : -rc;
			put_all(rep, &r, 4);
		} else if (cmd == 'W') {
			int32_t pid, st[2] = {-1, 0};
			if (get_all(req, &pid, 4) < 0)
				_exit(1);
			int status;
			struct rusage ru;
			if (wait4((pid_t)pid, &status, 0, &ru) == pid) {
				st[0] = status;
				st[1] = (int32_t)ru.ru_maxrss;
			}
			put_all(rep, st, 8);
		} else {
			_exit(1);
		}
	}
	_exit(0);
}

static void spawner_start(void)
{
	int a[2], b[2];
	if (pipe(a) < 0 || pipe(b) < 0)
		die("pipe: %s", strerror(errno));
	pid_t pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		close(a[1]);
		close(b[0]);
		spawner_loop(a[0], b[1]);
	}
	close(a[0]);
	close(b[1]);
	spawner_req = a[1];
	spawner_rep = b[0];
	spawner_pid = pid;
}

/* Closing its request pipe makes the spawner exit. */
static void spawner_stop(void)
{
	close(spawner_req);
	close(spawner_rep);
	if (spawner_pid > 0)
		waitpid(spawner_pid, NULL, 0);
}

static pid_t spawn(char *const argv[], const char *out, const char *err)
{
	char buf[65536];
	size_t len = 0;
	for (int i = 0; argv[i]; i++) {
		size_t n = strlen(argv[i]) + 1;
		if (len + n > sizeof(buf) - 8192)
			die("command line too long");
		memcpy(buf + len, argv[i], n);
		len += n;
	}
	const char *paths[2] = {out, err};
	for (int i = 0; i < 2; i++) {
		size_t n = strlen(paths[i]) + 1;
		memcpy(buf + len, paths[i], n);
		len += n;
	}
	uint32_t l = (uint32_t)len;
	put_all(spawner_req, "S", 1);
	put_all(spawner_req, &l, 4);
	put_all(spawner_req, buf, len);
	int32_t r;
	if (get_all(spawner_rep, &r, 4) < 0)
		die("the spawner died");
	if (r < 0)
		die("cannot run %s: %s", argv[0], strerror(-r));
	return (pid_t)r;
}

/* Waits for pid; returns its peak RSS in KiB, dies if it failed. */
static long wait_child(pid_t pid, const char *what, const char *errfile, int allow_signal)
{
	int32_t p = (int32_t)pid, st[2];
	put_all(spawner_req, "W", 1);
	put_all(spawner_req, &p, 4);
	if (get_all(spawner_rep, st, 8) < 0)
		die("the spawner died");
	int status = st[0];
	int ok = status != -1 && (WIFEXITED(status) ? WEXITSTATUS(status) == 0 : allow_signal);
	if (!ok) {
		char buf[2048] = "";
		FILE *f = fopen(errfile, "r");
		if (f) {
			size_t n = fread(buf, 1, sizeof(buf) - 1, f);
			buf[n] = '\0';
			fclose(f);
		}
		die("%s failed (status %d): %s", what, status, buf);
	}
	return st[1];
}

static void read_file(char *buf, size_t cap, const char *path)
{
	buf[0] = '\0';
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	size_t n = fread(buf, 1, cap - 1, f);
	buf[n] = '\0';
	fclose(f);
}

/* ------------------------------------------------------------- target 4 */

/*
 * One sync over TLS on 127.0.0.1 between two processes: `weft serve` on srv
 * and `weft sync` from cli (both must trust each other). Returns the wall
 * time of `weft sync` (process start to exit) and both peak RSS (KiB).
 */
static double tls_sync(const char *srv, const char *cli, long *rss_cli, long *rss_srv)
{
	char out[4200], err[4200], sout[4200], serr[4200];
	path_join(out, sizeof(out), cfg.dir, "sync.out");
	path_join(err, sizeof(err), cfg.dir, "sync.err");
	path_join(sout, sizeof(sout), cfg.dir, "serve.out");
	path_join(serr, sizeof(serr), cfg.dir, "serve.err");
	char *sargv[] = {cfg.weft, "--db", (char *)srv, "serve", "--listen", "127.0.0.1:0", NULL};
	pid_t sp = spawn(sargv, sout, serr);
	char line[4096], addr[128] = "";
	for (int i = 0; i < 400 && !addr[0]; i++) {
		read_file(line, sizeof(line), sout);
		if (sscanf(line, "listening on %127s as", addr) != 1) {
			addr[0] = '\0';
			usleep(25000);
		}
	}
	if (!addr[0]) {
		kill(sp, SIGKILL);
		wait_child(sp, "weft serve", serr, 1);
		die("weft serve did not start listening");
	}
	char *cargv[] = {cfg.weft, "--db", (char *)cli, "sync", addr, NULL};
	double t0 = now_s();
	pid_t cp = spawn(cargv, out, err);
	*rss_cli = wait_child(cp, "weft sync", err, 0);
	double t = now_s() - t0;
	kill(sp, SIGTERM);
	*rss_srv = wait_child(sp, "weft serve", serr, 1);
	return t;
}

static void trust_each_other(const char *x, const char *y)
{
	weft_db *a = open_store(x, 0), *b = open_store(y, 0);
	if (weft_trust_add(a, weft_db_public_key(b), NULL, 0, WEFT_TRUST_READ | WEFT_TRUST_WRITE) < 0 ||
	    weft_trust_add(b, weft_db_public_key(a), NULL, 0, WEFT_TRUST_READ | WEFT_TRUST_WRITE) < 0)
		die("trust: %s", weft_error_last());
	weft_db_close(a);
	weft_db_close(b);
}

static void bench_ingest_tls(size_t N, int runs)
{
	build_log_stores(N);
	if (!file_exists(cfg.weft))
		die("the weft CLI is not at %s (use --weft)", cfg.weft);
	char src[4200], srv[4200], cli[4200];
	log_path(src, sizeof(src), N, 'S');
	path_join(srv, sizeof(srv), cfg.dir, "tls-server.db");
	path_join(cli, sizeof(cli), cfg.dir, "tls-client.db");
	double w[MAX_RUNS];
	long rc_max = 0, rs_max = 0;
	for (int r = 0; r < runs; r++) {
		copy_store(src, srv);
		rm_store(cli);
		weft_db_close(open_store(cli, 1));
		trust_each_other(srv, cli);
		long rss_c, rss_s;
		double t = tls_sync(srv, cli, &rss_c, &rss_s);
		weft_db *c = open_store(cli, 0);
		uint64_t got = store_events(c);
		weft_db_close(c);
		if (got != N)
			die("after weft sync the client holds %llu events, not %zu", (unsigned long long)got, N);
		w[r] = (double)N / t;
		if (rss_c > rc_max)
			rc_max = rss_c;
		if (rss_s > rs_max)
			rs_max = rss_s;
		note("target 4 [%zu] run %d: %.0f events/s (%.1f s), peak RSS client %ld KiB, server %ld KiB", N, r + 1,
		     w[r], t, rss_c, rss_s);
		rm_store(cli);
		rm_store(srv);
	}
	double mw = median(w, runs), base = 0;
	for (int i = 0; i < t3_n; i++)
		if (t3_size[i] == N)
			base = t3_rate[i];
	char sw[40], sb[40], rs[24], lbl[24], sz[40];
	snprintf(sz, sizeof(sz), "%s%s", size_label(lbl, N), runs == 1 ? " (1 run)" : "");
	snprintf(sw, sizeof(sw), "%.0f events/s", mw);
	if (base > 0) {
		snprintf(sb, sizeof(sb), "%.0f events/s (result 3)", base);
		snprintf(rs, sizeof(rs), "%.2f×", mw / base);
	} else {
		snprintf(sb, sizeof(sb), "(target 3 not run)");
		snprintf(rs, sizeof(rs), "—");
	}
	add_result("4", "same over TLS, weft serve + weft sync", sz, sw, sb, rs, "≥ 0.8× result 3",
	           base > 0 ? mw / base >= 0.8 : -1);
	char a[40];
	snprintf(a, sizeof(a), "sync %.1f / serve %.1f MiB", (double)rc_max / 1024, (double)rs_max / 1024);
	add_result("7", "peak RSS during 4 (max of runs)", sz, a, "—", "—", "≤ 128 MiB per process",
	           N >= 1000000 ? rc_max <= 131072 && rs_max <= 131072 : -1);
}

/* ------------------------------------------------------------- target 5 */

/*
 * Gives a copied store a device identity of its own (A and B are copies of
 * one built store, so they start with the same device key; TLS pairing
 * needs two). The stores hold no events of their own device, so only the
 * recorded key and the key file change.
 */
static void reidentify(const char *path)
{
	identity id;
	weft_err err;
	char key[4200];
	fmt_path(key, sizeof(key), "%s.key", path);
	unlink(key);
	if (identity_from_seed(&id, NULL, &err) < 0 || identity_save(&id, key, NULL, &err) < 0)
		die("new identity: %s", err.msg);
	sqlite3 *s;
	sqlite3_stmt *st;
	if (sqlite3_open_v2(path, &s, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(s, "UPDATE weft_meta SET value = ?1 WHERE key = 'device_pk'", -1, &st, NULL) != SQLITE_OK)
		die("reidentify %s: %s", path, sqlite3_errmsg(s));
	sqlite3_bind_blob(st, 1, id.pk, 32, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE || sqlite3_changes(s) != 1)
		die("reidentify %s: %s", path, sqlite3_errmsg(s));
	sqlite3_finalize(st);
	sqlite3_close(s);
	identity_wipe(&id);
}

/* Child: syncs two stores in process, prints its figures and peak RSS. */
static int child_sync(const char *a, const char *b)
{
	weft_db *x = open_store(a, 0), *y = open_store(b, 0);
	weft_session_stats st;
	double t0 = now_s();
	int rc = weft_sync_local(&st, x, y, NULL);
	double t = now_s() - t0;
	if (rc < 0)
		die("sync_local: %s", weft_errmsg(x));
	weft_db_close(x);
	weft_db_close(y);
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	printf("%.6f %llu %llu %llu %llu %ld\n", t, (unsigned long long)st.round_trips,
	       (unsigned long long)st.reconcile_bytes, (unsigned long long)st.events_sent,
	       (unsigned long long)st.events_received, ru.ru_maxrss);
	return 0;
}

static void bench_reconcile(size_t N)
{
	build_log_stores(N);
	char A[4200], B[4200], a[4200], b[4200], a2[4200], b2[4200], out[4200], err[4200];
	log_path(A, sizeof(A), N, 'A');
	log_path(B, sizeof(B), N, 'B');
	path_join(a, sizeof(a), cfg.dir, "recon-a.db");
	path_join(b, sizeof(b), cfg.dir, "recon-b.db");
	path_join(a2, sizeof(a2), cfg.dir, "recon-a2.db");
	path_join(b2, sizeof(b2), cfg.dir, "recon-b2.db");
	path_join(out, sizeof(out), cfg.dir, "child.out");
	path_join(err, sizeof(err), cfg.dir, "child.err");
	evset ev;
	gen(&ev, GEN_NOTE, N, DIFF, N - DIFF, N);
	double w[MAX_RUNS], base[MAX_RUNS];
	unsigned long long rt = 0, bytes = 0;
	long rss = 0;
	for (int r = 0; r < cfg.runs; r++) {
		/* Baseline: each side stores the other's 500 events, nothing else. */
		copy_store(A, a2);
		copy_store(B, b2);
		weft_db *x = open_store(a2, 0), *y = open_store(b2, 0);
		base[r] = ingest_range(x, &ev, N - DIFF, N, COMMON_AUTHORS + 1) +
		          ingest_range(y, &ev, N - DIFF, N, COMMON_AUTHORS);
		weft_db_close(x);
		weft_db_close(y);
		rm_store(a2);
		rm_store(b2);

		copy_store(A, a);
		copy_store(B, b);
		reidentify(b);
		char *argv[] = {cfg.self, "--child-sync", a, b, NULL};
		pid_t p = spawn(argv, out, err);
		wait_child(p, "reconcile child", err, 0);
		char line[512];
		read_file(line, sizeof(line), out);
		unsigned long long sent, recv;
		long crss;
		if (sscanf(line, "%lf %llu %llu %llu %llu %ld", &w[r], &rt, &bytes, &sent, &recv, &crss) != 6)
			die("reconcile child printed \"%s\"", line);
		if (sent != DIFF / 2 || recv != DIFF / 2)
			die("reconcile moved %llu/%llu events, expected %d each way", sent, recv, DIFF / 2);
		if (crss > rss)
			rss = crss;
		rm_store(a);
		rm_store(b);
		note("target 5 [%zu] run %d: sync %.3f s (%llu round trips, %llu B), baseline %.3f s, RSS %ld KiB",
		     N, r + 1, w[r], rt, bytes, base[r], crss);
	}
	evset_free(&ev);

	/* Target 7: the same reconciliation as two processes over TLS (one
	 * device each), for the peak RSS of each side. */
	copy_store(A, a);
	copy_store(B, b);
	reidentify(b);
	trust_each_other(a, b);
	long rss_c, rss_s;
	double tt = tls_sync(b, a, &rss_c, &rss_s);
	weft_db *x = open_store(a, 0), *y = open_store(b, 0);
	if (store_events(x) != N || store_events(y) != N)
		die("after the TLS reconciliation the stores hold %llu and %llu events, not %zu",
		    (unsigned long long)store_events(x), (unsigned long long)store_events(y), N);
	weft_db_close(x);
	weft_db_close(y);
	rm_store(a);
	rm_store(b);
	note("target 5 [%zu] over TLS: %.3f s, peak RSS weft sync %ld KiB, weft serve %ld KiB", N, tt, rss_c, rss_s);

	double mw = median(w, cfg.runs), mb = median(base, cfg.runs);
	char sw[40], sb[40], rs[24], lbl[24], t1[16], t2[16];
	const char *sz = size_label(lbl, N);
	snprintf(sw, sizeof(sw), "%s", fmt_time(t1, mw));
	snprintf(sb, sizeof(sb), "%s (ingest 2×500)", fmt_time(t2, mb));
	snprintf(rs, sizeof(rs), "%.2f×", mw / mb);
	add_result("5", "reconcile 2 stores, 1,000 newest differ: time", sz, sw, sb, rs, "≤ 2× baseline", mw / mb <= 2);
	snprintf(sw, sizeof(sw), "%llu", rt);
	add_result("5", "  reconciliation round trips", sz, sw, "—", "—", "≤ 4", rt <= 4);
	snprintf(sw, sizeof(sw), "%llu B (%.1f B/diff)", bytes, (double)bytes / DIFF);
	snprintf(sb, sizeof(sb), "%d B allowed", 64 * DIFF + 4096);
	add_result("5", "  reconciliation bytes", sz, sw, sb, "—", "≤ 64 B/diff + 4 KiB", bytes <= 64 * DIFF + 4096);
	snprintf(sw, sizeof(sw), "sync %.1f / serve %.1f MiB", (double)rss_c / 1024, (double)rss_s / 1024);
	snprintf(sb, sizeof(sb), "in-process, both sides: %.1f MiB", (double)rss / 1024);
	add_result("7", "peak RSS during 5 (over TLS, one process per side)", sz, sw, sb, "—", "≤ 128 MiB per process",
	           N >= 1000000 ? rss_c <= 131072 && rss_s <= 131072 : -1);
}

/* ------------------------------------------------------------- target 6 */

static void bench_rebuild(size_t N)
{
	build_rows_store(N);
	char p[4200], bp[4200];
	rows_path(p, sizeof(p), N);
	path_join(bp, sizeof(bp), cfg.dir, "plain-rebuild.db");
	double w[MAX_RUNS], b[MAX_RUNS];
	weft_db *db = open_store(p, 0);
	for (int r = 0; r < cfg.runs; r++) {
		sqlite3 *s = plain_open(bp);
		sqlite3_stmt *ins = plain_insert(s);
		double t0 = now_s();
		plain_exec(s, "BEGIN");
		for (size_t i = 0; i < N; i++)
			plain_row(s, ins, (int64_t)i);
		plain_exec(s, "COMMIT");
		b[r] = now_s() - t0;
		sqlite3_finalize(ins);
		sqlite3_close(s);
		rm_store(bp);

		t0 = now_s();
		double c0 = cpu_s();
		if (weft_db_rebuild(db, NULL, NULL) < 0)
			die("rebuild: %s", weft_errmsg(db));
		w[r] = now_s() - t0;
		double c = cpu_s() - c0;
		if (query_count(db, "SELECT count(*) FROM item") != (int64_t)N)
			die("rebuilt table has the wrong number of rows");
		note("target 6 [%zu] run %d: rebuild %.3f s (cpu %.3f s), sqlite %.3f s", N, r + 1, w[r], c, b[r]);
	}
	weft_db_close(db);
	double mw = median(w, cfg.runs), mb = median(b, cfg.runs);
	char sw[40], sb[40], rs[24], lbl[24], t1[16], t2[16];
	snprintf(sw, sizeof(sw), "%s", fmt_time(t1, mw));
	snprintf(sb, sizeof(sb), "%s (insert %zu rows)", fmt_time(t2, mb), N);
	snprintf(rs, sizeof(rs), "%.2f×", mw / mb);
	add_result("6", "rebuild derived tables (weft_db_rebuild)", size_label(lbl, N), sw, sb, rs, "≤ 3× SQLite",
	           mw / mb <= 3);
}

/* ------------------------------------------------------------- target 8 */

static void space_breakdown(const char *path, size_t N)
{
	sqlite3 *s;
	if (sqlite3_open_v2(path, &s, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
		return;
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(s, "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 8", -1,
	                       &st, NULL) == SQLITE_OK) {
		fprintf(stderr, "  .. space of %s per event:", strrchr(path, '/') + 1);
		while (sqlite3_step(st) == SQLITE_ROW)
			fprintf(stderr, " %s %.1f B;", sqlite3_column_text(st, 0),
			        (double)sqlite3_column_int64(st, 1) / (double)N);
		fputc('\n', stderr);
		sqlite3_finalize(st);
	}
	sqlite3_close(s);
}

/* Bytes of the pages in use (after checkpoint; free pages left by a
 * rebuild are not counted). */
static double used_bytes(const char *path)
{
	sqlite3 *s;
	double v = (double)file_size(path);
	if (sqlite3_open_v2(path, &s, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
		return v;
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(s, "SELECT (SELECT page_count FROM pragma_page_count) - "
	                       "(SELECT freelist_count FROM pragma_freelist_count), (SELECT page_size FROM pragma_page_size)",
	                       -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		v = (double)sqlite3_column_int64(st, 0) * (double)sqlite3_column_int64(st, 1);
	sqlite3_finalize(st);
	sqlite3_close(s);
	return v;
}

static void bench_space(size_t N)
{
	char p[4200], lbl[24], sw[40], sb[40];
	const char *sz = size_label(lbl, N);
	log_path(p, sizeof(p), N, 'S');
	if (file_exists(p)) {
		double per = used_bytes(p) / (double)N - NOTE_PAYLOAD;
		snprintf(sw, sizeof(sw), "%.0f B/event", per);
		snprintf(sb, sizeof(sb), "payload %d B", NOTE_PAYLOAD);
		add_result("8", "disk per event beyond payload (event log)", sz, sw, sb, "—", "≤ 160 B", per <= 160);
		space_breakdown(p, N);
	}
	rows_path(p, sizeof(p), N);
	if (file_exists(p)) {
		unsigned char buf[256];
		double plen = (double)rows_payload(buf, 0);
		double per = used_bytes(p) / (double)N - plen;
		snprintf(sw, sizeof(sw), "%.0f B/event", per);
		snprintf(sb, sizeof(sb), "payload %.0f B", plen);
		add_result("8", "  same, store with derived table (1 row/event)", sz, sw, sb, "—", "info", -1);
		space_breakdown(p, N);
	}
}

/* ------------------------------------------------------------------ main */

/* The load average: figures from a busy machine are not comparable. */
static const char *loadavg(char out[64])
{
	snprintf(out, 64, "unknown");
	FILE *f = fopen("/proc/loadavg", "r");
	if (f) {
		double a, b, c;
		if (fscanf(f, "%lf %lf %lf", &a, &b, &c) == 3)
			snprintf(out, 64, "%.2f %.2f %.2f", a, b, c);
		fclose(f);
	}
	return out;
}

static void print_header(void)
{
	struct utsname u;
	uname(&u);
	char cpu[256] = "unknown";
	FILE *f = fopen("/proc/cpuinfo", "r");
	int ncpu = 0;
	if (f) {
		char line[512];
		while (fgets(line, sizeof(line), f)) {
			if (strncmp(line, "model name", 10) == 0) {
				ncpu++;
				char *c = strchr(line, ':');
				if (c) {
					snprintf(cpu, sizeof(cpu), "%s", c + 2);
					cpu[strcspn(cpu, "\n")] = '\0';
				}
			}
		}
		fclose(f);
	}
	long mem_kb = 0;
	if ((f = fopen("/proc/meminfo", "r"))) {
		if (fscanf(f, "MemTotal: %ld kB", &mem_kb) != 1)
			mem_kb = 0;
		fclose(f);
	}
	char mbed[32];
	mbedtls_version_get_string(mbed);
	time_t t = time(NULL);
	char date[64];
	strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", gmtime(&t));
	printf("weft-bench — weft %s, %s build, %s mode, median of %d runs\n", weft_version(),
#ifdef NDEBUG
	       "Release",
#else
	       "non-Release (asserts on)",
#endif
	       cfg.quick ? "--quick" : cfg.big ? "full (--big)" : "full", cfg.runs);
	printf("machine: %s %s %s, %d × %s, %.1f GiB RAM\n", u.nodename, u.sysname, u.release, ncpu, cpu,
	       (double)mem_kb / 1048576);
	char la[64];
	printf("SQLite %s, libsodium %s, mbedTLS %s; date %s; load average at start %s\n\n", sqlite3_libversion(),
	       sodium_version_string(), mbed, date, loadavg(la));
}

static double run_start;

static void print_table(void)
{
	printf("| # | workload | size | weft | baseline (same run) | ratio | target | status |\n");
	printf("|---|---|---|---|---|---|---|---|\n");
	for (size_t i = 0; i < nresults; i++) {
		result *r = &results[i];
		printf("| %s | %s | %s | %s | %s | %s | %s | %s |\n", r->num, r->workload, r->size, r->weft, r->base,
		       r->ratio, r->target, r->status);
	}
	char la[64];
	printf("\n%d target row%s missed. Load average at the end: %s; the run took %.0f s.\n", missed,
	       missed == 1 ? "" : "s", loadavg(la), now_s() - run_start);
}

static void usage(void)
{
	fprintf(stderr, "usage: weft-bench [--quick] [--big] [--runs N] [--only 1,2,...] [--dir DIR] [--cache DIR] "
	                "[--weft PATH]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	if (sodium_init() < 0)
		die("libsodium failed to initialise");
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 4 && strcmp(argv[1], "--child-sync") == 0)
		return child_sync(argv[2], argv[3]);
	cfg.runs = 3;
	if (!realpath("/proc/self/exe", cfg.self))
		die("cannot find my own executable");
	snprintf(cfg.dir, sizeof(cfg.dir), "bench-work");
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--quick") == 0)
			cfg.quick = 1;
		else if (strcmp(a, "--big") == 0)
			cfg.big = 1;
		else if (strcmp(a, "--runs") == 0 && v)
			cfg.runs = atoi(argv[++i]);
		else if (strcmp(a, "--dir") == 0 && v)
			snprintf(cfg.dir, sizeof(cfg.dir), "%s", argv[++i]);
		else if (strcmp(a, "--cache") == 0 && v)
			snprintf(cfg.cache, sizeof(cfg.cache), "%s", argv[++i]);
		else if (strcmp(a, "--weft") == 0 && v)
			snprintf(cfg.weft, sizeof(cfg.weft), "%s", argv[++i]);
		else if (strcmp(a, "--only") == 0 && v) {
			for (char *s = argv[++i]; *s;) {
				long n = strtol(s, &s, 10);
				if (n < 1 || n > 8)
					usage();
				cfg.only |= 1u << n;
				if (*s == ',')
					s++;
				else if (*s)
					usage();
			}
		} else
			usage();
	}
	if (cfg.runs < 1 || cfg.runs > MAX_RUNS)
		die("--runs must be 1..%d", MAX_RUNS);
	mkdirs(cfg.dir);
	if (!cfg.cache[0])
		path_join(cfg.cache, sizeof(cfg.cache), cfg.dir, "cache");
	mkdirs(cfg.cache);
	if (!cfg.weft[0]) {
		char d[3072];
		snprintf(d, sizeof(d), "%s", cfg.self);
		*strrchr(d, '/') = '\0';
		fmt_path(cfg.weft, sizeof(cfg.weft), "%s/weft", d);
		if (!file_exists(cfg.weft)) /* build/<dir>/bench/weft-bench */
			fmt_path(cfg.weft, sizeof(cfg.weft), "%s/../weft", d);
	}
	run_start = now_s();
	spawner_start();
	authors_init();
	schema_tag_init();
	print_header();
	fflush(stdout);

	size_t scale_q[] = {10000}, scale_f[] = {10000, 100000, 1000000};
	size_t *scale = cfg.quick ? scale_q : scale_f;
	size_t nscale = cfg.quick ? 1 : cfg.big ? 3 : 2;
	size_t ingest_n = cfg.quick ? 10000 : 100000;

	if (should(1)) {
		fprintf(stderr, "target 1: batched durable transactions\n");
		bench_txn(1, cfg.quick ? 100 : 1000, 100);
	}
	if (should(2)) {
		fprintf(stderr, "target 2: single-put durable transactions\n");
		bench_txn(2, cfg.quick ? 1000 : 10000, 1);
	}
	if (should(3) || should(4)) {
		fprintf(stderr, "target 3: in-process ingest\n");
		/* 1M: one run (a verify pass and an ingest take about a minute each). */
		for (size_t i = 0; i < nscale; i++)
			bench_ingest_local(scale[i], scale[i] >= 1000000 ? 1 : cfg.runs);
	}
	if (should(4) || should(7)) {
		fprintf(stderr, "target 4/7: ingest over TLS, two processes\n");
		bench_ingest_tls(ingest_n, cfg.runs);
		if (cfg.big)
			bench_ingest_tls(1000000, 1);
	}
	if (should(5) || should(7)) {
		fprintf(stderr, "target 5/7: reconciliation\n");
		for (size_t i = 0; i < nscale; i++)
			bench_reconcile(scale[i]);
	}
	if (should(6)) {
		fprintf(stderr, "target 6: rebuild\n");
		for (size_t i = 0; i < nscale; i++)
			bench_rebuild(scale[i]);
	}
	if (should(8)) {
		fprintf(stderr, "target 8: space\n");
		for (size_t i = 0; i < nscale; i++) {
			build_log_stores(scale[i]);
			bench_space(scale[i]);
		}
	}
	print_table();
	spawner_stop();
	return 0;
}
