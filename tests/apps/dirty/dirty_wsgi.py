"""A plain WSGI app that drives the dirty client from its views.

POST /call    {"app", "action", "args", "kwargs", "timeout"?}  -> {"result"} or {"error"}
POST /stream  same, collected from client.stream()              -> {"chunks", "error"?}
POST /bytes   raw body echoed through Counter.echo as bytes     -> the bytes
POST /fanout  {"threads", "calls"}: threads x calls execute()s  -> {"bad": [...], "n"}
POST /stash   {"op", "args"}                                    -> {"result"} or {"error"}
"""
import json
import threading

from gunicorn.dirty import DirtyClient, get_dirty_client, stash
from gunicorn.dirty.client import get_dirty_socket_path
from gunicorn.dirty.errors import DirtyError

APP = "dirty_testapps:Counter"


def _err(e):
    out = {"type": type(e).__name__, "message": getattr(e, "message", str(e))}
    for attr in ("app_path", "action", "traceback", "worker_id", "timeout", "retry_after"):
        if getattr(e, attr, None) is not None:
            out[attr] = getattr(e, attr)
    return out


def _client(req):
    if req.get("timeout"):
        return DirtyClient(get_dirty_socket_path(), timeout=req["timeout"])
    return get_dirty_client()


def _call(req):
    c = _client(req)
    try:
        return {"result": c.execute(req["app"], req["action"], *req.get("args", []),
                                    **req.get("kwargs", {}))}
    except DirtyError as e:
        return {"error": _err(e)}
    finally:
        if c is not get_dirty_client():
            c.close()


def _stream(req):
    chunks = []
    it = get_dirty_client().stream(req["app"], req["action"], *req.get("args", []),
                                   **req.get("kwargs", {}))
    try:
        for chunk in it:
            chunks.append(chunk)
            if req.get("take") and len(chunks) >= req["take"]:
                it.close()  # stop early: the client sends CANCEL
                break
        return {"chunks": chunks}
    except DirtyError as e:
        return {"chunks": chunks, "error": _err(e)}


def _fanout(req):
    bad, done = [], []

    def run(t):
        c = get_dirty_client()
        for i in range(req["calls"]):
            v = {"t": t, "i": i, "blob": "%d-%d" % (t, i) * 10}
            try:
                got = c.execute(APP, "echo", v)
            except DirtyError as e:
                bad.append(repr(e))
                continue
            if got != v:
                bad.append({"sent": v, "got": got})
            done.append(1)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(req["threads"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"bad": bad, "n": len(done)}


def _stash(req):
    try:
        return {"result": getattr(stash, req["op"])(*req.get("args", []))}
    except DirtyError as e:
        return {"error": _err(e)}


def app(environ, start_response):
    path = environ["PATH_INFO"]
    size = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(size) if size else b""
    if path == "/bytes":
        out = get_dirty_client().execute(APP, "echo", body)
        assert isinstance(out, bytes)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(out)))])
        return [out]
    req = json.loads(body or b"{}")
    handler = {"/call": _call, "/stream": _stream, "/fanout": _fanout,
               "/stash": _stash}.get(path)
    if handler is None:
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    data = json.dumps(handler(req)).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(data)))])
    return [data]
