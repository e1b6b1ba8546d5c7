#include "sync/frame.h"

#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/codec.h"
#include "weft.h"

void frame_reader_init(frame_reader *r, uint32_t max)
{
	memset(r, 0, sizeof(*r));
	r->max = max;
}

void frame_reader_free(frame_reader *r)
{
	weft__free(r->payload);
	r->payload = NULL;
}

int frame_read(frame_reader *r, frame *f, const unsigned char **data, size_t *len, char why[160])
{
	if (r->have_hdr == FRAME_HEADER && r->have == r->len) {
		/* The previous frame was handed out: start the next. */
		r->have_hdr = 0;
		r->have = 0;
		weft__free(r->payload);
		r->payload = NULL;
	}
	while (r->have_hdr < FRAME_HEADER) {
		if (*len == 0)
			return 0;
		r->hdr[r->have_hdr++] = **data;
		(*data)++;
		(*len)--;
		if (r->have_hdr == FRAME_HEADER) {
			r->type = r->hdr[0];
			r->len = codec_get_u32(r->hdr + 1);
			if (r->type == 0 || r->type > FRAME__MAX) {
				snprintf(why, 160, "unknown frame type %u", r->type);
				return WEFT_EPROTO;
			}
			/* The cap is checked before a single payload byte is kept. */
			if (r->len > r->max) {
				snprintf(why, 160, "frame of %u bytes exceeds the limit of %u bytes", r->len, r->max);
				return WEFT_ELIMIT;
			}
			r->payload = weft__malloc(r->len ? r->len : 1);
			if (!r->payload) {
				snprintf(why, 160, "out of memory for a %u-byte frame", r->len);
				return WEFT_ENOMEM;
			}
			r->have = 0;
		}
	}
	size_t take = r->len - r->have;
	if (take > *len)
		take = *len;
	if (take)
		memcpy(r->payload + r->have, *data, take);
	r->have += take;
	*data += take;
	*len -= take;
	if (r->have < r->len)
		return 0;
	f->type = r->type;
	f->len = r->len;
	f->payload = r->payload;
	return 1;
}

unsigned char *frame_reserve(frame_buf *b, size_t n)
{
	if (b->oom)
		return NULL;
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + n)
			cap *= 2;
		unsigned char *d = weft__realloc(b->data, cap);
		if (!d) {
			b->oom = 1;
			return NULL;
		}
		b->data = d;
		b->cap = cap;
	}
	return b->data + b->len;
}

void frame_put(frame_buf *b, const void *p, size_t n)
{
	unsigned char *d = frame_reserve(b, n);
	if (d) {
		if (n)
			memcpy(d, p, n);
		b->len += n;
	}
}

void frame_put_u8(frame_buf *b, uint8_t v)
{
	frame_put(b, &v, 1);
}

void frame_put_u16(frame_buf *b, uint16_t v)
{
	unsigned char x[2] = {(unsigned char)(v >> 8), (unsigned char)v};
	frame_put(b, x, 2);
}

void frame_put_u32(frame_buf *b, uint32_t v)
{
	unsigned char x[4];
	codec_put_u32(x, v);
	frame_put(b, x, 4);
}

size_t frame_begin(frame_buf *b, uint8_t type)
{
	unsigned char h[FRAME_HEADER] = {type, 0, 0, 0, 0};
	/* Drop what was sent; only here, so offsets of an open frame hold. */
	if (b->sent) {
		memmove(b->data, b->data + b->sent, b->len - b->sent);
		b->len -= b->sent;
		b->sent = 0;
	}
	if (!frame_reserve(b, FRAME_HEADER))
		return 0;
	size_t start = b->len;
	frame_put(b, h, FRAME_HEADER);
	return start;
}

void frame_end(frame_buf *b, size_t start)
{
	if (b->oom)
		return;
	codec_put_u32(b->data + start + 1, (uint32_t)(b->len - start - FRAME_HEADER));
}

size_t frame_pending(const frame_buf *b)
{
	return b->len - b->sent;
}

void frame_consume(frame_buf *b, size_t n)
{
	if (n > b->len - b->sent)
		n = b->len - b->sent;
	b->sent += n;
	if (b->sent == b->len)
		b->sent = b->len = 0;
}

void frame_buf_free(frame_buf *b)
{
	weft__free(b->data);
	memset(b, 0, sizeof(*b));
}
