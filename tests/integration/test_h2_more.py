"""HTTP/2, the parts of issue 18 beyond framing: the HTTP/1.1 "Upgrade:
h2c" switch (RFC 7540 3.2) with and without a body, refused to untrusted
peers and for malformed attempts, under gthread and asgi (each compared
with upstream's worker of the same class); under gthread, request trailers in
the post_request hook's req.trailers; a trusted proxy's :scheme as
wsgi.url_scheme; environ["gunicorn.socket"] answering getpeercert(),
cipher() and version() on TLS streams. Each compared with upstream
gunicorn 27 where it serves the same thing. Clients speak raw HTTP/1.1
and HTTP/2 through the h2 package, so every byte of the upgrade is ours."""
import base64
import json
import os
import socket
import ssl
import tempfile

import pytest

from conftest import GUNICORN, ROOT, Server
from tls_support import Certs

h2conn = pytest.importorskip("h2.connection")
import h2.config  # noqa: E402
import h2.events  # noqa: E402

APPS = os.path.join(ROOT, "tests", "apps", "http")
BASE = ["--workers", "1", "--http-protocols", "h2,h1", "-c", "h2more_conf.py"]
# worker class -> its arguments and the app: h2more's WSGI environ, or
# h2asgi's ASGI scope, as JSON
CLASSES = {
    "gthread": (["--worker-class", "gthread", "--threads", "4"], "h2more:app"),
    "asgi": (["--worker-class", "asgi"], "h2asgi:app"),
}
TRUSTED = ["--forwarded-allow-ips", "127.0.0.1"]
UNTRUSTED = ["--forwarded-allow-ips", "10.9.9.9"]
ENV_SKIP = ("SERVER_PORT", "HTTP_HOST", "SERVER_NAME")


def start(binary, args, env=None, cls="gthread"):
    cls_args, app = CLASSES[cls]
    return Server(cls_args + BASE + list(args) + [app], cwd=APPS, binary=binary, env=env)


@pytest.fixture(scope="module", params=sorted(CLASSES))
def upgrade_pair(request):
    args = ["--http2-cleartext", "upgrade"] + TRUSTED
    pair = (start(None, args, cls=request.param), start(GUNICORN, args, cls=request.param))
    yield pair
    for s in pair:
        s.stop()


# ---- what the app saw, from a WSGI environ or an ASGI scope ---------------

def protocol(env):
    if "http_version" in env:
        return "HTTP/" + {"2": "2.0"}.get(env["http_version"], env["http_version"])
    assert env["SERVER_PROTOCOL"] != "HTTP/2.0" or env["HTTP_VERSION"] == "2", env
    return env["SERVER_PROTOCOL"]


def header(env, name):
    if "headers" in env:
        vals = [v for k, v in env["headers"] if k == name.lower()]
        return vals[-1] if vals else None
    key = name.upper().replace("-", "_")
    return env.get(key if key in ("CONTENT_LENGTH", "CONTENT_TYPE") else "HTTP_" + key)


def path_of(env):
    return env.get("path", env.get("PATH_INFO"))


def method_of(env):
    return env.get("method", env.get("REQUEST_METHOD"))


# ---- a small HTTP/2 client over a socket, on the h2 package ---------------

def new_conn():
    return h2conn.H2Connection(h2.config.H2Configuration(client_side=True,
                                                         header_encoding="latin-1"))


def read_stream(sock, conn, sid, first=b""):
    """Runs the connection until stream `sid` ends; returns (status, headers
    without date, body) or ('reset', error) for a reset stream or GOAWAY."""
    status, headers, body = None, [], b""
    data = first
    while True:
        for e in conn.receive_data(data) if data else ():
            if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid:
                headers = [(k, v) for k, v in e.headers if k != "date"]
                status = dict(e.headers)[":status"]
            elif isinstance(e, h2.events.DataReceived) and e.stream_id == sid:
                body += e.data
                conn.acknowledge_received_data(e.flow_controlled_length, sid)
            elif isinstance(e, h2.events.StreamEnded) and e.stream_id == sid:
                sock.sendall(conn.data_to_send())
                return status, sorted(headers), body
            elif isinstance(e, h2.events.StreamReset) and e.stream_id == sid:
                return "reset", e.error_code
            elif isinstance(e, h2.events.ConnectionTerminated):
                return "reset", e.error_code
        sock.sendall(conn.data_to_send())
        data = sock.recv(65536)
        if not data:
            return "closed", None


