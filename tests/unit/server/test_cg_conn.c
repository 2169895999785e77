/* Unit tests for what every connection shares (server/cg_conn.c): buffer
 * compaction and growth, the discard of a buffered request body, the error
 * page in both styles, and the deferred-release list that keeps a closed
 * connection's memory alive until the callback that closed it returned
 * (make check-asan turns a use after free here into a failure). */
#include "cg_test.h"

#include <stdlib.h>

#include "cg_conn.h"
#include "cg_http_limits.h"
#include "cg_http_parser.h"

static void test_buf_reserve_compacts_then_grows(void)
{
    struct cg_conn_buf b = { 0 };

    CG_CHECK_INT(cg_conn_buf_reserve(&b, 1), 0);
    CG_CHECK_INT(b.cap, CG_CONN_READ_CHUNK);
    memset(b.p, 'x', b.cap);
    b.start = 100;
    b.end = b.cap;
    memcpy(b.p + 100, "keep", 4);
    /* full with a taken prefix: the unread bytes move to the front */
    CG_CHECK_INT(cg_conn_buf_reserve(&b, 1), 0);
    CG_CHECK_INT(b.cap, CG_CONN_READ_CHUNK);
    CG_CHECK_INT(b.start, 0);
    CG_CHECK_INT(b.end, CG_CONN_READ_CHUNK - 100);
    CG_CHECK(memcmp(b.p, "keep", 4) == 0);
    /* more than compaction frees: it grows and keeps the bytes */
    CG_CHECK_INT(cg_conn_buf_reserve(&b, 1000), 0);
    CG_CHECK_INT(b.cap, 2 * CG_CONN_READ_CHUNK);
    CG_CHECK(memcmp(b.p, "keep", 4) == 0);
    /* an emptied buffer starts over at offset 0 */
    b.start = b.end = 500;
    CG_CHECK_INT(cg_conn_buf_reserve(&b, 1), 0);
    CG_CHECK_INT(b.start, 0);
    CG_CHECK_INT(b.end, 0);
    CG_CHECK_INT(cg_conn_buf_append(&b, "abc", 3), 0);
    CG_CHECK_INT(b.end, 3);
    cg_conn_buf_free(&b);
    CG_CHECK(b.p == NULL);
    cg_conn_buf_free(&b);
}

static void feed(struct cg_conn_buf *b, const char *s)
{
    CG_CHECK_INT(cg_conn_buf_append(b, s, strlen(s)), 0);
}

