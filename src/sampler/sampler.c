/* The sampler: one background thread per context that does every slow read, so callers only take timestamps.
 *
 * GPU energy counter: counter.c tracks the instants of its 100 ms steps and turns each step into a knot
 * (instant, cumulative energy).  Instant power (field 186, ~1 us), utilisation and temperature are read every
 * interval_s.  CPU: RAPL every interval_s (a knot per read); without RAPL the estimate is integrated over each
 * /proc/stat interval (>= 0.1 s, the kernel's tick resolution). */
#include <errno.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include "../core/context.h"

#define NS 1000000000ull

static uint64_t s_to_ns(double s) { return (uint64_t)(s * 1e9 + 0.5); }

static void commit_knot(jc_context *ctx, jc__device *d, uint64_t t, double e) {
    pthread_mutex_lock(&ctx->lock);
    jc__ring_push(&d->knots, t, e);
    pthread_mutex_unlock(&ctx->lock);
}

static void mark_dead(jc_context *ctx, jc__device *d, uint64_t t, const char *why) {
    pthread_mutex_lock(&ctx->lock);
    d->dead = 1;
    d->dead_ns = t;
    jc__fmt(d->info.energy_note, sizeof d->info.energy_note, "lost at %.3f s: %s",
            jc__s(t - (ctx->epoch_ns ? ctx->epoch_ns : t)), why);
    d->info.power_status = d->info.util_status = d->info.temp_status = JC_ERR_GPU_LOST;
    pthread_mutex_unlock(&ctx->lock);
}

/* A read failed: GPU lost ends the device; anything else is counted and retried. */
int jc__sampler_read_failed(jc_context *ctx, jc__device *d, nvmlReturn_t r, uint64_t t, const char *what) {
    if (r == NVML_ERROR_GPU_IS_LOST || r == NVML_ERROR_RESET_REQUIRED || r == NVML_ERROR_UNINITIALIZED) {
        char why[256];
        jc__nvml_status(ctx->nvml, r, what);
        jc__fmt(why, sizeof why, "%s", jc_last_detail());
        mark_dead(ctx, d, t, why);
        return 1;
    }
    d->transient_errors++;
    return 0;
}

/* Integrates a power series into knots.  held = 1: p_w held over the interval that ends at t (an estimate
 * computed from that interval); held = 0: trapezoid between the previous sample and this one. */
static void integrate(jc_context *ctx, jc__device *d, uint64_t t, double p_w, int held) {
    if (!d->integ_started) {
        d->integ_started = 1;
        d->integ_t_ns = t;
        d->integ_p_w = p_w;
        commit_knot(ctx, d, t, 0.0);
        return;
    }
    if (t <= d->integ_t_ns) return;
    d->integ_j += (held ? p_w : 0.5 * (d->integ_p_w + p_w)) * jc__s(t - d->integ_t_ns);
    d->integ_t_ns = t;
    d->integ_p_w = p_w;
    commit_knot(ctx, d, t, d->integ_j);
}

static void gpu_cheap(jc_context *ctx, jc__device *d, uint64_t now) {
    if (now < d->next_cheap_ns) return;
    d->next_cheap_ns = now + s_to_ns(ctx->opts.interval_s);
    jc__nvml *nvml = ctx->nvml;
    unsigned mw;
    int64_t ts = 0;
    int avg = 0;
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
            if (d->info.energy_source == JC_SOURCE_INTEGRATED) integrate(ctx, d, t, p, 0);
        }
    } else if (jc__sampler_read_failed(ctx, d, r, b, "power")) {
        return;
    }
    if (nvml->nvmlDeviceGetUtilizationRates) {
        nvmlUtilization_t u;
        r = nvml->nvmlDeviceGetUtilizationRates(d->handle, &u);
        if (r == NVML_SUCCESS) util = u.gpu;
        else if (jc__sampler_read_failed(ctx, d, r, jc_now_ns(), "utilisation")) return;
    }
    if (nvml->nvmlDeviceGetTemperature) {
        unsigned tc;
        r = nvml->nvmlDeviceGetTemperature(d->handle, NVML_TEMPERATURE_GPU, &tc);
        if (r == NVML_SUCCESS) temp = tc;
        else if (jc__sampler_read_failed(ctx, d, r, jc_now_ns(), "temperature")) return;
    }
    pthread_mutex_lock(&ctx->lock);
    d->latest.t_ns = b;
    d->latest.power_w = p;
    d->latest.util_pct = util;
    d->latest.temp_c = temp;
    pthread_mutex_unlock(&ctx->lock);
}

