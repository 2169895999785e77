/* The connection transport: the one way bytes reach or leave a client
 * socket in every worker class (sync, gthread, asgi). A transport is a
 * socket plus an ops table, as nginx's ngx_connection_t carries recv, send
 * and send_chain; the plain-socket implementation is cg_transport_plain,
 * TLS the second (cg_transport_tls.c): when a worker serves TLS, its boot
 * sets cg_transport_wrap, and every connection cg_transport_init() sets up
 * from then on speaks TLS, whatever the worker class.
 *
 * The ops wait only as the socket's own mode (or sendfile(2)) makes them:
 * the sync worker's sockets block, the others' do not, and
 * CG_TRANSPORT_NOWAIT never waits. An event-driven caller that waits for
 * the socket after a short read passes at least 16 KiB of room (a TLS
 * record): less may leave decrypted bytes inside the transport, which the
 * socket's readiness does not announce (unread() counts them). A call that cannot progress returns
 * CG_TRANSPORT_AGAIN
 * and sets t->want to the poll events it waits for (POLLIN or POLLOUT; TLS
 * may want to write while reading), so blocking callers (the sync worker,
 * gthread pool threads) and event-driven ones (asgi on the asyncio loop,
 * gthread's keep-alive poller) see would-block the same way. The blocking
 * helpers below wait with poll() on t->want and retry.
 *
 * Any thread may use a transport it owns; nothing here touches Python. */
#ifndef CG_TRANSPORT_H
#define CG_TRANSPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/* ops flags: do not wait even when the socket is blocking (a first try
 * with the GIL held, a lingering close's discard). */
#define CG_TRANSPORT_NOWAIT 1
/* sendv flag: more bytes follow at once. The plain transport lets the
 * kernel hold them (MSG_MORE) until a send without the flag or
 * cg_transport_push_fd(); the other transports ignore it. */
#define CG_TRANSPORT_MORE 2

/* Returned by the ops when the socket cannot progress now (never -1, which
 * is an error with errno). */
#define CG_TRANSPORT_AGAIN (-2)

struct cg_transport;

struct cg_transport_ops {
    /* Receives up to n bytes. Returns the count, 0 at the peer's EOF,
     * CG_TRANSPORT_AGAIN, or -1 with errno. EINTR is retried. */
    ssize_t (*recv)(struct cg_transport *t, void *buf, size_t n, int flags);
    /* Sends what it can of iov[0..n). Returns the count written (maybe
     * short), CG_TRANSPORT_AGAIN, or -1 with errno. Never raises SIGPIPE. */
    ssize_t (*sendv)(struct cg_transport *t, const struct iovec *iov, int n, int flags);
    /* Sends up to n bytes of the file `fd` from *pos (advanced). Returns
     * the count, 0 when the file ends early, CG_TRANSPORT_AGAIN, or -1 with
     * errno. Copies through a buffer when the kernel cannot sendfile (a
     * pipe, a non-regular file: EINVAL, ESPIPE, ENOSYS). */
    ssize_t (*sendfile)(struct cg_transport *t, int fd, off_t *pos, size_t n);
    /* Ends our sending side (the peer sees EOF after what was sent). */
    int (*shutdown)(struct cg_transport *t);
    /* Bytes the peer sent that nobody read yet (kernel and transport), or
     * -1. */
    int (*unread)(struct cg_transport *t);
    /* Frees the implementation's state (t->impl); NULL when it has none.
     * Called once, by cg_transport_close, before the socket is closed. */
    void (*release)(struct cg_transport *t);
};

struct cg_transport {
    const struct cg_transport_ops *ops;
    int fd;     /* owned; -1 once closed */
    short want; /* after CG_TRANSPORT_AGAIN: POLLIN or POLLOUT */
    void *impl; /* the implementation's per-connection state (owned), or NULL */
    /* A cooperative wait, or NULL: when set, cg_transport_wait() calls it
     * instead of poll(), so the blocking helpers yield to the other
     * greenlets of a gevent worker instead of blocking the process. Same
     * contract as cg_transport_wait(). */
    int (*wait)(struct cg_transport *t, int timeout_ms);
};

