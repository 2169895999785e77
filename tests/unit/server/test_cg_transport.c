/* Unit tests for the plain-socket transport (server/cg_transport.c): recv
 * into a connection buffer, would-block reported as CG_TRANSPORT_AGAIN with
 * the events to wait for (the same for blocking and event-driven callers),
 * writev partial writes through the blocking helper, sendfile from a regular
 * file and its copy fallback from a pipe, shutdown. */
#include "cg_test.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cg_conn.h"
#include "cg_transport.h"

/* A connected pair: [0] is the transport's side (non-blocking). */
static void pair(int sv[2], bool nonblock)
{
    int rc = socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0,
                        sv);
    CG_CHECK_INT(rc, 0);
}

static void test_recv_into_buffer_and_would_block(void)
{
    int sv[2];
    struct cg_transport t;
    struct cg_conn_buf b = { 0 };

    pair(sv, true);
    cg_transport_init(&t, sv[0]);
    CG_CHECK_INT(cg_conn_buf_fill(&b, &t, 1), CG_TRANSPORT_AGAIN);
    CG_CHECK_INT(t.want, POLLIN);
    CG_CHECK_INT(write(sv[1], "hello", 5), 5);
    CG_CHECK_INT(cg_transport_unread(&t), 5);
    CG_CHECK_INT(cg_conn_buf_fill(&b, &t, 1), 5);
    CG_CHECK_INT(b.end - b.start, 5);
    CG_CHECK(memcmp(b.p + b.start, "hello", 5) == 0);
    CG_CHECK(b.cap >= CG_CONN_READ_CHUNK);
    /* the blocking helper without waiting reports AGAIN too */
    char buf[8];
    CG_CHECK_INT(cg_transport_recv_wait(&t, buf, sizeof(buf), false, 100), CG_TRANSPORT_AGAIN);
    /* with a wait it times out as ETIMEDOUT */
    errno = 0;
    CG_CHECK_INT(cg_transport_recv_wait(&t, buf, sizeof(buf), true, 20), -1);
    CG_CHECK_INT(errno, ETIMEDOUT);
    close(sv[1]);
    CG_CHECK_INT(cg_conn_buf_fill(&b, &t, 1), 0); /* EOF */
    cg_transport_close(&t);
    CG_CHECK_INT(t.fd, -1);
    cg_transport_close(&t); /* idempotent */
    cg_conn_buf_free(&b);
}

/* NOWAIT on a blocking socket: the would-block is reported, never waited. */
static void test_nowait_on_blocking_socket(void)
{
    int sv[2];
    struct cg_transport t;
    char buf[4];

    pair(sv, false);
    cg_transport_init(&t, sv[0]);
    CG_CHECK_INT(cg_transport_recv(&t, buf, sizeof(buf), CG_TRANSPORT_NOWAIT),
                 CG_TRANSPORT_AGAIN);
    CG_CHECK_INT(t.want, POLLIN);
    cg_transport_close(&t);
    close(sv[1]);
}

struct reader {
    int fd;
    size_t got;
};

static void *read_all(void *arg)
{
    struct reader *r = arg;
    char buf[65536];
    ssize_t n;

    while ((n = read(r->fd, buf, sizeof(buf))) > 0) {
        r->got += (size_t)n;
    }
    return NULL;
}

/* A small socket buffer: sendv returns short counts and AGAIN (POLLOUT);
 * the blocking helper sends everything across partial writes. */
static void test_sendv_partial_writes(void)
{
    int sv[2];
    int small = 4096;
    struct cg_transport t;
    static char a[300000], b2[200000];
    struct iovec iov[3] = { { a, sizeof(a) }, { NULL, 0 }, { b2, sizeof(b2) } };

    pair(sv, true);
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    cg_transport_init(&t, sv[0]);
    ssize_t w = cg_transport_sendv(&t, iov, 3, 0);
    CG_CHECK(w > 0 && (size_t)w < sizeof(a) + sizeof(b2));
    ssize_t again = 0;
    for (int i = 0; i < 1000 && again != CG_TRANSPORT_AGAIN; i++) {
        again = cg_transport_sendv(&t, iov, 1, 0);
    }
    CG_CHECK_INT(again, CG_TRANSPORT_AGAIN);
    CG_CHECK_INT(t.want, POLLOUT);

    fcntl(sv[1], F_SETFL, fcntl(sv[1], F_GETFL) & ~O_NONBLOCK); /* the reader blocks */
    struct reader r = { sv[1], 0 };
    pthread_t th;
    pthread_create(&th, NULL, read_all, &r);
    struct iovec iov2[3] = { { a, sizeof(a) }, { NULL, 0 }, { b2, sizeof(b2) } };
    int rc = cg_transport_sendv_all(&t, iov2, 3, 5000);
    if (rc < 0) {
        perror("sendv_all");
    }
    CG_CHECK_INT(rc, 0);
    cg_transport_close(&t);
    pthread_join(th, NULL);
    close(sv[1]);
    /* what the probing sends wrote, then everything once more */
    CG_CHECK(r.got >= sizeof(a) + sizeof(b2));
}

static void test_iov_advance(void)
{
    char x[10], y[10];
    struct iovec iov[3] = { { x, 10 }, { NULL, 0 }, { y, 10 } };
    int n = 3;
    struct iovec *p = cg_transport_iov_advance(iov, &n, 12);

    CG_CHECK_INT(n, 1);
    CG_CHECK(p == &iov[2]);
    CG_CHECK(p->iov_base == y + 2);
    CG_CHECK_INT(p->iov_len, 8);
    p = cg_transport_iov_advance(p, &n, 8);
    CG_CHECK_INT(n, 0);
}

