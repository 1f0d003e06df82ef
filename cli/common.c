/* Helpers shared by the joulecap subcommands. */
#include "common.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* ------------------------------------------------------------------------------------------------------ */

void jc_cli_err(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("joulecap: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int jc_cli_usage_err(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("joulecap: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    if (cmd)
        fprintf(stderr, "Try 'joulecap %s --help' for the options and examples.\n", cmd);
    else
        fprintf(stderr, "Try 'joulecap --help' for the commands and examples.\n");
    return JC_EXIT_USAGE;
}

/* ------------------------------------------------------------------------------------------------------ */

int jc_cli_parse_seconds(const char *text, double lo, double hi, double *out) {
    if (!text || !*text) return 0;
    const char *p = text;
    while (isspace((unsigned char)*p)) p++;
    /* Plain decimal numbers only: no hex, no "inf"/"nan" spellings. */
    for (const char *q = p; *q; q++) {
        if (isalpha((unsigned char)*q) && *q != 'e' && *q != 'E') {
            if (strcmp(q, "s") == 0 || strcmp(q, "ms") == 0) break;
            return 0;
        }
    }
    char *end = NULL;
    errno = 0;
    double v = strtod(p, &end);
    if (end == p || errno == ERANGE) return 0;
    if (strcmp(end, "ms") == 0)
        v /= 1000.0;
    else if (strcmp(end, "s") != 0 && *end != '\0')
        return 0;
    if (!isfinite(v) || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

static int opt_value(const char *cmd, int argc, char **argv, int *i, const char *name, const char **val) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) == 0 && a[n] == '=') {
        *val = a + n + 1;
        return 0;
    }
    if (*i + 1 >= argc) return jc_cli_usage_err(cmd, "option %s needs a value", name);
    *val = argv[++*i];
    return 0;
}

static int is_opt(const char *a, const char *name) {
    size_t n = strlen(name);
    return strncmp(a, name, n) == 0 && (a[n] == '\0' || (a[n] == '=' && name[1] == '-'));
}

