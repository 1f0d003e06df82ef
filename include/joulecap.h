/* joulecap.h — the whole public surface of libjoulecap.
 *
 * libjoulecap measures the energy that code uses on NVIDIA GPUs (through NVML, loaded at run time) and on the
 * CPU (RAPL through powercap sysfs, or a marked estimate where RAPL is absent).  One background thread per
 * context does every slow read; callers only take timestamps, so a measurement window costs nanoseconds.
 *
 * Conventions (one rule each, everywhere in this header; the API is not frozen before 1.0):
 *  - Units: one unit per quantity, named by the last part of a name: energy in joules (_j), power and power
 *    limits in watts (_w, double), time in seconds (_s, double) or nanoseconds of CLOCK_MONOTONIC (_ns,
 *    uint64_t).  An unknown or unreadable value is NaN, never 0.
 *  - Closed sets are enums, numbered once and never renumbered, each with jc_<enum>_name() giving a short
 *    lower-case word ("unknown" outside the set; jc_objective_name: NULL, as its parser's counterpart).
 *  - Names are jc_<object>_<verb>; a function that fills a caller's struct jc_X is jc_X_get (jc_device_info_get,
 *    jc_reading_get, jc_window_result_get, jc_cap_info_get, ...).  jc_ is public, jc__ internal.
 *  - Options structs the caller fills (jc_options, jc_cap_options, jc_profiler_config) start with
 *    `size_t size`, set by their _init() together with every default; the library refuses a size that is not
 *    its own (JC_ERR_INVALID_ARGUMENT), so a program built against another header fails loudly instead of
 *    being misread.  Structs the library fills (infos, readings, results, entries) change layout only when
 *    JC_VERSION_MAJOR (the soname) changes or, before 1.0, JC_VERSION_MINOR: rebuild against the new header.
 *  - Renamed functions stay one minor release as deprecated inline wrappers (end of this header).
 *  - The profiler's simulator (sweeps, simulated GPUs) is in joulecap_sim.h, outside the stable API.
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
#define JC_VERSION_MINOR 2
#define JC_VERSION_PATCH 0
#define JC_VERSION_STRING "0.2.0"

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
    /* Read the GPU energy counter at every step all the time, for energies of intervals taken after the fact
     * (jc_energy_between, jc_reading_get) while no window is open.  Without it, and with counter_interval_s 0,
     * the counter is read at every step only while a window is open (and 10 s after one), or CSV rows are
     * under 1 s apart; otherwise about once a second (under 1% of a CPU core instead of 5-6% on an H100,
     * BENCHMARKS.md). */
    JC_EVERY_STEP = 1u << 2,
};

typedef struct jc_options {
    size_t size; /* sizeof(jc_options), set by jc_options_init() */
    /* GPUs to measure, numbered as CUDA numbers them (honouring CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER):
     * NULL or "all" = every visible GPU; "none" = no GPU; "0", "0,2", "GPU-8f3c..." (a UUID or unique prefix);
     * lists may mix indices and UUIDs. */
    const char *gpus;
    /* Period of the cheap reads (instant power, utilisation, temperature, RAPL), in seconds.
     * 0 = default: 0.01 while the counter is read at every step (see JC_EVERY_STEP), else 0.1 (or a tenth of
     * the CSV row period).  Must lie in [0.001, 3600]. */
    double interval_s;
    /* GPU energy counter reads (4.2 ms of CPU each on an H100, which steps its counter every 100 ms on a regular
     * clock): the sampler locks on to the steps' clock and reads once a quarter step after each step, so every step's
     * instant is known.  counter_interval_s > 0 reads only the first step after each such interval: less CPU,
     * coarser short windows (BENCHMARKS.md), and a window's result waits up to that long for the knot after
     * its end.  0 = every step while something needs it (see JC_EVERY_STEP; default).  Must lie in [0, 60]. */
    double counter_interval_s;
    /* Optional CSV sink: one row per csv_interval_s, written and flushed as it is taken. NULL = none. */
    const char *csv_path;
    /* Row period of the CSV sink. 0 = interval_s. Must be >= interval_s. */
    double csv_interval_s;
    /* Optional window CSV: a row per window handed over with jc_window_finish(), written as soon as its values
     * are known (about one counter step after its end), in the order the windows were finished.  "-" =
     * standard output.  NULL = none.  Columns under "Window CSV" below. */
    const char *window_csv_path;
    unsigned flags;        /* jc_flags */
    /* Knots (counter steps, RAPL reads) kept per device: 16 bytes each, so the default 65536 bounds the
     * history at 1 MiB per device (~1.8 h of 100 ms steps; RAPL at 100 Hz: ~11 min).  A window's edges are
     * resolved as soon as samples cover them, so only windows whose edges are older than the history lose
     * them (their energy is then NaN).  Each unreleased window holds ~80 bytes + 18 per device.
     * 0 = default 65536; 64 to 100000000. */
    size_t history_points;
    /* A device read still in flight after stall_s marks the device stalled: windows and CSV rows stop waiting
     * for it (their values for it end at its last sample, with coverage < 1).  0 = default 1.0; 0.05 to 600. */
    double stall_s;
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

JC_API const char *jc_device_kind_name(jc_device_kind kind); /* "cpu", "gpu" */

/* Where a device's energy comes from. */
typedef enum jc_energy_source {
    JC_SOURCE_NONE = 0,        /* nothing readable: energy is empty, see note */
    JC_SOURCE_COUNTER = 1,     /* a hardware energy counter (NVML total energy, mJ) */
    JC_SOURCE_INTEGRATED = 2,  /* GPU without an energy counter: instant power integrated by the sampler */
    JC_SOURCE_RAPL = 3,        /* RAPL package (+ dram) counters through powercap sysfs */
    JC_SOURCE_ESTIMATE = 4,    /* a model (CPU power x utilisation): an estimate, see note */
} jc_energy_source;

JC_API const char *jc_energy_source_name(jc_energy_source source); /* "counter", "rapl", "estimate", ... */

/* Health of a device's measurements.  Values taken while a device is ok or degraded are whole; a stalled or
 * lost device's values stop at its last good sample, and windows that reach past it say so (coverage). */
typedef enum jc_health {
    JC_HEALTH_OK = 0,       /* readings arrive and pass the plausibility checks */
    JC_HEALTH_DEGRADED = 1, /* values are whole but less sure: rejected readings, slow or failing reads, a
                               counter that disagrees with integrated power, RAPL stuck (estimate used) */
    JC_HEALTH_STALLED = 2,  /* a read has been in flight longer than stall_s, or reads keep failing: windows
                               and rows do not wait for it */
    JC_HEALTH_LOST = 3,     /* the device or its energy source is gone for good (GPU lost, counter refused) */
} jc_health;

JC_API const char *jc_health_name(jc_health health); /* "ok", "degraded", "stalled", "lost" */

/* One change of a device's health. */
typedef struct jc_health_event {
    uint64_t t_ns;     /* when it changed (jc_now_ns clock) */
    jc_health health;  /* the state from then on */
    char reason[232];  /* why; empty for a return to ok */
} jc_health_event;

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
    char power_note[256], util_note[256], temp_note[256];
    /* Power limits (GPU) in W, NaN when unknown (and for the CPU).  limit_w is the requested limit,
     * enforced_limit_w what the GPU applies (as in jc_cap_info). */
    double limit_w, enforced_limit_w, default_limit_w, min_limit_w, max_limit_w;
    jc_health health;         /* current state, since health_since_ns, because health_note */
    uint64_t health_since_ns;
    char health_note[256];
} jc_device_info;

