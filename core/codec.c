#include "core/codec.h"

#include <string.h>

#include <sodium.h>

#include "core/alloc.h"

void codec_put_u64(unsigned char *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (unsigned char)(v & 0xff);
		v >>= 8;
	}
}

uint64_t codec_get_u64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

void codec_put_u32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

uint32_t codec_get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void codec_hex(char *out, const unsigned char *in, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int codec_unhex(unsigned char *out, size_t n, const char *hex)
{
	for (size_t i = 0; i < n; i++) {
		int hi = hexval(hex[2 * i]);
		int lo = hi < 0 ? -1 : hexval(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return hex[2 * n] == '\0' ? 0 : -1;
}

static int name_char_ok(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
	       c == '/' || c == '-';
}

static int bytes_name_ok(const unsigned char *s, size_t n, size_t max)
{
	if (n == 0 || n > max)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!name_char_ok(s[i]))
			return 0;
	return 1;
}

static int bytes_idem_ok(const unsigned char *s, size_t n)
{
	if (n > WEFT_IDEM_KEY_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x21 || s[i] > 0x7e)
			return 0;
	return 1;
}

int codec_name_ok(const char *s, size_t max)
{
	return s && bytes_name_ok((const unsigned char *)s, strnlen(s, max + 1), max);
}

int codec_idem_ok(const char *s)
{
	size_t n = strnlen(s, WEFT_IDEM_KEY_MAX + 1);
	return n > 0 && bytes_idem_ok((const unsigned char *)s, n);
}

/* Writes the header of ev into buf (EVENT_HEADER_MAX bytes); returns its length. */
static size_t header_encode(unsigned char *buf, const struct weft_event *ev)
{
	unsigned char *p = buf;
	size_t n;
	*p++ = ev->version;
	memcpy(p, ev->author, 32), p += 32;
	codec_put_u64(p, ev->seq), p += 8;
	memcpy(p, ev->prev.bytes, 32), p += 32;
	codec_put_u64(p, ev->hlc), p += 8;
	n = strlen(ev->scope);
	*p++ = (unsigned char)n;
	memcpy(p, ev->scope, n), p += n;
	n = strlen(ev->kind);
	*p++ = (unsigned char)n;
	memcpy(p, ev->kind, n), p += n;
	n = strlen(ev->idem);
	*p++ = (unsigned char)n;
	memcpy(p, ev->idem, n), p += n;
	codec_put_u32(p, ev->payload_len), p += 4;
	memcpy(p, ev->payload_hash, 32), p += 32;
	return (size_t)(p - buf);
}

static void sig_message(unsigned char msg[sizeof(EVENT_SIG_DOMAIN) + 32], const weft_id *id)
{
	memcpy(msg, EVENT_SIG_DOMAIN, sizeof(EVENT_SIG_DOMAIN)); /* with the NUL */
	memcpy(msg + sizeof(EVENT_SIG_DOMAIN), id->bytes, 32);
}

/* Lays out the encoding of ev (header, sig, payload) in a new buffer. */
static int encode_into(struct weft_event *ev, const void *payload, weft_err *err)
{
	unsigned char header[EVENT_HEADER_MAX];
	size_t hlen = header_encode(header, ev);
	size_t total = hlen + 64 + 1 + (payload ? ev->payload_len : 0);
	unsigned char *enc = weft__malloc(total);
	if (!enc)
		return err_set(err, WEFT_ENOMEM, "out of memory encoding an event");
	memcpy(enc, header, hlen);
	memcpy(enc + hlen, ev->sig, 64);
	enc[hlen + 64] = payload ? 1 : 0;
	if (payload && ev->payload_len)
		memcpy(enc + hlen + 65, payload, ev->payload_len);
	ev->enc = enc;
	ev->enc_len = total;
	ev->header_len = hlen;
	ev->payload = payload ? enc + hlen + 65 : NULL;
	crypto_generichash(ev->id.bytes, 32, header, hlen, NULL, 0);
	return WEFT_OK;
}

static uint32_t effective_limit(uint32_t max_payload)
{
	if (max_payload == 0)
		return WEFT_PAYLOAD_DEFAULT_MAX;
	return max_payload > WEFT_PAYLOAD_HARD_MAX ? WEFT_PAYLOAD_HARD_MAX : max_payload;
}

void codec_sign_id(unsigned char sig[64], const weft_id *id, const unsigned char sk[64])
{
	unsigned char msg[sizeof(EVENT_SIG_DOMAIN) + 32];
	sig_message(msg, id);
	crypto_sign_detached(sig, NULL, msg, sizeof(msg), sk);
}

void codec_event_set_sig(struct weft_event *ev, const unsigned char sig[64])
{
	memcpy(ev->sig, sig, 64);
	memcpy(ev->enc + ev->header_len, sig, 64);
}

/* codec_event_build and codec_event_build_unsigned: signs with sk unless
 * it is NULL. */
static int build(struct weft_event **out, const event_fields *f, const unsigned char author[32],
                 const unsigned char *sk, uint32_t max_payload, weft_err *err)
{
	*out = NULL;
	uint32_t limit = effective_limit(max_payload);
	if (!codec_name_ok(f->scope, WEFT_SCOPE_MAX))
		return err_set(err, WEFT_EINVAL, "invalid scope \"%.80s\": use 1 to %d characters from A-Z a-z 0-9 . _ : / -",
		               f->scope ? f->scope : "(null)", WEFT_SCOPE_MAX);
	if (!codec_name_ok(f->kind, WEFT_KIND_MAX))
		return err_set(err, WEFT_EINVAL, "invalid kind \"%.80s\": use 1 to %d characters from A-Z a-z 0-9 . _ : / -",
		               f->kind ? f->kind : "(null)", WEFT_KIND_MAX);
	if (f->idem && f->idem[0] && !codec_idem_ok(f->idem))
		return err_set(err, WEFT_EINVAL, "invalid idempotency key: use 1 to %d printable ASCII characters without spaces",
		               WEFT_IDEM_KEY_MAX);
	if (f->payload_len > limit)
		return err_set(err, WEFT_ELIMIT, "payload of %zu bytes exceeds the limit of %u bytes (max_payload)",
		               f->payload_len, limit);
	if (f->payload_len && !f->payload)
		return err_set(err, WEFT_EINVAL, "payload is NULL but payload_len is %zu", f->payload_len);
	if (f->seq == 0 || f->seq > EVENT_SEQ_MAX || (f->seq == 1) != (f->prev == NULL) || f->hlc > EVENT_HLC_MAX)
		return err_set(err, WEFT_EINVAL, "internal: inconsistent sequence, prev or clock for a new event");

	struct weft_event *ev = weft__calloc(1, sizeof(*ev));
	if (!ev)
		return err_set(err, WEFT_ENOMEM, "out of memory building an event");
	ev->version = EVENT_FORMAT_VERSION;
	memcpy(ev->author, author, 32);
	ev->seq = f->seq;
	if (f->prev)
		ev->prev = *f->prev;
	ev->hlc = f->hlc;
	strcpy(ev->scope, f->scope);
	strcpy(ev->kind, f->kind);
	if (f->idem)
		strcpy(ev->idem, f->idem);
	ev->payload_len = (uint32_t)f->payload_len;
	crypto_generichash(ev->payload_hash, 32, f->payload, f->payload_len, NULL, 0);

	/* The id is the hash of the header, which does not include the
	 * signature: compute it first, then sign, then lay out the bytes. */
	unsigned char header[EVENT_HEADER_MAX];
	size_t hlen = header_encode(header, ev);
	crypto_generichash(ev->id.bytes, 32, header, hlen, NULL, 0);
	if (sk)
		codec_sign_id(ev->sig, &ev->id, sk);
	int rc = encode_into(ev, f->payload ? f->payload : "", err);
	if (rc < 0) {
		codec_event_free(ev);
		return rc;
	}
	*out = ev;
	return WEFT_OK;
}

int codec_event_build(struct weft_event **out, const event_fields *f, const unsigned char sk[64],
                      uint32_t max_payload, weft_err *err)
{
	unsigned char author[32];
	crypto_sign_ed25519_sk_to_pk(author, sk);
	return build(out, f, author, sk, max_payload, err);
}

int codec_event_build_unsigned(struct weft_event **out, const event_fields *f, const unsigned char author[32],
                               uint32_t max_payload, weft_err *err)
{
	return build(out, f, author, NULL, max_payload, err);
}

void codec_event_hash_id(struct weft_event *ev)
{
	unsigned char header[EVENT_HEADER_MAX];
	size_t hlen = header_encode(header, ev);
	crypto_generichash(ev->id.bytes, 32, header, hlen, NULL, 0);
}

int codec_event_layout(struct weft_event **out, const struct weft_event *fields,
                       const void *payload, weft_err *err)
{
	*out = NULL;
	struct weft_event *ev = weft__malloc(sizeof(*ev));
	if (!ev)
		return err_set(err, WEFT_ENOMEM, "out of memory reading an event");
	*ev = *fields;
	ev->enc = NULL;
	int rc = encode_into(ev, payload, err);
	if (rc < 0) {
		weft__free(ev);
		return rc;
	}
	*out = ev;
	return WEFT_OK;
}

int codec_event_assemble(struct weft_event **out, const struct weft_event *fields,
                         const void *payload, weft_err *err)
{
	weft_id stored_id = fields->id;
	struct weft_event *ev;
	int rc = codec_event_layout(&ev, fields, payload, err);
	*out = NULL;
	if (rc < 0)
		return rc;
	if (sodium_memcmp(stored_id.bytes, ev->id.bytes, 32) != 0) {
		char a[16], b[16];
		err_set(err, WEFT_ECORRUPT, "stored event %s does not hash to its id (fields hash to %s): the store was altered",
		        err_short_hex(a, stored_id.bytes), err_short_hex(b, ev->id.bytes));
		ev->id = stored_id; /* keep the stored id so callers can name it */
		*out = ev;
		return WEFT_ECORRUPT;
	}
	*out = ev;
	return WEFT_OK;
}

/* A bounds-checked reader: every take is checked against what is left. */
typedef struct reader {
	const unsigned char *p;
	size_t left;
	size_t off;
} reader;

static const unsigned char *take(reader *r, size_t n)
{
	if (r->left < n)
		return NULL;
	const unsigned char *p = r->p;
	r->p += n;
	r->left -= n;
	r->off += n;
	return p;
}

static int truncated(weft_err *err, const char *field, size_t off, size_t len)
{
	return err_set(err, WEFT_ECORRUPT, "event truncated: %s at byte %zu is missing (input is %zu bytes)",
	               field, off, len);
}

static int take_string(reader *r, char *dst, const char *field, size_t min, size_t max,
                       int is_idem, size_t len, weft_err *err)
{
	const unsigned char *n = take(r, 1);
	if (!n)
		return truncated(err, field, r->off, len);
	if (*n < min || *n > max)
		return err_set(err, WEFT_ECORRUPT, "event %s length %u at byte %zu is outside %zu..%zu",
		               field, *n, r->off - 1, min, max);
	const unsigned char *s = take(r, *n);
	if (!s)
		return truncated(err, field, r->off, len);
	if (is_idem ? !bytes_idem_ok(s, *n) : !bytes_name_ok(s, *n, max))
		return err_set(err, WEFT_ECORRUPT, "event %s at byte %zu has characters outside the allowed set",
		               field, r->off - *n);
	memcpy(dst, s, *n);
	dst[*n] = '\0';
	return WEFT_OK;
}

int codec_event_decode(struct weft_event **out, const void *bytes, size_t len,
                       uint32_t max_payload, weft_err *err)
{
	*out = NULL;
	uint32_t limit = effective_limit(max_payload);
	/* Check the whole size before allocating anything. */
	if (len > (size_t)EVENT_OVERHEAD_MAX + limit)
		return err_set(err, WEFT_ELIMIT, "event of %zu bytes exceeds the limit of %zu bytes",
		               len, (size_t)EVENT_OVERHEAD_MAX + limit);
	reader r = {bytes, len, 0};
	struct weft_event ev;
	memset(&ev, 0, sizeof(ev));
	const unsigned char *p;
	int rc;

	if (!(p = take(&r, 1)))
		return truncated(err, "format version", 0, len);
	if (*p != EVENT_FORMAT_VERSION)
		return err_set(err, WEFT_EVERSION, "event format version %u is not supported (this weft reads version %d); upgrade weft",
		               *p, EVENT_FORMAT_VERSION);
	ev.version = *p;
	if (!(p = take(&r, 32)))
		return truncated(err, "author key", r.off, len);
	memcpy(ev.author, p, 32);
	if (!(p = take(&r, 8)))
		return truncated(err, "sequence number", r.off, len);
	ev.seq = codec_get_u64(p);
	if (ev.seq == 0)
		return err_set(err, WEFT_ECORRUPT, "event sequence number is 0; sequences start at 1");
	if (ev.seq > EVENT_SEQ_MAX)
		return err_set(err, WEFT_ECORRUPT, "event sequence number %llu is out of range (top bit set)",
		               (unsigned long long)ev.seq);
	if (!(p = take(&r, 32)))
		return truncated(err, "prev id", r.off, len);
	memcpy(ev.prev.bytes, p, 32);
	static const unsigned char zero[32];
	int prev_zero = memcmp(ev.prev.bytes, zero, 32) == 0;
	if (ev.seq == 1 && !prev_zero)
		return err_set(err, WEFT_ECORRUPT, "event has sequence 1 but a non-zero prev id");
	if (ev.seq > 1 && prev_zero)
		return err_set(err, WEFT_ECORRUPT, "event has sequence %llu but a zero prev id",
		               (unsigned long long)ev.seq);
	if (!(p = take(&r, 8)))
		return truncated(err, "timestamp", r.off, len);
	ev.hlc = codec_get_u64(p);
	if (ev.hlc > EVENT_HLC_MAX)
		return err_set(err, WEFT_ECORRUPT, "event timestamp %llu is out of range (top bit set)",
		               (unsigned long long)ev.hlc);
	if ((rc = take_string(&r, ev.scope, "scope", 1, WEFT_SCOPE_MAX, 0, len, err)) < 0)
		return rc;
	if ((rc = take_string(&r, ev.kind, "kind", 1, WEFT_KIND_MAX, 0, len, err)) < 0)
		return rc;
	if ((rc = take_string(&r, ev.idem, "idempotency key", 0, WEFT_IDEM_KEY_MAX, 1, len, err)) < 0)
		return rc;
	if (!(p = take(&r, 4)))
		return truncated(err, "payload length", r.off, len);
	ev.payload_len = codec_get_u32(p);
	if (ev.payload_len > limit)
		return err_set(err, WEFT_ELIMIT, "event payload of %u bytes exceeds the limit of %u bytes",
		               ev.payload_len, limit);
	if (!(p = take(&r, 32)))
		return truncated(err, "payload hash", r.off, len);
	memcpy(ev.payload_hash, p, 32);
	size_t hlen = r.off;
	if (!(p = take(&r, 64)))
		return truncated(err, "signature", r.off, len);
	memcpy(ev.sig, p, 64);
	if (!(p = take(&r, 1)))
		return truncated(err, "payload flag", r.off, len);
	unsigned flag = *p;
	if (flag > 1)
		return err_set(err, WEFT_ECORRUPT, "event payload flag is %u; only 0 (erased) and 1 (present) exist", flag);
	if (flag == 0 && ev.payload_len == 0)
		return err_set(err, WEFT_ECORRUPT, "event marks an empty payload as erased; an empty payload is always present");
	const unsigned char *payload = NULL;
	if (flag == 1) {
		if (!(payload = take(&r, ev.payload_len)))
			return truncated(err, "payload", r.off, len);
		unsigned char h[32];
		crypto_generichash(h, 32, payload, ev.payload_len, NULL, 0);
		if (sodium_memcmp(h, ev.payload_hash, 32) != 0)
			return err_set(err, WEFT_EAUTH, "event payload does not match its hash: it was altered");
	}
	if (r.left != 0)
		return err_set(err, WEFT_ECORRUPT, "event has %zu unexpected bytes after its end at byte %zu",
		               r.left, r.off);

	struct weft_event *e = weft__malloc(sizeof(*e));
	unsigned char *enc = weft__malloc(len);
	if (!e || !enc) {
		weft__free(e);
		weft__free(enc);
		return err_set(err, WEFT_ENOMEM, "out of memory decoding an event");
	}
	memcpy(enc, bytes, len);
	*e = ev;
	e->enc = enc;
	e->enc_len = len;
	e->header_len = hlen;
	e->payload = payload ? enc + (payload - (const unsigned char *)bytes) : NULL;
	crypto_generichash(e->id.bytes, 32, enc, hlen, NULL, 0);
	*out = e;
	return WEFT_OK;
}

int codec_event_verify_sig(const struct weft_event *ev, weft_err *err)
{
	unsigned char msg[sizeof(EVENT_SIG_DOMAIN) + 32];
	sig_message(msg, &ev->id);
	if (crypto_sign_verify_detached(ev->sig, msg, sizeof(msg), ev->author) != 0) {
		char a[16], b[16];
		return err_set(err, WEFT_EAUTH, "event %s does not carry a valid signature of its author %s: refused",
		               err_short_hex(a, ev->id.bytes), err_short_hex(b, ev->author));
	}
	return WEFT_OK;
}

void codec_event_free(struct weft_event *ev)
{
	if (!ev)
		return;
	weft__free(ev->enc);
	weft__free(ev);
}

/* ------------------------------------------------------- public getters */

void weft_event_free(weft_event *ev)
{
	codec_event_free(ev);
}

const weft_id *weft_event_id(const weft_event *ev)
{
	return &ev->id;
}

const unsigned char *weft_event_author(const weft_event *ev)
{
	return ev->author;
}

uint64_t weft_event_seq(const weft_event *ev)
{
	return ev->seq;
}

const weft_id *weft_event_prev(const weft_event *ev)
{
	return ev->seq > 1 ? &ev->prev : NULL;
}

uint64_t weft_event_hlc(const weft_event *ev)
{
	return ev->hlc;
}

const char *weft_event_scope(const weft_event *ev)
{
	return ev->scope;
}

const char *weft_event_kind(const weft_event *ev)
{
	return ev->kind;
}

const char *weft_event_idem_key(const weft_event *ev)
{
	return ev->idem[0] ? ev->idem : NULL;
}

const void *weft_event_payload(const weft_event *ev, size_t *len)
{
	if (len)
		*len = ev->payload_len;
	return ev->payload;
}

const void *weft_event_bytes(const weft_event *ev, size_t *len)
{
	if (len)
		*len = ev->sealed ? 0 : ev->enc_len;
	return ev->sealed ? NULL : ev->enc;
}

int weft_event_decode(weft_event **out, const void *bytes, size_t len,
                      uint32_t max_payload)
{
	if (!out || (!bytes && len))
		return err_set(NULL, WEFT_EINVAL, "weft_event_decode: out and bytes must not be NULL");
	*out = NULL;
	struct weft_event *ev;
	int rc = codec_event_decode(&ev, bytes, len, max_payload, NULL);
	if (rc < 0)
		return rc;
	if ((rc = codec_event_verify_sig(ev, NULL)) < 0) {
		codec_event_free(ev);
		return rc;
	}
	*out = ev;
	return WEFT_OK;
}

char *weft_id_to_hex(char out[2 * WEFT_ID_BYTES + 1], const weft_id *id)
{
	codec_hex(out, id->bytes, WEFT_ID_BYTES);
	return out;
}

int weft_id_from_hex(weft_id *out, const char *text)
{
	if (!out || !text || strlen(text) != 64 || codec_unhex(out->bytes, 32, text) != 0)
		return err_set(NULL, WEFT_EINVAL, "\"%.80s\" is not an event id: expected 64 hex digits",
		               text ? text : "(null)");
	return WEFT_OK;
}
