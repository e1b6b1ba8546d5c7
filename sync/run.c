/* weft_sync_conn: drives a session over a transport connection. */
#include <string.h>

#include <sodium.h>

#include "core/alloc.h"
#include "core/store.h"
#include "core/trust.h"
#include "platform/platform.h"

#define RECV_CHUNK (64u << 10)
#define SLICE_MS 250
#define PROGRESS_MS 100

typedef struct run_auth {
	const unsigned char *transport_peer; /* who the transport authenticated */
	weft_authorize_fn inner;
	void *inner_payload;
} run_auth;

/* The session's peer must be the device the transport authenticated;
 * then the trust store (or the app's callback) grants scopes. */
static int authorize(const unsigned char peer[32], const char *const *scopes, size_t n, int *readable,
                     int *writable, void *payload)
{
	run_auth *a = payload;
	if (a->transport_peer && sodium_memcmp(peer, a->transport_peer, 32) != 0)
		return err_set(NULL, WEFT_EAUTH, "the peer's hello names another device than the one the "
		               "connection authenticated");
	return a->inner(peer, scopes, n, readable, writable, a->inner_payload);
}

int weft_sync_conn(weft_session_stats *stats, weft_db *db, const weft_transport *t, void *conn, weft_role role,
                   const weft_session_options *opts, weft_sync_progress_fn progress, void *payload)
{
	if (!db || !t || !conn)
		return err_set(NULL, WEFT_EINVAL, "weft_sync_conn: db, transport and connection are required");
	if (t->version != WEFT_TRANSPORT_VERSION)
		return err_set(&db->err, WEFT_EVERSION, "transport table version %u is not supported", t->version);
	int rc = t->handshake ? t->handshake(conn, 0) : WEFT_OK;
	if (rc < 0)
		return err_set(&db->err, rc, "%s", weft_error_last());
	weft_session_options o = WEFT_SESSION_OPTIONS_INIT;
	if (opts)
		o = *opts;
	run_auth auth = {t->peer ? t->peer(conn) : NULL, o.authorize ? o.authorize : trust_authorize,
	                 o.authorize ? o.authorize_payload : db};
	o.authorize = authorize;
	o.authorize_payload = &auth;
	weft_session *s;
	if ((rc = weft_session_new(&s, db, role, &o)) < 0)
		return rc;
	unsigned char *buf = weft__malloc(RECV_CHUNK);
	if (!buf) {
		weft_session_free(s);
		return err_set(&db->err, WEFT_ENOMEM, "out of memory");
	}
	uint64_t last_progress = 0;
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
		if (st == WEFT_SESSION_FAILED && !len) {
			weft_session_stats ss;
			weft_session_stats_get(&ss, s);
			rc = ss.result < 0 ? ss.result : WEFT_EPROTO;
			err_set(NULL, rc, "%s", weft_session_errmsg(s));
			break;
		}
		rc = t->wait(conn, len > 0, SLICE_MS);
		if (rc < 0 && rc != WEFT_ETIMEOUT)
			break;
		uint64_t now = plat_mono_ms();
		for (;;) {
			size_t got = 0;
			if ((rc = t->recv(conn, buf, RECV_CHUNK, &got)) < 0)
				break;
			if (!got)
				break;
			weft_session_feed(s, buf, got, now);
		}
		if (rc < 0) {
			/* The peer closing after the session ended is fine. */
			if (weft_session_state_get(s) == WEFT_SESSION_DONE) {
				rc = WEFT_OK;
				break;
			}
			if (weft_session_state_get(s) == WEFT_SESSION_FAILED)
				continue; /* report the session's own error */
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
	if (rc < 0)
		err_set(&db->err, rc, "%s", weft_error_last());
	if (stats)
		weft_session_stats_get(stats, s);
	if (stats && rc < 0 && stats->result >= 0)
		stats->result = rc;
	if (progress) {
		weft_session_stats ss;
		weft_session_stats_get(&ss, s);
		progress(&ss, payload);
	}
	weft__free(buf);
	weft_session_free(s);
	return rc;
}
