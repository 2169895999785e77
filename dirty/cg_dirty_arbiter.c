/* The dirty arbiter process: forked by the master, it listens on the Unix
 * socket HTTP workers find in GUNICORN_DIRTY_SOCKET, forks and supervises
 * the dirty workers (spawn, reap, respawn with the same apps, TTIN/TTOU,
 * HUP reload, graceful and immediate stop) and acts on signals from its
 * libevent loop via the self-pipe. Frame routing is in cg_dirty_relay.c,
 * the routing table in cg_dirty_pool.c, the worker body in
 * cg_dirty_worker.c. The workers are forked, signalled, reaped (each exit
 * logged in gunicorn's words) and killed at the stop deadline by the
 * process supervisor (server/cg_supervisor.c). The arbiter never imports application code: the
 * `workers` class attributes are read by a probe child. */
#include <Python.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cg_clock.h"
#include "cg_dirty_arbiter.h"
#include "cg_dirty_mem.h"
#include "cg_dirty_arbiter_int.h"
#include "cg_dirty_codec.h"
#include "cg_dirty_gpus.h"
#include "cg_dirty_worker.h"
#include "cg_log.h"
#include "cg_metrics.h"
#include "cg_py.h"
#include "cg_sig.h"
#include "cg_sig_table.h"
#include "cg_supervisor.h"

/* Set by cg_dirty_prepare() in the master; inherited by the arbiter. */
static char sock_dir[PATH_MAX];
static char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static int listen_fd = -1; /* master: the arbiter socket, see listen_on() */

/* Every dirty worker (the arbiter's only supervised children). */
#define DIRTY_WORKERS CG_SUP_ROLE(CG_ROLE_DIRTY_WORKER)

/* Respawn back-off after boot failures (once the pool has booted). */
#define BOOT_BACKOFF_BASE_MS 1000u
#define BOOT_BACKOFF_MAX_MS 60000u

/* dirty_max_worker_memory: how often the workers' RSS is read. */
#define MEM_CHECK_MS 1000u

double cg_dirty_now(void)
{
    return (double)cg_monotonic_ms() / 1000.0;
}

bool cg_dirty_wanted(const struct cg_conf *conf)
{
    return conf->dirty_workers > 0 && conf->dirty_apps.n > 0;
}

/* Sets an environment variable both in the C environment and in Python's
 * os.environ (which the interpreter copied at start-up), so HTTP workers
 * forked later see it either way. Needs the GIL. */
static int export_env(const char *name, const char *value, struct cg_err *err)
{
    PyObject *os = NULL, *environ = NULL, *v = NULL; /* owned */
    int rc = -1;

    if (setenv(name, value, 1) < 0) {
        cg_err_set(err, "dirty arbiter: setenv %s: %s", name, strerror(errno));
        return -1;
    }
    os = PyImport_ImportModule("os");
    environ = os != NULL ? PyObject_GetAttrString(os, "environ") : NULL;
    v = PyUnicode_DecodeFSDefault(value);
    if (environ != NULL && v != NULL && PyMapping_SetItemString(environ, name, v) == 0) {
        rc = 0;
    } else {
        cg_err_from_python(err);
        cg_err_prefix(err, "dirty arbiter: os.environ[%s]", name);
    }
    Py_XDECREF(v);
    Py_XDECREF(environ);
    Py_XDECREF(os);
    return rc;
}

/* The arbiter's socket is made by the master, before any HTTP worker or
 * the arbiter is forked, and held by the master for its whole life: a call
 * that connects while the arbiter is still importing its apps, or while a
 * dead arbiter is being replaced, waits in the listen queue for the next
 * arbiter (within the call's timeout) instead of failing to connect. Each
 * arbiter accepts on the inherited descriptor. */
static int listen_on(struct cg_err *err)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        cg_err_set(err, "dirty arbiter: socket: %s", strerror(errno));
        return -1;
    }
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(sock_path, 0600) < 0 ||
        listen(fd, SOMAXCONN) < 0) {
        cg_err_set(err, "dirty arbiter: cannot listen on %s: %s", sock_path, strerror(errno));
        close(fd);
        return -1;
    }
    listen_fd = fd;
    return 0;
}

