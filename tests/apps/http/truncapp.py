"""Reads the request body in the style the query names and records what
the read did in $TRUNC_RESULTS/<id>: "complete N" when the body ended, or
"error TYPE: MESSAGE" when the read raised (the exception is re-raised, as
an app that does not catch it would). ?mode=read|readn|readline|iter|readlines&id=ID.
`asgi` is the ASGI twin: "complete N" when more_body ended the body,
"disconnect N" when http.disconnect came first."""
import os
from urllib.parse import parse_qs


def record(rid, text):
    path = os.path.join(os.environ["TRUNC_RESULTS"], rid)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


def app(environ, start_response):
    q = parse_qs(environ.get("QUERY_STRING", ""))
    mode, rid = q["mode"][0], q["id"][0]
    inp = environ["wsgi.input"]
    try:
        if mode == "read":
            data = inp.read()
        elif mode == "readn":
            data = b""
            while True:
                part = inp.read(3)
                if not part:
                    break
                data += part
        elif mode == "readline":
            data = b""
            while True:
                line = inp.readline()
                if not line:
                    break
                data += line
        elif mode == "readlines":
            data = b"".join(inp.readlines())
        else:
            data = b"".join(inp)
    except Exception as e:
        record(rid, "error %s: %s" % (type(e).__name__, e))
        raise
    record(rid, "complete %d" % len(data))
    body = b"got %d" % len(data)
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    q = parse_qs(scope["query_string"].decode())
    rid = q["id"][0]
    n = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            record(rid, "disconnect %d" % n)
            return
        n += len(msg.get("body", b""))
        if not msg.get("more_body", False):
            break
    record(rid, "complete %d" % n)
    body = b"got %d" % n
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
