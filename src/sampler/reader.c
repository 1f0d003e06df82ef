/* Reader threads: one per device, each doing only that device's slow reads, so that a slow or hung device
 * holds up nothing but its own series.
 *
 * GPU: counter.c tracks the instants of the energy counter's 100 ms steps and turns each step into a knot
 * (instant, cumulative energy); instant power (field 186, ~1 us), utilisation and temperature are read every
 * interval_s.  CPU: RAPL every interval_s (a knot per read); without RAPL, or once RAPL stops moving, the
 * estimate is integrated over each /proc/stat interval (>= 0.1 s, the kernel's tick resolution). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/context.h"

#define NS 1000000000ull
#define MS 1000000ull
/* A read slower than this makes the device degraded: well above the slowest energy read seen on an H100
 * (17.7 ms), and above what a busy host adds by scheduling the reader late. */
#define SLOW_READ_NS (250 * MS)
/* A degraded state with no new cause for this long returns to ok. */
#define DEGRADED_HOLD_NS (10 * NS)
/* RAPL counters move every ~1 ms: one that stands still this long is stuck. */
#define RAPL_STUCK_NS (2 * NS)
/* Start-up cross-check of the GPU energy counter against integrated instant power. */
#define XCHECK_SPAN_NS (1 * NS)
#define XCHECK_BOUND 0.25
/* Energy-counter reads at every step are kept this long after a window last started or stopped: its edges
 * then fall between knots one step apart.  A window's edge that comes after a quiet spell waits for the next
 * step and interpolates from a knot up to a second before (its uncertainty says so). */
#define FINE_HOLD_NS (10 * NS)

static uint64_t s_to_ns(double s) { return (uint64_t)(s * 1e9 + 0.5); }

static void degrade(jc__device *d, uint64_t t, const char *why) {
    jc__health_degrade(d, t, "%s", why);
    d->degraded_until_ns = t + DEGRADED_HOLD_NS;
}

void jc__reader_busy(jc__device *d, int busy) {
    jc_context *ctx = d->ctx;
    uint64_t now = jc_now_ns();
    pthread_mutex_lock(&ctx->lock);
    if (busy) {
        d->read_since_ns = now;
    } else {
        uint64_t took = d->read_since_ns ? now - d->read_since_ns : 0;
        d->read_since_ns = 0;
        if (d->stall_from_ns && !d->fail_streak) jc__health_recovered(d, now);
        if (took > SLOW_READ_NS) {
            char why[128];
            jc__fmt(why, sizeof why, "slow reads: one took %.2f s", jc__s(took));
            degrade(d, now, why);
        }
    }
    pthread_mutex_unlock(&ctx->lock);
}

int jc__reader_fine(const jc_context *ctx, uint64_t now) {
    if (ctx->opts.flags & JC_EVERY_STEP) return 1;
    if (ctx->last_window_ns && now < ctx->last_window_ns + FINE_HOLD_NS) return 1;
    return ctx->csv && ctx->opts.csv_interval_s < 1.0;
}

/* Period of the cheap reads (power, utilisation, temperature, RAPL): the option when the caller set one; by
 * default 10 ms while fine resolution is needed and 100 ms otherwise (rows then stay 10 reads apart or more). */
double jc__reader_interval_s(const jc__device *d) {
    const jc_context *ctx = d->ctx;
    if (!ctx->interval_auto || d->fine) return ctx->opts.interval_s;
    double slow = ctx->csv && ctx->opts.csv_interval_s < 1.0 ? ctx->opts.csv_interval_s / 10 : 0.1;
    return slow > ctx->opts.interval_s ? slow : ctx->opts.interval_s;
}

