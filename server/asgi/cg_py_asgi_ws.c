/* ASGI WebSocket (RFC 6455) on an upgraded connection: the handshake
 * checks (version 13 else 426, a 16-byte base64 key else 400), the 101
 * answer on websocket.accept (403 on a close before accept or an app that
 * never accepts, 500 if it raised), frames parsed from the connection
 * buffer as they arrive (masking, fragmentation, ping/pong, close
 * handshake, 1002/1007/1009 failures, websocket_max_message_size), and the
 * receive()/send() callables. Messages wait in a short queue; reading stops
 * while it is full. Follows gunicorn 27's gunicorn/asgi/websocket.py.
 *
 * Loop thread, GIL held. */
#include <Python.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>

#include "cg_log.h"
#include "cg_py.h"
#include "cg_http_date.h"
#include "cg_ws_frame.h"
#include "cg_py_asgi_int.h"

#define QUEUE_HIGH 16
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

struct cg_asgi_ws {
    PyObject_HEAD
    struct cg_asgi_conn *conn;  /* owned */
    PyObject *task;             /* owned until done */
    PyObject *queue;            /* list of pending messages; owned */
    PyObject *receive_waiter;   /* owned */
    PyObject *send_waiter;      /* owned */
    PyObject *close_timer;      /* TimerHandle ending the close handshake wait; owned */
    PyObject *close_waiter;     /* future of the app's websocket.close send(); owned */
    char key[64];
    bool connect_sent, accepted, denied, close_sent, close_received, disconnect_queued;
    bool app_done;              /* the application call ended: incoming data is dropped */
    int frag_opcode;            /* 0: no fragmented message in progress */
    char *frag;                 /* owned */
    size_t frag_len, frag_cap;
    struct cg_utf8 frag_utf8;   /* the text message's UTF-8 so far */
};

static void ws_dealloc(struct cg_asgi_ws *ws)
{
    Py_XDECREF((PyObject *)ws->conn);
    Py_XDECREF(ws->task);
    Py_XDECREF(ws->queue);
    Py_XDECREF(ws->receive_waiter);
    Py_XDECREF(ws->send_waiter);
    Py_XDECREF(ws->close_timer);
    Py_XDECREF(ws->close_waiter);
    free(ws->frag);
    Py_TYPE(ws)->tp_free((PyObject *)ws);
}

PyTypeObject cg_asgi_ws_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cgunicorn.asgi.WebSocket",
    .tp_basicsize = sizeof(struct cg_asgi_ws),
    .tp_dealloc = (destructor)ws_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
};

void cg_py_asgi_ws_free(struct cg_asgi_ws *ws)
{
    Py_XDECREF((PyObject *)ws);
}

static const struct cg_http_span *header(const struct cg_http_request *req, const char *name)
{
    return cg_http_request_header(req, name);
}

static bool span_has(const struct cg_http_span *s, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; s != NULL && i + n <= s->len; i++) {
        if (strncasecmp(s->ptr + i, needle, n) == 0) {
            return true;
        }
    }
    return false;
}

bool cg_py_asgi_ws_is_upgrade(const struct cg_http_request *req)
{
    if (!(req->method.len == 3 && memcmp(req->method.ptr, "GET", 3) == 0)) {
        return false;
    }
    const struct cg_http_span *up = header(req, "UPGRADE");
    const struct cg_http_span *conn = header(req, "CONNECTION");
    return up != NULL && up->len == 9 && strncasecmp(up->ptr, "websocket", 9) == 0 &&
           span_has(conn, "upgrade");
}

/* ---- output ---- */

