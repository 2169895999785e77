/* Routing-table rules of the dirty arbiter, without processes: app specs,
 * which apps a new worker loads, least-busy choice, slots and queues. */
#include <stdlib.h>

#include "cg_dirty_pool.h"
#include "cg_test.h"

static struct cg_dirty_wk *add_worker(struct cg_dirty_pool *p, pid_t pid, uint64_t apps)
{
    struct cg_dirty_wk *w = calloc(1, sizeof(*w));
    w->pid = pid;
    w->age = (int)pid;
    w->apps = apps;
    w->booted = true;
    cg_dirty_pool_worker_add(p, w);
    return w;
}

static void free_workers(struct cg_dirty_pool *p)
{
    while (p->workers != NULL) {
        struct cg_dirty_wk *w = p->workers;
        cg_dirty_pool_worker_remove(p, w);
        free(w);
    }
}

static void test_app_specs(void)
{
    struct cg_dirty_pool p;
    struct cg_err err = { { 0 } };

    cg_dirty_pool_init(&p, 1);
    CG_CHECK_INT(cg_dirty_pool_add_app(&p, "myapp.ml:MLApp", &err), 0);
    CG_CHECK_INT(cg_dirty_pool_add_app(&p, "myapp.big:Big:2", &err), 1);
    CG_CHECK_STR(p.apps[1].path, "myapp.big:Big");
    CG_CHECK_INT(p.apps[1].limit, 2);
    CG_CHECK(p.apps[1].limit_from_spec);
    CG_CHECK_INT(p.apps[0].limit, 0);
    CG_CHECK_INT(cg_dirty_pool_app_find(&p, "myapp.big:Big", 13), 1);
    CG_CHECK_INT(cg_dirty_pool_app_find(&p, "myapp.big:Bi", 12), -1);

    CG_CHECK_INT(cg_dirty_pool_add_app(&p, "nocolon", &err), -1);
    CG_CHECK(strstr(err.msg, "'nocolon'") != NULL);
    CG_CHECK(strstr(err.msg, "module.path:ClassName:N") != NULL);
    CG_CHECK_INT(cg_dirty_pool_add_app(&p, "a:B:0", &err), -1);
    CG_CHECK(strstr(err.msg, "'0'") != NULL);
    CG_CHECK_INT(cg_dirty_pool_add_app(&p, "a:B:two", &err), -1);
    CG_CHECK(strstr(err.msg, "'two'") != NULL);
    CG_CHECK_INT(cg_dirty_pool_add_app(&p, "a:B:1:2", &err), -1);
    CG_CHECK_INT(cg_dirty_pool_add_app(&p, ":B", &err), -1);
    CG_CHECK_INT(cg_dirty_pool_add_app(&p, "a:", &err), -1);
    CG_CHECK_INT(cg_dirty_pool_add_app(&p, "myapp.ml:MLApp:3", &err), -1);
    CG_CHECK(strstr(err.msg, "twice") != NULL);
    CG_CHECK_INT(p.napps, 2);
    cg_dirty_pool_deinit(&p);
}

/* gunicorn's allocation: unlimited apps go to every worker, limited ones
 * until their count is reached; a replacement gets the dead one's set. */
static void test_apps_for_new_worker(void)
{
    struct cg_dirty_pool p;
    struct cg_err err = { { 0 } };

    cg_dirty_pool_init(&p, 1);
    cg_dirty_pool_add_app(&p, "a:All", &err);
    cg_dirty_pool_add_app(&p, "b:Two:2", &err);
    cg_dirty_pool_add_app(&p, "c:One:1", &err);
    CG_CHECK_INT(cg_dirty_pool_min_workers(&p), 2);

    uint64_t s1 = cg_dirty_pool_apps_for_new(&p);
    CG_CHECK_INT(s1, 7);
    add_worker(&p, 100, s1);
    uint64_t s2 = cg_dirty_pool_apps_for_new(&p);
    CG_CHECK_INT(s2, 3);
    struct cg_dirty_wk *w2 = add_worker(&p, 101, s2);
    CG_CHECK_INT(cg_dirty_pool_apps_for_new(&p), 1);
    CG_CHECK_INT(cg_dirty_pool_app_workers(&p, 1), 2);

    /* w2 dies: its replacement loads exactly what it had. */
    cg_dirty_pool_respawn_push(&p, w2->apps);
    cg_dirty_pool_worker_remove(&p, w2);
    free(w2);
    CG_CHECK(cg_dirty_pool_respawn_has(&p, 1));
    CG_CHECK(!cg_dirty_pool_respawn_has(&p, 2));
    CG_CHECK_INT(cg_dirty_pool_apps_for_new(&p), 3);
    CG_CHECK_INT(p.nrespawn, 0);

    /* Only limited apps, all at their limit: no app needs a worker. */
    struct cg_dirty_pool q;
    cg_dirty_pool_init(&q, 1);
    cg_dirty_pool_add_app(&q, "x:One:1", &err);
    add_worker(&q, 200, cg_dirty_pool_apps_for_new(&q));
    CG_CHECK_INT(cg_dirty_pool_apps_for_new(&q), 0);
    /* A retiring worker no longer counts. */
    q.workers->retiring = true;
    CG_CHECK_INT(cg_dirty_pool_apps_for_new(&q), 1);
    free_workers(&q);
    cg_dirty_pool_deinit(&q);
    free_workers(&p);
    cg_dirty_pool_deinit(&p);
}

