"""weft — Python bindings (ctypes) over include/weft.h.

A thin layer: every call maps to one C function, errors become WeftError
carrying the C code, its name and the message weft wrote for a person.

    import weft
    with weft.Store("app.db", create=True) as db:
        db.schema_define("CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT, votes INTEGER)")
        with db.transaction("home", idem_key="req-1") as t:
            t.set("todo", "t1", "title", "buy milk")
            t.incr("todo", "t1", "votes", 1)
        print(db.query("SELECT * FROM todo"))

The shared library is found through $WEFT_LIB, then the usual loader path.
"""
import ctypes
import ctypes.util
import os

__all__ = ["Store", "WeftError", "load"]

_lib = None


class WeftError(Exception):
    """A weft call failed: code (negative WEFT_E*), name and message."""

    def __init__(self, code, name, message):
        super().__init__("%s: %s" % (name, message))
        self.code = code
        self.name = name
        self.message = message


class _OpenOptions(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint), ("flags", ctypes.c_uint),
                ("key_path", ctypes.c_char_p), ("passphrase", ctypes.c_char_p),
                ("secret_key", ctypes.c_void_p), ("max_payload", ctypes.c_uint32),
                ("max_drift_ms", ctypes.c_uint64), ("clock", ctypes.c_void_p),
                ("clock_payload", ctypes.c_void_p)]


class _Id(ctypes.Structure):
    _fields_ = [("bytes", ctypes.c_ubyte * 32)]


class _Value(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("i", ctypes.c_int64), ("r", ctypes.c_double),
                ("p", ctypes.c_void_p), ("n", ctypes.c_size_t)]


class _Stats(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "events_sent", "events_received", "bytes_sent", "bytes_received", "round_trips",
        "reconcile_bytes", "events_to_fetch", "events_refused")] + [("result", ctypes.c_int)]


_ROW_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p),
                           ctypes.POINTER(_Value), ctypes.c_void_p)

WEFT_OK, WEFT_DUPLICATE = 0, 1
WEFT_OPEN_CREATE, WEFT_OPEN_READONLY = 1, 2
_NULL, _INTEGER, _REAL, _TEXT, _BLOB = range(5)


