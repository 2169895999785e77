/* Shared by the control socket's files: cg_control.c (socket, framing, peer
 * check) and cg_control_cmd.c (the commands, over the master's state). */
#ifndef CG_CONTROL_INT_H
#define CG_CONTROL_INT_H

#include <jansson.h>

struct cg_master;

/* Runs one command as gunicorn's ControlSocketServer._dispatch does: the
 * words of `command` (split on blanks) followed by `args` (strings or
 * numbers). Returns the reply's "data" object (new reference), or NULL with
 * the reply's "error" text in `err` ("Invalid argument: ...", "Empty
 * command"). Master loop, GIL held. */
json_t *cg_control_run(struct cg_master *m, const char *command, const json_t *args, char *err,
                       size_t errsize);

/* Sends the next TTIN/TTOU a "dirty add|remove N" still owes the dirty
 * arbiter (one per call). Called on every turn of the master's loop. */
void cg_control_cmd_tick(struct cg_master *m);

#endif