static void test_pick_least_busy_and_spread(void)
{
    struct cg_dirty_pool p;
    struct cg_err err = { { 0 } };
    struct cg_dirty_call calls[6];

    memset(calls, 0, sizeof(calls));
    cg_dirty_pool_init(&p, 2);
    cg_dirty_pool_add_app(&p, "a:A", &err);
    cg_dirty_pool_add_app(&p, "b:B", &err);
    struct cg_dirty_wk *w1 = add_worker(&p, 1, 3);
    struct cg_dirty_wk *w2 = add_worker(&p, 2, 1); /* only app a */

    /* Sequential calls alternate between the two idle workers. */
    struct cg_dirty_wk *first = cg_dirty_pool_pick(&p, 0);
    cg_dirty_pool_call_init(&p, &calls[0], 0);
    cg_dirty_pool_assign(&p, &calls[0], first);
    cg_dirty_pool_finish(&p, &calls[0]);
    struct cg_dirty_wk *second = cg_dirty_pool_pick(&p, 0);
    CG_CHECK(first != second);

    /* App b only lives on w1. */
    CG_CHECK(cg_dirty_pool_pick(&p, 1) == w1);

    /* Least busy wins. */
    cg_dirty_pool_call_init(&p, &calls[1], 0);
    cg_dirty_pool_assign(&p, &calls[1], w1);
    CG_CHECK(cg_dirty_pool_pick(&p, 0) == w2);
    CG_CHECK_INT(w1->busy, 1);
    CG_CHECK(cg_dirty_pool_find(w1, calls[1].aid) == &calls[1]);
    CG_CHECK(cg_dirty_pool_find(w2, calls[1].aid) == NULL);

    /* Full workers are skipped; a dead link is never picked. */
    cg_dirty_pool_call_init(&p, &calls[2], 1);
    cg_dirty_pool_assign(&p, &calls[2], w1);
    CG_CHECK(cg_dirty_pool_pick(&p, 1) == NULL);
    w2->link_dead = true;
    CG_CHECK(cg_dirty_pool_pick(&p, 0) == NULL);
    CG_CHECK(calls[1].aid != calls[2].aid);
    free_workers(&p);
    cg_dirty_pool_deinit(&p);
}

static void test_queue_order(void)
{
    struct cg_dirty_pool p;
    struct cg_err err = { { 0 } };
    struct cg_dirty_call running, qa1, qb, qa2;

    memset(&running, 0, sizeof(running));
    memset(&qa1, 0, sizeof(qa1));
    memset(&qb, 0, sizeof(qb));
    memset(&qa2, 0, sizeof(qa2));
    cg_dirty_pool_init(&p, 1);
    cg_dirty_pool_add_app(&p, "a:A", &err);
    cg_dirty_pool_add_app(&p, "b:B", &err);
    struct cg_dirty_wk *w = add_worker(&p, 1, 3);

    cg_dirty_pool_call_init(&p, &running, 0);
    cg_dirty_pool_assign(&p, &running, w);
    cg_dirty_pool_call_init(&p, &qa1, 0);
    cg_dirty_pool_enqueue(&p, &qa1);
    cg_dirty_pool_call_init(&p, &qb, 1);
    cg_dirty_pool_enqueue(&p, &qb);
    cg_dirty_pool_call_init(&p, &qa2, 0);
    cg_dirty_pool_enqueue(&p, &qa2);

    /* No free slot: nothing to take. */
    CG_CHECK(cg_dirty_pool_next_for(&p, w) == NULL);
    cg_dirty_pool_finish(&p, &running);
    CG_CHECK_INT(w->busy, 0);
    /* Oldest first across apps: qa1, then qb, then qa2. */
    struct cg_dirty_call *order[3] = { &qa1, &qb, &qa2 };
    for (int i = 0; i < 3; i++) {
        struct cg_dirty_call *c = cg_dirty_pool_next_for(&p, w);
        CG_CHECK(c == order[i]);
        if (c == NULL) {
            break;
        }
        cg_dirty_pool_dequeue(&p, c);
        cg_dirty_pool_assign(&p, c, w);
        CG_CHECK(cg_dirty_pool_next_for(&p, w) == NULL); /* slot taken */
        cg_dirty_pool_finish(&p, c);
    }
    CG_CHECK(cg_dirty_pool_next_for(&p, w) == NULL);
    CG_CHECK_INT(p.apps[0].queue.n, 0);

    /* A worker without the app does not take its calls. */
    struct cg_dirty_wk *wb = add_worker(&p, 2, 2);
    cg_dirty_pool_enqueue(&p, &qa1);
    w->retiring = true;
    CG_CHECK(cg_dirty_pool_next_for(&p, wb) == NULL);
    cg_dirty_pool_dequeue(&p, &qa1);
    free_workers(&p);
    cg_dirty_pool_deinit(&p);
}

