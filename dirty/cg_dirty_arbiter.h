/* The dirty arbiter: a process forked by the master that owns the dirty
 * worker pool, routes calls from HTTP workers to dirty workers over Unix
 * sockets, enforces dirty_timeout, forwards stream chunks and holds the stash. */
#ifndef CG_DIRTY_ARBITER_H
#define CG_DIRTY_ARBITER_H

#include <stdbool.h>
#include <sys/types.h>

#include "cg_conf.h"
#include "cg_err.h"
#include "cg_py_hook_table.h"
#include "cg_supervisor.h"

/* True when the configuration asks for a dirty pool (dirty_workers > 0 and
 * dirty_apps non-empty). */
bool cg_dirty_wanted(const struct cg_conf *conf);

/* Called by the master before the first spawn: chooses the arbiter's socket
 * path (in a private 0700 directory), binds and listens on it (the master
 * keeps it open; every arbiter it forks accepts on it, so calls made while
 * an arbiter starts or is replaced wait instead of failing), and exports
 * the path as GUNICORN_DIRTY_SOCKET in the master's environment, so HTTP
 * workers forked later inherit it.
 * Returns 0, or -1 with err. */
int cg_dirty_prepare(struct cg_conf *conf, struct cg_err *err);

/* Exit status of the dirty arbiter when a dirty app cannot be loaded (import
 * error, its __init__ or init() raised, a boot hook raised) or the arbiter
 * cannot start (bad dirty_apps entry, socket): the traceback/reason is
 * logged once, and the master should treat this status as fatal (as
 * gunicorn treats a worker's WORKER_BOOT_ERROR: "Worker failed to boot")
 * instead of respawning the arbiter in a loop. Any other exit status or
 * signal is a crash the master answers by respawning the arbiter. */
#define CG_DIRTY_ARBITER_EXIT_BOOT_ERROR 3

/* Forks the dirty arbiter through the master's supervisor `sup`
 * (cg_sup_spawn, role CG_ROLE_DIRTY_ARBITER, reaped into its callback); the child
 * runs the arbiter loop and never returns (it _exit()s: 0 after a TERM/INT/
 * QUIT stop, CG_DIRTY_ARBITER_EXIT_BOOT_ERROR as above). Called by the
 * master at start-up and again whenever the arbiter died. Logs "Spawned
 * dirty arbiter (pid: N) at PATH". Returns the child's pid, or -1 with err.
 * Needs the GIL. `hooks` is the master's hook table (the child uses its
 * copy). on_dirty_starting(arbiter) runs in the arbiter process
 * before it spawns workers, where gunicorn runs it. The arbiter exits by
 * itself when the master (its parent) goes away. */
pid_t cg_dirty_arbiter_spawn(struct cg_sup *sup, struct cg_conf *conf,
                             const struct cg_hook_table *hooks, struct cg_err *err);

/* Removes the socket directory (master, at exit). */
void cg_dirty_cleanup(void);

/* Closes this process's copy of the arbiter's listening socket: HTTP
 * workers call it after fork (they connect to the socket, never accept).
 * A no-op where there is none. */
void cg_dirty_close_listener(void);

#endif
