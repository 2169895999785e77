"""The dirty pool in production (issue 15): the boot deadline and the
respawn back-off, device assignment (dirty_gpus), recycling by call count
and by RSS (dirty_max_requests, dirty_max_worker_memory, max_worker_memory)."""
import os
import re
import signal
import stat
import threading
import time
import urllib.request

import pytest

from conftest import run_cmd
from dirty_support import APPS_DIR, arbiter_pid, call, children, start, wait_until

SLOW = "dirty_prod_apps:SlowInit"
FLAKY = "dirty_prod_apps:Flaky"
DEVICE = "dirty_prod_apps:Device"
LEAKY = "dirty_prod_apps:Leaky"


def test_slow_init_is_bounded_by_the_boot_deadline_not_dirty_timeout(server_factory):
    # init() takes 4 s, dirty_timeout is 1 s: the worker is not killed, and a
    # call made while it boots waits for it and is served.
    srv = start(server_factory, [SLOW], extra=["--dirty-timeout", "1"], env={"SLOW_INIT": "4"},
                wait_workers=1)
    r = call(srv, SLOW, "pid", timeout=30)
    assert r.get("result", {}).get("ready") is True, (r, srv.log())
    assert call(srv, SLOW, "pid")["result"]["pid"] == r["result"]["pid"]
    log = srv.log()
    assert "TIMEOUT" not in log and "did not boot" not in log, log
    assert log.count("Spawned dirty worker") == 1, log


def test_init_raising_at_start_up_fails_once(tmp_path):
    # start-up: the traceback once, the server stops (no respawn loop)
    mode = tmp_path / "mode"
    mode.write_text("raise")
    log = tmp_path / "error.log"
    r = run_cmd(["--bind", "127.0.0.1:0", "--error-logfile", str(log), "--dirty-workers", "2",
                 "--dirty-app", FLAKY, "dirty_wsgi:app"], cwd=APPS_DIR, timeout=60,
                env={"FLAKY_MODE": str(mode)})
    text = log.read_text()
    assert r.returncode != 0, text
    assert text.count("RuntimeError: flaky model store unreachable") == 1, text
    assert text.count("Spawned dirty arbiter") == 1, text


def test_init_raising_after_boot_backs_off(server_factory, tmp_path):
    # after boot: a replacement whose init() raises is retried 1 s, 2 s, 4 s
    # ... apart; the log stays small (upstream respawns in a tight loop).
    mode = tmp_path / "mode"
    srv = start(server_factory, [FLAKY], dirty_workers=1, env={"FLAKY_MODE": str(mode)})
    arb = arbiter_pid(srv)
    (w,) = children(arb)
    assert call(srv, FLAKY, "pid")["result"] == w
    mode.write_text("raise")
    os.kill(w, signal.SIGKILL)
    srv.wait_for_log(r"failed to boot 1 time\(s\) in a row; next attempt in 1 s")
    t0 = time.monotonic()
    time.sleep(20)
    window = srv.log()
    failures = window.count("RuntimeError: flaky model store unreachable")
    # 1+2+4+8 s of back-off fit in 20 s: 5 attempts at most (plus one in flight)
    assert 2 <= failures <= 6, window
    assert len(window.splitlines()) < 200, len(window.splitlines())
    assert "Dirty arbiter stopping" not in window, window
    # the store is back: the next attempt boots, calls are served again
    mode.write_text("")
    r = call(srv, FLAKY, "pid", timeout=60)
    assert isinstance(r.get("result"), int), r
    assert time.monotonic() - t0 < 120


