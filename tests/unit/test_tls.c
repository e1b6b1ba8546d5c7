/* The TLS transport and weft_sync_conn in one process: two (or three)
 * stores, a listening transport on loopback with the server side on a
 * thread. Each refusal is checked for its error code, a message that names
 * the device and the fix, and that nothing was stored on either side. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "platform/platform.h"
#include "sync/transport_tls.h"


/* ----------------------------------------------------------- helpers */

static uint64_t events(weft_db *db)
{
	weft_db_stats s;
	tu_ok(db, weft_db_stats_get(&s, db));
	return s.events;
}

static uint64_t events_in(weft_db *db, const char *scope)
{
	weft_iter_options o = WEFT_ITER_OPTIONS_INIT;
	o.scope = scope;
	weft_iter *it;
	tu_ok(db, weft_db_iter(&it, db, &o));
	const weft_event *ev;
	uint64_t n = 0;
	while (weft_iter_next(&ev, it) == WEFT_OK)
		n++;
	weft_iter_free(it);
	return n;
}

static void append_n(weft_db *db, int n, const char *scope)
{
	for (int i = 0; i < n; i++) {
		weft_id id;
		char p[48];
		snprintf(p, sizeof(p), "%s event %d", scope, i);
		tu_ok(db, weft_db_append(&id, db, scope, "note", NULL, p, strlen(p)));
	}
}

static void trust(weft_db *db, weft_db *peer)
{
	tu_ok(db, weft_trust_add(db, weft_db_public_key(peer), NULL, 0, WEFT_TRUST_READ | WEFT_TRUST_WRITE));
}

typedef struct pin {
	int found, pinned;
	unsigned char hash[32];
} pin;

static int take_pin(const weft_trust_entry *e, void *p)
{
	pin *out = p;
	out->found = 1;
	out->pinned = e->tls_pinned;
	memcpy(out->hash, e->tls_key_hash, 32);
	return 0;
}

static pin pin_of(weft_db *db, weft_db *peer)
{
	pin p;
	memset(&p, 0, sizeof(p));
	int rc = weft_trust_get(db, weft_db_public_key(peer), take_pin, &p);
	assert_true(rc == WEFT_OK || rc == WEFT_ENOTFOUND);
	return p;
}

static void assert_contains(const char *hay, const char *needle)
{
	if (!strstr(hay, needle))
		print_error("expected \"%s\" in: %s\n", needle, hay);
	assert_non_null(strstr(hay, needle));
}

/* The server side: one connection accepted and synced on a thread. */
typedef struct server {
	weft_db *db;
	weft_transport *t;
	const weft_session_options *opts;
	plat_thread *thread;
	int accept_rc, rc;
	weft_session_stats st;
	char err[1024];
	char refused[2048];
	int nrefused;
	/* raw: only authenticate; the test's client speaks frames itself. */
	void *conn;
} server;

static void on_refused(const char *msg, void *payload)
{
	server *s = payload;
	s->nrefused++;
	snprintf(s->refused, sizeof(s->refused), "%s", msg);
}

static void *server_main(void *arg)
{
	server *s = arg;
	void *conn = NULL;
	s->accept_rc = s->t->accept(&conn, s->t->ctx, 10000);
	if (s->accept_rc < 0) {
		snprintf(s->err, sizeof(s->err), "%s", weft_error_last());
		s->rc = s->accept_rc;
		return NULL;
	}
	s->rc = weft_sync_conn(&s->st, s->db, s->t, conn, WEFT_ROLE_SERVER, s->opts, NULL, NULL);
	snprintf(s->err, sizeof(s->err), "%s", weft_errmsg(s->db));
	s->t->close(conn);
	return NULL;
}

static void server_start(server *s, weft_db *db, const char *listen, uint64_t handshake_timeout_ms)
{
	memset(s, 0, sizeof(*s));
	s->db = db;
	weft_tls_options o = WEFT_TLS_OPTIONS_INIT;
	o.listen = listen ? listen : "127.0.0.1:0";
	o.handshake_timeout_ms = handshake_timeout_ms;
	o.on_refused = on_refused;
	o.on_refused_payload = s;
	tu_ok(db, weft_tls_transport_new(&s->t, db, &o));
	assert_non_null(weft_tls_listen_address(s->t));
}

