/* The power-cap profiler's decision logic: a state machine fed with step boundaries and energy readings.
 *
 * Life of a trial: SET_CAP -> cap_applied() -> steps dropped while the power settles -> steps measured until
 * the objective is known well enough (or the cap is clearly worse than the best one, or the trial ran its
 * maximum time) -> the search picks the next cap or finishes.  Trials at the same cap are pooled.
 *
 * Search, in order of priority after each trial:
 *  1. Coarse pass: the default limit, then down from it in round steps (a 1-2-2.5-5 number near 10% of the
 *     default) to the minimum, each measured roughly (EXPLORE_FACTOR x the final precision).
 *  2. Kinks: for every gap between neighbouring caps measured, where the objective falls into the gap from one
 *     side and rises out of it on the other, the two outer lines meet at a kink's likely place and depth
 *     (time against cap is piecewise smooth with a knee, not smooth).  The deepest such kink is measured if its
 *     predicted gain over the best cap exceeds Z_GAIN standard errors.  This looks at the whole range.
 *  3. The draw point: the cap equal to the power the job draws where caps stop binding.
 *  4. Racing: the best cap against its strongest challenger (lowest lower confidence bound) while they are
 *     not Z_RACE standard errors apart, first to the requested precision;
 *  5. then the gap next to the best cap when its neighbour ties with it or is much worse (a knee), halved
 *     until narrow;
 *  6. racing on to MIN_PRECISION;
 *  7. a blind look around the best cap; done.
 * Exploration stops when the time budget leaves room for fewer than EXPLORE_RESERVE trials; racing goes on
 * to the budget.  The recommendation is the measured cap with the lowest objective plus Z_PICK standard
 * errors (so a single lucky short trial does not win), or the model's minimum between its neighbours if that
 * is lower.  No curve is fitted over the whole range. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "profiler/profiler_internal.h"

/* The caps bind when the power reaches this fraction of the cap at some cap tried, or rises by this many
 * watts per watt of cap across the caps tried. */
#define BIND_FRACTION 0.9
#define FOLLOW_FRACTION 0.1
/* Powers this close (relative) count as the same draw. */
#define DRAW_SAME 0.02
/* Coarse steps are about this fraction of the default limit. */
#define COARSE_FRACTION 0.1
/* Share of the time budget the coarse pass may take at most. */
#define COARSE_SHARE 0.5
/* Exploring trials (coarse pass, refinement) stop at this multiple of the requested precision. */
#define EXPLORE_FACTOR 2.0
/* Refine a gap only when the predicted minimum inside is below the best measured value by this fraction
 * and by Z_GAIN standard errors (of the two caps bounding the gap, and of the best). */
#define REFINE_GAIN 0.002
#define Z_GAIN 1.0
/* A trial stops early once it is this many standard errors of the difference worse than the best cap. */
#define Z_WORSE 2.5
/* Two caps race until they are this many standard errors of their difference apart; each race trial
 * shrinks the standard error of the cap measured by RACE_SHRINK; no cap is raced below MIN_PRECISION. */
#define Z_RACE 2.5
#define RACE_SHRINK 0.5
#define MIN_PRECISION 0.003
/* A neighbour of the best cap ties with it within Z_TIE standard errors, or is a knee when worse by
 * KNEE_RISE. */
#define Z_TIE 1.0
#define KNEE_RISE 0.2
/* The recommendation ranks measured caps by objective x (1 + Z_PICK x relative standard error). */
#define Z_PICK 1.0
/* Confidence intervals are 90% (normal): a cap other than the reference is recommended only when its gain's
 * interval lies above 0, i.e. when it is better with 95% confidence (one-sided). */
#define Z_CI 1.645
/* New caps are explored only while the budget leaves room for this many more trials. */
#define EXPLORE_RESERVE 3.0
/* Around the best cap, gaps are halved until they are at most this many resolutions wide. */
#define LOCAL_WIDTH_RES 4.0
/* A refinement cap keeps this fraction of its gap away from the gap's ends, so every trial shrinks it. */
#define SAFEGUARD 0.25
/* Steps measured at least in any trial, and before max_trial_s may stop it. */
#define MIN_STEPS 4
#define MIN_STEPS_MAX_TRIAL 8
/* Automatic time budget: max(AUTO_BUDGET_S, AUTO_BUDGET_STEPS steps at the first cap). */
#define AUTO_BUDGET_S 20.0
#define AUTO_BUDGET_STEPS 300.0

enum { PH_SET_CAP, PH_SETTLE, PH_MEASURE, PH_DONE };

typedef struct trial {
    jc_profiler_trial pub;
    jc__series s;
    int finished;
    int evaluated;  /* pub holds an estimate of the steps so far */
    double target;  /* relative standard error to reach (pooled with earlier trials at the same cap) */
    int race;       /* measured again to settle which of two caps is better */
    double max_s;   /* measured seconds after which the trial stops regardless */
    jc__estimate est;
} trial;

struct jc_profiler {
    jc_profiler_config cfg;
    double caps[JC_PROFILER_MAX_CAPS];
    size_t ncaps;
    double res_w, lo_w, hi_w, budget_s, min_trial_s, coarse_step;
    jc__objective_params op;

    int phase;
    double pending_cap, pending_target;
    int pending_race, pending_phase;
    trial *trials;
    int ntrials, trials_cap;

    double plan[JC_PROFILER_MAX_CAPS + 16];
    int plan_n, plan_i;

    int started;
    double t_start, last_t, last_e;
    int total_steps, since_eval;
    int stopped_by_budget;

    jc_profiler_result res;
};

/* ------------------------------------------------------------------------------------------------------ */

const char *jc_profiler_action_kind_name(jc_profiler_action_kind kind) {
    switch (kind) {
    case JC_PROFILER_SET_CAP: return "set-cap";
    case JC_PROFILER_RUN: return "run";
    case JC_PROFILER_DONE: return "done";
    }
    return "unknown";
}

const char *jc_profiler_stop_reason_name(jc_profiler_stop_reason reason) {
    switch (reason) {
    case JC_PROFILER_STOP_NONE: return "none";
    case JC_PROFILER_STOP_PRECISE: return "precise";
    case JC_PROFILER_STOP_WORSE: return "worse";
    case JC_PROFILER_STOP_MAX_TIME: return "max-time";
    case JC_PROFILER_STOP_BUDGET: return "budget";
    }
    return "unknown";
}

const char *jc_profiler_phase_name(jc_profiler_phase phase) {
    switch (phase) {
    case JC_PROFILER_PHASE_COARSE: return "coarse";
    case JC_PROFILER_PHASE_REFINE: return "refine";
    case JC_PROFILER_PHASE_RACE: return "race";
    }
    return "unknown";
}

static const char *const objective_names[] = {"ed2p", "edp", "energy", "time", "energy-slowdown", "zeus"};

const char *jc_objective_name(jc_objective objective) {
    if ((int)objective < 0 || (size_t)objective >= sizeof objective_names / sizeof objective_names[0])
        return NULL;
    return objective_names[objective];
}

jc_status jc_objective_parse(const char *name, jc_objective *out) {
    if (!name || !out) return jc__fail(JC_ERR_INVALID_ARGUMENT, "objective: NULL argument");
    for (size_t i = 0; i < sizeof objective_names / sizeof objective_names[0]; i++) {
        if (strcasecmp(name, objective_names[i]) == 0) {
            *out = (jc_objective)i;
            return JC_OK;
        }
    }
    return jc__fail(JC_ERR_INVALID_ARGUMENT,
                    "unknown objective '%s' (known: ed2p, edp, energy, time, energy-slowdown, zeus)", name);
}

void jc_profiler_config_init(jc_profiler_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->size = sizeof *cfg;
    cfg->min_limit_w = cfg->max_limit_w = cfg->default_limit_w = NAN;
    cfg->objective = JC_OBJECTIVE_ED2P;
    cfg->max_slowdown = 0.05;
    cfg->eta = 0.5;
    cfg->time_budget_s = 0;
    cfg->counter_period_s = 0.1;
    cfg->settle_s = 0.3;
    cfg->settle_steps = 1;
    cfg->precision = 0.01;
    cfg->max_trial_s = 3.0;
    cfg->min_trial_s = 0;
    cfg->resolution_w = 0;
}

