/* Windows: start and stop take a timestamp under the context lock and nothing else.  A window's value per
 * device is whole, or cut where the device stalled or was lost (coverage < 1), or empty; never a silent part.  Each edge's energy is
 * resolved from the sampler's series as soon as a knot after it exists (the sampler resolves pending edges
 * after every cycle, so a window longer than the kept history still has its start), and a result waits at
 * most about one counter step for its end. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/context.h"

#define SLOT_BITS 24
#define SLOT_MASK ((1u << SLOT_BITS) - 1)

/* Standard deviation of an interpolated edge, relative to the power swing around its step: the energy of a
 * step is known, its spread inside the step is not.  Calibrated on the H100 so that the 95% interval holds the
 * reference in >= 95% of 300 ms windows (the hardest length) under a square-wave load drifting against the
 * steps (bench/results/HISTORY.md, "Core under faults"). */
#define EDGE_SPREAD 0.75
#define COARSE_SPAN_S 0.15
/* Timing error of a knot when the source does not say (RAPL and integrated power: the read's own length). */
#define KNOT_SIGMA_NS 1000000.0

static double step_power(const jc__ring *k, size_t i) { /* power between knots i-1 and i */
    const jc__point *a = jc__ring_at(k, i - 1), *b = jc__ring_at(k, i);
    return b->t_ns > a->t_ns ? (b->v - a->v) / jc__s(b->t_ns - a->t_ns) : 0;
}

/* Variance (J^2) of the energy at t interpolated inside the knots' step that holds it. */
static double edge_var(const jc__device *d, uint64_t t) {
    const jc__ring *k = &d->knots;
    size_t i = jc__ring_lower_bound(k, t);
    if (i == 0 || i >= k->len) return 0;
    const jc__point *lo = jc__ring_at(k, i - 1), *hi = jc__ring_at(k, i);
    double span = jc__s(hi->t_ns - lo->t_ns);
    double p = step_power(k, i);
    double swing = 0.05 * fabs(p);
    if (i >= 2 && fabs(step_power(k, i - 1) - p) > swing) swing = fabs(step_power(k, i - 1) - p);
    if (i + 1 < k->len && fabs(step_power(k, i + 1) - p) > swing) swing = fabs(step_power(k, i + 1) - p);
    /* Knots further apart than a counter step (reads once a second while no window needed every step): the
     * neighbouring steps' averages smooth over faster swings, so the swing is taken as at least half the power. */
    if (span > COARSE_SPAN_S && swing < 0.5 * fabs(p)) swing = 0.5 * fabs(p);
    double f = hi->t_ns == t ? 0 : (double)(t - lo->t_ns) / (double)(hi->t_ns - lo->t_ns);
    double spread = EDGE_SPREAD * swing * span * sqrt(f * (1 - f));
    double sigma_t = d->info.energy_source == JC_SOURCE_COUNTER && d->knot_sigma_ns > 0 ? d->knot_sigma_ns
                                                                                          : KNOT_SIGMA_NS;
    double timing = p * sigma_t * 1e-9;
    return spread * spread + timing * timing;
}

/* Resolves device i's energy at t: 1 when final.  An end edge past the last sample of a stalled or lost device
 * is cut back to that sample; a start edge there waits (a stalled device may come back). */
static int resolve_one(jc_context *ctx, int i, uint64_t t, jc__edge *e, int is_end) {
    jc__device *d = &ctx->dev[i];
    e->var_j2 = 0;
    if (d->info.energy_source == JC_SOURCE_NONE) {
        e->e = NAN;
        e->state = 3;
        return 1;
    }
    jc__at at = jc__energy_at(&d->knots, t, &e->e);
    if (at == JC__AT_OK) {
        e->t_eff = t;
        e->var_j2 = edge_var(d, t);
        e->state = 1;
        return 1;
    }
    if (at == JC__AT_GONE) {
        e->e = NAN;
        e->state = 3;
        return 1;
    }
    if (!(d->dead || d->stall_from_ns || ctx->stopping)) return 0;
    const jc__point *last = jc__ring_last(&d->knots);
    if (is_end && last) {
        e->e = last->v;
        e->t_eff = last->t_ns;
        e->state = 2;
        return 1;
    }
    if (!is_end && !d->dead && !ctx->stopping) return 0;
    e->e = NAN;
    e->state = 3;
    return 1;
}

