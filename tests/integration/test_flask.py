"""An unmodified Flask app (tests/apps/http/flaskapp.py) served by the
server under test: routing, JSON, form posts, a 10 MB multipart upload,
streaming, cookies, redirects, 404/403/500 pages and files sent through
wsgi.file_wrapper (send_file / send_from_directory / the static route)."""
import hashlib
import os
import socket
import sys
import tempfile
import time

import pytest
import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "conformance"))
from cgtest_support import APPS, SERVERS, WORKER_CLASSES, ServerPool  # noqa: E402

BLOB = os.urandom(3 * 1024 * 1024 + 17)
# Larger than what loopback socket buffers hold, so that sending it has to
# wait for a slow reader (a non-blocking socket answers sendfile with EAGAIN)
BIG = os.urandom(24 * 1024 * 1024 + 5)


@pytest.fixture(scope="module")
def files_dir():
    with tempfile.TemporaryDirectory(prefix="cgflask-") as d:
        with open(os.path.join(d, "blob.bin"), "wb") as f:
            f.write(BLOB)
        with open(os.path.join(d, "big.bin"), "wb") as f:
            f.write(BIG)
        yield d


@pytest.fixture(scope="module", params=[(s, w) for s in SERVERS for w in WORKER_CLASSES],
                ids=lambda p: "%s-%s" % p)
def base(request, files_dir):
    name, worker = request.param
    pool = ServerPool()
    try:
        srv = pool.get(name, worker, [], env={"CG_FILES_DIR": files_dir},
                       app="flaskapp:app")
        yield srv.url, srv
    finally:
        pool.stop_all()


def test_routing_and_text(base):
    url, _ = base
    r = requests.get(url + "/")
    assert r.status_code == 200
    assert r.text == "hello from flask\n"
    assert r.headers["Content-Type"].startswith("text/html")


def test_json_and_query(base):
    url, _ = base
    r = requests.get(url + "/json", params=[("a", "1"), ("a", "2"), ("é", "ü")])
    assert r.status_code == 200
    assert r.json() == {"ok": True, "args": {"a": ["1", "2"], "é": ["ü"]},
                        "scheme": "http", "path": "/json", "script_root": ""}


def test_json_post(base):
    url, _ = base
    payload = {"x": [1, 2, {"y": "z"}], "s": "naïve"}
    r = requests.post(url + "/echo-json", json=payload)
    assert r.json() == {"method": "POST", "got": payload}
    r = requests.put(url + "/echo-json", json=[1])
    assert r.json() == {"method": "PUT", "got": [1]}


def test_form_post(base):
    url, _ = base
    r = requests.post(url + "/form", data=[("name", "Zoë"), ("tag", "a"), ("tag", "b&c")])
    assert r.json() == {"form": {"name": ["Zoë"], "tag": ["a", "b&c"]}}


def test_multipart_upload_10mb(base):
    url, _ = base
    data = os.urandom(10 * 1024 * 1024)
    r = requests.post(url + "/upload", files={"file": ("big.bin", data, "application/octet-stream")},
                      data={"note": "ten megabytes"})
    assert r.status_code == 200
    assert r.json() == {"files": {"file": {"filename": "big.bin", "size": len(data),
                                           "sha256": hashlib.sha256(data).hexdigest(),
                                           "content_type": "application/octet-stream"}},
                        "fields": {"note": "ten megabytes"}}


def test_chunked_upload(base):
    url, _ = base
    payload = b'{"chunked": true}'

    def gen():
        yield payload[:5]
        yield payload[5:]
    r = requests.post(url + "/echo-json", data=gen(), headers={"Content-Type": "application/json"})
    assert r.json() == {"method": "POST", "got": {"chunked": True}}


def test_streaming_response(base):
    url, _ = base
    r = requests.get(url + "/stream", params={"n": "300"}, stream=True)
    assert r.status_code == 200
    assert "Content-Length" not in r.headers
    body = b"".join(r.iter_content(None))
    assert body == "".join("line %d\n" % i for i in range(300)).encode()


def test_cookies(base):
    url, _ = base
    s = requests.Session()
    r = s.get(url + "/cookie/set")
    set_cookies = r.raw.headers.getlist("Set-Cookie")
    assert len(set_cookies) == 2, set_cookies
    assert any(c.startswith("flavour=oatmeal") and "HttpOnly" in c for c in set_cookies)
    r = s.get(url + "/cookie/get")
    assert r.json() == {"cookies": {"flavour": "oatmeal", "other": "x y"}}


def test_redirect(base):
    url, _ = base
    r = requests.get(url + "/redirect", allow_redirects=False)
    assert r.status_code == 302
    assert r.headers["Location"] == "/json?via=redirect"
    r = requests.get(url + "/redirect")
    assert r.status_code == 200 and r.json()["args"] == {"via": ["redirect"]}


def test_error_pages(base):
    url, srv = base
    r = requests.get(url + "/nope")
    assert r.status_code == 404 and "Not Found" in r.text
    r = requests.get(url + "/forbidden")
    assert r.status_code == 403
    r = requests.get(url + "/error")
    assert r.status_code == 500 and "Internal Server Error" in r.text
    # Flask logs the exception to the app logger, which goes to stderr
    srv.wait_for_log(r"ValueError: flask view failed on purpose")
    assert requests.get(url + "/").status_code == 200


def test_send_file(base):
    url, _ = base
    want = open(os.path.join(APPS, "static", "hello.txt"), "rb").read()
    r = requests.get(url + "/file")
    assert r.status_code == 200
    assert r.content == want
    assert r.headers["Content-Length"] == str(len(want))
    r = requests.get(url + "/static/hello.txt")
    assert r.status_code == 200 and r.content == want


def test_send_large_file_and_range(base):
    url, _ = base
    r = requests.get(url + "/download/blob.bin")
    assert r.status_code == 200
    assert r.headers["Content-Length"] == str(len(BLOB))
    assert r.content == BLOB
    r = requests.get(url + "/download/blob.bin", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == BLOB[100:200]
    r = requests.head(url + "/download/blob.bin")
    assert r.status_code == 200 and r.content == b""
    assert r.headers["Content-Length"] == str(len(BLOB))
    r = requests.get(url + "/download/missing.bin")
    assert r.status_code == 404


def test_large_file_to_slow_reader(base):
    """A file bigger than the socket buffers, through wsgi.file_wrapper, to a
    client that waits before it reads and reads with a small buffer: every
    byte arrives (the server waits for the socket instead of cutting the
    response short)."""
    _, srv = base
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        s.sendall(b"GET /download/big.bin HTTP/1.0\r\nHost: x\r\n\r\n")
        time.sleep(0.5)
        data = bytearray()
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0]
    assert len(body) == len(BIG)
    assert hashlib.sha256(body).digest() == hashlib.sha256(BIG).digest()
