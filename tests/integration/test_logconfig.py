"""logconfig, logconfig_dict, logconfig_json: the error and access logs go
through Python's logging ("gunicorn.error", "gunicorn.access") as under
gunicorn. Side by side with upstream, the same configuration and requests
give the same records (logger, level, message), apart from lines that name
the server or its pids/ports."""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "conformance"))
from cgtest_support import (CANDIDATE, REFERENCE, WORKER_CLASSES, APPS,  # noqa: E402
                            binary, exchange)
from conftest import run_cmd, server_env  # noqa: E402

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
DICT_CONF = os.path.join(CONFIGS, "logconfig_dict.conf.py")
INI = os.path.join(CONFIGS, "logconfig.ini")
H = b"Host: example.test\r\n"
REQUESTS = [
    b"GET /a?x=1 HTTP/1.1\r\n" + H + b"User-Agent: t/1\r\n\r\n",
    b"POST /p HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi",
    b"GET /boom HTTP/1.1\r\n" + H + b"X-Cg-Mode: raise\r\n\r\n",
    b"GET /last HTTP/1.1\r\n" + H + b"\r\n",
]
# Lines that legitimately differ: the start banner names the server,
# upstream 27 starts a control socket (not built in cgunicorn).
SKIP = re.compile(r"Starting gunicorn|Control socket")


def read_records(path, until, timeout=15):
    """The log's records, as (logger, level, first line of the message),
    once `until` appears in it."""
    end = time.monotonic() + timeout
    text = ""
    while time.monotonic() < end:
        try:
            with open(path) as f:
                text = f.read()
        except FileNotFoundError:
            text = ""
        if until in text:
            break
        time.sleep(0.05)
    records = []
    for line in text.splitlines():
        m = re.match(r"(gunicorn\.\w+)\|([A-Z]+)\|(.*)", line)
        if m and not SKIP.search(m.group(3)):
            records.append((m.group(1), m.group(2), re.sub(r"\d{3,}", "N", m.group(3))))
    return records, text


