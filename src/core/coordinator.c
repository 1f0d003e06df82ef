/* The coordinator: a thread that watches the readers (a read in flight past stall_s marks its device stalled;
 * a degraded state without new cause expires), resolves the windows' edges and the CSV rows as samples
 * arrive, and wakes whoever waits for them.  It never reads a device and never writes a file. */
#include <errno.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include "context.h"

#define NS 1000000000ull
#define TICK_NS 20000000ull /* the coordinator's longest sleep */

static void watch_devices(jc_context *ctx, uint64_t now) {
    for (int i = 0; i < ctx->ndev; i++) {
        jc__device *d = &ctx->dev[i];
        if (d->read_since_ns && now - d->read_since_ns >= ctx->stall_ns && !d->stall_from_ns &&
            d->info.health != JC_HEALTH_LOST) {
            d->stall_from_ns = d->read_since_ns;
            jc__health_set(d, JC_HEALTH_STALLED, d->read_since_ns, "a read has not returned for %.1f s",
                           jc__s(now - d->read_since_ns));
        }
        /* Reads that return but bring no new knot (a counter that stopped moving) starve the windows alike. */
        const jc__point *last = jc__ring_last(&d->knots);
        double period = ctx->opts.counter_interval_s > 1.0 ? ctx->opts.counter_interval_s : 1.0;
        uint64_t allowed = ctx->stall_ns + (uint64_t)((period + 0.2) * 1e9);
        if (last && !d->dead && !d->stall_from_ns && d->info.energy_source != JC_SOURCE_NONE &&
            now > last->t_ns + allowed) {
            d->stall_from_ns = last->t_ns;
            d->starved = 1;
            jc__health_set(d, JC_HEALTH_STALLED, last->t_ns, "no new energy sample for %.1f s",
                           jc__s(now - last->t_ns));
        }
        if (d->degraded && now >= d->degraded_until_ns) {
            d->degraded = 0;
            d->degraded_why[0] = '\0';
            if (d->info.health == JC_HEALTH_DEGRADED) jc__health_set(d, JC_HEALTH_OK, now, "%s", "");
        }
    }
}

static void *coordinator_main(void *arg) {
    jc_context *ctx = arg;
    pthread_mutex_lock(&ctx->lock);
    while (!ctx->stopping) {
        uint64_t now = jc_now_ns();
        watch_devices(ctx, now);
        ctx->cycles++;
        ctx->last_cycle_ns = now;
        jc__meter_resolve_all(ctx);
        if (ctx->csv) jc__csv_pump(ctx, now);
        jc__wlog_pump(ctx);
        pthread_cond_broadcast(&ctx->data_cv);
        /* 20 ms while windows come and go or rows are due often; 100 ms otherwise (a result's waiter resolves
         * its own window, so the tick only bounds how late a stall is seen and a row is formatted). */
        uint64_t wake = now + (jc__reader_fine(ctx, now) ? TICK_NS : 5 * TICK_NS);
        if (ctx->csv && ctx->csv->next_row_ns > now && ctx->csv->next_row_ns < wake) wake = ctx->csv->next_row_ns;
        struct timespec ts = {(time_t)(wake / NS), (long)(wake % NS)};
        /* Woken by readers' commits too (data_cv), so rows and windows resolve as soon as their samples exist. */
        pthread_cond_timedwait(&ctx->data_cv, &ctx->lock, &ts);
    }
    pthread_mutex_unlock(&ctx->lock);
    return NULL;
}

/* Waits until every device with an energy source has its first knot, so that the epoch (and every window
 * opened after jc_open returns) lies inside the series. */
static void wait_first_knots(jc_context *ctx, double timeout_s) {
    uint64_t deadline = jc_now_ns() + (uint64_t)(timeout_s * 1e9);
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
    uint64_t now = jc_now_ns();
    for (int i = 0; i < ctx->ndev; i++) {
        jc__device *d = &ctx->dev[i];
        if (d->info.energy_source != JC_SOURCE_NONE && !d->dead && d->knots.len == 0 && !d->stall_from_ns) {
            d->stall_from_ns = now;
            jc__health_set(d, JC_HEALTH_STALLED, now, "no energy sample within %.1f s of opening", timeout_s);
        }
    }
    pthread_mutex_unlock(&ctx->lock);
}

jc_status jc__coordinator_start(jc_context *ctx) {
    jc_status st = jc__readers_start(ctx);
    if (st != JC_OK) return st;
    double first = jc__s(ctx->stall_ns) > 2.0 ? jc__s(ctx->stall_ns) : 2.0;
    wait_first_knots(ctx, first);
    pthread_mutex_lock(&ctx->lock);
    ctx->epoch_ns = jc_now_ns();
    if (ctx->csv) ctx->csv->next_row_ns = ctx->epoch_ns;
    pthread_mutex_unlock(&ctx->lock);
    int rc = pthread_create(&ctx->thread, NULL, coordinator_main, ctx);
    if (rc != 0) return jc__fail(JC_ERR_THREAD, "cannot start the coordinator thread: %s", strerror(rc));
    ctx->thread_started = 1;
    return JC_OK;
}

void jc__coordinator_stop(jc_context *ctx) {
    if (!ctx->thread_started) return;
    pthread_mutex_lock(&ctx->lock);
    ctx->stopping = 1;
    pthread_cond_broadcast(&ctx->data_cv);
    pthread_cond_broadcast(&ctx->wake_cv);
    pthread_mutex_unlock(&ctx->lock);
    pthread_join(ctx->thread, NULL);
    ctx->thread_started = 0;
}

jc_status jc_sync(jc_context *ctx, uint64_t t_ns, double timeout_s) {
    if (!ctx) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_sync: NULL context");
    if (isnan(timeout_s) || timeout_s < 0) return jc__fail(JC_ERR_INVALID_ARGUMENT, "timeout must be >= 0");
    uint64_t deadline = jc_now_ns() + (uint64_t)((timeout_s > 1e6 ? 1e6 : timeout_s) * 1e9);
    jc_status st = JC_OK;
    pthread_mutex_lock(&ctx->lock);
    for (;;) {
        /* Every reader that still answers has finished a round of reads after t_ns. */
        int behind = 0;
        for (int i = 0; i < ctx->ndev; i++) {
            jc__device *d = &ctx->dev[i];
            if (d->thread_started && !d->thread_exited && !d->stall_from_ns && d->last_read_ns <= t_ns) behind = 1;
        }
        if (!behind) break;
        if (jc_now_ns() >= deadline) {
            st = jc__fail(JC_ERR_TIMEOUT, "the readers took no sample within %g s", timeout_s);
            break;
        }
        struct timespec ts = {(time_t)(deadline / NS), (long)(deadline % NS)};
        pthread_cond_timedwait(&ctx->data_cv, &ctx->lock, &ts);
    }
    pthread_mutex_unlock(&ctx->lock);
    return st;
}
