/* The dirty arbiter's side of zero-copy payloads: memfds that come with
 * frames are forwarded with them, never mapped or read. Each connection
 * (client or worker link) has a struct cg_dirty_relay_fdio: the FIFO of
 * descriptors received and not yet claimed by a whole frame (filled by
 * cg_dirty_relay_fill()), and the marks of its output: "these descriptors
 * go with the byte that is `at` bytes ahead in the output buffer" (the
 * first byte of the frame that carries them).
 *
 * While a connection has marks, its output is written here (up to the next
 * mark with writev, the mark's byte with sendmsg + SCM_RIGHTS) and the
 * bufferevent's own writer stays disabled: it would write past a mark
 * without the descriptors. Once the last mark is sent, writing goes back to
 * cg_dirty_relay_flush_out()'s usual path. The arbiter's copies of the
 * descriptors are closed as soon as they are sent, and on every path that
 * drops a frame or a connection.
 *
 * Back-pressure: a memfd reply adds only a few bytes to a client's output,
 * so a slow reader of a stream of large chunks would never pause its
 * worker, and the chunks would pile up in memfds. The arbiter therefore
 * counts the memfd bytes it sent to each client since the client last had
 * read everything (its output empty and nothing unread in the socket,
 * SIOCOUTQ); above CG_DIRTY_CLIENT_HIGH_WATER the worker is paused as for
 * a full output buffer, and a timer watches the client's reading to resume
 * it. (The dirty worker bounds its own memfds in flight the same way.)
 *
 * Arbiter process only, single-threaded (libevent callbacks). */
#include <errno.h>
#include <linux/sockios.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "cg_dirty_arbiter_int.h"
#include "cg_dirty_codec.h"
#include "cg_log.h"

struct cg_dirty_fdmark {
    size_t at;                 /* output bytes ahead of the byte the fds go with */
    size_t nfds;
    int fds[CG_DIRTY_MAX_FDS]; /* owned */
    struct cg_dirty_fdmark *next;
};

/* Bytes of the client's replies not read by it yet (output + socket). */
static size_t unread(struct bufferevent *bev)
{
    int queued = 0;

    if (ioctl(bufferevent_getfd(bev), SIOCOUTQ, &queued) < 0 || queued < 0) {
        queued = 0;
    }
    return evbuffer_get_length(bufferevent_get_output(bev)) + (size_t)queued;
}

void cg_dirty_relay_zc_add(struct cg_dirty_client *cl, const int *fds, size_t n)
{
    struct stat st;

    if (n == 0) {
        return;
    }
    if (cl->zc_inflight > 0 && unread(cl->bev) == 0) {
        cl->zc_inflight = 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (fstat(fds[i], &st) == 0 && st.st_size > 0) {
            cl->zc_inflight += (size_t)st.st_size;
        }
    }
}

bool cg_dirty_relay_zc_busy(struct cg_dirty_client *cl)
{
    if (cl->zc_inflight > 0 && unread(cl->bev) == 0) {
        cl->zc_inflight = 0;
    }
    return cl->zc_inflight > CG_DIRTY_CLIENT_HIGH_WATER / 2;
}

static void on_fdio_writable(evutil_socket_t fd, short what, void *arg);

int cg_dirty_relay_fdio_init(struct cg_dirty_relay_fdio *io, struct cg_dirty_arb *arb,
                             struct bufferevent *bev)
{
    memset(io, 0, sizeof(*io));
    io->arb = arb;
    io->bev = bev;
    io->wev = event_new(arb->base, bufferevent_getfd(bev), EV_WRITE, on_fdio_writable, io);
    return io->wev != NULL ? 0 : -1;
}

static void marks_drop(struct cg_dirty_relay_fdio *io)
{
    while (io->marks != NULL) {
        struct cg_dirty_fdmark *m = io->marks;
        io->marks = m->next;
        cg_dirty_fds_close(m->fds, m->nfds);
        free(m);
    }
    io->tail = NULL;
}

void cg_dirty_relay_fdio_deinit(struct cg_dirty_relay_fdio *io)
{
    if (io == NULL) {
        return;
    }
    marks_drop(io);
    cg_dirty_fdq_deinit(&io->in);
    if (io->wev != NULL) {
        event_free(io->wev);
        io->wev = NULL;
    }
    io->bev = NULL;
}

