"""cgunicorn's Python side: the pieces of the server that run inside the
embedded interpreter. Applications normally import `gunicorn.dirty`; this
package offers the same API as `cgunicorn.dirty`."""
