"""What real projects' gunicorn.conf.py files do, in their shapes (written
here, not copied): worker classes named by import path (Uvicorn worker
subclasses carrying CONFIG_KWARGS, subclasses of gunicorn's workers, and
ones cgunicorn must refuse), setproctitle in hooks and apps, process titles,
gunicorn.SERVER_SOFTWARE, and the ASGI path of absolute-form and fragment
targets. Where upstream gunicorn runs the same thing, the two are compared."""
import http.client
import json
import os
import subprocess
import time

import pytest

from conftest import GUNICORN, ROOT, Server, run_cmd

APPS = os.path.join(ROOT, "tests", "apps", "workers")
HTTP_APPS = os.path.join(ROOT, "tests", "apps", "http")


def get(srv, target, host="localhost"):
    """GET target exactly as given (absolute-form, fragments) -> (status, body, headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read(), dict(resp.getheaders())
    finally:
        conn.close()


def get_json(srv, target):
    status, body, _ = get(srv, target)
    assert status == 200, body
    return json.loads(body)


@pytest.fixture
def both(request):
    """Starts the same command line under cgunicorn and upstream gunicorn."""
    started = []

    def start(args, cwd=APPS):
        pair = []
        for binary in (None, GUNICORN):
            srv = Server(args, cwd=cwd, binary=binary)
            started.append(srv)
            pair.append(srv)
        return pair

    yield start
    for srv in started:
        srv.stop()


def without_pid(d):
    return {k: v for k, v in d.items() if k != "pid"}


# -- worker classes named by import path --------------------------------------

def test_uvicorn_subclass_root_path_and_lifespan_off_as_upstream(both):
    ours, theirs = both(["-c", "conf_mounted.py", "lifeapp:app"])
    for target in ("/x", "/mounted/x", "/"):
        got = get_json(ours, target)
        assert got["root_path"] == "/mounted" and got["lifespan"] == [], got
        assert without_pid(got) == without_pid(get_json(theirs, target)), target
    ours.wait_for_log(r"worker_class cgworkers\.MountedWorker is served by cgunicorn's "
                      r"native asgi worker")


def test_uvicorn_subclass_settings_and_notes(server_factory):
    srv = server_factory(["--chdir", APPS, "-k", "cgworkers.TunedWorker", "lifeapp:app"])
    got = get_json(srv, "/t")
    assert got["root_path"] == "" and got["path"] == "/t"
    assert got["lifespan"] == ["lifespan.startup"]  # CONFIG_KWARGS lifespan "on"
    srv.wait_for_log(r"CONFIG_KWARGS\['http'\] = 'httptools' does not apply")
    srv.wait_for_log(r"CONFIG_KWARGS\['ws'\] = 'wsproto' does not apply")
    log = srv.log()
    assert "CONFIG_KWARGS['loop']" not in log  # mapped to asgi_loop, nothing to say
    assert log.count("does not apply") == 2  # once, in the master, not per worker


def test_uvicorn_subclass_kwargs_become_settings():
    out = run_cmd(["--chdir", APPS, "-k", "cgworkers.TunedWorker", "--keep-alive", "2",
                   "--print-config", "lifeapp:app"])
    assert out.returncode == 0, out.stderr
    lines = dict((k.strip(), v.strip()) for k, _, v in
                 (line.partition(" = ") for line in out.stdout.splitlines()) if v)
    assert lines["keepalive"] == "7"  # CONFIG_KWARGS wins, as in the Uvicorn worker
    assert lines["max_requests"] == "1000"
    assert lines["asgi_loop"] == "asyncio"
    assert lines["asgi_lifespan"] == "on"


def test_subclass_of_a_subclass_inherits_its_settings(server_factory):
    srv = server_factory(["--chdir", APPS, "-k", "cgworkers.MountedChild", "lifeapp:app"])
    got = get_json(srv, "/y")
    assert (got["root_path"], got["path"], got["lifespan"]) == ("/mounted", "/mounted/y", [])


@pytest.mark.parametrize("cls,threaded", [("cgworkers.PlainThreads", True),
                                          ("cgworkers.PlainSync", False),
                                          ("uvicorn.workers.UvicornH11Worker", None)])
def test_gunicorn_and_uvicorn_classes_served_natively(server_factory, cls, threaded):
    app = "lifeapp:app" if threaded is None else "wsgiapp:app"
    srv = server_factory(["--chdir", APPS, "-k", cls, app])
    got = get_json(srv, "/")
    if threaded is not None:
        assert got["multithread"] is threaded
    srv.wait_for_log(r"Using worker: %s" % ("asgi" if threaded is None else
                                             "gthread" if threaded else "sync"))


REFUSED = [
    ("cgworkers.InitWorker", r"overrides init_process\(\)"),
    ("cgworkers.DeadlineWorker", r"overrides handle_request\(\).*per-request time limit"),
    ("cgworkers.UnknownKeyWorker", r"CONFIG_KWARGS\['h11_max_incomplete_event_size'\] = 65536 "
                                   r"has no meaning"),
    ("cgworkers.NoWebSocketWorker", r"CONFIG_KWARGS\['ws'\] = 'none'"),
    ("cgworkers.FlaggedWorker", r"sets the class attribute use_reloader"),
    ("cgworkers.NotAWorker", r"is not a subclass of a worker cgunicorn serves"),
    ("cgworkers.Missing", r"module 'cgworkers' has no attribute 'Missing'"),
    ("nosuchmodule.Worker", r"cannot import module 'nosuchmodule'"),
    ("gevent.pywsgi.WSGIServer", r"not gunicorn worker classes; use -k gevent"),
    ("meinheld.gmeinheld.MeinheldWorker", r"meinheld is retired.*gthread"),
    ("eventlet", r"eventlet is retired"),
]


@pytest.mark.parametrize("cls,message", REFUSED, ids=[c for c, _ in REFUSED])
def test_refused_worker_classes_fail_start_up_naming_why(cls, message):
    import re
    out = run_cmd(["--chdir", APPS, "-b", "127.0.0.1:0", "-k", cls, "lifeapp:app"], timeout=30)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert re.search(message, out.stderr), out.stderr
    assert "Booting worker" not in out.stderr + out.stdout


# -- process titles and setproctitle ------------------------------------------

def ps_title(pid):
    return subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True,
                          text=True).stdout.strip()


def child_pids(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def titles(srv, workers):
    """The master's title and its workers', once all `workers` are ready."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        kids = child_pids(srv.proc.pid)
        if len(kids) == workers and all(ps_title(k).startswith("[ready]") for k in kids):
            break
        time.sleep(0.1)
    return ps_title(srv.proc.pid), sorted(ps_title(k) for k in kids)


