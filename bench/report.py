"""Writes the benchmark's results: a Markdown table, a JSON dump and a PNG
chart of each server's rate relative to the best peer."""
import json
import os
import platform
import subprocess

import servers

ERRORS_NOTE = ("wrk counted socket errors (connect, read, write or timeout) for more than 1% of "
               "requests. req/s counts complete responses only, and p50/p99 cover only the "
               "requests that completed.")
STATUS_TEXT = {"na": "not available yet", "failed": "failed", "skipped": "skipped"}


def _fmt_rate(x):
    return "{:,.0f}".format(x) if x >= 100 else "{:,.1f}".format(x)


def _fmt_us(us):
    if us is None:
        return "—"
    if us >= 1e6:
        return "%.2f s" % (us / 1e6)
    if us >= 1000:
        return "%.2f ms" % (us / 1000)
    return "%.0f µs" % us


def short(res, unit):
    if res["status"] != "ok":
        return "%s: %s" % (STATUS_TEXT[res["status"]], (res["reason"] or "")[:160])
    return "%s %s (p50 %s, p99 %s)" % (_fmt_rate(res["rate"]), unit, _fmt_us(res["p50_us"]),
                                       _fmt_us(res["p99_us"]))


def _git(*args):
    try:
        return subprocess.run(["git", "-C", servers.REPO] + list(args), capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_meta(mode, server_cpus, client_cpus, versions, elapsed, now):
    try:
        wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True,
                             timeout=5).stdout.split(" Copyright")[0].strip()
    except (OSError, subprocess.SubprocessError):
        wrk = "wrk"
    return {
        "date": now.strftime("%Y-%m-%d %H:%M"),
        "mode": mode.name,
        "runs": mode.runs,
        "duration_s": mode.duration,
        "warmup_s": mode.warmup,
        "server_cpus": server_cpus,
        "client_cpus": client_cpus,
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty_tree": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "versions": versions,
        "wrk": wrk,
        "workers": servers.WORKERS,
        "threads": servers.THREADS,
        "elapsed_s": round(elapsed, 1),
        "uwsgi": servers.uwsgi_status() or "ok",
    }


def _best(sc, results, kinds, prefix=""):
    best = None
    for vid in sc.variants:
        v = servers.VARIANTS[vid]
        if not vid.startswith(prefix):
            continue
        r = results.get((sc.id, vid))
        if v.kind in kinds and r and r["status"] == "ok":
            if best is None or r["rate"] > best[1]["rate"]:
                best = (v, r)
    return best


def ratios(sc, results):
    """{variant id: rate / best peer rate} for the variants that ran."""
    peer = _best(sc, results, ("peer",))
    if not peer:
        return {}
    out = {}
    for vid in sc.variants:
        r = results.get((sc.id, vid))
        if r and r["status"] == "ok":
            out[vid] = r["rate"] / peer[1]["rate"]
    return out


def read_json(path):
    """(scenario ids, results, meta) from a file write_json() wrote."""
    with open(path) as f:
        data = json.load(f)
    results = {}
    for sc in data["scenarios"]:
        for vid, res in sc["servers"].items():
            if res is not None:
                results[(sc["id"], vid)] = res
    return [sc["id"] for sc in data["scenarios"]], results, data["meta"]


