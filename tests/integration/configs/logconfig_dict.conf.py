# The error and access logs through Python's logging, to the file named by
# $CG_LOG_OUT, with a formatter that shows the logger's name and level.
import os

_out = os.environ["CG_LOG_OUT"]
_level = os.environ.get("CG_LOG_LEVEL", "INFO")

logconfig_dict = {
    "formatters": {"plain": {"format": "%(name)s|%(levelname)s|%(message)s"}},
    "handlers": {"f": {"class": "logging.FileHandler", "filename": _out,
                       "formatter": "plain"}},
    "root": {"level": "WARNING", "handlers": ["f"]},
    "loggers": {
        "gunicorn.error": {"level": _level, "handlers": ["f"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["f"], "propagate": False},
    },
}
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s "%(a)s"'
