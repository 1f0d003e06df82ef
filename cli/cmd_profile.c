/* joulecap profile --simulate SWEEP.csv: runs the profiler's decision logic against a simulated GPU that plays
 * back a recorded power-limit sweep on a virtual clock.  (Profiling a real job goes through the Python API,
 * which owns the job's steps; this subcommand is the replayable, deterministic path.)
 *
 * --plan runs a fixed measurement plan instead of the profiler (used by the benchmark to measure other
 * methods on the same simulator): "CAP/WARMUP/MEASURE,..." where MEASURE is a number of steps or seconds with
 * an "s" suffix; with --plan-window-from-cap-change the measurement window of each entry opens before the cap
 * is set (as the seed's profiler did) and WARMUP must be 0. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "joulecap_sim.h"

#include "errors.h"
#include "options.h"
#include "output.h"

static const char usage_text[] =
    "Usage: joulecap profile --simulate SWEEP.csv [options]\n"
    "\n"
    "Finds the power cap with the best energy/time trade-off by running the profiler against a simulated GPU\n"
    "that plays back a recorded power-limit sweep (virtual clock, no sleeping, nothing is changed on any GPU).\n"
    "SWEEP.csv has a header with power_limit_w,time_per_step_s,avg_power_w (and optionally min_limit_w,\n"
    "max_limit_w,default_limit_w); time and power are linear between the recorded limits.\n"
    "\n"
    "Profiler:\n"
    "  --objective NAME      ed2p (default), edp, energy, time, energy-slowdown, zeus\n"
    "  --max-slowdown X      energy-slowdown: allowed slowdown vs the default limit (default 0.05)\n"
    "  --eta X               zeus: weight of energy in [0, 1] (default 0.5)\n"
    "  --caps LIST           only try these caps (W, comma-separated)\n"
    "  --time-budget S       profiling time limit in seconds (default: max(20 s, 300 steps))\n"
    "  --precision X         target relative standard error per trial (default 0.01)\n"
    "  --profiler-settle S   steps starting within S seconds of a cap change are dropped (default 0.3)\n"
    "Simulated GPU:\n"
    "  --step-seconds S      time per step at the default limit (default 0.05)\n"
    "  --noise X             relative standard deviation of each step's time and power (default 0.02)\n"
    "  --seed N              PRNG seed (default 1)\n"
    "  --counter-period S    energy counter update period (default 0.1; 0 = exact)\n"
    "  --settle-seconds S    the GPU moves from the old cap's behaviour to the new one over S (default 0.3)\n"
    "Output:\n"
    "  --json                one JSON object on stdout\n"
    "  (on a terminal, a progress line on stderr: trial, cap, time, best cap so far)\n"
    "  -h, --help            this text\n"
    "\n"
    "Exit status: 0 done, 2 bad command line or sweep, 3 failure.\n";

static int parse_num(const char *opt, const char *text, double lo, double hi, double *out) {
    return jc_cli_parse_number("profile", opt, text, lo, hi, out);
}

typedef struct plan_entry {
    double cap, measure;
    int warmup, seconds;
} plan_entry;

#define MAX_PLAN 256

static int parse_plan(const char *text, plan_entry *plan, int *n) {
    *n = 0;
    const char *p = text;
    while (*p) {
        if (*n == MAX_PLAN) return jc_cli_usage_err("profile", "--plan: more than %d entries", MAX_PLAN), 0;
        char item[128];
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof item) return jc_cli_usage_err("profile", "--plan: bad entry near '%s'", p), 0;
        memcpy(item, p, len);
        item[len] = '\0';
        p += len;
        if (*p == ',') p++;
        double cap, m;
        int w;
        char unit[4] = "";
        int got = sscanf(item, "%lf/%d/%lf%3s", &cap, &w, &m, unit);
        if (got < 3 || !(cap > 0) || w < 0 || !(m > 0) || (got == 4 && strcmp(unit, "s") != 0))
            return jc_cli_usage_err("profile", "--plan: entry '%s' is not CAP/WARMUP/STEPS or CAP/WARMUP/SECONDSs",
                                    item), 0;
        plan[*n].cap = cap;
        plan[*n].warmup = w;
        plan[*n].measure = m;
        plan[*n].seconds = got == 4;
        (*n)++;
    }
    if (*n == 0) return jc_cli_usage_err("profile", "--plan: empty"), 0;
    return 1;
}

static int parse_caps(const char *text, double *caps, size_t *n) {
    *n = 0;
    const char *p = text;
    while (*p) {
        if (*n == JC_PROFILER_MAX_CAPS)
            return jc_cli_usage_err("profile", "--caps: more than %d caps", JC_PROFILER_MAX_CAPS), 0;
        char *end = NULL;
        errno = 0;
        double v = strtod(p, &end);
        if (end == p || (*end != ',' && *end != '\0') || !isfinite(v) || !(v > 0))
            return jc_cli_usage_err("profile", "--caps: '%s' is not a comma-separated list of watts", text), 0;
        caps[(*n)++] = v;
        p = *end == ',' ? end + 1 : end;
    }
    if (*n == 0) return jc_cli_usage_err("profile", "--caps: empty list"), 0;
    return 1;
}

/* Regret of cap c under the configured objective against the best of the sweep on a 1 W grid. */
static void truth(const jc_sweep *sw, const jc_profiler_config *cfg, double c, double *best_cap, double *regret) {
    double bv;
    *best_cap = NAN;
    *regret = NAN;
    if (jc_sweep_best_cap(sw, cfg->objective, cfg->max_slowdown, cfg->eta, 1.0, best_cap, &bv) != JC_OK) return;
    if (!isfinite(c)) return;
    double t, p, tref, pref, mn, mx, df;
    jc_sweep_limits(sw, &mn, &mx, &df);
    jc_sweep_eval(sw, c, &t, &p);
    jc_sweep_eval(sw, df, &tref, &pref);
    double v;
    switch (cfg->objective) {
    case JC_OBJECTIVE_ED2P: v = p * t * t * t; break;
    case JC_OBJECTIVE_EDP: v = p * t * t; break;
    case JC_OBJECTIVE_TIME: v = t; break;
    case JC_OBJECTIVE_ZEUS: v = cfg->eta * p * t + (1 - cfg->eta) * mx * t; break;
    default: v = p * t; break;
    }
    *regret = v / bv - 1;
}