def write_json(path, scenarios, results, meta):
    data = {"meta": meta, "scenarios": []}
    for sc in scenarios:
        data["scenarios"].append({
            "id": sc.id, "title": sc.title, "unit": sc.unit,
            "servers": {vid: results.get((sc.id, vid)) for vid in sc.variants},
        })
    with open(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")


class _Notes:
    def __init__(self):
        self.items = []

    def ref(self, text):
        if text not in self.items:
            self.items.append(text)
        return "(note %d)" % (self.items.index(text) + 1)


def _status_cell(res, notes):
    if res is None:
        return "—"
    label = STATUS_TEXT[res["status"]]
    return "%s %s" % (label, notes.ref(res["reason"] or "no reason recorded"))


def _summary(scenarios, results, notes):
    rows = ["| scenario | cgunicorn | best peer | cgunicorn / best peer | cgunicorn / gunicorn 27 "
            "| no-Python ceiling |",
            "|---|---|---|---|---|---|"]
    for sc in scenarios:
        cg = _best(sc, results, ("cgunicorn",))
        peer = _best(sc, results, ("peer",))
        ceil = _best(sc, results, ("ceiling",))
        if cg:
            cg_cell = "%s %s (%s)" % (_fmt_rate(cg[1]["rate"]), sc.unit, cg[0].label)
        else:
            first = next((results.get((sc.id, v)) for v in sc.variants
                          if servers.VARIANTS[v].kind == "cgunicorn"), None)
            cg_cell = _status_cell(first, notes)
        peer_cell = ("%s %s (%s)" % (_fmt_rate(peer[1]["rate"]), sc.unit, peer[0].label)
                     if peer else "no peer ran")
        ratio = "**%.2f×**" % (cg[1]["rate"] / peer[1]["rate"]) if cg and peer else "—"
        upstream = _best(sc, results, ("peer",), prefix="gu-")
        vs_up = ("%.2f× (%s)" % (cg[1]["rate"] / upstream[1]["rate"], upstream[0].label)
                 if cg and upstream else "—")
        ceil_cell = ("%s %s (%s)" % (_fmt_rate(ceil[1]["rate"]), sc.unit, ceil[0].label.split(" ")[0])
                     if ceil else "—")
        rows.append("| %s | %s | %s | %s | %s | %s |" % (sc.title, cg_cell, peer_cell, ratio,
                                                         vs_up, ceil_cell))
    return rows


def _detail(scenarios, results, notes, dirty):
    unit = "calls/s" if dirty else "req/s"
    head = ("| scenario | server | %s (median) | min–max | p50 | p99 | %s"
            "RSS master + workers (MB) | vs best peer |" % (unit, "" if dirty else "socket errors | "))
    rows = [head, "|" + "---|" * (8 if dirty else 9)]
    for sc in scenarios:
        if bool(sc.dirty) != dirty:
            continue
        rel = ratios(sc, results)
        for vid in sc.variants:
            v = servers.VARIANTS[vid]
            r = results.get((sc.id, vid))
            name = "**%s**" % v.label if v.kind == "cgunicorn" else v.label
            if r is None or r["status"] != "ok":
                cells = [_status_cell(r, notes)] + ["—"] * (5 if dirty else 6)
            else:
                cells = [_fmt_rate(r["rate"]),
                         "%s–%s" % (_fmt_rate(r["rate_min"]), _fmt_rate(r["rate_max"])),
                         _fmt_us(r["p50_us"]), _fmt_us(r["p99_us"])]
                if not dirty:
                    err = "%d" % r["errors"]
                    if r["errors"] > 0.01 * max(r["requests"], 1):
                        err += " " + notes.ref(ERRORS_NOTE)
                    cells.append(err)
                rss = "%.1f + %.1f (%d)" % (r["rss_master_kb"] / 1024.0,
                                            r["rss_workers_kb"] / 1024.0, r["nprocs"])
                if dirty and r.get("arbiter_hwm_kb"):
                    rss += "; dirty arbiter peak %.1f" % (r["arbiter_hwm_kb"] / 1024.0)
                cells.append(rss)
                cells.append("%.2f×" % rel[vid] if vid in rel else "—")
            rows.append("| %s | %s | %s |" % (sc.title, name, " | ".join(cells)))
    return rows


def write_markdown(path, scenarios, results, meta, png_name, chart_note):
    notes = _Notes()
    v = meta["versions"]
    peers = ", ".join("%s %s" % (k, v[k]) for k in sorted(v))
    lines = [
        "# cgunicorn benchmark — %s (%s)" % (meta["date"], meta["mode"]),
        "",
        "Written by `make bench%s` (bench/run.py); every figure below was measured in this "
        "run, on 127.0.0.1. A server that could not start or serve a scenario shows why "
        "instead of a figure." % ("-quick" if meta["mode"] == "quick" else ""),
        "",
        "* Machine: %d CPUs (%s), Linux %s, Python %s; commit %s%s." % (
            meta["cpus"], meta["cpu_model"], meta["kernel"], meta["python"], meta["commit"],
            " with uncommitted changes" if meta["dirty_tree"] else ""),
        "* Server pinned to CPU %s, load generator (%s, 1 thread) to CPU %s (`taskset`)." % (
            meta["server_cpus"], meta["wrk"], meta["client_cpus"]),
        "* Every server: %d workers (gthread: %d threads each); dirty scenarios: 1 dirty "
        "worker." % (meta["workers"], meta["threads"]),
        "* Each figure: median of %d run(s) of %d s%s; p50/p99 from the median run "
        "(wrk `--latency`; dirty: timed inside the view around each call; HTTP/2 rows: "
        "h2load, 1 thread, which reports no percentiles)." % (
            meta["runs"], meta["duration_s"],
            ", after a %d s warm-up" % meta["warmup_s"] if meta["warmup_s"] else ""),
        "* RSS: sum of VmRSS over the server's process group right after the scenario's "
        "load: master + the rest (process count in parentheses). A server is started once "
        "and serves its scenarios in table order.",
        "* Peers: %s. uWSGI: %s." % (peers or "none installed", meta["uwsgi"]),
        "* Whole run: %.0f s." % meta["elapsed_s"],
        "",
        "![rate relative to the best peer](%s)" % png_name if not chart_note else
        "Chart: %s" % chart_note,
        "",
        "## Summary",
        "",
    ]
    lines += _summary(scenarios, results, notes)
    if any(not sc.dirty for sc in scenarios):
        lines += ["", "## HTTP scenarios", ""] + _detail(scenarios, results, notes, False)
    if any(sc.dirty for sc in scenarios):
        lines += ["", "## Dirty round trips (timed inside a WSGI view)", ""]
        lines += _detail(scenarios, results, notes, True)
    if meta.get("instr"):
        lines += [""] + instr_section(meta["instr"])
    if notes.items:
        lines += ["", "## Notes", ""]
        lines += ["%d. %s" % (i + 1, t.replace("|", "\\|")) for i, t in enumerate(notes.items)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def instr_section(data):
    """The "Instructions per request" section from meta["instr"]
    (bench/instr.py's figures): a table per worker class and load."""
    rows = ["## Instructions per request (callgrind)", "",
            "The hello app, one worker, %d sequential requests counted between two "
            "`callgrind_control --dump`s of the worker (bench/instr.py). Instructions in "
            "user space only; they hardly move with the machine's load, so a regression "
            "shows here first. Informative: no test passes or fails on them." % data["requests"],
            "", "| worker class | keep-alive | new connection per request |", "|---|---|---|"]
    for wclass, r in data["classes"].items():
        if "error" in r:
            rows.append("| %s | not measured: %s | — |" % (wclass, r["error"].replace("|", "\\|")))
            continue
        rows.append("| %s | %s | %s |" % (wclass, "{:,.0f}".format(r["keep-alive"]),
                                          "{:,.0f}".format(r["close"])))
    return rows


COLORS = {"cgunicorn": "#d62728", "peer": "#7f9fbf", "ceiling": "#2ca02c"}


def chart_bars(scenarios, results):
    """The chart's rows: (y label, ratio or None, kind, text), None between
    scenarios. A server that ran where no peer did (skipped by the time
    budget, say) has no ratio: its rate is shown as text."""
    bars = []
    for sc in scenarios:
        rel = ratios(sc, results)
        for vid in sc.variants:
            v = servers.VARIANTS[vid]
            r = results.get((sc.id, vid))
            if vid in rel:
                bars.append(("%s — %s" % (sc.title, v.label), rel[vid], v.kind,
                             "%.2f×" % rel[vid]))
            elif r and r["status"] == "ok":
                bars.append(("%s — %s" % (sc.title, v.label), None, v.kind,
                             "%s (no peer ran)" % short(r, sc.unit)))
            else:
                st = STATUS_TEXT[r["status"]] if r else "not run"
                bars.append(("%s — %s" % (sc.title, v.label), None, v.kind, st))
        bars.append(None)
    if bars and bars[-1] is None:
        bars.pop()
    return bars


def write_chart(path, scenarios, results, meta):
    """Writes the PNG; returns None, or a sentence saying why there is none."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker  # noqa: F401  (used as matplotlib.ticker)
    except ImportError as e:
        return "not drawn (matplotlib missing: %s)" % e
    bars = chart_bars(scenarios, results)
    height = max(3.0, 0.22 * len(bars) + 1.2)
    fig, ax = plt.subplots(figsize=(11, height))
    ys, labels = [], []
    vals = [b[1] for b in bars if b and b[1] is not None and b[1] > 0]
    top = max(vals + [1.0])
    low = min(vals + [1.0]) / 1.5     # log scale: ratios from ~0.05x to ~20x stay readable
    for i, b in enumerate(bars):
        if b is None:
            continue
        y = len(bars) - i
        ys.append(y)
        labels.append(b[0])
        if b[1] is not None:
            ax.barh(y, b[1] - low, left=low, color=COLORS[b[2]], height=0.8)
            ax.text(b[1] * 1.03, y, b[3], va="center", fontsize=7)
        else:
            ax.text(low * 1.05, y, b[3], va="center", fontsize=7, color=COLORS[b[2]],
                    style="italic")
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=7)
    ax.axvline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xscale("log")
    ax.set_xlim(low, top * 1.4)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: "%g×" % x))
    ax.set_xlabel("rate relative to the best peer in the same scenario (1× = best peer; "
                  "log scale)")
    ax.set_title("cgunicorn benchmark %s (%s): red cgunicorn, blue peers, green no-Python "
                 "ceiling" % (meta["date"], meta["mode"]), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return None
