/* request_timeout for WSGI requests: see cg_py_deadline.h. The watchdog
 * checks the slots five times a second; it and the request threads change a
 * slot's state only with the GIL held, so "the request ended" and "the
 * deadline fired" cannot cross. */
#include "cg_py_deadline.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "cg_log.h"

struct slot {
    _Atomic uint64_t started_ms; /* 0: no request */
    unsigned long thread_id;
    bool fired;
};

static struct slot *slots;
static size_t nslots;
static int seconds;
static _Atomic size_t next_slot;
static _Thread_local struct slot *mine;
static PyObject *exc_type; /* owned */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

PyObject *cg_py_deadline_exc(void)
{
    return exc_type;
}

/* Creates cgunicorn.RequestTimeout (GIL held, no exception pending). */
static PyObject *make_exc(void)
{
    if (exc_type == NULL) {
        exc_type = PyErr_NewExceptionWithDoc(
            "cgunicorn.RequestTimeout",
            "Raised in a request that ran longer than request_timeout.", PyExc_BaseException,
            NULL);
        PyObject *mod = exc_type ? PyImport_ImportModule("cgunicorn") : NULL;
        if (mod == NULL || PyObject_SetAttrString(mod, "RequestTimeout", exc_type) < 0) {
            PyErr_Clear();
        }
        Py_XDECREF(mod);
    }
    return exc_type;
}

static void *watchdog(void *unused)
{
    (void)unused;
    for (;;) {
        usleep(200000);
        uint64_t now = now_ms(), limit = (uint64_t)seconds * 1000u;
        for (size_t i = 0; i < nslots; i++) {
            uint64_t t = atomic_load(&slots[i].started_ms);
            if (t == 0 || now - t < limit || slots[i].fired) {
                continue;
            }
            PyGILState_STATE g = PyGILState_Ensure();
            if (atomic_load(&slots[i].started_ms) == t && !slots[i].fired) {
                slots[i].fired = true;
                PyThreadState_SetAsyncExc(slots[i].thread_id, exc_type);
            }
            PyGILState_Release(g);
        }
    }
    return NULL;
}

int cg_py_deadline_open(int secs, size_t n, struct cg_err *err)
{
    pthread_t t;

    if (secs <= 0 || n == 0) {
        return 0;
    }
    if (make_exc() == NULL) {
        cg_err_from_python(err);
        return -1;
    }
    slots = calloc(n, sizeof(*slots));
    if (slots == NULL) {
        cg_err_set(err, "request_timeout: out of memory");
        return -1;
    }
    nslots = n;
    seconds = secs;
    if (pthread_create(&t, NULL, watchdog, NULL) != 0) {
        cg_err_set(err, "request_timeout: cannot start its watchdog thread");
        return -1;
    }
    pthread_detach(t);
    return 0;
}

void cg_py_deadline_bind(void)
{
    size_t i = atomic_fetch_add(&next_slot, 1);
    mine = slots != NULL && i < nslots ? &slots[i] : NULL;
}

void cg_py_deadline_start(void)
{
    if (mine != NULL) {
        mine->thread_id = PyThread_get_thread_ident();
        mine->fired = false;
        atomic_store(&mine->started_ms, now_ms());
    }
}

bool cg_py_deadline_end(void)
{
    if (mine == NULL) {
        return false;
    }
    atomic_store(&mine->started_ms, 0);
    if (mine->fired) {
        PyThreadState_SetAsyncExc(mine->thread_id, NULL); /* not raised yet: withdrawn */
        mine->fired = false;
        return true;
    }
    return false;
}

int cg_py_deadline_seconds(void)
{
    return seconds;
}
