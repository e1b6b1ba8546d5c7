/*
 * Writes the seed corpora of the fuzz targets:
 *   fuzz_gen_seeds OUT_DIR VECTORS_FILE
 * OUT_DIR is fuzz/corpora; VECTORS_FILE is tests/vectors/events.txt.
 * Everything is deterministic (fixed keys, a fixed clock), so rerunning it
 * rewrites the same files. Seeds of every kind: valid inputs from real
 * stores and real sessions (recorded transcripts), and hostile variants of
 * them. Crash reproducers found later are added by hand beside these.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/codec.h"
#include "fuzz/fuzz_common.h"
#include "sync/frame.h"
#include "sync/negentropy.h"

static const char *out_dir;
static int written;

static void put(const char *target, const char *name, const void *data, size_t len)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", out_dir, target);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/%s/%s", out_dir, target, name);
	if (fuzz_write_file(path, data, len) < 0) {
		fprintf(stderr, "cannot write %s\n", path);
		exit(1);
	}
	written++;
}

/* ------------------------------------------------------------- buffers */

typedef struct buf {
	unsigned char *p;
	size_t len, cap;
} buf;

static void add(buf *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		while (b->len + n > b->cap)
			b->cap = b->cap ? b->cap * 2 : 1024;
		b->p = realloc(b->p, b->cap);
	}
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
}

static void add_u8(buf *b, uint8_t v)
{
	add(b, &v, 1);
}

static void add_u32(buf *b, uint32_t v)
{
	unsigned char x[4];
	codec_put_u32(x, v);
	add(b, x, 4);
}

static void add_frame(buf *b, uint8_t type, const void *payload, uint32_t len)
{
	add_u8(b, type);
	add_u32(b, len);
	add(b, payload, len);
}

/* -------------------------------------------------------------- events */

static int unhex(buf *b, const char *hex)
{
	b->len = 0;
	if (strcmp(hex, "-") == 0)
		return 0;
	size_t n = strlen(hex);
	if (n % 2)
		return -1;
	for (size_t i = 0; i < n; i += 2) {
		unsigned v;
		if (sscanf(hex + i, "%2x", &v) != 1)
			return -1;
		add_u8(b, (uint8_t)v);
	}
	return 0;
}

static void event_vectors(const char *vectors)
{
	FILE *f = fopen(vectors, "r");
	if (!f) {
		fprintf(stderr, "cannot read %s\n", vectors);
		exit(1);
	}
	char line[65536], name[200] = "";
	buf b = {0};
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\r\n")] = '\0';
		char key[32], val[65536];
		if (line[0] == '#' || sscanf(line, "%31s %65535s", key, val) != 2)
			continue;
		if (strcmp(key, "valid") == 0 || strcmp(key, "invalid") == 0) {
			snprintf(name, sizeof(name), "vec-%.150s", val);
		} else if ((strcmp(key, "enc") == 0 || strcmp(key, "erased") == 0) && unhex(&b, val) == 0) {
			char fn[256];
			snprintf(fn, sizeof(fn), "%s%s", name, strcmp(key, "erased") == 0 ? "-erased" : "");
			put("event", fn, b.p, b.len);
		}
	}
	fclose(f);
	free(b.p);
}

/* Every event of a store, encoded, as event seeds. */
static void store_events(weft_db *db, const char *prefix, int max)
{
	weft_iter *it;
	if (weft_db_iter(&it, db, NULL) < 0)
		exit(1);
	const weft_event *ev;
	int n = 0;
	while (n < max && weft_iter_next(&ev, it) == WEFT_OK) {
		size_t len;
		const void *enc = weft_event_bytes(ev, &len);
		char fn[64];
		snprintf(fn, sizeof(fn), "%s-%02d", prefix, n++);
		put("event", fn, enc, len);
	}
	weft_iter_free(it);
}

