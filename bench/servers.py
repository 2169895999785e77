"""Server variants the benchmark runs: how each starts, when it is ready, how
it is stopped, and how much memory its process tree holds.

Every server is started in its own session (so its process group id is its
pid) pinned with taskset to the server CPUs, and is always stopped by signalling
the whole group, then SIGKILL for whatever is left.
"""
import http.client
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
APPS = os.path.join(BENCH, "apps")
VENV_BIN = os.path.join(BENCH, ".venv", "bin")
WORKERS = 2
THREADS = 4
READY_TIMEOUT = float(os.environ.get("BENCH_READY_TIMEOUT", "20"))

APP_SPECS = {
    "wsgi": "wsgi_app:app",
    "asgi": "asgi_app:app",
    "fastapi": "fastapi_app:app",
}
DIRTY_ARGS = ["--dirty-app", "dirty_bench:BenchDirtyApp", "--dirty-workers", "1"]


def cgunicorn_path():
    return os.environ.get("CGUNICORN") or os.path.join(REPO, "build", "cgunicorn")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def uwsgi_status():
    """None when uWSGI is usable, else the sentence saying why not."""
    path = os.path.join(BENCH, ".venv", "uwsgi-status")
    try:
        with open(path) as f:
            status = f.read().strip()
    except OSError:
        return "uWSGI did not build: bench/setup.sh has not run"
    if status != "ok":
        return status
    if not os.access(os.path.join(VENV_BIN, "uwsgi"), os.X_OK):
        return "uWSGI did not build: bench/.venv/bin/uwsgi is missing"
    return None


class Variant:
    """One way of running one server: cgunicorn sync, granian WSGI, ...

    kind is "cgunicorn", "peer" or "ceiling". build(app, port, tmpdir, dirty)
    returns the argv; app is a key of APP_SPECS or "static" (ceiling only).
    """

    def __init__(self, vid, label, kind, apps, build, unavailable=None, tls=False, h2=False,
                 app=None):
        self.id = vid
        self.label = label
        self.kind = kind
        self.apps = apps
        self.build = build
        self.unavailable = unavailable  # callable -> reason or None
        self.tls = tls                  # serves HTTPS with tls_files()
        self.h2 = h2                    # checked and loaded over HTTP/2 (curl, h2load)
        self.app = app                  # the app it serves whatever the scenario's (asgi)


_TLS = {}


def tls_files():
    """(certfile, keyfile): one self-signed certificate for 127.0.0.1 (RSA
    2048, as most deployments), made once per run with the openssl CLI and
    served by every HTTPS variant."""
    if not _TLS:
        d = tempfile.mkdtemp(prefix="cgbench-tls-")
        crt, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        key, "-out", crt, "-days", "2", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True)
        _TLS.update(crt=crt, key=key)
    return _TLS["crt"], _TLS["key"]


def _with_tls(build, flags):
    """A builder that adds the certificate to another's argv, before the app
    spec (its last argument). flags: (cert flag, key flag)."""
    def tls_build(app, port, tmpdir, dirty):
        argv = build(app, port, tmpdir, dirty)
        crt, key = tls_files()
        return argv[:-1] + [flags[0], crt, flags[1], key] + argv[-1:]
    return tls_build


def _gunicorn_like(binary, wclass, extra=()):
    def build(app, port, tmpdir, dirty):
        argv = [binary(), "-w", str(WORKERS), "-k", wclass,
                "-b", "127.0.0.1:%d" % port]
        if wclass == "gthread":
            argv += ["--threads", str(THREADS)]
        argv += list(extra)
        if dirty:
            argv += DIRTY_ARGS
        return argv + [APP_SPECS[app]]
    return build


def _upstream():
    return os.path.join(VENV_BIN, "gunicorn")


def _granian(interface, extra=()):
    def build(app, port, tmpdir, dirty):
        return [os.path.join(VENV_BIN, "granian"), "--interface", interface,
                "--workers", str(WORKERS), "--host", "127.0.0.1",
                "--port", str(port), "--no-ws"] + list(extra) + [APP_SPECS[app]]
    return build


