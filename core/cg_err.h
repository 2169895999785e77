/* struct cg_err: the one error-report carrier. The lowest level that fails
 * fills it; the level that knows the context prefixes it and reports once. */
#ifndef CG_ERR_H
#define CG_ERR_H

#include <stddef.h>

struct cg_err {
    char msg[2048];
};

/* Sets err->msg (printf-style). err may be NULL. */
void cg_err_set(struct cg_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Puts "<context>: " in front of the message already in err. err may be NULL. */
void cg_err_prefix(struct cg_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Sets err->msg from the pending Python exception ("TypeError: ..."), clears
 * it, and returns -1. Needs the GIL. */
int cg_err_from_python(struct cg_err *err);

#endif
