/* Response head: chunked and Connection decisions, HEAD/204/304, header
 * validation (no response splitting), hop-by-hop headers, body accounting,
 * chunk framing; and the Date cache. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cg_http_date.h"
#include "cg_http_response.h"
#include "cg_test.h"

/* A request parsed from text, for the response to answer. */
struct req_fixture {
    struct cg_http_limits lim;
    struct cg_http_parser p;
};

static const struct cg_http_request *mkreq(struct req_fixture *f, const char *head)
{
    size_t used;
    cg_http_limits_init(&f->lim);
    cg_http_parser_init(&f->p, &f->lim, NULL);
    if (cg_http_parser_head(&f->p, head, strlen(head), &used) != CG_HTTP_HEAD_DONE) {
        return NULL;
    }
    return cg_http_parser_request(&f->p);
}

/* Formats a response to `head` with status and NULL-terminated name/value
 * pairs; returns the head (static buffer) or NULL. */
static const char *respond(const char *head, const char *status, const char *const *hdrs,
                           struct cg_http_response *r)
{
    static char out[2048];
    struct req_fixture f;
    struct cg_http_error err;
    const char *h;
    size_t n;
    const struct cg_http_request *req = mkreq(&f, head);

    cg_http_response_init(r, req, NULL);
    cg_http_parser_deinit(&f.p);
    if (cg_http_response_start(r, status, strlen(status), &err) < 0) {
        return NULL;
    }
    for (size_t i = 0; hdrs && hdrs[i]; i += 2) {
        if (cg_http_response_add_header(r, hdrs[i], strlen(hdrs[i]), hdrs[i + 1],
                                        strlen(hdrs[i + 1]), &err) < 0) {
            return NULL;
        }
    }
    if (cg_http_response_head(r, &h, &n, &err) < 0) {
        return NULL;
    }
    snprintf(out, sizeof(out), "%.*s", (int)n, h);
    /* the Date line is today's: blank it for comparisons */
    char *d = strstr(out, "Date: ");
    if (d != NULL && strlen(d) > 6 + CG_HTTP_DATE_LEN) {
        memset(d + 6, 'D', CG_HTTP_DATE_LEN);
    }
    return out;
}

#define DATE "Date: DDDDDDDDDDDDDDDDDDDDDDDDDDDDD\r\n"

static void test_chunked_when_no_length(void)
{
    struct cg_http_response r;
    static const char *const h[] = { "Content-Type", "text/plain", NULL };
    const char *out = respond("GET / HTTP/1.1\r\nHost: t\r\n\r\n", "200 OK", h, &r);

    CG_CHECK_STR(out, "HTTP/1.1 200 OK\r\nServer: gunicorn\r\n" DATE "Connection: keep-alive\r\n"
                      "Transfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n");
    CG_CHECK(r.chunked);
    CG_CHECK(!cg_http_response_should_close(&r));
    CG_CHECK_INT(cg_http_response_body_take(&r, 5), 5);
    cg_http_response_deinit(&r);
}

static void test_length_and_http10(void)
{
    struct cg_http_response r;
    static const char *const h[] = { "Content-Length", " 4 ", NULL };
    const char *out = respond("GET / HTTP/1.1\r\nHost: t\r\n\r\n", "200 OK", h, &r);

    CG_CHECK_STR(out, "HTTP/1.1 200 OK\r\nServer: gunicorn\r\n" DATE "Connection: keep-alive\r\n"
                      "Content-Length: 4\r\n\r\n");
    CG_CHECK(!r.chunked);
    /* never more than Content-Length */
    CG_CHECK_INT(cg_http_response_body_take(&r, 3), 3);
    CG_CHECK_INT(cg_http_response_body_take(&r, 3), 1);
    CG_CHECK_INT(cg_http_response_body_take(&r, 3), 0);
    cg_http_response_deinit(&r);

    /* HTTP/1.0 without length: no chunking, the close ends the body */
    out = respond("GET / HTTP/1.0\r\n\r\n", "200 OK", NULL, &r);
    CG_CHECK_STR(out, "HTTP/1.0 200 OK\r\nServer: gunicorn\r\n" DATE "Connection: close\r\n\r\n");
    cg_http_response_deinit(&r);

    /* forced close (sync worker) */
    out = respond("GET / HTTP/1.1\r\nHost: t\r\n\r\n", "200 OK", h, &r);
    cg_http_response_force_close(&r);
    CG_CHECK(cg_http_response_should_close(&r));
    cg_http_response_deinit(&r);
}

