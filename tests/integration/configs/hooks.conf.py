def on_starting(server):
    pass


def post_fork(server, worker):
    pass


def post_request(worker, req):
    pass


class Hooks:
    @staticmethod
    def when_ready(server):
        pass


when_ready = Hooks.when_ready
worker_class = "gthread"
bind = "127.0.0.1:9002"
