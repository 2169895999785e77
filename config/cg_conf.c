/* Resolving the configuration: defaults, config file, GUNICORN_CMD_ARGS and the
 * command line applied in gunicorn's order; the validated values kept in a dict
 * (what gunicorn's cfg holds) and copied into struct cg_conf; the derived
 * fields (worker_class, sendfile, app_uri); free; start-up warnings. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#ifndef CG_VERSION
#error "CG_VERSION is defined by the build (VERSION, via configure and the Makefile)"
#endif

#include "cg_conf_int.h"
#include "cg_conf_worker_class.h"
#include "cg_log.h"

PyObject *cg_conf_default_raw(const struct cg_conf_setting *s, struct cg_err *err)
{
    char buf[4096];
    const char *d = s->dflt_fn != NULL ? s->dflt_fn(buf, sizeof(buf)) : s->dflt;

    if (d == NULL) {
        return Py_NewRef(Py_None);
    }
    if (s->type == CG_CONF_DICT) {
        return cg_conf_helper_call("literal", err, "(s)", d);
    }
    if (s->action == CG_ACT_INT || s->action == CG_ACT_AUTOINT) {
        return cg_conf_cli_value(s, d, err);
    }
    return PyUnicode_FromString(d);
}

int cg_conf_value_set(PyObject *values, const struct cg_conf_setting *s, PyObject *raw,
                      struct cg_err *err)
{
    PyObject *v = s->check(s, raw, err);
    int rc;

    if (v == NULL) {
        return -1;
    }
    rc = PyDict_SetItemString(values, s->name, v);
    Py_DECREF(v);
    if (rc < 0) {
        cg_conf_err_from_exc(err);
    }
    return rc;
}

bool cg_conf_setting_has_field(const struct cg_conf_setting *s)
{
    return s->type != CG_CONF_DICT && s->type != CG_CONF_HOOK;
}

static void *field(struct cg_conf *conf, const struct cg_conf_setting *s)
{
    return (char *)conf + s->offset;
}

static void strlist_free(struct cg_strlist *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i]);
    }
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static char *xstrdup(const char *s, struct cg_err *err)
{
    char *d = strdup(s);
    if (d == NULL) {
        cg_err_set(err, "out of memory");
    }
    return d;
}

/* Copies a list of str (anything else: empty) into l. */
static int store_strlist(struct cg_strlist *l, PyObject *v, struct cg_err *err)
{
    Py_ssize_t n = PyList_Check(v) ? PyList_GET_SIZE(v) : 0;

    strlist_free(l);
    l->v = calloc((size_t)n + 1, sizeof(char *));
    if (l->v == NULL) {
        cg_err_set(err, "out of memory");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *it = PyList_GET_ITEM(v, i); /* borrowed */
        const char *u = PyUnicode_Check(it) ? PyUnicode_AsUTF8(it) : "";
        if (u == NULL) {
            cg_conf_err_from_exc(err);
            return -1;
        }
        if ((l->v[l->n] = xstrdup(u, err)) == NULL) {
            return -1;
        }
        l->n++;
    }
    return 0;
}

/* Copies one validated value into its struct field. */
static int store_field(struct cg_conf *conf, const struct cg_conf_setting *s, PyObject *v,
                       struct cg_err *err)
{
    void *f = field(conf, s);
    PyObject *tmp = NULL;
    int rc = -1;

