#include "core/rows.h"

#include <ctype.h>
#include <math.h>
#include <string.h>

#include "core/codec.h"
#include "core/schema.h"

_Static_assert(ROWS_NAME_MAX == SCHEMA_NAME_MAX, "rows and schema agree on name length");

size_t rows_value_size(const weft_value *v)
{
	switch (v->type) {
	case WEFT_INTEGER:
	case WEFT_REAL:
		return 9;
	case WEFT_TEXT:
	case WEFT_BLOB:
		return 5 + v->n;
	default:
		return 1;
	}
}

unsigned char *rows_value_put(unsigned char *p, const weft_value *v)
{
	*p++ = (unsigned char)v->type;
	switch (v->type) {
	case WEFT_INTEGER:
		codec_put_u64(p, (uint64_t)v->i);
		return p + 8;
	case WEFT_REAL: {
		uint64_t bits;
		memcpy(&bits, &v->r, 8);
		codec_put_u64(p, bits);
		return p + 8;
	}
	case WEFT_TEXT:
	case WEFT_BLOB:
		codec_put_u32(p, (uint32_t)v->n);
		if (v->n)
			memcpy(p + 4, v->p, v->n);
		return p + 4 + v->n;
	default:
		return p;
	}
}

int rows_value_get(weft_value *v, const unsigned char **pp, const unsigned char *end)
{
	const unsigned char *p = *pp;
	if (p >= end)
		return -1;
	memset(v, 0, sizeof(*v));
	v->type = (weft_type)*p++;
	switch (v->type) {
	case WEFT_NULL:
		break;
	case WEFT_INTEGER:
		if (end - p < 8)
			return -1;
		v->i = (int64_t)codec_get_u64(p);
		p += 8;
		break;
	case WEFT_REAL: {
		if (end - p < 8)
			return -1;
		uint64_t bits = codec_get_u64(p);
		memcpy(&v->r, &bits, 8);
		if (isnan(v->r))
			return -1; /* SQLite cannot store NaN: one meaning per value */
		p += 8;
		break;
	}
	case WEFT_TEXT:
	case WEFT_BLOB: {
		if (end - p < 4)
			return -1;
		uint32_t n = codec_get_u32(p);
		p += 4;
		if ((size_t)(end - p) < n)
			return -1;
		v->p = p;
		v->n = n;
		p += n;
		break;
	}
	default:
		return -1;
	}
	*pp = p;
	return 0;
}

int rows_value_cmp(const weft_value *a, const weft_value *b)
{
	if (a->type != b->type)
		return a->type < b->type ? -1 : 1;
	switch (a->type) {
	case WEFT_INTEGER:
		return a->i < b->i ? -1 : a->i > b->i;
	case WEFT_REAL:
		return a->r < b->r ? -1 : a->r > b->r;
	case WEFT_TEXT:
	case WEFT_BLOB: {
		size_t n = a->n < b->n ? a->n : b->n;
		int c = n ? memcmp(a->p, b->p, n) : 0;
		if (c)
			return c < 0 ? -1 : 1;
		return a->n < b->n ? -1 : a->n > b->n;
	}
	default:
		return 0;
	}
}

typedef struct rd {
	const unsigned char *start, *p, *end;
} rd;

static int get_name(rd *r, char out[SCHEMA_NAME_MAX + 1])
{
	if (r->p >= r->end)
		return -1;
	size_t n = *r->p++;
	if ((size_t)(r->end - r->p) < n || !schema_name_ok((const char *)r->p, n))
		return -1;
	for (size_t i = 0; i < n; i++)
		if (isupper(r->p[i]))
			return -1; /* names travel in lowercase: one spelling per name */
	memcpy(out, r->p, n);
	out[n] = '\0';
	r->p += n;
	return 0;
}

static int get_pk(rd *r, weft_value *v)
{
	if (rows_value_get(v, &r->p, r->end) < 0)
		return -1;
	return v->type == WEFT_INTEGER || v->type == WEFT_TEXT || v->type == WEFT_BLOB ? 0 : -1;
}

/* One pass over the payload; with both callbacks NULL it only checks.
 * cb sees cells, opcb operations. */
