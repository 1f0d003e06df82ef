/* Finding the instants at which a GPU's energy counter steps.
 *
 * On an H100 the counter steps every 100.00 ms on a regular clock (residual 2.9 ms around a straight-line fit
 * over a minute, most of it bracket noise), and each read costs 4.2 ms of CPU time.  So the tracker:
 *   - unlocked: polls back to back and brackets each step between two reads (bracket ~ one read);
 *   - once >= 4 bracketed steps fit t = phase + k * period: reads once just after each predicted step and
 *     puts the knot at the predicted instant (one read per step); every PROBE_EVERY reads it brackets a step
 *     again (a read just before it, then back to back) to keep the fit current; a step that comes late or
 *     off the prediction unlocks it.
 * With an interval (counter_interval_s, or 1 s while no window needs every step) it reads only the first
 * predicted step after each interval: fewer reads, knots
 * further apart (see BENCHMARKS.md for what that costs short windows).  A counter that changes faster than
 * MIN_PERIOD (no steps to find) is read every 100 ms (or counter_interval_s) with the knot at the read. */
#include <math.h>
#include <string.h>

#include "../core/context.h"

#define MS 1000000ull
#define MIN_PERIOD_NS (20 * MS)
#define PROBE_EVERY 16           /* reads between two bracketings while the fit is young */
#define PROBE_EVERY_SETTLED 128  /* ... once it holds 16 steps: a bracketing costs ~40 ms of CPU, and the step
                                    clock drifts by well under a ms over 128 steps (bench/results/HISTORY.md) */
#define CONTINUOUS_POLL_NS (100 * MS) /* a counter without steps: a read (a knot) every 100 ms */

static int64_t step_index(const jc__counter_track *c, uint64_t t) {
    return (int64_t)floor(((double)t - (double)c->phase_ns) / c->period_ns);
}

static uint64_t step_time(const jc__counter_track *c, int64_t k) {
    return (uint64_t)((double)c->phase_ns + (double)k * c->period_ns + 0.5);
}

/* Least-squares line through the bracketed step instants; returns the largest residual (ns), or -1. */
static double refit(jc__counter_track *c) {
    int n = c->nfit < JC__FIT_POINTS ? c->nfit : JC__FIT_POINTS;
    if (n < 4) return -1;
    uint64_t t[JC__FIT_POINTS];
    int first = c->nfit < JC__FIT_POINTS ? 0 : c->fit_next;
    for (int i = 0; i < n; i++) t[i] = c->fit_t[(first + i) % JC__FIT_POINTS];
    double period = c->period_ns;
    if (!(period > 0)) {
        period = 1e18;
        for (int i = 1; i < n; i++)
            if ((double)(t[i] - t[i - 1]) < period) period = (double)(t[i] - t[i - 1]);
    }
    if (period < (double)MIN_PERIOD_NS) {
        c->period_ns = period; /* no steps to find: the counter changes at (almost) every read */
        return -1;
    }
    double sx = 0, sy = 0, sxx = 0, sxy = 0, k[JC__FIT_POINTS];
    for (int i = 0; i < n; i++) {
        k[i] = floor((double)(t[i] - t[0]) / period + 0.5);
        double y = (double)(t[i] - t[0]);
        sx += k[i];
        sy += y;
        sxx += k[i] * k[i];
        sxy += k[i] * y;
    }
    double den = n * sxx - sx * sx;
    if (den <= 0) return -1;
    double slope = (n * sxy - sx * sy) / den, icpt = (sy - slope * sx) / n;
    double worst = 0;
    for (int i = 0; i < n; i++) {
        double r = fabs((double)(t[i] - t[0]) - (icpt + slope * k[i]));
        if (r > worst) worst = r;
    }
    c->period_ns = slope;
    c->phase_ns = t[0] + (uint64_t)llround(icpt > 0 ? icpt : 0);
    return worst;
}

