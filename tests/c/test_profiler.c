/* The power-cap profiler: its decisions on simulated sweeps with known optima, the objectives, cap lists,
 * non-binding caps, configuration errors, the state machine's call order, sweep parsing and the
 * `joulecap profile --simulate` command.  Behaviour, not timings: the simulator runs on a virtual clock. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jc_test.h"
#include "joulecap_sim.h"
#include "joulecap.h"

static const char *sweep_path(const char *name) {
    static char buf[4][1024];
    static int k;
    const char *root = getenv("JC_TEST_DATA");
    char *b = buf[k++ % 4];
    snprintf(b, sizeof buf[0], "%s/sweeps/%s", root ? root : "tests", name);
    return b;
}

typedef struct run {
    jc_profiler_result r;
    jc_profiler_trial trials[128];
    int ntrials;
    double min_w, max_w, def_w;
    double regret; /* of r.cap_w under the run's objective, against the sweep's own optimum (1 W grid) */
    double best_cap;
} run;

static double objective_of(jc_objective o, double t, double p, double max_w, double eta) {
    switch (o) {
    case JC_OBJECTIVE_ED2P: return p * t * t * t;
    case JC_OBJECTIVE_EDP: return p * t * t;
    case JC_OBJECTIVE_TIME: return t;
    case JC_OBJECTIVE_ZEUS: return eta * p * t + (1 - eta) * max_w * t;
    default: return p * t;
    }
}

/* Runs the profiler on a sweep with the simulator's defaults (0.05 s steps, 2% noise, 0.1 s counter, 0.3 s
 * settling) and the given seed. */
static void simulate(const char *name, jc_objective obj, uint64_t seed, const double *caps, size_t ncaps, run *out) {
    memset(out, 0, sizeof *out);
    jc_sweep *sw = NULL;
    ASSERT_OK(jc_sweep_load(sweep_path(name), &sw));
    jc_sweep_limits(sw, &out->min_w, &out->max_w, &out->def_w);
    jc_profiler_config cfg;
    jc_profiler_config_init(&cfg);
    cfg.min_limit_w = out->min_w;
    cfg.max_limit_w = out->max_w;
    cfg.default_limit_w = out->def_w;
    cfg.objective = obj;
    cfg.caps_w = caps;
    cfg.caps_count = ncaps;
    jc_profiler *p = NULL;
    ASSERT_OK(jc_profiler_new(&cfg, &p));
    jc_sim_options so;
    jc_sim_options_init(&so);
    so.seed = seed;
    jc_simgpu *g = NULL;
    ASSERT_OK(jc_simgpu_new(sw, &so, &g));
    ASSERT_OK(jc_profiler_run_simulated(p, g));
    ASSERT_OK(jc_profiler_result_get(p, &out->r));
    out->ntrials = jc_profiler_trial_count(p);
    for (int i = 0; i < out->ntrials && i < 128; i++) ASSERT_OK(jc_profiler_trial_get(p, i, &out->trials[i]));
    double bv;
    ASSERT_OK(jc_sweep_best_cap(sw, obj, cfg.max_slowdown, cfg.eta, 1.0, &out->best_cap, &bv));
    double t, pw;
    jc_sweep_eval(sw, out->r.cap_w, &t, &pw);
    out->regret = objective_of(obj, t, pw, out->max_w, cfg.eta) / bv - 1;
    jc_simgpu_free(g);
    jc_profiler_free(p);
    jc_sweep_free(sw);
    ASSERT_TRUE(out->r.done);
    ASSERT_TRUE(isfinite(out->r.cap_w));
}

TEST(knee_ed2p_finds_the_knee) {
    /* Time flat above 175 W and rising below it; ED2P is lowest at 175 W (within 1% over 173-178 W). */
    for (uint64_t seed = 1; seed <= 3; seed++) {
        run r;
        simulate("knee.csv", JC_OBJECTIVE_ED2P, seed, NULL, 0, &r);
        ASSERT_NEAR(r.r.cap_w, 175, 5);
        ASSERT_TRUE(r.regret < 0.02);
        ASSERT_TRUE(r.r.profile_seconds <= 20.0 + 1e-9);
        ASSERT_TRUE(r.r.binding);
        ASSERT_TRUE(r.r.energy_saving > 0.1); /* about 27% less energy per step than at 250 W */
    }
}

TEST(flat_optimum_any_flat_cap_is_fine) {
    /* ED2P within 0.3% over 150-200 W, clearly worse outside. */
    for (uint64_t seed = 1; seed <= 3; seed++) {
        run r;
        simulate("flat.csv", JC_OBJECTIVE_ED2P, seed, NULL, 0, &r);
        ASSERT_TRUE(r.r.cap_w >= 145 && r.r.cap_w <= 205);
        ASSERT_TRUE(r.regret < 0.02);
    }
}

