/* Estimators for one trial: time per step from the step boundaries, average power from the energy counter.
 *
 * NVIDIA's energy counter advances about every 100 ms and holds its value in between, so a reading taken at a
 * step boundary is the energy at the last update before it, not at the boundary.  The difference of two such
 * readings divided by the time between the boundaries is off by up to one counter period at each end (1.3%
 * for a 1.5 s span).  Instead the update phase is fitted: for a candidate phase every reading is placed at
 * the update it shows; the phase that makes the readings most nearly a straight line wins, and the power is
 * the energy between the first and the last update seen over the time between them.  When the readings do
 * not look like a periodic counter (the fit does not explain most of the scatter around a plain line), the
 * slope of a straight line through the readings is used instead. */
#include <math.h>
#include <stdlib.h>

#include "profiler/profiler_internal.h"

jc_status jc__series_push(jc__series *s, double t, double e) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        double *nt = realloc(s->t, cap * sizeof *nt);
        if (!nt) return jc__fail(JC_ERR_NO_MEMORY, "profiler: out of memory for %zu step boundaries", cap);
        s->t = nt;
        double *ne = realloc(s->e, cap * sizeof *ne);
        if (!ne) return jc__fail(JC_ERR_NO_MEMORY, "profiler: out of memory for %zu step boundaries", cap);
        s->e = ne;
        s->cap = cap;
    }
    s->t[s->n] = t;
    s->e[s->n] = e;
    s->n++;
    return JC_OK;
}

void jc__series_free(jc__series *s) {
    free(s->t);
    free(s->e);
    s->t = s->e = NULL;
    s->n = s->cap = 0;
}

/* Least-squares line y = a + b x; returns the residual sum of squares, 0 for b when x has no spread. */
static double line_fit(const double *x, const double *y, size_t n, double *slope, double *sxx_out) {
    double mx = 0, my = 0;
    for (size_t i = 0; i < n; i++) {
        mx += x[i];
        my += y[i];
    }
    mx /= (double)n;
    my /= (double)n;
    double sxx = 0, sxy = 0, syy = 0;
    for (size_t i = 0; i < n; i++) {
        double dx = x[i] - mx, dy = y[i] - my;
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
    }
    if (sxx_out) *sxx_out = sxx;
    if (!(sxx > 0)) {
        *slope = 0;
        return INFINITY;
    }
    *slope = sxy / sxx;
    double ssr = syy - *slope * sxy;
    return ssr > 0 ? ssr : 0;
}

/* Update instants implied by phase theta: the last update at or before each boundary (times relative to t0).
 * Returns how many readings fall at or after the start of the trial; fills x (update time) and y (reading)
 * for those, skipping duplicates of the same update. */
static size_t place_readings(const jc__series *s, double T, double theta, double *x, double *y) {
    double t0 = s->t[0];
    size_t m = 0;
    for (size_t i = 0; i < s->n; i++) {
        double rel = s->t[i] - t0;
        double u = theta + T * floor((rel - theta) / T);
        if (u < 0) continue; /* shows energy from before the trial started */
        if (m > 0 && fabs(u - x[m - 1]) < 1e-9 * T) continue;
        x[m] = u;
        y[m] = s->e[i];
        m++;
    }
    return m;
}

static double phase_ssr(const jc__series *s, double T, double theta, double *x, double *y, size_t *m_out,
                        double *slope) {
    size_t m = place_readings(s, T, theta, x, y);
    *m_out = m;
    if (m < 3) return INFINITY;
    return line_fit(x, y, m, slope, NULL);
}

