"""The control socket against upstream's own client, `gunicornc` from the
test venv: every command, side by side with an upstream master (the same
JSON shapes and error texts), worker add/remove/kill taking effect, a peer
of another uid refused whatever the socket's mode, and clients that send
nothing or a byte at a time while the master keeps supervising (TTIN)."""
import json
import os
import re
import signal
import socket
import stat
import struct
import subprocess
import tempfile

import pytest

from conftest import GUNICORN, ROOT, VENV, Server
from dirty_support import APPS_DIR as DIRTY_APPS, COUNTER, arbiter_pid, wait_dirty_workers
from master_support import alive, get, read_pid, wait_until

APPS = os.path.join(ROOT, "tests", "apps", "master")
GUNICORNC = os.path.join(VENV, "bin", "gunicornc")

SHOW = ["show all", "show workers", "show dirty", "show config", "show stats",
        "show listeners", "help"]


def ctl(srv, command, path=None):
    """Runs gunicornc -j -c COMMAND; returns (rc, parsed JSON or None, stderr)."""
    r = subprocess.run([GUNICORNC, "-s", path or srv.control_socket, "-j", "-c", command],
                       capture_output=True, text=True, timeout=30)
    data = json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else None
    return r.returncode, data, r.stderr.strip()


def start(args=(), binary=None, cwd=APPS, env=None):
    return Server(["--chdir", cwd, "-w", "2"] + list(args) + ["app:app"], cwd=cwd,
                  binary=binary, env=env)


def shape(v):
    """The JSON shape of a value: keys and scalar types, list items by their first."""
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return [shape(v[0])] if v else []
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return type(v).__name__


def wait_socket(srv):
    wait_until(lambda: os.path.exists(srv.control_socket), what="control socket")


@pytest.fixture
def pair():
    cg = start()
    try:
        up = start(binary=GUNICORN)
    except Exception:
        cg.stop()
        raise
    try:
        for s in (cg, up):
            wait_socket(s)
            wait_until(lambda s=s: ctl(s, "show workers")[1]["count"] == 2, what="2 workers")
        yield cg, up
    finally:
        cg.stop()
        up.stop()


def test_show_commands_side_by_side(pair):
    cg, up = pair
    for command in SHOW:
        rc_cg, got, _ = ctl(cg, command)
        rc_up, want, _ = ctl(up, command)
        assert rc_cg == rc_up == 0, command
        assert shape(got) == shape(want), command
    assert ctl(cg, "help")[1] == ctl(up, "help")[1]
    cfg_cg, cfg_up = ctl(cg, "show config")[1], ctl(up, "show config")[1]
    for k in cfg_up:
        if k not in ("control_socket", "bind"):
            assert cfg_cg[k] == cfg_up[k], k
    assert cfg_cg["control_socket"] == cg.control_socket
    assert ctl(cg, "show dirty")[1] == ctl(up, "show dirty")[1]
    stats = ctl(cg, "show stats")[1]
    assert stats["pid"] == cg.proc.pid and stats["workers_current"] == 2
    assert stats["workers_spawned"] == 2 and stats["dirty_arbiter_pid"] is None
    lst = ctl(cg, "show listeners")[1]
    assert lst["count"] == 1 and lst["listeners"][0]["address"] == cg.url
    assert lst["listeners"][0]["type"] == "tcp"


def test_errors_side_by_side(pair):
    cg, up = pair
    for command in ["bogus", "show", "show nothing", "worker", "worker add x", "worker jump",
                    "worker kill", "dirty", "dirty jump", "worker kill 1", "dirty add",
                    "dirty remove 2"]:
        a, b = ctl(cg, command), ctl(up, command)
        assert a == b, command


def test_worker_add_remove_kill_side_by_side(pair):
    for srv in pair:
        assert ctl(srv, "worker add 2")[1] == {"added": 2, "previous": 2, "total": 4}
        wait_until(lambda: ctl(srv, "show workers")[1]["count"] == 4, what="4 workers")
        assert ctl(srv, "worker remove")[1] == {"removed": 1, "previous": 4, "total": 3}
        wait_until(lambda: ctl(srv, "show workers")[1]["count"] == 3, what="3 workers")
        assert ctl(srv, "show config")[1]["workers"] == 2  # the setting, not the target
        assert ctl(srv, "show stats")[1]["workers_target"] == 3
        assert ctl(srv, "worker remove 10")[1] == {"removed": 2, "previous": 3, "total": 1}
        wait_until(lambda: ctl(srv, "show workers")[1]["count"] == 1, what="1 worker")
        victim = ctl(srv, "show workers")[1]["workers"][0]["pid"]
        assert ctl(srv, "worker kill %d" % victim)[1] == {"success": True, "killed": victim}
        wait_until(lambda: [w["pid"] for w in ctl(srv, "show workers")[1]["workers"]] not in
                   ([], [victim]), what="worker replaced")
        assert get(srv.port, "/")[0] == 200