    switch (s->type) {
    case CG_CONF_INT:
    case CG_CONF_LONG: {
        long long x;
        int overflow = 0;
        tmp = PyLong_Check(v) ? Py_NewRef(v) : PyNumber_Long(v);
        if (tmp == NULL) {
            PyErr_Clear();
            tmp = PyUnicode_Check(v) ? PyLong_FromUnicodeObject(v, 0) : NULL;
        }
        if (tmp == NULL) {
            PyErr_Clear();
            cg_err_set(err, "%s: expected an integer", s->name);
            goto cleanup;
        }
        x = PyLong_AsLongLongAndOverflow(tmp, &overflow);
        if (overflow || (s->type == CG_CONF_INT && (x > 2147483647LL || x < -2147483647LL))) {
            cg_err_set(err, "%s: value is too large", s->name);
            goto cleanup;
        }
        if (s->type == CG_CONF_INT) {
            *(int *)f = (int)x;
        } else {
            *(long *)f = (long)x;
        }
        break;
    }
    case CG_CONF_BOOL:
        *(bool *)f = v != Py_None && PyObject_IsTrue(v) == 1;
        break;
    case CG_CONF_STR:
    case CG_CONF_CLASS:
    case CG_CONF_ADDR: {
        char **sp = f;
        free(*sp);
        *sp = NULL;
        if (v == Py_None) {
            break;
        }
        if (PyUnicode_Check(v)) {
            tmp = Py_NewRef(v);
        } else if (PyType_Check(v)) { /* a class given as an object */
            PyObject *m = PyObject_GetAttrString(v, "__module__");
            PyObject *q = m != NULL ? PyObject_GetAttrString(v, "__qualname__") : NULL;
            tmp = q != NULL ? PyUnicode_FromFormat("%S.%S", m, q) : NULL;
            Py_XDECREF(m);
            Py_XDECREF(q);
        } else if (PyTuple_Check(v) && PyTuple_GET_SIZE(v) == 2) { /* (host, port) */
            PyObject *host = PyTuple_GET_ITEM(v, 0);
            int v6 = PyUnicode_Check(host) ? PyUnicode_FindChar(host, ':', 0,
                                                                PyUnicode_GET_LENGTH(host), 1)
                                             >= 0
                                           : 0;
            tmp = PyUnicode_FromFormat(v6 ? "[%S]:%S" : "%S:%S", host, PyTuple_GET_ITEM(v, 1));
        } else {
            tmp = PyObject_Str(v);
        }
        if (tmp == NULL || (*sp = xstrdup(PyUnicode_AsUTF8(tmp), err)) == NULL) {
            goto py_or_mem;
        }
        break;
    }
    case CG_CONF_STRLIST:
        if (store_strlist(f, v, err) < 0) {
            goto cleanup;
        }
        break;
    case CG_CONF_DICT:
    case CG_CONF_HOOK:
        break; /* no field: the value stays in conf->values */
    }
    rc = 0;
    goto cleanup;
py_or_mem:
    if (PyErr_Occurred()) {
        cg_conf_err_from_exc(err);
    }
cleanup:
    Py_XDECREF(tmp);
    return rc;
}

/* Fills every field from conf->values. */
static int store_all(struct cg_conf *conf, struct cg_err *err)
{
    for (size_t i = 0; i < cg_conf_settings_count; i++) {
        const struct cg_conf_setting *s = &cg_conf_settings[i];
        PyObject *v = PyDict_GetItemString(conf->values, s->name); /* borrowed */
        if (v != NULL && store_field(conf, s, v, err) < 0) {
            return -1;
        }
    }
    return 0;
}

/* A worker class named by import path: cgunicorn.workerclass imports it and
 * says which native worker serves it, with the settings its CONFIG_KWARGS
 * carry (applied over every other source, as the Uvicorn worker does) and the
 * lines the master logs once. Returns the native class's row, or NULL with
 * err set. */
static const struct cg_conf_worker_class *resolve_imported_class(struct cg_conf *conf,
                                                                 struct cg_err *err)
{
    PyObject *raw = PyDict_GetItemString(conf->values, "worker_class"); /* borrowed */
    PyObject *pp = PyDict_GetItemString(conf->values, "pythonpath");    /* borrowed */
    PyObject *mod = PyImport_ImportModule("cgunicorn.workerclass");
    PyObject *r = mod != NULL ? PyObject_CallMethod(mod, "resolve", "(OO)", raw ? raw : Py_None,
                                                    pp ? pp : Py_None)
                              : NULL;
    PyObject *key, *val;
    Py_ssize_t pos = 0;
    const struct cg_conf_worker_class *as = NULL;

