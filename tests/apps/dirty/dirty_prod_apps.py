"""Dirty apps for tests/integration/test_dirty_production.py: slow and
failing init(), device assignment, memory growth; and a WSGI app that
leaks per request (max_worker_memory)."""
import os
import time

from gunicorn.dirty import DirtyApp


class SlowInit(DirtyApp):
    """init() takes SLOW_INIT seconds (a model load)."""

    def init(self):
        time.sleep(float(os.environ.get("SLOW_INIT", "4")))
        self.ready = True

    def pid(self):
        return {"pid": os.getpid(), "ready": self.ready}


class Flaky(DirtyApp):
    """init() reads FLAKY_MODE's file: absent: boots; "raise": raises;
    "hang": never returns."""

    def init(self):
        try:
            with open(os.environ["FLAKY_MODE"]) as f:
                mode = f.read().strip()
        except OSError:
            mode = ""
        if mode == "raise":
            raise RuntimeError("flaky model store unreachable")
        if mode == "hang":
            time.sleep(3600)

    def pid(self):
        return os.getpid()


class Device(DirtyApp):
    def init(self):
        self.seen_at_init = os.environ.get("CUDA_VISIBLE_DEVICES")

    def device(self):
        return {"pid": os.getpid(), "env": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "at_init": self.seen_at_init}


_hoard = []


class Leaky(DirtyApp):
    def leak(self, mb):
        _hoard.append(b"\x01" * (mb * 1024 * 1024))
        return os.getpid()

    def pid(self):
        return os.getpid()


def leaky_wsgi(environ, start_response):
    """Keeps 40 MB per request; answers its pid."""
    _hoard.append(b"\x01" * (40 * 1024 * 1024))
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
