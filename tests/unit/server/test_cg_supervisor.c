/* Unit tests for the process supervisor (server/cg_supervisor.c) with real
 * child processes: one that exits at once, one that hangs until TERM, one
 * that ignores TERM (killed at the deadline), one that never boots. Each
 * is reaped into the callback and its exit logged exactly once, in
 * gunicorn's words. The log lines are caught with a log sink. */
#include "cg_test.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cg_clock.h"
#include "cg_log.h"
#include "cg_sig.h"
#include "cg_supervisor.h"

/* ---- what the log and the callback saw ---- */

static char logged[16384];
static size_t logged_len;

static int sink(enum cg_log_level level, bool exception, const char *text)
{
    static const char *names[] = { "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL" };
    (void)exception;
    int n = snprintf(logged + logged_len, sizeof(logged) - logged_len, "[%s] %s\n",
                     names[level], text);
    if (n > 0 && (size_t)n < sizeof(logged) - logged_len) {
        logged_len += (size_t)n;
    }
    return 0;
}

static int occurrences(const char *needle)
{
    int n = 0;
    for (const char *p = strstr(logged, needle); p != NULL; p = strstr(p + 1, needle)) {
        n++;
    }
    return n;
}

static struct cg_sup_exit exits[8];
static int nexits;

static void on_exit_cb(struct cg_sup *sup, const struct cg_sup_exit *ex, void *arg)
{
    (void)sup;
    (void)arg;
    if (nexits < 8) {
        exits[nexits++] = *ex;
    }
}

static void reset(struct cg_sup *sup)
{
    logged[0] = '\0';
    logged_len = 0;
    nexits = 0;
    cg_sup_init(sup, on_exit_cb, NULL);
}

/* ---- children ---- */

enum behaviour { EXIT_7, HANG, IGNORE_TERM };

/* Spawns a child that behaves as asked; returns once it is set up (a byte
 * on a pipe), so a signal sent next meets the intended disposition. */
static pid_t spawn(struct cg_sup *sup, enum cg_role role, enum behaviour b, uint64_t boot_ms)
{
    int fds[2];
    char c;
    struct cg_sup_spec spec = {
        .role = role,
        .respawn = CG_SUP_RESPAWN_ON_CRASH,
        .boot_ms = boot_ms,
        .boot_error_code = 3,
    };

    if (pipe(fds) < 0) {
        return -1;
    }
    pid_t pid = cg_sup_spawn(sup, &spec);
    if (pid == 0) {
        close(fds[0]);
        if (b == EXIT_7) {
            _exit(7);
        }
        if (b == IGNORE_TERM) {
            signal(SIGTERM, SIG_IGN);
        }
        if (write(fds[1], "", 1) < 0) {
            _exit(1);
        }
        for (;;) {
            pause();
        }
    }
    close(fds[1]);
    if (b != EXIT_7 && read(fds[0], &c, 1) != 1) {
        pid = -1;
    }
    close(fds[0]);
    return pid;
}

static char line[256];

static const char *fmt(const char *f, pid_t pid)
{
    snprintf(line, sizeof(line), f, (int)pid);
    return line;
}

/* ---- tests ---- */

static void test_child_that_exits_at_once_is_reaped_and_logged_once(void)
{
    struct cg_sup sup;
    reset(&sup);
    pid_t pid = spawn(&sup, CG_ROLE_WORKER, EXIT_7, 0);
    CG_CHECK(pid > 0);
    CG_CHECK_INT(cg_sup_count(&sup, CG_SUP_ROLE(CG_ROLE_WORKER)), 1);

    CG_CHECK_INT(cg_sup_wait(&sup, CG_SUP_ROLE(CG_ROLE_WORKER), cg_monotonic_ms() + 10000, NULL,
                             NULL), 0);
    CG_CHECK_INT(nexits, 1);
    CG_CHECK_INT(exits[0].pid, pid);
    CG_CHECK_INT(exits[0].role, CG_ROLE_WORKER);
    CG_CHECK_INT(exits[0].code, 7);
    CG_CHECK_INT(exits[0].signo, 0);
    CG_CHECK(exits[0].respawn); /* it was not asked to stop */
    CG_CHECK_INT(cg_sup_count(&sup, ~0u), 0);
    CG_CHECK_INT(occurrences(fmt("[ERROR] Worker (pid:%d) exited with code 7.\n", pid)), 1);
    CG_CHECK_INT(occurrences("(pid:"), 1);
    cg_sup_deinit(&sup);
}