static void write_frame(struct cg_asgi_ws *ws, int opcode, const char *p, size_t n)
{
    unsigned char hdr[10];
    size_t hl = 2;

    hdr[0] = (unsigned char)(0x80 | opcode);
    if (n < 126) {
        hdr[1] = (unsigned char)n;
    } else if (n <= 0xffff) {
        hdr[1] = 126;
        hdr[2] = (unsigned char)(n >> 8);
        hdr[3] = (unsigned char)n;
        hl = 4;
    } else {
        hdr[1] = 127;
        for (int i = 0; i < 8; i++) {
            hdr[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
        }
        hl = 10;
    }
    struct iovec iov[2] = { { hdr, hl }, { (void *)p, n } };
    cg_py_asgi_conn_write(ws->conn, iov, n > 0 ? 2 : 1);
}

static void send_close(struct cg_asgi_ws *ws, int code, const char *reason, size_t rlen)
{
    char buf[125];
    if (ws->close_sent || ws->conn->state == CG_ASGI_CLOSED) {
        return;
    }
    if (rlen > sizeof(buf) - 2) {
        rlen = sizeof(buf) - 2;
    }
    buf[0] = (char)(code >> 8);
    buf[1] = (char)code;
    memcpy(buf + 2, reason, rlen);
    ws->close_sent = true;
    write_frame(ws, 0x8, buf, 2 + rlen);
}

static void deny(struct cg_asgi_ws *ws, int status, const char *reason)
{
    char buf[160];
    if (ws->denied || ws->conn->state == CG_ASGI_CLOSED) {
        return;
    }
    ws->denied = true;
    int n = snprintf(buf, sizeof(buf),
                     "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n",
                     status, reason, cg_http_date_now());
    struct iovec iov = { buf, (size_t)n };
    if (cg_py_asgi_conn_write(ws->conn, &iov, 1) == 0) {
        cg_py_asgi_conn_close_soon(ws->conn);
    }
}

/* ---- incoming ---- */

static int queue_msg(struct cg_asgi_ws *ws, PyObject *m)
{
    struct cg_asgi_srv *s = ws->conn->srv;
    if (m == NULL) {
        return -1;
    }
    if (ws->app_done) {
        Py_DECREF(m); /* nobody will receive it */
        return 0;
    }
    if (ws->receive_waiter != NULL && PyList_GET_SIZE(ws->queue) == 0) {
        PyObject *f = ws->receive_waiter;
        ws->receive_waiter = NULL;
        PyObject *r = PyObject_CallMethodOneArg(f, s->k.set_result, m);
        if (r == NULL) {
            PyErr_Clear(); /* the waiter was cancelled: keep the message */
            PyList_Append(ws->queue, m);
        }
        Py_XDECREF(r);
        Py_DECREF(f);
    } else {
        PyList_Append(ws->queue, m);
    }
    Py_DECREF(m);
    return 0;
}

static void queue_disconnect(struct cg_asgi_ws *ws, int code)
{
    struct cg_asgi_srv *s = ws->conn->srv;
    if (ws->disconnect_queued) {
        return;
    }
    ws->disconnect_queued = true;
    PyObject *m = Py_BuildValue("{O:O,O:i}", s->k.type, s->k.v_ws_disconnect, s->k.code, code);
    if (queue_msg(ws, m) < 0) {
        cg_py_log_exception("asgi: websocket disconnect message");
    }
}

/* Fails the connection with `code` (RFC 6455 7.1.7). */
static void fail(struct cg_asgi_ws *ws, int code, const char *why)
{
    cg_log_debug("websocket: failing the connection (%d): %s", code, why);
    send_close(ws, code, why, strlen(why));
    queue_disconnect(ws, code);
    cg_py_asgi_conn_close_soon(ws->conn);
}

static int deliver(struct cg_asgi_ws *ws, int opcode, const char *p, size_t n)
{
    struct cg_asgi_srv *s = ws->conn->srv;
    PyObject *v;

    if (opcode == 1) {
        v = PyUnicode_DecodeUTF8(p, (Py_ssize_t)n, "strict");
        if (v == NULL) {
            PyErr_Clear();
            fail(ws, 1007, "Invalid UTF-8");
            return -1;
        }
    } else {
        v = PyBytes_FromStringAndSize(p, (Py_ssize_t)n);
        if (v == NULL) {
            return -1;
        }
    }
    PyObject *m = Py_BuildValue("{O:O,O:N}", s->k.type, s->k.v_ws_receive,
                                opcode == 1 ? s->k.text : s->k.bytes, v);
    return queue_msg(ws, m);
}

/* ---- close handshake (RFC 6455 7.1.2) ----
 * After its close frame the server waits for the client's, as gunicorn's
 * ASGI worker does: up to CLOSE_WAIT_S seconds, during which the app's
 * websocket.close send() does not complete and the connection stays open;
 * then the TCP connection is closed. */
#define CLOSE_WAIT_S 5.0

/* The wait is over (client's close frame, connection gone, or timeout). */
static void close_wait_end(struct cg_asgi_ws *ws)
{
    struct cg_asgi_srv *s = ws->conn->srv;
    if (ws->close_timer != NULL) {
        PyObject *r = PyObject_CallMethodNoArgs(ws->close_timer, s->k.cancel);
        Py_XDECREF(r);
        Py_CLEAR(ws->close_timer);
    }
    if (ws->close_waiter != NULL) {
        PyObject *f = ws->close_waiter;
        ws->close_waiter = NULL;
        PyObject *done = PyObject_CallMethodNoArgs(f, s->k.done);
        if (done == Py_False) {
            PyObject *r = PyObject_CallMethodOneArg(f, s->k.set_result, Py_None);
            Py_XDECREF(r);
        }
        Py_XDECREF(done);
        Py_DECREF(f);
    }
    if (PyErr_Occurred()) {
        cg_py_log_exception("asgi: ending a websocket close handshake");
    }
}

static PyObject *ws_close_timeout(PyObject *self, PyObject *unused)
{
    struct cg_asgi_ws *ws = (struct cg_asgi_ws *)self;
    (void)unused;
    Py_INCREF(ws);
    Py_CLEAR(ws->close_timer); /* it fired */
    cg_log_debug("WebSocket close handshake timeout");
    close_wait_end(ws);
    cg_py_asgi_conn_close_soon(ws->conn);
    Py_DECREF(ws);
    Py_RETURN_NONE;
}

static PyMethodDef close_timeout_def = { "_close_timeout", ws_close_timeout, METH_NOARGS, NULL };

/* Starts waiting for the client's close frame. Returns true when waiting,
 * false when there is nothing to wait for (the caller closes). */
static bool close_wait_start(struct cg_asgi_ws *ws)
{
    struct cg_asgi_conn *c = ws->conn;
    if (!ws->close_sent || ws->close_received || c->state == CG_ASGI_CLOSED ||
        c->close_when_flushed || c->eof) {
        return false;
    }
    if (ws->close_timer == NULL) {
        PyObject *cb = PyCFunction_New(&close_timeout_def, (PyObject *)ws);
        ws->close_timer =
            cb ? PyObject_CallFunction(c->srv->call_later, "dO", CLOSE_WAIT_S, cb) : NULL;
        Py_XDECREF(cb);
        if (ws->close_timer == NULL) {
            cg_py_log_exception("asgi: arming the websocket close handshake timeout");
            return false;
        }
    }
    cg_py_asgi_conn_want_read(c, true);
    return true;
}

static void on_close_frame(struct cg_asgi_ws *ws, const unsigned char *p, size_t n)
{
    int code = 1005;
    if (n == 1) {
        fail(ws, 1002, "Invalid close frame");
        return;
    }
    if (n >= 2) {
        code = (p[0] << 8) | p[1];
        PyObject *r = PyUnicode_DecodeUTF8((const char *)p + 2, (Py_ssize_t)(n - 2), "strict");
        if (r == NULL) {
            PyErr_Clear();
            fail(ws, 1007, "Invalid UTF-8 in close reason");
            return;
        }
        Py_DECREF(r);
        if (code < 1000 || code == 1004 || code == 1005 || code == 1006 ||
            (code > 1014 && code < 3000) || code > 4999) {
            fail(ws, 1002, "Invalid close code");
            return;
        }
    }
    ws->close_received = true;
    /* Echo the code (RFC 6455 5.5.1), then close the TCP connection. */
    send_close(ws, code == 1005 ? 1000 : code, "", 0);
    queue_disconnect(ws, code);
    close_wait_end(ws);
    cg_py_asgi_conn_close_soon(ws->conn);
}

/* Parses every complete frame in the buffer (until the queue is full). */
static void parse_frames(struct cg_asgi_ws *ws)
{
    struct cg_asgi_conn *c = ws->conn;
    uint64_t max = c->srv->ws_max;

    while (c->state != CG_ASGI_CLOSED && !ws->close_received &&
           PyList_GET_SIZE(ws->queue) < QUEUE_HIGH) {
        unsigned char *p = (unsigned char *)c->in.p + c->in.start;
        struct cg_ws_frame f;
        enum cg_ws_parse r = cg_ws_frame_parse(p, c->in.end - c->in.start, max, ws->frag_len, &f);
        if (r == CG_WS_ERROR) {
            fail(ws, f.code, f.why);
            return;
        }
        if (r == CG_WS_MORE) {
            return; /* wait for the rest of the frame */
        }
        bool fin = f.fin;
        int opcode = f.opcode;
        uint64_t len = f.payload_len;
        unsigned char *data = p + f.header_len;
        cg_ws_unmask(data, len, f.mask);
        c->in.start += f.header_len + (size_t)len;
        switch (opcode) {
        case 0x0:
            if (ws->frag_opcode == 0) {
                fail(ws, 1002, "Unexpected continuation frame");
                return;
            }
            /* fall through */
        case 0x1:
        case 0x2:
            if (opcode != 0 && ws->frag_opcode != 0) {
                fail(ws, 1002, "Expected a continuation frame");
                return;
            }
            if (fin && opcode != 0) {
                if (deliver(ws, opcode, (char *)data, (size_t)len) < 0) {
                    return;
                }
                break;
            }
            if (opcode != 0) {
                ws->frag_opcode = opcode;
                ws->frag_len = 0;
                memset(&ws->frag_utf8, 0, sizeof(ws->frag_utf8));
            }
            /* a text message is checked fragment by fragment: invalid UTF-8
             * fails the connection at the fragment that holds it */
            if (ws->frag_opcode == 1 &&
                (!cg_utf8_feed(&ws->frag_utf8, data, (size_t)len) ||
                 (fin && !cg_utf8_complete(&ws->frag_utf8)))) {
                ws->frag_opcode = 0;
                ws->frag_len = 0;
                fail(ws, 1007, "Invalid UTF-8");
                return;
            }
            if (ws->frag_len + len > ws->frag_cap) {
                size_t cap = ws->frag_cap ? ws->frag_cap : 4096;
                while (cap < ws->frag_len + len) {
                    cap *= 2;
                }
                char *nb = realloc(ws->frag, cap);
                if (nb == NULL) {
                    fail(ws, 1011, "Out of memory");
                    return;
                }
                ws->frag = nb;
                ws->frag_cap = cap;
            }
            memcpy(ws->frag + ws->frag_len, data, (size_t)len);
            ws->frag_len += (size_t)len;
            if (fin) {
                int op = ws->frag_opcode;
                ws->frag_opcode = 0;
                if (deliver(ws, op, ws->frag, ws->frag_len) < 0) {
                    return;
                }
                ws->frag_len = 0;
            }
            break;
        case 0x8:
            on_close_frame(ws, data, (size_t)len);
            return;
        case 0x9:
            if (!ws->close_sent) {
                write_frame(ws, 0xA, (char *)data, (size_t)len);
            }
            break;
        default: /* pong */
            break;
        }
    }
}

void cg_py_asgi_ws_on_input(struct cg_asgi_ws *ws)
{
    struct cg_asgi_conn *c = ws->conn;

    Py_INCREF(ws);
    if (ws->accepted && c->state != CG_ASGI_CLOSED) {
        parse_frames(ws);
    }
    if (c->state == CG_ASGI_CLOSED || c->eof) {
        /* 1006: closed without a close frame (abnormal closure). */
        queue_disconnect(ws, ws->close_received ? 1000 : 1006);
        close_wait_end(ws);
        if (ws->send_waiter != NULL) {
            cg_py_asgi_ws_on_drain(ws);
        }
    }
    if (c->state != CG_ASGI_CLOSED && !c->close_when_flushed) {
        cg_py_asgi_conn_want_read(c, !c->eof && PyList_GET_SIZE(ws->queue) < QUEUE_HIGH);
    }
    Py_DECREF(ws);
}

void cg_py_asgi_ws_on_drain(struct cg_asgi_ws *ws)
{
    PyObject *f = ws->send_waiter;
    if (f == NULL) {
        return;
    }
    ws->send_waiter = NULL;
    PyObject *done = PyObject_CallMethodNoArgs(f, ws->conn->srv->k.done);
    if (done == Py_False) {
        PyObject *r = PyObject_CallMethodOneArg(f, ws->conn->srv->k.set_result, Py_None);
        Py_XDECREF(r);
    }
    PyErr_Clear();
    Py_XDECREF(done);
    Py_DECREF(f);
}

/* ---- receive ---- */

static PyObject *ws_receive(PyObject *self, PyObject *unused)
{
    struct cg_asgi_ws *ws = (struct cg_asgi_ws *)self;
    struct cg_asgi_srv *s = ws->conn->srv;
    (void)unused;

    if (!ws->connect_sent) {
        ws->connect_sent = true;
        PyObject *m = Py_BuildValue("{O:O}", s->k.type, s->k.v_ws_connect);
        PyObject *a = m ? cg_py_asgi_ready_new(m) : NULL;
        Py_XDECREF(m);
        return a;
    }
    if (ws->receive_waiter != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "receive() called while another receive() waits");
        return NULL;
    }
    if (PyList_GET_SIZE(ws->queue) > 0) {
        PyObject *m = Py_NewRef(PyList_GET_ITEM(ws->queue, 0));
        if (PySequence_DelItem(ws->queue, 0) < 0) {
            Py_DECREF(m);
            return NULL;
        }
        /* Room in the queue: parse what waits in the buffer. */
        if (ws->conn->state != CG_ASGI_CLOSED) {
            cg_py_asgi_ws_on_input(ws);
        }
        PyObject *a = cg_py_asgi_ready_new(m);
        Py_DECREF(m);
        return a;
    }
    ws->receive_waiter = PyObject_CallNoArgs(s->create_future);
    return ws->receive_waiter ? Py_NewRef(ws->receive_waiter) : NULL;
}

