/* The pause flusher (see cg_py_wsgi_hold.h): one thread per worker process,
 * started on the first held response. While some response is registered it
 * wakes every CG_WSGI_HOLD_US and pushes the socket of each response that
 * has waited that long for its app; with nothing registered it sleeps on a
 * condition variable. The list and the pushes are under one mutex, so a
 * response that unregistered (before its socket closes) is never pushed. */
#include <pthread.h>
#include <stddef.h>
#include <time.h>
#include <unistd.h>

#include "cg_py_wsgi_hold.h"
#include "cg_transport.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct cg_wsgi_hold *head; /* under mu */
static pid_t started_in;          /* the process whose flusher runs; under mu */

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void *flusher(void *arg)
{
    const struct timespec tick = { 0, CG_WSGI_HOLD_US * 1000L };
    (void)arg;

    pthread_mutex_lock(&mu);
    for (;;) {
        while (head == NULL) {
            pthread_cond_wait(&cv, &mu);
        }
        uint64_t now = now_us();
        for (struct cg_wsgi_hold *h = head; h != NULL; h = h->next) {
            uint64_t since = atomic_load_explicit(&h->since_us, memory_order_acquire);
            if (since != 0 && now - since >= CG_WSGI_HOLD_US &&
                atomic_compare_exchange_strong(&h->since_us, &since, 0)) {
                cg_transport_push_fd(h->fd);
            }
        }
        pthread_mutex_unlock(&mu);
        nanosleep(&tick, NULL);
        pthread_mutex_lock(&mu);
    }
    return NULL;
}

bool cg_wsgi_hold_begin(struct cg_wsgi_hold *h, int fd)
{
    bool ok = true;

    h->fd = fd;
    atomic_store(&h->since_us, 0);
    pthread_mutex_lock(&mu);
    if (started_in != getpid()) {
        /* First use here (a forked worker inherits no thread): start one. */
        pthread_t th;
        pthread_attr_t attr;
        head = NULL;
        ok = pthread_attr_init(&attr) == 0;
        if (ok) {
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            pthread_attr_setstacksize(&attr, 64 * 1024);
            ok = pthread_create(&th, &attr, flusher, NULL) == 0;
            pthread_attr_destroy(&attr);
        }
        if (ok) {
            started_in = getpid();
        }
    }
    if (ok) {
        h->prev = NULL;
        h->next = head;
        if (head != NULL) {
            head->prev = h;
        }
        head = h;
        h->on = true;
        pthread_cond_signal(&cv);
    }
    pthread_mutex_unlock(&mu);
    return ok;
}

void cg_wsgi_hold_end(struct cg_wsgi_hold *h)
{
    if (!h->on) {
        return;
    }
    pthread_mutex_lock(&mu);
    if (h->prev != NULL) {
        h->prev->next = h->next;
    } else {
        head = h->next;
    }
    if (h->next != NULL) {
        h->next->prev = h->prev;
    }
    h->prev = h->next = NULL;
    h->on = false;
    pthread_mutex_unlock(&mu);
}
