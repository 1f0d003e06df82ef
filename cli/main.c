/* joulecap: the command-line tool.  Takes --fake NAME, then dispatches to one file per subcommand; `help TOPIC`
 * prints the installed reference docs (help.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "help.h"

static const char MAIN_HELP[] =
    "joulecap - measure the energy that programs use on NVIDIA GPUs and on the CPU\n"
    "\n"
    "Usage: joulecap [--fake NAME] COMMAND [OPTIONS]\n"
    "\n"
    "Commands:\n"
    "  info      list the CPU and GPUs, where each energy comes from, power limits, and what cannot be read\n"
    "  run       run a command and report its time, CPU and GPU energy and average power (like perf stat)\n"
    "  monitor   write a time series (energy, utilisation, temperature, power) as CSV, to a file or stdout\n"
    "  cap       show, set, reset or restore GPU power caps\n"
    "  profile   find the GPU power cap with the best energy/time trade-off for a workload\n"
    "  plot      draw a joulecap CSV (time series, windows, power-cap profile, layers, runs) to PNG/SVG/HTML\n"
    "  help CMD  detailed help for one command (same as 'joulecap CMD --help')\n"
    "  help      the reference docs installed with joulecap: 'joulecap help' lists them, 'joulecap help cli'\n"
    "            prints one\n"
    "\n"
    "Examples:\n"
    "  joulecap info                                   # what can be measured here, and why not\n"
    "  joulecap run -- python train.py                 # energy of a whole command\n"
    "  joulecap run -o run.json --gpu 0 -- ./bench     # ... saved as JSON, GPU 0 only\n"
    "  joulecap monitor -i 0.1 -o trace.csv -- python train.py\n"
    "  joulecap monitor -i 1                           # rows on stdout until Ctrl-C\n"
    "  joulecap --fake h100 run -- sleep 1             # on a fake H100 drawing 300 W: about 300 J\n"
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
    "  --fake NAME   (before COMMAND) use a fake GPU with private state instead of the real ones: sets\n"
    "                JOULECAP_FAKE=NAME.  NAME is h100 (one H100 at a constant 300 W), h100-sweep (an H100\n"
    "                whose power follows its cap), another bundled scenario, or the path of a .scn file.\n"
    "                Nothing real is measured or changed ('joulecap help fake-nvml').\n"
    "\n"
    "Where the numbers come from:\n"
    "  GPU energy: the NVML energy counter (or integrated power on GPUs without one), interpolated inside the\n"
    "  counter's 100 ms steps.  CPU energy: RAPL (powercap sysfs) for every socket; where RAPL is absent or\n"
    "  unreadable (VMs, CVE-2020-8694 permissions) an estimate from the CPU model and utilisation, always\n"
    "  marked 'estimate' with the reason.  Without NVML (no NVIDIA driver) joulecap measures the CPU only.\n"
    "\n"
    "Environment (a set-user-ID joulecap ignores every one of them):\n"
    "  JOULECAP_FAKE          a fake GPU with private state: what --fake NAME sets (see above).  Its state\n"
    "                         and cap journals go to $XDG_RUNTIME_DIR/joulecap-fake-<uid>/ (else under $TMPDIR\n"
    "                         or /tmp), never to /var/lib/joulecap, and joulecapd is not used\n"
    "  JOULECAP_NVML_LIBRARY  path of the NVML library to load (default libnvidia-ml.so.1)\n"
    "  JOULECAP_FAKE_NVML_SCENARIO  the fake NVML's scenario file, when JOULECAP_NVML_LIBRARY loads the fake\n"
    "                         (libjoulecap-fakenvml.so) without JOULECAP_FAKE\n"
    "  JOULECAP_FAKE_NVML_STATE  the fake NVML's state file, shared by the processes that name it (default:\n"
    "                         a private one per process, or with JOULECAP_FAKE the one of its scenario)\n"
    "  JOULECAP_SYSFS_ROOT    root of the sysfs tree to read RAPL and hwmon from (default /sys)\n"
    "  JOULECAP_PROC_ROOT     root of the procfs tree to read /proc/stat and /proc/cpuinfo from (default /proc)\n"
    "  JOULECAP_STATE_DIR     directory of the cap journals (default /var/lib/joulecap when writable, else\n"
    "                         $XDG_RUNTIME_DIR/joulecap, else /tmp/joulecap-<uid>; 'joulecap help caps')\n"
    "  JOULECAP_DAEMON_SOCKET joulecapd's socket (default /run/joulecap/joulecapd.sock): where it exists, caps\n"
    "                         go through joulecapd ('joulecap help daemon')\n"
    "  JOULECAP_CLI           the joulecap executable that cap sessions start as their guardian\n"
    "  JOULECAP_PYTHON        plot: the Python that has joulecap and matplotlib (set by the pip-installed\n"
    "                         joulecap command; default python3 on PATH)\n"
    "  JOULECAP_GRID_GCO2_PER_KWH, JOULECAP_PRICE_PER_KWH, JOULECAP_CURRENCY\n"
    "                         run, monitor, plot: gCO2e and cost next to kWh in the summary (text, JSON,\n"
    "                         CSV columns) from your grid's intensity and price; never fetched\n"
    "  CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER   GPU numbering, as in CUDA\n"
    "  XDG_RUNTIME_DIR, TMPDIR   where private state goes (see JOULECAP_FAKE and JOULECAP_STATE_DIR)\n"
    "\n"
    "Exit status:\n"
    "  0    success\n"
    "  2    bad command line: unknown command or option, bad interval, unknown GPU\n"
    "  3    joulecap failed: output file cannot be created, no thread, ...\n"
    "  run and monitor -- CMD exit with CMD's own status instead once it ran: 128+N if it was killed by\n"
    "  signal N, 127 if CMD was not found, 126 if it could not be executed.\n"
    "\n"
    "Other: joulecap --version, joulecap --help.  Documentation: 'joulecap help' lists the reference docs\n"
    "installed with joulecap (cli, python, caps, profiler, fake-nvml, ...); 'joulecap help cli' prints one.\n";

typedef int (*cmd_fn)(int argc, char **argv);

static const struct {
    const char *name;
    cmd_fn fn;
} COMMANDS[] = {
    {"info", jc_cmd_info},       {"run", jc_cmd_run}, {"monitor", jc_cmd_monitor},
    {"cap", jc_cmd_cap},         {"profile", jc_cmd_profile}, {"plot", jc_cmd_plot},
};

static cmd_fn find_command(const char *name) {
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (strcmp(COMMANDS[i].name, name) == 0) return COMMANDS[i].fn;
    return NULL;
}

static int unknown_command(const char *name) {
    jc_cli_err("unknown command '%s'", name);
    fprintf(stderr, "The commands are: info, run, monitor, cap, profile, plot, help.\n"
                    "Try 'joulecap --help' for the commands and examples.\n");
    return JC_EXIT_USAGE;
}

/* --fake NAME / --fake=NAME before the command: sets JOULECAP_FAKE for the library (and for the cap guardian
 * it starts).  Returns the number of arguments it took, 0 when argv[i] is not --fake, -1 on error. */
