"""Runs the benchmark: every scenario under cgunicorn and its peers, one run,
same client settings, on 127.0.0.1; writes bench/results/<date>[-quick].md,
.json and .png.

    bench/.venv/bin/python bench/run.py [--quick] [--only REGEX]

Environment: CGUNICORN (binary, default build/cgunicorn), BENCH_SERVER_CPUS
(default "1"), BENCH_CLIENT_CPUS (default "0"), BENCH_ONLY (scenario id regex),
BENCH_KEEP_LOGS=1 (keep each server's temp dir and log).
"""
import argparse
import atexit
import datetime
import http.client
import json
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import instr                    # noqa: E402
import load as loadgen          # noqa: E402
import report                   # noqa: E402
import servers                  # noqa: E402
from scenarios import SCENARIOS  # noqa: E402


class Mode:
    def __init__(self, name, runs, duration, warmup, budget, dirty_n):
        self.name = name
        self.runs = runs
        self.duration = duration
        self.warmup = warmup
        self.budget = budget
        self.dirty_n = dirty_n


INSTR_REQUESTS = {"full": 500, "quick": 200}

FULL = Mode("full", runs=3, duration=3, warmup=1, budget=13 * 60,
            dirty_n={"trivial": 2000, "bytes": 100, "bytes64": 10, "stream": 40})
QUICK = Mode("quick", runs=1, duration=2, warmup=0, budget=300,
             dirty_n={"trivial": 300, "bytes": 20, "bytes64": 3, "stream": 8})


def cpu_sets():
    n = os.cpu_count() or 1
    if n < 2:
        dflt_server = dflt_client = "0"
    else:
        dflt_server, dflt_client = "1", "0"
    return (os.environ.get("BENCH_SERVER_CPUS", dflt_server),
            os.environ.get("BENCH_CLIENT_CPUS", dflt_client))


def _result(status, reason=None, **kw):
    r = {"status": status, "reason": reason}
    r.update(kw)
    return r


def _unavailable(variant, reason):
    """cgunicorn that cannot do it yet is 'na', a peer that fails is 'failed'."""
    return _result("na" if variant.kind == "cgunicorn" else "failed", reason)


