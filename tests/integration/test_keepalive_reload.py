"""Replacing the workers under keep-alive load loses no request: HUP (new
workers, the old ones stopped with TERM) and the binary upgrade USR2 then
QUIT to the old master (its workers stopped with QUIT), with gthread and
asgi workers holding kept-alive connections. Every request of a bounded load of
back-to-back keep-alive clients must be answered 200: a stopping worker
answers what arrives on its connections with "Connection: close" and ends
an idle one with a FIN, never a reset."""
import http.client
import os
import signal
import socket
import threading
import time

import pytest

from conftest import ROOT, Server
from master_support import alive, children, kill_tree, read_pid, wait_until

APPS = os.path.join(ROOT, "tests", "apps", "master")
CLIENTS = 4


class Load:
    """CLIENTS threads, each sending GET / back to back on one kept-alive
    connection, opening a new one only when the server said it closes."""

    def __init__(self, port):
        self.port = port
        self.ok = 0
        self.failed = []
        self.pids = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(CLIENTS)]
        for t in self.threads:
            t.start()

    def client(self):
        conn = None
        while not self.stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException) as e:
                with self.lock:
                    self.failed.append(repr(e))
                conn.close()
                conn = None
                continue
            with self.lock:
                if resp.status == 200:
                    self.ok += 1
                    self.pids.add(body.strip())
                else:
                    self.failed.append("status %d" % resp.status)
            if resp.will_close:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def count(self):
        with self.lock:
            return self.ok

    def served_more(self, n=50, timeout=20):
        start = self.count()
        wait_until(lambda: self.count() >= start + n, timeout, "%d more requests served" % n)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(30)
        return self.ok, self.failed


APP = {"gthread": "app:app", "asgi": "app:asgi_app"}
SLOW_APP = {"gthread": "app:slow_app", "asgi": "app:asgi_app"}


@pytest.fixture(params=sorted(APP))
def kind(request):
    return request.param


def start(kind, pidfile):
    return Server(["--chdir", APPS, "-k", kind, "--threads", "4", "-w", "2",
                   "--keep-alive", "30", "-p", pidfile, APP[kind]], cwd=APPS)


def test_hup_under_keepalive_load_loses_nothing(tmp_path, kind):
    with start(kind, str(tmp_path / "m.pid")) as srv:
        pid = srv.proc.pid
        wait_until(lambda: len(children(pid)) == 2, what="workers")
        load = Load(srv.port)
        try:
            load.served_more()
            for _ in range(3):
                old = set(children(pid))
                srv.signal(signal.SIGHUP)
                wait_until(lambda: not (set(children(pid)) & old) and len(children(pid)) == 2,
                           what="the old workers replaced")
                load.served_more()
        finally:
            ok, failed = load.finish()
        assert failed == [], "%d of %d requests failed: %s" % (len(failed), ok + len(failed),
                                                               failed[:5])
        assert ok > 0


def test_usr2_then_quit_under_keepalive_load_loses_nothing(tmp_path, kind):
    pidfile = str(tmp_path / "m.pid")
    with start(kind, pidfile) as srv:
        master = srv.proc.pid
        wait_until(lambda: len(children(master)) == 2, what="workers")
        load = Load(srv.port)
        masters = [master]
        try:
            load.served_more()
            for _ in range(3):
                os.kill(master, signal.SIGUSR2)
                new = wait_until(lambda: read_pid(pidfile + ".2"), what="the new master")
                masters.append(new)
                wait_until(lambda: len(children(new)) == 2, what="the new master's workers")
                load.served_more()
                old_workers = [w for w in children(master) if w != new]  # the new master is its child
                os.kill(master, signal.SIGQUIT)
                wait_until(lambda: not alive(master) and not any(alive(w) for w in old_workers),
                           what="the old master and its workers gone")
                if master == srv.proc.pid:
                    srv.proc.wait(10)
                wait_until(lambda: read_pid(pidfile) == new, what="the new master promoted")
                master = new
                load.served_more()
        finally:
            ok, failed = load.finish()
            for m in masters:
                if m != srv.proc.pid and alive(m):
                    kill_tree(m, signal.SIGKILL)
        assert failed == [], "%d of %d requests failed: %s" % (len(failed), ok + len(failed),
                                                               failed[:5])
        assert ok > 0


def test_quit_ends_an_idle_keepalive_connection_with_a_fin(tmp_path, kind):
    with start(kind, str(tmp_path / "m.pid")) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=15) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            first = s.recv(65536)
            assert first.startswith(b"HTTP/1.1 200 "), first
            srv.signal(signal.SIGQUIT)
            try:
                assert s.recv(65536) == b""  # a FIN, not a reset
            except ConnectionResetError:
                raise AssertionError("idle keep-alive connection reset by QUIT")
        assert srv.proc.wait(20) == 0


GAP_APP = {"gthread": "app:gap_app", "asgi": "app:asgi_gap_app"}


def test_quit_keeps_a_keepalive_the_response_announced(kind):
    """QUIT lands after a response's head went out without "Connection:
    close" and before its body ends (the old master's workers after USR2,
    under keep-alive load). The client, told the connection stays open,
    sends its next request on it: that request is answered (with
    "Connection: close"), not met by a close. The head is read before the
    signal is sent, so the order is fixed."""
    srv = Server(["--chdir", APPS, "-k", kind, "--threads", "2", "-w", "1",
                  "--keep-alive", "30", GAP_APP[kind]], cwd=APPS, env={"GAP_SECONDS": "0.6"})
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        conn.request("GET", "/gap")
        resp = conn.getresponse()  # the head: keep-alive announced
        assert resp.status == 200 and not resp.will_close
        srv.signal(signal.SIGQUIT)
        assert resp.read() == b"gap\n"
        try:
            conn.request("GET", "/")
            nxt = conn.getresponse()
            got = (nxt.status, nxt.read().startswith(b"pid="), nxt.will_close)
        except (OSError, http.client.HTTPException) as e:
            got = e
        conn.close()
        assert got == (200, True, True), got
        assert srv.proc.wait(20) == 0
    finally:
        srv.stop()


def quit_during_slow_request(kind, seconds):
    """QUIT while a /slow request of `seconds` runs on a kept-alive
    connection; returns (its response or the exception, the master's exit
    code)."""
    srv = Server(["--chdir", APPS, "-k", kind, "--threads", "2", "-w", "1",
                  "--graceful-timeout", "60", "--keep-alive", "30", SLOW_APP[kind]],
                 cwd=APPS, env={"SLOW_SECONDS": str(seconds)})
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        conn.request("GET", "/")
        assert conn.getresponse().read()
        conn.request("GET", "/slow")
        time.sleep(0.3)
        srv.signal(signal.SIGQUIT)
        try:
            resp = conn.getresponse()
            got = (resp.status, resp.read(), resp.will_close)
        except (OSError, http.client.HTTPException) as e:
            got = e
        conn.close()
        return got, srv.proc.wait(20)
    finally:
        srv.stop()


def test_quit_delivers_a_request_about_to_finish(kind):
    """A request that ends within the quick stop's grace (1 s) is answered,
    with "Connection: close"."""
    got, code = quit_during_slow_request(kind, 0.6)
    assert not isinstance(got, Exception), got
    status, body, will_close = got
    assert status == 200 and body.startswith(b"pid=") and will_close
    assert code == 0


def test_quit_does_not_wait_for_a_long_request(kind):
    """QUIT is the quick stop: a request needing a minute more is cut, and
    the worker exits without waiting graceful_timeout (60 s here)."""
    got, code = quit_during_slow_request(kind, 60)
    assert isinstance(got, Exception), got
    assert code == 0
