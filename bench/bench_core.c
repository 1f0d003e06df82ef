/* Core benchmarks for issues 2 and 11, run on the GPU machine (see bench/run_core.sh, bench/run_core11.sh and
 * BENCHMARKS.md).
 *
 *   bench_core overhead                 cost of a start+stop pair vs reading the counter at both edges
 *   bench_core sampler SECONDS          sampler CPU cost at 10 Hz and 100 Hz
 *   bench_core accuracy SECONDS SCHED [CI] window accuracy under a square-wave load whose on-intervals the load
 *                                       generator writes to SCHED when done (waits at most SECONDS); also
 *                                       the conservation check
 * Issue 11 (compiles against the code before it too, with -DJC_OLD_CORE: no uncertainty, health or flags):
 *   bench_core cpu MODE SECONDS         sampler CPU cost with default settings: MODE idle (no window, no CSV),
 *                                       csv1 (CSV rows 1 s apart), short (a 100 ms window every 200 ms),
 *                                       every (JC_EVERY_STEP, no window)
 *   bench_core windows SECONDS READY SCHED PREFIX
 *                                       real windows (jc_window_start / jc_window_stop at run time, 10 per second
 *                                       of load each of 30 ms, 100 ms, 300 ms and 1 s at random phases,
 *                                       overlapping) under the square-wave load; the load writes READY (its
 *                                       first on-phase) before it starts and SCHED when done.  Dumps the windows, the raw counter reads and
 *                                       the library's knots to PREFIX.* for bench/analyze_core11.py
 *   bench_core xcheck REPS              start-up cross-check of the counter against integrated instant power:
 *                                       opens a context REPS times, 2.5 s each, prints the figures and health
 *   bench_core readcost SECONDS         the library's CPU without counter reads (SECONDS), then the CPU time of
 *                                       one counter read by its offset after a counter step, and back to back
 *
 * The accuracy reference is independent of the method under test: a raw poller thread reads the energy
 * counter back to back (one read every 3-6 ms) to time its 100 ms steps, and a two-level power profile
 * (P_on, P_off) is fitted by least squares to those steps' increments given the known on/off schedule. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/context.h"
#include "joulecap.h"

static void die(const char *what) {
    fprintf(stderr, "bench_core: %s: %s\n", what, jc_last_detail());
    exit(1);
}

static double now_s(void) { return jc_now_ns() * 1e-9; }

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *v, int n, double p) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    int i = (int)(p * (n - 1) + 0.5);
    return v[i];
}

static jc_context *open_gpu(double interval, double counter_interval) {
    jc_options o;
    jc_options_init(&o);
    o.gpus = "0";
    o.interval_s = interval;
    o.counter_interval_s = counter_interval;
    jc_context *ctx;
    if (jc_open(&ctx, &o) != JC_OK) die("jc_open");
    if (jc_device_count(ctx) < 2 || ctx->dev[1].info.energy_source != JC_SOURCE_COUNTER) {
        char note[512] = "";
        jc_gpu_driver(ctx, NULL, 0, note, sizeof note);
        fprintf(stderr, "bench_core: needs a GPU with an energy counter (%s)\n", note);
        exit(1);
    }
    return ctx;
}

static void overhead(void) {
    jc_context *ctx = open_gpu(0.01, 0);
    enum { N = 200000 };
    jc_window *ids = malloc(sizeof *ids * 1000);
    double t0 = now_s();
    for (int i = 0; i < N; i++) {
        jc_window w;
        jc_window_start(ctx, NULL, &w);
        jc_window_stop(ctx, w);
        jc_window_release(ctx, w);
    }
    double pair_release = (now_s() - t0) / N;
    /* start + stop alone (windows kept), in batches of 1000 */
    double total = 0;
    int done = 0;
    for (int b = 0; b < 50; b++) {
        double s = now_s();
        for (int i = 0; i < 1000; i++) {
            jc_window_start(ctx, NULL, &ids[i]);
            jc_window_stop(ctx, ids[i]);
        }
        total += now_s() - s;
        done += 1000;
        for (int i = 0; i < 1000; i++) jc_window_release(ctx, ids[i]);
    }
    double pair = total / done;
    /* Edge reads: the seed's and Zeus's method, one counter read per edge. */
    double reads[400];
    for (int i = 0; i < 400; i++) {
        unsigned long long mj;
        double s = now_s();
        ctx->nvml->nvmlDeviceGetTotalEnergyConsumption(ctx->dev[1].handle, &mj);
        reads[i] = now_s() - s;
    }
    double p50 = pct(reads, 400, 0.5), p90 = pct(reads, 400, 0.9), mx = pct(reads, 400, 1.0);
    printf("{\"bench\":\"overhead\",\"pair_us\":%.3f,\"pair_with_release_us\":%.3f,"
           "\"edge_read_p50_ms\":%.3f,\"edge_read_p90_ms\":%.3f,\"edge_read_max_ms\":%.3f,"
           "\"edge_pair_p50_ms\":%.3f}\n",
           pair * 1e6, pair_release * 1e6, p50 * 1e3, p90 * 1e3, mx * 1e3, 2 * p50 * 1e3);
    free(ids);
    jc_close(ctx);
}

