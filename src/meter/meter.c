/* Windows: start and stop take a timestamp under the context lock and nothing else.  Each edge's energy is
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

/* Resolves device d's energy at t: 1 when final (a value, or NaN for a source that cannot give one). */
static int resolve_one(jc_context *ctx, int i, uint64_t t, double *e) {
    jc__device *d = &ctx->dev[i];
    if (d->info.energy_source == JC_SOURCE_NONE) {
        *e = NAN;
        return 1;
    }
    jc__at at = jc__energy_at(&d->knots, t, e);
    if (at == JC__AT_OK) return 1;
    if (at == JC__AT_GONE || d->dead || ctx->stopping) {
        *e = NAN;
        return 1;
    }
    return 0;
}

int jc__resolve_edge(jc_context *ctx, uint64_t t, double *e, unsigned char *r) {
    int all = 1;
    for (int i = 0; i < ctx->ndev; i++) {
        if (!r[i]) r[i] = (unsigned char)resolve_one(ctx, i, t, &e[i]);
        if (!r[i]) all = 0;
    }
    return all;
}

void jc__meter_resolve_all(jc_context *ctx) {
    for (int i = 0; i < ctx->ndev; i++) {
        jc__device *d = &ctx->dev[i];
        if (!d->epoch_resolved && ctx->epoch_ns) {
            unsigned char r = 0;
            double e;
            if (resolve_one(ctx, i, ctx->epoch_ns, &e)) {
                r = 1;
                d->epoch_j = e;
            }
            d->epoch_resolved = r;
        }
    }
    for (size_t k = 0; k < ctx->nwin; k++) {
        jc__window *w = ctx->win[k];
        if (!w || !w->in_use) continue;
        jc__resolve_edge(ctx, w->t0, w->e0, w->r0);
        if (w->t1) jc__resolve_edge(ctx, w->t1, w->e1, w->r1);
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

static jc__window *lookup(jc_context *ctx, jc_window id) {
    if (id <= 0) return NULL;
    size_t slot = (size_t)(id & SLOT_MASK);
    uint32_t gen = (uint32_t)((uint64_t)id >> SLOT_BITS);
    if (slot == 0 || slot > ctx->nwin) return NULL;
    jc__window *w = ctx->win[slot - 1];
    return (w && w->in_use && w->gen == gen) ? w : NULL;
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
        jc__window *w = calloc(1, sizeof *w + n * (2 * sizeof(double) + 2));
        if (w) {
            w->e0 = (double *)(w + 1);
            w->e1 = w->e0 + n;
            w->r0 = (unsigned char *)(w->e1 + n);
            w->r1 = w->r0 + n;
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
    memset(w->r0, 0, (size_t)ctx->ndev);
    memset(w->r1, 0, (size_t)ctx->ndev);
    w->gen = gen;
    w->in_use = 1;
    w->t0 = t_ns;
    w->name = copy;
    *out = (jc_window)(((uint64_t)gen << SLOT_BITS) | slot);
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
    else
        w->t1 = t_ns;
    pthread_mutex_unlock(&ctx->lock);
    return st;
}

jc_status jc_window_stop(jc_context *ctx, jc_window id) { return jc_window_stop_at(ctx, id, jc_now_ns()); }

static void fill_result(jc_context *ctx, uint64_t t0, uint64_t t1, const double *e0, const double *e1,
                        int resolved, jc_window_result *out) {
    memset(out, 0, sizeof *out);
    out->start_ns = t0;
    out->stop_ns = t1;
    out->elapsed_s = jc__s(t1 - t0);
    out->device_count = ctx->ndev;
    out->resolved = resolved;
    for (int i = 0; i < ctx->ndev; i++) {
        out->source[i] = ctx->dev[i].info.energy_source;
        double v = e1[i] - e0[i];
        out->energy_j[i] = (isnan(v) || v < 0) ? (isnan(v) ? NAN : 0.0) : v;
    }
}

/* Best estimate for an edge that has not resolved yet: the newest knot (energy up to the last step). */
static void provisional(jc_context *ctx, uint64_t t, const double *e, const unsigned char *r, double *out) {
    for (int i = 0; i < ctx->ndev; i++) {
        if (r[i]) {
            out[i] = e[i];
            continue;
        }
        const jc__point *last = jc__ring_last(&ctx->dev[i].knots);
        out[i] = (last && last->t_ns <= t) ? last->v : NAN;
    }
}

static jc_status wait_edges(jc_context *ctx, uint64_t t0, uint64_t t1, double *e0, unsigned char *r0, double *e1,
                            unsigned char *r1, double timeout_s, jc_window_result *out, jc__window *w) {
    uint64_t deadline = jc_now_ns() + (uint64_t)(timeout_s * 1e9);
    for (;;) {
        int done = jc__resolve_edge(ctx, t0, e0, r0);
        done = jc__resolve_edge(ctx, t1, e1, r1) && done;
        if (done) {
            fill_result(ctx, t0, t1, e0, e1, 1, out);
            return JC_OK;
        }
        if (jc_now_ns() >= deadline) {
            double p0[JC_MAX_DEVICES], p1[JC_MAX_DEVICES];
            provisional(ctx, t0, e0, r0, p0);
            provisional(ctx, t1, e1, r1, p1);
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
        st = wait_edges(ctx, w->t0, w->t1, w->e0, w->r0, w->e1, w->r1, timeout_s, out, w);
    pthread_mutex_unlock(&ctx->lock);
    return st;
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
    } else {
        free(w->name);
        w->name = NULL;
        w->in_use = 0;
        ctx->free_slots[ctx->nfree++] = (size_t)(id & SLOT_MASK);
        pthread_cond_broadcast(&ctx->data_cv);
    }
    pthread_mutex_unlock(&ctx->lock);
    return st;
}

jc_status jc_energy_between(jc_context *ctx, uint64_t t0, uint64_t t1, double timeout_s, jc_window_result *out) {
    if (!ctx || !out) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_energy_between: NULL argument");
    jc_status st = check_timeout(timeout_s);
    if (st != JC_OK) return st;
    if (t1 < t0) return jc__fail(JC_ERR_INVALID_ARGUMENT, "the interval ends before it starts");
    double e0[JC_MAX_DEVICES], e1[JC_MAX_DEVICES];
    unsigned char r0[JC_MAX_DEVICES] = {0}, r1[JC_MAX_DEVICES] = {0};
    pthread_mutex_lock(&ctx->lock);
    st = wait_edges(ctx, t0, t1, e0, r0, e1, r1, timeout_s, out, NULL);
    pthread_mutex_unlock(&ctx->lock);
    return st;
}
