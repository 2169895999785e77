"""Prometheus metrics on metrics_bind: the master serves /metrics from the
shared region the workers count into, /healthz and /readyz. Every scrape is
parsed with prometheus_client's text parser (pinned in requirements-test.txt)
and checked against a strict reading of the 0.0.4 format."""
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest
import requests

from master_support import alive, children, read_pid, wait_until

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # the strict parser below still checks everything
    text_string_to_metric_families = None

HERE = os.path.dirname(os.path.abspath(__file__))
METRICS_RE = re.compile(r"Serving metrics at: (\S+)")

WSGI_APP = r'''
import os, time

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/slow":
        flag = environ.get("HTTP_X_FLAG", "")
        deadline = time.monotonic() + 30
        while flag and not os.path.exists(flag) and time.monotonic() < deadline:
            time.sleep(0.02)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slow"]
    if path == "/missing":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no"]
    if path == "/teapot":
        start_response("418 I'm a teapot", [("Content-Type", "text/plain")])
        return [b"tea"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
'''

ASGI_APP = r'''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})
'''

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def strict_parse(text):
    """{(name, frozenset(labels)): value}; fails on anything the 0.0.4
    format does not allow (and on a sample whose family has no TYPE)."""
    assert text.endswith("\n")
    types, out = {}, {}
    for line in text.split("\n")[:-1]:
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in types, "family %s typed twice" % name
            types[name] = kind
            continue
        m = SAMPLE.match(line)
        assert m, "bad sample line %r" % line
        name, _, labels, value = m.groups()
        lab = {}
        if labels:
            pos = 0
            while pos < len(labels):
                lm = LABEL.match(labels, pos)
                assert lm, "bad labels in %r" % line
                lab[lm.group(1)] = lm.group(2)
                pos = lm.end()
        base = re.sub(r"_(bucket|sum|count|total)$", "", name)
        assert name in types or base in types or base + "_total" in types, line
        key = (name, frozenset(lab.items()))
        assert key not in out, "duplicate sample %r" % line
        out[key] = float(value)
    return out


class Metrics:
    def __init__(self, text):
        self.text = text
        self.samples = strict_parse(text)
        if text_string_to_metric_families is not None:
            self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def get(self, name, **labels):
        want = set(labels.items())
        return sum(v for (n, lab), v in self.samples.items() if n == name and want <= set(lab))

    def series(self, name):
        return [(dict(lab), v) for (n, lab), v in self.samples.items() if n == name]


def metrics_url(srv):
    return srv.wait_for_log(METRICS_RE.pattern).group(1)


def get(url, path, timeout=10):
    if url.startswith("unix:"):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(timeout)
        s.connect(url[5:])
        s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), body.decode()
    r = requests.get(url + path, timeout=timeout)
    return r.status_code, r.text


def scrape(srv):
    code, body = get(metrics_url(srv), "/metrics")
    assert code == 200
    return Metrics(body)


@pytest.fixture
def appdir():
    with tempfile.TemporaryDirectory(prefix="cgmet-") as d:
        with open(os.path.join(d, "metapp.py"), "w") as f:
            f.write(WSGI_APP)
        with open(os.path.join(d, "metasgi.py"), "w") as f:
            f.write(ASGI_APP)
        yield d


def start(server_factory, appdir, extra=(), app="metapp:app", workers=2,
          bind="127.0.0.1:0"):
    srv = server_factory(["--workers", str(workers), "--metrics-bind", bind] + list(extra) +
                         [app], cwd=appdir)
    wait_ready(srv)
    return srv


def wait_ready(srv, timeout=30):
    url = metrics_url(srv)
    wait_until(lambda: get(url, "/readyz")[0] == 200, timeout, "/readyz 200")


def worker_pids(m):
    return sorted(int(lab["pid"]) for lab, _ in m.series("cgunicorn_worker_busy"))


