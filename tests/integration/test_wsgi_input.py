"""wsgi.input against the real binary: every read style, Content-Length and
chunked bodies, small and large, must hand the app exactly the bytes sent."""
import hashlib
import os

import pytest
import requests

from conftest import ROOT

APPS = os.path.join(ROOT, "tests", "apps", "http")
SIZES = [0, 1, 4095, 4096, 65537, 3 * 1024 * 1024 + 7]
MODES = ["chunks", "all", "sized", "lines"]


@pytest.fixture(scope="module")
def server(request):
    from conftest import Server
    srv = Server(["--chdir", APPS, "inputapp:app", "--timeout", "20"])
    request.addfinalizer(srv.stop)
    return srv


def payload(n):
    # lines of varying length so readline() and iteration are exercised
    out = bytearray()
    i = 0
    while len(out) < n:
        out += (b"line %d " % i) * (i % 7 + 1) + b"\n"
        i += 1
    return bytes(out[:n])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_body_arrives_intact(server, mode, size, chunked):
    if mode == "sized" and chunked:
        pytest.skip("read(CONTENT_LENGTH) needs a Content-Length")
    data = payload(size)
    body = iter([data[i:i + 10000] for i in range(0, len(data), 10000)]) if chunked else data
    r = requests.post(server.url + "/?mode=" + mode, data=body, timeout=20)
    assert r.status_code == 200
    assert r.text == "%s %d" % (hashlib.md5(data).hexdigest(), len(data))


def test_small_reads_of_a_large_body(server):
    data = payload(200000)
    r = requests.post(server.url + "/?mode=chunks&size=1000", data=data, timeout=20)
    assert r.text == "%s %d" % (hashlib.md5(data).hexdigest(), len(data))
