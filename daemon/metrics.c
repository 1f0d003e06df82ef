/* The text of a scrape: Prometheus text format 0.0.4, or OpenMetrics 1.0.0 when the scraper asks for it.
 *
 * Names follow Prometheus' rules (base units in the name, counters end in _total, a HELP and a TYPE line per
 * family); GPU series carry dcgm-exporter's labels (gpu, UUID, pci_bus_id, modelName, Hostname) so that the
 * two join in PromQL.  A value the sampler does not have is left out, never written as NaN.  Pure: takes a
 * snapshot, returns text. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "jcd.h"

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_grow(sbuf *b, size_t need) {
    if (b->oom || b->len + need + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 16384;
    while (cap < b->len + need + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return;
    }
    b->p = p;
    b->cap = cap;
}

static void sb_put(sbuf *b, const char *s, size_t n) {
    sb_grow(b, n);
    if (b->oom) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_printf(sbuf *b, const char *fmt, ...) JC__PRINTF(2, 3);
static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Length of the valid UTF-8 sequence at s (1 to 4), or 0. */
static size_t utf8_len(const unsigned char *s) {
    if (s[0] < 0x80) return 1;
    size_t n = (s[0] & 0xe0) == 0xc0 ? 2 : (s[0] & 0xf0) == 0xe0 ? 3 : (s[0] & 0xf8) == 0xf0 ? 4 : 0;
    if (n == 0 || (n == 2 && s[0] < 0xc2) || (n == 4 && s[0] > 0xf4)) return 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if (n == 3 && s[0] == 0xe0 && s[1] < 0xa0) return 0; /* overlong */
    if (n == 3 && s[0] == 0xed && s[1] >= 0xa0) return 0; /* surrogates */
    if (n == 4 && s[0] == 0xf0 && s[1] < 0x90) return 0;
    if (n == 4 && s[0] == 0xf4 && s[1] >= 0x90) return 0;
    return n;
}

/* name="value", the value escaped (\\ \" \n); control bytes and invalid UTF-8 become '?'. */
static void sb_label(sbuf *b, int first, const char *name, const char *value) {
    if (!first) sb_put(b, ",", 1);
    sb_str(b, name);
    sb_put(b, "=\"", 2);
    const unsigned char *s = (const unsigned char *)(value ? value : "");
    while (*s) {
        size_t run = 0; /* plain printable ASCII goes in one piece */
        while (s[run] >= 0x20 && s[run] < 0x7f && s[run] != '\\' && s[run] != '"') run++;
        if (run) {
            sb_put(b, (const char *)s, run);
            s += run;
            continue;
        }
        if (*s == '\\') sb_put(b, "\\\\", 2);
        else if (*s == '"') sb_put(b, "\\\"", 2);
        else if (*s == '\n') sb_put(b, "\\n", 2);
        else if (*s < 0x20 || *s == 0x7f) sb_put(b, "?", 1);
        else {
            size_t n = utf8_len(s);
            if (n == 0) {
                sb_put(b, "?", 1);
                s++;
                continue;
            }
            sb_put(b, (const char *)s, n);
            s += n;
            continue;
        }
        s++;
    }
    sb_put(b, "\"", 1);
}

static void sb_value(sbuf *b, double v) {
    char t[64];
    if (v == floor(v) && fabs(v) < 1e15) snprintf(t, sizeof t, " %.0f\n", v);
    else snprintf(t, sizeof t, " %.15g\n", v);
    sb_str(b, t);
}

/* ------------------------------------------------------------------------------------------------------
 * Families.
 * ---------------------------------------------------------------------------------------------------- */

typedef enum { COUNTER, GAUGE, INFO } kind;

typedef struct family {
    const char *base; /* without _total / _info */
    kind k;
    const char *unit; /* OpenMetrics UNIT; NULL: none */
    const char *help;
} family;

