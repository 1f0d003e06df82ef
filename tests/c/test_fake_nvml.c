/* Tests of the fake NVML library itself: it is loaded the way the NVML source loads libnvidia-ml (dlopen of
 * the path in JC_FAKE_NVML) and driven by the scenarios in tests/scenarios.  Timings are real but short. */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "jc_test.h"
#include "sources/nvml_api.h"

static struct {
#define X(ret, name, args, required) ret(*name) args;
    JC_NVML_FUNCTIONS(X)
#undef X
} nv;

static void load_fake(void) {
    static void *handle;
    if (handle) return;
    const char *path = getenv("JC_FAKE_NVML");
    if (!path) JC_FAILF("JC_FAKE_NVML is not set (run through ctest)");
    handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) JC_FAILF("dlopen %s: %s", path, dlerror());
#define X(ret, name, args, required)                                                                       \
    do {                                                                                                   \
        void *sym = dlsym(handle, #name);                                                                  \
        if (!sym) JC_FAILF("the fake does not export %s", #name);                                          \
        memcpy(&nv.name, &sym, sizeof sym);                                                                \
    } while (0);
    JC_NVML_FUNCTIONS(X)
#undef X
}

#define NV_EQ(expr, want)                                                                                  \
    do {                                                                                                   \
        nvmlReturn_t r_ = (expr), w_ = (want);                                                             \
        if (r_ != w_) JC_FAILF("%s: got %d (%s), want %d (%s)", #expr, r_, nv.nvmlErrorString(r_), w_,      \
                               nv.nvmlErrorString(w_));                                                    \
    } while (0)
#define NV_OK(expr) NV_EQ(expr, NVML_SUCCESS)

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(double ms) {
    if (ms <= 0) return;
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(fmod(ms, 1000) * 1e6)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static const char *tmp_dir(void) {
    const char *t = getenv("TMPDIR");
    return t && *t ? t : "/tmp";
}

/* Selects a scenario of tests/scenarios (or an absolute path) and a state file (NULL: a private one). */
static void use(const char *scenario, const char *state) {
    static char path[4096];
    load_fake();
    if (scenario[0] == '/') {
        snprintf(path, sizeof path, "%s", scenario);
    } else {
        const char *data = getenv("JC_TEST_DATA");
        if (!data) JC_FAILF("JC_TEST_DATA is not set (run through ctest)");
        snprintf(path, sizeof path, "%s/scenarios/%s", data, scenario);
    }
    setenv("JOULECAP_FAKE_NVML_SCENARIO", path, 1);
    if (state) setenv("JOULECAP_FAKE_NVML_STATE", state, 1);
    else unsetenv("JOULECAP_FAKE_NVML_STATE");
}

static void temp_path(char *buf, size_t len, const char *what) {
    snprintf(buf, len, "%s/jc-test-fake-nvml-%ld-%s", tmp_dir(), (long)getpid(), what);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) JC_FAILF("cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

static nvmlDevice_t device(unsigned index) {
    nvmlDevice_t d = NULL;
    NV_OK(nv.nvmlDeviceGetHandleByIndex_v2(index, &d));
    return d;
}

static unsigned long long energy(nvmlDevice_t d) {
    unsigned long long mj = 0;
    NV_OK(nv.nvmlDeviceGetTotalEnergyConsumption(d, &mj));
    return mj;
}

static unsigned power_usage(nvmlDevice_t d) {
    unsigned mw = 0;
    NV_OK(nv.nvmlDeviceGetPowerUsage(d, &mw));
    return mw;
}

static unsigned instant(nvmlDevice_t d) {
    nvmlFieldValue_t v;
    memset(&v, 0, sizeof v);
    v.fieldId = NVML_FI_DEV_POWER_INSTANT;
    NV_OK(nv.nvmlDeviceGetFieldValues(d, 1, &v));
    NV_OK(v.nvmlReturn);
    ASSERT_EQ(v.valueType, NVML_VALUE_TYPE_UNSIGNED_INT);
    return v.value.uiVal;
}

static unsigned limit(nvmlDevice_t d) {
    unsigned mw = 0;
    NV_OK(nv.nvmlDeviceGetPowerManagementLimit(d, &mw));
    return mw;
}

/* ------------------------------------------------------------------------------------------------------ */

TEST(uninitialized_and_error_strings) {
    load_fake();
    unsigned n;
    NV_EQ(nv.nvmlDeviceGetCount_v2(&n), NVML_ERROR_UNINITIALIZED);
    NV_EQ(nv.nvmlShutdown(), NVML_ERROR_UNINITIALIZED);
    ASSERT_STR_EQ(nv.nvmlErrorString(NVML_SUCCESS), "Success");
    ASSERT_STR_EQ(nv.nvmlErrorString(NVML_ERROR_GPU_IS_LOST), "GPU is lost");
    ASSERT_STR_EQ(nv.nvmlErrorString(NVML_ERROR_NO_PERMISSION), "Insufficient Permissions");
    ASSERT_STR_EQ(nv.nvmlErrorString(NVML_ERROR_NOT_SUPPORTED), "Not Supported");
    ASSERT_STR_EQ(nv.nvmlErrorString(NVML_ERROR_DRIVER_NOT_LOADED), "Driver Not Loaded");
    ASSERT_STR_EQ(nv.nvmlErrorString(12345), "Unknown Error");
}

TEST(driver_not_loaded) {
    use("driver-not-loaded.scn", NULL);
    NV_EQ(nv.nvmlInit_v2(), NVML_ERROR_DRIVER_NOT_LOADED);
    unsigned n;
    NV_EQ(nv.nvmlDeviceGetCount_v2(&n), NVML_ERROR_UNINITIALIZED);
    NV_EQ(nv.nvmlShutdown(), NVML_ERROR_UNINITIALIZED);
}

/* Runs nvmlInit_v2 with stderr captured into out. */
static nvmlReturn_t init_capturing_stderr(char *out, size_t len) {
    char path[512];
    temp_path(path, sizeof path, "stderr");
    fflush(stderr);
    int saved = dup(2), fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    ASSERT_TRUE(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    nvmlReturn_t r = nv.nvmlInit_v2();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    ssize_t n = pread(fd, out, len - 1, 0);
    out[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
    return r;
}

TEST(bad_scenarios) {
    char scn[512], err[2048];
    use("does-not-exist.scn", NULL);
    NV_EQ(init_capturing_stderr(err, sizeof err), NVML_ERROR_UNKNOWN);
    ASSERT_CONTAINS(err, "does-not-exist.scn");

    temp_path(scn, sizeof scn, "bad.scn");
    write_file(scn, "# a comment\n[device]\nidle_w = 50\nloaded_w = lots\n");
    use(scn, NULL);
    NV_EQ(init_capturing_stderr(err, sizeof err), NVML_ERROR_UNKNOWN);
    ASSERT_CONTAINS(err, ":4: loaded_w");
    /* Reported once, not at every retry. */
    NV_EQ(init_capturing_stderr(err, sizeof err), NVML_ERROR_UNKNOWN);
    ASSERT_STR_EQ(err, "");

    write_file(scn, "[device]\nsegment = 0 100 1\nsegment = 50 150 0.5\n");
    NV_EQ(init_capturing_stderr(err, sizeof err), NVML_ERROR_UNKNOWN);
    ASSERT_CONTAINS(err, "segments overlap");
    write_file(scn, "[device]\nerror = * 0 end NO_SUCH_CODE\n");
    NV_EQ(init_capturing_stderr(err, sizeof err), NVML_ERROR_UNKNOWN);
    ASSERT_CONTAINS(err, ":2: error: unknown NVML return code");
    write_file(scn, "delay = * 0 end\n");
    NV_EQ(init_capturing_stderr(err, sizeof err), NVML_ERROR_UNKNOWN);
    ASSERT_CONTAINS(err, ":1: delay: expected '<function> <from_ms> <to_ms|end> <delay_ms>'");
    write_file(scn, "[device]\ndelay = * 100 50 10\n");
    NV_EQ(init_capturing_stderr(err, sizeof err), NVML_ERROR_UNKNOWN);
    ASSERT_CONTAINS(err, ":2: delay: to_ms must be after from_ms");
    write_file(scn, "[device]\ndelay = * 0 end -1\n");
    NV_EQ(init_capturing_stderr(err, sizeof err), NVML_ERROR_UNKNOWN);
    ASSERT_CONTAINS(err, ":2: delay delay_ms: must not be negative");
    write_file(scn, "[device]\nerror_call = * 0 1 GPU_IS_LOST\n");
    NV_EQ(init_capturing_stderr(err, sizeof err), NVML_ERROR_UNKNOWN);
    ASSERT_CONTAINS(err, ":2: error_call: n counts from 1");
    write_file(scn, "error_call = * 1 0 GPU_IS_LOST\n");
    NV_EQ(init_capturing_stderr(err, sizeof err), NVML_ERROR_UNKNOWN);
    ASSERT_CONTAINS(err, ":1: error_call: count must be at least 1");
    write_file(scn, "error_call = * 1 end SUCCESS\n");
    NV_EQ(init_capturing_stderr(err, sizeof err), NVML_ERROR_UNKNOWN);
    ASSERT_CONTAINS(err, ":1: error_call: unknown NVML return code 'SUCCESS'");
    write_file(scn, "error_call = * 1.5 end UNKNOWN\n");
    NV_EQ(init_capturing_stderr(err, sizeof err), NVML_ERROR_UNKNOWN);
    ASSERT_CONTAINS(err, ":1: error_call n: '1.5' is not an integer");
    write_file(scn, "[device]\ncounter_jump = 100 1.5\n");
    NV_EQ(init_capturing_stderr(err, sizeof err), NVML_ERROR_UNKNOWN);
    ASSERT_CONTAINS(err, ":2: counter_jump delta_mj: '1.5' is not a whole number of mJ");
    write_file(scn, "[device]\ncounter_jump = 100\n");
    NV_EQ(init_capturing_stderr(err, sizeof err), NVML_ERROR_UNKNOWN);
    ASSERT_CONTAINS(err, ":2: counter_jump: expected '<at_ms> <delta_mj>'");
    write_file(scn, "[device]\ncounter_reset = soon\n");
    NV_EQ(init_capturing_stderr(err, sizeof err), NVML_ERROR_UNKNOWN);
    ASSERT_CONTAINS(err, ":2: counter_reset at_ms: 'soon' is not a number");
    write_file(scn, "[device]\ncounter_stuck = 0 100\ncounter_stuck = 50 end\n");
    NV_EQ(init_capturing_stderr(err, sizeof err), NVML_ERROR_UNKNOWN);
    ASSERT_CONTAINS(err, "counter_stuck windows overlap");
    write_file(scn, "counter_reset = 100\n");
    NV_EQ(init_capturing_stderr(err, sizeof err), NVML_ERROR_UNKNOWN);
    ASSERT_CONTAINS(err, ":1: unknown global key 'counter_reset'");
    unlink(scn);
    unsigned n;
    NV_EQ(nv.nvmlDeviceGetCount_v2(&n), NVML_ERROR_UNINITIALIZED);
}

TEST(reference_counted_init) {
    use("h100-constant-300w.scn", NULL);
    NV_OK(nv.nvmlInit_v2());
    NV_OK(nv.nvmlInit_v2());
    NV_OK(nv.nvmlShutdown());
    unsigned n = 0;
    NV_OK(nv.nvmlDeviceGetCount_v2(&n));
    ASSERT_EQ(n, 1);
    nvmlDevice_t d = device(0);
    NV_OK(nv.nvmlShutdown());
    NV_EQ(nv.nvmlDeviceGetCount_v2(&n), NVML_ERROR_UNINITIALIZED);
    char name[96];
    NV_EQ(nv.nvmlDeviceGetName(d, name, sizeof name), NVML_ERROR_UNINITIALIZED);
    NV_EQ(nv.nvmlShutdown(), NVML_ERROR_UNINITIALIZED);
}

TEST(identity_and_limits) {
    use("h100-constant-300w.scn", NULL);
    NV_OK(nv.nvmlInit_v2());
    char buf[96];
    NV_OK(nv.nvmlSystemGetDriverVersion(buf, sizeof buf));
    ASSERT_STR_EQ(buf, "580.159.04");
    NV_EQ(nv.nvmlSystemGetDriverVersion(buf, 5), NVML_ERROR_INSUFFICIENT_SIZE);
    nvmlDevice_t d;
    NV_EQ(nv.nvmlDeviceGetHandleByIndex_v2(1, &d), NVML_ERROR_INVALID_ARGUMENT);
    d = device(0);
    NV_OK(nv.nvmlDeviceGetName(d, buf, sizeof buf));
    ASSERT_STR_EQ(buf, "NVIDIA H100 80GB HBM3");
    NV_EQ(nv.nvmlDeviceGetName(d, buf, 10), NVML_ERROR_INSUFFICIENT_SIZE);
    NV_OK(nv.nvmlDeviceGetUUID(d, buf, sizeof buf));
    ASSERT_STR_EQ(buf, "GPU-8f3c2a1e-5b7d-4c9e-a0f1-2d3e4b5c6a7f");
    NV_EQ(nv.nvmlDeviceGetName((nvmlDevice_t)(uintptr_t)0x1234, buf, sizeof buf), NVML_ERROR_INVALID_ARGUMENT);

    unsigned lo = 0, hi = 0, mw = 0;
    NV_OK(nv.nvmlDeviceGetPowerManagementLimitConstraints(d, &lo, &hi));
    ASSERT_EQ(lo, 200000);
    ASSERT_EQ(hi, 700000);
    NV_OK(nv.nvmlDeviceGetPowerManagementDefaultLimit(d, &mw));
    ASSERT_EQ(mw, 700000);
    ASSERT_EQ(limit(d), 700000);
    NV_OK(nv.nvmlDeviceGetEnforcedPowerLimit(d, &mw));
    ASSERT_EQ(mw, 700000);

    NV_EQ(nv.nvmlDeviceSetPowerManagementLimit(d, 199999), NVML_ERROR_INVALID_ARGUMENT);
    NV_EQ(nv.nvmlDeviceSetPowerManagementLimit(d, 700001), NVML_ERROR_INVALID_ARGUMENT);
    ASSERT_EQ(limit(d), 700000);
    NV_OK(nv.nvmlDeviceSetPowerManagementLimit(d, 450000));
    ASSERT_EQ(limit(d), 450000);
    NV_OK(nv.nvmlDeviceGetEnforcedPowerLimit(d, &mw));
    ASSERT_EQ(mw, 450000);

    nvmlUtilization_t u;
    NV_OK(nv.nvmlDeviceGetUtilizationRates(d, &u));
    ASSERT_EQ(u.gpu, 100);
    unsigned temp = 0;
    NV_OK(nv.nvmlDeviceGetTemperature(d, NVML_TEMPERATURE_GPU, &temp));
    ASSERT_EQ(temp, 52); /* 35 + 40 * 300 / 700 */
    NV_EQ(nv.nvmlDeviceGetTemperature(d, 7, &temp), NVML_ERROR_INVALID_ARGUMENT);
    NV_OK(nv.nvmlShutdown());
}

TEST(constant_power_fields) {
    use("h100-constant-300w.scn", NULL);
    NV_OK(nv.nvmlInit_v2());
    nvmlDevice_t d = device(0);
    ASSERT_EQ(power_usage(d), 300000);
    nvmlFieldValue_t v[3];
    memset(v, 0, sizeof v);
    v[0].fieldId = NVML_FI_DEV_POWER_INSTANT;
    v[1].fieldId = NVML_FI_DEV_POWER_AVERAGE;
    v[2].fieldId = 999;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long wall_us = (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    NV_OK(nv.nvmlDeviceGetFieldValues(d, 3, v));
    NV_OK(v[0].nvmlReturn);
    ASSERT_EQ(v[0].value.uiVal, 300000);
    ASSERT_TRUE(v[0].timestamp <= wall_us + 1000 && v[0].timestamp > wall_us - 150000);
    NV_OK(v[1].nvmlReturn);
    ASSERT_EQ(v[1].value.uiVal, 300000);
    NV_EQ(v[2].nvmlReturn, NVML_ERROR_NOT_SUPPORTED);
    NV_OK(nv.nvmlShutdown());
}

TEST(constant_energy_counter_steps) {
    use("h100-constant-300w.scn", NULL);
    NV_OK(nv.nvmlInit_v2());
    nvmlDevice_t d = device(0);

    /* Poll for ~450 ms: the counter changes only every 100 ms, by 300 W * 100 ms = 30 J each time. */
    double t0 = now_ms(), changed_at[16];
    int changes = 0;
    unsigned long long prev = energy(d);
    /* energy_initial_mj is the value at the start; reads just after it may fall on the step before. */
    ASSERT_TRUE(prev >= 123456789ull - 30000);
    while (now_ms() - t0 < 450) {
        double before = now_ms();
        unsigned long long e = energy(d);
        double took = now_ms() - before;
        ASSERT_TRUE(took >= 2.9 && took < 100);
        ASSERT_TRUE(e >= prev);
        if (e != prev) {
            ASSERT_EQ(e - prev, 30000);
            ASSERT_TRUE(changes < 16);
            changed_at[changes++] = now_ms();
        }
        prev = e;
    }
    ASSERT_TRUE(changes >= 3 && changes <= 5);
    /* Seen at the first read after each step: a loaded machine (sanitizers, parallel tests) delays reads by
     * tens of ms, so the spacing is only checked to be about one step; the 30 J per change above is exact. */
    for (int i = 1; i < changes; i++) ASSERT_NEAR(changed_at[i] - changed_at[i - 1], 100, 45);

    /* Over about a second: 300 J, give or take the one step each edge may fall either side of. */
    double a = now_ms();
    unsigned long long e0 = energy(d);
    sleep_ms(1000);
    unsigned long long e1 = energy(d);
    double elapsed = now_ms() - a;
    ASSERT_NEAR((double)(e1 - e0), 300.0 * elapsed, 30000 + 300.0 * 10);
    ASSERT_EQ((e1 - e0) % 30000, 0);
    NV_OK(nv.nvmlShutdown());
}

TEST(limit_clamps_power) {
    use("h100-constant-300w.scn", NULL);
    NV_OK(nv.nvmlInit_v2());
    nvmlDevice_t d = device(0);
    NV_OK(nv.nvmlDeviceSetPowerManagementLimit(d, 250000));
    /* In force from the next counter step; the instant value refreshes every 100 ms after that. */
    sleep_ms(220);
    ASSERT_EQ(instant(d), 250000);
    unsigned long long prev = energy(d), e;
    while ((e = energy(d)) == prev) {
    }
    ASSERT_EQ(e - prev, 25000);
    NV_OK(nv.nvmlDeviceSetPowerManagementLimit(d, 700000));
    sleep_ms(220);
    ASSERT_EQ(instant(d), 300000);
    NV_OK(nv.nvmlShutdown());
}

TEST(second_process_shares_state) {
    char state[512];
    temp_path(state, sizeof state, "shared.state");
    unlink(state);
    use("h100-constant-300w.scn", state);
    NV_OK(nv.nvmlInit_v2());
    nvmlDevice_t d = device(0);
    NV_OK(nv.nvmlDeviceSetPowerManagementLimit(d, 450000));
    unsigned long long before = energy(d);
    int fds[2];
    ASSERT_TRUE(pipe(fds) == 0);
    fflush(NULL);
    pid_t pid = fork();
    ASSERT_TRUE(pid >= 0);
    if (pid == 0) {
        /* The child starts NVML afresh (dropping the reference inherited from the parent). */
        close(fds[0]);
        int ok = nv.nvmlShutdown() == NVML_SUCCESS && nv.nvmlInit_v2() == NVML_SUCCESS;
        nvmlDevice_t cd = NULL;
        unsigned mw = 0;
        unsigned long long mj = 0;
        ok = ok && nv.nvmlDeviceGetHandleByIndex_v2(0, &cd) == NVML_SUCCESS;
        ok = ok && nv.nvmlDeviceGetPowerManagementLimit(cd, &mw) == NVML_SUCCESS && mw == 450000;
        ok = ok && nv.nvmlDeviceSetPowerManagementLimit(cd, 350000) == NVML_SUCCESS;
        ok = ok && nv.nvmlDeviceGetTotalEnergyConsumption(cd, &mj) == NVML_SUCCESS;
        ok = ok && nv.nvmlShutdown() == NVML_SUCCESS;
        ok = ok && write(fds[1], &mj, sizeof mj) == (ssize_t)sizeof mj;
        _exit(ok ? 0 : 1);
    }
    close(fds[1]);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    unsigned long long child_mj = 0;
    ASSERT_EQ(read(fds[0], &child_mj, sizeof child_mj), sizeof child_mj);
    close(fds[0]);
    ASSERT_EQ(limit(d), 350000);
    unsigned long long after = energy(d);
    /* Same start time, same counter. */
    ASSERT_TRUE(before <= child_mj && child_mj <= after);
    NV_OK(nv.nvmlShutdown());

    /* The state outlives the processes: a later init sees the limit and the same counter. */
    NV_OK(nv.nvmlInit_v2());
    d = device(0);
    ASSERT_EQ(limit(d), 350000);
    ASSERT_TRUE(energy(d) >= after);
    NV_OK(nv.nvmlShutdown());
    ASSERT_EQ(access(state, F_OK), 0);
    unlink(state);
}

static void *read_energy_for_300ms(void *arg) {
    nvmlDevice_t d = arg;
    double t0 = now_ms();
    while (now_ms() - t0 < 300) energy(d);
    return NULL;
}

TEST(power_reads_not_blocked_by_energy_reads) {
    use("h100-constant-300w.scn", NULL);
    NV_OK(nv.nvmlInit_v2());
    nvmlDevice_t d = device(0);
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, read_energy_for_300ms, d), 0);
    int reads = 0, slow = 0;
    double t0 = now_ms();
    while (now_ms() - t0 < 250) {
        double a = now_ms();
        ASSERT_EQ(power_usage(d), 300000);
        ASSERT_EQ(instant(d), 300000);
        if (now_ms() - a > 2.5) slow++; /* an energy read holds its caller 3-6 ms */
        reads++;
        sleep_ms(1);
    }
    pthread_join(th, NULL);
    ASSERT_TRUE(reads > 20);
    ASSERT_TRUE(slow * 5 < reads);
    NV_OK(nv.nvmlShutdown());
}

TEST(gpu_lost_after_one_second) {
    use("gpu-lost.scn", NULL);
    double t0 = now_ms();
    NV_OK(nv.nvmlInit_v2());
    nvmlDevice_t d = device(0);
    energy(d);
    ASSERT_EQ(power_usage(d), 400000);
    ASSERT_TRUE(now_ms() - t0 < 900);
    sleep_ms(1050 - (now_ms() - t0));
    unsigned long long mj;
    unsigned mw;
    NV_EQ(nv.nvmlDeviceGetTotalEnergyConsumption(d, &mj), NVML_ERROR_GPU_IS_LOST);
    NV_EQ(nv.nvmlDeviceGetPowerUsage(d, &mw), NVML_ERROR_GPU_IS_LOST);
    nvmlFieldValue_t v;
    memset(&v, 0, sizeof v);
    v.fieldId = NVML_FI_DEV_POWER_INSTANT;
    NV_EQ(nv.nvmlDeviceGetFieldValues(d, 1, &v), NVML_ERROR_GPU_IS_LOST);
    NV_EQ(v.nvmlReturn, NVML_ERROR_GPU_IS_LOST);
    NV_OK(nv.nvmlShutdown());
}

TEST(no_permission) {
    use("no-permission.scn", NULL);
    NV_OK(nv.nvmlInit_v2());
    nvmlDevice_t d = device(0);
    NV_EQ(nv.nvmlDeviceSetPowerManagementLimit(d, 500000), NVML_ERROR_NO_PERMISSION);
    ASSERT_EQ(limit(d), 700000);
    NV_OK(nv.nvmlShutdown());
}

TEST(set_limit_noop) {
    use("limit-noop.scn", NULL);
    NV_OK(nv.nvmlInit_v2());
    nvmlDevice_t d = device(0);
    /* Accepted (still checked against the range), ignored: the old limit reads back and stays in force. */
    NV_EQ(nv.nvmlDeviceSetPowerManagementLimit(d, 199999), NVML_ERROR_INVALID_ARGUMENT);
    NV_OK(nv.nvmlDeviceSetPowerManagementLimit(d, 250000));
    ASSERT_EQ(limit(d), 700000);
    unsigned mw = 0;
    NV_OK(nv.nvmlDeviceGetEnforcedPowerLimit(d, &mw));
    ASSERT_EQ(mw, 700000);
    sleep_ms(220);
    ASSERT_EQ(instant(d), 300000);
    NV_OK(nv.nvmlShutdown());
}

TEST(no_energy_counter) {
    use("no-energy-counter.scn", NULL);
    NV_OK(nv.nvmlInit_v2());
    nvmlDevice_t d = device(0);
    unsigned long long mj;
    NV_EQ(nv.nvmlDeviceGetTotalEnergyConsumption(d, &mj), NVML_ERROR_NOT_SUPPORTED);
    ASSERT_EQ(power_usage(d), 250000);
    ASSERT_EQ(instant(d), 250000);
    NV_OK(nv.nvmlShutdown());
}

TEST(two_gpus) {
    use("two-gpus.scn", NULL);
    NV_OK(nv.nvmlInit_v2());
    unsigned n = 0;
    NV_OK(nv.nvmlDeviceGetCount_v2(&n));
    ASSERT_EQ(n, 2);
    nvmlDevice_t a = device(0), b = device(1);
    char ua[96], ub[96];
    NV_OK(nv.nvmlDeviceGetUUID(a, ua, sizeof ua));
    NV_OK(nv.nvmlDeviceGetUUID(b, ub, sizeof ub));
    ASSERT_TRUE(strcmp(ua, ub) != 0);
    ASSERT_STR_EQ(ub, "GPU-aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee");
    nvmlPciInfo_t pa, pb;
    NV_OK(nv.nvmlDeviceGetPciInfo_v3(a, &pa));
    NV_OK(nv.nvmlDeviceGetPciInfo_v3(b, &pb));
    ASSERT_STR_EQ(pa.busId, "00000000:19:00.0");
    ASSERT_STR_EQ(pb.busId, "00000000:3B:00.0");
    ASSERT_STR_EQ(pb.busIdLegacy, "0000:3B:00.0");
    ASSERT_EQ(pb.domain, 0);
    ASSERT_EQ(pb.bus, 0x3b);
    ASSERT_EQ(pb.device, 0);
    ASSERT_EQ(pb.pciDeviceId, 0x233010DE);
    ASSERT_EQ(power_usage(a), 300000);
    ASSERT_EQ(power_usage(b), 150000);
    ASSERT_TRUE(energy(b) >= 987654321ull - 15000);
    NV_OK(nv.nvmlShutdown());
}

TEST(square_wave_instant_follows_average_lags) {
    use("h100-square-wave.scn", NULL);
    NV_OK(nv.nvmlInit_v2());
    nvmlDevice_t d = device(0);
    unsigned imin = UINT32_MAX, imax = 0, amin = UINT32_MAX, amax = 0;
    int flips = 0;
    unsigned last = 0;
    double t0 = now_ms();
    unsigned long long e0 = energy(d);
    double te0 = now_ms();
    while (now_ms() - t0 < 1100) {
        unsigned i = instant(d), a = power_usage(d);
        ASSERT_TRUE(i == 778000 || i == 131000);
        if (last && i != last) flips++;
        last = i;
        imin = i < imin ? i : imin;
        imax = i > imax ? i : imax;
        amin = a < amin ? a : amin;
        amax = a > amax ? a : amax;
        sleep_ms(10);
    }
    unsigned long long e1 = energy(d);
    double elapsed = now_ms() - te0;
    ASSERT_EQ(imin, 131000);
    ASSERT_EQ(imax, 778000);
    ASSERT_TRUE(flips >= 3);
    /* The 1 s average spans two whole periods: it sits at the mean, (778 + 131) / 2 W. */
    ASSERT_NEAR(amin, 454500, 5000);
    ASSERT_NEAR(amax, 454500, 5000);
    /* Off by at most a partial period (323.5 W * 250 ms) plus a step at each edge (454.5 W * 100 ms). */
    ASSERT_NEAR((double)(e1 - e0), 454.5 * elapsed, 80875 + 45450 + 778 * 10);
    NV_OK(nv.nvmlShutdown());
}

TEST(segments_and_injected_errors) {
    char scn[512];
    temp_path(scn, sizeof scn, "step.scn");
    write_file(scn, "[device]\n"
                    "idle_w = 100\n"
                    "loaded_w = 600\n"
                    "load = 0\n"
                    "segment = 300 100000 1\n"
                    "counter_phase_ms = 23\n"
                    "error = nvmlDeviceGetPowerUsage 0 200 TIMEOUT\n"
                    "error = nvmlDeviceGetFieldValues/186 0 200 NOT_SUPPORTED\n");
    use(scn, NULL);
    double t0 = now_ms();
    NV_OK(nv.nvmlInit_v2());
    nvmlDevice_t d = device(0);
    unsigned mw;
    NV_EQ(nv.nvmlDeviceGetPowerUsage(d, &mw), NVML_ERROR_TIMEOUT);
    nvmlFieldValue_t v[2];
    memset(v, 0, sizeof v);
    v[0].fieldId = NVML_FI_DEV_POWER_INSTANT;
    v[1].fieldId = NVML_FI_DEV_POWER_AVERAGE;
    NV_OK(nv.nvmlDeviceGetFieldValues(d, 2, v));
    NV_EQ(v[0].nvmlReturn, NVML_ERROR_NOT_SUPPORTED);
    NV_OK(v[1].nvmlReturn);
    ASSERT_EQ(v[1].value.uiVal, 100000);
    nvmlUtilization_t u;
    NV_OK(nv.nvmlDeviceGetUtilizationRates(d, &u));
    ASSERT_EQ(u.gpu, 0);
    ASSERT_TRUE(now_ms() - t0 < 180);

    /* At ~450 ms: the load stepped up at 300 ms; instant power shows it, the 1 s average lags far behind. */
    sleep_ms(450 - (now_ms() - t0));
    ASSERT_EQ(instant(d), 600000);
    unsigned avg = power_usage(d);
    ASSERT_TRUE(avg > 100000 && avg < 250000);
    NV_OK(nv.nvmlDeviceGetUtilizationRates(d, &u));
    ASSERT_EQ(u.gpu, 100);
    NV_OK(nv.nvmlShutdown());
    unlink(scn);
}

typedef struct timed_call {
    nvmlDevice_t dev;
    nvmlReturn_t r;
    double took_ms;
} timed_call;

static void *power_usage_timed(void *arg) {
    timed_call *tc = arg;
    unsigned mw;
    double a = now_ms();
    tc->r = nv.nvmlDeviceGetPowerUsage(tc->dev, &mw);
    tc->took_ms = now_ms() - a;
    return NULL;
}

TEST(injected_delays) {
    char scn[512];
    temp_path(scn, sizeof scn, "delay.scn");
    write_file(scn, "delay = nvmlDeviceGetUUID 0 end 100\n"
                    "delay = nvmlSystemGetDriverVersion 0 end 60\n"
                    "[device]\n"
                    "loaded_w = 300\n"
                    "load = 1\n"
                    "energy_latency_ms = 0\n"
                    "[device]\n"
                    "loaded_w = 300\n"
                    "load = 1\n"
                    "energy_latency_ms = 0\n"
                    "delay = nvmlDeviceGetPowerU* 0 500 300\n"
                    "error = nvmlDeviceGetPowerUsage 200 400 TIMEOUT\n");
    use(scn, NULL);
    double t0 = now_ms();
    NV_OK(nv.nvmlInit_v2());
    nvmlDevice_t a = device(0), b = device(1);

    /* GPU 1's power read takes 300 ms; meanwhile every other call, on either GPU, is as quick as ever. */
    timed_call slow = {b, NVML_SUCCESS, 0};
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, power_usage_timed, &slow), 0);
    sleep_ms(30);
    double start = now_ms();
    ASSERT_EQ(power_usage(a), 300000);
    energy(a);
    energy(b);
    char name[96];
    NV_OK(nv.nvmlDeviceGetName(b, name, sizeof name));
    ASSERT_EQ(instant(b), 300000);
    ASSERT_TRUE(now_ms() - start < 50);
    pthread_join(th, NULL);
    ASSERT_TRUE(slow.took_ms >= 299 && slow.took_ms < 400);
    /* The error is checked after the delay, at the time the call does its work (~330 ms). */
    NV_EQ(slow.r, NVML_ERROR_TIMEOUT);

    /* Global delays hold up the system functions and every GPU's calls. */
    start = now_ms();
    NV_OK(nv.nvmlSystemGetDriverVersion(name, sizeof name));
    ASSERT_TRUE(now_ms() - start >= 59);
    start = now_ms();
    NV_OK(nv.nvmlDeviceGetUUID(a, name, sizeof name));
    NV_OK(nv.nvmlDeviceGetUUID(b, name, sizeof name));
    ASSERT_TRUE(now_ms() - start >= 199);

    /* After the window (from 500 ms on) GPU 1's power reads are quick again. */
    sleep_ms(520 - (now_ms() - t0));
    start = now_ms();
    ASSERT_EQ(power_usage(b), 300000);
    ASSERT_TRUE(now_ms() - start < 50);

    /* A call sleeping in a delay when the library shuts down comes back UNINITIALIZED. */
    NV_OK(nv.nvmlShutdown());
    write_file(scn, "[device]\ndelay = nvmlDeviceGetPowerUsage 0 end 200\n");
    NV_OK(nv.nvmlInit_v2());
    slow.dev = device(0);
    ASSERT_EQ(pthread_create(&th, NULL, power_usage_timed, &slow), 0);
    sleep_ms(50);
    NV_OK(nv.nvmlShutdown());
    pthread_join(th, NULL);
    NV_EQ(slow.r, NVML_ERROR_UNINITIALIZED);
    unlink(scn);
}

static void *temperature_100_times(void *arg) {
    nvmlDevice_t d = arg;
    intptr_t failed = 0;
    for (int i = 0; i < 100; i++) {
        unsigned temp;
        nvmlReturn_t r = nv.nvmlDeviceGetTemperature(d, NVML_TEMPERATURE_GPU, &temp);
        if (r == NVML_ERROR_UNKNOWN) failed++;
        else if (r != NVML_SUCCESS) return (void *)(intptr_t)-1000;
    }
    return (void *)failed;
}

TEST(errors_by_call_count) {
    char scn[512];
    temp_path(scn, sizeof scn, "error-call.scn");
    write_file(scn, "error_call = nvmlDeviceGetName 2 1 TIMEOUT\n"
                    "error_call = nvmlDeviceGetHandleByIndex_v2 3 1 UNKNOWN\n"
                    "error_call = nvmlDeviceGetUUID 1 1 IN_USE\n"
                    "[device]\n"
                    "loaded_w = 300\n"
                    "load = 1\n"
                    "error_call = nvmlDeviceGetPowerUsage 3 2 NO_PERMISSION\n"
                    "error_call = nvmlDeviceGetFieldValues/186 2 1 NOT_SUPPORTED\n"
                    "error_call = nvmlDeviceGetUUID 1 2 MEMORY\n"
                    "error_call = nvmlDeviceGetTemperature 101 50 UNKNOWN\n"
                    "[device]\n"
                    "loaded_w = 300\n"
                    "load = 1\n"
                    "error_call = nvmlDeviceGetPower* 2 end GPU_IS_LOST\n");
    use(scn, NULL);
    for (int round = 0; round < 2; round++) {
        NV_OK(nv.nvmlInit_v2());
        /* Global entries count the calls of every device: the third handle lookup fails, whichever GPU. */
        nvmlDevice_t a = device(0), b = device(1), h;
        NV_EQ(nv.nvmlDeviceGetHandleByIndex_v2(0, &h), NVML_ERROR_UNKNOWN);
        NV_OK(nv.nvmlDeviceGetHandleByIndex_v2(0, &h));
        char buf[96];
        NV_OK(nv.nvmlDeviceGetName(a, buf, sizeof buf));
        NV_EQ(nv.nvmlDeviceGetName(b, buf, sizeof buf), NVML_ERROR_TIMEOUT);
        NV_OK(nv.nvmlDeviceGetName(a, buf, sizeof buf));

        /* A device's entries count that device's calls: GPU 0's 3rd and 4th power reads fail, GPU 1's from
         * the 2nd on (its pattern covers the limit reads too). */
        unsigned mw;
        ASSERT_EQ(power_usage(a), 300000);
        ASSERT_EQ(power_usage(a), 300000);
        ASSERT_EQ(power_usage(b), 300000);
        NV_EQ(nv.nvmlDeviceGetPowerUsage(a, &mw), NVML_ERROR_NO_PERMISSION);
        NV_EQ(nv.nvmlDeviceGetPowerUsage(b, &mw), NVML_ERROR_GPU_IS_LOST);
        NV_EQ(nv.nvmlDeviceGetPowerUsage(a, &mw), NVML_ERROR_NO_PERMISSION);
        ASSERT_EQ(power_usage(a), 300000);
        NV_EQ(nv.nvmlDeviceGetPowerManagementLimit(b, &mw), NVML_ERROR_GPU_IS_LOST);
        NV_EQ(nv.nvmlDeviceGetPowerUsage(b, &mw), NVML_ERROR_GPU_IS_LOST);
        ASSERT_EQ(limit(a), 700000);

        /* A field's entry counts the reads of that field: the 2nd fails in its nvmlReturn only. */
        ASSERT_EQ(instant(a), 300000);
        nvmlFieldValue_t v;
        memset(&v, 0, sizeof v);
        v.fieldId = NVML_FI_DEV_POWER_INSTANT;
        NV_OK(nv.nvmlDeviceGetFieldValues(a, 1, &v));
        NV_EQ(v.nvmlReturn, NVML_ERROR_NOT_SUPPORTED);
        ASSERT_EQ(instant(a), 300000);

        /* Every entry counts the call, whichever decides its result: the global entry wins GPU 0's 1st UUID
         * read, which is also the 1st of the 2 its own entry fails. */
        NV_EQ(nv.nvmlDeviceGetUUID(a, buf, sizeof buf), NVML_ERROR_IN_USE);
        NV_EQ(nv.nvmlDeviceGetUUID(a, buf, sizeof buf), NVML_ERROR_MEMORY);
        NV_OK(nv.nvmlDeviceGetUUID(a, buf, sizeof buf));

        /* Threads share the counts: of 400 reads, calls 101-150 fail, exactly 50 whatever the interleaving. */
        pthread_t th[4];
        for (int i = 0; i < 4; i++) ASSERT_EQ(pthread_create(&th[i], NULL, temperature_100_times, a), 0);
        intptr_t failed = 0;
        for (int i = 0; i < 4; i++) {
            void *ret;
            pthread_join(th[i], &ret);
            failed += (intptr_t)ret;
        }
        ASSERT_EQ(failed, 50);
        /* The counts start again at the next init. */
        NV_OK(nv.nvmlShutdown());
    }
    unlink(scn);
}

TEST(energy_counter_faults) {
    char scn[512];
    temp_path(scn, sizeof scn, "counter.scn");
    /* Five GPUs at 300 W with 100 ms counter steps on the same grid: 30 J a step, read without latency. */
    char text[4096] = "";
    const char *faults[5] = {
        "",                                                       /* the true counter */
        "counter_jump = 220 1e9\ncounter_jump = 420 -5000000\n", /* +1 MJ, then 5 kJ back */
        "counter_reset = 220\n",                                  /* a driver reload */
        "counter_stuck = 220 420\n",                              /* frozen for 200 ms */
        "counter_jump = 220 -1000000000000\n",                    /* back below 0: reads 0 */
    };
    for (int i = 0; i < 5; i++)
        snprintf(text + strlen(text), sizeof text - strlen(text),
                 "[device]\nidle_w = 70\nloaded_w = 300\nload = 1\nenergy_initial_mj = 1000000000\n"
                 "counter_step_ms = 100\ncounter_phase_ms = 0\nenergy_latency_ms = 0\n%s",
                 faults[i]);
    write_file(scn, text);
    use(scn, NULL);
    double t0 = now_ms();
    NV_OK(nv.nvmlInit_v2());
    nvmlDevice_t d[5];
    for (int i = 0; i < 5; i++) d[i] = device(i);
    /* Read all five half-way between counter steps: b is the boundary each read sees. */
    const unsigned long long G = 1000000000ull;
    const unsigned long long want[5][5] = {
        /* t = 150        250            350            450                       550 */
        {G + 30000, G + 60000, G + 90000, G + 120000, G + 150000},
        {G + 30000, 2 * G + 60000, 2 * G + 90000, 2 * G + 120000 - 5000000, 2 * G + 150000 - 5000000},
        {G + 30000, 0, 24000, 54000, 84000}, /* from 0 at 220 ms: 80 ms to the next step, then 100 ms steps */
        {G + 30000, G + 60000, G + 60000, G + 120000, G + 150000}, /* the value at 220 ms until 420 ms */
        {G + 30000, 0, 0, 0, 0},
    };
    for (int k = 0; k < 5; k++) {
        sleep_ms(150 + 100 * k - (now_ms() - t0));
        for (int i = 0; i < 5; i++) {
            unsigned long long e = energy(d[i]);
            if (e != want[i][k])
                JC_FAILF("GPU %d at %d ms: counter %llu, want %llu", i, 150 + 100 * k, e, want[i][k]);
        }
    }
    NV_OK(nv.nvmlShutdown());
    unlink(scn);
}

/* The one entry of folder dir other than . and .. into name (NULL if dir holds none); fails on more. */
static const char *only_entry(const char *dir, char *name, size_t len) {
    DIR *d = opendir(dir);
    if (!d) JC_FAILF("opendir %s: %s", dir, strerror(errno));
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (n++ > 0) JC_FAILF("%s holds more than one entry (%s, %s)", dir, name, e->d_name);
        snprintf(name, len, "%s", e->d_name);
    }
    closedir(d);
    return n ? name : NULL;
}

TEST(private_state_file) {
    /* A TMPDIR of our own, to see exactly what the library makes in it. */
    char tmp[512], old_tmp[512] = "", name[256], path[1024];
    const char *t = getenv("TMPDIR");
    int had_tmp = t != NULL;
    if (t) snprintf(old_tmp, sizeof old_tmp, "%s", t);
    snprintf(tmp, sizeof tmp, "%s/jc-test-fake-nvml-XXXXXX", tmp_dir());
    ASSERT_TRUE(mkdtemp(tmp) != NULL);
    setenv("TMPDIR", tmp, 1);
    use("h100-constant-300w.scn", NULL);

    NV_OK(nv.nvmlInit_v2());
    /* A folder made by mkdtemp, only ours, holding the state file, only ours. */
    ASSERT_TRUE(only_entry(tmp, name, sizeof name) != NULL);
    ASSERT_TRUE(strncmp(name, "joulecap-fakenvml-", 18) == 0 && strlen(name) == 24);
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    ASSERT_EQ(lstat(path, &st), 0);
    ASSERT_TRUE(S_ISDIR(st.st_mode));
    ASSERT_EQ(st.st_mode & 07777, 0700);
    ASSERT_TRUE(only_entry(path, name, sizeof name) != NULL);
    snprintf(path + strlen(path), sizeof path - strlen(path), "/%s", name);
    ASSERT_EQ(lstat(path, &st), 0);
    ASSERT_TRUE(S_ISREG(st.st_mode));
    ASSERT_EQ(st.st_mode & 07777, 0600);
    ASSERT_EQ(limit(device(0)), 700000);
    /* Both go at the last shutdown. */
    NV_OK(nv.nvmlInit_v2());
    NV_OK(nv.nvmlShutdown());
    ASSERT_TRUE(only_entry(tmp, name, sizeof name) != NULL);
    NV_OK(nv.nvmlShutdown());
    ASSERT_TRUE(only_entry(tmp, name, sizeof name) == NULL);

    /* ... or at exit, without one. */
    fflush(NULL);
    pid_t pid = fork();
    ASSERT_TRUE(pid >= 0);
    if (pid == 0) exit(nv.nvmlInit_v2() == NVML_SUCCESS && only_entry(tmp, name, sizeof name) ? 0 : 1);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    ASSERT_TRUE(only_entry(tmp, name, sizeof name) == NULL);

    ASSERT_EQ(rmdir(tmp), 0);
    if (had_tmp) setenv("TMPDIR", old_tmp, 1);
    else unsetenv("TMPDIR");
}

TEST(shared_state_file_not_through_a_link) {
    char target[512], link[512], err[2048];
    temp_path(target, sizeof target, "target");
    temp_path(link, sizeof link, "link.state");
    write_file(target, "precious\n");
    unlink(link);
    ASSERT_EQ(symlink(target, link), 0);
    use("h100-constant-300w.scn", link);
    NV_EQ(init_capturing_stderr(err, sizeof err), NVML_ERROR_UNKNOWN);
    ASSERT_CONTAINS(err, "link.state: is a symbolic link, refused");
    FILE *f = fopen(target, "r");
    ASSERT_TRUE(f != NULL);
    char text[64] = "";
    ASSERT_TRUE(fgets(text, sizeof text, f) != NULL);
    fclose(f);
    ASSERT_STR_EQ(text, "precious\n");
    unlink(link);
    unlink(target);
    /* Not a regular file either. */
    temp_path(target, sizeof target, "fifo.state");
    unlink(target);
    ASSERT_EQ(mkfifo(target, 0600), 0);
    use("h100-constant-300w.scn", target);
    NV_EQ(init_capturing_stderr(err, sizeof err), NVML_ERROR_UNKNOWN);
    ASSERT_CONTAINS(err, "fifo.state: not a regular file");
    unlink(target);
}

/* The fault-matrix scenarios parse, and start (t < 500 ms) as their headers say. */
TEST(fault_scenarios_parse) {
    static const struct {
        const char *file;
        unsigned ndevices;
        nvmlReturn_t gpu1; /* what nvmlDeviceGetHandleByIndex_v2(1) returns at the start */
    } scenarios[] = {
        {"gpu1-lost.scn", 2, NVML_ERROR_GPU_IS_LOST}, {"gpu1-lost-midrun.scn", 2, NVML_SUCCESS},
        {"counter-fails-midrun.scn", 1, NVML_SUCCESS}, {"counter-backwards.scn", 1, NVML_SUCCESS},
        {"counter-jump.scn", 1, NVML_SUCCESS},         {"counter-reset.scn", 1, NVML_SUCCESS},
        {"counter-stuck.scn", 1, NVML_SUCCESS},        {"slow-gpu1.scn", 2, NVML_SUCCESS},
        {"hung-gpu1.scn", 2, NVML_SUCCESS},            {"limit-noop.scn", 1, NVML_SUCCESS},
    };
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++) {
        char err[2048];
        use(scenarios[i].file, NULL);
        double t0 = now_ms();
        nvmlReturn_t r = init_capturing_stderr(err, sizeof err);
        if (r != NVML_SUCCESS) JC_FAILF("%s: nvmlInit_v2 returned %d: %s", scenarios[i].file, r, err);
        unsigned n = 0;
        NV_OK(nv.nvmlDeviceGetCount_v2(&n));
        ASSERT_EQ(n, scenarios[i].ndevices);
        nvmlDevice_t d = device(0), d1;
        ASSERT_EQ(power_usage(d), 300000);
        ASSERT_TRUE(energy(d) > 0);
        if (n > 1) NV_EQ(nv.nvmlDeviceGetHandleByIndex_v2(1, &d1), scenarios[i].gpu1);
        ASSERT_TRUE(now_ms() - t0 < 400);
        NV_OK(nv.nvmlShutdown());
    }
}

