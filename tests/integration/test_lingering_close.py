"""A connection the server ends while the client may still be sending (a
body the app did not read, a refused head followed by its body) is closed
lingering: FIN after the whole response, what the client still sends read
and discarded until its FIN (bounded), so the client reads the complete
answer and then an EOF, never a reset (which can destroy the answer in
the client's buffer). Kept-alive connections the server closes get a FIN
the same way."""
import os
import socket
import time

import pytest

from conftest import ROOT, Server

APPS = os.path.join(ROOT, "tests", "apps", "http")


@pytest.fixture(scope="module", params=["sync", "gthread", "asgi"])
def server(request):
    app = "bodyapp:asgi" if request.param == "asgi" else "bodyapp:app"
    srv = Server(["--chdir", APPS, "-k", request.param, "--keep-alive", "1", app])
    request.addfinalizer(srv.stop)
    return srv


def answer_then_eof(srv, raw):
    """Sends raw, then reads to the end: the answer, or '<RESET>' after it."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=15) as s:
        s.sendall(raw)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return out + b"<RESET>"
            if not chunk:
                return out
            out += chunk


CASES = {
    # the app answers without reading the body; a 64 KiB chunk extension
    # makes the body unreadable for the server too
    "unread chunked body": (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1;"
                            + b"a" * 65536 + b"\r\nx\r\n0\r\n\r\n", b"HTTP/1.1 200 "),
    "unread 48 KiB body": (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 49152\r\n"
                           b"Connection: close\r\n\r\n" + b"b" * 49152, b"HTTP/1.1 200 "),
    "refused head, then its body": (b"POST / HTTP/1.1\r\nHost: t\r\nBad Header\r\n"
                                    b"Content-Length: 40000\r\n\r\n" + b"c" * 40000,
                                    b"HTTP/1.1 400 "),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_answer_then_fin_not_reset(server, name):
    raw, status = CASES[name]
    for _ in range(3):
        got = answer_then_eof(server, raw)
        assert got.startswith(status), got[:200]
        assert not got.endswith(b"<RESET>"), "reset after %r" % got[-120:]


def test_idle_keepalive_closed_with_a_fin(server):
    if server.log().count("Using worker: sync"):
        pytest.skip("the sync worker keeps no connection alive")
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 "), first
        time.sleep(2.5)  # past keepalive (1 s): the server ends the connection
        try:
            assert s.recv(65536) == b""  # a FIN, seen before the next request
        except ConnectionResetError:
            pytest.fail("idle keep-alive connection reset instead of closed")
