"""WebSocket close handshake under -k asgi (RFC 6455 7.1.2), as upstream's
asgi worker: after the app's websocket.close the server sends its close
frame and waits for the client's (up to 5 s) before closing the TCP
connection; the app's send() completes only then.  A raw-socket client
controls when (or whether) it answers."""
import base64
import os
import socket
import struct
import time

from conftest import ROOT

APPS = os.path.join(ROOT, "tests", "apps", "asgi")


def ws_connect(srv):
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return s


def send_frame(s, opcode, payload):
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    s.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)


def read_frame(s):
    hdr = recv_exact(s, 2)
    n = hdr[1] & 0x7F
    if n == 126:
        n = struct.unpack("!H", recv_exact(s, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", recv_exact(s, 8))[0]
    return hdr[0] & 0x0F, recv_exact(s, n)


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise AssertionError("connection closed after %r" % out)
        out += chunk
    return out


def marks(path):
    try:
        with open(path) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


def wait_eof(s, timeout):
    """True when the server closes the connection within `timeout` s."""
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


def test_server_waits_for_client_close_frame(server_factory, tmp_path):
    srv = server_factory(["--worker-class", "asgi", "--workers", "1", "--chdir", APPS,
                          "hello:app"])
    marker = str(tmp_path / "marks")
    s = ws_connect(srv)
    try:
        send_frame(s, 0x1, b"close-mark:" + marker.encode())
        opcode, payload = read_frame(s)
        assert opcode == 0x8 and payload == struct.pack("!H", 4002) + b"marked"
        # The handshake is not over: the connection stays open and the
        # app's send() has not returned.
        assert not wait_eof(s, 0.5)
        assert marks(marker) == []
        send_frame(s, 0x8, struct.pack("!H", 4002))
        assert wait_eof(s, 10)
        deadline = time.monotonic() + 10
        while marks(marker) != ["returned"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marks(marker) == ["returned"]
    finally:
        s.close()


def test_close_handshake_times_out(server_factory, tmp_path):
    srv = server_factory(["--worker-class", "asgi", "--workers", "1", "--chdir", APPS,
                          "--log-level", "debug", "hello:app"])
    marker = str(tmp_path / "marks")
    s = ws_connect(srv)
    try:
        send_frame(s, 0x1, b"close-mark:" + marker.encode())
        opcode, _ = read_frame(s)
        assert opcode == 0x8
        # The client never answers: the server gives up (5 s) and closes.
        assert wait_eof(s, 15)
        srv.wait_for_log(r"WebSocket close handshake timeout")
        deadline = time.monotonic() + 10
        while marks(marker) != ["returned"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marks(marker) == ["returned"]
    finally:
        s.close()


def test_wait_outlives_the_app(server_factory):
    """The app sends its close frame and returns at once (its send() still
    waited); the connection stays open until the client's close frame."""
    srv = server_factory(["--worker-class", "asgi", "--workers", "1", "--chdir", APPS,
                          "hello:app"])
    s = ws_connect(srv)
    try:
        send_frame(s, 0x1, b"close")        # the app sends 4001 and returns
        opcode, payload = read_frame(s)
        assert opcode == 0x8 and payload[:2] == struct.pack("!H", 4001)
        assert not wait_eof(s, 0.3)
        send_frame(s, 0x8, struct.pack("!H", 4001))
        assert wait_eof(s, 10)
    finally:
        s.close()
