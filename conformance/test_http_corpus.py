"""Gunicorn's HTTP request corpus (converted from the pinned upstream sdist
into build/corpus/http-requests by mk/corpus.py), fed
over raw sockets to a running server, whole and in fragments.

Valid cases: the environ-dumping app (tests/apps/http/envapp.py) must see
exactly the expected request(s): method, RAW_URI, PATH_INFO, QUERY_STRING,
SERVER_PROTOCOL, every HTTP_*/CONTENT_* variable (repeated fields joined
with ",", as gunicorn does) and the body read from wsgi.input.

Pipelining: the sync worker answers only the first request of a connection
and then closes it (as upstream's does), so for sync only the first expected
request is checked and exactly one response must come back; a worker class
that keeps connections alive (WORKER_TRAITS) must answer all of them, in
order.

Invalid cases: the server must answer with the status upstream gunicorn
gives for that error class, or close without answering where upstream does,
and the request must never reach the app -- except where upstream detects
the error only while the app reads the body (chunked framing and trailer
errors, see BODY_STAGE): upstream then has already called the app, and the
answer is still the error status.

ASGI: the asgi worker class serves tests/apps/http/asgienvapp.py, which
answers the same JSON from the ASGI scope and the http.request messages
(see its docstring for the mapping of each field).  The expected values
follow how upstream's `gunicorn -k asgi` builds the scope
(expected_asgi_env).  ASGI servers take a client's half-close for a
disconnect, so for that class the requests are sent without one and the
expected answers are read (exchange_until); ASGI_DIFFERS and
UPSTREAM_ASGI_IGNORES list the cases whose outcome differs, with reasons.

Run against upstream with CG_TEST_SERVERS=gunicorn to validate the suite.
"""
import base64
import glob
import json
import os
import sys
import urllib.parse

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cgtest_support import (ALL_WORKER_CLASSES, CORPUS, SERVERS, WORKER_TRAITS,  # noqa: E402
                            app_calls, exchange, exchange_until, final_responses,
                            parse_responses, server_pool)  # noqa: F401

# Corpus settings -> command-line flags (same spelling for both servers).
SETTING_FLAGS = {
    "proxy_protocol": "--proxy-protocol",
    "permit_obsolete_folding": "--permit-obsolete-folding",
    "permit_unconventional_http_method": "--permit-unconventional-http-method",
    "limit_request_field_size": "--limit-request-field_size",
    "limit_request_line": "--limit-request-line",
    "limit_request_fields": "--limit-request-fields",
    "strip_header_spaces": "--strip-header-spaces",
    "forwarded_allow_ips": "--forwarded-allow-ips",
    "header_map": "--header-map",
    "casefold_http_method": "--casefold-http-method",
}

# The status upstream gunicorn's worker answers for each corpus error class
# (its handle_error mapping); None: the connection is closed with no answer.
ERROR_STATUS = {
    "NoMoreData": None,
    "InvalidRequestLine": 400,
    "InvalidRequestMethod": 400,
    "InvalidHTTPVersion": 400,
    "InvalidHeader": 400,
    "InvalidHeaderName": 400,
    "InvalidSchemeHeaders": 400,
    "InvalidProxyLine": 400,
    "ObsoleteFolding": 400,
    "InvalidChunkSize": 400,
    "ChunkMissingTerminator": 400,
    "InvalidChunkExtension": 400,
    "LimitRequestLine": 414,
    "LimitRequestHeaders": 431,
    "UnsupportedTransferCoding": 501,
    "ForbiddenProxyRequest": 403,
}

# Cases whose error upstream finds only while the app reads wsgi.input
# (the body is streamed, not parsed before the app is called): the app is
# called, its read raises, and the worker answers the error status.
BODY_STAGE = {
    "invalid/chunked_01": "bad chunk size in the second chunk",
    "invalid/chunked_09": "bad chunk size line (trailing space)",
    "invalid/chunked_10": "bad chunk size line (leading space)",
    "invalid/chunked_11": "chunk size line ended by bare LF",
    "invalid/chunked_12": "chunk size missing before extension",
    "invalid/chunked_14": "bare CR in chunk extension",
    "invalid/rfc9110_trailer_forbidden_host_01": "forbidden field in trailers",
    "invalid/rfc9110_trailer_forbidden_te_01": "forbidden field in trailers",
    "invalid/rfc9112_chunked_missing_final_crlf_01": "body ends before the last CRLF",
    "invalid/rfc9112_chunked_size_minus_sign_01": "bad chunk size",
    "invalid/rfc9112_chunked_size_plus_sign_01": "bad chunk size",
    "invalid/chunked_13": "chunk size line empty (the body starts with CRLF)",
    "invalid/rfc9110_trailer_forbidden_cl_01": "forbidden field in trailers",
}