int jc__estimate_series(const jc__series *s, double T, jc__estimate *out) {
    size_t n = s->n;
    if (n < 3) return 0;
    int steps = (int)(n - 1);
    double span = s->t[n - 1] - s->t[0];
    if (!(span > 0)) return 0;
    /* Time per step. */
    double sum = 0, sum2 = 0;
    for (size_t i = 1; i < n; i++) {
        double d = s->t[i] - s->t[i - 1];
        sum += d;
        sum2 += d * d;
    }
    double mean = sum / steps;
    double var = steps > 1 ? (sum2 - sum * mean) / (steps - 1) : 0;
    if (var < 0) var = 0;
    out->steps = steps;
    out->seconds = span;
    out->time_per_step_s = mean;
    out->rel_se_time = sqrt(var / steps) / mean;
    out->var_t = var / (mean * mean);
    out->dof_t = steps - 1;
    out->var_p = 0;
    out->dof_p = 0;
    out->n_p = 0;

    double energy = s->e[n - 1] - s->e[0];
    if (!(T > 0)) {
        /* Exact energies: power over the whole span; its error from the scatter of per-step powers. */
        out->method = 0;
        out->power_w = energy / span;
        double ps = 0, ps2 = 0;
        for (size_t i = 1; i < n; i++) {
            double d = s->t[i] - s->t[i - 1];
            double pw = (s->e[i] - s->e[i - 1]) / d;
            ps += pw * d;
            ps2 += pw * pw * d;
        }
        double pm = ps / span;
        double pv = ps2 / span - pm * pm;
        if (pv < 0) pv = 0;
        /* effective number of samples = steps (durations nearly equal) */
        out->rel_se_power = out->power_w > 0 ? sqrt(pv / (steps > 1 ? steps - 1 : 1)) / out->power_w : INFINITY;
        if (pm > 0 && steps > 1) {
            out->var_p = pv * steps / (steps - 1) / (pm * pm);
            out->dof_p = steps - 1;
            out->n_p = steps;
        }
        return 1;
    }

    double *x = malloc(2 * n * sizeof *x);
    if (!x) return 0;
    double *y = x + n;

    /* Plain line through the readings against the boundary times. */
    double *tt = malloc(n * sizeof *tt);
    if (!tt) {
        free(x);
        return 0;
    }
    for (size_t i = 0; i < n; i++) tt[i] = s->t[i] - s->t[0];
    double sxx_line = 0, slope_line = 0;
    double ssr_line = line_fit(tt, s->e, n, &slope_line, &sxx_line);
    free(tt);

    /* Phase of the counter: coarse grid, then a finer one around the best. */
    double best_ssr = INFINITY, best_theta = 0, slope = 0;
    size_t m = 0;
    const int coarse = 50;
    for (int k = 0; k < coarse; k++) {
        double th = T * (k + 0.5) / coarse, sl;
        size_t mm;
        double ssr = phase_ssr(s, T, th, x, y, &mm, &sl);
        if (ssr < best_ssr) {
            best_ssr = ssr;
            best_theta = th;
        }
    }
    double step = T / coarse;
    for (int k = -20; k <= 20; k++) {
        double th = best_theta + step * k / 20.0, sl;
        if (th < 0 || th >= T) continue;
        size_t mm;
        double ssr = phase_ssr(s, T, th, x, y, &mm, &sl);
        if (ssr < best_ssr) {
            best_ssr = ssr;
            best_theta = th;
        }
    }
    phase_ssr(s, T, best_theta, x, y, &m, &slope);

    int use_phase = isfinite(best_ssr) && m >= 4 && best_ssr < 0.5 * ssr_line && x[m - 1] - x[0] > 0;
    if (use_phase) {
        out->method = 1;
        double du = x[m - 1] - x[0];
        out->power_w = (y[m - 1] - y[0]) / du;
        /* Error: scatter of the power between consecutive updates seen, as independent samples. */
        double ps = 0, ps2 = 0, w = 0;
        for (size_t i = 1; i < m; i++) {
            double d = x[i] - x[i - 1];
            if (!(d > 0)) continue;
            double pw = (y[i] - y[i - 1]) / d;
            ps += pw * d;
            ps2 += pw * pw * d;
            w += d;
        }
        double pm = ps / w;
        double pv = ps2 / w - pm * pm;
        if (pv < 0) pv = 0;
        double eff = (double)(m - 1);
        out->rel_se_power = out->power_w > 0 ? sqrt(pv / (eff > 1 ? eff - 1 : 1)) / out->power_w : INFINITY;
        if (pm > 0 && m > 2) {
            out->var_p = pv * eff / (eff - 1) / (pm * pm);
            out->dof_p = (int)m - 2;
            out->n_p = (int)m - 1;
        }
    } else {
        out->method = 2;
        out->power_w = slope_line;
        double dof = (double)n - 2;
        double se = (dof > 0 && sxx_line > 0) ? sqrt(ssr_line / dof / sxx_line) : INFINITY;
        out->rel_se_power = slope_line > 0 ? se / slope_line : INFINITY;
    }
    free(x);
    return out->power_w > 0 && isfinite(out->power_w);
}