static double process_cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void sampler_cost(double seconds) {
    double intervals[2] = {0.1, 0.01}, counter[3] = {0, 0.5, 1.0};
    for (int c = 0; c < 3; c++) {
        for (int k = 0; k < 2; k++) {
            jc_context *ctx = open_gpu(intervals[k], counter[c]);
            sleep(2); /* past the lock-on to the counter's clock (back-to-back reads for ~0.5 s) */
            uint64_t r0 = ctx->dev[1].counter.n_reads;
            double c0 = process_cpu_s(), w0 = now_s();
            sleep((unsigned)seconds);
            double cpu = process_cpu_s() - c0, wall = now_s() - w0;
            jc__counter_track *t = &ctx->dev[1].counter;
            printf("{\"bench\":\"sampler\",\"interval_s\":%g,\"counter_interval_s\":%g,"
                   "\"cpu_pct_of_one_core\":%.3f,\"cycles\":%llu,\"counter_reads_per_s\":%.1f,"
                   "\"probes\":%llu,\"late\":%llu,\"unlocks\":%llu,\"locked\":%d,\"period_ms\":%.4f,"
                   "\"jitter_ms\":%.2f}\n",
                   intervals[k], counter[c], 100 * cpu / wall, (unsigned long long)ctx->cycles,
                   (t->n_reads - r0) / wall, (unsigned long long)t->n_probes, (unsigned long long)t->n_late,
                   (unsigned long long)t->n_unlocks, t->locked, t->period_ns / 1e6, t->jitter_ns / 1e6);
            jc_close(ctx);
        }
    }
}

/* ---- accuracy ---------------------------------------------------------------------------------------- */

typedef struct raw_read {
    uint64_t mid;
    unsigned long long mj;
} raw_read;

typedef struct poller {
    jc_context *ctx;
    raw_read *r;
    int n, cap;
    volatile int stop;
} poller;

static void *poll_main(void *arg) {
    poller *p = arg;
    while (!p->stop && p->n < p->cap) {
        unsigned long long mj;
        uint64_t a = jc_now_ns();
        if (p->ctx->nvml->nvmlDeviceGetTotalEnergyConsumption(p->ctx->dev[1].handle, &mj) != NVML_SUCCESS) continue;
        uint64_t b = jc_now_ns();
        p->r[p->n].mid = a + (b - a) / 2;
        p->r[p->n].mj = mj;
        p->n++;
    }
    return NULL;
}

typedef struct iv {
    uint64_t a, b;
} iv;

static double overlap_on(const iv *on, int non, uint64_t a, uint64_t b) {
    double s = 0;
    for (int i = 0; i < non; i++) {
        uint64_t lo = on[i].a > a ? on[i].a : a, hi = on[i].b < b ? on[i].b : b;
        if (hi > lo) s += (hi - lo) * 1e-9;
    }
    return s;
}

/* Counter value as an edge read at t would see it: the raw read nearest t. */
static double edge_value(const poller *p, uint64_t t) {
    int lo = 0, hi = p->n - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (p->r[mid].mid < t) lo = mid + 1;
        else hi = mid;
    }
    if (lo > 0 && t - p->r[lo - 1].mid < p->r[lo].mid - t) lo--;
    return p->r[lo].mj * 1e-3;
}

/* A plain 10 Hz sampler's view: reads every 100 ms, linear interpolation between the read instants. */
static double linear_value(const poller *p, uint64_t t) {
    uint64_t t0 = p->r[0].mid;
    uint64_t k = (t - t0) / 100000000ull;
    uint64_t ta = t0 + k * 100000000ull, tb = ta + 100000000ull;
    double ea = edge_value(p, ta), eb = edge_value(p, tb);
    return ea + (eb - ea) * (double)(t - ta) / (double)(tb - ta);
}

static uint64_t rnd_state = 88172645463325252ull;
static double urand(void) {
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return (rnd_state >> 11) * (1.0 / 9007199254740992.0);
}

