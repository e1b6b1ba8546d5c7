/*
 * The sync session: a pure state machine (docs/PROTOCOL.md). Bytes in,
 * bytes out; the driver moves them and passes time in.
 *
 *   client                                   server
 *   HELLO  ───────────────────────────────▶
 *          ◀───────────────────────────────  HELLO (grants per scope)
 *   START (agreed scopes), NEG ───────────▶
 *          ◀───────────────────────────────  NEG           (repeat)
 *   WANT ids, EVENTS (ours they lack) ────▶
 *          ◀─────────────  EVENTS (wanted), WANT_END, ACK (for ours)
 *   ACK (for theirs), DONE ───────────────▶
 *          ◀───────────────────────────────  DONE
 *
 * Reconciliation reads the store's bucket summaries (sync/neg_view.c) and
 * only the events of the segments that differ, never whole events; the
 * client queues the ids of the events the server lacks, the server queues
 * at most one reconciliation round of wanted ids, and at most WINDOW
 * batches are in flight unacknowledged.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "core/alloc.h"
#include "core/buckets.h"
#include "core/codec.h"
#include "core/ingest.h"
#include "core/store.h"
#include "platform/platform.h"
#include "sync/frame.h"
#include "sync/neg_view.h"
#include "sync/negentropy.h"
#include "sync/session.h"

#define BATCH_DEFAULT 2048
#define BATCH_MAX 4096
#define WINDOW 2                  /* unacknowledged EVENTS frames in flight */
/* Received batches held unacknowledged while being checked: one is stored
 * while the next is checked on the verifier threads. */
#define RX_MAX 2
#define WANT_IDS_MAX 4096         /* ids per WANT frame */
#define SENDQ_MAX (1u << 16)      /* queued ids; a peer asking more breaks protocol */
/* Largest reconciliation message, whatever the frame limit: one round then
 * names at most NEG_LIMIT_MAX / 32 ids, which keeps the server's queue of
 * wanted ids under SENDQ_MAX. */
#define NEG_LIMIT_MAX (1u << 20)
#define NEG_FRAME_SLACK 64
#define IDLE_DEFAULT_MS 60000
/* A hello listing this many scopes (66 bytes each at most) still fits the
 * smallest frame limit. */
#define MAX_SCOPES 960

#define HELLO_ALL 0x1   /* client: sync every scope; server: grants everything */
#define GRANT_READ 0x1
#define GRANT_WRITE 0x2

typedef struct qitem {
	unsigned char id[32];
	uint8_t want_end; /* server: a WANT ends after this entry */
} qitem;

/* A received batch: checked on the verifier threads, then stored and
 * acknowledged in arrival order. */
typedef struct rx_batch {
	ingest_job *job;   /* NULL when every event was refused up front */
	int *result;
	uint32_t refused;  /* refused before checking (scope permissions) */
	int why_code;
	char why[WEFT_ERRMSG_LEN];
} rx_batch;

typedef struct scope_grant {
	char name[WEFT_SCOPE_MAX + 1];
	uint8_t peer_grants; /* what the peer lets us do */
	uint8_t our_grants;  /* what we let the peer do */
} scope_grant;

struct weft_session {
	weft_db *db;
	weft_role role;
	weft_session_state state;
	uint32_t max_frame; /* largest frame we accept */
	uint32_t send_max;  /* largest frame we send: min(ours, the peer's) */
	uint32_t batch;
	uint64_t idle_ms, last_rx; /* last sign of life from the peer */
	int clock_started;
	int tx_progress;    /* output was consumed since the last check */
	weft_authorize_fn authorize;
	void *auth_payload;
	char **want_scopes; /* what our options asked for (NULL: all) */
	size_t n_want;

	unsigned char peer[32];
	int have_peer;
	int all;            /* agreed: every scope, no restrictions */
	scope_grant *grants;/* agreed scopes */
	size_t ngrants;

	frame_reader rd;
	frame_buf out;
	neg_view *view;     /* the store's items, from its buckets */
	neg_set *set;       /* or, in a store without buckets, all items in memory */
	neg_reconciler *neg;
	unsigned char *neg_next; /* client: the next NEG message, held for pacing */
	size_t neg_next_len;
	int neg_done, neg_waiting;

	qitem *q;           /* server: ids of events asked for */
	size_t qhead, qlen, qcap;
	/* Client: ids of our events the server lacks, in the order found
	 * (sent from hhead on), and a hash set over them: each is queued once. */
	unsigned char (*have)[32];
	size_t hhead, hlen, hcap;
	uint32_t *hslot;    /* index + 1 into have, 0 empty */
	size_t hmask;
	unsigned char hkey[crypto_shorthash_KEYBYTES];
	store_read_hint sent_at; /* the last event sent (a client sends what it has in time order) */
	uint32_t unacked;
	rx_batch rx[RX_MAX]; /* oldest first */
	size_t nrx;
	int settling;
	uint64_t outstanding_wants; /* client: WANT frames not yet answered */
	/* Client, during a reconciliation step: ids of received events still
	 * being checked (on their way to the store), sorted. */
	weft_id *inflight;
	size_t ninflight;
	/* Work a peer can make us do is bounded by what honest peers need. */
	uint64_t neg_rounds, max_rounds; /* reconciliation messages handled */
	uint64_t wanted_total;           /* server: ids requested so far */
	int sent_done, peer_done;

	weft_session_stats stats;
	char errmsg[WEFT_ERRMSG_LEN];
};

/* ------------------------------------------------------------- helpers */

static int session_fail(weft_session *s, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void rx_settle(weft_session *s);
static void rx_drop(weft_session *s);
static int rx_finish(weft_session *s);

static int session_fail(weft_session *s, int code, const char *fmt, ...)
{
	if (s->state == WEFT_SESSION_FAILED)
		return s->stats.result;
	/* Batches received before the failure are stored as they would have
	 * been had they been stored on arrival (not acknowledged). */
	rx_settle(s);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->errmsg, sizeof(s->errmsg), fmt, ap);
	va_end(ap);
	s->state = WEFT_SESSION_FAILED;
	s->stats.result = code;
	/* Tell the peer why, then nothing else. */
	size_t msglen = strlen(s->errmsg);
	size_t start = frame_begin(&s->out, FRAME_ERROR);
	frame_put_u16(&s->out, (uint16_t)-code);
	frame_put(&s->out, s->errmsg, msglen);
	frame_end(&s->out, start);
	err_set(NULL, code, "%s", s->errmsg);
	return code;
}

static int oom(weft_session *s)
{
	return session_fail(s, WEFT_ENOMEM, "out of memory during sync");
}

static int q_push(weft_session *s, const unsigned char id[32], int want_end)
{
	if (s->qlen >= SENDQ_MAX)
		return session_fail(s, WEFT_EPROTO, "peer asked for more than %u events at once", SENDQ_MAX);
	if (s->qhead + s->qlen == s->qcap) {
		if (s->qhead) {
			memmove(s->q, s->q + s->qhead, s->qlen * sizeof(qitem));
			s->qhead = 0;
		}
		if (s->qlen == s->qcap) {
			size_t cap = s->qcap ? s->qcap * 2 : 256;
			qitem *q = weft__realloc(s->q, cap * sizeof(qitem));
			if (!q)
				return oom(s);
			s->q = q;
			s->qcap = cap;
		}
	}
	qitem *it = &s->q[s->qhead + s->qlen++];
	memcpy(it->id, id, 32);
	it->want_end = (uint8_t)want_end;
	return WEFT_OK;
}

/* Keyed: ids of events a peer crafted cannot be ground to collide. */
static size_t have_hash(const weft_session *s, const unsigned char id[32])
{
	unsigned char h[crypto_shorthash_BYTES];
	uint64_t v;
	crypto_shorthash(h, id, 32, s->hkey);
	memcpy(&v, h, sizeof(v));
	return (size_t)v;
}

