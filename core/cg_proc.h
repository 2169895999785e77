/* Process identity: the role and pid of this process (master, HTTP worker,
 * dirty arbiter, dirty worker) and its title in ps. Part of the base layer
 * (core/); forking is server/cg_supervisor.h. */
#ifndef CG_PROC_H
#define CG_PROC_H

#include <sys/types.h>

enum cg_role {
    CG_ROLE_MASTER,
    CG_ROLE_WORKER,
    CG_ROLE_DIRTY_ARBITER,
    CG_ROLE_DIRTY_WORKER,
};

struct cg_proc {
    enum cg_role role;
    pid_t pid;
};

/* This process's role and pid; cg_sup_fork() (server/cg_supervisor.c) sets
 * it in the child. */
extern struct cg_proc cg_proc;

/* Sets the process title shown by ps (e.g. "gunicorn: worker [app]", the
 * strings gunicorn uses). Through the setproctitle module when it is
 * installed, so that the app's own setproctitle()/getproctitle() calls see
 * and change the same title; else by overwriting argv. */
void cg_proc_set_title(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Remembers argv so cg_proc_set_title can overwrite it. Call first in main. */
void cg_proc_init(int argc, char **argv);

/* A copy of argv that outlives the title: setproctitle writes its first
 * title over the original strings. Exits when out of memory. */
char **cg_proc_argv_copy(int argc, char **argv);

/* Once the interpreter runs, before anything changes argv or the
 * environment: initialises the setproctitle module if it is importable (as
 * gunicorn does at import), which needs the untouched argv area to find it. */
void cg_proc_init_title(void);

#endif
