"""Side by side over HTTPS: cgunicorn and upstream gunicorn 27 serve the
same certificate; the same raw requests, sent over TLS, must give the same
WSGI environ (sync, gthread: the environ-dumping app and the comparison of
test_wsgi_side_by_side) and the same ASGI scope (asgi: the scope echo app
of test_asgi_side_by_side), and both name their listener https://."""
import json
import os
import socket
import ssl
import sys
import tempfile

import pytest

from conftest import GUNICORN, ROOT, Server
from tls_support import Certs

sys.path.insert(0, os.path.join(ROOT, "conformance"))
from cgtest_support import WORKER_CLASSES, start  # noqa: E402
import test_wsgi_side_by_side as wsbs  # noqa: E402
import test_asgi_side_by_side as asbs  # noqa: E402

WSGI_CASES = [c for c in wsbs.CASES if c[1] == "default" and not c[3].get("expect100")
              and c[0] in {"get_root", "get_http10_no_host", "query_repeated", "post_form",
                           "post_chunked", "post_big_fixed", "head", "stream_http11",
                           "forwarded_proto_trusted", "forwarded_conflict", "status_404",
                           "app_raises", "keepalive_requested", "bad_content_length",
                           "long_request_line", "cookies"}]


@pytest.fixture(scope="module")
def certs():
    d = tempfile.TemporaryDirectory(prefix="cgtls-sbs-")
    yield Certs(d.name)
    d.cleanup()


def client_ctx(certs):
    return certs.client_ctx()


def tls_send(port, ctx, raw):
    raw_sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    s = ctx.wrap_socket(raw_sock, server_hostname="localhost")
    try:
        s.sendall(raw)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


@pytest.fixture(scope="module")
def wsgi_pairs(certs):
    made = {}

    def get(worker_class):
        if worker_class not in made:
            args = certs.server_args()
            made[worker_class] = (start("cgunicorn", args, worker_class),
                                  start("gunicorn", args, worker_class))
        return made[worker_class]

    yield get
    for pair in made.values():
        for srv in pair:
            srv.stop()


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_listener_is_named_https_by_both(wsgi_pairs, worker_class):
    cand, ref = wsgi_pairs(worker_class)
    assert cand.url.startswith("https://") and ref.url.startswith("https://")


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
@pytest.mark.parametrize("case_id,config,raw,opts", WSGI_CASES, ids=[c[0] for c in WSGI_CASES])
def test_wsgi_same_as_upstream_over_https(certs, wsgi_pairs, worker_class, case_id, config, raw,
                                          opts):
    cand, ref = wsgi_pairs(worker_class)
    ctx = client_ctx(certs)
    got_ref = wsbs.normalise(tls_send(ref.port, ctx, raw), opts.get("head", False), ref)
    got_cand = wsbs.normalise(tls_send(cand.port, ctx, raw), opts.get("head", False), cand)
    assert got_ref, "upstream sent no answer for %s" % case_id
    for r in got_ref:
        if isinstance(r["body"], dict) and "env" in r["body"]:
            assert r["body"]["env"]["wsgi.url_scheme"] == "https"
    assert got_cand == got_ref


@pytest.fixture(scope="module")
def asgi_pair(certs, request):
    args = ["--worker-class", "asgi", "--workers", "1", "--chdir", asbs.APPS,
            "--asgi-lifespan", "off"] + certs.server_args() + ["hello:app"]
    ours = Server(args)
    request.addfinalizer(ours.stop)
    theirs = Server(args, binary=GUNICORN)
    request.addfinalizer(theirs.stop)
    return ours, theirs


def asgi_fetch(port, ctx, head, body):
    req = head + b"\r\n"
    if b"Connection:" not in head:
        req += b"Connection: close\r\n"
    out = tls_send(port, ctx, req + b"\r\n" + body)
    resp_head, _, resp_body = out.partition(b"\r\n\r\n")
    return resp_head.split(b"\r\n", 1)[0], resp_body


ASGI_REQUESTS = asbs.REQUESTS[:12] + [r for r in asbs.REQUESTS if b"POST" in r[0]]


@pytest.mark.parametrize("head,body", ASGI_REQUESTS,
                         ids=[r[0].split(b"\r\n")[0].decode("latin-1") for r in ASGI_REQUESTS])
def test_asgi_scope_same_as_upstream_over_https(certs, asgi_pair, head, body):
    ours, theirs = asgi_pair
    ctx = client_ctx(certs)
    got = asbs.normalise(*asgi_fetch(ours.port, ctx, head, body), ours.port)
    want = asbs.normalise(*asgi_fetch(theirs.port, ctx, head, body), theirs.port)
    if want[1] is not None:
        assert want[1]["scheme"] == "https"
    assert got == want
