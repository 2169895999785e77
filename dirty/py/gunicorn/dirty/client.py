"""The client HTTP workers use to call dirty apps through the dirty arbiter.

Sync API (sync and gthread workers): ``execute()`` and ``stream()``, one
connection per client; ``get_dirty_client()`` gives one client per thread.
Async API (asgi workers): ``execute_async()`` and ``stream_async()`` over
asyncio streams; ``get_dirty_client_async()`` gives one client per event
loop, whose connection carries concurrent calls (replies are matched to
calls by request id by one reader task).

Every call has a request id; a reply whose id no call is waiting for (the
late answer to a call that timed out or was cancelled) is dropped. Giving
up on a call (timeout, closing a stream early) sends CANCEL for its id.
"""
import asyncio
import os
import threading
import time
import weakref

import _cgunicorn_dirty as codec

from . import _channel
from ._channel import SOCKET_ENV, encode, encode_fds
from .errors import (
    DirtyConnectionError,
    DirtyError,
    DirtyProtocolError,
    DirtyTimeoutError,
    error_from_wire,
)

__all__ = [
    "DirtyClient",
    "DirtyStreamIterator",
    "DirtyAsyncStreamIterator",
    "get_dirty_client",
    "get_dirty_client_async",
    "close_dirty_client",
    "close_dirty_client_async",
    "set_dirty_socket_path",
    "get_dirty_socket_path",
]


def _request_body(app_path, action, args, kwargs, timeout, stream=False, fds=False):
    body = {"app_path": app_path, "action": action, "args": list(args), "kwargs": kwargs}
    if timeout:
        body["timeout"] = float(timeout)
    if stream:
        body["stream"] = True
    if fds:
        # this connection takes results and chunks in memfds (zero-copy)
        body["fds"] = True
    return body


def _encode_request(chan, rid, body):
    """(parts, fds) of a sync REQUEST: large bytes arguments in memfds."""
    zc = chan.zero_copy_threshold
    if zc:
        body["fds"] = True
    return encode_fds(codec.REQUEST, rid, body, chan.max_message, zc, chan.max_payload)


def _result(msg_type, body, app_path, action):
    """The value of a non-streaming call's reply, or the error it carries."""
    if msg_type == codec.RESPONSE:
        return body.get("result")
    if msg_type == codec.ERROR:
        raise error_from_wire(body.get("error"))
    if msg_type in (codec.CHUNK, codec.END):
        # gunicorn's execute() fails the same way on a streaming action.
        raise DirtyError("Unknown response type: %s (%s.%s streams its result; call "
                         "client.stream() or client.stream_async() for it)"
                         % (codec.type_name(msg_type), app_path, action))
    raise DirtyError("Unknown response type: %s" % (codec.type_name(msg_type),))


