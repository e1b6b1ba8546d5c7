/* Negentropy storage over the store's reconciliation buckets; see neg_view.h. */
#include "sync/neg_view.h"

#include <string.h>

#include "core/alloc.h"
#include "core/buckets.h"
#include "core/store.h"

struct vitem {
	uint64_t ts;
	uint8_t id[NEG_ID_BYTES];
};

struct cache {
	size_t seg; /* SIZE_MAX: empty */
	struct vitem *items;
	size_t n, cap;
	uint64_t used; /* for LRU */
};

struct neg_view {
	weft_db *db;
	char **scopes; /* NULL: all */
	size_t nscopes;
	/* Segment k holds the items with lo[k] <= hlc < lo[k + 1]; it has
	 * pc[k + 1] - pc[k] items whose ids add up to ps[k + 1] - ps[k]. */
	uint64_t *lo, *pc;
	uint8_t (*ps)[NEG_ID_BYTES];
	size_t nseg, cap;
	size_t seg_items; /* a segment closes at this many items */
	size_t load_max;  /* bigger segments are split before loading */
	/* building: the cell being summed */
	uint64_t cell, cell_count;
	uint8_t cell_sum[NEG_ID_BYTES];
	int have_cell;
	struct cache c[2];
	uint64_t tick;
};

int neg_view_new(neg_view **out, weft_db *db, const char *const *scopes, size_t n)
{
	neg_view *v = weft__calloc(1, sizeof(*v));
	*out = NULL;
	if (!v)
		return WEFT_ENOMEM;
	v->db = db;
	v->seg_items = NEG_VIEW_SEGMENT;
	v->load_max = 64 * NEG_VIEW_SEGMENT;
	v->c[0].seg = v->c[1].seg = SIZE_MAX;
	if (scopes) {
		v->scopes = weft__calloc(n ? n : 1, sizeof(char *));
		if (!v->scopes) {
			neg_view_free(v);
			return WEFT_ENOMEM;
		}
		v->nscopes = n;
		for (size_t i = 0; i < n; i++)
			if (!(v->scopes[i] = weft__strdup(scopes[i]))) {
				neg_view_free(v);
				return WEFT_ENOMEM;
			}
	}
	*out = v;
	return WEFT_OK;
}

void neg_view_free(neg_view *v)
{
	if (!v)
		return;
	if (v->scopes)
		for (size_t i = 0; i < v->nscopes; i++)
			weft__free(v->scopes[i]);
	weft__free(v->scopes);
	weft__free(v->lo);
	weft__free(v->pc);
	weft__free(v->ps);
	weft__free(v->c[0].items);
	weft__free(v->c[1].items);
	weft__free(v);
}

void neg_view_set_segment_items(neg_view *v, size_t n)
{
	v->seg_items = n ? n : 1;
	v->load_max = 64 * v->seg_items;
}

size_t neg_view_size(const neg_view *v)
{
	return v->nseg ? (size_t)v->pc[v->nseg] : 0;
}

size_t neg_view_memory_usage(const neg_view *v)
{
	return sizeof(*v) + v->cap * (2 * sizeof(uint64_t) + NEG_ID_BYTES) +
	       (v->c[0].cap + v->c[1].cap) * sizeof(struct vitem);
}

/* ------------------------------------------------------- summaries */

/* Room for need prefix entries (segments + 1). */
static int grow_to(neg_view *v, size_t need)
{
	if (need <= v->cap)
		return WEFT_OK;
	size_t cap = v->cap ? v->cap : 64;
	while (cap < need)
		cap *= 2;
	uint64_t *lo = weft__realloc(v->lo, cap * sizeof(*lo));
	if (!lo)
		return WEFT_ENOMEM;
	v->lo = lo;
	uint64_t *pc = weft__realloc(v->pc, cap * sizeof(*pc));
	if (!pc)
		return WEFT_ENOMEM;
	v->pc = pc;
	uint8_t(*ps)[NEG_ID_BYTES] = weft__realloc(v->ps, cap * sizeof(*ps));
	if (!ps)
		return WEFT_ENOMEM;
	v->ps = ps;
	v->cap = cap;
	return WEFT_OK;
}

