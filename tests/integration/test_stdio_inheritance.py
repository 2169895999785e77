"""enable_stdio_inheritance (-R) with daemon (-D): stdout and stderr that a
shell redirected to a file stay there after daemonizing (gunicorn's
daemonize); without -R they go to /dev/null."""
import os
import signal
import subprocess

import pytest

from conftest import CGUNICORN, ROOT, server_env
from master_support import alive, kill_tree, read_pid, wait_until

APPS = os.path.join(ROOT, "tests", "apps", "master")


@pytest.mark.parametrize("inherit", [True, False], ids=["R", "no-R"])
def test_daemon_keeps_redirected_stdio_with_R(tmp_path, inherit):
    conf = tmp_path / "conf.py"
    conf.write_text("import sys\n\ndef when_ready(server):\n"
                    "    print('READY-ON-STDOUT', flush=True)\n"
                    "    print('READY-ON-STDERR', file=sys.stderr, flush=True)\n")
    pidfile = str(tmp_path / "d.pid")
    out = tmp_path / "out.txt"
    args = [CGUNICORN, "-c", str(conf), "--chdir", APPS, "-b", "127.0.0.1:0", "-D", "-p",
            pidfile, "-w", "1", "--error-logfile", str(tmp_path / "err.log"), "app:app"]
    if inherit:
        args.insert(1, "-R")
    with open(out, "wb") as f:
        r = subprocess.run(args, cwd=APPS, env=server_env(), stdout=f, stderr=subprocess.STDOUT,
                           timeout=30)
    assert r.returncode == 0
    master = 0
    try:
        master = wait_until(lambda: read_pid(pidfile), what="daemon pidfile")
        wait_until(lambda: "Booting worker" in (tmp_path / "err.log").read_text(),
                   what="worker booted")
        os.kill(master, signal.SIGTERM)
        wait_until(lambda: not alive(master), what="daemon exit")
    finally:
        if master and alive(master):
            kill_tree(master)
    text = out.read_text()
    if inherit:
        assert "READY-ON-STDOUT" in text and "READY-ON-STDERR" in text
    else:
        assert "READY" not in text
