"""request_timeout (--request-timeout, a cgunicorn extension): a request
that runs longer gets cgunicorn.RequestTimeout raised in its thread (WSGI,
at the next bytecode boundary; `except Exception` does not catch it) or its
task cancelled (ASGI); its traceback is logged once and it is answered 504
if its response had not started (else the connection is closed). The
worker goes on serving; 0 (the default) turns it off."""
import os
import socket

import pytest
import requests

from conftest import ROOT, Server

APPS = os.path.join(ROOT, "tests", "apps", "http")


@pytest.fixture(scope="module", params=["sync", "gthread", "asgi"])
def server(request):
    app = "spinapp:asgi" if request.param == "asgi" else "spinapp:app"
    args = ["--chdir", APPS, "-k", request.param, "--request-timeout", "1", app]
    if request.param == "gthread":
        args[-1:-1] = ["--threads", "2"]
    srv = Server(args)
    srv.worker_class = request.param
    request.addfinalizer(srv.stop)
    return srv


def test_long_request_gets_504_and_one_traceback(server):
    r = requests.get(server.url + "/spin?s=30", timeout=20)
    assert r.status_code == 504, r.text
    assert requests.get(server.url + "/spin?s=0", timeout=10).text == "done /spin"
    m = server.wait_for_log(r"Request timed out after 1 s \(request_timeout\): GET /spin\?s=30")
    log = server.log()
    assert log.count("GET /spin?s=30") == 1, log  # once
    assert "_spin" in log[m.start():] or "sleep" in log[m.start():], log[m.start():]


def test_except_exception_does_not_swallow_it(server):
    r = requests.get(server.url + "/catch?s=30", timeout=20)
    assert r.status_code == 504, r.text


def test_started_response_is_cut(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
        s.sendall(b"GET /stream?s=30 HTTP/1.1\r\nHost: t\r\n\r\n")
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    assert out.startswith(b"HTTP/1.1 200 ") and b"first" in out and b"last" not in out, out
    assert b"0\r\n\r\n" not in out  # not ended as if complete


def test_off_by_default():
    srv = Server(["--chdir", APPS, "spinapp:app"])
    try:
        assert requests.get(srv.url + "/spin?s=1.5", timeout=20).text == "done /spin"
        assert "request_timeout" not in srv.log()
    finally:
        srv.stop()
