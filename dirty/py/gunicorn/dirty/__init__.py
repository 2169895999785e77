"""gunicorn.dirty as provided by cgunicorn: dirty apps run in a separate pool
of long-lived Python processes (the dirty workers) that HTTP workers call
through the dirty arbiter's Unix socket.

    from gunicorn.dirty import DirtyApp, get_dirty_client

    client = get_dirty_client()
    client.execute("myapp.ml:MLApp", "inference", "model", text)

The API and error classes are gunicorn's; the wire format is cgunicorn's
(binary-safe: bytes travel as raw bytes; see docs/dirty-protocol.md).
"""
from .errors import (
    DirtyError,
    DirtyTimeoutError,
    DirtyConnectionError,
    DirtyWorkerError,
    DirtyAppError,
    DirtyAppNotFoundError,
    DirtyNoWorkersAvailableError,
    DirtyBusyError,
    DirtyProtocolError,
    DirtySerializationError,
)
from .app import DirtyApp
from .client import (
    DirtyClient,
    get_dirty_client,
    get_dirty_client_async,
    set_dirty_socket_path,
    close_dirty_client,
    close_dirty_client_async,
)
from . import stash
from .stash import (
    StashClient,
    StashTable,
    StashError,
    StashTableNotFoundError,
    StashKeyNotFoundError,
)

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
    "DirtyApp",
    "DirtyClient",
    "get_dirty_client",
    "get_dirty_client_async",
    "close_dirty_client",
    "close_dirty_client_async",
    "set_dirty_socket_path",
    "stash",
    "StashClient",
    "StashTable",
    "StashError",
    "StashTableNotFoundError",
    "StashKeyNotFoundError",
]
