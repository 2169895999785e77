/* send() of an ASGI HTTP request: dispatches http.response.start,
 * http.response.body and http.response.informational, writes body bytes with
 * the head in front of the first (Content-Length or chunked framing, no body
 * for HEAD and no-body statuses), completes the response, and makes send()
 * wait while the connection's output is congested.
 *
 * Loop thread, GIL held. */
#include <Python.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/uio.h>

#include "cg_log.h"
#include "cg_py_asgi_int.h"

/* http.response.body. Returns 0 or -1 with an exception. */
static int response_body(struct cg_asgi_req *r, PyObject *msg)
{
    struct cg_asgi_srv *s = r->conn->srv;
    PyObject *body = PyDict_GetItemWithError(msg, s->k.body);         /* borrowed */
    PyObject *more_o = PyDict_GetItemWithError(msg, s->k.more_body); /* borrowed */
    Py_buffer view = { 0 };
    struct iovec iov[5];
    int n = 0;
    char prefix[24];
    int more = 0;

    if (PyErr_Occurred()) {
        return -1;
    }
    if (more_o != NULL && (more = PyObject_IsTrue(more_o)) < 0) {
        return -1;
    }
    if (body != NULL && body != Py_None && PyObject_GetBuffer(body, &view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    size_t size = view.buf ? (size_t)view.len : 0;
    if (r->omits_body && size > 0) {
        cg_log(CG_LOG_DEBUG, /* routine for HEAD: see cg_py_wsgi_resp.c */
               "ASGI app sent body bytes on a no-body response (status=%d); dropping per "
               "RFC 9110.",
               r->status);
        size = 0;
    }
    if (r->length >= 0 && size > (uint64_t)r->length - r->sent) {
        size = (size_t)((uint64_t)r->length - r->sent);
    }
    if (r->head != NULL) {
        iov[n++] = (struct iovec){ r->head, r->head_len };
    }
    if (size > 0) {
        if (r->chunked) {
            int pl = snprintf(prefix, sizeof(prefix), "%zx\r\n", size);
            iov[n++] = (struct iovec){ prefix, (size_t)pl };
            iov[n++] = (struct iovec){ view.buf, size };
            iov[n++] = (struct iovec){ (void *)(more ? "\r\n" : "\r\n0\r\n\r\n"), more ? 2u : 7u };
        } else {
            iov[n++] = (struct iovec){ view.buf, size };
        }
    } else if (!more && r->chunked) {
        iov[n++] = (struct iovec){ (void *)"0\r\n\r\n", 5 };
    }
    if (n > 0) {
        cg_py_asgi_conn_write(r->conn, iov, n);
    }
    free(r->head);
    r->head = NULL;
    r->sent += size;
    if (view.buf != NULL) {
        PyBuffer_Release(&view);
    }
    if (!more) {
        r->complete = true;
        bool keep = !r->close_announced && (r->length < 0 || r->sent >= (uint64_t)r->length) &&
                    !r->conn->eof;
        cg_py_asgi_http_finish(r, keep);
    }
    return 0;
}

PyObject *cg_py_asgi_http_send(PyObject *self, PyObject *msg)
{
    struct cg_asgi_req *r = (struct cg_asgi_req *)self;
    struct cg_asgi_srv *s = r->conn->srv;
    PyObject *type;

    if (!PyDict_Check(msg)) {
        PyErr_Format(PyExc_TypeError, "ASGI message must be a dict, not %.100s",
                     Py_TYPE(msg)->tp_name);
        return NULL;
    }
    type = PyDict_GetItemWithError(msg, s->k.type); /* borrowed */
    if (type == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_KeyError, "type");
        }
        return NULL;
    }
    Py_INCREF(type);
    int eq_start = PyUnicode_Check(type) ? PyUnicode_Compare(type, s->k.m_start) == 0 : 0;
    int eq_body = PyUnicode_Check(type) ? PyUnicode_Compare(type, s->k.m_body) == 0 : 0;
    int eq_info = PyUnicode_Check(type) ? PyUnicode_Compare(type, s->k.m_info) == 0 : 0;
    PyObject *ret = NULL;

    if (eq_start) {
        if (r->started) {
            PyErr_SetString(PyExc_RuntimeError, "Response already started");
        } else if (r->conn->state == CG_ASGI_CLOSED || r->detached) {
            ret = Py_NewRef(s->ready_none); /* client gone: ignored, as gunicorn */
        } else if (cg_py_asgi_http_head_format(r, msg) == 0) {
            ret = Py_NewRef(s->ready_none);
        }
    } else if (eq_body) {
        if (!r->started) {
            PyErr_SetString(PyExc_RuntimeError, "Response not started");
        } else if (r->complete) {
            PyErr_SetString(PyExc_RuntimeError, "Response already complete");
        } else if (r->conn->state == CG_ASGI_CLOSED || r->detached) {
            ret = Py_NewRef(s->ready_none);
        } else if (response_body(r, msg) == 0) {
            if (!r->complete && cg_py_asgi_conn_congested(r->conn)) {
                Py_XDECREF(r->send_waiter);
                r->send_waiter = cg_py_asgi_conn_drain_future(r->conn);
                ret = r->send_waiter ? Py_NewRef(r->send_waiter) : NULL;
            } else {
                ret = Py_NewRef(s->ready_none);
            }
        }
    } else if (eq_info) {
        if (r->started) {
            PyErr_SetString(PyExc_RuntimeError, "Informational response after response start");
        } else if (cg_py_asgi_http_send_informational(r, msg) == 0) {
            ret = Py_NewRef(s->ready_none);
        }
    } else {
        PyErr_Format(PyExc_RuntimeError, "Unexpected ASGI message type %R for an http scope",
                     type);
    }
    Py_DECREF(type);
    return ret;
}

void cg_py_asgi_http_on_drain(struct cg_asgi_req *r)
{
    if (r->send_waiter != NULL) {
        cg_py_asgi_http_resolve(r->conn->srv, &r->send_waiter, Py_None);
    }
}

