package org.weft;

/**
 * Java bindings (JNI) over include/weft.h: a thin layer, one native call per
 * C function. Errors become {@link WeftException} with the C code, its name
 * and the message weft wrote for a person.
 *
 * <pre>
 * try (Weft.Store db = Weft.Store.open("app.db", true, null)) {
 *     db.schemaDefine("CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT, votes INTEGER)");
 *     try (Weft.Txn t = db.begin("home", "req-1")) {
 *         t.set("todo", "t1", "title", "buy milk");
 *         t.incr("todo", "t1", "votes", 1);
 *         t.commit();
 *     }
 *     String[][] rows = db.query("SELECT * FROM todo");
 * }
 * </pre>
 * The native library is loaded from the system property weft.jni (a path)
 * or from java.library.path as "weft_jni".
 */
public final class Weft {
    static {
        String path = System.getProperty("weft.jni");
        if (path != null)
            System.load(path);
        else
            System.loadLibrary("weft_jni");
    }

    private Weft() {}

    /** A failed weft call. */
    public static final class WeftException extends RuntimeException {
        public final int code;
        public final String name;

        public WeftException(int code, String name, String message) {
            super(name + ": " + message);
            this.code = code;
            this.name = name;
        }
    }

    public static native String version();

    /** An open store (weft_db). */
    public static final class Store implements AutoCloseable {
        private long db;

        private Store(long db) { this.db = db; }

        public static Store open(String path, boolean create, String passphrase) {
            return new Store(nOpen(path, create, passphrase));
        }

        public String deviceId() { return nDeviceId(db); }

        /** Appends a raw event; returns its id (hex), or the earlier one for a reused key. */
        public String append(String scope, String kind, String idemKey, byte[] payload) {
            return nAppend(db, scope, kind, idemKey, payload);
        }

        public void schemaDefine(String ddl) { nSchemaDefine(db, ddl); }

        public Txn begin(String scope, String idemKey) { return new Txn(nTxnBegin(db, scope, idemKey)); }

        /** Read-only query: row 0 holds the column names; values as text, SQL NULL as null. */
        public String[][] query(String sql) { return nQuery(db, sql); }

        public void rebuild() { nRebuild(db); }

        public void verify() { nVerify(db); }

        /** Syncs with another open store: {events sent, events received, round trips}. */
        public long[] syncLocal(Store other) { return nSyncLocal(db, other.db); }

        @Override
        public void close() {
            if (db != 0) {
                nClose(db);
                db = 0;
            }
        }
    }

    /** Row operations committed as one signed event (weft_txn_*). */
    public static final class Txn implements AutoCloseable {
        private long t;
        private boolean duplicate;

        private Txn(long t) { this.t = t; }

        public void set(String table, String pk, String column, String value) { nSetText(t, table, pk, column, value); }

        public void set(String table, String pk, String column, long value) { nSetLong(t, table, pk, column, value); }

        public void incr(String table, String pk, String column, long delta) { nIncr(t, table, pk, column, delta); }

        public void delete(String table, String pk) { nDelete(t, table, pk); }

        /** Commits; returns the event id (hex). */
        public String commit() {
            long tt = t;
            t = 0;
            String id = nCommit(tt);
            duplicate = id.startsWith("=");
            return duplicate ? id.substring(1) : id;
        }

        /** True if the idempotency key was used before and nothing was written. */
        public boolean wasDuplicate() { return duplicate; }

        @Override
        public void close() {
            if (t != 0) {
                nAbort(t);
                t = 0;
            }
        }
    }

    private static native long nOpen(String path, boolean create, String passphrase);
    private static native void nClose(long db);
    private static native String nDeviceId(long db);
    private static native String nAppend(long db, String scope, String kind, String idem, byte[] payload);
    private static native void nSchemaDefine(long db, String ddl);
    private static native long nTxnBegin(long db, String scope, String idem);
    private static native void nSetText(long t, String table, String pk, String column, String value);
    private static native void nSetLong(long t, String table, String pk, String column, long value);
    private static native void nIncr(long t, String table, String pk, String column, long delta);
    private static native void nDelete(long t, String table, String pk);
    private static native String nCommit(long t);
    private static native void nAbort(long t);
    private static native String[][] nQuery(long db, String sql);
    private static native void nRebuild(long db);
    private static native void nVerify(long db);
    private static native long[] nSyncLocal(long a, long b);
}
