/* Reconciliation buckets; see buckets.h. */
#include "core/buckets.h"

#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/store.h"

#define BUCKETS_TABLE                                                                   \
	"CREATE TABLE weft_neg_bucket("                                                 \
	"  scope INTEGER NOT NULL,"                                                     \
	"  cell INTEGER NOT NULL,"  /* hlc >> BUCKET_SHIFT */                            \
	"  count INTEGER NOT NULL," /* events stored in the cell */                    \
	"  sum BLOB NOT NULL,"      /* their ids added as 256-bit little-endian numbers */ \
	"  PRIMARY KEY(scope, cell), CHECK (count > 0)) WITHOUT ROWID"

/* Cells below the watermark have rows; newer ones are read from the events. */
#define CELL_ALL (((uint64_t)INT64_MAX >> BUCKET_SHIFT) + 1)

#define CORRUPT_HINT "run `weft verify`, which rebuilds them"

/* acc += x, both 256-bit little-endian. */
static void sum_add(unsigned char acc[32], const unsigned char x[32])
{
	unsigned carry = 0;
	for (int i = 0; i < 32; i++) {
		unsigned s = (unsigned)acc[i] + x[i] + carry;
		acc[i] = (unsigned char)s;
		carry = s >> 8;
	}
}

/* weft_u256_add(a, b): a malformed a (a damaged row) counts as zero; the
 * damage then shows as a count/sum mismatch that verify repairs. */
static void sql_u256_add(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	unsigned char acc[32] = {0};
	(void)argc;
	if (sqlite3_value_bytes(argv[1]) != 32) {
		sqlite3_result_error(ctx, "weft_u256_add: an id is not 32 bytes", -1);
		return;
	}
	if (sqlite3_value_bytes(argv[0]) == 32)
		memcpy(acc, sqlite3_value_blob(argv[0]), 32);
	sum_add(acc, sqlite3_value_blob(argv[1]));
	sqlite3_result_blob(ctx, acc, 32, SQLITE_TRANSIENT);
}

int buckets_available(weft_db *db)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db->sql, "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'weft_neg_bucket'",
	                            -1, &st, NULL);
	if (rc != SQLITE_OK)
		return store_sqlite_error(db, rc, "looking for the reconciliation buckets");
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc == SQLITE_ROW)
		return 1;
	return rc == SQLITE_DONE ? 0 : store_sqlite_error(db, rc, "looking for the reconciliation buckets");
}

int buckets_watermark(weft_db *db, uint64_t *w)
{
	sqlite3_stmt *st = store_stmt(db, STMT_BUCKET_MARK);
	if (!st)
		return db->err.code;
	int rc = sqlite3_step(st);
	*w = CELL_ALL; /* none recorded: every cell has its rows */
	if (rc == SQLITE_ROW) {
		sqlite3_int64 v = sqlite3_column_int64(st, 0);
		if (sqlite3_column_type(st, 0) != SQLITE_INTEGER || v < 0 || (uint64_t)v > CELL_ALL) {
			sqlite3_reset(st);
			return err_set(&db->err, WEFT_ECORRUPT, "the reconciliation watermark is malformed; " CORRUPT_HINT);
		}
		*w = (uint64_t)v;
	}
	sqlite3_reset(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, "reading the reconciliation watermark");
}

static int watermark_set(weft_db *db, uint64_t w)
{
	db->mark_valid = 0;
	sqlite3_stmt *st = store_stmt(db, STMT_META_SET);
	if (!st)
		return db->err.code;
	sqlite3_bind_text(st, 1, "neg_watermark", -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)w);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, "writing the reconciliation watermark");
}

/* The watermark a fold moves to: the cell before the clock's, so that
 * events stamped now (most single-event commits) write no bucket row. */
static uint64_t fold_target(weft_db *db)
{
	uint64_t cell = (store_wall_ms(db) << 16) >> BUCKET_SHIFT;
	return cell ? cell - 1 : 0;
}

/* The last stamp of the cells below w. */
static uint64_t below(uint64_t w)
{
	return w >= CELL_ALL ? STORE_HLC_ALL_HI : (w << BUCKET_SHIFT) - 1;
}

