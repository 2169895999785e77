"""syslog, syslog_addr, syslog_prefix, syslog_facility and
disable_redirect_access_to_syslog: error and access lines arrive at a UDP
socket and a Unix datagram socket the test opens, framed as upstream
gunicorn's SysLogHandler frames them (checked side by side with upstream
on the same sockets' kinds, pids and ports masked)."""
import os
import re
import socket
import tempfile
import time

import pytest

from conftest import GUNICORN, ROOT, Server, run_cmd
from master_support import get

APPS = os.path.join(ROOT, "tests", "apps", "master")


class Sink:
    def __init__(self, family):
        self.family = family
        if family == socket.AF_UNIX:
            self.dir = tempfile.TemporaryDirectory(prefix="cgtest-syslog-")
            self.path = os.path.join(self.dir.name, "log.sock")
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(self.path)
            self.addr = "unix://" + self.path
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
            self.addr = "udp://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self.got = []

    def wait_for(self, pattern, timeout=20):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.got:
                if rx.search(m):
                    return m
            try:
                self.got.append(self.sock.recv(65536).decode())
            except socket.timeout:
                pass
        raise AssertionError("no syslog message matched %r; got %r" % (pattern, self.got))

    def close(self):
        self.sock.close()
        if self.family == socket.AF_UNIX:
            self.dir.cleanup()


@pytest.fixture(params=["udp", "unix"])
def sink(request):
    s = Sink(socket.AF_INET if request.param == "udp" else socket.AF_UNIX)
    yield s
    s.close()


def start(sink, extra=(), binary=None):
    return Server(["--chdir", APPS, "-w", "1", "--log-syslog", "--log-syslog-to", sink.addr]
                  + list(extra) + ["app:app"], cwd=APPS, binary=binary)


def mask(msg):
    """Times, then every number (pids, ports, body lengths naming a pid)."""
    msg = re.sub(r"\[\d\d/\w+/\d{4}:[^\]]*\]", "[TIME]", msg)
    pri, rest = msg.split(">", 1)  # the priority is compared as it is
    return pri + ">" + re.sub(r"\d+", "N", rest)


def test_error_and_access_lines(sink):
    srv = start(sink)
    try:
        boot = sink.wait_for(r"Booting worker with pid")
        pid = int(re.search(r"pid: (\d+)", boot).group(1))
        # user facility (1) * 8 + info (6); prefix is proc_name with ':' made '.'.
        assert boot == "<14>gunicorn.app.app.error: [%d] Booting worker with pid: %d\x00" % (
            pid, pid)
        listen = sink.wait_for(r"Listening at")
        assert listen == "<14>gunicorn.app.app.error: [%d] Listening at: %s (%d)\x00" % (
            srv.proc.pid, srv.url, srv.proc.pid)
        assert get(srv.port, "/")[0] == 200
        access = sink.wait_for(r"\.access: ")
        assert re.match(r'<14>gunicorn\.app\.app\.access: \[%d\] 127\.0\.0\.1 - - \[[^\]]+\] '
                        r'"GET / HTTP/1\.1" 200 \d+ "-" "[^"]*"\x00$' % pid, access), access
        # The error log file still gets its lines.
        assert "Booting worker with pid" in srv.log()
    finally:
        srv.stop()


def test_side_by_side_with_upstream(sink):
    formats = {}
    for name, binary in (("cg", None), ("up", GUNICORN)):
        s = Sink(sink.family)
        srv = start(s, binary=binary)
        try:
            s.wait_for(r"Booting worker with pid")
            s.wait_for(r"Listening at")
            assert get(srv.port, "/")[0] == 200
            s.wait_for(r"\.access: ")
        finally:
            srv.stop()
            s.close()
        formats[name] = {mask(m) for m in s.got
                         if re.search(r"Booting worker|Listening at|\.access: ", m)}
    assert formats["cg"] == formats["up"]


def test_prefix_facility_and_no_access(sink):
    srv = start(sink, ["--log-syslog-prefix", "shop", "--log-syslog-facility", "local3",
                       "--disable-redirect-access-to-syslog", "--log-level", "debug"])
    try:
        m = sink.wait_for(r"Booting worker")
        assert m.startswith("<158>gunicorn.shop.error: [")  # local3 (19) * 8 + info
        assert sink.wait_for(r"Arbiter booted").startswith("<159>gunicorn.shop.error: [")
        assert get(srv.port, "/")[0] == 200
        srv.signal(1)  # HUP: lines after the request are flushed through
        sink.wait_for(r"Hang up")
        assert not any(".access: " in g for g in sink.got)
    finally:
        srv.stop()


def test_bad_facility_and_address_fail_start():
    r = run_cmd(["--chdir", APPS, "-b", "127.0.0.1:0", "--log-syslog", "--log-syslog-facility",
                 "nope", "app:app"], timeout=30)
    assert r.returncode != 0 and "syslog_facility 'nope'" in r.stderr
    r = run_cmd(["--chdir", APPS, "-b", "127.0.0.1:0", "--log-syslog", "--log-syslog-to",
                 "ftp://x", "app:app"], timeout=30)
    assert r.returncode != 0 and "invalid syslog address" in r.stderr


def test_python_logging_paths_send_once(sink, tmp_path):
    """With a logger_class, the syslog handler is the one its setup() adds
    (Python's SysLogHandler): each line arrives once. (With logconfig_dict,
    gunicorn's dictConfig replaces that handler, so nothing is sent.)"""
    (tmp_path / "mylog.py").write_text(
        "from gunicorn.glogging import Logger\n\nclass L(Logger):\n    pass\n")
    for extra in (["--pythonpath", str(tmp_path), "--logger-class", "mylog.L"],):
        sink.got.clear()
        srv = start(sink, extra)
        try:
            boot = sink.wait_for(r"Booting worker with pid")
            assert re.match(r"<14>gunicorn\.app\.app\.error: \[\d+\] Booting worker", boot)
            assert get(srv.port, "/")[0] == 200
            sink.wait_for(r"\.access: ")
            srv.signal(1)
            sink.wait_for(r"Hang up")
            assert len([g for g in sink.got if "Booting worker" in g]) == 1, sink.got
            assert len([g for g in sink.got if ".access: " in g]) == 1, sink.got
        finally:
            srv.stop()
