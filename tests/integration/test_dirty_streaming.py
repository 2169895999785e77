"""Dirty streaming end to end (issue 8): an action returning a generator or
async generator streams CHUNK frames then END through the arbiter to
client.stream() / client.stream_async(); errors mid-stream, early stops,
deadlines, back-pressure, and the seed guide's Flask (SSE) and FastAPI
(StreamingResponse under -k asgi) examples under the real binary.

Nothing here is decided by a timing: first-token relaying is observed with a
gate file the generator waits for, which the test creates only after it has
read the first token."""
import io
import json
import os
import socket
import urllib.parse

import pytest

from conftest import Server
from dirty_support import APPS_DIR, arbiter_pid, post, wait_dirty_workers, wait_until

STREAM_APP = "dirty_stream_apps:StreamApp"
LLM_APP = "myapp.llm:LLMApp"
IMAGE_APP = "myapp.images:ImageApp"


def _start(args, apps, wsgi, dirty_workers=1):
    argv = ["--dirty-workers", str(dirty_workers), "--dirty-threads", "1"]
    for a in apps:
        argv += ["--dirty-app", a]
    srv = Server(argv + list(args) + [wsgi], cwd=APPS_DIR)
    try:
        wait_dirty_workers(srv, dirty_workers)
    except BaseException:
        srv.stop()
        raise
    return srv


@pytest.fixture(scope="module")
def vsrv():
    srv = _start(["--workers", "2", "--timeout", "120"], [STREAM_APP], "dirty_stream_views:app")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def tsrv():
    """dirty_timeout 2 s: a generator silent for longer is timed out."""
    srv = _start(["--workers", "1", "--dirty-timeout", "2"], [STREAM_APP],
                 "dirty_stream_views:app")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def fsrv():
    srv = _start(["--workers", "2"], [LLM_APP, IMAGE_APP, STREAM_APP], "dirty_seed_flask:app")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def asrv():
    srv = _start(["--workers", "1", "-k", "asgi"], [LLM_APP, STREAM_APP],
                 "dirty_seed_fastapi:app")
    yield srv
    srv.stop()


def run(srv, scenario, **kw):
    return post(srv, "/" + scenario, kw, timeout=120)


# -- the client API ------------------------------------------------------------

@pytest.mark.parametrize("mode", ["sync", "async"])
def test_sync_generator_0_1_and_100000_chunks(vsrv, mode):
    assert run(vsrv, "collect", action="count", args=[0], mode=mode) == {"chunks": [],
                                                                         "error": None}
    assert run(vsrv, "collect", action="count", args=[1], mode=mode) == {"chunks": [0],
                                                                         "error": None}
    r = run(vsrv, "collect", action="count", args=[100000], mode=mode, summary=True)
    assert r == {"n": 100000, "in_order": True, "sum": 100000 * 99999 // 2, "last": 99999,
                 "error": None}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_async_generator_chunks(vsrv, mode):
    assert run(vsrv, "collect", action="acount", args=[0], mode=mode)["chunks"] == []
    r = run(vsrv, "collect", action="acount", args=[3], mode=mode)
    assert r == {"chunks": [{"i": 0}, {"i": 1}, {"i": 2}], "error": None}
    r = run(vsrv, "collect", action="acount", args=[100000], mode=mode, summary=True)
    assert r["n"] == 100000 and r["last"] == {"i": 99999} and r["error"] is None
    assert run(vsrv, "collect", action="aempty", mode=mode) == {"chunks": [], "error": None}
    assert run(vsrv, "collect", action="empty", mode=mode) == {"chunks": [], "error": None}


def test_bytes_chunks(vsrv):
    r = run(vsrv, "collect", action="nbytes", args=[5, 65536])
    assert r["error"] is None
    assert r["chunks"] == [{"bytes": 65536, "first": i, "uniform": True} for i in range(5)]
    # chunks larger than the arbiter's 4 MiB high-water mark
    r = run(vsrv, "collect", action="nbytes", args=[3, 5 << 20], mode="async")
    assert r["chunks"] == [{"bytes": 5 << 20, "first": i, "uniform": True} for i in range(3)]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("action,prefix,exc", [("fail_after", "c", "RuntimeError"),
                                               ("afail_after", "a", "ValueError")])
