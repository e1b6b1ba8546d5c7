/*
 * TLS over TCP with mbedTLS 2.28: the only file that includes mbedTLS.
 *
 * Authentication is by device key, not by a CA:
 *  - the TLS key is derived from the device's Ed25519 seed, so it needs no
 *    storage of its own; the self-signed certificate names the device id;
 *  - during the handshake the verify callback accepts a certificate only
 *    if the device it names is in the trust store (and, once pinned, with
 *    the same key), and only with extended master secret negotiated;
 *  - right after the handshake the client sends its device key, an Ed25519
 *    signature over its TLS key hash (the endorsement) and one over a
 *    channel binding exported from the TLS session; the server checks them
 *    and only then answers with its own, which the client checks. A side
 *    that refuses sends a fatal TLS alert, so the other learns why.
 * docs/SECURITY-TLS.md explains the design and the threats.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/ecp.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/sha256.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_internal.h>
#include <mbedtls/x509_crt.h>
#include <sodium.h>

#include "core/alloc.h"
#include "core/store.h"
#include "core/trust.h"
#include "platform/platform.h"
#include "sync/transport_tls.h"

#define TLS_KEY_DOMAIN "weft-tls-key-v1"
#define TLS_FAKE_DOMAIN "weft-tls-test-foreign-key"
#define ENDORSE_DOMAIN "weft-tls-endorse-v1"
#define BINDING_DOMAIN "weft-tls-binding-v1"
#define BINDING_LABEL "EXPORTER-weft-channel-binding"
#define ENDORSEMENT_BYTES (32 + 64 + 64)
#define TIMEOUT_DEFAULT_MS 10000
#define LINGER_MS 500

typedef struct tls_ctx {
	weft_transport ops;
	weft_db *db;          /* trust lookups, under lock */
	plat_mutex *lock;
	mbedtls_pk_context key;
	mbedtls_x509_crt cert;
	unsigned char spki_hash[32];
	unsigned char endorsement[64];
	unsigned char pk[32];
	unsigned char *sk;    /* Ed25519 secret key (64 bytes, sodium_malloc) */
	char device_id[WEFT_DEVICE_ID_LEN + 1];
	int listen_fd;
	char bound[80];
	uint64_t connect_timeout, handshake_timeout;
	void (*on_refused)(const char *, void *);
	void *on_refused_payload;
	enum tls_fault fault;
} tls_ctx;

typedef struct tls_conn {
	tls_ctx *ctx;
	int fd;
	int server;
	char peer_addr[80];
	mbedtls_ssl_config conf;
	mbedtls_ssl_context ssl;
	mbedtls_ctr_drbg_context drbg;
	int handshaken;    /* TLS handshake done (close_notify is due) */
	int authenticated; /* and the endorsements checked: weft data may flow */
	int failed;        /* authentication failed: nothing may flow */
	size_t inflight;   /* length of a write mbedTLS asked us to repeat */
	unsigned char binding[32];
	int have_binding;
	unsigned char peer_pk[32];
	unsigned char peer_spki_hash[32];
	char peer_id[WEFT_DEVICE_ID_LEN + 1];
	int peer_cert_ok;
	int reported;      /* on_refused was called for this connection */
	char why[512];     /* why authentication failed */
} tls_conn;

static const int suites[] = {
	MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	0,
};
static const mbedtls_ecp_group_id curves[] = {MBEDTLS_ECP_DP_SECP256R1, MBEDTLS_ECP_DP_NONE};

static int tls_fail(int code, int mrc, const char *what)
{
	char buf[160] = "";
	if (mrc)
		mbedtls_strerror(mrc, buf, sizeof(buf));
	return err_set(NULL, code, "%s%s%s", what, mrc ? ": " : "", buf);
}

static int entropy(void *p, unsigned char *out, size_t len)
{
	(void)p;
	randombytes_buf(out, len);
	return 0;
}

/* --------------------------------------------------------- identity */

/* The TLS key: d = H(domain, seed) mod (n - 1) + 1, the same on every run
 * and with every mbedTLS version. */
