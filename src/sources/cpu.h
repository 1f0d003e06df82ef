/* CPU-side sources: RAPL energy (powercap sysfs), utilisation (/proc/stat), temperature (hwmon / thermal
 * zones) and the power estimate used when RAPL cannot be read.  Each open() either succeeds or returns the
 * status that says why not, with a human-readable reason in `why`; nothing here crashes on a missing file.
 * The roots come from jc__sysfs_root() / jc__proc_root() so that tests can point them at fake trees. */
#ifndef JC_SOURCES_CPU_H
#define JC_SOURCES_CPU_H

#include <stdint.h>
#include <stdio.h>

#include "../core/internal.h"

/* ---- RAPL ------------------------------------------------------------------------------------------------
 * Zones are found by their `name` file under <sysfs>/class/powercap/ (intel-rapl:* and amd-rapl... trees):
 * package-N (or package-N-die-M on multi-die parts), their dram subzones, psys.  Energy = sum over packages
 * (+ their dram subzones); core/uncore subzones overlap the package and are not added; psys is reported
 * only when it is the only zone.  Each counter is unwrapped with its max_energy_range_uj, so the caller must
 * read more often than a counter wraps (minutes). */
typedef struct jc__rapl jc__rapl;

jc_status jc__rapl_open(const char *sysfs_root, jc__rapl **out, char *why, size_t whylen);
/* Cumulative energy in joules since open, all packages (+dram), wraps corrected. */
jc_status jc__rapl_read(jc__rapl *rapl, double *energy_j, char *why, size_t whylen);
/* "package-0, package-1, dram (package-0), dram (package-1)" */
const char *jc__rapl_zones(const jc__rapl *rapl);
void jc__rapl_close(jc__rapl *rapl);

/* ---- utilisation from /proc/stat ----------------------------------------------------------------------- */
typedef struct jc__procstat {
    char path[512];
    uint64_t prev_busy, prev_total;
    int have_prev;
} jc__procstat;

jc_status jc__procstat_open(const char *proc_root, jc__procstat *ps, char *why, size_t whylen);
/* Utilisation (0-100 %) of all CPUs since the previous call (since open on the first call).  Non-blocking. */
jc_status jc__procstat_read(jc__procstat *ps, double *util_pct, char *why, size_t whylen);
/* The two halves of a read, for tests and the fuzzer: parse the text of a /proc/stat (path names it in
 * errors) into busy and total ticks; then the utilisation since ps's previous snapshot, which it replaces. */
jc_status jc__procstat_parse(const char *text, const char *path, uint64_t *busy, uint64_t *total, char *why,
                             size_t whylen);
jc_status jc__procstat_update(jc__procstat *ps, uint64_t busy, uint64_t total, double *util_pct, char *why,
                              size_t whylen);

/* ---- temperature ----------------------------------------------------------------------------------------
 * hwmon devices named coretemp (Package id N), k10temp (Tctl/Tdie), zenpower, cpu_thermal; else thermal
 * zones whose type is a CPU type (x86_pkg_temp, cpu-thermal, cpu_thermal, soc_thermal, acpitz as a last
 * resort).  The reading is the maximum over packages, in deg C. */
typedef struct jc__cputemp jc__cputemp;

jc_status jc__cputemp_open(const char *sysfs_root, jc__cputemp **out, char *why, size_t whylen);
jc_status jc__cputemp_read(jc__cputemp *t, double *temp_c, char *why, size_t whylen);
const char *jc__cputemp_describe(const jc__cputemp *t); /* "hwmon coretemp: Package id 0, Package id 1" */
void jc__cputemp_close(jc__cputemp *t);

/* ---- estimate -------------------------------------------------------------------------------------------
 * CPU power when RAPL is unavailable: P = n_threads * (idle_w_per_thread + (max_w_per_thread -
 * idle_w_per_thread) * u), u = utilisation in [0, 1], with per-thread figures from the model's TDP over its
 * thread count when the model (from <proc>/cpuinfo "model name") is in a small built-in table, else
 * documented defaults.  n_threads = logical CPUs this OS sees (a VM's vCPUs). */
typedef struct jc__cpu_estimate {
    char model[128];
    int threads;
    double idle_w_per_thread, max_w_per_thread;
    int from_table; /* 1 when the model was found in the table */
    char describe[256];
} jc__cpu_estimate;

jc_status jc__cpu_estimate_open(const char *proc_root, jc__cpu_estimate *e, char *why, size_t whylen);
/* The same from an open <proc>/cpuinfo (a file, or fmemopen() over a buffer); NULL: there is none. */
jc_status jc__cpu_estimate_from(FILE *cpuinfo, jc__cpu_estimate *e, char *why, size_t whylen);
double jc__cpu_estimate_power_w(const jc__cpu_estimate *e, double util_pct);

#endif