static void accuracy(double seconds, const char *sched_path, double counter_interval) {
    jc_context *ctx = open_gpu(0.01, counter_interval);
    poller p = {.ctx = ctx, .cap = 200000};
    p.r = malloc(sizeof *p.r * (size_t)p.cap);
    pthread_t th;
    pthread_create(&th, NULL, poll_main, &p);
    /* The load generator writes its schedule when it is done; keep polling until then (at most SECONDS). */
    uint64_t end = jc_now_ns() + (uint64_t)(seconds * 1e9);
    FILE *f = NULL;
    while (!f && jc_now_ns() < end) {
        usleep(100000);
        f = fopen(sched_path, "r");
    }
    usleep(300000);
    p.stop = 1;
    pthread_join(th, NULL);
    if (!f) die("no schedule file");
    iv *on = malloc(sizeof *on * 10000);
    int non = 0;
    unsigned long long a, b;
    while (non < 10000 && fscanf(f, "%llu %llu", &a, &b) == 2) on[non++] = (iv){a, b};
    fclose(f);
    if (non < 4) die("schedule too short");
    uint64_t span_a = on[0].a, span_b = on[non - 1].b;
    /* Steps from the raw poller. */
    double s00 = 0, s01 = 0, s11 = 0, y0 = 0, y1 = 0;
    uint64_t prev_step = 0;
    unsigned long long prev_mj = 0;
    int nsteps = 0;
    for (int i = 1; i < p.n; i++) {
        if (p.r[i].mj == p.r[i - 1].mj) continue;
        uint64_t step = p.r[i - 1].mid + (p.r[i].mid - p.r[i - 1].mid) / 2;
        if (prev_step && prev_step >= span_a && step <= span_b) {
            double ton = overlap_on(on, non, prev_step, step);
            double toff = (step - prev_step) * 1e-9 - ton;
            double de = (p.r[i].mj - prev_mj) * 1e-3;
            s00 += ton * ton;
            s01 += ton * toff;
            s11 += toff * toff;
            y0 += ton * de;
            y1 += toff * de;
            nsteps++;
        }
        prev_step = step;
        prev_mj = p.r[i].mj;
    }
    double det = s00 * s11 - s01 * s01;
    double p_on = (y0 * s11 - y1 * s01) / det, p_off = (s00 * y1 - s01 * y0) / det;
    printf("{\"bench\":\"reference\",\"p_on_w\":%.1f,\"p_off_w\":%.1f,\"steps\":%d,\"raw_reads\":%d}\n", p_on,
           p_off, nsteps, p.n);
    double sizes[4] = {0.03, 0.1, 0.3, 1.0};
    for (int k = 0; k < 4; k++) {
        enum { W = 300 };
        double err_ours = 0, err_edge = 0, err_lin = 0;
        int n = 0;
        for (int i = 0; i < W; i++) {
            double len = sizes[k];
            double room = (span_b - span_a) * 1e-9 - len - 0.4;
            uint64_t t0 = span_a + (uint64_t)((0.2 + urand() * room) * 1e9);
            uint64_t t1 = t0 + (uint64_t)(len * 1e9);
            double ton = overlap_on(on, non, t0, t1);
            double ref = p_on * ton + p_off * (len - ton);
            jc_window_result r;
            if (jc_energy_between(ctx, t0, t1, 1.0, &r) != JC_OK) continue;
            double ours = r.energy_j[1];
            double edge = edge_value(&p, t1) - edge_value(&p, t0);
            double lin = linear_value(&p, t1) - linear_value(&p, t0);
            err_ours += fabs(ours - ref) / ref;
            err_edge += fabs(edge - ref) / ref;
            err_lin += fabs(lin - ref) / ref;
            n++;
        }
        printf("{\"bench\":\"accuracy\",\"counter_interval_s\":%g,\"window_s\":%g,\"n\":%d,\"mae_pct_joulecap\":%.2f,"
               "\"mae_pct_edge_reads\":%.2f,\"mae_pct_linear_10hz\":%.2f}\n",
               counter_interval, sizes[k], n, 100 * err_ours / n, 100 * err_edge / n, 100 * err_lin / n);
    }
    /* Conservation: consecutive windows of random lengths tiling the load span. */
    double sum = 0;
    uint64_t t = span_a;
    int nw = 0;
    jc_window_result r;
    while (t < span_b) {
        uint64_t t1 = t + (uint64_t)((0.01 + urand() * 0.2) * 1e9);
        if (t1 > span_b) t1 = span_b;
        if (jc_energy_between(ctx, t, t1, 1.0, &r) != JC_OK) die("tiling window");
        sum += r.energy_j[1];
        t = t1;
        nw++;
    }
    if (jc_energy_between(ctx, span_a, span_b, 1.0, &r) != JC_OK) die("whole window");
    printf("{\"bench\":\"conservation\",\"windows\":%d,\"sum_j\":%.3f,\"whole_j\":%.3f,\"rel_diff_pct\":%.6f}\n",
           nw, sum, r.energy_j[1], 100 * fabs(sum - r.energy_j[1]) / r.energy_j[1]);
    free(on);
    free(p.r);
    jc_close(ctx);
}

/* ---- issue 11: sampler cost with default settings, real windows, start-up cross-check ------------------ */