/* An event of the peer's key with chosen fields (hostile variants). */
static struct weft_event *peer_event(uint64_t seq, const weft_id *prev, uint64_t hlc, const char *scope,
                                     const char *payload)
{
	unsigned char seed[32], pk[32], sk[64];
	memset(seed, FUZZ_SEED_PEER, sizeof(seed));
	crypto_sign_seed_keypair(pk, sk, seed);
	event_fields f = {seq, prev, hlc, scope, "note.put", NULL, payload, strlen(payload)};
	struct weft_event *ev;
	weft_err err;
	if (codec_event_build(&ev, &f, sk, 0, &err) < 0) {
		fprintf(stderr, "cannot build an event: %s\n", err.msg);
		exit(1);
	}
	return ev;
}

/* ------------------------------------------------------------ sessions */

static void *local_tpl, *peer_tpl;
static size_t local_len, peer_len;
static char local_path[700], peer_path[700];

static weft_db *fresh(const char *path, const void *tpl, size_t len, int seed)
{
	fuzz_remove_db(path);
	if (fuzz_write_file(path, tpl, len) < 0)
		exit(1);
	weft_db *db = fuzz_open_store(path, seed);
	if (!db)
		exit(1);
	return db;
}

static int authorize(const unsigned char peer[WEFT_PUBLIC_KEY_BYTES], const char *const *scopes, size_t n,
                     int *readable, int *writable, void *payload)
{
	(void)peer, (void)payload;
	for (size_t i = 0; i < n; i++) {
		readable[i] = strcmp(scopes[i], "notes") == 0 || strcmp(scopes[i], "todo") == 0;
		writable[i] = strcmp(scopes[i], "notes") == 0;
	}
	return WEFT_OK;
}

/* Runs a session between fresh copies of the local store (with the
 * options the session target derives from flags) and the peer store, and
 * records what the peer sent. */
static void record(buf *peer_bytes, uint8_t flags, uint32_t max_frame, uint32_t batch)
{
	weft_db *local = fresh(local_path, local_tpl, local_len, FUZZ_SEED_LOCAL);
	weft_db *peer = fresh(peer_path, peer_tpl, peer_len, FUZZ_SEED_PEER);
	weft_role role = (flags & 1) ? WEFT_ROLE_CLIENT : WEFT_ROLE_SERVER;
	weft_session_options o = WEFT_SESSION_OPTIONS_INIT, po = WEFT_SESSION_OPTIONS_INIT;
	static const char *const narrow[] = {"notes", "todo"};
	if (flags & 2)
		o.authorize = authorize;
	if ((flags & 4) && role == WEFT_ROLE_CLIENT) {
		o.scopes = narrow;
		o.nscopes = 2;
	}
	o.idle_timeout_ms = 1000;
	po.max_frame = max_frame;
	po.batch_events = batch;
	weft_session *us, *them;
	if (weft_session_new(&us, local, role, &o) < 0 ||
	    weft_session_new(&them, peer, role == WEFT_ROLE_CLIENT ? WEFT_ROLE_SERVER : WEFT_ROLE_CLIENT, &po) < 0)
		exit(1);
	peer_bytes->len = 0;
	for (int round = 0; round < 10000; round++) {
		const void *b;
		size_t n;
		int moved = 0;
		weft_session_output(us, &b, &n);
		if (n) {
			weft_session_feed(them, b, n, 1000);
			weft_session_consume(us, n);
			moved = 1;
		}
		weft_session_output(them, &b, &n);
		if (n) {
			add(peer_bytes, b, n);
			weft_session_feed(us, b, n, 1000);
			weft_session_consume(them, n);
			moved = 1;
		}
		if (!moved)
			break;
	}
	if (weft_session_state_get(us) != WEFT_SESSION_DONE) {
		fprintf(stderr, "recorded session did not finish: %s / %s\n", weft_session_errmsg(us),
		        weft_session_errmsg(them));
		exit(1);
	}
	weft_session_free(us);
	weft_session_free(them);
	weft_db_close(local);
	weft_db_close(peer);
}

/* Calls fn on each frame of a stream, rebuilding it into out. */
typedef void (*frame_fn)(buf *out, uint8_t type, const unsigned char *p, uint32_t len, int *nth, void *arg);

