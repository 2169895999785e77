/* Unit tests for the settings table, the validators and the command-line
 * parser (config/cg_conf_table.c, cg_conf_check.c, cg_conf_cli.c). */
#include "cg_test.h"

#include "../../../config/cg_conf_int.h"
#include "cg_conf_worker_class.h"
#include "cg_py.h"

/* Every default goes through its own conversion and validator. */
static void test_every_default_validates(void)
{
    for (size_t i = 0; i < cg_conf_settings_count; i++) {
        const struct cg_conf_setting *s = &cg_conf_settings[i];
        struct cg_err err = { { 0 } };
        PyObject *raw, *v;

        if (s->type == CG_CONF_HOOK) {
            CG_CHECK(s->dflt == NULL);
            CG_CHECK(s->arity >= 1 || strcmp(s->name, "post_request") == 0);
            continue;
        }
        raw = cg_conf_default_raw(s, &err);
        v = raw != NULL ? s->check(s, raw, &err) : NULL;
        if (v == NULL) {
            fprintf(stderr, "default of %s rejected: %s\n", s->name, err.msg);
        }
        CG_CHECK(v != NULL);
        CG_CHECK(!PyErr_Occurred());
        Py_XDECREF(raw);
        Py_XDECREF(v);
    }
}

/* Names are unique, each row has help, and every flag is spelled once. */
static void test_table_rows_are_well_formed(void)
{
    for (size_t i = 0; i < cg_conf_settings_count; i++) {
        const struct cg_conf_setting *s = &cg_conf_settings[i];
        CG_CHECK(s->help != NULL && s->help[0] != '\0');
        CG_CHECK(s->check != NULL);
        CG_CHECK(cg_conf_setting_find(s->name) == s);
        for (size_t j = i + 1; j < cg_conf_settings_count; j++) {
            for (int a = 0; a < 3 && s->cli[a]; a++) {
                for (int b = 0; b < 3 && cg_conf_settings[j].cli[b]; b++) {
                    CG_CHECK(strcmp(s->cli[a], cg_conf_settings[j].cli[b]) != 0);
                }
            }
        }
    }
    CG_CHECK(cg_conf_setting_find("dirty_max_message_size") != NULL);
    CG_CHECK(cg_conf_setting_find("dirty_max_message_size")->flags & CG_CONF_EXTENSION);
    CG_CHECK(cg_conf_setting_find("no_such_setting") == NULL);
}

/* Runs the validator of `name` on a Python literal; returns str(result) or NULL. */
static char result[512];
static const char *check(const char *name, const char *literal, struct cg_err *err)
{
    const struct cg_conf_setting *s = cg_conf_setting_find(name);
    PyObject *raw = cg_conf_helper_call("literal", err, "(s)", literal);
    PyObject *v = raw != NULL ? s->check(s, raw, err) : NULL;
    PyObject *str = v != NULL ? PyObject_Str(v) : NULL;
    const char *out = NULL;

    if (str != NULL) {
        snprintf(result, sizeof(result), "%s", PyUnicode_AsUTF8(str));
        out = result;
    }
    Py_XDECREF(raw);
    Py_XDECREF(v);
    Py_XDECREF(str);
    CG_CHECK(!PyErr_Occurred());
    return out;
}