JC_API int jc_device_count(const jc_context *ctx);
JC_API jc_status jc_device_info_get(const jc_context *ctx, int device, jc_device_info *out);
/* The changes of a device's health since the context opened, oldest first (the last 32 are kept): copies up to
 * max of them into out and sets *count to how many there were in all.  [any thread] */
JC_API jc_status jc_device_health_get(jc_context *ctx, int device, jc_health_event *out, size_t max,
                                      size_t *count);
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

JC_API jc_status jc_reading_get(jc_context *ctx, int device, jc_reading *out);

/* ---------------------------------------------------------------------------------------------------------
 * Windows (the meter).  start/stop take a timestamp and nothing else; the energy of a window is computed from
 * the sampler's series, interpolated inside the 100 ms counter steps, once the samples around its end exist.
 * Windows may be named, nested and overlapping.
 * ------------------------------------------------------------------------------------------------------- */

typedef int64_t jc_window;

#define JC_J_PER_KWH 3.6e6 /* joules in a kilowatt-hour: every kWh the library and its tools write */
#define JC_MAX_DEVICES 65

typedef struct jc_window_result {
    uint64_t start_ns, stop_ns;
    double elapsed_s;
    int device_count;                  /* CPU + GPUs */
    double energy_j[JC_MAX_DEVICES];   /* NaN where the device has no energy source */
    jc_energy_source source[JC_MAX_DEVICES];
    int resolved;                      /* 1 when every edge was covered by samples */
    /* Share of the window that energy_j covers: 1 = whole; below 1 the device stalled or was lost inside the
     * window and energy_j is the energy up to its last sample; 0 = nothing (energy_j NaN). */
    double coverage[JC_MAX_DEVICES];
    /* Half-width of a 95% interval around energy_j, from where the counter's steps fall against the window's
     * edges and the power around them (0 for exact edges; NaN when energy_j is NaN). */
    double uncertainty_j[JC_MAX_DEVICES];
    jc_health health[JC_MAX_DEVICES];  /* the worst state of the device during the window */
} jc_window_result;

/* [any thread] Opens a window now.  name may be NULL; it is copied. */
JC_API jc_status jc_window_start(jc_context *ctx, const char *name, jc_window *out);
/* [any thread] Opens a window at a given jc_now_ns() time (for timestamps taken elsewhere). */
JC_API jc_status jc_window_start_at(jc_context *ctx, const char *name, uint64_t t_ns, jc_window *out);
/* [any thread] Closes a window now.  Returns at once; the result resolves in the background. */
JC_API jc_status jc_window_stop(jc_context *ctx, jc_window w);
JC_API jc_status jc_window_stop_at(jc_context *ctx, jc_window w, uint64_t t_ns);
/* [any thread] Stops a window at t_ns and hands it to the window CSV (when the context has one): its row is
 * written once its values are known, in the order of jc_window_finish() calls.  The window stays the caller's
 * until jc_window_release(), which may come at once (the row is still written).  For such a window
 * jc_window_result_get() returns once its row is written, unless the window CSV failed. */
JC_API jc_status jc_window_finish(jc_context *ctx, jc_window w, uint64_t t_ns);
/* [any thread] Waits up to timeout_s until the row of every finished window is written.  JC_ERR_TIMEOUT when
 * some are not (*pending gets how many, may be NULL), the window CSV's write error if it failed, JC_ERR_STATE
 * when the context has no window CSV. */
JC_API jc_status jc_window_csv_flush(jc_context *ctx, double timeout_s, size_t *pending);
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

