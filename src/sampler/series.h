/* Time series kept by the sampler: bounded rings of (time, value) points, and the energy reconstruction that
 * turns a device's knots (instant, cumulative energy) into the cumulative energy at any instant. */
#ifndef JC_SAMPLER_SERIES_H
#define JC_SAMPLER_SERIES_H

#include <stddef.h>
#include <stdint.h>

#include "../core/internal.h"

typedef struct jc__point {
    uint64_t t_ns;
    double v;
} jc__point;

/* A ring of points in time order.  When full, the oldest point is dropped. */
typedef struct jc__ring {
    jc__point *pts;
    size_t cap, start, len;
} jc__ring;

jc_status jc__ring_init(jc__ring *r, size_t cap);
void jc__ring_free(jc__ring *r);
/* Appends a point; a point not later than the newest is ignored (series are strictly increasing in time). */
void jc__ring_push(jc__ring *r, uint64_t t_ns, double v);
static inline const jc__point *jc__ring_at(const jc__ring *r, size_t i) {
    return &r->pts[(r->start + i) % r->cap];
}
static inline const jc__point *jc__ring_last(const jc__ring *r) {
    return r->len ? jc__ring_at(r, r->len - 1) : NULL;
}
/* Index of the first point with t_ns >= t (len when none). */
size_t jc__ring_lower_bound(const jc__ring *r, uint64_t t_ns);

typedef enum jc__at {
    JC__AT_OK = 0,      /* *energy_j holds the cumulative energy at t */
    JC__AT_PENDING = 1, /* t lies after the newest knot: wait for the sampler */
    JC__AT_GONE = 2,    /* t lies before the oldest kept knot, or the source died before t */
} jc__at;

/* Cumulative energy at t from knots (t, J), linear inside a step.  Spreading a step's energy by the shape of
 * the instant-power samples (field 186) measured worse on the H100 (bench/results/HISTORY.md): that field
 * is a ~30 ms average updated every ~103 ms, off the counter's clock, and too coarse to place energy inside a
 * 100 ms step. */
jc__at jc__energy_at(const jc__ring *knots, uint64_t t_ns, double *energy_j);

#endif