static void test_validators_accept(void)
{
    struct cg_err err = { { 0 } };
    CG_CHECK_STR(check("workers", "'4'", &err), "4");
    CG_CHECK_STR(check("workers", "'0x10'", &err), "16");
    CG_CHECK_STR(check("workers", "True", &err), "1");
    CG_CHECK_STR(check("bind", "'0.0.0.0:80'", &err), "['0.0.0.0:80']");
    CG_CHECK_STR(check("bind", "[' a:1 ', 'unix:/x']", &err), "['a:1', 'unix:/x']");
    CG_CHECK_STR(check("reload", "' TRUE '", &err), "True");
    CG_CHECK_STR(check("preload_app", "False", &err), "False");
    CG_CHECK_STR(check("forwarded_allow_ips", "'10.0.0.0/8, *'", &err), "['10.0.0.0/8', '*']");
    CG_CHECK_STR(check("proxy_protocol", "True", &err), "auto");
    CG_CHECK_STR(check("proxy_protocol", "'V2'", &err), "v2");
    CG_CHECK_STR(check("http_protocols", "'h2, H1'", &err), "['h2', 'h1']");
    CG_CHECK_STR(check("statsd_host", "'localhost'", &err), "('localhost', 8125)");
    CG_CHECK_STR(check("secure_scheme_headers", "{'X-A': 'on'}", &err), "{'X-A': 'on'}");
    CG_CHECK_STR(check("user", "'0'", &err), "0");
    CG_CHECK_STR(check("user", "'root'", &err), "0");
    CG_CHECK_STR(check("http2_max_frame_size", "16384", &err), "16384");
    CG_CHECK_STR(check("raw_env", "'A=1'", &err), "['A=1']");
}