def test_titles_and_setproctitle_in_hooks_and_apps_as_upstream(both):
    ours, theirs = both(["-c", "conf_ready.py", "-w", "2", "wsgiapp:app"])
    want_master = "gunicorn: master [wsgiapp:app]"
    want_worker = "[ready] gunicorn: worker [wsgiapp:app]"
    for srv in (ours, theirs):
        master, workers = titles(srv, 2)
        assert master == want_master, master
        assert workers == [want_worker, want_worker], workers
        assert get_json(srv, "/")["title"] == want_worker  # getproctitle() in the app


def test_proc_name_in_titles(server_factory):
    srv = server_factory(["--chdir", APPS, "-n", "shop", "wsgiapp:app"])
    assert ps_title(srv.proc.pid) == "gunicorn: master [shop]"
    assert get_json(srv, "/")["title"] == "gunicorn: worker [shop]"


# -- gunicorn.SERVER_SOFTWARE --------------------------------------------------

def test_server_software_from_the_config_file_as_upstream(both):
    ours, theirs = both(["-c", "conf_software.py", "wsgiapp:app"])
    for srv in (ours, theirs):
        status, body, headers = get(srv, "/")
        got = json.loads(body)
        assert got["software"] == "hidden/1", got
        assert got["os_software"] == "gunicorn/27.0.1", got  # the arbiter's, unchanged
        assert headers["Server"] == "edge", headers


def test_server_software_default(server_factory):
    srv = server_factory(["--chdir", APPS, "wsgiapp:app"])
    status, body, headers = get(srv, "/")
    assert json.loads(body)["software"] == "gunicorn/27.0.1"
    assert headers["Server"] == "gunicorn"


# -- the ASGI path of absolute-form and fragment targets ----------------------

TARGETS = [
    ("http://localhost/abs?q=1", "/abs", "q=1"),
    ("http://localhost:8000/a%20b/c", "/a b/c", ""),
    ("/frag#x", "/frag", ""),
    ("/frag?k=v#x", "/frag", "k=v"),
]


@pytest.fixture(scope="module")
def wsgi_and_asgi():
    pair = [Server(["--chdir", HTTP_APPS, "envapp:app"]),
            Server(["--chdir", HTTP_APPS, "-k", "asgi", "asgienvapp:app"])]
    yield pair
    for srv in pair:
        srv.stop()


@pytest.mark.parametrize("target,path,query", TARGETS, ids=[t for t, _, _ in TARGETS])
def test_asgi_path_is_the_target_path_as_wsgi(wsgi_and_asgi, target, path, query):
    envs = [get_json(srv, target)["env"] for srv in wsgi_and_asgi]
    for env in envs:
        assert (env["PATH_INFO"], env["QUERY_STRING"]) == (path, query), env
