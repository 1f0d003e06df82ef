/* joulecapd: options, the listening socket, the poll loop and signals.
 *
 * Clients connect to a Unix socket (mode 0666: everyone may read); SO_PEERCRED names each one, the config
 * says who may write.  A lease lives as long as its connection: EOF, an error, a malformed message or the
 * death of the connecting process (a pidfd, for when a forked child keeps a copy of the socket) ends it and
 * the saved limit goes back at once.  SIGTERM/SIGINT put every lease back and exit; SIGHUP reloads the
 * config. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "jcd.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

static const char HELP[] =
    "Usage: joulecapd [--socket PATH] [--config PATH] [--state-dir DIR] [--metrics ADDR] [--foreground]\n"
    "                 [--check-config]\n"
    "\n"
    "The node service of joulecap: the only writer of GPU power limits while it runs.  Clients (joulecap cap,\n"
    "the library's cap sessions, Python's set_power_cap, the profiler) connect to its Unix socket; a lease on a\n"
    "GPU lasts as long as the client's connection, and the limit in force before it comes back as soon as the\n"
    "client ends in any way.  Leases are journalled, so a restart after a crash or a reboot puts them back.\n"
    "\n"
    "  --socket PATH     the socket (default " JC__WIRE_DEFAULT_SOCKET ")\n"
    "  --config PATH     who may change limits (default " JCD_DEFAULT_CONFIG ")\n"
    "  --state-dir DIR   the journal, saved counters and job totals (default " JCD_DEFAULT_STATE_DIR ")\n"
    "  --metrics ADDR    serve Prometheus metrics at http://ADDR/metrics: 127.0.0.1:9477, [::1]:9477, :9477 (every\n"
    "                    interface); GPU and CPU energy, power, limits, health, leases, per-job energy\n"
    "  --foreground      stay in the foreground, log to stderr (systemd: Type=notify)\n"
    "  --check-config    parse the config, say what it allows, exit 0 (valid) or 1\n"
    "  --version, -h/--help\n"
    "\n"
    "Signals: TERM/INT put every lease back and exit; HUP reloads the config.  See docs/daemon.md.\n";

/* ------------------------------------------------------------------------------------------------------
 * Output to clients.
 * ---------------------------------------------------------------------------------------------------- */

void jcd_send(jcd_client *c, const char *line) {
    if (c->closing == 2) return;
    size_t n = strlen(line);
    if (c->out_used + n + 1 > JCD_OUT_MAX) {
        c->closing = 2; /* it does not read its replies: closed without flushing */
        return;
    }
    if (c->out_used + n + 1 > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 8192;
        while (cap < c->out_used + n + 1) cap *= 2;
        if (cap > JCD_OUT_MAX) cap = JCD_OUT_MAX;
        char *p = realloc(c->out, cap);
        if (!p) {
            c->closing = 2;
            return;
        }
        c->out = p;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_used, line, n);
    c->out[c->out_used + n] = '\n';
    c->out_used += n + 1;
}

void jcd_protocol_error(jcd_client *c, const char *why) {
    char buf[600];
    size_t used = (size_t)snprintf(buf, sizeof buf, "ERR PROTOCOL");
    jc__wire_put(buf, sizeof buf, &used, "text", why);
    jcd_send(c, buf);
    if (!c->closing) c->closing = 1;
}

