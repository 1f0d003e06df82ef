/* joulecapd --metrics on the fake NVML (one H100 drawing a constant 300 W): the exposition (names, HELP and
 * TYPE lines, labels, OpenMetrics on request), counters that never go back across restarts (SIGTERM and
 * SIGKILL) and count the time the daemon was down, per-job energy (the ENERGY request, jc_job_report, the
 * totals kept across a restart), `promtool check metrics` on the output, and the pure parts (format, content
 * negotiation, addresses, the request parser, the job table and its file).
 *
 * The daemon runs as a plain child process on a private socket and a loopback port (port 0: the log says
 * which); this process scrapes it with a plain socket.  Needs libmicrohttpd at build time (otherwise only the
 * message of --metrics is checked) and promtool on PATH for one case (skipped without it, unless
 * JC_REQUIRE_PROMETHEUS=1, as in CI). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jc_child.h"
#include "jc_cli_run.h"
#include "jc_test.h"
#include "jcd.h"
#include "joulecap.h"

#define UUID0 "GPU-8f3c2a1e-5b7d-4c9e-a0f1-2d3e4b5c6a7f"

static char dir[320], sock_path[400], state_dir[400], config_path[400], log_path[400];
static pid_t daemon_pid;
static int starts; /* daemons started in this test's directory (their log lines) */
static int port; /* of the running daemon's /metrics */

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int require_prometheus(void) {
    const char *v = getenv("JC_REQUIRE_PROMETHEUS");
    return v && strcmp(v, "1") == 0;
}

static int have_http(void) {
    char why[400];
    if (jcd_http_available(why, sizeof why)) return 1;
    if (require_prometheus()) JC_FAILF("JC_REQUIRE_PROMETHEUS=1 but joulecapd was built without libmicrohttpd");
    fprintf(stderr, "  skipped: %s\n", why);
    return 0;
}

/* ------------------------------------------------------------------------------------------------------
 * Daemon.
 * ---------------------------------------------------------------------------------------------------- */

static void write_text(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_TRUE(fd >= 0);
    ASSERT_EQ(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static void setup(void) {
    static int seq;
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "%s/joulecap-test-exporter-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        ASSERT_TRUE(mkdtemp(tmpdir) != NULL);
        ASSERT_EQ(chmod(tmpdir, 0755), 0);
        main_pid = getpid();
        atexit(remove_tmpdir);
    }
    snprintf(dir, sizeof dir, "%s/t%d", tmpdir, ++seq);
    starts = 0;
    ASSERT_EQ(mkdir(dir, 0755), 0);
    snprintf(sock_path, sizeof sock_path, "%s/run/joulecapd.sock", dir);
    snprintf(state_dir, sizeof state_dir, "%s/state", dir);
    snprintf(config_path, sizeof config_path, "%s/joulecapd.conf", dir);
    snprintf(log_path, sizeof log_path, "%s/joulecapd.log", dir);
    char buf[512];
    snprintf(buf, sizeof buf, "allow_user %u\n", (unsigned)getuid());
    write_text(config_path, buf);
    snprintf(buf, sizeof buf, "%s/scenarios/h100-constant-300w.scn", env_or_die("JC_TEST_DATA"));
    setenv("JOULECAP_FAKE_NVML_SCENARIO", buf, 1);
    setenv("JOULECAP_NVML_LIBRARY", env_or_die("JC_FAKE_NVML"), 1);
    snprintf(buf, sizeof buf, "%s/fake.state", dir);
    setenv("JOULECAP_FAKE_NVML_STATE", buf, 1);
    setenv("JOULECAP_DAEMON_SOCKET", sock_path, 1);
    snprintf(buf, sizeof buf, "%s/direct", dir);
    setenv("JOULECAP_STATE_DIR", buf, 1);
    unsetenv("CUDA_VISIBLE_DEVICES");
    unsetenv("JOULECAP_JOB");
    unsetenv("SLURM_JOB_ID");
    unsetenv("TORCHELASTIC_RUN_ID");
}

static void show_log(void) { daemon_show_log(log_path); }

static pid_t spawn(const char *metrics) {
    return daemon_spawn(log_path, sock_path, state_dir, config_path, metrics);
}

/* The port of the n-th "metrics on http://127.0.0.1:PORT/metrics" line of the log (0: none yet). */
static int logged_port(int n) {
    char *t = read_file(log_path);
    int p = 0, k = 0;
    for (const char *s = t ? t : ""; (s = strstr(s, "metrics on http://127.0.0.1:")) != NULL; s++)
        if (++k == n) p = atoi(s + strlen("metrics on http://127.0.0.1:"));
    free(t);
    return p;
}

/* Starts joulecapd with --metrics 127.0.0.1:<want> (0: any port) and waits until it serves. */
static void start_daemon(int want) {
    char m[32];
    snprintf(m, sizeof m, "127.0.0.1:%d", want);
    daemon_pid = spawn(m);
    starts++;
    double t0 = now_s();
    while ((port = logged_port(starts)) == 0) {
        int status;
        if (child_exited(daemon_pid, &status)) {
            show_log();
            daemon_pid = 0;
            JC_FAILF("joulecapd exited at start (status 0x%x)", status);
        }
        if (now_s() - t0 > 15) {
            show_log();
            JC_FAILF("joulecapd did not serve /metrics within 15 s");
        }
        sleep_s(0.005);
    }
    if (want) ASSERT_EQ(port, want);
}

static int stop_daemon(int sig) {
    if (daemon_pid <= 0) return 0;
    int status = child_kill(daemon_pid, sig);
    daemon_pid = 0;
    return status;
}

static void kill_daemon_at_exit(void) {
    if (daemon_pid > 0 && getpid() == main_pid) kill(daemon_pid, SIGKILL);
}

/* ------------------------------------------------------------------------------------------------------
 * A plain HTTP client.
 * ---------------------------------------------------------------------------------------------------- */

typedef struct http_reply {
    int status;
    char head[4096];
    char *body; /* malloc'd */
    size_t len;
} http_reply;

static void http(const char *method, const char *path, const char *accept, http_reply *r) {
    memset(r, 0, sizeof *r);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_TRUE(fd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        show_log();
        JC_FAILF("connect 127.0.0.1:%d: %s", port, strerror(errno));
    }
    char req[512];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s%sConnection: close\r\n\r\n", method,
                     path, accept ? "Accept: " : "", accept ? accept : "", accept ? "\r\n" : "");
    ASSERT_EQ(send(fd, req, (size_t)n, MSG_NOSIGNAL), n);
    size_t cap = 1 << 16, used = 0;
    char *buf = malloc(cap);
    ASSERT_TRUE(buf != NULL);
    for (;;) {
        if (used + 1 >= cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            ASSERT_TRUE(buf != NULL);
        }
        ssize_t got = recv(fd, buf + used, cap - used - 1, 0);
        if (got < 0 && errno == EINTR) continue;
        ASSERT_TRUE(got >= 0);
        if (got == 0) break;
        used += (size_t)got;
    }
    close(fd);
    buf[used] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    if (!sep) JC_FAILF("no HTTP header in: %s", buf);
    size_t hl = (size_t)(sep - buf);
    ASSERT_TRUE(hl < sizeof r->head);
    memcpy(r->head, buf, hl);
    r->head[hl] = '\0';
    ASSERT_TRUE(sscanf(buf, "HTTP/1.%*d %d", &r->status) == 1);
    r->len = used - hl - 4;
    r->body = malloc(r->len + 1);
    memcpy(r->body, sep + 4, r->len + 1);
    free(buf);
}

