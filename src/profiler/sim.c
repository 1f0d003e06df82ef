/* A simulated GPU that plays back a recorded power-limit sweep on a virtual clock, and the driver loop that
 * runs the profiler against it.
 *
 * Between recorded caps, time per step and power are linear in the cap.  Times are rescaled so that a step at
 * the default limit takes step_s.  Each step's time and power get independent Gaussian noise of relative
 * standard deviation `noise`.  After a cap change the GPU behaves for settle_s as if the cap moved linearly
 * from the old value to the new one (so power, and time per step, pass through the values in between).  The
 * energy counter is read as NVML's is: it holds the energy at its last update, and updates every
 * counter_period_s at a random phase. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "profiler/profiler_internal.h"

/* ------------------------------------------------------------------------------------------------------
 * PRNG: xoshiro256** seeded with splitmix64 (public-domain algorithms by Blackman and Vigna).
 * ---------------------------------------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void jc__rng_seed(jc__rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(jc__rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double jc__rng_uniform(jc__rng *r) { return (double)(next_u64(r) >> 11) * 0x1.0p-53; }

double jc__rng_normal(jc__rng *r) {
    /* Box-Muller; one value per call keeps the stream simple. */
    double u1 = jc__rng_uniform(r), u2 = jc__rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

/* ------------------------------------------------------------------------------------------------------
 * Sweeps.
 * ---------------------------------------------------------------------------------------------------- */

struct jc_sweep {
    size_t n;
    double *cap, *t, *p;
    double min_w, max_w, def_w;
};

typedef struct {
    double cap, t, p;
} row3;

static int cmp_row(const void *a, const void *b) {
    double x = ((const row3 *)a)->cap, y = ((const row3 *)b)->cap;
    return (x > y) - (x < y);
}

jc_status jc_sweep_new(const double *cap_w, const double *time_per_step_s, const double *avg_power_w, size_t n,
                       double min_w, double max_w, double def_w, jc_sweep **out) {
    if (!out) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_sweep_new: out is NULL");
    *out = NULL;
    if (!cap_w || !time_per_step_s || !avg_power_w)
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_sweep_new: NULL array");
    row3 *rows = malloc((n ? n : 1) * sizeof *rows);
    if (!rows) return jc__fail(JC_ERR_NO_MEMORY, "sweep: out of memory");
    for (size_t i = 0; i < n; i++) {
        if (!(cap_w[i] > 0) || !(time_per_step_s[i] > 0) || !(avg_power_w[i] > 0) || !isfinite(cap_w[i]) ||
            !isfinite(time_per_step_s[i]) || !isfinite(avg_power_w[i])) {
            free(rows);
            return jc__fail(JC_ERR_INVALID_ARGUMENT,
                            "sweep row %zu: cap %g W, time %g s and power %g W must all be positive numbers", i + 1,
                            cap_w[i], time_per_step_s[i], avg_power_w[i]);
        }
        rows[i].cap = cap_w[i];
        rows[i].t = time_per_step_s[i];
        rows[i].p = avg_power_w[i];
    }
    qsort(rows, n, sizeof *rows, cmp_row);
    /* Average rows with the same cap. */
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        double st = 0, sp = 0;
        while (j < n && rows[j].cap == rows[i].cap) {
            st += rows[j].t;
            sp += rows[j].p;
            j++;
        }
        rows[m].cap = rows[i].cap;
        rows[m].t = st / (double)(j - i);
        rows[m].p = sp / (double)(j - i);
        m++;
        i = j;
    }
    if (m < 2) {
        free(rows);
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "sweep: needs at least 2 distinct power limits, got %zu", m);
    }
    if (!isfinite(min_w)) min_w = rows[0].cap;
    if (!isfinite(max_w)) max_w = rows[m - 1].cap;
    if (!isfinite(def_w)) def_w = max_w;
    if (!(min_w > 0 && min_w < max_w && def_w >= min_w && def_w <= max_w)) {
        free(rows);
        return jc__fail(JC_ERR_INVALID_ARGUMENT,
                        "sweep: limits must satisfy 0 < min < max and min <= default <= max (min %g, max %g, "
                        "default %g W)",
                        min_w, max_w, def_w);
    }
    jc_sweep *s = calloc(1, sizeof *s);
    double *buf = malloc(3 * m * sizeof *buf);
    if (!s || !buf) {
        free(s);
        free(buf);
        free(rows);
        return jc__fail(JC_ERR_NO_MEMORY, "sweep: out of memory");
    }
    s->n = m;
    s->cap = buf;
    s->t = buf + m;
    s->p = buf + 2 * m;
    for (size_t i = 0; i < m; i++) {
        s->cap[i] = rows[i].cap;
        s->t[i] = rows[i].t;
        s->p[i] = rows[i].p;
    }
    free(rows);
    s->min_w = min_w;
    s->max_w = max_w;
    s->def_w = def_w;
    jc__clear_detail();
    *out = s;
    return JC_OK;
}

