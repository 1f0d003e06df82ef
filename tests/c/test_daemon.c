/* joulecapd on the fake NVML: leases that end with their client however it ends (SIGKILL, its process group
 * killed, the owner killed while a forked child keeps the socket), the daemon killed and restarted (limits put
 * back from its journal), SIGTERM, two clients racing for one GPU, users the config refuses or allows (as
 * root: a child drops to nobody / daemon), malformed and oversized messages, persistent caps, a set that does
 * not take, damaged journals, --check-config.  Every case reads the fake GPU's limit itself.
 *
 * The daemon runs as a plain child process (its own session) on a socket in a private temporary directory;
 * the test process, the daemon and the CLI share one fake GPU through JOULECAP_FAKE_NVML_STATE.  Times to
 * restore are printed at the end: from the kill (or the bad message) to the limit read back by this process;
 * for a daemon restart, from the start of the new daemon. */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
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
#include "sources/nvml_api.h"

static char dir[320], sock_path[400], state_dir[400], config_path[400], log_path[400], direct_dir[400];
static pid_t daemon_pid;

static void sleep_ms(double ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)((ms - (double)(time_t)(ms / 1000) * 1000) * 1e6)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ------------------------------------------------------------------------------------------------------
 * The fake GPU, read directly (what nvidia-smi would show).
 * ---------------------------------------------------------------------------------------------------- */

static struct {
    void *lib;
    nvmlReturn_t (*init)(void);
    nvmlReturn_t (*shutdown)(void);
    nvmlReturn_t (*handle)(unsigned, nvmlDevice_t *);
    nvmlReturn_t (*get)(nvmlDevice_t, unsigned *);
    nvmlReturn_t (*set)(nvmlDevice_t, unsigned);
} fk;

/* 0, or -1 when the fake refuses the scenario. */
static int fake_open(void) {
    fk.lib = dlopen(env_or_die("JC_FAKE_NVML"), RTLD_NOW | RTLD_LOCAL);
    if (!fk.lib) JC_FAILF("dlopen fake NVML: %s", dlerror());
    *(void **)&fk.init = dlsym(fk.lib, "nvmlInit_v2");
    *(void **)&fk.shutdown = dlsym(fk.lib, "nvmlShutdown");
    *(void **)&fk.handle = dlsym(fk.lib, "nvmlDeviceGetHandleByIndex_v2");
    *(void **)&fk.get = dlsym(fk.lib, "nvmlDeviceGetPowerManagementLimit");
    *(void **)&fk.set = dlsym(fk.lib, "nvmlDeviceSetPowerManagementLimit");
    ASSERT_TRUE(fk.init && fk.shutdown && fk.handle && fk.get && fk.set);
    if (fk.init() != NVML_SUCCESS) {
        dlclose(fk.lib);
        fk.lib = NULL;
        return -1;
    }
    return 0;
}

static void fake_close(void) {
    if (!fk.lib) return;
    fk.shutdown();
    dlclose(fk.lib);
    fk.lib = NULL;
}

static unsigned limit_of(unsigned gpu) {
    nvmlDevice_t d;
    unsigned mw = 0;
    ASSERT_EQ(fk.handle(gpu, &d), NVML_SUCCESS);
    ASSERT_EQ(fk.get(d, &mw), NVML_SUCCESS);
    return mw;
}

static unsigned limit_mw(void) { return limit_of(0); }

static void set_limit(unsigned gpu, unsigned mw) {
    nvmlDevice_t d;
    ASSERT_EQ(fk.handle(gpu, &d), NVML_SUCCESS);
    ASSERT_EQ(fk.set(d, mw), NVML_SUCCESS);
}

/* Seconds from t0 until GPU gpu's limit reads want (polled every 0.2 ms), or -1 after timeout_s. */
static double wait_limit_of(unsigned gpu, unsigned want, double t0, double timeout_s) {
    for (;;) {
        if (limit_of(gpu) == want) return now_s() - t0;
        if (now_s() - t0 > timeout_s) return -1;
        sleep_ms(0.2);
    }
}

/* ------------------------------------------------------------------------------------------------------
 * Times to restore, reported at the end.
 * ---------------------------------------------------------------------------------------------------- */

static struct {
    const char *what;
    double ms;
} restores[64];
static int nrestores;

static void restored(const char *what, double s) {
    if (s < 0) JC_FAILF("%s: limit not restored within the timeout (now %u mW)", what, limit_mw());
    fprintf(stderr, "  %s: limit back after %.2f ms\n", what, s * 1e3);
    if (nrestores < 64) {
        restores[nrestores].what = what;
        restores[nrestores++].ms = s * 1e3;
    }
}

/* ------------------------------------------------------------------------------------------------------
 * Per-test directory, daemon.
 * ---------------------------------------------------------------------------------------------------- */

static void write_text(const char *path, const char *text, mode_t mode) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    ASSERT_TRUE(fd >= 0);
    ASSERT_EQ(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    chmod(path, mode);
}

/* A fresh directory (mode 0755, so that a child running as nobody reaches the socket), fake GPU, config. */
static void setup_scenario_path(const char *scn) {
    static int seq;
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "%s/joulecap-test-daemon-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        ASSERT_TRUE(mkdtemp(tmpdir) != NULL);
        ASSERT_EQ(chmod(tmpdir, 0755), 0);
        main_pid = getpid();
        atexit(remove_tmpdir);
    }
    seq++;
    snprintf(dir, sizeof dir, "%s/t%d", tmpdir, seq);
    ASSERT_EQ(mkdir(dir, 0755), 0);
    /* run/ is left to the daemon: it must create it so that any user reaches the socket. */
    snprintf(sock_path, sizeof sock_path, "%s/run/joulecapd.sock", dir);
    snprintf(state_dir, sizeof state_dir, "%s/state", dir);
    snprintf(config_path, sizeof config_path, "%s/joulecapd.conf", dir);
    snprintf(log_path, sizeof log_path, "%s/joulecapd.log", dir);
    snprintf(direct_dir, sizeof direct_dir, "%s/direct", dir);
    write_text(config_path, "# the tests' config\nallow_user daemon\n", 0644);
    char buf[512];
    setenv("JOULECAP_NVML_LIBRARY", env_or_die("JC_FAKE_NVML"), 1);
    setenv("JOULECAP_FAKE_NVML_SCENARIO", scn, 1);
    snprintf(buf, sizeof buf, "%s/fake.state", dir);
    setenv("JOULECAP_FAKE_NVML_STATE", buf, 1);
    setenv("JOULECAP_DAEMON_SOCKET", sock_path, 1);
    setenv("JOULECAP_STATE_DIR", direct_dir, 1); /* the direct path must stay unused: checked empty */
    setenv("JOULECAP_CLI", env_or_die("JC_CLI"), 1);
    unsetenv("CUDA_VISIBLE_DEVICES");
    unsetenv("CUDA_DEVICE_ORDER");
}

