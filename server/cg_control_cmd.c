/* The control socket's commands, answered from the master's state (its
 * worker table, the supervisor, the settings) with the JSON shapes of
 * gunicorn's ctl/handlers.py, and the same routing and error texts as its
 * ControlSocketServer (`show all|workers|dirty|config|stats|listeners`,
 * `worker add|remove [N]`, `worker kill PID`, `dirty add|remove [N]`,
 * `reload`, `reopen`, `shutdown [graceful|quick]`, `help`).
 *
 * Actions go where the signals would take them: worker counts through
 * cg_master_set_num_workers() (the loop spawns or culls right after),
 * reload/reopen/shutdown as HUP/USR1/TERM|INT to the master itself (the
 * reply is written before the loop acts on them), dirty add/remove as
 * TTIN/TTOU to the dirty arbiter. Master loop thread, GIL held. */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cg_clock.h"
#include "cg_conf_worker_class.h"
#include "cg_control_int.h"
#include "cg_master_int.h"
#include "cg_supervisor.h"

#define MAX_WORDS 16

/* A ValueError in gunicorn's handlers: the reply says "Invalid argument: ". */
struct cmd_err {
    char *buf;
    size_t size;
};

static json_t *fail(struct cmd_err *e, const char *fmt, const char *arg)
{
    char msg[256];

    snprintf(msg, sizeof(msg), fmt, arg);
    snprintf(e->buf, e->size, "Invalid argument: %s", msg);
    return NULL;
}

/* Python's int(word) for the decimal words a count or pid is. */
static int parse_int(const char *word, long *out, struct cmd_err *e)
{
    const char *p = word;
    char *end;

    while (isspace((unsigned char)*p)) {
        p++;
    }
    errno = 0;
    long v = strtol(p, &end, 10);
    while (isspace((unsigned char)*end)) {
        end++;
    }
    if (end == p || *end != '\0' || errno != 0) {
        fail(e, "invalid literal for int() with base 10: '%s'", word);
        return -1;
    }
    *out = v;
    return 0;
}

/* Seconds since `beat_ms`, rounded to 2 places as gunicorn's round(x, 2). */
static json_t *since(uint64_t beat_ms)
{
    uint64_t now = cg_monotonic_ms();
    double s = now > beat_ms ? (double)(now - beat_ms) / 1000.0 : 0.0;
    return json_real((double)(long long)(s * 100.0 + 0.5) / 100.0);
}

static int by_age(const void *a, const void *b)
{
    const struct cg_master_child *x = a, *y = b;
    return (x->age > y->age) - (x->age < y->age);
}

/* The HTTP workers, oldest first; `web` adds gunicorn's "type": "web"
 * (show all) and leaves out "aborted" (show workers has it). */
static json_t *workers_list(struct cg_master *m, bool web)
{
    struct cg_master_child sorted[CG_MASTER_MAX_SLOTS];
    json_t *list = json_array();

    memcpy(sorted, m->kids, sizeof(sorted[0]) * (size_t)m->nkids);
    qsort(sorted, (size_t)m->nkids, sizeof(sorted[0]), by_age);
    for (int i = 0; i < m->nkids; i++) {
        const struct cg_master_child *c = &sorted[i];
        const struct cg_sup_child *sc = cg_sup_find(&m->sup, c->pid);
        json_t *w = json_object();
        json_object_set_new(w, "pid", json_integer(c->pid));
        if (web) {
            json_object_set_new(w, "type", json_string("web"));
        }
        json_object_set_new(w, "age", json_integer(c->age));
        json_object_set_new(w, "booted", json_boolean(sc != NULL && sc->booted));
        if (!web) {
            json_object_set_new(w, "aborted", json_boolean(c->aborted));
        }
        json_object_set_new(w, "last_heartbeat",
                            since(atomic_load(&m->slots[c->slot].beat_ms)));
        json_array_append_new(list, w);
    }
    return list;
}

static json_t *show_workers(struct cg_master *m)
{
    return json_pack("{s:o,s:i}", "workers", workers_list(m, false), "count", m->nkids);
}

