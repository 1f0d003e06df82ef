/* jc_open / jc_close: validates options, opens every source (a missing one degrades to an empty value with a
 * reason, a failing GPU is listed with its reason while the others are measured), and starts the readers and
 * the coordinator. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "context.h"

uint64_t jc_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t jc_epoch_ns(const jc_context *ctx) { return ctx->epoch_ns; }

void jc_options_init(jc_options *opts) {
    memset(opts, 0, sizeof *opts);
    opts->size = sizeof *opts;
}

const char *jc_device_kind_name(jc_device_kind kind) {
    switch (kind) {
    case JC_DEVICE_CPU: return "cpu";
    case JC_DEVICE_GPU: return "gpu";
    }
    return "unknown";
}

const char *jc_energy_source_name(jc_energy_source source) {
    switch (source) {
    case JC_SOURCE_NONE: return "none";
    case JC_SOURCE_COUNTER: return "counter";
    case JC_SOURCE_INTEGRATED: return "integrated-power";
    case JC_SOURCE_RAPL: return "rapl";
    case JC_SOURCE_ESTIMATE: return "estimate";
    }
    return "unknown";
}

static int bad_period(double v, double lo, double hi) { return isnan(v) || v < lo || v > hi; }

static jc_status validate(jc_options *o) {
    if (o->interval_s == 0) o->interval_s = 0.01;
    if (bad_period(o->interval_s, 0.001, 3600))
        return jc__fail(JC_ERR_INVALID_ARGUMENT,
                        "interval %g s is out of range: use a value from 0.001 s to 3600 s", o->interval_s);
    if (bad_period(o->counter_interval_s, 0, 60))
        return jc__fail(JC_ERR_INVALID_ARGUMENT,
                        "counter interval %g s is out of range: use 0 (every counter step) to 60 s",
                        o->counter_interval_s);
    if (o->csv_interval_s == 0) o->csv_interval_s = o->interval_s;
    if (bad_period(o->csv_interval_s, o->interval_s, 86400))
        return jc__fail(JC_ERR_INVALID_ARGUMENT,
                        "CSV interval %g s is out of range: use a value from the sampling interval (%g s) to "
                        "86400 s", o->csv_interval_s, o->interval_s);
    if (o->history_points == 0) o->history_points = 65536;
    if (o->history_points < 64 || o->history_points > 100000000)
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "history of %zu points is out of range: use 64 to 100000000",
                        o->history_points);
    if (o->stall_s == 0) o->stall_s = 1.0;
    if (bad_period(o->stall_s, 0.05, 600))
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "stall time %g s is out of range: use 0.05 s to 600 s", o->stall_s);
    if (o->flags & ~(unsigned)(JC_NO_GPU | JC_NO_CPU | JC_EVERY_STEP))
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "unknown flags 0x%x", o->flags);
    return JC_OK;
}

static char *dup_or_null(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* Power limits are unknown (NaN) until NVML gives them; the CPU has none. */
static void init_limits(jc_device_info *info) {
    info->limit_w = info->enforced_limit_w = info->default_limit_w = NAN;
    info->min_limit_w = info->max_limit_w = NAN;
}

static void init_unreadable(jc_device_info *info, const char *why) {
    info->power_status = info->util_status = info->temp_status = JC_ERR_UNAVAILABLE;
    jc__fmt(info->power_note, sizeof info->power_note, "%s", why);
    jc__fmt(info->util_note, sizeof info->util_note, "%s", why);
    jc__fmt(info->temp_note, sizeof info->temp_note, "%s", why);
}

