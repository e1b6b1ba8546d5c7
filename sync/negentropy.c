/* Negentropy V1 range-based set reconciliation; see negentropy.h. */
#include "sync/negentropy.h"

#include "core/alloc.h"
#include "weft.h"

#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Items per prefix-sum block: 32 bytes of index per 64 items (0.5 B/item),
 * and a range end costs at most 32 id additions. */
#define BLOCK 64
#define BUCKETS 16
/* The reference stops filling a frame this many bytes before the limit. */
#define FRAME_SLACK 200

enum mode { MODE_SKIP = 0, MODE_FINGERPRINT = 1, MODE_IDLIST = 2 };
enum role { ROLE_NONE, ROLE_CLIENT, ROLE_SERVER };

struct neg_item {
	uint64_t ts;
	uint8_t id[NEG_ID_BYTES];
};

typedef struct u256 {
	uint64_t w[4]; /* little-endian limbs */
} u256;

struct neg_set {
	struct neg_item *items;
	size_t n, cap;
	u256 *prefix; /* prefix[k] = sum of ids [0, min(k * BLOCK, n)) */
	size_t nprefix;
	int sealed;
};

/* An exclusive upper bound of a range: (ts, id prefix zero-padded). */
struct bound {
	uint64_t ts;
	uint8_t id[NEG_ID_BYTES];
	size_t len;
};

struct buf {
	uint8_t *p;
	size_t len, cap;
	int oom; /* sticky: later writes are dropped, checked once per range */
};

struct reader {
	const uint8_t *p;
	size_t len, pos;
};

struct neg_reconciler {
	neg_storage st;
	int whole;     /* over the whole storage: end is re-read on every call */
	int st_rc;     /* first storage failure of the current call */
	size_t begin, end;
	size_t limit;
	enum role role;
	int failed;
	uint64_t ts_out; /* previous bound's ts in the message being written */
	struct buf out;
	uint8_t *scratch;
	size_t scratch_cap;
	char err[192];
};

/* ------------------------------------------------------------ 256-bit sums */