TEST(optimum_at_the_bottom_and_at_the_top) {
    for (uint64_t seed = 1; seed <= 2; seed++) {
        run r;
        simulate("bottom.csv", JC_OBJECTIVE_ED2P, seed, NULL, 0, &r); /* time flat, power follows the cap */
        ASSERT_TRUE(r.r.cap_w <= 105);
        simulate("top.csv", JC_OBJECTIVE_ED2P, seed, NULL, 0, &r); /* time ~ 1/cap: every watt helps */
        ASSERT_TRUE(r.r.cap_w >= 245);
        ASSERT_NEAR(r.r.energy_saving, 0, 0.03);
    }
}

TEST(knee_between_coarse_caps_and_sweep_limits) {
    /* H100-like limits from the sweep's own columns (200-700 W); the optimum (430 W) is not a coarse cap. */
    for (uint64_t seed = 1; seed <= 3; seed++) {
        run r;
        simulate("h100_limits.csv", JC_OBJECTIVE_ED2P, seed, NULL, 0, &r);
        ASSERT_NEAR(r.min_w, 200, 1e-9);
        ASSERT_NEAR(r.max_w, 700, 1e-9);
        ASSERT_NEAR(r.def_w, 700, 1e-9);
        ASSERT_TRUE(r.r.cap_w >= 400 && r.r.cap_w <= 460);
        ASSERT_TRUE(r.regret < 0.035);
    }
}

TEST(objectives_pick_differently) {
    /* On knee.csv: energy is lowest at 125 W, EDP at 150 W, ED2P at 175 W, time at 200 W and above; with a 5%
     * slowdown allowed, energy is lowest at 166 W (where time is 5% above the default's). */
    run e, d, t, s, z;
    simulate("knee.csv", JC_OBJECTIVE_ENERGY, 1, NULL, 0, &e);
    simulate("knee.csv", JC_OBJECTIVE_ED2P, 1, NULL, 0, &d);
    simulate("knee.csv", JC_OBJECTIVE_TIME, 1, NULL, 0, &t);
    simulate("knee.csv", JC_OBJECTIVE_ENERGY_SLOWDOWN, 1, NULL, 0, &s);
    simulate("knee.csv", JC_OBJECTIVE_ZEUS, 1, NULL, 0, &z);
    ASSERT_NEAR(e.r.cap_w, 125, 8);
    ASSERT_NEAR(d.r.cap_w, 175, 5);
    ASSERT_TRUE(t.r.cap_w >= 190);
    ASSERT_TRUE(s.r.cap_w >= 155 && s.r.cap_w <= 180);
    ASSERT_TRUE(s.r.slowdown <= 0.05 + 1e-9); /* as predicted by the model */
    ASSERT_TRUE(z.r.cap_w >= 150 && z.r.cap_w <= 200);
    ASSERT_TRUE(e.r.cap_w < s.r.cap_w && s.r.cap_w <= d.r.cap_w + 5 && d.r.cap_w < t.r.cap_w);
    ASSERT_EQ(e.r.objective, JC_OBJECTIVE_ENERGY);
    ASSERT_CONTAINS(d.r.reason, "ED2P");
    run edp;
    simulate("knee.csv", JC_OBJECTIVE_EDP, 1, NULL, 0, &edp);
    ASSERT_TRUE(edp.r.cap_w >= 140 && edp.r.cap_w <= 180);
}

TEST(cap_list_is_honoured) {
    const double caps[] = {150, 250, 200, 125};
    run r;
    simulate("knee.csv", JC_OBJECTIVE_ED2P, 1, caps, 4, &r);
    ASSERT_TRUE(r.ntrials >= 4);
    int seen[4] = {0};
    for (int i = 0; i < r.ntrials; i++) {
        int found = 0;
        for (int k = 0; k < 4; k++)
            if (r.trials[i].cap_w == caps[k]) seen[k] = found = 1;
        ASSERT_TRUE(found);
    }
    for (int k = 0; k < 4; k++) ASSERT_TRUE(seen[k]);
    ASSERT_TRUE(r.trials[0].cap_w == 250); /* highest first */
    ASSERT_TRUE(r.r.cap_w == 150 || r.r.cap_w == 200); /* ED2P 191.7 and 192, vs 230 and 234 */
    ASSERT_TRUE(r.r.cap_measured);
}

TEST(recommendation_stays_within_limits) {
    static const char *const sweeps[] = {"knee.csv", "flat.csv", "bottom.csv", "top.csv", "nonbinding.csv",
                                         "h100_limits.csv"};
    for (size_t k = 0; k < sizeof sweeps / sizeof sweeps[0]; k++) {
        for (int o = 0; o <= JC_OBJECTIVE_ZEUS; o++) {
            run r;
            simulate(sweeps[k], (jc_objective)o, 7, NULL, 0, &r);
            if (!(r.r.cap_w >= r.min_w && r.r.cap_w <= r.max_w))
                JC_FAILF("%s %s: cap %g outside [%g, %g]", sweeps[k], jc_objective_name((jc_objective)o), r.r.cap_w,
                         r.min_w, r.max_w);
            for (int i = 0; i < r.ntrials; i++) ASSERT_TRUE(r.trials[i].cap_w >= r.min_w && r.trials[i].cap_w <= r.def_w);
            ASSERT_TRUE(r.r.profile_seconds <= 20.0 + 1e-9);
            ASSERT_TRUE(r.r.trial_count == r.ntrials);
            ASSERT_TRUE(strlen(r.r.reason) > 20);
        }
    }
}

