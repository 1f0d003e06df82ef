/* joulecap: the command-line tool.  Dispatches to one file per subcommand. */
#include <stdio.h>
#include <string.h>

#include "errors.h"

static const char MAIN_HELP[] =
    "joulecap - measure the energy that programs use on NVIDIA GPUs and on the CPU\n"
    "\n"
    "Usage: joulecap COMMAND [OPTIONS]\n"
    "\n"
    "Commands:\n"
    "  info      list the CPU and GPUs, where each energy comes from, power limits, and what cannot be read\n"
    "  run       run a command and report its time, CPU and GPU energy and average power (like perf stat)\n"
    "  monitor   write a time series (energy, utilisation, temperature, power) to a CSV file\n"
    "  cap       show, set, reset or restore GPU power caps\n"
    "  profile   find the GPU power cap with the best energy/time trade-off for a workload\n"
    "  help CMD  detailed help for one command (same as 'joulecap CMD --help')\n"
    "\n"
    "Examples:\n"
    "  joulecap info                                   # what can be measured here, and why not\n"
    "  joulecap run -- python train.py                 # energy of a whole command\n"
    "  joulecap run -o run.json --gpu 0 -- ./bench     # ... saved as JSON, GPU 0 only\n"
    "  joulecap monitor -i 0.1 -o trace.csv -- python train.py\n"
    "  joulecap monitor -i 1 -o node.csv               # until Ctrl-C\n"
    "\n"
    "Common options (info, run, monitor):\n"
    "  --gpu SEL     which GPUs to measure.  GPUs are numbered as CUDA numbers them: CUDA_VISIBLE_DEVICES\n"
    "                and CUDA_DEVICE_ORDER are honoured, so with CUDA_VISIBLE_DEVICES=2,3 '--gpu 0' is\n"
    "                physical GPU 2.  SEL is one of:\n"
    "                  all           every visible GPU (the default)\n"
    "                  none          no GPU, CPU only\n"
    "                  0  or  0,2    CUDA indices\n"
    "                  GPU-8f3c...   a UUID or a unique prefix of one; lists may mix indices and UUIDs\n"
    "                An unknown GPU is an error that lists the GPUs that exist.\n"
    "  --json        machine-readable output on stdout (NaN is written as null)\n"
    "  -i SECONDS    an interval: sampling period (run), row period (monitor)\n"
    "  -o FILE       an output file, created before anything starts\n"
    "\n"
    "Where the numbers come from:\n"
    "  GPU energy: the NVML energy counter (or integrated power on GPUs without one), interpolated inside the\n"
    "  counter's 100 ms steps.  CPU energy: RAPL (powercap sysfs) for every socket; where RAPL is absent or\n"
    "  unreadable (VMs, CVE-2020-8694 permissions) an estimate from the CPU model and utilisation, always\n"
    "  marked 'estimate' with the reason.  Without NVML (no NVIDIA driver) joulecap measures the CPU only.\n"
    "\n"
    "Environment:\n"
    "  JOULECAP_NVML_LIBRARY  path of the NVML library to load (default libnvidia-ml.so.1); point it at\n"
    "                         libjoulecap-fakenvml.so (with JOULECAP_FAKE_NVML_SCENARIO=file.scn) to try\n"
    "                         joulecap without a GPU\n"
    "  JOULECAP_SYSFS_ROOT    root of the sysfs tree to read RAPL and hwmon from (default /sys)\n"
    "  JOULECAP_PROC_ROOT     root of the procfs tree to read /proc/stat and /proc/cpuinfo from (default /proc)\n"
    "  CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER   GPU numbering, as in CUDA\n"
    "\n"
    "Exit status:\n"
    "  0    success\n"
    "  2    bad command line: unknown command or option, bad interval, unknown GPU\n"
    "  3    joulecap failed: output file cannot be created, no thread, ...\n"
    "  run and monitor -- CMD exit with CMD's own status instead once it ran: 128+N if it was killed by\n"
    "  signal N, 127 if CMD was not found, 126 if it could not be executed.\n"
    "\n"
    "Other: joulecap --version, joulecap --help.  Documentation: docs/cli.md.\n";

typedef int (*cmd_fn)(int argc, char **argv);

static const struct {
    const char *name;
    cmd_fn fn;
} COMMANDS[] = {
    {"info", jc_cmd_info},       {"run", jc_cmd_run}, {"monitor", jc_cmd_monitor},
    {"cap", jc_cmd_cap},         {"profile", jc_cmd_profile},
};

static cmd_fn find_command(const char *name) {
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (strcmp(COMMANDS[i].name, name) == 0) return COMMANDS[i].fn;
    return NULL;
}

static int unknown_command(const char *name) {
    jc_cli_err("unknown command '%s'", name);
    fprintf(stderr, "The commands are: info, run, monitor, cap, profile, help.\n"
                    "Try 'joulecap --help' for the commands and examples.\n");
    return JC_EXIT_USAGE;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "Usage: joulecap COMMAND [OPTIONS]   (commands: info, run, monitor, cap, profile)\n"
                        "Try 'joulecap --help' for the commands and examples.\n");
        return JC_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0) {
        fputs(MAIN_HELP, stdout);
        return JC_EXIT_OK;
    }
    if (strcmp(cmd, "-V") == 0 || strcmp(cmd, "--version") == 0) {
        printf("joulecap %s (libjoulecap %s)\n", JC_VERSION_STRING, jc_version());
        return JC_EXIT_OK;
    }
    if (strcmp(cmd, "help") == 0) {
        if (argc < 3) {
            fputs(MAIN_HELP, stdout);
            return JC_EXIT_OK;
        }
        cmd_fn fn = find_command(argv[2]);
        if (!fn) return unknown_command(argv[2]);
        char *hargv[] = {argv[2], (char *)"--help", NULL};
        return fn(2, hargv);
    }
    if (cmd[0] == '-') {
        jc_cli_err("unknown option '%s': options come after the command, as in 'joulecap run --json -- CMD'",
                   cmd);
        fprintf(stderr, "Try 'joulecap --help' for the commands and examples.\n");
        return JC_EXIT_USAGE;
    }
    cmd_fn fn = find_command(cmd);
    if (!fn) return unknown_command(cmd);
    /* Subcommands get argv[0] = their own name and their options from argv[1]. */
    return fn(argc - 1, argv + 1);
}
