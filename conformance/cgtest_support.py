"""Shared pieces of the black-box HTTP/WSGI suites (conformance corpus,
side-by-side, Flask/Django, access log).

Which server the suites run against is chosen here, from the environment,
so that every suite is parametrised the same way:

  CG_TEST_SERVERS  comma list of "cgunicorn" and/or "gunicorn"
                   (default "cgunicorn").  Single-server suites run once per
                   entry.  Side-by-side suites compare the first entry with
                   upstream gunicorn; with CG_TEST_SERVERS=gunicorn they
                   compare two upstream instances, which validates the
                   suites themselves.
  CG_TEST_WORKERS  comma list of worker classes (default "sync,gthread,asgi,gevent").
                   Adding a class is one more value here (its traits
                   come from the worker class table, WORKER_TRAITS), never
                   a copied test.  WSGI suites run the
                   WSGI classes of the list (WORKER_CLASSES); suites whose
                   app has an ASGI twin (the corpus: envapp.py and
                   asgienvapp.py) run them all (ALL_WORKER_CLASSES), each
                   class serving its trait's "dump_app".

Nothing here decides a verdict on timing: deadlines only bound waits.
"""
import base64
import errno
import importlib.util
import json
import os
import socket
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
APPS = os.path.join(ROOT, "tests", "apps", "http")
# gunicorn's request corpus as mk/corpus.py converts it into the build tree
# (`make corpus`; make check sets CG_HTTP_CORPUS to it).
CORPUS = os.environ.get("CG_HTTP_CORPUS", os.path.join(ROOT, "build", "corpus", "http-requests"))

_spec = importlib.util.spec_from_file_location(
    "cg_integration_harness", os.path.join(ROOT, "tests", "integration", "conftest.py"))
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)
Server = harness.Server

KNOWN_SERVERS = ("cgunicorn", "gunicorn")


def _worker_class_table():
    """The worker class table as docs/settings.md shows it under
    worker_class: generated from config/cg_conf_worker_class.c by the binary
    (`make docs`; test_config_table checks the committed copy is current), so
    the suites hold no second copy of the traits.  Returns {name: {"aliases",
    "asgi", "keeps_alive", "threads"}} in table order."""
    with open(os.path.join(ROOT, "docs", "settings.md")) as f:
        text = f.read()
    section = text.split("### `worker_class`", 1)[1].split("\n### ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 6 or not cells[0].startswith("`"):
            continue
        rows[cells[0].strip("`")] = {
            "aliases": [a.strip().strip("`") for a in cells[1].split(",") if a.strip()],
            "asgi": cells[2] == "ASGI",
            "keeps_alive": cells[3] == "yes",
            "threads": cells[4] == "yes",
        }
    if not rows:
        raise RuntimeError("docs/settings.md has no worker class table under worker_class; "
                           "run `make docs`")
    return rows


WORKER_CLASS_TABLE = _worker_class_table()
# Worker classes the suites know how to drive, with the traits they need,
# from the worker class table.  keeps_alive: whether the worker serves more
# than one request per connection (sync does not).  wsgi: whether it serves
# WSGI apps; dump_app: the request-dumping app it serves (same JSON whatever
# the protocol).
# ASGI servers (upstream's gunicorn -k asgi, uvicorn) take the client's
# half-close (FIN) for a disconnect: the request in flight gets
# http.disconnect and no answer is sent (half_close_is_disconnect).  Suites
# keep the write side open and read the answers they expect (exchange_until)
# instead.
WORKER_TRAITS = {
    name: {"keeps_alive": row["keeps_alive"], "wsgi": not row["asgi"],
           "dump_app": "asgienvapp:app" if row["asgi"] else "envapp:app",
           **({"half_close_is_disconnect": True} if row["asgi"] else {})}
    for name, row in WORKER_CLASS_TABLE.items()
}


