/* The control socket (gunicorn 27's, answered for `gunicornc`): a Unix
 * stream socket the master serves from its own poll loop. Frames are a
 * 4-byte big-endian length and a JSON object ({"id", "command", "args"} in,
 * {"id", "status": "ok", "data"} or {"id", "status": "error", "error"} out).
 * Everything is non-blocking with bounded per-client buffers, so a slow or
 * silent client costs the master nothing but a slot; a peer whose uid is not
 * the master's is closed at once (SO_PEERCRED), whatever the socket's mode.
 * The commands themselves are in cg_control_cmd.c.
 *
 * Master process only, its loop thread, GIL held (commands may run hooks). */
#ifndef CG_CONTROL_H
#define CG_CONTROL_H

#include <poll.h>
#include <stddef.h>

#include "cg_err.h"

struct cg_master;

/* The most poll entries cg_control_pollfds() fills: the listener and its clients. */
#define CG_CONTROL_MAX_CLIENTS 16
#define CG_CONTROL_MAX_POLLFDS (1 + CG_CONTROL_MAX_CLIENTS)

/* Opens the socket of `m->conf` (control_socket, control_socket_mode)
 * unless control_socket_disable: a relative path is taken from the current
 * directory, a missing parent directory is made (0700), a stale socket is
 * replaced. Logs "Control socket listening at PATH". A failure is logged as
 * a warning (gunicorn's "Failed to start control socket: ...") and the
 * server runs without one. Its descriptors are closed in every forked child. */
void cg_control_open(struct cg_master *m);

/* Fills `pfd` (room for CG_CONTROL_MAX_POLLFDS) with the descriptors to
 * poll; returns how many (0 when no socket is open). */
size_t cg_control_pollfds(struct pollfd *pfd);

/* Services what poll() reported on the `n` entries cg_control_pollfds()
 * filled: accepts, reads, runs complete commands, writes replies, drops
 * idle (300 s) or misbehaving clients. Never blocks. */
void cg_control_service(struct cg_master *m, const struct pollfd *pfd, size_t n);

/* HUP: follows m->conf's (new) control_socket, control_socket_mode and
 * control_socket_disable: closes the socket when disabled, opens it when
 * enabled, binds a new path before closing the old one (its file
 * unlinked; connected clients stay), applies a new mode. A path that
 * cannot be bound (or a mode that cannot be set) is logged, naming the
 * setting and the value kept, and returns -1: the old socket serves on, and
 * the caller puts the old values back into the running conf. */
int cg_control_reconfigure(struct cg_master *m);

/* A USR2 partner master exited: if it had taken our path (the new master
 * binds it again, as upstream's does), binds it again so that `gunicornc`
 * reaches the master left running (a rolled-back upgrade). */
void cg_control_reclaim(struct cg_master *m);

/* Closes the socket and its clients and unlinks the path when it is still
 * the socket this process bound (a USR2 master may have replaced it). */
void cg_control_close(void);

#endif
