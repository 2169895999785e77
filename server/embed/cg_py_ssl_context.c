/* The TLS context of the workers: gunicorn's default factory, or the
 * ssl_context hook (see cg_py_ssl_context.h).
 *
 * The hook gets a context object (type cgunicorn.SSLContext, below) that
 * wraps an OpenSSL SSL_CTX and applies what the hook does to it:
 * load_cert_chain (with password), load_verify_locations,
 * load_default_certs, set_ciphers, set_alpn_protocols, verify_mode,
 * minimum_version/maximum_version, options (OP_NO_*), check_hostname
 * (False only: a server does not check hostnames), sni_callback and
 * set_servername_callback. Any other attribute raises AttributeError naming
 * it, so the hook, and start-up, fail; nothing is silently ignored.
 *
 * sni_callback runs in the worker during a handshake, in whatever thread
 * runs it: it takes the GIL for the call (PyGILState_Ensure). The callback
 * chooses a certificate by setting `ssl_object.context` to another context
 * made by the factory. */
#include <openssl/err.h>
#include <string.h>

#include "cg_log.h"
#include "cg_py.h"
#include "cg_py_ssl_context.h"
#include "cg_transport_tls.h"

/* ---- per-SSL_CTX data the hook attaches (freed with the SSL_CTX) ---- */

struct ctx_extra {
    unsigned char *alpn; /* wire format, owned */
    unsigned int alpn_len;
    PyObject *sni;     /* callable, owned (freed without the GIL: leaked at exit) */
    PyObject *ctx_obj; /* the context object passed to sni (weak: it may die) */
};

static int extra_index = -1;

static void extra_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                       void *argp)
{
    struct ctx_extra *x = ptr;
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    if (x != NULL) {
        OPENSSL_free(x->alpn);
        /* x->sni is a Python reference: an SSL_CTX freed while the
         * interpreter lives drops it only when the GIL is held. */
        if (x->sni != NULL && Py_IsInitialized() && PyGILState_Check()) {
            Py_DECREF(x->sni);
        }
        OPENSSL_free(x);
    }
}

static struct ctx_extra *extra_of(SSL_CTX *ctx, bool create)
{
    if (extra_index < 0) {
        extra_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, extra_free);
    }
    struct ctx_extra *x = SSL_CTX_get_ex_data(ctx, extra_index);
    if (x == NULL && create) {
        x = OPENSSL_zalloc(sizeof(*x));
        if (x != NULL && SSL_CTX_set_ex_data(ctx, extra_index, x) != 1) {
            OPENSSL_free(x);
            x = NULL;
        }
    }
    return x;
}

/* ---- the context object ---- */

typedef struct {
    PyObject_HEAD
    SSL_CTX *ctx; /* owned (one reference) */
    PyObject *password; /* during load_cert_chain only */
} ctx_obj;

static PyTypeObject ctx_type;

static const char SUPPORTED[] =
    "load_cert_chain, load_verify_locations, load_default_certs, set_ciphers, "
    "set_alpn_protocols, set_servername_callback, sni_callback, verify_mode, "
    "minimum_version, maximum_version, options, check_hostname";

static PyObject *ssl_error(const char *what)
{
    struct cg_err err = { { 0 } };
    cg_transport_tls_err(&err, what, "failed");
    PyErr_SetString(PyExc_OSError, err.msg); /* ssl.SSLError is an OSError */
    return NULL;
}

static PyObject *ctx_wrap(SSL_CTX *ctx)
{
    ctx_obj *o = PyObject_New(ctx_obj, &ctx_type);
    if (o == NULL) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    o->ctx = ctx;
    o->password = NULL;
    return (PyObject *)o;
}

static void ctx_dealloc(ctx_obj *o)
{
    SSL_CTX_free(o->ctx);
    PyObject_Free(o);
}

static PyObject *unsupported(PyObject *name)
{
    PyErr_Format(PyExc_AttributeError,
                 "SSLContext.%U is not supported by cgunicorn's ssl_context hook "
                 "(supported: %s)",
                 name, SUPPORTED);
    return NULL;
}

static PyObject *ctx_getattro(PyObject *self, PyObject *name)
{
    PyObject *r = PyObject_GenericGetAttr(self, name);
    if (r == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        return unsupported(name);
    }
    return r;
}