static void add_fit_point(jc__counter_track *c, uint64_t t) {
    c->fit_t[c->fit_next] = t;
    c->fit_next = (c->fit_next + 1) % JC__FIT_POINTS;
    c->nfit++;
}

static void unlock(jc__counter_track *c, uint64_t keep_point) {
    c->locked = 0;
    c->probing = 0;
    c->nfit = 0;
    c->fit_next = 0;
    c->period_ns = 0;
    add_fit_point(c, keep_point);
}

/* Seconds between the reads of the counter: the option when given; else every step while fine resolution
 * is needed (jc__reader_fine), about once a second otherwise. */
static double every_s(const jc__device *d) {
    double opt = d->ctx->opts.counter_interval_s;
    if (opt > 0) return opt;
    /* Until the fit holds 16 bracketed steps its period is coarse: a read a second then misplaces knots by
     * tens of ms (+-12% on a second's power on the fake GPU), so the first ~9 s read every step. */
    return d->fine || d->counter.nfit < 16 ? 0.0 : 1.0;
}

/* Schedules the read after [a, b] while locked. */
static void schedule_locked(const jc__device *d, jc__counter_track *c, uint64_t a, uint64_t b) {
    uint64_t dur = b - a;
    int64_t k = step_index(c, b) + 1;
    double every = every_s(d) * 1e9;
    if (every > c->period_ns && c->last_knot_ns) {
        int64_t kmin = step_index(c, c->last_knot_ns + (uint64_t)every - (uint64_t)(c->period_ns / 2));
        if (kmin > k) k = kmin;
    }
    uint64_t s = step_time(c, k);
    c->expect_ns = s;
    /* Probe often until the fit spans enough steps to pin the period (its error shrinks with the span). */
    int every_probe = c->nfit < 12 ? 2 : c->nfit < 16 ? PROBE_EVERY : PROBE_EVERY_SETTLED;
    /* Read a quarter step after the predicted step: it has surely happened, and a read there costs 3-4 ms of CPU
     * against 7-15 ms in the first 10 ms after a step (bench/results/HISTORY.md).  The knot keeps the step's
     * instant. */
    uint64_t margin = dur + (uint64_t)(3 * c->jitter_ns);
    if (margin < (uint64_t)(0.25 * c->period_ns)) margin = (uint64_t)(0.25 * c->period_ns);
    if (margin > (uint64_t)(0.3 * c->period_ns)) margin = (uint64_t)(0.3 * c->period_ns);
    if (c->reads_since_probe >= every_probe) {
        c->probing = 1;
        c->n_probes++;
        uint64_t lead = 2 * dur + MS + (uint64_t)(2 * c->jitter_ns);
        c->next_ns = s > lead + b ? s - lead : b;
    } else {
        c->probing = 0;
        c->next_ns = s + margin;
    }
}

void jc__counter_refine(jc__device *d, uint64_t now) {
    jc__counter_track *c = &d->counter;
    if (!c->locked || !(c->period_ns > 0)) return;
    uint64_t margin = (uint64_t)(0.25 * c->period_ns);
    uint64_t s = step_time(c, step_index(c, now) + 1) + margin;
    if (s < c->next_ns) {
        c->next_ns = s;
        c->expect_ns = s - margin;
        c->probing = 0;
    }
}