static void test_hanging_child_stops_on_term(void)
{
    struct cg_sup sup;
    reset(&sup);
    pid_t pid = spawn(&sup, CG_ROLE_DIRTY_WORKER, HANG, 0);
    CG_CHECK(pid > 0);

    int killed = cg_sup_stop(&sup, CG_SUP_ROLE(CG_ROLE_DIRTY_WORKER), SIGTERM,
                             cg_monotonic_ms() + 30000, NULL, NULL);
    CG_CHECK_INT(killed, 0);
    CG_CHECK_INT(nexits, 1);
    CG_CHECK_INT(exits[0].pid, pid);
    CG_CHECK_INT(exits[0].signo, SIGTERM);
    CG_CHECK_INT(exits[0].code, -1);
    CG_CHECK(exits[0].stopping);
    CG_CHECK(!exits[0].respawn);
    CG_CHECK_INT(occurrences(fmt("[INFO] Dirty worker (pid:%d) was sent SIGTERM!\n", pid)), 1);
    CG_CHECK_INT(occurrences("(pid:"), 1);
    cg_sup_deinit(&sup);
}

static void test_child_ignoring_term_is_killed_at_the_deadline(void)
{
    struct cg_sup sup;
    reset(&sup);
    pid_t pid = spawn(&sup, CG_ROLE_WORKER, IGNORE_TERM, 0);
    CG_CHECK(pid > 0);

    uint64_t start = cg_monotonic_ms();
    int killed = cg_sup_stop(&sup, CG_SUP_ROLE(CG_ROLE_WORKER), SIGTERM, start + 300, NULL,
                             NULL);
    CG_CHECK_INT(killed, 1);
    CG_CHECK(cg_monotonic_ms() >= start + 300); /* not before the deadline */
    CG_CHECK_INT(nexits, 1);
    CG_CHECK_INT(exits[0].pid, pid);
    CG_CHECK_INT(exits[0].signo, SIGKILL);
    CG_CHECK_INT(occurrences(fmt("[ERROR] Worker (pid:%d) was sent SIGKILL! Perhaps out of "
                                 "memory?\n", pid)), 1);
    CG_CHECK_INT(occurrences("(pid:"), 1);
    CG_CHECK_INT(cg_sup_count(&sup, ~0u), 0);
    cg_sup_deinit(&sup);
}

static bool quick(struct cg_sup *sup, void *arg)
{
    int *calls = arg;
    if ((*calls)++ == 0) {
        cg_sup_stop_hasten(sup, cg_monotonic_ms()); /* as the master on INT during TERM */
    }
    return false;
}

static void test_stop_deadline_can_be_brought_forward(void)
{
    struct cg_sup sup;
    int calls = 0;
    reset(&sup);
    pid_t pid = spawn(&sup, CG_ROLE_WORKER, IGNORE_TERM, 0);
    CG_CHECK(pid > 0);

    CG_CHECK_INT(cg_sup_stop(&sup, CG_SUP_ROLE(CG_ROLE_WORKER), SIGTERM,
                             cg_monotonic_ms() + 600000, quick, &calls), 1);
    CG_CHECK(calls >= 1);
    CG_CHECK_INT(nexits, 1);
    CG_CHECK_INT(exits[0].signo, SIGKILL);
    cg_sup_deinit(&sup);
}

static bool done_at_once(struct cg_sup *sup, void *arg)
{
    (void)sup;
    (void)arg;
    return true;
}

static void test_stop_ended_by_its_owner_disarms_the_kill(void)
{
    struct cg_sup sup;
    reset(&sup);
    pid_t pid = spawn(&sup, CG_ROLE_WORKER, IGNORE_TERM, 0);
    CG_CHECK(pid > 0);

    CG_CHECK_INT(cg_sup_stop(&sup, CG_SUP_ROLE(CG_ROLE_WORKER), SIGTERM, cg_monotonic_ms(),
                             done_at_once, NULL), 0);
    CG_CHECK_INT(sup.kill_at, 0);
    CG_CHECK_INT(cg_sup_tick(&sup, cg_monotonic_ms() + 60000), -1); /* nothing armed */
    CG_CHECK_INT(kill(pid, 0), 0);                                  /* not killed */
    CG_CHECK_INT(nexits, 0);

    CG_CHECK_INT(cg_sup_stop(&sup, ~0u, SIGTERM, cg_monotonic_ms(), NULL, NULL), 1);
    CG_CHECK_INT(nexits, 1);
    CG_CHECK_INT(exits[0].signo, SIGKILL);
    cg_sup_deinit(&sup);
}

