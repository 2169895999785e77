/* Entry point: start the interpreter, resolve the configuration, and hand
 * over to the master. The only file that calls exit(). */
#include <stdio.h>
#include <stdlib.h>

#include "cg_err.h"
#include "cg_log.h"
#include "cg_proc.h"
#include "cg_py.h"

int main(int argc, char **argv)
{
    struct cg_err err = { { 0 } };

    cg_proc_init(argc, argv);
    if (cg_py_init(argc, argv, &err) < 0) {
        fprintf(stderr, "Error: %s\n", err.msg);
        return 1;
    }
    PyRun_SimpleString("import sys, gunicorn; print(sys.prefix, sys.executable, gunicorn.__path__)");
    cg_py_fini();
    return 0;
}
