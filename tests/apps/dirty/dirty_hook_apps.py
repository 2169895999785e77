import os

from gunicorn.dirty import DirtyApp


def _note(*parts):
    with open(os.environ["DIRTY_HOOK_LOG"], "a") as f:
        f.write(" ".join(str(p) for p in parts) + "\n")


class Traced(DirtyApp):
    def __init__(self):
        _note("app__init__", os.getpid())

    def init(self):
        _note("app.init", os.getpid())

    def ping(self):
        return "pong"

    def close(self):
        _note("app.close", os.getpid())