static void open_cpu(jc_context *ctx, jc__device *d) {
    jc_device_info *info = &d->info;
    info->kind = JC_DEVICE_CPU;
    info->index = info->nvml_index = -1;
    init_limits(info);
    jc__fmt(info->name, sizeof info->name, "CPU");
    if (ctx->opts.flags & JC_NO_CPU) {
        info->energy_source = JC_SOURCE_NONE;
        jc__fmt(info->energy_note, sizeof info->energy_note, "CPU measurement disabled");
        init_unreadable(info, "CPU measurement disabled");
        return;
    }
    char why[512] = "";
    const char *sys = jc__sysfs_root(), *proc = jc__proc_root();
    jc_status st = jc__procstat_open(proc, &ctx->procstat, why, sizeof why);
    ctx->have_procstat = st == JC_OK;
    info->util_status = st;
    if (st != JC_OK) jc__fmt(info->util_note, sizeof info->util_note, "%s", why);
    char est_why[256] = "";
    jc__cpu_estimate_open(proc, &ctx->estimate, est_why, sizeof est_why);
    if (ctx->estimate.model[0]) jc__fmt(info->name, sizeof info->name, "%s", ctx->estimate.model);

    st = jc__rapl_open(sys, &ctx->rapl, why, sizeof why);
    if (st == JC_OK) {
        info->energy_source = JC_SOURCE_RAPL;
        jc__fmt(info->energy_note, sizeof info->energy_note, "RAPL: %s", jc__rapl_zones(ctx->rapl));
        info->power_status = JC_OK;
    } else if (ctx->have_procstat) {
        ctx->use_estimate = 1;
        info->energy_source = JC_SOURCE_ESTIMATE;
        jc__fmt(info->energy_note, sizeof info->energy_note, "%s, because %s", ctx->estimate.describe, why);
        info->power_status = JC_OK;
        jc__fmt(info->power_note, sizeof info->power_note, "estimate (no RAPL)");
    } else {
        info->energy_source = JC_SOURCE_NONE;
        jc__fmt(info->energy_note, sizeof info->energy_note, "no CPU energy: %s; and no utilisation for an "
                "estimate", why);
        info->power_status = JC_ERR_UNAVAILABLE;
        jc__fmt(info->power_note, sizeof info->power_note, "no RAPL and no utilisation");
    }
    st = jc__cputemp_open(sys, &ctx->cputemp, why, sizeof why);
    info->temp_status = st;
    if (st != JC_OK)
        jc__fmt(info->temp_note, sizeof info->temp_note, "%s", why);
    else
        jc__fmt(info->temp_note, sizeof info->temp_note, "%s", jc__cputemp_describe(ctx->cputemp));
}

/* NVML's milliwatts (0: not given) as the public watts (NaN: unknown). */
static double mw_to_w(unsigned mw) { return mw ? mw / 1000.0 : NAN; }

static void read_limits(jc__nvml *nvml, jc__device *d) {
    jc_device_info *i = &d->info;
    unsigned limit = 0, enforced = 0, def = 0, lo = 0, hi = 0;
    if (nvml->nvmlDeviceGetPowerManagementLimit) nvml->nvmlDeviceGetPowerManagementLimit(d->handle, &limit);
    if (nvml->nvmlDeviceGetEnforcedPowerLimit) nvml->nvmlDeviceGetEnforcedPowerLimit(d->handle, &enforced);
    if (nvml->nvmlDeviceGetPowerManagementDefaultLimit)
        nvml->nvmlDeviceGetPowerManagementDefaultLimit(d->handle, &def);
    if (nvml->nvmlDeviceGetPowerManagementLimitConstraints)
        nvml->nvmlDeviceGetPowerManagementLimitConstraints(d->handle, &lo, &hi);
    i->limit_w = mw_to_w(limit);
    i->enforced_limit_w = mw_to_w(enforced);
    i->default_limit_w = mw_to_w(def);
    i->min_limit_w = mw_to_w(lo);
    i->max_limit_w = mw_to_w(hi);
}

