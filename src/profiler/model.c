/* Objectives and the model of time and power against the cap.
 *
 * The model interpolates time per step and average power linearly between the caps measured, and holds them
 * constant beyond.  It has no shape of its own: time against cap has a knee (flat above, steep below), and a
 * single smooth curve over the range misplaces it, which is how the seed's fit picked badly. */
#include <math.h>

#include "profiler/profiler_internal.h"

/* Penalty slope for breaking the slowdown constraint while searching: 1% over the time limit costs as much as
 * 20% more energy, so the search moves towards the constraint from both sides. */
#define SLOWDOWN_PENALTY 20.0

double jc__objective(const jc__objective_params *op, double t, double p) {
    switch (op->kind) {
    case JC_OBJECTIVE_ED2P: return p * t * t * t;
    case JC_OBJECTIVE_EDP: return p * t * t;
    case JC_OBJECTIVE_ENERGY: return p * t;
    case JC_OBJECTIVE_TIME: return t;
    case JC_OBJECTIVE_ZEUS: return op->eta * p * t + (1 - op->eta) * op->max_limit_w * t;
    case JC_OBJECTIVE_ENERGY_SLOWDOWN: {
        double e = p * t;
        if (isfinite(op->t_ref)) {
            double lim = (1 + op->max_slowdown) * op->t_ref;
            if (t > lim) e *= 1 + SLOWDOWN_PENALTY * (t / lim - 1);
        }
        return e;
    }
    }
    return NAN;
}

int jc__feasible(const jc__objective_params *op, double t) {
    if (op->kind != JC_OBJECTIVE_ENERGY_SLOWDOWN || !isfinite(op->t_ref)) return 1;
    return t <= (1 + op->max_slowdown) * op->t_ref * (1 + 1e-12);
}

double jc__objective_rel_se(const jc__objective_params *op, double t, double p, double st, double sp) {
    switch (op->kind) {
    case JC_OBJECTIVE_ED2P: return sqrt(sp * sp + 9 * st * st);
    case JC_OBJECTIVE_EDP: return sqrt(sp * sp + 4 * st * st);
    case JC_OBJECTIVE_ENERGY:
    case JC_OBJECTIVE_ENERGY_SLOWDOWN: return sqrt(sp * sp + st * st);
    case JC_OBJECTIVE_TIME: return st;
    case JC_OBJECTIVE_ZEUS: {
        double a = op->eta * p, b = (1 - op->eta) * op->max_limit_w;
        double w = a + b > 0 ? a / (a + b) : 0;
        return sqrt(st * st + w * w * sp * sp);
    }
    }
    (void)t;
    return NAN;
}

void jc__model_eval(const jc__point *pts, size_t n, double c, double *t, double *p) {
    if (n == 0) {
        *t = *p = NAN;
        return;
    }
    if (c <= pts[0].cap_w) {
        *t = pts[0].t;
        *p = pts[0].p;
        return;
    }
    if (c >= pts[n - 1].cap_w) {
        *t = pts[n - 1].t;
        *p = pts[n - 1].p;
        return;
    }
    size_t i = 0;
    while (i + 1 < n && pts[i + 1].cap_w < c) i++;
    double a = (c - pts[i].cap_w) / (pts[i + 1].cap_w - pts[i].cap_w);
    *t = pts[i].t + a * (pts[i + 1].t - pts[i].t);
    *p = pts[i].p + a * (pts[i + 1].p - pts[i].p);
}

static void consider(const jc__point *pts, size_t n, const jc__objective_params *op, double c, double *best_c,
                     double *best_f) {
    double t, p;
    jc__model_eval(pts, n, c, &t, &p);
    if (!jc__feasible(op, t)) return;
    double f = op->kind == JC_OBJECTIVE_ENERGY_SLOWDOWN ? p * t : jc__objective(op, t, p);
    if (f < *best_f * (1 - 1e-9) || !isfinite(*best_f)) {
        *best_f = f;
        *best_c = c;
    }
}

double jc__model_argmin(const jc__point *pts, size_t n, const jc__objective_params *op, double lo, double hi,
                        int integer_caps, double *f_out) {
    double best_c = NAN, best_f = INFINITY;
    /* Measured caps first, so that ties keep a measured cap. */
    for (size_t i = 0; i < n; i++)
        if (pts[i].cap_w >= lo && pts[i].cap_w <= hi) consider(pts, n, op, pts[i].cap_w, &best_c, &best_f);
    if (integer_caps) {
        for (double c = ceil(lo); c <= hi; c += 1) consider(pts, n, op, c, &best_c, &best_f);
    } else {
        for (size_t i = 0; i + 1 < n; i++) {
            double a = pts[i].cap_w, b = pts[i + 1].cap_w;
            int k = (int)ceil((b - a) * 8);
            if (k < 2) k = 2;
            if (k > 4000) k = 4000;
            for (int j = 1; j < k; j++) {
                double c = a + (b - a) * j / k;
                if (c >= lo && c <= hi) consider(pts, n, op, c, &best_c, &best_f);
            }
        }
    }
    if (f_out) *f_out = best_f;
    return best_c;
}

