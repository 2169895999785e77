/* The TLS transport: the second implementation of the connection transport
 * (cg_transport.h), over OpenSSL 3. The master builds one SSL_CTX from the
 * settings at start-up and on each HUP (server/embed/cg_py_ssl_context.c)
 * and hands it to cg_transport_tls_use() before it forks workers, which
 * inherit it: a HUP's new workers serve the new certificates, and a HUP
 * with broken ones keeps the running context. In a worker, every
 * connection it accepts, in every worker class, gets an SSL session in
 * cg_transport_init() and speaks TLS through the same ops.
 *
 * The handshake runs inside the first recv or send: on a non-blocking socket
 * (gthread's loop, the asgi loop) it reports CG_TRANSPORT_AGAIN with
 * t->want like any other would-block, so no Python thread waits for it; on
 * a blocking socket (sync) the transport waits itself, the handshake bounded
 * by the worker's `timeout`. A client that fails the handshake costs its
 * connection and one debug line.
 *
 * Nothing here touches Python. The context functions run in the master;
 * the ops in any thread of a worker that owns the connection. */
#ifndef CG_TRANSPORT_TLS_H
#define CG_TRANSPORT_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

#include "cg_conf_struct.h"
#include "cg_err.h"
#include "cg_transport.h"

/* Whether the settings turn TLS on (certfile or keyfile set, as gunicorn's
 * cfg.is_ssl). */
bool cg_transport_tls_wanted(const struct cg_conf *conf);

/* gunicorn's default_ssl_context_factory: a server context as Python's
 * ssl.create_default_context(Purpose.CLIENT_AUTH, cafile=ca_certs) makes it
 * (TLS 1.2 or newer, Python's default ciphers, the system's CAs when
 * ca_certs is unset), then load_cert_chain(certfile, keyfile), verify_mode
 * = cert_reqs and set_ciphers(ciphers). Returns a new context (owned by the
 * caller: SSL_CTX_free), or NULL with err naming the setting, its file and
 * OpenSSL's reason. */
SSL_CTX *cg_transport_tls_ctx_new(const struct cg_conf *conf, struct cg_err *err);

/* Python's SSLContext.load_cert_chain(certfile, keyfile): the certificate
 * chain, the key (keyfile NULL: from certfile), and whether they match.
 * A password, if any, is the context's passwd callback's. Returns 0, or -1
 * with err naming the file and OpenSSL's reason. */
int cg_transport_tls_load_chain(SSL_CTX *ctx, const char *certfile, const char *keyfile,
                                struct cg_err *err);

/* The final checks of a context the ssl_context hook may have changed: a
 * certificate and a matching key. Returns 0, or -1 with err. */
int cg_transport_tls_ctx_check(SSL_CTX *ctx, struct cg_err *err);

/* Sets err to "<what>: <OpenSSL's reason>" from the thread's error queue
 * (emptied), or "<what>: <fallback>" when the queue is empty. */
void cg_transport_tls_err(struct cg_err *err, const char *what, const char *fallback);

/* Every transport this process sets up from now on speaks TLS with ctx
 * (owned from here; NULL turns TLS off and frees the previous context).
 * handshake_timeout_ms bounds the handshake of blocking sockets (<= 0: no
 * bound); suppress_ragged_eofs reads an EOF without close_notify as an EOF.
 * Master, before it forks (workers inherit it); a worker frees its copy
 * with NULL when it exits. */
void cg_transport_tls_use(SSL_CTX *ctx, int handshake_timeout_ms, bool suppress_ragged_eofs);

/* Whether t speaks TLS. */
bool cg_transport_is_tls(const struct cg_transport *t);

/* For a caller that reads until CG_TRANSPORT_AGAIN and asks
 * cg_transport_tls_buffered() before it waits for readability (the
 * HTTP/2 session): OpenSSL reads ahead (as much as the socket has, not a
 * record header and then its body) and one recv returns as many records
 * as fit. No effect when t is not TLS. */
void cg_transport_tls_read_ahead(struct cg_transport *t);

/* Whether OpenSSL holds received bytes not yet returned (read ahead): the
 * socket's readiness would not tell of them. */
bool cg_transport_tls_buffered(const struct cg_transport *t);

/* What an ssl.SSLSocket reports about a connection whose handshake is done:
 * protocol version ("TLSv1.3"), cipher name, the cipher's protocol and
 * secret bits, the ALPN protocol chosen ("" for none). Returns false when t
 * is not TLS or its handshake is not done. */
struct cg_transport_tls_info {
    const char *version;
    const char *cipher;
    const char *cipher_protocol;
    int bits;
    char alpn[32];
};
bool cg_transport_tls_info(const struct cg_transport *t, struct cg_transport_tls_info *out);

/* The peer's certificate in DER (*der owned by the caller: OPENSSL_free),
 * its length, and in *verified whether OpenSSL verified it (cert_reqs 1 or
 * 2). Returns 0 when the peer sent none or t is not TLS, -1 on error. */
int cg_transport_tls_peer_der(const struct cg_transport *t, unsigned char **der,
                              bool *verified);

#endif
