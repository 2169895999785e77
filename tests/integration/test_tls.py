"""HTTPS in every worker class (issue 16): certificates made at test time
(tls_support.Certs), clients Python's ssl/http.client, curl and `openssl
s_client`; client certificates (mTLS); clients that never finish a
handshake; certificate rotation on HUP; wss; wsgi.file_wrapper over TLS."""
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import Server
from tls_support import Certs, https_get

WSGI_APP = r'''
import json, os

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/file":
        f = open(environ["HTTP_X_FILE"], "rb")
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 65536)
    if path == "/upload":
        data = environ["wsgi.input"].read()
        body = json.dumps({"len": len(data), "sha": __import__("hashlib").sha256(data).hexdigest()}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    s = environ["gunicorn.socket"]
    out = {"scheme": environ["wsgi.url_scheme"], "pid": os.getpid()}
    if hasattr(s, "getpeercert"):
        out.update(version=s.version(), cipher=s.cipher(), peer=s.getpeercert(),
                   peer_der=len(s.getpeercert(binary_form=True) or b""))
    body = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''

ASGI_APP = r'''
import json, os

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send",
                        "text": scope["scheme"] + ":" + (m.get("text") or "")})
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            break
    out = json.dumps({"scheme": scope["scheme"], "pid": os.getpid(), "len": len(body)}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})
