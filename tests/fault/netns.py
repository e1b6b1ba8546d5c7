#!/usr/bin/env python3
"""Network faults between real weft processes in network namespaces.

Three devices A, B, C, each in its own network namespace with one address
(10.77.0.1-3, inside the namespaces only), joined by links this script
controls. Each device runs `weft serve`, writes (`weft put`, `weft append`)
and syncs with the others in a loop, while the links are impaired (delay
with jitter, so packets are reordered; loss; duplication) and cut and healed
(partitions). After the last heal every device must converge to the same
events and tables, with no acknowledged event lost, and each store must
verify and equal a rebuild.

The links: each namespace gets a TUN interface whose packets this script
switches between the namespaces (a small userspace switch applying the
impairments per link). When the kernel has the netem qdisc, `tc netem` on
the TUN interfaces adds delay, loss, duplication and reordering as well;
without it (e.g. kernels built without sch_netem) the switch does it.

Needs root, iproute2 (`ip`, `tc`) and /dev/net/tun; otherwise it says why
and exits 77 (ctest SKIP_RETURN_CODE).

Usage: netns.py --weft PATH/TO/weft [--seconds 40] [--seed N]
"""
import argparse
import fcntl
import heapq
import json
import os
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time

SKIP = 77
SCHEMA = """CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT NOT NULL DEFAULT '',
  votes INTEGER DEFAULT 0, owner TEXT UNIQUE);
"""
QUERY = "SELECT id, title, votes, owner FROM todo ORDER BY id"
TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
PORT = 7701


def skip(why):
    print(f"netns: SKIPPED: {why}")
    sys.exit(SKIP)


def sh(*args, check=True, timeout=30, **kw):
    p = subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {p.stderr.strip() or p.returncode}")
    return p


class Fail(Exception):
    pass


# ------------------------------------------------------------------ links

class Switch(threading.Thread):
    """Moves IPv4 packets between the namespaces' TUN interfaces, per link:
    cut or up, loss, duplication, delay with jitter (reordering)."""

    def __init__(self, fds, rng):
        super().__init__(daemon=True)
        self.fds = fds  # device index -> tun fd
        self.rng = rng
        self.lock = threading.Lock()
        self.cut = set()  # frozenset({i, j})
        self.loss = self.dup = 0.0
        self.delay = self.jitter = 0.0
        self.queue = []  # (due, n, fd, packet)
        self.n = 0
        self.stats = {"forwarded": 0, "dropped": 0, "duplicated": 0, "cut": 0}
        self.stopping = False

    def set(self, loss=0.0, dup=0.0, delay=0.0, jitter=0.0):
        with self.lock:
            self.loss, self.dup, self.delay, self.jitter = loss, dup, delay, jitter

    def cut_link(self, i, j, is_cut):
        with self.lock:
            (self.cut.add if is_cut else self.cut.discard)(frozenset((i, j)))

    def run(self):
        by_fd = {fd: i for i, fd in self.fds.items()}
        while not self.stopping:
            now = time.monotonic()
            while self.queue and self.queue[0][0] <= now:
                _, _, fd, pkt = heapq.heappop(self.queue)
                try:
                    os.write(fd, pkt)
                except OSError:
                    pass
            timeout = 0.05 if not self.queue else max(0.0, min(0.05, self.queue[0][0] - now))
            r, _, _ = select.select(list(by_fd), [], [], timeout)
            for fd in r:
                try:
                    pkt = os.read(fd, 65536)
                except OSError:
                    continue
                if len(pkt) < 20 or pkt[0] >> 4 != 4:
                    continue  # IPv4 only
                dst = pkt[16:20]
                if dst[:3] != bytes([10, 77, 0]) or not 1 <= dst[3] <= len(self.fds):
                    continue
                src_i, dst_i = by_fd[fd], dst[3] - 1
                with self.lock:
                    if frozenset((src_i, dst_i)) in self.cut:
                        self.stats["cut"] += 1
                        continue
                    if self.rng.random() < self.loss:
                        self.stats["dropped"] += 1
                        continue
                    copies = 2 if self.rng.random() < self.dup else 1
                    self.stats["duplicated"] += copies - 1
                    for _ in range(copies):
                        due = time.monotonic() + max(0.0, self.delay + self.rng.uniform(-self.jitter, self.jitter))
                        self.n += 1
                        heapq.heappush(self.queue, (due, self.n, self.fds[dst_i], pkt))
                        self.stats["forwarded"] += 1


# ---------------------------------------------------------------- devices