int jc__resolve_edge(jc_context *ctx, uint64_t t, jc__edge *e, int is_end) {
    int all = 1;
    for (int i = 0; i < ctx->ndev; i++) {
        if (!e[i].state) resolve_one(ctx, i, t, &e[i], is_end);
        if (!e[i].state) all = 0;
    }
    return all;
}

void jc__meter_resolve_all(jc_context *ctx) {
    for (int i = 0; i < ctx->ndev; i++) {
        jc__device *d = &ctx->dev[i];
        if (!d->epoch_resolved && ctx->epoch_ns) {
            jc__edge e = {0};
            if (resolve_one(ctx, i, ctx->epoch_ns, &e, 0)) {
                d->epoch_resolved = 1;
                d->epoch_j = e.e;
            }
        }
    }
    for (size_t k = 0; k < ctx->nwin; k++) {
        jc__window *w = ctx->win[k];
        if (!w || !w->in_use || w->done) continue;
        int d0 = jc__resolve_edge(ctx, w->t0, w->e0, 0);
        if (w->t1) w->done = jc__resolve_edge(ctx, w->t1, w->e1, 1) && d0;
    }
}

void jc__meter_free(jc_context *ctx) {
    for (size_t k = 0; k < ctx->nwin; k++) {
        if (ctx->win[k]) free(ctx->win[k]->name);
        free(ctx->win[k]);
    }
    free(ctx->win);
    free(ctx->free_slots);
    ctx->win = NULL;
    ctx->free_slots = NULL;
    ctx->nwin = ctx->capwin = ctx->nfree = 0;
}

jc__window *jc__window_peek(jc_context *ctx, jc_window id) {
    if (id <= 0) return NULL;
    size_t slot = (size_t)(id & SLOT_MASK);
    uint32_t gen = (uint32_t)((uint64_t)id >> SLOT_BITS);
    if (slot == 0 || slot > ctx->nwin) return NULL;
    jc__window *w = ctx->win[slot - 1];
    return (w && w->in_use && w->gen == gen) ? w : NULL;
}

/* A window the caller may use: not released (a released window may still wait for its CSV row). */
static jc__window *lookup(jc_context *ctx, jc_window id) {
    jc__window *w = jc__window_peek(ctx, id);
    return w && !w->released ? w : NULL;
}

void jc__window_free(jc_context *ctx, jc__window *w, jc_window id) {
    free(w->name);
    w->name = NULL;
    w->in_use = 0;
    w->released = w->logging = 0;
    ctx->free_slots[ctx->nfree++] = (size_t)(id & SLOT_MASK);
    pthread_cond_broadcast(&ctx->data_cv);
}

jc_status jc_window_start_at(jc_context *ctx, const char *name, uint64_t t_ns, jc_window *out) {
    if (!ctx || !out) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_window_start: NULL argument");
    char *copy = NULL;
    if (name) {
        size_t n = strlen(name) + 1;
        copy = malloc(n);
        if (!copy) return jc__fail(JC_ERR_NO_MEMORY, "cannot copy the window name");
        memcpy(copy, name, n);
    }
    pthread_mutex_lock(&ctx->lock);
    if (t_ns < ctx->epoch_ns) {
        pthread_mutex_unlock(&ctx->lock);
        free(copy);
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "a window cannot start before the context opened");
    }
    size_t slot = ctx->nfree ? ctx->free_slots[--ctx->nfree] : 0;
    if (!slot) {
        if (ctx->nwin == SLOT_MASK) {
            pthread_mutex_unlock(&ctx->lock);
            free(copy);
            return jc__fail(JC_ERR_NO_MEMORY, "too many open windows: release finished ones");
        }
        if (ctx->nwin == ctx->capwin) {
            size_t cap = ctx->capwin ? ctx->capwin * 2 : 16;
            jc__window **grown = realloc(ctx->win, cap * sizeof *grown);
            if (grown) ctx->win = grown;
            size_t *grown_free = grown ? realloc(ctx->free_slots, cap * sizeof *grown_free) : NULL;
            if (grown_free) ctx->free_slots = grown_free;
            if (!grown || !grown_free) {
                pthread_mutex_unlock(&ctx->lock);
                free(copy);
                return jc__fail(JC_ERR_NO_MEMORY, "cannot grow the window table");
            }
            ctx->capwin = cap;
        }
        size_t n = (size_t)ctx->ndev;
        jc__window *w = calloc(1, sizeof *w + 2 * n * sizeof(jc__edge));
        if (w) {
            w->e0 = (jc__edge *)(w + 1);
            w->e1 = w->e0 + n;
        }
        if (!w) {
            pthread_mutex_unlock(&ctx->lock);
            free(copy);
            return jc__fail(JC_ERR_NO_MEMORY, "cannot allocate a window");
        }
        ctx->win[ctx->nwin++] = w;
        slot = ctx->nwin;
    }
    jc__window *w = ctx->win[slot - 1];
    uint32_t gen = (w->gen + 1) & 0x7fffffffu;
    if (gen == 0) gen = 1;
    w->t1 = 0;
    w->done = w->released = w->logging = 0;
    w->row_seq = 0;
    memset(w->e0, 0, (size_t)ctx->ndev * sizeof *w->e0);
    memset(w->e1, 0, (size_t)ctx->ndev * sizeof *w->e1);
    w->gen = gen;
    w->in_use = 1;
    w->t0 = t_ns;
    w->name = copy;
    *out = (jc_window)(((uint64_t)gen << SLOT_BITS) | slot);
    int was_fine = jc__reader_fine(ctx, t_ns);
    if (t_ns > ctx->last_window_ns) ctx->last_window_ns = t_ns;
    if (!was_fine) pthread_cond_broadcast(&ctx->wake_cv); /* readers go back to a counter read per step */
    pthread_mutex_unlock(&ctx->lock);
    return JC_OK;
}

