/* Unit tests for the worker class dispatch (server/workers/cg_worker_class.c): every
 * row of the worker class table (config/cg_conf_worker_class.c) has a loop. */
#include "cg_test.h"

#include "cg_conf_worker_class.h"
#include "cg_worker_class.h"

static void test_every_row_has_an_entry(void)
{
    for (size_t i = 0; i < cg_conf_worker_classes_count; i++) {
        const char *name = cg_conf_worker_classes[i].name;
        if (cg_worker_class_entry(name) == NULL) {
            fprintf(stderr, "worker class %s has no loop in server/workers/cg_worker_class.c\n", name);
        }
        CG_CHECK(cg_worker_class_entry(name) != NULL);
    }
}

static void test_entries_are_distinct(void)
{
    for (size_t i = 0; i < cg_conf_worker_classes_count; i++) {
        for (size_t j = i + 1; j < cg_conf_worker_classes_count; j++) {
            CG_CHECK(cg_worker_class_entry(cg_conf_worker_classes[i].name) !=
                     cg_worker_class_entry(cg_conf_worker_classes[j].name));
        }
    }
}

/* Aliases are resolved by config/ before dispatch; unknown names have no loop. */
static void test_only_row_names(void)
{
    CG_CHECK(cg_worker_class_entry("uvicorn.workers.UvicornWorker") == NULL);
    CG_CHECK(cg_worker_class_entry("gevent_pywsgi") == NULL);
    CG_CHECK(cg_worker_class_entry("eventlet") == NULL);
    CG_CHECK(cg_worker_class_prepare("gevent") != NULL);
    CG_CHECK(cg_worker_class_prepare("sync") == NULL);
    CG_CHECK(cg_worker_class_prepare("nosuchclass") == NULL);
    CG_CHECK(cg_worker_class_entry(NULL) == NULL);
}

int main(void)
{
    static const struct cg_test_case cases[] = {
        CG_TEST(test_every_row_has_an_entry),
        CG_TEST(test_entries_are_distinct),
        CG_TEST(test_only_row_names),
    };
    return cg_test_run(cases, sizeof(cases) / sizeof(cases[0]));
}
