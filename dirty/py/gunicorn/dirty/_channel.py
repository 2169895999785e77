"""One connection to the dirty arbiter's Unix socket, for the sync client and
the stash: framing with the builtin codec (_cgunicorn_dirty), request ids,
timeouts, stale-reply discarding and cancellation.

Zero-copy payloads: bytes arguments above dirty_zero_copy_threshold
(CGUNICORN_DIRTY_ZERO_COPY_THRESHOLD) go in sealed memfds passed with the
frame (SCM_RIGHTS on the sendmsg() that carries its first byte); replies
may come with memfds too (the request says "fds": true). Every descriptor
received is queued in arrival order and a whole frame takes as many as its
header's byte 5 says; they are closed once the frame is decoded.

Frames are read with a small state machine whose partial state survives a
timeout, so a frame half-read when a call gave up is completed (and then
dropped as stale) by the next call instead of desynchronising the stream.
Every reply carries the id of the request it answers; replies for ids that
no call is waiting for are discarded. Not thread-safe: callers hold a lock.
"""
import array
import collections
import os
import socket
import time

import _cgunicorn_dirty as codec

from .errors import (
    DirtyConnectionError,
    DirtyError,
    DirtyProtocolError,
    DirtySerializationError,
    DirtyTimeoutError,
)

SOCKET_ENV = "GUNICORN_DIRTY_SOCKET"
MAX_MESSAGE_ENV = "CGUNICORN_DIRTY_MAX_MESSAGE_SIZE"
ZERO_COPY_ENV = "CGUNICORN_DIRTY_ZERO_COPY_THRESHOLD"
MAX_PAYLOAD_ENV = "CGUNICORN_DIRTY_MAX_PAYLOAD_SIZE"
ANCBUF = socket.CMSG_SPACE(codec.MAX_FDS * array.array("i").itemsize)


def _env_int(name, default, minimum):
    text = os.environ.get(name)
    if text:
        try:
            value = int(text)
            if value >= minimum:
                return value
        except ValueError:
            pass
    return default


def default_zero_copy_threshold():
    """Bytes values above this go in memfds (dirty_zero_copy_threshold, 0: never)."""
    return _env_int(ZERO_COPY_ENV, codec.DEFAULT_ZERO_COPY_THRESHOLD, 0)


def default_max_payload():
    """The largest bytes value sent or accepted in a memfd (dirty_max_payload_size)."""
    return _env_int(MAX_PAYLOAD_ENV, codec.DEFAULT_MAX_PAYLOAD, 1)


def consume(views, n):
    """Drops the first `n` bytes a sendmsg() wrote from the list of
    memoryviews `views` (in place), and any empty views left in front."""
    while n > 0:
        k = len(views[0])
        if n >= k:
            n -= k
            views.pop(0)
        else:
            views[0] = views[0][n:]
            n = 0
    while views and not len(views[0]):
        views.pop(0)


def take_fds(anc, fdq):
    """Appends the descriptors of recvmsg()'s SCM_RIGHTS ancillary data
    `anc` to the list `fdq`, in arrival order."""
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
            fdq.extend(fds)


def close_fds(fds):
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def default_max_message():
    """The largest frame this process sends or accepts: the value the server
    exported in CGUNICORN_DIRTY_MAX_MESSAGE_SIZE (dirty_max_message_size), or
    the codec's default."""
    text = os.environ.get(MAX_MESSAGE_ENV)
    if text:
        try:
            value = int(text)
            if value > codec.HEADER_SIZE:
                return value
        except ValueError:
            pass
    return codec.DEFAULT_MAX_MESSAGE


def encode(msg_type, request_id, body, max_message):
    """A whole frame as bytes; the codec's errors become DirtyErrors."""
    try:
        return codec.encode(msg_type, request_id, body, max_message)
    except codec.UnsupportedValueError as e:
        raise DirtySerializationError(str(e)) from None
    except codec.MessageTooLargeError as e:
        raise DirtyProtocolError(str(e)) from None


def encode_parts(msg_type, request_id, body, max_message):
    """The frame as a list of buffers (header + JSON, then each bytes value
    as it is) for Channel.send(): big payloads are not copied."""
    try:
        return codec.encode_parts(msg_type, request_id, body, max_message)
    except codec.UnsupportedValueError as e:
        raise DirtySerializationError(str(e)) from None
    except codec.MessageTooLargeError as e:
        raise DirtyProtocolError(str(e)) from None