static int fake_option(int argc, char **argv, int i) {
    const char *a = argv[i], *name = NULL;
    int took;
    if (strcmp(a, "--fake") == 0) {
        if (i + 1 >= argc) return jc_cli_usage_err(NULL, "--fake needs a scenario: --fake h100"), -1;
        name = argv[i + 1];
        took = 2;
    } else if (strncmp(a, "--fake=", 7) == 0) {
        name = a + 7;
        took = 1;
    } else {
        return 0;
    }
    if (!*name) return jc_cli_usage_err(NULL, "--fake needs a scenario: --fake h100"), -1;
    setenv("JOULECAP_FAKE", name, 1);
    /* A set-user-ID joulecap reads no JOULECAP_* variable (secure_getenv): it would use the real GPUs. */
    if (!secure_getenv("JOULECAP_FAKE")) {
        jc_cli_err("--fake does not work in a set-user-ID or set-group-ID joulecap: it would use the real GPUs");
        return -1;
    }
    return took;
}

int main(int argc, char **argv) {
    int first = 1;
    while (first < argc) {
        int took = fake_option(argc, argv, first);
        if (took < 0) return JC_EXIT_USAGE;
        if (took == 0) break;
        first += took;
    }
    argc -= first - 1;
    argv += first - 1; /* argv[1] is the command, as without --fake */
    if (argc < 2) {
        fprintf(stderr, "Usage: joulecap [--fake NAME] COMMAND [OPTIONS]   (commands: info, run, monitor, cap, "
                        "profile, help)\n"
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
        if (argc < 3) return jc_cli_help_topics();
        cmd_fn fn = find_command(argv[2]);
        if (!fn) return jc_cli_help_topic(argv[2]);
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