/* Ends a device's energy for good (lock held). */
static void end_energy(jc__device *d, uint64_t t, int gpu_lost, const char *why) {
    d->dead = 1;
    d->dead_ns = t;
    jc_context *ctx = d->ctx;
    double at = jc__s(t - (ctx->epoch_ns && t > ctx->epoch_ns ? ctx->epoch_ns : t));
    if (gpu_lost) {
        jc__fmt(d->info.energy_note, sizeof d->info.energy_note, "lost at %.3f s: %s", at, why);
        d->info.power_status = d->info.util_status = d->info.temp_status = JC_ERR_GPU_LOST;
        d->latest.power_w = d->latest.util_pct = d->latest.temp_c = NAN;
        jc__health_set(d, JC_HEALTH_LOST, t, "GPU lost at %.3f s: %s", at, why);
    } else {
        jc__fmt(d->info.energy_note, sizeof d->info.energy_note, "energy unreadable since %.3f s: %s", at, why);
        jc__health_set(d, JC_HEALTH_LOST, t, "energy counter unreadable since %.3f s: %s (power, utilisation and "
                       "temperature are still read)", at, why);
    }
    pthread_cond_broadcast(&ctx->data_cv);
}

int jc__reader_read_failed(jc__device *d, nvmlReturn_t r, uint64_t t, const char *what, int energy) {
    jc_context *ctx = d->ctx;
    int gpu_lost = r == NVML_ERROR_GPU_IS_LOST || r == NVML_ERROR_RESET_REQUIRED || r == NVML_ERROR_UNINITIALIZED;
    int permanent = r == NVML_ERROR_NO_PERMISSION || r == NVML_ERROR_NOT_SUPPORTED ||
                    r == NVML_ERROR_FUNCTION_NOT_FOUND;
    char why[256];
    jc__nvml_status(ctx->nvml, r, what);
    jc__fmt(why, sizeof why, "%s", jc_last_detail());
    jc__clear_detail();
    pthread_mutex_lock(&ctx->lock);
    int ended = 0;
    if (gpu_lost || (energy && permanent)) {
        end_energy(d, t, gpu_lost, why);
        ended = 1;
    } else if (!energy) {
        /* Power, utilisation or temperature: its value is empty; the energy (and windows) do not depend on it. */
        degrade(d, t, why);
    } else {
        if (!d->fail_streak) d->fail_since_ns = t;
        d->fail_streak++;
        char msg[300];
        jc__fmt(msg, sizeof msg, "reads failing since %.3f s: %s",
                jc__s(d->fail_since_ns - (ctx->epoch_ns && d->fail_since_ns > ctx->epoch_ns ? ctx->epoch_ns
                                                                                         : d->fail_since_ns)),
                why);
        if (t - d->fail_since_ns >= ctx->stall_ns) {
            if (!d->stall_from_ns) d->stall_from_ns = d->fail_since_ns;
            jc__health_set(d, JC_HEALTH_STALLED, d->fail_since_ns, "%s", msg);
            pthread_cond_broadcast(&ctx->data_cv);
        } else {
            degrade(d, t, msg);
        }
    }
    pthread_mutex_unlock(&ctx->lock);
    return ended;
}

/* An energy read succeeded after failures (lock held). */
void jc__reader_ok(jc__device *d, uint64_t t) {
    if (!d->fail_streak) return;
    d->fail_streak = 0;
    if (d->stall_from_ns && !d->read_since_ns) jc__health_recovered(d, t);
}

static void commit_knot(jc__device *d, uint64_t t, double e) {
    pthread_mutex_lock(&d->ctx->lock);
    jc__ring_push(&d->knots, t, e);
    jc__reader_ok(d, t);
    jc__health_knot(d, t);
    pthread_cond_broadcast(&d->ctx->data_cv);
    pthread_mutex_unlock(&d->ctx->lock);
}

/* Integrates a power series into knots.  held = 1: p_w held over the interval that ends at t (an estimate
 * computed from that interval); held = 0: trapezoid between the previous sample and this one. */
static void integrate(jc__device *d, uint64_t t, double p_w, int held) {
    if (!d->integ_started) {
        d->integ_started = 1;
        d->integ_t_ns = t;
        d->integ_p_w = p_w;
        commit_knot(d, t, d->integ_j);
        return;
    }
    if (t <= d->integ_t_ns) return;
    d->integ_j += (held ? p_w : 0.5 * (d->integ_p_w + p_w)) * jc__s(t - d->integ_t_ns);
    d->integ_t_ns = t;
    d->integ_p_w = p_w;
    commit_knot(d, t, d->integ_j);
}