def norm(result):
    """Status, headers and body with the per-server parts of the environ dropped."""
    status, headers, body = result
    try:
        env = json.loads(body)
    except ValueError:
        return status, headers, body
    for k in ENV_SKIP:
        env.pop(k, None)
    return status, headers, env


def upgrade(port, path="/", body=b"", headers=(), settings=None, pipelined=False,
            method=None):
    """Sends an HTTP/1.1 request asking for h2c. Returns ('h2', response of
    stream 1, response of a second stream on the same connection) after a
    101, or ('h1', status line, raw HTTP/1 response) when not upgraded."""
    conn = new_conn()
    offer = conn.initiate_upgrade_connection().decode()  # also queues our preface
    preface = conn.data_to_send()
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    method = method or ("POST" if body else "GET")
    head = "%s %s HTTP/1.1\r\nHost: localhost\r\n" % (method, path)
    if not any(k.lower() == "connection" for k, _ in headers):
        head += "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    if settings is None:
        head += "HTTP2-Settings: %s\r\n" % offer
    for v in settings or ():
        head += "HTTP2-Settings: %s\r\n" % v
    for k, v in headers:
        head += "%s: %s\r\n" % (k, v)
    if body and not any(k.lower() == "transfer-encoding" for k, _ in headers):
        head += "Content-Length: %d\r\n" % len(body)
    # pipelined: the preface goes right behind the request, before the 101
    s.sendall(head.encode() + b"\r\n" + body + (preface if pipelined else b""))
    data = b""
    while b"\r\n\r\n" not in data:
        b = s.recv(65536)
        if not b:
            break
        data += b
    first, _, rest = data.partition(b"\r\n\r\n")
    line = first.split(b"\r\n")[0].decode()
    if not line.startswith("HTTP/1.1 101 "):
        s.settimeout(5)
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                rest += b
        except socket.timeout:
            pass
        s.close()
        return "h1", line, first + b"\r\n\r\n" + rest
    assert b"upgrade: h2c" in first.lower(), first
    if not pipelined:
        s.sendall(preface)
    one = read_stream(s, conn, 1, rest)
    conn.send_headers(3, [(":method", "GET"), (":path", "/second"), (":scheme", "http"),
                          (":authority", "localhost")], end_stream=True)
    s.sendall(conn.data_to_send())
    three = read_stream(s, conn, 3)
    s.close()
    return "h2", one, three


def env_of(result):
    return json.loads(result[2])


def h1_env(raw):
    """The JSON body of a raw HTTP/1.1 response, chunked or not."""
    head, _, body = raw.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        out = b""
        while True:
            size, _, body = body.partition(b"\r\n")
            n = int(size.split(b";")[0], 16)
            if n == 0:
                break
            out, body = out + body[:n], body[n + 2:]
        body = out
    return json.loads(body)


# ---- Upgrade: h2c --------------------------------------------------------

def test_upgrade_without_body_matches_upstream(upgrade_pair):
    got = [upgrade(srv.port, "/up?x=1") for srv in upgrade_pair]
    for kind, one, three in got:
        assert kind == "h2"
        assert one[0] == "200" and three[0] == "200", (one, three)
        env = env_of(one)
        assert protocol(env) == "HTTP/2.0"
        assert header(env, "upgrade") is None and header(env, "http2-settings") is None
        assert path_of(env_of(three)) == "/second"
    assert norm(got[0][1]) == norm(got[1][1])
    assert norm(got[0][2]) == norm(got[1][2])


@pytest.mark.parametrize("size", [5, 60000])
def test_upgrade_with_body_matches_upstream(upgrade_pair, size):
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    got = [upgrade(srv.port, "/post", body=body, headers=[("Content-Type", "text/plain")])
           for srv in upgrade_pair]
    for kind, one, _ in got:
        assert kind == "h2"
        env = env_of(one)
        assert env["body_len"] == size and header(env, "content-length") == str(size)
        assert method_of(env) == "POST" and protocol(env) == "HTTP/2.0"
    assert norm(got[0][1]) == norm(got[1][1])


