"""The default example for `make run`: a stdlib-only WSGI app that calls the
dirty apps of examples/dirty_app.py (the example from gunicorn's dirty-arbiter
introduction, unchanged).

    curl http://127.0.0.1:8000/
    curl http://127.0.0.1:8000/models
    curl -X POST http://127.0.0.1:8000/inference -d 'hello'
    curl http://127.0.0.1:8000/fib/90
    curl http://127.0.0.1:8000/prime/1000003
"""
import json

from gunicorn.dirty import get_dirty_client
from gunicorn.dirty.errors import DirtyError

ML = "dirty_app:MLApp"
COMPUTE = "dirty_app:ComputeApp"


def _json(start_response, status, payload):
    body = json.dumps(payload, indent=2).encode() + b"\n"
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]


def _route(environ):
    path = environ.get("PATH_INFO", "/")
    method = environ["REQUEST_METHOD"]
    client = get_dirty_client()
    if path == "/":
        return {"hello": "from cgunicorn", "try": ["/models", "POST /inference",
                                                 "/fib/N", "/prime/N", "/stats"]}
    if path == "/models":
        return client.execute(ML, "list_models")
    if path == "/inference" and method == "POST":
        size = int(environ.get("CONTENT_LENGTH") or 0)
        data = environ["wsgi.input"].read(size).decode("utf-8", "replace")
        return client.execute(ML, "inference", "default", data)
    if path.startswith("/load/"):
        return client.execute(ML, "load_model", path[len("/load/"):])
    if path.startswith("/fib/"):
        return client.execute(COMPUTE, "fibonacci", int(path[len("/fib/"):]))
    if path.startswith("/prime/"):
        return client.execute(COMPUTE, "prime_check", int(path[len("/prime/"):]))
    if path == "/stats":
        return client.execute(COMPUTE, "stats")
    return None


def app(environ, start_response):
    try:
        payload = _route(environ)
    except ValueError as exc:
        return _json(start_response, "400 Bad Request", {"error": str(exc)})
    except DirtyError as exc:
        return _json(start_response, "502 Bad Gateway",
                     {"error": type(exc).__name__, "message": str(exc)})
    if payload is None:
        return _json(start_response, "404 Not Found", {"error": "no such page"})
    return _json(start_response, "200 OK", payload)
