"""The objects server hooks receive, with the attributes gunicorn.conf.py
files use on gunicorn's Arbiter, Worker, Config, Logger, Request and
Response.

The master builds one `Server` (gunicorn's arbiter) and one `Worker` per
worker it forks (before the fork, so pre_fork sees it); the C side keeps
their plain attributes (pid, num_workers, alive, nr, ...) up to date. Hook
calls go through `call()`, which the C side uses too.
"""
import os
import signal
import socket  # noqa: F401 (imported in the master: workers need it after dropping privileges)
import sys
import threading
import time
import traceback

import _cgunicorn
import _cgunicorn_hooks

DEBUG, INFO, WARNING, ERROR, CRITICAL, EXCEPTION = range(6)  # EXCEPTION: written at ERROR
_LOGGING_LEVELS = {10: DEBUG, 20: INFO, 30: WARNING, 40: ERROR, 50: CRITICAL}


class Logger:
    """gunicorn's Logger API, writing to cgunicorn's error log."""

    def __init__(self, cfg=None):
        self.cfg = cfg

    def _emit(self, level, msg, args, exc_info=False):
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = "%s %r" % (msg, args)
        if exc_info:
            if exc_info is True or not isinstance(exc_info, tuple):
                exc_info = sys.exc_info()
            if exc_info[0] is not None:
                text += "\n" + "".join(traceback.format_exception(*exc_info)).rstrip("\n")
        _cgunicorn.log(level, text)

    def _metric_then_emit(self, level, msg, args, kw):
        # gunicorn's statsd logger: extra={"metric", "value", "mtype"} on
        # info/debug/log sends a metric; an empty message is then not logged
        extra = kw.get("extra") or {}
        metric, value, mtype = extra.get("metric"), extra.get("value"), extra.get("mtype")
        if metric and value is not None and mtype:
            send = {"gauge": self.gauge, "counter": self.increment,
                    "histogram": self.histogram, "timer": self.timer}.get(mtype)
            if send is not None:
                send(metric, value)
            if not msg:
                return
        self._emit(level, msg, args, kw.get("exc_info", False))

    def debug(self, msg, *args, **kw):
        self._metric_then_emit(DEBUG, msg, args, kw)

    def info(self, msg, *args, **kw):
        self._metric_then_emit(INFO, msg, args, kw)

    def warning(self, msg, *args, **kw):
        self._emit(WARNING, msg, args, kw.get("exc_info", False))

    warn = warning

    def error(self, msg, *args, **kw):
        self._emit(ERROR, msg, args, kw.get("exc_info", False))

    def critical(self, msg, *args, **kw):
        self._emit(CRITICAL, msg, args, kw.get("exc_info", False))

    def exception(self, msg, *args, **kw):
        self._emit(EXCEPTION, msg, args, kw.get("exc_info", True))

    def log(self, lvl, msg, *args, **kw):
        if isinstance(lvl, str):
            lvl = {"debug": 10, "info": 20, "warning": 30, "error": 40,
                   "critical": 50}.get(lvl.lower(), 20)
        self._metric_then_emit(_LOGGING_LEVELS.get(lvl, INFO), msg, args, kw)

    # gunicorn's statsd logger methods (sent only when statsd_host is set)
    def gauge(self, name, value):
        _cgunicorn.statsd(name, value, "g")

    def increment(self, name, value, sampling_rate=1.0):
        _cgunicorn.statsd(name, value, "c|@%s" % (sampling_rate,))

    def decrement(self, name, value, sampling_rate=1.0):
        _cgunicorn.statsd(name, "-%s" % (value,), "c|@%s" % (sampling_rate,))

    def timer(self, name, value):
        _cgunicorn.statsd(name, value, "ms")

    def histogram(self, name, value):
        _cgunicorn.statsd(name, value, "h")

    def reopen_files(self):
        _cgunicorn_hooks.reopen_logs()

    def close_on_exec(self):
        pass

    def access(self, resp, req, environ, request_time):
        pass


class Config:
    """Attribute access to the validated settings (gunicorn's cfg.<name>),
    plus the derived properties gunicorn's Config offers."""

    def __init__(self, values):
        self.__dict__["_values"] = values

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError("No configuration setting for: %s" % name) from None

    def __setattr__(self, name, value):
        self._values[name] = value

    @property
    def settings(self):
        return dict(self._values)

    @property
    def address(self):
        return list(self._values.get("bind") or [])

    @property
    def uid(self):
        return self._values.get("user")

    @property
    def gid(self):
        return self._values.get("group")

    @property
    def env(self):
        env = {}
        for item in self._values.get("raw_env") or []:
            key, _, value = item.partition("=")
            env[key] = value
        return env

    @property
    def worker_class_str(self):
        return str(self._values.get("worker_class"))

    @property
    def is_ssl(self):
        return bool(self._values.get("certfile") or self._values.get("keyfile"))

    @property
    def proc_name(self):
        return self._values.get("proc_name") or self._values.get("default_proc_name")