int jc_cli_parse(const char *cmd, int argc, char **argv, unsigned allowed, double lo, double hi,
                 jc_cli_opts *o) {
    memset(o, 0, sizeof *o);
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            if (!(allowed & JC_OPT_COMMAND))
                return jc_cli_usage_err(cmd, "'joulecap %s' does not run a command", cmd);
            if (i >= argc) return jc_cli_usage_err(cmd, "no command after '--'");
            break;
        }
        if (a[0] != '-' || a[1] == '\0') {
            if (allowed & JC_OPT_COMMAND) break; /* the command starts here */
            return jc_cli_usage_err(cmd, "unexpected argument '%s'", a);
        }
        int rc = 0;
        const char *val = NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            o->help = 1;
            return 0;
        } else if ((allowed & JC_OPT_JSON) && strcmp(a, "--json") == 0) {
            o->json = 1;
        } else if ((allowed & JC_OPT_QUIET) && (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0)) {
            o->quiet = 1;
        } else if ((allowed & JC_OPT_GPU) && (is_opt(a, "--gpu") || is_opt(a, "--gpus") || is_opt(a, "-g"))) {
            const char *name = a[1] == 'g' ? "-g" : (strncmp(a, "--gpus", 6) == 0 ? "--gpus" : "--gpu");
            if ((rc = opt_value(cmd, argc, argv, &i, name, &val))) return rc;
            const char *p = val;
            while (isspace((unsigned char)*p)) p++;
            if (!*p)
                return jc_cli_usage_err(cmd, "empty GPU selection for --gpu: use 'all', 'none', CUDA indices "
                                        "like 0 or 0,2, or UUIDs like GPU-8f3c...");
            o->gpus = val;
        } else if ((allowed & JC_OPT_OUTPUT) && (is_opt(a, "-o") || is_opt(a, "--output"))) {
            if ((rc = opt_value(cmd, argc, argv, &i, a[1] == 'o' ? "-o" : "--output", &val))) return rc;
            if (!*val) return jc_cli_usage_err(cmd, "empty file name for -o");
            o->output = val;
        } else if ((allowed & JC_OPT_INTERVAL) && (is_opt(a, "-i") || is_opt(a, "--interval"))) {
            if ((rc = opt_value(cmd, argc, argv, &i, a[1] == 'i' ? "-i" : "--interval", &val))) return rc;
            if (!jc_cli_parse_seconds(val, lo, hi, &o->interval_s))
                return jc_cli_usage_err(cmd, "bad interval '%s' for -i: use a number of seconds from %g to %g "
                                        "(for example -i 0.1, or -i 100ms)", val, lo, hi);
            o->interval_text = val;
        } else if ((allowed & JC_OPT_COUNTER) && is_opt(a, "--counter-interval")) {
            if ((rc = opt_value(cmd, argc, argv, &i, "--counter-interval", &val))) return rc;
            if (!jc_cli_parse_seconds(val, 0, 60, &o->counter_interval_s))
                return jc_cli_usage_err(cmd, "bad interval '%s' for --counter-interval: use 0 (a read after every "
                                        "counter step) to 60 seconds", val);
            o->counter_text = val;
        } else if (a[1] != '-' && a[2] != '\0' && strchr("oig", a[1]) &&
                   ((a[1] == 'o' && (allowed & JC_OPT_OUTPUT)) || (a[1] == 'i' && (allowed & JC_OPT_INTERVAL)) ||
                    (a[1] == 'g' && (allowed & JC_OPT_GPU)))) {
            /* -ofile, -i0.5, -g0: the value glued to the short option */
            char opt[3] = {'-', a[1], '\0'};
            char *glued[4] = {argv[0], opt, (char *)(a + 2), NULL};
            jc_cli_opts tmp;
            int r = jc_cli_parse(cmd, 3, glued, allowed & ~(unsigned)JC_OPT_COMMAND, lo, hi, &tmp);
            if (r) return r;
            if (a[1] == 'o') o->output = tmp.output;
            if (a[1] == 'g') o->gpus = tmp.gpus;
            if (a[1] == 'i') {
                o->interval_s = tmp.interval_s;
                o->interval_text = tmp.interval_text;
            }
        } else {
            return jc_cli_usage_err(cmd, "unknown option '%s' for 'joulecap %s'", a, cmd);
        }
    }
    if (i < argc) {
        if (!(allowed & JC_OPT_COMMAND)) return jc_cli_usage_err(cmd, "unexpected argument '%s'", argv[i]);
        o->command = argv + i;
        o->command_argc = argc - i;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------------ */

int jc_cli_exit_for(jc_status st) {
    switch (st) {
    case JC_ERR_INVALID_ARGUMENT:
    case JC_ERR_NOT_FOUND:
    case JC_ERR_NOT_SUPPORTED: return JC_EXIT_USAGE;
    default: return JC_EXIT_FAILURE;
    }
}

int jc_cli_names_gpus(const char *sel) {
    if (!sel) return 0;
    while (isspace((unsigned char)*sel)) sel++;
    return *sel && strcasecmp(sel, "all") != 0 && strcasecmp(sel, "none") != 0;
}

int jc_cli_open(jc_context **ctx, const jc_options *opts, const char *cmd) {
    jc_status st = jc_open(ctx, opts);
    if (st == JC_OK) return 0;
    const char *detail = jc_last_detail();
    int code = jc_cli_exit_for(st);
    if (opts->gpus && (st == JC_ERR_NOT_FOUND || st == JC_ERR_INVALID_ARGUMENT || st == JC_ERR_NOT_SUPPORTED) &&
        (strstr(detail, "GPU") || strstr(detail, "CUDA_VISIBLE_DEVICES"))) {
        jc_cli_err("bad GPU selection '--gpu %s': %s", opts->gpus, detail[0] ? detail : jc_strerror(st));
        fprintf(stderr, "Select GPUs as CUDA numbers them (0, 0,2, a UUID such as GPU-8f3c..., all or none); "
                        "'joulecap info' lists them.\n");
    } else if (opts->csv_path && (st == JC_ERR_IO || st == JC_ERR_NO_PERMISSION) && strstr(detail, "CSV")) {
        jc_cli_err("cannot create the output file '%s': %s", opts->csv_path, detail);
    } else if (st == JC_ERR_NOT_SUPPORTED && strstr(detail, "CUDA_VISIBLE_DEVICES")) {
        jc_cli_err("cannot select GPUs: %s", detail);
    } else {
        jc_cli_err("cannot start measuring: %s: %s", jc_strerror(st), detail[0] ? detail : "(no detail)");
        if (code == JC_EXIT_USAGE) fprintf(stderr, "Try 'joulecap %s --help'.\n", cmd);
    }
    return code;
}

/* ------------------------------------------------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at s, 0 if invalid. */
static size_t utf8_len(const unsigned char *s) {
    unsigned c = s[0];
    size_t n;
    unsigned min;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) n = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) n = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) n = 4, min = 0x10000;
    else return 0;
    unsigned cp = c & (0x7F >> n);
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return n;
}

