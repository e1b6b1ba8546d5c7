#!/usr/bin/python3
"""Drives weft-negentropy-harness processes (the NEGENTROPY.md line protocol).

  drive.py HARNESS vectors
      The known vectors, exact bytes, plus protocol errors -> non-zero exit.
  drive.py HARNESS random [--runs N] [--seed S] [--items N] [--limit L]
      Client and server harnesses reconcile random sets against each other;
      the client's have/need must equal the true set differences and every
      message must respect FRAMESIZELIMIT.
  drive.py HARNESS file CLIENT.txt SERVER.txt
      Reconcile item lists given as harness input files (item lines only).

  drive.py HARNESS transcript FILE...
      Replays recorded sessions and checks every message byte for byte
      (have/need lines as sets per round).
  drive.py HARNESS record FILE ITEMS EVERY
      Records such a transcript with HARNESS on both sides (the shipped one
      was recorded with the reference C++ implementation's harness).

random and file take --server OTHER_HARNESS to run the server side with
another implementation's harness (cross-implementation check).
"""
import hashlib
import os
import random
import subprocess
import sys

ID_HEX = 64


def fail(why):
    print("FAIL:", why, flush=True)
    sys.exit(1)


def spawn(harness, limit):
    env = dict(os.environ)
    env.pop("FRAMESIZELIMIT", None)
    if limit:
        env["FRAMESIZELIMIT"] = str(limit)
    return subprocess.Popen([harness], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, text=True, bufsize=1 << 16)


def send(p, line):
    p.stdin.write(line + "\n")
    p.stdin.flush()


def recv(p, who):
    line = p.stdout.readline()
    if not line:
        err = p.stderr.read()
        fail(f"{who} closed its output (exit {p.wait()}): {err.strip()}")
    return line.rstrip("\n")


def finish(p, who):
    p.stdin.close()
    rc = p.wait(timeout=60)
    err = p.stderr.read()
    if rc != 0:
        fail(f"{who} exited {rc} at end of input: {err.strip()}")


def reconcile(harness, client_items, server_items, limit=0, max_rounds=200,
              server_harness=None):
    """Returns (have, need, rounds, bytes_up, bytes_down, duplicates)."""
    cl = spawn(harness, limit)
    sv = spawn(server_harness or harness, limit)
    for p, items in ((cl, client_items), (sv, server_items)):
        p.stdin.write("".join(f"item,{ts},{i}\n" for ts, i in items))
        send(p, "seal")
    send(cl, "initiate")

    have, need = set(), set()
    dups = 0
    rounds = up = down = 0
    while True:
        line = recv(cl, "client")
        if line.startswith("have,") or line.startswith("need,"):
            kind, ident = line.split(",", 1)
            if len(ident) != ID_HEX:
                fail(f"bad id line {line!r}")
            target = have if kind == "have" else need
            dups += ident in target
            target.add(ident)
            continue
        if line == "done":
            break
        if not line.startswith("msg,"):
            fail(f"unexpected client line {line[:80]!r}")
        msg = line[4:]
        if limit and len(msg) // 2 > limit:
            fail(f"client message of {len(msg) // 2} bytes > {limit}")
        up += len(msg) // 2
        rounds += 1
        if rounds > max_rounds:
            fail(f"no convergence after {max_rounds} rounds")
        send(sv, "msg," + msg)
        line = recv(sv, "server")
        if not line.startswith("msg,"):
            fail(f"unexpected server line {line[:80]!r}")
        msg = line[4:]
        if limit and len(msg) // 2 > limit:
            fail(f"server message of {len(msg) // 2} bytes > {limit}")
        down += len(msg) // 2
        send(cl, "msg," + msg)
    finish(cl, "client")
    finish(sv, "server")
    return have, need, rounds, up, down, dups


def check(harness, client_items, server_items, limit, label, server=None):
    have, need, rounds, up, down, dups = reconcile(
        harness, client_items, server_items, limit, server_harness=server)
    cids = {i for _, i in client_items}
    sids = {i for _, i in server_items}
    if have != cids - sids:
        fail(f"{label}: have differs from the truth "
             f"({len(have)} vs {len(cids - sids)})")
    if need != sids - cids:
        fail(f"{label}: need differs from the truth "
             f"({len(need)} vs {len(sids - cids)})")
    if not limit and dups:
        fail(f"{label}: {dups} ids reported twice without a frame limit")
    print(f"ok {label}: client {len(cids)} server {len(sids)} "
          f"have {len(have)} need {len(need)} rounds {rounds} "
          f"up {up} B down {down} B", flush=True)