class Server:
    """What hooks get as `server` (gunicorn's Arbiter)."""

    def __init__(self, pid, values, num_workers, proc_name):
        self.pid = pid
        self.cfg = Config(values)
        self.log = Logger(self.cfg)
        self.num_workers = num_workers
        self.proc_name = proc_name
        self.master_name = "Master"
        self.master_pid = 0
        self.reexec_pid = 0
        self.timeout = self.cfg.timeout
        self.worker_class = self.cfg.worker_class
        self.app = None
        self.WORKERS = {}
        self.LISTENERS = []
        self.pidfile = None

    def set_values(self, values):
        self.cfg = Config(values)
        self.log.cfg = self.cfg
        self.timeout = self.cfg.timeout
        self.worker_class = self.cfg.worker_class

    def __repr__(self):
        return "<cgunicorn.hooks.Server pid=%s>" % self.pid


class Worker:
    """What hooks get as `worker` (gunicorn's Worker)."""

    def __init__(self, server, age, ppid):
        self.age = age
        self.pid = "[booting]"
        self.ppid = ppid
        self.cfg = server.cfg
        self.log = server.log
        self.timeout = server.cfg.timeout / 2.0
        self.sockets = list(server.LISTENERS)
        self.app = None
        self.wsgi = None
        self.booted = False
        self.aborted = False
        self.alive = True
        self.nr = 0
        self.max_requests = sys.maxsize
        self.reloader = None

    def __str__(self):
        return "<Worker %s>" % self.pid

    def notify(self):
        _cgunicorn_hooks.worker_notify()


class Request:
    """What pre_request/post_request get as `req`: gunicorn's parsed request
    (method, uri, path, query, fragment, version, headers with upper-case
    names, scheme, remote_addr)."""

    def __init__(self, method, uri, version, headers, scheme, peer):
        self.method = method
        self.uri = uri
        rest, _, self.fragment = uri.partition("#")
        self.path, _, self.query = rest.partition("?")
        if "://" in self.path:  # absolute-form target
            after = self.path.split("://", 1)[1]
            self.path = "/" + after.split("/", 1)[1] if "/" in after else "/"
        self.version = version
        self.headers = [(k.upper(), v) for k, v in headers]
        self.scheme = scheme
        self.remote_addr = peer
        self.peer_addr = peer
        self.body = None
        self.trailers = []

    def should_close(self):
        for name, value in self.headers:
            if name == "CONNECTION":
                v = value.strip().lower()
                if v == "close":
                    return True
                if v == "keep-alive":
                    return False
        return self.version <= (1, 0)


class Response:
    """What post_request gets as `resp`: status, status_code, headers, sent."""

    def __init__(self, status, headers, sent):
        self.status = status
        try:
            self.status_code = int(str(status).split(None, 1)[0]) if status else None
        except ValueError:
            self.status_code = None
        self.headers = list(headers or [])
        self.sent = sent or 0
        self.response_length = self.sent
        self.headers_done = status is not None


def make_request(environ, headers):
    """Builds a Request from the WSGI environ and the request's header list."""
    proto = environ.get("SERVER_PROTOCOL", "HTTP/1.1")
    try:
        major, minor = proto.split("/", 1)[1].split(".", 1)
        version = (int(major), int(minor))
    except (IndexError, ValueError):
        version = (1, 1)
    uri = environ.get("RAW_URI") or environ.get("PATH_INFO", "/")
    peer = (environ.get("REMOTE_ADDR", ""), environ.get("REMOTE_PORT", ""))
    return Request(environ.get("REQUEST_METHOD", "GET"), uri, version, headers,
                   environ.get("wsgi.url_scheme", "http"), peer)


def reopen_access_logs():
    """USR1 in a worker: reopen every access log this process has open."""
    import gc
    mod = sys.modules.get("cgunicorn.accesslog")
    if mod is None:
        return
    for obj in gc.get_referrers(mod.AccessLog):
        if isinstance(obj, mod.AccessLog):
            obj.reopen()


def call(fn, *args):
    """Calls a hook; exceptions propagate to the C caller, which logs them
    the way gunicorn handles an exception in that hook."""
    return fn(*args)


# --- worker side: signals that must interrupt application code -------------

_state = {"server": None, "worker": None, "conf_hooks": None}


def _exit_worker(code):
    worker, server, hooks = _state["worker"], _state["server"], _state["conf_hooks"]
    log = server.log if server is not None else Logger()
    log.info("Worker exiting (pid: %s)", os.getpid())
    fn = hooks.get("worker_exit") if hooks else None
    if fn is not None:
        try:
            fn(server, worker)
        except Exception:
            log.warning("Exception during worker exit:\n%s", traceback.format_exc())
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    os._exit(code)


def _stack_text(frame):
    """Where every thread of this process was, main thread first."""
    parts = []
    if frame is not None:
        parts.append("".join(traceback.format_stack(frame)).rstrip("\n"))
    main = threading.main_thread().ident
    for ident, f in sys._current_frames().items():
        if ident == main:
            continue
        parts.append("Thread %s:\n%s" % (ident, "".join(traceback.format_stack(f)).rstrip("\n")))
    return "\n".join(parts)