def test_300_requests_over_two_workers_counted_exactly(server_factory, appdir):
    srv = start(server_factory, appdir)
    for i in range(300):
        r = requests.get(srv.url + "/", timeout=10)  # a new connection each
        assert r.status_code == 200
    m = scrape(srv)
    assert m.get("cgunicorn_requests_total") == 300
    assert m.get("cgunicorn_requests_total", method="GET", status="200") == 300
    assert len(worker_pids(m)) == 2
    assert m.get("cgunicorn_worker_requests_served_total") == 300
    assert m.get("cgunicorn_requests_in_flight") == 0
    assert m.get("cgunicorn_workers") == 2
    if text_string_to_metric_families is not None:
        fam = m.families["cgunicorn_requests"]
        assert fam.type == "counter"
        assert sum(s.value for s in fam.samples if s.name == "cgunicorn_requests_total") == 300


def test_histogram_buckets_cumulative_and_match_count(server_factory, appdir):
    srv = start(server_factory, appdir)
    for path in ["/"] * 20 + ["/missing"] * 5:
        requests.get(srv.url + path, timeout=10)
    m = scrape(srv)
    name = "cgunicorn_request_duration_seconds"
    buckets = sorted(((float(lab["le"]), v) for lab, v in m.series(name + "_bucket")),
                     key=lambda x: x[0])
    assert buckets[-1][0] == float("inf")
    values = [v for _, v in buckets]
    assert values == sorted(values), "buckets are not cumulative"
    assert buckets[-1][1] == m.get(name + "_count") == 25
    assert m.get(name + "_sum") > 0
    assert m.get("cgunicorn_requests_total", status="404") == 5
    if text_string_to_metric_families is not None:
        assert m.families[name].type == "histogram"


def test_unknown_status_and_method_are_bounded(server_factory, appdir):
    srv = start(server_factory, appdir, workers=1)
    requests.get(srv.url + "/teapot", timeout=10)
    requests.request("BREW", srv.url + "/", timeout=10)
    m = scrape(srv)
    assert m.get("cgunicorn_requests_total", method="GET", status="other") == 1
    assert m.get("cgunicorn_requests_total", method="other", status="200") == 1


def test_killed_worker_total_stays_and_restart_counted(server_factory, appdir):
    srv = start(server_factory, appdir)
    for i in range(100):
        requests.get(srv.url + "/", timeout=10)
    m = scrape(srv)
    assert m.get("cgunicorn_requests_total") == 100
    before = worker_pids(m)
    os.kill(before[0], signal.SIGKILL)
    wait_until(lambda: len(set(worker_pids(scrape(srv))) - set(before)) == 1, 20,
               "a replacement worker")
    wait_ready(srv)
    m = scrape(srv)
    assert m.get("cgunicorn_requests_total") == 100
    assert m.get("cgunicorn_worker_restarts_total", cause="crash") == 1
    assert m.get("cgunicorn_worker_restarts_total", cause="timeout") == 0
    for i in range(50):
        requests.get(srv.url + "/", timeout=10)
    m = scrape(srv)
    assert m.get("cgunicorn_requests_total") == 150
    assert m.get("cgunicorn_request_duration_seconds_count") == 150


def test_max_requests_restarts_counted(server_factory, appdir):
    srv = start(server_factory, appdir, extra=["--max-requests", "5"], workers=1)
    for i in range(12):
        requests.get(srv.url + "/", timeout=10)
    wait_until(lambda: scrape(srv).get("cgunicorn_worker_restarts_total",
                                       cause="max_requests") >= 2, 20, "two recycles")
    assert scrape(srv).get("cgunicorn_requests_total") == 12


@pytest.mark.parametrize("worker_class,app", [("gthread", "metapp:app"),
                                              ("asgi", "metasgi:app")])
