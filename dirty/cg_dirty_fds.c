/* Descriptors that travel with dirty frames: the receive FIFO, recvmsg()
 * and sendmsg() with SCM_RIGHTS (see cg_dirty_fds.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cg_dirty_codec.h"
#include "cg_dirty_fds.h"

void cg_dirty_fds_close(const int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
    }
}

void cg_dirty_fdq_deinit(struct cg_dirty_fdq *q)
{
    cg_dirty_fds_close(q->fds, q->n);
    free(q->fds);
    memset(q, 0, sizeof(*q));
}

int cg_dirty_fdq_take(struct cg_dirty_fdq *q, int *out, size_t n)
{
    if (n > q->n) {
        return -1;
    }
    if (n == 0) {
        return 0; /* the common case: no memcpy(NULL, ...) */
    }
    memcpy(out, q->fds, n * sizeof(int));
    memmove(q->fds, q->fds + n, (q->n - n) * sizeof(int));
    q->n -= n;
    return 0;
}

/* Appends n descriptors; on allocation failure closes them and fails. */
static int fdq_push(struct cg_dirty_fdq *q, const int *fds, size_t n)
{
    if (n == 0) {
        return 0;
    }
    if (q->cap - q->n < n) {
        size_t cap = q->cap ? q->cap * 2 : 16;
        while (cap - q->n < n) {
            cap *= 2;
        }
        int *grown = realloc(q->fds, cap * sizeof(int));
        if (grown == NULL) {
            cg_dirty_fds_close(fds, n);
            return -1;
        }
        q->fds = grown;
        q->cap = cap;
    }
    memcpy(q->fds + q->n, fds, n * sizeof(int));
    q->n += n;
    return 0;
}

ssize_t cg_dirty_fds_recv(int sock, struct iovec *iov, int iovcnt, struct cg_dirty_fdq *q)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * CG_DIRTY_MAX_FDS)];
        struct cmsghdr align;
    } ctl;
    struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)iovcnt,
                         .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf) };
    ssize_t n = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    int lost = 0;

    if (n < 0) {
        return -1;
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
            continue;
        }
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int fds[CG_DIRTY_MAX_FDS];
        if (k > CG_DIRTY_MAX_FDS) {
            k = CG_DIRTY_MAX_FDS;
        }
        memcpy(fds, CMSG_DATA(c), k * sizeof(int));
        if (fdq_push(q, fds, k) < 0) {
            lost = 1;
        }
    }
    if (lost || (mh.msg_flags & MSG_CTRUNC)) {
        errno = EPROTO;
        return -1;
    }
    return n;
}

ssize_t cg_dirty_fds_send(int sock, const struct iovec *iov, int iovcnt, const int *fds,
                          size_t nfds, int flags)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * CG_DIRTY_MAX_FDS)];
        struct cmsghdr align;
    } ctl;
    struct msghdr mh = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };

    if (nfds > CG_DIRTY_MAX_FDS) {
        errno = EINVAL;
        return -1;
    }
    if (nfds > 0) {
        memset(&ctl, 0, sizeof(ctl));
        mh.msg_control = ctl.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    return sendmsg(sock, &mh, MSG_NOSIGNAL | flags);
}
