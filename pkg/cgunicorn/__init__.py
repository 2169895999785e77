"""The installed face of cgunicorn: `python -m cgunicorn` runs the server.

The server itself is the `cgunicorn` program in this environment's bin/
(a C binary with CPython embedded). Inside it, `cgunicorn` and
`gunicorn.dirty` are served from the binary, not from this package.
"""
