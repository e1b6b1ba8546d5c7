/*
 * The whole sync session state machine (sync/session.c) fed arbitrary
 * bytes as if from a peer, against a real store.
 *
 * Input: a flags byte, then the peer's byte stream.
 *   bit 0    our role: 0 server, 1 client
 *   bit 1    grant scopes one by one (an authorize callback that lets the
 *            peer read "notes" and "todo" and write "notes" only)
 *   bit 2    narrow the session to scopes notes and todo (client option)
 *   bits 3-7 how the stream is split into feeds
 * The seeds are recorded transcripts of real sessions with another store
 * (fuzz/gen_seeds.c), so mutations reach every state.
 *
 * Properties:
 *  - nothing crashes, overreads or leaks, whatever the peer sends;
 *  - the session ends DONE or FAILED with a typed error and a message (an
 *    idle tick far in the future fails a session still running, with
 *    WEFT_ETIMEOUT); a session that failed on its own sends an ERROR frame
 *    last;
 *  - everything we send is a sequence of well-formed frames within the
 *    hard limit;
 *  - the store stays valid: whatever was stored verifies (ids,
 *    signatures; a chain link that disagrees is a fork and its author is
 *    flagged), nothing is stamped beyond the drift bound,
 *    no event of a scope the peer may not write is stored, and the count
 *    of new events equals what the session reports.
 *
 * The store is restored from a template after every input that changed
 * it, so each input starts from the same state (crashes reproduce).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_common.h"
#include "sync/frame.h"

static char db_path[600], template_path[600];
static void *template_bytes;
static size_t template_len;
static weft_db *db;
static uint64_t template_events;

static weft_db *restore(void)
{
	fuzz_remove_db(db_path);
	if (fuzz_write_file(db_path, template_bytes, template_len) < 0)
		abort();
	weft_db *d = fuzz_open_store(db_path, FUZZ_SEED_LOCAL);
	FUZZ_CHECK(d != NULL);
	return d;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	const char *dir = fuzz_tmpdir();
	snprintf(template_path, sizeof(template_path), "%s/template.db", dir);
	snprintf(db_path, sizeof(db_path), "%s/session.db", dir);
	weft_db *t = fuzz_make_store(template_path, FUZZ_SEED_LOCAL, 0);
	FUZZ_CHECK(t != NULL);
	weft_db_close(t); /* checkpoints the WAL into the main file */
	template_bytes = fuzz_read_file(template_path, &template_len);
	FUZZ_CHECK(template_bytes != NULL && template_len > 0);
	db = restore();
	weft_db_stats st;
	FUZZ_CHECK(weft_db_stats_get(&st, db) == WEFT_OK);
	template_events = st.events;
	return 0;
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

/* Checks our output frames and drops them. Returns the type of the last
 * complete frame (0 if none). */
