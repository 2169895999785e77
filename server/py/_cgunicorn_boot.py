"""Serves the Python modules embedded in the cgunicorn binary.

cg_py.c executes this file once per interpreter and calls install(table) with
{name: (is_package, path, source)}. The finder goes first on sys.meta_path,
so the embedded `gunicorn.dirty` wins over an installed gunicorn's.
"""
import importlib.machinery
import sys


class EmbeddedFinder:
    """A meta path finder and loader (the importlib protocol, without the
    importlib.abc base classes, whose import costs every worker memory)."""

    def __init__(self, table):
        self.table = table

    def find_spec(self, fullname, path=None, target=None):
        row = self.table.get(fullname)
        if row is None:
            return None
        is_pkg, origin, _ = row
        spec = importlib.machinery.ModuleSpec(
            fullname, self, origin="<cgunicorn>/" + origin, is_package=bool(is_pkg)
        )
        if is_pkg:
            spec.submodule_search_locations = []
        spec.has_location = False
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        is_pkg, origin, source = self.table[module.__spec__.name]
        code = compile(source, "<cgunicorn>/" + origin, "exec", dont_inherit=True)
        exec(code, module.__dict__)

    def get_source(self, fullname):
        row = self.table.get(fullname)
        return row[2] if row else None


def install(table):
    finder = EmbeddedFinder(table)
    sys.meta_path.insert(0, finder)
    return finder