static int run_plan(const jc_sweep *sw, const jc_sim_options *so, const plan_entry *plan, int n, int window_before,
                    int json) {
    jc_simgpu *g = NULL;
    jc_status st = jc_simgpu_new(sw, so, &g);
    if (st != JC_OK) return jc_cli_err("%s", jc_last_detail()), JC_EXIT_USAGE;
    double t0 = jc_simgpu_now(g);
    if (json) fputs("{\"plan\":[", stdout);
    for (int i = 0; i < n; i++) {
        double ws = jc_simgpu_now(g), we = jc_simgpu_counter(g);
        st = jc_simgpu_set_cap(g, plan[i].cap);
        if (st != JC_OK) {
            jc_simgpu_free(g);
            if (json) fputs("]}\n", stdout);
            return jc_cli_err("%s", jc_last_detail()), JC_EXIT_USAGE;
        }
        double t = 0, e = 0;
        for (int k = 0; k < plan[i].warmup; k++) jc_simgpu_step(g, &t, &e);
        if (!window_before) {
            ws = jc_simgpu_now(g);
            we = jc_simgpu_counter(g);
        }
        long steps = 0;
        if (plan[i].seconds) {
            do {
                jc_simgpu_step(g, &t, &e);
                steps++;
            } while (t - ws < plan[i].measure);
        } else {
            for (long k = 0; k < (long)plan[i].measure; k++) jc_simgpu_step(g, &t, &e);
            steps = (long)plan[i].measure;
        }
        double secs = jc_simgpu_now(g) - ws, energy = jc_simgpu_counter(g) - we;
        if (json) {
            printf("%s{\"cap_w\":", i ? "," : "");
            jc_json_num(stdout, plan[i].cap);
            printf(",\"steps\":%ld,\"seconds\":", steps);
            jc_json_num(stdout, secs);
            fputs(",\"energy_j\":", stdout);
            jc_json_num(stdout, energy);
            fputs(",\"time_per_step_s\":", stdout);
            jc_json_num(stdout, secs / steps);
            fputs(",\"avg_power_w\":", stdout);
            jc_json_num(stdout, energy / secs);
            fputs("}", stdout);
        } else {
            printf("%8.1f W  %6ld steps  %8.3f s  %10.3f J\n", plan[i].cap, steps, secs, energy);
        }
    }
    double total = jc_simgpu_now(g) - t0;
    if (json) {
        fputs("],\"profile_seconds\":", stdout);
        jc_json_num(stdout, total);
        fputs("}\n", stdout);
    }
    jc_simgpu_free(g);
    return JC_EXIT_OK;
}

