/* Body decoding edge cases and parser behaviour the corpus does not cover:
 * chunk extensions and trailers, truncation at EOF, bounded reads,
 * pipelining after a chunked body, Expect, limits, PROXY peers, scheme
 * headers, header_map, Upgrade, keep-alive, error pages. */
#include <arpa/inet.h>
#include <stdio.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "cg_http_date.h"
#include "cg_http_iplist.h"
#include "cg_http_parser.h"
#include "cg_test.h"

struct result {
    enum cg_http_status st;  /* last status: BODY_DONE, EOF or ERROR */
    char body[4096];
    size_t body_len;
    size_t left;             /* input bytes not consumed after BODY_DONE */
};

/* Parses one request from `s` with `step`-byte feeds and `max`-byte body
 * reads; eof: signal EOF when input runs out. The parser stays usable. */
static void parse(struct cg_http_parser *p, const char *s, size_t len, size_t step, size_t max,
                  bool eof, struct result *r)
{
    size_t pos = 0, used;
    enum cg_http_status st;

    memset(r, 0, sizeof(*r));
    for (;;) {
        size_t n = len - pos < step ? len - pos : step;
        st = cg_http_parser_head(p, s + pos, n, &used);
        pos += used;
        if (st == CG_HTTP_NEED_MORE && pos < len) {
            continue;
        }
        if (st == CG_HTTP_NEED_MORE) {
            st = eof ? cg_http_parser_eof(p) : CG_HTTP_NEED_MORE;
        }
        break;
    }
    if (st != CG_HTTP_HEAD_DONE) {
        r->st = st;
        return;
    }
    for (;;) {
        const char *d;
        size_t dl, n = len - pos < step ? len - pos : step;
        st = cg_http_parser_body(p, s + pos, n, &used, max, &d, &dl);
        pos += used;
        if (st == CG_HTTP_BODY_DATA) {
            memcpy(r->body + r->body_len, d, dl);
            r->body_len += dl;
            continue;
        }
        if (st == CG_HTTP_NEED_MORE) {
            if (pos < len) {
                continue;
            }
            st = eof ? cg_http_parser_eof(p) : CG_HTTP_NEED_MORE;
            if (st == CG_HTTP_NEED_MORE) {
                break;
            }
        }
        break;
    }
    r->st = st;
    r->left = len - pos;
}

#define S(lit) lit, sizeof(lit) - 1

static struct cg_http_limits lim;

static void test_chunked_extensions_and_trailers(void)
{
    struct cg_http_parser p;
    struct result r;
    static const char req[] =
        "POST /t HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        "4;name=\"q \\\"x\\\"\";flag\r\nWiki\r\n5 ; a = b\r\npedia\r\n0\r\nX-Checksum: abc\r\n"
        "x-other:  1 \r\n\r\nGET /next HTTP/1.1\r\nHost: t\r\n\r\n";

    for (size_t step = 1; step <= sizeof(req); step++) {
        cg_http_parser_init(&p, &lim, NULL);
        parse(&p, S(req), step, 3, false, &r);
        CG_CHECK_INT(r.st, CG_HTTP_BODY_DONE);
        CG_CHECK_INT(r.body_len, 9);
        CG_CHECK(memcmp(r.body, "Wikipedia", 9) == 0);
        const struct cg_http_request *q = cg_http_parser_request(&p);
        CG_CHECK_INT(q->n_trailers, 2);
        if (q->n_trailers == 2) {
            CG_CHECK_STR(q->trailers[0].name.ptr, "X-CHECKSUM");
            CG_CHECK_STR(q->trailers[0].value.ptr, "abc");
            CG_CHECK_STR(q->trailers[1].name.ptr, "X-OTHER");
            CG_CHECK_STR(q->trailers[1].value.ptr, "1");
        }
        /* the pipelined request is left to the caller, untouched */
        CG_CHECK_INT(r.left, strlen("GET /next HTTP/1.1\r\nHost: t\r\n\r\n"));
        CG_CHECK(!cg_http_request_should_close(q));
        CG_CHECK_INT(cg_http_parser_next(&p), 0);
        parse(&p, req + sizeof(req) - 1 - r.left, r.left, step, 0, true, &r);
        CG_CHECK_INT(r.st, CG_HTTP_BODY_DONE);
        CG_CHECK_STR(cg_http_parser_request(&p)->path.ptr, "/next");
        CG_CHECK_INT(cg_http_parser_request(&p)->req_number, 2);
        cg_http_parser_deinit(&p);
    }
}