/* Client: queue our event id for sending (once per session). */
static int have_push(weft_session *s, const unsigned char id[32])
{
	if (s->hmask) {
		for (size_t i = have_hash(s, id) & s->hmask; s->hslot[i]; i = (i + 1) & s->hmask)
			if (memcmp(s->have[s->hslot[i] - 1], id, 32) == 0)
				return WEFT_OK;
	}
	if (s->hlen >= UINT32_MAX - 1)
		return session_fail(s, WEFT_ELIMIT, "more than %u events to send in one session", UINT32_MAX - 1);
	if (s->hlen == s->hcap) {
		size_t cap = s->hcap ? s->hcap + s->hcap / 2 : 256;
		unsigned char(*h)[32] = weft__realloc(s->have, cap * 32);
		if (!h)
			return oom(s);
		s->have = h;
		s->hcap = cap;
	}
	if (2 * (s->hlen + 1) > s->hmask) {
		/* Rehash at half full. */
		size_t n = s->hmask ? 2 * (s->hmask + 1) : 1024;
		if (!s->hmask)
			crypto_shorthash_keygen(s->hkey);
		uint32_t *slot = weft__calloc(n, sizeof(uint32_t));
		if (!slot)
			return oom(s);
		for (size_t k = 0; k < s->hlen; k++) {
			size_t i = have_hash(s, s->have[k]) & (n - 1);
			while (slot[i])
				i = (i + 1) & (n - 1);
			slot[i] = (uint32_t)(k + 1);
		}
		weft__free(s->hslot);
		s->hslot = slot;
		s->hmask = n - 1;
	}
	memcpy(s->have[s->hlen], id, 32);
	s->hlen++;
	size_t i = have_hash(s, id) & s->hmask;
	while (s->hslot[i])
		i = (i + 1) & s->hmask;
	s->hslot[i] = (uint32_t)s->hlen;
	return WEFT_OK;
}

/* Events waiting to be sent (client: ids it has; server: wanted ids). */
static int sendq_empty(const weft_session *s)
{
	return s->role == WEFT_ROLE_CLIENT ? s->hhead == s->hlen : s->qlen == 0;
}

/* The next id to send and whether a WANT ends with it; 0 when empty. */
static int sendq_peek(const weft_session *s, unsigned char id[32], int *want_end)
{
	if (s->role == WEFT_ROLE_CLIENT) {
		if (s->hhead == s->hlen)
			return 0;
		memcpy(id, s->have[s->hhead], 32);
		*want_end = 0;
		return 1;
	}
	if (!s->qlen)
		return 0;
	memcpy(id, s->q[s->qhead].id, 32);
	*want_end = s->q[s->qhead].want_end;
	return 1;
}

static void sendq_pop(weft_session *s)
{
	if (s->role == WEFT_ROLE_CLIENT) {
		s->hhead++;
		return;
	}
	s->qhead++;
	if (!--s->qlen)
		s->qhead = 0;
}

static const scope_grant *grant_of(const weft_session *s, const char *scope)
{
	for (size_t i = 0; i < s->ngrants; i++)
		if (strcmp(s->grants[i].name, scope) == 0)
			return &s->grants[i];
	return NULL;
}

/* We send events of g: we let the peer read, it lets us write. */
static int flows_out(const scope_grant *g)
{
	return (g->our_grants & GRANT_READ) && (g->peer_grants & GRANT_WRITE);
}

/* We receive events of g: it lets us read, we let it write. */
static int flows_in(const scope_grant *g)
{
	return (g->peer_grants & GRANT_READ) && (g->our_grants & GRANT_WRITE);
}

/* May we send the peer an event of this scope? */
static int may_send(const weft_session *s, const char *scope)
{
	if (s->all)
		return 1;
	const scope_grant *g = grant_of(s, scope);
	return g && flows_out(g);
}

/* May we accept from the peer an event of this scope? */
static int may_accept(const weft_session *s, const char *scope)
{
	if (s->all)
		return 1;
	const scope_grant *g = grant_of(s, scope);
	return g && (g->our_grants & GRANT_WRITE);
}

/* ------------------------------------------------------------ lifecycle */

static int copy_scopes(weft_session *s, const char *const *scopes, size_t n)
{
	if (!scopes)
		return WEFT_OK;
	if (n > MAX_SCOPES)
		return err_set(&s->db->err, WEFT_EINVAL, "at most %d scopes per session", MAX_SCOPES);
	s->want_scopes = weft__calloc(n ? n : 1, sizeof(char *));
	if (!s->want_scopes)
		return err_set(&s->db->err, WEFT_ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		if (!codec_name_ok(scopes[i], WEFT_SCOPE_MAX))
			return err_set(&s->db->err, WEFT_EINVAL, "invalid scope \"%.80s\"", scopes[i] ? scopes[i] : "(null)");
		if (!(s->want_scopes[i] = weft__strdup(scopes[i])))
			return err_set(&s->db->err, WEFT_ENOMEM, "out of memory");
		s->n_want = i + 1;
	}
	s->n_want = n;
	return WEFT_OK;
}

static void free_strv(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		weft__free(v[i]);
	weft__free(v);
}

static void put_name(frame_buf *b, const char *name)
{
	size_t n = strlen(name);
	frame_put_u8(b, (uint8_t)n);
	frame_put(b, name, n);
}

/* HELLO: magic, version, role, device key, max frame, flags, scopes. */
static void send_hello(weft_session *s, uint8_t flags, char **names, const uint8_t *bits, size_t n)
{
	size_t start = frame_begin(&s->out, FRAME_HELLO);
	frame_put(&s->out, PROTOCOL_MAGIC, 4);
	frame_put_u16(&s->out, PROTOCOL_VERSION);
	frame_put_u8(&s->out, (uint8_t)s->role);
	frame_put(&s->out, weft_db_public_key(s->db), 32);
	frame_put_u32(&s->out, s->max_frame);
	frame_put_u8(&s->out, flags);
	frame_put_u16(&s->out, (uint16_t)n);
	for (size_t i = 0; i < n; i++) {
		put_name(&s->out, names[i]);
		if (bits)
			frame_put_u8(&s->out, bits[i]);
	}
	frame_end(&s->out, start);
}

