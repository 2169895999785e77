"""ASGI app for the HTTP/2 suites (tests/integration/test_h2*.py): the
routes of h2app.py, as an ASGI app, under cgunicorn and upstream
gunicorn 27's asgi worker."""
import asyncio
import hashlib
import json

from h2app import _rss_kb

# scope keys compared with upstream: the addresses carry ports that differ,
# and upstream's HTTP/2 scope adds "extensions" (trailers, priority) that
# cgunicorn does not offer
SCOPE_KEYS = ("type", "asgi", "http_version", "method", "scheme", "path", "raw_path",
              "query_string", "root_path")


async def _body(receive):
    parts = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            break
        parts.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            break
    return b"".join(parts)


async def _reply(send, status, headers, body, more=()):
    await send({"type": "http.response.start", "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in headers]})
    for chunk in more:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path.startswith("/status/"):
        code = int(path.rsplit("/", 1)[1])
        body = b"" if code in (204, 304) else b"status %d\n" % code
        return await _reply(send, code, [("content-type", "text/plain")], body)
    if path == "/stream":
        return await _reply(send, 200, [("content-type", "text/plain")], b"",
                            more=[b"chunk %d\n" % i for i in range(50)])
    if path == "/big":
        body = bytes(range(256)) * 4096
        return await _reply(send, 200, [("content-type", "application/octet-stream"),
                                        ("content-length", str(len(body)))], body)
    if path == "/headers":
        return await _reply(send, 201, [("x-one", "1"), ("x-two", "a, b"), ("set-cookie", "a=1"),
                                        ("set-cookie", "b=2"), ("content-type", "text/plain")],
                            b"made")
    if path == "/raise":
        raise RuntimeError("boom")
    if path == "/slowread":
        # reads the upload slowly: the server must not buffer it all
        total, peak, mark = 0, 0, 0
        h = hashlib.sha256()
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                break
            b = msg.get("body", b"")
            h.update(b)
            total += len(b)
            if total >> 20 != mark:
                mark = total >> 20
                await asyncio.sleep(0.05)
                peak = max(peak, _rss_kb())
            if not msg.get("more_body", False):
                break
        out = json.dumps({"total": total, "sha": h.hexdigest(), "peak_rss_kb": peak}).encode()
        return await _reply(send, 200, [("content-type", "application/json")], out)
    if path == "/longsleep":  # outlasts a QUIT's grace
        await asyncio.sleep(4.0)
        return await _reply(send, 200, [("content-type", "text/plain")], b"slept")
    if path == "/sleep":
        await asyncio.sleep(1.0)
        return await _reply(send, 200, [("content-type", "text/plain")], b"slept")
    if path == "/rss":
        return await _reply(send, 200, [("content-type", "text/plain")], str(_rss_kb()).encode())
    body = await _body(receive)
    out = {k: scope[k] for k in SCOPE_KEYS}
    for k in ("raw_path", "query_string"):
        out[k] = out[k].decode("latin-1")
    out["headers"] = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]]
    out["body_sha"] = hashlib.sha256(body).hexdigest()
    out["body_len"] = len(body)
    data = json.dumps(out, sort_keys=True).encode()
    return await _reply(send, 200, [("content-type", "application/json"),
                                    ("x-body", str(len(body)))], data)
