/* Shared by the control socket's files: cg_control.c (socket, framing, peer
 * check) and cg_control_cmd.c (the commands, over the master's state). */
#ifndef CG_CONTROL_INT_H
#define CG_CONTROL_INT_H

#include <jansson.h>
#include <stdint.h>

struct cg_master;

/* Runs one command as gunicorn's ControlSocketServer._dispatch does: the
 * words of `command` (split on blanks) followed by `args` (strings or
 * numbers). Returns the reply's "data" object (new reference), or NULL with
 * the reply's "error" text in `err` ("Invalid argument: ...", "Empty
 * command"). Master loop, GIL held. */
json_t *cg_control_run(struct cg_master *m, const char *command, const json_t *args, char *err,
                       size_t errsize);

/* The dirty arbiter's status reply ("result": arbiter_pid, workers, ...)
 * asked over GUNICORN_DIRTY_SOCKET within `budget_ms`; NULL when there is
 * no arbiter or it did not answer in time. New reference. Master loop. */
json_t *cg_control_dirty_status(uint64_t budget_ms);

/* Sends the next TTIN/TTOU a "dirty add|remove N" still owes the dirty
 * arbiter (one per call). Called on every turn of the master's loop. */
void cg_control_cmd_tick(struct cg_master *m);

#endif