int buckets_add(weft_db *db, int64_t scope_ref, uint64_t hlc, const unsigned char id[32])
{
	/* Called for every stored event: read the watermark once per
	 * transaction (it changes only through watermark_set). */
	if (!db->mark_valid) {
		int wrc = buckets_watermark(db, &db->mark);
		if (wrc < 0)
			return wrc;
		db->mark_valid = 1;
	}
	uint64_t cell = hlc >> BUCKET_SHIFT;
	if (cell >= db->mark)
		return WEFT_OK;
	/* Gathered per (scope, cell) and written once per transaction: a
	 * batch of events spans a few cells. */
	struct store_bucket_add *b = NULL;
	for (size_t i = db->nbpend; i-- > 0;) {
		if (db->bpend[i].cell == cell && db->bpend[i].scope == scope_ref) {
			b = &db->bpend[i];
			break;
		}
	}
	if (!b) {
		int rc;
		if (db->nbpend == STORE_BUCKET_PENDING && (rc = buckets_flush(db)) < 0)
			return rc;
		b = &db->bpend[db->nbpend++];
		b->scope = scope_ref;
		b->cell = cell;
		b->count = 0;
		memset(b->sum, 0, sizeof(b->sum));
	}
	b->count++;
	sum_add(b->sum, id);
	return WEFT_OK;
}

int buckets_flush(weft_db *db)
{
	size_t n = db->nbpend;
	db->nbpend = 0;
	if (!n)
		return WEFT_OK;
	sqlite3_stmt *st = store_stmt(db, STMT_BUCKET_ADD);
	if (!st)
		return db->err.code;
	for (size_t i = 0; i < n; i++) {
		const struct store_bucket_add *b = &db->bpend[i];
		sqlite3_bind_int64(st, 1, b->scope);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)b->cell);
		sqlite3_bind_blob(st, 3, b->sum, 32, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, (sqlite3_int64)b->count);
		int rc = sqlite3_step(st);
		sqlite3_reset(st);
		if (rc != SQLITE_DONE)
			return store_sqlite_error(db, rc, "updating a reconciliation bucket");
	}
	return WEFT_OK;
}

/* ------------------------------------------------ computing from events */

typedef struct cell_row {
	uint64_t cell, count;
	unsigned char sum[32];
} cell_row;

typedef struct cell_acc {
	weft_db *db;
	cell_row *rows;
	size_t n, cap;
} cell_acc;

static int acc_item(void *payload, uint64_t hlc, const unsigned char id[32])
{
	cell_acc *a = payload;
	uint64_t cell = hlc >> BUCKET_SHIFT;
	if (!a->n || a->rows[a->n - 1].cell != cell) {
		if (a->n == a->cap) {
			size_t cap = a->cap ? a->cap * 2 : 64;
			cell_row *r = weft__realloc(a->rows, cap * sizeof(*r));
			if (!r)
				return err_set(&a->db->err, WEFT_ENOMEM, "out of memory computing reconciliation buckets");
			a->rows = r;
			a->cap = cap;
		}
		cell_row *r = &a->rows[a->n++];
		memset(r, 0, sizeof(*r));
		r->cell = cell;
	}
	a->rows[a->n - 1].count++;
	sum_add(a->rows[a->n - 1].sum, id);
	return 0;
}

/* The buckets of one scope over cells [from, to), from its events. */
static int compute_scope(weft_db *db, const char *name, cell_acc *a, uint64_t from, uint64_t to)
{
	a->db = db;
	a->n = 0;
	if (from >= to)
		return WEFT_OK;
	const char *scopes[1] = {name};
	return store_scan_items(db, scopes, 1, from << BUCKET_SHIFT, below(to), acc_item, a);
}

typedef int (*scope_fn)(weft_db *db, int64_t ref, const char *name, cell_acc *a, void *payload);

static int each_scope(weft_db *db, uint64_t from, uint64_t to, scope_fn fn, void *payload)
{
	sqlite3_stmt *st;
	cell_acc a = {0};
	int rc = sqlite3_prepare_v2(db->sql, "SELECT ref, name FROM weft_scope ORDER BY ref", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return store_sqlite_error(db, rc, "listing scopes");
	int out = WEFT_OK;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		char name[WEFT_SCOPE_MAX + 1];
		snprintf(name, sizeof(name), "%s", (const char *)sqlite3_column_text(st, 1));
		if ((out = compute_scope(db, name, &a, from, to)) < 0 ||
		    (out = fn(db, sqlite3_column_int64(st, 0), name, &a, payload)) < 0)
			break;
	}
	if (out == WEFT_OK && rc != SQLITE_DONE)
		out = store_sqlite_error(db, rc, "listing scopes");
	sqlite3_finalize(st);
	weft__free(a.rows);
	return out;
}

/* Steps st (an insert or a fold of bucket rows) once per gathered cell. */
static int write_cells(weft_db *db, int64_t ref, const cell_acc *a, sqlite3_stmt *st, const char *doing)
{
	for (size_t i = 0; i < a->n; i++) {
		sqlite3_reset(st);
		sqlite3_bind_int64(st, 1, ref);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)a->rows[i].cell);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)a->rows[i].count);
		sqlite3_bind_blob(st, 4, a->rows[i].sum, 32, SQLITE_STATIC);
		int rc = sqlite3_step(st);
		if (rc != SQLITE_DONE)
			return store_sqlite_error(db, rc, doing);
	}
	return WEFT_OK;
}

