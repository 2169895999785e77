"""Exceptions of the dirty worker pool, with gunicorn's names, hierarchy and
attributes, plus the conversion to and from the ERROR message's
``{"error": {"type": ..., "message": ..., ...}}`` dict (docs/dirty-protocol.md).
"""

__all__ = [
    "DirtyError",
    "DirtyTimeoutError",
    "DirtyConnectionError",
    "DirtyWorkerError",
    "DirtyAppError",
    "DirtyAppNotFoundError",
    "DirtyNoWorkersAvailableError",
    "DirtyBusyError",
    "DirtyProtocolError",
    "DirtySerializationError",
    "error_to_wire",
    "error_from_wire",
]


class DirtyError(Exception):
    """Base class of every dirty-pool error. ``message`` is the text,
    ``details`` a dict of extra facts (app_path, timeout, ...)."""

    def __init__(self, message, details=None):
        self.message = message
        self.details = details or {}
        super().__init__(message)

    def __str__(self):
        if self.details:
            return "%s: %s" % (self.message, self.details)
        return self.message

    def to_dict(self):
        """The error as gunicorn serialises it: error_type, message, details."""
        return {
            "error_type": type(self).__name__,
            "message": self.message,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, data):
        """Rebuilds an error from ``to_dict()`` output or from the ``error``
        dict of an ERROR message; the instance has the class named by its
        type (DirtyError when the name is unknown)."""
        return error_from_wire(data)


class DirtyTimeoutError(DirtyError):
    """A dirty call did not finish within its timeout."""

    def __init__(self, message="Operation timed out", timeout=None):
        super().__init__(message, {"timeout": timeout} if timeout else {})
        self.timeout = timeout


class DirtyConnectionError(DirtyError):
    """The dirty arbiter cannot be reached, or the connection broke."""

    def __init__(self, message="Connection failed", socket_path=None):
        super().__init__(message, {"socket_path": socket_path} if socket_path else {})
        self.socket_path = socket_path


class DirtyWorkerError(DirtyError):
    """A dirty worker failed (crashed, was killed) while handling a call."""

    def __init__(self, message, worker_id=None, traceback=None):
        details = {}
        if worker_id is not None:
            details["worker_id"] = worker_id
        if traceback:
            details["traceback"] = traceback
        super().__init__(message, details)
        self.worker_id = worker_id
        self.traceback = traceback


class DirtyAppError(DirtyError):
    """The dirty app's action raised; ``traceback`` is the worker-side text."""

    def __init__(self, message, app_path=None, action=None, traceback=None):
        details = {}
        if app_path:
            details["app_path"] = app_path
        if action:
            details["action"] = action
        if traceback:
            details["traceback"] = traceback
        super().__init__(message, details)
        self.app_path = app_path
        self.action = action
        self.traceback = traceback


class DirtyAppNotFoundError(DirtyAppError):
    """No dirty app is configured under that import path."""

    def __init__(self, app_path):
        super().__init__("Dirty app not found: %s" % (app_path,), app_path=app_path)


class DirtyNoWorkersAvailableError(DirtyError):
    """The app is configured but no worker that loads it is alive right now
    (e.g. all of an app's ``module:Class:N`` workers are being respawned)."""

    def __init__(self, app_path, message=None):
        if message is None:
            message = "No workers available for app: %s" % (app_path,)
        super().__init__(message, details={"app_path": app_path})
        self.app_path = app_path


class DirtyBusyError(DirtyError):
    """The app's workers are all busy and its queue is full
    (``dirty_queue_limit``), or the call waited ``dirty_queue_timeout`` for a
    worker. Nothing ran. ``retry_after`` is the arbiter's estimate, in
    seconds, of when a retry could be served (from recent call durations):
    answer 503 with ``Retry-After: ceil(retry_after)``. cgunicorn only."""

    def __init__(self, message, app_path=None, retry_after=None):
        details = {}
        if app_path:
            details["app_path"] = app_path
        if retry_after is not None:
            details["retry_after"] = retry_after
        super().__init__(message, details)
        self.app_path = app_path
        self.retry_after = retry_after