static void setup(const char *scenario) {
    char scn[512];
    snprintf(scn, sizeof scn, "%s/scenarios/%s.scn", env_or_die("JC_TEST_DATA"), scenario);
    setup_scenario_path(scn);
    ASSERT_EQ(fake_open(), 0);
}

static int connect_raw(void) { return daemon_connect(sock_path); }

static void show_log(void) { daemon_show_log(log_path); }

/* Starts joulecapd in its own session and waits until it accepts connections. */
static void start_daemon(void) {
    daemon_pid = daemon_spawn(log_path, sock_path, state_dir, config_path, NULL);
    daemon_wait_accepting(&daemon_pid, log_path, sock_path);
}

/* Signals the daemon and reaps it; returns its wait status. */
static int stop_daemon(int sig) {
    if (daemon_pid <= 0) return 0;
    int status = child_kill(daemon_pid, sig);
    daemon_pid = 0;
    return status;
}

static int count_files(const char *path, const char *suffix) {
    DIR *d = opendir(path);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name), s = strlen(suffix);
        if (e->d_name[0] != '.' && l > s && strcmp(e->d_name + l - s, suffix) == 0) n++;
    }
    closedir(d);
    return n;
}

static int journals(void) { return count_files(state_dir, ".journal"); }

/* The journal goes after the limit is back (never before): the count, once it reaches want or after 2 s. */
static int journals_settle(int want) {
    double t0 = now_s();
    while (journals() != want && now_s() - t0 < 2) sleep_ms(1);
    return journals();
}

/* The end of every test: the daemon stopped (SIGTERM, must exit 0), the direct path unused. */
static void teardown(void) {
    if (daemon_pid > 0) {
        int st = stop_daemon(SIGTERM);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            show_log();
            JC_FAILF("joulecapd did not stop cleanly on SIGTERM (status 0x%x)", st);
        }
    }
    ASSERT_EQ(count_files(direct_dir, ".journal"), 0);
    fake_close();
}

static char *journal_text(const char *uuid) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s.journal", state_dir, uuid);
    return read_file(path);
}

#define GPU0 "GPU-8f3c2a1e-5b7d-4c9e-a0f1-2d3e4b5c6a7f"
#define TWO0 "GPU-11111111-2222-4333-8444-555555555555"
#define TWO1 "GPU-aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"

static jc_cap_session *open_gpus(const char *sel) {
    jc_cap_options o;
    jc_cap_options_init(&o);
    o.gpus = sel;
    jc_cap_session *s = NULL;
    ASSERT_OK(jc_cap_session_open(&o, &s));
    return s;
}

/* ------------------------------------------------------------------------------------------------------
 * A child holding a lease, and how it dies.
 * ---------------------------------------------------------------------------------------------------- */

typedef struct child {
    pid_t pid;
    pid_t grandchild; /* a forked copy holding the connection too (0: none) */
} child;

enum { PLAIN = 0, OWN_GROUP = 1, FORK_HOLDER = 2 };

/* A child opens a session on GPU 0 (as uid when uid >= 0), caps it at mw and waits to be killed. */
static child child_holding(int flags, int uid, unsigned mw) {
    int fd;
    pid_t pid = child_fork(&fd);
    if (pid == 0) {
        if (flags & OWN_GROUP) setpgid(0, 0);
        if (uid >= 0 && (setgroups(0, NULL) != 0 || setgid((gid_t)uid) != 0 || setuid((uid_t)uid) != 0)) _exit(95);
        jc_cap_options o;
        jc_cap_options_init(&o);
        o.gpus = "0";
        jc_cap_session *s = NULL;
        pid_t gc = 0;
        if (jc_cap_session_open(&o, &s) != JC_OK || jc_cap_session_set(s, 0, mw / 1000.0) != JC_OK) {
            fprintf(stderr, "child: %s\n", jc_last_detail());
            gc = -1;
        } else if (flags & FORK_HOLDER) {
            gc = fork(); /* inherits the connection (like a DataLoader worker) */
            if (gc == 0) {
                for (;;) pause();
            }
        }
        child_report(fd, &gc, sizeof gc);
        for (;;) pause();
    }
    child c = {pid, 0};
    child_read_report(fd, &c.grandchild, sizeof c.grandchild);
    ASSERT_TRUE(c.grandchild >= 0);
    return c;
}

static void reap(pid_t pid) { child_reap(pid); }

/* ------------------------------------------------------------------------------------------------------
 * Tests.
 * ---------------------------------------------------------------------------------------------------- */

