"""logger_class: three patterns users put in gunicorn.conf.py files — a
JSON access logger overriding access(), a custom atom added by overriding
atoms(), an extra handler added by overriding setup() — each run under
cgunicorn and under upstream gunicorn with the same files, and their
output compared (pids, times and durations masked)."""
import json
import os
import re
import signal
import textwrap

import pytest

from conftest import GUNICORN, ROOT, Server
from master_support import get, wait_until

APPS = os.path.join(ROOT, "tests", "apps", "master")

LOGGERS = textwrap.dedent('''
    import json
    import logging
    import os

    from gunicorn.glogging import Logger


    class JsonAccess(Logger):
        """access() replaced: one JSON object per request."""

        def access(self, resp, req, environ, request_time):
            headers = dict((k.lower(), v) for k, v in req.headers)
            self.access_log.info(json.dumps({
                "method": environ["REQUEST_METHOD"],
                "path": environ["PATH_INFO"],
                "query": environ["QUERY_STRING"],
                "status": int(str(resp.status).split()[0]),
                "bytes": getattr(resp, "sent", None),
                "agent": headers.get("user-agent"),
                "ms": request_time.total_seconds() * 1000,
            }, sort_keys=True))


    class ExtraAtom(Logger):
        """atoms() extended: a custom atom for access_log_format."""

        def atoms(self, resp, req, environ, request_time):
            atoms = super().atoms(resp, req, environ, request_time)
            atoms["route"] = "route:" + environ.get("PATH_INFO", "")
            atoms["hdrs"] = str(len(list(resp.headers)))
            return atoms


    class ExtraHandler(Logger):
        """setup() extended: every error and access line also in a file."""

        def setup(self, cfg):
            super().setup(cfg)
            h = logging.FileHandler(os.environ["EXTRA_LOG"])
            h.setFormatter(logging.Formatter("EXTRA %(name)s %(levelname)s %(message)s"))
            self.error_log.addHandler(h)
            self.access_log.addHandler(h)

        def now(self):
            return "[NOW]"
''')


@pytest.fixture
def loggers(tmp_path):
    (tmp_path / "mylogs.py").write_text(LOGGERS)
    return tmp_path


def run(loggers, binary, cls, extra=(), env=None, requests=("/a?x=1", "/b")):
    tag = "cg" if binary is None else "up"
    access = loggers / ("access-%s-%s.log" % (tag, cls))
    args = ["--chdir", APPS, "--pythonpath", str(loggers), "-w", "1",
            "--logger-class", "mylogs." + cls, "--access-logfile", str(access)]
    srv = Server(args + list(extra) + ["app:app"], cwd=APPS, binary=binary, env=env)
    try:
        for path in requests:
            assert get(srv.port, path)[0] == 200
        wait_until(lambda: access.exists() and
                   len(access.read_text().splitlines()) >= len(requests), what="access lines")
        srv.signal(signal.SIGTERM)
        srv.proc.wait(30)
        return access.read_text().splitlines(), srv.log()
    finally:
        srv.stop()


def test_json_access_logger(loggers):
    out = {}
    for binary in (None, GUNICORN):
        lines, _ = run(loggers, binary, "JsonAccess")
        recs = [json.loads(l) for l in lines]
        for r in recs:
            assert r.pop("ms") >= 0
            assert r.pop("bytes") > 0  # the body names the worker's pid: lengths may differ
        out[binary] = recs
    assert out[None] == out[GUNICORN]
    assert out[None][0]["path"] == "/a" and out[None][0]["query"] == "x=1"
    assert out[None][0]["status"] == 200


def test_atoms_override(loggers):
    fmt = ["--access-logformat", '%(route)s %(s)s %(m)s "%(r)s" %(hdrs)s %(missing)s']
    got, _ = run(loggers, None, "ExtraAtom", fmt)
    want, _ = run(loggers, GUNICORN, "ExtraAtom", fmt)
    assert got == want == ['route:/a 200 GET "GET /a?x=1 HTTP/1.1" 2 -',
                           'route:/b 200 GET "GET /b HTTP/1.1" 2 -']


def mask(line):
    line = re.sub(r"\d+", "N", line)
    return line


def test_setup_override_adds_a_handler(loggers):
    seen = {}
    for binary in (None, GUNICORN):
        extra = loggers / ("extra-%s.log" % ("cg" if binary is None else "up"))
        lines, log = run(loggers, binary, "ExtraHandler", env={"EXTRA_LOG": str(extra)})
        text = extra.read_text().splitlines()
        seen[binary] = text
        # The extra handler saw the error log's lines and the access lines
        # (now() overridden: the access format's %(t)s).
        assert any(re.match(r"EXTRA gunicorn\.error INFO Booting worker with pid: \d+$", l)
                   for l in text), text
        assert any(l.startswith('EXTRA gunicorn.access INFO 127.0.0.1 - - [NOW] "GET /a?x=1 '
                                'HTTP/1.1" 200 ') for l in text), text
        assert any('[NOW] "GET /b HTTP/1.1" 200' in l for l in lines)
        assert "Booting worker with pid" in log
    wanted = ("Booting worker", "gunicorn.access", "Worker exiting", "Shutting down")
    pick = lambda lines: sorted({mask(l) for l in lines if any(w in l for w in wanted)})
    assert pick(seen[None]) == pick(seen[GUNICORN])


def test_bad_logger_class_fails_start(loggers):
    from conftest import run_cmd
    r = run_cmd(["--chdir", APPS, "--pythonpath", str(loggers), "-b", "127.0.0.1:0",
                 "--logger-class", "mylogs.Nope", "app:app"], timeout=30)
    assert r.returncode != 0 and "mylogs.Nope" in r.stderr
