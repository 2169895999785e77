from gunicorn.dirty import DirtyApp


class BadInit(DirtyApp):
    def init(self):
        raise RuntimeError("model file missing: /nonexistent/model.bin")
