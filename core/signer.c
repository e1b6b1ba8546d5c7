/* Own events signed after their commit: core/signer.h. */
#include "core/signer.h"

#include <sqlite3.h>
#include <string.h>

#include "core/alloc.h"
#include "core/codec.h"
#include "core/error.h"
#include "core/store.h"
#include "platform/platform.h"

typedef struct signer_job {
	int64_t n;
	weft_id id;
	unsigned char seal[IDENTITY_SEAL_BYTES];
	unsigned char sig[64];
} signer_job;

/* jobs[head .. head+count) in a ring, oldest first: the first nsigned
 * have their signature; the first nwritten of those were written in the
 * open transaction. The thread only fills in sig of job head+nsigned;
 * the handle's thread adds jobs at the end and drops written ones. */
struct signer {
	plat_thread *thread;
	plat_mutex *mu;
	plat_cond *cv;
	const unsigned char *sk;
	signer_job jobs[SIGNER_MAX];
	size_t head, count, nsigned, nwritten;
	int stop, sleeping;
};

static signer_job *job_at(signer *s, size_t i)
{
	return &s->jobs[(s->head + i) % SIGNER_MAX];
}

static void *run(void *arg)
{
	signer *s = arg;
	uint64_t last = plat_mono_ms();
	plat_mutex_lock(s->mu);
	while (!s->stop) {
		if (s->nsigned < s->count) {
			signer_job *j = job_at(s, s->nsigned);
			weft_id id = j->id;
			plat_mutex_unlock(s->mu);
			unsigned char sig[64];
			codec_sign_id(sig, &id, s->sk);
			plat_mutex_lock(s->mu);
			memcpy(j->sig, sig, 64); /* j stays: unsigned jobs are not dropped */
			s->nsigned++;
			last = plat_mono_ms();
		} else if (plat_mono_ms() - last < SIGNER_POLL_MS) {
			plat_mutex_unlock(s->mu);
			plat_sleep_us(SIGNER_POLL_US);
			plat_mutex_lock(s->mu);
		} else {
			s->sleeping = 1;
			plat_cond_wait(s->cv, s->mu);
			s->sleeping = 0;
			last = plat_mono_ms();
		}
	}
	plat_mutex_unlock(s->mu);
	return NULL;
}

static void signer_free(signer *s)
{
	plat_cond_free(s->cv);
	plat_mutex_free(s->mu);
	weft__free(s);
}

static int start(weft_db *db)
{
	signer *s = weft__calloc(1, sizeof(*s));
	if (!s)
		return -1;
	s->sk = db->id.sk;
	if (plat_mutex_new(&s->mu) < 0 || plat_cond_new(&s->cv) < 0 || plat_thread_start(&s->thread, run, s) < 0) {
		signer_free(s);
		return -1;
	}
	db->signer = s;
	return 0;
}

int signer_room(weft_db *db)
{
	if (db->signer_off || !db->id.sk)
		return 0;
	if (!db->signer && start(db) < 0) {
		db->signer_off = 1;
		return 0;
	}
	signer *s = db->signer;
	plat_mutex_lock(s->mu);
	int room = s->count < SIGNER_MAX;
	plat_mutex_unlock(s->mu);
	return room;
}

void signer_push(weft_db *db, int64_t n, const weft_id *id, const unsigned char seal[32])
{
	signer *s = db->signer;
	plat_mutex_lock(s->mu);
	if (s->count < SIGNER_MAX) { /* signer_room said so; this thread alone adds */
		signer_job *j = job_at(s, s->count++);
		j->n = n;
		j->id = *id;
		memcpy(j->seal, seal, IDENTITY_SEAL_BYTES);
		if (s->sleeping)
			plat_cond_signal(s->cv);
	}
	plat_mutex_unlock(s->mu);
}

/* Writes job j's signature over its seal (a row that no longer holds the
 * seal is left alone). */
static int write_one(weft_db *db, const signer_job *j)
{
	sqlite3_stmt *st = store_stmt(db, STMT_SIG_SET);
	if (!st)
		return db->err.code;
	sqlite3_bind_int64(st, 1, j->n);
	sqlite3_bind_blob(st, 2, j->sig, 64, SQLITE_STATIC);
	char hex[STORE_SEAL_HEX + 1];
	sqlite3_bind_text(st, 3, store_seal_hex(hex, j->seal), STORE_SEAL_HEX, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, "writing an event's signature");
}