static void expect_error(const char *req, size_t len, bool eof, enum cg_http_error_kind kind,
                         const char *detail)
{
    for (size_t step = 1; step <= len; step++) {
        struct cg_http_parser p;
        struct result r;
        cg_http_parser_init(&p, &lim, NULL);
        parse(&p, req, len, step, 0, eof, &r);
        CG_CHECK_INT(r.st, CG_HTTP_ERROR);
        CG_CHECK_STR(cg_http_error_name(cg_http_parser_error(&p)->kind), cg_http_error_name(kind));
        if (detail != NULL) {
            CG_CHECK_STR(cg_http_parser_error(&p)->detail, detail);
        }
        /* errors are sticky */
        size_t used;
        CG_CHECK_INT(cg_http_parser_head(&p, "x", 1, &used), CG_HTTP_ERROR);
        cg_http_parser_deinit(&p);
    }
}

#define CHUNKED_HEAD "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"

static void test_chunked_errors(void)
{
    expect_error(S(CHUNKED_HEAD "5\r\nhello!!"), false, CG_HTTP_ERR_CHUNK_MISSING_TERMINATOR,
                 "Invalid chunk terminator is not '\\r\\n': b'!!'");
    /* EOF inside data, inside the CRLF, inside the trailer section */
    expect_error(S(CHUNKED_HEAD "5\r\nhel"), true, CG_HTTP_ERR_NO_MORE_DATA, NULL);
    expect_error(S(CHUNKED_HEAD "5\r\nhello\r"), true, CG_HTTP_ERR_CHUNK_MISSING_TERMINATOR,
                 "Invalid chunk terminator is not '\\r\\n': b'\\r'");
    expect_error(S(CHUNKED_HEAD "0\r\nX: y\r\n"), true, CG_HTTP_ERR_CHUNK_MISSING_TERMINATOR,
                 NULL);
    expect_error(S(CHUNKED_HEAD "5;a=\"open\r\nhello\r\n0\r\n\r\n"), false,
                 CG_HTTP_ERR_INVALID_CHUNK_EXTENSION, "Invalid chunk extension: invalid chunk extension");
    expect_error(S(CHUNKED_HEAD "5;a \r\nhello\r\n0\r\n\r\n"), false,
                 CG_HTTP_ERR_INVALID_CHUNK_EXTENSION, NULL);
    expect_error(S(CHUNKED_HEAD "x\r\n"), false, CG_HTTP_ERR_INVALID_CHUNK_SIZE,
                 "Invalid chunk size: b'x'");
    /* absurd sizes are refused rather than waited for */
    expect_error(S(CHUNKED_HEAD "10000000000000000\r\n"), false, CG_HTTP_ERR_INVALID_CHUNK_SIZE,
                 NULL);
    expect_error(S(CHUNKED_HEAD "0\r\nHost: x\r\n\r\n"), false, CG_HTTP_ERR_INVALID_HEADER_NAME,
                 "Invalid HTTP header name: 'HOST'");
    expect_error(S(CHUNKED_HEAD "0\r\nX: a\nb\r\n\r\n"), false, CG_HTTP_ERR_INVALID_HEADER,
                 "Invalid HTTP Header: 'bare LF as line terminator'");
}

static void test_chunk_size_line_limit(void)
{
    char buf[9000];
    size_t n = (size_t)snprintf(buf, sizeof(buf), CHUNKED_HEAD "5;");
    memset(buf + n, 'a', 8300);
    n += 8300;
    expect_error(buf, n, false, CG_HTTP_ERR_INVALID_CHUNK_SIZE,
                 "Invalid chunk size: b'line over 8190 bytes with no terminator'");
}