static jc_status validate(const jc_profiler_config *c) {
    if (!isfinite(c->min_limit_w) || !isfinite(c->max_limit_w) || !isfinite(c->default_limit_w))
        return jc__fail(JC_ERR_INVALID_ARGUMENT,
                        "profiler config: min_limit_w, max_limit_w and default_limit_w must be given (W)");
    if (!(c->min_limit_w > 0))
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "profiler config: min_limit_w must be > 0 (got %g)",
                        c->min_limit_w);
    if (!(c->min_limit_w < c->max_limit_w))
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "profiler config: min_limit_w %g W must be below max_limit_w %g W",
                        c->min_limit_w, c->max_limit_w);
    if (c->default_limit_w < c->min_limit_w || c->default_limit_w > c->max_limit_w)
        return jc__fail(JC_ERR_INVALID_ARGUMENT,
                        "profiler config: default_limit_w %g W lies outside [%g, %g] W", c->default_limit_w,
                        c->min_limit_w, c->max_limit_w);
    if (!jc_objective_name(c->objective))
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "profiler config: unknown objective %d", (int)c->objective);
    if (!(c->max_slowdown > 0) || !isfinite(c->max_slowdown))
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "profiler config: max_slowdown must be > 0 (got %g)",
                        c->max_slowdown);
    if (!(c->eta >= 0 && c->eta <= 1))
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "profiler config: eta must lie in [0, 1] (got %g)", c->eta);
    if (c->caps_count > 0 && !c->caps_w)
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "profiler config: caps_count is %zu but caps_w is NULL",
                        c->caps_count);
    if (c->caps_count > JC_PROFILER_MAX_CAPS)
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "profiler config: %zu caps given, at most %d", c->caps_count,
                        JC_PROFILER_MAX_CAPS);
    for (size_t i = 0; i < c->caps_count; i++) {
        double v = c->caps_w[i];
        if (!isfinite(v) || v < c->min_limit_w || v > c->max_limit_w)
            return jc__fail(JC_ERR_INVALID_ARGUMENT, "profiler config: cap %g W (caps_w[%zu]) lies outside [%g, %g] W",
                            v, i, c->min_limit_w, c->max_limit_w);
    }
    if (!(c->time_budget_s >= 0) || !isfinite(c->time_budget_s))
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "profiler config: time_budget_s must be >= 0 (got %g)",
                        c->time_budget_s);
    if (!(c->counter_period_s >= 0) || !isfinite(c->counter_period_s))
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "profiler config: counter_period_s must be >= 0 (got %g)",
                        c->counter_period_s);
    if (!(c->settle_s >= 0) || !isfinite(c->settle_s))
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "profiler config: settle_s must be >= 0 (got %g)", c->settle_s);
    if (c->settle_steps < 0)
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "profiler config: settle_steps must be >= 0 (got %d)",
                        c->settle_steps);
    if (!(c->precision > 0 && c->precision < 1))
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "profiler config: precision must lie in (0, 1) (got %g)",
                        c->precision);
    if (!(c->max_trial_s > 0) || !isfinite(c->max_trial_s))
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "profiler config: max_trial_s must be > 0 (got %g)",
                        c->max_trial_s);
    if (!(c->min_trial_s >= 0) || !isfinite(c->min_trial_s))
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "profiler config: min_trial_s must be >= 0 (got %g)",
                        c->min_trial_s);
    if (c->min_trial_s > c->max_trial_s)
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "profiler config: min_trial_s %g s exceeds max_trial_s %g s",
                        c->min_trial_s, c->max_trial_s);
    if (!(c->resolution_w >= 0) || !isfinite(c->resolution_w))
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "profiler config: resolution_w must be >= 0 (got %g)",
                        c->resolution_w);
    return JC_OK;
}

static int cmp_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

/* Integer watts inside [lo, hi]. */
static double round_cap(double c, double lo, double hi) {
    double r = floor(c + 0.5);
    if (r < lo) r = ceil(lo);
    if (r > hi) r = floor(hi);
    if (r < lo || r > hi) r = c; /* a range narrower than 1 W */
    return r;
}

/* The largest 1-2-2.5-5 number (times a power of ten) not above x. */
static double nice_floor(double x) {
    double e = pow(10, floor(log10(x)));
    static const double m[] = {5, 2.5, 2, 1};
    for (int i = 0; i < 4; i++)
        if (m[i] * e <= x * (1 + 1e-9)) return m[i] * e;
    return e;
}

/* Coarse pass: the default limit, then down from it in equal steps of a round size (a 1-2-2.5-5 number near 10%
 * of the default: 25 W for a 250-300 W GPU, 50 W for a 700 W one) to the minimum, which is always included;
 * at least 4 caps when the range allows.  Steps from the default are how power-limit sweeps are usually
 * recorded (Zeus, the seed), so on a round default these caps are the ones people use. */
static void make_plan(jc_profiler *p) {
    p->plan_n = 0;
    p->plan_i = 0;
    if (p->ncaps > 0) {
        for (size_t i = 0; i < p->ncaps; i++) p->plan[p->plan_n++] = p->caps[i];
        return;
    }
    double lo = p->lo_w, hi = p->hi_w, range = hi - lo;
    p->plan[p->plan_n++] = round_cap(hi, lo, hi);
    if (range < p->res_w) return;
    double step = nice_floor(COARSE_FRACTION * p->cfg.default_limit_w);
    while (step > p->res_w && range / step < 3) step = nice_floor(step * 0.99);
    if (step < p->res_w) step = p->res_w;
    p->coarse_step = step;
    int max_n = (int)(sizeof p->plan / sizeof p->plan[0]) - 1;
    for (int k = 1; p->plan_n < max_n; k++) {
        double c = hi - k * step;
        if (c - lo < 0.5 * step) break; /* too close above the minimum */
        p->plan[p->plan_n++] = round_cap(c, lo, hi);
    }
    p->plan[p->plan_n++] = round_cap(lo, lo, hi);
}

jc_status jc_profiler_new(const jc_profiler_config *cfg, jc_profiler **out) {
    if (!out) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_profiler_new: out is NULL");
    *out = NULL;
    if (!cfg) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_profiler_new: cfg is NULL");
    jc_status st = jc__check_size(cfg->size, sizeof *cfg, "jc_profiler_config");
    if (st != JC_OK) return st;
    st = validate(cfg);
    if (st != JC_OK) return st;
    jc_profiler *p = calloc(1, sizeof *p);
    if (!p) return jc__fail(JC_ERR_NO_MEMORY, "profiler: out of memory");
    p->cfg = *cfg;
    p->ncaps = cfg->caps_count;
    for (size_t i = 0; i < p->ncaps; i++) p->caps[i] = cfg->caps_w[i];
    p->cfg.caps_w = NULL;
    if (p->ncaps) {
        qsort(p->caps, p->ncaps, sizeof p->caps[0], cmp_desc);
        size_t w = 1;
        for (size_t i = 1; i < p->ncaps; i++)
            if (p->caps[i] != p->caps[w - 1]) p->caps[w++] = p->caps[i];
        p->ncaps = w;
    }
    p->res_w = cfg->resolution_w > 0 ? cfg->resolution_w : fmax(1.0, 0.01 * cfg->default_limit_w);
    p->lo_w = cfg->min_limit_w;
    p->hi_w = cfg->default_limit_w;
    if (p->ncaps) {
        p->lo_w = p->caps[p->ncaps - 1];
        p->hi_w = p->caps[0];
    }
    p->budget_s = cfg->time_budget_s; /* 0 = set after the first trial */
    p->min_trial_s = cfg->min_trial_s > 0 ? cfg->min_trial_s : fmax(0.25, 5 * cfg->counter_period_s);
    if (p->min_trial_s > cfg->max_trial_s) p->min_trial_s = cfg->max_trial_s;
    p->op.kind = cfg->objective;
    p->op.eta = cfg->eta;
    p->op.max_slowdown = cfg->max_slowdown;
    p->op.max_limit_w = cfg->max_limit_w;
    p->op.t_ref = NAN;
    make_plan(p);
    p->phase = PH_SET_CAP;
    p->pending_cap = p->plan[p->plan_i++];
    p->pending_target = p->ncaps > 0 ? cfg->precision : fmin(0.5, EXPLORE_FACTOR * cfg->precision);
    p->res.cap_w = NAN;
    jc__clear_detail();
    *out = p;
    return JC_OK;
}