jc_status jc_window_start(jc_context *ctx, const char *name, jc_window *out) {
    return jc_window_start_at(ctx, name, jc_now_ns(), out);
}

jc_status jc_window_stop_at(jc_context *ctx, jc_window id, uint64_t t_ns) {
    if (!ctx) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_window_stop: NULL context");
    pthread_mutex_lock(&ctx->lock);
    jc__window *w = lookup(ctx, id);
    jc_status st = JC_OK;
    if (!w)
        st = jc__fail(JC_ERR_NOT_FOUND, "window %lld does not exist (never started, or released)", (long long)id);
    else if (w->t1)
        st = jc__fail(JC_ERR_STATE, "window '%s' was already stopped", w->name ? w->name : "");
    else if (t_ns < w->t0)
        st = jc__fail(JC_ERR_INVALID_ARGUMENT, "a window cannot stop before it started");
    else {
        int was_fine = jc__reader_fine(ctx, t_ns);
        w->t1 = t_ns;
        if (t_ns > ctx->last_window_ns) ctx->last_window_ns = t_ns;
        if (!was_fine) pthread_cond_broadcast(&ctx->wake_cv);
    }
    pthread_mutex_unlock(&ctx->lock);
    return st;
}

jc_status jc_window_stop(jc_context *ctx, jc_window id) { return jc_window_stop_at(ctx, id, jc_now_ns()); }

jc_status jc_window_finish(jc_context *ctx, jc_window id, uint64_t t_ns) {
    jc_status st = jc_window_stop_at(ctx, id, t_ns);
    if (st != JC_OK) return st;
    pthread_mutex_lock(&ctx->lock);
    jc__window *w = lookup(ctx, id);
    if (w && ctx->wlog && !ctx->wlog->file.stop) st = jc__wlog_push(ctx, w, id);
    pthread_mutex_unlock(&ctx->lock);
    return st;
}

static void fill_result(jc_context *ctx, uint64_t t0, uint64_t t1, const jc__edge *e0, const jc__edge *e1,
                        int resolved, jc_window_result *out) {
    memset(out, 0, sizeof *out);
    out->start_ns = t0;
    out->stop_ns = t1;
    out->elapsed_s = jc__s(t1 - t0);
    out->device_count = ctx->ndev;
    out->resolved = resolved;
    for (int i = 0; i < ctx->ndev; i++) {
        out->source[i] = ctx->dev[i].info.energy_source;
        out->health[i] = jc__health_worst(&ctx->dev[i], t0, t1);
        double v = e1[i].e - e0[i].e;
        int have = e0[i].state && e0[i].state != 3 && e1[i].state && e1[i].state != 3 && !isnan(v) &&
                   e1[i].t_eff >= e0[i].t_eff;
        if (!have) {
            out->energy_j[i] = out->uncertainty_j[i] = NAN;
            out->coverage[i] = 0;
            continue;
        }
        out->energy_j[i] = v < 0 ? 0.0 : v;
        out->uncertainty_j[i] = 1.96 * sqrt(e0[i].var_j2 + e1[i].var_j2);
        out->coverage[i] = t1 > t0 ? (double)(e1[i].t_eff - e0[i].t_eff) / (double)(t1 - t0) : 1.0;
        if (e1[i].state == 1 && e0[i].t_eff == t0) out->coverage[i] = 1.0;
    }
}