def encode_fds(msg_type, request_id, body, max_message, threshold, max_payload):
    """(parts, fds): as encode_parts(), bytes values above `threshold` in
    sealed memfds; the caller closes `fds` once sent (Channel.send does)."""
    try:
        return codec.encode_fds(msg_type, request_id, body, max_message, threshold, max_payload)
    except codec.UnsupportedValueError as e:
        raise DirtySerializationError(str(e)) from None
    except (codec.MessageTooLargeError, codec.PayloadTooLargeError) as e:
        raise DirtyProtocolError(str(e)) from None
    except OSError as e:
        raise DirtyError("cannot make a memfd for a dirty payload: %s" % (e,)) from None


# A receive buffer larger than this is not kept after the frame it held.
_KEEP_RBUF = 4 << 20


class Channel:
    """A sync connection. ``timeout`` bounds connecting and each call."""

    def __init__(self, socket_path, timeout, max_message=None):
        self.socket_path = socket_path
        self.timeout = timeout
        self.max_message = max_message or default_max_message()
        self.zero_copy_threshold = default_zero_copy_threshold()
        self.max_payload = default_max_payload()
        self.sock = None
        self._fdq = []  # descriptors received, not yet claimed by a whole frame
        self._next_id = 1
        # Ids of live streams -> frames that arrived for them while another
        # call was reading (a stream consumed while execute() runs).
        self._inbox = {}
        self._pending_cancels = []
        self._reset_reader()

    def _reset_reader(self):
        self._hdr = bytearray(codec.HEADER_SIZE)
        self._hdr_got = 0
        self._head = None
        self._body_len = 0
        self._body_got = 0
        # Frame bodies are received into this reused buffer (decoding copies
        # values out of it): no zero-filled allocation per frame.
        self._rbuf = bytearray(64 << 10)

    # -- connection ------------------------------------------------------

    def connect(self):
        if self.sock is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except OSError as e:
            sock.close()
            raise DirtyConnectionError(
                "Failed to connect to dirty arbiter at %s (from %s): %s"
                % (self.socket_path, SOCKET_ENV, e), socket_path=self.socket_path) from e
        self.sock = sock
        self._reset_reader()

    def close(self):
        sock, self.sock = self.sock, None
        fds, self._fdq = self._fdq, []
        close_fds(fds)
        self._inbox.clear()
        self._pending_cancels.clear()
        self._reset_reader()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def new_id(self):
        rid = self._next_id
        self._next_id = 1 if rid >= 2**64 - 1 else rid + 1
        return rid

    # -- sending ---------------------------------------------------------

    def send(self, frame, deadline=None, fds=()):
        """Sends a frame (and the memfds that go with it, which are closed
        here whatever happens)."""
        try:
            self.connect()
            self._flush_cancels()
            self._sendall(frame, deadline, fds)
        finally:
            close_fds(fds)

    def _sendall(self, frame, deadline, fds=()):
        """Sends a frame: bytes, or a list of buffers from encode_parts()."""
        try:
            if fds:
                self._sendmsg_all(frame if isinstance(frame, list) else [frame], deadline, fds)
                return
            if isinstance(frame, list):
                if len(frame) == 1:
                    frame = frame[0]
                else:
                    self._sendmsg_all(frame, deadline)
                    return
            self.sock.settimeout(self._remaining(deadline))
            self.sock.sendall(frame)
        except socket.timeout:
            # Part of a frame may be out: the stream cannot be resynchronised.
            self.close()
            raise DirtyTimeoutError("Timeout sending to the dirty arbiter",
                                    timeout=self.timeout) from None
        except OSError as e:
            self.close()
            raise DirtyConnectionError("Communication error: %s" % (e,),
                                       socket_path=self.socket_path) from e

    def _sendmsg_all(self, parts, deadline, fds=()):
        views = [memoryview(p).cast("B") for p in parts]
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        while views:
            self.sock.settimeout(self._remaining(deadline))
            n = self.sock.sendmsg(views[:512], anc)
            anc = []  # the descriptors went with the first byte
            consume(views, n)

    def cancel(self, request_id):
        """Tells the arbiter the caller gave up on request_id; its later
        frames are dropped here. Best effort, never raises."""
        self._inbox.pop(request_id, None)
        if self.sock is None:
            return
        try:
            self._sendall(codec.encode(codec.CANCEL, request_id, {}), time.monotonic() + 1.0)
        except Exception:
            pass

    def cancel_later(self, request_id):
        """As cancel(), for a context that cannot take the caller's lock (a
        finalizer): the CANCEL goes out before the next frame is sent."""
        self._inbox.pop(request_id, None)
        self._pending_cancels.append(request_id)

    def _flush_cancels(self):
        while self._pending_cancels:
            self.cancel(self._pending_cancels.pop())

    # -- receiving -------------------------------------------------------

    def open_stream(self, request_id):
        self._inbox[request_id] = collections.deque()

    def close_stream(self, request_id):
        self._inbox.pop(request_id, None)

    def _remaining(self, deadline):
        if deadline is None:
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        return left

    def _recv_into(self, view, deadline, fds=True):
        """recv into view; with fds, the descriptors that come with the
        data are queued (a frame's memfds come with its first byte, so body
        reads, which stop at the frame's end, need no control buffer)."""
        self.sock.settimeout(self._remaining(deadline))
        if not fds:
            n = self.sock.recv_into(view)
            if n == 0:
                raise ConnectionResetError("the dirty arbiter closed the connection")
            return n
        n, anc, flags, _ = self.sock.recvmsg_into([view], ANCBUF, socket.MSG_CMSG_CLOEXEC)
        take_fds(anc, self._fdq)
        if flags & socket.MSG_CTRUNC:
            raise ConnectionResetError("descriptors from the dirty arbiter were lost")
        if n == 0:
            raise ConnectionResetError("the dirty arbiter closed the connection")
        return n

    def _read_frame(self, deadline):
        """Reads one frame: (type, id, body dict). Raises socket.timeout with
        the partial frame kept for the next call."""
        while self._head is None:
            self._hdr_got += self._recv_into(memoryview(self._hdr)[self._hdr_got:], deadline)
            if self._hdr_got == codec.HEADER_SIZE:
                try:
                    self._head = codec.decode_header(self._hdr, self.max_message)
                except ValueError as e:
                    self.close()
                    raise DirtyProtocolError("Bad message from the dirty arbiter: %s" % (e,),
                                             raw_data=bytes(self._hdr)) from None
                self._body_len = self._head[2] + self._head[3]
                self._body_got = 0
                if len(self._rbuf) < self._body_len:
                    self._rbuf = bytearray(self._body_len)
        view = memoryview(self._rbuf)
        try:
            while self._body_got < self._body_len:
                self._body_got += self._recv_into(view[self._body_got:self._body_len],
                                                  deadline, fds=False)
        finally:
            view.release()
        msg_type, rid, json_len, _ = self._head
        nfds = self._hdr[5]
        body = memoryview(self._rbuf)[:self._body_len]
        self._head = None
        self._hdr_got = 0
        fds, self._fdq = self._fdq[:nfds], self._fdq[nfds:]
        try:
            if len(fds) < nfds:
                self.close()
                raise DirtyProtocolError("Bad message from the dirty arbiter: %d memfd(s) "
                                         "announced, %d received" % (nfds, len(fds)))
            return msg_type, rid, codec.decode_body(body, json_len, fds, self.max_payload)
        except ValueError as e:
            self.close()
            raise DirtyProtocolError("Bad message from the dirty arbiter: %s" % (e,)) from None
        finally:
            close_fds(fds)
            body.release()
            if len(self._rbuf) > _KEEP_RBUF:
                self._rbuf = bytearray(64 << 10)

    def recv_for(self, request_id, deadline, timeout_message, timeout_value):
        """Returns (type, body) of the next frame for request_id. Frames for
        other live streams are queued for them; others are stale and dropped.
        On timeout raises DirtyTimeoutError (the connection stays usable)."""
        queued = self._inbox.get(request_id)
        if queued:
            return queued.popleft()
        if self.sock is None:
            raise DirtyConnectionError("Connection to the dirty arbiter was lost",
                                       socket_path=self.socket_path)
        try:
            while True:
                msg_type, rid, body = self._read_frame(deadline)
                if rid == request_id:
                    return msg_type, body
                other = self._inbox.get(rid)
                if other is not None:
                    other.append((msg_type, body))
        except socket.timeout:
            raise DirtyTimeoutError(timeout_message, timeout=timeout_value) from None
        except OSError as e:
            self.close()
            raise DirtyConnectionError("Communication error: %s" % (e,),
                                       socket_path=self.socket_path) from e
