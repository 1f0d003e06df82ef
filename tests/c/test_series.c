/* Energy reconstruction from counter knots and power samples (src/sampler/series.c). */
#include "jc_test.h"
#include "sampler/series.h"

#define MS 1000000ull

TEST(ring_keeps_order_and_bound) {
    jc__ring r;
    ASSERT_OK(jc__ring_init(&r, 4));
    for (int i = 1; i <= 6; i++) jc__ring_push(&r, (uint64_t)i * MS, i);
    ASSERT_EQ(r.len, 4);
    ASSERT_EQ(jc__ring_at(&r, 0)->t_ns, 3 * MS);
    ASSERT_EQ(jc__ring_last(&r)->t_ns, 6 * MS);
    jc__ring_push(&r, 5 * MS, 99); /* not later: ignored */
    ASSERT_NEAR(jc__ring_last(&r)->v, 6, 0);
    ASSERT_EQ(jc__ring_lower_bound(&r, 4 * MS + 1), 2);
    ASSERT_EQ(jc__ring_lower_bound(&r, 100 * MS), 4);
    jc__ring_free(&r);
}

TEST(linear_without_power) {
    jc__ring k;
    ASSERT_OK(jc__ring_init(&k, 16));
    jc__ring_push(&k, 100 * MS, 0);
    jc__ring_push(&k, 200 * MS, 30);
    jc__ring_push(&k, 300 * MS, 60);
    double e;
    ASSERT_EQ(jc__energy_at(&k, 150 * MS, &e), JC__AT_OK);
    ASSERT_NEAR(e, 15, 1e-9);
    ASSERT_EQ(jc__energy_at(&k, 300 * MS, &e), JC__AT_OK);
    ASSERT_NEAR(e, 60, 1e-9);
    ASSERT_EQ(jc__energy_at(&k, 301 * MS, &e), JC__AT_PENDING);
    ASSERT_EQ(jc__energy_at(&k, 99 * MS, &e), JC__AT_GONE);
    jc__ring_free(&k);
}

JC_TEST_MAIN(TEST_ENTRY(ring_keeps_order_and_bound), TEST_ENTRY(linear_without_power))
