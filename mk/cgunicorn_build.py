"""cgunicorn's PEP 517 build backend, and `make dist`.

pip builds cgunicorn the way the project builds itself: ./configure, then
make. This backend drives those two steps with the interpreter pip runs it
under, so the server embeds that interpreter's (base) libpython, and packs
the result:

* the sdist (also the release tarball of `make dist`): every file git
  tracks plus the generated ./configure and PKG-INFO, so it builds with
  neither git, autoconf nor a network;
* the wheel: the `cgunicorn` binary as a script (it lands in the
  environment's bin/ and finds that environment's packages by itself) and
  the small `cgunicorn` launcher package behind `python -m cgunicorn`.

It needs nothing beyond the standard library, so pip's isolated build
environment installs no build requirement.

Run as a script: `python mk/cgunicorn_build.py sdist|wheel OUTDIR`.
"""

import base64
import hashlib
import io
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "cgunicorn"
SUMMARY = "A gunicorn-compatible pre-fork WSGI/ASGI server written in C, with dirty arbiters"
# Directories that are never part of a source distribution.
NOT_SOURCE = {".git", ".venv", "autom4te.cache", "__pycache__", "dist"}


def version():
    with open(os.path.join(ROOT, "VERSION")) as f:
        return f.read().strip()


def metadata():
    return (
        "Metadata-Version: 2.1\n"
        "Name: %s\n"
        "Version: %s\n"
        "Summary: %s\n"
        "Requires-Python: >=3.9\n"
        "Classifier: Programming Language :: C\n"
        "Classifier: Programming Language :: Python :: 3\n"
        "Classifier: Operating System :: POSIX :: Linux\n"
        "Classifier: Topic :: Internet :: WWW/HTTP :: WSGI :: Server\n"
        "Description-Content-Type: text/markdown\n"
        "\n" % (NAME, version(), SUMMARY)
    ) + _read("README.md")


def _read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def _fail(msg):
    sys.stderr.write("cgunicorn build: %s\n" % msg)
    raise SystemExit(1)


def _run(argv, cwd):
    sys.stderr.write("cgunicorn build: %s\n" % " ".join(argv))
    sys.stderr.flush()
    # A make above us (make check runs pip) must not hand its jobserver down.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    if subprocess.call(argv, cwd=cwd, stdout=sys.stderr, env=env) != 0:
        _fail("`%s` failed (in %s); its output is above" % (" ".join(argv), cwd))


def ensure_configure():
    """./configure exists in a tarball; a git checkout makes it from configure.ac."""
    conf = os.path.join(ROOT, "configure")
    if os.path.exists(conf) and os.path.getmtime(conf) >= os.path.getmtime(conf + ".ac"):
        return
    if shutil.which("autoreconf") is None:
        _fail("./configure is generated from configure.ac and autoreconf is not installed; "
              "install it (Debian: apt-get install -y autoconf automake pkg-config) "
              "or build from a release tarball (make dist), which carries ./configure")
    _run(["autoreconf", "-fi"], ROOT)


def source_files():
    """The files of a source distribution: git's list in a checkout, else
    (building from an unpacked sdist) what is there."""
    if os.path.isdir(os.path.join(ROOT, ".git")) and shutil.which("git"):
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                             stdout=subprocess.PIPE).stdout.decode()
        files = [f for f in out.split("\0") if f and os.path.lexists(os.path.join(ROOT, f))]
    else:
        files = []
        for d, dirs, names in os.walk(ROOT):
            rel = os.path.relpath(d, ROOT)
            dirs[:] = sorted(x for x in dirs if x not in NOT_SOURCE
                             and not (rel == "." and x.startswith("build")))
            files += [os.path.normpath(os.path.join(rel, n)) for n in names
                      if not n.endswith(".pyc") and n != "PKG-INFO"]
    files.append("configure")
    return sorted(set(files))