size_t jc__sweep_points(const jc_sweep *s, const double **cap_w, const double **time_per_step_s,
                        const double **avg_power_w) {
    *cap_w = s->cap;
    *time_per_step_s = s->t;
    *avg_power_w = s->p;
    return s->n;
}

void jc_sweep_free(jc_sweep *s) {
    if (!s) return;
    free(s->cap);
    free(s);
}

void jc_sweep_limits(const jc_sweep *s, double *min_w, double *max_w, double *def_w) {
    if (min_w) *min_w = s->min_w;
    if (max_w) *max_w = s->max_w;
    if (def_w) *def_w = s->def_w;
}

/* y0 + a (y1 - y0), kept between y0 and y1: rounding took y0 = 2e92, y1 = 300, a = 1 to 0 W. */
static double lerp(double y0, double y1, double a) {
    double v = y0 + a * (y1 - y0), lo = y0 < y1 ? y0 : y1, hi = y0 < y1 ? y1 : y0;
    return v < lo ? lo : v > hi ? hi : v;
}

void jc_sweep_eval(const jc_sweep *s, double c, double *t, double *p) {
    size_t n = s->n;
    if (c <= s->cap[0]) {
        *t = s->t[0];
        *p = s->p[0];
        return;
    }
    if (c >= s->cap[n - 1]) {
        *t = s->t[n - 1];
        *p = s->p[n - 1];
        return;
    }
    size_t i = 0;
    while (i + 1 < n && s->cap[i + 1] < c) i++;
    double a = (c - s->cap[i]) / (s->cap[i + 1] - s->cap[i]);
    *t = lerp(s->t[i], s->t[i + 1], a);
    *p = lerp(s->p[i], s->p[i + 1], a);
}

jc_status jc_sweep_best_cap(const jc_sweep *s, jc_objective objective, double max_slowdown, double eta,
                            double grid_w, double *cap_w, double *value) {
    if (!s || !cap_w || !value) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_sweep_best_cap: NULL argument");
    if (!jc_objective_name(objective)) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_sweep_best_cap: bad objective");
    if (!(grid_w > 0)) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_sweep_best_cap: grid_w must be > 0");
    /* A sweep file may hold any positive number: a 1 W grid up to a forged 10^17 W limit would never end. */
    if (!((s->def_w - s->min_w) / grid_w <= 1e6))
        return jc__fail(JC_ERR_INVALID_ARGUMENT,
                        "jc_sweep_best_cap: a grid of %g W over [%g, %g] W has more than 10^6 points", grid_w,
                        s->min_w, s->def_w);
    jc__objective_params op = {objective, eta, max_slowdown, s->max_w, NAN};
    double tref, pref;
    jc_sweep_eval(s, s->def_w, &tref, &pref);
    op.t_ref = tref;
    double best = INFINITY, bc = NAN;
    /* c = min + i * grid, not c += grid: near 10^17 W adding 1 W changes nothing. */
    double steps = floor((s->def_w - s->min_w) / grid_w) + 1;
    for (double i = 0; i <= steps; i++) {
        double c = s->min_w + i * grid_w;
        if (c > s->def_w + 1e-9) break;
        double t, p;
        jc_sweep_eval(s, c, &t, &p);
        if (!jc__feasible(&op, t)) continue;
        double f = objective == JC_OBJECTIVE_ENERGY_SLOWDOWN ? p * t : jc__objective(&op, t, p);
        if (f < best) {
            best = f;
            bc = c;
        }
    }
    *cap_w = bc;
    *value = best;
    return JC_OK;
}

/* CSV: header with named columns; numbers in the rows. */
static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
    if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
        s[n - 1] = '\0';
        s++;
    }
    return s;
}

static size_t split_csv(char *line, char **cells, size_t maxc) {
    size_t n = 0;
    char *p = line;
    for (;;) {
        if (n < maxc) cells[n] = p;
        n++;
        char *comma = strchr(p, ',');
        if (!comma) break;
        *comma = '\0';
        p = comma + 1;
    }
    for (size_t i = 0; i < n && i < maxc; i++) cells[i] = trim(cells[i]);
    return n;
}

#define MAX_COLS 64

