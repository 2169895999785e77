"""A WSGI app for the gevent worker's tests (tests/integration/test_gevent.py).

GET  /slow?s=0.5   sleeps s seconds with time.sleep (cooperative once patched),
                   counting the requests in flight in this process; with
                   &n=N it first sleeps in small steps until N are in flight
                   (at most 30 s), so a test need not race the client's start
GET  /stats        {"peak", "inflight", "done", "pid"} of the counters above
GET  /env          the environ facts the tests check (JSON)
GET  /chunked      a response without Content-Length, as 3 pieces
GET  /file         this file through wsgi.file_wrapper
POST /echo         the request body
GET  /dirty?s=0.5  a dirty call (Counter.sleep) counted like /slow; with &n=N
                   the call is made once N requests are in flight (as /slow)
GET  /block?s=30   blocks the whole process (the unpatched time.sleep)
GET  /dirty_wait?p=PATH  Counter.wait_for(PATH): returns once PATH exists
GET  /dirty_mark?p=PATH  Counter.sleep_marked(PATH, 0): creates PATH
"""
import json
import os
import socket
import threading
import time
from urllib.parse import parse_qs

from gunicorn.dirty import get_dirty_client  # at import: also before patching (preload)

_stats = {"peak": 0, "inflight": 0, "done": 0}


def _counted(fn):
    _stats["inflight"] += 1
    _stats["peak"] = max(_stats["peak"], _stats["inflight"])
    try:
        return fn()
    finally:
        _stats["inflight"] -= 1
        _stats["done"] += 1


def _seconds(environ, key="s", default=0.5):
    for part in environ.get("QUERY_STRING", "").split("&"):
        if part.startswith(key + "="):
            return float(part[len(key) + 1:])
    return default


def _slow(environ):
    want = _seconds(environ, "n", 0)
    deadline = time.monotonic() + 30
    while _stats["inflight"] < want and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(_seconds(environ))


def _json(start_response, obj):
    body = json.dumps(obj).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/slow":
        _counted(lambda: _slow(environ))
        return _json(start_response, {"pid": os.getpid()})
    if path == "/stats":
        return _json(start_response, dict(_stats, pid=os.getpid()))
    if path == "/env":
        import gevent.monkey
        sock = environ["gunicorn.socket"]
        return _json(start_response, {
            "multithread": environ["wsgi.multithread"],
            "multiprocess": environ["wsgi.multiprocess"],
            "run_once": environ["wsgi.run_once"],
            "socket_module": type(sock).__module__,
            "socket_patched": gevent.monkey.is_module_patched("socket"),
            "time_patched": gevent.monkey.is_module_patched("time"),
            "threading_patched": gevent.monkey.is_module_patched("threading"),
            "socket_is_gevent": socket.socket.__module__.startswith("gevent"),
            "local_is_gevent": threading.local.__module__.startswith("gevent"),
            "file_wrapper": "wsgi.file_wrapper" in environ,
        })
    if path == "/chunked":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"one ", b"two ", b"three"])
    if path == "/file":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](open(__file__, "rb"))
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    if path == "/block":
        import gevent.monkey
        gevent.monkey.get_original("time", "sleep")(_seconds(environ))
        return _json(start_response, {"pid": os.getpid()})
    if path in ("/dirty_wait", "/dirty_mark"):
        p = parse_qs(environ["QUERY_STRING"])["p"][0]
        c = get_dirty_client()
        if path == "/dirty_wait":
            r = c.execute("dirty_testapps:Counter", "wait_for", p, 20.0)
        else:
            r = c.execute("dirty_testapps:Counter", "sleep_marked", p, 0)
        return _json(start_response, r)
    if path == "/dirty":
        s = _seconds(environ)

        def call():
            want = _seconds(environ, "n", 0)
            deadline = time.monotonic() + 30
            while _stats["inflight"] < want and time.monotonic() < deadline:
                time.sleep(0.02)
            return get_dirty_client().execute("dirty_testapps:Counter", "sleep", s)
        r = _counted(call)
        return _json(start_response, {"result": r, "pid": os.getpid()})
    start_response("404 Not Found", [("Content-Length", "0")])
    return [b""]