static int derive_key(mbedtls_pk_context *key, const char *domain, const unsigned char seed[32],
                      mbedtls_ctr_drbg_context *drbg)
{
	unsigned char h[32];
	crypto_generichash(h, 32, (const unsigned char *)domain, strlen(domain), seed, 32);
	int rc = mbedtls_pk_setup(key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
	mbedtls_ecp_keypair *kp = mbedtls_pk_ec(*key);
	mbedtls_mpi nm1;
	mbedtls_mpi_init(&nm1);
	if (!rc)
		rc = mbedtls_ecp_group_load(&kp->grp, MBEDTLS_ECP_DP_SECP256R1);
	if (!rc)
		rc = mbedtls_mpi_read_binary(&kp->d, h, 32);
	if (!rc)
		rc = mbedtls_mpi_sub_int(&nm1, &kp->grp.N, 1);
	if (!rc)
		rc = mbedtls_mpi_mod_mpi(&kp->d, &kp->d, &nm1);
	if (!rc)
		rc = mbedtls_mpi_add_int(&kp->d, &kp->d, 1);
	if (!rc)
		rc = mbedtls_ecp_mul(&kp->grp, &kp->Q, &kp->d, &kp->grp.G, mbedtls_ctr_drbg_random, drbg);
	mbedtls_mpi_free(&nm1);
	sodium_memzero(h, sizeof(h));
	return rc ? tls_fail(WEFT_ERROR, rc, "cannot derive the TLS key") : WEFT_OK;
}

static int spki_hash(unsigned char out[32], mbedtls_pk_context *pk)
{
	unsigned char der[200];
	int n = mbedtls_pk_write_pubkey_der(pk, der, sizeof(der));
	if (n < 0)
		return tls_fail(WEFT_ERROR, n, "cannot encode a TLS public key");
	/* mbedtls writes at the end of the buffer. */
	mbedtls_sha256_ret(der + sizeof(der) - n, (size_t)n, out, 0);
	return WEFT_OK;
}

/* A self-signed certificate for key naming the device: CN=<device id>. */
static int make_cert(mbedtls_x509_crt *cert, mbedtls_pk_context *key, const char *device_id,
                     const unsigned char serial_bytes[8], mbedtls_ctr_drbg_context *drbg)
{
	mbedtls_x509write_cert w;
	mbedtls_mpi serial;
	unsigned char der[1024];
	char subject[160];
	snprintf(subject, sizeof(subject), "CN=%s,O=weft", device_id);
	mbedtls_x509write_crt_init(&w);
	mbedtls_mpi_init(&serial);
	int rc = mbedtls_mpi_read_binary(&serial, serial_bytes, 8);
	mbedtls_x509write_crt_set_version(&w, MBEDTLS_X509_CRT_VERSION_3);
	mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
	mbedtls_x509write_crt_set_subject_key(&w, key);
	mbedtls_x509write_crt_set_issuer_key(&w, key);
	if (!rc)
		rc = mbedtls_x509write_crt_set_serial(&w, &serial);
	if (!rc)
		rc = mbedtls_x509write_crt_set_subject_name(&w, subject);
	if (!rc)
		rc = mbedtls_x509write_crt_set_issuer_name(&w, subject);
	if (!rc)
		rc = mbedtls_x509write_crt_set_validity(&w, "20200101000000", "20991231235959");
	if (!rc)
		rc = mbedtls_x509write_crt_set_basic_constraints(&w, 0, -1);
	int n = rc ? rc : mbedtls_x509write_crt_der(&w, der, sizeof(der), mbedtls_ctr_drbg_random, drbg);
	if (n > 0)
		rc = mbedtls_x509_crt_parse_der(cert, der + sizeof(der) - n, (size_t)n);
	else
		rc = n ? n : -1;
	mbedtls_x509write_crt_free(&w);
	mbedtls_mpi_free(&serial);
	return rc ? tls_fail(WEFT_ERROR, rc, "cannot make the TLS certificate") : WEFT_OK;
}

static void endorsement_msg(unsigned char out[sizeof(ENDORSE_DOMAIN) + 32], const unsigned char hash[32])
{
	memcpy(out, ENDORSE_DOMAIN, sizeof(ENDORSE_DOMAIN));
	memcpy(out + sizeof(ENDORSE_DOMAIN), hash, 32);
}

/* What a side signs to bind its device key to this TLS session: the
 * domain, its role (so a signature cannot be reflected back to its
 * maker), and the exported keying material. */
#define BINDING_MSG_BYTES (sizeof(BINDING_DOMAIN) + 1 + 32)
static void binding_msg(unsigned char out[BINDING_MSG_BYTES], int server, const unsigned char binding[32])
{
	memcpy(out, BINDING_DOMAIN, sizeof(BINDING_DOMAIN));
	out[sizeof(BINDING_DOMAIN)] = server ? 'S' : 'C';
	memcpy(out + sizeof(BINDING_DOMAIN) + 1, binding, 32);
}

/* The TLS key and certificate for the device key c->sk. With
 * TLS_FAULT_FOREIGN_KEY the certificate holds another key while the
 * endorsement stays the genuine one (tests only). */
static int load_identity(tls_ctx *c, mbedtls_ctr_drbg_context *drbg)
{
	const unsigned char *seed = c->sk; /* libsodium keeps the seed first */
	int rc = derive_key(&c->key, TLS_KEY_DOMAIN, seed, drbg);
	if (rc == WEFT_OK)
		rc = spki_hash(c->spki_hash, &c->key);
	if (rc == WEFT_OK) {
		unsigned char msg[sizeof(ENDORSE_DOMAIN) + 32];
		endorsement_msg(msg, c->spki_hash);
		crypto_sign_detached(c->endorsement, NULL, msg, sizeof(msg), c->sk);
	}
	if (rc == WEFT_OK && c->fault == TLS_FAULT_FOREIGN_KEY) {
		mbedtls_pk_free(&c->key);
		mbedtls_pk_init(&c->key);
		rc = derive_key(&c->key, TLS_FAKE_DOMAIN, seed, drbg);
	}
	if (rc == WEFT_OK)
		rc = make_cert(&c->cert, &c->key, c->device_id, c->spki_hash, drbg);
	return rc;
}

static int ctx_identity(tls_ctx *c, weft_db *db)
{
	if (!db->id.sk)
		return err_set(&db->err, WEFT_EPERM, "TLS needs the device key: open the store for writing");
	c->sk = sodium_malloc(64);
	if (!c->sk)
		return err_set(&db->err, WEFT_ENOMEM, "out of memory");
	memcpy(c->sk, db->id.sk, 64);
	memcpy(c->pk, db->id.pk, 32);
	weft_device_id_format(c->device_id, c->pk);
	mbedtls_ctr_drbg_context drbg;
	mbedtls_ctr_drbg_init(&drbg);
	int rc = mbedtls_ctr_drbg_seed(&drbg, entropy, NULL, (const unsigned char *)"weft", 4);
	rc = rc ? tls_fail(WEFT_ERROR, rc, "cannot seed the TLS random generator") : load_identity(c, &drbg);
	mbedtls_ctr_drbg_free(&drbg);
	return rc;
}

static void ctx_free(tls_ctx *c)
{
	if (!c)
		return;
	plat_sock_close(c->listen_fd);
	mbedtls_pk_free(&c->key);
	mbedtls_x509_crt_free(&c->cert);
	plat_mutex_free(c->lock);
	sodium_free(c->sk);
	weft__free(c);
}

static tls_ctx *ctx_alloc(void)
{
	tls_ctx *c = weft__calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->listen_fd = -1;
	mbedtls_pk_init(&c->key);
	mbedtls_x509_crt_init(&c->cert);
	return c;
}

int weft_tls_key_hash(unsigned char out[32], weft_db *db)
{
	if (!out || !db)
		return err_set(db ? &db->err : NULL, WEFT_EINVAL, "weft_tls_key_hash: NULL argument");
	tls_ctx *c = ctx_alloc();
	if (!c)
		return err_set(&db->err, WEFT_ENOMEM, "out of memory");
	int rc = ctx_identity(c, db);
	if (rc == WEFT_OK) {
		memcpy(out, c->spki_hash, 32);
	} else {
		weft_err e;
		e.code = rc;
		snprintf(e.msg, sizeof(e.msg), "%s", weft_error_last());
		err_copy(&db->err, &e);
	}
	ctx_free(c);
	return rc;
}

int transport_tls_test_fault(weft_transport *t, enum tls_fault fault)
{
	tls_ctx *c = t->ctx;
	c->fault = fault;
	mbedtls_pk_free(&c->key);
	mbedtls_pk_init(&c->key);
	mbedtls_x509_crt_free(&c->cert);
	mbedtls_x509_crt_init(&c->cert);
	mbedtls_ctr_drbg_context drbg;
	mbedtls_ctr_drbg_init(&drbg);
	int rc = mbedtls_ctr_drbg_seed(&drbg, entropy, NULL, (const unsigned char *)"weft", 4);
	rc = rc ? tls_fail(WEFT_ERROR, rc, "cannot seed the TLS random generator") : load_identity(c, &drbg);
	mbedtls_ctr_drbg_free(&drbg);
	return rc;
}

/* --------------------------------------------------------------- BIO */

static int bio_send(void *p, const unsigned char *buf, size_t len)
{
	tls_conn *c = p;
	ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n >= 0)
		return (int)n;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return MBEDTLS_ERR_SSL_WANT_WRITE;
	return errno == EPIPE || errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET : MBEDTLS_ERR_NET_SEND_FAILED;
}

