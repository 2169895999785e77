"""Zero-copy dirty payloads: bytes values above dirty_zero_copy_threshold
travel in sealed memfds passed with SCM_RIGHTS (HTTP worker -> arbiter ->
dirty worker and back); the arbiter forwards the descriptors and never
holds the bytes. The app is tests/apps/dirty/dirty_zc_apps.py."""
import json
import os
import urllib.request

from conftest import run_cmd
from dirty_support import APPS_DIR, wait_dirty_workers
from master_support import wait_until

APP = "dirty_zc_apps:ZC"
MIB = 1 << 20


def start(server_factory, *extra):
    args = ["--workers", "1", "--dirty-workers", "1", "--dirty-app", APP,
            "--timeout", "300", "--dirty-timeout", "300"] + list(extra) + ["dirty_zc_apps:app"]
    srv = server_factory(args, cwd=APPS_DIR)
    wait_dirty_workers(srv, 1)
    return srv


def get(srv, path, timeout=300):
    with urllib.request.urlopen(srv.url + path, timeout=timeout) as r:
        return json.loads(r.read())


def arbiter(srv):
    return get(srv, "/ppid")["ppid"]


def vm_hwm(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM for pid %d" % pid)


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def memfds(srv):
    s = get(srv, "/stats")
    return s["http"]["memfd_sent"], s["http"]["memfd_received"], s["dirty"]["memfd_received"]


def test_256mib_echo_keeps_the_arbiter_small(server_factory):
    srv = start(server_factory)
    arb = arbiter(srv)
    r = get(srv, "/echo?size=%d" % (256 * MIB))
    assert r["got_len"] == 256 * MIB and r["got_type"] == "bytes"
    assert r["sent_sha"] == r["got_sha"]
    # the argument went out in a memfd and the result came back in one
    assert memfds(srv) == (1, 1, 1)
    assert get(srv, "/status")["memfds_forwarded"] == 2
    hwm = vm_hwm(arb)
    assert hwm < 64 * 1000 * 1000, "arbiter VmHWM %d bytes" % hwm


def test_large_results_and_stream_chunks(server_factory):
    srv = start(server_factory)
    r = get(srv, "/make?size=%d" % (5 * MIB + 3))
    assert r["len"] == 5 * MIB + 3 and r["sha"] == r["want_sha"]
    r = get(srv, "/stream?size=%d&n=4" % (3 * MIB))
    assert [(c["len"], c["first"], c["uniform"]) for c in r["chunks"]] == [
        (3 * MIB, "%02x" % i, True) for i in range(4)]
    sent, received, _ = memfds(srv)
    assert (sent, received) == (0, 5)
    # a chunk of exactly the threshold stays inline
    r = get(srv, "/stream?size=%d&n=2" % MIB)
    assert [c["len"] for c in r["chunks"]] == [MIB, MIB]
    assert memfds(srv)[1] == 5


def test_slow_reader_holds_back_memfd_chunks(server_factory):
    # memfd frames are a few bytes each: without its own back-pressure the
    # generator would run through all 30 chunks (240 MiB of memfds) while
    # the caller sleeps after the first
    srv = start(server_factory)
    r = get(srv, "/slowstream?size=%d&n=30" % (8 * MIB))
    assert r["lens"] == [8 * MIB] * 30
    assert r["produced_while_paused"] <= 6, r


def test_async_client_sends_and_receives_memfds(server_factory):
    srv = start(server_factory)
    r = get(srv, "/aecho?size=%d" % (3 * MIB))
    assert r["sent_sha"] == r["got_sha"] and r["got_type"] == "bytes"
    assert r["chunks"] == [3 * MIB, 3 * MIB]
    assert memfds(srv) == (1, 3, 1)
    r = get(srv, "/aecho?size=1000")  # small: inline
    assert r["sent_sha"] == r["got_sha"] and r["chunks"] == [1000, 1000]
    assert memfds(srv) == (1, 3, 1)


def test_threshold_is_honoured(server_factory):
    srv = start(server_factory, "--dirty-zero-copy-threshold", "100000")
    assert get(srv, "/digest?size=100000")["len"] == 100000
    assert memfds(srv) == (0, 0, 0)  # at the threshold: inline
    assert get(srv, "/digest?size=100001")["len"] == 100001
    assert memfds(srv) == (1, 0, 1)
    r = get(srv, "/echo?size=200000")
    assert r["sent_sha"] == r["got_sha"]
    assert memfds(srv) == (2, 1, 2)


def test_zero_threshold_turns_memfds_off(server_factory):
    srv = start(server_factory, "--dirty-zero-copy-threshold", "0")
    r = get(srv, "/echo?size=%d" % (3 * MIB))
    assert r["sent_sha"] == r["got_sha"]
    assert memfds(srv) == (0, 0, 0)
    assert get(srv, "/status")["memfds_forwarded"] == 0


def test_payload_over_the_limit_is_refused(server_factory):
    srv = start(server_factory, "--dirty-max-payload-size", "4000000")
    r = get(srv, "/echo?size=4000001")
    assert r["error"]["type"] == "DirtyProtocolError"
    assert "dirty_max_payload_size" in r["error"]["message"], r
    assert "4000001" in r["error"]["message"]
    # a result over the limit: the app's call fails with a DirtyAppError naming it
    r = get(srv, "/make?size=4000001")
    assert r["error"]["type"] == "DirtyAppError"
    assert "dirty_max_payload_size" in r["error"]["message"], r
    # under the limit still works, and inline frames are not bounded by it
    r = get(srv, "/echo?size=3999999")
    assert r["sent_sha"] == r["got_sha"]


def test_no_descriptor_leaks(server_factory):
    srv = start(server_factory, "--dirty-zero-copy-threshold", "65536",
                "--dirty-max-payload-size", "8000000")
    arb = arbiter(srv)
    get(srv, "/echo?size=100000")  # warm up: connections open, imports done
    worker = get(srv, "/status")["workers"][0]["pid"]
    before = fd_count(arb), fd_count(worker)
    for _ in range(30):
        r = get(srv, "/echo?size=%d" % (2 * MIB))
        assert r["sent_sha"] == r["got_sha"]
    for _ in range(5):
        assert get(srv, "/boom?size=%d" % MIB)["error"]["type"] == "DirtyAppError"
    for _ in range(3):  # the client gives up; the late reply's memfd is dropped
        r = get(srv, "/slow?size=%d&timeout=0.3" % MIB)
        assert r["error"]["type"] == "DirtyTimeoutError"
    for _ in range(3):  # a stream closed after its first chunk
        assert len(get(srv, "/stream?size=%d&n=50&take=1" % (MIB,))["chunks"]) == 1
    for _ in range(3):
        assert "error" in get(srv, "/echo?size=9000000")  # over the payload limit
        assert "error" in get(srv, "/make?size=9000000")
    r = get(srv, "/echo?size=%d" % (2 * MIB))
    assert r["sent_sha"] == r["got_sha"]
    assert get(srv, "/status")["memfds_forwarded"] > 60
    wait_until(lambda: (fd_count(arb), fd_count(worker)) == before, 20,
               "arbiter/worker fd counts back to %r (now %r)"
               % (before, (fd_count(arb), fd_count(worker))))


def test_bad_values_are_rejected_naming_the_flag():
    r = run_cmd(["--dirty-zero-copy-threshold", "-1", "--check-config", "app:app"])
    assert r.returncode != 0 and "--dirty-zero-copy-threshold" in (r.stdout + r.stderr)
    r = run_cmd(["--dirty-zero-copy-threshold", "1MB", "--check-config", "app:app"])
    assert r.returncode != 0 and "--dirty-zero-copy-threshold" in (r.stdout + r.stderr)
    r = run_cmd(["--dirty-max-payload-size", "0", "--check-config", "app:app"])
    assert r.returncode != 0 and "--dirty-max-payload-size" in (r.stdout + r.stderr)
    r = run_cmd(["--dirty-max-payload-size", "x", "--check-config", "app:app"])
    assert r.returncode != 0 and "--dirty-max-payload-size" in (r.stdout + r.stderr)


# -- a peer that does not follow the rules -----------------------------------

def _frame(msg_type, rid, body, blob=b"", nfds=0):
    import struct
    j = json.dumps(body).encode()
    return (b"CGD\x01" + bytes([msg_type, nfds, 0, 0]) + struct.pack(">QII", rid, len(j), len(blob))
            + j + blob)


def _read_frame(sock):
    import struct

    def exact(n):
        out = b""
        while len(out) < n:
            got = sock.recv(n - len(out))
            if not got:
                return None
            out += got
        return out
    head = exact(24)
    if head is None:
        return None
    rid, j, b = struct.unpack(">QII", head[8:24])
    body = exact(j + b)
    return head[4], rid, json.loads(body[:j])


def _memfd(data, seal=True):
    import fcntl
    fd = os.memfd_create("t", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(fd, data)
    if seal:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                    fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    return fd


def test_bad_memfd_frames_are_refused(server_factory):
    import array
    import socket
    srv = start(server_factory)
    arb = arbiter(srv)
    path = srv.wait_for_log(r"Dirty arbiter listening on (\S+)").group(1)
    request = {"app_path": APP, "action": "digest", "args": [{"\u0000m": [0, 5]}],
               "kwargs": {}, "fds": True}
    before = fd_count(arb)

    # a frame that announces a memfd but brings none: the connection is closed
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(_frame(1, 1, request, nfds=1))
        assert _read_frame(s) is None
    # a tag naming a descriptor the frame did not bring: refused by the arbiter
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        bad = dict(request, args=[{"\u0000m": [1, 5]}])
        fd = _memfd(b"hello")
        s.sendmsg([_frame(1, 2, bad, nfds=1)],
                   [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        os.close(fd)
        t, rid, body = _read_frame(s)
        assert (t, rid, body["error"]["type"]) == (3, 2, "DirtyProtocolError")
        assert "descriptor #1" in body["error"]["message"]
        # an unsealed memfd: the dirty worker refuses to map it
        fd = _memfd(b"hello", seal=False)
        s.sendmsg([_frame(1, 3, request, nfds=1)],
                   [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        os.close(fd)
        t, rid, body = _read_frame(s)
        assert (t, rid, body["error"]["type"]) == (3, 3, "DirtyProtocolError")
        assert "not sealed" in body["error"]["message"]
        # a sealed one shorter than its tag says
        fd = _memfd(b"hel")
        s.sendmsg([_frame(1, 4, request, nfds=1)],
                   [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        os.close(fd)
        t, rid, body = _read_frame(s)
        assert body["error"]["type"] == "DirtyProtocolError" and "shorter" in \
            body["error"]["message"]
        # and a good one works on the same connection
        fd = _memfd(b"hello")
        s.sendmsg([_frame(1, 5, request, nfds=1)],
                   [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        os.close(fd)
        t, rid, body = _read_frame(s)
        assert (t, rid, body["result"]["len"]) == (2, 5, 5)
        # memfds on a stash frame are refused
        fd = _memfd(b"hello")
        s.sendmsg([_frame(7, 6, {"op": "put", "table": "t", "key": "k",
                                 "value": {"\u0000m": [0, 5]}}, nfds=1)],
                   [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
        os.close(fd)
        t, rid, body = _read_frame(s)
        assert (t, rid, body["error"]["type"]) == (3, 6, "DirtyProtocolError")
    assert get(srv, "/digest?size=10")["len"] == 10  # still serving
    wait_until(lambda: fd_count(arb) == before, 10, "arbiter fds back to %d" % before)