/* Start-up cross-check: integrates instant power from the first knot on (reader only).  A sample stamped
 * before that knot (the driver's timestamp can be) only sets the power held from the knot on. */
static void xcheck_power(jc__device *d, uint64_t t, double p_w) {
    if (d->xcheck_done || !d->xcheck_t0_ns) return;
    if (t <= d->xcheck_t0_ns) {
        d->xcheck_p_w = p_w;
        d->xcheck_t_ns = d->xcheck_t0_ns;
        return;
    }
    if (t <= d->xcheck_t_ns) return;
    if (d->xcheck_t_ns) d->xcheck_j += d->xcheck_p_w * jc__s(t - d->xcheck_t_ns);
    else d->xcheck_j += p_w * jc__s(t - d->xcheck_t0_ns);
    d->xcheck_t_ns = t;
    d->xcheck_p_w = p_w;
}

/* Called by counter.c for each accepted knot: compares the counter with the integrated power. */
void jc__reader_xcheck_knot(jc__device *d, uint64_t t, double e_j) {
    if (d->xcheck_done) return;
    if (!d->xcheck_t0_ns) {
        d->xcheck_t0_ns = t;
        d->xcheck_e0_j = e_j;
        return;
    }
    if (t < d->xcheck_t0_ns + XCHECK_SPAN_NS) return;
    d->xcheck_done = 1;
    if (!d->xcheck_t_ns || d->info.power_status != JC_OK || strstr(d->info.power_note, "average")) return;
    double integ = d->xcheck_j + d->xcheck_p_w * jc__s(t > d->xcheck_t_ns ? t - d->xcheck_t_ns : 0);
    double counter = e_j - d->xcheck_e0_j;
    double rel = counter > 0 ? (integ - counter) / counter : INFINITY;
    if (fabs(rel) > XCHECK_BOUND) {
        char why[200];
        jc__fmt(why, sizeof why, "the energy counter (%.1f J) and integrated instant power (%.1f J) disagree by "
                "%+.0f%% over the first %.1f s", counter, integ, rel * 100, jc__s(t - d->xcheck_t0_ns));
        pthread_mutex_lock(&d->ctx->lock);
        jc__health_degrade(d, t, "%s", why);
        d->degraded_until_ns = UINT64_MAX; /* stays for the run */
        pthread_mutex_unlock(&d->ctx->lock);
    }
}

static void gpu_cheap(jc__device *d, uint64_t now) {
    jc_context *ctx = d->ctx;
    if (now < d->next_cheap_ns) return;
    d->next_cheap_ns = now + s_to_ns(jc__reader_interval_s(d));
    jc__nvml *nvml = ctx->nvml;
    unsigned mw;
    int64_t ts = 0;
    int avg = 0;
    jc__reader_busy(d, 1);
    uint64_t a = jc_now_ns();
    nvmlReturn_t r = jc__nvml_power(nvml, d->handle, 1, &mw, &ts, &avg);
    uint64_t b = jc_now_ns();
    double p = NAN, util = NAN, temp = NAN;
    if (r == NVML_SUCCESS) {
        p = mw * 1e-3;
        int fresh = ts == 0 || ts != d->last_power_ts_us;
        if (fresh) {
            /* Place the sample at the driver's timestamp when it has one (the instant it was measured). */
            uint64_t t = a + (b - a) / 2;
            if (ts > 0) {
                int64_t mono_us = ts - ctx->realtime_minus_mono_us;
                if (mono_us > 0 && (uint64_t)mono_us * 1000 <= b && (uint64_t)mono_us * 1000 + NS > b)
                    t = (uint64_t)mono_us * 1000;
            }
            d->last_power_ts_us = ts;
            if (d->info.energy_source == JC_SOURCE_INTEGRATED) integrate(d, t, p, 0);
            else xcheck_power(d, t, p);
        }
    } else if (jc__reader_read_failed(d, r, b, "power", d->info.energy_source == JC_SOURCE_INTEGRATED) &&
               d->info.power_status == JC_ERR_GPU_LOST) {
        jc__reader_busy(d, 0);
        return;
    }
    if (nvml->nvmlDeviceGetUtilizationRates && d->info.util_status == JC_OK) {
        nvmlUtilization_t u;
        r = nvml->nvmlDeviceGetUtilizationRates(d->handle, &u);
        if (r == NVML_SUCCESS) util = u.gpu;
        else if (jc__reader_read_failed(d, r, jc_now_ns(), "utilisation", 0)) {
            jc__reader_busy(d, 0);
            return;
        }
    }
    if (nvml->nvmlDeviceGetTemperature && d->info.temp_status == JC_OK) {
        unsigned tc;
        r = nvml->nvmlDeviceGetTemperature(d->handle, NVML_TEMPERATURE_GPU, &tc);
        if (r == NVML_SUCCESS) temp = tc;
        else if (jc__reader_read_failed(d, r, jc_now_ns(), "temperature", 0)) {
            jc__reader_busy(d, 0);
            return;
        }
    }
    jc__reader_busy(d, 0);
    pthread_mutex_lock(&ctx->lock);
    if (d->info.power_status != JC_ERR_GPU_LOST) {
        d->latest.t_ns = b;
        d->latest.power_w = p;
        d->latest.util_pct = util;
        d->latest.temp_c = temp;
    }
    pthread_mutex_unlock(&ctx->lock);
}