static void test_stop_leaves_other_roles_running(void)
{
    struct cg_sup sup;
    reset(&sup);
    pid_t master = spawn(&sup, CG_ROLE_MASTER, HANG, 0); /* as a USR2 master */
    pid_t worker = spawn(&sup, CG_ROLE_WORKER, HANG, 0);
    CG_CHECK(master > 0 && worker > 0);

    cg_sup_stop(&sup, CG_SUP_ROLE(CG_ROLE_WORKER), SIGTERM, cg_monotonic_ms() + 30000, NULL,
                NULL);
    CG_CHECK_INT(nexits, 1);
    CG_CHECK_INT(exits[0].pid, worker);
    CG_CHECK_INT(kill(master, 0), 0); /* still running */
    CG_CHECK_INT(cg_sup_count(&sup, CG_SUP_ROLE(CG_ROLE_MASTER)), 1);

    cg_sup_stop(&sup, CG_SUP_ROLE(CG_ROLE_MASTER), SIGTERM, cg_monotonic_ms() + 30000, NULL,
                NULL);
    CG_CHECK_INT(nexits, 2);
    CG_CHECK_INT(exits[1].pid, master);
    /* a re-executed master's exit is not logged (gunicorn forgets its pid) */
    CG_CHECK_INT(occurrences(fmt("(pid:%d)", master)), 0);
    cg_sup_deinit(&sup);
}

static void test_boot_deadline_kills_a_child_that_never_boots(void)
{
    struct cg_sup sup;
    reset(&sup);
    pid_t pid = spawn(&sup, CG_ROLE_DIRTY_WORKER, HANG, 200);
    CG_CHECK(pid > 0);

    CG_CHECK_INT(cg_sup_wait(&sup, CG_SUP_ROLE(CG_ROLE_DIRTY_WORKER), cg_monotonic_ms() + 30000,
                             NULL, NULL), 0);
    CG_CHECK_INT(nexits, 1);
    CG_CHECK(exits[0].boot_timed_out);
    CG_CHECK(!exits[0].booted);
    CG_CHECK(!exits[0].respawn); /* it would fail again */
    CG_CHECK_INT(exits[0].signo, SIGKILL);
    CG_CHECK_INT(occurrences(fmt("[ERROR] Dirty worker (pid:%d) did not boot within 200 ms; "
                                 "killing it\n", pid)), 1);
    /* reported once: the KILL it was sent is not logged as an exit too */
    CG_CHECK_INT(occurrences(fmt("Dirty worker (pid:%d) was sent SIGKILL!", pid)), 0);
    cg_sup_deinit(&sup);
}

static void test_backoff_doubles_to_its_cap(void)
{
    CG_CHECK(cg_sup_backoff_ms(0, 1000, 60000) == 0);
    CG_CHECK(cg_sup_backoff_ms(1, 1000, 60000) == 1000);
    CG_CHECK(cg_sup_backoff_ms(2, 1000, 60000) == 2000);
    CG_CHECK(cg_sup_backoff_ms(3, 1000, 60000) == 4000);
    CG_CHECK(cg_sup_backoff_ms(6, 1000, 60000) == 32000);
    CG_CHECK(cg_sup_backoff_ms(7, 1000, 60000) == 60000);
    CG_CHECK(cg_sup_backoff_ms(1000000, 1000, 60000) == 60000); /* no overflow */
    CG_CHECK(cg_sup_backoff_ms(3, 0, 60000) == 0);
}

static void test_booted_child_outlives_its_boot_deadline(void)
{
    struct cg_sup sup;
    reset(&sup);
    pid_t pid = spawn(&sup, CG_ROLE_DIRTY_WORKER, HANG, 50);
    CG_CHECK(pid > 0);
    cg_sup_booted(&sup, pid);

    CG_CHECK_INT(cg_sup_wait(&sup, CG_SUP_ROLE(CG_ROLE_DIRTY_WORKER), cg_monotonic_ms() + 300,
                             NULL, NULL), -1);
    CG_CHECK_INT(nexits, 0);
    cg_sup_stop(&sup, ~0u, SIGTERM, cg_monotonic_ms() + 30000, NULL, NULL);
    CG_CHECK_INT(nexits, 1);
    CG_CHECK(exits[0].booted);
    CG_CHECK_INT(exits[0].signo, SIGTERM);
    cg_sup_deinit(&sup);
}