static int insert_scope(weft_db *db, int64_t ref, const char *name, cell_acc *a, void *payload)
{
	(void)name;
	return write_cells(db, ref, a, payload, "writing reconciliation buckets");
}

static int rebuild_in_txn(weft_db *db)
{
	sqlite3_stmt *st;
	int rc = store_exec(db, "DELETE FROM weft_neg_bucket", "rebuilding reconciliation buckets");
	if (rc < 0)
		return rc;
	uint64_t w;
	if ((rc = buckets_watermark(db, &w)) < 0)
		return rc;
	rc = sqlite3_prepare_v2(db->sql, "INSERT INTO weft_neg_bucket(scope, cell, count, sum) VALUES (?1, ?2, ?3, ?4)",
	                        -1, &st, NULL);
	if (rc != SQLITE_OK)
		return store_sqlite_error(db, rc, "rebuilding reconciliation buckets");
	rc = each_scope(db, 0, w, insert_scope, st);
	sqlite3_finalize(st);
	return rc;
}

int buckets_rebuild(weft_db *db)
{
	if (db->readonly)
		return err_set(&db->err, WEFT_EINVAL, "the store is open read-only: cannot rebuild its reconciliation buckets");
	int own = sqlite3_get_autocommit(db->sql);
	int rc = own ? store_begin(db) : WEFT_OK;
	if (rc < 0)
		return rc;
	rc = rebuild_in_txn(db);
	if (!own)
		return rc;
	if (rc < 0) {
		store_rollback(db);
		return rc;
	}
	return store_commit(db);
}

static int compare_scope(weft_db *db, int64_t ref, const char *name, cell_acc *a, void *payload)
{
	uint64_t *rows = payload;
	sqlite3_stmt *st;
	(void)name;
	int rc = sqlite3_prepare_v2(db->sql, "SELECT cell, count, sum FROM weft_neg_bucket WHERE scope = ?1 ORDER BY cell",
	                            -1, &st, NULL);
	if (rc != SQLITE_OK)
		return store_sqlite_error(db, rc, "checking reconciliation buckets");
	sqlite3_bind_int64(st, 1, ref);
	size_t i = 0;
	int same = 1;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (i >= a->n || (uint64_t)sqlite3_column_int64(st, 0) != a->rows[i].cell ||
		    (uint64_t)sqlite3_column_int64(st, 1) != a->rows[i].count || sqlite3_column_bytes(st, 2) != 32 ||
		    memcmp(sqlite3_column_blob(st, 2), a->rows[i].sum, 32) != 0)
			same = 0;
		i++;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return store_sqlite_error(db, rc, "checking reconciliation buckets");
	if (i != a->n)
		same = 0;
	rows[0] += i;
	if (!same)
		rows[1] = 1;
	return WEFT_OK;
}

int buckets_check(weft_db *db, int *ok)
{
	uint64_t state[2] = {0, 0}; /* rows seen, mismatch */
	uint64_t w;
	*ok = 0;
	int rc = buckets_watermark(db, &w);
	if (rc == WEFT_OK)
		rc = each_scope(db, 0, w, compare_scope, state);
	if (rc < 0)
		return rc;
	/* Rows of scopes that are not in weft_scope. */
	sqlite3_stmt *st;
	rc = sqlite3_prepare_v2(db->sql, "SELECT count(*) FROM weft_neg_bucket", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return store_sqlite_error(db, rc, "checking reconciliation buckets");
	rc = sqlite3_step(st);
	uint64_t total = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW)
		return store_sqlite_error(db, rc, "checking reconciliation buckets");
	*ok = !state[1] && total == state[0];
	return WEFT_OK;
}

