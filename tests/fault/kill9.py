#!/usr/bin/env python3
"""kill -9 of writing and syncing `weft` processes at random moments.

Phase 1 (writers): a shell loop of `weft append` / `weft put` / `weft incr`
on store A is killed with SIGKILL (the whole process group) after a random
delay, again and again. Every id a `weft append`/`put`/`incr` printed before
the kill is acknowledged.

Phase 2 (syncers): A keeps writing while `weft sync` to B (`weft serve`) is
killed at random moments; now and then the server is killed too and
restarted.

After every kill `weft verify` must pass on the killed store; every few kills
and at the end: derived tables equal a rebuild (`weft query` before and after
`weft rebuild`), no acknowledged event is missing (`weft log --json`), and a
clean sync afterwards converges both stores to the same events and tables.

Usage: kill9.py --weft PATH/TO/weft [--kills 200] [--seed N]
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SCHEMA = """CREATE TABLE todo(
  id    TEXT PRIMARY KEY,
  title TEXT NOT NULL DEFAULT '',
  votes INTEGER DEFAULT 0,
  owner TEXT UNIQUE
);
"""
QUERY = "SELECT id, title, votes, owner FROM todo ORDER BY id"


class Fail(Exception):
    pass


def run(weft, db, *args, check=True, timeout=60):
    p = subprocess.run([weft, "--db", db, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise Fail(f"weft --db {db} {' '.join(args)} exited {p.returncode}: {p.stderr.strip()}")
    return p


def event_ids(weft, db):
    out = run(weft, db, "log", "--json").stdout
    return {json.loads(line)["id"] for line in out.splitlines() if line.strip()}


def check_store(weft, db, acked, what):
    """verify passes, tables equal a rebuild, every acknowledged id is there."""
    v = run(weft, db, "verify", check=False)
    if v.returncode != 0:
        raise Fail(f"{what}: weft verify failed on {db}: {v.stdout.strip()} {v.stderr.strip()}")
    before = run(weft, db, "query", QUERY).stdout
    run(weft, db, "rebuild")
    after = run(weft, db, "query", QUERY).stdout
    if before != after:
        raise Fail(f"{what}: derived tables of {db} differ from a rebuild:\n{before}\n---\n{after}")
    missing = acked - event_ids(weft, db)
    if missing:
        raise Fail(f"{what}: {len(missing)} acknowledged events missing from {db}, e.g. {sorted(missing)[0]}")


WRITER = r'''
i=0
while :; do
  i=$((i+1))
  case $((i % 4)) in
    0) "$WEFT" --db "$DB" append --scope notes --kind note.put "note $SALT-$i" ;;
    1) "$WEFT" --db "$DB" put todo "r$((i % 13))" title="t $SALT-$i" --scope todo ;;
    2) "$WEFT" --db "$DB" incr todo "r$((i % 7))" votes=1 --scope todo ;;
    3) "$WEFT" --db "$DB" put todo "r$((i % 11))" owner="o$((i % 3))" --scope todo ;;
  esac || exit 1
done
'''


def kill_writer(weft, db, salt, rng, longest=0.25):
    """Starts the writer loop, SIGKILLs it after a random delay, returns the
    ids it printed (each printed only after the event was committed)."""
    env = dict(os.environ, WEFT=weft, DB=db, SALT=str(salt))
    p = subprocess.Popen(["bash", "-c", WRITER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env, start_new_session=True)
    time.sleep(rng.uniform(0.005, longest))
    os.killpg(p.pid, signal.SIGKILL)
    out, err = p.communicate()
    ids = set()
    for line in out.decode(errors="replace").split("\n")[:-1]:  # complete lines only
        line = line.strip()
        if len(line) == 64 and all(c in "0123456789abcdef" for c in line):
            ids.add(line)
    if p.returncode != -signal.SIGKILL:
        # The loop ends only when killed: a weft command failed on its own.
        raise Fail(f"writer ended with {p.returncode} before the kill: {err.decode(errors='replace').strip()}")
    return ids


class Server:
    def __init__(self, weft, db, workdir):
        self.weft, self.db, self.workdir = weft, db, workdir
        self.p = None
        self.addr = None

    def start(self):
        out = open(os.path.join(self.workdir, "serve.out"), "w+")
        self.p = subprocess.Popen([self.weft, "--db", self.db, "serve", "--listen", "127.0.0.1:0"],
                                  stdout=out, stderr=subprocess.DEVNULL, start_new_session=True)
        for _ in range(200):
            out.seek(0)
            line = out.readline()
            if line.startswith("listening on "):
                self.addr = line.split()[2]
                return
            if self.p.poll() is not None:
                raise Fail("weft serve exited at start")
            time.sleep(0.02)
        raise Fail("weft serve did not start")

    def kill(self):
        if self.p and self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
        self.p = None

    def stop(self):
        if self.p and self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.p = None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weft", required=True)
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    weft = os.path.abspath(args.weft)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    work = tempfile.mkdtemp(prefix="weft-kill9-")
    a, b = os.path.join(work, "a.db"), os.path.join(work, "b.db")
    server = Server(weft, b, work)
    start = time.time()
    ok = False
    try:
        schema = os.path.join(work, "schema.sql")
        with open(schema, "w") as f:
            f.write(SCHEMA)
        for db in (a, b):
            run(weft, db, "init")
            run(weft, db, "schema", "apply", schema)
        run(weft, a, "trust", "add", run(weft, b, "id").stdout.split()[0])
        run(weft, b, "trust", "add", run(weft, a, "id").stdout.split()[0])

        acked = set()
        writer_kills = args.kills * 3 // 5
        sync_kills = args.kills - writer_kills
        for k in range(writer_kills):
            acked |= kill_writer(weft, a, k, rng)
            v = run(weft, a, "verify", check=False)
            if v.returncode != 0:
                raise Fail(f"after writer kill {k + 1}: weft verify failed: {v.stdout.strip()} {v.stderr.strip()}")
            if k % 20 == 19:
                check_store(weft, a, acked, f"after writer kill {k + 1}")
        print(f"phase 1: {writer_kills} writers killed, {len(acked)} acknowledged events, "
              f"store verified after every kill ({time.time() - start:.0f} s)")

        server.start()
        synced_kills = 0
        k = 0
        while synced_kills < sync_kills and k < 4 * sync_kills:
            k += 1
            # New events to move, then a sync killed at a random moment.
            acked |= kill_writer(weft, a, 1000 + k, rng, 0.06)
            p = subprocess.Popen([weft, "--db", a, "sync", server.addr], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
            time.sleep(rng.uniform(0.0, 0.05))
            if p.poll() is None:
                synced_kills += 1
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            p.wait()
            if k % 10 == 9:
                server.kill()  # the server dies mid-session too
                v = run(weft, b, "verify", check=False)
                if v.returncode != 0:
                    raise Fail(f"after server kill: weft verify failed on B: {v.stdout.strip()}")
                server.start()
            v = run(weft, a, "verify", check=False)
            if v.returncode != 0:
                raise Fail(f"after sync kill {k}: weft verify failed on A: {v.stdout.strip()}")
        if synced_kills < sync_kills:
            raise Fail(f"only {synced_kills} of {sync_kills} syncs were still running when killed")
        print(f"phase 2: {k} syncs started, {synced_kills} killed while running, {k // 10} servers killed "
              f"({time.time() - start:.0f} s)")

        # Heal: a clean sync, then everything must agree.
        r = run(weft, a, "sync", server.addr, check=False, timeout=120)
        if r.returncode != 0:
            raise Fail(f"the final sync failed: {r.stderr.strip()}")
        server.stop()
        check_store(weft, a, acked, "at the end (A)")
        check_store(weft, b, acked, "at the end (B)")
        if event_ids(weft, a) != event_ids(weft, b):
            raise Fail("A and B hold different events after a clean sync")
        qa, qb = run(weft, a, "query", QUERY).stdout, run(weft, b, "query", QUERY).stdout
        if qa != qb:
            raise Fail("A and B hold different tables after a clean sync")
        print(f"kill9: {writer_kills + synced_kills + k // 10} processes killed with SIGKILL, {len(acked)} acknowledged events all "
              f"present, both stores verify, tables equal a rebuild and each other "
              f"({time.time() - start:.0f} s, seed {seed})")
        ok = True
        return 0
    except Fail as e:
        print(f"kill9 FAILED (seed {seed}, files kept in {work}): {e}")
        return 1
    finally:
        server.kill()
        # Keep the evidence of a failure.
        if ok and not os.environ.get("WEFT_KEEP_FILES"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
