"""HTTP/2 (issue 18) under gthread and asgi: side by side with upstream
gunicorn 27 (its gthread and asgi workers) over TLS (ALPN h2) and h2c
prior knowledge, many streams on one
connection, a slow reader of a big upload with the server's memory
bounded, HTTP/1.1 on an h2,h1 port, the start-up refusals, and the known
attacks, each ending the attacking connection while another client is
served. Clients: httpx (h2), nghttp and h2load (nghttp2-client), and raw
frames built with the h2 package's hyperframe."""
import importlib.util
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse

import pytest

from conftest import GUNICORN, ROOT, Server, run_cmd
from tls_support import Certs

httpx = pytest.importorskip("httpx")
pytest.importorskip("h2")
from hyperframe.frame import (ContinuationFrame, HeadersFrame, PingFrame,  # noqa: E402
                              RstStreamFrame, SettingsFrame)
import hpack  # noqa: E402

APPS = os.path.join(ROOT, "tests", "apps", "http")
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
BASE = ["--workers", "1", "--http-protocols", "h2,h1"]
# worker class -> its arguments and the app (the same routes as WSGI and ASGI)
CLASSES = {
    "gthread": (["--worker-class", "gthread", "--threads", "4"], "h2app:app"),
    "asgi": (["--worker-class", "asgi"], "h2asgi:app"),
}
H2C = ["--http2-cleartext", "prior-knowledge", "--forwarded-allow-ips", "127.0.0.1"]


@pytest.fixture(scope="module")
def certs():
    d = tempfile.TemporaryDirectory(prefix="cgh2-")
    yield Certs(d.name)
    d.cleanup()


def start(binary, args, env=None, cls="gthread"):
    cls_args, app = CLASSES[cls]
    return Server(cls_args + BASE + list(args) + [app], cwd=APPS, binary=binary, env=env)


@pytest.fixture(scope="module", params=sorted(CLASSES))
def tls_pair(request, certs):
    pair = (start(None, certs.server_args(), cls=request.param),
            start(GUNICORN, certs.server_args(), cls=request.param))
    yield pair
    for s in pair:
        s.stop()


@pytest.fixture(scope="module", params=sorted(CLASSES))
def h2c_pair(request):
    pair = (start(None, H2C, cls=request.param), start(GUNICORN, H2C, cls=request.param))
    yield pair
    for s in pair:
        s.stop()


def tls_client(certs):
    return httpx.Client(http2=True, http1=False, verify=certs.client_ctx(), timeout=20)


def h2c_client():
    return httpx.Client(http2=True, http1=False, timeout=20)


REQUESTS = [
    ("GET", "/", {}, None),
    ("GET", "/a/b%20c?x=1&y=2&x=3", {}, None),
    ("GET", "/cookies", {"cookie": "a=1; b=2"}, None),
    ("GET", "/hdrs", {"x-custom": "v1", "accept-language": "en", "user-agent": "t/1"}, None),
    ("POST", "/post", {"content-type": "application/x-www-form-urlencoded"}, b"a=1&b=2"),
    ("POST", "/empty", {}, b""),
    ("PUT", "/put", {"content-type": "application/octet-stream"}, bytes(range(256)) * 300),
    ("DELETE", "/del", {}, None),
    ("PATCH", "/patch", {}, b"{}"),
    ("OPTIONS", "/opt", {}, None),
    ("HEAD", "/", {}, None),
    ("GET", "/status/404", {}, None),
    ("GET", "/status/204", {}, None),
    ("GET", "/status/500", {}, None),
    ("GET", "/status/302", {}, None),
    ("GET", "/stream", {}, None),
    ("GET", "/big", {}, None),
    ("GET", "/file", {}, None),
    ("GET", "/headers", {}, None),
    ("GET", "/xff", {"x-forwarded-for": "10.1.2.3", "x-forwarded-proto": "https"}, None),
    ("GET", "/under", {"x_under": "dropped"}, None),
    ("POST", "/big-post", {}, b"z" * 300000),
]

