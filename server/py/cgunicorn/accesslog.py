"""The access log, formatted exactly as gunicorn formats it.

The worker calls `AccessLog.log()` once per request when an access log is
configured. The format string is applied with Python's %-formatting to a
mapping of atoms (gunicorn's `access_log_format` semantics): unknown atoms
print as "-", `{header}i`, `{header}o` and `{var}e` atoms are looked up
case-insensitively, and double quotes inside string atoms are escaped.
"""
import os
import sys
import time


class SafeAtoms(dict):
    """The atoms mapping the access format is applied to: string values
    have their double quotes escaped, `{...}` keys are looked up
    case-insensitively and a missing atom prints as "-" (gunicorn's
    SafeAtoms; also gunicorn.glogging.SafeAtoms)."""

    def __init__(self, atoms):
        dict.__init__(self)
        for key, value in atoms.items():
            self[key] = value.replace('"', '\\"') if isinstance(value, str) else value

    def __getitem__(self, key):
        if key.startswith("{"):
            key = key.lower()
        return dict.get(self, key, "-")


def _basic_user(environ):
    auth = environ.get("HTTP_AUTHORIZATION")
    if not auth or not auth.lower().startswith("basic"):
        return None
    parts = auth.split(" ", 1)
    if len(parts) != 2:
        return None
    import base64  # only for a Basic Authorization header: not loaded otherwise
    import binascii
    try:
        return base64.b64decode(parts[1].strip().encode("utf-8")).split(b":", 1)[0].decode("utf-8")
    except (TypeError, binascii.Error, UnicodeDecodeError):
        return None


def build_atoms(environ, status, sent, secs, usecs, user, now, req_headers, resp_headers):
    """The mapping access_log_format is applied to (gunicorn's atoms):
    status is the code, sent the body bytes or None, user the basic-auth
    user or None, now the formatted time, the headers (name, value) pairs.
    Shared by the C access log and gunicorn.glogging.Logger.atoms()."""
    atoms = {
        "h": environ.get("REMOTE_ADDR", "-"),
        "l": "-",
        "u": user or "-",
        "t": now,
        "r": "%s %s %s" % (environ["REQUEST_METHOD"], environ["RAW_URI"],
                           environ["SERVER_PROTOCOL"]),
        "s": status,
        "m": environ.get("REQUEST_METHOD"),
        "U": environ.get("PATH_INFO"),
        "q": environ.get("QUERY_STRING"),
        "H": environ.get("SERVER_PROTOCOL"),
        "b": str(sent) if sent is not None else "-",
        "B": sent,
        "f": environ.get("HTTP_REFERER", "-"),
        "a": environ.get("HTTP_USER_AGENT", "-"),
        "T": secs,
        "D": secs * 1000000 + usecs,
        "M": secs * 1000 + usecs // 1000,
        "L": "%d.%06d" % (secs, usecs),
        "p": "<%s>" % os.getpid(),
    }
    for name, value in req_headers:
        atoms["{%s}i" % name.lower()] = value
    for name, value in resp_headers:
        atoms["{%s}o" % name.lower()] = value
    for name, value in environ.items():
        atoms["{%s}e" % name.lower()] = value
    return atoms


class AccessLog:
    """path: the accesslog file, "-" for stdout, or None (syslog only);
    syslog: also send each line to syslog (gunicorn's `syslog` setting)."""

    def __init__(self, fmt, path, syslog=False):
        self.fmt = fmt
        self.path = path
        self.stream = None
        self.syslog = syslog
        self.reopen()

    def reopen(self):
        if self.path is None:
            return
        if self.path == "-":
            self.stream = sys.stdout
            return
        if self.stream is not None and self.stream is not sys.stdout:
            self.stream.close()
        self.stream = open(self.path, "a", buffering=1, encoding="utf-8")

    def log(self, environ, status, resp_headers, sent, req_headers, duration_us):
        """status: the status line the app gave ("200 OK"); resp_headers: the
        app's (name, value) list; sent: body bytes written, or None;
        req_headers: the request's (NAME, value) list; duration_us: int."""
        secs, usecs = divmod(int(duration_us), 1000000)
        status = status.split(None, 1)[0] if isinstance(status, str) else status
        atoms = build_atoms(environ, status, sent, secs, usecs, _basic_user(environ),
                            time.strftime("[%d/%b/%Y:%H:%M:%S %z]"), req_headers, resp_headers)
        self.write(SafeAtoms(atoms))

    def write(self, atoms):
        try:
            line = self.fmt % atoms
        except Exception as exc:  # a bad format must not break serving
            import _cgunicorn
            _cgunicorn.log(3, "access log format %r failed: %r" % (self.fmt, exc))
            return
        if self.syslog:
            import _cgunicorn
            _cgunicorn.syslog_access(line)
        if self.stream is None:
            return
        self.stream.write(line + "\n")
        if self.stream is sys.stdout:
            self.stream.flush()