/* Closes the cell being summed: into the last segment while that one is
 * small, else into a new one. */
static int close_cell(neg_view *v)
{
	if (!v->have_cell)
		return WEFT_OK;
	v->have_cell = 0;
	if (!v->nseg || v->pc[v->nseg] - v->pc[v->nseg - 1] >= v->seg_items) {
		if (grow_to(v, v->nseg + 2) < 0)
			return err_set(&v->db->err, WEFT_ENOMEM, "out of memory reading reconciliation buckets");
		v->lo[v->nseg] = v->cell << BUCKET_SHIFT;
		if (!v->nseg) {
			v->pc[0] = 0;
			memset(v->ps[0], 0, NEG_ID_BYTES);
		}
		v->nseg++;
		v->pc[v->nseg] = v->pc[v->nseg - 1];
		memcpy(v->ps[v->nseg], v->ps[v->nseg - 1], NEG_ID_BYTES);
	}
	v->pc[v->nseg] += v->cell_count;
	neg_sum_add(v->ps[v->nseg], v->cell_sum);
	return WEFT_OK;
}

static int on_bucket(void *payload, uint64_t cell, uint64_t count, const unsigned char sum[32])
{
	neg_view *v = payload;
	if (v->have_cell && cell < v->cell)
		return err_set(&v->db->err, WEFT_ECORRUPT, "a reconciliation bucket lies above the watermark; "
		               "run `weft verify`, which rebuilds them");
	if (v->have_cell && cell != v->cell) {
		int rc = close_cell(v);
		if (rc < 0)
			return rc;
	}
	if (!v->have_cell) {
		v->have_cell = 1;
		v->cell = cell;
		v->cell_count = 0;
		memset(v->cell_sum, 0, NEG_ID_BYTES);
	}
	v->cell_count += count;
	neg_sum_add(v->cell_sum, sum);
	return 0;
}

/* An event of a cell at or above the watermark, read from the index. */
static int on_tail(void *payload, uint64_t hlc, const unsigned char id[32])
{
	return on_bucket(payload, hlc >> BUCKET_SHIFT, 1, id);
}

int neg_view_refresh(neg_view *v)
{
	uint64_t w;
	v->nseg = 0;
	v->have_cell = 0;
	v->c[0].seg = v->c[1].seg = SIZE_MAX;
	int rc = buckets_watermark(v->db, &w);
	if (rc == WEFT_OK)
		rc = buckets_scan(v->db, (const char *const *)v->scopes, v->nscopes, on_bucket, v);
	if (rc == WEFT_OK && w <= (uint64_t)STORE_HLC_ALL_HI >> BUCKET_SHIFT)
		rc = store_scan_items(v->db, (const char *const *)v->scopes, v->nscopes, w << BUCKET_SHIFT,
		                      STORE_HLC_ALL_HI, on_tail, v);
	if (rc == WEFT_OK)
		rc = close_cell(v);
	if (rc < 0)
		v->nseg = 0;
	return rc;
}

/* ----------------------------------------------------- loading items */

typedef struct load_ctx {
	struct cache *c;
	int oom;
} load_ctx;

static int on_item(void *payload, uint64_t hlc, const unsigned char id[32])
{
	load_ctx *l = payload;
	struct cache *c = l->c;
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 1024;
		struct vitem *p = weft__realloc(c->items, cap * sizeof(*p));
		if (!p) {
			l->oom = 1;
			return 1;
		}
		c->items = p;
		c->cap = cap;
	}
	c->items[c->n].ts = hlc;
	memcpy(c->items[c->n].id, id, NEG_ID_BYTES);
	c->n++;
	return 0;
}

static int corrupt(neg_view *v, uint64_t got, uint64_t want)
{
	return err_set(&v->db->err, WEFT_ECORRUPT, "the store's reconciliation buckets disagree with its events "
	               "(%llu events stored where the buckets count %llu); run `weft verify`, which rebuilds them",
	               (unsigned long long)got, (unsigned long long)want);
}

/* The items of segment k, read from the store and checked against its
 * bucket summaries. */