TEST(session_through_daemon) {
    setup("h100-constant-300w");
    ASSERT_EQ(jc_cap_route(NULL, 0), 0); /* no socket yet: direct */
    start_daemon();
    char via[600];
    ASSERT_EQ(jc_cap_route(via, sizeof via), 1);
    ASSERT_CONTAINS(via, "joulecapd (");
    ASSERT_CONTAINS(via, sock_path);
    set_limit(0, 500000);
    jc_cap_session *s = open_gpus("0");
    ASSERT_EQ(jc_cap_session_gpu_count(s), 1);
    ASSERT_EQ(limit_mw(), 500000); /* taking a lease changes nothing ... */
    ASSERT_EQ(journals(), 1);      /* ... but the saved limit is on disk */
    ASSERT_OK(jc_cap_session_set(s, 0, 300));
    ASSERT_EQ(limit_mw(), 300000);
    jc_cap_info info;
    ASSERT_OK(jc_cap_session_info_get(s, 0, &info));
    ASSERT_EQ(info.manager, JC_CAP_MANAGER_SESSION);
    ASSERT_EQ(info.owner_pid, getpid());
    ASSERT_STR_EQ(info.owner_user, "root");
    ASSERT_NEAR(info.saved_limit_w, 500, 1e-9);
    ASSERT_NEAR(info.set_limit_w, 300, 1e-9);
    ASSERT_TRUE(strstr(info.owner_command, "test_daemon") != NULL);
    ASSERT_TRUE(info.journal_created > 1e9);
    ASSERT_CONTAINS(info.journal_path, state_dir);
    char *j = journal_text(GPU0);
    ASSERT_TRUE(j != NULL);
    ASSERT_CONTAINS(j, "lease original_mw=500000 set_mw=300000");
    ASSERT_CONTAINS(j, "crc32 ");
    free(j);
    /* Errors name the daemon; nothing changes. */
    ASSERT_STATUS(jc_cap_session_set(s, 0, 9999), JC_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(jc_last_detail(), "200 W to 700 W");
    ASSERT_STATUS(jc_cap_session_set(s, 3, 300), JC_ERR_NOT_FOUND);
    jc_cap_session *s2 = NULL;
    jc_cap_options o;
    jc_cap_options_init(&o);
    o.gpus = "0";
    ASSERT_STATUS(jc_cap_session_open(&o, &s2), JC_ERR_BUSY);
    ASSERT_CONTAINS(jc_last_detail(), "joulecapd (");
    ASSERT_STATUS(jc_cap_set_persistent("0", 400, NULL, NULL, 0), JC_ERR_BUSY);
    ASSERT_STATUS(jc_cap_reset("0", NULL, NULL, NULL, NULL, 0), JC_ERR_BUSY);
    ASSERT_EQ(limit_mw(), 300000);
    /* reset and restore inside the session */
    jc_cap_reset_kind did = JC_CAP_RESET_NONE;
    ASSERT_OK(jc_cap_session_reset(s, 0, &did));
    ASSERT_EQ(did, JC_CAP_RESET_SAVED);
    ASSERT_EQ(limit_mw(), 500000);
    ASSERT_OK(jc_cap_session_reset(s, 0, &did));
    ASSERT_EQ(did, JC_CAP_RESET_DEFAULT);
    ASSERT_EQ(limit_mw(), 700000);
    ASSERT_OK(jc_cap_session_restore(s));
    ASSERT_EQ(limit_mw(), 500000);
    ASSERT_OK(jc_cap_session_set(s, -1, 287.5));
    ASSERT_EQ(limit_mw(), 287500);
    ASSERT_OK(jc_cap_session_close(s));
    ASSERT_EQ(limit_mw(), 500000);
    ASSERT_EQ(journals_settle(0), 0);
    ASSERT_OK(jc_cap_info_get("0", NULL, &info));
    ASSERT_EQ(info.manager, JC_CAP_MANAGER_NONE);
    teardown();
}

TEST(client_sigkill_restored) {
    setup("h100-constant-300w");
    start_daemon();
    set_limit(0, 500000);
    child c = child_holding(PLAIN, -1, 250000);
    ASSERT_EQ(limit_mw(), 250000);
    double t0 = now_s();
    ASSERT_EQ(kill(c.pid, SIGKILL), 0);
    restored("client SIGKILL", wait_limit_of(0, 500000, t0, 2));
    reap(c.pid);
    ASSERT_EQ(journals_settle(0), 0);
    teardown();
}

TEST(client_process_group_killed_restored) {
    setup("h100-constant-300w");
    start_daemon();
    set_limit(0, 500000);
    child c = child_holding(OWN_GROUP | FORK_HOLDER, -1, 250000);
    ASSERT_TRUE(c.grandchild > 0);
    ASSERT_EQ(getpgid(c.grandchild), c.pid);
    ASSERT_TRUE(getpgid(daemon_pid) != c.pid); /* the daemon is in its own group and session */
    double t0 = now_s();
    ASSERT_EQ(kill(-c.pid, SIGKILL), 0); /* the whole group, as a job scheduler kills a job */
    restored("client's process group SIGKILL", wait_limit_of(0, 500000, t0, 2));
    reap(c.pid);
    ASSERT_EQ(journals_settle(0), 0);
    teardown();
}

TEST(owner_killed_while_forked_child_keeps_socket) {
    setup("h100-constant-300w");
    start_daemon();
    set_limit(0, 500000);
    child c = child_holding(FORK_HOLDER, -1, 250000);
    ASSERT_TRUE(c.grandchild > 0);
    double t0 = now_s();
    ASSERT_EQ(kill(c.pid, SIGKILL), 0); /* the owner only: its forked child still holds the connection */
    restored("owner SIGKILL, forked child alive", wait_limit_of(0, 500000, t0, 2));
    reap(c.pid);
    kill(c.grandchild, SIGKILL);
    sleep_ms(20);
    ASSERT_EQ(limit_mw(), 500000);
    teardown();
}

TEST(daemon_sigkill_then_restart_restores_from_journal) {
    setup("h100-constant-300w");
    start_daemon();
    set_limit(0, 500000);
    jc_cap_session *s = open_gpus("0");
    ASSERT_OK(jc_cap_session_set(s, 0, 250));
    int st = stop_daemon(SIGKILL);
    ASSERT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    sleep_ms(50);
    ASSERT_EQ(limit_mw(), 250000); /* nobody put it back: the journal knows */
    char *j = journal_text(GPU0);
    ASSERT_TRUE(j != NULL);
    ASSERT_CONTAINS(j, "lease original_mw=500000");
    free(j);
    /* While the socket is left without a daemon, calls fail clearly instead of bypassing it. */
    jc_cap_info info;
    ASSERT_STATUS(jc_cap_info_get("0", NULL, &info), JC_ERR_UNAVAILABLE);
    ASSERT_CONTAINS(jc_last_detail(), "not answering");
    double t0 = now_s();
    start_daemon();
    restored("daemon SIGKILL, then restart (from the restart)", wait_limit_of(0, 500000, t0, 5));
    ASSERT_EQ(journals_settle(0), 0);
    /* The old connection died with the daemon: the session says so and changes nothing. */
    ASSERT_STATUS(jc_cap_session_set(s, 0, 300), JC_ERR_UNAVAILABLE);
    ASSERT_CONTAINS(jc_last_detail(), "joulecapd");
    ASSERT_EQ(limit_mw(), 500000);
    ASSERT_OK(jc_cap_session_close(s));
    ASSERT_EQ(limit_mw(), 500000);
    teardown();
}

TEST(daemon_sigterm_restores_every_lease) {
    setup("two-gpus");
    start_daemon();
    jc_cap_session *s = open_gpus("all");
    ASSERT_EQ(jc_cap_session_gpu_count(s), 2);
    ASSERT_OK(jc_cap_session_set(s, 0, 250));
    ASSERT_OK(jc_cap_session_set(s, 1, 260));
    ASSERT_EQ(limit_of(0), 250000);
    ASSERT_EQ(limit_of(1), 260000);
    double t0 = now_s();
    ASSERT_EQ(kill(daemon_pid, SIGTERM), 0);
    double a = wait_limit_of(0, 700000, t0, 5), b = wait_limit_of(1, 700000, t0, 5);
    restored("daemon SIGTERM (GPU 0)", a);
    restored("daemon SIGTERM (GPU 1)", b);
    int st = 0;
    while (waitpid(daemon_pid, &st, 0) < 0) ASSERT_TRUE(errno == EINTR);
    daemon_pid = 0;
    ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    struct stat sb;
    ASSERT_TRUE(lstat(sock_path, &sb) != 0); /* the socket is gone: the library is back to direct */
    ASSERT_EQ(jc_cap_route(NULL, 0), 0);
    ASSERT_EQ(journals_settle(0), 0);
    ASSERT_OK(jc_cap_session_close(s)); /* its leases ended with the daemon */
    teardown();
}

typedef struct race_result {
    int pid, status;
    char detail[480];
} race_result;

TEST(two_clients_race_for_one_gpu) {
    setup("h100-constant-300w");
    start_daemon();
    set_limit(0, 500000);
    enum { N = 8 };
    int go[2], res[2];
    ASSERT_EQ(pipe(go), 0);
    ASSERT_EQ(pipe(res), 0);
    pid_t pids[N];
    fflush(NULL);
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        ASSERT_TRUE(pids[i] >= 0);
        if (pids[i] == 0) {
            close(go[1]);
            close(res[0]);
            char b;
            if (read(go[0], &b, 1) < 0) _exit(96); /* EOF: everyone starts at once */
            jc_cap_options o;
            jc_cap_options_init(&o);
            o.gpus = "0";
            jc_cap_session *s = NULL;
            race_result r;
            memset(&r, 0, sizeof r);
            r.pid = (int)getpid();
            r.status = jc_cap_session_open(&o, &s);
            if (r.status == JC_OK) r.status = jc_cap_session_set(s, 0, 200 + i);
            snprintf(r.detail, sizeof r.detail, "%s", jc_last_detail());
            if (write(res[1], &r, sizeof r) != sizeof r) _exit(97);
            for (;;) pause();
        }
    }
    close(go[0]);
    close(res[1]);
    close(go[1]);
    int winners = 0, winner = 0;
    for (int i = 0; i < N; i++) {
        race_result r;
        ASSERT_EQ(read(res[0], &r, sizeof r), (ssize_t)sizeof r);
        if (r.status == JC_OK) {
            winners++;
            winner = r.pid;
        } else {
            if (r.status != JC_ERR_BUSY) JC_FAILF("a loser got %d: %s", r.status, r.detail);
            ASSERT_CONTAINS(r.detail, "is leased by user root");
            ASSERT_CONTAINS(r.detail, "joulecapd (");
        }
    }
    close(res[0]);
    ASSERT_EQ(winners, 1);
    int wi = -1;
    for (int i = 0; i < N; i++)
        if (pids[i] == winner) wi = i;
    ASSERT_TRUE(wi >= 0);
    ASSERT_EQ(limit_mw(), (unsigned)(200 + wi) * 1000u);
    jc_cap_info info;
    ASSERT_OK(jc_cap_info_get("0", NULL, &info));
    ASSERT_EQ(info.owner_pid, winner);
    double t0 = now_s();
    for (int i = 0; i < N; i++) kill(pids[i], SIGKILL);
    restored("race: every client SIGKILL", wait_limit_of(0, 500000, t0, 2));
    for (int i = 0; i < N; i++) reap(pids[i]);
    teardown();
}

