"""Event-driven connections die in every way a client can make them die --
it closes mid-head or mid-body, resets, sends garbage (protocol error), is
evicted at worker_connections, drops or closes a WebSocket -- and the worker
goes on serving: the connection is closed by the callback that found it
dead and freed only after that callback returned (server/cg_conn.h,
deferred release). Under `make check-asan` a use after free in any of these
paths aborts the worker, which this test sees as a second "Booting worker"
line or an AddressSanitizer report."""
import base64
import os
import socket
import struct
import time

import pytest

from conftest import ROOT, Server

APPS = {"gthread": (os.path.join(ROOT, "tests", "apps", "http"), "bodyapp:app"),
        "asgi": (os.path.join(ROOT, "tests", "apps", "asgi"), "hello:app")}


@pytest.fixture(scope="module", params=["gthread", "asgi"])
def server(request):
    chdir, app = APPS[request.param]
    srv = Server(["--chdir", chdir, "-k", request.param, "--workers", "1", "--threads", "2",
                  "--worker-connections", "6", "--keep-alive", "5", app])
    srv.worker_class = request.param
    request.addfinalizer(srv.stop)
    return srv


def connect(srv):
    return socket.create_connection(("127.0.0.1", srv.port), timeout=10)


def reset(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def read_to_close(s):
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    return out


def get(srv, path="/"):
    s = connect(srv)
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    return read_to_close(s)


def ws_open(srv):
    s = connect(srv)
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return s


def ws_frame(opcode, payload):
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def one_round(srv):
    # closes mid-head, and resets mid-head
    s = connect(srv)
    s.sendall(b"GET / HTTP/1.1\r\nHo")
    s.close()
    s = connect(srv)
    s.sendall(b"GET / HTTP/1.1\r\nHo")
    reset(s)
    # closes mid-body (the app may be reading it), and resets mid-body
    for end in (socket.socket.close, reset):
        s = connect(srv)
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
        end(s)
    # a protocol error, answered; the client closes before reading it, or reads it
    s = connect(srv)
    s.sendall(b"\x00\x01garbage\r\n\r\n")
    s.close()
    assert get(srv, "/ bad").startswith(b"HTTP/1.1 400"), "invalid request line answered"
    # keep-alive connections parked, more than worker_connections: the
    # oldest idle ones are evicted while new clients come
    parked = [connect(srv) for _ in range(8)]
    for p in parked:
        p.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert get(srv).startswith(b"HTTP/1.1 200")
    for p in parked:
        p.close()
    if srv.worker_class == "asgi":
        # WebSocket: dropped, reset, closed by the client, closed by the app
        reset(ws_open(srv))
        ws_open(srv).close()
        s = ws_open(srv)
        s.sendall(ws_frame(0x8, struct.pack("!H", 1000)))
        read_to_close(s)
        s = ws_open(srv)
        s.sendall(ws_frame(0x1, b"close"))
        s.recv(64)
        s.sendall(ws_frame(0x8, struct.pack("!H", 1000)))
        read_to_close(s)


def test_dying_connections_leave_the_worker_serving(server):
    for _ in range(5):
        one_round(server)
    deadline = time.monotonic() + 10
    out = b""
    while time.monotonic() < deadline:
        out = get(server)
        if out.startswith(b"HTTP/1.1 200"):
            break
        time.sleep(0.1)
    assert out.startswith(b"HTTP/1.1 200"), out
    log = server.log()
    assert "AddressSanitizer" not in log, log
    assert log.count("Booting worker with pid") == 1, log  # the worker never died
