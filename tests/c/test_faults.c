/* The fault matrix (RELIABILITY.md): every fault the fake NVML and the fake trees inject, against every mode
 * of the C library and the CLI, each with its expected outcome.  Per fault, the modes run at once: the CLI
 * modes as child processes (info, run, monitor), the library's window and CSV sink in this process.  A line
 * "MATRIX <fault> <mode> <ok|FAIL> rows=<n> lost=<n>" per cell feeds the table in RELIABILITY.md.
 *
 * Python modes (snippet, async, layer-wise) run the same scenarios in tests/python/test_faults.py. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "jc_cli_run.h"
#include "jc_test.h"
#include "joulecap.h"

#define RUN_S 2.0       /* every mode measures about this long */
#define MAXD 4

static void setup(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/jc-faults-XXXXXX");
    ASSERT_TRUE(mkdtemp(tmpdir) != NULL);
}

static void use_env(const char *scenario, const char *sysfs, const char *proc) {
    const char *data = env_or_die("JC_TEST_DATA");
    char path[1024];
    snprintf(path, sizeof path, "%s/scenarios/%s.scn", data, scenario);
    setenv("JOULECAP_NVML_LIBRARY", env_or_die("JC_FAKE_NVML"), 1);
    setenv("JOULECAP_FAKE_NVML_SCENARIO", path, 1);
    unsetenv("JOULECAP_FAKE_NVML_STATE");
    unsetenv("CUDA_VISIBLE_DEVICES");
    snprintf(path, sizeof path, "%s/sysfs/%s", data, sysfs ? sysfs : "empty");
    setenv("JOULECAP_SYSFS_ROOT", path, 1);
    snprintf(path, sizeof path, "%s/proc/%s", data, proc ? proc : "qemu");
    setenv("JOULECAP_PROC_ROOT", path, 1);
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* What one mode saw, per device (0 = CPU, 1.. = GPUs in CUDA order). */
typedef struct obs {
    const char *mode;
    int has_energy;          /* info has states only */
    int ndev;
    double energy_j[MAXD], coverage[MAXD], elapsed_s;
    char state[MAXD][16], source[MAXD][24];
    double wall_s;           /* how long the mode took from its start */
    int rows, rows_bad;      /* CSV modes: data rows, rows that are not whole lines */
    int gpu_empty_after_loss;/* CSV: the lost GPU's power cells are empty in the last row */
} obs;

/* ---- small readers of the outputs ---------------------------------------------------------------------- */

static double json_num(const char *text, const char *key) {
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(text, pat);
    if (!p) return NAN;
    p += strlen(pat);
    if (strncmp(p, "null", 4) == 0) return NAN;
    return strtod(p, NULL);
}

static void json_str(const char *text, const char *key, char *out, size_t len) {
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    out[0] = '\0';
    const char *p = strstr(text, pat);
    if (!p) return;
    p += strlen(pat);
    size_t n = 0;
    while (p[n] && p[n] != '"' && n + 1 < len) n++;
    memcpy(out, p, n);
    out[n] = '\0';
}

/* The n-th "state":"..." of the devices array of `info --json`. */
static void info_state(const char *text, int n, char *out, size_t len) {
    const char *p = text;
    out[0] = '\0';
    for (int i = 0; i <= n; i++) {
        p = strstr(p, "\"state\":\"");
        if (!p) return;
        p += 9;
    }
    size_t k = 0;
    while (p[k] && p[k] != '"' && k + 1 < len) k++;
    memcpy(out, p, k);
    out[k] = '\0';
}

static void summary_obs(const char *json, obs *o) {
    o->has_energy = 1;
    o->elapsed_s = json_num(json, "elapsed_s");
    char key[64];
    for (int i = 0; i < o->ndev; i++) {
        char pre[16];
        if (i == 0) snprintf(pre, sizeof pre, "cpu");
        else snprintf(pre, sizeof pre, "gpu%d", i - 1);
        snprintf(key, sizeof key, "%s_energy_j", pre);
        o->energy_j[i] = json_num(json, key);
        snprintf(key, sizeof key, "%s_coverage", pre);
        o->coverage[i] = json_num(json, key);
        snprintf(key, sizeof key, "%s_state", pre);
        json_str(json, key, o->state[i], sizeof o->state[i]);
        snprintf(key, sizeof key, "%s_energy_source", pre);
        json_str(json, key, o->source[i], sizeof o->source[i]);
    }
}

/* Rows of a sink CSV: counts whole rows and checks each has the header's number of fields. */
static void csv_obs(const char *path, int ngpu, obs *o) {
    char *text = read_file(path);
    ASSERT_TRUE(text != NULL);
    int fields = 0;
    for (const char *p = text; *p && *p != '\n'; p++) fields += *p == ',';
    const char *line = strchr(text, '\n');
    const char *last = NULL;
    while (line && line[1]) {
        line++;
        const char *end = strchr(line, '\n');
        if (!end) {
            o->rows_bad++;
            break;
        }
        int f = 0;
        for (const char *p = line; p < end; p++) f += *p == ',';
        if (f != fields) o->rows_bad++;
        o->rows++;
        last = line;
        line = end;
    }
    if (!last) return;
    /* The last row: energies (kWh since open; empty = not whole), the last GPU's power cell, the states. */
    char *fld[64];
    int nf = 0;
    char *copy = strndup(last, (size_t)(strchr(last, '\n') - last));
    for (char *p = copy; p && nf < 64; nf++) {
        fld[nf] = p;
        p = strchr(p, ',');
        if (p) *p++ = '\0';
    }
    o->has_energy = 1;
    o->elapsed_s = strtod(fld[0], NULL);
    for (int i = 0; i < o->ndev; i++) {
        int col = i == 0 ? 1 : 4 + 4 * (i - 1);
        o->energy_j[i] = fld[col][0] ? strtod(fld[col], NULL) * 3.6e6 : NAN;
        o->coverage[i] = fld[col][0] ? 1.0 : 0.0;
        snprintf(o->source[i], sizeof o->source[i], "%s", fld[4 + 4 * ngpu + i]);
        snprintf(o->state[i], sizeof o->state[i], "%s", fld[4 + 4 * ngpu + o->ndev + i]);
    }
    if (ngpu > 0) o->gpu_empty_after_loss = fld[4 + 4 * ngpu - 1][0] == '\0';
    free(copy);
    free(text);
}

/* ---- the faults ---------------------------------------------------------------------------------------- */

typedef struct fault {
    const char *name;     /* the scenario file (without .scn) */
    const char *what;     /* RELIABILITY.md's words */
    const char *sysfs, *proc;
    int ngpu;
    void (*check)(const struct fault *f, const obs *o);
} fault;

static int streq(const char *a, const char *b) { return strcmp(a, b) == 0; }

/* A device measured whole at 300 W (the fake GPUs of these scenarios draw a constant 300 W). */
static void expect_whole_300w(const obs *o, int dev, double tol) {
    if (!o->has_energy) return;
    if (!(o->coverage[dev] >= 0.999))
        JC_FAILF("%s: device %d should be whole, coverage %.3f", o->mode, dev, o->coverage[dev]);
    ASSERT_NEAR(o->energy_j[dev], 300.0 * o->elapsed_s, tol * 300.0 * o->elapsed_s);
}

/* A device that stopped inside the run: its value says how much it covers (a CSV cell is empty instead). */
static void expect_partial_300w(const obs *o, int dev) {
    if (!o->has_energy) return;
    if (o->rows) {
        ASSERT_TRUE(isnan(o->energy_j[dev]));
        return;
    }
    if (!(o->coverage[dev] > 0.2 && o->coverage[dev] < 0.9))
        JC_FAILF("%s: device %d should be partial, coverage %.3f", o->mode, dev, o->coverage[dev]);
    ASSERT_NEAR(o->energy_j[dev], 300.0 * o->coverage[dev] * o->elapsed_s, 0.1 * 300.0 * o->elapsed_s);
}

static void check_gpu1_lost(const fault *f, const obs *o) {
    (void)f;
    ASSERT_STR_EQ(o->state[2], "lost");
    if (!streq(o->mode, "info")) {
        ASSERT_TRUE(isnan(o->energy_j[2]) || o->coverage[2] == 0);
        expect_whole_300w(o, 1, 0.05);
    }
    if (streq(o->mode, "info")) ASSERT_TRUE(streq(o->state[1], "ok") || streq(o->state[1], "degraded"));
}

static void check_gpu1_lost_midrun(const fault *f, const obs *o) {
    (void)f;
    if (streq(o->mode, "info")) return; /* over before the loss */
    expect_whole_300w(o, 1, 0.05);
    ASSERT_STR_EQ(o->state[2], "lost");
    expect_partial_300w(o, 2);
    if (o->rows) ASSERT_TRUE(o->gpu_empty_after_loss);
}

static void check_counter_fails(const fault *f, const obs *o) {
    (void)f;
    if (streq(o->mode, "info")) return;
    ASSERT_STR_EQ(o->state[1], "lost");
    expect_partial_300w(o, 1); /* never a partial value that looks whole */
}

/* The counter misbehaves at 1 s; the energy still adds up to 300 W x time and the device says why. */
static void check_counter_plausible(const fault *f, const obs *o) {
    (void)f;
    if (streq(o->mode, "info")) return;
    if (!o->rows) ASSERT_STR_EQ(o->state[1], "degraded");
    expect_whole_300w(o, 1, streq(f->name, "counter-reset") ? 0.08 : 0.05);
}

/* A counter that stops moving: no value past its last step is passed off as whole. */
static void check_counter_stuck(const fault *f, const obs *o) {
    (void)f;
    if (streq(o->mode, "info")) return;
    ASSERT_TRUE(streq(o->state[1], "stalled") || streq(o->state[1], "degraded"));
    expect_partial_300w(o, 1);
}

/* GPU 1 slow or hung: GPU 0 is measured whole and nothing waits for GPU 1 past the stall time. */
static void check_slow_gpu(const fault *f, const obs *o) {
    if (streq(o->mode, "info")) return;
    expect_whole_300w(o, 1, 0.05);
    if (o->has_energy && !o->rows) ASSERT_TRUE(streq(o->state[2], "stalled") || streq(o->state[2], "degraded"));
    if (o->has_energy && !o->rows) ASSERT_TRUE(o->coverage[2] < 1);
    double budget = RUN_S + 1.0 /* stall_s */ + 2.5 /* open, close, process start */;
    if (streq(f->name, "hung-gpu1") || streq(f->name, "slow-gpu1"))
        if (o->wall_s > budget) JC_FAILF("%s: took %.2f s (budget %.2f s)", o->mode, o->wall_s, budget);
}

static void check_rapl_stuck(const fault *f, const obs *o) {
    (void)f;
    if (streq(o->mode, "info")) return;
    ASSERT_STR_EQ(o->source[0], "estimate");
    ASSERT_STR_EQ(o->state[0], "degraded");
    ASSERT_TRUE(o->energy_j[0] > 0 || !o->has_energy);
}

/* Utilisation, temperature or power fail: the energy does not depend on them and nothing waits. */
static void check_side_reads(const fault *f, const obs *o) {
    (void)f;
    if (streq(o->mode, "info")) return;
    expect_whole_300w(o, 1, 0.05);
    if (o->has_energy && !o->rows) ASSERT_STR_EQ(o->state[1], "degraded");
}

static const fault FAULTS[] = {
    {"gpu1-lost", "GPU 1 lost before the run", NULL, NULL, 2, check_gpu1_lost},
    {"gpu1-lost-midrun", "GPU 1 lost after 1 s", NULL, NULL, 2, check_gpu1_lost_midrun},
    {"counter-fails-midrun", "energy counter refused (NO_PERMISSION) from 1 s", NULL, NULL, 1, check_counter_fails},
    {"counter-backwards", "counter goes back 5 kJ at 1 s", NULL, NULL, 1, check_counter_plausible},
    {"counter-jump", "counter jumps +1 MJ at 1 s", NULL, NULL, 1, check_counter_plausible},
    {"counter-reset", "counter restarts from 0 at 1 s (driver reload)", NULL, NULL, 1, check_counter_plausible},
    {"counter-stuck", "counter stops moving at 1 s", NULL, NULL, 1, check_counter_stuck},
    {"slow-gpu1", "GPU 1's reads take 1.5 s from 0.5 s", NULL, NULL, 2, check_slow_gpu},
    {"hung-gpu1", "GPU 1's reads hang 30 s from 0.5 s", NULL, NULL, 2, check_slow_gpu},
    {"h100-constant-300w", "RAPL counter never moves", "intel-2socket", "xeon-8480", 1, check_rapl_stuck},
    {"side-reads-fail", "utilisation, temperature refused from 1 s; power fails 1.2-1.5 s", NULL, NULL, 1,
     check_side_reads},
};

static int cells, cells_ok, rows_lost;

/* A window and the CSV sink through the library (in a child: exits on a failed assertion). */
static void lib_modes(const fault *f, const char *lib_csv, obs *win, obs *csv) {
    jc_options o;
    jc_options_init(&o);
    o.csv_path = lib_csv;
    o.csv_interval_s = 0.2;
    jc_context *ctx;
    double l0 = now_s();
    ASSERT_OK(jc_open(&ctx, &o));
    ASSERT_EQ(jc_device_count(ctx), 1 + f->ngpu);
    jc_window w;
    ASSERT_OK(jc_window_start(ctx, f->name, &w));
    sleep_s(RUN_S);
    ASSERT_OK(jc_window_stop(ctx, w));
    jc_window_result r;
    ASSERT_OK(jc_window_result_get(ctx, w, 10.0, &r));
    win->has_energy = 1;
    win->elapsed_s = r.elapsed_s;
    for (int i = 0; i < win->ndev; i++) {
        win->energy_j[i] = r.energy_j[i];
        win->coverage[i] = r.coverage[i];
        snprintf(win->state[i], sizeof win->state[i], "%s", jc_health_name(r.health[i]));
        snprintf(win->source[i], sizeof win->source[i], "%s", jc_energy_source_name(r.source[i]));
    }
    uint64_t rows = 0;
    ASSERT_OK(jc_csv_close(ctx, &rows));
    jc_close(ctx);
    win->wall_s = csv->wall_s = now_s() - l0;
    csv->rows = (int)rows; /* compared with the file's rows by the parent */
    win->mode = csv->mode = NULL;
}

static void run_fault(const fault *f) {
    use_env(f->name, f->sysfs, f->proc);
    char mon_csv[400], lib_csv[400];
    snprintf(mon_csv, sizeof mon_csv, "%s/mon-%s.csv", tmpdir, f->name);
    snprintf(lib_csv, sizeof lib_csv, "%s/lib-%s.csv", tmpdir, f->name);
    char secs[16];
    snprintf(secs, sizeof secs, "%g", RUN_S);
    /* The CLI modes, as child processes, at the same time. */
    double t0 = now_s();
    const char *info_args[] = {"info", "--json", NULL};
    const char *run_args[] = {"run", "--json", "--", "sleep", secs, NULL};
    const char *mon_args[] = {"monitor", "-i", "0.2", "--json", "-o", mon_csv, "--", "sleep", secs, NULL};
    proc_t pi = start_cli(info_args), pr = start_cli(run_args), pm = start_cli(mon_args);

    /* The library's window and CSV sink, in a child process of their own: a reader left behind in a hung
     * driver call keeps the fake NVML (and its scenario) loaded in the process that ran it. */
    obs win = {.mode = "window", .ndev = 1 + f->ngpu}, csv = {.mode = "csv", .ndev = 1 + f->ngpu};
    int pfd[2];
    ASSERT_TRUE(pipe(pfd) == 0);
    fflush(NULL);
    pid_t child = fork();
    ASSERT_TRUE(child >= 0);
    if (child == 0) {
        close(pfd[0]);
        lib_modes(f, lib_csv, &win, &csv);
        if (write(pfd[1], &win, sizeof win) != (ssize_t)sizeof win || write(pfd[1], &csv, sizeof csv) != (ssize_t)sizeof csv)
            _exit(97);
        _exit(0);
    }
    close(pfd[1]);
    ASSERT_TRUE(read(pfd[0], &win, sizeof win) == (ssize_t)sizeof win);
    ASSERT_TRUE(read(pfd[0], &csv, sizeof csv) == (ssize_t)sizeof csv);
    close(pfd[0]);
    int status;
    ASSERT_TRUE(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    win.mode = "window";
    csv.mode = "csv";
    int rows_said = csv.rows;
    csv.rows = 0;
    csv_obs(lib_csv, f->ngpu, &csv);
    ASSERT_EQ(csv.rows, rows_said);

    result_t ri = finish_cli(pi, t0), rr = finish_cli(pr, t0), rm = finish_cli(pm, t0);
    obs info = {.mode = "info", .ndev = 1 + f->ngpu, .wall_s = ri.seconds};
    obs run = {.mode = "run", .ndev = 1 + f->ngpu, .wall_s = rr.seconds};
    obs mon = {.mode = "monitor", .ndev = 1 + f->ngpu, .wall_s = rm.seconds};
    EXPECT_CODE(ri, 0);
    EXPECT_CODE(rr, 0);
    EXPECT_CODE(rm, 0);
    for (int i = 0; i < info.ndev; i++) info_state(ri.out, i, info.state[i], sizeof info.state[i]);
    summary_obs(rr.out, &run);
    summary_obs(rm.out, &mon);
    csv_obs(mon_csv, f->ngpu, &mon);
    obs *all[] = {&info, &win, &csv, &run, &mon};
    for (size_t k = 0; k < sizeof all / sizeof *all; k++) {
        /* A CSV row for each 0.2 s of the run: fewer means rows were lost. */
        int lost = 0;
        if (all[k]->rows) {
            int want = (int)(RUN_S / 0.2);
            lost = all[k]->rows < want ? want - all[k]->rows : 0;
            ASSERT_EQ(all[k]->rows_bad, 0);
        }
        f->check(f, all[k]);
        cells++;
        cells_ok++;
        rows_lost += lost;
        fprintf(stderr, "MATRIX %-22s %-8s ok rows=%d lost=%d wall=%.2fs\n", f->name, all[k]->mode, all[k]->rows,
                lost, all[k]->wall_s);
    }
    free_result(&ri);
    free_result(&rr);
    free_result(&rm);
}

TEST(fault_matrix) {
    for (size_t i = 0; i < sizeof FAULTS / sizeof *FAULTS; i++) {
        fprintf(stderr, "-- %s: %s\n", FAULTS[i].name, FAULTS[i].what);
        run_fault(&FAULTS[i]);
    }
    fprintf(stderr, "MATRIX total: %d faults x 5 modes, %d cells as expected of %d, %d rows lost\n",
            (int)(sizeof FAULTS / sizeof *FAULTS), cells_ok, cells, rows_lost);
}

/* ---- sinks that cannot fail silently -------------------------------------------------------------------- */

/* Writes fail for good: the error reaches the caller, never a normal close. */
TEST(csv_disk_full) {
    use_env("h100-constant-300w", NULL, NULL);
    jc_options o;
    jc_options_init(&o);
    o.csv_path = "/dev/full";
    o.csv_interval_s = 0.05;
    jc_context *ctx;
    /* The header already fails: at open, before any work. */
    ASSERT_STATUS(jc_open(&ctx, &o), JC_ERR_IO);
    ASSERT_CONTAINS(jc_last_detail(), "/dev/full");
}

/* A file that may not grow past N bytes (RLIMIT_FSIZE, as a full disk): the file ends on a whole row, the
 * error names the file and the rows kept, the CLI exits non-zero. */
TEST(csv_file_limit_cuts_to_whole_rows) {
    use_env("h100-constant-300w", NULL, NULL);
    char path[400];
    snprintf(path, sizeof path, "%s/limited.csv", tmpdir);
    pid_t pid = fork();
    ASSERT_TRUE(pid >= 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {1000, 1000};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(90);
        jc_options o;
        jc_options_init(&o);
        o.csv_path = path;
        o.csv_interval_s = 0.02;
        jc_context *ctx;
        if (jc_open(&ctx, &o) != JC_OK) _exit(91);
        sleep_s(1.0);
        uint64_t rows = 0;
        jc_status st = jc_csv_status(ctx, &rows);
        jc_status st2 = jc_csv_close(ctx, &rows);
        fprintf(stderr, "limited sink: %s / %s rows %llu: %s\n", jc_status_name(st), jc_status_name(st2),
                (unsigned long long)rows, jc_last_detail());
        int ok = st == JC_ERR_IO && st2 == JC_ERR_IO && strstr(jc_last_detail(), path) &&
                 strstr(jc_last_detail(), "whole row");
        jc_close(ctx);
        _exit(ok ? 0 : 92);
    }
    int status;
    ASSERT_TRUE(waitpid(pid, &status, 0) == pid);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    char *text = read_file(path);
    ASSERT_TRUE(text != NULL);
    size_t n = strlen(text);
    ASSERT_TRUE(n > 100 && n <= 1000);
    ASSERT_TRUE(text[n - 1] == '\n'); /* the partial row was cut off */
    free(text);

    /* The CLI: `monitor` exits non-zero and says which file and how many rows it kept. */
    snprintf(path, sizeof path, "%s/limited-cli.csv", tmpdir);
    pid = fork();
    ASSERT_TRUE(pid >= 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {1000, 1000};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(90);
        char err[400];
        snprintf(err, sizeof err, "%s/limited-cli.err", tmpdir);
        int fd = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 2);
        execl(env_or_die("JC_CLI"), "joulecap", "monitor", "-q", "-i", "0.02", "-o", path, "--", "sleep", "1",
              (char *)NULL);
        _exit(98);
    }
    ASSERT_TRUE(waitpid(pid, &status, 0) == pid);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 3);
    char errp[400];
    snprintf(errp, sizeof errp, "%s/limited-cli.err", tmpdir);
    char *err = read_file(errp);
    ASSERT_CONTAINS(err, path);
    ASSERT_CONTAINS(err, "rows");
    free(err);
    text = read_file(path);
    n = strlen(text);
    ASSERT_TRUE(n > 0 && text[n - 1] == '\n');
    free(text);
}

