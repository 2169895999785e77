"""gunicorn.glogging as cgunicorn provides it: the `Logger` class a
`logger_class` setting subclasses.

cgunicorn writes its own logs from C; this class exists for applications
that name a subclass of it (a JSON access logger, extra handlers, a
different timestamp). When `logger_class` names such a class, every
process routes its error-log lines through the instance's debug() / info()
/ warning() / error() / critical() and each request through its access()
(cgunicorn.loggerclass). The methods and attributes below behave as
gunicorn's: setup() puts handlers for `errorlog` and `accesslog` on the
"gunicorn.error" and "gunicorn.access" loggers (then applies logconfig,
logconfig_dict or logconfig_json), access() formats `access_log_format`
with the atoms() mapping wrapped in SafeAtoms, reopen_files() reopens
file handlers (USR1).
"""
import fcntl
import json
import logging
import logging.config
import logging.handlers
import os
import socket
import sys
import threading
import time
import traceback

from cgunicorn import accesslog

SYSLOG_FACILITIES = {
    "auth": 4, "authpriv": 10, "cron": 9, "daemon": 3, "ftp": 11, "kern": 0, "lpr": 6,
    "mail": 2, "news": 7, "security": 4, "syslog": 5, "user": 1, "uucp": 8,
    "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21,
    "local6": 22, "local7": 23,
}

CONFIG_DEFAULTS = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": ["console"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": True,
                           "qualname": "gunicorn.error"},
        "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": True,
                            "qualname": "gunicorn.access"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "generic",
                    "stream": "ext://sys.stdout"},
        "error_console": {"class": "logging.StreamHandler", "formatter": "generic",
                          "stream": "ext://sys.stderr"},
    },
    "formatters": {
        "generic": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
                    "datefmt": "[%Y-%m-%d %H:%M:%S %z]", "class": "logging.Formatter"},
    },
}


def loggers():
    """Every logger that exists, the root first."""
    root = logging.root
    return [root] + [logging.getLogger(name) for name in root.manager.loggerDict]


SafeAtoms = accesslog.SafeAtoms


def parse_syslog_address(addr):
    """(socket type, address) for SysLogHandler from a syslog_addr value."""
    if addr.startswith("unix://"):
        path, _, kind = addr[len("unix://"):].partition("#")
        return (socket.SOCK_DGRAM if kind == "dgram" else None), path
    if addr.startswith("udp://"):
        rest, kind = addr[len("udp://"):], socket.SOCK_DGRAM
    elif addr.startswith("tcp://"):
        rest, kind = addr[len("tcp://"):], socket.SOCK_STREAM
    else:
        raise RuntimeError("invalid syslog address")
    if rest.startswith("[") and "]" in rest:
        host, _, tail = rest[1:].partition("]")
    elif ":" in rest:
        host, _, tail = rest.partition(":")
        tail = ":" + tail
    else:
        host, tail = rest, ""
    host = host.lower() or "localhost"
    port = 514
    if tail.startswith(":"):
        if not tail[1:].isdigit():
            raise RuntimeError("%r is not a valid port number." % tail[1:])
        port = int(tail[1:])
    return kind, (host, port)


