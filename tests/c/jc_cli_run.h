/* Running the joulecap command-line tool ($JC_CLI) from a C test as a separate process, its stdout and stderr
 * to files under the test's tmpdir: shared by test_cli.c and test_caps.c.  Include after jc_test.h; the test
 * file fills tmpdir before the first run. */
#ifndef JC_CLI_RUN_H
#define JC_CLI_RUN_H

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "jc_test.h"

#define MAX_OUT (1 << 20)

static char tmpdir[256];

static inline const char *env_or_die(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v) JC_FAILF("environment variable %s is not set (run the test through ctest)", name);
    return v;
}

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The file's text (at most MAX_OUT bytes), or NULL when it cannot be opened. */
static inline char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = malloc(MAX_OUT + 1);
    ASSERT_TRUE(buf != NULL);
    size_t n = fread(buf, 1, MAX_OUT, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

typedef struct {
    pid_t pid;
    char out_path[300], err_path[300];
} proc_t;

/* Starts joulecap with the given arguments (NULL-terminated), stdin from /dev/null, stdout and stderr to
 * files. */
static inline proc_t start_cli(const char *const *args) {
    static int seq;
    proc_t p;
    seq++;
    snprintf(p.out_path, sizeof p.out_path, "%s/out.%d", tmpdir, seq);
    snprintf(p.err_path, sizeof p.err_path, "%s/err.%d", tmpdir, seq);
    const char *argv[64];
    int n = 0;
    argv[n++] = env_or_die("JC_CLI");
    for (int i = 0; args[i] && n < 63; i++) argv[n++] = args[i];
    argv[n] = NULL;
    fflush(NULL);
    p.pid = fork();
    ASSERT_TRUE(p.pid >= 0);
    if (p.pid == 0) {
        int o = open(p.out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(p.err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int in = open("/dev/null", O_RDONLY);
        if (o < 0 || e < 0 || in < 0) _exit(99);
        dup2(in, 0);
        dup2(o, 1);
        dup2(e, 2);
        execv(argv[0], (char *const *)argv);
        _exit(98);
    }
    return p;
}

typedef struct {
    int code; /* exit code, or 128+signal */
    char *out, *err;
    double seconds;
} result_t;

/* Waits for a started run and reads its output. */
static inline result_t finish_cli(proc_t p, double t0) {
    result_t r;
    int status;
    while (waitpid(p.pid, &status, 0) < 0) ASSERT_TRUE(errno == EINTR);
    r.seconds = now_s() - t0;
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    ASSERT_TRUE(r.code != 98 && r.code != 99); /* (the child could not redirect or exec) */
    r.out = read_file(p.out_path);
    r.err = read_file(p.err_path);
    ASSERT_TRUE(r.out && r.err);
    return r;
}

/* Runs joulecap with the arguments (NULL-terminated) to its end. */
static inline result_t cli(const char *first, ...) {
    const char *args[64];
    int n = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && n < 63; a = va_arg(ap, const char *)) args[n++] = a;
    va_end(ap);
    args[n] = NULL;
    double t0 = now_s();
    proc_t p = start_cli(args);
    return finish_cli(p, t0);
}

static inline void free_result(result_t *r) {
    free(r->out);
    free(r->err);
}

static inline void show(const result_t *r) {
    fprintf(stderr, "--- exit %d, stdout:\n%s--- stderr:\n%s---\n", r->code, r->out, r->err);
}

#define EXPECT_CODE(r, want)                                                                               \
    do {                                                                                                   \
        if ((r).code != (want)) {                                                                          \
            show(&(r));                                                                                    \
            ASSERT_EQ((r).code, (want));                                                                   \
        }                                                                                                  \
    } while (0)

/* Checks that text is valid JSON with Python's parser. */
static inline void assert_valid_json_text(const char *text) {
    char path[400];
    static int seq;
    snprintf(path, sizeof path, "%s/json.%d", tmpdir, ++seq);
    FILE *f = fopen(path, "w");
    ASSERT_TRUE(f != NULL);
    fputs(text, f);
    fclose(f);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "python3 -c 'import json,sys; json.load(open(sys.argv[1], encoding=\"utf-8\"))' '%s'",
             path);
    int rc = system(cmd);
    if (rc != 0) JC_FAILF("not valid JSON (python3 exit %d):\n%s", rc, text);
}

#endif