static char *scrape(const char *accept) {
    http_reply r;
    http("GET", "/metrics", accept, &r);
    if (r.status != 200) JC_FAILF("GET /metrics: status %d\n%s", r.status, r.body);
    return r.body;
}

/* The value of the sample whose line starts with name{ and contains every label of want ("" none); NAN when
 * there is none, failure when there are two. */
static double value_of(const char *text, const char *name, const char *want) {
    double v = NAN;
    int found = 0;
    size_t nl = strlen(name);
    for (const char *l = text; *l;) {
        const char *e = strchr(l, '\n');
        size_t len = e ? (size_t)(e - l) : strlen(l);
        if (len > nl && strncmp(l, name, nl) == 0 && (l[nl] == '{' || l[nl] == ' ')) {
            char line[4096];
            ASSERT_TRUE(len < sizeof line);
            memcpy(line, l, len);
            line[len] = '\0';
            if (strstr(line, want)) {
                if (found++) JC_FAILF("two samples of %s with %s", name, want);
                v = strtod(strrchr(line, ' ') + 1, NULL);
            }
        }
        l += len + (e ? 1 : 0);
    }
    return v;
}

static double gpu_energy(void) {
    char *t = scrape(NULL);
    double v = value_of(t, "joulecap_gpu_energy_joules_total", "UUID=\"" UUID0 "\"");
    free(t);
    return v;
}

/* ------------------------------------------------------------------------------------------------------
 * The daemon's Unix socket, spoken by hand.
 * ---------------------------------------------------------------------------------------------------- */