static void sleep_until(uint64_t t) {
    struct timespec ts = {(time_t)(t / 1000000000ull), (long)(t % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0) {
    }
}

static const char *health_of(jc_context *ctx, int dev, char *note, size_t len) {
#ifdef JC_OLD_CORE
    (void)ctx;
    (void)dev;
    snprintf(note, len, "%s", "");
    return "n/a";
#else
    jc_device_info info;
    if (jc_device_info_get(ctx, dev, &info) != JC_OK) return "?";
    snprintf(note, len, "%s", info.health_note);
    for (char *c = note; *c; c++)
        if (*c == '"' || *c == '\\') *c = '\'';
    return jc_health_name(info.health);
#endif
}

static void cpu_cost(const char *mode, double seconds) {
    jc_options o;
    jc_options_init(&o);
    o.gpus = "0";
    char csv[96] = "";
    int shortw = strcmp(mode, "short") == 0;
    if (strcmp(mode, "csv1") == 0) {
        snprintf(csv, sizeof csv, "/tmp/jc-bench-cpu-%d.csv", (int)getpid());
        o.csv_path = csv;
        o.csv_interval_s = 1.0;
    } else if (strcmp(mode, "every") == 0) {
#ifndef JC_OLD_CORE
        o.flags |= JC_EVERY_STEP;
#endif
    } else if (!shortw && strcmp(mode, "idle") != 0) {
        fprintf(stderr, "bench_core: cpu MODE is idle, csv1, short or every\n");
        exit(2);
    }
    jc_context *ctx;
    if (jc_open(&ctx, &o) != JC_OK) die("jc_open");
    if (jc_device_count(ctx) < 2 || ctx->dev[1].info.energy_source != JC_SOURCE_COUNTER) die("no GPU counter");
    /* Short windows: one of 100 ms every 200 ms on an absolute schedule; each result is read (and the window
     * released) after the next one stops, as a training loop would. */
    enum { NW = 4096 };
    static jc_window w[NW];
    int nw = 0, got = 0, late = 0;
    double unc_sum = 0, e_sum = 0;
    uint64_t t = jc_now_ns();
    /* JC_BENCH_SETTLE_S: how long before the measured stretch (default 3 s; the counter is read every step
     * until its fit settles, ~10 s, so a later start gives the steady state). */
    const char *ss = getenv("JC_BENCH_SETTLE_S");
    double settle_s = ss && atof(ss) > 0 ? atof(ss) : 3.0;
    uint64_t settle = t + (uint64_t)(settle_s * 1e9), end = settle + (uint64_t)(seconds * 1e9);
    uint64_t r0 = 0;
    double c0 = 0, w0 = 0;
    int measuring = 0;
    for (;;) {
        uint64_t now = jc_now_ns();
        if (!measuring && now >= settle) {
            measuring = 1;
            r0 = ctx->dev[1].counter.n_reads;
            c0 = process_cpu_s();
            w0 = now_s();
        }
        if (now >= end) break;
        if (!shortw) {
            sleep_until(measuring ? end : settle);
            continue;
        }
        sleep_until(t);
        if (nw < NW) jc_window_start(ctx, NULL, &w[nw]);
        sleep_until(t + 100000000ull);
        if (nw < NW) {
            jc_window_stop(ctx, w[nw]);
            if (nw > 0) {
                jc_window_result r;
                if (jc_window_result_get(ctx, w[nw - 1], 1.0, &r) == JC_OK) {
                    got++;
                    e_sum += r.energy_j[1];
#ifndef JC_OLD_CORE
                    unc_sum += r.uncertainty_j[1];
#endif
                }
                jc_window_release(ctx, w[nw - 1]);
            }
            nw++;
        }
        t += 200000000ull;
        if (t < jc_now_ns()) late++;
    }
    double cpu = process_cpu_s() - c0, wall = now_s() - w0;
    jc__counter_track *c = &ctx->dev[1].counter;
    char note[256];
    const char *h = health_of(ctx, 1, note, sizeof note);
    printf("{\"bench\":\"cpu\",\"mode\":\"%s\",\"seconds\":%.2f,\"cpu_pct_of_one_core\":%.3f,"
           "\"counter_reads_per_s\":%.2f,\"windows\":%d,\"results\":%d,\"late_windows\":%d,"
           "\"mean_window_j\":%.2f,\"mean_uncertainty_j\":%.2f,\"cycles\":%llu,\"probes\":%llu,\"late\":%llu,"
           "\"unlocks\":%llu,\"locked\":%d,\"period_ms\":%.4f,\"jitter_ms\":%.3f,\"health\":\"%s\",\"note\":\"%s\"}\n",
           mode, wall, 100 * cpu / wall, (c->n_reads - r0) / wall, nw, got, late, got ? e_sum / got : 0.0,
           got ? unc_sum / got : 0.0, (unsigned long long)ctx->cycles, (unsigned long long)c->n_probes,
           (unsigned long long)c->n_late, (unsigned long long)c->n_unlocks, c->locked, c->period_ns / 1e6,
           c->jitter_ns / 1e6, h, note);
    fflush(stdout);
    jc_close(ctx);
    if (csv[0]) unlink(csv);
}

typedef struct wplan {
    double len;
    uint64_t at0, at1;
    jc_window id;
    int started;
    double sig0_ms, sig1_ms; /* the knots' timing error when the edge was taken (new code) */
} wplan;

static double knot_sigma_ms(jc_context *ctx) {
#ifdef JC_OLD_CORE
    (void)ctx;
    return NAN;
#else
    pthread_mutex_lock(&ctx->lock);
    double s = ctx->dev[1].knot_sigma_ns / 1e6;
    pthread_mutex_unlock(&ctx->lock);
    return s;
#endif
}

typedef struct wevent {
    uint64_t at;
    int idx, stop;
} wevent;

static int cmp_event(const void *a, const void *b) {
    const wevent *x = a, *y = b;
    return (x->at > y->at) - (x->at < y->at);
}

static FILE *open_out(const char *prefix, const char *suffix) {
    char path[1024];
    snprintf(path, sizeof path, "%s.%s", prefix, suffix);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "bench_core: cannot write %s\n", path);
        exit(1);
    }
    return f;
}

