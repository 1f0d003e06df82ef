/* Scenario files: `key = value` lines, a global part, then one `[device]` section per fake GPU.  The format
 * is documented in docs/fake-nvml.md; keep the two in step. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fake.h"

#define LINE_MAX_LEN 1024

typedef struct parser {
    const char *path;
    int line;
    int device_line; /* line of the current [device] header */
    char *msg;
    size_t msglen;
    fake_scenario *sc;
    fake_device *dev; /* NULL while in the global part */
    int phase_set, instant_phase_set, limit_set, loaded_set, sweep_line;
} parser;

__attribute__((format(printf, 2, 3))) static int fail(parser *p, const char *fmt, ...) {
    char why[FAKE_MSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (p->line > 0) snprintf(p->msg, p->msglen, "%s:%d: %s", p->path, p->line, why);
    else snprintf(p->msg, p->msglen, "%s: %s", p->path, why);
    return -1;
}

static const struct {
    const char *name;
    nvmlReturn_t code;
} RETURN_NAMES[] = {
    {"SUCCESS", NVML_SUCCESS},
    {"UNINITIALIZED", NVML_ERROR_UNINITIALIZED},
    {"INVALID_ARGUMENT", NVML_ERROR_INVALID_ARGUMENT},
    {"NOT_SUPPORTED", NVML_ERROR_NOT_SUPPORTED},
    {"NO_PERMISSION", NVML_ERROR_NO_PERMISSION},
    {"ALREADY_INITIALIZED", NVML_ERROR_ALREADY_INITIALIZED},
    {"NOT_FOUND", NVML_ERROR_NOT_FOUND},
    {"INSUFFICIENT_SIZE", NVML_ERROR_INSUFFICIENT_SIZE},
    {"INSUFFICIENT_POWER", NVML_ERROR_INSUFFICIENT_POWER},
    {"DRIVER_NOT_LOADED", NVML_ERROR_DRIVER_NOT_LOADED},
    {"TIMEOUT", NVML_ERROR_TIMEOUT},
    {"IRQ_ISSUE", NVML_ERROR_IRQ_ISSUE},
    {"LIBRARY_NOT_FOUND", NVML_ERROR_LIBRARY_NOT_FOUND},
    {"FUNCTION_NOT_FOUND", NVML_ERROR_FUNCTION_NOT_FOUND},
    {"CORRUPTED_INFOROM", NVML_ERROR_CORRUPTED_INFOROM},
    {"GPU_IS_LOST", NVML_ERROR_GPU_IS_LOST},
    {"RESET_REQUIRED", NVML_ERROR_RESET_REQUIRED},
    {"OPERATING_SYSTEM", NVML_ERROR_OPERATING_SYSTEM},
    {"LIB_RM_VERSION_MISMATCH", NVML_ERROR_LIB_RM_VERSION_MISMATCH},
    {"IN_USE", NVML_ERROR_IN_USE},
    {"MEMORY", NVML_ERROR_MEMORY},
    {"NO_DATA", NVML_ERROR_NO_DATA},
    {"UNKNOWN", NVML_ERROR_UNKNOWN},
};

int fake_return_code(const char *name, nvmlReturn_t *code) {
    if (strncasecmp(name, "NVML_ERROR_", 11) == 0) name += 11;
    else if (strncasecmp(name, "NVML_", 5) == 0) name += 5;
    for (size_t i = 0; i < sizeof RETURN_NAMES / sizeof RETURN_NAMES[0]; i++) {
        if (strcasecmp(name, RETURN_NAMES[i].name) == 0) {
            *code = RETURN_NAMES[i].code;
            return 0;
        }
    }
    char *end;
    errno = 0;
    long v = strtol(name, &end, 10);
    if (errno == 0 && end != name && *end == '\0' && v >= 0 && v <= 999) {
        *code = (nvmlReturn_t)v;
        return 0;
    }
    return -1;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
    return s;
}

static int parse_double(parser *p, const char *key, const char *text, double *out) {
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !isfinite(v))
        return fail(p, "%s: '%s' is not a number", key, text);
    *out = v;
    return 0;
}

static int parse_nonneg(parser *p, const char *key, const char *text, double *out) {
    if (parse_double(p, key, text, out) != 0) return -1;
    if (*out < 0) return fail(p, "%s: must not be negative (got %s)", key, text);
    return 0;
}