jc_status jc_sweep_load(const char *path, jc_sweep **out) {
    if (!out) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_sweep_load: out is NULL");
    *out = NULL;
    if (!path) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_sweep_load: path is NULL");
    FILE *f = fopen(path, "r");
    if (!f) {
        int err = errno;
        return jc__fail(err == ENOENT ? JC_ERR_NOT_FOUND : JC_ERR_IO, "cannot open sweep %s: %s", path,
                        strerror(err));
    }
    jc_status st = jc__sweep_read(f, path, out);
    fclose(f);
    return st;
}

jc_status jc__sweep_read(FILE *f, const char *path, jc_sweep **out) {
    *out = NULL;
    char line[4096];
    char *cells[MAX_COLS];
    int col_cap = -1, col_t = -1, col_p = -1, col_min = -1, col_max = -1, col_def = -1;
    size_t lineno = 0, ncols = 0;
    jc_status st = JC_OK;
    double *caps = NULL, *ts = NULL, *ps = NULL;
    size_t n = 0, cap = 0;
    double lim[3] = {NAN, NAN, NAN};
    int have_header = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            st = jc__fail(JC_ERR_INVALID_ARGUMENT, "%s:%zu: line too long", path, lineno);
            goto done;
        }
        char *s = trim(line);
        if (lineno == 1 && (unsigned char)s[0] == 0xEF && (unsigned char)s[1] == 0xBB && (unsigned char)s[2] == 0xBF)
            s += 3;
        if (*s == '\0' || *s == '#') continue;
        size_t nc = split_csv(s, cells, MAX_COLS);
        if (nc > MAX_COLS) nc = MAX_COLS;
        if (!have_header) {
            have_header = 1;
            ncols = nc;
            for (size_t i = 0; i < nc; i++) {
                const char *h = cells[i];
                if (!strcmp(h, "power_limit_w")) col_cap = (int)i;
                else if (!strcmp(h, "time_per_step_s")) col_t = (int)i;
                else if (!strcmp(h, "avg_power_w")) col_p = (int)i;
                else if (!strcmp(h, "min_limit_w")) col_min = (int)i;
                else if (!strcmp(h, "max_limit_w")) col_max = (int)i;
                else if (!strcmp(h, "default_limit_w")) col_def = (int)i;
            }
            const char *missing = col_cap < 0 ? "power_limit_w" : col_t < 0 ? "time_per_step_s"
                                                            : col_p < 0 ? "avg_power_w" : NULL;
            if (missing) {
                st = jc__fail(JC_ERR_INVALID_ARGUMENT,
                              "%s:%zu: missing column '%s' (the header needs power_limit_w, time_per_step_s, "
                              "avg_power_w)",
                              path, lineno, missing);
                goto done;
            }
            continue;
        }
        if (nc != ncols) {
            st = jc__fail(JC_ERR_INVALID_ARGUMENT, "%s:%zu: %zu cells, the header has %zu", path, lineno, nc, ncols);
            goto done;
        }
        const int want[6] = {col_cap, col_t, col_p, col_min, col_max, col_def};
        const char *names[6] = {"power_limit_w", "time_per_step_s", "avg_power_w",
                                "min_limit_w",   "max_limit_w",     "default_limit_w"};
        double v[6] = {NAN, NAN, NAN, NAN, NAN, NAN};
        for (int k = 0; k < 6; k++) {
            if (want[k] < 0) continue;
            const char *txt = cells[want[k]];
            if (k >= 3 && txt[0] == '\0') continue; /* optional limits may be empty */
            char *end = NULL;
            errno = 0;
            double x = strtod(txt, &end);
            if (end == txt || *end != '\0' || errno == ERANGE || !isfinite(x)) {
                st = jc__fail(JC_ERR_INVALID_ARGUMENT, "%s:%zu: column %s: '%s' is not a number", path, lineno,
                              names[k], txt);
                goto done;
            }
            if (!(x > 0)) {
                st = jc__fail(JC_ERR_INVALID_ARGUMENT, "%s:%zu: column %s: %g must be positive", path, lineno,
                              names[k], x);
                goto done;
            }
            v[k] = x;
        }
        for (int k = 0; k < 3; k++)
            if (!isfinite(lim[k]) && isfinite(v[3 + k])) lim[k] = v[3 + k];
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            double *a = realloc(caps, cap * sizeof *a), *b = a ? realloc(ts, cap * sizeof *b) : NULL,
                   *c = b ? realloc(ps, cap * sizeof *c) : NULL;
            if (a) caps = a;
            if (b) ts = b;
            if (c) ps = c;
            if (!a || !b || !c) {
                st = jc__fail(JC_ERR_NO_MEMORY, "sweep: out of memory");
                goto done;
            }
        }
        caps[n] = v[0];
        ts[n] = v[1];
        ps[n] = v[2];
        n++;
    }
    if (ferror(f)) {
        st = jc__fail(JC_ERR_IO, "cannot read sweep %s: %s", path, strerror(errno));
        goto done;
    }
    if (!have_header) {
        st = jc__fail(JC_ERR_INVALID_ARGUMENT, "%s: empty file (expected a header power_limit_w,time_per_step_s,"
                                               "avg_power_w and rows)",
                      path);
        goto done;
    }
    if (n < 2) {
        st = jc__fail(JC_ERR_INVALID_ARGUMENT, "%s: %zu data rows, at least 2 are needed", path, n);
        goto done;
    }
    st = jc_sweep_new(caps, ts, ps, n, lim[0], lim[1], lim[2], out);
    if (st != JC_OK) {
        char msg[512];
        jc__fmt(msg, sizeof msg, "%s", jc_last_detail());
        st = jc__fail(st, "%s: %s", path, msg);
    }
