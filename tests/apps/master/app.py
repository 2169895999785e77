"""Test app for the master suites: / answers, /hang never returns (the
master's timeout aborts it), /pid names the worker."""
import os
import time


def hang_forever():
    while True:
        time.sleep(0.2)


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/hang":
        hang_forever()
    body = ("pid=%d\n" % os.getpid()).encode()
    if path == "/version":
        body = os.environ.get("APP_VERSION", "none").encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def slow_app(environ, start_response):
    """/slow takes SLOW_SECONDS (default 1.5) to answer, in small steps."""
    if environ.get("PATH_INFO") == "/slow":
        end = time.monotonic() + float(os.environ.get("SLOW_SECONDS", "1.5"))
        while time.monotonic() < end:
            time.sleep(0.05)
    return app(environ, start_response)


def gap_app(environ, start_response):
    """/gap sends its head and half its body, pauses GAP_SECONDS (default
    0.6), then sends the rest: a stop that arrives in the pause finds a
    response whose head already announced keep-alive."""
    if environ.get("PATH_INFO") != "/gap":
        return app(environ, start_response)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])

    def body():
        yield b"ga"
        time.sleep(float(os.environ.get("GAP_SECONDS", "0.6")))
        yield b"p\n"
    return body()


async def asgi_gap_app(scope, receive, send):
    """The ASGI twin of gap_app."""
    if scope["type"] != "http" or scope["path"] != "/gap":
        return await asgi_app(scope, receive, send)
    import asyncio
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"4")]})
    await send({"type": "http.response.body", "body": b"ga", "more_body": True})
    await asyncio.sleep(float(os.environ.get("GAP_SECONDS", "0.6")))
    await send({"type": "http.response.body", "body": b"p\n"})


async def asgi_app(scope, receive, send):
    """The ASGI twin of app/slow_app: / names the worker, /slow takes
    SLOW_SECONDS."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        import asyncio
        await asyncio.sleep(float(os.environ.get("SLOW_SECONDS", "1.5")))
    body = ("pid=%d\n" % os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