def test_boot_timeout_overrun_is_killed_and_reported_once(server_factory, tmp_path):
    mode = tmp_path / "mode"
    srv = start(server_factory, [FLAKY], dirty_workers=1, env={"FLAKY_MODE": str(mode)},
                extra=["--dirty-boot-timeout", "2"])
    arb = arbiter_pid(srv)
    (w,) = children(arb)
    assert call(srv, FLAKY, "pid")["result"] == w  # booted
    mode.write_text("hang")
    os.kill(w, signal.SIGKILL)
    m = srv.wait_for_log(r"Dirty worker \(pid:(\d+)\) did not boot within 2 s; killing it",
                         timeout=30)
    hung = int(m.group(1))
    srv.wait_for_log(r"failed to boot 1 time\(s\) in a row")
    wait_until(lambda: hung not in children(arb), what="the hung worker to go")
    log = srv.log()
    assert log.count("(pid:%d) did not boot" % hung) == 1, log
    assert "(pid:%d) was sent SIGKILL" % hung not in log, log
    mode.write_text("")
    assert isinstance(call(srv, FLAKY, "pid", timeout=60).get("result"), int)


def test_boot_timeout_at_start_up_stops_the_server(tmp_path):
    mode = tmp_path / "mode"
    mode.write_text("hang")
    log = tmp_path / "error.log"
    r = run_cmd(["--bind", "127.0.0.1:0", "--error-logfile", str(log), "--dirty-workers", "1",
                 "--dirty-boot-timeout", "2", "--dirty-app", FLAKY, "dirty_wsgi:app"],
                cwd=APPS_DIR, timeout=60, env={"FLAKY_MODE": str(mode)})
    text = log.read_text()
    assert r.returncode != 0, text
    assert len(re.findall(r"did not boot within 2 s; killing it", text)) == 1, text
    assert "did not boot within dirty_boot_timeout" in text, text


@pytest.mark.parametrize("flag,value,expect", [
    ("--dirty-boot-timeout", "-1", "negative"),
    ("--dirty-max-requests", "x", "invalid int value"),
    ("--dirty-max-requests-jitter", "-3", "negative"),
    ("--dirty-max-worker-memory", "lots", "invalid int value"),
    ("--max-worker-memory", "-5", "negative"),
    ("--dirty-gpus", "0,,1", "not a device id"),
])
def test_bad_values_are_rejected_naming_the_flag(flag, value, expect):
    r = run_cmd([flag, value, "--check-config", "dirty_wsgi:app"], cwd=APPS_DIR, timeout=30)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert flag in out and expect in out, out


def _pids_over_calls(srv, app, action, n, *args, pause=0.0):
    pids, failed = [], []
    for _ in range(n):
        r = call(srv, app, action, *args, timeout=60)
        if "result" in r:
            pids.append(r["result"])
        else:
            failed.append(r)
        if pause:
            time.sleep(pause)
    return pids, failed


@pytest.mark.parametrize("dirty_workers", [2, 1])
def test_dirty_max_requests_recycles_without_failed_calls(server_factory, dirty_workers):
    srv = start(server_factory, [LEAKY], dirty_workers=dirty_workers,
                extra=["--dirty-max-requests", "10"])
    pids, failed = _pids_over_calls(srv, LEAKY, "pid", 50)
    # a worker serves its 10 calls, then more only while its replacement
    # boots (how many depends on the boot time, so 50 quick calls may all
    # come before it: keep calling, up to 30 s, until a replacement answers)
    deadline = time.monotonic() + 30
    while len(set(pids)) <= dirty_workers and time.monotonic() < deadline:
        more, bad = _pids_over_calls(srv, LEAKY, "pid", 10, pause=0.05)
        pids += more
        failed += bad
    assert failed == [], failed
    assert len(set(pids)) > dirty_workers, pids
    assert pids.count(pids[0]) >= 10 // dirty_workers, pids
    assert "served 10 calls (dirty_max_requests)" in srv.log()
    arb = arbiter_pid(srv)
    wait_until(lambda: len(children(arb)) == dirty_workers, what="the pool size again")


