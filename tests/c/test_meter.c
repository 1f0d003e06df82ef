/* Windows and the sampler against the fake NVML (real code paths: the library dlopens the fake). */
#include <time.h>
#include <unistd.h>

#include "jc_test.h"
#include "joulecap.h"

static void use_scenario(const char *name) {
    const char *data = getenv("JC_TEST_DATA"), *fake = getenv("JC_FAKE_NVML");
    if (!data || !fake) JC_FAILF("JC_TEST_DATA and JC_FAKE_NVML must be set (run through ctest)");
    char path[1024];
    snprintf(path, sizeof path, "%s/scenarios/%s", data, name);
    setenv("JOULECAP_NVML_LIBRARY", fake, 1);
    setenv("JOULECAP_FAKE_NVML_SCENARIO", path, 1);
    unsetenv("JOULECAP_FAKE_NVML_STATE");
    unsetenv("CUDA_VISIBLE_DEVICES");
    snprintf(path, sizeof path, "%s/sysfs/empty", data);
    setenv("JOULECAP_SYSFS_ROOT", path, 1);
    snprintf(path, sizeof path, "%s/proc/qemu", data);
    setenv("JOULECAP_PROC_ROOT", path, 1);
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static jc_context *open_ctx(const char *gpus, const char *csv) {
    jc_options o;
    jc_options_init(&o);
    o.gpus = gpus;
    o.csv_path = csv;
    o.csv_interval_s = csv ? 0.1 : 0;
    o.flags = JC_EVERY_STEP; /* these tests measure intervals after the fact */
    jc_context *ctx = NULL;
    ASSERT_OK(jc_open(&ctx, &o));
    return ctx;
}

static double window_j(jc_context *ctx, double seconds, int device) {
    jc_window w;
    ASSERT_OK(jc_window_start(ctx, "w", &w));
    sleep_s(seconds);
    ASSERT_OK(jc_window_stop(ctx, w));
    jc_window_result r;
    ASSERT_OK(jc_window_result_get(ctx, w, 2.0, &r));
    ASSERT_TRUE(r.resolved);
    ASSERT_OK(jc_window_release(ctx, w));
    return r.energy_j[device];
}

TEST(constant_300w_one_second) {
    use_scenario("h100-constant-300w.scn");
    jc_context *ctx = open_ctx("0", NULL);
    ASSERT_EQ(jc_device_count(ctx), 2);
    jc_device_info gi;
    ASSERT_OK(jc_device_info_get(ctx, 1, &gi));
    ASSERT_EQ(gi.energy_source, JC_SOURCE_COUNTER);
    ASSERT_NEAR(gi.max_limit_w, 700.0, 1e-9);
    ASSERT_NEAR(gi.min_limit_w, 200.0, 1e-9);
    ASSERT_NEAR(gi.default_limit_w, 700.0, 1e-9);
    jc_device_info ci;
    ASSERT_OK(jc_device_info_get(ctx, 0, &ci));
    ASSERT_EQ(ci.energy_source, JC_SOURCE_ESTIMATE);
    ASSERT_CONTAINS(ci.energy_note, "estimate");
    jc_window w;
    uint64_t t0 = jc_now_ns();
    ASSERT_OK(jc_window_start(ctx, "one-second", &w));
    sleep_s(1.0);
    ASSERT_OK(jc_window_stop(ctx, w));
    jc_window_result r;
    ASSERT_OK(jc_window_result_get(ctx, w, 2.0, &r));
    double elapsed = r.elapsed_s;
    ASSERT_TRUE(elapsed >= 1.0 && elapsed < 1.2);
    /* Constant power: interpolation inside the 100 ms steps is exact up to the step-instant estimate. */
    ASSERT_NEAR(r.energy_j[1], 300.0 * elapsed, 6.0);
    ASSERT_TRUE(r.energy_j[0] > 0); /* CPU estimate */
    ASSERT_EQ(r.source[0], JC_SOURCE_ESTIMATE);
    ASSERT_STR_EQ(jc_window_name(ctx, w), "one-second");
    ASSERT_OK(jc_window_release(ctx, w));
    ASSERT_STATUS(jc_window_result_get(ctx, w, 0, &r), JC_ERR_NOT_FOUND);
    (void)t0;
    jc_close(ctx);
}

TEST(short_windows_are_not_quantised) {
    use_scenario("h100-constant-300w.scn");
    jc_context *ctx = open_ctx("0", NULL);
    /* A 30 ms window inside one 100 ms counter step: edge reads would give 0 J or 30 J. */
    for (int i = 0; i < 5; i++) {
        jc_window w;
        ASSERT_OK(jc_window_start(ctx, NULL, &w));
        sleep_s(0.03);
        ASSERT_OK(jc_window_stop(ctx, w));
        jc_window_result r;
        ASSERT_OK(jc_window_result_get(ctx, w, 2.0, &r));
        ASSERT_NEAR(r.energy_j[1], 300.0 * r.elapsed_s, 3.0);
        ASSERT_OK(jc_window_release(ctx, w));
    }
    jc_close(ctx);
}

TEST(tiling_windows_conserve_energy) {
    use_scenario("h100-square-wave.scn");
    jc_context *ctx = open_ctx("0", NULL);
    enum { N = 40 };
    uint64_t t[N + 1];
    t[0] = jc_now_ns();
    for (int i = 1; i <= N; i++) {
        sleep_s(0.013 + 0.011 * (i % 3));
        t[i] = jc_now_ns();
    }
    double sum = 0;
    jc_window_result r;
    for (int i = 0; i < N; i++) {
        ASSERT_OK(jc_energy_between(ctx, t[i], t[i + 1], 2.0, &r));
        sum += r.energy_j[1];
    }
    ASSERT_OK(jc_energy_between(ctx, t[0], t[N], 2.0, &r));
    ASSERT_NEAR(sum, r.energy_j[1], 1e-6 * r.energy_j[1]);
    jc_close(ctx);
}

TEST(nested_and_overlapping_windows) {
    use_scenario("h100-constant-300w.scn");
    jc_context *ctx = open_ctx("0", NULL);
    jc_window outer, inner, overlap;
    ASSERT_OK(jc_window_start(ctx, "outer", &outer));
    sleep_s(0.2);
    ASSERT_OK(jc_window_start(ctx, "inner", &inner));
    sleep_s(0.2);
    ASSERT_OK(jc_window_start(ctx, "overlap", &overlap));
    sleep_s(0.2);
    ASSERT_OK(jc_window_stop(ctx, inner));
    ASSERT_OK(jc_window_stop(ctx, outer));
    sleep_s(0.1);
    ASSERT_OK(jc_window_stop(ctx, overlap));
    ASSERT_STATUS(jc_window_stop(ctx, overlap), JC_ERR_STATE);
    jc_window_result ro, ri, rv;
    ASSERT_OK(jc_window_result_get(ctx, outer, 2, &ro));
    ASSERT_OK(jc_window_result_get(ctx, inner, 2, &ri));
    ASSERT_OK(jc_window_result_get(ctx, overlap, 2, &rv));
    ASSERT_TRUE(ro.energy_j[1] > ri.energy_j[1]);
    ASSERT_NEAR(ri.energy_j[1], 300 * ri.elapsed_s, 6);
    ASSERT_NEAR(rv.energy_j[1], 300 * rv.elapsed_s, 6);
    jc_close(ctx);
}

TEST(result_of_open_window_is_an_error) {
    use_scenario("h100-constant-300w.scn");
    jc_context *ctx = open_ctx("0", NULL);
    jc_window w;
    jc_window_result r;
    ASSERT_OK(jc_window_start(ctx, "x", &w));
    ASSERT_STATUS(jc_window_result_get(ctx, w, 0, &r), JC_ERR_STATE);
    ASSERT_STATUS(jc_window_stop(ctx, 12345), JC_ERR_NOT_FOUND);
    ASSERT_STATUS(jc_window_result_get(ctx, w, -1, &r), JC_ERR_INVALID_ARGUMENT);
    jc_close(ctx);
}

TEST(bad_options_fail_before_work) {
    use_scenario("h100-constant-300w.scn");
    jc_options o;
    jc_context *ctx = NULL;
    jc_options_init(&o);
    o.interval_s = -1;
    ASSERT_STATUS(jc_open(&ctx, &o), JC_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(jc_last_detail(), "interval");
    o.interval_s = NAN;
    ASSERT_STATUS(jc_open(&ctx, &o), JC_ERR_INVALID_ARGUMENT);
    o.interval_s = 1e9;
    ASSERT_STATUS(jc_open(&ctx, &o), JC_ERR_INVALID_ARGUMENT);
    jc_options_init(&o);
    o.gpus = "3";
    ASSERT_STATUS(jc_open(&ctx, &o), JC_ERR_NOT_FOUND);
    ASSERT_CONTAINS(jc_last_detail(), "NVIDIA H100");
    jc_options_init(&o);
    o.csv_path = "/nonexistent-dir/x.csv";
    ASSERT_STATUS(jc_open(&ctx, &o), JC_ERR_IO);
    ASSERT_CONTAINS(jc_last_detail(), "/nonexistent-dir/x.csv");
    ASSERT_TRUE(ctx == NULL);
}

TEST(no_nvml_means_cpu_only) {
    use_scenario("driver-not-loaded.scn");
    jc_context *ctx = open_ctx("0", NULL);
    ASSERT_EQ(jc_device_count(ctx), 1);
    char ver[64], note[512];
    ASSERT_STATUS(jc_gpu_driver(ctx, ver, sizeof ver, note, sizeof note), JC_ERR_UNAVAILABLE);
    ASSERT_CONTAINS(note, "NVML");
    jc_close(ctx);
    setenv("JOULECAP_NVML_LIBRARY", "/nonexistent/libnvidia-ml.so.1", 1);
    ASSERT_OK(jc_open(&ctx, NULL));
    ASSERT_EQ(jc_device_count(ctx), 1);
    jc_close(ctx);
}

TEST(gpu_without_counter_integrates_power) {
    use_scenario("no-energy-counter.scn");
    jc_context *ctx = open_ctx("0", NULL);
    jc_device_info gi;
    ASSERT_OK(jc_device_info_get(ctx, 1, &gi));
    ASSERT_EQ(gi.energy_source, JC_SOURCE_INTEGRATED);
    ASSERT_CONTAINS(gi.energy_note, "integrated");
    double e = window_j(ctx, 1.0, 1);
    jc_reading rd;
    ASSERT_OK(jc_reading_get(ctx, 1, &rd));
    ASSERT_NEAR(e, rd.power_w * 1.0, 0.1 * rd.power_w);
    jc_close(ctx);
}

TEST(lost_gpu_gives_empty_values_not_a_crash) {
    use_scenario("gpu-lost.scn");
    jc_context *ctx = open_ctx("0", NULL);
    double before = window_j(ctx, 0.3, 1);
    ASSERT_NEAR(before, 400 * 0.3, 15);
    sleep_s(1.0);
    jc_window w;
    ASSERT_OK(jc_window_start(ctx, NULL, &w));
    sleep_s(0.2);
    ASSERT_OK(jc_window_stop(ctx, w));
    jc_window_result r;
    ASSERT_OK(jc_window_result_get(ctx, w, 2.0, &r));
    ASSERT_TRUE(isnan(r.energy_j[1]));
    jc_device_info gi;
    ASSERT_OK(jc_device_info_get(ctx, 1, &gi));
    ASSERT_CONTAINS(gi.energy_note, "lost");
    jc_close(ctx);
}

TEST(csv_rows_reach_disk_while_running) {
    use_scenario("h100-constant-300w.scn");
    char path[] = "/tmp/jc-meter-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_TRUE(fd >= 0);
    close(fd);
    jc_context *ctx = open_ctx("0", path);
    sleep_s(1.0);
    FILE *f = fopen(path, "r");
    ASSERT_TRUE(f != NULL);
    char line[1024];
    int rows = 0;
    ASSERT_TRUE(fgets(line, sizeof line, f) != NULL);
    ASSERT_CONTAINS(line, "elapsed_s,cpu_energy_kwh,cpu_util_pct,cpu_temp_c,gpu0_energy_kwh");
    double last_e = 0, last_t = 0;
    while (fgets(line, sizeof line, f)) {
        rows++;
        double t, ce, cu, e;
        if (sscanf(line, "%lf,%lf,%lf,,%lf", &t, &ce, &cu, &e) == 4) {
            last_e = e;
            last_t = t;
        }
    }
    fclose(f);
    ASSERT_TRUE(rows >= 7); /* 10 rows at 0.1 s, minus at most ~one counter step not yet resolved */
    ASSERT_NEAR(last_e * 3.6e6, 300 * last_t, 6);
    jc_close(ctx);
    unlink(path);
}

/* Energy of [a, b] s (fake-GPU time) under the square-wave scenario: 778 W for the first 250 ms of each
 * 500 ms period, 131 W for the rest. */
static double square_truth(double a, double b) {
    double e = 0, dt = 1e-4;
    for (double t = a; t < b; t += dt) e += (fmod(t, 0.5) < 0.25 ? 778.0 : 131.0) * (t + dt <= b ? dt : b - t);
    return e;
}

/* The phase-locked counter tracking against a known truth: the fake GPU's clock starts at a time we choose
 * (written into its state file), so the true energy of any window is known.  With knots exactly on this
 * wave's 100 ms steps, linear interpolation itself errs by 21% / 4.2% / 0% at 0.1 / 0.3 / 1 s (every 250 ms
 * transition falls inside a step); knots misplaced by tens of ms would be far worse. */
/* The window CSV: a row per finished window, in finish order, written without the caller calling in again;
 * a window released at once still gets its row; a result waits for the row. */
TEST(window_csv_rows_in_finish_order) {
    use_scenario("h100-constant-300w.scn");
    char path[] = "/tmp/jc-wcsv-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_TRUE(fd >= 0);
    close(fd);
    jc_options o;
    jc_options_init(&o);
    o.gpus = "0";
    o.window_csv_path = path;
    jc_context *ctx;
    ASSERT_OK(jc_open(&ctx, &o));
    jc_window a, b, c;
    ASSERT_OK(jc_window_start(ctx, "a,\"quoted\"", &a));
    ASSERT_OK(jc_window_start(ctx, "b", &b));
    sleep_s(0.3);
    ASSERT_OK(jc_window_finish(ctx, b, jc_now_ns()));
    ASSERT_OK(jc_window_release(ctx, b)); /* at once: the row comes anyway */
    ASSERT_OK(jc_window_finish(ctx, a, jc_now_ns()));
    ASSERT_OK(jc_window_start(ctx, "c", &c));
    ASSERT_OK(jc_window_finish(ctx, c, jc_now_ns()));
    jc_window_result r;
    ASSERT_OK(jc_window_result_get(ctx, a, 2.0, &r));
    ASSERT_NEAR(r.energy_j[1], 300 * r.elapsed_s, 3.5);
    ASSERT_EQ((int)r.coverage[1], 1);
    FILE *f = fopen(path, "r");
    char line[1024], rows[4][1024];
    int n = 0;
    while (n < 4 && fgets(line, sizeof line, f)) snprintf(rows[n++], sizeof rows[0], "%s", line);
    fclose(f);
    ASSERT_TRUE(n >= 3); /* header, b, a (written before a's result was returned) */
    ASSERT_CONTAINS(rows[0], "elapsed_s,cpu_energy_kwh,gpu0_energy_kwh,cpu_energy_source,gpu0_energy_source,window,"
                             "start_s,cpu_coverage,gpu0_coverage,cpu_state,gpu0_state");
    ASSERT_CONTAINS(rows[1], ",b,");
    ASSERT_CONTAINS(rows[2], ",\"a,\"\"quoted\"\"\",");
    ASSERT_CONTAINS(rows[2], ",1,1,ok,ok");
    size_t pending = 9;
    ASSERT_OK(jc_window_csv_flush(ctx, 2.0, &pending));
    ASSERT_EQ(pending, 0);
    ASSERT_OK(jc_window_release(ctx, a));
    ASSERT_OK(jc_window_release(ctx, c));
    ASSERT_STATUS(jc_window_release(ctx, b), JC_ERR_NOT_FOUND);
    jc_close(ctx);
    f = fopen(path, "r");
    n = 0;
    while (fgets(line, sizeof line, f)) n++;
    fclose(f);
    ASSERT_EQ(n, 4);
    unlink(path);
}

/* jc_energy_at: many instants in one call agree with jc_energy_between on each interval. */
TEST(energy_at_many_instants) {
    use_scenario("h100-constant-300w.scn");
    jc_context *ctx = open_ctx("0", NULL);
    uint64_t t[6];
    for (int k = 0; k < 6; k++) {
        t[k] = jc_now_ns();
        sleep_s(0.07);
    }
    double e[6 * 2];
    ASSERT_OK(jc_energy_at(ctx, t, 6, 2.0, e));
    for (int k = 1; k < 6; k++) {
        jc_window_result r;
        ASSERT_OK(jc_energy_between(ctx, t[k - 1], t[k], 2.0, &r));
        ASSERT_NEAR(e[k * 2 + 1] - e[(k - 1) * 2 + 1], r.energy_j[1], 1e-6);
    }
    ASSERT_NEAR(e[5 * 2 + 1] - e[1], 300.0 * (t[5] - t[0]) * 1e-9, 3.5);
    ASSERT_STATUS(jc_energy_at(ctx, NULL, 2, 1.0, e), JC_ERR_INVALID_ARGUMENT);
    jc_close(ctx);
}

TEST(square_wave_windows_match_truth) {
    use_scenario("h100-square-wave.scn");
    char state[] = "/tmp/jc-state-XXXXXX";
    int fd = mkstemp(state);
    ASSERT_TRUE(fd >= 0);
    uint64_t start = jc_now_ns();
    dprintf(fd, "joulecap-fakenvml-state 1\nstart_ns %llu\ndevices 1\ndevice 0 700000 700000 0 0\n",
            (unsigned long long)start);
    close(fd);
    setenv("JOULECAP_FAKE_NVML_STATE", state, 1);
    jc_context *ctx = open_ctx("0", NULL);
    sleep_s(3.0); /* lock on to the counter's clock, then measure the windows after the fact */
    double sizes[3] = {0.1, 0.3, 1.0}, limits[3] = {0.25, 0.06, 0.01};
    uint64_t now = jc_now_ns();
    for (int k = 0; k < 3; k++) {
        double err = 0;
        int n = 0;
        for (double off = 0.5; off + sizes[k] < 2.4; off += 0.037, n++) {
            uint64_t t0 = now - (uint64_t)((2.5 - off) * 1e9), t1 = t0 + (uint64_t)(sizes[k] * 1e9);
            jc_window_result r;
            ASSERT_OK(jc_energy_between(ctx, t0, t1, 1.0, &r));
            double truth = square_truth((t0 - start) * 1e-9, (t1 - start) * 1e-9);
            err += fabs(r.energy_j[1] - truth) / truth;
        }
        fprintf(stderr, "square wave, %.1f s windows: mean abs error %.2f%% over %d\n", sizes[k], 100 * err / n, n);
        ASSERT_TRUE(err / n < limits[k]);
    }
    jc_close(ctx);
    unlink(state);
    unsetenv("JOULECAP_FAKE_NVML_STATE");
}

/* A counter without steps: no clock to lock on to; the sampler reads it every 100 ms, knots at the reads. */
TEST(continuous_counter) {
    use_scenario("continuous-counter.scn");
    jc_context *ctx = open_ctx("0", NULL);
    double e = window_j(ctx, 1.0, 1);
    ASSERT_NEAR(e, 300.0, 6.0);
    jc_close(ctx);
}

JC_TEST_MAIN(TEST_ENTRY(constant_300w_one_second), TEST_ENTRY(short_windows_are_not_quantised),
             TEST_ENTRY(tiling_windows_conserve_energy), TEST_ENTRY(nested_and_overlapping_windows),
             TEST_ENTRY(result_of_open_window_is_an_error), TEST_ENTRY(bad_options_fail_before_work),
             TEST_ENTRY(no_nvml_means_cpu_only), TEST_ENTRY(gpu_without_counter_integrates_power),
             TEST_ENTRY(lost_gpu_gives_empty_values_not_a_crash), TEST_ENTRY(csv_rows_reach_disk_while_running),
             TEST_ENTRY(window_csv_rows_in_finish_order), TEST_ENTRY(energy_at_many_instants),
             TEST_ENTRY(square_wave_windows_match_truth), TEST_ENTRY(continuous_counter))
