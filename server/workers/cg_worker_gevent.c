/* The gevent worker: one greenlet per connection on gevent's hub, as
 * gunicorn's GeventWorker, with cgunicorn's parser, WSGI request code and
 * transport underneath.
 *
 * Boot: cg_worker_gevent_prepare() imports gevent and runs
 * monkey.patch_all() (cgunicorn.gevent_worker.patch) before the app is
 * loaded, so the app's sockets, sleeps, locks and thread-locals are
 * cooperative. Run: cg_worker_gevent_run() builds the WSGI state and hands
 * over to cgunicorn.gevent_worker.run(), which owns the hub side: one
 * acceptor greenlet per listener (a gevent Pool of worker_connections caps
 * the connections), the heartbeat, the signal pipe and the graceful stop.
 * It calls back into the functions below for the C parts: accept(i) takes
 * one connection (non-blocking), serve(conn) is a connection greenlet's
 * body.
 *
 * serve() runs the connection's requests with cg_py_wsgi_handle_sock() like
 * the other WSGI workers, with one gunicorn.socket (a gevent socket) for
 * the connection's life, as upstream (making one costs ~20 us of Python). The socket is non-blocking; when the transport would
 * block, its wait hook (transport_wait) waits with gevent's cooperative
 * wait on the fd instead of poll(), so the greenlet yields to the hub and
 * the others run. The request code releases the GIL around I/O; the hook
 * takes it back (PyGILState_Ensure) for the wait: all greenlets share the
 * process's one thread state.
 *
 * Keep-alive as gunicorn's gevent worker: each request head (the first
 * too) must arrive within `keepalive` seconds, else the connection closes
 * quietly; keepalive 0 serves one request per connection. Stopping (TERM,
 * max_requests, a parent change) closes the listeners' acceptors, serves
 * what the listen queues hold (TERM), answers further requests with
 * "Connection: close" and waits graceful_timeout for the greenlets in
 * flight; QUIT/INT wait CG_QUIT_GRACE_MS. */
#include <Python.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cg_clock.h"
#include "cg_log.h"
#include "cg_py.h"
#include "cg_py_wsgi.h"
#include "cg_py_wsgi_conn.h"
#include "cg_py_wsgi_int.h"
#include "cg_sig.h"
#include "cg_worker_gevent.h"

#define PY_MODULE "cgunicorn.gevent_worker"
#define CONN_CAPSULE "cgunicorn.gevent_worker.conn"

struct gevent_worker {
    struct cg_worker *w;
    struct cg_wsgi *wsgi;
    _Atomic bool draining; /* responses close their connection (c->stopping) */
    PyObject *wake;        /* wakes run()'s main greenlet; owned */
    uint64_t stop_ms;      /* when the stop began (0: serving) */
};

/* An accepted connection not yet served (a capsule's pointer). */
struct pending {
    int fd; /* owned until serve() takes it */
    size_t listener;
    struct sockaddr_storage peer;
    socklen_t peer_len;
};

/* cgunicorn.gevent_worker.wait(fd, events, timeout): the cooperative wait
 * (owned), and the worker's state. File-scope because the transport's hook
 * gets only the transport; one per process, never freed, since a greenlet
 * cut at the stop deadline may still resume (a worker_exit hook that
 * yields) and reach both. */
static PyObject *wait_fn;
static struct gevent_worker worker_state;

/* Waits cooperatively for `want` (POLLIN/POLLOUT) on fd up to timeout_ms
 * (<= 0: forever). Needs the GIL. Returns 0 when ready; -1 with errno
 * ETIMEDOUT, or ECANCELED when the wait raised (the greenlet was killed,
 * or the hub refused to block): the exception is cleared and the I/O
 * fails, which ends the request and the connection. */
