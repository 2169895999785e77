"""Every server hook, side by side with upstream gunicorn: the same
gunicorn.conf.py (tests/apps/master/hooks_conf.py) writes one line per hook
call; the same signals and requests drive both servers; the per-process
sequences of hook calls must be the same (pids masked: each line names its
process as "master" or "worker<age>")."""
import os
import re
import signal

import pytest

from conftest import GUNICORN, ROOT, Server
from master_support import get, wait_until

APPS = os.path.join(ROOT, "tests", "apps", "master")


def lines(path):
    try:
        with open(path) as f:
            return [l.rstrip("\n") for l in f]
    except FileNotFoundError:
        return []


def has(path, text):
    return any(text == l or l.startswith(text + " ") for l in lines(path))


def sequences(path):
    """Per actor, the hook lines in order; the request hooks are grouped
    under "requests" (which worker serves a request is not deterministic);
    runs of the same hook in the master (child_exit of workers that stop
    together) are sorted."""
    out = {}
    for line in lines(path):
        actor, hook, *rest = line.split(" ", 2)
        if hook in ("pre_request", "post_request"):
            actor = "requests"
        out.setdefault(actor, []).append(" ".join([hook] + rest))
    master = out.get("master", [])
    # The first two workers are interchangeable (which one the kernel hands
    # the aborted request to decides the order of their child_exit lines):
    # name them alike in the master's lines, as their own lines are compared
    # as a multiset below.
    master[:] = [re.sub(r"\bage=[12]\b", "age=1|2", l) if l.startswith("child_exit") else l
                 for l in master]
    i = 0
    while i < len(master):
        j = i
        while j < len(master) and master[j].split()[0] == master[i].split()[0]:
            j += 1
        master[i:j] = sorted(master[i:j])
        i = j
    # Which of the two first workers gets a request (and so, in the abort
    # scenario, is aborted) is up to the kernel: compare them as a multiset.
    first = sorted(repr(out.pop(w)) for w in ("worker1", "worker2") if w in out)
    out["worker1+worker2"] = first
    return out


def scenario_lifecycle(srv, out):
    wait_until(lambda: has(out, "worker2 post_worker_init") and has(out, "worker1 post_worker_init"),
               what="two workers booted")
    assert get(srv.port, "/x?a=1")[0] == 200
    wait_until(lambda: any("post_request" in l for l in lines(out)), what="post_request")
    srv.signal(signal.SIGTTIN)
    wait_until(lambda: has(out, "worker3 post_worker_init"), what="worker3")
    srv.signal(signal.SIGTTOU)
    wait_until(lambda: has(out, "master child_exit age=1"), what="worker1 gone")
    srv.signal(signal.SIGHUP)
    wait_until(lambda: has(out, "worker4 post_worker_init") and has(out, "worker5 post_worker_init")
               and has(out, "master child_exit age=2") and has(out, "master child_exit age=3"),
               what="reload done")
    srv.signal(signal.SIGTERM)
    srv.proc.wait(30)


def scenario_abort_and_quit(srv, out):
    wait_until(lambda: has(out, "worker2 post_worker_init") and has(out, "worker1 post_worker_init"),
               what="two workers booted")
    assert get(srv.port, "/hang", timeout=30)[0] == 500
    wait_until(lambda: has(out, "worker3 post_worker_init"), what="replacement worker")
    srv.signal(signal.SIGQUIT)
    srv.proc.wait(30)


def run(binary, scenario, tmp_path, name, env):
    out = str(tmp_path / ("%s.hooks" % name))
    env = dict(env, HOOKS_OUT=out)
    args = ["-c", os.path.join(APPS, "hooks_conf.py"), "--chdir", APPS, "app:app"]
    with Server(args, cwd=APPS, env=env, binary=binary) as srv:
        scenario(srv, out)
    return sequences(out)


@pytest.mark.skipif(not os.path.exists(GUNICORN), reason="upstream gunicorn not installed")
@pytest.mark.parametrize("scenario,env", [
    (scenario_lifecycle, {}),
    (scenario_abort_and_quit, {"HOOKS_TIMEOUT": "2"}),
], ids=["lifecycle", "abort-quit"])
def test_hook_sequences_match_gunicorn(tmp_path, scenario, env):
    ours = run(None, scenario, tmp_path, "cgunicorn", env)
    theirs = run(GUNICORN, scenario, tmp_path, "gunicorn", env)
    assert sorted(ours) == sorted(theirs)
    for actor in sorted(theirs):
        assert ours[actor] == theirs[actor], actor
    assert ours["requests"], "no request hooks were called"
    # Every hook this scenario reaches was called at least once.
    called = {l.split()[0] for a, seq in ours.items() if a != "worker1+worker2" for l in seq}
    called |= {h for seq in ours["worker1+worker2"] for h in ("worker_abort", "worker_int",
                                                               "worker_exit") if h in seq}
    expected = {"nworkers_changed", "on_starting", "when_ready", "pre_fork", "post_fork",
                "post_worker_init", "child_exit", "worker_exit", "on_exit"}
    if scenario is scenario_lifecycle:
        expected |= {"pre_request", "post_request", "on_reload"}
    else:
        expected |= {"worker_abort", "worker_int", "pre_request", "post_request"}
    assert expected <= called, expected - called
