/* dirty_gpus: the device list and the device of each worker slot. */
#include <stdlib.h>

#include "cg_dirty_gpus.h"
#include "cg_test.h"

static void test_list_is_split_and_trimmed(void)
{
    struct cg_dirty_gpus g = { 0 };
    struct cg_err err = { { 0 } };

    CG_CHECK(cg_dirty_gpus_parse_list(&g, "0, 1 ,2,3", &err) == 0);
    CG_CHECK(g.n == 4);
    CG_CHECK_STR(g.ids[1], "1");
    CG_CHECK_STR(g.ids[3], "3");
    cg_dirty_gpus_free(&g);
    CG_CHECK(cg_dirty_gpus_parse_list(&g, "0,,1", &err) < 0);
    CG_CHECK(strstr(err.msg, "empty device id") != NULL);
    CG_CHECK(g.n == 0);
}

static void test_round_robin_over_slots(void)
{
    struct cg_dirty_gpus g = { 0 };
    struct cg_err err = { { 0 } };

    CG_CHECK(cg_dirty_gpus_for_slot(&g, 0) == NULL); /* off */
    CG_CHECK(cg_dirty_gpus_parse_list(&g, "0,1", &err) == 0);
    CG_CHECK_STR(cg_dirty_gpus_for_slot(&g, 0), "0");
    CG_CHECK_STR(cg_dirty_gpus_for_slot(&g, 1), "1");
    CG_CHECK_STR(cg_dirty_gpus_for_slot(&g, 2), "0");
    CG_CHECK_STR(cg_dirty_gpus_for_slot(&g, 5), "1");
    cg_dirty_gpus_free(&g);
}

static void test_nvidia_smi_listing(void)
{
    struct cg_dirty_gpus g = { 0 };
    struct cg_err err = { { 0 } };
    const char *out = "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-aaaa)\n"
                      "  MIG 1g.5gb     Device  0: (UUID: MIG-bbbb)\n"
                      "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-cccc)\n"
                      "\n"
                      "GPU 12: Tesla T4 (UUID: GPU-dddd)";

    CG_CHECK(cg_dirty_gpus_parse_smi(&g, out, &err) == 0);
    CG_CHECK(g.n == 3);
    if (g.n == 3) {
        CG_CHECK_STR(g.ids[0], "0");
        CG_CHECK_STR(g.ids[1], "1");
        CG_CHECK_STR(g.ids[2], "12");
    }
    cg_dirty_gpus_free(&g);
    CG_CHECK(cg_dirty_gpus_parse_smi(&g, "No devices were found\n", &err) == 0);
    CG_CHECK(g.n == 0);
}

int main(void)
{
    static const struct cg_test_case cases[] = {
        CG_TEST(test_list_is_split_and_trimmed),
        CG_TEST(test_round_robin_over_slots),
        CG_TEST(test_nvidia_smi_listing),
    };
    return cg_test_run(cases, sizeof(cases) / sizeof(cases[0]));
}