void jc__counter_read(jc__device *d, uint64_t now) {
    jc__counter_track *c = &d->counter;
    jc_context *ctx = d->ctx;
    if (now < c->next_ns) return;
    unsigned long long mj = 0;
    jc__reader_busy(d, 1);
    uint64_t a = jc_now_ns();
    nvmlReturn_t r = ctx->nvml->nvmlDeviceGetTotalEnergyConsumption(d->handle, &mj);
    uint64_t b = jc_now_ns();
    jc__reader_busy(d, 0);
    uint64_t mid = a + (b - a) / 2, dur = b - a;
    c->n_reads++;
    if (r != NVML_SUCCESS) {
        /* Transient errors: retried with back-off, 10 ms doubling up to 1 s. */
        int n = d->fail_streak < 7 ? d->fail_streak : 7;
        if (!jc__reader_read_failed(d, r, mid, "energy counter", 1)) c->next_ns = b + (10 * MS << n);
        return;
    }
    if (d->fail_streak) {
        pthread_mutex_lock(&ctx->lock);
        jc__reader_ok(d, mid);
        pthread_mutex_unlock(&ctx->lock);
    }
    if (!c->have_raw || mj != c->raw_mj) {
        c->raw_changed_ns = mid;
        c->stuck_reported = 0;
    } else if (!c->stuck_reported && mid - c->raw_changed_ns > 2000 * MS && d->latest.power_w > 10) {
        c->stuck_reported = 1;
        pthread_mutex_lock(&ctx->lock);
        jc__health_degrade(d, mid, "energy counter has not moved for %.1f s while the GPU draws %.0f W",
                           jc__s(mid - c->raw_changed_ns), d->latest.power_w);
        d->degraded_until_ns = UINT64_MAX;
        pthread_mutex_unlock(&ctx->lock);
    }
    int changed = c->have_raw && mj != c->raw_mj;
    uint64_t bracket = changed ? mid - c->prev_mid_ns : 0;
    /* A bracket is tight when the two reads were (nearly) back to back. */
    int tight = changed && bracket <= 3 * dur + 2 * MS && bracket < MIN_PERIOD_NS;
    if (!c->have_raw) {
        c->have_raw = 1;
        c->next_ns = b + MS;
    } else if (!c->locked) {
        int continuous = c->period_ns > 0 && c->period_ns < MIN_PERIOD_NS;
        if (changed) {
            /* A stepping counter stepped inside the bracket; a continuous one holds the value at the read. */
            uint64_t step = continuous ? mid : c->prev_mid_ns + bracket / 2;
            jc__counter_commit(d, step, mj);
            if (tight) add_fit_point(c, step);
            double worst = refit(c);
            if (worst >= 0 && worst < 0.1 * c->period_ns) {
                c->locked = 1;
                c->reads_since_probe = 0;
                c->jitter_ns = worst / 2;
            } else if (worst >= 0 && c->nfit >= 8) {
                unlock(c, step); /* irregular: start a fresh fit from here */
            }
        }
        if (c->locked)
            schedule_locked(d, c, a, b);
        else if (continuous)
            c->next_ns = b + (every_s(d) * 1e9 > CONTINUOUS_POLL_NS ? (uint64_t)(every_s(d) * 1e9)
                                                                    : CONTINUOUS_POLL_NS);
        else
            c->next_ns = b + MS;
    } else if (changed) {
        c->reads_since_probe++;
        if (tight && c->probing) {
            uint64_t step = c->prev_mid_ns + bracket / 2;
            uint64_t predicted = step_time(c, step_index(c, step + (uint64_t)(c->period_ns / 2)));
            double err = fabs((double)step - (double)predicted);
            jc__counter_commit(d, step, mj);
            c->jitter_ns = sqrt(0.9 * c->jitter_ns * c->jitter_ns + 0.1 * err * err);
            if (err > 0.15 * c->period_ns) {
                c->n_unlocks++;
                unlock(c, step);
                c->next_ns = b + MS;
            } else {
                add_fit_point(c, step);
                refit(c);
                c->reads_since_probe = 0;
                schedule_locked(d, c, a, b);
            }
        } else {
            /* The value is the counter at the last step before the read began. */
            jc__counter_commit(d, step_time(c, step_index(c, a)), mj);
            schedule_locked(d, c, a, b);
        }
    } else {
        /* No step yet: late, or a probe's first read.  Poll back to back until it comes. */
        if (!c->probing) c->n_late++;
        c->probing = 1;
        c->next_ns = b;
        if (mid > c->expect_ns + (uint64_t)(0.5 * c->period_ns)) {
            c->n_unlocks++;
            unlock(c, c->last_knot_ns);
            c->next_ns = b + MS;
        }
    }
    c->raw_mj = mj;
    c->prev_mid_ns = mid;
}