def test_keepalive_classes_count(server_factory, appdir, worker_class, app):
    srv = start(server_factory, appdir, extra=["--worker-class", worker_class], app=app)
    with requests.Session() as s:
        for i in range(120):
            assert s.get(srv.url + "/", timeout=10).status_code == 200
    m = scrape(srv)
    assert m.get("cgunicorn_requests_total", method="GET", status="200") == 120
    assert m.get("cgunicorn_request_duration_seconds_count") == 120
    wait_until(lambda: scrape(srv).get("cgunicorn_requests_in_flight") == 0, 10, "idle")


def test_queue_time_from_x_request_start(server_factory, appdir):
    srv = start(server_factory, appdir, workers=1)
    now = time.time()
    for hdr in ("t=%d" % int((now - 0.2) * 1e6), "t=%d" % int((now - 0.2) * 1e3),
                "t=%.3f" % (now - 0.2)):
        requests.get(srv.url + "/", headers={"X-Request-Start": hdr}, timeout=10)
    requests.get(srv.url + "/", headers={"X-Request-Start": "garbage"}, timeout=10)
    requests.get(srv.url + "/", timeout=10)
    m = scrape(srv)
    assert m.get("cgunicorn_request_queue_seconds_count") == 3
    assert m.get("cgunicorn_request_queue_seconds_sum") >= 0.6
    assert m.get("cgunicorn_request_queue_seconds_bucket", le="0.1") == 0


def test_health_ready_and_unknown_paths(server_factory, appdir):
    srv = start(server_factory, appdir)
    url = metrics_url(srv)
    assert get(url, "/healthz") == (200, "ok\n")
    assert get(url, "/readyz") == (200, "ok\n")
    assert get(url, "/nope")[0] == 404
    r = requests.post(url + "/metrics", timeout=10)
    assert r.status_code == 405
    m = scrape(srv)
    assert "cgunicorn_dirty_calls_total" not in m.text  # no dirty apps configured


def test_unix_socket_bind(server_factory, appdir):
    path = os.path.join(appdir, "metrics.sock")
    srv = start(server_factory, appdir, bind="unix:" + path, workers=1)
    assert metrics_url(srv) == "unix:" + path
    requests.get(srv.url + "/", timeout=10)
    code, body = get("unix:" + path, "/metrics")
    assert code == 200 and Metrics(body).get("cgunicorn_requests_total") == 1
    srv.stop()
    assert not os.path.exists(path)


def test_slow_scraper_does_not_block_supervision(server_factory, appdir):
    srv = start(server_factory, appdir)
    host, port = metrics_url(srv)[len("http://"):].rsplit(":", 1)
    idle = [socket.create_connection((host, int(port))) for _ in range(20)]  # never send
    try:
        assert get(metrics_url(srv), "/healthz", timeout=10)[0] == 200
        pid = worker_pids(scrape(srv))[0]
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: pid not in worker_pids(scrape(srv)) and
                   len(worker_pids(scrape(srv))) == 2, 20, "replacement despite idle scrapers")
    finally:
        for s in idle:
            s.close()


def test_readyz_503_while_draining_on_term(server_factory, appdir):
    srv = start(server_factory, appdir, workers=1, extra=["--graceful-timeout", "30"])
    url = metrics_url(srv)
    flag = os.path.join(appdir, "release")
    result = {}

    def slow():
        r = requests.get(srv.url + "/slow", headers={"X-Flag": flag}, timeout=60)
        result["status"] = r.status_code

    t = threading.Thread(target=slow)
    t.start()
    wait_until(lambda: scrape(srv).get("cgunicorn_requests_in_flight") == 1, 10, "in flight")
    srv.signal(signal.SIGTERM)
    wait_until(lambda: get(url, "/readyz")[0] == 503, 10, "/readyz 503 while draining")
    assert get(url, "/readyz")[1] == "shutting down\n"
    open(flag, "w").close()
    t.join(30)
    assert result.get("status") == 200
    srv.proc.wait(30)


