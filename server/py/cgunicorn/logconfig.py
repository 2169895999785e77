"""Logging through Python's `logging`, for `logconfig`, `logconfig_dict`
and `logconfig_json`.

Without those settings cgunicorn writes its error and access logs from C.
With one of them, every process routes its log lines through the loggers
gunicorn uses, "gunicorn.error" and "gunicorn.access", set up the way
gunicorn's Logger.setup() sets them up: its own handlers for `errorlog`
and `accesslog` first, then the user's configuration applied over gunicorn's
defaults (dictConfig, or fileConfig for an .ini file). Handlers, formatters
and filters of the user's configuration then see the same records they see
under gunicorn: the error log's message text, and for the access log the
`access_log_format` string with the atoms mapping as its argument.
"""
import logging
import os
import sys

from cgunicorn import accesslog, loggerclass

# The C side's levels (cg_log.h), then one for an exception's traceback.
_LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
_NAMED = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL}
ERROR_FMT = "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"
DATEFMT = "[%Y-%m-%d %H:%M:%S %z]"
ACCESS_FMT = "%(message)s"


def _defaults():
    """gunicorn's CONFIG_DEFAULTS: what a user's configuration is laid
    over (a shallow update, as gunicorn does)."""
    generic = {"format": ERROR_FMT, "datefmt": DATEFMT, "class": "logging.Formatter"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": "INFO", "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"],
                               "propagate": True, "qualname": "gunicorn.error"},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"],
                                "propagate": True, "qualname": "gunicorn.access"},
        },
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "generic",
                        "stream": "ext://sys.stdout"},
            "error_console": {"class": "logging.StreamHandler", "formatter": "generic",
                              "stream": "ext://sys.stderr"},
        },
        "formatters": {"generic": generic},
    }


error_log = logging.getLogger("gunicorn.error")
access_log = logging.getLogger("gunicorn.access")
_active = False
_custom = False  # logger_class names a user's Logger: cgunicorn.loggerclass serves


def wanted(values):
    return bool(values.get("logconfig") or values.get("logconfig_dict")
                or values.get("logconfig_json") or loggerclass.wanted(values))


def _own_handler(log, output, fmt, stream):
    """gunicorn's _set_handler: stderr/stdout for "-", else a file."""
    for h in list(log.handlers):
        if getattr(h, "_cgunicorn", False):
            log.removeHandler(h)
    if output is None:
        return
    if output == "-":
        h = logging.StreamHandler(stream)
    else:
        parent = os.path.dirname(output)
        if parent and not os.path.isdir(parent):
            os.makedirs(parent, exist_ok=True)
        h = logging.FileHandler(output)
    h.setFormatter(fmt)
    h._cgunicorn = True
    log.addHandler(h)


def setup(values):
    """Sets the loggers up from the resolved settings (a dict). Raises
    RuntimeError naming the problem when the configuration is bad. Returns
    the effective level of "gunicorn.error" (logging's number)."""
    global _active, _custom
    _custom = loggerclass.wanted(values)
    if _custom:
        _active = True
        return loggerclass.setup(values)
    error_log.propagate = False
    access_log.propagate = False
    error_log.setLevel(_NAMED.get(str(values.get("loglevel") or "info").lower(), logging.INFO))
    access_log.setLevel(logging.INFO)
    _own_handler(error_log, values.get("errorlog") or "-", logging.Formatter(ERROR_FMT, DATEFMT),
                 sys.stderr)
    _own_handler(access_log, values.get("accesslog"), logging.Formatter(ACCESS_FMT), sys.stdout)
    if values.get("syslog"):  # gunicorn adds its syslog handlers before the user's config
        from gunicorn import glogging
        log = glogging.Logger.__new__(glogging.Logger)
        cfg = loggerclass.Cfg(values)
        for target, name in ((error_log, "error"), (access_log, "access")):
            if name == "access" and values.get("disable_redirect_access_to_syslog"):
                continue
            glogging.Logger._set_syslog_handler(log, target, cfg, glogging.Logger.syslog_fmt,
                                                name)
            target.handlers[-1]._cgunicorn = True
    if values.get("logconfig_dict"):
        config = _defaults()
        config.update(values["logconfig_dict"])
        _dict_config(config, "logconfig_dict")
    elif values.get("logconfig_json"):
        path = values["logconfig_json"]
        config = _defaults()
        if os.path.exists(path):
            try:
                with open(path) as f:
                    import json  # only for logconfig_json
                    config.update(json.load(f))
            except (OSError, ValueError) as exc:
                raise RuntimeError("logconfig_json %r: %s" % (path, exc)) from exc
            _dict_config(config, "logconfig_json %r" % path)
    elif values.get("logconfig"):
        path = values["logconfig"]
        if not os.path.exists(path):
            raise RuntimeError("Error: log config '%s' not found" % path)
        defaults = {k: str(v) for k, v in _defaults().items()}
        defaults["__file__"] = path
        defaults["here"] = os.path.dirname(path)
        # imported here: it pulls in logging.handlers, socketserver, pickle
        from logging import config as logging_config
        try:
            logging_config.fileConfig(path, defaults=defaults, disable_existing_loggers=False)
        except Exception as exc:
            raise RuntimeError("logconfig %r: %s: %s" % (path, type(exc).__name__, exc)) from exc
    _active = True
    return error_log.getEffectiveLevel()


def _dict_config(config, what):
    from logging import config as logging_config  # only when configured (memory)
    try:
        logging_config.dictConfig(config)
    except (AttributeError, ImportError, ValueError, TypeError) as exc:
        raise RuntimeError("%s: %s" % (what, exc)) from exc


def emit(level, text):
    """One error-log line from the C side (level: cg_log's 0..4, 5 for an
    error that carries a traceback)."""
    error_log.log(_LEVELS[level] if level < 5 else logging.ERROR, text)


def reopen():
    """USR1: reopen the file handlers, as gunicorn's reopen_files does."""
    if _custom:
        return loggerclass.reopen()
    for name in [None] + list(logging.root.manager.loggerDict):
        log = logging.getLogger(name)
        for h in getattr(log, "handlers", ()):
            if isinstance(h, logging.FileHandler):
                h.acquire()
                try:
                    if h.stream:
                        h.close()
                        h.stream = h._open()
                finally:
                    h.release()


class AccessLog(accesslog.AccessLog):
    """The access log through the "gunicorn.access" logger: the format
    string with the atoms mapping as its argument, as gunicorn logs it."""

    def __new__(cls, fmt):
        if _custom:  # the user's Logger.access() serves each request
            return loggerclass.AccessLog(fmt)
        return super().__new__(cls)

    def __init__(self, fmt):
        self.fmt = fmt

    def reopen(self):
        pass  # the handlers are reopened by reopen()

    def write(self, atoms):
        try:
            access_log.info(self.fmt, atoms)
        except Exception as exc:  # a handler's failure must not break serving
            error_log.error("access log failed: %r", exc)