void jc_json_str(FILE *f, const char *s) {
    if (!s) {
        fputs("null", f);
        return;
    }
    fputc('"', f);
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        if (c == '"') fputs("\\\"", f);
        else if (c == '\\') fputs("\\\\", f);
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c < 0x20 || c == 0x7F) fprintf(f, "\\u%04x", c);
        else if (c < 0x80) fputc((int)c, f);
        else {
            size_t n = utf8_len(p);
            if (n == 0) {
                fputs("\\ufffd", f);
                p++;
                continue;
            }
            fwrite(p, 1, n, f);
            p += n;
            continue;
        }
        p++;
    }
    fputc('"', f);
}

void jc_json_num(FILE *f, double v) {
    if (!isfinite(v))
        fputs("null", f);
    else if (v == floor(v) && fabs(v) < 1e15)
        fprintf(f, "%.0f", v);
    else
        fprintf(f, "%.10g", v);
}

void jc_json_key(FILE *f, int *first, const char *key) {
    if (!*first) fputc(',', f);
    *first = 0;
    jc_json_str(f, key);
    fputc(':', f);
}

void jc_csv_str(FILE *f, const char *s) {
    if (!s) return;
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

void jc_csv_num(FILE *f, double v) {
    if (isfinite(v)) fprintf(f, "%.10g", v);
}

double jc_cli_mw_to_w(unsigned mw) { return mw ? mw / 1000.0 : NAN; }

const char *jc_cli_fmt(char *buf, size_t len, double v, int decimals) {
    if (!isfinite(v)) {
        snprintf(buf, len, "n/a");
        return buf;
    }
    snprintf(buf, len, "%.*f", decimals, v);
    if (decimals > 0 && strchr(buf, '.')) {
        size_t n = strlen(buf);
        while (n > 0 && buf[n - 1] == '0') buf[--n] = '\0';
        if (n > 0 && buf[n - 1] == '.') buf[--n] = '\0';
    }
    if (strcmp(buf, "-0") == 0) snprintf(buf, len, "0");
    return buf;
}

const char *jc_cli_device_label(const jc_device_info *info, char *buf, size_t len) {
    if (info->kind == JC_DEVICE_CPU)
        snprintf(buf, len, "CPU");
    else
        snprintf(buf, len, "GPU %d", info->index);
    return buf;
}

void jc_cli_join_command(char **argv, char *buf, size_t len) {
    size_t used = 0;
    if (len == 0) return;
    buf[0] = '\0';
    for (int i = 0; argv && argv[i] && used + 1 < len; i++) {
        const char *a = argv[i];
        int quote = !*a || strpbrk(a, " \t\n'\"\\$`*?;&|<>()") != NULL;
        int w;
        if (!quote) {
            w = snprintf(buf + used, len - used, "%s%s", i ? " " : "", a);
        } else {
            w = snprintf(buf + used, len - used, "%s'", i ? " " : "");
            for (const char *p = a; w >= 0 && used + (size_t)w + 1 < len && *p; p++) {
                size_t at = used + (size_t)w;
                int k = *p == '\'' ? snprintf(buf + at, len - at, "'\\''") : snprintf(buf + at, len - at, "%c", *p);
                if (k < 0) break;
                w += k;
            }
            if (w >= 0 && used + (size_t)w + 1 < len) {
                buf[used + (size_t)w] = '\'';
                buf[used + (size_t)w + 1] = '\0';
                w++;
            }
        }
        if (w < 0) break;
        used += (size_t)w;
        if (used >= len) {
            used = len - 1;
            break;
        }
    }
}

int jc_cli_is_json_path(const char *path) {
    size_t n = strlen(path);
    return n >= 5 && strcasecmp(path + n - 5, ".json") == 0;
}

/* ------------------------------------------------------------------------------------------------------
 * Signals: the handlers only write two bytes (signal, came-from-kernel) to a non-blocking self-pipe.
 * ---------------------------------------------------------------------------------------------------- */

static int sig_pipe[2] = {-1, -1};
static const int HANDLED[] = {SIGINT, SIGTERM, SIGHUP, SIGCHLD};
#define NHANDLED (sizeof HANDLED / sizeof HANDLED[0])
static struct sigaction saved_actions[NHANDLED];
static int installed;

static void on_signal(int sig, siginfo_t *si, void *uctx) {
    (void)uctx;
    int saved = errno;
    unsigned char msg[2] = {(unsigned char)sig, (unsigned char)(si && si->si_code == SI_KERNEL)};
    if (sig_pipe[1] >= 0) {
        ssize_t w = write(sig_pipe[1], msg, sizeof msg);
        (void)w; /* a full pipe already holds a wake-up */
    }
    errno = saved;
}

int jc_cli_signals_install(void) {
    if (installed) return 0;
    if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        jc_cli_err("cannot create a pipe for signals: %s", strerror(errno));
        return -1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_NOCLDSTOP; /* no SA_RESTART: blocking calls return EINTR */
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < NHANDLED; i++) sigaddset(&sa.sa_mask, HANDLED[i]);
    for (size_t i = 0; i < NHANDLED; i++) {
        if (sigaction(HANDLED[i], &sa, &saved_actions[i]) != 0) {
            jc_cli_err("cannot install a signal handler: %s", strerror(errno));
            return -1;
        }
    }
    /* Make sure these signals are not blocked (a parent may have blocked them). */
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < NHANDLED; i++) sigaddset(&set, HANDLED[i]);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    installed = 1;
    return 0;
}