class Logger:
    LOG_LEVELS = {
        "critical": logging.CRITICAL,
        "error": logging.ERROR,
        "warning": logging.WARNING,
        "info": logging.INFO,
        "debug": logging.DEBUG,
    }
    loglevel = logging.INFO

    error_fmt = r"%(asctime)s [%(process)d] [%(levelname)s] %(message)s"
    datefmt = r"[%Y-%m-%d %H:%M:%S %z]"
    access_fmt = "%(message)s"
    syslog_fmt = "[%(process)d] %(message)s"

    atoms_wrapper_class = SafeAtoms

    def __init__(self, cfg):
        self.error_log = logging.getLogger("gunicorn.error")
        self.error_log.propagate = False
        self.access_log = logging.getLogger("gunicorn.access")
        self.access_log.propagate = False
        self.error_handlers = []
        self.access_handlers = []
        self.logfile = None
        self.lock = threading.Lock()
        self.cfg = cfg
        self.setup(cfg)

    # -- set-up ---------------------------------------------------------

    def setup(self, cfg):
        self.cfg = cfg
        self.loglevel = self.LOG_LEVELS.get(str(cfg.loglevel).lower(), logging.INFO)
        self.error_log.setLevel(self.loglevel)
        self.access_log.setLevel(logging.INFO)
        for log in (self.error_log, self.access_log):
            for h in list(log.handlers):
                if getattr(h, "_gunicorn", False):
                    log.removeHandler(h)
        # cgunicorn's C side has already sent stdout/stderr to the error
        # log when capture_output is set; nothing to redirect here.
        self._set_handler(self.error_log, cfg.errorlog,
                          logging.Formatter(self.error_fmt, self.datefmt))
        if cfg.accesslog is not None:
            self._set_handler(self.access_log, cfg.accesslog,
                              fmt=logging.Formatter(self.access_fmt), stream=sys.stdout)
        if getattr(cfg, "syslog", False):
            self._set_syslog_handler(self.error_log, cfg, self.syslog_fmt, "error")
            if not cfg.disable_redirect_access_to_syslog:
                self._set_syslog_handler(self.access_log, cfg, self.syslog_fmt, "access")
        if cfg.logconfig_dict:
            config = dict(CONFIG_DEFAULTS)
            config.update(cfg.logconfig_dict)
            self._dict_config(config)
        elif cfg.logconfig_json:
            config = dict(CONFIG_DEFAULTS)
            if os.path.exists(cfg.logconfig_json):
                try:
                    with open(cfg.logconfig_json) as f:
                        config.update(json.load(f))
                except ValueError as exc:
                    raise RuntimeError(str(exc)) from exc
                self._dict_config(config)
        elif cfg.logconfig:
            if not os.path.exists(cfg.logconfig):
                raise RuntimeError("Error: log config '%s' not found" % cfg.logconfig)
            defaults = dict(CONFIG_DEFAULTS)
            defaults["__file__"] = cfg.logconfig
            defaults["here"] = os.path.dirname(cfg.logconfig)
            logging.config.fileConfig(cfg.logconfig, defaults=defaults,
                                      disable_existing_loggers=False)

    @staticmethod
    def _dict_config(config):
        try:
            logging.config.dictConfig(config)
        except (AttributeError, ImportError, ValueError, TypeError) as exc:
            raise RuntimeError(str(exc)) from exc

    # -- the error log ----------------------------------------------------

    def critical(self, msg, *args, **kwargs):
        self.error_log.critical(msg, *args, **kwargs)

    def error(self, msg, *args, **kwargs):
        self.error_log.error(msg, *args, **kwargs)

    def warning(self, msg, *args, **kwargs):
        self.error_log.warning(msg, *args, **kwargs)

    def info(self, msg, *args, **kwargs):
        self.error_log.info(msg, *args, **kwargs)

    def debug(self, msg, *args, **kwargs):
        self.error_log.debug(msg, *args, **kwargs)

    def exception(self, msg, *args, **kwargs):
        self.error_log.exception(msg, *args, **kwargs)

    def log(self, lvl, msg, *args, **kwargs):
        if isinstance(lvl, str):
            lvl = self.LOG_LEVELS.get(lvl.lower(), logging.INFO)
        self.error_log.log(lvl, msg, *args, **kwargs)

    # -- the access log ---------------------------------------------------

    def _get_user(self, environ):
        return accesslog._basic_user(environ)

    def now(self):
        """The time in Apache's Common Log Format."""
        return time.strftime("[%d/%b/%Y:%H:%M:%S %z]")

    def atoms(self, resp, req, environ, request_time):
        """The mapping access_log_format is applied to."""
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        sent = getattr(resp, "sent", None)
        secs, usecs = request_time.seconds, request_time.microseconds
        req_headers = req.headers if hasattr(req, "headers") else req
        if hasattr(req_headers, "items"):
            req_headers = req_headers.items()
        resp_headers = resp.headers
        if hasattr(resp_headers, "items"):
            resp_headers = resp_headers.items()
        atoms = accesslog.build_atoms(environ, status, sent, secs, usecs,
                                      self._get_user(environ), self.now(), req_headers,
                                      resp_headers)
        return atoms

    @property
    def access_log_enabled(self):
        cfg = self.cfg
        return bool(cfg.accesslog or cfg.logconfig or cfg.logconfig_dict or cfg.logconfig_json
                    or (cfg.syslog and not cfg.disable_redirect_access_to_syslog))

    def access(self, resp, req, environ, request_time):
        """One access line: access_log_format % SafeAtoms(atoms(...))."""
        if not self.access_log_enabled:
            return
        safe_atoms = self.atoms_wrapper_class(self.atoms(resp, req, environ, request_time))
        try:
            self.access_log.info(self.cfg.access_log_format, safe_atoms)
        except Exception:
            self.error(traceback.format_exc())

    # -- files --------------------------------------------------------------

    def reopen_files(self):
        for log in loggers():
            for handler in log.handlers:
                if isinstance(handler, logging.FileHandler):
                    handler.acquire()
                    try:
                        if handler.stream:
                            handler.close()
                            handler.stream = handler._open()
                    finally:
                        handler.release()

    def close_on_exec(self):
        for log in loggers():
            for handler in log.handlers:
                if isinstance(handler, logging.FileHandler):
                    handler.acquire()
                    try:
                        if handler.stream:
                            fd = handler.stream.fileno()
                            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
                            fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
                    finally:
                        handler.release()

    def _get_gunicorn_handler(self, log):
        for h in log.handlers:
            if getattr(h, "_gunicorn", False):
                return h
        return None

    def _set_handler(self, log, output, fmt, stream=None):
        h = self._get_gunicorn_handler(log)
        if h:
            log.handlers.remove(h)
        if output is None:
            return
        if output == "-":
            h = logging.StreamHandler(stream)
        else:
            h = logging.FileHandler(output)
            try:
                os.chown(h.baseFilename, self.cfg.user, self.cfg.group)
            except (OSError, TypeError):
                pass
        h.setFormatter(fmt)
        h._gunicorn = True
        log.addHandler(h)

    def _set_syslog_handler(self, log, cfg, fmt, name):
        prefix = cfg.syslog_prefix or cfg.proc_name.replace(":", ".")
        prefix = "gunicorn.%s.%s" % (prefix, name)
        formatter = logging.Formatter(r"%s: %s" % (prefix, fmt))
        try:
            facility = SYSLOG_FACILITIES[cfg.syslog_facility.lower()]
        except KeyError as exc:
            raise RuntimeError("unknown facility name") from exc
        socktype, addr = parse_syslog_address(cfg.syslog_addr)
        h = logging.handlers.SysLogHandler(address=addr, facility=facility, socktype=socktype)
        h.setFormatter(formatter)
        h._gunicorn = True
        log.addHandler(h)