static int parse_positive(parser *p, const char *key, const char *text, double *out) {
    if (parse_double(p, key, text, out) != 0) return -1;
    if (!(*out > 0)) return fail(p, "%s: must be positive (got %s)", key, text);
    return 0;
}

static int parse_load_value(parser *p, const char *key, const char *text, double *out) {
    if (parse_double(p, key, text, out) != 0) return -1;
    if (*out < 0 || *out > 1) return fail(p, "%s: a load lies in [0, 1] (got %s)", key, text);
    return 0;
}

static int parse_bool(parser *p, const char *key, const char *text, int *out) {
    if (strcmp(text, "0") == 0 || strcasecmp(text, "false") == 0 || strcasecmp(text, "no") == 0) *out = 0;
    else if (strcmp(text, "1") == 0 || strcasecmp(text, "true") == 0 || strcasecmp(text, "yes") == 0) *out = 1;
    else return fail(p, "%s: expected 0 or 1 (got '%s')", key, text);
    return 0;
}

static int parse_uint(parser *p, const char *key, const char *text, unsigned long long max,
                      unsigned long long *out) {
    char *end;
    errno = 0;
    if (text[0] == '-') return fail(p, "%s: must not be negative (got %s)", key, text);
    int hex = text[0] == '0' && (text[1] == 'x' || text[1] == 'X');
    unsigned long long v = strtoull(text, &end, hex ? 16 : 10); /* "0123" is 123, not octal */
    if (errno != 0 || end == text || *end != '\0' || v > max)
        return fail(p, "%s: '%s' is not an integer in [0, %llu]", key, text, max);
    *out = v;
    return 0;
}

static int copy_string(parser *p, const char *key, const char *text, char *dst, size_t len) {
    if (text[0] == '\0') return fail(p, "%s: empty value", key);
    if (strlen(text) >= len) return fail(p, "%s: longer than %zu characters", key, len - 1);
    memcpy(dst, text, strlen(text) + 1);
    return 0;
}

