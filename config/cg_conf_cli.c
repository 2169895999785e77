/* The command-line parser: `cgunicorn [OPTIONS] [APP_MODULE]`, driven by the
 * settings table's .cli flags and actions, with argparse's conventions as
 * gunicorn uses them: --opt VALUE, --opt=VALUE, -oVALUE, unique prefixes of long
 * options, repeatable append options, store-true flags, an optional-argument
 * flag (--proxy-protocol [MODE]), "--" ending the options, and several
 * positional words (the first is the application). Also used for
 * GUNICORN_CMD_ARGS after shell-style splitting. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "cg_conf_int.h"

/* Options that are not settings. */
enum extra_opt { OPT_SETTING, OPT_HELP, OPT_VERSION, OPT_SETTINGS_DOC };

struct opt_match {
    enum extra_opt kind;
    const struct cg_conf_setting *s; /* OPT_SETTING */
    const char *flag;                /* the flag as spelled in the table */
};

void cg_conf_print_usage(FILE *out)
{
    fprintf(out, "usage: cgunicorn [OPTIONS] [APP_MODULE]\n");
}

/* "-w/--workers": how argparse names an option in its messages. */
static void flag_names(const struct cg_conf_setting *s, char *buf, size_t n)
{
    size_t used = 0;

    buf[0] = '\0';
    for (int i = 0; i < 3 && s->cli[i] != NULL; i++) {
        used += (size_t)snprintf(buf + used, used < n ? n - used : 0, "%s%s", i ? "/" : "",
                                 s->cli[i]);
    }
}

/* Looks `name` (without any "=value") up: exact match first, then a unique
 * prefix of a long option. Returns 0 found, -1 unknown, -2 ambiguous (err set). */
static int find_opt(const char *name, size_t len, struct opt_match *m, struct cg_err *err)
{
    static const struct {
        const char *flag;
        enum extra_opt kind;
    } extras[] = {
        { "-h", OPT_HELP }, { "--help", OPT_HELP }, { "-v", OPT_VERSION },
        { "--version", OPT_VERSION }, { "--print-settings-doc", OPT_SETTINGS_DOC },
    };
    int found = 0;
    char seen[512] = "";
    size_t seen_len = 0;

    for (size_t i = 0; i < sizeof(extras) / sizeof(extras[0]); i++) {
        if (strlen(extras[i].flag) == len && strncmp(extras[i].flag, name, len) == 0) {
            *m = (struct opt_match){ .kind = extras[i].kind, .flag = extras[i].flag };
            return 0;
        }
    }
    for (size_t i = 0; i < cg_conf_settings_count; i++) {
        const struct cg_conf_setting *s = &cg_conf_settings[i];
        for (int j = 0; j < 3 && s->cli[j] != NULL; j++) {
            if (strlen(s->cli[j]) == len && strncmp(s->cli[j], name, len) == 0) {
                *m = (struct opt_match){ .kind = OPT_SETTING, .s = s, .flag = s->cli[j] };
                return 0;
            }
        }
    }
    /* Prefixes: only for long options, as argparse. */
    if (len < 3 || name[0] != '-' || name[1] != '-') {
        return -1;
    }
    for (size_t i = 0; i < cg_conf_settings_count; i++) {
        const struct cg_conf_setting *s = &cg_conf_settings[i];
        for (int j = 0; j < 3 && s->cli[j] != NULL; j++) {
            if (strncmp(s->cli[j], name, len) == 0 && s->cli[j][1] == '-') {
                found++;
                *m = (struct opt_match){ .kind = OPT_SETTING, .s = s, .flag = s->cli[j] };
                seen_len += (size_t)snprintf(seen + seen_len,
                                             seen_len < sizeof(seen) ? sizeof(seen) - seen_len
                                                                     : 0,
                                             "%s%s", found > 1 ? ", " : "", s->cli[j]);
            }
        }
    }
    for (size_t i = 0; i < sizeof(extras) / sizeof(extras[0]); i++) {
        if (strncmp(extras[i].flag, name, len) == 0 && extras[i].flag[1] == '-') {
            found++;
            *m = (struct opt_match){ .kind = extras[i].kind, .flag = extras[i].flag };
            seen_len += (size_t)snprintf(seen + seen_len,
                                         seen_len < sizeof(seen) ? sizeof(seen) - seen_len : 0,
                                         "%s%s", found > 1 ? ", " : "", extras[i].flag);
        }
    }
    if (found == 1) {
        return 0;
    }
    if (found > 1) {
        cg_err_set(err, "ambiguous option: %.*s could match %s", (int)len, name, seen);
        return -2;
    }
    return -1;
}

