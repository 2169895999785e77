"""Error-log options against the real binary: capture_output sends what the
app prints to the error log file (and keeps doing so after USR1), as
gunicorn does; without it, prints go to the server's own stdout."""
import os
import signal
import time

import requests

from conftest import Server

APP = (
    "import sys\n"
    "def app(environ, start_response):\n"
    "    print('printed by the app', environ['PATH_INFO'], flush=True)\n"
    "    sys.stderr.write('stderr of the app\\n'); sys.stderr.flush()\n"
    "    start_response('200 OK', [('Content-Length', '2')])\n"
    "    return [b'ok']\n"
)


def _start(tmp_path, extra):
    (tmp_path / "printapp.py").write_text(APP)
    return Server(["--chdir", str(tmp_path), "printapp:app"] + extra, cwd=str(tmp_path))


def test_capture_output_sends_prints_to_the_error_log(tmp_path):
    with _start(tmp_path, ["--capture-output"]) as srv:
        assert requests.get(srv.url + "/one", timeout=10).text == "ok"
        srv.wait_for_log(r"printed by the app /one")
        with open(srv.log_path) as f:
            text = f.read()
        assert "printed by the app /one" in text
        assert "stderr of the app" in text
        # after a log rotation (USR1) prints land in the reopened file
        os.rename(srv.log_path, srv.log_path + ".1")
        srv.signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not os.path.exists(srv.log_path) and time.monotonic() < deadline:
            time.sleep(0.05)  # the master reopens the log on USR1
        assert os.path.exists(srv.log_path), "USR1 did not reopen the error log"
        # the worker reopens on the USR1 the master forwards: a print soon
        # lands in the new file
        for i in range(100):
            assert requests.get(srv.url + "/two-%d" % i, timeout=10).text == "ok"
            with open(srv.log_path) as f:
                if "printed by the app /two-" in f.read():
                    break
            time.sleep(0.1)
        else:
            raise AssertionError("prints never reached the reopened error log")


def test_without_capture_output_prints_stay_on_stdout(tmp_path):
    with _start(tmp_path, []) as srv:
        assert requests.get(srv.url + "/one", timeout=10).text == "ok"
        srv.wait_for_log(r"printed by the app /one")
        with open(srv.log_path) as f:
            assert "printed by the app" not in f.read()
        with open(srv.log_path + ".out") as f:
            assert "printed by the app /one" in f.read()