void jc_profiler_free(jc_profiler *p) {
    if (!p) return;
    for (int i = 0; i < p->ntrials; i++) jc__series_free(&p->trials[i].s);
    free(p->trials);
    free(p);
}

/* ------------------------------------------------------------------------------------------------------
 * Pooling trials into points, and the recommendation.
 * ---------------------------------------------------------------------------------------------------- */

static int cmp_point(const void *a, const void *b) {
    double x = ((const jc__point *)a)->cap_w, y = ((const jc__point *)b)->cap_w;
    return (x > y) - (x < y);
}

/* Variance between trials at the same cap beyond what their own standard errors (already set from the
 * pooled step noise) explain, in relative terms (of the log of time per step, what = 0, or of power, 1): the
 * DerSimonian-Laird estimate over every cap measured more than once; 0 when none was, or when they do not
 * disagree beyond chance. */
static double between_trials(const jc_profiler *p, int what) {
    double q = 0, df = 0, c = 0;
    for (int i = 0; i < p->ntrials; i++) {
        const jc_profiler_trial *a = &p->trials[i].pub;
        if (!p->trials[i].finished || a->steps <= 0) continue;
        int first = 1;
        for (int j = 0; j < i; j++)
            if (p->trials[j].finished && p->trials[j].pub.steps > 0 && fabs(p->trials[j].pub.cap_w - a->cap_w) < 0.5)
                first = 0;
        if (!first) continue; /* each cap once, from its first trial */
        double sw = 0, sw2 = 0, swx = 0, swx2 = 0;
        int k = 0;
        for (int j = i; j < p->ntrials; j++) {
            const jc_profiler_trial *b = &p->trials[j].pub;
            if (!p->trials[j].finished || b->steps <= 0 || fabs(b->cap_w - a->cap_w) >= 0.5) continue;
            double x = log(what ? b->avg_power_w : b->time_per_step_s);
            double se = what ? b->rel_se_power : b->rel_se_time;
            if (!(x > -INFINITY && x < INFINITY) || !(se > 0) || !isfinite(se)) continue;
            double w = 1 / (se * se);
            sw += w;
            sw2 += w * w;
            swx += w * x;
            swx2 += w * x * x;
            k++;
        }
        if (k < 2) continue;
        q += swx2 - swx * swx / sw;
        df += k - 1;
        c += sw - sw2 / sw;
    }
    /* Only where the trials clearly disagree (Q above the 99.9% point of chi-square with df degrees of
     * freedom, by Wilson and Hilferty's approximation): otherwise the estimate is noise that only widens the
     * intervals. */
    if (!(c > 0 && df > 0)) return 0;
    double h = 2 / (9 * df), q999 = df * pow(1 - h + 3.09 * sqrt(h), 3);
    return q > q999 ? (q - df) / c : 0;
}

/* The noise of one step is about the same at every cap, so its level is estimated from all trials together
 * (a pooled variance: far steadier than each trial's own estimate from a few steps); each trial's standard
 * errors follow from it and its number of samples. */
static void apply_pooled_noise(jc_profiler *p, int with_current) {
    double st = 0, sp = 0;
    int dt = 0, dp = 0;
    for (int i = 0; i < p->ntrials; i++) {
        const trial *tr = &p->trials[i];
        int usable = tr->finished || (with_current && i == p->ntrials - 1 && tr->evaluated);
        if (!usable) continue;
        st += tr->est.var_t * tr->est.dof_t;
        dt += tr->est.dof_t;
        sp += tr->est.var_p * tr->est.dof_p;
        dp += tr->est.dof_p;
    }
    for (int i = 0; i < p->ntrials; i++) {
        trial *tr = &p->trials[i];
        int usable = tr->finished || (with_current && i == p->ntrials - 1 && tr->evaluated);
        if (!usable) continue;
        jc_profiler_trial *pub = &tr->pub;
        if (dt > 0 && tr->est.steps > 0) pub->rel_se_time = sqrt(st / dt / tr->est.steps);
        if (dp > 0 && tr->est.n_p > 0) pub->rel_se_power = sqrt(sp / dp / tr->est.n_p);
    }
    /* Trials at the same cap that disagree beyond their step noise show drift between trials (a CPU-bound job
     * on a busy host, thermal or clock changes): that variance is added to every trial's. */
    double tau_t = between_trials(p, 0), tau_p = between_trials(p, 1);
    for (int i = 0; i < p->ntrials; i++) {
        trial *tr = &p->trials[i];
        int usable = tr->finished || (with_current && i == p->ntrials - 1 && tr->evaluated);
        if (!usable) continue;
        jc_profiler_trial *pub = &tr->pub;
        pub->rel_se_time = sqrt(pub->rel_se_time * pub->rel_se_time + tau_t);
        pub->rel_se_power = sqrt(pub->rel_se_power * pub->rel_se_power + tau_p);
        pub->rel_se_objective = jc__objective_rel_se(&p->op, pub->time_per_step_s, pub->avg_power_w,
                                                     pub->rel_se_time, pub->rel_se_power);
    }
}

/* Finished trials (and, with with_current, the trial in progress once it has an estimate) pooled by cap
 * (within 0.5 W), sorted by cap, with the objective for the current reference.  Returns the number of
 * points.  Updates the trials' standard errors from the pooled noise level. */
static size_t pool_ex(jc_profiler *p, jc__point *pts, size_t maxn, int with_current) {
    apply_pooled_noise(p, with_current);
    size_t n = 0;
    for (int i = 0; i < p->ntrials; i++) {
        const jc_profiler_trial *tr = &p->trials[i].pub;
        int usable = p->trials[i].finished || (with_current && i == p->ntrials - 1 && p->trials[i].evaluated);
        if (!usable || tr->steps <= 0 || !(tr->avg_power_w > 0)) continue;
        size_t j = 0;
        while (j < n && fabs(pts[j].cap_w - tr->cap_w) >= 0.5) j++;
        if (j == n) {
            if (n == maxn) continue;
            memset(&pts[n], 0, sizeof pts[n]);
            pts[n].cap_w = tr->cap_w;
            n++;
        }
        jc__point *q = &pts[j];
        /* Accumulate: seconds, steps, energy; inverse variances for the errors (stored in rse_* meanwhile
         * as sums of 1/se^2 of absolute errors). */
        double se_t = tr->rel_se_time * tr->time_per_step_s, se_p = tr->rel_se_power * tr->avg_power_w;
        q->seconds += tr->seconds;
        q->steps += tr->steps;
        q->p += tr->energy_j; /* energy sum for now */
        q->rse_t += se_t > 0 ? 1 / (se_t * se_t) : 1e30;
        q->rse_p += se_p > 0 ? 1 / (se_p * se_p) : 1e30;
    }
    for (size_t j = 0; j < n; j++) {
        jc__point *q = &pts[j];
        q->t = q->seconds / q->steps;
        q->p = q->p / q->seconds;
        q->rse_t = 1 / sqrt(q->rse_t) / q->t;
        q->rse_p = 1 / sqrt(q->rse_p) / q->p;
    }
    qsort(pts, n, sizeof pts[0], cmp_point);
    /* Reference for the slowdown: the highest cap measured. */
    p->op.t_ref = n ? pts[n - 1].t : NAN;
    for (size_t j = 0; j < n; j++) {
        pts[j].f = jc__objective(&p->op, pts[j].t, pts[j].p);
        pts[j].rse_f = jc__objective_rel_se(&p->op, pts[j].t, pts[j].p, pts[j].rse_t, pts[j].rse_p);
    }
    return n;
}

static size_t pool(jc_profiler *p, jc__point *pts, size_t maxn) { return pool_ex(p, pts, maxn, 0); }

#define MAX_POINTS 512

static size_t argmin_f(const jc__point *pts, size_t n) {
    size_t b = 0;
    for (size_t i = 1; i < n; i++)
        if (pts[i].f < pts[b].f) b = i;
    return b;
}

