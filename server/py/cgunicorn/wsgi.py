"""Python-side pieces of the WSGI environ that apps inspect as objects:
`wsgi.file_wrapper` (the worker sends a wrapped real file with sendfile(2))
and `wsgi.errors` (writes go to the server's error log)."""
import io
import os


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
