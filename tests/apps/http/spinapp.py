"""Requests that run long in Python code (for request_timeout):
/spin?s=N loops N seconds, /stream?s=N sends a first chunk then loops,
/catch?s=N loops inside `except Exception` (which must not swallow the
timeout); anything else answers at once. ASGI: the same paths await."""
import asyncio
import time
from urllib.parse import parse_qs


def _secs(qs):
    return float(parse_qs(qs).get("s", ["0"])[0])


def _spin(s):
    end = time.time() + s
    n = 0
    while time.time() < end:
        n += 1
    return n


def app(environ, start_response):
    path, s = environ["PATH_INFO"], _secs(environ.get("QUERY_STRING", ""))
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            yield b"first\n"
            _spin(s)
            yield b"last\n"
        return gen()
    if path == "/spin":
        _spin(s)
    elif path == "/catch":
        try:
            _spin(s)
        except Exception:
            pass
    body = b"done " + path.encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    path, s = scope["path"], _secs(scope["query_string"].decode())
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first\n", "more_body": True})
        await asyncio.sleep(s)
        await send({"type": "http.response.body", "body": b"last\n"})
        return
    if path in ("/spin", "/catch"):
        try:
            await asyncio.sleep(s)
        except Exception:
            pass
    body = b"done " + path.encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
