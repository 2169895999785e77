/* Declarations shared inside the config subsystem (not for other subsystems). */
#ifndef CG_CONF_INT_H
#define CG_CONF_INT_H

#include <stdarg.h>
#include <stdio.h>

#include "cg_conf.h"

/* --- validators (cg_conf_check.c); see cg_conf_check_fn --- */
#define CG_CONF_CHECKS(X)                                                                    \
    X(string) X(bool) X(dict) X(pos_int) X(as_is) X(ssl_version) X(str_list)                 \
    X(files_or_patterns) X(comma_list) X(addr_list) X(class) X(post_request) X(user)         \
    X(group) X(chdir) X(statsd)                                                              \
    X(proxy_protocol) X(http2_cleartext) X(header_map) X(asgi_loop) X(asgi_lifespan)         \
    X(http_parser) X(reload_engine) X(http_protocols) X(hook) X(h2_window) X(h2_streams)     \
    X(h2_frame) X(payload_size) X(dirty_gpus)
#define CG_CONF_DECLARE_CHECK(n)                                                             \
    PyObject *cg_conf_check_##n(const struct cg_conf_setting *s, PyObject *v,               \
                                struct cg_err *err);
CG_CONF_CHECKS(CG_CONF_DECLARE_CHECK)
#undef CG_CONF_DECLARE_CHECK

/* The embedded helper module (borrowed), or NULL with err. */
PyObject *cg_conf_helpers(struct cg_err *err);

/* Calls a helper with Py_BuildValue-style arguments; new reference or NULL+err. */
PyObject *cg_conf_helper_call(const char *name, struct cg_err *err, const char *fmt, ...);

/* Sets err to the pending exception's message and clears it. */
void cg_conf_err_from_exc(struct cg_err *err);

/* --- command line (cg_conf_cli.c) --- */
struct cg_conf_opts {
    PyObject *values; /* owned dict: setting name -> value after argparse-style typing */
    PyObject *args;   /* owned list of positional arguments (str) */
    bool help;
    bool version;
    bool settings_doc;
};

/* Parses argv (argv[0] is skipped when skip_prog) into o (zeroed by the caller).
 * `source` names where the words came from in messages ("GUNICORN_CMD_ARGS").
 * Returns 0, or -1 with err (gunicorn exits 2 then). Needs the GIL. */
int cg_conf_cli_parse(struct cg_conf_opts *o, int argc, char **argv, const char *source,
                      struct cg_err *err);

/* Splits `s` as a POSIX shell would (shlex.split) and parses it. */
int cg_conf_cli_parse_string(struct cg_conf_opts *o, const char *s, const char *source,
                             struct cg_err *err);

void cg_conf_opts_deinit(struct cg_conf_opts *o);

/* The usage line, "usage: cgunicorn [OPTIONS] [APP_MODULE]". */
void cg_conf_print_usage(FILE *out);

/* --- values (cg_conf.c) --- */
/* Validates `raw` (borrowed) for row s and stores the result in `values`
 * (dict name -> value). Returns 0, or -1 with err "<value>: <reason>". */
int cg_conf_value_set(PyObject *values, const struct cg_conf_setting *s, PyObject *raw,
                      struct cg_err *err);

/* The default of row s as the raw value fed to its validator (new reference;
 * Py_None for None), or NULL with err. */
PyObject *cg_conf_default_raw(const struct cg_conf_setting *s, struct cg_err *err);

/* Converts a command-line word for row s (int(), auto_int, str); new reference
 * or NULL with err. */
PyObject *cg_conf_cli_value(const struct cg_conf_setting *s, const char *word,
                            struct cg_err *err);

/* --- config file (cg_conf_file.c) --- */
/* Loads "python:module", "file:PATH" or PATH and applies every module-level
 * name that matches a setting to `values`. Returns 0, or -1 with err (exit 1;
 * a traceback may already be on stderr). Needs the GIL. */
int cg_conf_file_load(PyObject *values, const char *location, struct cg_err *err);

/* --- output (cg_conf_print.c) --- */
void cg_conf_print_help(FILE *out);
void cg_conf_print_settings_doc(FILE *out);
/* The default as the docs show it ("2048", "None", "['127.0.0.1:8000']"). */
void cg_conf_format_default(const struct cg_conf_setting *s, char *buf, size_t n);

#endif