/* Probes what a GPU can read, so that info() tells the truth before the first sample. */
static void probe_gpu(jc__nvml *nvml, jc__device *d) {
    jc_device_info *i = &d->info;
    read_limits(nvml, d);
    d->max_power_w = isfinite(i->max_limit_w) ? i->max_limit_w : 1000.0;
    unsigned long long mj;
    nvmlReturn_t r = nvml->nvmlDeviceGetTotalEnergyConsumption
                         ? nvml->nvmlDeviceGetTotalEnergyConsumption(d->handle, &mj)
                         : NVML_ERROR_FUNCTION_NOT_FOUND;
    unsigned mw;
    int64_t ts;
    int avg = 0;
    nvmlReturn_t rp = jc__nvml_power(nvml, d->handle, 1, &mw, &ts, &avg);
    i->power_status = jc__nvml_status(nvml, rp, "power");
    if (rp == NVML_SUCCESS)
        jc__fmt(i->power_note, sizeof i->power_note, "%s", avg ? "1 s average (nvmlDeviceGetPowerUsage): "
                "no instant power field on this driver" : "instant power (field 186)");
    else
        jc__fmt(i->power_note, sizeof i->power_note, "%s", jc_last_detail());
    if (r == NVML_SUCCESS) {
        i->energy_source = JC_SOURCE_COUNTER;
        jc__fmt(i->energy_note, sizeof i->energy_note, "NVML total energy counter");
    } else if (rp == NVML_SUCCESS) {
        i->energy_source = JC_SOURCE_INTEGRATED;
        jc__nvml_status(nvml, r, "energy counter");
        jc__fmt(i->energy_note, sizeof i->energy_note, "integrated from %s power, because %s",
                avg ? "1 s average" : "instant", jc_last_detail());
    } else {
        i->energy_source = JC_SOURCE_NONE;
        jc__nvml_status(nvml, r, "energy counter");
        jc__fmt(i->energy_note, sizeof i->energy_note, "%s; power unreadable too", jc_last_detail());
    }
    nvmlUtilization_t u;
    r = nvml->nvmlDeviceGetUtilizationRates ? nvml->nvmlDeviceGetUtilizationRates(d->handle, &u)
                                            : NVML_ERROR_FUNCTION_NOT_FOUND;
    i->util_status = jc__nvml_status(nvml, r, "utilisation");
    if (r != NVML_SUCCESS) jc__fmt(i->util_note, sizeof i->util_note, "%s", jc_last_detail());
    unsigned temp;
    r = nvml->nvmlDeviceGetTemperature ? nvml->nvmlDeviceGetTemperature(d->handle, NVML_TEMPERATURE_GPU, &temp)
                                       : NVML_ERROR_FUNCTION_NOT_FOUND;
    i->temp_status = jc__nvml_status(nvml, r, "temperature");
    if (r != NVML_SUCCESS) jc__fmt(i->temp_note, sizeof i->temp_note, "%s", jc_last_detail());
    jc__clear_detail();
    if (i->power_status == JC_ERR_GPU_LOST || i->util_status == JC_ERR_GPU_LOST) {
        i->energy_source = JC_SOURCE_NONE;
        d->dead = 1;
        d->dead_ns = jc_now_ns();
        jc__health_set(d, JC_HEALTH_LOST, d->dead_ns, "GPU lost: %s", i->power_note);
    }
}

/* A GPU that NVML cannot even identify: listed, lost, with the reason. */
static void lost_gpu(jc__device *d, const char *why) {
    jc_device_info *i = &d->info;
    i->energy_source = JC_SOURCE_NONE;
    jc__fmt(i->energy_note, sizeof i->energy_note, "%s", why);
    i->power_status = i->util_status = i->temp_status = JC_ERR_GPU_LOST;
    jc__fmt(i->power_note, sizeof i->power_note, "%s", why);
    jc__fmt(i->util_note, sizeof i->util_note, "%s", why);
    jc__fmt(i->temp_note, sizeof i->temp_note, "%s", why);
    d->dead = 1;
    d->dead_ns = jc_now_ns();
    jc__health_set(d, JC_HEALTH_LOST, d->dead_ns, "%s", why);
}

