# Marks each worker ready in its process title, as monitoring scripts expect.
import setproctitle


def post_worker_init(worker):
    setproctitle.setproctitle("[ready] " + setproctitle.getproctitle())
