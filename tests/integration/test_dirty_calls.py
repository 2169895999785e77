"""Dirty calls end to end: HTTP request -> WSGI view -> gunicorn.dirty client
-> dirty arbiter -> dirty worker and back, under the real cgunicorn binary."""
import collections
import concurrent.futures
import os

import pytest

from dirty_support import COUNTER, booted_workers, call, post, start, stream, wait_until

# The seed example is tested where users find it: examples/dirty_app.py,
# imported through --pythonpath (the test apps' directory stays the cwd).
EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples")
ML = "dirty_app:MLApp"
COMPUTE = "dirty_app:ComputeApp"


@pytest.fixture
def srv(server_factory):
    return start(server_factory, [COUNTER, ML, COMPUTE, "dirty_testapps:OnlyOne"],
                 extra=["--pythonpath", os.path.normpath(EXAMPLES_DIR)],
                 workers=2, dirty_workers=1)


def test_seed_example_ml_app(srv):
    # init() of the seed example preloads "default"
    r = call(srv, ML, "list_models")["result"]
    assert r["models"] == ["default"] and r["count"] == 1
    r = call(srv, ML, "load_model", "gpt-test")["result"]
    assert r["status"] == "loaded" and r["model"]["name"] == "gpt-test"
    assert call(srv, ML, "load_model", "gpt-test")["result"]["status"] == "already_loaded"
    r = call(srv, ML, "inference", "gpt-test", "hello world")["result"]
    assert r["model"] == "gpt-test" and r["prediction"] == "result_1"
    assert call(srv, ML, "inference", "gpt-test", "again")["result"]["prediction"] == "result_2"
    r = call(srv, ML, "unload_model", "gpt-test")["result"]
    assert r == {"status": "unloaded", "name": "gpt-test"}
    assert call(srv, ML, "unload_model", "gpt-test")["result"]["status"] == "not_found"
    e = call(srv, ML, "inference", "gpt-test", "x")["error"]
    assert e["type"] == "DirtyAppError" and "Model not loaded: gpt-test" in e["message"]
    r = call(srv, ML, "list_models")["result"]
    assert r["models"] == ["default"] and r["total_inferences"] == 2


def test_seed_example_compute_app(srv):
    assert call(srv, COMPUTE, "fibonacci", 90)["result"]["result"] == 2880067194370816120
    assert call(srv, COMPUTE, "fibonacci", 1)["result"]["result"] == 1
    assert call(srv, COMPUTE, "prime_check", 1000003)["result"]["is_prime"] is True
    assert call(srv, COMPUTE, "prime_check", 1000001)["result"]["is_prime"] is False
    assert call(srv, COMPUTE, "stats")["result"] == {"total_computations": 4}
    e = call(srv, COMPUTE, "_private")["error"]
    assert e["type"] == "DirtyAppError" and "Unknown action: _private" in e["message"]


def test_state_persists_across_calls(srv):
    ns = [call(srv, COUNTER, "incr", 2)["result"] for _ in range(5)]
    assert [n["n"] for n in ns] == [2, 4, 6, 8, 10]
    assert len({n["pid"] for n in ns}) == 1


def test_values_round_trip(srv):
    v = {"s": "é", "i": -3, "big": 2 ** 80, "f": 1.5, "l": [1, [2, None]], "t": True}
    assert call(srv, COUNTER, "echo", v)["result"] == v
    blob = bytes(range(256)) * 4096  # 1 MiB with every byte value
    assert post(srv, "/bytes", data=blob) == blob


def test_async_action_and_kwargs(srv):
    assert call(srv, COUNTER, "aplus", 41)["result"] == 42
    assert call(srv, COUNTER, "incr", by=5)["result"]["n"] == 5


def test_streaming_sync_and_async(srv):
    r = stream(srv, COUNTER, "count", 5)
    assert r == {"chunks": [{"i": i} for i in range(5)]}
    assert stream(srv, COUNTER, "acount", 4) == {"chunks": [0, 10, 20, 30]}
    r = stream(srv, COUNTER, "fail_midway", 3)
    assert r["chunks"] == [0, 1, 2]
    assert r["error"]["type"] == "DirtyAppError"
    assert "stream broke after 3" in r["error"]["message"]


def test_stream_closed_early_frees_the_worker(srv):
    # An endless generator: the client stops after 3 chunks (CANCEL); the
    # worker's only thread must come free for the next call.
    assert stream(srv, COUNTER, "forever", take=3)["chunks"] == [0, 1, 2]
    assert call(srv, COUNTER, "echo", "after", timeout=10)["result"] == "after"


def test_app_error_carries_traceback(srv):
    e = call(srv, COUNTER, "boom", "bad input 42")["error"]
    assert e["type"] == "DirtyAppError"
    assert e["message"] == "bad input 42"
    assert e["app_path"] == COUNTER and e["action"] == "boom"
    assert "ValueError: bad input 42" in e["traceback"]
    assert "dirty_testapps.py" in e["traceback"]
    assert "Error executing dirty_testapps:Counter.boom" in srv.log()