/* Cumulative energy of every device at n instants, in one call: energy_j[k * device_count + i] is device i's
 * energy (J, since the context opened) at t_ns[k], interpolated as a window edge is; NaN where the series does
 * not cover the instant (before the kept history, or past a stalled or lost device's last sample).  Waits up to
 * timeout_s for the samples after the latest instant (JC_ERR_TIMEOUT otherwise, with what is known filled in).
 * The energy of [a, b] is the difference of two rows.  For tools that time many intervals themselves (the
 * layer-wise tool).  [any thread] */
JC_API jc_status jc_energy_at(jc_context *ctx, const uint64_t *t_ns, size_t n, double timeout_s, double *energy_j);

/* Blocks until the sampler has taken a sample after t_ns (or timeout). Used by stop paths and tests. */
JC_API jc_status jc_sync(jc_context *ctx, uint64_t t_ns, double timeout_s);

/* ---------------------------------------------------------------------------------------------------------
 * CSV sink columns (written by the sampler when csv_path is set):
 *   elapsed_s, cpu_energy_kwh, cpu_util_pct, cpu_temp_c, then for each GPU g (CUDA index):
 *   gpu{g}_energy_kwh, gpu{g}_util_pct, gpu{g}_temp_c, gpu{g}_power_w, then cpu_energy_source and
 *   gpu{g}_energy_source, then cpu_state and gpu{g}_state (jc_health_name of the device at the row's time).
 *   Empty cells where a value is unreadable, or not whole (a stalled or lost device).  Energies are since the
 *   context opened.  csv_path "-" writes to the process's standard output (file descriptor 1).
 * Rows are written by a thread of their own, each with one write() of whole lines.  A write error stops the
 * sink: the file is cut back to its last whole row and the error is kept for jc_csv_status().
 * ------------------------------------------------------------------------------------------------------- */

/* Window CSV columns (jc_options.window_csv_path), the seed's snippet CSV:
 *   elapsed_s, cpu_energy_kwh, gpu{g}_energy_kwh..., cpu_energy_source, gpu{g}_energy_source..., window (the
 *   name, quoted when needed), start_s (since the context opened), cpu_coverage, gpu{g}_coverage... (share of
 *   the window the value covers), cpu_state, gpu{g}_state... (worst health in the window).
 * Written like the CSV sink: a thread of its own, whole lines, cut back to the last whole row on an error,
 * which jc_window_csv_flush() returns. */

/* Waits for the rows resolved so far to be written, then fsyncs (not for standard output).  Returns the sink's
 * error if it has one. */
JC_API jc_status jc_csv_sync(jc_context *ctx);
/* JC_OK while every row taken has been written (or is on its way); else the first write error, with the file,
 * the errno text and the rows kept in the detail.  rows_written may be NULL. */
JC_API jc_status jc_csv_status(jc_context *ctx, uint64_t *rows_written);
/* Writes a last row at the instant of the call, waits for the rows still due (at most stall_s + 0.5 s), closes
 * the file and returns the sink's status (as jc_csv_status).  jc_close() does the same when this was not
 * called, but cannot report an error. */
JC_API jc_status jc_csv_close(jc_context *ctx, uint64_t *rows_written);

/* ---------------------------------------------------------------------------------------------------------
 * Power caps (set / reset / restore).
 * ------------------------------------------------------------------------------------------------------- */
/* Power caps change a GPU's power limit (nvmlDeviceSetPowerManagementLimit), which needs root, or
 * CAP_SYS_ADMIN in a container.  GPUs are selected as everywhere else in joulecap (CUDA numbering, UUIDs).
 * Limits are given and reported in watts; NVML takes milliwatts (a cap is rounded to the nearest mW).
 *
 * Every change is made under a journal: before joulecap first changes a GPU's limit it writes one file per
 * GPU (named by UUID) in the state directory with the limit in force then (the saved limit: not the default,
 * not the maximum), the limit joulecap set, and who owns the change.  Two kinds of change:
 *
 *  - a session (jc_cap_session_*): the caps last as long as the session.  jc_cap_session_close() puts the
 *    saved limits back; when the owning process dies in any way (SIGKILL, crash, exec, ...) a guardian
 *    process started at session open, the joulecap executable running `joulecap cap __guard`, sees its
 *    socket reach EOF and restores them.  If the guardian dies first, the owner's next set or reset puts
 *    the saved limits back and fails (JC_ERR_UNAVAILABLE); if both died, `joulecap cap restore`
 *    (jc_cap_restore) repairs what the journal says was left.  A second process (or a second session of
 *    the same process) asking for a GPU that a live session owns gets JC_ERR_BUSY naming the owner.
 *  - persistent (jc_cap_set_persistent, `joulecap cap set`): the cap stays after the process exits, like
 *    `nvidia-smi -pl`; the journal has no owner and `joulecap cap reset|restore` puts the saved limit back.
 *    A session opened on a GPU with a persistent cap saves that cap and, at its end, leaves it (and its
 *    journal) as it found them.
 *
 * Every set is read back: a limit that did not take is an error (JC_ERR_NVML: asked X W, the GPU reports
 * Y W), never recorded as done.  Journals carry a checksum; a damaged one (cut short, corrupt) is refused
 * with its path and the repair, kept, never reported as restored.  A GPU that NVML cannot identify (lost)
 * is reported and skipped when the selection is "all"; the other GPUs are handled as usual.
 *
 * State directory: jc_cap_options.state_dir, else $JOULECAP_STATE_DIR, else /var/lib/joulecap when it is
 * writable (root), else $XDG_RUNTIME_DIR/joulecap, else /tmp/joulecap-<uid> (created 0700).  It must belong
 * to the caller and be writable by nobody else, nor may the directories above it be (unless sticky), as
 * ssh checks; files in it are opened with O_NOFOLLOW.  Otherwise JC_ERR_NO_PERMISSION says the fix.
 * Owners are recorded as pid + start time (field 22 of /proc/<pid>/stat), so a reused pid is not mistaken
 * for the owner; processes in other pid namespaces sharing one state directory cannot be told apart.
 *
 * Thread safety: every function may be called from any thread.  A jc_cap_session serialises the calls made
 * on it with its own lock; jc_cap_session_close() must not race with other calls on the same session.  The
 * library keeps no global mutable state for caps (the state is on disk, guarded by flock on
 * <state dir>/<uuid>.lock).  A child made by fork() without exec inherits no ownership: closing a session
 * there frees memory only (its caps belong to the parent).  See docs/caps.md. */