/* argparse treats "-1" and "-.5" as values when no option looks like a number. */
static bool looks_negative_number(const char *w)
{
    if (w[0] != '-' || w[1] == '\0') {
        return false;
    }
    for (const char *p = w + 1; *p != '\0'; p++) {
        if (!isdigit((unsigned char)*p) && *p != '.') {
            return false;
        }
    }
    return true;
}

static bool is_option_word(const char *w)
{
    return w[0] == '-' && w[1] != '\0' && !looks_negative_number(w);
}

PyObject *cg_conf_cli_value(const struct cg_conf_setting *s, const char *word,
                            struct cg_err *err)
{
    PyObject *str = PyUnicode_DecodeFSDefault(word);
    PyObject *res = NULL;
    char names[128];

    if (str == NULL) {
        cg_conf_err_from_exc(err);
        return NULL;
    }
    if (s->action == CG_ACT_INT || s->action == CG_ACT_AUTOINT) {
        if (s->action == CG_ACT_INT) {
            res = PyLong_FromUnicodeObject(str, 10);
        } else {
            res = cg_conf_helper_call("auto_int", err, "(O)", str);
        }
        if (res == NULL) {
            PyErr_Clear();
            flag_names(s, names, sizeof(names));
            cg_err_set(err, "argument %s: invalid int value: '%s'", names, word);
        }
        Py_DECREF(str);
        return res;
    }
    return str;
}

/* Stores the value for one occurrence of option s (word may be NULL for flags). */
static int store(struct cg_conf_opts *o, const struct cg_conf_setting *s, const char *word,
                 struct cg_err *err)
{
    PyObject *val = NULL;
    PyObject *list = NULL; /* borrowed */
    int rc = -1;

    switch (s->action) {
    case CG_ACT_TRUE:
        val = Py_NewRef(Py_True);
        break;
    case CG_ACT_CONST:
        val = PyUnicode_FromString(s->cli_const);
        break;
    case CG_ACT_OPTIONAL:
        val = PyUnicode_FromString(word != NULL ? word : s->cli_const);
        break;
    default:
        val = cg_conf_cli_value(s, word, err);
        if (val == NULL) {
            return -1;
        }
    }
    if (val == NULL) {
        cg_conf_err_from_exc(err);
        return -1;
    }
    if (s->action == CG_ACT_CONST && strcmp(s->cli_const, "False") == 0) {
        Py_SETREF(val, Py_NewRef(Py_False));
    }
    if (s->action == CG_ACT_APPEND) {
        list = PyDict_GetItemString(o->values, s->name);
        if (list == NULL) {
            PyObject *nl = PyList_New(0);
            if (nl == NULL || PyDict_SetItemString(o->values, s->name, nl) < 0) {
                Py_XDECREF(nl);
                goto py_fail;
            }
            list = nl;
            Py_DECREF(nl); /* the dict holds it */
        }
        if (PyList_Append(list, val) < 0) {
            goto py_fail;
        }
    } else if (PyDict_SetItemString(o->values, s->name, val) < 0) {
        goto py_fail;
    }
    rc = 0;
    goto done;
py_fail:
    cg_conf_err_from_exc(err);
done:
    Py_XDECREF(val);
    return rc;
}

static bool takes_value(const struct cg_conf_setting *s)
{
    return s->action != CG_ACT_TRUE && s->action != CG_ACT_CONST &&
           s->action != CG_ACT_OPTIONAL;
}

int cg_conf_cli_parse(struct cg_conf_opts *o, int argc, char **argv, const char *source,
                      struct cg_err *err)
{
    bool only_positional = false;
    char unknown[1024] = "";
    size_t unknown_len = 0;
    char names[128];

