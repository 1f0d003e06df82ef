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
    ASSERT_EQ(jc__energy_at(&k, NULL, 150 * MS, &e), JC__AT_OK);
    ASSERT_NEAR(e, 15, 1e-9);
    ASSERT_EQ(jc__energy_at(&k, NULL, 300 * MS, &e), JC__AT_OK);
    ASSERT_NEAR(e, 60, 1e-9);
    ASSERT_EQ(jc__energy_at(&k, NULL, 301 * MS, &e), JC__AT_PENDING);
    ASSERT_EQ(jc__energy_at(&k, NULL, 99 * MS, &e), JC__AT_GONE);
    jc__ring_free(&k);
}

/* A step holding 20 ms at 1000 W then 80 ms at 100 W: power samples tell where inside the step the energy
 * went, which plain interpolation of the counter cannot. */
TEST(power_shape_inside_step) {
    jc__ring k, p;
    ASSERT_OK(jc__ring_init(&k, 16));
    ASSERT_OK(jc__ring_init(&p, 64));
    jc__ring_push(&k, 0, 0);
    jc__ring_push(&k, 100 * MS, 20 + 8); /* 1000 W x 20 ms + 100 W x 80 ms = 28 J */
    for (int ms = 0; ms <= 100; ms += 5) jc__ring_push(&p, (uint64_t)ms * MS, ms < 20 ? 1000 : 100);
    double e;
    ASSERT_EQ(jc__energy_at(&k, &p, 20 * MS, &e), JC__AT_OK);
    /* Truth 20 J; linear would say 5.6 J. Sampling at 5 ms blurs one edge by at most half a sample. */
    ASSERT_NEAR(e, 20, 2.5);
    ASSERT_EQ(jc__energy_at(&k, &p, 100 * MS, &e), JC__AT_OK);
    ASSERT_NEAR(e, 28, 1e-9);
    jc__ring_free(&k);
    jc__ring_free(&p);
}

TEST(power_integral_trapezoid) {
    jc__ring p;
    ASSERT_OK(jc__ring_init(&p, 8));
    jc__ring_push(&p, 0, 100);
    jc__ring_push(&p, 1000 * MS, 300);
    ASSERT_NEAR(jc__power_integral(&p, 0, 1000 * MS), 200, 1e-6);
    ASSERT_NEAR(jc__power_integral(&p, 0, 500 * MS), 75, 1e-6);
    /* Flat beyond the ends. */
    ASSERT_NEAR(jc__power_integral(&p, 1000 * MS, 2000 * MS), 300, 1e-6);
    jc__ring_free(&p);
}

JC_TEST_MAIN(TEST_ENTRY(ring_keeps_order_and_bound), TEST_ENTRY(linear_without_power),
             TEST_ENTRY(power_shape_inside_step), TEST_ENTRY(power_integral_trapezoid))