typedef struct jc_cap_options {
    size_t size; /* sizeof(jc_cap_options), set by jc_cap_options_init() */
    /* GPUs (CUDA numbering, as jc_options.gpus): NULL or "all" = every visible GPU, "0", "0,2", "GPU-8f3c...".
     * For a session: the GPUs it owns (taken at open).  For jc_cap_restore: NULL = every journal. */
    const char *gpus;
    const char *state_dir;     /* NULL = default (above) */
    /* The joulecap executable run as the guardian.  NULL = $JOULECAP_CLI, else this program itself when it
     * is joulecap, else `joulecap` on PATH. */
    const char *guardian_path;
} jc_cap_options;

JC_API void jc_cap_options_init(jc_cap_options *opts);

/* Who manages a GPU's limit, from its journal. */
typedef enum jc_cap_manager {
    JC_CAP_MANAGER_NONE = 0,       /* no journal: joulecap has not changed this limit */
    JC_CAP_MANAGER_SESSION = 1,    /* a live process's session (owner_pid) */
    JC_CAP_MANAGER_PERSISTENT = 2, /* a persistent cap (`joulecap cap set`); reset/restore puts it back */
    JC_CAP_MANAGER_STALE = 3,      /* a session whose owner and guardian are dead: `joulecap cap restore` */
    JC_CAP_MANAGER_DAMAGED = 4,    /* a journal that is cut short, corrupt or not a plain file: refused and
                                      kept; error says what and how to repair (`cap restore --discard`) */
} jc_cap_manager;

/* "none", "session", "persistent", "stale", "damaged" */
JC_API const char *jc_cap_manager_name(jc_cap_manager manager);

typedef struct jc_cap_info {
    int index;      /* CUDA index as this process sees it; -1 when the GPU is not visible */
    int nvml_index;
    char name[96];
    char uuid[96];
    char pci_bus_id[32];
    /* Limits in W (NaN where the driver does not say).  limit_w is the requested limit (what a set sets and
     * what is saved); enforced_limit_w is what the GPU applies (it can be lower). */
    double limit_w, enforced_limit_w, default_limit_w, min_limit_w, max_limit_w;
    jc_cap_manager manager;
    /* From the journal (NaN / 0 / "" without one). */
    double saved_limit_w;      /* put back by close / reset / restore */
    double set_limit_w;        /* the limit joulecap set last; NaN when the session has not changed it */
    double persistent_saved_limit_w; /* a session over a persistent cap: that cap's own saved limit */
    int owner_pid;             /* 0 for a persistent cap */
    int guardian_pid;          /* 0 when there is none */
    int guardian_alive;
    char owner_command[256];   /* the owner's command line */
    /* Through joulecapd (a lease reads as SESSION, a lease waiting to be put back as STALE): the user holding
     * the GPU, or its persistent cap.  "" and 0 in direct mode. */
    char owner_user[64];
    unsigned owner_uid;
    double journal_created;    /* Unix time (s) */
    char journal_path[512];
    /* JC_OK, or why NVML cannot give this GPU (JC_ERR_GPU_LOST: it fell off the bus); then only index,
     * nvml_index and error are meaningful. */
    jc_status status;
    char error[768];           /* status != JC_OK: why; manager DAMAGED: what is wrong and the repair */
} jc_cap_info;

/* Limits and manager of the GPUs selected by opts->gpus (opts may be NULL: all), in selection order.
 * Unknown GPU: JC_ERR_NOT_FOUND listing the GPUs; no NVML: JC_ERR_UNAVAILABLE.  A GPU that NVML cannot
 * identify (lost) is listed with its status and error, and the others as usual.  *count gets the number
 * found (at most max). */
JC_API jc_status jc_cap_list(const jc_cap_options *opts, jc_cap_info *out, int max, int *count);
/* One GPU: gpu is a selection naming exactly one ("0", "GPU-8f3c..."); a lost GPU: its status (JC_ERR_GPU_LOST). */
JC_API jc_status jc_cap_info_get(const char *gpu, const jc_cap_options *opts, jc_cap_info *out);

/* --- Sessions ------------------------------------------------------------------------------------------ */

typedef struct jc_cap_session jc_cap_session;

/* Takes the selected GPUs: checks each can be capped (a no-op write of the limit in force:
 * JC_ERR_NO_PERMISSION, saying what gives the right, before anything else happens), starts the guardian
 * (JC_ERR_UNAVAILABLE saying how to point at joulecap when it cannot start), then writes each GPU's journal
 * (JC_ERR_BUSY naming the owner's pid and command when a live session owns one; a stale journal is
 * repaired first and said so in jc_cap_session_note()).  No limit is changed by opening. */
JC_API jc_status jc_cap_session_open(const jc_cap_options *opts, jc_cap_session **out);
/* Sets the cap of the session's GPU with CUDA index gpu (-1: every GPU of the session) to watts, and reads
 * it back.  JC_ERR_UNAVAILABLE when the session's guardian died: the saved limits are put back at once and
 * the session changes no more caps (close it, open another).
 * Outside [min, max]: JC_ERR_INVALID_ARGUMENT stating the range in W (nothing changed).  A GPU the session
 * did not take: JC_ERR_NOT_FOUND listing the session's GPUs. */