static void server_run(server *s)
{
	assert_int_equal(plat_thread_start(&s->thread, server_main, s), 0);
}

static void server_stop(server *s)
{
	if (s->thread)
		plat_thread_join(s->thread);
	s->thread = NULL;
	weft_tls_transport_free(s->t);
	s->t = NULL;
}

/* The client side: connect and sync. */
typedef struct client {
	int connect_rc, rc;
	weft_session_stats st;
	char err[1024];
} client;

static client client_sync(weft_db *db, const char *addr, enum tls_fault fault, const weft_session_options *opts)
{
	client c;
	memset(&c, 0, sizeof(c));
	weft_transport *t;
	tu_ok(db, weft_tls_transport_new(&t, db, NULL));
	if (fault)
		assert_int_equal(transport_tls_test_fault(t, fault), WEFT_OK);
	void *conn = NULL;
	c.connect_rc = t->connect(&conn, t->ctx, addr, 0);
	if (c.connect_rc < 0) {
		snprintf(c.err, sizeof(c.err), "%s", weft_error_last());
		c.rc = c.connect_rc;
	} else {
		c.rc = weft_sync_conn(&c.st, db, t, conn, WEFT_ROLE_CLIENT, opts, NULL, NULL);
		snprintf(c.err, sizeof(c.err), "%s", weft_errmsg(db));
		t->close(conn);
	}
	weft_tls_transport_free(t);
	return c;
}

/* One whole session: server on a thread, client here. */
static client sync_pair(server *s, weft_db *srv, weft_db *cli, enum tls_fault client_fault,
                        enum tls_fault server_fault, const weft_session_options *copts)
{
	server_start(s, srv, NULL, 0);
	if (server_fault)
		assert_int_equal(transport_tls_test_fault(s->t, server_fault), WEFT_OK);
	server_run(s);
	client c = client_sync(cli, weft_tls_listen_address(s->t), client_fault, copts);
	server_stop(s);
	return c;
}

/* ------------------------------------------------------------- tests */

static void test_tls_syncs_both_ways_and_pins_each_others_key(void **state)
{
	const char *dir = *state;
	weft_db *a = tu_open(dir, "a.db", NULL, 1);
	weft_db *b = tu_open(dir, "b.db", NULL, 2);
	append_n(a, 3, "notes");
	append_n(b, 2, "notes");
	trust(a, b);
	trust(b, a);
	assert_false(pin_of(a, b).pinned);

	server s;
	client c = sync_pair(&s, a, b, TLS_FAULT_NONE, TLS_FAULT_NONE, NULL);
	if (c.rc)
		print_error("client: %s\nserver: %s\n", c.err, s.err);
	assert_int_equal(c.rc, WEFT_OK);
	assert_int_equal(s.rc, WEFT_OK);
	assert_int_equal(events(a), 5);
	assert_int_equal(events(b), 5);
	assert_int_equal(c.st.events_received, 3);
	assert_int_equal(c.st.events_sent, 2);
	assert_int_equal(s.nrefused, 0);

	/* First verified contact pinned each side's TLS key: the hash
	 * `weft id` shows on the other device. */
	unsigned char ha[32], hb[32];
	tu_ok(a, weft_tls_key_hash(ha, a));
	tu_ok(b, weft_tls_key_hash(hb, b));
	assert_memory_not_equal(ha, hb, 32);
	pin pa = pin_of(a, b), pb = pin_of(b, a);
	assert_true(pa.pinned && pb.pinned);
	assert_memory_equal(pa.hash, hb, 32);
	assert_memory_equal(pb.hash, ha, 32);

	/* The TLS key is derived from the device key: stable across runs. */
	unsigned char again[32];
	tu_ok(a, weft_tls_key_hash(again, a));
	assert_memory_equal(again, ha, 32);

	/* A second session finds nothing to do, and still authenticates. */
	c = sync_pair(&s, a, b, TLS_FAULT_NONE, TLS_FAULT_NONE, NULL);
	assert_int_equal(c.rc, WEFT_OK);
	assert_int_equal(c.st.events_received + c.st.events_sent, 0);
	weft_db_close(a);
	weft_db_close(b);
}

