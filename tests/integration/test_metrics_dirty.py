"""Dirty pool metrics on metrics_bind: calls by app, action and outcome
(ok, app error, timeout, worker died), the call duration histogram, stream
chunks, and /readyz waiting for every dirty app's init()."""
import os
import tempfile

import pytest

from dirty_support import APPS_DIR, COUNTER, call, start, stream
from master_support import wait_until
from test_metrics import Metrics, get, metrics_url

SLOW_INIT = r'''
import os, time
from gunicorn.dirty import DirtyApp

class SlowInit(DirtyApp):
    def init(self):
        flag = os.environ["CG_TEST_INIT_FLAG"]
        deadline = time.monotonic() + 60
        while not os.path.exists(flag) and time.monotonic() < deadline:
            time.sleep(0.02)

    def ping(self):
        return "pong"
'''


def scrape(srv):
    code, body = get(metrics_url(srv), "/metrics")
    assert code == 200
    return Metrics(body)


def test_dirty_calls_counted_by_outcome(server_factory):
    srv = start(server_factory, [COUNTER], workers=1, dirty_workers=1,
                extra=["--metrics-bind", "127.0.0.1:0", "--dirty-timeout", "1"])
    wait_until(lambda: get(metrics_url(srv), "/readyz")[0] == 200, 30, "ready")
    for i in range(3):
        assert "result" in call(srv, COUNTER, "incr")
    for i in range(2):
        assert call(srv, COUNTER, "boom", "x")["error"]["type"] == "DirtyAppError"
    assert call(srv, COUNTER, "sleep", 3)["error"]["type"] == "DirtyTimeoutError"
    wait_until(lambda: "result" in call(srv, COUNTER, "pid"), 30, "a worker again")
    assert call(srv, COUNTER, "die")["error"]["type"] == "DirtyWorkerError"
    wait_until(lambda: "result" in call(srv, COUNTER, "pid"), 30, "a worker again")
    assert len(stream(srv, COUNTER, "count", 5)["chunks"]) == 5
    m = scrape(srv)
    name = "cgunicorn_dirty_calls_total"
    assert m.get(name, app=COUNTER, action="incr", outcome="ok") == 3
    assert m.get(name, app=COUNTER, action="boom", outcome="app_error") == 2
    assert m.get(name, app=COUNTER, action="sleep", outcome="timeout") == 1
    assert m.get(name, app=COUNTER, action="die", outcome="worker_died") == 1
    assert m.get(name, app=COUNTER, action="count", outcome="ok") == 1
    assert m.get("cgunicorn_dirty_stream_chunks_total") == 5
    total = m.get(name)
    assert m.get("cgunicorn_dirty_call_duration_seconds_count") == total
    assert m.get("cgunicorn_dirty_call_duration_seconds_bucket", le="+Inf") == total
    assert m.get("cgunicorn_dirty_queue_depth") == 0
    wait_until(lambda: scrape(srv).get("cgunicorn_dirty_busy_workers") == 0, 10, "idle")


def test_readyz_waits_for_dirty_init(server_factory):
    with tempfile.TemporaryDirectory(prefix="cgmetd-") as d:
        with open(os.path.join(d, "slow_init_app.py"), "w") as f:
            f.write(SLOW_INIT)
        flag = os.path.join(d, "go")
        env = {"CG_TEST_INIT_FLAG": flag,
               "PYTHONPATH": d + os.pathsep + os.environ.get("PYTHONPATH", "")}
        srv = server_factory(["--workers", "1", "--dirty-workers", "1", "--dirty-app",
                              "slow_init_app:SlowInit", "--metrics-bind", "127.0.0.1:0",
                              "dirty_wsgi:app"], cwd=APPS_DIR, env=env)
        url = metrics_url(srv)
        srv.wait_for_log(r"Booting worker with pid")
        # The HTTP worker boots at once; the dirty app's init() holds.
        wait_until(lambda: get(url, "/readyz") == (503, "dirty apps are initializing\n"),
                   30, "/readyz waiting on dirty init")
        open(flag, "w").close()
        wait_until(lambda: get(url, "/readyz")[0] == 200, 30, "/readyz 200 after init")
        assert call(srv, "slow_init_app:SlowInit", "ping") == {"result": "pong"}


def test_readyz_waits_again_after_the_arbiter_dies(server_factory):
    import signal
    from dirty_support import arbiter_pid
    srv = start(server_factory, [COUNTER], workers=1, dirty_workers=1,
                extra=["--metrics-bind", "127.0.0.1:0"])
    url = metrics_url(srv)
    wait_until(lambda: get(url, "/readyz")[0] == 200, 30, "ready")
    assert call(srv, COUNTER, "incr")["result"]["n"] == 1
    os.kill(arbiter_pid(srv), signal.SIGKILL)
    wait_until(lambda: len(__import__("re").findall(r"Spawned dirty arbiter", srv.log())) >= 2,
               30, "a new arbiter")
    wait_until(lambda: get(url, "/readyz")[0] == 200, 30, "ready again")
    m = scrape(srv)
    assert m.get("cgunicorn_dirty_calls_total", app=COUNTER, action="incr", outcome="ok") == 1
