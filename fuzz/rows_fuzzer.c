/*
 * The row-operation payload decoder (core/rows.c, events of kind
 * "weft.rows") on arbitrary bytes.
 *
 * Properties:
 *  - all or nothing: a malformed payload fails with WEFT_ECORRUPT before
 *    a single operation is reported;
 *  - every reported cell is well formed: lowercase valid names, a primary
 *    key of type INTEGER/TEXT/BLOB, no NaN, an INTEGER counter delta,
 *    cells numbered 0, 1, 2...;
 *  - encoding the reported cells again (one put per row run, as weft_txn
 *    writes them) and decoding that gives the same cells;
 *  - a callback that returns an error stops the walk with exactly that
 *    error;
 *  - rows_value_cmp is a total order consistent with equality.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/rows.h"
#include "core/schema.h"
#include "fuzz/fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	return 0;
}

typedef struct cell {
	rowop_kind kind;
	uint32_t idx;
	char table[SCHEMA_NAME_MAX + 1];
	char col[SCHEMA_NAME_MAX + 1];
	int has_col;
	weft_value pk, value; /* point into the payload */
} cell;

typedef struct cells {
	cell *v;
	size_t n, cap;
	size_t stop_at; /* return an error at this cell (SIZE_MAX: never) */
} cells;