static int load(neg_view *v, size_t k, const struct cache **out)
{
	struct cache *c;
	for (int i = 0; i < 2; i++)
		if (v->c[i].seg == k) {
			v->c[i].used = ++v->tick;
			*out = &v->c[i];
			return WEFT_OK;
		}
	c = v->c[0].used <= v->c[1].used ? &v->c[0] : &v->c[1];
	c->seg = SIZE_MAX;
	c->n = 0;
	load_ctx l = {c, 0};
	uint64_t hi = k + 1 < v->nseg ? v->lo[k + 1] - 1 : STORE_HLC_ALL_HI;
	int rc = store_scan_items(v->db, (const char *const *)v->scopes, v->nscopes, v->lo[k], hi, on_item, &l);
	if (l.oom)
		return err_set(&v->db->err, WEFT_ENOMEM, "out of memory reading events to reconcile");
	if (rc < 0)
		return rc;
	uint8_t sum[NEG_ID_BYTES] = {0};
	for (size_t i = 0; i < c->n; i++)
		neg_sum_add(sum, c->items[i].id);
	uint8_t want[NEG_ID_BYTES];
	memcpy(want, v->ps[k + 1], NEG_ID_BYTES);
	neg_sum_sub(want, v->ps[k]);
	if (c->n != v->pc[k + 1] - v->pc[k] || memcmp(sum, want, NEG_ID_BYTES) != 0)
		return corrupt(v, c->n, v->pc[k + 1] - v->pc[k]);
	c->seg = k;
	c->used = ++v->tick;
	*out = c;
	return WEFT_OK;
}

/* ------------------------------------------------- big segments */

struct sub {
	uint64_t lo, count;
	uint8_t sum[NEG_ID_BYTES];
};

typedef struct refine_ctx {
	neg_view *v;
	struct sub *subs;
	size_t n, cap;
	uint64_t first, last_ts;
	int oom;
} refine_ctx;

static int on_refine(void *payload, uint64_t hlc, const unsigned char id[32])
{
	refine_ctx *r = payload;
	if (!r->n || (r->subs[r->n - 1].count >= r->v->seg_items && hlc != r->last_ts)) {
		if (r->n == r->cap) {
			size_t cap = r->cap ? r->cap * 2 : 64;
			struct sub *p = weft__realloc(r->subs, cap * sizeof(*p));
			if (!p) {
				r->oom = 1;
				return 1;
			}
			r->subs = p;
			r->cap = cap;
		}
		memset(&r->subs[r->n], 0, sizeof(r->subs[0]));
		r->subs[r->n].lo = r->n ? hlc : r->first;
		r->n++;
	}
	r->subs[r->n - 1].count++;
	neg_sum_add(r->subs[r->n - 1].sum, id);
	r->last_ts = hlc;
	return 0;
}

/*
 * A segment too big to load (a burst in one cell) is split, by one pass
 * over its items, into segments of about seg_items at stamp changes. Ranks
 * stay the same; segment indices after k move.
 */
