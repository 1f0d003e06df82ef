/* joulecap.h — the whole public surface of libjoulecap.
 *
 * libjoulecap measures the energy that code uses on NVIDIA GPUs (through NVML, loaded at run time) and on the
 * CPU (RAPL through powercap sysfs, or a marked estimate where RAPL is absent).  One background thread per
 * context does every slow read; callers only take timestamps, so a measurement window costs nanoseconds.
 *
 * Units: energy in joules, power in watts, time in seconds (double) or nanoseconds of CLOCK_MONOTONIC
 * (uint64_t, names end in _ns).  Power limits at the NVML boundary are milliwatts (names end in _mw).
 *
 * Errors: every function that can fail returns a jc_status.  jc_strerror() gives a one-line text for a
 * status; jc_last_detail() gives the detail of the last failure on the calling thread (the NVML error string,
 * errno text, the list of GPUs that exist, ...), the way dlerror() does.
 *
 * Thread safety: a jc_context may be shared between threads.  Functions marked [any thread] may be called
 * concurrently on one context; jc_close() must not race with any other call on the same context.
 */
#ifndef JOULECAP_H
#define JOULECAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define JC_VERSION_MAJOR 0
#define JC_VERSION_MINOR 1
#define JC_VERSION_PATCH 0
#define JC_VERSION_STRING "0.1.0"

#if defined(__GNUC__)
#define JC_API __attribute__((visibility("default")))
#else
#define JC_API
#endif

/* Status codes.  Numbered once; never renumbered. */
typedef enum jc_status {
    JC_OK = 0,
    JC_ERR_INVALID_ARGUMENT = 1, /* an argument is malformed or out of range; the detail says which */
    JC_ERR_NO_MEMORY = 2,        /* an allocation failed */
    JC_ERR_NOT_FOUND = 3,        /* no such GPU, window or file; the detail lists what exists */
    JC_ERR_NOT_SUPPORTED = 4,    /* the device or driver cannot do this */
    JC_ERR_NO_PERMISSION = 5,    /* the OS or driver refused; the detail says what gives the right */
    JC_ERR_IO = 6,               /* a file could not be read or written; the detail has the errno text */
    JC_ERR_NVML = 7,             /* NVML returned an error not covered above; the detail has its text */
    JC_ERR_STATE = 8,            /* call out of order: started twice, stopped what was not started, ... */
    JC_ERR_TIMEOUT = 9,          /* the awaited data did not arrive in time */
    JC_ERR_GPU_LOST = 10,        /* the GPU fell off the bus or needs a reset */
    JC_ERR_UNAVAILABLE = 11,     /* the source is absent (no NVML, no RAPL); the detail says why */
    JC_ERR_BUSY = 12,            /* another process owns the resource (for example a power cap) */
    JC_ERR_THREAD = 13,          /* a thread could not be started */
} jc_status;

JC_API const char *jc_strerror(jc_status status);   /* "invalid argument", ... */
JC_API const char *jc_status_name(jc_status status); /* "JC_ERR_INVALID_ARGUMENT", ... */
JC_API const char *jc_last_detail(void);             /* [any thread] detail of this thread's last failure */
JC_API const char *jc_version(void);

/* ---------------------------------------------------------------------------------------------------------
 * Context: the sources, the sampler thread and the windows.
 * ------------------------------------------------------------------------------------------------------- */

typedef struct jc_context jc_context;

enum jc_flags {
    JC_NO_GPU = 1u << 0, /* do not open NVML at all */
    JC_NO_CPU = 1u << 1, /* do not read RAPL, /proc/stat, hwmon */
};