def random_sets(rng, n):
    """Items shared or on one side only; some runs cluster the differences."""
    base = rng.randrange(1, 1 << 40)
    spread = rng.choice([1, 4, max(1, n // 4), n * 4])
    mode = rng.choice(["scattered", "clustered", "one-empty", "identical"])
    client, server = [], []
    lo = rng.randrange(0, max(1, n))
    hi = min(n, lo + rng.randrange(1, max(2, n // 5)))
    for k in range(n):
        item = (base + rng.randrange(spread), "%064x" % rng.getrandbits(256))
        if mode == "identical":
            side = 0
        elif mode == "one-empty":
            side = 1
        elif mode == "clustered":
            side = rng.choice([1, 2]) if lo <= k < hi else 0
        else:
            r = rng.random()
            side = 1 if r < 0.05 else 2 if r < 0.1 else 0
        if side in (0, 1):
            client.append(item)
        if side in (0, 2):
            server.append(item)
    if mode == "one-empty" and rng.random() < 0.5:
        client, server = server, client
    return mode, client, server


def run_random(harness, args):
    runs, seed, items, limit, server = 12, 1, 3000, 0, None
    it = iter(args)
    for a in it:
        if a == "--server":
            server = next(it)
        elif a == "--runs":
            runs = int(next(it))
        elif a == "--seed":
            seed = int(next(it))
        elif a == "--items":
            items = int(next(it))
        elif a == "--limit":
            limit = int(next(it))
        else:
            fail(f"unknown option {a}")
    for run in range(runs):
        s = seed * 1000 + run
        rng = random.Random(s)
        n = rng.choice([0, 1, 31, 32, 33, 500, items])
        mode, client, server_items = random_sets(rng, n)
        check(harness, client, server_items, limit,
              f"seed {s} {mode} n={n} limit={limit}", server)
    # Both directions large enough to need many frames under a limit.
    rng = random.Random(seed)
    client = [(rng.randrange(1000), "%064x" % rng.getrandbits(256))
              for _ in range(items)]
    server_items = [(rng.randrange(1000), "%064x" % rng.getrandbits(256))
                    for _ in range(items)]
    shared = client[: items // 3]
    check(harness, client, server_items + shared, limit,
          f"seed {seed} large-differences limit={limit}", server)


def expect_exit(harness, lines, want_out, label, want_fail):
    p = subprocess.run([harness], input="".join(l + "\n" for l in lines),
                       capture_output=True, text=True, timeout=60)
    if want_fail:
        if p.returncode == 0:
            fail(f"{label}: exit 0, expected a protocol error")
        if not p.stderr.strip():
            fail(f"{label}: no message on stderr")
    elif p.returncode != 0:
        fail(f"{label}: exit {p.returncode}: {p.stderr.strip()}")
    if want_out is not None and p.stdout.split() != want_out:
        fail(f"{label}: output {p.stdout!r}, expected {want_out!r}")
    print(f"ok {label}", flush=True)


def run_vectors(harness):
    ee = "ee" * 32
    expect_exit(harness, [f"item,12345,{ee}", "seal", "msg,6100000200"],
                ["msg,6100000201" + ee], "vector: IdList reply", False)
    expect_exit(harness, ["seal", "msg,62aabbccddeeff"], ["msg,61"],
                "vector: unsupported version", False)
    # An empty client is done as soon as the server has nothing either.
    expect_exit(harness, ["seal", "initiate", "msg,61"],
                ["msg,6100000200", "done"], "empty client", False)
    expect_exit(harness, ["seal", "initiate", f"msg,6100000201{ee}"],
                ["msg,6100000200", f"need,{ee}", "done"],
                "client learns a need", False)
    bad = [("version below range", "msg,5f"),
           ("version above range", "msg,70"),
           ("empty message", "msg,"),
           ("truncated bound", "msg,6100"),
           ("truncated fingerprint", "msg,61000001" + "00" * 15),
           ("id prefix longer than 32", "msg,61012100"),
           ("bounds not ascending", "msg,61" + "010105" + "00" + "010101" + "00"),
           ("range after infinity", "msg,610000000000"),
           ("huge IdList count", "msg,61000002ffffffff0f"),
           ("non-shortest varint", "msg,6180010000"),
           ("not hex", "msg,61zz")]
    for label, line in bad:
        expect_exit(harness, ["seal", line], None, "error: " + label, True)
    expect_exit(harness, ["seal", "initiate", "msg,62"], None,
                "error: client gets unsupported version", True)


def read_items(path):
    items = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("item,"):
                _, ts, ident = line.split(",")
                items.append((int(ts), ident.lower()))
    return items


def rule_items(n, every):
    """Deterministic sets: sha256-derived ids, 64 timestamps (many ties)."""
    client, server = [], []
    for i in range(n):
        h = hashlib.sha256(b"weft-negentropy-%d" % i).digest()
        item = (1700000000 + h[0] % 64, h.hex())
        if i % every != 1:
            server.append(item)
        if i % every != 2:
            client.append(item)
    return client, server


def client_turn(p):
    """Client lines up to its msg or done: (sorted have/need lines, last)."""
    diffs = []
    while True:
        line = recv(p, "client")
        if line.startswith("have,") or line.startswith("need,"):
            diffs.append(line)
        else:
            return sorted(diffs), line


def run_record(harness, path, n, every):
    client, server = rule_items(n, every)
    cl, sv = spawn(harness, 0), spawn(harness, 0)
    for p, items in ((cl, client), (sv, server)):
        p.stdin.write("".join(f"item,{ts},{i}\n" for ts, i in items))
        send(p, "seal")
    out = [f"items {n} {every}"]
    send(cl, "initiate")
    line = recv(cl, "client")
    while True:
        out.append("c " + line)
        if line == "done":
            break
        send(sv, line)
        line = recv(sv, "server")
        out.append("s " + line)
        send(cl, line)
        diffs, line = client_turn(cl)
        out.extend("c " + d for d in diffs)
    finish(cl, "client")
    finish(sv, "server")
    with open(path, "w") as f:
        f.write("# Negentropy V1 session; see drive.py rule_items().\n")
        f.write("\n".join(out) + "\n")


def run_transcript(harness, path):
    with open(path) as f:
        lines = [l.rstrip("\n") for l in f if l.strip() and not l.startswith("#")]
    _, n, every = lines[0].split()
    client, server = rule_items(int(n), int(every))
    cl, sv = spawn(harness, 0), spawn(harness, 0)
    for p, items in ((cl, client), (sv, server)):
        p.stdin.write("".join(f"item,{ts},{i}\n" for ts, i in items))
        send(p, "seal")
    send(cl, "initiate")
    want = lines[1:]
    got = [recv(cl, "client")]
    k = 0
    rounds = 0
    while True:
        if want[k] != "c " + got[-1]:
            fail(f"transcript line {k + 2}: client sent {got[-1][:60]}..., "
                 f"expected {want[k][:62]}...")
        k += 1
        if got[-1] == "done":
            break
        send(sv, got[-1])
        line = recv(sv, "server")
        if want[k] != "s " + line:
            fail(f"transcript line {k + 2}: server sent {line[:60]}..., "
                 f"expected {want[k][:62]}...")
        k += 1
        send(cl, line)
        diffs, last = client_turn(cl)
        exp = []
        while want[k].startswith("c have,") or want[k].startswith("c need,"):
            exp.append(want[k][2:])
            k += 1
        if diffs != sorted(exp):
            fail(f"round {rounds}: have/need differ from the transcript")
        got.append(last)
        rounds += 1
    if k != len(want):
        fail("transcript has lines after done")
    finish(cl, "client")
    finish(sv, "server")
    print(f"ok transcript {path}: {rounds} rounds, {len(want)} lines matched",
          flush=True)


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        sys.exit(2)
    harness, what = sys.argv[1], sys.argv[2]
    if what == "vectors":
        run_vectors(harness)
    elif what == "random":
        run_random(harness, sys.argv[3:])
    elif what == "transcript":
        for path in sys.argv[3:]:
            run_transcript(harness, path)
    elif what == "record":
        run_record(harness, sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif what == "file":
        limit = int(os.environ.get("FRAMESIZELIMIT", "0"))
        server = None
        if len(sys.argv) > 6 and sys.argv[5] == "--server":
            server = sys.argv[6]
        check(harness, read_items(sys.argv[3]), read_items(sys.argv[4]),
              limit, "file", server)
    else:
        fail(f"unknown mode {what}")
    print("all passed", flush=True)


if __name__ == "__main__":
    main()