static void windows_bench(double seconds, const char *ready_path, const char *sched_path, const char *prefix) {
    jc_options o;
    jc_options_init(&o);
    o.gpus = "0";
    jc_context *ctx;
    if (jc_open(&ctx, &o) != JC_OK) die("jc_open");
    if (jc_device_count(ctx) < 2 || ctx->dev[1].info.energy_source != JC_SOURCE_COUNTER) die("no GPU counter");
    poller p = {.ctx = ctx, .cap = 400000};
    p.r = malloc(sizeof *p.r * (size_t)p.cap);
    pthread_t th;
    pthread_create(&th, NULL, poll_main, &p);
    /* The load writes "t0_ns seconds" (its first on-phase) about a second before it starts. */
    uint64_t give_up = jc_now_ns() + (uint64_t)(seconds * 1e9);
    FILE *f = NULL;
    while (!f && jc_now_ns() < give_up) {
        usleep(10000);
        f = fopen(ready_path, "r");
    }
    if (!f) die("no ready file");
    unsigned long long t0 = 0;
    double load_s = 0;
    if (fscanf(f, "%llu %lf", &t0, &load_s) != 2) die("bad ready file");
    fclose(f);
    /* One window now, as a program's first: the sampler reads every step from here on (new code). */
    jc_window warm;
    jc_window_start(ctx, "warm-up", &warm);
    jc_window_stop(ctx, warm);
    double sizes[4] = {0.03, 0.1, 0.3, 1.0};
    /* 10 windows of each length per second of load (300 each for the 30 s of issue 2), at most 1000. */
    int per = (int)(load_s * 10);
    if (per > 1000) per = 1000;
    if (per < 10) per = 10;
    int nwin = 4 * per;
    static wplan plan[4000];
    static wevent ev[8000];
    uint64_t first = t0 + 300000000ull;
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < per; i++) {
            wplan *w = &plan[k * per + i];
            w->len = sizes[k];
            double room = load_s - 0.6 - w->len;
            w->at0 = first + (uint64_t)(urand() * room * 1e9);
            w->at1 = w->at0 + (uint64_t)(w->len * 1e9);
        }
    for (int i = 0; i < nwin; i++) {
        ev[2 * i] = (wevent){plan[i].at0, i, 0};
        ev[2 * i + 1] = (wevent){plan[i].at1, i, 1};
    }
    qsort(ev, 2 * nwin, sizeof *ev, cmp_event);
    double worst_late_ms = 0;
    for (int e = 0; e < 2 * nwin; e++) {
        sleep_until(ev[e].at);
        double late_ms = (jc_now_ns() - ev[e].at) / 1e6;
        if (late_ms > worst_late_ms) worst_late_ms = late_ms;
        wplan *w = &plan[ev[e].idx];
        if (!ev[e].stop) {
            if (jc_window_start(ctx, NULL, &w->id) == JC_OK) w->started = 1;
            w->sig0_ms = knot_sigma_ms(ctx);
        } else if (w->started) {
            jc_window_stop(ctx, w->id);
            w->sig1_ms = knot_sigma_ms(ctx);
        }
    }
    f = NULL;
    while (!f && jc_now_ns() < give_up + 20000000000ull) {
        usleep(100000);
        f = fopen(sched_path, "r");
    }
    if (f) fclose(f);
    usleep(300000);
    p.stop = 1;
    pthread_join(th, NULL);
    if (!f) die("no schedule file");
    FILE *out = open_out(prefix, "windows.tsv");
    fprintf(out, "len_s\tt0_ns\tt1_ns\tenergy_j\tuncertainty_j\tcoverage\thealth\tresolved\tstatus\tsig0_ms\tsig1_ms\n");
    int bad = 0;
    for (int i = 0; i < nwin; i++) {
        wplan *w = &plan[i];
        if (!w->started) {
            bad++;
            continue;
        }
        jc_window_result r;
        jc_status st = jc_window_result_get(ctx, w->id, 3.0, &r);
        double unc = NAN, cov = NAN;
        int health = -1;
#ifndef JC_OLD_CORE
        unc = r.uncertainty_j[1];
        cov = r.coverage[1];
        health = (int)r.health[1];
#endif
        fprintf(out, "%g\t%llu\t%llu\t%.6f\t%.6f\t%.4f\t%d\t%d\t%d\t%.4f\t%.4f\n", w->len,
                (unsigned long long)r.start_ns, (unsigned long long)r.stop_ns, r.energy_j[1], unc, cov, health,
                r.resolved, (int)st, w->sig0_ms, w->sig1_ms);
        if (st != JC_OK) bad++;
    }
    fclose(out);
    out = open_out(prefix, "raw.tsv");
    fprintf(out, "mid_ns\tmj\n");
    for (int i = 0; i < p.n; i++) fprintf(out, "%llu\t%llu\n", (unsigned long long)p.r[i].mid, p.r[i].mj);
    fclose(out);
    pthread_mutex_lock(&ctx->lock);
    jc__device *d = &ctx->dev[1];
    out = open_out(prefix, "knots.tsv");
    fprintf(out, "t_ns\tenergy_j\n");
    for (size_t i = 0; i < d->knots.len; i++) {
        const jc__point *pt = jc__ring_at(&d->knots, i);
        fprintf(out, "%llu\t%.6f\n", (unsigned long long)pt->t_ns, pt->v);
    }
    fclose(out);
    char sigma_ms[32] = "null";