static void test_retry_after_estimate(void)
{
    struct cg_dirty_pool p;
    struct cg_err err = { { 0 } };
    struct cg_dirty_call q[5];

    memset(q, 0, sizeof(q));
    cg_dirty_pool_init(&p, 2);
    cg_dirty_pool_add_app(&p, "a:A", &err);
    /* No worker and no call seen yet: one wave of the 1 s default. */
    CG_CHECK(cg_dirty_pool_retry_after(&p, 0) == 1.0);
    add_worker(&p, 1, 1);
    cg_dirty_pool_note_service(&p, 0, 3.0);
    CG_CHECK(p.apps[0].service_avg == 3.0); /* the first call sets it */
    cg_dirty_pool_note_service(&p, 0, 8.0);
    CG_CHECK(p.apps[0].service_avg == 4.0); /* then a 0.2-weighted average */
    /* One worker of 2 slots: 0 or 1 queued -> one wave, 2..3 -> two. */
    CG_CHECK(cg_dirty_pool_retry_after(&p, 0) == 4.0);
    for (int i = 0; i < 5; i++) {
        cg_dirty_pool_call_init(&p, &q[i], 0);
        cg_dirty_pool_enqueue(&p, &q[i]);
    }
    CG_CHECK(cg_dirty_pool_retry_after(&p, 0) == 12.0); /* 5 queued: 3 waves */
    add_worker(&p, 2, 1);
    CG_CHECK(cg_dirty_pool_retry_after(&p, 0) == 8.0); /* 4 slots: 2 waves */
    cg_dirty_pool_note_service(&p, 0, -1.0); /* a clock oddity counts as 0 */
    CG_CHECK(p.apps[0].service_avg >= 3.19 && p.apps[0].service_avg <= 3.21);
    for (int i = 0; i < 40; i++) {
        cg_dirty_pool_note_service(&p, 0, 0.0001); /* very fast calls */
    }
    CG_CHECK(cg_dirty_pool_retry_after(&p, 0) == CG_DIRTY_RETRY_AFTER_MIN); /* not ~0 */
    for (int i = 0; i < 5; i++) {
        cg_dirty_pool_dequeue(&p, &q[i]);
    }
    free_workers(&p);
    cg_dirty_pool_deinit(&p);
}

static void test_booting_worker_gets_no_calls_and_slots_are_reused(void)
{
    struct cg_dirty_pool p;
    struct cg_err err = { { 0 } };

    cg_dirty_pool_init(&p, 1);
    CG_CHECK_INT(cg_dirty_pool_add_app(&p, "a:A", &err), 0);
    struct cg_dirty_wk *w1 = add_worker(&p, 1, 1);
    w1->booted = false; /* still in init() */
    CG_CHECK(cg_dirty_pool_pick(&p, 0) == NULL);
    CG_CHECK_INT(cg_dirty_pool_app_workers(&p, 0), 1); /* calls wait for it */
    w1->booted = true;
    CG_CHECK(cg_dirty_pool_pick(&p, 0) == w1);

    struct cg_dirty_wk *spare = add_worker(&p, 3, 1);
    spare->slot = 7;
    w1->recycling = true; /* the other worker is preferred, even if given a call later */
    spare->last_given = w1->last_given + 10;
    CG_CHECK(cg_dirty_pool_pick(&p, 0) == spare);
    spare->busy = 1; /* no free slot elsewhere: the recycling one still serves */
    CG_CHECK(cg_dirty_pool_pick(&p, 0) == w1);
    w1->recycling = false;
    cg_dirty_pool_worker_remove(&p, spare);
    free(spare);

    CG_CHECK_INT(cg_dirty_pool_free_slot(&p), 1); /* w1 holds slot 0 */
    struct cg_dirty_wk *w2 = add_worker(&p, 2, 1);
    w2->slot = 1;
    CG_CHECK_INT(cg_dirty_pool_free_slot(&p), 2);
    w1->recycling = true; /* its replacement takes its slot */
    CG_CHECK_INT(cg_dirty_pool_free_slot(&p), 0);
    w1->recycling = false;
    w2->link_dead = true; /* died: its replacement takes slot 1 */
    CG_CHECK_INT(cg_dirty_pool_free_slot(&p), 1);
    free_workers(&p);
    cg_dirty_pool_deinit(&p);
}

int main(void)
{
    static const struct cg_test_case cases[] = {
        CG_TEST(test_booting_worker_gets_no_calls_and_slots_are_reused),
        CG_TEST(test_app_specs),
        CG_TEST(test_apps_for_new_worker),
        CG_TEST(test_pick_least_busy_and_spread),
        CG_TEST(test_queue_order),
        CG_TEST(test_retry_after_estimate),
    };
    return cg_test_run(cases, sizeof(cases) / sizeof(cases[0]));
}
