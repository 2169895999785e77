"""The client HTTP workers use to call dirty apps through the dirty arbiter.

Sync API (sync and gthread workers): ``execute()`` and ``stream()``, one
connection per client; ``get_dirty_client()`` gives one client per thread.
Async API (asgi workers): ``execute_async()`` and ``stream_async()`` on the
running loop (a non-blocking socket watched with add_reader/add_writer);
``get_dirty_client_async()`` gives one client per event loop, whose
connection carries concurrent calls (replies are matched to calls by
request id).

Both put bytes values above dirty_zero_copy_threshold in sealed memfds
passed with the frame, and accept results and chunks the same way.

Every call has a request id; a reply whose id no call is waiting for (the
late answer to a call that timed out or was cancelled) is dropped. Giving
up on a call (timeout, closing a stream early) sends CANCEL for its id.
"""
import array
import asyncio
import collections
import os
import socket
import threading
import time
import weakref

import _cgunicorn_dirty as codec

from . import _channel
from ._channel import SOCKET_ENV, encode_fds
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
    """(parts, fds) of a REQUEST on a Channel or an _AsyncConnection: large
    bytes arguments in memfds, and replies may come in memfds too."""
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
        queue = conn.register(rid)
        try:
            frame, fds = _encode_request(
                conn, rid, _request_body(app_path, action, args, kwargs, self.timeout))
            await conn.send(frame, fds)
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


def _retrieve(future):
    """Marks a send's outcome as seen (its caller may have stopped waiting)."""
    if not future.cancelled():
        future.exception()