    (void)source;
    o->values = PyDict_New();
    o->args = PyList_New(0);
    if (o->values == NULL || o->args == NULL) {
        cg_conf_err_from_exc(err);
        return -1;
    }
    for (int i = 0; i < argc; i++) {
        const char *w = argv[i];
        struct opt_match m;
        const char *eq = NULL;
        const char *attached = NULL;
        size_t name_len;
        int f;

        if (only_positional || !is_option_word(w)) {
            PyObject *a = PyUnicode_DecodeFSDefault(w);
            if (a == NULL || PyList_Append(o->args, a) < 0) {
                Py_XDECREF(a);
                cg_conf_err_from_exc(err);
                return -1;
            }
            Py_DECREF(a);
            continue;
        }
        if (strcmp(w, "--") == 0) {
            only_positional = true;
            continue;
        }
        name_len = strlen(w);
        if (w[1] == '-') {
            eq = strchr(w, '=');
            if (eq != NULL) {
                name_len = (size_t)(eq - w);
                attached = eq + 1;
            }
        }
        f = find_opt(w, name_len, &m, err);
        if (f == -2) {
            return -1;
        }
        if (f == -1 && w[1] != '-' && strlen(w) > 2) {
            /* -w4: a short option with its value attached. */
            f = find_opt(w, 2, &m, err);
            if (f == 0 && m.kind == OPT_SETTING && takes_value(m.s)) {
                attached = w + 2;
            } else {
                f = -1;
            }
        }
        if (f == -1) {
            unknown_len += (size_t)snprintf(
                unknown + unknown_len, unknown_len < sizeof(unknown) ? sizeof(unknown) - unknown_len : 0,
                "%s%s", unknown_len ? " " : "", w);
            continue;
        }
        if (m.kind == OPT_HELP) {
            o->help = true;
            continue;
        }
        if (m.kind == OPT_VERSION) {
            o->version = true;
            continue;
        }
        if (m.kind == OPT_SETTINGS_DOC) {
            o->settings_doc = true;
            continue;
        }
        flag_names(m.s, names, sizeof(names));
        if (!takes_value(m.s)) {
            if (m.s->action == CG_ACT_OPTIONAL) {
                if (attached == NULL && i + 1 < argc && !is_option_word(argv[i + 1])) {
                    attached = argv[++i];
                }
            } else if (attached != NULL) {
                cg_err_set(err, "argument %s: ignored explicit argument '%s'", names, attached);
                return -1;
            }
        } else if (attached == NULL) {
            if (i + 1 >= argc || is_option_word(argv[i + 1])) {
                cg_err_set(err, "argument %s: expected one argument", names);
                return -1;
            }
            attached = argv[++i];
        }
        if (store(o, m.s, attached, err) < 0) {
            return -1;
        }
    }
    if (unknown_len > 0) {
        cg_err_set(err, "unrecognized arguments: %s", unknown);
        return -1;
    }
    return 0;
}

int cg_conf_cli_parse_string(struct cg_conf_opts *o, const char *s, const char *source,
                             struct cg_err *err)
{
    PyObject *shlex = NULL, *words = NULL;
    char **argv = NULL;
    Py_ssize_t n = 0;
    int rc = -1;

    shlex = PyImport_ImportModule("shlex");
    words = shlex != NULL ? PyObject_CallMethod(shlex, "split", "s", s) : NULL;
    if (words == NULL) {
        cg_conf_err_from_exc(err);
        cg_err_prefix(err, "%s", source);
        goto cleanup;
    }
    n = PyList_GET_SIZE(words);
    argv = calloc((size_t)n + 1, sizeof(*argv));
    if (argv == NULL) {
        cg_err_set(err, "out of memory");
        goto cleanup;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        argv[i] = (char *)PyUnicode_AsUTF8(PyList_GET_ITEM(words, i)); /* borrowed */
        if (argv[i] == NULL) {
            cg_conf_err_from_exc(err);
            goto cleanup;
        }
    }
    rc = cg_conf_cli_parse(o, (int)n, argv, source, err);
cleanup:
    free(argv);
    Py_XDECREF(words);
    Py_XDECREF(shlex);
    return rc;
}

void cg_conf_opts_deinit(struct cg_conf_opts *o)
{
    Py_CLEAR(o->values);
    Py_CLEAR(o->args);
}
