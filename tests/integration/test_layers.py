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


# ---- every byte to or from a client goes through the one transport ----

# Socket calls that move bytes or end a direction; only the transport makes
# them on client sockets.
SOCKET_IO = re.compile(
    r"(?<![\w.>])(recv|recvfrom|recvmsg|send|sendto|sendmsg|writev|readv|sendfile|splice|"
    r"shutdown)\s*\(")
# Plain read/write: banned where a client fd is at hand (the connection and
# response files); the worker loops use them on their own pipes and eventfds.
FD_IO = re.compile(r"(?<![\w.>])(read|write)\s*\(")
TRANSPORT = {"cg_transport.c", "cg_transport_tls.c"}
# server/ files whose sockets are not clients: sd_notify, statsd over UDP,
# the master's metrics listener (scrapers and probes, not the app's clients),
# the master's control socket (gunicornc, a local peer of the same uid) and
# its status query to the dirty arbiter.
NOT_CLIENT_SOCKETS = {"cg_daemon.c", "cg_statsd.c", "cg_metrics_http.c", "cg_control.c",
                      "cg_control_dirty.c"}
CONN_FILES = ("cg_conn.c", "cg_py_wsgi_conn.c", "cg_py_wsgi_resp.c", "cg_py_wsgi.c",
              "cg_py_asgi_conn.c", "cg_py_asgi_http.c", "cg_py_asgi_http_send.c",
              "cg_py_asgi_http_receive.c", "cg_py_asgi_ws.c", "cg_py_input.c")


def code_lines(path):
    """(line number, text) with comments and string literals blanked."""
    with open(path, errors="replace") as f:
        src = f.read()
    src = re.sub(r"/\*.*?\*/", lambda m: re.sub(r"[^\n]", " ", m.group(0)), src, flags=re.S)
    src = re.sub(r'"(\\.|[^"\\\n])*"', '""', src)
    src = re.sub(r"//[^\n]*", "", src)
    return enumerate(src.split("\n"), 1)


def server_sources(root):
    """Every .c file under server/, as (path relative to root, basename)."""
    top = os.path.join(root, "server")
    for d, dirs, names in os.walk(top):
        dirs.sort()
        for n in sorted(names):
            if n.endswith(".c"):
                yield os.path.relpath(os.path.join(d, n), root), n


def transport_bypasses(root=None):
    root = root or ROOT
    bad = []
    for rel, n in server_sources(root):
        if n in TRANSPORT or n in NOT_CLIENT_SOCKETS:
            continue
        for i, line in code_lines(os.path.join(root, rel)):
            for rx in (SOCKET_IO, FD_IO) if n in CONN_FILES else (SOCKET_IO,):
                m = rx.search(line)
                if m:
                    bad.append("%s:%d: calls %s() outside the transport (server/"
                               "cg_transport.h)" % (rel, i, m.group(1)))
    return bad


def test_client_io_goes_through_the_transport():
    bad = transport_bypasses()
    assert bad == [], "\n".join(bad)


def test_the_check_catches_a_bypass(tmp_path):
    """The scan works: direct socket calls in a worker file are reported, the
    same names in comments, strings, methods or the transport are not."""
    (tmp_path / "server" / "workers").mkdir(parents=True)
    (tmp_path / "server" / "asgi").mkdir()
    (tmp_path / "server" / "cg_transport.c").write_text("recv(fd, b, n, 0);\n")
    (tmp_path / "server" / "workers" / "cg_worker_x.c").write_text(
        "/* recv( in a comment */\n"
        "x = \"send(\";\n"
        "o->recv(t, b, n);\n"
        "n = writev(fd, iov, 2);\n"
        "  shutdown (fd, SHUT_WR);\n"
        "read(pipe_fd, b, 1);\n")
    (tmp_path / "server" / "asgi" / "cg_py_asgi_conn.c").write_text("n = read(c->fd, b, 9);\n")
    bad = transport_bypasses(str(tmp_path))
    assert len(bad) == 3, bad
    assert any("server/workers/cg_worker_x.c:4: calls writev()" in b for b in bad)
    assert any("server/workers/cg_worker_x.c:5: calls shutdown()" in b for b in bad)
    assert any("server/asgi/cg_py_asgi_conn.c:1: calls read()" in b for b in bad)


# ---- docs/architecture.md is the map: every room and every file is on it ----

def map_gaps(root=None):
    """Source directories and cg_*.c files that docs/architecture.md does not
    name. Directories are named as `dir/`, files by basename."""
    root = root or ROOT
    with open(os.path.join(root, "docs", "architecture.md")) as f:
        text = f.read()

    def named(word, before=r"[\w/]"):
        return re.search(r"(?<!%s)%s(?![\w])" % (before, re.escape(word)), text) is not None
    gaps = []
    for layer in LAYERS:
        top = os.path.join(root, layer)
        for d, dirs, names in os.walk(top):
            dirs[:] = sorted(x for x in dirs if x != "py")
            cfiles = sorted(n for n in names if n.endswith(".c"))
            if not cfiles:
                continue
            rel = os.path.relpath(d, root) + "/"
            if not named(rel):
                gaps.append("directory %s" % rel)
            for n in cfiles:
                if n.startswith("cg_") and not named(n[:-2], before=r"\w"):
                    gaps.append("file %s%s" % (rel, n))
    return gaps


