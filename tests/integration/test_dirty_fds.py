"""The dirty arbiter and its workers serve no HTTP: they must not hold the
master's listening sockets (a listener held by a process that never accepts
queues connections nobody serves, and keeps the port bound)."""
import os

from dirty_support import COUNTER, arbiter_pid, call, children, start


def socket_inodes(pid):
    out = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def listener_inode(port):
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                if int(parts[1].rsplit(":", 1)[1], 16) == port and parts[3] == "0A":
                    return parts[9]
    raise AssertionError("no listening socket on port %d" % port)


def test_dirty_processes_do_not_hold_the_http_listener(server_factory):
    srv = start(server_factory, [COUNTER], dirty_workers=1)
    assert call(srv, COUNTER, "echo", "x")["result"] == "x"
    inode = listener_inode(srv.port)
    assert inode in socket_inodes(srv.proc.pid)  # the master holds it
    arb = arbiter_pid(srv)
    for pid in [arb] + children(arb):
        assert inode not in socket_inodes(pid), "pid %d holds the HTTP listener" % pid
