/* The NVML entry points of the fake driver.  They follow real NVML's conventions (reference-counted init,
 * UNINITIALIZED before it, INVALID_ARGUMENT for bad handles and NULL pointers, INSUFFICIENT_SIZE for short
 * buffers) and read the fake GPUs' behaviour from the scenario (scenario.c), the physics (model.c) and the
 * state shared with other processes (state.c).
 *
 * All mutable state of the library is the one static struct below, guarded by its mutex.  The slow calls
 * (nvmlDeviceGetTotalEnergyConsumption's read latency, any call an injected `delay` slows down) sleep outside
 * the mutex, so that calls in other threads are not held up by them (as on real hardware). */
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fake.h"

static struct {
    pthread_mutex_t mu;
    int refcount;            /* nvmlInit_v2 calls not yet matched by nvmlShutdown */
    fake_scenario sc;        /* valid while refcount > 0 */
    char state_path[PATH_MAX];
    char state_dir[PATH_MAX]; /* the private state file's folder, made by mkdtemp */
    int state_private;       /* the state file and its folder are ours alone: remove them at the last shutdown */
    pid_t state_owner;       /* ... if this process created them (not a forked child) */
    long long start_ns;      /* t = 0 of the fake GPUs, CLOCK_MONOTONIC */
    unsigned long long rng;  /* xorshift state for the latency jitter */
    /* Calls counted by the error_call entries of the global section and of each device (same indexes as
     * the entries); zeroed when the scenario is loaded. */
    unsigned long long calls_global[FAKE_MAX_ERRORS];
    unsigned long long calls_dev[FAKE_MAX_DEVICES][FAKE_MAX_ERRORS];
    char last_report[FAKE_MSG_LEN];
    /* Set by joulecap_fake_configure (JOULECAP_FAKE); "" = read the JOULECAP_FAKE_NVML_* variables. */
    char cfg_scenario[PATH_MAX];
    char cfg_state[PATH_MAX];
    fake_runtime runtime[FAKE_MAX_DEVICES]; /* joulecap_fake_set_load's loads, emptied at nvmlInit_v2 */
} lib = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* ------------------------------------------------------------------------------------------------------ */

static long long mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long wall_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static void sleep_ns(long long ns) {
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000LL), .tv_nsec = (long)(ns % 1000000000LL)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Prints a problem once, not at every retry of the caller (call with lib.mu held). */
static void report(const char *msg) {
    if (strcmp(msg, lib.last_report) == 0) return;
    fprintf(stderr, "joulecap-fakenvml: %s\n", msg);
    snprintf(lib.last_report, sizeof lib.last_report, "%s", msg);
}

static unsigned long long next_random(void) {
    unsigned long long x = lib.rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    lib.rng = x;
    return x;
}

static unsigned to_mw(double w) {
    if (w <= 0) return 0;
    double mw = round(w * 1000.0);
    return mw >= (double)UINT_MAX ? UINT_MAX : (unsigned)mw;
}

/* ------------------------------------------------------------------------------------------------------ */
/* Every entry point but init, shutdown and nvmlErrorString runs between enter_*() and leave(). */

typedef struct call {
    const fake_device *dev; /* NULL for system functions */
    double t_ms;            /* time of the fake GPUs now */
} call;

/* The error f injects into a call of func at t_ms, or NVML_SUCCESS: the first time-window error that covers
 * it, else the first error_call whose count it falls in.  calls (the section's counts, with lib.mu held)
 * NULL: the error_call entries are neither counted nor looked at (a call already counted).  Every entry
 * matching func counts the call, whatever decides its result, so that "the n-th call" means just that. */
static nvmlReturn_t injected(const fake_faults *f, unsigned long long *calls, const char *func, double t_ms) {
    nvmlReturn_t r = NVML_SUCCESS;
    for (int i = 0; i < f->nerrors && r == NVML_SUCCESS; i++) {
        const fake_error *e = &f->errors[i];
        if (t_ms >= e->from_ms && t_ms < e->to_ms && fnmatch(e->func, func, FNM_PATHNAME) == 0) r = e->code;
    }
    for (int i = 0; calls && i < f->nerror_calls; i++) {
        const fake_error_call *e = &f->error_calls[i];
        if (fnmatch(e->func, func, FNM_PATHNAME) != 0) continue;
        unsigned long long k = ++calls[i];
        if (r == NVML_SUCCESS && k >= e->n && k - e->n < e->count) r = e->code;
    }
    return r;
}

