"""The settings table covers every upstream gunicorn setting (names, flags,
defaults), and docs/settings.md is what the table generates."""
import os
import urllib.request

import gunicorn.config as gc

from conftest import ROOT, Server, run_cmd
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


def test_unbuilt_setting_is_named_in_a_warning_and_the_server_serves():
    """A setting the server does not honour yet is never silently ignored:
    start-up names it in one warning; a setting left at its default is not
    named."""
    with Server(["--spew", "app:app"], cwd=CONFIGS) as srv:
        srv.wait_for_log(r"setting spew is not implemented yet")
        with urllib.request.urlopen(srv.url + "/") as r:
            assert r.status == 200
        log = srv.log()
    assert log.count("spew is not implemented") == 1
    assert "setting logconfig is not" not in log


def test_tls_with_missing_files_fails_start_up_naming_the_file():
    """certfile/keyfile turn TLS on; files that do not exist stop start-up
    (exit 1, the setting and the file named) instead of listening in plain
    HTTP. --check-config says the same. (tests/integration/test_tls_config.py
    covers every bad TLS configuration.)"""
    for args in (["--certfile", "c.pem", "--keyfile", "k.pem"], ["--keyfile", "k.pem"]):
        for mode in ([], ["--check-config"]):
            r = run_cmd(mode + args + ["--bind", "127.0.0.1:0", "app:app"], cwd=CONFIGS,
                        timeout=30)
            assert r.returncode == 1, (args, mode, r.stderr)
            assert "Listening at" not in r.stderr
            if "--certfile" in args:
                assert "certfile c.pem: No such file or directory" in r.stderr, r.stderr
            else:
                assert "keyfile is set without certfile" in r.stderr, r.stderr


def test_no_control_socket_is_not_warned_about(tmp_path):
    """The control socket settings are implemented: no 'not implemented'
    warning for disabling it (from the CLI or a config file) or for a path,
    and a disabled socket is not opened."""
    from conftest import Server
    conf = tmp_path / "conf.py"
    conf.write_text("control_socket_disable = True\n")
    apps = os.path.join(ROOT, "tests", "apps", "http")
    for args in (["--no-control-socket"], ["-c", str(conf)]):
        srv = Server(["--chdir", apps] + args + ["envapp:app"])
        try:
            assert "control_socket_disable" not in srv.log()
            assert "not implemented" not in srv.log()
            assert "Control socket listening" not in srv.log()
        finally:
            srv.stop()
    srv = Server(["--chdir", apps, "--control-socket", str(tmp_path / "ctl.sock"), "envapp:app"])
    try:
        srv.wait_for_log(r"Control socket listening at " + str(tmp_path / "ctl.sock"))
        assert "not implemented" not in srv.log()
    finally:
        srv.stop()
