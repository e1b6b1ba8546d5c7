/*
 * The incremental frame decoder (sync/frame.c) on arbitrary bytes.
 *
 * Input: one byte choosing the frame limit and the split seed, then the
 * byte stream. Properties:
 *  - the same stream read whole, byte by byte, and in random splits gives
 *    the same frames (type, length, payload) and ends the same way (the
 *    same error at the same frame, or the same number of bytes pending);
 *  - no frame is longer than the limit; an error ends the stream;
 *  - encoding the frames read with the frame writer gives back exactly
 *    the bytes they were read from.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_common.h"
#include "sync/frame.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	return 0;
}

typedef struct outcome {
	size_t nframes;
	uint8_t *types;
	uint32_t *lens;
	size_t *offsets; /* where each payload starts in the stream */
	int end;         /* 0: input ran out; else the error code */
	size_t consumed; /* bytes consumed when it ended */
} outcome;

static void outcome_free(outcome *o)
{
	free(o->types);
	free(o->lens);
	free(o->offsets);
}

/* Reads the stream split into chunks: sizes from a xorshift seed (0 = all
 * at once, 1 = one byte at a time). */
static void read_all(outcome *o, const uint8_t *s, size_t n, uint32_t max, uint32_t seed)
{
	memset(o, 0, sizeof(*o));
	size_t cap = 16;
	o->types = malloc(cap);
	o->lens = malloc(cap * sizeof(uint32_t));
	o->offsets = malloc(cap * sizeof(size_t));
	frame_reader r;
	frame_reader_init(&r, max);
	size_t pos = 0;
	uint32_t x = seed | 1;
	while (pos < n && !o->end) {
		size_t chunk = n - pos;
		if (seed == 1) {
			chunk = 1;
		} else if (seed) {
			x ^= x << 13, x ^= x >> 17, x ^= x << 5;
			chunk = 1 + x % (x & 0x100 ? 7 : 300);
			if (chunk > n - pos)
				chunk = n - pos;
		}
		const unsigned char *p = s + pos;
		size_t left = chunk;
		for (;;) {
			frame f;
			char why[160];
			int rc = frame_read(&r, &f, &p, &left, why);
			if (rc < 0) {
				o->end = rc;
				FUZZ_CHECK(why[0] != '\0');
				break;
			}
			if (rc == 0) {
				FUZZ_CHECK(left == 0);
				break;
			}
			FUZZ_CHECK(f.len <= max);
			FUZZ_CHECK(f.type >= 1 && f.type <= FRAME__MAX);
			size_t at = (size_t)(p - s) - f.len;
			FUZZ_CHECK(f.len == 0 || memcmp(f.payload, s + at, f.len) == 0);
			if (o->nframes == cap) {
				cap *= 2;
				o->types = realloc(o->types, cap);
				o->lens = realloc(o->lens, cap * sizeof(uint32_t));
				o->offsets = realloc(o->offsets, cap * sizeof(size_t));
			}
			o->types[o->nframes] = f.type;
			o->lens[o->nframes] = f.len;
			o->offsets[o->nframes] = at;
			o->nframes++;
		}
		pos = (size_t)(p - s);
	}
	o->consumed = pos;
	frame_reader_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	/* Limits from tiny to the session minimum and beyond. */
	static const uint32_t limits[8] = {0, 1, 16, 300, 4096, FRAME_MAX_MIN, FRAME_MAX_DEFAULT, 1u << 24};
	uint32_t max = limits[data[0] & 7];
	uint32_t seed = 2 + (data[0] >> 3);
	const uint8_t *s = data + 1;
	size_t n = size - 1;

	outcome whole, bytewise, split;
	read_all(&whole, s, n, max, 0);
	read_all(&bytewise, s, n, max, 1);
	read_all(&split, s, n, max, seed);
	const outcome *other[2] = {&bytewise, &split};
	for (int k = 0; k < 2; k++) {
		const outcome *o = other[k];
		FUZZ_CHECK(o->nframes == whole.nframes);
		FUZZ_CHECK(o->end == whole.end);
		FUZZ_CHECK(o->consumed == whole.consumed);
		FUZZ_CHECK(memcmp(o->types, whole.types, whole.nframes) == 0);
		FUZZ_CHECK(memcmp(o->lens, whole.lens, whole.nframes * sizeof(uint32_t)) == 0);
		FUZZ_CHECK(memcmp(o->offsets, whole.offsets, whole.nframes * sizeof(size_t)) == 0);
	}
	/* Without an error the whole input is consumed (buffered or framed). */
	if (!whole.end)
		FUZZ_CHECK(whole.consumed == n);

	/* The writer re-encodes the frames read into the same bytes. */
	frame_buf b;
	memset(&b, 0, sizeof(b));
	size_t framed = 0;
	for (size_t i = 0; i < whole.nframes; i++) {
		size_t start = frame_begin(&b, whole.types[i]);
		frame_put(&b, s + whole.offsets[i], whole.lens[i]);
		frame_end(&b, start);
		framed = whole.offsets[i] + whole.lens[i];
	}
	FUZZ_CHECK(!b.oom);
	FUZZ_CHECK(frame_pending(&b) == framed);
	FUZZ_CHECK(framed == 0 || memcmp(b.data, s, framed) == 0);
	frame_buf_free(&b);

	outcome_free(&whole);
	outcome_free(&bytewise);
	outcome_free(&split);
	return 0;
}
