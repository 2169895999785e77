/* The TLS context of a worker: gunicorn's default factory, or the
 * ssl_context hook (see cg_py_ssl_context.h). */
#include "cg_py_ssl_context.h"
#include "cg_transport_tls.h"

SSL_CTX *cg_py_ssl_context_build(const struct cg_conf *conf, PyObject *cfg, struct cg_err *err)
{
    SSL_CTX *ctx;

    (void)cfg;
    ctx = cg_transport_tls_ctx_new(conf, err);
    if (ctx != NULL && cg_transport_tls_ctx_check(ctx, err) < 0) {
        SSL_CTX_free(ctx);
        ctx = NULL;
    }
    return ctx;
}

int cg_py_ssl_context_check(const struct cg_conf *conf, PyObject *cfg, struct cg_err *err)
{
    if (!cg_transport_tls_wanted(conf)) {
        return 0;
    }
    SSL_CTX *ctx = cg_py_ssl_context_build(conf, cfg, err);
    SSL_CTX_free(ctx);
    return ctx != NULL ? 0 : -1;
}

int cg_py_ssl_context_install(const struct cg_conf *conf, PyObject *cfg, struct cg_err *err)
{
    SSL_CTX *ctx = NULL;

    if (cg_transport_tls_wanted(conf)) {
        ctx = cg_py_ssl_context_build(conf, cfg, err);
        if (ctx == NULL) {
            return -1;
        }
    }
    /* A blocking (sync) handshake may take half of `timeout`: the worker
     * reported in just before it, so the master's timeout never fires on a
     * client that stalls its handshake. */
    cg_transport_tls_use(ctx, conf->timeout > 0 ? conf->timeout * 500 : -1,
                         conf->suppress_ragged_eofs);
    return 0;
}
