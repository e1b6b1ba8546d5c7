/* weft_sync_conn: drives a session over a transport connection. */
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "core/alloc.h"
#include "core/codec.h"
#include "core/store.h"
#include "core/trust.h"
#include "platform/platform.h"
#include "sync/frame.h"
#include "sync/session.h"

#define RECV_CHUNK (64u << 10)
#define SLICE_MS 250
#define BACKLOG_MAX (1u << 20) /* unsent output beyond which we stop reading */
#define PROGRESS_MS 100
#define FLUSH_MS 5000 /* to deliver the last frame once the session ended */
#define GRANT_READ 0x1 /* as in the server's HELLO (docs/PROTOCOL.md) */
#define GRANT_WRITE 0x2

/* Records the thread's last error on db. (Copied first: err_set must not
 * read the buffer it writes.) */
static int keep_last(weft_db *db, int rc, const char *suffix)
{
	char msg[WEFT_ERRMSG_LEN];
	snprintf(msg, sizeof(msg), "%s", weft_error_last());
	return err_set(&db->err, rc, "%s%s", msg, suffix);
}

typedef struct run_auth {
	const unsigned char *transport_peer; /* who the transport authenticated */
	weft_authorize_fn inner;
	void *inner_payload;
	int mismatch;
} run_auth;

/* The session's peer must be the device the transport authenticated;
 * then the trust store (or the app's callback) grants scopes. */
static int authorize(const unsigned char peer[32], const char *const *scopes, size_t n, int *readable,
                     int *writable, void *payload)
{
	run_auth *a = payload;
	if (a->transport_peer && sodium_memcmp(peer, a->transport_peer, 32) != 0) {
		a->mismatch = 1;
		return err_set(NULL, WEFT_EAUTH, "the peer's hello names another device than the one the "
		               "connection authenticated");
	}
	return a->inner(peer, scopes, n, readable, writable, a->inner_payload);
}

/*
 * What the server granted a client that named its scopes, read from the
 * server's HELLO as it goes by: a session that ends well has synced only
 * the granted scopes, and the caller asked for more. Only the first frame
 * is looked at; anything unexpected just disables the check (the session
 * itself judges the frame).
 */
typedef struct grant_peek {
	int active, done;
	frame_reader rd;
	size_t n;
	char (*names)[WEFT_SCOPE_MAX + 1];
	uint8_t *bits;
} grant_peek;

static void peek_free(grant_peek *g)
{
	frame_reader_free(&g->rd);
	weft__free(g->names);
	weft__free(g->bits);
}

static void peek_hello(grant_peek *g, const unsigned char *p, size_t len)
{
	/* magic 4, version 2, role 1, key 32, max frame 4, flags 1, count 2 */
	const unsigned char *end = p + len;
	if (len < 46 || memcmp(p, PROTOCOL_MAGIC, 4) != 0)
		return;
	size_t n = (size_t)(p[44] << 8 | p[45]);
	p += 46;
	g->names = weft__calloc(n ? n : 1, sizeof(*g->names));
	g->bits = weft__calloc(n ? n : 1, 1);
	if (!g->names || !g->bits)
		return;
	for (size_t i = 0; i < n; i++) {
		if (p >= end || *p == 0 || *p > WEFT_SCOPE_MAX || (size_t)(end - p) < (size_t)*p + 2u)
			return;
		memcpy(g->names[i], p + 1, *p);
		g->names[i][*p] = '\0';
		g->bits[i] = p[1 + *p];
		p += 2 + *p;
	}
	g->n = n;
	g->done = 1;
}

static void peek_feed(grant_peek *g, const unsigned char *p, size_t len)
{
	if (!g->active || g->done)
		return;
	frame f;
	char why[160];
	int rc = frame_read(&g->rd, &f, &p, &len, why);
	if (rc == 0)
		return;
	g->active = 0;
	if (rc == 1 && f.type == FRAME_HELLO)
		peek_hello(g, f.payload, f.len);
}

