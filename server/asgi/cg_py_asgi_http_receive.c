/* receive() of an ASGI HTTP request: the request body streamed from the
 * connection's buffer as http.request messages (up to 1 MiB per message,
 * more_body until the end), "100 Continue" on the first receive() of an
 * Expect: 100-continue request, http.disconnect once the client left or the
 * response ended, and a malformed body answered 400 as gunicorn does.
 *
 * Loop thread, GIL held. */
#include <Python.h>
#include <stdbool.h>
#include <string.h>
#include <sys/uio.h>

#include "cg_log.h"
#include "cg_py.h"
#include "cg_py_asgi_int.h"

#define MAX_SPANS 32 /* body pieces gathered into one http.request message */

/* The request body is malformed (chunk framing, trailers). Before the
 * response started, gunicorn's ASGI worker answers the parser's error status
 * (400) and closes, as for a bad head; after, it can only close. The app
 * then sees http.disconnect and its sends are ignored. */
static void body_error(struct cg_asgi_req *r)
{
    struct cg_asgi_conn *c = r->conn;
    const struct cg_http_error *e = cg_http_parser_error(&c->parser);
    int status = cg_http_error_status(e->kind);

    cg_log_debug("asgi: bad request body: %s", e->detail);
    r->disconnected = true;
    if (r->started || status == 0 || c->state == CG_ASGI_CLOSED) {
        cg_py_asgi_conn_close(c);
        return;
    }
    r->started = r->complete = true;
    r->status = status;
    Py_CLEAR(r->log_info); /* error answers get no access line, as for a bad head */
    cg_py_asgi_http_error(c, status, cg_http_error_reason(e->kind), e->detail, NULL);
    cg_py_asgi_http_finish(r, false);
}

/* Takes the request body bytes available now. Returns a new message, or
 * NULL without an exception when the caller must wait, or NULL with one. */
static PyObject *take_body(struct cg_asgi_req *r)
{
    struct cg_asgi_conn *c = r->conn;
    struct cg_asgi_srv *s = c->srv;
    struct iovec spans[MAX_SPANS];
    int nspans = 0;
    size_t total = 0;
    bool more = true;

    if (c->state == CG_ASGI_CLOSED || r->disconnected || r->complete) {
        return cg_py_asgi_http_disconnect_msg(s);
    }
    if (r->body_eof_sent) {
        return NULL; /* wait for the disconnect */
    }
    while (nspans < MAX_SPANS && total < 1024 * 1024) {
        size_t dlen = 0;
        const char *data = NULL;
        enum cg_http_status st = cg_conn_body_next(&c->parser, &c->in, &data, &dlen);
        if (st == CG_HTTP_BODY_DATA) {
            spans[nspans++] = (struct iovec){ (void *)data, dlen };
            total += dlen;
            continue;
        }
        if (st == CG_HTTP_BODY_DONE) {
            more = false;
            break;
        }
        if (st == CG_HTTP_ERROR) {
            body_error(r);
            return cg_py_asgi_http_disconnect_msg(s);
        }
        /* NEED_MORE */
        if (c->eof && nspans == 0) {
            st = cg_http_parser_eof(&c->parser);
            if (st != CG_HTTP_BODY_DONE) {
                /* The client left before the end of the body: the
                 * connection is lost (upstream answers nothing either). */
                r->disconnected = true;
                cg_py_asgi_conn_close(c);
                return cg_py_asgi_http_disconnect_msg(s);
            }
            more = false;
        }
        break;
    }
    if (nspans == 0 && more) {
        return NULL;
    }
    PyObject *body = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (body == NULL) {
        return NULL;
    }
    char *d = PyBytes_AS_STRING(body);
    for (int i = 0; i < nspans; i++) {
        memcpy(d, spans[i].iov_base, spans[i].iov_len);
        d += spans[i].iov_len;
    }
    if (!more) {
        r->body_done = true;
        r->body_eof_sent = true;
    }
    PyObject *m = PyDict_New();
    if (m == NULL || PyDict_SetItem(m, s->k.type, s->k.v_http_request) < 0 ||
        PyDict_SetItem(m, s->k.body, body) < 0 ||
        PyDict_SetItem(m, s->k.more_body, more ? Py_True : Py_False) < 0) {
        Py_CLEAR(m);
    }
    Py_DECREF(body);
    /* Room in the buffer again: read on (back-pressure released). */
    if (c->state == CG_ASGI_BUSY && !c->eof && cg_py_asgi_conn_buffered(c) < CG_ASGI_READ_HIGH) {
        cg_py_asgi_conn_want_read(c, true);
    }
    return m;
}

static void send_continue(struct cg_asgi_req *r)
{
    if (r->expect_continue && !r->continue_sent && !r->started) {
        static const char line[] = "HTTP/1.1 100 Continue\r\n\r\n";
        struct iovec iov = { (void *)line, sizeof(line) - 1 };
        r->continue_sent = true;
        cg_py_asgi_conn_write(r->conn, &iov, 1);
    }
}

PyObject *cg_py_asgi_http_receive(PyObject *self, PyObject *unused)
{
    struct cg_asgi_req *r = (struct cg_asgi_req *)self;
    struct cg_asgi_srv *s = r->conn->srv;
    (void)unused;

    if (r->receive_waiter != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "receive() called while another receive() waits");
        return NULL;
    }
    if (!r->body_eof_sent && !r->complete) {
        send_continue(r);
    }
    PyObject *m = take_body(r);
    if (m != NULL) {
        PyObject *a = cg_py_asgi_ready_new(m);
        Py_DECREF(m);
        return a;
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    r->receive_waiter = PyObject_CallNoArgs(s->create_future);
    if (r->receive_waiter == NULL) {
        return NULL;
    }
    if (r->conn->state == CG_ASGI_BUSY && !r->conn->eof) {
        cg_py_asgi_conn_want_read(r->conn, true);
    }
    return Py_NewRef(r->receive_waiter);
}

void cg_py_asgi_http_on_input(struct cg_asgi_req *r)
{
    if (r->receive_waiter == NULL) {
        return;
    }
    Py_INCREF(r); /* take_body may close the connection, which drops its reference */
    /* After a closed connection, or EOF once the whole body was received,
     * the app learns of the disconnect. With the body incomplete, take_body
     * hands over what is buffered first and then treats EOF as lost. */
    if (r->conn->state == CG_ASGI_CLOSED || (r->conn->eof && r->body_eof_sent)) {
        r->disconnected = true;
    }
    PyObject *m = take_body(r);
    if (m != NULL) {
        cg_py_asgi_http_resolve(r->conn->srv, &r->receive_waiter, m);
        Py_DECREF(m);
    } else if (PyErr_Occurred()) {
        cg_py_log_exception("asgi: reading a request body");
    }
    Py_DECREF(r);
}
