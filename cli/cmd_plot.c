/* joulecap plot FILE.csv... [-o out.png|.svg|.pdf|.html]: draws joulecap's CSV files.  The drawing is
 * matplotlib's, so this command runs the Python package's joulecap.plots.main in the Python that has joulecap
 * installed: $JOULECAP_PYTHON (the `joulecap` console script sets it to its own interpreter), else python3
 * on PATH.  Everything after `plot` is passed on as it is; the Python side checks it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "errors.h"

static const char usage_text[] =
    "Usage: joulecap plot FILE.csv [FILE.csv ...] [-o OUT] [--kind KIND] [--snippets SNIPPETS.csv]\n"
    "                     [--offset S] [--top N] [--title TEXT] [--grid-intensity G] [--price P]\n"
    "                     [--currency C]\n"
    "\n"
    "Draws joulecap's CSV files; which picture follows from the CSV's header:\n"
    "  a time series (joulecap monitor -o, AsynchronousMeasurementTool): power, energy, utilisation and\n"
    "      temperature per device over time; stretches where a device was degraded, stalled or lost are\n"
    "      shaded; with a snippet CSV (given too, or --snippets) its windows are shaded, partial ones hatched\n"
    "  a snippet CSV (EnergyMeasurementTool): energy and time per window\n"
    "  a power-cap profile (power_cap_profiler out_file): time and energy per step and the objective against\n"
    "      the cap, each trial with its 90% interval, the model, the chosen cap and the default limit\n"
    "  a layer-wise CSV (LayerwiseMeasurementTool): the top layers by energy, forward and backward apart,\n"
    "      and the rows outside the layers\n"
    "  several files: side by side (energy per device and time of each run; power-cap profiles overlaid)\n"
    "\n"
    "  -o OUT        out.png, out.svg, out.pdf or out.html (default: FILE.png beside the first file)\n"
    "  --kind KIND   timeseries, snippets, profile, layers, run or compare (default: from the header)\n"
    "  --snippets F  a snippet CSV whose windows are shaded on the time series\n"
    "  --offset S    seconds added to the windows' start_s to place them on the time series' clock\n"
    "  --top N       layers drawn by name (default 15)\n"
    "  --grid-intensity G, --price P, --currency C\n"
    "                gCO2e per kWh of your grid, price of one kWh and its currency: time series, snippet and\n"
    "                comparison pictures show gCO2e and cost next to kWh (default: $JOULECAP_GRID_GCO2_PER_KWH,\n"
    "                $JOULECAP_PRICE_PER_KWH, $JOULECAP_CURRENCY, $JOULECAP_CARBON_CONFIG; nothing is fetched)\n"
    "\n"
    "This command runs Python (matplotlib draws): $JOULECAP_PYTHON, which the `joulecap` command installed by\n"
    "pip sets to its own interpreter, else python3 on PATH.  That Python needs joulecap and matplotlib:\n"
    "pip install 'joulecap[plot]'.  Prints the file written.  Exit status: 0 done, 2 bad command line or CSV,\n"
    "3 no Python with joulecap and matplotlib.\n";

/* Run in the chosen Python: a clear message where joulecap (or matplotlib, reported by main) is missing. */
static const char bootstrap[] =
    "import sys\n"
    "try:\n"
    "    from joulecap.plots import main\n"
    "except ImportError as e:\n"
    "    sys.stderr.write('joulecap plot: %s cannot import joulecap.plots (%s): install joulecap into that Python "
    "(pip install \\'joulecap[plot]\\'), or set JOULECAP_PYTHON to a Python that has it\\n' % (sys.executable, e))\n"
    "    sys.exit(3)\n"
    "sys.argv[0] = 'joulecap plot'\n"
    "sys.exit(main(sys.argv[1:]))\n";

int jc_cmd_plot(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--")) break;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(usage_text, stdout);
            return JC_EXIT_OK;
        }
    }
    if (argc < 2) return jc_cli_usage_err("plot", "give the CSV file to draw: joulecap plot FILE.csv [-o out.png]");
    const char *py = secure_getenv("JOULECAP_PYTHON");
    int from_env = py && *py;
    if (!from_env) py = "python3";
    char **args = calloc((size_t)argc + 4, sizeof *args);
    if (!args) {
        jc_cli_err("plot: out of memory");
        return JC_EXIT_FAILURE;
    }
    args[0] = (char *)py;
    args[1] = (char *)"-c";
    args[2] = (char *)bootstrap;
    for (int i = 1; i < argc; i++) args[i + 2] = argv[i];
    fflush(stdout);
    fflush(stderr);
    if (from_env) execv(py, args);
    else execvp(py, args);
    int err = errno;
    free(args);
    jc_cli_err("plot: cannot run %s (%s): plots are drawn by Python with matplotlib; install joulecap with "
               "pip install 'joulecap[plot]' and run that environment's joulecap, or set JOULECAP_PYTHON to a "
               "Python that has joulecap and matplotlib",
               py, strerror(err));
    return JC_EXIT_FAILURE;
}