/* Writes what it can without blocking; -1 on a dead connection. */
static int flush_out(jcd_client *c) {
    size_t done = 0;
    while (done < c->out_used) {
        ssize_t w = send(c->fd, c->out + done, c->out_used - done, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (w <= 0) return -1;
        done += (size_t)w;
    }
    memmove(c->out, c->out + done, c->out_used - done);
    c->out_used -= done;
    return 0;
}

/* ------------------------------------------------------------------------------------------------------
 * Clients.
 * ---------------------------------------------------------------------------------------------------- */

typedef struct loop {
    jcd_state *s;
    int listen_fd, sig_fd;
    jcd_client *clients[JCD_MAX_CLIENTS];
    int n;
} loop;

static void client_close(loop *L, int i, const char *why) {
    jcd_client *c = L->clients[i];
    jcd_client_gone(L->s, c, why);
    if (c->out_used && c->closing != 2) flush_out(c);
    close(c->fd);
    if (c->pidfd >= 0) close(c->pidfd);
    free(c->out);
    free(c);
    L->clients[i] = L->clients[--L->n];
}

static void peer_groups(jcd_client *c) {
    gid_t g[JCD_MAX_GROUPS];
    socklen_t len = sizeof g;
    c->ngroups = 0;
    if (getsockopt(c->fd, SOL_SOCKET, SO_PEERGROUPS, g, &len) == 0) {
        for (size_t i = 0; i < len / sizeof g[0] && i < JCD_MAX_GROUPS; i++) c->groups[c->ngroups++] = g[i];
        return;
    }
    /* Too many groups for the buffer, or an old kernel: the user's groups from the group database. */
    if (!c->user[0]) return;
    int n = JCD_MAX_GROUPS;
    if (getgrouplist(c->user, (gid_t)c->gid, g, &n) < 0) n = JCD_MAX_GROUPS;
    for (int i = 0; i < n && i < JCD_MAX_GROUPS; i++) c->groups[c->ngroups++] = g[i];
}

static void refuse(int fd, const char *why) {
    char buf[600];
    size_t used = (size_t)snprintf(buf, sizeof buf, "ERR BUSY");
    jc__wire_put(buf, sizeof buf, &used, "text", why);
    if (used + 1 < sizeof buf) {
        buf[used++] = '\n';
        ssize_t w = send(fd, buf, used, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
    }
    close(fd);
}

static void client_accept(loop *L) {
    for (int k = 0; k < 16; k++) {
        int fd = accept4(L->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) jcd_log("accept: %s", strerror(errno));
            return;
        }
        struct ucred cr;
        socklen_t l = sizeof cr;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &l) != 0 || l != sizeof cr) {
            jcd_log("SO_PEERCRED failed: %s; connection refused", strerror(errno));
            close(fd);
            continue;
        }
        int same = 0;
        for (int i = 0; i < L->n; i++) same += L->clients[i]->uid == (unsigned)cr.uid;
        if (L->n >= JCD_MAX_CLIENTS || same >= JCD_MAX_CLIENTS_PER_UID) {
            jcd_log("connection of uid %u (pid %d) refused: %d connections (%d of this user)", (unsigned)cr.uid,
                    (int)cr.pid, L->n, same);
            refuse(fd, L->n >= JCD_MAX_CLIENTS ? "joulecapd has too many connections" : "too many connections of this user");
            continue;
        }
        jcd_client *c = calloc(1, sizeof *c);
        if (!c) {
            refuse(fd, "joulecapd is out of memory");
            continue;
        }
        c->fd = fd;
        c->uid = (unsigned)cr.uid;
        c->gid = (unsigned)cr.gid;
        c->pid = (int)cr.pid;
        struct passwd pw, *res = NULL;
        char tmp[4096];
        if (getpwuid_r(cr.uid, &pw, tmp, sizeof tmp, &res) == 0 && res) jc__fmt(c->user, sizeof c->user, "%s", pw.pw_name);
        peer_groups(c);
        if (jc__proc_start(c->pid, &c->pid_start, NULL) != 0) c->pid_start = 0;
        jc__proc_cmdline(c->pid, c->command, sizeof c->command);
        /* A descriptor that becomes readable when the connecting process exits. */
        socklen_t pl = sizeof c->pidfd;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &c->pidfd, &pl) != 0) {
#ifdef SYS_pidfd_open
            c->pidfd = (int)syscall(SYS_pidfd_open, (pid_t)c->pid, 0);
#else
            c->pidfd = -1;
#endif
        }
        if (c->pidfd >= 0) fcntl(c->pidfd, F_SETFD, FD_CLOEXEC);
        L->clients[L->n++] = c;
    }
}

/* Reads once and handles every whole request; 0, or -1 when the client is to be closed (why set). */
static int client_read(loop *L, jcd_client *c, const char **why) {
    size_t room;
    char *p = jcd_inbuf_space(&c->in, &room);
    ssize_t n = room ? recv(c->fd, p, room, MSG_DONTWAIT) : 0;
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        *why = "the connection failed";
        return -1;
    }
    if (n == 0 && room) {
        *why = "the connection was closed (the client exited, was killed, or closed it)";
        return -1;
    }
    c->in.used += (size_t)n;
    char line[JC__WIRE_MAX_REQUEST];
    size_t len;
    int r;
    while (!c->closing && (r = jcd_inbuf_next(&c->in, line, &len)) != 0) {
        if (r < 0) {
            jcd_protocol_error(c, "request longer than 1023 bytes");
            break;
        }
        jcd_request q;
        char bad[300];
        if (jcd_request_parse(line, len, &q, bad, sizeof bad) != 0) {
            jcd_protocol_error(c, bad);
            break;
        }
        jcd_handle(L->s, c, &q);
    }
    if (c->closing) {
        *why = c->closing == 2 ? "it did not read its replies" : "a malformed or oversized message";
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------------
 * Setup.
 * ---------------------------------------------------------------------------------------------------- */

static void notify(const char *msg) {
    const char *p = getenv("NOTIFY_SOCKET");
    if (!p || (p[0] != '/' && p[0] != '@')) return;
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    size_t n = strlen(p);
    if (n >= sizeof a.sun_path) return;
    memcpy(a.sun_path, p, n);
    if (a.sun_path[0] == '@') a.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    ssize_t w = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&a,
                       (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n));
    (void)w;
    close(fd);
}

