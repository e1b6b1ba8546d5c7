/* Sync frames: type u8 | length u32 BE | payload, read from any split of the
 * stream, with the length cap checked before anything is allocated. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/codec.h"
#include "sync/frame.h"

/* A stream of frames of assorted types and lengths (0 included). */
static void build_stream(frame_buf *b, size_t *nframes)
{
	static const uint32_t lens[] = {0, 1, 4, 5, 31, 4096, 70000, 2};
	memset(b, 0, sizeof(*b));
	*nframes = 0;
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		size_t start = frame_begin(b, (uint8_t)(1 + i % FRAME__MAX));
		for (uint32_t k = 0; k < lens[i]; k++)
			frame_put_u8(b, (uint8_t)(k * 7 + i));
		frame_end(b, start);
		(*nframes)++;
	}
	assert_int_equal(b->oom, 0);
}

static void check_frame(const frame *f, size_t i)
{
	static const uint32_t lens[] = {0, 1, 4, 5, 31, 4096, 70000, 2};
	assert_int_equal(f->type, 1 + i % FRAME__MAX);
	assert_int_equal(f->len, lens[i]);
	for (uint32_t k = 0; k < f->len; k++)
		assert_int_equal(f->payload[k], (uint8_t)(k * 7 + i));
}

/* Reads the stream delivered in chunks of `step` bytes (0: random sizes). */
static void read_back(const frame_buf *b, size_t nframes, size_t step, uint64_t seed)
{
	frame_reader r;
	frame_reader_init(&r, 1u << 20);
	size_t got = 0, off = 0;
	while (off < b->len) {
		size_t n = step;
		if (!step) {
			seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
			n = 1 + (size_t)(seed % 9000);
		}
		if (n > b->len - off)
			n = b->len - off;
		const unsigned char *p = b->data + off;
		size_t left = n;
		for (;;) {
			frame f;
			char why[160];
			int rc = frame_read(&r, &f, &p, &left, why);
			assert_true(rc >= 0);
			if (rc == 0)
				break;
			check_frame(&f, got++);
		}
		assert_int_equal(left, 0);
		off += n;
	}
	assert_int_equal(got, nframes);
	frame_reader_free(&r);
}

static void test_frame_reads_any_split_of_the_stream(void **state)
{
	(void)state;
	frame_buf b;
	size_t n;
	build_stream(&b, &n);
	assert_int_equal(b.len, n * FRAME_HEADER + 0 + 1 + 4 + 5 + 31 + 4096 + 70000 + 2);
	for (size_t step = 1; step <= 13; step++)
		read_back(&b, n, step, 0);
	read_back(&b, n, b.len, 0);
	for (uint64_t seed = 1; seed < 40; seed++)
		read_back(&b, n, 0, seed * 0x9e3779b97f4a7c15ull);
	frame_buf_free(&b);
	frame_buf_free(&b); /* twice is fine */
}

static void test_frame_header_is_big_endian(void **state)
{
	(void)state;
	frame_buf b = {0};
	size_t start = frame_begin(&b, FRAME_ACK);
	frame_put_u32(&b, 0x01020304u);
	frame_put_u16(&b, 0x0506);
	frame_put_u8(&b, 7);
	frame_end(&b, start);
	const unsigned char want[] = {FRAME_ACK, 0, 0, 0, 7, 1, 2, 3, 4, 5, 6, 7};
	assert_int_equal(frame_pending(&b), sizeof(want));
	assert_memory_equal(b.data, want, sizeof(want));
	frame_buf_free(&b);
}

static void test_frame_refuses_unknown_types(void **state)
{
	(void)state;
	const uint8_t bad[] = {0, FRAME__MAX + 1, 0x80, 0xff};
	for (size_t i = 0; i < sizeof(bad); i++) {
		frame_reader r;
		frame_reader_init(&r, 1024);
		unsigned char h[FRAME_HEADER] = {bad[i], 0, 0, 0, 1};
		const unsigned char *p = h;
		size_t len = sizeof(h);
		frame f;
		char why[160];
		assert_int_equal(frame_read(&r, &f, &p, &len, why), WEFT_EPROTO);
		assert_non_null(strstr(why, "unknown frame type"));
		frame_reader_free(&r);
	}
}

