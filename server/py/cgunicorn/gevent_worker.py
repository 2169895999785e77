"""The hub side of the gevent worker (server/workers/cg_worker_gevent.c).

patch() runs in the worker before the app is loaded: gevent's
monkey.patch_all(), then a fresh hub for this process (gunicorn's
GeventWorker does the same). run() is the worker's loop: one acceptor
greenlet per listener feeding a Pool of worker_connections greenlets (each
serves one connection in C, core["serve"]), a greenlet on the signal pipe,
and the heartbeat in the main greenlet; then the graceful stop. wait() is
the cooperative wait the C transport calls when a socket would block.
"""
import time

_wait_on = None
_loop = None


class _TimedOut(Exception):
    pass


_TIMED_OUT = _TimedOut()


def patch():
    """Imports gevent and patches the standard library (ImportError when
    gevent is not installed: the C caller names pip install gevent)."""
    global _wait_on, _loop
    from gevent import monkey
    monkey.patch_all()
    import gevent.hub
    import gevent.socket
    gevent.hub.reinit()
    _wait_on = gevent.socket.wait
    _loop = gevent.get_hub().loop
    _renew_dirty_locals()


def _renew_dirty_locals():
    """gunicorn.dirty keeps one client per thread in a module-level
    threading.local. Imported before patching (preload_app, or a hook), that
    is a real thread-local: every greenlet would share one client and wait
    for its lock in turn. Replaced by gevent's local here, so each greenlet
    gets its own connection, as when the module is imported after patching."""
    import sys
    import threading
    for name in ("gunicorn.dirty.client", "gunicorn.dirty.stash"):
        mod = sys.modules.get(name)
        old = getattr(mod, "_thread_local", None)
        if old is not None and not isinstance(old, threading.local):
            mod._thread_local = threading.local()


def wait(fd, events, timeout):
    """Waits for events (1 read, 2 write) on fd, yielding to the hub, up to
    timeout seconds (< 0: no limit). True when ready, False on timeout;
    other exceptions (GreenletExit) propagate."""
    io = _loop.io(fd, events)
    try:
        _wait_on(io, None if timeout < 0 else timeout, _TIMED_OUT)
        return True
    except _TimedOut:
        return False
    finally:
        io.close()


def run(core, listeners, sig_fd, worker_connections, tick, graceful_timeout, quit_grace,
        max_accept):
    """Serves until the worker stops; returns how many connections were
    still in flight when the stop deadline passed (0: a clean stop)."""
    import gevent
    from gevent.event import Event
    from gevent.pool import Pool

    accept, serve, on_signal = core["accept"], core["serve"], core["on_signal"]
    pool = Pool(worker_connections)
    wake = Event()
    core["set_wake"](wake.set)

    def acceptor(i, fd):
        # Takes up to max_accept connections per wake-up (gevent's
        # StreamServer takes 100; one when several workers share the
        # listener, as gunicorn's gevent worker sets).
        while True:
            pool.wait_available()
            wait(fd, 1, -1)
            for _ in range(max_accept):
                conn = accept(i)
                if conn is None:
                    break
                pool.spawn(serve, conn)
                if pool.full():
                    break

    def signals():
        while True:
            wait(sig_fd, 1, -1)
            if on_signal():
                wake.set()

    acceptors = [gevent.spawn(acceptor, i, fd) for i, fd in enumerate(listeners)]
    watcher = gevent.spawn(signals)
    while not on_signal():
        core["notify"]()
        wake.wait(tick)
        wake.clear()
    gevent.killall(acceptors)
    terminating, quick = core["state"]()
    start = time.monotonic()
    if terminating and not quick:
        # TERM: the master stopped new connections from queueing; serve
        # what the queues already hold.
        for i in range(len(listeners)):
            while time.monotonic() - start < graceful_timeout:
                pool.wait_available(timeout=tick)
                if pool.full():
                    continue
                conn = accept(i)
                if conn is None:
                    break
                pool.spawn(serve, conn)
    while len(pool):
        core["notify"]()
        on_signal()
        quick = core["state"]()[1]
        left = start + (quit_grace if quick else graceful_timeout) - time.monotonic()
        if left <= 0:
            break
        pool.join(timeout=min(tick, left))
    watcher.kill(block=False)
    return len(pool)
