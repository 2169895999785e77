"""Environ-dumping WSGI app for the black-box HTTP suites.

Every call is appended (one JSON line) to the file named by the
CG_APP_CALLS environment variable, so a test can prove that a request did
or did not reach the application.

The default answer is a JSON object with:
  env   - every environ entry whose value is a str, plus the WSGI flags
  types - the type names of the non-str objects (wsgi.input, ...)
  body  - the request body read from wsgi.input, base64-encoded

A request header `X-Cg-Mode` selects other behaviours the suites need:
  stream     - the dump, sent as several chunks without Content-Length
  status:NNN - answer with that status and a short body
  headers    - echo each `X-Cg-Echo-<name>: value` request header back as a
               response header `<name>: value` (order kept as in environ)
  raise      - raise RuntimeError (the server must answer 500)
  badheader  - return a response header whose value holds CR LF
  badname    - return a response header whose name holds a space
  readline   - read the body with readline() and report the lines
  partial    - read only 5 bytes of the body
"""
import base64
import json
import os

FLAGS = ("wsgi.version", "wsgi.multithread", "wsgi.multiprocess",
         "wsgi.run_once", "wsgi.input_terminated", "wsgi.url_scheme")


def _record(environ):
    path = os.environ.get("CG_APP_CALLS")
    if not path:
        return
    line = json.dumps({"method": environ.get("REQUEST_METHOD"),
                       "uri": environ.get("RAW_URI"), "pid": os.getpid()})
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode() + b"\n")
    finally:
        os.close(fd)


def dump(environ, body):
    env = {}
    types = {}
    for key, value in environ.items():
        if isinstance(value, str):
            env[key] = value
        elif key in FLAGS:
            env[key] = list(value) if isinstance(value, tuple) else value
        else:
            types[key] = type(value).__name__
    return {"env": env, "types": types,
            "body": base64.b64encode(body).decode("ascii")}


def app(environ, start_response):
    _record(environ)
    mode = environ.get("HTTP_X_CG_MODE", "")
    inp = environ["wsgi.input"]

    if mode == "raise":
        raise RuntimeError("envapp was asked to raise")
    if mode == "badheader":
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("X-Split", "a\r\nSet-Cookie: injected=1")])
        return [b"should never be sent\n"]
    if mode == "badname":
        start_response("200 OK", [("Bad Name", "x")])
        return [b"should never be sent\n"]
    if mode.startswith("status:"):
        status = mode[len("status:"):]
        inp.read()
        start_response(status, [("Content-Type", "text/plain")])
        return [b"status body\n"]
    if mode == "readline":
        lines = []
        while True:
            line = inp.readline()
            if not line:
                break
            lines.append(base64.b64encode(line).decode("ascii"))
        out = json.dumps({"lines": lines}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(out)))])
        return [out]
    if mode == "partial":
        body = inp.read(5)
    else:
        body = inp.read()

    out = json.dumps(dump(environ, body), sort_keys=True).encode()
    if mode == "stream":
        start_response("200 OK", [("Content-Type", "application/json")])
        return [out[i:i + 100] for i in range(0, len(out), 100)] + [b""]
    headers = [("Content-Type", "application/json"),
               ("Content-Length", str(len(out)))]
    if mode == "headers":
        for key, value in environ.items():
            if key.startswith("HTTP_X_CG_ECHO_"):
                name = key[len("HTTP_X_CG_ECHO_"):].replace("_", "-").title()
                headers.append((name, value))
    start_response("200 OK", headers)
    return [out]
