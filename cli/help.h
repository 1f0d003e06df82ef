/* `joulecap help [TOPIC]`: the reference docs installed with the tool.  They are looked for beside the
 * executable: joulecap/_docs/ in the Python package (the tool is joulecap/bin/joulecap), and _docs/ in a CMake
 * build folder (a link to the source tree's docs/). */
#ifndef JC_CLI_HELP_H
#define JC_CLI_HELP_H

#include <stddef.h>

/* The folder of the docs into buf; 0 when none is installed (buf then says where they were looked for). */
int jc_cli_docs_dir(char *buf, size_t len);

/* Prints the list of commands and of doc topics with their titles. */
int jc_cli_help_topics(void);

/* Prints the doc TOPIC ("cli" or "cli.md") to stdout; exit code (2 for an unknown topic, with the list). */
int jc_cli_help_topic(const char *topic);

#endif