static int ctx_setattro(PyObject *self, PyObject *name, PyObject *v)
{
    int rc = PyObject_GenericSetAttr(self, name, v);
    if (rc < 0 && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        unsupported(name);
    }
    return rc;
}

/* The password callback of load_cert_chain: str, bytes or a callable
 * returning one, as Python's. */
static int password_cb(char *buf, int size, int rwflag, void *u)
{
    ctx_obj *o = u;
    PyObject *p = o->password, *r = NULL;
    (void)rwflag;
    if (p == NULL || p == Py_None) {
        return -1;
    }
    if (PyCallable_Check(p)) {
        p = r = PyObject_CallNoArgs(p);
        if (r == NULL) {
            return -1;
        }
    }
    const char *s = NULL;
    Py_ssize_t n = 0;
    if (PyUnicode_Check(p)) {
        s = PyUnicode_AsUTF8AndSize(p, &n);
    } else if (PyBytes_Check(p)) {
        s = PyBytes_AS_STRING(p);
        n = PyBytes_GET_SIZE(p);
    }
    if (s == NULL || n > size) {
        Py_XDECREF(r);
        PyErr_Clear();
        return -1;
    }
    memcpy(buf, s, (size_t)n);
    Py_XDECREF(r);
    return (int)n;
}

static PyObject *load_cert_chain(ctx_obj *o, PyObject *args, PyObject *kw)
{
    static char *names[] = { "certfile", "keyfile", "password", NULL };
    const char *certfile = NULL, *keyfile = NULL;
    PyObject *password = Py_None;
    struct cg_err err = { { 0 } };

    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|zO:load_cert_chain", names, &certfile,
                                     &keyfile, &password)) {
        return NULL;
    }
    pem_password_cb *old_cb = SSL_CTX_get_default_passwd_cb(o->ctx);
    void *old_u = SSL_CTX_get_default_passwd_cb_userdata(o->ctx);
    o->password = password;
    if (password != Py_None) {
        SSL_CTX_set_default_passwd_cb(o->ctx, password_cb);
        SSL_CTX_set_default_passwd_cb_userdata(o->ctx, o);
    }
    int rc = cg_transport_tls_load_chain(o->ctx, certfile, keyfile, &err);
    SSL_CTX_set_default_passwd_cb(o->ctx, old_cb);
    SSL_CTX_set_default_passwd_cb_userdata(o->ctx, old_u);
    o->password = NULL;
    if (rc < 0) {
        if (password != Py_None && strstr(err.msg, "bad decrypt") != NULL) {
            PyErr_Format(PyExc_OSError, "load_cert_chain: wrong password for the key: %s",
                         err.msg);
        } else {
            PyErr_Format(PyExc_OSError, "load_cert_chain: %s", err.msg);
        }
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *load_verify_locations(ctx_obj *o, PyObject *args, PyObject *kw)
{
    static char *names[] = { "cafile", "capath", "cadata", NULL };
    const char *cafile = NULL, *capath = NULL;
    PyObject *cadata = Py_None;
    char what[1200];

    if (!PyArg_ParseTupleAndKeywords(args, kw, "|zzO:load_verify_locations", names, &cafile,
                                     &capath, &cadata)) {
        return NULL;
    }
    if (cadata != Py_None) {
        PyErr_SetString(PyExc_AttributeError,
                        "SSLContext.load_verify_locations(cadata=...) is not supported by "
                        "cgunicorn's ssl_context hook (use cafile or capath)");
        return NULL;
    }
    if (cafile == NULL && capath == NULL) {
        PyErr_SetString(PyExc_TypeError, "cafile, capath and cadata cannot be all omitted");
        return NULL;
    }
    ERR_clear_error();
    if (SSL_CTX_load_verify_locations(o->ctx, cafile, capath) != 1) {
        snprintf(what, sizeof(what), "load_verify_locations %s", cafile ? cafile : capath);
        return ssl_error(what);
    }
    Py_RETURN_NONE;
}

static PyObject *load_default_certs(ctx_obj *o, PyObject *args, PyObject *kw)
{
    (void)args;
    (void)kw;
    SSL_CTX_set_default_verify_paths(o->ctx);
    ERR_clear_error();
    Py_RETURN_NONE;
}

static PyObject *set_ciphers(ctx_obj *o, PyObject *arg)
{
    const char *s = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
    if (s == NULL) {
        PyErr_SetString(PyExc_TypeError, "set_ciphers() needs a str");
        return NULL;
    }
    ERR_clear_error();
    if (SSL_CTX_set_cipher_list(o->ctx, s) != 1) {
        return ssl_error("set_ciphers: No cipher can be selected.");
    }
    Py_RETURN_NONE;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    struct ctx_extra *x = extra_of(SSL_get_SSL_CTX(ssl), false);
    unsigned char *o = NULL;
    (void)arg;
    if (x == NULL || x->alpn == NULL ||
        SSL_select_next_proto(&o, outlen, x->alpn, x->alpn_len, in, inlen) !=
            OPENSSL_NPN_NEGOTIATED) {
        return SSL_TLSEXT_ERR_NOACK;
    }
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}

static PyObject *set_alpn_protocols(ctx_obj *o, PyObject *arg)
{
    PyObject *seq = PySequence_Fast(arg, "set_alpn_protocols() needs a list of str");
    unsigned char wire[256];
    size_t n = 0;

    if (seq == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        Py_ssize_t len = 0;
        const char *p = PyUnicode_AsUTF8AndSize(PySequence_Fast_GET_ITEM(seq, i), &len);
        if (p == NULL || len < 1 || len > 255 || n + 1 + (size_t)len > sizeof(wire)) {
            Py_DECREF(seq);
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_ValueError, "ALPN protocols: 1 to 255 bytes each");
            }
            return NULL;
        }
        wire[n++] = (unsigned char)len;
        memcpy(wire + n, p, (size_t)len);
        n += (size_t)len;
    }
    Py_DECREF(seq);
    struct ctx_extra *x = extra_of(o->ctx, true);
    unsigned char *copy = n > 0 ? OPENSSL_memdup(wire, n) : NULL;
    if (x == NULL || (n > 0 && copy == NULL)) {
        OPENSSL_free(copy);
        return PyErr_NoMemory();
    }
    OPENSSL_free(x->alpn);
    x->alpn = copy;
    x->alpn_len = (unsigned int)n;
    SSL_CTX_set_alpn_select_cb(o->ctx, n > 0 ? alpn_select : NULL, NULL);
    Py_RETURN_NONE;
}

