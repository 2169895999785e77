/* Held bytes of a streamed response: while a WSGI app yields chunks back to
 * back, they are sent with CG_TRANSPORT_MORE, so the kernel joins them into
 * full segments instead of one packet per chunk; when the app pauses (the
 * next chunk is not there within CG_WSGI_HOLD_US) a flusher thread pushes
 * what the kernel holds, so a chunk never waits for the app's next one. No
 * Python here. */
#ifndef CG_PY_WSGI_HOLD_H
#define CG_PY_WSGI_HOLD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* How long the app may take for its next chunk before what it yielded is
 * pushed; the flusher checks at this interval, so a chunk is on the wire
 * within about twice this after the app paused. */
#define CG_WSGI_HOLD_US 200

/* One response's registration (lives in its struct cg_wsgi_resp). */
struct cg_wsgi_hold {
    struct cg_wsgi_hold *prev, *next; /* the flusher's list, under its lock */
    int fd;                           /* the connection's socket */
    _Atomic uint64_t since_us;        /* waiting for the app since; 0: not */
    bool on;                          /* registered */
};

/* Registers h for fd (first held send of a response). Starts the flusher
 * thread on first use in this process. Returns false, h unregistered, when
 * the thread cannot start: the caller then sends without holding. Any
 * thread. */
bool cg_wsgi_hold_begin(struct cg_wsgi_hold *h, int fd);

/* The caller is about to wait for the app's next chunk with bytes held. */
static inline void cg_wsgi_hold_wait(struct cg_wsgi_hold *h, uint64_t now_us)
{
    atomic_store_explicit(&h->since_us, now_us ? now_us : 1, memory_order_release);
}

/* The app answered (or the response goes on otherwise): no push needed. */
static inline void cg_wsgi_hold_back(struct cg_wsgi_hold *h)
{
    atomic_store_explicit(&h->since_us, 0, memory_order_relaxed);
}

/* Unregisters h (idempotent); once it returns the flusher no longer
 * touches h or its fd. */
void cg_wsgi_hold_end(struct cg_wsgi_hold *h);

#endif