int cg_dirty_prepare(struct cg_conf *conf, struct cg_err *err)
{
    const char *tmp = getenv("TMPDIR");

    if (sock_path[0] != '\0') {
        return 0; /* already prepared (arbiter respawn) */
    }
    if (tmp == NULL || tmp[0] == '\0') {
        tmp = "/tmp";
    }
    snprintf(sock_dir, sizeof(sock_dir), "%s/cgunicorn-dirty-XXXXXX", tmp);
    if (mkdtemp(sock_dir) == NULL) { /* mode 0700 */
        cg_err_set(err, "dirty arbiter: cannot create a private socket directory under %s: %s; "
                   "set TMPDIR to a writable directory", tmp, strerror(errno));
        sock_dir[0] = '\0';
        return -1;
    }
    if (strlen(sock_dir) + sizeof("/arbiter.sock") > sizeof(sock_path)) {
        cg_err_set(err, "dirty arbiter: socket path under '%s' would exceed %zu bytes; "
                   "set TMPDIR to a shorter directory", sock_dir, sizeof(sock_path) - 1);
        rmdir(sock_dir);
        sock_dir[0] = '\0';
        return -1;
    }
    snprintf(sock_path, sizeof(sock_path), "%s/arbiter.sock", sock_dir);
    if (listen_on(err) < 0) {
        cg_dirty_cleanup();
        return -1;
    }
    if (export_env("GUNICORN_DIRTY_SOCKET", sock_path, err) < 0) {
        return -1;
    }
    if (conf->dirty_max_message_size > 0) {
        char size[32];
        snprintf(size, sizeof(size), "%ld", conf->dirty_max_message_size);
        if (export_env("CGUNICORN_DIRTY_MAX_MESSAGE_SIZE", size, err) < 0) {
            return -1;
        }
    }
    /* zero-copy payloads (cg_dirty_fds.h): the clients' threshold and bound */
    char zc[32], maxp[32];
    snprintf(zc, sizeof(zc), "%ld", conf->dirty_zero_copy_threshold);
    snprintf(maxp, sizeof(maxp), "%ld", conf->dirty_max_payload_size);
    if (export_env("CGUNICORN_DIRTY_ZERO_COPY_THRESHOLD", zc, err) < 0 ||
        export_env("CGUNICORN_DIRTY_MAX_PAYLOAD_SIZE", maxp, err) < 0) {
        return -1;
    }
    return 0;
}

void cg_dirty_cleanup(void)
{
    cg_dirty_close_listener();
    if (sock_path[0] != '\0') {
        unlink(sock_path);
    }
    if (sock_dir[0] != '\0') {
        rmdir(sock_dir);
    }
}

void cg_dirty_close_listener(void)
{
    if (listen_fd >= 0) {
        close(listen_fd);
        listen_fd = -1;
    }
}

/* ------------------------------------------------------------------ */
/* Workers                                                             */

void cg_dirty_arb_kill(struct cg_dirty_arb *arb, struct cg_dirty_wk *w, int sig)
{
    cg_sup_kill(&arb->sup, w->pid, sig);
}

/* Closes, in a new worker, the arbiter's fds it must not hold: the
 * listener, client connections and the other workers' links. (The event
 * base itself is left alone: see STYLE.md on fork and epoll.) */
static void close_arbiter_fds(struct cg_dirty_arb *arb)
{
    if (arb->listen_fd >= 0) {
        close(arb->listen_fd);
    }
    for (struct cg_dirty_client *cl = arb->clients; cl != NULL; cl = cl->next) {
        close(bufferevent_getfd(cl->bev));
    }
    for (struct cg_dirty_wk *w = arb->pool.workers; w != NULL; w = w->next) {
        if (w->link != NULL) {
            close(bufferevent_getfd(w->link));
        }
    }
}

static void log_spawned(struct cg_dirty_arb *arb, struct cg_dirty_wk *w, const char *gpu)
{
    char list[2048];
    size_t n = 0;

    n += (size_t)snprintf(list + n, sizeof(list) - n, "[");
    for (size_t i = 0; i < arb->pool.napps && n < sizeof(list); i++) {
        if (w->apps & (UINT64_C(1) << i)) {
            n += (size_t)snprintf(list + n, sizeof(list) - n, "%s'%s'", n > 1 ? ", " : "",
                                  arb->pool.apps[i].path);
        }
    }
    if (n < sizeof(list)) {
        snprintf(list + n, sizeof(list) - n, "]");
    }
    if (gpu != NULL) {
        cg_log(CG_LOG_INFO, "Spawned dirty worker (pid: %d) with apps: %s on device %s "
               "(CUDA_VISIBLE_DEVICES=%s)", (int)w->pid, list, gpu, gpu);
    } else {
        cg_log(CG_LOG_INFO, "Spawned dirty worker (pid: %d) with apps: %s", (int)w->pid, list);
    }
}

static unsigned long max_served(const struct cg_conf *conf);

/* dirty_gpus: each device's live workers, for /metrics. */
static void publish_devices(struct cg_dirty_arb *arb)
{
    size_t n = arb->gpus.n < CG_METRICS_DIRTY_DEVICES ? arb->gpus.n : CG_METRICS_DIRTY_DEVICES;
    int workers[CG_METRICS_DIRTY_DEVICES] = {0};

    if (n == 0) {
        return;
    }
    for (const struct cg_dirty_wk *w = arb->pool.workers; w != NULL; w = w->next) {
        size_t i = w->slot >= 0 ? (size_t)w->slot % arb->gpus.n : n;
        if (i < n) {
            workers[i]++;
        }
    }
    cg_metrics_dirty_devices((const char *const *)arb->gpus.ids, workers, n);
}