SKIP_HEADERS = {"date", "content-length"}


def normalize(resp, port):
    headers = sorted((k.lower(), v) for k, v in resp.headers.multi_items()
                     if k.lower() not in SKIP_HEADERS)
    body = resp.content
    if resp.headers.get("content-type") == "application/json" and body:
        env = json.loads(body)
        for k in ("SERVER_PORT", "HTTP_HOST", "SERVER_NAME"):
            env.pop(k, None)
        if "http_version" in env:
            # an ASGI scope: the host names the port; cgunicorn puts the
            # host (from :authority) before the joined cookie, upstream
            # after it, so the order is not compared
            env["headers"] = sorted(h for h in env["headers"] if h[0] != "host")
            # upstream's HTTP/2 scope leaves path percent-encoded (its
            # HTTP/1 one and the ASGI spec decode it); cgunicorn decodes
            env["path"] = urllib.parse.unquote(env["path"])
        body = env
    return resp.status_code, resp.http_version, headers, body


def compare(cand, ref, client_factory, scheme):
    with client_factory() as cc, client_factory() as rc:
        for method, path, headers, body in REQUESTS:
            a = cc.request(method, "%s://127.0.0.1:%d%s" % (scheme, cand.port, path),
                           headers=headers, content=body)
            b = rc.request(method, "%s://127.0.0.1:%d%s" % (scheme, ref.port, path),
                           headers=headers, content=body)
            na, nb = normalize(a, cand.port), normalize(b, ref.port)
            assert na[1] == "HTTP/2", (method, path, na[1])
            assert na == nb, (method, path)


def test_app_error_is_a_500(tls_pair, certs):
    # upstream's HTTP/2 500 is a text/plain page with the exception's text;
    # cgunicorn answers gunicorn's HTML page there, as over HTTP/1
    with tls_client(certs) as c:
        for srv in tls_pair:
            assert c.get("https://127.0.0.1:%d/raise" % srv.port).status_code == 500


def test_side_by_side_over_tls_alpn(tls_pair, certs):
    compare(tls_pair[0], tls_pair[1], lambda: tls_client(certs), "https")


def test_side_by_side_h2c_prior_knowledge(h2c_pair):
    compare(h2c_pair[0], h2c_pair[1], h2c_client, "http")


def test_http11_client_on_h2_h1_port(tls_pair, certs):
    for srv in tls_pair:
        with httpx.Client(http2=False, verify=certs.client_ctx(), timeout=20) as c:
            r = c.get("https://127.0.0.1:%d/" % srv.port)
        assert r.status_code == 200 and r.http_version == "HTTP/1.1"
        env = r.json()
        assert env.get("SERVER_PROTOCOL", env.get("http_version")) in ("HTTP/1.1", "1.1")


@pytest.mark.parametrize("cls", sorted(CLASSES))
def test_h1_client_on_cleartext_h2_port_from_untrusted_peer(cls):
    srv = start(None, ["--http2-cleartext", "prior-knowledge", "--forwarded-allow-ips",
                       "10.9.9.9"], cls=cls)
    try:
        r = httpx.get("http://127.0.0.1:%d/" % srv.port, timeout=20)
        env = r.json()
        assert r.status_code == 200
        assert env.get("SERVER_PROTOCOL", env.get("http_version")) in ("HTTP/1.1", "1.1")
    finally:
        srv.stop()


def test_trusted_h1_peer_on_prior_knowledge_port_gets_400(h2c_pair):
    for srv in h2c_pair:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = s.recv(65536)
        s.close()
        assert data.startswith(b"HTTP/1.1 400"), (srv, data[:100])


@pytest.mark.skipif(shutil.which("h2load") is None, reason="needs nghttp2-client")
def test_100_concurrent_streams_on_one_connection(tls_pair):
    out = subprocess.run(["h2load", "-n", "100", "-c", "1", "-m", "100",
                          "https://127.0.0.1:%d/" % tls_pair[0].port], capture_output=True,
                         text=True, timeout=60)
    text = out.stdout
    assert "100 succeeded" in text and "100 2xx" in text, text