def _uvicorn(app, port, tmpdir, dirty):
    return [os.path.join(VENV_BIN, "uvicorn"), "--workers", str(WORKERS),
            "--loop", "uvloop", "--http", "httptools", "--host", "127.0.0.1",
            "--port", str(port), "--no-access-log", "--log-level", "warning",
            APP_SPECS[app]]


def _uwsgi(app, port, tmpdir, dirty):
    return [os.path.join(VENV_BIN, "uwsgi"), "--http-socket",
            "127.0.0.1:%d" % port, "--http-auto-chunked", "--master",
            "--processes", str(WORKERS), "--module", APP_SPECS[app],
            "--need-app", "--disable-logging", "--die-on-term",
            "--pythonpath", APPS, "--listen", "1024"]


NGINX_CONF = """\
worker_processes %(workers)d;
daemon off;
master_process on;
pid %(tmp)s/nginx.pid;
error_log %(tmp)s/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %(tmp)s/body;
    proxy_temp_path %(tmp)s/proxy;
    fastcgi_temp_path %(tmp)s/fastcgi;
    uwsgi_temp_path %(tmp)s/uwsgi;
    scgi_temp_path %(tmp)s/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:%(port)d;
        location / { default_type text/plain; return 200 "Hello, World!"; }
    }
}
"""


def _nginx_bin():
    for p in ("/usr/sbin/nginx", "/usr/bin/nginx"):
        if os.access(p, os.X_OK):
            return p
    return None


def _nginx(app, port, tmpdir, dirty, tls=False, h2=False):
    conf = os.path.join(tmpdir, "nginx.conf")
    text = NGINX_CONF % {"workers": WORKERS, "tmp": tmpdir, "port": port}
    if tls:
        crt, key = tls_files()
        # The protocols every other HTTPS variant offers (TLS 1.2 and 1.3,
        # nginx's own default since 1.23.4): the nginx 1.22 of Debian 12
        # defaults to TLSv1 TLSv1.1 TLSv1.2, so wrk resumed TLS 1.2 sessions
        # with it (no key exchange) against TLS 1.3 ones elsewhere (an
        # X25519 exchange on each resumption too). nginx 1.22 spells HTTP/2
        # as a listen parameter.
        text = text.replace("listen 127.0.0.1:%d;" % port,
                            "listen 127.0.0.1:%d ssl%s;\n        ssl_certificate %s;\n"
                            "        ssl_certificate_key %s;\n"
                            "        ssl_protocols TLSv1.2 TLSv1.3;"
                            % (port, " http2" if h2 else "", crt, key))
    with open(conf, "w") as f:
        f.write(text)
    return [_nginx_bin(), "-p", tmpdir, "-e", os.path.join(tmpdir, "nginx-error.log"),
            "-c", conf]


def _missing(path_fn, what, fix="run bench/setup.sh"):
    def check():
        p = path_fn()
        if not p or not os.access(p, os.X_OK):
            return "%s not found (%s); %s" % (what, p, fix)
        return None
    return check


def _upstream_h2():
    """gunicorn 27 serves HTTP/2 only with the h2 package: bench/.venv's
    gunicorn once bench/requirements.txt installed it there, else the same
    gunicorn release from the test venv (requirements-test.txt has h2)."""
    import glob
    if glob.glob(os.path.join(BENCH, ".venv", "lib", "python3*", "site-packages", "h2")):
        return _upstream()
    test_venv = os.path.join(REPO, ".venv")
    if glob.glob(os.path.join(test_venv, "lib", "python3*", "site-packages", "h2")):
        return os.path.join(test_venv, "bin", "gunicorn")
    return None


def _h2_args(build):
    """A builder serving HTTP/2 (ALPN h2 first) and HTTP/1.1 on its TLS port."""
    def h2_build(app, port, tmpdir, dirty):
        argv = build(app, port, tmpdir, dirty)
        return argv[:-1] + ["--http-protocols", "h2,h1"] + argv[-1:]
    return h2_build