#ifndef JC_OLD_CORE
    snprintf(sigma_ms, sizeof sigma_ms, "%.4f", d->knot_sigma_ns / 1e6);
#endif
    jc__counter_track *c = &d->counter;
    pthread_mutex_unlock(&ctx->lock);
    char note[256];
    const char *h = health_of(ctx, 1, note, sizeof note);
    out = open_out(prefix, "meta.json");
    fprintf(out, "{\"t0_ns\":%llu,\"load_s\":%g,\"raw_reads\":%d,\"knots\":%zu,\"windows\":%d,\"failed\":%d,"
                 "\"worst_event_late_ms\":%.3f,\"knot_sigma_ms\":%s,\"reads\":%llu,\"probes\":%llu,"
                 "\"late\":%llu,\"unlocks\":%llu,\"locked\":%d,\"period_ms\":%.5f,\"jitter_ms\":%.4f,"
                 "\"health\":\"%s\",\"note\":\"%s\"}\n",
            t0, load_s, p.n, d->knots.len, nwin, bad, worst_late_ms, sigma_ms, (unsigned long long)c->n_reads,
            (unsigned long long)c->n_probes, (unsigned long long)c->n_late, (unsigned long long)c->n_unlocks,
            c->locked, c->period_ns / 1e6, c->jitter_ns / 1e6, h, note);
    fclose(out);
    printf("{\"bench\":\"windows\",\"prefix\":\"%s\",\"windows\":%d,\"failed\":%d,\"raw_reads\":%d,\"knots\":%zu,"
           "\"worst_event_late_ms\":%.3f,\"health\":\"%s\"}\n",
           prefix, nwin, bad, p.n, d->knots.len, worst_late_ms, h);
    free(p.r);
    jc_close(ctx);
}

#ifndef JC_OLD_CORE
/* The bench's own integration of instant power, to check the library's cross-check figures: a thread reads
 * instant power every 5 ms and keeps each new value at the driver's timestamp (as the reader places them). */
typedef struct psample {
    uint64_t t;
    double w;
} psample;

typedef struct ppoller {
    jc_context *ctx;
    psample s[4096];
    int n;
    volatile int stop;
} ppoller;

static void *ppoll_main(void *arg) {
    ppoller *p = arg;
    jc__device *d = &p->ctx->dev[1];
    int64_t last_ts = -1;
    while (!p->stop && p->n < 4096) {
        unsigned mw;
        int64_t ts = 0;
        int avg = 0;
        uint64_t a = jc_now_ns();
        nvmlReturn_t r = jc__nvml_power(p->ctx->nvml, d->handle, 1, &mw, &ts, &avg);
        uint64_t b = jc_now_ns();
        if (r == NVML_SUCCESS && (ts == 0 || ts != last_ts)) {
            uint64_t t = a + (b - a) / 2;
            if (ts > 0) {
                int64_t mono_us = ts - p->ctx->realtime_minus_mono_us;
                if (mono_us > 0 && (uint64_t)mono_us * 1000 <= b && (uint64_t)mono_us * 1000 + 1000000000ull > b)
                    t = (uint64_t)mono_us * 1000;
            }
            last_ts = ts;
            if (!p->n || t > p->s[p->n - 1].t) p->s[p->n++] = (psample){t, mw * 1e-3};
        }
        usleep(5000);
    }
    return NULL;
}