int buckets_open(weft_db *db)
{
	int rc = sqlite3_create_function_v2(db->sql, "weft_u256_add", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL,
	                                    sql_u256_add, NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		return store_sqlite_error(db, rc, "registering SQL functions");
	if (db->readonly)
		return WEFT_OK;
	if ((rc = buckets_available(db)) != 0)
		return rc < 0 ? rc : WEFT_OK;
	/* A store from before the buckets: build them once. */
	if ((rc = store_begin(db)) < 0)
		return rc;
	if ((rc = buckets_available(db)) == 0 &&
	    (rc = store_exec(db, BUCKETS_TABLE, "creating reconciliation buckets")) == WEFT_OK &&
	    (rc = watermark_set(db, fold_target(db))) == WEFT_OK)
		rc = rebuild_in_txn(db);
	if (rc < 0) {
		store_rollback(db);
		return rc;
	}
	return store_commit(db);
}

/* ----------------------------------------------------------- reading */

int buckets_scan(weft_db *db, const char *const *scopes, size_t n, bucket_cb cb, void *payload)
{
	sqlite3_stmt *st;
	const char *sql = scopes
		? "SELECT cell, count, sum FROM weft_neg_bucket WHERE scope IN "
		  "(SELECT ref FROM weft_scope WHERE name IN (SELECT value FROM json_each(?1))) ORDER BY cell"
		: "SELECT cell, count, sum FROM weft_neg_bucket ORDER BY cell";
	int rc = sqlite3_prepare_v2(db->sql, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return store_sqlite_error(db, rc, "reading reconciliation buckets");
	char *json = NULL;
	if (scopes) {
		size_t len = 3;
		for (size_t i = 0; i < n; i++)
			len += strlen(scopes[i]) + 3;
		if (!(json = weft__malloc(len))) {
			sqlite3_finalize(st);
			return err_set(&db->err, WEFT_ENOMEM, "out of memory reading reconciliation buckets");
		}
		char *p = json;
		*p++ = '[';
		/* Scope names are [A-Za-z0-9._:/-]: nothing to escape. */
		for (size_t i = 0; i < n; i++)
			p += sprintf(p, "%s\"%s\"", i ? "," : "", scopes[i]);
		*p++ = ']';
		*p = '\0';
		sqlite3_bind_text(st, 1, json, -1, SQLITE_STATIC);
	}
	int out = WEFT_OK;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		sqlite3_int64 cell = sqlite3_column_int64(st, 0), count = sqlite3_column_int64(st, 1);
		if (sqlite3_column_bytes(st, 2) != 32 || count < 1 || cell < 0 ||
		    (uint64_t)cell > ((uint64_t)INT64_MAX >> BUCKET_SHIFT)) {
			out = err_set(&db->err, WEFT_ECORRUPT, "a reconciliation bucket is malformed; " CORRUPT_HINT);
			break;
		}
		if ((out = cb(payload, (uint64_t)cell, (uint64_t)count, sqlite3_column_blob(st, 2))) != 0)
			break;
	}
	if (out == WEFT_OK && rc != SQLITE_DONE)
		out = store_sqlite_error(db, rc, "reading reconciliation buckets");
	sqlite3_finalize(st);
	weft__free(json);
	return out;
}

int buckets_verify(weft_db *db)
{
	int ok = 0, began, rc = buckets_available(db);
	if (rc <= 0)
		return rc; /* an older read-only store: sessions list events instead */
	if ((rc = store_read_begin(db, &began)) < 0)
		return rc;
	rc = buckets_check(db, &ok);
	store_read_end(db, began);
	if (rc < 0 || ok)
		return rc;
	if (db->readonly)
		return err_set(&db->err, WEFT_ECORRUPT, "the events are intact but the reconciliation buckets disagree "
		               "with them; open the store writable and run `weft verify` to rebuild them");
	return buckets_rebuild(db);
}

static int fold_scope(weft_db *db, int64_t ref, const char *name, cell_acc *a, void *payload)
{
	(void)name;
	return write_cells(db, ref, a, payload, "folding reconciliation buckets");
}

int buckets_fold(weft_db *db)
{
	if (db->readonly || !sqlite3_get_autocommit(db->sql))
		return WEFT_OK;
	int rc = buckets_available(db);
	if (rc <= 0)
		return rc;
	uint64_t w, to = fold_target(db);
	if ((rc = buckets_watermark(db, &w)) < 0 || to <= w)
		return rc;
	if ((rc = store_begin(db)) < 0)
		return rc;
	sqlite3_stmt *st = NULL;
	/* Again inside the transaction: another connection may have folded. */
	if ((rc = buckets_watermark(db, &w)) == WEFT_OK && to > w) {
		rc = sqlite3_prepare_v2(db->sql, "INSERT INTO weft_neg_bucket(scope, cell, count, sum) VALUES (?1, ?2, ?3, ?4) "
		                        "ON CONFLICT(scope, cell) DO UPDATE SET count = count + excluded.count, "
		                        "sum = weft_u256_add(sum, excluded.sum)", -1, &st, NULL);
		rc = rc == SQLITE_OK ? each_scope(db, w, to, fold_scope, st)
		                     : store_sqlite_error(db, rc, "folding reconciliation buckets");
		sqlite3_finalize(st);
		if (rc == WEFT_OK)
			rc = watermark_set(db, to);
	}
	if (rc < 0) {
		store_rollback(db);
		return rc;
	}
	return store_commit(db);
}