int weft_session_new(weft_session **out, weft_db *db, weft_role role, const weft_session_options *opts)
{
	static const weft_session_options defaults = WEFT_SESSION_OPTIONS_INIT;
	if (!db)
		return err_set(NULL, WEFT_EINVAL, "weft_session_new: db must not be NULL");
	if (!out || (role != WEFT_ROLE_CLIENT && role != WEFT_ROLE_SERVER))
		return err_set(&db->err, WEFT_EINVAL, "weft_session_new: out must not be NULL and role must be client or server");
	*out = NULL;
	if (!opts)
		opts = &defaults;
	if (opts->version != WEFT_SESSION_OPTIONS_VERSION)
		return err_set(&db->err, WEFT_EVERSION, "weft_session_options version %u is not supported; use WEFT_SESSION_OPTIONS_INIT",
		               opts->version);
	if (opts->max_frame && (opts->max_frame < FRAME_MAX_MIN || opts->max_frame > FRAME_MAX_HARD))
		return err_set(&db->err, WEFT_EINVAL, "max_frame must be between %u and %u bytes", FRAME_MAX_MIN, FRAME_MAX_HARD);
	if (opts->nscopes && !opts->scopes)
		return err_set(&db->err, WEFT_EINVAL, "weft_session_options: nscopes without scopes");
	if (db->readonly)
		return err_set(&db->err, WEFT_EPERM, "syncing needs a store opened for writing");
	weft_session *s = weft__calloc(1, sizeof(*s));
	if (!s)
		return err_set(&db->err, WEFT_ENOMEM, "out of memory starting a session");
	s->db = db;
	s->role = role;
	s->state = WEFT_SESSION_HANDSHAKE;
	if (opts->max_frame) {
		s->max_frame = opts->max_frame;
	} else {
		/* By default any event this store accepts fits in one frame. */
		uint64_t need = (uint64_t)db->max_payload + EVENT_OVERHEAD_MAX + FRAME_HEADER + 8 + 64;
		s->max_frame = need > FRAME_MAX_DEFAULT ? (uint32_t)(need < FRAME_MAX_HARD ? need : FRAME_MAX_HARD)
		                                        : FRAME_MAX_DEFAULT;
	}
	s->send_max = s->max_frame;
	s->batch = opts->batch_events ? (opts->batch_events > BATCH_MAX ? BATCH_MAX : opts->batch_events) : BATCH_DEFAULT;
	s->idle_ms = opts->idle_timeout_ms ? opts->idle_timeout_ms : IDLE_DEFAULT_MS;
	s->authorize = opts->authorize;
	s->auth_payload = opts->authorize_payload;
	s->stats.result = 1;
	frame_reader_init(&s->rd, s->max_frame);
	int rc = copy_scopes(s, opts->scopes, opts->nscopes);
	if (rc < 0) {
		weft_session_free(s);
		return rc;
	}
	if (role == WEFT_ROLE_CLIENT) {
		/* Ask for the scopes given, or for all: then list ours so a
		 * restricted server can grant them one by one. */
		char **names = s->want_scopes;
		size_t n = s->n_want;
		if (!names && (rc = store_list_scopes(db, &names, &n, MAX_SCOPES)) < 0) {
			free_strv(names, n);
			weft_session_free(s);
			return rc;
		}
		send_hello(s, s->want_scopes ? 0 : HELLO_ALL, names, NULL, n);
		if (names != s->want_scopes)
			free_strv(names, n);
	}
	if (s->out.oom) {
		weft_session_free(s);
		return err_set(&db->err, WEFT_ENOMEM, "out of memory starting a session");
	}
	*out = s;
	return WEFT_OK;
}

void weft_session_free(weft_session *s)
{
	if (!s)
		return;
	/* A cut connection leaves the store with the batches fully received
	 * (docs/PROTOCOL.md §10): store what is held. */
	rx_settle(s);
	neg_reconciler_free(s->neg);
	neg_set_free(s->set);
	neg_view_free(s->view);
	frame_reader_free(&s->rd);
	frame_buf_free(&s->out);
	free_strv(s->want_scopes, s->n_want);
	weft__free(s->grants);
	weft__free(s->neg_next);
	weft__free(s->inflight);
	weft__free(s->q);
	weft__free(s->have);
	weft__free(s->hslot);
	weft__free(s);
}

/* ------------------------------------------------------ reconciliation */

static int add_item(void *payload, uint64_t hlc, const unsigned char id[32])
{
	return neg_set_add(payload, hlc, id);
}

static size_t items_count(const weft_session *s)
{
	return s->view ? neg_view_size(s->view) : neg_set_size(s->set);
}

/* Each reconciler call sees one snapshot of the store: a read transaction
 * and fresh bucket summaries (events stored since are seen next call). */
static int view_begin(weft_session *s, int *began)
{
	int rc = store_read_begin(s->db, began);
	if (rc == WEFT_OK && s->view)
		rc = neg_view_refresh(s->view);
	if (rc < 0) {
		store_read_end(s->db, *began);
		*began = 0;
	}
	return rc;
}

static void view_end(weft_session *s, int began)
{
	store_read_end(s->db, began);
}

/* A reconciler call failed: the peer's message, or reading our store. */
static int neg_failed(weft_session *s, int rc)
{
	if (rc == WEFT_EPROTO || rc == WEFT_EVERSION)
		return session_fail(s, rc, "bad reconciliation message: %s", neg_last_error(s->neg));
	if (rc == WEFT_ENOMEM)
		return oom(s);
	return session_fail(s, rc < 0 ? rc : WEFT_ERROR, "cannot read the events to reconcile: %s",
	                    weft_errmsg(s->db));
}

/* The scopes both sides reconcile: those where events may flow at least
 * one way. Both sides compute the same list from the agreed grants. */
static int build_set(weft_session *s)
{
	const char **names = NULL;
	size_t n = 0;
	int rc;
	if (!s->all) {
		names = weft__calloc(s->ngrants ? s->ngrants : 1, sizeof(char *));
		if (!names)
			return oom(s);
		for (size_t i = 0; i < s->ngrants; i++)
			if (flows_out(&s->grants[i]) || flows_in(&s->grants[i]))
				names[n++] = s->grants[i].name;
	}
	size_t limit = (s->send_max < NEG_LIMIT_MAX ? s->send_max : NEG_LIMIT_MAX) - NEG_FRAME_SLACK;
	/* Give the buckets the events stored since the last session; if that
	 * fails (busy), the view reads those events from the index instead. */
	buckets_fold(s->db);
	rc = buckets_available(s->db);
	if (rc > 0) {
		neg_storage st;
		int began;
		rc = neg_view_new(&s->view, s->db, s->all ? NULL : names, n);
		if (rc == 0 && (rc = view_begin(s, &began)) == 0)
			view_end(s, began);
		if (rc == 0) {
			neg_view_storage(s->view, &st);
			rc = neg_reconciler_new_storage(&s->neg, &st, limit);
		}
	} else if (rc == 0) {
		/* A read-only store of an older weft: list every item. */
		if ((rc = neg_set_new(&s->set)) == 0)
			rc = store_scan_items(s->db, s->all ? NULL : names, n, STORE_HLC_ALL_LO, STORE_HLC_ALL_HI,
			                      add_item, s->set);
		if (rc == 0)
			rc = neg_set_seal(s->set);
		if (rc == 0)
			rc = neg_reconciler_new(&s->neg, s->set, 0, neg_set_size(s->set), limit);
	}
	weft__free(names);
	/* Honest reconciliation needs a few rounds per level of the range
	 * tree, plus one per frame of ids when frames are limited. */
	if (rc == 0)
		s->max_rounds = 64 + 4 * ((uint64_t)items_count(s) * 40 / limit);
	if (rc == WEFT_ENOMEM)
		return oom(s);
	if (rc < 0)
		return session_fail(s, rc, "cannot list events to reconcile: %s", weft_errmsg(s->db));
	return WEFT_OK;
}

static void send_neg(weft_session *s, const uint8_t *msg, size_t len)
{
	size_t start = frame_begin(&s->out, FRAME_NEG);
	frame_put(&s->out, msg, len);
	frame_end(&s->out, start);
	s->stats.reconcile_bytes += len;
}

typedef struct diff_ctx {
	weft_session *s;
	unsigned char *want; /* ids for WANT frames */
	size_t nwant;
	int rc;
} diff_ctx;

static void flush_want(diff_ctx *d)
{
	if (!d->nwant)
		return;
	size_t start = frame_begin(&d->s->out, FRAME_WANT);
	frame_put(&d->s->out, d->want, d->nwant * 32);
	frame_end(&d->s->out, start);
	d->s->outstanding_wants++;
	d->s->stats.events_to_fetch += d->nwant;
	d->nwant = 0;
}

static int id_cmp(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(weft_id));
}

/* Client: the ids of received batches still being checked, so that a
 * reconciliation step can run while they are (not after storing them). */
