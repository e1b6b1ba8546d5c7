/* JNI glue for org.weft.Weft: one native method per weft.h call. */
#include <jni.h>
#include <stdlib.h>
#include <string.h>

#include "weft.h"

typedef struct txn_handle {
	weft_txn *t;
	weft_db *db;
} txn_handle;

static void throw_weft(JNIEnv *env, int code, const char *msg)
{
	jclass cls = (*env)->FindClass(env, "org/weft/Weft$WeftException");
	if (!cls)
		return;
	jmethodID ctor = (*env)->GetMethodID(env, cls, "<init>", "(ILjava/lang/String;Ljava/lang/String;)V");
	jstring name = (*env)->NewStringUTF(env, weft_errname(code));
	jstring text = (*env)->NewStringUTF(env, msg);
	jobject ex = (*env)->NewObject(env, cls, ctor, code, name, text);
	if (ex)
		(*env)->Throw(env, ex);
}

/* Java strings as C strings for the length of a call. */
typedef struct jstr {
	JNIEnv *env;
	jstring s;
	const char *c;
} jstr;

static jstr js(JNIEnv *env, jstring s)
{
	jstr r = {env, s, s ? (*env)->GetStringUTFChars(env, s, NULL) : NULL};
	return r;
}

static void js_free(jstr *r)
{
	if (r->c)
		(*r->env)->ReleaseStringUTFChars(r->env, r->s, r->c);
}

static int check(JNIEnv *env, weft_db *db, int rc)
{
	if (rc < 0)
		throw_weft(env, rc, db ? weft_errmsg(db) : weft_error_last());
	return rc;
}

static jstring id_string(JNIEnv *env, const weft_id *id, int duplicate)
{
	char hex[66];
	weft_id_to_hex(hex + 1, id);
	hex[0] = '=';
	return (*env)->NewStringUTF(env, duplicate ? hex : hex + 1);
}

JNIEXPORT jstring JNICALL Java_org_weft_Weft_version(JNIEnv *env, jclass cls)
{
	(void)cls;
	return (*env)->NewStringUTF(env, weft_version());
}

JNIEXPORT jlong JNICALL Java_org_weft_Weft_nOpen(JNIEnv *env, jclass cls, jstring path, jboolean create, jstring pass)
{
	(void)cls;
	jstr p = js(env, path), pp = js(env, pass);
	weft_open_options o = WEFT_OPEN_OPTIONS_INIT;
	o.flags = create ? WEFT_OPEN_CREATE : 0;
	o.passphrase = pp.c;
	weft_db *db = NULL;
	int rc = p.c ? weft_db_open(&db, p.c, &o) : WEFT_EINVAL;
	js_free(&p);
	js_free(&pp);
	check(env, NULL, rc);
	return (jlong)(intptr_t)db;
}

JNIEXPORT void JNICALL Java_org_weft_Weft_nClose(JNIEnv *env, jclass cls, jlong db)
{
	(void)env, (void)cls;
	weft_db_close((weft_db *)(intptr_t)db);
}

JNIEXPORT jstring JNICALL Java_org_weft_Weft_nDeviceId(JNIEnv *env, jclass cls, jlong db)
{
	(void)cls;
	return (*env)->NewStringUTF(env, weft_db_device_id((weft_db *)(intptr_t)db));
}

JNIEXPORT jstring JNICALL Java_org_weft_Weft_nAppend(JNIEnv *env, jclass cls, jlong h, jstring scope, jstring kind,
                                                     jstring idem, jbyteArray payload)
{
	(void)cls;
	weft_db *db = (weft_db *)(intptr_t)h;
	jstr s = js(env, scope), k = js(env, kind), i = js(env, idem);
	jsize n = payload ? (*env)->GetArrayLength(env, payload) : 0;
	jbyte *b = payload ? (*env)->GetByteArrayElements(env, payload, NULL) : NULL;
	weft_id id;
	int rc = weft_db_append(&id, db, s.c, k.c, i.c, b, (size_t)n);
	if (b)
		(*env)->ReleaseByteArrayElements(env, payload, b, JNI_ABORT);
	js_free(&s), js_free(&k), js_free(&i);
	if (check(env, db, rc) < 0)
		return NULL;
	return id_string(env, &id, 0);
}

JNIEXPORT void JNICALL Java_org_weft_Weft_nSchemaDefine(JNIEnv *env, jclass cls, jlong h, jstring ddl)
{
	(void)cls;
	weft_db *db = (weft_db *)(intptr_t)h;
	jstr d = js(env, ddl);
	int rc = weft_schema_define(db, d.c);
	js_free(&d);
	check(env, db, rc);
}

