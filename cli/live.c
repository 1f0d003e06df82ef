/* The --live readout: a thread that reads the sampler's latest values (jc_reading_get, no device call) every
 * 0.5 s and rewrites one line on stderr with "\r" and the terminal's erase-to-end-of-line. */
#include "live.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LIVE_PERIOD_NS 500000000L

struct jc_cli_live {
    jc_context *ctx;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    uint64_t t0_ns;
};

static void fmt_energy(char *buf, size_t len, double j) {
    if (!isfinite(j)) snprintf(buf, len, "-");
    else if (j < 1e3) snprintf(buf, len, "%.0f J", j);
    else if (j < 1e6) snprintf(buf, len, "%.2f kJ", j / 1e3);
    else snprintf(buf, len, "%.2f MJ", j / 1e6);
}

void jc_cli_live_format(jc_context *ctx, double elapsed_s, char *buf, size_t len) {
    size_t n = (size_t)snprintf(buf, len, "  live %7.1f s", elapsed_s);
    double total_w = 0, total_j = 0;
    int any = 0;
    int count = jc_device_count(ctx);
    /* GPUs first (what people watch), then the CPU. */
    for (int k = 1; k <= count && n < len; k++) {
        int d = k % count;
        jc_device_info info;
        jc_reading r;
        if (jc_device_info_get(ctx, d, &info) != JC_OK || jc_reading_get(ctx, d, &r) != JC_OK) continue;
        char name[16];
        if (info.kind == JC_DEVICE_CPU) snprintf(name, sizeof name, "CPU");
        else snprintf(name, sizeof name, "GPU %d", info.index);
        const char *est = info.kind == JC_DEVICE_CPU && info.energy_source == JC_SOURCE_ESTIMATE ? "~" : "";
        if (isfinite(r.power_w)) {
            n += (size_t)snprintf(buf + n, len - n, " | %s %s%.0f W", name, est, r.power_w);
            total_w += r.power_w;
            any = 1;
        } else {
            n += (size_t)snprintf(buf + n, len - n, " | %s -", name);
        }
        if (isfinite(r.energy_j)) total_j += r.energy_j;
    }
    if (n < len && any) {
        char e[32];
        fmt_energy(e, sizeof e, total_j);
        snprintf(buf + n, len - n, " | total %.0f W, %s", total_w, e);
    }
}

static void *live_main(void *arg) {
    jc_cli_live *l = arg;
    pthread_mutex_lock(&l->mu);
    while (!l->stop) {
        pthread_mutex_unlock(&l->mu);
        char line[512];
        jc_cli_live_format(l->ctx, (double)(jc_now_ns() - l->t0_ns) * 1e-9, line, sizeof line);
        /* \033[K erases what a longer previous line left; one write so that the line is not torn. */
        fprintf(stderr, "\r%s\033[K", line);
        fflush(stderr);
        pthread_mutex_lock(&l->mu);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += LIVE_PERIOD_NS;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!l->stop && pthread_cond_timedwait(&l->cv, &l->mu, &until) == 0) {
        }
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

jc_cli_live *jc_cli_live_start(jc_context *ctx) {
    if (!isatty(STDERR_FILENO)) return NULL;
    jc_cli_live *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->ctx = ctx;
    l->t0_ns = jc_now_ns();
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    if (pthread_create(&l->thread, NULL, live_main, l) != 0) {
        pthread_cond_destroy(&l->cv);
        pthread_mutex_destroy(&l->mu);
        free(l);
        return NULL;
    }
    return l;
}

void jc_cli_live_stop(jc_cli_live *l) {
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    fputs("\r\033[K", stderr);
    fflush(stderr);
    free(l);
}
