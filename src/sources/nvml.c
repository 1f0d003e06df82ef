/* NVML loader: resolves the hand-declared subset with dlsym, maps errors, reads identities and power. */
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake.h"
#include "nvml.h"

static const char *nvml_text(const jc__nvml *nvml, nvmlReturn_t r) {
    if (nvml && nvml->nvmlErrorString) {
        const char *s = nvml->nvmlErrorString(r);
        if (s) return s;
    }
    return "unknown NVML error";
}

jc_status jc__nvml_status(const jc__nvml *nvml, nvmlReturn_t r, const char *what) {
    jc_status st;
    switch (r) {
    case NVML_SUCCESS: return JC_OK;
    case NVML_ERROR_INVALID_ARGUMENT: st = JC_ERR_INVALID_ARGUMENT; break;
    case NVML_ERROR_NOT_SUPPORTED:
    case NVML_ERROR_FUNCTION_NOT_FOUND: st = JC_ERR_NOT_SUPPORTED; break;
    case NVML_ERROR_NO_PERMISSION: st = JC_ERR_NO_PERMISSION; break;
    case NVML_ERROR_NOT_FOUND: st = JC_ERR_NOT_FOUND; break;
    case NVML_ERROR_GPU_IS_LOST:
    case NVML_ERROR_RESET_REQUIRED: st = JC_ERR_GPU_LOST; break;
    case NVML_ERROR_TIMEOUT: st = JC_ERR_TIMEOUT; break;
    case NVML_ERROR_MEMORY: st = JC_ERR_NO_MEMORY; break;
    case NVML_ERROR_IN_USE: st = JC_ERR_BUSY; break;
    case NVML_ERROR_DRIVER_NOT_LOADED:
    case NVML_ERROR_LIBRARY_NOT_FOUND:
    case NVML_ERROR_LIB_RM_VERSION_MISMATCH: st = JC_ERR_UNAVAILABLE; break;
    default: st = JC_ERR_NVML; break;
    }
    return jc__fail(st, "%s: %s (NVML error %d)", what, nvml_text(nvml, r), r);
}

void jc__nvml_close(jc__nvml *nvml) {
    if (!nvml) return;
    if (nvml->initialised && nvml->nvmlShutdown) nvml->nvmlShutdown();
    if (nvml->lib) dlclose(nvml->lib);
    free(nvml);
}

jc_status jc__nvml_open(jc__nvml **out, char *why, size_t whylen) {
    *out = NULL;
    const char *path = secure_getenv("JOULECAP_NVML_LIBRARY");
    if (!path || !*path) path = "libnvidia-ml.so.1";
    /* JOULECAP_FAKE: the bundled fake NVML, with its scenario and a state file of this user's (fake.h). */
    char fake_lib[PATH_MAX], fake_scenario[PATH_MAX], fake_state[PATH_MAX];
    int fake = jc__fake_wanted() != NULL;
    if (fake) {
        jc_status st = jc__fake_nvml(fake_lib, sizeof fake_lib, fake_scenario, sizeof fake_scenario);
        if (st == JC_OK && !secure_getenv("JOULECAP_FAKE_NVML_STATE")) {
            st = jc__fake_dir(fake_state, sizeof fake_state);
            size_t n = strlen(fake_state);
            if (st == JC_OK && !jc__path(fake_state + n, sizeof fake_state - n, "/nvml.state"))
                st = jc__fail(JC_ERR_INVALID_ARGUMENT, "JOULECAP_FAKE: state path too long");
        } else {
            fake_state[0] = '\0'; /* the fake reads JOULECAP_FAKE_NVML_STATE itself */
        }
        if (st != JC_OK) {
            jc__fmt(why, whylen, "%s", jc_last_detail());
            return jc__fail(JC_ERR_UNAVAILABLE, "%s", why);
        }
        path = fake_lib;
    }
    jc__nvml *nvml = calloc(1, sizeof *nvml);
    if (!nvml) return jc__fail(JC_ERR_NO_MEMORY, "cannot allocate the NVML loader");
    nvml->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!nvml->lib) {
        const char *err = dlerror();
        jc__fmt(why, whylen, "NVML not loaded (%s): no NVIDIA driver on this machine, or set "
                "JOULECAP_NVML_LIBRARY to the path of libnvidia-ml.so.1", err ? err : path);
        free(nvml);
        return jc__fail(JC_ERR_UNAVAILABLE, "%s", why);
    }
    if (fake) {
        jc__fake_configure_fn configure;
        *(void **)(&configure) = dlsym(nvml->lib, JC__FAKE_CONFIGURE);
        if (!configure) {
            jc__fmt(why, whylen, "JOULECAP_FAKE: %s is not joulecap's fake NVML (it lacks %s)", path,
                    JC__FAKE_CONFIGURE);
            jc__nvml_close(nvml);
            return jc__fail(JC_ERR_UNAVAILABLE, "%s", why);
        }
        configure(fake_scenario, fake_state[0] ? fake_state : NULL);
    }
