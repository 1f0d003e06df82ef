/* The physics of a fake GPU: load schedule -> true power (limited by the power limit) -> energy.
 *
 * Times are ms since the fake GPU started, power is W, so energy comes out in W * ms = mJ.  Load is piecewise
 * constant, hence so is power, and every energy is an exact integral computed in closed form: a long run
 * costs no more than a short one. */
#include <limits.h>
#include <math.h>

#include "fake.h"

/* The most power the device draws under a limit of limit_mw. */
static double clamp_w(const fake_device *d, unsigned limit_mw) {
    double w = limit_mw / 1000.0;
    return d->burst_overshoot ? w * d->burst_factor : w;
}

/* Power at load 1 under a limit: loaded_w, or in sweep mode the sweep's power at that limit (linear between
 * its caps, constant beyond them). */
static double loaded_w_at(const fake_device *d, unsigned limit_mw) {
    if (d->nsweep < 1) return d->loaded_w;
    double cap = limit_mw / 1000.0;
    const double *c = d->sweep_cap_w, *p = d->sweep_power_w;
    int n = d->nsweep;
    if (cap <= c[0]) return p[0];
    if (cap >= c[n - 1]) return p[n - 1];
    int i = 1;
    while (c[i] < cap) i++;
    return p[i - 1] + (p[i] - p[i - 1]) * (cap - c[i - 1]) / (c[i] - c[i - 1]);
}

/* Power drawn at a load under a limit (the limit both clamps the power and, in sweep mode, sets the loaded
 * power). */
static double power_of_load(const fake_device *d, double load, unsigned limit_mw) {
    double w = d->idle_w + (loaded_w_at(d, limit_mw) - d->idle_w) * load;
    double max_w = clamp_w(d, limit_mw);
    return w < max_w ? w : max_w;
}

/* Time (ms) the square wave spends high in [-phase, x]; only differences of it matter. */
static double square_high_ms(const fake_load *l, double x) {
    double u = x + l->phase_ms;
    double k = floor(u / l->period_ms);
    double r = u - k * l->period_ms;
    double high = l->duty * l->period_ms;
    return k * high + (r < high ? r : high);
}

static double base_load_at(const fake_load *l, double t) {
    if (l->kind == FAKE_LOAD_CONSTANT) return l->level;
    double u = fmod(t + l->phase_ms, l->period_ms);
    if (u < 0) u += l->period_ms;
    return u < l->duty * l->period_ms ? l->high : l->low;
}

/* Energy of the base schedule over [a, b], a <= b. */
static double base_energy(const fake_device *d, double a, double b, unsigned limit_mw) {
    const fake_load *l = &d->load;
    if (l->kind == FAKE_LOAD_CONSTANT) return power_of_load(d, l->level, limit_mw) * (b - a);
    double p_high = power_of_load(d, l->high, limit_mw), p_low = power_of_load(d, l->low, limit_mw);
    return p_low * (b - a) + (p_high - p_low) * (square_high_ms(l, b) - square_high_ms(l, a));
}

/* Energy over [a, b] of the schedule (base and segments) with one power limit in force throughout. */
static double scheduled_energy(const fake_device *d, double a, double b, unsigned limit_mw) {
    if (b <= a) return 0;
    double e = base_energy(d, a, b, limit_mw);
    for (int i = 0; i < d->load.nsegments; i++) {
        const fake_segment *s = &d->load.segments[i];
        double lo = a > s->from_ms ? a : s->from_ms, hi = b < s->to_ms ? b : s->to_ms;
        if (hi > lo) e += power_of_load(d, s->load, limit_mw) * (hi - lo) - base_energy(d, lo, hi, limit_mw);
    }
    return e;
}

/* The same with the loads set at run time in place of the schedule where they apply. */
static double interval_energy(const fake_device *d, double a, double b, unsigned limit_mw) {
    if (b <= a) return 0;
    double e = scheduled_energy(d, a, b, limit_mw);
    const fake_runtime *r = d->runtime;
    for (int i = 0; r && i < r->n; i++) {
        if (r->load[i] < 0) continue;
        double from = r->from_ms[i], to = i + 1 < r->n ? r->from_ms[i + 1] : INFINITY;
        double lo = a > from ? a : from, hi = b < to ? b : to;
        if (hi > lo) e += power_of_load(d, r->load[i], limit_mw) * (hi - lo) - scheduled_energy(d, lo, hi, limit_mw);
    }
    return e;
}