static void fmt_w(char *buf, size_t len, double w) {
    if (fabs(w - floor(w + 0.5)) < 1e-6) jc__fmt(buf, len, "%.0f W", w);
    else jc__fmt(buf, len, "%.1f W", w);
}

static const char *objective_text(jc_objective o) {
    switch (o) {
    case JC_OBJECTIVE_ED2P: return "ED2P (energy x time^2 per step)";
    case JC_OBJECTIVE_EDP: return "EDP (energy x time per step)";
    case JC_OBJECTIVE_ENERGY: return "energy per step";
    case JC_OBJECTIVE_TIME: return "time per step";
    case JC_OBJECTIVE_ENERGY_SLOWDOWN: return "energy per step within the allowed slowdown";
    case JC_OBJECTIVE_ZEUS: return "Zeus cost (eta E + (1 - eta) P_max t)";
    }
    return "objective";
}

/* Relative standard errors of time and power at cap c: a measured cap's own, or between two measured caps
 * those of the linear interpolation (weights 1 - a and a); beyond the ends, the end's. */
static void model_rse(const jc__point *pts, size_t n, double c, double *rse_t, double *rse_p) {
    size_t i = 0;
    while (i + 1 < n && pts[i + 1].cap_w < c - 0.5) i++;
    if (i + 1 >= n || c <= pts[i].cap_w + 0.5) {
        *rse_t = pts[i].rse_t;
        *rse_p = pts[i].rse_p;
        return;
    }
    const jc__point *x = &pts[i], *y = &pts[i + 1];
    double a = (c - x->cap_w) / (y->cap_w - x->cap_w), t, pw;
    jc__model_eval(pts, n, c, &t, &pw);
    *rse_t = hypot((1 - a) * x->rse_t * x->t, a * y->rse_t * y->t) / t;
    *rse_p = hypot((1 - a) * x->rse_p * x->p, a * y->rse_p * y->p) / pw;
}

/* Fills p->res from the trials so far. */
static void recommend(jc_profiler *p) {
    jc_profiler_result *r = &p->res;
    jc__point pts[MAX_POINTS];
    size_t n = pool(p, pts, MAX_POINTS);
    int done = r->done;
    memset(r, 0, sizeof *r);
    r->done = done;
    r->objective = p->cfg.objective;
    r->trial_count = p->ntrials;
    r->total_steps = p->total_steps;
    r->profile_seconds = p->started ? p->last_t - p->t_start : 0;
    r->cap_w = r->time_per_step_s = r->avg_power_w = r->energy_per_step_j = r->objective_value = NAN;
    r->best_measured_cap_w = r->best_measured_objective = NAN;
    r->reference_cap_w = r->reference_time_per_step_s = r->reference_avg_power_w = NAN;
    r->energy_saving = r->slowdown = r->energy_saving_ci = r->slowdown_ci = NAN;
    r->candidate_cap_w = r->candidate_gain = r->candidate_gain_ci = NAN;
    r->binding = 1;
    if (n == 0) {
        jc__fmt(r->reason, sizeof r->reason, "nothing measured yet");
        return;
    }
    double max_frac = 0;
    for (int i = 0; i < p->ntrials; i++) {
        const jc_profiler_trial *tr = &p->trials[i].pub;
        if (p->trials[i].finished && tr->steps > 0 && tr->cap_w > 0)
            max_frac = fmax(max_frac, tr->avg_power_w / tr->cap_w);
    }
    /* The caps bind when the power reaches near a cap somewhere, or follows the caps (rises by at least
     * FOLLOW_FRACTION of a watt per watt of cap across the caps tried). */
    double cmin = pts[0].cap_w, cmax = pts[n - 1].cap_w, pmin = INFINITY, pmax = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        pmin = fmin(pmin, pts[i].p);
        pmax = fmax(pmax, pts[i].p);
    }
    r->binding = max_frac >= BIND_FRACTION || (cmax > cmin && pmax - pmin >= FOLLOW_FRACTION * (cmax - cmin));

    const jc__point *ref = &pts[n - 1];
    r->reference_cap_w = ref->cap_w;
    r->reference_time_per_step_s = ref->t;
    r->reference_avg_power_w = ref->p;

    /* Best measured (feasible) cap.  Ranked by the objective plus Z_PICK standard errors: among caps that
     * look alike, the one measured better wins, which counters picking a cap for a lucky short trial (the
     * winner's curse). */
    size_t b = n;
    double rank_b = INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (!jc__feasible(&p->op, pts[i].t)) continue;
        double fi = p->op.kind == JC_OBJECTIVE_ENERGY_SLOWDOWN ? pts[i].p * pts[i].t : pts[i].f;
        double rank = fi * (1 + Z_PICK * pts[i].rse_f);
        if (rank < rank_b) {
            rank_b = rank;
            b = i;
        }
    }
    if (b == n) b = n - 1;
    r->best_measured_cap_w = pts[b].cap_w;
    double fb_meas = p->op.kind == JC_OBJECTIVE_ENERGY_SLOWDOWN ? pts[b].p * pts[b].t : pts[b].f;
    r->best_measured_objective = fb_meas;
    double cap = pts[b].cap_w, t = pts[b].t, pw = pts[b].p, f = fb_meas;
    if (p->ncaps == 0) {
        /* The model between the neighbours of that cap: its minimum may lie between measured caps. */
        double lo = b > 0 ? pts[b - 1].cap_w : pts[b].cap_w, hi = b + 1 < n ? pts[b + 1].cap_w : pts[b].cap_w;
        lo = fmax(lo, p->cfg.min_limit_w);
        hi = fmin(hi, p->cfg.max_limit_w);
        double fm;
        double cm = jc__model_argmin(pts, n, &p->op, lo, hi, 1, &fm);
        if (isfinite(cm) && fm < fb_meas) { /* never worse (as predicted) than the best measured cap */
            cap = cm;
            jc__model_eval(pts, n, cap, &t, &pw);
            f = fm;
        }
    }
    /* The candidate against the reference, with the uncertainty of both: recommended only when it is better
     * beyond that uncertainty (the 90% interval of its gain lies above 0: better with 95% confidence);
     * otherwise the reference is kept. */
    double fref = p->op.kind == JC_OBJECTIVE_ENERGY_SLOWDOWN ? ref->p * ref->t : ref->f;
    double ct_rse, cp_rse;
    model_rse(pts, n, cap, &ct_rse, &cp_rse);
    int is_ref = fabs(cap - ref->cap_w) < 0.5, cand_measured = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(pts[i].cap_w - cap) < 0.5) cand_measured = 1;
    double cf_rse = jc__objective_rel_se(&p->op, t, pw, ct_rse, cp_rse);
    r->candidate_cap_w = cap;
    r->candidate_gain = is_ref ? 0 : 1 - f / fref;
    r->candidate_gain_ci = is_ref ? 0 : Z_CI * (f / fref) * hypot(cf_rse, ref->rse_f);
    r->measurably_better = !is_ref && r->candidate_gain > r->candidate_gain_ci;
    if (!r->measurably_better) {
        /* Another measured cap may still be better beyond its (smaller) uncertainty: the best ranked of those. */
        size_t k = n;
        double rank_k = INFINITY;
        for (size_t i = 0; i + 1 < n; i++) {
            if (!jc__feasible(&p->op, pts[i].t)) continue;
            double fi = p->op.kind == JC_OBJECTIVE_ENERGY_SLOWDOWN ? pts[i].p * pts[i].t : pts[i].f;
            double gain = 1 - fi / fref, ci = Z_CI * (fi / fref) * hypot(pts[i].rse_f, ref->rse_f);
            double rank = fi * (1 + Z_PICK * pts[i].rse_f);
            if (gain > ci && rank < rank_k) {
                rank_k = rank;
                k = i;
            }
        }
        if (k < n) {
            cap = pts[k].cap_w;
            t = pts[k].t;
            pw = pts[k].p;
            f = p->op.kind == JC_OBJECTIVE_ENERGY_SLOWDOWN ? pts[k].p * pts[k].t : pts[k].f;
            ct_rse = pts[k].rse_t;
            cp_rse = pts[k].rse_p;
            cand_measured = 1;
            r->candidate_cap_w = cap;
            r->candidate_gain = 1 - f / fref;
            r->candidate_gain_ci = Z_CI * (f / fref) * hypot(pts[k].rse_f, ref->rse_f);
            r->measurably_better = 1;
        }
    }
    if (!r->measurably_better) {
        cap = ref->cap_w;
        t = ref->t;
        pw = ref->p;
        f = fref;
        ct_rse = ref->rse_t;
        cp_rse = ref->rse_p;
        is_ref = 1;
    }
    r->cap_measured = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(pts[i].cap_w - cap) < 0.5) r->cap_measured = 1;

    r->cap_w = cap;
    r->time_per_step_s = t;
    r->avg_power_w = pw;
    r->energy_per_step_j = pw * t;
    r->objective_value = f;
    r->energy_saving = is_ref ? 0 : 1 - (pw * t) / (ref->p * ref->t);
    r->slowdown = is_ref ? 0 : t / ref->t - 1;
    /* Energy per step is P t: its relative error combines both, at each end of the ratio. */
    r->energy_saving_ci = is_ref ? 0 : Z_CI * (1 - r->energy_saving) *
                                         sqrt(ct_rse * ct_rse + cp_rse * cp_rse + ref->rse_t * ref->rse_t +
                                              ref->rse_p * ref->rse_p);
    r->slowdown_ci = is_ref ? 0 : Z_CI * (1 + r->slowdown) * hypot(ct_rse, ref->rse_t);

    char cb[32], rb[32], refname[64];
    fmt_w(cb, sizeof cb, r->candidate_cap_w);
    fmt_w(rb, sizeof rb, ref->cap_w);
    jc__fmt(refname, sizeof refname, "%s (%s)", rb,
            fabs(ref->cap_w - p->cfg.default_limit_w) < 0.5 ? "the default limit" : "the highest cap tried");
    char extra[96] = "";
    if (p->op.kind == JC_OBJECTIVE_ENERGY_SLOWDOWN)
        jc__fmt(extra, sizeof extra, " (slowdown allowed: %.1f%%)", 100 * p->cfg.max_slowdown);
    char bind[200] = "";
    if (!r->binding)
        jc__fmt(bind, sizeof bind,
                "the cap does not bind at this load (the GPU drew at most %.0f%% of every cap tried and its power "
                "did not follow the cap)",
                100 * max_frac);
    if (r->measurably_better) {
        jc__fmt(r->reason, sizeof r->reason,
                "%s%s%s%s is lowest at %s (%s) among %d caps tried in %.1f s%s: %.1f%% +/- %.1f%% below %s; energy "
                "per step %+.1f%% +/- %.1f%%, time per step %+.1f%% +/- %.1f%% (90%% confidence).",
                r->binding ? "" : "Though ", bind, r->binding ? "" : ", the objective differed beyond the noise. ",
                objective_text(p->cfg.objective), cb,
                r->cap_measured ? "measured" : "interpolated", (int)n, r->profile_seconds, extra,
                100 * r->candidate_gain, 100 * r->candidate_gain_ci, rb, -100 * r->energy_saving,
                100 * r->energy_saving_ci, 100 * r->slowdown, 100 * r->slowdown_ci);
    } else if (n == 1) {
        jc__fmt(r->reason, sizeof r->reason, "Only %s was measured (in %.1f s)%s%s; nothing to compare it with.",
                refname, r->profile_seconds, r->binding ? "" : "; ", bind);
    } else if (fabs(r->candidate_cap_w - ref->cap_w) < 0.5) {
        jc__fmt(r->reason, sizeof r->reason,
                "No cap measurably better than %s%s%s: %s was lowest there among %d caps tried in %.1f s%s.", refname,
                r->binding ? "" : "; ", bind, objective_text(p->cfg.objective), (int)n, r->profile_seconds, extra);
    } else {
        jc__fmt(r->reason, sizeof r->reason,
                "No cap measurably better than %s%s%s, so it is kept: %s was lowest at %s (%s) among %d caps tried in "
                "%.1f s%s, %.1f%% +/- %.1f%% below %s, within the uncertainty (90%% confidence).",
                refname, r->binding ? "" : "; ", bind, objective_text(p->cfg.objective), cb,
                cand_measured ? "measured" : "interpolated", (int)n, r->profile_seconds, extra, 100 * r->candidate_gain, 100 * r->candidate_gain_ci, rb);
    }
    if (p->stopped_by_budget) {
        size_t len = strlen(r->reason);
        jc__fmt(r->reason + len, sizeof r->reason - len, " Stopped at the time budget (%.1f s).", p->budget_s);
    }
}

