/* Pid file handling (see cg_pidfile.h). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cg_pidfile.h"

static pid_t read_pid(const char *path)
{
    char buf[32];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0) {
        return 0;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) {
        return 0;
    }
    buf[n] = '\0';
    return (pid_t)strtol(buf, NULL, 10);
}

pid_t cg_pidfile_validate(const char *path)
{
    pid_t pid = read_pid(path);

    if (pid <= 0) {
        return 0;
    }
    if (kill(pid, 0) == 0 || errno == EPERM) {
        return pid;
    }
    return 0;
}

int cg_pidfile_create(struct cg_pidfile *pf, const char *path, pid_t pid, struct cg_err *err)
{
    char dir[4096], tmp[4200], line[32];
    pid_t old = cg_pidfile_validate(path);
    int fd;

    if (old != 0 && old != getpid()) {
        cg_err_set(err, "Already running on PID %d (or pid file '%s' is stale)", (int)old, path);
        return -1;
    }
    snprintf(dir, sizeof(dir), "%s", path);
    snprintf(tmp, sizeof(tmp), "%s/.cgunicorn-pid-XXXXXX", dirname(dir));
    fd = mkstemp(tmp);
    if (fd < 0) {
        cg_err_set(err, "pidfile '%s': cannot create a file in its directory: %s", path,
                   strerror(errno));
        return -1;
    }
    int n = snprintf(line, sizeof(line), "%d\n", (int)pid);
    if (write(fd, line, (size_t)n) != n || fchmod(fd, 0644) < 0 || close(fd) < 0 ||
        rename(tmp, path) < 0) {
        cg_err_set(err, "pidfile '%s': %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    snprintf(pf->path, sizeof(pf->path), "%s", path);
    pf->pid = pid;
    return 0;
}

int cg_pidfile_rename(struct cg_pidfile *pf, const char *path, struct cg_err *err)
{
    pid_t pid = pf->pid;

    cg_pidfile_unlink(pf);
    return cg_pidfile_create(pf, path, pid, err);
}

void cg_pidfile_unlink(struct cg_pidfile *pf)
{
    if (pf->path[0] != '\0' && read_pid(pf->path) == pf->pid) {
        unlink(pf->path);
    }
    pf->path[0] = '\0';
}