USER_APP = r'''
import os
from cgunicorn import metrics

HITS = metrics.counter("app_hits_total", "Pages served", ["page"])
UP = metrics.gauge("app_workers_up", "Workers that imported the app")
WORK = metrics.histogram("app_work_seconds", "Work per request")
PLAIN = metrics.counter("app_plain", "No _total suffix given")
UP.set(1)

def app(environ, start_response):
    HITS.labels(page=environ["PATH_INFO"]).inc()
    HITS.labels(environ["PATH_INFO"] + '"q\\').inc(0.5)
    WORK.observe(0.002)
    PLAIN.inc()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("X-Pid", str(os.getpid()))])
    return [b"ok"]
'''


def test_python_api_summed_over_two_workers(server_factory, appdir):
    with open(os.path.join(appdir, "userapp.py"), "w") as f:
        f.write(USER_APP)
    srv = start(server_factory, appdir, app="userapp:app")
    pids = set()
    for i in range(100):
        r = requests.get(srv.url + ("/a" if i % 4 else "/b"), timeout=10)
        pids.add(r.headers["X-Pid"])
    m = scrape(srv)
    assert m.get("app_hits_total", page="/a") == 75
    assert m.get("app_hits_total", page="/b") == 25
    assert m.get("app_hits_total", page='/a\\"q\\\\') == 37.5
    assert m.get("app_plain_total") == 100
    assert m.get("app_workers_up") == 2
    assert m.get("app_work_seconds_count") == 100
    assert m.get("app_work_seconds_bucket", le="0.0025") == 100
    assert m.get("app_work_seconds_bucket", le="0.001") == 0
    assert abs(m.get("app_work_seconds_sum") - 0.2) < 1e-6
    if text_string_to_metric_families is not None:
        fams = m.families
        assert fams["app_hits"].type == "counter"
        assert fams["app_work_seconds"].type == "histogram"
        assert fams["app_workers_up"].type == "gauge"
    # A worker that dies keeps its counts; its gauge goes with it.
    os.kill(int(sorted(pids)[0]), signal.SIGKILL)
    wait_until(lambda: scrape(srv).get("cgunicorn_worker_restarts_total", cause="crash") == 1
               and get(metrics_url(srv), "/readyz")[0] == 200, 20, "replacement")
    m = scrape(srv)
    assert m.get("app_hits_total", page="/a") == 75
    assert m.get("app_workers_up") == 2  # the replacement imported the app too


def test_python_api_without_metrics_bind_is_a_noop(server_factory, appdir):
    with open(os.path.join(appdir, "userapp.py"), "w") as f:
        f.write(USER_APP)
    srv = server_factory(["--workers", "1", "userapp:app"], cwd=appdir)
    assert requests.get(srv.url + "/a", timeout=10).status_code == 200


SLOW_BOOT_APP = r'''
import os, time
deadline = time.monotonic() + 60
while not os.path.exists(os.environ["CG_TEST_BOOT_FLAG"]) and time.monotonic() < deadline:
    time.sleep(0.02)

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"booted"]
'''


def test_readyz_503_until_http_workers_boot(server_factory, appdir):
    with open(os.path.join(appdir, "slowboot.py"), "w") as f:
        f.write(SLOW_BOOT_APP)
    flag = os.path.join(appdir, "boot")
    srv = server_factory(["--workers", "2", "--metrics-bind", "127.0.0.1:0", "slowboot:app"],
                         cwd=appdir, env={"CG_TEST_BOOT_FLAG": flag})
    url = metrics_url(srv)
    assert get(url, "/readyz") == (503, "workers are booting\n")
    assert get(url, "/healthz")[0] == 200  # alive, heartbeating, not ready
    open(flag, "w").close()
    wait_until(lambda: get(url, "/readyz")[0] == 200, 30, "/readyz 200 once booted")


def test_hup_counts_reload_restarts(server_factory, appdir):
    srv = start(server_factory, appdir)
    for i in range(10):
        requests.get(srv.url + "/", timeout=10)
    srv.signal(signal.SIGHUP)
    wait_until(lambda: scrape(srv).get("cgunicorn_worker_restarts_total", cause="reload") == 2,
               20, "two reload restarts")
    wait_ready(srv)
    m = scrape(srv)
    assert m.get("cgunicorn_requests_total") == 10
    assert m.get("cgunicorn_worker_restarts_total", cause="crash") == 0
    assert m.get("cgunicorn_worker_restarts_total", cause="max_requests") == 0