extern const struct cg_transport_ops cg_transport_plain;

/* Set once per worker process at boot when it serves TLS (see
 * cg_transport_tls.h), NULL otherwise: turns a new plain transport into
 * another implementation's. It cannot fail the init: an implementation
 * that could not set up makes every op fail with errno (ENOMEM). */
extern void (*cg_transport_wrap)(struct cg_transport *t);

/* Takes ownership of fd (a connected stream socket, blocking or not). */
static inline void cg_transport_init(struct cg_transport *t, int fd)
{
    t->ops = &cg_transport_plain;
    t->fd = fd;
    t->want = 0;
    t->impl = NULL;
    t->wait = NULL;
    if (cg_transport_wrap != NULL) {
        cg_transport_wrap(t);
    }
}

/* Releases the implementation's state and closes the socket (idempotent). */
void cg_transport_close(struct cg_transport *t);

static inline ssize_t cg_transport_recv(struct cg_transport *t, void *buf, size_t n, int flags)
{
    return t->ops->recv(t, buf, n, flags);
}

static inline ssize_t cg_transport_sendv(struct cg_transport *t, const struct iovec *iov, int n,
                                         int flags)
{
    return t->ops->sendv(t, iov, n, flags);
}

static inline ssize_t cg_transport_sendfile(struct cg_transport *t, int fd, off_t *pos, size_t n)
{
    return t->ops->sendfile(t, fd, pos, n);
}

static inline int cg_transport_shutdown(struct cg_transport *t)
{
    return t->ops->shutdown(t);
}

static inline int cg_transport_unread(struct cg_transport *t)
{
    return t->ops->unread(t);
}

/* ---- blocking helpers (sync worker, gthread pool threads) ---- */

/* Waits up to timeout_ms (<= 0: forever) for what the last AGAIN wanted
 * (with t->wait when set). Returns 0 when ready, -1 with errno (ETIMEDOUT)
 * otherwise. */
int cg_transport_wait(struct cg_transport *t, int timeout_ms);

/* Receives, waiting for the peer when `wait` (up to timeout_ms per wait).
 * Returns like the recv op; CG_TRANSPORT_AGAIN only when !wait. */
ssize_t cg_transport_recv_wait(struct cg_transport *t, void *buf, size_t n, bool wait,
                               int timeout_ms);

/* Sends all of iov[0..n) (modified: advanced over what was sent), waiting
 * for a full socket up to timeout_ms per wait. Returns 0, or -1 with errno. */
int cg_transport_sendv_all(struct cg_transport *t, struct iovec *iov, int n, int timeout_ms);

/* cg_transport_sendv_all() passing `flags` (CG_TRANSPORT_MORE) to every send. */
int cg_transport_sendv_all_flags(struct cg_transport *t, struct iovec *iov, int n,
                                 int timeout_ms, int flags);

/* Whether t is the plain transport on a TCP socket (the one where
 * CG_TRANSPORT_MORE holds bytes and a push sends them). */
bool cg_transport_can_hold(const struct cg_transport *t, int family);

/* Sends what CG_TRANSPORT_MORE sends left in the kernel for the TCP socket
 * fd, now (re-setting TCP_NODELAY, which the listeners set, pushes the
 * pending frames). Any thread; no effect on a socket with nothing held.
 * Returns 0 or -1 with errno. */
int cg_transport_push_fd(int fd);

/* Sends len bytes of the file fd from *pos (advanced), waiting as
 * cg_transport_sendv_all does. Stops early, returning 0, when the file is
 * shorter. Returns 0 or -1 with errno. */
int cg_transport_sendfile_all(struct cg_transport *t, int fd, off_t *pos, uint64_t len,
                              int timeout_ms);

/* Advances iov[0..*n) over `done` bytes; returns the first unsent element. */
struct iovec *cg_transport_iov_advance(struct iovec *iov, int *n, size_t done);

#endif
