/* The context: the devices with their reader threads, the windows, the CSV sink, and the coordinator thread.
 *
 * Threads: one reader per device does that device's slow reads (NVML, RAPL, /proc) and commits its samples;
 * the coordinator marks stalled devices and resolves windows and CSV rows; the CSV writer writes finished rows.
 * One mutex (ctx->lock) guards every series, reading, health record, window and row; no thread holds it across
 * a device read or a file write, so a hung device or a slow disk holds up nobody else.
 *
 * Lifetime: a reader stuck in a driver call past jc_close() is left behind (detached).  It keeps a reference to
 * the context, which is freed by the last of jc_close() and such readers; NVML stays loaded while one lives. */
#ifndef JC_CORE_CONTEXT_H
#define JC_CORE_CONTEXT_H

#include <pthread.h>
#include <sys/types.h>
#include <stdatomic.h>
#include <stdio.h>

#include "../sampler/remote.h"
#include "../sampler/series.h"
#include "../sink/sink.h"
#include "../sources/cpu.h"
#include "../sources/nvml.h"
#include "internal.h"

/* Counter tracking of one GPU: finds the instants at which the energy counter steps (every 100 ms on an H100,
 * on a very regular clock).  While unlocked it polls back to back and brackets each step; once the step
 * period and phase are fitted it reads once just after each predicted step, and brackets one step now and
 * then to keep the fit honest (counter.c). */
#define JC__FIT_POINTS 32
typedef struct jc__counter_track {
    int have_raw, have_knot, locked, probing;
    unsigned long long raw_mj;
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
    /* plausibility (plausible.c): raw readings map to a stitched cumulative energy */
    double offset_j;       /* cumulative J = raw mJ * 1e-3 + offset_j */
    unsigned long long good_mj; /* last raw value accepted */
    uint64_t good_ns;
    int suspect;           /* consecutive readings rejected */
    unsigned long long suspect_mj;
    uint64_t suspect_ns;
    uint64_t raw_changed_ns; /* last time the raw value moved (stuck counter) */
    int stuck_reported;
    /* statistics, for benchmarks and `joulecap info --verbose` */
    uint64_t n_reads, n_probes, n_late, n_unlocks;
} jc__counter_track;

#define JC__HEALTH_EVENTS 32

typedef struct jc__device {
    jc_context *ctx;
    int id; /* index in ctx->dev */
    jc_device_info info;
    jc__ring knots; /* (t, cumulative J) */
    jc_reading latest;
    /* health: the current state is info.health / health_note / health_since_ns; changes are kept here */
    jc_health_event events[JC__HEALTH_EVENTS];
    size_t nevents;             /* total changes (the ring keeps the last JC__HEALTH_EVENTS) */
    char degraded_why[200];     /* the reason while degraded, kept while a stall comes and goes */
    int degraded;
    int dead;       /* the energy source ended for good: edges after dead_ns resolve to what came before */
    uint64_t dead_ns;
    uint64_t read_since_ns;     /* a read is in flight since then (0: none) */
    uint64_t last_read_ns;      /* end of the reader's last round of reads */
    uint64_t degraded_until_ns; /* a degraded state without new cause returns to ok then */
    int fine;                   /* reader's copy of jc__reader_fine() */
    uint64_t stall_from_ns;     /* stalled since (0: not stalled) */
    int starved;                /* stalled because no knot came for too long (the reads themselves return) */
    int fail_streak;            /* consecutive failed reads */
    uint64_t fail_since_ns;
    /* reader thread (reader.c); touches only this struct, its sources and ctx->lock */
    pthread_t thread;
    int thread_started, thread_exited;
    /* GPU */
    nvmlDevice_t handle;
    jc__counter_track counter;
    int64_t last_power_ts_us;
    uint64_t next_cheap_ns;
    double max_power_w;         /* plausibility bound: what the card can draw */
    double knot_sigma_ns;       /* timing error of the knots (the counter fit's jitter), published under the lock */
    /* start-up cross-check: counter against integrated instant power over the first second */
    int xcheck_done;
    double xcheck_j, xcheck_p_w;
    uint64_t xcheck_t0_ns, xcheck_t_ns;
    double xcheck_e0_j;
    /* integration (GPU without counter, CPU estimate) */
    double integ_j;
    uint64_t integ_t_ns;
    double integ_p_w;
    int integ_started;
    /* CPU */
    uint64_t next_cpu_ns, next_util_ns, next_temp_ns;
    double cpu_util_pct;
    double rapl_last_j;
    uint64_t rapl_changed_ns;   /* last time the RAPL counter moved */
    /* read through joulecapd (sampler/remote.c): knots after remote_since_ns are asked for at remote_next_ns */
    int remote;
    uint64_t remote_since_ns, remote_next_ns;
    /* energy at the epoch (context open), resolved like a window edge */
    double epoch_j;
    int epoch_resolved;
} jc__device;