static void rewrite(buf *out, const buf *in, frame_fn fn, void *arg)
{
	frame_reader r;
	frame_reader_init(&r, FRAME_MAX_HARD);
	const unsigned char *p = in->p;
	size_t left = in->len;
	int nth = 0;
	out->len = 0;
	for (;;) {
		frame f;
		char why[160];
		if (frame_read(&r, &f, &p, &left, why) != 1)
			break;
		fn(out, f.type, f.payload, f.len, &nth, arg);
	}
	frame_reader_free(&r);
}

/* Adds `extra` (an encoded event) to the first EVENTS frame. */
static void add_event_fn(buf *out, uint8_t type, const unsigned char *p, uint32_t len, int *nth, void *arg)
{
	const buf *extra = arg;
	if (type != FRAME_EVENTS || (*nth)++) {
		add_frame(out, type, p, len);
		return;
	}
	buf fr = {0};
	add_u32(&fr, codec_get_u32(p) + 1);
	add(&fr, p + 4, len - 4);
	add_u32(&fr, (uint32_t)extra->len);
	add(&fr, extra->p, extra->len);
	add_frame(out, type, fr.p, (uint32_t)fr.len);
	free(fr.p);
}

/* Flips a byte in the first event of the first EVENTS frame (at an
 * offset into the event given by arg). */
static void corrupt_fn(buf *out, uint8_t type, const unsigned char *p, uint32_t len, int *nth, void *arg)
{
	size_t off = *(const size_t *)arg;
	if (type != FRAME_EVENTS || (*nth)++ || len < 8 + off + 1) {
		add_frame(out, type, p, len);
		return;
	}
	unsigned char *c = malloc(len);
	memcpy(c, p, len);
	c[8 + off] ^= 0x01;
	add_frame(out, type, c, len);
	free(c);
}

/* Cuts the stream after the first frame of a type, inserting raw bytes. */
typedef struct insert_arg {
	uint8_t after;
	const buf *raw;
	int done;
} insert_arg;

static void insert_fn(buf *out, uint8_t type, const unsigned char *p, uint32_t len, int *nth, void *arg)
{
	insert_arg *a = arg;
	(void)nth;
	if (a->done)
		return;
	add_frame(out, type, p, len);
	if (type == a->after) {
		add(out, a->raw->p, a->raw->len);
		a->done = 1;
	}
}

static void put_session(const char *name, uint8_t flags, const buf *stream)
{
	buf b = {0};
	add_u8(&b, flags);
	add(&b, stream->p, stream->len);
	put("session", name, b.p, b.len);
	free(b.p);
}