typedef struct jc_options {
    /* GPUs to measure, numbered as CUDA numbers them (honouring CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER):
     * NULL or "all" = every visible GPU; "none" = no GPU; "0", "0,2", "GPU-8f3c..." (a UUID or unique prefix);
     * lists may mix indices and UUIDs. */
    const char *gpus;
    /* Period of the cheap reads (instant power, utilisation, temperature, RAPL), in seconds.
     * 0 = default (0.01).  Must lie in [0.001, 3600]. */
    double interval_s;
    /* Period of the GPU energy-counter reads (3-6 ms each on an H100).  0 = default (0.02): fast enough to
     * pin each 100 ms counter step to within ~20 ms. */
    double counter_interval_s;
    /* Optional CSV sink: one row per csv_interval_s, written and flushed as it is taken. NULL = none. */
    const char *csv_path;
    /* Row period of the CSV sink. 0 = interval_s. Must be >= interval_s. */
    double csv_interval_s;
    unsigned flags;        /* jc_flags */
    size_t history_points; /* samples kept per series (bounded memory); 0 = default 65536 */
} jc_options;

JC_API void jc_options_init(jc_options *opts);

/* Opens the sources, validates the options (bad GPU selection, bad interval, CSV that cannot be created all
 * fail here, before any work) and starts the sampler thread.  A missing source is not an error: it is
 * reported by jc_device_info(). */
JC_API jc_status jc_open(jc_context **out, const jc_options *opts);
/* Stops the sampler, flushes and closes the CSV, frees everything.  NULL is allowed. */
JC_API void jc_close(jc_context *ctx);

/* Monotonic clock used for every timestamp (CLOCK_MONOTONIC, ns).  [any thread] */
JC_API uint64_t jc_now_ns(void);
/* Time at which the context was opened. */
JC_API uint64_t jc_epoch_ns(const jc_context *ctx);

/* ---------------------------------------------------------------------------------------------------------
 * Devices.  Device 0 is always the CPU (all sockets); devices 1..n are the selected GPUs in CUDA order.
 * ------------------------------------------------------------------------------------------------------- */

typedef enum jc_device_kind { JC_DEVICE_CPU = 0, JC_DEVICE_GPU = 1 } jc_device_kind;

/* Where a device's energy comes from. */
typedef enum jc_energy_source {
    JC_SOURCE_NONE = 0,        /* nothing readable: energy is empty, see note */
    JC_SOURCE_COUNTER = 1,     /* a hardware energy counter (NVML total energy, mJ) */
    JC_SOURCE_INTEGRATED = 2,  /* GPU without an energy counter: instant power integrated by the sampler */
    JC_SOURCE_RAPL = 3,        /* RAPL package (+ dram) counters through powercap sysfs */
    JC_SOURCE_ESTIMATE = 4,    /* a model (CPU power x utilisation): an estimate, see note */
} jc_energy_source;

JC_API const char *jc_energy_source_name(jc_energy_source source); /* "counter", "rapl", "estimate", ... */

/* Availability of each quantity: 0 = readable; otherwise the status explaining why not (with text in the
 * corresponding note). */
typedef struct jc_device_info {
    jc_device_kind kind;
    int index;      /* CUDA index for GPUs (as the process sees them), -1 for the CPU */
    int nvml_index; /* NVML index for GPUs, -1 for the CPU */
    char name[96];
    char uuid[96];
    char pci_bus_id[32];
    jc_energy_source energy_source;
    char energy_note[256]; /* why estimated / why absent; zones used for RAPL */
    jc_status power_status, util_status, temp_status;
    char power_note[128], util_note[128], temp_note[128];
    /* Power limits (GPU), 0 when unknown. */
    unsigned limit_mw, enforced_limit_mw, default_limit_mw, min_limit_mw, max_limit_mw;
} jc_device_info;

JC_API int jc_device_count(const jc_context *ctx);
JC_API jc_status jc_device_info_get(const jc_context *ctx, int device, jc_device_info *out);
/* Driver version and NVML status for `joulecap info`; note says why NVML is absent when it is. */
JC_API jc_status jc_gpu_driver(const jc_context *ctx, char *version, size_t version_len, char *note,
                               size_t note_len);

/* Latest values the sampler has seen for one device.  NaN where unreadable.  [any thread] */
typedef struct jc_reading {
    uint64_t t_ns;      /* time of the newest sample */
    double energy_j;    /* energy since the context opened */
    double power_w;     /* instant power (GPU: field 186, else the 1 s average; CPU: from RAPL/estimate) */
    double util_pct;    /* utilisation, % */
    double temp_c;      /* temperature, deg C */
} jc_reading;

