"""Dirty app and WSGI views for tests/integration/test_dirty_zero_copy.py
(large payloads in memfds).

GET /echo?size=N[&pattern=1]  N random bytes through ZC.echo: hashes and lengths
GET /make?size=N              ZC.make(N): a result of N bytes made in the worker
GET /stream?size=N&n=K[&take=T]  ZC.chunks(N, K): K chunks of N bytes
GET /boom?size=N              ZC.boom(big): the app raises after getting N bytes
GET /slow?size=N&timeout=S    ZC.slow(big, S*3) with a client timeout of S
GET /stats                    memfd counters of this HTTP worker and of the dirty worker
GET /ppid                     the dirty worker's parent: the arbiter's pid
GET /status                   the arbiter's STATUS reply
GET /slowstream?size=N&n=K   reads one of K chunks of N bytes, waits, asks how many
                              the generator produced meanwhile, reads the rest
GET /aecho?size=N             execute_async() echo of N random bytes, then a
                              stream_async() of 2 chunks of N bytes
"""
import asyncio
import hashlib
import json
import os
import random
import time
from urllib.parse import parse_qs

import _cgunicorn_dirty as codec
from gunicorn.dirty import DirtyApp, DirtyClient, get_dirty_client
from gunicorn.dirty.client import get_dirty_socket_path
from gunicorn.dirty.errors import DirtyError

APP = "dirty_zc_apps:ZC"


class ZC(DirtyApp):
    def counted(self, size, n, path):
        """Yields n chunks, writing to `path` how many it has produced."""
        for i in range(n):
            with open(path, "w") as f:
                f.write(str(i + 1))
            yield bytes([i % 256]) * size

    def echo(self, value):
        return value

    def digest(self, value):
        return {"len": len(value), "sha": hashlib.sha256(value).hexdigest(),
                "type": type(value).__name__}

    def make(self, n):
        return pattern(n)

    def chunks(self, size, n):
        for i in range(n):
            yield bytes([i % 256]) * size

    def boom(self, value):
        raise ValueError("boom after %d bytes" % len(value))

    def slow(self, value, seconds):
        time.sleep(seconds)
        return len(value)

    def stats(self):
        return codec.stats()

    def ppid(self):
        return os.getppid()


def _err(e):
    return {"type": type(e).__name__, "message": getattr(e, "message", str(e))}


def _sha(b):
    return hashlib.sha256(b).hexdigest()


def pattern(n):
    """n deterministic bytes (a random 1 MiB block, repeated)."""
    block = random.Random(n).randbytes(min(n, 1 << 20)) or b""
    return (block * (n // max(len(block), 1) + 1))[:n]


async def _aecho(size):
    c = DirtyClient(get_dirty_socket_path(), timeout=120)
    try:
        data = os.urandom(size)
        got = await c.execute_async(APP, "echo", data)
        chunks = [len(x) async for x in c.stream_async(APP, "chunks", size, 2)]
        return {"sent_sha": _sha(data), "got_sha": _sha(got), "got_type": type(got).__name__,
                "chunks": chunks}
    finally:
        await c.close_async()


def _view(path, q):
    c = get_dirty_client(timeout=120)
    size = int(q.get("size", ["0"])[0])
    if path == "/echo":
        data = os.urandom(size)
        got = c.execute(APP, "echo", data)
        return {"sent_sha": _sha(data), "got_sha": _sha(got), "got_len": len(got),
                "got_type": type(got).__name__}
    if path == "/make":
        got = c.execute(APP, "make", size)
        return {"len": len(got), "sha": _sha(got),
                "want_sha": _sha(pattern(size))}
    if path == "/stream":
        n = int(q["n"][0])
        take = int(q.get("take", ["0"])[0])
        out = []
        it = c.stream(APP, "chunks", size, n)
        for chunk in it:
            out.append({"len": len(chunk), "first": chunk[:1].hex(), "uniform":
                        chunk == chunk[:1] * len(chunk)})
            if take and len(out) >= take:
                it.close()
                break
        return {"chunks": out}
    if path == "/boom":
        c.execute(APP, "boom", b"b" * size)
        return {"unexpected": "no error"}
    if path == "/slow":
        t = float(q["timeout"][0])
        cl = DirtyClient(get_dirty_socket_path(), timeout=t)
        try:
            return {"result": cl.execute(APP, "slow", b"s" * size, t * 3)}
        finally:
            cl.close()
    if path == "/slowstream":
        n = int(q["n"][0])
        path = "/tmp/cgunicorn-zc-progress-%d" % os.getpid()
        it = iter(c.stream(APP, "counted", size, n, path))
        lens = [len(next(it))]
        time.sleep(1.5)
        with open(path) as f:
            produced = int(f.read())
        lens += [len(x) for x in it]
        os.unlink(path)
        return {"produced_while_paused": produced, "lens": lens}
    if path == "/aecho":
        return asyncio.run(_aecho(size))
    if path == "/digest":
        return c.execute(APP, "digest", b"d" * size)
    if path == "/stats":
        return {"http": codec.stats(), "dirty": c.execute(APP, "stats")}
    if path == "/ppid":
        return {"ppid": c.execute(APP, "ppid")}
    if path == "/status":
        chan = c._chan
        with c._lock:
            rid = chan.new_id()
            chan.send(codec.encode(codec.STATUS, rid, {}), time.monotonic() + 10)
            _, body = chan.recv_for(rid, time.monotonic() + 10, "status timeout", 10)
        return body.get("result")
    return None


def app(environ, start_response):
    q = parse_qs(environ.get("QUERY_STRING", ""))
    try:
        out = _view(environ["PATH_INFO"], q)
    except DirtyError as e:
        out = {"error": _err(e)}
    body = json.dumps(out).encode()
    status = "404 Not Found" if out is None else "200 OK"
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]