double fake_load_at(const fake_device *d, double t_ms) {
    const fake_runtime *r = d->runtime;
    for (int i = r ? r->n - 1 : -1; i >= 0; i--) {
        if (t_ms >= r->from_ms[i]) {
            if (r->load[i] >= 0) return r->load[i];
            break;
        }
    }
    for (int i = 0; i < d->load.nsegments; i++) {
        const fake_segment *s = &d->load.segments[i];
        if (t_ms >= s->from_ms && t_ms < s->to_ms) return s->load;
    }
    return base_load_at(&d->load, t_ms);
}

double fake_power_at(const fake_device *d, const fake_dev_state *s, double t_ms) {
    unsigned limit = t_ms >= s->eff_ms ? s->limit_mw : s->prev_limit_mw;
    return power_of_load(d, fake_load_at(d, t_ms), limit);
}

double fake_energy_to(const fake_device *d, const fake_dev_state *s, double t_ms) {
    if (t_ms >= s->eff_ms) return s->anchor_mj + interval_energy(d, s->eff_ms, t_ms, s->limit_mw);
    return s->anchor_mj - interval_energy(d, t_ms, s->eff_ms, s->prev_limit_mw);
}

/* Latest point of the grid phase + k * period at or before t (may be negative). */
static double grid_floor(double t, double phase, double period) {
    return phase + floor((t - phase) / period) * period;
}

/* The fake GPUs ran their schedule before t = 0 too, so the first step after the start is a whole one. */
double fake_counter_boundary(const fake_device *d, double t_ms) {
    return grid_floor(t_ms, d->counter_phase_ms, d->counter_step_ms);
}

static long long add_saturating(long long a, long long b) {
    long long r;
    if (__builtin_add_overflow(a, b, &r)) return b > 0 ? LLONG_MAX : LLONG_MIN;
    return r;
}

/* Whole mJ of an energy.  The epsilon keeps an exact integral such as 29999.99999 from flooring a whole mJ
 * short. */
static long long whole_mj(double e) { return (long long)floor(e + 1e-6); }

/* The counter at t with jumps and resets but not the stuck windows; may be negative (clamped by the caller). */
static long long counter_unstuck(const fake_device *d, const fake_dev_state *s, double t_ms) {
    double e = fake_energy_to(d, s, fake_counter_boundary(d, t_ms));
    double reset = -INFINITY; /* the latest reset at or before t */
    for (int i = 0; i < d->nresets; i++)
        if (d->reset_ms[i] <= t_ms && d->reset_ms[i] > reset) reset = d->reset_ms[i];
    long long v;
    if (isinf(reset)) {
        v = add_saturating((long long)d->energy_initial_mj, whole_mj(e));
    } else {
        /* Restarted from 0 at the reset, integrating the true power from there (0 until the first boundary
         * after it). */
        double since = e - fake_energy_to(d, s, reset);
        v = since > 0 ? whole_mj(since) : 0;
    }
    for (int i = 0; i < d->njumps; i++)
        if (d->jumps[i].at_ms <= t_ms && d->jumps[i].at_ms >= reset) v = add_saturating(v, d->jumps[i].delta_mj);
    return v;
}

unsigned long long fake_counter_at(const fake_device *d, const fake_dev_state *s, double t_ms) {
    for (int i = 0; i < d->nstuck; i++) {
        if (t_ms >= d->stuck[i].from_ms && t_ms < d->stuck[i].to_ms) {
            t_ms = d->stuck[i].from_ms; /* not inside another window: they do not overlap */
            break;
        }
    }
    long long v = counter_unstuck(d, s, t_ms);
    return v < 0 ? 0 : (unsigned long long)v; /* an unsigned counter: one sent below 0 reads 0 */
}

double fake_instant_update(const fake_device *d, double t_ms) {
    return grid_floor(t_ms, d->instant_phase_ms, d->instant_period_ms);
}

void fake_apply_limit(const fake_device *d, fake_dev_state *s, double t_ms, unsigned limit_mw) {
    if (t_ms < s->eff_ms) {
        /* An earlier change is still pending for the same boundary: it is simply replaced. */
        s->limit_mw = limit_mw;
        return;
    }
    double eff = grid_floor(t_ms, d->counter_phase_ms, d->counter_step_ms) + d->counter_step_ms;
    s->anchor_mj = fake_energy_to(d, s, eff);
    s->prev_limit_mw = s->limit_mw;
    s->limit_mw = limit_mw;
    s->eff_ms = eff;
}