void cg_dirty_relay_fdio_mark(struct cg_dirty_relay_fdio *io, const int *fds, size_t nfds)
{
    struct cg_dirty_fdmark *m;

    if (nfds == 0) {
        return;
    }
    m = calloc(1, sizeof(*m));
    if (io == NULL || io->bev == NULL || io->wev == NULL || m == NULL ||
        nfds > CG_DIRTY_MAX_FDS) {
        /* the frame then goes without them: its receiver fails it cleanly */
        cg_log(CG_LOG_ERROR, "dirty arbiter: cannot forward %zu memfd(s) with a frame", nfds);
        cg_dirty_fds_close(fds, nfds);
        free(m);
        return;
    }
    m->at = evbuffer_get_length(bufferevent_get_output(io->bev));
    m->nfds = nfds;
    memcpy(m->fds, fds, nfds * sizeof(int));
    if (io->tail != NULL) {
        io->tail->next = m;
    } else {
        io->marks = m;
    }
    io->tail = m;
    io->arb->fds_forwarded += nfds;
    /* From now on this file writes the output (see the top). */
    bufferevent_disable(io->bev, EV_WRITE);
}

static void marks_advance(struct cg_dirty_relay_fdio *io, size_t n)
{
    for (struct cg_dirty_fdmark *m = io->marks; m != NULL; m = m->next) {
        m->at = m->at > n ? m->at - n : 0;
    }
}

/* A write failed for good: drop the marks and let the bufferevent's writer
 * meet the error and report it through the event callback. */
static void write_failed(struct cg_dirty_relay_fdio *io)
{
    marks_drop(io);
    bufferevent_enable(io->bev, EV_WRITE);
}

/* Writes the output up to and including every mark the socket takes now.
 * Returns 1 when the marks are all sent, 0 when waiting for the socket,
 * -1 after a failed write (reported through the bufferevent). */
static int write_marks(struct cg_dirty_relay_fdio *io)
{
    struct evbuffer *out = bufferevent_get_output(io->bev);
    evutil_socket_t fd = bufferevent_getfd(io->bev);

    while (io->marks != NULL) {
        struct cg_dirty_fdmark *m = io->marks;
        if (m->at > 0) {
            evbuffer_unfreeze(out, 1);
            int n = evbuffer_write_atmost(out, fd, (ev_ssize_t)m->at);
            evbuffer_freeze(out, 1);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                    event_add(io->wev, NULL);
                    return 0;
                }
                write_failed(io);
                return -1;
            }
            marks_advance(io, (size_t)n);
            if (m->at > 0) {
                event_add(io->wev, NULL);
                return 0;
            }
        }
        struct evbuffer_iovec v[16];
        struct iovec iov[16];
        int nv = evbuffer_peek(out, -1, NULL, v, 16);
        if (nv > 16) {
            nv = 16;
        }
        for (int i = 0; i < nv; i++) {
            iov[i].iov_base = v[i].iov_base;
            iov[i].iov_len = v[i].iov_len;
        }
        ssize_t n = nv > 0 ? cg_dirty_fds_send(fd, iov, nv, m->fds, m->nfds, MSG_DONTWAIT) : -1;
        if (nv <= 0) {
            errno = EPROTO; /* a mark past the end of the output: cannot happen */
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                event_add(io->wev, NULL);
                return 0;
            }
            write_failed(io);
            return -1;
        }
        evbuffer_unfreeze(out, 1);
        evbuffer_drain(out, (size_t)n);
        evbuffer_freeze(out, 1);
        io->marks = m->next;
        if (io->marks == NULL) {
            io->tail = NULL;
        }
        cg_dirty_fds_close(m->fds, m->nfds); /* the receiver has its own now */
        free(m);
        marks_advance(io, (size_t)n);
    }
    return 1;
}

bool cg_dirty_relay_fdio_flush(struct cg_dirty_relay_fdio *io)
{
    if (io == NULL || io->marks == NULL) {
        return false;
    }
    if (write_marks(io) == 1) {
        cg_dirty_relay_flush_out(io->bev, NULL); /* the rest, as usual */
    }
    return true;
}

static void on_fdio_writable(evutil_socket_t fd, short what, void *arg)
{
    struct cg_dirty_relay_fdio *io = arg;
    struct bufferevent *bev = io->bev;
    (void)fd;
    (void)what;

    if (bev == NULL) {
        return;
    }
    if (write_marks(io) == 1) {
        cg_dirty_relay_flush_out(bev, NULL);
    }
    /* what the bufferevent's writer would have reported: output drained */
    bufferevent_trigger(bev, EV_WRITE, 0);
}
