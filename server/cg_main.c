/* Entry point: start the interpreter, resolve the configuration (handling
 * --help, --version, --print-config and --check-config), open the error log,
 * and hand over to the master. The only file that calls exit(); errors print as
 * gunicorn prints them ("\nError: ..." on stderr, exit 1; command-line syntax
 * errors as usage + "cgunicorn: error: ...", exit 2). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_conf.h"
#include "cg_err.h"
#include "cg_listen.h"
#include "cg_log.h"
#include "cg_master.h"
#include "cg_proc.h"
#include "cg_py.h"
#include "cg_py_app.h"
#include "cg_py_logconfig.h"
#include "cg_py_ssl_context.h"
#include "cg_statsd.h"
#include "cg_syslog.h"
#include "cg_transport_tls.h"

static void print_usage_error(const char *msg)
{
    fprintf(stderr, "usage: cgunicorn [OPTIONS] [APP_MODULE]\ncgunicorn: error: %s\n", msg);
}

/* --check-config / --print-config: load the application and exit, as gunicorn. */
/* gunicorn's _set_syslog_handler: the prefix is syslog_prefix, else
 * proc_name with ':' made '.'. */
static int open_syslog(const struct cg_conf *conf, struct cg_err *err)
{
    char prefix[256];

    snprintf(prefix, sizeof(prefix), "%s",
             conf->syslog_prefix ? conf->syslog_prefix
                                 : (conf->proc_name ? conf->proc_name : conf->default_proc_name));
    for (char *p = prefix; *p != '\0'; p++) {
        if (*p == ':') {
            *p = '.';
        }
    }
    return cg_syslog_open(conf->syslog_addr, prefix, conf->syslog_facility,
                          !conf->disable_redirect_access_to_syslog, err);
}

static int check_app(const struct cg_conf *conf)
{
    struct cg_err err = { { 0 } };
    PyObject *tb = NULL;
    PyObject *app = cg_py_app_load(conf->app_uri, &tb, &err);

    if (app != NULL) {
        Py_DECREF(app);
        return 0;
    }
    fprintf(stderr, "\nError while loading the application:\n\n");
    if (tb != NULL && PyUnicode_AsUTF8(tb) != NULL) {
        fputs(PyUnicode_AsUTF8(tb), stderr);
    } else {
        fprintf(stderr, "%s\n", err.msg);
    }
    Py_XDECREF(tb);
    fflush(stderr);
    return 1;
}

int main(int argc, char **argv)
{
    struct cg_err err = { { 0 } };
    struct cg_conf conf;
    enum cg_conf_mode mode;
    enum cg_log_level level;
    int code = 1;

    cg_master_init_early(argc, argv);
    cg_proc_init(argc, argv);
    argv = cg_proc_argv_copy(argc, argv); /* the title may overwrite the original */
    if (cg_py_init(argc, argv, &err) < 0) {
        fprintf(stderr, "\nError: %s\n", err.msg);
        return 1;
    }
    cg_proc_init_title();
    if (cg_conf_load(&conf, argc, argv, &mode, &code, &err) < 0) {
        fflush(stdout);
        if (code == 2) {
            print_usage_error(err.msg);
        } else {
            fprintf(stderr, "\nError: %s\n", err.msg);
        }
        fflush(stderr);
        exit(code);
    }
    if (mode != CG_CONF_RUN) {
        fflush(stdout);
        exit(0);
    }
    if (conf.print_config) {
        cg_conf_print(&conf, stdout);
    }
    if (conf.check_config && cg_py_ssl_context_check(&conf, NULL, &err) < 0) {
        fprintf(stderr, "\nError: %s\n", err.msg);
        exit(1);
    }
    if (conf.print_config || conf.check_config) {
        exit(check_app(&conf));
    }
    if (cg_conf_apply_pythonpath(&conf, &err) < 0 || cg_conf_check_binds(&conf, &err) < 0 ||
        cg_py_ssl_context_install(&conf, NULL, &err) < 0 ||
        cg_conf_apply_env(&conf, &err) < 0 ||
        cg_log_level_parse(conf.loglevel, &level, &err) < 0 ||
        cg_log_open(conf.errorlog, level, &err) < 0) {
        fprintf(stderr, "\nError: %s\n", err.msg);
        exit(1);
    }
    if (conf.syslog && open_syslog(&conf, &err) < 0) {
        fprintf(stderr, "\nError: %s\n", err.msg);
        exit(1);
    }
    if (cg_py_logconfig_apply(&conf, &err) < 0) {
        fprintf(stderr, "\nError: %s\n", err.msg);
        exit(1);
    }
    if (cg_statsd_open(conf.statsd_host, conf.statsd_prefix, conf.dogstatsd_tags, &err) < 0) {
        cg_log(CG_LOG_WARNING, "%s; no StatsD metrics will be sent (fix statsd_host)", err.msg);
    }
    if (conf.capture_output && cg_log_capture_output() < 0) {
        fprintf(stderr, "\nError: capture_output: cannot redirect stdout/stderr to %s: %s\n",
                conf.errorlog, strerror(errno));
        exit(1);
    }
    cg_listen_https = cg_transport_tls_wanted(&conf);
    code = cg_master_run(&conf, &err);
    if (code != 0 && err.msg[0] != '\0') {
        fprintf(stderr, "\nError: %s\n", err.msg);
    }
    cg_transport_tls_use(NULL, 0, true);
    cg_conf_free(&conf);
    exit(code);
}
