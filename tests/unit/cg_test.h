/* Minimal unit-test harness: CG_CHECK records a failure and continues;
 * CG_TEST_MAIN runs the listed tests and prints "N passed, N failed".
 * Each test is a `static void test_x(void)`; a test passes when none of its
 * checks failed. */
#ifndef CG_TEST_H
#define CG_TEST_H

#include <stdio.h>
#include <string.h>

static int cg_test_failures_in_test;

#define CG_CHECK(cond)                                                                     \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);      \
            cg_test_failures_in_test++;                                                    \
        }                                                                                  \
    } while (0)

#define CG_CHECK_STR(a, b)                                                                 \
    do {                                                                                   \
        const char *cg_a_ = (a), *cg_b_ = (b);                                             \
        if (cg_a_ == NULL || cg_b_ == NULL || strcmp(cg_a_, cg_b_) != 0) {                 \
            fprintf(stderr, "%s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, \
                    #a, cg_a_ ? cg_a_ : "(null)", cg_b_ ? cg_b_ : "(null)");               \
            cg_test_failures_in_test++;                                                    \
        }                                                                                  \
    } while (0)

#define CG_CHECK_INT(a, b)                                                                 \
    do {                                                                                   \
        long long cg_a_ = (long long)(a), cg_b_ = (long long)(b);                          \
        if (cg_a_ != cg_b_) {                                                              \
            fprintf(stderr, "%s:%d: %s == %lld, expected %lld\n", __FILE__, __LINE__, #a, \
                    cg_a_, cg_b_);                                                         \
            cg_test_failures_in_test++;                                                    \
        }                                                                                  \
    } while (0)

struct cg_test_case {
    const char *name;
    void (*fn)(void);
};

#define CG_TEST(fn) { #fn, fn }

static inline int cg_test_run(const struct cg_test_case *cases, size_t n)
{
    int passed = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        cg_test_failures_in_test = 0;
        cases[i].fn();
        if (cg_test_failures_in_test == 0) {
            passed++;
        } else {
            failed++;
            fprintf(stderr, "FAIL %s\n", cases[i].name);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}

#define CG_TEST_MAIN(...)                                                                  \
    int main(void)                                                                         \
    {                                                                                      \
        static const struct cg_test_case cases_[] = { __VA_ARGS__ };                       \
        return cg_test_run(cases_, sizeof(cases_) / sizeof(cases_[0]));                    \
    }

#endif