def test_error_after_three_chunks(vsrv, mode, action, prefix, exc):
    r = run(vsrv, "collect", action=action, args=[3], mode=mode)
    assert r["chunks"] == [prefix + "0", prefix + "1", prefix + "2"]
    e = r["error"]
    assert e["class"] == "DirtyAppError" and e["is_dirty"]
    assert "failed after 3 chunks" in e["message"]
    assert exc in e["traceback"] and "dirty_stream_apps.py" in e["traceback"]
    # the worker serves the next call
    assert run(vsrv, "execute", action="pid")["result"] > 0


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_execute_of_a_streaming_action(vsrv, mode):
    # Upstream's execute() raises DirtyError("Unknown response type: chunk")
    # (or ": end" for an empty generator); so does ours, with a hint.
    e = run(vsrv, "execute", action="count", args=[3], mode=mode)["error"]
    assert e["class"] == "DirtyError"
    assert e["message"].startswith("Unknown response type: chunk")
    assert "client.stream()" in e["message"]
    e = run(vsrv, "execute", action="empty", mode=mode)["error"]
    assert e["message"].startswith("Unknown response type: end")
    assert run(vsrv, "execute", action="pid", mode=mode)["result"] > 0


def test_stream_of_a_plain_action_ends_without_chunks(vsrv):
    # as upstream: a RESPONSE to stream() ends the iteration
    assert run(vsrv, "collect", action="pid") == {"chunks": [], "error": None}


def test_two_interleaved_streams_on_one_client(vsrv):
    r = run(vsrv, "interleave", n=4)
    assert r["a"] == [0, True, 1, True, 2, True, 3, True]
    assert r["b"] == [{"i": i} for i in range(4)]
    assert r["rest"] == [[], []]


@pytest.mark.parametrize("mode,how,action,word", [
    ("sync", "break", "guarded", "closed"),
    ("sync", "close", "guarded", "closed"),
    ("sync", "break", "aguarded", "aclosed"),
    ("async", "break", "aguarded", "aclosed"),
    ("async", "close", "guarded", "closed"),
])
def test_consumer_stops_early(vsrv, tmp_path, mode, how, action, word):
    marker = str(tmp_path / "finally")
    r = run(vsrv, "break_early", marker=marker, action=action, mode=mode, how=how)
    assert r["chunks"] == [0, 1]
    # the generator's finally block ran in the dirty worker...
    wait_until(lambda: os.path.exists(marker), 20, "the generator's finally block")
    with open(marker) as f:
        assert f.read().startswith(word + " after ")
    # ...and its only thread is free for the next call
    assert run(vsrv, "execute", action="pid")["result"] > 0


# -- deadlines -----------------------------------------------------------------

def test_stalled_stream_hits_dirty_timeout(tsrv, tmp_path):
    go = str(tmp_path / "go")
    r = run(tsrv, "collect", action="stall", args=[go])
    assert r["chunks"] == ["before"]
    e = r["error"]
    assert e["class"] == "DirtyTimeoutError" and e["is_dirty"]
    assert "dirty_timeout" in e["message"] and e["timeout"] == 2
    open(go, "w").close()
    # the worker is freed (the generator sees the cancel) or replaced
    wait_until(lambda: "result" in run(tsrv, "execute", action="pid"), 30,
               "the dirty worker to serve again")


def test_chunks_restart_dirty_timeout(tsrv):
    # 100,000 chunks take longer than nothing but each arrives well within
    # dirty_timeout (2 s): the deadline is per chunk, not per stream.
    r = run(tsrv, "collect", action="acount", args=[100000], summary=True)
    assert r["n"] == 100000 and r["error"] is None


def test_stalled_stream_hits_the_client_timeout(vsrv, tmp_path):
    go = str(tmp_path / "go")
    r = run(vsrv, "collect", action="stall", args=[go], timeout=1.5)
    assert r["chunks"] == ["before"]
    assert r["error"]["class"] == "DirtyTimeoutError"
    open(go, "w").close()
    wait_until(lambda: "result" in run(vsrv, "execute", action="pid"), 30,
               "the dirty worker to serve again")


# -- back-pressure ---------------------------------------------------------------

