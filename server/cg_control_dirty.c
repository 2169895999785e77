/* The control socket's one question to the dirty arbiter: its status
 * (the workers it runs), for `show all`, as gunicorn's handler asks it over
 * the arbiter's socket (GUNICORN_DIRTY_SOCKET) with a status message. The
 * arbiter is our own child and answers from its event loop at once; the
 * exchange is still bounded by a short deadline so the master's loop never
 * waits on it for long. */
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cg_clock.h"
#include "cg_control_int.h"
#include "cg_dirty_codec.h"

#define STATUS_MAX (1u << 20) /* a status reply is a few KiB */

/* Waits until `fd` is ready for `events` or `deadline` passes. */
static bool wait_fd(int fd, short events, uint64_t deadline)
{
    uint64_t now = cg_monotonic_ms();
    if (now >= deadline) {
        return false;
    }
    struct pollfd p = { .fd = fd, .events = events };
    return poll(&p, 1, (int)(deadline - now)) == 1;
}

static int send_status_query(int fd, uint64_t deadline)
{
    struct cg_dirty_frame f = { 0 };
    struct cg_err err = { { 0 } };
    json_t *body = json_object();
    int rc = cg_dirty_frame_build(&f, CG_DIRTY_STATUS, 1, body, NULL, 0, STATUS_MAX, &err);
    json_decref(body);
    for (size_t off = 0; rc == 0 && off < f.len;) {
        ssize_t w = send(fd, f.data + off, f.len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            off += (size_t)w;
        } else if (w < 0 && errno == EAGAIN && wait_fd(fd, POLLOUT, deadline)) {
            continue;
        } else {
            rc = -1;
        }
    }
    cg_dirty_frame_deinit(&f);
    return rc;
}

/* Reads one whole frame into a malloc'd buffer; returns its size or 0. */
static size_t read_frame(int fd, unsigned char **out, uint64_t deadline)
{
    unsigned char *buf = malloc(STATUS_MAX);
    size_t have = 0, want = CG_DIRTY_HEADER_SIZE;
    bool sized = false;

    while (buf != NULL && have < want) {
        ssize_t r = recv(fd, buf + have, want - have, MSG_DONTWAIT);
        if (r > 0) {
            have += (size_t)r;
        } else if (!(r < 0 && errno == EAGAIN && wait_fd(fd, POLLIN, deadline))) {
            break;
        }
        if (!sized && have >= CG_DIRTY_HEADER_SIZE) {
            struct cg_dirty_header h;
            struct cg_err err = { { 0 } };
            if (cg_dirty_header_decode(buf, STATUS_MAX, &h, &err) < 0 || h.nfds != 0) {
                break;
            }
            want = cg_dirty_frame_size(&h);
            sized = true;
        }
    }
    if (buf == NULL || !sized || have < want) {
        free(buf);
        return 0;
    }
    *out = buf;
    return have;
}

json_t *cg_control_dirty_status(uint64_t budget_ms)
{
    const char *path = getenv("GUNICORN_DIRTY_SOCKET");
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    uint64_t deadline = cg_monotonic_ms() + budget_ms;
    unsigned char *frame = NULL;
    json_t *result = NULL;

    if (path == NULL || strlen(path) >= sizeof(sa.sun_path)) {
        return NULL;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return NULL;
    }
    if ((connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 ||
         (errno == EAGAIN && wait_fd(fd, POLLOUT, deadline))) &&
        send_status_query(fd, deadline) == 0) {
        size_t n = read_frame(fd, &frame, deadline);
        struct cg_dirty_msg m = { 0 };
        struct cg_err err = { { 0 } };
        if (n > 0 && cg_dirty_msg_parse(frame, n, STATUS_MAX, &m, &err) == 0) {
            if (m.hdr.type == CG_DIRTY_RESPONSE) {
                result = json_incref(json_object_get(m.body, "result"));
            }
            cg_dirty_msg_deinit(&m);
        }
    }
    free(frame);
    close(fd);
    return result;
}