JNIEXPORT jlong JNICALL Java_org_weft_Weft_nTxnBegin(JNIEnv *env, jclass cls, jlong h, jstring scope, jstring idem)
{
	(void)cls;
	weft_db *db = (weft_db *)(intptr_t)h;
	txn_handle *t = calloc(1, sizeof(*t));
	if (!t) {
		throw_weft(env, WEFT_ENOMEM, "out of memory");
		return 0;
	}
	t->db = db;
	jstr s = js(env, scope), i = js(env, idem);
	int rc = weft_txn_begin(&t->t, db, s.c, i.c);
	js_free(&s), js_free(&i);
	if (check(env, db, rc) < 0) {
		free(t);
		return 0;
	}
	return (jlong)(intptr_t)t;
}

static void txn_op(JNIEnv *env, jlong h, jstring table, jstring pk, jstring column, int op, jstring text, jlong num)
{
	txn_handle *t = (txn_handle *)(intptr_t)h;
	jstr tb = js(env, table), k = js(env, pk), c = js(env, column), v = js(env, text);
	weft_value key = weft_text(k.c);
	int rc;
	if (op == 0)
		rc = weft_txn_set(t->t, tb.c, key, c.c, v.c ? weft_text(v.c) : weft_null());
	else if (op == 1)
		rc = weft_txn_set(t->t, tb.c, key, c.c, weft_int(num));
	else if (op == 2)
		rc = weft_txn_incr(t->t, tb.c, key, c.c, num);
	else
		rc = weft_txn_delete(t->t, tb.c, key);
	js_free(&tb), js_free(&k), js_free(&c), js_free(&v);
	check(env, t->db, rc);
}

JNIEXPORT void JNICALL Java_org_weft_Weft_nSetText(JNIEnv *env, jclass cls, jlong t, jstring table, jstring pk,
                                                   jstring col, jstring value)
{
	(void)cls;
	txn_op(env, t, table, pk, col, 0, value, 0);
}

JNIEXPORT void JNICALL Java_org_weft_Weft_nSetLong(JNIEnv *env, jclass cls, jlong t, jstring table, jstring pk,
                                                   jstring col, jlong value)
{
	(void)cls;
	txn_op(env, t, table, pk, col, 1, NULL, value);
}

JNIEXPORT void JNICALL Java_org_weft_Weft_nIncr(JNIEnv *env, jclass cls, jlong t, jstring table, jstring pk,
                                                jstring col, jlong delta)
{
	(void)cls;
	txn_op(env, t, table, pk, col, 2, NULL, delta);
}

JNIEXPORT void JNICALL Java_org_weft_Weft_nDelete(JNIEnv *env, jclass cls, jlong t, jstring table, jstring pk)
{
	(void)cls;
	txn_op(env, t, table, pk, NULL, 3, NULL, 0);
}

JNIEXPORT jstring JNICALL Java_org_weft_Weft_nCommit(JNIEnv *env, jclass cls, jlong h)
{
	(void)cls;
	txn_handle *t = (txn_handle *)(intptr_t)h;
	weft_id id;
	int rc = weft_txn_commit(&id, t->t);
	weft_db *db = t->db;
	free(t);
	if (check(env, db, rc) < 0)
		return NULL;
	return id_string(env, &id, rc == WEFT_DUPLICATE);
}

JNIEXPORT void JNICALL Java_org_weft_Weft_nAbort(JNIEnv *env, jclass cls, jlong h)
{
	(void)env, (void)cls;
	txn_handle *t = (txn_handle *)(intptr_t)h;
	weft_txn_abort(t->t);
	free(t);
}

typedef struct rows {
	JNIEnv *env;
	jclass str_arr;
	int n;
	int cap;
	jobjectArray list; /* Object[] of String[] */
} rows;

static jstring value_string(JNIEnv *env, const weft_value *v)
{
	char buf[64];
	switch (v->type) {
	case WEFT_INTEGER:
		snprintf(buf, sizeof(buf), "%lld", (long long)v->i);
		return (*env)->NewStringUTF(env, buf);
	case WEFT_REAL:
		snprintf(buf, sizeof(buf), "%.17g", v->r);
		return (*env)->NewStringUTF(env, buf);
	case WEFT_TEXT: {
		char *s = malloc(v->n + 1);
		if (!s)
			return NULL;
		memcpy(s, v->p, v->n);
		s[v->n] = '\0';
		jstring r = (*env)->NewStringUTF(env, s);
		free(s);
		return r;
	}
	case WEFT_BLOB: {
		char *s = malloc(2 * v->n + 1);
		if (!s)
			return NULL;
		for (size_t i = 0; i < v->n; i++)
			snprintf(s + 2 * i, 3, "%02x", ((const unsigned char *)v->p)[i]);
		s[2 * v->n] = '\0';
		jstring r = (*env)->NewStringUTF(env, s);
		free(s);
		return r;
	}
	default:
		return NULL;
	}
}

