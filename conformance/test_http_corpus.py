"""Gunicorn's HTTP request corpus (../shared/conformance/http-requests), fed
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
from cgtest_support import (CORPUS, SERVERS, WORKER_CLASSES, WORKER_TRAITS,  # noqa: E402
                            app_calls, exchange, final_responses,
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
}

# Cases where upstream's real server (gunicorn 27.0.1, sync worker) differs
# from the corpus's expectation; each is held to what that server really
# does: name -> (reason, status it answers, or None for "closed, no
# answer").  The request never reaches the app.  Also in docs/compatibility.md.
UPSTREAM_DIFFERS = {
    "valid/009": (
        "Transfer-Encoding: identity (not ending in chunked) next to "
        "Content-Length: the server applies RFC 9112 section 6.3 and refuses "
        "a request whose length cannot be determined (InvalidHeader)", 400),
    "valid/027": (
        "raw non-ASCII bytes in the request target: the server only accepts "
        "visible ASCII (0x21-0x7e) there, RFC 9112 section 3.2 "
        "(InvalidRequestLine)", 400),
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


def expected_body(req):
    body = req.get("body", "")
    if isinstance(body, dict):
        return base64.b64decode(body["base64"])
    return body.encode("latin-1")


def header_keys(env):
    return sorted(k for k in env if k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH"))


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
@pytest.mark.parametrize("server_name", SERVERS)
@pytest.mark.parametrize("case,mode", params())
def test_corpus_case(server_pool, server_name, worker_class, case, mode):
    srv = server_pool.get(server_name, worker_class, settings_args(case["settings"]))
    calls_before = len(app_calls(srv))
    pieces, pause = fragments(case["raw"], mode)
    data = exchange(srv, pieces, pause)
    resps = parse_responses(data)
    finals = final_responses(resps)
    new_calls = app_calls(srv)[calls_before:]

    if "requests" in case and case["name"] not in UPSTREAM_DIFFERS:
        check_valid(case, srv, finals, new_calls, data)
    else:
        check_invalid(case, finals, new_calls, data)


def check_valid(case, srv, finals, new_calls, data):
    expected = case["requests"]
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
        exp = expected_env(want)
        for key, value in exp.items():
            assert env.get(key) == value, (key, env.get(key), value)
        assert header_keys(env) == header_keys(exp), env
        assert base64.b64decode(got["body"]) == expected_body(want)


def check_invalid(case, finals, new_calls, data):
    name = case["name"]
    if name in UPSTREAM_DIFFERS:
        status = UPSTREAM_DIFFERS[name][1]
    else:
        status = ERROR_STATUS[case["error"]]
    if status is None:
        assert finals == [], "expected a close without an answer, got %r" % data[:300]
    else:
        assert len(finals) == 1, "expected one %d answer, got %r" % (status, data[:300])
        assert finals[0].status == status, finals[0]
    if name in BODY_STAGE:
        assert len(new_calls) <= 1, new_calls
    else:
        assert new_calls == [], "invalid request reached the app: %r" % new_calls