JC_API jc_status jc_read_latest(jc_context *ctx, int device, jc_reading *out);

/* ---------------------------------------------------------------------------------------------------------
 * Windows (the meter).  start/stop take a timestamp and nothing else; the energy of a window is computed from
 * the sampler's series, interpolated inside the 100 ms counter steps, once the samples around its end exist.
 * Windows may be named, nested and overlapping.
 * ------------------------------------------------------------------------------------------------------- */

typedef int64_t jc_window;

#define JC_MAX_DEVICES 65

typedef struct jc_window_result {
    uint64_t start_ns, stop_ns;
    double elapsed_s;
    int device_count;                  /* CPU + GPUs */
    double energy_j[JC_MAX_DEVICES];   /* NaN where the device has no energy source */
    jc_energy_source source[JC_MAX_DEVICES];
    int resolved;                      /* 1 when every edge was covered by samples */
} jc_window_result;

/* [any thread] Opens a window now.  name may be NULL; it is copied. */
JC_API jc_status jc_window_start(jc_context *ctx, const char *name, jc_window *out);
/* [any thread] Opens a window at a given jc_now_ns() time (for timestamps taken elsewhere). */
JC_API jc_status jc_window_start_at(jc_context *ctx, const char *name, uint64_t t_ns, jc_window *out);
/* [any thread] Closes a window now.  Returns at once; the result resolves in the background. */
JC_API jc_status jc_window_stop(jc_context *ctx, jc_window w);
JC_API jc_status jc_window_stop_at(jc_context *ctx, jc_window w, uint64_t t_ns);
/* [any thread] Waits up to timeout_s for the samples covering the window and fills the result
 * (JC_ERR_TIMEOUT when they have not arrived; the result then holds the best estimate so far, resolved=0).
 * The window is kept until jc_window_release(). */
JC_API jc_status jc_window_result_get(jc_context *ctx, jc_window w, double timeout_s, jc_window_result *out);
JC_API const char *jc_window_name(jc_context *ctx, jc_window w); /* valid until release */
JC_API jc_status jc_window_release(jc_context *ctx, jc_window w);

/* Energy of [t0_ns, t1_ns] per device from the sampler's history, without a window object.  Same waiting
 * rule as jc_window_result_get.  [any thread] */
JC_API jc_status jc_energy_between(jc_context *ctx, uint64_t t0_ns, uint64_t t1_ns, double timeout_s,
                                   jc_window_result *out);

/* Blocks until the sampler has taken a sample after t_ns (or timeout). Used by stop paths and tests. */
JC_API jc_status jc_sync(jc_context *ctx, uint64_t t_ns, double timeout_s);

/* ---------------------------------------------------------------------------------------------------------
 * CSV sink columns (written by the sampler when csv_path is set):
 *   elapsed_s, cpu_energy_kwh, cpu_util_pct, cpu_temp_c, then for each GPU g (CUDA index):
 *   gpu{g}_energy_kwh, gpu{g}_util_pct, gpu{g}_temp_c, gpu{g}_power_w, then cpu_energy_source and
 *   gpu{g}_energy_source.  Empty cells where a value is unreadable.  Energies are since the context opened.
 * ------------------------------------------------------------------------------------------------------- */

/* Flushes the CSV sink (rows are already flushed as written; this also fsyncs). */
JC_API jc_status jc_csv_sync(jc_context *ctx);

/* ---------------------------------------------------------------------------------------------------------
 * Power caps (set / reset / restore).
 * ------------------------------------------------------------------------------------------------------- */
/* @@CAPS@@ */

/* ---------------------------------------------------------------------------------------------------------
 * Power-cap profiler (decision logic as a state machine, simulator).
 * ------------------------------------------------------------------------------------------------------- */
/* @@PROFILER@@ */

#ifdef __cplusplus
}
#endif
#endif /* JOULECAP_H */
