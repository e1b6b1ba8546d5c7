/* weft_txn: row operations gathered into one "weft.rows" event. */
#include <math.h>
#include <string.h>

#include "core/alloc.h"
#include "core/codec.h"
#include "core/rows.h"
#include "core/schema.h"
#include "core/store.h"

struct weft_txn {
	weft_db *db;
	char scope[WEFT_SCOPE_MAX + 1];
	char idem[WEFT_IDEM_KEY_MAX + 1];
	unsigned char *buf;
	size_t len, cap;
	uint32_t nops;
	size_t last_put;   /* offset of the last put's column count, or 0 */
	size_t last_key;   /* offset and length of its (table, pk) bytes */
	size_t last_key_len;
	int failed;        /* an operation failed: commit refuses */
};

static int reserve(weft_txn *t, size_t more)
{
	if (t->len + more <= t->cap)
		return 0;
	if (t->len + more > WEFT_PAYLOAD_HARD_MAX)
		return err_set(&t->db->err, WEFT_ELIMIT, "this transaction is larger than %u bytes; split it",
		               WEFT_PAYLOAD_HARD_MAX);
	size_t cap = t->cap ? t->cap : 256;
	while (cap < t->len + more)
		cap *= 2;
	unsigned char *b = weft__realloc(t->buf, cap);
	if (!b)
		return err_set(&t->db->err, WEFT_ENOMEM, "out of memory building a transaction");
	t->buf = b;
	t->cap = cap;
	return 0;
}

int weft_txn_begin(weft_txn **out, weft_db *db, const char *scope, const char *idem_key)
{
	if (!db)
		return err_set(NULL, WEFT_EINVAL, "weft_txn_begin: db must not be NULL");
	if (!out)
		return err_set(&db->err, WEFT_EINVAL, "weft_txn_begin: out must not be NULL");
	*out = NULL;
	if (!codec_name_ok(scope, WEFT_SCOPE_MAX))
		return err_set(&db->err, WEFT_EINVAL, "invalid scope \"%.80s\": use 1 to %d characters from A-Z a-z 0-9 . _ : / -",
		               scope ? scope : "(null)", WEFT_SCOPE_MAX);
	if (idem_key && idem_key[0] && !codec_idem_ok(idem_key))
		return err_set(&db->err, WEFT_EINVAL, "invalid idempotency key: use 1 to %d printable ASCII characters without spaces",
		               WEFT_IDEM_KEY_MAX);
	weft_txn *t = weft__calloc(1, sizeof(*t));
	if (!t)
		return err_set(&db->err, WEFT_ENOMEM, "out of memory starting a transaction");
	t->db = db;
	strcpy(t->scope, scope);
	if (idem_key)
		strcpy(t->idem, idem_key);
	if (reserve(t, 5) < 0) {
		weft__free(t);
		return WEFT_ENOMEM;
	}
	t->buf[0] = ROWS_FORMAT_VERSION;
	t->len = 5;
	*out = t;
	return WEFT_OK;
}

void weft_txn_abort(weft_txn *t)
{
	if (!t)
		return;
	weft__free(t->buf);
	weft__free(t);
}

static int fail(weft_txn *t, int code, const char *fmt, const char *a, const char *b)
{
	t->failed = 1;
	return err_set(&t->db->err, code, fmt, a, b);
}

/* Checks table (and column, if given) against the declared schema. */
static int check(weft_txn *t, const char *table, const weft_value *pk, const char *column,
                 const schema_table **tab, int *col)
{
	const schema *s = t->db->schema;
	char lt[SCHEMA_NAME_MAX + 1], lc[SCHEMA_NAME_MAX + 1];
	size_t n = table ? strnlen(table, SCHEMA_NAME_MAX + 1) : 0;
	if (!schema_name_ok(table ? table : "", n))
		return fail(t, WEFT_EINVAL, "\"%.80s\" is not a table name%s", table ? table : "(null)", "");
	for (size_t i = 0; i <= n; i++)
		lt[i] = (char)(table[i] >= 'A' && table[i] <= 'Z' ? table[i] + 32 : table[i]);
	*tab = schema_table_find(s, lt);
	if (!*tab)
		return fail(t, WEFT_EINVAL, "table %s is not declared; declare it with weft_schema_define "
		            "(`weft schema apply`)%s", table, "");
	const schema_col *pkc = &(*tab)->cols[(*tab)->pk];
	if (pk->type != pkc->type)
		return fail(t, WEFT_EINVAL, "the primary key of %s is %s; pass a value of that type",
		            (*tab)->name, schema_type_sql(pkc->type));
	if (pk->type == WEFT_TEXT || pk->type == WEFT_BLOB) {
		if (pk->n && !pk->p)
			return fail(t, WEFT_EINVAL, "primary key of %s points to NULL%s", (*tab)->name, "");
	}
	if (!column)
		return WEFT_OK;
	n = strnlen(column, SCHEMA_NAME_MAX + 1);
	if (!schema_name_ok(column, n))
		return fail(t, WEFT_EINVAL, "\"%.80s\" is not a column name%s", column, "");
	for (size_t i = 0; i <= n; i++)
		lc[i] = (char)(column[i] >= 'A' && column[i] <= 'Z' ? column[i] + 32 : column[i]);
	*col = schema_col_find(*tab, lc);
	if (*col < 0)
		return fail(t, WEFT_EINVAL, "table %s has no column %s; add it to the schema first", (*tab)->name, column);
	return WEFT_OK;
}

static void put_name(weft_txn *t, const char *lname)
{
	size_t n = strlen(lname);
	t->buf[t->len++] = (unsigned char)n;
	memcpy(t->buf + t->len, lname, n);
	t->len += n;
}

