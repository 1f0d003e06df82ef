/* The summary of a measured span (run, monitor): what ran, how it ended, and the energy per device, as text
 * for people (like perf stat), as JSON and as a CSV row. */
#ifndef JC_CLI_SUMMARY_H
#define JC_CLI_SUMMARY_H

#include <stdio.h>

#include "cli.h"

/* Grid intensity and price for gCO2e and cost next to kWh (NaN: not set), from the environment. */
typedef struct jc_cli_carbon {
    double gco2_per_kwh;
    double price_per_kwh;
    char currency[16];
} jc_cli_carbon;

/* Reads JOULECAP_GRID_GCO2_PER_KWH, JOULECAP_PRICE_PER_KWH and JOULECAP_CURRENCY (secure_getenv; unset or
 * empty: not set).  A value that is not a finite number >= 0, an intensity above 3000 g/kWh or a currency that
 * is not a short code prints the error with what to do and returns JC_EXIT_USAGE; else 0. */
int jc_cli_carbon_from_env(const char *cmd, jc_cli_carbon *c);

typedef struct jc_cli_summary {
    char **command;      /* NULL when no command ran */
    int has_status;      /* 1 when the command ran and was reaped */
    int wait_status;     /* its waitpid status */
    int exit_code;       /* what joulecap exits with for it */
    int stop_signal;     /* signal that ended the measurement (monitor without command), 0 if none */
    jc_window_result result;
    int resolved;        /* 0 when the samples covering the end did not arrive in time */
    int ndev;
    jc_device_info info[JC_MAX_DEVICES];
    jc_cli_carbon carbon;
} jc_cli_summary;

/* Fills info[] from the context and the energies from window w (waiting up to timeout_s). Prints a warning
 * when the result did not resolve.  Returns 0, or an exit code after printing the error. */
int jc_cli_summary_collect(jc_context *ctx, jc_window w, double timeout_s, jc_cli_summary *s);
/* perf-stat-like text. */
void jc_cli_summary_text(FILE *f, const jc_cli_summary *s);
/* One JSON object and a newline; extra_key/extra_val add one string member when non-NULL. */
void jc_cli_summary_json(FILE *f, const jc_cli_summary *s, const char *extra_key, const char *extra_val,
                         double interval_s);
/* A header row and one data row. */
void jc_cli_summary_csv(FILE *f, const jc_cli_summary *s);

#endif
