"""make check must pass on a bare clone: no test, test helper or build
script may read outside the repository, its build directory and its
virtualenv (upstream data is fetched from the package index at the pinned
version and converted by mk/corpus.py)."""
import os
import re

from conftest import ROOT

SCANNED = ("tests", "conformance", "mk", "fuzz", "bench", "pkg", "Makefile", "configure.ac", "pyproject.toml")
# A path that leaves the checkout: the sibling directory the project was
# once specified from, or an absolute path under /work.
OUTSIDE = re.compile(r"\.\./shared|(^|[\"'\s=(])/work/|os\.path\.dirname\(ROOT\)")


def files():
    for top in SCANNED:
        path = os.path.join(ROOT, top)
        if os.path.isfile(path):
            yield path
            continue
        for d, dirs, names in os.walk(path):
            dirs[:] = [x for x in dirs if x not in (".venv", "__pycache__", "corpus", "regress")]
            for n in names:
                if n.endswith((".py", ".c", ".h", ".sh", ".mk", ".lua", ".txt")):
                    yield os.path.join(d, n)


def test_nothing_reads_outside_the_checkout():
    me = os.path.abspath(__file__)
    bad = []
    for path in files():
        if os.path.abspath(path) == me:
            continue
        with open(path, errors="replace") as f:
            for i, line in enumerate(f, 1):
                if OUTSIDE.search(line):
                    bad.append("%s:%d: %s" % (os.path.relpath(path, ROOT), i, line.strip()))
    assert bad == [], "\n".join(bad)