static void test_length_body_bounded_reads(void)
{
    struct cg_http_parser p;
    struct result r;
    static const char req[] = "PUT /u HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123456789extra";

    cg_http_parser_init(&p, &lim, NULL);
    parse(&p, S(req), 4, 3, false, &r);
    CG_CHECK_INT(r.st, CG_HTTP_BODY_DONE);
    CG_CHECK_INT(r.body_len, 10);
    CG_CHECK(memcmp(r.body, "0123456789", 10) == 0);
    CG_CHECK_INT(r.left, 5);
    CG_CHECK(cg_http_parser_body_done(&p));
    cg_http_parser_deinit(&p);

    /* truncated Content-Length body: NoMoreData at EOF */
    expect_error(S("PUT /u HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123"), true,
                 CG_HTTP_ERR_NO_MORE_DATA, "No more data after: None");
    /* a clean close between requests is EOF, not an error */
    cg_http_parser_init(&p, &lim, NULL);
    CG_CHECK_INT(cg_http_parser_eof(&p), CG_HTTP_EOF);
    cg_http_parser_deinit(&p);
    expect_error(S("GET / HT"), true, CG_HTTP_ERR_NO_MORE_DATA, "No more data after: b'GET / HT'");
}

static void test_expect_continue(void)
{
    struct cg_http_parser p;
    struct result r;

    cg_http_parser_init(&p, &lim, NULL);
    parse(&p, S("POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\nx"), 64, 0,
          false, &r);
    CG_CHECK_INT(r.st, CG_HTTP_BODY_DONE);
    CG_CHECK(cg_http_parser_request(&p)->expect_continue);
    cg_http_parser_deinit(&p);

    cg_http_parser_init(&p, &lim, NULL);
    parse(&p, S("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n"), 64, 0, false, &r);
    CG_CHECK_INT(r.st, CG_HTTP_BODY_DONE);
    CG_CHECK(!cg_http_parser_request(&p)->expect_continue);
    cg_http_parser_deinit(&p);

    expect_error(S("GET / HTTP/1.1\r\nHost: t\r\nExpect: teapot\r\n\r\n"), false,
                 CG_HTTP_ERR_EXPECTATION_FAILED, "Unable to comply with expectation: 'teapot'");
    CG_CHECK_INT(cg_http_error_status(CG_HTTP_ERR_EXPECTATION_FAILED), 417);
}

static void test_request_line_limits(void)
{
    char buf[6000];
    size_t n = (size_t)snprintf(buf, sizeof(buf), "GET /");
    memset(buf + n, 'a', 4090);
    n += 4090;
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, " HTTP/1.1\r\nHost: t\r\n\r\n");
    /* "GET /" + 4090 + " HTTP/1.1" = 4104 > 4094 */
    expect_error(buf, n, false, CG_HTTP_ERR_LIMIT_REQUEST_LINE, NULL);
    CG_CHECK_INT(cg_http_error_status(CG_HTTP_ERR_LIMIT_REQUEST_LINE), 414);

    /* 0 means unlimited */
    struct cg_http_parser p;
    struct result r;
    struct cg_http_limits l0 = lim;
    l0.limit_request_line = 0;
    cg_http_parser_init(&p, &l0, NULL);
    parse(&p, buf, n, 1000, 0, false, &r);
    CG_CHECK_INT(r.st, CG_HTTP_BODY_DONE);
    CG_CHECK_INT(cg_http_parser_request(&p)->path.len, 4091);
    cg_http_parser_deinit(&p);

    /* limit_request_fields */
    struct cg_http_limits l2 = lim;
    l2.limit_request_fields = 2;
    cg_http_parser_init(&p, &l2, NULL);
    parse(&p, S("GET / HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"), 7, 0, false, &r);
    CG_CHECK_INT(r.st, CG_HTTP_ERROR);
    CG_CHECK_STR(cg_http_parser_error(&p)->detail, "limit request headers fields");
    cg_http_parser_deinit(&p);
}