/* ---- SNI: the callback runs during a worker's handshake ---- */

typedef struct {
    PyObject_HEAD
    SSL *ssl; /* borrowed for the callback's duration */
} sni_obj;

static PyObject *sni_get_context(sni_obj *s, void *c)
{
    (void)c;
    SSL_CTX *ctx = SSL_get_SSL_CTX(s->ssl);
    SSL_CTX_up_ref(ctx);
    return ctx_wrap(ctx);
}

static int sni_set_context(sni_obj *s, PyObject *v, void *c)
{
    (void)c;
    if (v == NULL || !PyObject_TypeCheck(v, &ctx_type)) {
        PyErr_SetString(PyExc_TypeError,
                        "ssl_object.context must be a context from default_ssl_context_factory()");
        return -1;
    }
    SSL_set_SSL_CTX(s->ssl, ((ctx_obj *)v)->ctx);
    return 0;
}

static PyGetSetDef sni_getset[] = {
    { "context", (getter)sni_get_context, (setter)sni_set_context, NULL, NULL },
    { NULL, NULL, NULL, NULL, NULL },
};

static PyTypeObject sni_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cgunicorn.SSLObject",
    .tp_basicsize = sizeof(sni_obj),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_getset = sni_getset,
};

static int servername_cb(SSL *ssl, int *alert, void *arg)
{
    struct ctx_extra *x = extra_of(SSL_get_SSL_CTX(ssl), false);
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    int rc = SSL_TLSEXT_ERR_OK;
    (void)arg;

    if (x == NULL || x->sni == NULL) {
        return SSL_TLSEXT_ERR_NOACK;
    }
    PyGILState_STATE g = PyGILState_Ensure();
    sni_obj *s = PyObject_New(sni_obj, &sni_type);
    PyObject *r = NULL;
    if (s != NULL) {
        s->ssl = ssl;
        SSL_CTX *cur = SSL_get_SSL_CTX(ssl);
        SSL_CTX_up_ref(cur);
        PyObject *cobj = ctx_wrap(cur);
        r = cobj ? PyObject_CallFunction(x->sni, "OsO", (PyObject *)s, name, cobj) : NULL;
        Py_XDECREF(cobj);
        s->ssl = NULL;
        Py_DECREF(s);
    }
    if (r == NULL) {
        cg_py_log_exception("ssl_context hook: the SNI callback failed");
        PyErr_Clear();
        *alert = SSL_AD_HANDSHAKE_FAILURE;
        rc = SSL_TLSEXT_ERR_ALERT_FATAL;
    } else if (PyLong_Check(r)) {
        *alert = (int)PyLong_AsLong(r);
        rc = SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    Py_XDECREF(r);
    PyGILState_Release(g);
    return rc;
}

static int set_sni(ctx_obj *o, PyObject *fn)
{
    if (fn != Py_None && !PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "not a callable object");
        return -1;
    }
    struct ctx_extra *x = extra_of(o->ctx, true);
    if (x == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_XSETREF(x->sni, fn != Py_None ? Py_NewRef(fn) : NULL);
    /* OpenSSL declares the callback as void (*)(void) and calls it with
     * this signature. */
    SSL_CTX_callback_ctrl(o->ctx, SSL_CTRL_SET_TLSEXT_SERVERNAME_CB,
                          x->sni ? (void (*)(void))servername_cb : NULL);
    return 0;
}

static PyObject *set_servername_callback(ctx_obj *o, PyObject *fn)
{
    return set_sni(o, fn) < 0 ? NULL : Py_NewRef(Py_None);
}

/* ---- attributes ---- */

static PyObject *get_sni(ctx_obj *o, void *c)
{
    (void)c;
    struct ctx_extra *x = extra_of(o->ctx, false);
    return Py_NewRef(x != NULL && x->sni != NULL ? x->sni : Py_None);
}

static int put_sni(ctx_obj *o, PyObject *v, void *c)
{
    (void)c;
    return set_sni(o, v ? v : Py_None);
}

static PyObject *get_verify_mode(ctx_obj *o, void *c)
{
    (void)c;
    int m = SSL_CTX_get_verify_mode(o->ctx);
    return PyLong_FromLong(!(m & SSL_VERIFY_PEER)                    ? 0
                           : (m & SSL_VERIFY_FAIL_IF_NO_PEER_CERT) ? 2
                                                                    : 1);
}

static int put_verify_mode(ctx_obj *o, PyObject *v, void *c)
{
    (void)c;
    long m = v ? PyLong_AsLong(v) : -1;
    if (m < 0 || m > 2) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "invalid value for verify_mode");
        }
        return -1;
    }
    SSL_CTX_set_verify(o->ctx, m == 0 ? SSL_VERIFY_NONE
                               : m == 1 ? SSL_VERIFY_PEER
                                        : SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                       NULL);
    return 0;
}

