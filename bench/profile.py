"""Profiles one scenario and writes the top functions to
bench/results/profile-<date>.txt.

    bench/.venv/bin/python bench/profile.py [--scenario ID] [--server VARIANT] [--seconds N]

Default: WSGI hello keep-alive against cgunicorn (gthread, else sync); when
cgunicorn cannot serve it yet, against upstream gunicorn gthread, and the
output says so. Uses `perf record` (cpu-clock, every process of the server)
and falls back to `valgrind --tool=callgrind` when perf cannot record here.
"""
import argparse
import datetime
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import load as loadgen          # noqa: E402
import servers                  # noqa: E402
from run import cpu_sets        # noqa: E402
from scenarios import SCENARIOS  # noqa: E402

DEFAULT_SCENARIO = "wsgi-hello-gthread-ka"
DEFAULT_ORDER = ["cg-gthread", "cg-sync", "gu-gthread"]
TOP = 40


def _tidy(line):
    """perf pads its lines with empty '-' columns; drop them."""
    return re.sub(r"(\s+-)+\s*$", "", line.rstrip())


def perf_works():
    if not shutil.which("perf"):
        return False
    try:
        p = subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-o", os.devnull,
                            "--", "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return p.returncode == 0


def start(vid, sc, server_cpus, prefix=(), ready_timeout=servers.READY_TIMEOUT):
    """A ready Running server, or (None, reason)."""
    v = servers.VARIANTS[vid]
    why = v.unavailable() if v.unavailable else None
    if why:
        return None, why
    if sc.app not in v.apps:
        return None, "%s does not serve %s apps" % (v.label, sc.app)
    srv = servers.Running(v, sc.app, False, server_cpus, prefix=prefix)
    # "/" answers a GET in every wsgi/asgi app (the scenario's own path may
    # need a body: /echo)
    path = "/json" if sc.app == "fastapi" else "/"
    if not srv.wait_ready(path, timeout=ready_timeout):
        srv.stop()
        return None, srv.error
    return srv, None


def perf_profile(srv, sc, seconds, client_cpus, work):
    data = os.path.join(work, "perf.data")
    pids = ",".join(str(p) for p in srv.pids())
    rec = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-o", data,
                            "-p", pids], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           start_new_session=True)
    try:
        time.sleep(0.5)
        res = loadgen.run_wrk(srv.port, sc.load.path, seconds, sc.load.connections,
                              client_cpus, close=sc.load.close, body=sc.load.body)
    finally:
        try:
            os.killpg(rec.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        try:
            rec.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(rec.pid, signal.SIGKILL)
            rec.wait()
    report = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                             "--sort", "dso,symbol", "--percent-limit", "0.3"],
                            capture_output=True, text=True, timeout=300)
    lines = [_tidy(ln) for ln in report.stdout.splitlines()
             if ln.strip() and not ln.startswith("#")]
    by_dso = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                             "--sort", "comm,dso"], capture_output=True, text=True,
                            timeout=300)
    dso_lines = [_tidy(ln) for ln in by_dso.stdout.splitlines()
                 if ln.strip() and not ln.startswith("#")][:15]
    body = ["Top functions (perf record -e cpu-clock -F 999, all server processes):", ""]
    body += lines[:TOP] or ["(perf report printed nothing: %s)" % report.stderr.strip()[-300:]]
    body += ["", "By process and object:", ""] + dso_lines
    return res, body


def callgrind_profile(vid, sc, seconds, server_cpus, client_cpus, work):
    out = os.path.join(work, "callgrind.%p")
    prefix = ["valgrind", "--tool=callgrind", "--trace-children=yes",
              "--callgrind-out-file=" + out]
    srv, why = start(vid, sc, server_cpus, prefix=prefix, ready_timeout=120)
    if srv is None:
        return None, None, why
    try:
        res = loadgen.run_wrk(srv.port, sc.load.path, seconds, 4, client_cpus,
                              close=sc.load.close, body=sc.load.body, timeout_s=10)
    finally:
        srv.stop(grace=60.0)
    files = sorted(glob.glob(os.path.join(work, "callgrind.*")), key=os.path.getsize)
    if not files:
        return res, None, "callgrind wrote no output"
    biggest = files[-1]   # the busiest process: a worker
    ann = subprocess.run(["callgrind_annotate", "--inclusive=no", biggest],
                         capture_output=True, text=True, timeout=300)
    lines = [ln for ln in ann.stdout.splitlines() if ln.strip()]
    body = ["Top functions (valgrind --tool=callgrind, busiest process %s, "
            "self cost in instructions):" % os.path.basename(biggest), ""]
    body += lines[:TOP + 20]
    return res, body, None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default=os.environ.get("BENCH_PROFILE_SCENARIO",
                                                         DEFAULT_SCENARIO))
    ap.add_argument("--server", default=os.environ.get("BENCH_PROFILE_SERVER"),
                    help="variant id (%s)" % ", ".join(servers.VARIANTS))
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--out", default=os.path.join(servers.BENCH, "results"))
    args = ap.parse_args(argv)
    by_id = {s.id: s for s in SCENARIOS}
    sc = by_id.get(args.scenario)
    if sc is None or sc.dirty:
        ap.error("--scenario %r is not an HTTP scenario; choose one of: %s" % (
            args.scenario, ", ".join(s.id for s in SCENARIOS if not s.dirty)))
    if args.server and args.server not in servers.VARIANTS:
        ap.error("--server %r is unknown; choose one of: %s" % (
            args.server, ", ".join(servers.VARIANTS)))
    order = [args.server] if args.server else DEFAULT_ORDER
    server_cpus, client_cpus = cpu_sets()
    use_perf = perf_works()
    tool = "perf" if use_perf else "callgrind"
    skipped = []
    work = tempfile.mkdtemp(prefix="cgbench-prof-")
    res = body = None
    chosen = None
    try:
        for vid in order:
            if use_perf:
                srv, why = start(vid, sc, server_cpus)
                if srv is None:
                    skipped.append("%s: %s" % (vid, why))
                    continue
                try:
                    res, body = perf_profile(srv, sc, args.seconds, client_cpus, work)
                finally:
                    srv.stop()
            else:
                res, body, why = callgrind_profile(vid, sc, args.seconds, server_cpus,
                                                   client_cpus, work)
                if body is None:
                    skipped.append("%s: %s" % (vid, why))
                    continue
            chosen = vid
            break
    finally:
        servers.Running.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    if chosen is None:
        print("bench-profile: no server could serve %s:\n  %s" % (sc.id, "\n  ".join(skipped)),
              file=sys.stderr)
        return 1
    now = datetime.datetime.now()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "profile-%s.txt" % now.strftime("%Y-%m-%d"))
    head = ["cgunicorn benchmark profile — %s" % now.strftime("%Y-%m-%d %H:%M"),
            "scenario: %s (%s)" % (sc.id, sc.title),
            "server: %s (%s)" % (servers.VARIANTS[chosen].label, chosen),
            "tool: %s; %d s of wrk -t1 -c %d; server CPUs %s, client CPUs %s" % (
                tool, args.seconds, sc.load.connections if use_perf else 4, server_cpus,
                client_cpus),
            "throughput while profiled: %.0f req/s" % res["rps"] if res else ""]
    for s in skipped:
        head.append("not profiled: " + s)
    with open(path, "w") as f:
        f.write("\n".join(head + [""] + body) + "\n")
    print("bench-profile: wrote %s (%s, %s)" % (os.path.relpath(path), chosen, tool))
    return 0


if __name__ == "__main__":
    sys.exit(main())
