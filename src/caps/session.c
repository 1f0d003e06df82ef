/* Cap sessions: caps that last as long as the session and are put back at its end, or by the guardian
 * process when the owner dies.
 *
 * The guardian is a fresh exec of the joulecap executable (`joulecap cap __guard`), never a bare fork: the
 * owner may be multithreaded and NVML is not usable in a forked child.  It is started with posix_spawn (no
 * fork of the owner's address space), in its own session, with a socketpair: the owner keeps one end
 * (close-on-exec), the guardian the other as descriptor 3.  The guardian writes "ready" once it runs, then
 * waits for EOF on the socket (the owner's close, exec or death, in any way) or for the owner's death seen
 * in /proc (a forked child may hold a copy of the owner's end), then restores every journal of its owner. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "caps_internal.h"
#include "client.h"

extern char **environ;

struct jc_cap_session {
    pthread_mutex_t lock;
    jc__nvml *nvml;
    char dir[512];
    int n;
    jc__capgpu gpus[JC__CAP_MAX_GPUS];
    jc__journal journal[JC__CAP_MAX_GPUS]; /* our journal of each GPU, as written */
    int owned[JC__CAP_MAX_GPUS];
    int owner_pid;
    unsigned long long owner_start;
    int guardian_pid;
    unsigned long long guardian_start;
    int sock; /* our end of the guardian's socket */
    int guardian_died; /* seen dead: the saved limits were put back; no more changes */
    char guardian_died_text[1024];
    char note[1024];
    jc__capd_session *remote; /* through joulecapd (client.c): nothing above is used */
};

/* ------------------------------------------------------------------------------------------------------
 * The guardian process.
 * ---------------------------------------------------------------------------------------------------- */

static const char *guardian_hint(void) {
    return "the guardian (the joulecap executable, run as 'joulecap cap __guard') restores the caps if this "
           "process dies. Set JOULECAP_CLI to the path of the joulecap executable (or "
           "jc_cap_options.guardian_path), or put joulecap on PATH. No cap was changed";
}

/* Waits up to timeout_ms for the guardian to close its end (it exits); then reaps it. */
static void guardian_wait(int sock, int pid, int timeout_ms) {
    uint64_t end = jc_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    if (sock >= 0) {
        for (;;) {
            uint64_t now = jc_now_ns();
            if (now >= end) break;
            struct pollfd p = {sock, POLLIN, 0};
            int r = poll(&p, 1, (int)((end - now) / 1000000ull) + 1);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) break;
            char buf[64];
            ssize_t n = read(sock, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break; /* EOF: the guardian is gone */
        }
    }
    if (pid <= 0) return;
    for (;;) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR)) return; /* reaped, or not ours to reap (SIGCHLD ignored) */
        if (jc_now_ns() >= end + 1000000000ull) return;
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
}

static jc_status spawn_guardian(jc_cap_session *s, const jc_cap_options *o) {
    const char *path = o->guardian_path, *how = "jc_cap_options.guardian_path";
    if (!path || !*path) {
        path = secure_getenv("JOULECAP_CLI");
        how = "JOULECAP_CLI";
    }
    char self[1024];
    if (!path || !*path) {
        path = NULL;
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n > 0) {
            self[n] = '\0';
            const char *base = strrchr(self, '/');
            base = base ? base + 1 : self;
            if (strcmp(base, "joulecap") == 0) {
                path = self;
                how = "this program";
            }
        }
    }
    if (!path) {
        path = "joulecap";
        how = "PATH";
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return jc__fail(JC_ERR_IO, "cannot create the guardian's socket: %s", strerror(errno));
    /* Above 3, so that the dup2 to 3 in the child never lands on itself (which would keep close-on-exec). */
    int child_end = fcntl(sv[1], F_DUPFD_CLOEXEC, 10);
    close(sv[1]);
    if (child_end < 0) {
        close(sv[0]);
        return jc__fail(JC_ERR_IO, "cannot duplicate the guardian's socket: %s", strerror(errno));
    }
    char owner[32], start[32];
    snprintf(owner, sizeof owner, "%d", s->owner_pid);
    snprintf(start, sizeof start, "%llu", s->owner_start);
    char *argv[] = {(char *)path, "cap", "__guard", "--fd", "3", "--journal-dir", s->dir, "--owner", owner,
                    "--owner-start", start, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, child_end, 3);
    sigset_t none, def;
    sigemptyset(&none);
    sigemptyset(&def);
    for (int sig = 1; sig < 32; sig++)
        if (sig != SIGKILL && sig != SIGSTOP) sigaddset(&def, sig);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &def);
    short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
