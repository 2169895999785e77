"""Client-side tests of gunicorn.dirty against a fake arbiter (a thread
speaking the wire protocol with the _cgunicorn_dirty codec). Run inside the
embedded interpreter by test_cg_dirty_client.c, which calls every function
named in TESTS and counts failures (an exception = a failure).

The fake arbiter is not the real one: these tests hold the client to the
protocol as docs/dirty-protocol.md describes it (ids, stale replies, CANCEL,
streams, errors, stash frames), not the arbiter's behaviour.
"""
import asyncio
import os
import socket
import tempfile
import threading
import time

import _cgunicorn_dirty as codec

import gunicorn.dirty as dirty
from gunicorn.dirty import stash
from gunicorn.dirty.errors import error_from_wire, error_to_wire


def read_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise EOFError
        buf += part
    return bytes(buf)


class FakeArbiter:
    """Answers REQUEST frames for app "t:App" (actions below), CANCEL and
    STASH frames. Records what it received."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="cgdirty")
        self.path = os.path.join(self.dir, "arbiter.sock")
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(16)
        self.requests = []
        self.cancelled = []
        self.tables = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        send_lock = threading.Lock()

        def send(msg_type, rid, body):
            with send_lock:
                try:
                    conn.sendall(codec.encode(msg_type, rid, body))
                except OSError:
                    pass  # the client went away (closed its connection)

        try:
            while True:
                head = read_exact(conn, codec.HEADER_SIZE)
                msg_type, rid, json_len, blob_len = codec.decode_header(head)
                body = codec.decode_body(read_exact(conn, json_len + blob_len), json_len)
                if msg_type == codec.CANCEL:
                    with self.lock:
                        self.cancelled.append(rid)
                elif msg_type == codec.STASH:
                    send(*self._stash(rid, body))
                elif msg_type == codec.REQUEST:
                    with self.lock:
                        self.requests.append((rid, body))
                    threading.Thread(target=self._request, args=(send, rid, body),
                                     daemon=True).start()
        except (EOFError, OSError):
            conn.close()

    def _request(self, send, rid, body):
        args, kwargs = body.get("args", []), body.get("kwargs", {})
        if body["app_path"] != "t:App":
            send(codec.ERROR, rid, {"error": {"type": "DirtyAppNotFoundError",
                                              "message": "Dirty app not found: %s"
                                              % body["app_path"],
                                              "app_path": body["app_path"]}})
            return
        action = body["action"]
        if action == "echo":
            send(codec.RESPONSE, rid, {"result": args})
        elif action == "kwargs":
            send(codec.RESPONSE, rid, {"result": kwargs})
        elif action == "slow":
            time.sleep(args[0])
            send(codec.RESPONSE, rid, {"result": "slow:%s" % args[1]})
        elif action == "gen":
            for i in range(args[0]):
                send(codec.CHUNK, rid, {"data": i})
                if len(args) > 1:
                    time.sleep(args[1])
            send(codec.END, rid, {})
        elif action == "gen_fail":
            send(codec.CHUNK, rid, {"data": "a"})
            send(codec.CHUNK, rid, {"data": b"b"})
            send(codec.ERROR, rid, {"error": {"type": "DirtyAppError", "message": "gen broke",
                                              "traceback": "TB", "app_path": "t:App",
                                              "action": "gen_fail"}})
        elif action == "boom":
            send(codec.ERROR, rid, {"error": {"type": "DirtyAppError",
                                              "message": "division by zero",
                                              "traceback": "Traceback ...\nZeroDivisionError",
                                              "app_path": "t:App", "action": "boom"}})
        elif action == "wrong_id":
            # A reply for an id nobody waits for, then the real one.
            send(codec.RESPONSE, rid + 1000, {"result": "stray"})
            send(codec.RESPONSE, rid, {"result": "right"})

    def _stash(self, rid, body):
        op, table, key = body["op"], body.get("table"), body.get("key")
        with self.lock:
            t = self.tables.get(table)
            if op == "put":
                self.tables.setdefault(table, {})[key] = body["value"]
                return codec.RESPONSE, rid, {"result": True}
            if op == "get":
                if t is None or key not in t:
                    return codec.ERROR, rid, {"error": {"type": "StashKeyNotFoundError",
                                                        "message": "Key not found: %s" % key,
                                                        "table": table, "key": key}}
                return codec.RESPONSE, rid, {"result": t[key]}
            if op == "delete":
                found = t is not None and key in t
                if found:
                    del t[key]
                return codec.RESPONSE, rid, {"result": found}
            if op == "keys":
                import fnmatch
                keys = list(t or {})
                if body.get("pattern"):
                    keys = [k for k in keys if fnmatch.fnmatch(k, body["pattern"])]
                return codec.RESPONSE, rid, {"result": keys}
            if op == "info":
                if t is None:
                    return codec.ERROR, rid, {"error": {"type": "StashTableNotFoundError",
                                                        "message": "Table not found",
                                                        "table": table}}
                return codec.RESPONSE, rid, {"result": {"size": len(t), "table": table}}
            if op == "exists":
                result = t is not None and (key is None or key in t)
                return codec.RESPONSE, rid, {"result": result}
            if op == "tables":
                return codec.RESPONSE, rid, {"result": list(self.tables)}
        return codec.ERROR, rid, {"error": {"type": "StashError",
                                            "message": "Unknown stash operation: %s" % op}}


ARB = FakeArbiter()


def wait_for(cond, what, deadline=5.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError("timed out waiting for " + what)


def expect_raises(cls, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except cls as e:
        return e
    raise AssertionError("%s not raised" % cls.__name__)


# -- sync client -----------------------------------------------------------

def test_execute_round_trip():
    with dirty.DirtyClient(ARB.path, timeout=5) as c:
        payload = [b"\x00" * 100000, {"nested": [b"x", 2**70, float("inf")]}, "text", None]
        assert c.execute("t:App", "echo", *payload) == payload
        assert c.execute("t:App", "kwargs", a=1, b=b"2") == {"a": 1, "b": b"2"}
        rid, body = ARB.requests[-1]
        assert body["app_path"] == "t:App" and body["action"] == "kwargs", body
        assert body["args"] == [] and body["timeout"] == 5.0 and "stream" not in body, body


def test_app_errors():
    c = dirty.DirtyClient(ARB.path, timeout=5)
    e = expect_raises(dirty.DirtyAppError, c.execute, "t:App", "boom")
    assert e.message == "division by zero", e.message
    assert e.app_path == "t:App" and e.action == "boom", (e.app_path, e.action)
    assert "ZeroDivisionError" in e.traceback
    e = expect_raises(dirty.DirtyAppNotFoundError, c.execute, "nope:App", "x")
    assert isinstance(e, dirty.DirtyAppError) and e.app_path == "nope:App"
    # The connection is still usable after errors.
    assert c.execute("t:App", "echo", 1) == [1]
    c.close()


def test_timeout_then_stale_reply_is_dropped():
    c = dirty.DirtyClient(ARB.path, timeout=0.3)
    e = expect_raises(dirty.DirtyTimeoutError, c.execute, "t:App", "slow", 0.6, "first")
    assert e.timeout == 0.3
    timed_out_id = ARB.requests[-1][0]
    wait_for(lambda: timed_out_id in ARB.cancelled, "CANCEL of the timed-out call")
    time.sleep(0.5)  # the late reply is now waiting in the socket
    assert c.execute("t:App", "echo", "second") == ["second"]
    c.close()


def test_reply_with_unknown_id_is_dropped():
    with dirty.DirtyClient(ARB.path, timeout=5) as c:
        assert c.execute("t:App", "wrong_id") == "right"
        assert c.execute("t:App", "echo", 3) == [3]


def test_stream():
    c = dirty.DirtyClient(ARB.path, timeout=5)
    assert list(c.stream("t:App", "gen", 4)) == [0, 1, 2, 3]
    rid, body = ARB.requests[-1]
    assert body.get("stream") is True, body
    chunks = []
    it = c.stream("t:App", "gen_fail")
    e = None
    try:
        for chunk in it:
            chunks.append(chunk)
    except dirty.DirtyAppError as err:
        e = err
    assert chunks == ["a", b"b"], chunks
    assert e is not None and e.message == "gen broke" and e.traceback == "TB"
    c.close()


def test_stream_closed_early_sends_cancel():
    c = dirty.DirtyClient(ARB.path, timeout=5)
    for chunk in c.stream("t:App", "gen", 50, 0.01):
        break
    stream_id = ARB.requests[-1][0]
    # The dropped iterator queued a CANCEL; the next call sends it and then
    # ignores the rest of the stream.
    assert c.execute("t:App", "echo", "after") == ["after"]
    wait_for(lambda: stream_id in ARB.cancelled, "CANCEL of the dropped stream")
    it = c.stream("t:App", "gen", 50, 0.01)
    assert next(it) == 0
    it.close()
    wait_for(lambda: ARB.requests[-1][0] in ARB.cancelled, "CANCEL from close()")
    assert c.execute("t:App", "echo", "again") == ["again"]
    c.close()


def test_execute_interleaved_with_stream():
    c = dirty.DirtyClient(ARB.path, timeout=5)
    seen = []
    for chunk in c.stream("t:App", "gen", 5, 0.01):
        seen.append(chunk)
        assert c.execute("t:App", "echo", chunk) == [chunk]
    assert seen == [0, 1, 2, 3, 4], seen
    c.close()


def test_execute_on_streaming_action():
    c = dirty.DirtyClient(ARB.path, timeout=5)
    e = expect_raises(dirty.DirtyError, c.execute, "t:App", "gen", 3)
    assert "Unknown response type: chunk" in e.message, e.message
    assert c.execute("t:App", "echo", "ok") == ["ok"]
    c.close()


def test_unsupported_argument():
    c = dirty.DirtyClient(ARB.path, timeout=5)

    class Image:
        pass

    e = expect_raises(dirty.DirtySerializationError, c.execute, "t:App", "echo", 1,
                      {"img": Image()})
    assert isinstance(e, TypeError) and isinstance(e, dirty.DirtyProtocolError)
    assert "args[1]['img']: cannot send object of type 'Image'" in e.message, e.message
    e = expect_raises(dirty.DirtySerializationError, c.execute, "t:App", "echo", x={1, 2})
    assert "kwargs['x']" in e.message and "'set'" in e.message, e.message
    assert c.execute("t:App", "echo", "still fine") == ["still fine"]
    c.close()


def test_message_too_large():
    c = dirty.DirtyClient(ARB.path, timeout=5, max_message=4096)
    e = expect_raises(dirty.DirtyProtocolError, c.execute, "t:App", "echo", b"x" * 5000)
    assert "dirty_max_message_size" in e.message and "4096" in e.message, e.message
    c.close()


def test_connection_errors():
    missing = os.path.join(ARB.dir, "missing.sock")
    c = dirty.DirtyClient(missing, timeout=1)
    e = expect_raises(dirty.DirtyConnectionError, c.execute, "t:App", "echo")
    assert missing in e.message and "GUNICORN_DIRTY_SOCKET" in e.message, e.message
    assert e.socket_path == missing
    saved = os.environ.pop("GUNICORN_DIRTY_SOCKET", None)
    try:
        dirty.close_dirty_client()
        e = expect_raises(dirty.DirtyConnectionError, dirty.get_dirty_client)
        assert "GUNICORN_DIRTY_SOCKET" in e.message, e.message
    finally:
        if saved is not None:
            os.environ["GUNICORN_DIRTY_SOCKET"] = saved


def test_thread_local_clients():
    os.environ["GUNICORN_DIRTY_SOCKET"] = ARB.path
    try:
        a = dirty.get_dirty_client()
        assert dirty.get_dirty_client() is a
        other = []
        t = threading.Thread(target=lambda: other.append(dirty.get_dirty_client()))
        t.start()
        t.join()
        assert other[0] is not a
        assert a.execute("t:App", "echo", 5) == [5]
        dirty.close_dirty_client()
        assert dirty.get_dirty_client() is not a
        dirty.close_dirty_client()
    finally:
        del os.environ["GUNICORN_DIRTY_SOCKET"]


# -- async client ----------------------------------------------------------

def test_async_execute_concurrent():
    async def main():
        c = dirty.DirtyClient(ARB.path, timeout=5)
        slow, fast = await asyncio.gather(c.execute_async("t:App", "slow", 0.3, "s"),
                                          c.execute_async("t:App", "echo", b"f"))
        assert slow == "slow:s" and fast == [b"f"], (slow, fast)
        e = None
        try:
            await c.execute_async("t:App", "boom")
        except dirty.DirtyAppError as err:
            e = err
        assert e is not None and e.action == "boom"
        await c.close_async()
    asyncio.run(main())


def test_async_timeout_and_stream():
    async def main():
        c = dirty.DirtyClient(ARB.path, timeout=0.3)
        try:
            await c.execute_async("t:App", "slow", 0.6, "late")
            raise AssertionError("no timeout")
        except dirty.DirtyTimeoutError:
            pass
        await asyncio.sleep(0.5)
        assert await c.execute_async("t:App", "echo", "next") == ["next"]
        c.timeout = 5
        got = [chunk async for chunk in c.stream_async("t:App", "gen", 3)]
        assert got == [0, 1, 2], got
        it = c.stream_async("t:App", "gen", 50, 0.01)
        assert await it.__anext__() == 0
        await it.aclose()
        rid = ARB.requests[-1][0]
        await asyncio.sleep(0)
        for _ in range(100):
            if rid in ARB.cancelled:
                break
            await asyncio.sleep(0.01)
        assert rid in ARB.cancelled
        chunks, err = [], None
        try:
            async for chunk in c.stream_async("t:App", "gen_fail"):
                chunks.append(chunk)
        except dirty.DirtyAppError as e:
            err = e
        assert chunks == ["a", b"b"] and err is not None
        async with dirty.DirtyClient(ARB.path, timeout=5) as c2:
            assert await c2.execute_async("t:App", "echo", 1) == [1]
        await c.close_async()
    asyncio.run(main())


def test_async_client_per_loop():
    os.environ["GUNICORN_DIRTY_SOCKET"] = ARB.path
    try:
        async def main():
            a = await dirty.get_dirty_client_async()
            assert await dirty.get_dirty_client_async() is a
            assert await a.execute_async("t:App", "echo", 2) == [2]
            await dirty.close_dirty_client_async()
            return a
        first = asyncio.run(main())
        second = asyncio.run(main())
        assert first is not second
    finally:
        del os.environ["GUNICORN_DIRTY_SOCKET"]


# -- stash -------------------------------------------------------------------

def test_stash_client():
    os.environ["GUNICORN_DIRTY_SOCKET"] = ARB.path
    try:
        stash.put("sessions", "user:1", {"name": "Alice", "avatar": b"\x89PNG"})
        assert stash.get("sessions", "user:1") == {"name": "Alice", "avatar": b"\x89PNG"}
        assert stash.get("sessions", "nobody", "dflt") == "dflt"
        assert stash.keys("sessions", pattern="user:*") == ["user:1"]
        t = stash.table("sessions")
        t["user:2"] = None
        assert t["user:2"] is None and "user:2" in t and len(t) == 2
        assert sorted(t) == ["user:1", "user:2"]
        del t["user:2"]
        expect_raises(KeyError, t.__getitem__, "user:2")
        expect_raises(stash.StashTableNotFoundError, stash.info, "nope")
        assert stash.exists("sessions") and not stash.exists("nope")
        assert "sessions" in stash.tables()
        e = expect_raises(stash.StashError, stash.put, "sessions", 5, "x")
        assert "key must be a str" in e.message, e.message
    finally:
        del os.environ["GUNICORN_DIRTY_SOCKET"]


# -- errors and DirtyApp -----------------------------------------------------

def test_error_wire_round_trip():
    src = dirty.DirtyAppError("bad", app_path="m:A", action="go", traceback="TB")
    back = error_from_wire(error_to_wire(src))
    assert type(back) is dirty.DirtyAppError
    assert (back.message, back.app_path, back.action, back.traceback) == ("bad", "m:A", "go",
                                                                         "TB")
    back = error_from_wire(error_to_wire(ZeroDivisionError("x"), app_path="m:A", action="a"))
    assert type(back) is dirty.DirtyAppError and back.app_path == "m:A"
    back = dirty.DirtyError.from_dict(dirty.DirtyTimeoutError("slow", timeout=3).to_dict())
    assert type(back) is dirty.DirtyTimeoutError and back.timeout == 3
    back = error_from_wire({"type": "NoSuchError", "message": "m"})
    assert type(back) is dirty.DirtyError and str(back) == "m"
    back = error_from_wire({"type": "DirtyNoWorkersAvailableError", "message": "none",
                            "app_path": "m:A"})
    assert isinstance(back, dirty.DirtyNoWorkersAvailableError) and back.app_path == "m:A"
    assert type(error_from_wire("garbage")) is dirty.DirtyError


def test_dirty_app_dispatch():
    class App(dirty.DirtyApp):
        def hello(self, name, punct="!"):
            return "hi " + name + punct

        def _secret(self):
            return "no"

    app = App()
    assert App.workers is None
    assert app("hello", "bob", punct="?") == "hi bob?"
    expect_raises(ValueError, app, "_secret")
    expect_raises(ValueError, app, "missing")
    app.init()
    app.close()
    from gunicorn.dirty.app import parse_dirty_app_spec
    assert parse_dirty_app_spec("a.b:C") == ("a.b:C", None)
    assert parse_dirty_app_spec("a.b:C:2") == ("a.b:C", 2)
    expect_raises(dirty.DirtyAppError, parse_dirty_app_spec, "a.b:C:0")
    expect_raises(dirty.DirtyAppError, parse_dirty_app_spec, "nocolon")
    import cgunicorn.dirty
    assert cgunicorn.dirty.DirtyApp is dirty.DirtyApp


TESTS = [name for name in list(globals()) if name.startswith("test_")]