static void test_tls_refuses_untrusted_client_before_any_frame(void **state)
{
	const char *dir = *state;
	weft_db *a = tu_open(dir, "a.db", NULL, 1);
	weft_db *b = tu_open(dir, "b.db", NULL, 2);
	append_n(a, 2, "notes");
	append_n(b, 2, "notes");
	trust(b, a); /* a does not know b */

	server s;
	client c = sync_pair(&s, a, b, TLS_FAULT_NONE, TLS_FAULT_NONE, NULL);
	assert_int_equal(c.connect_rc, WEFT_EAUTH); /* no session was even started */
	assert_int_equal(s.rc, WEFT_EAUTH);
	assert_int_equal(s.st.bytes_received, 0);
	/* The server's log names the device and the command to admit it. */
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "weft trust add %s", weft_db_device_id(b));
	assert_int_equal(s.nrefused, 1);
	assert_contains(s.refused, weft_db_device_id(b));
	assert_contains(s.refused, cmd);
	assert_contains(s.refused, "not in this device's trust store");
	/* The client is told it was refused, and what to run over there. */
	assert_contains(c.err, "refused this device");
	assert_contains(c.err, cmd);
	assert_int_equal(events(a), 2);
	assert_int_equal(events(b), 2);
	assert_false(pin_of(a, b).found);
	assert_false(pin_of(b, a).pinned);
	weft_db_close(a);
	weft_db_close(b);
}

static void test_tls_client_refuses_untrusted_server(void **state)
{
	const char *dir = *state;
	weft_db *a = tu_open(dir, "a.db", NULL, 1);
	weft_db *b = tu_open(dir, "b.db", NULL, 2);
	append_n(a, 2, "notes");
	trust(a, b); /* b does not know a */

	server s;
	client c = sync_pair(&s, a, b, TLS_FAULT_NONE, TLS_FAULT_NONE, NULL);
	assert_int_equal(c.connect_rc, WEFT_EAUTH);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "weft trust add %s", weft_db_device_id(a));
	assert_contains(c.err, weft_db_device_id(a));
	assert_contains(c.err, cmd);
	assert_int_equal(s.rc, WEFT_EAUTH);
	assert_contains(s.refused, "refused this device");
	assert_int_equal(events(b), 0);
	assert_false(pin_of(a, b).pinned);
	weft_db_close(a);
	weft_db_close(b);
}

/* A certificate naming b, but with another TLS key, sent with b's genuine
 * endorsement (which signs b's real key): the endorsement does not cover
 * the key in use, so the server refuses, stores nothing and pins nothing. */
static void test_tls_refuses_endorsement_replayed_with_another_key(void **state)
{
	const char *dir = *state;
	weft_db *a = tu_open(dir, "a.db", NULL, 1);
	weft_db *b = tu_open(dir, "b.db", NULL, 2);
	append_n(a, 2, "notes");
	append_n(b, 3, "notes");
	trust(a, b);
	trust(b, a);

	server s;
	client c = sync_pair(&s, a, b, TLS_FAULT_FOREIGN_KEY, TLS_FAULT_NONE, NULL);
	assert_int_equal(c.connect_rc, WEFT_EAUTH);
	assert_contains(c.err, "refused this device");
	assert_int_equal(s.rc, WEFT_EAUTH);
	assert_contains(s.err, "did not endorse the TLS key it used");
	assert_contains(s.refused, weft_db_device_id(b));
	assert_int_equal(s.st.bytes_received, 0);
	assert_int_equal(events(a), 2);
	assert_int_equal(events(b), 3);
	assert_false(pin_of(a, b).pinned); /* the forged key was not pinned */

	/* The genuine device still gets in afterwards. */
	c = sync_pair(&s, a, b, TLS_FAULT_NONE, TLS_FAULT_NONE, NULL);
	assert_int_equal(c.rc, WEFT_OK);
	assert_int_equal(events(a), 5);
	weft_db_close(a);
	weft_db_close(b);
}

