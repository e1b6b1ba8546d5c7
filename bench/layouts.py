#!/usr/bin/env python3
# Target 8 evidence (bench/RESULTS.md): alternative on-disk layouts of the
# events of a weft store, built incrementally in arrival order and in
# batches like weft builds them; prints bytes per event beyond the payload,
# per layout and per b-tree (dbstat).
#   python3 bench/layouts.py build-bench/bench-work/cache/log-v1-<tag>-100000-S.db
# (a store of schema 2 or 3; ids of a schema 3 store are re-derived here).
import atexit, hashlib, os, shutil, sqlite3, struct, sys, tempfile
src = sys.argv[1]
work = tempfile.mkdtemp(prefix="weft-layouts-")
atexit.register(shutil.rmtree, work, True)
s = sqlite3.connect(src)
ver = s.execute("PRAGMA user_version").fetchone()[0]
if ver >= 3:
    # Store schema 3 or 4 (core/db.c since target 8 was met; 4 adds only seals,
    # which a closed store no longer holds): ids re-derived from
    # the rows, as core/store.c does (docs/FORMAT.md sections 1 and 5).
    ids = {}
    rows = []
    for (n, author, pk, seq, hlc, scope, sname, kind, sig, payload, prev, erased, idem, idp) in s.execute(
            "SELECT e.n, e.author, a.pk, e.seq, e.hlc, e.scope, sc.name, k.name, e.sig, e.payload, e.prev, e.erased, "
            "e.idem, e.idp "
            "FROM weft_event e JOIN weft_author a ON a.ref = e.author JOIN weft_scope sc ON sc.ref = e.scope "
            "JOIN weft_kind k ON k.ref = e.kind ORDER BY e.n"):
        if prev is None:
            prev = bytes(32) if seq == 1 else None
        elif isinstance(prev, int):
            prev = ids[n - prev]
        plen, phash = (len(payload), hashlib.blake2b(payload, digest_size=32).digest()) if payload is not None \
            else (struct.unpack(">I", erased[:4])[0], erased[4:])
        header = (bytes([1]) + pk + struct.pack(">Q", seq) + prev + struct.pack(">Q", hlc) +
                  bytes([len(sname)]) + sname.encode() + bytes([len(kind)]) + kind.encode() +
                  bytes([len(idem or "")]) + (idem or "").encode() + struct.pack(">I", plen) + phash)
        ids[n] = hashlib.blake2b(header, digest_size=32).digest()
        assert struct.unpack(">q", ids[n][:8])[0] >> 16 == idp, f"row {n} does not hash to its id"
        rows.append((n, ids[n], author, seq, prev if seq > 1 else None, hlc, scope, kind, idem, plen, phash, sig,
                     payload))
elif s.execute("SELECT 1 FROM sqlite_schema WHERE name = 'weft_kind'").fetchone():
    # Store schema 2 (layout L6): prev, payload_len,
    # payload_hash re-derived, kind interned.
    rows = s.execute("SELECT e.n, e.id, e.author, e.seq, coalesce(e.prev, (SELECT p.id FROM weft_event p "
                     "WHERE p.author = e.author AND p.seq = e.seq - 1)), e.hlc, e.scope, k.name, e.idem, "
                     "coalesce(e.payload_len, length(e.payload)), e.payload_hash, e.sig, e.payload "
                     "FROM weft_event e JOIN weft_kind k ON k.ref = e.kind ORDER BY e.n").fetchall()
    rows = [r[:10] + ((r[10] if r[10] is not None else hashlib.blake2b(r[12], digest_size=32).digest()),) + r[11:]
            for r in rows]
else:
    rows = s.execute("SELECT e.n, e.id, e.author, e.seq, e.prev, e.hlc, e.scope, e.kind, e.idem, e.payload_len, "
                     "e.payload_hash, e.sig, e.payload FROM weft_event e ORDER BY e.n").fetchall()
