/* One sampler per node: contexts that read their GPUs through joulecapd (src/sampler/remote.c,
 * daemon/series.c) on the fake NVML.
 *
 * joulecapd runs as a plain child process on a socket in a private temporary directory, sharing the fake GPU
 * with this process through JOULECAP_FAKE_NVML_STATE (as in test_daemon.c).  Cases: a context through the
 * daemon measures what an in-process context measures on the same GPU, within their uncertainty; a client
 * process that cannot load NVML at all measures the GPU through the daemon (and loads no NVML); the daemon
 * killed mid-window: the window is cut (coverage < 1), the GPU lost with a reason naming joulecapd, nothing
 * hangs; no daemon, JOULECAP_DAEMON=off and a daemon too old: in-process, with the reason in the note; the
 * daemon's and the client's parsers of the new messages refuse malformed input. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "jc_child.h"
#include "jc_cli_run.h"
#include "jc_test.h"
#include "jcd.h"
#include "joulecap.h"
#include "sampler/remote.h"

#define GPU0 "GPU-8f3c2a1e-5b7d-4c9e-a0f1-2d3e4b5c6a7f"

static char dir[320], sock_path[400], state_dir[400], config_path[400], log_path[400];
static pid_t daemon_pid;

static void sleep_ms(double ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)((ms - (double)(time_t)(ms / 1000) * 1000) * 1e6)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void setup(void) {
    static int seq;
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "%s/joulecap-test-node-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        ASSERT_TRUE(mkdtemp(tmpdir) != NULL);
        main_pid = getpid();
        atexit(remove_tmpdir);
    }
    seq++;
    snprintf(dir, sizeof dir, "%s/t%d", tmpdir, seq);
    ASSERT_EQ(mkdir(dir, 0700), 0);
    snprintf(sock_path, sizeof sock_path, "%s/run/joulecapd.sock", dir);
    snprintf(state_dir, sizeof state_dir, "%s/state", dir);
    snprintf(config_path, sizeof config_path, "%s/joulecapd.conf", dir);
    snprintf(log_path, sizeof log_path, "%s/joulecapd.log", dir);
    char buf[512];
    snprintf(buf, sizeof buf, "%s/scenarios/h100-constant-300w.scn", env_or_die("JC_TEST_DATA"));
    setenv("JOULECAP_NVML_LIBRARY", env_or_die("JC_FAKE_NVML"), 1);
    setenv("JOULECAP_FAKE_NVML_SCENARIO", buf, 1);
    snprintf(buf, sizeof buf, "%s/fake.state", dir);
    setenv("JOULECAP_FAKE_NVML_STATE", buf, 1);
    setenv("JOULECAP_DAEMON_SOCKET", sock_path, 1);
    unsetenv("JOULECAP_DAEMON");
    unsetenv("JOULECAP_FAKE");
    unsetenv("CUDA_VISIBLE_DEVICES");
    unsetenv("CUDA_DEVICE_ORDER");
}

static void show_log(void) { daemon_show_log(log_path); }

static void start_daemon(void) {
    daemon_pid = daemon_spawn(log_path, sock_path, state_dir, config_path, NULL);
    daemon_wait_accepting(&daemon_pid, log_path, sock_path);
}

static int stop_daemon(int sig) {
    if (daemon_pid <= 0) return 0;
    int status = child_kill(daemon_pid, sig);
    daemon_pid = 0;
    return status;
}

static void teardown(void) {
    if (daemon_pid > 0) {
        int st = stop_daemon(SIGTERM);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            show_log();
            JC_FAILF("joulecapd did not stop cleanly on SIGTERM (status 0x%x)", st);
        }
    }
}

static jc_context *open_ctx(void) {
    jc_options o;
    jc_options_init(&o);
    jc_context *ctx = NULL;
    ASSERT_OK(jc_open(&ctx, &o));
    return ctx;
}

static void driver_note(jc_context *ctx, char *note, size_t len) {
    char ver[96];
    jc_gpu_driver(ctx, ver, sizeof ver, note, len);
}

/* ------------------------------------------------------------------------------------------------------ */