    Py_XDECREF(mod);
    if (r == NULL) {
        cg_conf_err_from_exc(err);
        return NULL;
    }
    PyObject *settings = PyTuple_GET_ITEM(r, 1), *notes = PyTuple_GET_ITEM(r, 2);
    while (PyDict_Next(settings, &pos, &key, &val)) {
        const struct cg_conf_setting *s = cg_conf_setting_find(PyUnicode_AsUTF8(key));
        if (s == NULL || cg_conf_value_set(conf->values, s, val, err) < 0 ||
            store_field(conf, s, PyDict_GetItemString(conf->values, s->name), err) < 0) {
            if (s == NULL) {
                cg_err_set(err, "worker_class: no setting %s", PyUnicode_AsUTF8(key));
            }
            cg_err_prefix(err, "worker_class %s (from its CONFIG_KWARGS)",
                          conf->worker_class);
            goto done;
        }
    }
    if (store_strlist(&conf->worker_class_notes, notes, err) < 0) {
        goto done;
    }
    conf->root_path_in_path = PyObject_IsTrue(PyTuple_GET_ITEM(r, 3)) == 1;
    as = cg_conf_worker_class_named(PyUnicode_AsUTF8(PyTuple_GET_ITEM(r, 0)));
    if (as == NULL) { /* cgunicorn.workerclass names only rows of the table */
        cg_err_set(err, "worker_class %s: served by '%s', which is not a worker class",
                   conf->worker_class, PyUnicode_AsUTF8(PyTuple_GET_ITEM(r, 0)));
    }
done:
    Py_DECREF(r);
    return as;
}

/* A worker class that needs a package (gevent) ends start-up here, naming
 * the pip command, when this Python cannot find it. The master only looks
 * the package up (importlib.util.find_spec); the workers import it. */
static int check_requires(const struct cg_conf_worker_class *wc, const char *raw,
                          struct cg_err *err)
{
    PyObject *util = NULL, *spec = NULL; /* owned */
    const char *why = "it is not installed";
    int rc = -1;

    if (wc->requires == NULL) {
        return 0;
    }
    util = PyImport_ImportModule("importlib.util");
    spec = util != NULL ? PyObject_CallMethod(util, "find_spec", "s", wc->requires) : NULL;
    if (spec != NULL && spec != Py_None) {
        rc = 0;
        goto cleanup;
    }
    if (spec == NULL) {
        why = "looking it up raised an error";
        PyErr_Clear();
    }
    cg_err_set(err, "worker_class %s needs the %s package, which this Python cannot import (%s); "
               "install it with pip install %s into the environment cgunicorn runs in", raw,
               wc->requires, why, wc->requires);
cleanup:
    Py_XDECREF(spec);
    Py_XDECREF(util);
    return rc;
}

/* worker_class as the workers know it, as gunicorn resolves it: a name or
 * alias of the worker class table (config/cg_conf_worker_class.c), else an
 * import path (resolve_imported_class); then a class with `with_threads`
 * (sync) is served as that class when threads > 1. */
static int resolve_worker_class(struct cg_conf *conf, struct cg_err *err)
{
    const char *raw = conf->worker_class != NULL ? conf->worker_class : "sync";
    const struct cg_conf_worker_class *wc = cg_conf_worker_class_find(raw);

    if (wc == NULL && (wc = resolve_imported_class(conf, err)) == NULL) {
        return -1;
    }
    if (wc->with_threads != NULL && conf->threads > 1) {
        wc = cg_conf_worker_class_named(wc->with_threads);
    }
    if (check_requires(wc, raw, err) < 0) {
        return -1;
    }
    conf->worker_class_raw = conf->worker_class;
    conf->worker_class_row = wc;
    conf->worker_class = xstrdup(wc->name, err);
    return conf->worker_class != NULL ? 0 : -1;
}

/* HTTP/2 (http_protocols with h2) is served by the gthread and asgi
 * workers (server/cg_h2.c). gunicorn offers it in gthread, gevent and asgi
 * only, so sync refuses it here, naming the classes; gevent refuses it
 * until its HTTP/2 is built (TODO(#18)), never a silent HTTP/1-only start. As
 * upstream's Config.validate(), h2 with neither TLS nor h2c is a warning:
 * HTTP/2 can then never be negotiated. */
static int check_http2(const struct cg_conf *conf, struct cg_err *err)
{
    bool h2 = false;

    for (size_t i = 0; i < conf->http_protocols.n; i++) {
        h2 = h2 || strcmp(conf->http_protocols.v[i], "h2") == 0;
    }
    if (!h2) {
        return 0;
    }
    if (strcmp(conf->worker_class, "gthread") != 0 && strcmp(conf->worker_class, "asgi") != 0) {
        cg_err_set(err, "http_protocols includes h2 but the %s worker does not serve HTTP/2%s; "
                   "use --worker-class gthread (or --threads N > 1) or asgi, or drop h2 from "
                   "http_protocols", conf->worker_class,
                   strcmp(conf->worker_class, "sync") == 0 ? " (as in gunicorn)"
                                                           : " in cgunicorn yet");
        return -1;
    }
    if ((conf->certfile == NULL || conf->certfile[0] == '\0') &&
        strcmp(conf->http2_cleartext, "off") == 0) {
        fprintf(stderr, "Warning: http_protocols includes h2 but there is no TLS and "
                        "http2_cleartext is off, so HTTP/2 will never be negotiated.\n");
    }
    return 0;
}