static void peer4(struct sockaddr_in *sin, const char *ip)
{
    memset(sin, 0, sizeof(*sin));
    sin->sin_family = AF_INET;
    sin->sin_port = htons(5555);
    inet_pton(AF_INET, ip, &sin->sin_addr);
}

static void test_proxy_protocol_peers(void)
{
    struct cg_http_limits l = lim;
    struct cg_http_parser p;
    struct sockaddr_in sin;
    size_t used;
    static const char req[] = "PROXY TCP6 2001:db8::1 2001:db8::2 1234 443\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n";

    l.proxy_protocol = CG_HTTP_PROXY_V1;
    peer4(&sin, "10.1.2.3");
    cg_http_parser_init(&p, &l, (struct sockaddr *)&sin);
    CG_CHECK_INT(cg_http_parser_head(&p, S(req), &used), CG_HTTP_ERROR);
    CG_CHECK_INT(cg_http_parser_error(&p)->kind, CG_HTTP_ERR_FORBIDDEN_PROXY_REQUEST);
    CG_CHECK_STR(cg_http_parser_error(&p)->detail, "Proxy request from '10.1.2.3' not allowed");
    CG_CHECK_INT(cg_http_error_status(CG_HTTP_ERR_FORBIDDEN_PROXY_REQUEST), 403);
    cg_http_parser_deinit(&p);

    peer4(&sin, "127.0.0.1");
    cg_http_parser_init(&p, &l, (struct sockaddr *)&sin);
    CG_CHECK_INT(cg_http_parser_head(&p, S(req), &used), CG_HTTP_HEAD_DONE);
    const struct cg_http_proxy_info *pi = cg_http_parser_proxy_info(&p);
    CG_CHECK(pi != NULL);
    if (pi != NULL) {
        CG_CHECK_STR(pi->protocol, "TCP6");
        CG_CHECK_STR(pi->client_addr, "2001:db8::1");
        CG_CHECK_INT(pi->client_port, 1234);
        CG_CHECK_STR(pi->proxy_addr, "2001:db8::2");
        CG_CHECK_INT(pi->proxy_port, 443);
    }
    cg_http_parser_deinit(&p);

    /* v2 LOCAL, and a v2 header with an unknown family (500, as gunicorn) */
    static const char local[] = "\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    l.proxy_protocol = CG_HTTP_PROXY_AUTO;
    cg_http_parser_init(&p, &l, NULL);
    CG_CHECK_INT(cg_http_parser_head(&p, S(local), &used), CG_HTTP_HEAD_DONE);
    CG_CHECK(cg_http_parser_proxy_info(&p) != NULL &&
             strcmp(cg_http_parser_proxy_info(&p)->protocol, "LOCAL") == 0);
    cg_http_parser_deinit(&p);
    static const char badfam[] = "\r\n\r\n\0\r\nQUIT\n\x21\x51\x00\x00GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    cg_http_parser_init(&p, &l, NULL);
    CG_CHECK_INT(cg_http_parser_head(&p, S(badfam), &used), CG_HTTP_ERROR);
    CG_CHECK_INT(cg_http_parser_error(&p)->kind, CG_HTTP_ERR_INVALID_PROXY_HEADER);
    CG_CHECK_INT(cg_http_error_status(CG_HTTP_ERR_INVALID_PROXY_HEADER), 500);
    cg_http_parser_deinit(&p);
}

