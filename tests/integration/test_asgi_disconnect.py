"""asgi_disconnect_grace_period under -k asgi, as upstream's ASGI worker
(gunicorn/asgi/protocol.py, connection_lost): when the client goes away
while the application still runs, the app receives http.disconnect and has
the grace period to finish; then its task is cancelled (at once for 0).
The app (tests/apps/asgi/hello.py, /linger) appends what happened to a
marker file; the tests wait on that file with a deadline."""
import os
import socket
import time

import pytest

from conftest import ROOT

APPS = os.path.join(ROOT, "tests", "apps", "asgi")


def marks(path):
    try:
        with open(path) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


def wait_marks(path, pred, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = marks(path)
        if pred(got):
            return got
        time.sleep(0.05)
    raise AssertionError("marker file %s never matched; it holds %r" % (path, marks(path)))


def leave_during(srv, mode, marker, how):
    """Starts /linger, waits until the app runs, then leaves: 'close' (FIN)
    or 'reset' (RST)."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    s.sendall(b"GET /linger?%s&%s HTTP/1.1\r\nHost: x\r\n\r\n" % (mode.encode(), marker.encode()))
    wait_marks(marker, lambda m: "started" in m)
    if how == "reset":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()


@pytest.fixture
def marker(tmp_path):
    return str(tmp_path / "marks")


@pytest.mark.parametrize("how", ["close", "reset"])
def test_app_ignoring_disconnect_is_cancelled_after_grace(server_factory, marker, how):
    srv = server_factory(["--worker-class", "asgi", "--workers", "1", "--chdir", APPS,
                          "--asgi-disconnect-grace-period", "1", "hello:app"])
    leave_during(srv, "ignore", marker, how)
    got = wait_marks(marker, lambda m: "cancelled" in m or "finished" in m)
    assert got == ["started", "cancelled"]
    # The worker keeps serving.
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert s.recv(4096).startswith(b"HTTP/1.1 200 OK")
    s.close()


def test_app_finishes_cleanup_within_grace(server_factory, marker):
    srv = server_factory(["--worker-class", "asgi", "--workers", "1", "--chdir", APPS,
                          "--asgi-disconnect-grace-period", "30", "hello:app"])
    leave_during(srv, "cleanup", marker, "close")
    got = wait_marks(marker, lambda m: "cancelled" in m or "finished" in m)
    assert got == ["started", "disconnect", "finished"]


def test_grace_zero_cancels_at_once(server_factory, marker):
    srv = server_factory(["--worker-class", "asgi", "--workers", "1", "--chdir", APPS,
                          "--asgi-disconnect-grace-period", "0", "hello:app"])
    leave_during(srv, "cleanup", marker, "close")
    got = wait_marks(marker, lambda m: "cancelled" in m or "finished" in m)
    # Cancelled before (or right after) it saw the disconnect; never done.
    assert got[0] == "started" and got[-1] == "cancelled", got


def test_grace_setting_is_implemented(server_factory, marker):
    srv = server_factory(["--worker-class", "asgi", "--workers", "1", "--chdir", APPS,
                          "--asgi-disconnect-grace-period", "7", "hello:app"])
    assert "asgi_disconnect_grace_period" not in srv.log()
