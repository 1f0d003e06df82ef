/* Command-line options shared by info, run and monitor. */
#include "options.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "errors.h"

int jc_cli_parse_seconds(const char *text, double lo, double hi, double *out) {
    if (!text || !*text) return 0;
    const char *p = text;
    while (isspace((unsigned char)*p)) p++;
    /* Plain decimal numbers only: no hex, no "inf"/"nan" spellings. */
    for (const char *q = p; *q; q++) {
        if (isalpha((unsigned char)*q) && *q != 'e' && *q != 'E') {
            if (strcmp(q, "s") == 0 || strcmp(q, "ms") == 0) break;
            return 0;
        }
    }
    char *end = NULL;
    errno = 0;
    double v = strtod(p, &end);
    if (end == p || errno == ERANGE) return 0;
    if (strcmp(end, "ms") == 0)
        v /= 1000.0;
    else if (strcmp(end, "s") != 0 && *end != '\0')
        return 0;
    if (!isfinite(v) || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

static int opt_value(const char *cmd, int argc, char **argv, int *i, const char *name, const char **val) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) == 0 && a[n] == '=') {
        *val = a + n + 1;
        return 0;
    }
    if (*i + 1 >= argc) return jc_cli_usage_err(cmd, "option %s needs a value", name);
    *val = argv[++*i];
    return 0;
}

static int is_opt(const char *a, const char *name) {
    size_t n = strlen(name);
    return strncmp(a, name, n) == 0 && (a[n] == '\0' || (a[n] == '=' && name[1] == '-'));
}

int jc_cli_parse(const char *cmd, int argc, char **argv, unsigned allowed, double lo, double hi,
                 jc_cli_opts *o) {
    memset(o, 0, sizeof *o);
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            if (!(allowed & JC_OPT_COMMAND))
                return jc_cli_usage_err(cmd, "'joulecap %s' does not run a command", cmd);
            if (i >= argc) return jc_cli_usage_err(cmd, "no command after '--'");
            break;
        }
        if (a[0] != '-' || a[1] == '\0') {
            if (allowed & JC_OPT_COMMAND) break; /* the command starts here */
            return jc_cli_usage_err(cmd, "unexpected argument '%s'", a);
        }
        int rc = 0;
        const char *val = NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            o->help = 1;
            return 0;
        } else if ((allowed & JC_OPT_JSON) && strcmp(a, "--json") == 0) {
            o->json = 1;
        } else if ((allowed & JC_OPT_QUIET) && (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0)) {
            o->quiet = 1;
        } else if ((allowed & JC_OPT_LIVE) && strcmp(a, "--live") == 0) {
            o->live = 1;
        } else if ((allowed & JC_OPT_GPU) && (is_opt(a, "--gpu") || is_opt(a, "--gpus") || is_opt(a, "-g"))) {
            const char *name = a[1] == 'g' ? "-g" : (strncmp(a, "--gpus", 6) == 0 ? "--gpus" : "--gpu");
            if ((rc = opt_value(cmd, argc, argv, &i, name, &val))) return rc;
            const char *p = val;
            while (isspace((unsigned char)*p)) p++;
            if (!*p)
                return jc_cli_usage_err(cmd, "empty GPU selection for --gpu: use 'all', 'none', CUDA indices "
                                        "like 0 or 0,2, or UUIDs like GPU-8f3c...");
            o->gpus = val;
        } else if ((allowed & JC_OPT_OUTPUT) && (is_opt(a, "-o") || is_opt(a, "--output"))) {
            if ((rc = opt_value(cmd, argc, argv, &i, a[1] == 'o' ? "-o" : "--output", &val))) return rc;
            if (!*val) return jc_cli_usage_err(cmd, "empty file name for -o");
            o->output = val;
        } else if ((allowed & JC_OPT_INTERVAL) && (is_opt(a, "-i") || is_opt(a, "--interval"))) {
            if ((rc = opt_value(cmd, argc, argv, &i, a[1] == 'i' ? "-i" : "--interval", &val))) return rc;
            if (!jc_cli_parse_seconds(val, lo, hi, &o->interval_s))
                return jc_cli_usage_err(cmd, "bad interval '%s' for -i: use a number of seconds from %g to %g "
                                        "(for example -i 0.1, or -i 100ms)", val, lo, hi);
            o->interval_text = val;
        } else if ((allowed & JC_OPT_COUNTER) && is_opt(a, "--counter-interval")) {
            if ((rc = opt_value(cmd, argc, argv, &i, "--counter-interval", &val))) return rc;
            if (!jc_cli_parse_seconds(val, 0, 60, &o->counter_interval_s))
                return jc_cli_usage_err(cmd, "bad interval '%s' for --counter-interval: use 0 (a read after every "
                                        "counter step) to 60 seconds", val);
            o->counter_text = val;
        } else if (a[1] != '-' && a[2] != '\0' && strchr("oig", a[1]) &&
                   ((a[1] == 'o' && (allowed & JC_OPT_OUTPUT)) || (a[1] == 'i' && (allowed & JC_OPT_INTERVAL)) ||
                    (a[1] == 'g' && (allowed & JC_OPT_GPU)))) {
            /* -ofile, -i0.5, -g0: the value glued to the short option */
            char opt[3] = {'-', a[1], '\0'};
            char *glued[4] = {argv[0], opt, (char *)(a + 2), NULL};
            jc_cli_opts tmp;
            int r = jc_cli_parse(cmd, 3, glued, allowed & ~(unsigned)JC_OPT_COMMAND, lo, hi, &tmp);
            if (r) return r;
            if (a[1] == 'o') o->output = tmp.output;
            if (a[1] == 'g') o->gpus = tmp.gpus;
            if (a[1] == 'i') {
                o->interval_s = tmp.interval_s;
                o->interval_text = tmp.interval_text;
            }
        } else {
            return jc_cli_usage_err(cmd, "unknown option '%s' for 'joulecap %s'", a, cmd);
        }
    }
    if (i < argc) {
        if (!(allowed & JC_OPT_COMMAND)) return jc_cli_usage_err(cmd, "unexpected argument '%s'", argv[i]);
        o->command = argv + i;
        o->command_argc = argc - i;
    }
    return 0;
}


int jc_cli_parse_number(const char *cmd, const char *opt, const char *text, double lo, double hi, double *out) {
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end != '\0' || errno == ERANGE || !isfinite(v)) {
        jc_cli_usage_err(cmd, "%s: '%s' is not a number", opt, text);
        return 0;
    }
    if (v < lo || v > hi) {
        jc_cli_usage_err(cmd, "%s: %g is outside [%g, %g]", opt, v, lo, hi);
        return 0;
    }
    *out = v;
    return 1;
}

int jc_cli_names_gpus(const char *sel) {
    if (!sel) return 0;
    while (isspace((unsigned char)*sel)) sel++;
    return *sel && strcasecmp(sel, "all") != 0 && strcasecmp(sel, "none") != 0;
}
