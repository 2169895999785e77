/* Unit tests for the signal table (core/cg_sig_table.c): names are unique
 * and are what cg_sig_name() answers, and cg_sig_open_role() installs
 * exactly what the table says for each role (checked with sigaction in a
 * child per role, so the test's own dispositions stay untouched). Its
 * agreement with docs/deployment.md is tests/integration/test_signal_table.py. */
#include "cg_test.h"

#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cg_sig.h"
#include "cg_sig_table.h"

static void test_rows_are_unique_and_named(void)
{
    for (size_t i = 0; i < cg_sig_table_len; i++) {
        const struct cg_sig_row *r = &cg_sig_table[i];
        CG_CHECK(r->signo > 0 && r->signo < NSIG);
        CG_CHECK(r->name != NULL && strncmp(r->name, "SIG", 3) != 0);
        CG_CHECK_STR(cg_sig_name(r->signo), r->name);
        CG_CHECK(cg_sig_row(r->signo) == r);
        for (size_t j = i + 1; j < cg_sig_table_len; j++) {
            CG_CHECK(cg_sig_table[j].signo != r->signo);
        }
        for (int role = 0; role < CG_SIG_ROLES; role++) {
            /* an action is described exactly when it is handled */
            CG_CHECK((r->role[role].how == CG_SIG_DEFAULT) == (r->role[role].does == NULL));
        }
    }
    CG_CHECK_STR(cg_sig_name(SIGTERM), "TERM");
    CG_CHECK_STR(cg_sig_name(SIGRTMIN + 3), "?");
}

/* A row some role acts on. The name-only rows (SEGV, BUS, FPE, ...) are
 * left as the process has them: a sanitizer or faulthandler may own them. */
static bool managed(const struct cg_sig_row *r)
{
    for (int role = 0; role < CG_SIG_ROLES; role++) {
        if (r->role[role].how != CG_SIG_DEFAULT) {
            return true;
        }
    }
    return false;
}

/* In a child: installs `role`'s handlers, then counts the managed signals
 * whose disposition differs from the table. */
static int mismatches(enum cg_role role)
{
    struct cg_err err = { { 0 } };
    int bad = 0;

    if (cg_sig_open_role(role, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 100;
    }
    for (size_t i = 0; i < cg_sig_table_len; i++) {
        const struct cg_sig_row *r = &cg_sig_table[i];
        struct sigaction sa;
        if (!managed(r) || sigaction(r->signo, NULL, &sa) < 0) {
            continue;
        }
        bool ok;
        switch (r->role[role].how) {
        case CG_SIG_RECORD:
            ok = sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN;
            break;
        case CG_SIG_IGNORE:
            ok = sa.sa_handler == SIG_IGN;
            break;
        default: /* the kernel's default, or Python installs its handler later */
            ok = sa.sa_handler == SIG_DFL;
            break;
        }
        if (!ok) {
            fprintf(stderr, "role %d: SIG%s is not installed as the table says\n", (int)role,
                    r->name);
            bad++;
        }
    }
    return bad;
}

static void test_each_role_gets_the_table_handlers(void)
{
    for (int role = 0; role < CG_SIG_ROLES; role++) {
        int st = 0;
        pid_t pid = fork();
        if (pid == 0) {
            _exit(mismatches((enum cg_role)role));
        }
        CG_CHECK(pid > 0);
        CG_CHECK(waitpid(pid, &st, 0) == pid);
        CG_CHECK(WIFEXITED(st));
        CG_CHECK_INT(WEXITSTATUS(st), 0);
    }
}

int main(void)
{
    static const struct cg_test_case cases[] = {
        CG_TEST(test_rows_are_unique_and_named),
        CG_TEST(test_each_role_gets_the_table_handlers),
    };
    return cg_test_run(cases, sizeof(cases) / sizeof(cases[0]));
}