def test_backlog_and_busy_while_a_sync_worker_is_held(server_factory, appdir):
    srv = start(server_factory, appdir, workers=1)
    flag = os.path.join(appdir, "release-backlog")
    t = threading.Thread(target=lambda: requests.get(
        srv.url + "/slow", headers={"X-Flag": flag}, timeout=60))
    t.start()
    waiting = []
    try:
        wait_until(lambda: scrape(srv).get("cgunicorn_worker_busy") == 1, 10, "busy worker")
        for i in range(3):  # accepted by the kernel, not by the held worker
            waiting.append(socket.create_connection(("127.0.0.1", srv.port)))
        wait_until(lambda: scrape(srv).get("cgunicorn_listen_backlog") == 3, 10,
                   "3 connections in the accept queue")
        m = scrape(srv)
        assert m.get("cgunicorn_requests_in_flight") == 1
        (lab, _), = m.series("cgunicorn_listen_backlog")
        assert lab["listener"] == srv.url
    finally:
        open(flag, "w").close()
        for s in waiting:
            s.close()
        t.join(30)
    wait_until(lambda: scrape(srv).get("cgunicorn_worker_busy") == 0, 10, "idle worker")


def test_head_gives_the_head_only(server_factory, appdir):
    srv = start(server_factory, appdir, workers=1)
    host, port = metrics_url(srv)[len("http://"):].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("HEAD", "/metrics")
    r = conn.getresponse()
    assert r.status == 200 and int(r.headers["Content-Length"]) > 0 and r.read() == b""
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")


# ---- gevent and HTTP/2 requests are counted too ----

def test_gevent_requests_counted(server_factory, appdir):
    srv = start(server_factory, appdir, extra=["--worker-class", "gevent",
                                               "--worker-connections", "50"])
    with requests.Session() as s:
        for i in range(60):
            assert s.get(srv.url + ("/missing" if i % 3 == 0 else "/"), timeout=10).status_code
    m = scrape(srv)
    assert m.get("cgunicorn_requests_total", method="GET", status="200") == 40
    assert m.get("cgunicorn_requests_total", method="GET", status="404") == 20
    assert m.get("cgunicorn_request_duration_seconds_count") == 60
    wait_until(lambda: scrape(srv).get("cgunicorn_requests_in_flight") == 0, 10, "idle")


@pytest.mark.parametrize("worker_class,app", [("gthread", "metapp:app"),
                                              ("asgi", "metasgi:app")])