def _vmhwm(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM for pid %d" % pid)


def test_one_gib_stream_to_a_slow_reader_keeps_the_arbiter_small(vsrv):
    arb = arbiter_pid(vsrv)
    r = run(vsrv, "drain", action="big", args=[1 << 30, 1 << 20], delay=0.002)
    assert r == {"bytes": 1 << 30, "chunks": 1024}
    hwm = _vmhwm(arb)
    assert hwm < 128 * 1024 * 1024, "dirty arbiter peak RSS %d bytes" % hwm


# -- HTTP end to end -----------------------------------------------------------

def _open(srv, method, path, body=b"", headers=()):
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    head = ["%s %s HTTP/1.1" % (method, path), "Host: test", "Connection: close",
            "Content-Length: %d" % len(body)] + list(headers)
    s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    return s


def _read_until(s, buf, needle):
    while needle not in buf:
        data = s.recv(65536)
        if not data:
            raise AssertionError("connection closed before %r; got %r" % (needle, bytes(buf)))
        buf += data
    return buf


def _read_all(s, buf):
    while True:
        data = s.recv(65536)
        if not data:
            return buf
        buf += data


def _sse_data(raw):
    body = raw.split(b"\r\n\r\n", 1)[1]
    return [line[6:].decode() for line in body.split(b"\n") if line.startswith(b"data: ")]


def test_flask_sse_relays_the_first_token_before_the_generator_ends(fsrv, tmp_path):
    go = str(tmp_path / "go")
    s = _open(fsrv, "POST", "/chat", json.dumps({"prompt": "wait:%s hi" % go}).encode(),
              ["Content-Type: application/json"])
    with s:
        buf = _read_until(s, bytearray(), b"data: Hello\n\n")
        assert buf.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"text/event-stream" in buf
        # the generator is now blocked until `go` exists: the token above
        # travelled while it was still running
        assert not os.path.exists(go)
        open(go, "w").close()
        raw = _read_all(s, buf)
    assert _sse_data(bytes(raw)) == ["Hello", ",", " world", "!"]


def test_flask_stream_with_context_sse(fsrv, tmp_path):
    go = str(tmp_path / "go")
    q = urllib.parse.urlencode([("action", "gated"), ("arg", go), ("arg", "4"), ("tag", "ok")])
    s = _open(fsrv, "GET", "/sse?" + q)
    with s:
        buf = _read_until(s, bytearray(), b"data: token-0\n\n")
        open(go, "w").close()
        raw = bytes(_read_all(s, buf))
    assert _sse_data(raw) == ["token-0", "token-1", "token-2", "token-3", "ok"]
    assert b"event: end\n" in raw and b"id: 3\n" in raw


def test_flask_client_disconnect_closes_the_generator(fsrv, tmp_path):
    marker = str(tmp_path / "finally")
    q = urllib.parse.urlencode([("action", "guarded"), ("arg", marker)])
    s = _open(fsrv, "GET", "/sse?" + q)
    _read_until(s, bytearray(), b"data: 3\n\n")
    s.close()  # the HTTP client goes away mid-stream
    wait_until(lambda: os.path.exists(marker), 20, "the generator's finally block")
    with open(marker) as f:
        assert f.read().startswith("closed after ")
    s = _open(fsrv, "GET", "/call?action=pid")
    with s:
        raw = bytes(_read_all(s, bytearray()))
    assert raw.startswith(b"HTTP/1.1 200") and b'"result"' in raw


def _png(w, h):
    from PIL import Image
    img = Image.new("RGB", (w, h))
    for x in range(w):
        img.putpixel((x, x % h), (255, x % 256, 0))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def test_seed_image_example_with_pillow(fsrv):
    from PIL import Image
    png = _png(640, 480)
    boundary = "cgtestboundary"
    body = (("--%s\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
             "Content-Type: image/png\r\n\r\n" % boundary).encode() + png
            + ("\r\n--%s--\r\n" % boundary).encode())
    s = _open(fsrv, "POST", "/upload", body,
              ["Content-Type: multipart/form-data; boundary=%s" % boundary])
    with s:
        raw = bytes(_read_all(s, bytearray()))
    head, jpeg = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200") and b"image/jpeg" in head
    img = Image.open(io.BytesIO(jpeg))
    assert img.format == "JPEG" and img.size == (256, 192)  # aspect ratio kept
    s = _open(fsrv, "POST", "/resize?w=32&h=20", png)
    with s:
        raw = bytes(_read_all(s, bytearray()))
    img = Image.open(io.BytesIO(raw.split(b"\r\n\r\n", 1)[1]))
    assert img.format == "PNG" and img.size == (32, 20)


def test_fastapi_streaming_response_relays_tokens(asrv, tmp_path):
    go = str(tmp_path / "go")
    q = urllib.parse.urlencode({"prompt": "wait:%s hi" % go})
    s = _open(asrv, "POST", "/chat?" + q)
    with s:
        buf = _read_until(s, bytearray(), b"data: Hello\n\n")
        assert buf.startswith(b"HTTP/1.1 200 OK\r\n") and b"text/event-stream" in buf
        assert not os.path.exists(go)
        open(go, "w").close()
        raw = bytes(_read_all(s, buf))
    assert _sse_data(raw) == ["Hello", ",", " world", "!"]


def test_fastapi_client_disconnect_closes_the_generator(asrv, tmp_path):
    marker = str(tmp_path / "finally")
    q = urllib.parse.urlencode({"action": "aguarded", "arg": marker})
    s = _open(asrv, "GET", "/sse?" + q)
    _read_until(s, bytearray(), b"data: 3\n\n")
    s.close()
    wait_until(lambda: os.path.exists(marker), 20, "the async generator's finally block")
    with open(marker) as f:
        assert f.read().startswith("aclosed after ")
    s = _open(asrv, "GET", "/call?action=pid")
    with s:
        raw = bytes(_read_all(s, bytearray()))
    assert raw.startswith(b"HTTP/1.1 200") and b'"result"' in raw