/* Sleeps until t0 + ms. */
/* joulecap_fake_set_load: the power follows the loads a test sets (here 100 W idle, 700 W at load 1), in this
 * process, exactly: the counter integrates them. */
TEST(loads_set_at_run_time) {
    char scn[4096];
    temp_path(scn, sizeof scn, "set-load.scn");
    write_file(scn, "[device]\nidle_w = 100\nloaded_w = 700\nload = 0\nenergy_latency_ms = 0\n"
                    "energy_latency_jitter_ms = 0\n");
    use(scn, NULL);
    int (*set_load)(unsigned, double);
    void *sym = dlsym(dlopen(getenv("JC_FAKE_NVML"), RTLD_NOW | RTLD_NOLOAD), "joulecap_fake_set_load");
    ASSERT_TRUE(sym != NULL);
    memcpy(&set_load, &sym, sizeof sym);
    ASSERT_EQ(set_load(0, 1.0), -1); /* before nvmlInit_v2 */
    NV_OK(nv.nvmlInit_v2());
    nvmlDevice_t d = device(0);
    ASSERT_EQ(set_load(1, 1.0), -1);   /* no such device */
    ASSERT_EQ(set_load(0, 1.5), -1);   /* not a load */
    for (int k = 0; k < 3; k++) {      /* 700 W for 400 ms, then the schedule's 100 W for 400 ms */
        ASSERT_EQ(set_load(0, 1.0), 0);
        unsigned long long e0 = energy(d);
        double t0 = now_ms();
        sleep_ms(400);
        unsigned long long e1 = energy(d);
        double t1 = now_ms();
        ASSERT_EQ(set_load(0, -1.0), 0);
        /* the counter steps every 100 ms: each edge may be off by one step (70 J), plus the reads' time */
        ASSERT_NEAR((double)(e1 - e0), 700.0 * (t1 - t0), 70000 + 700.0 * 20);
        sleep_ms(400);
        ASSERT_NEAR((double)(energy(d) - e1), 100.0 * (now_ms() - t1), 70000 + 700.0 * 20);
    }
    NV_OK(nv.nvmlShutdown());
    unlink(scn);
}

