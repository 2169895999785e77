"""The settings table covers every upstream gunicorn setting (names, flags,
defaults), and docs/settings.md is what the table generates."""
import os

import gunicorn.config as gc

from conftest import ROOT, run_cmd
from test_config_side_by_side import CONFIGS, parse_print_config


def test_every_upstream_setting_is_in_the_table():
    r = run_cmd(["--print-config", "app:app"], cwd=CONFIGS)
    assert r.returncode == 0, r.stderr
    ours = set(parse_print_config(r.stdout))
    upstream = {s.name for s in gc.KNOWN_SETTINGS}
    assert not upstream - ours, "settings we lack: %s" % sorted(upstream - ours)
    # the only extra rows are documented cgunicorn extensions
    doc = run_cmd(["--print-settings-doc"]).stdout
    for extra in ours - upstream:
        section = doc.split("### `%s`" % extra, 1)[1].split("###", 1)[0]
        assert "cgunicorn extension" in section, extra


def test_every_upstream_flag_is_accepted():
    help_text = run_cmd(["--help"]).stdout
    for s in gc.KNOWN_SETTINGS:
        for flag in s.cli or ():
            assert flag + " " in help_text or flag + "\n" in help_text or flag + "," in help_text, \
                flag


def test_docs_are_generated_from_the_table():
    r = run_cmd(["--print-settings-doc"])
    assert r.returncode == 0
    with open(os.path.join(ROOT, "docs", "settings.md")) as f:
        committed = f.read()
    assert r.stdout == committed, "docs/settings.md is stale: run `make docs`"