/* RAPL stopped moving: the CPU's energy goes on from the estimate (lock not held). */
static void rapl_stuck(jc__device *d, uint64_t now) {
    jc_context *ctx = d->ctx;
    char why[200];
    jc__fmt(why, sizeof why, "RAPL energy did not change for %.1f s: estimated from utilisation from then on",
            jc__s(now - d->rapl_changed_ns));
    pthread_mutex_lock(&ctx->lock);
    ctx->use_estimate = 1;
    d->info.energy_source = JC_SOURCE_ESTIMATE;
    jc__fmt(d->info.energy_note, sizeof d->info.energy_note, "%s; %s", ctx->estimate.describe, why);
    jc__health_degrade(d, d->rapl_changed_ns, "%s", why);
    d->degraded_until_ns = UINT64_MAX;
    const jc__point *last = jc__ring_last(&d->knots);
    d->integ_j = last ? last->v : 0.0;
    d->integ_t_ns = last ? last->t_ns : now;
    d->integ_started = last != NULL;
    pthread_mutex_unlock(&ctx->lock);
}

static void cpu_sample(jc__device *d, uint64_t now) {
    jc_context *ctx = d->ctx;
    char why[256];
    if (ctx->rapl && !ctx->use_estimate && now >= d->next_cpu_ns) {
        d->next_cpu_ns = now + s_to_ns(jc__reader_interval_s(d));
        double e;
        jc__reader_busy(d, 1);
        uint64_t a = jc_now_ns();
        jc_status st = jc__rapl_read(ctx->rapl, &e, why, sizeof why);
        uint64_t b = jc_now_ns();
        jc__reader_busy(d, 0);
        if (st == JC_OK) {
            uint64_t t = a + (b - a) / 2;
            if (!d->rapl_changed_ns || e != d->rapl_last_j) {
                d->rapl_changed_ns = t;
                d->rapl_last_j = e;
            }
            pthread_mutex_lock(&ctx->lock);
            const jc__point *last = jc__ring_last(&d->knots);
            /* Power over the last ~100 ms of knots. */
            if (last && d->knots.len > 1) {
                size_t i = jc__ring_lower_bound(&d->knots, t > NS / 10 ? t - NS / 10 : 0);
                const jc__point *old = jc__ring_at(&d->knots, i < d->knots.len ? i : d->knots.len - 1);
                if (t > old->t_ns) d->latest.power_w = (e - old->v) / jc__s(t - old->t_ns);
            }
            jc__ring_push(&d->knots, t, e);
            d->latest.t_ns = t;
            jc__reader_ok(d, t);
            jc__health_knot(d, t);
            pthread_cond_broadcast(&ctx->data_cv);
            pthread_mutex_unlock(&ctx->lock);
            if (ctx->have_procstat && t - d->rapl_changed_ns >= RAPL_STUCK_NS) rapl_stuck(d, t);
        }
    }
    if (ctx->have_procstat && now >= d->next_util_ns) {
        double period = ctx->opts.interval_s > 0.1 ? ctx->opts.interval_s : 0.1;
        d->next_util_ns = now + s_to_ns(period);
        double u;
        jc__reader_busy(d, 1);
        jc_status st = jc__procstat_read(&ctx->procstat, &u, why, sizeof why);
        jc__reader_busy(d, 0);
        if (st == JC_OK) {
            d->cpu_util_pct = u;
            pthread_mutex_lock(&ctx->lock);
            d->latest.util_pct = u;
            pthread_mutex_unlock(&ctx->lock);
        } else if (st == JC_ERR_TIMEOUT) {
            /* No tick accounted since the last read: the utilisation is still the last one seen. */
            u = d->cpu_util_pct;
            st = JC_OK;
        }
        if (st == JC_OK && ctx->use_estimate) {
            /* The estimate is constant over the /proc/stat interval it was computed from. */
            double p = jc__cpu_estimate_power_w(&ctx->estimate, u);
            integrate(d, now, p, 1);
            pthread_mutex_lock(&ctx->lock);
            d->latest.power_w = p;
            d->latest.t_ns = now;
            pthread_mutex_unlock(&ctx->lock);
        }
    }
    if (ctx->cputemp && now >= d->next_temp_ns) {
        double period = ctx->opts.interval_s > 0.1 ? ctx->opts.interval_s : 0.1;
        d->next_temp_ns = now + s_to_ns(period);
        double tc;
        jc__reader_busy(d, 1);
        jc_status st = jc__cputemp_read(ctx->cputemp, &tc, why, sizeof why);
        jc__reader_busy(d, 0);
        if (st == JC_OK) {
            pthread_mutex_lock(&ctx->lock);
            d->latest.temp_c = tc;
            pthread_mutex_unlock(&ctx->lock);
        }
    }
}

