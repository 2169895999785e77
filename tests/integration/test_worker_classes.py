"""Worker classes come from one table (config/cg_conf_worker_class.c): the
binary documents it under worker_class in docs/settings.md, config
validation accepts exactly its names and aliases, and the suites' traits
(WORKER_TRAITS) are read from it rather than kept as a second copy."""
import os
import sys

from conftest import ROOT, run_cmd

sys.path.insert(0, os.path.join(ROOT, "conformance"))
from cgtest_support import APPS, WORKER_CLASS_TABLE, WORKER_TRAITS  # noqa: E402


def doc_table(text):
    section = text.split("### `worker_class`", 1)[1].split("\n### ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


def test_the_binary_documents_the_table_the_suites_read():
    doc = run_cmd(["--print-settings-doc"]).stdout
    rows = doc_table(doc)
    assert [r.split("`")[1] for r in rows] == list(WORKER_CLASS_TABLE)
    assert {"sync", "gthread", "asgi"} <= set(WORKER_CLASS_TABLE)


def test_suite_traits_follow_the_table():
    assert list(WORKER_TRAITS) == list(WORKER_CLASS_TABLE)
    for name, row in WORKER_CLASS_TABLE.items():
        t = WORKER_TRAITS[name]
        assert t["keeps_alive"] == row["keeps_alive"], name
        assert t["wsgi"] == (not row["asgi"]), name
        assert t["dump_app"] == ("asgienvapp:app" if row["asgi"] else "envapp:app"), name
    # what the suites relied on before the table existed
    assert not WORKER_TRAITS["sync"]["keeps_alive"]
    assert WORKER_TRAITS["gthread"]["keeps_alive"] and WORKER_TRAITS["asgi"]["keeps_alive"]
    assert not WORKER_TRAITS["asgi"]["wsgi"]
    assert WORKER_TRAITS["asgi"].get("half_close_is_disconnect")


def test_every_name_and_alias_is_accepted():
    for name, row in WORKER_CLASS_TABLE.items():
        app = WORKER_TRAITS[name]["dump_app"]
        for value in [name] + row["aliases"]:
            r = run_cmd(["--print-config", "-k", value, app], cwd=APPS)
            assert r.returncode == 0, (value, r.stderr)
            assert "worker_class" in r.stdout and value in r.stdout, value


def test_a_name_outside_the_table_names_the_supported_classes():
    r = run_cmd(["--check-config", "-k", "nosuchclass", "envapp:app"], cwd=APPS)
    assert r.returncode != 0
    for name in ("sync", "gthread", "asgi"):
        assert name in r.stderr, r.stderr
