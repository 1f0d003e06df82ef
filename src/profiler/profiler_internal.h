/* Internals of the power-cap profiler shared by its files (not part of the public API). */
#ifndef JC_PROFILER_INTERNAL_H
#define JC_PROFILER_INTERNAL_H

#include <stddef.h>
#include <stdio.h>

#include "core/internal.h"
#include "joulecap_sim.h"

/* --- estimate.c: what one trial measured ------------------------------------------------------------- */

/* Step boundaries kept for one trial: t[0] is where the first measured step starts, t[i] (i >= 1) where step
 * i ends; e[i] is the energy counter read at t[i]. */
typedef struct jc__series {
    double *t, *e;
    size_t n, cap;
} jc__series;

jc_status jc__series_push(jc__series *s, double t, double e);
void jc__series_free(jc__series *s);

typedef struct jc__estimate {
    int steps;
    double seconds;          /* t[n-1] - t[0] */
    double time_per_step_s, rel_se_time;
    double power_w, rel_se_power;
    int method;              /* 0 exact energies, 1 counter with fitted update phase, 2 straight line */
    /* For pooling the noise level over trials: relative variance of one step's duration (dof_t degrees of
     * freedom), and of one power sample (a step, or the span between two counter updates), n_p samples. */
    double var_t, var_p;
    int dof_t, dof_p, n_p;
} jc__estimate;

/* Time per step and average power of the steps in s.  counter_period_s = 0: the readings are exact.
 * Otherwise the counter holds its value between updates every counter_period_s; the update phase is fitted
 * and the energy taken between two updates, or (when the updates do not look periodic) a straight line is
 * fitted through the readings.  Needs at least 2 steps; returns 0 when it cannot estimate. */
int jc__estimate_series(const jc__series *s, double counter_period_s, jc__estimate *out);

/* --- model.c: objective and the piecewise-linear model --------------------------------------------------- */

typedef struct jc__objective_params {
    jc_objective kind;
    double eta, max_slowdown, max_limit_w;
    double t_ref;            /* reference time per step for ENERGY_SLOWDOWN (NaN = unknown) */
} jc__objective_params;

/* Objective of one (time per step, power) pair; lower is better.  For ENERGY_SLOWDOWN the constraint is a
 * steep penalty (for searching); jc__feasible() tells whether it holds. */
double jc__objective(const jc__objective_params *op, double t, double p);
int jc__feasible(const jc__objective_params *op, double t);
/* Relative standard error of the objective from those of t and p. */
double jc__objective_rel_se(const jc__objective_params *op, double t, double p, double rse_t, double rse_p);

/* Measured points pooled by cap and sorted by cap. */
typedef struct jc__point {
    double cap_w, t, p, rse_t, rse_p, f, rse_f;
    double seconds;
    int steps;
} jc__point;

/* Piecewise-linear interpolation of t and p over sorted points (constant beyond the ends). */
void jc__model_eval(const jc__point *pts, size_t n, double cap_w, double *t, double *p);
/* Minimum of the model's objective over [lo, hi] (grid of about 1/8 W inside each segment, and every
 * measured cap; only caps where the constraint holds for ENERGY_SLOWDOWN).  Returns the cap. */
double jc__model_argmin(const jc__point *pts, size_t n, const jc__objective_params *op, double lo, double hi,
                        int integer_caps, double *f_out);

/* --- sim.c ------------------------------------------------------------------------------------------- */

/* xoshiro256** seeded through splitmix64. */
typedef struct jc__rng {
    uint64_t s[4];
} jc__rng;
void jc__rng_seed(jc__rng *r, uint64_t seed);
double jc__rng_uniform(jc__rng *r); /* [0, 1) */
double jc__rng_normal(jc__rng *r);  /* standard normal */

/* jc_sweep_load from an open stream (a file, or fmemopen() over a buffer); path names it in errors. */
jc_status jc__sweep_read(FILE *f, const char *path, jc_sweep **out);
/* A loaded sweep's points, sorted by cap (distinct caps, rows of one cap averaged); their number. */
size_t jc__sweep_points(const jc_sweep *s, const double **cap_w, const double **time_per_step_s,
                        const double **avg_power_w);

#endif
