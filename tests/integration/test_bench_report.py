"""bench/report.py's chart rows: a server that ran in a scenario where no
peer did (all skipped by the time budget) is shown with its rate rather than
breaking the report (it raised KeyError: 'ok' after a `--quick` run)."""
import os
import sys

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))

import report  # noqa: E402
from scenarios import SCENARIOS  # noqa: E402


def ok(rate):
    return {"status": "ok", "reason": None, "rate": rate, "p50_us": 1000, "p99_us": 2000}


def test_a_row_without_a_peer_is_shown_with_its_rate():
    sc = next(s for s in SCENARIOS if s.id == "https-hello-asgi-ka")
    cg = next(v for v in sc.variants if v.startswith("cg-"))
    results = {(sc.id, cg): ok(20000.0)}
    for vid in sc.variants:
        if vid != cg:
            results[(sc.id, vid)] = {"status": "skipped", "reason": "time budget used up"}
    bars = report.chart_bars([sc], results)
    row = next(b for b in bars if b and b[0].endswith(report.servers.VARIANTS[cg].label))
    assert row[1] is None and "20,000" in row[3] and "no peer ran" in row[3]
    assert any(b and b[3] == "skipped" for b in bars)


def test_a_row_with_a_peer_gets_its_ratio():
    sc = next(s for s in SCENARIOS if s.id == "https-hello-asgi-ka")
    cg = next(v for v in sc.variants if v.startswith("cg-"))
    peer = next(v for v in sc.variants
                if report.servers.VARIANTS[v].kind == "peer")
    results = {(sc.id, cg): ok(20000.0), (sc.id, peer): ok(10000.0)}
    bars = report.chart_bars([sc], results)
    row = next(b for b in bars if b and b[0].endswith(report.servers.VARIANTS[cg].label))
    assert row[1] == 2.0 and row[3] == "2.00×"


def test_instruction_counts_get_their_section():
    data = {"requests": 200, "classes": {
        "sync": {"keep-alive": 46624.2, "close": 51356.0},
        "asgi": {"error": "valgrind is not installed"}}}
    rows = report.instr_section(data)
    assert rows[0] == "## Instructions per request (callgrind)"
    assert "| sync | 46,624 | 51,356 |" in rows
    assert any(r.startswith("| asgi | not measured: valgrind is not installed") for r in rows)