static int walk(rd *r, rows_cell_cb cb, rows_op_cb opcb, void *ctx, const char **why, int *cbrc)
{
	char table[SCHEMA_NAME_MAX + 1], col[SCHEMA_NAME_MAX + 1];
	if (r->end - r->p < 5) {
		*why = "payload too short for a header";
		return -1;
	}
	if (*r->p != ROWS_FORMAT_VERSION) {
		*why = "unknown row-operations version";
		return -1;
	}
	uint32_t nops = codec_get_u32(r->p + 1);
	r->p += 5;
	if (nops == 0 || nops > ROWS_MAX_OPS) {
		*why = "operation count outside 1..65536";
		return -1;
	}
	uint32_t idx = 0;
	for (uint32_t i = 0; i < nops; i++) {
		rowop_cell c;
		memset(&c, 0, sizeof(c));
		if (r->p >= r->end || *r->p > ROWOP_INCR) {
			*why = "bad operation kind";
			return -1;
		}
		c.kind = (rowop_kind)*r->p++;
		c.table = table;
		if (get_name(r, table) < 0 || get_pk(r, &c.pk) < 0) {
			*why = "bad table name or primary key";
			return -1;
		}
		if (c.kind == ROWOP_PUT) {
			if (r->end - r->p < 2) {
				*why = "truncated column count";
				return -1;
			}
			unsigned ncols = (unsigned)r->p[0] << 8 | r->p[1];
			r->p += 2;
			if (ncols > ROWS_MAX_COLS) {
				*why = "more than 256 columns in one put";
				return -1;
			}
			rowop o;
			memset(&o, 0, sizeof(o));
			o.kind = ROWOP_PUT;
			o.idx = idx;
			o.table = table;
			o.pk = c.pk;
			o.cells = ncols ? r->p : NULL;
			o.ncells = ncols;
			if (ncols == 0) {
				c.idx = idx++;
				if (cb && (*cbrc = cb(&c, ctx)) < 0)
					return -2;
			}
			for (unsigned k = 0; k < ncols; k++) {
				if (get_name(r, col) < 0 || rows_value_get(&c.value, &r->p, r->end) < 0) {
					*why = "bad column name or value";
					return -1;
				}
				c.col = col;
				c.idx = idx++;
				if (cb && (*cbrc = cb(&c, ctx)) < 0)
					return -2;
			}
			o.cells_len = ncols ? (size_t)(r->p - o.cells) : 0;
			if (opcb && (*cbrc = opcb(&o, ctx)) < 0)
				return -2;
		} else {
			if (c.kind == ROWOP_INCR) {
				if (get_name(r, col) < 0 || r->end - r->p < 8) {
					*why = "bad counter column or delta";
					return -1;
				}
				c.col = col;
				c.value = weft_int((int64_t)codec_get_u64(r->p));
				r->p += 8;
			}
			c.idx = idx++;
			if (cb && (*cbrc = cb(&c, ctx)) < 0)
				return -2;
			if (opcb) {
				rowop o;
				memset(&o, 0, sizeof(o));
				o.kind = c.kind;
				o.idx = c.idx;
				o.table = table;
				o.pk = c.pk;
				o.col = c.col;
				o.value = c.value;
				if ((*cbrc = opcb(&o, ctx)) < 0)
					return -2;
			}
		}
	}
	if (r->p != r->end) {
		*why = "unexpected bytes after the last operation";
		return -1;
	}
	return 0;
}

int rows_decode(const void *payload, size_t len, rows_cell_cb cb, void *ctx, weft_err *err)
{
	const char *why = "";
	int cbrc = 0;
	rd r = {payload, payload, (const unsigned char *)payload + len};
	if (!payload || walk(&r, NULL, NULL, NULL, &why, &cbrc) < 0)
		return err_set(err, WEFT_ECORRUPT, "row operations malformed at byte %zu: %s",
		               (size_t)(r.p - r.start), why);
	r.p = r.start;
	return walk(&r, cb, NULL, ctx, &why, &cbrc) == -2 ? cbrc : WEFT_OK;
}

int rows_decode_ops(const void *payload, size_t len, rows_op_cb cb, void *ctx, weft_err *err)
{
	const char *why = "";
	int cbrc = 0;
	rd r = {payload, payload, (const unsigned char *)payload + len};
	if (!payload || walk(&r, NULL, NULL, NULL, &why, &cbrc) < 0)
		return err_set(err, WEFT_ECORRUPT, "row operations malformed at byte %zu: %s",
		               (size_t)(r.p - r.start), why);
	if (!cb)
		return WEFT_OK;
	r.p = r.start;
	return walk(&r, NULL, cb, ctx, &why, &cbrc) == -2 ? cbrc : WEFT_OK;
}

int rows_walk_ops(const void *payload, size_t len, rows_op_cb cb, void *ctx, int *malformed)
{
	const char *why = "";
	int cbrc = 0;
	*malformed = 0;
	rd r = {payload, payload, (const unsigned char *)payload + len};
	int rc = payload ? walk(&r, NULL, cb, ctx, &why, &cbrc) : -1;
	if (rc == -2)
		return cbrc;
	if (rc < 0) {
		*malformed = 1;
		return WEFT_ECORRUPT;
	}
	return WEFT_OK;
}

int rows_cells_next(const unsigned char **p, const unsigned char *end, char name[ROWS_NAME_MAX + 1], weft_value *v)
{
	if (*p >= end)
		return 0;
	/* Names of a checked span need no second check: only the bounds. */
	const unsigned char *q = *p;
	size_t n = *q++;
	if (n < 1 || n > ROWS_NAME_MAX || (size_t)(end - q) < n)
		return -1;
	memcpy(name, q, n);
	name[n] = '\0';
	q += n;
	if (rows_value_get(v, &q, end) < 0)
		return -1;
	*p = q;
	return 1;
}
