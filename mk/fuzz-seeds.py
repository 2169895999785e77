"""Writes fuzz seeds for one target into a directory. HTTP targets: the
request corpus converted from upstream gunicorn into the build tree (JSON
files with raw_base64, see conformance/), each prefixed with the target's
option bytes (all zero: default settings, bytes in one piece). Dirty
targets: frames and JSON bodies of every message type, written here from
docs/dirty-protocol.md (random bytes rarely get past the header's magic).

usage: fuzz-seeds.py TARGET OUTDIR BUILD_DIR"""
import base64
import hashlib
import json
import os
import sys

PREFIX = {"http_parser": b"\0\0\0", "http_diff": b"\0"}


def corpus_files(build):
    for root, _dirs, files in os.walk(build):
        if "http-requests" not in root:
            continue
        for name in sorted(files):
            if name.endswith(".json"):
                yield os.path.join(root, name)


def dirty_bodies():
    b = {"\u0000b": [0, 3]}
    return [
        (1, {"app_path": "m:App", "action": "run", "args": [1, "x", b], "kwargs": {"k": b}}),
        (1, {"app_path": "m:App", "action": "gen", "args": [], "kwargs": {}, "timeout": 2.5,
             "stream": True}),
        (2, {"result": {"big": {"\u0000i": "123456789012345678901234567890"},
                        "nan": {"\u0000f": "nan"}, "\u0000\u0000k": [None, True, 1.5]}}),
        (3, {"error": {"type": "DirtyAppError", "message": "boom", "traceback": "tb",
                       "app_path": "m:App", "action": "run"}}),
        (4, {"data": b}),
        (5, {}),
        (6, {}),
        (7, {"op": "put", "table": "t", "key": "k", "value": [b, "v"]}),
        (8, {"status": {"workers": 2}}),
    ]


def dirty_seeds(target, out):
    import struct
    for i, (typ, body) in enumerate(dirty_bodies()):
        js = json.dumps(body, separators=(",", ":")).encode()
        blob = b"abc" if "\\u0000b" in js.decode("latin-1") else b""
        if target == "dirty_json":
            data = js
        else:
            data = b"CGD\x01" + bytes([typ, 0, 0, 0]) + struct.pack(">QII", i + 1, len(js),
                                                                    len(blob)) + js + blob
        with open(os.path.join(out, "seed-%s-%d" % (target, i)), "wb") as f:
            f.write(data)


def ws_frame(opcode, payload, fin=True, mask=b"\x01\x02\x03\x04"):
    import struct
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([0x80 | 127]) + struct.pack(">Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([(0x80 if fin else 0) | opcode]) + head + mask + masked


def ws_seeds(out):
    """Option bytes (largest message: 1 MiB; split 3), then client frames."""
    streams = [
        ws_frame(1, "hello é ✓ 😀".encode()),
        ws_frame(2, bytes(range(256)) * 2),
        ws_frame(1, b"a\xc3", fin=False) + ws_frame(0, b"\xa9b") + ws_frame(9, b"ping"),
        ws_frame(1, b"x\xed\xa0\x80", fin=False),
        ws_frame(8, b"\x03\xe8bye") + ws_frame(10, b""),
        ws_frame(2, b"z" * 70000),
        ws_frame(1, b"\xf4\x90\x80\x80"),
    ]
    for i, s in enumerate(streams):
        with open(os.path.join(out, "seed-ws_frame-%d" % i), "wb") as f:
            f.write(b"\xff\x03" + s)


def main():
    target, out, build = sys.argv[1:4]
    os.makedirs(out, exist_ok=True)
    if target == "ws_frame":
        ws_seeds(out)
        return 0
    if target.startswith("dirty_"):
        dirty_seeds(target, out)
        return 0
    prefix = PREFIX.get(target)
    if prefix is None:
        return 0
    n = 0
    for path in corpus_files(build):
        try:
            with open(path) as f:
                raw = base64.b64decode(json.load(f)["raw_base64"])
        except (OSError, ValueError, KeyError):
            continue
        data = prefix + raw
        name = "seed-" + hashlib.sha1(data).hexdigest()
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        n += 1
    print("fuzz %s: %d seeds from the request corpus" % (target, n), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