class LoggedServer:
    """A server whose error log goes where its logging configuration says
    (the file $CG_LOG_OUT), so readiness is read from there."""

    unix_path = None

    def __init__(self, name, worker_class, args, env, timeout=30):
        self.out = env["CG_LOG_OUT"]
        cmd = [binary(name), "--bind", "127.0.0.1:0", "--workers", "1",
               "--worker-class", worker_class] + list(args) + ["logapp:app"]
        self.proc = subprocess.Popen(cmd, cwd=APPS, env=server_env(env),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        end = time.monotonic() + timeout
        text = ""
        while time.monotonic() < end and self.proc.poll() is None:
            try:
                with open(self.out) as f:
                    text = f.read()
            except FileNotFoundError:
                pass
            m = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", text)
            if m and "Booting worker" in text:
                self.port = int(m.group(1))
                return
            time.sleep(0.05)
        self.stop()
        raise AssertionError("%s never got ready; log:\n%s\nstderr:\n%s" % (
            name, text, self.proc.stderr.read().decode(errors="replace")))

    def signal(self, signo):
        self.proc.send_signal(signo)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc.stderr.close()


def start(name, args, worker_class, env, app=None):
    return LoggedServer(name, worker_class, args, env)


def served_records(name, worker_class, args, env):
    srv = start(name, args, worker_class, env=env, app="logapp:app")
    try:
        for raw in REQUESTS:
            exchange(srv, raw)
        return read_records(env["CG_LOG_OUT"], '"GET /last HTTP/1.1" 200')
    finally:
        srv.stop()


def compare_with_upstream(worker_class, make_args):
    got = {}
    with tempfile.TemporaryDirectory(prefix="cglogcfg-") as d:
        for name in (CANDIDATE, REFERENCE):
            out = os.path.join(d, "%s.log" % name)
            got[name] = served_records(name, worker_class, make_args(d, out),
                                       {"CG_LOG_OUT": out})
    (cand, cand_text), (ref, ref_text) = got[CANDIDATE], got[REFERENCE]
    assert cand == ref, "cgunicorn:\n%s\nupstream:\n%s" % (cand_text, ref_text)
    # what the comparison rests on
    access = [r for r in cand if r[0] == "gunicorn.access"]
    assert len(access) == len(REQUESTS)
    assert 'gunicorn.access|INFO|127.0.0.1 "GET /a?x=1 HTTP/1.1" 200 30 "t/1"\n' in cand_text
    assert ("gunicorn.error", "ERROR", "Error handling request GET /boom") in cand
    assert "gunicorn.error|INFO|Listening at: http://127.0.0.1:" in cand_text
    assert "RuntimeError: logapp was asked to raise" in cand_text


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_logconfig_dict_matches_upstream(worker_class):
    compare_with_upstream(worker_class, lambda d, out: ["-c", DICT_CONF])


def test_logconfig_ini_matches_upstream():
    compare_with_upstream("sync", lambda d, out: [
        "--log-config", INI, "--access-logformat", '%(h)s "%(r)s" %(s)s %(b)s "%(a)s"'])


def test_logconfig_json_matches_upstream():
    def args(d, out):
        path = os.path.join(d, "logging.json")
        with open(path, "w") as f:
            json.dump({
                "formatters": {"plain": {"format": "%(name)s|%(levelname)s|%(message)s"}},
                "handlers": {"f": {"class": "logging.FileHandler", "filename": out,
                                   "formatter": "plain"}},
                "root": {"level": "WARNING", "handlers": ["f"]},
                "loggers": {"gunicorn.error": {"level": "INFO", "handlers": ["f"],
                                               "propagate": False},
                            "gunicorn.access": {"level": "INFO", "handlers": ["f"],
                                                "propagate": False}},
            }, f)
        return ["--log-config-json", path,
                "--access-logformat", '%(h)s "%(r)s" %(s)s %(b)s "%(a)s"']
    compare_with_upstream("sync", args)


def test_level_from_the_configuration_and_reopen_on_usr1():
    """gunicorn.error at DEBUG in the configuration lets debug lines through
    (the C side's filter follows the logger's level); USR1 reopens the
    configuration's file handlers in the master and the workers."""
    with tempfile.TemporaryDirectory(prefix="cglogcfg-") as d:
        out = os.path.join(d, "out.log")
        srv = start(CANDIDATE, ["-c", DICT_CONF], "sync",
                    env={"CG_LOG_OUT": out, "CG_LOG_LEVEL": "DEBUG"}, app="logapp:app")
        try:
            exchange(srv, b"GET /dbg HTTP/1.1\r\n" + H + b"\r\n")
            _, text = read_records(out, '"GET /dbg HTTP/1.1" 200')
            assert "gunicorn.error|DEBUG|" in text, text
            os.rename(out, out + ".1")
            srv.signal(signal.SIGUSR1)
            deadline = time.monotonic() + 10
            while not os.path.exists(out) and time.monotonic() < deadline:
                time.sleep(0.05)
            exchange(srv, b"GET /after HTTP/1.1\r\n" + H + b"\r\n")
            _, text = read_records(out, '"GET /after HTTP/1.1" 200')
            assert '"GET /after HTTP/1.1" 200' in text, text
        finally:
            srv.stop()


@pytest.mark.parametrize("case", ["missing file", "bad dict"])
def test_bad_logging_configuration_fails_like_upstream(case):
    with tempfile.TemporaryDirectory(prefix="cglogcfg-") as d:
        if case == "missing file":
            args = ["--log-config", os.path.join(d, "nope.ini")]
            want = "nope.ini"
        else:
            conf = os.path.join(d, "bad.conf.py")
            with open(conf, "w") as f:
                f.write("logconfig_dict = {'handlers': {}}\n")  # root keeps 'console'
            args = ["-c", conf]
            want = "Unable to configure"
        ours = run_cmd(args + ["--bind", "127.0.0.1:0", "logapp:app"], cwd=APPS, timeout=30)
        theirs = run_cmd(args + ["--bind", "127.0.0.1:0", "logapp:app"], cwd=APPS, timeout=30,
                         binary=os.path.join(os.path.dirname(sys.executable), "gunicorn"))
        assert ours.returncode == theirs.returncode == 1, (ours.stderr, theirs.stderr)
        assert want in ours.stderr and want in theirs.stderr, (ours.stderr, theirs.stderr)