JC_API jc_status jc_cap_session_set(jc_cap_session *s, int gpu, double watts);

typedef enum jc_cap_reset_kind {
    JC_CAP_RESET_NONE = 0,
    JC_CAP_RESET_SAVED = 1,   /* the saved limit (in force before joulecap changed it) was put back */
    JC_CAP_RESET_DEFAULT = 2, /* joulecap had not changed it: the default limit was set */
} jc_cap_reset_kind;

JC_API const char *jc_cap_reset_kind_name(jc_cap_reset_kind kind); /* "none", "saved", "default" */

/* Session reset of one GPU (-1: all; *did then tells the last one): when this session changed the limit,
 * puts the saved limit back (SAVED); otherwise sets the default limit (DEFAULT), which the session's end
 * undoes like any other change.  did may be NULL. */
JC_API jc_status jc_cap_session_reset(jc_cap_session *s, int gpu, jc_cap_reset_kind *did);
/* Puts every saved limit back now; the session stays open and owns its GPUs. */
JC_API jc_status jc_cap_session_restore(jc_cap_session *s);
/* Puts every saved limit back, removes the journals, stops the guardian and frees the session (also on
 * failure: the first error is returned and its journal is kept for `joulecap cap restore`).  NULL is OK. */
JC_API jc_status jc_cap_session_close(jc_cap_session *s);
JC_API int jc_cap_session_gpu_count(const jc_cap_session *s);
/* Limits and journal of the session's i-th GPU (0 <= i < count), read now. */
JC_API jc_status jc_cap_session_info_get(jc_cap_session *s, int i, jc_cap_info *out);
/* What open repaired (stale journals), "" when nothing.  Valid until close. */
JC_API const char *jc_cap_session_note(const jc_cap_session *s);

/* --- Persistent caps and repair (what `joulecap cap set|reset|restore` do) ----------------------------- */

/* Sets the cap of every GPU in the selection gpu and leaves it after the process exits.  The journal keeps
 * the limit in force before joulecap's first change (an earlier persistent cap's saved limit is kept).
 * Checks every GPU (range, permission, owner) before changing any.  JC_ERR_BUSY when a live session owns
 * one; a stale journal is repaired first (note says so).  note may be NULL. */
JC_API jc_status jc_cap_set_persistent(const char *gpu, double watts, const jc_cap_options *opts, char *note,
                                       size_t note_len);
/* Reset of one GPU outside any session: a journal (persistent or stale) -> its saved limit is put back and
 * the journal removed (SAVED); no journal -> the default limit (DEFAULT).  JC_ERR_BUSY when a live session
 * owns it.  *limit_w gets the limit now in force.  did, limit_w, note may be NULL. */
JC_API jc_status jc_cap_reset(const char *gpu, const jc_cap_options *opts, jc_cap_reset_kind *did,
                              double *limit_w, char *note, size_t note_len);

typedef enum jc_cap_restore_action {
    JC_CAP_RESTORED = 1,      /* the saved limit was put back; the journal removed (or a persistent cap
                                 under a session reinstated with its own journal) */
    JC_CAP_LEFT_LIVE = 2,     /* a live session owns it: nothing done */
    JC_CAP_RESTORE_FAILED = 3 /* status and note say why; the journal is kept */
} jc_cap_restore_action;

/* "restored", "left-live", "failed" */
JC_API const char *jc_cap_restore_action_name(jc_cap_restore_action action);

typedef struct jc_cap_restore_entry {
    char uuid[96];
    int index;                 /* CUDA index, -1 when not visible to this process */
    jc_cap_restore_action action;
    jc_status status;
    double limit_w;            /* the limit put back (RESTORED) */
    int owner_pid;             /* 0: a persistent cap */
    jc_cap_manager was;        /* what the journal was: STALE, PERSISTENT, SESSION (live) or DAMAGED */
    char note[768];
} jc_cap_restore_entry;

/* Repairs journals: stale ones (owner and guardian dead) and persistent ones get their saved limit back and
 * are removed; journals of live sessions are left (LEFT_LIVE).  opts->gpus NULL: every journal in the state
 * directory (GPUs hidden by CUDA_VISIBLE_DEVICES too); else only the selected GPUs'.  A damaged journal, or
 * one of a GPU that is lost or gone, is RESTORE_FAILED with the reason and the repair in its note, and kept;
 * the others are restored all the same.  Every limit put back is read back.  Returns JC_OK when every
 * journal found was restored or left live; otherwise the first failure (the entries tell each).
 * *count gets the entries written (at most max; out may be NULL with max 0 to only repair). */
JC_API jc_status jc_cap_restore(const jc_cap_options *opts, jc_cap_restore_entry *out, int max, int *count);

/* Sets a journal aside without restoring it: renames <state dir>/<uuid>.journal to
 * <uuid>.journal.bad-<UTC time> (kept, never removed), so that the GPU can be capped and reset again.  For
 * journals that cannot be restored (damaged, refused); the limit is not changed: check it and set the one
 * you want (jc_cap_reset then sets the default).  A live session's journal: JC_ERR_BUSY; none:
 * JC_ERR_NOT_FOUND.  *saved_w (may be NULL) gets the limit an intact journal saved, NaN for a damaged one;
 * kept_as (may be NULL) the new name. */
JC_API jc_status jc_cap_discard_journal(const char *uuid, const jc_cap_options *opts, double *saved_w,
                                        char *kept_as, size_t len);

/* The state directory that opts select (created if missing). */
JC_API jc_status jc_cap_state_dir(const jc_cap_options *opts, char *buf, size_t len);

