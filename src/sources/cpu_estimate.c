/* CPU power estimate for machines without readable RAPL (virtual machines, mostly).
 *   P = n * (idle + (max - idle) * u),  max = TDP / threads of the part,  idle = 0.1 * max
 * n = logical CPUs this OS sees (a VM's vCPUs), u = utilisation in [0, 1].  max comes from the table when
 * the model is in it, else from the median of the table's parts of its family (EPYC, Xeon), else 10 W.
 * docs/cpu-sources.md explains why linear, why a 10 % idle floor, and how wrong this can be. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cpu.h"

/* Unknown model (not in the table and not an EPYC or Xeon): 10 W per thread at full load.  Table parts span
 * 1.76 (EPYC 7742) to 5.3 (Ryzen 9 7950X) W/thread at TDP; small desktop parts without SMT reach 15 W/thread
 * (a 4-core 65 W i5).  10 W errs high on purpose: an unknown CPU is reported as an upper-end estimate rather
 * than silently as a small one. */
#define DEFAULT_MAX_W_PER_THREAD 10.0
#define IDLE_FRACTION 0.1

typedef struct cpu_model {
    const char *family; /* must appear in the model name */
    const char *number; /* must appear as a whole token (not followed by a letter, digit or '+') */
    double tdp_w;       /* vendor TDP / processor base power */
    int threads;        /* hardware threads of one package */
} cpu_model;

static const cpu_model CPU_TABLE[] = {
    {"Xeon", "8480+", 350, 112},      /* Sapphire Rapids, 56 cores */
    {"Xeon", "8468", 350, 96},        /* Sapphire Rapids, 48 cores */
    {"Xeon", "8380", 270, 80},        /* Ice Lake-SP, 40 cores */
    {"Xeon", "8358", 250, 64},        /* Ice Lake-SP, 32 cores */
    {"Xeon", "6248", 150, 40},        /* Cascade Lake, 20 cores */
    {"Xeon", "6130", 125, 32},        /* Skylake-SP, 16 cores */
    {"EPYC", "9654", 360, 192},       /* Genoa, 96 cores */
    {"EPYC", "9554", 360, 128},       /* Genoa, 64 cores */
    {"EPYC", "7763", 280, 128},       /* Milan, 64 cores */
    {"EPYC", "7742", 225, 128},       /* Rome, 64 cores */
    {"EPYC", "7543", 225, 64},        /* Milan, 32 cores */
    {"EPYC", "7R13", 225, 96},        /* AWS Milan, 48 cores; TDP unpublished: that of the 48-core EPYC 7643 */
    {"Core(TM)", "i9-13900K", 125, 32}, /* 8P+16E; base power (253 W maximum turbo power) */
    {"Ryzen", "7950X", 170, 32},      /* 16 cores; TDP (230 W package power tracking limit) */
};

static int token_char(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '+';
}

/* needle occurs in hay as a whole token: "8468" matches "Platinum 8468" but not "8468V", "i9-13900K" not
 * "i9-13900KS", "7950X" not "7950X3D". */
static int has_token(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) {
        if ((p == hay || !token_char(p[-1])) && !token_char(p[n])) return 1;
    }
    return 0;
}

#define TABLE_LEN (sizeof CPU_TABLE / sizeof CPU_TABLE[0])

static const cpu_model *lookup(const char *model) {
    for (size_t i = 0; i < TABLE_LEN; i++)
        if (strstr(model, CPU_TABLE[i].family) && has_token(model, CPU_TABLE[i].number)) return &CPU_TABLE[i];
    return NULL;
}

/* Server families whose exact part is not in the table, or is hidden: clouds report "AMD EPYC" or
 * "Intel(R) Xeon(R) CPU @ 2.20GHz", QEMU "AMD EPYC-Rome Processor" or "Intel Xeon Processor (Icelake)".
 * Such a CPU gets the median W/thread of the table's parts of that family (EPYC ~2.3, Xeon ~3.7), which is
 * far closer than the 10 W default.  Returns the number of parts the median is over (0: no family). */
static const char *const FAMILIES[] = {"EPYC", "Xeon"};

static int family_median(const char *model, const char **family, double *w_per_thread) {
    for (size_t f = 0; f < sizeof FAMILIES / sizeof FAMILIES[0]; f++) {
        if (!strstr(model, FAMILIES[f])) continue;
        double v[TABLE_LEN];
        int n = 0;
        for (size_t i = 0; i < TABLE_LEN; i++)
            if (strcmp(CPU_TABLE[i].family, FAMILIES[f]) == 0) v[n++] = CPU_TABLE[i].tdp_w / CPU_TABLE[i].threads;
        if (n == 0) continue;
        for (int i = 1; i < n; i++) /* insertion sort: a handful of values */
            for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
                double t = v[j];
                v[j] = v[j - 1];
                v[j - 1] = t;
            }
        *w_per_thread = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
        *family = FAMILIES[f];
        return n;
    }
    return 0;
}

/* "model name\t: Intel(R) Xeon(R) ..." and the number of "processor\t: N" lines.  Lines longer than the
 * buffer (flags) are skipped as continuations. */