#define X(ret, name, args, req)                                                                            \
    *(void **)(&nvml->name) = dlsym(nvml->lib, #name);                                                     \
    if (!nvml->name && (req)) {                                                                            \
        jc__fmt(why, whylen, "NVML library %s lacks %s: driver too old", path, #name);                     \
        jc__nvml_close(nvml);                                                                              \
        return jc__fail(JC_ERR_UNAVAILABLE, "%s", why);                                                    \
    }
    JC_NVML_FUNCTIONS(X)
#undef X
    nvmlReturn_t r = nvml->nvmlInit_v2();
    if (r != NVML_SUCCESS) {
        jc__fmt(why, whylen, "NVML could not start: %s (NVML error %d)", nvml_text(nvml, r), r);
        jc__nvml_close(nvml);
        return jc__fail(JC_ERR_UNAVAILABLE, "%s", why);
    }
    nvml->initialised = 1;
    if (!nvml->nvmlSystemGetDriverVersion ||
        nvml->nvmlSystemGetDriverVersion(nvml->driver_version, sizeof nvml->driver_version) != NVML_SUCCESS)
        snprintf(nvml->driver_version, sizeof nvml->driver_version, "unknown");
    *out = nvml;
    return JC_OK;
}

jc_status jc__nvml_identify(jc__nvml *nvml, unsigned index, nvmlDevice_t *dev, jc__gpu_ident *id) {
    memset(id, 0, sizeof *id);
    char what[64];
    jc__fmt(what, sizeof what, "NVML GPU %u", index);
    nvmlReturn_t r = nvml->nvmlDeviceGetHandleByIndex_v2(index, dev);
    if (r != NVML_SUCCESS) return jc__nvml_status(nvml, r, what);
    r = nvml->nvmlDeviceGetUUID(*dev, id->uuid, sizeof id->uuid);
    if (r != NVML_SUCCESS) return jc__nvml_status(nvml, r, what);
    if (nvml->nvmlDeviceGetName(*dev, id->name, sizeof id->name) != NVML_SUCCESS)
        snprintf(id->name, sizeof id->name, "NVIDIA GPU");
    nvmlPciInfo_t pci;
    memset(&pci, 0, sizeof pci);
    if (nvml->nvmlDeviceGetPciInfo_v3 && nvml->nvmlDeviceGetPciInfo_v3(*dev, &pci) == NVML_SUCCESS) {
        memcpy(id->pci_bus_id, pci.busId, sizeof id->pci_bus_id);
        id->pci_bus_id[sizeof id->pci_bus_id - 1] = '\0';
    }
    return JC_OK;
}

nvmlReturn_t jc__nvml_power(jc__nvml *nvml, nvmlDevice_t dev, int prefer_instant, unsigned *mw,
                            int64_t *timestamp_us, int *is_average) {
    *timestamp_us = 0;
    if (prefer_instant && nvml->nvmlDeviceGetFieldValues) {
        nvmlFieldValue_t fv;
        memset(&fv, 0, sizeof fv);
        fv.fieldId = NVML_FI_DEV_POWER_INSTANT;
        nvmlReturn_t r = nvml->nvmlDeviceGetFieldValues(dev, 1, &fv);
        if (r == NVML_SUCCESS) r = fv.nvmlReturn;
        if (r == NVML_SUCCESS) {
            switch (fv.valueType) {
            case NVML_VALUE_TYPE_UNSIGNED_LONG: *mw = (unsigned)fv.value.ulVal; break;
            case NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: *mw = (unsigned)fv.value.ullVal; break;
            case NVML_VALUE_TYPE_SIGNED_LONG_LONG: *mw = (unsigned)fv.value.sllVal; break;
            case NVML_VALUE_TYPE_SIGNED_INT: *mw = (unsigned)fv.value.siVal; break;
            case NVML_VALUE_TYPE_DOUBLE: *mw = (unsigned)fv.value.dVal; break;
            default: *mw = fv.value.uiVal; break;
            }
            *timestamp_us = fv.timestamp;
            *is_average = 0;
            return NVML_SUCCESS;
        }
        if (r == NVML_ERROR_GPU_IS_LOST || r == NVML_ERROR_RESET_REQUIRED) return r;
    }
    if (!nvml->nvmlDeviceGetPowerUsage) return NVML_ERROR_FUNCTION_NOT_FOUND;
    *is_average = 1;
    return nvml->nvmlDeviceGetPowerUsage(dev, mw);
}