void jc_cli_signals_restore(void) {
    if (!installed) return;
    for (size_t i = 0; i < NHANDLED; i++) sigaction(HANDLED[i], &saved_actions[i], NULL);
    installed = 0;
}

/* Waits until the self-pipe has something; returns the number of messages read into msgs (pairs). */
static int read_signals(unsigned char *msgs, int max_pairs, int timeout_ms) {
    struct pollfd p = {.fd = sig_pipe[0], .events = POLLIN};
    int r = poll(&p, 1, timeout_ms);
    if (r <= 0) return 0;
    ssize_t n = read(sig_pipe[0], msgs, (size_t)max_pairs * 2);
    if (n <= 0) return 0;
    return (int)(n / 2);
}

/* ------------------------------------------------------------------------------------------------------
 * Child commands.
 * ---------------------------------------------------------------------------------------------------- */

#define FD_BITS 4096
static unsigned char fd_seen[FD_BITS / 8];
static int fd_snapshot_taken;

static int list_fds(int *fds, int max) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    int n = 0, self = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < max) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        int fd = atoi(e->d_name);
        if (fd != self) fds[n++] = fd;
    }
    closedir(d);
    return n;
}

void jc_cli_fd_snapshot(void) {
    int fds[1024];
    int n = list_fds(fds, 1024);
    if (n < 0) return;
    memset(fd_seen, 0, sizeof fd_seen);
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0 && fds[i] < FD_BITS) fd_seen[fds[i] / 8] |= (unsigned char)(1u << (fds[i] % 8));
    fd_snapshot_taken = 1;
}

void jc_cli_fd_cloexec_new(void) {
    if (!fd_snapshot_taken) return;
    int fds[1024];
    int n = list_fds(fds, 1024);
    for (int i = 0; i < n; i++) {
        int fd = fds[i];
        if (fd >= 0 && fd < FD_BITS && (fd_seen[fd / 8] & (1u << (fd % 8)))) continue;
        int fl = fcntl(fd, F_GETFD);
        if (fl >= 0 && !(fl & FD_CLOEXEC)) fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
    }
}