static void test_tls_refuses_key_other_than_the_pinned_one(void **state)
{
	const char *dir = *state;
	weft_db *a = tu_open(dir, "a.db", NULL, 1);
	weft_db *b = tu_open(dir, "b.db", NULL, 2);
	trust(a, b);
	trust(b, a);
	server s;
	client c = sync_pair(&s, a, b, TLS_FAULT_NONE, TLS_FAULT_NONE, NULL);
	assert_int_equal(c.rc, WEFT_OK);
	pin before = pin_of(a, b);
	assert_true(before.pinned);

	append_n(b, 2, "notes");
	c = sync_pair(&s, a, b, TLS_FAULT_FOREIGN_KEY, TLS_FAULT_NONE, NULL);
	assert_int_equal(c.connect_rc, WEFT_EAUTH);
	assert_int_equal(s.rc, WEFT_EAUTH);
	/* Refused by the pin, during the handshake (before endorsements). */
	assert_contains(s.refused, "different TLS key than the one pinned");
	assert_contains(s.refused, "weft trust remove");
	assert_int_equal(events(a), 0);
	pin after = pin_of(a, b);
	assert_memory_equal(after.hash, before.hash, 32);

	/* The same from the client's side: a server with another key. */
	c = sync_pair(&s, a, b, TLS_FAULT_NONE, TLS_FAULT_FOREIGN_KEY, NULL);
	assert_int_equal(c.connect_rc, WEFT_EAUTH);
	assert_contains(c.err, "different TLS key than the one pinned");
	assert_int_equal(events(a), 0);
	weft_db_close(a);
	weft_db_close(b);
}

/* A signature over another session's channel binding (a relayed
 * endorsement) is refused, by the server and by the client. */
static void test_tls_refuses_signature_over_another_channel(void **state)
{
	const char *dir = *state;
	weft_db *a = tu_open(dir, "a.db", NULL, 1);
	weft_db *b = tu_open(dir, "b.db", NULL, 2);
	append_n(b, 2, "notes");
	trust(a, b);
	trust(b, a);
	server s;
	client c = sync_pair(&s, a, b, TLS_FAULT_BAD_BINDING, TLS_FAULT_NONE, NULL);
	assert_int_equal(c.connect_rc, WEFT_EAUTH);
	assert_int_equal(s.rc, WEFT_EAUTH);
	assert_contains(s.err, "channel binding");
	assert_false(pin_of(a, b).pinned);

	c = sync_pair(&s, a, b, TLS_FAULT_NONE, TLS_FAULT_BAD_BINDING, NULL);
	assert_int_equal(c.connect_rc, WEFT_EAUTH);
	assert_contains(c.err, "channel binding");
	/* The server learns it was refused when its next read meets the alert. */
	assert_true(s.rc < 0);
	assert_int_equal(events(a), 0);
	assert_false(pin_of(b, a).pinned);
	weft_db_close(a);
	weft_db_close(b);
}

static void test_tls_requires_extended_master_secret(void **state)
{
	const char *dir = *state;
	weft_db *a = tu_open(dir, "a.db", NULL, 1);
	weft_db *b = tu_open(dir, "b.db", NULL, 2);
	append_n(b, 2, "notes");
	trust(a, b);
	trust(b, a);
	server s;
	client c = sync_pair(&s, a, b, TLS_FAULT_NO_EMS, TLS_FAULT_NONE, NULL);
	assert_int_equal(c.connect_rc, WEFT_EAUTH);
	assert_int_equal(s.rc, WEFT_EAUTH);
	assert_contains(s.refused, "extended master secret");
	assert_int_equal(events(a), 0);

	/* And a client refuses a server that does not negotiate it. */
	c = sync_pair(&s, a, b, TLS_FAULT_NONE, TLS_FAULT_NO_EMS, NULL);
	assert_int_equal(c.connect_rc, WEFT_EAUTH);
	assert_contains(c.err, "extended master secret");
	assert_int_equal(events(a), 0);
	weft_db_close(a);
	weft_db_close(b);
}

