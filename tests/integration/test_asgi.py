"""The asgi worker (-k asgi) with a plain ASGI 3 app (tests/apps/asgi/hello.py):
HTTP framing, keep-alive, pipelining, HEAD, chunked streaming,
100-continue, errors, lifespan state, WebSocket, signals, max_requests,
a uvicorn gunicorn.conf.py, and a leak check."""
import asyncio
import json
import os
import signal
import socket
import time

import pytest
import requests

from conftest import ROOT

APPS = os.path.join(ROOT, "tests", "apps", "asgi")


def start(server_factory, *args, app="hello:app"):
    return server_factory(["--worker-class", "asgi", "--workers", "1", "--chdir", APPS]
                          + list(args) + [app])


def raw(srv, data, timeout=5.0, until_close=True):
    """Sends raw bytes; returns everything read until the server closes
    (or the timeout)."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
            if not until_close and out.count(b"\r\n\r\n") >= 1:
                break
        return out
    finally:
        s.close()


def read_response(f):
    """Reads one response from a socket file: (status line, headers dict, body)."""
    status = f.readline().decode("latin-1").rstrip("\r\n")
    headers = {}
    while True:
        line = f.readline().decode("latin-1").rstrip("\r\n")
        if not line:
            break
        k, v = line.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    body = b""
    if headers.get("transfer-encoding") == "chunked":
        while True:
            size = int(f.readline().strip(), 16)
            if size == 0:
                f.readline()
                break
            body += f.read(size)
            f.readline()
    elif "content-length" in headers:
        body = f.read(int(headers["content-length"]))
    return status, headers, body


@pytest.fixture(scope="module")
def hello(request):
    from conftest import Server
    srv = Server(["--worker-class", "asgi", "--workers", "1", "--chdir", APPS,
                  "--keep-alive", "5", "hello:app"])
    request.addfinalizer(srv.stop)
    return srv


def test_hello_and_headers(hello):
    r = requests.get(hello.url + "/")
    assert r.status_code == 200
    assert r.text == "Hello, world!"
    assert r.headers["server"] == "gunicorn/asgi"
    assert "date" in r.headers


def test_scope_contents(hello):
    r = requests.get(hello.url + "/scope/a%20b/%E2%82%AC?x=1&y=%20", headers={"X-Test": "v"})
    scope = r.json()
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/scope/a b/\u20ac"
    assert scope["raw_path"] == {"bytes": "/scope/a%20b/%E2%82%AC"}
    assert scope["query_string"] == {"bytes": "x=1&y=%20"}
    assert scope["root_path"] == ""
    assert [{"bytes": "x-test"}, {"bytes": "v"}] in scope["headers"]
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"] == ["127.0.0.1", hello.port]


def test_root_path_setting(server_factory):
    srv = start(server_factory, "--root-path", "/mounted")
    assert requests.get(srv.url + "/scope").json()["root_path"] == "/mounted"


def test_body_echo_content_length_and_chunked(hello):
    data = os.urandom(300000)
    assert requests.post(hello.url + "/echo", data=data).content == data

    def gen():
        for i in range(20):
            yield b"piece-%d;" % i
    r = requests.post(hello.url + "/echo", data=gen())
    assert r.content == b"".join(b"piece-%d;" % i for i in range(20))


def test_keepalive_and_pipelining(hello):
    s = socket.create_connection(("127.0.0.1", hello.port), timeout=5)
    f = s.makefile("rb")
    try:
        for _ in range(3):
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, body = read_response(f)
            assert status == "HTTP/1.1 200 OK" and body == b"Hello, world!"
            assert "connection" not in headers
        # Three pipelined requests in one write, answered in order.
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nonePOST /echo "
                  b"HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\ntwoGET / HTTP/1.1\r\nHost: x"
                  b"\r\nConnection: close\r\n\r\n")
        assert read_response(f)[2] == b"one"
        assert read_response(f)[2] == b"two"
        status, headers, body = read_response(f)
        assert body == b"Hello, world!" and headers["connection"] == "close"
        assert f.read() == b""
    finally:
        f.close()
        s.close()


def test_unread_body_is_skipped_on_keepalive(hello):
    s = socket.create_connection(("127.0.0.1", hello.port), timeout=5)
    f = s.makefile("rb")
    try:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                  b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(f)[2] == b"Hello, world!"
        assert read_response(f)[2] == b"Hello, world!"
    finally:
        f.close()
        s.close()


def test_http10_closes(hello):
    out = raw(hello, b"GET / HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.0 200 OK\r\n")
    assert b"Connection: close\r\n" in out
    assert out.endswith(b"Hello, world!")


def test_head_has_no_body(hello):
    out = raw(hello, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 13\r\n" in out
    assert out.endswith(b"\r\n\r\n")


def test_streaming_is_chunked(hello):
    out = raw(hello, b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, body = out.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding: chunked" in head
    assert body == b"".join(b"7\r\nchunk%d\n\r\n" % i for i in range(5)) + b"0\r\n\r\n"


def test_expect_100_continue(hello):
    s = socket.create_connection(("127.0.0.1", hello.port), timeout=5)
    try:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                  b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
        first = s.recv(100)
        assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"data")
        rest = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        assert rest.startswith(b"HTTP/1.1 200 OK") and rest.endswith(b"data")
    finally:
        s.close()


def test_error_before_start_is_500_and_worker_keeps_serving(hello):
    r = requests.get(hello.url + "/error")
    assert r.status_code == 500
    assert r.text == "Internal Server Error"
    hello.wait_for_log(r"Error in ASGI application[\s\S]*boom before start")
    assert requests.get(hello.url + "/noresponse").status_code == 500
    assert requests.get(hello.url + "/").status_code == 200


def test_error_after_start_closes(hello):
    out = raw(hello, b"GET /error-after HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK")
    assert b"partial" in out
    assert not out.endswith(b"0\r\n\r\n")  # the body was not completed: closed instead
    assert requests.get(hello.url + "/").status_code == 200


def test_bad_request_is_answered(hello):
    out = raw(hello, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close" in out


def test_lifespan_state(hello):
    assert requests.get(hello.url + "/state").json() == {"started": "yes"}


def test_lifespan_off(server_factory):
    srv = start(server_factory, "--asgi-lifespan", "off")
    assert requests.get(srv.url + "/state").json() == {}


def test_lifespan_startup_failure_stops_server(tmp_path):
    from conftest import run_cmd
    (tmp_path / "failapp.py").write_text(
        "async def app(scope, receive, send):\n"
        "    if scope['type'] == 'lifespan':\n"
        "        await receive()\n"
        "        await send({'type': 'lifespan.startup.failed', 'message': 'no database'})\n")
    r = run_cmd(["-k", "asgi", "-b", "127.0.0.1:0", "--chdir", str(tmp_path), "failapp:app"],
                timeout=60)
    assert r.returncode != 0
    assert "ASGI lifespan startup failed: Lifespan startup failed: no database" in r.stderr


def ws_run(url, coro_fn):
    import websockets

    async def main():
        async with websockets.connect(url, max_size=None) as ws:
            return await coro_fn(ws)
    return asyncio.run(main())


def test_websocket_echo_text_binary_fragments_ping(hello):
    import websockets

    async def talk(ws):
        out = []
        await ws.send("hello")
        out.append(await ws.recv())
        await ws.send(b"\x00\xff" * 40000)
        out.append(await ws.recv())
        await ws.send(["frag", "mented"])
        out.append(await ws.recv())
        pong = await ws.ping(b"p")
        await asyncio.wait_for(pong, 5)
        await ws.send("close")
        try:
            await ws.recv()
        except websockets.ConnectionClosed as exc:
            out.append((exc.rcvd.code, exc.rcvd.reason))
        return out
    out = ws_run(hello.url.replace("http", "ws") + "/ws", talk)
    assert out == ["hello", b"\x00\xff" * 40000, "fragmented", (4001, "bye")]


def test_websocket_bad_version_and_key(hello):
    out = raw(hello, b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade"
                     b"\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 8\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    assert b"Sec-WebSocket-Version: 13\r\n" in out
    out = raw(hello, b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade"
                     b"\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_websocket_handshake_accept_key(hello):
    out = raw(hello, b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade"
                     b"\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n", timeout=1.0, until_close=False)
    # RFC 6455 section 1.3's worked example.
    assert out.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in out


def test_websocket_max_message_size(server_factory):
    import websockets
    srv = start(server_factory, "--websocket-max-message-size", "1000")

    async def talk(ws):
        await ws.send("x" * 500)
        assert await ws.recv() == "x" * 500
        await ws.send("x" * 2000)
        try:
            await ws.recv()
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code
    assert ws_run(srv.url.replace("http", "ws") + "/ws", talk) == 1009


def test_max_requests_restarts_worker(server_factory):
    srv = start(server_factory, "--max-requests", "3")
    for _ in range(7):
        assert requests.get(srv.url + "/").status_code == 200
    srv.wait_for_log(r"Autorestarting worker after current request")


def test_graceful_term_finishes_inflight(server_factory, tmp_path):
    (tmp_path / "slowapp.py").write_text(
        "import asyncio\n"
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    await asyncio.sleep(1.0)\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'slow done'})\n")
    srv = server_factory(["-k", "asgi", "--chdir", str(tmp_path), "--graceful-timeout", "10",
                          "slowapp:app"])
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)  # let the request reach the app before the signal
    os.kill(srv.proc.pid, signal.SIGTERM)
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"9\r\nslow done\r\n0\r\n\r\n")
    assert b"Connection: close" in out
    srv.proc.wait(15)


def test_uvicorn_worker_config_file(server_factory):
    srv = server_factory(["-c", os.path.join(APPS, "uvicorn_conf.py"), "--chdir", APPS,
                          "hello:app"])
    assert requests.get(srv.url + "/").text == "Hello, world!"
    srv.wait_for_log(r"uvicorn\.workers\.UvicornWorker is served by cgunicorn's native asgi")


def test_access_log_line(server_factory, tmp_path):
    log = tmp_path / "access.log"
    srv = start(server_factory, "--access-logfile", str(log))
    requests.get(srv.url + "/scope?q=1", headers={"User-Agent": "cg-test"})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (log.exists() and log.read_text()):
        time.sleep(0.05)
    line = log.read_text().strip()
    assert '"GET /scope?q=1 HTTP/1.1" 200' in line
    assert '"cg-test"' in line and line.startswith("127.0.0.1 - - [")


def test_no_leak_over_many_requests(server_factory, tmp_path):
    (tmp_path / "leakapp.py").write_text(
        "import sys\n"
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    body = b''\n"
        "    if scope['path'] == '/blocks':\n"
        "        body = str(sys.getallocatedblocks()).encode()\n"
        "    else:\n"
        "        while True:\n"
        "            m = await receive()\n"
        "            if not m.get('more_body'):\n"
        "                break\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': body})\n")
    srv = server_factory(["-k", "asgi", "--chdir", str(tmp_path), "leakapp:app"])
    sess = requests.Session()

    def burst(n):
        for i in range(n):
            sess.post(srv.url + "/x?i=%d" % i, data=b"y" * (i % 300))
        return int(sess.get(srv.url + "/blocks").text)
    burst(500)  # warm up caches
    first = burst(1500)
    second = burst(1500)
    third = burst(1500)
    # Allocated blocks level off: growth per 1500 requests stays tiny (a
    # leak of one object per request would add >= 1500 each time).
    assert third - first < 400, (first, second, third)


def test_early_hints_103(hello):
    """http.response.informational: the 1xx status line and the app's
    headers only, before the final response (as upstream's asgi worker)."""
    out = raw(hello, b"GET /early-hints HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    interim, _, rest = out.partition(b"\r\n\r\n")
    assert interim == b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload"
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")
    assert rest.endswith(b"\r\n\r\nok")


def test_early_hints_not_sent_to_http10(hello):
    out = raw(hello, b"GET /early-hints HTTP/1.0\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.0 200 OK\r\n")
    assert b"103" not in out.split(b"\r\n", 1)[0]


def test_early_hints_bad_header_refused(hello):
    out = raw(hello, b"GET /early-hints?bad HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"x-injected" not in out