/* ---- send ---- */

static void b64(const unsigned char *in, size_t n, char *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n) {
            v |= (uint32_t)in[i + 1] << 8;
        }
        if (i + 2 < n) {
            v |= in[i + 2];
        }
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tbl[v & 63] : '=';
    }
    out[o] = '\0';
}

static int header_ok(const char *p, size_t n, bool name)
{
    if (name && n == 0) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (name ? !(ch > 0x20 && ch < 0x7f && !strchr("()<>@,;:\\\"/[]?={}", ch))
                 : ((ch < 0x20 && ch != '\t') || ch == 0x7f)) {
            return 0;
        }
    }
    return 1;
}

static int append_header(PyObject *parts, PyObject *name, PyObject *value, struct cg_asgi_srv *s)
{
    PyObject *nb = PyBytes_Check(name) ? Py_NewRef(name) : PyUnicode_AsLatin1String(name);
    PyObject *vb = PyBytes_Check(value) ? Py_NewRef(value) : PyUnicode_AsLatin1String(value);
    int rc = -1;
    if (nb == NULL || vb == NULL) {
        goto done;
    }
    if (!header_ok(PyBytes_AS_STRING(nb), (size_t)PyBytes_GET_SIZE(nb), true) ||
        !header_ok(PyBytes_AS_STRING(vb), (size_t)PyBytes_GET_SIZE(vb), false)) {
        PyObject *rep = PyObject_Repr(nb);
        if (rep != NULL) {
            PyErr_SetObject(s->wsgi->exc_header, rep);
            Py_DECREF(rep);
        }
        goto done;
    }
    PyObject *line = PyBytes_FromFormat("%s: %s\r\n", PyBytes_AS_STRING(nb), PyBytes_AS_STRING(vb));
    rc = line ? PyList_Append(parts, line) : -1;
    Py_XDECREF(line);
done:
    Py_XDECREF(nb);
    Py_XDECREF(vb);
    return rc;
}

