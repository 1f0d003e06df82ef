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

jc__at jc__energy_at(const jc__ring *knots, uint64_t t, double *energy_j) {
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
    double frac = (double)(t - lo->t_ns) / (double)(hi->t_ns - lo->t_ns);
    *energy_j = lo->v + (hi->v - lo->v) * frac;
    return JC__AT_OK;
}
