"""Worker classes named by import path: which cgunicorn worker serves them.

A gunicorn configuration may name its own worker class, e.g.
``worker_class = "myproject.workers.Worker"`` where the class subclasses
``uvicorn.workers.UvicornWorker`` only to set ``CONFIG_KWARGS``, or one of
gunicorn's own classes. cgunicorn's workers are written in C, so such a class
is never instantiated: it is imported in the master (as gunicorn does) and
read. A subclass that only carries settings is served by the matching native
worker with those settings; a subclass that changes behaviour (overrides a
method) is refused naming what it overrides, since that code would never run.

resolve() returns (worker, settings, notes, root_in_path): worker is "sync",
"gthread", "asgi" or "gevent"; settings maps setting names to values taken from
CONFIG_KWARGS; notes are lines for the master to log once; root_in_path is
true for Uvicorn's classes, whose scope["path"] includes the root_path. Problems raise ValueError with a
message that names the class, the method or key, and the fix.
"""
import importlib
import os
import sys

# Classes whose behaviour cgunicorn's native workers provide, by
# "module.qualname"; a class found in a user class's MRO stops the scan for
# overrides (everything from there on is the server's own code).
NATIVE = {
    "gunicorn.workers.sync.SyncWorker": ("sync", None),
    "gunicorn.workers.gthread.ThreadWorker": ("gthread", None),
    "gunicorn.workers.gasgi.ASGIWorker": ("asgi", None),
    "gunicorn.workers.ggevent.GeventWorker": ("gevent", None),
    "gunicorn.workers.ggevent.GeventPyWSGIWorker": ("gevent", None),
    "uvicorn.workers.UvicornWorker": ("asgi", "uvicorn"),
    "uvicorn.workers.UvicornH11Worker": ("asgi", "uvicorn"),
    "uvicorn_worker.UvicornWorker": ("asgi", "uvicorn"),
    "uvicorn_worker.UvicornH11Worker": ("asgi", "uvicorn"),
}

# Worker classes cgunicorn does not serve: gunicorn's short names, and
# module prefixes (ending in a dot), with the reason.
_GEVENT = ("classes of the gevent package are not gunicorn worker classes; "
           "use -k gevent")
_EVENTLET = "eventlet is retired upstream; use gthread (-k gthread --threads N)"
_TORNADO = ("the tornado worker is not served by cgunicorn; run the app as ASGI "
            "(-k asgi) or as a WSGI app under gthread")
_MEINHELD = ("meinheld is retired (unmaintained, no Python 3.10+); use gthread "
             "(-k gthread --threads N)")
REFUSED = (
    ("gevent.", _GEVENT),
    ("eventlet", _EVENTLET), ("gunicorn.workers.geventlet.", _EVENTLET),
    ("eventlet.", _EVENTLET),
    ("tornado", _TORNADO), ("gunicorn.workers.gtornado.", _TORNADO), ("tornado.", _TORNADO),
    ("meinheld.", _MEINHELD), ("egg:meinheld", _MEINHELD),
)

# Class attributes that are Python's own bookkeeping, not worker behaviour.
_BOOKKEEPING = frozenset((
    "__module__", "__qualname__", "__doc__", "__dict__", "__weakref__",
    "__annotations__", "__firstlineno__", "__static_attributes__",
    "__orig_bases__", "__parameters__", "__slots__", "__classcell__",
))

_DEADLINE_HINT = {
    "handle_request": " (a per-request time limit wrapped around handle_request is "
                      "not available yet in cgunicorn; the worker --timeout still "
                      "restarts a worker stuck in a request)",
}


_SERVED = ("cgunicorn serves sync, gthread, asgi and gevent, and "
           "uvicorn.workers.UvicornWorker on asgi")


def _refusal(name):
    why = _refusal_reason(name)
    return None if why is None else "%s (%s)" % (why, _SERVED)


def _refusal_reason(name):
    for prefix, why in REFUSED:
        if name == prefix or (prefix[-1] in ".#" and name.startswith(prefix)) or \
                (prefix.startswith("egg:") and name.startswith(prefix)):
            return why
    return None


def _class_name(cls):
    return "%s.%s" % (cls.__module__, cls.__qualname__)


def _import(name, pythonpath):
    for p in reversed((pythonpath or "").split(",")):
        p = os.path.abspath(p) if p else ""
        if p and p not in sys.path:
            sys.path.insert(0, p)
    if name.startswith("egg:"):
        raise ValueError("worker_class %r: entry-point names (egg:) are not supported; "
                         "name the class by import path, e.g. myproject.workers.Worker"
                         % name)
    mod, _, attr = name.rpartition(".")
    if not mod:
        raise ValueError("worker_class %r is not a worker class cgunicorn knows; use sync, "
                         "gthread or asgi, or an import path such as "
                         "myproject.workers.Worker" % name)
    try:
        module = importlib.import_module(mod)
    except ImportError as exc:
        raise ValueError("worker_class %r: cannot import module %r: %s; check the name "
                         "and pythonpath" % (name, mod, exc)) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError("worker_class %r: module %r has no attribute %r"
                         % (name, mod, attr)) from None