N = len(rows)
payload = sum(len(r[12]) for r in rows) / N
kinds = {}
print(f"{N} events, payload {payload:.0f} B each")
def layout(name, ddl, conv):
    path = os.path.join(work, name + ".db")
    d = sqlite3.connect(path)
    d.executescript(ddl)
    d.execute("BEGIN")
    for i in range(0, N, 4096):  # weft ingests in batches
        for r in rows[i:i+4096]:
            for stmt, args in conv(r):
                d.execute(stmt, args)
    d.commit()
    per = {k: v / N for k, v in d.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name")}
    total = os.path.getsize(path) / N - payload
    print(f"{name:4s} {total:6.1f} B/event beyond payload   " +
          "  ".join(f"{k} {v:.1f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v >= 0.5))
    d.close()
def kind_ref(k):
    return kinds.setdefault(k, len(kinds) + 1)
def idp(i):
    return struct.unpack(">q", i[:8])[0]
# L0: the first layout (store schema 1, before target 8 work), for calibration.
layout("L0", """CREATE TABLE e(n INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, author INTEGER NOT NULL,
  seq INTEGER NOT NULL, prev BLOB, hlc INTEGER NOT NULL, scope INTEGER NOT NULL, kind TEXT NOT NULL, idem TEXT,
  payload_len INTEGER NOT NULL, payload_hash BLOB NOT NULL, sig BLOB NOT NULL, payload BLOB);
  CREATE INDEX e_time ON e(hlc, id); CREATE INDEX e_chain ON e(author, seq);""",
  lambda r: [("INSERT INTO e VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", r)])
# L1: no prev when it is the author's seq-1 event, no payload_hash while the payload is
# present, interned kind.
L1 = """CREATE TABLE e(n INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, author INTEGER NOT NULL,
  seq INTEGER NOT NULL, hlc INTEGER NOT NULL, scope INTEGER NOT NULL, kind INTEGER NOT NULL, sig BLOB NOT NULL,
  payload BLOB, payload_len INTEGER, prev BLOB, payload_hash BLOB, idem TEXT);
  CREATE INDEX e_time ON e(hlc, id); CREATE INDEX e_chain ON e(author, seq);"""
def c1(r):
    return [("INSERT INTO e VALUES (?,?,?,?,?,?,?,?,?,NULL,NULL,NULL,?)",
             (r[0], r[1], r[2], r[3], r[5], r[6], kind_ref(r[7]), r[11], r[12], r[8]))]
layout("L1", L1, c1)
# L2: L1 + id found through an 8-byte integer prefix index, time index on hlc only.
layout("L2", L1.replace("id BLOB NOT NULL UNIQUE", "id BLOB NOT NULL").replace(
    "CREATE INDEX e_time ON e(hlc, id);", "CREATE INDEX e_time ON e(hlc); CREATE INDEX e_idp ON e(idp);").replace(
    "idem TEXT)", "idem TEXT, idp INTEGER NOT NULL)"),
  lambda r: [("INSERT INTO e VALUES (?,?,?,?,?,?,?,?,?,NULL,NULL,NULL,?,?)",
              (r[0], r[1], r[2], r[3], r[5], r[6], kind_ref(r[7]), r[11], r[12], r[8], idp(r[1])))])
# L3: L2 without the (author, seq) index (chain state kept per author instead).
layout("L3", L1.replace("id BLOB NOT NULL UNIQUE", "id BLOB NOT NULL").replace(
    "CREATE INDEX e_time ON e(hlc, id); CREATE INDEX e_chain ON e(author, seq);",
    "CREATE INDEX e_time ON e(hlc); CREATE INDEX e_idp ON e(idp);").replace(
    "idem TEXT)", "idem TEXT, idp INTEGER NOT NULL)"),
  lambda r: [("INSERT INTO e VALUES (?,?,?,?,?,?,?,?,?,NULL,NULL,NULL,?,?)",
              (r[0], r[1], r[2], r[3], r[5], r[6], kind_ref(r[7]), r[11], r[12], r[8], idp(r[1])))])
# L4: events clustered by (hlc, id) (WITHOUT ROWID: the table is the reconciliation
# order), id -> hlc through an integer-keyed map, chain as a small side table.
layout("L4", """CREATE TABLE e(hlc INTEGER NOT NULL, id BLOB NOT NULL, author INTEGER NOT NULL,
  seq INTEGER NOT NULL, scope INTEGER NOT NULL, kind INTEGER NOT NULL, sig BLOB NOT NULL, payload BLOB,
  payload_len INTEGER, prev BLOB, payload_hash BLOB, idem TEXT, PRIMARY KEY(hlc, id)) WITHOUT ROWID;
  CREATE TABLE e_id(idp INTEGER PRIMARY KEY, hlc INTEGER NOT NULL);
  CREATE TABLE e_chain(author INTEGER, seq INTEGER, hlc INTEGER, PRIMARY KEY(author, seq, hlc)) WITHOUT ROWID;""",
  lambda r: [("INSERT INTO e VALUES (?,?,?,?,?,?,?,?,NULL,NULL,NULL,?)",
                    (r[5], r[1], r[2], r[3], r[6], kind_ref(r[7]), r[11], r[12], r[8])),
                   ("INSERT INTO e_id VALUES (?,?)", (idp(r[1]), r[5])),
                   ("INSERT INTO e_chain VALUES (?,?,?)", (r[2], r[3], r[5]))])
# L5: L3 without the 32-byte id in the row: only its 8-byte prefix is kept and
# indexed; the id is re-derived (BLAKE2b of the header) when needed.
layout("L5", """CREATE TABLE e(n INTEGER PRIMARY KEY, idp INTEGER NOT NULL, author INTEGER NOT NULL,
  seq INTEGER NOT NULL, hlc INTEGER NOT NULL, scope INTEGER NOT NULL, kind INTEGER NOT NULL, sig BLOB NOT NULL,
  payload BLOB, payload_len INTEGER, prev BLOB, payload_hash BLOB, idem TEXT);
  CREATE INDEX e_time ON e(hlc); CREATE INDEX e_idp ON e(idp);""",
  lambda r: [("INSERT INTO e VALUES (?,?,?,?,?,?,?,?,?,NULL,NULL,NULL,?)",
              (r[0], idp(r[1]), r[2], r[3], r[5], r[6], kind_ref(r[7]), r[11], r[12], r[8]))])
# L6: store schema 2 (weft 0.1): L1 with the id in the row found through an index on
# its first 8 bytes, time index on hlc only, the (author, seq) index kept (prev is
# re-derived through it; fork detection uses it).
layout("L6", """CREATE TABLE e(n INTEGER PRIMARY KEY, id BLOB NOT NULL, author INTEGER NOT NULL,
  seq INTEGER NOT NULL, hlc INTEGER NOT NULL, scope INTEGER NOT NULL, kind INTEGER NOT NULL, sig BLOB NOT NULL,
  payload BLOB, prev BLOB, payload_len INTEGER, payload_hash BLOB, idem TEXT);
  CREATE INDEX e_idp ON e(substr(id, 1, 8)); CREATE INDEX e_time ON e(hlc); CREATE INDEX e_chain ON e(author, seq);""",
  lambda r: [("INSERT INTO e VALUES (?,?,?,?,?,?,?,?,?,NULL,NULL,NULL,?)",
              (r[0], r[1], r[2], r[3], r[5], r[6], kind_ref(r[7]), r[11], r[12], r[8]))])
# L7: L5 made readable. L5 stores neither the id nor prev, but the id is the hash of a
# header holding prev, the previous event's id: re-deriving one id needs the whole
# chain below it. L7 bounds that walk: each row links to its predecessor's row by
# n delta and every 32nd event of a chain stores prev in full (a walk reads up to 31
# rows and hashes as many headers and payloads).
pos = {}
def c7(r):
    n, author, seq = r[0], r[2], r[3]
    pos[(author, seq)] = n
    pn = pos.get((author, seq - 1))
    link, prev = (n - pn, None) if pn is not None else (None, r[4])
    if seq % 32 == 0 and seq > 1:
        prev = r[4]
    return [("INSERT INTO e VALUES (?,?,?,?,?,?,?,?,?,?,?,NULL,NULL,?)",
             (n, idp(r[1]), author, seq, r[5], r[6], kind_ref(r[7]), r[11], r[12], link, prev, r[8]))]
layout("L7", """CREATE TABLE e(n INTEGER PRIMARY KEY, idp INTEGER NOT NULL, author INTEGER NOT NULL,
  seq INTEGER NOT NULL, hlc INTEGER NOT NULL, scope INTEGER NOT NULL, kind INTEGER NOT NULL, sig BLOB NOT NULL,
  payload BLOB, link INTEGER, prev BLOB, payload_len INTEGER, payload_hash BLOB, idem TEXT);
  CREATE INDEX e_time ON e(hlc); CREATE INDEX e_idp ON e(idp);""", c7)
# L8: store schema 3, what core/db.c implements: L7 with a 6-byte idp, no link
# column (prev holds the link as an integer, or the id as a blob), payload_len and
# payload_hash as one column, plus the runs table and the partial index of rows
# whose prev is a blob.
runs = {}
def c8(r):
    n, author, seq = r[0], r[2], r[3]
    pos[(author, seq)] = n
    pn = pos.get((author, seq - 1))
    prev = None if seq == 1 else (n - pn if pn is not None and seq % 32 else r[4])
    idp6 = struct.unpack(">q", r[1][:8])[0] >> 16
    out = [("INSERT INTO e VALUES (?,?,?,?,?,?,?,?,?,?,NULL,?)",
            (n, idp6, author, seq, r[5], r[6], kind_ref(r[7]), r[11], r[12], prev, r[8]))]
    lo = runs.get(author)
    if lo is None:
        runs[author] = seq
        out.append(("INSERT INTO c VALUES (?,?,?,?)", (author, seq, seq, n)))
    else:
        out.append(("UPDATE c SET hi = ?3, hi_n = ?4 WHERE author = ?1 AND lo = ?2", (author, lo, seq, n)))
    return out
pos.clear()
layout("L8", """CREATE TABLE e(n INTEGER PRIMARY KEY, idp INTEGER NOT NULL, author INTEGER NOT NULL,
  seq INTEGER NOT NULL, hlc INTEGER NOT NULL, scope INTEGER NOT NULL, kind INTEGER NOT NULL, sig BLOB NOT NULL,
  payload BLOB, prev, erased BLOB, idem TEXT);
  CREATE INDEX e_idp ON e(idp); CREATE INDEX e_time ON e(hlc);
  CREATE INDEX e_wait ON e(author, seq) WHERE typeof(prev) = 'blob';
  CREATE TABLE c(author INTEGER, lo INTEGER, hi INTEGER, hi_n INTEGER, PRIMARY KEY(author, lo)) WITHOUT ROWID;""",
  c8)