static int unix_connect(void) {
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    memcpy(a.sun_path, sock_path, strlen(sock_path));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_TRUE(fd >= 0);
    ASSERT_EQ(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/* Sends one request line and returns the reply line (static buffer). */
static const char *ask(int fd, const char *req) {
    static char line[4096];
    char out[1100];
    int n = snprintf(out, sizeof out, "%s\n", req);
    ASSERT_EQ(send(fd, out, (size_t)n, MSG_NOSIGNAL), n);
    size_t used = 0;
    while (used + 1 < sizeof line) {
        ssize_t got = recv(fd, line + used, 1, 0);
        if (got <= 0) break;
        if (line[used] == '\n') break;
        used++;
    }
    line[used] = '\0';
    return line;
}

/* ------------------------------------------------------------------------------------------------------
 * The pure parts.
 * ---------------------------------------------------------------------------------------------------- */

static void fill_snapshot(jcd_msnap *s, jcd_job *job) {
    memset(s, 0, sizeof *s);
    snprintf(s->hostname, sizeof s->hostname, "node-7");
    s->ndev = 2;
    jcd_mdev *c = &s->dev[0];
    c->nvml = -1;
    c->source = JC_SOURCE_RAPL;
    c->have_energy = 1;
    c->energy_j = 1234.5;
    c->power_w = 88.25;
    c->util_ratio = c->temp_c = NAN;
    c->health = JC_HEALTH_OK;
    jcd_mdev *g = &s->dev[1];
    g->gpu = 1;
    g->nvml = 3;
    snprintf(g->uuid, sizeof g->uuid, "%s", UUID0);
    snprintf(g->pci, sizeof g->pci, "00000000:19:00.0");
    snprintf(g->name, sizeof g->name, "NVIDIA \"H100\" 80GB\\HBM3\nx\x01\xff");
    g->source = JC_SOURCE_COUNTER;
    g->have_energy = 1;
    g->energy_j = 98765.4321;
    g->power_w = 300;
    g->util_ratio = 0.5;
    g->temp_c = NAN; /* unreadable: left out */
    g->limit_mw = 700000;
    g->enforced_mw = 650500;
    g->health = JC_HEALTH_STALLED;
    s->nleases = 1;
    jcd_mlease *l = &s->leases[0];
    l->nvml = 3;
    snprintf(l->uuid, sizeof l->uuid, "%s", UUID0);
    snprintf(l->holder, sizeof l->holder, "lease");
    snprintf(l->user, sizeof l->user, "alice");
    l->uid = 1001;
    l->pid = 4123;
    memset(job, 0, sizeof *job);
    snprintf(job->job, sizeof job->job, "train \"42\"");
    snprintf(job->user, sizeof job->user, "alice");
    snprintf(job->uuid, sizeof job->uuid, "%s", UUID0);
    job->nvml = 3;
    job->mj = 1500;
    s->njobs = 1;
    s->jobs = job;
}

TEST(format_text) {
    jcd_msnap *s = malloc(sizeof *s);
    jcd_job job;
    fill_snapshot(s, &job);
    size_t len;
    char *t = jcd_metrics_format(s, 0, &len);
    ASSERT_TRUE(t != NULL && strlen(t) == len);
    static const char *const families[][2] = {
        {"joulecap_gpu_energy_joules_total", "counter"}, {"joulecap_gpu_power_watts", "gauge"},
        {"joulecap_gpu_power_limit_watts", "gauge"},     {"joulecap_gpu_enforced_power_limit_watts", "gauge"},
        {"joulecap_gpu_utilization_ratio", "gauge"},     {"joulecap_gpu_temperature_celsius", "gauge"},
        {"joulecap_cpu_energy_joules_total", "counter"}, {"joulecap_cpu_power_watts", "gauge"},
        {"joulecap_device_up", "gauge"},                 {"joulecap_gpu_power_limit_lease_info", "gauge"},
        {"joulecap_job_gpu_energy_joules_total", "counter"},
    };
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
        char want[200];
        snprintf(want, sizeof want, "# HELP %s ", families[i][0]);
        ASSERT_CONTAINS(t, want);
        snprintf(want, sizeof want, "\n# TYPE %s %s\n", families[i][0], families[i][1]);
        ASSERT_CONTAINS(t, want);
    }
    const char *labels = "{gpu=\"3\",UUID=\"" UUID0 "\",pci_bus_id=\"00000000:19:00.0\",modelName=\"NVIDIA "
                         "\\\"H100\\\" 80GB\\\\HBM3\\nx??\",Hostname=\"node-7\"}";
    char want[600];
    snprintf(want, sizeof want, "\njoulecap_gpu_energy_joules_total%s 98765.4321\n", labels);
    ASSERT_CONTAINS(t, want);
    snprintf(want, sizeof want, "\njoulecap_gpu_power_limit_watts%s 700\n", labels);
    ASSERT_CONTAINS(t, want);
    snprintf(want, sizeof want, "\njoulecap_gpu_enforced_power_limit_watts%s 650.5\n", labels);
    ASSERT_CONTAINS(t, want);
    snprintf(want, sizeof want, "\njoulecap_gpu_utilization_ratio%s 0.5\n", labels);
    ASSERT_CONTAINS(t, want);
    ASSERT_TRUE(!strstr(t, "\njoulecap_gpu_temperature_celsius{")); /* NaN: no sample */
    ASSERT_TRUE(!strstr(t, "NaN") && !strstr(t, "nan"));
    ASSERT_CONTAINS(t, "\njoulecap_cpu_energy_joules_total{source=\"rapl\",Hostname=\"node-7\"} 1234.5\n");
    ASSERT_CONTAINS(t, "\njoulecap_cpu_power_watts{source=\"rapl\",Hostname=\"node-7\"} 88.25\n");
    ASSERT_CONTAINS(t, "\njoulecap_device_up{Hostname=\"node-7\",kind=\"cpu\",state=\"ok\"} 1\n");
    snprintf(want, sizeof want, "\njoulecap_device_up{gpu=\"3\",UUID=\"%s\",", UUID0);
    ASSERT_CONTAINS(t, want);
    ASSERT_CONTAINS(t, ",kind=\"gpu\",state=\"stalled\"} 0\n");
    ASSERT_CONTAINS(t, ",holder=\"lease\",user=\"alice\",uid=\"1001\",pid=\"4123\"} 1\n");
    snprintf(want, sizeof want, "\njoulecap_job_gpu_energy_joules_total{job=\"train \\\"42\\\"\",user=\"alice\","
             "gpu=\"3\",UUID=\"%s\",Hostname=\"node-7\"} 1.5\n", UUID0);
    ASSERT_CONTAINS(t, want);
    ASSERT_TRUE(!strstr(t, "# EOF") && !strstr(t, "# UNIT"));
    free(t);

    /* OpenMetrics: families without _total in TYPE, UNIT lines, info type, # EOF at the end. */
    t = jcd_metrics_format(s, 1, &len);
    ASSERT_TRUE(t != NULL);
    ASSERT_CONTAINS(t, "# TYPE joulecap_gpu_energy_joules counter\n# UNIT joulecap_gpu_energy_joules joules\n"
                       "# HELP joulecap_gpu_energy_joules ");
    ASSERT_CONTAINS(t, "# TYPE joulecap_gpu_utilization_ratio gauge\n# UNIT joulecap_gpu_utilization_ratio ratio\n");
    ASSERT_CONTAINS(t, "# TYPE joulecap_gpu_power_limit_lease info\n# HELP joulecap_gpu_power_limit_lease ");
    ASSERT_CONTAINS(t, "# TYPE joulecap_device_up gauge\n# HELP joulecap_device_up ");
    snprintf(want, sizeof want, "\njoulecap_gpu_energy_joules_total%s 98765.4321\n", labels);
    ASSERT_CONTAINS(t, want);
    ASSERT_TRUE(len > 6 && strcmp(t + len - 6, "# EOF\n") == 0);
    free(t);
    free(s);
}

TEST(negotiation) {
    /* What Prometheus 2.x sends, and variations. */
    ASSERT_EQ(jcd_metrics_wants_openmetrics("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                                            "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"), 1);
    ASSERT_EQ(jcd_metrics_wants_openmetrics("text/plain;version=0.0.4;q=1,*/*;q=0.1"), 0);
    ASSERT_EQ(jcd_metrics_wants_openmetrics(NULL), 0);
    ASSERT_EQ(jcd_metrics_wants_openmetrics(""), 0);
    ASSERT_EQ(jcd_metrics_wants_openmetrics("*/*"), 0);
    ASSERT_EQ(jcd_metrics_wants_openmetrics("text/plain;q=0.9, application/openmetrics-text; version=1.0.0"), 1);
    ASSERT_EQ(jcd_metrics_wants_openmetrics("application/openmetrics-text;q=0.2, text/plain"), 0);
    ASSERT_EQ(jcd_metrics_wants_openmetrics("application/openmetrics-text;q=0"), 0);
    ASSERT_EQ(jcd_metrics_wants_openmetrics("APPLICATION/OpenMetrics-Text"), 1);
    ASSERT_EQ(jcd_metrics_wants_openmetrics("application/openmetrics-text;q=bad, text/plain"), 0);
}

TEST(addresses) {
    jcd_addr a;
    char why[300];
    ASSERT_EQ(jcd_addr_parse("127.0.0.1:9477", &a, why, sizeof why), 0);
    ASSERT_EQ(a.ss.ss_family, AF_INET);
    ASSERT_EQ(ntohs(((struct sockaddr_in *)&a.ss)->sin_port), 9477);
    ASSERT_EQ(jcd_addr_parse("[::1]:9477", &a, why, sizeof why), 0);
    ASSERT_EQ(a.ss.ss_family, AF_INET6);
    ASSERT_EQ(jcd_addr_parse(":9477", &a, why, sizeof why), 0);
    ASSERT_EQ(a.any, 1);
    ASSERT_EQ(jcd_addr_parse("localhost:0", &a, why, sizeof why), 0);
    static const char *const bad[] = {"9477", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1",
                                      "::1:9477", "[::1]9477", "[::1:9477", "127.0.0.1:94x7", "no.such.host.invalid:1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (jcd_addr_parse(bad[i], &a, why, sizeof why) == 0) JC_FAILF("'%s' was accepted", bad[i]);
        ASSERT_TRUE(why[0] != '\0');
    }
}

TEST(energy_request) {
    jcd_request q;
    char why[300];
    const char *ok = "ENERGY train%2042%25 " UUID0 " 1500";
    ASSERT_EQ(jcd_request_parse(ok, strlen(ok), &q, why, sizeof why), 0);
    ASSERT_EQ(q.verb, JCD_ENERGY);
    ASSERT_STR_EQ(q.job, "train 42%");
    ASSERT_STR_EQ(q.uuid, UUID0);
    ASSERT_EQ(q.mj, 1500);
    const char *zero = "ENERGY j " UUID0 " 0";
    ASSERT_EQ(jcd_request_parse(zero, strlen(zero), &q, why, sizeof why), 0);
    const char *max = "ENERGY j " UUID0 " 10000000000000";
    ASSERT_EQ(jcd_request_parse(max, strlen(max), &q, why, sizeof why), 0);
    char longjob[400] = "ENERGY ";
    for (int i = 0; i < JCD_JOB_MAX; i++) strcat(longjob, "a");
    strcat(longjob, " " UUID0 " 1");
    ASSERT_EQ(jcd_request_parse(longjob, strlen(longjob), &q, why, sizeof why), 0);
    static const char *const bad[] = {
        "ENERGY",
        "ENERGY j " UUID0,
        "ENERGY j " UUID0 " 1 2",
        "ENERGY j " UUID0 " -1",
        "ENERGY j " UUID0 " 1.5",
        "ENERGY j " UUID0 " 01",
        "ENERGY j " UUID0 " 10000000000001",
        "ENERGY j " UUID0 " 123456789012345678901",
        "ENERGY j GPU_x 1",
        "ENERGY %00 " UUID0 " 1",
        "ENERGY a%0Ab " UUID0 " 1",
        "ENERGY a%FFb " UUID0 " 1",
        "ENERGY a%2 " UUID0 " 1",
        "ENERGY  j " UUID0 " 1",
        "energy j " UUID0 " 1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (jcd_request_parse(bad[i], strlen(bad[i]), &q, why, sizeof why) == 0) JC_FAILF("'%s' was accepted", bad[i]);
    strcat(longjob, "x");
    memmove(longjob + 8, longjob + 7, strlen(longjob + 7) + 1); /* one more byte of job name */
    longjob[7] = 'b';
    ASSERT_TRUE(jcd_request_parse(longjob, strlen(longjob), &q, why, sizeof why) != 0);
}

TEST(job_table) {
    jcd_jobs t;
    ASSERT_EQ(jcd_jobs_init(&t), 0);
    unsigned long long total;
    char why[300];
    ASSERT_EQ(jcd_jobs_add(&t, "j1", 1001, "alice", UUID0, 0, 1000, 100.0, &total, why, sizeof why), 0);
    ASSERT_EQ(total, 1000);
    ASSERT_EQ(jcd_jobs_add(&t, "j1", 1001, "alice", UUID0, 0, 500, 101.0, &total, why, sizeof why), 0);
    ASSERT_EQ(total, 1500);
    ASSERT_EQ(jcd_jobs_add(&t, "j1", 1002, "bob", UUID0, 0, 7, 102.0, &total, why, sizeof why), 0);
    ASSERT_EQ(total, 7); /* another user's series */
    ASSERT_EQ(jcd_jobs_add(&t, "j 2\"x", 1001, "alice", "GPU-1", 1, 9, 50.0, &total, why, sizeof why), 0);
    ASSERT_EQ(t.n, 3);
    /* The file: a round trip, and a flipped byte anywhere is refused. */
    char *text;
    size_t len;
    ASSERT_EQ(jcd_jobs_format(t.v, t.n, &text, &len), 0);
    jcd_job back[8];
    int n = 0;
    ASSERT_EQ(jcd_jobs_parse(text, len, back, 8, &n, why, sizeof why), 0);
    ASSERT_EQ(n, 3);
    ASSERT_STR_EQ(back[2].job, "j 2\"x");
    ASSERT_EQ(back[0].mj, 1500);
    ASSERT_EQ(back[2].nvml, 1);
    ASSERT_NEAR(back[1].last, 102.0, 1e-9);
    for (size_t i = 0; i < len; i++) {
        text[i] ^= 0x04;
        if (jcd_jobs_parse(text, len, back, 8, &n, why, sizeof why) == 0) JC_FAILF("a flipped bit at %zu passed", i);
        text[i] ^= 0x04;
    }
    for (size_t cut = 0; cut < len; cut++)
        if (jcd_jobs_parse(text, cut, back, 8, &n, why, sizeof why) == 0) JC_FAILF("cut at %zu passed", cut);
    ASSERT_EQ(jcd_jobs_parse(text, len, back, 2, &n, why, sizeof why), -1); /* more than max */
    free(text);
    /* Expiry: the j 2 total was last reported at 50. */
    ASSERT_EQ(jcd_jobs_expire(&t, 50.0 + JCD_JOB_TTL_S + 1, JCD_JOB_TTL_S), 1);
    ASSERT_EQ(t.n, 2);
    /* One user cannot fill the table. */
    for (int i = 0; i < JCD_MAX_JOBS_PER_UID + 5; i++) {
        char job[32];
        snprintf(job, sizeof job, "many-%d", i);
        int r = jcd_jobs_add(&t, job, 2000, "mallory", UUID0, 0, 1, 200.0, &total, why, sizeof why);
        if (i < JCD_MAX_JOBS_PER_UID) ASSERT_EQ(r, 0);
        else ASSERT_EQ(r, -1);
    }
    ASSERT_CONTAINS(why, "too many");
    ASSERT_EQ(jcd_jobs_add(&t, "j3", 1001, "alice", UUID0, 0, 1, 200.0, &total, why, sizeof why), 0);
    jcd_jobs_free(&t);
}

/* counters.state: what a restart starts from. */
static size_t with_crc(char *buf, size_t cap, const char *body) {
    size_t n = (size_t)snprintf(buf, cap, "%s", body);
    n += (size_t)snprintf(buf + n, cap - n, "crc32 %08x\n", jcd_crc32(buf, n));
    return n;
}

TEST(counters_file) {
    char text[2048], why[300], boot[64];
    jcd_saved_counter v[4];
    int n = 0;
    size_t len = with_crc(text, sizeof text,
                          "joulecapd-counters 1\nboot_id 7fc4e70c-ebbd-49a6-84dd-b5272684d7f3\n"
                          "device key=cpu floor_j=9.5\n"
                          "device key=" UUID0 " floor_j=868.125 pair_j=800.5 pair_mj=124963689 "
                          "pair_boot_ns=3783492512010\n");
    ASSERT_EQ(jcd_counters_parse(text, len, boot, sizeof boot, v, 4, &n, why, sizeof why), 0);
    ASSERT_EQ(n, 2);
    ASSERT_STR_EQ(boot, "7fc4e70c-ebbd-49a6-84dd-b5272684d7f3");
    ASSERT_STR_EQ(v[0].key, "cpu");
    ASSERT_EQ(v[0].pair, 0);
    ASSERT_NEAR(v[1].floor_j, 868.125, 1e-12);
    ASSERT_EQ(v[1].pair, 1);
    ASSERT_NEAR(v[1].pair_j, 800.5, 1e-12);
    ASSERT_EQ(v[1].pair_mj, 124963689);
    ASSERT_EQ(v[1].pair_boot_ns, 3783492512010LL);
    ASSERT_CONTAINS(v[1].line, "pair_mj=124963689");
    for (size_t i = 0; i < len; i++) {
        text[i] ^= 0x01;
        if (jcd_counters_parse(text, len, boot, sizeof boot, v, 4, &n, why, sizeof why) == 0)
            JC_FAILF("a flipped bit at %zu passed", i);
        text[i] ^= 0x01;
    }
    for (size_t cut = 0; cut < len; cut++)
        if (jcd_counters_parse(text, cut, boot, sizeof boot, v, 4, &n, why, sizeof why) == 0)
            JC_FAILF("cut at %zu passed", cut);
    ASSERT_EQ(jcd_counters_parse(text, len, boot, sizeof boot, v, 1, &n, why, sizeof why), -1); /* max */
    static const char *const bad[] = {
        "joulecapd-counters 1\nboot_id unknown\ndevice key=cpu floor_j=1\ndevice key=cpu floor_j=2\n", /* twice */
        "joulecapd-counters 1\nboot_id unknown\ndevice key=cpu floor_j=-1\n",
        "joulecapd-counters 1\nboot_id unknown\ndevice key=cpu floor_j=nan\n",
        "joulecapd-counters 1\nboot_id unknown\ndevice key=x%20y floor_j=1\n",
        "joulecapd-counters 1\nboot_id unknown\ndevice key=cpu floor_j=1 pair_j=1\n",
        "joulecapd-counters 1\nboot_id a b\n",
        "joulecapd-counters 2\nboot_id unknown\n",
        "joulecapd-counters 1\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        len = with_crc(text, sizeof text, bad[i]);
        if (jcd_counters_parse(text, len, boot, sizeof boot, v, 4, &n, why, sizeof why) == 0)
            JC_FAILF("accepted: %s", bad[i]);
    }
    len = with_crc(text, sizeof text, "joulecapd-counters 1\nboot_id unknown\n");
    ASSERT_EQ(jcd_counters_parse(text, len, boot, sizeof boot, v, 4, &n, why, sizeof why), 0);
    ASSERT_EQ(n, 0);
    ASSERT_STR_EQ(boot, "");
}

/* ------------------------------------------------------------------------------------------------------
 * The daemon.
 * ---------------------------------------------------------------------------------------------------- */

/* Waits until the exported GPU energy has moved for a while (the counters lag JCD_ENERGY_LAG_S). */
static void wait_moving(void) {
    double t0 = now_s(), first = gpu_energy();
    while (now_s() - t0 < 20) {
        double v = gpu_energy();
        if (isfinite(v) && isfinite(first) && v > first + 600) return;
        if (!isfinite(first)) first = v;
        sleep_s(0.2);
    }
    show_log();
    JC_FAILF("the GPU energy did not move within 20 s");
}

TEST(scrape_gpu_and_leases) {
    if (!have_http()) return;
    setup();
    start_daemon(0);
    http_reply r;
    http("GET", "/metrics", NULL, &r);
    ASSERT_EQ(r.status, 200);
    ASSERT_CONTAINS(r.head, "Content-Type: text/plain; version=0.0.4; charset=utf-8");
    char *t = r.body;
    static const char *const names[] = {
        "joulecap_gpu_energy_joules_total", "joulecap_gpu_power_watts",       "joulecap_gpu_power_limit_watts",
        "joulecap_gpu_utilization_ratio",   "joulecap_gpu_temperature_celsius", "joulecap_cpu_energy_joules_total",
        "joulecap_device_up",               "joulecap_gpu_power_limit_lease_info",
        "joulecap_job_gpu_energy_joules_total"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char want[160];
        snprintf(want, sizeof want, "# HELP %s ", names[i]);
        ASSERT_CONTAINS(t, want);
        snprintf(want, sizeof want, "# TYPE %s ", names[i]);
        ASSERT_CONTAINS(t, want);
    }
    char host[256];
    ASSERT_EQ(gethostname(host, sizeof host), 0);
    char labels[600];
    snprintf(labels, sizeof labels, "{gpu=\"0\",UUID=\"%s\",pci_bus_id=\"00000000:19:00.0\",modelName=\"NVIDIA H100 "
             "80GB HBM3\",Hostname=\"%s\"}", UUID0, host);
    char want[800];
    snprintf(want, sizeof want, "\njoulecap_gpu_power_watts%s 300\n", labels);
    ASSERT_CONTAINS(t, want);
    snprintf(want, sizeof want, "\njoulecap_gpu_power_limit_watts%s 700\n", labels);
    ASSERT_CONTAINS(t, want);
    snprintf(want, sizeof want, "\njoulecap_gpu_utilization_ratio%s 1\n", labels);
    ASSERT_CONTAINS(t, want);
    ASSERT_CONTAINS(t, ",kind=\"gpu\",state=\"ok\"} 1\n");
    ASSERT_TRUE(isfinite(value_of(t, "joulecap_cpu_energy_joules_total", "source=\"")));
    ASSERT_TRUE(!strstr(t, "\njoulecap_gpu_power_limit_lease_info{"));
    free(r.body);

    /* The counter: 300 W. */
    wait_moving();
    double t1 = now_s(), e1 = gpu_energy();
    sleep_s(3);
    double t2 = now_s(), e2 = gpu_energy();
    double w = (e2 - e1) / (t2 - t1);
    fprintf(stderr, "  counter over %.2f s: %.1f W (fake GPU: 300 W)\n", t2 - t1, w);
    ASSERT_NEAR(w, 300, 300 * 0.03);

    /* A lease shows up, with its holder, and goes with its connection. */
    int fd = unix_connect();
    ASSERT_CONTAINS(ask(fd, "HELLO 2"), "OK proto=2 ");
    ASSERT_CONTAINS(ask(fd, "TAKE " UUID0), "OK saved_mw=700000");
    ASSERT_CONTAINS(ask(fd, "SET " UUID0 " 400000"), "OK limit_mw=400000");
    t = scrape(NULL);
    char uid[32];
    snprintf(uid, sizeof uid, "uid=\"%u\"", (unsigned)getuid());
    ASSERT_CONTAINS(t, "holder=\"lease\"");
    ASSERT_CONTAINS(t, uid);
    char pid[32];
    snprintf(pid, sizeof pid, "pid=\"%d\"", (int)getpid());
    ASSERT_CONTAINS(t, pid);
    free(t);
    /* The limit: refreshed from NVML at most every JCD_SAVE_S. */
    double t0 = now_s();
    for (;;) {
        t = scrape(NULL);
        double lim = value_of(t, "joulecap_gpu_power_limit_watts", "gpu=\"0\"");
        free(t);
        if (lim == 400) break;
        if (now_s() - t0 > JCD_SAVE_S + 3) JC_FAILF("the limit reads %g W, not 400 W", lim);
        sleep_s(0.1);
    }
    close(fd);
    t0 = now_s();
    for (;;) {
        t = scrape(NULL);
        int gone = !strstr(t, "\njoulecap_gpu_power_limit_lease_info{");
        free(t);
        if (gone) break;
        if (now_s() - t0 > 3) JC_FAILF("the lease is still exported after its connection closed");
        sleep_s(0.05);
    }
    ASSERT_EQ(stop_daemon(SIGTERM), 0);
}

TEST(promtool_check) {
    if (!have_http()) return;
    if (system("command -v promtool >/dev/null 2>&1") != 0) {
        if (require_prometheus()) JC_FAILF("JC_REQUIRE_PROMETHEUS=1 but promtool is not on PATH");
        fprintf(stderr, "  skipped: promtool not found (Debian: apt-get install prometheus)\n");
        return;
    }
    setup();
    start_daemon(0);
    /* A lease and a job total, so that every family has a sample. */
    int fd = unix_connect();
    ask(fd, "HELLO 2");
    ask(fd, "TAKE " UUID0);
    ASSERT_CONTAINS(ask(fd, "ENERGY job-1 " UUID0 " 2500"), "OK total_mj=2500");
    wait_moving();
    for (int om = 0; om < 2; om++) {
        char *t = scrape(om ? "application/openmetrics-text; version=1.0.0" : NULL);
        char path[500], out[500], cmd[1200];
        snprintf(path, sizeof path, "%s/metrics-%d.txt", dir, om);
        snprintf(out, sizeof out, "%s/promtool-%d.txt", dir, om);
        write_text(path, t);
        free(t);
        if (om) break; /* promtool checks the text format only; Prometheus itself parses OpenMetrics
                          (tests/python/test_exporter.py) */
        snprintf(cmd, sizeof cmd, "promtool check metrics < '%s' > '%s' 2>&1", path, out);
        int rc = system(cmd);
        char *o = read_file(out);
        fprintf(stderr, "  promtool check metrics: exit %d\n%s", WEXITSTATUS(rc), o ? o : "");
        /* Exit 3 is lint only (1 would be a parse error).  The one finding allowed is dcgm-exporter's label
         * name modelName, kept so that the two join. */
        ASSERT_TRUE(WIFEXITED(rc) && (WEXITSTATUS(rc) == 0 || WEXITSTATUS(rc) == 3));
        for (char *l = o ? strtok(o, "\n") : NULL; l; l = strtok(NULL, "\n"))
            if (!strstr(l, "label names should be written in 'snake_case' not 'camelCase'"))
                JC_FAILF("promtool: %s", l);
        free(o);
    }
    close(fd);
    ASSERT_EQ(stop_daemon(SIGTERM), 0);
}

TEST(http_details) {
    if (!have_http()) return;
    setup();
    start_daemon(0);
    http_reply r;
    http("GET", "/metrics", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5", &r);
    ASSERT_EQ(r.status, 200);
    ASSERT_CONTAINS(r.head, "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8");
    ASSERT_TRUE(r.len > 6 && strcmp(r.body + r.len - 6, "# EOF\n") == 0);
    free(r.body);
    http("GET", "/nope", NULL, &r);
    ASSERT_EQ(r.status, 404);
    free(r.body);
    http("POST", "/metrics", NULL, &r);
    ASSERT_EQ(r.status, 405);
    ASSERT_CONTAINS(r.head, "Allow: GET, HEAD");
    free(r.body);
    http("HEAD", "/metrics", NULL, &r);
    ASSERT_EQ(r.status, 200);
    ASSERT_EQ(r.len, 0);
    free(r.body);
    /* A second daemon on the same port: refused with the reason. */
    int first = port;
    char other_sock[sizeof sock_path], m[40];
    snprintf(other_sock, sizeof other_sock, "%s", sock_path);
    snprintf(sock_path, sizeof sock_path, "%s/run2/joulecapd.sock", dir);
    snprintf(m, sizeof m, "127.0.0.1:%d", first);
    pid_t p = spawn(m);
    int status;
    while (waitpid(p, &status, 0) < 0) ASSERT_TRUE(errno == EINTR);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    char *log = read_file(log_path);
    ASSERT_CONTAINS(log, "cannot listen: Address already in use (another program has this port");
    free(log);
    snprintf(sock_path, sizeof sock_path, "%s", other_sock);
    /* A malformed address: exit 2 before anything. */
    p = spawn("localhost");
    while (waitpid(p, &status, 0) < 0) ASSERT_TRUE(errno == EINTR);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2);
    ASSERT_EQ(stop_daemon(SIGTERM), 0);
}

/* Scrapes every 0.1 s for `seconds`; fails when a counter goes back; returns the highest values seen. */
static void watch(double seconds, double *gpu, double *cpu) {
    double t0 = now_s();
    while (now_s() - t0 < seconds) {
        char *t = scrape(NULL);
        double g = value_of(t, "joulecap_gpu_energy_joules_total", "gpu=\"0\"");
        double c = value_of(t, "joulecap_cpu_energy_joules_total", "source=\"");
        free(t);
        if (isfinite(g)) {
            if (g < *gpu) JC_FAILF("the GPU energy went back: %.6f after %.6f", g, *gpu);
            *gpu = g;
        }
        if (isfinite(c)) {
            if (c < *cpu) JC_FAILF("the CPU energy went back: %.6f after %.6f", c, *cpu);
            *cpu = c;
        }
        sleep_s(0.1);
    }
}

TEST(restarts) {
    if (!have_http()) return;
    setup();
    start_daemon(0);
    int p = port;
    wait_moving();
    double g = 0, c = 0;
    watch(1, &g, &c);
    double t1 = now_s(), e1 = gpu_energy();
    /* SIGTERM: saved at the stop; the time it was down comes from the GPU's own counter. */
    ASSERT_EQ(stop_daemon(SIGTERM), 0);
    sleep_s(1.5);
    start_daemon(p);
    watch(JCD_ENERGY_LAG_S + 1.5, &g, &c);
    double t2 = now_s(), e2 = gpu_energy();
    double w = (e2 - e1) / (t2 - t1);
    fprintf(stderr, "  across a SIGTERM restart (1.5 s down): %.1f W over %.1f s (fake GPU: 300 W)\n", w, t2 - t1);
    ASSERT_NEAR(w, 300, 300 * 0.03);
    /* SIGKILL: nothing saved at the end, and still nothing goes back. */
    watch(2, &g, &c);
    t1 = now_s();
    e1 = gpu_energy();
    ASSERT_EQ(kill(daemon_pid, SIGKILL), 0);
    int status;
    while (waitpid(daemon_pid, &status, 0) < 0) ASSERT_TRUE(errno == EINTR);
    daemon_pid = 0;
    sleep_s(1);
    start_daemon(p);
    watch(JCD_ENERGY_LAG_S + 1.5, &g, &c);
    t2 = now_s();
    e2 = gpu_energy();
    w = (e2 - e1) / (t2 - t1);
    fprintf(stderr, "  across a SIGKILL restart (1 s down): %.1f W over %.1f s\n", w, t2 - t1);
    ASSERT_NEAR(w, 300, 300 * 0.03);
    char *log = read_file(log_path);
    ASSERT_CONTAINS(log, "that the GPU's counter counted in the");
    free(log);
    ASSERT_EQ(stop_daemon(SIGTERM), 0);
    /* A damaged counters file: set aside, counters start again (and the log says so). */
    char path[500];
    snprintf(path, sizeof path, "%s/counters.state", state_dir);
    int fd = open(path, O_WRONLY | O_APPEND);
    ASSERT_TRUE(fd >= 0);
    ASSERT_EQ(write(fd, "x", 1), 1);
    close(fd);
    start_daemon(p);
    log = read_file(log_path);
    ASSERT_CONTAINS(log, "counters.state is damaged");
    free(log);
    ASSERT_EQ(stop_daemon(SIGTERM), 0);
}

TEST(job_energy) {
    if (!have_http()) return;
    setup();
    start_daemon(0);
    int p = port;
    int fd = unix_connect();
    ASSERT_CONTAINS(ask(fd, "HELLO 2"), "OK proto=2 ");
    ASSERT_STR_EQ(ask(fd, "ENERGY train%201 " UUID0 " 1500"), "OK total_mj=1500");
    ASSERT_STR_EQ(ask(fd, "ENERGY train%201 " UUID0 " 2500"), "OK total_mj=4000");
    ASSERT_CONTAINS(ask(fd, "ENERGY train%201 GPU-00000000-0000-0000-0000-000000000000 1"), "ERR NOT_FOUND ");
    close(fd);
    /* Protocol 1 knows no ENERGY: a protocol error ends the connection. */
    fd = unix_connect();
    ASSERT_CONTAINS(ask(fd, "HELLO 1"), "OK proto=1 ");
    ASSERT_CONTAINS(ask(fd, "ENERGY j " UUID0 " 1"), "ERR PROTOCOL text=ENERGY%20needs%20protocol%202");
    close(fd);
    char *t = scrape(NULL);
    ASSERT_NEAR(value_of(t, "joulecap_job_gpu_energy_joules_total", "job=\"train 1\""), 4.0, 1e-9);
    ASSERT_CONTAINS(t, "\njoulecap_job_gpu_energy_joules_total{job=\"train 1\",user=\"");
    ASSERT_CONTAINS(t, "\",gpu=\"0\",UUID=\"" UUID0 "\",Hostname=\"");
    free(t);

    /* The library: a window of this process, reported under $JOULECAP_JOB. */
    jc_context *ctx;
    jc_options o;
    jc_options_init(&o);
    o.flags = JC_NO_CPU;
    ASSERT_OK(jc_open(&ctx, &o));
    jc_window w;
    jc_window_result res;
    char name[200];
    ASSERT_STATUS(jc_job_name(name, sizeof name), JC_ERR_NOT_FOUND);
    setenv("TORCHELASTIC_RUN_ID", "none", 1);
    ASSERT_STATUS(jc_job_name(name, sizeof name), JC_ERR_NOT_FOUND);
    setenv("TORCHELASTIC_RUN_ID", "elastic-7", 1);
    ASSERT_OK(jc_job_name(name, sizeof name));
    ASSERT_STR_EQ(name, "elastic-7");
    setenv("SLURM_JOB_ID", "4242", 1);
    ASSERT_OK(jc_job_name(name, sizeof name));
    ASSERT_STR_EQ(name, "4242");
    setenv("JOULECAP_JOB", "my run", 1);
    ASSERT_OK(jc_job_name(name, sizeof name));
    ASSERT_STR_EQ(name, "my run");
    ASSERT_OK(jc_window_start(ctx, "w", &w));
    sleep_s(1);
    ASSERT_OK(jc_window_stop(ctx, w));
    ASSERT_OK(jc_window_result_get(ctx, w, 5, &res));
    ASSERT_NEAR(res.energy_j[1], 300 * res.elapsed_s, 300 * 0.12);
    ASSERT_OK(jc_job_report(ctx, NULL, &res));
    ASSERT_OK(jc_job_report(ctx, "other", &res));
    double expect = res.energy_j[1];
    t = scrape(NULL);
    ASSERT_NEAR(value_of(t, "joulecap_job_gpu_energy_joules_total", "job=\"my run\""), expect, 0.001);
    ASSERT_NEAR(value_of(t, "joulecap_job_gpu_energy_joules_total", "job=\"other\""), expect, 0.001);
    free(t);
    /* Kept across a restart. */
    ASSERT_EQ(stop_daemon(SIGTERM), 0);
    ASSERT_STATUS(jc_job_report(ctx, NULL, &res), JC_ERR_UNAVAILABLE); /* its socket is gone with it */
    start_daemon(p);
    ASSERT_OK(jc_job_report(ctx, NULL, &res));
    t = scrape(NULL);
    ASSERT_NEAR(value_of(t, "joulecap_job_gpu_energy_joules_total", "job=\"my run\""), 2 * expect, 0.002);
    ASSERT_NEAR(value_of(t, "joulecap_job_gpu_energy_joules_total", "job=\"train 1\""), 4.0, 1e-9);
    free(t);
    ASSERT_EQ(stop_daemon(SIGTERM), 0);
    /* Without --metrics the daemon keeps no job energy, and says so. */
    daemon_pid = spawn(NULL);
    double t0 = now_s();
    struct stat sb;
    while (stat(sock_path, &sb) != 0 && now_s() - t0 < 10) sleep_s(0.01);
    sleep_s(0.1);
    ASSERT_STATUS(jc_job_report(ctx, NULL, &res), JC_ERR_NOT_SUPPORTED);
    ASSERT_CONTAINS(jc_last_detail(), "runs without --metrics");
    ASSERT_EQ(stop_daemon(SIGTERM), 0);
    jc_close(ctx);
    unsetenv("JOULECAP_JOB");
    unsetenv("SLURM_JOB_ID");
    unsetenv("TORCHELASTIC_RUN_ID");
}

TEST(without_libmicrohttpd) {
    char why[400];
    if (jcd_http_available(why, sizeof why)) return; /* the other cases ran */
    setup();
    pid_t p = spawn("127.0.0.1:0");
    int status;
    while (waitpid(p, &status, 0) < 0) ASSERT_TRUE(errno == EINTR);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2);
    char *log = read_file(log_path);
    ASSERT_CONTAINS(log, "built without libmicrohttpd");
    ASSERT_CONTAINS(log, "libmicrohttpd-dev");
    free(log);
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    atexit(kill_daemon_at_exit);
    static const jc_test_case tests[] = {
        TEST_ENTRY(format_text),     TEST_ENTRY(negotiation),           TEST_ENTRY(addresses),
        TEST_ENTRY(energy_request),  TEST_ENTRY(job_table),             TEST_ENTRY(counters_file),
        TEST_ENTRY(scrape_gpu_and_leases), TEST_ENTRY(promtool_check),  TEST_ENTRY(http_details),
        TEST_ENTRY(restarts),        TEST_ENTRY(job_energy),            TEST_ENTRY(without_libmicrohttpd),
    };
    return jc_test_main(argc, argv, tests, sizeof tests / sizeof tests[0]);
}