static int add_row(rows *r, jobjectArray row)
{
	if (r->n == r->cap) {
		int cap = r->cap ? r->cap * 2 : 16;
		jobjectArray bigger = (*r->env)->NewObjectArray(r->env, cap, r->str_arr, NULL);
		if (!bigger)
			return 1;
		for (int i = 0; i < r->n; i++)
			(*r->env)->SetObjectArrayElement(r->env, bigger, i, (*r->env)->GetObjectArrayElement(r->env, r->list, i));
		r->list = bigger;
		r->cap = cap;
	}
	(*r->env)->SetObjectArrayElement(r->env, r->list, r->n++, row);
	return 0;
}

static int on_row(int n, const char *const *names, const weft_value *values, void *p)
{
	rows *r = p;
	JNIEnv *env = r->env;
	jclass str = (*env)->FindClass(env, "java/lang/String");
	if (r->n == 0) {
		jobjectArray head = (*env)->NewObjectArray(env, n, str, NULL);
		for (int i = 0; i < n; i++) {
			jstring name = (*env)->NewStringUTF(env, names[i]);
			(*env)->SetObjectArrayElement(env, head, i, name);
			(*env)->DeleteLocalRef(env, name);
		}
		int full = add_row(r, head);
		(*env)->DeleteLocalRef(env, head);
		if (full)
			return 1;
	}
	jobjectArray row = (*env)->NewObjectArray(env, n, str, NULL);
	for (int i = 0; i < n; i++) {
		jstring v = value_string(env, &values[i]);
		(*env)->SetObjectArrayElement(env, row, i, v);
		if (v)
			(*env)->DeleteLocalRef(env, v);
	}
	int full = add_row(r, row);
	(*env)->DeleteLocalRef(env, row);
	(*env)->DeleteLocalRef(env, str);
	return full;
}

JNIEXPORT jobjectArray JNICALL Java_org_weft_Weft_nQuery(JNIEnv *env, jclass cls, jlong h, jstring sql)
{
	(void)cls;
	weft_db *db = (weft_db *)(intptr_t)h;
	rows r = {env, (*env)->FindClass(env, "[Ljava/lang/String;"), 0, 0, NULL};
	jstr q = js(env, sql);
	int rc = weft_db_query(db, q.c, on_row, &r);
	js_free(&q);
	if (check(env, db, rc) < 0)
		return NULL;
	jobjectArray out = (*env)->NewObjectArray(env, r.n, r.str_arr, NULL);
	for (int i = 0; i < r.n; i++)
		(*env)->SetObjectArrayElement(env, out, i, (*env)->GetObjectArrayElement(env, r.list, i));
	return out;
}

JNIEXPORT void JNICALL Java_org_weft_Weft_nRebuild(JNIEnv *env, jclass cls, jlong h)
{
	(void)cls;
	weft_db *db = (weft_db *)(intptr_t)h;
	check(env, db, weft_db_rebuild(db, NULL, NULL));
}

JNIEXPORT void JNICALL Java_org_weft_Weft_nVerify(JNIEnv *env, jclass cls, jlong h)
{
	(void)cls;
	weft_db *db = (weft_db *)(intptr_t)h;
	check(env, db, weft_db_verify(NULL, db, NULL, NULL));
}

JNIEXPORT jlongArray JNICALL Java_org_weft_Weft_nSyncLocal(JNIEnv *env, jclass cls, jlong a, jlong b)
{
	(void)cls;
	weft_session_stats st;
	weft_db *da = (weft_db *)(intptr_t)a;
	if (check(env, da, weft_sync_local(&st, da, (weft_db *)(intptr_t)b, NULL)) < 0)
		return NULL;
	jlong v[3] = {(jlong)st.events_sent, (jlong)st.events_received, (jlong)st.round_trips};
	jlongArray out = (*env)->NewLongArray(env, 3);
	if (out)
		(*env)->SetLongArrayRegion(env, out, 0, 3, v);
	return out;
}