static const family F_GPU_ENERGY = {
    "joulecap_gpu_energy_joules", COUNTER, "joules",
    "Energy used by the GPU in joules, from its energy counter as joulecapd samples it. Never decreases: GPU "
    "counter resets are stitched, and the total continues across joulecapd restarts (with what the GPU's counter "
    "said meanwhile, unless the driver was reloaded). Exported as it was 5 s before the scrape (by then it is "
    "saved), interpolated between counter reads."};
static const family F_GPU_POWER = {"joulecap_gpu_power_watts", GAUGE, "watts",
                                   "Instant power of the GPU in watts (NVML field 186 where the driver has it, else "
                                   "its 1 s average), as last sampled."};
static const family F_GPU_LIMIT = {"joulecap_gpu_power_limit_watts", GAUGE, "watts",
                                   "Power limit of the GPU in watts (the requested limit, what a cap sets)."};
static const family F_GPU_ENFORCED = {"joulecap_gpu_enforced_power_limit_watts", GAUGE, "watts",
                                      "Power limit the GPU enforces in watts (can be below the requested one)."};
static const family F_GPU_UTIL = {"joulecap_gpu_utilization_ratio", GAUGE, "ratio",
                                  "Share of the driver's last sample period in which a kernel ran on the GPU, 0 to "
                                  "1."};
static const family F_GPU_TEMP = {"joulecap_gpu_temperature_celsius", GAUGE, "celsius",
                                  "GPU temperature in degrees Celsius."};
static const family F_CPU_ENERGY = {
    "joulecap_cpu_energy_joules", COUNTER, "joules",
    "Energy used by the CPU sockets in joules (RAPL package + DRAM, all sockets), or a model's estimate where "
    "RAPL is unreadable: the label source says which. Never decreases across joulecapd restarts (the time it was "
    "down is not counted). Exported as it was 5 s before the scrape."};
static const family F_CPU_POWER = {"joulecap_cpu_power_watts", GAUGE, "watts",
                                   "Power of the CPU sockets in watts (RAPL, or the estimate: see source)."};
static const family F_UP = {
    "joulecap_device_up", GAUGE, NULL,
    "1 while joulecapd reads the device (health ok or degraded), 0 when it stalled or was lost; state is the "
    "health: ok, degraded, stalled or lost."};
static const family F_LEASE = {
    "joulecap_gpu_power_limit_lease", INFO, NULL,
    "A power cap held through joulecapd: holder lease (lasts as long as the client's connection), pending (its "
    "client is gone and the limit could not be put back yet) or persistent; user, uid and pid of its holder."};
static const family F_JOB = {
    "joulecap_job_gpu_energy_joules", COUNTER, "joules",
    "GPU energy in joules that the processes of a job measured and reported to joulecapd (their windows' "
    "totals), per job, user (of the reporting process) and GPU. The job is $JOULECAP_JOB, $SLURM_JOB_ID or "
    "$TORCHELASTIC_RUN_ID of the process; a total is dropped a day after its last report."};

static void header(sbuf *b, const family *f, int om) {
    const char *suffix = f->k == COUNTER ? "_total" : f->k == INFO ? "_info" : "";
    const char *type = f->k == COUNTER ? "counter" : f->k == INFO ? (om ? "info" : "gauge") : "gauge";
    if (om) {
        sb_printf(b, "# TYPE %s %s\n", f->base, type);
        if (f->unit) sb_printf(b, "# UNIT %s %s\n", f->base, f->unit);
        sb_printf(b, "# HELP %s ", f->base);
    } else {
        sb_printf(b, "# HELP %s%s ", f->base, suffix);
    }
    sb_str(b, f->help);
    sb_put(b, "\n", 1);
    if (!om) sb_printf(b, "# TYPE %s%s %s\n", f->base, suffix, type);
}

