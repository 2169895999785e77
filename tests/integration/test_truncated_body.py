"""A request body cut short by the client (it half-closes before the body
ended) must never reach the app as complete, in every worker class and
every read style: wsgi.input raises, ASGI receive() gives http.disconnect,
and the server answers no success (upstream gunicorn closes without an
answer). Whole bodies sent the same way still arrive complete."""
import os
import sys
import time

import pytest

from conftest import ROOT, Server

sys.path.insert(0, os.path.join(ROOT, "conformance"))
from cgtest_support import exchange  # noqa: E402  (sends, half-closes, reads to the close)

APPS = os.path.join(ROOT, "tests", "apps", "http")
WSGI_MODES = ["read", "readn", "readline", "iter", "readlines"]

HEAD_CHUNKED = b"POST /?mode=%s&id=%s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
HEAD_LENGTH = b"POST /?mode=%s&id=%s HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n"
# (name, head, body bytes sent before the client half-closes)
TRUNCATED = [
    ("chunk-data-cut", HEAD_CHUNKED, b"5\r\nhel"),
    ("chunk-size-only", HEAD_CHUNKED, b"5\r\n"),
    ("no-chunk", HEAD_CHUNKED, b""),
    ("last-chunk-missing", HEAD_CHUNKED, b"5\r\nhello\r\n"),
    ("final-crlf-missing", HEAD_CHUNKED, b"5\r\nhello\r\n0\r\n"),
    ("length-short", HEAD_LENGTH, b"hello"),
]
WHOLE = [
    ("chunked", HEAD_CHUNKED, b"5\r\nhello\r\n0\r\n\r\n", 5),
    ("length", HEAD_LENGTH, b"helloworld", 10),
]


@pytest.fixture(scope="module", params=["sync", "gthread", "asgi"])
def server(request, tmp_path_factory):
    results = str(tmp_path_factory.mktemp("trunc"))
    app = "truncapp:asgi" if request.param == "asgi" else "truncapp:app"
    srv = Server(["--chdir", APPS, "-k", request.param, "--threads", "2", app],
                 env={"TRUNC_RESULTS": results})
    srv.results = results
    srv.worker_class = request.param
    request.addfinalizer(srv.stop)
    return srv


def result(srv, rid, timeout=15):
    path = os.path.join(srv.results, rid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                return f.read()
        time.sleep(0.02)
    return None


def modes(srv):
    return ["receive"] if srv.worker_class == "asgi" else WSGI_MODES


@pytest.mark.parametrize("case", TRUNCATED, ids=[c[0] for c in TRUNCATED])
def test_truncated_body_is_never_complete(server, case):
    name, head, body = case
    for mode in modes(server):
        rid = "%s-%s-%s" % (server.worker_class, name, mode)
        answer = exchange(server, head % (mode.encode(), rid.encode()) + body)
        got = result(server, rid)
        assert got is not None, "the app never ran for %s: %r" % (rid, answer)
        if server.worker_class == "asgi":
            assert got.startswith("disconnect"), (rid, got)
        else:
            assert got.startswith("error "), (rid, got)
            assert "truncated" in got or "closed" in got, (rid, got)
        assert not answer.startswith(b"HTTP/1.1 2"), (rid, answer[:200])


@pytest.mark.parametrize("case", WHOLE, ids=[c[0] for c in WHOLE])
def test_whole_body_then_half_close_is_complete(server, case):
    name, head, body, n = case
    for mode in modes(server):
        rid = "%s-whole-%s-%s" % (server.worker_class, name, mode)
        answer = exchange(server, head % (mode.encode(), rid.encode()) + body)
        assert result(server, rid) == "complete %d" % n
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert answer.endswith(b"got %d" % n)


def test_server_keeps_serving_after_truncated_bodies(server):
    mode = modes(server)[0]
    for i in range(3):
        exchange(server, HEAD_CHUNKED % (mode.encode(), b"again%d" % i) + b"5\r\nhe")
    rid = "after-%s" % server.worker_class
    answer = exchange(server, HEAD_LENGTH % (mode.encode(), rid.encode()) + b"helloworld")
    assert answer.startswith(b"HTTP/1.1 200")