#ifdef POSIX_SPAWN_SETSID
    flags |= POSIX_SPAWN_SETSID; /* no terminal's Ctrl-C or hangup reaches it */
#else
    flags |= POSIX_SPAWN_SETPGROUP;
    posix_spawnattr_setpgroup(&at, 0);
#endif
    posix_spawnattr_setflags(&at, flags);
    pid_t pid = -1;
    int rc = strchr(path, '/') ? posix_spawn(&pid, path, &fa, &at, argv, environ)
                               : posix_spawnp(&pid, path, &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(child_end);
    if (rc != 0) {
        close(sv[0]);
        return jc__fail(JC_ERR_UNAVAILABLE, "cannot start the power-cap guardian '%s' (from %s): %s; %s", path, how,
                        strerror(rc), guardian_hint());
    }
    /* Wait for "ready": proof that the program is joulecap and runs. */
    char buf[64];
    size_t got = 0;
    uint64_t end = jc_now_ns() + 15000000000ull;
    const char *problem = NULL;
    while (got < 6) {
        uint64_t now = jc_now_ns();
        if (now >= end) {
            problem = "it did not answer within 15 s";
            break;
        }
        struct pollfd p = {sv[0], POLLIN, 0};
        int r = poll(&p, 1, (int)((end - now) / 1000000ull) + 1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            problem = "poll failed";
            break;
        }
        if (r == 0) continue;
        ssize_t n = read(sv[0], buf + got, sizeof buf - 1 - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            problem = "it exited without answering (is it the joulecap executable, of this version?)";
            break;
        }
        got += (size_t)n;
    }
    buf[got] = '\0';
    if (!problem && strncmp(buf, "ready\n", 6) != 0) problem = "it answered something else than 'ready'";
    if (problem) {
        kill(pid, SIGKILL);
        close(sv[0]);
        guardian_wait(-1, pid, 1000);
        return jc__fail(JC_ERR_UNAVAILABLE, "cannot start the power-cap guardian '%s' (from %s): %s; %s", path, how,
                        problem, guardian_hint());
    }
    s->sock = sv[0];
    s->guardian_pid = pid;
    unsigned long long gs = 0;
    if (jc__proc_start(pid, &gs, NULL) == 0) s->guardian_start = gs;
    return JC_OK;
}

static void stop_guardian(jc_cap_session *s) {
    if (s->sock < 0) return;
    shutdown(s->sock, SHUT_WR); /* EOF for the guardian even if a forked child holds a copy of our end */
    guardian_wait(s->sock, s->guardian_pid, 5000);
    close(s->sock);
    s->sock = -1;
    s->guardian_pid = 0;
}

/* ------------------------------------------------------------------------------------------------------
 * Journals of the session.
 * ---------------------------------------------------------------------------------------------------- */

/* Under the GPU's lock: the journal on disk is still ours. */
static jc_status check_ours(jc_cap_session *s, int i) {
    jc__journal j;
    int exists = 0;
    jc_status st = jc__journal_read(s->dir, s->gpus[i].id.uuid, &j, &exists);
    if (st != JC_OK) return st;
    char label[256];
    if (!exists || j.owner_pid != s->owner_pid || j.owner_start != s->owner_start)
        return jc__fail(JC_ERR_STATE, "the journal of %s no longer belongs to this session (removed or replaced "
                        "from outside): its cap is not changed", jc__capgpu_label(&s->gpus[i], label, sizeof label));
    return JC_OK;
}

/* Puts GPU i's saved limit back when the session changed it and drops the journal (or gives a persistent
 * cap underneath its own journal back). */
static jc_status release_gpu(jc_cap_session *s, int i) {
    if (!s->owned[i]) return JC_OK;
    int fd = -1;
    jc_status st = jc__cap_lock(s->dir, s->gpus[i].id.uuid, &fd);
    if (st != JC_OK) return st;
    st = check_ours(s, i);
    if (st == JC_OK) {
        unsigned restored = 0;
        int more = 0;
        st = jc__journal_restore_step(s->nvml, s->dir, &s->journal[i], &s->gpus[i], &restored, &more);
        if (st == JC_OK) s->owned[i] = 0;
    } else if (st == JC_ERR_STATE) {
        s->owned[i] = 0; /* not ours any more: nothing to release */
    }
    jc__cap_unlock(fd);
    return st;
}