static void test_scheme_headers_and_header_map(void)
{
    struct cg_http_parser p;
    struct sockaddr_in sin;
    size_t used;
    static const char req[] =
        "GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-Proto: https\r\nScript_Name: /app\r\nX_Y: z\r\n\r\n";

    /* trusted (127.0.0.1): https, SCRIPT_NAME kept (forwarder), X_Y dropped */
    peer4(&sin, "127.0.0.1");
    cg_http_parser_init(&p, &lim, (struct sockaddr *)&sin);
    CG_CHECK_INT(cg_http_parser_head(&p, S(req), &used), CG_HTTP_HEAD_DONE);
    const struct cg_http_request *q = cg_http_parser_request(&p);
    CG_CHECK_STR(q->url_scheme, "https");
    CG_CHECK_INT(q->n_headers, 3); /* Host too */
    CG_CHECK(cg_http_request_header(q, "SCRIPT_NAME") != NULL);
    CG_CHECK(cg_http_request_header(q, "X_Y") == NULL);
    cg_http_parser_deinit(&p);

    /* untrusted: scheme headers ignored, SCRIPT_NAME dropped too */
    peer4(&sin, "192.0.2.7");
    cg_http_parser_init(&p, &lim, (struct sockaddr *)&sin);
    CG_CHECK_INT(cg_http_parser_head(&p, S(req), &used), CG_HTTP_HEAD_DONE);
    q = cg_http_parser_request(&p);
    CG_CHECK_STR(q->url_scheme, "http");
    CG_CHECK_INT(q->n_headers, 2);
    cg_http_parser_deinit(&p);

    /* dangerous keeps everything */
    struct cg_http_limits l = lim;
    l.header_map = CG_HTTP_HEADER_MAP_DANGEROUS;
    cg_http_parser_init(&p, &l, (struct sockaddr *)&sin);
    CG_CHECK_INT(cg_http_parser_head(&p, S(req), &used), CG_HTTP_HEAD_DONE);
    CG_CHECK_INT(cg_http_parser_request(&p)->n_headers, 4);
    cg_http_parser_deinit(&p);
}