def load(path=None):
    """Loads libweft (path, $WEFT_LIB, or the loader's search path)."""
    global _lib
    if _lib is not None and path is None:
        return _lib
    path = path or os.environ.get("WEFT_LIB") or ctypes.util.find_library("weft") or "libweft.so"
    lib = ctypes.CDLL(path)
    P, I, S = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    sigs = {
        "weft_version": (S, []),
        "weft_errname": (S, [I]),
        "weft_error_last": (S, []),
        "weft_errmsg": (S, [P]),
        "weft_db_open": (I, [ctypes.POINTER(P), S, ctypes.POINTER(_OpenOptions)]),
        "weft_db_close": (None, [P]),
        "weft_db_device_id": (S, [P]),
        "weft_db_append": (I, [ctypes.POINTER(_Id), P, S, S, S, ctypes.c_char_p, ctypes.c_size_t]),
        "weft_schema_define": (I, [P, S]),
        "weft_txn_begin": (I, [ctypes.POINTER(P), P, S, S]),
        "weft_txn_set": (I, [P, S, _Value, S, _Value]),
        "weft_txn_delete": (I, [P, S, _Value]),
        "weft_txn_incr": (I, [P, S, _Value, S, ctypes.c_int64]),
        "weft_txn_commit": (I, [ctypes.POINTER(_Id), P]),
        "weft_txn_abort": (None, [P]),
        "weft_db_query": (I, [P, S, _ROW_CB, P]),
        "weft_db_rebuild": (I, [P, P, P]),
        "weft_db_verify": (I, [P, P, P, P]),
        "weft_sync_local": (I, [ctypes.POINTER(_Stats), P, P, P]),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args
    _lib = lib
    return lib


def _text(s):
    return None if s is None else s.encode()


def _value(v, keep):
    """Python value -> weft_value; keep holds buffers alive for the call."""
    if v is None:
        return _Value(_NULL, 0, 0.0, None, 0)
    if isinstance(v, bool) or isinstance(v, int):
        return _Value(_INTEGER, int(v), 0.0, None, 0)
    if isinstance(v, float):
        return _Value(_REAL, 0, v, None, 0)
    if isinstance(v, str):
        v = v.encode()
        kind = _TEXT
    elif isinstance(v, (bytes, bytearray)):
        kind = _BLOB
    else:
        raise TypeError("weft values are None, int, float, str or bytes, not %s" % type(v).__name__)
    buf = ctypes.create_string_buffer(bytes(v), len(v) + 1)
    keep.append(buf)
    return _Value(kind, 0, 0.0, ctypes.cast(buf, ctypes.c_void_p), len(v))


def _from_value(v):
    if v.type == _INTEGER:
        return v.i
    if v.type == _REAL:
        return v.r
    if v.type in (_TEXT, _BLOB):
        data = ctypes.string_at(v.p, v.n) if v.n else b""
        return data.decode() if v.type == _TEXT else data
    return None


class Transaction:
    """Row operations that commit as one signed event (see weft_txn_*)."""

    def __init__(self, store, scope, idem_key):
        self._store = store
        self._t = ctypes.c_void_p()
        store._check(load().weft_txn_begin(ctypes.byref(self._t), store._db, _text(scope), _text(idem_key)))
        self.event_id = None
        self.duplicate = False

    def set(self, table, pk, column, value):
        keep = []
        self._store._check(load().weft_txn_set(self._t, _text(table), _value(pk, keep), _text(column),
                                               _value(value, keep)))

    def delete(self, table, pk):
        keep = []
        self._store._check(load().weft_txn_delete(self._t, _text(table), _value(pk, keep)))

    def incr(self, table, pk, column, delta):
        keep = []
        self._store._check(load().weft_txn_incr(self._t, _text(table), _value(pk, keep), _text(column), delta))

    def commit(self):
        out = _Id()
        t, self._t = self._t, None
        rc = self._store._check(load().weft_txn_commit(ctypes.byref(out), t))
        self.event_id = bytes(out.bytes).hex()
        self.duplicate = rc == WEFT_DUPLICATE
        return self.event_id

    def abort(self):
        if self._t:
            load().weft_txn_abort(self._t)
            self._t = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None and self._t:
            self.commit()
        else:
            self.abort()
        return False


class Store:
    """An open weft store (weft_db_open); use as a context manager."""

    def __init__(self, path, create=False, readonly=False, passphrase=None):
        lib = load()
        opts = _OpenOptions(1, (WEFT_OPEN_CREATE if create else 0) | (WEFT_OPEN_READONLY if readonly else 0),
                            None, _text(passphrase), None, 0, 0, None, None)
        self._db = ctypes.c_void_p()
        rc = lib.weft_db_open(ctypes.byref(self._db), path.encode(), ctypes.byref(opts))
        if rc < 0:
            raise WeftError(rc, lib.weft_errname(rc).decode(), lib.weft_error_last().decode())

    def _check(self, rc):
        if rc < 0:
            lib = load()
            raise WeftError(rc, lib.weft_errname(rc).decode(), lib.weft_errmsg(self._db).decode())
        return rc

    @property
    def device_id(self):
        return load().weft_db_device_id(self._db).decode()

    def append(self, scope, kind, payload, idem_key=None):
        """Appends a raw event; returns (id hex, duplicate?)."""
        out = _Id()
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        rc = self._check(load().weft_db_append(ctypes.byref(out), self._db, _text(scope), _text(kind),
                                               _text(idem_key), data, len(data)))
        return bytes(out.bytes).hex(), rc == WEFT_DUPLICATE

    def schema_define(self, ddl):
        self._check(load().weft_schema_define(self._db, _text(ddl)))

    def transaction(self, scope, idem_key=None):
        return Transaction(self, scope, idem_key)

    def query(self, sql):
        """Runs a read-only query; returns a list of dicts."""
        rows = []

        def on_row(n, names, values, payload):
            rows.append({names[i].decode(): _from_value(values[i]) for i in range(n)})
            return 0

        cb = _ROW_CB(on_row)
        self._check(load().weft_db_query(self._db, _text(sql), cb, None))
        return rows

    def rebuild(self):
        self._check(load().weft_db_rebuild(self._db, None, None))

    def verify(self):
        self._check(load().weft_db_verify(None, self._db, None, None))

    def sync_local(self, other):
        """Syncs with another open store in this process; returns stats."""
        st = _Stats()
        self._check(load().weft_sync_local(ctypes.byref(st), self._db, other._db, None))
        return {name: getattr(st, name) for name, _ in _Stats._fields_}

    def close(self):
        if self._db:
            load().weft_db_close(self._db)
            self._db = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