def test_reload_reopen_shutdown():
    srv = start()
    try:
        wait_socket(srv)
        assert ctl(srv, "reopen")[1] == {"status": "reopening"}
        srv.wait_for_log(r"Handling signal: usr1")
        assert ctl(srv, "reload")[1] == {"status": "reloading"}
        srv.wait_for_log(r"Hang up: Master")
        wait_until(lambda: ctl(srv, "show stats")[1]["reloads"] == 1, what="reload counted")
        assert ctl(srv, "shutdown")[1] == {"status": "shutting_down", "mode": "graceful"}
        srv.proc.wait(30)
        assert "Handling signal: term" in srv.log()
        assert not os.path.exists(srv.control_socket)
    finally:
        srv.stop()


def test_shutdown_quick():
    srv = start()
    try:
        wait_socket(srv)
        assert ctl(srv, "shutdown quick")[1] == {"status": "shutting_down", "mode": "quick"}
        srv.proc.wait(30)
        assert "Handling signal: int" in srv.log()
    finally:
        srv.stop()


def test_default_path_mode_and_disable(tmp_path):
    srv = start()
    try:
        wait_socket(srv)
        st = os.stat(srv.control_socket)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        srv.wait_for_log(r"Control socket listening at " + srv.control_socket)
    finally:
        srv.stop()
    path = str(tmp_path / "sub" / "dir" / "c.ctl")
    srv = start(["--control-socket", path, "--control-socket-mode", "0660"])
    try:
        wait_until(lambda: os.path.exists(path), what="custom control socket")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        assert ctl(srv, "show workers", path=path)[1]["count"] == 2
    finally:
        srv.stop()
    assert not os.path.exists(path)
    srv = start(["--no-control-socket"])
    try:
        assert get(srv.port, "/")[0] == 200
        assert not os.path.exists(srv.control_socket)
        assert "Control socket" not in srv.log()
    finally:
        srv.stop()


def frame(obj):
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


def read_frame(sock):
    buf = b""
    while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed after %d bytes" % len(buf))
        buf += chunk
    return json.loads(buf[4:])


def test_other_uid_refused(tmp_path):
    """Mode 0666 in a world-searchable directory: the kernel lets nobody
    connect, SO_PEERCRED makes the master hang up without a word."""
    d = tempfile.mkdtemp(prefix="cgtest-ctl-", dir="/tmp")
    os.chmod(d, 0o755)
    path = os.path.join(d, "c.ctl")
    srv = start(["--control-socket", path, "--control-socket-mode", "0666"])
    try:
        wait_until(lambda: os.path.exists(path), what="control socket")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: become nobody, connect, ask
            os.close(r)
            code = b"?"
            try:
                os.setgid(65534)
                os.setuid(65534)
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(10)
                s.connect(path)
                try:  # the master may hang up before or after the request is sent
                    s.sendall(frame({"id": 1, "command": "show workers", "args": []}))
                    code = b"answered" if s.recv(4) else b"closed"
                except (BrokenPipeError, ConnectionResetError):
                    code = b"closed"
            except BaseException as e:  # noqa: BLE001 - report anything to the parent
                code = repr(e).encode()
            os.write(w, code)
            os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            result = f.read()
        os.waitpid(pid, 0)
        assert result == b"closed"
        srv.wait_for_log(r"control socket: refused a client running as uid 65534")
        assert ctl(srv, "show workers", path=path)[1]["count"] == 2  # root still may
    finally:
        srv.stop()
        os.rmdir(d) if os.path.isdir(d) and not os.listdir(d) else None