/* Runs fn in a child as uid (primary group gid, no supplementary groups); its text comes back. */
typedef void (*as_user_fn)(char *out, size_t len);

static void as_user(unsigned uid, unsigned gid, as_user_fn fn, char *out, size_t len) {
    int fd;
    pid_t pid = child_fork(&fd);
    if (pid == 0) {
        char buf[2048] = "";
        if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
            snprintf(buf, sizeof buf, "cannot drop to uid %u: %s", uid, strerror(errno));
        else
            fn(buf, sizeof buf);
        child_report(fd, buf, strlen(buf) + 1);
        _exit(0);
    }
    child_read_text(fd, out, len);
    reap(pid);
}

static void try_to_cap(char *out, size_t len) {
    jc_cap_options o;
    jc_cap_options_init(&o);
    o.gpus = "0";
    jc_cap_session *s = NULL;
    jc_status st = jc_cap_session_open(&o, &s);
    char detail[1100];
    snprintf(detail, sizeof detail, "%s", jc_last_detail());
    jc_cap_info info;
    jc_status rd = jc_cap_info_get("0", NULL, &info);
    jc_status ps = jc_cap_set_persistent("0", 300, NULL, NULL, 0);
    snprintf(out, len, "%d %d %.0f %d %s", (int)st, (int)rd, rd == JC_OK ? info.limit_w : -1, (int)ps, detail);
    if (s) jc_cap_session_close(s);
}

TEST(user_not_allowed_is_refused) {
    if (geteuid() != 0) {
        fprintf(stderr, "  SKIPPED: needs root (to run a child as nobody); CI runs the tests as root\n");
        return;
    }
    setup("h100-constant-300w");
    start_daemon();
    set_limit(0, 500000);
    char out[2048];
    as_user(65534, 65534, try_to_cap, out, sizeof out);
    fprintf(stderr, "  nobody: %s\n", out);
    int st = -1, rd = -1, ps = -1;
    double lim = 0;
    ASSERT_EQ(sscanf(out, "%d %d %lf %d", &st, &rd, &lim, &ps), 4);
    ASSERT_EQ(st, JC_ERR_NO_PERMISSION);
    ASSERT_EQ(rd, JC_OK); /* reading is for everyone */
    ASSERT_NEAR(lim, 500, 1e-9);
    ASSERT_EQ(ps, JC_ERR_NO_PERMISSION);
    ASSERT_CONTAINS(out, "user nobody (uid 65534) may not change GPU power limits");
    ASSERT_CONTAINS(out, "allow_user nobody");
    ASSERT_CONTAINS(out, config_path);
    ASSERT_CONTAINS(out, "reload");
    ASSERT_EQ(limit_mw(), 500000);
    ASSERT_EQ(journals_settle(0), 0);
    /* The fix the message gives: add the rule, reload (SIGHUP). */
    write_text(config_path, "allow_user daemon\nallow_user nobody\n", 0644);
    ASSERT_EQ(kill(daemon_pid, SIGHUP), 0);
    double t0 = now_s();
    do {
        sleep_ms(5);
        as_user(65534, 65534, try_to_cap, out, sizeof out);
    } while (atoi(out) != JC_OK && now_s() - t0 < 5);
    ASSERT_EQ(atoi(out), JC_OK);
    /* A config with an error is not loaded: the old one stays. */
    write_text(config_path, "allow_user daemon\nallow_usr nobody\n", 0644);
    ASSERT_EQ(kill(daemon_pid, SIGHUP), 0);
    sleep_ms(100);
    as_user(65534, 65534, try_to_cap, out, sizeof out);
    ASSERT_EQ(atoi(out), JC_OK);
    char *log = read_file(log_path);
    ASSERT_CONTAINS(log, "config not reloaded, the old one stays");
    free(log);
    ASSERT_EQ(limit_mw(), 500000);
    teardown();
}

