/* The one signal table: for each signal its name and, per role (master,
 * HTTP worker, dirty arbiter, dirty worker), how it is handled and what it
 * does. cg_sig_open_role() installs the handlers from it; cg_sig_name()
 * reads names from it; docs/deployment.md's signal table says the same
 * (tests/integration/test_signal_table.py compares them). Part of the base
 * layer (core/). */
#ifndef CG_SIG_TABLE_H
#define CG_SIG_TABLE_H

#include <stddef.h>

#include "cg_err.h"
#include "cg_proc.h"

#define CG_SIG_ROLES 4 /* the values of enum cg_role */

enum cg_sig_how {
    CG_SIG_DEFAULT = 0, /* not handled: the kernel's default action */
    CG_SIG_RECORD,      /* the self-pipe handler records it; the role's loop acts */
    CG_SIG_PYTHON,      /* a Python-level handler (the HTTP worker's QUIT, INT, ABRT,
                         * installed by cg_py_hooks_worker_boot) */
    CG_SIG_IGNORE,      /* SIG_IGN */
};

struct cg_sig_action {
    enum cg_sig_how how;
    const char *does; /* what the role does, as docs/deployment.md says it; NULL: nothing */
};

struct cg_sig_row {
    int signo;
    const char *name; /* without the SIG prefix */
    struct cg_sig_action role[CG_SIG_ROLES];
};

/* The rows, and how many. */
extern const struct cg_sig_row cg_sig_table[];
extern const size_t cg_sig_table_len;

/* The row of `signo`, or NULL. */
const struct cg_sig_row *cg_sig_row(int signo);

/* Opens the self-pipe and installs the recording handler for every signal
 * the table marks CG_SIG_RECORD for `role`, and SIG_IGN for CG_SIG_IGNORE
 * (cg_sig_open). Returns 0, or -1 with err. */
int cg_sig_open_role(enum cg_role role, struct cg_err *err);

#endif