# Cases where upstream's real server (gunicorn 27.0.1, sync worker) differs
# from the corpus's expectation; each is held to what that server really
# does: name -> (reason, status it answers, or None for "closed, no
# answer").  The request never reaches the app.  None in the 27.0.1
# release's corpus (the cases of this kind in earlier copies became
# invalid/ cases there); kept for the next pinned release.
UPSTREAM_DIFFERS = {}

# Where cgunicorn deliberately differs from upstream: name -> (reason,
# status, or None for "closed, no answer").  The app is called and its body
# read fails.  Also in docs/compatibility.md.
CGUNICORN_DIFFERS = {
    "valid/099": (
        "Content-Length: 17914 with 8,599 body bytes before the client's "
        "close: upstream hands the short body to the app as if it were whole; "
        "cgunicorn's wsgi.input raises (ASGI: http.disconnect) and nothing "
        "is answered, so a truncated upload is never taken for a complete one",
        None),
}

# ASGI (-k asgi): where the protocol makes the outcome differ from WSGI's,
# with upstream's `gunicorn -k asgi` as the reference: name -> (reason,
# status, or None for "closed, no answer").  Also in docs/compatibility.md.
ASGI_DIFFERS = {
    "invalid/rfc9112_chunked_missing_final_crlf_01": (
        "the body lacks only its last CRLF, which only the client's EOF can "
        "reveal; ASGI servers take a half-close for a disconnect, so the "
        "request is abandoned without an answer", None),
}

# Upstream's asgi worker (27.0.1) does not apply these settings; cgunicorn's
# asgi worker does (it shares the WSGI workers' parser), so it is held to the
# WSGI outcome and only a CG_TEST_SERVERS=gunicorn validation run expects
# upstream's: name -> (reason, the status upstream's asgi worker answers;
# 200 means it serves the request).  Also in docs/compatibility.md.
UPSTREAM_ASGI_IGNORES = {
    "valid/028": ("strip_header_spaces is not applied: 'Content-Length : 3' "
                  "is refused", 400),
    "valid/compat_obs_fold": ("permit_obsolete_folding is not applied: the "
                              "folded line is refused", 400),
    "valid/compat_obs_fold_huge": ("permit_obsolete_folding is not applied: "
                                   "the folded line is refused", 400),
    "invalid/limit_header_default_01": (
        "limit_request_field_size 0 is taken as unlimited, so the 8 KiB "
        "field is served instead of refused with 431", 200),
}

BYTEWISE_MAX = 160      # cases up to this size are also sent byte by byte
PIECE_PAUSE = 0.02      # pause between fragments (only to make the server
BYTE_PAUSE = 0.001      # see them separately; never decides a verdict)


def load_cases():
    if not os.path.isdir(CORPUS):
        raise pytest.UsageError(
            "HTTP corpus not found at %s; set CG_HTTP_CORPUS to the "
            "http-requests directory" % CORPUS)
    cases = []
    for kind in ("valid", "invalid"):
        for path in sorted(glob.glob(os.path.join(CORPUS, kind, "*.json"))):
            with open(path) as f:
                case = json.load(f)
            case["name"] = "%s/%s" % (kind, os.path.basename(path)[:-5])
            case["raw"] = base64.b64decode(case["raw_base64"])
            for key in case.get("settings", {}):
                if key not in SETTING_FLAGS:
                    raise pytest.UsageError(
                        "%s: setting %r has no CLI flag in SETTING_FLAGS "
                        "(conformance/test_http_corpus.py); add it" % (path, key))
            cases.append(case)
    return cases


CASES = load_cases()


def settings_args(settings):
    args = []
    for key, value in sorted(settings.items()):
        flag = SETTING_FLAGS[key]
        if key == "proxy_protocol":
            args += [flag, "auto" if value is True else str(value)]
        elif value is True:
            args.append(flag)
        elif value is False:
            continue
        else:
            args += [flag, str(value)]
    return args


