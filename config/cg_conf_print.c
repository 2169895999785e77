/* Output generated from the settings table: --print-config (gunicorn's exact
 * "name = value" layout), --help, and docs/settings.md (--print-settings-doc). */
#include <stdlib.h>
#include <string.h>

#include "cg_conf_int.h"

static int by_name(const void *a, const void *b)
{
    const struct cg_conf_setting *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

void cg_conf_print(const struct cg_conf *conf, FILE *out)
{
    const struct cg_conf_setting *rows[512];
    size_t n = 0;
    int kmax = 0;

    for (size_t i = 0; i < cg_conf_settings_count && n < 512; i++) {
        rows[n++] = &cg_conf_settings[i];
        if ((int)strlen(cg_conf_settings[i].name) > kmax) {
            kmax = (int)strlen(cg_conf_settings[i].name);
        }
    }
    qsort(rows, n, sizeof(rows[0]), by_name);
    for (size_t i = 0; i < n; i++) {
        PyObject *v = conf->values ? PyDict_GetItemString(conf->values, rows[i]->name) : NULL;
        PyObject *shown = NULL;

        if (v == Py_None && rows[i]->type == CG_CONF_HOOK) {
            /* gunicorn prints its default function's qualified name */
            fprintf(out, "%-*s = <%s.%s()>\n", kmax, rows[i]->name, rows[i]->hook_class,
                    rows[i]->name);
            continue;
        }
        shown = v != NULL ? cg_conf_helper_call("show", NULL, "(O)", v) : NULL;
        fprintf(out, "%-*s = %s\n", kmax, rows[i]->name,
                shown != NULL ? PyUnicode_AsUTF8(shown) : "?");
        Py_XDECREF(shown);
    }
    fflush(out);
}

void cg_conf_format_default(const struct cg_conf_setting *s, char *buf, size_t n)
{
    if (s->dflt_doc != NULL) {
        snprintf(buf, n, "%s", s->dflt_doc);
    } else if (s->type == CG_CONF_HOOK) {
        snprintf(buf, n, "no-op");
    } else if (s->dflt == NULL) {
        snprintf(buf, n, "%s", s->type == CG_CONF_STRLIST ? "[]" : "None");
    } else if (s->type == CG_CONF_STR && s->dflt[0] == '\0') {
        snprintf(buf, n, "''");
    } else {
        snprintf(buf, n, "%s", s->dflt);
    }
}

/* "-w INT, --workers INT" */
static void format_flags(const struct cg_conf_setting *s, char *buf, size_t n)
{
    size_t used = 0;
    bool arg = s->action != CG_ACT_TRUE && s->action != CG_ACT_CONST;
    const char *meta = s->meta != NULL ? s->meta : "VALUE";

    buf[0] = '\0';
    for (int i = 0; i < 3 && s->cli[i] != NULL; i++) {
        used += (size_t)snprintf(buf + used, used < n ? n - used : 0, "%s%s%s%s%s",
                                 i ? ", " : "", s->cli[i], arg ? " " : "",
                                 s->action == CG_ACT_OPTIONAL ? "[" : "",
                                 arg ? meta : "");
        if (s->action == CG_ACT_OPTIONAL) {
            used += (size_t)snprintf(buf + used, used < n ? n - used : 0, "]");
        }
    }
}

void cg_conf_print_help(FILE *out)
{
    char flags[256], dflt[256];

    cg_conf_print_usage(out);
    fprintf(out, "\npositional arguments:\n"
                 "  APP_MODULE            the application, MODULE:NAME or MODULE:factory(args)\n"
                 "\noptions:\n"
                 "  -h, --help            show this help message and exit\n"
                 "  -v, --version         show program's version number and exit\n");
    for (size_t i = 0; i < cg_conf_settings_count; i++) {
        const struct cg_conf_setting *s = &cg_conf_settings[i];
        if (s->cli[0] == NULL) {
            continue;
        }
        format_flags(s, flags, sizeof(flags));
        cg_conf_format_default(s, dflt, sizeof(dflt));
        fprintf(out, "  %s\n                        %s [%s]\n", flags, s->help, dflt);
    }
    fflush(out);
}

void cg_conf_print_settings_doc(FILE *out)
{
    char flags[256], dflt[256];

    fprintf(out, "# Settings\n\n"
                 "<!-- Generated from config/cg_conf_table.c by `make docs`"
                 " (cgunicorn --print-settings-doc); do not edit. -->\n\n"
                 "cgunicorn accepts every gunicorn %s setting, on the command line, in\n"
                 "`GUNICORN_CMD_ARGS` and in the config file (`-c`, default "
                 "`./gunicorn.conf.py`),\n"
                 "with gunicorn's precedence: defaults < config file < GUNICORN_CMD_ARGS < "
                 "command line.\n"
                 "A setting marked *not implemented yet* is parsed and validated; if it is set "
                 "to a\nnon-default value the server warns at start-up that it is ignored.\n",
            CG_CONF_GUNICORN_VERSION);
    for (int sec = 0; sec < CG_SECTION_COUNT; sec++) {
        bool header = false;
        for (size_t i = 0; i < cg_conf_settings_count; i++) {
            const struct cg_conf_setting *s = &cg_conf_settings[i];
            if ((int)s->section != sec) {
                continue;
            }
            if (!header) {
                fprintf(out, "\n## %s\n", cg_conf_section_name(s->section));
                header = true;
            }
            cg_conf_format_default(s, dflt, sizeof(dflt));
            fprintf(out, "\n### `%s`\n\n", s->name);
            if (s->cli[0] != NULL) {
                format_flags(s, flags, sizeof(flags));
                fprintf(out, "- Command line: `%s`\n", flags);
            } else {
                fprintf(out, "- Command line: none (config file only)\n");
            }
            fprintf(out, "- Default: `%s`\n", dflt);
            fprintf(out, "- Status: %s%s\n",
                    (s->flags & (CG_CONF_IMPLEMENTED | CG_CONF_INTERNAL)) ? "implemented"
                                                                          : "not implemented yet",
                    (s->flags & CG_CONF_EXTENSION) ? " (cgunicorn extension, not in gunicorn)"
                                                   : "");
            fprintf(out, "\n%s\n", s->help);
            if (s->doc_more != NULL) {
                s->doc_more(out);
            }
        }
    }
    fflush(out);
}