/* Forks one worker for the apps the pool says need one. Returns 1 when a
 * worker was started, 0 when no app needs another worker, -1 on failure. */
static int spawn_worker(struct cg_dirty_arb *arb)
{
    uint64_t apps = cg_dirty_pool_apps_for_new(&arb->pool);
    const char *paths[CG_DIRTY_MAX_APPS];
    size_t npaths = 0;
    struct cg_dirty_wk *w = NULL;
    int sv[2];
    pid_t pid;

    if (apps == 0) {
        cg_log_debug("No apps need more dirty workers, skipping spawn");
        return 0;
    }
    for (size_t i = 0; i < arb->pool.napps; i++) {
        if (apps & (UINT64_C(1) << i)) {
            paths[npaths++] = arb->pool.apps[i].path;
        }
    }
    w = calloc(1, sizeof(*w));
    if (w == NULL || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        cg_log_errno(CG_LOG_ERROR, errno, "dirty arbiter: cannot set up a dirty worker");
        free(w);
        cg_dirty_pool_respawn_push(&arb->pool, apps);
        return -1;
    }
    w->age = ++arb->worker_age;
    w->apps = apps;
    w->slot = cg_dirty_pool_free_slot(&arb->pool);
    w->replaces = arb->next_replaces;
    arb->next_replaces = 0;
    w->max_served = max_served(arb->conf);
    const char *gpu = cg_dirty_gpus_for_slot(&arb->gpus, w->slot);
    cg_dirty_socket_tune(sv[1]);
    struct cg_sup_spec spec = {
        .role = CG_ROLE_DIRTY_WORKER,
        .respawn = CG_SUP_RESPAWN_ON_CRASH,
        /* import + init() are bounded by dirty_boot_timeout, not dirty_timeout */
        .boot_ms = arb->conf->dirty_boot_timeout > 0
                       ? (uint64_t)arb->conf->dirty_boot_timeout * 1000u
                       : 0,
        .boot_error_code = CG_DIRTY_EXIT_BOOT_ERROR,
        .owner = w,
    };
    pid = cg_sup_spawn(&arb->sup, &spec);
    if (pid < 0) {
        cg_log_errno(CG_LOG_ERROR, errno, "dirty arbiter: fork of a dirty worker failed");
        close(sv[0]);
        close(sv[1]);
        free(w);
        cg_dirty_pool_respawn_push(&arb->pool, apps);
        return -1;
    }
    if (pid == 0) {
        struct cg_dirty_worker_spec spec = {
            .conf = arb->conf,
            .hooks = arb->hooks,
            .fd = sv[1],
            .age = w->age,
            .app_paths = paths,
            .napps = npaths,
            .pyarb = arb->pyarb,
            .max_message = arb->max_message,
            .gpu = gpu,
        };
        close(sv[0]);
        close_arbiter_fds(arb);
        cg_dirty_worker_main(&spec);
    }
    close(sv[1]);
    w->pid = pid;
    w->fd = sv[0];
    cg_dirty_pool_worker_add(&arb->pool, w);
    log_spawned(arb, w, gpu);
    publish_devices(arb);
    if (cg_dirty_relay_link_open(arb, w) < 0) {
        cg_dirty_arb_kill(arb, w, SIGKILL);
        w->link_dead = true;
        return -1;
    }
    cg_dirty_relay_pump(arb, w);
    return 1;
}

/* Workers that count towards num_workers: a recycling one does not (its
 * replacement does), though it serves until the replacement has booted. */
static int live_workers(const struct cg_dirty_arb *arb)
{
    int n = 0;
    for (const struct cg_dirty_wk *w = arb->pool.workers; w != NULL; w = w->next) {
        if (!w->retiring && !w->link_dead && !w->recycling) {
            n++;
        }
    }
    return n;
}

/* Stops routing to `w` and asks it to finish its calls and exit. */
static void retire(struct cg_dirty_arb *arb, struct cg_dirty_wk *w)
{
    w->retiring = true;
    cg_sup_stop_one(&arb->sup, w->pid, SIGTERM);
}

/* Brings the live worker count to num_workers (spawn, or retire oldest). */
static void manage_workers(struct cg_dirty_arb *arb)
{
    if (arb->state != CG_DIRTY_ARB_RUNNING) {
        return;
    }
    if (arb->respawn_at != 0 && cg_monotonic_ms() < arb->respawn_at) {
        return; /* backing off after boot failures; the tick tries again */
    }
    arb->respawn_at = 0;
    while (live_workers(arb) < arb->num_workers) {
        if (spawn_worker(arb) <= 0) {
            break;
        }
    }
    while (live_workers(arb) > arb->num_workers) {
        struct cg_dirty_wk *oldest = NULL;
        for (struct cg_dirty_wk *w = arb->pool.workers; w != NULL; w = w->next) {
            if (!w->retiring && !w->link_dead && (oldest == NULL || w->age < oldest->age)) {
                oldest = w;
            }
        }
        retire(arb, oldest);
    }
}