static void test_tls_refuses_revoked_device_at_next_connection(void **state)
{
	const char *dir = *state;
	weft_db *a = tu_open(dir, "a.db", NULL, 1);
	weft_db *b = tu_open(dir, "b.db", NULL, 2);
	append_n(b, 1, "notes");
	trust(a, b);
	trust(b, a);
	server s;
	client c = sync_pair(&s, a, b, TLS_FAULT_NONE, TLS_FAULT_NONE, NULL);
	assert_int_equal(c.rc, WEFT_OK);
	assert_int_equal(events(a), 1);

	tu_ok(a, weft_trust_remove(a, weft_db_public_key(b)));
	append_n(b, 2, "notes");
	c = sync_pair(&s, a, b, TLS_FAULT_NONE, TLS_FAULT_NONE, NULL);
	assert_int_equal(c.connect_rc, WEFT_EAUTH);
	assert_int_equal(s.rc, WEFT_EAUTH);
	assert_contains(s.refused, weft_db_device_id(b));
	assert_int_equal(events(a), 1);
	assert_int_equal(events(b), 3);
	weft_db_close(a);
	weft_db_close(b);
}

/* The session's hello must name the device TLS authenticated: a trusted
 * device x cannot ride on b's connection. */
static void test_tls_refuses_hello_naming_another_device(void **state)
{
	const char *dir = *state;
	weft_db *a = tu_open(dir, "a.db", NULL, 1);
	weft_db *b = tu_open(dir, "b.db", NULL, 2);
	weft_db *x = tu_open(dir, "x.db", NULL, 3);
	append_n(x, 2, "notes");
	trust(a, b);
	trust(a, x);
	trust(b, a);
	trust(x, a);

	server s;
	server_start(&s, a, NULL, 0);
	server_run(&s);
	weft_transport *t;
	tu_ok(b, weft_tls_transport_new(&t, b, NULL));
	void *conn;
	tu_ok(b, t->connect(&conn, t->ctx, weft_tls_listen_address(s.t), 0));
	int rc = weft_sync_conn(NULL, x, t, conn, WEFT_ROLE_CLIENT, NULL, NULL, NULL);
	t->close(conn);
	weft_tls_transport_free(t);
	server_stop(&s);
	assert_true(rc < 0);
	assert_int_equal(s.rc, WEFT_EAUTH);
	assert_contains(s.err, "other than the one the TLS connection authenticated");
	assert_int_equal(events(a), 0);
	weft_db_close(a);
	weft_db_close(b);
	weft_db_close(x);
}

/* Scopes: a scope the client may not read gives it nothing and the sync
 * reports it; the scopes it may use flow. */
