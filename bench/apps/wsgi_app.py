"""WSGI app for the benchmark. One route per scenario; stdlib only.

/            hello world (13 bytes)
/echo        JSON echo: reads the body, parses it, returns it re-encoded
/upload      reads the whole body, returns its length
/big         1 MiB response body from memory
/file        1 MiB file through wsgi.file_wrapper
/stream      1,000 chunks from a generator
/dirty       N dirty execute()/stream() round trips, timed inside the view:
             ?kind=trivial|bytes|bytes64|stream&n=N; answers JSON with p50/p99
             (µs), calls/s of the round trip itself and the dirty arbiter's
             peak RSS (VmHWM, KiB) after the calls
"""
import json
import os
import sys
import time

HELLO = b"Hello, World!"
BIG = b"x" * (1 << 20)
CHUNK = b"c" * 64
FILE_PATH = os.path.join(os.environ.get("BENCH_DATA_DIR", "/tmp"), "cgbench-1m.bin")
DIRTY_APP = "dirty_bench:BenchDirtyApp"
DIRTY_PAYLOAD = b"\x01" * (1 << 20)
DIRTY_PAYLOADS = {"bytes": DIRTY_PAYLOAD}


def _payload(kind):
    if kind not in DIRTY_PAYLOADS:  # 64 MiB, made on first use only
        DIRTY_PAYLOADS[kind] = b"\x02" * (64 << 20)
    return DIRTY_PAYLOADS[kind]


def _vm_hwm_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _ensure_file():
    if not os.path.exists(FILE_PATH) or os.path.getsize(FILE_PATH) != len(BIG):
        tmp = FILE_PATH + ".%d" % os.getpid()
        with open(tmp, "wb") as f:
            f.write(BIG)
        os.replace(tmp, FILE_PATH)


_ensure_file()


def _read_body(environ):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    return environ["wsgi.input"].read(length) if length else b""


def _percentile(sorted_vals, q):
    if not sorted_vals:
        return 0.0
    i = min(len(sorted_vals) - 1, int(round(q * (len(sorted_vals) - 1))))
    return sorted_vals[i]


def _dirty(environ):
    from urllib.parse import parse_qs
    from gunicorn.dirty import get_dirty_client

    qs = parse_qs(environ.get("QUERY_STRING", ""))
    kind = qs.get("kind", ["trivial"])[0]
    n = int(qs.get("n", ["100"])[0])
    client = get_dirty_client()
    times = []
    items = 0
    start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        if kind == "trivial":
            r = client.execute(DIRTY_APP, "ping")
            if r != "pong":
                raise RuntimeError("dirty ping answered %r" % (r,))
        elif kind in ("bytes", "bytes64"):
            payload = _payload(kind)
            r = client.execute(DIRTY_APP, "echo", payload)
            if len(r) != len(payload):
                raise RuntimeError("dirty echo answered %d bytes" % len(r))
        elif kind == "stream":
            for _chunk in client.stream(DIRTY_APP, "chunks", 1000):
                items += 1
        else:
            raise ValueError("unknown dirty kind %r" % kind)
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    times.sort()
    out = {
        "kind": kind,
        "n": n,
        "p50_us": _percentile(times, 0.50) * 1e6,
        "p99_us": _percentile(times, 0.99) * 1e6,
        "calls_per_s": n / total if total > 0 else 0.0,
        "items": items,
        "arbiter_hwm_kb": _vm_hwm_kb(client.execute(DIRTY_APP, "ppid")),
        # where the dirty client came from: a file of upstream gunicorn, or
        # "<module> (no file)" for one served from inside cgunicorn's binary
        "client_module": (getattr(sys.modules.get(type(client).__module__), "__file__", None)
                          or "%s (no file)" % type(client).__module__),
    }
    return json.dumps(out).encode()


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/":
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(HELLO)))])
        return [HELLO]
    if path == "/echo":
        data = json.dumps(json.loads(_read_body(environ))).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(data)))])
        return [data]
    if path == "/upload":
        n = len(_read_body(environ))
        data = str(n).encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(data)))])
        return [data]
    if path == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(BIG)))])
        return [BIG]
    if path == "/file":
        f = open(FILE_PATH, "rb")
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(BIG)))])
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is None:
            return iter(lambda: f.read(65536), b"")
        return wrapper(f, 65536)
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (CHUNK for _ in range(1000))
    if path == "/dirty":
        # a failed call answers 502 with the exception, so the report's note
        # says why a server could not serve the row (not a bare 500 page)
        try:
            status, data = "200 OK", _dirty(environ)
        except Exception as e:  # noqa: BLE001 - reported, not swallowed
            status = "502 Bad Gateway"
            data = json.dumps({"error": "%s: %s" % (type(e).__name__, e)}).encode()
        start_response(status, [("Content-Type", "application/json"),
                                ("Content-Length", str(len(data)))])
        return [data]
    start_response("404 Not Found", [("Content-Length", "0")])
    return [b""]
