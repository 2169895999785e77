"""Builds gunicorn's HTTP request corpus into the build tree, from the
upstream release pinned in requirements-test.txt.

    python mk/corpus.py OUTDIR [--cache DIR]

Runs with the test virtualenv's interpreter (it evaluates the corpus's
expectation files, which import gunicorn's Config and error classes from the
installed gunicorn of the same version). Steps: fetch the sdist with pip
(skipped when the cache holds it), check it against the sha256 committed in
conformance/upstream-gunicorn.sha256, read tests/requests/{valid,invalid}
out of the tarball, and write one JSON file per case into
OUTDIR/{valid,invalid}/NAME.json:

  raw_base64   the exact bytes a client sends
  raw_preview  the same, latin-1, cut short (for reading)
  settings     the settings the case's expectation file sets (cfg.set)
  requests     valid cases: the requests the server must see, in order
               (method, uri parts, version, headers, body as base64)
  error        invalid cases: the name of the error class gunicorn raises

Exits 1 with a message naming what failed (download, hash, a case)."""
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HASH_FILE = os.path.join(ROOT, "conformance", "upstream-gunicorn.sha256")


def pinned_version():
    with open(os.path.join(ROOT, "requirements-test.txt")) as f:
        for line in f:
            m = re.match(r"\s*gunicorn==([\w.]+)", line)
            if m:
                return m.group(1)
    sys.exit("corpus: requirements-test.txt pins no gunicorn==VERSION")


def expected_hash(name):
    with open(HASH_FILE) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2 and parts[1] == name:
                return parts[0]
    sys.exit("corpus: %s has no sha256 for %s; add the line 'HASH  %s' "
             "(sha256sum of the file) after checking the release" % (HASH_FILE, name, name))


def fetch(version, cache):
    name = "gunicorn-%s.tar.gz" % version
    path = os.path.join(cache, name)
    if not os.path.exists(path):
        os.makedirs(cache, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
               "--no-deps", "--no-binary", ":all:", "gunicorn==%s" % version, "-d", cache]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0 or not os.path.exists(path):
            sys.exit("corpus: could not download the gunicorn %s sdist with pip (%s):\n%s"
                     % (version, " ".join(cmd), r.stderr.strip()))
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    want = expected_hash(name)
    if digest != want:
        sys.exit("corpus: %s has sha256 %s, expected %s (%s); delete it to download "
                 "again, or check the release and update the hash" % (path, digest, want,
                                                                   HASH_FILE))
    return path


def decode_http(text):
    """A corpus .http file is text with escapes: line breaks in the file are
    not data, and \\r\\n, \\n, \\t, \\0 and \\xHH stand for those bytes."""
    data = text.replace(b"\n", b"").replace(b"\\r\\n", b"\r\n")
    data = data.replace(b"\\0", b"\0").replace(b"\\n", b"\n").replace(b"\\t", b"\t")
    out = bytearray()
    i = 0
    while i < len(data):
        if data[i:i + 2] == b"\\x" and re.fullmatch(rb"[0-9A-Fa-f]{2}", data[i + 2:i + 4]):
            out.append(int(data[i + 2:i + 4], 16))
            i += 4
            continue
        out.append(data[i])
        i += 1
    if b"\\" in out:
        raise ValueError("an escape other than \\r\\n, \\n, \\t, \\0, \\xHH")
    return bytes(out)


def uri_parts(raw):
    """The uri() helper of the expectation files: the target split as
    gunicorn splits it."""
    from gunicorn.util import split_request_uri
    parts = split_request_uri(raw)
    return {
        "raw": raw,
        "scheme": parts.scheme or "",
        "host": parts.netloc.rsplit(":", 1)[0] or None,
        "port": parts.port or 80,
        "path": parts.path or "",
        "query": parts.query or "",
        "fragment": parts.fragment or "",
    }


def evaluate(source, fname):
    """Runs one expectation file; returns (expected, settings)."""
    from gunicorn.config import Config
    settings = {}

    class RecordingConfig(Config):
        def set(self, name, value):
            settings[name] = value
            super().set(name, value)

    mod = types.ModuleType("corpus_case")
    mod.uri = uri_parts
    mod.cfg = RecordingConfig()
    # The files import Config themselves and rebind cfg = Config(): make that
    # name the recording class too.
    import gunicorn.config
    real = gunicorn.config.Config
    gunicorn.config.Config = RecordingConfig
    try:
        exec(compile(source, fname, "exec"), mod.__dict__)
    finally:
        gunicorn.config.Config = real
    return mod.__dict__["request"], settings


def request_json(req):
    body = req.get("body", b"")
    if isinstance(body, str):
        body = body.encode("latin-1")
    return {
        "method": req["method"],
        "uri": req["uri"],
        "version": list(req["version"]),
        "headers": [[k, v] for k, v in req["headers"]],
        "body": {"base64": base64.b64encode(body).decode()},
        **({"trailers": [[k, v] for k, v in req["trailers"]]} if req.get("trailers") else {}),
    }


def convert(tar, member_prefix, out):
    names = {m.name: m for m in tar.getmembers()}
    n = 0
    for kind in ("valid", "invalid"):
        prefix = "%s/tests/requests/%s/" % (member_prefix, kind)
        os.makedirs(os.path.join(out, kind), exist_ok=True)
        for name in sorted(names):
            if not (name.startswith(prefix) and name.endswith(".http")):
                continue
            stem = name[len(prefix):-5]
            py = names.get(prefix + stem + ".py")
            if py is None:
                continue
            try:
                raw = decode_http(tar.extractfile(names[name]).read())
                expected, settings = evaluate(tar.extractfile(py).read(), py.name)
            except Exception as e:  # a case we cannot read is a build error, named
                sys.exit("corpus: %s: %s: %s" % (name, type(e).__name__, e))
            case = {"raw_base64": base64.b64encode(raw).decode(),
                    "raw_preview": raw[:400].decode("latin-1"),
                    "settings": settings}
            if kind == "valid":
                reqs = expected if isinstance(expected, list) else [expected]
                case["requests"] = [request_json(r) for r in reqs]
            else:
                case["error"] = expected.__name__
            with open(os.path.join(out, kind, stem + ".json"), "w") as f:
                json.dump(case, f, indent=1, sort_keys=True)
            n += 1
    return n


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    out = os.path.abspath(args[0])
    cache = os.path.join(os.path.dirname(out), "upstream")
    if "--cache" in args:
        cache = args[args.index("--cache") + 1]
    version = pinned_version()
    path = fetch(version, cache)
    tmp = out + ".tmp"
    if os.path.isdir(tmp):
        shutil.rmtree(tmp)
    with tarfile.open(path) as tar:
        n = convert(tar, "gunicorn-%s" % version, tmp)
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.rename(tmp, out)
    print("corpus: %d cases of gunicorn %s's request corpus in %s" % (n, version, out))


if __name__ == "__main__":
    main()
