/* `--live` of run and monitor: a one-line power readout on the terminal (stderr), refreshed twice a second by a
 * thread of its own while the command runs; nothing when stderr is not a terminal. */
#ifndef JC_CLI_LIVE_H
#define JC_CLI_LIVE_H

#include "cli.h"

typedef struct jc_cli_live jc_cli_live;

/* Starts the readout when stderr is a terminal; returns NULL otherwise (and on failure: the readout is a
 * convenience, never a reason to fail).  The context must outlive jc_cli_live_stop(). */
jc_cli_live *jc_cli_live_start(jc_context *ctx);
/* Stops the thread and clears the line.  NULL is allowed. */
void jc_cli_live_stop(jc_cli_live *live);

/* The line itself (also for tests): "  live  12.3 s | GPU 0 301 W | CPU 12 W | total 313 W | 3.86 kJ". */
void jc_cli_live_format(jc_context *ctx, double elapsed_s, char *buf, size_t len);

#endif