'''

CLASSES = ["sync", "gthread", "asgi", "gevent"]


@pytest.fixture(scope="module")
def certs():
    d = tempfile.TemporaryDirectory(prefix="cgtls-")
    c = Certs(d.name)
    with open(os.path.join(d.name, "tlswsgi.py"), "w") as f:
        f.write(WSGI_APP)
    with open(os.path.join(d.name, "tlsasgi.py"), "w") as f:
        f.write(ASGI_APP)
    yield c
    d.cleanup()


def start(certs, worker_class, extra=(), cert_args=None):
    app = "tlsasgi:app" if worker_class == "asgi" else "tlswsgi:app"
    args = ["-k", worker_class, "--workers", "1", "--chdir", certs.dir]
    args += certs.server_args() if cert_args is None else cert_args
    return Server(args + list(extra) + [app], cwd=certs.dir)


def get_json(port, ctx, path="/"):
    status, _, body, _ = https_get(port, path, ctx=ctx)
    assert status == 200, body
    return json.loads(body)


@pytest.mark.parametrize("worker_class", CLASSES)
def test_https_with_three_clients(certs, worker_class):
    """Python's http.client (two requests on one connection), curl and
    openssl s_client all get an https answer; the listener is named
    https:// as gunicorn names it."""
    with start(certs, worker_class) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        ctx = certs.client_ctx()
        conn = http.client.HTTPSConnection("localhost", srv.port, context=ctx, timeout=10)
        for _ in range(2):
            conn.request("GET", "/")
            r = conn.getresponse()
            assert r.status == 200
            assert json.loads(r.read())["scheme"] == "https"
        conn.close()

        out = subprocess.run(["curl", "-sS", "--cacert", certs.path("ca.crt"),
                              "https://localhost:%d/x" % srv.port],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["scheme"] == "https"

        req = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        out = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % srv.port,
                              "-servername", "localhost", "-CAfile", certs.path("ca.crt"),
                              "-quiet", "-verify_return_error"],
                             input=req, capture_output=True, timeout=30)
        assert out.stdout.startswith(b"HTTP/1.1 200 OK\r\n"), (out.stdout, out.stderr)
        assert b'"scheme": "https"' in out.stdout


@pytest.mark.parametrize("worker_class", CLASSES)
def test_request_body_and_big_response_over_tls(certs, worker_class):
    """A 3 MiB upload arrives whole (many TLS records through the
    transport's reads)."""
    data = os.urandom(3 << 20)
    with start(certs, worker_class) as srv:
        status, _, body, _ = https_get(srv.port, "/upload", ctx=certs.client_ctx(),
                                       method="POST", body=data, timeout=60)
        assert status == 200
        got = json.loads(body)
        assert got["len"] == len(data)
        if worker_class != "asgi":
            assert got["sha"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("worker_class", ["sync", "gthread", "gevent"])
def test_file_wrapper_over_tls(certs, worker_class, tmp_path):
    """wsgi.file_wrapper over TLS is copied through the transport (no
    kernel TLS): every byte of a 5 MiB file arrives."""
    p = tmp_path / "blob.bin"
    data = os.urandom(5 << 20)
    p.write_bytes(data)
    with start(certs, worker_class) as srv:
        conn = http.client.HTTPSConnection("localhost", srv.port, context=certs.client_ctx(),
                                           timeout=60)
        conn.request("GET", "/file", headers={"X-File": str(p)})
        r = conn.getresponse()
        assert r.status == 200
        body = r.read()
        conn.close()
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()


def refused(port, ctx):
    """True when the server refuses the client in the handshake: with TLS
    1.3 the client may only see it on its first read (an alert or EOF)."""
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = s.recv(65536)
        s.close()
        return data == b""
    except (ssl.SSLError, ConnectionError, OSError):
        return True


@pytest.mark.parametrize("worker_class", ["sync", "gthread", "gevent"])
def test_mtls_required(certs, worker_class):
    """cert_reqs=2 with ca_certs: no certificate or one from another CA is
    refused in the handshake; a client certificate from the CA is served and
    the app reads its subject through gunicorn.socket.getpeercert(), and
    the session through cipher() and version()."""
    extra = ["--ca-certs", certs.path("ca.crt"), "--cert-reqs", "2"]
    with start(certs, worker_class, extra) as srv:
        for ctx in (certs.client_ctx(), certs.client_ctx("stranger")):
            assert refused(srv.port, ctx)
        ctx = certs.client_ctx("client")
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        version, cipher = s.version(), s.cipher()
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        got = json.loads(data.partition(b"\r\n\r\n")[2])
        assert got["scheme"] == "https"
        subject = dict(x[0] for x in got["peer"]["subject"])
        assert subject["commonName"] == "test client"
        assert dict(x[0] for x in got["peer"]["issuer"])["commonName"] == "cgunicorn test CA"
        assert got["peer_der"] > 0
        assert got["version"] == version
        assert tuple(got["cipher"]) == cipher
        s.close()


def test_mtls_optional_without_certificate(certs):
    """cert_reqs=1: a client without a certificate is served and
    getpeercert() is None, as an ssl.SSLSocket answers."""
    extra = ["--ca-certs", certs.path("ca.crt"), "--cert-reqs", "1"]
    with start(certs, "gthread", extra) as srv:
        got = get_json(srv.port, certs.client_ctx())
        assert got["peer"] is None and got["peer_der"] == 0
        got = get_json(srv.port, certs.client_ctx("client"))
        assert dict(x[0] for x in got["peer"]["subject"])["commonName"] == "test client"


def stalled_handshakes(port, n):
    """n connections that send half a ClientHello record and then nothing."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        socks.append(s)
    return socks


def answer_of(port, payload):
    """What the server sends back to raw bytes (b"" when it just closes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(payload)
        data = b""
        while True:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        return data
    finally:
        s.close()


@pytest.mark.parametrize("worker_class", ["gthread", "asgi", "gevent"])
def test_bad_clients_cost_one_connection(certs, worker_class):
    """A plaintext HTTP client and a garbage handshake are closed without an
    HTTP answer, and 50 handshakes stalled mid-way (still open) hold no
    thread: with a single gthread thread (or gevent's one hub), normal HTTPS
    clients are served meanwhile, by the same worker process."""
    extra = ["--threads", "1"] if worker_class == "gthread" else []
    with start(certs, worker_class, extra) as srv:
        ctx = certs.client_ctx()
        pid = get_json(srv.port, ctx)["pid"]
        plain = answer_of(srv.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert b"HTTP/1.1 200" not in plain
        # fixed bytes: random ones may read as the start of a long record
        # (or an SSLv2 hello) that the server then waits for
        garbage = answer_of(srv.port, b"\x01\x02\x03\x04 not a TLS record \xff\xfe" * 4)
        assert b"HTTP/1." not in garbage
        stalled = stalled_handshakes(srv.port, 50)
        try:
            for _ in range(5):
                got = get_json(srv.port, ctx)
                assert got["scheme"] == "https" and got["pid"] == pid
        finally:
            for s in stalled:
                s.close()
        assert get_json(srv.port, ctx)["pid"] == pid
        assert "Traceback" not in srv.log()


def test_sync_stalled_handshake_is_bounded_by_timeout(certs):
    """The sync worker's handshake is bounded by `timeout`: a client that
    stalls mid-handshake is dropped and the next client is served by the
    same worker (not a new one the master had to start)."""
    with start(certs, "sync", ["--timeout", "3"]) as srv:
        ctx = certs.client_ctx()
        pid = get_json(srv.port, ctx)["pid"]
        stalled = stalled_handshakes(srv.port, 1)
        try:
            got = get_json(srv.port, ctx)  # waits for the stalled one's bound
            assert got["pid"] == pid, srv.log()
        finally:
            stalled[0].close()
        assert "WORKER TIMEOUT" not in srv.log()


def served_der(port, ctx):
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    try:
        return s.getpeercert(binary_form=True)
    finally:
        s.close()


def test_hup_rotates_the_certificate(certs, tmp_path):
    """HUP re-reads the certificate: the new one is served afterwards. A
    HUP with a broken certificate keeps the running one and logs why."""
    crt, key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(certs.path("server.crt"), crt)
    shutil.copy(certs.path("server.key"), key)
    with start(certs, "gthread", cert_args=["--certfile", str(crt), "--keyfile", str(key)]) as srv:
        ctx = certs.client_ctx()
        assert served_der(srv.port, ctx) == certs.fingerprint("server.crt")
        shutil.copy(certs.path("server2.crt"), crt)
        shutil.copy(certs.path("server2.key"), key)
        srv.signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while served_der(srv.port, ctx) != certs.fingerprint("server2.crt"):
            assert time.monotonic() < deadline, srv.log()
            time.sleep(0.1)
        crt.write_text("not a certificate\n")
        srv.signal(signal.SIGHUP)
        srv.wait_for_log(r"reloading the configuration failed, keeping the previous one: "
                         r"certfile %s: no start line" % str(crt))
        srv.wait_for_log(r"(?s)keeping the previous one.*Booting worker")
        for _ in range(3):
            assert served_der(srv.port, ctx) == certs.fingerprint("server2.crt")
        assert get_json(srv.port, ctx)["scheme"] == "https"


def test_wss_echo(certs):
    websockets = pytest.importorskip("websockets")
    import asyncio

    with start(certs, "asgi") as srv:
        async def talk():
            ctx = certs.client_ctx()
            async with websockets.connect("wss://localhost:%d/ws" % srv.port, ssl=ctx) as ws:
                out = []
                for word in ("one", "two"):
                    await ws.send(word)
                    out.append(await ws.recv())
                return out
        assert asyncio.run(talk()) == ["wss:one", "wss:two"]


BAD_CONFIGS = [
    ("missing_cert", lambda c: ["--certfile", c.path("nope.crt"), "--keyfile",
                                c.path("server.key")],
     "certfile %(d)s/nope.crt: No such file or directory"),
    ("missing_key", lambda c: ["--certfile", c.path("server.crt"), "--keyfile",
                               c.path("nope.key")],
     "keyfile %(d)s/nope.key: No such file or directory"),
    ("key_mismatch", lambda c: ["--certfile", c.path("server.crt"), "--keyfile",
                                c.path("server2.key")],
     "keyfile %(d)s/server2.key does not match certfile %(d)s/server.crt: key values mismatch"),
    ("encrypted_key", lambda c: ["--certfile", c.path("server.crt"), "--keyfile",
                                 c.path("server.enc.key")],
     "keyfile %(d)s/server.enc.key: the key is encrypted and no password was given"),
    ("not_pem", lambda c: ["--certfile", c.path("ca.srl"), "--keyfile", c.path("server.key")],
     "certfile %(d)s/ca.srl: no start line"),
    ("ciphers_select_nothing", lambda c: c.server_args(["--ciphers", "NOPE"]),
     "ciphers 'NOPE': no cipher match"),
    ("ca_certs_missing", lambda c: c.server_args(["--ca-certs", c.path("nope.pem")]),
     "ca_certs %(d)s/nope.pem: No such file or directory"),
    ("ca_certs_not_certs", lambda c: c.server_args(["--ca-certs", c.path("server.key")]),
     "ca_certs %(d)s/server.key: no certificate or crl found"),
    ("keyfile_only", lambda c: ["--keyfile", c.path("server.key")],
     "keyfile is set without certfile"),
    ("cert_reqs_out_of_range", lambda c: c.server_args(["--cert-reqs", "3"]),
     "cert_reqs 3: must be 0 (none), 1 (optional) or 2 (required)"),
]


@pytest.mark.parametrize("name,args,message", BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
@pytest.mark.parametrize("mode", ["start", "check-config"])
def test_bad_configuration_fails_once(certs, name, args, message, mode):
    from conftest import run_cmd
    cmd = (["--check-config"] if mode == "check-config" else []) + args(certs) + \
        ["--bind", "127.0.0.1:0", "--chdir", certs.dir, "tlswsgi:app"]
    r = run_cmd(cmd, cwd=certs.dir, timeout=30)
    assert r.returncode == 1, r.stderr
    expected = message % {"d": certs.dir}
    assert expected in r.stderr, r.stderr
    assert r.stderr.count(expected) == 1
    assert "Listening at" not in r.stderr and "Booting worker" not in r.stderr


HOOK_SNI_TLS13 = '''
import ssl

