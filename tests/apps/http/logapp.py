"""WSGI app for the access-log suite: every answer depends only on the
request (method, path, query, body), never on ports or server internals, so
byte counts match between two servers.

`X-Cg-Mode` selects: stream (several chunks, no Content-Length),
status:NNN Reason (that status), raise (RuntimeError -> 500)."""


def app(environ, start_response):
    mode = environ.get("HTTP_X_CG_MODE", "")
    body = environ["wsgi.input"].read()
    if mode == "raise":
        raise RuntimeError("logapp was asked to raise")
    text = ("%s %s?%s scheme=%s body=%d\n" % (
        environ["REQUEST_METHOD"], environ["PATH_INFO"], environ["QUERY_STRING"],
        environ["wsgi.url_scheme"], len(body))).encode("utf-8", "surrogateescape")
    if mode.startswith("status:"):
        start_response(mode[len("status:"):], [("Content-Type", "text/plain")])
        return [b"status body\n"]
    if mode == "stream":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Streamed", "yes")])
        return [text, b"more\n", b"", b"end\n"]
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(text)))])
    return [text]
