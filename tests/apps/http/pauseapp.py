"""Streams chunks with pauses the test controls: for the pause flush.

GET /?burst=N&pauses=P&length=0|1 answers P+1 bursts of N chunks (b"<i>.")
produced back to back; before burst i (i >= 1) the generator blocks until
the test writes one byte to the FIFO named by the X-Fifo request header plus
i (one FIFO per pause: a writer still open from the last pause cannot
release the next one). The test
writes only after it has received the whole burst before the pause, so a
server that holds a burst until the app produces more never finishes (the
test's socket read times out). length=1 sends a Content-Length (no chunked
framing); write=1 sends through the write() callable instead of yielding.
"""
import os
from urllib.parse import parse_qs


def bursts(n, pauses):
    out, k = [], 0
    for _ in range(pauses + 1):
        burst = []
        for _ in range(n):
            burst.append(b"%d." % k)
            k += 1
        out.append(burst)
    return out


def wait_for(fifo):
    fd = os.open(fifo, os.O_RDONLY)  # blocks until the test opens it to write
    try:
        os.read(fd, 1)
    finally:
        os.close(fd)


def app(environ, start_response):
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    plan = bursts(int(q.get("burst", "1")), int(q.get("pauses", "1")))
    fifo = environ["HTTP_X_FIFO"]
    headers = [("Content-Type", "text/plain")]
    if q.get("length") == "1":
        headers.append(("Content-Length", str(sum(len(c) for b in plan for c in b))))
    write = start_response("200 OK", headers)

    def gen():
        for i, burst in enumerate(plan):
            if i > 0:
                wait_for(fifo + str(i))
            for c in burst:
                yield c

    if q.get("write") == "1":
        for i, burst in enumerate(plan):
            if i > 0:
                wait_for(fifo + str(i))
            for c in burst:
                write(c)
        return [b""]
    return gen()