int jc_cli_spawn(char **argv, jc_cli_child *child) {
    memset(child, 0, sizeof *child);
    child->pid = -1;
    /* Prepare the PATH search (as execvp does) before fork: the child of a threaded process may only call
     * async-signal-safe functions. */
    const char *file = argv[0];
    int argc = 0;
    while (argv[argc]) argc++;
    char **cands = NULL;
    size_t ncands = 0;
    if (strchr(file, '/')) {
        cands = calloc(2, sizeof *cands);
        if (cands) cands[ncands++] = strdup(file);
    } else {
        const char *path = getenv("PATH");
        if (!path) path = "/bin:/usr/bin";
        size_t ndirs = 1;
        for (const char *p = path; *p; p++) ndirs += *p == ':';
        cands = calloc(ndirs + 1, sizeof *cands);
        const char *p = path;
        while (cands) {
            const char *e = strchr(p, ':');
            size_t dl = e ? (size_t)(e - p) : strlen(p);
            size_t fl = strlen(file);
            char *c = malloc(dl + fl + 3);
            if (!c) break;
            if (dl == 0) {
                memcpy(c, "./", 2);
                memcpy(c + 2, file, fl + 1);
            } else {
                memcpy(c, p, dl);
                c[dl] = '/';
                memcpy(c + dl + 1, file, fl + 1);
            }
            cands[ncands++] = c;
            if (!e) break;
            p = e + 1;
        }
    }
    /* For scripts without a #! line (ENOEXEC), run them with /bin/sh as execvp does. */
    char **sh_argv = calloc((size_t)argc + 2, sizeof *sh_argv);
    int fds[2];
    if (!cands || !sh_argv || ncands == 0 || pipe2(fds, O_CLOEXEC) != 0) {
        jc_cli_err("cannot prepare to run '%s': %s", file, strerror(errno ? errno : ENOMEM));
        for (size_t i = 0; cands && i < ncands; i++) free(cands[i]);
        free(cands);
        free(sh_argv);
        return -1;
    }
    sh_argv[0] = (char *)"sh";
    for (int i = 1; i < argc; i++) sh_argv[i + 1] = argv[i];
    fflush(NULL);

    pid_t pid = fork();
    if (pid == 0) {
        /* Child: default dispositions for the signals joulecap catches, nothing blocked. */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        for (size_t i = 0; i < NHANDLED; i++) sigaction(HANDLED[i], &dfl, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int err = ENOENT, saw_eacces = 0;
        for (size_t i = 0; i < ncands; i++) {
            execve(cands[i], argv, environ);
            err = errno;
            if (err == ENOEXEC) {
                sh_argv[1] = cands[i];
                execve("/bin/sh", sh_argv, environ);
                err = errno;
                break;
            }
            if (err == EACCES) {
                saw_eacces = 1;
                continue;
            }
            if (err == ENOENT || err == ENOTDIR || err == ESTALE || err == ENODEV || err == ETIMEDOUT ||
                err == ELOOP || err == ENAMETOOLONG)
                continue;
            break;
        }
        if (saw_eacces && (err == ENOENT || err == ENOTDIR || err == ELOOP || err == ENAMETOOLONG))
            err = EACCES;
        ssize_t w = write(fds[1], &err, sizeof err);
        (void)w;
        _exit(err == ENOENT ? JC_EXIT_NOT_FOUND : JC_EXIT_NOT_EXEC);
    }
    int fork_errno = errno;
    for (size_t i = 0; i < ncands; i++) free(cands[i]);
    free(cands);
    free(sh_argv);
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        jc_cli_err("cannot start '%s': fork failed: %s", file, strerror(fork_errno));
        return -1;
    }
    child->pid = pid;
    /* EOF: execve succeeded (the CLOEXEC pipe closed); an int: why it failed. */
    int err = 0;
    for (;;) {
        ssize_t r = read(fds[0], &err, sizeof err);
        if (r < 0 && errno == EINTR) continue; /* a signal: it stays in the self-pipe for the wait loop */
        if (r == (ssize_t)sizeof err) child->exec_errno = err ? err : EIO;
        break;
    }
    close(fds[0]);
    return 0;
}

void jc_cli_wait_child(jc_cli_child *child) {
    for (;;) {
        int status;
        pid_t r = waitpid(child->pid, &status, WNOHANG);
        if (r == child->pid) {
            child->end_ns = jc_now_ns();
            child->status = status;
            return;
        }
        if (r < 0 && errno != EINTR) { /* cannot happen for our own child; do not spin */
            child->end_ns = jc_now_ns();
            child->status = 0;
            return;
        }
        unsigned char msgs[64];
        int n = read_signals(msgs, 32, 1000);
        for (int i = 0; i < n; i++) {
            int sig = msgs[2 * i], from_tty = msgs[2 * i + 1];
            if (sig == SIGCHLD) continue;
            if (!child->stop_signal) child->stop_signal = sig;
            /* SIGINT from the terminal already reached the command (same foreground process group). */
            if (!(from_tty && sig == SIGINT)) {
                kill(child->pid, sig);
                child->forwarded++;
            }
        }
    }
}

int jc_cli_wait_signal(void) {
    for (;;) {
        unsigned char msgs[64];
        int n = read_signals(msgs, 32, -1);
        for (int i = 0; i < n; i++) {
            int sig = msgs[2 * i];
            if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) return sig;
        }
    }
}

int jc_cli_child_exit_code(const jc_cli_child *child) {
    if (child->exec_errno) return child->exec_errno == ENOENT ? JC_EXIT_NOT_FOUND : JC_EXIT_NOT_EXEC;
    if (WIFEXITED(child->status)) return WEXITSTATUS(child->status);
    if (WIFSIGNALED(child->status)) return 128 + WTERMSIG(child->status);
    return JC_EXIT_FAILURE;
}

/* ------------------------------------------------------------------------------------------------------
 * Summaries.
 * ---------------------------------------------------------------------------------------------------- */

