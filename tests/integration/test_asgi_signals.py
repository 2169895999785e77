"""QUIT/INT on an asgi worker run the worker_int hook, then worker_exit, and
the master replaces the worker (upstream's gasgi handle_quit_signal:
worker_int, then a quick stop that skips graceful waiting)."""
import os
import signal
import time

import pytest

from conftest import ROOT

APPS = os.path.join(ROOT, "tests", "apps", "asgi")

CONF = '''
import os
def _mark(what, pid):
    with open(os.environ["CG_MARKS"], "a") as f:
        f.write("%s %d\\n" % (what, pid))
def post_fork(server, worker):
    _mark("post_fork", worker.pid)
def worker_int(worker):
    _mark("worker_int", worker.pid)
def worker_exit(server, worker):
    _mark("worker_exit", worker.pid)
'''


def read_marks(path):
    try:
        with open(path) as f:
            return [tuple(line.split()) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def wait_marks(path, pred, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = read_marks(path)
        if pred(got):
            return got
        time.sleep(0.05)
    raise AssertionError("marks never matched: %r" % read_marks(path))


@pytest.mark.parametrize("signo", [signal.SIGQUIT, signal.SIGINT])
def test_quit_int_run_worker_int(server_factory, tmp_path, signo):
    conf = tmp_path / "conf.py"
    conf.write_text(CONF)
    marks = str(tmp_path / "marks")
    srv = server_factory(["--worker-class", "asgi", "--workers", "1", "--chdir", APPS,
                          "-c", str(conf), "hello:app"], env={"CG_MARKS": marks})
    got = wait_marks(marks, lambda m: any(w == "post_fork" for w, _ in m))
    pid = int(got[0][1])
    os.kill(pid, signo)
    got = wait_marks(marks, lambda m: ("worker_exit", str(pid)) in m
                     and sum(w == "post_fork" for w, _ in m) == 2)
    ours = [w for w, p in got if p == str(pid)]
    assert ours == ["post_fork", "worker_int", "worker_exit"]
    assert srv.proc.poll() is None
