/* joulecap_sim.h — the power-cap profiler's simulator: a recorded power-limit sweep played back on a
 * virtual clock (no sleeping), for tools, tests and benchmarks (`joulecap profile --simulate`, the Python
 * extension's Profiler.run_simulated and Sweep, the example, the tests).
 *
 * NOT part of the stable API: these functions are exported by libjoulecap and installed with it, but may
 * change in any release, without the deprecation period that joulecap.h's functions get.  The conventions of
 * joulecap.h apply otherwise (units, status codes, jc_last_detail()); jc_sim_options has no size field for
 * that reason.
 *
 * Thread safety: as the profiler's: a jc_simgpu is a plain object, used from one thread at a time; a jc_sweep
 * may be shared read-only by several simulated GPUs. */
#ifndef JOULECAP_SIM_H
#define JOULECAP_SIM_H

#include "joulecap.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A sweep: time per step and average power measured at several caps.  CSV with a header row and columns
 * power_limit_w, time_per_step_s, avg_power_w (any order, other columns ignored) and optionally
 * min_limit_w, max_limit_w, default_limit_w (first row's values; otherwise min and max of the caps, and
 * default = max).  Rows with the same cap are averaged.  At least 2 distinct caps. */
typedef struct jc_sweep jc_sweep;

/* Loads and validates a sweep; JC_ERR_NOT_FOUND / JC_ERR_IO for the file, JC_ERR_INVALID_ARGUMENT for the
 * content (the detail names the line and column). */
JC_API jc_status jc_sweep_load(const char *path, jc_sweep **out);
/* Builds a sweep from arrays (n >= 2); limits NaN = from the caps as above. */
JC_API jc_status jc_sweep_new(const double *cap_w, const double *time_per_step_s, const double *avg_power_w,
                              size_t n, double min_limit_w, double max_limit_w, double default_limit_w,
                              jc_sweep **out);
JC_API void jc_sweep_free(jc_sweep *s);
JC_API void jc_sweep_limits(const jc_sweep *s, double *min_limit_w, double *max_limit_w,
                            double *default_limit_w);
/* Time per step (as recorded, not rescaled) and power at any cap: linear between recorded caps, constant
 * beyond them. */
JC_API void jc_sweep_eval(const jc_sweep *s, double cap_w, double *time_per_step_s, double *avg_power_w);
/* The cap in [min, default] that minimises an objective of the interpolated sweep on a grid of grid_w watts
 * (reference for ENERGY_SLOWDOWN: the default limit).  *value gets the objective there.
 * JC_ERR_INVALID_ARGUMENT when the grid would have more than 10^6 points. */
JC_API jc_status jc_sweep_best_cap(const jc_sweep *s, jc_objective objective, double max_slowdown, double eta,
                                   double grid_w, double *cap_w, double *value);

typedef struct jc_sim_options {
    double step_s;           /* time per step at the default limit after rescaling (default 0.05) */
    double noise;            /* relative standard deviation of each step's time and power (default 0.02) */
    double counter_period_s; /* the energy counter updates every this often (default 0.1; 0 = exact) */
    double settle_s;         /* after a cap change the GPU moves linearly from the old cap's behaviour to the
                                new one's over this time (default 0.3) */
    uint64_t seed;           /* PRNG seed (default 1) */
} jc_sim_options;

JC_API void jc_sim_options_init(jc_sim_options *opts);

typedef struct jc_simgpu jc_simgpu;

/* A simulated GPU at the sweep's default limit, in steady state, at virtual time 0. */
JC_API jc_status jc_simgpu_new(const jc_sweep *sweep, const jc_sim_options *opts, jc_simgpu **out);
JC_API void jc_simgpu_free(jc_simgpu *g);
/* Sets the limit now (JC_ERR_INVALID_ARGUMENT outside the sweep's [min, max], as NVML would). */
JC_API jc_status jc_simgpu_set_cap(jc_simgpu *g, double cap_w);
/* Runs one step; returns the virtual time at its end and the energy counter reading then. */
JC_API void jc_simgpu_step(jc_simgpu *g, double *t_end_s, double *energy_j);
JC_API double jc_simgpu_now(const jc_simgpu *g);      /* virtual time (s) */
JC_API double jc_simgpu_counter(const jc_simgpu *g);  /* energy counter reading now (J) */

/* Progress of jc_profiler_simulate(): called before each cap change the profiler asks for (next->kind
 * JC_PROFILER_SET_CAP, next->cap_w the cap about to be set) and once at the end (JC_PROFILER_DONE).
 * elapsed_s is the virtual time since the call started.  p may be read (jc_profiler_result_get,
 * jc_profiler_trial_count), not driven. */
typedef void (*jc_sim_progress_fn)(const jc_profiler *p, const jc_profiler_action *next, double elapsed_s,
                                   void *arg);

/* Drives p against g until DONE (a safety stop of 10^7 steps returns JC_ERR_TIMEOUT), calling progress (may
 * be NULL) as above. */
JC_API jc_status jc_profiler_simulate(jc_profiler *p, jc_simgpu *g, jc_sim_progress_fn progress, void *arg);
/* jc_profiler_simulate(p, g, NULL, NULL). */
JC_API jc_status jc_profiler_run_simulated(jc_profiler *p, jc_simgpu *g);

#ifdef __cplusplus
}
#endif
#endif /* JOULECAP_SIM_H */