int jc_cli_check_gpus(jc_context *ctx, const char *sel) {
    if (!jc_cli_names_gpus(sel) || jc_device_count(ctx) > 1) return 0;
    char version[96] = "", note[1024] = "";
    jc_gpu_driver(ctx, version, sizeof version, note, sizeof note);
    jc_cli_err("--gpu %s selects GPUs, but no GPU can be measured here: %s", sel,
               note[0] ? note : "NVML found no GPU");
    fprintf(stderr, "Run 'joulecap info' to see what is available, or leave out --gpu to measure the CPU only.\n");
    return JC_EXIT_USAGE;
}

int jc_cli_summary_collect(jc_context *ctx, jc_window w, double timeout_s, jc_cli_summary *s) {
    s->ndev = jc_device_count(ctx);
    if (s->ndev > JC_MAX_DEVICES) s->ndev = JC_MAX_DEVICES;
    for (int i = 0; i < s->ndev; i++) {
        if (jc_device_info_get(ctx, i, &s->info[i]) != JC_OK) {
            memset(&s->info[i], 0, sizeof s->info[i]);
            s->info[i].kind = i ? JC_DEVICE_GPU : JC_DEVICE_CPU;
            s->info[i].index = i ? i - 1 : -1;
        }
    }
    memset(&s->result, 0, sizeof s->result);
    jc_status st = jc_window_result_get(ctx, w, timeout_s, &s->result);
    if (st == JC_OK) {
        s->resolved = 1;
    } else if (st == JC_ERR_TIMEOUT) {
        s->resolved = 0;
        jc_cli_err("warning: the samples covering the end of the measurement did not arrive within %g s (%s); "
                   "the energies below are the best estimate so far", timeout_s, jc_last_detail());
    } else {
        jc_cli_err("cannot compute the energy: %s: %s", jc_strerror(st), jc_last_detail());
        return JC_EXIT_FAILURE;
    }
    if (s->result.device_count < s->ndev) s->ndev = s->result.device_count;
    return 0;
}

static double total_energy(const jc_cli_summary *s, int *nmeasured) {
    double t = 0;
    int n = 0;
    for (int i = 0; i < s->ndev; i++) {
        if (isfinite(s->result.energy_j[i])) {
            t += s->result.energy_j[i];
            n++;
        }
    }
    if (nmeasured) *nmeasured = n;
    return n ? t : NAN;
}

static double avg_power(double e, double elapsed) { return (isfinite(e) && elapsed > 0) ? e / elapsed : NAN; }

/* The reason an estimate is an estimate, without the leading "estimate, because". */
const char *jc_cli_estimate_reason(const char *note) {
    const char *p = note;
    if (strncasecmp(p, "estimate", 8) == 0) {
        p += 8;
        while (*p == ',' || *p == ':' || *p == ';' || *p == ' ') p++;
        if (strncasecmp(p, "because ", 8) == 0) p += 8;
    }
    return *p ? p : "no hardware energy counter";
}

