"""The stash: key-value tables kept in the dirty arbiter's memory, shared by
every process that can reach the arbiter (HTTP workers and dirty workers).

    from gunicorn.dirty import stash

    stash.put("sessions", "user:1", {"name": "Alice"})
    stash.get("sessions", "user:1")          # {'name': 'Alice'}
    sessions = stash.table("sessions")       # dict-like view
    sessions["user:2"] = {"name": "Bob"}
    stash.keys("sessions", pattern="user:*")

Tables are created on first put (or ensure()) and vanish when the arbiter
restarts. Keys are str; values are anything a dirty call can carry (None,
bool, int, float, str, bytes, list, dict). Each operation is one STASH
message answered by a RESPONSE ``{"result": ...}`` or an ERROR (see
docs/dirty-protocol.md).
"""
import os
import threading
import time

import _cgunicorn_dirty as codec

from . import _channel
from .errors import DirtyError

__all__ = [
    "StashClient",
    "StashTable",
    "StashError",
    "StashTableNotFoundError",
    "StashKeyNotFoundError",
    "put", "get", "delete", "keys", "clear", "info", "ensure", "exists",
    "delete_table", "tables", "table",
]


class StashError(DirtyError):
    """A stash operation failed."""


class StashTableNotFoundError(StashError):
    """The table does not exist."""

    def __init__(self, table_name):
        self.table_name = table_name
        super().__init__("Stash table not found: %s" % (table_name,))


class StashKeyNotFoundError(StashError):
    """The key does not exist in the table."""

    def __init__(self, table_name, key):
        self.table_name = table_name
        self.key = key
        super().__init__("Key not found in %s: %s" % (table_name, key))


def _check_name(what, value):
    if not isinstance(value, str):
        raise StashError("stash %s must be a str, not %s" % (what, type(value).__name__))


class StashClient:
    """A connection to the arbiter for stash operations."""

    def __init__(self, socket_path, timeout=30.0):
        self.socket_path = socket_path
        self.timeout = timeout
        self._chan = _channel.Channel(socket_path, timeout)
        self._lock = threading.Lock()

    def _execute(self, op, table, key=None, value=None, pattern=None, **extra):
        body = {"op": op, "table": table}
        if key is not None:
            _check_name("key", key)
            body["key"] = key
        if op == "put":
            body["value"] = value
        if pattern is not None:
            _check_name("pattern", pattern)
            body["pattern"] = pattern
        body.update(extra)
        with self._lock:
            chan = self._chan
            rid = chan.new_id()
            try:
                frame = _channel.encode(codec.STASH, rid, body, chan.max_message)
                deadline = time.monotonic() + self.timeout if self.timeout else None
                chan.send(frame, deadline)
                try:
                    msg_type, reply = chan.recv_for(rid, deadline, "Timeout waiting for the "
                                                    "stash", self.timeout)
                except DirtyError:
                    chan.cancel(rid)
                    raise
            except StashError:
                raise
            except DirtyError as e:
                raise StashError("Stash operation %s failed: %s" % (op, e)) from e
        if msg_type == codec.RESPONSE:
            return reply.get("result")
        if msg_type == codec.ERROR:
            info = reply.get("error") or {}
            kind = info.get("type") or info.get("error_type")
            if kind == "StashTableNotFoundError":
                raise StashTableNotFoundError(table)
            if kind == "StashKeyNotFoundError":
                raise StashKeyNotFoundError(table, key)
            raise StashError(info.get("message") or "Unknown stash error")
        raise StashError("Unexpected response type: %s" % (codec.type_name(msg_type),))

    def put(self, table, key, value):
        """Stores value under key (the table is created if needed)."""
        _check_name("table name", table)
        _check_name("key", key)
        self._execute("put", table, key=key, value=value)

    def get(self, table, key, default=None):
        """The value stored under key, or default."""
        _check_name("key", key)
        try:
            return self._execute("get", table, key=key)
        except StashKeyNotFoundError:
            return default

    def delete(self, table, key):
        """Removes key; True if it was there."""
        _check_name("key", key)
        return self._execute("delete", table, key=key)

    def keys(self, table, pattern=None):
        """The table's keys, optionally filtered by a glob pattern ("user:*");
        [] for a missing table."""
        return self._execute("keys", table, pattern=pattern)

    def clear(self, table):
        """Removes every key of the table."""
        self._execute("clear", table)

    def info(self, table):
        """``{"size": n, "table": name}``; StashTableNotFoundError if missing."""
        return self._execute("info", table)

    def ensure(self, table):
        """Creates the table if it does not exist (idempotent)."""
        _check_name("table name", table)
        self._execute("ensure", table)

    def exists(self, table, key=None):
        """Whether the table (or, with key, the key in it) exists."""
        return self._execute("exists", table, key=key)

    def delete_table(self, table):
        """Removes the table; True if it existed."""
        return self._execute("delete_table", table)

    def tables(self):
        """The names of all tables."""
        return self._execute("tables", "")

    def table(self, name):
        """A dict-like view of one table."""
        return StashTable(self, name)

    def close(self):
        with self._lock:
            self._chan.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()