class DirtyClient:
    """A connection to the dirty arbiter. ``timeout`` (seconds) bounds each
    call; it is also sent with each request so that the arbiter can stop
    waiting for the worker at the same time (it applies the smaller of it and
    dirty_timeout)."""

    def __init__(self, socket_path, timeout=30.0, max_message=None):
        self.socket_path = socket_path
        self.timeout = timeout
        self._chan = _channel.Channel(socket_path, timeout, max_message)
        self._lock = threading.Lock()
        self._aio = None  # _AsyncConnection, created by connect_async()

    @property
    def max_message(self):
        return self._chan.max_message

    # -- sync API --------------------------------------------------------

    def connect(self):
        """Opens the sync connection (done lazily by every call).
        Raises DirtyConnectionError naming the socket path."""
        with self._lock:
            self._chan.connect()

    def execute(self, app_path, action, *args, **kwargs):
        """Runs ``action`` of the dirty app ``app_path`` ("module:Class") with
        the given arguments and returns its result. Raises DirtyAppError (the
        action raised), DirtyTimeoutError, DirtyConnectionError,
        DirtySerializationError (an argument the protocol cannot carry), or
        another DirtyError sent by the arbiter."""
        with self._lock:
            chan = self._chan
            rid = chan.new_id()
            frame, fds = _encode_request(
                chan, rid, _request_body(app_path, action, args, kwargs, self.timeout))
            deadline = time.monotonic() + self.timeout if self.timeout else None
            chan.send(frame, deadline, fds)
            try:
                msg_type, body = chan.recv_for(rid, deadline,
                                               "Timeout waiting for dirty app response",
                                               self.timeout)
            except DirtyTimeoutError:
                chan.cancel(rid)
                raise
            if msg_type in (codec.CHUNK, codec.END):
                chan.cancel(rid)
            return _result(msg_type, body, app_path, action)

    def stream(self, app_path, action, *args, **kwargs):
        """Returns an iterator over the chunks of an action that returns a
        generator. The request is sent on the first ``next()``; an ERROR
        raises after the chunks already delivered; ``close()`` (or dropping
        the iterator before its end) cancels the stream."""
        return DirtyStreamIterator(self, app_path, action, args, kwargs)

    def close(self):
        """Closes the sync connection."""
        with self._lock:
            self._chan.close()

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()

    # -- async API -------------------------------------------------------

    async def connect_async(self):
        """Opens the async connection on the running loop."""
        loop = asyncio.get_running_loop()
        if self._aio is not None and self._aio.usable(loop):
            return
        if self._aio is not None:
            await self._aio.close()
        conn = _AsyncConnection(self.socket_path, self.timeout, self._chan.max_message)
        await conn.open()
        self._aio = conn

    async def execute_async(self, app_path, action, *args, **kwargs):
        """execute() for asyncio code: waits without blocking the loop."""
        await self.connect_async()
        conn = self._aio
        rid = conn.new_id()
        frame = encode(codec.REQUEST, rid,
                       _request_body(app_path, action, args, kwargs, self.timeout),
                       conn.max_message)
        queue = conn.register(rid)
        try:
            await conn.send(frame)
            try:
                msg_type, body = await asyncio.wait_for(queue.get(), self.timeout)
            except asyncio.TimeoutError:
                conn.cancel(rid)
                raise DirtyTimeoutError("Timeout waiting for dirty app response",
                                        timeout=self.timeout) from None
            if isinstance(body, BaseException):
                raise body
            if msg_type in (codec.CHUNK, codec.END):
                conn.cancel(rid)
            return _result(msg_type, body, app_path, action)
        finally:
            conn.unregister(rid)

    def stream_async(self, app_path, action, *args, **kwargs):
        """stream() for asyncio code: an async iterator over the chunks;
        ``await it.aclose()`` (or dropping it early) cancels the stream."""
        return DirtyAsyncStreamIterator(self, app_path, action, args, kwargs)

    async def close_async(self):
        """Closes the async connection; pending async calls fail with
        DirtyConnectionError."""
        conn, self._aio = self._aio, None
        if conn is not None:
            await conn.close()

    async def __aenter__(self):
        await self.connect_async()
        return self

    async def __aexit__(self, exc_type, exc, tb):
        await self.close_async()