def test_dirty_max_requests_jitter_is_accepted(server_factory):
    srv = start(server_factory, [LEAKY], dirty_workers=1,
                extra=["--dirty-max-requests", "5", "--dirty-max-requests-jitter", "3"])
    pids, failed = _pids_over_calls(srv, LEAKY, "pid", 10)
    assert failed == [], failed
    m = re.search(r"served (\d+) calls \(dirty_max_requests\)", srv.log())
    assert m and 5 <= int(m.group(1)) <= 8, srv.log()
    # the replacement takes over once booted; no call fails meanwhile
    wait_until(lambda: call(srv, LEAKY, "pid")["result"] != pids[0], 30, "the replacement")


@pytest.mark.parametrize("dirty_workers", [2, 1])
def test_dirty_max_worker_memory_recycles_without_failed_calls(server_factory, dirty_workers):
    srv = start(server_factory, [LEAKY], dirty_workers=dirty_workers,
                extra=["--dirty-max-worker-memory", "150"])
    pids, failed = _pids_over_calls(srv, LEAKY, "leak", 24, 40, pause=0.25)
    assert failed == [], failed
    assert len(set(pids)) >= 2, pids
    assert re.search(r"uses \d+ MB, over dirty_max_worker_memory \(150 MB\)", srv.log())


@pytest.mark.parametrize("workers", [2, 1])
def test_max_worker_memory_recycles_http_workers_without_failed_requests(server_factory,
                                                                        workers):
    srv = server_factory(["--workers", str(workers), "--max-worker-memory", "150",
                          "--metrics-bind", "127.0.0.1:0", "dirty_prod_apps:leaky_wsgi"],
                         cwd=APPS_DIR)
    pids, failed = [], []
    for _ in range(24):
        try:
            with urllib.request.urlopen(srv.url + "/", timeout=60) as r:
                pids.append(int(r.read()))
        except Exception as e:  # noqa: BLE001 - any failure counts
            failed.append(repr(e))
        time.sleep(0.25)
    assert failed == [], failed
    assert len(set(pids)) > workers, pids
    assert re.search(r"uses \d+ MB, over max_worker_memory \(150 MB\); replacing it", srv.log())
    # and the replacements are counted as memory restarts on /metrics
    url = srv.wait_for_log(r"Serving metrics at: (\S+)").group(1)

    def memory_restarts():
        with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
            m = re.search(r'^cgunicorn_worker_restarts_total\{cause="memory"\} (\d+)$',
                          r.read().decode(), re.M)
        return int(m.group(1)) if m else 0
    wait_until(lambda: memory_restarts() >= 1, 30, "a restart counted with cause memory")


def _devices(srv, want=1, exclude=()):
    """pid -> CUDA_VISIBLE_DEVICES of the workers calls reach, once `want`
    workers (not in `exclude`) have answered (booting ones get no calls)."""
    seen = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = call(srv, DEVICE, "device")["result"]
        assert r["env"] == r["at_init"], r  # set before the app was imported
        if r["pid"] not in exclude:
            seen[r["pid"]] = r["env"]
        if len(seen) >= want:
            break
    return seen


def test_dirty_gpus_one_device_per_worker_and_kept_by_the_replacement(server_factory):
    """Each worker its own device, a replacement its predecessor's; the
    assignment shows in the spawn line, in gunicornc's `show all` (each dirty
    worker's device) and in /metrics (live workers per device)."""
    from test_control_socket import ctl
    from test_metrics import Metrics, get, metrics_url

    def shown():
        every = ctl(srv, "show all")[1]
        return {w["pid"]: w.get("device") for w in every["dirty_workers"]}

    def per_device():
        code, body = get(metrics_url(srv), "/metrics")
        assert code == 200
        m = Metrics(body)
        return (m.get("cgunicorn_dirty_device_workers", device="0"),
                m.get("cgunicorn_dirty_device_workers", device="1"))

    srv = start(server_factory, [DEVICE], dirty_workers=2,
                extra=["--dirty-gpus", "0,1", "--metrics-bind", "127.0.0.1:0"])
    seen = _devices(srv, 2)
    assert sorted(seen.values()) == ["0", "1"], seen
    log = srv.log()
    for pid, dev in seen.items():
        assert "Spawned dirty worker (pid: %d) with apps: ['%s'] on device %s " \
               "(CUDA_VISIBLE_DEVICES=%s)" % (pid, DEVICE, dev, dev) in log, log
    wait_until(lambda: shown() == seen, what="show all naming each worker's device")
    assert per_device() == (1, 1)
    victim = next(p for p, d in seen.items() if d == "1")
    os.kill(victim, signal.SIGKILL)
    arb = arbiter_pid(srv)
    wait_until(lambda: victim not in children(arb) and len(children(arb)) == 2,
               what="the replacement")
    again = _devices(srv, 2, exclude=(victim,))
    assert victim not in again and sorted(again.values()) == ["0", "1"], again
    new = next(p for p, d in again.items() if d == "1")
    assert new != victim
    wait_until(lambda: shown() == again, what="show all after the replacement")
    wait_until(lambda: per_device() == (1, 1), what="one worker per device again")


