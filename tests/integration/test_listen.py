"""Bind addresses as gunicorn accepts them, against the real binary: several
at once (IPv4, IPv6, unix socket with umask), fd://N, and a malformed bind."""
import os
import re
import socket
import stat
import subprocess
import tempfile
import time

import pytest

from conftest import CGUNICORN, ROOT, Server, run_cmd, server_env

APPS = os.path.join(ROOT, "tests", "apps", "http")


def http_get(family, addr):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(addr)
        s.sendall(b"GET /x HTTP/1.0\r\nHost: t\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0]


def has_ipv6():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_several_binds_at_once(tmp_path):
    sock = str(tmp_path / "s.sock")
    extra = ["--chdir", APPS, "envapp:app", "-b", "unix:" + sock, "--umask", "0o077"]
    if has_ipv6():
        extra += ["-b", "[::1]:0"]
    with Server(extra) as srv:
        m = srv.wait_for_log(r"Listening at: (\S+) \(\d+\)")
        names = m.group(1).split(",")
        assert names[0].startswith("http://127.0.0.1:")
        assert "unix:" + sock in names
        port4 = int(names[0].rsplit(":", 1)[1])
        assert http_get(socket.AF_INET, ("127.0.0.1", port4)) == b"HTTP/1.0 200 OK"
        assert http_get(socket.AF_UNIX, sock) == b"HTTP/1.0 200 OK"
        # umask 0o077 applies to the socket file: no group/other bits
        assert stat.S_IMODE(os.stat(sock).st_mode) & 0o077 == 0
        if has_ipv6():
            v6 = [n for n in names if n.startswith("http://[::1]:")]
            assert v6, names
            port6 = int(v6[0].rsplit(":", 1)[1])
            assert http_get(socket.AF_INET6, ("::1", port6)) == b"HTTP/1.0 200 OK"
    assert not os.path.exists(sock), "the master removes its unix socket at exit"


def test_fd_bind_serves_an_inherited_socket():
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    port = lsock.getsockname()[1]
    fd = lsock.fileno()
    log = tempfile.NamedTemporaryFile(prefix="cgtest-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [CGUNICORN, "--chdir", APPS, "-b", "fd://%d" % fd, "envapp:app"],
        env=server_env(), stdout=log, stderr=subprocess.STDOUT, pass_fds=(fd,),
        start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        text = ""
        while time.monotonic() < deadline and "Booting worker" not in text:
            time.sleep(0.05)
            text = open(log.name).read()
        assert re.search(r"Listening at: http://127.0.0.1:%d" % port, text), text
        lsock.close()  # only the server holds it now
        assert http_get(socket.AF_INET, ("127.0.0.1", port)) == b"HTTP/1.0 200 OK"
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(15)
        os.unlink(log.name)


@pytest.mark.parametrize("bind", ["127.0.0.1:80a", "[::1", "fd://x"])
def test_malformed_bind_is_refused_naming_it(bind):
    r = run_cmd(["--chdir", APPS, "-b", bind, "envapp:app"])
    assert r.returncode == 1
    assert "bind '%s'" % bind in r.stderr, r.stderr