static void cpu_sample(jc_context *ctx, jc__device *d, uint64_t now) {
    char why[256];
    if (ctx->rapl && now >= ctx->next_cpu_ns) {
        ctx->next_cpu_ns = now + s_to_ns(ctx->opts.interval_s);
        double e;
        uint64_t a = jc_now_ns();
        jc_status st = jc__rapl_read(ctx->rapl, &e, why, sizeof why);
        uint64_t b = jc_now_ns();
        if (st == JC_OK) {
            uint64_t t = a + (b - a) / 2;
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
            pthread_mutex_unlock(&ctx->lock);
        }
    }
    if (ctx->have_procstat && now >= ctx->next_util_ns) {
        double period = ctx->opts.interval_s > 0.1 ? ctx->opts.interval_s : 0.1;
        ctx->next_util_ns = now + s_to_ns(period);
        double u;
        jc_status st = jc__procstat_read(&ctx->procstat, &u, why, sizeof why);
        if (st == JC_OK) {
            ctx->cpu_util_pct = u;
            pthread_mutex_lock(&ctx->lock);
            d->latest.util_pct = u;
            pthread_mutex_unlock(&ctx->lock);
        } else if (st == JC_ERR_TIMEOUT) {
            /* No tick accounted since the last read: the utilisation is still the last one seen. */
            u = ctx->cpu_util_pct;
            st = JC_OK;
        }
        if (st == JC_OK) {
            if (ctx->use_estimate) {
                /* The estimate is constant over the /proc/stat interval it was computed from. */
                double p = jc__cpu_estimate_power_w(&ctx->estimate, u);
                integrate(ctx, d, now, p, 1);
                pthread_mutex_lock(&ctx->lock);
                d->latest.power_w = p;
                d->latest.t_ns = now;
                pthread_mutex_unlock(&ctx->lock);
            }
        }
    }
    if (ctx->cputemp && now >= ctx->next_temp_ns) {
        double period = ctx->opts.interval_s > 0.1 ? ctx->opts.interval_s : 0.1;
        ctx->next_temp_ns = now + s_to_ns(period);
        double tc;
        if (jc__cputemp_read(ctx->cputemp, &tc, why, sizeof why) == JC_OK) {
            pthread_mutex_lock(&ctx->lock);
            d->latest.temp_c = tc;
            pthread_mutex_unlock(&ctx->lock);
        }
    }
}

static uint64_t next_wakeup(jc_context *ctx, uint64_t now) {
    uint64_t next = now + s_to_ns(ctx->opts.interval_s);
    for (int i = 1; i < ctx->ndev; i++) {
        jc__device *d = &ctx->dev[i];
        if (d->dead) continue;
        if (d->next_cheap_ns < next) next = d->next_cheap_ns;
        if (d->info.energy_source == JC_SOURCE_COUNTER && d->counter.next_ns < next) next = d->counter.next_ns;
    }
    if (ctx->rapl && ctx->next_cpu_ns < next) next = ctx->next_cpu_ns;
    if (ctx->have_procstat && ctx->next_util_ns < next) next = ctx->next_util_ns;
    if (ctx->csv && ctx->next_row_ns < next) next = ctx->next_row_ns;
    return next > now ? next : now;
}

static void *sampler_main(void *arg) {
    jc_context *ctx = arg;
    for (;;) {
        uint64_t now = jc_now_ns();
        if (!(ctx->opts.flags & JC_NO_CPU)) cpu_sample(ctx, &ctx->dev[0], now);
        for (int i = 1; i < ctx->ndev; i++) {
            jc__device *d = &ctx->dev[i];
            if (d->dead) continue;
            if (d->info.energy_source == JC_SOURCE_COUNTER) jc__counter_read(ctx, d, jc_now_ns());
            if (!d->dead) gpu_cheap(ctx, d, jc_now_ns());
        }
        now = jc_now_ns();
        pthread_mutex_lock(&ctx->lock);
        ctx->cycles++;
        ctx->last_cycle_ns = now;
        jc__meter_resolve_all(ctx);
        if (ctx->csv) jc__csv_pump(ctx, now);
        pthread_cond_broadcast(&ctx->data_cv);
        if (ctx->stopping) {
            pthread_mutex_unlock(&ctx->lock);
            break;
        }
        uint64_t wake = next_wakeup(ctx, jc_now_ns());
        struct timespec ts = {(time_t)(wake / NS), (long)(wake % NS)};
        while (!ctx->stopping) {
            int rc = pthread_cond_timedwait(&ctx->stop_cv, &ctx->lock, &ts);
            if (rc == ETIMEDOUT) break;
        }
        pthread_mutex_unlock(&ctx->lock);
    }
    return NULL;
}

