"""Dirty app for the benchmark's round-trip scenarios."""
from gunicorn.dirty import DirtyApp


class BenchDirtyApp(DirtyApp):
    def init(self):
        pass

    def ping(self):
        return "pong"

    def echo(self, payload):
        return payload

    def ppid(self):
        import os
        return os.getppid()  # the dirty arbiter (cgunicorn and gunicorn alike)

    def chunks(self, n):
        for i in range(n):
            yield "chunk-%d" % i
