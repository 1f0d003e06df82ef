/* The joulecap command-line tool: one file per subcommand, built only on the public header joulecap.h (and
 * joulecap_sim.h, the simulator's, for `profile --simulate`). */
#ifndef JC_CLI_H
#define JC_CLI_H

#include "joulecap.h"

/* Exit codes (documented in `joulecap --help`).  `run` and `monitor -- CMD` exit with the command's own
 * status instead when the command ran. */
enum {
    JC_EXIT_OK = 0,
    JC_EXIT_USAGE = 2,     /* bad command line: unknown option, bad interval, unknown GPU */
    JC_EXIT_FAILURE = 3,   /* joulecap itself failed (cannot open the output file, thread, ...) */
    JC_EXIT_NOT_FOUND = 127, /* the command to run was not found (as in a shell) */
    JC_EXIT_NOT_EXEC = 126   /* the command to run could not be executed */
};

/* Subcommand entry points.  argv[0] is the subcommand's own name ("cap"), its options start at argv[1]
 * (main passes argc - 1, argv + 1); `joulecap help cap` calls jc_cmd_cap(2, {"cap", "--help", NULL}).
 * Each returns the process exit code.  Shared helpers: options.h, errors.h, output.h, child.h, summary.h. */
int jc_cmd_info(int argc, char **argv);
int jc_cmd_run(int argc, char **argv);
int jc_cmd_monitor(int argc, char **argv);
int jc_cmd_cap(int argc, char **argv);
int jc_cmd_profile(int argc, char **argv);
int jc_cmd_plot(int argc, char **argv); /* runs Python: joulecap.plots (cmd_plot.c) */

#endif
