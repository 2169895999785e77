/* Unit tests for the h2c upgrade rules of server/cg_h2.c, gunicorn 27's
 * (gunicorn/http2/negotiation.py): which HTTP/1.1 requests switch and
 * which are served as HTTP/1.1 (a malformed or oversized HTTP2-Settings,
 * a missing Connection token, another Upgrade, HTTP/1.0, a body over
 * 64 KiB, an untrusted peer), and the bound on the body held in memory. */
#include "cg_test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>

#include "cg_h2.h"
#include "cg_http_iplist.h"
#include "cg_http_limits.h"
#include "cg_http_parser.h"

static struct cg_http_limits limits;
static struct cg_h2_hub hub;
static struct sockaddr_in local, stranger;

static void setup(void)
{
    struct cg_err err = { { 0 } };

    cg_http_limits_init(&limits);
    cg_http_iplist_free((struct cg_http_iplist *)hub.trusted);
    memset(&hub, 0, sizeof(hub));
    hub.upgrade = true;
    hub.trusted = cg_http_iplist_parse("127.0.0.1", "forwarded_allow_ips", &err);
    local = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons(5000) };
    inet_pton(AF_INET, "127.0.0.1", &local.sin_addr);
    stranger = local;
    inet_pton(AF_INET, "10.1.2.3", &stranger.sin_addr);
}

/* Parses `head` and asks whether it is an upgrade from `peer`. */
static bool upgrades(const char *head, const struct sockaddr_in *peer)
{
    struct cg_http_parser p;
    size_t used = 0;
    bool yes = false;

    cg_http_parser_init(&p, &limits, (const struct sockaddr *)peer);
    if (cg_http_parser_head(&p, head, strlen(head), &used) == CG_HTTP_HEAD_DONE) {
        struct cg_h2_upgrade *up =
            cg_h2_upgrade_new(&hub, cg_http_parser_request(&p), (const struct sockaddr *)peer);
        yes = up != NULL;
        cg_h2_upgrade_free(up);
    }
    cg_http_parser_deinit(&p);
    return yes;
}

#define REQ(conn, up, settings, extra)                                                    \
    "GET / HTTP/1.1\r\nHost: x\r\nConnection: " conn "\r\nUpgrade: " up "\r\n" settings  \
    extra "\r\n"
#define OK_SETTINGS "HTTP2-Settings: AAMAAABkAAQAAP__\r\n"

static void test_well_formed_upgrade(void)
{
    setup();
    CG_CHECK(upgrades(REQ("Upgrade, HTTP2-Settings", "h2c", OK_SETTINGS, ""), &local));
    CG_CHECK(upgrades(REQ("upgrade,http2-settings", "H2C", OK_SETTINGS, ""), &local));
    /* empty settings, padding */
    CG_CHECK(upgrades(REQ("Upgrade, HTTP2-Settings", "h2c", "HTTP2-Settings: \r\n", ""), &local));
    CG_CHECK(upgrades(REQ("Upgrade, HTTP2-Settings", "h2c", "HTTP2-Settings: AAMAAABk\r\n",
                          "Content-Length: 65536\r\n"), &local));
}

static void test_not_an_upgrade(void)
{
    setup();
    CG_CHECK(!upgrades(REQ("Upgrade, HTTP2-Settings", "h2c", OK_SETTINGS, ""), &stranger));
    CG_CHECK(!upgrades(REQ("Upgrade", "h2c", OK_SETTINGS, ""), &local));
    CG_CHECK(!upgrades(REQ("HTTP2-Settings", "h2c", OK_SETTINGS, ""), &local));
    CG_CHECK(!upgrades(REQ("Upgrade, HTTP2-Settings", "websocket", OK_SETTINGS, ""), &local));
    CG_CHECK(!upgrades(REQ("Upgrade, HTTP2-Settings", "h2c", "", ""), &local));
    CG_CHECK(!upgrades(REQ("Upgrade, HTTP2-Settings", "h2c", OK_SETTINGS OK_SETTINGS, ""),
                       &local));
    CG_CHECK(!upgrades(REQ("Upgrade, HTTP2-Settings", "h2c", "HTTP2-Settings: AA*A\r\n", ""),
                       &local));
    /* not whole 6-byte entries */
    CG_CHECK(!upgrades(REQ("Upgrade, HTTP2-Settings", "h2c", "HTTP2-Settings: AAMA\r\n", ""),
                       &local));
    /* ENABLE_PUSH 2, INITIAL_WINDOW_SIZE 2^31, MAX_FRAME_SIZE 100 */
    CG_CHECK(!upgrades(REQ("Upgrade, HTTP2-Settings", "h2c", "HTTP2-Settings: AAIAAAAC\r\n", ""),
                       &local));
    CG_CHECK(!upgrades(REQ("Upgrade, HTTP2-Settings", "h2c", "HTTP2-Settings: AASAAAAA\r\n", ""),
                       &local));
    CG_CHECK(!upgrades(REQ("Upgrade, HTTP2-Settings", "h2c", "HTTP2-Settings: AAUAAABk\r\n", ""),
                       &local));
    CG_CHECK(!upgrades(REQ("Upgrade, HTTP2-Settings", "h2c", OK_SETTINGS,
                           "Content-Length: 65537\r\n"), &local));
    CG_CHECK(!upgrades("GET / HTTP/1.0\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                       "Upgrade: h2c\r\n" OK_SETTINGS "\r\n", &local));
    hub.upgrade = false; /* http2_cleartext off or prior-knowledge, or TLS */
    CG_CHECK(!upgrades(REQ("Upgrade, HTTP2-Settings", "h2c", OK_SETTINGS, ""), &local));
}

static void test_body_is_bounded(void)
{
    struct cg_http_parser p;
    size_t used = 0;
    static char chunk[CG_H2_UPGRADE_BODY_MAX];
    const char *head = REQ("Upgrade, HTTP2-Settings", "h2c", OK_SETTINGS,
                           "Transfer-Encoding: chunked\r\n");

    setup();
    cg_http_parser_init(&p, &limits, (const struct sockaddr *)&local);
    CG_CHECK_INT(cg_http_parser_head(&p, head, strlen(head), &used), CG_HTTP_HEAD_DONE);
    struct cg_h2_upgrade *up =
        cg_h2_upgrade_new(&hub, cg_http_parser_request(&p), (const struct sockaddr *)&local);
    CG_CHECK(up != NULL);
    if (up != NULL) {
        CG_CHECK_INT(cg_h2_upgrade_add_body(up, chunk, sizeof(chunk)), 0);
        CG_CHECK_INT(cg_h2_upgrade_add_body(up, "x", 1), -1);
        CG_CHECK_INT(cg_h2_upgrade_set_pending(up, "PRI", 3), 0);
    }
    cg_h2_upgrade_free(up);
    cg_h2_upgrade_free(NULL);
    cg_http_parser_deinit(&p);
    cg_http_iplist_free((struct cg_http_iplist *)hub.trusted);
    hub.trusted = NULL;
}

CG_TEST_MAIN(CG_TEST(test_well_formed_upgrade), CG_TEST(test_not_an_upgrade),
             CG_TEST(test_body_is_bounded))
