"""Helpers for the dirty-arbiter integration tests: start cgunicorn with the
test apps in tests/apps/dirty, call views, and look at the process tree."""
import json
import os
import re
import urllib.request

from master_support import children as _all_children, wait_until  # noqa: F401

APPS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "apps", "dirty")
COUNTER = "dirty_testapps:Counter"


def start(server_factory, dirty_apps, extra=(), workers=2, dirty_workers=1, env=None,
          wait_workers=None):
    args = ["--workers", str(workers), "--dirty-workers", str(dirty_workers)]
    for a in dirty_apps:
        args += ["--dirty-app", a]
    args += list(extra) + ["dirty_wsgi:app"]
    srv = server_factory(args, cwd=APPS_DIR, env=env)
    wait_dirty_workers(srv, dirty_workers if wait_workers is None else wait_workers)
    return srv


def arbiter_pid(srv):
    m = srv.wait_for_log(r"Spawned dirty arbiter \(pid: (\d+)\)")
    return int(m.group(1))


def _is_probe(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return b"[probe]" in f.read()
    except OSError:
        return False


def children(pid):
    """Live (non-zombie) child pids of `pid` (the arbiter's short-lived probe
    child, which reads the apps' `workers` attributes, is not counted)."""
    return [p for p in _all_children(pid) if not _is_probe(p)]


def booted_workers(srv):
    return len(re.findall(r"Initialized dirty app", srv.log()))


def wait_dirty_workers(srv, n, timeout=30):
    """Waits until the arbiter has `n` live children that answered boot."""
    arb = arbiter_pid(srv)
    srv.wait_for_log(r"Dirty arbiter listening on", timeout)
    wait_until(lambda: len(children(arb)) == n, timeout, "%d dirty workers" % n)
    return arb


def post(srv, path, payload=None, data=None, timeout=60):
    body = data if data is not None else json.dumps(payload or {}).encode()
    req = urllib.request.Request(srv.url + path, data=body, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
    return raw if data is not None else json.loads(raw)


def call(srv, app, action, *args, timeout=None, **kwargs):
    req = {"app": app, "action": action, "args": list(args), "kwargs": kwargs}
    if timeout:
        req["timeout"] = timeout
    return post(srv, "/call", req)


def stream(srv, app, action, *args, take=None, **kwargs):
    return post(srv, "/stream", {"app": app, "action": action, "args": list(args),
                                 "kwargs": kwargs, "take": take})
