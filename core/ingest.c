/* Ingest of remote events: checks on persistent verifier threads, then one
 * transaction per batch (core/ingest.h). */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/hlc.h"
#include "core/ingest.h"
#include "core/store.h"
#include "platform/platform.h"

/* Events per unit of work handed to a thread. */
#define CHUNK 16
/* Smaller batches are checked by the caller alone (no hand-off). */
#define PARALLEL_MIN 32
#define POOL_MAX 8

/*
 * One thread per processor: the caller's thread does the serial work
 * (storing, sending) and keeps its processor, so one thread stays parked
 * except while the caller blocks in a commit (fsync), when it is lent the
 * caller's processor.
 */
struct ingest_pool {
	plat_mutex *m;
	plat_cond *work; /* a job was queued, a processor lent, or stop */
	plat_cond *done; /* a chunk was checked */
	plat_thread *t[POOL_MAX];
	int nt;
	struct worker_arg *args;
	int stop;
	int lent;                /* callers blocked in a commit */
	ingest_job *head, *tail; /* jobs with chunks nobody has taken yet */
};

typedef struct worker_arg {
	struct ingest_pool *p;
	int spare; /* runs only on a lent processor */
} worker_arg;

struct ingest_job {
	weft_db *db;
	struct ingest_pool *pool; /* NULL: checked by ingest_finish alone */
	size_t n;
	unsigned char *copy;      /* the events' bytes, owned */
	weft_bytes *ev;
	struct weft_event **evs;  /* decoded and accepted, or NULL */
	int *result;              /* per event: 0 or why it was refused */
	size_t *first_bad;        /* per chunk: first refusal, or n */
	weft_err *err;            /* per chunk: its message */
	uint64_t wall;
	size_t nchunks, taken, done; /* under pool->m */
	ingest_job *next;
};

/* ---------------------------------------------------------------- checks */

/* Decodes and checks one remote event; on failure records why in err. */
static int check_remote(struct weft_event **out, const weft_db *db, const weft_bytes *b, uint64_t wall,
                        weft_err *err)
{
	int rc = codec_event_decode(out, b->data, b->len, db->max_payload, err);
	if (rc < 0)
		return rc;
	if ((rc = codec_event_verify_sig(*out, err)) < 0)
		goto bad;
	if (hlc_too_far_ahead((*out)->hlc, wall, db->max_drift_ms)) {
		char h[16];
		rc = err_set(err, WEFT_EFUTURE, "event %s is stamped %llu ms ahead of this device's clock "
		             "(limit %llu ms): refused; check the clock of its author or of this device",
		             err_short_hex(h, (*out)->id.bytes),
		             (unsigned long long)((*out)->hlc >> 16) - (unsigned long long)wall,
		             (unsigned long long)db->max_drift_ms);
		goto bad;
	}
	return WEFT_OK;
bad:
	codec_event_free(*out);
	*out = NULL;
	return rc;
}

/* Checks chunk c of j. Touches only that chunk's slots. */
static void check_chunk(ingest_job *j, size_t c)
{
	size_t lo = c * CHUNK, hi = lo + CHUNK < j->n ? lo + CHUNK : j->n;
	j->first_bad[c] = j->n;
	for (size_t i = lo; i < hi; i++) {
		weft_err e;
		j->result[i] = check_remote(&j->evs[i], j->db, &j->ev[i], j->wall, &e);
		if (j->result[i] < 0 && j->first_bad[c] == j->n) {
			j->first_bad[c] = i;
			j->err[c] = e;
		}
	}
}

/* ------------------------------------------------------------------ pool */

/* Under p->m: the next unchecked chunk of j (j has one). */
static size_t take_chunk(struct ingest_pool *p, ingest_job *j)
{
	size_t c = j->taken++;
	if (j->taken == j->nchunks) {
		/* Fully handed out: off the queue. */
		ingest_job **pj = &p->head, *prev = NULL;
		while (*pj && *pj != j) {
			prev = *pj;
			pj = &(*pj)->next;
		}
		if (*pj) {
			*pj = j->next;
			if (p->tail == j)
				p->tail = prev;
		}
		j->next = NULL;
	}
	return c;
}

