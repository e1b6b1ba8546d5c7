#include "core/trust.h"

#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/codec.h"
#include "platform/platform.h"

int weft_trust_add(weft_db *db, const unsigned char pk[32], const char *const *scopes, size_t n, unsigned perms)
{
	if (!db)
		return err_set(NULL, WEFT_EINVAL, "weft_trust_add: db must not be NULL");
	if (!pk || perms & ~(WEFT_TRUST_READ | WEFT_TRUST_WRITE) || (scopes && n == 0))
		return err_set(&db->err, WEFT_EINVAL, "weft_trust_add: a key, WEFT_TRUST_* permissions and either "
		               "NULL or at least one scope are needed");
	if (db->readonly)
		return err_set(&db->err, WEFT_EPERM, "the store was opened read-only");
	size_t len = 2;
	for (size_t i = 0; scopes && i < n; i++) {
		if (!codec_name_ok(scopes[i], WEFT_SCOPE_MAX))
			return err_set(&db->err, WEFT_EINVAL, "invalid scope \"%.80s\"", scopes[i] ? scopes[i] : "(null)");
		len += strlen(scopes[i]) + 1;
	}
	char *list = weft__malloc(len);
	if (!list)
		return err_set(&db->err, WEFT_ENOMEM, "out of memory");
	if (!scopes) {
		strcpy(list, "*");
	} else {
		list[0] = '\0';
		for (size_t i = 0; i < n; i++) {
			if (i)
				strcat(list, ",");
			strcat(list, scopes[i]);
		}
	}
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db->sql,
		"INSERT INTO weft_trust(pk, scopes, perms, tls_hash, added) VALUES (?1, ?2, ?3, NULL, ?4) "
		"ON CONFLICT(pk) DO UPDATE SET scopes = excluded.scopes, perms = excluded.perms", -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_blob(st, 1, pk, 32, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, list, -1, SQLITE_STATIC);
		sqlite3_bind_int(st, 3, (int)perms);
		sqlite3_bind_int64(st, 4, (sqlite3_int64)store_wall_ms(db));
		rc = sqlite3_step(st);
		sqlite3_finalize(st);
	}
	weft__free(list);
	return rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, "updating the trust store");
}

int weft_trust_remove(weft_db *db, const unsigned char pk[32])
{
	if (!db || !pk)
		return err_set(db ? &db->err : NULL, WEFT_EINVAL, "weft_trust_remove: NULL argument");
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db->sql, "DELETE FROM weft_trust WHERE pk = ?1", -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_blob(st, 1, pk, 32, SQLITE_STATIC);
		rc = sqlite3_step(st);
		sqlite3_finalize(st);
	}
	if (rc != SQLITE_DONE)
		return store_sqlite_error(db, rc, "updating the trust store");
	if (sqlite3_changes(db->sql) == 0) {
		char dev[WEFT_DEVICE_ID_LEN + 1];
		weft_device_id_format(dev, pk);
		return err_set(&db->err, WEFT_ENOTFOUND, "device %s is not in the trust store", dev);
	}
	return WEFT_OK;
}

static int list(weft_db *db, const unsigned char *pk, weft_trust_cb cb, void *payload)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db->sql, pk ? "SELECT pk, scopes, perms, tls_hash FROM weft_trust WHERE pk = ?1"
	                                        : "SELECT pk, scopes, perms, tls_hash FROM weft_trust ORDER BY added, pk",
	                            -1, &st, NULL);
	if (rc != SQLITE_OK)
		return store_sqlite_error(db, rc, "reading the trust store");
	if (pk)
		sqlite3_bind_blob(st, 1, pk, 32, SQLITE_STATIC);
	int found = 0, out = WEFT_OK;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		weft_trust_entry e;
		memset(&e, 0, sizeof(e));
		if (sqlite3_column_bytes(st, 0) != 32)
			continue;
		e.pk = sqlite3_column_blob(st, 0);
		e.scopes = (const char *)sqlite3_column_text(st, 1);
		e.perms = (unsigned)sqlite3_column_int(st, 2);
		if (sqlite3_column_bytes(st, 3) == 32) {
			e.tls_pinned = 1;
			memcpy(e.tls_key_hash, sqlite3_column_blob(st, 3), 32);
		}
		found = 1;
		if (cb(&e, payload)) {
			out = err_set(&db->err, WEFT_EUSER, "stopped by the trust callback");
			break;
		}
	}
	sqlite3_finalize(st);
	if (out == WEFT_OK && rc != SQLITE_DONE)
		return store_sqlite_error(db, rc, "reading the trust store");
	if (out == WEFT_OK && pk && !found) {
		char dev[WEFT_DEVICE_ID_LEN + 1];
		weft_device_id_format(dev, pk);
		return err_set(&db->err, WEFT_ENOTFOUND, "device %s is not in the trust store; add it with `weft trust add %s`",
		               dev, dev);
	}
	return out;
}