/* Best estimate for an edge that has not resolved yet: the newest knot (energy up to the last step). */
static void provisional(jc_context *ctx, uint64_t t, const jc__edge *e, jc__edge *out) {
    for (int i = 0; i < ctx->ndev; i++) {
        out[i] = e[i];
        if (e[i].state) continue;
        const jc__point *last = jc__ring_last(&ctx->dev[i].knots);
        out[i].e = (last && last->t_ns <= t) ? last->v : NAN;
        out[i].t_eff = last ? last->t_ns : 0;
        out[i].state = last && last->t_ns <= t ? 2 : 3;
    }
}

/* Ends when every end edge is final; a start edge still waiting then (the device stalled through the whole
 * window) has nothing. */
static int edges_done(jc_context *ctx, uint64_t t0, uint64_t t1, jc__edge *e0, jc__edge *e1) {
    jc__resolve_edge(ctx, t0, e0, 0);
    int done = jc__resolve_edge(ctx, t1, e1, 1);
    if (!done) return 0;
    for (int i = 0; i < ctx->ndev; i++)
        if (!e0[i].state) {
            e0[i].state = 3;
            e0[i].e = NAN;
        }
    return 1;
}

static jc_status wait_edges(jc_context *ctx, uint64_t t0, uint64_t t1, jc__edge *e0, jc__edge *e1, double timeout_s,
                            jc_window_result *out, jc__window *w) {
    uint64_t deadline = jc_now_ns() + (uint64_t)(timeout_s * 1e9);
    for (;;) {
        if (edges_done(ctx, t0, t1, e0, e1)) {
            fill_result(ctx, t0, t1, e0, e1, 1, out);
            return JC_OK;
        }
        if (jc_now_ns() >= deadline) {
            jc__edge p0[JC_MAX_DEVICES], p1[JC_MAX_DEVICES];
            provisional(ctx, t0, e0, p0);
            provisional(ctx, t1, e1, p1);
            fill_result(ctx, t0, t1, p0, p1, 0, out);
            return jc__fail(JC_ERR_TIMEOUT, "the samples covering window%s%s%s have not arrived within %g s",
                            w && w->name ? " '" : "", w && w->name ? w->name : "", w && w->name ? "'" : "",
                            timeout_s);
        }
        struct timespec ts = {(time_t)(deadline / 1000000000ull), (long)(deadline % 1000000000ull)};
        pthread_cond_timedwait(&ctx->data_cv, &ctx->lock, &ts);
        if (w && !w->in_use) return jc__fail(JC_ERR_NOT_FOUND, "the window was released while waiting");
    }
}

static jc_status check_timeout(double timeout_s) {
    if (isnan(timeout_s) || timeout_s < 0 || timeout_s > 1e6)
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "timeout %g s is out of range: use 0 to 1e6 s", timeout_s);
    return JC_OK;
}

jc_status jc_window_result_get(jc_context *ctx, jc_window id, double timeout_s, jc_window_result *out) {
    if (!ctx || !out) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_window_result_get: NULL argument");
    jc_status st = check_timeout(timeout_s);
    if (st != JC_OK) return st;
    pthread_mutex_lock(&ctx->lock);
    jc__window *w = lookup(ctx, id);
    if (!w)
        st = jc__fail(JC_ERR_NOT_FOUND, "window %lld does not exist (never started, or released)", (long long)id);
    else if (!w->t1)
        st = jc__fail(JC_ERR_STATE, "window '%s' is still open: stop it first", w->name ? w->name : "");
    else
        st = wait_edges(ctx, w->t0, w->t1, w->e0, w->e1, timeout_s, out, w);
    if (st == JC_OK && (w->logging || w->row_seq)) st = jc__wlog_wait_row(ctx, w, id, timeout_s);
    pthread_mutex_unlock(&ctx->lock);
    return st;
}

int jc__window_edges_done(jc_context *ctx, jc__window *w) { return edges_done(ctx, w->t0, w->t1, w->e0, w->e1); }