/* Starts an operation: kind, table, pk. Returns its key's offset. */
static size_t op_head(weft_txn *t, rowop_kind kind, const schema_table *tab, const weft_value *pk)
{
	t->buf[t->len++] = (unsigned char)kind;
	size_t key = t->len;
	put_name(t, tab->lname);
	t->len = (size_t)(rows_value_put(t->buf + t->len, pk) - t->buf);
	t->nops++;
	return key;
}

int weft_txn_set(weft_txn *t, const char *table, weft_value pk, const char *column, weft_value value)
{
	if (!t)
		return err_set(NULL, WEFT_EINVAL, "weft_txn_set: t must not be NULL");
	const schema_table *tab;
	int col, rc;
	if ((rc = check(t, table, &pk, column, &tab, &col)) < 0)
		return rc;
	const schema_col *c = &tab->cols[col];
	if (c->pk)
		return fail(t, WEFT_EINVAL, "%s is the primary key of %s; it is given as pk, not set", c->name, tab->name);
	if (value.type == WEFT_NULL && c->notnull)
		return fail(t, WEFT_EINVAL, "column %s of %s is NOT NULL", c->name, tab->name);
	if (value.type == WEFT_REAL && isnan(value.r))
		return fail(t, WEFT_EINVAL, "NaN cannot be stored (column %s of %s)", c->name, tab->name);
	if (value.type > WEFT_BLOB || ((value.type == WEFT_TEXT || value.type == WEFT_BLOB) && value.n && !value.p))
		return fail(t, WEFT_EINVAL, "invalid value for column %s of %s", c->name, tab->name);
	if ((rc = reserve(t, 1 + 2 * (1 + SCHEMA_NAME_MAX) + rows_value_size(&pk) + 2 + rows_value_size(&value))) < 0) {
		t->failed = 1;
		return rc;
	}
	/* Consecutive sets on one row share one put operation: encode the
	 * key where a new operation would go and compare it with the last. */
	size_t key = t->len + 1;
	t->len = key;
	put_name(t, tab->lname);
	size_t key_len = (size_t)(rows_value_put(t->buf + t->len, &pk) - t->buf) - key;
	t->len = key - 1;
	int same = t->last_put && t->last_key_len == key_len &&
	           memcmp(t->buf + t->last_key, t->buf + key, key_len) == 0 &&
	           ((unsigned)t->buf[t->last_put] << 8 | t->buf[t->last_put + 1]) < ROWS_MAX_COLS;
	if (!same) {
		t->buf[t->len] = ROWOP_PUT;
		t->len = key + key_len;
		t->nops++;
		t->last_key = key;
		t->last_key_len = key_len;
		t->last_put = t->len;
		t->buf[t->len++] = 0;
		t->buf[t->len++] = 0;
	}
	unsigned ncols = ((unsigned)t->buf[t->last_put] << 8 | t->buf[t->last_put + 1]) + 1;
	t->buf[t->last_put] = (unsigned char)(ncols >> 8);
	t->buf[t->last_put + 1] = (unsigned char)ncols;
	put_name(t, c->lname);
	t->len = (size_t)(rows_value_put(t->buf + t->len, &value) - t->buf);
	return WEFT_OK;
}

int weft_txn_delete(weft_txn *t, const char *table, weft_value pk)
{
	if (!t)
		return err_set(NULL, WEFT_EINVAL, "weft_txn_delete: t must not be NULL");
	const schema_table *tab;
	int col, rc;
	if ((rc = check(t, table, &pk, NULL, &tab, &col)) < 0)
		return rc;
	if ((rc = reserve(t, 2 + SCHEMA_NAME_MAX + rows_value_size(&pk))) < 0) {
		t->failed = 1;
		return rc;
	}
	op_head(t, ROWOP_DELETE, tab, &pk);
	t->last_put = 0;
	return WEFT_OK;
}

int weft_txn_incr(weft_txn *t, const char *table, weft_value pk, const char *column, int64_t delta)
{
	if (!t)
		return err_set(NULL, WEFT_EINVAL, "weft_txn_incr: t must not be NULL");
	const schema_table *tab;
	int col, rc;
	if ((rc = check(t, table, &pk, column, &tab, &col)) < 0)
		return rc;
	const schema_col *c = &tab->cols[col];
	if (c->type != WEFT_INTEGER || c->pk)
		return fail(t, WEFT_EINVAL, "column %s of %s is not an INTEGER counter; only INTEGER columns can be incremented",
		            c->name, tab->name);
	if ((rc = reserve(t, 3 + 2 * SCHEMA_NAME_MAX + rows_value_size(&pk) + 8)) < 0) {
		t->failed = 1;
		return rc;
	}
	op_head(t, ROWOP_INCR, tab, &pk);
	put_name(t, c->lname);
	codec_put_u64(t->buf + t->len, (uint64_t)delta);
	t->len += 8;
	t->last_put = 0;
	return WEFT_OK;
}

int weft_txn_commit(weft_id *out, weft_txn *t)
{
	if (!t)
		return err_set(NULL, WEFT_EINVAL, "weft_txn_commit: t must not be NULL");
	weft_db *db = t->db;
	int rc;
	if (t->failed) {
		rc = err_set(&db->err, WEFT_EINVAL, "an operation of this transaction failed; nothing was written "
		             "(fix the operation and start again)");
	} else if (t->nops == 0) {
		rc = err_set(&db->err, WEFT_EINVAL, "the transaction has no operations; nothing was written");
	} else {
		codec_put_u32(t->buf + 1, t->nops);
		weft_id id;
		rc = weft_db_append(&id, db, t->scope, ROWS_KIND, t->idem[0] ? t->idem : NULL, t->buf, t->len);
		if (rc >= 0 && out)
			*out = id;
	}
	weft_txn_abort(t);
	return rc;
}
