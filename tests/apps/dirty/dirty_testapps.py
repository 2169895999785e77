"""Dirty apps for tests/integration/test_dirty_*.py."""
import asyncio
import os
import time

from gunicorn.dirty import DirtyApp


class Counter(DirtyApp):
    """State that must persist across calls within one worker."""

    def __init__(self):
        self.n = 0

    def incr(self, by=1):
        self.n += by
        return {"n": self.n, "pid": os.getpid()}

    def pid(self):
        return os.getpid()

    def echo(self, value):
        return value

    def sleep(self, seconds):
        time.sleep(seconds)
        return {"slept": seconds, "pid": os.getpid()}

    def sleep_marked(self, marker, seconds):
        """Creates `marker` once running, then sleeps (lets tests act mid-call)."""
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(seconds)
        return {"slept": seconds, "pid": os.getpid()}

    def wait_for(self, path, cap=30.0):
        """Holds the worker until `path` exists (at most `cap` seconds);
        `path`.running says it started."""
        open(path + ".running", "w").close()
        deadline = time.monotonic() + cap
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        return {"released": os.path.exists(path), "pid": os.getpid()}

    def boom(self, text):
        raise ValueError(text)

    def die(self):
        os._exit(13)

    def segfault(self):
        import ctypes
        ctypes.string_at(0)

    def unsendable(self):
        return {"s": {1, 2}}

    def count(self, n):
        for i in range(n):
            yield {"i": i}

    async def acount(self, n):
        for i in range(n):
            await asyncio.sleep(0)
            yield i * 10

    async def aplus(self, x):
        await asyncio.sleep(0.01)
        return x + 1

    def fail_midway(self, n):
        for i in range(n):
            yield i
        raise RuntimeError("stream broke after %d" % n)

    def forever(self):
        i = 0
        while True:
            yield i
            i += 1
            time.sleep(0.01)


class OnlyOne(DirtyApp):
    """Loaded by one worker only (class attribute, as gunicorn)."""
    workers = 1

    def pid(self):
        return os.getpid()
