"""Worker classes in the shapes projects ship them: subclasses of the
Uvicorn worker that only set CONFIG_KWARGS, subclasses of gunicorn's
workers, and ones that override methods (which cgunicorn refuses)."""
from gunicorn.workers.gthread import ThreadWorker
from gunicorn.workers.sync import SyncWorker
from uvicorn.workers import UvicornWorker


class MountedWorker(UvicornWorker):
    CONFIG_KWARGS = {"root_path": "/mounted", "lifespan": "off"}


class TunedWorker(UvicornWorker):
    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "loop": "asyncio", "http": "httptools",
                     "ws": "wsproto", "lifespan": "on", "timeout_keep_alive": 7,
                     "limit_max_requests": 1000}


class MountedChild(MountedWorker):
    """A subclass of a subclass: the settings are inherited."""


class InitWorker(UvicornWorker):
    def init_process(self):
        super().init_process()


class DeadlineWorker(ThreadWorker):
    def handle_request(self, req, conn):
        return super().handle_request(req, conn)


class UnknownKeyWorker(UvicornWorker):
    CONFIG_KWARGS = {"h11_max_incomplete_event_size": 65536}


class NoWebSocketWorker(UvicornWorker):
    CONFIG_KWARGS = {"ws": "none"}


class FlaggedWorker(SyncWorker):
    use_reloader = True


class PlainThreads(ThreadWorker):
    pass


class PlainSync(SyncWorker):
    pass


class NotAWorker:
    pass
