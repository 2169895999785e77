/* The configuration API. struct cg_conf (cg_conf_struct.h) holds one field per
 * gunicorn setting, named as the setting; config/cg_conf_table.c (the settings
 * table) is the single source of names, CLI flags, types, defaults and
 * validators, and drives the CLI, the config file, GUNICORN_CMD_ARGS,
 * --print-config, --check-config and docs/settings.md.
 *
 * Field types by setting type:
 *   int -> int (or long where gunicorn allows large values), float -> double,
 *   bool -> bool, string -> char * (NULL for None; owned by the conf),
 *   list of strings -> struct cg_strlist; dict and callable (hooks): no
 *   field, the validated value is in conf->values only (the server's hook
 *   table takes the hooks from there, see cg_conf_struct.h).
 *
 * Everything here runs in the master, with the GIL held. */
#ifndef CG_CONF_H
#define CG_CONF_H

#include <Python.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "cg_conf_struct.h"
#include "cg_err.h"

/* Sections, in the order of gunicorn's settings reference. */
enum cg_conf_section {
    CG_SECTION_CONFIG_FILE,
    CG_SECTION_DEBUGGING,
    CG_SECTION_HOOKS,
    CG_SECTION_DIRTY_HOOKS,
    CG_SECTION_LOGGING,
    CG_SECTION_PROCESS_NAMING,
    CG_SECTION_SSL,
    CG_SECTION_SECURITY,
    CG_SECTION_SERVER_MECHANICS,
    CG_SECTION_SERVER_SOCKET,
    CG_SECTION_WORKER,
    CG_SECTION_HTTP2,
    CG_SECTION_DIRTY,
    CG_SECTION_CONTROL,
    CG_SECTION_COUNT,
};

/* How the struct field stores the validated value. */
enum cg_conf_type {
    CG_CONF_INT,     /* int field; Python int */
    CG_CONF_LONG,    /* long field; Python int */
    CG_CONF_BOOL,    /* bool field; True/False (None reads as false) */
    CG_CONF_STR,     /* char * field; str or None */
    CG_CONF_STRLIST, /* struct cg_strlist field; list of str */
    CG_CONF_DICT,    /* no field (conf->values only); dict */
    CG_CONF_HOOK,    /* no field (conf->values only); callable, None at default */
    CG_CONF_CLASS,   /* char * field; str, or a class stored as "module.Name" */
    CG_CONF_ADDR,    /* char * field; validated (host, port) / path, stored as text */
};

/* What the command-line flag does (gunicorn's argparse actions). */
enum cg_conf_action {
    CG_ACT_NONE,     /* no command-line flag: config file only */
    CG_ACT_STORE,    /* takes a string */
    CG_ACT_INT,      /* takes an integer (base 10, as argparse's int) */
    CG_ACT_AUTOINT,  /* takes an integer; 0o.., 0x.. and a leading 0 mean octal */
    CG_ACT_TRUE,     /* flag sets True */
    CG_ACT_CONST,    /* flag stores .cli_const (e.g. --no-sendfile stores False) */
    CG_ACT_APPEND,   /* repeatable; each use appends a string */
    CG_ACT_OPTIONAL, /* optional argument; bare flag stores .cli_const */
};

/* Row flags. */
#define CG_CONF_IMPLEMENTED 0x1u /* the server honours this setting */
#define CG_CONF_EXTENSION 0x2u   /* cgunicorn-only, not a gunicorn setting */
#define CG_CONF_INTERNAL 0x4u    /* a mode switch (print/check config): never warned */

struct cg_conf_setting;

/* A validator: takes the raw value (str from the command line or default, any
 * object from a config file; borrowed) and returns the value gunicorn would
 * hold after validation (new reference), or NULL with err naming what is
 * expected (no Python exception left pending). Needs the GIL. */
typedef PyObject *(*cg_conf_check_fn)(const struct cg_conf_setting *s, PyObject *val,
                                      struct cg_err *err);

/* A default computed at run time (environment, cwd, uid), written to buf as
 * typed on the command line. Returns buf, or NULL for None. */
typedef const char *(*cg_conf_default_fn)(char *buf, size_t n);