class Net:
    def __init__(self, tag):
        self.tag = tag
        self.ns = [f"weft{tag}{c}" for c in "abc"]
        self.tun = [f"wt{tag}{c}" for c in "abc"]
        self.fds = {}
        self.netem = False

    def setup(self):
        for ns in self.ns:
            p = sh("ip", "netns", "add", ns, check=False)
            if p.returncode != 0:
                self.teardown()
                skip(f"cannot create a network namespace ({p.stderr.strip()}); run as root with iproute2")
        for i, (ns, tun) in enumerate(zip(self.ns, self.tun)):
            try:
                fd = os.open("/dev/net/tun", os.O_RDWR)
                fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", tun.encode(), IFF_TUN | IFF_NO_PI))
            except OSError as e:
                self.teardown()
                skip(f"cannot create a TUN interface ({e}); /dev/net/tun is needed")
            self.fds[i] = fd
            sh("ip", "link", "set", tun, "netns", ns)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"10.77.0.{i + 1}/24", "dev", tun)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", tun, "up")
        # netem when the kernel has it (it may not: then the switch impairs).
        p = sh("ip", "netns", "exec", self.ns[0], "tc", "qdisc", "add", "dev", self.tun[0], "root", "netem",
               "delay", "1ms", check=False)
        self.netem = p.returncode == 0
        if self.netem:
            sh("ip", "netns", "exec", self.ns[0], "tc", "qdisc", "del", "dev", self.tun[0], "root", check=False)
        return self.netem

    def set_netem(self, spec):
        if not self.netem:
            return
        for ns, tun in zip(self.ns, self.tun):
            sh("ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", tun, "root", "netem", *spec.split(),
               check=False)

    def teardown(self):
        for ns in self.ns:
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", ns, check=False)
        for fd in self.fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = {}