TEST(caps_that_do_not_bind_are_reported) {
    run r;
    simulate("nonbinding.csv", JC_OBJECTIVE_ED2P, 1, NULL, 0, &r);
    ASSERT_EQ(r.r.binding, 0);
    ASSERT_CONTAINS(r.r.reason, "the cap does not bind at this load");
    ASSERT_TRUE(r.regret < 0.02);
    simulate("knee.csv", JC_OBJECTIVE_ED2P, 1, NULL, 0, &r);
    ASSERT_EQ(r.r.binding, 1);
    ASSERT_TRUE(strstr(r.r.reason, "does not bind") == NULL);
}

/* Runs constant.csv (time and power the same at every cap, 300 W under caps of 400-700 W: the issue 15 case of a
 * job whose speed and power do not depend on the cap) with step noise `noise`. */
static void simulate_constant(uint64_t seed, double noise, jc_profiler_result *out) {
    jc_sweep *sw = NULL;
    ASSERT_OK(jc_sweep_load(sweep_path("constant.csv"), &sw));
    jc_profiler_config cfg;
    jc_profiler_config_init(&cfg);
    jc_sweep_limits(sw, &cfg.min_limit_w, &cfg.max_limit_w, &cfg.default_limit_w);
    jc_profiler *p = NULL;
    ASSERT_OK(jc_profiler_new(&cfg, &p));
    jc_sim_options so;
    jc_sim_options_init(&so);
    so.seed = seed;
    so.noise = noise;
    jc_simgpu *g = NULL;
    ASSERT_OK(jc_simgpu_new(sw, &so, &g));
    ASSERT_OK(jc_profiler_run_simulated(p, g));
    ASSERT_OK(jc_profiler_result_get(p, out));
    jc_simgpu_free(g);
    jc_profiler_free(p);
    jc_sweep_free(sw);
}

TEST(no_cap_measurably_better_keeps_the_default) {
    /* Seeds whose best cap is within the noise (the others, a quarter of them, see a cap beat the default by
     * chance: the best of seven caps that are all alike is favoured by its noise; docs/profiler.md). */
    static const uint64_t seeds[] = {1, 2, 3};
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        jc_profiler_result r;
        simulate_constant(seeds[i], 0.1, &r); /* 10% noise per step, as a CPU-bound job on a busy host */
        ASSERT_EQ(r.measurably_better, 0);
        ASSERT_NEAR(r.cap_w, 700, 1e-9);
        ASSERT_EQ(r.binding, 0);
        ASSERT_CONTAINS(r.reason, "No cap measurably better than 700 W (the default limit); the cap does not bind at "
                                  "this load");
        ASSERT_TRUE(r.energy_saving == 0 && r.slowdown == 0 && r.energy_saving_ci == 0 && r.slowdown_ci == 0);
        /* The best cap found and how far it was from telling anything. */
        ASSERT_TRUE(isfinite(r.candidate_cap_w) && r.candidate_cap_w >= 400 && r.candidate_cap_w <= 700);
        ASSERT_TRUE(r.candidate_gain <= r.candidate_gain_ci);
    }
    /* Over 20 seeds with 2% noise most runs keep the default; before issue 15 every run named a cap. */
    int kept = 0;
    for (uint64_t seed = 1; seed <= 20; seed++) {
        jc_profiler_result r;
        simulate_constant(seed, 0.02, &r);
        kept += !r.measurably_better;
        if (r.measurably_better) ASSERT_TRUE(r.candidate_gain > r.candidate_gain_ci && r.cap_w == r.candidate_cap_w);
    }
    if (kept < 14) JC_FAILF("the default was kept in %d of 20 runs of a sweep where the cap changes nothing", kept);
}

TEST(savings_carry_their_uncertainty) {
    /* knee.csv: at 175 W the energy per step is 1.02 x 168 / 230 - 1 = -25.5% and the time +2% vs 250 W. */
    for (uint64_t seed = 1; seed <= 3; seed++) {
        run r;
        simulate("knee.csv", JC_OBJECTIVE_ED2P, seed, NULL, 0, &r);
        ASSERT_EQ(r.r.measurably_better, 1);
        ASSERT_NEAR(r.r.candidate_cap_w, r.r.cap_w, 1e-9);
        ASSERT_TRUE(r.r.candidate_gain > r.r.candidate_gain_ci && r.r.candidate_gain_ci > 0);
        ASSERT_TRUE(r.r.energy_saving_ci > 0.002 && r.r.energy_saving_ci < 0.03);
        ASSERT_TRUE(r.r.slowdown_ci > 0.002 && r.r.slowdown_ci < 0.03);
        double t, pw, tref, pref;
        jc_sweep *sw = NULL;
        ASSERT_OK(jc_sweep_load(sweep_path("knee.csv"), &sw));
        jc_sweep_eval(sw, r.r.cap_w, &t, &pw);
        jc_sweep_eval(sw, 250, &tref, &pref);
        jc_sweep_free(sw);
        double true_saving = 1 - t * pw / (tref * pref), true_slowdown = t / tref - 1;
        /* 90% intervals: allow twice the half-width so that three seeds cannot fail by chance. */
        ASSERT_TRUE(fabs(r.r.energy_saving - true_saving) < 2 * r.r.energy_saving_ci);
        ASSERT_TRUE(fabs(r.r.slowdown - true_slowdown) < 2 * r.r.slowdown_ci);
        ASSERT_CONTAINS(r.r.reason, "(90% confidence)");
        ASSERT_CONTAINS(r.r.reason, "+/-");
    }
}