done:
    free(caps);
    free(ts);
    free(ps);
    return st;
}

/* ------------------------------------------------------------------------------------------------------
 * The simulated GPU.
 * ---------------------------------------------------------------------------------------------------- */

void jc_sim_options_init(jc_sim_options *o) {
    o->step_s = 0.05;
    o->noise = 0.02;
    o->counter_period_s = 0.1;
    o->settle_s = 0.3;
    o->seed = 1;
}

struct jc_simgpu {
    const jc_sweep *sw;
    jc_sim_options o;
    jc__rng rng;
    double scale;          /* time rescaling */
    double now, energy;    /* virtual time, true energy so far */
    double counter;        /* energy at the last counter update */
    double next_update;    /* time of the next counter update */
    double cap, old_cap, t_change;
};

jc_status jc_simgpu_new(const jc_sweep *sweep, const jc_sim_options *opts, jc_simgpu **out) {
    if (!out) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_simgpu_new: out is NULL");
    *out = NULL;
    if (!sweep) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_simgpu_new: sweep is NULL");
    jc_sim_options o;
    if (opts) o = *opts;
    else jc_sim_options_init(&o);
    if (!(o.step_s > 0) || !isfinite(o.step_s))
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "simulator: step_s must be > 0 (got %g)", o.step_s);
    if (!(o.noise >= 0) || !(o.noise < 0.5))
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "simulator: noise must lie in [0, 0.5) (got %g)", o.noise);
    if (!(o.counter_period_s >= 0) || !isfinite(o.counter_period_s))
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "simulator: counter_period_s must be >= 0 (got %g)",
                        o.counter_period_s);
    if (!(o.settle_s >= 0) || !isfinite(o.settle_s))
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "simulator: settle_s must be >= 0 (got %g)", o.settle_s);
    jc_simgpu *g = calloc(1, sizeof *g);
    if (!g) return jc__fail(JC_ERR_NO_MEMORY, "simulator: out of memory");
    g->sw = sweep;
    g->o = o;
    jc__rng_seed(&g->rng, o.seed);
    double t0, p0;
    jc_sweep_eval(sweep, sweep->def_w, &t0, &p0);
    g->scale = o.step_s / t0;
    g->cap = g->old_cap = sweep->def_w;
    g->t_change = -1e30;
    g->now = 0;
    /* The counter started long ago: it reads some large value and updates at a random phase. */
    g->energy = 1e5 + 1e5 * jc__rng_uniform(&g->rng);
    g->counter = g->energy;
    g->next_update = o.counter_period_s > 0 ? o.counter_period_s * jc__rng_uniform(&g->rng) : 0;
    jc__clear_detail();
    *out = g;
    return JC_OK;
}

void jc_simgpu_free(jc_simgpu *g) { free(g); }

jc_status jc_simgpu_set_cap(jc_simgpu *g, double cap_w) {
    if (!g) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_simgpu_set_cap: NULL");
    if (!isfinite(cap_w) || cap_w < g->sw->min_w - 1e-9 || cap_w > g->sw->max_w + 1e-9)
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "power limit %g W outside the GPU's range [%g, %g] W", cap_w,
                        g->sw->min_w, g->sw->max_w);
    /* Where the GPU is now (mid-transition or settled) is where the next transition starts. */
    double a = g->o.settle_s > 0 ? (g->now - g->t_change) / g->o.settle_s : 1;
    double eff = a >= 1 ? g->cap : g->old_cap + (g->cap - g->old_cap) * (a < 0 ? 0 : a);
    g->old_cap = eff;
    g->cap = cap_w;
    g->t_change = g->now;
    return JC_OK;
}