static int coop_wait(int fd, short want, int timeout_ms)
{
    int events = ((want & POLLIN) ? 1 : 0) | ((want & POLLOUT) ? 2 : 0);
    PyObject *r = PyObject_CallFunction(wait_fn, "iid", fd, events ? events : 1,
                                        timeout_ms > 0 ? timeout_ms / 1000.0 : -1.0);
    int rc = 0;

    if (r == NULL) {
        if (cg_log_enabled(CG_LOG_DEBUG)) {
            cg_py_log_exception("gevent: a connection's wait ended");
        }
        PyErr_Clear();
        errno = ECANCELED;
        rc = -1;
    } else if (r != Py_True) {
        errno = ETIMEDOUT;
        rc = -1;
    }
    Py_XDECREF(r);
    return rc;
}

/* The transport's wait hook (struct cg_transport.wait): called with or
 * without the GIL by the request code. */
static int transport_wait(struct cg_transport *t, int timeout_ms)
{
    PyGILState_STATE st = PyGILState_Ensure();
    int rc = coop_wait(t->fd, t->want, timeout_ms);
    int saved = errno;

    PyGILState_Release(st);
    errno = saved;
    return rc;
}

static struct gevent_worker *worker_of(PyObject *self)
{
    struct gevent_worker *gw = PyCapsule_GetPointer(self, "cgunicorn.gevent_worker.core");
    if (gw == NULL) {
        PyErr_Clear();
        PyErr_SetString(PyExc_RuntimeError, "the gevent worker is gone");
    }
    return gw;
}

static void wake(struct gevent_worker *gw)
{
    PyObject *r = gw->wake ? PyObject_CallNoArgs(gw->wake) : NULL;
    if (gw->wake != NULL && r == NULL) {
        cg_py_log_exception("gevent: waking the worker loop");
    }
    Py_XDECREF(r);
}

/* The worker stops: responses close their connections from now on, and
 * idle kept-alive connections get CG_STOP_IDLE_MS more (read_head). */
static void begin_stop(struct gevent_worker *gw)
{
    if (gw->stop_ms == 0) {
        gw->stop_ms = cg_monotonic_ms();
        atomic_store(&gw->draining, true);
    }
}

/* Counts the request and says whether its connection may carry another,
 * as gunicorn's AsyncWorker.handle_request: max_requests stops the worker
 * after this request; a stopping worker and keepalive 0 close. */
static bool want_keepalive(struct gevent_worker *gw)
{
    struct cg_worker *w = gw->w;

    w->nr++;
    atomic_store_explicit(&w->slot->requests, w->nr, memory_order_relaxed);
    if (w->max_requests > 0 && w->nr >= w->max_requests && w->alive) {
        cg_log(CG_LOG_INFO, "Autorestarting worker after current request.");
        w->alive = false;
        begin_stop(gw);
        wake(gw);
    }
    return w->conf->keepalive > 0 && w->alive && !atomic_load(&gw->draining);
}

static void pending_free(PyObject *cap)
{
    struct pending *p = PyCapsule_GetPointer(cap, CONN_CAPSULE);
    if (p != NULL && p->fd >= 0) {
        close(p->fd);
    }
    free(p);
}

/* accept(i): one connection from listener i, or None when there is none
 * (another worker took it). */
static PyObject *core_accept(PyObject *self, PyObject *arg)
{
    struct gevent_worker *gw = worker_of(self);
    struct pending *p = NULL;
    size_t i = PyLong_AsSize_t(arg);

    if (gw == NULL || PyErr_Occurred()) {
        return NULL;
    }
    if (i >= gw->w->nlisteners) {
        PyErr_SetString(PyExc_IndexError, "no such listener");
        return NULL;
    }
    p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return PyErr_NoMemory();
    }
    p->listener = i;
    p->peer_len = sizeof(p->peer);
    p->fd = accept4(gw->w->listeners[i].fd, (struct sockaddr *)&p->peer, &p->peer_len,
                    SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (p->fd < 0) {
        int e = errno;
        free(p);
        if (e != EAGAIN && e != EWOULDBLOCK && e != EINTR && e != ECONNABORTED) {
            cg_log_errno(CG_LOG_ERROR, e, "accept on %s", gw->w->listeners[i].name);
        }
        Py_RETURN_NONE;
    }
    cg_worker_notify(gw->w);
    PyObject *cap = PyCapsule_New(p, CONN_CAPSULE, pending_free);
    if (cap == NULL) {
        close(p->fd);
        free(p);
    }
    return cap;
}

