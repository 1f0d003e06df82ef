/* joulecap run: measures a whole command (time, CPU and per-GPU energy), like `perf stat`, and exits with the
 * command's status. */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"
#include "errors.h"
#include "live.h"
#include "options.h"
#include "output.h"
#include "summary.h"

static const char RUN_HELP[] =
    "Usage: joulecap run [-o FILE] [--json] [--gpu SEL] [-i SECONDS] [-q] [--] CMD [ARGS...]\n"
    "\n"
    "Runs CMD and measures the energy it used: the elapsed time, the CPU energy (RAPL, or an estimate that is\n"
    "marked as one), the energy of each selected GPU, and the average power.  The summary goes to stderr (like\n"
    "`perf stat`); joulecap then exits with the command's own exit status.\n"
    "\n"
    "Options:\n"
    "  -o, --output FILE  also write the summary to FILE: JSON if FILE ends in .json, else CSV with a header\n"
    "                     row (elapsed_s, cpu_energy_kwh, gpu<g>_energy_kwh..., cpu_energy_j,\n"
    "                     gpu<g>_energy_j..., cpu_energy_source, gpu<g>_energy_source...). '-' = stdout.\n"
    "                     The file is created before CMD starts: if it cannot be, CMD does not run.\n"
    "  --json             print the summary as JSON on stdout (after whatever CMD printed there)\n"
    "  --gpu SEL          GPUs to measure (default: all visible GPUs); see 'joulecap --help'\n"
    "  -i, --interval S   sampling period of power, utilisation and temperature in seconds\n"
    "                     (0.001 to 3600, default 0.01; '100ms' works too)\n"
    "  --counter-interval S  read the GPU energy counter only once per S seconds (0 to 60; default 0 = after\n"
    "                     every 100 ms step: accurate short windows, ~8% of a core; 1 = under 1%)\n"
    "  -q, --quiet        no summary on stderr\n"
    "  --live             a one-line power readout on the terminal (stderr) while CMD runs\n"
    "  -h, --help         this help\n"
    "\n"
    "Options end at '--' or at the first argument that is not an option: that is CMD.\n"
    "SIGINT, SIGTERM and SIGHUP sent to joulecap are passed on to CMD (a Ctrl-C in the terminal already\n"
    "reaches CMD directly); joulecap waits for CMD and still prints the summary.\n"
    "\n"
    "Examples:\n"
    "  joulecap run -- python train.py --epochs 1\n"
    "  joulecap run -o energy.csv --gpu 0 -- ./bench\n"
    "  joulecap run --json -q -- sleep 1 | python3 -m json.tool\n"
    "\n"
    "Exit status: CMD's own status; 128+N when CMD was killed by signal N; 127 CMD not found; 126 CMD not\n"
    "executable; 2 bad joulecap option, interval or GPU (CMD does not run); 3 joulecap failed before CMD ran\n"
    "(for example FILE cannot be created).\n";