/* The dirty_max_requests bound of a new worker: the setting plus a random
 * 0..jitter (0: none). */
static unsigned long max_served(const struct cg_conf *conf)
{
    if (conf->dirty_max_requests <= 0) {
        return 0;
    }
    unsigned long n = (unsigned long)conf->dirty_max_requests;
    if (conf->dirty_max_requests_jitter > 0) {
        n += (unsigned long)random() % ((unsigned long)conf->dirty_max_requests_jitter + 1u);
    }
    return n;
}

/* Replaces `w` without failing a call: a new worker with the same apps (and
 * the same slot, so the same device) is started at once; `w` keeps serving
 * until the new one has booted, then it is retired (finishes its calls and
 * exits). In a one-worker pool calls so never wait for the replacement's
 * init(). */
static void recycle(struct cg_dirty_arb *arb, struct cg_dirty_wk *w, const char *why)
{
    if (w->recycling || w->retiring || w->link_dead || arb->state != CG_DIRTY_ARB_RUNNING) {
        return;
    }
    cg_log(CG_LOG_INFO, "Dirty worker (pid:%d) %s; starting its replacement", (int)w->pid,
           why);
    w->recycling = true;
    cg_dirty_pool_respawn_push(&arb->pool, w->apps);
    arb->next_replaces = w->pid;
    manage_workers(arb);
    arb->next_replaces = 0;
}

void cg_dirty_arb_call_served(struct cg_dirty_arb *arb, struct cg_dirty_wk *w)
{
    w->served++;
    if (w->max_served > 0 && w->served >= w->max_served) {
        char why[96];
        snprintf(why, sizeof(why), "served %lu calls (dirty_max_requests)", w->served);
        recycle(arb, w, why);
    }
}

void cg_dirty_arb_worker_booted(struct cg_dirty_arb *arb, struct cg_dirty_wk *w)
{
    arb->pool_booted = true;
    arb->boot_failures = 0; /* the back-off starts again at 1 s */
    arb->respawn_at = 0;
    struct cg_dirty_wk *old = w->replaces ? cg_dirty_pool_worker_by_pid(&arb->pool, w->replaces)
                                          : NULL;
    if (old == NULL || !old->recycling || old->retiring) {
        old = NULL; /* its own replacement died: any recycling worker of the same apps */
        for (struct cg_dirty_wk *o = arb->pool.workers; o != NULL && old == NULL; o = o->next) {
            if (o->recycling && !o->retiring && o->apps == w->apps) {
                old = o;
            }
        }
    }
    if (old != NULL) {
        retire(arb, old);
    }
    cg_dirty_relay_pump(arb, w);
}

/* dirty_max_worker_memory: recycles each booted worker above the bound. */
static void check_memory(struct cg_dirty_arb *arb, uint64_t now)
{
    int limit = arb->conf->dirty_max_worker_memory;

    if (limit <= 0 || now < arb->next_mem_check) {
        return;
    }
    arb->next_mem_check = now + MEM_CHECK_MS;
    for (struct cg_dirty_wk *w = arb->pool.workers; w != NULL; w = w->next) {
        if (!w->booted || w->recycling || w->retiring || w->link_dead) {
            continue;
        }
        long mb = cg_sup_rss_mb(w->pid);
        if (mb > limit) {
            char why[128];
            snprintf(why, sizeof(why), "uses %ld MB, over dirty_max_worker_memory (%d MB)", mb,
                     limit);
            recycle(arb, w, why);
        }
    }
}

static void begin_stop(struct cg_dirty_arb *arb, bool graceful, int status);

/* The supervisor reaped a dirty worker (its exit already logged): fail
 * its calls, forget it, and have it replaced unless it was asked to stop or
 * its apps cannot load. */