/* When the reader has next something to do (lock held). */
static uint64_t next_due(jc__device *d, uint64_t now) {
    jc_context *ctx = d->ctx;
    uint64_t next = now + s_to_ns(jc__reader_interval_s(d));
    if (d->info.kind == JC_DEVICE_GPU && d->remote) {
        if (d->remote_next_ns < next) next = d->remote_next_ns;
    } else if (d->info.kind == JC_DEVICE_GPU) {
        if (d->next_cheap_ns < next) next = d->next_cheap_ns;
        if (d->info.energy_source == JC_SOURCE_COUNTER && !d->dead && d->counter.next_ns < next)
            next = d->counter.next_ns;
    } else {
        if (ctx->rapl && !ctx->use_estimate && d->next_cpu_ns < next) next = d->next_cpu_ns;
        if (ctx->have_procstat && d->next_util_ns < next) next = d->next_util_ns;
        if (ctx->cputemp && d->next_temp_ns < next) next = d->next_temp_ns;
    }
    return next > now ? next : now;
}

static int has_work(const jc__device *d) {
    const jc_context *ctx = d->ctx;
    if (d->info.kind == JC_DEVICE_GPU) return 1;
    return !(ctx->opts.flags & JC_NO_CPU) && (ctx->rapl || ctx->have_procstat || ctx->cputemp);
}

static void release_context(jc_context *ctx);

