"""StatsD metrics (statsd_host, statsd_prefix, dogstatsd_tags,
enable_backlog_metric). For the same requests and hooks, cgunicorn sends
the datagrams upstream gunicorn's statsd logger sends: the same names,
kinds, values and tags, in the same numbers; request durations are only
checked for their shape."""
import collections
import os
import re
import signal
import socket
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "conformance"))
from cgtest_support import (CANDIDATE, REFERENCE, WORKER_CLASSES, exchange,  # noqa: E402
                            exchange_until, start)

HERE = os.path.dirname(os.path.abspath(__file__))
HOOKS_CONF = os.path.join(HERE, "configs", "statsd_hooks.conf.py")
H = b"Host: example.test\r\n"
REQUESTS = [
    b"GET /plain HTTP/1.1\r\n" + H + b"\r\n",
    b"POST /post HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello",
    b"GET /notfound HTTP/1.1\r\n" + H + b"X-Cg-Mode: status:404 Not Found\r\n\r\n",
    b"GET /boom HTTP/1.1\r\n" + H + b"X-Cg-Mode: raise\r\n\r\n",
    b"GET /badcl HTTP/1.1\r\n" + H + b"Content-Length: 1x\r\n\r\n",
    b"GET /plain2 HTTP/1.1\r\n" + H + b"\r\n",
]
DURATION = re.compile(r"(gunicorn\.request\.duration):(\d+\.\d+)\|ms")
TAGS = "env:test,team:web"