static void cap_and_report(char *out, size_t len) {
    jc_cap_options o;
    jc_cap_options_init(&o);
    o.gpus = "0";
    jc_cap_session *s = NULL;
    jc_status st = jc_cap_session_open(&o, &s);
    if (st == JC_OK) st = jc_cap_session_set(s, 0, 300);
    jc_cap_info info;
    memset(&info, 0, sizeof info);
    if (st == JC_OK) st = jc_cap_info_get("0", NULL, &info);
    snprintf(out, len, "%d %s %u %s", (int)st, info.owner_user[0] ? info.owner_user : "-", info.owner_uid,
             st == JC_OK ? "" : jc_last_detail());
    if (s) jc_cap_session_close(s);
}

TEST(allowed_user_caps_without_root) {
    struct passwd *pw = getpwnam("daemon");
    if (geteuid() != 0 || !pw) {
        fprintf(stderr, "  SKIPPED: needs root and a user 'daemon'\n");
        return;
    }
    setup("h100-constant-300w");
    start_daemon();
    set_limit(0, 500000);
    char out[2048];
    as_user((unsigned)pw->pw_uid, (unsigned)pw->pw_gid, cap_and_report, out, sizeof out);
    fprintf(stderr, "  daemon: %s\n", out);
    char user[64];
    unsigned uid = 0;
    int st = -1;
    ASSERT_EQ(sscanf(out, "%d %63s %u", &st, user, &uid), 3);
    ASSERT_EQ(st, JC_OK);
    ASSERT_STR_EQ(user, "daemon");
    ASSERT_EQ(uid, pw->pw_uid);
    ASSERT_EQ(limit_mw(), 500000); /* its session closed: put back */
    /* Its lease ends when it dies too. */
    child c = child_holding(PLAIN, (int)pw->pw_uid, 260000);
    ASSERT_EQ(limit_mw(), 260000);
    jc_cap_info info;
    ASSERT_OK(jc_cap_info_get("0", NULL, &info));
    ASSERT_STR_EQ(info.owner_user, "daemon");
    double t0 = now_s();
    ASSERT_EQ(kill(c.pid, SIGKILL), 0);
    restored("non-root client SIGKILL", wait_limit_of(0, 500000, t0, 2));
    reap(c.pid);
    teardown();
}

/* ------------------------------------------------------------------------------------------------------
 * The wire, by hand.
 * ---------------------------------------------------------------------------------------------------- */

typedef struct raw {
    int fd;
    char buf[65536];
    size_t used;
} raw;

static void raw_open(raw *r) {
    memset(r, 0, sizeof *r);
    r->fd = connect_raw();
    ASSERT_TRUE(r->fd >= 0);
}

static void raw_send(raw *r, const char *data, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t w = send(r->fd, data + done, n - done, MSG_NOSIGNAL);
        if (w <= 0) return; /* closed by the daemon: the reads tell */
        done += (size_t)w;
    }
}

static void raw_says(raw *r, const char *text) { raw_send(r, text, strlen(text)); }

/* The next line (static buffer), or NULL on EOF or after 5 s. */
static const char *raw_line(raw *r) {
    static char line[65536];
    double t0 = now_s();
    for (;;) {
        char *nl = memchr(r->buf, '\n', r->used);
        if (nl) {
            size_t n = (size_t)(nl - r->buf);
            memcpy(line, r->buf, n);
            line[n] = '\0';
            r->used -= n + 1;
            memmove(r->buf, nl + 1, r->used);
            return line;
        }
        struct pollfd p = {r->fd, POLLIN, 0};
        if (poll(&p, 1, 100) > 0) {
            ssize_t got = recv(r->fd, r->buf + r->used, sizeof r->buf - r->used, 0);
            if (got <= 0) return NULL;
            r->used += (size_t)got;
        }
        if (now_s() - t0 > 5) return NULL;
    }
}

static void raw_expect(raw *r, const char *prefix) {
    const char *l = raw_line(r);
    if (!l) JC_FAILF("expected '%s...', got EOF", prefix);
    if (strncmp(l, prefix, strlen(prefix)) != 0) JC_FAILF("expected '%s...', got '%s'", prefix, l);
}

static void raw_expect_eof(raw *r) {
    const char *l;
    while ((l = raw_line(r)) != NULL) fprintf(stderr, "  (line before EOF: %.100s)\n", l);
    char b;
    ASSERT_EQ(recv(r->fd, &b, 1, MSG_DONTWAIT), 0);
    close(r->fd);
}

/* A raw client leases GPU 1 of two-gpus at mw. */
static void raw_lease(raw *r, unsigned mw) {
    raw_open(r);
    char req[200];
    raw_says(r, "HELLO 1\n");
    raw_expect(r, "OK proto=1");
    raw_says(r, "TAKE " TWO1 "\n");
    raw_expect(r, "OK saved_mw=700000");
    snprintf(req, sizeof req, "SET " TWO1 " %u\n", mw);
    raw_says(r, req);
    raw_expect(r, "OK limit_mw=");
    ASSERT_EQ(limit_of(1), mw);
}

