"""Config for test_h2_more.py: a post_request hook that records req.trailers
in the file named by H2MORE_OUT."""
import json
import os


def post_request(worker, req, environ, resp):
    path = os.environ.get("H2MORE_OUT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"path": environ.get("PATH_INFO"),
                                "trailers": [list(t) for t in req.trailers]}) + "\n")