class _AsyncConnection:
    """An asyncio connection shared by concurrent calls: one reader task
    hands each frame to the queue registered for its id."""

    def __init__(self, socket_path, timeout, max_message):
        self.socket_path = socket_path
        self.timeout = timeout
        self.max_message = max_message
        self.loop = None
        self.reader = None
        self.writer = None
        self.task = None
        self.queues = {}
        self.next_id = 1
        self.broken = None

    def usable(self, loop):
        return self.loop is loop and self.writer is not None and self.broken is None

    async def open(self):
        self.loop = asyncio.get_running_loop()
        try:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.socket_path), self.timeout)
        except asyncio.TimeoutError:
            raise DirtyTimeoutError("Timeout connecting to dirty arbiter",
                                    timeout=self.timeout) from None
        except OSError as e:
            raise DirtyConnectionError(
                "Failed to connect to dirty arbiter at %s (from %s): %s"
                % (self.socket_path, SOCKET_ENV, e), socket_path=self.socket_path) from e
        self.task = self.loop.create_task(self._read_loop())

    def new_id(self):
        rid = self.next_id
        self.next_id = 1 if rid >= 2**64 - 1 else rid + 1
        return rid

    def register(self, rid):
        if self.broken is not None:
            raise self.broken
        queue = asyncio.Queue()
        self.queues[rid] = queue
        return queue

    def unregister(self, rid):
        self.queues.pop(rid, None)

    async def send(self, frame):
        if self.broken is not None:
            raise self.broken
        try:
            self.writer.write(frame)
            await self.writer.drain()
        except OSError as e:
            self._fail(DirtyConnectionError("Communication error: %s" % (e,),
                                            socket_path=self.socket_path))
            raise self.broken from e

    def cancel(self, rid):
        """Sends CANCEL for rid without waiting; never raises."""
        self.queues.pop(rid, None)
        if self.writer is None or self.broken is not None:
            return
        try:
            self.writer.write(codec.encode(codec.CANCEL, rid, {}))
        except Exception:
            pass

    async def _read_loop(self):
        try:
            while True:
                head = await self.reader.readexactly(codec.HEADER_SIZE)
                try:
                    msg_type, rid, json_len, blob_len = codec.decode_header(head,
                                                                             self.max_message)
                except ValueError as e:
                    raise DirtyProtocolError("Bad message from the dirty arbiter: %s" % (e,),
                                             raw_data=head) from None
                data = await self.reader.readexactly(json_len + blob_len)
                try:
                    body = codec.decode_body(data, json_len)
                except ValueError as e:
                    raise DirtyProtocolError("Bad message from the dirty arbiter: %s"
                                             % (e,)) from None
                queue = self.queues.get(rid)
                if queue is not None:
                    queue.put_nowait((msg_type, body))
                # else: a late reply to a call that gave up; dropped.
        except asyncio.CancelledError:
            self._fail(DirtyConnectionError("Connection to the dirty arbiter was closed",
                                            socket_path=self.socket_path))
            raise
        except DirtyError as e:
            self._fail(e)
        except (OSError, asyncio.IncompleteReadError) as e:
            self._fail(DirtyConnectionError("Communication error: %s" % (e or "connection "
                                            "closed by the dirty arbiter",),
                                            socket_path=self.socket_path))

    def _fail(self, exc):
        if self.broken is None:
            self.broken = exc
        for queue in self.queues.values():
            queue.put_nowait((None, exc))
        if self.writer is not None:
            self.writer.close()

    async def close(self):
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except BaseException:
                pass
        self._fail(DirtyConnectionError("The dirty client was closed",
                                        socket_path=self.socket_path))
        writer, self.writer = self.writer, None
        if writer is not None:
            try:
                await writer.wait_closed()
            except Exception:
                pass