/* The arbiter's workers as gunicorn's status handler lists them: pid, age,
 * apps, booted, last_heartbeat (the arbiter keeps no heartbeat age: null),
 * and, with dirty_gpus, the worker's device,
 * oldest first. An arbiter that does not answer in time gives []. */
static json_t *dirty_workers(void)
{
    json_t *status = cg_control_dirty_status(250);
    json_t *list = json_array();
    size_t i;
    json_t *w;

    json_array_foreach(json_object_get(status, "workers"), i, w)
    {
        json_t *apps = json_object_get(w, "apps");
        json_t *device = json_object_get(w, "device");
        json_t *e = json_pack("{s:O,s:O,s:o,s:b,s:n}", "pid", json_object_get(w, "pid"), "age",
                              json_object_get(w, "age"), "apps",
                              apps ? json_incref(apps) : json_array(), "booted",
                              json_is_true(json_object_get(w, "booted")), "last_heartbeat");
        if (json_is_string(device)) {
            /* dirty_gpus (cgunicorn's): the worker's CUDA_VISIBLE_DEVICES */
            json_object_set(e, "device", device);
        }
        json_array_append_new(list, e);
    }
    json_decref(status);
    /* gunicorn sorts by age */
    size_t n = json_array_size(list);
    for (size_t a = 1; a < n; a++) {
        for (size_t b = a; b > 0; b--) {
            json_t *x = json_array_get(list, b - 1), *y = json_array_get(list, b);
            if (json_integer_value(json_object_get(x, "age")) <=
                json_integer_value(json_object_get(y, "age"))) {
                break;
            }
            json_incref(x);
            json_array_set(list, b - 1, y);
            json_array_set_new(list, b, x);
        }
    }
    return list;
}

static json_t *show_all(struct cg_master *m)
{
    json_t *dirty = m->dirty_pid > 0 ? json_pack("{s:i,s:s,s:s}", "pid", (int)m->dirty_pid,
                                                 "type", "dirty_arbiter", "role", "dirty master")
                                     : json_null();
    json_t *dw = m->dirty_pid > 0 ? dirty_workers() : json_array();
    return json_pack("{s:{s:i,s:s,s:s},s:o,s:i,s:o,s:o,s:i}", "arbiter", "pid", (int)getpid(),
                     "type", "arbiter", "role", "master", "web_workers", workers_list(m, true),
                     "web_worker_count", m->nkids, "dirty_arbiter", dirty, "dirty_workers", dw,
                     "dirty_worker_count", (int)json_array_size(dw));
}

/* "module:Class:N" -> import_path "module:Class", worker_count N. */
static json_t *dirty_app(const char *spec)
{
    const char *last = strrchr(spec, ':');
    const char *first = strchr(spec, ':');
    bool counted = last != NULL && last != first && last[1] != '\0' &&
                   strspn(last + 1, "0123456789") == strlen(last + 1);
    json_t *path = counted ? json_stringn(spec, (size_t)(last - spec)) : json_string(spec);
    json_t *count = counted ? json_integer(strtol(last + 1, NULL, 10)) : json_null();
    return json_pack("{s:o,s:o,s:i,s:[]}", "import_path", path, "worker_count", count,
                     "current_workers", 0, "worker_pids");
}

static json_t *show_dirty(struct cg_master *m)
{
    json_t *apps = json_array();

    if (m->dirty_pid <= 0) {
        return json_pack("{s:b,s:n,s:[],s:o}", "enabled", 0, "pid", "workers", "apps", apps);
    }
    for (size_t i = 0; i < m->conf->dirty_apps.n; i++) {
        json_array_append_new(apps, dirty_app(m->conf->dirty_apps.v[i]));
    }
    return json_pack("{s:b,s:i,s:[],s:o}", "enabled", 1, "pid", (int)m->dirty_pid, "workers",
                     "apps", apps);
}

static json_t *str_or_null(const char *s)
{
    return s != NULL ? json_string(s) : json_null();
}

static json_t *strlist(const struct cg_strlist *l)
{
    json_t *a = json_array();
    for (size_t i = 0; i < l->n; i++) {
        json_array_append_new(a, json_string(l->v[i]));
    }
    return a;
}

