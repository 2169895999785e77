/* The server's hook table: the callables the user set for gunicorn's server
 * hooks (on_starting ... on_exit, ssl_context) and the dirty arbiter hooks
 * (on_dirty_starting ... dirty_worker_exit), one field per hook row of the
 * settings table (config/cg_conf_table.c, type CG_CONF_HOOK). The settings
 * struct holds no hooks: this table takes them from the validated values
 * (conf->values) when the configuration is loaded and again on reload.
 *
 * A field is NULL when the hook is left at gunicorn's default; the call
 * site then does what the default does. Fields are owned references.
 * Everything here needs the GIL. */
#ifndef CG_PY_HOOK_TABLE_H
#define CG_PY_HOOK_TABLE_H

#include <Python.h>
#include <stdbool.h>
#include <stddef.h>

struct cg_hook_table {
    /* Server Hooks */
    PyObject *on_starting;
    PyObject *on_reload;
    PyObject *when_ready;
    PyObject *pre_fork;
    PyObject *post_fork;
    PyObject *post_worker_init;
    PyObject *worker_int;
    PyObject *worker_abort;
    PyObject *pre_exec;
    PyObject *pre_request;
    PyObject *post_request; /* already adapted to arity 4, as gunicorn does */
    PyObject *child_exit;
    PyObject *worker_exit;
    PyObject *nworkers_changed;
    PyObject *on_exit;
    PyObject *ssl_context;

    /* Dirty Arbiter Hooks */
    PyObject *on_dirty_starting;
    PyObject *dirty_post_fork;
    PyObject *dirty_worker_init;
    PyObject *dirty_worker_exit;
};

/* Replaces every field with values[name] (None or missing: NULL). `values`
 * is the dict of validated settings (borrowed). Cannot fail. */
void cg_py_hook_table_load(struct cg_hook_table *t, PyObject *values);

/* Releases every field and sets it to NULL. */
void cg_py_hook_table_clear(struct cg_hook_table *t);

/* The field for hook `name` (borrowed; NULL when left at the default), or
 * NULL when `name` is not a hook. *found says which (may be NULL). */
PyObject *cg_py_hook_table_get(const struct cg_hook_table *t, const char *name, bool *found);

/* How many hooks the table has (one per CG_CONF_HOOK row). */
size_t cg_py_hook_table_size(void);

#endif