/* Global errors first, then the device's (both sections count the call). */
static nvmlReturn_t device_injected(const fake_device *d, const char *func, double t_ms, int count) {
    nvmlReturn_t g = injected(&lib.sc.faults, count ? lib.calls_global : NULL, func, t_ms);
    nvmlReturn_t r = injected(&d->faults, count ? lib.calls_dev[d->index] : NULL, func, t_ms);
    return g != NVML_SUCCESS ? g : r;
}

/* The delay (ms) of the first delay entry covering func at t_ms, global ones first; 0 if none. */
static double delay_ms(const fake_device *d, const char *func, double t_ms) {
    const fake_faults *sections[2] = {&lib.sc.faults, d ? &d->faults : NULL};
    for (int k = 0; k < 2 && sections[k]; k++) {
        const fake_faults *f = sections[k];
        for (int i = 0; i < f->ndelays; i++) {
            const fake_delay *e = &f->delays[i];
            if (t_ms >= e->from_ms && t_ms < e->to_ms && fnmatch(e->func, func, FNM_PATHNAME) == 0)
                return e->delay_ms;
        }
    }
    return 0;
}

static double now_t_ms(void) { return (double)(mono_ns() - lib.start_ns) / 1e6; }

static int valid_device(nvmlDevice_t device) {
    uintptr_t base = (uintptr_t)lib.sc.devices, p = (uintptr_t)device;
    return p >= base && p < base + lib.sc.ndevices * sizeof(fake_device) && (p - base) % sizeof(fake_device) == 0;
}

/* Sleeps ms with lib.mu released, so that other threads' calls go on meanwhile (a slow GPU holds up only its
 * own callers), then takes it again.  The library may have been shut down (and even started with another
 * scenario) in between: UNINITIALIZED, or NVML_SUCCESS and the caller checks its handle again. */
static nvmlReturn_t sleep_unlocked(double ms) {
    pthread_mutex_unlock(&lib.mu);
    sleep_ns((long long)(ms * 1e6));
    pthread_mutex_lock(&lib.mu);
    return lib.refcount == 0 ? NVML_ERROR_UNINITIALIZED : NVML_SUCCESS;
}

/* Locks the library; the caller must call leave() whatever this returns.  The delays of device `index`
 * apply besides the global ones if there is such a device (nvmlDeviceGetHandleByIndex_v2's), none if
 * index < 0. */
static nvmlReturn_t enter_system(call *c, const char *func, long index) {
    pthread_mutex_lock(&lib.mu);
    c->dev = NULL;
    c->t_ms = 0;
    if (lib.refcount == 0) return NVML_ERROR_UNINITIALIZED;
    c->t_ms = now_t_ms();
    const fake_device *dev = index >= 0 && index < (long)lib.sc.ndevices ? &lib.sc.devices[index] : NULL;
    double ms = delay_ms(dev, func, c->t_ms);
    if (ms > 0) {
        nvmlReturn_t r = sleep_unlocked(ms);
        if (r != NVML_SUCCESS) return r;
        c->t_ms = now_t_ms();
    }
    return injected(&lib.sc.faults, lib.calls_global, func, c->t_ms);
}

static nvmlReturn_t enter_device(call *c, nvmlDevice_t device, const char *func) {
    pthread_mutex_lock(&lib.mu);
    c->dev = NULL;
    c->t_ms = 0;
    if (lib.refcount == 0) return NVML_ERROR_UNINITIALIZED;
    if (!valid_device(device)) return NVML_ERROR_INVALID_ARGUMENT;
    c->t_ms = now_t_ms();
    double ms = delay_ms(device, func, c->t_ms);
    if (ms > 0) {
        nvmlReturn_t r = sleep_unlocked(ms);
        if (r != NVML_SUCCESS) return r;
        if (!valid_device(device)) return NVML_ERROR_INVALID_ARGUMENT;
        c->t_ms = now_t_ms();
    }
    c->dev = device;
    return device_injected(c->dev, func, c->t_ms, 1);
}

