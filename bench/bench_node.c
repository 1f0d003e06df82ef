/* One sampler per node (issue 14 part 2), run by bench/run_node.sh on the GPU machine.
 *
 *   bench_node client SECONDS SETTLE_S
 *       one measuring process: a context on GPU 0 (default options; JOULECAP_DAEMON decides whether its GPU is
 *       read through joulecapd or in this process), a 100 ms window every 200 ms on an absolute schedule,
 *       each result read after the next window stops; prints one JSON line with the process's CPU time over
 *       the SECONDS after SETTLE_S (getrusage: every thread), the route, and the windows' energies
 *   bench_node ipc SOCKET DAEMON_PID UUID N
 *       the data path alone: N SERIES requests back to back on one connection (as a client's reader makes
 *       them, 20 a second while windows are open), with the CPU time of this process and of the daemon
 *       (/proc/PID/stat) per request; then the alternative, a seqlock'd shared-memory ring of 64 knots read
 *       N times while a writer thread adds a knot every 100 ms (what a memfd exported by the daemon would
 *       cost a client per poll, the set-up and SCM_RIGHTS passing left out) */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/context.h"
#include "joulecap.h"

static double now_s(void) { return (double)jc_now_ns() * 1e-9; }

static double process_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

static double pid_cpu_s(int pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return NAN;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) return NAN;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void sleep_until(uint64_t t) {
    struct timespec ts = {(time_t)(t / 1000000000ull), (long)(t % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static int client(double seconds, double settle_s) {
    jc_options o;
    jc_options_init(&o);
    o.gpus = "0";
    jc_context *ctx;
    if (jc_open(&ctx, &o) != JC_OK) {
        fprintf(stderr, "bench_node: jc_open: %s\n", jc_last_detail());
        return 1;
    }
    char ver[96], note[1024];
    jc_gpu_driver(ctx, ver, sizeof ver, note, sizeof note);
    int remote = strstr(note, "read by joulecapd") != NULL;
    if (jc_device_count(ctx) < 2) {
        fprintf(stderr, "bench_node: no GPU: %s\n", note);
        return 1;
    }
    enum { NW = 4096 };
    static jc_window w[NW];
    int nw = 0, got = 0, cut = 0;
    double e_sum = 0, unc_sum = 0, cov_min = 1;
    uint64_t t = jc_now_ns();
    uint64_t settle = t + (uint64_t)(settle_s * 1e9), end = settle + (uint64_t)(seconds * 1e9);
    double c0 = 0, w0 = 0;
    int measuring = 0;
    for (;;) {
        uint64_t now = jc_now_ns();
        if (!measuring && now >= settle) {
            measuring = 1;
            c0 = process_cpu_s();
            w0 = now_s();
        }
        if (now >= end) break;
        sleep_until(t);
        if (nw < NW) jc_window_start(ctx, NULL, &w[nw]);
        sleep_until(t + 100000000ull);
        if (nw < NW) {
            jc_window_stop(ctx, w[nw]);
            if (nw > 0) {
                jc_window_result r;
                if (jc_window_result_get(ctx, w[nw - 1], 1.0, &r) == JC_OK && measuring) {
                    got++;
                    e_sum += r.energy_j[1];
                    unc_sum += r.uncertainty_j[1];
                    if (r.coverage[1] < cov_min) cov_min = r.coverage[1];
                    cut += r.coverage[1] < 1;
                }
                jc_window_release(ctx, w[nw - 1]);
            }
            nw++;
        }
        t += 200000000ull;
    }
    double cpu = process_cpu_s() - c0, wall = now_s() - w0;
    jc_device_info info;
    jc_device_info_get(ctx, 1, &info);
    printf("{\"bench\":\"client\",\"pid\":%d,\"route\":\"%s\",\"seconds\":%.2f,\"cpu_s\":%.4f,"
           "\"cpu_pct_of_one_core\":%.3f,\"results\":%d,\"cut\":%d,\"min_coverage\":%.3f,\"mean_window_j\":%.3f,"
           "\"mean_uncertainty_j\":%.3f,\"health\":\"%s\"}\n",
           (int)getpid(), remote ? "joulecapd" : "in-process", wall, cpu, 100 * cpu / wall, got, cut, cov_min,
           got ? e_sum / got : 0.0, got ? unc_sum / got : 0.0, jc_health_name(info.health));
    fflush(stdout);
    jc_close(ctx);
    return 0;
}

/* ---- the data path alone -------------------------------------------------------------------------- */

static int connect_to(const char *path) {
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) return -1;
    return fd;
}

/* Sends req, reads one reply line; returns its length or -1. */
static long roundtrip(int fd, const char *req, char *buf, size_t cap) {
    size_t n = strlen(req);
    if (send(fd, req, n, MSG_NOSIGNAL) != (ssize_t)n) return -1;
    size_t used = 0;
    for (;;) {
        ssize_t got = recv(fd, buf + used, cap - used - 1, 0);
        if (got <= 0) return -1;
        used += (size_t)got;
        if (memchr(buf, '\n', used)) return (long)used;
        if (used + 1 >= cap) return -1;
    }
}

typedef struct shm_ring {
    _Atomic unsigned seq;
    unsigned len;
    uint64_t t[64];
    double e[64];
} shm_ring;

static atomic_int writer_stop;

static void *writer(void *arg) {
    shm_ring *r = arg;
    uint64_t t = jc_now_ns();
    double e = 0;
    while (!atomic_load(&writer_stop)) {
        t += 100000000ull;
        sleep_until(t);
        e += 30;
        atomic_fetch_add_explicit(&r->seq, 1, memory_order_acq_rel);
        unsigned k = r->len % 64;
        r->t[k] = t;
        r->e[k] = e;
        r->len++;
        atomic_fetch_add_explicit(&r->seq, 1, memory_order_acq_rel);
    }
    return NULL;
}

static int ipc(const char *sock, int dpid, const char *uuid, long n) {
    int fd = connect_to(sock);
    if (fd < 0) {
        fprintf(stderr, "bench_node: cannot connect to %s\n", sock);
        return 1;
    }
    char buf[8192], req[256];
    if (roundtrip(fd, "HELLO 3\n", buf, sizeof buf) < 0 || roundtrip(fd, "GPUS\n", buf, sizeof buf) < 0) return 1;
    /* Knots after "now - 150 ms": one or two per reply, as a client polling every 50 ms sees. */
    double c0 = process_cpu_s(), d0 = pid_cpu_s(dpid), w0 = now_s();
    long bytes = 0;
    for (long i = 0; i < n; i++) {
        snprintf(req, sizeof req, "SERIES %s %llu 1\n", uuid, (unsigned long long)(jc_now_ns() - 150000000ull));
        long got = roundtrip(fd, req, buf, sizeof buf);
        if (got < 0) {
            fprintf(stderr, "bench_node: request %ld failed\n", i);
            return 1;
        }
        bytes += got;
    }
    double wall = now_s() - w0, cc = process_cpu_s() - c0, dc = pid_cpu_s(dpid) - d0;
    close(fd);
    printf("{\"bench\":\"ipc\",\"path\":\"socket\",\"requests\":%ld,\"wall_us_per_request\":%.2f,"
           "\"client_cpu_us_per_request\":%.2f,\"daemon_cpu_us_per_request\":%.2f,\"reply_bytes\":%.0f,"
           "\"cpu_pct_of_one_core_at_20_per_s\":%.4f}\n",
           n, wall / n * 1e6, cc / n * 1e6, dc / n * 1e6, (double)bytes / n, (cc + dc) / n * 20 * 100);
    /* The alternative: a read-only shared ring (a memfd the daemon would fill), seqlock'd. */
    shm_ring *r = mmap(NULL, sizeof *r, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (r == MAP_FAILED) return 1;
    memset(r, 0, sizeof *r);
    /* Full from the start (64 knots 100 ms apart), as the daemon's ring would be. */
    uint64_t t0 = jc_now_ns() - 6400000000ull;
    for (unsigned k = 0; k < 64; k++) {
        r->t[k] = t0 + k * 100000000ull;
        r->e[k] = 30.0 * k;
    }
    r->len = 64;
    pthread_t th;
    pthread_create(&th, NULL, writer, r);
    double sum = 0;
    long retries = 0, copied = 0;
    c0 = process_cpu_s();
    w0 = now_s();
    for (long i = 0; i < n; i++) {
        /* A client's poll: the knots of the last 150 ms (one or two), copied under the seqlock. */
        uint64_t since = jc_now_ns() - 150000000ull;
        for (;;) {
            unsigned s0 = atomic_load_explicit(&r->seq, memory_order_acquire);
            if (s0 & 1) {
                retries++;
                continue;
            }
            uint64_t tt[64];
            double ee[64];
            int m = 0;
            unsigned len = r->len, first = len > 64 ? len - 64 : 0;
            for (unsigned k = first; k < len; k++) {
                uint64_t t = r->t[k % 64];
                if (t > since) {
                    tt[m] = t;
                    ee[m++] = r->e[k % 64];
                }
            }
            atomic_thread_fence(memory_order_acquire);
            if (atomic_load_explicit(&r->seq, memory_order_relaxed) == s0) {
                for (int j = 0; j < m; j++) sum += ee[j] + (double)(tt[j] & 1);
                copied += m;
                break;
            }
            retries++;
        }
    }
    wall = now_s() - w0;
    cc = process_cpu_s() - c0;
    atomic_store(&writer_stop, 1);
    pthread_join(th, NULL);
    printf("{\"bench\":\"ipc\",\"path\":\"shared-memory\",\"requests\":%ld,\"wall_us_per_request\":%.3f,"
           "\"client_cpu_us_per_request\":%.3f,\"daemon_cpu_us_per_request\":0,\"retries\":%ld,\"knots_per_read\":%.2f,"
           "\"checksum\":%.0f,\"cpu_pct_of_one_core_at_20_per_s\":%.6f}\n",
           n, wall / n * 1e6, cc / n * 1e6, retries, (double)copied / n, sum, cc / n * 20 * 100);
    munmap(r, sizeof *r);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "client") == 0) return client(atof(argv[2]), atof(argv[3]));
    if (argc >= 6 && strcmp(argv[1], "ipc") == 0) return ipc(argv[2], atoi(argv[3]), argv[4], atol(argv[5]));
    fprintf(stderr, "usage: bench_node client SECONDS SETTLE_S | ipc SOCKET DAEMON_PID UUID N\n");
    return 2;
}
