/* Helpers shared by the joulecap subcommands: option parsing (--gpu, --json, -o, -i, -q, --help), error
 * messages, JSON and CSV text, and running a child command with signal forwarding. */
#ifndef JC_CLI_COMMON_H
#define JC_CLI_COMMON_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "cli.h"

/* ------------------------------------------------------------------------------------------------------
 * Messages.  Every message starts with "joulecap: " and goes to stderr.
 * ---------------------------------------------------------------------------------------------------- */
void jc_cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "joulecap: <fmt>\nTry 'joulecap <cmd> --help'." and returns JC_EXIT_USAGE. */
int jc_cli_usage_err(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ------------------------------------------------------------------------------------------------------
 * Options common to info / run / monitor.
 * ---------------------------------------------------------------------------------------------------- */
enum {
    JC_OPT_GPU = 1u << 0,      /* --gpu SEL */
    JC_OPT_JSON = 1u << 1,     /* --json */
    JC_OPT_OUTPUT = 1u << 2,   /* -o FILE, --output FILE */
    JC_OPT_INTERVAL = 1u << 3, /* -i SECONDS, --interval SECONDS */
    JC_OPT_QUIET = 1u << 4,    /* -q, --quiet */
    JC_OPT_COMMAND = 1u << 5,  /* -- CMD ARGS... (or the first non-option argument starts the command) */
    JC_OPT_COUNTER = 1u << 6,  /* --counter-interval SECONDS */
};

typedef struct jc_cli_opts {
    const char *gpus;     /* NULL = all */
    const char *output;   /* NULL = none */
    const char *interval_text;
    double interval_s;    /* valid when interval_text != NULL */
    const char *counter_text;
    double counter_interval_s; /* valid when counter_text != NULL */
    int json, quiet, help;
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

/* Opens a context and, on failure, prints "joulecap: <what>: <detail>" plus a hint and returns the exit code
 * (JC_EXIT_USAGE for a bad GPU selection, JC_EXIT_FAILURE otherwise); 0 on success. */
int jc_cli_open(jc_context **ctx, const jc_options *opts, const char *cmd);
/* Exit code for a failed library call: usage errors for bad arguments, failures otherwise. */
int jc_cli_exit_for(jc_status st);
/* 1 when the --gpu selection names particular GPUs (not NULL, "all" or "none"). */
int jc_cli_names_gpus(const char *sel);

/* ------------------------------------------------------------------------------------------------------
 * JSON and CSV text.
 * ---------------------------------------------------------------------------------------------------- */
/* A JSON string with quotes; control characters escaped, invalid UTF-8 replaced by U+FFFD; NULL -> null. */
void jc_json_str(FILE *f, const char *s);
/* A JSON number; NaN and infinities -> null. */
void jc_json_num(FILE *f, double v);
/* "key": (with the leading comma when !first) */
void jc_json_key(FILE *f, int *first, const char *key);
/* A CSV cell: quoted when it holds a comma, quote, CR or LF. */
void jc_csv_str(FILE *f, const char *s);
/* A CSV number; empty when NaN. */
void jc_csv_num(FILE *f, double v);
/* Watts from milliwatts, NaN for 0 (unknown). */
double jc_cli_mw_to_w(unsigned mw);
/* Formats a number for people: "%.*f" with trailing zeros dropped ("700", "212.5"); "n/a" for NaN. */
const char *jc_cli_fmt(char *buf, size_t len, double v, int decimals);
/* "CPU" or "GPU 0" */
const char *jc_cli_device_label(const jc_device_info *info, char *buf, size_t len);
/* The command line as one string, arguments with spaces or quotes put in single quotes. */
void jc_cli_join_command(char **argv, char *buf, size_t len);
/* The reason in an estimate's energy note, without a leading "estimate, because". */
const char *jc_cli_estimate_reason(const char *note);
/* 1 when path ends in ".json" (any case). */
int jc_cli_is_json_path(const char *path);

/* ------------------------------------------------------------------------------------------------------
 * Child commands and signals.
 * ---------------------------------------------------------------------------------------------------- */
/* Installs handlers (sigaction, no SA_RESTART) for SIGINT, SIGTERM, SIGHUP and SIGCHLD that only write the
 * signal number to a self-pipe.  Returns 0, or -1 with a message printed. */
int jc_cli_signals_install(void);
void jc_cli_signals_restore(void);

/* The command should not inherit descriptors that the library opened (the CSV sink, /dev/nvidia*): call
 * jc_cli_fd_snapshot() before jc_open() and jc_cli_fd_cloexec_new() before jc_cli_spawn(); every descriptor
 * opened in between gets FD_CLOEXEC.  Descriptors joulecap itself inherited are passed on untouched. */
void jc_cli_fd_snapshot(void);
void jc_cli_fd_cloexec_new(void);

typedef struct jc_cli_child {
    pid_t pid;
    int exec_errno;      /* 0 when the command started, else why execve failed */
    int status;          /* waitpid status once reaped */
    uint64_t end_ns;     /* jc_now_ns() right after waitpid reaped it */
    int stop_signal;     /* the first SIGINT/SIGTERM/SIGHUP joulecap received while waiting, 0 if none */
    int forwarded;       /* signals passed on to the command */
} jc_cli_child;

/* Everything that needs memory (PATH search list) is prepared before fork; the child only calls
 * async-signal-safe functions.  The caller takes its start timestamp right before calling, and stores it.
 * Returns 0, or -1 (fork failed; message printed). */
int jc_cli_spawn(char **argv, jc_cli_child *child);
/* Waits for the child started by jc_cli_spawn, passing SIGINT/SIGTERM/SIGHUP on to it (except a terminal's
 * own SIGINT, SIGQUIT: the terminal already sent those to the whole foreground process group). */
void jc_cli_wait_child(jc_cli_child *child);
/* Waits for SIGINT/SIGTERM/SIGHUP; returns the signal number. */
int jc_cli_wait_signal(void);
/* The exit code a shell would report for the child: its status, 128+signal, 127/126 for exec failure. */
int jc_cli_child_exit_code(const jc_cli_child *child);

/* ------------------------------------------------------------------------------------------------------
 * Summary of a measured span (run, monitor): what happened and the energy per device.
 * ---------------------------------------------------------------------------------------------------- */
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
/* For run/monitor: when --gpu names GPUs but none could be opened (no NVML), prints why and returns
 * JC_EXIT_USAGE; else 0. */
int jc_cli_check_gpus(jc_context *ctx, const char *sel);

#endif