@pytest.mark.skipif(shutil.which("h2load") is None, reason="needs nghttp2-client")
def test_one_connection_runs_at_most_half_the_threads():
    """gthread: a connection's streams run at most threads/2 at a time (the
    fairness bound), also when a thread that finishes one of them goes on
    to the next one waiting; another connection is served meanwhile."""
    srv = start(None, H2C + ["--threads", "4"])
    try:
        h2 = subprocess.Popen(["h2load", "-n", "200", "-c", "1", "-m", "100",
                               "http://127.0.0.1:%d/inflight" % srv.port],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert served(srv)
        out, _ = h2.communicate(timeout=60)
        assert "200 succeeded" in out and "200 2xx" in out, out
        with h2c_client() as c:
            peak = c.get("http://127.0.0.1:%d/inflight/peak" % srv.port).text
        assert 1 <= int(peak) <= 2, peak
    finally:
        srv.stop()


@pytest.mark.skipif(shutil.which("nghttp") is None, reason="needs nghttp2-client")
def test_nghttp_many_streams_h2c(h2c_pair):
    urls = ["http://127.0.0.1:%d/s%d" % (h2c_pair[0].port, i) for i in range(100)]
    p = subprocess.run(["nghttp", "-n", "-s", "-m", "1"] + urls, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count(" 200 ") >= 100 or p.stdout.count("200") >= 100, p.stdout[-2000:]


@pytest.mark.parametrize("cls", sorted(CLASSES))
def test_50mb_upload_read_slowly_keeps_rss_bounded(cls):
    srv = start(None, H2C, cls=cls)
    try:
        size = 50 << 20
        chunk = b"u" * (1 << 20)

        def gen():
            for _ in range(size // len(chunk)):
                yield chunk
        with h2c_client() as c:
            base = int(c.get("http://127.0.0.1:%d/rss" % srv.port).text)
            r = c.post("http://127.0.0.1:%d/slowread" % srv.port, content=gen(),
                       headers={"content-length": str(size)}, timeout=120)
        res = r.json()
        assert res["total"] == size
        # the body is never all buffered: far less than 50 MB more than before
        assert res["peak_rss_kb"] - base < 20 * 1024, (base, res)
    finally:
        srv.stop()


@pytest.mark.parametrize("cls,extra,needle", [
    ("sync", [], "sync worker does not serve HTTP/2"),
    pytest.param("gevent", [], "gevent worker does not serve HTTP/2 in cgunicorn yet",
                 marks=pytest.mark.skipif(importlib.util.find_spec("gevent") is None,
                                          reason="without gevent, that is refused first")),
])
def test_refused_at_startup(cls, extra, needle):
    p = run_cmd(["--worker-class", cls, "--http-protocols", "h2,h1"] + extra + ["h2app:app"],
                cwd=APPS)
    assert p.returncode != 0
    assert needle in p.stderr + p.stdout, p.stderr


@pytest.mark.parametrize("cls", sorted(CLASSES))
def test_max_requests_goaway_then_served_by_the_next_worker(cls):
    srv = start(None, H2C + ["--max-requests", "5"], cls=cls)
    try:
        codes = []
        c = h2c_client()
        for i in range(12):
            url = "http://127.0.0.1:%d/n%d" % (srv.port, i)
            try:
                codes.append(c.get(url).status_code)
            except httpx.RemoteProtocolError:
                # a stream above the GOAWAY's last id was refused: a client
                # retries it on a new connection (RFC 9113 6.8)
                c.close()
                c = h2c_client()
                codes.append(c.get(url).status_code)
        c.close()
        assert codes == [200] * 12
        srv.wait_for_log(r"Autorestarting worker after current request")
    finally:
        srv.stop()


@pytest.mark.skipif(shutil.which("nghttp") is None, reason="needs nghttp2-client")
@pytest.mark.parametrize("cls", sorted(CLASSES))
def test_term_lets_the_stream_in_flight_finish(cls):
    import signal as _signal
    srv = start(None, H2C, cls=cls)
    try:
        out = {}

        def run():
            # nghttp: httpx fails its streams on any GOAWAY, even graceful
            p = subprocess.run(["nghttp", "-s", "http://127.0.0.1:%d/sleep" % srv.port],
                               capture_output=True, text=True, timeout=30)
            out["r"] = (p.returncode, p.stdout.startswith("slept"))
        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.3)
        srv.signal(_signal.SIGTERM)
        t.join(30)
        assert out["r"] == (0, True), out
    finally:
        srv.stop()


# ---- attacks: the attacker's connection ends, another client is served ----

def raw_h2(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.sendall(PREFACE + SettingsFrame(0).serialize())
    return s


def headers_block(path="/", extra=()):
    enc = hpack.Encoder()
    return enc.encode([(":method", "GET"), (":path", path), (":scheme", "http"),
                       (":authority", "x")] + list(extra))


def wait_closed(s, timeout=20):
    """Reads until EOF or reset; returns all bytes (a GOAWAY among them)."""
    s.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            b = s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return data, True
        except socket.timeout:
            return data, False
        if not b:
            return data, True
        data += b
    return data, False


def goaway_in(data):
    # frame type 0x7 anywhere on a frame boundary
    i = 0
    while i + 9 <= len(data):
        ln = int.from_bytes(data[i:i + 3], "big")
        if data[i + 3] == 7:
            return True
        i += 9 + ln
    return False


def served(srv):
    with h2c_client() as c:
        r = c.get("http://127.0.0.1:%d/ok" % srv.port)
    return r.status_code == 200 and r.http_version == "HTTP/2"


@pytest.fixture(params=sorted(CLASSES))
def h2c_server(request):
    srv = start(None, H2C, cls=request.param)
    yield srv
    srv.stop()


def attack_and_check(srv, send):
    s = raw_h2(srv.port)
    err = []

    def run():
        try:
            send(s)
        except OSError as e:
            err.append(e)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert served(srv)
    t.join(30)
    data, closed = wait_closed(s)
    s.close()
    assert closed or goaway_in(data) or err
    assert goaway_in(data) or closed
    assert served(srv)


def test_rapid_reset(h2c_server):
    def send(s):
        out = b""
        for i in range(1, 4000, 2):
            out += HeadersFrame(i, headers_block(), flags=["END_HEADERS", "END_STREAM"]
                                ).serialize()
            out += RstStreamFrame(i, error_code=8).serialize()
            if len(out) > 32768:
                s.sendall(out)
                out = b""
        s.sendall(out)
    attack_and_check(h2c_server, send)


def test_continuation_flood(h2c_server):
    def send(s):
        blk = headers_block()
        s.sendall(HeadersFrame(1, blk).serialize())
        for _ in range(5000):
            s.sendall(ContinuationFrame(1, b"\x40\x01a\x01b").serialize())
    attack_and_check(h2c_server, send)


def test_hpack_bomb(h2c_server):
    def send(s):
        big = [("x-bomb-%d" % i, "v" * 4000) for i in range(40)]  # > 65536 decoded
        s.sendall(HeadersFrame(1, headers_block(extra=big),
                               flags=["END_HEADERS", "END_STREAM"]).serialize())
    attack_and_check(h2c_server, send)


def test_settings_flood(h2c_server):
    def send(s):
        f = SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 65535}).serialize()
        s.settimeout(10)
        for _ in range(200):
            s.sendall(f * 500)
    attack_and_check(h2c_server, send)


def test_ping_flood(h2c_server):
    def send(s):
        f = PingFrame(0, opaque_data=b"12345678").serialize()
        s.settimeout(10)
        for _ in range(200):
            s.sendall(f * 500)
    attack_and_check(h2c_server, send)


def test_too_many_streams(h2c_server):
    def send(s):
        out = b""
        for i in range(1, 2 * 300, 2):  # 300 open streams > 100 allowed; bodies never sent
            out += HeadersFrame(i, headers_block("/slowread"), flags=["END_HEADERS"]
                                ).serialize()
        s.sendall(out)
    s = raw_h2(h2c_server.port)
    send(s)
    assert served(h2c_server)
    data, closed = wait_closed(s, timeout=10)
    s.close()
    # the extra streams are refused (RST_STREAM) or the connection ends
    assert closed or b"\x00\x00\x04\x03" in data or goaway_in(data)
    assert served(h2c_server)


def frames(data):
    i = 0
    while i + 9 <= len(data):
        ln = int.from_bytes(data[i:i + 3], "big")
        yield data[i + 3], int.from_bytes(data[i + 5:i + 9], "big") & 0x7fffffff
        i += 9 + ln


def test_sized_response_ends_the_stream_with_its_body():
    """gthread: once the content-length is written, the last DATA frame
    carries END_STREAM, without waiting for the app's close() (no empty
    DATA frame after it)."""
    srv = start(None, H2C)
    try:
        s = raw_h2(srv.port)
        s.sendall(HeadersFrame(1, headers_block("/slowclose"),
                               flags=["END_HEADERS", "END_STREAM"]).serialize())
        s.settimeout(10)
        data = b""
        while True:
            got = [(t, sid, fl, ln) for t, sid, fl, ln in frames_flags(data) if sid == 1]
            if any(t == 0 and fl & 1 for t, _, fl, _ in got):
                break
            b = s.recv(65536)
            assert b, data
            data += b
        s.close()
        body = [(fl, ln) for t, _, fl, ln in got if t == 0]
        assert body == [(1, 5)], got
    finally:
        srv.stop()


def frames_flags(data):
    """(type, stream, flags, length) of each whole frame in data."""
    i = 0
    while i + 9 <= len(data):
        ln = int.from_bytes(data[i:i + 3], "big")
        if i + 9 + ln > len(data):
            break
        yield data[i + 3], int.from_bytes(data[i + 5:i + 9], "big") & 0x7fffffff, data[i + 4], ln
        i += 9 + ln


@pytest.mark.parametrize("cls", sorted(CLASSES))
def test_zero_window_stall_is_reset_after_timeout(cls):
    srv = start(None, H2C + ["--timeout", "3"], cls=cls)
    try:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
        s.sendall(PREFACE + SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0})
                  .serialize() + HeadersFrame(1, headers_block("/big"),
                                              flags=["END_HEADERS", "END_STREAM"]).serialize())
        assert served(srv)  # the stalled stream holds no one else up
        data = b""
        deadline = time.monotonic() + 20
        reset = False
        while time.monotonic() < deadline and not reset:
            try:
                b = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not b:
                break
            data += b
            reset = any(t == 3 and sid == 1 for t, sid in frames(data))
        s.close()
        assert reset or goaway_in(data), data[-200:]
        assert served(srv)
    finally:
        srv.stop()