double jc_simgpu_now(const jc_simgpu *g) { return g->now; }

double jc_simgpu_counter(const jc_simgpu *g) { return g->o.counter_period_s > 0 ? g->counter : g->energy; }

/* Effective cap at time x. */
static double eff_cap(const jc_simgpu *g, double x) {
    if (g->o.settle_s <= 0) return g->cap;
    double a = (x - g->t_change) / g->o.settle_s;
    if (a >= 1) return g->cap;
    if (a < 0) a = 0;
    return g->old_cap + (g->cap - g->old_cap) * a;
}

/* Advances the true energy from now to now + dt at constant power pw, updating the counter on the way. */
static void advance(jc_simgpu *g, double dt, double pw) {
    double end = g->now + dt;
    if (g->o.counter_period_s > 0) {
        for (long k = 0; g->next_update <= end; k++) {
            /* A sweep file may make one step last 10^15 s (or for ever): then take the counter at the end
             * rather than update it 10^16 times, or for ever once next_update + period == next_update. */
            if (k == 100000 || g->next_update + g->o.counter_period_s == g->next_update) {
                g->counter = floor((g->energy + pw * dt) * 1000) / 1000;
                g->next_update = end + g->o.counter_period_s;
                break;
            }
            g->counter = g->energy + pw * (g->next_update - g->now);
            g->counter = floor(g->counter * 1000) / 1000; /* NVML counts millijoules */
            g->next_update += g->o.counter_period_s;
        }
    }
    g->energy += pw * dt;
    g->now = end;
}

void jc_simgpu_step(jc_simgpu *g, double *t_end, double *energy) {
    double zt = g->o.noise > 0 ? 1 + g->o.noise * jc__rng_normal(&g->rng) : 1;
    double zp = g->o.noise > 0 ? 1 + g->o.noise * jc__rng_normal(&g->rng) : 1;
    if (zt < 0.05) zt = 0.05;
    if (zp < 0.05) zp = 0.05;
    /* One step is one unit of work.  While settling, work proceeds at the rate of the effective cap in
     * slices of at most 5 ms. */
    double work = 1.0;
    while (work > 1e-12) {
        double c = eff_cap(g, g->now);
        double t, p;
        jc_sweep_eval(g->sw, c, &t, &p);
        double dur = t * g->scale * zt; /* seconds for the whole step at this rate */
        double settling = g->o.settle_s > 0 && g->now < g->t_change + g->o.settle_s;
        double slice = work * dur;
        /* Unless 5 ms no longer moves the clock (a sweep file's very slow cap can take it past 10^13 s). */
        if (settling && slice > 0.005 && g->now + 0.005 > g->now) slice = 0.005;
        double done = slice / dur;
        if (done > work) done = work;
        advance(g, slice, p * zp);
        work -= done;
    }
    *t_end = g->now;
    *energy = jc_simgpu_counter(g);
}

jc_status jc_profiler_simulate(jc_profiler *p, jc_simgpu *g, jc_sim_progress_fn progress, void *arg) {
    if (!p || !g) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_profiler_simulate: NULL argument");
    double t0 = jc_simgpu_now(g);
    for (long i = 0; i < 10000000L; i++) {
        jc_profiler_action a;
        jc_status st = jc_profiler_next_action(p, &a);
        if (st != JC_OK) return st;
        if (a.kind == JC_PROFILER_DONE) {
            if (progress) progress(p, &a, jc_simgpu_now(g) - t0, arg);
            return JC_OK;
        }
        if (a.kind == JC_PROFILER_SET_CAP) {
            if (progress) progress(p, &a, jc_simgpu_now(g) - t0, arg);
            st = jc_simgpu_set_cap(g, a.cap_w);
            if (st != JC_OK) return st;
            st = jc_profiler_cap_applied(p, a.cap_w, jc_simgpu_now(g), jc_simgpu_counter(g));
            if (st != JC_OK) return st;
        } else {
            double t, e;
            jc_simgpu_step(g, &t, &e);
            st = jc_profiler_observe_step(p, t, e);
            if (st != JC_OK) return st;
        }
    }
    return jc__fail(JC_ERR_TIMEOUT, "simulation did not finish within 10^7 steps");
}

jc_status jc_profiler_run_simulated(jc_profiler *p, jc_simgpu *g) { return jc_profiler_simulate(p, g, NULL, NULL); }
