/* wsgi.input: a C file-like object over a request body that is read from the
 * connection on demand (never buffered whole unless the app reads it all). */
#ifndef CG_PY_INPUT_H
#define CG_PY_INPUT_H

#include <Python.h>
#include <sys/types.h>

#include "cg_err.h"

/* Where the decoded body bytes come from. read() fills up to n bytes of
 * decoded body and returns the count, 0 at the end of the body, or -1 with
 * err set (client went away, malformed chunking, timeout). It is called
 * without the GIL and may block. */
struct cg_body_src {
    ssize_t (*read)(void *ctx, char *buf, size_t n, struct cg_err *err);
    void *ctx;
    /* Or NULL: read() limited to what needs no I/O (bytes already
     * buffered), called first with the GIL held, so a body that came with
     * its head costs no GIL hand-off; CG_BODY_AGAIN when read() must wait. */
    ssize_t (*read_buffered)(void *ctx, char *buf, size_t n, struct cg_err *err);
};

#define CG_BODY_AGAIN (-2)

/* Registers the type (once per process). Returns 0 or -1 with a Python
 * exception set. */
int cg_py_input_ready(void);

/* A new wsgi.input object reading from `src` (copied; src.ctx must stay valid
 * until cg_py_input_detach). New reference, or NULL with an exception set. */
PyObject *cg_py_input_new(const struct cg_body_src *src);

/* Cuts the object off its source once the request is over: later reads
 * return b"" (an app that kept a reference cannot touch freed memory). */
void cg_py_input_detach(PyObject *input);

#endif
