/* The TLS transport (see cg_transport_tls.h): the worker's one SSL_CTX,
 * gunicorn's default context factory, and the transport ops over an SSL
 * session per connection.
 *
 * The socket under a TLS transport is always non-blocking; a transport set
 * up on a blocking socket (the sync worker) remembers that and waits itself
 * with poll(), so its callers see the blocking behaviour they asked for.
 * Every OpenSSL call starts from an empty error queue (errq_empty):
 * the queue is per thread, and a stale entry would change what
 * SSL_get_error answers for another connection. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "cg_clock.h"
#include "cg_log.h"
#include "cg_transport_tls.h"

/* Plaintext per SSL_write when small iovec parts are gathered (one TLS
 * record), and the file copy loop's chunk. */
#define TLS_RECORD 16384

/* Python's default cipher string (ssl._DEFAULT_CIPHERS, 3.10+), which
 * gunicorn's default context uses when `ciphers` is unset. */
#define PY_DEFAULT_CIPHERS                                                                        \
    "@SECLEVEL=2:ECDH+AESGCM:ECDH+CHACHA20:ECDH+AES:DHE+AES:!aNULL:!eNULL:!aDSS:!SHA1:!AESCCM"

struct tls_conn {
    SSL *ssl;        /* owned */
    bool blocking;   /* the caller's socket mode: wait here on would-block */
    bool handshaken;
    bool failed;     /* the handshake failed: every op fails */
};

static SSL_CTX *worker_ctx; /* the worker's context, or NULL */
static int hs_timeout_ms;
static bool ragged_ok = true;

/* ---- errors ---- */

void cg_transport_tls_err(struct cg_err *err, const char *what, const char *fallback)
{
    char why[512] = "";
    size_t n = 0;
    unsigned long e;

    /* Every reason on the queue, the first (closest to the cause) first:
     * "no start line (PEM lib)". */
    while ((e = ERR_get_error()) != 0 && n < sizeof(why) - 1) {
        const char *r = ERR_reason_error_string(e);
        if (r == NULL && ERR_GET_LIB(e) == ERR_LIB_SYS) {
            r = strerror(ERR_GET_REASON(e));
        }
        if (r == NULL || strstr(why, r) != NULL) {
            continue;
        }
        n += (size_t)snprintf(why + n, sizeof(why) - n, n == 0 ? "%s" : n == strlen(why) &&
                              strchr(why, '(') == NULL ? " (%s" : ", %s", r);
        if (n >= sizeof(why)) {
            n = sizeof(why) - 1;
        }
    }
    if (strchr(why, '(') != NULL && n + 1 < sizeof(why)) {
        why[n++] = ')';
        why[n] = '\0';
    }
    cg_err_set(err, "%s: %s", what, why[0] != '\0' ? why : fallback);
    ERR_clear_error();
}

/* ---- the context ---- */

bool cg_transport_tls_wanted(const struct cg_conf *conf)
{
    return (conf->certfile != NULL && conf->certfile[0] != '\0') ||
           (conf->keyfile != NULL && conf->keyfile[0] != '\0');
}

/* A key password is only given through the ssl_context hook
 * (load_cert_chain(password=...)); without one OpenSSL must not prompt on
 * the terminal, as it would by default: an encrypted key fails. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    if (u != NULL) {
        *(bool *)u = true; /* the key is encrypted */
    }
    return -1;
}

/* Fails with "<setting> <path>: <strerror>" when path cannot be read, the
 * message users understand better than OpenSSL's "system library". */
static int readable(const char *setting, const char *path, struct cg_err *err)
{
    if (access(path, R_OK) < 0) {
        cg_err_set(err, "%s %s: %s", setting, path, strerror(errno));
        return -1;
    }
    return 0;
}