/* Creates the parents of path when missing, mode 0755 whatever the umask (everyone must reach the socket). */
static void make_parents(const char *path) {
    char tmp[512];
    jc__fmt(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0755) == 0) chmod(tmp, 0755);
        *p = '/';
    }
}

/* The directory holding the socket must not let others replace it. */
static int check_socket_dir(const char *path, char *why, size_t whylen) {
    char dir[512];
    jc__fmt(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) jc__fmt(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = '\0';
    else *slash = '\0';
    struct stat sb;
    if (lstat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        jc__fmt(why, whylen, "the socket's directory %s is missing or not a directory (symlinks are refused)", dir);
        return -1;
    }
    if ((sb.st_uid != 0 && sb.st_uid != geteuid()) || (sb.st_mode & 022)) {
        jc__fmt(why, whylen, "the socket's directory %s must belong to root (or uid %u) and not be writable by "
                "group or others (mode %03o): others could replace the socket", dir, (unsigned)geteuid(),
                (unsigned)(sb.st_mode & 0777));
        return -1;
    }
    return 0;
}

static int listen_on(const char *path, char *why, size_t whylen) {
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof a.sun_path) {
        jc__fmt(why, whylen, "socket path longer than %zu bytes: %s", sizeof a.sun_path - 1, path);
        return -1;
    }
    memcpy(a.sun_path, path, strlen(path));
    make_parents(path);
    if (check_socket_dir(path, why, whylen) != 0) return -1;
    struct stat sb;
    if (lstat(path, &sb) == 0) {
        if (!S_ISSOCK(sb.st_mode)) {
            jc__fmt(why, whylen, "%s exists and is not a socket: not replaced", path);
            return -1;
        }
        int t = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int live = t >= 0 && connect(t, (struct sockaddr *)&a, sizeof a) == 0;
        if (t >= 0) close(t);
        if (live) {
            jc__fmt(why, whylen, "another joulecapd is running on %s", path);
            return -1;
        }
        unlink(path); /* left by a joulecapd that was killed */
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || chmod(path, 0666) != 0 || listen(fd, 64) != 0) {
        jc__fmt(why, whylen, "cannot listen on %s: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    return fd;
}

static int check_config(const char *path) {
    jcd_config c;
    char err[1024];
    if (jcd_config_load(path, &c, err, sizeof err) != 0) {
        fprintf(stderr, "joulecapd: %s\n", err);
        return 1;
    }
    char text[16384];
    jcd_config_describe(&c, text, sizeof text);
    fputs(text, stdout);
    return 0;
}

/* Parent: waits for the daemon's "ready" byte; child: returns the pipe's write end. */
static int daemonize(void) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid > 0) {
        close(p[1]);
        char b;
        ssize_t n;
        while ((n = read(p[0], &b, 1)) < 0 && errno == EINTR) {
        }
        _exit(n == 1 ? 0 : 1);
    }
    close(p[0]);
    setsid();
    pid = fork();
    if (pid < 0) _exit(1);
    if (pid > 0) _exit(0);
    if (chdir("/") != 0) _exit(1);
    int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (nul >= 0) {
        dup2(nul, 0);
        dup2(nul, 1);
        dup2(nul, 2);
        if (nul > 2) close(nul);
    }
    openlog("joulecapd", LOG_PID, LOG_DAEMON);
    jcd_log_to_syslog();
    return p[1];
}

/* ------------------------------------------------------------------------------------------------------ */

