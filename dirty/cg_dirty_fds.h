/* Descriptors that travel with dirty frames (zero-copy payloads): a frame's
 * memfds are passed with SCM_RIGHTS on the sendmsg() that carries the
 * frame's first byte; the receiver collects every descriptor it receives,
 * in order, in a FIFO, and a frame announcing N descriptors (header byte 5)
 * takes the first N from it once the frame is whole. Linux never merges
 * the data of two sendmsg() calls that carried descriptors into one
 * recvmsg(), so one control buffer of CG_DIRTY_MAX_FDS is enough.
 *
 * Used by the dirty arbiter (each connection) and the dirty worker (its
 * link). Plain C, no Python, no GIL. */
#ifndef CG_DIRTY_FDS_H
#define CG_DIRTY_FDS_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

/* Received descriptors not yet claimed by a frame, oldest first. */
struct cg_dirty_fdq {
    int *fds; /* owned, and so is every descriptor in it */
    size_t n, cap;
};

/* Closes every descriptor still queued and frees the queue (reusable). */
void cg_dirty_fdq_deinit(struct cg_dirty_fdq *q);

/* Moves the `n` oldest descriptors into out[0..n-1] (the caller owns them
 * then). Returns 0, or -1 when fewer than n are queued (nothing moved). */
int cg_dirty_fdq_take(struct cg_dirty_fdq *q, int *out, size_t n);

/* Closes fds[0..n-1]. */
void cg_dirty_fds_close(const int *fds, size_t n);

/* recvmsg() into iov, non-blocking, with the descriptors that come with the
 * data appended to q (O_CLOEXEC). Returns the bytes read, 0 at EOF, or -1
 * with errno (EAGAIN: nothing yet; EPROTO: descriptors were lost, the
 * connection cannot be trusted any more). */
ssize_t cg_dirty_fds_recv(int sock, struct iovec *iov, int iovcnt, struct cg_dirty_fdq *q);

/* sendmsg() of iov with fds[0..nfds-1] (nfds may be 0) passed along, with
 * MSG_NOSIGNAL | `flags`. Returns what sendmsg() returns. */
ssize_t cg_dirty_fds_send(int sock, const struct iovec *iov, int iovcnt, const int *fds,
                          size_t nfds, int flags);

#endif
