/* The server's hook table (see cg_py_hook_table.h): hook name -> field, and
 * filling it from the validated settings. A unit test checks that every hook
 * row of the settings table has exactly one field here. */
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "cg_py_hook_table.h"

#define ROW(n) { #n, offsetof(struct cg_hook_table, n) }

static const struct {
    const char *name;
    size_t offset;
} rows[] = {
    ROW(on_starting),      ROW(on_reload),         ROW(when_ready),        ROW(pre_fork),
    ROW(post_fork),        ROW(post_worker_init),  ROW(worker_int),        ROW(worker_abort),
    ROW(pre_exec),         ROW(pre_request),       ROW(post_request),      ROW(child_exit),
    ROW(worker_exit),      ROW(nworkers_changed),  ROW(on_exit),           ROW(ssl_context),
    ROW(on_dirty_starting), ROW(dirty_post_fork),  ROW(dirty_worker_init), ROW(dirty_worker_exit),
};

#undef ROW

static PyObject **slot(struct cg_hook_table *t, size_t i)
{
    return (PyObject **)((char *)t + rows[i].offset);
}

void cg_py_hook_table_load(struct cg_hook_table *t, PyObject *values)
{
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        PyObject *v = values != NULL && PyDict_Check(values)
                          ? PyDict_GetItemString(values, rows[i].name) /* borrowed */
                          : NULL;
        PyObject *old = *slot(t, i);
        *slot(t, i) = v != NULL && v != Py_None ? Py_NewRef(v) : NULL;
        Py_XDECREF(old); /* after the store: a __del__ may run Python code */
    }
}

void cg_py_hook_table_clear(struct cg_hook_table *t)
{
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        Py_CLEAR(*slot(t, i));
    }
}

PyObject *cg_py_hook_table_get(const struct cg_hook_table *t, const char *name, bool *found)
{
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        if (strcmp(rows[i].name, name) == 0) {
            if (found != NULL) {
                *found = true;
            }
            return *(PyObject *const *)((const char *)t + rows[i].offset);
        }
    }
    if (found != NULL) {
        *found = false;
    }
    return NULL;
}

size_t cg_py_hook_table_size(void)
{
    return sizeof(rows) / sizeof(rows[0]);
}