static int inflight_collect(weft_session *s)
{
	size_t n = 0;
	for (size_t i = 0; i < s->nrx; i++)
		n += s->rx[i].job ? ingest_count(s->rx[i].job) : 0;
	s->ninflight = 0;
	if (!n)
		return WEFT_OK;
	weft_id *ids = weft__realloc(s->inflight, n * sizeof(weft_id));
	if (!ids)
		return oom(s);
	s->inflight = ids;
	for (size_t i = 0; i < s->nrx; i++) {
		if (s->rx[i].job) {
			ingest_job_ids(s->rx[i].job, ids + s->ninflight);
			s->ninflight += ingest_count(s->rx[i].job);
		}
	}
	qsort(s->inflight, s->ninflight, sizeof(weft_id), id_cmp);
	return WEFT_OK;
}

static int on_diff(void *payload, enum neg_diff_kind kind, const uint8_t id[NEG_ID_BYTES])
{
	diff_ctx *d = payload;
	weft_session *s = d->s;
	if (kind == NEG_HAVE) {
		d->rc = have_push(s, id);
		return d->rc < 0;
	}
	/* With a frame limit an id may be reported again in a later round;
	 * rounds wait until every WANT was answered, so the id is stored (and
	 * then not reported by a view of the store) or still being checked. */
	if (s->ninflight && bsearch(id, s->inflight, s->ninflight, sizeof(weft_id), id_cmp))
		return 0;
	if (!s->view) {
		/* A list made at the start of the session: ask the store. */
		int has = store_has_event(s->db, id);
		if (has < 0) {
			d->rc = session_fail(s, has, "%s", weft_errmsg(s->db));
			return 1;
		}
		if (has)
			return 0;
	}
	memcpy(d->want + 32 * d->nwant++, id, 32);
	if (d->nwant == WANT_IDS_MAX || (d->nwant + 1) * 32 + FRAME_HEADER > s->send_max)
		flush_want(d);
	return 0;
}

static int on_neg(weft_session *s, const frame *f)
{
	const uint8_t *reply;
	size_t reply_len;
	s->stats.reconcile_bytes += f->len;
	if (++s->neg_rounds > s->max_rounds)
		return session_fail(s, WEFT_EPROTO, "peer kept reconciling for %llu rounds without converging "
		                    "(at most %llu are needed for %zu events); ending the session",
		                    (unsigned long long)s->neg_rounds, (unsigned long long)s->max_rounds,
		                    items_count(s));
	int began, rc;
	/* Client: what the last round's WANTs brought is stored or still
	 * being checked; the checks go on during this step, and on_diff does
	 * not ask for those events again. */
	if (s->role == WEFT_ROLE_CLIENT && s->neg_waiting && (rc = inflight_collect(s)) < 0)
		return rc;
	/* One read transaction for the step, view and on_diff lookups. */
	if ((rc = view_begin(s, &began)) < 0)
		return neg_failed(s, rc);
	if (s->role == WEFT_ROLE_SERVER) {
		rc = neg_reconciler_reconcile(&reply, &reply_len, s->neg, f->payload, f->len, NULL, NULL);
		view_end(s, began);
		if (rc < 0)
			return neg_failed(s, rc);
		s->stats.round_trips++;
		send_neg(s, reply, reply_len);
		return WEFT_OK;
	}
	if (!s->neg_waiting) {
		view_end(s, began);
		return session_fail(s, WEFT_EPROTO, "peer sent a reconciliation message nobody asked for");
	}
	s->neg_waiting = 0;
	s->stats.round_trips++;
	diff_ctx d = {s, weft__malloc(WANT_IDS_MAX * 32), 0, 0};
	if (!d.want) {
		view_end(s, began);
		return oom(s);
	}
	rc = neg_reconciler_reconcile(&reply, &reply_len, s->neg, f->payload, f->len, on_diff, &d);
	view_end(s, began);
	s->ninflight = 0;
	flush_want(&d);
	weft__free(d.want);
	if (d.rc < 0)
		return d.rc;
	if (rc < 0)
		return neg_failed(s, rc);
	if (reply_len == 0) {
		s->neg_done = 1;
		return WEFT_OK;
	}
	/* Hold the next message until what this round found has arrived. */
	unsigned char *copy = weft__realloc(s->neg_next, reply_len);
	if (!copy)
		return oom(s);
	memcpy(copy, reply, reply_len);
	s->neg_next = copy;
	s->neg_next_len = reply_len;
	return WEFT_OK;
}

/* -------------------------------------------------------------- hello */

typedef struct rd {
	const unsigned char *p, *end;
} rd;

static int rd_take(rd *r, void *dst, size_t n)
{
	if ((size_t)(r->end - r->p) < n)
		return -1;
	if (dst)
		memcpy(dst, r->p, n);
	r->p += n;
	return 0;
}

static int rd_name(rd *r, char out[WEFT_SCOPE_MAX + 1])
{
	uint8_t n;
	if (rd_take(r, &n, 1) < 0 || n == 0 || n > WEFT_SCOPE_MAX || rd_take(r, out, n) < 0)
		return -1;
	out[n] = '\0';
	return codec_name_ok(out, WEFT_SCOPE_MAX) ? 0 : -1;
}

typedef struct hello {
	uint16_t version;
	uint8_t role, flags;
	unsigned char pk[32];
	uint32_t max_frame;
	uint16_t n;
	scope_grant *scopes; /* names; peer_grants from the bits if any */
} hello;

static int parse_hello(weft_session *s, const frame *f, hello *h, int with_bits)
{
	rd r = {f->payload, f->payload + f->len};
	char magic[4];
	unsigned char v[2];
	memset(h, 0, sizeof(*h));
	if (rd_take(&r, magic, 4) < 0 || memcmp(magic, PROTOCOL_MAGIC, 4) != 0 || rd_take(&r, v, 2) < 0)
		return session_fail(s, WEFT_EPROTO, "peer does not speak the weft sync protocol (bad hello)");
	h->version = (uint16_t)(v[0] << 8 | v[1]);
	if (h->version != PROTOCOL_VERSION)
		return session_fail(s, WEFT_EVERSION, "peer speaks sync protocol version %u, this weft %s speaks version %d; "
		                    "upgrade the older side", h->version, WEFT_VERSION_STRING, PROTOCOL_VERSION);
	unsigned char mf[4], n[2];
	if (rd_take(&r, &h->role, 1) < 0 || rd_take(&r, h->pk, 32) < 0 || rd_take(&r, mf, 4) < 0 ||
	    rd_take(&r, &h->flags, 1) < 0 || rd_take(&r, n, 2) < 0)
		return session_fail(s, WEFT_EPROTO, "peer's hello is truncated");
	h->max_frame = codec_get_u32(mf);
	h->n = (uint16_t)(n[0] << 8 | n[1]);
	if (h->n > MAX_SCOPES)
		return session_fail(s, WEFT_EPROTO, "peer's hello lists %u scopes (at most %d)", h->n, MAX_SCOPES);
	if (h->max_frame < FRAME_MAX_MIN)
		return session_fail(s, WEFT_EPROTO, "peer's frame limit %u is below the minimum %u", h->max_frame, FRAME_MAX_MIN);
	if (h->flags & ~HELLO_ALL)
		return session_fail(s, WEFT_EPROTO, "peer's hello sets unknown flags 0x%02x", h->flags);
	int want_role = s->role == WEFT_ROLE_CLIENT ? WEFT_ROLE_SERVER : WEFT_ROLE_CLIENT;
	if (h->role != want_role)
		return session_fail(s, WEFT_EPROTO, "peer's hello says role %u; a %s needs a %s", h->role,
		                    s->role == WEFT_ROLE_CLIENT ? "client" : "server",
		                    s->role == WEFT_ROLE_CLIENT ? "server" : "client");
	h->scopes = weft__calloc(h->n ? h->n : 1, sizeof(scope_grant));
	if (!h->scopes)
		return oom(s);
	for (uint16_t i = 0; i < h->n; i++) {
		int bad = rd_name(&r, h->scopes[i].name) < 0 ||
		          (with_bits && rd_take(&r, &h->scopes[i].peer_grants, 1) < 0);
		for (uint16_t j = 0; j < i && !bad; j++)
			bad = strcmp(h->scopes[j].name, h->scopes[i].name) == 0;
		if (bad || (h->scopes[i].peer_grants & ~(GRANT_READ | GRANT_WRITE))) {
			weft__free(h->scopes);
			h->scopes = NULL;
			return session_fail(s, WEFT_EPROTO, "peer's hello has a malformed scope list");
		}
	}
	if (r.p != r.end) {
		weft__free(h->scopes);
		h->scopes = NULL;
		return session_fail(s, WEFT_EPROTO, "peer's hello has trailing bytes");
	}
	s->send_max = h->max_frame < s->max_frame ? h->max_frame : s->max_frame;
	return WEFT_OK;
}