static void session_seeds(void)
{
	buf s = {0}, t = {0};
	/* Honest sessions, every role and option, whole and split feeds. */
	static const struct {
		uint8_t flags;
		const char *name;
	} honest[] = {
		{0x00, "server-all"},           {0x08, "server-all-split"},
		{0x02, "server-authorize"},     {0x01, "client-all"},
		{0x09, "client-all-split"},     {0x03, "client-authorize"},
		{0x05, "client-narrow"},        {0xf9, "client-all-bytewise"},
	};
	for (size_t i = 0; i < sizeof(honest) / sizeof(honest[0]); i++) {
		record(&s, honest[i].flags, 0, 0);
		put_session(honest[i].name, honest[i].flags, &s);
	}
	/* Small frames and batches: many frames, many rounds. */
	record(&s, 0x00, FRAME_MAX_MIN, 2);
	put_session("server-small-batches", 0x00, &s);
	record(&s, 0x01, FRAME_MAX_MIN, 1);
	put_session("client-small-batches", 0x01, &s);

	/* Hostile variants of the server-side transcript (the peer is the
	 * client and sends its events). */
	record(&s, 0x00, 0, 0);
	weft_id fake_prev;
	memset(&fake_prev, 0x5a, sizeof(fake_prev));
	struct {
		const char *name;
		struct weft_event *ev;
	} extra[] = {
		{"server-future-event", peer_event(50, &fake_prev, (FUZZ_NOW_MS + 3600000) << 16, "notes", "future")},
		{"server-fork", peer_event(1, NULL, FUZZ_NOW_MS << 16, "notes", "forked first event")},
		{"server-unpermitted-scope", peer_event(60, &fake_prev, FUZZ_NOW_MS << 16, "private", "sneaky")},
	};
	buf granted = {0};
	record(&granted, 0x02, 0, 0);
	for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++) {
		buf e = {0};
		add(&e, extra[i].ev->enc, extra[i].ev->enc_len);
		/* The last one needs the session where scopes are granted. */
		rewrite(&t, i == 2 ? &granted : &s, add_event_fn, &e);
		put_session(extra[i].name, i == 2 ? 0x02 : 0x00, &t);
		codec_event_free(extra[i].ev);
		free(e.p);
	}
	free(granted.p);
	static const struct {
		size_t off;
		const char *name;
	} flips[] = {
		/* Offsets into an event with scope "notes", kind "note.put". */
		{1, "server-forged-author"},      /* author key: signature fails */
		{50, "server-wrong-prev"},        /* prev of a first event: non-canonical */
		{78, "server-wrong-id"},          /* timestamp: the id changes, signature fails */
		{81, "server-bad-scope-length"},  /* scope length: malformed */
		{150, "server-bad-signature"},    /* inside the signature */
		{200, "server-altered-payload"},  /* payload: hash mismatch */
	};
	for (size_t i = 0; i < sizeof(flips) / sizeof(flips[0]); i++) {
		rewrite(&t, &s, corrupt_fn, (void *)&flips[i].off);
		put_session(flips[i].name, 0x00, &t);
	}
	/* A header claiming 4 GiB right after the hello; an unknown frame;
	 * a truncated frame (the peer stops mid-frame). */
	buf raw = {0};
	add_u8(&raw, FRAME_EVENTS);
	add_u32(&raw, 0xffffffffu);
	insert_arg ia = {FRAME_HELLO, &raw, 0};
	rewrite(&t, &s, insert_fn, &ia);
	put_session("server-4gib-frame", 0x00, &t);
	raw.len = 0;
	add_frame(&raw, 0x7f, "??", 2);
	ia = (insert_arg){FRAME_HELLO, &raw, 0};
	rewrite(&t, &s, insert_fn, &ia);
	put_session("server-unknown-frame", 0x00, &t);
	t.len = 0;
	add(&t, s.p, s.len > 40 ? s.len - 37 : s.len);
	put_session("server-stops-mid-frame", 0x00, &t);
	free(raw.p);
	free(s.p);
	free(t.p);
}

/* --------------------------------------------------------------- frames */

static void frame_seeds(void)
{
	buf s = {0}, b = {0};
	record(&s, 0x00, 0, 0);
	add_u8(&b, 0x06 | 0x08); /* FRAME_MAX_DEFAULT, a split seed */
	add(&b, s.p, s.len);
	put("frame", "transcript-client-to-server", b.p, b.len);
	record(&s, 0x01, FRAME_MAX_MIN, 3);
	b.len = 0;
	add_u8(&b, 0x05 | 0x30); /* FRAME_MAX_MIN */
	add(&b, s.p, s.len);
	put("frame", "transcript-server-to-client", b.p, b.len);
	b.len = 0;
	add_u8(&b, 0x04);
	for (uint8_t t = 1; t <= FRAME__MAX; t++)
		add_frame(&b, t, "payload", t == FRAME_DONE ? 0 : 7);
	put("frame", "every-type", b.p, b.len);
	b.len = 0;
	add_u8(&b, 0x06);
	add_u8(&b, FRAME_EVENTS);
	add_u32(&b, 0xffffffffu);
	add(&b, "xxxx", 4);
	put("frame", "header-claims-4gib", b.p, b.len);
	b.len = 0;
	add_u8(&b, 0x03);
	for (int i = 0; i < 200; i++)
		add_frame(&b, FRAME_DONE, NULL, 0);
	put("frame", "many-empty-frames", b.p, b.len);
	b.len = 0;
	add_u8(&b, 0x02);
	add_frame(&b, FRAME_NEG, "0123456789abcdef", 16);
	add_frame(&b, FRAME_NEG, "0123456789abcdefg", 17); /* over a 16-byte limit */
	put("frame", "over-limit", b.p, b.len);
	b.len = 0;
	add_u8(&b, 0x06);
	add_frame(&b, 0, "x", 1);
	put("frame", "type-zero", b.p, b.len);
	free(s.p);
	free(b.p);
}

