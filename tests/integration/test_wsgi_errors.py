"""Application errors: an app that raises gets a 500 and its traceback in
the error log, and the same worker goes on serving; an app that returns a
header holding CR/LF (or a bad header name) gets a 500 -- never a split
response."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "conformance"))
from cgtest_support import (SERVERS, WORKER_CLASSES, app_calls, exchange,  # noqa: E402
                            final_responses, parse_responses, server_pool)  # noqa: F401

H = b"Host: example.test\r\n"


def get(srv, path, mode=None):
    raw = b"GET " + path + b" HTTP/1.1\r\n" + H
    if mode:
        raw += b"X-Cg-Mode: " + mode + b"\r\n"
    data = exchange(srv, raw + b"\r\n")
    return data, final_responses(parse_responses(data))


@pytest.fixture(params=[(s, w) for s in SERVERS for w in WORKER_CLASSES],
                ids=lambda p: "%s-%s" % p)
def srv(request, server_pool):
    name, worker = request.param
    return server_pool.get(name, worker, [])


def test_app_exception_is_500_with_traceback_and_worker_survives(srv):
    data, resps = get(srv, b"/before")
    assert resps[0].status == 200
    pid_before = app_calls(srv)[-1]["pid"]

    data, resps = get(srv, b"/boom", b"raise")
    assert len(resps) == 1 and resps[0].status == 500, data[:300]
    assert b"Internal Server Error" in resps[0].body
    # the traceback (not only a one-line message) reaches the error log
    srv.wait_for_log(r"Error handling request")
    srv.wait_for_log(r"Traceback \(most recent call last\):")
    srv.wait_for_log(r"RuntimeError: envapp was asked to raise")

    data, resps = get(srv, b"/after")
    assert resps[0].status == 200
    assert resps[0].json()["env"]["PATH_INFO"] == "/after"
    assert app_calls(srv)[-1]["pid"] == pid_before, "the worker was replaced"


@pytest.mark.parametrize("mode", [b"badheader", b"badname"])
def test_bad_response_header_is_500_not_split(srv, mode):
    data, resps = get(srv, b"/split", mode)
    assert len(resps) == 1, data
    assert resps[0].status == 500, data[:300]
    assert b"injected" not in data
    assert b"should never be sent" not in data
    names = [k.lower() for k, _ in resps[0].headers]
    assert "set-cookie" not in names and "x-split" not in names and "bad name" not in names
    data, resps = get(srv, b"/still-serving")
    assert resps[0].status == 200
