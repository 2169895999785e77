"""Python-side pieces of the WSGI environ that apps inspect as objects:
`wsgi.file_wrapper` (the worker sends a wrapped real file with sendfile(2))
and `wsgi.errors` (writes go to the server's error log)."""
import io
import os
import socket


class FileWrapper:
    """wsgi.file_wrapper: iterates a file-like object in blksize blocks."""

    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __getitem__(self, key):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise IndexError

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration


class WSGIErrorsWrapper(io.RawIOBase):
    """wsgi.errors: text written here lands in the error log as written."""

    def __init__(self, fd):
        super().__init__()
        self._fd = fd

    def writable(self):
        return True

    def write(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8", "replace")
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        return len(data)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        pass


class InvalidResponseHeaderName(Exception):
    """The application sent a response header name that is not a token."""


class InvalidResponseHeader(Exception):
    """The application sent a response header value with forbidden
    characters (CR, LF, NUL, other controls, or beyond latin-1)."""


def _decode_cert(der):
    """A DER certificate as ssl.SSLSocket.getpeercert() gives it (the
    stdlib's own decoder, which reads a PEM file)."""
    import ssl
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as f:
        f.write(ssl.DER_cert_to_PEM_cert(der))
        f.flush()
        return ssl._ssl._test_decode_cert(f.name)


class TLSSocket(socket.socket):
    """environ["gunicorn.socket"] of an HTTPS connection: the connection's
    socket, answering what an ssl.SSLSocket answers about its session
    (getpeercert, cipher, version, selected_alpn_protocol). `tls` is
    (version, (cipher, protocol, bits), peer DER or None, verified, alpn)
    from the server's TLS transport."""

    server_side = True

    def __init__(self, family, type, proto, fileno, tls):
        super().__init__(family, type, proto, fileno)
        self._cg_tls = tls

    def version(self):
        return self._cg_tls[0]

    def cipher(self):
        return self._cg_tls[1]

    def selected_alpn_protocol(self):
        return self._cg_tls[4] or None

    def getpeercert(self, binary_form=False):
        der = self._cg_tls[2]
        if der is None:
            return None
        if binary_form:
            return der
        if not self._cg_tls[3]:
            return {}  # not verified (cert_reqs 0), as ssl.SSLSocket answers
        return _decode_cert(der)