/* A signal sent right after fork() meets the child before its handlers are
 * reset: it must stay pending for the child's own (default) disposition,
 * not run the parent's recording handler in the child and be forgotten. */
static void test_signal_sent_at_once_after_fork_is_not_lost(void)
{
    struct cg_sup sup;
    struct cg_sup_spec spec = { .role = CG_ROLE_WORKER };
    int lost = 0;
    reset(&sup);

    for (int i = 0; i < 100; i++) {
        nexits = 0;
        pid_t pid = cg_sup_spawn(&sup, &spec);
        if (pid == 0) {
            for (;;) {
                pause();
            }
        }
        CG_CHECK(pid > 0);
        kill(pid, SIGTERM);
        if (cg_sup_wait(&sup, ~0u, cg_monotonic_ms() + 2000, NULL, NULL) < 0) {
            lost++;
            cg_sup_stop(&sup, ~0u, SIGKILL, cg_monotonic_ms(), NULL, NULL);
        } else {
            CG_CHECK_INT(exits[0].signo, SIGTERM);
        }
        cg_sig_take(SIGTERM); /* a child may have recorded it on our pipe */
    }
    CG_CHECK_INT(lost, 0);
    cg_sup_deinit(&sup);
}

static void test_exit_line_formats(void)
{
    struct cg_sup sup;
    reset(&sup);
    cg_sup_log_exit(CG_ROLE_WORKER, 10, 0);          /* exit 0: nothing */
    cg_sup_log_exit(CG_ROLE_MASTER, 11, 1 << 8);     /* a USR2 master: nothing */
    CG_CHECK_STR(logged, "");
    cg_sup_log_exit(CG_ROLE_WORKER, 12, 3 << 8);
    cg_sup_log_exit(CG_ROLE_DIRTY_ARBITER, 13, SIGSEGV);
    cg_sup_log_exit(CG_ROLE_DIRTY_WORKER, 14, SIGTERM);
    cg_sup_log_exit(CG_ROLE_WORKER, 15, SIGKILL);
    cg_sup_log_exit(CG_ROLE_WORKER, 16, 40); /* a real-time signal has no name */
    CG_CHECK_STR(logged, "[ERROR] Worker (pid:12) exited with code 3.\n"
                         "[WARNING] Dirty arbiter (pid:13) was sent SIGSEGV!\n"
                         "[INFO] Dirty worker (pid:14) was sent SIGTERM!\n"
                         "[ERROR] Worker (pid:15) was sent SIGKILL! Perhaps out of memory?\n"
                         "[WARNING] Worker (pid:16) was sent signal 40!\n");
    cg_sup_deinit(&sup);
}

static void test_unsupervised_fork_and_wait_one(void)
{
    struct cg_sup sup;
    int st = 0;
    reset(&sup);
    pid_t pid = cg_sup_fork(CG_ROLE_DIRTY_WORKER);
    if (pid == 0) {
        _exit(5);
    }
    CG_CHECK(pid > 0);
    CG_CHECK_INT(cg_sup_wait_one(pid, &st), 0);
    CG_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 5);
    CG_CHECK_STR(logged, "");
    cg_sup_deinit(&sup);
}

int main(void)
{
    /* as the master: TERM is recorded on the self-pipe, and inherited so */
    static const int sigs[] = { SIGCHLD, SIGTERM, 0 };
    struct cg_err err = { { 0 } };

    if (cg_sig_open(sigs, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    cg_log_set_level(CG_LOG_DEBUG);
    cg_log_set_sink(sink, NULL);
    static const struct cg_test_case cases[] = {
        CG_TEST(test_child_that_exits_at_once_is_reaped_and_logged_once),
        CG_TEST(test_hanging_child_stops_on_term),
        CG_TEST(test_child_ignoring_term_is_killed_at_the_deadline),
        CG_TEST(test_stop_deadline_can_be_brought_forward),
        CG_TEST(test_stop_ended_by_its_owner_disarms_the_kill),
        CG_TEST(test_stop_leaves_other_roles_running),
        CG_TEST(test_boot_deadline_kills_a_child_that_never_boots),
        CG_TEST(test_booted_child_outlives_its_boot_deadline),
        CG_TEST(test_backoff_doubles_to_its_cap),
        CG_TEST(test_signal_sent_at_once_after_fork_is_not_lost),
        CG_TEST(test_exit_line_formats),
        CG_TEST(test_unsupervised_fork_and_wait_one),
    };
    return cg_test_run(cases, sizeof(cases) / sizeof(cases[0]));
}
