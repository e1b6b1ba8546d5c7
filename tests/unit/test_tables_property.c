/*
 * Property: the derived tables are a pure function of the set of events.
 *
 * Per seed, 3-4 simulated devices (own stores, fixed keys, fake clocks that
 * drift and tie) make random transactions: puts, deletes, increments,
 * UNIQUE claims from a tiny value domain (so they clash), idempotency keys
 * shared across devices, writes to a column and a table that receiving
 * stores declare only later, to a table they never declare, with keys of
 * the wrong type, and malformed payloads; devices now and then hear of each
 * other's events. Then every event is delivered to several fresh stores in
 * different random orders, with duplicates, in random batch sizes, some of
 * them switching schema half-way. Every store must dump identically (tables,
 * conflicts, duplicates), and equal a rebuild of itself.
 *
 * WEFT_PROPERTY_SEEDS=n runs n seeds (default: 5000, or 200 when
 * WEFT_TEST_SCALE=asan); WEFT_PROPERTY_SEED=s replays seed s alone.
 * A failure prints the seed and both dumps.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/rows.h"

#define T0 UINT64_C(1700000000000)

/* Receiving stores first declare BASE (some of them), then FULL. */
#define BASE                                                                                       \
	"CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT, done INTEGER NOT NULL DEFAULT 0, "      \
	"votes INTEGER DEFAULT 10, owner TEXT UNIQUE);"                                              \
	"CREATE TABLE kv(k INTEGER PRIMARY KEY, v BLOB, r REAL NOT NULL, u INTEGER UNIQUE);"        \
	"CREATE TABLE mix(k INTEGER PRIMARY KEY, v INTEGER)"
#define FULL                                                                                       \
	"CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT, done INTEGER NOT NULL DEFAULT 0, "      \
	"votes INTEGER DEFAULT 10, owner TEXT UNIQUE, extra TEXT DEFAULT 'x');"                      \
	"CREATE TABLE kv(k INTEGER PRIMARY KEY, v BLOB, r REAL NOT NULL, u INTEGER UNIQUE);"        \
	"CREATE TABLE mix(k INTEGER PRIMARY KEY, v INTEGER);"                                      \
	"CREATE TABLE ghost(g INTEGER PRIMARY KEY, n INTEGER, tag TEXT UNIQUE)"
/* Devices write with FULL plus a table no receiver declares, and a text
 * key for mix (whose receivers' key is INTEGER: those rows never apply). */
#define DEVICE                                                                                     \
	"CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT, done INTEGER NOT NULL DEFAULT 0, "      \
	"votes INTEGER DEFAULT 10, owner TEXT UNIQUE, extra TEXT DEFAULT 'x');"                      \
	"CREATE TABLE kv(k INTEGER PRIMARY KEY, v BLOB, r REAL NOT NULL, u INTEGER UNIQUE);"        \
	"CREATE TABLE mix(k TEXT PRIMARY KEY, v INTEGER);"                                         \
	"CREATE TABLE ghost(g INTEGER PRIMARY KEY, n INTEGER, tag TEXT UNIQUE);"                     \
	"CREATE TABLE phantom(p INTEGER PRIMARY KEY, n INTEGER)"

#define MAXDEV 4
#define NRECV 3
#define MAXEV 256

typedef struct rng {
	uint64_t s;
} rng;