/* How long an idle kept-alive connection may still wait for its next
 * request once the worker stops (0: no stop yet). */
static uint64_t idle_cap_ms(void)
{
    const struct gevent_worker *gw = &worker_state;

    if (gw->stop_ms == 0) {
        return 0;
    }
    return gw->stop_ms + (gw->w->quit_after_request ? CG_QUIT_IDLE_MS : CG_STOP_IDLE_MS);
}

/* Reads the next request head within timeout_ms (<= 0: no limit), waiting
 * cooperatively. CLOSE on a timeout (quietly, as gunicorn's gevent.Timeout
 * around the parser), EOF, a read error or a bad request (answered). While
 * no byte of the head has come (idle), a stopping worker's deadline caps
 * the wait (idle_cap_ms; idle waits are cut in IDLE_WAIT_MS slices so a
 * stop is noticed); *t0 is reset at the head's first byte. */
#define IDLE_WAIT_MS 1000
static enum cg_wsgi_head read_head(struct cg_wsgi_conn *c, int timeout_ms, uint64_t *t0)
{
    uint64_t deadline = timeout_ms > 0 ? cg_monotonic_ms() + (uint64_t)timeout_ms : 0;
    bool idle = c->in.start == c->in.end;

    for (;;) {
        if (idle && !c->eof && cg_wsgi_conn_fill(c, false) < 0 &&
            c->read_errno != EAGAIN && c->read_errno != EWOULDBLOCK) {
            return CG_WSGI_HEAD_CLOSE;
        }
        if (idle && c->in.end > c->in.start) {
            idle = false;
            *t0 = cg_py_wsgi_now_us();
        }
        enum cg_wsgi_head h = idle && !c->eof ? CG_WSGI_HEAD_MORE
                                              : cg_wsgi_conn_read_head(c, false);
        if (h != CG_WSGI_HEAD_MORE) {
            return h;
        }
        uint64_t now = cg_monotonic_ms(), end = deadline, cap = idle ? idle_cap_ms() : 0;
        if (cap != 0 && (end == 0 || cap < end)) {
            end = cap;
        }
        if (end != 0 && now >= end) {
            return CG_WSGI_HEAD_CLOSE;
        }
        int left = end != 0 ? (int)(end - now) : -1;
        if (idle && (left < 0 || left > IDLE_WAIT_MS)) {
            left = IDLE_WAIT_MS; /* then look at the stop again */
        }
        if (coop_wait(c->t.fd, idle ? POLLIN : c->t.want, left) < 0 && errno != ETIMEDOUT) {
            return CG_WSGI_HEAD_CLOSE;
        }
    }
}

