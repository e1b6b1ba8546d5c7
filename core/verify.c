/* weft_db_verify: re-check every stored event, every chain link, count forks. */
#include <string.h>

#include "core/buckets.h"
#include "core/store.h"

typedef struct verify_state {
	weft_db *db;
	weft_verify_report *r;
	sqlite3_stmt *prev_of; /* ids stored at (author, seq - 1) */
	weft_err first;
} verify_state;

/* whole: id is the event's id; else only its first 6 bytes are known
 * (the row no longer hashes to it), and msg names the row. */
static void note_bad(verify_state *vs, const weft_id *id, int whole, const char *msg)
{
	char h[65];
	if (vs->r->bad == 0) {
		vs->r->first_bad = *id;
		if (whole)
			err_set(&vs->first, WEFT_ECORRUPT, "event %s is bad: %s", weft_id_to_hex(h, id), msg);
		else
			err_set(&vs->first, WEFT_ECORRUPT, "%s", msg);
	}
}

/* 1 if the author's event(s) at seq - 1 are stored and none is ev->prev. */
static int link_broken(verify_state *vs, sqlite3_int64 author, const struct weft_event *ev, int *rc)
{
	sqlite3_stmt *st = vs->prev_of;
	sqlite3_reset(st);
	sqlite3_bind_int64(st, 1, author);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)ev->seq - 1);
	int seen = 0, match = 0, s;
	*rc = WEFT_OK;
	while ((s = sqlite3_step(st)) == SQLITE_ROW) {
		weft_id id;
		seen = 1;
		/* A damaged neighbour is counted as bad on its own row. */
		if (store_event_id(vs->db, sqlite3_column_int64(st, 0), &id) == WEFT_OK)
			match |= memcmp(id.bytes, ev->prev.bytes, 32) == 0;
		else if (vs->db->err.code == WEFT_ENOMEM)
			*rc = WEFT_ENOMEM;
		else
			match = 1;
	}
	sqlite3_reset(st);
	if (s != SQLITE_DONE)
		*rc = store_sqlite_error(vs->db, s, "verifying chain links");
	return seen && !match;
}

