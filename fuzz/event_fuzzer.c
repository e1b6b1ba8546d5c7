/*
 * The event decoder (core/codec.c) on arbitrary bytes.
 *
 * Properties:
 *  - decoding never crashes, overreads or leaks, whatever the input;
 *  - a decoded event is canonical: re-encoding it from its fields alone
 *    (codec_event_assemble, as the store does) gives the input back byte
 *    for byte, with the same id;
 *  - the public decoder (which also checks the signature) accepts exactly
 *    the inputs that decode and carry a valid signature, fails with the
 *    same code otherwise, and weft_event_bytes() returns the input;
 *  - erasing the payload keeps the id (the erased form decodes to it).
 */
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "fuzz/fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* A small limit as well as the default, to reach the ELIMIT paths. */
	uint32_t limit = size && (data[size - 1] & 1) ? 64 : 0;
	struct weft_event *ev = NULL;
	weft_err err;
	int rc = codec_event_decode(&ev, data, size, limit, &err);
	FUZZ_CHECK((rc == WEFT_OK) == (ev != NULL));

	weft_event *pub = NULL;
	int prc = weft_event_decode(&pub, data, size, limit);
	FUZZ_CHECK((prc == WEFT_OK) == (pub != NULL));
	if (rc < 0) {
		FUZZ_CHECK(rc == WEFT_ECORRUPT || rc == WEFT_ELIMIT || rc == WEFT_EVERSION || rc == WEFT_EAUTH);
		FUZZ_CHECK(err.msg[0] != '\0');
		FUZZ_CHECK(prc == rc);
		return 0;
	}

	/* Canonical: the fields alone re-derive the same bytes and id. */
	struct weft_event *again = NULL;
	weft_err aerr;
	int arc = codec_event_assemble(&again, ev, ev->payload, &aerr);
	FUZZ_CHECK(arc == WEFT_OK);
	FUZZ_CHECK(again->enc_len == size && memcmp(again->enc, data, size) == 0);
	FUZZ_CHECK(memcmp(again->id.bytes, ev->id.bytes, 32) == 0);
	codec_event_free(again);

	/* The public decoder agrees; only the signature may still refuse. */
	int sig = codec_event_verify_sig(ev, &aerr);
	FUZZ_CHECK(sig == WEFT_OK || sig == WEFT_EAUTH);
	FUZZ_CHECK(prc == sig);
	if (pub) {
		size_t n;
		const void *b = weft_event_bytes(pub, &n);
		FUZZ_CHECK(n == size && memcmp(b, data, size) == 0);
		FUZZ_CHECK(memcmp(weft_event_id(pub)->bytes, ev->id.bytes, 32) == 0);
		FUZZ_CHECK(weft_event_seq(pub) >= 1);
		FUZZ_CHECK((weft_event_prev(pub) == NULL) == (weft_event_seq(pub) == 1));
		weft_event_free(pub);
	}

	/* Erasing the payload keeps the id and the signature valid. */
	if (ev->payload && ev->payload_len) {
		size_t elen = ev->header_len + WEFT_SIGNATURE_BYTES + 1;
		unsigned char *erased = malloc(elen);
		memcpy(erased, data, elen);
		erased[elen - 1] = 0;
		struct weft_event *e2 = NULL;
		FUZZ_CHECK(codec_event_decode(&e2, erased, elen, limit, &aerr) == WEFT_OK);
		FUZZ_CHECK(memcmp(e2->id.bytes, ev->id.bytes, 32) == 0 && e2->payload == NULL);
		FUZZ_CHECK(e2->payload_len == ev->payload_len);
		FUZZ_CHECK(codec_event_verify_sig(e2, &aerr) == sig);
		codec_event_free(e2);
		free(erased);
	}
	codec_event_free(ev);
	return 0;
}
