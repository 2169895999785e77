/* The one process supervisor: every fork() and waitpid() of the server is
 * here. The master supervises its HTTP workers, the dirty arbiter and a
 * USR2 re-executed master with one `struct cg_sup`; the dirty arbiter
 * supervises its dirty workers with another. A child is spawned with a role,
 * a respawn policy and a boot deadline; exits are reaped into the owner's
 * callback and logged once, in gunicorn's words ("Worker (pid:N) was sent
 * SIGTERM!", "... exited with code N."); a graceful stop sends a signal,
 * waits on the self-pipe (core/cg_sig.c) until a deadline, then sends KILL.
 * One clock: cg_monotonic_ms() (core/cg_clock.c).
 *
 * Single-threaded: the master's or the arbiter's loop thread only. */
#ifndef CG_SUPERVISOR_H
#define CG_SUPERVISOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cg_proc.h"

/* A set of roles for cg_sup_signal() and cg_sup_stop(). */
#define CG_SUP_ROLE(r) (1u << (unsigned)(r))

enum cg_sup_respawn {
    CG_SUP_RESPAWN_NEVER,    /* a one-off child (a re-executed master) */
    CG_SUP_RESPAWN_ON_CRASH, /* replace it when it exits without being asked to stop,
                              * unless it failed to boot */
};

struct cg_sup_spec {
    enum cg_role role;           /* the child's cg_proc.role; names it in the exit line */
    enum cg_sup_respawn respawn;
    uint64_t boot_ms;            /* must be marked booted within this many ms, else it is
                                  * killed (SIGKILL); 0: no boot deadline */
    int boot_error_code;         /* the exit code meaning "failed to boot" (no respawn); 0: none */
    void *owner;                 /* the owner's record of the child, handed back on exit */
};

/* What the owner's callback learns about one reaped child. */
struct cg_sup_exit {
    pid_t pid;
    enum cg_role role;
    int status;          /* the raw wait status */
    int code;            /* exit code, or -1 when a signal ended it */
    int signo;           /* the signal that ended it, or 0 */
    bool stopping;       /* the owner had asked it to stop (cg_sup_stop_one, cg_sup_stop) */
    bool booted;         /* cg_sup_booted() was called for it */
    bool boot_timed_out; /* killed because its boot deadline passed */
    bool respawn;        /* its policy asks for a replacement */
    void *owner;         /* spec.owner */
};

struct cg_sup;
typedef void (*cg_sup_on_exit_fn)(struct cg_sup *sup, const struct cg_sup_exit *ex, void *arg);

struct cg_sup_child {
    pid_t pid;
    struct cg_sup_spec spec;
    uint64_t boot_deadline; /* cg_monotonic_ms() value, 0 when none or booted */
    bool booted;
    bool stopping;
    bool boot_timed_out;
};

struct cg_sup {
    struct cg_sup_child *kids; /* owned; n live entries */
    size_t n, cap;
    cg_sup_on_exit_fn on_exit; /* may be NULL */
    void *arg;
    uint64_t kill_at;          /* a stop's KILL deadline (cg_monotonic_ms), 0: none */
    unsigned kill_roles;       /* whom that KILL is for */
};

/* Empty supervisor whose reaped children go to `on_exit(sup, exit, arg)`. */
void cg_sup_init(struct cg_sup *sup, cg_sup_on_exit_fn on_exit, void *arg);

/* Frees the table (the children, if any, are left alone). */
void cg_sup_deinit(struct cg_sup *sup);

/* Forks a child of `role` without supervising it: CPython's embedder fork
 * protocol (PyOS_BeforeFork/AfterFork_*; the GIL held, no other thread
 * running), then in the child the signals reset (cg_sig_reset_child), the
 * listeners closed for a dirty arbiter or dirty worker, and cg_proc set.
 * For a child the caller waits for itself with cg_sup_wait_one() or never
 * (daemonizing). Returns the pid in the parent, 0 in the child, -1 with
 * errno. */
pid_t cg_sup_fork(enum cg_role role);

/* cg_sup_fork(spec->role) and, in the parent, records the child. Returns
 * as cg_sup_fork. In the child the supervisor's table is the parent's
 * copy: leave it alone. */
pid_t cg_sup_spawn(struct cg_sup *sup, const struct cg_sup_spec *spec);

/* The child told its owner it booted: its boot deadline is cleared. */
void cg_sup_booted(struct cg_sup *sup, pid_t pid);

/* Reaps every exited child (waitpid(-1, WNOHANG) until none): logs each
 * supervised child's exit once in gunicorn's format, removes it and calls
 * on_exit; an unknown pid is logged at debug ("Reaped unknown child
 * process"). Returns how many supervised children were reaped. */
int cg_sup_reap(struct cg_sup *sup);

/* Blocks until `pid`, an unsupervised child of cg_sup_fork(), exits;
 * stores its wait status. Not logged. Returns 0, or -1 with errno. */
int cg_sup_wait_one(pid_t pid, int *status);

