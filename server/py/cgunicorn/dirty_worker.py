"""The Python half of a cgunicorn dirty worker (the C half is
dirty/cg_dirty_worker.c, which reads frames and runs calls on its thread
pool), plus the objects the dirty hooks receive.

A worker boots in gunicorn's order: dirty_post_fork(arbiter, worker), then
each app class is imported and instantiated, then app.init() for each, then
dirty_worker_init(worker). A call runs `app(action, *args, **kwargs)` in a
pool thread; a coroutine result is awaited on the worker's own asyncio loop
(one thread, started on first use); a generator or async generator streams
CHUNK frames then END; an exception becomes an ERROR frame carrying type,
message, traceback, app_path and action. On exit each app's close() runs,
then dirty_worker_exit(arbiter, worker).

`send(type, id, body, zc=False)` and `cancelled(id)` are C callables handed in by
cg_dirty_worker.c; `log(level, message)` writes the gunicorn error log. A
request that says "fds": true accepts bytes results and chunks in memfds
(zc=True: the C side applies dirty_zero_copy_threshold).
"""
import asyncio
import contextlib
import importlib
import inspect
import io
import os
import sys
import threading
import traceback

# Frame types (dirty/cg_dirty_codec.h).
RESPONSE, ERROR, CHUNK, END = 2, 3, 4, 5


class Config:
    """gunicorn's `cfg` as hooks see it: settings as attributes."""

    def __init__(self, values):
        self._values = dict(values) if values else {}

    def __getattr__(self, name):
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError("No configuration setting for: %s" % name) from None

    def get(self, name, default=None):
        return self._values.get(name, default)


class Logger:
    """The subset of gunicorn's logger that hooks use, writing the error log."""

    def __init__(self, write):
        self._write = write

    def _log(self, level, msg, args, exc=False):
        try:
            text = str(msg) % args if args else str(msg)
        except Exception:
            text = "%s %r" % (msg, args)
        if exc:
            text = text + "\n" + traceback.format_exc().rstrip()
        self._write(level, text)

    def debug(self, msg, *args, **kw):
        self._log(10, msg, args)

    def info(self, msg, *args, **kw):
        self._log(20, msg, args)

    def warning(self, msg, *args, **kw):
        self._log(30, msg, args)

    warn = warning

    def error(self, msg, *args, **kw):
        self._log(40, msg, args, exc=bool(kw.get("exc_info")))

    def critical(self, msg, *args, **kw):
        self._log(50, msg, args)

    def exception(self, msg, *args, **kw):
        self._log(40, msg, args, exc=True)

    def reopen_files(self):
        pass

    def close_on_exec(self):
        pass


class DirtyArbiterInfo:
    """The `arbiter` argument of the dirty hooks (a view of the C arbiter)."""

    def __init__(self, pid, socket_path, app_paths, num_workers, cfg, log):
        self.pid = pid
        self.ppid = os.getppid()
        self.socket_path = socket_path
        self.app_paths = list(app_paths)
        self.num_workers = num_workers
        self.cfg = cfg
        self.log = log
        self.alive = True

    def __repr__(self):
        return "<DirtyArbiter %s>" % self.pid


def make_arbiter(pid, socket_path, app_paths, num_workers, values, log):
    return DirtyArbiterInfo(pid, socket_path, app_paths, num_workers, Config(values),
                            Logger(log))


def _import_class(import_path):
    module_path, _, class_name = import_path.rpartition(":")
    module = sys.modules.get(module_path) or importlib.import_module(module_path)
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise ImportError("module '%s' has no attribute '%s' (dirty app %s)"
                          % (module_path, class_name, import_path)) from None


def probe_limits(paths):
    """'N N ...': each class's `workers` attribute, 0 when unset/unreadable."""
    out = []
    for path in paths:
        value = 0
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                cls = _import_class(path)
            w = getattr(cls, "workers", None)
            if isinstance(w, int) and not isinstance(w, bool) and w > 0:
                value = w
        except BaseException:
            pass
        out.append(str(value))
    return " ".join(out)