/* ssl.TLSVersion: MINIMUM_SUPPORTED -2, MAXIMUM_SUPPORTED -1, else the
 * protocol number (TLSv1_2 = 0x0303), OpenSSL's own. */
static PyObject *version_obj(long v, long unset)
{
    return PyLong_FromLong(v == 0 ? unset : v);
}

static int version_set(ctx_obj *o, PyObject *v, bool max)
{
    long x = v ? PyLong_AsLong(v) : 0;
    if (PyErr_Occurred()) {
        return -1;
    }
    int p = x < 0 ? 0 : (int)x;
    if (x >= 0 && (x < TLS1_VERSION || x > TLS1_3_VERSION)) {
        PyErr_Format(PyExc_ValueError, "Unsupported TLS/SSL version 0x%lx", x);
        return -1;
    }
    if ((max ? SSL_CTX_set_max_proto_version(o->ctx, p)
             : SSL_CTX_set_min_proto_version(o->ctx, p)) != 1) {
        ssl_error(max ? "maximum_version" : "minimum_version");
        return -1;
    }
    return 0;
}

static PyObject *get_min(ctx_obj *o, void *c)
{
    (void)c;
    return version_obj(SSL_CTX_get_min_proto_version(o->ctx), -2);
}

static int put_min(ctx_obj *o, PyObject *v, void *c)
{
    (void)c;
    return version_set(o, v, false);
}

