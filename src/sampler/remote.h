/* GPUs read through joulecapd, the node's sampler (docs/daemon.md, "One sampler per node").
 *
 * Where the daemon runs, a context does not open NVML: each GPU's reader thread asks the daemon for the knots
 * of that GPU's series (SERIES, protocol 3) and copies them into its own series, so that windows, rows and
 * health work exactly as in-process; start/stop stay timestamps (CLOCK_MONOTONIC is the node's).  Everything
 * the daemon sends is parsed as untrusted input (remote.c's parsers are fuzzed by tests/fuzz/fuzz_parsers.c). */
#ifndef JC_SAMPLER_REMOTE_H
#define JC_SAMPLER_REMOTE_H

#include <stddef.h>
#include <stdint.h>

#include "../core/internal.h"
#include "../sources/nvml.h"

typedef struct jc__remote jc__remote;

/* One GPU of the daemon's sampler (GPU <n>). */
typedef struct jc__remote_gpu {
    jc__gpu_ident id;
    int nvml_index;
    jc_device_info info; /* what the daemon's sampler can read and why not (no index, no health) */
} jc__remote_gpu;

#define JC__REMOTE_MAX_KNOTS 64

/* One SERIES reply. */
typedef struct jc__remote_series {
    char sid[64];
    uint64_t now_ns;
    int health;
    uint64_t health_since_ns;
    char health_note[256];
    double sigma_ns;     /* NaN: unknown */
    uint64_t dead_ns;    /* 0: its energy goes on */
    uint64_t latest_ns;
    double power_w, util_pct, temp_c; /* NaN: unreadable */
    int nknots;
    uint64_t knot_t[JC__REMOTE_MAX_KNOTS];
    double knot_j[JC__REMOTE_MAX_KNOTS];
    int more;
} jc__remote_series;

/* Pure parsers of the daemon's replies (the OK line, split in place): 0, or -1 when malformed.  Knots must be
 * strictly increasing in time with finite energies; numbers within bounds. */
int jc__remote_parse_gpu(char *line, size_t len, jc__remote_gpu *out);
int jc__remote_parse_series(char *line, size_t len, jc__remote_series *out);

/* Whether to use the daemon, from $JOULECAP_DAEMON (secure_getenv): "off" (never), "auto" or unset (the socket
 * of $JOULECAP_DAEMON_SOCKET, else the default, when it exists; never for a fake GPU of JOULECAP_FAKE), or a
 * socket path.  Returns 1 and the path to try, or 0 with why not. */
int jc__remote_wanted(char *path, size_t pathlen, char *why, size_t whylen);

/* Connects (HELLO 3) and lists the daemon's GPUs: JC_OK, or an error with why (no daemon, too old, no
 * sampler).  driver gets the daemon's driver version. */
jc_status jc__remote_open(const char *path, jc__remote **out, jc__remote_gpu *gpus, int max, int *n, char *driver,
                          size_t driverlen, char *why, size_t whylen);
void jc__remote_close(jc__remote *r); /* NULL allowed */
const char *jc__remote_path(const jc__remote *r);

#endif
