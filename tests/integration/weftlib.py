"""Helpers for the integration tests: real `weft` processes over TLS on
loopback, a TCP proxy that can corrupt or slow the TLS stream, and waits on
conditions with deadlines (never bare sleeps).

Python 3 standard library only. The binaries come from the environment:
WEFT_BIN (the `weft` command) and WEFT_GEN_BIN (tests/integration/gen_events.c).
"""
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

WEFT = os.environ.get("WEFT_BIN", "")
GEN = os.environ.get("WEFT_GEN_BIN", "")
# Sanitizer builds run several times slower: stretch every deadline.
SLOW = 4 if os.environ.get("WEFT_TEST_SCALE") == "asan" else 1


def wait_for(cond, timeout, what, interval=0.02):
    """Polls cond() until it returns something true; fails after timeout s."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout * SLOW, what))
        time.sleep(interval)


SANITIZER = re.compile(r"(AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:)")


def check_sanitizers(text, what):
    """Sanitizer builds report on stderr; any report fails the test."""
    m = SANITIZER.search(text or "")
    if m:
        raise AssertionError("%s: sanitizer report:\n%s" % (what, text[max(0, m.start() - 200):m.start() + 3000]))


def slurp(path):
    with open(path) as f:
        return f.read()


def describe(p):
    return "exit %s\n--- stdout\n%s--- stderr\n%s" % (p.returncode, p.stdout, p.stderr)


class Device:
    """One store with its identity, driven through the `weft` command."""

    def __init__(self, tmp, name, passphrase=None):
        self.name = name
        self.tmp = tmp
        self.path = os.path.join(tmp, name + ".db")
        self.env = dict(os.environ)
        self.env.pop("WEFT_PASSPHRASE", None)
        if passphrase:
            self.env["WEFT_PASSPHRASE"] = passphrase
        self.run("init")
        lines = self.run("id").stdout.splitlines()
        self.id = lines[0].strip()
        self.tls_key = lines[1].split(":", 1)[1].strip() if len(lines) > 1 else ""

    def run(self, *args, check=True, timeout=60):
        p = subprocess.run([WEFT, "--db", self.path] + [str(a) for a in args], capture_output=True,
                           text=True, timeout=timeout * SLOW, env=self.env)
        check_sanitizers(p.stderr, "weft %s" % " ".join(map(str, args)))
        if check and p.returncode != 0:
            raise AssertionError("weft --db %s %s: %s" % (self.name, " ".join(map(str, args)), describe(p)))
        return p

    def popen(self, *args, stdout=None, stderr=None):
        return subprocess.Popen([WEFT, "--db", self.path] + [str(a) for a in args], env=self.env,
                                stdout=stdout or subprocess.DEVNULL, stderr=stderr or subprocess.DEVNULL)

    def sync(self, addr, *extra, timeout=60):
        return self.run("sync", addr, *extra, check=False, timeout=timeout)

    def gen(self, n, scope="bulk", size=64):
        """Appends n events in one process (see gen_events.c)."""
        subprocess.run([GEN, self.path, str(n), scope, str(size)], check=True, timeout=120 * SLOW, env=self.env)

    def append(self, scope, data, kind="note"):
        self.run("append", "--scope", scope, "--kind", kind, data)

    def trust(self, other, scopes=None, read=False, write=False):
        args = ["trust", "add", other.id]
        if scopes:
            args += ["--scopes", ",".join(scopes)]
        if read:
            args.append("--read")
        if write:
            args.append("--write")
        self.run(*args)

    def untrust(self, other):
        self.run("trust", "remove", other.id)

    def events(self, scope=None):
        args = ["log", "--json"] + (["--scope", scope] if scope else [])
        return [json.loads(line) for line in self.run(*args).stdout.splitlines() if line.strip()]

    def ids(self, scope=None):
        return [e["id"] for e in self.events(scope)]

    def count(self):
        return len(self.run("log", "--json").stdout.splitlines())

    def authors(self):
        return {e["author"] for e in self.events()}

    def verify(self):
        p = self.run("verify", check=False)
        if p.returncode != 0:
            raise AssertionError("weft verify failed on %s: %s" % (self.name, describe(p)))
        return p.stdout

    def query(self, sql):
        return self.run("query", sql).stdout

    def serve(self, *extra, listen="127.0.0.1:0", env=None):
        return Server(self, listen, extra, env)


class Server:
    """`weft serve` in the background; its address comes from the
    "listening on ADDR as ID" line (port 0: the OS picks a free port)."""

    count = 0

    def __init__(self, device, listen, extra=(), env=None):
        Server.count += 1
        self.device = device
        self.ended = False  # stopped or killed on purpose
        self.log_path = "%s.serve-%d.log" % (device.path, Server.count)
        self.logf = open(self.log_path, "w")
        self.proc = subprocess.Popen([WEFT, "--db", device.path, "serve", "--listen", listen] + list(extra),
                                     stdout=subprocess.PIPE, stderr=self.logf, text=True,
                                     env=env if env is not None else device.env)
        line = self._read_line(15)
        m = re.match(r"listening on (\S+) as (\S+)$", line.strip())
        if not m:
            self.kill()
            raise AssertionError("weft serve did not announce its address: %r\n%s" % (line, self.log()))
        self.addr = m.group(1)
        self.port = int(self.addr.rsplit(":", 1)[1])
        assert m.group(2) == device.id, (m.group(2), device.id)

    def _read_line(self, timeout):
        deadline = time.monotonic() + timeout * SLOW
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                return ""
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                return self.proc.stdout.readline()

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def wait_log(self, pattern, timeout=10, count=1):
        return wait_for(lambda: len(re.findall(pattern, self.log())) >= count, timeout,
                        "%d x /%s/ in the server log:\n%s" % (count, pattern, self.log()))

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Signals the server and returns its exit code."""
        self.ended = True
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout * SLOW)
        finally:
            self.close()

    def kill(self):
        """kill -9."""
        self.ended = True
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.close()

    def finish(self):
        """Test cleanup: a server still running must stop cleanly."""
        if not self.ended and self.proc.poll() is None:
            rc = self.stop()
            if rc != 0 or "stopped" not in self.log():
                raise AssertionError("weft serve did not stop cleanly (exit %s):\n%s" % (rc, self.log()))
        self.close()
        check_sanitizers(self.log(), "weft serve")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()
        if not self.logf.closed:
            self.logf.close()


