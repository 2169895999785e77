# A gunicorn.conf.py that uses every server hook and the attributes real
# config files read. Each call appends one line to $HOOKS_OUT:
#   <actor> <hook> <details>
# actor is "master" or "worker<age>", so per-actor sequences can be compared
# between cgunicorn and upstream gunicorn without depending on pids.
import os

workers = 2
timeout = int(os.environ.get("HOOKS_TIMEOUT", "30"))
graceful_timeout = 5
loglevel = "info"
if os.environ.get("HOOKS_EXTRA"):
    exec(os.environ["HOOKS_EXTRA"])

OUT = os.environ["HOOKS_OUT"]


def emit(actor, hook, details=""):
    with open(OUT, "a") as f:
        f.write(("%s %s %s" % (actor, hook, details)).rstrip() + "\n")


def wname(worker):
    return "worker%d" % worker.age


def on_starting(server):
    assert server.pid == os.getpid()
    server.log.info("hook on_starting: %s workers", server.cfg.workers)
    emit("master", "on_starting", "workers=%s bind=%s" % (server.cfg.workers, type(server.cfg.bind).__name__))


def on_reload(server):
    emit("master", "on_reload", "num_workers=%s" % server.num_workers)


def when_ready(server):
    server.log.info("hook when_ready")
    emit("master", "when_ready", "pid_ok=%s" % (server.pid == os.getpid()))


def pre_fork(server, worker):
    emit("master", "pre_fork", "age=%d pid=%s" % (worker.age, worker.pid))


def post_fork(server, worker):
    assert worker.pid == os.getpid()
    server.log.info("hook post_fork: worker spawned (pid: %s)", worker.pid)
    emit(wname(worker), "post_fork", "ppid_ok=%s alive=%s" % (worker.ppid == os.getppid(), worker.alive))


def post_worker_init(worker):
    worker.log.info("hook post_worker_init")
    emit(wname(worker), "post_worker_init", "cfg_timeout=%s" % worker.cfg.timeout)


def worker_int(worker):
    worker.log.info("hook worker_int")
    emit(wname(worker), "worker_int")


def worker_abort(worker):
    worker.log.info("hook worker_abort")
    emit(wname(worker), "worker_abort")


def pre_exec(server):
    emit("master", "pre_exec")


def pre_request(worker, req):
    worker.log.debug("%s %s", req.method, req.path)
    emit(wname(worker), "pre_request", "%s %s query=%s version=%s host=%s" % (
        req.method, req.path, req.query, req.version,
        dict(req.headers).get("HOST") is not None))


def post_request(worker, req, environ, resp):
    emit(wname(worker), "post_request", "%s %s status=%s path_info=%s" % (
        req.method, req.uri, str(resp.status).split()[0], environ.get("PATH_INFO")))


def child_exit(server, worker):
    emit("master", "child_exit", "age=%d pid_int=%s" % (worker.age, isinstance(worker.pid, int)))


def worker_exit(server, worker):
    emit(wname(worker), "worker_exit", "alive=%s" % worker.alive)


def nworkers_changed(server, new_value, old_value):
    emit("master", "nworkers_changed", "%s %s" % (new_value, old_value))


def on_exit(server):
    emit("master", "on_exit")
