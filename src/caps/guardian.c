/* The guardian: `joulecap cap __guard --fd N --journal-dir DIR --owner PID --owner-start T`.
 *
 * Started by jc_cap_session_open() as a fresh exec.  It leaves the owner's session (no Ctrl-C or hangup of
 * the terminal reaches it; SIGINT, SIGHUP, SIGQUIT, SIGPIPE are ignored anyway), closes every descriptor but
 * its socket and the standard ones, answers "ready", then waits until the owner's session ends: EOF on the
 * socket (close, exec, death) or the owner no longer alive in /proc (checked every 200 ms, for when a forked
 * child keeps a copy of the owner's end).  Then it restores every journal that names its owner (pid + start
 * time) and itself as guardian, and exits.  NVML is opened only when there is something to restore. */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "caps_internal.h"

static void close_others(int keep) {
#ifdef SYS_close_range
    if (keep > 3) {
        if (syscall(SYS_close_range, 3u, (unsigned)keep - 1, 0u) == 0 &&
            syscall(SYS_close_range, (unsigned)keep + 1, ~0u, 0u) == 0)
            return;
    } else if (syscall(SYS_close_range, (unsigned)keep + 1, ~0u, 0u) == 0) {
        return;
    }
#endif
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 65536) max = 65536;
    for (int fd = 3; fd < max; fd++)
        if (fd != keep) close(fd);
}

static int ours(const jc__journal *j, int owner, unsigned long long start, int me) {
    return j->owner_pid == owner && j->owner_start == start && j->guardian_pid == me;
}

/* Restores the journals of this guardian's session.  Returns the number that failed. */
static int restore_owned(const char *dir, int owner, unsigned long long start) {
    int me = (int)getpid();
    enum { MAXJ = JC__CAP_MAX_GPUS * 4 };
    char (*stems)[128] = calloc(MAXJ, sizeof *stems);
    char (*uuids)[96] = calloc(MAXJ, sizeof *uuids);
    int nj = stems && uuids ? jc__journal_list(dir, stems, MAXJ) : -1;
    if (nj < 0) {
        fprintf(stderr, "joulecap cap guardian (owner pid %d): %s; run 'joulecap cap restore'\n", owner,
                stems && uuids ? jc_last_detail() : "out of memory");
        free(stems);
        free(uuids);
        return 1;
    }
    int n = 0;
    for (int k = 0; k < nj; k++) {
        jc__journal j;
        int exists = 0;
        if (!jc__cap_name_ok(stems[k])) continue;
        if (jc__journal_read(dir, stems[k], &j, &exists) != JC_OK) {
            /* Damaged: whose it is cannot be known; kept for 'joulecap cap restore'.  Said when the owner
             * died (at a normal close the owner has put its own GPUs back). */
            if (!jc__proc_alive(owner, start))
                fprintf(stderr, "joulecap cap guardian (owner pid %d): %s\n", owner, jc_last_detail());
            continue;
        }
        if (exists && ours(&j, owner, start, me)) jc__fmt(uuids[n++], sizeof uuids[0], "%s", j.uuid);
    }
    free(stems);
    if (n == 0) {
        free(uuids);
        return 0; /* the normal end: the session put everything back itself */
    }
    int failed = 0;
    jc__nvml *nvml = NULL;
    char why[512];
    jc__capgpu *gpus = calloc(JC__CAP_MAX_GPUS, sizeof *gpus);
    int ng = 0;
    if (!gpus || jc__nvml_open(&nvml, why, sizeof why) != JC_OK ||
        jc__capgpu_all(nvml, gpus, JC__CAP_MAX_GPUS, &ng) != JC_OK) {
        fprintf(stderr, "joulecap cap guardian (owner pid %d): cannot open NVML to restore %d GPU(s): %s; run "
                "'joulecap cap restore'\n", owner, n, jc_last_detail());
        free(gpus);
        free(uuids);
        jc__nvml_close(nvml);
        return n;
    }
    for (int k = 0; k < n; k++) {
        const jc__capgpu *g = NULL;
        for (int i = 0; i < ng; i++)
            if (gpus[i].status == JC_OK && strcmp(gpus[i].id.uuid, uuids[k]) == 0) g = &gpus[i];
        if (!g) {
            /* Lost or gone: the others are restored all the same. */
            fprintf(stderr, "joulecap cap guardian: GPU %s is gone or cannot be identified; its journal is kept "
                    "for 'joulecap cap restore'\n", uuids[k]);
            failed++;
            continue;
        }
        int fd = -1;
        jc_status st = jc__cap_lock(dir, uuids[k], &fd);
        if (st == JC_OK) {
            jc__journal j;
            int exists = 0;
            st = jc__journal_read(dir, uuids[k], &j, &exists);
            /* Re-checked under the lock: somebody (cap restore, a new session) may have repaired it. */
            if (st == JC_OK && exists && ours(&j, owner, start, me)) {
                unsigned restored = 0;
                int more = 0;
                st = jc__journal_restore_step(nvml, dir, &j, g, &restored, &more);
            }
            jc__cap_unlock(fd);
        }
        if (st != JC_OK) {
            const char *d = jc_last_detail();
            fprintf(stderr, "joulecap cap guardian (owner pid %d): %s: %s%s\n", owner, uuids[k], d,
                    strstr(d, "joulecap cap restore") ? "" : "; run 'joulecap cap restore'");
            failed++;
        }
    }
    free(gpus);
    free(uuids);
    jc__nvml_close(nvml);
    return failed;
}

int jc_cap_guardian_main(int argc, char **argv) {
    int fd = -1, owner = 0;
    unsigned long long start = 0;
    const char *dir = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (strcmp(k, "--fd") == 0) fd = atoi(v);
        else if (strcmp(k, "--journal-dir") == 0) dir = v;
        else if (strcmp(k, "--owner") == 0) owner = atoi(v);
        else if (strcmp(k, "--owner-start") == 0) start = strtoull(v, NULL, 10);
    }
    if (fd < 0 || !dir || owner <= 0) {
        fprintf(stderr, "joulecap cap __guard: internal command of joulecap's cap sessions (needs --fd, "
                "--journal-dir, --owner, --owner-start)\n");
        return 2;
    }
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTSTP, SIG_IGN);
    setsid(); /* fails harmlessly when posix_spawn already made it a session leader */
    close_others(fd);
    /* The directory as the session checked it; checked again here, since the guardian may hold privileges. */
    jc_cap_options o;
    jc_cap_options_init(&o);
    o.state_dir = dir;
    char checked[512];
    if (jc__cap_dir(&o, checked, sizeof checked, 1) != JC_OK) {
        fprintf(stderr, "joulecap cap __guard: %s\n", jc_last_detail());
        return 2;
    }
    dir = checked;
    static const char ready[] = "ready\n";
    if (write(fd, ready, sizeof ready - 1) != (ssize_t)(sizeof ready - 1)) {
        /* The owner is already gone: restore at once. */
    } else {
        for (;;) {
            struct pollfd p = {fd, POLLIN, 0};
            int r = poll(&p, 1, 200);
            if (r < 0 && errno == EINTR) continue;
            if (r > 0) {
                char buf[256];
                ssize_t n = read(fd, buf, sizeof buf);
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) break; /* EOF or error: the owner's session ended */
                continue;          /* no message is defined; ignore */
            }
            if (r < 0) break;
            if (!jc__proc_alive(owner, start)) break;
        }
    }
    int failed = restore_owned(dir, owner, start);
    close(fd); /* the owner's close waits for this */
    return failed ? 1 : 0;
}