/* Splits s in place on blanks; returns the number of words (at most max; -1 if more). */
static int split(char *s, char **words, int max) {
    int n = 0;
    char *save = NULL;
    for (char *w = strtok_r(s, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
        if (n == max) return -1;
        words[n++] = w;
    }
    return n;
}

/* A time window "<from_ms> <to_ms|end>" of key; to must be after from. */
static int parse_window(parser *p, const char *key, const char *from, const char *to, double *from_ms,
                        double *to_ms) {
    char what[64];
    snprintf(what, sizeof what, "%s from_ms", key);
    if (parse_double(p, what, from, from_ms) != 0) return -1;
    snprintf(what, sizeof what, "%s to_ms", key);
    if (strcmp(to, "end") == 0 || strcmp(to, "inf") == 0) *to_ms = INFINITY;
    else if (parse_double(p, what, to, to_ms) != 0) return -1;
    if (!(*to_ms > *from_ms)) return fail(p, "%s: to_ms must be after from_ms", key);
    return 0;
}

static int parse_error_code(parser *p, const char *key, const char *text, nvmlReturn_t *code) {
    if (fake_return_code(text, code) != 0 || *code == NVML_SUCCESS)
        return fail(p, "%s: unknown NVML return code '%s' (use e.g. GPU_IS_LOST, NOT_SUPPORTED)", key, text);
    return 0;
}

/* error = <function pattern> <from_ms> <to_ms|end> <RETURN_CODE> */
static int parse_error(parser *p, char *value, fake_faults *f) {
    char *w[4];
    if (split(value, w, 4) != 4) return fail(p, "error: expected '<function> <from_ms> <to_ms|end> <CODE>'");
    if (f->nerrors == FAKE_MAX_ERRORS) return fail(p, "error: more than %d in one section", FAKE_MAX_ERRORS);
    fake_error *e = &f->errors[f->nerrors];
    if (copy_string(p, "error", w[0], e->func, sizeof e->func) != 0) return -1;
    if (parse_window(p, "error", w[1], w[2], &e->from_ms, &e->to_ms) != 0) return -1;
    if (parse_error_code(p, "error", w[3], &e->code) != 0) return -1;
    f->nerrors++;
    return 0;
}

/* error_call = <function pattern> <n> <count|end> <RETURN_CODE> */
static int parse_error_call(parser *p, char *value, fake_faults *f) {
    char *w[4];
    if (split(value, w, 4) != 4) return fail(p, "error_call: expected '<function> <n> <count|end> <CODE>'");
    if (f->nerror_calls == FAKE_MAX_ERRORS)
        return fail(p, "error_call: more than %d in one section", FAKE_MAX_ERRORS);
    fake_error_call *e = &f->error_calls[f->nerror_calls];
    if (copy_string(p, "error_call", w[0], e->func, sizeof e->func) != 0) return -1;
    if (parse_uint(p, "error_call n", w[1], 1ull << 62, &e->n) != 0) return -1;
    if (e->n == 0) return fail(p, "error_call: n counts from 1 (the first matching call)");
    if (strcmp(w[2], "end") == 0 || strcmp(w[2], "inf") == 0) {
        e->count = FAKE_COUNT_END;
    } else {
        if (parse_uint(p, "error_call count", w[2], 1ull << 62, &e->count) != 0) return -1;
        if (e->count == 0) return fail(p, "error_call: count must be at least 1 (or end)");
    }
    if (parse_error_code(p, "error_call", w[3], &e->code) != 0) return -1;
    f->nerror_calls++;
    return 0;
}

/* delay = <function pattern> <from_ms> <to_ms|end> <delay_ms> */
static int parse_delay(parser *p, char *value, fake_faults *f) {
    char *w[4];
    if (split(value, w, 4) != 4) return fail(p, "delay: expected '<function> <from_ms> <to_ms|end> <delay_ms>'");
    if (f->ndelays == FAKE_MAX_ERRORS) return fail(p, "delay: more than %d in one section", FAKE_MAX_ERRORS);
    fake_delay *e = &f->delays[f->ndelays];
    if (copy_string(p, "delay", w[0], e->func, sizeof e->func) != 0) return -1;
    if (parse_window(p, "delay", w[1], w[2], &e->from_ms, &e->to_ms) != 0) return -1;
    if (parse_nonneg(p, "delay delay_ms", w[3], &e->delay_ms) != 0) return -1;
    /* A day is far beyond any test's patience and keeps the sleep's arithmetic small. */
    if (e->delay_ms > 86400e3) return fail(p, "delay: delay_ms above a day (got %s)", w[3]);
    f->ndelays++;
    return 0;
}

/* A signed whole number of mJ: an integer (exact to 64 bits) or a number such as 1e9 or -5e6. */
static int parse_delta_mj(parser *p, const char *key, const char *text, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno == 0 && end != text && *end == '\0') {
        *out = v;
        return 0;
    }
    double x;
    if (parse_double(p, key, text, &x) != 0) return -1;
    if (x != floor(x) || fabs(x) >= 9.2e18)
        return fail(p, "%s: '%s' is not a whole number of mJ in 64 bits", key, text);
    *out = (long long)x;
    return 0;
}

/* counter_jump = <at_ms> <delta_mj> */
static int parse_counter_jump(parser *p, char *value, fake_device *d) {
    char *w[2];
    if (split(value, w, 2) != 2) return fail(p, "counter_jump: expected '<at_ms> <delta_mj>'");
    if (d->njumps == FAKE_MAX_COUNTER_FAULTS)
        return fail(p, "counter_jump: more than %d", FAKE_MAX_COUNTER_FAULTS);
    fake_counter_jump *j = &d->jumps[d->njumps];
    if (parse_double(p, "counter_jump at_ms", w[0], &j->at_ms) != 0) return -1;
    if (parse_delta_mj(p, "counter_jump delta_mj", w[1], &j->delta_mj) != 0) return -1;
    d->njumps++;
    return 0;
}

/* counter_reset = <at_ms> */
static int parse_counter_reset(parser *p, char *value, fake_device *d) {
    char *w[1];
    if (split(value, w, 1) != 1) return fail(p, "counter_reset: expected '<at_ms>'");
    if (d->nresets == FAKE_MAX_COUNTER_FAULTS)
        return fail(p, "counter_reset: more than %d", FAKE_MAX_COUNTER_FAULTS);
    if (parse_double(p, "counter_reset at_ms", w[0], &d->reset_ms[d->nresets]) != 0) return -1;
    d->nresets++;
    return 0;
}

/* counter_stuck = <from_ms> <to_ms|end> */
static int parse_counter_stuck(parser *p, char *value, fake_device *d) {
    char *w[2];
    if (split(value, w, 2) != 2) return fail(p, "counter_stuck: expected '<from_ms> <to_ms|end>'");
    if (d->nstuck == FAKE_MAX_COUNTER_FAULTS)
        return fail(p, "counter_stuck: more than %d", FAKE_MAX_COUNTER_FAULTS);
    fake_window *win = &d->stuck[d->nstuck];
    if (parse_window(p, "counter_stuck", w[0], w[1], &win->from_ms, &win->to_ms) != 0) return -1;
    d->nstuck++;
    return 0;
}

