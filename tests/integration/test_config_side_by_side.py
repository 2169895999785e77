"""cgunicorn and upstream gunicorn resolve the same configuration: for each
command line / config file / environment below, `--print-config` of both gives
the same value for every upstream setting, and bad input fails with the same
exit code (and our message names the bad input)."""
import os
import shutil

import pytest

from conftest import GUNICORN, run_cmd

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def parse_print_config(out):
    values = {}
    for line in out.splitlines():
        name, sep, value = line.partition(" = ")
        if sep:
            values[name.strip()] = value
    return values


def hook_names():
    import gunicorn.config as gc
    return {s.name: s for s in gc.KNOWN_SETTINGS if s.section.endswith("Hooks")}


def same_value(name, ours, theirs, hooks):
    """The exception list: post_request with fewer than 4 arguments is
    wrapped in an adapter lambda by both, whose qualified names differ.
    Everything else, default hooks included (<ChildExit.child_exit()>), must
    be identical."""
    if name in hooks:
        if "<lambda>" in theirs:
            return "<lambda>" in ours
    return ours == theirs


CASES = [
    ("defaults", ["app:app"], None),
    ("default callable name", ["app"], None),
    ("ints and appended binds", ["-w", "4", "-b", "127.0.0.1:1", "-b", "unix:/tmp/x", "app:app"],
     None),
    ("config file of every type", ["-c", "basic.conf.py", "app:app"], None),
    ("config file hooks", ["-c", "hooks.conf.py", "app:app"], None),
    ("command line beats config file",
     ["-c", "basic.conf.py", "-w", "9", "--bind", "0.0.0.0:1", "app:app"], None),
    ("GUNICORN_CMD_ARGS beats config file", ["-c", "basic.conf.py", "app:app"],
     {"GUNICORN_CMD_ARGS": "-w 7 --timeout 12 --bind '127.0.0.1:5'"}),
    ("command line beats GUNICORN_CMD_ARGS", ["-w", "2", "app:app"],
     {"GUNICORN_CMD_ARGS": "-w 7 --keep-alive 9"}),
    ("config file named in GUNICORN_CMD_ARGS", ["app:app"],
     {"GUNICORN_CMD_ARGS": "-c basic.conf.py"}),
    ("python: config module", ["-c", "python:cgconfmod", "app:app"], None),
    ("env settings", ["-e", "X=1", "--env", "Y=2=3", "app:app"], None),
    ("flags and negations", ["--no-sendfile", "--reuse-port", "--preload", "--reload",
                             "--no-control-socket", "--capture-output", "app:app"], None),
    ("optional argument", ["--proxy-protocol", "v1", "app:app"], None),
    ("address lists", ["--forwarded-allow-ips", "*", "--proxy-allow-from", "10.0.0.1,10.0.0.2",
                       "app:app"], None),
    ("octal ints", ["--umask", "0o027", "--control-socket-mode", "0700", "app:app"], None),
    ("logging", ["--log-level", "debug", "--error-logfile", "/tmp/x.log", "--access-logfile", "-",
                 "--access-logformat", "%(h)s %(r)s", "app:app"], None),
    ("gthread", ["-k", "gthread", "--threads", "3", "--worker-connections", "50", "app:app"],
     None),
    ("uvicorn worker name", ["-k", "uvicorn.workers.UvicornWorker", "app:app"], None),
    ("dirty settings", ["--dirty-app", "a:A", "--dirty-app", "b:B:2", "--dirty-workers", "3",
                        "--dirty-timeout", "10", "--dirty-graceful-timeout", "4", "app:app"], None),
    ("wsgi_app from config file", ["-c", "wsgi_app.conf.py"], None),
    ("enumerations", ["--http-protocols", "h1", "--header-map", "refuse", "--asgi-loop", "asyncio",
                      "--asgi-lifespan", "off", "--root-path", "/api", "--http-parser", "fast",
                      "app:app"], None),
    ("statsd", ["--statsd-host", "localhost:8125", "--statsd-prefix", "x", "--dogstatsd-tags",
                "a:b", "app:app"], None),
    ("limits", ["--limit-request-line", "0", "--limit-request-field_size", "100",
                "--limit-request-fields", "5", "app:app"], None),
    ("user, group and chdir", ["--user", "root", "--group", "0", "--chdir", "..",
                               "configs.app:app"], None),
    ("factory with literal args", ["--workers=3", "app:create_app('y', debug=True)"], None),
    ("long option prefix and attached value", ["--worker-conn", "5", "-t7", "app:app"], None),
    ("ssl and http2 settings", ["--certfile", "c.pem", "--keyfile", "k.pem", "--ciphers", "HIGH",
                                "--http2-max-frame-size", "32768", "--cert-reqs", "2", "app:app"],
     None),
]


