"""TLS session resumption (issue 16's handshake benchmark): a client that
comes back with its session ticket resumes, in every worker class and on
any worker (the master makes the context, and its ticket key, before it
forks); after a HUP rebuilds the context no old session resumes, so a
session never crosses from one TLS configuration to the next (a client
that got a session without a certificate is refused once cert_reqs=2);
and a resumed session keeps the client certificate it was verified with."""
import json
import os
import signal
import socket
import ssl
import tempfile
import time

import pytest

from conftest import Server
from tls_support import Certs, read_to_eof

APP = r'''
import json, os
def app(environ, start_response):
    s = environ["gunicorn.socket"]
    body = json.dumps({"pid": os.getpid(), "peer": s.getpeercert()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''
ASGI_APP = r'''
import json, os
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = json.dumps({"pid": os.getpid(), "peer": None}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
'''
VERSIONS = {"tls1.3": ssl.TLSVersion.TLSv1_3, "tls1.2": ssl.TLSVersion.TLSv1_2}


@pytest.fixture(scope="module")
def certs():
    d = tempfile.TemporaryDirectory(prefix="cgtlss-")
    c = Certs(d.name)
    with open(os.path.join(d.name, "sessapp.py"), "w") as f:
        f.write(APP)
    with open(os.path.join(d.name, "sessasgi.py"), "w") as f:
        f.write(ASGI_APP)
    yield c
    d.cleanup()


def start(certs, worker_class="gthread", workers=1, extra=(), tls_args=None):
    app = "sessasgi:app" if worker_class == "asgi" else "sessapp:app"
    args = ["-k", worker_class, "--workers", str(workers), "--chdir", certs.dir]
    args += certs.server_args() if tls_args is None else tls_args
    return Server(args + list(extra) + [app], cwd=certs.dir)


def client(certs, version, cert=None):
    ctx = certs.client_ctx(cert)
    ctx.minimum_version = ctx.maximum_version = VERSIONS[version]
    return ctx


def request(port, ctx, session=None):
    """One request on a new connection offering `session`. Returns (the
    app's JSON, the session to come back with, whether it was resumed)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = read_to_eof(s)
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
        # a TLS 1.3 ticket arrives after the handshake: read with the response
        return json.loads(data.partition(b"\r\n\r\n")[2]), s.session, s.session_reused
    finally:
        s.close()


def refused(port, ctx, session):
    try:
        request(port, ctx, session)
    except (ssl.SSLError, ConnectionError, OSError, AssertionError):
        return True
    return False


def hold(port, ctx):
    """A connection whose handshake is done and that sends no request: it
    keeps one sync worker busy until it is closed."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def gone(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def hup_and_wait(srv, ctx, old_pid):
    """HUP, then wait until the worker that served before is gone."""
    srv.signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while not gone(old_pid):
        assert time.monotonic() < deadline, srv.log()
        time.sleep(0.1)
    got, _, _ = request(srv.port, ctx)
    assert got["pid"] != old_pid


@pytest.mark.parametrize("version", sorted(VERSIONS))
@pytest.mark.parametrize("worker_class", ["sync", "gthread", "asgi"])
def test_sessions_resume(certs, worker_class, version):
    with start(certs, worker_class) as srv:
        ctx = client(certs, version)
        _, sess, reused = request(srv.port, ctx)
        assert not reused
        for _ in range(3):
            _, sess, reused = request(srv.port, ctx, sess)
            assert reused


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_a_session_resumes_on_another_worker(certs, version):
    """Two sync workers, each busy with one connection at a time: a holder
    keeps one busy so the next connection lands on the other."""
    with start(certs, "sync", workers=2) as srv:
        ctx = client(certs, version)
        h1 = hold(srv.port, ctx)            # worker A
        origin, sess, _ = request(srv.port, ctx)  # worker B issues the session
        h2 = hold(srv.port, ctx)            # worker B (A is busy with h1)
        h1.close()
        got, _, reused = request(srv.port, ctx, sess)  # worker A
        h2.close()
        assert got["pid"] != origin["pid"]
        assert reused


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_hup_ends_the_old_sessions(certs, version):
    """A HUP rebuilds the context with a new ticket key: a session from
    before it makes a full handshake; one from after it resumes."""
    with start(certs, "gthread") as srv:
        ctx = client(certs, version)
        got, old, _ = request(srv.port, ctx)
        hup_and_wait(srv, ctx, got["pid"])
        _, new, reused = request(srv.port, ctx, old)
        assert not reused
        _, _, reused = request(srv.port, ctx, new)
        assert reused


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_no_session_crosses_to_cert_reqs_2(certs, tmp_path, version):
    """A client that got its session while no certificate was asked for is
    refused after a HUP to cert_reqs=2: it cannot resume past the check."""
    conf = tmp_path / "tls.conf.py"
    conf.write_text("cert_reqs = 0\n")
    with start(certs, "gthread", extra=["-c", str(conf)]) as srv:
        ctx = client(certs, version)
        got, sess, _ = request(srv.port, ctx)
        _, sess, reused = request(srv.port, ctx, sess)
        assert reused
        conf.write_text("cert_reqs = 2\nca_certs = %r\n" % certs.path("ca.crt"))
        srv.signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while not gone(got["pid"]):
            assert time.monotonic() < deadline, srv.log()
            time.sleep(0.1)
        assert refused(srv.port, ctx, sess)
        assert refused(srv.port, ctx, None)
        with_cert = client(certs, version, "client")
        assert request(srv.port, with_cert)[0]["peer"] is not None


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_resumed_mtls_session_keeps_the_client_certificate(certs, version):
    extra = ["--ca-certs", certs.path("ca.crt"), "--cert-reqs", "2"]
    with start(certs, "gthread", extra=extra) as srv:
        ctx = client(certs, version, "client")
        got, sess, _ = request(srv.port, ctx)
        for _ in range(2):
            got, sess, reused = request(srv.port, ctx, sess)
            assert reused
            subject = dict(x[0] for x in got["peer"]["subject"])
            assert subject["commonName"] == "test client"
        assert refused(srv.port, client(certs, version), None)
