"""Shared harness for black-box tests: start the real cgunicorn binary (or
upstream gunicorn, for side-by-side runs), wait for it with a deadline, and
always kill its process group afterwards."""
import atexit
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CGUNICORN = os.environ.get("CGUNICORN", os.path.join(ROOT, "build", "cgunicorn"))
VENV = os.path.join(ROOT, ".venv")
GUNICORN = os.path.join(VENV, "bin", "gunicorn")
LISTEN_RE = re.compile(r"Listening at: (\S+)")

# The control socket is on by default (as upstream's): its default path is
# $XDG_RUNTIME_DIR/gunicorn.ctl, else ~/.gunicorn/gunicorn.ctl. Every server a
# test starts gets a runtime directory under tmp, so nothing is written in
# $HOME and servers running side by side do not take each other's path.
if os.environ.get("CG_TEST_XDG_RUNTIME_DIR") is None:
    _xdg = tempfile.mkdtemp(prefix="cgtest-xdg-")
    atexit.register(shutil.rmtree, _xdg, True)
    os.environ["CG_TEST_XDG_RUNTIME_DIR"] = _xdg
    os.environ["XDG_RUNTIME_DIR"] = _xdg


def _is_asan_build(path):
    try:
        with open(path, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


# AddressSanitizer cannot follow greenlets: gevent switches by copying C
# stacks, so the shadow memory of our instrumented frames goes stale and the
# copies read redzones (false stack-buffer reports, then crashes). Under
# `make check-asan` the gevent worker's tests are skipped, saying so; `make
# check` runs them.
ASAN_BUILD = _is_asan_build(CGUNICORN)
ASAN_GEVENT_REASON = ("gevent's greenlets copy C stacks, which AddressSanitizer cannot "
                      "follow; `make check` runs these tests")


def _uses_gevent(item):
    params = getattr(getattr(item, "callspec", None), "params", {})
    def names_gevent(v):
        if isinstance(v, (tuple, list)):  # e.g. the (server, worker class) fixtures
            return any(names_gevent(x) for x in v)
        return v == "gevent"
    return (os.path.basename(str(item.fspath)).startswith("test_gevent")
            or "gevent" in getattr(item, "originalname", item.name)
            or any(names_gevent(v) for v in params.values()))


def pytest_collection_modifyitems(config, items):
    if not ASAN_BUILD:
        return
    skip = pytest.mark.skip(reason=ASAN_GEVENT_REASON)
    for item in items:
        if _uses_gevent(item):
            item.add_marker(skip)


def server_env(extra=None):
    env = dict(os.environ)
    env["VIRTUAL_ENV"] = VENV
    env.pop("GUNICORN_CMD_ARGS", None)
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def run_cmd(args, cwd=None, env=None, timeout=60, binary=None):
    """Runs a one-shot command (e.g. --print-config) and returns CompletedProcess."""
    exe = binary or CGUNICORN
    return subprocess.run(
        [exe] + list(args), cwd=cwd, env=server_env(env), capture_output=True,
        text=True, timeout=timeout,
    )


class Server:
    """A running server. `url` is http://127.0.0.1:PORT (from its
    'Listening at:' log line) or the unix socket path in `unix_path`."""

    def __init__(self, args, cwd=None, env=None, binary=None, bind=None, ready_timeout=30):
        self.tmp = tempfile.TemporaryDirectory(prefix="cgtest-")
        self.log_path = os.path.join(self.tmp.name, "error.log")
        self.unix_path = None
        if bind is None:
            bind = "127.0.0.1:0"
        if bind.startswith("unix:"):
            self.unix_path = bind[5:]
        exe = binary or CGUNICORN
        env = dict(env or {})
        env.setdefault("XDG_RUNTIME_DIR", self.tmp.name)
        self.control_socket = os.path.join(env["XDG_RUNTIME_DIR"], "gunicorn.ctl")
        cmd = [exe, "--bind", bind, "--error-logfile", self.log_path] + list(args)
        self.log_file = open(self.log_path + ".out", "wb")
        self.proc = subprocess.Popen(
            cmd, cwd=cwd or ROOT, env=server_env(env), stdout=self.log_file,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.url = None
        self.wait_ready(ready_timeout)

    def log(self):
        out = []
        for p in (self.log_path, self.log_path + ".out"):
            try:
                with open(p, "r", errors="replace") as f:
                    out.append(f.read())
            except FileNotFoundError:
                pass
        return "\n".join(out)

    def wait_for_log(self, pattern, timeout=20):
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            m = rx.search(self.log())
            if m:
                return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("log never matched %r; log:\n%s" % (pattern, self.log()))

    def wait_ready(self, timeout):
        m = self.wait_for_log(r"Booting worker with pid|Listening at: \S+", timeout)
        m = self.wait_for_log(LISTEN_RE.pattern, timeout)
        self.url = m.group(1)
        if self.url.startswith("unix:"):
            self.unix_path = self.url[5:]
        # Wait until a worker has booted so the first request is served.
        self.wait_for_log(r"Booting worker with pid", timeout)

    @property
    def port(self):
        return int(self.url.rsplit(":", 1)[1])

    def signal(self, signo):
        self.proc.send_signal(signo)

    def stop(self, timeout=15):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(5)
        self.log_file.close()
        self.tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


@pytest.fixture
def server_factory():
    """Yields a function that starts a Server; every one started is stopped."""
    started = []

    def start(args, **kw):
        srv = Server(args, **kw)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
