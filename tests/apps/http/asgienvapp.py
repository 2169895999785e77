"""Scope-dumping ASGI app for the black-box HTTP suites: the ASGI twin of
envapp.py, so that a suite parametrised by worker class can serve the same
requests to `-k asgi` and compare the same JSON.

Every call is appended (one JSON line) to the file named by CG_APP_CALLS,
as envapp.py does.  The answer is a JSON object shaped like envapp's:

  env   - the WSGI names a suite checks, derived from the ASGI scope:
          REQUEST_METHOD   scope["method"]
          RAW_URI          raw_path, plus "?" and query_string when the
                           query is not empty (ASGI keeps no raw target: a
                           bare "?" with an empty query is lost)
          PATH_INFO        scope["path"] (a str decoded as UTF-8) encoded
                           back to UTF-8 and shown as latin-1, the PEP 3333
                           convention, so valid UTF-8 paths give exactly the
                           WSGI value
          QUERY_STRING     query_string decoded as latin-1
          SERVER_PROTOCOL  "HTTP/" + http_version
          CONTENT_TYPE, CONTENT_LENGTH, HTTP_<NAME>
                           from scope["headers"]: upper-cased, "-" -> "_",
                           repeated fields joined with "," (as gunicorn's
                           WSGI environ does)
          asgi.scope_type, asgi.http_version, asgi.raw_path (latin-1),
          asgi.path        the raw ASGI values, for diagnosis
  types - empty (no WSGI objects here)
  body  - every http.request body chunk up to more_body=False, base64
"""
import base64
import json
import os


def _record(method, uri):
    path = os.environ.get("CG_APP_CALLS")
    if not path:
        return
    line = json.dumps({"method": method, "uri": uri, "pid": os.getpid()})
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode() + b"\n")
    finally:
        os.close(fd)


def scope_env(scope):
    raw_path = scope.get("raw_path")
    if raw_path is None:
        raw_path = scope["path"].encode("utf-8")
    qs = scope.get("query_string", b"")
    raw_uri = raw_path.decode("latin-1")
    if qs:
        raw_uri += "?" + qs.decode("latin-1")
    env = {
        "REQUEST_METHOD": scope["method"],
        "RAW_URI": raw_uri,
        "PATH_INFO": scope["path"].encode("utf-8", "surrogatepass").decode("latin-1"),
        "QUERY_STRING": qs.decode("latin-1"),
        "SERVER_PROTOCOL": "HTTP/" + scope["http_version"],
        "asgi.scope_type": scope["type"],
        "asgi.http_version": scope["http_version"],
        "asgi.raw_path": raw_path.decode("latin-1"),
        "asgi.path": scope["path"],
    }
    joined = {}
    for name, value in scope["headers"]:
        name = name.decode("latin-1").lower()
        key = name.upper().replace("-", "_")
        # As WSGI does: only the fields named exactly Content-Type and
        # Content-Length drop the HTTP_ prefix (a "Content_Length" field kept
        # by header_map=dangerous is HTTP_CONTENT_LENGTH there).
        if name not in ("content-type", "content-length"):
            key = "HTTP_" + key
        joined.setdefault(key, []).append(value.decode("latin-1"))
    for key, values in joined.items():
        env[key] = ",".join(values)
    return env


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        raise RuntimeError("asgienvapp serves http scopes only, got %r" % scope["type"])
    env = scope_env(scope)
    _record(env["REQUEST_METHOD"], env["RAW_URI"])
    body = bytearray()
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return
        body += msg.get("body", b"")
        if not msg.get("more_body", False):
            break
    out = json.dumps({"env": env, "types": {},
                      "body": base64.b64encode(bytes(body)).decode("ascii")},
                     sort_keys=True).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})