/* gunicorn prints the worker class object: "<class 'gunicorn.workers.sync.SyncWorker'>". */
static json_t *worker_class_repr(const char *name)
{
    const struct cg_conf_worker_class *wc = cg_conf_worker_class_named(name);
    char buf[300];

    if (wc == NULL || wc->aliases[0] == NULL) {
        return json_string(name);
    }
    snprintf(buf, sizeof(buf), "<class '%s'>", wc->aliases[0]);
    return json_string(buf);
}

static json_t *show_config(struct cg_master *m)
{
    const struct cg_conf *c = m->conf;
    json_t *o = json_object();

    json_object_set_new(o, "bind", strlist(&c->bind));
    json_object_set_new(o, "workers", json_integer(c->workers)); /* the setting, as gunicorn */
    json_object_set_new(o, "worker_class", worker_class_repr(c->worker_class));
    json_object_set_new(o, "threads", json_integer(c->threads));
    json_object_set_new(o, "timeout", json_integer(c->timeout));
    json_object_set_new(o, "graceful_timeout", json_integer(c->graceful_timeout));
    json_object_set_new(o, "keepalive", json_integer(c->keepalive));
    json_object_set_new(o, "max_requests", json_integer(c->max_requests));
    json_object_set_new(o, "max_requests_jitter", json_integer(c->max_requests_jitter));
    json_object_set_new(o, "worker_connections", json_integer(c->worker_connections));
    json_object_set_new(o, "preload_app", json_boolean(c->preload_app));
    json_object_set_new(o, "daemon", json_boolean(c->daemon));
    json_object_set_new(o, "pidfile", str_or_null(c->pidfile));
    json_object_set_new(o, "proc_name", json_string(c->proc_name ? c->proc_name
                                                                  : c->default_proc_name));
    json_object_set_new(o, "reload", json_boolean(c->reload));
    json_object_set_new(o, "dirty_workers", json_integer(c->dirty_workers));
    json_object_set_new(o, "dirty_apps", strlist(&c->dirty_apps));
    json_object_set_new(o, "dirty_timeout", json_integer(c->dirty_timeout));
    json_object_set_new(o, "control_socket", str_or_null(c->control_socket));
    json_object_set_new(o, "control_socket_disable", json_boolean(c->control_socket_disable));
    return o;
}

static json_t *show_stats(struct cg_master *m)
{
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    double up = (double)wall.tv_sec + (double)wall.tv_nsec / 1e9 - m->stats.start_time;

    return json_pack("{s:f,s:i,s:i,s:i,s:I,s:I,s:I,s:o}", "uptime",
                     (double)(long long)(up * 100.0 + 0.5) / 100.0, "pid", (int)getpid(),
                     "workers_current", m->nkids, "workers_target", m->num_workers,
                     "workers_spawned", (json_int_t)m->stats.spawned, "workers_killed",
                     (json_int_t)m->stats.killed, "reloads", (json_int_t)m->stats.reloads,
                     "dirty_arbiter_pid",
                     m->dirty_pid > 0 ? json_integer(m->dirty_pid) : json_null());
}

static json_t *show_listeners(struct cg_master *m)
{
    json_t *list = json_array();

    for (size_t i = 0; i < m->nls; i++) {
        const struct cg_listener *l = &m->ls[i];
        const char *type = l->family == AF_UNIX    ? "unix"
                           : l->family == AF_INET6 ? "tcp6"
                           : l->family == AF_INET  ? "tcp"
                                                   : "unknown";
        json_array_append_new(list, json_pack("{s:s,s:i,s:s}", "address", l->name, "fd", l->fd,
                                              "type", type));
    }
    return json_pack("{s:o,s:i}", "listeners", list, "count", (int)m->nls);
}

static json_t *help(void)
{
    static const char *const rows[][2] = {
        { "show all", "Show all processes (arbiter, web workers, dirty workers)" },
        { "show workers", "List HTTP workers with their status" },
        { "show dirty", "List dirty workers and apps" },
        { "show config", "Show current effective configuration" },
        { "show stats", "Show server statistics" },
        { "show listeners", "Show bound sockets" },
        { "worker add [N]", "Spawn N workers (default 1)" },
        { "worker remove [N]", "Remove N workers (default 1)" },
        { "worker kill <PID>", "Gracefully terminate specific worker" },
        { "dirty add [N]", "Spawn N dirty workers (default 1)" },
        { "dirty remove [N]", "Remove N dirty workers (default 1)" },
        { "reload", "Graceful reload (HUP)" },
        { "reopen", "Reopen log files (USR1)" },
        { "shutdown [graceful|quick]", "Shutdown server (TERM/INT)" },
        { "help", "Show this help message" },
    };
    json_t *cmds = json_object();

    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        json_object_set_new(cmds, rows[i][0], json_string(rows[i][1]));
    }
    return json_pack("{s:o}", "commands", cmds);
}