def _cg_missing():
    return _missing(cgunicorn_path, "the cgunicorn binary",
                    "`make` did not build it (or set CGUNICORN)")()


VARIANTS = {v.id: v for v in [
    Variant("cg-sync", "cgunicorn sync", "cgunicorn", ("wsgi",),
            _gunicorn_like(cgunicorn_path, "sync"),
            _cg_missing),
    Variant("cg-gthread", "cgunicorn gthread", "cgunicorn", ("wsgi",),
            _gunicorn_like(cgunicorn_path, "gthread"),
            _cg_missing),
    Variant("cg-asgi", "cgunicorn asgi", "cgunicorn", ("asgi", "fastapi"),
            _gunicorn_like(cgunicorn_path, "asgi"),
            _cg_missing),
    Variant("gu-sync", "gunicorn 27 sync", "peer", ("wsgi",),
            _gunicorn_like(_upstream, "sync", ["--no-control-socket"]),
            _missing(_upstream, "gunicorn")),
    Variant("gu-gthread", "gunicorn 27 gthread", "peer", ("wsgi",),
            _gunicorn_like(_upstream, "gthread", ["--no-control-socket"]),
            _missing(_upstream, "gunicorn")),
    Variant("gu-asgi", "gunicorn 27 asgi", "peer", ("asgi", "fastapi"),
            _gunicorn_like(_upstream, "asgi", ["--no-control-socket"]),
            _missing(_upstream, "gunicorn")),
    Variant("granian-wsgi", "granian wsgi", "peer", ("wsgi",), _granian("wsgi"),
            _missing(lambda: os.path.join(VENV_BIN, "granian"), "granian")),
    Variant("granian-asgi", "granian asgi", "peer", ("asgi", "fastapi"), _granian("asgi"),
            _missing(lambda: os.path.join(VENV_BIN, "granian"), "granian")),
    Variant("uvicorn", "uvicorn (uvloop, httptools)", "peer", ("asgi", "fastapi"), _uvicorn,
            _missing(lambda: os.path.join(VENV_BIN, "uvicorn"), "uvicorn")),
    Variant("uwsgi", "uWSGI", "peer", ("wsgi",), _uwsgi, uwsgi_status),
    Variant("nginx", "nginx return 200 (ceiling)", "ceiling", ("static",), _nginx,
            _missing(_nginx_bin, "nginx")),
    # HTTPS: the same servers with the same certificate (tls_files)
    Variant("cg-gthread-tls", "cgunicorn gthread", "cgunicorn", ("wsgi",),
            _with_tls(_gunicorn_like(cgunicorn_path, "gthread"), ("--certfile", "--keyfile")),
            _cg_missing, tls=True),
    Variant("cg-asgi-tls", "cgunicorn asgi", "cgunicorn", ("asgi",),
            _with_tls(_gunicorn_like(cgunicorn_path, "asgi"), ("--certfile", "--keyfile")),
            _cg_missing, tls=True),
    Variant("gu-gthread-tls", "gunicorn 27 gthread", "peer", ("wsgi",),
            _with_tls(_gunicorn_like(_upstream, "gthread", ["--no-control-socket"]),
                      ("--certfile", "--keyfile")),
            _missing(_upstream, "gunicorn"), tls=True),
    Variant("gu-asgi-tls", "gunicorn 27 asgi", "peer", ("asgi",),
            _with_tls(_gunicorn_like(_upstream, "asgi", ["--no-control-socket"]),
                      ("--certfile", "--keyfile")),
            _missing(_upstream, "gunicorn"), tls=True),
    Variant("granian-wsgi-tls", "granian wsgi", "peer", ("wsgi",),
            _with_tls(_granian("wsgi"), ("--ssl-certificate", "--ssl-keyfile")),
            _missing(lambda: os.path.join(VENV_BIN, "granian"), "granian"), tls=True),
    Variant("granian-asgi-tls", "granian asgi", "peer", ("asgi",),
            _with_tls(_granian("asgi"), ("--ssl-certificate", "--ssl-keyfile")),
            _missing(lambda: os.path.join(VENV_BIN, "granian"), "granian"), tls=True),
    Variant("uvicorn-tls", "uvicorn (uvloop, httptools)", "peer", ("asgi",),
            _with_tls(_uvicorn, ("--ssl-certfile", "--ssl-keyfile")),
            _missing(lambda: os.path.join(VENV_BIN, "uvicorn"), "uvicorn"), tls=True),
    Variant("nginx-tls", "nginx return 200 (ceiling)", "ceiling", ("static",),
            lambda app, port, tmpdir, dirty: _nginx(app, port, tmpdir, dirty, tls=True),
            _missing(_nginx_bin, "nginx"), tls=True),
    # HTTP/2 over TLS: the HTTPS variants with h2 offered first in ALPN
    Variant("cg-gthread-h2", "cgunicorn gthread", "cgunicorn", ("wsgi",),
            _h2_args(_with_tls(_gunicorn_like(cgunicorn_path, "gthread"),
                               ("--certfile", "--keyfile"))),
            _cg_missing, tls=True, h2=True),
    Variant("cg-asgi-h2", "cgunicorn asgi", "cgunicorn", ("asgi",),
            _h2_args(_with_tls(_gunicorn_like(cgunicorn_path, "asgi"),
                               ("--certfile", "--keyfile"))),
            _cg_missing, tls=True, h2=True, app="asgi"),
    Variant("gu-gthread-h2", "gunicorn 27 gthread", "peer", ("wsgi",),
            _h2_args(_with_tls(_gunicorn_like(_upstream_h2, "gthread", ["--no-control-socket"]),
                               ("--certfile", "--keyfile"))),
            _missing(_upstream_h2, "gunicorn with the h2 package"), tls=True, h2=True),
    Variant("granian-wsgi-h2", "granian wsgi --http 2", "peer", ("wsgi",),
            _with_tls(_granian("wsgi", ["--http", "2"]), ("--ssl-certificate", "--ssl-keyfile")),
            _missing(lambda: os.path.join(VENV_BIN, "granian"), "granian"), tls=True, h2=True),
    Variant("nginx-h2", "nginx return 200 (ceiling)", "ceiling", ("static",),
            lambda app, port, tmpdir, dirty: _nginx(app, port, tmpdir, dirty, tls=True, h2=True),
            _missing(_nginx_bin, "nginx"), tls=True, h2=True),
]}