/* Where cap calls go.  When the socket of joulecapd, the node service (docs/daemon.md), exists
 * ($JOULECAP_DAEMON_SOCKET, else /run/joulecap/joulecapd.sock), every jc_cap_* call above goes through it:
 * sessions are leases that end with their connection, any user the daemon's config allows may cap, and
 * errors say "joulecapd (PATH): ...".  Otherwise NVML is used directly, as described above.  Returns 1 for
 * joulecapd, text "joulecapd (PATH)"; 0 for direct, text "direct NVML".  text may be NULL. */
JC_API int jc_cap_route(char *text, size_t len);

/* ---------------------------------------------------------------------------------------------------------
 * Per-job energy on the node (joulecapd --metrics, docs/daemon.md).
 * ------------------------------------------------------------------------------------------------------- */
/* Where joulecapd runs with --metrics, processes add the GPU energy of their windows to their job's totals on
 * the node, which it exports as joulecap_job_gpu_energy_joules_total{job,user,gpu}: the user is the calling
 * process's (the daemon asks the kernel), the job is the caller's word.  Each report adds: report a window
 * once, and not both a window and a window nested in it. */

/* The job this process belongs to: $JOULECAP_JOB, else $SLURM_JOB_ID, else $TORCHELASTIC_RUN_ID (unless it is
 * "none", torchrun's default).  JC_ERR_NOT_FOUND when none is set; JC_ERR_INVALID_ARGUMENT when the value is
 * not 1 to 128 bytes of printable ASCII. */
JC_API jc_status jc_job_name(char *buf, size_t len);
/* Adds the GPU energies of a window's result (finite values of GPU devices of ctx, named to the daemon by
 * UUID) to the totals of job (NULL: jc_job_name()).  One connection, a request per GPU.  JC_ERR_UNAVAILABLE
 * when no joulecapd runs (no socket); JC_ERR_NOT_SUPPORTED when it runs without --metrics or is older
 * (protocol 1); JC_ERR_BUSY when it keeps too many job totals.  Nothing to add is JC_OK.  [any thread] */
JC_API jc_status jc_job_report(jc_context *ctx, const char *job, const jc_window_result *result);

/* Entry point of the guardian (`joulecap cap __guard --fd N --journal-dir DIR --owner PID --owner-start T`);
 * argv[0] is "__guard".  For the joulecap executable only; returns the exit code. */
JC_API int jc_cap_guardian_main(int argc, char **argv);

/* ---------------------------------------------------------------------------------------------------------
 * Power-cap profiler (decision logic as a state machine, simulator).
 * ------------------------------------------------------------------------------------------------------- */
/* The profiler finds the power cap with the best trade-off between energy and time for a repeated unit of work
 * (a training or inference step).  Its decision logic is a pure state machine: it reads no clock and no
 * device; the caller (the driver) sets caps and reports step boundaries, and asks what to do next:
 *
 *     jc_profiler_new(&cfg, &p);
 *     for (;;) {
 *         jc_profiler_next_action(p, &a);
 *         if (a.kind == JC_PROFILER_DONE) break;
 *         if (a.kind == JC_PROFILER_SET_CAP) { set_cap(a.cap_w); jc_profiler_cap_applied(p, a.cap_w, now(), energy()); }
 *         else { run_one_step(); jc_profiler_observe_step(p, now(), energy()); }
 *     }
 *     jc_profiler_result_get(p, &r);   then set r.cap_w (online mode) or restore the saved cap (offline)
 *
 * The same loop serves the offline profiler (steps run only to measure), the online optimizer (one
 * observation per real training step, nothing wasted) and the simulator (jc_profiler_simulate() in
 * joulecap_sim.h).
 * Times are seconds of any monotonic clock; energies are readings of a cumulative energy counter in joules
 * (any origin, never decreasing; for several GPUs under one cap, the sum of their counters).  The counter may
 * advance in steps (NVIDIA: every ~100 ms, set counter_period_s); the estimators are built for that.
 *
 * What it does: for each cap, drop the steps while power settles, then measure until the time and energy per
 * step are known to the requested precision (or the cap is clearly worse than the best so far); a coarse pass
 * over [min, default] in steps of about 10% of the default limit, then refinement where a piecewise-linear
 * model of time and power against the cap says the optimum can be (the knee is kept, no smooth curve is
 * fitted over the range).  The recommendation is the minimum of that model over the measured range, which is
 * never worse (as predicted) than the best cap measured.  See docs/profiler.md.
 *
 * Thread safety: a jc_profiler is a plain object with no locking; use one from one thread at a time (the
 * getters too: they refresh cached values).  Distinct profilers are independent. */

typedef enum jc_objective {
    JC_OBJECTIVE_ED2P = 0,            /* energy x delay^2 per unit of work: P t^3 (default) */
    JC_OBJECTIVE_EDP = 1,             /* energy x delay per unit of work: P t^2 */
    JC_OBJECTIVE_ENERGY = 2,          /* energy per step: P t */
    JC_OBJECTIVE_TIME = 3,            /* time per step */
    JC_OBJECTIVE_ENERGY_SLOWDOWN = 4, /* energy per step with time per step <= (1 + max_slowdown) x reference */
    JC_OBJECTIVE_ZEUS = 5,            /* Zeus's cost per step: eta E + (1 - eta) P_max t, P_max = max_limit_w */
} jc_objective;

/* "ed2p", "edp", "energy", "time", "energy-slowdown", "zeus"; NULL for an unknown value. */
JC_API const char *jc_objective_name(jc_objective objective);
/* Parses those names (case-insensitive); JC_ERR_INVALID_ARGUMENT with the list of names otherwise. */
JC_API jc_status jc_objective_parse(const char *name, jc_objective *out);