/* enter_device again in the same call, after a sleep outside the lock (the energy read's latency): the
 * time-window errors are checked at the new time; no delay, and the call is not counted again. */
static nvmlReturn_t reenter_device(call *c, nvmlDevice_t device, const char *func) {
    pthread_mutex_lock(&lib.mu);
    c->dev = NULL;
    c->t_ms = 0;
    if (lib.refcount == 0) return NVML_ERROR_UNINITIALIZED;
    if (!valid_device(device)) return NVML_ERROR_INVALID_ARGUMENT;
    c->t_ms = now_t_ms();
    c->dev = device;
    return device_injected(c->dev, func, c->t_ms, 0);
}

static nvmlReturn_t leave(nvmlReturn_t r) {
    pthread_mutex_unlock(&lib.mu);
    return r;
}

/* The shared state of the call's device (with lib.mu held). */
static nvmlReturn_t read_state(const call *c, fake_dev_state *out) {
    fake_state st;
    char msg[FAKE_MSG_LEN];
    if (fake_state_read(lib.state_path, lib.sc.ndevices, &st, msg, sizeof msg) != 0) {
        report(msg);
        return NVML_ERROR_UNKNOWN;
    }
    *out = st.dev[c->dev->index];
    return NVML_SUCCESS;
}

static nvmlReturn_t copy_out(const char *text, char *buf, unsigned int length) {
    if (!buf) return NVML_ERROR_INVALID_ARGUMENT;
    size_t n = strlen(text);
    if (n + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(buf, text, n + 1);
    return NVML_SUCCESS;
}

/* Average power (W) over the averaging window ending at the latest instant-power update. */
static double average_w(const call *c, const fake_dev_state *s) {
    const fake_device *d = c->dev;
    double u = fake_instant_update(d, c->t_ms);
    return (fake_energy_to(d, s, u) - fake_energy_to(d, s, u - d->average_window_ms)) / d->average_window_ms;
}

/* ------------------------------------------------------------------------------------------------------ */

/* Removes the private state file and its folder (with lib.mu held). */
static void remove_private_state_file(void) {
    unlink(lib.state_path);
    rmdir(lib.state_dir);
}

/* A message into msg (cut short if need be). */
__attribute__((format(printf, 3, 4))) static void set_msg(char *msg, size_t msglen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, msglen, fmt, ap);
    va_end(ap);
}

/* A fresh private state file: $TMPDIR/joulecap-fakenvml-XXXXXX/state, the folder made by mkdtemp (mode 0700),
 * the file created new (O_EXCL, not through a link, mode 0600), so that nobody else can read, replace or
 * redirect it.  Returns 0, or -1 with a message. */
static int make_private_state_file(char *msg, size_t msglen) {
    const char *tmp = secure_getenv("TMPDIR");
    if (!tmp || !*tmp) tmp = "/tmp";
    int n = snprintf(lib.state_dir, sizeof lib.state_dir, "%s/joulecap-fakenvml-XXXXXX", tmp);
    if (n < 0 || (size_t)n + sizeof "/state" > sizeof lib.state_dir) {
        set_msg(msg, msglen, "TMPDIR is too long");
        return -1;
    }
    if (!mkdtemp(lib.state_dir)) {
        set_msg(msg, msglen, "cannot make a private folder %s: %s", lib.state_dir, strerror(errno));
        return -1;
    }
    size_t dirlen = strlen(lib.state_dir); /* room for "/state" checked above */
    memcpy(lib.state_path, lib.state_dir, dirlen);
    memcpy(lib.state_path + dirlen, "/state", sizeof "/state");
    int fd = open(lib.state_path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        set_msg(msg, msglen, "state file %s: cannot create: %s", lib.state_path, strerror(errno));
        rmdir(lib.state_dir);
        return -1;
    }
    close(fd);
    return 0;
}