/* One progress line on stderr (jc_profiler_simulate's progress callback; only when stderr is a terminal):
 * trial k, its cap, elapsed (simulated) / budget, the best cap so far.  "\r" and erase-to-end-of-line rewrite
 * it in place; DONE clears it. */
static void progress(const jc_profiler *p, const jc_profiler_action *next, double elapsed_s, void *arg) {
    double budget_s = *(const double *)arg;
    if (next->kind == JC_PROFILER_DONE) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
        return;
    }
    jc_profiler_result r;
    char best[64] = "none yet";
    if (jc_profiler_result_get(p, &r) == JC_OK && isfinite(r.cap_w))
        snprintf(best, sizeof best, "%g W%s", r.cap_w, r.measurably_better ? "" : " (the default: none better yet)");
    char budget[32] = "";
    if (budget_s > 0) snprintf(budget, sizeof budget, " / %g", budget_s);
    fprintf(stderr, "\r  profiling: trial %d at %g W | %.1f%s s simulated | best so far %s\033[K",
            jc_profiler_trial_count(p) + 1, next->cap_w, elapsed_s, budget, best);
    fflush(stderr);
}

/* The trial's stop reason for the table: "" while it is still measuring. */
static const char *stop_text(jc_profiler_stop_reason r) {
    return r == JC_PROFILER_STOP_NONE ? "" : jc_profiler_stop_reason_name(r);
}

