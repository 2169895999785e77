/* The master's pid file, as gunicorn's pidfile.Pidfile: written atomically
 * (temp file + rename, mode 0644), refused when it names another live
 * process, removed only while it still holds our pid. */
#ifndef CG_PIDFILE_H
#define CG_PIDFILE_H

#include <stdbool.h>
#include <sys/types.h>

#include "cg_err.h"

struct cg_pidfile {
    char path[4096]; /* "" when no pid file */
    pid_t pid;
};

/* Writes `pid` to `path`. Returns 0, or -1 with err ("Already running on PID
 * N (or pid file 'P' is stale)", or the I/O error naming the path). */
int cg_pidfile_create(struct cg_pidfile *pf, const char *path, pid_t pid, struct cg_err *err);

/* Moves the pid file to `path` (unlink + create, as gunicorn's rename). */
int cg_pidfile_rename(struct cg_pidfile *pf, const char *path, struct cg_err *err);

/* Removes the file if it still holds pf->pid; forgets it either way. */
void cg_pidfile_unlink(struct cg_pidfile *pf);

/* The pid in `path` if that process exists, else 0. */
pid_t cg_pidfile_validate(const char *path);

#endif
