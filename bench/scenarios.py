"""The benchmark's scenarios: what is requested, of which servers, and how a
response is checked before any figure is taken from it."""
import json


def json4k_object():
    # Same object as post.lua builds for BENCH_BODY=json4k (4,096 bytes).
    return {"key%02d" % i: "v" * 51 for i in range(1, 65)}


def json4k_bytes():
    return ("{" + ", ".join('"key%02d": "%s"' % (i, "v" * 51) for i in range(1, 65))
            + "}").encode()


RAW1M = b"u" * (1 << 20)
HELLO = b"Hello, World!"


def _expect_hello(body):
    return None if body == HELLO else "expected %r, got %r" % (HELLO, body[:60])


def _expect_len(n):
    def check(body):
        return None if len(body) == n else "expected %d bytes, got %d" % (n, len(body))
    return check


def _expect_echo(body):
    try:
        ok = json.loads(body) == json4k_object()
    except ValueError:
        ok = False
    return None if ok else "JSON echo differs from the request (%r...)" % body[:60]


def _expect_upload(body):
    return None if body.strip() == b"1048576" else "upload length %r != 1048576" % body[:40]


def _expect_fastapi(body):
    try:
        ok = json.loads(body).get("message") == "Hello, World!"
    except (ValueError, AttributeError):
        ok = False
    return None if ok else "unexpected FastAPI answer %r" % body[:60]


class Load:
    """What the client sends. Identical loads against the same server are
    measured once even when several scenarios list them."""

    def __init__(self, path, close=False, body=None, connections=50, check=None,
                 h2_streams=None):
        self.path = path
        self.close = close
        self.body = body            # None | "json4k" | "raw1m" (see post.lua)
        self.connections = connections
        self.check = check
        self.h2_streams = h2_streams  # HTTP/2 with h2load: concurrent streams per connection

    @property
    def key(self):
        return (self.path, self.close, self.body, self.connections, self.h2_streams)

    def check_request(self):
        """(method, body bytes or None) for the one-off correctness check."""
        if self.body == "json4k":
            return "POST", json4k_bytes()
        if self.body == "raw1m":
            return "POST", RAW1M
        return "GET", None


class Scenario:
    def __init__(self, sid, title, app, variants, load=None, dirty=None):
        self.id = sid
        self.title = title
        self.app = app              # wsgi | asgi | fastapi
        self.variants = variants    # ids from servers.VARIANTS, in table order
        self.load = load
        self.dirty = dirty          # None | trivial | bytes | bytes64 | stream

    @property
    def unit(self):
        return "calls/s" if self.dirty else "req/s"


WSGI_SYNC = ["cg-sync", "gu-sync", "granian-wsgi", "uwsgi"]
WSGI_GTHREAD = ["cg-gthread", "gu-gthread", "granian-wsgi", "uwsgi"]
WSGI_ALL = ["cg-sync", "cg-gthread", "gu-sync", "gu-gthread", "granian-wsgi", "uwsgi"]
ASGI = ["cg-asgi", "gu-asgi", "uvicorn", "granian-asgi"]
DIRTY = ["cg-sync", "gu-sync"]
HTTPS_WSGI = ["cg-gthread-tls", "gu-gthread-tls", "granian-wsgi-tls", "nginx-tls"]
HTTPS_ASGI = ["cg-asgi-tls", "gu-asgi-tls", "uvicorn-tls", "granian-asgi-tls", "nginx-tls"]
# HTTP/2 over TLS (ALPN h2); cg-asgi-h2 serves the ASGI app (servers.Variant.app)
H2 = ["cg-gthread-h2", "cg-asgi-h2", "gu-gthread-h2", "granian-wsgi-h2", "nginx-h2"]

HELLO_KA = Load("/", check=_expect_hello)
HELLO_CLOSE = Load("/", close=True, check=_expect_hello)

SCENARIOS = [
    Scenario("wsgi-hello-sync-ka", "WSGI hello, sync, keep-alive", "wsgi",
             WSGI_SYNC + ["nginx"], HELLO_KA),
    Scenario("wsgi-hello-sync-close", "WSGI hello, sync, new connection per request", "wsgi",
             WSGI_SYNC + ["nginx"], HELLO_CLOSE),
    Scenario("wsgi-hello-gthread-ka", "WSGI hello, gthread, keep-alive", "wsgi",
             WSGI_GTHREAD + ["nginx"], HELLO_KA),
    Scenario("wsgi-hello-gthread-close", "WSGI hello, gthread, new connection per request",
             "wsgi", WSGI_GTHREAD + ["nginx"], HELLO_CLOSE),
    Scenario("wsgi-json-echo-4k", "WSGI JSON echo, 4 KB body", "wsgi", WSGI_ALL,
             Load("/echo", body="json4k", check=_expect_echo)),
    Scenario("wsgi-upload-1m", "WSGI 1 MB upload read by the app", "wsgi", WSGI_ALL,
             Load("/upload", body="raw1m", connections=16, check=_expect_upload)),
    Scenario("wsgi-response-1m", "WSGI 1 MB response", "wsgi", WSGI_ALL,
             Load("/big", connections=16, check=_expect_len(1 << 20))),
    Scenario("wsgi-file-1m", "WSGI 1 MB file via wsgi.file_wrapper", "wsgi", WSGI_ALL,
             Load("/file", connections=16, check=_expect_len(1 << 20))),
    Scenario("wsgi-stream-1000", "WSGI streaming response, 1,000 chunks", "wsgi", WSGI_ALL,
             Load("/stream", connections=16, check=_expect_len(64000))),
    Scenario("asgi-hello-ka", "ASGI hello, keep-alive", "asgi", ASGI + ["nginx"],
             Load("/", check=_expect_hello)),
    Scenario("fastapi-json-ka", "FastAPI JSON, keep-alive", "fastapi", ASGI,
             Load("/json", check=_expect_fastapi)),
    Scenario("https-hello-gthread-ka", "HTTPS WSGI hello, gthread, keep-alive", "wsgi",
             HTTPS_WSGI, HELLO_KA),
    Scenario("https-hello-gthread-close",
             "HTTPS WSGI hello, gthread, new TLS connection per request", "wsgi", HTTPS_WSGI,
             Load("/", close=True, connections=16, check=_expect_hello)),
    Scenario("https-hello-asgi-ka", "HTTPS ASGI hello, keep-alive", "asgi", HTTPS_ASGI,
             HELLO_KA),
    Scenario("https-hello-asgi-close", "HTTPS ASGI hello, new TLS connection per request",
             "asgi", HTTPS_ASGI, Load("/", close=True, connections=16, check=_expect_hello)),
    Scenario("h2-hello-c1", "HTTP/2 hello over TLS, 1 connection x 100 streams", "wsgi", H2,
             Load("/", connections=1, h2_streams=100, check=_expect_hello)),
    Scenario("h2-hello-c10", "HTTP/2 hello over TLS, 10 connections x 100 streams", "wsgi",
             H2, Load("/", connections=10, h2_streams=100, check=_expect_hello)),
    Scenario("dirty-trivial", "dirty execute(), trivial action, sequential", "wsgi", DIRTY,
             dirty="trivial"),
    Scenario("dirty-bytes-1m", "dirty execute(), 1 MiB bytes echo", "wsgi", DIRTY,
             dirty="bytes"),
    Scenario("dirty-bytes-64m", "dirty execute(), 64 MiB bytes echo", "wsgi", DIRTY,
             dirty="bytes64"),
    Scenario("dirty-stream-1000", "dirty stream(), 1,000 chunks per call", "wsgi", DIRTY,
             dirty="stream"),
]