static void *reader_main(void *arg) {
    jc__device *d = arg;
    jc_context *ctx = d->ctx;
    for (;;) {
        pthread_mutex_lock(&ctx->lock);
        if (ctx->stopping || (d->dead && (d->info.power_status == JC_ERR_GPU_LOST || d->remote))) {
            pthread_mutex_unlock(&ctx->lock);
            break;
        }
        uint64_t now = jc_now_ns();
        d->fine = jc__reader_fine(ctx, now);
        uint64_t wake = next_due(d, now);
        struct timespec ts = {(time_t)(wake / NS), (long)(wake % NS)};
        while (!ctx->stopping && jc_now_ns() < wake) {
            int fine = jc__reader_fine(ctx, jc_now_ns());
            if (fine && !d->fine) break; /* a window opened: read the counter at every step again */
            if (pthread_cond_timedwait(&ctx->wake_cv, &ctx->lock, &ts) == ETIMEDOUT) break;
        }
        int stop = ctx->stopping;
        int was_fine = d->fine;
        d->fine = jc__reader_fine(ctx, jc_now_ns());
        pthread_mutex_unlock(&ctx->lock);
        if (stop) break;
        if (d->remote) {
            if (d->fine && !was_fine) d->remote_next_ns = 0; /* a window opened: ask now, and for fine reads */
            jc__remote_poll(d, jc_now_ns());
        } else if (d->info.kind == JC_DEVICE_GPU) {
            if (d->fine && !was_fine) jc__counter_refine(d, jc_now_ns());
            if (d->info.energy_source == JC_SOURCE_COUNTER && !d->dead) jc__counter_read(d, jc_now_ns());
            gpu_cheap(d, jc_now_ns());
        } else {
            cpu_sample(d, jc_now_ns());
        }
        pthread_mutex_lock(&ctx->lock);
        d->last_read_ns = jc_now_ns();
        pthread_cond_broadcast(&ctx->data_cv);
        pthread_mutex_unlock(&ctx->lock);
    }
    pthread_mutex_lock(&ctx->lock);
    d->thread_exited = 1;
    d->read_since_ns = 0;
    pthread_cond_broadcast(&ctx->data_cv);
    pthread_mutex_unlock(&ctx->lock);
    release_context(ctx);
    return NULL;
}

/* Frees what the readers use: called by the last of jc_close() and the readers left behind. */
void jc__context_free(jc_context *ctx);
static void release_context(jc_context *ctx) {
    if (atomic_fetch_sub(&ctx->refs, 1) == 1) jc__context_free(ctx);
}

jc_status jc__readers_start(jc_context *ctx) {
    for (int i = 0; i < ctx->ndev; i++) {
        jc__device *d = &ctx->dev[i];
        if (!has_work(d)) continue;
        atomic_fetch_add(&ctx->refs, 1);
        int rc = pthread_create(&d->thread, NULL, reader_main, d);
        if (rc != 0) {
            atomic_fetch_sub(&ctx->refs, 1);
            return jc__fail(JC_ERR_THREAD, "cannot start the reader thread of %s: %s", d->info.name, strerror(rc));
        }
        d->thread_started = 1;
    }
    return JC_OK;
}

int jc__readers_stop(jc_context *ctx, double wait_s) {
    uint64_t deadline = jc_now_ns() + s_to_ns(wait_s);
    pthread_mutex_lock(&ctx->lock);
    ctx->stopping = 1;
    pthread_cond_broadcast(&ctx->wake_cv);
    for (;;) {
        int running = 0;
        for (int i = 0; i < ctx->ndev; i++)
            if (ctx->dev[i].thread_started && !ctx->dev[i].thread_exited) running = 1;
        if (!running || jc_now_ns() >= deadline) break;
        struct timespec ts = {(time_t)(deadline / NS), (long)(deadline % NS)};
        pthread_cond_timedwait(&ctx->data_cv, &ctx->lock, &ts);
    }
    int left = 0;
    for (int i = 0; i < ctx->ndev; i++) {
        jc__device *d = &ctx->dev[i];
        if (!d->thread_started) continue;
        if (d->thread_exited) {
            pthread_mutex_unlock(&ctx->lock);
            pthread_join(d->thread, NULL);
            pthread_mutex_lock(&ctx->lock);
        } else {
            pthread_detach(d->thread); /* stuck in a driver call: it frees the context if it is the last */
            left++;
        }
        d->thread_started = 0;
    }
    pthread_mutex_unlock(&ctx->lock);
    return left;
}
