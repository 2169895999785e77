"""Worker liveness and process control: the timeout abort (with the stuck
traceback), boot failures, zero-downtime reloads, user/group, systemd socket
activation and readiness, the reloader."""
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import CGUNICORN, ROOT, Server, server_env
from master_support import alive, children, get, read_pid, wait_until

APPS = os.path.join(ROOT, "tests", "apps", "master")


def start(args, env=None, **kw):
    return Server(["--chdir", APPS] + list(args), cwd=APPS, env=env, **kw)


def test_a_hung_request_is_aborted_after_timeout_and_logged():
    with start(["-w", "1", "--timeout", "2", "app:app"]) as srv:
        pid = srv.proc.pid
        [stuck] = wait_until(lambda: children(pid), what="worker")
        # As gunicorn's sync worker: the stuck request is unwound and answered 500.
        assert get(srv.port, "/hang", timeout=30)[0] == 500
        srv.wait_for_log(r"WORKER TIMEOUT \(pid:%d\)" % stuck)
        log = srv.wait_for_log(r"(?s)where it was stuck.*hang_forever").string
        assert "app.py" in log
        wait_until(lambda: children(pid) and stuck not in children(pid), what="replacement")
        assert get(srv.port)[0] == 200
        srv.wait_for_log(r"Error handling request GET /hang")


def test_worker_boot_failure_halts_the_master_with_code_3(tmp_path):
    (tmp_path / "broken.py").write_text("import nonexistent_module_xyz\n")
    r = subprocess.run([CGUNICORN, "--chdir", str(tmp_path), "-b", "127.0.0.1:0", "-w", "2",
                        "broken:app"], cwd=str(tmp_path), env=server_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 3
    assert "Reason: Worker failed to boot." in r.stderr
    assert "ModuleNotFoundError: No module named 'nonexistent_module_xyz'" in r.stderr
    assert r.stderr.count("Traceback (most recent call last)") >= 1


def test_app_not_found_exits_with_code_4(tmp_path):
    (tmp_path / "noapp.py").write_text("x = 1\n")
    r = subprocess.run([CGUNICORN, "--chdir", str(tmp_path), "-b", "127.0.0.1:0",
                        "noapp:app"], cwd=str(tmp_path), env=server_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 4
    assert "Reason: App failed to load." in r.stderr


def test_zero_downtime_hup_and_usr2(tmp_path):
    """A client sends requests continuously while the master gets HUP five
    times, then USR2 and QUIT to the old master: no request fails."""
    pidfile = str(tmp_path / "m.pid")
    with start(["-w", "2", "-p", pidfile, "--graceful-timeout", "10", "app:app"]) as srv:
        old = srv.proc.pid
        wait_until(lambda: len(children(old)) == 2, what="workers")
        stop = threading.Event()
        results = {"ok": 0, "errors": []}

        def client():
            deadline = time.monotonic() + 30
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    status, body = get(srv.port, "/", timeout=10)
                    if status == 200 and body.startswith(b"pid="):
                        results["ok"] += 1
                    else:
                        results["errors"].append((status, body[:80]))
                except OSError as exc:
                    results["errors"].append(repr(exc))

        threads = [threading.Thread(target=client) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            for i in range(5):
                srv.signal(signal.SIGHUP)
                srv.wait_for_log(r"(?s)(Hang up: Master.*){%d}" % (i + 1))
                time.sleep(0.3)
            wait_until(lambda: len(children(old)) == 2, what="workers after HUPs")
            srv.signal(signal.SIGUSR2)
            new = wait_until(lambda: read_pid(pidfile + ".2"), what="new master")
            wait_until(lambda: len(children(new)) == 2, what="new master's workers")
            srv.signal(signal.SIGQUIT)
            srv.proc.wait(20)
            wait_until(lambda: read_pid(pidfile) == new, what="promotion")
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert results["errors"] == []
        assert results["ok"] > 20
        os.kill(new, signal.SIGTERM)
        wait_until(lambda: not alive(new), what="new master exit")


def test_workers_switch_user_and_group():
    with start(["-w", "1", "--preload", "-u", "nobody", "-g", "nogroup", "app:app"]) as srv:
        [w] = wait_until(lambda: children(srv.proc.pid), what="worker")
        assert get(srv.port)[0] == 200
        with open("/proc/%d/status" % w) as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        assert status["Uid"].split()[0] == "65534"
        assert status["Gid"].split()[0] == "65534"
        with open("/proc/%d/status" % srv.proc.pid) as f:
            assert [l for l in f if l.startswith("Uid:")][0].split()[1] == str(os.getuid())


def test_systemd_socket_activation_and_readiness(tmp_path):
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    port = lsock.getsockname()[1]
    notify_path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(30)
    log = str(tmp_path / "err.log")
    fd = lsock.fileno()

    def to_fd3():
        os.dup2(fd, 3)

    env = server_env({"NOTIFY_SOCKET": notify_path, "LISTEN_FDS": "1"})
    proc = subprocess.Popen(["sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"', CGUNICORN, "--chdir",
                             APPS, "-w", "1", "--error-logfile", log, "app:app"],
                            cwd=APPS, env=env, pass_fds=sorted({fd, 3}), preexec_fn=to_fd3,
                            start_new_session=True)
    try:
        msg = notify.recv(4096).decode()
        assert msg.startswith("READY=1")
        wait_until(lambda: children(proc.pid), what="worker")
        assert get(port)[0] == 200
        with open(log) as f:
            assert "Listening at: http://127.0.0.1:%d" % port in f.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        notify.close()
        lsock.close()


@pytest.mark.parametrize("engine", ["inotify", "poll"])
def test_reload_restarts_workers_when_a_source_file_changes(tmp_path, engine):
    src = tmp_path / "reloadapp.py"
    extra = tmp_path / "extra.txt"
    extra.write_text("a")
    src.write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Length', '2')])\n"
        "    return [b'v1']\n")
    with Server(["--chdir", str(tmp_path), "-w", "1", "--reload", "--reload-engine", engine,
                 "--reload-extra-file", str(extra), "reloadapp:app"], cwd=str(tmp_path)) as srv:
        pid = srv.proc.pid
        [w1] = wait_until(lambda: children(pid), what="worker")
        assert get(srv.port) == (200, b"v1")
        srv.wait_for_log(r"Reloader is on")
        time.sleep(1.1)  # mtime granularity: the change must be newer
        src.write_text(
            "def app(environ, start_response):\n"
            "    start_response('200 OK', [('Content-Length', '2')])\n"
            "    return [b'v2']\n")
        srv.wait_for_log(r"Worker reloading: .*reloadapp.py modified")
        [w2] = wait_until(lambda: [c for c in children(pid) if c != w1], what="new worker")
        wait_until(lambda: get(srv.port) == (200, b"v2"), what="new code served")
        srv.wait_for_log(r"(?s)Booting worker with pid: %d.*Reloader is on" % w2)
        time.sleep(1.1)
        extra.write_text("b")
        srv.wait_for_log(r"Worker reloading: .*extra.txt modified")
        wait_until(lambda: [c for c in children(pid) if c not in (w1, w2)], what="third worker")
