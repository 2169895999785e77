"""The layers of DESIGN.md, read from the sources: core <- config, http <-
server, dirty. A lower layer never includes a header of an upper one: core/
includes only core/ headers; config/ and http/ include nothing from server/
or dirty/. Includes are by basename (-I flags), so each quoted include is
resolved to the directory whose header it names."""
import os
import re

from conftest import ROOT

LAYERS = ("core", "config", "http", "server", "dirty")
# What each lower layer may not include (the upper layers may include anything).
FORBIDDEN = {
    "core": ("config", "http", "server", "dirty"),
    "config": ("server", "dirty"),
    "http": ("server", "dirty"),
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def sources(layer):
    top = os.path.join(ROOT, layer)
    for d, _dirs, names in os.walk(top):
        for n in sorted(names):
            if n.endswith((".c", ".h")):
                yield os.path.join(d, n)


def header_homes():
    """basename of each header -> the layer directories that hold one."""
    homes = {}
    for layer in LAYERS:
        for path in sources(layer):
            if path.endswith(".h"):
                homes.setdefault(os.path.basename(path), set()).add(layer)
    return homes


def violations():
    homes = header_homes()
    bad = []
    for layer, banned in FORBIDDEN.items():
        for path in sources(layer):
            with open(path, errors="replace") as f:
                for i, line in enumerate(f, 1):
                    m = INCLUDE.match(line)
                    if m is None:
                        continue
                    name = os.path.basename(m.group(1))
                    for home in sorted(homes.get(name, ())):
                        if home in banned:
                            bad.append("%s:%d: includes %s, a header of %s/"
                                       % (os.path.relpath(path, ROOT), i, m.group(1), home))
    return bad


def test_every_layer_exists():
    for layer in LAYERS:
        assert any(True for _ in sources(layer)), "%s/ has no sources" % layer


def test_lower_layers_include_nothing_above_them():
    bad = violations()
    assert bad == [], "\n".join(bad)


def test_the_check_catches_an_upward_include(tmp_path, monkeypatch):
    """The scan itself works: a config/ file that includes cg_py.h (server/)
    and a core/ file that includes cg_conf.h (config/) are both reported."""
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
    (tmp_path / "server" / "cg_py.h").write_text("")
    (tmp_path / "config" / "cg_conf.h").write_text("")
    (tmp_path / "config" / "cg_conf_x.c").write_text('#include "cg_py.h"\n')
    (tmp_path / "core" / "cg_x.c").write_text('#include <stdio.h>\n#include "cg_conf.h"\n')
    (tmp_path / "http" / "cg_http_x.c").write_text('#include "cg_conf.h"\n')
    monkeypatch.setattr("test_layers.ROOT", str(tmp_path))
    bad = violations()
    assert len(bad) == 2, bad
    assert any("config/cg_conf_x.c:1: includes cg_py.h, a header of server/" in b for b in bad)
    assert any("core/cg_x.c:2: includes cg_conf.h, a header of config/" in b for b in bad)