static void on_worker_exit(struct cg_sup *sup, const struct cg_sup_exit *ex, void *arg)
{
    struct cg_dirty_arb *arb = arg;
    struct cg_dirty_wk *w = ex->owner;
    bool boot_failed = false;
    (void)sup;

    if (w == NULL) {
        return;
    }
    bool boot_error = !w->booted && (ex->code == CG_DIRTY_EXIT_BOOT_ERROR || ex->boot_timed_out);
    if (ex->code == CG_DIRTY_EXIT_BOOT_ERROR && !w->booted) {
        cg_log(CG_LOG_ERROR, "Dirty worker failed to boot (pid:%d)", (int)ex->pid);
    }
    if (!arb->pool_booted) {
        /* start-up: also a worker stopped because another failed to boot */
        boot_failed = boot_error || (arb->boot_error_logged && !w->booted);
    }
    cg_dirty_relay_link_lost(arb, w, "it exited or crashed");
    if (!w->retiring && !w->recycling && arb->state == CG_DIRTY_ARB_RUNNING && !boot_failed) {
        cg_dirty_pool_respawn_push(&arb->pool, w->apps); /* a recycling one has its own */
    }
    cg_dirty_pool_worker_remove(&arb->pool, w);
    free(w);
    publish_devices(arb);
    cg_log(CG_LOG_INFO, "Dirty worker exited (pid:%d)", (int)ex->pid);
    if (boot_failed && arb->state != CG_DIRTY_ARB_STOPPING) {
        /* At start-up a dirty app that cannot load would fail again: stop
         * (once, with the traceback) instead of respawning in a loop
         * (gunicorn's "Worker failed to boot"). */
        cg_log(CG_LOG_ERROR, "Dirty arbiter stopping: %s; exit status %d",
               ex->boot_timed_out ? "a dirty worker did not boot within dirty_boot_timeout"
                                  : "a dirty app failed to load (see the traceback above)",
               CG_DIRTY_EXIT_BOOT_ERROR);
        begin_stop(arb, false, CG_DIRTY_EXIT_BOOT_ERROR);
    } else if (boot_error && arb->state == CG_DIRTY_ARB_RUNNING) {
        /* After boot (a replacement failed: a flaky model download, a GPU
         * out of memory): keep serving with the workers left and try again
         * later, 1 s, 2 s, 4 s ... 60 s apart, until one boots. */
        uint64_t d = cg_sup_backoff_ms(++arb->boot_failures, BOOT_BACKOFF_BASE_MS,
                                       BOOT_BACKOFF_MAX_MS);
        arb->respawn_at = cg_monotonic_ms() + d;
        cg_log(CG_LOG_WARNING, "Dirty worker failed to boot %u time(s) in a row; next attempt "
               "in %llu s", arb->boot_failures, (unsigned long long)(d / 1000u));
    }
}

/* Reaps every exited child and respawns what the pool still needs. */
static void reap_workers(struct cg_dirty_arb *arb)
{
    cg_sup_reap(&arb->sup);
    manage_workers(arb);
}

/* ------------------------------------------------------------------ */
/* Stopping                                                            */

static void send_all(struct cg_dirty_arb *arb, int sig)
{
    cg_sup_signal(&arb->sup, DIRTY_WORKERS, sig);
}

/* Tells every worker to exit with `sig`; the supervisor sends KILL to those
 * still there at `deadline_ms`, and again every 5 s. */
static void stop_workers(struct cg_dirty_arb *arb, int sig, uint64_t deadline_ms)
{
    arb->state = CG_DIRTY_ARB_STOPPING;
    cg_sup_stop_start(&arb->sup, DIRTY_WORKERS, sig, deadline_ms);
}

static void stop_listening(struct cg_dirty_arb *arb)
{
    if (arb->ev_listen != NULL) {
        event_free(arb->ev_listen);
        arb->ev_listen = NULL;
    }
    if (arb->listen_fd >= 0) {
        close(arb->listen_fd);
        arb->listen_fd = -1;
    }
}

/* graceful: let calls finish (up to dirty_graceful_timeout), then TERM the
 * workers; otherwise QUIT them at once. */
static void begin_stop(struct cg_dirty_arb *arb, bool graceful, int status)
{
    if (status != 0) {
        arb->exit_status = status;
    }
    stop_listening(arb);
    if (graceful) {
        if (arb->state == CG_DIRTY_ARB_RUNNING) {
            arb->state = CG_DIRTY_ARB_DRAINING;
            arb->stop_deadline = cg_monotonic_ms() +
                                 (uint64_t)arb->conf->dirty_graceful_timeout * 1000u;
        }
        cg_dirty_arb_maybe_stop(arb);
        return;
    }
    if (arb->state != CG_DIRTY_ARB_STOPPING) {
        arb->state = CG_DIRTY_ARB_STOPPING;
        cg_dirty_relay_abort_all(arb, "DirtyWorkerError",
                                 "The dirty arbiter stopped before the call finished");
        stop_workers(arb, SIGQUIT,
                     cg_monotonic_ms() + (uint64_t)arb->conf->dirty_graceful_timeout * 1000u);
    }
    if (arb->pool.nworkers == 0) {
        event_base_loopbreak(arb->base);
    }
}

void cg_dirty_arb_maybe_stop(struct cg_dirty_arb *arb)
{
    if (arb->state == CG_DIRTY_ARB_DRAINING && cg_dirty_relay_pending(arb) == 0) {
        stop_workers(arb, SIGTERM, arb->stop_deadline); /* KILL when draining would end */
    }
    if (arb->state == CG_DIRTY_ARB_STOPPING && arb->pool.nworkers == 0) {
        event_base_loopbreak(arb->base);
    }
}