class StashTable:
    """Dict-like access to one stash table: ``t[k]``, ``t[k] = v``,
    ``del t[k]``, ``k in t``, ``len(t)``, iteration over keys, get, keys,
    items, values, clear."""

    def __init__(self, client, name):
        self._client = client
        self._name = name

    @property
    def name(self):
        return self._name

    def __getitem__(self, key):
        missing = object()
        value = self._client.get(self._name, key, missing)
        if value is missing:
            raise KeyError(key)
        return value

    def __setitem__(self, key, value):
        self._client.put(self._name, key, value)

    def __delitem__(self, key):
        if not self._client.delete(self._name, key):
            raise KeyError(key)

    def __contains__(self, key):
        return bool(self._client.exists(self._name, key))

    def __iter__(self):
        return iter(self._client.keys(self._name))

    def __len__(self):
        try:
            return self._client.info(self._name).get("size", 0)
        except StashTableNotFoundError:
            return 0

    def get(self, key, default=None):
        return self._client.get(self._name, key, default)

    def keys(self, pattern=None):
        return self._client.keys(self._name, pattern=pattern)

    def clear(self):
        self._client.clear(self._name)

    def items(self):
        for key in self._client.keys(self._name):
            yield key, self._client.get(self._name, key)

    def values(self):
        for key in self._client.keys(self._name):
            yield self._client.get(self._name, key)

    def __repr__(self):
        return "<StashTable %r>" % (self._name,)


# -- module-level API over a per-thread client ----------------------------

_thread_local = threading.local()
_stash_socket_path = None


def set_stash_socket_path(path):
    global _stash_socket_path
    _stash_socket_path = path


def get_stash_socket_path():
    if _stash_socket_path is not None:
        return _stash_socket_path
    path = os.environ.get(_channel.SOCKET_ENV)
    if path:
        return path
    raise StashError(
        "Stash socket path not configured: %s is not set in this process. Make sure "
        "dirty_workers > 0 and dirty_apps are configured." % (_channel.SOCKET_ENV,))


def _get_client():
    client = getattr(_thread_local, "stash_client", None)
    if client is None:
        client = StashClient(get_stash_socket_path())
        _thread_local.stash_client = client
    return client


def put(table, key, value):
    _get_client().put(table, key, value)


def get(table, key, default=None):
    return _get_client().get(table, key, default)


def delete(table, key):
    return _get_client().delete(table, key)


def keys(table, pattern=None):
    return _get_client().keys(table, pattern)


def clear(table):
    _get_client().clear(table)


def info(table):
    return _get_client().info(table)


def ensure(table):
    _get_client().ensure(table)


def exists(table, key=None):
    return _get_client().exists(table, key)


def delete_table(table):
    _get_client().delete_table(table)


def tables():
    return _get_client().tables()


def table(name):
    return _get_client().table(name)