/* Our grants for the peer over a list of scopes: authorize, or all. */
static int decide(weft_session *s, const unsigned char peer[32], scope_grant *g, size_t n)
{
	if (!s->authorize) {
		for (size_t i = 0; i < n; i++)
			g[i].our_grants = GRANT_READ | GRANT_WRITE;
		return WEFT_OK;
	}
	const char **names = weft__calloc(n ? n : 1, sizeof(char *));
	int *r = weft__calloc(n ? n : 1, sizeof(int)), *w = weft__calloc(n ? n : 1, sizeof(int));
	int rc = WEFT_OK;
	if (!names || !r || !w) {
		rc = oom(s);
	} else {
		for (size_t i = 0; i < n; i++)
			names[i] = g[i].name;
		rc = s->authorize(peer, names, n, r, w, s->auth_payload);
		for (size_t i = 0; rc == WEFT_OK && i < n; i++)
			g[i].our_grants = (uint8_t)((r[i] ? GRANT_READ : 0) | (w[i] ? GRANT_WRITE : 0));
		if (rc < 0) {
			char dev[WEFT_DEVICE_ID_LEN + 1];
			weft_device_id_format(dev, peer);
			rc = session_fail(s, rc == WEFT_EAUTH ? rc : WEFT_EPERM,
			                  "device %s is not allowed to sync with this store (refused by the authorize "
			                  "callback: %s)", dev, weft_errname(rc));
		}
	}
	weft__free(names);
	weft__free(r);
	weft__free(w);
	return rc;
}

static int on_hello_server(weft_session *s, const frame *f)
{
	hello h;
	int rc = parse_hello(s, f, &h, 0);
	if (rc < 0)
		return rc;
	memcpy(s->peer, h.pk, 32);
	s->have_peer = 1;
	/* Candidates: what the client listed, plus ours if it wants all. */
	size_t n = h.n;
	scope_grant *g = h.scopes;
	char **mine = NULL;
	size_t nmine = 0;
	if ((h.flags & HELLO_ALL) && (rc = store_list_scopes(s->db, &mine, &nmine, MAX_SCOPES)) < 0) {
		weft__free(g);
		free_strv(mine, nmine);
		return session_fail(s, rc, "%s", weft_errmsg(s->db));
	}
	if (nmine) {
		scope_grant *bigger = weft__realloc(g, (n + nmine) * sizeof(scope_grant));
		if (!bigger) {
			weft__free(g);
			free_strv(mine, nmine);
			return oom(s);
		}
		g = bigger;
		size_t listed = n;
		for (size_t i = 0; i < nmine; i++) {
			int dup = 0;
			for (size_t k = 0; k < listed && !dup; k++)
				dup = strcmp(g[k].name, mine[i]) == 0;
			if (!dup && n < MAX_SCOPES) {
				memset(&g[n], 0, sizeof(g[n]));
				snprintf(g[n].name, sizeof(g[n].name), "%s", mine[i]);
				n++;
			}
		}
	}
	free_strv(mine, nmine);
	if ((rc = decide(s, h.pk, g, n)) < 0) {
		weft__free(g);
		return rc;
	}
	uint8_t *bits = weft__calloc(n ? n : 1, 1);
	char **names = weft__calloc(n ? n : 1, sizeof(char *));
	if (!bits || !names) {
		weft__free(bits);
		weft__free(names);
		weft__free(g);
		return oom(s);
	}
	for (size_t i = 0; i < n; i++) {
		bits[i] = g[i].our_grants;
		names[i] = g[i].name;
	}
	send_hello(s, s->authorize ? 0 : HELLO_ALL, names, bits, n);
	weft__free(bits);
	weft__free(names);
	s->grants = g;
	s->ngrants = n;
	return WEFT_OK;
}

/* START: the client's final list of scopes with its grants. */
static int on_hello_client(weft_session *s, const frame *f)
{
	hello h;
	int rc = parse_hello(s, f, &h, 1);
	if (rc < 0)
		return rc;
	memcpy(s->peer, h.pk, 32);
	s->have_peer = 1;
	scope_grant *g = h.scopes;
	if ((rc = decide(s, h.pk, g, h.n)) < 0) {
		weft__free(g);
		return rc;
	}
	/* Everything both ways only when neither side restricts anything and
	 * we asked for all; otherwise the scopes we asked for where events
	 * may flow at least one way. */
	s->all = !s->want_scopes && (h.flags & HELLO_ALL) && !s->authorize;
	size_t k = 0;
	for (size_t i = 0; i < h.n; i++) {
		int asked = !s->want_scopes;
		for (size_t j = 0; j < s->n_want && !asked; j++)
			asked = strcmp(s->want_scopes[j], g[i].name) == 0;
		if (asked && (flows_out(&g[i]) || flows_in(&g[i])))
			g[k++] = g[i];
	}
	s->grants = g;
	s->ngrants = k;
	size_t start = frame_begin(&s->out, FRAME_HELLO);
	frame_put_u8(&s->out, s->all ? HELLO_ALL : 0);
	frame_put_u16(&s->out, (uint16_t)k);
	for (size_t i = 0; i < k; i++) {
		put_name(&s->out, g[i].name);
		frame_put_u8(&s->out, g[i].our_grants);
	}
	frame_end(&s->out, start);
	if ((rc = build_set(s)) < 0)
		return rc;
	const uint8_t *msg;
	size_t len;
	int began;
	if ((rc = view_begin(s, &began)) < 0)
		return neg_failed(s, rc);
	rc = neg_reconciler_initiate(&msg, &len, s->neg);
	view_end(s, began);
	if (rc < 0)
		return rc == WEFT_EINVAL ? session_fail(s, rc, "cannot start reconciliation: %s", neg_last_error(s->neg))
		                         : neg_failed(s, rc);
	send_neg(s, msg, len);
	s->neg_waiting = 1;
	s->state = WEFT_SESSION_SYNCING;
	return WEFT_OK;
}

