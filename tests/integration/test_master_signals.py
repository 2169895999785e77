"""The master's signals, observed from outside: worker processes counted
through /proc, listeners answering, pid files, exit codes, log lines."""
import os
import signal
import subprocess
import threading
import time

import pytest

from conftest import CGUNICORN, ROOT, Server, server_env
from master_support import alive, children, get, read_pid, wait_until, kill_tree

APPS = os.path.join(ROOT, "tests", "apps", "master")


def start(args, env=None, **kw):
    return Server(["--chdir", APPS] + list(args), cwd=APPS, env=env, **kw)


def test_ttin_ttou_change_the_worker_count():
    with start(["-w", "2", "app:app"]) as srv:
        pid = srv.proc.pid
        wait_until(lambda: len(children(pid)) == 2, what="2 workers")
        srv.signal(signal.SIGTTIN)
        wait_until(lambda: len(children(pid)) == 3, what="3 workers after TTIN")
        assert get(srv.port)[0] == 200
        before = children(pid)
        srv.signal(signal.SIGTTOU)
        wait_until(lambda: len(children(pid)) == 2, what="2 workers after TTOU")
        # TTOU stops the oldest worker.
        assert min(before) not in children(pid)
        srv.signal(signal.SIGTTOU)
        wait_until(lambda: len(children(pid)) == 1, what="1 worker")
        srv.signal(signal.SIGTTOU)  # never below one
        srv.wait_for_log(r"(?s)(Handling signal: ttou.*){3}")
        srv.signal(signal.SIGTTIN)
        wait_until(lambda: len(children(pid)) == 2, what="2 workers again")
        assert "Handling signal: ttin" in srv.log()
        assert "Handling signal: ttou" in srv.log()