class DirtyProtocolError(DirtyError):
    """A malformed or oversized message."""

    def __init__(self, message="Protocol error", raw_data=None):
        details = {}
        if raw_data is not None:
            if isinstance(raw_data, (bytes, bytearray)):
                raw_data = bytes(raw_data[:100]).hex()
            details["raw_data"] = str(raw_data)[:200]
        super().__init__(message, details)


class DirtySerializationError(DirtyProtocolError, TypeError):
    """A value the dirty protocol cannot carry (the message names its type and
    where it was, e.g. ``args[1]['img']``). Also a TypeError. cgunicorn only."""

    def __init__(self, message):
        DirtyProtocolError.__init__(self, message)


# Attributes each class carries, filled from the wire dict's fields.
_ATTRS = {
    "DirtyTimeoutError": ("timeout",),
    "DirtyConnectionError": ("socket_path",),
    "DirtyWorkerError": ("worker_id", "traceback"),
    "DirtyAppError": ("app_path", "action", "traceback"),
    "DirtyAppNotFoundError": ("app_path", "action", "traceback"),
    "DirtyNoWorkersAvailableError": ("app_path",),
    "DirtyBusyError": ("app_path", "retry_after"),
}

# Fields of the wire dict that are facts about the error (kept in .details).
_DETAIL_FIELDS = ("app_path", "action", "traceback", "worker_id", "timeout",
                  "socket_path", "table", "key", "retry_after")


def _classes():
    classes = {
        c.__name__: c
        for c in (DirtyError, DirtyTimeoutError, DirtyConnectionError, DirtyWorkerError,
                  DirtyAppError, DirtyAppNotFoundError, DirtyNoWorkersAvailableError,
                  DirtyBusyError, DirtyProtocolError, DirtySerializationError)
    }
    from . import stash  # the stash errors live there, as in gunicorn
    for c in (stash.StashError, stash.StashTableNotFoundError, stash.StashKeyNotFoundError):
        classes[c.__name__] = c
    return classes


def error_from_wire(data):
    """Returns the exception described by an ERROR message's ``error`` dict
    (``{"type", "message", ...}``) or by gunicorn's ``to_dict()`` form
    (``{"error_type", "message", "details"}``). Never raises."""
    if not isinstance(data, dict):
        data = {"message": "malformed error message: %r" % (data,)}
    name = data.get("type") or data.get("error_type") or "DirtyError"
    cls = _classes().get(name, DirtyError) if isinstance(name, str) else DirtyError
    message = data.get("message")
    if not isinstance(message, str):
        message = "Unknown error" if message is None else str(message)
    details = data.get("details")
    details = dict(details) if isinstance(details, dict) else {}
    for field in _DETAIL_FIELDS:
        if field in data and data[field] is not None:
            details[field] = data[field]
    # Built without the subclass __init__ (their signatures differ), so the
    # text stays exactly what the sender wrote.
    err = Exception.__new__(cls)
    Exception.__init__(err, message)
    err.message = message
    err.details = details
    for attr in _ATTRS.get(cls.__name__, ()):
        setattr(err, attr, details.get(attr))
    if cls.__name__ in ("StashTableNotFoundError", "StashKeyNotFoundError"):
        err.table_name = details.get("table")
        if cls.__name__ == "StashKeyNotFoundError":
            err.key = details.get("key")
    return err


def error_to_wire(exc, app_path=None, action=None, traceback=None):
    """Returns the ``error`` dict for an ERROR message describing ``exc``
    (any exception): a DirtyError keeps its class name and attributes; any
    other exception becomes a DirtyAppError (the dirty app raised it) with
    ``app_path``/``action``/``traceback`` when given."""
    if isinstance(exc, DirtyError):
        wire = {"type": type(exc).__name__, "message": exc.message}
        for field in _DETAIL_FIELDS:
            value = getattr(exc, field, None)
            if value is None:
                value = exc.details.get(field)
            if value is not None:
                wire[field] = value
    else:
        wire = {"type": "DirtyAppError", "message": str(exc)}
    for field, value in (("app_path", app_path), ("action", action), ("traceback", traceback)):
        if value is not None and field not in wire:
            wire[field] = value
    return wire
