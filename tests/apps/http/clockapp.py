"""Answers the time the app read (time.time()), as apps that stamp
Last-Modified do; the test compares it with the server's Date."""
import time


def app(environ, start_response):
    body = repr(time.time()).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    body = repr(time.time()).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