void jc_cli_summary_text(FILE *f, const jc_cli_summary *s) {
    char cmd[512], num[64], pw[64], label[32];
    fputc('\n', f);
    if (s->command) {
        jc_cli_join_command(s->command, cmd, sizeof cmd);
        if (s->has_status && WIFSIGNALED(s->wait_status))
            fprintf(f, " Energy of: %s   (killed by signal %d, %s)\n\n", cmd, WTERMSIG(s->wait_status),
                    strsignal(WTERMSIG(s->wait_status)));
        else if (s->has_status)
            fprintf(f, " Energy of: %s   (exit status %d)\n\n", cmd, s->exit_code);
        else
            fprintf(f, " Energy of: %s\n\n", cmd);
    } else {
        fprintf(f, " Energy while monitoring:\n\n");
    }
    double el = s->result.elapsed_s;
    snprintf(num, sizeof num, "%.*f", el < 0.1 ? 6 : 3, el);
    fprintf(f, " %14s s  elapsed\n", num);
    for (int i = 0; i < s->ndev; i++) {
        const jc_device_info *d = &s->info[i];
        double e = s->result.energy_j[i];
        jc_cli_device_label(d, label, sizeof label);
        jc_energy_source src = s->result.source[i];
        if (!isfinite(e)) {
            fprintf(f, " %14s    %-6s not measured: %s\n", "-", label,
                    d->energy_note[0] ? d->energy_note : jc_energy_source_name(src));
            continue;
        }
        snprintf(num, sizeof num, "%.*f", fabs(e) < 1 ? 6 : 3, e);
        snprintf(pw, sizeof pw, "%.1f W", avg_power(e, el));
        if (src == JC_SOURCE_ESTIMATE) {
            /* "(estimate: why)", and the model on a line of its own */
            const char *why = jc_cli_estimate_reason(d->energy_note);
            const char *model = strstr(why, "; model: ");
            int wl = model ? (int)(model - why) : (int)strlen(why);
            fprintf(f, " %14s J  %-6s %10s  (estimate: %.*s)\n", num, label, pw, wl, why);
            if (model) fprintf(f, " %14s    %-6s %10s  model: %s\n", "", "", "", model + 9);
        } else
            fprintf(f, " %14s J  %-6s %10s  %s%s(%s)\n", num, label, pw, d->kind == JC_DEVICE_GPU ? d->name : "",
                    d->kind == JC_DEVICE_GPU ? " " : "", jc_energy_source_name(src));
        double u = s->result.uncertainty_j[i];
        if (isfinite(u) && u >= 0.0005 && src != JC_SOURCE_ESTIMATE)
            fprintf(f, " %14s    %-6s %10s  +/- %.3g J (95%%)\n", "", "", "", u);
        if (s->result.coverage[i] < 1)
            fprintf(f, " %14s    %-6s %10s  PARTIAL: covers %.1f%% of the time (%s: %s)\n", "", "", "",
                    100 * s->result.coverage[i], jc_health_name(d->health), d->health_note);
        else if (s->result.health[i] != JC_HEALTH_OK)
            fprintf(f, " %14s    %-6s %10s  %s during the run: %s\n", "", "", "",
                    jc_health_name(s->result.health[i]), d->health_note[0] ? d->health_note : "see joulecap info");
    }
    int nm = 0;
    double t = total_energy(s, &nm);
    if (nm > 1) {
        snprintf(num, sizeof num, "%.*f", fabs(t) < 1 ? 6 : 3, t);
        snprintf(pw, sizeof pw, "%.1f W", avg_power(t, el));
        int partial = 0;
        for (int i = 0; i < s->ndev; i++) partial |= isfinite(s->result.energy_j[i]) && s->result.coverage[i] < 1;
        fprintf(f, " %14s J  %-6s %10s  average power%s\n", num, "total", pw,
                partial ? " (PARTIAL: a device above covers only part of the time)" : "");
    }
    if (!s->resolved) fprintf(f, " (not fully resolved: the last samples were late; values are estimates)\n");
    fputc('\n', f);
}

static const char *dev_prefix(const jc_device_info *d, char *buf, size_t len) {
    if (d->kind == JC_DEVICE_CPU)
        snprintf(buf, len, "cpu");
    else
        snprintf(buf, len, "gpu%d", d->index);
    return buf;
}