@pytest.mark.parametrize("cls", sorted(CLASSES))
def test_term_sends_goaway_to_an_open_connection(cls):
    import signal as _signal
    srv = start(None, H2C, cls=cls)
    try:
        s = raw_h2(srv.port)
        s.sendall(HeadersFrame(1, headers_block("/ok"), flags=["END_HEADERS", "END_STREAM"]
                               ).serialize())
        s.settimeout(20)
        data = b""
        while not any(t == 0 and sid == 1 for t, sid in frames(data)):
            b = s.recv(65536)
            assert b, data
            data += b
        srv.signal(_signal.SIGTERM)
        rest, _ = wait_closed(s)
        s.close()
        assert goaway_in(rest), rest
    finally:
        srv.stop()


@pytest.mark.parametrize("cls", sorted(CLASSES))
def test_idle_connection_gets_goaway_after_keepalive(cls):
    srv = start(None, H2C + ["--keep-alive", "1"], cls=cls)
    try:
        s = raw_h2(srv.port)
        s.sendall(HeadersFrame(1, headers_block("/ok"), flags=["END_HEADERS", "END_STREAM"]
                               ).serialize())
        data, closed = wait_closed(s)
        s.close()
        assert any(t == 0 and sid == 1 for t, sid in frames(data)), data[-200:]
        assert goaway_in(data) and closed, data[-200:]
    finally:
        srv.stop()