/* The server's second HELLO from the client is the START list. */
static int on_start(weft_session *s, const frame *f)
{
	rd r = {f->payload, f->payload + f->len};
	uint8_t flags;
	unsigned char n2[2];
	if (rd_take(&r, &flags, 1) < 0 || rd_take(&r, n2, 2) < 0)
		return session_fail(s, WEFT_EPROTO, "peer's scope agreement is truncated");
	size_t n = (size_t)(n2[0] << 8 | n2[1]);
	if (n > s->ngrants || (flags & ~HELLO_ALL))
		return session_fail(s, WEFT_EPROTO, "peer's scope agreement is malformed");
	if (flags & HELLO_ALL) {
		if (s->authorize)
			return session_fail(s, WEFT_EPERM, "peer asked for every scope, but this side grants scopes one by one");
		s->all = 1;
	}
	scope_grant *agreed = weft__calloc(n ? n : 1, sizeof(scope_grant));
	if (!agreed)
		return oom(s);
	for (size_t i = 0; i < n; i++) {
		uint8_t bits;
		char name[WEFT_SCOPE_MAX + 1];
		int dup = 0;
		if (rd_name(&r, name) == 0)
			for (size_t j = 0; j < i && !dup; j++)
				dup = strcmp(agreed[j].name, name) == 0;
		else
			dup = 1;
		if (dup || rd_take(&r, &bits, 1) < 0 || (bits & ~(GRANT_READ | GRANT_WRITE))) {
			weft__free(agreed);
			return session_fail(s, WEFT_EPROTO, "peer's scope agreement is malformed");
		}
		const scope_grant *ours = grant_of(s, name);
		if (!ours) {
			weft__free(agreed);
			return session_fail(s, WEFT_EPROTO, "peer agreed to scope %s, which this side never offered", name);
		}
		agreed[i] = *ours;
		agreed[i].peer_grants = bits;
		if (!flows_out(&agreed[i]) && !flows_in(&agreed[i])) {
			weft__free(agreed);
			return session_fail(s, WEFT_EPERM, "peer asked to sync scope %s, which it may neither read nor write",
			                    name);
		}
	}
	if (r.p != r.end) {
		weft__free(agreed);
		return session_fail(s, WEFT_EPROTO, "peer's scope agreement has trailing bytes");
	}
	weft__free(s->grants);
	s->grants = agreed;
	s->ngrants = n;
	s->state = WEFT_SESSION_SYNCING;
	return build_set(s);
}

/* ------------------------------------------------------------- events */

/* Stores the oldest received batch (waiting for its checks). Returns the
 * number of new events, or why it failed in why/why_code: refusals with
 * >= 0, a store failure with its code. */
static int rx_store(weft_session *s, int *refused_code, char why[WEFT_ERRMSG_LEN])
{
	rx_batch x = s->rx[0];
	memmove(s->rx, s->rx + 1, (s->nrx - 1) * sizeof(rx_batch));
	s->nrx--;
	size_t n = x.job ? ingest_count(x.job) : 0;
	int rc = n ? ingest_finish(x.job, x.result) : WEFT_OK;
	uint32_t fresh = 0, refused = x.refused;
	*refused_code = x.refused ? x.why_code : 0;
	if (x.refused)
		memcpy(why, x.why, WEFT_ERRMSG_LEN);
	for (size_t i = 0; rc == WEFT_OK && i < n; i++) {
		if (x.result[i] == WEFT_INGEST_NEW || x.result[i] == WEFT_INGEST_FORK) {
			fresh++;
		} else if (x.result[i] < 0) {
			if (!refused++) {
				snprintf(why, WEFT_ERRMSG_LEN, "peer sent an invalid event: %s", weft_errmsg(s->db));
				*refused_code = x.result[i];
			}
		}
	}
	weft__free(x.result);
	if (rc < 0) {
		snprintf(why, WEFT_ERRMSG_LEN, "cannot store received events: %s", weft_errmsg(s->db));
		return rc;
	}
	s->stats.events_received += fresh;
	s->stats.events_refused += (uint64_t)refused;
	return (int)fresh;
}

static void rx_drop(weft_session *s)
{
	for (size_t i = 0; i < s->nrx; i++) {
		ingest_cancel(s->rx[i].job);
		weft__free(s->rx[i].result);
	}
	s->nrx = 0;
}

/* Stores the oldest received batch and acknowledges it, or fails. */
static int rx_finish(weft_session *s)
{
	char why[WEFT_ERRMSG_LEN];
	int refused_code;
	int fresh = rx_store(s, &refused_code, why);
	if (fresh < 0 || refused_code) {
		/* Later batches would have come after the failure: drop them. */
		rx_drop(s);
		return session_fail(s, fresh < 0 ? fresh : refused_code, "%s", why);
	}
	size_t start = frame_begin(&s->out, FRAME_ACK);
	frame_put_u32(&s->out, (uint32_t)fresh);
	frame_end(&s->out, start);
	return WEFT_OK;
}

void session_settle(weft_session *s)
{
	rx_settle(s);
}

/* The session is ending: store what was received, acknowledge nothing. */
static void rx_settle(weft_session *s)
{
	if (s->settling)
		return;
	s->settling = 1;
	while (s->nrx) {
		char why[WEFT_ERRMSG_LEN];
		int code;
		rx_store(s, &code, why);
	}
	s->settling = 0;
}

static int on_events(weft_session *s, const frame *f)
{
	if (s->state != WEFT_SESSION_SYNCING)
		return session_fail(s, WEFT_EPROTO, "peer sent events before the scopes were agreed");
	rd r = {f->payload, f->payload + f->len};
	unsigned char c4[4];
	if (rd_take(&r, c4, 4) < 0)
		return session_fail(s, WEFT_EPROTO, "peer's event batch is truncated");
	uint32_t count = codec_get_u32(c4);
	/* Each event takes at least 4 bytes: bound the count before allocating. */
	if (count == 0 || count > BATCH_MAX || (size_t)count * 4 > (size_t)(r.end - r.p))
		return session_fail(s, WEFT_EPROTO, "peer's event batch claims %u events in %u bytes", count, f->len);
	weft_bytes *b = weft__malloc(count * sizeof(weft_bytes));
	if (!b)
		return oom(s);
	/* The frame must parse completely before anything is stored. */
	for (uint32_t i = 0; i < count; i++) {
		unsigned char l4[4];
		if (rd_take(&r, l4, 4) < 0 || codec_get_u32(l4) > (size_t)(r.end - r.p)) {
			weft__free(b);
			return session_fail(s, WEFT_EPROTO, "peer's event batch is malformed at event %u", i);
		}
		b[i].len = codec_get_u32(l4);
		b[i].data = r.p;
		r.p += b[i].len;
	}
	if (r.p != r.end) {
		weft__free(b);
		return session_fail(s, WEFT_EPROTO, "peer's event batch has trailing bytes");
	}
	/* A peer ignoring the window: store what we hold first. */
	int rc;
	while (s->nrx >= RX_MAX)
		if ((rc = rx_finish(s)) < 0) {
			weft__free(b);
			return rc;
		}
	rx_batch *x = &s->rx[s->nrx];
	memset(x, 0, sizeof(*x));
	size_t n = 0;
	for (uint32_t i = 0; i < count; i++) {
		/* Scope permission first: events of scopes the peer may not
		 * write are refused before they are verified or stored. With
		 * every scope granted there is nothing to check (ingest decodes). */
		struct weft_event *e;
		weft_err derr;
		if (!s->all && codec_event_decode(&e, b[i].data, b[i].len, s->db->max_payload, &derr) == WEFT_OK) {
			int ok = may_accept(s, e->scope);
			if (!ok && !x->refused++) {
				char dev[WEFT_DEVICE_ID_LEN + 1];
				weft_device_id_format(dev, s->peer);
				snprintf(x->why, sizeof(x->why), "peer %s may not write scope %s: event refused", dev, e->scope);
				x->why_code = WEFT_EPERM;
			}
			codec_event_free(e);
			if (!ok)
				continue;
		}
		b[n++] = b[i];
	}
	s->stats.events_to_fetch = s->stats.events_to_fetch > count ? s->stats.events_to_fetch - count : 0;
	rc = WEFT_OK;
	if (n && !(x->result = weft__malloc(n * sizeof(int))))
		rc = WEFT_ENOMEM;
	else if (n)
		rc = ingest_submit(&x->job, s->db, b, n);
	weft__free(b);
	if (rc < 0) {
		weft__free(x->result);
		return rc == WEFT_ENOMEM ? oom(s) : session_fail(s, rc, "cannot store received events: %s", weft_errmsg(s->db));
	}
	s->nrx++;
	/* Keep one batch checking while the one before is stored. */
	while (s->nrx > 1)
		if ((rc = rx_finish(s)) < 0)
			return rc;
	return WEFT_OK;
}