static int send_accept(struct cg_asgi_ws *ws, PyObject *msg)
{
    struct cg_asgi_srv *s = ws->conn->srv;
    PyObject *parts = PyList_New(0), *digest = NULL, *joined = NULL, *sep = NULL;
    char accept[64], head[256];
    int rc = -1;

    if (parts == NULL) {
        return -1;
    }
    char src[128];
    snprintf(src, sizeof(src), "%s%s", ws->key, WS_GUID);
    digest = PyObject_CallFunction(s->sha1, "y", src);
    PyObject *d = digest ? PyObject_CallMethod(digest, "digest", NULL) : NULL;
    if (d == NULL) {
        goto done;
    }
    b64((const unsigned char *)PyBytes_AS_STRING(d), (size_t)PyBytes_GET_SIZE(d), accept);
    Py_DECREF(d);
    snprintf(head, sizeof(head),
             "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Accept: %s\r\n",
             accept);
    PyObject *h = PyBytes_FromString(head);
    if (h == NULL || PyList_Append(parts, h) < 0) {
        Py_XDECREF(h);
        goto done;
    }
    Py_DECREF(h);
    PyObject *sub = PyDict_GetItemWithError(msg, s->k.subprotocol); /* borrowed */
    if (sub != NULL && sub != Py_None) {
        PyObject *n = PyUnicode_FromString("Sec-WebSocket-Protocol");
        int r = n ? append_header(parts, n, sub, s) : -1;
        Py_XDECREF(n);
        if (r < 0) {
            goto done;
        }
    }
    PyObject *extra = PyDict_GetItemWithError(msg, s->k.headers); /* borrowed */
    if (PyErr_Occurred()) {
        goto done;
    }
    if (extra != NULL && extra != Py_None) {
        PyObject *seq = PySequence_Fast(extra, "headers must be a sequence of pairs");
        if (seq == NULL) {
            goto done;
        }
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
            PyObject *pair = PySequence_Fast_GET_ITEM(seq, i);
            PyObject *n = PySequence_GetItem(pair, 0), *v = n ? PySequence_GetItem(pair, 1) : NULL;
            int r = v ? append_header(parts, n, v, s) : -1;
            Py_XDECREF(n);
            Py_XDECREF(v);
            if (r < 0) {
                Py_DECREF(seq);
                goto done;
            }
        }
        Py_DECREF(seq);
    }
    PyObject *end = PyBytes_FromString("\r\n");
    if (end == NULL || PyList_Append(parts, end) < 0) {
        Py_XDECREF(end);
        goto done;
    }
    Py_DECREF(end);
    sep = PyBytes_FromString("");
    joined = sep ? _PyBytes_Join(sep, parts) : NULL;
    if (joined == NULL) {
        goto done;
    }
    struct iovec iov = { PyBytes_AS_STRING(joined), (size_t)PyBytes_GET_SIZE(joined) };
    cg_py_asgi_conn_write(ws->conn, &iov, 1);
    ws->accepted = true;
    /* Frames that arrived with the handshake can be parsed now. */
    cg_py_asgi_ws_on_input(ws);
    rc = 0;