static void parse_cpuinfo(FILE *f, char *model, size_t mlen, int *processors) {
    char line[512];
    int at_start = 1;
    *processors = 0;
    while (fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        int whole_start = at_start;
        at_start = len > 0 && line[len - 1] == '\n';
        if (!whole_start) continue;
        const char *colon = strchr(line, ':');
        if (!colon) continue;
        size_t klen = (size_t)(colon - line);
        while (klen > 0 && (line[klen - 1] == ' ' || line[klen - 1] == '\t')) klen--;
        if (klen == 9 && strncmp(line, "processor", 9) == 0) {
            (*processors)++;
        } else if (klen == 10 && strncmp(line, "model name", 10) == 0 && model[0] == '\0') {
            const char *v = colon + 1;
            while (*v == ' ' || *v == '\t') v++;
            size_t vlen = strlen(v);
            while (vlen > 0 && (v[vlen - 1] == '\n' || v[vlen - 1] == ' ')) vlen--;
            jc__fmt(model, mlen, "%.*s", (int)vlen, v);
        }
    }
}

jc_status jc__cpu_estimate_open(const char *proc_root, jc__cpu_estimate *e, char *why, size_t whylen) {
    if (!e) {
        if (why && whylen) jc__fmt(why, whylen, "jc__cpu_estimate_open: e is NULL");
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc__cpu_estimate_open: e is NULL");
    }
    if (!proc_root) proc_root = jc__proc_root();
    char path[1024];
    FILE *f = NULL;
    int w = snprintf(path, sizeof path, "%s/cpuinfo", proc_root);
    if (w > 0 && (size_t)w < sizeof path) f = fopen(path, "re");
    jc_status st = jc__cpu_estimate_from(f, e, why, whylen);
    if (f) fclose(f);
    return st;
}

jc_status jc__cpu_estimate_from(FILE *cpuinfo, jc__cpu_estimate *e, char *why, size_t whylen) {
    memset(e, 0, sizeof *e);
    int processors = 0, have_cpuinfo = cpuinfo != NULL;
    if (cpuinfo) parse_cpuinfo(cpuinfo, e->model, sizeof e->model, &processors);
    e->threads = processors;
    if (e->threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        e->threads = n > 0 ? (int)n : 1;
    }
    const char *src = have_cpuinfo ? (processors > 0 ? "" : " (from sysconf: no processor lines in cpuinfo)")
                                   : " (from sysconf: no cpuinfo)";
    if (e->model[0] == '\0') jc__fmt(e->model, sizeof e->model, "unknown");

    const cpu_model *m = lookup(e->model);
    if (m) {
        e->from_table = 1;
        e->max_w_per_thread = m->tdp_w / m->threads;
        e->idle_w_per_thread = IDLE_FRACTION * e->max_w_per_thread;
        jc__fmt(e->describe, sizeof e->describe,
                "estimate: %s (TDP %.0f W / %d threads), %d logical CPUs%s, P = n*(%.2f + %.2f*u) W", e->model,
                m->tdp_w, m->threads, e->threads, src, e->idle_w_per_thread,
                e->max_w_per_thread - e->idle_w_per_thread);
        if (why && whylen) why[0] = '\0';
        return JC_OK;
    }
    e->from_table = 0;
    const char *family = NULL;
    double fam_w = 0.0;
    int fam_n = family_median(e->model, &family, &fam_w);
    if (fam_n > 0) {
        e->max_w_per_thread = fam_w;
        e->idle_w_per_thread = IDLE_FRACTION * e->max_w_per_thread;
        jc__fmt(e->describe, sizeof e->describe,
                "estimate: CPU model '%s' not in the table: median of its %d %s parts, %.2f W per thread, "
                "%d logical CPUs%s, P = n*(%.2f + %.2f*u) W",
                e->model, fam_n, family, e->max_w_per_thread, e->threads, src, e->idle_w_per_thread,
                e->max_w_per_thread - e->idle_w_per_thread);
        if (why && whylen)
            jc__fmt(why, whylen,
                    "CPU model '%s' is not in the built-in table: using the median TDP per thread of the table's "
                    "%s parts (%.2f W)",
                    e->model, family, e->max_w_per_thread);
    } else {
        e->max_w_per_thread = DEFAULT_MAX_W_PER_THREAD;
        e->idle_w_per_thread = IDLE_FRACTION * e->max_w_per_thread;
        jc__fmt(e->describe, sizeof e->describe,
                "estimate: unknown CPU model '%s': default %.0f W per thread, %d logical CPUs%s, "
                "P = n*(%.2f + %.2f*u) W",
                e->model, e->max_w_per_thread, e->threads, src, e->idle_w_per_thread,
                e->max_w_per_thread - e->idle_w_per_thread);
        if (why && whylen)
            jc__fmt(why, whylen,
                    "CPU model '%s' is not in the built-in table: using a default of %.0f W per thread at full "
                    "load (errs high)",
                    e->model, e->max_w_per_thread);
    }
    return JC_OK;
}

double jc__cpu_estimate_power_w(const jc__cpu_estimate *e, double util_pct) {
    if (!e) return 0.0;
    double u = util_pct / 100.0;
    if (!(u >= 0.0)) u = 0.0; /* also catches NaN */
    if (u > 1.0) u = 1.0;
    return (double)e->threads * (e->idle_w_per_thread + (e->max_w_per_thread - e->idle_w_per_thread) * u);
}
