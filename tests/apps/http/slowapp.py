"""Answers after a short pause (SLOW_S seconds, default 0.2): requests
queue up behind it."""
import asyncio
import os
import time

PAUSE = float(os.environ.get("SLOW_S", "0.2"))


def app(environ, start_response):
    time.sleep(PAUSE)
    body = b"served " + environ["PATH_INFO"].encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    await asyncio.sleep(PAUSE)
    body = b"served " + scope["path"].encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