done:
    Py_XDECREF(parts);
    Py_XDECREF(digest);
    Py_XDECREF(joined);
    Py_XDECREF(sep);
    return rc;
}

static PyObject *ws_send(PyObject *self, PyObject *msg)
{
    struct cg_asgi_ws *ws = (struct cg_asgi_ws *)self;
    struct cg_asgi_srv *s = ws->conn->srv;
    PyObject *type = PyDict_Check(msg) ? PyDict_GetItemWithError(msg, s->k.type) : NULL;

    if (type == NULL || !PyUnicode_Check(type)) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "ASGI message must be a dict with a str 'type'");
        }
        return NULL;
    }
    if (PyUnicode_Compare(type, s->k.m_ws_accept) == 0) {
        if (ws->accepted) {
            PyErr_SetString(PyExc_RuntimeError, "WebSocket already accepted");
            return NULL;
        }
        if (ws->denied || ws->conn->state == CG_ASGI_CLOSED) {
            PyErr_SetString(PyExc_ConnectionResetError, "WebSocket closed");
            return NULL;
        }
        if (send_accept(ws, msg) < 0) {
            return NULL;
        }
    } else if (PyUnicode_Compare(type, s->k.m_ws_send) == 0) {
        if (!ws->accepted) {
            PyErr_SetString(PyExc_RuntimeError, "WebSocket not accepted");
            return NULL;
        }
        if (ws->close_sent || ws->conn->state == CG_ASGI_CLOSED) {
            PyErr_SetString(PyExc_ConnectionResetError, "WebSocket closed");
            return NULL;
        }
        PyObject *text = PyDict_GetItemWithError(msg, s->k.text);   /* borrowed */
        PyObject *data = PyDict_GetItemWithError(msg, s->k.bytes);  /* borrowed */
        if (PyErr_Occurred()) {
            return NULL;
        }
        if (text != NULL && text != Py_None) {
            Py_ssize_t n;
            const char *u = PyUnicode_AsUTF8AndSize(text, &n);
            if (u == NULL) {
                return NULL;
            }
            write_frame(ws, 0x1, u, (size_t)n);
        } else if (data != NULL && data != Py_None) {
            Py_buffer view;
            if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
                return NULL;
            }
            write_frame(ws, 0x2, view.buf, (size_t)view.len);
            PyBuffer_Release(&view);
        }
        if (cg_py_asgi_conn_congested(ws->conn)) {
            Py_XDECREF(ws->send_waiter);
            ws->send_waiter = cg_py_asgi_conn_drain_future(ws->conn);
            return ws->send_waiter ? Py_NewRef(ws->send_waiter) : NULL;
        }
    } else if (PyUnicode_Compare(type, s->k.m_ws_close) == 0) {
        if (!ws->accepted) {
            deny(ws, 403, "Forbidden");
        } else {
            PyObject *code_o = PyDict_GetItemWithError(msg, s->k.code);   /* borrowed */
            PyObject *reason = PyDict_GetItemWithError(msg, s->k.reason); /* borrowed */
            long code = code_o && code_o != Py_None ? PyLong_AsLong(code_o) : 1000;
            const char *rs = "";
            Py_ssize_t rl = 0;
            if (PyErr_Occurred()) {
                return NULL;
            }
            if (reason != NULL && reason != Py_None &&
                (rs = PyUnicode_AsUTF8AndSize(reason, &rl)) == NULL) {
                return NULL;
            }
            send_close(ws, (int)code, rs, (size_t)rl);
            if (ws->close_waiter == NULL && close_wait_start(ws)) {
                /* send() completes when the client answers (or the wait ends). */
                ws->close_waiter = PyObject_CallNoArgs(s->create_future);
                return ws->close_waiter ? Py_NewRef(ws->close_waiter) : NULL;
            }
            if (ws->close_waiter != NULL) {
                return Py_NewRef(ws->close_waiter);
            }
            if (!ws->close_timer) {
                cg_py_asgi_conn_close_soon(ws->conn);
            }
        }
    } else {
        PyErr_Format(PyExc_RuntimeError, "Unexpected ASGI message type %R for a websocket scope",
                     type);
        return NULL;
    }
    return Py_NewRef(s->ready_none);
}