def build_sdist(sdist_directory, config_settings=None):
    ensure_configure()
    base = "%s-%s" % (NAME, version())
    os.makedirs(sdist_directory, exist_ok=True)
    path = os.path.join(sdist_directory, base + ".tar.gz")
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for rel in source_files():
            tar.add(os.path.join(ROOT, rel), arcname="%s/%s" % (base, rel), recursive=False)
        info = tarfile.TarInfo("%s/PKG-INFO" % base)
        data = metadata().encode()
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    return os.path.basename(path)


def _tag():
    impl = "cp%d%d" % sys.version_info[:2]
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    return impl, impl + getattr(sys, "abiflags", ""), plat


def compile_server():
    """configure + make in build/wheel against this interpreter; returns the binary."""
    ensure_configure()
    build = os.path.join(ROOT, "build", "wheel")
    os.makedirs(build, exist_ok=True)
    _run([os.path.join(ROOT, "configure"), "--with-python=" + sys.executable], build)
    jobs = str(max(1, len(os.sched_getaffinity(0))))
    _run(["make", "-j" + jobs, "BUILD=" + build, "all"], ROOT)
    return os.path.join(build, "cgunicorn")


class _Wheel:
    def __init__(self, path):
        self.zip = zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED)
        self.record = []

    def add(self, arcname, data, mode=0o644):
        info = zipfile.ZipInfo(arcname, date_time=(2026, 1, 1, 0, 0, 0))
        info.external_attr = (0o100000 | mode) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        self.zip.writestr(info, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        self.record.append("%s,sha256=%s,%d" % (arcname, digest, len(data)))

    def close(self, record_name):
        self.record.append(record_name + ",,")
        self.zip.writestr(record_name, "\n".join(self.record) + "\n")
        self.zip.close()


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    binary = compile_server()
    impl, abi, plat = _tag()
    ver = version()
    name = "%s-%s-%s-%s-%s.whl" % (NAME, ver, impl, abi, plat)
    dist_info = "%s-%s.dist-info" % (NAME, ver)
    os.makedirs(wheel_directory, exist_ok=True)
    wheel = _Wheel(os.path.join(wheel_directory, name))
    pkg = os.path.join(ROOT, "pkg", NAME)
    for n in sorted(os.listdir(pkg)):
        if n.endswith(".py"):
            with open(os.path.join(pkg, n), "rb") as f:
                wheel.add("%s/%s" % (NAME, n), f.read())
    # Without debug sections: what a user installs need not carry them.
    stripped = binary + ".stripped"
    if shutil.which("strip"):
        subprocess.run(["strip", "--strip-debug", "-o", stripped, binary], check=True)
    else:
        shutil.copyfile(binary, stripped)
    with open(stripped, "rb") as f:
        wheel.add("%s-%s.data/scripts/cgunicorn" % (NAME, ver), f.read(), 0o755)
    wheel.add(dist_info + "/METADATA", metadata().encode())
    wheel.add(dist_info + "/WHEEL", (
        "Wheel-Version: 1.0\nGenerator: cgunicorn_build %s\nRoot-Is-Purelib: false\n"
        "Tag: %s-%s-%s\n" % (ver, impl, abi, plat)).encode())
    wheel.close(dist_info + "/RECORD")
    return name


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    """What pip asks before building: the metadata alone, without compiling."""
    dist_info = "%s-%s.dist-info" % (NAME, version())
    os.makedirs(os.path.join(metadata_directory, dist_info), exist_ok=True)
    with open(os.path.join(metadata_directory, dist_info, "METADATA"), "w", encoding="utf-8") as f:
        f.write(metadata())
    return dist_info


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_wheel(config_settings=None):
    return []


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("sdist", "wheel"):
        _fail("usage: cgunicorn_build.py sdist|wheel OUTDIR")
    out = os.path.abspath(sys.argv[2])
    made = (build_sdist if sys.argv[1] == "sdist" else build_wheel)(out)
    print(os.path.join(out, made))