static jc_status take_gpu(jc_cap_session *s, int i) {
    jc__capgpu *g = &s->gpus[i];
    int fd = -1;
    jc_status st = jc__cap_lock(s->dir, g->id.uuid, &fd);
    if (st != JC_OK) return st;
    jc__journal j;
    int exists = 0;
    st = jc__journal_read(s->dir, g->id.uuid, &j, &exists);
    if (st == JC_OK) st = jc__journal_repair_stale(s->nvml, s->dir, g, &j, &exists, s->note, sizeof s->note);
    if (st == JC_OK && exists && jc__journal_manager(&j) == JC_CAP_MANAGER_SESSION) st = jc__journal_busy(&j, g);
    if (st == JC_OK) {
        jc__capgpu_read_limits(s->nvml, g);
        jc__journal nj;
        memset(&nj, 0, sizeof nj);
        jc__fmt(nj.uuid, sizeof nj.uuid, "%s", g->id.uuid);
        nj.original_mw = g->limit_mw;
        nj.base_mw = exists ? j.original_mw : 0; /* a persistent cap underneath */
        nj.owner_pid = s->owner_pid;
        nj.owner_start = s->owner_start;
        nj.guardian_pid = s->guardian_pid;
        nj.guardian_start = s->guardian_start;
        nj.created = jc__wall_time();
        jc__proc_cmdline(s->owner_pid, nj.owner_command, sizeof nj.owner_command);
        st = jc__journal_write(s->dir, &nj);
        if (st == JC_OK) {
            s->journal[i] = nj;
            s->owned[i] = 1;
        }
    }
    jc__cap_unlock(fd);
    return st;
}

/* Under the GPU's lock: records the limit about to be set in the journal, then sets it and reads it back.
 * A limit that did not take leaves the journal saying what the GPU reports. */
static jc_status set_gpu(jc_cap_session *s, int i, unsigned mw) {
    int fd = -1;
    jc_status st = jc__cap_lock(s->dir, s->gpus[i].id.uuid, &fd);
    if (st != JC_OK) return st;
    st = check_ours(s, i);
    unsigned prev = s->journal[i].set_mw, before = 0, now = 0;
    if (st == JC_OK && s->nvml->nvmlDeviceGetPowerManagementLimit &&
        s->nvml->nvmlDeviceGetPowerManagementLimit(s->gpus[i].dev, &before) != NVML_SUCCESS)
        before = 0;
    if (st == JC_OK && prev != mw) {
        jc__journal j = s->journal[i];
        j.set_mw = mw;
        st = jc__journal_write(s->dir, &j);
        if (st == JC_OK) s->journal[i] = j;
    }
    if (st == JC_OK && (st = jc__capgpu_set(s->nvml, &s->gpus[i], mw, &now)) != JC_OK) {
        unsigned keep = jc__set_mw_after_failure(prev, before, now, mw);
        if (keep != s->journal[i].set_mw) {
            char detail[1024];
            jc__fmt(detail, sizeof detail, "%s", jc_last_detail());
            jc__journal j = s->journal[i];
            j.set_mw = keep;
            if (jc__journal_write(s->dir, &j) == JC_OK) s->journal[i] = j;
            jc__fail(st, "%s", detail);
        }
    }
    jc__cap_unlock(fd);
    return st;
}

/* Under the GPU's lock: puts the saved limit back and marks the journal unchanged. */
static jc_status restore_gpu(jc_cap_session *s, int i) {
    if (!s->owned[i] || s->journal[i].set_mw == 0) return JC_OK;
    int fd = -1;
    jc_status st = jc__cap_lock(s->dir, s->gpus[i].id.uuid, &fd);
    if (st != JC_OK) return st;
    st = check_ours(s, i);
    if (st == JC_OK) st = jc__capgpu_set(s->nvml, &s->gpus[i], s->journal[i].original_mw, NULL);
    if (st == JC_OK) {
        jc__journal j = s->journal[i];
        j.set_mw = 0;
        st = jc__journal_write(s->dir, &j);
        if (st == JC_OK) s->journal[i] = j;
    }
    jc__cap_unlock(fd);
    return st;
}

/* ------------------------------------------------------------------------------------------------------
 * Public.
 * ---------------------------------------------------------------------------------------------------- */

/* GPUs NVML cannot identify (lost): an error when the selection names them, else left out of the session
 * (the note says which), so that one lost GPU does not stop the others from being capped. */
