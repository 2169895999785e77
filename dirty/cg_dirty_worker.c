/* The dirty worker process (see cg_dirty_worker.h). The main thread reads
 * frames from the arbiter link with the GIL released and hands REQUESTs to
 * a pool of dirty_threads threads; each takes the GIL for its call, runs it
 * through cgunicorn.dirty_worker (Python: app lookup, the call, generators,
 * asyncio, errors) and writes its reply frames itself under a write lock.
 * CANCEL marks a call so a streaming call stops at its next chunk. Every
 * REQUEST gets exactly one final frame (RESPONSE, END or ERROR): the
 * arbiter counts slots by them.
 *
 * Zero-copy payloads: a REQUEST's memfds (cg_dirty_fds.h) stay with its job
 * until the call's arguments are decoded; a reply to a REQUEST that said
 * "fds": true puts bytes values above dirty_zero_copy_threshold in memfds,
 * sent with the reply frame's first byte. */
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "cg_dirty_codec.h"
#include "cg_dirty_fds.h"
#include "cg_dirty_mem.h"
#include "cg_dirty_worker.h"
#include "cg_log.h"
#include "cg_py.h"
#include "cg_sig.h"
#include "cg_sig_table.h"
#include "cg_supervisor.h"

struct job {
    uint64_t id;
    unsigned char *frame; /* owned: the whole REQUEST frame */
    size_t len;
    int fds[CG_DIRTY_MAX_FDS]; /* owned: the memfds that came with it */
    size_t nfds;
    bool cancelled;
    bool running;
    struct job *next;
};

/* Process-wide state of this worker (one per process). */
static int link_fd = -1;
static size_t max_message;
static struct cg_dirty_zc zc_opts;     /* dirty_zero_copy_threshold, dirty_max_payload_size */
static struct cg_dirty_fdq link_fds;   /* received with frames not yet whole (main thread) */
static size_t zc_inflight;             /* memfd bytes sent since the arbiter last had read all
                                        * we sent (write_lock) */

/* Memfd bytes a worker may have sent that the arbiter has not read yet,
 * before the next memfd frame waits (a memfd frame is a few bytes in the
 * socket, so the socket's own buffer would let a fast generator create
 * memfds without bound while a slow caller reads). One frame larger than
 * this still goes, alone. */
#define ZC_WINDOW (4u * 1024u * 1024u)
static pthread_mutex_t write_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cond = PTHREAD_COND_INITIALIZER;
static struct job *q_head, *q_tail; /* waiting */
static struct job *active;          /* running (linked by next) */
static size_t n_active;
static bool stopping;
static PyObject *py_worker; /* the Python Worker object */

/* ------------------------------------------------------------------ */
/* Writing frames                                                      */

/* Bytes sent on the link that the arbiter has not read yet. */
static size_t link_unread(void)
{
    int queued = 0;

    if (ioctl(link_fd, SIOCOUTQ, &queued) < 0 || queued < 0) {
        return 0;
    }
    return (size_t)queued;
}

/* Waits (write lock held, GIL released) until a memfd frame of `nfds`
 * descriptors fits in ZC_WINDOW, then counts it. */
static void zc_window_wait(const int *fds, size_t nfds)
{
    size_t bytes = 0;
    struct stat st;

    for (size_t i = 0; i < nfds; i++) {
        if (fstat(fds[i], &st) == 0 && st.st_size > 0) {
            bytes += (size_t)st.st_size;
        }
    }
    while (zc_inflight > 0) {
        if (link_unread() == 0) {
            zc_inflight = 0; /* the arbiter has them all */
            break;
        }
        if (zc_inflight + bytes <= ZC_WINDOW) {
            break;
        }
        poll(NULL, 0, 1);
    }
    zc_inflight += bytes;
}

/* Writes iovecs fully (advancing them; IOV_MAX at a time) under the write
 * lock, so frames of concurrent calls never interleave; fds[0..nfds-1] go
 * with the first byte. 0, or -1 (errno). */