class DirtyWorkerInfo:
    """The running dirty worker; also the `worker` argument of the hooks."""

    def __init__(self, arbiter, pid, age, app_paths, cfg, log, send, cancelled, threads,
                 hooks):
        self.arbiter = arbiter
        self.pid = pid
        self.ppid = os.getppid()
        self.age = age
        self.app_paths = list(app_paths)
        self.apps = {}
        self.cfg = cfg
        self.log = log
        self.booted = False
        self.aborted = False
        self.alive = True
        self.threads = threads
        self._send = send
        self._cancelled = cancelled
        self._post_fork, self._worker_init, self._worker_exit = hooks
        self._loop = None
        self._loop_lock = threading.Lock()

    def __str__(self):
        return "<DirtyWorker %s>" % self.pid

    __repr__ = __str__

    def notify(self):
        """gunicorn's heartbeat; liveness here is per call (dirty_timeout)."""

    # -- boot / shutdown ------------------------------------------------

    def boot(self):
        """Runs the boot sequence; False (traceback logged once) on failure."""
        stage = "dirty_post_fork hook"
        try:
            if self._post_fork is not None:
                self._post_fork(self.arbiter, self)
            for path in self.app_paths:
                stage = "loading dirty app %s" % path
                self.apps[path] = self._load(path)
                self.log.debug("Loaded dirty app: %s", path)
            for path, app in self.apps.items():
                stage = "initializing dirty app %s (init())" % path
                app.init()
                self.log.info("Initialized dirty app: %s", path)
            stage = "dirty_worker_init hook"
            if self._worker_init is not None:
                self._worker_init(self)
        except BaseException:
            text = "Dirty worker (pid:%s) failed while %s:\n%s" % (
                self.pid, stage, traceback.format_exc().rstrip())
            # The arbiter logs the first boot failure only (every worker
            # would fail the same way); log here if it cannot be told.
            try:
                self._send(ERROR, 0, {"error": {"type": "DirtyWorkerError", "message": text}})
            except BaseException:
                self.log.error("%s", text)
            return False
        self.booted = True
        return True

    def _load(self, path):
        cls = _import_class(path)
        if not isinstance(cls, type):
            raise TypeError("dirty app %s is not a class (got %s)" % (path, type(cls).__name__))
        app = cls()
        for name in ("init", "__call__", "close"):
            if not callable(getattr(app, name, None)):
                raise TypeError("dirty app %s is missing required method: %s" % (path, name))
        return app

    def shutdown(self):
        self.alive = False
        for path, app in self.apps.items():
            try:
                app.close()
                self.log.debug("Closed dirty app: %s", path)
            except BaseException as e:
                self.log.error("Error closing dirty app %s: %s", path, e)
        if self._worker_exit is not None:
            try:
                self._worker_exit(self.arbiter, self)
            except BaseException:
                self.log.exception("dirty_worker_exit hook failed")
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        self.log.info("Dirty worker %s exiting", self.pid)
        return True

    # -- calls ------------------------------------------------------------

    def _error(self, rid, etype, message, **extra):
        err = {"type": etype, "message": message}
        for k, v in extra.items():
            if v is not None:
                err[k] = v
        self._send(ERROR, rid, {"error": err})

    def _app_error(self, rid, exc, app_path, action):
        tb = traceback.format_exc()
        self.log.error("Error executing %s.%s: %s\n%s", app_path, action, exc, tb.rstrip())
        self._error(rid, "DirtyAppError", str(exc) or type(exc).__name__, traceback=tb,
                    app_path=app_path, action=action, exc_type=type(exc).__name__)

    def _unsendable(self, rid, exc, what, app_path, action):
        self._error(rid, "DirtyAppError", "%s.%s %s a value that cannot be sent to the caller: %s"
                    % (app_path, action, what, exc), app_path=app_path, action=action,
                    exc_type=type(exc).__name__)

    def bad_request(self, rid, exc):
        self._error(rid, "DirtyProtocolError", "malformed dirty request: %s" % (exc,))
        return True

    def _await(self, coro):
        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                t = threading.Thread(target=loop.run_forever, name="dirty-asyncio",
                                     daemon=True)
                t.start()
                self._loop = loop
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def handle(self, rid, msg):
        app_path = msg.get("app_path")
        action = msg.get("action")
        args = msg.get("args") or ()
        kwargs = msg.get("kwargs") or {}
        zc = msg.get("fds") is True
        app = self.apps.get(app_path)
        if app is None:
            self._error(rid, "DirtyAppNotFoundError",
                        "Dirty app not found: %s" % (app_path,), app_path=app_path,
                        action=action)
            return True
        try:
            result = app(action, *args, **kwargs)
            if inspect.iscoroutine(result):
                result = self._await(result)
        except BaseException as e:
            self._app_error(rid, e, app_path, action)
            return True
        if inspect.isgenerator(result):
            self._stream(rid, result, app_path, action, False, zc)
        elif inspect.isasyncgen(result):
            self._stream(rid, result, app_path, action, True, zc)
        else:
            try:
                self._send(RESPONSE, rid, {"result": result}, zc)
            except (TypeError, ValueError) as e:
                self._unsendable(rid, e, "returned", app_path, action)
        return True

    def _stream(self, rid, gen, app_path, action, is_async, zc=False):
        try:
            while True:
                if self._cancelled(rid):
                    self._error(rid, "DirtyError", "stream cancelled by the caller")
                    return
                try:
                    if is_async:
                        item = self._await(gen.__anext__())
                    else:
                        item = next(gen)
                except (StopIteration, StopAsyncIteration):
                    self._send(END, rid, {})
                    return
                except BaseException as e:
                    self._app_error(rid, e, app_path, action)
                    return
                try:
                    self._send(CHUNK, rid, {"data": item}, zc)
                except (TypeError, ValueError) as e:
                    self._unsendable(rid, e, "yielded", app_path, action)
                    return
        finally:
            try:
                if is_async:
                    self._await(gen.aclose())
                else:
                    gen.close()
            except BaseException:
                self.log.exception("Error closing the stream of %s.%s", app_path, action)


def make_worker(arbiter, pid, age, app_paths, values, log, send, cancelled, threads, hooks):
    cfg = arbiter.cfg if arbiter is not None else Config(values)
    return DirtyWorkerInfo(arbiter, pid, age, app_paths, cfg, Logger(log), send, cancelled,
                           threads, hooks)