def _on_abort(signum, frame):
    worker, server, hooks = _state["worker"], _state["server"], _state["conf_hooks"]
    log = server.log if server is not None else Logger()
    if worker is not None:
        worker.alive = False
        worker.aborted = True
    log.critical("Worker (pid:%s) aborted (SIGABRT); where it was stuck "
                 "(most recent call last):\n%s", os.getpid(), _stack_text(frame))
    fn = hooks.get("worker_abort") if hooks else None
    if fn is not None:
        try:
            fn(worker)
        except Exception:
            log.exception("Exception in worker process")
            _exit_worker(255)
    if _cgunicorn_hooks.abort_request():
        # As gunicorn's sync worker: SystemExit unwinds the stuck request,
        # which is answered 500 ("Error handling request"); post_request
        # runs, then the worker exits.
        raise SystemExit(1)
    _exit_worker(1)


def _on_quit(signum, frame):
    worker, server, hooks = _state["worker"], _state["server"], _state["conf_hooks"]
    log = server.log if server is not None else Logger()
    if worker is not None:
        worker.alive = False
    fn = hooks.get("worker_int") if hooks else None
    if fn is not None:
        try:
            fn(worker)
        except Exception:
            log.exception("Exception in worker process")
            _exit_worker(255)
    if _cgunicorn_hooks.defer_quit():
        return  # the request in hand finishes, then the worker exits
    time.sleep(0.1)
    _exit_worker(0)


def install_worker_signals(server, worker, conf_hooks):
    """In a worker after fork: SIGABRT (the master's timeout), SIGQUIT and
    SIGINT (quick stop) run Python handlers, so they interrupt a request
    stuck in application code, as in gunicorn. conf_hooks: dict of the
    user's worker_int/worker_abort/worker_exit callables (or None)."""
    _state["server"], _state["worker"], _state["conf_hooks"] = server, worker, conf_hooks
    signal.signal(signal.SIGABRT, _on_abort)
    signal.signal(signal.SIGQUIT, _on_quit)
    signal.signal(signal.SIGINT, _on_quit)


def set_worker_hooks(conf_hooks):
    _state["conf_hooks"] = conf_hooks


# --- the reloader (reload = True) --------------------------------------------

class Reloader(threading.Thread):
    """Polls the modification time of every loaded module's source file and
    of `extra_files` once a second; calls `callback(path)` on the first
    change."""

    def __init__(self, extra_files, callback, interval=1.0):
        super().__init__(name="cgunicorn-reloader", daemon=True)
        self.extra_files = set(extra_files or [])
        self.callback = callback
        self.interval = interval

    def files(self):
        out = set(self.extra_files)
        for mod in list(sys.modules.values()):
            path = getattr(mod, "__file__", None)
            if not path:
                continue
            if path.endswith(".pyc"):
                path = path[:-1]
            out.add(path)
        return out

    def run(self):
        mtimes = {}
        while True:
            for path in self.files():
                try:
                    mtime = os.stat(path).st_mtime
                except OSError:
                    continue
                old = mtimes.setdefault(path, mtime)
                if mtime > old:
                    self.callback(path)
                    return
            time.sleep(self.interval)


class InotifyReloader(Reloader):
    """Like Reloader, but woken by inotify on the directories of the watched
    files instead of polling their modification times. New modules imported
    later are picked up at each wake-up (at least once a second)."""

    def run(self):
        import select
        import struct
        import _cgunicorn
        fd = _cgunicorn.inotify_open()
        dirs = {}  # wd -> directory
        watched = set()
        head = struct.Struct("iIII")
        while True:
            files = {os.path.abspath(p) for p in self.files()}
            for d in {os.path.dirname(p) for p in files} - watched:
                watched.add(d)
                try:
                    dirs[_cgunicorn.inotify_watch(fd, d)] = d
                except OSError:
                    pass
            ready, _, _ = select.select([fd], [], [], self.interval)
            if not ready:
                continue
            data = os.read(fd, 65536)
            off = 0
            while off + head.size <= len(data):
                wd, _mask, _cookie, length = head.unpack_from(data, off)
                name = data[off + head.size:off + head.size + length].rstrip(b"\0")
                off += head.size + length
                path = os.path.join(dirs.get(wd, ""), os.fsdecode(name))
                if path in files:
                    self.callback(path)
                    return


def start_reloader(server, worker, extra_files, worker_int, engine="auto"):
    """Starts the reloader in this worker: on a change it logs, runs
    worker_int and stops the worker gracefully (the master replaces it)."""
    import glob
    files = []
    for pattern in extra_files or []:
        files.extend(glob.glob(pattern, recursive=True) or [pattern])

    def changed(path):
        server.log.info("Worker reloading: %s modified", path)
        worker.alive = False
        if worker_int is not None:
            try:
                worker_int(worker)
            except Exception:
                server.log.exception("Exception in worker_int hook")
        os.kill(os.getpid(), signal.SIGTERM)

    server.log.warning("Reloader is on. Use in development only!")
    # gunicorn's "auto" takes inotify when it can: ours is built in (Linux).
    cls = Reloader if engine == "poll" else InotifyReloader
    worker.reloader = cls(files, changed)
    worker.reloader.start()
    return worker.reloader
