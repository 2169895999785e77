"""A dirty app whose module takes a second to import, as `import torch` does."""
import os
import time

from gunicorn.dirty import DirtyApp

time.sleep(float(os.environ.get("SLOW_IMPORT_SECONDS", "1")))


class Slow(DirtyApp):
    def ping(self):
        return "pong"

    def pid(self):
        return os.getpid()

    def sleep(self, seconds):
        time.sleep(seconds)
        return "slept"