class Collector:
    """A StatsD server stand-in: a datagram socket that keeps what arrives."""

    def __init__(self, family=socket.AF_INET, path=None):
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind(path or ("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.lines = []

    @property
    def address(self):
        name = self.sock.getsockname()
        return "%s:%d" % name if isinstance(name, tuple) else "unix:" + name

    def wait_for(self, pred, timeout=15):
        end = time.monotonic() + timeout
        while not pred(self.lines) and time.monotonic() < end:
            try:
                self.lines.append(self.sock.recv(65536).decode("ascii"))
            except socket.timeout:
                pass
        return pred(self.lines)

    def count(self, fragment):
        return sum(fragment in line for line in self.lines)

    def close(self):
        self.sock.close()


def run_with_statsd(server_name, worker_class, extra_args=(), requests=REQUESTS):
    """Starts the server with StatsD pointed at a collector, sends
    `requests`, and returns (collector, server) once every request's
    metrics arrived; the caller stops both."""
    col = Collector()
    srv = start(server_name, ["--statsd-host", col.address, "--statsd-prefix", "cgt",
                              "--dogstatsd-tags", TAGS] + list(extra_args),
                worker_class, app="logapp:app")
    try:
        assert col.wait_for(lambda ls: any("gunicorn.workers" in x for x in ls)), col.lines
        for raw in requests:
            exchange(srv, raw)
        # a request's status metric is its last one
        assert col.wait_for(lambda ls: sum("gunicorn.request.status." in x for x in ls)
                            >= len(requests)), col.lines
        col.wait_for(lambda ls: False, timeout=0.3)  # stragglers (log counters)
    except BaseException:
        srv.stop()
        col.close()
        raise
    return col, srv


def normalized(lines):
    out = []
    for line in lines:
        m = DURATION.search(line)
        if m:
            float(m.group(2))
            line = DURATION.sub(r"\1:<ms>|ms", line)
        out.append(line)
    return collections.Counter(out)


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_metrics_match_upstream(worker_class):
    got = {}
    for name in (CANDIDATE, REFERENCE):
        col, srv = run_with_statsd(name, worker_class, ["-c", HOOKS_CONF])
        try:
            got[name] = normalized(col.lines)
        finally:
            srv.stop()
            col.close()
    cand, ref = got[CANDIDATE], got[REFERENCE]
    assert cand == ref, "only cgunicorn: %s\nonly upstream: %s" % (
        sorted((cand - ref).elements()), sorted((ref - cand).elements()))
    # what the comparison rests on, spelled out
    for status, n in ((200, 3), (404, 1), (500, 1), (400, 1)):
        assert cand["cgt.gunicorn.request.status.%d:1|c|@1.0|#%s" % (status, TAGS)] == n
    assert cand["cgt.gunicorn.requests:1|c|@1.0|#" + TAGS] == len(REQUESTS)
    assert cand["cgt.gunicorn.request.duration:<ms>|ms|#" + TAGS] == len(REQUESTS)
    assert cand["cgt.gunicorn.workers:1|g|#" + TAGS] == 1
    assert cand["cgt.gunicorn.log.exception:1|c|@1.0|#" + TAGS] == 1
    for custom in ("custom.ready:1|g", "custom.dbg:2|c|@1.0", "custom.inc:3|c|@1.0",
                   "custom.dec:-4|c|@1.0", "custom.hist:5|h", "custom.timer:6.5|ms"):
        assert cand["cgt.%s|#%s" % (custom, TAGS)] == 1, custom


@pytest.mark.parametrize("access_log", [True, False], ids=["access-log", "no-access-log"])
def test_asgi_metrics_match_upstream(access_log):
    """Upstream's asgi worker sends request metrics only when an access log
    is configured; cgunicorn always does (docs/compatibility.md)."""
    got = {}
    for name in (CANDIDATE, REFERENCE) if access_log else (CANDIDATE,):
        col = Collector()
        srv = start(name, ["--statsd-host", col.address, "--dogstatsd-tags", TAGS] +
                    (["--access-logfile", os.devnull] if access_log else []), "asgi")
        try:
            for path in (b"/a", b"/b", b"/c"):
                exchange_until(srv, b"GET " + path + b" HTTP/1.1\r\n" + H +
                               b"Connection: close\r\n\r\n", 1)
            # status is the last of a request's three metrics
            assert col.wait_for(lambda ls: sum("gunicorn.request.status." in x
                                               for x in ls) >= 3), (name, col.lines)
            col.wait_for(lambda ls: False, timeout=0.3)
            got[name] = normalized(col.lines)
        finally:
            srv.stop()
            col.close()
    if access_log:
        assert got[CANDIDATE] == got[REFERENCE]
    assert got[CANDIDATE]["gunicorn.request.status.200:1|c|@1.0|#" + TAGS] == 3
    assert got[CANDIDATE]["gunicorn.request.duration:<ms>|ms|#" + TAGS] == 3


def test_worker_gauge_follows_ttin_and_backlog_metric():
    col, srv = run_with_statsd(CANDIDATE, "sync", ["--enable-backlog-metric"], requests=[])
    try:
        assert col.wait_for(lambda ls: any("gunicorn.backlog:" in x for x in ls)), col.lines
        assert any(re.fullmatch(r"cgt\.gunicorn\.backlog:\d+\|h\|#" + TAGS, x)
                   for x in col.lines), col.lines
        srv.signal(signal.SIGTTIN)
        assert col.wait_for(lambda ls: any("gunicorn.workers:2|g" in x for x in ls)), col.lines
    finally:
        srv.stop()
        col.close()


def test_unix_socket_statsd_host():
    with tempfile.TemporaryDirectory(prefix="cgstatsd-") as d:
        col = Collector(socket.AF_UNIX, os.path.join(d, "statsd.sock"))
        srv = start(CANDIDATE, ["--statsd-host", col.address], "sync", app="logapp:app")
        try:
            exchange(srv, REQUESTS[0])
            assert col.wait_for(lambda ls: any("gunicorn.requests:1|c|@1.0" == x
                                               for x in ls)), col.lines
        finally:
            srv.stop()
            col.close()


def test_unresolvable_statsd_host_is_named_and_the_server_serves():
    srv = start(CANDIDATE, ["--statsd-host", "no-such-host.invalid:8125"], "sync",
                app="logapp:app")
    try:
        srv.wait_for_log(r"statsd_host 'no-such-host.invalid:8125': cannot resolve")
        assert b" 200 " in exchange(srv, REQUESTS[0]).split(b"\r\n", 1)[0]
    finally:
        srv.stop()
