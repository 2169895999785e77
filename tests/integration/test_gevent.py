"""The gevent worker (-k gevent): gevent is patched in before the app loads,
connections are served by greenlets that wait cooperatively, and
worker_connections, keep-alive, max_requests, the graceful stop and dirty
calls behave as in gunicorn's gevent worker. Concurrency is shown by what
the app counts (requests in flight at once in one worker), never by timing.
The WSGI side-by-side suite runs with gevent too (CG_TEST_WORKERS)."""
import http.client
import json
import os
import signal
import socket
import threading
import time

import pytest

from conftest import ROOT, run_cmd
from master_support import wait_until

APPS = os.path.join(ROOT, "tests", "apps", "gevent")
DIRTY_APPS = os.path.join(ROOT, "tests", "apps", "dirty")


def start(server_factory, *args, env=None):
    return server_factory(["-k", "gevent", "--workers", "1"] + list(args) + ["geventapp:app"],
                          cwd=APPS, env=env)


def get(srv, path, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def get_json(srv, path):
    status, _, body = get(srv, path)
    assert status == 200, body
    return json.loads(body)


def many(srv, path, n):
    """n concurrent GETs (one connection each); returns their statuses."""
    out = [None] * n

    def one(i):
        try:
            out[i] = get(srv, path, timeout=60)[0]
        except Exception as e:  # noqa: BLE001 - reported by the assert
            out[i] = repr(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    return out


def test_gevent_is_patched_before_the_app_and_environ_is_gunicorns(server_factory):
    srv = start(server_factory)
    env = get_json(srv, "/env")
    assert env["socket_patched"] and env["time_patched"] and env["threading_patched"]
    assert env["socket_is_gevent"] and env["local_is_gevent"]
    assert env["socket_module"].startswith("gevent")  # gunicorn.socket, as upstream
    assert env["multithread"] is True  # gunicorn's AsyncWorker sets it
    assert env["multiprocess"] is False and env["run_once"] is False
    assert env["file_wrapper"]
    assert "Using worker: gevent" in srv.log()


def test_many_slow_requests_are_served_at_once_by_one_worker(server_factory):
    srv = start(server_factory)
    # each request sleeps 0.3 s once 50 are in flight: a worker that served
    # them one at a time would never see more than one
    statuses = many(srv, "/slow?s=0.3&n=50", 100)
    assert statuses == [200] * 100
    stats = get_json(srv, "/stats")
    assert stats["done"] == 100
    assert stats["peak"] >= 50, stats


def test_worker_connections_caps_concurrent_connections(server_factory):
    srv = start(server_factory, "--worker-connections", "4")
    statuses = many(srv, "/slow?s=0.2", 12)
    assert statuses == [200] * 12
    stats = get_json(srv, "/stats")
    assert stats["done"] == 12
    assert 2 <= stats["peak"] <= 4, stats


def test_keepalive_serves_several_requests_then_closes_when_idle(server_factory):
    srv = start(server_factory, "--keep-alive", "1")
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        answers = b""
        for _ in range(3):
            s.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
            while answers.count(b"HTTP/1.1 200 OK") < _ + 1 or not answers.endswith(b"}"):
                chunk = s.recv(65536)
                assert chunk, answers
                answers += chunk
        assert answers.count(b"HTTP/1.1 200 OK") == 3
        assert b"Connection: close" not in answers
        # idle past keepalive: the server closes (EOF), the client did not
        s.settimeout(15)
        assert s.recv(100) == b""
    finally:
        s.close()


def test_keepalive_zero_closes_after_each_response(server_factory):
    srv = start(server_factory, "--keep-alive", "0")
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        s.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in data
    finally:
        s.close()


def test_chunked_file_wrapper_and_100_continue(server_factory):
    srv = start(server_factory)
    status, headers, body = get(srv, "/chunked")
    assert status == 200 and body == b"one two three"
    assert headers.get("Transfer-Encoding") == "chunked"
    status, _, body = get(srv, "/file")
    with open(os.path.join(APPS, "geventapp.py"), "rb") as f:
        assert status == 200 and body == f.read()
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        first = s.recv(100)
        assert first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), first
        s.sendall(b"hello")
        data = first[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
        while not data.endswith(b"hello"):
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK")
    finally:
        s.close()


def test_term_waits_for_requests_in_flight(server_factory):
    srv = start(server_factory, "--graceful-timeout", "30")
    results = []
    threads = [threading.Thread(target=lambda: results.append(get(srv, "/slow?s=1.5")[0]))
               for _ in range(5)]
    for t in threads:
        t.start()
    wait_until(lambda: get_json(srv, "/stats")["inflight"] == 5, 20, "5 requests in flight")
    srv.signal(signal.SIGTERM)
    for t in threads:
        t.join(30)
    assert results == [200] * 5
    srv.proc.wait(30)
    assert "Worker graceful timeout" not in srv.log()


def test_term_ends_idle_kept_alive_connections_without_waiting_for_keepalive(server_factory):
    srv = start(server_factory, "--keep-alive", "60", "--graceful-timeout", "30")
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=60)
    try:
        s.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while not data.endswith(b"}"):
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
        assert b"Connection: close" not in data
        srv.signal(signal.SIGTERM)
        assert s.recv(100) == b""  # the idle connection gets a FIN
    finally:
        s.close()
    srv.proc.wait(60)
    assert "Worker graceful timeout" not in srv.log()


def test_graceful_timeout_cuts_what_is_still_running(server_factory):
    srv = start(server_factory, "--graceful-timeout", "1")
    out = []
    t = threading.Thread(target=lambda: out.extend(many(srv, "/slow?s=30", 1)))
    t.start()
    wait_until(lambda: get_json(srv, "/stats")["inflight"] == 1, 20, "a request in flight")
    srv.signal(signal.SIGTERM)
    srv.proc.wait(20)
    t.join(30)
    assert out and out[0] != 200, out
    # the worker's own deadline and the master's KILL race (both are
    # graceful_timeout), as in gunicorn: either one ends it
    log = srv.log()
    assert "Worker graceful timeout" in log or "was sent SIGKILL" in log, log


def test_hup_replaces_the_worker_after_its_requests_finish(server_factory):
    srv = start(server_factory, "--graceful-timeout", "30")
    old = get_json(srv, "/stats")["pid"]
    results = []
    threads = [threading.Thread(target=lambda: results.append(get(srv, "/slow?s=1.5")[0]))
               for _ in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: get_json(srv, "/stats")["inflight"] == 3, 20, "3 requests in flight")
    srv.signal(signal.SIGHUP)
    for t in threads:
        t.join(30)
    assert results == [200] * 3
    wait_until(lambda: get_json(srv, "/stats")["pid"] != old, 30, "a new worker")
    assert "Worker graceful timeout" not in srv.log()


def test_quit_stops_quickly_delivering_what_finishes(server_factory):
    srv = start(server_factory)
    results = []
    t = threading.Thread(target=lambda: results.append(get(srv, "/slow?s=0.2")[0]))
    t.start()
    wait_until(lambda: get_json(srv, "/stats")["inflight"] == 1, 20, "a request in flight")
    srv.signal(signal.SIGQUIT)
    t.join(30)
    assert results == [200]
    srv.proc.wait(20)


def test_heartbeat_goes_on_while_greenlets_wait(server_factory):
    srv = start(server_factory, "--timeout", "3")
    # each request outlives the timeout twice, cooperatively: the worker stays
    statuses = many(srv, "/slow?s=6.5", 5)
    assert statuses == [200] * 5
    assert "WORKER TIMEOUT" not in srv.log()


def test_a_blocked_hub_is_aborted_after_timeout(server_factory):
    srv = start(server_factory, "--timeout", "2")
    first = get_json(srv, "/stats")["pid"]
    many(srv, "/block?s=60", 1)  # cut when the worker is aborted
    srv.wait_for_log(r"WORKER TIMEOUT \(pid:%d\)" % first, 30)
    wait_until(lambda: get_json(srv, "/stats")["pid"] != first, 30, "a new worker")


def test_max_requests_restarts_the_worker(server_factory):
    srv = start(server_factory, "--max-requests", "3")
    first = get_json(srv, "/stats")["pid"]
    for _ in range(2):
        get(srv, "/stats")
    srv.wait_for_log(r"Autorestarting worker after current request")
    wait_until(lambda: get_json(srv, "/stats")["pid"] != first, 30, "a new worker")


def test_dirty_calls_from_greenlets_overlap(server_factory):
    srv = start(server_factory, "--dirty-workers", "2", "--dirty-app", "dirty_testapps:Counter",
                env={"PYTHONPATH": DIRTY_APPS})
    srv.wait_for_log(r"Dirty arbiter listening on")
    wait_until(lambda: len([1 for line in srv.log().splitlines()
                            if "Initialized dirty app" in line]) >= 2, 30, "2 dirty workers")
    statuses = many(srv, "/dirty?s=1", 4)
    assert statuses == [200] * 4
    stats = get_json(srv, "/stats")
    # A blocking client would hold the hub: the calls would run one by one.
    assert stats["peak"] >= 2, stats


def test_fifty_greenlets_make_dirty_calls_at_once(server_factory):
    """50 greenlets of one worker each make a dirty call once all 50 are in
    flight: every call is answered, by the dirty workers, and the worker
    served the 50 requests at once."""
    srv = start(server_factory, "--dirty-workers", "2", "--dirty-threads", "5",
                "--dirty-app", "dirty_testapps:Counter", env={"PYTHONPATH": DIRTY_APPS})
    srv.wait_for_log(r"Dirty arbiter listening on")
    wait_until(lambda: srv.log().count("Initialized dirty app") >= 2, 30, "2 dirty workers")
    out = [None] * 50

    def one(i):
        status, _, body = get(srv, "/dirty?s=0.2&n=50", timeout=90)
        out[i] = (status, json.loads(body) if status == 200 else body)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(o is not None and o[0] == 200 for o in out), out
    assert {o[1]["result"]["slept"] for o in out} == {0.2}
    assert len({o[1]["pid"] for o in out}) == 1  # one HTTP worker
    assert len({o[1]["result"]["pid"] for o in out}) == 2  # both dirty workers
    assert get_json(srv, "/stats")["peak"] >= 50


@pytest.mark.parametrize("preload", [False, True], ids=["", "preload"])
def test_a_dirty_call_runs_while_another_greenlets_call_waits(server_factory, tmp_path,
                                                              preload):
    """Greenlet A's call waits in a dirty worker until a file exists; greenlet
    B's call (the other dirty worker) creates it. A serialized or blocking
    client would hold B behind A until A's cap ran out."""
    srv = start(server_factory, "--dirty-workers", "2", "--dirty-app",
                "dirty_testapps:Counter", *(["--preload"] if preload else []),
                env={"PYTHONPATH": DIRTY_APPS})
    srv.wait_for_log(r"Dirty arbiter listening on")
    wait_until(lambda: srv.log().count("Initialized dirty app") >= 2, 30, "2 dirty workers")
    marker = str(tmp_path / "release")
    out = []
    t = threading.Thread(target=lambda: out.append(get_json(srv, "/dirty_wait?p=" + marker)))
    t.start()
    wait_until(lambda: os.path.exists(marker + ".running"), 20, "the waiting call")
    assert get_json(srv, "/dirty_mark?p=" + marker)["slept"] == 0
    t.join(30)
    assert out and out[0]["released"] is True, out


def test_gevent_aliases_are_served_by_the_gevent_worker():
    for name in ("gevent_wsgi", "gevent_pywsgi", "gunicorn.workers.ggevent.GeventWorker"):
        r = run_cmd(["--check-config", "-k", name, "geventapp:app"], cwd=APPS)
        assert r.returncode == 0, (name, r.stderr)


def test_missing_gevent_fails_start_up_naming_pip_install(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoGevent:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'gevent' or name.startswith('gevent.'):\n"
        "            raise ModuleNotFoundError(\"No module named 'gevent'\", name=name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _NoGevent())\n")
    r = run_cmd(["-k", "gevent", "--bind", "127.0.0.1:0", "geventapp:app"], cwd=APPS,
                env={"PYTHONPATH": str(tmp_path)}, timeout=60)
    assert r.returncode != 0
    assert "pip install gevent" in r.stderr, r.stderr
    assert "worker_class gevent" in r.stderr