int jc_cmd_run(int argc, char **argv) {
    jc_cli_opts o;
    int rc = jc_cli_parse("run", argc, argv,
                          JC_OPT_GPU | JC_OPT_JSON | JC_OPT_OUTPUT | JC_OPT_INTERVAL | JC_OPT_QUIET | JC_OPT_COMMAND |
                              JC_OPT_COUNTER | JC_OPT_LIVE,
                          0.001, 3600, &o);
    if (rc) return rc;
    if (o.help) {
        fputs(RUN_HELP, stdout);
        return JC_EXIT_OK;
    }
    if (!o.command) return jc_cli_usage_err("run", "no command to run: write it after '--', as in 'joulecap run -- sleep 1'");
    jc_cli_carbon carbon;
    if ((rc = jc_cli_carbon_from_env("run", &carbon))) return rc;

    jc_options opts;
    jc_options_init(&opts);
    opts.gpus = o.gpus;
    if (o.interval_text) opts.interval_s = o.interval_s;
    if (o.counter_text) opts.counter_interval_s = o.counter_interval_s;
    jc_context *ctx = NULL;
    jc_cli_fd_snapshot();
    if ((rc = jc_cli_open(&ctx, &opts, "run"))) return rc;
    if ((rc = jc_cli_check_gpus(ctx, o.gpus))) {
        jc_close(ctx);
        return rc;
    }

    /* The output file exists before the command starts, or the command does not start. */
    FILE *out = NULL;
    int created = 0, to_stdout = 0;
    if (o.output) {
        if (strcmp(o.output, "-") == 0) {
            out = stdout;
            to_stdout = 1;
        } else {
            struct stat sb;
            created = stat(o.output, &sb) != 0;
            out = fopen(o.output, "we");
            if (!out) {
                int e = errno;
                jc_cli_err("cannot create the output file '%s': %s", o.output, strerror(e));
                fprintf(stderr, "The command was not started. Choose a file in a directory you can write to.\n");
                jc_close(ctx);
                return JC_EXIT_FAILURE;
            }
        }
    }
    if (jc_cli_signals_install() != 0) {
        if (out && !to_stdout) fclose(out);
        if (created) unlink(o.output);
        jc_close(ctx);
        return JC_EXIT_FAILURE;
    }

    jc_window w;
    jc_status st = jc_window_start(ctx, "run", &w);
    if (st != JC_OK) {
        jc_cli_err("cannot start measuring: %s: %s", jc_strerror(st), jc_last_detail());
        if (out && !to_stdout) fclose(out);
        if (created) unlink(o.output);
        jc_close(ctx);
        return JC_EXIT_FAILURE;
    }
    jc_cli_child child;
    jc_cli_fd_cloexec_new();
    if (jc_cli_spawn(o.command, &child) != 0) {
        if (out && !to_stdout) fclose(out);
        if (created) unlink(o.output);
        jc_close(ctx);
        return JC_EXIT_FAILURE;
    }
    jc_cli_live *live = o.live ? jc_cli_live_start(ctx) : NULL;
    jc_cli_wait_child(&child);
    jc_cli_live_stop(live);
    jc_window_stop_at(ctx, w, child.end_ns);

    if (child.exec_errno) {
        int code = jc_cli_child_exit_code(&child);
        jc_cli_err("cannot run '%s': %s%s", o.command[0], strerror(child.exec_errno),
                   child.exec_errno == ENOENT && !strchr(o.command[0], '/') ? " (not found in PATH)" : "");
        if (out && !to_stdout) fclose(out);
        if (created) unlink(o.output);
        jc_close(ctx);
        return code;
    }

    jc_cli_summary s;
    memset(&s, 0, sizeof s);
    s.carbon = carbon;
    s.command = o.command;
    s.has_status = 1;
    s.wait_status = child.status;
    s.exit_code = jc_cli_child_exit_code(&child);
    rc = jc_cli_summary_collect(ctx, w, 3.0, &s);
    jc_window_release(ctx, w);
    jc_close(ctx);
    if (rc) {
        if (out && !to_stdout) fclose(out);
        return s.exit_code ? s.exit_code : rc;
    }

    if (!o.quiet) jc_cli_summary_text(stderr, &s);
    int write_failed = 0;
    if (o.json) {
        jc_cli_summary_json(stdout, &s, NULL, NULL, 0);
        if (fflush(stdout) != 0 || ferror(stdout)) {
            jc_cli_err("cannot write the JSON summary to standard output: %s", strerror(errno));
            write_failed = 1;
        }
    }
    if (out) {
        if (jc_cli_is_json_path(o.output))
            jc_cli_summary_json(out, &s, NULL, NULL, 0);
        else
            jc_cli_summary_csv(out, &s);
        int bad = fflush(out) != 0 || ferror(out);
        if (!to_stdout && fclose(out) != 0) bad = 1;
        if (bad) write_failed = 1;
        if (bad) jc_cli_err("cannot write the output file '%s': %s", o.output, strerror(errno));
    }
    if (write_failed && s.exit_code == 0) return JC_EXIT_FAILURE;
    return s.exit_code;
}
