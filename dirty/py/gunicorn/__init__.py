"""The `gunicorn` package as seen inside cgunicorn.

cgunicorn embeds its own `gunicorn.dirty` (and this package module) and
serves them ahead of an installed gunicorn. Every other `gunicorn.*`
submodule still comes from an installed gunicorn when there is one: its
directory is appended to this package's __path__.
"""
import importlib.machinery
import sys

version_info = (27, 0, 1)
__version__ = ".".join(str(v) for v in version_info)
SERVER = "gunicorn"
SERVER_SOFTWARE = "%s/%s" % (SERVER, __version__)

__path__ = list(globals().get("__path__", []))
for _entry in sys.path:
    _spec = importlib.machinery.PathFinder.find_spec("gunicorn", [_entry])
    if _spec is not None and _spec.submodule_search_locations:
        __path__.extend(_spec.submodule_search_locations)
        break
del _entry, _spec