static void send_want_end(weft_session *s)
{
	size_t w = frame_begin(&s->out, FRAME_WANT_END);
	frame_end(&s->out, w);
}

/*
 * Sends one EVENTS batch from the queue, and a WANT_END after the last event
 * of each WANT. Events that cannot go are dropped from the queue: gone from
 * the store, not permitted, or too large for the peer's frame limit.
 */
static int send_batch(weft_session *s)
{
	size_t start = 0, count_at = 0;
	uint32_t count = 0;
	size_t bytes = FRAME_HEADER + 4;
	unsigned char id[32];
	int end = 0, began;
	/* One snapshot (and one lock) for the whole batch. */
	int rc = store_read_begin(s->db, &began);
	if (rc < 0)
		return session_fail(s, rc, "cannot read events to send: %s", weft_errmsg(s->db));
	while (count < s->batch && sendq_peek(s, id, &end)) {
		weft_event *ev = NULL;
		rc = store_get_event(&ev, s->db, id, &s->sent_at);
		if (rc < 0 && rc != WEFT_ENOTFOUND) {
			store_read_end(s->db, began);
			return session_fail(s, rc, "cannot read an event to send: %s", weft_errmsg(s->db));
		}
		size_t len = 0;
		const void *enc = ev ? weft_event_bytes(ev, &len) : NULL;
		if (ev && count && bytes + 4 + len > s->send_max) {
			weft_event_free(ev);
			break; /* next batch */
		}
		if (ev && may_send(s, weft_event_scope(ev)) && bytes + 4 + len <= s->send_max) {
			if (!count) {
				start = frame_begin(&s->out, FRAME_EVENTS);
				count_at = s->out.len;
				frame_put_u32(&s->out, 0);
			}
			frame_put_u32(&s->out, (uint32_t)len);
			frame_put(&s->out, enc, len);
			bytes += 4 + len;
			count++;
		}
		weft_event_free(ev);
		sendq_pop(s);
		if (end) {
			if (count)
				break; /* close this batch, then WANT_END */
			send_want_end(s);
		}
	}
	store_read_end(s->db, began);
	if (count && !s->out.oom) {
		codec_put_u32(s->out.data + count_at, count);
		frame_end(&s->out, start);
		s->unacked++;
		if (end)
			send_want_end(s);
	}
	return WEFT_OK;
}

static int ingest_ready_or_null(ingest_job *j)
{
	return !j || ingest_ready(j);
}

/* Moves the session forward: batches, paced reconciliation, DONE. */
static int pump(weft_session *s)
{
	if (s->state != WEFT_SESSION_SYNCING)
		return s->state == WEFT_SESSION_FAILED ? s->stats.result : WEFT_OK;
	int rc;
	/* Received batches whose checks are done are stored now. */
	while (s->nrx && ingest_ready_or_null(s->rx[0].job))
		if ((rc = rx_finish(s)) < 0)
			return rc;
	while (!sendq_empty(s) && s->unacked < WINDOW && !s->out.oom)
		if ((rc = send_batch(s)) < 0)
			return rc;
	if (s->role == WEFT_ROLE_CLIENT) {
		/* The next round only once this round's WANTs were answered:
		 * the server's queue stays one round deep and no id is asked
		 * for twice. */
		if (s->neg_next && !s->neg_waiting && s->outstanding_wants == 0) {
			send_neg(s, s->neg_next, s->neg_next_len);
			weft__free(s->neg_next);
			s->neg_next = NULL;
			s->neg_waiting = 1;
		}
		if (s->neg_done && !s->sent_done && sendq_empty(s) && !s->unacked && !s->outstanding_wants && !s->nrx) {
			size_t d = frame_begin(&s->out, FRAME_DONE);
			frame_end(&s->out, d);
			s->sent_done = 1;
		}
		if (s->sent_done && s->peer_done) {
			s->state = WEFT_SESSION_DONE;
			s->stats.result = WEFT_OK;
		}
	} else if (s->peer_done && !s->sent_done && sendq_empty(s) && !s->unacked && !s->nrx) {
		size_t d = frame_begin(&s->out, FRAME_DONE);
		frame_end(&s->out, d);
		s->sent_done = 1;
		s->state = WEFT_SESSION_DONE;
		s->stats.result = WEFT_OK;
	}
	return s->out.oom ? oom(s) : WEFT_OK;
}