static SSL_CTX *ctx_base(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        return NULL;
    }
    /* As Python's SSLContext(PROTOCOL_TLS_SERVER) through
     * create_default_context: TLS 1.2 or newer, no compression, the
     * server's cipher order, OpenSSL's bug workarounds. */
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, (SSL_OP_ALL & ~SSL_OP_DONT_INSERT_EMPTY_FRAGMENTS) |
                                 SSL_OP_NO_SSLv3 | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_SINGLE_DH_USE |
                                 SSL_OP_SINGLE_ECDH_USE);
    /* Partial writes and a retry from another address: the transport's
     * callers resend the unsent rest of a response from their own
     * buffers (asgi's output buffer, an advanced iovec). */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Sessions resumed with client certificates need a context id. */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"cgunicorn", 9);
    SSL_CTX_set_default_passwd_cb(ctx, no_password);
    if (SSL_CTX_set_cipher_list(ctx, PY_DEFAULT_CIPHERS) != 1) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static int load_verify(SSL_CTX *ctx, const struct cg_conf *conf, struct cg_err *err)
{
    char what[1200];

    if (conf->ca_certs == NULL || conf->ca_certs[0] == '\0') {
        /* create_default_context without a cafile loads the system's CAs */
        SSL_CTX_set_default_verify_paths(ctx);
        ERR_clear_error();
        return 0;
    }
    if (readable("ca_certs", conf->ca_certs, err) < 0) {
        return -1;
    }
    if (SSL_CTX_load_verify_locations(ctx, conf->ca_certs, NULL) != 1) {
        snprintf(what, sizeof(what), "ca_certs %s", conf->ca_certs);
        cg_transport_tls_err(err, what, "no certificate could be loaded");
        return -1;
    }
    return 0;
}

int cg_transport_tls_load_chain(SSL_CTX *ctx, const char *certfile, const char *keyfile,
                                struct cg_err *err)
{
    char what[2400];

    if (readable("certfile", certfile, err) < 0 ||
        (keyfile != NULL && readable("keyfile", keyfile, err) < 0)) {
        return -1;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, certfile) != 1) {
        snprintf(what, sizeof(what), "certfile %s", certfile);
        cg_transport_tls_err(err, what, "not a PEM certificate");
        return -1;
    }
    const char *kf = keyfile != NULL ? keyfile : certfile;
    const char *kname = keyfile != NULL ? "keyfile" : "certfile";
    bool encrypted = false;
    void *cb_data = SSL_CTX_get_default_passwd_cb_userdata(ctx);
    if (cb_data == NULL) {
        SSL_CTX_set_default_passwd_cb_userdata(ctx, &encrypted);
    }
    int rc = SSL_CTX_use_PrivateKey_file(ctx, kf, SSL_FILETYPE_PEM);
    if (cb_data == NULL) {
        SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);
    }
    if (rc != 1) {
        if (encrypted && SSL_CTX_get_default_passwd_cb(ctx) == no_password) {
            ERR_clear_error();
            cg_err_set(err, "%s %s: the key is encrypted and no password was given (pass it "
                            "with load_cert_chain(..., password=...) in the ssl_context hook)",
                       kname, kf);
            return -1;
        }
        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
            snprintf(what, sizeof(what), "%s %s does not match certfile %s", kname, kf, certfile);
        } else {
            snprintf(what, sizeof(what), "%s %s", kname, kf);
        }
        cg_transport_tls_err(err, what, "no private key could be loaded");
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(what, sizeof(what), "%s %s does not match certfile %s",
                 keyfile != NULL ? "keyfile" : "the key in certfile", kf, certfile);
        cg_transport_tls_err(err, what, "key values mismatch");
        return -1;
    }
    return 0;
}

