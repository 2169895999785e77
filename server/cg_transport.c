/* The plain-socket transport (recv, sendmsg, sendfile with a copy
 * fallback, shutdown) and the blocking helpers every transport shares:
 * wait with poll() for what the last would-block wanted, then retry. See
 * cg_transport.h for the contract. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cg_transport.h"

#define SENDFILE_MAX 0x7ffff000
#define COPY_CHUNK 65536

static bool would_block(int e)
{
    return e == EAGAIN || e == EWOULDBLOCK;
}

static ssize_t plain_recv(struct cg_transport *t, void *buf, size_t n, int flags)
{
    int f = (flags & CG_TRANSPORT_NOWAIT) ? MSG_DONTWAIT : 0;

    for (;;) {
        ssize_t got = recv(t->fd, buf, n, f);
        if (got >= 0) {
            return got;
        }
        if (errno == EINTR) {
            continue;
        }
        if (would_block(errno)) {
            t->want = POLLIN;
            return CG_TRANSPORT_AGAIN;
        }
        return -1;
    }
}

static ssize_t plain_sendv(struct cg_transport *t, const struct iovec *iov, int n, int flags)
{
    struct msghdr m = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n };
    int f = MSG_NOSIGNAL | ((flags & CG_TRANSPORT_NOWAIT) ? MSG_DONTWAIT : 0) |
            ((flags & CG_TRANSPORT_MORE) ? MSG_MORE : 0);

    for (;;) {
        ssize_t w = sendmsg(t->fd, &m, f);
        if (w >= 0) {
            return w;
        }
        if (errno == EINTR) {
            continue;
        }
        if (would_block(errno)) {
            t->want = POLLOUT;
            return CG_TRANSPORT_AGAIN;
        }
        return -1;
    }
}

/* Sends all of buf (read from a file that cannot be re-read at an offset),
 * waiting for the socket as long as it takes. */
static int send_copied(struct cg_transport *t, const char *buf, size_t n)
{
    struct iovec iov = { (void *)buf, n };
    return cg_transport_sendv_all(t, &iov, 1, -1);
}

/* sendfile(2) cannot read this file: copy through a buffer. A file that
 * has offsets is read with pread, so a short send loses nothing (the rest
 * is read again next time); a pipe is read once and sent whole. */
static ssize_t copy_file(struct cg_transport *t, int fd, off_t *pos, size_t n)
{
    char buf[COPY_CHUNK];
    size_t want = n < sizeof(buf) ? n : sizeof(buf);
    ssize_t got;

    do {
        got = pread(fd, buf, want, *pos);
    } while (got < 0 && errno == EINTR);
    if (got < 0 && (errno == ESPIPE || errno == EINVAL)) { /* a pipe */
        do {
            got = read(fd, buf, want);
        } while (got < 0 && errno == EINTR);
        if (got > 0 && send_copied(t, buf, (size_t)got) < 0) {
            return -1;
        }
        if (got > 0) {
            *pos += got;
        }
        return got;
    }
    if (got <= 0) {
        return got;
    }
    struct iovec iov = { buf, (size_t)got };
    ssize_t w = plain_sendv(t, &iov, 1, 0);
    if (w > 0) {
        *pos += w;
    }
    return w;
}

static ssize_t plain_sendfile(struct cg_transport *t, int fd, off_t *pos, size_t n)
{
    if (n > SENDFILE_MAX) {
        n = SENDFILE_MAX;
    }
    for (;;) {
        ssize_t w = sendfile(t->fd, fd, pos, n);
        if (w >= 0) {
            return w;
        }
        if (errno == EINTR) {
            continue;
        }
        if (would_block(errno)) {
            t->want = POLLOUT;
            return CG_TRANSPORT_AGAIN;
        }
        if (errno == EINVAL || errno == ESPIPE || errno == ENOSYS || errno == EOPNOTSUPP) {
            return copy_file(t, fd, pos, n);
        }
        return -1;
    }
}

static int plain_shutdown(struct cg_transport *t)
{
    return shutdown(t->fd, SHUT_WR);
}