def test_silent_and_slow_clients_do_not_hold_the_master():
    srv = start()
    try:
        wait_socket(srv)
        silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        silent.connect(srv.control_socket)
        slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        slow.connect(srv.control_socket)
        slow.settimeout(10)
        req = frame({"id": 7, "command": "show stats", "args": []})
        for b in req[:-1]:
            slow.send(bytes([b]))
        # Meanwhile the master supervises and answers others.
        srv.signal(signal.SIGTTIN)
        wait_until(lambda: ctl(srv, "show workers")[1]["count"] == 3, what="TTIN worker")
        slow.send(req[-1:])
        resp = read_frame(slow)
        assert resp["id"] == 7 and resp["status"] == "ok"
        assert resp["data"]["workers_current"] == 3
        # A second request on the same connection is answered too.
        slow.sendall(frame({"id": 8, "command": "help"}))
        assert read_frame(slow)["id"] == 8
        slow.sendall(frame({"command": "show"}))  # no id: 0, as upstream
        assert read_frame(slow) == {"id": 0, "status": "error", "error": "Invalid argument: "
                                    "Missing show target (all|workers|dirty|config|stats|listeners)"}
        # An oversized frame header closes that client only.
        bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        bad.connect(srv.control_socket)
        bad.settimeout(10)
        bad.sendall(struct.pack(">I", 1 << 30))
        assert bad.recv(10) == b""
        # Garbage JSON: dropped, as upstream.
        bad2 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        bad2.connect(srv.control_socket)
        bad2.settimeout(10)
        bad2.sendall(struct.pack(">I", 3) + b"{x]")
        assert bad2.recv(10) == b""
        assert get(srv.port, "/")[0] == 200
        assert ctl(srv, "show workers")[1]["count"] == 3
        for s in (silent, slow, bad, bad2):
            s.close()
    finally:
        srv.stop()


def test_many_clients_bounded():
    srv = start()
    try:
        wait_socket(srv)
        socks = []
        for _ in range(40):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(srv.control_socket)
            socks.append(s)
        wait_until(lambda: "clients already connected" in srv.log(), what="slots full")
        for s in socks:
            s.close()
        wait_until(lambda: ctl(srv, "show workers")[0] == 0, what="served after the flood")
        assert get(srv.port, "/")[0] == 200
    finally:
        srv.stop()


def test_dirty_commands():
    srv = Server(["--chdir", DIRTY_APPS, "-w", "1", "--dirty-workers", "1", "--dirty-app",
                  COUNTER, "dirty_wsgi:app"], cwd=DIRTY_APPS)
    try:
        wait_socket(srv)
        wait_dirty_workers(srv, 1)
        apid = arbiter_pid(srv)
        d = ctl(srv, "show dirty")[1]
        assert d["enabled"] is True and d["pid"] == apid
        assert d["apps"][0]["import_path"] == COUNTER
        every = ctl(srv, "show all")[1]
        assert every["dirty_arbiter"] == {
            "pid": apid, "type": "dirty_arbiter", "role": "dirty master"}
        assert every["dirty_worker_count"] == 1
        (dw,) = every["dirty_workers"]
        assert set(dw) == {"pid", "age", "apps", "booted", "last_heartbeat"}
        assert dw["apps"] == [COUNTER] and dw["booted"] is True
        assert ctl(srv, "show stats")[1]["dirty_arbiter_pid"] == apid
        r = ctl(srv, "dirty add")[1]
        assert r["success"] is True and r["operation"] == "add" and r["requested"] == 1
        wait_dirty_workers(srv, 2)
        r = ctl(srv, "dirty add 2")[1]
        assert r["success"] is True and r["requested"] == 2
        wait_dirty_workers(srv, 4)
        r = ctl(srv, "dirty remove 3")[1]
        assert r["success"] is True and r["operation"] == "remove"
        wait_dirty_workers(srv, 1)
        wait_until(lambda: ctl(srv, "show all")[1]["dirty_worker_count"] == 1, what="status")
    finally:
        srv.stop()


def test_dirty_shows_side_by_side():
    def run(binary):
        srv = Server(["--chdir", DIRTY_APPS, "-w", "1", "--dirty-workers", "1", "--dirty-app",
                      COUNTER, "dirty_wsgi:app"], cwd=DIRTY_APPS, binary=binary)
        try:
            wait_socket(srv)
            wait_until(lambda: ctl(srv, "show all")[1]["dirty_worker_count"] == 1,
                       what="dirty worker listed")
            return {c: ctl(srv, c)[1] for c in ("show all", "show dirty", "show stats")}
        finally:
            srv.stop()

    ours, theirs = run(None), run(GUNICORN)
    assert ours["show dirty"]["apps"] == theirs["show dirty"]["apps"]
    assert shape(ours["show dirty"]) == shape(theirs["show dirty"])
    for got, want in ((ours["show all"], theirs["show all"]),
                      (ours["show stats"], theirs["show stats"])):
        for w in got.get("dirty_workers", []) + want.get("dirty_workers", []):
            w.pop("last_heartbeat")  # the arbiter keeps no heartbeat age (compatibility.md)
            w.pop("booted")  # upstream reports false even for a worker that serves
        assert shape(got) == shape(want)
    assert ours["show all"]["dirty_workers"][0]["apps"] == [COUNTER]


# ---- USR2 and HUP ----