static uint64_t load_le64(const uint8_t *p)
{
	return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
	       (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 |
	       (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 |
	       (uint64_t)p[7] << 56;
}

static void store_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void u256_add(u256 *a, const u256 *b)
{
	uint64_t carry = 0;

	for (int k = 0; k < 4; k++) {
		uint64_t s = a->w[k] + b->w[k];
		uint64_t c = s < b->w[k];
		uint64_t t = s + carry;

		c |= t < carry;
		a->w[k] = t;
		carry = c;
	}
}

static void u256_sub(u256 *a, const u256 *b)
{
	uint64_t borrow = 0;

	for (int k = 0; k < 4; k++) {
		uint64_t x = a->w[k], y = b->w[k];
		uint64_t d = x - y;
		uint64_t c = x < y;
		uint64_t t = d - borrow;

		c |= d < borrow;
		a->w[k] = t;
		borrow = c;
	}
}

static void u256_from_id(u256 *out, const uint8_t *id)
{
	for (int k = 0; k < 4; k++)
		out->w[k] = load_le64(id + 8 * k);
}

static void sum_items(u256 *acc, const struct neg_item *it, size_t lo,
		      size_t hi)
{
	u256 x;

	for (size_t i = lo; i < hi; i++) {
		u256_from_id(&x, it[i].id);
		u256_add(acc, &x);
	}
}

static void sub_items(u256 *acc, const struct neg_item *it, size_t lo,
		      size_t hi)
{
	u256 x;

	for (size_t i = lo; i < hi; i++) {
		u256_from_id(&x, it[i].id);
		u256_sub(acc, &x);
	}
}

/* Sum of ids [0, i), from the nearer block boundary. */
static void prefix_sum(u256 *out, const neg_set *s, size_t i)
{
	size_t b = i / BLOCK, off = i % BLOCK;

	if (off <= BLOCK / 2) {
		*out = s->prefix[b];
		sum_items(out, s->items, b * BLOCK, i);
	} else {
		size_t next = (b + 1) * BLOCK;

		*out = s->prefix[b + 1];
		sub_items(out, s->items, i, next < s->n ? next : s->n);
	}
}

/* ------------------------------------------------------------------ varint */

enum { VARINT_OK, VARINT_TRUNCATED, VARINT_NONSHORTEST, VARINT_OVERFLOW };

size_t neg_varint_encode(uint8_t out[NEG_VARINT_MAX], uint64_t v)
{
	uint8_t tmp[NEG_VARINT_MAX];
	size_t n = 0;

	do {
		tmp[n++] = (uint8_t)(v & 0x7f);
		v >>= 7;
	} while (v);
	for (size_t i = 0; i < n; i++)
		out[i] = (uint8_t)(tmp[n - 1 - i] | (i + 1 < n ? 0x80 : 0));
	return n;
}

static int varint_decode(uint64_t *out, size_t *used, const uint8_t *buf,
			 size_t len)
{
	uint64_t v = 0;

	for (size_t i = 0; i < len; i++) {
		uint8_t b = buf[i];

		/* A leading zero group means a shorter encoding existed. */
		if (i == 0 && b == 0x80)
			return VARINT_NONSHORTEST;
		if (v >> 57)
			return VARINT_OVERFLOW;
		v = (v << 7) | (b & 0x7f);
		if (!(b & 0x80)) {
			*out = v;
			*used = i + 1;
			return VARINT_OK;
		}
	}
	return VARINT_TRUNCATED;
}

int neg_varint_decode(uint64_t *out, size_t *used, const uint8_t *buf,
		      size_t len)
{
	if (!buf && len)
		return WEFT_EINVAL;
	return varint_decode(out, used, buf, len) == VARINT_OK ? WEFT_OK
							       : WEFT_EPROTO;
}

/* -------------------------------------------------------------- sorting */

typedef int (*cmp_fn)(const void *, const void *);

static int item_cmp(const void *a, const void *b)
{
	const struct neg_item *x = a, *y = b;

	if (x->ts != y->ts)
		return x->ts < y->ts ? -1 : 1;
	return memcmp(x->id, y->id, NEG_ID_BYTES);
}

static int id_cmp(const void *a, const void *b)
{
	return memcmp(a, b, NEG_ID_BYTES);
}

static void swap_elem(uint8_t *a, uint8_t *b, size_t size)
{
	uint8_t t[64];

	memcpy(t, a, size);
	memcpy(a, b, size);
	memcpy(b, t, size);
}

static void sift_down(uint8_t *base, size_t size, size_t root, size_t n,
		      cmp_fn cmp)
{
	for (;;) {
		size_t child = 2 * root + 1;

		if (child >= n)
			return;
		if (child + 1 < n &&
		    cmp(base + child * size, base + (child + 1) * size) < 0)
			child++;
		if (cmp(base + root * size, base + child * size) >= 0)
			return;
		swap_elem(base + root * size, base + child * size, size);
		root = child;
	}
}

static void heap_sort(uint8_t *base, size_t n, size_t size, cmp_fn cmp)
{
	for (size_t i = n / 2; i-- > 0;)
		sift_down(base, size, i, n, cmp);
	for (size_t i = n; i-- > 1;) {
		swap_elem(base, base + i * size, size);
		sift_down(base, size, 0, i, cmp);
	}
}

/*
 * In-place introsort. Not qsort(): glibc's may malloc a copy of the whole
 * array (doubling peak memory, bypassing the allocation hook), and peer
 * data must not be able to force quadratic time.
 */
static void intro_sort(uint8_t *base, size_t n, size_t size, cmp_fn cmp,
		       unsigned depth)
{
	uint8_t pivot[64];

	while (n > 16) {
		if (depth-- == 0) {
			heap_sort(base, n, size, cmp);
			return;
		}
		uint8_t *a = base, *m = base + (n - 1) / 2 * size;
		uint8_t *z = base + (n - 1) * size;

		if (cmp(m, a) < 0)
			swap_elem(m, a, size);
		if (cmp(z, m) < 0) {
			swap_elem(z, m, size);
			if (cmp(m, a) < 0)
				swap_elem(m, a, size);
		}
		memcpy(pivot, m, size);

		/* Hoare partition into [0, j] and [j + 1, n). */
		size_t i = 0, j = n - 1;
		for (;;) {
			while (cmp(base + i * size, pivot) < 0)
				i++;
			while (cmp(pivot, base + j * size) < 0)
				j--;
			if (i >= j)
				break;
			swap_elem(base + i * size, base + j * size, size);
			i++;
			j--;
		}
		size_t left = j + 1;
		/* Recurse into the smaller half to bound the stack. */
		if (left < n - left) {
			intro_sort(base, left, size, cmp, depth);
			base += left * size;
			n -= left;
		} else {
			intro_sort(base + left * size, n - left, size, cmp,
				   depth);
			n = left;
		}
	}
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0 &&
				   cmp(base + (j - 1) * size, base + j * size) > 0;
		     j--)
			swap_elem(base + (j - 1) * size, base + j * size, size);
}

static void sort_elems(void *base, size_t n, size_t size, cmp_fn cmp)
{
	unsigned depth = 0;

	for (size_t m = n; m > 1; m >>= 1)
		depth += 2;
	intro_sort(base, n, size, cmp, depth);
}

/* ---------------------------------------------------------------- the set */

int neg_set_new(neg_set **out)
{
	neg_set *s;

	if (!out)
		return WEFT_EINVAL;
	*out = NULL;
	s = weft__calloc(1, sizeof(*s));
	if (!s)
		return WEFT_ENOMEM;
	*out = s;
	return WEFT_OK;
}

void neg_set_free(neg_set *s)
{
	if (!s)
		return;
	weft__free(s->items);
	weft__free(s->prefix);
	weft__free(s);
}

static int set_grow_to(neg_set *s, size_t cap)
{
	struct neg_item *p;

	if (cap > SIZE_MAX / sizeof(*p))
		return WEFT_ENOMEM;
	p = weft__realloc(s->items, cap * sizeof(*p));
	if (!p)
		return WEFT_ENOMEM;
	s->items = p;
	s->cap = cap;
	return WEFT_OK;
}

int neg_set_reserve(neg_set *s, size_t n)
{
	if (!s || s->sealed)
		return WEFT_EINVAL;
	if (n <= s->cap)
		return WEFT_OK;
	return set_grow_to(s, n);
}

int neg_set_add(neg_set *s, uint64_t ts, const uint8_t id[NEG_ID_BYTES])
{
	if (!s || !id || s->sealed || ts == NEG_TS_INFINITY)
		return WEFT_EINVAL;
	if (s->n == s->cap) {
		/* 1.5x keeps the growth slack within the memory budget. */
		size_t cap = s->cap < 256 ? 256 : s->cap + s->cap / 2;
		int rc;

		if (cap < s->cap)
			return WEFT_ENOMEM;
		rc = set_grow_to(s, cap);
		if (rc < 0)
			return rc;
	}
	s->items[s->n].ts = ts;
	memcpy(s->items[s->n].id, id, NEG_ID_BYTES);
	s->n++;
	return WEFT_OK;
}

int neg_set_add_iter(neg_set *s, neg_item_iter_fn next, void *payload)
{
	uint64_t ts;
	uint8_t id[NEG_ID_BYTES];
	int rc;

	if (!s || !next || s->sealed)
		return WEFT_EINVAL;
	for (;;) {
		rc = next(payload, &ts, id);
		if (rc == WEFT_ITEROVER)
			return WEFT_OK;
		if (rc < 0)
			return rc;
		rc = neg_set_add(s, ts, id);
		if (rc < 0)
			return rc;
	}
}

int neg_set_seal(neg_set *s)
{
	size_t i, n;

	if (!s)
		return WEFT_EINVAL;
	if (s->sealed)
		return WEFT_OK;

	/* Items usually come from the store's (hlc, id) index, already sorted. */
	for (i = 1; i < s->n; i++)
		if (item_cmp(&s->items[i - 1], &s->items[i]) > 0)
			break;
	if (i < s->n)
		sort_elems(s->items, s->n, sizeof(*s->items), item_cmp);
	for (i = 1, n = s->n ? 1 : 0; i < s->n; i++)
		if (item_cmp(&s->items[n - 1], &s->items[i]) != 0)
			s->items[n++] = s->items[i];
	s->n = n;

	/* Give back the growth slack first so peak memory stays low; a
	 * failed shrink is harmless. */
	if (s->cap > s->n) {
		struct neg_item *p = weft__realloc(s->items,
						   s->n * sizeof(*p));
		if (p) {
			s->items = p;
			s->cap = s->n;
		}
	}

	size_t nb = s->n / BLOCK + (s->n % BLOCK != 0);
	u256 *prefix = weft__malloc((nb + 1) * sizeof(*prefix));
	if (!prefix)
		return WEFT_ENOMEM;
	memset(&prefix[0], 0, sizeof(prefix[0]));
	for (size_t b = 0; b < nb; b++) {
		size_t hi = (b + 1) * BLOCK;

		prefix[b + 1] = prefix[b];
		sum_items(&prefix[b + 1], s->items, b * BLOCK,
			  hi < s->n ? hi : s->n);
	}
	s->prefix = prefix;
	s->nprefix = nb + 1;
	s->sealed = 1;
	return WEFT_OK;
}

size_t neg_set_size(const neg_set *s)
{
	return s ? s->n : 0;
}

uint64_t neg_set_ts(const neg_set *s, size_t i)
{
	return s->items[i].ts;
}

const uint8_t *neg_set_id(const neg_set *s, size_t i)
{
	return s->items[i].id;
}

static int item_bound_cmp(const struct neg_item *it, const struct bound *b)
{
	if (it->ts != b->ts)
		return it->ts < b->ts ? -1 : 1;
	return memcmp(it->id, b->id, NEG_ID_BYTES);
}

/* First index in [lo, hi) whose item is >= b, or hi. */
static size_t lower_bound(const neg_set *s, size_t lo, size_t hi,
			  const struct bound *b)
{
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (item_bound_cmp(&s->items[mid], b) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

size_t neg_set_lower_bound(const neg_set *s, uint64_t ts, const uint8_t *id)
{
	struct bound b = { .ts = ts, .len = NEG_ID_BYTES };

	if (!s || !s->sealed)
		return 0;
	if (id)
		memcpy(b.id, id, NEG_ID_BYTES);
	return lower_bound(s, 0, s->n, &b);
}

static void set_sum(u256 *sum, const neg_set *s, size_t lo, size_t hi)
{
	memset(sum, 0, sizeof(*sum));
	if (hi - lo <= BLOCK) {
		sum_items(sum, s->items, lo, hi);
	} else {
		u256 low;

		prefix_sum(sum, s, hi);
		prefix_sum(&low, s, lo);
		u256_sub(sum, &low);
	}
}

void neg_fingerprint_of_sum(uint8_t out[NEG_FINGERPRINT_BYTES],
			    const uint8_t sum[NEG_ID_BYTES], uint64_t count)
{
	uint8_t in[NEG_ID_BYTES + NEG_VARINT_MAX];
	uint8_t hash[crypto_hash_sha256_BYTES];

	memcpy(in, sum, NEG_ID_BYTES);
	size_t n = NEG_ID_BYTES + neg_varint_encode(in + NEG_ID_BYTES, count);
	crypto_hash_sha256(hash, in, n);
	memcpy(out, hash, NEG_FINGERPRINT_BYTES);
}

void neg_sum_add(uint8_t acc[NEG_ID_BYTES], const uint8_t x[NEG_ID_BYTES])
{
	u256 a, b;

	u256_from_id(&a, acc);
	u256_from_id(&b, x);
	u256_add(&a, &b);
	for (int k = 0; k < 4; k++)
		store_le64(acc + 8 * k, a.w[k]);
}

void neg_sum_sub(uint8_t acc[NEG_ID_BYTES], const uint8_t x[NEG_ID_BYTES])
{
	u256 a, b;

	u256_from_id(&a, acc);
	u256_from_id(&b, x);
	u256_sub(&a, &b);
	for (int k = 0; k < 4; k++)
		store_le64(acc + 8 * k, a.w[k]);
}

void neg_set_fingerprint(uint8_t out[NEG_FINGERPRINT_BYTES], const neg_set *s,
			 size_t lo, size_t hi)
{
	uint8_t bytes[NEG_ID_BYTES];
	u256 sum;

	set_sum(&sum, s, lo, hi);
	for (int k = 0; k < 4; k++)
		store_le64(bytes + 8 * k, sum.w[k]);
	neg_fingerprint_of_sum(out, bytes, hi - lo);
}

/* The set as reconciler storage. */
static size_t set_st_size(void *ctx)
{
	return ((const neg_set *)ctx)->n;
}

static int set_st_item(void *ctx, size_t i, uint64_t *ts, uint8_t id[NEG_ID_BYTES])
{
	const neg_set *s = ctx;

	*ts = s->items[i].ts;
	memcpy(id, s->items[i].id, NEG_ID_BYTES);
	return WEFT_OK;
}

static size_t lower_bound(const neg_set *s, size_t lo, size_t hi,
			  const struct bound *b);

static int set_st_lower_bound(void *ctx, size_t lo, size_t hi, uint64_t ts,
			      const uint8_t id[NEG_ID_BYTES], size_t *out)
{
	struct bound b = { .ts = ts, .len = NEG_ID_BYTES };

	memcpy(b.id, id, NEG_ID_BYTES);
	*out = lower_bound(ctx, lo, hi, &b);
	return WEFT_OK;
}

static int set_st_sum(void *ctx, size_t lo, size_t hi, uint8_t out[NEG_ID_BYTES])
{
	u256 sum;

	set_sum(&sum, ctx, lo, hi);
	for (int k = 0; k < 4; k++)
		store_le64(out + 8 * k, sum.w[k]);
	return WEFT_OK;
}

size_t neg_set_memory_usage(const neg_set *s)
{
	if (!s)
		return 0;
	return sizeof(*s) + s->cap * sizeof(*s->items) +
	       s->nprefix * sizeof(*s->prefix);
}

/* ----------------------------------------------------------- output buffer */

static void buf_put(struct buf *b, const void *p, size_t n)
{
	if (b->oom || n == 0)
		return;
	if (n > b->cap - b->len) {
		size_t need, cap;
		uint8_t *q;

		if (n > SIZE_MAX - b->len) {
			b->oom = 1;
			return;
		}
		need = b->len + n;
		cap = b->cap ? b->cap : 512;
		while (cap < need)
			cap = cap > SIZE_MAX / 2 ? need : cap * 2;
		q = weft__realloc(b->p, cap);
		if (!q) {
			b->oom = 1;
			return;
		}
		b->p = q;
		b->cap = cap;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static void buf_varint(struct buf *b, uint64_t v)
{
	uint8_t tmp[NEG_VARINT_MAX];

	buf_put(b, tmp, neg_varint_encode(tmp, v));
}

/* ---------------------------------------------------------- reconciler */

static int fail(neg_reconciler *r, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->err, sizeof(r->err), fmt, ap);
	va_end(ap);
	r->failed = 1;
	return rc;
}

static int proto(neg_reconciler *r, const char *fmt, ...)
{
	va_list ap;
	int n;

	n = snprintf(r->err, sizeof(r->err), "negentropy: ");
	va_start(ap, fmt);
	vsnprintf(r->err + n, sizeof(r->err) - (size_t)n, fmt, ap);
	va_end(ap);
	r->failed = 1;
	return WEFT_EPROTO;
}

static int reconciler_alloc(neg_reconciler **out, size_t frame_size_limit)
{
	neg_reconciler *r;

	if (frame_size_limit != 0 && frame_size_limit < NEG_FRAME_SIZE_MIN)
		return WEFT_EINVAL;
	if (sodium_init() < 0)
		return WEFT_ERROR;
	r = weft__calloc(1, sizeof(*r));
	if (!r)
		return WEFT_ENOMEM;
	r->limit = frame_size_limit;
	*out = r;
	return WEFT_OK;
}

int neg_reconciler_new(neg_reconciler **out, const neg_set *set, size_t begin,
		       size_t end, size_t frame_size_limit)
{
	int rc;

	if (!out)
		return WEFT_EINVAL;
	*out = NULL;
	if (!set || !set->sealed || begin > end || end > set->n)
		return WEFT_EINVAL;
	rc = reconciler_alloc(out, frame_size_limit);
	if (rc < 0)
		return rc;
	(*out)->st = (neg_storage){ (void *)set, set_st_size, set_st_item,
				    set_st_lower_bound, set_st_sum, NULL };
	(*out)->begin = begin;
	(*out)->end = end;
	return WEFT_OK;
}

int neg_reconciler_new_storage(neg_reconciler **out, const neg_storage *st,
			       size_t frame_size_limit)
{
	int rc;

	if (!out)
		return WEFT_EINVAL;
	*out = NULL;
	if (!st || !st->size || !st->item || !st->lower_bound || !st->sum)
		return WEFT_EINVAL;
	rc = reconciler_alloc(out, frame_size_limit);
	if (rc < 0)
		return rc;
	(*out)->st = *st;
	(*out)->whole = 1;
	return WEFT_OK;
}

void neg_reconciler_free(neg_reconciler *r)
{
	if (!r)
		return;
	weft__free(r->out.p);
	weft__free(r->scratch);
	weft__free(r);
}

int neg_reconciler_is_client(const neg_reconciler *r)
{
	return r && r->role == ROLE_CLIENT;
}

const char *neg_last_error(const neg_reconciler *r)
{
	return r ? r->err : "negentropy: no reconciler";
}

/* ------------------------------------------------- storage access */

static void st_failed(neg_reconciler *r, int rc)
{
	if (!r->st_rc)
		r->st_rc = rc;
}

static void st_item(neg_reconciler *r, size_t i, struct neg_item *it)
{
	int rc = r->st.item(r->st.ctx, i, &it->ts, it->id);

	if (rc < 0) {
		st_failed(r, rc);
		memset(it, 0, sizeof(*it));
	}
}

static size_t st_lower_bound(neg_reconciler *r, size_t lo, size_t hi,
			     const struct bound *b)
{
	size_t at = hi;
	int rc;

	if (b->ts == NEG_TS_INFINITY || lo >= hi)
		return hi;
	rc = r->st.lower_bound(r->st.ctx, lo, hi, b->ts, b->id, &at);
	if (rc < 0) {
		st_failed(r, rc);
		return lo;
	}
	return at < lo ? lo : at > hi ? hi : at;
}

static void st_fingerprint(neg_reconciler *r, uint8_t out[NEG_FINGERPRINT_BYTES],
			   size_t lo, size_t hi)
{
	uint8_t sum[NEG_ID_BYTES] = { 0 };
	int rc = lo < hi ? r->st.sum(r->st.ctx, lo, hi, sum) : WEFT_OK;

	if (rc < 0)
		st_failed(r, rc);
	neg_fingerprint_of_sum(out, sum, hi - lo);
}

/* After each range: storage failures, then memory. */
static int check_state(neg_reconciler *r)
{
	if (r->st_rc)
		return fail(r, r->st_rc,
			    "negentropy: reading the items to reconcile failed");
	if (r->out.oom)
		return fail(r, WEFT_ENOMEM, "negentropy: out of memory");
	return WEFT_OK;
}

static int exceeded(const neg_reconciler *r, size_t n)
{
	return r->limit && n > r->limit - FRAME_SLACK;
}

static void put_bound(neg_reconciler *r, const struct bound *b)
{
	if (b->ts == NEG_TS_INFINITY) {
		buf_varint(&r->out, 0);
		r->ts_out = NEG_TS_INFINITY;
	} else {
		/* Bounds are written in ascending order: the delta is >= 0. */
		buf_varint(&r->out, b->ts - r->ts_out + 1);
		r->ts_out = b->ts;
	}
	buf_varint(&r->out, b->len);
	buf_put(&r->out, b->id, b->len);
}

/* Adjacent Skips are merged: one is written only before a non-Skip range. */
static void flush_skip(neg_reconciler *r, int *skip, const struct bound *prev)
{
	if (!*skip)
		return;
	put_bound(r, prev);
	buf_varint(&r->out, MODE_SKIP);
	*skip = 0;
}

static void put_fingerprint(neg_reconciler *r, const struct bound *b,
			    size_t lo, size_t hi)
{
	uint8_t fp[NEG_FINGERPRINT_BYTES];

	st_fingerprint(r, fp, lo, hi);
	put_bound(r, b);
	buf_varint(&r->out, MODE_FINGERPRINT);
	buf_put(&r->out, fp, sizeof(fp));
}

/* The shortest bound that separates prev < cur. */
static void minimal_bound(struct bound *b, const struct neg_item *prev,
			  const struct neg_item *cur)
{
	size_t k = 0;

	memset(b->id, 0, sizeof(b->id));
	b->ts = cur->ts;
	b->len = 0;
	if (cur->ts != prev->ts)
		return;
	/* Items are distinct, so they differ within 32 bytes. */
	while (k < NEG_ID_BYTES - 1 && cur->id[k] == prev->id[k])
		k++;
	b->len = k + 1;
	memcpy(b->id, cur->id, b->len);
}

static void item_bound(struct bound *b, const struct neg_item *it)
{
	b->ts = it->ts;
	memcpy(b->id, it->id, NEG_ID_BYTES);
	b->len = NEG_ID_BYTES;
}

static void put_idlist(neg_reconciler *r, const struct bound *upper, size_t lo,
		       size_t hi)
{
	struct neg_item it;

	put_bound(r, upper);
	buf_varint(&r->out, MODE_IDLIST);
	buf_varint(&r->out, hi - lo);
	for (size_t i = lo; i < hi && !r->st_rc; i++) {
		st_item(r, i, &it);
		buf_put(&r->out, it.id, NEG_ID_BYTES);
	}
}

/*
 * Storage with cheap boundaries: split [lo, hi) only there, each split at
 * the boundary nearest to where an even split would put it. 0 if the range
 * holds no boundary.
 */
static int split_on_boundaries(neg_reconciler *r, size_t lo, size_t hi,
			       const struct bound *upper)
{
	size_t n = hi - lo, per = n / BUCKETS, extra = n % BUCKETS;
	size_t start = lo, cur = lo, at;
	uint64_t ts;
	int found = 0;

	for (size_t i = 0; i + 1 < BUCKETS; i++) {
		cur += per + (i < extra);
		if (!r->st.boundary(r->st.ctx, lo, hi, cur, &at, &ts))
			continue;
		if (at <= start || at >= hi)
			continue;
		struct bound b = { .ts = ts, .len = 0 };

		put_fingerprint(r, &b, start, at);
		start = at;
		found = 1;
	}
	if (found)
		put_fingerprint(r, upper, start, hi);
	return found;
}

static void split_range(neg_reconciler *r, size_t lo, size_t hi,
			const struct bound *upper)
{
	size_t n = hi - lo;

	if (n < 2 * BUCKETS) {
		put_idlist(r, upper, lo, hi);
		return;
	}
	if (r->st.boundary && split_on_boundaries(r, lo, hi, upper))
		return;

	size_t per = n / BUCKETS, extra = n % BUCKETS, cur = lo;
	for (size_t i = 0; i < BUCKETS; i++) {
		size_t start = cur;
		struct bound b;

		cur += per + (i < extra);
		if (cur == hi) {
			b = *upper;
		} else {
			struct neg_item a, c;

			st_item(r, cur - 1, &a);
			st_item(r, cur, &c);
			minimal_bound(&b, &a, &c);
		}
		put_fingerprint(r, &b, start, cur);
	}
}

static void reset_output(neg_reconciler *r)
{
	r->out.len = 0;
	r->out.oom = 0;
	r->ts_out = 0;
	r->st_rc = 0;
	r->err[0] = '\0';
	if (r->whole) {
		r->begin = 0;
		r->end = r->st.size(r->st.ctx);
	}
}

int neg_reconciler_initiate(const uint8_t **out, size_t *out_len,
			    neg_reconciler *r)
{
	static const struct bound inf = { .ts = NEG_TS_INFINITY };
	uint8_t v = NEG_PROTOCOL_VERSION;
	int rc;

	if (!out || !out_len || !r)
		return WEFT_EINVAL;
	*out = NULL;
	*out_len = 0;
	if (r->failed) {
		snprintf(r->err, sizeof(r->err),
			 "negentropy: reconciler unusable after an earlier error");
		return WEFT_EINVAL;
	}
	if (r->role != ROLE_NONE) {
		snprintf(r->err, sizeof(r->err), "negentropy: %s",
			 r->role == ROLE_CLIENT ? "already initiated"
						: "a server cannot initiate");
		return WEFT_EINVAL;
	}
	reset_output(r);
	r->role = ROLE_CLIENT;
	buf_put(&r->out, &v, 1);
	split_range(r, r->begin, r->end, &inf);
	if ((rc = check_state(r)) < 0)
		return rc;
	*out = r->out.p;
	*out_len = r->out.len;
	return WEFT_OK;
}

static int read_varint(neg_reconciler *r, struct reader *rd, uint64_t *v,
		       const char *what)
{
	size_t used;
	int rc = varint_decode(v, &used, rd->p + rd->pos, rd->len - rd->pos);

	switch (rc) {
	case VARINT_OK:
		rd->pos += used;
		return WEFT_OK;
	case VARINT_TRUNCATED:
		return proto(r, "message truncated in %s at byte %zu", what,
			     rd->pos);
	case VARINT_NONSHORTEST:
		return proto(r, "%s varint not in shortest form at byte %zu",
			     what, rd->pos);
	default:
		return proto(r, "%s varint wider than 64 bits at byte %zu",
			     what, rd->pos);
	}
}

static int read_bound(neg_reconciler *r, struct reader *rd, struct bound *b,
		      const struct bound *prev)
{
	size_t at = rd->pos;
	uint64_t enc, len;
	int rc;

	rc = read_varint(r, rd, &enc, "bound timestamp");
	if (rc < 0)
		return rc;
	if (enc == 0) {
		b->ts = NEG_TS_INFINITY;
	} else {
		/* Finite bounds must stay below infinity. */
		if (enc - 1 >= NEG_TS_INFINITY - prev->ts)
			return proto(r, "bound timestamp past infinity at byte %zu",
				     at);
		b->ts = prev->ts + (enc - 1);
	}
	rc = read_varint(r, rd, &len, "bound id length");
	if (rc < 0)
		return rc;
	if (len > NEG_ID_BYTES)
		return proto(r, "bound id prefix of %llu bytes (max 32) at byte %zu",
			     (unsigned long long)len, at);
	if (len > rd->len - rd->pos)
		return proto(r, "message truncated in bound id at byte %zu",
			     rd->pos);
	memset(b->id, 0, sizeof(b->id));
	memcpy(b->id, rd->p + rd->pos, (size_t)len);
	b->len = (size_t)len;
	rd->pos += (size_t)len;
	if (b->ts == NEG_TS_INFINITY && len != 0)
		return proto(r, "bound past infinity (id prefix on the infinity bound) at byte %zu",
			     at);
	/* Equal bounds (an empty range) are tolerated: the reference can
	 * emit one when a frame fills up. */
	if (b->ts == prev->ts && memcmp(b->id, prev->id, NEG_ID_BYTES) < 0)
		return proto(r, "range bounds not ascending at byte %zu", at);
	return WEFT_OK;
}

static int grow_scratch(neg_reconciler *r, size_t n)
{
	uint8_t *p;

	if (n <= r->scratch_cap)
		return WEFT_OK;
	p = weft__realloc(r->scratch, n);
	if (!p)
		return WEFT_ENOMEM;
	r->scratch = p;
	r->scratch_cap = n;
	return WEFT_OK;
}

static int report(neg_reconciler *r, neg_diff_cb cb, void *payload,
		  enum neg_diff_kind kind, const uint8_t *id)
{
	if (cb && cb(payload, kind, id) != 0)
		return fail(r, WEFT_EUSER,
			    "negentropy: the difference callback stopped the reconciliation");
	return WEFT_OK;
}

/* Client side of an IdList: ours minus theirs is "have", the reverse "need". */
static int idlist_diff(neg_reconciler *r, const uint8_t *ids, size_t n,
		       size_t lo, size_t hi, neg_diff_cb cb, void *payload)
{
	uint8_t *sorted, *seen;
	size_t m = 0;
	int rc;

	if (n) {
		/* n <= message length / 32, so this cannot overflow. */
		rc = grow_scratch(r, n * (NEG_ID_BYTES + 1));
		if (rc < 0)
			return fail(r, rc, "negentropy: out of memory");
		sorted = r->scratch;
		seen = r->scratch + n * NEG_ID_BYTES;
		memcpy(sorted, ids, n * NEG_ID_BYTES);
		sort_elems(sorted, n, NEG_ID_BYTES, id_cmp);
		for (size_t i = 0; i < n; i++)
			if (m == 0 || memcmp(sorted + (m - 1) * NEG_ID_BYTES,
					     sorted + i * NEG_ID_BYTES,
					     NEG_ID_BYTES) != 0) {
				memmove(sorted + m * NEG_ID_BYTES,
					sorted + i * NEG_ID_BYTES, NEG_ID_BYTES);
				m++;
			}
		memset(seen, 0, m);
	} else {
		sorted = seen = NULL;
	}

	for (size_t i = lo; i < hi; i++) {
		struct neg_item it;
		size_t a = 0, b = m;

		st_item(r, i, &it);
		if ((rc = check_state(r)) < 0)
			return rc;
		while (a < b) {
			size_t mid = a + (b - a) / 2;

			if (memcmp(sorted + mid * NEG_ID_BYTES, it.id,
				   NEG_ID_BYTES) < 0)
				a = mid + 1;
			else
				b = mid;
		}
		if (a < m && memcmp(sorted + a * NEG_ID_BYTES, it.id,
				    NEG_ID_BYTES) == 0) {
			seen[a] = 1;
		} else {
			rc = report(r, cb, payload, NEG_HAVE, it.id);
			if (rc < 0)
				return rc;
		}
	}
	for (size_t j = 0; j < m; j++) {
		if (seen[j])
			continue;
		rc = report(r, cb, payload, NEG_NEED, sorted + j * NEG_ID_BYTES);
		if (rc < 0)
			return rc;
	}
	return WEFT_OK;
}

/*
 * Server side of an IdList: our ids in [lower, *upper), as many as fit the
 * frame (like the reference, counting from the output before this range).
 * If cut short, the range ends at the first id left out (a full bound),
 * *upper moves there and 1 is returned.
 */
static int reply_idlist(neg_reconciler *r, const struct bound *cur,
			size_t lower, size_t *upper, size_t mark)
{
	size_t k = *upper - lower;
	struct bound end = *cur;
	int cut = 0;

	if (r->limit) {
		size_t room = r->limit - FRAME_SLACK;

		if (mark > room)
			k = 0;
		else if ((room - mark) / NEG_ID_BYTES + 1 < k)
			k = (room - mark) / NEG_ID_BYTES + 1;
		if (k < *upper - lower) {
			struct neg_item it;

			st_item(r, lower + k, &it);
			item_bound(&end, &it);
			*upper = lower + k;
			cut = 1;
		}
	}
	put_idlist(r, &end, lower, *upper);
	return cut;
}

int neg_reconciler_reconcile(const uint8_t **out, size_t *out_len,
			     neg_reconciler *r, const uint8_t *msg,
			     size_t msg_len, neg_diff_cb cb, void *payload)
{
	static const struct bound inf = { .ts = NEG_TS_INFINITY };
	struct reader rd = { msg, msg_len, 0 };
	struct bound prev, cur;
	size_t prev_idx;
	uint8_t v = NEG_PROTOCOL_VERSION;
	int skip = 0, rc;

	if (!out || !out_len || !r || (!msg && msg_len))
		return WEFT_EINVAL;
	*out = NULL;
	*out_len = 0;
	if (r->failed) {
		snprintf(r->err, sizeof(r->err),
			 "negentropy: reconciler unusable after an earlier error");
		return WEFT_EINVAL;
	}
	reset_output(r);
	if (r->role == ROLE_NONE)
		r->role = ROLE_SERVER;

	if (msg_len == 0)
		return proto(r, "empty message (no version byte)");
	if (msg[0] < 0x60 || msg[0] > 0x6f)
		return proto(r, "invalid protocol version byte 0x%02x",
			     msg[0]);
	buf_put(&r->out, &v, 1);
	if (r->out.oom)
		return fail(r, WEFT_ENOMEM, "negentropy: out of memory");
	if (msg[0] != NEG_PROTOCOL_VERSION) {
		if (r->role == ROLE_CLIENT)
			return fail(r, WEFT_EVERSION,
				    "negentropy: peer speaks unsupported protocol version 0x%02x",
				    msg[0]);
		/* Tell the client which version we speak. */
		*out = r->out.p;
		*out_len = r->out.len;
		return WEFT_OK;
	}
	rd.pos = 1;

	memset(&prev, 0, sizeof(prev));
	prev_idx = r->begin;
	while (rd.pos < rd.len) {
		size_t at = rd.pos, lower, upper;
		size_t mark = r->out.len;
		uint64_t mark_ts = r->ts_out;
		int mark_skip = skip, kept = 0, cut = 0;
		uint64_t mode;

		if (prev.ts == NEG_TS_INFINITY)
			return proto(r, "range after the infinity bound at byte %zu",
				     at);
		rc = read_bound(r, &rd, &cur, &prev);
		if (rc < 0)
			return rc;
		rc = read_varint(r, &rd, &mode, "mode");
		if (rc < 0)
			return rc;
		lower = prev_idx;
		upper = st_lower_bound(r, lower, r->end, &cur);
		if ((rc = check_state(r)) < 0)
			return rc;

		switch (mode) {
		case MODE_SKIP:
			skip = 1;
			break;
		case MODE_FINGERPRINT: {
			uint8_t ours[NEG_FINGERPRINT_BYTES];

			if (rd.len - rd.pos < NEG_FINGERPRINT_BYTES)
				return proto(r, "message truncated in fingerprint at byte %zu",
					     rd.pos);
			st_fingerprint(r, ours, lower, upper);
			if (memcmp(ours, rd.p + rd.pos, sizeof(ours)) == 0) {
				skip = 1;
			} else {
				flush_skip(r, &skip, &prev);
				split_range(r, lower, upper, &cur);
			}
			rd.pos += NEG_FINGERPRINT_BYTES;
			break;
		}
		case MODE_IDLIST: {
			uint64_t n;
			const uint8_t *ids;

			rc = read_varint(r, &rd, &n, "id count");
			if (rc < 0)
				return rc;
			if (n > (rd.len - rd.pos) / NEG_ID_BYTES)
				return proto(r, "id list of %llu ids longer than the message at byte %zu",
					     (unsigned long long)n, at);
			ids = rd.p + rd.pos;
			rd.pos += (size_t)n * NEG_ID_BYTES;
			if (r->role == ROLE_CLIENT) {
				rc = idlist_diff(r, ids, (size_t)n, lower, upper,
						 cb, payload);
				if (rc < 0)
					return rc;
				skip = 1;
				break;
			}

			flush_skip(r, &skip, &prev);
			cut = reply_idlist(r, &cur, lower, &upper, mark);
			kept = 1;
			break;
		}
		default:
			return proto(r, "unknown mode %llu at byte %zu",
				     (unsigned long long)mode, at);
		}
		if ((rc = check_state(r)) < 0)
			return rc;

		if (cut || exceeded(r, r->out.len)) {
			if (!kept) {
				/* Drop this range's reply and fingerprint it with
				 * everything after it instead, so that the closing
				 * range's fingerprint covers exactly its items. */
				r->out.len = mark;
				r->ts_out = mark_ts;
				skip = mark_skip;
				flush_skip(r, &skip, &prev);
				upper = lower;
			}
			put_fingerprint(r, &inf, upper, r->end);
			if ((rc = check_state(r)) < 0)
				return rc;
			break;
		}
		prev_idx = upper;
		prev = cur;
	}

	/* A trailing Skip is implied. */
	if (r->role == ROLE_CLIENT && r->out.len == 1)
		return WEFT_OK;
	*out = r->out.p;
	*out_len = r->out.len;
	return WEFT_OK;
}
