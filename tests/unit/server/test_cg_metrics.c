/* Unit tests for the shared metrics region (server/cg_metrics.c): label
 * tables, X-Request-Start parsing in its three units, histogram buckets,
 * the fold of a dead worker's slot into the retired totals, and the user
 * series table filling up. */
#include "cg_test.h"

#include <stdio.h>
#include <stdlib.h>

#include "cg_metrics.h"

static void test_labels_are_bounded(void)
{
    CG_CHECK_STR(cg_metrics_method_name(cg_metrics_method_index("GET", 3)), "GET");
    CG_CHECK_STR(cg_metrics_method_name(cg_metrics_method_index("TRACE", 5)), "TRACE");
    CG_CHECK_STR(cg_metrics_method_name(cg_metrics_method_index("get", 3)), "other");
    CG_CHECK_STR(cg_metrics_method_name(cg_metrics_method_index("BREW", 4)), "other");
    CG_CHECK_STR(cg_metrics_status_name(cg_metrics_status_index(200)), "200");
    CG_CHECK_STR(cg_metrics_status_name(cg_metrics_status_index(100)), "100");
    CG_CHECK_STR(cg_metrics_status_name(cg_metrics_status_index(505)), "505");
    CG_CHECK_STR(cg_metrics_status_name(cg_metrics_status_index(418)), "other");
    CG_CHECK_STR(cg_metrics_status_name(cg_metrics_status_index(999)), "other");
    for (int i = 0; i < CG_METRICS_NSTATUS - 1; i++) { /* the table is sorted and complete */
        int code = atoi(cg_metrics_status_name(i));
        CG_CHECK_INT(cg_metrics_status_index(code), i);
    }
}

static void test_request_start_units(void)
{
    uint64_t t = 0;
    CG_CHECK_INT(cg_metrics_parse_request_start("t=1700000000123456", 18, &t), 0);
    CG_CHECK_INT(t, 1700000000123456ull);
    CG_CHECK_INT(cg_metrics_parse_request_start("t=1700000000123", 15, &t), 0);
    CG_CHECK_INT(t, 1700000000123000ull);
    CG_CHECK_INT(cg_metrics_parse_request_start("t=1700000000.5", 14, &t), 0);
    CG_CHECK_INT(t, 1700000000500000ull);
    CG_CHECK_INT(cg_metrics_parse_request_start("1700000000", 10, &t), 0);
    CG_CHECK_INT(t, 1700000000000000ull);
    CG_CHECK_INT(cg_metrics_parse_request_start("t=1700000000123.5", 17, &t), 0);
    CG_CHECK_INT(t, 1700000000123500ull);
    CG_CHECK_INT(cg_metrics_parse_request_start("t=abc", 5, &t), -1);
    CG_CHECK_INT(cg_metrics_parse_request_start("t=12", 4, &t), -1); /* before 2001 */
    CG_CHECK_INT(cg_metrics_parse_request_start("t=1700000000x", 13, &t), -1);
    CG_CHECK_INT(cg_metrics_parse_request_start("", 0, &t), -1);
}

static void test_retire_keeps_totals(void)
{
    struct cg_err err = { { 0 } };
    CG_CHECK_INT(cg_metrics_open(true, &err), 0);
    cg_metrics_attach(3);
    cg_metrics_request_start(NULL);
    cg_metrics_request_done(0, 200, 1500); /* 1.5 ms: the 0.0025 bucket */
    cg_metrics_request_end();
    CG_CHECK_INT(cg_metrics->slots[3].http.requests[0][cg_metrics_status_index(200)], 1);
    CG_CHECK_INT(cg_metrics->slots[3].http.duration.bucket[1], 1);
    cg_metrics_retire_slot(3, CG_METRICS_RESTART_CRASH);
    CG_CHECK_INT(cg_metrics->slots[3].http.requests[0][cg_metrics_status_index(200)], 0);
    CG_CHECK_INT(cg_metrics->retired.requests[0][cg_metrics_status_index(200)], 1);
    CG_CHECK_INT(cg_metrics->retired.duration.count, 1);
    CG_CHECK_INT(cg_metrics->retired.duration.sum_us, 1500);
    CG_CHECK_INT(cg_metrics->restarts[CG_METRICS_RESTART_CRASH], 1);
    cg_metrics_close();
}

static void test_user_table_fills_and_drops(void)
{
    struct cg_err err = { { 0 } };
    char name[32];
    int last = 0, n = 0;

    CG_CHECK_INT(cg_metrics_open(true, &err), 0);
    CG_CHECK_INT(cg_metrics_user_register('c', "a_total", "", ""), 0);
    CG_CHECK_INT(cg_metrics_user_register('c', "a_total", "", ""), 0); /* found again */
    CG_CHECK_INT(cg_metrics_user_register('h', "h", "x=\"1\"", ""), 1);
    CG_CHECK_INT(cg_metrics_user_register('g', "g", "", ""), 1 + CG_METRICS_USER_HCELLS);
    for (int i = 0; i < 2 * CG_METRICS_USER_SERIES && last >= 0; i++) {
        snprintf(name, sizeof(name), "c%d", i);
        last = cg_metrics_user_register('c', name, "", "");
        n += last >= 0;
    }
    CG_CHECK_INT(last, -1);
    CG_CHECK_INT(n, CG_METRICS_USER_SERIES - 2 - CG_METRICS_USER_HCELLS);
    cg_metrics_user_add(0, 3 * CG_METRICS_USER_SCALE);
    CG_CHECK_INT(cg_metrics->user_val[CG_METRICS_SLOTS][0], 3 * CG_METRICS_USER_SCALE);
    cg_metrics_user_observe(1, 2000); /* 2 ms */
    CG_CHECK_INT(cg_metrics->user_val[CG_METRICS_SLOTS][1 + 1], 1);
    CG_CHECK_INT(cg_metrics->user_val[CG_METRICS_SLOTS][1 + CG_METRICS_NBUCKETS + 2], 1);
    cg_metrics_close();
}

CG_TEST_MAIN(CG_TEST(test_labels_are_bounded), CG_TEST(test_request_start_units),
             CG_TEST(test_retire_keeps_totals), CG_TEST(test_user_table_fills_and_drops))
