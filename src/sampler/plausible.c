/* Plausibility of a GPU energy counter: each raw reading (mJ since the driver loaded) becomes a stitched
 * cumulative energy, or is rejected.
 *   - a rise faster than the card can draw (2x its largest power limit) is a jump: rejected;
 *   - a fall to a value the card could have drawn since the last good reading is a restart (driver reload):
 *     stitched, the gap since the last good reading filled at the power before it;
 *   - any other fall goes backwards: rejected.
 * Rejected readings that then rise at a plausible rate among themselves (3 in a row) mean the counter moved
 * for good: the series is re-based on them, the gap filled at the power seen before it.  Each case makes the
 * device degraded with the reason. */
#include <math.h>

#include "../core/context.h"

#define REBASE_AFTER 3

static double bound_j(const jc__device *d, uint64_t from, uint64_t to) {
    double dt = to > from ? jc__s(to - from) : 0;
    return 2.0 * d->max_power_w * (dt + 0.2);
}

static double since_epoch(const jc__device *d, uint64_t t) {
    uint64_t e = d->ctx->epoch_ns;
    return e && t > e ? jc__s(t - e) : 0.0;
}

/* Power over the last good knots, for filling a gap (lock held). */
static double recent_power(const jc__device *d) {
    if (d->knots.len < 2) return 0;
    const jc__point *b = jc__ring_last(&d->knots);
    size_t i = jc__ring_lower_bound(&d->knots, b->t_ns > 1000000000ull ? b->t_ns - 1000000000ull : 0);
    if (i >= d->knots.len - 1) i = d->knots.len - 2;
    const jc__point *a = jc__ring_at(&d->knots, i);
    return b->t_ns > a->t_ns ? (b->v - a->v) / jc__s(b->t_ns - a->t_ns) : 0;
}

static void push(jc__device *d, uint64_t t, unsigned long long mj) {
    jc__counter_track *c = &d->counter;
    double e = (double)mj * 1e-3 + c->offset_j;
    jc__ring_push(&d->knots, t, e);
    d->knot_sigma_ns = c->jitter_ns;
    jc__health_knot(d, t);
    c->good_mj = mj;
    c->good_ns = t;
    c->suspect = 0;
    c->last_knot_ns = t;
    pthread_cond_broadcast(&d->ctx->data_cv);
}

int jc__counter_commit(jc__device *d, uint64_t t, unsigned long long mj) {
    jc__counter_track *c = &d->counter;
    jc_context *ctx = d->ctx;
    if (c->have_knot && t <= c->last_knot_ns) return 1;
    pthread_mutex_lock(&ctx->lock);
    int ok = 1;
    if (!c->have_knot) {
        c->have_knot = 1;
        c->offset_j = -(double)mj * 1e-3; /* the series starts at 0 J */
        push(d, t, mj);
    } else if (mj >= c->good_mj && (double)(mj - c->good_mj) * 1e-3 <= bound_j(d, c->good_ns, t)) {
        push(d, t, mj);
    } else if (mj < c->good_mj && (double)mj * 1e-3 <= bound_j(d, c->good_ns, t)) {
        /* Restarted from 0 somewhere in (good_ns, t]: the reading holds only the energy since the restart, so
         * the gap since the last good reading is filled at the power seen before it (at least the reading). */
        double before = (double)c->good_mj * 1e-3 + c->offset_j;
        double gap = recent_power(d) * jc__s(t - c->good_ns);
        if (gap < (double)mj * 1e-3) gap = (double)mj * 1e-3;
        c->offset_j = before + gap - (double)mj * 1e-3;
        jc__health_degrade(d, t, "energy counter restarted near %.2f s (from %.0f J to %.1f J; a driver reload?): "
                           "stitched, %.2f s filled at the power before it", since_epoch(d, t),
                           (double)c->good_mj * 1e-3, (double)mj * 1e-3, jc__s(t - c->good_ns));
        d->degraded_until_ns = t + 10000000000ull;
        push(d, t, mj);
    } else {
        int rising = c->suspect && mj >= c->suspect_mj &&
                     (double)(mj - c->suspect_mj) * 1e-3 <= bound_j(d, c->suspect_ns, t);
        if (!c->suspect || !rising) {
            double de = ((double)mj - (double)c->good_mj) * 1e-3;
            double dt = jc__s(t - c->good_ns);
            if (de >= 0)
                jc__health_degrade(d, t, "energy counter jumped by %.0f J in %.2f s (%.0f W; this card draws at "
                                   "most %.0f W) at %.2f s: reading rejected", de, dt, dt > 0 ? de / dt : INFINITY,
                                   d->max_power_w, since_epoch(d, t));
            else
                jc__health_degrade(d, t, "energy counter went backwards by %.1f J at %.2f s: reading rejected", -de,
                                   since_epoch(d, t));
            d->degraded_until_ns = t + 10000000000ull;
            c->suspect = 1;
        } else if (++c->suspect >= REBASE_AFTER) {
            /* The counter moved for good: the gap since the last good reading at the power seen before it. */
            double before = (double)c->good_mj * 1e-3 + c->offset_j;
            double after = before + recent_power(d) * jc__s(t - c->good_ns);
            c->offset_j = after - (double)mj * 1e-3;
            jc__health_degrade(d, t, "energy counter moved by %.0f J at %.2f s and stayed there: re-based, %.2f s "
                               "filled at the power before", ((double)mj - (double)c->good_mj) * 1e-3 -
                               (after - before), since_epoch(d, t), jc__s(t - c->good_ns));
            d->degraded_until_ns = t + 10000000000ull;
            push(d, t, mj);
            pthread_mutex_unlock(&ctx->lock);
            jc__reader_xcheck_knot(d, t, after);
            return 1;
        }
        if (c->suspect) {
            c->suspect_mj = mj;
            c->suspect_ns = t;
        }
        ok = 0;
    }
    double e = (double)mj * 1e-3 + c->offset_j;
    pthread_mutex_unlock(&ctx->lock);
    if (ok) jc__reader_xcheck_knot(d, t, e);
    return ok;
}