static void test_tls_scope_not_granted_is_reported_and_not_shared(void **state)
{
	const char *dir = *state;
	weft_db *a = tu_open(dir, "a.db", NULL, 1);
	weft_db *b = tu_open(dir, "b.db", NULL, 2);
	append_n(a, 2, "shared");
	append_n(a, 3, "secret");
	append_n(b, 1, "shared");
	append_n(b, 1, "secret");
	const char *shared[] = {"shared"};
	tu_ok(a, weft_trust_add(a, weft_db_public_key(b), shared, 1, WEFT_TRUST_READ | WEFT_TRUST_WRITE));
	trust(b, a);

	const char *ask[] = {"shared", "secret"};
	weft_session_options o = WEFT_SESSION_OPTIONS_INIT;
	o.scopes = ask;
	o.nscopes = 2;
	server s;
	client c = sync_pair(&s, a, b, TLS_FAULT_NONE, TLS_FAULT_NONE, &o);
	assert_int_equal(c.rc, WEFT_EPERM);
	assert_contains(c.err, "does not let this device read scope(s) secret");
	assert_contains(c.err, weft_db_device_id(b));
	assert_int_equal(s.rc, WEFT_OK);
	assert_int_equal(events_in(b, "shared"), 3);
	assert_int_equal(events_in(a, "shared"), 3);
	assert_int_equal(events_in(b, "secret"), 1);
	assert_int_equal(events_in(a, "secret"), 3);

	/* Read-only access: the device gets the scope, its writes stay here,
	 * and asking for the scope explicitly reports that. */
	const char *ro[] = {"shared"};
	tu_ok(a, weft_trust_add(a, weft_db_public_key(b), ro, 1, WEFT_TRUST_READ));
	append_n(a, 1, "shared");
	append_n(b, 2, "shared");
	o.scopes = ro;
	o.nscopes = 1;
	c = sync_pair(&s, a, b, TLS_FAULT_NONE, TLS_FAULT_NONE, &o);
	assert_int_equal(c.rc, WEFT_EPERM);
	assert_contains(c.err, "read-only access to scope(s) shared");
	assert_int_equal(events_in(b, "shared"), 6);
	assert_int_equal(events_in(a, "shared"), 4);
	/* Without naming scopes the same sync is complete for what is shared. */
	c = sync_pair(&s, a, b, TLS_FAULT_NONE, TLS_FAULT_NONE, NULL);
	assert_int_equal(c.rc, WEFT_OK);
	assert_int_equal(events_in(a, "shared"), 4);
	weft_db_close(a);
	weft_db_close(b);
}

/* A hostile client that sends events of a scope it may only read, without
 * waiting for reconciliation: the server refuses them (EPERM), stores
 * none, and tells the client why. */
static void put_frame(unsigned char **buf, size_t *len, uint8_t type, const void *p, size_t n)
{
	*buf = realloc(*buf, *len + 5 + n);
	unsigned char *o = *buf + *len;
	o[0] = type;
	o[1] = (unsigned char)(n >> 24);
	o[2] = (unsigned char)(n >> 16);
	o[3] = (unsigned char)(n >> 8);
	o[4] = (unsigned char)n;
	memcpy(o + 5, p, n);
	*len += 5 + n;
}

static void test_tls_server_refuses_events_of_read_only_scope(void **state)
{
	const char *dir = *state;
	weft_db *a = tu_open(dir, "a.db", NULL, 1);
	weft_db *b = tu_open(dir, "b.db", NULL, 2);
	const char *ro[] = {"ro"};
	tu_ok(a, weft_trust_add(a, weft_db_public_key(b), ro, 1, WEFT_TRUST_READ));
	trust(b, a);
	weft_id id;
	tu_ok(b, weft_db_append(&id, b, "ro", "note", NULL, "sneaky", 6));
	weft_event *ev;
	tu_ok(b, weft_db_get(&ev, b, &id));
	size_t elen;
	const unsigned char *enc = weft_event_bytes(ev, &elen);

	server s;
	server_start(&s, a, NULL, 0);
	server_run(&s);
	weft_transport *t;
	tu_ok(b, weft_tls_transport_new(&t, b, NULL));
	void *conn;
	tu_ok(b, t->connect(&conn, t->ctx, weft_tls_listen_address(s.t), 0));
	/* A genuine client session does the hellos; an EVENTS frame of its
	 * own is slipped in right after them. */
	const char *ask[] = {"ro"};
	weft_session_options o = WEFT_SESSION_OPTIONS_INIT;
	o.scopes = ask;
	o.nscopes = 1;
	weft_session *cs;
	tu_ok(b, weft_session_new(&cs, b, WEFT_ROLE_CLIENT, &o));
	int injected = 0;
	char peer_error[512] = "";
	uint64_t deadline = plat_mono_ms() + 10000;
	unsigned char buf[65536];
	while (plat_mono_ms() < deadline && !peer_error[0]) {
		const void *out;
		size_t len, sent;
		weft_session_output(cs, &out, &len);
		if (len) {
			assert_int_equal(t->send(conn, out, len, &sent), WEFT_OK);
			weft_session_consume(cs, sent);
			len -= sent;
		}
		if (!injected && weft_session_state_get(cs) == WEFT_SESSION_SYNCING && !len) {
			unsigned char *frame = NULL, *payload = malloc(8 + elen);
			size_t flen = 0;
			payload[0] = payload[1] = payload[2] = 0;
			payload[3] = 1;
			payload[4] = (unsigned char)(elen >> 24);
			payload[5] = (unsigned char)(elen >> 16);
			payload[6] = (unsigned char)(elen >> 8);
			payload[7] = (unsigned char)elen;
			memcpy(payload + 8, enc, elen);
			put_frame(&frame, &flen, 4 /* EVENTS */, payload, 8 + elen);
			size_t done = 0;
			while (done < flen) {
				size_t n;
				assert_int_equal(t->send(conn, frame + done, flen - done, &n), WEFT_OK);
				done += n;
				if (done < flen)
					t->wait(conn, 1, 100);
			}
			free(frame);
			free(payload);
			injected = 1;
		}
		t->wait(conn, 0, 100);
		size_t got;
		int rc = t->recv(conn, buf, sizeof(buf), &got);
		if (rc < 0)
			break;
		if (got) {
			weft_session_feed(cs, buf, got, plat_mono_ms());
			if (weft_session_state_get(cs) == WEFT_SESSION_FAILED)
				snprintf(peer_error, sizeof(peer_error), "%s", weft_session_errmsg(cs));
		}
	}
	weft_session_free(cs);
	t->close(conn);
	weft_tls_transport_free(t);
	server_stop(&s);
	weft_event_free(ev);
	assert_true(injected);
	assert_int_equal(s.rc, WEFT_EPERM);
	assert_contains(s.err, "may not write scope ro");
	assert_int_equal(s.st.events_refused, 1);
	assert_contains(peer_error, "may not write scope ro");
	assert_int_equal(events(a), 0);
	weft_db_close(a);
	weft_db_close(b);
}

