"""WSGI app for the HTTP/2 suites (tests/integration/test_h2*.py): the
same routes under cgunicorn and upstream gunicorn 27."""
import hashlib
import json
import os
import tempfile
import threading
import time

SKIP = {"REMOTE_PORT", "gunicorn.socket", "wsgi.input", "wsgi.errors", "wsgi.file_wrapper",
        "wsgi.early_hints"}
_FILE = os.path.join(tempfile.gettempdir(), "cg-h2app-%d.bin" % os.getpid())
# /inflight: how many of its requests ran at once in this process, at most
_INFLIGHT = {"now": 0, "peak": 0}
_INFLIGHT_LOCK = threading.Lock()


def _rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/status/"):
        code = int(path.rsplit("/", 1)[1])
        start_response("%d Whatever" % code, [("Content-Type", "text/plain")])
        return [] if code in (204, 304) else [b"status %d\n" % code]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"chunk %d\n" % i for i in range(50))
    if path == "/big":
        body = bytes(range(256)) * 4096
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path == "/file":
        if not os.path.exists(_FILE):
            with open(_FILE, "wb") as f:
                f.write(b"0123456789abcdef" * 20000)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(_FILE, "rb"), 8192)
    if path == "/headers":
        start_response("201 Created", [("X-One", "1"), ("X-Two", "a, b"),
                                       ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
                                       ("Content-Type", "text/plain")])
        return [b"made"]
    if path == "/raise":
        raise RuntimeError("boom")
    if path == "/slowread":
        # reads the upload slowly: the server must not buffer it all
        inp = environ["wsgi.input"]
        total, peak = 0, 0
        h = hashlib.sha256()
        while True:
            b = inp.read(65536)
            if not b:
                break
            h.update(b)
            total += len(b)
            if total % (1 << 20) < 65536:
                time.sleep(0.05)
                peak = max(peak, _rss_kb())
        out = json.dumps({"total": total, "sha": h.hexdigest(), "peak_rss_kb": peak}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [out]
    if path == "/longsleep":  # outlasts a QUIT's grace
        time.sleep(4.0)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slept"]
    if path == "/sleep":
        time.sleep(1.0)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slept"]
    if path == "/inflight":
        with _INFLIGHT_LOCK:
            _INFLIGHT["now"] += 1
            _INFLIGHT["peak"] = max(_INFLIGHT["peak"], _INFLIGHT["now"])
        time.sleep(0.01)
        with _INFLIGHT_LOCK:
            _INFLIGHT["now"] -= 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    if path == "/inflight/peak":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(_INFLIGHT["peak"]).encode()]
    if path == "/slowclose":
        # a sized body, then a close() that takes a while (a post-response
        # clean-up): the stream can end with the body
        class Body(list):
            def close(self):
                time.sleep(0.5)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return Body([b"sized"])
    if path == "/rss":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(_rss_kb()).encode()]
    body = environ["wsgi.input"].read()
    env = {k: v for k, v in environ.items() if k not in SKIP and isinstance(v, (str, bool, int))}
    env["body_sha"] = hashlib.sha256(body).hexdigest()
    env["body_len"] = len(body)
    out = json.dumps(env, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("X-Body", str(len(body)))])
    return [out]