/* load = <x> | constant <x> | square <period_ms> <duty> [<phase_ms> [<high> [<low>]]] */
static int parse_load(parser *p, char *value, fake_load *l) {
    char *w[6];
    int n = split(value, w, 6);
    if (n < 1) return fail(p, "load: empty value");
    if (strcmp(w[0], "constant") == 0) {
        if (n != 2) return fail(p, "load: expected 'constant <load>'");
        l->kind = FAKE_LOAD_CONSTANT;
        return parse_load_value(p, "load", w[1], &l->level);
    }
    if (strcmp(w[0], "square") == 0) {
        if (n < 3) return fail(p, "load: expected 'square <period_ms> <duty> [<phase_ms> [<high> [<low>]]]'");
        l->kind = FAKE_LOAD_SQUARE;
        l->phase_ms = 0;
        l->high = 1;
        l->low = 0;
        if (parse_positive(p, "load period_ms", w[1], &l->period_ms) != 0) return -1;
        if (parse_load_value(p, "load duty", w[2], &l->duty) != 0) return -1;
        if (n > 3 && parse_nonneg(p, "load phase_ms", w[3], &l->phase_ms) != 0) return -1;
        if (n > 4 && parse_load_value(p, "load high", w[4], &l->high) != 0) return -1;
        if (n > 5 && parse_load_value(p, "load low", w[5], &l->low) != 0) return -1;
        return 0;
    }
    if (n != 1) return fail(p, "load: expected '<load>', 'constant <load>' or 'square ...'");
    l->kind = FAKE_LOAD_CONSTANT;
    return parse_load_value(p, "load", w[0], &l->level);
}

/* segment = <from_ms> <to_ms> <load> */
static int parse_segment(parser *p, char *value, fake_load *l) {
    char *w[3];
    if (split(value, w, 3) != 3) return fail(p, "segment: expected '<from_ms> <to_ms> <load>'");
    if (l->nsegments == FAKE_MAX_SEGMENTS) return fail(p, "segment: more than %d", FAKE_MAX_SEGMENTS);
    fake_segment *s = &l->segments[l->nsegments];
    if (parse_double(p, "segment from_ms", w[0], &s->from_ms) != 0) return -1;
    if (parse_double(p, "segment to_ms", w[1], &s->to_ms) != 0) return -1;
    if (!(s->to_ms > s->from_ms)) return fail(p, "segment: to_ms must be after from_ms");
    if (parse_load_value(p, "segment load", w[2], &s->load) != 0) return -1;
    l->nsegments++;
    return 0;
}

/* PCI bus id "DDDDDDDD:BB:DD.F" or "DDDD:BB:DD.F" (the function is ignored, as NVML reports .0). */
static int parse_pci(parser *p, const char *text, fake_device *d) {
    unsigned dom, bus, dev, fn;
    int used = 0;
    if (sscanf(text, "%x:%x:%x.%x%n", &dom, &bus, &dev, &fn, &used) != 4 || text[used] != '\0' || bus > 0xff ||
        dev > 0x1f || fn > 7)
        return fail(p, "pci_bus_id: expected 'DDDDDDDD:BB:DD.F' (got '%s')", text);
    d->pci_domain = dom;
    d->pci_bus = bus;
    d->pci_device = dev;
    return 0;
}

/* Splits a CSV line in place on commas (no quoting: sweeps are plain numbers); returns the number of cells
 * (at most max; -1 if more).  Cells are trimmed. */
