/* Unit tests for the TLS transport (server/cg_transport_tls.c) over a
 * socketpair, with a certificate made in memory and an OpenSSL client on
 * the other end: the handshake reported as CG_TRANSPORT_AGAIN with POLLIN
 * on a non-blocking socket (so an event loop can drive it), data both ways
 * through recv and a gathered sendv, the copy loop of sendfile, garbage
 * refused, a blocking handshake bounded by its timeout, and release. */
#include "cg_test.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "cg_transport_tls.h"

static SSL_CTX *server_ctx(void)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    CG_CHECK(key != NULL && x != NULL && ctx != NULL);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"unit", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    CG_CHECK(X509_sign(x, key, EVP_sha256()) > 0);
    CG_CHECK_INT(SSL_CTX_use_certificate(ctx, x), 1);
    CG_CHECK_INT(SSL_CTX_use_PrivateKey(ctx, key), 1);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    X509_free(x);
    EVP_PKEY_free(key);
    return ctx;
}

struct peer {
    SSL_CTX *ctx;
    SSL *ssl;
};

static void client_open(struct peer *p, int fd)
{
    p->ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(p->ctx, SSL_VERIFY_NONE, NULL);
    p->ssl = SSL_new(p->ctx);
    SSL_set_fd(p->ssl, fd);
    SSL_set_connect_state(p->ssl);
}

static void client_close(struct peer *p)
{
    SSL_free(p->ssl);
    SSL_CTX_free(p->ctx);
}

/* Steps the client and the server transport until the handshake is done;
 * every server step before that is a would-block waiting to read. */
static void handshake(struct peer *c, struct cg_transport *t)
{
    char buf[16];
    int again = 0;

    for (int i = 0; i < 100 && !SSL_is_init_finished(c->ssl); i++) {
        SSL_do_handshake(c->ssl);
        ssize_t r = cg_transport_recv(t, buf, sizeof(buf), 0);
        CG_CHECK_INT(r, CG_TRANSPORT_AGAIN);
        CG_CHECK_INT(t->want, POLLIN);
        again++;
    }
    CG_CHECK(SSL_is_init_finished(c->ssl));
    CG_CHECK(again > 0);
    /* the server finishes on the client's Finished */
    CG_CHECK_INT(cg_transport_recv(t, buf, sizeof(buf), 0), CG_TRANSPORT_AGAIN);
}

static void pair(int sv[2], bool nonblock)
{
    CG_CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM | (nonblock ? SOCK_NONBLOCK : 0), 0, sv), 0);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
}

/* Reads n bytes from the client side (waiting with poll). */
static size_t client_read(struct peer *c, int fd, char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        size_t k = 0;
        if (SSL_read_ex(c->ssl, buf + got, n - got, &k) == 1) {
            got += k;
            continue;
        }
        if (SSL_get_error(c->ssl, 0) != SSL_ERROR_WANT_READ) {
            break;
        }
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, 2000) <= 0) {
            break;
        }
    }
    return got;
}