static void test_frame_checks_the_cap_before_allocating(void **state)
{
	(void)state;
	frame_reader r;
	frame_reader_init(&r, 4096);
	/* The header arrives a byte at a time; the claim is 4 GiB - 1. */
	unsigned char h[FRAME_HEADER] = {FRAME_EVENTS, 0xff, 0xff, 0xff, 0xff};
	frame f;
	char why[160];
	alloc_fail_after(1);
	for (size_t i = 0; i < FRAME_HEADER - 1; i++) {
		const unsigned char *p = h + i;
		size_t len = 1;
		assert_int_equal(frame_read(&r, &f, &p, &len, why), 0);
	}
	const unsigned char *p = h + FRAME_HEADER - 1;
	size_t len = 1;
	int rc = frame_read(&r, &f, &p, &len, why);
	unsigned long tried = alloc_count();
	alloc_fail_after(0);
	assert_int_equal(rc, WEFT_ELIMIT);
	assert_int_equal(tried, 0);
	assert_non_null(strstr(why, "4294967295"));
	assert_non_null(strstr(why, "4096"));
	frame_reader_free(&r);

	/* Exactly the cap is fine; one more is not. */
	frame_reader_init(&r, 4096);
	unsigned char *big = calloc(1, FRAME_HEADER + 4096);
	big[0] = FRAME_NEG;
	codec_put_u32(big + 1, 4096);
	p = big;
	len = FRAME_HEADER + 4096;
	assert_int_equal(frame_read(&r, &f, &p, &len, why), 1);
	assert_int_equal(f.len, 4096);
	codec_put_u32(big + 1, 4097);
	p = big;
	len = FRAME_HEADER;
	assert_int_equal(frame_read(&r, &f, &p, &len, why), WEFT_ELIMIT);
	free(big);
	frame_reader_free(&r);

	/* Out of memory for an acceptable frame is reported as such. */
	frame_reader_init(&r, 4096);
	unsigned char ok[FRAME_HEADER] = {FRAME_NEG, 0, 0, 1, 0};
	p = ok;
	len = sizeof(ok);
	alloc_fail_after(1);
	rc = frame_read(&r, &f, &p, &len, why);
	alloc_fail_after(0);
	assert_int_equal(rc, WEFT_ENOMEM);
	frame_reader_free(&r);
}

static void test_frame_buffer_consumes_and_compacts(void **state)
{
	(void)state;
	frame_buf b = {0};
	size_t s1 = frame_begin(&b, FRAME_WANT);
	frame_put(&b, "0123456789", 10);
	frame_end(&b, s1);
	assert_int_equal(frame_pending(&b), 15);
	frame_consume(&b, 6); /* header and the first byte were sent */
	assert_int_equal(frame_pending(&b), 9);
	/* A new frame drops what was sent; the unsent bytes stay in order. */
	size_t s2 = frame_begin(&b, FRAME_DONE);
	frame_end(&b, s2);
	assert_int_equal(frame_pending(&b), 14);
	assert_memory_equal(b.data + b.sent, "123456789", 9);
	assert_int_equal(b.data[b.sent + 9], FRAME_DONE);
	frame_consume(&b, 1000); /* more than pending: clamps */
	assert_int_equal(frame_pending(&b), 0);
	assert_int_equal(b.len, 0);
	frame_buf_free(&b);

	/* Out of memory sticks and makes every later write a no-op. */
	alloc_fail_after(1);
	size_t s3 = frame_begin(&b, FRAME_ACK);
	frame_put_u32(&b, 1);
	frame_end(&b, s3);
	alloc_fail_after(0);
	assert_int_equal(b.oom, 1);
	assert_int_equal(frame_pending(&b), 0);
	assert_null(frame_reserve(&b, 1));
	frame_buf_free(&b);
	assert_int_equal(b.oom, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frame_reads_any_split_of_the_stream),
		cmocka_unit_test(test_frame_header_is_big_endian),
		cmocka_unit_test(test_frame_refuses_unknown_types),
		cmocka_unit_test(test_frame_checks_the_cap_before_allocating),
		cmocka_unit_test(test_frame_buffer_consumes_and_compacts),
	};
	return cmocka_run_group_tests_name("frame", tests, NULL, NULL);
}