TEST(same_energy_as_in_process) {
    setup();
    start_daemon();
    jc_context *remote = open_ctx();
    setenv("JOULECAP_DAEMON", "off", 1);
    jc_context *local = open_ctx();
    unsetenv("JOULECAP_DAEMON");
    char note[1024];
    driver_note(remote, note, sizeof note);
    ASSERT_CONTAINS(note, "GPUs read by joulecapd (");
    ASSERT_CONTAINS(note, sock_path);
    driver_note(local, note, sizeof note);
    ASSERT_CONTAINS(note, "sampled in this process: JOULECAP_DAEMON=off");
    ASSERT_EQ(jc_device_count(remote), 2);
    jc_device_info ri, li;
    ASSERT_OK(jc_device_info_get(remote, 1, &ri));
    ASSERT_OK(jc_device_info_get(local, 1, &li));
    ASSERT_STR_EQ(ri.uuid, GPU0);
    ASSERT_STR_EQ(ri.name, li.name);
    ASSERT_EQ(ri.energy_source, JC_SOURCE_COUNTER);
    ASSERT_TRUE(ri.max_limit_w == 700.0);
    ASSERT_EQ(ri.index, 0);
    ASSERT_CONTAINS(ri.energy_note, "read by joulecapd");
    ASSERT_TRUE(strstr(li.energy_note, "joulecapd") == NULL);
    char ver[96];
    ASSERT_OK(jc_gpu_driver(remote, ver, sizeof ver, NULL, 0));
    ASSERT_STR_EQ(ver, "580.159.04");
    /* Windows of 0.15 to 1.2 s, the same instants in both contexts. */
    const double lens[] = {0.15, 0.35, 0.6, 1.2};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        uint64_t t0 = jc_now_ns();
        jc_window wr, wl;
        ASSERT_OK(jc_window_start_at(remote, "w", t0, &wr));
        ASSERT_OK(jc_window_start_at(local, "w", t0, &wl));
        sleep_ms(lens[k] * 1000);
        uint64_t t1 = jc_now_ns();
        ASSERT_OK(jc_window_stop_at(remote, wr, t1));
        ASSERT_OK(jc_window_stop_at(local, wl, t1));
        double t = now_s();
        jc_window_result rr, lr;
        ASSERT_OK(jc_window_result_get(remote, wr, 5, &rr));
        double waited = now_s() - t;
        ASSERT_OK(jc_window_result_get(local, wl, 5, &lr));
        fprintf(stderr, "window %.2f s: daemon %.3f +- %.3f J (result after %.0f ms), in-process %.3f +- %.3f J\n",
                lens[k], rr.energy_j[1], rr.uncertainty_j[1], waited * 1e3, lr.energy_j[1], lr.uncertainty_j[1]);
        ASSERT_EQ(rr.resolved, 1);
        ASSERT_NEAR(rr.coverage[1], 1.0, 1e-12);
        ASSERT_EQ(rr.health[1], JC_HEALTH_OK);
        double both = rr.uncertainty_j[1] + lr.uncertainty_j[1];
        ASSERT_NEAR(rr.energy_j[1], lr.energy_j[1], both + 0.5);
        ASSERT_NEAR(rr.energy_j[1], 300.0 * jc__s(t1 - t0), 0.05 * 300 * jc__s(t1 - t0) + both);
        ASSERT_OK(jc_window_release(remote, wr));
        ASSERT_OK(jc_window_release(local, wl));
    }
    jc_reading rd;
    ASSERT_OK(jc_reading_get(remote, 1, &rd));
    ASSERT_NEAR(rd.power_w, 300, 30);
    ASSERT_TRUE(rd.t_ns > 0);
    jc_close(remote);
    jc_close(local);
    teardown();
}