def _env_list(name, default, allowed):
    raw = os.environ.get(name, default)
    vals = [v.strip() for v in raw.split(",") if v.strip()]
    for v in vals:
        if v not in allowed:
            raise pytest.UsageError(
                "%s=%r: unknown value %r; use a comma list of %s"
                % (name, raw, v, ", ".join(allowed)))
    if not vals:
        raise pytest.UsageError("%s is empty; use a comma list of %s"
                                % (name, ", ".join(allowed)))
    return vals


SERVERS = _env_list("CG_TEST_SERVERS", "cgunicorn", KNOWN_SERVERS)
ALL_WORKER_CLASSES = _env_list("CG_TEST_WORKERS", "sync,gthread,asgi,gevent",
                                tuple(WORKER_TRAITS))
WORKER_CLASSES = [w for w in ALL_WORKER_CLASSES if WORKER_TRAITS[w]["wsgi"]]
# Side by side: the candidate is the first server asked for; the reference
# is always upstream gunicorn.
CANDIDATE = SERVERS[0]
REFERENCE = "gunicorn"


def binary(name):
    return harness.CGUNICORN if name == "cgunicorn" else harness.GUNICORN


def start(server_name, args, worker_class="sync", env=None, cwd=APPS, bind=None,
          app=None):
    """Starts `server_name` serving `app` (module in tests/apps/http; by
    default the worker class's dump_app) with one worker of `worker_class`.
    Returns a harness.Server with `.calls` (the app-call record file) and
    `.name` added."""
    app = app or WORKER_TRAITS[worker_class]["dump_app"]
    fd, calls = _mktemp("calls")
    env = dict(env or {})
    env.setdefault("CG_APP_CALLS", calls)
    full = ["--worker-class", worker_class, "--workers", "1"] + list(args) + [app]
    srv = Server(full, cwd=cwd, env=env, binary=binary(server_name), bind=bind)
    srv.calls = env["CG_APP_CALLS"]
    srv.name = server_name
    srv.worker_class = worker_class
    _orig_stop = srv.stop

    def stop(timeout=15):
        try:
            _orig_stop(timeout)
        finally:
            try:
                os.unlink(calls)
            except FileNotFoundError:
                pass
    srv.stop = stop
    return srv


def _mktemp(tag):
    import tempfile
    fd, path = tempfile.mkstemp(prefix="cgtest-%s-" % tag)
    os.close(fd)
    return fd, path


class ServerPool:
    """Starts servers on first use, keyed by their configuration, and stops
    them all at the end (module-scoped fixture `server_pool`)."""

    def __init__(self):
        self.servers = {}
        self.failed = {}

    def get(self, server_name, worker_class, args=(), env=None, bind=None,
            app=None, tag=None):
        """`tag` tells apart servers that are otherwise configured alike
        (e.g. the two upstream instances of a validation run)."""
        key = (server_name, worker_class, tuple(args),
               tuple(sorted((env or {}).items())), bind, app, tag)
        if key in self.failed:
            pytest.fail("server %s failed to start earlier: %s"
                        % (key, self.failed[key]))
        if key not in self.servers:
            try:
                self.servers[key] = start(server_name, args, worker_class,
                                          env=env, bind=bind, app=app)
            except Exception as e:  # remember: do not retry for every case
                self.failed[key] = str(e)[:2000]
                raise
        return self.servers[key]

    def stop_all(self):
        for srv in self.servers.values():
            srv.stop()
        self.servers.clear()


@pytest.fixture(scope="module")
def server_pool():
    pool = ServerPool()
    yield pool
    pool.stop_all()


def app_calls(srv):
    with open(srv.calls) as f:
        return [json.loads(line) for line in f if line.strip()]


# --------------------------------------------------------------- raw wire

