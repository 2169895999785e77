/* The per-request hooks of the WSGI workers: pre_request(worker, req) and
 * post_request(worker, req, environ, resp), as gunicorn's sync and gthread
 * workers call them. Nothing is built unless the user set one of them. */
#include "cg_log.h"
#include "cg_py.h"
#include "cg_py_hooks.h"
#include "cg_py_wsgi_int.h"

int cg_py_hooks_pre_request(struct cg_worker *w, const struct cg_http_request *req,
                            PyObject *environ, PyObject **hreq)
{
    const struct cg_hook_table *fn = &w->hooks->fn;
    PyObject *hdrs = NULL, *r = NULL; /* owned */

    *hreq = NULL;
    if (fn->pre_request == NULL && fn->post_request == NULL) {
        if (cg_log_enabled(CG_LOG_DEBUG)) { /* gunicorn's default pre_request */
            size_t n = req->uri.len;
            for (size_t i = 0; i < req->uri.len; i++) {
                if (req->uri.ptr[i] == '?' || req->uri.ptr[i] == '#') {
                    n = i;
                    break;
                }
            }
            cg_log(CG_LOG_DEBUG, "%.*s %.*s", (int)req->method.len, req->method.ptr, (int)n,
                   req->uri.ptr);
        }
        return 0;
    }
    hdrs = cg_py_wsgi_request_headers(req);
    *hreq = hdrs ? PyObject_CallMethod(w->hooks->mod, "make_request", "OO", environ, hdrs) : NULL;
    Py_XDECREF(hdrs);
    if (*hreq == NULL) {
        return -1;
    }
    if (fn->pre_request == NULL) {
        PyObject *m = PyObject_GetAttrString(*hreq, "method");
        PyObject *p = m ? PyObject_GetAttrString(*hreq, "path") : NULL;
        if (p != NULL && cg_log_enabled(CG_LOG_DEBUG)) {
            cg_log(CG_LOG_DEBUG, "%s %s", PyUnicode_AsUTF8(m), PyUnicode_AsUTF8(p));
        }
        Py_XDECREF(m);
        Py_XDECREF(p);
        PyErr_Clear();
        return 0;
    }
    cg_py_hooks_worker_sync(w);
    r = PyObject_CallFunctionObjArgs(fn->pre_request, w->py_worker, *hreq, NULL);
    if (r == NULL) {
        return -1; /* the exception stays set: the caller answers 500 */
    }
    Py_DECREF(r);
    return 0;
}

/* Appends (NAME, value) to `list`. Returns 0, or -1 with an exception. */
static int add_pair(PyObject *list, const char *name, size_t nlen, const char *value, size_t vlen)
{
    PyObject *t = Py_BuildValue("(NN)", PyUnicode_DecodeLatin1(name, (Py_ssize_t)nlen, NULL),
                                PyUnicode_DecodeLatin1(value, (Py_ssize_t)vlen, NULL));
    int rc = t != NULL ? PyList_Append(list, t) : -1;
    Py_XDECREF(t);
    return rc;
}

/* req.trailers as gunicorn's: an HTTP/1 chunked body's trailer fields
 * (the parser's, once the body ended), or an HTTP/2 stream's with the
 * RFC 9110 6.5.1 fields left out, names upper-cased (HTTP2Request.trailers).
 * New reference, or NULL with an exception. */
static PyObject *trailers_list(const struct cg_wsgi_resp *resp)
{
    PyObject *list = PyList_New(0);
    size_t len = 0;
    char *lines = NULL;

    for (size_t i = 0; list != NULL && resp->req != NULL && i < resp->req->n_trailers; i++) {
        const struct cg_http_header *h = &resp->req->trailers[i];
        if (add_pair(list, h->name.ptr, h->name.len, h->value.ptr, h->value.len) < 0) {
            Py_CLEAR(list);
        }
    }
    if (list != NULL && resp->conn != NULL && resp->conn->trailers != NULL) {
        lines = resp->conn->trailers(resp->conn, &len);
    }
    for (char *p = lines, *end = lines + len; list != NULL && p != NULL && p < end;) {
        char *eol = memchr(p, '\n', (size_t)(end - p));
        char *colon = memchr(p, ':', (size_t)(end - p));
        if (eol == NULL || colon == NULL || colon > eol) {
            break;
        }
        for (char *q = p; q < colon; q++) {
            *q = (char)(*q >= 'a' && *q <= 'z' ? *q - 32 : *q);
        }
        size_t nlen = (size_t)(colon - p);
        char *v = colon + 2 <= eol ? colon + 2 : eol;
        size_t vlen = (size_t)(eol - v) - (eol > v && eol[-1] == '\r');
        if (!cg_http_forbidden_in_trailer(p, nlen) &&
            add_pair(list, p, nlen, v, vlen) < 0) {
            Py_CLEAR(list);
        }
        p = eol + 1;
    }
    free(lines);
    return list;
}

void cg_py_hooks_post_request(struct cg_worker *w, PyObject **hreq, PyObject *environ,
                              const struct cg_wsgi_resp *resp)
{
    PyObject *hdrs = NULL, *pyresp = NULL, *r = NULL; /* owned */
    PyObject *fn = w->hooks->fn.post_request;         /* borrowed */

    if (*hreq == NULL || fn == NULL) {
        Py_CLEAR(*hreq);
        return;
    }
    PyObject *et, *ev, *etb; /* a pending error, kept aside */
    PyErr_Fetch(&et, &ev, &etb);
    hdrs = resp->headers_sent ? cg_py_wsgi_resp_headers(resp) : PyList_New(0);
    pyresp = hdrs ? PyObject_CallMethod(w->hooks->mod, "Response", "OOK",
                                        resp->status ? resp->status : Py_None, hdrs,
                                        (unsigned long long)resp->r.sent)
                  : NULL;
    PyObject *trailers = pyresp != NULL ? trailers_list(resp) : NULL;
    if (trailers == NULL || PyObject_SetAttrString(*hreq, "trailers", trailers) < 0) {
        Py_CLEAR(pyresp); /* logged below as the hook's failure */
    }
    Py_XDECREF(trailers);
    if (pyresp != NULL) {
        cg_py_hooks_worker_sync(w);
        r = PyObject_CallFunctionObjArgs(fn, w->py_worker, *hreq,
                                         environ ? environ : Py_None, pyresp, NULL);
    }
    if (r == NULL) {
        cg_py_log_exception("Exception in post_request hook");
        PyErr_Clear();
    }
    PyErr_Restore(et, ev, etb);
    Py_XDECREF(r);
    Py_XDECREF(pyresp);
    Py_XDECREF(hdrs);
    Py_CLEAR(*hreq);
}
