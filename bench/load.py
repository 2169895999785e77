"""Load generation with wrk (HTTP/1.1) and h2load (HTTP/2), and parsing of
their reports."""
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


def parse_h2load(out):
    """parse_wrk()'s dict from h2load's report (p50/p99: None, h2load gives
    only min/max/mean). Raises ValueError when there is no req/s figure or
    the protocol was not h2 (a server that fell back to HTTP/1.1)."""
    m = re.search(r"^finished in [\d.]+\w*, ([\d.]+) req/s", out, re.M)
    if not m:
        raise ValueError("h2load printed no req/s line: %s" % out.strip()[-300:])
    proto = re.search(r"^Application protocol: (\S+)", out, re.M)
    if not proto or proto.group(1) != "h2":
        raise ValueError("h2load did not speak h2 (%s)" % (proto.group(1) if proto else "none"))
    res = {"rps": float(m.group(1)), "p50_us": None, "p99_us": None, "errors": 0, "non2xx": 0,
           "requests": 0}
    m = re.search(r"^requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", out, re.M)
    if m:
        res["requests"] = int(m.group(1))
        res["errors"] = int(m.group(3)) + int(m.group(4))
    m = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out, re.M)
    if m:
        res["non2xx"] = sum(int(x) for x in m.groups()[2:])
    return res


def run_h2load(port, path, duration_s, connections, streams, client_cpus):
    """One h2load run (one thread) against https://127.0.0.1:port with
    `connections` connections of `streams` concurrent streams each; returns
    parse_h2load()'s dict."""
    # -N: a connection the server never answers (a thread-per-connection
    # server with more connections than threads) ends after 5 s idle and
    # counts as errored, instead of holding the run forever.
    argv = ["taskset", "-c", client_cpus, "h2load", "-t1", "-c", str(connections),
            "-m", str(streams), "-D", str(duration_s), "-N", "5",
            "https://127.0.0.1:%d%s" % (port, path)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 30)
    except subprocess.TimeoutExpired as e:
        raise ValueError("h2load did not finish within %d s" % (duration_s + 30)) from e
    if proc.returncode != 0:
        raise ValueError("h2load exited %d: %s" % (proc.returncode,
                                                   (proc.stderr or proc.stdout).strip()[-300:]))
    return parse_h2load(proc.stdout)