static int bio_recv(void *p, unsigned char *buf, size_t len)
{
	tls_conn *c = p;
	ssize_t n = recv(c->fd, buf, len, MSG_DONTWAIT);
	if (n >= 0)
		return (int)n; /* 0: the peer closed */
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return MBEDTLS_ERR_SSL_WANT_READ;
	return errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET : MBEDTLS_ERR_NET_RECV_FAILED;
}

/* ----------------------------------------------------- verification */

/* Records why authentication failed (the first reason wins) and tells
 * on_refused once per connection. */
static void refuse(tls_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void refuse(tls_conn *c, const char *fmt, ...)
{
	if (!c->why[0]) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(c->why, sizeof(c->why), fmt, ap);
		va_end(ap);
	}
	if (!c->reported && c->ctx->on_refused) {
		c->reported = 1;
		c->ctx->on_refused(c->why, c->ctx->on_refused_payload);
	}
}

/* Fails authentication: tells the peer with a fatal alert (it learns
 * only that it was refused) and returns code with the reason. */
static int auth_fail(tls_conn *c, int code, unsigned char alert, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int auth_fail(tls_conn *c, int code, unsigned char alert, const char *fmt, ...)
{
	if (!c->why[0]) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(c->why, sizeof(c->why), fmt, ap);
		va_end(ap);
	}
	refuse(c, "%s", c->why);
	c->failed = 1;
	if (alert && c->handshaken)
		mbedtls_ssl_send_alert_message(&c->ssl, MBEDTLS_SSL_ALERT_LEVEL_FATAL, alert);
	return err_set(NULL, code, "%s", c->why);
}