static int write_iov_fds(struct iovec *iov, int iovcnt, const int *fds, size_t nfds)
{
    int rc = 0;

    pthread_mutex_lock(&write_lock);
    if (nfds > 0) {
        zc_window_wait(fds, nfds);
    }
    while (iovcnt > 0) {
        ssize_t w = cg_dirty_fds_send(link_fd, iov, iovcnt < IOV_MAX ? iovcnt : IOV_MAX, fds,
                                      nfds, 0);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            rc = -1;
            break;
        }
        nfds = 0; /* sent with the first byte */
        while (iovcnt > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    pthread_mutex_unlock(&write_lock);
    return rc;
}

static int write_all(const unsigned char *p, size_t n)
{
    struct iovec iov = { .iov_base = (void *)p, .iov_len = n };
    return n == 0 ? 0 : write_iov_fds(&iov, 1, NULL, 0);
}

/* send(type, id, body, zc=False): encodes and writes one frame; raises
 * TypeError / ValueError when body cannot be encoded, OSError when the link
 * is gone. Bytes values go from their Python objects straight to the socket
 * (sendmsg with one iovec each), not through a frame-sized copy; with zc
 * (the caller accepts memfds) those above dirty_zero_copy_threshold go in
 * sealed memfds instead. */
static PyObject *py_send(PyObject *self, PyObject *args)
{
    int type, zc = 0;
    unsigned long long id;
    PyObject *body;
    struct cg_dirty_py_frame f;
    int rc, saved;
    (void)self;

    if (!PyArg_ParseTuple(args, "iKO!|p", &type, &id, &PyDict_Type, &body, &zc)) {
        return NULL;
    }
    if (cg_dirty_frame_encode_py_iov((enum cg_dirty_type)type, id, body, max_message,
                                     zc ? &zc_opts : NULL, &f, NULL) < 0) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = write_iov_fds(f.iov, f.iovcnt, f.fds, (size_t)f.nfds);
    saved = errno;
    Py_END_ALLOW_THREADS
    cg_dirty_py_frame_release(&f);
    if (rc < 0) {
        errno = saved;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

/* cancelled(id): True once the arbiter sent CANCEL for this call. */
static PyObject *py_cancelled(PyObject *self, PyObject *arg)
{
    unsigned long long id = PyLong_AsUnsignedLongLong(arg);
    bool yes = false;
    (void)self;

    if (id == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    pthread_mutex_lock(&q_lock);
    for (struct job *j = active; j != NULL; j = j->next) {
        if (j->id == id) {
            yes = j->cancelled;
            break;
        }
    }
    pthread_mutex_unlock(&q_lock);
    return PyBool_FromLong(yes);
}

static PyObject *py_log(PyObject *self, PyObject *args)
{
    int level;
    const char *msg;
    (void)self;

    if (!PyArg_ParseTuple(args, "is", &level, &msg)) {
        return NULL;
    }
    enum cg_log_level lv = level >= 50   ? CG_LOG_CRITICAL
                           : level >= 40 ? CG_LOG_ERROR
                           : level >= 30 ? CG_LOG_WARNING
                           : level >= 20 ? CG_LOG_INFO
                                         : CG_LOG_DEBUG;
    if (cg_log_enabled(lv)) {
        Py_BEGIN_ALLOW_THREADS
        cg_log(lv, "%s", msg);
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

static PyMethodDef send_def = { "send", py_send, METH_VARARGS, "Send one frame to the arbiter." };
static PyMethodDef cancelled_def = { "cancelled", py_cancelled, METH_O,
                                     "True once the call was cancelled." };
static PyMethodDef log_def = { "log", py_log, METH_VARARGS, "Write to the error log." };

PyObject *cg_dirty_py_log_func(void)
{
    return PyCFunction_New(&log_def, NULL);
}

PyObject *cg_dirty_py_helper(const char *name)
{
    PyObject *mod = PyImport_ImportModule("cgunicorn.dirty_worker");
    PyObject *attr = NULL;

    if (mod != NULL) {
        attr = PyObject_GetAttrString(mod, name);
        Py_DECREF(mod);
    }
    return attr;
}

/* ------------------------------------------------------------------ */
/* The thread pool                                                     */

static void job_remove_active(struct job *j)
{
    for (struct job **pp = &active; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == j) {
            *pp = j->next;
            n_active--;
            return;
        }
    }
}

static void run_job(struct job *j)
{
    struct cg_dirty_header h;
    struct cg_err err = { { 0 } };
    PyGILState_STATE g;
    PyObject *body = NULL, *res = NULL; /* owned */

    if (cg_dirty_header_decode(j->frame, SIZE_MAX, &h, &err) < 0) {
        return; /* checked when it was read */
    }
    g = PyGILState_Ensure();
    body = cg_dirty_body_decode_py_fds(j->frame + CG_DIRTY_HEADER_SIZE, h.json_len,
                                       j->frame + CG_DIRTY_HEADER_SIZE + h.json_len, h.blob_len,
                                       j->fds, j->nfds, zc_opts.max_payload);
    /* the arguments hold their own copies now */
    cg_dirty_fds_close(j->fds, j->nfds);
    j->nfds = 0;
    if (body == NULL) {
        PyObject *et = NULL, *ev = NULL, *etb = NULL; /* owned */
        PyErr_Fetch(&et, &ev, &etb);
        PyErr_NormalizeException(&et, &ev, &etb);
        res = PyObject_CallMethod(py_worker, "bad_request", "KO", (unsigned long long)j->id,
                                  ev ? ev : Py_None);
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(etb);
    } else {
        res = PyObject_CallMethod(py_worker, "handle", "KO", (unsigned long long)j->id, body);
    }
    if (res == NULL) {
        cg_py_log_exception("dirty worker: call handling failed");
    }
    Py_XDECREF(res);
    Py_XDECREF(body);
    PyGILState_Release(g);
}

static void *pool_thread(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&q_lock);
        while (q_head == NULL && !stopping) {
            pthread_cond_wait(&q_cond, &q_lock);
        }
        struct job *j = q_head;
        if (j == NULL) { /* stopping and nothing left */
            pthread_mutex_unlock(&q_lock);
            return NULL;
        }
        q_head = j->next;
        if (q_head == NULL) {
            q_tail = NULL;
        }
        j->next = active;
        active = j;
        n_active++;
        j->running = true;
        bool cancelled = j->cancelled;
        pthread_mutex_unlock(&q_lock);

        if (cancelled) {
            struct cg_dirty_frame f = { 0 };
            struct cg_err err = { { 0 } };
            if (cg_dirty_frame_build_error(&f, j->id, "DirtyError", "call cancelled", NULL,
                                           &err) == 0) {
                write_all(f.data, f.len);
            }
            cg_dirty_frame_deinit(&f);
        } else {
            run_job(j);
        }
        pthread_mutex_lock(&q_lock);
        job_remove_active(j);
        pthread_cond_broadcast(&q_cond);
        pthread_mutex_unlock(&q_lock);
        cg_dirty_fds_close(j->fds, j->nfds);
        free(j->frame);
        free(j);
    }
}

/* Queues a REQUEST frame for the pool; takes ownership of `frame` (malloc'd)
 * and of fds[0..nfds-1]. */
static void enqueue(uint64_t id, unsigned char *frame, size_t len, const int *fds, size_t nfds)
{
    struct job *j = calloc(1, sizeof(*j));

    if (j == NULL) {
        free(frame);
        cg_dirty_fds_close(fds, nfds);
        cg_log(CG_LOG_ERROR, "dirty worker: out of memory for a call");
        return;
    }
    j->frame = frame;
    j->len = len;
    j->id = id;
    memcpy(j->fds, fds, nfds * sizeof(int));
    j->nfds = nfds;
    pthread_mutex_lock(&q_lock);
    if (q_tail != NULL) {
        q_tail->next = j;
    } else {
        q_head = j;
    }
    q_tail = j;
    pthread_cond_signal(&q_cond);
    pthread_mutex_unlock(&q_lock);
}

static void cancel(uint64_t id)
{
    pthread_mutex_lock(&q_lock);
    for (struct job *j = q_head; j != NULL; j = j->next) {
        if (j->id == id) {
            j->cancelled = true;
        }
    }
    for (struct job *j = active; j != NULL; j = j->next) {
        if (j->id == id) {
            j->cancelled = true;
        }
    }
    pthread_mutex_unlock(&q_lock);
}

static bool idle(void)
{
    pthread_mutex_lock(&q_lock);
    bool yes = q_head == NULL && n_active == 0;
    pthread_mutex_unlock(&q_lock);
    return yes;
}

/* ------------------------------------------------------------------ */
/* The main thread                                                     */

/* Frames up to this size are read in batches into the small buffer and
 * copied out; larger ones are received straight into their own exact-size
 * buffer, which the job then owns (no copy, no buffer growth). */
#define SMALL_FRAME (64u * 1024u)
#define INBUF_SIZE (256u * 1024u)

struct inbuf {
    unsigned char *p;    /* INBUF_SIZE bytes */
    size_t len;
    unsigned char *big;  /* a large frame being received, or NULL */
    size_t big_have, big_size;
    struct cg_dirty_header big_h;
};

/* A whole frame: queue a REQUEST (taking `frame` and the descriptors that
 * came with it), apply a CANCEL. -1 when its descriptors are missing (the
 * link cannot be trusted any more). */
static int on_frame(const struct cg_dirty_header *h, unsigned char *frame, size_t size)
{
    int fds[CG_DIRTY_MAX_FDS];

    if (cg_dirty_fdq_take(&link_fds, fds, h->nfds) < 0) {
        cg_log(CG_LOG_ERROR, "dirty worker: a %s frame announced %u descriptors that did not "
               "come with it", cg_dirty_type_name(h->type), h->nfds);
        free(frame);
        return -1;
    }
    if (h->type == CG_DIRTY_REQUEST) {
        enqueue(h->id, frame, size, fds, h->nfds);
        return 0;
    }
    if (h->type == CG_DIRTY_CANCEL) {
        cancel(h->id);
    }
    cg_dirty_fds_close(fds, h->nfds);
    free(frame);
    return 0;
}

/* recvmsg() into p (descriptors into link_fds); 0 (maybe nothing yet), or
 * -1 when the link is closed/broken. */
static int recv_some(unsigned char *p, size_t room, size_t *got)
{
    struct iovec iov = { .iov_base = p, .iov_len = room };
    ssize_t n = cg_dirty_fds_recv(link_fd, &iov, 1, &link_fds);

    *got = 0;
    if (n == 0) {
        return -1;
    }
    if (n < 0) {
        return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
    }
    *got = (size_t)n;
    return 0;
}

/* Reads what the link has and queues whole frames. Returns -1 when the
 * link is closed or sent garbage (the arbiter is gone or broken). */
static int read_link(struct inbuf *b)
{
    struct cg_dirty_header h;
    struct cg_err err = { { 0 } };
    size_t n;

    if (b->p == NULL && (b->p = malloc(INBUF_SIZE)) == NULL) {
        return -1;
    }
    if (b->big != NULL) {
        if (recv_some(b->big + b->big_have, b->big_size - b->big_have, &n) < 0) {
            return -1;
        }
        b->big_have += n;
        if (b->big_have == b->big_size) {
            unsigned char *frame = b->big;
            b->big = NULL;
            return on_frame(&b->big_h, frame, b->big_size);
        }
        return 0;
    }
    if (recv_some(b->p + b->len, INBUF_SIZE - b->len, &n) < 0) {
        return -1;
    }
    b->len += n;
    size_t off = 0;
    while (b->len - off >= CG_DIRTY_HEADER_SIZE) {
        if (cg_dirty_header_decode(b->p + off, SIZE_MAX, &h, &err) < 0) {
            cg_log(CG_LOG_ERROR, "dirty worker: bad frame from the arbiter: %s", err.msg);
            return -1;
        }
        size_t size = cg_dirty_frame_size(&h);
        size_t have = b->len - off;
        if (size > SMALL_FRAME) {
            /* its own buffer: what is here now, the rest received into it */
            unsigned char *frame = malloc(size);
            if (frame == NULL) {
                cg_log(CG_LOG_ERROR, "dirty worker: out of memory for a %zu-byte frame", size);
                return -1;
            }
            size_t k = have < size ? have : size;
            memcpy(frame, b->p + off, k);
            off += k;
            if (k < size) {
                b->big = frame;
                b->big_have = k;
                b->big_size = size;
                b->big_h = h;
                break;
            }
            if (on_frame(&h, frame, size) < 0) {
                return -1;
            }
            continue;
        }
        if (have < size) {
            break;
        }
        unsigned char *frame = malloc(size);
        if (frame == NULL) {
            cg_log(CG_LOG_ERROR, "dirty worker: out of memory for a call");
            return -1;
        }
        memcpy(frame, b->p + off, size);
        if (on_frame(&h, frame, size) < 0) {
            return -1;
        }
        off += size;
    }
    memmove(b->p, b->p + off, b->len - off);
    b->len -= off;
    return 0;
}

static PyObject *make_worker(const struct cg_dirty_worker_spec *spec)
{
    PyObject *make = NULL, *paths = NULL, *fsend = NULL, *fcanc = NULL, *flog = NULL;
    PyObject *w = NULL;

    make = cg_dirty_py_helper("make_worker");
    paths = PyList_New(0);
    fsend = PyCFunction_New(&send_def, NULL);
    fcanc = PyCFunction_New(&cancelled_def, NULL);
    flog = cg_dirty_py_log_func();
    if (make == NULL || paths == NULL || fsend == NULL || fcanc == NULL || flog == NULL) {
        goto cleanup;
    }
    for (size_t i = 0; i < spec->napps; i++) {
        PyObject *s = PyUnicode_FromString(spec->app_paths[i]);
        if (s == NULL || PyList_Append(paths, s) < 0) {
            Py_XDECREF(s);
            goto cleanup;
        }
        Py_DECREF(s);
    }
    struct cg_conf *c = spec->conf;
    const struct cg_hook_table *fn = spec->hooks;
    w = PyObject_CallFunction(make, "OiiOOOOOi(OOO)", spec->pyarb ? spec->pyarb : Py_None,
                              (int)getpid(), spec->age, paths, c->values ? c->values : Py_None,
                              flog, fsend, fcanc, c->dirty_threads,
                              fn->dirty_post_fork ? fn->dirty_post_fork : Py_None,
                              fn->dirty_worker_init ? fn->dirty_worker_init : Py_None,
                              fn->dirty_worker_exit ? fn->dirty_worker_exit : Py_None);
cleanup:
    Py_XDECREF(make);
    Py_XDECREF(paths);
    Py_XDECREF(fsend);
    Py_XDECREF(fcanc);
    Py_XDECREF(flog);
    return w;
}

/* Calls worker.<method>() and returns its truth value, -1 on exception (logged). */
static int call_bool(const char *method)
{
    PyObject *r = PyObject_CallMethod(py_worker, method, NULL);
    int rc;

    if (r == NULL) {
        cg_py_log_exception("dirty worker");
        return -1;
    }
    rc = PyObject_IsTrue(r);
    Py_DECREF(r);
    return rc;
}

/* dirty_gpus: CUDA_VISIBLE_DEVICES=gpu in the C environment and in
 * os.environ, before the hooks run and any app module is imported (CUDA
 * reads it once, when it initialises). -1 with a Python exception. */
static int set_device(const char *gpu)
{
    PyObject *os = PyImport_ImportModule("os"); /* owned */
    PyObject *environ = os != NULL ? PyObject_GetAttrString(os, "environ") : NULL;
    PyObject *v = PyUnicode_FromString(gpu);
    int rc = -1;

    setenv("CUDA_VISIBLE_DEVICES", gpu, 1);
    if (environ != NULL && v != NULL) {
        rc = PyMapping_SetItemString(environ, "CUDA_VISIBLE_DEVICES", v);
    }
    Py_XDECREF(v);
    Py_XDECREF(environ);
    Py_XDECREF(os);
    return rc;
}

void cg_dirty_worker_main(const struct cg_dirty_worker_spec *spec)
{
    struct cg_err err = { { 0 } };
    struct inbuf in = { 0 };
    pthread_t *threads = NULL;
    int nthreads = spec->conf->dirty_threads > 0 ? spec->conf->dirty_threads : 1;
    pid_t arbiter = getppid();
    bool graceful = false, immediate = false;

    cg_dirty_mem_tune();
    link_fd = spec->fd;
    max_message = spec->max_message;
    zc_opts.threshold = spec->conf->dirty_zero_copy_threshold > 0
                            ? (size_t)spec->conf->dirty_zero_copy_threshold
                            : 0;
    zc_opts.max_payload = spec->conf->dirty_max_payload_size > 0
                              ? (size_t)spec->conf->dirty_max_payload_size
                              : CG_DIRTY_DEFAULT_MAX_PAYLOAD;
    cg_proc_set_title("gunicorn: dirty-worker [%s]", spec->conf->proc_name != NULL
                                                          ? spec->conf->proc_name
                                                          : spec->conf->default_proc_name);
    if (cg_sig_open_role(CG_ROLE_DIRTY_WORKER, &err) < 0) {
        cg_log(CG_LOG_ERROR, "dirty worker: %s", err.msg);
        _exit(1);
    }
    if (spec->gpu != NULL && set_device(spec->gpu) < 0) {
        cg_py_log_exception("dirty worker: cannot set CUDA_VISIBLE_DEVICES");
        cg_py_flush_stdio();
        _exit(CG_DIRTY_EXIT_BOOT_ERROR);
    }
    py_worker = make_worker(spec);
    if (py_worker == NULL) {
        cg_py_log_exception("dirty worker: cannot start the worker runtime");
        cg_py_flush_stdio();
        _exit(CG_DIRTY_EXIT_BOOT_ERROR);
    }
    /* dirty_post_fork -> import + __init__ -> init() -> dirty_worker_init */
    if (call_bool("boot") != 1) {
        cg_py_flush_stdio();
        _exit(CG_DIRTY_EXIT_BOOT_ERROR);
    }
    unsigned char hdr[CG_DIRTY_HEADER_SIZE];
    struct cg_dirty_header bh = { .type = CG_DIRTY_STATUS, .id = 0, .json_len = 2 };
    cg_dirty_header_encode(hdr, &bh);
    if (write_all(hdr, sizeof(hdr)) < 0 || write_all((const unsigned char *)"{}", 2) < 0) {
        immediate = true; /* the arbiter is gone */
    }

    PyThreadState *ts = PyEval_SaveThread();
    threads = calloc((size_t)nthreads, sizeof(*threads));
    for (int i = 0; threads != NULL && i < nthreads; i++) {
        if (pthread_create(&threads[i], NULL, pool_thread, NULL) != 0) {
            nthreads = i;
            break;
        }
    }
    while (!immediate && !(graceful && idle())) {
        struct pollfd pfd[2] = { { .fd = link_fd, .events = POLLIN },
                                 { .fd = cg_sig_fd(), .events = POLLIN } };
        int n = poll(pfd, 2, graceful ? 100 : 1000);
        if (n < 0 && errno != EINTR) {
            break;
        }
        if (pfd[1].revents & POLLIN) {
            cg_sig_drain();
            if (cg_sig_take(SIGUSR1)) {
                cg_log_reopen();
            }
            if (cg_sig_take(SIGQUIT)) {
                immediate = true;
            }
            if (cg_sig_take(SIGTERM) || cg_sig_take(SIGINT)) {
                graceful = true;
            }
        }
        if ((pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) && read_link(&in) < 0) {
            immediate = true; /* the arbiter closed the link */
        }
        if (getppid() != arbiter) {
            immediate = true;
        }
    }
    pthread_mutex_lock(&q_lock);
    stopping = true;
    pthread_cond_broadcast(&q_cond);
    pthread_mutex_unlock(&q_lock);
    if (!immediate) {
        for (int i = 0; i < nthreads; i++) {
            pthread_join(threads[i], NULL);
        }
    }
    PyEval_RestoreThread(ts);
    call_bool("shutdown"); /* app.close() each, dirty_worker_exit */
    cg_py_flush_stdio();
    _exit(0);
}

/* ------------------------------------------------------------------ */
/* Probe for `workers` class attributes                                */

int cg_dirty_worker_probe(const char *const *app_paths, size_t napps, int *limits,
                          struct cg_err *err)
{
    int fds[2];
    char buf[4096];
    size_t len = 0;
    pid_t pid;
    int st;

    for (size_t i = 0; i < napps; i++) {
        limits[i] = 0;
    }
    if (pipe2(fds, O_CLOEXEC) < 0) {
        cg_err_set(err, "pipe: %s", strerror(errno));
        return -1;
    }
    pid = cg_sup_fork(CG_ROLE_DIRTY_WORKER); /* waited for below */
    if (pid < 0) {
        cg_err_set(err, "fork: %s", strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        close(fds[0]);
        cg_proc_set_title("gunicorn: dirty-worker [probe]");
        PyObject *probe = cg_dirty_py_helper("probe_limits");
        PyObject *paths = PyList_New(0);
        PyObject *res = NULL;
        for (size_t i = 0; paths != NULL && i < napps; i++) {
            PyObject *s = PyUnicode_FromString(app_paths[i]);
            PyList_Append(paths, s);
            Py_XDECREF(s);
        }
        if (probe != NULL && paths != NULL) {
            res = PyObject_CallOneArg(probe, paths);
        }
        if (res != NULL && PyUnicode_Check(res)) {
            const char *s = PyUnicode_AsUTF8(res);
            if (s != NULL && write(fds[1], s, strlen(s)) < 0) {
                _exit(1);
            }
        }
        PyErr_Clear();
        _exit(0);
    }
    close(fds[1]);
    for (;;) {
        struct pollfd pfd = { .fd = fds[0], .events = POLLIN };
        Py_BEGIN_ALLOW_THREADS
        st = poll(&pfd, 1, 60000);
        Py_END_ALLOW_THREADS
        if (st <= 0) {
            if (st < 0 && errno == EINTR) {
                continue;
            }
            kill(pid, SIGKILL);
            break;
        }
        ssize_t n = read(fds[0], buf + len, sizeof(buf) - 1 - len);
        if (n <= 0) {
            break;
        }
        len += (size_t)n;
    }
    buf[len] = '\0';
    close(fds[0]);
    cg_sup_wait_one(pid, &st);
    char *p = buf;
    for (size_t i = 0; i < napps && *p != '\0'; i++) {
        char *end = NULL;
        long v = strtol(p, &end, 10);
        if (end == p) {
            break;
        }
        limits[i] = v > 0 && v < 1000000 ? (int)v : 0;
        p = end;
    }
    return 0;
}