/* Under p->m: chunk of j checked. */
static void chunk_done(struct ingest_pool *p, ingest_job *j)
{
	if (++j->done == j->taken)
		plat_cond_broadcast(p->done);
}

static void *worker(void *arg)
{
	struct ingest_pool *p = ((worker_arg *)arg)->p;
	int spare = ((worker_arg *)arg)->spare;
	plat_mutex_lock(p->m);
	for (;;) {
		while (!p->stop && (!p->head || (spare && !p->lent)))
			plat_cond_wait(p->work, p->m);
		if (p->stop)
			break;
		ingest_job *j = p->head;
		size_t c = take_chunk(p, j);
		plat_mutex_unlock(p->m);
		check_chunk(j, c);
		plat_mutex_lock(p->m);
		chunk_done(p, j);
	}
	plat_mutex_unlock(p->m);
	return NULL;
}

void ingest_pool_free(struct ingest_pool *p)
{
	if (!p)
		return;
	plat_mutex_lock(p->m);
	p->stop = 1;
	plat_cond_broadcast(p->work);
	plat_mutex_unlock(p->m);
	for (int i = 0; i < p->nt; i++)
		plat_thread_join(p->t[i]);
	weft__free(p->args);
	plat_cond_free(p->work);
	plat_cond_free(p->done);
	plat_mutex_free(p->m);
	weft__free(p);
}

/* The store's verifier threads, started on first use; NULL when the
 * machine has one processor or they cannot be started (checks then run
 * on the caller's thread). */
static struct ingest_pool *pool_get(weft_db *db)
{
	if (db->pool || db->pool_off)
		return db->pool;
	int want = plat_cpu_count();
	if (want > POOL_MAX)
		want = POOL_MAX;
	struct ingest_pool *p = want > 1 ? weft__calloc(1, sizeof(*p)) : NULL;
	if (!p || plat_mutex_new(&p->m) < 0 || plat_cond_new(&p->work) < 0 || plat_cond_new(&p->done) < 0 ||
	    !(p->args = weft__calloc((size_t)want, sizeof(*p->args))))
		goto off;
	for (int i = 0; i < want; i++)
		p->args[i] = (worker_arg){p, i == want - 1};
	while (p->nt < want && plat_thread_start(&p->t[p->nt], worker, &p->args[p->nt]) == 0)
		p->nt++;
	if (!p->nt)
		goto off;
	db->pool = p;
	return p;
off:
	if (p && p->m && p->work && p->done && p->args) {
		ingest_pool_free(p);
	} else if (p) {
		plat_cond_free(p->work);
		plat_cond_free(p->done);
		plat_mutex_free(p->m);
		weft__free(p->args);
		weft__free(p);
	}
	db->pool_off = 1;
	return NULL;
}

/* ------------------------------------------------------------------ jobs */

static void job_free(ingest_job *j)
{
	if (!j)
		return;
	for (size_t i = 0; j->evs && i < j->n; i++)
		codec_event_free(j->evs[i]);
	weft__free(j->evs);
	weft__free(j->result);
	weft__free(j->first_bad);
	weft__free(j->err);
	weft__free(j->ev);
	weft__free(j->copy);
	weft__free(j);
}