/* ------------------------------------------------------------------------------------------------------
 * Search.
 * ---------------------------------------------------------------------------------------------------- */

static int measured_near(const jc_profiler *p, double cap, double tol) {
    for (int i = 0; i < p->ntrials; i++)
        if (fabs(p->trials[i].pub.cap_w - cap) < tol) return 1;
    return 0;
}

/* Where in the gap (a, c) the objective may have a kink, from the lines through the neighbouring points on
 * each side; returns the predicted value there (or +inf when the neighbours do not fall into the gap from
 * the left and rise out of it on the right) and the place in *x.  A gap at either end of the caps measured
 * has a neighbour on one side only; the other side is taken to rise as steeply as that one falls. */
static double kink_bound(const jc__point *pts, size_t m, size_t i, double *x) {
    double a = pts[i].cap_w, c = pts[i + 1].cap_w;
    *x = 0.5 * (a + c);
    int has_l = i >= 1, has_r = i + 2 < m;
    if (!has_l && !has_r) return INFINITY;
    double sl = has_l ? (pts[i].f - pts[i - 1].f) / (a - pts[i - 1].cap_w) : NAN;
    double sr = has_r ? (pts[i + 2].f - pts[i + 1].f) / (pts[i + 2].cap_w - c) : NAN;
    if (!has_l) sl = -sr;
    if (!has_r) sr = -sl;
    if (!(sl < 0 && sr > 0)) return INFINITY;
    double xs = (pts[i + 1].f - pts[i].f + sl * a - sr * c) / (sl - sr);
    if (!(xs > a && xs < c)) return INFINITY;
    *x = xs;
    return pts[i].f + sl * (xs - a);
}

/* A place in the gap (a, c), kept a quarter of the gap (and one resolution) away from its ends so that
 * every trial shrinks the gap, rounded to whole watts; NAN when the gap is too narrow. */
static double guarded(const jc_profiler *p, double a, double c, double x) {
    double w = c - a, res = p->res_w;
    if (w < 2 * res) return NAN;
    double guard = fmax(res, SAFEGUARD * w);
    if (2 * guard > w) guard = 0.5 * w;
    double xc = fmin(fmax(x, a + guard), c - guard);
    xc = round_cap(xc, a + res * 0.999, c - res * 0.999);
    if (measured_near(p, xc, 0.5)) return NAN;
    return xc;
}

/* Refinement with evidence: the gap where the predicted kink lies lowest, if that is below the best measured
 * value by more than REFINE_GAIN and by Z_GAIN standard errors (of the four points that predict it and of
 * the best).  0 when none. */
static int choose_kink(jc_profiler *p, double *cap_out) {
    jc__point pts[MAX_POINTS];
    size_t m = pool(p, pts, MAX_POINTS);
    if (m < 3) return 0;
    size_t b = argmin_f(pts, m);
    double fb = pts[b].f, sb = pts[b].rse_f * fb;
    double best_gain = 0, best_x = NAN;
    for (size_t i = 0; i + 1 < m; i++) {
        double x, v = kink_bound(pts, m, i, &x);
        double gain = fb - v;
        if (!(gain > REFINE_GAIN * fb)) continue;
        /* Uncertainty of the gain: the two caps bounding the gap carry it (the outer two only set the slopes,
         * over a short extrapolation), plus the best cap when it is not one of them. */
        double var = pow(pts[i].rse_f * pts[i].f, 2) + pow(pts[i + 1].rse_f * pts[i + 1].f, 2);
        if (b != i && b != i + 1) var += sb * sb;
        if (!(gain > Z_GAIN * sqrt(var)) || !(gain > best_gain)) continue;
        double xc = guarded(p, pts[i].cap_w, pts[i + 1].cap_w, x);
        if (!isfinite(xc)) continue;
        best_gain = gain;
        best_x = xc;
    }
    if (!isfinite(best_x)) return 0;
    *cap_out = best_x;
    return 1;
}