void joulecap_fake_configure(const char *scenario, const char *state_path) {
    pthread_mutex_lock(&lib.mu);
    snprintf(lib.cfg_scenario, sizeof lib.cfg_scenario, "%s", scenario ? scenario : "");
    snprintf(lib.cfg_state, sizeof lib.cfg_state, "%s", state_path ? state_path : "");
    pthread_mutex_unlock(&lib.mu);
}

int joulecap_fake_set_load(unsigned index, double load) {
    pthread_mutex_lock(&lib.mu);
    int ok = lib.refcount > 0 && index < lib.sc.ndevices && load <= 1.0 && load == load;
    fake_runtime *r = ok ? &lib.runtime[index] : NULL;
    if (r && r->n == FAKE_MAX_RUNTIME) ok = 0;
    if (ok) {
        double t = now_t_ms();
        if (r->n && r->from_ms[r->n - 1] >= t) t = r->from_ms[r->n - 1]; /* (same instant: replaces it) */
        if (r->n && r->from_ms[r->n - 1] == t) r->n--;
        r->from_ms[r->n] = t;
        r->load[r->n] = load < 0 ? -1.0 : load;
        r->n++;
    }
    pthread_mutex_unlock(&lib.mu);
    return ok ? 0 : -1;
}

nvmlReturn_t nvmlInit_v2(void) {
    pthread_mutex_lock(&lib.mu);
    if (lib.refcount > 0) {
        lib.refcount++;
        return leave(NVML_SUCCESS);
    }
    char msg[FAKE_MSG_LEN];
    /* secure_getenv: a set-user-ID program using the fake takes no file names from its caller. */
    const char *path = lib.cfg_scenario[0] ? lib.cfg_scenario : secure_getenv("JOULECAP_FAKE_NVML_SCENARIO");
    if (!path || !*path) {
        report("JOULECAP_FAKE_NVML_SCENARIO is not set: point it at a scenario file (see docs/fake-nvml.md)");
        return leave(NVML_ERROR_UNKNOWN);
    }
    if (fake_scenario_load(path, &lib.sc, msg, sizeof msg) != 0) {
        report(msg);
        return leave(NVML_ERROR_UNKNOWN);
    }
    if (lib.sc.init_error != NVML_SUCCESS) return leave(lib.sc.init_error);
    for (unsigned i = 0; i < lib.sc.ndevices; i++) {
        lib.runtime[i].n = 0;
        lib.sc.devices[i].runtime = &lib.runtime[i];
    }
    memset(lib.calls_global, 0, sizeof lib.calls_global);
    memset(lib.calls_dev, 0, sizeof lib.calls_dev);

    const char *state = lib.cfg_state[0] ? lib.cfg_state : secure_getenv("JOULECAP_FAKE_NVML_STATE");
    if (state && *state) {
        if (strlen(state) >= sizeof lib.state_path) {
            report("JOULECAP_FAKE_NVML_STATE is too long");
            return leave(NVML_ERROR_UNKNOWN);
        }
        snprintf(lib.state_path, sizeof lib.state_path, "%s", state);
        lib.state_private = 0;
    } else {
        if (make_private_state_file(msg, sizeof msg) != 0) {
            report(msg);
            return leave(NVML_ERROR_UNKNOWN);
        }
        lib.state_private = 1;
        lib.state_owner = getpid();
    }
    fake_state st;
    long long now = mono_ns();
    if (fake_state_open(lib.state_path, &lib.sc, now, &st, msg, sizeof msg) != 0) {
        report(msg);
        if (lib.state_private) remove_private_state_file();
        return leave(NVML_ERROR_UNKNOWN);
    }
    lib.start_ns = st.start_ns;
    lib.rng = (unsigned long long)now ^ ((unsigned long long)getpid() << 32) ^ 0x9e3779b97f4a7c15ull;
    if (lib.rng == 0) lib.rng = 1;
    lib.refcount = 1;
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlShutdown(void) {
    pthread_mutex_lock(&lib.mu);
    if (lib.refcount == 0) return leave(NVML_ERROR_UNINITIALIZED);
    if (--lib.refcount == 0 && lib.state_private && lib.state_owner == getpid()) remove_private_state_file();
    return leave(NVML_SUCCESS);
}

/* A process that exits (or unloads us) without the last nvmlShutdown, a failing test say, leaves no private
 * state file or folder behind. */
__attribute__((destructor)) static void remove_private_state(void) {
    if (pthread_mutex_trylock(&lib.mu) != 0) return; /* exit() while another thread is inside a call */
    if (lib.refcount > 0 && lib.state_private && lib.state_owner == getpid()) remove_private_state_file();
    pthread_mutex_unlock(&lib.mu);
}

const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_ALREADY_INITIALIZED: return "Already Initialized";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_INSUFFICIENT_POWER: return "Insufficient External Power";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_IRQ_ISSUE: return "Interrupt Request Issue";
    case NVML_ERROR_LIBRARY_NOT_FOUND: return "NVML Shared Library Not Found";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_CORRUPTED_INFOROM: return "Corrupted infoROM";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_RESET_REQUIRED: return "GPU requires restart";
    case NVML_ERROR_OPERATING_SYSTEM: return "The operating system has blocked the request.";
    case NVML_ERROR_LIB_RM_VERSION_MISMATCH: return "RM has detected an NVML/RM version mismatch.";
    case NVML_ERROR_IN_USE: return "In use by another client";
    case NVML_ERROR_MEMORY: return "Insufficient Memory";
    case NVML_ERROR_NO_DATA: return "No data";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    call c;
    nvmlReturn_t r = enter_system(&c, __func__, -1);
    if (r == NVML_SUCCESS) r = copy_out(lib.sc.driver_version, version, length);
    return leave(r);
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    call c;
    nvmlReturn_t r = enter_system(&c, __func__, -1);
    if (r == NVML_SUCCESS && !count) r = NVML_ERROR_INVALID_ARGUMENT;
    if (r == NVML_SUCCESS) *count = lib.sc.ndevices;
    return leave(r);
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    call c;
    /* The device it would return is the one whose delays and errors apply. */
    nvmlReturn_t r = enter_system(&c, __func__, (long)index);
    nvmlReturn_t dev_r = NVML_SUCCESS;
    if (lib.refcount > 0 && index < lib.sc.ndevices) /* counted by the device even if a global error wins */
        dev_r = injected(&lib.sc.devices[index].faults, lib.calls_dev[index], __func__, c.t_ms);
    if (r == NVML_SUCCESS && (!device || index >= lib.sc.ndevices)) r = NVML_ERROR_INVALID_ARGUMENT;
    if (r == NVML_SUCCESS) r = dev_r;
    if (r == NVML_SUCCESS) *device = &lib.sc.devices[index];
    return leave(r);
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    call c;
    nvmlReturn_t r = enter_device(&c, device, __func__);
    if (r == NVML_SUCCESS) r = copy_out(c.dev->name, name, length);
    return leave(r);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    call c;
    nvmlReturn_t r = enter_device(&c, device, __func__);
    if (r == NVML_SUCCESS) r = copy_out(c.dev->uuid, uuid, length);
    return leave(r);
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    call c;
    nvmlReturn_t r = enter_device(&c, device, __func__);
    if (r == NVML_SUCCESS && !pci) r = NVML_ERROR_INVALID_ARGUMENT;
    if (r == NVML_SUCCESS) {
        const fake_device *d = c.dev;
        memset(pci, 0, sizeof *pci);
        /* busId carries the 8-digit domain, busIdLegacy (16 bytes) the 4-digit one, as in nvml.h. */
        snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.0", (unsigned)(uint16_t)d->pci_domain,
                 (unsigned)(uint8_t)d->pci_bus, (unsigned)(uint8_t)d->pci_device);
        snprintf(pci->busId, sizeof pci->busId, "%08X:%02X:%02X.0", d->pci_domain, (unsigned)(uint8_t)d->pci_bus,
                 (unsigned)(uint8_t)d->pci_device);
        pci->domain = d->pci_domain;
        pci->bus = d->pci_bus;
        pci->device = d->pci_device;
        pci->pciDeviceId = d->pci_device_id;
        pci->pciSubSystemId = d->pci_subsystem_id;
    }
    return leave(r);
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device, unsigned long long *mj) {
    call c;
    nvmlReturn_t r = enter_device(&c, device, __func__);
    if (r == NVML_SUCCESS && !mj) r = NVML_ERROR_INVALID_ARGUMENT;
    if (r == NVML_SUCCESS && !c.dev->energy_counter) r = NVML_ERROR_NOT_SUPPORTED;
    if (r != NVML_SUCCESS) return leave(r);

    /* The read takes a few ms on real hardware; the value is the one at the end of it. */
    double ms = c.dev->energy_latency_ms;
    if (c.dev->energy_latency_jitter_ms > 0)
        ms += c.dev->energy_latency_jitter_ms * (double)(next_random() >> 11) / 9007199254740992.0;
    leave(NVML_SUCCESS);
    if (ms > 0) sleep_ns((long long)(ms * 1e6));

    r = reenter_device(&c, device, __func__);
    fake_dev_state s;
    if (r == NVML_SUCCESS && !c.dev->energy_counter) r = NVML_ERROR_NOT_SUPPORTED; /* re-init, new scenario */
    if (r == NVML_SUCCESS) r = read_state(&c, &s);
    if (r == NVML_SUCCESS) *mj = fake_counter_at(c.dev, &s, c.t_ms);
    return leave(r);
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *mw) {
    call c;
    fake_dev_state s;
    nvmlReturn_t r = enter_device(&c, device, __func__);
    if (r == NVML_SUCCESS && !mw) r = NVML_ERROR_INVALID_ARGUMENT;
    if (r == NVML_SUCCESS) r = read_state(&c, &s);
    if (r == NVML_SUCCESS) *mw = to_mw(average_w(&c, &s));
    return leave(r);
}

nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t device, int count, nvmlFieldValue_t *values) {
    call c;
    fake_dev_state s;
    nvmlReturn_t r = enter_device(&c, device, __func__);
    if (r == NVML_SUCCESS && (count < 0 || (count > 0 && !values))) r = NVML_ERROR_INVALID_ARGUMENT;
    if (r != NVML_SUCCESS) {
        /* An injected error (a lost GPU, say) also shows in every field. */
        if (r != NVML_ERROR_UNINITIALIZED && r != NVML_ERROR_INVALID_ARGUMENT && values)
            for (int i = 0; i < count; i++) values[i].nvmlReturn = r;
        return leave(r);
    }
    if (count == 0) return leave(NVML_SUCCESS);
    r = read_state(&c, &s);
    if (r != NVML_SUCCESS) return leave(r);

    /* Both power fields are refreshed at the instant-power updates; the timestamp is that update's. */
    double u = fake_instant_update(c.dev, c.t_ms);
    long long stamp = wall_us() - llround((c.t_ms - u) * 1000.0);
    for (int i = 0; i < count; i++) {
        nvmlFieldValue_t *v = &values[i];
        char func[FAKE_FUNC_LEN + 16];
        snprintf(func, sizeof func, "%s/%u", __func__, v->fieldId);
        v->timestamp = stamp;
        v->latencyUsec = 0;
        v->valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
        memset(&v->value, 0, sizeof v->value);
        v->nvmlReturn = device_injected(c.dev, func, c.t_ms, 1);
        if (v->nvmlReturn != NVML_SUCCESS) continue;
        if (v->fieldId == NVML_FI_DEV_POWER_INSTANT) v->value.uiVal = to_mw(fake_power_at(c.dev, &s, u));
        else if (v->fieldId == NVML_FI_DEV_POWER_AVERAGE) v->value.uiVal = to_mw(average_w(&c, &s));
        else v->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
    }
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *util) {
    call c;
    nvmlReturn_t r = enter_device(&c, device, __func__);
    if (r == NVML_SUCCESS && !util) r = NVML_ERROR_INVALID_ARGUMENT;
    if (r == NVML_SUCCESS) {
        double load = fake_load_at(c.dev, c.t_ms);
        util->gpu = (unsigned)lround(load * 100.0);
        util->memory = (unsigned)lround(load * 60.0);
    }
    return leave(r);
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, int sensor, unsigned int *temp) {
    call c;
    fake_dev_state s;
    nvmlReturn_t r = enter_device(&c, device, __func__);
    if (r == NVML_SUCCESS && (!temp || sensor != NVML_TEMPERATURE_GPU)) r = NVML_ERROR_INVALID_ARGUMENT;
    if (r == NVML_SUCCESS) r = read_state(&c, &s);
    if (r == NVML_SUCCESS) *temp = (unsigned)lround(35.0 + 40.0 * average_w(&c, &s) / c.dev->max_limit_w);
    return leave(r);
}

nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t device, unsigned int *mw) {
    call c;
    fake_dev_state s;
    nvmlReturn_t r = enter_device(&c, device, __func__);
    if (r == NVML_SUCCESS && !mw) r = NVML_ERROR_INVALID_ARGUMENT;
    if (r == NVML_SUCCESS) r = read_state(&c, &s);
    if (r == NVML_SUCCESS) *mw = s.limit_mw;
    return leave(r);
}

nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int *mw) {
    call c;
    fake_dev_state s;
    nvmlReturn_t r = enter_device(&c, device, __func__);
    if (r == NVML_SUCCESS && !mw) r = NVML_ERROR_INVALID_ARGUMENT;
    if (r == NVML_SUCCESS) r = read_state(&c, &s);
    if (r == NVML_SUCCESS) *mw = s.limit_mw;
    return leave(r);
}

nvmlReturn_t nvmlDeviceGetPowerManagementDefaultLimit(nvmlDevice_t device, unsigned int *mw) {
    call c;
    nvmlReturn_t r = enter_device(&c, device, __func__);
    if (r == NVML_SUCCESS && !mw) r = NVML_ERROR_INVALID_ARGUMENT;
    if (r == NVML_SUCCESS) *mw = to_mw(c.dev->default_limit_w);
    return leave(r);
}

