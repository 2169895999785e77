/* Which loop runs each worker class: the server's half of the worker class
 * table (config/cg_conf_worker_class.c holds the names, aliases and traits;
 * config/ cannot name server functions). A unit test checks that every row
 * of that table has an entry here. */
#ifndef CG_WORKER_CLASS_H
#define CG_WORKER_CLASS_H

struct cg_worker;

/* A worker class's loop: runs in the booted worker until it stops; returns
 * the process's exit code (0, or one the master understands). */
typedef int (*cg_worker_class_run_fn)(struct cg_worker *w);

/* The loop of the worker class named `name` (a row name of the worker class
 * table, as conf->worker_class holds it), or NULL when there is none. */
cg_worker_class_run_fn cg_worker_class_entry(const char *name);

/* What the class runs after post_fork and before the app is loaded (gevent:
 * monkey-patching), or NULL. Returns 0 to go on, else the exit code. */
cg_worker_class_run_fn cg_worker_class_prepare(const char *name);

#endif
