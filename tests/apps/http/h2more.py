"""WSGI app for tests/integration/test_h2_more.py (h2c upgrade,
trailers, :scheme, gunicorn.socket on HTTP/2), the same under cgunicorn and
upstream gunicorn 27. Without a route of its own a request gets h2app's
answer (the environ as JSON)."""
import json

from h2app import app as base_app


def app(environ, start_response):
    if environ["PATH_INFO"] == "/peer":
        s = environ["gunicorn.socket"]
        out = {"scheme": environ["wsgi.url_scheme"], "tls": hasattr(s, "getpeercert")}
        if out["tls"]:
            out.update(version=s.version(), cipher=list(s.cipher()), peer=s.getpeercert(),
                       peer_der=len(s.getpeercert(binary_form=True) or b""))
        body = json.dumps(out).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    return base_app(environ, start_response)

