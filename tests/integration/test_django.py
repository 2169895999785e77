"""An ordinary Django project (tests/apps/http/djproj) served unmodified:
routing, JSON, form posts, a 10 MB multipart upload, streaming responses,
cookies, redirects, 404/500 pages, FileResponse (wsgi.file_wrapper)."""
import hashlib
import os
import sys

import pytest
import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "conformance"))
from cgtest_support import APPS, SERVERS, WORKER_CLASSES, ServerPool  # noqa: E402


@pytest.fixture(scope="module", params=[(s, w) for s in SERVERS for w in WORKER_CLASSES],
                ids=lambda p: "%s-%s" % p)
def base(request):
    name, worker = request.param
    pool = ServerPool()
    try:
        srv = pool.get(name, worker, [], env={"DJANGO_SETTINGS_MODULE": "djproj.settings"},
                       app="djproj.wsgi:application")
        yield srv.url, srv
    finally:
        pool.stop_all()


def test_routing_and_text(base):
    url, _ = base
    r = requests.get(url + "/")
    assert r.status_code == 200 and r.text == "hello from django\n"


def test_json_and_query(base):
    url, _ = base
    r = requests.get(url + "/json", params=[("a", "1"), ("a", "2"), ("é", "ü")])
    host = url.split("//", 1)[1]
    assert r.json() == {"ok": True, "args": {"a": ["1", "2"], "é": ["ü"]},
                        "scheme": "http", "path": "/json", "host": host}


def test_json_post(base):
    url, _ = base
    r = requests.post(url + "/echo-json", json={"k": ["v", 1]})
    assert r.json() == {"method": "POST", "got": {"k": ["v", 1]}}


def test_form_post(base):
    url, _ = base
    r = requests.post(url + "/form", data=[("name", "Zoë"), ("tag", "a"), ("tag", "b&c")])
    assert r.json() == {"form": {"name": ["Zoë"], "tag": ["a", "b&c"]}}


def test_multipart_upload_10mb(base):
    url, _ = base
    data = os.urandom(10 * 1024 * 1024)
    r = requests.post(url + "/upload", files={"file": ("big.bin", data)}, data={"note": "big"})
    assert r.status_code == 200
    assert r.json() == {"files": {"file": {"filename": "big.bin", "size": len(data),
                                           "sha256": hashlib.sha256(data).hexdigest()}},
                        "fields": {"note": "big"}}


def test_streaming_response(base):
    url, _ = base
    r = requests.get(url + "/stream", params={"n": "200"}, stream=True)
    assert r.status_code == 200 and "Content-Length" not in r.headers
    assert b"".join(r.iter_content(None)) == "".join("line %d\n" % i for i in range(200)).encode()


def test_cookies(base):
    url, _ = base
    s = requests.Session()
    r = s.get(url + "/cookie/set")
    assert len(r.raw.headers.getlist("Set-Cookie")) == 2
    r = s.get(url + "/cookie/get")
    assert r.json() == {"cookies": {"flavour": "oatmeal", "other": "xy"}}


def test_redirects(base):
    url, _ = base
    r = requests.get(url + "/redirect", allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"] == "/json?via=redirect"
    r = requests.get(url + "/redirect")
    assert r.status_code == 200 and r.json()["args"] == {"via": ["redirect"]}


def test_error_pages(base):
    url, srv = base
    r = requests.get(url + "/does-not-exist")
    assert r.status_code == 404 and "Not Found" in r.text
    r = requests.get(url + "/error")
    assert r.status_code == 500 and "Server Error (500)" in r.text
    srv.wait_for_log(r"ValueError: django view failed on purpose")
    # a Host the project does not allow is Django's 400, not the server's
    r = requests.get(url + "/", headers={"Host": "evil.example"})
    assert r.status_code == 400
    assert requests.get(url + "/").status_code == 200


def test_file_response(base):
    url, _ = base
    want = open(os.path.join(APPS, "static", "hello.txt"), "rb").read()
    r = requests.get(url + "/file")
    assert r.status_code == 200 and r.content == want
    assert r.headers["Content-Length"] == str(len(want))
