"""DirtyApp, the base class of dirty applications, and the helpers that
parse ``dirty_apps`` entries and load app classes (used by dirty workers).

A dirty app lives in a dirty worker process for the worker's whole life:
``__init__()`` then ``init()`` once at start-up, ``__call__(action, *args,
**kwargs)`` for every call an HTTP worker makes, ``close()`` at shutdown.
An action that returns a generator (sync or async) is streamed to the caller
chunk by chunk (``client.stream()`` / ``client.stream_async()``).
"""
import importlib
import sys

from .errors import DirtyAppError, DirtyAppNotFoundError

__all__ = [
    "DirtyApp",
    "parse_dirty_app_spec",
    "load_dirty_app",
    "load_dirty_apps",
    "get_app_workers_attribute",
]


class DirtyApp:
    """Base class for dirty applications.

    Instance state persists across calls: load models or open pools in
    ``init()`` and reuse them in actions. With ``dirty_threads > 1`` several
    calls may run at once in one worker, so actions must be thread-safe.

    ``workers`` (class attribute): how many dirty workers load this app;
    None (the default) means all of them. ``"module:Class:N"`` in
    ``dirty_apps`` overrides it.
    """

    workers = None

    def init(self):
        """Called once in the dirty worker after the instance is created
        (after fork): load heavy resources here."""

    def __call__(self, action, *args, **kwargs):
        """Runs the public method named ``action`` with the call's arguments.
        Unknown actions and names starting with ``_`` raise ValueError."""
        if not isinstance(action, str) or action.startswith("_"):
            raise ValueError("Unknown action: %s" % (action,))
        method = getattr(self, action, None)
        if method is None or not callable(method):
            raise ValueError("Unknown action: %s" % (action,))
        return method(*args, **kwargs)

    def close(self):
        """Called once when the dirty worker shuts down: release resources."""


def _bad_spec(spec, detail=None):
    text = ("Invalid import path format: %s. Expected 'module.path:ClassName' or "
            "'module.path:ClassName:N'" % (spec,))
    return DirtyAppError(detail or text, app_path=spec)


def parse_dirty_app_spec(spec):
    """Splits a ``dirty_apps`` entry into ``(import_path, worker_count)``:
    ``"pkg.mod:App"`` gives ``("pkg.mod:App", None)`` (every worker loads it),
    ``"pkg.mod:App:2"`` gives ``("pkg.mod:App", 2)``. Raises DirtyAppError
    for any other shape or a count below 1."""
    parts = spec.split(":") if isinstance(spec, str) else []
    if len(parts) == 2 and all(parts):
        return spec, None
    if len(parts) == 3 and parts[0] and parts[1]:
        count_text = parts[2]
        try:
            count = int(count_text)
        except ValueError:
            raise _bad_spec(spec, "Invalid worker count in spec: %s. Expected integer, got '%s'"
                            % (spec, count_text)) from None
        if count < 1:
            raise _bad_spec(spec, "Invalid worker count in spec: %s. Worker count must be "
                            ">= 1, got %d" % (spec, count))
        return "%s:%s" % (parts[0], parts[1]), count
    raise _bad_spec(spec)


def _import_class(import_path):
    if not isinstance(import_path, str) or ":" not in import_path:
        raise DirtyAppError("Invalid import path format: %s. Expected 'module.path:ClassName'"
                            % (import_path,), app_path=import_path)
    module_name, class_name = import_path.rsplit(":", 1)
    try:
        module = sys.modules.get(module_name) or importlib.import_module(module_name)
    except ImportError as e:
        raise DirtyAppNotFoundError(import_path) from e
    try:
        cls = getattr(module, class_name)
    except AttributeError:
        raise DirtyAppNotFoundError(import_path) from None
    if not isinstance(cls, type):
        raise DirtyAppError("%s is not a class" % (import_path,), app_path=import_path)
    return cls


def load_dirty_app(import_path):
    """Imports ``module:Class`` and returns a new instance. Raises
    DirtyAppNotFoundError when the module or class is missing, DirtyAppError
    when it is not a class, cannot be instantiated, or lacks init/__call__/
    close."""
    cls = _import_class(import_path)
    try:
        app = cls()
    except Exception as e:
        raise DirtyAppError("Failed to instantiate %s: %s" % (import_path, e),
                            app_path=import_path) from e
    for name in ("init", "__call__", "close"):
        if not callable(getattr(app, name, None)):
            raise DirtyAppError("%s is missing required method: %s" % (import_path, name),
                                app_path=import_path)
    return app


def load_dirty_apps(import_paths):
    """Loads each import path; returns ``{import_path: instance}``."""
    return {path: load_dirty_app(path) for path in import_paths}


def get_app_workers_attribute(import_path):
    """The ``workers`` class attribute of ``module:Class`` (None when unset),
    read without instantiating the class."""
    return getattr(_import_class(import_path), "workers", None)
