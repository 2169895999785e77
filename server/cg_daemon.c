/* Daemonizing and systemd integration (see cg_daemon.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cg_daemon.h"
#include "cg_log.h"
#include "cg_supervisor.h"

int cg_daemon_start(bool keep_stdio, struct cg_err *err)
{
    if (getenv("GUNICORN_FD") != NULL) {
        return 0;
    }
    for (int round = 0; round < 2; round++) {
        fflush(NULL);
        pid_t pid = cg_sup_fork(CG_ROLE_MASTER);
        if (pid < 0) {
            cg_err_set(err, "daemon: fork: %s", strerror(errno));
            return -1;
        }
        if (pid > 0) {
            _exit(0);
        }
        if (round == 0 && setsid() < 0) {
            cg_err_set(err, "daemon: setsid: %s", strerror(errno));
            return -1;
        }
    }
    umask(022);
    int null = open("/dev/null", O_RDWR);
    if (null < 0) {
        cg_err_set(err, "daemon: /dev/null: %s", strerror(errno));
        return -1;
    }
    dup2(null, 0);
    /* enable_stdio_inheritance keeps stdout/stderr where a shell redirection
     * sent them; a terminal is still let go of (gunicorn's daemonize). */
    for (int fd = 1; fd <= 2; fd++) {
        if (!keep_stdio || isatty(fd)) {
            dup2(null, fd);
        }
    }
    if (null > 2) {
        close(null);
    }
    return 0;
}

int cg_systemd_listen_fds(void)
{
    const char *fds = getenv("LISTEN_FDS");
    const char *pid = getenv("LISTEN_PID");
    int n;

    if (fds == NULL || pid == NULL || (pid_t)strtol(pid, NULL, 10) != getpid()) {
        return 0;
    }
    n = (int)strtol(fds, NULL, 10);
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    return n > 0 ? n : 0;
}

void cg_systemd_notify(const char *state)
{
    const char *addr = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa;
    socklen_t len;
    int fd;

    if (addr == NULL || addr[0] == '\0') {
        return;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    size_t n = strlen(addr);
    if (n >= sizeof(sa.sun_path)) {
        cg_log_debug("Exception while invoking sd_notify(): NOTIFY_SOCKET too long");
        return;
    }
    memcpy(sa.sun_path, addr, n);
    if (addr[0] == '@') {
        sa.sun_path[0] = '\0'; /* abstract namespace */
    }
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, len) < 0 ||
        send(fd, state, strlen(state), MSG_NOSIGNAL) < 0) {
        cg_log_debug("Exception while invoking sd_notify(): %s", strerror(errno));
    }
    if (fd >= 0) {
        close(fd);
    }
}