/* The draw point: above the power a job draws unconstrained, a cap changes nothing; just below it the cap
 * starts to cut power, and there the trade-off begins (on a knee the optimum often sits right there).  A cap
 * does not bind when raising it does not raise the power (the next higher cap measured draws the same, within
 * DRAW_SAME); when the next lower cap measured lies below that power, the cap equal to the power drawn is
 * tried, once.  0 when there is no such place. */
static int choose_draw(jc_profiler *p, double *cap_out) {
    jc__point pts[MAX_POINTS];
    size_t m = pool(p, pts, MAX_POINTS);
    for (size_t i = 1; i + 1 < m; i++) {
        double a = pts[i - 1].cap_w, c = pts[i].cap_w, draw = pts[i].p;
        if (!(fabs(pts[i + 1].p - draw) <= DRAW_SAME * draw) || !(draw < c) || !(a < draw)) continue;
        if (c - a < 2 * p->res_w) continue;
        double x = round_cap(fmin(fmax(draw, a + p->res_w), c - p->res_w), a + 0.999 * p->res_w,
                             c - 0.999 * p->res_w);
        if (measured_near(p, x, fmax(p->res_w, 0.02 * x))) continue;
        *cap_out = x;
        return 1;
    }
    return 0;
}

/* The knee: when a neighbour of the best cap is much worse (by KNEE_RISE), the objective turns sharply in the
 * gap between them, and where exactly decides much; that gap is halved while wider than the local width. */
static int choose_knee(jc_profiler *p, double *cap_out) {
    jc__point pts[MAX_POINTS];
    size_t m = pool(p, pts, MAX_POINTS);
    if (m < 2) return 0;
    size_t b = argmin_f(pts, m);
    double local = LOCAL_WIDTH_RES * p->res_w;
    for (int side = -1; side <= 1; side += 2) {
        if ((side < 0 && b == 0) || (side > 0 && b + 1 >= m)) continue;
        size_t nb = side < 0 ? b - 1 : b + 1;
        double sd = hypot(pts[nb].rse_f * pts[nb].f, pts[b].rse_f * pts[b].f);
        int knee = pts[nb].f > (1 + KNEE_RISE) * pts[b].f;
        int tie = fabs(pts[nb].f - pts[b].f) < Z_TIE * sd;
        if (!knee && !tie) continue;
        double a = fmin(pts[b].cap_w, pts[nb].cap_w), c = fmax(pts[b].cap_w, pts[nb].cap_w);
        if (c - a <= local) continue;
        double xc = guarded(p, a, c, 0.5 * (a + c));
        if (isfinite(xc)) {
            *cap_out = xc;
            return 1;
        }
    }
    return 0;
}

/* Refinement without evidence: around the best cap, halve the wider neighbouring gap until both are at most
 * LOCAL_WIDTH_RES resolutions wide.  0 when none. */
static int choose_local(jc_profiler *p, double *cap_out) {
    jc__point pts[MAX_POINTS];
    size_t m = pool(p, pts, MAX_POINTS);
    if (m < 2) return 0;
    size_t b = argmin_f(pts, m);
    double wl = b > 0 ? pts[b].cap_w - pts[b - 1].cap_w : 0;
    double wr = b + 1 < m ? pts[b + 1].cap_w - pts[b].cap_w : 0;
    double local = LOCAL_WIDTH_RES * p->res_w;
    for (int k = 0; k < 2; k++) {
        int right = (wr >= wl) ? (k == 0) : (k == 1);
        double w = right ? wr : wl;
        if (w <= local) continue;
        double a = right ? pts[b].cap_w : pts[b - 1].cap_w, c = a + w;
        double xc = guarded(p, a, c, 0.5 * (a + c));
        if (isfinite(xc)) {
            *cap_out = xc;
            return 1;
        }
    }
    return 0;
}

/* Racing: the best cap against its strongest challenger, the other cap with the lowest lower confidence
 * bound (objective minus Z_RACE standard errors).  While the two are not Z_RACE standard errors of their
 * difference apart, the one known less precisely is measured again (trials at one cap are pooled) until its
 * standard error shrinks by the factor RACE_SHRINK.  0 when the best is clear of every other cap. */
static int choose_race(jc_profiler *p, double floor_rse, double *cap_out, double *target_out) {
    jc__point pts[MAX_POINTS];
    size_t m = pool(p, pts, MAX_POINTS);
    if (m < 2) return 0;
    size_t b = argmin_f(pts, m);
    double fb = pts[b].f, sb = pts[b].rse_f * fb;
    size_t ch = m;
    double lcb_min = INFINITY;
    for (size_t i = 0; i < m; i++) {
        if (i == b) continue;
        double lcb = pts[i].f * (1 - Z_RACE * pts[i].rse_f);
        if (lcb < lcb_min) {
            lcb_min = lcb;
            ch = i;
        }
    }
    if (ch == m) return 0;
    double sc = pts[ch].rse_f * pts[ch].f;
    if ((pts[ch].f - fb) / sqrt(sc * sc + sb * sb) > Z_RACE) return 0;
    size_t pick = sc > sb ? ch : b;
    if (pts[pick].rse_f <= floor_rse) pick = pick == b ? ch : b;
    if (pts[pick].rse_f <= floor_rse) return 0;
    *cap_out = pts[pick].cap_w;
    *target_out = fmax(MIN_PRECISION, pts[pick].rse_f * RACE_SHRINK);
    return 1;
}

/* The sequential test behind the recommendation: a cap other than the reference (the highest cap measured,
 * normally the default limit) is recommended only when it beats the reference beyond the 90% interval of the
 * difference.  While no measured cap does, the cap closest to passing (the largest gain over the reference in
 * standard errors of the difference) and the reference are measured again, the one known less precisely
 * first, until its standard error shrinks by RACE_SHRINK: down to MIN_PRECISION, and ahead of every other
 * race, since until the test passes the order of the other caps does not change the recommendation.  0 when
 * a cap passes (the test is settled) or the difference cannot be narrowed. */
static int choose_ref_race(jc_profiler *p, double *cap_out, double *target_out) {
    jc__point pts[MAX_POINTS];
    size_t m = pool(p, pts, MAX_POINTS);
    if (m < 2) return 0;
    size_t r = m - 1, b = m;
    double zb = -INFINITY, sr = pts[r].rse_f * pts[r].f;
    for (size_t i = 0; i < r; i++) {
        if (!jc__feasible(&p->op, pts[i].t)) continue;
        double z = (pts[r].f - pts[i].f) / hypot(pts[i].rse_f * pts[i].f, sr);
        if (z > zb) {
            zb = z;
            b = i;
        }
    }
    /* No candidate, one that passes, or all clearly worse than the reference (it is best): nothing to race. */
    if (b == m || zb > Z_CI || zb < -Z_WORSE) return 0;
    size_t pick = pts[r].rse_f * pts[r].f > pts[b].rse_f * pts[b].f ? r : b;
    if (pts[pick].rse_f <= MIN_PRECISION) pick = pick == b ? r : b;
    if (pts[pick].rse_f <= MIN_PRECISION) return 0;
    *cap_out = pts[pick].cap_w;
    *target_out = fmax(MIN_PRECISION, pts[pick].rse_f * RACE_SHRINK);
    return 1;
}

static double typical_trial_s(const jc_profiler *p) {
    double sum = 0, tstep = 0;
    int k = 0;
    for (int i = 0; i < p->ntrials; i++) {
        if (!p->trials[i].finished) continue;
        sum += p->trials[i].pub.seconds;
        tstep = p->trials[i].pub.time_per_step_s;
        k++;
    }
    double meas = k ? sum / k : p->min_trial_s;
    if (meas < p->min_trial_s) meas = p->min_trial_s;
    return p->cfg.settle_s + (p->cfg.settle_steps + 1) * tstep + meas;
}