static int name_ok(const char *s)
{
	for (const char *p = s; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			return 0;
	return schema_name_ok(s, strlen(s));
}

static int collect(const rowop_cell *c, void *ctx)
{
	cells *cs = ctx;
	FUZZ_CHECK(c->kind == ROWOP_PUT || c->kind == ROWOP_DELETE || c->kind == ROWOP_INCR);
	FUZZ_CHECK(c->idx == cs->n);
	FUZZ_CHECK(c->table && name_ok(c->table));
	FUZZ_CHECK(c->pk.type == WEFT_INTEGER || c->pk.type == WEFT_TEXT || c->pk.type == WEFT_BLOB);
	if (c->kind == ROWOP_DELETE)
		FUZZ_CHECK(c->col == NULL);
	if (c->kind == ROWOP_INCR)
		FUZZ_CHECK(c->col && c->value.type == WEFT_INTEGER);
	if (c->col)
		FUZZ_CHECK(name_ok(c->col));
	if (c->kind == ROWOP_PUT && c->col && c->value.type == WEFT_REAL)
		FUZZ_CHECK(!isnan(c->value.r));
	if (cs->n == cs->stop_at)
		return WEFT_EUSER;
	if (cs->n == cs->cap) {
		cs->cap = cs->cap ? cs->cap * 2 : 64;
		cs->v = realloc(cs->v, cs->cap * sizeof(cell));
	}
	cell *d = &cs->v[cs->n++];
	memset(d, 0, sizeof(*d));
	d->kind = c->kind;
	d->idx = c->idx;
	strcpy(d->table, c->table);
	d->has_col = c->col != NULL;
	if (c->col)
		strcpy(d->col, c->col);
	d->pk = c->pk;
	d->value = c->value;
	return 0;
}

typedef struct obuf {
	unsigned char *p;
	size_t len, cap;
} obuf;

static unsigned char *grow(obuf *b, size_t n)
{
	if (b->len + n > b->cap) {
		while (b->len + n > b->cap)
			b->cap = b->cap ? b->cap * 2 : 256;
		b->p = realloc(b->p, b->cap);
	}
	unsigned char *at = b->p + b->len;
	b->len += n;
	return at;
}

static void put_name(obuf *b, const char *s)
{
	size_t n = strlen(s);
	*grow(b, 1) = (unsigned char)n;
	memcpy(grow(b, n), s, n);
}

static void put_value(obuf *b, const weft_value *v)
{
	unsigned char *at = grow(b, rows_value_size(v));
	rows_value_put(at, v);
}

static int same_row(const cell *a, const cell *b)
{
	return strcmp(a->table, b->table) == 0 && rows_value_cmp(&a->pk, &b->pk) == 0;
}

/* One put per run of column cells of one row (at most 256 columns). */
static void encode(obuf *b, const cells *cs)
{
	unsigned char *hdr = grow(b, 5);
	hdr[0] = ROWS_FORMAT_VERSION;
	uint32_t nops = 0;
	size_t ncols_at = 0;
	unsigned ncols = 0;
	for (size_t i = 0; i < cs->n; i++) {
		const cell *c = &cs->v[i];
		int extend = c->kind == ROWOP_PUT && c->has_col && i > 0 && cs->v[i - 1].kind == ROWOP_PUT &&
		             cs->v[i - 1].has_col && same_row(c, &cs->v[i - 1]) && ncols < ROWS_MAX_COLS;
		if (!extend) {
			nops++;
			*grow(b, 1) = (unsigned char)c->kind;
			put_name(b, c->table);
			put_value(b, &c->pk);
			if (c->kind == ROWOP_PUT) {
				ncols_at = b->len;
				grow(b, 2);
				ncols = 0;
			}
		}
		if (c->kind == ROWOP_PUT && c->has_col) {
			put_name(b, c->col);
			put_value(b, &c->value);
			ncols++;
		} else if (c->kind == ROWOP_INCR) {
			put_name(b, c->col);
			codec_put_u64(grow(b, 8), (uint64_t)c->value.i);
		}
		if (c->kind == ROWOP_PUT) {
			b->p[ncols_at] = (unsigned char)(ncols >> 8);
			b->p[ncols_at + 1] = (unsigned char)ncols;
		}
	}
	codec_put_u32(b->p + 1, nops);
}

static int cell_same(const cell *a, const cell *b)
{
	return a->kind == b->kind && a->idx == b->idx && strcmp(a->table, b->table) == 0 &&
	       a->has_col == b->has_col && strcmp(a->col, b->col) == 0 && rows_value_cmp(&a->pk, &b->pk) == 0 &&
	       rows_value_cmp(&a->value, &b->value) == 0 && a->value.type == b->value.type;
}

static void check_order(const weft_value *a, const weft_value *b)
{
	int ab = rows_value_cmp(a, b), ba = rows_value_cmp(b, a);
	FUZZ_CHECK(ab >= -1 && ab <= 1);
	FUZZ_CHECK(ab == -ba);
	FUZZ_CHECK(rows_value_cmp(a, a) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cells cs = {NULL, 0, 0, SIZE_MAX};
	weft_err err;
	int rc = rows_decode(data, size, collect, &cs, &err);
	if (rc < 0) {
		FUZZ_CHECK(rc == WEFT_ECORRUPT);
		FUZZ_CHECK(cs.n == 0); /* nothing reported before the check */
		FUZZ_CHECK(err.msg[0] != '\0');
		free(cs.v);
		return 0;
	}
	FUZZ_CHECK(rc == WEFT_OK && cs.n >= 1);

	for (size_t i = 0; i + 1 < cs.n && i < 64; i++) {
		check_order(&cs.v[i].pk, &cs.v[i + 1].pk);
		check_order(&cs.v[i].value, &cs.v[i + 1].value);
	}

	obuf b = {0};
	encode(&b, &cs);
	cells again = {NULL, 0, 0, SIZE_MAX};
	rc = rows_decode(b.p, b.len, collect, &again, &err);
	FUZZ_CHECK(rc == WEFT_OK);
	FUZZ_CHECK(again.n == cs.n);
	for (size_t i = 0; i < cs.n; i++)
		FUZZ_CHECK(cell_same(&cs.v[i], &again.v[i]));

	/* A callback error at cell k stops there with that error. */
	cells stop = {NULL, 0, 0, (size_t)data[size - 1] % cs.n};
	rc = rows_decode(data, size, collect, &stop, &err);
	FUZZ_CHECK(rc == WEFT_EUSER);
	FUZZ_CHECK(stop.n == stop.stop_at);

	free(stop.v);
	free(again.v);
	free(b.p);
	free(cs.v);
	return 0;
}