/* A job over events; with copy, over a copy of their bytes. */
static int job_new(ingest_job **out, weft_db *db, const weft_bytes *events, size_t n, int copy)
{
	*out = NULL;
	ingest_job *j = weft__calloc(1, sizeof(*j));
	if (!j)
		return err_set(&db->err, WEFT_ENOMEM, "out of memory ingesting %zu events", n);
	j->db = db;
	j->n = n;
	j->nchunks = (n + CHUNK - 1) / CHUNK;
	size_t k = n ? n : 1, kc = j->nchunks ? j->nchunks : 1;
	j->evs = weft__calloc(k, sizeof(*j->evs));
	j->result = weft__calloc(k, sizeof(*j->result));
	j->first_bad = weft__calloc(kc, sizeof(*j->first_bad));
	j->err = weft__malloc(kc * sizeof(*j->err));
	j->ev = weft__malloc(k * sizeof(*j->ev));
	if (!j->evs || !j->result || !j->first_bad || !j->err || !j->ev)
		goto oom;
	if (copy) {
		size_t total = 0;
		for (size_t i = 0; i < n; i++)
			total += events[i].len;
		if (!(j->copy = weft__malloc(total ? total : 1)))
			goto oom;
		unsigned char *p = j->copy;
		for (size_t i = 0; i < n; i++) {
			if (events[i].len)
				memcpy(p, events[i].data, events[i].len);
			j->ev[i] = (weft_bytes){p, events[i].len};
			p += events[i].len;
		}
	} else if (n) {
		memcpy(j->ev, events, n * sizeof(*j->ev));
	}
	/* Read here: the clock is the application's callback. */
	j->wall = store_wall_ms(db);
	*out = j;
	return WEFT_OK;
oom:
	job_free(j);
	return err_set(&db->err, WEFT_ENOMEM, "out of memory ingesting %zu events", n);
}

static void job_start(ingest_job *j)
{
	if (j->n < PARALLEL_MIN || !(j->pool = pool_get(j->db)))
		return;
	struct ingest_pool *p = j->pool;
	plat_mutex_lock(p->m);
	if (p->tail)
		p->tail->next = j;
	else
		p->head = j;
	p->tail = j;
	plat_cond_broadcast(p->work);
	plat_mutex_unlock(p->m);
}

int ingest_submit(ingest_job **out, weft_db *db, const weft_bytes *events, size_t n)
{
	int rc = job_new(out, db, events, n, 1);
	if (rc == WEFT_OK)
		job_start(*out);
	return rc;
}

size_t ingest_count(const ingest_job *j)
{
	return j->n;
}

void ingest_job_ids(const ingest_job *j, weft_id *ids)
{
	/* The job's bytes are only read while its checks run. */
	for (size_t i = 0; i < j->n; i++) {
		struct weft_event *ev;
		if (codec_event_decode(&ev, j->ev[i].data, j->ev[i].len, j->db->max_payload, NULL) == WEFT_OK) {
			ids[i] = ev->id;
			codec_event_free(ev);
		} else {
			memset(&ids[i], 0, sizeof(ids[i]));
		}
	}
}

int ingest_ready(ingest_job *j)
{
	if (!j->pool)
		return 1; /* ingest_finish checks it, with no one to wait for */
	plat_mutex_lock(j->pool->m);
	int ready = j->done == j->nchunks;
	plat_mutex_unlock(j->pool->m);
	return ready;
}

static void lend(struct ingest_pool *p, int d)
{
	if (!p)
		return;
	plat_mutex_lock(p->m);
	p->lent += d;
	if (d > 0 && p->head)
		plat_cond_broadcast(p->work);
	plat_mutex_unlock(p->m);
}

/* Checks what nobody has taken yet, then waits for the rest. */
static void job_wait(ingest_job *j)
{
	struct ingest_pool *p = j->pool;
	if (!p) {
		for (size_t c = 0; c < j->nchunks; c++)
			check_chunk(j, c);
		j->taken = j->done = j->nchunks;
		return;
	}
	plat_mutex_lock(p->m);
	while (j->taken < j->nchunks) {
		size_t c = take_chunk(p, j);
		plat_mutex_unlock(p->m);
		check_chunk(j, c);
		plat_mutex_lock(p->m);
		chunk_done(p, j);
	}
	while (j->done < j->nchunks)
		plat_cond_wait(p->done, p->m);
	plat_mutex_unlock(p->m);
}

void ingest_cancel(ingest_job *j)
{
	if (!j)
		return;
	struct ingest_pool *p = j->pool;
	if (p) {
		/* Take what is left so nobody starts it, then wait for the
		 * chunks being checked: they write into the job. */
		plat_mutex_lock(p->m);
		while (j->taken < j->nchunks) {
			take_chunk(p, j);
			j->done++;
		}
		while (j->done < j->taken)
			plat_cond_wait(p->done, p->m);
		plat_mutex_unlock(p->m);
	}
	job_free(j);
}