struct cg_conf_setting {
    const char *name;
    const char *cli[3];  /* flags, short first; NULL-terminated */
    const char *meta;    /* argument name in --help, e.g. "INT" */
    enum cg_conf_section section;
    enum cg_conf_type type;
    enum cg_conf_action action;
    const char *cli_const; /* value stored by CG_ACT_CONST / bare CG_ACT_OPTIONAL */
    const char *dflt;      /* as typed on the command line (NULL = None); for dict
                              settings a Python literal */
    cg_conf_default_fn dflt_fn; /* when the default depends on the environment */
    const char *dflt_doc;       /* how the docs spell a computed default */
    cg_conf_check_fn check;
    int arity;                  /* hooks: positional arguments expected */
    const char *hook_class;     /* hooks: gunicorn's Setting class, whose method is
                                   the default (--print-config shows <Cls.name()>) */
    size_t offset;              /* into struct cg_conf; unused (0) for the rows
                                   without a field (cg_conf_setting_has_field) */
    unsigned flags;
    const char *help;
    void (*doc_more)(FILE *out); /* more for docs/settings.md after the help (worker_class:
                                    the worker class table), or NULL */
};

extern const struct cg_conf_setting cg_conf_settings[];
extern const size_t cg_conf_settings_count;

/* The row named `name`, or NULL. */
const struct cg_conf_setting *cg_conf_setting_find(const char *name);

/* Whether row s has a field in struct cg_conf (dict and hook rows do not:
 * their value is in conf->values only). */
bool cg_conf_setting_has_field(const struct cg_conf_setting *s);

/* The section's title as in gunicorn's docs ("Server Socket", ...). */
const char *cg_conf_section_name(enum cg_conf_section s);

/* What cg_conf_load asks main to do. */
enum cg_conf_mode {
    CG_CONF_RUN,            /* start the server */
    CG_CONF_HELP,           /* print --help and exit 0 (already printed) */
    CG_CONF_VERSION,        /* print the version and exit 0 (already printed) */
    CG_CONF_SETTINGS_DOC,   /* docs/settings.md was printed; exit 0 */
};

/* The version comes from the VERSION file, through configure (CG_VERSION). */
#define CG_CONF_VERSION_STRING CG_VERSION
#define CG_CONF_GUNICORN_VERSION "27.0.1"

/* Resolves the configuration as gunicorn does: defaults < config file
 * (-c, else ./gunicorn.conf.py when present; "python:module" imports a module)
 * < GUNICORN_CMD_ARGS < command line; chdir and sys.path[0] as gunicorn.
 * Fills `conf` (zeroed first; free with cg_conf_free even on failure).
 * Returns 0, or -1 with err set and *exit_code the code gunicorn exits with
 * (2 for command-line syntax errors, 1 otherwise). Messages that gunicorn
 * prints before its "Error:" line (usage, tracebacks) are already on stderr.
 * Needs the GIL. */
int cg_conf_load(struct cg_conf *conf, int argc, char **argv, enum cg_conf_mode *mode,
                 int *exit_code, struct cg_err *err);

/* Releases everything the conf owns and zeroes it. NULL is a no-op. */
void cg_conf_free(struct cg_conf *conf);

/* Prints the resolved settings as `gunicorn --print-config` does. */
void cg_conf_print(const struct cg_conf *conf, FILE *out);

/* Logs one warning per setting that differs from its default while its row
 * lacks CG_CONF_IMPLEMENTED. Returns the number of warnings. Call once the
 * error log is open (the master, at start-up). */
int cg_conf_warn_unimplemented(const struct cg_conf *conf);

/* Applies raw_env to os.environ (KEY=VALUE each), as gunicorn's arbiter does.
 * Returns 0, or -1 with err naming the malformed entry. */
int cg_conf_apply_env(const struct cg_conf *conf, struct cg_err *err);

/* Prepends each comma-separated pythonpath entry (absolute) to sys.path. */
int cg_conf_apply_pythonpath(const struct cg_conf *conf, struct cg_err *err);

/* Validates every bind address (HOST:PORT, [IPv6]:PORT, unix:PATH, fd://N).
 * Returns 0, or -1 with err naming the bad address. */
int cg_conf_check_binds(const struct cg_conf *conf, struct cg_err *err);

#endif
