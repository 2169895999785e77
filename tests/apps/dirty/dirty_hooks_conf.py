"""Config file whose dirty hooks append to $DIRTY_HOOK_LOG, one line each."""
import os


def _note(*parts):
    with open(os.environ["DIRTY_HOOK_LOG"], "a") as f:
        f.write(" ".join(str(p) for p in parts) + "\n")


def on_dirty_starting(arbiter):
    _note("on_dirty_starting", os.getpid(), arbiter.pid)


def dirty_post_fork(arbiter, worker):
    _note("dirty_post_fork", os.getpid(), worker.pid, len(worker.apps))


def dirty_worker_init(worker):
    _note("dirty_worker_init", os.getpid(), worker.pid, ",".join(sorted(worker.apps)))


def dirty_worker_exit(arbiter, worker):
    _note("dirty_worker_exit", os.getpid(), worker.pid)