static jc_profiler_config good_config(void) {
    jc_profiler_config c;
    jc_profiler_config_init(&c);
    c.min_limit_w = 100;
    c.max_limit_w = 300;
    c.default_limit_w = 300;
    return c;
}

#define EXPECT_BAD(field_expr, word)                                                                       \
    do {                                                                                                   \
        jc_profiler_config c_ = good_config();                                                             \
        jc_profiler *p_ = (jc_profiler *)1;                                                                \
        field_expr;                                                                                        \
        ASSERT_STATUS(jc_profiler_new(&c_, &p_), JC_ERR_INVALID_ARGUMENT);                                 \
        ASSERT_TRUE(p_ == NULL);                                                                           \
        ASSERT_CONTAINS(jc_last_detail(), word);                                                           \
    } while (0)

TEST(bad_config_is_refused_with_a_reason) {
    const double outside[] = {250, 320};
    EXPECT_BAD(c_.min_limit_w = NAN, "must be given");
    EXPECT_BAD(c_.min_limit_w = 300, "below max_limit_w");
    EXPECT_BAD(c_.min_limit_w = -5, "min_limit_w");
    EXPECT_BAD(c_.default_limit_w = 350, "outside");
    EXPECT_BAD(c_.objective = (jc_objective)42, "objective");
    EXPECT_BAD(c_.max_slowdown = 0, "max_slowdown");
    EXPECT_BAD(c_.eta = 1.5, "eta");
    EXPECT_BAD((c_.caps_w = outside, c_.caps_count = 2), "320");
    EXPECT_BAD((c_.caps_w = NULL, c_.caps_count = 3), "caps_w is NULL");
    EXPECT_BAD(c_.precision = 0, "precision");
    EXPECT_BAD(c_.settle_s = -1, "settle_s");
    EXPECT_BAD(c_.counter_period_s = -0.1, "counter_period_s");
    EXPECT_BAD(c_.time_budget_s = -1, "time_budget_s");
    EXPECT_BAD(c_.max_trial_s = 0, "max_trial_s");
    jc_profiler_config c = good_config();
    jc_profiler *p = NULL;
    ASSERT_OK(jc_profiler_new(&c, &p));
    jc_profiler_free(p);
    jc_objective o;
    ASSERT_OK(jc_objective_parse("ED2P", &o));
    ASSERT_EQ(o, JC_OBJECTIVE_ED2P);
    ASSERT_OK(jc_objective_parse("energy-slowdown", &o));
    ASSERT_EQ(o, JC_OBJECTIVE_ENERGY_SLOWDOWN);
    ASSERT_STATUS(jc_objective_parse("fast", &o), JC_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(jc_last_detail(), "ed2p");
    ASSERT_STR_EQ(jc_objective_name(JC_OBJECTIVE_ZEUS), "zeus");
    ASSERT_TRUE(jc_objective_name((jc_objective)99) == NULL);
}

TEST(state_machine_call_order) {
    jc_profiler_config c = good_config();
    jc_profiler *p = NULL;
    ASSERT_OK(jc_profiler_new(&c, &p));
    jc_profiler_action a;
    ASSERT_OK(jc_profiler_next_action(p, &a));
    ASSERT_EQ(a.kind, JC_PROFILER_SET_CAP);
    ASSERT_NEAR(a.cap_w, 300, 1e-9); /* starts at the default limit */
    ASSERT_OK(jc_profiler_next_action(p, &a)); /* asking again changes nothing */
    ASSERT_EQ(a.kind, JC_PROFILER_SET_CAP);
    ASSERT_STATUS(jc_profiler_observe_step(p, 1.0, 10.0), JC_ERR_STATE);
    jc_profiler_result r;
    ASSERT_OK(jc_profiler_result_get(p, &r));
    ASSERT_EQ(r.done, 0);
    ASSERT_TRUE(isnan(r.cap_w));
    ASSERT_OK(jc_profiler_cap_applied(p, 300, 100.0, 5000.0));
    ASSERT_STATUS(jc_profiler_cap_applied(p, 300, 100.0, 5000.0), JC_ERR_STATE);
    ASSERT_OK(jc_profiler_next_action(p, &a));
    ASSERT_EQ(a.kind, JC_PROFILER_RUN);
    ASSERT_STATUS(jc_profiler_observe_step(p, 99.0, 5010.0), JC_ERR_INVALID_ARGUMENT);  /* time back */
    ASSERT_STATUS(jc_profiler_observe_step(p, 100.1, 4990.0), JC_ERR_INVALID_ARGUMENT); /* energy back */
    ASSERT_STATUS(jc_profiler_observe_step(p, NAN, 5010.0), JC_ERR_INVALID_ARGUMENT);
    /* Exact energies every 50 ms at 250 W: the first trial settles, measures, then asks for the next cap. */
    double t = 100.0, e = 5000.0;
    int steps = 0;
    for (;;) {
        ASSERT_OK(jc_profiler_next_action(p, &a));
        if (a.kind != JC_PROFILER_RUN) break;
        t += 0.05;
        e += 250 * 0.05;
        ASSERT_OK(jc_profiler_observe_step(p, t, e));
        ASSERT_TRUE(++steps < 10000);
    }
    ASSERT_EQ(a.kind, JC_PROFILER_SET_CAP);
    ASSERT_TRUE(a.cap_w < 300 && a.cap_w >= 100);
    jc_profiler_trial tr;
    ASSERT_OK(jc_profiler_trial_get(p, 0, &tr));
    ASSERT_TRUE(tr.dropped_steps >= 6); /* 0.3 s of settling at 50 ms per step */
    ASSERT_NEAR(tr.avg_power_w, 250, 2.5);
    ASSERT_NEAR(tr.time_per_step_s, 0.05, 1e-6);
    ASSERT_STATUS(jc_profiler_trial_get(p, 5, &tr), JC_ERR_NOT_FOUND);
    double tp, pp;
    ASSERT_OK(jc_profiler_predict(p, 200, &tp, &pp));
    ASSERT_NEAR(pp, 250, 2.5);
    /* The caller stops early: the recommendation comes from what was measured. */
    ASSERT_OK(jc_profiler_finish(p));
    ASSERT_OK(jc_profiler_next_action(p, &a));
    ASSERT_EQ(a.kind, JC_PROFILER_DONE);
    ASSERT_NEAR(a.cap_w, 300, 1e-9);
    ASSERT_OK(jc_profiler_result_get(p, &r));
    ASSERT_EQ(r.done, 1);
    ASSERT_EQ(r.trial_count, 1);
    ASSERT_STATUS(jc_profiler_observe_step(p, t + 1, e + 1), JC_ERR_STATE);
    jc_profiler_free(p);

    /* finish() before anything was measured says so. */
    ASSERT_OK(jc_profiler_new(&c, &p));
    ASSERT_STATUS(jc_profiler_finish(p), JC_ERR_STATE);
    jc_profiler_free(p);
    jc_profiler_free(NULL);
}

TEST(online_driver_with_counter_steps) {
    /* The loop an online optimizer runs, one call per training step, against the simulated GPU: every step
     * is a real step, the profiler ends with DONE and the cap it recommends is then kept. */
    jc_sweep *sw = NULL;
    ASSERT_OK(jc_sweep_load(sweep_path("knee.csv"), &sw));
    jc_profiler_config c;
    jc_profiler_config_init(&c);
    jc_sweep_limits(sw, &c.min_limit_w, &c.max_limit_w, &c.default_limit_w);
    jc_profiler *p = NULL;
    ASSERT_OK(jc_profiler_new(&c, &p));
    jc_sim_options so;
    jc_sim_options_init(&so);
    so.seed = 11;
    jc_simgpu *g = NULL;
    ASSERT_OK(jc_simgpu_new(sw, &so, &g));
    double cap_in_force = 250;
    int done_at = -1;
    for (int step = 0; step < 2000; step++) {
        jc_profiler_action a;
        ASSERT_OK(jc_profiler_next_action(p, &a));
        if (a.kind == JC_PROFILER_SET_CAP) {
            ASSERT_OK(jc_simgpu_set_cap(g, a.cap_w));
            cap_in_force = a.cap_w;
            ASSERT_OK(jc_profiler_cap_applied(p, a.cap_w, jc_simgpu_now(g), jc_simgpu_counter(g)));
        } else if (a.kind == JC_PROFILER_DONE && done_at < 0) {
            done_at = step;
            ASSERT_OK(jc_simgpu_set_cap(g, a.cap_w));
            cap_in_force = a.cap_w;
        }
        double t, e;
        jc_simgpu_step(g, &t, &e); /* the training step itself */
        if (a.kind != JC_PROFILER_DONE) ASSERT_OK(jc_profiler_observe_step(p, t, e));
    }
    ASSERT_TRUE(done_at > 0);
    ASSERT_NEAR(cap_in_force, 175, 5);
    ASSERT_STATUS(jc_simgpu_set_cap(g, 90), JC_ERR_INVALID_ARGUMENT); /* outside the sweep's range */
    jc_simgpu_free(g);
    jc_profiler_free(p);
    jc_sweep_free(sw);
}

static char *write_temp(const char *text) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/jc_sweep_XXXXXX");
    int fd = mkstemp(path);
    ASSERT_TRUE(fd >= 0);
    ASSERT_TRUE(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    return path;
}

TEST(sweep_files_are_checked) {
    jc_sweep *sw = (jc_sweep *)1;
    ASSERT_STATUS(jc_sweep_load("/nonexistent/sweep.csv", &sw), JC_ERR_NOT_FOUND);
    ASSERT_TRUE(sw == NULL);
    struct {
        const char *text, *word;
    } bad[] = {
        {"power_limit_w,time_per_step_s\n100,1\n200,1\n", "avg_power_w"},
        {"power_limit_w,time_per_step_s,avg_power_w\n100,1,90\n200,fast,180\n", "not a number"},
        {"power_limit_w,time_per_step_s,avg_power_w\n100,1,90\n", "at least 2"},
        {"power_limit_w,time_per_step_s,avg_power_w\n100,1,90\n100,1.1,91\n", "2 distinct"},
        {"power_limit_w,time_per_step_s,avg_power_w\n100,1,90\n200,-1,180\n", "positive"},
        {"power_limit_w,time_per_step_s,avg_power_w\n100,1,90\n200,1\n", "cells"},
        {"", "empty"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *path = write_temp(bad[i].text);
        ASSERT_STATUS(jc_sweep_load(path, &sw), JC_ERR_INVALID_ARGUMENT);
        ASSERT_CONTAINS(jc_last_detail(), bad[i].word);
        unlink(path);
    }
    /* Column order does not matter, extra columns are ignored, rows at one cap are averaged. */
    char *path = write_temp("note,avg_power_w,power_limit_w,time_per_step_s\nx,100,120,2\ny,200,250,1\nz,220,250,1.2\n");
    ASSERT_OK(jc_sweep_load(path, &sw));
    unlink(path);
    double mn, mx, df, t, p;
    jc_sweep_limits(sw, &mn, &mx, &df);
    ASSERT_NEAR(mn, 120, 1e-9);
    ASSERT_NEAR(mx, 250, 1e-9);
    ASSERT_NEAR(df, 250, 1e-9);
    jc_sweep_eval(sw, 250, &t, &p);
    ASSERT_NEAR(t, 1.1, 1e-12);
    ASSERT_NEAR(p, 210, 1e-12);
    jc_sweep_eval(sw, 185, &t, &p); /* halfway: linear */
    ASSERT_NEAR(t, 1.55, 1e-12);
    ASSERT_NEAR(p, 155, 1e-12);
    jc_sweep_free(sw);
}

/* --- the command line ---------------------------------------------------------------------------------- */

/* A small JSON checker: 1 when s is one valid JSON value (RFC 8259 grammar, no semantics). */
static const char *js_ws(const char *s) {
    while (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t') s++;
    return s;
}
static const char *js_value(const char *s, int depth);
static const char *js_string(const char *s) {
    if (*s != '"') return NULL;
    for (s++; *s && *s != '"'; s++) {
        if ((unsigned char)*s < 0x20) return NULL;
        if (*s == '\\') {
            s++;
            if (*s == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (!strchr("0123456789abcdefABCDEF", s[i]) || !s[i]) return NULL;
                s += 4;
            } else if (!*s || !strchr("\"\\/bfnrt", *s)) return NULL;
        }
    }
    return *s == '"' ? s + 1 : NULL;
}
static const char *js_number(const char *s) {
    char *end;
    if (*s != '-' && (*s < '0' || *s > '9')) return NULL;
    strtod(s, &end);
    return end > s ? end : NULL;
}
static const char *js_value(const char *s, int depth) {
    if (depth > 32) return NULL;
    s = js_ws(s);
    if (*s == '{' || *s == '[') {
        char close = *s == '{' ? '}' : ']';
        s = js_ws(s + 1);
        if (*s == close) return s + 1;
        for (;;) {
            if (close == '}') {
                s = js_string(js_ws(s));
                if (!s) return NULL;
                s = js_ws(s);
                if (*s++ != ':') return NULL;
            }
            s = js_value(s, depth + 1);
            if (!s) return NULL;
            s = js_ws(s);
            if (*s == ',') {
                s++;
                continue;
            }
            return *s == close ? s + 1 : NULL;
        }
    }
    if (*s == '"') return js_string(s);
    if (!strncmp(s, "true", 4)) return s + 4;
    if (!strncmp(s, "false", 5)) return s + 5;
    if (!strncmp(s, "null", 4)) return s + 4;
    return js_number(s);
}
static int json_valid(const char *s) {
    const char *e = js_value(s, 0);
    return e && *js_ws(e) == '\0';
}

/* Runs the CLI; returns its exit status and its stdout in out (NUL-terminated). */
static int run_cli(const char *args, char *out, size_t len) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' %s 2>/dev/null", getenv("JC_CLI"), args);
    FILE *f = popen(cmd, "r");
    ASSERT_TRUE(f != NULL);
    size_t n = fread(out, 1, len - 1, f);
    out[n] = '\0';
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(cli_simulate_gives_json) {
    const char *cli = getenv("JC_CLI");
    if (!cli || access(cli, X_OK) != 0) {
        fprintf(stderr, "SKIP cli_simulate_gives_json: JC_CLI is not set or not an executable (%s)\n",
                cli ? cli : "unset");
        return;
    }
    static char out[1 << 20];
    char args[1200];
    snprintf(args, sizeof args, "profile --simulate '%s' --json --seed 3", sweep_path("knee.csv"));
    ASSERT_EQ(run_cli(args, out, sizeof out), 0);
    if (!json_valid(out)) JC_FAILF("not valid JSON: %.400s", out);
    ASSERT_CONTAINS(out, "\"cap_w\":");
    ASSERT_CONTAINS(out, "\"profile_seconds\":");
    ASSERT_CONTAINS(out, "\"trials\":[{\"cap_w\":250");
    ASSERT_CONTAINS(out, "\"time_per_step_s\":");
    ASSERT_CONTAINS(out, "\"avg_power_w\":");
    ASSERT_CONTAINS(out, "\"objective\":\"ed2p\"");
    ASSERT_CONTAINS(out, "\"binding\":true");
    double cap = atof(strstr(out, "\"cap_w\":") + 8);
    ASSERT_NEAR(cap, 175, 5);
    /* Same seed, same answer. */
    static char again[1 << 20];
    ASSERT_EQ(run_cli(args, again, sizeof again), 0);
    ASSERT_STR_EQ(out, again);
    snprintf(args, sizeof args, "profile --simulate '%s' --json --objective energy --noise 0.01 --step-seconds 0.2",
             sweep_path("knee.csv"));
    ASSERT_EQ(run_cli(args, out, sizeof out), 0);
    ASSERT_TRUE(json_valid(out));
    ASSERT_CONTAINS(out, "\"objective\":\"energy\"");
    /* The text form. */
    snprintf(args, sizeof args, "profile --simulate '%s'", sweep_path("nonbinding.csv"));
    ASSERT_EQ(run_cli(args, out, sizeof out), 0);
    ASSERT_CONTAINS(out, "recommended cap");
    ASSERT_CONTAINS(out, "do not bind");
    /* Bad input: exit 2 and nothing on stdout. */
    const char *bad[] = {"profile --simulate /nonexistent.csv --json",
                         "profile --simulate KNEE --objective fastest",
                         "profile --simulate KNEE --noise -0.1",
                         "profile --simulate KNEE --max-slowdown 0",
                         "profile --simulate KNEE --bogus",
                         "profile --simulate KNEE --caps 50,200",
                         "profile --json"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char a2[1200];
        const char *k = strstr(bad[i], "KNEE");
        if (k) snprintf(a2, sizeof a2, "%.*s'%s'%s", (int)(k - bad[i]), bad[i], sweep_path("knee.csv"), k + 4);
        else snprintf(a2, sizeof a2, "%s", bad[i]);
        int rc = run_cli(a2, out, sizeof out);
        if (rc != 2) JC_FAILF("'%s': exit %d, want 2", a2, rc);
        ASSERT_STR_EQ(out, "");
    }
    char *path = write_temp("power_limit_w,time_per_step_s,avg_power_w\n100,1,90\n");
    snprintf(args, sizeof args, "profile --simulate %s --json", path);
    ASSERT_EQ(run_cli(args, out, sizeof out), 2);
    unlink(path);
}

typedef struct progress_log {
    int set_caps, done, after_done;
    double last_elapsed;
} progress_log;

static void log_progress(const jc_profiler *p, const jc_profiler_action *next, double elapsed_s, void *arg) {
    progress_log *l = arg;
    if (l->done) l->after_done++;
    if (next->kind == JC_PROFILER_SET_CAP) {
        ASSERT_EQ(jc_profiler_trial_count(p), l->set_caps);
        l->set_caps++;
    }
    if (next->kind == JC_PROFILER_DONE) l->done++;
    ASSERT_TRUE(elapsed_s >= l->last_elapsed);
    l->last_elapsed = elapsed_s;
}

/* jc_profiler_simulate reports each cap change before it is made and DONE once; trials say why they stopped
 * and why they were tried, by enums with names. */
TEST(simulate_reports_progress_and_trials_have_named_reasons) {
    jc_sweep *sw = NULL;
    ASSERT_OK(jc_sweep_load(sweep_path("knee.csv"), &sw));
    jc_profiler_config cfg;
    jc_profiler_config_init(&cfg);
    jc_sweep_limits(sw, &cfg.min_limit_w, &cfg.max_limit_w, &cfg.default_limit_w);
    jc_profiler *p = NULL;
    ASSERT_OK(jc_profiler_new(&cfg, &p));
    jc_sim_options so;
    jc_sim_options_init(&so);
    jc_simgpu *g = NULL;
    ASSERT_OK(jc_simgpu_new(sw, &so, &g));
    progress_log l = {0};
    ASSERT_OK(jc_profiler_simulate(p, g, log_progress, &l));
    ASSERT_EQ(l.done, 1);
    ASSERT_EQ(l.after_done, 0);
    ASSERT_EQ(l.set_caps, jc_profiler_trial_count(p));
    ASSERT_TRUE(l.set_caps >= 2);
    for (int i = 0; i < l.set_caps; i++) {
        jc_profiler_trial tr;
        ASSERT_OK(jc_profiler_trial_get(p, i, &tr));
        ASSERT_TRUE(tr.stop_reason >= JC_PROFILER_STOP_PRECISE && tr.stop_reason <= JC_PROFILER_STOP_BUDGET);
        ASSERT_TRUE(tr.phase >= JC_PROFILER_PHASE_COARSE && tr.phase <= JC_PROFILER_PHASE_RACE);
    }
    ASSERT_STR_EQ(jc_profiler_stop_reason_name(JC_PROFILER_STOP_NONE), "none");
    ASSERT_STR_EQ(jc_profiler_stop_reason_name(JC_PROFILER_STOP_MAX_TIME), "max-time");
    ASSERT_STR_EQ(jc_profiler_phase_name(JC_PROFILER_PHASE_RACE), "race");
    ASSERT_STR_EQ(jc_profiler_action_kind_name(JC_PROFILER_SET_CAP), "set-cap");
    ASSERT_STR_EQ(jc_profiler_phase_name((jc_profiler_phase)99), "unknown");
    ASSERT_STR_EQ(jc_cap_restore_action_name(JC_CAP_LEFT_LIVE), "left-live");
    ASSERT_STR_EQ(jc_device_kind_name(JC_DEVICE_GPU), "gpu");
    ASSERT_STATUS(jc_profiler_simulate(NULL, g, NULL, NULL), JC_ERR_INVALID_ARGUMENT);
    jc_simgpu_free(g);
    jc_profiler_free(p);
    jc_sweep_free(sw);
}

/* The names of 0.1 still compile (deprecated) and call the new functions. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
TEST(deprecated_names_still_work) {
    jc_reading r;
    jc_cap_info ci;
    jc_health_event ev;
    size_t n = 0;
    ASSERT_STATUS(jc_read_latest(NULL, 0, &r), JC_ERR_INVALID_ARGUMENT);
    ASSERT_STATUS(jc_cap_get("0", NULL, NULL), JC_ERR_INVALID_ARGUMENT);
    ASSERT_STATUS(jc_cap_session_gpu(NULL, 0, &ci), JC_ERR_INVALID_ARGUMENT);
    ASSERT_STATUS(jc_device_health(NULL, 0, &ev, 1, &n), JC_ERR_INVALID_ARGUMENT);
}
#pragma GCC diagnostic pop

/* Options structs carry their size: one not filled by its _init() is refused, naming the fix. */
TEST(options_structs_check_their_size) {
    jc_options o;
    jc_options_init(&o);
    ASSERT_EQ(o.size, sizeof o);
    o.size = 0;
    jc_context *ctx = NULL;
    ASSERT_STATUS(jc_open(&ctx, &o), JC_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(jc_last_detail(), "jc_options_init()");
    ASSERT_TRUE(ctx == NULL);
    jc_profiler_config cfg;
    jc_profiler_config_init(&cfg);
    cfg.min_limit_w = 100;
    cfg.max_limit_w = cfg.default_limit_w = 300;
    cfg.size = sizeof cfg - 8;
    jc_profiler *p = NULL;
    ASSERT_STATUS(jc_profiler_new(&cfg, &p), JC_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(jc_last_detail(), "jc_profiler_config.size");
    jc_cap_options co;
    jc_cap_options_init(&co);
    co.size = sizeof co + 8;
    char dir[256];
    ASSERT_STATUS(jc_cap_state_dir(&co, dir, sizeof dir), JC_ERR_INVALID_ARGUMENT);
    ASSERT_CONTAINS(jc_last_detail(), "another joulecap.h");
}

JC_TEST_MAIN(TEST_ENTRY(knee_ed2p_finds_the_knee), TEST_ENTRY(flat_optimum_any_flat_cap_is_fine),
             TEST_ENTRY(optimum_at_the_bottom_and_at_the_top), TEST_ENTRY(knee_between_coarse_caps_and_sweep_limits),
             TEST_ENTRY(objectives_pick_differently), TEST_ENTRY(cap_list_is_honoured),
             TEST_ENTRY(recommendation_stays_within_limits), TEST_ENTRY(caps_that_do_not_bind_are_reported),
             TEST_ENTRY(no_cap_measurably_better_keeps_the_default), TEST_ENTRY(savings_carry_their_uncertainty),
             TEST_ENTRY(bad_config_is_refused_with_a_reason), TEST_ENTRY(state_machine_call_order),
             TEST_ENTRY(online_driver_with_counter_steps), TEST_ENTRY(sweep_files_are_checked),
             TEST_ENTRY(cli_simulate_gives_json),
             TEST_ENTRY(simulate_reports_progress_and_trials_have_named_reasons),
             TEST_ENTRY(deprecated_names_still_work), TEST_ENTRY(options_structs_check_their_size))
