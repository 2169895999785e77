/* Signals: handlers only record (flag + one byte on a self-pipe); each
 * process's loop reads the pipe and acts on the flags. */
#ifndef CG_SIG_H
#define CG_SIG_H

#include <signal.h>
#include <stdbool.h>

#include "cg_err.h"

/* Creates this process's self-pipe (O_NONBLOCK|O_CLOEXEC) and installs the
 * recording handler for each signal in `signals` (0-terminated). SIGPIPE is
 * ignored. Returns 0, or -1 with err. The server's processes call
 * cg_sig_open_role() (cg_sig_table.h), which takes the list from the
 * signal table. */
int cg_sig_open(const int *signals, struct cg_err *err);

/* The self-pipe's read end, to watch in the event loop / poll set. */
int cg_sig_fd(void);

/* Empties the self-pipe (call when it is readable). */
void cg_sig_drain(void);

/* Returns true once per delivery batch of `signo` and clears its flag. */
bool cg_sig_take(int signo);

/* How many times `signo` arrived since it was last taken (0 if not), and
 * clears it: for signals whose every delivery counts (TTIN, TTOU). */
int cg_sig_take_count(int signo);

/* True when some signal arrived and was not taken yet: a loop that waits on
 * the self-pipe checks it first, since a wait elsewhere (cg_sup_wait) may
 * have emptied the pipe while leaving the flags for it. */
bool cg_sig_any_pending(void);

/* Child side of fork: default handlers for every signal we handled, empty
 * mask, the parent's self-pipe closed, flags cleared. */
void cg_sig_reset_child(void);

/* Short name of a signal without the SIG prefix ("TERM"), or "?"; from the
 * signal table (cg_sig_table.c). */
const char *cg_sig_name(int signo);

#endif
