/* Running the measured command: fork + execve with the PATH search prepared before fork, signals joulecap
 * receives passed on to the command through a self-pipe, and no descriptor of the library inherited. */
#ifndef JC_CLI_CHILD_H
#define JC_CLI_CHILD_H

#include <stdint.h>
#include <sys/types.h>

#include "cli.h"

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

#endif
