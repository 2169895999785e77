/* Process identity: this process's role and pid, and its title in ps. Part
 * of the base layer (core/); the fork itself is server/cg_supervisor.c. */
#include <Python.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "cg_proc.h"

struct cg_proc cg_proc = { .role = CG_ROLE_MASTER, .pid = 0 };

static char *title_area;
static size_t title_len;
static PyObject *spt_set; /* setproctitle.setproctitle, when installed */

void cg_proc_init(int argc, char **argv)
{
    cg_proc.pid = getpid();
    if (argc > 0) {
        /* argv strings are contiguous; the title may use all of them. */
        title_area = argv[0];
        char *end = argv[argc - 1] + strlen(argv[argc - 1]);
        title_len = (size_t)(end - argv[0]);
    }
}

char **cg_proc_argv_copy(int argc, char **argv)
{
    char **copy = calloc((size_t)argc + 1, sizeof(char *));

    for (int i = 0; copy != NULL && i < argc; i++) {
        if ((copy[i] = strdup(argv[i])) == NULL) {
            copy = NULL; /* exits below; nothing to free for */
        }
    }
    if (copy == NULL) {
        fprintf(stderr, "cgunicorn: out of memory\n");
        exit(1);
    }
    return copy;
}

void cg_proc_init_title(void)
{
    PyObject *mod = PyImport_ImportModule("setproctitle");
    PyObject *title = mod != NULL ? PyObject_CallMethod(mod, "getproctitle", NULL) : NULL;

    if (title != NULL) {
        spt_set = PyObject_GetAttrString(mod, "setproctitle");
    }
    if (spt_set == NULL) {
        PyErr_Clear(); /* not installed (or broken): argv is overwritten instead */
    }
    Py_XDECREF(title);
    Py_XDECREF(mod);
}

void cg_proc_set_title(const char *fmt, ...)
{
    char buf[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    prctl(PR_SET_NAME, buf, 0, 0, 0);
    if (spt_set != NULL) {
        PyGILState_STATE g = PyGILState_Ensure();
        PyObject *r = PyObject_CallFunction(spt_set, "s", buf);
        if (r == NULL) {
            PyErr_Clear();
        }
        Py_XDECREF(r);
        PyGILState_Release(g);
        return;
    }
    if (title_area != NULL && title_len > 0) {
        size_t n = strlen(buf);
        if (n > title_len) {
            n = title_len;
        }
        memset(title_area, 0, title_len);
        memcpy(title_area, buf, n);
    }
}