static void test_keepalive_upgrade_absolute(void)
{
    struct cg_http_parser p;
    size_t used;

    cg_http_parser_init(&p, &lim, NULL);
    CG_CHECK_INT(cg_http_parser_head(&p, S("GET /chat HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, Upgrade\r\n"
                                           "Upgrade: websocket\r\n\r\n"), &used),
                 CG_HTTP_HEAD_DONE);
    CG_CHECK(cg_http_parser_request(&p)->upgrade);
    /* "keep-alive, Upgrade" is not exactly keep-alive: HTTP/1.1 default */
    CG_CHECK(!cg_http_request_should_close(cg_http_parser_request(&p)));
    cg_http_parser_deinit(&p);

    cg_http_parser_init(&p, &lim, NULL);
    CG_CHECK_INT(cg_http_parser_head(&p, S("GET HTTP://Example.com:81//a?b#c HTTP/1.0\r\n"
                                           "Connection:  Keep-Alive \r\n\r\n"), &used),
                 CG_HTTP_HEAD_DONE);
    const struct cg_http_request *q = cg_http_parser_request(&p);
    CG_CHECK(!cg_http_request_should_close(q));
    CG_CHECK_STR(q->uri_scheme.ptr, "http");
    CG_CHECK_STR(q->uri_netloc.ptr, "Example.com:81");
    CG_CHECK_STR(q->path.ptr, "//a");
    CG_CHECK_STR(q->query.ptr, "b");
    CG_CHECK_STR(q->fragment.ptr, "c");
    CG_CHECK_STR(q->method.ptr, "GET");
    CG_CHECK_STR(q->uri.ptr, "HTTP://Example.com:81//a?b#c");
    cg_http_parser_deinit(&p);

    /* gzip coding: must close after the request */
    cg_http_parser_init(&p, &lim, NULL);
    CG_CHECK_INT(cg_http_parser_head(&p, S("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
                                     &used),
                 CG_HTTP_HEAD_DONE);
    CG_CHECK(cg_http_request_should_close(cg_http_parser_request(&p)));
    cg_http_parser_deinit(&p);

    expect_error(S("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: br\r\n\r\n"), false,
                 CG_HTTP_ERR_UNSUPPORTED_TRANSFER_CODING, "Unsupported transfer coding: 'br'");
    expect_error(S("GET http://[::1/ HTTP/1.1\r\nHost: t\r\n\r\n"), false, CG_HTTP_ERR_INVALID_REQUEST_LINE,
                 NULL);
    expect_error(S("GET / HTTP/2.0\r\n\r\n"), false, CG_HTTP_ERR_INVALID_HTTP_VERSION,
                 "Invalid HTTP Version: (2, 0)");
}

/* RFC 9112 3.2: one Host, required in HTTP/1.1, with a host[:port] value. */
static void test_host_header(void)
{
    static const char *const good[] = { "example.com", "example.com:8080", "127.0.0.1:80",
                                        "[::1]", "[::1]:8000", "a%20b", "", "xn--bcher-kva.ch",
                                        "under_score~.!$&'()*+,;=", NULL };
    static const char *const bad[] = { "x/x", "a b", "[::1", "host:80x", "h@st", "a%2", "[::1]x",
                                       "\"q\"", NULL };
    char req[256];

    for (size_t i = 0; good[i] != NULL; i++) {
        struct cg_http_parser p;
        size_t used;
        int n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", good[i]);
        cg_http_parser_init(&p, &lim, NULL);
        CG_CHECK_INT(cg_http_parser_head(&p, req, (size_t)n, &used), CG_HTTP_HEAD_DONE);
        cg_http_parser_deinit(&p);
    }
    for (size_t i = 0; bad[i] != NULL; i++) {
        int n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", bad[i]);
        expect_error(req, (size_t)n, false, CG_HTTP_ERR_INVALID_HEADER, NULL);
    }
    expect_error(S("GET / HTTP/1.1\r\nHost: x/x\r\n\r\n"), false, CG_HTTP_ERR_INVALID_HEADER,
                 "Invalid HTTP Header: 'HOST' (not a host[:port]: 'x/x')");
    expect_error(S("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"), false, CG_HTTP_ERR_INVALID_HEADER,
                 "Invalid HTTP Header: 'HOST' (missing; an HTTP/1.1 request must carry a Host "
                 "header)");
    expect_error(S("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"), false,
                 CG_HTTP_ERR_INVALID_HEADER, NULL);
    /* HTTP/1.0 needs none */
    struct cg_http_parser p;
    size_t used;
    cg_http_parser_init(&p, &lim, NULL);
    CG_CHECK_INT(cg_http_parser_head(&p, S("GET / HTTP/1.0\r\n\r\n"), &used), CG_HTTP_HEAD_DONE);
    cg_http_parser_deinit(&p);
}

static void test_error_pages(void)
{
    struct cg_http_error e;
    char out[CG_HTTP_ERROR_RESPONSE_MAX];
    /* Expected bytes are what gunicorn 27.0.1's handle_error()/write_error()
     * send for `GET HTTP/1.1` (checked against upstream), plus the Date
     * header RFC 9110 6.6.1 asks for (docs/compatibility.md). */
    char expect400[1024];
    static const char page400[] =
        "Connection: close\r\nContent-Type: text/html\r\n"
        "Content-Length: 205\r\n\r\n<html>\n  <head>\n    <title>Bad Request</title>\n  </head>\n"
        "  <body>\n    <h1><p>Bad Request</p></h1>\n    Invalid Request Line &#x27;Invalid HTTP "
        "request line: &#x27;GET HTTP/1.1&#x27;&#x27;\n  </body>\n</html>\n";
    struct cg_http_parser p;
    size_t used;

    cg_http_parser_init(&p, &lim, NULL);
    CG_CHECK_INT(cg_http_parser_head(&p, S("GET HTTP/1.1\r\nHost: t\r\n\r\n"), &used), CG_HTTP_ERROR);
    size_t n = cg_http_error_format_response(cg_http_parser_error(&p), out, sizeof(out));
    /* the Date is the one formatted (a second may have passed since) */
    CG_CHECK(strncmp(out, "HTTP/1.1 400 Bad Request\r\nDate: ", 32) == 0);
    CG_CHECK(strncmp(out + 32 + CG_HTTP_DATE_LEN - 4, " GMT\r\n", 6) == 0);
    snprintf(expect400, sizeof(expect400), "HTTP/1.1 400 Bad Request\r\nDate: %.*s\r\n%s",
             CG_HTTP_DATE_LEN, out + 32, page400);
    CG_CHECK_INT(n, strlen(expect400));
    CG_CHECK_STR(out, expect400);
    cg_http_parser_deinit(&p);

    cg_http_error_set(&e, CG_HTTP_ERR_LIMIT_REQUEST_HEADERS, "limit request headers fields");
    n = cg_http_error_format_response(&e, out, sizeof(out));
    CG_CHECK(strncmp(out, "HTTP/1.1 431 Request Header Fields Too Large\r\n", 46) == 0);
    CG_CHECK(strstr(out, "Error parsing headers: &#x27;limit request headers fields&#x27;") != NULL);
    char msg[256];
    CG_CHECK_INT(cg_http_error_message(&e, msg, sizeof(msg)),
                 strlen("Error parsing headers: 'limit request headers fields'"));

    e.kind = CG_HTTP_ERR_NO_MORE_DATA;
    CG_CHECK_INT(cg_http_error_format_response(&e, out, sizeof(out)), 0);
    cg_http_error_set(&e, CG_HTTP_ERR_UNSUPPORTED_TRANSFER_CODING, "x");
    cg_http_error_format_response(&e, out, sizeof(out));
    CG_CHECK(strncmp(out, "HTTP/1.1 501 Bad Request\r\n", 26) == 0);

    /* repr quoting follows Python */
    char r[128] = "";
    cg_http_error_repr(r, sizeof(r), "it's \"x\"\t\x85\xe0", 11, 0);
    CG_CHECK_STR(r, "'it\\'s \"x\"\\t\\x85\xe0'");
    r[0] = '\0';
    cg_http_error_repr(r, sizeof(r), "it's", 4, 0);
    CG_CHECK_STR(r, "\"it's\"");
    r[0] = '\0';
    cg_http_error_repr(r, sizeof(r), "\r\n\xe0", 3, 1);
    CG_CHECK_STR(r, "b'\\r\\n\\xe0'");
}

static void test_iplist(void)
{
    struct cg_err err;
    struct sockaddr_in sin;
    struct cg_http_iplist *l = cg_http_iplist_parse(" 10.0.0.0/8, ::1 ,192.168.1.7", "x", &err);

    CG_CHECK(l != NULL);
    peer4(&sin, "10.200.3.4");
    CG_CHECK(cg_http_iplist_allows(l, (struct sockaddr *)&sin));
    peer4(&sin, "192.168.1.8");
    CG_CHECK(!cg_http_iplist_allows(l, (struct sockaddr *)&sin));
    CG_CHECK(cg_http_iplist_allows(l, NULL));
    cg_http_iplist_free(l);

    CG_CHECK(cg_http_iplist_parse("192.168.1.1/24", "forwarded_allow_ips", &err) == NULL);
    CG_CHECK(strstr(err.msg, "forwarded_allow_ips: '192.168.1.1/24'") != NULL);
    CG_CHECK(cg_http_iplist_parse("localhost", "proxy_allow_ips", &err) == NULL);
    CG_CHECK(strstr(err.msg, "'localhost'") != NULL);
    l = cg_http_iplist_parse("*", "x", &err);
    CG_CHECK(l != NULL && l->any);
    cg_http_iplist_free(l);
}

static void setup(void)
{
    cg_http_limits_init(&lim);
}

static void test_setup(void)
{
    setup();
    CG_CHECK_INT(lim.limit_request_line, 4094);
}

CG_TEST_MAIN(CG_TEST(test_setup), CG_TEST(test_chunked_extensions_and_trailers),
             CG_TEST(test_chunked_errors), CG_TEST(test_chunk_size_line_limit),
             CG_TEST(test_length_body_bounded_reads), CG_TEST(test_expect_continue),
             CG_TEST(test_request_line_limits), CG_TEST(test_proxy_protocol_peers),
             CG_TEST(test_scheme_headers_and_header_map), CG_TEST(test_keepalive_upgrade_absolute),
             CG_TEST(test_error_pages), CG_TEST(test_host_header), CG_TEST(test_iplist))