def test_asgi_scope_of_a_stream():
    # cookie crumbs in separate fields (RFC 9113 8.2.3) come joined;
    # :authority is the host; http_version "2", scheme http on h2c
    srv = start(None, H2C, cls="asgi")
    try:
        s = raw_h2(srv.port)
        s.sendall(HeadersFrame(1, headers_block("/scope?q=1", extra=[
            ("cookie", "a=1"), ("x-mixed", "V"), ("cookie", "b=2")]),
            flags=["END_HEADERS", "END_STREAM"]).serialize())
        data, _ = wait_closed(s, timeout=5)
        s.close()
        body, i = b"", 0
        while i + 9 <= len(data):
            ln = int.from_bytes(data[i:i + 3], "big")
            sid = int.from_bytes(data[i + 5:i + 9], "big") & 0x7fffffff
            if data[i + 3] == 0 and sid == 1:
                body += data[i + 9:i + 9 + ln]
            i += 9 + ln
        scope = json.loads(body)
        assert scope["http_version"] == "2" and scope["scheme"] == "http"
        assert scope["path"] == "/scope" and scope["query_string"] == "q=1"
        assert ["host", "x"] in scope["headers"]
        assert ["cookie", "a=1; b=2"] in scope["headers"]
        assert ["x-mixed", "V"] in scope["headers"]
    finally:
        srv.stop()