/* In a child whose NVML path leads nowhere: opening NVML in this process would fail. */
static int child_without_nvml(void) {
    setenv("JOULECAP_NVML_LIBRARY", "/nonexistent/libnvidia-ml.so.1", 1);
    jc_options o;
    jc_options_init(&o);
    jc_context *ctx = NULL;
    if (jc_open(&ctx, &o) != JC_OK || jc_device_count(ctx) != 2) return 2;
    jc_window w;
    uint64_t t0 = jc_now_ns();
    jc_window_start_at(ctx, NULL, t0, &w);
    sleep_ms(500);
    uint64_t t1 = jc_now_ns();
    jc_window_stop_at(ctx, w, t1);
    jc_window_result r;
    if (jc_window_result_get(ctx, w, 5, &r) != JC_OK) return 3;
    double want = 300.0 * jc__s(t1 - t0);
    if (!(fabs(r.energy_j[1] - want) <= 0.05 * want + r.uncertainty_j[1])) {
        fprintf(stderr, "child: %.3f J, want %.3f J\n", r.energy_j[1], want);
        return 4;
    }
    char *maps = read_file("/proc/self/maps");
    int loaded = maps && (strstr(maps, "fakenvml") || strstr(maps, "libnvidia-ml"));
    free(maps);
    jc_close(ctx);
    if (loaded) return 5;
    /* Control: without the daemon this process has no GPU at all. */
    setenv("JOULECAP_DAEMON", "off", 1);
    if (jc_open(&ctx, &o) != JC_OK) return 6;
    int n = jc_device_count(ctx);
    jc_close(ctx);
    return n == 1 ? 0 : 7;
}

TEST(client_process_opens_no_nvml) {
    setup();
    start_daemon();
    fflush(NULL);
    pid_t pid = fork();
    ASSERT_TRUE(pid >= 0);
    if (pid == 0) _exit(child_without_nvml());
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) ASSERT_TRUE(errno == EINTR);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    teardown();
}

TEST(daemon_killed_mid_window) {
    setup();
    start_daemon();
    jc_context *ctx = open_ctx();
    jc_window w;
    ASSERT_OK(jc_window_start(ctx, "cut", &w));
    sleep_ms(600);
    ASSERT_EQ(stop_daemon(SIGKILL) & 0x7f, SIGKILL);
    sleep_ms(400);
    ASSERT_OK(jc_window_stop(ctx, w));
    double t = now_s();
    jc_window_result r;
    ASSERT_OK(jc_window_result_get(ctx, w, 10, &r));
    double waited = now_s() - t;
    fprintf(stderr, "after the kill: %.3f J, coverage %.2f, health %s, result after %.0f ms\n", r.energy_j[1],
            r.coverage[1], jc_health_name(r.health[1]), waited * 1e3);
    ASSERT_TRUE(waited < 4.0);
    ASSERT_TRUE(r.coverage[1] > 0.3 && r.coverage[1] < 0.95);
    ASSERT_EQ(r.health[1], JC_HEALTH_LOST);
    ASSERT_NEAR(r.energy_j[1], 300 * r.coverage[1] * r.elapsed_s, 0.1 * 300 * r.elapsed_s);
    ASSERT_NEAR(r.coverage[0], 1.0, 1e-9); /* the CPU is this process's own */
    jc_device_info info;
    ASSERT_OK(jc_device_info_get(ctx, 1, &info));
    ASSERT_EQ(info.health, JC_HEALTH_LOST);
    ASSERT_CONTAINS(info.health_note, "joulecapd (");
    ASSERT_CONTAINS(info.health_note, "not measured");
    ASSERT_CONTAINS(info.energy_note, "read through joulecapd until");
    ASSERT_OK(jc_window_release(ctx, w));
    t = now_s();
    jc_close(ctx);
    ASSERT_TRUE(now_s() - t < 3.0);
    teardown();
}

TEST(no_daemon_in_process) {
    setup();
    /* No socket at JOULECAP_DAEMON_SOCKET. */
    jc_context *ctx = open_ctx();
    char note[1024];
    driver_note(ctx, note, sizeof note);
    ASSERT_CONTAINS(note, "sampled in this process: no joulecapd socket at");
    ASSERT_EQ(jc_device_count(ctx), 2);
    jc_device_info info;
    ASSERT_OK(jc_device_info_get(ctx, 1, &info));
    ASSERT_STR_EQ(info.energy_note, "NVML total energy counter");
    jc_close(ctx);
    /* A path in JOULECAP_DAEMON that is not a socket. */
    setenv("JOULECAP_DAEMON", config_path, 1);
    ctx = open_ctx();
    driver_note(ctx, note, sizeof note);
    ASSERT_CONTAINS(note, "no joulecapd socket at");
    ASSERT_CONTAINS(note, config_path);
    jc_close(ctx);
    unsetenv("JOULECAP_DAEMON");
    /* JOULECAP_FAKE never goes to the node's daemon unless a socket is named. */
    unsetenv("JOULECAP_DAEMON_SOCKET");
    setenv("JOULECAP_FAKE", "h100", 1);
    ctx = open_ctx();
    driver_note(ctx, note, sizeof note);
    ASSERT_CONTAINS(note, "JOULECAP_FAKE");
    jc_close(ctx);
    unsetenv("JOULECAP_FAKE");
}