/* ----------------------------------------------------------- negentropy */

static neg_set *other_set(uint32_t from, uint32_t to, uint64_t ts0)
{
	neg_set *s;
	neg_set_new(&s);
	for (uint32_t k = from; k < to; k++) {
		uint8_t id[32];
		fuzz_neg_item_id(id, k);
		neg_set_add(s, ts0 + k / 3, id);
	}
	neg_set_seal(s);
	return s;
}

/* A real reconciliation of client set c against server set sv; records
 * the client's messages into cm and the server's into sm, joined by the
 * target's separator. */
static void reconcile(buf *cm, buf *sm, neg_set *c, neg_set *sv, size_t limit)
{
	neg_reconciler *rc, *rs;
	neg_reconciler_new(&rc, c, 0, neg_set_size(c), limit);
	neg_reconciler_new(&rs, sv, 0, neg_set_size(sv), limit);
	const uint8_t *m;
	size_t ml;
	neg_reconciler_initiate(&m, &ml, rc);
	for (int round = 0; ml && round < 50; round++) {
		if (round)
			add(cm, "\n--\n", 4);
		add(cm, m, ml);
		const uint8_t *r;
		size_t rl;
		if (neg_reconciler_reconcile(&r, &rl, rs, m, ml, NULL, NULL) < 0)
			exit(1);
		if (round)
			add(sm, "\n--\n", 4);
		add(sm, r, rl);
		if (neg_reconciler_reconcile(&m, &ml, rc, r, rl, NULL, NULL) < 0)
			exit(1);
	}
	neg_reconciler_free(rc);
	neg_reconciler_free(rs);
}

static void neg_seeds(void)
{
	neg_set *fixed = fuzz_neg_fixed_set();
	static const struct {
		uint32_t from, to;
		uint64_t ts0;
		uint8_t limit;
		const char *name;
	} peers[] = {
		{0, 30, 1000, 0, "overlap"},
		{20, 90, 1000, 0, "superset"},
		{100, 400, 1000, 64, "disjoint-limited"},
		{0, 48, 1000, 0, "identical"},
		{0, 0, 0, 0, "empty"},
	};
	for (size_t i = 0; i < sizeof(peers) / sizeof(peers[0]); i++) {
		neg_set *o = other_set(peers[i].from, peers[i].to, peers[i].ts0);
		size_t limit = peers[i].limit < 64 ? 0 : NEG_FRAME_SIZE_MIN + (size_t)(peers[i].limit - 64) * 37;
		buf cm = {0}, sm = {0}, b = {0};
		/* Mode 0: a real client's messages to our server (fixed set). */
		reconcile(&cm, &sm, o, fixed, limit);
		add_u8(&b, 0);
		add_u8(&b, peers[i].limit);
		add_u8(&b, 0);
		add(&b, cm.p, cm.len);
		char fn[64];
		snprintf(fn, sizeof(fn), "server-%s", peers[i].name);
		put("negentropy", fn, b.p, b.len);
		/* Mode 1: a real server's replies to our client (fixed set). */
		cm.len = sm.len = b.len = 0;
		reconcile(&cm, &sm, fixed, o, limit);
		add_u8(&b, 1);
		add_u8(&b, peers[i].limit);
		add_u8(&b, 0);
		add(&b, sm.p, sm.len);
		snprintf(fn, sizeof(fn), "client-%s", peers[i].name);
		put("negentropy", fn, b.p, b.len);
		free(cm.p);
		free(sm.p);
		free(b.p);
		neg_set_free(o);
	}
	/* Hostile hand-made messages: bounds out of order, past infinity,
	 * an endless IdList, a bad version. */
	static const uint8_t msgs[][24] = {
		{0, 0, 0, 0x61, 0x05, 0x00, 0x00, 0x02, 0x00, 0x01, 0x00, 0x00},
		{0, 0, 0, 0x61, 0x00, 0x00, 0x00, 0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00},
		{1, 0, 0, 0x61, 0x00, 0x00, 0x02, 0x81, 0x00},
		{0, 0, 0, 0x62},
		{1, 0, 0, 0x60},
		{2, 70, 0, 1, 2, 3, 0x41, 0x42, 0x83, 0x84, 0xc5, 7, 8, 9},
	};
	static const size_t lens[] = {12, 18, 9, 4, 4, 14};
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		char fn[64];
		snprintf(fn, sizeof(fn), "hostile-%zu", i);
		put("negentropy", fn, msgs[i], lens[i]);
	}
	neg_set_free(fixed);
}