def h2_events_until_closed(s, conn, timeout=20):
    """Feeds what the server sends to the h2 client `conn` until EOF;
    returns its events."""
    s.settimeout(timeout)
    events = []
    while True:
        try:
            b = s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            break
        if not b:
            break
        events += conn.receive_data(b)
        try:
            s.sendall(conn.data_to_send())
        except OSError:
            pass
    return events


@pytest.mark.parametrize("in_flight", [None, "/sleep", "/longsleep"],
                         ids=["idle", "in_flight", "cut_at_the_grace"])
@pytest.mark.parametrize("signame", ["SIGQUIT", "SIGINT"])
@pytest.mark.parametrize("cls", sorted(CLASSES))
def test_quit_sends_goaway_before_closing(cls, in_flight, signame):
    # QUIT (and INT) stop quickly, yet an HTTP/2 client still learns it
    # through a GOAWAY before the connection closes, not through a bare FIN
    import signal as _signal
    import h2.config
    import h2.connection
    import h2.events
    srv = start(None, H2C, cls=cls)
    try:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        hdrs = [(":method", "GET"), (":scheme", "http"), (":authority", "x")]
        conn.send_headers(1, hdrs + [(":path", "/ok")], end_stream=True)
        s.sendall(conn.data_to_send())
        got = []
        while not any(isinstance(e, h2.events.StreamEnded) for e in got):
            b = s.recv(65536)
            assert b, got
            got += conn.receive_data(b)
            s.sendall(conn.data_to_send())
        if in_flight:
            conn.send_headers(3, hdrs + [(":path", in_flight)], end_stream=True)
            s.sendall(conn.data_to_send())
            time.sleep(0.3)
        srv.signal(getattr(_signal, signame))
        events = h2_events_until_closed(s, conn)
        s.close()
        ends = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        assert ends, events
        assert ends[0].error_code == 0, ends  # NO_ERROR
    finally:
        srv.stop()