#define JC_PROFILER_MAX_CAPS 64 /* longest explicit cap list */

typedef struct jc_profiler_config {
    size_t size; /* sizeof(jc_profiler_config), set by jc_profiler_config_init() */
    /* The GPU's limits in watts (required): min < max, min <= default <= max.  Caps tried lie in
     * [min, default] unless caps_w says otherwise; the recommendation lies in [min, max]. */
    double min_limit_w, max_limit_w, default_limit_w;
    jc_objective objective;  /* default JC_OBJECTIVE_ED2P */
    double max_slowdown;     /* ENERGY_SLOWDOWN: allowed relative slowdown, > 0 (default 0.05).  The reference
                                is the highest cap measured (the default limit unless caps_w excludes it). */
    double eta;              /* ZEUS: weight of energy, in [0, 1] (default 0.5) */
    /* Optional explicit caps (W): only these are tried, highest first, and the recommendation is one of them.
     * Each must lie in [min, max]; at most JC_PROFILER_MAX_CAPS; copied by jc_profiler_new().  NULL = adaptive. */
    const double *caps_w;
    size_t caps_count;
    /* Profiling time limit (s): no trial starts that would end after it, and a trial in progress stops at it.
     * 0 = automatic: max(20 s, 300 steps at the first cap's time per step). */
    double time_budget_s;
    /* Update period of the energy counter (s); 0 = the energy of every step is exact.  Default 0.1 (NVML). */
    double counter_period_s;
    /* After a cap change, steps that start within settle_s of it are dropped, and at least settle_steps steps
     * (defaults 0.3 s and 1).  The first trial is treated the same way (warm-up). */
    double settle_s;
    int settle_steps;
    /* A trial stops when the relative standard error of its objective is <= precision (default 0.01), or when
     * it is clearly worse than the best trial, or after max_trial_s measured seconds (default 3; at least
     * 8 steps are measured regardless).  Each trial measures at least min_trial_s (default: 5 counter periods,
     * at least 0.25 s) and 4 steps. */
    double precision;
    double max_trial_s;
    double min_trial_s;
    /* Smallest distance between two caps tried (W); 0 = automatic: 1% of the default limit, at least 1 W. */
    double resolution_w;
} jc_profiler_config;

/* Fills the defaults above; the three limits are set to NaN and must be given. */
JC_API void jc_profiler_config_init(jc_profiler_config *cfg);

typedef struct jc_profiler jc_profiler;

/* Validates cfg (every field: min < max, default within, objective known, max_slowdown > 0, eta in [0, 1],
 * caps within [min, max], periods >= 0, ...; the detail names the field) and creates a profiler. */
JC_API jc_status jc_profiler_new(const jc_profiler_config *cfg, jc_profiler **out);
JC_API void jc_profiler_free(jc_profiler *p); /* NULL is allowed */

typedef enum jc_profiler_action_kind {
    JC_PROFILER_SET_CAP = 1, /* set the cap to cap_w, then call jc_profiler_cap_applied() */
    JC_PROFILER_RUN = 2,     /* run one step, then call jc_profiler_observe_step() */
    JC_PROFILER_DONE = 3,    /* finished: cap_w is the recommendation; see jc_profiler_result_get() */
} jc_profiler_action_kind;

JC_API const char *jc_profiler_action_kind_name(jc_profiler_action_kind kind); /* "set-cap", "run", "done" */

/* Fixed: this struct will not grow (a new field would be a new struct), so it has no size field. */
typedef struct jc_profiler_action {
    jc_profiler_action_kind kind;
    double cap_w; /* SET_CAP: the cap to set; DONE: the recommended cap; RUN: the cap being measured */
} jc_profiler_action;

/* What to do next.  Repeating the call without reporting anything returns the same action. */
JC_API jc_status jc_profiler_next_action(jc_profiler *p, jc_profiler_action *out);
/* The driver has set the cap asked for by SET_CAP.  applied_cap_w is the limit now in force (the requested
 * one, or what the device rounded it to); t_s and energy_j are the clock and the counter at that moment,
 * which is where the first step at this cap starts.  JC_ERR_STATE when no SET_CAP is pending. */
JC_API jc_status jc_profiler_cap_applied(jc_profiler *p, double applied_cap_w, double t_s, double energy_j);
/* A step ended at t_s with the energy counter reading energy_j.  t_s must increase and energy_j must not
 * decrease (JC_ERR_INVALID_ARGUMENT otherwise, with nothing recorded).  JC_ERR_STATE before the first
 * cap_applied() or after DONE. */
JC_API jc_status jc_profiler_observe_step(jc_profiler *p, double t_s, double energy_j);
/* Stops profiling now (for example the job ends or the caller's own deadline passed): the trial in progress
 * is kept if it measured enough, and the recommendation is made from what was measured.  Afterwards
 * next_action() says DONE.  JC_ERR_STATE when nothing at all was measured (the result then says so). */
JC_API jc_status jc_profiler_finish(jc_profiler *p);

/* Why a trial stopped measuring. */
typedef enum jc_profiler_stop_reason {
    JC_PROFILER_STOP_NONE = 0,     /* still measuring */
    JC_PROFILER_STOP_PRECISE = 1,  /* its objective is known to the requested precision */
    JC_PROFILER_STOP_WORSE = 2,    /* clearly worse than the best cap so far */
    JC_PROFILER_STOP_MAX_TIME = 3, /* max_trial_s measured */
    JC_PROFILER_STOP_BUDGET = 4,   /* the time budget ran out, or jc_profiler_finish() */
} jc_profiler_stop_reason;

