"""At worker_connections, new clients are served: the worker closes the
oldest connections that wait for a request and have sent none of it (as
nginx does with its reusable connections), logging it once, not per
connection. A slow head that has begun (slowloris) is not taken: it is
served when it completes. Under upstream (and cgunicorn before), 1,000
silent connections made new clients wait until timeouts expired."""
import os
import socket
import time

import pytest

from conftest import ROOT, Server

APPS = os.path.join(ROOT, "tests", "apps", "http")
SILENT = 1000   # the default worker_connections
SLOW = 20
NEW = 20


def read_all(s):
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return out
        out += chunk


@pytest.mark.parametrize("worker_class", ["gthread", "asgi"])
def test_new_clients_served_at_the_cap(worker_class):
    app = "slowapp:asgi" if worker_class == "asgi" else "slowapp:app"
    srv = Server(["--chdir", APPS, "-k", worker_class, "-w", "1", app], env={"SLOW_S": "0"})
    held = []
    try:
        for _ in range(SILENT):
            held.append(socket.create_connection(("127.0.0.1", srv.port), timeout=30))
        slow = []
        for i in range(SLOW):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
            s.sendall(b"GET /slow%d HTTP/1.1\r\nHost: t\r\n" % i)  # the head goes on later
            slow.append(s)
        time.sleep(1)  # every one of them is accepted (or queued) by now
        for i in range(NEW):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
                s.sendall(b"GET /new%d HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % i)
                got = read_all(s)  # socket.timeout here: the client was left waiting
            assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b"served /new%d" % i), got
        for i, s in enumerate(slow):  # begun heads were not taken
            s.sendall(b"Connection: close\r\n\r\n")
            got = read_all(s)
            assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b"served /slow%d" % i), got
        log = srv.log()
        assert log.count("worker_connections (1000) reached") == 1, log[-2000:]
    finally:
        for s in held:
            s.close()
        srv.stop()