def ssl_context(conf, default_ssl_context_factory):
    ctx = default_ssl_context_factory()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.options |= ssl.OP_NO_TICKET
    ctx.set_alpn_protocols(["http/1.1"])
    other = default_ssl_context_factory()
    other.load_cert_chain(%(crt2)r, %(key2)r)

    def sni(ssl_object, server_name, context):
        if server_name == "other.test":
            ssl_object.context = other
    ctx.sni_callback = sni
    return ctx
'''


def write_conf(tmp_path, text):
    p = tmp_path / "tls.conf.py"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("worker_class", CLASSES)
def test_ssl_context_hook_tls13_and_sni(certs, worker_class, tmp_path):
    """The hook's context: minimum TLS 1.3 (a TLS 1.2-only client is
    refused), ALPN, and SNI choosing between two certificates."""
    conf = write_conf(tmp_path, HOOK_SNI_TLS13 % {"crt2": certs.path("server2.crt"),
                                                  "key2": certs.path("server2.key")})
    with start(certs, worker_class, ["-c", conf]) as srv:
        assert refused(srv.port, certs.client_ctx(maximum=ssl.TLSVersion.TLSv1_2))
        ctx = certs.client_ctx()
        ctx.set_alpn_protocols(["http/1.1"])
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        assert s.version() == "TLSv1.3"
        assert s.selected_alpn_protocol() == "http/1.1"
        assert s.getpeercert(binary_form=True) == certs.fingerprint("server.crt")
        s.close()
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s = ctx.wrap_socket(raw, server_hostname="other.test")
        assert s.getpeercert(binary_form=True) == certs.fingerprint("server2.crt")
        s.close()
        status, _, body, _ = https_get(srv.port, ctx=certs.client_ctx())
        assert status == 200 and json.loads(body)["scheme"] == "https"


HOOK_BAD = [
    ("unsupported_attribute", "    ctx.set_ecdh_curve('prime256v1')\n",
     "SSLContext.set_ecdh_curve is not supported by cgunicorn's ssl_context hook"),
    ("unsupported_setting", "    ctx.post_handshake_auth = True\n",
     "SSLContext.post_handshake_auth is not supported by cgunicorn's ssl_context hook"),
    ("wrong_password", "    ctx.load_cert_chain(%(crt)r, %(enc)r, password='wrong')\n",
     "load_cert_chain: wrong password for the key: keyfile %(enc)s: bad decrypt"),
    ("not_our_context", "    import ssl\n    return ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n",
     "it must return the context made by default_ssl_context_factory() (got SSLContext)"),
]


@pytest.mark.parametrize("name,body,message", HOOK_BAD, ids=[h[0] for h in HOOK_BAD])
@pytest.mark.parametrize("mode", ["start", "check-config"])
def test_ssl_context_hook_errors_fail_start_up(certs, tmp_path, name, body, message, mode):
    from conftest import run_cmd
    names = {"crt": certs.path("server.crt"), "enc": certs.path("server.enc.key")}
    conf = write_conf(tmp_path, "def ssl_context(conf, factory):\n    ctx = factory()\n" +
                      body % names + "    return ctx\n")
    cmd = (["--check-config"] if mode == "check-config" else []) + ["-c", conf] + \
        certs.server_args() + ["--bind", "127.0.0.1:0", "--chdir", certs.dir, "tlswsgi:app"]
    r = run_cmd(cmd, cwd=certs.dir, timeout=30)
    assert r.returncode == 1, r.stderr
    assert (message % names) in r.stderr, r.stderr
    assert "Listening at" not in r.stderr


def test_ssl_context_hook_key_password(certs, tmp_path):
    """load_cert_chain(password=...) (a callable here) loads an encrypted
    key; the configuration's own encrypted keyfile alone would fail."""
    conf = write_conf(tmp_path, "def ssl_context(conf, factory):\n"
                      "    ctx = factory()\n"
                      "    ctx.load_cert_chain(%r, %r, password=lambda: b's3cret')\n"
                      "    ctx.verify_mode = 0\n"
                      "    return ctx\n" % (certs.path("server2.crt"),
                                            certs.path("server.enc.key")))
    # server2.crt does not match server.enc.key: the hook's own error
    from conftest import run_cmd
    r = run_cmd(["--check-config", "-c", conf] + certs.server_args() +
                ["--chdir", certs.dir, "tlswsgi:app"], cwd=certs.dir, timeout=30)
    assert r.returncode == 1 and "does not match certfile" in r.stderr, r.stderr
    conf = write_conf(tmp_path, "def ssl_context(conf, factory):\n"
                      "    ctx = factory()\n"
                      "    ctx.load_cert_chain(%r, %r, password=lambda: b's3cret')\n"
                      "    return ctx\n" % (certs.path("server.crt"),
                                            certs.path("server.enc.key")))
    with start(certs, "sync", ["-c", conf]) as srv:
        assert get_json(srv.port, certs.client_ctx())["scheme"] == "https"
