/*
 * The event and its one canonical encoding (docs/FORMAT.md).
 *
 *   header  = version u8 | author[32] | seq u64 | prev[32] | hlc u64 |
 *             scope_len u8 scope | kind_len u8 kind | idem_len u8 idem |
 *             payload_len u32 | payload_hash[32]          (integers big-endian)
 *   event   = header | sig[64] | payload_flag u8 | payload (if flag = 1)
 *   id      = BLAKE2b-256(header)
 *   sig     = Ed25519(author, "weft-event-v1\0" | id)
 */
#ifndef WEFT_CORE_CODEC_H
#define WEFT_CORE_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "weft.h"

#define EVENT_FORMAT_VERSION 1
#define EVENT_FIXED_HEADER 120 /* header bytes besides the three strings */
#define EVENT_HEADER_MAX (EVENT_FIXED_HEADER + WEFT_SCOPE_MAX + WEFT_KIND_MAX + WEFT_IDEM_KEY_MAX)
#define EVENT_OVERHEAD_MAX (EVENT_HEADER_MAX + WEFT_SIGNATURE_BYTES + 1)
/* Highest valid HLC: the top bit stays clear so SQLite's signed integers
 * order it correctly; 2^64-1 is also Negentropy's "infinity". */
#define EVENT_HLC_MAX ((UINT64_C(1) << 63) - 1)
/* Sequence numbers stay below 2^63 for the same reason. */
#define EVENT_SEQ_MAX ((UINT64_C(1) << 63) - 1)
#define EVENT_SIG_DOMAIN "weft-event-v1"

struct weft_event {
	weft_id id;
	uint8_t version;
	unsigned char author[WEFT_PUBLIC_KEY_BYTES];
	uint64_t seq;
	weft_id prev; /* all zero when seq == 1 */
	uint64_t hlc;
	char scope[WEFT_SCOPE_MAX + 1];
	char kind[WEFT_KIND_MAX + 1];
	char idem[WEFT_IDEM_KEY_MAX + 1]; /* "" when absent */
	uint32_t payload_len;
	unsigned char payload_hash[32];
	unsigned char sig[WEFT_SIGNATURE_BYTES];
	/* An own event not signed yet: sig[0..31] holds its seal (core/signer.h);
	 * such an event is stored, never sent. */
	uint8_t sealed;
	const unsigned char *payload; /* into enc; NULL if erased */
	unsigned char *enc;           /* canonical encoding, owned */
	size_t enc_len;
	size_t header_len;
};

/* What a new event says, before it is signed. */
typedef struct event_fields {
	uint64_t seq;
	const weft_id *prev; /* NULL for seq 1 */
	uint64_t hlc;
	const char *scope;
	const char *kind;
	const char *idem; /* NULL or "" for none */
	const void *payload;
	size_t payload_len;
} event_fields;

/* 1 if s is a valid scope or kind name (1..64 bytes of [A-Za-z0-9._:/-]). */
int codec_name_ok(const char *s, size_t max);
/* 1 if s is a valid idempotency key (1..128 bytes of printable ASCII). */
int codec_idem_ok(const char *s);

/* Builds, hashes and signs a new event with the 64-byte libsodium secret
 * key sk. Checks the fields (WEFT_EINVAL, WEFT_ELIMIT over max_payload). */
int codec_event_build(struct weft_event **out, const event_fields *f,
                      const unsigned char sk[64], uint32_t max_payload,
                      weft_err *err);

/* The same, unsigned (signature all zero): for an own event stored with a
 * seal and signed after its commit (core/signer.c). */
int codec_event_build_unsigned(struct weft_event **out, const event_fields *f, const unsigned char author[32],
                               uint32_t max_payload, weft_err *err);
/* The signature of the event with this id. */
void codec_sign_id(unsigned char sig[64], const weft_id *id, const unsigned char sk[64]);
/* Puts sig into ev: its field and its encoding. */
void codec_event_set_sig(struct weft_event *ev, const unsigned char sig[64]);

/* Decodes a canonical encoding: structure, limits, payload hash, id. The
 * signature is NOT checked (codec_event_verify_sig does, so that callers
 * may verify in parallel). */
int codec_event_decode(struct weft_event **out, const void *bytes, size_t len,
                       uint32_t max_payload, weft_err *err);
/* Checks the Ed25519 signature. WEFT_EAUTH if it does not verify. */
int codec_event_verify_sig(const struct weft_event *ev, weft_err *err);

/* Builds an event from stored fields (id, sig, payload as stored) and
 * re-derives its encoding, checking that the header hashes to fields->id
 * (WEFT_ECORRUPT if not). payload NULL = erased. */
int codec_event_assemble(struct weft_event **out, const struct weft_event *fields,
                         const void *payload, weft_err *err);
/* The same without the check: the id is computed from the header (the
 * store keeps only the id's first 8 bytes and checks those). */
int codec_event_layout(struct weft_event **out, const struct weft_event *fields,
                       const void *payload, weft_err *err);
/* Sets ev->id to the hash of ev's header fields (payload_hash included). */
void codec_event_hash_id(struct weft_event *ev);

void codec_event_free(struct weft_event *ev);

/* Big-endian helpers shared by encoders. */
void codec_put_u64(unsigned char *p, uint64_t v);
uint64_t codec_get_u64(const unsigned char *p);
void codec_put_u32(unsigned char *p, uint32_t v);
uint32_t codec_get_u32(const unsigned char *p);

/* Lowercase hex; out must hold 2*n+1 bytes. */
void codec_hex(char *out, const unsigned char *in, size_t n);
/* Parses exactly 2*n hex digits; -1 on anything else. */
int codec_unhex(unsigned char *out, size_t n, const char *hex);

#endif
