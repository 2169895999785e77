"""Side by side with upstream gunicorn's own asgi worker (`gunicorn -k
asgi`): the scope an echo app sees must be the same for every request here,
except the differences listed in docs/compatibility.md (normalised below:
the ports of the two servers and the lifespan state)."""
import json
import os
import socket

import pytest

from conftest import GUNICORN, ROOT, Server

APPS = os.path.join(ROOT, "tests", "apps", "asgi")

# (request head without the final CRLF, body)
REQUESTS = [
    (b"GET /scope HTTP/1.1\r\nHost: a", b""),
    (b"GET /scope/ HTTP/1.1\r\nHost: a", b""),
    (b"GET /scope?x=1&y=2 HTTP/1.1\r\nHost: a", b""),
    (b"GET /scope?x=%20y&z=%E2%82%AC HTTP/1.1\r\nHost: a", b""),
    (b"GET /scope/a%20b HTTP/1.1\r\nHost: a", b""),
    (b"GET /scope/%E2%82%AC HTTP/1.1\r\nHost: a", b""),
    (b"GET /scope/%ff%fe HTTP/1.1\r\nHost: a", b""),
    (b"GET /scope/%zz HTTP/1.1\r\nHost: a", b""),
    (b"GET /scope/%2F%2f HTTP/1.1\r\nHost: a", b""),
    (b"GET /scope/a+b HTTP/1.1\r\nHost: a", b""),
    (b"GET /scope/%25 HTTP/1.1\r\nHost: a", b""),
    (b"GET /scope? HTTP/1.1\r\nHost: a", b""),
    (b"GET /scope?a=b?c HTTP/1.1\r\nHost: a", b""),
    (b"GET /scope//double HTTP/1.1\r\nHost: a", b""),
    (b"GET /scope/\xc3\xa9 HTTP/1.1\r\nHost: a", b""),
    (b"GET /scope HTTP/1.0", b""),
    (b"GET /scope HTTP/1.0\r\nConnection: keep-alive", b""),
    (b"POST /scope HTTP/1.1\r\nHost: a\r\nContent-Length: 3", b"abc"),
    (b"PUT /scope HTTP/1.1\r\nHost: a\r\nContent-Length: 0", b""),
    (b"DELETE /scope HTTP/1.1\r\nHost: a", b""),
    (b"PATCH /scope HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
     b"Content-Length: 2", b"{}"),
    (b"OPTIONS /scope HTTP/1.1\r\nHost: a", b""),
    (b"POST /scope HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked", b"3\r\nabc\r\n0\r\n\r\n"),
    (b"GET /scope HTTP/1.1\r\nHost: a\r\nX-Custom: Value\r\nx-lower: v2", b""),
    (b"GET /scope HTTP/1.1\r\nHost: a\r\nAccept: a\r\nAccept: b", b""),
    (b"GET /scope HTTP/1.1\r\nHost: a\r\nX-Spaces:    padded   ", b""),
    (b"GET /scope HTTP/1.1\r\nHost: a\r\nX-Empty:", b""),
    (b"GET /scope HTTP/1.1\r\nHost: a\r\nCookie: a=1; b=2\r\nUser-Agent: t/1", b""),
    (b"GET /scope HTTP/1.1\r\nHost: a\r\nX-Latin: caf\xe9", b""),
    (b"GET /scope HTTP/1.1\r\nHost: a\r\nConnection: close", b""),
    (b"GET /scope HTTP/1.1\r\nHost: example.com:8080", b""),
    (b"GET /scope HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https", b""),
    (b"GET /scope?q=%26%3D HTTP/1.1\r\nHost: a", b""),
    (b"HEAD /scope HTTP/1.1\r\nHost: a", b""),
    (b"GET /scope;param=1 HTTP/1.1\r\nHost: a", b""),
    (b"GET /scope/~user/!$&'()*+,;= HTTP/1.1\r\nHost: a", b""),
]


def fetch(port, head, body):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        req = head + b"\r\n"
        if b"Connection:" not in head:
            req += b"Connection: close\r\n"
        s.sendall(req + b"\r\n" + body)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    finally:
        s.close()
    resp_head, _, resp_body = out.partition(b"\r\n\r\n")
    status = resp_head.split(b"\r\n", 1)[0]
    return status, resp_body


def normalise(status, body, port):
    if not status.endswith(b"200 OK") or not body:
        # Error answers: same status; the message text may differ
        # (docs/compatibility.md).
        return status, None
    scope = json.loads(body)
    assert scope["server"] == ["127.0.0.1", port]
    scope["server"] = ["127.0.0.1", "PORT"]
    scope["client"][1] = "CLIENT-PORT"
    return status, scope


@pytest.fixture(scope="module")
def servers(request):
    args = ["--worker-class", "asgi", "--workers", "1", "--chdir", APPS, "--asgi-lifespan",
            "off", "hello:app"]
    ours = Server(args)
    request.addfinalizer(ours.stop)
    theirs = Server(args, binary=GUNICORN)
    request.addfinalizer(theirs.stop)
    return ours, theirs


@pytest.mark.parametrize("head,body", REQUESTS, ids=[r[0].split(b"\r\n")[0].decode("latin-1")
                                                      for r in REQUESTS])
def test_scope_matches_upstream(servers, head, body):
    ours, theirs = servers
    got = normalise(*fetch(ours.port, head, body), ours.port)
    want = normalise(*fetch(theirs.port, head, body), theirs.port)
    assert got == want
