/* A tiny test harness in the spirit of libuv's: each test is a function; ASSERT_* print both values on
 * failure.  Each test binary runs its tests in order and exits non-zero on the first failure; ctest runs each
 * binary as its own process with a timeout. */
#ifndef JC_TEST_H
#define JC_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JC_FAILF(...)                                                                                      \
    do {                                                                                                   \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                                    \
        fprintf(stderr, __VA_ARGS__);                                                                      \
        fprintf(stderr, "\n");                                                                             \
        exit(1);                                                                                           \
    } while (0)

#define ASSERT_TRUE(c)                                                                                     \
    do {                                                                                                   \
        if (!(c)) JC_FAILF("assertion failed: %s", #c);                                                    \
    } while (0)
#define ASSERT_EQ(a, b)                                                                                    \
    do {                                                                                                   \
        long long a_ = (long long)(a), b_ = (long long)(b);                                                \
        if (a_ != b_) JC_FAILF("%s == %s: %lld != %lld", #a, #b, a_, b_);                                  \
    } while (0)
#define ASSERT_OK(expr)                                                                                    \
    do {                                                                                                   \
        jc_status s_ = (expr);                                                                             \
        if (s_ != JC_OK) JC_FAILF("%s: %s (%s)", #expr, jc_status_name(s_), jc_last_detail());             \
    } while (0)
#define ASSERT_STATUS(expr, want)                                                                          \
    do {                                                                                                   \
        jc_status s_ = (expr);                                                                             \
        if (s_ != (want))                                                                                  \
            JC_FAILF("%s: got %s, want %s (%s)", #expr, jc_status_name(s_), #want, jc_last_detail());     \
    } while (0)
#define ASSERT_NEAR(a, b, tol)                                                                             \
    do {                                                                                                   \
        double a_ = (double)(a), b_ = (double)(b), t_ = (double)(tol);                                     \
        if (!(fabs(a_ - b_) <= t_)) JC_FAILF("%s ~= %s: %.9g vs %.9g (tol %.3g)", #a, #b, a_, b_, t_);     \
    } while (0)
#define ASSERT_STR_EQ(a, b)                                                                                \
    do {                                                                                                   \
        const char *a_ = (a), *b_ = (b);                                                                   \
        if (strcmp(a_, b_) != 0) JC_FAILF("%s == %s: '%s' != '%s'", #a, #b, a_, b_);                       \
    } while (0)
#define ASSERT_CONTAINS(hay, needle)                                                                       \
    do {                                                                                                   \
        const char *h_ = (hay), *n_ = (needle);                                                            \
        if (!strstr(h_, n_)) JC_FAILF("'%s' does not contain '%s'", h_, n_);                               \
    } while (0)

typedef void (*jc_test_fn)(void);
typedef struct {
    const char *name;
    jc_test_fn fn;
} jc_test_case;

#define TEST(name) static void name(void)
#define TEST_ENTRY(name) {#name, name}

/* Runs all tests, or only the one named in argv[1]. */
static inline int jc_test_main(int argc, char **argv, const jc_test_case *tests, size_t n) {
    int ran = 0;
    for (size_t i = 0; i < n; i++) {
        if (argc > 1 && strcmp(argv[1], tests[i].name) != 0) continue;
        fprintf(stderr, "[ RUN  ] %s\n", tests[i].name);
        tests[i].fn();
        fprintf(stderr, "[  OK  ] %s\n", tests[i].name);
        ran++;
    }
    if (ran == 0) {
        fprintf(stderr, "no test ran\n");
        return 1;
    }
    return 0;
}
#define JC_TEST_MAIN(...)                                                                                  \
    int main(int argc, char **argv) {                                                                      \
        static const jc_test_case tests_[] = {__VA_ARGS__};                                                \
        return jc_test_main(argc, argv, tests_, sizeof tests_ / sizeof tests_[0]);                         \
    }

#endif