def measure_http(srv, ld, mode, client_cpus):
    method, body = ld.check_request()
    try:
        if ld.h2_streams:
            status, resp = servers.h2_get(srv.port, ld.path, timeout=15)
        else:
            status, resp = servers.http_get(srv.port, ld.path, method, body, timeout=15,
                                            tls=srv.variant.tls)
    except (OSError, http.client.HTTPException) as e:
        return _unavailable(srv.variant, "check request failed: %s: %s" % (type(e).__name__, e))
    if status != 200:
        return _unavailable(srv.variant, "check request answered HTTP %d" % status)
    err = ld.check(resp)
    if err:
        return _unavailable(srv.variant, "check request: " + err)
    if ld.h2_streams:
        def one(duration):
            return loadgen.run_h2load(srv.port, ld.path, duration, ld.connections,
                                      ld.h2_streams, client_cpus)
    else:
        def one(duration):
            return loadgen.run_wrk(srv.port, ld.path, duration, connections=ld.connections,
                                   client_cpus=client_cpus, close=ld.close, body=ld.body,
                                   tls=srv.variant.tls)
    try:
        if mode.warmup:
            one(mode.warmup)
        runs = [one(mode.duration) for _ in range(mode.runs)]
    except (ValueError, OSError) as e:
        return _unavailable(srv.variant, "load run failed: %s" % e)
    for r in runs:
        if r["requests"] == 0:
            return _unavailable(srv.variant, "no request completed under load")
        if r["non2xx"] > 0.01 * r["requests"]:
            return _unavailable(srv.variant, "%d of %d responses were not 2xx"
                                % (r["non2xx"], r["requests"]))
    if srv.proc.poll() is not None:
        return _unavailable(srv.variant, "server exited during the run: " + srv.log_tail())
    master, workers, nproc = srv.rss_kb()
    by_rate = sorted(runs, key=lambda r: r["rps"])
    med = by_rate[len(by_rate) // 2]
    return _result("ok", rate=med["rps"], rate_min=by_rate[0]["rps"],
                   rate_max=by_rate[-1]["rps"], p50_us=med["p50_us"], p99_us=med["p99_us"],
                   errors=sum(r["errors"] for r in runs), requests=sum(r["requests"] for r in runs),
                   rss_master_kb=master, rss_workers_kb=workers, nprocs=nproc,
                   runs=[r["rps"] for r in runs])


def _dirty_call(port, kind, n, timeout):
    status, body = servers.http_get(port, "/dirty?kind=%s&n=%d" % (kind, n), timeout=timeout)
    if status != 200:
        raise ValueError("/dirty answered HTTP %d: %s" % (status, body[:300].decode("utf-8", "replace")))
    return json.loads(body)


def dirty_ready(srv, deadline_s=20.0):
    """Waits until one trivial dirty call goes through; returns None or the reason."""
    end = time.monotonic() + deadline_s
    last = "no answer"
    while time.monotonic() < end:
        if srv.proc.poll() is not None:
            return "server exited: " + srv.log_tail()
        try:
            _dirty_call(srv.port, "trivial", 1, 5)
            return None
        except (OSError, ValueError, http.client.HTTPException) as e:
            last = str(e)[:200]
        time.sleep(0.2)
    return "dirty pool not ready after %.0f s: %s" % (deadline_s, last)


def measure_dirty(srv, kind, mode):
    n = mode.dirty_n[kind]
    runs = []
    try:
        for _ in range(mode.runs):
            r = _dirty_call(srv.port, kind, n, timeout=60)
            if r.get("n") != n or (kind == "stream" and r.get("items") != n * 1000):
                return _unavailable(srv.variant, "dirty view answered %r" % (r,))
            runs.append(r)
    except (OSError, ValueError, http.client.HTTPException) as e:
        return _unavailable(srv.variant, "dirty %s failed: %s" % (kind, str(e)[:200]))
    master, workers, nproc = srv.rss_kb()
    by_rate = sorted(runs, key=lambda r: r["calls_per_s"])
    med = by_rate[len(by_rate) // 2]
    return _result("ok", rate=med["calls_per_s"], rate_min=by_rate[0]["calls_per_s"],
                   rate_max=by_rate[-1]["calls_per_s"], p50_us=med["p50_us"],
                   p99_us=med["p99_us"], errors=0, requests=n * len(runs),
                   rss_master_kb=master, rss_workers_kb=workers, nprocs=nproc,
                   arbiter_hwm_kb=max([r.get("arbiter_hwm_kb") or 0 for r in runs]),
                   runs=[r["calls_per_s"] for r in runs])


def plan(scenarios):
    """Ordered {server_key: [(scenario, variant_id)]}; a server is started once
    for all the scenarios it serves."""
    groups = {}
    for sc in scenarios:
        for vid in sc.variants:
            v = servers.VARIANTS[vid]
            app = "static" if v.kind == "ceiling" else (v.app or sc.app)
            key = (vid, app, bool(sc.dirty))
            groups.setdefault(key, []).append(sc)
    return groups


def run_all(scenarios, mode, log):
    server_cpus, client_cpus = cpu_sets()
    deadline = time.monotonic() + mode.budget
    results = {}          # (scenario id, variant id) -> result
    memo = {}             # (server key, load key) -> result
    for key, scs in plan(scenarios).items():
        vid, app, dirty = key
        v = servers.VARIANTS[vid]

        def put_all(res, scs=scs, vid=vid):
            for sc in scs:
                results.setdefault((sc.id, vid), res)

        if time.monotonic() > deadline:
            put_all(_result("skipped", "time budget of %d s used up" % mode.budget))
            continue
        reason = v.unavailable() if v.unavailable else None
        if reason:
            put_all(_unavailable(v, reason))
            log("%-22s %-8s unavailable: %s" % (v.label, app, reason))
            continue
        srv = servers.Running(v, app, dirty, server_cpus)
        try:
            ready_path = "/json" if app == "fastapi" else "/"
            if not srv.wait_ready(ready_path):
                put_all(_unavailable(v, srv.error))
                log("%-22s %-8s did not start: %s" % (v.label, app, srv.error))
                continue
            if dirty:
                why = dirty_ready(srv)
                if why:
                    put_all(_unavailable(v, why))
                    log("%-22s dirty: %s" % (v.label, why))
                    continue
            for sc in scs:
                if (sc.id, vid) in results:
                    continue
                if time.monotonic() > deadline:
                    results[(sc.id, vid)] = _result("skipped", "time budget of %d s used up"
                                                    % mode.budget)
                    continue
                mkey = (key, sc.dirty or sc.load.key)
                if mkey not in memo:
                    if dirty:
                        memo[mkey] = measure_dirty(srv, sc.dirty, mode)
                    else:
                        memo[mkey] = measure_http(srv, sc.load, mode, client_cpus)
                res = memo[mkey]
                results[(sc.id, vid)] = res
                log("%-26s %-28s %s" % (sc.id, v.label, report.short(res, sc.unit)))
        finally:
            srv.stop()
    return results


def versions():
    out = {}
    try:
        from importlib import metadata
        for name in ("gunicorn", "uvicorn", "uvloop", "httptools", "granian", "fastapi",
                     "uwsgi"):
            try:
                out[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                pass
    except ImportError:
        pass
    return out


def render(json_path):
    ids, results, meta = report.read_json(json_path)
    by_id = {s.id: s for s in SCENARIOS}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        sys.exit("%s: scenarios %s are not defined in bench/scenarios.py any more"
                 % (json_path, ", ".join(unknown)))
    scenarios = [by_id[i] for i in ids]
    stem = json_path[:-len(".json")] if json_path.endswith(".json") else json_path
    png = stem + ".png"
    note = report.write_chart(png, scenarios, results, meta)
    report.write_markdown(stem + ".md", scenarios, results, meta, os.path.basename(png), note)
    print("rewrote %s.md and %s" % (stem, png))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 run per figure, shorter runs")
    ap.add_argument("--only", default=os.environ.get("BENCH_ONLY"),
                    help="regular expression on scenario ids")
    ap.add_argument("--out", default=os.path.join(servers.BENCH, "results"),
                    help="directory for the .md/.json/.png (default bench/results)")
    ap.add_argument("--instr", action=argparse.BooleanOptionalAction, default=None,
                    help="count instructions per request under callgrind (bench/instr.py); "
                    "default: on, off with --only")
    ap.add_argument("--render", metavar="JSON",
                    help="rewrite the .md and .png beside JSON from its figures; runs nothing")
    args = ap.parse_args(argv)
    if args.render:
        return render(args.render)
    mode = QUICK if args.quick else FULL
    scenarios = SCENARIOS
    if args.only:
        try:
            rx = re.compile(args.only)
        except re.error as e:
            ap.error("--only %r is not a valid regular expression: %s" % (args.only, e))
        scenarios = [s for s in SCENARIOS if rx.search(s.id)]
        if not scenarios:
            ap.error("--only %r matches no scenario; ids: %s"
                     % (args.only, ", ".join(s.id for s in SCENARIOS)))

    atexit.register(servers.Running.stop_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    server_cpus, client_cpus = cpu_sets()

    def log(msg):
        print("[%5.1fs] %s" % (time.monotonic() - started, msg), flush=True)

    log("mode %s: %d run(s) x %d s per figure; server CPUs %s, client CPUs %s; %s"
        % (mode.name, mode.runs, mode.duration, server_cpus, client_cpus,
           servers.cgunicorn_path()))
    try:
        results = run_all(scenarios, mode, log)
    finally:
        servers.Running.stop_all()
    counts = None
    if args.instr if args.instr is not None else not args.only:
        counts = instr.measure_all(INSTR_REQUESTS[mode.name], log=log)
    now = datetime.datetime.now()
    meta = report.machine_meta(mode, server_cpus, client_cpus, versions(),
                               time.monotonic() - started, now)
    if counts is not None:
        meta["instr"] = {"requests": INSTR_REQUESTS[mode.name], "classes": counts}
    os.makedirs(args.out, exist_ok=True)
    stem = now.strftime("%Y-%m-%d") + ("-quick" if mode is QUICK else "")
    md = os.path.join(args.out, stem + ".md")
    png = os.path.join(args.out, stem + ".png")
    report.write_json(os.path.join(args.out, stem + ".json"), scenarios, results, meta)
    chart_note = report.write_chart(png, scenarios, results, meta)
    report.write_markdown(md, scenarios, results, meta, os.path.basename(png), chart_note)
    log("wrote %s and %s" % (os.path.relpath(md), os.path.relpath(png)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
