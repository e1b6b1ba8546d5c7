"""Integration tests: real `weft` processes syncing over TLS on loopback.

Run one group: python3 test_sync.py Converge   (WEFT_BIN, WEFT_GEN_BIN set)
Each class is one ctest test (tests/integration/tests.cmake).
"""
import os
import re
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from weftlib import SLOW, WeftTest, ipv6_loopback, slurp, wait_for  # noqa: E402

SCHEMA = """
CREATE TABLE todo(
  id    TEXT PRIMARY KEY,
  title TEXT NOT NULL DEFAULT '',
  votes INTEGER DEFAULT 0,
  owner TEXT UNIQUE
);
"""
TABLE_SQL = "SELECT id, title, votes, coalesce(owner, '-') FROM todo ORDER BY id"


class Converge(WeftTest):
    """Three devices converge through different pairwise syncs."""

    def test_three_devices_converge_through_pairwise_syncs(self):
        a, b, c = self.device("a"), self.device("b"), self.device("c")
        self.pair(a, b)
        self.pair(b, c)
        self.pair(a, c)
        schema = os.path.join(self.tmp, "schema.sql")
        with open(schema, "w") as f:
            f.write(SCHEMA)
        for d in (a, b, c):
            d.run("schema", "apply", schema)
        # Offline writes: a concurrent edit, a counter on all three, a
        # unique clash, the same idempotency key on two devices, a delete.
        a.run("put", "todo", "milk", "title=buy milk", "owner=ann")
        a.run("incr", "todo", "milk", "votes=1")
        a.run("put", "todo", "rent", "title=pay rent", "--idem", "rent-nov")
        a.run("put", "todo", "old", "title=stale")
        b.run("put", "todo", "milk", "title=buy oat milk")
        b.run("incr", "todo", "milk", "votes=2")
        b.run("put", "todo", "bike", "title=fix bike", "owner=ann")
        c.run("incr", "todo", "milk", "votes=4")
        c.run("put", "todo", "rent2", "title=pay rent again", "--idem", "rent-nov")
        c.run("put", "todo", "tent", "title=dry the tent")
        for d, n in ((a, 5), (b, 3), (c, 3)):
            d.append("notes", "plain event from %s %d" % (d.name, n))

        s = self.serve(a)                        # A <-> B
        self.assertSynced(b.sync(s.addr))
        self.assertEqual(s.stop(), 0)
        self.assertSameEvents(a, b)
        self.assertNotEqual(a.query(TABLE_SQL), c.query(TABLE_SQL))

        s = self.serve(b)                        # B <-> C
        self.assertSynced(c.sync(s.addr))
        self.assertEqual(s.stop(), 0)
        self.assertSameEvents(b, c)

        a.run("del", "todo", "old")              # one more write before the last pair
        s = self.serve(c)                        # A <-> C (A connects this time)
        p = a.sync(s.addr)
        self.assertSynced(p)
        self.assertIn("received 4 events, sent 1", p.stdout)  # C own 4; A delete
        self.assertEqual(s.stop(), 0)
        s = self.serve(b)                        # B catches up on the delete
        self.assertSynced(a.sync(s.addr))
        self.assertEqual(s.stop(), 0)

        self.assertSameEvents(a, b, c)
        tables = [d.query(TABLE_SQL) for d in (a, b, c)]
        self.assertEqual(tables[0], tables[1])
        self.assertEqual(tables[0], tables[2])
        rows = {r[0]: r for r in (list(map(str.strip, line.split("|"))) for line in tables[0].splitlines())}
        self.assertNotIn("old", rows)                     # deleted on A after the others copied it
        self.assertEqual(rows["milk"][2], "7", tables[0])  # counter: 1 + 2 + 4
        self.assertEqual(rows["tent"][1], "dry the tent")  # C's row reached A and B
        self.assertEqual(rows["bike"][3], "-")             # lost the UNIQUE owner to milk (earlier)
        for q in ("conflicts", "duplicates"):
            outs = [d.run(q).stdout for d in (a, b, c)]
            self.assertEqual(outs[0], outs[1], q)
            self.assertEqual(outs[0], outs[2], q)
        self.assertIn("rent-nov", a.run("duplicates").stdout)
        for d in (a, b, c):
            d.verify()
            self.assertNoDuplicates(d)


