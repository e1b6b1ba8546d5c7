/*
 * Sync frames (docs/PROTOCOL.md): type u8 | length u32 big-endian | payload.
 * Every length is checked against a hard cap before anything is buffered.
 */
#ifndef WEFT_SYNC_FRAME_H
#define WEFT_SYNC_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_HEADER 5
#define FRAME_MAX_DEFAULT (1u << 20)
#define FRAME_MAX_MIN (64u << 10)
/* Room for the largest event any store accepts (64 MiB payload). */
#define FRAME_MAX_HARD ((64u << 20) + (64u << 10))

enum frame_type {
	FRAME_HELLO = 1,    /* version, device key, scopes */
	FRAME_NEG = 2,      /* a Negentropy V1 message */
	FRAME_WANT = 3,     /* ids of events the sender asks for */
	FRAME_EVENTS = 4,   /* a batch of encoded events */
	FRAME_ACK = 5,      /* a batch was committed: how many were new */
	FRAME_WANT_END = 6, /* all events of one WANT were sent */
	FRAME_DONE = 7,     /* the sender has nothing more to send or ask */
	FRAME_ERROR = 8,    /* the session ends: code and message */
	FRAME__MAX = 8
};

#define PROTOCOL_MAGIC "WEFT"
#define PROTOCOL_VERSION 1

/* Incremental decoder: push bytes in, take whole frames out. */
typedef struct frame_reader {
	uint32_t max;        /* largest payload accepted */
	unsigned char hdr[FRAME_HEADER];
	size_t have_hdr;
	uint8_t type;
	uint32_t len;
	unsigned char *payload; /* allocated once the header checks out */
	size_t have;
} frame_reader;

typedef struct frame {
	uint8_t type;
	uint32_t len;
	const unsigned char *payload; /* valid until the next frame_read */
} frame;

void frame_reader_init(frame_reader *r, uint32_t max);
void frame_reader_free(frame_reader *r);
/*
 * Consumes bytes from *data (advancing it) until a whole frame is ready
 * (returns 1 and fills *f), the input runs out (returns 0), or the input is
 * bad (returns WEFT_EPROTO / WEFT_ELIMIT and a message in why).
 */
int frame_read(frame_reader *r, frame *f, const unsigned char **data, size_t *len,
               char why[160]);

/* A growable output buffer of frames. */
typedef struct frame_buf {
	unsigned char *data;
	size_t len, cap, sent;
	int oom;
} frame_buf;

/* Starts a frame of type; returns the offset of its payload (or 0 when out
 * of memory, recorded in b->oom). frame_end fills in the length. */
size_t frame_begin(frame_buf *b, uint8_t type);
void frame_end(frame_buf *b, size_t start);
void frame_put(frame_buf *b, const void *p, size_t n);
void frame_put_u8(frame_buf *b, uint8_t v);
void frame_put_u16(frame_buf *b, uint16_t v);
void frame_put_u32(frame_buf *b, uint32_t v);
/* Space for n more bytes at b->data + b->len, or NULL when out of memory. */
unsigned char *frame_reserve(frame_buf *b, size_t n);
size_t frame_pending(const frame_buf *b);
void frame_consume(frame_buf *b, size_t n);
void frame_buf_free(frame_buf *b);

#endif