/* Every 200 ms: parent alive? shutdown deadlines. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct cg_dirty_arb *arb = arg;
    uint64_t now = cg_monotonic_ms();
    (void)fd;
    (void)what;

    if (arb->state == CG_DIRTY_ARB_RUNNING && getppid() != arb->ppid) {
        cg_log(CG_LOG_WARNING, "Parent changed, shutting down dirty arbiter");
        begin_stop(arb, true, 0);
    }
    if (arb->state == CG_DIRTY_ARB_DRAINING && now >= arb->stop_deadline) {
        cg_log(CG_LOG_WARNING, "Dirty arbiter: %zu call(s) still running after "
               "dirty_graceful_timeout (%ds); stopping workers", cg_dirty_relay_pending(arb),
               arb->conf->dirty_graceful_timeout);
        cg_dirty_relay_abort_all(arb, "DirtyWorkerError",
                                 "The dirty arbiter stopped before the call finished "
                                 "(dirty_graceful_timeout)");
        stop_workers(arb, SIGTERM, now + 1000u);
    }
    cg_sup_tick(&arb->sup, now); /* KILL past the stop deadline or the boot deadline */
    if (arb->state == CG_DIRTY_ARB_RUNNING) {
        check_memory(arb, now);
    }
    reap_workers(arb);
    cg_dirty_arb_maybe_stop(arb);
}

/* ------------------------------------------------------------------ */
/* Signals                                                             */

static void on_signals(evutil_socket_t fd, short what, void *arg)
{
    struct cg_dirty_arb *arb = arg;
    (void)fd;
    (void)what;

    cg_sig_drain();
    /* Stop requests first: when the whole process group gets TERM, the
     * workers' exits must not be taken for crashes and respawned. */
    if (cg_sig_take(SIGQUIT)) {
        cg_log(CG_LOG_INFO, "Dirty arbiter: immediate shutdown (QUIT)");
        begin_stop(arb, false, 0);
    }
    bool term = cg_sig_take(SIGTERM), intr = cg_sig_take(SIGINT);
    if (term || intr) {
        cg_log(CG_LOG_INFO, "Dirty arbiter: graceful shutdown (%s)", term ? "TERM" : "INT");
        begin_stop(arb, true, 0);
    }
    if (cg_sig_take(SIGCHLD)) {
        reap_workers(arb);
    }
    if (cg_sig_take(SIGUSR1)) {
        cg_log(CG_LOG_INFO, "Dirty arbiter: reopening log files");
        cg_log_reopen();
        send_all(arb, SIGUSR1);
    }
    if (arb->state != CG_DIRTY_ARB_RUNNING) {
        return;
    }
    if (cg_sig_take(SIGHUP)) {
        cg_log(CG_LOG_INFO, "Reloading dirty workers");
        for (struct cg_dirty_wk *w = arb->pool.workers; w != NULL; w = w->next) {
            w->retiring = true; /* the new ones are counted without them */
        }
        arb->pool.nrespawn = 0;
        manage_workers(arb);
        for (struct cg_dirty_wk *w = arb->pool.workers; w != NULL; w = w->next) {
            if (w->retiring) {
                cg_sup_stop_one(&arb->sup, w->pid, SIGTERM);
            }
        }
    }
    if (cg_sig_take(SIGTTIN)) {
        arb->num_workers++;
        cg_log(CG_LOG_INFO, "SIGTTIN: Increasing dirty workers to %d", arb->num_workers);
        manage_workers(arb);
    }
    if (cg_sig_take(SIGTTOU)) {
        int min = cg_dirty_pool_min_workers(&arb->pool);
        if (arb->num_workers <= min) {
            cg_log(CG_LOG_WARNING,
                   "SIGTTOU: Cannot decrease below %d workers (required by app specs)", min);
        } else {
            arb->num_workers--;
            cg_log(CG_LOG_INFO, "SIGTTOU: Decreasing dirty workers to %d", arb->num_workers);
            manage_workers(arb);
        }
    }
}

/* ------------------------------------------------------------------ */
/* Start-up                                                            */

/* Parses dirty_apps and fills in limits from the classes' `workers`. */
static int load_apps(struct cg_dirty_arb *arb, struct cg_err *err)
{
    const char *paths[CG_DIRTY_MAX_APPS];
    int limits[CG_DIRTY_MAX_APPS];
    bool probe = false;

    for (size_t i = 0; i < arb->conf->dirty_apps.n; i++) {
        if (cg_dirty_pool_add_app(&arb->pool, arb->conf->dirty_apps.v[i], err) < 0) {
            return -1;
        }
    }
    for (size_t i = 0; i < arb->pool.napps; i++) {
        paths[i] = arb->pool.apps[i].path;
        probe = probe || !arb->pool.apps[i].limit_from_spec;
    }
    if (!probe) {
        return 0;
    }
    if (cg_dirty_worker_probe(paths, arb->pool.napps, limits, err) < 0) {
        cg_log(CG_LOG_WARNING, "Could not read the workers attribute of the dirty apps: %s",
               err->msg);
        return 0;
    }
    for (size_t i = 0; i < arb->pool.napps; i++) {
        if (!arb->pool.apps[i].limit_from_spec && limits[i] > 0) {
            arb->pool.apps[i].limit = limits[i];
        }
    }
    return 0;
}