def test_upgrade_with_preface_pipelined_behind_the_request(upgrade_pair):
    got = [upgrade(srv.port, "/pipe", body=b"abc", pipelined=True) for srv in upgrade_pair]
    for kind, one, three in got:
        assert kind == "h2" and one[0] == "200" and three[0] == "200"
        assert env_of(one)["body_len"] == 3
    assert norm(got[0][1]) == norm(got[1][1])


def test_upgrade_with_chunked_body_matches_upstream(upgrade_pair):
    got = [upgrade(srv.port, "/chunked", body=b"5\r\nhello\r\n0\r\n\r\n",
                   headers=[("Transfer-Encoding", "chunked")]) for srv in upgrade_pair]
    for kind, one, _ in got:
        assert kind == "h2"
        env = env_of(one)
        assert env["body_len"] == 5 and header(env, "content-length") is None
    assert norm(got[0][1]) == norm(got[1][1])


def test_upgrade_with_chunked_body_over_64k_ends_the_connection(upgrade_pair):
    # gunicorn 27 holds any chunked upgrade body in memory; cgunicorn stops
    # at 64 KiB, its limit for a Content-Length (docs/compatibility.md)
    big = b"".join(b"%x\r\n%s\r\n" % (10000, b"z" * 10000) for _ in range(8)) + b"0\r\n\r\n"
    kind, line, raw = upgrade(upgrade_pair[0].port, "/bigchunked", body=big,
                              headers=[("Transfer-Encoding", "chunked")])
    assert kind == "h1" and line == "" and raw == b"\r\n\r\n", (kind, line, raw[:100])


def test_upgrade_with_expect_100_continue_gets_100_then_101(upgrade_pair):
    # upstream answers no 100 on an upgrade (the client waits out its own
    # expect timeout); cgunicorn sends it before reading the body, then 101
    conn = new_conn()
    offer = conn.initiate_upgrade_connection().decode()
    preface = conn.data_to_send()
    s = socket.create_connection(("127.0.0.1", upgrade_pair[0].port), timeout=20)
    s.sendall(("POST /expect HTTP/1.1\r\nHost: localhost\r\n"
               "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
               "HTTP2-Settings: %s\r\nContent-Length: 3\r\n"
               "Expect: 100-continue\r\n\r\n" % offer).encode())
    data = b""
    while b"\r\n\r\n" not in data:
        b = s.recv(65536)
        assert b, data
        data += b
    assert data.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), data
    s.sendall(b"abc")
    data = data[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
    while b"\r\n\r\n" not in data:
        b = s.recv(65536)
        assert b, data
        data += b
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    s.sendall(preface)
    one = read_stream(s, conn, 1, rest)
    s.close()
    env = env_of(one)
    assert one[0] == "200" and env["body_len"] == 3 and protocol(env) == "HTTP/2.0"


@pytest.mark.parametrize("case", ["settings_twice", "settings_bad_base64", "settings_bad_push",
                                  "body_too_large", "no_connection_token", "upgrade_websocket"])
def test_malformed_upgrade_is_served_as_http11_like_upstream(upgrade_pair, case, request):
    cls = request.node.callspec.params["upgrade_pair"]
    kw = {}
    good = base64.urlsafe_b64encode(b"\x00\x03\x00\x00\x00\x64").rstrip(b"=").decode()
    if case == "settings_twice":
        kw["settings"] = [good, good]
    elif case == "settings_bad_base64":
        kw["settings"] = ["***"]
    elif case == "settings_bad_push":
        kw["settings"] = [base64.urlsafe_b64encode(b"\x00\x02\x00\x00\x00\x02").decode()]
    elif case == "body_too_large":
        kw["body"] = b"b" * 65537
    elif case == "no_connection_token":
        kw["headers"] = [("Connection", "Upgrade"), ("Upgrade", "h2c")]
    elif case == "upgrade_websocket":
        kw["headers"] = [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "websocket")]
    got = [upgrade(srv.port, "/m", **kw) for srv in upgrade_pair]
    if cls == "asgi" and case == "upgrade_websocket":
        # both asgi workers take it for a WebSocket handshake (no key): 426
        for kind, line, raw in got:
            assert kind == "h1" and line == "HTTP/1.1 426 Upgrade Required", line
            assert raw.endswith(b"\r\n\r\nUpgrade Required"), raw
        return
    for kind, line, raw in got:
        assert kind == "h1" and line.startswith("HTTP/1.1 200"), (case, line)
        env = h1_env(raw)
        assert protocol(env) == "HTTP/1.1"
    envs = [h1_env(raw) for _, _, raw in got]
    for e in envs:
        for k in ENV_SKIP:
            e.pop(k, None)
    assert envs[0] == envs[1]