class _StreamIteratorBase:
    """What the sync and async stream iterators share: the call's request,
    its two timeouts, and what a received frame means."""

    DEFAULT_IDLE_TIMEOUT = 30.0

    def __init__(self, client, app_path, action, args, kwargs, idle_timeout=None):
        self.client = client
        self.app_path = app_path
        self.action = action
        self.args = args
        self.kwargs = kwargs
        self._started = False
        self._exhausted = False
        self._request_id = None
        self._deadline = None
        self._last_chunk_time = None
        self._idle_timeout = (idle_timeout if idle_timeout is not None
                              else min(self.DEFAULT_IDLE_TIMEOUT, client.timeout or
                                       self.DEFAULT_IDLE_TIMEOUT))

    def _request(self):
        return _request_body(self.app_path, self.action, self.args, self.kwargs,
                             self.client.timeout, stream=True)

    def _start_clock(self):
        now = time.monotonic()
        self._deadline = now + self.client.timeout if self.client.timeout else None
        self._last_chunk_time = now

    def _next_wait(self):
        """(now, seconds to wait for the next frame, whether that wait ends at
        the whole stream's deadline). Past that deadline the stream is given
        up and DirtyTimeoutError raised."""
        now = time.monotonic()
        if self._deadline is not None and now >= self._deadline:
            self._give_up()
            raise DirtyTimeoutError("Stream exceeded total timeout", timeout=self.client.timeout)
        if self._deadline is not None and self._deadline - now <= self._idle_timeout:
            return now, self._deadline - now, True
        return now, self._idle_timeout, False

    def _timed_out(self, total):
        """Gives the stream up after a wait ran out; returns the error to raise."""
        self._give_up()
        if total:
            return DirtyTimeoutError("Stream exceeded total timeout", timeout=self.client.timeout)
        idle = time.monotonic() - self._last_chunk_time
        return DirtyTimeoutError("Timeout waiting for next chunk (idle %.1fs)" % idle,
                                 timeout=self._idle_timeout)

    def _chunk(self, msg_type, body, stop):
        """A frame for this stream: a CHUNK's data, or the end (`stop` raised
        for END, or for a RESPONSE: like gunicorn, a call that did not stream
        simply ends the iteration), or the call's error raised."""
        self._last_chunk_time = time.monotonic()
        if msg_type == codec.CHUNK:
            return body.get("data")
        self._finish()
        if msg_type in (codec.END, codec.RESPONSE):
            raise stop
        if msg_type == codec.ERROR:
            raise error_from_wire(body.get("error"))
        raise DirtyError("Unknown message type: %s" % (codec.type_name(msg_type),))


class DirtyStreamIterator(_StreamIteratorBase):
    """Iterator over a streaming call's chunks (sync). The whole stream must
    finish within the client's timeout, and each chunk arrive within
    ``idle_timeout`` (default: the smaller of 30 s and the client's timeout)
    of the previous one."""

    def __iter__(self):
        return self

    def _start(self):
        chan = self.client._chan
        self._request_id = rid = chan.new_id()
        frame, fds = _encode_request(chan, rid, self._request())
        self._start_clock()
        chan.open_stream(rid)
        self._started = True
        try:
            chan.send(frame, self._deadline, fds)
        except BaseException:
            self._finish()
            raise

    def _finish(self):
        self._exhausted = True
        self.client._chan.close_stream(self._request_id)

    def __next__(self):
        if self._exhausted:
            raise StopIteration
        with self.client._lock:
            if not self._started:
                self._start()
            return self._next_locked()

    def _next_locked(self):
        now, wait, total = self._next_wait()
        read_deadline = self._deadline if total else now + wait
        try:
            msg_type, body = self.client._chan.recv_for(self._request_id, read_deadline, "",
                                                        None)
        except DirtyTimeoutError:
            raise self._timed_out(total) from None
        except BaseException:
            self._finish()
            raise
        return self._chunk(msg_type, body, StopIteration)

    def _give_up(self):
        self._finish()
        self.client._chan.cancel(self._request_id)

    def close(self):
        """Stops the stream: the arbiter is told to cancel it."""
        if self._started and not self._exhausted:
            with self.client._lock:
                self._give_up()
        self._exhausted = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()

    def __del__(self):
        # Dropped before its end (`break` out of a for loop, a WSGI response
        # closed because the HTTP client went away): cancel, so the worker
        # closes the generator and is free again. The caller's lock may be
        # held by this thread here (a finalizer can run anywhere): then the
        # CANCEL goes out before the next frame this client sends.
        if getattr(self, "_started", False) and not self._exhausted:
            self._exhausted = True
            try:
                lock = self.client._lock
                if lock.acquire(blocking=False):
                    try:
                        self.client._chan.cancel(self._request_id)
                    finally:
                        lock.release()
                else:
                    self.client._chan.cancel_later(self._request_id)
            except Exception:
                pass