/* The count word of add/remove: 1 when absent, at least 1. */
static int count_arg(int nw, char **w, long *n, struct cmd_err *e)
{
    *n = 1;
    if (nw > 0 && parse_int(w[0], n, e) < 0) {
        return -1;
    }
    if (*n < 1) {
        *n = 1;
    }
    return 0;
}

static json_t *worker_cmd(struct cg_master *m, int nw, char **w, struct cmd_err *e)
{
    long n;

    if (nw == 0) {
        return fail(e, "%s", "Missing worker action (add|remove|kill)");
    }
    if (strcasecmp(w[0], "add") == 0 || strcasecmp(w[0], "remove") == 0) {
        bool add = strcasecmp(w[0], "add") == 0;
        if (count_arg(nw - 1, w + 1, &n, e) < 0) {
            return NULL;
        }
        int old = m->num_workers;
        long want = add ? old + n : old - n;
        if (want > CG_MASTER_MAX_SLOTS) {
            want = CG_MASTER_MAX_SLOTS;
        }
        if (want < 1) {
            want = 1; /* gunicorn keeps one */
        }
        cg_master_set_num_workers(m, (int)want, false); /* the loop spawns or culls */
        return add ? json_pack("{s:i,s:i,s:i}", "added", (int)(want - old), "previous", old,
                               "total", (int)want)
                   : json_pack("{s:i,s:i,s:i}", "removed", (int)(old - want), "previous", old,
                               "total", (int)want);
    }
    if (strcasecmp(w[0], "kill") == 0) {
        if (nw < 2) {
            return fail(e, "%s", "Missing PID for worker kill");
        }
        if (parse_int(w[1], &n, e) < 0) {
            return NULL;
        }
        for (int i = 0; i < m->nkids; i++) {
            if (m->kids[i].pid == (pid_t)n) {
                /* A plain TERM, as gunicorn: the worker is replaced. */
                cg_sup_kill(&m->sup, m->kids[i].pid, SIGTERM);
                m->stats.killed++;
                return json_pack("{s:b,s:I}", "success", 1, "killed", (json_int_t)n);
            }
        }
        char msg[64];
        snprintf(msg, sizeof(msg), "Worker %ld not found", n);
        return json_pack("{s:b,s:s}", "success", 0, "error", msg);
    }
    return fail(e, "Unknown worker action: %s", w[0]);
}

/* Dirty workers still to add (> 0) or remove (< 0). Signals of one kind
 * sent together may merge into one delivery, so the arbiter gets one
 * TTIN/TTOU per tick of the master's loop (at least every second). */
static long dirty_pending;
static pid_t dirty_pending_pid;

void cg_control_cmd_tick(struct cg_master *m)
{
    if (dirty_pending == 0) {
        return;
    }
    if (m->dirty_pid <= 0 || m->dirty_pid != dirty_pending_pid) {
        dirty_pending = 0; /* the arbiter went away: its replacement starts afresh */
        return;
    }
    cg_sup_kill(&m->sup, m->dirty_pid, dirty_pending > 0 ? SIGTTIN : SIGTTOU);
    dirty_pending += dirty_pending > 0 ? -1 : 1;
}

