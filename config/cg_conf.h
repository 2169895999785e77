/* The resolved configuration. Every field is named after its gunicorn
 * setting; config/cg_conf_table.c (the settings table) is the single source
 * of names, flags, types and defaults, and drives the CLI, the config file,
 * GUNICORN_CMD_ARGS, --print-config, --check-config and docs/settings.md.
 *
 * Field types by setting type:
 *   int -> int (or long where gunicorn allows large values), float -> double,
 *   bool -> bool, string -> char * (NULL for None; owned by the conf),
 *   list of strings -> struct cg_strlist, dict -> PyObject * (a dict; owned),
 *   callable (hooks, and settings whose value may be a callable/object)
 *   -> PyObject * (owned; NULL for the default no-op).
 *
 * This header is owned by the config subsystem; see cg_conf_table.c. */
#ifndef CG_CONF_H
#define CG_CONF_H

#include "cg_conf_struct.h"
#include "cg_err.h"

#endif
