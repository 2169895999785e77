"""WSGI views that drive gunicorn.dirty's streaming API inside cgunicorn
(the client runs in the server's embedded interpreter) and report what they
saw as JSON. POST /<scenario> with a JSON object of keyword arguments."""
import asyncio
import json

from gunicorn.dirty import (close_dirty_client_async, get_dirty_client,
                            get_dirty_client_async)
from gunicorn.dirty.errors import DirtyError

APP = "dirty_stream_apps:StreamApp"


def _err(e):
    return {"class": type(e).__name__, "message": getattr(e, "message", str(e)),
            "traceback": getattr(e, "traceback", None),
            "timeout": getattr(e, "timeout", None), "is_dirty": isinstance(e, DirtyError)}


def _summary(chunks):
    """Chunks as JSON can carry them (bytes described by type, size, first byte)."""
    out = []
    for c in chunks:
        if isinstance(c, bytes):
            out.append({"bytes": len(c), "first": c[0] if c else None,
                        "uniform": c == c[:1] * len(c)})
        else:
            out.append(c)
    return out


def collect(action, args=(), mode="sync", summary=False, timeout=30.0):
    chunks, error = [], None
    if mode == "sync":
        from gunicorn.dirty import DirtyClient
        from gunicorn.dirty.client import get_dirty_socket_path
        client = (get_dirty_client() if timeout == 30.0
                  else DirtyClient(get_dirty_socket_path(), timeout=timeout))
        try:
            for c in client.stream(APP, action, *args):
                chunks.append(c)
        except Exception as e:
            error = _err(e)
    else:
        async def run():
            client = await get_dirty_client_async(timeout=timeout)
            try:
                async for c in client.stream_async(APP, action, *args):
                    chunks.append(c)
            finally:
                await close_dirty_client_async()
        try:
            asyncio.run(run())
        except Exception as e:
            error = _err(e)
    if summary:
        ints = [c for c in chunks if isinstance(c, int)]
        out = {"n": len(chunks), "in_order": ints == list(range(len(ints))),
               "sum": sum(ints), "last": chunks[-1] if chunks else None}
    else:
        out = {"chunks": _summary(chunks)}
    out["error"] = error
    return out


def execute(action, args=(), mode="sync"):
    try:
        if mode == "sync":
            return {"result": get_dirty_client().execute(APP, action, *args)}

        async def run():
            client = await get_dirty_client_async()
            try:
                return await client.execute_async(APP, action, *args)
            finally:
                await close_dirty_client_async()
        return {"result": asyncio.run(run())}
    except Exception as e:
        return {"error": _err(e)}


def interleave(n):
    """Two streams open at once on one client, read alternately."""
    client = get_dirty_client()
    a = client.stream(APP, "count", n)
    b = client.stream(APP, "acount", n)
    got_a, got_b = [], []
    for _ in range(n):
        got_a.append(next(a))
        got_b.append(next(b))
        # an execute() between chunks of both streams
        got_a.append(client.execute(APP, "pid") > 0)
    rest_a, rest_b = list(a), list(b)
    return {"a": got_a, "b": got_b, "rest": [rest_a, rest_b]}


def break_early(marker, action="guarded", mode="sync", how="break"):
    """Stops after 2 chunks: `break` out of the loop (the iterator is
    dropped), or an explicit close()/aclose()."""
    got = []
    if mode == "sync":
        if how == "close":
            it = get_dirty_client().stream(APP, action, marker)
            for c in it:
                got.append(c)
                if len(got) == 2:
                    it.close()
                    break
        else:
            for c in get_dirty_client().stream(APP, action, marker):
                got.append(c)
                if len(got) == 2:
                    break
        return {"chunks": got}

    async def run():
        client = await get_dirty_client_async()
        try:
            if how == "close":
                it = client.stream_async(APP, action, marker)
                async for c in it:
                    got.append(c)
                    if len(got) == 2:
                        await it.aclose()
                        break
            else:
                async for c in client.stream_async(APP, action, marker):
                    got.append(c)
                    if len(got) == 2:
                        break
            # the connection stays open: the next call uses it
            return await client.execute_async(APP, "pid")
        finally:
            await close_dirty_client_async()
    pid = asyncio.run(run())
    return {"chunks": got, "pid": pid}


def drain(action, args=(), delay=0.0):
    """Reads a stream and keeps only its size (a slow reader with `delay`
    seconds per chunk)."""
    import time
    from gunicorn.dirty import DirtyClient
    from gunicorn.dirty.client import get_dirty_socket_path
    n = chunks = 0
    with DirtyClient(get_dirty_socket_path(), timeout=600) as client:
        for c in client.stream(APP, action, *args):
            n += len(c)
            chunks += 1
            if delay:
                time.sleep(delay)
    return {"bytes": n, "chunks": chunks}


SCENARIOS = {f.__name__: f for f in (collect, execute, interleave, break_early, drain)}


def app(environ, start_response):
    size = int(environ.get("CONTENT_LENGTH") or 0)
    kw = json.loads(environ["wsgi.input"].read(size) or b"{}")
    fn = SCENARIOS.get(environ["PATH_INFO"].strip("/"))
    if fn is None:
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    data = json.dumps(fn(**kw)).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(data)))])
    return [data]
