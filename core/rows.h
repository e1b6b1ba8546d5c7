/*
 * Row operations: the payload of events of kind "weft.rows" (docs/MERGE.md
 * gives the bytes). Decoding is two-pass: the whole payload is checked
 * before the first operation is reported, so a bad payload has no effect.
 */
#ifndef WEFT_CORE_ROWS_H
#define WEFT_CORE_ROWS_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "weft.h"

#define ROWS_KIND "weft.rows"
#define ROWS_FORMAT_VERSION 1
#define ROWS_MAX_OPS 65536
#define ROWS_MAX_COLS 256
#define ROWS_NAME_MAX 64 /* = SCHEMA_NAME_MAX */

typedef enum rowop_kind { ROWOP_PUT = 0, ROWOP_DELETE = 1, ROWOP_INCR = 2 } rowop_kind;

/*
 * One cell-level operation. A put of several columns is reported once per
 * column (a put of no columns once, with col NULL). idx numbers the cells
 * of the event in order: later cells of one event win over earlier ones.
 */
typedef struct rowop_cell {
	rowop_kind kind;
	uint32_t idx;
	const char *table; /* lowercase, NUL-terminated (copied) */
	weft_value pk;
	const char *col;   /* NULL for a delete or a column-less put */
	weft_value value;  /* put: the value; incr: WEFT_INTEGER delta */
} rowop_cell;

typedef int (*rows_cell_cb)(const rowop_cell *c, void *ctx);

/* Checks the payload, then calls cb for each cell. WEFT_ECORRUPT (with the
 * byte offset) if the payload is malformed; cb's negative return stops. */
int rows_decode(const void *payload, size_t len, rows_cell_cb cb, void *ctx, weft_err *err);

/*
 * One operation as encoded. A put's columns stay one span of the payload
 * (ncells × name, value: the bytes of docs/MERGE.md), read with
 * rows_cells_next; its cells are numbered idx, idx + 1, ...
 */
typedef struct rowop {
	rowop_kind kind;
	uint32_t idx;      /* index of its (first) cell */
	const char *table; /* lowercase, NUL-terminated (copied) */
	weft_value pk;
	const char *col;   /* incr: the counter column */
	weft_value value;  /* incr: the WEFT_INTEGER delta */
	const unsigned char *cells; /* put: its columns, NULL if none */
	size_t cells_len;
	unsigned ncells;
} rowop;

typedef int (*rows_op_cb)(const rowop *op, void *ctx);

/* As rows_decode, but cb sees each operation once. */
int rows_decode_ops(const void *payload, size_t len, rows_op_cb cb, void *ctx, weft_err *err);

/* As rows_decode_ops in one pass: each operation is checked before cb sees
 * it, but a malformed later part is found only after cb saw the earlier
 * operations (*malformed = 1, WEFT_ECORRUPT; the caller undoes them). */
int rows_walk_ops(const void *payload, size_t len, rows_op_cb cb, void *ctx, int *malformed);

/* Reads the next (name, value) of a put's cells span at *p, advancing it.
 * 1: one read; 0: end of the span; -1: past the end or a bad value. For
 * spans of a checked payload only: names are not checked again. name
 * receives the lowercase column name. */
int rows_cells_next(const unsigned char **p, const unsigned char *end, char name[ROWS_NAME_MAX + 1],
                    weft_value *v);

/* Encoding of one value; the value codec is shared with the change feed. */
size_t rows_value_size(const weft_value *v);
unsigned char *rows_value_put(unsigned char *p, const weft_value *v);
/* Reads a value at *p (advancing it); -1 if malformed or past end. */
int rows_value_get(weft_value *v, const unsigned char **p, const unsigned char *end);
/* Total order and equality on values (type, then content). */
int rows_value_cmp(const weft_value *a, const weft_value *b);

#endif