static int verify(void *p, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
	tls_conn *c = p;
	if (depth != 0) {
		refuse(c, "refused the peer at %s: it sent a certificate chain; weft devices use one self-signed "
		          "certificate", c->peer_addr);
		return MBEDTLS_ERR_X509_CERT_VERIFY_FAILED;
	}
	/* Extended master secret is required: it binds the session keys to
	 * the whole handshake, which the channel binding relies on. */
	if (c->ctx->fault != TLS_FAULT_NO_EMS &&
	    (!c->ssl.handshake || c->ssl.handshake->extended_ms != MBEDTLS_SSL_EXTENDED_MS_ENABLED)) {
		refuse(c, "refused the peer at %s: it did not negotiate the TLS extended master secret "
		          "(RFC 7627), which weft requires; it is not a weft device or its TLS library is too old",
		       c->peer_addr);
		return MBEDTLS_ERR_X509_CERT_VERIFY_FAILED;
	}
	/* The certificate names the device: CN=<device id>. */
	const mbedtls_x509_name *n = &crt->subject;
	char cn[128] = "";
	for (; n; n = n->next) {
		if (MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &n->oid) == 0 && n->val.len < sizeof(cn)) {
			memcpy(cn, n->val.p, n->val.len);
			cn[n->val.len] = '\0';
		}
	}
	if (weft_device_id_parse(c->peer_pk, cn) < 0) {
		refuse(c, "refused the peer at %s: its certificate does not name a weft device", c->peer_addr);
		return MBEDTLS_ERR_X509_CERT_VERIFY_FAILED;
	}
	weft_device_id_format(c->peer_id, c->peer_pk);
	if (mbedtls_pk_get_type(&crt->pk) != MBEDTLS_PK_ECKEY ||
	    mbedtls_pk_ec(crt->pk)->grp.id != MBEDTLS_ECP_DP_SECP256R1 ||
	    spki_hash(c->peer_spki_hash, &crt->pk) < 0) {
		refuse(c, "refused the peer at %s: device %s does not use a P-256 TLS key", c->peer_addr, c->peer_id);
		return MBEDTLS_ERR_X509_CERT_VERIFY_FAILED;
	}
	int pinned = 0;
	unsigned char pin[32];
	plat_mutex_lock(c->ctx->lock);
	int t = trust_lookup(c->ctx->db, c->peer_pk, &pinned, pin);
	if (t < 0)
		refuse(c, "refused the peer at %s (device %s): cannot read the trust store: %s", c->peer_addr, c->peer_id,
		       weft_errmsg(c->ctx->db));
	plat_mutex_unlock(c->ctx->lock);
	if (t < 0)
		return MBEDTLS_ERR_X509_CERT_VERIFY_FAILED;
	if (t == 0) {
		refuse(c, "refused the peer at %s: device %s is not in this device's trust store; "
		          "if it should sync with this device, add it with `weft trust add %s`",
		       c->peer_addr, c->peer_id, c->peer_id);
		return MBEDTLS_ERR_X509_CERT_VERIFY_FAILED;
	}
	if (pinned && sodium_memcmp(pin, c->peer_spki_hash, 32) != 0) {
		refuse(c, "refused the peer at %s: device %s presented a different TLS key than the one pinned at "
		          "its first connection (an impersonation attempt, or the device was reinstalled); if "
		          "its `weft id` shows the new key, re-pair it: `weft trust remove %s` then "
		          "`weft trust add %s`", c->peer_addr, c->peer_id, c->peer_id, c->peer_id);
		return MBEDTLS_ERR_X509_CERT_VERIFY_FAILED;
	}
	c->peer_cert_ok = 1;
	*flags = 0; /* self-signed is expected: trust comes from the store */
	return 0;
}

static int export_keys(void *p, const unsigned char *ms, const unsigned char *kb, size_t maclen, size_t keylen,
                       size_t ivlen, const unsigned char client_random[32], const unsigned char server_random[32],
                       mbedtls_tls_prf_types prf)
{
	(void)kb, (void)maclen, (void)keylen, (void)ivlen;
	tls_conn *c = p;
	unsigned char randoms[64];
	memcpy(randoms, client_random, 32);
	memcpy(randoms + 32, server_random, 32);
	/* An RFC 5705 exporter: both ends derive the same 32 bytes, which
	 * nobody without this session's master secret can. */
	if (mbedtls_ssl_tls_prf(prf, ms, 48, BINDING_LABEL, randoms, 64, c->binding, 32) == 0)
		c->have_binding = 1;
	return 0;
}

/* ------------------------------------------------------- connections */

/* Closes without a reset: a socket closed with unread input sends RST,
 * which can destroy the alert or last frame still on the way to the peer.
 * So half-close, then read and drop until the peer closes (briefly). */
static void linger_close(int fd)
{
	if (fd < 0)
		return;
	shutdown(fd, SHUT_WR);
	uint64_t deadline = plat_mono_ms() + LINGER_MS;
	unsigned char sink[4096];
	for (;;) {
		ssize_t n = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
			break;
		if (n > 0)
			continue;
		uint64_t now = plat_mono_ms();
		if (now >= deadline)
			break;
		struct pollfd p = {fd, POLLIN, 0};
		poll(&p, 1, (int)(deadline - now));
	}
	plat_sock_close(fd);
}

static void conn_free(tls_conn *c)
{
	if (!c)
		return;
	if (c->handshaken && !c->failed)
		mbedtls_ssl_close_notify(&c->ssl);
	mbedtls_ssl_free(&c->ssl);
	mbedtls_ssl_config_free(&c->conf);
	mbedtls_ctr_drbg_free(&c->drbg);
	linger_close(c->fd);
	sodium_memzero(c->binding, sizeof(c->binding));
	weft__free(c);
}