int weft_db_verify(weft_verify_report *report, weft_db *db, weft_progress_cb cb, void *payload)
{
	if (!db)
		return err_set(NULL, WEFT_EINVAL, "weft_db_verify: db must not be NULL");
	weft_verify_report local;
	verify_state vs = {db, report ? report : &local, NULL, {0, ""}};
	memset(vs.r, 0, sizeof(*vs.r));

	uint64_t total = 0;
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(db->sql, "SELECT count(*) FROM weft_event", -1, &st, NULL);
	if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
		total = (uint64_t)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	st = NULL;
	/* One read transaction: a consistent snapshot even while others write. */
	if ((rc = store_exec(db, "BEGIN", "starting verification")) < 0)
		return rc;
	/* The log has no (author, seq) index: a temporary one for the check. */
	if ((rc = store_exec(db, "DROP TABLE IF EXISTS temp.weft_verify_seq;"
	                     "CREATE TEMP TABLE weft_verify_seq(author, seq, n);"
	                     "INSERT INTO temp.weft_verify_seq SELECT author, seq, n FROM weft_event;"
	                     "CREATE INDEX temp.weft_verify_seq_i ON weft_verify_seq(author, seq);",
	                     "starting verification")) < 0)
		goto out;
	if ((rc = sqlite3_prepare_v2(db->sql, "SELECT n FROM temp.weft_verify_seq WHERE author = ?1 AND seq = ?2",
	                             -1, &vs.prev_of, NULL)) != SQLITE_OK ||
	    (rc = sqlite3_prepare_v2(db->sql, "SELECT " STORE_EVENT_COLUMNS STORE_EVENT_FROM
	                             "ORDER BY e.n", -1, &st, NULL)) != SQLITE_OK) {
		rc = store_sqlite_error(db, rc, "starting verification");
		goto out;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct weft_event *ev = NULL;
		weft_id id;
		/* All the row keeps of its id, until it is re-derived. */
		memset(&id, 0, sizeof(id));
		codec_put_u64(id.bytes, (uint64_t)sqlite3_column_int64(st, EC_IDP) << (64 - 8 * STORE_IDP_BYTES));
		memset(id.bytes + STORE_IDP_BYTES, 0, sizeof(id.bytes) - STORE_IDP_BYTES);
		int erc = store_row_event(&ev, db, st);
		if (erc == WEFT_OK)
			id = ev->id;
		if (erc == WEFT_ENOMEM) {
			rc = erc;
			goto out;
		}
		int signed_ok = 0;
		if (erc == WEFT_OK && ev->sealed) {
			/* Own, sealed, and no key here to sign it: its id checked. */
			vs.r->unsigned_own++;
		} else if (erc < 0) {
			weft_id sealed_id;
			/* A seal that does not check: the id itself did. */
			if (STORE_SEALED(st)) {
				weft_err keep = db->err;
				if (store_event_id(db, sqlite3_column_int64(st, EC_N), &sealed_id) == WEFT_OK)
					id = sealed_id;
				db->err = keep;
			}
			note_bad(&vs, &id, 0, db->err.msg);
			vs.r->bad++;
		} else if (codec_event_verify_sig(ev, &db->err) < 0) {
			note_bad(&vs, &id, 1, "its signature does not verify (altered, or forged in its author's name)");
			vs.r->bad++;
		} else {
			/* A present payload's hash is re-derived on read, so the id
			 * (checked by store_row_event) covers the payload too. */
			signed_ok = 1;
		}
		/* A link that disagrees between two validly signed events is not
		 * damage: the author signed two histories (a fork), kept as evidence. */
		if (signed_ok && ev->seq > 1) {
			int lrc;
			if (link_broken(&vs, sqlite3_column_int64(st, EC_AUTHOR), ev, &lrc))
				vs.r->broken_links++;
			if (lrc < 0) {
				codec_event_free(ev);
				rc = lrc;
				goto out;
			}
		}
		codec_event_free(ev);
		vs.r->checked++;
		if (cb && (vs.r->checked % 1024 == 0 || vs.r->checked == total) &&
		    cb(vs.r->checked, total, payload)) {
			rc = err_set(&db->err, WEFT_EUSER, "verification stopped by the progress callback");
			goto out;
		}
	}
	if (rc != SQLITE_DONE) {
		rc = store_sqlite_error(db, rc, "reading events to verify");
		goto out;
	}
	sqlite3_finalize(st);
	st = NULL;
	rc = sqlite3_prepare_v2(db->sql, "SELECT count(*) FROM (SELECT 1 FROM temp.weft_verify_seq "
	                        "GROUP BY author, seq HAVING count(*) > 1)", -1, &st, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
		vs.r->forks = (uint64_t)sqlite3_column_int64(st, 0);
	if (rc != SQLITE_ROW) {
		rc = store_sqlite_error(db, rc, "counting forks");
		goto out;
	}
	if (vs.r->bad) {
		rc = err_set(&db->err, WEFT_ECORRUPT, "%s (%llu bad event(s) in %llu checked); "
		             "the store was altered or damaged: restore it from a peer",
		             vs.first.msg, (unsigned long long)vs.r->bad, (unsigned long long)vs.r->checked);
	} else {
		err_clear(&db->err);
		rc = WEFT_OK;
	}
out:
	sqlite3_finalize(st);
	sqlite3_finalize(vs.prev_of);
	sqlite3_exec(db->sql, "DROP TABLE IF EXISTS temp.weft_verify_seq", NULL, NULL, NULL);
	sqlite3_exec(db->sql, "COMMIT", NULL, NULL, NULL);
	if (rc == WEFT_OK)
		rc = buckets_verify(db);
	return rc;
}