static int plain_unread(struct cg_transport *t)
{
    int n = 0;
    return ioctl(t->fd, FIONREAD, &n) < 0 ? -1 : n;
}

const struct cg_transport_ops cg_transport_plain = {
    .recv = plain_recv,
    .sendv = plain_sendv,
    .sendfile = plain_sendfile,
    .shutdown = plain_shutdown,
    .unread = plain_unread,
    .release = NULL,
};

void (*cg_transport_wrap)(struct cg_transport *t);

void cg_transport_close(struct cg_transport *t)
{
    if (t->ops != NULL && t->ops->release != NULL) {
        t->ops->release(t); /* once: it leaves t->impl NULL */
    }
    if (t->fd >= 0) {
        close(t->fd);
        t->fd = -1;
    }
}

/* ---- blocking helpers ---- */

int cg_transport_wait(struct cg_transport *t, int timeout_ms)
{
    struct pollfd p = { .fd = t->fd, .events = t->want ? t->want : POLLIN };

    if (t->wait != NULL) {
        return t->wait(t, timeout_ms);
    }
    for (;;) {
        int rc = poll(&p, 1, timeout_ms > 0 ? timeout_ms : -1);
        if (rc > 0) {
            return 0;
        }
        if (rc == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        if (errno != EINTR) {
            return -1;
        }
    }
}

ssize_t cg_transport_recv_wait(struct cg_transport *t, void *buf, size_t n, bool wait,
                               int timeout_ms)
{
    for (;;) {
        ssize_t got = cg_transport_recv(t, buf, n, 0);
        if (got != CG_TRANSPORT_AGAIN || !wait) {
            return got;
        }
        if (cg_transport_wait(t, timeout_ms) < 0) {
            return -1;
        }
    }
}

struct iovec *cg_transport_iov_advance(struct iovec *iov, int *n, size_t done)
{
    while (*n > 0 && done >= iov->iov_len) {
        done -= iov->iov_len;
        iov++;
        (*n)--;
    }
    while (*n > 0 && iov->iov_len == 0) {
        iov++;
        (*n)--;
    }
    if (*n > 0 && done > 0) {
        iov->iov_base = (char *)iov->iov_base + done;
        iov->iov_len -= done;
    }
    return iov;
}

bool cg_transport_can_hold(const struct cg_transport *t, int family)
{
    return t->ops == &cg_transport_plain && (family == AF_INET || family == AF_INET6);
}

int cg_transport_push_fd(int fd)
{
    int one = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int cg_transport_sendv_all(struct cg_transport *t, struct iovec *iov, int n, int timeout_ms)
{
    return cg_transport_sendv_all_flags(t, iov, n, timeout_ms, 0);
}

int cg_transport_sendv_all_flags(struct cg_transport *t, struct iovec *iov, int n,
                                 int timeout_ms, int flags)
{
    iov = cg_transport_iov_advance(iov, &n, 0);
    while (n > 0) {
        ssize_t w = cg_transport_sendv(t, iov, n, flags);
        if (w == CG_TRANSPORT_AGAIN) {
            if (cg_transport_wait(t, timeout_ms) < 0) {
                return -1;
            }
            continue;
        }
        if (w < 0) {
            return -1;
        }
        iov = cg_transport_iov_advance(iov, &n, (size_t)w);
    }
    return 0;
}

int cg_transport_sendfile_all(struct cg_transport *t, int fd, off_t *pos, uint64_t len,
                              int timeout_ms)
{
    while (len > 0) {
        ssize_t w = cg_transport_sendfile(t, fd, pos, len > SIZE_MAX ? SIZE_MAX : (size_t)len);
        if (w == CG_TRANSPORT_AGAIN) {
            if (cg_transport_wait(t, timeout_ms) < 0) {
                return -1;
            }
            continue;
        }
        if (w < 0) {
            return -1;
        }
        if (w == 0) {
            break; /* the file is shorter than announced */
        }
        len -= (uint64_t)w;
    }
    return 0;
}