static int fit(neg_view *v, size_t k)
{
	if (v->pc[k + 1] - v->pc[k] <= v->load_max)
		return WEFT_OK;
	refine_ctx r = {v, NULL, 0, 0, v->lo[k], 0, 0};
	uint64_t hi = k + 1 < v->nseg ? v->lo[k + 1] - 1 : STORE_HLC_ALL_HI;
	int rc = store_scan_items(v->db, (const char *const *)v->scopes, v->nscopes, v->lo[k], hi, on_refine, &r);
	if (r.oom)
		rc = err_set(&v->db->err, WEFT_ENOMEM, "out of memory reading events to reconcile");
	uint64_t total = 0;
	uint8_t sum[NEG_ID_BYTES] = {0}, want[NEG_ID_BYTES];
	for (size_t j = 0; rc == WEFT_OK && j < r.n; j++) {
		total += r.subs[j].count;
		neg_sum_add(sum, r.subs[j].sum);
	}
	memcpy(want, v->ps[k + 1], NEG_ID_BYTES);
	neg_sum_sub(want, v->ps[k]);
	if (rc == WEFT_OK && (total != v->pc[k + 1] - v->pc[k] || memcmp(sum, want, NEG_ID_BYTES) != 0))
		rc = corrupt(v, total, v->pc[k + 1] - v->pc[k]);
	if (rc == WEFT_OK && r.n > 1 && grow_to(v, v->nseg + r.n + 1) < 0)
		rc = err_set(&v->db->err, WEFT_ENOMEM, "out of memory reading events to reconcile");
	if (rc == WEFT_OK && r.n > 1) {
		size_t d = r.n - 1;
		memmove(&v->lo[k + 1 + d], &v->lo[k + 1], (v->nseg - k - 1) * sizeof(v->lo[0]));
		memmove(&v->pc[k + 1 + d], &v->pc[k + 1], (v->nseg - k) * sizeof(v->pc[0]));
		memmove(&v->ps[k + 1 + d], &v->ps[k + 1], (v->nseg - k) * sizeof(v->ps[0]));
		for (size_t j = 0; j < r.n; j++)
			v->lo[k + j] = r.subs[j].lo;
		for (size_t j = 0; j + 1 < r.n; j++) {
			v->pc[k + j + 1] = v->pc[k + j] + r.subs[j].count;
			memcpy(v->ps[k + j + 1], v->ps[k + j], NEG_ID_BYTES);
			neg_sum_add(v->ps[k + j + 1], r.subs[j].sum);
		}
		v->nseg += d;
		v->c[0].seg = v->c[1].seg = SIZE_MAX;
	}
	weft__free(r.subs);
	return rc;
}

/* The segment holding rank i (i < size). */
static size_t seg_of_rank(const neg_view *v, size_t i)
{
	for (int j = 0; j < 2; j++) {
		size_t k = v->c[j].seg;
		if (k != SIZE_MAX && v->pc[k] <= i && i < v->pc[k + 1])
			return k;
	}
	size_t a = 0, b = v->nseg; /* last k with pc[k] <= i */
	while (b - a > 1) {
		size_t m = a + (b - a) / 2;
		if (v->pc[m] <= i)
			a = m;
		else
			b = m;
	}
	return a;
}

/* ------------------------------------------------------ storage ops */

static size_t op_size(void *ctx)
{
	return neg_view_size(ctx);
}

static int op_item(void *ctx, size_t i, uint64_t *ts, uint8_t id[NEG_ID_BYTES])
{
	neg_view *v = ctx;
	const struct cache *c;
	if (i >= neg_view_size(v))
		return WEFT_EINVAL;
	size_t k = seg_of_rank(v, i);
	int rc = fit(v, k);
	if (rc < 0)
		return rc;
	k = seg_of_rank(v, i);
	if ((rc = load(v, k, &c)) < 0)
		return rc;
	const struct vitem *it = &c->items[i - v->pc[k]];
	*ts = it->ts;
	memcpy(id, it->id, NEG_ID_BYTES);
	return WEFT_OK;
}

static int vitem_cmp(const struct vitem *it, uint64_t ts, const uint8_t id[NEG_ID_BYTES])
{
	if (it->ts != ts)
		return it->ts < ts ? -1 : 1;
	return memcmp(it->id, id, NEG_ID_BYTES);
}

/* The last segment starting at or below ts (ts >= lo[0]). */
static size_t seg_of_ts(const neg_view *v, uint64_t ts)
{
	size_t a = 0, b = v->nseg;
	while (b - a > 1) {
		size_t m = a + (b - a) / 2;
		if (v->lo[m] <= ts)
			a = m;
		else
			b = m;
	}
	return a;
}

static int op_lower_bound(void *ctx, size_t lo, size_t hi, uint64_t ts, const uint8_t id[NEG_ID_BYTES],
                          size_t *out)
{
	static const uint8_t zero[NEG_ID_BYTES];
	neg_view *v = ctx;
	int at_start = memcmp(id, zero, NEG_ID_BYTES) == 0;
	size_t r;
	if (!v->nseg || ts < v->lo[0]) {
		r = 0;
	} else {
		size_t a = seg_of_ts(v, ts);
		if (!(at_start && ts == v->lo[a])) {
			int rc = fit(v, a);
			if (rc < 0)
				return rc;
			a = seg_of_ts(v, ts);
		}
		if (at_start && ts == v->lo[a]) {
			r = v->pc[a];
		} else {
			const struct cache *c;
			int rc = load(v, a, &c);
			if (rc < 0)
				return rc;
			size_t x = 0, y = c->n;
			while (x < y) {
				size_t m = x + (y - x) / 2;
				if (vitem_cmp(&c->items[m], ts, id) < 0)
					x = m + 1;
				else
					y = m;
			}
			r = v->pc[a] + x;
		}
	}
	*out = r < lo ? lo : r > hi ? hi : r;
	return WEFT_OK;
}

