"""The one signal table (core/cg_sig_table.c), from which every process
installs its handlers, against the signal tables of the documentation:
docs/deployment.md lists every handled signal with the same action text per
role (master, HTTP worker, dirty arbiter, dirty worker), and docs/dirty.md
names exactly the signals the dirty arbiter acts on. Each check has a
self-test on a small tree, so a parser that reads nothing cannot pass."""
import os
import re

from conftest import ROOT

ROLES = ("MASTER", "WORKER", "DIRTY_ARBITER", "DIRTY_WORKER")
DOC_HEADER = ["signal", "master", "HTTP worker", "dirty arbiter", "dirty worker"]
NONE = "—"

ROW = re.compile(r'\{\s*SIG(\w+),\s*"(\w+)",\s*\{(.*?)\}\s*\},', re.S)
ENTRY = re.compile(r'\[CG_ROLE_(\w+)\]\s*=\s*(REC|PY|IGN)\(((?:\s*"(?:[^"\\]|\\.)*")+)\s*\)', re.S)
LITERAL = re.compile(r'"((?:[^"\\]|\\.)*)"')


def c_table(root=None):
    """{name: (how or None per role, text or None per role)} for every row
    that handles the signal in some role."""
    root = root or ROOT
    with open(os.path.join(root, "core", "cg_sig_table.c")) as f:
        src = f.read()
    body = src[src.index("cg_sig_table[] = {"):]
    rows = {}
    for m in ROW.finditer(body):
        macro, name, entries = m.groups()
        assert macro == name, "SIG%s is named %r" % (macro, name)
        texts = [None] * len(ROLES)
        for e in ENTRY.finditer(entries):
            texts[ROLES.index(e.group(1))] = "".join(LITERAL.findall(e.group(3)))
        if any(texts):
            rows[name] = texts
    return rows


def doc_table(path):
    """{signal: [text or None per role]} from the markdown table under
    "## Signals" whose header is DOC_HEADER."""
    with open(path) as f:
        lines = f.read().split("\n")
    start = lines.index("## Signals")
    rows, in_table = {}, False
    for line in lines[start + 1:]:
        if line.startswith("## "):
            break
        if not line.startswith("|"):
            if in_table:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not in_table:
            assert cells == DOC_HEADER, "%s: signal table header %r" % (path, cells)
            in_table = True
            continue
        if set(cells[0]) <= set("-"):
            continue
        rows[cells[0]] = [None if c == NONE else c for c in cells[1:]]
    return rows


def differences(root=None):
    root = root or ROOT
    code = c_table(root)
    docs = doc_table(os.path.join(root, "docs", "deployment.md"))
    bad = []
    for name in sorted(set(code) | set(docs)):
        if name not in docs:
            bad.append("SIG%s is handled (core/cg_sig_table.c) but not in docs/deployment.md"
                       % name)
        elif name not in code:
            bad.append("SIG%s is in docs/deployment.md but not handled" % name)
        else:
            for role, c, d in zip(DOC_HEADER[1:], code[name], docs[name]):
                if c != d:
                    bad.append("SIG%s, %s: the table says %r, docs/deployment.md %r"
                               % (name, role, c, d))
    return bad


def test_the_signal_table_matches_the_deployment_docs():
    bad = differences()
    assert bad == [], "\n".join(bad)


def test_dirty_docs_name_the_arbiters_signals():
    """docs/dirty.md's table names the signals an operator sends the
    arbiter: the ones it acts on, less CHLD (its own children) and PIPE."""
    code = c_table()
    acted = {n for n, texts in code.items()
             if texts[ROLES.index("DIRTY_ARBITER")] is not None} - {"CHLD", "PIPE"}
    with open(os.path.join(ROOT, "docs", "dirty.md")) as f:
        text = f.read()
    section = text[text.index("## Signals"):]
    section = section[:section.index("\n## ", 3)]
    named = set()
    for line in section.split("\n"):
        if line.startswith("|") and not line.startswith("|---"):
            first = line.strip("|").split("|")[0]
            named |= set(re.findall(r"\b[A-Z][A-Z0-9]+\b", first))
    assert named == acted, (sorted(named), sorted(acted))


def test_the_check_catches_a_difference(tmp_path):
    (tmp_path / "core").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "core" / "cg_sig_table.c").write_text(
        'const struct cg_sig_row cg_sig_table[] = {\n'
        '    { SIGTERM, "TERM", {\n'
        '        [CG_ROLE_MASTER] = REC("graceful stop"),\n'
        '        [CG_ROLE_WORKER] = REC("graceful "\n'
        '                               "stop"),\n'
        '    } },\n'
        '    { SIGHUP, "HUP", {\n'
        '        [CG_ROLE_MASTER] = REC("reload"),\n'
        '    } },\n'
        '    { SIGPIPE, "PIPE", {\n'
        '        [CG_ROLE_DIRTY_WORKER] = IGN("ignored"),\n'
        '    } },\n'
        '    { SIGSEGV, "SEGV", { { 0 } } },\n'
        '};\n')
    (tmp_path / "docs" / "deployment.md").write_text(
        "## Signals\n\ntext\n\n"
        "| signal | master | HTTP worker | dirty arbiter | dirty worker |\n"
        "|---|---|---|---|---|\n"
        "| TERM | graceful stop | graceful stop | — | — |\n"
        "| HUP | reload everything | — | — | — |\n"
        "| USR2 | upgrade | — | — | — |\n"
        "\n## Next\n")
    bad = differences(str(tmp_path))
    assert bad == [
        "SIGHUP, master: the table says 'reload', docs/deployment.md 'reload everything'",
        "SIGPIPE is handled (core/cg_sig_table.c) but not in docs/deployment.md",
        "SIGUSR2 is in docs/deployment.md but not handled",
    ], bad