static void sleep_until(double t0, double ms) { sleep_ms(ms - (now_ms() - t0)); }

/* Checks, in a child process of its own, that a fault-matrix scenario does what its header says. */
static void check_fault_scenario(const char *file) {
    use(file, NULL);
    double t0 = now_ms();
    NV_OK(nv.nvmlInit_v2());
    nvmlDevice_t d = device(0);
    unsigned mw;
    unsigned long long mj;
    if (strcmp(file, "gpu1-lost-midrun.scn") == 0) {
        nvmlDevice_t b = device(1);
        ASSERT_EQ(power_usage(b), 300000);
        sleep_until(t0, 1050);
        NV_EQ(nv.nvmlDeviceGetPowerUsage(b, &mw), NVML_ERROR_GPU_IS_LOST);
        NV_EQ(nv.nvmlDeviceGetHandleByIndex_v2(1, &b), NVML_ERROR_GPU_IS_LOST);
        ASSERT_EQ(power_usage(d), 300000);
    } else if (strcmp(file, "counter-fails-midrun.scn") == 0) {
        energy(d);
        sleep_until(t0, 1050);
        NV_EQ(nv.nvmlDeviceGetTotalEnergyConsumption(d, &mj), NVML_ERROR_NO_PERMISSION);
        ASSERT_EQ(power_usage(d), 300000);
    } else if (strncmp(file, "counter-", 8) == 0) {
        /* Reads half-way between the 100 ms steps (at 23 + 100 k ms): 950 ms sees the 923 ms step. */
        sleep_until(t0, 950);
        unsigned long long before = energy(d);
        sleep_until(t0, 1150);
        unsigned long long after = energy(d);
        sleep_until(t0, 1250);
        unsigned long long later = energy(d);
        /* A loaded machine may read a step or two late: the checks count whole 30 J steps, not a fixed two. */
        long long steps = ((long long)after - (long long)before);
        if (strcmp(file, "counter-backwards.scn") == 0) steps += 5000000;
        if (strcmp(file, "counter-jump.scn") == 0) steps -= 1000000000;
        if (strcmp(file, "counter-reset.scn") == 0) {
            ASSERT_TRUE(after >= 36900 && (after - 36900) % 30000 == 0); /* 123 ms at 300 W, then whole steps */
        } else if (strcmp(file, "counter-stuck.scn") != 0) {
            ASSERT_TRUE(steps >= 60000 && steps % 30000 == 0);
        }
        /* Stuck from 1000 ms: the reads after it agree (a late "before" read may fall either side of it). */
        if (strcmp(file, "counter-stuck.scn") == 0) ASSERT_TRUE(before <= after && later == after);
        else ASSERT_TRUE(later > after && (later - after) % 30000 == 0);
    } else {
        /* slow-gpu1.scn, hung-gpu1.scn: from 500 ms GPU 1's reads take 1.5 s or 30 s; GPU 0's do not. */
        nvmlDevice_t b = device(1);
        sleep_until(t0, 520);
        timed_call tc = {b, NVML_ERROR_UNKNOWN, 0};
        pthread_t th;
        ASSERT_EQ(pthread_create(&th, NULL, power_usage_timed, &tc), 0);
        for (int i = 0; i < 10; i++) {
            double a = now_ms();
            ASSERT_EQ(power_usage(d), 300000);
            ASSERT_TRUE(now_ms() - a < 50);
            sleep_ms(100);
        }
        if (strcmp(file, "slow-gpu1.scn") == 0) {
            pthread_join(th, NULL);
            NV_OK(tc.r);
            ASSERT_TRUE(tc.took_ms >= 1499 && tc.took_ms < 2500);
        } else {
            sleep_until(t0, 2100);
            ASSERT_EQ(pthread_tryjoin_np(th, NULL), EBUSY); /* still in the call; _exit ends it */
        }
    }
    NV_OK(nv.nvmlShutdown());
}

