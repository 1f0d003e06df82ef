/* Running the measured command, with signals passed on to it. */
#include "child.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "errors.h"

extern char **environ;

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