static int conn_new(tls_conn **out, tls_ctx *ctx, int fd, int endpoint)
{
	tls_conn *c = weft__calloc(1, sizeof(*c));
	if (!c) {
		plat_sock_close(fd);
		return err_set(NULL, WEFT_ENOMEM, "out of memory");
	}
	c->ctx = ctx;
	c->fd = fd;
	c->server = endpoint == MBEDTLS_SSL_IS_SERVER;
	mbedtls_ssl_config_init(&c->conf);
	mbedtls_ssl_init(&c->ssl);
	mbedtls_ctr_drbg_init(&c->drbg);
	int rc = mbedtls_ctr_drbg_seed(&c->drbg, entropy, NULL, (const unsigned char *)"weft-tls", 8);
	if (!rc)
		rc = mbedtls_ssl_config_defaults(&c->conf, endpoint, MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
	if (!rc) {
		mbedtls_ssl_conf_rng(&c->conf, mbedtls_ctr_drbg_random, &c->drbg);
		mbedtls_ssl_conf_min_version(&c->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
		mbedtls_ssl_conf_max_version(&c->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
		mbedtls_ssl_conf_ciphersuites(&c->conf, suites);
		mbedtls_ssl_conf_curves(&c->conf, curves);
		mbedtls_ssl_conf_extended_master_secret(&c->conf, ctx->fault == TLS_FAULT_NO_EMS
		                                                      ? MBEDTLS_SSL_EXTENDED_MS_DISABLED
		                                                      : MBEDTLS_SSL_EXTENDED_MS_ENABLED);
		mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
		/* mbedTLS wants some CA chain; ours never vouches for anyone
		 * (the peer's self-signed certificate fails chain checks and
		 * the verify callback decides from the trust store). */
		mbedtls_ssl_conf_ca_chain(&c->conf, &ctx->cert, NULL);
		mbedtls_ssl_conf_export_keys_ext_cb(&c->conf, export_keys, c);
		mbedtls_ssl_conf_session_tickets(&c->conf, MBEDTLS_SSL_SESSION_TICKETS_DISABLED);
		mbedtls_ssl_conf_renegotiation(&c->conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
		rc = mbedtls_ssl_conf_own_cert(&c->conf, &ctx->cert, &ctx->key);
	}
	if (!rc)
		rc = mbedtls_ssl_setup(&c->ssl, &c->conf);
	if (rc) {
		conn_free(c);
		return tls_fail(WEFT_ERROR, rc, "cannot set up TLS");
	}
	mbedtls_ssl_set_verify(&c->ssl, verify, c);
	mbedtls_ssl_set_bio(&c->ssl, c, bio_send, bio_recv, NULL);
	*out = c;
	return WEFT_OK;
}

static int wait_fd(tls_conn *c, int want_write, uint64_t timeout_ms)
{
	short ev = want_write == WEFT_WAIT_WRITE_ONLY ? POLLOUT : want_write ? POLLIN | POLLOUT : POLLIN;
	struct pollfd p = {c->fd, ev, 0};
	int n;
	do
		n = poll(&p, 1, timeout_ms > 600000 ? 600000 : (int)timeout_ms);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return err_set(NULL, WEFT_EIO, "waiting on the connection to %s failed: %s", c->peer_addr, strerror(errno));
	return n == 0 ? WEFT_ETIMEOUT : WEFT_OK;
}

static const char *alert_name(unsigned a)
{
	switch (a) {
	case MBEDTLS_SSL_ALERT_MSG_BAD_RECORD_MAC: return "bad_record_mac";
	case MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE: return "handshake_failure";
	case MBEDTLS_SSL_ALERT_MSG_BAD_CERT: return "bad_certificate";
	case MBEDTLS_SSL_ALERT_MSG_UNSUPPORTED_CERT: return "unsupported_certificate";
	case MBEDTLS_SSL_ALERT_MSG_CERT_UNKNOWN: return "certificate_unknown";
	case MBEDTLS_SSL_ALERT_MSG_ACCESS_DENIED: return "access_denied";
	case MBEDTLS_SSL_ALERT_MSG_DECRYPT_ERROR: return "decrypt_error";
	case MBEDTLS_SSL_ALERT_MSG_INSUFFICIENT_SECURITY: return "insufficient_security";
	default: return "alert";
	}
}

/*
 * Turns an mbedTLS failure on this connection into a weft error a person
 * can act on. phase: "during the TLS handshake", "while authenticating",
 * or "during the sync".
 */
static int conn_error(tls_conn *c, int r, const char *phase)
{
	if (r == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE) {
		unsigned a = c->ssl.in_msg ? c->ssl.in_msg[1] : 0;
		if (a == MBEDTLS_SSL_ALERT_MSG_BAD_RECORD_MAC)
			return err_set(NULL, WEFT_EAUTH, "the peer at %s received data from this side that failed TLS "
			               "authentication (altered in transit?) and ended the connection %s",
			               c->peer_addr, phase);
		if (a == MBEDTLS_SSL_ALERT_MSG_ACCESS_DENIED || a == MBEDTLS_SSL_ALERT_MSG_BAD_CERT ||
		    a == MBEDTLS_SSL_ALERT_MSG_CERT_UNKNOWN || a == MBEDTLS_SSL_ALERT_MSG_UNSUPPORTED_CERT ||
		    a == MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE || a == MBEDTLS_SSL_ALERT_MSG_INSUFFICIENT_SECURITY) {
			/* Refusals are reported like our own (on_refused), once. */
			refuse(c, "the peer at %s%s%s refused this device (TLS alert %s %s): it does not trust device %s, "
			          "or it pinned another TLS key for it; if it should, run `weft trust add %s` there "
			          "(after comparing `weft id` on both)", c->peer_addr, c->peer_id[0] ? ", device " : "",
			       c->peer_id, alert_name(a), phase, c->ctx->device_id, c->ctx->device_id);
			c->failed = 1;
			return err_set(NULL, WEFT_EAUTH, "%s", c->why);
		}
		return err_set(NULL, WEFT_EPROTO, "the peer at %s ended the connection %s with TLS alert %u",
		               c->peer_addr, phase, a);
	}
	if (r == 0 || r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || r == MBEDTLS_ERR_SSL_CONN_EOF ||
	    r == MBEDTLS_ERR_NET_CONN_RESET || r == MBEDTLS_ERR_NET_RECV_FAILED || r == MBEDTLS_ERR_NET_SEND_FAILED)
		return err_set(NULL, WEFT_EIO, "the peer at %s closed the connection %s%s", c->peer_addr, phase,
		               c->handshaken ? "" : " (it may be busy, shutting down, or not a weft device)");
	if (r == MBEDTLS_ERR_SSL_INVALID_MAC)
		return err_set(NULL, WEFT_EAUTH, "a TLS record from the peer at %s failed authentication %s: the "
		               "data was altered in transit; the connection was closed and nothing in that record "
		               "was used", c->peer_addr, phase);
	if (r == MBEDTLS_ERR_SSL_INVALID_RECORD || r == MBEDTLS_ERR_SSL_UNEXPECTED_RECORD ||
	    r == MBEDTLS_ERR_SSL_BAD_INPUT_DATA || r == MBEDTLS_ERR_SSL_UNEXPECTED_MESSAGE)
		return tls_fail(WEFT_EPROTO, r, c->handshaken ? "the TLS stream from the peer is malformed (altered in "
		                                               "transit?); the connection was closed"
		                                             : "the peer does not speak weft's TLS");
	char what[160];
	snprintf(what, sizeof(what), "TLS with %s failed %s", c->peer_addr, phase);
	return tls_fail(c->handshaken ? WEFT_EIO : WEFT_EPROTO, r, what);
}

/* Reads or writes exactly n bytes over TLS before a deadline. */
static int exact(tls_conn *c, unsigned char *buf, size_t n, int writing, uint64_t deadline)
{
	size_t done = 0;
	while (done < n) {
		int r = writing ? mbedtls_ssl_write(&c->ssl, buf + done, n - done)
		                : mbedtls_ssl_read(&c->ssl, buf + done, n - done);
		if (r > 0) {
			done += (size_t)r;
			continue;
		}
		if (r != MBEDTLS_ERR_SSL_WANT_READ && r != MBEDTLS_ERR_SSL_WANT_WRITE)
			return conn_error(c, r, "while authenticating");
		uint64_t now = plat_mono_ms();
		if (now >= deadline)
			return err_set(NULL, WEFT_ETIMEOUT, "the peer at %s did not finish authenticating in time",
			               c->peer_addr);
		int w = wait_fd(c, r == MBEDTLS_ERR_SSL_WANT_WRITE, deadline - now);
		if (w < 0 && w != WEFT_ETIMEOUT)
			return w;
	}
	return WEFT_OK;
}

/* Our endorsement: device key, sig(TLS key hash), sig(channel binding). */
static void make_endorsement(tls_conn *c, unsigned char out[ENDORSEMENT_BYTES])
{
	unsigned char bmsg[BINDING_MSG_BYTES];
	binding_msg(bmsg, c->server, c->binding);
	if (c->ctx->fault == TLS_FAULT_BAD_BINDING)
		bmsg[BINDING_MSG_BYTES - 1] ^= 1;
	memcpy(out, c->ctx->pk, 32);
	memcpy(out + 32, c->ctx->endorsement, 64);
	crypto_sign_detached(out + 96, NULL, bmsg, sizeof(bmsg), c->ctx->sk);
}

/* Checks the peer's endorsement; pins its TLS key at first contact. */
static int check_endorsement(tls_conn *c, const unsigned char theirs[ENDORSEMENT_BYTES])
{
	unsigned char emsg[sizeof(ENDORSE_DOMAIN) + 32], bmsg[BINDING_MSG_BYTES];
	endorsement_msg(emsg, c->peer_spki_hash);
	binding_msg(bmsg, !c->server, c->binding);
	if (sodium_memcmp(theirs, c->peer_pk, 32) != 0 ||
	    crypto_sign_verify_detached(theirs + 32, emsg, sizeof(emsg), c->peer_pk) != 0)
		return auth_fail(c, WEFT_EAUTH, MBEDTLS_SSL_ALERT_MSG_ACCESS_DENIED,
		                 "refused the peer at %s: device %s did not endorse the TLS key it used (an "
		                 "endorsement replayed with another key: someone else is posing as that device)",
		                 c->peer_addr, c->peer_id);
	if (crypto_sign_verify_detached(theirs + 96, bmsg, sizeof(bmsg), c->peer_pk) != 0)
		return auth_fail(c, WEFT_EAUTH, MBEDTLS_SSL_ALERT_MSG_ACCESS_DENIED,
		                 "refused the peer at %s: device %s did not sign this TLS session's channel binding "
		                 "(a man in the middle relaying another session?)", c->peer_addr, c->peer_id);
	/* First verified contact pins the TLS key; a device removed from
	 * the trust store meanwhile is refused. */
	int pinned = 0;
	plat_mutex_lock(c->ctx->lock);
	int rc = trust_lookup(c->ctx->db, c->peer_pk, &pinned, NULL);
	if (rc == 1 && !pinned && trust_pin(c->ctx->db, c->peer_pk, c->peer_spki_hash) < 0)
		rc = WEFT_EIO;
	char dberr[WEFT_ERRMSG_LEN];
	snprintf(dberr, sizeof(dberr), "%s", rc < 0 ? weft_errmsg(c->ctx->db) : "");
	plat_mutex_unlock(c->ctx->lock);
	if (rc == 0)
		return auth_fail(c, WEFT_EAUTH, MBEDTLS_SSL_ALERT_MSG_ACCESS_DENIED,
		                 "refused the peer at %s: device %s was removed from the trust store during the handshake",
		                 c->peer_addr, c->peer_id);
	if (rc < 0)
		return auth_fail(c, WEFT_EIO, MBEDTLS_SSL_ALERT_MSG_INTERNAL_ERROR,
		                 "cannot check or record the TLS key of device %s in the trust store: %s", c->peer_id,
		                 dberr);
	return WEFT_OK;
}

static int tls_handshake(void *conn, uint64_t timeout_ms)
{
	tls_conn *c = conn;
	if (c->authenticated)
		return WEFT_OK;
	if (c->failed || c->handshaken)
		return err_set(NULL, WEFT_EAUTH, "%s", c->why[0] ? c->why : "this connection failed to authenticate");
	uint64_t deadline = plat_mono_ms() + (timeout_ms ? timeout_ms : c->ctx->handshake_timeout);
	int r;
	while ((r = mbedtls_ssl_handshake(&c->ssl)) != 0) {
		if (r != MBEDTLS_ERR_SSL_WANT_READ && r != MBEDTLS_ERR_SSL_WANT_WRITE) {
			c->failed = 1;
			if (c->why[0]) /* our verify callback refused */
				return err_set(NULL, WEFT_EAUTH, "%s", c->why);
			return conn_error(c, r, "during the TLS handshake");
		}
		uint64_t now = plat_mono_ms();
		if (now >= deadline) {
			c->failed = 1;
			return err_set(NULL, WEFT_ETIMEOUT, "the TLS handshake with %s did not finish within %llu ms",
			               c->peer_addr, (unsigned long long)(timeout_ms ? timeout_ms : c->ctx->handshake_timeout));
		}
		int w = wait_fd(c, r == MBEDTLS_ERR_SSL_WANT_WRITE, deadline - now);
		if (w < 0 && w != WEFT_ETIMEOUT) {
			c->failed = 1;
			return w;
		}
	}
	c->handshaken = 1;
	if (!c->peer_cert_ok || !c->have_binding)
		return auth_fail(c, WEFT_EAUTH, MBEDTLS_SSL_ALERT_MSG_ACCESS_DENIED,
		                 "TLS handshake with %s ended without a verified peer", c->peer_addr);

	/* The client endorses first; the server answers only once the
	 * client's endorsement checked out, so a refused client learns
	 * nothing more. */
	unsigned char mine[ENDORSEMENT_BYTES], theirs[ENDORSEMENT_BYTES];
	make_endorsement(c, mine);
	int rc;
	if (c->server) {
		rc = exact(c, theirs, sizeof(theirs), 0, deadline);
		if (rc == WEFT_OK)
			rc = check_endorsement(c, theirs);
		if (rc == WEFT_OK)
			rc = exact(c, mine, sizeof(mine), 1, deadline);
	} else {
		rc = exact(c, mine, sizeof(mine), 1, deadline);
		if (rc == WEFT_OK)
			rc = exact(c, theirs, sizeof(theirs), 0, deadline);
		if (rc == WEFT_OK)
			rc = check_endorsement(c, theirs);
	}
	sodium_memzero(mine, sizeof(mine));
	if (rc < 0) {
		c->failed = 1;
		return rc;
	}
	c->authenticated = 1;
	return WEFT_OK;
}

static int tls_connect(void **out, void *ctxp, const char *address, uint64_t timeout_ms)
{
	tls_ctx *ctx = ctxp;
	char host[256], port[16], perr[PLAT_ERR_LEN];
	*out = NULL;
	if (!address || plat_split_addr(address, host, port) < 0)
		return err_set(NULL, WEFT_EINVAL, "\"%.200s\" is not HOST:PORT (IPv6: [ADDR]:PORT)", address ? address : "");
	int fd;
	int rc = plat_tcp_connect(&fd, host, port, timeout_ms ? timeout_ms : ctx->connect_timeout, perr);
	if (rc < 0)
		return err_set(NULL, rc, "%s%s", perr,
		               rc == WEFT_ENOTFOUND ? "" : "; is `weft serve` running there, and reachable?");
	tls_conn *c;
	if ((rc = conn_new(&c, ctx, fd, MBEDTLS_SSL_IS_CLIENT)) < 0)
		return rc;
	snprintf(c->peer_addr, sizeof(c->peer_addr), "%.79s", address);
	if ((rc = tls_handshake(c, ctx->handshake_timeout)) < 0) {
		conn_free(c);
		return rc;
	}
	*out = c;
	return WEFT_OK;
}

static int tls_accept(void **out, void *ctxp, uint64_t timeout_ms)
{
	tls_ctx *ctx = ctxp;
	char peer[80], perr[PLAT_ERR_LEN];
	*out = NULL;
	if (ctx->listen_fd < 0)
		return err_set(NULL, WEFT_EINVAL, "this TLS transport does not listen (set weft_tls_options.listen)");
	int fd;
	int rc = plat_tcp_accept(&fd, ctx->listen_fd, timeout_ms, peer, perr);
	if (rc < 0)
		return rc == WEFT_ETIMEOUT ? err_set(NULL, rc, "no connection came in within %llu ms",
		                                     (unsigned long long)timeout_ms)
		                           : err_set(NULL, rc, "%s", perr);
	tls_conn *c;
	if ((rc = conn_new(&c, ctx, fd, MBEDTLS_SSL_IS_SERVER)) < 0)
		return rc;
	snprintf(c->peer_addr, sizeof(c->peer_addr), "%s", peer);
	*out = c;
	return WEFT_OK;
}

static int not_authenticated(tls_conn *c)
{
	return err_set(NULL, WEFT_EAUTH, "the connection to %s is not authenticated%s%s", c->peer_addr,
	               c->why[0] ? ": " : " (call the transport's handshake first)", c->why);
}

static int tls_send(void *conn, const void *buf, size_t len, size_t *sent)
{
	tls_conn *c = conn;
	*sent = 0;
	if (!c->authenticated || c->failed)
		return not_authenticated(c);
	while (*sent < len) {
		/* A write mbedTLS could not finish must be repeated exactly. */
		size_t n = c->inflight ? c->inflight : len - *sent;
		if (n > len - *sent)
			n = len - *sent;
		int r = mbedtls_ssl_write(&c->ssl, (const unsigned char *)buf + *sent, n);
		if (r == MBEDTLS_ERR_SSL_WANT_WRITE || r == MBEDTLS_ERR_SSL_WANT_READ) {
			c->inflight = n;
			return WEFT_OK;
		}
		c->inflight = 0;
		if (r < 0)
			return conn_error(c, r, "during the sync");
		*sent += (size_t)r;
	}
	return WEFT_OK;
}

static int tls_recv(void *conn, void *buf, size_t cap, size_t *got)
{
	tls_conn *c = conn;
	*got = 0;
	if (!c->authenticated || c->failed)
		return not_authenticated(c);
	int r = mbedtls_ssl_read(&c->ssl, buf, cap);
	if (r > 0) {
		*got = (size_t)r;
		return WEFT_OK;
	}
	if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE)
		return WEFT_OK;
	/* A record that fails authentication (tampering on the wire) ends
	 * here: mbedTLS drops it whole, nothing of it reaches the session. */
	return conn_error(c, r, "during the sync");
}

static int tls_wait(void *conn, int want_write, uint64_t timeout_ms)
{
	tls_conn *c = conn;
	/* Decrypted bytes may already wait inside mbedTLS. */
	if (want_write != WEFT_WAIT_WRITE_ONLY && mbedtls_ssl_get_bytes_avail(&c->ssl) > 0)
		return WEFT_OK;
	int rc = wait_fd(c, want_write ? want_write : c->inflight != 0, timeout_ms);
	return rc == WEFT_ETIMEOUT ? err_set(NULL, rc, "the peer at %s sent nothing for %llu ms", c->peer_addr,
	                                     (unsigned long long)timeout_ms)
	                           : rc;
}

static void tls_close(void *conn)
{
	conn_free(conn);
}

static const unsigned char *tls_peer(void *conn)
{
	tls_conn *c = conn;
	return c && c->authenticated && !c->failed ? c->peer_pk : NULL;
}

int weft_tls_transport_new(weft_transport **out, weft_db *db, const weft_tls_options *opts)
{
	static const weft_tls_options defaults = WEFT_TLS_OPTIONS_INIT;
	if (!db)
		return err_set(NULL, WEFT_EINVAL, "weft_tls_transport_new: db must not be NULL");
	if (!out)
		return err_set(&db->err, WEFT_EINVAL, "weft_tls_transport_new: out must not be NULL");
	*out = NULL;
	if (!opts)
		opts = &defaults;
	if (opts->version != WEFT_TLS_OPTIONS_VERSION)
		return err_set(&db->err, WEFT_EVERSION, "weft_tls_options version %u is not supported; use WEFT_TLS_OPTIONS_INIT",
		               opts->version);
	tls_ctx *c = ctx_alloc();
	if (!c)
		return err_set(&db->err, WEFT_ENOMEM, "out of memory");
	c->db = db;
	c->connect_timeout = opts->connect_timeout_ms ? opts->connect_timeout_ms : TIMEOUT_DEFAULT_MS;
	c->handshake_timeout = opts->handshake_timeout_ms ? opts->handshake_timeout_ms : TIMEOUT_DEFAULT_MS;
	c->on_refused = opts->on_refused;
	c->on_refused_payload = opts->on_refused_payload;
	int rc = plat_mutex_new(&c->lock) < 0 ? err_set(&db->err, WEFT_ENOMEM, "out of memory") : ctx_identity(c, db);
	if (rc == WEFT_OK && opts->listen) {
		char host[256], port[16], perr[PLAT_ERR_LEN];
		if (plat_split_addr(opts->listen, host, port) < 0)
			rc = err_set(&db->err, WEFT_EINVAL, "\"%.200s\" is not HOST:PORT (IPv6: [ADDR]:PORT)", opts->listen);
		else if ((rc = plat_tcp_listen(&c->listen_fd, host, port, c->bound, perr)) < 0)
			rc = err_set(&db->err, rc, "%s", perr);
	}
	if (rc < 0) {
		weft_err e;
		e.code = rc;
		snprintf(e.msg, sizeof(e.msg), "%s", weft_error_last());
		ctx_free(c);
		err_copy(&db->err, &e);
		return rc;
	}
	c->ops.version = WEFT_TRANSPORT_VERSION;
	c->ops.ctx = c;
	c->ops.connect = tls_connect;
	c->ops.accept = tls_accept;
	c->ops.handshake = tls_handshake;
	c->ops.send = tls_send;
	c->ops.recv = tls_recv;
	c->ops.wait = tls_wait;
	c->ops.close = tls_close;
	c->ops.peer = tls_peer;
	*out = &c->ops;
	return WEFT_OK;
}

void weft_tls_transport_free(weft_transport *t)
{
	if (t)
		ctx_free(t->ctx);
}

const char *weft_tls_listen_address(const weft_transport *t)
{
	const tls_ctx *c = t ? t->ctx : NULL;
	return c && c->listen_fd >= 0 ? c->bound : NULL;
}