typedef struct batch_pos {
	const struct weft_event *ev;
	size_t i; /* in the batch */
} batch_pos;

/* Events in time order, then by author and sequence number. */
static int time_order(const void *a, const void *b)
{
	const struct weft_event *x = ((const batch_pos *)a)->ev, *y = ((const batch_pos *)b)->ev;
	if (x->hlc != y->hlc)
		return x->hlc < y->hlc ? -1 : 1;
	int c = memcmp(x->author, y->author, sizeof(x->author));
	if (c)
		return c;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

int ingest_finish(ingest_job *j, int *result)
{
	weft_db *db = j->db;
	size_t n = j->n;
	job_wait(j);
	weft_err first_refusal;
	err_clear(&first_refusal);
	for (size_t c = 0; c < j->nchunks; c++) {
		size_t i = j->first_bad[c];
		if (i < n) {
			err_set(&first_refusal, j->err[c].code, "event %zu of the batch refused: %s", i, j->err[c].msg);
			break;
		}
	}
	memcpy(result, j->result, n * sizeof(*result));

	/* Stored in time order, whatever order they came in (a sync brings
	 * them in id order): an event's predecessor in the batch, signed
	 * before it, is stored before it, so the row links to it
	 * (docs/FORMAT.md section 5); and rows stay in time order, which a
	 * rebuild reads them in (bench/RESULTS.md: in chain order, target 6
	 * took 25 % longer). Accepted stamps advance the clock by being
	 * stored (store_hlc_get). */
	batch_pos *order = weft__malloc((n ? n : 1) * sizeof(*order));
	size_t m = 0;
	for (size_t i = 0; order && i < n; i++)
		if (j->evs[i])
			order[m++] = (batch_pos){j->evs[i], i};
	if (order)
		qsort(order, m, sizeof(*order), time_order);
	int rc = order ? store_begin(db) : err_set(&db->err, WEFT_ENOMEM, "out of memory storing events");
	for (size_t k = 0; rc == 0 && k < m; k++) {
		size_t i = order[k].i;
		weft_ingest_status status;
		rc = store_insert_event(db, j->evs[i], 0, &status);
		if (rc == 0)
			result[i] = (int)status;
	}
	weft__free(order);
	if (rc == 0) {
		/* The commit waits for the disk: lend this processor. */
		lend(db->pool, 1);
		rc = store_commit_events(db);
		lend(db->pool, -1);
	}
	job_free(j);
	if (rc < 0) {
		store_rollback(db);
		for (size_t i = 0; i < n; i++)
			if (result[i] >= 0)
				result[i] = rc;
		return rc;
	}
	if (first_refusal.code)
		err_copy(&db->err, &first_refusal);
	else
		err_clear(&db->err);
	return WEFT_OK;
}

/* ------------------------------------------------------- public entries */

int weft_db_ingest_batch(int *result, weft_db *db, const weft_bytes *events, size_t n)
{
	if (!db)
		return err_set(NULL, WEFT_EINVAL, "weft_db_ingest_batch: db must not be NULL");
	if (!result || (!events && n))
		return err_set(&db->err, WEFT_EINVAL, "weft_db_ingest_batch: result and events must not be NULL");
	if (db->readonly)
		return err_set(&db->err, WEFT_EPERM, "the store was opened read-only; reopen it without WEFT_OPEN_READONLY to ingest");
	ingest_job *j;
	int rc = job_new(&j, db, events, n, 0);
	if (rc < 0)
		return rc;
	job_start(j);
	return ingest_finish(j, result);
}

int weft_db_ingest(weft_ingest_status *status, weft_db *db, const void *bytes, size_t len)
{
	weft_bytes b = {bytes, len};
	int result = WEFT_ERROR;
	int rc = weft_db_ingest_batch(&result, db, &b, 1);
	if (rc < 0)
		return rc;
	if (result < 0)
		return result;
	if (status)
		*status = (weft_ingest_status)result;
	return WEFT_OK;
}

/* ------------------------------------------------------------- reading */