/* Integral of the held samples over [t0, t1] (the value before the first sample: the first sample's). */
static double held_integral(const ppoller *p, uint64_t t0, uint64_t t1) {
    double e = 0;
    for (int i = 0; i < p->n; i++) {
        uint64_t a = i == 0 ? 0 : p->s[i].t, b = i + 1 < p->n ? p->s[i + 1].t : UINT64_MAX;
        uint64_t lo = a > t0 ? a : t0, hi = b < t1 ? b : t1;
        if (hi > lo) e += p->s[i].w * (hi - lo) * 1e-9;
    }
    return e;
}
#endif

static void xcheck(int reps) {
#ifdef JC_OLD_CORE
    (void)reps;
    printf("{\"bench\":\"xcheck\",\"note\":\"not in this code\"}\n");
#else
    for (int k = 0; k < reps; k++) {
        jc_options o;
        jc_options_init(&o);
        o.gpus = "0";
        jc_context *ctx;
        if (jc_open(&ctx, &o) != JC_OK) die("jc_open");
        if (jc_device_count(ctx) < 2) die("no GPU");
        static ppoller pp;
        memset(&pp, 0, sizeof pp);
        pp.ctx = ctx;
        pthread_t th;
        pthread_create(&th, NULL, ppoll_main, &pp);
        usleep(2500000);
        pp.stop = 1;
        pthread_join(th, NULL);
        pthread_mutex_lock(&ctx->lock);
        jc__device *d = &ctx->dev[1];
        double counter = NAN, integ = NAN, rel = NAN, span = NAN, p_mean = NAN, own = NAN, own_rel = NAN;
        double c2 = NAN, own2 = NAN, own2_rel = NAN, span2 = NAN;
        int done = d->xcheck_done, wrapped = 0;
        if (done && d->xcheck_t0_ns) {
            size_t i = jc__ring_lower_bound(&d->knots, d->xcheck_t0_ns + 1000000000ull);
            if (i < d->knots.len) {
                const jc__point *pt = jc__ring_at(&d->knots, i);
                integ = d->xcheck_j + d->xcheck_p_w * jc__s(pt->t_ns > d->xcheck_t_ns ? pt->t_ns - d->xcheck_t_ns : 0);
                counter = pt->v - d->xcheck_e0_j;
                rel = counter > 0 ? (integ - counter) / counter : INFINITY;
                span = jc__s(pt->t_ns - d->xcheck_t0_ns);
                p_mean = counter / span;
                wrapped = integ > 1e9; /* a power sample placed before the first knot: unsigned wrap */
                own = held_integral(&pp, d->xcheck_t0_ns, pt->t_ns);
                own_rel = counter > 0 ? (own - counter) / counter : INFINITY;
            }
            /* The same over all the knots the 2.5 s gave (a longer span). */
            const jc__point *first = jc__ring_at(&d->knots, 0), *last = jc__ring_last(&d->knots);
            if (last && last->t_ns > first->t_ns) {
                c2 = last->v - first->v;
                own2 = held_integral(&pp, first->t_ns, last->t_ns);
                own2_rel = c2 > 0 ? (own2 - c2) / c2 : INFINITY;
                span2 = jc__s(last->t_ns - first->t_ns);
            }
        }
        pthread_mutex_unlock(&ctx->lock);
        char note[256];
        const char *h = health_of(ctx, 1, note, sizeof note);
        jc_health_event evs[8];
        size_t nev = 0;
        jc_device_health_get(ctx, 1, evs, 8, &nev);
        printf("{\"bench\":\"xcheck\",\"rep\":%d,\"done\":%d,\"span_s\":%.3f,\"counter_j\":%.2f,\"integrated_j\":%.6g,"
               "\"counter_w\":%.1f,\"rel_pct\":%.6g,\"wrapped\":%d,\"bench_integrated_j\":%.2f,\"bench_rel_pct\":%.2f,"
               "\"span2_s\":%.3f,\"counter2_j\":%.2f,\"bench_integrated2_j\":%.2f,\"bench_rel2_pct\":%.2f,"
               "\"power_samples\":%d,\"bound_pct\":25,\"health\":\"%s\",\"note\":\"%s\",\"health_changes\":%zu,"
               "\"power_note\":\"%s\"}\n",
               k, done, span, counter, integ, p_mean, 100 * rel, wrapped, own, 100 * own_rel, span2, c2, own2,
               100 * own2_rel, pp.n, h, note, nev, ctx->dev[1].info.power_note);
        fflush(stdout);
        jc_close(ctx);
    }
#endif
}

/* What a counter read costs this process: the library's own cost without counter reads (counter_interval_s 60:
 * one read a minute), then single reads at given offsets after a counter step (thread CPU time and wall time of
 * the call), and reads back to back. */