def test_http2_streams_counted(server_factory, appdir, worker_class, app):
    """h2c with prior knowledge: h2load's 100 requests over 10 streams of
    one connection, then httpx's POSTs, each stream one request."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("h2")
    srv = start(server_factory, appdir, workers=1, app=app,
                extra=["--worker-class", worker_class, "--threads", "4",
                       "--http-protocols", "h2,h1", "--http2-cleartext", "prior-knowledge"])
    h2load = shutil.which("h2load")
    gets = 0
    if h2load is not None:
        r = subprocess.run([h2load, "-n", "100", "-c", "1", "-m", "10", srv.url + "/"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "100 succeeded" in r.stdout, r.stdout + r.stderr
        gets = 100
    with httpx.Client(http2=True, http1=False, timeout=20) as c:
        for i in range(7):
            resp = c.post(srv.url + "/", content=b"x" * 10)
            assert resp.status_code == 200 and resp.http_version == "HTTP/2"
    m = scrape(srv)
    assert m.get("cgunicorn_requests_total", method="GET", status="200") == gets
    assert m.get("cgunicorn_requests_total", method="POST", status="200") == 7
    assert m.get("cgunicorn_request_duration_seconds_count") == gets + 7
    wait_until(lambda: scrape(srv).get("cgunicorn_requests_in_flight") == 0, 10, "idle")


# ---- USR2: the new master serves on the old master's metrics listener ----

def new_master(pidfile):
    return wait_until(lambda: read_pid(pidfile + ".2"), 30, "the new master's pid file")


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_usr2_new_master_serves_the_same_metrics_listener(server_factory, appdir, kind):
    """The metrics listener travels to the new master like the HTTP ones
    (CGUNICORN_METRICS_FD beside GUNICORN_FD): after QUIT to the old master
    the same address answers, from the new master, with its workers, and
    /readyz never said 503 during the handoff (the old master stops serving
    its copy instead of draining it)."""
    pidfile = os.path.join(appdir, "m.pid")
    bind = "127.0.0.1:0" if kind == "tcp" else "unix:" + os.path.join(appdir, "met.sock")
    srv = start(server_factory, appdir, workers=1, bind=bind, extra=["-p", pidfile])
    url = metrics_url(srv)
    old = srv.proc.pid
    for i in range(3):
        requests.get(srv.url + "/", timeout=10)
    assert scrape(srv).get("cgunicorn_requests_total") == 3
    os.kill(old, signal.SIGUSR2)
    new = new_master(pidfile)
    try:
        wait_until(lambda: len([c for c in children(new)]) == 1, 30, "the new master's worker")
        wait_until(lambda: srv.log().count("Serving metrics at: " + url) == 2, 20,
                   "the new master serving metrics at " + url)
        assert "metrics_bind" not in srv.log()
        codes = []
        stop = threading.Event()

        def probe():
            while not stop.is_set():
                try:
                    r = get(url, "/readyz", timeout=10)
                    codes.append(r[0] if r[0] == 200 else r)
                except OSError as e:
                    codes.append(repr(e))
        t = threading.Thread(target=probe)
        t.start()
        try:
            os.kill(old, signal.SIGQUIT)
            srv.proc.wait(30)
            wait_until(lambda: read_pid(pidfile) == new, 20, "the new master promoted")
            n = len(codes)
            wait_until(lambda: len(codes) > n + 5, 20, "probes after the handoff")
        finally:
            stop.set()
            t.join(30)
        assert codes and set(codes) == {200}, codes
        if kind == "unix":
            assert os.path.exists(url[5:])
        m = scrape(srv)
        assert worker_pids(m) == children(new)
        requests.get(srv.url + "/", timeout=10)
        assert scrape(srv).get("cgunicorn_requests_total") == 1  # the new master's count
    finally:
        os.kill(new, signal.SIGTERM)
        wait_until(lambda: not alive(new), 30, "the new master gone")
    if kind == "unix":
        assert not os.path.exists(url[5:])  # the promoted master owns the path


def test_usr2_with_another_metrics_bind_binds_it(server_factory, appdir):
    """A new master whose metrics_bind differs (a new config) binds its own
    address and drops the old master's socket."""
    pidfile = os.path.join(appdir, "m.pid")
    conf = os.path.join(appdir, "met.conf.py")
    a, b = os.path.join(appdir, "a.sock"), os.path.join(appdir, "b.sock")
    with open(conf, "w") as f:
        f.write("metrics_bind = %r\nworkers = 1\n" % ("unix:" + a))
    srv = server_factory(["-c", conf, "-p", pidfile, "metapp:app"], cwd=appdir)
    wait_ready(srv)
    with open(conf, "w") as f:
        f.write("metrics_bind = %r\nworkers = 1\n" % ("unix:" + b))
    os.kill(srv.proc.pid, signal.SIGUSR2)
    new = new_master(pidfile)
    try:
        srv.wait_for_log("Serving metrics at: unix:" + b)
        wait_until(lambda: len(children(new)) == 1, 30, "the new master's worker")
        wait_until(lambda: get("unix:" + b, "/readyz")[0] == 200, 20, "b ready")
        assert get("unix:" + a, "/healthz")[0] == 200  # the old master still serves a
        os.kill(srv.proc.pid, signal.SIGQUIT)
        srv.proc.wait(30)
        assert worker_pids(Metrics(get("unix:" + b, "/metrics")[1])) == children(new)
    finally:
        os.kill(new, signal.SIGTERM)
        wait_until(lambda: not alive(new), 30, "the new master gone")