nvmlReturn_t nvmlDeviceGetPowerManagementLimitConstraints(nvmlDevice_t device, unsigned int *min_mw,
                                                          unsigned int *max_mw) {
    call c;
    nvmlReturn_t r = enter_device(&c, device, __func__);
    if (r == NVML_SUCCESS && (!min_mw || !max_mw)) r = NVML_ERROR_INVALID_ARGUMENT;
    if (r == NVML_SUCCESS) {
        *min_mw = to_mw(c.dev->min_limit_w);
        *max_mw = to_mw(c.dev->max_limit_w);
    }
    return leave(r);
}

typedef struct set_limit_arg {
    const fake_device *dev;
    double t_ms;
    unsigned mw;
} set_limit_arg;

static int set_limit_fn(fake_dev_state *s, void *arg) {
    const set_limit_arg *a = arg;
    fake_apply_limit(a->dev, s, a->t_ms, a->mw);
    return 0;
}

nvmlReturn_t nvmlDeviceSetPowerManagementLimit(nvmlDevice_t device, unsigned int mw) {
    call c;
    nvmlReturn_t r = enter_device(&c, device, __func__);
    if (r == NVML_SUCCESS && !c.dev->allow_set_limit) r = NVML_ERROR_NO_PERMISSION;
    if (r == NVML_SUCCESS && (mw < to_mw(c.dev->min_limit_w) || mw > to_mw(c.dev->max_limit_w)))
        r = NVML_ERROR_INVALID_ARGUMENT;
    /* A driver that accepts the call and ignores it: only reading the limit back shows it. */
    if (r == NVML_SUCCESS && c.dev->set_limit_noop) return leave(NVML_SUCCESS);
    if (r == NVML_SUCCESS) {
        set_limit_arg a = {c.dev, c.t_ms, mw};
        char msg[FAKE_MSG_LEN];
        if (fake_state_update(lib.state_path, lib.sc.ndevices, c.dev->index, set_limit_fn, &a, msg, sizeof msg) !=
            0) {
            report(msg);
            r = NVML_ERROR_UNKNOWN;
        }
    }
    return leave(r);
}
