"""`logger_class`: the error and access logs through a user's subclass of
gunicorn.glogging.Logger.

When logger_class names a class other than gunicorn's own Logger, the
master makes one instance of it (`cls(cfg)`, which runs its setup()) before
forking, so every process has it. The C error log hands each line to
emit(), which calls the instance's debug()/info()/warning()/error()/
critical(); each request's access line calls its access(resp, req, environ,
request_time) with objects shaped as gunicorn's (resp.status, resp.headers,
resp.sent; req.headers; a timedelta); USR1 calls reopen_files(). Without
logger_class none of this runs: the logs are written as before.
"""
import importlib

DEFAULT = ("gunicorn.glogging.Logger", "glogging.Logger")

# cg_log's levels (cg_log.h) to the Logger's methods; 5 is an error with a
# traceback, which is already in the text.
_METHODS = ("debug", "info", "warning", "error", "critical", "error")

logger = None


class Cfg:
    """The settings as gunicorn's Config presents them to a Logger:
    attributes named as the settings, proc_name falling back to the
    default one, user/group as numbers."""

    def __init__(self, values):
        self._values = dict(values)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        values = self.__dict__["_values"]
        if name == "proc_name":
            return values.get("proc_name") or values.get("default_proc_name") or "gunicorn"
        if name in ("user", "group"):
            v = values.get(name)
            if isinstance(v, int):
                return v
            import os
            return os.geteuid() if name == "user" else os.getegid()
        if name in values:
            return values[name]
        raise AttributeError("no setting named %r" % name)


def _named(values):
    cls = values.get("logger_class")
    if cls is None:
        return None
    if isinstance(cls, str):
        return None if cls in DEFAULT else cls
    from gunicorn import glogging
    return None if cls is glogging.Logger else cls


def wanted(values):
    return _named(values) is not None


def load(spec):
    """The class a logger_class value names: a class, "module.Class" or
    "module:Class" (gunicorn's load_class, with gunicorn.glogging as the
    default module)."""
    if not isinstance(spec, str):
        return spec
    if ":" in spec:
        module, _, name = spec.partition(":")
    elif "." in spec:
        module, _, name = spec.rpartition(".")
    else:
        module, name = "gunicorn.glogging", spec
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise RuntimeError("logger_class %r: cannot load it: %s" % (spec, exc)) from exc


def setup(values):
    """Makes (or, on HUP, sets up again) the instance. Returns the error
    logger's effective level (logging's number)."""
    global logger
    cls = load(_named(values))
    cfg = Cfg(values)
    if logger is not None and type(logger) is cls:
        logger.setup(cfg)
    else:
        logger = cls(cfg)
    error_log = getattr(logger, "error_log", None)
    return error_log.getEffectiveLevel() if error_log is not None else 20


def emit(level, text):
    getattr(logger, _METHODS[level])(text)


def reopen():
    logger.reopen_files()


class _Response:
    """What gunicorn's Logger.atoms() reads of a response."""

    def __init__(self, status, headers, sent):
        self.status = status
        self.status_code = int(status.split(None, 1)[0]) if isinstance(status, str) else status
        self.headers = headers
        self.sent = sent
        self.response_length = sent


class _Request:
    """What atoms() reads of a request: (NAME, value) headers, and the
    request line's parts for loggers that use them."""

    def __init__(self, environ, headers):
        self.headers = headers
        self.method = environ.get("REQUEST_METHOD")
        self.uri = environ.get("RAW_URI")
        self.path = environ.get("PATH_INFO")
        self.query = environ.get("QUERY_STRING")
        proto = environ.get("SERVER_PROTOCOL", "HTTP/1.1")
        try:
            self.version = tuple(int(x) for x in proto.split("/", 1)[1].split("."))
        except (IndexError, ValueError):
            self.version = (1, 1)


class AccessLog:
    """The worker's access-log object (the interface of
    cgunicorn.accesslog.AccessLog) calling the instance's access()."""

    def __init__(self, fmt=None):
        self.fmt = fmt

    def reopen(self):
        pass  # reopen() above reopens the Logger's files

    def log(self, environ, status, resp_headers, sent, req_headers, duration_us):
        secs, usecs = divmod(int(duration_us), 1000000)
        resp = _Response(status if status is not None else "500 Internal Server Error",
                         resp_headers, sent)
        req = _Request(environ, req_headers)
        try:
            import datetime  # only with a logger_class: not loaded otherwise
            logger.access(resp, req, environ, datetime.timedelta(seconds=secs,
                                                                  microseconds=usecs))
        except Exception:  # a logger's failure must not break serving
            import traceback
            logger.error("access log failed:\n%s" % traceback.format_exc())