def test_unsendable_result_is_a_clear_error(srv):
    e = call(srv, COUNTER, "unsendable")["error"]
    assert e["type"] == "DirtyAppError"
    assert "set" in e["message"] and "unsendable" in e["message"]
    assert call(srv, COUNTER, "echo", 1)["result"] == 1  # worker still serves


def test_unknown_app_and_action(srv):
    e = call(srv, "nosuch.module:App", "x")["error"]
    assert e["type"] == "DirtyAppNotFoundError"
    assert "nosuch.module:App" in e["message"]
    e = call(srv, COUNTER, "no_such_action")["error"]
    assert e["type"] == "DirtyAppError" and "no_such_action" in e["message"]


def test_stash_shared_between_http_and_arbiter(srv):
    assert post(srv, "/stash", {"op": "put", "args": ["t1", "k", {"v": [1, 2]}]}) == \
        {"result": None}
    assert post(srv, "/stash", {"op": "get", "args": ["t1", "k"]}) == {"result": {"v": [1, 2]}}
    post(srv, "/stash", {"op": "put", "args": ["t1", "user:1", "a"]})
    post(srv, "/stash", {"op": "put", "args": ["t1", "user:2", "b"]})
    r = post(srv, "/stash", {"op": "keys", "args": ["t1", "user:*"]})["result"]
    assert sorted(r) == ["user:1", "user:2"]
    assert post(srv, "/stash", {"op": "exists", "args": ["t1", "k"]})["result"] is True
    assert post(srv, "/stash", {"op": "delete", "args": ["t1", "k"]})["result"] is True
    assert post(srv, "/stash", {"op": "get", "args": ["t1", "k", "dflt"]})["result"] == "dflt"
    assert "t1" in post(srv, "/stash", {"op": "tables"})["result"]
    e = post(srv, "/stash", {"op": "info", "args": ["nope"]})["error"]
    assert e["type"] == "StashTableNotFoundError"


def test_1000_concurrent_calls_from_50_threads(srv):
    # 50 threads in one view, each with its own connection, 20 calls each.
    r = post(srv, "/fanout", {"threads": 50, "calls": 20}, timeout=120)
    assert r == {"bad": [], "n": 1000}


def test_http_concurrency_no_mixed_replies(srv):
    def one(i):
        v = {"i": i, "pad": "x" * (i % 7)}
        return v, call(srv, COUNTER, "echo", v)["result"]

    with concurrent.futures.ThreadPoolExecutor(50) as ex:
        for sent, got in ex.map(one, range(400)):
            assert sent == got


def test_two_dirty_workers_share_load(server_factory):
    srv = start(server_factory, [COUNTER], workers=2, dirty_workers=2)
    # both take calls once booted (a booting worker gets none)
    wait_until(lambda: booted_workers(srv) == 2, 30, "two booted workers")
    pids = collections.Counter()
    wait_until(lambda: pids.update([call(srv, COUNTER, "pid")["result"]]) or len(pids) == 2,
               30, "calls on both workers")
    assert len(pids) == 2, pids
    # and concurrent slow calls run in parallel on different workers
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        rs = list(ex.map(lambda _: call(srv, COUNTER, "sleep", 0.5)["result"], range(2)))
    assert len({r["pid"] for r in rs}) == 2


def test_per_app_worker_counts(server_factory):
    # OnlyOne has the class attribute `workers = 1`; Counter goes to every worker.
    srv = start(server_factory, ["dirty_testapps:Counter", "dirty_testapps:OnlyOne"],
                workers=2, dirty_workers=3)
    # calls go to booted workers only: wait for all three (slow under ASan):
    # Counter initialised in each, OnlyOne in one
    wait_until(lambda: booted_workers(srv) == 4, 30, "three booted workers")
    only = {call(srv, "dirty_testapps:OnlyOne", "pid")["result"] for _ in range(12)}
    every = set()
    wait_until(lambda: every.add(call(srv, COUNTER, "pid")["result"]) or len(every) == 3,
               30, "Counter calls on all three workers")
    assert len(only) == 1
    assert len(every) == 3
    assert "Spawned dirty worker" in srv.log()


def test_spec_worker_count(server_factory):
    # "module:Class:N" limits the app to N workers; the other app goes everywhere.
    srv = start(server_factory, ["dirty_testapps:Counter:1", "dirty_testapps:OnlyOne:2"],
                workers=2, dirty_workers=2)
    # calls go to booted workers only: wait for both (Counter in one,
    # OnlyOne in both), then for OnlyOne calls on both
    wait_until(lambda: booted_workers(srv) == 3, 30, "two booted workers")
    counter = {call(srv, COUNTER, "pid")["result"] for _ in range(10)}
    only = set()
    wait_until(lambda: only.add(call(srv, "dirty_testapps:OnlyOne", "pid")["result"])
               or len(only) == 2, 30, "OnlyOne calls on both workers")
    assert len(counter) == 1  # the spec's 1 wins
    assert len(only) == 2     # the spec's 2 overrides the class attribute