class _AsyncConnection:
    """An asyncio connection shared by concurrent calls, on a non-blocking
    Unix socket watched with the loop's add_reader()/add_writer() (asyncio
    streams cannot pass descriptors, which zero-copy payloads need). The
    reader callback cuts frames out of what arrives and hands each to the
    queue registered for its id, with the memfds that came with it; frames
    to send wait in one output queue, written in order, a frame's memfds
    going with its first byte."""

    _RBUF = 256 << 10  # frames up to this size are cut out of one reused buffer

    def __init__(self, socket_path, timeout, max_message):
        self.socket_path = socket_path
        self.timeout = timeout
        self.max_message = max_message
        self.zero_copy_threshold = _channel.default_zero_copy_threshold()
        self.max_payload = _channel.default_max_payload()
        self.loop = None
        self.sock = None
        self.queues = {}
        self.next_id = 1
        self.broken = None
        self._out = collections.deque()  # [views, fds, future or None], in send order
        self._writing = False
        self._fdq = []                    # descriptors received, not yet claimed
        self._rbuf = bytearray(self._RBUF)
        self._rlen = 0
        self._big = None                  # a frame larger than _rbuf, being received
        self._big_got = 0

    def usable(self, loop):
        return self.loop is loop and self.sock is not None and self.broken is None

    async def open(self):
        self.loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(self.loop.sock_connect(sock, self.socket_path), self.timeout)
        except asyncio.TimeoutError:
            sock.close()
            raise DirtyTimeoutError("Timeout connecting to dirty arbiter",
                                    timeout=self.timeout) from None
        except OSError as e:
            sock.close()
            raise DirtyConnectionError(
                "Failed to connect to dirty arbiter at %s (from %s): %s"
                % (self.socket_path, SOCKET_ENV, e), socket_path=self.socket_path) from e
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.loop.add_reader(sock.fileno(), self._on_readable)

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

    # -- sending ---------------------------------------------------------

    def _queue(self, frame, fds, future):
        parts = frame if isinstance(frame, list) else [frame]
        self._out.append([[memoryview(p).cast("B") for p in parts], list(fds), future])
        self._kick()

    async def send(self, frame, fds=()):
        """Sends a frame (bytes or a list of buffers) and the memfds that go
        with it; the memfds are this connection's from the call on (closed
        once sent, or when the connection fails)."""
        if self.broken is not None:
            _channel.close_fds(fds)
            raise self.broken
        future = self.loop.create_future()
        future.add_done_callback(_retrieve)
        self._queue(frame, fds, future)
        # A caller that stops waiting (timeout) leaves the frame queued: it
        # goes out whole, and its late reply is dropped.
        await asyncio.shield(future)

    def cancel(self, rid):
        """Sends CANCEL for rid without waiting; never raises."""
        self.queues.pop(rid, None)
        if self.sock is None or self.broken is not None:
            return
        try:
            self._queue(codec.encode(codec.CANCEL, rid, {}), (), None)
        except Exception:
            pass

    def _kick(self):
        """Writes queued frames until the socket is full."""
        while self._out and self.broken is None:
            item = self._out[0]
            views, fds, future = item
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
            try:
                n = self.sock.sendmsg(views[:512], anc)
            except (BlockingIOError, InterruptedError):
                if not self._writing:
                    self.loop.add_writer(self.sock.fileno(), self._kick)
                    self._writing = True
                return
            except OSError as e:
                self._fail(DirtyConnectionError("Communication error: %s" % (e,),
                                                socket_path=self.socket_path))
                return
            if fds:  # they went with the first byte
                _channel.close_fds(fds)
                item[1] = []
            _channel.consume(views, n)
            if not views:
                self._out.popleft()
                if future is not None and not future.done():
                    future.set_result(None)
        if self._writing and self.sock is not None:
            self.loop.remove_writer(self.sock.fileno())
            self._writing = False

    # -- receiving -------------------------------------------------------

    def _recv(self, view):
        n, anc, flags, _ = self.sock.recvmsg_into([view], _channel.ANCBUF,
                                                  socket.MSG_CMSG_CLOEXEC)
        _channel.take_fds(anc, self._fdq)
        if flags & socket.MSG_CTRUNC:
            raise ConnectionResetError("descriptors from the dirty arbiter were lost")
        if n == 0:
            raise ConnectionResetError("connection closed by the dirty arbiter")
        return n

    def _on_readable(self):
        try:
            for _ in range(64):  # then let other callbacks run
                if self.sock is None:
                    return
                if self._big is not None:
                    with memoryview(self._big) as v:
                        self._big_got += self._recv(v[self._big_got:])
                    if self._big_got == len(self._big):
                        big, self._big = self._big, None
                        with memoryview(big) as v:
                            self._frame(v)
                    continue
                with memoryview(self._rbuf) as v:
                    self._rlen += self._recv(v[self._rlen:])
                self._cut()
        except (BlockingIOError, InterruptedError):
            pass
        except DirtyError as e:
            self._fail(e)
        except OSError as e:
            self._fail(DirtyConnectionError("Communication error: %s" % (e,),
                                            socket_path=self.socket_path))

    def _cut(self):
        """Handles every whole frame at the front of _rbuf."""
        buf, off = self._rbuf, 0
        with memoryview(buf) as v:
            while self._rlen - off >= codec.HEADER_SIZE:
                head = self._header(v[off:off + codec.HEADER_SIZE])
                total = codec.HEADER_SIZE + head[2] + head[3]
                have = self._rlen - off
                if have < total:
                    if total > len(buf):  # its own buffer, the rest received into it
                        self._big = bytearray(total)
                        self._big[:have] = v[off:self._rlen]
                        self._big_got = have
                        off = self._rlen
                    break
                self._frame(v[off:off + total])
                off += total
            rest = self._rlen - off
            if off and rest:
                v[:rest] = v[off:self._rlen]
        self._rlen = rest

    def _header(self, view):
        try:
            return codec.decode_header(view, self.max_message)
        except ValueError as e:
            raise DirtyProtocolError("Bad message from the dirty arbiter: %s" % (e,),
                                     raw_data=bytes(view)) from None

    def _frame(self, view):
        """One whole frame (header included): decoded and queued for its call."""
        msg_type, rid, json_len, _ = self._header(view[:codec.HEADER_SIZE])
        nfds = view[5]
        fds, self._fdq = self._fdq[:nfds], self._fdq[nfds:]
        try:
            if len(fds) < nfds:
                raise DirtyProtocolError("Bad message from the dirty arbiter: %d memfd(s) "
                                         "announced, %d received" % (nfds, len(fds)))
            queue = self.queues.get(rid)
            if queue is None:
                return  # a late reply to a call that gave up; dropped
            try:
                body = codec.decode_body(view[codec.HEADER_SIZE:], json_len, fds,
                                         self.max_payload)
            except ValueError as e:
                raise DirtyProtocolError("Bad message from the dirty arbiter: %s"
                                         % (e,)) from None
            queue.put_nowait((msg_type, body))
        finally:
            _channel.close_fds(fds)

    # -- failing and closing ---------------------------------------------

    def _fail(self, exc):
        if self.broken is None:
            self.broken = exc
        for queue in self.queues.values():
            queue.put_nowait((None, exc))
        while self._out:
            _, fds, future = self._out.popleft()
            _channel.close_fds(fds)
            if future is not None and not future.done():
                future.set_exception(exc)
        fds, self._fdq = self._fdq, []
        _channel.close_fds(fds)
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                self.loop.remove_reader(sock.fileno())
                if self._writing:
                    self.loop.remove_writer(sock.fileno())
            except Exception:  # the loop is closed
                pass
            self._writing = False
            sock.close()

    async def close(self):
        self._fail(DirtyConnectionError("The dirty client was closed",
                                        socket_path=self.socket_path))


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
        self._queue = conn.register(rid)
        self._started = True
        self._start_clock()
        try:
            frame, fds = _encode_request(conn, rid, self._request())
            await conn.send(frame, fds)
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