class DirtyAsyncStreamIterator(_StreamIteratorBase):
    """Async iterator over a streaming call's chunks; same timeouts as
    DirtyStreamIterator."""

    def __init__(self, client, app_path, action, args, kwargs, idle_timeout=None):
        super().__init__(client, app_path, action, args, kwargs, idle_timeout)
        self._conn = None
        self._queue = None

    def __aiter__(self):
        return self

    async def _start(self):
        await self.client.connect_async()
        conn = self._conn = self.client._aio
        self._request_id = rid = conn.new_id()
        frame = encode(codec.REQUEST, rid, self._request(), conn.max_message)
        self._queue = conn.register(rid)
        self._started = True
        self._start_clock()
        try:
            await conn.send(frame)
        except BaseException:
            self._finish()
            raise

    def _finish(self):
        self._exhausted = True
        if self._conn is not None:
            self._conn.unregister(self._request_id)

    def _give_up(self):
        self._finish()
        if self._conn is not None:
            self._conn.cancel(self._request_id)

    async def __anext__(self):
        if self._exhausted:
            raise StopAsyncIteration
        if not self._started:
            await self._start()
        _, wait, total = self._next_wait()
        try:
            msg_type, body = await asyncio.wait_for(self._queue.get(), wait)
        except asyncio.TimeoutError:
            raise self._timed_out(total) from None
        except BaseException:
            self._give_up()
            raise
        if isinstance(body, BaseException):
            self._finish()
            raise body
        return self._chunk(msg_type, body, StopAsyncIteration)

    async def aclose(self):
        """Stops the stream: the arbiter is told to cancel it."""
        if self._started and not self._exhausted:
            self._give_up()
        self._exhausted = True

    async def __aenter__(self):
        return self

    async def __aexit__(self, exc_type, exc, tb):
        await self.aclose()

    def __del__(self):
        if getattr(self, "_started", False) and not self._exhausted:
            self._exhausted = True
            try:
                self._conn.cancel(self._request_id)
            except Exception:
                pass


# -- per-thread and per-loop clients --------------------------------------

_thread_local = threading.local()
_loop_clients = weakref.WeakKeyDictionary()
_dirty_socket_path = None


def set_dirty_socket_path(path):
    """Sets the arbiter socket path for this process (and the stash's)."""
    global _dirty_socket_path
    _dirty_socket_path = path
    from .stash import set_stash_socket_path
    set_stash_socket_path(path)


def get_dirty_socket_path():
    """The arbiter socket path: set_dirty_socket_path()'s, else
    $GUNICORN_DIRTY_SOCKET. Raises DirtyConnectionError when neither is set."""
    if _dirty_socket_path is not None:
        return _dirty_socket_path
    path = os.environ.get(SOCKET_ENV)
    if path:
        return path
    raise DirtyConnectionError(
        "Dirty socket path not configured: %s is not set in this process. Dirty apps are "
        "reachable only from processes started by the server with dirty_workers > 0 and "
        "dirty_apps configured (e.g. --dirty-app module:Class --dirty-workers 1)."
        % (SOCKET_ENV,))


def get_dirty_client(timeout=30.0) -> DirtyClient:
    """This thread's client (created on first use with ``timeout``)."""
    client = getattr(_thread_local, "dirty_client", None)
    if client is None:
        client = DirtyClient(get_dirty_socket_path(), timeout=timeout)
        _thread_local.dirty_client = client
    return client


async def get_dirty_client_async(timeout=30.0) -> DirtyClient:
    """The running event loop's client (created on first use with
    ``timeout``); concurrent tasks share its connection."""
    loop = asyncio.get_running_loop()
    client = _loop_clients.get(loop)
    if client is None:
        client = DirtyClient(get_dirty_socket_path(), timeout=timeout)
        _loop_clients[loop] = client
    return client


def close_dirty_client():
    """Closes this thread's client (e.g. at worker exit)."""
    client = getattr(_thread_local, "dirty_client", None)
    if client is not None:
        client.close()
        _thread_local.dirty_client = None


async def close_dirty_client_async():
    """Closes the running event loop's client."""
    client = _loop_clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.close_async()