/* The application call ended. */
static PyObject *ws_task_done(PyObject *self, PyObject *task)
{
    struct cg_asgi_ws *ws = (struct cg_asgi_ws *)self;
    struct cg_asgi_srv *s = ws->conn->srv;
    PyObject *cancelled = PyObject_CallMethodNoArgs(task, s->k.cancelled);
    PyObject *exc = cancelled == Py_False ? PyObject_CallMethodNoArgs(task, s->k.exception) : NULL;
    bool failed = false;

    Py_INCREF(ws);
    if (exc != NULL && exc != Py_None) {
        if (PyErr_GivenExceptionMatches(exc, PyExc_ConnectionResetError)) {
            cg_log_debug("WebSocket closed while the application was sending");
        } else {
            failed = true;
            PyObject *tb = PyException_GetTraceback(exc);
            PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), Py_NewRef(exc), tb);
            cg_py_log_exception("Error in WebSocket ASGI application");
        }
    }
    PyErr_Clear();
    if (!ws->accepted && !ws->denied) {
        deny(ws, failed ? 500 : 403, failed ? "Internal Server Error" : "Forbidden");
    } else if (ws->accepted && !ws->close_sent && !ws->conn->eof) {
        /* a client that left without a close frame is not sent one */
        send_close(ws, 1011, "Application error", 17);
    }
    ws->app_done = true;
    if (PyList_SetSlice(ws->queue, 0, PyList_GET_SIZE(ws->queue), NULL) < 0) {
        PyErr_Clear();
    }
    if (!(ws->accepted && close_wait_start(ws))) {
        cg_py_asgi_conn_close_soon(ws->conn);
    }
    ws->conn->srv->w->nr++;
    Py_CLEAR(ws->task);
    Py_XDECREF(exc);
    Py_XDECREF(cancelled);
    Py_DECREF(ws);
    Py_RETURN_NONE;
}