/* sendfile: False when set to False, else the SENDFILE environment variable
 * (y, 1, yes, true), else on — gunicorn's rule. */
static void resolve_sendfile(struct cg_conf *conf)
{
    PyObject *v = PyDict_GetItemString(conf->values, "sendfile"); /* borrowed */
    const char *env = getenv("SENDFILE");

    conf->sendfile_set = v != NULL && v != Py_None;
    if (conf->sendfile_set) {
        conf->sendfile = false;
    } else if (env != NULL) {
        conf->sendfile = strcasecmp(env, "y") == 0 || strcmp(env, "1") == 0 ||
                         strcasecmp(env, "yes") == 0 || strcasecmp(env, "true") == 0;
    } else {
        conf->sendfile = true;
    }
}

static int set_defaults(PyObject *values, struct cg_err *err)
{
    for (size_t i = 0; i < cg_conf_settings_count; i++) {
        const struct cg_conf_setting *s = &cg_conf_settings[i];
        PyObject *raw = NULL;
        int rc;

        if (s->type == CG_CONF_HOOK && s->dflt == NULL) {
            if (PyDict_SetItemString(values, s->name, Py_None) < 0) {
                cg_conf_err_from_exc(err);
                return -1;
            }
            continue;
        }
        raw = cg_conf_default_raw(s, err);
        rc = raw != NULL ? cg_conf_value_set(values, s, raw, err) : -1;
        Py_XDECREF(raw);
        if (rc < 0) {
            cg_err_prefix(err, "default of %s", s->name);
            return -1;
        }
    }
    return 0;
}

/* Applies parsed options (all but the positional words) in table order. */
static int apply_opts(PyObject *values, const struct cg_conf_opts *o, const char *source,
                      struct cg_err *err)
{
    for (size_t i = 0; i < cg_conf_settings_count; i++) {
        const struct cg_conf_setting *s = &cg_conf_settings[i];
        PyObject *v = PyDict_GetItemString(o->values, s->name); /* borrowed */
        if (v == NULL) {
            continue;
        }
        if (cg_conf_value_set(values, s, v, err) < 0) {
            PyObject *r = cg_conf_helper_call("short_repr", NULL, "(O)", v);
            char reason[sizeof(err->msg)];
            snprintf(reason, sizeof(reason), "%s", err->msg);
            cg_err_set(err, "%s%s%s %s: %s", source ? source : "", source ? ": " : "",
                       s->cli[1] != NULL ? s->cli[1] : s->cli[0],
                       r != NULL ? PyUnicode_AsUTF8(r) : "?", reason);
            Py_XDECREF(r);
            return -1;
        }
    }
    return 0;
}