/* Builds the hooks' `arbiter` object and runs on_dirty_starting(arbiter),
 * in this process, as gunicorn does. */
static int run_starting_hook(struct cg_dirty_arb *arb, struct cg_err *err)
{
    PyObject *make = NULL, *apps = NULL, *logf = NULL, *res = NULL; /* owned */
    int rc = -1;

    make = cg_dirty_py_helper("make_arbiter");
    apps = PyList_New(0);
    logf = cg_dirty_py_log_func();
    if (make == NULL || apps == NULL || logf == NULL) {
        goto cleanup;
    }
    for (size_t i = 0; i < arb->pool.napps; i++) {
        PyObject *s = PyUnicode_FromString(arb->pool.apps[i].path);
        if (s == NULL || PyList_Append(apps, s) < 0) {
            Py_XDECREF(s);
            goto cleanup;
        }
        Py_DECREF(s);
    }
    arb->pyarb = PyObject_CallFunction(make, "isOiOO", (int)getpid(), arb->socket_path, apps,
                                       arb->num_workers,
                                       arb->conf->values ? arb->conf->values : Py_None, logf);
    if (arb->pyarb == NULL) {
        goto cleanup;
    }
    if (arb->hooks->on_dirty_starting != NULL) {
        res = PyObject_CallOneArg(arb->hooks->on_dirty_starting, arb->pyarb);
        if (res == NULL) {
            goto cleanup;
        }
    }
    rc = 0;
cleanup:
    if (rc < 0) {
        PyObject *tb = cg_py_format_exception();
        cg_err_set(err, "on_dirty_starting hook failed:\n%s", tb ? PyUnicode_AsUTF8(tb) : "?");
        Py_XDECREF(tb);
        PyErr_Clear();
    }
    Py_XDECREF(res);
    Py_XDECREF(logf);
    Py_XDECREF(apps);
    Py_XDECREF(make);
    return rc;
}

/* dirty_gpus: the device list. "auto" without a usable nvidia-smi is a
 * warning, not an error (the same configuration runs on a machine without
 * GPUs): the workers then start without CUDA_VISIBLE_DEVICES. */
static int setup_gpus(struct cg_dirty_arb *arb, struct cg_err *err)
{
    const char *setting = arb->conf->dirty_gpus;
    struct cg_err e = { { 0 } };

    if (setting == NULL || setting[0] == '\0') {
        return 0;
    }
    if (cg_dirty_gpus_resolve(&arb->gpus, setting, &e) < 0) {
        if (strcmp(setting, "auto") == 0) {
            cg_log(CG_LOG_WARNING, "dirty_gpus auto: %s; dirty workers start without "
                   "CUDA_VISIBLE_DEVICES", e.msg);
            return 0;
        }
        cg_err_set(err, "%s", e.msg);
        return -1;
    }
    size_t len = 0;
    char list[512] = "";
    for (size_t i = 0; i < arb->gpus.n && len < sizeof(list); i++) {
        len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", i ? "," : "",
                                arb->gpus.ids[i]);
    }
    if ((size_t)arb->num_workers > arb->gpus.n) {
        cg_log(CG_LOG_WARNING, "dirty_gpus: %d dirty workers for %zu device(s) [%s]: devices "
               "are shared round-robin (worker slot i gets device i mod %zu)", arb->num_workers,
               arb->gpus.n, list, arb->gpus.n);
    } else {
        cg_log(CG_LOG_INFO, "dirty_gpus: one device per dirty worker from [%s]", list);
    }
    return 0;
}

static int arbiter_setup(struct cg_dirty_arb *arb, struct cg_err *err)
{
    if (load_apps(arb, err) < 0 || run_starting_hook(arb, err) < 0) {
        return -1;
    }
    if (setup_gpus(arb, err) < 0) {
        return -1;
    }
    if (cg_sig_open_role(CG_ROLE_DIRTY_ARBITER, err) < 0) {
        return -1;
    }
    if (listen_fd < 0) {
        cg_err_set(err, "no listening socket (cg_dirty_prepare was not called)");
        return -1;
    }
    arb->listen_fd = listen_fd; /* inherited from the master, which keeps its copy */
    listen_fd = -1;
    cg_log(CG_LOG_INFO, "Dirty arbiter listening on %s", arb->socket_path);
    arb->base = event_base_new();
    if (arb->base == NULL) {
        cg_err_set(err, "cannot create the event loop");
        return -1;
    }
    struct timeval tick = { 0, 200000 };
    arb->ev_listen = event_new(arb->base, arb->listen_fd, EV_READ | EV_PERSIST,
                               cg_dirty_relay_on_accept, arb);
    arb->ev_sig = event_new(arb->base, cg_sig_fd(), EV_READ | EV_PERSIST, on_signals, arb);
    arb->ev_tick = event_new(arb->base, -1, EV_PERSIST, on_tick, arb);
    if (arb->ev_listen == NULL || arb->ev_sig == NULL || arb->ev_tick == NULL ||
        event_add(arb->ev_listen, NULL) < 0 || event_add(arb->ev_sig, NULL) < 0 ||
        event_add(arb->ev_tick, &tick) < 0) {
        cg_err_set(err, "cannot watch the arbiter's sockets");
        return -1;
    }
    return 0;
}

