/* Rings and the energy reconstruction (see series.h). */
#include <math.h>
#include <stdlib.h>

#include "series.h"

jc_status jc__ring_init(jc__ring *r, size_t cap) {
    r->pts = calloc(cap ? cap : 1, sizeof *r->pts);
    r->cap = cap ? cap : 1;
    r->start = r->len = 0;
    return r->pts ? JC_OK : jc__fail(JC_ERR_NO_MEMORY, "cannot allocate a series of %zu points", cap);
}

void jc__ring_free(jc__ring *r) {
    free(r->pts);
    r->pts = NULL;
    r->cap = r->len = r->start = 0;
}

void jc__ring_push(jc__ring *r, uint64_t t_ns, double v) {
    const jc__point *last = jc__ring_last(r);
    if (last && t_ns <= last->t_ns) return;
    if (r->len == r->cap) {
        r->start = (r->start + 1) % r->cap;
        r->len--;
    }
    jc__point *p = &r->pts[(r->start + r->len) % r->cap];
    p->t_ns = t_ns;
    p->v = v;
    r->len++;
}

size_t jc__ring_lower_bound(const jc__ring *r, uint64_t t_ns) {
    size_t lo = 0, hi = r->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (jc__ring_at(r, mid)->t_ns < t_ns)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Power at t: linear between samples, flat beyond the ends. */
static double power_at(const jc__ring *power, size_t i_hi, uint64_t t) {
    if (i_hi == 0) return jc__ring_at(power, 0)->v;
    if (i_hi >= power->len) return jc__ring_at(power, power->len - 1)->v;
    const jc__point *a = jc__ring_at(power, i_hi - 1), *b = jc__ring_at(power, i_hi);
    double f = (double)(t - a->t_ns) / (double)(b->t_ns - a->t_ns);
    return a->v + (b->v - a->v) * f;
}

double jc__power_integral(const jc__ring *power, uint64_t a, uint64_t b) {
    if (!power || power->len == 0 || b <= a) return 0.0;
    size_t i = jc__ring_lower_bound(power, a); /* first sample >= a */
    double total = 0.0;
    uint64_t t = a;
    double p = power_at(power, i, a);
    while (t < b) {
        uint64_t next = b;
        if (i < power->len && jc__ring_at(power, i)->t_ns < b) next = jc__ring_at(power, i)->t_ns;
        double pn = (next == b) ? power_at(power, i, b) : jc__ring_at(power, i)->v;
        total += 0.5 * (p + pn) * (double)(next - t) * 1e-9;
        t = next;
        p = pn;
        if (next != b) i++;
    }
    return total;
}

jc__at jc__energy_at(const jc__ring *knots, const jc__ring *power, uint64_t t, double *energy_j) {
    *energy_j = NAN;
    if (knots->len == 0) return JC__AT_PENDING;
    const jc__point *first = jc__ring_at(knots, 0), *last = jc__ring_last(knots);
    if (t > last->t_ns) return JC__AT_PENDING;
    if (t < first->t_ns) return JC__AT_GONE;
    size_t k = jc__ring_lower_bound(knots, t);
    const jc__point *hi = jc__ring_at(knots, k);
    if (hi->t_ns == t || k == 0) {
        *energy_j = hi->v;
        return JC__AT_OK;
    }
    const jc__point *lo = jc__ring_at(knots, k - 1);
    double step = hi->v - lo->v;
    double frac = (double)(t - lo->t_ns) / (double)(hi->t_ns - lo->t_ns);
    if (power && power->len > 0) {
        double whole = jc__power_integral(power, lo->t_ns, hi->t_ns);
        if (whole > 0.0) {
            double part = jc__power_integral(power, lo->t_ns, t) / whole;
            if (part >= 0.0 && part <= 1.0) frac = part;
        }
    }
    *energy_j = lo->v + step * frac;
    return JC__AT_OK;
}
