#!/usr/bin/env python3
"""Dirty-pool benchmark: cgunicorn against upstream gunicorn, same run.

Starts each server with one HTTP worker and one dirty worker, then asks a
view to make N dirty calls and time them *inside the view* (so HTTP does not
hide the IPC cost). Scenarios:

  trivial   execute() of an action returning "pong": p50/p99 latency, calls/s
  bytes     execute() echoing a 1 MiB bytes payload: calls/s
  stream    stream() of 1000 small str chunks: chunks/s
  ttfc      stream() whose generator yields at once: time to the first chunk
  rss       (cgunicorn only, --rss) a 1 GiB stream of 1 MiB chunks to a slow
            reader: the dirty arbiter's peak RSS (VmHWM)

This file is also the app both servers load (``dirty_bench:app`` and
``dirty_bench:BenchApp``), so the script is self-contained.

    .venv/bin/python bench/dirty_bench.py [--n-trivial 3000] [--json] [--rss]
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

try:  # the server side: gunicorn.dirty is upstream's or cgunicorn's builtin
    from gunicorn.dirty import DirtyApp
except ImportError:  # pragma: no cover - the driver does not need it
    DirtyApp = object

APP = "dirty_bench:BenchApp"
MIB = 1 << 20
PAYLOAD = b"\x01" * MIB


class BenchApp(DirtyApp):
    def init(self):
        self.block = b"z" * MIB

    def ping(self):
        return "pong"

    def echo(self, payload):
        return payload

    def chunks(self, n):
        for i in range(n):
            yield "chunk-%d" % i

    def first(self):
        yield "first"

    def big(self, total, size):
        block = self.block[:size]
        for _ in range(total // size):
            yield block

    def close(self):
        pass


def _pct(vals, q):
    return vals[min(len(vals) - 1, int(round(q * (len(vals) - 1))))] if vals else 0.0


def _run(kind, n, delay):
    from gunicorn.dirty import get_dirty_client

    client = get_dirty_client(timeout=300)
    times, items, nbytes = [], 0, 0
    start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        if kind == "trivial":
            if client.execute(APP, "ping") != "pong":
                raise RuntimeError("bad ping")
        elif kind == "bytes":
            if len(client.execute(APP, "echo", PAYLOAD)) != MIB:
                raise RuntimeError("bad echo")
        elif kind == "stream":
            for _c in client.stream(APP, "chunks", 1000):
                items += 1
        elif kind == "ttfc":
            it = iter(client.stream(APP, "first"))
            next(it)
            times.append(time.perf_counter() - t0)
            for _c in it:
                pass
            continue
        elif kind == "big":
            for c in client.stream(APP, "big", 1 << 30, MIB):
                nbytes += len(c)
                if delay:
                    time.sleep(delay)
        else:
            raise ValueError(kind)
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    times.sort()
    return {"kind": kind, "n": n, "p50_us": _pct(times, 0.5) * 1e6,
            "p99_us": _pct(times, 0.99) * 1e6, "calls_per_s": n / total,
            "items_per_s": items / total, "bytes": nbytes, "seconds": total}


def app(environ, start_response):
    """WSGI view: /run?kind=K&n=N[&delay=S] -> JSON timings."""
    from urllib.parse import parse_qs

    qs = parse_qs(environ.get("QUERY_STRING", ""))
    try:
        out = _run(qs["kind"][0], int(qs.get("n", ["100"])[0]),
                   float(qs.get("delay", ["0"])[0]))
        status = "200 OK"
    except Exception as e:  # reported to the driver
        out, status = {"error": "%s: %s" % (type(e).__name__, e)}, "500 Internal Server Error"
    body = json.dumps(out).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]


# -- driver ------------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port, path, timeout):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
        return json.loads(r.read())


class Server:
    def __init__(self, name, argv):
        self.name = name
        self.port = _free_port()
        self.log = open("/tmp/dirty_bench_%s_%d.log" % (name, os.getpid()), "w+")
        argv = argv + ["-b", "127.0.0.1:%d" % self.port, "-w", "1", "--dirty-workers", "1",
                       "--dirty-app", APP, "--dirty-timeout", "300", "--timeout", "300",
                       "dirty_bench:app"]
        self.proc = subprocess.Popen(argv, cwd=os.path.dirname(os.path.abspath(__file__)),
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                r = _get(self.port, "/run?kind=trivial&n=1", 10)
                if "error" not in r:
                    return
                last = r["error"]
            except Exception as e:
                last = e
            time.sleep(0.2)
        raise RuntimeError("%s not ready: %s" % (self.name, last))

    def run(self, kind, n, delay=0.0):
        r = _get(self.port, "/run?kind=%s&n=%d&delay=%g" % (kind, n, delay), 600)
        if "error" in r:
            raise RuntimeError("%s %s: %s" % (self.name, kind, r["error"]))
        return r

    def arbiter_pid(self):
        import re

        self.log.flush()
        self.log.seek(0)
        m = re.search(r"[Dd]irty arbiter \(pid: (\d+)\)", self.log.read())
        return int(m.group(1)) if m else None

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass
        self.log.close()


def _vm(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def measure(server, args):
    out = {}
    server.wait_ready()
    server.run("trivial", 200)  # warm up
    out["trivial"] = server.run("trivial", args.n_trivial)
    server.run("bytes", 5)
    out["bytes_1mib"] = server.run("bytes", args.n_bytes)
    out["stream_1000"] = server.run("stream", args.n_stream)
    out["ttfc"] = server.run("ttfc", args.n_ttfc)
    return out


def measure_rss(server, delay):
    server.wait_ready()
    pid = server.arbiter_pid()
    before = _vm(pid, "VmHWM") if pid else 0
    r = server.run("big", 1, delay)
    return {"arbiter_pid": pid, "vmhwm_before": before,
            "vmhwm_after": _vm(pid, "VmHWM") if pid else 0, "bytes": r["bytes"],
            "seconds": r["seconds"], "reader_delay_per_mib_s": delay}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cgunicorn", default=os.path.join(ROOT, "build", "cgunicorn"))
    ap.add_argument("--gunicorn", default=os.path.join(ROOT, ".venv", "bin", "gunicorn"))
    ap.add_argument("--only", choices=("cgunicorn", "gunicorn"))
    ap.add_argument("--n-trivial", type=int, default=3000)
    ap.add_argument("--n-bytes", type=int, default=200)
    ap.add_argument("--n-stream", type=int, default=30)
    ap.add_argument("--n-ttfc", type=int, default=300)
    ap.add_argument("--rss", action="store_true",
                    help="also stream 1 GiB to a slow reader and report the arbiter's VmHWM")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    servers = [("cgunicorn", [args.cgunicorn]), ("gunicorn", [args.gunicorn])]
    results = {}
    for name, argv in servers:
        if args.only and name != args.only:
            continue
        s = Server(name, argv)
        try:
            results[name] = measure(s, args)
            if args.rss and name == "cgunicorn":
                results[name]["rss_1gib_stream"] = measure_rss(s, 0.002)
        finally:
            s.stop()
    if "cgunicorn" in results and "gunicorn" in results:
        c, g = results["cgunicorn"], results["gunicorn"]
        results["ratios"] = {
            "trivial_calls_per_s": c["trivial"]["calls_per_s"] / g["trivial"]["calls_per_s"],
            "bytes_calls_per_s": c["bytes_1mib"]["calls_per_s"] / g["bytes_1mib"]["calls_per_s"],
            "stream_chunks_per_s": (c["stream_1000"]["items_per_s"]
                                    / g["stream_1000"]["items_per_s"]),
            "ttfc_p50": g["ttfc"]["p50_us"] / c["ttfc"]["p50_us"],
        }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for name in ("cgunicorn", "gunicorn"):
        r = results.get(name)
        if r is None:
            continue
        print("%-10s trivial p50 %7.1f us p99 %7.1f us %8.0f calls/s | 1 MiB echo %6.0f calls/s"
              " | stream %8.0f chunks/s | first chunk p50 %7.1f us"
              % (name, r["trivial"]["p50_us"], r["trivial"]["p99_us"],
                 r["trivial"]["calls_per_s"], r["bytes_1mib"]["calls_per_s"],
                 r["stream_1000"]["items_per_s"], r["ttfc"]["p50_us"]))
        if "rss_1gib_stream" in r:
            m = r["rss_1gib_stream"]
            print("%-10s 1 GiB stream to a slow reader in %.1f s: arbiter VmHWM %.1f MB"
                  % ("", m["seconds"], m["vmhwm_after"] / 1e6))
    if "ratios" in results:
        print("ratios     " + "  ".join("%s %.2fx" % kv for kv in results["ratios"].items()))


if __name__ == "__main__":
    sys.exit(main())