static int split_csv(char *s, char **cells, int max) {
    int n = 0;
    for (char *c = s;;) {
        char *comma = strchr(c, ',');
        if (comma) *comma = '\0';
        if (n == max) return -1;
        cells[n++] = trim(c);
        if (!comma) break;
        c = comma + 1;
    }
    return n;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#define SWEEP_MAX_ROWS 4096
#define SWEEP_MAX_COLS 32

/* sweep = <file.csv>: a power-limit sweep (header with power_limit_w, time_per_step_s, avg_power_w; other
 * columns ignored; rows at the same cap averaged).  A relative path is taken from the scenario file's folder.
 * The device's power at load 1 becomes avg_power_w interpolated at the limit in force. */
static int parse_sweep(parser *p, const char *value, fake_device *d) {
    char path[4096];
    if (value[0] == '\0') return fail(p, "sweep: empty value");
    if (value[0] == '/') {
        snprintf(path, sizeof path, "%s", value);
    } else {
        const char *slash = strrchr(p->path, '/');
        int dirlen = slash ? (int)(slash - p->path) + 1 : 0;
        if (snprintf(path, sizeof path, "%.*s%s", dirlen, p->path, value) >= (int)sizeof path)
            return fail(p, "sweep: path too long");
    }
    FILE *f = fopen(path, "r");
    if (!f) return fail(p, "sweep: cannot open %s: %s", path, strerror(errno));
    double *cap = malloc(3 * SWEEP_MAX_ROWS * sizeof(double));
    if (!cap) {
        fclose(f);
        return fail(p, "sweep: out of memory");
    }
    double *pw = cap + SWEEP_MAX_ROWS, *order = pw + SWEEP_MAX_ROWS;
    char buf[LINE_MAX_LEN];
    char *cells[SWEEP_MAX_COLS];
    int col_cap = -1, col_time = -1, col_power = -1, line = 0, rows = 0, rc = 0;
    while (rc == 0 && fgets(buf, sizeof buf, f)) {
        line++;
        char *text = trim(buf);
        if (line == 1) {
            int n = split_csv(text, cells, SWEEP_MAX_COLS);
            for (int i = 0; i < n; i++) {
                if (strcmp(cells[i], "power_limit_w") == 0) col_cap = i;
                else if (strcmp(cells[i], "time_per_step_s") == 0) col_time = i;
                else if (strcmp(cells[i], "avg_power_w") == 0) col_power = i;
            }
            if (n < 0 || col_cap < 0 || col_time < 0 || col_power < 0)
                rc = fail(p, "sweep: %s:1: the header needs the columns power_limit_w, time_per_step_s and "
                             "avg_power_w", path);
            continue;
        }
        if (*text == '\0') continue;
        int n = split_csv(text, cells, SWEEP_MAX_COLS);
        int need = col_cap > col_time ? col_cap : col_time;
        if (col_power > need) need = col_power;
        if (n <= need) {
            rc = fail(p, "sweep: %s:%d: fewer cells than the header names", path, line);
            break;
        }
        if (rows == SWEEP_MAX_ROWS) {
            rc = fail(p, "sweep: %s: more than %d rows", path, SWEEP_MAX_ROWS);
            break;
        }
        const int cols[3] = {col_cap, col_time, col_power};
        double v[3];
        for (int k = 0; k < 3 && rc == 0; k++) {
            char *end;
            errno = 0;
            v[k] = strtod(cells[cols[k]], &end);
            if (errno || end == cells[cols[k]] || *end || !isfinite(v[k]) || v[k] <= 0)
                rc = fail(p, "sweep: %s:%d: '%s' is not a positive number", path, line, cells[cols[k]]);
        }
        if (rc) break;
        cap[rows] = v[0];
        pw[rows] = v[2];
        rows++;
    }
    fclose(f);
    if (rc) {
        free(cap);
        return rc;
    }
    /* Distinct caps, ascending, with the mean power of their rows. */
    for (int i = 0; i < rows; i++) order[i] = cap[i];
    qsort(order, (size_t)rows, sizeof order[0], cmp_double);
    int n = 0;
    for (int i = 0; i < rows; i++) {
        if (i > 0 && order[i] == order[i - 1]) continue;
        if (n == FAKE_MAX_SWEEP) {
            free(cap);
            return fail(p, "sweep: %s: more than %d distinct caps", path, FAKE_MAX_SWEEP);
        }
        double sum = 0;
        int count = 0;
        for (int j = 0; j < rows; j++) {
            if (cap[j] == order[i]) {
                sum += pw[j];
                count++;
            }
        }
        d->sweep_cap_w[n] = order[i];
        d->sweep_power_w[n] = sum / count;
        n++;
    }
    free(cap);
    if (n < 2) return fail(p, "sweep: %s: needs at least 2 distinct caps", path);
    d->nsweep = n;
    return 0;
}

static int global_key(parser *p, const char *key, char *value) {
    fake_scenario *sc = p->sc;
    if (strcmp(key, "driver_version") == 0)
        return copy_string(p, key, value, sc->driver_version, sizeof sc->driver_version);
    if (strcmp(key, "init_error") == 0) {
        if (fake_return_code(value, &sc->init_error) != 0)
            return fail(p, "init_error: unknown NVML return code '%s'", value);
        return 0;
    }
    if (strcmp(key, "error") == 0) return parse_error(p, value, &sc->faults);
    if (strcmp(key, "delay") == 0) return parse_delay(p, value, &sc->faults);
    if (strcmp(key, "error_call") == 0) return parse_error_call(p, value, &sc->faults);
    return fail(p, "unknown global key '%s' (device keys belong after a [device] line)", key);
}

static int device_key(parser *p, const char *key, char *value) {
    fake_device *d = p->dev;
    unsigned long long u;
    if (strcmp(key, "name") == 0) return copy_string(p, key, value, d->name, sizeof d->name);
    if (strcmp(key, "uuid") == 0) {
        if (strncmp(value, "GPU-", 4) != 0) return fail(p, "uuid: must start with 'GPU-'");
        return copy_string(p, key, value, d->uuid, sizeof d->uuid);
    }
    if (strcmp(key, "pci_bus_id") == 0) return parse_pci(p, value, d);
    if (strcmp(key, "pci_device_id") == 0) {
        if (parse_uint(p, key, value, 0xffffffffull, &u) != 0) return -1;
        d->pci_device_id = (unsigned)u;
        return 0;
    }
    if (strcmp(key, "pci_subsystem_id") == 0) {
        if (parse_uint(p, key, value, 0xffffffffull, &u) != 0) return -1;
        d->pci_subsystem_id = (unsigned)u;
        return 0;
    }
    if (strcmp(key, "min_limit_w") == 0) return parse_positive(p, key, value, &d->min_limit_w);
    if (strcmp(key, "max_limit_w") == 0) return parse_positive(p, key, value, &d->max_limit_w);
    if (strcmp(key, "default_limit_w") == 0) return parse_positive(p, key, value, &d->default_limit_w);
    if (strcmp(key, "limit_w") == 0) {
        p->limit_set = 1;
        return parse_positive(p, key, value, &d->initial_limit_w);
    }
    if (strcmp(key, "idle_w") == 0) return parse_nonneg(p, key, value, &d->idle_w);
    if (strcmp(key, "loaded_w") == 0) {
        p->loaded_set = 1;
        return parse_nonneg(p, key, value, &d->loaded_w);
    }
    if (strcmp(key, "sweep") == 0) {
        p->sweep_line = p->line;
        return parse_sweep(p, value, d);
    }
    if (strcmp(key, "load") == 0) return parse_load(p, value, &d->load);
    if (strcmp(key, "segment") == 0) return parse_segment(p, value, &d->load);
    if (strcmp(key, "burst_overshoot") == 0) return parse_bool(p, key, value, &d->burst_overshoot);
    if (strcmp(key, "burst_factor") == 0) {
        if (parse_double(p, key, value, &d->burst_factor) != 0) return -1;
        if (d->burst_factor < 1) return fail(p, "burst_factor: must be at least 1");
        return 0;
    }
    if (strcmp(key, "energy_counter") == 0) return parse_bool(p, key, value, &d->energy_counter);
    if (strcmp(key, "energy_initial_mj") == 0) {
        /* Leave head room so that the counter cannot wrap in any test. */
        return parse_uint(p, key, value, 1ull << 62, &d->energy_initial_mj);
    }
    if (strcmp(key, "counter_jump") == 0) return parse_counter_jump(p, value, d);
    if (strcmp(key, "counter_reset") == 0) return parse_counter_reset(p, value, d);
    if (strcmp(key, "counter_stuck") == 0) return parse_counter_stuck(p, value, d);
    if (strcmp(key, "counter_step_ms") == 0) return parse_positive(p, key, value, &d->counter_step_ms);
    if (strcmp(key, "counter_phase_ms") == 0) {
        p->phase_set = 1;
        return parse_nonneg(p, key, value, &d->counter_phase_ms);
    }
    if (strcmp(key, "instant_period_ms") == 0) return parse_positive(p, key, value, &d->instant_period_ms);
    if (strcmp(key, "instant_phase_ms") == 0) {
        p->instant_phase_set = 1;
        return parse_nonneg(p, key, value, &d->instant_phase_ms);
    }
    if (strcmp(key, "average_window_ms") == 0) return parse_positive(p, key, value, &d->average_window_ms);
    if (strcmp(key, "energy_latency_ms") == 0) return parse_nonneg(p, key, value, &d->energy_latency_ms);
    if (strcmp(key, "energy_latency_jitter_ms") == 0)
        return parse_nonneg(p, key, value, &d->energy_latency_jitter_ms);
    if (strcmp(key, "allow_set_limit") == 0) return parse_bool(p, key, value, &d->allow_set_limit);
    if (strcmp(key, "set_limit_noop") == 0) return parse_bool(p, key, value, &d->set_limit_noop);
    if (strcmp(key, "error") == 0) return parse_error(p, value, &d->faults);
    if (strcmp(key, "delay") == 0) return parse_delay(p, value, &d->faults);
    if (strcmp(key, "error_call") == 0) return parse_error_call(p, value, &d->faults);
    return fail(p, "unknown device key '%s'", key);
}

/* Bus numbers of the eight GPUs of an HGX H100 board, for devices that do not name theirs. */
static const unsigned DEFAULT_BUS[8] = {0x19, 0x3b, 0x4c, 0x5d, 0x9b, 0xbb, 0xcb, 0xdb};

static void device_defaults(fake_device *d, unsigned index) {
    memset(d, 0, sizeof *d);
    d->index = index;
    snprintf(d->name, sizeof d->name, "NVIDIA H100 80GB HBM3");
    snprintf(d->uuid, sizeof d->uuid, "GPU-fa4e0000-0000-4000-8000-%012x", 0x1000u + index);
    d->pci_bus = index < 8 ? DEFAULT_BUS[index] : 0x20 + index;
    d->pci_device_id = 0x233010DEu;
    d->pci_subsystem_id = 0x16C110DEu;
    d->min_limit_w = 200;
    d->max_limit_w = 700;
    d->default_limit_w = 700;
    d->idle_w = 70;
    d->loaded_w = 700;
    d->load.kind = FAKE_LOAD_CONSTANT;
    d->load.level = 0;
    d->burst_factor = 1.15;
    d->energy_counter = 1;
    d->energy_initial_mj = 123456789ull + 987654321ull * index;
    d->counter_step_ms = 100;
    d->instant_period_ms = 100;
    d->average_window_ms = 1000;
    d->energy_latency_ms = 3;
    d->allow_set_limit = 1;
}

static int cmp_segment(const void *a, const void *b) {
    const fake_segment *x = a, *y = b;
    return (x->from_ms > y->from_ms) - (x->from_ms < y->from_ms);
}

static int cmp_window(const void *a, const void *b) {
    const fake_window *x = a, *y = b;
    return (x->from_ms > y->from_ms) - (x->from_ms < y->from_ms);
}

/* Checks the device just finished and fills the defaults that depend on other keys. */
static int device_finish(parser *p) {
    fake_device *d = p->dev;
    if (!d) return 0;
    p->line = p->device_line;
    if (!p->limit_set) d->initial_limit_w = d->default_limit_w;
    if (d->nsweep > 0 && p->loaded_set) {
        p->line = p->sweep_line;
        return fail(p, "device %u: sweep and loaded_w both set (the sweep gives the loaded power)", d->index);
    }
    if (!(d->min_limit_w <= d->max_limit_w))
        return fail(p, "device %u: min_limit_w %g > max_limit_w %g", d->index, d->min_limit_w, d->max_limit_w);
    if (d->default_limit_w < d->min_limit_w || d->default_limit_w > d->max_limit_w)
        return fail(p, "device %u: default_limit_w %g outside [min_limit_w, max_limit_w]", d->index,
                    d->default_limit_w);
    if (d->initial_limit_w < d->min_limit_w || d->initial_limit_w > d->max_limit_w)
        return fail(p, "device %u: limit_w %g outside [min_limit_w, max_limit_w]", d->index, d->initial_limit_w);
    if (d->max_limit_w > 4e6) return fail(p, "device %u: max_limit_w above 4 MW", d->index);
    if (!p->phase_set) d->counter_phase_ms = fmod(23.0 + 41.0 * d->index, d->counter_step_ms);
    if (d->counter_phase_ms >= d->counter_step_ms)
        return fail(p, "device %u: counter_phase_ms must be below counter_step_ms", d->index);
    if (!p->instant_phase_set) d->instant_phase_ms = fmod(d->counter_phase_ms, d->instant_period_ms);
    if (d->instant_phase_ms >= d->instant_period_ms)
        return fail(p, "device %u: instant_phase_ms must be below instant_period_ms", d->index);
    if (d->load.kind == FAKE_LOAD_SQUARE && d->load.phase_ms >= d->load.period_ms)
        return fail(p, "device %u: the square wave's phase_ms must be below its period_ms", d->index);
    qsort(d->load.segments, (size_t)d->load.nsegments, sizeof d->load.segments[0], cmp_segment);
    for (int i = 1; i < d->load.nsegments; i++) {
        if (d->load.segments[i].from_ms < d->load.segments[i - 1].to_ms)
            return fail(p, "device %u: segments overlap (%g-%g and %g-%g)", d->index,
                        d->load.segments[i - 1].from_ms, d->load.segments[i - 1].to_ms,
                        d->load.segments[i].from_ms, d->load.segments[i].to_ms);
    }
    qsort(d->stuck, (size_t)d->nstuck, sizeof d->stuck[0], cmp_window);
    for (int i = 1; i < d->nstuck; i++) {
        if (d->stuck[i].from_ms < d->stuck[i - 1].to_ms)
            return fail(p, "device %u: counter_stuck windows overlap (%g-%g and %g-%g)", d->index,
                        d->stuck[i - 1].from_ms, d->stuck[i - 1].to_ms, d->stuck[i].from_ms, d->stuck[i].to_ms);
    }
    return 0;
}

static int check_unique(parser *p) {
    fake_scenario *sc = p->sc;
    for (unsigned i = 0; i < sc->ndevices; i++) {
        for (unsigned j = 0; j < i; j++) {
            const fake_device *a = &sc->devices[j], *b = &sc->devices[i];
            p->line = 0;
            if (strcmp(a->uuid, b->uuid) == 0) return fail(p, "devices %u and %u have the same uuid", j, i);
            if (a->pci_domain == b->pci_domain && a->pci_bus == b->pci_bus && a->pci_device == b->pci_device)
                return fail(p, "devices %u and %u have the same pci_bus_id", j, i);
        }
    }
    return 0;
}

static int parse_line(parser *p, char *raw) {
    /* A comment starts at a '#' at the beginning of the line or after a blank. */
    for (char *c = raw; *c; c++) {
        if (*c == '#' && (c == raw || isspace((unsigned char)c[-1]))) {
            *c = '\0';
            break;
        }
    }
    char *line = trim(raw);
    if (*line == '\0') return 0;
    if (*line == '[') {
        if (strcmp(line, "[device]") != 0) return fail(p, "unknown section %s (only [device])", line);
        int line_no = p->line;
        if (device_finish(p) != 0) return -1;
        p->line = line_no;
        if (p->sc->ndevices == FAKE_MAX_DEVICES) return fail(p, "more than %d devices", FAKE_MAX_DEVICES);
        p->dev = &p->sc->devices[p->sc->ndevices];
        device_defaults(p->dev, p->sc->ndevices);
        p->sc->ndevices++;
        p->device_line = line_no;
        p->phase_set = p->instant_phase_set = p->limit_set = p->loaded_set = p->sweep_line = 0;
        return 0;
    }
    char *eq = strchr(line, '=');
    if (!eq) return fail(p, "expected 'key = value' or '[device]'");
    *eq = '\0';
    char *key = trim(line), *value = trim(eq + 1);
    if (*key == '\0') return fail(p, "missing key before '='");
    return p->dev ? device_key(p, key, value) : global_key(p, key, value);
}

int fake_scenario_load(const char *path, fake_scenario *sc, char *msg, size_t msglen) {
    parser p = {.path = path, .msg = msg, .msglen = msglen, .sc = sc};
    memset(sc, 0, sizeof *sc);
    snprintf(sc->driver_version, sizeof sc->driver_version, "580.159.04");
    sc->init_error = NVML_SUCCESS;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(msg, msglen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    char buf[LINE_MAX_LEN];
    int rc = 0;
    while (rc == 0 && fgets(buf, sizeof buf, f)) {
        p.line++;
        size_t n = strlen(buf);
        if (n == sizeof buf - 1 && buf[n - 1] != '\n' && !feof(f)) {
            rc = fail(&p, "line longer than %d characters", LINE_MAX_LEN - 2);
            break;
        }
        rc = parse_line(&p, buf);
    }
    if (rc == 0 && ferror(f)) {
        snprintf(msg, msglen, "%s: read error: %s", path, strerror(errno));
        rc = -1;
    }
    fclose(f);
    if (rc == 0) rc = device_finish(&p);
    if (rc == 0) rc = check_unique(&p);
    return rc;
}