/* --------------------------------------------------------------- schema */

static void schema_seeds(void)
{
	static const char *const ddl[] = {
		"CREATE TABLE todo(\n  id TEXT PRIMARY KEY,\n  title TEXT NOT NULL DEFAULT '',\n"
		"  done INTEGER DEFAULT 0,\n  votes INTEGER DEFAULT 0,\n  owner TEXT UNIQUE\n);\n",
		"create table if not exists \"Notes\"(k integer, body text default 'it''s', pic blob default x'00ff',"
		" score real default -1.5e3, n int default +7, primary key(k)) without rowid;",
		"-- comment\nCREATE TABLE a(x BLOB PRIMARY KEY); /* two */ CREATE TABLE b(y INTEGER PRIMARY KEY, z REAL "
		"DEFAULT .5) STRICT;;",
		"CREATE TABLE t(\"primary\" TEXT PRIMARY KEY, \"unique\" TEXT UNIQUE DEFAULT NULL, v INTEGER DEFAULT "
		"-9223372036854775808)",
		"CREATE TABLE t(a TEXT PRIMARY KEY, a TEXT)",
		"CREATE TABLE t(a REAL PRIMARY KEY)",
		"CREATE TABLE t(a TEXT PRIMARY KEY, b TEXT UNIQUE NOT NULL)",
		"CREATE TABLE t(a TEXT PRIMARY KEY, b TEXT DEFAULT 'unterminated",
		"CREATE TABLE t(a TEXT PRIMARY KEY, b BLOB DEFAULT X'abc')",
		"CREATE TABLE t(a TEXT PRIMARY KEY, b INTEGER DEFAULT 0x10)",
		"CREATE TABLE t(a TEXT PRIMARY KEY, b REAL DEFAULT 1e999)",
		"CREATE TABLE t(a TEXT PRIMARY KEY, b TEXT CHECK(b <> ''))",
		"CREATE INDEX i ON t(a)",
		"CREATE TABLE weft_event(a TEXT PRIMARY KEY)",
		"CREATE TABLE t(a TEXT, b TEXT)",
		"CREATE TABLE t(a TEXT PRIMARY KEY, PRIMARY KEY(a))",
		"CREATE TABLE \"unterminated(a TEXT PRIMARY KEY)",
		"",
	};
	for (size_t i = 0; i < sizeof(ddl) / sizeof(ddl[0]); i++) {
		char fn[32];
		snprintf(fn, sizeof(fn), "ddl-%02zu", i);
		put("schema", fn, ddl[i], strlen(ddl[i]));
	}
}

/* ----------------------------------------------------------------- rows */