static uint8_t drain(weft_session *s, frame_reader *out_rd)
{
	const void *b;
	size_t n;
	uint8_t last = 0;
	weft_session_output(s, &b, &n);
	const unsigned char *p = b;
	size_t left = n;
	while (left) {
		frame f;
		char why[160];
		int rc = frame_read(out_rd, &f, &p, &left, why);
		if (rc < 0)
			fprintf(stderr, "session sent a bad frame: %s\n", why);
		FUZZ_CHECK(rc >= 0);
		if (rc == 0)
			break;
		last = f.type;
	}
	weft_session_consume(s, n);
	return last;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t flags = data[0];
	weft_role role = (flags & 1) ? WEFT_ROLE_CLIENT : WEFT_ROLE_SERVER;
	weft_session_options o = WEFT_SESSION_OPTIONS_INIT;
	static const char *const narrow[] = {"notes", "todo"};
	if (flags & 2)
		o.authorize = authorize;
	if ((flags & 4) && role == WEFT_ROLE_CLIENT) {
		o.scopes = narrow;
		o.nscopes = 2;
	}
	o.idle_timeout_ms = 1000;
	weft_session *s = NULL;
	FUZZ_CHECK(weft_session_new(&s, db, role, &o) == WEFT_OK);

	frame_reader out_rd;
	frame_reader_init(&out_rd, FRAME_MAX_HARD);
	uint8_t last = drain(s, &out_rd);
	const uint8_t *p = data + 1;
	size_t left = size - 1;
	uint32_t x = (uint32_t)(flags >> 3) * 2654435761u + 1;
	uint64_t now = 1000;
	int rc = WEFT_OK;
	while (left && weft_session_state_get(s) != WEFT_SESSION_FAILED) {
		size_t chunk = left;
		if (flags >> 3) {
			x ^= x << 13, x ^= x >> 17, x ^= x << 5;
			chunk = 1 + x % (x & 1 ? 16 : 700);
			if (chunk > left)
				chunk = left;
		}
		rc = weft_session_feed(s, p, chunk, now);
		p += chunk;
		left -= chunk;
		now += 10;
		uint8_t t = drain(s, &out_rd);
		if (t)
			last = t;
		if (rc < 0)
			FUZZ_CHECK(weft_session_state_get(s) == WEFT_SESSION_FAILED);
	}
	weft_session_state st = weft_session_state_get(s);
	if (st != WEFT_SESSION_DONE && st != WEFT_SESSION_FAILED) {
		/* A peer that stops sending is cut off by the idle timeout. */
		FUZZ_CHECK(weft_session_tick(s, now + 500) == WEFT_OK);
		rc = weft_session_tick(s, now + 5000);
		FUZZ_CHECK(rc == WEFT_ETIMEOUT);
		uint8_t t = drain(s, &out_rd);
		FUZZ_CHECK(t == FRAME_ERROR);
		last = t;
		st = weft_session_state_get(s);
	}
	weft_session_stats stats;
	weft_session_stats_get(&stats, s);
	if (st == WEFT_SESSION_FAILED) {
		FUZZ_CHECK(stats.result < 0);
		FUZZ_CHECK(weft_session_errmsg(s)[0] != '\0');
		/* Unless the peer ended it, we told the peer why. */
		if (strncmp(weft_session_errmsg(s), "peer ended the session", 22) != 0)
			FUZZ_CHECK(last == FRAME_ERROR);
	} else {
		FUZZ_CHECK(st == WEFT_SESSION_DONE && stats.result == WEFT_OK);
	}
	if (getenv("WEFT_FUZZ_VERBOSE"))
		fprintf(stderr, "session: flags 0x%02x, %s, %llu events in, %llu refused: %s\n", flags,
		        st == WEFT_SESSION_DONE ? "done" : weft_errname(stats.result),
		        (unsigned long long)stats.events_received, (unsigned long long)stats.events_refused,
		        weft_session_errmsg(s));
	weft_session_free(s);
	frame_reader_free(&out_rd);

	weft_db_stats dst;
	FUZZ_CHECK(weft_db_stats_get(&dst, db) == WEFT_OK);
	FUZZ_CHECK(dst.events >= template_events);
	if (dst.events != template_events) {
		FUZZ_CHECK(dst.events - template_events == stats.events_received);
		weft_verify_report rep;
		int vrc = weft_db_verify(&rep, db, NULL, NULL);
		/* A link that disagrees with a stored neighbour is evidence of a
		 * fork (the author signed two histories), never damage: then the
		 * author is flagged (fuzz/regressions/session/fork-hidden-*). */
		int ok = vrc == WEFT_OK && rep.bad == 0 && (rep.broken_links == 0 || dst.forked_authors > 0);
		if (!ok)
			fprintf(stderr, "store does not verify after the session: %s (%s, %llu bad, %llu broken links, "
			        "%llu forked authors)\n", weft_errmsg(db), weft_errname(vrc), (unsigned long long)rep.bad,
			        (unsigned long long)rep.broken_links, (unsigned long long)dst.forked_authors);
		FUZZ_CHECK(ok);
		/* Nothing beyond the drift bound, nothing the peer may not write. */
		weft_iter *it;
		FUZZ_CHECK(weft_db_iter(&it, db, NULL) == WEFT_OK);
		const weft_event *ev;
		while (weft_iter_next(&ev, it) == WEFT_OK) {
			FUZZ_CHECK((weft_event_hlc(ev) >> 16) <= FUZZ_NOW_MS + WEFT_DRIFT_DEFAULT_MS);
			/* The template holds only our own events: the others came
			 * from the peer. */
			if ((flags & 2) && memcmp(weft_event_author(ev), weft_db_public_key(db), 32) != 0)
				FUZZ_CHECK(strcmp(weft_event_scope(ev), "notes") == 0);
		}
		weft_iter_free(it);
		weft_db_close(db);
		db = restore();
	} else {
		FUZZ_CHECK(stats.events_received == 0);
	}
	return 0;
}