/* Sends `signo` to one child (ESRCH is fine: it is being reaped). */
void cg_sup_kill(struct cg_sup *sup, pid_t pid, int signo);

/* Marks the child as asked to stop (no respawn) and sends `signo`. */
void cg_sup_stop_one(struct cg_sup *sup, pid_t pid, int signo);

/* Sends `signo` to every child whose role is in `roles` (CG_SUP_ROLE bits). */
void cg_sup_signal(struct cg_sup *sup, unsigned roles, int signo);

/* Children whose role is in `roles`. */
size_t cg_sup_count(const struct cg_sup *sup, unsigned roles);

/* The child record of `pid`, or NULL. */
struct cg_sup_child *cg_sup_find(struct cg_sup *sup, pid_t pid);

/* Starts a stop of the children in `roles`: marks them stopping, sends
 * `signo`, and arms a KILL at `deadline_ms` (cg_monotonic_ms; an earlier
 * armed deadline is kept). For an event loop that calls cg_sup_tick(). */
void cg_sup_stop_start(struct cg_sup *sup, unsigned roles, int signo, uint64_t deadline_ms);

/* Brings an armed KILL deadline forward to `deadline_ms` (never later). */
void cg_sup_stop_hasten(struct cg_sup *sup, uint64_t deadline_ms);

/* Enforces the deadlines at `now` (cg_monotonic_ms): a child past its boot
 * deadline is killed (logged once: its exit is not logged again), and past a stop's deadline the children
 * still there get SIGKILL (again every 5 s while any is left). Returns the
 * ms until the next deadline, or -1 when none is armed. */
int cg_sup_tick(struct cg_sup *sup, uint64_t now);

/* Called on each wake-up of cg_sup_stop(): may signal or hasten; returns
 * true when the wait is over before every child is gone. */
typedef bool (*cg_sup_wake_fn)(struct cg_sup *sup, void *arg);

/* A graceful stop that blocks: cg_sup_stop_start(roles, signo, deadline_ms),
 * then waits on the self-pipe (the GIL released), reaping, until the
 * children in `roles` are gone or `wake` says done; at the deadline the
 * rest get SIGKILL and are waited for. `wake` may be NULL; when it ends the
 * wait, the KILL deadline is disarmed. Needs the
 * self-pipe open with SIGCHLD recorded (cg_sig_open). Returns 0, or 1 when
 * some child had to be killed. */
int cg_sup_stop(struct cg_sup *sup, unsigned roles, int signo, uint64_t deadline_ms,
                cg_sup_wake_fn wake, void *arg);

/* Waits on the self-pipe (the GIL released) until the children in `roles`
 * are gone, `wake` says done, or `deadline_ms` passes; reaps meanwhile. No
 * signal is sent. Returns 0 when done, -1 at the deadline. */
int cg_sup_wait(struct cg_sup *sup, unsigned roles, uint64_t deadline_ms, cg_sup_wake_fn wake,
                void *arg);

/* The respawn back-off after `failures` boot failures in a row (the owner
 * counts them and resets the count once a child boots): 0 for none, then
 * base_ms, doubling, capped at max_ms (1 s, 2 s, 4 s ... 60 s). Pure. */
uint64_t cg_sup_backoff_ms(unsigned failures, uint64_t base_ms, uint64_t max_ms);

/* The resident set of process `pid` in MB (/proc/PID/statm), or -1 when it
 * cannot be read (gone). For the memory bounds (max_worker_memory,
 * dirty_max_worker_memory). */
long cg_sup_rss_mb(pid_t pid);

/* Other fds the waits on the self-pipe also watch and service: the
 * master's metrics listener and its clients, so they are answered while a
 * stop or a HUP drains the workers. `fill` writes up to `max` pollfds and
 * returns how many; `service` handles them after poll() returns, also on a timeout (never
 * blocks);
 * `atfork_child` runs in every forked child, where the poller is then
 * cleared. NULL clears it. */
struct pollfd;
struct cg_sup_poller {
    int (*fill)(struct pollfd *p, int max);
    void (*service)(const struct pollfd *p, int n);
    void (*atfork_child)(void);
};
#define CG_SUP_POLL_MAX 32
void cg_sup_set_poller(const struct cg_sup_poller *p);

/* poll() on the self-pipe (p[0]) and the poller's fds for up to `ms`, then
 * services the poller's; the caller drains the pipe. `p` has room for
 * `max` (CG_SUP_POLL_MAX) entries. Returns poll()'s result. */
int cg_sup_poll(struct pollfd *p, int max, int ms);

/* Logs one child's exit in gunicorn's words, under the name of `role`
 * ("Worker", "Dirty arbiter", "Dirty worker"; a re-executed master is not
 * logged): nothing for exit code 0; "<Name> (pid:N) exited with code C."
 * (error); "<Name> (pid:N) was sent SIGKILL! Perhaps out of memory?"
 * (error), "... was sent SIGTERM!" (info), "... was sent SIG<X>!" (warning). */
void cg_sup_log_exit(enum cg_role role, pid_t pid, int status);

#endif