/* One edge of a window for one device. */
typedef struct jc__edge {
    double e;        /* cumulative J at t_eff */
    uint64_t t_eff;  /* where the value holds: t, or an earlier knot when the device stopped before t */
    double var_j2;   /* variance of e from interpolation inside a step */
    unsigned char state; /* 0 pending, 1 exact, 2 cut (t_eff < t), 3 none */
} jc__edge;

typedef struct jc__window {
    uint32_t gen;
    int in_use;
    uint64_t t0, t1; /* t1 == 0 while open */
    char *name;
    jc__edge *e0, *e1; /* per device, sized by the context's device count (same allocation) */
    int done;          /* every edge resolved: the coordinator skips it */
    int logging;       /* handed to the window CSV (jc_window_finish), its row not yet formatted */
    int released;      /* released by the caller while logging: freed once its row is formatted */
    uint64_t row_seq;  /* its row's number in the window CSV (0: none yet) */
} jc__window;

struct jc_context {
    atomic_int refs; /* jc_close's and every reader still running */
    jc_options opts;
    char *gpus_sel;
    uint64_t epoch_ns;
    int64_t realtime_minus_mono_us;
    uint64_t stall_ns;
    int interval_auto; /* interval_s was left to its default: cheap reads slow down while nothing needs them */

    int ndev;
    jc__device *dev;

    jc__nvml *nvml;
    jc__remote *remote;      /* GPUs read through joulecapd (NULL: NVML in this process) */
    char remote_driver[96];
    char nvml_note[512];
    char gpu_note[512];

    /* CPU sources (device 0's reader owns them) */
    jc__rapl *rapl;
    jc__procstat procstat;
    int have_procstat;
    jc__cputemp *cputemp;
    jc__cpu_estimate estimate;
    int use_estimate;

    pthread_mutex_t lock;
    pthread_cond_t data_cv; /* broadcast after each commit */
    pthread_cond_t wake_cv; /* wakes readers and the coordinator (shutdown, a window opened) */
    int stopping;
    /* coordinator thread */
    pthread_t thread;
    int thread_started;
    uint64_t cycles;
    uint64_t last_cycle_ns;
    /* a window started or stopped then: the counter is read at every step for a while after (reader.c) */
    uint64_t last_window_ns;

    /* windows */
    jc__window **win;
    size_t nwin, capwin;
    size_t *free_slots; /* released slots (1-based), reused first */
    size_t nfree;

    jc__csv *csv;
    jc__wlog *wlog;
};

/* health.c (lock held): state changes of a device, recorded with their time and reason. */
void jc__health_set(jc__device *d, jc_health state, uint64_t t, const char *fmt, ...) JC__PRINTF(4, 5);
/* A reason to distrust the device's values, kept until cleared (lock held). */
void jc__health_degrade(jc__device *d, uint64_t t, const char *fmt, ...) JC__PRINTF(3, 4);
/* The device answered again after a stall or failing reads (lock held). */
void jc__health_recovered(jc__device *d, uint64_t t);
/* A knot was committed: ends a stall that was only the lack of knots (lock held). */
void jc__health_knot(jc__device *d, uint64_t t);
/* The worst state of the device over [t0, t1] (t0 == t1: the state at that instant), from its changes. */
jc_health jc__health_worst(const jc__device *d, uint64_t t0, uint64_t t1);