TEST(malformed_message_closes_only_that_client) {
    setup("two-gpus");
    start_daemon();
    jc_cap_session *s = open_gpus("0");
    ASSERT_OK(jc_cap_session_set(s, 0, 300));
    static const struct {
        const char *what, *bytes;
        size_t n;
    } bad[] = {
        {"a control byte", "SET " TWO1 " \x01\n", 0},
        {"a missing argument", "SET " TWO1 "\n", 0},
        {"an unknown request", "FLY " TWO1 "\n", 0},
        {"a bad number", "SET " TWO1 " 3e5\n", 0},
        {"a NUL byte", "LIST\0\n", 6},
        {"a double space", "RELEASE  " TWO1 "\n", 0},
        {"HELLO twice", "HELLO 1\n", 0},
    };
    raw r;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        raw_lease(&r, 250000 + (unsigned)i * 1000);
        double t0 = now_s();
        raw_send(&r, bad[i].bytes, bad[i].n ? bad[i].n : strlen(bad[i].bytes));
        raw_expect(&r, "ERR PROTOCOL text=");
        raw_expect_eof(&r);
        char what[120];
        snprintf(what, sizeof what, "malformed message (%s)", bad[i].what);
        double t = wait_limit_of(1, 700000, t0, 2);
        if (i == 0) restored("malformed message", t);
        else if (t < 0) JC_FAILF("%s: lease not ended", what);
        ASSERT_EQ(limit_of(0), 300000); /* the other client is untouched */
    }
    /* Oversized: 2000 bytes without a newline. */
    raw_lease(&r, 251000);
    char big[2000];
    memset(big, 'A', sizeof big);
    double t0 = now_s();
    raw_send(&r, big, sizeof big);
    raw_expect(&r, "ERR PROTOCOL text=request%20longer");
    raw_expect_eof(&r);
    restored("oversized message", wait_limit_of(1, 700000, t0, 2));
    /* A client that asks and never reads: closed once 256 KiB of replies wait. */
    raw_lease(&r, 252000);
    static char many[5 * 20000];
    for (int i = 0; i < 20000; i++) memcpy(many + 5 * i, "LIST\n", 5);
    t0 = now_s();
    raw_send(&r, many, sizeof many);
    if (wait_limit_of(1, 700000, t0, 5) < 0) JC_FAILF("a client that does not read kept its lease");
    close(r.fd);
    /* Before HELLO, and binary junk. */
    raw_open(&r);
    raw_says(&r, "LIST\n");
    raw_expect(&r, "ERR PROTOCOL");
    raw_expect_eof(&r);
    raw_open(&r);
    raw_send(&r, "\xff\xfe\x00junk\n", 8);
    raw_expect(&r, "ERR PROTOCOL");
    raw_expect_eof(&r);
    /* Requests may arrive together; every one is answered. */
    raw_open(&r);
    raw_says(&r, "HELLO 1\nLIST\nREPAIR " TWO1 "\n");
    raw_expect(&r, "OK proto=1");
    raw_expect(&r, "GPU uuid=" TWO0);
    raw_expect(&r, "GPU uuid=" TWO1);
    raw_expect(&r, "OK count=2");
    raw_expect(&r, "OK count=0");
    close(r.fd);
    /* The library's client is still served. */
    ASSERT_OK(jc_cap_session_set(s, 0, 310));
    ASSERT_EQ(limit_of(0), 310000);
    ASSERT_OK(jc_cap_session_close(s));
    ASSERT_EQ(limit_of(0), 700000);
    ASSERT_EQ(limit_of(1), 700000);
    teardown();
}

TEST(persistent_cap_kept_across_daemon_restart) {
    setup("h100-constant-300w");
    start_daemon();
    set_limit(0, 500000);
    result_t r = cli("cap", "set", "--gpu", "0", "400", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "via joulecapd (");
    free_result(&r);
    ASSERT_EQ(limit_mw(), 400000);
    r = cli("cap", "get", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "a persistent cap set by user root (uid 0), process");
    ASSERT_CONTAINS(r.out, "saved limit 500 W");
    ASSERT_CONTAINS(r.out, "via joulecapd (");
    free_result(&r);
    r = cli("cap", "get", "--json", NULL);
    EXPECT_CODE(r, 0);
    assert_valid_json_text(r.out);
    ASSERT_CONTAINS(r.out, "\"managed_by\":\"persistent\"");
    ASSERT_CONTAINS(r.out, "\"owner_user\":\"root\"");
    ASSERT_CONTAINS(r.out, "\"via\":\"joulecapd (");
    free_result(&r);
    /* A lease over it, then the daemon killed: the restart puts the persistent cap back and keeps it. */
    jc_cap_session *s = open_gpus("0");
    jc_cap_info info;
    ASSERT_OK(jc_cap_session_info_get(s, 0, &info));
    ASSERT_NEAR(info.saved_limit_w, 400, 1e-9);
    ASSERT_NEAR(info.persistent_saved_limit_w, 500, 1e-9);
    ASSERT_OK(jc_cap_session_set(s, 0, 300));
    stop_daemon(SIGKILL);
    ASSERT_EQ(limit_mw(), 300000);
    double t0 = now_s();
    start_daemon();
    restored("daemon SIGKILL, lease over a persistent cap, restart (from the restart)", wait_limit_of(0, 400000, t0, 5));
    jc_cap_session_close(s);
    ASSERT_OK(jc_cap_info_get("0", NULL, &info));
    ASSERT_EQ(info.manager, JC_CAP_MANAGER_PERSISTENT);
    ASSERT_NEAR(info.saved_limit_w, 500, 1e-9);
    /* SIGTERM keeps persistent caps too. */
    ASSERT_EQ(WEXITSTATUS(stop_daemon(SIGTERM)), 0);
    ASSERT_EQ(limit_mw(), 400000);
    start_daemon();
    r = cli("cap", "reset", "--gpu", "0", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "put back the saved limit: now 500 W");
    ASSERT_CONTAINS(r.out, "via joulecapd (");
    free_result(&r);
    ASSERT_EQ(limit_mw(), 500000);
    ASSERT_EQ(journals_settle(0), 0);
    r = cli("cap", "reset", "--gpu", "0", "--json", NULL);
    EXPECT_CODE(r, 0);
    assert_valid_json_text(r.out);
    ASSERT_CONTAINS(r.out, "\"did\":\"default\"");
    free_result(&r);
    ASSERT_EQ(limit_mw(), 700000);
    /* restore (REPAIR) removes persistent caps */
    ASSERT_OK(jc_cap_set_persistent("0", 350, NULL, NULL, 0));
    jc_cap_restore_entry e[4];
    int n = 0;
    ASSERT_OK(jc_cap_restore(NULL, e, 4, &n));
    ASSERT_EQ(n, 1);
    ASSERT_EQ(e[0].action, JC_CAP_RESTORED);
    ASSERT_EQ(e[0].was, JC_CAP_MANAGER_PERSISTENT);
    ASSERT_NEAR(e[0].limit_w, 700, 1e-9);
    ASSERT_EQ(limit_mw(), 700000);
    teardown();
}

TEST(set_that_does_not_take_is_an_error) {
    char scn[512], text[2048];
    setup_scenario_path("");
    snprintf(scn, sizeof scn, "%s/noop.scn", dir);
    char src[512];
    snprintf(src, sizeof src, "%s/scenarios/h100-constant-300w.scn", env_or_die("JC_TEST_DATA"));
    char *base = read_file(src);
    ASSERT_TRUE(base != NULL);
    snprintf(text, sizeof text, "%s\nset_limit_noop = 1\n", base);
    free(base);
    write_text(scn, text, 0644);
    setenv("JOULECAP_FAKE_NVML_SCENARIO", scn, 1);
    if (fake_open() != 0) {
        fprintf(stderr, "  SKIPPED: this fake NVML has no set_limit_noop (a driver that ignores new limits)\n");
        return;
    }
    start_daemon();
    jc_cap_session *s = open_gpus("0");
    ASSERT_STATUS(jc_cap_session_set(s, 0, 300), JC_ERR_NVML);
    ASSERT_CONTAINS(jc_last_detail(), "did not take");
    ASSERT_CONTAINS(jc_last_detail(), "reads back 700 W");
    char *j = journal_text(GPU0);
    ASSERT_TRUE(j != NULL);
    ASSERT_CONTAINS(j, "set_mw=0 "); /* never recorded as set */
    free(j);
    ASSERT_OK(jc_cap_session_close(s));
    ASSERT_STATUS(jc_cap_set_persistent("0", 300, NULL, NULL, 0), JC_ERR_NVML);
    ASSERT_EQ(journals_settle(0), 0);
    ASSERT_EQ(limit_mw(), 700000);
    teardown();
}