static PyObject *get_max(ctx_obj *o, void *c)
{
    (void)c;
    return version_obj(SSL_CTX_get_max_proto_version(o->ctx), -1);
}

static int put_max(ctx_obj *o, PyObject *v, void *c)
{
    (void)c;
    return version_set(o, v, true);
}

static PyObject *get_options(ctx_obj *o, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong((unsigned long long)SSL_CTX_get_options(o->ctx));
}

static int put_options(ctx_obj *o, PyObject *v, void *c)
{
    (void)c;
    unsigned long long want = v ? PyLong_AsUnsignedLongLongMask(v) : 0;
    if (PyErr_Occurred()) {
        return -1;
    }
    uint64_t cur = SSL_CTX_get_options(o->ctx);
    SSL_CTX_clear_options(o->ctx, cur & ~(uint64_t)want);
    SSL_CTX_set_options(o->ctx, (uint64_t)want & ~cur);
    return 0;
}

static PyObject *get_check_hostname(ctx_obj *o, void *c)
{
    (void)o;
    (void)c;
    Py_RETURN_FALSE;
}

static int put_check_hostname(ctx_obj *o, PyObject *v, void *c)
{
    (void)o;
    (void)c;
    if (v == NULL || PyObject_IsTrue(v)) {
        PyErr_SetString(PyExc_ValueError,
                        "check_hostname=True has no meaning for a server context");
        return -1;
    }
    return 0;
}

static PyGetSetDef ctx_getset[] = {
    { "verify_mode", (getter)get_verify_mode, (setter)put_verify_mode, NULL, NULL },
    { "minimum_version", (getter)get_min, (setter)put_min, NULL, NULL },
    { "maximum_version", (getter)get_max, (setter)put_max, NULL, NULL },
    { "options", (getter)get_options, (setter)put_options, NULL, NULL },
    { "sni_callback", (getter)get_sni, (setter)put_sni, NULL, NULL },
    { "check_hostname", (getter)get_check_hostname, (setter)put_check_hostname, NULL, NULL },
    { NULL, NULL, NULL, NULL, NULL },
};

static PyMethodDef ctx_methods[] = {
    { "load_cert_chain", (PyCFunction)(void (*)(void))load_cert_chain,
      METH_VARARGS | METH_KEYWORDS, NULL },
    { "load_verify_locations", (PyCFunction)(void (*)(void))load_verify_locations,
      METH_VARARGS | METH_KEYWORDS, NULL },
    { "load_default_certs", (PyCFunction)(void (*)(void))load_default_certs,
      METH_VARARGS | METH_KEYWORDS, NULL },
    { "set_ciphers", (PyCFunction)set_ciphers, METH_O, NULL },
    { "set_alpn_protocols", (PyCFunction)set_alpn_protocols, METH_O, NULL },
    { "set_servername_callback", (PyCFunction)set_servername_callback, METH_O, NULL },
    { NULL, NULL, 0, NULL },
};

static PyTypeObject ctx_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cgunicorn.SSLContext",
    .tp_basicsize = sizeof(ctx_obj),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)ctx_dealloc,
    .tp_getattro = ctx_getattro,
    .tp_setattro = ctx_setattro,
    .tp_getset = ctx_getset,
    .tp_methods = ctx_methods,
    .tp_doc = "The TLS context the ssl_context hook customizes (see docs/compatibility.md).",
};

/* ---- the factory and the hook call ---- */

/* gunicorn's default_ssl_context_factory offers ALPN when http_protocols
 * names h2: its protocols in their order of preference (h1 as
 * "http/1.1"), the first the client also offers being chosen. Returns 0,
 * or -1 with err (out of memory). */
