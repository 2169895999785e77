"""RFC 9110 §6.6.1: the Date header. It is never older than the clock the
application reads while answering (the server must not read a coarse,
lagging clock around each second boundary), and error answers (400, 414,
...) carry it too, since the server has a clock."""
import email.utils
import http.client
import os
import socket
import sys
import time

import pytest

from conftest import ROOT, Server

sys.path.insert(0, os.path.join(ROOT, "conformance"))
from cgtest_support import exchange  # noqa: E402

APPS = os.path.join(ROOT, "tests", "apps", "http")


@pytest.fixture(scope="module", params=["sync", "gthread", "asgi"])
def server(request):
    app = "clockapp:asgi" if request.param == "asgi" else "clockapp:app"
    srv = Server(["--chdir", APPS, "-k", request.param, app])
    request.addfinalizer(srv.stop)
    return srv


def date_of(headers):
    return email.utils.parsedate_to_datetime(headers["Date"]).timestamp()


def test_date_is_never_older_than_the_apps_clock(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    stale = []
    for _ in range(12):
        # Just after a second boundary, where a coarse clock still shows
        # the previous second.
        now = time.time()
        time.sleep(1 - (now - int(now)) + 0.0003)
        for _ in range(3):
            conn.request("GET", "/")
            resp = conn.getresponse()
            app_time = float(resp.read())
            date = date_of(dict(resp.getheaders()))
            if date < int(app_time):
                stale.append((app_time, resp.getheader("Date")))
            assert date <= app_time + 2
    conn.close()
    assert stale == []


BAD = [
    (b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n", 400),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xyz\r\n\r\n", 501),
]


@pytest.mark.parametrize("raw,status", BAD, ids=["400", "414", "501"])
def test_error_answers_carry_a_date(server, raw, status):
    before = int(time.time())
    out = exchange(server, raw)
    head = out.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    assert head.startswith("HTTP/1.1 %d" % status), head
    fields = dict(line.split(": ", 1) for line in head.split("\r\n")[1:])
    assert before <= date_of(fields) <= time.time() + 1, head


def test_websocket_refusal_carries_a_date():
    srv = Server(["--chdir", os.path.join(ROOT, "tests", "apps", "asgi"), "-k", "asgi",
                  "hello:app"])
    try:
        # a version the server does not speak: refused before the app runs
        raw = (b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 7\r\n\r\n")
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(raw)
            out = b""
            while b"\r\n\r\n" not in out:
                chunk = s.recv(4096)
                if not chunk:
                    break
                out += chunk
        head = out.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        assert head.startswith("HTTP/1.1 4"), head
        assert "\r\nDate: " in head, head
    finally:
        srv.stop()
