/* Internals of the fake NVML library (libjoulecap-fakenvml.so).  Not installed, not part of joulecap.
 *
 * The library exports exactly the functions of src/sources/nvml_api.h and joulecap_fake_configure; everything
 * else declared here is hidden.
 * Files: scenario.c parses the scenario file, model.c is the physics (load -> power -> energy), state.c the
 * state file shared between processes, fakenvml.c the NVML entry points.  docs/fake-nvml.md is the user's
 * view of all of it. */
#ifndef JC_FAKE_H
#define JC_FAKE_H

#include <stddef.h>

#include "sources/nvml_api.h"

/* Prototypes of the exported NVML functions (they are defined in fakenvml.c). */
#define FAKE__DECLARE(ret, name, args, required) ret name args;
JC_NVML_FUNCTIONS(FAKE__DECLARE)
#undef FAKE__DECLARE

/* Not NVML: joulecap's JOULECAP_FAKE switch (src/sources/fake.h) calls it before nvmlInit_v2 with the scenario
 * and the state file (NULL: as without it) that the next init uses in place of the JOULECAP_FAKE_NVML_*
 * variables. */
void joulecap_fake_configure(const char *scenario, const char *state_path);

/* Not NVML, for tests: from now on, device `index` runs at `load` (in [0, 1]) in place of its schedule, until
 * the next call; a negative load hands it back to the schedule.  This process only (the state file does not
 * carry it), so that a test's model can draw a known power while a given layer runs.  Returns 0, or -1 for a
 * bad index or load, before nvmlInit_v2, or when FAKE_MAX_RUNTIME loads were set since it. */
int joulecap_fake_set_load(unsigned index, double load);

#pragma GCC visibility push(hidden)

/* Fixed capacities keep the scenario a plain value: no allocation, nothing to free. */
#define FAKE_MAX_DEVICES 16
#define FAKE_MAX_SEGMENTS 64
#define FAKE_MAX_ERRORS 32
#define FAKE_FUNC_LEN 64
#define FAKE_MSG_LEN 512
#define FAKE_MAX_SWEEP 64 /* distinct caps of a sweep */
#define FAKE_MAX_COUNTER_FAULTS 16 /* of each kind, per device */
#define FAKE_MAX_RUNTIME 8192 /* loads set by joulecap_fake_set_load per device (since nvmlInit_v2) */

/* An injected error: calls of functions matching func (an fnmatch pattern) return code while the fake GPU's
 * time t (ms) lies in [from_ms, to_ms). */
typedef struct fake_error {
    char func[FAKE_FUNC_LEN];
    double from_ms, to_ms;
    nvmlReturn_t code;
} fake_error;

/* An injected delay: calls of functions matching func that start while t lies in [from_ms, to_ms) sleep
 * delay_ms (outside the library's lock) before doing their work: a slow or hung GPU. */
typedef struct fake_delay {
    char func[FAKE_FUNC_LEN];
    double from_ms, to_ms, delay_ms;
} fake_delay;

/* An injected error by call count: the n-th call (1-based) matching func and the count - 1 after it return
 * code (count FAKE_COUNT_END: every later one).  Each entry counts its own calls, in this process since
 * nvmlInit_v2: a device's entry the calls about that device, a global one the calls of every device and the
 * system functions.  The counts are the library's (fakenvml.c), not the scenario's. */
typedef struct fake_error_call {
    char func[FAKE_FUNC_LEN];
    unsigned long long n, count;
    nvmlReturn_t code;
} fake_error_call;
#define FAKE_COUNT_END (~0ull)

/* What one section of the scenario (the global part or a device) injects into the calls it covers. */
typedef struct fake_faults {
    int nerrors;
    fake_error errors[FAKE_MAX_ERRORS];
    int ndelays;
    fake_delay delays[FAKE_MAX_ERRORS];
    int nerror_calls;
    fake_error_call error_calls[FAKE_MAX_ERRORS];
} fake_faults;

/* Energy counter faults: from at_ms on the counter reads delta_mj more (or less). */
typedef struct fake_counter_jump {
    double at_ms;
    long long delta_mj;
} fake_counter_jump;

typedef struct fake_window {
    double from_ms, to_ms;
} fake_window;

/* Between from_ms and to_ms the load is `load` instead of the base schedule. */
typedef struct fake_segment {
    double from_ms, to_ms, load;
} fake_segment;

typedef enum fake_load_kind { FAKE_LOAD_CONSTANT, FAKE_LOAD_SQUARE } fake_load_kind;

/* Loads set at run time (joulecap_fake_set_load): load[i] from from_ms[i] to from_ms[i + 1] (the last one on
 * and on); a negative load: the schedule.  Owned by fakenvml.c, one per device. */
typedef struct fake_runtime {
    int n;
    double from_ms[FAKE_MAX_RUNTIME], load[FAKE_MAX_RUNTIME];
} fake_runtime;

/* Load in [0, 1] over time: a base schedule (constant or square wave) overridden by segments. */
typedef struct fake_load {
    fake_load_kind kind;
    double level;                      /* constant */
    double period_ms, duty, phase_ms;  /* square: high while (t + phase_ms) mod period_ms < duty * period_ms */
    double high, low;                  /* square: load in the high and the low part */
    int nsegments;
    fake_segment segments[FAKE_MAX_SEGMENTS]; /* sorted by from_ms, not overlapping */
} fake_load;