TEST(lost_gpu_blocks_only_itself) {
    setup_scenario_path("");
    char scn[512];
    snprintf(scn, sizeof scn, "%s/lost.scn", dir);
    write_text(scn, "[device]\nuuid = " TWO0 "\npci_bus_id = 00000000:19:00.0\n"
                    "[device]\nuuid = " TWO1 "\npci_bus_id = 00000000:3B:00.0\n"
                    "error = * 800 end GPU_IS_LOST\n", 0644);
    setenv("JOULECAP_FAKE_NVML_SCENARIO", scn, 1);
    ASSERT_EQ(fake_open(), 0); /* the fake GPUs' clock starts here: GPU 1 is lost 0.8 s later */
    double t_start = now_s();
    start_daemon();
    int fd;
    pid_t pid = child_fork(&fd);
    if (pid == 0) {
        jc_cap_options o;
        jc_cap_options_init(&o);
        jc_cap_session *s = NULL;
        int ok = jc_cap_session_open(&o, &s) == JC_OK && jc_cap_session_set(s, 0, 250) == JC_OK &&
                 jc_cap_session_set(s, 1, 260) == JC_OK;
        if (!ok) fprintf(stderr, "child: %s\n", jc_last_detail());
        child_report(fd, &ok, sizeof ok);
        for (;;) pause();
    }
    int ok = 0;
    child_read_report(fd, &ok, sizeof ok);
    ASSERT_TRUE(ok);
    ASSERT_TRUE(now_s() - t_start < 0.7);
    ASSERT_EQ(limit_of(0), 250000);
    while (now_s() - t_start < 0.9) sleep_ms(10);
    double t0 = now_s();
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    restored("client SIGKILL, its other GPU lost", wait_limit_of(0, 700000, t0, 2));
    reap(pid);
    /* GPU 1's restore failed: the daemon keeps its lease for a retry and says so; GPU 0 is free. */
    jc_cap_info info[2];
    int n = 0;
    ASSERT_OK(jc_cap_list(NULL, info, 2, &n));
    ASSERT_EQ(n, 2);
    ASSERT_EQ(info[0].manager, JC_CAP_MANAGER_NONE);
    ASSERT_EQ(info[1].manager, JC_CAP_MANAGER_STALE);
    ASSERT_TRUE(isnan(info[1].limit_w));
    jc_cap_session *s = open_gpus("0");
    ASSERT_OK(jc_cap_session_set(s, 0, 300));
    ASSERT_OK(jc_cap_session_close(s));
    ASSERT_EQ(limit_of(0), 700000);
    jc_cap_options o;
    jc_cap_options_init(&o);
    o.gpus = "1";
    ASSERT_STATUS(jc_cap_session_open(&o, &s), JC_ERR_BUSY);
    ASSERT_CONTAINS(jc_last_detail(), "could not put its saved limit 700 W back yet");
    char *log = read_file(log_path);
    ASSERT_CONTAINS(log, "GPU is lost");
    free(log);
    teardown();
    ASSERT_EQ(journals(), 1); /* kept for the next start */
}

TEST(damaged_journal_is_refused_not_trusted) {
    setup("h100-constant-300w");
    set_limit(0, 500000);
    ASSERT_EQ(mkdir(state_dir, 0700), 0);
    char path[600];
    snprintf(path, sizeof path, "%s/%s.journal", state_dir, GPU0);
    /* A well-formed journal whose checksum does not match (changed by hand, or a forgery). */
    write_text(path, "joulecapd-journal 1\nuuid " GPU0 "\nlease original_mw=200000 set_mw=300000 uid=0 user=root "
                     "pid=1 pid_start=1 since=1.000 command=x\ncrc32 00000000\n", 0600);
    start_daemon();
    ASSERT_EQ(limit_mw(), 500000); /* not trusted: nothing set */
    jc_cap_options o;
    jc_cap_options_init(&o);
    o.gpus = "0";
    jc_cap_session *s = NULL;
    ASSERT_STATUS(jc_cap_session_open(&o, &s), JC_ERR_IO);
    ASSERT_CONTAINS(jc_last_detail(), "checksum mismatch");
    ASSERT_CONTAINS(jc_last_detail(), path);
    ASSERT_CONTAINS(jc_last_detail(), "joulecap cap reset --gpu " GPU0);
    result_t r = cli("cap", "get", "--gpu", "0", NULL);
    EXPECT_CODE(r, 0);
    ASSERT_CONTAINS(r.out, "is damaged (checksum mismatch");
    free_result(&r);
    jc_cap_info info;
    ASSERT_OK(jc_cap_info_get("0", NULL, &info));
    ASSERT_EQ(info.manager, JC_CAP_MANAGER_DAMAGED);
    ASSERT_CONTAINS(info.error, path);
    r = cli("cap", "reset", "--gpu", "0", NULL);
    EXPECT_CODE(r, 0);
    free_result(&r);
    ASSERT_EQ(limit_mw(), 700000);
    ASSERT_EQ(journals_settle(0), 0);
    s = open_gpus("0");
    ASSERT_OK(jc_cap_session_close(s));
    stop_daemon(SIGTERM);
    /* A symlink in place of a journal is not followed. */
    char target[600];
    snprintf(target, sizeof target, "%s/elsewhere", dir);
    write_text(target, "not a journal\n", 0600);
    ASSERT_EQ(symlink(target, path), 0);
    start_daemon();
    ASSERT_STATUS(jc_cap_session_open(&o, &s), JC_ERR_IO);
    ASSERT_CONTAINS(jc_last_detail(), "symlink");
    char *t = read_file(target);
    ASSERT_STR_EQ(t, "not a journal\n");
    free(t);
    teardown();
}

