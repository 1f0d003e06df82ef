/* Errors of the joulecap tool: messages on stderr ("joulecap: <what>: <detail>" and what to do) and the exit
 * code each kind of failure means. */
#ifndef JC_CLI_ERRORS_H
#define JC_CLI_ERRORS_H

#include "cli.h"

/* "joulecap: <fmt>" and a newline on stderr. */
void jc_cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "joulecap: <fmt>\nTry 'joulecap <cmd> --help' ..." (cmd NULL: 'joulecap --help') and returns JC_EXIT_USAGE. */
int jc_cli_usage_err(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Exit code for a failed library call: usage errors for bad arguments, failures otherwise. */
int jc_cli_exit_for(jc_status st);

/* Opens a context and, on failure, prints "joulecap: <what>: <detail>" plus a hint and returns the exit code
 * (JC_EXIT_USAGE for a bad GPU selection, JC_EXIT_FAILURE otherwise); 0 on success. */
int jc_cli_open(jc_context **ctx, const jc_options *opts, const char *cmd);
/* For run/monitor: when --gpu names GPUs but none could be opened (no NVML), prints why and returns
 * JC_EXIT_USAGE; else 0. */
int jc_cli_check_gpus(jc_context *ctx, const char *sel);

#endif