/* A daemon of protocol 2: answers HELLO, then closes. */
static void *old_daemon(void *arg) {
    int lfd = *(int *)arg;
    for (int i = 0; i < 1; i++) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0) break;
        char buf[256];
        ssize_t n = recv(c, buf, sizeof buf, 0);
        (void)n;
        const char *reply = "OK proto=2 version=0.0.9 state_dir=/x uid=0 user=root may_write=1 rule=root\n";
        ssize_t w = send(c, reply, strlen(reply), MSG_NOSIGNAL);
        (void)w;
        close(c);
    }
    return NULL;
}

TEST(old_daemon_in_process_with_reason) {
    setup();
    char run[450];
    snprintf(run, sizeof run, "%s/run", dir);
    ASSERT_EQ(mkdir(run, 0700), 0);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    memcpy(a.sun_path, sock_path, strlen(sock_path));
    ASSERT_EQ(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    ASSERT_EQ(listen(lfd, 4), 0);
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, old_daemon, &lfd), 0);
    jc_context *ctx = open_ctx();
    char note[1024];
    driver_note(ctx, note, sizeof note);
    ASSERT_CONTAINS(note, "sampled in this process: joulecapd (");
    ASSERT_CONTAINS(note, "too old: joulecapd 0.0.9 speaks protocol 2");
    ASSERT_EQ(jc_device_count(ctx), 2);
    jc_device_info info;
    ASSERT_OK(jc_device_info_get(ctx, 1, &info));
    ASSERT_EQ(info.energy_source, JC_SOURCE_COUNTER);
    jc_close(ctx);
    pthread_join(th, NULL);
    close(lfd);
}

/* ------------------------------------------------------------------------------------------------------ */

static int parse_req(const char *line) {
    jcd_request q;
    char why[300];
    return jcd_request_parse(line, strlen(line), &q, why, sizeof why);
}

static int parse_series(const char *text, jc__remote_series *s) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", text);
    return jc__remote_parse_series(buf, strlen(buf), s);
}

