/* Tests of the joulecap command-line tool ($JC_CLI), run as a separate process against the fake NVML
 * ($JC_FAKE_NVML with scenarios under $JC_TEST_DATA/scenarios) and fake sysfs/procfs trees. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "jc_cli_run.h"
#include "jc_test.h"
#include "joulecap.h"

static const char *data_path(char *buf, size_t len, const char *rel) {
    snprintf(buf, len, "%s/%s", env_or_die("JC_TEST_DATA"), rel);
    return buf;
}

static const char *tmp_path(char *buf, size_t len, const char *name) {
    snprintf(buf, len, "%s/%s", tmpdir, name);
    return buf;
}

/* Selects the fake NVML with a scenario (NULL: no NVML at all: a library path that does not exist), a fake
 * sysfs tree and a fake procfs tree (NULL: leave unset). */
static void setup(void);

static void use_env(const char *scenario, const char *sysfs, const char *proc) {
    char buf[1024];
    if (!tmpdir[0]) setup();
    if (scenario) {
        setenv("JOULECAP_NVML_LIBRARY", env_or_die("JC_FAKE_NVML"), 1);
        char rel[256];
        snprintf(rel, sizeof rel, "scenarios/%s.scn", scenario);
        setenv("JOULECAP_FAKE_NVML_SCENARIO", data_path(buf, sizeof buf, rel), 1);
        struct stat sb;
        if (stat(buf, &sb) != 0) JC_FAILF("scenario %s is missing", buf);
    } else {
        setenv("JOULECAP_NVML_LIBRARY", "/nonexistent/libnvidia-ml.so.1", 1);
        unsetenv("JOULECAP_FAKE_NVML_SCENARIO");
    }
    unsetenv("JOULECAP_FAKE_NVML_STATE");
    unsetenv("CUDA_VISIBLE_DEVICES");
    unsetenv("CUDA_DEVICE_ORDER");
    if (sysfs) {
        char rel[256];
        snprintf(rel, sizeof rel, "sysfs/%s", sysfs);
        setenv("JOULECAP_SYSFS_ROOT", data_path(buf, sizeof buf, rel), 1);
    } else {
        unsetenv("JOULECAP_SYSFS_ROOT");
    }
    if (proc) {
        char rel[256];
        snprintf(rel, sizeof rel, "proc/%s", proc);
        setenv("JOULECAP_PROC_ROOT", data_path(buf, sizeof buf, rel), 1);
    } else {
        unsetenv("JOULECAP_PROC_ROOT");
    }
}

static int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* The number after "key": in a JSON text (the flat keys of the summaries). */
static double json_number(const char *text, const char *key) {
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(text, pat);
    if (!p) JC_FAILF("no key %s in %s", key, text);
    p += strlen(pat);
    if (strncmp(p, "null", 4) == 0) return NAN;
    char *end;
    double v = strtod(p, &end);
    if (end == p) JC_FAILF("key %s has no number in %s", key, text);
    return v;
}

/* Field idx of a CSV line as a number (NaN when empty). */
static double csv_field(const char *line, int idx) {
    for (int i = 0; i < idx; i++) {
        line = strchr(line, ',');
        if (!line) JC_FAILF("no field %d", idx);
        line++;
    }
    if (*line == ',' || *line == '\n' || !*line) return NAN;
    return strtod(line, NULL);
}

static int count_lines(const char *text) {
    int n = 0;
    for (const char *p = text; *p; p++) n += *p == '\n';
    return n;
}

/* ------------------------------------------------------------------------------------------------------ */

TEST(help_and_version) {
    use_env("h100-constant-300w", NULL, NULL);
    result_t r = cli("--help", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "joulecap run");
    ASSERT_CONTAINS(r.out, "CUDA_VISIBLE_DEVICES");
    ASSERT_CONTAINS(r.out, "JOULECAP_NVML_LIBRARY");
    ASSERT_CONTAINS(r.out, "JOULECAP_SYSFS_ROOT");
    ASSERT_CONTAINS(r.out, "JOULECAP_PROC_ROOT");
    ASSERT_CONTAINS(r.out, "Exit status");
    ASSERT_CONTAINS(r.out, "GPU-");
    free_result(&r);

    r = cli("--version", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, JC_VERSION_STRING);
    free_result(&r);

    const char *cmds[] = {"info", "run", "monitor"};
    for (size_t i = 0; i < 3; i++) {
        r = cli("help", cmds[i], NULL);
        EXPECT_CODE(r, 0);
        char want[64];
        snprintf(want, sizeof want, "Usage: joulecap %s", cmds[i]);
        ASSERT_CONTAINS(r.out, want);
        ASSERT_CONTAINS(r.out, "Example");
        free_result(&r);
        r = cli(cmds[i], "--help", NULL);
        EXPECT_CODE(r, 0);
        ASSERT_CONTAINS(r.out, want);
        free_result(&r);
    }
    /* cap and profile have their own help. */
    r = cli("help", "cap", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "cap");
    free_result(&r);
    r = cli("help", "profile", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "simulate");
    free_result(&r);
}

