"""Dirty calls never fail because the pool is starting or restarting: calls
made as soon as the HTTP port accepts wait for the arbiter and a worker
with the app ready (within their timeout); when the arbiter dies, calls in
flight fail at once with DirtyConnectionError and later calls are served by
the new arbiter."""
import concurrent.futures
import json
import os
import signal
import socket
import time
import urllib.request

import pytest

from conftest import Server
from dirty_support import APPS_DIR, arbiter_pid, wait_until

SLOW = "dirty_slow_import:Slow"


def call(url, action, args=(), timeout=None, http_timeout=60):
    req = {"app": SLOW, "action": action, "args": list(args)}
    if timeout:
        req["timeout"] = timeout
    r = urllib.request.Request(url + "/call", data=json.dumps(req).encode(), method="POST")
    with urllib.request.urlopen(r, timeout=http_timeout) as resp:
        return json.loads(resp.read())


def port_accepts(url):
    host, port = url[len("http://"):].rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=0.2).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("round_", range(3))
def test_calls_at_start_up_wait_for_the_pool(round_):
    srv = Server(["--workers", "2", "--dirty-workers", "1", "--dirty-app", SLOW,
                  "dirty_wsgi:app"], cwd=APPS_DIR)
    try:
        wait_until(lambda: port_accepts(srv.url), 20, "HTTP port accepting")
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(20) as ex:
            futs = []
            for _ in range(20):
                futs.append(ex.submit(call, srv.url, "ping"))
            fired = time.monotonic() - t0
            results = [f.result() for f in futs]
        assert fired < 1.0  # all fired right away (not a pass/fail timing of the server)
        bad = [r for r in results if r.get("result") != "pong"]
        assert bad == [], bad[:3]
    finally:
        srv.stop()


def test_arbiter_killed_under_calls():
    srv = Server(["--workers", "2", "--threads", "1", "--dirty-workers", "1",
                  "--dirty-threads", "4", "--dirty-app", SLOW, "dirty_wsgi:app"],
                 cwd=APPS_DIR, env={"SLOW_IMPORT_SECONDS": "0"})
    try:
        arb = arbiter_pid(srv)
        assert call(srv.url, "ping")["result"] == "pong"
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            inflight = [ex.submit(call, srv.url, "sleep", [5], 30) for _ in range(2)]
            time.sleep(0.5)  # let the calls reach the dirty worker
            t_kill = time.monotonic()
            os.kill(arb, signal.SIGKILL)
            outcomes = [f.result() for f in inflight]
            waited = time.monotonic() - t_kill
        for o in outcomes:
            assert o.get("error", {}).get("type") == "DirtyConnectionError", o
        # The in-flight calls failed when the arbiter died, not when their
        # 30 s timeout or the 5 s sleep ran out.
        assert waited < 4.5, waited
        # New calls are served as soon as the new arbiter is ready: the first
        # ones wait for it rather than failing.
        results = [call(srv.url, "ping", timeout=30) for _ in range(5)]
        assert all(r.get("result") == "pong" for r in results), results
        new_arb = int(srv.wait_for_log(r"Spawned dirty arbiter \(pid: (?!%d\))(\d+)\)" % arb)
                      .group(1))
        assert new_arb != arb
    finally:
        srv.stop()


def test_calls_during_arbiter_restart_wait():
    srv = Server(["--workers", "1", "--dirty-workers", "1", "--dirty-app", SLOW,
                  "dirty_wsgi:app"], cwd=APPS_DIR, env={"SLOW_IMPORT_SECONDS": "1"})
    try:
        arb = arbiter_pid(srv)
        assert call(srv.url, "ping")["result"] == "pong"
        os.kill(arb, signal.SIGKILL)
        # Right after the kill: the new arbiter has to import the app again
        # (1 s); these calls must wait for it, not fail.
        with concurrent.futures.ThreadPoolExecutor(5) as ex:
            results = list(ex.map(lambda _: call(srv.url, "ping", timeout=30), range(5)))
        assert all(r.get("result") == "pong" for r in results), results
    finally:
        srv.stop()
