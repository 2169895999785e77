"""A streamed response's chunks may be coalesced only while the app produces
them back to back: whatever the app yielded before it pauses must reach the
client while it is paused. The app (tests/apps/http/pauseapp.py) blocks
between bursts until the test, having received the whole burst before the
pause, releases it; a server that held the burst back until the app produced
more would never finish (the read times out). No timing decides the result."""
import os
import socket

import pytest

from conftest import ROOT

APPS = os.path.join(ROOT, "tests", "apps", "http")
READ_TIMEOUT = 20


@pytest.fixture(scope="module", params=["sync", "gthread"])
def server(request):
    from conftest import Server
    threads = ["--threads", "2"] if request.param == "gthread" else []
    srv = Server(["--chdir", APPS, "-k", request.param, "pauseapp:app", "--timeout", "60"]
                 + threads)
    request.addfinalizer(srv.stop)
    return srv


def expected(burst, pauses):
    k = 0
    out = []
    for _ in range(pauses + 1):
        out.append(b"".join(b"%d." % (k + i) for i in range(burst)))
        k += burst
    return out


def dechunk_prefix(raw):
    """The body bytes of a chunked body received so far (complete chunks)."""
    out, pos = b"", 0
    while True:
        eol = raw.find(b"\r\n", pos)
        if eol < 0:
            return out
        size = int(raw[pos:eol], 16)
        if size == 0 or len(raw) < eol + 2 + size + 2:
            return out
        out += raw[eol + 2:eol + 2 + size]
        pos = eol + 2 + size + 2


def run(server, tmp_path, burst, pauses, query=""):
    fifo = str(tmp_path / "go")
    for i in range(1, pauses + 1):
        os.mkfifo(fifo + str(i))
    want = expected(burst, pauses)
    s = socket.create_connection(("127.0.0.1", server.port), timeout=READ_TIMEOUT)
    try:
        s.sendall(b"GET /?burst=%d&pauses=%d%s HTTP/1.1\r\nHost: x\r\nX-Fifo: %s\r\n"
                  b"Connection: close\r\n\r\n" % (burst, pauses, query.encode(), fifo.encode()))
        raw = b""
        while b"\r\n\r\n" not in raw:
            raw += s.recv(65536)
        head, raw = raw.split(b"\r\n\r\n", 1)
        chunked = b"transfer-encoding: chunked" in head.lower()
        for i in range(pauses + 1):
            goal = b"".join(want[:i + 1])
            while True:
                body = dechunk_prefix(raw) if chunked else raw
                if len(body) >= len(goal):
                    break
                try:
                    more = s.recv(65536)
                except socket.timeout:
                    pytest.fail("burst %d was held back while the app paused: got %d of %d "
                                "bytes" % (i, len(body), len(goal)))
                assert more, "connection closed early"
                raw += more
            assert body[:len(goal)] == goal
            if i < pauses:
                fd = os.open(fifo + str(i + 1), os.O_WRONLY)
                os.write(fd, b"g")
                os.close(fd)
        if chunked:
            while not raw.endswith(b"0\r\n\r\n"):
                more = s.recv(65536)
                assert more, "no last chunk"
                raw += more
            assert dechunk_prefix(raw) == b"".join(want)
    finally:
        s.close()


@pytest.mark.parametrize("burst,pauses", [(1, 1), (1, 3), (300, 2), (5000, 1)])
def test_chunks_before_a_pause_are_sent(server, tmp_path, burst, pauses):
    run(server, tmp_path, burst, pauses)


def test_with_content_length(server, tmp_path):
    run(server, tmp_path, 300, 2, "&length=1")


def test_write_callable(server, tmp_path):
    run(server, tmp_path, 50, 2, "&write=1")
