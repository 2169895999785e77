/* The master's state, shared by its files: cg_master.c (the loop, workers,
 * signals, shutdown) and cg_master_reload.c (HUP configuration reload, USR2
 * binary upgrade and the promotion of the new master). */
#ifndef CG_MASTER_INT_H
#define CG_MASTER_INT_H

#include <Python.h>
#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

#include "cg_conf.h"
#include "cg_listen.h"
#include "cg_pidfile.h"
#include "cg_py_hooks.h"
#include "cg_supervisor.h"
#include "cg_worker.h"

#define CG_MASTER_MAX_SLOTS 1024

struct cg_master_child {
    pid_t pid;
    int slot;
    int age;
    bool aborted;
    bool stopping; /* sent TERM (HUP/TTOU/cull) */
    bool reloading; /* stopped by HUP: its replacement counts as a reload restart */
    bool over_memory; /* stopped for max_worker_memory: a memory restart */
};

/* The children the master stops and waits for at shutdown (a USR2 master
 * is left running). */
#define CG_MASTER_KIDS (CG_SUP_ROLE(CG_ROLE_WORKER) | CG_SUP_ROLE(CG_ROLE_DIRTY_ARBITER))

struct cg_master {
    struct cg_conf *conf; /* main's; replaced in place on HUP */
    int argc;
    char **argv;          /* copy of the command line (owned), for HUP and USR2 */
    char exe[PATH_MAX];   /* this binary, for USR2 */
    char cwd[PATH_MAX];   /* where USR2 re-executes */
    struct cg_listener *ls;
    size_t nls;
    struct cg_sup sup;    /* forks and reaps every child: workers, arbiter, USR2 master */
    int reap_rc;          /* -1 once a reaped child asks the master to halt */
    struct cg_worker_slot *slots; /* shared mapping, CG_MASTER_MAX_SLOTS entries */
    struct cg_master_child kids[CG_MASTER_MAX_SLOTS];
    int nkids;
    int num_workers;
    int last_reported_workers; /* the gunicorn.workers gauge last sent (-1: none yet) */
    int age;
    PyObject *preloaded_app; /* owned; NULL unless preload_app */
    struct cg_hooks hooks;
    struct cg_pidfile pidfile;
    pid_t dirty_pid;
    bool dirty_on;
    bool systemd;            /* listeners came from systemd socket activation */
    pid_t reexec_pid;        /* the new master after USR2, until it exits */
    pid_t master_pid;        /* the old master, while we are the USR2 child */
    const char *master_name; /* "Master", or "Master.2" while master_pid != 0 */
    char proc_name[256];
    int exit_status;
    const char *halt_reason;
    bool fatal; /* a hook raised in the loop: gunicorn's "Unhandled exception" */
    struct {     /* what the control socket's "show stats" reports (gunicorn's _stats) */
        double start_time;      /* wall clock at start, seconds */
        unsigned long spawned;  /* workers forked */
        unsigned long killed;   /* workers sent TERM or KILL to stop them */
        unsigned long reloads;  /* HUP reloads */
    } stats;
};

/* cg_master.c */
int cg_master_spawn_worker(struct cg_master *m);
void cg_master_manage_workers(struct cg_master *m);
int cg_master_reap(struct cg_master *m);
void cg_master_set_num_workers(struct cg_master *m, int n, bool announce_none);
void cg_master_set_title(struct cg_master *m);
/* HUP: serves metrics on `addr` (NULL or "": off) instead, mapping the
 * shared region if this is the first time. Returns 0, or -1 with err (the
 * old listener still serving). */
int cg_master_move_metrics(struct cg_master *m, const char *addr, struct cg_err *err);

/* cg_master_reload.c */
void cg_master_reload(struct cg_master *m);
void cg_master_reexec(struct cg_master *m);
void cg_master_maybe_promote(struct cg_master *m);

#endif