static int default_alpn(SSL_CTX *ctx, const struct cg_conf *conf, struct cg_err *err)
{
    unsigned char wire[32];
    size_t n = 0;
    bool h2 = false;

    for (size_t i = 0; i < conf->http_protocols.n; i++) {
        const char *p = conf->http_protocols.v[i];
        const char *id = strcmp(p, "h2") == 0 ? "h2" : strcmp(p, "h1") == 0 ? "http/1.1" : NULL;
        size_t len = id != NULL ? strlen(id) : 0;
        h2 = h2 || strcmp(p, "h2") == 0;
        if (id != NULL && n + 1 + len <= sizeof(wire)) {
            wire[n++] = (unsigned char)len;
            memcpy(wire + n, id, len);
            n += len;
        }
    }
    if (!h2) {
        return 0;
    }
    struct ctx_extra *x = extra_of(ctx, true);
    unsigned char *copy = OPENSSL_memdup(wire, n);
    if (x == NULL || copy == NULL) {
        OPENSSL_free(copy);
        cg_err_set(err, "out of memory setting the ALPN protocols");
        return -1;
    }
    OPENSSL_free(x->alpn);
    x->alpn = copy;
    x->alpn_len = (unsigned int)n;
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    return 0;
}

static PyObject *factory_call(PyObject *self, PyObject *unused)
{
    const struct cg_conf *conf = PyCapsule_GetPointer(self, "cgunicorn.conf");
    struct cg_err err = { { 0 } };
    (void)unused;
    if (conf == NULL) {
        return NULL;
    }
    SSL_CTX *ctx = cg_transport_tls_ctx_new(conf, &err);
    if (ctx != NULL && default_alpn(ctx, conf, &err) < 0) {
        SSL_CTX_free(ctx);
        ctx = NULL;
    }
    if (ctx == NULL) {
        PyErr_SetString(PyExc_OSError, err.msg);
        return NULL;
    }
    return ctx_wrap(ctx);
}

static PyMethodDef factory_def = { "default_ssl_context_factory", factory_call, METH_NOARGS,
                                   NULL };

/* Calls hook(cfg, factory); returns the SSL_CTX of what it returned. */
static SSL_CTX *call_hook(const struct cg_conf *conf, PyObject *hook, PyObject *cfg,
                          struct cg_err *err)
{
    PyObject *own_cfg = NULL, *cap = NULL, *factory = NULL, *r = NULL;
    SSL_CTX *ctx = NULL;

    if (PyType_Ready(&ctx_type) < 0 || PyType_Ready(&sni_type) < 0) {
        goto pyfail;
    }
    if (cfg == NULL) {
        PyObject *mod = PyImport_ImportModule("cgunicorn.hooks");
        own_cfg = mod ? PyObject_CallMethod(mod, "Config", "(O)", conf->values) : NULL;
        Py_XDECREF(mod);
        if (own_cfg == NULL) {
            goto pyfail;
        }
        cfg = own_cfg;
    }
    cap = PyCapsule_New((void *)conf, "cgunicorn.conf", NULL);
    factory = cap ? PyCFunction_New(&factory_def, cap) : NULL;
    r = factory ? PyObject_CallFunctionObjArgs(hook, cfg, factory, NULL) : NULL;
    if (r == NULL) {
        goto pyfail;
    }
    if (!PyObject_TypeCheck(r, &ctx_type)) {
        cg_err_set(err, "ssl_context hook: it must return the context made by "
                        "default_ssl_context_factory() (got %s)", Py_TYPE(r)->tp_name);
        goto done;
    }
    ctx = ((ctx_obj *)r)->ctx;
    SSL_CTX_up_ref(ctx);
    goto done;
pyfail:
    cg_err_from_python(err);
    cg_err_prefix(err, "ssl_context hook");
done:
    Py_XDECREF(r);
    Py_XDECREF(factory);
    Py_XDECREF(cap);
    Py_XDECREF(own_cfg);
    return ctx;
}

SSL_CTX *cg_py_ssl_context_build(const struct cg_conf *conf, PyObject *cfg, struct cg_err *err)
{
    SSL_CTX *ctx;
    PyObject *hook = conf->values != NULL ? PyDict_GetItemString(conf->values, "ssl_context")
                                          : NULL; /* borrowed */

    if (hook != NULL && hook != Py_None) {
        ctx = call_hook(conf, hook, cfg, err);
    } else {
        ctx = cg_transport_tls_ctx_new(conf, err);
        if (ctx != NULL && default_alpn(ctx, conf, err) < 0) {
            SSL_CTX_free(ctx);
            ctx = NULL;
        }
    }
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