static jc_status open_gpus(jc_context *ctx) {
    const char *sel = ctx->gpus_sel;
    if ((ctx->opts.flags & JC_NO_GPU) || (sel && strcasecmp(sel, "none") == 0)) {
        jc__fmt(ctx->nvml_note, sizeof ctx->nvml_note, "GPU measurement disabled");
        return JC_OK;
    }
    jc_status st = jc__nvml_open(&ctx->nvml, ctx->nvml_note, sizeof ctx->nvml_note);
    if (st != JC_OK) {
        jc__clear_detail();
        return JC_OK; /* CPU only; the note says why */
    }
    unsigned n = 0;
    nvmlReturn_t r = ctx->nvml->nvmlDeviceGetCount_v2(&n);
    if (r != NVML_SUCCESS) return jc__nvml_status(ctx->nvml, r, "counting GPUs");
    if (n > JC_MAX_DEVICES - 1) n = JC_MAX_DEVICES - 1;
    jc__gpu_ident ids[JC_MAX_DEVICES];
    nvmlDevice_t handles[JC_MAX_DEVICES];
    char failed[JC_MAX_DEVICES][200];
    for (unsigned i = 0; i < n; i++) {
        /* One GPU that fails stops nothing: it is listed as lost with its reason. */
        failed[i][0] = '\0';
        if (jc__nvml_identify(ctx->nvml, i, &handles[i], &ids[i]) != JC_OK) {
            jc__fmt(failed[i], sizeof failed[i], "%s", jc_last_detail());
            jc__clear_detail();
            jc__fmt(ids[i].name, sizeof ids[i].name, "NVIDIA GPU (unreadable)");
        }
    }
    int nvml_idx[JC_MAX_DEVICES], cuda_idx[JC_MAX_DEVICES], count = 0;
    st = jc__gpu_select(ids, (int)n, getenv("CUDA_VISIBLE_DEVICES"), getenv("CUDA_DEVICE_ORDER"), sel, nvml_idx,
                        cuda_idx, &count, ctx->gpu_note, sizeof ctx->gpu_note);
    if (st != JC_OK) return st;
    for (int k = 0; k < count; k++) {
        jc__device *d = &ctx->dev[ctx->ndev++];
        jc_device_info *info = &d->info;
        int ni = nvml_idx[k];
        info->kind = JC_DEVICE_GPU;
        init_limits(info);
        info->index = cuda_idx[k];
        info->nvml_index = ni;
        d->handle = handles[ni];
        jc__fmt(info->name, sizeof info->name, "%s", ids[ni].name);
        jc__fmt(info->uuid, sizeof info->uuid, "%s", ids[ni].uuid);
        jc__fmt(info->pci_bus_id, sizeof info->pci_bus_id, "%s", ids[ni].pci_bus_id);
        if (failed[ni][0])
            lost_gpu(d, failed[ni]);
        else
            probe_gpu(ctx->nvml, d);
    }
    return JC_OK;
}

jc_status jc_open(jc_context **out, const jc_options *opts_in) {
    jc__clear_detail();
    if (!out) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_open: out is NULL");
    *out = NULL;
    if (opts_in) {
        jc_status sz = jc__check_size(opts_in->size, sizeof *opts_in, "jc_options");
        if (sz != JC_OK) return sz;
    }
    jc_options o;
    if (opts_in)
        o = *opts_in;
    else
        jc_options_init(&o);
    int interval_auto = o.interval_s == 0;
    jc_status st = validate(&o);
    if (st != JC_OK) return st;
    jc_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return jc__fail(JC_ERR_NO_MEMORY, "cannot allocate a context");
    atomic_init(&ctx->refs, 1);
    ctx->opts = o;
    ctx->gpus_sel = dup_or_null(o.gpus);
    ctx->opts.gpus = ctx->gpus_sel;
    ctx->opts.csv_path = NULL; /* the sink keeps its own copy */
    ctx->stall_ns = (uint64_t)(o.stall_s * 1e9);
    ctx->interval_auto = interval_auto;
    pthread_mutex_init(&ctx->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ctx->data_cv, &ca);
    pthread_cond_init(&ctx->wake_cv, &ca);
    pthread_condattr_destroy(&ca);
    ctx->dev = calloc(JC_MAX_DEVICES, sizeof *ctx->dev);
    if ((o.gpus && !ctx->gpus_sel) || !ctx->dev) {
        jc_close(ctx);
        return jc__fail(JC_ERR_NO_MEMORY, "cannot allocate a context");
    }
    for (int i = 0; i < JC_MAX_DEVICES; i++) {
        ctx->dev[i].ctx = ctx;
        ctx->dev[i].id = i;
    }
    ctx->ndev = 1;
    open_cpu(ctx, &ctx->dev[0]);
    st = open_gpus(ctx);
    for (int i = 0; st == JC_OK && i < ctx->ndev; i++) {
        st = jc__ring_init(&ctx->dev[i].knots, o.history_points);
        ctx->dev[i].latest.energy_j = ctx->dev[i].latest.power_w = NAN;
        ctx->dev[i].latest.util_pct = ctx->dev[i].latest.temp_c = NAN;
    }
    if (st == JC_OK && o.csv_path) st = jc__csv_open(ctx, o.csv_path);
    if (st == JC_OK && o.window_csv_path) st = jc__wlog_open(ctx, o.window_csv_path);
    ctx->opts.window_csv_path = NULL;
    if (st == JC_OK) {
        struct timespec rt;
        clock_gettime(CLOCK_REALTIME, &rt);
        uint64_t mono = jc_now_ns();
        ctx->realtime_minus_mono_us =
            ((int64_t)rt.tv_sec * 1000000 + rt.tv_nsec / 1000) - (int64_t)(mono / 1000);
        st = jc__coordinator_start(ctx);
    }
    if (st != JC_OK) {
        char keep[1024];
        jc__fmt(keep, sizeof keep, "%s", jc_last_detail());
        jc_close(ctx);
        return jc__fail(st, "%s", keep);
    }
    *out = ctx;
    return JC_OK;
}

