"""Dirty apps for the streaming tests (tests/integration/test_dirty_streaming.py)."""
import asyncio
import os
import time

from gunicorn.dirty import DirtyApp


def _wait_for(path, limit=30.0):
    """Blocks until `path` exists; raises after `limit` seconds so a test that
    never creates it fails instead of hanging."""
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError("%s never appeared" % path)
        time.sleep(0.01)


def _mark(path, text):
    with open(path, "a") as f:
        f.write(text + "\n")


class StreamApp(DirtyApp):
    def init(self):
        self.served = 0

    def count(self, n):
        self.served += 1
        for i in range(n):
            yield i

    async def acount(self, n):
        for i in range(n):
            await asyncio.sleep(0)
            yield {"i": i}

    def nbytes(self, n, size):
        for i in range(n):
            yield bytes([i % 256]) * size

    def empty(self):
        return
        yield  # a generator with no items

    async def aempty(self):
        return
        yield

    def fail_after(self, n):
        for i in range(n):
            yield "c%d" % i
        raise RuntimeError("generator failed after %d chunks" % n)

    async def afail_after(self, n):
        for i in range(n):
            yield "a%d" % i
        raise ValueError("async generator failed after %d chunks" % n)

    def guarded(self, marker):
        """Endless; records in `marker` that its finally block ran."""
        i = 0
        try:
            while True:
                yield i
                i += 1
                time.sleep(0.001)
        finally:
            _mark(marker, "closed after %d" % i)

    async def aguarded(self, marker):
        i = 0
        try:
            while True:
                yield i
                i += 1
                await asyncio.sleep(0.001)
        finally:
            _mark(marker, "aclosed after %d" % i)

    def stall(self, go):
        """One chunk, then waits for the file `go` (the test creates it after
        it saw the timeout), then one more."""
        yield "before"
        _wait_for(go, 60)
        yield "after"

    def gated(self, go, n):
        """First chunk at once; the rest only once the file `go` exists."""
        yield "token-0"
        _wait_for(go)
        for i in range(1, int(n)):
            yield "token-%d" % i

    def big(self, total, size):
        block = b"b" * size
        for _ in range(total // size):
            yield block

    def served_count(self):
        return self.served

    def pid(self):
        return os.getpid()
