/* Unit tests for the server's hook table (server/embed/cg_py_hook_table.c): one
 * field per hook row of the settings table, filled from the validated
 * values. */
#include "cg_test.h"

#include "cg_conf.h"
#include "cg_py.h"
#include "cg_py_hook_table.h"

/* Every CG_CONF_HOOK row of the settings table has its own field, and the
 * table has no hook the settings table lacks. */
static void test_covers_every_hook_row(void)
{
    struct cg_hook_table t = { 0 };
    PyObject *values = PyDict_New();
    PyObject *marks[64] = { 0 }; /* one distinct object per hook row */
    size_t nhooks = 0;

    for (size_t i = 0; values != NULL && i < cg_conf_settings_count; i++) {
        const struct cg_conf_setting *s = &cg_conf_settings[i];
        if (s->type != CG_CONF_HOOK || nhooks >= sizeof(marks) / sizeof(marks[0])) {
            continue;
        }
        marks[nhooks] = PyUnicode_FromString(s->name);
        CG_CHECK(marks[nhooks] != NULL);
        CG_CHECK(PyDict_SetItemString(values, s->name, marks[nhooks]) == 0);
        nhooks++;
    }
    CG_CHECK(nhooks > 0);
    CG_CHECK_INT(cg_py_hook_table_size(), nhooks);
    cg_py_hook_table_load(&t, values);
    nhooks = 0;
    for (size_t i = 0; i < cg_conf_settings_count; i++) {
        const struct cg_conf_setting *s = &cg_conf_settings[i];
        bool found = false;
        if (s->type != CG_CONF_HOOK) {
            CG_CHECK(cg_py_hook_table_get(&t, s->name, &found) == NULL && !found);
            continue;
        }
        CG_CHECK(cg_py_hook_table_get(&t, s->name, &found) == marks[nhooks]);
        CG_CHECK(found);
        nhooks++;
    }
    CG_CHECK(t.post_fork == PyDict_GetItemString(values, "post_fork"));
    CG_CHECK(t.dirty_worker_exit == PyDict_GetItemString(values, "dirty_worker_exit"));
    cg_py_hook_table_clear(&t);
    CG_CHECK(t.on_starting == NULL && t.dirty_worker_exit == NULL);
    for (size_t i = 0; i < nhooks; i++) {
        Py_XDECREF(marks[i]);
    }
    Py_XDECREF(values);
    CG_CHECK(!PyErr_Occurred());
}

/* None (a hook left at gunicorn's default) and a missing name are NULL. */
static void test_default_is_null(void)
{
    struct cg_hook_table t = { 0 };
    PyObject *values = Py_BuildValue("{s:O,s:O}", "post_fork", Py_None, "pre_fork", Py_None);
    bool found = false;

    CG_CHECK(values != NULL);
    t.on_exit = Py_NewRef(Py_True); /* replaced by the load */
    cg_py_hook_table_load(&t, values);
    CG_CHECK(cg_py_hook_table_get(&t, "post_fork", &found) == NULL && found);
    CG_CHECK(cg_py_hook_table_get(&t, "pre_fork", &found) == NULL && found);
    CG_CHECK(t.on_exit == NULL);
    CG_CHECK(cg_py_hook_table_get(&t, "workers", &found) == NULL && !found);
    CG_CHECK(cg_py_hook_table_get(&t, "no_such_hook", NULL) == NULL);
    cg_py_hook_table_clear(&t);
    Py_XDECREF(values);
}

int main(int argc, char **argv)
{
    struct cg_err err = { { 0 } };
    static const struct cg_test_case cases[] = {
        CG_TEST(test_covers_every_hook_row),
        CG_TEST(test_default_is_null),
    };
    if (cg_py_init(argc, argv, &err) < 0) {
        fprintf(stderr, "cg_py_init: %s\n", err.msg);
        return 1;
    }
    return cg_test_run(cases, sizeof(cases) / sizeof(cases[0]));
}