static void on_flush_limit(evutil_socket_t fd, short what, void *arg)
{
    bool *expired = arg;
    (void)fd;
    (void)what;
    *expired = true;
}

/* Writes what is left in the clients' buffers (final errors) before exit:
 * runs the loop (which wakes on writable sockets) for at most 100 ms. */
static void flush_clients(struct cg_dirty_arb *arb)
{
    bool expired = false;
    struct timeval limit = { 0, 100000 };
    struct event *timer = evtimer_new(arb->base, on_flush_limit, &expired);

    if (timer == NULL || evtimer_add(timer, &limit) < 0) {
        expired = true;
    }
    while (!expired && arb->clients != NULL) {
        bool pending = false;
        for (struct cg_dirty_client *cl = arb->clients; cl != NULL; cl = cl->next) {
            pending = pending || evbuffer_get_length(bufferevent_get_output(cl->bev)) > 0;
        }
        if (!pending) {
            break;
        }
        event_base_loop(arb->base, EVLOOP_ONCE);
    }
    if (timer != NULL) {
        event_free(timer);
    }
}

static void arbiter_main(struct cg_conf *conf, const struct cg_hook_table *hooks)
    __attribute__((noreturn));

static void arbiter_main(struct cg_conf *conf, const struct cg_hook_table *hooks)
{
    static struct cg_dirty_arb arb; /* lives until _exit */
    struct cg_err err = { { 0 } };

    cg_dirty_mem_tune();
    arb.conf = conf;
    arb.hooks = hooks;
    arb.listen_fd = -1;
    arb.ppid = getppid();
    cg_sup_init(&arb.sup, on_worker_exit, &arb);
    arb.num_workers = conf->dirty_workers;
    arb.timeout = conf->dirty_timeout > 0 ? (double)conf->dirty_timeout : 0;
    arb.queue_limit = conf->dirty_queue_limit > 0 ? (size_t)conf->dirty_queue_limit : 0;
    arb.queue_timeout = conf->dirty_queue_timeout > 0 ? (double)conf->dirty_queue_timeout : 0;
    arb.max_message = conf->dirty_max_message_size > 0 ? (size_t)conf->dirty_max_message_size
                                                        : CG_DIRTY_DEFAULT_MAX_MESSAGE;
    snprintf(arb.socket_path, sizeof(arb.socket_path), "%s", sock_path);
    cg_dirty_pool_init(&arb.pool, conf->dirty_threads);
    cg_dirty_stash_init(&arb.stash);
    cg_proc_set_title("gunicorn: dirty-arbiter");
    cg_log(CG_LOG_INFO, "Dirty arbiter starting (pid: %d)", (int)getpid());

    if (arbiter_setup(&arb, &err) < 0) {
        cg_log(CG_LOG_ERROR, "Dirty arbiter failed to start: %s", err.msg);
        cg_py_flush_stdio();
        _exit(CG_DIRTY_EXIT_BOOT_ERROR);
    }
    manage_workers(&arb);
    event_base_dispatch(arb.base);

    flush_clients(&arb);
    /* The socket file stays: it belongs to the master, whose listener
     * queues calls for the next arbiter. */
    cg_log(CG_LOG_INFO, "Dirty arbiter exiting (pid: %d)", (int)getpid());
    cg_py_flush_stdio();
    _exit(arb.exit_status);
}

pid_t cg_dirty_arbiter_spawn(struct cg_sup *sup, struct cg_conf *conf,
                             const struct cg_hook_table *hooks, struct cg_err *err)
{
    struct cg_sup_spec spec = {
        .role = CG_ROLE_DIRTY_ARBITER,
        .respawn = CG_SUP_RESPAWN_ON_CRASH, /* by the master's loop */
        .boot_error_code = CG_DIRTY_ARBITER_EXIT_BOOT_ERROR,
    };
    pid_t pid;

    if (sock_path[0] == '\0' && cg_dirty_prepare(conf, err) < 0) {
        return -1;
    }
    pid = cg_sup_spawn(sup, &spec);
    if (pid < 0) {
        cg_err_set(err, "fork of the dirty arbiter failed: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        arbiter_main(conf, hooks);
    }
    cg_log(CG_LOG_INFO, "Spawned dirty arbiter (pid: %d) at %s", (int)pid, sock_path);
    return pid;
}
