/* Command-line options shared by info, run and monitor (--gpu, --json, -o, -i, -q, --counter-interval,
 * --help, and the command to run), and the parsing of a number of seconds. */
#ifndef JC_CLI_OPTIONS_H
#define JC_CLI_OPTIONS_H

#include "cli.h"

enum {
    JC_OPT_GPU = 1u << 0,      /* --gpu SEL */
    JC_OPT_JSON = 1u << 1,     /* --json */
    JC_OPT_OUTPUT = 1u << 2,   /* -o FILE, --output FILE */
    JC_OPT_INTERVAL = 1u << 3, /* -i SECONDS, --interval SECONDS */
    JC_OPT_QUIET = 1u << 4,    /* -q, --quiet */
    JC_OPT_COMMAND = 1u << 5,  /* -- CMD ARGS... (or the first non-option argument starts the command) */
    JC_OPT_COUNTER = 1u << 6,  /* --counter-interval SECONDS */
    JC_OPT_LIVE = 1u << 7,     /* --live */
};

typedef struct jc_cli_opts {
    const char *gpus;     /* NULL = all */
    const char *output;   /* NULL = none */
    const char *interval_text;
    double interval_s;    /* valid when interval_text != NULL */
    const char *counter_text;
    double counter_interval_s; /* valid when counter_text != NULL */
    int json, quiet, help, live;
    char **command;       /* NULL-terminated argv of the command, NULL when none */
    int command_argc;
} jc_cli_opts;

/* Parses argv[1..argc) (argv[0] is the subcommand name).  `allowed` is a set of JC_OPT_*; the interval must
 * lie in [lo, hi] seconds.  Returns 0 on success, else prints the message and returns JC_EXIT_USAGE. */
int jc_cli_parse(const char *cmd, int argc, char **argv, unsigned allowed, double lo, double hi,
                 jc_cli_opts *out);

/* Parses a number of seconds ("0.5", "500ms", "2s") into *out; 0 when it is not a finite number in [lo, hi].
 * Prints nothing. */
int jc_cli_parse_seconds(const char *text, double lo, double hi, double *out);

/* Parses the value of option opt of subcommand cmd as a finite number in [lo, hi] into *out: 1 on success, else
 * prints "joulecap: OPT: 'TEXT' is not a number" (or "... is outside [lo, hi]") with the usage hint and
 * returns 0. */
int jc_cli_parse_number(const char *cmd, const char *opt, const char *text, double lo, double hi, double *out);

/* 1 when the --gpu selection names particular GPUs (not NULL, "all" or "none"). */
int jc_cli_names_gpus(const char *sel);

#endif