TEST(parsers_refuse_malformed) {
    jcd_request q;
    char why[300];
    const char *ok = "SERIES " GPU0 " 123456789 1";
    ASSERT_EQ(jcd_request_parse(ok, strlen(ok), &q, why, sizeof why), 0);
    ASSERT_EQ(q.verb, JCD_SERIES);
    ASSERT_EQ(q.since_ns, 123456789);
    ASSERT_EQ(q.fine, 1);
    ASSERT_EQ(parse_req("GPUS"), 0);
    ASSERT_EQ(parse_req("GPU 3"), 0);
    ASSERT_EQ(parse_req("GPU -1"), -1);
    ASSERT_EQ(parse_req("GPU"), -1);
    ASSERT_EQ(parse_req("GPUS 1"), -1);
    ASSERT_EQ(parse_req("SERIES " GPU0 " 12 2"), -1);
    ASSERT_EQ(parse_req("SERIES " GPU0 " 012 1"), -1);
    ASSERT_EQ(parse_req("SERIES " GPU0 " 99999999999999999999 1"), -1);
    ASSERT_EQ(parse_req("SERIES GPU/x 12 1"), -1);
    ASSERT_EQ(parse_req("SERIES " GPU0 " 12"), -1);

    jc__remote_series s;
    ASSERT_EQ(parse_series("OK sid=1-2 now=5000 h=0 hs=1 dead=0 lt=4000 p=300.5 u=100 c=40 "
                           "k=1000:10.5,2000:11.5 more=0 sigma=1500",
                           &s), 0);
    ASSERT_EQ(s.nknots, 2);
    ASSERT_EQ(s.knot_t[1], 2000);
    ASSERT_NEAR(s.knot_j[1], 11.5, 0);
    ASSERT_NEAR(s.power_w, 300.5, 0);
    ASSERT_NEAR(s.sigma_ns, 1500, 0);
    ASSERT_EQ(parse_series("OK sid=1-2 now=5000 h=0 hs=1 dead=0 lt=0 more=0", &s), 0);
    ASSERT_EQ(s.nknots, 0);
    ASSERT_TRUE(isnan(s.power_w));
    const char *bad[] = {
        "OK sid=1-2 now=5000 h=0 hs=1 dead=0 lt=0 more=0 k=2000:1,1000:2",     /* knots out of order */
        "OK sid=1-2 now=5000 h=0 hs=1 dead=0 lt=0 more=0 k=1000:1,1000:2",     /* not strictly increasing */
        "OK sid=1-2 now=5000 h=0 hs=1 dead=0 lt=0 more=0 k=1000:nan",          /* not finite */
        "OK sid=1-2 now=5000 h=0 hs=1 dead=0 lt=0 more=0 k=1000:1e300",        /* out of bounds */
        "OK sid=1-2 now=5000 h=0 hs=1 dead=0 lt=0 more=0 k=1000",              /* no energy */
        "OK sid=1-2 now=5000 h=0 hs=1 dead=0 lt=0 more=0 k=0:1",               /* instant 0 */
        "OK sid=1-2 now=5000 h=0 hs=1 dead=0 lt=0 more=1",                     /* more without progress */
        "OK sid=1-2 now=5000 h=7 hs=1 dead=0 lt=0 more=0",                     /* no such health */
        "OK now=5000 h=0 hs=1 dead=0 lt=0 more=0",                             /* no series id */
        "OK sid=1-2 now=5000 h=0 hs=1 dead=0 lt=0 more=0 p=-5",                /* negative power */
        "OK sid=1-2 now=5000 h=0 hs=1 dead=0 lt=0 more=0 u=101",               /* utilisation > 100 % */
        "ERR UNAVAILABLE text=x",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (parse_series(bad[i], &s) != -1) JC_FAILF("accepted: %s", bad[i]);
    }
    /* 65 knots: more than a reply may hold. */
    char many[4096];
    size_t used = (size_t)snprintf(many, sizeof many, "OK sid=1 now=99999 h=0 hs=1 dead=0 lt=0 more=0 k=");
    for (int i = 1; i <= 65; i++) used += (size_t)snprintf(many + used, sizeof many - used, "%s%d:1", i > 1 ? "," : "", i);
    ASSERT_EQ(parse_series(many, &s), -1);

    jc__remote_gpu g;
    char line[1024];
    snprintf(line, sizeof line, "OK nvml=0 uuid=" GPU0 " pci=0:19 src=1 pst=0 ust=0 tst=0 limit_mw=700000 "
             "enforced_mw=700000 default_mw=700000 min_mw=200000 max_mw=700000 name=NVIDIA%%20H100 enote=x");
    ASSERT_EQ(jc__remote_parse_gpu(line, strlen(line), &g), 0);
    ASSERT_STR_EQ(g.id.name, "NVIDIA H100");
    ASSERT_TRUE(g.info.max_limit_w == 700.0);
    snprintf(line, sizeof line, "OK nvml=0 uuid=" GPU0 " pci=0:19 src=9 pst=0 ust=0 tst=0 limit_mw=1 "
             "enforced_mw=1 default_mw=1 min_mw=1 max_mw=1");
    ASSERT_EQ(jc__remote_parse_gpu(line, strlen(line), &g), -1); /* no such energy source */
}

int main(int argc, char **argv) {
    static const jc_test_case tests[] = {
        TEST_ENTRY(parsers_refuse_malformed),
        TEST_ENTRY(same_energy_as_in_process),
        TEST_ENTRY(client_process_opens_no_nvml),
        TEST_ENTRY(daemon_killed_mid_window),
        TEST_ENTRY(no_daemon_in_process),
        TEST_ENTRY(old_daemon_in_process_with_reason),
    };
    return jc_test_main(argc, argv, tests, sizeof tests / sizeof tests[0]);
}