TEST(journal_cut_at_every_offset_is_refused) {
    jcd_journal j, k;
    memset(&j, 0, sizeof j);
    snprintf(j.uuid, sizeof j.uuid, GPU0);
    j.lease = (jcd_holder){1, 400000, 300000, 1001, "alice", 4123, 8812, "python train.py --lr 0.1", 1764064769.125};
    j.persistent = (jcd_holder){1, 700000, 400000, 0, "root", 812, 99, "joulecap cap set 400", 1764060000.0};
    char text[JCD_JOURNAL_MAX], why[300];
    int len = jcd_journal_format(&j, text, sizeof text);
    ASSERT_TRUE(len > 0);
    ASSERT_EQ(jcd_journal_parse(text, (size_t)len, &k, why, sizeof why), 0);
    ASSERT_EQ(k.lease.original_mw, 400000);
    ASSERT_STR_EQ(k.lease.command, "python train.py --lr 0.1");
    ASSERT_EQ(k.persistent.set_mw, 400000);
    for (int cut = 0; cut < len; cut++)
        if (jcd_journal_parse(text, (size_t)cut, &k, why, sizeof why) == 0)
            JC_FAILF("a journal cut at byte %d of %d parsed", cut, len);
    for (int at = 0; at < len; at++) { /* and every single flipped bit of one byte */
        char copy[JCD_JOURNAL_MAX];
        memcpy(copy, text, (size_t)len);
        copy[at] ^= 0x04;
        if (jcd_journal_parse(copy, (size_t)len, &k, why, sizeof why) == 0)
            JC_FAILF("a journal changed at byte %d parsed", at);
    }
}

TEST(protocol_requests_parse_strictly) {
    jcd_request q;
    char why[300];
#define P(s) jcd_request_parse(s, strlen(s), &q, why, sizeof why)
    ASSERT_EQ(P("HELLO 1"), 0);
    ASSERT_EQ(q.verb, JCD_HELLO);
    ASSERT_EQ(q.version, 1);
    ASSERT_EQ(P("SET " GPU0 " 287500"), 0);
    ASSERT_EQ(q.verb, JCD_SET);
    ASSERT_EQ(q.mw, 287500);
    ASSERT_STR_EQ(q.uuid, GPU0);
    ASSERT_EQ(P("REPAIR"), 0);
    ASSERT_STR_EQ(q.uuid, "");
    ASSERT_EQ(P("REPAIR " GPU0), 0);
    ASSERT_EQ(P(""), -1);
    ASSERT_EQ(P("set " GPU0 " 1"), -1);
    ASSERT_EQ(P("SET " GPU0 " 0"), -1);
    ASSERT_EQ(P("SET " GPU0 " 4294967296"), -1);
    ASSERT_EQ(P("SET " GPU0 " -5"), -1);
    ASSERT_EQ(P("SET GPU/../x 5"), -1);
    ASSERT_EQ(P("HELLO 0"), -1);
    ASSERT_EQ(P("LIST "), -1);
    ASSERT_EQ(P("LIST\r"), -1);
    ASSERT_EQ(P("TAKE " GPU0 " extra"), -1);
#undef P
    char line[JC__WIRE_MAX_REQUEST + 8];
    memset(line, 'A', sizeof line);
    ASSERT_EQ(jcd_request_parse(line, JC__WIRE_MAX_REQUEST, &q, why, sizeof why), -1);
    ASSERT_CONTAINS(why, "longer than");
}

static int run_daemon_check(const char *conf, char **out) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "'%s' --check-config --config '%s' > '%s/check.out' 2>&1", env_or_die("JC_DAEMON"), conf,
             dir);
    int rc = system(cmd);
    char path[500];
    snprintf(path, sizeof path, "%s/check.out", dir);
    *out = read_file(path);
    ASSERT_TRUE(*out != NULL);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

TEST(check_config) {
    setup("h100-constant-300w");
    char *out = NULL;
    write_text(config_path, "# ok\nallow_user daemon\nallow_group nogroup # with a comment\nallow_user 4242\n", 0644);
    ASSERT_EQ(run_daemon_check(config_path, &out), 0);
    ASSERT_CONTAINS(out, "may change limits: root (always)");
    ASSERT_CONTAINS(out, "user daemon (uid 1), line 2");
    ASSERT_CONTAINS(out, "members of group nogroup");
    ASSERT_CONTAINS(out, "everyone may read");
    free(out);
    write_text(config_path, "allow_user daemon\nallow_everyone yes\n", 0644);
    ASSERT_EQ(run_daemon_check(config_path, &out), 1);
    ASSERT_CONTAINS(out, ":2: unknown keyword 'allow_everyone'");
    free(out);
    write_text(config_path, "allow_user a b\n", 0644);
    ASSERT_EQ(run_daemon_check(config_path, &out), 1);
    ASSERT_CONTAINS(out, ":1: 'allow_user' takes exactly one");
    free(out);
    write_text(config_path, "allow_user daemon\n", 0666);
    ASSERT_EQ(run_daemon_check(config_path, &out), 1);
    ASSERT_CONTAINS(out, "chmod 644");
    free(out);
    char missing[500];
    snprintf(missing, sizeof missing, "%s/none.conf", dir);
    ASSERT_EQ(run_daemon_check(missing, &out), 0);
    ASSERT_CONTAINS(out, "only root may change limits");
    free(out);
    teardown();
}

TEST(report_restore_times) {
    if (nrestores == 0) return;
    double v[64];
    for (int i = 0; i < nrestores; i++) v[i] = restores[i].ms;
    for (int i = 1; i < nrestores; i++)
        for (int k = i; k > 0 && v[k - 1] > v[k]; k--) {
            double t = v[k];
            v[k] = v[k - 1];
            v[k - 1] = t;
        }
    double p50 = nrestores % 2 ? v[nrestores / 2] : (v[nrestores / 2 - 1] + v[nrestores / 2]) / 2;
    fprintf(stderr, "joulecapd time to restore over %d cases: p50 %.2f ms, max %.2f ms\n", nrestores, p50,
            v[nrestores - 1]);
    printf("joulecapd time to restore over %d cases: p50 %.2f ms, max %.2f ms\n", nrestores, p50, v[nrestores - 1]);
}

JC_TEST_MAIN(TEST_ENTRY(protocol_requests_parse_strictly), TEST_ENTRY(journal_cut_at_every_offset_is_refused),
             TEST_ENTRY(check_config), TEST_ENTRY(session_through_daemon), TEST_ENTRY(client_sigkill_restored),
             TEST_ENTRY(client_process_group_killed_restored),
             TEST_ENTRY(owner_killed_while_forked_child_keeps_socket),
             TEST_ENTRY(daemon_sigkill_then_restart_restores_from_journal),
             TEST_ENTRY(daemon_sigterm_restores_every_lease), TEST_ENTRY(two_clients_race_for_one_gpu),
             TEST_ENTRY(user_not_allowed_is_refused), TEST_ENTRY(allowed_user_caps_without_root),
             TEST_ENTRY(malformed_message_closes_only_that_client),
             TEST_ENTRY(persistent_cap_kept_across_daemon_restart), TEST_ENTRY(set_that_does_not_take_is_an_error),
             TEST_ENTRY(lost_gpu_blocks_only_itself), TEST_ENTRY(damaged_journal_is_refused_not_trusted),
             TEST_ENTRY(report_restore_times))