static uint64_t rnext(rng *r)
{
	/* splitmix64 */
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint32_t rnd(rng *r, uint32_t n)
{
	return (uint32_t)(rnext(r) % n);
}

typedef struct run {
	const char *base; /* holds the template stores */
	char *dir;
	rng r;
	uint64_t seed;
	int ndev;
	tu_clock clock[MAXDEV];
	weft_db *dev[MAXDEV];
	/* The encoded events of all devices. */
	unsigned char *ev[MAXEV];
	size_t len[MAXEV];
	int nev;
} run;

static const char *const todo_keys[] = {"a", "b", "c", "d"};
static const char *const owners[] = {"ann", "bob"};
static const char *const titles[] = {"milk", "eggs", "42", ""};

/*
 * Fresh stores are copies of template files made once (a new store with its
 * key and schema): creating a store and declaring a schema cost more than
 * the rest of a seed, and they are not what this test is about.
 */
static void copy_file(const char *from, const char *to)
{
	FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
	assert_non_null(in);
	assert_non_null(out);
	char buf[65536];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		assert_int_equal(fwrite(buf, 1, n, out), n);
	assert_int_equal(fclose(out), 0);
	fclose(in);
}

static const char *template_name(char *out, size_t size, const char *base, const char *kind, int seed_byte)
{
	snprintf(out, size, "%.4000s/tpl-%s-%d.db", base, kind, seed_byte);
	return out;
}

static void make_template(const char *base, const char *kind, int seed_byte, const char *ddl)
{
	char path[4200], name[64];
	snprintf(name, sizeof(name), "tpl-%s-%d.db", kind, seed_byte);
	weft_db *db = tu_open(base, name, NULL, seed_byte);
	tu_ok(db, weft_schema_define(db, ddl));
	weft_db_close(db);
	struct stat st;
	assert_int_equal(stat(template_name(path, sizeof(path), base, kind, seed_byte), &st), 0);
}

static void make_templates(const char *base)
{
	for (int d = 0; d < MAXDEV; d++)
		make_template(base, "dev", d + 1, DEVICE);
	for (int k = 0; k < NRECV; k++) {
		make_template(base, "base", 16 + k, BASE);
		make_template(base, "full", 16 + k, FULL);
	}
}

/* Opens a copy of a template as dir/name. */
static weft_db *open_copy(run *x, const char *name, const char *kind, int seed_byte, tu_clock *clock)
{
	char from[4200], to[4200];
	template_name(from, sizeof(from), x->base, kind, seed_byte);
	snprintf(to, sizeof(to), "%.4000s/%s", x->dir, name);
	copy_file(from, to);
	return tu_open(x->dir, name, clock, seed_byte);
}

static weft_value random_title(rng *r)
{
	switch (rnd(r, 6)) {
	case 0: return weft_null();
	case 1: return weft_int((int64_t)rnd(r, 3));
	case 2: return weft_real(rnd(r, 4) / 2.0);
	case 3: return weft_blob("\x00\xff", rnd(r, 3));
	default: return weft_text(titles[rnd(r, 4)]);
	}
}

/* A value for a UNIQUE TEXT column: text, or numbers that TEXT affinity
 * turns into the same text ('1' and 1 clash), or NULL (no claim). */
static weft_value random_owner(rng *r)
{
	switch (rnd(r, 8)) {
	case 0: return weft_null();
	case 1: return weft_int(1);
	case 2: return weft_text("1");
	default: return weft_text(owners[rnd(r, 2)]);
	}
}

/* One random operation into t (all of them valid for weft_txn). */
static void random_op(run *x, weft_db *db, weft_txn *t)
{
	rng *r = &x->r;
	weft_value pk = weft_text(todo_keys[rnd(r, 4)]);
	weft_value ik = weft_int((int64_t)rnd(r, 4));
	int rc = WEFT_OK;
	switch (rnd(r, 20)) {
	case 0:
	case 1: rc = weft_txn_delete(t, "todo", pk); break;
	case 2:
	case 3:
	case 4: rc = weft_txn_incr(t, "todo", pk, "votes", (int64_t)rnd(r, 7) - 3); break;
	case 5:
	case 6: rc = weft_txn_set(t, "todo", pk, "owner", random_owner(r)); break;
	case 7: rc = weft_txn_set(t, "todo", pk, "votes", rnd(r, 4) ? weft_int((int64_t)rnd(r, 5)) : weft_null()); break;
	case 8: rc = weft_txn_set(t, "todo", pk, "done", weft_int((int64_t)rnd(r, 2))); break;
	case 9:
	case 10: rc = weft_txn_set(t, "todo", pk, "title", random_title(r)); break;
	case 11: rc = weft_txn_set(t, "todo", pk, "extra", weft_text(titles[rnd(r, 4)])); break;
	case 12:
		if (rnd(r, 3))
			rc = weft_txn_set(t, "kv", ik, "u", weft_int((int64_t)rnd(r, 2)));
		else /* a counter that is also UNIQUE */
			rc = weft_txn_incr(t, "kv", ik, "u", (int64_t)rnd(r, 3) - 1);
		break;
	case 13: rc = weft_txn_set(t, "kv", ik, "r", weft_real((double)rnd(r, 8) - 3.5)); break;
	case 14: rc = weft_txn_set(t, "kv", ik, "v", weft_blob("\x01\x02\x03", rnd(r, 4))); break;
	case 15: rc = weft_txn_delete(t, "kv", ik); break;
	case 16: rc = weft_txn_set(t, "ghost", ik, "tag", weft_text(owners[rnd(r, 2)])); break;
	case 17: rc = weft_txn_incr(t, "ghost", ik, "n", (int64_t)rnd(r, 5)); break;
	case 18: rc = weft_txn_set(t, "phantom", ik, "n", weft_int(1)); break;
	default: rc = weft_txn_set(t, "mix", pk, "v", weft_int(7)); break;
	}
	tu_ok(db, rc);
}

static void device_step(run *x, int d)
{
	rng *r = &x->r;
	weft_db *db = x->dev[d];
	/* Clocks step 0-2 ms, so devices often share a millisecond. */
	x->clock[d].now_ms += rnd(r, 3);
	if (rnd(r, 12) == 0) {
		/* A malformed row payload: kept in the log, no effect. */
		unsigned char junk[8] = {1, 0, 0, 0, 1, 0, 4, 'T'};
		weft_id id;
		size_t n = 1 + rnd(r, sizeof(junk));
		int rc = weft_db_append(&id, db, "home", ROWS_KIND, rnd(r, 2) ? "k0" : NULL, junk, n);
		assert_true(rc == WEFT_OK || rc == WEFT_DUPLICATE);
		return;
	}
	char key[8];
	snprintf(key, sizeof(key), "k%u", rnd(r, 3));
	const char *scope = rnd(r, 4) ? "home" : "work";
	weft_txn *t;
	tu_ok(db, weft_txn_begin(&t, db, scope, rnd(r, 4) == 0 ? key : NULL));
	int nops = 1 + (int)rnd(r, 3);
	for (int i = 0; i < nops; i++)
		random_op(x, db, t);
	weft_id id;
	int rc = weft_txn_commit(&id, t);
	if (rc != WEFT_OK && rc != WEFT_DUPLICATE)
		tu_ok(db, rc);
}

/* Device d hears of a few of device s's events. */
static void device_gossip(run *x, int d, int s)
{
	weft_iter *it;
	tu_ok(x->dev[s], weft_db_iter(&it, x->dev[s], NULL));
	const weft_event *ev;
	while (weft_iter_next(&ev, it) == WEFT_OK) {
		if (rnd(&x->r, 2))
			continue;
		size_t len;
		const void *b = weft_event_bytes(ev, &len);
		weft_ingest_status st;
		tu_ok(x->dev[d], weft_db_ingest(&st, x->dev[d], b, len));
	}
	weft_iter_free(it);
}

static void collect(run *x)
{
	for (int d = 0; d < x->ndev; d++) {
		weft_iter *it;
		tu_ok(x->dev[d], weft_db_iter(&it, x->dev[d], NULL));
		const weft_event *ev;
		while (weft_iter_next(&ev, it) == WEFT_OK) {
			size_t len;
			const void *b = weft_event_bytes(ev, &len);
			assert_true(x->nev < MAXEV);
			x->ev[x->nev] = malloc(len);
			memcpy(x->ev[x->nev], b, len);
			x->len[x->nev++] = len;
		}
		weft_iter_free(it);
	}
}

static void shuffle(rng *r, int *v, int n)
{
	for (int i = n - 1; i > 0; i--) {
		int j = (int)rnd(r, (uint32_t)i + 1);
		int t = v[i];
		v[i] = v[j];
		v[j] = t;
	}
}

/*
 * A change-feed consumer that mirrors which rows exist: after all deliveries
 * (with crashes before acks), its last change per row must say UPSERT
 * exactly for the rows in the tables.
 */
typedef struct mirror {
	weft_feed *feed;
	char keys[256][96];
	int op[256];
	int n;
} mirror;

static void mirror_read(mirror *m, weft_db *db, rng *r)
{
	const weft_change *c;
	int rc;
	uint64_t last = 0;
	while ((rc = weft_feed_next(&c, m->feed)) == WEFT_OK) {
		tu_str k = {NULL, 0, 0};
		tu_str_add(&k, "%s|", c->table);
		tu_str_value(&k, &c->pk);
		int i = 0;
		while (i < m->n && strcmp(m->keys[i], k.s) != 0)
			i++;
		if (i == m->n) {
			assert_true(m->n < 256 && k.len < sizeof(m->keys[0]));
			snprintf(m->keys[m->n++], sizeof(m->keys[0]), "%s", k.s);
		}
		m->op[i] = c->op;
		free(k.s);
		last = c->seq;
	}
	assert_int_equal(rc, WEFT_ITEROVER);
	switch (rnd(r, 3)) {
	case 0: /* crash before acknowledging: the changes come again */
		weft_feed_free(m->feed);
		tu_ok(db, weft_feed_open(&m->feed, db, "mirror"));
		break;
	case 1:
		if (last)
			tu_ok(db, weft_feed_ack(m->feed, last));
		break;
	default:
		break;
	}
}

typedef struct keys {
	mirror *m;
	uint64_t seed;
	int present;
} keys;

static int mirror_row(int n, const char *const *names, const weft_value *v, void *payload)
{
	(void)n, (void)names;
	keys *k = payload;
	mirror *m = k->m;
	tu_str key = {NULL, 0, 0};
	tu_str_add(&key, "%.*s|", (int)v[0].n, (const char *)v[0].p);
	tu_str_value(&key, &v[1]);
	int i = 0;
	while (i < m->n && strcmp(m->keys[i], key.s) != 0)
		i++;
	if (i == m->n || m->op[i] != WEFT_CHANGE_UPSERT) {
		print_error("seed %llu: row %s exists but the feed %s\n", (unsigned long long)k->seed, key.s,
		            i == m->n ? "never named it" : "last said it was deleted");
		fail();
	}
	free(key.s);
	k->present++;
	return 0;
}

static void mirror_check(mirror *m, weft_db *db, uint64_t seed)
{
	keys k = {m, seed, 0};
	tu_ok(db, weft_db_query(db, "SELECT 'todo', id FROM todo UNION ALL SELECT 'kv', k FROM kv UNION ALL "
	                            "SELECT 'mix', k FROM mix UNION ALL SELECT 'ghost', g FROM ghost",
	                        mirror_row, &k));
	int upserts = 0;
	for (int i = 0; i < m->n; i++)
		upserts += m->op[i] == WEFT_CHANGE_UPSERT;
	if (upserts != k.present) {
		print_error("seed %llu: the feed says %d rows exist, the tables hold %d\n", (unsigned long long)seed,
		            upserts, k.present);
		fail();
	}
}

/* Delivers every event (some twice) to a fresh store in a random order and
 * random batches; returns its dump after checking it equals a rebuild. */
static char *deliver(run *x, int which)
{
	rng *r = &x->r;
	char name[16];
	snprintf(name, sizeof(name), "r%d.db", which);
	tu_clock clock = {T0 + 3600000};
	int late_schema = rnd(r, 2);
	weft_db *db = open_copy(x, name, late_schema ? "base" : "full", 16 + which, &clock);
	int order[2 * MAXEV], n = 0;
	for (int i = 0; i < x->nev; i++)
		order[n++] = i;
	int dups = (int)rnd(r, 4);
	for (int i = 0; i < dups; i++)
		order[n++] = (int)rnd(r, (uint32_t)x->nev);
	if (which == 1) {
		/* One store gets them newest first (the log's reverse order). */
		for (int i = 0; i < n / 2; i++) {
			int t = order[i];
			order[i] = order[n - 1 - i];
			order[n - 1 - i] = t;
		}
	} else {
		shuffle(r, order, n);
	}
	int switch_at = late_schema ? (int)rnd(r, (uint32_t)n + 1) : -1;
	/* The first store also feeds a mirror. */
	mirror *mi = NULL;
	if (which == 0) {
		mi = calloc(1, sizeof(*mi));
		tu_ok(db, weft_feed_open(&mi->feed, db, "mirror"));
	}
	weft_bytes batch[8];
	int result[8];
	for (int i = 0; i < n;) {
		if (late_schema && i >= switch_at) {
			tu_ok(db, weft_schema_define(db, FULL));
			late_schema = 0;
			if (mi)
				mirror_read(mi, db, r);
		}
		int m = 1 + (int)rnd(r, 8);
		if (m > n - i)
			m = n - i;
		if (late_schema && i < switch_at && i + m > switch_at)
			m = switch_at - i;
		for (int k = 0; k < m; k++) {
			batch[k].data = x->ev[order[i + k]];
			batch[k].len = x->len[order[i + k]];
		}
		tu_ok(db, weft_db_ingest_batch(result, db, batch, (size_t)m));
		for (int k = 0; k < m; k++)
			assert_true(result[k] >= 0);
		i += m;
		if (mi)
			mirror_read(mi, db, r);
	}
	if (late_schema)
		tu_ok(db, weft_schema_define(db, FULL));
	if (mi) {
		mirror_read(mi, db, r);
		mirror_check(mi, db, x->seed);
		/* Acknowledge everything, so what follows is only the rebuild's. */
		const weft_change *c;
		uint64_t last = 0;
		while (weft_feed_next(&c, mi->feed) == WEFT_OK)
			last = c->seq;
		if (last)
			tu_ok(db, weft_feed_ack(mi->feed, last));
	}
	char *dump = tu_dump(db);
	tu_ok(db, weft_db_rebuild(db, NULL, NULL));
	char *again = tu_dump(db);
	if (strcmp(dump, again) != 0) {
		print_error("seed %llu: store %d differs from its rebuild\n--- incremental:\n%s--- rebuilt:\n%s",
		            (unsigned long long)x->seed, which, dump, again);
		fail();
	}
	free(again);
	if (mi) {
		/* The rebuild changed nothing: the feed says so. */
		const weft_change *c;
		int rc = weft_feed_next(&c, mi->feed);
		if (rc != WEFT_ITEROVER) {
			print_error("seed %llu: a rebuild that changed nothing reported changes\n", (unsigned long long)x->seed);
			fail();
		}
		weft_feed_free(mi->feed);
		free(mi);
	}
	weft_db_close(db);
	return dump;
}

static char *catch_up(run *x, weft_db *db)
{
	int order[MAXEV];
	for (int i = 0; i < x->nev; i++)
		order[i] = i;
	shuffle(&x->r, order, x->nev);
	for (int i = 0; i < x->nev; i++) {
		weft_ingest_status st;
		tu_ok(db, weft_db_ingest(&st, db, x->ev[order[i]], x->len[order[i]]));
	}
	tu_ok(db, weft_schema_define(db, FULL));
	char *dump = tu_dump(db);
	weft_db_close(db);
	return dump;
}

static void one_seed(const char *base, uint64_t seed)
{
	run x;
	memset(&x, 0, sizeof(x));
	x.base = base;
	x.seed = seed;
	x.r.s = seed * 0x2545f4914f6cdd1dull + 1;
	char path[4200];
	snprintf(path, sizeof(path), "%.4000s/s%llu", base, (unsigned long long)seed);
	assert_int_equal(mkdir(path, 0700), 0);
	x.dir = strdup(path);
	x.ndev = 3 + (int)rnd(&x.r, 2);
	for (int d = 0; d < x.ndev; d++) {
		/* Clocks drift a few ms apart; often they tie. */
		x.clock[d].now_ms = T0 + rnd(&x.r, 4);
		char name[16];
		snprintf(name, sizeof(name), "d%d.db", d);
		x.dev[d] = open_copy(&x, name, "dev", d + 1, &x.clock[d]);
	}
	int steps = 8 + (int)rnd(&x.r, 12);
	for (int s = 0; s < steps; s++) {
		int d = (int)rnd(&x.r, (uint32_t)x.ndev);
		if (rnd(&x.r, 6) == 0) {
			int from = (int)rnd(&x.r, (uint32_t)x.ndev);
			if (from != d)
				device_gossip(&x, d, from);
		}
		device_step(&x, d);
	}
	collect(&x);
	/* One device's own store, kept incrementally through its local commits
	 * and what it heard, equals its rebuild. */
	int chosen = (int)rnd(&x.r, (uint32_t)x.ndev);
	char *dev_dump = tu_dump(x.dev[chosen]);
	tu_ok(x.dev[chosen], weft_db_rebuild(x.dev[chosen], NULL, NULL));
	char *dev_again = tu_dump(x.dev[chosen]);
	if (strcmp(dev_dump, dev_again) != 0) {
		print_error("seed %llu: device %d differs from its rebuild\n--- incremental:\n%s--- rebuilt:\n%s",
		            (unsigned long long)seed, chosen, dev_dump, dev_again);
		fail();
	}
	free(dev_dump);
	free(dev_again);
	for (int d = 0; d < x.ndev; d++)
		if (d != chosen)
			weft_db_close(x.dev[d]);

	char *first = NULL;
	for (int k = 0; k <= NRECV; k++) {
		/* The receivers, then the chosen device after hearing everything
		 * and declaring the receivers' schema. */
		char *dump = k < NRECV ? deliver(&x, k) : catch_up(&x, x.dev[chosen]);
		if (!first) {
			first = dump;
			continue;
		}
		if (strcmp(first, dump) != 0) {
			print_error("seed %llu: store %d (hash %016llx) differs from store 0 (hash %016llx)\n"
			            "--- store 0:\n%s--- store %d:\n%s"
			            "replay with WEFT_PROPERTY_SEED=%llu\n",
			            (unsigned long long)seed, k, (unsigned long long)tu_hash(dump, strlen(dump)),
			            (unsigned long long)tu_hash(first, strlen(first)), first, k, dump,
			            (unsigned long long)seed);
			fail();
		}
		free(dump);
	}
	if (getenv("WEFT_PROPERTY_DUMP"))
		print_message("seed %llu: %d devices, %d events\n%s", (unsigned long long)seed, x.ndev, x.nev, first);
	free(first);
	for (int i = 0; i < x.nev; i++)
		free(x.ev[i]);
	tu_rmdir(x.dir);
}

/* The seed being run, printed if the test fails (cmocka longjmps out). */
static uint64_t current_seed;
static int finished;
static char run_dir[4096]; /* the stores of this run, removed at the end */

static int report_seed(void **state)
{
	(void)state;
	if (!finished)
		print_error("failed at seed %llu; replay with WEFT_PROPERTY_SEED=%llu\n",
		            (unsigned long long)current_seed, (unsigned long long)current_seed);
	if (run_dir[0])
		tu_rmdir(strdup(run_dir));
	return 0;
}

static uint64_t env_u64(const char *name, uint64_t def, int *set)
{
	const char *v = getenv(name);
	if (set)
		*set = v && *v;
	if (!v || !*v)
		return def;
	return strtoull(v, NULL, 10);
}

static void test_tables_property_any_order_gives_identical_tables(void **state)
{
	(void)state;
	/* Stores live in RAM when possible: the test is about merging, and
	 * fsync on a real disk would dominate. */
	struct stat st;
	const char *tmp = getenv("TMPDIR");
	if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0)
		tmp = "/dev/shm";
	snprintf(run_dir, sizeof(run_dir), "%s/weft-property-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(run_dir));

	const char *scale = getenv("WEFT_TEST_SCALE");
	int asan = scale && strcmp(scale, "asan") == 0;
	int one;
	uint64_t only = env_u64("WEFT_PROPERTY_SEED", 0, &one);
	uint64_t seeds = one ? 1 : env_u64("WEFT_PROPERTY_SEEDS", asan ? 200 : 5000, NULL);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	make_templates(run_dir);
	for (uint64_t i = 0; i < seeds; i++) {
		uint64_t seed = one ? only : i + 1;
		current_seed = seed;
		one_seed(run_dir, seed);
	}
	finished = 1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	print_message("%llu seeds in %.1f s (%.1f ms each)\n", (unsigned long long)seeds, secs,
	              seeds ? 1000 * secs / (double)seeds : 0.0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_tables_property_any_order_gives_identical_tables, report_seed),
	};
	return cmocka_run_group_tests_name("tables_property", tests, NULL, NULL);
}
