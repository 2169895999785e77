"""Load generation with wrk, and parsing of its --latency report."""
import os
import re
import subprocess

BENCH = os.path.dirname(os.path.abspath(__file__))
POST_LUA = os.path.join(BENCH, "post.lua")

_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}


def _to_us(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError("unknown latency %r" % text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out):
    """dict(rps, p50_us, p99_us, requests, errors, non2xx) from wrk's output.

    Raises ValueError when the report lacks the Requests/sec line.
    """
    res = {"errors": 0, "non2xx": 0}
    m = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if not m:
        raise ValueError("wrk printed no Requests/sec line: %s" % out.strip()[-300:])
    res["rps"] = float(m.group(1))
    m = re.search(r"^\s*(\d+) requests in", out, re.M)
    res["requests"] = int(m.group(1)) if m else 0
    for q, key in (("50", "p50_us"), ("99", "p99_us")):
        m = re.search(r"^\s+%s(?:\.000)?%%\s+(\S+)" % q, out, re.M)
        res[key] = _to_us(m.group(1)) if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["errors"] = sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["non2xx"] = int(m.group(1))
    return res


def run_wrk(port, path, duration_s, connections, client_cpus, close=False, body=None,
            timeout_s=5, tls=False):
    """One wrk run against 127.0.0.1:port; returns parse_wrk()'s dict.

    body: None, "json4k" or "raw1m" (made by post.lua). close: send
    "Connection: close" so every request opens a new connection (over TLS,
    wrk offers the session ticket it got last on each). tls: https://.
    """
    argv = ["taskset", "-c", client_cpus, "wrk", "-t1", "-c", str(connections),
            "-d", "%ds" % duration_s, "--timeout", "%ds" % timeout_s, "--latency"]
    if close:
        argv += ["-H", "Connection: close"]
    env = dict(os.environ)
    if body:
        argv += ["-s", POST_LUA]
        env["BENCH_BODY"] = body
    argv.append("%s://127.0.0.1:%d%s" % ("https" if tls else "http", port, path))
    proc = subprocess.run(argv, capture_output=True, text=True, env=env,
                          timeout=duration_s + timeout_s + 30)
    if proc.returncode != 0:
        raise ValueError("wrk exited %d: %s" % (proc.returncode,
                                                (proc.stderr or proc.stdout).strip()[-300:]))
    return parse_wrk(proc.stdout)