static int do_chdir(PyObject *values, struct cg_err *err)
{
    PyObject *dir = PyDict_GetItemString(values, "chdir"); /* borrowed */
    PyObject *r = cg_conf_helper_call("chdir_to", err, "(O)", dir ? dir : Py_None);

    if (r == NULL) {
        cg_err_prefix(err, "chdir");
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static int set_str(PyObject *values, const char *name, const char *v, struct cg_err *err)
{
    PyObject *s = PyUnicode_FromString(v);
    int rc = s != NULL ? cg_conf_value_set(values, cg_conf_setting_find(name), s, err) : -1;
    if (s == NULL) {
        cg_conf_err_from_exc(err);
    }
    Py_XDECREF(s);
    return rc;
}

/* What gunicorn's WSGIApplication.init does: the application from --paste or
 * the first positional word, which also names the processes. */
static int init_app_uri(struct cg_conf *conf, const struct cg_conf_opts *cli,
                        struct cg_err *err)
{
    PyObject *paste = PyDict_GetItemString(cli->values, "paste"); /* borrowed */

    if (paste != NULL && PyUnicode_Check(paste)) {
        char abspath[4096];
        const char *p = PyUnicode_AsUTF8(paste);
        char *hash;
        if (realpath(".", abspath) == NULL) {
            abspath[0] = '\0';
        }
        snprintf(abspath + strlen(abspath), sizeof(abspath) - strlen(abspath), "%s%s",
                 p[0] == '/' ? "" : "/", p);
        if (p[0] == '/') {
            snprintf(abspath, sizeof(abspath), "%s", p);
        }
        conf->app_uri = xstrdup(abspath, err);
        if (conf->app_uri == NULL) {
            return -1;
        }
        hash = strchr(abspath, '#');
        if (hash != NULL) {
            *hash = '\0';
        }
        if (access(abspath, F_OK) != 0) {
            cg_err_set(err, "'%s' not found (from --paste)", abspath);
            return -1;
        }
        return set_str(conf->values, "default_proc_name", abspath, err);
    }
    if (PyList_GET_SIZE(cli->args) > 0) {
        const char *a = PyUnicode_AsUTF8(PyList_GET_ITEM(cli->args, 0));
        if (a == NULL) {
            cg_conf_err_from_exc(err);
            return -1;
        }
        conf->app_uri = xstrdup(a, err);
        if (conf->app_uri == NULL) {
            return -1;
        }
        return set_str(conf->values, "default_proc_name", a, err);
    }
    return 0;
}

/* Loads the config file named by -c (command line first, then
 * GUNICORN_CMD_ARGS), else ./gunicorn.conf.py when it exists. */
static int load_file(PyObject *values, const struct cg_conf_opts *cli,
                     const struct cg_conf_opts *env, struct cg_err *err)
{
    PyObject *loc = PyDict_GetItemString(cli->values, "config"); /* borrowed */
    PyObject *dflt = NULL;
    int rc;

    if (loc == NULL) {
        loc = PyDict_GetItemString(env->values, "config");
    }
    if (loc == NULL) {
        dflt = cg_conf_helper_call("config_default_path", err, "()");
        if (dflt == NULL) {
            return -1;
        }
        if (dflt == Py_None) {
            Py_DECREF(dflt);
            return 0;
        }
        loc = dflt;
    }
    rc = cg_conf_file_load(values, PyUnicode_AsUTF8(loc), err);
    Py_XDECREF(dflt);
    return rc;
}

int cg_conf_load(struct cg_conf *conf, int argc, char **argv, enum cg_conf_mode *mode,
                 int *exit_code, struct cg_err *err)
{
    struct cg_conf_opts cli = { 0 }, env = { 0 };
    const char *env_args = getenv("GUNICORN_CMD_ARGS");
    PyObject *v;
    int rc = -1;

    memset(conf, 0, sizeof(*conf));
    *mode = CG_CONF_RUN;
    *exit_code = 2;
    if (cg_conf_cli_parse(&cli, argc - 1, argv + 1, NULL, err) < 0) {
        goto cleanup;
    }
    *exit_code = 0;
    if (cli.help) {
        cg_conf_print_help(stdout);
        *mode = CG_CONF_HELP;
        rc = 0;
        goto cleanup;
    }
    if (cli.version) {
        printf("cgunicorn (version %s, gunicorn-compatible %s)\n", CG_CONF_VERSION_STRING,
               CG_CONF_GUNICORN_VERSION);
        *mode = CG_CONF_VERSION;
        rc = 0;
        goto cleanup;
    }
    if (cli.settings_doc) {
        cg_conf_print_settings_doc(stdout);
        *mode = CG_CONF_SETTINGS_DOC;
        rc = 0;
        goto cleanup;
    }
    *exit_code = 1;
    conf->values = PyDict_New();
    if (conf->values == NULL) {
        cg_conf_err_from_exc(err);
        goto cleanup;
    }
    if (set_defaults(conf->values, err) < 0 || init_app_uri(conf, &cli, err) < 0 ||
        do_chdir(conf->values, err) < 0) {
        goto cleanup;
    }
    if (env_args != NULL &&
        cg_conf_cli_parse_string(&env, env_args, "GUNICORN_CMD_ARGS", err) < 0) {
        cg_err_prefix(err, "GUNICORN_CMD_ARGS");
        *exit_code = 2;
        goto cleanup;
    }
    if (env.values == NULL && (env.values = PyDict_New()) == NULL) {
        cg_conf_err_from_exc(err);
        goto cleanup;
    }
    if (load_file(conf->values, &cli, &env, err) < 0 ||
        apply_opts(conf->values, &env, "GUNICORN_CMD_ARGS", err) < 0 ||
        apply_opts(conf->values, &cli, NULL, err) < 0 || do_chdir(conf->values, err) < 0) {
        goto cleanup;
    }
    if (conf->app_uri == NULL) {
        v = PyDict_GetItemString(conf->values, "wsgi_app"); /* borrowed */
        if (v == NULL || v == Py_None) {
            cg_err_set(err, "No application module specified. Pass one, e.g. "
                            "`cgunicorn myapp:app`, or set wsgi_app in the config file.");
            goto cleanup;
        }
        conf->app_uri = xstrdup(PyUnicode_AsUTF8(v), err);
        if (conf->app_uri == NULL) {
            goto cleanup;
        }
    }
    if (store_all(conf, err) < 0 || resolve_worker_class(conf, err) < 0 ||
        check_http2(conf, err) < 0) {
        goto cleanup;
    }
    resolve_sendfile(conf);
    rc = 0;
cleanup:
    cg_conf_opts_deinit(&cli);
    cg_conf_opts_deinit(&env);
    return rc;
}

void cg_conf_free(struct cg_conf *conf)
{
    if (conf == NULL) {
        return;
    }
    for (size_t i = 0; i < cg_conf_settings_count; i++) {
        const struct cg_conf_setting *s = &cg_conf_settings[i];
        void *f = field(conf, s);
        switch (s->type) {
        case CG_CONF_STR:
        case CG_CONF_CLASS:
        case CG_CONF_ADDR:
            free(*(char **)f);
            *(char **)f = NULL;
            break;
        case CG_CONF_STRLIST:
            strlist_free(f);
            break;
        default:
            break;
        }
    }
    free(conf->worker_class_raw);
    strlist_free(&conf->worker_class_notes);
    free(conf->app_uri);
    Py_CLEAR(conf->values);
    memset(conf, 0, sizeof(*conf));
}

int cg_conf_warn_unimplemented(const struct cg_conf *conf)
{
    struct cg_err err = { { 0 } };
    int n = 0;

    for (size_t i = 0; i < cg_conf_settings_count; i++) {
        const struct cg_conf_setting *s = &cg_conf_settings[i];
        PyObject *v, *d = NULL, *dv = NULL;
        int same;

        if (s->flags & (CG_CONF_IMPLEMENTED | CG_CONF_INTERNAL)) {
            continue;
        }
        v = conf->values ? PyDict_GetItemString(conf->values, s->name) : NULL; /* borrowed */
        if (v == NULL) {
            continue;
        }
        if (s->type == CG_CONF_HOOK) {
            same = v == Py_None;
        } else {
            d = cg_conf_default_raw(s, &err);
            dv = d != NULL ? s->check(s, d, &err) : NULL;
            same = dv != NULL ? PyObject_RichCompareBool(v, dv, Py_EQ) : 0;
            if (same < 0) {
                PyErr_Clear();
                same = 0;
            }
        }
        if (!same) {
            cg_log(CG_LOG_WARNING, "setting %s is not implemented yet by cgunicorn and is ignored",
                   s->name);
            n++;
        }
        Py_XDECREF(d);
        Py_XDECREF(dv);
    }
    return n;
}

int cg_conf_apply_env(const struct cg_conf *conf, struct cg_err *err)
{
    PyObject *v = conf->values ? PyDict_GetItemString(conf->values, "raw_env") : NULL;
    PyObject *r;

    r = cg_conf_helper_call("apply_env", err, "(Os)", v != NULL ? v : Py_None,
                            "gunicorn/" CG_CONF_GUNICORN_VERSION);
    Py_XDECREF(r);
    return r != NULL ? 0 : -1;
}

int cg_conf_apply_pythonpath(const struct cg_conf *conf, struct cg_err *err)
{
    PyObject *r;

    if (conf->pythonpath == NULL || conf->pythonpath[0] == '\0') {
        return 0;
    }
    r = cg_conf_helper_call("apply_pythonpath", err, "(s)", conf->pythonpath);
    Py_XDECREF(r);
    return r != NULL ? 0 : -1;
}

int cg_conf_check_binds(const struct cg_conf *conf, struct cg_err *err)
{
    for (size_t i = 0; i < conf->bind.n; i++) {
        PyObject *r = cg_conf_helper_call("address", err, "(s)", conf->bind.v[i]);
        if (r == NULL) {
            cg_err_prefix(err, "bind '%s'", conf->bind.v[i]);
            return -1;
        }
        Py_DECREF(r);
    }
    return 0;
}