static void sample_start(sbuf *b, const family *f) {
    sb_str(b, f->base);
    if (f->k == COUNTER) sb_str(b, "_total");
    if (f->k == INFO) sb_str(b, "_info");
    sb_put(b, "{", 1);
}

static void gpu_labels(sbuf *b, int nvml, const char *uuid, const char *pci, const char *name, const char *host) {
    char idx[16];
    snprintf(idx, sizeof idx, "%d", nvml);
    sb_label(b, 1, "gpu", idx);
    sb_label(b, 0, "UUID", uuid);
    sb_label(b, 0, "pci_bus_id", pci);
    sb_label(b, 0, "modelName", name);
    sb_label(b, 0, "Hostname", host);
}

typedef enum { V_ENERGY, V_POWER, V_LIMIT, V_ENFORCED, V_UTIL, V_TEMP } which;

static int gpu_value(const jcd_mdev *d, which w, double *v) {
    switch (w) {
    case V_ENERGY: *v = d->energy_j; return d->have_energy && isfinite(d->energy_j);
    case V_POWER: *v = d->power_w; return isfinite(d->power_w);
    case V_LIMIT: *v = d->limit_mw / 1000.0; return d->limit_mw != 0;
    case V_ENFORCED: *v = d->enforced_mw / 1000.0; return d->enforced_mw != 0;
    case V_UTIL: *v = d->util_ratio; return isfinite(d->util_ratio);
    case V_TEMP: *v = d->temp_c; return isfinite(d->temp_c);
    }
    return 0;
}

static void gpu_family(sbuf *b, const jcd_msnap *s, const family *f, which w, int om) {
    header(b, f, om);
    for (int i = 0; i < s->ndev; i++) {
        const jcd_mdev *d = &s->dev[i];
        double v;
        if (!d->gpu || !gpu_value(d, w, &v)) continue;
        sample_start(b, f);
        gpu_labels(b, d->nvml, d->uuid, d->pci, d->name, s->hostname);
        sb_put(b, "}", 1);
        sb_value(b, v);
    }
}

static void cpu_family(sbuf *b, const jcd_msnap *s, const family *f, int energy, int om) {
    header(b, f, om);
    for (int i = 0; i < s->ndev; i++) {
        const jcd_mdev *d = &s->dev[i];
        double v = energy ? d->energy_j : d->power_w;
        if (d->gpu || (energy && !d->have_energy) || !isfinite(v) || d->source == JC_SOURCE_NONE) continue;
        sample_start(b, f);
        sb_label(b, 1, "source", jc_energy_source_name(d->source));
        sb_label(b, 0, "Hostname", s->hostname);
        sb_put(b, "}", 1);
        sb_value(b, v);
    }
}