# ---- HUP moves metrics_bind ----

def write_conf(path, **settings):
    with open(path, "w") as f:
        for k, v in settings.items():
            f.write("%s = %r\n" % (k, v))


def hup_and_wait(srv, pattern, nth):
    """HUP, then wait for the nth occurrence of `pattern` in the log."""
    srv.signal(signal.SIGHUP)
    wait_until(lambda: len(re.findall(pattern, srv.log())) >= nth, 20, pattern)


def test_hup_moves_metrics_bind(server_factory, appdir):
    conf = os.path.join(appdir, "met.conf.py")
    a, b = os.path.join(appdir, "a.sock"), os.path.join(appdir, "b.sock")
    write_conf(conf, workers=1, metrics_bind="unix:" + a)
    srv = server_factory(["-c", conf, "metapp:app"], cwd=appdir)
    wait_until(lambda: os.path.exists(a) and get("unix:" + a, "/readyz")[0] == 200, 30, "a")
    for i in range(4):
        requests.get(srv.url + "/", timeout=10)
    # a -> b: the old address closes (its file goes), the counts carry on.
    write_conf(conf, workers=1, metrics_bind="unix:" + b)
    hup_and_wait(srv, re.escape("Serving metrics at: unix:" + b), 1)
    assert not os.path.exists(a)
    assert Metrics(get("unix:" + b, "/metrics")[1]).get("cgunicorn_requests_total") == 4
    # A value that cannot be bound keeps b, and says why.
    bad = os.path.join(appdir, "no-such-dir", "c.sock")
    write_conf(conf, workers=1, metrics_bind="unix:" + bad)
    hup_and_wait(srv, "metrics_bind 'unix:%s'.*keeping unix:%s" % (re.escape(bad), re.escape(b)),
                 1)
    assert get("unix:" + b, "/healthz")[0] == 200
    # Retried on the next HUP (the running value is still b), then fixed: TCP.
    write_conf(conf, workers=1, metrics_bind="127.0.0.1:0")
    hup_and_wait(srv, r"Serving metrics at: http://127\.0\.0\.1:\d+", 1)
    assert not os.path.exists(b)
    url = re.findall(r"Serving metrics at: (http://\S+)", srv.log())[-1]
    requests.get(srv.url + "/", timeout=10)
    wait_until(lambda: Metrics(get(url, "/metrics")[1]).get("cgunicorn_requests_total") == 5,
               20, "5 requests counted")
    # Unset: no metrics listener any more.
    write_conf(conf, workers=1)
    hup_and_wait(srv, "Stopped serving metrics at: " + re.escape(url), 1)
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/healthz", timeout=5)


def test_hup_turns_metrics_on(server_factory, appdir):
    """metrics_bind set by a HUP: the region is mapped then, and the
    workers the HUP starts count into it."""
    conf = os.path.join(appdir, "met.conf.py")
    a = os.path.join(appdir, "a.sock")
    write_conf(conf, workers=2)
    srv = server_factory(["-c", conf, "metapp:app"], cwd=appdir)
    requests.get(srv.url + "/", timeout=10)
    write_conf(conf, workers=2, metrics_bind="unix:" + a)
    hup_and_wait(srv, re.escape("Serving metrics at: unix:" + a), 1)
    wait_until(lambda: get("unix:" + a, "/readyz")[0] == 200, 30, "/readyz 200")
    for i in range(6):
        requests.get(srv.url + "/", timeout=10)
    m = Metrics(get("unix:" + a, "/metrics")[1])
    assert m.get("cgunicorn_requests_total") == 6
    assert len(worker_pids(m)) == 2
