"""Connection handling on the wire, by worker class: the sync worker
answers one request per connection with `Connection: close` and then
closes, whatever the client asks; a keep-alive worker class (WORKER_TRAITS)
answers several requests on one connection.  Also the same app over a Unix
socket."""
import os
import socket
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "conformance"))
from cgtest_support import (SERVERS, WORKER_CLASSES, WORKER_TRAITS, app_calls,  # noqa: E402
                            connect, exchange, final_responses, parse_responses,
                            read_all, server_pool)  # noqa: F401

PARAMS = [(s, w) for s in SERVERS for w in WORKER_CLASSES]


@pytest.fixture(params=PARAMS, ids=lambda p: "%s-%s" % p)
def srv(request, server_pool):
    return server_pool.get(request.param[0], request.param[1], [])


def test_keepalive_request(srv):
    """Two requests written one after the other on one connection, the
    second only after the first answer arrived."""
    s = connect(srv)
    try:
        s.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        first = b""
        while b"\r\n\r\n" not in first or len(parse_ok(first)) < 1:
            chunk = s.recv(65536)
            if not chunk:
                break
            first += chunk
        r1 = final_responses(parse_responses(first))[0]
        assert r1.status == 200 and r1.json()["env"]["PATH_INFO"] == "/one"
        if not WORKER_TRAITS[srv.worker_class]["keeps_alive"]:
            assert r1.header("Connection") == "close"
            # the server closes: nothing more comes, and EOF arrives
            assert read_all(s) == b""
            return
        s.sendall(b"GET /two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        r2 = final_responses(parse_responses(read_all(s)))
        assert [r.json()["env"]["PATH_INFO"] for r in r2] == ["/two"]
    finally:
        s.close()


def parse_ok(data):
    try:
        return parse_responses(data)
    except (ValueError, IndexError):
        return []


def test_pipelined_requests(srv):
    before = len(app_calls(srv))
    data = exchange(srv, b"GET /p1 HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"GET /p2 HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"GET /p3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    paths = [r.json()["env"]["PATH_INFO"] for r in final_responses(parse_responses(data))]
    want = ["/p1", "/p2", "/p3"]
    if not WORKER_TRAITS[srv.worker_class]["keeps_alive"]:
        want = want[:1]
    assert paths == want
    assert [c["uri"] for c in app_calls(srv)[before:]] == want


@pytest.mark.parametrize("server_name,worker_class", PARAMS)
def test_unix_socket(server_pool, tmp_path_factory, server_name, worker_class):
    path = str(tmp_path_factory.mktemp("cgunix") / "s.sock")
    srv = server_pool.get(server_name, worker_class, [], bind="unix:" + path)
    assert srv.unix_path == path
    data = exchange(srv, b"POST /u?x=1 HTTP/1.1\r\nHost: h.example:81\r\n"
                         b"Content-Length: 3\r\n\r\nabc")
    r = final_responses(parse_responses(data))[0]
    env = r.json()["env"]
    assert r.status == 200
    assert (env["PATH_INFO"], env["QUERY_STRING"]) == ("/u", "x=1")
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("h.example", "81")
    assert r.json()["body"] == "YWJj"