/* serve(conn): the connection greenlet's body. Never raises. */
static PyObject *core_serve(PyObject *self, PyObject *cap)
{
    struct gevent_worker *gw = worker_of(self);
    struct pending *p = gw ? PyCapsule_GetPointer(cap, CONN_CAPSULE) : NULL;
    struct cg_wsgi_conn *c = NULL;
    PyObject *sock = NULL; /* gunicorn.socket for the connection's life; owned */
    int keepalive_ms;

    if (p == NULL || p->fd < 0) {
        if (p != NULL) {
            PyErr_SetString(PyExc_ValueError, "connection already served");
        }
        return NULL;
    }
    c = malloc(sizeof(*c)); /* not on the greenlet's stack: switches copy it */
    if (c == NULL) {
        return PyErr_NoMemory();
    }
    cg_wsgi_conn_init(c, p->fd, &gw->w->listeners[p->listener], (struct sockaddr *)&p->peer,
                      p->peer_len, &gw->wsgi->limits, -1);
    p->fd = -1; /* the connection owns it now */
    c->t.wait = transport_wait;
    c->stopping = &gw->draining;
    keepalive_ms = gw->w->conf->keepalive > 0 ? gw->w->conf->keepalive * 1000 : -1;
    for (;;) {
        uint64_t t0 = cg_py_wsgi_now_us();
        enum cg_wsgi_head h = read_head(c, keepalive_ms, &t0);
        if (h != CG_WSGI_HEAD_READY) {
            if (cg_http_parser_error(&c->parser)->kind != CG_HTTP_ERR_NONE) {
                cg_py_wsgi_log_head_error(gw->wsgi, c, t0);
            }
            break;
        }
        bool keep = want_keepalive(gw);
        if (sock == NULL && (sock = cg_py_wsgi_socket_new(gw->wsgi, c)) == NULL) {
            PyErr_Clear(); /* cg_py_wsgi_handle_sock makes one and logs why */
        }
        if (!cg_py_wsgi_handle_sock(gw->wsgi, c, keep, sock) || !keep) {
            break;
        }
        cg_worker_notify(gw->w);
    }
    cg_py_wsgi_socket_release(sock);
    cg_wsgi_conn_linger(c);
    cg_wsgi_conn_deinit(c);
    free(c);
    Py_RETURN_NONE;
}

/* on_signal(): acts on the signal pipe and the parent check; returns True
 * once the worker must stop. */
static PyObject *core_on_signal(PyObject *self, PyObject *unused)
{
    struct gevent_worker *gw = worker_of(self);
    (void)unused;
    if (gw == NULL) {
        return NULL;
    }
    cg_worker_check_signals(gw->w);
    if (!gw->w->alive) {
        begin_stop(gw);
    }
    return PyBool_FromLong(!gw->w->alive);
}

static PyObject *core_notify(PyObject *self, PyObject *unused)
{
    struct gevent_worker *gw = worker_of(self);
    (void)unused;
    if (gw == NULL) {
        return NULL;
    }
    cg_worker_notify(gw->w);
    Py_RETURN_NONE;
}

/* state(): (terminating, quick): TERM serves the listen queues; QUIT/INT
 * (quit_after_request) stops within CG_QUIT_GRACE_MS. */
static PyObject *core_state(PyObject *self, PyObject *unused)
{
    struct gevent_worker *gw = worker_of(self);
    (void)unused;
    if (gw == NULL) {
        return NULL;
    }
    return Py_BuildValue("(OO)", gw->w->terminating ? Py_True : Py_False,
                         gw->w->quit_after_request ? Py_True : Py_False);
}

static PyObject *core_set_wake(PyObject *self, PyObject *fn)
{
    struct gevent_worker *gw = worker_of(self);
    if (gw == NULL) {
        return NULL;
    }
    Py_XSETREF(gw->wake, Py_NewRef(fn));
    Py_RETURN_NONE;
}

static PyMethodDef core_defs[] = {
    { "accept", core_accept, METH_O, NULL },
    { "serve", core_serve, METH_O, NULL },
    { "on_signal", core_on_signal, METH_NOARGS, NULL },
    { "notify", core_notify, METH_NOARGS, NULL },
    { "state", core_state, METH_NOARGS, NULL },
    { "set_wake", core_set_wake, METH_O, NULL },
};

/* The functions above as a dict, bound to a capsule of gw. New reference. */
static PyObject *core_new(struct gevent_worker *gw)
{
    PyObject *cap = PyCapsule_New(gw, "cgunicorn.gevent_worker.core", NULL);
    PyObject *d = cap ? PyDict_New() : NULL;

    for (size_t i = 0; d != NULL && i < sizeof(core_defs) / sizeof(core_defs[0]); i++) {
        PyObject *f = PyCFunction_New(&core_defs[i], cap);
        if (f == NULL || PyDict_SetItemString(d, core_defs[i].ml_name, f) < 0) {
            Py_CLEAR(d);
        }
        Py_XDECREF(f);
    }
    Py_XDECREF(cap);
    return d;
}