/* After a good session: the scopes the caller named that the peer does
 * not let this device read, or write. WEFT_EPERM with a message then. */
static int peek_verdict(grant_peek *g, weft_db *db, const weft_session_options *o)
{
	if (!g->done)
		return WEFT_OK;
	char no_read[512] = "", no_write[512] = "";
	for (size_t i = 0; i < o->nscopes; i++) {
		uint8_t bits = 0;
		for (size_t k = 0; k < g->n; k++)
			if (strcmp(g->names[k], o->scopes[i]) == 0)
				bits = g->bits[k];
		char *list = !(bits & GRANT_READ) ? no_read : !(bits & GRANT_WRITE) ? no_write : NULL;
		if (list) {
			size_t at = strlen(list);
			snprintf(list + at, 512 - at, "%s%s", at ? "," : "", o->scopes[i]);
		}
	}
	if (!no_read[0] && !no_write[0])
		return WEFT_OK;
	const char *me = weft_db_device_id(db);
	return err_set(&db->err, WEFT_EPERM,
	               "not fully in sync: the peer %s%s%s%s%s; the other scopes are in sync. If this device "
	               "should have access, run `weft trust add %s --scopes ...` on the peer",
	               no_read[0] ? "does not let this device read scope(s) " : "", no_read,
	               no_read[0] && no_write[0] ? ", and " : "",
	               no_write[0] ? "gives this device read-only access to scope(s) " : "",
	               no_write[0] ? no_write : "", me);
}

