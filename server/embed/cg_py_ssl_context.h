/* The worker's TLS context from the settings and the ssl_context server
 * hook, as gunicorn's sock.ssl_context(conf): without a hook, the default
 * factory (cg_transport_tls_ctx_new); with one, hook(cfg, factory), where
 * the factory returns a context object that supports what users do with an
 * ssl.SSLContext in that hook (docs/compatibility.md) and applies it to the
 * OpenSSL context. Anything else the hook touches fails, naming it.
 *
 * Master (checking a configuration at start-up, --check-config and HUP) and
 * worker (at boot). Needs the GIL. */
#ifndef CG_PY_SSL_CONTEXT_H
#define CG_PY_SSL_CONTEXT_H

#include <Python.h>
#include <openssl/ssl.h>

#include "cg_conf.h"
#include "cg_err.h"

/* Builds the context for conf. `cfg` is the object the hook gets as its
 * config (borrowed; NULL: one is made from conf->values). Returns a new
 * context (owned by the caller), or NULL with err set (Python's error
 * cleared). */
SSL_CTX *cg_py_ssl_context_build(const struct cg_conf *conf, PyObject *cfg, struct cg_err *err);

/* When conf turns TLS on, builds the context once and frees it: the check
 * of start-up, --check-config and a HUP. Returns 0, or -1 with err. */
int cg_py_ssl_context_check(const struct cg_conf *conf, PyObject *cfg, struct cg_err *err);

#endif