def test_hup_reloads_the_config_and_replaces_workers(tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text("workers = 1\nraw_env = ['APP_VERSION=one']\n")
    with start(["-c", str(conf), "app:app"]) as srv:
        pid = srv.proc.pid
        wait_until(lambda: len(children(pid)) == 1, what="1 worker")
        old = children(pid)
        assert get(srv.port, "/version") == (200, b"one")
        conf.write_text("workers = 3\nraw_env = ['APP_VERSION=two']\n")
        srv.signal(signal.SIGHUP)
        srv.wait_for_log(r"Hang up: Master")
        wait_until(lambda: len(children(pid)) == 3 and not set(old) & set(children(pid)),
                   what="3 new workers")
        assert get(srv.port, "/version") == (200, b"two")
        assert srv.proc.poll() is None


def test_hup_with_a_broken_config_keeps_the_old_one(tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text("workers = 2\n")
    with start(["-c", str(conf), "app:app"]) as srv:
        pid = srv.proc.pid
        wait_until(lambda: len(children(pid)) == 2, what="2 workers")
        conf.write_text("workers = (\n")
        srv.signal(signal.SIGHUP)
        srv.wait_for_log(r"reloading the configuration failed, keeping the previous one")
        wait_until(lambda: len(children(pid)) == 2, what="2 workers after HUP")
        assert get(srv.port)[0] == 200


def test_term_lets_in_flight_requests_finish(tmp_path):
    pidfile = str(tmp_path / "m.pid")
    with start(["-w", "1", "-p", pidfile, "--graceful-timeout", "20", "app:slow_app"],
               env={"SLOW_SECONDS": "1.5"}) as srv:
        assert read_pid(pidfile) == srv.proc.pid
        result = {}

        def client():
            try:
                result["r"] = get(srv.port, "/slow", timeout=30)
            except OSError as exc:
                result["r"] = exc

        t = threading.Thread(target=client)
        t.start()
        srv.wait_for_log(r"Booting worker")
        time.sleep(0.3)  # let the request reach the worker (not a verdict)
        srv.signal(signal.SIGTERM)
        t.join(30)
        assert srv.proc.wait(30) == 0
        assert result["r"][0] == 200, result
        assert not os.path.exists(pidfile)
        assert "Handling signal: term" in srv.log()
        assert "Shutting down: Master" in srv.log()


@pytest.mark.parametrize("sig,name", [(signal.SIGQUIT, "quit"), (signal.SIGINT, "int")])
def test_quit_and_int_stop_quickly(sig, name):
    with start(["-w", "2", "--graceful-timeout", "60", "app:app"]) as srv:
        pid = srv.proc.pid
        kids = wait_until(lambda: len(children(pid)) == 2 and children(pid), what="workers")
        srv.signal(sig)
        assert srv.proc.wait(20) == 0
        assert not any(alive(k) for k in kids)
        assert "Handling signal: %s" % name in srv.log()


def test_usr1_reopens_the_error_and_access_logs(tmp_path):
    access = tmp_path / "access.log"
    with start(["-w", "1", "--access-logfile", str(access), "app:app"]) as srv:
        assert get(srv.port, "/first")[0] == 200
        wait_until(lambda: access.exists() and "/first" in access.read_text(), what="access line")
        os.rename(str(access), str(access) + ".1")
        os.rename(srv.log_path, srv.log_path + ".1")
        srv.signal(signal.SIGUSR1)
        wait_until(lambda: os.path.exists(srv.log_path), what="error log reopened")
        # The worker reopens its access log on the USR1 the master forwards.
        wait_until(lambda: access.exists(), what="access log reopened")
        assert get(srv.port, "/second")[0] == 200
        wait_until(lambda: "/second" in access.read_text(), what="access line in the new file")
        assert "/second" not in open(str(access) + ".1").read()
        with open(srv.log_path + ".1") as f:
            assert "Handling signal: usr1" in f.read()


def test_usr2_upgrades_the_binary_and_the_new_master_takes_over(tmp_path):
    pidfile = str(tmp_path / "m.pid")
    with start(["-w", "2", "-p", pidfile, "app:app"]) as srv:
        old = srv.proc.pid
        wait_until(lambda: len(children(old)) == 2, what="workers")
        srv.signal(signal.SIGUSR2)
        new = wait_until(lambda: read_pid(pidfile + ".2"), what="pidfile.2")
        assert new != old
        assert read_pid(pidfile) == old
        wait_until(lambda: len(children(new)) == 2, what="new master's workers")
        # Both sets of workers share the listener.
        assert get(srv.port)[0] == 200
        srv.signal(signal.SIGUSR2)  # a second USR2 while the child exists
        srv.wait_for_log(r"USR2 signal ignored. Child exists.")
        srv.signal(signal.SIGQUIT)
        assert srv.proc.wait(20) == 0
        wait_until(lambda: read_pid(pidfile) == new, what="pidfile renamed to the new master")
        assert not os.path.exists(pidfile + ".2")
        for _ in range(5):
            assert get(srv.port)[0] == 200
        assert "Master has been promoted." in srv.log()
        os.kill(new, signal.SIGTERM)
        wait_until(lambda: not alive(new), what="new master exit")
        assert not os.path.exists(pidfile)


def test_pidfile_of_a_running_master_is_refused(tmp_path):
    pidfile = tmp_path / "m.pid"
    pidfile.write_text("%d\n" % os.getpid())
    r = subprocess.run([CGUNICORN, "--chdir", APPS, "-b", "127.0.0.1:0", "-p", str(pidfile),
                        "app:app"], cwd=APPS, env=server_env(), capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1
    assert "Already running on PID %d" % os.getpid() in r.stderr


def test_daemon_and_winch(tmp_path):
    pidfile = str(tmp_path / "d.pid")
    log = str(tmp_path / "err.log")
    r = subprocess.run([CGUNICORN, "--chdir", APPS, "-b", "127.0.0.1:0", "-D", "-p", pidfile,
                        "-w", "2", "--error-logfile", log, "app:app"], cwd=APPS,
                       env=server_env(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    master = 0
    try:
        master = wait_until(lambda: read_pid(pidfile), what="daemon pidfile")
        wait_until(lambda: len(children(master)) == 2, what="daemon workers")
        with open("/proc/%d/stat" % master) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # setsid in the first child, then a second fork: a new session whose
        # leader (the first child) is gone, so the master is not its leader.
        assert int(fields[3]) != os.getsid(0)
        assert int(fields[3]) != master
        os.kill(master, signal.SIGWINCH)
        wait_until(lambda: not children(master), what="workers stopped by WINCH")
        assert alive(master)
        assert "graceful stop of workers" in open(log).read()
        os.kill(master, signal.SIGTERM)
        wait_until(lambda: not alive(master), what="daemon exit")
        assert not os.path.exists(pidfile)
    finally:
        if master and alive(master):
            kill_tree(master)


def test_winch_is_ignored_when_not_daemonized():
    with start(["-w", "1", "--log-level", "debug", "app:app"]) as srv:
        pid = srv.proc.pid
        kids = wait_until(lambda: children(pid), what="worker")
        srv.signal(signal.SIGWINCH)
        srv.wait_for_log(r"SIGWINCH ignored. Not daemonized")
        assert children(pid) == kids