def arbiter_of(path):
    rc, data, _ = ctl(None, "show all", path=path)
    return data["arbiter"]["pid"] if rc == 0 and data else None


def test_usr2_hands_the_control_socket_to_the_new_master(tmp_path):
    """As upstream: the new master binds the path again (the old one's
    socket is replaced); the old master's exit leaves the new socket in
    place, and `gunicornc` then talks to the new master."""
    pidfile = str(tmp_path / "m.pid")
    path = str(tmp_path / "c.ctl")
    srv = start(["--control-socket", path, "-p", pidfile])
    new = None
    try:
        wait_until(lambda: arbiter_of(path) == srv.proc.pid, what="the old master answering")
        srv.signal(signal.SIGUSR2)
        new = wait_until(lambda: read_pid(pidfile + ".2"), what="the new master")
        wait_until(lambda: arbiter_of(path) == new, what="the new master answering")
        srv.signal(signal.SIGQUIT)
        srv.proc.wait(30)
        assert os.path.exists(path)
        assert arbiter_of(path) == new
        wait_until(lambda: ctl(None, "show workers", path=path)[1]["count"] == 2,
                   what="the new master's workers")
    finally:
        if new:
            os.kill(new, signal.SIGTERM)
            wait_until(lambda: not alive(new), 30, "the new master gone")
        srv.stop()
    assert not os.path.exists(path)


def test_usr2_rollback_gives_the_control_socket_back(tmp_path):
    """The new master is stopped instead (a rollback): the old master,
    left running, binds its path again once the new one is gone."""
    pidfile = str(tmp_path / "m.pid")
    path = str(tmp_path / "c.ctl")
    srv = start(["--control-socket", path, "-p", pidfile])
    try:
        wait_until(lambda: arbiter_of(path) == srv.proc.pid, what="the old master answering")
        srv.signal(signal.SIGUSR2)
        new = wait_until(lambda: read_pid(pidfile + ".2"), what="the new master")
        wait_until(lambda: arbiter_of(path) == new, what="the new master answering")
        os.kill(new, signal.SIGTERM)
        wait_until(lambda: not alive(new), 30, "the new master gone")
        wait_until(lambda: arbiter_of(path) == srv.proc.pid, what="the old master again")
        srv.wait_for_log(r"Control socket listening at " + path + r"[\s\S]*"
                         r"Control socket listening at " + path + r"[\s\S]*"
                         r"Control socket listening at " + path)
    finally:
        srv.stop()


def write_conf(path, **settings):
    with open(path, "w") as f:
        for k, v in settings.items():
            f.write("%s = %r\n" % (k, v))


def hup_until(srv, pattern, nth=1):
    srv.signal(signal.SIGHUP)
    wait_until(lambda: len(re.findall(pattern, srv.log())) >= nth, 20, pattern)


def test_hup_moves_the_control_socket(tmp_path):
    conf = str(tmp_path / "c.conf.py")
    a, b = str(tmp_path / "a.ctl"), str(tmp_path / "sub" / "b.ctl")
    write_conf(conf, control_socket=a)
    srv = start(["-c", conf])
    try:
        wait_until(lambda: arbiter_of(a) == srv.proc.pid, what="a")
        # a -> b (its directory made): a is gone, b answers.
        write_conf(conf, control_socket=b)
        hup_until(srv, "Control socket listening at " + re.escape(b))
        assert not os.path.exists(a)
        assert arbiter_of(b) == srv.proc.pid
        # The mode alone.
        write_conf(conf, control_socket=b, control_socket_mode=0o660)
        hup_until(srv, "Hang up: Master", 2)
        wait_until(lambda: stat.S_IMODE(os.stat(b).st_mode) == 0o660, what="mode 0660")
        # A path that cannot be bound keeps b, and says why.
        blocker = tmp_path / "file"
        blocker.write_text("not a directory")
        bad = str(blocker / "c.ctl")
        write_conf(conf, control_socket=bad)
        hup_until(srv, "control_socket '%s'.*keeping %s" % (re.escape(bad), re.escape(b)))
        assert arbiter_of(b) == srv.proc.pid
        assert ctl(None, "show config", path=b)[1]["control_socket"] == b
        # Disabled: b goes; enabled again on a.
        write_conf(conf, control_socket=b, control_socket_disable=True)
        hup_until(srv, "Control socket closed")
        assert not os.path.exists(b)
        write_conf(conf, control_socket=a)
        hup_until(srv, "Control socket listening at " + re.escape(a), 2)
        assert arbiter_of(a) == srv.proc.pid
    finally:
        srv.stop()
    assert not os.path.exists(a)