int weft_sync_conn(weft_session_stats *stats, weft_db *db, const weft_transport *t, void *conn, weft_role role,
                   const weft_session_options *opts, weft_sync_progress_fn progress, void *payload)
{
	if (stats) {
		memset(stats, 0, sizeof(*stats));
		stats->result = WEFT_ERROR;
	}
	if (!db || !t || !conn)
		return err_set(db ? &db->err : NULL, WEFT_EINVAL, "weft_sync_conn: db, transport and connection are required");
	if (t->version != WEFT_TRANSPORT_VERSION || !t->send || !t->recv || !t->wait)
		return err_set(&db->err, WEFT_EVERSION, "transport table version %u is not supported (or lacks "
		               "send/recv/wait); fill a weft_transport with WEFT_TRANSPORT_VERSION", t->version);
	int rc = t->handshake ? t->handshake(conn, 0) : WEFT_OK;
	if (rc < 0) {
		if (stats)
			stats->result = rc;
		return keep_last(db, rc, "");
	}
	weft_session_options o = WEFT_SESSION_OPTIONS_INIT;
	if (opts)
		o = *opts;
	run_auth auth = {t->peer ? t->peer(conn) : NULL, o.authorize ? o.authorize : trust_authorize,
	                 o.authorize ? o.authorize_payload : db, 0};
	o.authorize = authorize;
	o.authorize_payload = &auth;
	weft_session *s;
	if ((rc = weft_session_new(&s, db, role, &o)) < 0) {
		if (stats)
			stats->result = rc;
		return rc;
	}
	grant_peek peek;
	memset(&peek, 0, sizeof(peek));
	peek.active = role == WEFT_ROLE_CLIENT && o.scopes && o.nscopes;
	frame_reader_init(&peek.rd, FRAME_MAX_DEFAULT);
	unsigned char *buf = weft__malloc(RECV_CHUNK);
	if (!buf) {
		peek_free(&peek);
		weft_session_free(s);
		return err_set(&db->err, WEFT_ENOMEM, "out of memory");
	}
	uint64_t last_progress = 0, flush_deadline = 0;
	/* rc < 0 with transport set: the connection failed (message in the
	 * thread's last error); the session's own failure wins over it. */
	for (;;) {
		const void *out;
		size_t len, sent = 0;
		weft_session_output(s, &out, &len);
		if (len) {
			if ((rc = t->send(conn, out, len, &sent)) < 0)
				break;
			weft_session_consume(s, sent);
			len -= sent;
		}
		weft_session_state st = weft_session_state_get(s);
		if (st == WEFT_SESSION_DONE && !len) {
			rc = WEFT_OK;
			break;
		}
		if (st == WEFT_SESSION_FAILED && !len)
			break;
		if (st == WEFT_SESSION_DONE || st == WEFT_SESSION_FAILED) {
			/* Only our last frame is left to deliver: a peer that
			 * stopped reading does not keep us here. */
			uint64_t now = plat_mono_ms();
			if (!flush_deadline)
				flush_deadline = now + FLUSH_MS;
			else if (now >= flush_deadline) {
				rc = st == WEFT_SESSION_DONE ? WEFT_OK : WEFT_ETIMEOUT;
				break;
			}
		}
		/* Back-pressure: while the peer does not take what we owe it,
		 * read nothing more from it; its idle timeout then ends it. */
		int backlog = len > BACKLOG_MAX || st == WEFT_SESSION_DONE || st == WEFT_SESSION_FAILED;
		rc = t->wait(conn, backlog ? WEFT_WAIT_WRITE_ONLY : len > 0, SLICE_MS);
		if (rc < 0 && rc != WEFT_ETIMEOUT)
			break;
		uint64_t now = plat_mono_ms();
		rc = WEFT_OK;
		for (; !backlog;) {
			size_t got = 0;
			if ((rc = t->recv(conn, buf, RECV_CHUNK, &got)) < 0 || !got)
				break;
			peek_feed(&peek, buf, got);
			weft_session_feed(s, buf, got, now);
			const void *unsent;
			size_t pending;
			weft_session_output(s, &unsent, &pending);
			weft_session_state now_st = weft_session_state_get(s);
			if (pending > BACKLOG_MAX || now_st == WEFT_SESSION_DONE || now_st == WEFT_SESSION_FAILED)
				break; /* send first */
		}
		if (rc < 0) {
			/* The peer closing after the session ended is fine. */
			if (weft_session_state_get(s) == WEFT_SESSION_DONE) {
				rc = WEFT_OK;
				break;
			}
			if (weft_session_state_get(s) == WEFT_SESSION_FAILED)
				continue; /* send our error frame if we can, report the session's error */
			break;
		}
		weft_session_tick(s, now);
		if (progress && now - last_progress >= PROGRESS_MS) {
			weft_session_stats ss;
			weft_session_stats_get(&ss, s);
			progress(&ss, payload);
			last_progress = now;
		}
	}
	/* A broken connection: keep the batches fully received. */
	session_settle(s);
	weft_session_stats ss;
	weft_session_stats_get(&ss, s);
	if (weft_session_state_get(s) == WEFT_SESSION_FAILED) {
		rc = auth.mismatch ? WEFT_EAUTH : ss.result < 0 ? ss.result : WEFT_EPROTO;
		if (auth.mismatch)
			err_set(&db->err, rc, "refused: the session's hello names a device other than the one the "
			        "TLS connection authenticated (a device relaying another's session?)");
		else
			err_set(&db->err, rc, "%s", weft_session_errmsg(s));
	} else if (rc < 0) {
		/* The connection broke mid-session. */
		keep_last(db, rc, "; the sync did not finish");
	} else {
		rc = peek_verdict(&peek, db, &o);
	}
	if (rc < 0 && ss.events_received) {
		/* Every batch acknowledged so far is committed: say so, so
		 * nobody thinks they must start over. */
		char msg[WEFT_ERRMSG_LEN];
		snprintf(msg, sizeof(msg), "%s", weft_errmsg(db));
		err_set(&db->err, rc, "%s (the %llu new events received before were kept; sync again for the rest)",
		        msg, (unsigned long long)ss.events_received);
	}
	if (stats) {
		*stats = ss;
		if (rc < 0)
			stats->result = rc;
	}
	if (progress)
		progress(&ss, payload);
	weft__free(buf);
	peek_free(&peek);
	weft_session_free(s);
	return rc;
}