TEST(usage_errors) {
    use_env("h100-constant-300w", NULL, NULL);
    result_t r = cli(NULL);
    EXPECT_CODE(r, 2);
    ASSERT_CONTAINS(r.err, "--help");
    free_result(&r);

    r = cli("frobnicate", NULL);
    EXPECT_CODE(r, 2);
    ASSERT_CONTAINS(r.err, "frobnicate");
    ASSERT_CONTAINS(r.err, "--help");
    free_result(&r);

    r = cli("info", "--bogus", NULL);
    EXPECT_CODE(r, 2);
    ASSERT_CONTAINS(r.err, "--bogus");
    ASSERT_CONTAINS(r.err, "--help");
    free_result(&r);

    r = cli("run", NULL);
    EXPECT_CODE(r, 2);
    free_result(&r);

    r = cli("run", "--gpu", NULL);
    EXPECT_CODE(r, 2);
    free_result(&r);
}

TEST(bad_intervals) {
    use_env("h100-constant-300w", NULL, NULL);
    char marker[300], script[400];
    tmp_path(marker, sizeof marker, "interval-marker");
    snprintf(script, sizeof script, "touch '%s'", marker);
    const char *bad[] = {"0", "-1", "abc", "nan", "NaN", "inf", "1e9", "0.0001", "", "1x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        result_t r = cli("monitor", "-i", bad[i], "-o", "/dev/null", NULL);
        EXPECT_CODE(r, 2);
        char want[64];
        snprintf(want, sizeof want, "'%s'", bad[i]);
        ASSERT_CONTAINS(r.err, want);
        ASSERT_CONTAINS(r.err, "0.001");
        free_result(&r);
        r = cli("run", "-i", bad[i], "--", "sh", "-c", script, NULL);
        EXPECT_CODE(r, 2);
        ASSERT_CONTAINS(r.err, want);
        ASSERT_TRUE(!file_exists(marker));
        free_result(&r);
    }
    result_t r = cli("monitor", "-i", "0", "-o", "/dev/null", NULL);
    EXPECT_CODE(r, 2);
    free_result(&r);
}

TEST(info_fake_gpu) {
    use_env("h100-constant-300w", NULL, NULL);
    result_t r = cli("info", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "H100");
    ASSERT_CONTAINS(r.out, "GPU 0");
    ASSERT_CONTAINS(r.out, "GPU-8f3c2a1e");
    ASSERT_CONTAINS(r.out, "00000000:19:00.0");
    ASSERT_CONTAINS(r.out, "200-700 W");
    ASSERT_CONTAINS(r.out, "default 700 W");
    ASSERT_CONTAINS(r.out, "580.159.04");
    ASSERT_CONTAINS(r.out, "CPU");
    free_result(&r);

    r = cli("info", "--json", NULL);
    EXPECT_CODE(r, 0);
    assert_valid_json_text(r.out);
    ASSERT_CONTAINS(r.out, "\"min\":200");
    ASSERT_CONTAINS(r.out, "\"max\":700");
    ASSERT_CONTAINS(r.out, "\"default\":700");
    ASSERT_CONTAINS(r.out, "\"available\":true");
    ASSERT_CONTAINS(r.out, "NVIDIA H100");
    free_result(&r);
}

TEST(info_driver_not_loaded) {
    use_env("driver-not-loaded", NULL, NULL);
    result_t r = cli("info", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "NVML");
    ASSERT_CONTAINS(r.out, "NVML: absent");
    ASSERT_CONTAINS(r.out, "CPU");
    ASSERT_TRUE(strstr(r.out, "GPU 0") == NULL);
    free_result(&r);

    r = cli("info", "--json", NULL);
    EXPECT_CODE(r, 0);
    assert_valid_json_text(r.out);
    ASSERT_CONTAINS(r.out, "\"nvml\":{\"available\":false");
    free_result(&r);

    /* No NVML library at all: CPU only, with the reason. */
    use_env(NULL, NULL, NULL);
    r = cli("info", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "NVML");
    ASSERT_CONTAINS(r.out, "NVML: absent");
    free_result(&r);

    /* A run still measures the CPU. */
    use_env("driver-not-loaded", NULL, NULL);
    r = cli("run", "--json", "--", "true", NULL);
    EXPECT_CODE(r, 0);
    assert_valid_json_text(r.out);
    ASSERT_TRUE(strstr(r.out, "gpu0_energy_j") == NULL);
    free_result(&r);

    /* Naming a GPU when there is none is an error that says why. */
    r = cli("run", "--gpu", "0", "--", "true", NULL);
    EXPECT_CODE(r, 2);
    ASSERT_CONTAINS(r.err, "NVML");
    free_result(&r);
}

TEST(info_cpu_sources) {
    /* RAPL present: the source says so. */
    use_env("h100-constant-300w", "intel-2socket", "xeon-8480");
    result_t r = cli("info", "--json", NULL);
    EXPECT_CODE(r, 0);
    assert_valid_json_text(r.out);
    ASSERT_CONTAINS(r.out, "\"energy_source\":\"rapl\"");
    free_result(&r);

    /* No RAPL: the CPU energy is an estimate, and both info and run say so clearly. */
    use_env("h100-constant-300w", "norapl", "qemu");
    r = cli("info", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "estimate");
    free_result(&r);
    r = cli("run", "--json", "--", "true", NULL);
    EXPECT_CODE(r, 0);
    assert_valid_json_text(r.out);
    ASSERT_CONTAINS(r.out, "\"cpu_energy_source\":\"estimate\"");
    ASSERT_CONTAINS(r.err, "(estimate: ");
    free_result(&r);
}