void jc__context_free(jc_context *ctx);
/* Frees what readers use; called by the last of jc_close() and any reader left behind in a driver call. */
void jc__context_free(jc_context *ctx) {
    for (int i = 0; ctx->dev && i < ctx->ndev; i++) jc__ring_free(&ctx->dev[i].knots);
    free(ctx->dev);
    jc__rapl_close(ctx->rapl);
    jc__cputemp_close(ctx->cputemp);
    jc__nvml_close(ctx->nvml);
    pthread_cond_destroy(&ctx->data_cv);
    pthread_cond_destroy(&ctx->wake_cv);
    pthread_mutex_destroy(&ctx->lock);
    free(ctx->gpus_sel);
    free(ctx);
}

void jc_close(jc_context *ctx) {
    if (!ctx) return;
    double rows_wait = jc__s(ctx->stall_ns) + 0.5;
    jc__csv_finish(ctx, rows_wait);
    jc__wlog_finish(ctx, rows_wait);
    jc__coordinator_stop(ctx);
    /* A reader stuck in a driver call is not waited for past stall_s: it frees the rest when it returns. */
    jc__readers_stop(ctx, jc__s(ctx->stall_ns));
    jc__csv_close(ctx);
    jc__wlog_close(ctx);
    jc__meter_free(ctx);
    if (atomic_fetch_sub(&ctx->refs, 1) == 1) jc__context_free(ctx);
}

int jc_device_count(const jc_context *ctx) { return ctx ? ctx->ndev : 0; }

jc_status jc_device_info_get(const jc_context *ctx, int device, jc_device_info *out) {
    if (!ctx || !out) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_device_info_get: NULL argument");
    if (device < 0 || device >= ctx->ndev)
        return jc__fail(JC_ERR_NOT_FOUND, "device %d does not exist: devices are 0 (CPU) to %d", device,
                        ctx->ndev - 1);
    jc_context *c = (jc_context *)ctx;
    pthread_mutex_lock(&c->lock);
    *out = ctx->dev[device].info;
    pthread_mutex_unlock(&c->lock);
    return JC_OK;
}

jc_status jc_gpu_driver(const jc_context *ctx, char *version, size_t version_len, char *note, size_t note_len) {
    if (!ctx) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_gpu_driver: NULL context");
    if (version && version_len) jc__fmt(version, version_len, "%s", ctx->nvml ? ctx->nvml->driver_version : "");
    if (note && note_len) {
        if (ctx->nvml_note[0] && ctx->gpu_note[0])
            jc__fmt(note, note_len, "%s; %s", ctx->nvml_note, ctx->gpu_note);
        else
            jc__fmt(note, note_len, "%s", ctx->nvml_note[0] ? ctx->nvml_note : ctx->gpu_note);
    }
    return ctx->nvml ? JC_OK : JC_ERR_UNAVAILABLE;
}

jc_status jc_reading_get(jc_context *ctx, int device, jc_reading *out) {
    if (!ctx || !out) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_reading_get: NULL argument");
    if (device < 0 || device >= ctx->ndev)
        return jc__fail(JC_ERR_NOT_FOUND, "device %d does not exist: devices are 0 (CPU) to %d", device,
                        ctx->ndev - 1);
    pthread_mutex_lock(&ctx->lock);
    jc__device *d = &ctx->dev[device];
    *out = d->latest;
    const jc__point *last = jc__ring_last(&d->knots);
    if (last && d->epoch_resolved) out->energy_j = last->v - d->epoch_j;
    else if (last) out->energy_j = 0.0;
    pthread_mutex_unlock(&ctx->lock);
    return JC_OK;
}