def connect(srv, timeout=10):
    if srv.unix_path:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(srv.unix_path)
    else:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_all(s, limit=64 << 20):
    """Reads until the peer closes (or resets) the connection."""
    out = bytearray()
    while len(out) < limit:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        except socket.timeout:
            raise AssertionError("server neither answered nor closed within "
                                 "the socket timeout; got so far: %r" % bytes(out[:300]))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def exchange(srv, pieces, pause=0.0, half_close=True, timeout=10):
    """Sends `pieces` (bytes, or a list of bytes sent separately with
    `pause` seconds between them), half-closes, and returns every byte the
    server sent until it closed the connection."""
    if isinstance(pieces, (bytes, bytearray)):
        pieces = [bytes(pieces)]
    s = connect(srv, timeout)
    try:
        for i, p in enumerate(pieces):
            if i and pause:
                time.sleep(pause)
            try:
                s.sendall(p)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server gave up on us; read what it said
        if half_close:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError as e:
                if e.errno != errno.ENOTCONN:
                    raise
        return read_all(s)
    finally:
        s.close()


def _complete_finals(data):
    """Number of complete final responses at the start of `data`, or None
    when the last one is not complete yet."""
    try:
        return len(final_responses(parse_responses(data)))
    except (ValueError, IndexError):
        return None


def exchange_until(srv, pieces, finals, pause=0.0, timeout=10):
    """Like exchange(), without the half-close: sends `pieces` and returns
    what the server sent once `finals` complete final responses have
    arrived, or once it closed the connection, whichever is first.  For
    servers that take a half-close for a disconnect (WORKER_TRAITS)."""
    if isinstance(pieces, (bytes, bytearray)):
        pieces = [bytes(pieces)]
    s = connect(srv, timeout)
    out = bytearray()
    try:
        for i, p in enumerate(pieces):
            if i and pause:
                time.sleep(pause)
            try:
                s.sendall(p)
            except (BrokenPipeError, ConnectionResetError):
                break
        while _complete_finals(bytes(out)) != finals or finals == 0:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            except socket.timeout:
                raise AssertionError(
                    "server sent %r and then neither completed %d answer(s) "
                    "nor closed within the socket timeout" % (bytes(out[:300]), finals))
            if not chunk:
                break
            out += chunk
        return bytes(out)
    finally:
        s.close()


class Response:
    def __init__(self, status_line, headers, body, raw_head):
        self.status_line = status_line
        self.headers = headers          # list of (name, value) in wire order
        self.body = body
        self.raw_head = raw_head
        parts = status_line.split(" ", 2)
        self.version = parts[0]
        self.status = int(parts[1])

    def header(self, name, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Response %r %r body=%r>" % (self.status_line, self.headers,
                                             self.body[:200])


def _dechunk(data, pos):
    body = bytearray()
    while True:
        eol = data.index(b"\r\n", pos)
        size = int(data[pos:eol].split(b";")[0].strip(), 16)
        pos = eol + 2
        if size == 0:
            # trailers until an empty line
            while True:
                eol = data.index(b"\r\n", pos)
                line = data[pos:eol]
                pos = eol + 2
                if not line:
                    return bytes(body), pos
        body += data[pos:pos + size]
        if data[pos + size:pos + size + 2] != b"\r\n":
            raise ValueError("chunk not followed by CRLF at %d" % (pos + size))
        pos += size + 2


def parse_responses(data, head_request=False):
    """Splits a byte stream into Response objects (1xx interim responses
    included).  Raises ValueError on malformed framing."""
    out = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            raise ValueError("incomplete response head: %r" % data[pos:pos + 300])
        head = data[pos:end].decode("latin-1")
        lines = head.split("\r\n")
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError("malformed header line %r" % line)
            headers.append((name, value.strip(" \t")))
        pos = end + 4
        resp = Response(lines[0], headers, b"", head)
        if resp.status < 200 or resp.status in (204, 304) or head_request:
            body = b""
        elif resp.header("Transfer-Encoding", "").lower().endswith("chunked"):
            body, pos = _dechunk(data, pos)
        elif resp.header("Content-Length") is not None:
            n = int(resp.header("Content-Length"))
            body = data[pos:pos + n]
            if len(body) != n:
                raise ValueError("short body: %d of %d bytes" % (len(body), n))
            pos += n
        else:
            body = data[pos:]
            pos = len(data)
        resp.body = body
        out.append(resp)
    return out


def final_responses(resps):
    return [r for r in resps if r.status >= 200]


def b64(data):
    return base64.b64encode(data).decode("ascii")
