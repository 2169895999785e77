"""Reads wsgi.input in the way the query string says and answers with the
md5 and length of what it read: ?mode=chunks|all|sized|lines[&size=N]."""
import hashlib
from urllib.parse import parse_qs


def app(environ, start_response):
    q = parse_qs(environ.get("QUERY_STRING", ""))
    mode = q.get("mode", ["chunks"])[0]
    size = int(q.get("size", ["65536"])[0])
    inp = environ["wsgi.input"]
    parts = []
    if mode == "chunks":
        while True:
            chunk = inp.read(size)
            if not chunk:
                break
            parts.append(chunk)
    elif mode == "all":
        parts.append(inp.read())
    elif mode == "sized":
        parts.append(inp.read(int(environ.get("CONTENT_LENGTH") or 0)))
    elif mode == "lines":
        parts.extend(inp)
    data = b"".join(parts)
    body = ("%s %d" % (hashlib.md5(data).hexdigest(), len(data))).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
