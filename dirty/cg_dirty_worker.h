/* A dirty worker process: forked by the dirty arbiter, connected to it by a
 * socketpair. It runs the dirty_post_fork hook, imports and instantiates its
 * dirty apps, calls app.init() on each, runs dirty_worker_init, tells the
 * arbiter it booted, then serves REQUEST frames on a pool of dirty_threads
 * threads (async actions and async generators run on an asyncio loop the
 * worker owns) until it is told to stop; then app.close() on each app and
 * the dirty_worker_exit hook. The Python half is server/py/cgunicorn/
 * dirty_worker.py.
 *
 * Exit statuses: 0 normal stop; CG_DIRTY_EXIT_BOOT_ERROR when an app failed
 * to import, instantiate or init() (or a boot hook raised) — the traceback
 * is logged once by the worker and the arbiter then stops with the same
 * status (see cg_dirty_arbiter.h). */
#ifndef CG_DIRTY_WORKER_H
#define CG_DIRTY_WORKER_H

#include <Python.h>
#include <stddef.h>
#include <sys/types.h>

#include "cg_conf.h"
#include "cg_err.h"
#include "cg_py_hook_table.h"

/* gunicorn's WORKER_BOOT_ERROR. */
#define CG_DIRTY_EXIT_BOOT_ERROR 3

struct cg_dirty_worker_spec {
    struct cg_conf *conf;          /* borrowed */
    const struct cg_hook_table *hooks; /* the dirty hooks (borrowed) */
    int fd;                        /* the worker's end of the socketpair (taken) */
    int age;                       /* 1, 2, ... */
    const char *const *app_paths;  /* "module:Class" of each app it loads */
    size_t napps;
    PyObject *pyarb;               /* the hooks' arbiter object (borrowed) */
    size_t max_message;
    const char *gpu;               /* dirty_gpus: its CUDA_VISIBLE_DEVICES, or NULL */
};

/* The worker process body, called in the child right after
 * cg_sup_spawn(CG_ROLE_DIRTY_WORKER) with the GIL held. Never returns. */
void cg_dirty_worker_main(const struct cg_dirty_worker_spec *spec) __attribute__((noreturn));

/* Reads the `workers` class attribute of each app in a short-lived child
 * process (so the arbiter itself never imports application code). For
 * each i, limits[i] becomes the attribute (>= 1) or 0 when the class has
 * none / it could not be read (the worker's own import reports that).
 * Needs the GIL. Returns 0, or -1 with err (fork/pipe failure). */
int cg_dirty_worker_probe(const char *const *app_paths, size_t napps, int *limits,
                          struct cg_err *err);

/* A Python callable log(level, message) writing through cg_log (level:
 * 10 debug, 20 info, 30 warning, 40 error, 50 critical). New reference.
 * Needs the GIL. */
PyObject *cg_dirty_py_log_func(void);

/* Imports cgunicorn.dirty_worker and returns attribute `name` (new
 * reference), or NULL with a Python exception set. Needs the GIL. */
PyObject *cg_dirty_py_helper(const char *name);

#endif
