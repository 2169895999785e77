"""Back-pressure on the dirty pool (cgunicorn extension; gunicorn queues
without bound): dirty_queue_limit refuses calls beyond N waiting ones at
once, dirty_queue_timeout refuses a call that waited too long for a worker;
both with DirtyBusyError and a retry_after estimate, and nothing that was
admitted fails."""
import concurrent.futures
import os

from dirty_support import COUNTER, call, start
from master_support import wait_until


def busy(res):
    err = res.get("error") or {}
    return err.get("type") == "DirtyBusyError"


def test_calls_beyond_the_queue_limit_fail_at_once(server_factory, tmp_path):
    release = str(tmp_path / "release")
    srv = start(server_factory, [COUNTER], workers=1, dirty_workers=1,
                extra=["-k", "gthread", "--threads", "10", "--dirty-threads", "1",
                       "--dirty-queue-limit", "2"])
    # booted (a booting worker takes no call: calls for it count as queued)
    assert call(srv, COUNTER, "echo", "up") == {"result": "up"}
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        futs = [ex.submit(call, srv, COUNTER, "wait_for", release) for _ in range(8)]
        # One call runs (held until `release` exists), two wait: the other
        # five must come back refused while the first is still held, i.e.
        # without waiting for any call to finish.
        wait_until(lambda: sum(f.done() for f in futs) >= 5, 30, "five refused calls")
        refused = [f.result() for f in futs if f.done()]
        assert len(refused) == 5 and all(busy(r) for r in refused), refused
        for r in refused:
            e = r["error"]
            assert e["app_path"] == COUNTER and e["retry_after"] > 0, e
            assert "dirty_queue_limit 2" in e["message"], e
        open(release, "w").close()
    served = [f.result() for f in futs if not busy(f.result())]
    assert len(served) == 3 and all(r["result"]["released"] for r in served), served
    # The pool serves normally afterwards.
    assert call(srv, COUNTER, "echo", "ok") == {"result": "ok"}


def test_a_call_waiting_past_the_queue_timeout_is_refused(server_factory, tmp_path):
    release = str(tmp_path / "release")
    srv = start(server_factory, [COUNTER], workers=1, dirty_workers=1,
                extra=["-k", "gthread", "--threads", "4", "--dirty-threads", "1",
                       "--dirty-queue-timeout", "1"])
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        held = ex.submit(call, srv, COUNTER, "wait_for", release)
        wait_until(lambda: os.path.exists(release + ".running"), 30, "the held call running")
        queued = ex.submit(call, srv, COUNTER, "echo", "late")
        res = queued.result(timeout=30)  # comes back while `held` still holds the worker
        assert not held.done()
        assert busy(res), res
        assert "dirty_queue_timeout" in res["error"]["message"], res
        open(release, "w").close()
        assert held.result(timeout=30)["result"]["released"] is True
    assert call(srv, COUNTER, "echo", "again") == {"result": "again"}


def test_queue_settings_are_validated(server_factory):
    from conftest import run_cmd
    r = run_cmd(["--dirty-queue-limit", "-1", "--check-config", "app:app"])
    assert r.returncode != 0 and "--dirty-queue-limit" in (r.stdout + r.stderr)
    r = run_cmd(["--dirty-queue-timeout", "x", "--check-config", "app:app"])
    assert r.returncode != 0 and "--dirty-queue-timeout" in (r.stdout + r.stderr)