static void finish_now(jc_profiler *p) {
    p->phase = PH_DONE;
    p->res.done = 1;
    recommend(p);
    p->res.done = 1;
}

/* The shortest useful trial: settling, the steps dropped after it and MIN_STEPS measured ones. */
static double shortest_trial_s(const jc_profiler *p) {
    double tstep = 0;
    for (int i = 0; i < p->ntrials; i++)
        if (p->trials[i].finished) tstep = p->trials[i].pub.time_per_step_s;
    return p->cfg.settle_s + (p->cfg.settle_steps + 1 + MIN_STEPS) * tstep + p->min_trial_s;
}

/* Starts a trial unless the budget is spent: a trial of the reference test (short_ok) needs only room for the
 * shortest useful trial (it is cut at the budget, and its steps still count in the test); others, room for a
 * typical one. */
static void start_trial_ex(jc_profiler *p, double cap, double target, int short_ok) {
    double elapsed = p->started ? p->last_t - p->t_start : 0;
    double need = short_ok ? shortest_trial_s(p) : typical_trial_s(p);
    if (p->budget_s > 0 && elapsed + need > p->budget_s) {
        p->stopped_by_budget = 1;
        finish_now(p);
        return;
    }
    p->pending_cap = cap;
    p->pending_target = target;
    p->pending_race = 0;
    p->phase = PH_SET_CAP;
}

static void start_trial(jc_profiler *p, double cap, double target) { start_trial_ex(p, cap, target, 0); }

/* Order: the coarse pass; refinement where the data point to a kink, then at the draw point; racing close
 * caps; a blind look around the best cap when no race is open and time is left; done. */
static void plan_next(jc_profiler *p) {
    double explore = fmin(0.5, EXPLORE_FACTOR * p->cfg.precision);
    while (p->plan_i < p->plan_n) {
        double cap = p->plan[p->plan_i++];
        if (measured_near(p, cap, 0.5)) continue;
        start_trial(p, cap, p->ncaps > 0 ? p->cfg.precision : explore);
        p->pending_phase = JC_PROFILER_PHASE_COARSE;
        return;
    }
    double cap, target;
    double left = p->budget_s > 0 ? p->budget_s - (p->last_t - p->t_start) : INFINITY;
    int room = left > EXPLORE_RESERVE * typical_trial_s(p);
    if (p->ncaps == 0 && room && choose_kink(p, &cap)) {
        start_trial(p, cap, explore);
        p->pending_phase = JC_PROFILER_PHASE_REFINE;
        return;
    }
    if (p->ncaps == 0 && room && choose_draw(p, &cap)) {
        start_trial(p, cap, explore);
        p->pending_phase = JC_PROFILER_PHASE_REFINE;
        return;
    }
    if (choose_ref_race(p, &cap, &target)) {
        start_trial_ex(p, cap, target, 1);
        p->pending_race = 1;
        p->pending_phase = JC_PROFILER_PHASE_RACE;
        return;
    }
    for (int round = 0; round < 2; round++) {
        if (choose_race(p, round == 0 ? p->cfg.precision : MIN_PRECISION, &cap, &target)) {
            start_trial(p, cap, target);
            p->pending_race = 1;
            p->pending_phase = JC_PROFILER_PHASE_RACE;
            return;
        }
        if (round == 0 && p->ncaps == 0 && room && choose_knee(p, &cap)) {
            start_trial(p, cap, explore);
            p->pending_phase = JC_PROFILER_PHASE_REFINE;
            return;
        }
    }
    if (p->ncaps == 0 && room && choose_local(p, &cap)) {
        start_trial(p, cap, explore);
        p->pending_phase = JC_PROFILER_PHASE_REFINE;
        return;
    }
    finish_now(p);
}

/* ------------------------------------------------------------------------------------------------------
 * Trials.
 * ---------------------------------------------------------------------------------------------------- */

static trial *current(jc_profiler *p) { return p->ntrials ? &p->trials[p->ntrials - 1] : NULL; }

/* Stores the estimate in the trial; 0 when there is not enough data. */
static int evaluate(jc_profiler *p, trial *tr) {
    jc__estimate est;
    if (!jc__estimate_series(&tr->s, p->cfg.counter_period_s, &est)) return 0;
    tr->est = est;
    jc_profiler_trial *pub = &tr->pub;
    pub->steps = est.steps;
    pub->seconds = est.seconds;
    pub->time_per_step_s = est.time_per_step_s;
    pub->avg_power_w = est.power_w;
    pub->energy_j = est.power_w * est.seconds;
    pub->energy_per_step_j = pub->energy_j / est.steps;
    pub->rel_se_time = est.rel_se_time;
    pub->rel_se_power = est.rel_se_power;
    pub->objective = jc__objective(&p->op, est.time_per_step_s, est.power_w);
    pub->rel_se_objective = jc__objective_rel_se(&p->op, est.time_per_step_s, est.power_w, est.rel_se_time,
                                                 est.rel_se_power);
    tr->evaluated = 1;
    return 1;
}

static void end_trial(jc_profiler *p, jc_profiler_stop_reason reason) {
    trial *tr = current(p);
    if (tr && !tr->finished) {
        tr->pub.stop_reason = reason;
        tr->finished = evaluate(p, tr); /* a trial too short to estimate is kept in the list, unused */
    }
    if (p->budget_s == 0 && p->cfg.time_budget_s == 0 && tr && tr->finished)
        p->budget_s = fmax(AUTO_BUDGET_S, AUTO_BUDGET_STEPS * tr->pub.time_per_step_s);
}

/* Decides whether the trial in progress has measured enough. Returns a stop reason or NONE. */
static jc_profiler_stop_reason should_stop(jc_profiler *p, trial *tr) {
    size_t n = tr->s.n;
    if (n < 2) return JC_PROFILER_STOP_NONE;
    int steps = (int)n - 1;
    double span = tr->s.t[n - 1] - tr->s.t[0];
    if (span >= tr->max_s && steps >= MIN_STEPS_MAX_TRIAL) return JC_PROFILER_STOP_MAX_TIME;
    if (steps < MIN_STEPS || span < p->min_trial_s) return JC_PROFILER_STOP_NONE;
    /* Evaluate every step while short, then at geometric spacing (keeps the cost O(n log n)). */
    p->since_eval++;
    if (steps > 32 && p->since_eval < steps / 16) return JC_PROFILER_STOP_NONE;
    p->since_eval = 0;
    if (!evaluate(p, tr)) return JC_PROFILER_STOP_NONE;
    /* The objective at this cap pooled with earlier trials at the same cap, against the best other cap. */
    jc__point pts[MAX_POINTS];
    size_t m = pool_ex(p, pts, MAX_POINTS, 1);
    size_t c = m;
    for (size_t i = 0; i < m; i++)
        if (fabs(pts[i].cap_w - tr->pub.cap_w) < 0.5) c = i;
    if (c == m) return JC_PROFILER_STOP_NONE;
    double f = pts[c].f, se = pts[c].rse_f;
    if (se <= tr->target) return JC_PROFILER_STOP_PRECISE;
    size_t b = m;
    for (size_t i = 0; i < m; i++)
        if (i != c && (b == m || pts[i].f < pts[b].f)) b = i;
    if (b < m) {
        double sa = se * f, sb = pts[b].rse_f * pts[b].f;
        double z = (f - pts[b].f) / sqrt(sa * sa + sb * sb);
        if (z > Z_WORSE) return JC_PROFILER_STOP_WORSE;             /* clearly worse than the best other cap */
        if (tr->race && -z > Z_RACE) return JC_PROFILER_STOP_PRECISE; /* clearly better: the race is decided */
    }
    return JC_PROFILER_STOP_NONE;
}


jc_status jc_profiler_next_action(jc_profiler *p, jc_profiler_action *out) {
    if (!p || !out) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_profiler_next_action: NULL argument");
    switch (p->phase) {
    case PH_DONE:
        out->kind = JC_PROFILER_DONE;
        out->cap_w = p->res.cap_w;
        break;
    case PH_SET_CAP:
        out->kind = JC_PROFILER_SET_CAP;
        out->cap_w = p->pending_cap;
        break;
    default:
        out->kind = JC_PROFILER_RUN;
        out->cap_w = current(p)->pub.cap_w;
        break;
    }
    return JC_OK;
}

