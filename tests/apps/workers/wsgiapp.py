"""A WSGI app that reports how it is served."""
import json
import os

import setproctitle


def app(environ, start_response):
    body = json.dumps({"multithread": environ["wsgi.multithread"],
                       "software": environ["SERVER_SOFTWARE"],
                       "os_software": os.environ.get("SERVER_SOFTWARE"),
                       "title": setproctitle.getproctitle()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