def h2_get(port, path, timeout=2.0):
    """(status, body) of one HTTP/2 request over TLS with curl (the
    benchmark's certificate accepted); raises OSError when curl fails or the
    answer was not HTTP/2."""
    marker = b"\n--cgbench-status--"
    try:
        proc = subprocess.run(["curl", "-sk", "--http2", "--max-time", str(timeout), "-o", "-",
                               "-w", marker.decode() + "%{http_code} %{http_version}",
                               "https://127.0.0.1:%d%s" % (port, path)],
                              capture_output=True, timeout=timeout + 5)
    except subprocess.TimeoutExpired as e:
        raise OSError("curl timed out") from e
    body, _, tail = proc.stdout.rpartition(marker)
    if proc.returncode != 0 or not tail:
        raise OSError("curl exited %d" % proc.returncode)
    status, version = tail.decode().split()
    if version != "2":
        raise OSError("answered over HTTP/%s, not HTTP/2" % version)
    return int(status), body


def http_get(port, path, method="GET", body=None, timeout=2.0, tls=False):
    """(status, body) of one request (over HTTPS when tls, the benchmark's
    self-signed certificate accepted), or raises OSError/HTTPException."""
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Length": str(len(body))} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class Running:
    """A started server. stop() is idempotent and always kills the group."""

    live = set()

    def __init__(self, variant, app, dirty, server_cpus, prefix=()):
        self.variant = variant
        self.tmpdir = tempfile.mkdtemp(prefix="cgbench-")
        self.port = free_port()
        self.log_path = os.path.join(self.tmpdir, "server.log")
        self.proc = None
        self.error = None
        argv = variant.build(app, self.port, self.tmpdir, dirty)
        env = dict(os.environ)
        env["PYTHONPATH"] = APPS
        # Every server imports the apps' packages (FastAPI, ...) from bench/.venv;
        # cgunicorn's embedded interpreter finds it through $VIRTUAL_ENV.
        env["VIRTUAL_ENV"] = os.path.join(BENCH, ".venv")
        env["BENCH_DATA_DIR"] = self.tmpdir
        env.pop("GUNICORN_CMD_ARGS", None)
        self.argv = argv
        with open(self.log_path, "wb") as log:
            try:
                self.proc = subprocess.Popen(
                    ["taskset", "-c", server_cpus] + list(prefix) + argv, cwd=APPS, env=env,
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True)
            except OSError as e:
                self.error = "cannot start %s: %s" % (argv[0], e)
                return
        Running.live.add(self)

    def log_tail(self, n=3):
        """The log's most telling line: a traceback's last line, else the first
        specific [ERROR] line, else the last n lines."""
        try:
            with open(self.log_path, errors="replace") as f:
                lines = [ln.strip() for ln in f if ln.strip()]
        except OSError:
            return ""
        for ln in reversed(lines):
            if re.match(r"^[A-Za-z_.]*(Error|Exception|Exit)\b.*", ln):
                return ln
        generic = ("exited with code", "Shutting down", "Reason:", "Worker exiting")
        for ln in lines:
            if "[ERROR]" in ln and not any(g in ln for g in generic):
                return re.sub(r"^\[[^]]*\] \[\d+\] ", "", ln)
        return " | ".join(lines[-n:])

    def has_listening_line(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return "Listening at:" in f.read()
        except OSError:
            return False

    def wait_ready(self, path, timeout=READY_TIMEOUT):
        """True once `path` answers 200; else sets self.error and returns False."""
        if self.error:
            return False
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.error = "exited with status %s: %s" % (self.proc.returncode,
                                                            self.log_tail() or "no output")
                return False
            try:
                if self.variant.h2:
                    status, _ = h2_get(self.port, path)
                else:
                    status, _ = http_get(self.port, path, timeout=2.0, tls=self.variant.tls)
                if status == 200:
                    return True
                last = "HTTP %d on %s" % (status, path)
            except (OSError, http.client.HTTPException) as e:
                last = "%s: %s" % (type(e).__name__, e)
            time.sleep(0.05)
        self.error = "not ready after %.0f s (%s; log: %s)" % (timeout, last,
                                                              self.log_tail() or "empty")
        return False

    def pids(self):
        """Every pid of the server's process group (root first)."""
        if self.proc is None:
            return []
        pgid = self.proc.pid
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % name) as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            # fields[0] is state; pgrp is field 5 of stat, index 2 here
            if fields[0] != "Z" and int(fields[2]) == pgid:
                found.append(int(name))
        found.sort(key=lambda p: (p != pgid, p))
        return found

    def rss_kb(self):
        """(master_kb, workers_kb, n_workers) summed from /proc/*/status."""
        master = workers = count = 0
        for pid in self.pids():
            kb = _vm_rss(pid)
            if pid == self.proc.pid:
                master = kb
            else:
                workers += kb
                count += 1
        return master, workers, count

    def stop(self, grace=2.0):
        if self.proc is None:
            return
        pgid = self.proc.pid
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if self.proc.poll() is not None and not self.pids():
                    break
                time.sleep(0.05)
            if self.proc.poll() is not None and not self.pids():
                break
        try:
            self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
        Running.live.discard(self)
        self.proc = None
        if not os.environ.get("BENCH_KEEP_LOGS"):
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    @classmethod
    def stop_all(cls):
        for r in list(cls.live):
            r.stop()


def _vm_rss(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0