class Refusals(WeftTest):
    """Untrusted, revoked, unreadable scope, read-only scope: refused, with
    a message a person can act on, and nothing stored on either side."""

    def test_untrusted_device_is_refused_and_named_in_the_server_log(self):
        a, c = self.device("a"), self.device("c")
        c.trust(a)  # a does not trust c
        a.append("notes", "a's secret")
        c.append("notes", "c's note")
        before_a, before_c = a.ids(), c.ids()
        s = self.serve(a)
        p = c.sync(s.addr)
        self.assertRefused(p, "refused this device", "weft trust add %s" % c.id)
        s.wait_log(re.escape("weft trust add %s" % c.id))
        self.assertIn("device %s is not in this device's trust store" % c.id, s.log())
        self.assertEqual(a.ids(), before_a)
        self.assertEqual(c.ids(), before_c)
        self.assertEqual(s.stop(), 0)
        # Once trusted (the command from the log), the same device syncs.
        a.trust(c)
        s = self.serve(a)
        self.assertSynced(c.sync(s.addr))
        self.assertSameEvents(a, c)

    def test_revoked_device_is_refused_at_its_next_connection(self):
        a, b = self.device("a"), self.device("b")
        self.pair(a, b)
        s = self.serve(a)
        b.append("notes", "before")
        self.assertSynced(b.sync(s.addr))
        a.untrust(b)  # while the server runs
        a.append("notes", "a after revocation")
        b.append("notes", "b after revocation")
        before_a, before_b = set(a.ids()), set(b.ids())
        p = b.sync(s.addr)
        self.assertRefused(p, "refused this device")
        s.wait_log(re.escape("device %s is not in this device's trust store" % b.id))
        self.assertEqual(set(a.ids()), before_a)
        self.assertEqual(set(b.ids()), before_b)
        self.assertNotIn("a after revocation", [e.get("payload") for e in b.events()])

    def test_scope_the_device_may_not_read_is_not_shared(self):
        a, b = self.device("a"), self.device("b")
        a.trust(b, scopes=["shared"])
        b.trust(a)
        a.append("shared", "a shared")
        a.append("secret", "a secret")
        b.append("shared", "b shared")
        b.append("secret", "b secret")
        s = self.serve(a)
        p = b.sync(s.addr, "--scopes", "shared,secret")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("does not let this device read scope(s) secret", p.stderr)
        self.assertIn("weft trust add %s" % b.id, p.stderr)
        self.assertEqual(len(b.events("shared")), 2)  # allowed scopes flow
        self.assertEqual(len(a.events("shared")), 2)
        self.assertEqual([e["payload"] for e in b.events("secret")], ["b secret"])
        self.assertEqual([e["payload"] for e in a.events("secret")], ["a secret"])
        # Syncing "everything" shares only what is granted, and is complete.
        self.assertSynced(b.sync(s.addr))
        self.assertEqual(len(b.events("secret")), 1)
        self.assertEqual(len(a.events("secret")), 1)

    def test_events_of_a_read_only_scope_are_not_accepted(self):
        a, b = self.device("a"), self.device("b")
        a.trust(b, scopes=["ro"], read=True)
        b.trust(a)
        a.append("ro", "from a")
        b.append("ro", "written on b")
        s = self.serve(a)
        p = b.sync(s.addr, "--scopes", "ro")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("read-only access to scope(s) ro", p.stderr)
        self.assertEqual(sorted(e["payload"] for e in b.events("ro")), ["from a", "written on b"])
        self.assertEqual([e["payload"] for e in a.events("ro")], ["from a"])
        self.assertNotIn(b.id, a.authors())
        a.verify()
        b.verify()


class Tamper(WeftTest):
    """One flipped byte in the TLS stream after the handshake: the session
    fails, both stores verify, nothing of the corrupted record is stored,
    and a clean sync afterwards completes."""

    N = 3000

    def run_flip(self, direction):
        a, b = self.device("a"), self.device("b")
        self.pair(a, b)
        sender = b if direction == "c2s" else a      # b is the client
        receiver = a if sender is b else b
        sender.gen(self.N)
        receiver.append("notes", "the receiver's own event")
        sent_ids = set(sender.ids())
        own_ids = set(receiver.ids())
        s = self.serve(a)
        # The 45th large record (of about 60): past the reconciliation
        # messages and a batch of events (of 2048, about 37 records).
        proxy = self.proxy(s.addr, flip=(direction, 45, 8000))
        p = b.sync(proxy.addr)
        self.assertTrue(proxy.flipped.is_set(), "the proxy never saw a record to corrupt")
        self.assertNotEqual(p.returncode, 0, p.stdout)
        if direction == "s2c":
            self.assertIn("failed authentication", p.stderr)
        else:
            self.assertIn("failed TLS authentication", p.stderr)
            s.wait_log(r"failed \(WEFT_EAUTH\).*failed authentication")
        a.verify()
        b.verify()
        got = set(receiver.ids())
        new = got - own_ids
        self.assertTrue(new <= sent_ids, "the receiver holds events nobody sent")
        self.assertLess(len(new), self.N, "the session went on after the corrupted record")
        self.assertGreater(len(new), 0, "no batch before the corrupted record was kept")
        self.assertNoDuplicates(receiver)
        # A clean sync fetches the rest.
        p = b.sync(s.addr)
        self.assertSynced(p)
        rest = self.N - len(new)
        self.assertIn("received %d events" % rest if receiver is b else "sent %d;" % rest, p.stdout)
        self.assertSameEvents(a, b)
        self.assertNoDuplicates(a)
        a.verify()

    def test_flipped_byte_from_client_to_server(self):
        self.run_flip("c2s")

    def test_flipped_byte_from_server_to_client(self):
        self.run_flip("s2c")


