"""The asgi worker's event loop, lifespan protocol and shutdown sequence.

cg_worker_asgi.c calls run(server, app, opts) in each worker process. The
HTTP/WebSocket protocol, scopes and the receive/send callables are C; this
module only orchestrates, as gunicorn's workers/gasgi.py and
asgi/lifespan.py do:

  1. pick the loop (uvloop when installed and asgi_loop is auto/uvloop),
  2. run lifespan startup (asgi_lifespan auto/on/off),
  3. let the C server accept and serve, waking every tick to report
     liveness and close expired keep-alive connections,
  4. on TERM: stop accepting, serve what the listen queues hold, end idle
     connections after a moment (the C sweep), wait up to graceful_timeout
     for in-flight ones, run lifespan shutdown; on QUIT/INT the same within
     one second and without lifespan shutdown.
"""
import asyncio

import _cgunicorn

DEBUG, INFO, WARNING, ERROR = 0, 1, 2, 3
WORKER_BOOT_ERROR = 3
LIFESPAN_TIMEOUT = 30.0


def _log(level, msg):
    _cgunicorn.log(level, msg)


def new_loop(kind):
    """A new event loop for asgi_loop = auto | asyncio | uvloop."""
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                _log(WARNING, "uvloop not available, falling back to asyncio")
        else:
            _log(DEBUG, "Using uvloop event loop")
            return uvloop.new_event_loop()
    _log(DEBUG, "Using asyncio event loop")
    return asyncio.new_event_loop()


class LifespanStartupFailed(RuntimeError):
    """The application sent lifespan.startup.failed."""


class Lifespan:
    """Runs the application's lifespan scope in its own task."""

    def __init__(self, app, state):
        self.app = app
        self.state = state
        self.queue = asyncio.Queue()
        self.startup_done = asyncio.Event()
        self.shutdown_done = asyncio.Event()
        self.failed = False
        self.reported = False
        self.error = None
        self.shutdown_error = None
        self.finished = False
        self.task = None

    async def startup(self):
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "state": self.state,
        }
        await self.queue.put({"type": "lifespan.startup"})
        self.task = asyncio.get_running_loop().create_task(self._run(scope))
        try:
            await asyncio.wait_for(self.startup_done.wait(), LIFESPAN_TIMEOUT)
        except asyncio.TimeoutError:
            self.task.cancel()
            raise RuntimeError("Lifespan startup timed out")
        if self.failed:
            self.task.cancel()
            cls = LifespanStartupFailed if self.reported else RuntimeError
            raise cls("Lifespan startup failed: %s" % (self.error or "Unknown error"))
        _log(DEBUG, "ASGI lifespan startup complete")

    async def shutdown(self):
        if self.finished:
            _log(DEBUG, "ASGI lifespan already finished")
            return
        await self.queue.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(self.shutdown_done.wait(), LIFESPAN_TIMEOUT)
        except asyncio.TimeoutError:
            _log(WARNING, "Lifespan shutdown timed out")
        if self.shutdown_error:
            _log(ERROR, "Lifespan shutdown error: %s" % self.shutdown_error)
        if self.task is not None and not self.task.done():
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        _log(DEBUG, "ASGI lifespan shutdown complete")

    async def _run(self, scope):
        try:
            await self.app(scope, self._receive, self._send)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the app's failure is reported, not raised
            _log(DEBUG, "Lifespan application raised: %s" % exc)
            if not self.startup_done.is_set():
                self.failed = True
                self.error = str(exc)
                self.startup_done.set()
            elif not self.shutdown_done.is_set():
                self.shutdown_error = str(exc)
                self.shutdown_done.set()
        finally:
            self.finished = True
            if not self.startup_done.is_set():
                self.failed = True
                self.error = "Application exited before startup complete"
                self.startup_done.set()
            self.shutdown_done.set()

    async def _receive(self):
        return await self.queue.get()

    async def _send(self, message):
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self.startup_done.set()
        elif kind == "lifespan.startup.failed":
            self.failed = True
            self.reported = True
            self.error = message.get("message", "")
            self.startup_done.set()
        elif kind == "lifespan.shutdown.complete":
            self.shutdown_done.set()
        elif kind == "lifespan.shutdown.failed":
            self.shutdown_error = message.get("message", "")
            self.shutdown_done.set()
        else:
            raise RuntimeError("Unexpected ASGI message type %r for a lifespan scope" % kind)


async def _wait(event, timeout):
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except asyncio.TimeoutError:
        pass


async def _serve(loop, server, app, opts):
    state = {}
    lifespan = None
    mode = opts["lifespan"]
    if mode != "off":
        lifespan = Lifespan(app, state)
        try:
            await lifespan.startup()
        except Exception as exc:
            if mode == "on" or isinstance(exc, LifespanStartupFailed):
                _log(ERROR, "ASGI lifespan startup failed: %s" % exc)
                return WORKER_BOOT_ERROR
            _log(DEBUG, "ASGI lifespan not supported by app: %s" % exc)
            lifespan = None

    stop = asyncio.Event()
    server.start(loop, state, stop.set)
    tick = opts["tick"]
    while server.alive():
        server.tick()
        await _wait(stop, tick)

    _log(INFO, "Worker shutting down...")
    server.stop_accepting()
    if server.nconns() and not server.quick():
        _log(INFO, "Waiting for %d connections to finish..." % server.nconns())
    while (server.nconns() or server.draining()) and not server.stop_due():
        server.tick()
        stop.clear()
        await _wait(stop, 0.1)
    if server.nconns() and not server.quick():
        _log(WARNING, "Forcing close of %d connections" % server.nconns())
    if lifespan is not None and not server.quick():
        try:
            await lifespan.shutdown()
        except Exception as exc:
            _log(ERROR, "ASGI lifespan shutdown error: %s" % exc)
    server.close_all()
    return 0


def run(server, app, opts):
    """Serves until the worker stops; returns the process exit code."""
    loop = new_loop(opts["loop"])
    asyncio.set_event_loop(loop)
    code = 0
    try:
        code = loop.run_until_complete(_serve(loop, server, app, opts))
    finally:
        try:
            server.close_all()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                gather = asyncio.gather(*pending, return_exceptions=True)
                if server.quick():
                    try:
                        loop.run_until_complete(asyncio.wait_for(gather, 1.0))
                    except asyncio.TimeoutError:
                        pass
                else:
                    loop.run_until_complete(gather)
        finally:
            asyncio.set_event_loop(None)
            loop.close()
    return code


def task_stack(task):
    """Where an application task is waiting, for request_timeout's log."""
    import io
    out = io.StringIO()
    task.print_stack(file=out)
    return out.getvalue()