static double thread_cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void readcost(double seconds) {
    jc_options o;
    jc_options_init(&o);
    o.gpus = "0";
    o.counter_interval_s = 60;
    jc_context *ctx;
    if (jc_open(&ctx, &o) != JC_OK) die("jc_open");
    if (jc_device_count(ctx) < 2 || ctx->dev[1].info.energy_source != JC_SOURCE_COUNTER) die("no GPU counter");
    sleep(3);
    uint64_t r0 = ctx->dev[1].counter.n_reads;
    double c0 = process_cpu_s(), w0 = now_s();
    usleep((useconds_t)(seconds * 1e6));
    double cpu = process_cpu_s() - c0, wall = now_s() - w0;
    printf("{\"bench\":\"readcost\",\"what\":\"library without counter reads (counter_interval_s 60)\","
           "\"cpu_pct_of_one_core\":%.3f,\"counter_reads\":%llu,\"seconds\":%.1f}\n",
           100 * cpu / wall, (unsigned long long)(ctx->dev[1].counter.n_reads - r0), wall);
    fflush(stdout);
    nvmlDevice_t h = ctx->dev[1].handle;
    double offsets[] = {-1, 1, 3, 6, 10, 20, 35, 50, 70, 90}; /* -1: back to back */
    enum { REPS = 12 };
    for (size_t k = 0; k < sizeof offsets / sizeof *offsets; k++) {
        double cpu_ms[64], wall_ms[64];
        int n = 0, changed = 0;
        unsigned long long mj = 0, prev = 0;
        if (offsets[k] < 0) {
            for (int i = 0; i < 60; i++) {
                double c = thread_cpu_s(), w = now_s();
                ctx->nvml->nvmlDeviceGetTotalEnergyConsumption(h, &mj);
                cpu_ms[n] = (thread_cpu_s() - c) * 1e3;
                wall_ms[n++] = (now_s() - w) * 1e3;
            }
        } else {
            /* Find a step: read back to back until the value changes (bracket ~ one read). */
            ctx->nvml->nvmlDeviceGetTotalEnergyConsumption(h, &prev);
            uint64_t ta = jc_now_ns(), step = 0;
            for (int i = 0; i < 200 && !step; i++) {
                ctx->nvml->nvmlDeviceGetTotalEnergyConsumption(h, &mj);
                uint64_t tb = jc_now_ns();
                if (mj != prev) step = ta + (tb - ta) / 2;
                ta = tb;
                prev = mj;
            }
            if (!step) continue;
            for (int i = 1; i <= REPS; i++) {
                sleep_until(step + (uint64_t)i * 100000000ull + (uint64_t)(offsets[k] * 1e6));
                double c = thread_cpu_s(), w = now_s();
                ctx->nvml->nvmlDeviceGetTotalEnergyConsumption(h, &mj);
                cpu_ms[n] = (thread_cpu_s() - c) * 1e3;
                wall_ms[n++] = (now_s() - w) * 1e3;
                changed += mj != prev;
                prev = mj;
            }
        }
        double cm = 0;
        for (int i = 0; i < n; i++) cm += cpu_ms[i];
        cm /= n;
        printf("{\"bench\":\"readcost\",\"offset_ms\":%g,\"n\":%d,\"cpu_ms_mean\":%.3f,\"cpu_ms_p50\":%.3f,"
               "\"wall_ms_p50\":%.3f,\"wall_ms_max\":%.3f,\"changed\":%d}\n",
               offsets[k], n, cm, pct(cpu_ms, n, 0.5), pct(wall_ms, n, 0.5), pct(wall_ms, n, 1.0), changed);
        fflush(stdout);
    }
    jc_close(ctx);
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "overhead") == 0) overhead();
    else if (argc >= 3 && strcmp(argv[1], "sampler") == 0) sampler_cost(atof(argv[2]));
    else if (argc >= 4 && strcmp(argv[1], "accuracy") == 0)
        accuracy(atof(argv[2]), argv[3], argc > 4 ? atof(argv[4]) : 0);
    else if (argc >= 4 && strcmp(argv[1], "cpu") == 0)
        cpu_cost(argv[2], atof(argv[3]));
    else if (argc >= 6 && strcmp(argv[1], "windows") == 0)
        windows_bench(atof(argv[2]), argv[3], argv[4], argv[5]);
    else if (argc >= 3 && strcmp(argv[1], "xcheck") == 0)
        xcheck(atoi(argv[2]));
    else if (argc >= 3 && strcmp(argv[1], "readcost") == 0)
        readcost(atof(argv[2]));
    else {
        fprintf(stderr, "usage: bench_core overhead | sampler SECONDS | accuracy SECONDS SCHEDULE [COUNTER_INTERVAL]\n"
                        "       | cpu idle|csv1|short|every SECONDS | windows SECONDS READY SCHEDULE PREFIX\n"
                        "       | xcheck REPS | readcost SECONDS\n");
        return 2;
    }
    return 0;
}