SSL_CTX *cg_transport_tls_ctx_new(const struct cg_conf *conf, struct cg_err *err)
{
    SSL_CTX *ctx;

    ERR_clear_error();
    if (conf->certfile == NULL || conf->certfile[0] == '\0') {
        cg_err_set(err, "keyfile is set without certfile: TLS needs a certificate "
                        "(set certfile, or remove keyfile)");
        return NULL;
    }
    if (conf->cert_reqs < 0 || conf->cert_reqs > 2) {
        cg_err_set(err, "cert_reqs %d: must be 0 (none), 1 (optional) or 2 (required)",
                   conf->cert_reqs);
        return NULL;
    }
    ctx = ctx_base();
    if (ctx == NULL) {
        cg_transport_tls_err(err, "TLS context", "out of memory");
        return NULL;
    }
    if (load_verify(ctx, conf, err) < 0 ||
        cg_transport_tls_load_chain(ctx, conf->certfile,
                   conf->keyfile != NULL && conf->keyfile[0] ? conf->keyfile : NULL, err) < 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    int mode = conf->cert_reqs == 0   ? SSL_VERIFY_NONE
               : conf->cert_reqs == 1 ? SSL_VERIFY_PEER
                                      : SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ctx, mode, NULL);
    if (conf->ciphers != NULL && conf->ciphers[0] != '\0' &&
        SSL_CTX_set_cipher_list(ctx, conf->ciphers) != 1) {
        char what[600];
        snprintf(what, sizeof(what), "ciphers '%s'", conf->ciphers);
        cg_transport_tls_err(err, what, "No cipher can be selected.");
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* The chain a full handshake sends, built once. A certfile with the leaf
 * alone leaves OpenSSL to complete the chain from the verify store on
 * every full handshake (its auto-chain, as Python's ssl does): an
 * X509_verify_cert and, with the system's CA directory, two readings of
 * /etc/ssl/certs and three stat(2)s per handshake (strace -c, 50 wrk
 * connections). Built here with the same store and the same outcome
 * (errors ignored, the root kept, as the auto-chain sends it), it is sent
 * as it is. When building fails (a security level the chain does not
 * meet), the auto-chain stays, as before. */
static void build_chain(SSL_CTX *ctx)
{
    STACK_OF(X509) *extra = NULL;

    SSL_CTX_get0_chain_certs(ctx, &extra);
    if (extra == NULL && SSL_CTX_get_extra_chain_certs_only(ctx, &extra) == 1 && extra == NULL &&
        !(SSL_CTX_get_mode(ctx) & SSL_MODE_NO_AUTO_CHAIN)) {
        SSL_CTX_build_cert_chain(ctx, SSL_BUILD_CHAIN_FLAG_IGNORE_ERROR |
                                          SSL_BUILD_CHAIN_FLAG_CLEAR_ERROR);
    }
    ERR_clear_error();
}

int cg_transport_tls_ctx_check(SSL_CTX *ctx, struct cg_err *err)
{
    ERR_clear_error();
    if (SSL_CTX_get0_certificate(ctx) == NULL) {
        cg_err_set(err, "the TLS context has no certificate (load_cert_chain was not called)");
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        cg_transport_tls_err(err, "the TLS context's key does not match its certificate",
                             "key values mismatch");
        return -1;
    }
    build_chain(ctx);
    return 0;
}

/* ---- per connection ---- */

static const struct cg_transport_ops tls_ops;

/* Empties the thread's error queue before an SSL_* call. ERR_clear_error
 * walks every slot of the queue even when it is empty, four or more times
 * per keep-alive request; the queue is almost always empty, which a peek
 * tells for a fraction of that (callgrind: 1,600 of a keep-alive hello
 * request's 63,000 instructions saved). */
static void errq_empty(void)
{
    if (ERR_peek_error() != 0) {
        ERR_clear_error();
    }
}

static void tls_wrap(struct cg_transport *t)
{
    struct tls_conn *tc = calloc(1, sizeof(*tc));
    int fl = fcntl(t->fd, F_GETFL);

    t->ops = &tls_ops;
    if (tc == NULL || fl < 0) {
        free(tc);
        return; /* t->impl NULL: every op fails with ENOMEM */
    }
    tc->blocking = !(fl & O_NONBLOCK);
    if (tc->blocking) {
        fcntl(t->fd, F_SETFL, fl | O_NONBLOCK);
    }
    errq_empty();
    tc->ssl = SSL_new(worker_ctx);
    if (tc->ssl == NULL || SSL_set_fd(tc->ssl, t->fd) != 1) {
        SSL_free(tc->ssl);
        free(tc);
        errq_empty();
        return;
    }
    SSL_set_accept_state(tc->ssl);
    /* Read ahead during the handshake only (see handshake()). */
    SSL_set_read_ahead(tc->ssl, 1);
    t->impl = tc;
}

void cg_transport_tls_use(SSL_CTX *ctx, int handshake_timeout_ms, bool suppress_ragged_eofs)
{
    SSL_CTX_free(worker_ctx);
    worker_ctx = ctx;
    hs_timeout_ms = handshake_timeout_ms;
    ragged_ok = suppress_ragged_eofs;
    cg_transport_wrap = ctx != NULL ? tls_wrap : NULL;
}

bool cg_transport_is_tls(const struct cg_transport *t)
{
    return t->ops == &tls_ops;
}

void cg_transport_tls_read_ahead(struct cg_transport *t)
{
    struct tls_conn *tc = cg_transport_is_tls(t) ? t->impl : NULL;

    if (tc != NULL && tc->ssl != NULL) {
        SSL_set_read_ahead(tc->ssl, 1);
    }
}

bool cg_transport_tls_buffered(const struct cg_transport *t)
{
    struct tls_conn *tc = cg_transport_is_tls(t) ? t->impl : NULL;

    return tc != NULL && tc->ssl != NULL && SSL_has_pending(tc->ssl);
}

static void tls_release(struct cg_transport *t)
{
    struct tls_conn *tc = t->impl;

    if (tc != NULL) {
        SSL_free(tc->ssl);
        free(tc);
        t->impl = NULL;
    }
}

/* Waits for what the last would-block wanted, up to timeout_ms (<= 0:
 * forever). Returns 0, or -1 with errno (ETIMEDOUT). */
static int wait_for(struct cg_transport *t, int timeout_ms)
{
    return cg_transport_wait(t, timeout_ms);
}

/* What an SSL_* call's failure means for the transport. Returns
 * CG_TRANSPORT_AGAIN (t->want set), 0 (the peer's EOF), or -1 with errno. */
static ssize_t failure(struct cg_transport *t, struct tls_conn *tc, int rc)
{
    int e = SSL_get_error(tc->ssl, rc);
    int saved = errno;

    switch (e) {
    case SSL_ERROR_WANT_READ:
        t->want = POLLIN;
        return CG_TRANSPORT_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        t->want = POLLOUT;
        return CG_TRANSPORT_AGAIN;
    case SSL_ERROR_ZERO_RETURN: /* close_notify */
        return 0;
    case SSL_ERROR_SYSCALL:
        errq_empty();
        errno = saved != 0 ? saved : ECONNRESET;
        return -1;
    default: {
        unsigned long last = ERR_peek_last_error();
        errq_empty();
        if (ERR_GET_REASON(last) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            if (ragged_ok) {
                return 0; /* suppress_ragged_eofs: an EOF like any other */
            }
            errno = ECONNRESET;
            return -1;
        }
        errno = EPROTO;
        return -1;
    }
    }
}

/* Runs the handshake as far as it goes. Returns 0 once done,
 * CG_TRANSPORT_AGAIN (non-blocking callers), or -1 with errno. */
static ssize_t handshake(struct cg_transport *t, struct tls_conn *tc, bool wait)
{
    uint64_t deadline = wait && hs_timeout_ms > 0 ? cg_monotonic_ms() + (uint64_t)hs_timeout_ms : 0;

    for (;;) {
        errq_empty();
        int rc = SSL_do_handshake(tc->ssl);
        if (rc == 1) {
            /* The handshake read ahead: each read(2) took what the client
             * had sent, not a record header and then its body (a TLS 1.3
             * resumption read its ClientHello in 2 reads and its CCS,
             * Finished and first request in 6; now 1 and 1). From here
             * records are read one at a time again (tls_recv), so nothing
             * but what the handshake's last read brought waits inside
             * OpenSSL, and the recv that ran this handshake takes that. */
            SSL_set_read_ahead(tc->ssl, 0);
            tc->handshaken = true;
            return 0;
        }
        unsigned long last = ERR_peek_last_error();
        ssize_t r = failure(t, tc, rc);
        if (r == CG_TRANSPORT_AGAIN && wait) {
            int left = -1;
            if (deadline != 0) {
                uint64_t now = cg_monotonic_ms();
                if (now >= deadline) {
                    errno = ETIMEDOUT;
                    r = -1;
                } else {
                    left = (int)(deadline - now);
                }
            }
            if (r != -1 && wait_for(t, left) == 0) {
                continue;
            }
            r = -1; /* the bound passed (ETIMEDOUT) or poll failed */
        }
        if (r == CG_TRANSPORT_AGAIN) {
            return r;
        }
        /* A plaintext client, garbage, a reset or a timeout: one debug line
         * (gunicorn logs an SSL error during the handshake at debug). */
        if (cg_log_enabled(CG_LOG_DEBUG)) {
            const char *why = last != 0 ? ERR_reason_error_string(last) : NULL;
            cg_log_debug("TLS handshake failed: %s",
                         why != NULL ? why : (r == 0 ? "EOF" : strerror(errno)));
        }
        tc->failed = true;
        if (r == 0) {
            errno = ECONNRESET;
        }
        return -1;
    }
}

/* The session of an op, with its handshake done; NULL with *r set when
 * the op must return *r now. */
static struct tls_conn *ready(struct cg_transport *t, bool wait, ssize_t *r)
{
    struct tls_conn *tc = t->impl;

    if (tc == NULL || tc->failed) {
        errno = tc == NULL ? ENOMEM : ECONNRESET;
        *r = -1;
        return NULL;
    }
    if (!tc->handshaken) {
        *r = handshake(t, tc, wait);
        if (*r != 0) {
            return NULL;
        }
    }
    return tc;
}

static ssize_t tls_recv(struct cg_transport *t, void *buf, size_t n, int flags)
{
    struct tls_conn *tc = t->impl;
    bool wait = tc != NULL && tc->blocking && !(flags & CG_TRANSPORT_NOWAIT);
    size_t got = 0;
    ssize_t r;

    if ((tc = ready(t, wait, &r)) == NULL) {
        return r;
    }
    /* One record, and what OpenSSL still holds while there is room (what
     * is left of that record, and records the handshake's read-ahead
     * brought): bytes left inside OpenSSL would not wake an event loop that
     * polls the socket, while the next records wait in the kernel, where
     * (level-triggered) readiness sees them. No read ahead after the
     * handshake, so no extra read(2) that would only say EAGAIN; except
     * for an HTTP/2 session (cg_transport_tls_read_ahead), which reads
     * until EAGAIN and asks cg_transport_tls_buffered() before it waits. */
    while (got < n) {
        size_t k = 0;
        errq_empty();
        if (SSL_read_ex(tc->ssl, (char *)buf + got, n - got, &k) == 1) {
            got += k;
            if (SSL_pending(tc->ssl) == 0 && !SSL_has_pending(tc->ssl)) {
                break;
            }
            continue;
        }
        r = failure(t, tc, 0);
        if (got > 0) {
            errq_empty();
            break; /* the error, if any, comes back on the next call */
        }
        if (r == CG_TRANSPORT_AGAIN && wait && wait_for(t, -1) == 0) {
            continue;
        }
        return r;
    }
    return (ssize_t)got;
}

/* Writes buf[0..n) as far as the socket takes it. */
static ssize_t write_some(struct cg_transport *t, struct tls_conn *tc, const void *buf, size_t n,
                          bool wait)
{
    for (;;) {
        size_t w = 0;
        errq_empty();
        if (SSL_write_ex(tc->ssl, buf, n, &w) == 1) {
            return (ssize_t)w;
        }
        ssize_t r = failure(t, tc, 0);
        if (r == 0) {
            errno = EPIPE;
            return -1;
        }
        if (r == CG_TRANSPORT_AGAIN && wait && wait_for(t, -1) == 0) {
            continue;
        }
        return r;
    }
}

/* Sends what it can of iov: small parts are gathered into one record (a
 * retry after a would-block gathers the same bytes again, as OpenSSL
 * requires), large ones are written in place. */
static ssize_t tls_sendv(struct cg_transport *t, const struct iovec *iov, int n, int flags)
{
    struct tls_conn *tc = t->impl;
    bool wait = tc != NULL && tc->blocking && !(flags & CG_TRANSPORT_NOWAIT);
    char gather[TLS_RECORD];
    size_t sent = 0;
    ssize_t r;
    int i = 0;

    if ((tc = ready(t, wait, &r)) == NULL) {
        return r;
    }
    while (i < n) {
        const void *p = iov[i].iov_base;
        size_t len = iov[i].iov_len;
        if (len < TLS_RECORD && i + 1 < n && len + iov[i + 1].iov_len <= sizeof(gather)) {
            len = 0; /* whole small parts, as many as one record holds */
            while (i < n && len + iov[i].iov_len <= sizeof(gather)) {
                memcpy(gather + len, iov[i].iov_base, iov[i].iov_len);
                len += iov[i].iov_len;
                i++;
            }
            p = gather;
        } else {
            i++;
        }
        if (len == 0) {
            continue;
        }
        r = write_some(t, tc, p, len, wait);
        if (r < 0) {
            return sent > 0 ? (ssize_t)sent : r;
        }
        sent += (size_t)r;
        if ((size_t)r < len) {
            break;
        }
    }
    return (ssize_t)sent;
}

/* No kernel TLS here: the file is copied through a buffer (pread, so a
 * short write loses nothing; a pipe is read once and sent whole). */
static ssize_t tls_sendfile(struct cg_transport *t, int fd, off_t *pos, size_t n)
{
    char buf[4 * TLS_RECORD];
    size_t want = n < sizeof(buf) ? n : sizeof(buf);
    ssize_t got;

    do {
        got = pread(fd, buf, want, *pos);
    } while (got < 0 && errno == EINTR);
    if (got < 0 && (errno == ESPIPE || errno == EINVAL)) {
        do {
            got = read(fd, buf, want);
        } while (got < 0 && errno == EINTR);
        if (got > 0) {
            struct iovec iov = { buf, (size_t)got };
            if (cg_transport_sendv_all(t, &iov, 1, -1) < 0) {
                return -1;
            }
            *pos += got;
        }
        return got;
    }
    if (got <= 0) {
        return got;
    }
    struct iovec iov = { buf, (size_t)got };
    ssize_t w = tls_sendv(t, &iov, 1, 0);
    if (w > 0) {
        *pos += w;
    }
    return w;
}

/* close_notify, then the TCP half-close the callers rely on to linger. */
static int tls_shutdown(struct cg_transport *t)
{
    struct tls_conn *tc = t->impl;

    if (tc != NULL && tc->handshaken && !tc->failed) {
        errq_empty();
        if (SSL_shutdown(tc->ssl) < 0) {
            errq_empty(); /* a full socket: the FIN still ends the stream */
        }
    }
    return shutdown(t->fd, SHUT_WR);
}

static int tls_unread(struct cg_transport *t)
{
    struct tls_conn *tc = t->impl;
    int n = 0;

    if (ioctl(t->fd, FIONREAD, &n) < 0) {
        return -1;
    }
    if (tc != NULL && tc->handshaken) {
        n += SSL_pending(tc->ssl);
    }
    /* Raw bytes OpenSSL read ahead but has not decrypted: at least one. */
    return n == 0 && tc != NULL && tc->ssl != NULL && SSL_has_pending(tc->ssl) ? 1 : n;
}

static const struct cg_transport_ops tls_ops = {
    .recv = tls_recv,
    .sendv = tls_sendv,
    .sendfile = tls_sendfile,
    .shutdown = tls_shutdown,
    .unread = tls_unread,
    .release = tls_release,
};

/* ---- what the app may ask ---- */

bool cg_transport_tls_info(const struct cg_transport *t, struct cg_transport_tls_info *out)
{
    const struct tls_conn *tc = cg_transport_is_tls(t) ? t->impl : NULL;

    if (tc == NULL || !tc->handshaken) {
        return false;
    }
    const SSL_CIPHER *c = SSL_get_current_cipher(tc->ssl);
    const unsigned char *alpn = NULL;
    unsigned int alen = 0;
    out->version = SSL_get_version(tc->ssl);
    out->cipher = c != NULL ? SSL_CIPHER_get_name(c) : "";
    out->cipher_protocol = c != NULL ? SSL_CIPHER_get_version(c) : "";
    out->bits = c != NULL ? SSL_CIPHER_get_bits(c, NULL) : 0;
    SSL_get0_alpn_selected(tc->ssl, &alpn, &alen);
    if (alen >= sizeof(out->alpn)) {
        alen = 0;
    }
    memcpy(out->alpn, alpn != NULL ? (const char *)alpn : "", alen);
    out->alpn[alen] = '\0';
    return true;
}

int cg_transport_tls_peer_der(const struct cg_transport *t, unsigned char **der, bool *verified)
{
    const struct tls_conn *tc = cg_transport_is_tls(t) ? t->impl : NULL;

    *der = NULL;
    if (tc == NULL || !tc->handshaken) {
        return 0;
    }
    X509 *x = SSL_get1_peer_certificate(tc->ssl);
    if (x == NULL) {
        return 0;
    }
    int len = i2d_X509(x, der);
    *verified = SSL_get_verify_mode(tc->ssl) != SSL_VERIFY_NONE &&
                SSL_get_verify_result(tc->ssl) == X509_V_OK;
    X509_free(x);
    return len > 0 ? len : -1;
}