/* "none", "precise", "worse", "max-time", "budget" */
JC_API const char *jc_profiler_stop_reason_name(jc_profiler_stop_reason reason);

/* Why a cap was tried. */
typedef enum jc_profiler_phase {
    JC_PROFILER_PHASE_COARSE = 1, /* the coarse pass over the range (or the explicit cap list) */
    JC_PROFILER_PHASE_REFINE = 2, /* refinement where the model says the optimum can be */
    JC_PROFILER_PHASE_RACE = 3,   /* measured again to tell two close caps apart */
} jc_profiler_phase;

JC_API const char *jc_profiler_phase_name(jc_profiler_phase phase); /* "coarse", "refine", "race" */

/* One cap tried.  Values measured over the kept steps (after settling). */
typedef struct jc_profiler_trial {
    double cap_w;
    int steps;                 /* steps measured */
    int dropped_steps;         /* steps dropped while settling */
    double start_s;            /* when the cap was applied (driver's clock) */
    double seconds;            /* measured time (kept steps) */
    double energy_j;           /* energy of the kept steps (estimated from the counter) */
    double time_per_step_s;
    double avg_power_w;
    double energy_per_step_j;
    double objective;          /* the configured objective for this trial alone (NaN for ENERGY_SLOWDOWN
                                  before the reference is measured) */
    double rel_se_time;        /* relative standard error of time per step */
    double rel_se_power;       /* relative standard error of average power */
    double rel_se_objective;
    jc_profiler_stop_reason stop_reason;
    jc_profiler_phase phase;   /* why it was tried */
} jc_profiler_trial;

typedef struct jc_profiler_result {
    int done;                  /* 1 once the profiler has finished */
    jc_objective objective;
    double cap_w;              /* recommended cap (W); NaN when nothing was measured */
    int cap_measured;          /* 1 when cap_w was itself measured, 0 when predicted between measured caps */
    double time_per_step_s;    /* predicted (or measured) at cap_w */
    double avg_power_w;
    double energy_per_step_j;
    double objective_value;    /* objective at cap_w */
    double best_measured_cap_w;       /* the best cap among those measured, and its objective */
    double best_measured_objective;
    double reference_cap_w;           /* highest cap measured (normally the default limit) */
    double reference_time_per_step_s; /* and its measurements, for savings and slowdown */
    double reference_avg_power_w;
    double energy_saving;      /* 1 - energy per step at cap_w / at the reference cap */
    double slowdown;           /* time per step at cap_w / at the reference cap - 1 */
    int binding;               /* 0 when the workload drew well below every cap tried (caps do not bind) */
    double profile_seconds;    /* from the first cap_applied() to the last observation */
    int trial_count;
    int total_steps;           /* steps observed, kept or dropped */
    char reason[512];          /* two or three sentences: why this cap */
    /* What the measurements can tell.  Half-widths of 90% confidence intervals from the trials' spread (the
     * pooled step noise); 0 when cap_w is the reference cap itself. */
    double energy_saving_ci;
    double slowdown_ci;
    /* The best cap found (the objective's minimum, measured or interpolated), whether recommended or not, and
     * its objective's gain over the reference cap: 1 - objective there / objective at the reference. */
    double candidate_cap_w;
    double candidate_gain;
    double candidate_gain_ci;
    /* 1 when the candidate beats the reference beyond the uncertainty (candidate_gain > candidate_gain_ci)
     * and is recommended; 0 when no cap is measurably better and cap_w is the reference cap (the default
     * limit unless caps_w excludes it): the reason then says so, and why where it saw it (the cap does not
     * bind at this load). */
    int measurably_better;
} jc_profiler_result;

/* Fills the result (done = 0 while profiling goes on; the recommendation is then the current best guess). */
JC_API jc_status jc_profiler_result_get(const jc_profiler *p, jc_profiler_result *out);
JC_API int jc_profiler_trial_count(const jc_profiler *p);
/* Trial i in the order tried; JC_ERR_NOT_FOUND when i is out of range. */
JC_API jc_status jc_profiler_trial_get(const jc_profiler *p, int i, jc_profiler_trial *out);
/* The model's prediction at any cap in [min, max] (interpolated between measured caps, held constant beyond
 * them); JC_ERR_STATE before any trial finished. */
JC_API jc_status jc_profiler_predict(const jc_profiler *p, double cap_w, double *time_per_step_s,
                                     double *avg_power_w);

/* ---------------------------------------------------------------------------------------------------------
 * Former names, kept for source compatibility for one release (deprecated: the compiler warns where used).
 * ------------------------------------------------------------------------------------------------------- */
#if defined(__GNUC__)
#define JC_DEPRECATED(use) __attribute__((deprecated("use " use)))
#else
#define JC_DEPRECATED(use)
#endif

JC_DEPRECATED("jc_reading_get") static inline jc_status jc_read_latest(jc_context *ctx, int device, jc_reading *out) {
    return jc_reading_get(ctx, device, out);
}
JC_DEPRECATED("jc_cap_info_get")
static inline jc_status jc_cap_get(const char *gpu, const jc_cap_options *opts, jc_cap_info *out) {
    return jc_cap_info_get(gpu, opts, out);
}
JC_DEPRECATED("jc_cap_session_info_get")
static inline jc_status jc_cap_session_gpu(jc_cap_session *s, int i, jc_cap_info *out) {
    return jc_cap_session_info_get(s, i, out);
}
JC_DEPRECATED("jc_device_health_get")
static inline jc_status jc_device_health(jc_context *ctx, int device, jc_health_event *out, size_t max,
                                         size_t *count) {
    return jc_device_health_get(ctx, device, out, max, count);
}

#ifdef __cplusplus
}
#endif
#endif /* JOULECAP_H */