/* The fault-matrix scenarios with faults from 500 ms on, all at once (one child each): ~2 s in all. */
TEST(fault_scenarios_behave) {
    static const char *files[] = {"gpu1-lost-midrun.scn", "counter-fails-midrun.scn", "counter-backwards.scn",
                                  "counter-jump.scn",     "counter-reset.scn",        "counter-stuck.scn",
                                  "slow-gpu1.scn",        "hung-gpu1.scn"};
    enum { N = sizeof files / sizeof files[0] };
    pid_t pids[N];
    fflush(NULL);
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        ASSERT_TRUE(pids[i] >= 0);
        if (pids[i] == 0) {
            check_fault_scenario(files[i]);
            fflush(NULL);
            _exit(0);
        }
    }
    for (int i = 0; i < N; i++) {
        int status = 0;
        ASSERT_EQ(waitpid(pids[i], &status, 0), pids[i]);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) JC_FAILF("%s: its check failed", files[i]);
    }
}

JC_TEST_MAIN(TEST_ENTRY(uninitialized_and_error_strings), TEST_ENTRY(driver_not_loaded), TEST_ENTRY(bad_scenarios),
             TEST_ENTRY(reference_counted_init), TEST_ENTRY(identity_and_limits), TEST_ENTRY(constant_power_fields),
             TEST_ENTRY(constant_energy_counter_steps), TEST_ENTRY(limit_clamps_power),
             TEST_ENTRY(second_process_shares_state),
             TEST_ENTRY(power_reads_not_blocked_by_energy_reads), TEST_ENTRY(gpu_lost_after_one_second),
             TEST_ENTRY(no_permission), TEST_ENTRY(set_limit_noop), TEST_ENTRY(no_energy_counter),
             TEST_ENTRY(two_gpus), TEST_ENTRY(square_wave_instant_follows_average_lags),
             TEST_ENTRY(segments_and_injected_errors), TEST_ENTRY(injected_delays),
             TEST_ENTRY(errors_by_call_count), TEST_ENTRY(energy_counter_faults), TEST_ENTRY(private_state_file),
             TEST_ENTRY(shared_state_file_not_through_a_link), TEST_ENTRY(fault_scenarios_parse),
             TEST_ENTRY(fault_scenarios_behave), TEST_ENTRY(loads_set_at_run_time))
