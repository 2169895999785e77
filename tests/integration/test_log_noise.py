"""Ordinary traffic does not flood the error log: a HEAD answered by an app
that returns a body (upstream drops the body silently) logs nothing above
debug, and a request with an unsupported transfer coding gets its 501 and
upstream's invalid-request warning (workers/base.py handle_error), never an
ERROR, in every worker class: the protocol-error log line lives once
(server/cg_conn.c)."""
import os
import sys

import pytest

from conftest import ROOT, Server

sys.path.insert(0, os.path.join(ROOT, "conformance"))
from cgtest_support import exchange  # noqa: E402  (sends, half-closes, reads to the close)

APPS = os.path.join(ROOT, "tests", "apps", "http")


@pytest.fixture(scope="module", params=["sync", "gthread", "asgi"])
def server(request):
    app = "bodyapp:asgi" if request.param == "asgi" else "bodyapp:app"
    srv = Server(["--chdir", APPS, "-k", request.param, app])
    srv.worker_class = request.param
    request.addfinalizer(srv.stop)
    return srv


def test_head_with_app_body_logs_no_warning(server):
    for _ in range(3):
        out = exchange(server, b"HEAD / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200"), out
        assert out.endswith(b"\r\n\r\n"), out  # no body on the wire
    out = exchange(server, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert out.endswith(b"hello")
    log = server.log()
    assert "no-body response" not in log
    assert "[WARNING]" not in log and "[ERROR]" not in log, log


def test_unsupported_transfer_coding_is_an_invalid_request_warning(server):
    out = exchange(server, b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xyz\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 501"), out
    # gunicorn's workers log it as any invalid request (handle_error); the
    # asgi worker shares that one line.
    server.wait_for_log(
        r"\[WARNING\] Invalid request from ip=127\.0\.0\.1: Unsupported transfer coding: 'xyz'")
    assert "[ERROR]" not in server.log()