static jc_status drop_unusable(jc_cap_session *s, const char *sel) {
    int k = 0;
    for (int i = 0; i < s->n; i++) {
        jc_status u = jc__capgpu_usable(&s->gpus[i]);
        if (u == JC_OK) {
            s->gpus[k++] = s->gpus[i];
            continue;
        }
        if (!jc__sel_is_all(sel)) return u;
        jc__note_append(s->note, sizeof s->note, "left out of the session: %s", jc_last_detail());
    }
    s->n = k;
    jc__clear_detail();
    return JC_OK;
}

static void session_free(jc_cap_session *s, int owner) {
    if (!s) return;
    if (s->remote) jc__capd_session_close(s->remote);
    if (s->sock >= 0) close(s->sock);
    /* In a forked child NVML belongs to the parent: leave it alone. */
    if (owner) jc__nvml_close(s->nvml);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* A session through joulecapd (client.c): only the lock and the remote session are used. */
static jc_status open_remote(const jc_cap_options *o, jc_cap_session **out) {
    jc_cap_session *s = calloc(1, sizeof *s);
    if (!s) return jc__fail(JC_ERR_NO_MEMORY, "cannot allocate a cap session");
    pthread_mutex_init(&s->lock, NULL);
    s->sock = -1;
    jc_status st = jc__capd_session_open(o, &s->remote);
    if (st != JC_OK) {
        session_free(s, 0);
        return st;
    }
    *out = s;
    return JC_OK;
}

jc_status jc_cap_session_open(const jc_cap_options *opts, jc_cap_session **out) {
    if (opts && jc__check_size(opts->size, sizeof *opts, "jc_cap_options") != JC_OK) return JC_ERR_INVALID_ARGUMENT;
    jc__clear_detail();
    if (!out) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_cap_session_open: out is NULL");
    *out = NULL;
    jc_cap_options o;
    if (opts) o = *opts;
    else jc_cap_options_init(&o);
    if (jc__capd_route(NULL, 0)) return open_remote(&o, out);
    jc_cap_session *s = calloc(1, sizeof *s);
    if (!s) return jc__fail(JC_ERR_NO_MEMORY, "cannot allocate a cap session");
    pthread_mutex_init(&s->lock, NULL);
    s->sock = -1;
    s->owner_pid = (int)getpid();
    jc_status st = jc__cap_dir(&o, s->dir, sizeof s->dir, 1);
    char why[512];
    if (st == JC_OK) st = jc__nvml_open(&s->nvml, why, sizeof why);
    if (st == JC_OK) st = jc__capgpu_select(s->nvml, o.gpus, s->gpus, JC__CAP_MAX_GPUS, &s->n);
    if (st == JC_OK) st = drop_unusable(s, o.gpus);
    if (st == JC_OK && s->n == 0)
        st = jc__fail(JC_ERR_INVALID_ARGUMENT, "the GPU selection '%s' names no GPU: a cap session needs one",
                      o.gpus ? o.gpus : "all");
    /* Permission first: a no-op write of the limit in force, under each GPU's lock. */
    for (int i = 0; st == JC_OK && i < s->n; i++) {
        int fd = -1;
        st = jc__cap_lock(s->dir, s->gpus[i].id.uuid, &fd);
        if (st == JC_OK) {
            st = jc__capgpu_probe(s->nvml, &s->gpus[i]);
            jc__cap_unlock(fd);
        }
    }
    if (st == JC_OK && jc__proc_start(s->owner_pid, &s->owner_start, NULL) != 0)
        st = jc__fail(JC_ERR_IO, "cannot read the start time of this process from /proc/%d/stat", s->owner_pid);
    if (st == JC_OK) st = spawn_guardian(s, &o);
    for (int i = 0; st == JC_OK && i < s->n; i++) st = take_gpu(s, i);
    if (st != JC_OK) {
        char detail[1024];
        jc__fmt(detail, sizeof detail, "%s", jc_last_detail());
        for (int i = 0; i < s->n; i++) release_gpu(s, i);
        stop_guardian(s);
        session_free(s, 1);
        return jc__fail(st, "%s", detail);
    }
    *out = s;
    jc__clear_detail();
    return JC_OK;
}

static jc_status check_owner(const jc_cap_session *s) {
    if ((int)getpid() != s->owner_pid)
        return jc__fail(JC_ERR_STATE, "this cap session belongs to process %d (this is a forked child): its caps "
                        "can only be changed there", s->owner_pid);
    return JC_OK;
}

/* The guardian never writes after "ready": EOF or an error on its socket, or its process gone, means that
 * it died, and nothing would put the limits back if this process died.  Then the session puts the saved
 * limits back itself, at once, and refuses further changes. */
static jc_status check_guardian(jc_cap_session *s) {
    if (s->guardian_died) return jc__fail(JC_ERR_UNAVAILABLE, "%s", s->guardian_died_text);
    int dead = s->sock < 0;
    if (!dead) {
        struct pollfd p = {s->sock, POLLIN, 0};
        if (poll(&p, 1, 0) > 0) {
            char c;
            ssize_t n = recv(s->sock, &c, 1, MSG_DONTWAIT | MSG_PEEK);
            dead = n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
        }
    }
    /* /proc too: a copy of the guardian's end forked into another process would hide the EOF. */
    if (!dead && s->guardian_pid > 0 && s->guardian_start && !jc__proc_alive(s->guardian_pid, s->guardian_start))
        dead = 1;
    if (!dead) return JC_OK;
    char done[400] = "", failed[600] = "", label[256];
    for (int i = 0; i < s->n; i++) {
        if (!s->owned[i]) continue;
        unsigned was_set = s->journal[i].set_mw, saved = s->journal[i].original_mw;
        jc__capgpu_label(&s->gpus[i], label, sizeof label);
        if (release_gpu(s, i) != JC_OK)
            jc__note_append(failed, sizeof failed, "%s: %s", label, jc_last_detail());
        else if (was_set)
            jc__note_append(done, sizeof done, "%s: %g W", label, saved / 1000.0);
    }
    int pid = s->guardian_pid;
    close(s->sock);
    s->sock = -1;
    guardian_wait(-1, pid, 0); /* reap it */
    s->guardian_pid = 0;
    s->guardian_died = 1;
    if (failed[0])
        jc__fmt(s->guardian_died_text, sizeof s->guardian_died_text,
                "the power-cap guardian (process %d) of this cap session died, so nothing would put the caps back "
                "if this process died; putting the saved limits back failed for %s (its journal is kept: 'joulecap "
                "cap restore' repairs it)%s%s. The session changes no more caps: close it and open a new one",
                pid, failed, done[0] ? "; put back " : "", done);
    else
        jc__fmt(s->guardian_died_text, sizeof s->guardian_died_text,
                "the power-cap guardian (process %d) of this cap session died, so nothing would put the caps back "
                "if this process died: the session put the saved limits back itself (%s). It changes no more "
                "caps: close it and open a new session to cap again",
                pid, done[0] ? done : "none had been changed");
    return jc__fail(JC_ERR_UNAVAILABLE, "%s", s->guardian_died_text);
}

/* Indices of the session's GPUs that gpu names (-1: all). */
static jc_status targets(const jc_cap_session *s, int gpu, int *idx, int *n) {
    *n = 0;
    for (int i = 0; i < s->n; i++)
        if (gpu == -1 || s->gpus[i].cuda_index == gpu) idx[(*n)++] = i;
    if (*n) return JC_OK;
    char list[512] = "";
    size_t used = 0;
    for (int i = 0; i < s->n && used + 1 < sizeof list; i++) {
        int w = snprintf(list + used, sizeof list - used, "%s%d", i ? ", " : "", s->gpus[i].cuda_index);
        if (w < 0) break;
        used += (size_t)w;
    }
    return jc__fail(JC_ERR_NOT_FOUND, "GPU %d is not one of this cap session's GPUs (%s)", gpu, list);
}

jc_status jc_cap_session_set(jc_cap_session *s, int gpu, double watts) {
    jc__clear_detail();
    if (!s) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_cap_session_set: NULL session");
    if (s->remote) return jc__capd_session_set(s->remote, gpu, watts);
    pthread_mutex_lock(&s->lock);
    int idx[JC__CAP_MAX_GPUS], n = 0;
    unsigned mw[JC__CAP_MAX_GPUS];
    jc_status st = check_owner(s);
    if (st == JC_OK) st = targets(s, gpu, idx, &n);
    if (st == JC_OK) st = check_guardian(s);
    for (int k = 0; st == JC_OK && k < n; k++) st = jc__capgpu_check(&s->gpus[idx[k]], watts, &mw[k]);
    for (int k = 0; st == JC_OK && k < n; k++) st = set_gpu(s, idx[k], mw[k]);
    pthread_mutex_unlock(&s->lock);
    if (st == JC_OK) jc__clear_detail();
    return st;
}

jc_status jc_cap_session_reset(jc_cap_session *s, int gpu, jc_cap_reset_kind *did) {
    jc__clear_detail();
    if (did) *did = JC_CAP_RESET_NONE;
    if (!s) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_cap_session_reset: NULL session");
    if (s->remote) return jc__capd_session_reset(s->remote, gpu, did);
    pthread_mutex_lock(&s->lock);
    int idx[JC__CAP_MAX_GPUS], n = 0;
    jc_status st = check_owner(s);
    if (st == JC_OK) st = targets(s, gpu, idx, &n);
    if (st == JC_OK) st = check_guardian(s);
    for (int k = 0; st == JC_OK && k < n; k++) {
        int i = idx[k];
        if (s->journal[i].set_mw != 0) {
            st = restore_gpu(s, i);
            if (st == JC_OK && did) *did = JC_CAP_RESET_SAVED;
        } else {
            char label[256];
            if (!s->gpus[i].default_mw)
                st = jc__fail(JC_ERR_NOT_SUPPORTED, "%s does not report its default power limit",
                              jc__capgpu_label(&s->gpus[i], label, sizeof label));
            else
                st = set_gpu(s, i, s->gpus[i].default_mw);
            if (st == JC_OK && did) *did = JC_CAP_RESET_DEFAULT;
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (st == JC_OK) jc__clear_detail();
    return st;
}

jc_status jc_cap_session_restore(jc_cap_session *s) {
    jc__clear_detail();
    if (!s) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_cap_session_restore: NULL session");
    if (s->remote) return jc__capd_session_restore(s->remote);
    pthread_mutex_lock(&s->lock);
    jc_status first = check_owner(s);
    for (int i = 0; first == JC_OK && i < s->n; i++) {
        jc_status st = restore_gpu(s, i);
        if (st != JC_OK && first == JC_OK) first = st;
    }
    pthread_mutex_unlock(&s->lock);
    if (first == JC_OK) jc__clear_detail();
    return first;
}

jc_status jc_cap_session_close(jc_cap_session *s) {
    jc__clear_detail();
    if (!s) return JC_OK;
    if (s->remote) {
        jc_status rst = jc__capd_session_close(s->remote);
        s->remote = NULL;
        session_free(s, 0);
        return rst;
    }
    if ((int)getpid() != s->owner_pid) {
        session_free(s, 0); /* a forked child: the caps are the parent's */
        return JC_OK;
    }
    pthread_mutex_lock(&s->lock);
    jc_status first = JC_OK;
    char detail[1024] = "";
    for (int i = 0; i < s->n; i++) {
        jc_status st = release_gpu(s, i);
        if (st != JC_OK && first == JC_OK) {
            first = st;
            jc__fmt(detail, sizeof detail, "%s (its journal is kept: 'joulecap cap restore' repairs it)",
                    jc_last_detail());
        }
    }
    /* Journals still here (a failed restore) are the guardian's to retry. */
    stop_guardian(s);
    pthread_mutex_unlock(&s->lock);
    session_free(s, 1);
    if (first != JC_OK) return jc__fail(first, "%s", detail);
    return JC_OK;
}

int jc_cap_session_gpu_count(const jc_cap_session *s) {
    if (s && s->remote) return jc__capd_session_gpu_count(s->remote);
    return s ? s->n : 0;
}

jc_status jc_cap_session_info_get(jc_cap_session *s, int i, jc_cap_info *out) {
    jc__clear_detail();
    if (!s || !out) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_cap_session_info_get: NULL argument");
    if (s->remote) return jc__capd_session_gpu(s->remote, i, out);
    if (i < 0 || i >= s->n)
        return jc__fail(JC_ERR_NOT_FOUND, "GPU %d of the session: it has %d (0 to %d)", i, s->n, s->n - 1);
    pthread_mutex_lock(&s->lock);
    jc__capgpu_read_limits(s->nvml, &s->gpus[i]);
    jc__capgpu_describe(&s->gpus[i], s->dir, out);
    pthread_mutex_unlock(&s->lock);
    return JC_OK;
}

const char *jc_cap_session_note(const jc_cap_session *s) {
    if (s && s->remote) return jc__capd_session_note(s->remote);
    return s ? s->note : "";
}