def test_dirty_gpus_round_robin_when_more_workers_than_devices(server_factory):
    srv = start(server_factory, [DEVICE], dirty_workers=3, extra=["--dirty-gpus", "0,1"])
    seen = _devices(srv, 3)
    assert sorted(seen.values()) == ["0", "0", "1"], seen
    assert "3 dirty workers for 2 device(s) [0,1]: devices are shared round-robin" in srv.log()


def test_dirty_gpus_auto_uses_nvidia_smi(server_factory, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    smi = bindir / "nvidia-smi"
    smi.write_text("#!/bin/sh\n[ \"$1\" = -L ] || exit 2\n"
                   "echo 'GPU 0: Fake GPU (UUID: GPU-0000)'\n"
                   "echo 'GPU 1: Fake GPU (UUID: GPU-1111)'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    env = {"PATH": "%s:%s" % (bindir, os.environ.get("PATH", "/usr/bin:/bin"))}
    srv = start(server_factory, [DEVICE], dirty_workers=2, extra=["--dirty-gpus", "auto"],
                env=env)
    assert sorted(_devices(srv, 2).values()) == ["0", "1"]
    assert "one device per dirty worker from [0,1]" in srv.log()


def test_dirty_gpus_auto_without_nvidia_smi_warns(server_factory, tmp_path):
    env = {"PATH": str(tmp_path)}  # no nvidia-smi there
    srv = start(server_factory, [DEVICE], dirty_workers=1, extra=["--dirty-gpus", "auto"],
                env=env)
    assert list(_devices(srv, 1).values()) == [None]
    assert "dirty_gpus auto: nvidia-smi was not found on PATH; dirty workers start without " \
           "CUDA_VISIBLE_DEVICES" in srv.log()


def test_dirty_gpus_with_an_app_limited_to_one_worker(server_factory):
    srv = start(server_factory, [DEVICE + ":1", LEAKY], dirty_workers=2,
                extra=["--dirty-gpus", "0,1"])
    seen = _devices(srv, 1)
    assert len(seen) == 1 and list(seen.values())[0] in ("0", "1"), seen
    assert isinstance(call(srv, LEAKY, "pid")["result"], int)


def test_status_reply_shows_slots_devices_and_served_calls(server_factory):
    import json
    args = ["--workers", "1", "--dirty-workers", "2", "--dirty-app", "dirty_zc_apps:ZC",
            "--dirty-gpus", "0,1", "dirty_zc_apps:app"]
    srv = server_factory(args, cwd=APPS_DIR)
    arb = arbiter_pid(srv)
    wait_until(lambda: len(children(arb)) == 2, what="two dirty workers")

    def status():
        with urllib.request.urlopen(srv.url + "/status", timeout=30) as r:
            return json.loads(r.read())

    st = wait_until(lambda: (lambda s: s if all(w["booted"] for w in s["workers"]) and
                             len(s["workers"]) == 2 else None)(status()), what="both booted")
    assert sorted((w["slot"], w["device"]) for w in st["workers"]) == [(0, "0"), (1, "1")], st
    assert all(w["recycling"] is False and w["served"] >= 0 for w in st["workers"]), st