static PyMethodDef receive_def = { "receive", ws_receive, METH_NOARGS, NULL };
static PyMethodDef send_def = { "send", ws_send, METH_O, NULL };
static PyMethodDef done_def = { "_done", ws_task_done, METH_O, NULL };

/* RFC 6455 4.2.1: the key is base64 of 16 bytes (24 characters, "=="). */
static bool valid_key(const struct cg_http_span *k)
{
    static const char alpha[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (k == NULL || k->len != 24 || memcmp(k->ptr + 22, "==", 2) != 0) {
        return false;
    }
    for (size_t i = 0; i < 22; i++) {
        if (k->ptr[i] == '\0' || strchr(alpha, k->ptr[i]) == NULL) {
            return false;
        }
    }
    return true;
}

int cg_py_asgi_ws_start(struct cg_asgi_conn *c, const struct cg_http_request *req)
{
    struct cg_asgi_srv *s = c->srv;
    const struct cg_http_span *ver = header(req, "SEC-WEBSOCKET-VERSION");
    const struct cg_http_span *key = header(req, "SEC-WEBSOCKET-KEY");
    PyObject *scope = NULL, *receive = NULL, *send = NULL, *coro = NULL, *cb = NULL, *res = NULL;
    struct cg_asgi_ws *ws = NULL;

    c->state = CG_ASGI_WS;
    if (req->version_major == 1 && req->version_minor == 0) { /* RFC 6455 4.1: HTTP/1.1 */
        cg_py_asgi_http_error(c, 400, "Bad Request",
                              "A WebSocket upgrade needs HTTP/1.1, not HTTP/1.0", NULL);
        return -1;
    }
    if (ver == NULL || ver->len != 2 || memcmp(ver->ptr, "13", 2) != 0) {
        cg_py_asgi_http_error(c, 426, "Upgrade Required", "Upgrade Required",
                              "Sec-WebSocket-Version: 13\r\n");
        return -1;
    }
    if (!valid_key(key)) {
        cg_py_asgi_http_error(c, 400, "Bad Request", "Bad Request", NULL);
        return -1;
    }
    ws = PyObject_New(struct cg_asgi_ws, &cg_asgi_ws_type);
    if (ws == NULL) {
        goto fail;
    }
    memset((char *)ws + sizeof(PyObject), 0, sizeof(*ws) - sizeof(PyObject));
    ws->conn = (struct cg_asgi_conn *)Py_NewRef(c);
    memcpy(ws->key, key->ptr, key->len);
    ws->queue = PyList_New(0);
    scope = ws->queue ? cg_py_asgi_scope(c, req, true) : NULL;
    receive = scope ? PyCFunction_New(&receive_def, (PyObject *)ws) : NULL;
    send = receive ? PyCFunction_New(&send_def, (PyObject *)ws) : NULL;
    coro = send ? PyObject_CallFunctionObjArgs(s->app, scope, receive, send, NULL) : NULL;
    ws->task = coro ? PyObject_CallOneArg(s->create_task, coro) : NULL;
    cb = ws->task ? PyCFunction_New(&done_def, (PyObject *)ws) : NULL;
    res = cb ? PyObject_CallMethodOneArg(ws->task, s->k.add_done_callback, cb) : NULL;
    if (res == NULL) {
        goto fail;
    }
    c->ws = ws;
    ws = NULL;
    /* Frames are parsed once accepted; until then the reader stays on to
     * notice a client that goes away. */
    cg_py_asgi_conn_want_read(c, true);
    Py_DECREF(scope);
    Py_DECREF(receive);
    Py_DECREF(send);
    Py_DECREF(coro);
    Py_DECREF(cb);
    Py_DECREF(res);
    return 0;
fail:
    cg_py_log_exception("Error in WebSocket ASGI application");
    cg_py_asgi_http_error(c, 500, "Internal Server Error", "Internal Server Error", NULL);
    if (ws != NULL) {
        Py_CLEAR(ws->task);
    }
    Py_XDECREF((PyObject *)ws);
    Py_XDECREF(scope);
    Py_XDECREF(receive);
    Py_XDECREF(send);
    Py_XDECREF(coro);
    Py_XDECREF(cb);
    Py_XDECREF(res);
    return -1;
}
