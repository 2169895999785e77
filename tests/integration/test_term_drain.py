"""A graceful stop (TERM) serves the connections the kernel has already
queued on the listen socket: the master stops new ones from queueing, and
the workers take and answer what is queued before they exit (upstream
resets them, gunicorn #3397). Nothing accepted by the kernel is lost."""
import os
import signal
import socket
import time

import pytest

from conftest import ROOT, Server

APPS = os.path.join(ROOT, "tests", "apps", "http")
QUEUED = 30


def read_all(s):
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return out + b"<RESET>"
        if not chunk:
            return out
        out += chunk


@pytest.mark.parametrize("worker_class", ["sync", "gthread", "asgi"])
def test_term_serves_the_queued_connections(worker_class):
    app = "slowapp:asgi" if worker_class == "asgi" else "slowapp:app"
    # few connection slots, so that most connections wait in the kernel's
    # queue, not in the worker
    args = ["--chdir", APPS, "-k", worker_class, "-w", "1", "--worker-connections", "4", app]
    if worker_class == "gthread":
        args[-1:-1] = ["--threads", "2"]
    srv = Server(args)
    socks = []
    try:
        for i in range(QUEUED):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=60)
            s.sendall(b"GET /r%d HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % i)
            socks.append(s)
        time.sleep(0.5)  # a few are served; the rest wait in the listen queue
        os.kill(srv.proc.pid, signal.SIGTERM)
        answers = [read_all(s) for s in socks]
        srv.proc.wait(60)
    finally:
        for s in socks:
            s.close()
        srv.stop()
    bad = [(i, a[:80]) for i, a in enumerate(answers)
           if not (a.startswith(b"HTTP/1.1 200 ") and a.endswith(b"served /r%d" % i))]
    assert bad == [], "%d of %d queued requests lost: %r" % (len(bad), QUEUED, bad[:5])
    assert srv.proc.returncode == 0


def test_new_connections_are_not_queued_while_stopping():
    """Once the stop began, a new client is not left waiting in a queue no
    one will serve: it is refused (or never completes its connect) instead
    of getting a reset after sending its request."""
    srv = Server(["--chdir", APPS, "-w", "1", "slowapp:app"], env={"SLOW_S": "1"})
    try:
        busy = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        busy.sendall(b"GET /busy HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        time.sleep(0.3)
        os.kill(srv.proc.pid, signal.SIGTERM)
        time.sleep(0.3)
        late = socket.socket()
        late.settimeout(0.5)
        try:
            late.connect(("127.0.0.1", srv.port))
            late.sendall(b"GET /late HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            got = read_all(late)
            # connected (queued) before the drain ended: then it is served
            assert got.startswith(b"HTTP/1.1 200 "), got
        except (socket.timeout, ConnectionRefusedError, ConnectionResetError):
            pass  # never queued: the client can retry elsewhere
        finally:
            late.close()
        assert read_all(busy).startswith(b"HTTP/1.1 200 ")
        srv.proc.wait(30)
    finally:
        srv.stop()