class Proxy:
    """Forwards TCP between a client and target ("host:port"), TLS record
    by record. flip=("c2s" | "s2c", n, min_len): flip one byte in the
    middle of the n-th (from 0) application-data record of at least
    min_len bytes in that direction (so after the handshake, in a record
    that carries sync data). rate: bytes per second per direction."""

    def __init__(self, target, flip=None, rate=None):
        host, port = target.rsplit(":", 1)
        self.target = (host.strip("[]"), int(port))
        self.flip = flip
        self.rate = rate
        self.flipped = threading.Event()
        self.bytes = {"c2s": 0, "s2c": 0}
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.closing = False
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.closing:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(self.target, timeout=10)
                s.settimeout(None)
            except OSError:
                c.close()
                continue
            for x in (c, s):
                x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.conns += [c, s]
            done = [0]
            for src, dst, d in ((c, s, "c2s"), (s, c, "s2c")):
                threading.Thread(target=self._pump, args=(src, dst, d, done), daemon=True).start()

    def _pump(self, src, dst, direction, done):
        buf = bytearray()
        app = 0
        start = time.monotonic()
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                buf += data
                out = bytearray()
                while len(buf) >= 5:
                    rlen = int.from_bytes(buf[3:5], "big")
                    if len(buf) < 5 + rlen:
                        break
                    rec = bytearray(buf[:5 + rlen])
                    del buf[:5 + rlen]
                    if rec[0] == 23:  # application data: after the handshake
                        f = self.flip
                        if f and f[0] == direction and rlen >= f[2] and not self.flipped.is_set():
                            if app == f[1]:
                                rec[5 + rlen // 2] ^= 0x01
                                self.flipped.set()
                            app += 1
                    out += rec
                if out:
                    if self.rate:
                        # Bandwidth simulation, not a race fix: hold the
                        # stream to `rate` bytes per second.
                        sent += len(out)
                        ahead = sent / self.rate - (time.monotonic() - start)
                        if ahead > 0:
                            time.sleep(ahead)
                    dst.sendall(out)
                    with self.lock:
                        self.bytes[direction] += len(out)
            if buf:
                dst.sendall(buf)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            for x in (src, dst):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        finally:
            with self.lock:
                done[0] += 1
                if done[0] == 2:
                    src.close()
                    dst.close()

    def close(self):
        self.closing = True
        self.sock.close()
        with self.lock:
            for x in self.conns:
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def ipv6_loopback():
    """None if [::1] works, else the reason it does not."""
    if not socket.has_ipv6:
        return "Python was built without IPv6"
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return None
    except OSError as e:
        return "cannot bind [::1]: %s" % e


class WeftTest(unittest.TestCase):
    """Per test: a private directory (kept with WEFT_KEEP=1), and cleanup of
    every process and proxy it started."""

    def setUp(self):
        if not WEFT or not os.path.exists(WEFT):
            self.fail("WEFT_BIN does not name the weft binary: %r" % WEFT)
        # tmpfs when there is one: fsync is free there, and kill -9 (not
        # power loss) is what these tests simulate.
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self.tmp = tempfile.mkdtemp(prefix="weft-it-", dir=shm)
        if os.environ.get("WEFT_KEEP"):
            print("\n%s: %s" % (self.id(), self.tmp))
        else:
            self.addCleanup(shutil.rmtree, self.tmp, True)

    def device(self, name, passphrase=None):
        return Device(self.tmp, name, passphrase)

    def serve(self, device, *extra, listen="127.0.0.1:0", env=None):
        s = device.serve(*extra, listen=listen, env=env)
        self.addCleanup(s.finish)
        return s

    def proxy(self, target, **kw):
        p = Proxy(target, **kw)
        self.addCleanup(p.close)
        return p

    def popen(self, device, *args, name="proc"):
        out = open(os.path.join(self.tmp, "%s-%s.out" % (device.name, name)), "w")
        err_path = os.path.join(self.tmp, "%s-%s.err" % (device.name, name))
        err = open(err_path, "w")
        p = device.popen(*args, stdout=out, stderr=err)
        p.err_path = err_path
        p.out_path = out.name

        def cleanup():
            if p.poll() is None:
                p.kill()
                p.wait(10)
            out.close()
            err.close()
            with open(err_path) as f:
                check_sanitizers(f.read(), "weft %s" % " ".join(map(str, args)))
        self.addCleanup(cleanup)
        return p

    def pair(self, a, b, **kw):
        a.trust(b, **kw)
        b.trust(a)

    def assertSynced(self, p, msg=""):
        self.assertEqual(p.returncode, 0, msg + describe(p))
        self.assertIn("in sync with", p.stdout)

    def assertRefused(self, p, *needles):
        self.assertNotEqual(p.returncode, 0, describe(p))
        for n in needles:
            self.assertIn(n, p.stderr, describe(p))

    def assertSameEvents(self, *devices):
        sets = [sorted(json.dumps(e, sort_keys=True) for e in d.events()) for d in devices]
        for d, s in zip(devices[1:], sets[1:]):
            self.assertEqual(len(s), len(sets[0]), "%s and %s hold different numbers of events"
                             % (devices[0].name, d.name))
            self.assertEqual(s, sets[0], "%s and %s hold different events" % (devices[0].name, d.name))

    def assertNoDuplicates(self, d):
        ids = d.ids()
        self.assertEqual(len(ids), len(set(ids)), "%s lists an event twice" % d.name)
