/* Children of a test: a fork with a pipe back to the parent (the child does something, reports a fixed-size
 * value and then lives on, dies or exits as the test needs), reaping, and the removal of the test's temporary
 * directory by the main process only, and joulecapd started as a child.  Shared by test_caps, test_caps_faults,
 * test_daemon, test_exporter and test_node_sampler. */
#ifndef JC_CHILD_H
#define JC_CHILD_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jc_cli_run.h"
#include "jc_test.h"

/* The test's own process: children (which exit through atexit handlers too) leave tmpdir alone. */
static pid_t main_pid;

/* atexit handler: removes tmpdir (jc_cli_run.h) unless JC_KEEP_TMP is set; only in main_pid. */
static inline void remove_tmpdir(void) {
    if (getpid() != main_pid || !tmpdir[0] || getenv("JC_KEEP_TMP")) return;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

/* Forks with a pipe from the child to the parent.  Returns 0 in the child, with *fd the pipe's write end (for
 * child_report()), and the child's pid in the parent, with *fd the read end (for child_read_report()). */
static inline pid_t child_fork(int *fd) {
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    fflush(NULL);
    pid_t pid = fork();
    ASSERT_TRUE(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        *fd = p[1];
    } else {
        close(p[1]);
        *fd = p[0];
    }
    return pid;
}

/* In the child: writes the report whole (or exits 97). */
static inline void child_report(int fd, const void *buf, size_t len) {
    if (write(fd, buf, len) != (ssize_t)len) _exit(97);
}

/* In the parent: reads exactly len bytes of the child's report and closes the pipe. */
static inline void child_read_report(int fd, void *buf, size_t len) {
    ASSERT_EQ(read(fd, buf, len), (ssize_t)len);
    close(fd);
}

/* In the parent: reads a text report of up to len - 1 bytes (at least one) and closes the pipe. */
static inline void child_read_text(int fd, char *out, size_t len) {
    ssize_t n = read(fd, out, len - 1);
    ASSERT_TRUE(n > 0);
    out[n] = '\0';
    close(fd);
}

/* 1 when pid has exited (reaped, *status set), 0 while it runs. */
static inline int child_exited(pid_t pid, int *status) { return waitpid(pid, status, WNOHANG) == pid; }

/* Waits for pid (retrying on EINTR); returns its wait status, -1 when it is not a child to wait for. */
static inline int child_reap(pid_t pid) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    return status;
}

/* Signals pid and reaps it; returns its wait status. */
static inline int child_kill(pid_t pid, int sig) {
    ASSERT_EQ(kill(pid, sig), 0);
    return child_reap(pid);
}

/* Starts joulecapd (JC_DAEMON) in a session of its own, stdin /dev/null, stdout and stderr appended to log, on
 * the given socket, state directory and config, with --metrics ADDR where metrics is not NULL.  Returns its pid
 * (the caller waits until it accepts connections). */
static inline pid_t daemon_spawn(const char *log, const char *sock, const char *state, const char *config,
                                 const char *metrics) {
    fflush(NULL);
    pid_t pid = fork();
    ASSERT_TRUE(pid >= 0);
    if (pid == 0) {
        setsid();
        int lfd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int in = open("/dev/null", O_RDONLY);
        if (lfd < 0 || in < 0) _exit(99);
        dup2(in, 0);
        dup2(lfd, 1);
        dup2(lfd, 2);
        const char *d = env_or_die("JC_DAEMON");
        if (metrics)
            execl(d, d, "--foreground", "--socket", sock, "--state-dir", state, "--config", config, "--metrics",
                  metrics, (char *)NULL);
        else
            execl(d, d, "--foreground", "--socket", sock, "--state-dir", state, "--config", config, (char *)NULL);
        _exit(98);
    }
    return pid;
}

/* joulecapd's log on stderr (when a test fails around it). */
static inline void daemon_show_log(const char *log) {
    char *t = read_file(log);
    fprintf(stderr, "--- joulecapd log:\n%s---\n", t ? t : "(none)");
    free(t);
}

/* A plain connection to the socket at sock: its fd, or -1 while nothing accepts there. */
static inline int daemon_connect(const char *sock) {
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    ASSERT_TRUE(strlen(sock) < sizeof a.sun_path);
    memcpy(a.sun_path, sock, strlen(sock));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_TRUE(fd >= 0);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Waits until the joulecapd *pid (daemon_spawn) accepts connections on sock; fails the test, with its log, when
 * it exits first (*pid set to 0: reaped) or takes over 10 s. */
static inline void daemon_wait_accepting(pid_t *pid, const char *log, const char *sock) {
    double t0 = now_s();
    for (;;) {
        int fd = daemon_connect(sock);
        if (fd >= 0) {
            close(fd);
            return;
        }
        int status;
        if (child_exited(*pid, &status)) {
            daemon_show_log(log);
            *pid = 0;
            JC_FAILF("joulecapd exited at start (status 0x%x)", status);
        }
        if (now_s() - t0 > 10) {
            daemon_show_log(log);
            JC_FAILF("joulecapd did not accept connections within 10 s");
        }
        usleep(1000);
    }
}

#endif
