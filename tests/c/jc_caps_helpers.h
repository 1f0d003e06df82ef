/* Helpers of the power-cap tests (test_caps.c, test_caps_faults.c): one fake GPU shared by the test process,
 * the guardians and the CLI through JOULECAP_FAKE_NVML_STATE, a fresh state directory per scenario, direct
 * access to the fake GPU (as nvidia-smi would see it), and a child process that caps and dies.  Include
 * after jc_cli_run.h. */
#ifndef JC_CAPS_HELPERS_H
#define JC_CAPS_HELPERS_H

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "jc_child.h"
#include "jc_cli_run.h"
#include "joulecap.h"
#include "sources/nvml_api.h"

static char journal_dir[320];
static char scenario_name[64];

static inline void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* A fresh fake GPU (new state file) and an empty journal directory for each test. */
static inline void use_scenario(const char *scenario) {
    static int seq;
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "%s/joulecap-test-caps-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        ASSERT_TRUE(mkdtemp(tmpdir) != NULL);
        main_pid = getpid();
        atexit(remove_tmpdir);
    }
    seq++;
    char buf[512];
    setenv("JOULECAP_NVML_LIBRARY", env_or_die("JC_FAKE_NVML"), 1);
    snprintf(buf, sizeof buf, "%s/scenarios/%s.scn", env_or_die("JC_TEST_DATA"), scenario);
    setenv("JOULECAP_FAKE_NVML_SCENARIO", buf, 1);
    snprintf(buf, sizeof buf, "%s/fake-%d.state", tmpdir, seq);
    setenv("JOULECAP_FAKE_NVML_STATE", buf, 1);
    snprintf(journal_dir, sizeof journal_dir, "%s/journals-%d", tmpdir, seq);
    setenv("JOULECAP_STATE_DIR", journal_dir, 1);
    setenv("JOULECAP_CLI", env_or_die("JC_CLI"), 1);
    unsetenv("CUDA_VISIBLE_DEVICES");
    unsetenv("CUDA_DEVICE_ORDER");
    snprintf(scenario_name, sizeof scenario_name, "%s", scenario);
}

/* ------------------------------------------------------------------------------------------------------
 * Direct access to the fake GPU (what an independent observer such as nvidia-smi would see).
 * ---------------------------------------------------------------------------------------------------- */

typedef struct fake {
    void *lib;
    nvmlReturn_t (*init)(void);
    nvmlReturn_t (*shutdown)(void);
    nvmlReturn_t (*handle)(unsigned, nvmlDevice_t *);
    nvmlReturn_t (*get)(nvmlDevice_t, unsigned *);
    nvmlReturn_t (*set)(nvmlDevice_t, unsigned);
} fake;

static inline fake fake_open(void) {
    fake f;
    f.lib = dlopen(env_or_die("JC_FAKE_NVML"), RTLD_NOW | RTLD_LOCAL);
    if (!f.lib) JC_FAILF("dlopen fake NVML: %s", dlerror());
    *(void **)&f.init = dlsym(f.lib, "nvmlInit_v2");
    *(void **)&f.shutdown = dlsym(f.lib, "nvmlShutdown");
    *(void **)&f.handle = dlsym(f.lib, "nvmlDeviceGetHandleByIndex_v2");
    *(void **)&f.get = dlsym(f.lib, "nvmlDeviceGetPowerManagementLimit");
    *(void **)&f.set = dlsym(f.lib, "nvmlDeviceSetPowerManagementLimit");
    ASSERT_TRUE(f.init && f.shutdown && f.handle && f.get && f.set);
    ASSERT_EQ(f.init(), NVML_SUCCESS);
    return f;
}

static inline void fake_close(fake *f) {
    f->shutdown();
    dlclose(f->lib);
}

static inline unsigned fake_limit_mw_of(unsigned nvml_index) {
    fake f = fake_open();
    nvmlDevice_t d;
    unsigned mw = 0;
    ASSERT_EQ(f.handle(nvml_index, &d), NVML_SUCCESS);
    ASSERT_EQ(f.get(d, &mw), NVML_SUCCESS);
    fake_close(&f);
    return mw;
}

static inline unsigned fake_limit_mw(void) { return fake_limit_mw_of(0); }

static inline void fake_set_limit_mw(unsigned mw) {
    fake f = fake_open();
    nvmlDevice_t d;
    ASSERT_EQ(f.handle(0, &d), NVML_SUCCESS);
    ASSERT_EQ(f.set(d, mw), NVML_SUCCESS);
    fake_close(&f);
}

/* Seconds until NVML GPU idx's limit reads want (polling every poll_ms), or -1 after timeout_s. */
static inline double wait_limit_of(unsigned idx, unsigned want, double timeout_s, int poll_ms) {
    double t0 = now_s();
    for (;;) {
        if (fake_limit_mw_of(idx) == want) return now_s() - t0;
        if (now_s() - t0 > timeout_s) return -1;
        sleep_ms(poll_ms);
    }
}

/* Seconds until the fake's limit reads want (polling every 5 ms), or -1 after timeout_s. */
static inline double wait_limit(unsigned want, double timeout_s) { return wait_limit_of(0, want, timeout_s, 5); }

static inline int journal_count(void) {
    DIR *d = opendir(journal_dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (e->d_name[0] != '.' && l > 8 && strcmp(e->d_name + l - 8, ".journal") == 0) n++;
    }
    closedir(d);
    return n;
}

static inline int pid_gone(int pid) {
    char path[64], text[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 1;
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    const char *p = strrchr(text, ')');
    return p && (p[2] == 'Z' || p[2] == 'X');
}

/* ------------------------------------------------------------------------------------------------------
 * Sessions.
 * ---------------------------------------------------------------------------------------------------- */

static inline jc_cap_session *open_gpu0(void) {
    jc_cap_options o;
    jc_cap_options_init(&o);
    o.gpus = "0";
    jc_cap_session *s = NULL;
    ASSERT_OK(jc_cap_session_open(&o, &s));
    ASSERT_TRUE(s != NULL);
    return s;
}

enum { DIE_SIGKILL, DIE_SIGTERM, DIE_SIGINT, DIE_ABORT, DIE_EXIT, DIE_PGRP_SIGINT };

/* A child opens a session, caps at 250 W, tells the parent (guardian pid) and then dies as asked. */
static inline pid_t child_capping(int how, int *guardian_pid) {
    int fd;
    pid_t pid = child_fork(&fd);
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        if (how == DIE_PGRP_SIGINT) setpgid(0, 0);
        jc_cap_options o;
        jc_cap_options_init(&o);
        o.gpus = "0";
        jc_cap_session *s = NULL;
        int g = -1;
        if (jc_cap_session_open(&o, &s) == JC_OK && jc_cap_session_set(s, 0, 250) == JC_OK) {
            jc_cap_info info;
            if (jc_cap_session_info_get(s, 0, &info) == JC_OK) g = info.guardian_pid;
        } else {
            fprintf(stderr, "child: %s\n", jc_last_detail());
        }
        child_report(fd, &g, sizeof g);
        if (g < 0) _exit(96);
        switch (how) {
        case DIE_SIGKILL: raise(SIGKILL); break;
        case DIE_SIGTERM: raise(SIGTERM); break;
        case DIE_SIGINT: raise(SIGINT); break;
        case DIE_ABORT: abort();
        case DIE_EXIT: _exit(0); /* no close: the guardian still restores */
        default: break;
        }
        for (;;) pause();
    }
    int g = -1;
    child_read_report(fd, &g, sizeof g);
    ASSERT_TRUE(g > 0);
    *guardian_pid = g;
    return pid;
}

#endif