static void test_handshake_would_block_then_data(void)
{
    int sv[2];
    struct cg_transport t;
    struct peer c;
    char buf[64];

    pair(sv, true);
    cg_transport_init(&t, sv[0]);
    CG_CHECK(cg_transport_is_tls(&t));
    client_open(&c, sv[1]);
    handshake(&c, &t);

    struct cg_transport_tls_info info;
    CG_CHECK(cg_transport_tls_info(&t, &info));
    CG_CHECK_STR(info.version, "TLSv1.3");
    unsigned char *der = NULL;
    bool verified = true;
    CG_CHECK_INT(cg_transport_tls_peer_der(&t, &der, &verified), 0); /* no client cert */

    size_t w = 0;
    CG_CHECK_INT(SSL_write_ex(c.ssl, "hello", 5, &w), 1);
    CG_CHECK_INT(cg_transport_recv(&t, buf, sizeof(buf), 0), 5);
    CG_CHECK(memcmp(buf, "hello", 5) == 0);
    CG_CHECK_INT(cg_transport_recv(&t, buf, sizeof(buf), 0), CG_TRANSPORT_AGAIN);

    struct iovec iov[3] = { { "HTTP/1.1 200 OK\r\n", 17 }, { "\r\n", 2 }, { "body", 4 } };
    CG_CHECK_INT(cg_transport_sendv(&t, iov, 3, 0), 23);
    CG_CHECK_INT(client_read(&c, sv[1], buf, 23), 23);
    CG_CHECK(memcmp(buf, "HTTP/1.1 200 OK\r\n\r\nbody", 23) == 0);

    /* sendfile over TLS: the copy loop */
    char path[] = "/tmp/cg_tls_XXXXXX";
    int fd = mkstemp(path);
    unlink(path);
    CG_CHECK_INT(write(fd, "0123456789", 10), 10);
    off_t pos = 3;
    CG_CHECK_INT(cg_transport_sendfile_all(&t, fd, &pos, 4, 2000), 0);
    CG_CHECK_INT(pos, 7);
    CG_CHECK_INT(client_read(&c, sv[1], buf, 4), 4);
    CG_CHECK(memcmp(buf, "3456", 4) == 0);
    close(fd);

    /* close_notify from the peer reads as EOF */
    SSL_shutdown(c.ssl);
    CG_CHECK_INT(cg_transport_recv(&t, buf, sizeof(buf), 0), 0);
    cg_transport_close(&t);
    CG_CHECK(t.impl == NULL && t.fd == -1);
    cg_transport_close(&t); /* idempotent */
    client_close(&c);
    close(sv[1]);
}

/* What a client sends right behind its Finished (a TLS 1.3 client's first
 * request, here two records) is read with the handshake's last read(2),
 * which reads ahead: the recv that finishes the handshake returns all of
 * it, and nothing stays inside the transport, where the socket's
 * readiness would not announce it. */
static void test_data_behind_the_finished_comes_out_at_once(void)
{
    int sv[2];
    struct cg_transport t;
    struct peer c;
    char buf[16384];
    size_t w = 0;

    pair(sv, true);
    cg_transport_init(&t, sv[0]);
    client_open(&c, sv[1]);
    for (int i = 0; i < 100; i++) {
        SSL_do_handshake(c.ssl);
        if (SSL_is_init_finished(c.ssl)) {
            break;
        }
        CG_CHECK_INT(cg_transport_recv(&t, buf, sizeof(buf), 0), CG_TRANSPORT_AGAIN);
    }
    CG_CHECK(SSL_is_init_finished(c.ssl));
    CG_CHECK_INT(SSL_write_ex(c.ssl, "GET / ", 6, &w), 1);
    CG_CHECK_INT(SSL_write_ex(c.ssl, "HTTP/1.1\r\n\r\n", 12, &w), 1);
    CG_CHECK_INT(cg_transport_recv(&t, buf, sizeof(buf), 0), 18);
    CG_CHECK(memcmp(buf, "GET / HTTP/1.1\r\n\r\n", 18) == 0);
    CG_CHECK_INT(cg_transport_unread(&t), 0);
    CG_CHECK_INT(cg_transport_recv(&t, buf, sizeof(buf), 0), CG_TRANSPORT_AGAIN);
    /* after the handshake, records are read one at a time again */
    CG_CHECK_INT(SSL_write_ex(c.ssl, "abc", 3, &w), 1);
    CG_CHECK_INT(SSL_write_ex(c.ssl, "def", 3, &w), 1);
    CG_CHECK_INT(cg_transport_recv(&t, buf, sizeof(buf), 0), 3);
    CG_CHECK_INT(cg_transport_unread(&t) > 0, 1); /* the next record, in the kernel */
    CG_CHECK_INT(cg_transport_recv(&t, buf + 3, sizeof(buf) - 3, 0), 3);
    CG_CHECK(memcmp(buf, "abcdef", 6) == 0);
    cg_transport_close(&t);
    client_close(&c);
    close(sv[1]);
}