class Kill(WeftTest):
    """kill -9 of either side mid-sync, then a new sync completes: nothing
    lost (the union of both logs), no duplicates, both stores verify."""

    N = 12000       # six batches of 2048 each way
    RATE = 800_000  # bytes/s through the proxy: the sync takes seconds

    def run_kill(self, victim):
        a, b = self.device("a"), self.device("b")
        self.pair(a, b)
        a.gen(self.N, scope="from-a")
        b.gen(self.N, scope="from-b")
        union = set(a.ids()) | set(b.ids())
        s = self.serve(a)
        proxy = self.proxy(s.addr, rate=self.RATE)
        client = self.popen(b, "sync", proxy.addr, name="sync")
        # Mid-sync: some of the other side's events are in, not all.
        wait_for(lambda: self.N + 300 <= b.count() and self.N + 300 <= a.count(), 60,
                 "both sides to receive some batches")
        na, nb = a.count(), b.count()
        self.assertLess(na, 2 * self.N, "the sync finished before the kill")
        self.assertLess(nb, 2 * self.N, "the sync finished before the kill")
        if victim == "server":
            s.kill()
            self.assertNotEqual(client.wait(30 * SLOW), 0)
        else:
            client.send_signal(signal.SIGKILL)
            self.assertEqual(client.wait(10), -signal.SIGKILL)
            s.wait_log(r"session with %s failed" % re.escape(b.id), timeout=30)
        a.verify()
        b.verify()
        for d in (a, b):
            self.assertNoDuplicates(d)
            self.assertTrue(set(d.ids()) <= union)
        if victim == "server":
            s = self.serve(a)
        p = b.sync(s.addr)
        self.assertSynced(p)
        self.assertSameEvents(a, b)
        self.assertEqual(set(a.ids()), union)
        for d in (a, b):
            self.assertNoDuplicates(d)
            self.assertEqual(d.count(), 2 * self.N)
            d.verify()

    def test_kill_server_mid_sync(self):
        self.run_kill("server")

    def test_kill_client_mid_sync(self):
        self.run_kill("client")


class Ports(WeftTest):
    """Ports come from the OS (port 0), so parallel runs never collide;
    IPv6 loopback works too."""

    def test_servers_on_port_zero_get_distinct_ports(self):
        a, b, c = self.device("a"), self.device("b"), self.device("c")
        self.pair(a, c)
        self.pair(b, c)
        sa, sb = self.serve(a), self.serve(b)
        self.assertNotEqual(sa.port, 0)
        self.assertNotEqual(sa.port, sb.port)
        a.append("notes", "from a")
        b.append("notes", "from b")
        self.assertSynced(c.sync(sa.addr))
        self.assertSynced(c.sync(sb.addr))
        self.assertEqual(c.count(), 2)

    def test_ipv6_loopback(self):
        why = ipv6_loopback()
        if why:
            print("skipping IPv6: %s" % why)
            self.skipTest(why)
        a, b = self.device("a"), self.device("b")
        self.pair(a, b)
        a.append("notes", "over IPv6")
        s = self.serve(a, listen="[::1]:0")
        self.assertTrue(s.addr.startswith("[::1]:"), s.addr)
        self.assertSynced(b.sync(s.addr))
        self.assertSameEvents(a, b)

    def test_hostname_is_resolved(self):
        a, b = self.device("a"), self.device("b")
        self.pair(a, b)
        a.append("notes", "by name")
        s = self.serve(a)
        self.assertSynced(b.sync("localhost:%d" % s.port))
        self.assertSameEvents(a, b)