static int run(loop *L, const char *config_path) {
    jcd_state *s = L->s;
    struct pollfd *pfd = calloc(2 + 2 * JCD_MAX_CLIENTS, sizeof *pfd);
    if (!pfd) return 1;
    for (;;) {
        int n = 0;
        pfd[n++] = (struct pollfd){L->sig_fd, POLLIN, 0};
        pfd[n++] = (struct pollfd){L->listen_fd, POLLIN, 0};
        int check_alive = 0;
        for (int i = 0; i < L->n; i++) {
            jcd_client *c = L->clients[i];
            pfd[n++] = (struct pollfd){c->fd, (short)(POLLIN | (c->out_used ? POLLOUT : 0)), 0};
            pfd[n++] = (struct pollfd){c->pidfd, POLLIN, 0}; /* -1 is skipped by poll */
            if (c->pidfd < 0) check_alive = 1;
        }
        int pending = jcd_leases_pending(s);
        int timeout = pending ? 2000 : -1;
        if (check_alive) timeout = 200;
        if (s->exporter && (timeout < 0 || timeout > 1000)) timeout = 1000; /* limits for the scrapes */
        int r = poll(pfd, (nfds_t)n, timeout);
        if (r < 0 && errno != EINTR) {
            jcd_log("poll: %s", strerror(errno));
            free(pfd);
            return 1;
        }
        double now = jcd_mono();
        if (r > 0 && (pfd[0].revents & POLLIN)) {
            struct signalfd_siginfo si;
            while (read(L->sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
                if (si.ssi_signo == SIGHUP) {
                    jcd_config c;
                    char err[1024];
                    if (jcd_config_load(config_path, &c, err, sizeof err) == 0) {
                        s->config = c;
                        jcd_log("config %s reloaded: %d rule%s", config_path, c.n, c.n == 1 ? "" : "s");
                    } else {
                        jcd_log("config not reloaded, the old one stays: %s", err);
                    }
                } else {
                    jcd_log("signal %d: putting every lease back and stopping", (int)si.ssi_signo);
                    notify("STOPPING=1");
                    free(pfd);
                    return 0;
                }
            }
        }
        /* Clients, from the end so that closing one (the last moves into its slot) skips nothing. */
        for (int i = L->n - 1; i >= 0; i--) {
            jcd_client *c = L->clients[i];
            struct pollfd *cp = &pfd[2 + 2 * i];
            const char *why = NULL;
            if (r > 0 && cp->revents & (POLLIN | POLLHUP | POLLERR)) {
                if (client_read(L, c, &why) != 0) {
                    client_close(L, i, why);
                    continue;
                }
            }
            if (c->out_used && flush_out(c) != 0) {
                client_close(L, i, "the connection failed");
                continue;
            }
            int dead = (r > 0 && c->pidfd >= 0 && (cp[1].revents & (POLLIN | POLLHUP))) ||
                       (c->pidfd < 0 && c->pid_start && !jc__proc_alive(c->pid, c->pid_start));
            if (dead) client_close(L, i, "the client process exited (a child still held its connection)");
        }
        if (r > 0 && (pfd[1].revents & POLLIN)) client_accept(L);
        if (pending) jcd_leases_retry(s, now);
        if (s->exporter) jcd_exporter_publish(s->exporter, s, now);
    }
}

int main(int argc, char **argv) {
    const char *socket_path = NULL, *config_path = JCD_DEFAULT_CONFIG, *state_dir = JCD_DEFAULT_STATE_DIR;
    const char *metrics = NULL;
    int foreground = 0, check = 0;
    /* The daemon is the node's sampler: its own contexts read NVML, never a joulecapd (itself). */
    setenv("JOULECAP_DAEMON", "off", 1);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dest = NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(HELP, stdout);
            return 0;
        } else if (strcmp(a, "--version") == 0) {
            char why[400];
            printf("joulecapd %s (protocol %d; --metrics: %s)\n", JC_VERSION_STRING, JC__WIRE_VERSION,
                   jcd_http_available(why, sizeof why) ? "libmicrohttpd" : "not built, libmicrohttpd missing");
            return 0;
        } else if (strcmp(a, "--foreground") == 0) {
            foreground = 1;
        } else if (strcmp(a, "--check-config") == 0) {
            check = 1;
        } else if (strcmp(a, "--socket") == 0) {
            dest = &socket_path;
        } else if (strcmp(a, "--config") == 0) {
            dest = &config_path;
        } else if (strcmp(a, "--state-dir") == 0) {
            dest = &state_dir;
        } else if (strcmp(a, "--metrics") == 0) {
            dest = &metrics;
        } else {
            fprintf(stderr, "joulecapd: unknown option '%s'\n%s", a, HELP);
            return 2;
        }
        if (dest) {
            if (i + 1 >= argc || !argv[i + 1][0]) {
                fprintf(stderr, "joulecapd: %s needs a value\n", a);
                return 2;
            }
            *dest = argv[++i];
        }
    }
    if (check) return check_config(config_path);
    jcd_addr maddr;
    if (metrics) {
        char why[600];
        if (!jcd_http_available(why, sizeof why) || jcd_addr_parse(metrics, &maddr, why, sizeof why) != 0) {
            fprintf(stderr, "joulecapd: --metrics: %s\n", why);
            return 2;
        }
    }
    if (!socket_path) socket_path = JC__WIRE_DEFAULT_SOCKET;
    umask(077);
    signal(SIGPIPE, SIG_IGN);
    jcd_state *s = calloc(1, sizeof *s);
    loop *L = calloc(1, sizeof *L);
    if (!s || !L || !(s->gpus = calloc(JCD_MAX_GPUS, sizeof *s->gpus))) {
        fprintf(stderr, "joulecapd: out of memory\n");
        return 1;
    }
    L->s = s;
    s->state_fd = -1;
    char err[1024];
    if (jcd_config_load(config_path, &s->config, err, sizeof err) != 0) {
        fprintf(stderr, "joulecapd: %s\n", err);
        return 1;
    }
    jc__fmt(s->state_dir, sizeof s->state_dir, "%s", state_dir);
    jc__fmt(s->socket_path, sizeof s->socket_path, "%s", socket_path);
    make_parents(state_dir);
    if (jcd_state_open(state_dir, &s->state_fd, err, sizeof err) != 0) {
        fprintf(stderr, "joulecapd: %s\n", err);
        return 1;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int ready_fd = foreground ? -1 : daemonize();
    if (!foreground && ready_fd < 0) {
        fprintf(stderr, "joulecapd: cannot go to the background: %s\n", strerror(errno));
        return 1;
    }
    L->sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (L->sig_fd < 0) {
        jcd_log("signalfd: %s", strerror(errno));
        return 1;
    }
    if (jcd_gpus_open(s) != JC_OK) jcd_log("NVML is not available (%s): retried when needed", s->nvml_why);
    /* Leases left by a previous run go back before anyone can connect. */
    jcd_leases_start(s);
    L->listen_fd = listen_on(socket_path, err, sizeof err);
    if (L->listen_fd < 0) {
        jcd_log("%s", err);
        return 1;
    }
    jcd_http *http = NULL;
    char mtext[300] = "";
    if (metrics) {
        jcd_exporter *e;
        char bound[240];
        if (jcd_exporter_open(s, &e, err, sizeof err) != 0 ||
            jcd_http_start(&maddr, e, &http, bound, sizeof bound, err, sizeof err) != 0) {
            jcd_log("--metrics %s: %s", metrics, err);
            jcd_exporter_close(s->exporter);
            close(L->listen_fd);
            unlink(socket_path);
            jc__nvml_close(s->nvml);
            close(s->state_fd);
            free(s->gpus);
            free(s);
            free(L);
            return 1;
        }
        jc__fmt(mtext, sizeof mtext, ", metrics on %s", bound);
    }
    int present = 0;
    for (int i = 0; i < s->ngpus; i++) present += s->gpus[i].present;
    jcd_log("ready on %s: %d GPU%s, journal in %s, config %s (%d rule%s)%s", socket_path, present,
            present == 1 ? "" : "s", state_dir, config_path, s->config.n, s->config.n == 1 ? "" : "s", mtext);
    notify("READY=1");
    if (ready_fd >= 0) {
        ssize_t w = write(ready_fd, "r", 1);
        (void)w;
        close(ready_fd);
    }
    int rc = run(L, config_path);
    jcd_http_stop(http);
    close(L->listen_fd);
    unlink(socket_path); /* before putting limits back: no new client meanwhile */
    while (L->n > 0) client_close(L, L->n - 1, "joulecapd is stopping");
    jcd_leases_stop(s);
    jcd_exporter_close(s->exporter); /* the counters and job totals saved one last time */
    s->exporter = NULL;
    jcd_series_close(s);
    jcd_log("stopped");
    jc__nvml_close(s->nvml);
    close(s->state_fd);
    free(s->gpus);
    free(s);
    free(L);
    return rc;
}