@pytest.mark.parametrize("name,args,env", CASES, ids=[c[0] for c in CASES])
def test_print_config_matches_gunicorn(name, args, env):
    ours = run_cmd(["--print-config"] + args, cwd=CONFIGS, env=env)
    theirs = run_cmd(["--print-config"] + args, cwd=CONFIGS, env=env, binary=GUNICORN)
    assert theirs.returncode == 0, theirs.stderr
    assert ours.returncode == 0, ours.stderr
    a, b = parse_print_config(ours.stdout), parse_print_config(theirs.stdout)
    hooks = hook_names()
    assert set(b) <= set(a), "missing settings: %s" % sorted(set(b) - set(a))
    diffs = {k: (a[k], b[k]) for k in b if not same_value(k, a[k], b[k], hooks)}
    assert not diffs, "ours vs gunicorn: %r" % diffs


def test_default_config_file_in_cwd(tmp_path):
    shutil.copy(os.path.join(CONFIGS, "app.py"), tmp_path / "app.py")
    (tmp_path / "gunicorn.conf.py").write_text("workers = 11\nbind = '127.0.0.1:9999'\n")
    ours = run_cmd(["--print-config", "app:app"], cwd=str(tmp_path))
    theirs = run_cmd(["--print-config", "app:app"], cwd=str(tmp_path), binary=GUNICORN)
    a, b = parse_print_config(ours.stdout), parse_print_config(theirs.stdout)
    assert a["workers"] == b["workers"] == "11"
    assert a["bind"] == b["bind"] == "['127.0.0.1:9999']"


ERRORS = [
    ("non-integer on the command line", ["-w", "abc", "app:app"], None, "abc"),
    ("negative integer", ["--timeout", "-5", "app:app"], None, "-5"),
    ("wrong type in config file", ["-c", "bad_type.conf.py", "app:app"], None, "four"),
    ("syntax error in config file", ["-c", "bad_syntax.conf.py", "app:app"], None,
     "bad_syntax.conf.py:2"),
    ("exception in config file", ["-c", "bad_raise.conf.py", "app:app"], None, "boom from config"),
    ("missing config file", ["-c", "missing.conf.py", "app:app"], None, "missing.conf.py"),
    ("hook with wrong arity", ["-c", "bad_hook.conf.py", "app:app"], None, "pre_fork"),
    ("unknown module", ["--check-config", "nomod:app"], None, "nomod"),
    ("missing attribute", ["--check-config", "app:nope"], None, "nope"),
    ("factory called with wrong args", ["--check-config", "app:create_app(1, 2, 3)"], None,
     "create_app"),
    ("unknown option", ["--bogus", "app:app"], None, "--bogus"),
    ("bad network", ["--forwarded-allow-ips", "1.2.3.4/8", "app:app"], None, "1.2.3.4/8"),
    ("no application", ["--print-config"], None, "No application module"),
    ("bad GUNICORN_CMD_ARGS", ["app:app"], {"GUNICORN_CMD_ARGS": "--workers x"}, "'x'"),
    ("bad bool in config value", ["--check-config", "app:app"],
     {"GUNICORN_CMD_ARGS": "--http-protocols h3"}, "h3"),
    ("missing option argument", ["app:app", "--timeout"], None, "--timeout"),
]


@pytest.mark.parametrize("name,args,env,needle", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_match_gunicorn(name, args, env, needle):
    ours = run_cmd(args, cwd=CONFIGS, env=env)
    theirs = run_cmd(args, cwd=CONFIGS, env=env, binary=GUNICORN)
    assert theirs.returncode != 0
    assert ours.returncode == theirs.returncode, (ours.stderr, theirs.stderr)
    assert needle in ours.stderr, ours.stderr


def test_unsupported_worker_class_names_the_supported_ones():
    r = run_cmd(["-k", "eventlet", "--check-config", "app:app"], cwd=CONFIGS)
    assert r.returncode == 1
    assert "'eventlet'" in r.stderr
    for cls in ("sync", "gthread", "asgi", "gevent", "uvicorn.workers.UvicornWorker"):
        assert cls in r.stderr


def test_version_and_help():
    r = run_cmd(["--version"])
    assert r.returncode == 0 and "cgunicorn (version" in r.stdout and "27.0.1" in r.stdout
    r = run_cmd(["--help"])
    assert r.returncode == 0 and "--workers INT" in r.stdout and "--dirty-app" in r.stdout