/* A client that connects and says nothing is dropped after the handshake
 * timeout, not held forever. */
static void test_tls_handshake_times_out_on_a_silent_peer(void **state)
{
	const char *dir = *state;
	weft_db *a = tu_open(dir, "a.db", NULL, 1);
	server s;
	server_start(&s, a, NULL, 300);
	server_run(&s);
	char host[256], port[16], err[PLAT_ERR_LEN];
	assert_int_equal(plat_split_addr(weft_tls_listen_address(s.t), host, port), 0);
	int fd;
	assert_int_equal(plat_tcp_connect(&fd, host, port, 5000, err), 0);
	uint64_t t0 = plat_mono_ms();
	plat_thread_join(s.thread);
	s.thread = NULL;
	uint64_t took = plat_mono_ms() - t0;
	plat_sock_close(fd);
	server_stop(&s);
	assert_int_equal(s.rc, WEFT_ETIMEOUT);
	assert_contains(s.err, "did not finish within 300 ms");
	assert_true(took < 5000);
	weft_db_close(a);
}

static void test_tls_works_over_ipv6_loopback(void **state)
{
	const char *dir = *state;
	weft_db *a = tu_open(dir, "a.db", NULL, 1);
	weft_db *b = tu_open(dir, "b.db", NULL, 2);
	weft_transport *probe;
	weft_tls_options o = WEFT_TLS_OPTIONS_INIT;
	o.listen = "[::1]:0";
	if (weft_tls_transport_new(&probe, a, &o) < 0) {
		print_message("skipped: cannot listen on [::1]: %s\n", weft_errmsg(a));
		weft_db_close(a);
		weft_db_close(b);
		skip();
	}
	weft_tls_transport_free(probe);
	append_n(a, 2, "notes");
	append_n(b, 1, "notes");
	trust(a, b);
	trust(b, a);
	server s;
	server_start(&s, a, "[::1]:0", 0);
	assert_non_null(strstr(weft_tls_listen_address(s.t), "[::1]:"));
	server_run(&s);
	client c = client_sync(b, weft_tls_listen_address(s.t), TLS_FAULT_NONE, NULL);
	server_stop(&s);
	assert_int_equal(c.rc, WEFT_OK);
	assert_int_equal(events(a), 3);
	assert_int_equal(events(b), 3);
	weft_db_close(a);
	weft_db_close(b);
}