static json_t *dirty_cmd(struct cg_master *m, int nw, char **w, struct cmd_err *e)
{
    long n;

    if (nw == 0) {
        return fail(e, "%s", "Missing dirty action (add|remove)");
    }
    bool add = strcasecmp(w[0], "add") == 0;
    if (!add && strcasecmp(w[0], "remove") != 0) {
        return fail(e, "Unknown dirty action: %s", w[0]);
    }
    if (count_arg(nw - 1, w + 1, &n, e) < 0) {
        return NULL;
    }
    if (m->dirty_pid <= 0) {
        return json_pack("{s:b,s:s}", "success", 0, "error", "Dirty arbiter not running");
    }
    /* The arbiter's TTIN/TTOU: one worker each, its limits applied there. */
    if (n > CG_MASTER_MAX_SLOTS) {
        n = CG_MASTER_MAX_SLOTS;
    }
    dirty_pending = add ? n : -n; /* a newer request replaces what is left of an older one */
    dirty_pending_pid = m->dirty_pid;
    cg_control_cmd_tick(m);
    return json_pack("{s:b,s:s,s:i}", "success", 1, "operation", add ? "add" : "remove",
                     "requested", (int)n);
}

static json_t *show(struct cg_master *m, int nw, char **w, struct cmd_err *e)
{
    if (nw == 0) {
        return fail(e, "%s", "Missing show target (all|workers|dirty|config|stats|listeners)");
    }
    const char *t = w[0];
    return strcasecmp(t, "all") == 0         ? show_all(m)
           : strcasecmp(t, "workers") == 0   ? show_workers(m)
           : strcasecmp(t, "dirty") == 0     ? show_dirty(m)
           : strcasecmp(t, "config") == 0    ? show_config(m)
           : strcasecmp(t, "stats") == 0     ? show_stats(m)
           : strcasecmp(t, "listeners") == 0 ? show_listeners(m)
                                             : fail(e, "Unknown show target: %s", t);
}

static json_t *to_self(int signo, json_t *reply)
{
    kill(getpid(), signo); /* the self-pipe wakes the loop after this reply is written */
    return reply;
}

static json_t *route(struct cg_master *m, int nw, char **w, struct cmd_err *e)
{
    const char *cmd = w[0];

    if (strcasecmp(cmd, "show") == 0) {
        return show(m, nw - 1, w + 1, e);
    }
    if (strcasecmp(cmd, "worker") == 0) {
        return worker_cmd(m, nw - 1, w + 1, e);
    }
    if (strcasecmp(cmd, "dirty") == 0) {
        return dirty_cmd(m, nw - 1, w + 1, e);
    }
    if (strcasecmp(cmd, "reload") == 0) {
        return to_self(SIGHUP, json_pack("{s:s}", "status", "reloading"));
    }
    if (strcasecmp(cmd, "reopen") == 0) {
        return to_self(SIGUSR1, json_pack("{s:s}", "status", "reopening"));
    }
    if (strcasecmp(cmd, "shutdown") == 0) {
        const char *mode = nw > 1 ? w[1] : "graceful";
        return to_self(strcmp(mode, "quick") == 0 ? SIGINT : SIGTERM,
                       json_pack("{s:s,s:s}", "status", "shutting_down", "mode", mode));
    }
    if (strcasecmp(cmd, "help") == 0) {
        return help();
    }
    return fail(e, "Unknown command: %s", cmd);
}

json_t *cg_control_run(struct cg_master *m, const char *command, const json_t *args, char *err,
                       size_t errsize)
{
    struct cmd_err e = { err, errsize };
    char line[1024], extra[MAX_WORDS][64];
    char *w[MAX_WORDS * 2];
    int nw = 0;
    char *save = NULL;

    snprintf(line, sizeof(line), "%s", command);
    for (char *t = strtok_r(line, " \t\r\n", &save); t != NULL && nw < MAX_WORDS;
         t = strtok_r(NULL, " \t\r\n", &save)) {
        w[nw++] = t;
    }
    if (nw == 0) {
        snprintf(err, errsize, "Empty command");
        return NULL;
    }
    size_t i;
    const json_t *a;
    json_array_foreach(args, i, a)
    {
        if (i >= MAX_WORDS) {
            break;
        }
        if (json_is_string(a)) {
            snprintf(extra[i], sizeof(extra[i]), "%s", json_string_value(a));
        } else if (json_is_integer(a)) {
            snprintf(extra[i], sizeof(extra[i]), "%lld", (long long)json_integer_value(a));
        } else {
            snprintf(extra[i], sizeof(extra[i]), "?");
        }
        w[nw++] = extra[i];
    }
    return route(m, nw, w, &e);
}