def split_points(raw):
    """A few fragment boundaries that land in every part of a request:
    the first byte, inside the request line, inside the headers, around the
    end of the head, and inside the body."""
    head_end = raw.find(b"\r\n\r\n")
    first_eol = raw.find(b"\r\n")
    pts = {1, max(first_eol // 2, 1), first_eol + 1}
    if head_end > 0:
        pts |= {(first_eol + head_end) // 2, head_end + 1, head_end + 3}
        if len(raw) > head_end + 5:
            pts.add((head_end + 4 + len(raw)) // 2)
    return sorted(p for p in pts if 0 < p < len(raw))


def fragments(raw, mode):
    if mode == "whole":
        return [raw], 0.0
    if mode == "pieces":
        pts = [0] + split_points(raw) + [len(raw)]
        return [raw[a:b] for a, b in zip(pts, pts[1:])], PIECE_PAUSE
    if mode == "bytewise":
        return [raw[i:i + 1] for i in range(len(raw))], BYTE_PAUSE
    raise ValueError(mode)


def params():
    out = []
    for case in CASES:
        modes = ["whole", "pieces"]
        if len(case["raw"]) <= BYTEWISE_MAX:
            modes.append("bytewise")
        for mode in modes:
            out.append(pytest.param(case, mode, id="%s-%s" % (case["name"], mode)))
    return out


def wsgi_path(path):
    # PATH_INFO is the percent-decoded path, bytes shown as latin-1 (PEP 3333).
    return urllib.parse.unquote_to_bytes(path).decode("latin-1")


def expected_env(req):
    uri = req["uri"]
    env = {
        "REQUEST_METHOD": req["method"],
        "RAW_URI": uri["raw"],
        "QUERY_STRING": uri["query"],
        "PATH_INFO": wsgi_path(uri["path"]),
        "SERVER_PROTOCOL": "HTTP/%d.%d" % tuple(req["version"]),
    }
    joined = {}
    for name, value in req["headers"]:
        if name == "CONTENT-TYPE":
            env["CONTENT_TYPE"] = value
        elif name == "CONTENT-LENGTH":
            env["CONTENT_LENGTH"] = value
        else:
            joined.setdefault("HTTP_" + name.replace("-", "_"), []).append(value)
    for key, values in joined.items():
        env[key] = ",".join(values)
    return env


def expected_asgi_env(req, server_name):
    """expected_env() as asgienvapp.py derives it from an ASGI scope.  As
    upstream's asgi worker builds the scope, raw_path is the request
    target up to the first "?" (scheme and authority of an absolute-form
    target included), query_string everything after it (a "#fragment"
    included), and path is raw_path percent-decoded as UTF-8.  cgunicorn
    takes path, raw_path and query_string from the target's path and query
    as WSGI does (PATH_INFO, QUERY_STRING): no scheme, authority or
    fragment (docs/compatibility.md)."""
    env = expected_env(req)
    if server_name == "cgunicorn":
        target, query = req["uri"]["path"], req["uri"]["query"]
    else:
        target, _, query = req["uri"]["raw"].partition("?")
    path = urllib.parse.unquote_to_bytes(target).decode("utf-8", "replace")
    env["PATH_INFO"] = path.encode("utf-8").decode("latin-1")
    env["QUERY_STRING"] = query
    env["RAW_URI"] = target + ("?" + query if query else "")
    return env


def expected_body(req):
    body = req.get("body", "")
    if isinstance(body, dict):
        return base64.b64decode(body["base64"])
    return body.encode("latin-1")


def header_keys(env):
    return sorted(k for k in env if k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH"))


@pytest.mark.parametrize("worker_class", ALL_WORKER_CLASSES)
@pytest.mark.parametrize("server_name", SERVERS)
@pytest.mark.parametrize("case,mode", params())
def test_corpus_case(server_pool, server_name, worker_class, case, mode):
    srv = server_pool.get(server_name, worker_class, settings_args(case["settings"]))
    calls_before = len(app_calls(srv))
    pieces, pause = fragments(case["raw"], mode)
    kind, status = outcome(case, server_name, worker_class)
    want = answers_expected(case, worker_class, kind, status)
    if WORKER_TRAITS[worker_class].get("half_close_is_disconnect") and want:
        data = exchange_until(srv, pieces, want, pause)
    else:
        data = exchange(srv, pieces, pause)
    resps = parse_responses(data)
    finals = final_responses(resps)
    new_calls = app_calls(srv)[calls_before:]

    if kind == "valid":
        check_valid(case, srv, finals, new_calls, data)
    elif kind == "valid_then_no_host":
        # the requests before the one without Host are served, then a 400
        check_valid(case, srv, finals[:status], new_calls, data, case["requests"][:status])
        assert [r.status for r in finals[status:]] == [400], data[-300:]
    elif kind == "no_host":
        assert [r.status for r in finals] == [400], data[:300]
        assert new_calls == [], "a request without Host reached the app: %r" % new_calls
    elif kind == "served":
        assert [r.status for r in finals] == [200], data[:300]
    else:
        check_invalid(case, status, finals, new_calls, data)


# RFC 9112 3.2, which cgunicorn applies and upstream does not
# (docs/compatibility.md): an HTTP/1.1 request without exactly one Host
# header is refused with 400 when its head ends, before the app is called
# and before its body is read (so body-stage errors come second).
BODY_STAGE_ERRORS = ("InvalidChunkSize", "ChunkMissingTerminator", "InvalidChunkExtension")


def host_missing_at(case):
    """Index of the first request the Host rule refuses, or None."""
    if "requests" in case:
        for i, r in enumerate(case["requests"]):
            hosts = sum(1 for k, _ in r["headers"] if k == "HOST")
            if tuple(r["version"]) >= (1, 1) and hosts != 1:
                return i
        return None
    if case["error"] not in BODY_STAGE_ERRORS:
        return None  # found while the head is read, before the Host rule
    head = case["raw"].split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    hosts = sum(1 for line in head[1:] if line.lower().startswith(b"host:"))
    return 0 if head[0].endswith(b"HTTP/1.1") and hosts != 1 else None


def outcome(case, server_name, worker_class):
    """What the case must get: ("valid", None) -- the app sees the expected
    request(s); ("served", None) -- one 200 answer, contents not checked;
    ("error", status) -- that status, or None for "closed, no answer"."""
    name = case["name"]
    if worker_class == "asgi":
        if server_name == "gunicorn" and name in UPSTREAM_ASGI_IGNORES:
            status = UPSTREAM_ASGI_IGNORES[name][1]
            return ("served", None) if status == 200 else ("error", status)
        if name in ASGI_DIFFERS:
            return "error", ASGI_DIFFERS[name][1]
    if name in UPSTREAM_DIFFERS:
        return "error", UPSTREAM_DIFFERS[name][1]
    if server_name == "cgunicorn" and name in CGUNICORN_DIFFERS:
        return "error", CGUNICORN_DIFFERS[name][1]
    if server_name == "cgunicorn" and host_missing_at(case) is not None:
        k = host_missing_at(case)
        if k == 0:
            return "no_host", 400
        if WORKER_TRAITS[worker_class]["keeps_alive"]:
            return "valid_then_no_host", k
    if "requests" in case:
        return "valid", None
    return "error", ERROR_STATUS[case["error"]]


def answers_expected(case, worker_class, kind, status):
    """How many final responses the case must get from `worker_class`."""
    if kind == "valid":
        if not WORKER_TRAITS[worker_class]["keeps_alive"]:
            return 1
        return len(case["requests"])
    if kind == "served":
        return 1
    if kind == "valid_then_no_host":
        return status + 1
    return 0 if status is None else 1


def check_valid(case, srv, finals, new_calls, data, expected=None):
    expected = case["requests"] if expected is None else expected
    if not WORKER_TRAITS[srv.worker_class]["keeps_alive"]:
        expected = expected[:1]
    assert len(finals) == len(expected), (
        "expected %d response(s), got %d; raw answer: %r"
        % (len(expected), len(finals), data[:600]))
    assert len(new_calls) == len(expected), new_calls
    for want, resp in zip(expected, finals):
        assert resp.status == 200, resp
        got = resp.json()
        env = got["env"]
        exp = (expected_env(want) if WORKER_TRAITS[srv.worker_class]["wsgi"]
               else expected_asgi_env(want, srv.name))
        for key, value in exp.items():
            assert env.get(key) == value, (key, env.get(key), value)
        assert header_keys(env) == header_keys(exp), env
        assert base64.b64decode(got["body"]) == expected_body(want)


def check_invalid(case, status, finals, new_calls, data):
    name = case["name"]
    if status is None:
        assert finals == [], "expected a close without an answer, got %r" % data[:300]
    else:
        assert len(finals) == 1, "expected one %d answer, got %r" % (status, data[:300])
        assert finals[0].status == status, finals[0]
    if name in BODY_STAGE or name in CGUNICORN_DIFFERS:
        assert len(new_calls) <= 1, new_calls
    else:
        assert new_calls == [], "invalid request reached the app: %r" % new_calls
