"""Access log: for the same requests and the same --access-logformat, the
lines cgunicorn writes must equal upstream gunicorn's byte for byte, except
the atoms that hold a time or a pid (t T D M L p), which are only checked
for their shape.  Every atom is covered: h l u t r m U q H s B b f a T D M L
p, {header}i, {header}o, {var}e, and an unknown atom.
"""
import os
import re
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "conformance"))
from cgtest_support import (CANDIDATE, REFERENCE, WORKER_CLASSES, ServerPool,  # noqa: E402
                            exchange)

SEP = "\x1f"  # atom separator unlikely to occur in a value

ATOMS = ["h", "l", "u", "t", "r", "m", "U", "q", "H", "s", "B", "b", "f", "a",
         "T", "D", "M", "L", "p", "{x-req}i", "{X-Req}i", "{user-agent}i",
         "{content-type}o", "{Content-Length}o", "{x-streamed}o", "{x-missing}o",
         "{wsgi.url_scheme}e", "{REQUEST_METHOD}e", "{path_info}e",
         "{nothing-here}e", "{nope}i", "zz"]
FORMAT = SEP.join("%s=%%(%s)s" % (a, a) for a in ATOMS)

# Values that legitimately differ: clock readings and the worker's pid.
VOLATILE = {
    "t": re.compile(r"\[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]"),
    "T": re.compile(r"\d+"),
    "D": re.compile(r"\d+"),
    "M": re.compile(r"\d+"),
    "L": re.compile(r"\d+\.\d{6}"),
    "p": re.compile(r"<\d+>"),
}

H = b"Host: example.test\r\n"
REQUESTS = [
    b"GET /plain HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /q/%C3%A9?a=1&b=%20 HTTP/1.1\r\n" + H +
    b"Referer: http://ref.example/page\r\nUser-Agent: TestAgent/1.0 (x; y)\r\n"
    b"X-Req: caf\xe9\r\nAuthorization: Basic YWxpY2U6c2VjcmV0\r\n\r\n",
    b"POST /post HTTP/1.0\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    b"HEAD /head HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /stream HTTP/1.1\r\n" + H + b"X-Cg-Mode: stream\r\n\r\n",
    b"GET /notfound HTTP/1.1\r\n" + H + b"X-Cg-Mode: status:404 Not Found\r\n\r\n",
    b"GET /nocontent HTTP/1.1\r\n" + H + b"X-Cg-Mode: status:204 No Content\r\n\r\n",
    b"GET /boom HTTP/1.1\r\n" + H + b"X-Cg-Mode: raise\r\nX-Req: r\r\n\r\n",
    b"GET /badauth HTTP/1.1\r\n" + H + b"Authorization: Basic !!!notb64\r\n\r\n",
    b"GET /bearer HTTP/1.1\r\n" + H + b"Authorization: Bearer abc\r\n\r\n",
    b"GET /https HTTP/1.1\r\n" + H + b"X-Forwarded-Proto: https\r\n\r\n",
    # a request the server refuses after reading its head (logged by upstream)
    b"GET /badcl HTTP/1.1\r\n" + H + b"Content-Length: 1x\r\n\r\n",
]


def read_lines(path, n, deadline=10):
    end = time.monotonic() + deadline
    while True:
        try:
            with open(path, "rb") as f:
                lines = f.read().split(b"\n")
        except FileNotFoundError:
            lines = [b""]
        done = [ln for ln in lines[:-1]]
        if len(done) >= n or time.monotonic() > end:
            return done
        time.sleep(0.05)


def split_atoms(line):
    out = {}
    for part in line.decode("utf-8", "surrogateescape").split(SEP):
        key, _, val = part.partition("=")
        out[key] = val
    return out


@pytest.fixture(scope="module")
def logged_pair(request):
    tmp = tempfile.TemporaryDirectory(prefix="cgaccess-")
    pool = ServerPool()
    made = {}

    def get(worker_class, fmt):
        key = (worker_class, fmt)
        if key not in made:
            pair = []
            for role, name in (("candidate", CANDIDATE), ("reference", REFERENCE)):
                log = os.path.join(tmp.name, "%s-%s-%d.log" % (role, worker_class, len(made)))
                srv = pool.get(name, worker_class,
                               ["--access-logfile", log, "--access-logformat", fmt],
                               tag=role, app="logapp:app")
                srv.access_log = log
                pair.append(srv)
            made[key] = pair
        return made[key]

    yield get
    pool.stop_all()
    tmp.cleanup()


def run_requests(srv):
    for raw in REQUESTS:
        exchange(srv, raw)
    return read_lines(srv.access_log, len(REQUESTS))


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_every_atom_matches_upstream(logged_pair, worker_class):
    cand, ref = logged_pair(worker_class, FORMAT)
    ref_lines = run_requests(ref)
    cand_lines = run_requests(cand)
    assert len(ref_lines) == len(REQUESTS), ref_lines
    assert len(cand_lines) == len(ref_lines), cand_lines
    for i, (c, r) in enumerate(zip(cand_lines, ref_lines)):
        ca, ra = split_atoms(c), split_atoms(r)
        assert list(ca) == ATOMS, c
        for atom in ATOMS:
            if atom in VOLATILE:
                assert VOLATILE[atom].fullmatch(ca[atom]), (i, atom, ca[atom])
                assert VOLATILE[atom].fullmatch(ra[atom]), (i, atom, ra[atom])
            else:
                assert ca[atom] == ra[atom], (i, atom, REQUESTS[i][:60], ca[atom], ra[atom])


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_default_format_matches_upstream(logged_pair, worker_class):
    # gunicorn's default access_log_format, spelled out
    fmt = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
    cand, ref = logged_pair(worker_class, fmt)
    ref_lines = run_requests(ref)
    cand_lines = run_requests(cand)
    assert len(ref_lines) == len(REQUESTS)
    mask = re.compile(VOLATILE["t"].pattern.encode())
    assert [mask.sub(b"[T]", ln) for ln in cand_lines] == \
        [mask.sub(b"[T]", ln) for ln in ref_lines]
    assert all(mask.search(ln) for ln in cand_lines)