void jc_cli_summary_json(FILE *f, const jc_cli_summary *s, const char *extra_key, const char *extra_val,
                         double interval_s) {
    int first = 1;
    char key[64], pre[32];
    double el = s->result.elapsed_s;
    fputc('{', f);
    jc_json_key(f, &first, "joulecap_version");
    jc_json_str(f, jc_version());
    if (s->command) {
        jc_json_key(f, &first, "command");
        fputc('[', f);
        for (int i = 0; s->command[i]; i++) {
            if (i) fputc(',', f);
            jc_json_str(f, s->command[i]);
        }
        fputc(']', f);
        jc_json_key(f, &first, "exit_status");
        if (s->has_status && WIFEXITED(s->wait_status)) fprintf(f, "%d", WEXITSTATUS(s->wait_status));
        else fputs("null", f);
        jc_json_key(f, &first, "signal");
        if (s->has_status && WIFSIGNALED(s->wait_status)) fprintf(f, "%d", WTERMSIG(s->wait_status));
        else fputs("null", f);
    }
    if (s->stop_signal) {
        jc_json_key(f, &first, "stopped_by_signal");
        fprintf(f, "%d", s->stop_signal);
    }
    if (extra_key) {
        jc_json_key(f, &first, extra_key);
        jc_json_str(f, extra_val);
    }
    if (interval_s > 0) {
        jc_json_key(f, &first, "interval_s");
        jc_json_num(f, interval_s);
    }
    jc_json_key(f, &first, "elapsed_s");
    jc_json_num(f, el);
    jc_json_key(f, &first, "resolved");
    fputs(s->resolved ? "true" : "false", f);
    int nm = 0;
    double t = total_energy(s, &nm);
    jc_json_key(f, &first, "total_energy_j");
    jc_json_num(f, t);
    jc_json_key(f, &first, "average_power_w");
    jc_json_num(f, avg_power(t, el));
    /* Flat keys, the same names as the CSV columns, for scripts. */
    for (int i = 0; i < s->ndev; i++) {
        dev_prefix(&s->info[i], pre, sizeof pre);
        snprintf(key, sizeof key, "%s_energy_j", pre);
        jc_json_key(f, &first, key);
        jc_json_num(f, s->result.energy_j[i]);
        snprintf(key, sizeof key, "%s_energy_kwh", pre);
        jc_json_key(f, &first, key);
        jc_json_num(f, s->result.energy_j[i] / 3.6e6);
        snprintf(key, sizeof key, "%s_energy_source", pre);
        jc_json_key(f, &first, key);
        jc_json_str(f, jc_energy_source_name(s->result.source[i]));
        snprintf(key, sizeof key, "%s_coverage", pre);
        jc_json_key(f, &first, key);
        jc_json_num(f, s->result.coverage[i]);
        snprintf(key, sizeof key, "%s_uncertainty_j", pre);
        jc_json_key(f, &first, key);
        jc_json_num(f, s->result.uncertainty_j[i]);
        snprintf(key, sizeof key, "%s_state", pre);
        jc_json_key(f, &first, key);
        jc_json_str(f, jc_health_name(s->result.health[i]));
    }
    jc_json_key(f, &first, "devices");
    fputc('[', f);
    for (int i = 0; i < s->ndev; i++) {
        const jc_device_info *d = &s->info[i];
        int f2 = 1;
        if (i) fputc(',', f);
        fputc('{', f);
        jc_json_key(f, &f2, "kind");
        jc_json_str(f, d->kind == JC_DEVICE_CPU ? "cpu" : "gpu");
        jc_json_key(f, &f2, "index");
        if (d->kind == JC_DEVICE_CPU) fputs("null", f);
        else fprintf(f, "%d", d->index);
        jc_json_key(f, &f2, "name");
        jc_json_str(f, d->name);
        if (d->kind == JC_DEVICE_GPU) {
            jc_json_key(f, &f2, "uuid");
            jc_json_str(f, d->uuid);
        }
        jc_json_key(f, &f2, "energy_j");
        jc_json_num(f, s->result.energy_j[i]);
        jc_json_key(f, &f2, "energy_kwh");
        jc_json_num(f, s->result.energy_j[i] / 3.6e6);
        jc_json_key(f, &f2, "average_power_w");
        jc_json_num(f, avg_power(s->result.energy_j[i], el));
        jc_json_key(f, &f2, "energy_source");
        jc_json_str(f, jc_energy_source_name(s->result.source[i]));
        jc_json_key(f, &f2, "estimate");
        fputs(s->result.source[i] == JC_SOURCE_ESTIMATE ? "true" : "false", f);
        jc_json_key(f, &f2, "energy_note");
        jc_json_str(f, d->energy_note);
        jc_json_key(f, &f2, "coverage");
        jc_json_num(f, s->result.coverage[i]);
        jc_json_key(f, &f2, "uncertainty_j");
        jc_json_num(f, s->result.uncertainty_j[i]);
        jc_json_key(f, &f2, "state");
        jc_json_str(f, jc_health_name(s->result.health[i]));
        jc_json_key(f, &f2, "state_note");
        jc_json_str(f, d->health_note);
        fputc('}', f);
    }
    fputc(']', f);
    fputs("}\n", f);
}

void jc_cli_summary_csv(FILE *f, const jc_cli_summary *s) {
    char pre[32];
    fputs("elapsed_s", f);
    for (int i = 0; i < s->ndev; i++) fprintf(f, ",%s_energy_kwh", dev_prefix(&s->info[i], pre, sizeof pre));
    for (int i = 0; i < s->ndev; i++) fprintf(f, ",%s_energy_j", dev_prefix(&s->info[i], pre, sizeof pre));
    for (int i = 0; i < s->ndev; i++) fprintf(f, ",%s_energy_source", dev_prefix(&s->info[i], pre, sizeof pre));
    fputc('\n', f);
    jc_csv_num(f, s->result.elapsed_s);
    for (int i = 0; i < s->ndev; i++) {
        fputc(',', f);
        jc_csv_num(f, s->result.energy_j[i] / 3.6e6);
    }
    for (int i = 0; i < s->ndev; i++) {
        fputc(',', f);
        jc_csv_num(f, s->result.energy_j[i]);
    }
    for (int i = 0; i < s->ndev; i++) {
        fputc(',', f);
        jc_csv_str(f, jc_energy_source_name(s->result.source[i]));
    }
    fputc('\n', f);
}