static size_t drain_fd(int fd, char *out, size_t cap)
{
    size_t got = 0;
    ssize_t n;
    while (got < cap && (n = read(fd, out + got, cap - got)) > 0) {
        got += (size_t)n;
    }
    return got;
}

static void test_sendfile_regular_file(void)
{
    int sv[2];
    struct cg_transport t;
    char path[] = "/tmp/cg_transport_XXXXXX";
    int fd = mkstemp(path);
    char out[64];

    unlink(path);
    CG_CHECK_INT(write(fd, "0123456789", 10), 10);
    pair(sv, false);
    cg_transport_init(&t, sv[0]);
    off_t pos = 2;
    CG_CHECK_INT(cg_transport_sendfile_all(&t, fd, &pos, 5, -1), 0);
    CG_CHECK_INT(pos, 7);
    /* a file shorter than announced: stops at its end */
    CG_CHECK_INT(cg_transport_sendfile_all(&t, fd, &pos, 100, -1), 0);
    CG_CHECK_INT(pos, 10);
    CG_CHECK_INT(cg_transport_shutdown(&t), 0);
    size_t n = drain_fd(sv[1], out, sizeof(out));
    CG_CHECK_INT(n, 8);
    CG_CHECK(memcmp(out, "23456789", 8) == 0);
    cg_transport_close(&t);
    close(sv[1]);
    close(fd);
}

/* sendfile(2) cannot read a pipe (EINVAL): the copy fallback sends it. */
static void test_sendfile_copy_fallback(void)
{
    int sv[2], p[2];
    struct cg_transport t;
    char out[64];

    CG_CHECK_INT(pipe(p), 0);
    CG_CHECK_INT(write(p[1], "from a pipe", 11), 11);
    close(p[1]);
    pair(sv, false);
    cg_transport_init(&t, sv[0]);
    off_t pos = 0;
    CG_CHECK_INT(cg_transport_sendfile_all(&t, p[0], &pos, 11, -1), 0);
    CG_CHECK_INT(pos, 11);
    CG_CHECK_INT(cg_transport_shutdown(&t), 0);
    CG_CHECK_INT(drain_fd(sv[1], out, sizeof(out)), 11);
    CG_CHECK(memcmp(out, "from a pipe", 11) == 0);
    cg_transport_close(&t);
    close(sv[1]);
    close(p[0]);
}

/* shutdown: the peer reads EOF, and we can still receive. */
static void test_shutdown(void)
{
    int sv[2];
    struct cg_transport t;
    char buf[8];

    pair(sv, true);
    cg_transport_init(&t, sv[0]);
    CG_CHECK_INT(cg_transport_shutdown(&t), 0);
    CG_CHECK_INT(read(sv[1], buf, sizeof(buf)), 0);
    CG_CHECK_INT(write(sv[1], "x", 1), 1);
    CG_CHECK_INT(cg_transport_recv(&t, buf, sizeof(buf), 0), 1);
    /* sending after shutdown fails with EPIPE, without SIGPIPE */
    struct iovec iov = { "y", 1 };
    errno = 0;
    CG_CHECK_INT(cg_transport_sendv(&t, &iov, 1, 0), -1);
    CG_CHECK_INT(errno, EPIPE);
    cg_transport_close(&t);
    close(sv[1]);
}

/* The cooperative wait hook (the gevent worker's): the blocking helpers
 * wait through it instead of poll(), with what the would-block wanted, and
 * its failure is theirs. */
static int hook_calls;
static short hook_want;
static int hook_peer = -1;

static int hook_wait(struct cg_transport *t, int timeout_ms)
{
    (void)timeout_ms;
    hook_calls++;
    hook_want = t->want;
    if (hook_peer < 0) {
        errno = ECANCELED;
        return -1;
    }
    CG_CHECK_INT(write(hook_peer, "z", 1), 1); /* the "other greenlet" sends */
    return 0;
}

static void test_wait_hook(void)
{
    int sv[2];
    struct cg_transport t;
    char buf[8];

    pair(sv, true);
    cg_transport_init(&t, sv[0]);
    CG_CHECK(t.wait == NULL);
    t.wait = hook_wait;
    hook_peer = sv[1];
    CG_CHECK_INT(cg_transport_recv_wait(&t, buf, sizeof(buf), true, -1), 1);
    CG_CHECK_INT(hook_calls, 1);
    CG_CHECK_INT(hook_want, POLLIN);
    hook_peer = -1;
    errno = 0;
    CG_CHECK_INT(cg_transport_recv_wait(&t, buf, sizeof(buf), true, -1), -1);
    CG_CHECK_INT(errno, ECANCELED);
    CG_CHECK_INT(hook_calls, 2);
    cg_transport_close(&t);
    close(sv[1]);
}

CG_TEST_MAIN(CG_TEST(test_recv_into_buffer_and_would_block), CG_TEST(test_nowait_on_blocking_socket),
             CG_TEST(test_sendv_partial_writes), CG_TEST(test_iov_advance),
             CG_TEST(test_sendfile_regular_file), CG_TEST(test_sendfile_copy_fallback),
             CG_TEST(test_shutdown), CG_TEST(test_wait_hook))
