/* joulecap monitor: writes the time series (energy, utilisation, temperature, power) as CSV, to a file or to
 * stdout (like nvidia-smi dmon), until a command ends or until Ctrl-C / SIGTERM. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"
#include "errors.h"
#include "live.h"
#include "options.h"
#include "output.h"
#include "summary.h"

static const char MONITOR_HELP[] =
    "Usage: joulecap monitor [-o FILE] [-i SECONDS] [--gpu SEL] [--json] [-q] [-- CMD [ARGS...]]\n"
    "\n"
    "Writes one CSV row every SECONDS to FILE, or without -o to stdout (like nvidia-smi dmon), until CMD ends\n"
    "(joulecap then exits with CMD's status) or, without CMD, until Ctrl-C, SIGTERM or SIGHUP (joulecap then\n"
    "closes the file cleanly and exits 0).  Each row is written and flushed as soon as its energies are known,\n"
    "so even a killed joulecap leaves a usable file.\n"
    "\n"
    "Columns (empty cells where a value cannot be read; energies are since monitoring started):\n"
    "  elapsed_s, cpu_energy_kwh, cpu_util_pct, cpu_temp_c,\n"
    "  then for each GPU g (CUDA index): gpu<g>_energy_kwh, gpu<g>_util_pct, gpu<g>_temp_c, gpu<g>_power_w,\n"
    "  then cpu_energy_source and gpu<g>_energy_source (counter, integrated-power, rapl, estimate, none).\n"
    "\n"
    "Options:\n"
    "  -o, --output FILE  the CSV file to write (default, or '-': stdout).  Created before CMD starts: if it\n"
    "                     cannot be, CMD does not run.\n"
    "  -i, --interval S   seconds between rows, 0.001 to 86400 (default 1; '100ms' works too)\n"
    "  --counter-interval S  read the GPU energy counter only once per S seconds (0 to 60; default 0 = after\n"
    "                     every 100 ms step: accurate short windows, ~8% of a core; 1 = under 1%)\n"
    "  --gpu SEL          GPUs to monitor (default: all visible GPUs); see 'joulecap --help'\n"
    "  --json             at the end, print a JSON summary (energy per device over the whole run) on stdout\n"
    "  -q, --quiet        no messages or summary on stderr\n"
    "  --live             a one-line power readout on the terminal (stderr), refreshed twice a second\n"
    "  -h, --help         this help\n"
    "\n"
    "With CMD, SIGINT/SIGTERM/SIGHUP sent to joulecap are passed on to CMD; joulecap waits for CMD to end,\n"
    "completes the file and exits 0 (it was asked to stop).\n"
    "\n"
    "Examples:\n"
    "  joulecap monitor -i 0.1 -o trace.csv -- python train.py\n"
    "  joulecap monitor -i 1 -o node.csv            # until Ctrl-C\n"
    "  joulecap monitor -i 0.5 --gpu 0 | head       # rows on stdout\n"
    "\n"
    "Exit status: CMD's own status when it ended by itself (128+N if killed by signal N, 127 not found, 126\n"
    "not executable); 0 when stopped by a signal; 2 bad option, interval or GPU; 3 joulecap failed (for\n"
    "example FILE cannot be created).\n";

int jc_cmd_monitor(int argc, char **argv) {
    jc_cli_opts o;
    int rc = jc_cli_parse("monitor", argc, argv,
                          JC_OPT_GPU | JC_OPT_JSON | JC_OPT_OUTPUT | JC_OPT_INTERVAL | JC_OPT_QUIET | JC_OPT_COMMAND |
                              JC_OPT_COUNTER | JC_OPT_LIVE,
                          0.001, 86400, &o);
    if (rc) return rc;
    if (o.help) {
        fputs(MONITOR_HELP, stdout);
        return JC_EXIT_OK;
    }
    jc_cli_carbon carbon;
    if ((rc = jc_cli_carbon_from_env("monitor", &carbon))) return rc;
    double interval = o.interval_text ? o.interval_s : 1.0;
    /* "-" (the default): the inherited standard output, as it is. */
    const char *path = o.output ? o.output : "-";
    int to_stdout = strcmp(path, "-") == 0;

    /* Signals first: a Ctrl-C from here on closes the file cleanly. */
    if (jc_cli_signals_install() != 0) return JC_EXIT_FAILURE;

    jc_options opts;
    jc_options_init(&opts);
    opts.gpus = o.gpus;
    opts.csv_path = path;
    opts.csv_interval_s = interval;
    if (o.counter_text) opts.counter_interval_s = o.counter_interval_s;
    if (interval < 0.01) opts.interval_s = interval; /* the sampling period may not exceed the row period */
    jc_context *ctx = NULL;
    jc_cli_fd_snapshot();
    if ((rc = jc_cli_open(&ctx, &opts, "monitor"))) {
        if (o.command) fprintf(stderr, "The command was not started.\n");
        return rc;
    }
    if ((rc = jc_cli_check_gpus(ctx, o.gpus))) {
        jc_close(ctx);
        return rc;
    }

    jc_window w;
    jc_status st = jc_window_start_at(ctx, "monitor", jc_epoch_ns(ctx), &w);
    if (st != JC_OK) {
        jc_cli_err("cannot start measuring: %s: %s", jc_strerror(st), jc_last_detail());
        jc_close(ctx);
        return JC_EXIT_FAILURE;
    }

    jc_cli_summary s;
    memset(&s, 0, sizeof s);
    s.carbon = carbon;
    int code = JC_EXIT_OK;
    uint64_t end_ns;
    /* Rows on stdout that is a terminal would tear the line: then the rows win. */
    jc_cli_live *live = o.live && !(to_stdout && isatty(STDOUT_FILENO)) ? jc_cli_live_start(ctx) : NULL;
    if (o.command) {
        jc_cli_child child;
        jc_cli_fd_cloexec_new();
    if (jc_cli_spawn(o.command, &child) != 0) {
            jc_cli_live_stop(live);
            jc_close(ctx);
            return JC_EXIT_FAILURE;
        }
        jc_cli_wait_child(&child);
        end_ns = child.end_ns;
        if (child.exec_errno) {
            code = jc_cli_child_exit_code(&child);
            jc_cli_live_stop(live);
            jc_cli_err("cannot run '%s': %s%s", o.command[0], strerror(child.exec_errno),
                       child.exec_errno == ENOENT && !strchr(o.command[0], '/') ? " (not found in PATH)" : "");
            jc_close(ctx);
            return code;
        }
        s.command = o.command;
        s.has_status = 1;
        s.wait_status = child.status;
        s.exit_code = jc_cli_child_exit_code(&child);
        s.stop_signal = child.stop_signal;
        code = child.stop_signal ? JC_EXIT_OK : s.exit_code;
    } else {
        if (!o.quiet) {
            char ibuf[32];
            fprintf(stderr, "joulecap: monitoring; a row every %s s goes to %s. Press Ctrl-C to stop.\n",
                    jc_cli_fmt(ibuf, sizeof ibuf, interval, 3), to_stdout ? "stdout" : path);
        }
        s.stop_signal = jc_cli_wait_signal();
        end_ns = jc_now_ns();
    }
    jc_cli_live_stop(live);
    jc_window_stop_at(ctx, w, end_ns);
    rc = jc_cli_summary_collect(ctx, w, 3.0, &s);
    jc_window_release(ctx, w);
    uint64_t rows = 0;
    jc_status sink = jc_csv_close(ctx, &rows); /* writes the last row and closes the file */
    jc_close(ctx);
    if (sink != JC_OK) {
        jc_cli_err("%s", jc_last_detail());
        return code ? code : JC_EXIT_FAILURE;
    }
    if (rc) return code ? code : rc;
    if (!o.quiet) {
        jc_cli_summary_text(stderr, &s);
        if (!to_stdout) fprintf(stderr, " Time series: %s\n\n", path);
    }
    if (o.json) {
        jc_cli_summary_json(stdout, &s, "csv", path, interval);
        if (fflush(stdout) != 0 || ferror(stdout)) {
            jc_cli_err("cannot write the JSON summary to standard output: %s", strerror(errno));
            if (code == 0) code = JC_EXIT_FAILURE;
        }
    }
    return code;
}