static void test_tls_reports_bad_addresses_and_dead_ports(void **state)
{
	const char *dir = *state;
	weft_db *a = tu_open(dir, "a.db", NULL, 1);
	weft_transport *t;
	tu_ok(a, weft_tls_transport_new(&t, a, NULL));
	void *conn = NULL;
	assert_int_equal(t->connect(&conn, t->ctx, "no-port-here", 1000), WEFT_EINVAL);
	assert_contains(weft_error_last(), "HOST:PORT");
	/* A port that just closed: nobody listens there. */
	weft_transport *l;
	weft_tls_options o = WEFT_TLS_OPTIONS_INIT;
	o.listen = "127.0.0.1:0";
	tu_ok(a, weft_tls_transport_new(&l, a, &o));
	char addr[80];
	snprintf(addr, sizeof(addr), "%s", weft_tls_listen_address(l));
	weft_tls_transport_free(l);
	int rc = t->connect(&conn, t->ctx, addr, 2000);
	assert_true(rc == WEFT_EIO || rc == WEFT_ETIMEOUT);
	assert_contains(weft_error_last(), "weft serve");
	assert_null(conn);
	weft_tls_transport_free(t);
	/* Listening needs the device key; a read-only handle has none. */
	weft_db_close(a);
	weft_open_options ro = WEFT_OPEN_OPTIONS_INIT;
	ro.flags = WEFT_OPEN_READONLY;
	ro.key_path = tu_path(dir, "none.key");
	weft_db *r;
	if (weft_db_open(&r, tu_path(dir, "a.db"), &ro) == WEFT_OK) {
		assert_int_equal(weft_tls_transport_new(&t, r, NULL), WEFT_EPERM);
		assert_contains(weft_errmsg(r), "device key");
		weft_db_close(r);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_tls_syncs_both_ways_and_pins_each_others_key, tu_setup_dir_shm, tu_teardown_dir),
		cmocka_unit_test_setup_teardown(test_tls_refuses_untrusted_client_before_any_frame, tu_setup_dir_shm, tu_teardown_dir),
		cmocka_unit_test_setup_teardown(test_tls_client_refuses_untrusted_server, tu_setup_dir_shm, tu_teardown_dir),
		cmocka_unit_test_setup_teardown(test_tls_refuses_endorsement_replayed_with_another_key, tu_setup_dir_shm, tu_teardown_dir),
		cmocka_unit_test_setup_teardown(test_tls_refuses_key_other_than_the_pinned_one, tu_setup_dir_shm, tu_teardown_dir),
		cmocka_unit_test_setup_teardown(test_tls_refuses_signature_over_another_channel, tu_setup_dir_shm, tu_teardown_dir),
		cmocka_unit_test_setup_teardown(test_tls_requires_extended_master_secret, tu_setup_dir_shm, tu_teardown_dir),
		cmocka_unit_test_setup_teardown(test_tls_refuses_revoked_device_at_next_connection, tu_setup_dir_shm, tu_teardown_dir),
		cmocka_unit_test_setup_teardown(test_tls_refuses_hello_naming_another_device, tu_setup_dir_shm, tu_teardown_dir),
		cmocka_unit_test_setup_teardown(test_tls_scope_not_granted_is_reported_and_not_shared, tu_setup_dir_shm, tu_teardown_dir),
		cmocka_unit_test_setup_teardown(test_tls_server_refuses_events_of_read_only_scope, tu_setup_dir_shm, tu_teardown_dir),
		cmocka_unit_test_setup_teardown(test_tls_handshake_times_out_on_a_silent_peer, tu_setup_dir_shm, tu_teardown_dir),
		cmocka_unit_test_setup_teardown(test_tls_works_over_ipv6_loopback, tu_setup_dir_shm, tu_teardown_dir),
		cmocka_unit_test_setup_teardown(test_tls_reports_bad_addresses_and_dead_ports, tu_setup_dir_shm, tu_teardown_dir),
	};
	return cmocka_run_group_tests_name("tls", tests, NULL, NULL);
}