@pytest.mark.parametrize("cls", sorted(CLASSES))
def test_untrusted_peer_is_not_upgraded(cls):
    pair = (start(None, ["--http2-cleartext", "upgrade"] + UNTRUSTED, cls=cls),
            start(GUNICORN, ["--http2-cleartext", "upgrade"] + UNTRUSTED, cls=cls))
    try:
        got = [upgrade(srv.port, "/u", body=b"data") for srv in pair]
        for kind, line, raw in got:
            assert kind == "h1" and line.startswith("HTTP/1.1 200"), line
            env = h1_env(raw)
            assert protocol(env) == "HTTP/1.1" and header(env, "upgrade") == "h2c"
            assert env["body_len"] == 4
        envs = [h1_env(raw) for _, _, raw in got]
        for e in envs:
            for k in ENV_SKIP:
                e.pop(k, None)
        assert envs[0] == envs[1]
    finally:
        for s in pair:
            s.stop()


@pytest.mark.parametrize("cls", sorted(CLASSES))
def test_both_serves_prior_knowledge_and_upgrade_on_one_port(cls):
    srv = start(None, ["--http2-cleartext", "both"] + TRUSTED, cls=cls)
    try:
        assert "upgrade is not implemented" not in srv.log()
        assert "not built for asgi" not in srv.log()
        kind, one, _ = upgrade(srv.port, "/b")
        assert kind == "h2" and one[0] == "200"
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
        conn = new_conn()
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "GET"), (":path", "/pk"), (":scheme", "http"),
                              (":authority", "localhost")], end_stream=True)
        s.sendall(conn.data_to_send())
        res = read_stream(s, conn, 1)
        s.close()
        assert res[0] == "200" and path_of(env_of(res)) == "/pk"
        # an HTTP/1.1 request without an upgrade is no error with "both"
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
        s.sendall(b"GET /h1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
        s.close()
        assert data.startswith(b"HTTP/1.1 200")
    finally:
        srv.stop()


# ---- request trailers ----------------------------------------------------

def h2c_request(port, headers, chunks=(), trailers=None, sock=None):
    s = sock or socket.create_connection(("127.0.0.1", port), timeout=20)
    conn = new_conn()
    conn.initiate_connection()
    conn.send_headers(1, headers, end_stream=not chunks and not trailers)
    for i, c in enumerate(chunks):
        conn.send_data(1, c, end_stream=(i == len(chunks) - 1 and not trailers))
    if trailers:
        conn.send_headers(1, trailers, end_stream=True)
    s.sendall(conn.data_to_send())
    res = read_stream(s, conn, 1)
    s.close()
    return res


def read_records(path, want):
    with open(path) as f:
        recs = [json.loads(line) for line in f]
    return [r for r in recs if r["path"] == want]


@pytest.mark.parametrize("with_length", [True, False])
def test_request_trailers_in_post_request_like_upstream(with_length, tmp_path):
    outs = [str(tmp_path / "cg.jsonl"), str(tmp_path / "gu.jsonl")]
    pair = [start(binary, ["--http2-cleartext", "prior-knowledge"] + TRUSTED,
                  env={"H2MORE_OUT": out}) for binary, out in zip((None, GUNICORN), outs)]
    try:
        hdrs = [(":method", "POST"), (":path", "/t"), (":scheme", "http"),
                (":authority", "localhost")]
        if with_length:
            hdrs.append(("content-length", "6"))
        trailers = [("x-checksum", "abc123"), ("x-other", "two words"),
                    ("authorization", "dropped")]  # RFC 9110 6.5.1: left out
        for srv in pair:
            res = h2c_request(srv.port, hdrs, [b"abc", b"def"], trailers)
            assert res[0] == "200" and env_of(res)["body_len"] == 6
        for srv in pair:
            srv.stop()
        got = [read_records(o, "/t") for o in outs]
        assert got[0] == got[1], got
        assert got[0][0]["trailers"] == [["X-CHECKSUM", "abc123"], ["X-OTHER", "two words"]]
    finally:
        for srv in pair:
            srv.stop()


def test_http11_chunked_trailers_in_post_request(tmp_path):
    out = str(tmp_path / "h1.jsonl")
    srv = start(None, [], env={"H2MORE_OUT": out})
    try:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
        s.sendall(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Connection: close\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 9\r\n\r\n")
        while s.recv(65536):
            pass
        s.close()
        srv.stop()
        assert read_records(out, "/c")[0]["trailers"] == [["X-SUM", "9"]]
    finally:
        srv.stop()


# ---- :scheme -------------------------------------------------------------

SCHEME_HEADERS = [(":method", "GET"), (":path", "/s"), (":authority", "localhost")]


def test_scheme_of_a_trusted_h2c_peer_sets_url_scheme():
    pair = (start(None, ["--http2-cleartext", "prior-knowledge"] + TRUSTED),
            start(GUNICORN, ["--http2-cleartext", "prior-knowledge"] + TRUSTED))
    try:
        for srv in pair:
            res = h2c_request(srv.port, SCHEME_HEADERS + [(":scheme", "https")])
            assert env_of(res)["wsgi.url_scheme"] == "https", srv
            # a trusted X-Forwarded-Proto still has the last word, as on HTTP/1
            res = h2c_request(srv.port, SCHEME_HEADERS + [(":scheme", "https"),
                                                          ("x-forwarded-proto", "http")])
            assert env_of(res)["wsgi.url_scheme"] == "http", srv
    finally:
        for s in pair:
            s.stop()


@pytest.fixture(scope="module")
def certs():
    d = tempfile.TemporaryDirectory(prefix="cgh2m-")
    yield Certs(d.name)
    d.cleanup()


def tls_h2(port, ctx, headers):
    ctx.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    assert s.selected_alpn_protocol() == "h2"
    info = (s.version(), s.cipher())
    res = h2c_request(port, headers, sock=s)
    return res, info


@pytest.mark.parametrize("trusted", [True, False])
def test_scheme_over_tls_trusted_or_not(certs, trusted):
    ips = TRUSTED if trusted else UNTRUSTED
    pair = (start(None, certs.server_args() + ips), start(GUNICORN, certs.server_args() + ips))
    try:
        for srv in pair:
            res, _ = tls_h2(srv.port, certs.client_ctx(), SCHEME_HEADERS + [(":scheme", "http")])
            assert env_of(res)["wsgi.url_scheme"] == ("http" if trusted else "https"), srv
    finally:
        for s in pair:
            s.stop()


# ---- gunicorn.socket on TLS streams -------------------------------------

def test_getpeercert_with_a_client_certificate_over_h2(certs):
    extra = ["--ca-certs", certs.path("ca.crt"), "--cert-reqs", "2"]
    srv = start(None, certs.server_args(extra))
    try:
        hdrs = [(":method", "GET"), (":path", "/peer"), (":scheme", "https"),
                (":authority", "localhost")]
        res, (version, cipher) = tls_h2(srv.port, certs.client_ctx("client"), hdrs)
        got = json.loads(res[2])
        assert got["tls"] and got["scheme"] == "https"
        assert dict(x[0] for x in got["peer"]["subject"])["commonName"] == "test client"
        assert dict(x[0] for x in got["peer"]["issuer"])["commonName"] == "cgunicorn test CA"
        assert got["peer_der"] > 0
        assert got["version"] == version and tuple(got["cipher"]) == cipher
    finally:
        srv.stop()


def test_getpeercert_without_a_client_certificate_over_h2(certs):
    srv = start(None, certs.server_args())
    try:
        hdrs = [(":method", "GET"), (":path", "/peer"), (":scheme", "https"),
                (":authority", "localhost")]
        res, (version, _) = tls_h2(srv.port, certs.client_ctx(), hdrs)
        got = json.loads(res[2])
        assert got["tls"] and got["peer"] is None and got["peer_der"] == 0
        assert got["version"] == version
    finally:
        srv.stop()
