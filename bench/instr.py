"""Instructions per request: cgunicorn under valgrind's callgrind, one worker,
the hello app, counted by the worker between two dumps.

    bench/.venv/bin/python bench/instr.py [--requests N] [--only REGEX]

For each worker class (sync, gthread, asgi) and each load (keep-alive: N
requests on one connection; close: N connections of one request each) the
worker serves a warm-up, its counters are dumped and zeroed
(`callgrind_control --dump`), it serves N more requests, and the second dump
divided by N is the figure. Instructions do not move with the machine's
noise the way req/s does, so a regression shows here first; they are
reported beside the timings by bench/run.py and never decide a test.
"""
import argparse
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import servers  # noqa: E402

CLASSES = [("sync", "wsgi"), ("gthread", "wsgi"), ("asgi", "asgi")]
LOADS = ("keep-alive", "close")
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
REQUEST_CLOSE = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
WARMUP = 50
READY_S = 120.0


def available():
    """None when callgrind can run, else why not."""
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            return "%s is not installed" % tool
    if not os.access(servers.cgunicorn_path(), os.X_OK):
        return "no cgunicorn binary at %s" % servers.cgunicorn_path()
    return None


def _read_response(sock, buf):
    """Reads one hello response (Content-Length framed); returns (what is
    left, whether the server closes the connection after it)."""
    while True:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buf[:head_end]
            m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            need = head_end + 4 + (int(m.group(1)) if m else 0)
            if len(buf) >= need:
                return buf[need:], re.search(rb"(?i)\r\nconnection:\s*close", head) is not None
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("connection closed mid-response")
        buf += chunk


def drive(port, n, load):
    """n requests, sequential. Keep-alive reconnects only when the server
    closes (the sync worker closes after every response, as gunicorn's)."""
    s = None
    buf = b""
    try:
        for _ in range(n):
            if s is None:
                s = socket.create_connection(("127.0.0.1", port), timeout=60)
                buf = b""
            s.sendall(REQUEST if load == "keep-alive" else REQUEST_CLOSE)
            buf, closes = _read_response(s, buf)
            if closes or load == "close":
                s.close()
                s = None
    finally:
        if s is not None:
            s.close()


def _dump_total(pid, work, before):
    """Dumps pid's counters; returns the instructions in the new dump file."""
    subprocess.run(["callgrind_control", "--dump", str(pid)], capture_output=True, timeout=120)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = set(glob.glob(os.path.join(work, "callgrind.out.%d.*" % pid))) - before
        for path in new:
            with open(path, errors="replace") as f:
                text = f.read()
            m = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.M)
            if m:
                return int(m.group(1)), before | new
        time.sleep(0.2)
    raise OSError("callgrind_control --dump %d wrote nothing" % pid)


def _worker_pid(master):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        kids = subprocess.run(["pgrep", "-P", str(master)], capture_output=True,
                              text=True).stdout.split()
        if kids:
            return int(kids[0])
        time.sleep(0.2)
    raise OSError("no worker process appeared")


def measure(wclass, app, n, log=print):
    """{load: instructions per request} for one worker class."""
    work = tempfile.mkdtemp(prefix="cgbench-instr-")
    port = servers.free_port()
    argv = ["valgrind", "--tool=callgrind", "--trace-children=yes",
            "--callgrind-out-file=" + os.path.join(work, "callgrind.out.%p"),
            servers.cgunicorn_path(), "-w", "1", "-k", wclass, "-b", "127.0.0.1:%d" % port,
            "--timeout", "300", "--graceful-timeout", "5", servers.APP_SPECS[app]]
    env = dict(os.environ, PYTHONPATH=servers.APPS)
    env.pop("GUNICORN_CMD_ARGS", None)
    log_path = os.path.join(work, "server.log")
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(argv, cwd=servers.APPS, env=env, stdin=subprocess.DEVNULL,
                                stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    out = {}
    try:
        deadline = time.monotonic() + READY_S
        while True:
            try:
                drive(port, 1, "keep-alive")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise OSError("cgunicorn %s did not start under valgrind" % wclass)
                time.sleep(0.5)
        pid = _worker_pid(proc.pid)
        seen = set()
        for load in LOADS:
            drive(port, WARMUP, load)
            _, seen = _dump_total(pid, work, seen)
            drive(port, n, load)
            total, seen = _dump_total(pid, work, seen)
            out[load] = total / n
            log("instr %-8s %-10s %8.0f instructions/request" % (wclass, load, out[load]))
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    return out


def measure_all(n, only=None, log=print):
    """{class: {load: instructions per request} or {"error": reason}}."""
    why = available()
    results = {}
    for wclass, app in CLASSES:
        if only and not re.search(only, wclass):
            continue
        if why:
            results[wclass] = {"error": why}
            continue
        try:
            results[wclass] = measure(wclass, app, n, log)
        except (OSError, subprocess.SubprocessError) as e:
            results[wclass] = {"error": str(e)[:200]}
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--only", help="regular expression on worker class names")
    args = ap.parse_args(argv)
    res = measure_all(args.requests, args.only)
    for wclass, r in res.items():
        if "error" in r:
            print("%-8s %s" % (wclass, r["error"]))
        else:
            print("%-8s " % wclass + "  ".join("%s %.0f" % (k, v) for k, v in r.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