/* Rejections carry a message that names the bad input. */
static void test_validators_reject(void)
{
    static const struct {
        const char *name, *literal, *needle;
    } bad[] = {
        { "workers", "'four'", "'four'" },
        { "workers", "-2", "-2" },
        { "workers", "3.5", "3.5" },
        { "reload", "'maybe'", "'maybe'" },
        { "reload", "3", "3" },
        { "bind", "5", "5" },
        { "secure_scheme_headers", "['x']", "['x']" },
        { "forwarded_allow_ips", "'1.2.3.4/8'", "1.2.3.4/8" },
        { "proxy_protocol", "'v3'", "'v3'" },
        { "http_protocols", "'h3'", "'h3'" },
        { "asgi_loop", "'trio'", "'trio'" },
        { "header_map", "'keep'", "'keep'" },
        { "reload_engine", "'magic'", "'magic'" },
        { "user", "'no-such-user-xyz'", "no-such-user-xyz" },
        { "chdir", "'/no/such/dir'", "/no/such/dir" },
        { "http2_max_frame_size", "100", "100" },
        { "on_starting", "42", "42" },
        { "on_starting", "'os.nope_nothing'", "nope_nothing" },
        { "pre_fork", "'os.getpid'", "expected 2" },
        { "reload_extra_files", "['/no/such/file.py']", "/no/such/file.py" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct cg_err err = { { 0 } };
        const char *r = check(bad[i].name, bad[i].literal, &err);
        if (r != NULL || strstr(err.msg, bad[i].needle) == NULL) {
            fprintf(stderr, "%s = %s: got %s / '%s'\n", bad[i].name, bad[i].literal,
                    r ? r : "(rejected)", err.msg);
        }
        CG_CHECK(r == NULL);
        CG_CHECK(strstr(err.msg, bad[i].needle) != NULL);
    }
}

static PyObject *parse(struct cg_conf_opts *o, const char *line, struct cg_err *err)
{
    memset(o, 0, sizeof(*o));
    if (cg_conf_cli_parse_string(o, line, "test", err) < 0) {
        return NULL;
    }
    return o->values;
}

static const char *opt_str(struct cg_conf_opts *o, const char *name)
{
    PyObject *v = PyDict_GetItemString(o->values, name);
    PyObject *s = v != NULL ? PyObject_Repr(v) : NULL;
    if (s == NULL) {
        return NULL;
    }
    snprintf(result, sizeof(result), "%s", PyUnicode_AsUTF8(s));
    Py_DECREF(s);
    return result;
}

static void test_cli_parsing(void)
{
    struct cg_conf_opts o;
    struct cg_err err = { { 0 } };

    CG_CHECK(parse(&o, "-w 4 --bind a:1 -b b:2 --no-sendfile --reload app:app extra", &err));
    CG_CHECK_STR(opt_str(&o, "workers"), "4");
    CG_CHECK_STR(opt_str(&o, "bind"), "['a:1', 'b:2']");
    CG_CHECK_STR(opt_str(&o, "sendfile"), "False");
    CG_CHECK_STR(opt_str(&o, "reload"), "True");
    CG_CHECK_INT(PyList_GET_SIZE(o.args), 2);
    cg_conf_opts_deinit(&o);

    CG_CHECK(parse(&o, "--workers=3 -t5 --threads 2 --threads 7 -e A=1 --env B=2 --no-control-socket",
                   &err));
    CG_CHECK_STR(opt_str(&o, "workers"), "3");
    CG_CHECK_STR(opt_str(&o, "timeout"), "5");
    CG_CHECK_STR(opt_str(&o, "threads"), "7");
    CG_CHECK_STR(opt_str(&o, "raw_env"), "['A=1', 'B=2']");
    CG_CHECK_STR(opt_str(&o, "control_socket_disable"), "True");
    cg_conf_opts_deinit(&o);

    /* optional argument, prefixes, octal umask, dirty apps appended */
    CG_CHECK(parse(&o, "--proxy-protocol --dirty-app a:A --dirty-app b:B:2 --umask 022 "
                       "--max-requests-j 9 --proxy-protocol",
                   &err));
    CG_CHECK_STR(opt_str(&o, "proxy_protocol"), "'auto'");
    CG_CHECK_STR(opt_str(&o, "dirty_apps"), "['a:A', 'b:B:2']");
    CG_CHECK_STR(opt_str(&o, "umask"), "18");
    CG_CHECK_STR(opt_str(&o, "max_requests_jitter"), "9");
    cg_conf_opts_deinit(&o);

    CG_CHECK(parse(&o, "--proxy-protocol v2 -- -w", &err));
    CG_CHECK_STR(opt_str(&o, "proxy_protocol"), "'v2'");
    CG_CHECK_INT(PyList_GET_SIZE(o.args), 1);
    cg_conf_opts_deinit(&o);

    /* errors name the option and the input */
    CG_CHECK(parse(&o, "--workers four", &err) == NULL);
    CG_CHECK(strstr(err.msg, "-w/--workers") && strstr(err.msg, "'four'"));
    cg_conf_opts_deinit(&o);
    CG_CHECK(parse(&o, "--bogus x", &err) == NULL);
    CG_CHECK(strstr(err.msg, "--bogus") != NULL);
    cg_conf_opts_deinit(&o);
    CG_CHECK(parse(&o, "--timeout", &err) == NULL);
    CG_CHECK(strstr(err.msg, "expected one argument") != NULL);
    cg_conf_opts_deinit(&o);
    CG_CHECK(parse(&o, "--re 1", &err) == NULL);
    CG_CHECK(strstr(err.msg, "ambiguous") != NULL);
    cg_conf_opts_deinit(&o);
    CG_CHECK(parse(&o, "--preload=yes", &err) == NULL);
    CG_CHECK(strstr(err.msg, "--preload") != NULL);
    cg_conf_opts_deinit(&o);
}

/* The struct holds no Python objects: dict and hook rows have no field (their
 * value stays in conf->values); every other row has a field of its own. */
static void test_fields(void)
{
    for (size_t i = 0; i < cg_conf_settings_count; i++) {
        const struct cg_conf_setting *s = &cg_conf_settings[i];
        bool dict_or_hook = s->type == CG_CONF_DICT || s->type == CG_CONF_HOOK;
        CG_CHECK(cg_conf_setting_has_field(s) == !dict_or_hook);
        if (dict_or_hook) {
            CG_CHECK(s->offset == 0);
            continue;
        }
        CG_CHECK(s->offset < sizeof(struct cg_conf));
        for (size_t j = i + 1; j < cg_conf_settings_count; j++) {
            const struct cg_conf_setting *t = &cg_conf_settings[j];
            CG_CHECK(!cg_conf_setting_has_field(t) || t->offset != s->offset);
        }
    }
}

/* The worker class table: names unique, every alias selects its row,
 * with_threads names a row, and the worker_class help names every class. */
static void test_worker_class_table(void)
{
    const struct cg_conf_setting *ks = cg_conf_setting_find("worker_class");

    CG_CHECK(cg_conf_worker_classes_count >= 3);
    CG_CHECK(ks != NULL && ks->doc_more == cg_conf_worker_class_print_doc);
    for (size_t i = 0; i < cg_conf_worker_classes_count; i++) {
        const struct cg_conf_worker_class *c = &cg_conf_worker_classes[i];
        CG_CHECK(cg_conf_worker_class_named(c->name) == c);
        CG_CHECK(cg_conf_worker_class_find(c->name) == c);
        CG_CHECK(c->help != NULL && c->help[0] != '\0');
        CG_CHECK(ks != NULL && strstr(ks->help, c->name) != NULL);
        CG_CHECK(c->with_threads == NULL || cg_conf_worker_class_named(c->with_threads) != NULL);
        for (size_t a = 0; a < sizeof(c->aliases) / sizeof(c->aliases[0]) && c->aliases[a]; a++) {
            CG_CHECK(cg_conf_worker_class_find(c->aliases[a]) == c);
            CG_CHECK(cg_conf_worker_class_named(c->aliases[a]) == NULL);
        }
    }
    CG_CHECK_STR(cg_conf_worker_class_find("gunicorn.workers.sync.SyncWorker")->name, "sync");
    CG_CHECK_STR(cg_conf_worker_class_find("uvicorn.workers.UvicornWorker")->name, "asgi");
    CG_CHECK_STR(cg_conf_worker_class_find("uvicorn_worker.UvicornWorker")->name, "asgi");
    CG_CHECK_STR(cg_conf_worker_class_find("gunicorn.workers.gthread.ThreadWorker")->name,
                 "gthread");
    CG_CHECK_STR(cg_conf_worker_class_named("sync")->with_threads, "gthread");
    CG_CHECK(!cg_conf_worker_class_named("sync")->keeps_alive);
    CG_CHECK(!cg_conf_worker_class_named("sync")->multithread);
    CG_CHECK(cg_conf_worker_class_named("gthread")->threads);
    CG_CHECK(cg_conf_worker_class_named("asgi")->asgi);
    CG_CHECK_STR(cg_conf_worker_class_find("gevent_pywsgi")->name, "gevent");
    CG_CHECK_STR(cg_conf_worker_class_find("gunicorn.workers.ggevent.GeventWorker")->name,
                 "gevent");
    CG_CHECK_STR(cg_conf_worker_class_named("gevent")->requires, "gevent");
    CG_CHECK(cg_conf_worker_class_named("gevent")->multithread); /* as gunicorn's */
    CG_CHECK(cg_conf_worker_class_find("eventlet") == NULL);
    CG_CHECK(cg_conf_worker_class_find("myproject.workers.Worker") == NULL);
    CG_CHECK(cg_conf_worker_class_find(NULL) == NULL);
}

int main(int argc, char **argv)
{
    struct cg_err err = { { 0 } };
    static const struct cg_test_case cases[] = {
        CG_TEST(test_every_default_validates), CG_TEST(test_table_rows_are_well_formed),
        CG_TEST(test_validators_accept),       CG_TEST(test_validators_reject),
        CG_TEST(test_cli_parsing),             CG_TEST(test_fields),                  CG_TEST(test_worker_class_table),
    };
    if (cg_py_init(argc, argv, &err) < 0) {
        fprintf(stderr, "cg_py_init: %s\n", err.msg);
        return 1;
    }
    return cg_test_run(cases, sizeof(cases) / sizeof(cases[0]));
}