/* Waits until every device with an energy source has its first knot, so that the epoch (and every window
 * opened after jc_open returns) lies inside the series. */
static void wait_first_knots(jc_context *ctx, double timeout_s) {
    uint64_t deadline = jc_now_ns() + s_to_ns(timeout_s);
    pthread_mutex_lock(&ctx->lock);
    for (;;) {
        int missing = 0;
        for (int i = 0; i < ctx->ndev; i++) {
            jc__device *d = &ctx->dev[i];
            if (d->info.energy_source != JC_SOURCE_NONE && !d->dead && d->knots.len == 0) missing = 1;
        }
        if (!missing || jc_now_ns() >= deadline) break;
        struct timespec ts = {(time_t)(deadline / NS), (long)(deadline % NS)};
        pthread_cond_timedwait(&ctx->data_cv, &ctx->lock, &ts);
    }
    for (int i = 0; i < ctx->ndev; i++) {
        jc__device *d = &ctx->dev[i];
        if (d->info.energy_source != JC_SOURCE_NONE && !d->dead && d->knots.len == 0) {
            d->dead = 1;
            d->dead_ns = jc_now_ns();
            jc__fmt(d->info.energy_note, sizeof d->info.energy_note,
                    "no energy sample within %.1f s of opening", timeout_s);
        }
    }
    pthread_mutex_unlock(&ctx->lock);
}

jc_status jc__sampler_start(jc_context *ctx) {
    ctx->next_row_ns = UINT64_MAX;
    int rc = pthread_create(&ctx->thread, NULL, sampler_main, ctx);
    if (rc != 0) return jc__fail(JC_ERR_THREAD, "cannot start the sampler thread: %s", strerror(rc));
    ctx->thread_started = 1;
    wait_first_knots(ctx, 2.0);
    pthread_mutex_lock(&ctx->lock);
    ctx->epoch_ns = jc_now_ns();
    if (ctx->csv) ctx->next_row_ns = ctx->epoch_ns;
    pthread_cond_broadcast(&ctx->stop_cv);
    pthread_mutex_unlock(&ctx->lock);
    return JC_OK;
}

void jc__sampler_stop(jc_context *ctx) {
    if (!ctx->thread_started) return;
    pthread_mutex_lock(&ctx->lock);
    ctx->stopping = 1;
    pthread_cond_broadcast(&ctx->stop_cv);
    pthread_mutex_unlock(&ctx->lock);
    pthread_join(ctx->thread, NULL);
    ctx->thread_started = 0;
}

jc_status jc_sync(jc_context *ctx, uint64_t t_ns, double timeout_s) {
    if (!ctx) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_sync: NULL context");
    if (isnan(timeout_s) || timeout_s < 0) return jc__fail(JC_ERR_INVALID_ARGUMENT, "timeout must be >= 0");
    uint64_t deadline = jc_now_ns() + s_to_ns(timeout_s > 1e6 ? 1e6 : timeout_s);
    jc_status st = JC_OK;
    pthread_mutex_lock(&ctx->lock);
    while (ctx->last_cycle_ns <= t_ns) {
        if (jc_now_ns() >= deadline) {
            st = jc__fail(JC_ERR_TIMEOUT, "the sampler took no sample within %g s", timeout_s);
            break;
        }
        struct timespec ts = {(time_t)(deadline / NS), (long)(deadline % NS)};
        pthread_cond_timedwait(&ctx->data_cv, &ctx->lock, &ts);
    }
    pthread_mutex_unlock(&ctx->lock);
    return st;
}