/* reader.c */
jc_status jc__readers_start(jc_context *ctx);
/* Stops the readers; a reader still inside a read after wait_s is left behind.  Returns how many were. */
int jc__readers_stop(jc_context *ctx, double wait_s);
/* A read failed (called by the reader, lock not held): GPU lost or a permanent error ends the device's
 * energy (returns 1); anything else is counted and retried with back-off (returns 0). */
int jc__reader_read_failed(jc__device *d, nvmlReturn_t r, uint64_t t, const char *what, int energy);
/* An energy read succeeded: ends a streak of failures (lock held). */
void jc__reader_ok(jc__device *d, uint64_t t);
/* Marks the start and end of a slow read, for stall detection. */
void jc__reader_busy(jc__device *d, int busy);
/* The cheap reads' period for this device now (reader thread). */
double jc__reader_interval_s(const jc__device *d);
/* 1 while reads of the energy counter at every step are needed (lock held). */
int jc__reader_fine(const jc_context *ctx, uint64_t now);

/* The reader's start-up cross-check, fed with each accepted counter knot. */
void jc__reader_xcheck_knot(jc__device *d, uint64_t t, double e_j);

/* counter.c: reads the GPU energy counter when due and turns its steps into knots. */
void jc__counter_read(jc__device *d, uint64_t now);
/* Fine reads are needed again (a window opened): the next read goes to the next step, not a second away. */
void jc__counter_refine(jc__device *d, uint64_t now);
/* remote.c: asks joulecapd for the device's new knots when due (reader thread). */
void jc__remote_poll(jc__device *d, uint64_t now);
/* plausible.c: checks a raw counter reading and commits its knot; returns 0 when rejected. */
int jc__counter_commit(jc__device *d, uint64_t t, unsigned long long mj);

/* coordinator.c: the context's own thread (stalls, windows, CSV rows) */
jc_status jc__coordinator_start(jc_context *ctx);
void jc__coordinator_stop(jc_context *ctx);

/* meter.c: resolves pending edges of every window; called with ctx->lock held. */
void jc__meter_resolve_all(jc_context *ctx);
/* Resolves one edge at t for every device; returns 1 when every device is resolved.  Lock held. */
int jc__resolve_edge(jc_context *ctx, uint64_t t, jc__edge *e, int is_end);
void jc__meter_free(jc_context *ctx);

/* meter.c, for the window CSV (lock held) */
jc__window *jc__window_peek(jc_context *ctx, jc_window id); /* released ones too */
int jc__window_edges_done(jc_context *ctx, jc__window *w);
void jc__window_result(jc_context *ctx, const jc__window *w, jc_window_result *out);
void jc__window_free(jc_context *ctx, jc__window *w, jc_window id);

/* sink/windows.c: the window CSV (lock held unless said) */
jc_status jc__wlog_open(jc_context *ctx, const char *path); /* lock not held */
jc_status jc__wlog_push(jc_context *ctx, jc__window *w, jc_window id);
void jc__wlog_pump(jc_context *ctx);
/* Waits until the finished window's row is written (or the file failed); JC_ERR_TIMEOUT otherwise. */
jc_status jc__wlog_wait_row(jc_context *ctx, jc__window *w, jc_window id, double timeout_s);
void jc__wlog_finish(jc_context *ctx, double timeout_s); /* lock not held */
void jc__wlog_close(jc_context *ctx);                     /* lock not held */

/* sink/csv.c */
jc_status jc__csv_open(jc_context *ctx, const char *path);
void jc__csv_pump(jc_context *ctx, uint64_t now); /* lock held */
/* Writes the rows still pending plus one at the instant of closing (waits up to timeout_s for their samples). */
void jc__csv_finish(jc_context *ctx, double timeout_s);
void jc__csv_close(jc_context *ctx);

#endif
