/* Core benchmarks for issue 2, run on the GPU machine (see bench/run_core.sh and BENCHMARKS.md).
 *
 *   bench_core overhead                 cost of a start+stop pair vs reading the counter at both edges
 *   bench_core sampler SECONDS          sampler CPU cost at 10 Hz and 100 Hz
 *   bench_core accuracy SECONDS SCHED [CI] window accuracy under a square-wave load whose on-intervals the load
 *                                       generator writes to SCHED when done (waits at most SECONDS); also
 *                                       the conservation check
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

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "overhead") == 0) overhead();
    else if (argc >= 3 && strcmp(argv[1], "sampler") == 0) sampler_cost(atof(argv[2]));
    else if (argc >= 4 && strcmp(argv[1], "accuracy") == 0)
        accuracy(atof(argv[2]), argv[3], argc > 4 ? atof(argv[4]) : 0);
    else {
        fprintf(stderr, "usage: bench_core overhead | sampler SECONDS | accuracy SECONDS SCHEDULE [COUNTER_INTERVAL]\n");
        return 2;
    }
    return 0;
}