/* One fake GPU as the scenario describes it (read-only after parsing).  nvmlDevice_t points at one. */
struct nvmlDevice_st {
    unsigned index;
    char name[NVML_DEVICE_NAME_V2_BUFFER_SIZE];
    char uuid[NVML_DEVICE_UUID_V2_BUFFER_SIZE];
    unsigned pci_domain, pci_bus, pci_device, pci_device_id, pci_subsystem_id;
    double min_limit_w, max_limit_w, default_limit_w, initial_limit_w;
    double idle_w, loaded_w;
    /* Sweep mode (`sweep = file.csv`): the power at load 1 is a function of the limit in force, linear between
     * the sweep's caps and constant beyond them, instead of loaded_w.  Caps ascending, distinct. */
    int nsweep;
    double sweep_cap_w[FAKE_MAX_SWEEP], sweep_power_w[FAKE_MAX_SWEEP];
    fake_load load;
    int burst_overshoot;  /* 1: power may exceed the limit, up to limit * burst_factor */
    double burst_factor;
    int energy_counter;   /* 0: nvmlDeviceGetTotalEnergyConsumption is not supported */
    unsigned long long energy_initial_mj;
    /* Counter faults (model.c, fake_counter_at): jumps, restarts from 0 at the reset times, and windows in
     * which the counter holds the value it had at their start (sorted by from_ms, not overlapping). */
    int njumps, nresets, nstuck;
    fake_counter_jump jumps[FAKE_MAX_COUNTER_FAULTS];
    double reset_ms[FAKE_MAX_COUNTER_FAULTS];
    fake_window stuck[FAKE_MAX_COUNTER_FAULTS];
    double counter_step_ms, counter_phase_ms;
    double instant_period_ms, instant_phase_ms, average_window_ms;
    double energy_latency_ms, energy_latency_jitter_ms;
    int allow_set_limit;
    int set_limit_noop;   /* 1: nvmlDeviceSetPowerManagementLimit succeeds but changes nothing */
    fake_faults faults;   /* this device's injected errors (by time and by call count) and delays */
    const fake_runtime *runtime; /* loads set at run time (NULL: none), set by fakenvml.c after parsing */
};
typedef struct nvmlDevice_st fake_device;

typedef struct fake_scenario {
    char driver_version[NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE];
    nvmlReturn_t init_error; /* NVML_SUCCESS: nvmlInit_v2 works */
    fake_faults faults;      /* injected into every device and the system functions */
    unsigned ndevices;
    fake_device devices[FAKE_MAX_DEVICES];
} fake_scenario;

/* Mutable per-device state, kept in the state file.  A limit set at some time takes effect at the next
 * counter boundary, eff_ms; anchor_mj is the energy from t = 0 to eff_ms.  Before eff_ms prev_limit_mw is in
 * force, from eff_ms on limit_mw.  That keeps the counter an exact integral across limit changes. */
typedef struct fake_dev_state {
    unsigned limit_mw, prev_limit_mw;
    double eff_ms, anchor_mj;
} fake_dev_state;

typedef struct fake_state {
    long long start_ns; /* CLOCK_MONOTONIC time at which the fake GPUs "started" (t = 0) */
    unsigned ndevices;
    fake_dev_state dev[FAKE_MAX_DEVICES];
} fake_state;

/* scenario.c --------------------------------------------------------------------------------------------- */

/* Parses the scenario file at path into *sc.  On failure returns -1 with "path:line: why" in msg. */
int fake_scenario_load(const char *path, fake_scenario *sc, char *msg, size_t msglen);
/* "GPU_IS_LOST", "NVML_ERROR_GPU_IS_LOST" or a number -> code; -1 if unknown. */
int fake_return_code(const char *name, nvmlReturn_t *code);

/* model.c ------------------------------------------------------------------------------------------------ */

double fake_load_at(const fake_device *d, double t_ms);
/* True power (W) at t under the limit in force then. */
double fake_power_at(const fake_device *d, const fake_dev_state *s, double t_ms);
/* Energy (mJ) from t = 0 to t (negative for t < 0), following the limit history in s. */
double fake_energy_to(const fake_device *d, const fake_dev_state *s, double t_ms);
/* Latest energy-counter boundary at or before t (negative just after the start). */
double fake_counter_boundary(const fake_device *d, double t_ms);
/* What nvmlDeviceGetTotalEnergyConsumption reads at t (mJ): energy_initial_mj plus the energy to the latest
 * boundary, with the counter faults applied. */
unsigned long long fake_counter_at(const fake_device *d, const fake_dev_state *s, double t_ms);
/* Latest instant-power update at or before t (negative just after the start). */
double fake_instant_update(const fake_device *d, double t_ms);
/* Records a new limit requested at time t (ms): it takes effect at the next counter boundary. */
void fake_apply_limit(const fake_device *d, fake_dev_state *s, double t_ms, unsigned limit_mw);

/* state.c ------------------------------------------------------------------------------------------------ */

/* Opens the state file at path, reusing it when it holds sc->ndevices devices with limits inside the
 * scenario's ranges and a start time in this boot, else writing a fresh one (start = now, default limits).
 * Fills *st.  Returns 0, or -1 with a message. */
int fake_state_open(const char *path, const fake_scenario *sc, long long now_ns, fake_state *st, char *msg,
                    size_t msglen);
/* Reads the current state (shared lock). */
int fake_state_read(const char *path, unsigned ndevices, fake_state *st, char *msg, size_t msglen);
/* Read-modify-write of one device's state under an exclusive lock: reads the file, calls fn on the device's
 * entry, writes the file back.  fn returns 0 to write, anything else to leave the file as it was. */
typedef int (*fake_state_update_fn)(fake_dev_state *s, void *arg);
int fake_state_update(const char *path, unsigned ndevices, unsigned index, fake_state_update_fn fn, void *arg,
                      char *msg, size_t msglen);

#pragma GCC visibility pop

#endif
