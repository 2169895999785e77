"""RFC 6455 details of the asgi worker's WebSocket, with a raw-socket
client: invalid UTF-8 in a fragmented text message fails the connection
(1007) at the fragment that holds it, a code point split between fragments
is fine, a client that half-closes without a close frame is not sent one
(the connection just closes, as upstream), and an upgrade over HTTP/1.0 is
refused with 400 (the handshake needs HTTP/1.1)."""
import os
import socket
import struct

import pytest

from conftest import ROOT, Server
from test_asgi_ws_close import read_frame, ws_connect

APPS = os.path.join(ROOT, "tests", "apps", "asgi")


@pytest.fixture(scope="module")
def srv():
    s = Server(["--worker-class", "asgi", "--workers", "1", "--chdir", APPS, "hello:app"])
    yield s
    s.stop()


def frame(opcode, payload, fin=True):
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + mask + masked


def close_code(s):
    opcode, payload = read_frame(s)
    assert opcode == 8, (opcode, payload)
    return struct.unpack("!H", payload[:2])[0]


def test_invalid_utf8_fails_at_the_offending_fragment(srv):
    s = ws_connect(srv)
    try:
        s.sendall(frame(1, b"ab\xff", fin=False))  # the message is not over
        s.settimeout(5)
        assert close_code(s) == 1007
    finally:
        s.close()


def test_surrogate_in_a_first_fragment_fails_at_once(srv):
    s = ws_connect(srv)
    try:
        s.sendall(frame(1, b"x\xed\xa0\x80", fin=False))  # U+D800
        s.settimeout(5)
        assert close_code(s) == 1007
    finally:
        s.close()


def test_code_point_split_between_fragments_is_valid(srv):
    s = ws_connect(srv)
    try:
        s.sendall(frame(1, b"a\xc3", fin=False) + frame(0, b"\xa9b", fin=False) +
                  frame(0, b"!", fin=True))
        s.settimeout(5)
        assert read_frame(s) == (1, "a\u00e9b!".encode())
    finally:
        s.close()


def test_message_ending_inside_a_code_point_fails(srv):
    s = ws_connect(srv)
    try:
        s.sendall(frame(1, b"a\xe2\x82", fin=False) + frame(0, b"", fin=True))
        s.settimeout(5)
        assert close_code(s) == 1007
    finally:
        s.close()


def test_half_close_without_close_frame_gets_no_close_frame(srv):
    s = ws_connect(srv)
    try:
        s.sendall(frame(1, b"hi"))
        s.settimeout(5)
        assert read_frame(s) == (1, b"hi")
        s.shutdown(socket.SHUT_WR)
        rest = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            rest += chunk
        assert rest == b"", rest  # upstream: no 1011 "Application error" frame
    finally:
        s.close()
    assert "Application error" not in srv.log()


def test_upgrade_over_http10_is_refused(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"GET /ws HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Version: 13\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        out = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            out += chunk
    assert out.startswith(b"HTTP/1.1 400 "), out
    assert b"HTTP/1.1" in out.split(b"\r\n\r\n", 1)[1]  # the body says why