class Cli(WeftTest):
    """`weft sync`: exit code 0 only when in sync; --watch retries with
    backoff and reconnects when the server comes back."""

    def test_exit_codes(self):
        a, b = self.device("a"), self.device("b")
        self.pair(a, b)
        s = self.serve(a)
        self.assertSynced(b.sync(s.addr))
        dead = s.addr
        self.assertEqual(s.stop(), 0)
        p = b.sync(dead)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("is `weft serve` running there", p.stderr)
        p = b.sync("not-an-address")
        self.assertEqual(p.returncode, 1)
        self.assertIn("HOST:PORT", p.stderr)
        p = b.run("sync", check=False)
        self.assertEqual(p.returncode, 2)  # usage

    def test_watch_reconnects_after_the_server_restarts(self):
        a, b = self.device("a"), self.device("b")
        self.pair(a, b)
        s = self.serve(a)
        port = s.port
        watch = self.popen(b, "sync", s.addr, "--watch", "--interval", "1", name="watch")
        s.wait_log(r"session with %s ok" % re.escape(b.id))
        self.assertEqual(s.stop(), 0)
        a.append("notes", "written while the server was down")
        wait_for(lambda: "retrying in" in slurp(watch.err_path), 15, "the watcher to notice the outage")
        s = self.serve(a, listen="127.0.0.1:%d" % port)
        wait_for(lambda: "written while the server was down" in [e["payload"] for e in b.events()], 30,
                 "the watcher to reconnect and fetch the new event")
        watch.send_signal(signal.SIGTERM)
        self.assertEqual(watch.wait(10 * SLOW), 0)
        err = slurp(watch.err_path)
        self.assertIn("cannot connect", err)


class Serve(WeftTest):
    """`weft serve`: concurrent clients, a log line per session with its
    stats, clean shutdown on SIGINT and SIGTERM."""

    def test_four_concurrent_clients(self):
        a = self.device("a")
        clients = [self.device("c%d" % i) for i in range(4)]
        for c in clients:
            self.pair(a, c)
            c.gen(400, scope="from-" + c.name)
        a.gen(100, scope="from-a")
        s = self.serve(a)
        procs = [self.popen(c, "sync", s.addr, name="sync") for c in clients]
        for c, p in zip(clients, procs):
            self.assertEqual(p.wait(60 * SLOW), 0, slurp(p.err_path))
        for c in clients:
            s.wait_log(r"session with %s ok: received 400 events, sent \d+" % re.escape(c.id))
        self.assertEqual(a.count(), 1700)
        # A second round brings everyone everything.
        for c in clients:
            self.assertSynced(c.sync(s.addr))
        self.assertSameEvents(a, *clients)
        self.assertEqual(s.stop(signal.SIGINT), 0)
        for d in [a] + clients:
            d.verify()

    def test_connections_over_max_conns_are_turned_away(self):
        a, b, c = self.device("a"), self.device("b"), self.device("c")
        self.pair(a, b)
        self.pair(a, c)
        b.gen(3000)
        s = self.serve(a, "--max-conns", "1")
        proxy = self.proxy(s.addr, rate=150_000)
        slow = self.popen(b, "sync", proxy.addr, name="sync")
        wait_for(lambda: a.count() > 0, 30, "the first session to move events")
        p = c.sync(s.addr)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn("may be busy", p.stderr)
        s.wait_log(r"refusing a connection: 1 sessions already running")
        self.assertEqual(slow.wait(60 * SLOW), 0, slurp(slow.err_path))
        self.assertSynced(c.sync(s.addr))  # a slot is free again

    def test_passphrase_protected_keys(self):
        a = self.device("a", passphrase="correct horse")
        b = self.device("b")
        self.pair(a, b)
        a.append("notes", "from a locked device")
        pf = os.path.join(self.tmp, "pass")
        with open(pf, "w") as f:
            f.write("correct horse\n")
        env = dict(a.env)
        env.pop("WEFT_PASSPHRASE")
        s = self.serve(a, "--passphrase-file", pf, env=env)
        self.assertSynced(b.sync(s.addr))
        self.assertSameEvents(a, b)

    def test_sigint_and_sigterm_stop_cleanly(self):
        a, b = self.device("a"), self.device("b")
        self.pair(a, b)
        for sig in (signal.SIGINT, signal.SIGTERM):
            s = self.serve(a)
            self.assertSynced(b.sync(s.addr))
            self.assertEqual(s.stop(sig), 0)
            self.assertIn("stopped", s.log())

    def test_sigterm_interrupts_a_stalled_session_after_the_grace_period(self):
        a, b = self.device("a"), self.device("b")
        self.pair(a, b)
        b.gen(3000)
        s = self.serve(a, "--grace", "1")
        proxy = self.proxy(s.addr, rate=100_000)
        client = self.popen(b, "sync", proxy.addr, name="sync")
        wait_for(lambda: a.count() > 0, 30, "the session to start moving events")
        t0 = time.monotonic()
        self.assertEqual(s.stop(signal.SIGTERM), 0)
        self.assertLess(time.monotonic() - t0, 10 * SLOW)
        log = s.log()
        self.assertIn("interrupting 1 session(s)", log)
        self.assertIn("interrupted by the shutdown", log)
        self.assertIn("stopped", log)
        self.assertNotEqual(client.wait(30 * SLOW), 0)
        a.verify()
        self.assertNoDuplicates(a)
        s = self.serve(a)
        self.assertSynced(b.sync(s.addr))
        self.assertEqual(a.count(), 3000)


if __name__ == "__main__":
    unittest.main(verbosity=2)
