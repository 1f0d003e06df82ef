/* What the joulecap tool writes for people and programs: JSON and CSV text, numbers, device labels, command
 * lines.  The one J-to-kWh factor of the tool is here. */
#ifndef JC_CLI_OUTPUT_H
#define JC_CLI_OUTPUT_H

#include <stddef.h>
#include <stdio.h>

#include "cli.h"

/* A JSON string with quotes; control characters escaped, invalid UTF-8 replaced by U+FFFD; NULL -> null. */
void jc_json_str(FILE *f, const char *s);
/* A JSON number; NaN and infinities -> null; whole numbers below 1e15 without an exponent. */
void jc_json_num(FILE *f, double v);
/* "key": (with the leading comma when !first) */
void jc_json_key(FILE *f, int *first, const char *key);

/* A CSV cell: quoted when it holds a comma, quote, CR or LF; nothing for NULL. */
void jc_csv_str(FILE *f, const char *s);
/* A CSV number; empty when NaN. */
void jc_csv_num(FILE *f, double v);

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

#endif
