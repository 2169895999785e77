/* The worker's TLS context from the settings and the ssl_context server
 * hook, as gunicorn's sock.ssl_context(conf): without a hook, the default
 * factory (cg_transport_tls_ctx_new); with one, hook(cfg, factory), where
 * the factory returns a context object that supports what users do with an
 * ssl.SSLContext in that hook (docs/compatibility.md) and applies it to the
 * OpenSSL context. Anything else the hook touches fails, naming it.
 *
 * The master builds the context at start-up and again on each HUP whose
 * configuration loads, before it forks the new workers; workers inherit it
 * (cg_transport_tls_use). So a HUP serves the new certificates from its new
 * workers, and a HUP whose certificates are broken keeps the running
 * context for every worker it starts. Master only. Needs the GIL. */
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

/* When conf turns TLS on, builds the context once and frees it
 * (--check-config). Returns 0, or -1 with err. */
int cg_py_ssl_context_check(const struct cg_conf *conf, PyObject *cfg, struct cg_err *err);

/* Builds the context for conf and makes it the one every worker forked from
 * now on serves with (TLS off when conf does not ask for it). On failure
 * the running context stays. Returns 0, or -1 with err. */
int cg_py_ssl_context_install(const struct cg_conf *conf, PyObject *cfg, struct cg_err *err);

#endif
