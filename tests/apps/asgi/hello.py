"""A plain ASGI 3 application: hello world, an echo of the scope, a body
echo, a streaming response, errors, and a WebSocket echo. Used by the asgi
worker tests and the benchmark."""
import asyncio
import json


def _jsonable(v):
    if isinstance(v, bytes):
        return {"bytes": v.decode("latin-1")}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def _mark(path, what):
    with open(path, "a") as f:
        f.write(what + "\n")


async def linger(scope, receive):
    """/linger?MODE&MARKER: never answers; appends to the file MARKER what
    happens after the client leaves (asgi_disconnect_grace_period tests).
    MODE "ignore" sleeps without listening for the disconnect; "cleanup"
    waits for http.disconnect, then spends 0.3 s cleaning up."""
    mode, _, marker = scope["query_string"].decode().partition("&")
    _mark(marker, "started")
    try:
        if mode == "cleanup":
            while (await receive())["type"] != "http.disconnect":
                pass
            _mark(marker, "disconnect")
            await asyncio.sleep(0.3)
        else:
            await asyncio.sleep(60)
        _mark(marker, "finished")
    except asyncio.CancelledError:
        _mark(marker, "cancelled")
        raise


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                scope["state"]["started"] = "yes"
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        msg = await receive()
        assert msg["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("text") == "close":
                await send({"type": "websocket.close", "code": 4001, "reason": "bye"})
                return
            if msg.get("text", "").startswith("close-mark:"):
                # Records when send(websocket.close) returned: after the
                # client's close frame (or the handshake timeout).
                await send({"type": "websocket.close", "code": 4002, "reason": "marked"})
                _mark(msg["text"][len("close-mark:"):], "returned")
                return
            if msg.get("text") is not None:
                await send({"type": "websocket.send", "text": msg["text"]})
            else:
                await send({"type": "websocket.send", "bytes": msg["bytes"]})
    path = scope["path"]
    if path.startswith("/scope"):
        s = {k: v for k, v in scope.items() if k not in ("state",)}
        body = json.dumps(_jsonable(s), sort_keys=True).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return
    if path == "/echo":
        chunks = []
        while True:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        body = b"".join(chunks)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(5):
            await send({"type": "http.response.body", "body": b"chunk%d\n" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/error":
        raise RuntimeError("boom before start")
    if path == "/error-after":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("boom after start")
    if path == "/early-hints":
        # ?bad: a header value with CR LF (must be refused, never sent)
        value = b"</a.css>; rel=preload" + (b"\r\nx-injected: 1" if scope["query_string"] else b"")
        await send({"type": "http.response.informational", "status": 103,
                    "headers": [(b"link", value)]})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    if path == "/linger":
        await linger(scope, receive)
        return
    if path == "/noresponse":
        return
    if path == "/state":
        body = json.dumps(scope.get("state", {})).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": b"Hello, world!"})