static int on_frame(weft_session *s, const frame *f)
{
	int server = s->role == WEFT_ROLE_SERVER;
	switch (f->type) {
	case FRAME_HELLO:
		if (s->state != WEFT_SESSION_HANDSHAKE)
			return session_fail(s, WEFT_EPROTO, "peer sent a second hello");
		if (!server)
			return on_hello_client(s, f);
		return s->have_peer ? on_start(s, f) : on_hello_server(s, f);
	case FRAME_NEG:
		if (s->state != WEFT_SESSION_SYNCING)
			return session_fail(s, WEFT_EPROTO, "reconciliation before the scopes were agreed");
		return on_neg(s, f);
	case FRAME_WANT: {
		if (!server || s->state != WEFT_SESSION_SYNCING || s->peer_done)
			return session_fail(s, WEFT_EPROTO, "unexpected request for events");
		if (f->len == 0 || f->len % 32 || f->len / 32 > WANT_IDS_MAX)
			return session_fail(s, WEFT_EPROTO, "malformed request for events (%u bytes)", f->len);
		/* Nobody needs more ids than we hold (plus repeats under a
		 * frame limit): beyond that the peer only makes us work. */
		s->wanted_total += f->len / 32;
		if (s->wanted_total > 2 * (uint64_t)items_count(s) + WANT_IDS_MAX)
			return session_fail(s, WEFT_EPROTO, "peer asked for %llu events, more than this side holds (%zu)",
			                    (unsigned long long)s->wanted_total, items_count(s));
		for (uint32_t i = 0; i < f->len / 32; i++) {
			int rc = q_push(s, f->payload + 32 * i, i + 1 == f->len / 32);
			if (rc < 0)
				return rc;
		}
		return WEFT_OK;
	}
	case FRAME_EVENTS:
		return on_events(s, f);
	case FRAME_ACK: {
		if (f->len != 4 || s->unacked == 0 || s->state != WEFT_SESSION_SYNCING)
			return session_fail(s, WEFT_EPROTO, "unexpected acknowledgement");
		s->unacked--;
		s->stats.events_sent += codec_get_u32(f->payload);
		return WEFT_OK;
	}
	case FRAME_WANT_END:
		if (server || f->len || s->outstanding_wants == 0 || s->state != WEFT_SESSION_SYNCING)
			return session_fail(s, WEFT_EPROTO, "unexpected end of requested events");
		/* What did not come will not: the server could not send it. */
		if (--s->outstanding_wants == 0)
			s->stats.events_to_fetch = 0;
		return WEFT_OK;
	case FRAME_DONE:
		if (f->len || s->peer_done || s->state != WEFT_SESSION_SYNCING || (!server && !s->sent_done))
			return session_fail(s, WEFT_EPROTO, "unexpected end of session");
		s->peer_done = 1;
		return WEFT_OK;
	case FRAME_ERROR: {
		int code = f->len >= 2 ? -(int)((f->payload[0] << 8) | f->payload[1]) : WEFT_EPROTO;
		if (code > -1 || code < WEFT_ETIMEOUT)
			code = WEFT_EPROTO;
		char msg[400];
		size_t n = f->len > 2 ? f->len - 2 : 0;
		if (n > sizeof(msg) - 1)
			n = sizeof(msg) - 1;
		for (size_t i = 0; i < n; i++) {
			unsigned char ch = f->payload[2 + i];
			msg[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
		}
		msg[n] = '\0';
		/* No error frame back: the peer has already given up. */
		rx_settle(s);
		snprintf(s->errmsg, sizeof(s->errmsg), "peer ended the session: %s", msg);
		s->state = WEFT_SESSION_FAILED;
		s->stats.result = code;
		err_set(NULL, code, "%s", s->errmsg);
		return code;
	}
	}
	return session_fail(s, WEFT_EPROTO, "unknown frame type %u", f->type);
}

static int check_idle(weft_session *s, uint64_t now)
{
	if (!s->clock_started) {
		s->clock_started = 1;
		s->last_rx = now;
	}
	/* The peer taking our bytes is alive too: a long upload hears
	 * nothing back until the receiver has a whole batch. */
	if (s->tx_progress) {
		s->tx_progress = 0;
		if (now > s->last_rx)
			s->last_rx = now;
	}
	if (s->state == WEFT_SESSION_DONE || s->state == WEFT_SESSION_FAILED)
		return WEFT_OK;
	if (now > s->last_rx && now - s->last_rx > s->idle_ms)
		return session_fail(s, WEFT_ETIMEOUT, "peer sent nothing for %llu ms (idle timeout %llu ms); the "
		                    "connection is stalled or the peer hung",
		                    (unsigned long long)(now - s->last_rx), (unsigned long long)s->idle_ms);
	return WEFT_OK;
}

int weft_session_feed(weft_session *s, const void *bytes, size_t len, uint64_t now_ms)
{
	if (!s || (!bytes && len))
		return err_set(NULL, WEFT_EINVAL, "weft_session_feed: NULL argument");
	if (s->state == WEFT_SESSION_FAILED)
		return s->stats.result;
	int rc;
	if (len) {
		/* Bytes arriving show the peer is alive, however late. */
		s->clock_started = 1;
		s->last_rx = now_ms;
		s->tx_progress = 0;
	} else if ((rc = check_idle(s, now_ms)) < 0) {
		return rc;
	}
	s->stats.bytes_received += len;
	const unsigned char *p = bytes;
	while (len) {
		frame f;
		char why[160];
		rc = frame_read(&s->rd, &f, &p, &len, why);
		if (rc < 0)
			return session_fail(s, rc, "peer sent a bad frame: %s", why);
		if (rc == 0)
			break;
		if (s->state == WEFT_SESSION_DONE)
			return session_fail(s, WEFT_EPROTO, "peer sent data after the session ended");
		if ((rc = on_frame(s, &f)) < 0)
			return rc;
		if ((rc = pump(s)) < 0)
			return rc;
	}
	return pump(s);
}

/* Part of a frame has arrived, the rest is on its way. */
static int mid_frame(const frame_reader *r)
{
	return r->have_hdr && !(r->have_hdr == FRAME_HEADER && r->have == r->len);
}

void weft_session_output(weft_session *s, const void **bytes, size_t *len)
{
	static const unsigned char none[1];
	/* Nothing to send: the driver will wait for the peer, which may be
	 * waiting for our acknowledgement. Store the oldest received batch
	 * now, unless a frame is on its way that will wake us: more of a
	 * frame, or (client) the next batch of a WANT not yet ended, which the
	 * server's window lets it send while we hold one. */
	if (!frame_pending(&s->out) && s->nrx && s->state == WEFT_SESSION_SYNCING && !mid_frame(&s->rd) &&
	    !(s->role == WEFT_ROLE_CLIENT && s->outstanding_wants && s->nrx < WINDOW) && rx_finish(s) == WEFT_OK)
		pump(s);
	*len = frame_pending(&s->out);
	*bytes = *len ? s->out.data + s->out.sent : none;
}

void weft_session_consume(weft_session *s, size_t n)
{
	size_t pending = frame_pending(&s->out);
	s->stats.bytes_sent += n < pending ? n : pending;
	if (n && pending)
		s->tx_progress = 1;
	frame_consume(&s->out, n);
}

int weft_session_tick(weft_session *s, uint64_t now_ms)
{
	if (!s)
		return err_set(NULL, WEFT_EINVAL, "weft_session_tick: NULL argument");
	if (s->state == WEFT_SESSION_FAILED)
		return s->stats.result;
	int rc = check_idle(s, now_ms);
	return rc < 0 ? rc : pump(s);
}

weft_session_state weft_session_state_get(const weft_session *s)
{
	return s->state;
}

void weft_session_stats_get(weft_session_stats *out, const weft_session *s)
{
	*out = s->stats;
}

const unsigned char *weft_session_peer(const weft_session *s)
{
	return s->have_peer ? s->peer : NULL;
}

const char *weft_session_errmsg(const weft_session *s)
{
	return s->errmsg;
}

/* ------------------------------------------------------------ local */

static int shuttle(weft_session *from, weft_session *to, uint64_t now, int *moved)
{
	const void *b;
	size_t n;
	weft_session_output(from, &b, &n);
	if (!n)
		return WEFT_OK;
	*moved = 1;
	/* b stays valid: feeding writes only to the receiver's buffer. */
	int rc = weft_session_feed(to, b, n, now);
	weft_session_consume(from, n);
	return rc;
}

int weft_sync_local(weft_session_stats *stats, weft_db *a, weft_db *b, const weft_session_options *opts)
{
	if (!a || !b)
		return err_set(NULL, WEFT_EINVAL, "weft_sync_local: stores must not be NULL");
	if (a == b)
		return err_set(&a->err, WEFT_EINVAL, "weft_sync_local: a store cannot sync with itself");
	weft_session *c = NULL, *sv = NULL;
	weft_session_options so = WEFT_SESSION_OPTIONS_INIT;
	if (opts) {
		so.max_frame = opts->max_frame;
		so.batch_events = opts->batch_events;
	}
	int rc = weft_session_new(&c, a, WEFT_ROLE_CLIENT, opts);
	if (rc == WEFT_OK && (rc = weft_session_new(&sv, b, WEFT_ROLE_SERVER, &so)) < 0)
		err_set(&a->err, rc, "%s", weft_errmsg(b));
	while (rc == WEFT_OK) {
		uint64_t now = plat_mono_ms();
		int moved = 0;
		int r1 = shuttle(c, sv, now, &moved);
		int r2 = shuttle(sv, c, now, &moved);
		weft_session_state cs = weft_session_state_get(c), ss = weft_session_state_get(sv);
		if (cs == WEFT_SESSION_FAILED || ss == WEFT_SESSION_FAILED || r1 < 0 || r2 < 0) {
			/* Deliver the error frame so both sides know. */
			shuttle(c, sv, now, &moved);
			shuttle(sv, c, now, &moved);
			rc = cs == WEFT_SESSION_FAILED ? c->stats.result : sv->stats.result;
			if (rc >= 0)
				rc = WEFT_EPROTO;
			err_set(&a->err, rc, "%s", cs == WEFT_SESSION_FAILED ? c->errmsg : sv->errmsg);
			break;
		}
		if (cs == WEFT_SESSION_DONE && ss == WEFT_SESSION_DONE)
			break;
		if (!moved) {
			rc = err_set(&a->err, WEFT_ERROR, "sync stalled with nothing to send (a bug in weft; please report)");
			break;
		}
	}
	if (stats && c)
		weft_session_stats_get(stats, c);
	weft_session_free(c);
	weft_session_free(sv);
	return rc;
}