void jc__window_result(jc_context *ctx, const jc__window *w, jc_window_result *out) {
    fill_result(ctx, w->t0, w->t1, w->e0, w->e1, 1, out);
}

const char *jc_window_name(jc_context *ctx, jc_window id) {
    if (!ctx) return NULL;
    pthread_mutex_lock(&ctx->lock);
    jc__window *w = lookup(ctx, id);
    const char *name = w ? w->name : NULL;
    pthread_mutex_unlock(&ctx->lock);
    return name;
}

jc_status jc_window_release(jc_context *ctx, jc_window id) {
    if (!ctx) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_window_release: NULL context");
    pthread_mutex_lock(&ctx->lock);
    jc__window *w = lookup(ctx, id);
    jc_status st = JC_OK;
    if (!w) {
        st = jc__fail(JC_ERR_NOT_FOUND, "window %lld does not exist (never started, or released)", (long long)id);
    } else if (w->logging) {
        w->released = 1; /* freed once its row is formatted (windows.c) */
        pthread_cond_broadcast(&ctx->data_cv);
    } else {
        jc__window_free(ctx, w, id);
    }
    pthread_mutex_unlock(&ctx->lock);
    return st;
}

jc_status jc_energy_between(jc_context *ctx, uint64_t t0, uint64_t t1, double timeout_s, jc_window_result *out) {
    if (!ctx || !out) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_energy_between: NULL argument");
    jc_status st = check_timeout(timeout_s);
    if (st != JC_OK) return st;
    if (t1 < t0) return jc__fail(JC_ERR_INVALID_ARGUMENT, "the interval ends before it starts");
    jc__edge e0[JC_MAX_DEVICES] = {{0}}, e1[JC_MAX_DEVICES] = {{0}};
    pthread_mutex_lock(&ctx->lock);
    st = wait_edges(ctx, t0, t1, e0, e1, timeout_s, out, NULL);
    pthread_mutex_unlock(&ctx->lock);
    return st;
}

/* Resolves each device's energy at the epoch if the coordinator has not yet; 1 when all are (lock held). */
static int resolve_epochs(jc_context *ctx) {
    int all = 1;
    for (int i = 0; i < ctx->ndev; i++) {
        jc__device *d = &ctx->dev[i];
        if (d->epoch_resolved) continue;
        jc__edge e = {0};
        if (ctx->epoch_ns && resolve_one(ctx, i, ctx->epoch_ns, &e, 0)) {
            d->epoch_resolved = 1;
            d->epoch_j = e.e;
        } else {
            all = 0;
        }
    }
    return all;
}

jc_status jc_energy_at(jc_context *ctx, const uint64_t *t_ns, size_t n, double timeout_s, double *energy_j) {
    if (!ctx || (n && (!t_ns || !energy_j))) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_energy_at: NULL argument");
    jc_status st = check_timeout(timeout_s);
    if (st != JC_OK || n == 0) return st;
    uint64_t latest = 0;
    for (size_t k = 0; k < n; k++)
        if (t_ns[k] > latest) latest = t_ns[k];
    int nd = ctx->ndev;
    uint64_t deadline = jc_now_ns() + (uint64_t)(timeout_s * 1e9);
    pthread_mutex_lock(&ctx->lock);
    /* Wait until the latest instant resolves for every device (then every earlier one has too). */
    jc__edge last[JC_MAX_DEVICES] = {{0}};
    while (!jc__resolve_edge(ctx, latest, last, 1) || !resolve_epochs(ctx)) {
        if (jc_now_ns() >= deadline) {
            st = jc__fail(JC_ERR_TIMEOUT, "the samples after the latest of %zu instants have not arrived within %g s",
                          n, timeout_s);
            break;
        }
        struct timespec ts = {(time_t)(deadline / 1000000000ull), (long)(deadline % 1000000000ull)};
        pthread_cond_timedwait(&ctx->data_cv, &ctx->lock, &ts);
    }
    for (int i = 0; i < nd; i++) {
        jc__device *d = &ctx->dev[i];
        double base = d->epoch_resolved ? d->epoch_j : NAN;
        for (size_t k = 0; k < n; k++) {
            double e = NAN;
            if (d->info.energy_source != JC_SOURCE_NONE && jc__energy_at(&d->knots, t_ns[k], &e) != JC__AT_OK) e = NAN;
            energy_j[k * (size_t)nd + (size_t)i] = e - base;
        }
    }
    pthread_mutex_unlock(&ctx->lock);
    return st;
}