jc_status jc_profiler_cap_applied(jc_profiler *p, double applied_cap_w, double t_s, double energy_j) {
    if (!p) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_profiler_cap_applied: profiler is NULL");
    if (p->phase != PH_SET_CAP)
        return jc__fail(JC_ERR_STATE, "jc_profiler_cap_applied: no cap change was asked for (next action is %s)",
                        p->phase == PH_DONE ? "DONE" : "RUN");
    if (!isfinite(applied_cap_w) || !(applied_cap_w > 0))
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_profiler_cap_applied: cap %g W is not a positive number",
                        applied_cap_w);
    if (!isfinite(t_s) || !isfinite(energy_j))
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_profiler_cap_applied: time %g s or energy %g J not finite",
                        t_s, energy_j);
    if (p->started && (t_s < p->last_t || energy_j < p->last_e))
        return jc__fail(JC_ERR_INVALID_ARGUMENT,
                        "jc_profiler_cap_applied: time (%.9g s) or energy (%.9g J) went backwards (last %.9g s, "
                        "%.9g J)",
                        t_s, energy_j, p->last_t, p->last_e);
    if (p->ntrials == p->trials_cap) {
        int cap = p->trials_cap ? p->trials_cap * 2 : 16;
        trial *nt = realloc(p->trials, (size_t)cap * sizeof *nt);
        if (!nt) return jc__fail(JC_ERR_NO_MEMORY, "profiler: out of memory for %d trials", cap);
        p->trials = nt;
        p->trials_cap = cap;
    }
    trial *tr = &p->trials[p->ntrials++];
    memset(tr, 0, sizeof *tr);
    tr->pub.cap_w = applied_cap_w;
    tr->pub.start_s = t_s;
    tr->target = p->pending_target;
    tr->max_s = p->cfg.max_trial_s;
    if (p->ncaps == 0 && p->pending_phase <= 1) {
        /* The coarse pass must finish within COARSE_SHARE of the budget, however noisy the steps. */
        double budget = p->budget_s > 0 ? p->budget_s : AUTO_BUDGET_S;
        double share = COARSE_SHARE * budget / p->plan_n - p->cfg.settle_s;
        tr->max_s = fmin(tr->max_s, fmax(p->min_trial_s, share));
    }
    tr->race = p->pending_race;
    tr->pub.phase = p->pending_phase ? (jc_profiler_phase)p->pending_phase : JC_PROFILER_PHASE_COARSE;
    tr->pub.objective = tr->pub.avg_power_w = tr->pub.time_per_step_s = NAN;
    if (!p->started) {
        p->started = 1;
        p->t_start = t_s;
    }
    p->last_t = t_s;
    p->last_e = energy_j;
    p->since_eval = 0;
    p->phase = PH_SETTLE;
    if (p->cfg.settle_steps == 0 && p->cfg.settle_s <= 0) {
        jc_status st = jc__series_push(&tr->s, t_s, energy_j);
        if (st != JC_OK) return st;
        p->phase = PH_MEASURE;
    }
    jc__clear_detail();
    return JC_OK;
}

jc_status jc_profiler_observe_step(jc_profiler *p, double t_s, double energy_j) {
    if (!p) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_profiler_observe_step: profiler is NULL");
    if (p->phase == PH_DONE) return jc__fail(JC_ERR_STATE, "jc_profiler_observe_step: the profiler has finished");
    if (p->phase == PH_SET_CAP)
        return jc__fail(JC_ERR_STATE, "jc_profiler_observe_step: a cap change is pending (call "
                                      "jc_profiler_cap_applied first)");
    if (!isfinite(t_s) || !isfinite(energy_j))
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_profiler_observe_step: time %g s or energy %g J not finite",
                        t_s, energy_j);
    if (!(t_s > p->last_t))
        return jc__fail(JC_ERR_INVALID_ARGUMENT,
                        "jc_profiler_observe_step: time %.9g s is not after the previous boundary %.9g s", t_s,
                        p->last_t);
    if (energy_j < p->last_e)
        return jc__fail(JC_ERR_INVALID_ARGUMENT,
                        "jc_profiler_observe_step: energy counter went backwards (%.9g J < %.9g J)", energy_j,
                        p->last_e);
    trial *tr = current(p);
    double prev_t = p->last_t;
    p->total_steps++;
    jc_status st = JC_OK;
    if (p->phase == PH_SETTLE) {
        tr->pub.dropped_steps++;
        p->last_t = t_s;
        p->last_e = energy_j;
        if (tr->pub.dropped_steps >= p->cfg.settle_steps && t_s >= tr->pub.start_s + p->cfg.settle_s) {
            st = jc__series_push(&tr->s, t_s, energy_j);
            if (st != JC_OK) return st;
            p->phase = PH_MEASURE;
        }
    } else {
        st = jc__series_push(&tr->s, t_s, energy_j);
        if (st != JC_OK) return st;
        p->last_t = t_s;
        p->last_e = energy_j;
        jc_profiler_stop_reason reason = should_stop(p, tr);
        if (reason) {
            end_trial(p, reason);
            plan_next(p);
        }
    }
    /* Stop before a step that would end after the budget (steps take about as long as the last one). */
    if (p->phase != PH_DONE && p->budget_s > 0 && t_s - p->t_start + (t_s - prev_t) > p->budget_s) {
        p->stopped_by_budget = 1;
        end_trial(p, JC_PROFILER_STOP_BUDGET);
        finish_now(p);
    }
    jc__clear_detail();
    return JC_OK;
}

jc_status jc_profiler_finish(jc_profiler *p) {
    if (!p) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_profiler_finish: profiler is NULL");
    if (p->phase == PH_DONE) return JC_OK;
    if (p->phase == PH_MEASURE || p->phase == PH_SETTLE) end_trial(p, JC_PROFILER_STOP_BUDGET);
    finish_now(p);
    if (!isfinite(p->res.cap_w))
        return jc__fail(JC_ERR_STATE, "jc_profiler_finish: no cap was measured long enough to recommend one");
    return JC_OK;
}

/* ------------------------------------------------------------------------------------------------------
 * Results.
 * ---------------------------------------------------------------------------------------------------- */

jc_status jc_profiler_result_get(const jc_profiler *p, jc_profiler_result *out) {
    if (!p || !out) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_profiler_result_get: NULL argument");
    if (p->phase == PH_DONE) {
        *out = p->res;
    } else {
        jc_profiler *q = (jc_profiler *)p; /* recommend() only refreshes cached values (standard errors) */
        jc_profiler_result saved = q->res;
        q->res.done = 0;
        recommend(q);
        *out = q->res;
        q->res = saved;
    }
    return JC_OK;
}

int jc_profiler_trial_count(const jc_profiler *p) { return p ? p->ntrials : 0; }

jc_status jc_profiler_trial_get(const jc_profiler *p, int i, jc_profiler_trial *out) {
    if (!p || !out) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_profiler_trial_get: NULL argument");
    if (i < 0 || i >= p->ntrials)
        return jc__fail(JC_ERR_NOT_FOUND, "jc_profiler_trial_get: trial %d does not exist (%d trials)", i,
                        p->ntrials);
    *out = p->trials[i].pub;
    return JC_OK;
}

jc_status jc_profiler_predict(const jc_profiler *p, double cap_w, double *time_per_step_s, double *avg_power_w) {
    if (!p || !time_per_step_s || !avg_power_w)
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_profiler_predict: NULL argument");
    jc__point pts[MAX_POINTS];
    size_t n = pool((jc_profiler *)p, pts, MAX_POINTS);
    if (n == 0) return jc__fail(JC_ERR_STATE, "jc_profiler_predict: no trial has finished yet");
    if (!isfinite(cap_w) || cap_w < p->cfg.min_limit_w || cap_w > p->cfg.max_limit_w)
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_profiler_predict: cap %g W outside [%g, %g] W", cap_w,
                        p->cfg.min_limit_w, p->cfg.max_limit_w);
    jc__model_eval(pts, n, cap_w, time_per_step_s, avg_power_w);
    return JC_OK;
}