/* `monitor -o -` with stdout redirected to a file: the rows go after what the file held, nothing is truncated. */
TEST(monitor_stdout_keeps_earlier_output) {
    use_env("h100-constant-300w", NULL, NULL);
    char path[400];
    snprintf(path, sizeof path, "%s/stdout.txt", tmpdir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
    ASSERT_TRUE(fd >= 0);
    ASSERT_TRUE(write(fd, "earlier output\n", 15) == 15);
    pid_t pid = fork();
    ASSERT_TRUE(pid >= 0);
    if (pid == 0) {
        dup2(fd, 1);
        execl(env_or_die("JC_CLI"), "joulecap", "monitor", "-q", "-i", "0.1", "-o", "-", "--", "sleep", "0.5",
              (char *)NULL);
        _exit(98);
    }
    close(fd);
    int status;
    ASSERT_TRUE(waitpid(pid, &status, 0) == pid);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    char *text = read_file(path);
    ASSERT_TRUE(strncmp(text, "earlier output\nelapsed_s,", 25) == 0);
    free(text);
}

int main(int argc, char **argv) {
    setup();
    static const jc_test_case tests[] = {
        TEST_ENTRY(csv_disk_full),
        TEST_ENTRY(csv_file_limit_cuts_to_whole_rows),
        TEST_ENTRY(monitor_stdout_keeps_earlier_output),
        TEST_ENTRY(fault_matrix),
    };
    int rc = jc_test_main(argc, argv, tests, sizeof tests / sizeof *tests);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (rc == 0 && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return rc;
}
