"""Installing cgunicorn as its users do, from the sdist built from this
checkout (which is also `make dist`'s tarball):

* pip into a fresh virtualenv, offline: the binary lands in the venv's
  bin/, imports the venv's packages with no VIRTUAL_ENV set, serves a
  request; `python -m cgunicorn` runs it too;
* ./configure --prefix && make && make install from the unpacked tarball;
* a machine without the -dev packages gets one error naming them.
"""
import os
import subprocess
import sys
import tarfile
import urllib.request

import pytest

from conftest import ROOT, Server

BUILD_TIMEOUT = 900
APP = """\
import cg_packaging_probe

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [cg_packaging_probe.WORD.encode()]
"""


def version():
    with open(os.path.join(ROOT, "VERSION")) as f:
        return f.read().strip()


INHERITED = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VIRTUAL_ENV", "PYTHONPATH",
             "BUILD", "ASAN", "PYTHON", "CC", "CFLAGS", "LDFLAGS", "CONFIGURE_FLAGS",
             "prefix", "exec_prefix", "bindir", "DESTDIR")


def clean_env(**extra):
    """The environment of a user's shell: no make jobserver from `make
    check`, no virtualenv active, and none of the variables a parent make
    exports from its command line (`make check-asan` runs `make BUILD=build-asan
    ASAN=1 check`: an inner make of the tarball would inherit them, configure
    in build-asan without --prefix, and install into /usr/local)."""
    env = {k: v for k, v in os.environ.items() if k not in INHERITED}
    env.update(extra)
    return env


def run(argv, cwd, **extra):
    p = subprocess.run(argv, cwd=cwd, env=clean_env(**extra), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=BUILD_TIMEOUT)
    return p


def check(argv, cwd, **extra):
    p = run(argv, cwd, **extra)
    assert p.returncode == 0, "%s failed:\n%s" % (" ".join(argv), p.stdout[-4000:])
    return p.stdout


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    made = check([sys.executable, os.path.join(ROOT, "mk", "cgunicorn_build.py"), "sdist", str(out)], ROOT)
    path = made.strip().splitlines()[-1]
    assert os.path.basename(path) == "cgunicorn-%s.tar.gz" % version()
    return path


@pytest.fixture(scope="module")
def unpacked(sdist, tmp_path_factory):
    top = tmp_path_factory.mktemp("src")
    with tarfile.open(sdist) as tar:
        tar.extractall(top)
    return os.path.join(str(top), "cgunicorn-%s" % version())


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read().decode()


def serve_probe(binary, tmp, env):
    appdir = os.path.join(tmp, "app")
    os.makedirs(appdir, exist_ok=True)
    with open(os.path.join(appdir, "probe_app.py"), "w") as f:
        f.write(APP)
    with Server(["probe_app:app"], cwd=appdir, binary=binary, env=env) as srv:
        return get(srv.url + "/")


def test_sdist_carries_configure_and_metadata(sdist):
    with tarfile.open(sdist) as tar:
        names = set(tar.getnames())
    top = "cgunicorn-%s/" % version()
    for need in ("configure", "configure.ac", "PKG-INFO", "pyproject.toml", "VERSION",
                 "mk/cgunicorn_build.py", "server/cg_main.c", "pkg/cgunicorn/__main__.py"):
        assert top + need in names
    assert not any(n.startswith(top + ".git/") or n.startswith(top + "build/") for n in names)


def test_pip_install_sdist_into_fresh_venv_serves(sdist, tmp_path):
    venv = str(tmp_path / "venv")
    check([sys.executable, "-m", "venv", venv], str(tmp_path))
    pip = os.path.join(venv, "bin", "pip")
    check([pip, "install", "--no-index", "--disable-pip-version-check", sdist], str(tmp_path))
    binary = os.path.join(venv, "bin", "cgunicorn")
    assert os.access(binary, os.X_OK)
    # A package only this venv has: the installed binary finds it by itself.
    site = check([os.path.join(venv, "bin", "python"), "-c",
                  "import sysconfig; print(sysconfig.get_path('purelib'))"], str(tmp_path)).strip()
    with open(os.path.join(site, "cg_packaging_probe.py"), "w") as f:
        f.write("WORD = 'from the venv'\n")
    status, body = serve_probe(binary, str(tmp_path), {"VIRTUAL_ENV": ""})
    assert (status, body) == (200, "from the venv")
    out = check([os.path.join(venv, "bin", "python"), "-m", "cgunicorn", "--version"], str(tmp_path))
    assert "cgunicorn (version %s," % version() in out


def test_configure_make_install_from_tarball(unpacked, tmp_path):
    prefix = str(tmp_path / "inst")
    check(["./configure", "--prefix=" + prefix, "--with-python=" + sys.executable], unpacked)
    check(["make", "-j2", "all"], unpacked)
    check(["make", "install"], unpacked)
    binary = os.path.join(prefix, "bin", "cgunicorn")
    assert os.access(binary, os.X_OK)
    stage = str(tmp_path / "stage")
    check(["make", "install", "DESTDIR=" + stage], unpacked)
    assert os.access(stage + binary, os.X_OK)
    # Outside a venv the binary uses the interpreter it embeds: the probe
    # module comes from PYTHONPATH, as it would for a system install.
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "cg_packaging_probe.py").write_text("WORD = 'installed'\n")
    status, body = serve_probe(binary, str(tmp_path), {"VIRTUAL_ENV": "", "PYTHONPATH": str(probe)})
    assert (status, body) == (200, "installed")


def test_missing_dev_packages_named_in_one_error(unpacked, tmp_path):
    empty = tmp_path / "no-pc-files"
    empty.mkdir()
    build = tmp_path / "b"
    build.mkdir()
    p = run([os.path.join(unpacked, "configure"), "--with-python=" + sys.executable], str(build),
            PKG_CONFIG_LIBDIR=str(empty), PKG_CONFIG_PATH="")
    assert p.returncode != 0
    assert "apt-get install -y libevent-dev libjansson-dev" in p.stdout, p.stdout[-2000:]


def test_python_without_shared_libpython_is_refused(unpacked, tmp_path):
    # A stand-in interpreter that reports no shared libpython: configure
    # must refuse it and name the fix, not build a binary that cannot load.
    fake = tmp_path / "python3"
    fake.write_text(
        "#!/bin/sh\n"
        "case \"$2\" in *Py_ENABLE_SHARED*) echo 0; exit 0;; "
        "*_base_executable*) echo %s; exit 0;; esac\n"
        "exec %s \"$@\"\n" % (fake, sys.executable))
    fake.chmod(0o755)
    build = tmp_path / "b"
    build.mkdir()
    p = run([os.path.join(unpacked, "configure"), "--with-python=" + str(fake)], str(build))
    assert p.returncode != 0
    assert "without a shared libpython" in p.stdout
    assert "PYTHON_CONFIGURE_OPTS=--enable-shared" in p.stdout