static void test_body_skip(void)
{
    struct cg_http_limits limits;
    struct cg_http_parser p;
    struct cg_conn_buf b = { 0 };
    size_t used = 0, skipped = 0;

    cg_http_limits_init(&limits);
    cg_http_parser_init(&p, &limits, NULL);
    feed(&b, "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
    CG_CHECK_INT(cg_http_parser_head(&p, b.p, b.end, &used), CG_HTTP_HEAD_DONE);
    b.start = used;
    CG_CHECK_INT(cg_conn_body_skip(&p, &b, &skipped), CG_CONN_SKIP_MORE);
    CG_CHECK_INT(b.start, b.end);
    feed(&b, "lo\r\n0\r\n\r\nGET /next");
    CG_CHECK_INT(cg_conn_body_skip(&p, &b, &skipped), CG_CONN_SKIP_DONE);
    CG_CHECK_INT(skipped, 5);
    CG_CHECK(memcmp(b.p + b.start, "GET /next", 9) == 0); /* the next request stays */
    CG_CHECK_INT(cg_http_parser_next(&p), 0);
    cg_http_parser_deinit(&p);

    /* a malformed chunk size is an error */
    cg_http_parser_init(&p, &limits, NULL);
    b.start = b.end = 0;
    feed(&b, "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    used = 0;
    CG_CHECK_INT(cg_http_parser_head(&p, b.p, b.end, &used), CG_HTTP_HEAD_DONE);
    b.start = used;
    CG_CHECK_INT(cg_conn_body_skip(&p, &b, &skipped), CG_CONN_SKIP_ERROR);
    cg_http_parser_deinit(&p);
    cg_conn_buf_free(&b);
}

static void test_error_pages(void)
{
    struct cg_http_error e;
    char page[CG_HTTP_ERROR_RESPONSE_MAX];

    cg_http_error_set(&e, CG_HTTP_ERR_INVALID_REQUEST_LINE, "%s", "bad line");
    size_t n = cg_conn_error_page(&e, CG_CONN_PAGE_HTML, page, sizeof(page));
    CG_CHECK(n > 0 && n < sizeof(page));
    page[n] = '\0';
    CG_CHECK(strncmp(page, "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
    CG_CHECK(strstr(page, "Content-Type: text/html\r\n") != NULL);

    n = cg_conn_error_page(&e, CG_CONN_PAGE_PLAIN, page, sizeof(page));
    CG_CHECK(n > 0 && n < sizeof(page));
    page[n] = '\0';
    CG_CHECK(strncmp(page, "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
    CG_CHECK(strstr(page, "Content-Type: text/plain\r\nContent-Length: 8\r\n"
                          "Connection: close\r\n\r\nbad line") != NULL);

    /* a client that closed gets no answer */
    cg_http_error_set(&e, CG_HTTP_ERR_NO_MORE_DATA, "%s", "gone");
    CG_CHECK_INT(cg_conn_error_page(&e, CG_CONN_PAGE_HTML, page, sizeof(page)), 0);
    CG_CHECK_INT(cg_conn_error_page(&e, CG_CONN_PAGE_PLAIN, page, sizeof(page)), 0);
}

/* ---- deferred release ---- */

struct fake_conn {
    int id;
    bool closed;
    struct cg_conn_release_node rel;
};

static struct cg_conn_release closed_list;
static int released;
static int scheduled;

static void release_fake(struct cg_conn_release_node *node, void *arg)
{
    struct fake_conn *c = (struct fake_conn *)((char *)node - offsetof(struct fake_conn, rel));
    int *order = arg;
    order[released++] = c->id;
    free(c);
}

/* What a loop callback does when it finds its connection dead: closes it,
 * queues it, and goes on using it until it returns. */
static void on_event(struct fake_conn *c)
{
    c->closed = true;
    if (cg_conn_release_push(&closed_list, &c->rel)) {
        scheduled++;
    }
    c->id += 0; /* still valid: a use after free here fails under ASan */
    CG_CHECK(c->closed);
}

static void test_release_after_the_callback(void)
{
    int order[8] = { 0 };

    released = scheduled = 0;
    for (int i = 1; i <= 3; i++) {
        struct fake_conn *c = calloc(1, sizeof(*c));
        c->id = i;
        on_event(c);
    }
    CG_CHECK_INT(scheduled, 1); /* one release per batch */
    CG_CHECK_INT(closed_list.n, 3);
    CG_CHECK_INT(released, 0);
    CG_CHECK_INT(cg_conn_release_run(&closed_list, release_fake, order), 3);
    CG_CHECK_INT(released, 3);
    CG_CHECK(closed_list.head == NULL);
    CG_CHECK_INT(closed_list.n, 0);
    CG_CHECK_INT(order[0] + order[1] + order[2], 6);
    /* an empty list releases nothing; the next close schedules again */
    CG_CHECK_INT(cg_conn_release_run(&closed_list, release_fake, order), 0);
    struct fake_conn *c = calloc(1, sizeof(*c));
    on_event(c);
    CG_CHECK_INT(scheduled, 2);
    CG_CHECK_INT(cg_conn_release_run(&closed_list, release_fake, order), 1);
}

/* A release that closes another connection (a victim) queues it: the same
 * run takes it. */
static struct fake_conn *victim;

static void release_and_close_victim(struct cg_conn_release_node *node, void *arg)
{
    if (victim != NULL) {
        struct fake_conn *v = victim;
        victim = NULL;
        cg_conn_release_push(&closed_list, &v->rel);
    }
    release_fake(node, arg);
}

static void test_release_queued_during_run(void)
{
    int order[8] = { 0 };
    struct fake_conn *a = calloc(1, sizeof(*a));

    released = 0;
    a->id = 1;
    victim = calloc(1, sizeof(*victim));
    victim->id = 2;
    cg_conn_release_push(&closed_list, &a->rel);
    CG_CHECK_INT(cg_conn_release_run(&closed_list, release_and_close_victim, order), 2);
    CG_CHECK_INT(order[0], 1);
    CG_CHECK_INT(order[1], 2);
    CG_CHECK(closed_list.head == NULL);
}

CG_TEST_MAIN(CG_TEST(test_buf_reserve_compacts_then_grows), CG_TEST(test_body_skip),
             CG_TEST(test_error_pages), CG_TEST(test_release_after_the_callback),
             CG_TEST(test_release_queued_during_run))