def test_the_architecture_map_names_every_source_file():
    gaps = map_gaps()
    assert gaps == [], "docs/architecture.md does not mention: " + ", ".join(gaps)


def test_the_map_check_catches_a_missing_file(tmp_path):
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
        (tmp_path / layer / ("cg_%s_a.c" % layer)).write_text("")
    (tmp_path / "server" / "wsgi").mkdir()
    (tmp_path / "server" / "wsgi" / "cg_new.c").write_text("")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "architecture.md").write_text(
        "core/ config/ http/ server/ dirty/ cg_core_a cg_config_a cg_http_a "
        "cg_server_a cg_dirty_a")
    assert map_gaps(str(tmp_path)) == ["directory server/wsgi/", "file server/wsgi/cg_new.c"]


# ---- every fork and waitpid of the server goes through the one supervisor ----

# fork() and the wait family; vfork/clone would dodge the check as well.
PROCESS_CALLS = re.compile(r"(?<![\w.>])(fork|vfork|clone|waitpid|wait|wait3|wait4|waitid)\s*\(")
SUPERVISOR = "server/cg_supervisor.c"


def process_bypasses(root=None):
    """Calls to fork() or the wait family in any .c file of the layers
    outside the supervisor (comments and strings do not count)."""
    root = root or ROOT
    bad = []
    for layer in LAYERS:
        for path in _sources_under(root, layer):
            rel = os.path.relpath(path, root)
            if not path.endswith(".c") or rel == SUPERVISOR:
                continue
            for i, line in code_lines(path):
                m = PROCESS_CALLS.search(line)
                if m:
                    bad.append("%s:%d: calls %s() outside the supervisor (%s)"
                               % (rel, i, m.group(1), SUPERVISOR))
    return bad


def _sources_under(root, layer):
    for d, _dirs, names in os.walk(os.path.join(root, layer)):
        for n in sorted(names):
            if n.endswith((".c", ".h")):
                yield os.path.join(d, n)


def test_fork_and_waitpid_only_in_the_supervisor():
    bad = process_bypasses()
    assert bad == [], "\n".join(bad)


def test_the_check_catches_a_fork_outside_the_supervisor(tmp_path):
    """The scan works: fork() and waitpid() in a dirty/ or server/ file are
    reported, the supervisor's own calls and the words in comments, strings,
    longer names (cg_sup_fork, cg_sup_wait_one) and struct fields are not."""
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
    (tmp_path / "server" / "cg_supervisor.c").write_text(
        "pid = fork();\nwaitpid(-1, &st, WNOHANG);\n")
    (tmp_path / "dirty" / "cg_dirty_x.c").write_text(
        "/* fork() here? */\n"
        "pid = cg_sup_fork(CG_ROLE_DIRTY_WORKER);\n"
        "cg_sup_wait_one(pid, &st);\n"
        "x = \"waitpid(\";\n"
        "  while (waitpid (pid, &st, 0) < 0) {\n"
        "p->wait(1);\n")
    (tmp_path / "server" / "cg_master_x.c").write_text("pid_t p = fork ();\nwait4(p, 0, 0, 0);\n")
    (tmp_path / "core" / "cg_x.c").write_text("wait(NULL);\n")
    bad = process_bypasses(str(tmp_path))
    assert len(bad) == 4, bad
    assert any("dirty/cg_dirty_x.c:5: calls waitpid()" in b for b in bad)
    assert any("server/cg_master_x.c:1: calls fork()" in b for b in bad)
    assert any("server/cg_master_x.c:2: calls wait4()" in b for b in bad)
    assert any("core/cg_x.c:1: calls wait()" in b for b in bad)


# ---- no sleeping in the processes that supervise: they wait on the self-pipe ----

SLEEPS = re.compile(r"(?<![\w.>])(sleep|usleep|nanosleep|clock_nanosleep)\s*\(")
# The master's and the arbiter's files, and the supervisor that stops for them.
NO_SLEEP = re.compile(r"^(server/cg_master\w*|server/cg_supervisor|dirty/cg_dirty_arbiter\w*|"
                      r"dirty/cg_dirty_relay\w*)\.c$")


def sleepers(root=None):
    root = root or ROOT
    bad = []
    for layer in ("server", "dirty"):
        for path in _sources_under(root, layer):
            rel = os.path.relpath(path, root)
            if not NO_SLEEP.match(rel):
                continue
            for i, line in code_lines(path):
                m = SLEEPS.search(line)
                if m:
                    bad.append("%s:%d: calls %s(); wait on the self-pipe with a deadline "
                               "(cg_sup_wait) instead" % (rel, i, m.group(1)))
    return bad


def test_no_sleep_in_the_master_or_the_arbiter():
    bad = sleepers()
    assert bad == [], "\n".join(bad)


def test_the_check_catches_a_sleep(tmp_path):
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
    (tmp_path / "server" / "cg_master_reload.c").write_text(
        "/* usleep(1) in a comment */\n  usleep(20000);\n")
    (tmp_path / "dirty" / "cg_dirty_arbiter.c").write_text("x = \"sleep(\";\nsleep (1);\n")
    (tmp_path / "server" / "cg_listen.c").write_text("sleep(1);\n")  # bind retry: allowed
    bad = sleepers(str(tmp_path))
    assert len(bad) == 2, bad
    assert any("server/cg_master_reload.c:2: calls usleep()" in b for b in bad)
    assert any("dirty/cg_dirty_arbiter.c:2: calls sleep()" in b for b in bad)
