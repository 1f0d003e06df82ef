/* Device health: the current state with its reason, and a short history of changes (lock held throughout). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../core/context.h"

const char *jc_health_name(jc_health health) {
    switch (health) {
    case JC_HEALTH_OK: return "ok";
    case JC_HEALTH_DEGRADED: return "degraded";
    case JC_HEALTH_STALLED: return "stalled";
    case JC_HEALTH_LOST: return "lost";
    }
    return "unknown";
}

static void set_text(jc__device *d, jc_health state, uint64_t t, const char *why) {
    jc_device_info *i = &d->info;
    if (i->health == state && strcmp(i->health_note, why) == 0) return;
    i->health = state;
    i->health_since_ns = t;
    jc__fmt(i->health_note, sizeof i->health_note, "%s", why);
    jc_health_event *ev = &d->events[d->nevents % JC__HEALTH_EVENTS];
    ev->t_ns = t;
    ev->health = state;
    jc__fmt(ev->reason, sizeof ev->reason, "%s", why);
    d->nevents++;
}

void jc__health_set(jc__device *d, jc_health state, uint64_t t, const char *fmt, ...) {
    if (d->info.health == JC_HEALTH_LOST) return; /* lost is final */
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    set_text(d, state, t, why);
}

void jc__health_degrade(jc__device *d, uint64_t t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->degraded_why, sizeof d->degraded_why, fmt, ap);
    va_end(ap);
    d->degraded = 1;
    if (d->info.health == JC_HEALTH_OK || d->info.health == JC_HEALTH_DEGRADED)
        set_text(d, JC_HEALTH_DEGRADED, t, d->degraded_why);
}

void jc__health_recovered(jc__device *d, uint64_t t) {
    if (d->info.health != JC_HEALTH_STALLED || d->starved) return;
    d->stall_from_ns = 0;
    if (d->degraded)
        set_text(d, JC_HEALTH_DEGRADED, t, d->degraded_why);
    else
        set_text(d, JC_HEALTH_OK, t, "");
}

void jc__health_knot(jc__device *d, uint64_t t) {
    if (!d->starved) return;
    d->starved = 0;
    if (!d->read_since_ns && !d->fail_streak) jc__health_recovered(d, t);
}

jc_status jc_device_health_get(jc_context *ctx, int device, jc_health_event *out, size_t max, size_t *count) {
    if (!ctx || (!out && max) || !count) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_device_health_get: NULL argument");
    if (device < 0 || device >= ctx->ndev)
        return jc__fail(JC_ERR_NOT_FOUND, "device %d does not exist: devices are 0 (CPU) to %d", device,
                        ctx->ndev - 1);
    pthread_mutex_lock(&ctx->lock);
    jc__device *d = &ctx->dev[device];
    size_t kept = d->nevents < JC__HEALTH_EVENTS ? d->nevents : JC__HEALTH_EVENTS;
    size_t first = d->nevents - kept;
    for (size_t k = 0; k < kept && k < max; k++) out[k] = d->events[(first + k) % JC__HEALTH_EVENTS];
    *count = d->nevents;
    pthread_mutex_unlock(&ctx->lock);
    return JC_OK;
}

jc_health jc__health_worst(const jc__device *d, uint64_t t0, uint64_t t1) {
    size_t kept = d->nevents < JC__HEALTH_EVENTS ? d->nevents : JC__HEALTH_EVENTS;
    jc_health worst = JC_HEALTH_OK, at_start = JC_HEALTH_OK;
    for (size_t k = d->nevents - kept; k < d->nevents; k++) {
        const jc_health_event *ev = &d->events[k % JC__HEALTH_EVENTS];
        if (ev->t_ns <= t0) at_start = ev->health;
        else if (ev->t_ns <= t1 && ev->health > worst) worst = ev->health;
    }
    return at_start > worst ? at_start : worst;
}