static void test_no_body_responses(void)
{
    struct cg_http_response r;
    static const char *const cl[] = { "Content-Length", "10", NULL };

    /* HEAD keeps Content-Length, sends no body, no chunking */
    const char *out = respond("HEAD / HTTP/1.1\r\nHost: t\r\n\r\n", "200 OK", cl, &r);
    CG_CHECK_STR(out, "HTTP/1.1 200 OK\r\nServer: gunicorn\r\n" DATE "Connection: keep-alive\r\n"
                      "Content-Length: 10\r\n\r\n");
    CG_CHECK_INT(cg_http_response_body_take(&r, 10), 0);
    cg_http_response_deinit(&r);
    out = respond("HEAD / HTTP/1.1\r\nHost: t\r\n\r\n", "200 OK", NULL, &r);
    CG_CHECK(!r.chunked);
    CG_CHECK(!cg_http_response_should_close(&r));
    cg_http_response_deinit(&r);

    /* 204 drops Content-Length; 304 keeps it; neither is chunked */
    out = respond("GET / HTTP/1.1\r\nHost: t\r\n\r\n", "204 No Content", cl, &r);
    CG_CHECK_STR(out, "HTTP/1.1 204 No Content\r\nServer: gunicorn\r\n" DATE
                      "Connection: keep-alive\r\n\r\n");
    CG_CHECK_INT(cg_http_response_body_take(&r, 10), 0);
    cg_http_response_deinit(&r);
    out = respond("GET / HTTP/1.1\r\nHost: t\r\n\r\n", "304 Not Modified", cl, &r);
    CG_CHECK(out != NULL && strstr(out, "Content-Length: 10\r\n") != NULL);
    CG_CHECK(out != NULL && strstr(out, "Transfer-Encoding") == NULL);
    cg_http_response_deinit(&r);
    out = respond("GET / HTTP/1.1\r\nHost: t\r\n\r\n", "304", NULL, &r);
    CG_CHECK(out != NULL && strncmp(out, "HTTP/1.1 304\r\n", 14) == 0);
    cg_http_response_deinit(&r);
}

static void test_hop_by_hop_and_upgrade(void)
{
    struct cg_http_response r;
    static const char *const h[] = { "Connection", "Upgrade", "Upgrade", "websocket",
                                     "Keep-Alive", "5", "Server", "evil", "Date", "x",
                                     "Transfer-Encoding", "chunked", "X-A", "1", NULL };
    const char *out = respond("GET / HTTP/1.1\r\nHost: t\r\n\r\n", "101 Switching Protocols", h, &r);

    CG_CHECK_STR(out, "HTTP/1.1 101 Switching Protocols\r\nServer: gunicorn\r\n" DATE
                      "Connection: upgrade\r\nUpgrade: websocket\r\nX-A: 1\r\n\r\n");
    cg_http_response_deinit(&r);
}

static void check_rejected_n(const char *name, const char *value, size_t vlen,
                             enum cg_http_error_kind kind, const char *detail)
{
    struct cg_http_response r;
    struct cg_http_error err;

    cg_http_response_init(&r, NULL, "cgunicorn");
    CG_CHECK_INT(cg_http_response_start(&r, "200 OK", 6, &err), 0);
    CG_CHECK_INT(cg_http_response_add_header(&r, name, strlen(name), value, vlen, &err), -1);
    CG_CHECK_INT(err.kind, kind);
    CG_CHECK_STR(err.detail, detail);
    CG_CHECK_INT(cg_http_error_status(err.kind), 500);
    cg_http_response_deinit(&r);
}

static void check_rejected(const char *name, const char *value, enum cg_http_error_kind kind,
                           const char *detail)
{
    check_rejected_n(name, value, strlen(value), kind, detail);
}