TEST(info_no_energy_counter) {
    use_env("no-energy-counter", NULL, NULL);
    result_t r = cli("info", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "integrated");
    free_result(&r);
    r = cli("run", "--json", "--", "sleep", "0.3", NULL);
    EXPECT_CODE(r, 0);
    assert_valid_json_text(r.out);
    ASSERT_CONTAINS(r.out, "\"gpu0_energy_source\":\"integrated-power\"");
    ASSERT_TRUE(json_number(r.out, "gpu0_energy_j") > 0);
    free_result(&r);
}

TEST(info_two_gpus) {
    use_env("two-gpus", NULL, NULL);
    result_t r = cli("info", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "GPU 0");
    ASSERT_CONTAINS(r.out, "GPU 1");
    ASSERT_CONTAINS(r.out, "GPU-aaaaaaaa");
    free_result(&r);

    r = cli("info", "--gpu", "GPU-aaaa", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "GPU-aaaaaaaa");
    ASSERT_TRUE(strstr(r.out, "GPU-11111111") == NULL);
    free_result(&r);

    /* CUDA_VISIBLE_DEVICES renumbers: GPU 0 is then the second physical GPU. */
    setenv("CUDA_VISIBLE_DEVICES", "1", 1);
    r = cli("info", "--json", NULL);
    unsetenv("CUDA_VISIBLE_DEVICES");
    EXPECT_CODE(r, 0);
    assert_valid_json_text(r.out);
    ASSERT_CONTAINS(r.out, "\"index\":0,\"nvml_index\":1");
    ASSERT_TRUE(strstr(r.out, "GPU-11111111") == NULL);
    free_result(&r);

    r = cli("info", "--gpu", "none", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_TRUE(strstr(r.out, "GPU 0") == NULL);
    free_result(&r);
}

TEST(run_exit_status) {
    use_env("h100-constant-300w", NULL, NULL);
    result_t r = cli("run", "--", "sh", "-c", "exit 3", NULL);
    EXPECT_CODE(r, 3);
    ASSERT_CONTAINS(r.err, "elapsed");
    ASSERT_CONTAINS(r.err, "GPU 0");
    free_result(&r);

    r = cli("run", "true", NULL); /* no '--' needed */
    EXPECT_CODE(r, 0);
    free_result(&r);

    /* Killed by a signal: 128 + signal, as a shell reports it. */
    r = cli("run", "--", "sh", "-c", "kill -TERM $$", NULL);
    EXPECT_CODE(r, 128 + SIGTERM);
    ASSERT_CONTAINS(r.err, "signal");
    free_result(&r);

    /* The command's stdout is its own. */
    r = cli("run", "-q", "--", "echo", "hello from the command", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_STR_EQ(r.out, "hello from the command\n");
    ASSERT_TRUE(strstr(r.err, "elapsed") == NULL);
    free_result(&r);
}

TEST(run_exec_failures) {
    use_env("h100-constant-300w", NULL, NULL);
    result_t r = cli("run", "--", "joulecap-no-such-command-xyz", NULL);
    EXPECT_CODE(r, 127);
    ASSERT_CONTAINS(r.err, "joulecap-no-such-command-xyz");
    free_result(&r);

    r = cli("run", "--", "/nonexistent/dir/cmd", NULL);
    EXPECT_CODE(r, 127);
    free_result(&r);

    char path[300];
    tmp_path(path, sizeof path, "not-executable");
    FILE *f = fopen(path, "w");
    ASSERT_TRUE(f != NULL);
    fputs("#!/bin/sh\nexit 0\n", f);
    fclose(f);
    chmod(path, 0644);
    r = cli("run", "--", path, NULL); /* no x bit at all: not even root may execute it */
    EXPECT_CODE(r, 126);
    free_result(&r);

    r = cli("run", "--", tmpdir, NULL); /* a directory */
    EXPECT_CODE(r, 126);
    free_result(&r);

    /* A script without #! runs with /bin/sh, as execvp does. */
    tmp_path(path, sizeof path, "plain-script");
    f = fopen(path, "w");
    ASSERT_TRUE(f != NULL);
    fputs("exit 7\n", f);
    fclose(f);
    chmod(path, 0755);
    r = cli("run", "--", path, NULL);
    EXPECT_CODE(r, 7);
    free_result(&r);
}

TEST(run_bad_gpu) {
    use_env("h100-constant-300w", NULL, NULL);
    char marker[300], script[400];
    tmp_path(marker, sizeof marker, "bad-gpu-marker");
    snprintf(script, sizeof script, "touch '%s'", marker);
    result_t r = cli("run", "--gpu", "7", "--", "sh", "-c", script, NULL);
    EXPECT_CODE(r, 2);
    ASSERT_CONTAINS(r.err, "7");
    ASSERT_CONTAINS(r.err, "NVIDIA H100"); /* the GPUs that exist */
    ASSERT_CONTAINS(r.err, "GPU-8f3c2a1e");
    ASSERT_TRUE(!file_exists(marker));
    free_result(&r);

    r = cli("run", "--gpu", "GPU-deadbeef", "--", "sh", "-c", script, NULL);
    EXPECT_CODE(r, 2);
    ASSERT_CONTAINS(r.err, "GPU-8f3c2a1e");
    ASSERT_TRUE(!file_exists(marker));
    free_result(&r);

    r = cli("monitor", "--gpu", "7", "-i", "0.1", "-o", "/dev/null", "--", "sh", "-c", script, NULL);
    EXPECT_CODE(r, 2);
    ASSERT_CONTAINS(r.err, "NVIDIA H100");
    ASSERT_TRUE(!file_exists(marker));
    free_result(&r);

    r = cli("info", "--gpu", "3", NULL);
    EXPECT_CODE(r, 2);
    ASSERT_CONTAINS(r.err, "NVIDIA H100");
    free_result(&r);
}

TEST(run_unwritable_output) {
    use_env("h100-constant-300w", NULL, NULL);
    char marker[300], script[400];
    tmp_path(marker, sizeof marker, "unwritable-marker");
    snprintf(script, sizeof script, "touch '%s'", marker);
    result_t r = cli("run", "-o", "/nonexistent/dir/x.csv", "--", "sh", "-c", script, NULL);
    ASSERT_TRUE(r.code != 0);
    EXPECT_CODE(r, 3);
    ASSERT_CONTAINS(r.err, "/nonexistent/dir/x.csv");
    ASSERT_TRUE(!file_exists(marker));
    free_result(&r);

    r = cli("monitor", "-i", "0.1", "-o", "/nonexistent/dir/x.csv", "--", "sh", "-c", script, NULL);
    ASSERT_TRUE(r.code != 0);
    EXPECT_CODE(r, 3);
    ASSERT_CONTAINS(r.err, "/nonexistent/dir/x.csv");
    ASSERT_TRUE(!file_exists(marker));
    free_result(&r);
}

TEST(run_json_energy) {
    use_env("h100-constant-300w", NULL, NULL);
    result_t r = cli("run", "--json", "--", "sleep", "1", NULL);
    EXPECT_CODE(r, 0);
    assert_valid_json_text(r.out);
    double e = json_number(r.out, "gpu0_energy_j");
    double el = json_number(r.out, "elapsed_s");
    ASSERT_NEAR(el, 1.0, 0.3);
    ASSERT_NEAR(e, 300.0, 45.0);
    ASSERT_CONTAINS(r.out, "\"gpu0_energy_source\":\"counter\"");
    ASSERT_CONTAINS(r.out, "\"exit_status\":0");
    ASSERT_CONTAINS(r.out, "\"command\":[\"sleep\",\"1\"]");
    ASSERT_CONTAINS(r.err, "GPU 0");
    ASSERT_CONTAINS(r.err, " J ");
    ASSERT_CONTAINS(r.err, " W ");
    free_result(&r);
}

/* Fewer counter reads (one per second) still measure a whole command right; a bad value is a usage error. */
TEST(run_counter_interval) {
    use_env("h100-constant-300w", NULL, NULL);
    result_t r = cli("run", "--json", "-q", "--counter-interval", "1", "--", "sleep", "2", NULL);
    EXPECT_CODE(r, 0);
    /* Within one 100 ms counter step (30 J) plus slack: with reads a second apart, a loaded machine can place
     * an edge's knot most of a step off (seen: 23.7 J under ASan with both cores busy). */
    ASSERT_NEAR(json_number(r.out, "gpu0_energy_j"), 300.0 * json_number(r.out, "elapsed_s"), 33.0);
    free_result(&r);
    r = cli("run", "--counter-interval", "-1", "--", "true", NULL);
    EXPECT_CODE(r, 2);
    ASSERT_CONTAINS(r.err, "--counter-interval");
    free_result(&r);
}

TEST(run_json_escaping) {
    use_env("h100-constant-300w", NULL, NULL);
    result_t r = cli("run", "--json", "-q", "--", "sh", "-c", "exit 0", "x",
                     "quote \" backslash \\ tab \t newline \n bell \a bad utf8 \xff\xfe end", NULL);
    EXPECT_CODE(r, 0);
    assert_valid_json_text(r.out);
    free_result(&r);
}

/* profile writes its JSON with the same escaping as run: a sweep file name that is not UTF-8 comes out as
 * U+FFFD, so the output stays valid JSON. */
TEST(profile_json_escaping) {
    use_env("h100-constant-300w", NULL, NULL);
    char sweep[600], link[300];
    data_path(sweep, sizeof sweep, "sweeps/knee.csv");
    tmp_path(link, sizeof link, "sweep \"\\ \xff\xfe\xc3 end.csv");
    unlink(link);
    ASSERT_EQ(symlink(sweep, link), 0);
    result_t r = cli("profile", "--simulate", link, "--json", NULL);
    EXPECT_CODE(r, 0);
    assert_valid_json_text(r.out);
    ASSERT_CONTAINS(r.out, "\"sweep\":\"");
    ASSERT_CONTAINS(r.out, "sweep \\\"\\\\ \\ufffd\\ufffd\\ufffd end.csv\"");
    free_result(&r);
    /* Its errors read like every other command's. */
    r = cli("profile", "--bogus", NULL);
    EXPECT_CODE(r, 2);
    ASSERT_CONTAINS(r.err, "joulecap: unknown option '--bogus'");
    ASSERT_CONTAINS(r.err, "joulecap profile --help");
    free_result(&r);
}

TEST(run_output_files) {
    use_env("two-gpus", NULL, NULL);
    char csv[300], json[300];
    tmp_path(csv, sizeof csv, "run.csv");
    tmp_path(json, sizeof json, "run.JSON");
    result_t r = cli("run", "-o", csv, "--", "sleep", "0.3", NULL);
    EXPECT_CODE(r, 0);
    free_result(&r);
    char *text = read_file(csv);
    ASSERT_TRUE(text != NULL);
    ASSERT_EQ(count_lines(text), 2);
    ASSERT_CONTAINS(text, "elapsed_s,cpu_energy_kwh,gpu0_energy_kwh,gpu1_energy_kwh,cpu_energy_j,gpu0_energy_j,"
                          "gpu1_energy_j,cpu_energy_source,gpu0_energy_source,gpu1_energy_source\n");
    ASSERT_CONTAINS(text, ",counter,counter\n");
    /* gpu0 draws 300 W, gpu1 150 W: the kWh columns are the J columns / 3.6e6 */
    double v[7];
    const char *row = strchr(text, '\n') + 1;
    ASSERT_EQ(sscanf(row, "%lf,%lf,%lf,%lf,%lf,%lf,%lf", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6]), 7);
    ASSERT_NEAR(v[0], 0.3, 0.15);
    ASSERT_NEAR(v[5] / v[6], 2.0, 0.3);
    ASSERT_NEAR(v[2] * 3.6e6, v[5], 1e-3 * v[5] + 1e-6);
    free(text);

    r = cli("run", "-q", "--gpu", "1", "-o", json, "--", "sleep", "0.2", NULL);
    EXPECT_CODE(r, 0);
    free_result(&r);
    text = read_file(json);
    ASSERT_TRUE(text != NULL);
    assert_valid_json_text(text);
    ASSERT_CONTAINS(text, "\"gpu1_energy_j\"");
    ASSERT_TRUE(strstr(text, "\"gpu0_energy_j\"") == NULL);
    free(text);

    /* -o - writes the summary to stdout */
    r = cli("run", "-q", "-o", "-", "--", "true", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_TRUE(strncmp(r.out, "elapsed_s,", 10) == 0);
    free_result(&r);
}

TEST(run_carbon_from_the_environment) {
    use_env("two-gpus", NULL, NULL);
    char csv[300];
    tmp_path(csv, sizeof csv, "carbon.csv");
    setenv("JOULECAP_GRID_GCO2_PER_KWH", "400", 1);
    setenv("JOULECAP_PRICE_PER_KWH", "0.25", 1);
    setenv("JOULECAP_CURRENCY", "EUR", 1);
    result_t r = cli("run", "-o", csv, "--", "sleep", "0.2", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.err, "gCO2e (at 400 g/kWh)");
    ASSERT_CONTAINS(r.err, " EUR (at 0.25/kWh)");
    free_result(&r);
    char *text = read_file(csv);
    ASSERT_TRUE(text != NULL);
    ASSERT_CONTAINS(text, "_energy_source,total_energy_kwh,grid_gco2_per_kwh,gco2e,price_per_kwh,cost,currency\n");
    ASSERT_CONTAINS(text, ",EUR\n");
    /* The columns are the devices' kWh summed, times the intensity and the price. */
    double v[4];
    const char *row = strchr(text, '\n') + 1;
    ASSERT_EQ(sscanf(row, "%lf,%lf,%lf,%lf", &v[0], &v[1], &v[2], &v[3]), 4);
    const char *c = row;
    for (int commas = 0; commas < 10; c++) commas += *c == ',';
    double kwh, gco2_per_kwh, gco2e, price, cost;
    ASSERT_EQ(sscanf(c, "%lf,%lf,%lf,%lf,%lf", &kwh, &gco2_per_kwh, &gco2e, &price, &cost), 5);
    ASSERT_NEAR(kwh, v[1] + v[2] + v[3], 1e-8 * kwh);
    ASSERT_NEAR(gco2_per_kwh, 400, 0);
    ASSERT_NEAR(gco2e, kwh * 400, 1e-8 * gco2e);
    ASSERT_NEAR(price, 0.25, 0);
    ASSERT_NEAR(cost, kwh * 0.25, 1e-8 * cost);
    free(text);
    /* Hostile values: refused before the command starts, saying what to do. */
    const char *bad[] = {"nan", "-1", "lots", "1e400", "5000"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("JOULECAP_GRID_GCO2_PER_KWH", bad[i], 1);
        r = cli("run", "--", "touch", csv, NULL);
        EXPECT_CODE(r, 2);
        ASSERT_CONTAINS(r.err, "JOULECAP_GRID_GCO2_PER_KWH=");
        ASSERT_CONTAINS(r.err, "did not start");
        free_result(&r);
    }
    setenv("JOULECAP_GRID_GCO2_PER_KWH", "", 1); /* empty: not set, no carbon columns */
    unsetenv("JOULECAP_PRICE_PER_KWH");
    r = cli("run", "-o", csv, "--", "true", NULL);
    EXPECT_CODE(r, 0);
    free_result(&r);
    text = read_file(csv);
    ASSERT_TRUE(text != NULL && strstr(text, "gco2e") == NULL && strstr(text, "cost") == NULL);
    free(text);
    unsetenv("JOULECAP_GRID_GCO2_PER_KWH");
    unsetenv("JOULECAP_CURRENCY");
}

TEST(run_forwards_signals) {
    use_env("h100-constant-300w", NULL, NULL);
    const char *args[] = {"run", "--json", "--", "sleep", "30", NULL};
    double t0 = now_s();
    proc_t p = start_cli(args);
    usleep(500 * 1000);
    kill(p.pid, SIGTERM);
    result_t r = finish_cli(p, t0);
    EXPECT_CODE(r, 128 + SIGTERM); /* sleep died of the forwarded SIGTERM; joulecap reports it */
    ASSERT_TRUE(r.seconds < 10);
    assert_valid_json_text(r.out);
    ASSERT_CONTAINS(r.out, "\"signal\":15");
    free_result(&r);

    /* A command that handles the signal decides its own exit status. */
    const char *args2[] = {"run", "--", "sh", "-c", "trap 'exit 5' INT; sleep 30 & wait", NULL};
    t0 = now_s();
    p = start_cli(args2);
    usleep(500 * 1000);
    kill(p.pid, SIGINT);
    r = finish_cli(p, t0);
    EXPECT_CODE(r, 5);
    ASSERT_TRUE(r.seconds < 10);
    free_result(&r);
}

TEST(monitor_rows) {
    use_env("h100-constant-300w", NULL, NULL);
    char csv[300];
    tmp_path(csv, sizeof csv, "monitor.csv");
    result_t r = cli("monitor", "-i", "0.1", "-o", csv, "--", "sleep", "1", NULL);
    EXPECT_CODE(r, 0);
    free_result(&r);
    char *text = read_file(csv);
    ASSERT_TRUE(text != NULL);
    ASSERT_TRUE(strncmp(text, "elapsed_s,cpu_energy_kwh,cpu_util_pct,cpu_temp_c,gpu0_energy_kwh,gpu0_util_pct,"
                              "gpu0_temp_c,gpu0_power_w,cpu_energy_source,gpu0_energy_source\n",
                        140) == 0);
    int rows = count_lines(text) - 1;
    if (rows < 8) JC_FAILF("only %d rows:\n%s", rows, text);
    ASSERT_TRUE(text[strlen(text) - 1] == '\n');
    /* The last row's GPU energy is ~300 W x ~1 s. */
    const char *last = text + strlen(text) - 1;
    while (last > text && last[-1] != '\n') last--;
    double el = csv_field(last, 0), gpu_kwh = csv_field(last, 4);
    ASSERT_NEAR(gpu_kwh * 3.6e6 / el, 300.0, 45.0);
    free(text);

    /* The command's exit status comes back. */
    r = cli("monitor", "-i", "0.1", "-o", csv, "--", "sh", "-c", "exit 4", NULL);
    EXPECT_CODE(r, 4);
    free_result(&r);
    /* The command does not inherit joulecap's own descriptors (the CSV file). */
    r = cli("monitor", "-q", "-i", "0.1", "-o", csv, "--", "sh", "-c", "ls -l /proc/$$/fd/", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_TRUE(strstr(r.out, "monitor.csv") == NULL);
    free_result(&r);
    r = cli("monitor", "-i", "0.1", "-o", csv, "--", "joulecap-no-such-command-xyz", NULL);
    EXPECT_CODE(r, 127);
    free_result(&r);
}

/* Without -o the rows go to stdout, like nvidia-smi dmon; the summary still goes to stderr. */
TEST(monitor_stdout) {
    use_env("h100-constant-300w", NULL, NULL);
    result_t r = cli("monitor", "-i", "0.1", "--", "sleep", "1", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_TRUE(strncmp(r.out, "elapsed_s,cpu_energy_kwh,", 25) == 0);
    int rows = count_lines(r.out) - 1;
    if (rows < 8) JC_FAILF("only %d rows on stdout:\n%s", rows, r.out);
    ASSERT_TRUE(strstr(r.out, "Energy") == NULL);
    ASSERT_CONTAINS(r.err, "GPU 0");
    ASSERT_TRUE(strstr(r.err, "Time series:") == NULL);
    free_result(&r);
    r = cli("help", "monitor", NULL);
    ASSERT_CONTAINS(r.out, "[-o FILE]");
    ASSERT_CONTAINS(r.out, "nvidia-smi dmon");
    free_result(&r);
}

TEST(monitor_sigint) {
    use_env("h100-constant-300w", NULL, NULL);
    char csv[300];
    tmp_path(csv, sizeof csv, "monitor-int.csv");
    const char *args[] = {"monitor", "-i", "0.05", "-o", csv, "--json", NULL};
    double t0 = now_s();
    proc_t p = start_cli(args);
    usleep(800 * 1000);
    kill(p.pid, SIGINT);
    result_t r = finish_cli(p, t0);
    EXPECT_CODE(r, 0);
    ASSERT_TRUE(r.seconds < 10);
    assert_valid_json_text(r.out);
    ASSERT_CONTAINS(r.out, "\"stopped_by_signal\":2");
    double e = json_number(r.out, "gpu0_energy_j"), el = json_number(r.out, "elapsed_s");
    ASSERT_NEAR(e / el, 300.0, 45.0);
    free_result(&r);
    char *text = read_file(csv);
    ASSERT_TRUE(text != NULL);
    size_t n = strlen(text);
    ASSERT_TRUE(n > 0 && text[n - 1] == '\n');
    ASSERT_TRUE(count_lines(text) >= 6);
    ASSERT_TRUE(strncmp(text, "elapsed_s,", 10) == 0);
    free(text);

    /* SIGTERM too. */
    const char *args2[] = {"monitor", "-i", "0.1", "-o", csv, NULL};
    t0 = now_s();
    p = start_cli(args2);
    usleep(400 * 1000);
    kill(p.pid, SIGTERM);
    r = finish_cli(p, t0);
    EXPECT_CODE(r, 0);
    free_result(&r);
    text = read_file(csv);
    ASSERT_TRUE(text != NULL);
    n = strlen(text);
    ASSERT_TRUE(n > 0 && text[n - 1] == '\n');
    free(text);

    /* With a command: the signal goes to the command, the file is completed, exit 0. */
    const char *args3[] = {"monitor", "-i", "0.1", "-o", csv, "--", "sleep", "30", NULL};
    t0 = now_s();
    p = start_cli(args3);
    usleep(400 * 1000);
    kill(p.pid, SIGINT);
    r = finish_cli(p, t0);
    EXPECT_CODE(r, 0);
    ASSERT_TRUE(r.seconds < 10);
    free_result(&r);
    text = read_file(csv);
    ASSERT_TRUE(text != NULL);
    n = strlen(text);
    ASSERT_TRUE(n > 0 && text[n - 1] == '\n');
    free(text);
}

/* `--fake NAME` (JOULECAP_FAKE): the bundled fake NVML and scenario, found beside the built tool, with private
 * state under $TMPDIR (XDG_RUNTIME_DIR unset), whatever JOULECAP_NVML_LIBRARY says. */
static char saved_tmpdir[300];

static void use_fake_switch(char *state_root, size_t len) {
    use_env(NULL, NULL, NULL); /* JOULECAP_NVML_LIBRARY points nowhere: --fake must not need it */
    const char *t = getenv("TMPDIR");
    snprintf(saved_tmpdir, sizeof saved_tmpdir, "%s", t ? t : "");
    unsetenv("JOULECAP_FAKE");
    unsetenv("JOULECAP_STATE_DIR");
    unsetenv("JOULECAP_DAEMON_SOCKET");
    unsetenv("XDG_RUNTIME_DIR");
    char tmp[300];
    tmp_path(tmp, sizeof tmp, "faketmp");
    mkdir(tmp, 0700);
    setenv("TMPDIR", tmp, 1);
    snprintf(state_root, len, "%s/joulecap-fake-%u", tmp, (unsigned)geteuid());
}

static void end_fake_switch(void) {
    if (saved_tmpdir[0]) setenv("TMPDIR", saved_tmpdir, 1);
    else unsetenv("TMPDIR");
}

/* Entries of a directory (-1 when it does not exist). */
static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

TEST(fake_switch_info_and_run) {
    char root[400];
    use_fake_switch(root, sizeof root);
    result_t r = cli("--fake", "h100", "info", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "GPU 0: NVIDIA H100 80GB HBM3");
    ASSERT_CONTAINS(r.out, "fake GPUs: JOULECAP_FAKE=h100");
    free_result(&r);
    r = cli("--fake=h100", "info", "--json", NULL);
    EXPECT_CODE(r, 0);
    assert_valid_json_text(r.out);
    ASSERT_CONTAINS(r.out, "\"fake\":\"h100\"");
    free_result(&r);
    /* h100 is h100-constant-300w.scn: 300 W */
    r = cli("--fake", "h100", "run", "--json", "-q", "--", "sleep", "1", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_NEAR(json_number(r.out, "gpu0_energy_j") / json_number(r.out, "elapsed_s"), 300.0, 45.0);
    free_result(&r);
    /* A scenario by its path. */
    char scn[600];
    data_path(scn, sizeof scn, "scenarios/two-gpus.scn");
    r = cli("--fake", scn, "info", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "GPU 1:");
    free_result(&r);
    /* Its state is private: the folder is this user's alone. */
    struct stat sb;
    ASSERT_EQ(lstat(root, &sb), 0);
    ASSERT_TRUE(S_ISDIR(sb.st_mode) && (sb.st_mode & 077) == 0 && sb.st_uid == geteuid());
    char sub[500];
    snprintf(sub, sizeof sub, "%s/h100-constant-300w/nvml.state", root);
    ASSERT_TRUE(file_exists(sub));
    /* An unknown name says which exist; --fake without a name is a usage error. */
    r = cli("--fake", "no-such-gpu", "info", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "JOULECAP_FAKE=no-such-gpu");
    ASSERT_CONTAINS(r.out, "h100-sweep");
    free_result(&r);
    r = cli("--fake", NULL);
    EXPECT_CODE(r, 2);
    ASSERT_CONTAINS(r.err, "--fake h100");
    free_result(&r);
    end_fake_switch();
}

/* As root too, a fake GPU's cap journals stay in its private folder: nothing lands in /var/lib/joulecap, and
 * a cap set by one process is read by the next. */
TEST(fake_switch_caps_stay_private) {
    char root[400];
    use_fake_switch(root, sizeof root);
    int var_lib_before = count_entries("/var/lib/joulecap");
    result_t r = cli("--fake", "h100-sweep", "cap", "set", "300", NULL);
    if (r.code != 0) show(&r);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "via direct NVML");
    free_result(&r);
    r = cli("--fake", "h100-sweep", "cap", "get", "--json", NULL);
    EXPECT_CODE(r, 0);
    assert_valid_json_text(r.out);
    ASSERT_CONTAINS(r.out, "\"limit_w\":300");
    char want[600];
    snprintf(want, sizeof want, "\"state_dir\":\"%s/h100-sweep/caps\"", root);
    ASSERT_CONTAINS(r.out, want);
    free_result(&r);
    char caps[500];
    snprintf(caps, sizeof caps, "%s/h100-sweep/caps", root);
    ASSERT_TRUE(count_entries(caps) > 0);
    struct stat sb;
    ASSERT_EQ(lstat(caps, &sb), 0);
    ASSERT_TRUE((sb.st_mode & 077) == 0);
    ASSERT_EQ(count_entries("/var/lib/joulecap"), var_lib_before);
    /* Other scenarios have their own fake GPU: h100 was not capped. */
    r = cli("--fake", "h100", "cap", "get", "--json", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "\"limit_w\":700");
    free_result(&r);
    r = cli("--fake", "h100-sweep", "cap", "reset", NULL);
    EXPECT_CODE(r, 0);
    free_result(&r);
    end_fake_switch();
}

/* --help names every environment variable; `help` lists the installed reference docs and prints one. */
TEST(help_environment_and_topics) {
    use_env("h100-constant-300w", NULL, NULL);
    result_t r = cli("--help", NULL);
    EXPECT_CODE(r, 0);
    const char *vars[] = {"JOULECAP_FAKE ",        "JOULECAP_NVML_LIBRARY", "JOULECAP_FAKE_NVML_SCENARIO",
                          "JOULECAP_FAKE_NVML_STATE", "JOULECAP_SYSFS_ROOT", "JOULECAP_PROC_ROOT",
                          "JOULECAP_STATE_DIR",    "JOULECAP_DAEMON_SOCKET", "JOULECAP_CLI",
                          "CUDA_VISIBLE_DEVICES",  "XDG_RUNTIME_DIR",       "--fake NAME",
                          "joulecap help"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) ASSERT_CONTAINS(r.out, vars[i]);
    free_result(&r);
    r = cli("help", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "fake-nvml");
    ASSERT_CONTAINS(r.out, "The `joulecap` command-line tool");
    free_result(&r);
    r = cli("help", "fake-nvml", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "# The fake NVML library");
    ASSERT_CONTAINS(r.out, "JOULECAP_FAKE");
    free_result(&r);
    r = cli("help", "cli.md", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "joulecap monitor");
    free_result(&r);
    r = cli("help", "no-such-topic", NULL);
    EXPECT_CODE(r, 2);
    ASSERT_CONTAINS(r.err, "no-such-topic");
    ASSERT_CONTAINS(r.err, "python");
    free_result(&r);
}

static void cleanup(void) {
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

static void setup(void) {
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/jc-test-cli-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) JC_FAILF("mkdtemp: %s", strerror(errno));
    atexit(cleanup);
    env_or_die("JC_CLI");
    env_or_die("JC_FAKE_NVML");
    env_or_die("JC_TEST_DATA");
}

JC_TEST_MAIN(TEST_ENTRY(help_and_version), TEST_ENTRY(usage_errors),
             TEST_ENTRY(bad_intervals), TEST_ENTRY(info_fake_gpu), TEST_ENTRY(info_driver_not_loaded),
             TEST_ENTRY(info_cpu_sources), TEST_ENTRY(info_no_energy_counter), TEST_ENTRY(info_two_gpus), TEST_ENTRY(run_exit_status),
             TEST_ENTRY(run_exec_failures), TEST_ENTRY(run_bad_gpu), TEST_ENTRY(run_unwritable_output),
             TEST_ENTRY(run_json_energy), TEST_ENTRY(run_counter_interval), TEST_ENTRY(run_json_escaping), TEST_ENTRY(profile_json_escaping),
             TEST_ENTRY(run_output_files),
             TEST_ENTRY(run_carbon_from_the_environment),
             TEST_ENTRY(run_forwards_signals), TEST_ENTRY(monitor_rows), TEST_ENTRY(monitor_stdout), TEST_ENTRY(monitor_sigint),
             TEST_ENTRY(fake_switch_info_and_run), TEST_ENTRY(fake_switch_caps_stay_private),
             TEST_ENTRY(help_environment_and_topics))
