"""cgunicorn.dirty: the same API as gunicorn.dirty (it is that module's
contents), for code that prefers to name cgunicorn explicitly."""
from gunicorn.dirty import *  # noqa: F401,F403
from gunicorn.dirty import __all__  # noqa: F401
from gunicorn.dirty import app, client, errors, stash  # noqa: F401