static void test_header_validation(void)
{
    check_rejected("X-Split", "a\r\nSet-Cookie: x=1", CG_HTTP_ERR_INVALID_RESPONSE_HEADER,
                   "Invalid response header from the application: 'X-Split'");
    check_rejected_n("X-Nul", "a\0b", 3, CG_HTTP_ERR_INVALID_RESPONSE_HEADER,
                   "Invalid response header from the application: 'X-Nul'");
    check_rejected("Bad Name", "v", CG_HTTP_ERR_INVALID_RESPONSE_HEADER_NAME,
                   "Invalid response header name from the application: 'Bad Name'");
    check_rejected("X\r\nY", "v", CG_HTTP_ERR_INVALID_RESPONSE_HEADER_NAME,
                   "Invalid response header name from the application: 'X\\r\\nY'");
    check_rejected("Content-Length", "ten", CG_HTTP_ERR_VALUE,
                   "invalid literal for int() with base 10: 'ten'");

    /* obs-text and HTAB are fine; the Server value is configurable */
    struct cg_http_response r;
    struct cg_http_error err;
    const char *h;
    size_t n;
    cg_http_response_init(&r, NULL, "cgunicorn");
    CG_CHECK_INT(cg_http_response_start(&r, "200 OK", 6, &err), 0);
    CG_CHECK_INT(cg_http_response_add_header(&r, "X-L", 3, "caf\xe9\tok", 7, &err), 0);
    CG_CHECK_INT(cg_http_response_head(&r, &h, &n, &err), 0);
    CG_CHECK(memmem(h, n, "Server: cgunicorn\r\n", 19) != NULL);
    CG_CHECK(memmem(h, n, "X-L: caf\xe9\tok\r\n", 14) != NULL);
    cg_http_response_deinit(&r);
}

static void test_status_validation(void)
{
    static const char *const bad[] = { "20 OK", "200OK", "2000 OK", "abc", "200 OK\r\nX: y", "" };
    struct cg_http_response r;
    struct cg_http_error err;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cg_http_response_init(&r, NULL, NULL);
        CG_CHECK_INT(cg_http_response_start(&r, bad[i], strlen(bad[i]), &err), -1);
        CG_CHECK_INT(err.kind, CG_HTTP_ERR_VALUE);
        CG_CHECK(strncmp(err.detail, "Invalid status ", 15) == 0);
        cg_http_response_deinit(&r);
    }
    cg_http_response_init(&r, NULL, NULL);
    CG_CHECK_INT(cg_http_response_start(&r, "599 Whatever \xff", 14, &err), 0);
    CG_CHECK_INT(r.status_code, 599);
    cg_http_response_deinit(&r);
}

static void test_chunk_prefix(void)
{
    char b[CG_HTTP_CHUNK_PREFIX_MAX];
    CG_CHECK_INT(cg_http_chunk_prefix(b, 26), 4);
    CG_CHECK(memcmp(b, "1A\r\n", 4) == 0);
    CG_CHECK_INT(cg_http_chunk_prefix(b, 0xFFFFFFFFFFull), 12);
    CG_CHECK(memcmp(b, "FFFFFFFFFF\r\n", 12) == 0);
}

static void test_date(void)
{
    char b[CG_HTTP_DATE_LEN + 1];
    CG_CHECK_INT(cg_http_date_format(784111777, b), CG_HTTP_DATE_LEN);
    CG_CHECK_STR(b, "Sun, 06 Nov 1994 08:49:37 GMT");
    cg_http_date_format(951782400, b); /* leap day */
    CG_CHECK_STR(b, "Tue, 29 Feb 2000 00:00:00 GMT");

    /* the cached value is the current second's */
    time_t t0 = time(NULL);
    const char *now = cg_http_date_now();
    time_t t1 = time(NULL);
    char a0[CG_HTTP_DATE_LEN + 1], a1[CG_HTTP_DATE_LEN + 1];
    cg_http_date_format(t0, a0);
    cg_http_date_format(t1, a1);
    CG_CHECK(strcmp(now, a0) == 0 || strcmp(now, a1) == 0);

    /* formatted at most once per distinct second */
    unsigned long before = cg_http_date_format_count();
    t0 = time(NULL);
    for (int i = 0; i < 10000; i++) {
        cg_http_date_now();
    }
    t1 = time(NULL);
    CG_CHECK(cg_http_date_format_count() - before <= (unsigned long)(t1 - t0) + 1);
}

CG_TEST_MAIN(CG_TEST(test_chunked_when_no_length), CG_TEST(test_length_and_http10),
             CG_TEST(test_no_body_responses), CG_TEST(test_hop_by_hop_and_upgrade),
             CG_TEST(test_header_validation), CG_TEST(test_status_validation),
             CG_TEST(test_chunk_prefix), CG_TEST(test_date))