int cg_worker_gevent_prepare(struct cg_worker *w)
{
    PyObject *mod = PyImport_ImportModule(PY_MODULE);
    PyObject *r = mod ? PyObject_CallMethod(mod, "patch", NULL) : NULL;

    (void)w;
    Py_XDECREF(mod);
    if (r != NULL) {
        Py_DECREF(r);
        return 0;
    }
    if (PyErr_ExceptionMatches(PyExc_ImportError)) {
        PyObject *tb = cg_py_format_exception();
        cg_log(CG_LOG_ERROR, "the gevent worker cannot import gevent (install it with pip "
               "install gevent into the environment cgunicorn runs in):\n%s",
               tb && PyUnicode_AsUTF8(tb) ? PyUnicode_AsUTF8(tb) : "?");
        Py_XDECREF(tb);
    } else {
        cg_py_log_exception("the gevent worker: gevent's monkey.patch_all() failed");
    }
    PyErr_Clear();
    return CG_WORKER_BOOT_ERROR;
}

static int poll_tick_ms(const struct cg_conf *conf)
{
    /* Report in at least twice per timeout period, and at least every second. */
    int ms = conf->timeout > 0 ? conf->timeout * 500 : 1000;
    return ms > 1000 ? 1000 : (ms < 50 ? 50 : ms);
}

int cg_worker_gevent_run(struct cg_worker *w)
{
    const struct cg_conf *conf = w->conf;
    struct gevent_worker *gw = &worker_state;
    struct cg_err err = { { 0 } };
    PyObject *mod = NULL, *core = NULL, *fds = NULL, *r = NULL; /* owned */
    int code = CG_WORKER_BOOT_ERROR;

    gw->w = w;
    atomic_init(&gw->draining, false);
    gw->wsgi = cg_py_wsgi_new(w, &err);
    if (gw->wsgi == NULL) {
        cg_log(CG_LOG_ERROR, "worker %d cannot start: %s", (int)getpid(), err.msg);
        return CG_WORKER_BOOT_ERROR;
    }
    if (conf->request_timeout > 0) {
        cg_log(CG_LOG_WARNING, "request_timeout (%d s) is not applied by the gevent worker; "
               "the worker timeout still restarts a worker whose hub is blocked",
               conf->request_timeout);
    }
    mod = PyImport_ImportModule(PY_MODULE);
    wait_fn = mod ? PyObject_GetAttrString(mod, "wait") : NULL;
    core = wait_fn ? core_new(gw) : NULL;
    fds = core ? PyList_New((Py_ssize_t)w->nlisteners) : NULL;
    for (size_t i = 0; fds != NULL && i < w->nlisteners; i++) {
        PyObject *fd = PyLong_FromLong(w->listeners[i].fd);
        if (fd == NULL) {
            Py_CLEAR(fds);
            break;
        }
        PyList_SET_ITEM(fds, (Py_ssize_t)i, fd); /* steals */
    }
    w->quit_defers = true; /* QUIT/INT: the loop winds down (cg_worker.h) */
    if (fds != NULL) {
        r = PyObject_CallMethod(mod, "run", "OOiidddi", core, fds, cg_sig_fd(),
                                conf->worker_connections, poll_tick_ms(conf) / 1000.0,
                                (double)conf->graceful_timeout, CG_QUIT_GRACE_MS / 1000.0,
                                conf->workers > 1 ? 1 : 100);
    }
    w->quit_defers = false;
    if (r == NULL) {
        cg_py_log_exception("the gevent worker stopped on an error");
    } else {
        long left = PyLong_AsLong(r);
        if (left > 0 && !w->quit_after_request) {
            cg_log(CG_LOG_WARNING, "Worker graceful timeout (pid:%d)", (int)getpid());
        }
        PyErr_Clear();
        code = 0;
    }
    Py_XDECREF(r);
    Py_XDECREF(fds);
    Py_XDECREF(core);
    Py_XDECREF(mod);
    /* wait_fn, gw->wsgi and gw->wake stay: greenlets cut at the deadline
     * still hold connections that point into them; the process exits. */
    return code;
}