int signer_write(weft_db *db)
{
	signer *s = db->signer;
	if (!s)
		return WEFT_OK;
	plat_mutex_lock(s->mu);
	size_t k = s->nsigned;
	plat_mutex_unlock(s->mu);
	/* Jobs below nsigned are read without the lock: the thread does not
	 * touch them, and only this thread drops them. */
	int rc = WEFT_OK;
	for (size_t i = 0; i < k && rc == WEFT_OK; i++)
		rc = write_one(db, job_at(s, i));
	if (rc < 0) {
		/* The rows stay sealed; only a failed transaction fails. */
		if (sqlite3_get_autocommit(db->sql))
			return rc;
		err_clear(&db->err);
		return WEFT_OK;
	}
	s->nwritten = k;
	return WEFT_OK;
}

void signer_committed(weft_db *db)
{
	signer *s = db->signer;
	if (!s || !s->nwritten)
		return;
	plat_mutex_lock(s->mu);
	s->head = (s->head + s->nwritten) % SIGNER_MAX;
	s->count -= s->nwritten;
	s->nsigned -= s->nwritten;
	s->nwritten = 0;
	plat_mutex_unlock(s->mu);
}

void signer_rolled_back(weft_db *db)
{
	if (db->signer)
		db->signer->nwritten = 0;
}

void signer_close(weft_db *db)
{
	signer *s = db->signer;
	if (!s)
		return;
	plat_mutex_lock(s->mu);
	s->stop = 1;
	plat_cond_signal(s->cv);
	plat_mutex_unlock(s->mu);
	plat_thread_join(s->thread);
	s->thread = NULL;
	for (; s->nsigned < s->count; s->nsigned++)
		codec_sign_id(job_at(s, s->nsigned)->sig, &job_at(s, s->nsigned)->id, s->sk);
	/* store_begin writes them (signer_write); a failure leaves them
	 * sealed for signer_recover. */
	if (s->count && store_begin(db) == WEFT_OK)
		store_commit(db);
	db->signer = NULL;
	signer_free(s);
}

int signer_recover(weft_db *db)
{
	if (!db->id.sk)
		return WEFT_OK;
	sqlite3_stmt *st = store_stmt(db, STMT_SEALED);
	if (!st)
		return db->err.code;
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc == SQLITE_DONE)
		return WEFT_OK; /* none: the usual case, one probe of a small index */
	if (rc != SQLITE_ROW)
		return store_sqlite_error(db, rc, "looking for events left unsigned");
	/* Another writer holds the lock: reads sign these rows meanwhile. */
	if (store_begin(db) < 0) {
		err_clear(&db->err);
		return WEFT_OK;
	}
	signer_job *jobs = NULL;
	size_t n = 0, cap = 0;
	int out = WEFT_OK;
	while (out == WEFT_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct weft_event *ev;
		int r = store_row_event(&ev, db, st);
		if (r == WEFT_ECORRUPT) {
			/* A seal this device did not make: left as it is for
			 * `weft verify` to report. */
			err_clear(&db->err);
			continue;
		}
		if (r < 0) {
			out = r;
			break;
		}
		if (n == cap) {
			size_t nc = cap ? 2 * cap : 16;
			signer_job *g = weft__realloc(jobs, nc * sizeof(*g));
			if (!g) {
				codec_event_free(ev);
				out = err_set(&db->err, WEFT_ENOMEM, "out of memory signing events left unsigned");
				break;
			}
			jobs = g, cap = nc;
		}
		signer_job *j = &jobs[n++];
		j->n = sqlite3_column_int64(st, EC_N);
		j->id = ev->id;
		memcpy(j->sig, ev->sig, 64);
		identity_seal(&db->id, j->id.bytes, j->seal);
		codec_event_free(ev);
	}
	sqlite3_reset(st);
	if (out == WEFT_OK && rc != SQLITE_DONE)
		out = store_sqlite_error(db, rc, "reading events left unsigned");
	for (size_t i = 0; out == WEFT_OK && i < n; i++)
		out = write_one(db, &jobs[i]);
	weft__free(jobs);
	if (out < 0) {
		store_rollback(db);
		return out;
	}
	return store_commit(db);
}
