"""An exception in a hook is logged with its traceback and handled as
gunicorn handles it in that hook."""
import os
import subprocess

from conftest import CGUNICORN, ROOT, Server, server_env
from master_support import get

APPS = os.path.join(ROOT, "tests", "apps", "master")


def conf(tmp_path, body):
    p = tmp_path / "conf.py"
    p.write_text(body)
    return str(p)


def test_post_fork_raising_makes_the_worker_fail_to_boot(tmp_path):
    c = conf(tmp_path, "def post_fork(server, worker):\n    raise RuntimeError('boom in post_fork')\n")
    r = subprocess.run([CGUNICORN, "-c", c, "--chdir", APPS, "-b", "127.0.0.1:0", "app:app"],
                       cwd=APPS, env=server_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 3
    assert "Exception in worker process" in r.stderr
    assert "RuntimeError: boom in post_fork" in r.stderr
    assert "Reason: Worker failed to boot." in r.stderr


def test_request_hooks_raising(tmp_path):
    c = conf(tmp_path,
             "def pre_request(worker, req):\n"
             "    if req.path == '/bad':\n"
             "        raise ValueError('boom in pre_request')\n"
             "def post_request(worker, req, environ, resp):\n"
             "    raise KeyError('boom in post_request')\n")
    with Server(["-c", c, "--chdir", APPS, "-w", "1", "app:app"], cwd=APPS) as srv:
        assert get(srv.port, "/bad")[0] == 500
        srv.wait_for_log(r"(?s)Error handling request GET /bad.*ValueError: boom in pre_request")
        assert get(srv.port, "/ok")[0] == 200
        srv.wait_for_log(r"(?s)Exception in post_request hook.*KeyError: 'boom in post_request'")
        assert get(srv.port, "/ok")[0] == 200


def test_worker_exit_raising_is_a_warning(tmp_path):
    c = conf(tmp_path, "def worker_exit(server, worker):\n    raise RuntimeError('boom at exit')\n")
    with Server(["-c", c, "--chdir", APPS, "-w", "1", "app:app"], cwd=APPS) as srv:
        srv.proc.send_signal(15)
        assert srv.proc.wait(30) == 0
        srv.wait_for_log(r"(?s)\[WARNING\] Exception during worker exit:.*RuntimeError: boom at exit")


def test_on_starting_raising_stops_the_start(tmp_path):
    c = conf(tmp_path, "def on_starting(server):\n    raise RuntimeError('boom on start')\n")
    r = subprocess.run([CGUNICORN, "-c", c, "--chdir", APPS, "-b", "127.0.0.1:0", "app:app"],
                       cwd=APPS, env=server_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "RuntimeError: boom on start" in r.stderr


def test_default_pre_request_logs_method_and_path_at_debug(tmp_path):
    with Server(["--chdir", APPS, "-w", "1", "--log-level", "debug", "app:app"], cwd=APPS) as srv:
        assert get(srv.port, "/some/path?q=1")[0] == 200
        srv.wait_for_log(r"\[DEBUG\] GET /some/path\n")