class Device:
    def __init__(self, i, weft, work, net):
        self.i, self.weft, self.net = i, weft, net
        self.name = "ABC"[i]
        self.db = os.path.join(work, f"{self.name.lower()}.db")
        self.addr = f"10.77.0.{i + 1}:{PORT}"
        self.acked = set()
        self.server = None
        self.lock = threading.Lock()
        self.syncs_ok = self.syncs_failed = 0

    def cmd(self, *args, timeout=30, check=True, netns=False):
        argv = [self.weft, "--db", self.db, *args]
        if netns:
            argv = ["ip", "netns", "exec", self.net.ns[self.i], *argv]
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise Fail(f"{self.name}: weft {' '.join(args)}: {p.stderr.strip()}")
        return p

    def serve(self):
        self.server = subprocess.Popen(["ip", "netns", "exec", self.net.ns[self.i], self.weft, "--db", self.db,
                                        "serve", "--listen", self.addr], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)

    def write(self, k):
        if k % 3 == 0:
            p = self.cmd("append", "--scope", "notes", "--kind", "note.put", f"{self.name} note {k}", check=False)
        elif k % 3 == 1:
            p = self.cmd("put", "todo", f"r{k % 17}", f"title={self.name} {k}", "--scope", "todo", check=False)
        else:
            p = self.cmd("incr", "todo", f"r{k % 5}", "votes=1", "--scope", "todo", check=False)
        if p.returncode == 0:
            line = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
            if len(line) == 64:
                with self.lock:
                    self.acked.add(line)
        else:
            raise Fail(f"{self.name}: a local write failed: {p.stderr.strip()}")

    def sync_with(self, other, timeout=8):
        argv = ["ip", "netns", "exec", self.net.ns[self.i], self.weft, "--db", self.db, "sync", other.addr]
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)  # a link cut mid-session: give up, retry later
            p.wait()
            rc = -9
        if rc == 0:
            self.syncs_ok += 1
        else:
            self.syncs_failed += 1
        return rc == 0

    def ids(self):
        out = self.cmd("log", "--json").stdout
        return {json.loads(line)["id"] for line in out.splitlines() if line.strip()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weft", required=True)
    ap.add_argument("--seconds", type=int, default=40, help="time under faults before the last heal")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    if os.geteuid() != 0:
        skip("network namespaces need root (CI runs as root)")
    if not shutil.which("ip"):
        skip("the `ip` command is missing: apt-get install iproute2")
    if not os.path.exists("/dev/net/tun"):
        skip("/dev/net/tun is missing")
    weft = os.path.abspath(args.weft)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    net = Net(str(os.getpid() % 100000))
    work = tempfile.mkdtemp(prefix="weft-netns-")
    devs, switch, stop = [], None, threading.Event()
    ok = False
    start = time.time()
    try:
        has_netem = net.setup()
        switch = Switch(net.fds, random.Random(seed + 1))
        switch.start()
        print(f"netns: 3 namespaces, links through a userspace switch"
              f"{' plus tc netem' if has_netem else ' (no netem qdisc in this kernel: the switch delays, drops, duplicates and reorders)'}")
        schema = os.path.join(work, "schema.sql")
        with open(schema, "w") as f:
            f.write(SCHEMA)
        devs = [Device(i, weft, work, net) for i in range(3)]
        for d in devs:
            d.cmd("init")
            d.cmd("schema", "apply", schema)
        for d in devs:
            for o in devs:
                if o is not d:
                    d.cmd("trust", "add", o.cmd("id").stdout.split()[0])
        for d in devs:
            d.serve()
        time.sleep(0.5)

        errors = []

        def writer(d):
            k = 0
            try:
                while not stop.is_set():
                    d.write(k)
                    k += 1
                    time.sleep(rng.uniform(0.01, 0.1))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        def syncer(d):
            while not stop.is_set():
                for o in devs:
                    if o is not d and not stop.is_set():
                        d.sync_with(o)
                time.sleep(0.2)

        threads = [threading.Thread(target=writer, args=(d,), daemon=True) for d in devs]
        threads += [threading.Thread(target=syncer, args=(d,), daemon=True) for d in devs]
        for t in threads:
            t.start()

        phase = max(4, args.seconds // 4)
        plan = [
            ("impaired links: 30 ms +-20 ms (reordering), 5% loss, 5% duplication",
             dict(loss=0.05, dup=0.05, delay=0.03, jitter=0.02), "delay 30ms 20ms loss 5% duplicate 5% reorder 25%",
             []),
            ("A cut off from B and C", dict(loss=0.02, dup=0.02, delay=0.01, jitter=0.01), "delay 10ms 10ms",
             [(0, 1), (0, 2)]),
            ("B-C cut, A back; heavy loss", dict(loss=0.15, dup=0.05, delay=0.02, jitter=0.02),
             "delay 20ms 20ms loss 15% duplicate 5%", [(1, 2)]),
            ("every link cut", dict(), "delay 1ms", [(0, 1), (0, 2), (1, 2)]),
        ]
        for what, imp, spec, cuts in plan:
            for i in range(3):
                for j in range(i + 1, 3):
                    switch.cut_link(i, j, (i, j) in cuts)
            switch.set(**imp)
            net.set_netem(spec)
            print(f"  {time.time() - start:5.1f} s: {what}")
            time.sleep(phase)
            if errors:
                raise Fail(str(errors[0]))

        # Heal: writes stop, links come back clean, syncing goes on.
        stop.set()
        for t in threads:
            t.join(timeout=30)
        for i in range(3):
            for j in range(i + 1, 3):
                switch.cut_link(i, j, False)
        switch.set()
        net.set_netem("delay 1ms")
        print(f"  {time.time() - start:5.1f} s: healed; {sum(len(d.acked) for d in devs)} acknowledged writes")
        deadline = time.time() + 90
        converged = False
        while time.time() < deadline and not converged:
            for d in devs:
                for o in devs:
                    if o is not d:
                        d.sync_with(o, timeout=20)
            ids = [d.ids() for d in devs]
            converged = ids[0] == ids[1] == ids[2]
        if not converged:
            raise Fail("the devices did not converge within 90 s of the heal")
        all_acked = set().union(*(d.acked for d in devs))
        tables = []
        for d in devs:
            missing = all_acked - ids[d.i]
            if missing:
                raise Fail(f"{d.name} lacks {len(missing)} acknowledged events, e.g. {sorted(missing)[0]}")
            v = d.cmd("verify", check=False)
            if v.returncode != 0:
                raise Fail(f"{d.name}: weft verify failed: {v.stdout.strip()} {v.stderr.strip()}")
            before = d.cmd("query", QUERY).stdout
            d.cmd("rebuild")
            if d.cmd("query", QUERY).stdout != before:
                raise Fail(f"{d.name}: tables differ from a rebuild")
            tables.append(before)
        if not tables[0] == tables[1] == tables[2]:
            raise Fail("the devices hold different tables")
        st = switch.stats
        print(f"netns: converged {time.time() - start:.0f} s after the start: {len(ids[0])} events, "
              f"{len(all_acked)} acknowledged writes all present on every device, tables identical and equal "
              f"to a rebuild; syncs ok/failed {sum(d.syncs_ok for d in devs)}/{sum(d.syncs_failed for d in devs)}; "
              f"packets forwarded {st['forwarded']}, dropped {st['dropped']}, duplicated {st['duplicated']}, "
              f"cut {st['cut']} (seed {seed})")
        ok = True
        return 0
    except Fail as e:
        print(f"netns FAILED (seed {seed}, files kept in {work}): {e}")
        return 1
    finally:
        stop.set()
        for d in devs:
            if d.server:
                d.server.kill()
                d.server.wait()
        if switch:
            switch.stopping = True
        net.teardown()
        if ok:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