def _native_base(cls):
    """The first class of cls's MRO that cgunicorn serves natively, and the
    classes before it (the user's own)."""
    own = []
    for c in cls.__mro__:
        key = _class_name(c)
        if key in NATIVE:
            return key, own
        why = _refusal(key)
        if why is not None:
            raise ValueError("worker_class %s subclasses %s: %s" % (_class_name(cls), key, why))
        own.append(c)
    return None, own


def _where(cls, c):
    return "" if c is cls else " (in %s)" % _class_name(c)


def _overrides(cls, own, kind):
    allowed = {"CONFIG_KWARGS"} if kind == "uvicorn" else set()
    for c in own:
        for attr, value in vars(c).items():
            if attr in _BOOKKEEPING or attr in allowed:
                continue
            if callable(value) or isinstance(value, (staticmethod, classmethod, property)):
                raise ValueError(
                    "worker_class %s overrides %s()%s: cgunicorn's workers are native and "
                    "would never call it%s; remove the override or move the code to a "
                    "server hook (post_worker_init, pre_request, post_request)"
                    % (_class_name(cls), attr, _where(cls, c), _DEADLINE_HINT.get(attr, "")))
            raise ValueError(
                "worker_class %s sets the class attribute %s%s, which has no meaning in "
                "cgunicorn; remove it or use the matching setting"
                % (_class_name(cls), attr, _where(cls, c)))


def _as_int(key, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("CONFIG_KWARGS[%r] = %r: expected a number" % (key, value))
    return int(value)


def _uvicorn_settings(cls):
    """Maps a Uvicorn worker's CONFIG_KWARGS onto cgunicorn settings."""
    kwargs = getattr(cls, "CONFIG_KWARGS", None) or {}
    if not isinstance(kwargs, dict):
        raise ValueError("worker_class %s: CONFIG_KWARGS must be a dict, not %s"
                         % (_class_name(cls), type(kwargs).__name__))
    settings = {}
    notes = []
    direct = {
        "root_path": "root_path",
        "lifespan": "asgi_lifespan",
        "loop": "asgi_loop",
        "forwarded_allow_ips": "forwarded_allow_ips",
        "ws_max_size": "websocket_max_message_size",
    }
    numeric = {
        "timeout_keep_alive": "keepalive",
        "limit_concurrency": "worker_connections",
        "limit_max_requests": "max_requests",
        "backlog": "backlog",
        "timeout_graceful_shutdown": "graceful_timeout",
    }
    # Values that describe what cgunicorn does anyway.
    same = {
        "interface": ("auto", "asgi3"),
        "proxy_headers": (True,),
        "server_header": (True,),
        "date_header": (True,),
        "access_log": (True,),
        "factory": (False,),
        "reload": (False,),
        "log_config": (None,),
        "ws_per_message_deflate": (False,),
        "ws_ping_interval": (None,),
        "ws_ping_timeout": (None,),
    }
    for key, value in kwargs.items():
        where = "worker_class %s: CONFIG_KWARGS[%r] = %r" % (_class_name(cls), key, value)
        if key in direct:
            if key == "loop" and value == "none":
                value = "asyncio"
            settings[direct[key]] = value
        elif key in numeric:
            if value is not None:
                settings[numeric[key]] = _as_int(key, value)
        elif key in ("http", "ws"):
            if key == "ws" and value == "none":
                raise ValueError("%s: cgunicorn cannot turn WebSocket support off; every "
                                 "upgrade request reaches the app. Remove the key." % where)
            if value != "auto":
                notes.append("%s does not apply: cgunicorn parses HTTP and WebSocket "
                             "frames in C" % where)
        elif key == "proxy_headers" and value is False:
            settings["forwarded_allow_ips"] = ""
        elif key in ("ws_ping_interval", "ws_ping_timeout") and value is not None:
            raise ValueError("%s: cgunicorn's WebSocket does not send pings yet (not "
                             "implemented); set it to None or remove the key" % where)
        elif key in same:
            if value not in same[key]:
                raise ValueError("%s is not supported by cgunicorn (only %s); remove the key"
                                 % (where, " or ".join(repr(v) for v in same[key])))
        else:
            raise ValueError("%s has no meaning in cgunicorn; remove the key or set the "
                             "matching cgunicorn setting instead (cgunicorn --help lists "
                             "them)" % where)
    return settings, notes


def resolve(value, pythonpath=None):
    """value: the worker_class setting (an import path or a class)."""
    if isinstance(value, str):
        why = _refusal(value)
        if why is not None:
            raise ValueError("worker_class %r: %s" % (value, why))
        cls = _import(value, pythonpath)
    else:
        cls = value
    if not isinstance(cls, type):
        raise ValueError("worker_class %r is not a class" % (value,))
    base, own = _native_base(cls)
    if base is None:
        raise ValueError("worker_class %s is not a subclass of a worker cgunicorn serves; "
                         "use sync, gthread or asgi, or subclass %s"
                         % (_class_name(cls), ", ".join(sorted(NATIVE))))
    worker, kind = NATIVE[base]
    _overrides(cls, own, kind)
    settings, notes = _uvicorn_settings(cls) if kind == "uvicorn" else ({}, [])
    return worker, settings, notes, kind == "uvicorn"