int weft_trust_list(weft_db *db, weft_trust_cb cb, void *payload)
{
	if (!db || !cb)
		return err_set(db ? &db->err : NULL, WEFT_EINVAL, "weft_trust_list: NULL argument");
	return list(db, NULL, cb, payload);
}

int weft_trust_get(weft_db *db, const unsigned char pk[32], weft_trust_cb cb, void *payload)
{
	if (!db || !cb || !pk)
		return err_set(db ? &db->err : NULL, WEFT_EINVAL, "weft_trust_get: NULL argument");
	return list(db, pk, cb, payload);
}

typedef struct lookup {
	int pinned;
	unsigned char hash[32];
	unsigned perms;
	char scopes[4096];
} lookup;

static int take_entry(const weft_trust_entry *e, void *p)
{
	lookup *l = p;
	l->pinned = e->tls_pinned;
	memcpy(l->hash, e->tls_key_hash, 32);
	l->perms = e->perms;
	snprintf(l->scopes, sizeof(l->scopes), "%s", e->scopes ? e->scopes : "");
	return 0;
}

int trust_lookup(weft_db *db, const unsigned char pk[32], int *pinned, unsigned char hash[32])
{
	lookup l;
	int rc = list(db, pk, take_entry, &l);
	if (rc == WEFT_ENOTFOUND)
		return 0;
	if (rc < 0)
		return rc;
	if (pinned)
		*pinned = l.pinned;
	if (hash)
		memcpy(hash, l.hash, 32);
	return 1;
}

int trust_pin(weft_db *db, const unsigned char pk[32], const unsigned char hash[32])
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db->sql, "UPDATE weft_trust SET tls_hash = ?2 WHERE pk = ?1", -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_blob(st, 1, pk, 32, SQLITE_STATIC);
		sqlite3_bind_blob(st, 2, hash, 32, SQLITE_STATIC);
		rc = sqlite3_step(st);
		sqlite3_finalize(st);
	}
	return rc == SQLITE_DONE ? WEFT_OK : store_sqlite_error(db, rc, "pinning a TLS key");
}

static int scope_listed(const char *list, const char *scope)
{
	if (strcmp(list, "*") == 0)
		return 1;
	size_t n = strlen(scope);
	for (const char *p = list; *p;) {
		size_t k = strcspn(p, ",");
		if (k == n && strncmp(p, scope, n) == 0)
			return 1;
		p += k + (p[k] == ',');
	}
	return 0;
}

int trust_authorize(const unsigned char peer[32], const char *const *scopes, size_t n, int *readable,
                    int *writable, void *payload)
{
	weft_db *db = payload;
	lookup l;
	int rc = list(db, peer, take_entry, &l);
	if (rc < 0)
		return rc == WEFT_ENOTFOUND ? WEFT_EPERM : rc;
	for (size_t i = 0; i < n; i++) {
		int in = scope_listed(l.scopes, scopes[i]);
		readable[i] = in && (l.perms & WEFT_TRUST_READ);
		writable[i] = in && (l.perms & WEFT_TRUST_WRITE);
	}
	return WEFT_OK;
}