static void rows_seeds(void)
{
	char path[700];
	snprintf(path, sizeof(path), "%s/rows.db", fuzz_tmpdir());
	weft_db *db = fuzz_make_store(path, 0x33, 0);
	if (!db)
		exit(1);
	if (weft_schema_define(db, "CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT, done INTEGER DEFAULT 0,"
	                           " votes INTEGER DEFAULT 0, owner TEXT UNIQUE, score REAL, pic BLOB);"
	                           "CREATE TABLE n(k INTEGER PRIMARY KEY, v TEXT);"
	                           "CREATE TABLE b(k BLOB PRIMARY KEY, v BLOB);") < 0) {
		fprintf(stderr, "rows schema: %s\n", weft_errmsg(db));
		exit(1);
	}
	for (int i = 0; i < 6; i++) {
		weft_txn *t;
		weft_txn_begin(&t, db, "todo", NULL);
		switch (i) {
		case 0:
			weft_txn_set(t, "todo", weft_text("milk"), "title", weft_text("buy milk"));
			weft_txn_set(t, "todo", weft_text("milk"), "done", weft_int(1));
			weft_txn_set(t, "todo", weft_text("milk"), "score", weft_real(2.5));
			break;
		case 1:
			weft_txn_delete(t, "todo", weft_text("milk"));
			break;
		case 2:
			weft_txn_incr(t, "todo", weft_text("milk"), "votes", -3);
			weft_txn_incr(t, "todo", weft_text("rent"), "votes", INT64_MAX);
			break;
		case 3:
			weft_txn_set(t, "n", weft_int(-7), "v", weft_null());
			weft_txn_set(t, "b", weft_blob("\0\1\2", 3), "v", weft_blob("", 0));
			weft_txn_set(t, "todo", weft_text("x"), "pic", weft_blob("\xff", 1));
			break;
		case 4:
			weft_txn_set(t, "todo", weft_text(""), "owner", weft_text("ann"));
			weft_txn_delete(t, "n", weft_int(1));
			weft_txn_set(t, "todo", weft_text(""), "title", weft_text("again"));
			break;
		default:
			for (int k = 0; k < 40; k++)
				weft_txn_set(t, "n", weft_int(k), "v", weft_text("row"));
			break;
		}
		weft_id id;
		if (weft_txn_commit(&id, t) < 0) {
			fprintf(stderr, "rows txn %d: %s\n", i, weft_errmsg(db));
			exit(1);
		}
		weft_event *ev;
		weft_db_get(&ev, db, &id);
		size_t len;
		const void *p = weft_event_payload(ev, &len);
		char fn[32];
		snprintf(fn, sizeof(fn), "txn-%d", i);
		put("rows", fn, p, len);
		weft_event_free(ev);
	}
	weft_db_close(db);
	fuzz_remove_db(path);
	static const uint8_t bad[][16] = {
		{1, 0, 0, 0, 0},
		{1, 0, 0, 0, 1, 0, 1, 'T', 1, 0, 0, 0, 0, 0, 0, 0},
		{1, 0, 0, 0, 1, 0, 1, 't', 2, 0, 0, 0, 0, 0, 0, 0},
		{2, 0, 0, 0, 1},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char fn[32];
		snprintf(fn, sizeof(fn), "bad-%zu", i);
		put("rows", fn, bad[i], sizeof(bad[i]));
	}
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s OUT_DIR tests/vectors/events.txt\n", argv[0]);
		return 2;
	}
	out_dir = argv[1];
	mkdir(out_dir, 0755);
	const char *dir = fuzz_tmpdir();
	snprintf(local_path, sizeof(local_path), "%s/local.db", dir);
	snprintf(peer_path, sizeof(peer_path), "%s/peer.db", dir);
	weft_db *l = fuzz_make_store(local_path, FUZZ_SEED_LOCAL, 0);
	weft_db *p = fuzz_make_store(peer_path, FUZZ_SEED_PEER, 1);
	if (!l || !p)
		return 1;
	store_events(p, "peer", 20);
	weft_db_close(l);
	weft_db_close(p);
	local_tpl = fuzz_read_file(local_path, &local_len);
	peer_tpl = fuzz_read_file(peer_path, &peer_len);

	event_vectors(argv[2]);
	session_seeds();
	frame_seeds();
	neg_seeds();
	schema_seeds();
	rows_seeds();
	printf("wrote %d seed files under %s\n", written, out_dir);
	free(local_tpl);
	free(peer_tpl);
	return 0;
}
