/* joulecapd's NVML side: the GPUs (through the library's loader and identification), their limits, and a
 * set that is read back.  A GPU that cannot be identified is skipped: it never blocks another GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jcd.h"

jcd_gpu *jcd_gpu_find(jcd_state *s, const char *uuid) {
    for (int i = 0; i < s->ngpus; i++)
        if (strcmp(s->gpus[i].g.id.uuid, uuid) == 0) return &s->gpus[i];
    return NULL;
}

jcd_gpu *jcd_gpu_add(jcd_state *s, const char *uuid) {
    jcd_gpu *g = jcd_gpu_find(s, uuid);
    if (g || s->ngpus >= JCD_MAX_GPUS) return g;
    g = &s->gpus[s->ngpus++];
    memset(g, 0, sizeof *g);
    jc__fmt(g->g.id.uuid, sizeof g->g.id.uuid, "%s", uuid);
    g->g.nvml_index = g->g.cuda_index = -1;
    return g;
}

jc_status jcd_gpus_open(jcd_state *s) {
    char why[512];
    jc__nvml *nvml = NULL;
    jc_status st = jc__nvml_open(&nvml, why, sizeof why);
    if (st != JC_OK) {
        jc__fmt(s->nvml_why, sizeof s->nvml_why, "%s", why);
        return st;
    }
    unsigned count = 0;
    nvmlReturn_t r = nvml->nvmlDeviceGetCount_v2(&count);
    if (r != NVML_SUCCESS) {
        st = jc__nvml_status(nvml, r, "counting GPUs");
        jc__fmt(s->nvml_why, sizeof s->nvml_why, "%s", jc_last_detail());
        jc__nvml_close(nvml);
        return st;
    }
    if (count > JCD_MAX_GPUS) count = JCD_MAX_GPUS;
    for (unsigned i = 0; i < count; i++) {
        nvmlDevice_t dev;
        jc__gpu_ident id;
        if (jc__nvml_identify(nvml, i, &dev, &id) != JC_OK) {
            jcd_log("NVML GPU %u cannot be identified (%s): skipped", i, jc_last_detail());
            continue;
        }
        jcd_gpu *g = jcd_gpu_add(s, id.uuid);
        if (!g) break;
        g->g.dev = dev;
        g->g.id = id;
        g->g.nvml_index = g->g.cuda_index = (int)i;
        g->present = 1;
        jc__capgpu_read_limits(nvml, &g->g);
    }
    s->nvml = nvml;
    s->nvml_why[0] = '\0';
    return JC_OK;
}

jc_status jcd_gpus_ready(jcd_state *s, double now) {
    if (s->nvml) return JC_OK;
    if (now >= s->nvml_retry_at) {
        s->nvml_retry_at = now + 5;
        if (jcd_gpus_open(s) == JC_OK) {
            jcd_log("NVML is available now (driver %s)", s->nvml->driver_version);
            return JC_OK;
        }
    }
    return jc__fail(JC_ERR_UNAVAILABLE, "joulecapd cannot use NVML: %s", s->nvml_why);
}

void jcd_gpu_refresh(jcd_state *s, jcd_gpu *g) {
    if (s->nvml && g->present) jc__capgpu_read_limits(s->nvml, &g->g);
}

const char *jcd_gpu_label(const jcd_gpu *g, char *buf, size_t len) {
    if (g->present)
        jc__fmt(buf, len, "%s (NVML GPU %d, %s)", g->g.id.uuid, g->g.nvml_index, g->g.id.name);
    else
        jc__fmt(buf, len, "%s (not on this machine now)", g->g.id.uuid);
    return buf;
}

jc_status jcd_gpu_set(jcd_state *s, jcd_gpu *g, unsigned mw, unsigned *got) {
    char label[256], what[400];
    *got = 0;
    jcd_gpu_label(g, label, sizeof label);
    jc_status st = jcd_gpus_ready(s, jcd_mono());
    if (st != JC_OK) return st;
    if (!g->present) return jc__fail(JC_ERR_NOT_FOUND, "%s: NVML does not list this GPU", label);
    if (!s->nvml->nvmlDeviceSetPowerManagementLimit || !s->nvml->nvmlDeviceGetPowerManagementLimit)
        return jc__fail(JC_ERR_NOT_SUPPORTED, "this NVIDIA driver cannot set or read power limits");
    nvmlReturn_t r = s->nvml->nvmlDeviceSetPowerManagementLimit(g->g.dev, mw);
    if (r != NVML_SUCCESS) {
        jc__fmt(what, sizeof what, "joulecapd setting the power limit of %s to %g W", label, mw / 1000.0);
        st = jc__nvml_status(s->nvml, r, what);
        if (st == JC_ERR_NO_PERMISSION) {
            char d[1024];
            jc__fmt(d, sizeof d, "%s; joulecapd itself must run as root (or with CAP_SYS_ADMIN)", jc_last_detail());
            jc__fail(st, "%s", d);
        }
        return st;
    }
    unsigned v = 0;
    r = s->nvml->nvmlDeviceGetPowerManagementLimit(g->g.dev, &v);
    if (r != NVML_SUCCESS) {
        jc__fmt(what, sizeof what, "joulecapd reading back the power limit of %s after setting %g W", label,
                mw / 1000.0);
        return jc__nvml_status(s->nvml, r, what);
    }
    jc__capgpu_read_limits(s->nvml, &g->g);
    if ((unsigned long long)v + 1000u <= mw || v >= (unsigned long long)mw + 1000u)
        return jc__fail(JC_ERR_NVML, "the power limit of %s did not take: NVML accepted %g W but reads back "
                        "%g W", label, mw / 1000.0, v / 1000.0);
    *got = v;
    return JC_OK;
}