int jc_cmd_profile(int argc, char **argv) {
    const char *sweep_path = NULL, *plan_text = NULL, *caps_text = NULL;
    int json = 0, window_before = 0;
    jc_profiler_config cfg;
    jc_profiler_config_init(&cfg);
    jc_sim_options so;
    jc_sim_options_init(&so);
    int have_settle_override = 0;
    double profiler_settle = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage_text, stdout);
            return JC_EXIT_OK;
        }
        if (!strcmp(a, "--json")) {
            json = 1;
            continue;
        }
        if (!strcmp(a, "--plan-window-from-cap-change")) {
            window_before = 1;
            continue;
        }
        /* Options with a value: "--opt VALUE" or "--opt=VALUE". */
        static const char *const with_value[] = {"--simulate",   "--objective",      "--max-slowdown",
                                                 "--eta",        "--step-seconds",   "--noise",
                                                 "--seed",       "--counter-period", "--settle-seconds",
                                                 "--caps",       "--time-budget",    "--precision",
                                                 "--profiler-settle", "--plan",      NULL};
        const char *val = NULL, *name = NULL;
        char namebuf[64];
        for (int k = 0; with_value[k]; k++) {
            size_t l = strlen(with_value[k]);
            if (!strncmp(a, with_value[k], l) && (a[l] == '\0' || a[l] == '=')) {
                name = with_value[k];
                if (a[l] == '=') val = a + l + 1;
                else if (i + 1 < argc) val = argv[++i];
                else return jc_cli_usage_err("profile", "%s needs a value", name);
                break;
            }
        }
        if (!name) {
            if (a[0] == '-') return jc_cli_usage_err("profile", "unknown option '%s'", a);
            return jc_cli_usage_err("profile", "unexpected argument '%s'", a);
        }
        snprintf(namebuf, sizeof namebuf, "%s", name);
        if (!strcmp(name, "--simulate")) sweep_path = val;
        else if (!strcmp(name, "--plan")) plan_text = val;
        else if (!strcmp(name, "--caps")) caps_text = val;
        else if (!strcmp(name, "--objective")) {
            if (jc_objective_parse(val, &cfg.objective) != JC_OK)
                return jc_cli_usage_err("profile", "%s", jc_last_detail());
        } else if (!strcmp(name, "--max-slowdown")) {
            if (!parse_num(namebuf, val, 1e-6, 10, &cfg.max_slowdown)) return JC_EXIT_USAGE;
        } else if (!strcmp(name, "--eta")) {
            if (!parse_num(namebuf, val, 0, 1, &cfg.eta)) return JC_EXIT_USAGE;
        } else if (!strcmp(name, "--step-seconds")) {
            if (!parse_num(namebuf, val, 1e-6, 3600, &so.step_s)) return JC_EXIT_USAGE;
        } else if (!strcmp(name, "--noise")) {
            if (!parse_num(namebuf, val, 0, 0.49, &so.noise)) return JC_EXIT_USAGE;
        } else if (!strcmp(name, "--seed")) {
            char *end = NULL;
            errno = 0;
            unsigned long long s = strtoull(val, &end, 10);
            if (end == val || *end || errno || val[0] == '-')
                return jc_cli_usage_err("profile", "--seed: '%s' is not a whole number >= 0", val);
            so.seed = (uint64_t)s;
        } else if (!strcmp(name, "--counter-period")) {
            if (!parse_num(namebuf, val, 0, 60, &so.counter_period_s)) return JC_EXIT_USAGE;
        } else if (!strcmp(name, "--settle-seconds")) {
            if (!parse_num(namebuf, val, 0, 600, &so.settle_s)) return JC_EXIT_USAGE;
        } else if (!strcmp(name, "--time-budget")) {
            if (!parse_num(namebuf, val, 0.001, 1e6, &cfg.time_budget_s)) return JC_EXIT_USAGE;
        } else if (!strcmp(name, "--precision")) {
            if (!parse_num(namebuf, val, 1e-4, 0.5, &cfg.precision)) return JC_EXIT_USAGE;
        } else if (!strcmp(name, "--profiler-settle")) {
            if (!parse_num(namebuf, val, 0, 600, &profiler_settle)) return JC_EXIT_USAGE;
            have_settle_override = 1;
        }
    }
    if (!sweep_path)
        return jc_cli_usage_err("profile", "profiling a real job is done through the Python API "
                                "(joulecap.power_cap_profiler); this command needs --simulate SWEEP.csv");
    double caps[JC_PROFILER_MAX_CAPS];
    size_t ncaps = 0;
    if (caps_text && !parse_caps(caps_text, caps, &ncaps)) return JC_EXIT_USAGE;
    plan_entry plan[MAX_PLAN];
    int nplan = 0;
    if (plan_text && !parse_plan(plan_text, plan, &nplan)) return JC_EXIT_USAGE;
    if (window_before && plan_text)
        for (int i = 0; i < nplan; i++)
            if (plan[i].warmup)
                return jc_cli_usage_err("profile", "--plan-window-from-cap-change needs WARMUP 0 in every entry");

    jc_sweep *sw = NULL;
    jc_status st = jc_sweep_load(sweep_path, &sw);
    if (st != JC_OK) {
        jc_cli_err("%s", jc_last_detail());
        return JC_EXIT_USAGE;
    }
    double mn, mx, df;
    jc_sweep_limits(sw, &mn, &mx, &df);
    cfg.min_limit_w = mn;
    cfg.max_limit_w = mx;
    cfg.default_limit_w = df;
    cfg.counter_period_s = so.counter_period_s;
    if (have_settle_override) cfg.settle_s = profiler_settle;
    cfg.caps_w = ncaps ? caps : NULL;
    cfg.caps_count = ncaps;

    if (plan_text) {
        int rc = run_plan(sw, &so, plan, nplan, window_before, json);
        jc_sweep_free(sw);
        return rc;
    }

    jc_profiler *p = NULL;
    st = jc_profiler_new(&cfg, &p);
    if (st != JC_OK) {
        jc_cli_err("%s", jc_last_detail());
        jc_sweep_free(sw);
        return JC_EXIT_USAGE;
    }
    jc_simgpu *g = NULL;
    st = jc_simgpu_new(sw, &so, &g);
    if (st != JC_OK) {
        jc_cli_err("%s", jc_last_detail());
        jc_profiler_free(p);
        jc_sweep_free(sw);
        return JC_EXIT_USAGE;
    }
    st = jc_profiler_simulate(p, g, !json && isatty(STDERR_FILENO) ? progress : NULL, &cfg.time_budget_s);
    if (st != JC_OK) {
        jc_cli_err("simulation failed: %s", jc_last_detail());
        jc_simgpu_free(g);
        jc_profiler_free(p);
        jc_sweep_free(sw);
        return JC_EXIT_FAILURE;
    }
    jc_profiler_result r;
    jc_profiler_result_get(p, &r);
    double best_cap, regret;
    truth(sw, &cfg, r.cap_w, &best_cap, &regret);
    int nt = jc_profiler_trial_count(p);

    if (json) {
        fputs("{\"sweep\":", stdout);
        jc_json_str(stdout, sweep_path);
        fputs(",\"objective\":", stdout);
        jc_json_str(stdout, jc_objective_name(cfg.objective));
        fputs(",\"cap_w\":", stdout);
        jc_json_num(stdout, r.cap_w);
        printf(",\"cap_measured\":%s,\"binding\":%s", r.cap_measured ? "true" : "false",
               r.binding ? "true" : "false");
        fputs(",\"time_per_step_s\":", stdout);
        jc_json_num(stdout, r.time_per_step_s);
        fputs(",\"avg_power_w\":", stdout);
        jc_json_num(stdout, r.avg_power_w);
        fputs(",\"energy_per_step_j\":", stdout);
        jc_json_num(stdout, r.energy_per_step_j);
        fputs(",\"objective_value\":", stdout);
        jc_json_num(stdout, r.objective_value);
        fputs(",\"energy_saving\":", stdout);
        jc_json_num(stdout, r.energy_saving);
        fputs(",\"slowdown\":", stdout);
        jc_json_num(stdout, r.slowdown);
        fputs(",\"energy_saving_ci\":", stdout);
        jc_json_num(stdout, r.energy_saving_ci);
        fputs(",\"slowdown_ci\":", stdout);
        jc_json_num(stdout, r.slowdown_ci);
        printf(",\"measurably_better\":%s", r.measurably_better ? "true" : "false");
        fputs(",\"candidate\":{\"cap_w\":", stdout);
        jc_json_num(stdout, r.candidate_cap_w);
        fputs(",\"gain\":", stdout);
        jc_json_num(stdout, r.candidate_gain);
        fputs(",\"gain_ci\":", stdout);
        jc_json_num(stdout, r.candidate_gain_ci);
        fputs("}", stdout);
        fputs(",\"reference_cap_w\":", stdout);
        jc_json_num(stdout, r.reference_cap_w);
        fputs(",\"profile_seconds\":", stdout);
        jc_json_num(stdout, r.profile_seconds);
        printf(",\"total_steps\":%d", r.total_steps);
        fputs(",\"limits\":{\"min_w\":", stdout);
        jc_json_num(stdout, mn);
        fputs(",\"max_w\":", stdout);
        jc_json_num(stdout, mx);
        fputs(",\"default_w\":", stdout);
        jc_json_num(stdout, df);
        fputs("},\"reason\":", stdout);
        jc_json_str(stdout, r.reason);
        fputs(",\"truth\":{\"best_cap_w\":", stdout);
        jc_json_num(stdout, best_cap);
        fputs(",\"regret\":", stdout);
        jc_json_num(stdout, regret);
        fputs("},\"trials\":[", stdout);
        for (int i = 0; i < nt; i++) {
            jc_profiler_trial tr;
            jc_profiler_trial_get(p, i, &tr);
            printf("%s{\"cap_w\":", i ? "," : "");
            jc_json_num(stdout, tr.cap_w);
            printf(",\"steps\":%d,\"dropped_steps\":%d,\"start_s\":", tr.steps, tr.dropped_steps);
            jc_json_num(stdout, tr.start_s);
            fputs(",\"seconds\":", stdout);
            jc_json_num(stdout, tr.seconds);
            fputs(",\"energy_j\":", stdout);
            jc_json_num(stdout, tr.energy_j);
            fputs(",\"time_per_step_s\":", stdout);
            jc_json_num(stdout, tr.time_per_step_s);
            fputs(",\"avg_power_w\":", stdout);
            jc_json_num(stdout, tr.avg_power_w);
            fputs(",\"objective\":", stdout);
            jc_json_num(stdout, tr.objective);
            fputs(",\"rel_se_objective\":", stdout);
            jc_json_num(stdout, tr.rel_se_objective);
            fputs(",\"stop\":", stdout);
            jc_json_str(stdout, stop_text(tr.stop_reason));
            printf(",\"phase\":%d", (int)tr.phase);
            fputs("}", stdout);
        }
        fputs("]}\n", stdout);
    } else {
        printf("sweep %s: limits %g-%g W, default %g W; objective %s\n", sweep_path, mn, mx, df,
               jc_objective_name(cfg.objective));
        printf("%9s %6s %5s %8s %10s %10s %9s %12s %7s  %s\n", "cap_w", "steps", "drop", "seconds", "energy_j",
               "t_step_s", "power_w", "objective", "rse", "stop");
        for (int i = 0; i < nt; i++) {
            jc_profiler_trial tr;
            jc_profiler_trial_get(p, i, &tr);
            printf("%9.1f %6d %5d %8.3f %10.2f %10.5f %9.2f %12.5g %6.2f%%  %s\n", tr.cap_w, tr.steps,
                   tr.dropped_steps, tr.seconds, tr.energy_j, tr.time_per_step_s, tr.avg_power_w, tr.objective,
                   100 * tr.rel_se_objective, stop_text(tr.stop_reason));
        }
        printf("recommended cap: %g W (%s)%s%s; profiling took %.1f simulated seconds\n", r.cap_w,
               r.cap_measured ? "measured" : "interpolated", r.measurably_better ? "" : ", no cap measurably better",
               r.binding ? "" : "; caps do not bind", r.profile_seconds);
        if (r.measurably_better)
            printf("vs %g W: energy per step %+.1f%% +/- %.1f%%, time per step %+.1f%% +/- %.1f%% (90%% confidence)\n",
                   r.reference_cap_w, -100 * r.energy_saving, 100 * r.energy_saving_ci, 100 * r.slowdown,
                   100 * r.slowdown_ci);
        printf("%s\n", r.reason);
        if (isfinite(best_cap))
            printf("sweep's own optimum: %g W; regret of the recommendation: %.2f%%\n", best_cap, 100 * regret);
    }
    jc_simgpu_free(g);
    jc_profiler_free(p);
    jc_sweep_free(sw);
    return JC_EXIT_OK;
}
