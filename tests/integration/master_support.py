"""Helpers for the master suites: the master's children from /proc, polling
with a deadline (never a timing verdict), plain HTTP GETs."""
import os
import socket
import time


def children(pid):
    """Pids whose parent is `pid` (from /proc/*/stat), zombies excluded."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[1]) == pid:
            out.append(int(name))
    return sorted(out)


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(cond, timeout=20, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out waiting for %s" % what)


def get(port, path="/", timeout=10):
    """One HTTP/1.0-style GET; returns (status, body) or raises OSError."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head:
        raise OSError("empty response")
    status = int(head.split(b" ", 2)[1])
    return status, body


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def kill_tree(pid, sig=9):
    """Kills `pid` and its children (for daemonized masters outside the
    harness's process group)."""
    for c in children(pid):
        try:
            os.kill(c, sig)
        except OSError:
            pass
    try:
        os.kill(pid, sig)
    except OSError:
        pass