char *jcd_metrics_format(const jcd_msnap *s, int om, size_t *len) {
    sbuf b = {0};
    gpu_family(&b, s, &F_GPU_ENERGY, V_ENERGY, om);
    gpu_family(&b, s, &F_GPU_POWER, V_POWER, om);
    gpu_family(&b, s, &F_GPU_LIMIT, V_LIMIT, om);
    gpu_family(&b, s, &F_GPU_ENFORCED, V_ENFORCED, om);
    gpu_family(&b, s, &F_GPU_UTIL, V_UTIL, om);
    gpu_family(&b, s, &F_GPU_TEMP, V_TEMP, om);
    cpu_family(&b, s, &F_CPU_ENERGY, 1, om);
    cpu_family(&b, s, &F_CPU_POWER, 0, om);

    header(&b, &F_UP, om);
    for (int i = 0; i < s->ndev; i++) {
        const jcd_mdev *d = &s->dev[i];
        sample_start(&b, &F_UP);
        if (d->gpu) {
            gpu_labels(&b, d->nvml, d->uuid, d->pci, d->name, s->hostname);
            sb_label(&b, 0, "kind", "gpu");
        } else {
            sb_label(&b, 1, "Hostname", s->hostname);
            sb_label(&b, 0, "kind", "cpu");
        }
        sb_label(&b, 0, "state", jc_health_name(d->health));
        sb_put(&b, "}", 1);
        sb_value(&b, d->health == JC_HEALTH_OK || d->health == JC_HEALTH_DEGRADED ? 1 : 0);
    }

    header(&b, &F_LEASE, om);
    for (int i = 0; i < s->nleases; i++) {
        const jcd_mlease *l = &s->leases[i];
        char n[32];
        sample_start(&b, &F_LEASE);
        gpu_labels(&b, l->nvml, l->uuid, l->pci, l->name, s->hostname);
        sb_label(&b, 0, "holder", l->holder);
        sb_label(&b, 0, "user", l->user);
        snprintf(n, sizeof n, "%u", l->uid);
        sb_label(&b, 0, "uid", n);
        snprintf(n, sizeof n, "%d", l->pid);
        sb_label(&b, 0, "pid", n);
        sb_put(&b, "}", 1);
        sb_value(&b, 1);
    }

    header(&b, &F_JOB, om);
    for (int i = 0; i < s->njobs; i++) {
        const jcd_job *j = &s->jobs[i];
        char n[16];
        snprintf(n, sizeof n, "%d", j->nvml);
        sample_start(&b, &F_JOB);
        sb_label(&b, 1, "job", j->job);
        sb_label(&b, 0, "user", j->user);
        sb_label(&b, 0, "gpu", n);
        sb_label(&b, 0, "UUID", j->uuid);
        sb_label(&b, 0, "Hostname", s->hostname);
        sb_put(&b, "}", 1);
        sb_value(&b, (double)j->mj / 1000.0);
    }
    if (om) sb_str(&b, "# EOF\n");
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

/* ------------------------------------------------------------------------------------------------------
 * Content negotiation.
 * ---------------------------------------------------------------------------------------------------- */

/* The q-value of one media range ("type/sub;a=b;q=0.5"), 1 when absent; -1 when malformed. */
static double q_of(const char *params, size_t n) {
    double q = 1.0;
    size_t i = 0;
    while (i < n) {
        while (i < n && (params[i] == ';' || params[i] == ' ' || params[i] == '\t')) i++;
        size_t start = i;
        while (i < n && params[i] != ';') i++;
        if (i - start > 2 && (params[start] == 'q' || params[start] == 'Q') && params[start + 1] == '=') {
            char t[16];
            size_t m = i - start - 2;
            if (m >= sizeof t) return -1;
            memcpy(t, params + start + 2, m);
            t[m] = '\0';
            char *end = NULL;
            q = strtod(t, &end);
            while (end && (*end == ' ' || *end == '\t')) end++;
            if (!end || *end || !(q >= 0 && q <= 1)) return -1;
        }
    }
    return q;
}

int jcd_metrics_wants_openmetrics(const char *accept) {
    if (!accept) return 0;
    double om = 0, text = -1, any = -1;
    const char *p = accept;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        const char *start = p;
        while (*p && *p != ',') p++;
        size_t n = (size_t)(p - start);
        if (n == 0) continue;
        size_t t = 0;
        while (t < n && start[t] != ';') t++;
        size_t tl = t;
        while (tl > 0 && (start[tl - 1] == ' ' || start[tl - 1] == '\t')) tl--;
        double q = q_of(start + t, n - t);
        if (q < 0) continue;
        if (tl == 28 && strncasecmp(start, "application/openmetrics-text", 28) == 0) {
            if (q > om) om = q;
        } else if (tl == 10 && strncasecmp(start, "text/plain", 10) == 0) {
            if (q > text) text = q;
        } else if ((tl == 3 && strncmp(start, "*/*", 3) == 0) || (tl == 6 && strncasecmp(start, "text/*", 6) == 0)) {
            if (q > any) any = q;
        }
    }
    if (text < 0) text = any;
    return om > 0 && om >= text;
}