/* A plaintext client: the handshake fails, the op returns -1. */
static void test_garbage_fails_the_handshake(void)
{
    int sv[2];
    struct cg_transport t;
    char buf[64];
    const char req[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";

    pair(sv, true);
    cg_transport_init(&t, sv[0]);
    CG_CHECK_INT(write(sv[1], req, sizeof(req) - 1), (ssize_t)sizeof(req) - 1);
    CG_CHECK_INT(cg_transport_recv(&t, buf, sizeof(buf), 0), -1);
    /* and stays failed */
    struct iovec iov = { "x", 1 };
    CG_CHECK_INT(cg_transport_sendv(&t, &iov, 1, 0), -1);
    cg_transport_close(&t);
    close(sv[1]);
}

/* A blocking socket (sync): the transport waits itself, the handshake
 * bounded; a silent client fails it with ETIMEDOUT. */
static void test_blocking_handshake_is_bounded(void)
{
    int sv[2];
    struct cg_transport t;
    char buf[8];

    pair(sv, false);
    cg_transport_init(&t, sv[0]);
    errno = 0;
    CG_CHECK_INT(cg_transport_recv_wait(&t, buf, sizeof(buf), true, -1), -1);
    CG_CHECK_INT(errno, ETIMEDOUT);
    cg_transport_close(&t);
    close(sv[1]);
}

/* A certificate for `cn` signed by issuer_key as `issuer` (NULL: itself). */
static X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key)
{
    X509 *x = X509_new();

    CG_CHECK(x != NULL);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), issuer != NULL ? 2 : 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(issuer != NULL ? issuer : x));
    if (issuer == NULL) {
        X509V3_CTX v3;
        X509V3_set_ctx_nodb(&v3);
        X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
        X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints,
                                                  "critical,CA:TRUE");
        CG_CHECK(ext != NULL && X509_add_ext(x, ext, -1) == 1);
        X509_EXTENSION_free(ext);
    }
    CG_CHECK(X509_sign(x, issuer_key != NULL ? issuer_key : key, EVP_sha256()) > 0);
    return x;
}

/* ctx_check builds the chain a full handshake sends once, from the verify
 * store as OpenSSL's auto-chain would on every handshake (the CA found
 * there, the root included); a chain the certfile brought stays as it is. */
static void test_ctx_check_builds_the_chain_once(void)
{
    struct cg_err err = { { 0 } };
    EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *key = EVP_EC_gen("P-256");
    X509 *ca = make_cert("unit CA", ca_key, NULL, NULL);
    X509 *leaf = make_cert("unit leaf", key, ca, ca_key);
    STACK_OF(X509) *chain = NULL;

    for (int brought = 0; brought < 2; brought++) {
        SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
        CG_CHECK_INT(SSL_CTX_use_certificate(ctx, leaf), 1);
        CG_CHECK_INT(SSL_CTX_use_PrivateKey(ctx, key), 1);
        if (brought) {
            CG_CHECK_INT(SSL_CTX_add1_chain_cert(ctx, ca), 1);
        } else {
            CG_CHECK_INT(X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca), 1);
            CG_CHECK_INT(SSL_CTX_get0_chain_certs(ctx, &chain), 1);
            CG_CHECK(chain == NULL); /* left to the auto-chain until now */
        }
        CG_CHECK_INT(cg_transport_tls_ctx_check(ctx, &err), 0);
        CG_CHECK_INT(SSL_CTX_get0_chain_certs(ctx, &chain), 1);
        CG_CHECK(chain != NULL);
        CG_CHECK_INT(sk_X509_num(chain), 1);
        CG_CHECK_INT(X509_cmp(sk_X509_value(chain, 0), ca), 0);
        SSL_CTX_free(ctx);
    }
    X509_free(leaf);
    X509_free(ca);
    EVP_PKEY_free(key);
    EVP_PKEY_free(ca_key);
}

static void test_setup(void)
{
    cg_transport_tls_use(server_ctx(), 100, true);
    CG_CHECK(cg_transport_wrap != NULL);
}

static void test_teardown(void)
{
    cg_transport_tls_use(NULL, 0, true);
    CG_CHECK(cg_transport_wrap == NULL);
}

CG_TEST_MAIN(CG_TEST(test_setup), CG_TEST(test_handshake_would_block_then_data),
             CG_TEST(test_data_behind_the_finished_comes_out_at_once),
             CG_TEST(test_garbage_fails_the_handshake),
             CG_TEST(test_blocking_handshake_is_bounded),
             CG_TEST(test_ctx_check_builds_the_chain_once), CG_TEST(test_teardown))