/* Sum of the ids of ranks [0, i). */
static int prefix(neg_view *v, size_t i, uint8_t out[NEG_ID_BYTES])
{
	if (i >= neg_view_size(v)) {
		memcpy(out, v->nseg ? v->ps[v->nseg] : (const uint8_t[NEG_ID_BYTES]){0}, NEG_ID_BYTES);
		return WEFT_OK;
	}
	size_t k = seg_of_rank(v, i);
	if (i == v->pc[k]) {
		memcpy(out, v->ps[k], NEG_ID_BYTES);
		return WEFT_OK;
	}
	int rc = fit(v, k);
	if (rc < 0)
		return rc;
	k = seg_of_rank(v, i);
	if (i == v->pc[k]) {
		memcpy(out, v->ps[k], NEG_ID_BYTES);
		return WEFT_OK;
	}
	const struct cache *c;
	if ((rc = load(v, k, &c)) < 0)
		return rc;
	size_t off = i - v->pc[k];
	if (off <= c->n / 2) {
		memcpy(out, v->ps[k], NEG_ID_BYTES);
		for (size_t j = 0; j < off; j++)
			neg_sum_add(out, c->items[j].id);
	} else {
		memcpy(out, v->ps[k + 1], NEG_ID_BYTES);
		for (size_t j = off; j < c->n; j++)
			neg_sum_sub(out, c->items[j].id);
	}
	return WEFT_OK;
}

static int op_sum(void *ctx, size_t lo, size_t hi, uint8_t out[NEG_ID_BYTES])
{
	neg_view *v = ctx;
	uint8_t low[NEG_ID_BYTES];
	int rc = prefix(v, hi, out);
	if (rc == WEFT_OK)
		rc = prefix(v, lo, low);
	if (rc < 0)
		return rc;
	neg_sum_sub(out, low);
	return WEFT_OK;
}

/* Segment starts are boundaries: the items before have smaller stamps. */
static int op_boundary(void *ctx, size_t lo, size_t hi, size_t target, size_t *at, uint64_t *ts)
{
	neg_view *v = ctx;
	if (v->nseg < 2)
		return 0;
	/* Boundaries are pc[1..nseg-1]; find those in (lo, hi). */
	size_t a = 1, b = v->nseg; /* first k >= 1 with pc[k] > lo */
	while (a < b) {
		size_t m = a + (b - a) / 2;
		if (v->pc[m] <= lo)
			a = m + 1;
		else
			b = m;
	}
	size_t kmin = a;
	a = 1, b = v->nseg; /* first k >= 1 with pc[k] >= hi */
	while (a < b) {
		size_t m = a + (b - a) / 2;
		if (v->pc[m] < hi)
			a = m + 1;
		else
			b = m;
	}
	if (a == kmin)
		return 0;
	size_t kmax = a - 1;
	a = kmin, b = kmax + 1; /* first k in [kmin, kmax] with pc[k] >= target */
	while (a < b) {
		size_t m = a + (b - a) / 2;
		if (v->pc[m] < target)
			a = m + 1;
		else
			b = m;
	}
	size_t k = a > kmax ? kmax : a;
	/* pc[k - 1] < target <= pc[k] (or every boundary is below it). */
	if (k > kmin && v->pc[k] >= target && target - v->pc[k - 1] < v->pc[k] - target)
		k--;
	*at = (size_t)v->pc[k];
	*ts = v->lo[k];
	return 1;
}

void neg_view_storage(neg_view *v, neg_storage *st)
{
	*st = (neg_storage){v, op_size, op_item, op_lower_bound, op_sum, op_boundary};
}
