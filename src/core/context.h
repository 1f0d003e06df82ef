/* The context: every source, the sampler's series and the windows.  One mutex guards the series, the
 * windows and the latest readings; the sampler does its slow reads without holding it. */
#ifndef JC_CORE_CONTEXT_H
#define JC_CORE_CONTEXT_H

#include <pthread.h>
#include <stdio.h>

#include "../sampler/series.h"
#include "../sources/cpu.h"
#include "../sources/nvml.h"
#include "internal.h"

/* Counter tracking of one GPU: finds the instants at which the energy counter steps (every 100 ms on an H100,
 * on a very regular clock).  While unlocked it polls back to back and brackets each step; once the step
 * period and phase are fitted it reads once just after each predicted step, and brackets one step now and
 * then to keep the fit honest (sampler.c). */
#define JC__FIT_POINTS 32
typedef struct jc__counter_track {
    int have_raw, have_knot, locked, probing;
    unsigned long long raw_mj, base_mj;
    uint64_t prev_mid_ns;  /* instant of the previous read (middle of the call) */
    uint64_t next_ns;      /* when to read next */
    uint64_t last_knot_ns;
    /* fit of bracketed step instants: t = phase + k * period */
    uint64_t fit_t[JC__FIT_POINTS];
    int nfit, fit_next;
    double period_ns;
    uint64_t phase_ns;
    int reads_since_probe;
    uint64_t expect_ns;    /* the predicted step the next read targets (locked) */
    double jitter_ns;      /* RMS of probe residuals: how far steps stray from the fit */
    /* statistics, for benchmarks and `joulecap info --verbose` */
    uint64_t n_reads, n_probes, n_late, n_unlocks;
} jc__counter_track;

typedef struct jc__device {
    jc_device_info info;
    jc__ring knots; /* (t, cumulative J since the first knot) */
    jc_reading latest;
    int dead;       /* the source failed for good: edges after dead_ns resolve to NaN */
    uint64_t dead_ns;
    /* GPU */
    nvmlDevice_t handle;
    jc__counter_track counter;
    int64_t last_power_ts_us;
    uint64_t next_cheap_ns;
    int transient_errors;
    /* integration (GPU without counter, CPU estimate) */
    double integ_j;
    uint64_t integ_t_ns;
    double integ_p_w;
    int integ_started;
    /* energy at the epoch (context open), resolved like a window edge */
    double epoch_j;
    int epoch_resolved;
} jc__device;

typedef struct jc__window {
    uint32_t gen;
    int in_use;
    uint64_t t0, t1; /* t1 == 0 while open */
    char *name;
    /* Per-device edge energies and "resolved" flags, sized by the context's device count (the storage
     * follows the struct in the same allocation). */
    double *e0, *e1;
    unsigned char *r0, *r1;
} jc__window;

typedef struct jc__csv_row {
    uint64_t t_ns;
} jc__csv_row;

struct jc_context {
    jc_options opts;
    char *gpus_sel, *csv_path;
    uint64_t epoch_ns;
    int64_t realtime_minus_mono_us;

    int ndev;
    jc__device *dev;

    jc__nvml *nvml;
    char nvml_note[512];
    char gpu_note[512];

    /* CPU sources */
    jc__rapl *rapl;
    jc__procstat procstat;
    int have_procstat;
    jc__cputemp *cputemp;
    jc__cpu_estimate estimate;
    int use_estimate;
    uint64_t next_cpu_ns, next_util_ns, next_temp_ns;
    double cpu_util_pct;

    /* sampler thread */
    pthread_t thread;
    int thread_started;
    pthread_mutex_t lock;
    pthread_cond_t data_cv; /* broadcast after each commit */
    pthread_cond_t stop_cv; /* wakes the sampler for shutdown */
    int stopping;
    uint64_t cycles;
    uint64_t last_cycle_ns;

    /* windows */
    jc__window **win;
    size_t nwin, capwin;
    size_t *free_slots; /* released slots (1-based), reused first */
    size_t nfree;

    /* CSV sink */
    FILE *csv;
    uint64_t next_row_ns;
    jc__csv_row *rows; /* pending rows, oldest first */
    size_t nrows, caprows;
};

/* sampler.c */
jc_status jc__sampler_start(jc_context *ctx);
/* A read failed: GPU lost ends the device (returns 1); anything else is counted and retried (returns 0). */
int jc__sampler_read_failed(jc_context *ctx, jc__device *d, nvmlReturn_t r, uint64_t t, const char *what);
/* counter.c: reads the GPU energy counter when due and turns its steps into knots. */
void jc__counter_read(jc_context *ctx, jc__device *d, uint64_t now);
void jc__sampler_stop(jc_context *ctx);
/* meter.c: resolves pending edges of every window; called with ctx->lock held. */
void jc__meter_resolve_all(jc_context *ctx);
/* Resolves one edge at t for every device; returns 1 when every device is resolved. Lock held. */
int jc__resolve_edge(jc_context *ctx, uint64_t t, double *e, unsigned char *r);
void jc__meter_free(jc_context *ctx);
/* csv.c */
jc_status jc__csv_open(jc_context *ctx);
void jc__csv_pump(jc_context *ctx, uint64_t now); /* lock held */
/* Writes the rows still pending plus one at the instant of closing (waits up to timeout_s for their samples). */
void jc__csv_finish(jc_context *ctx, double timeout_s);
void jc__csv_close(jc_context *ctx);

#endif
