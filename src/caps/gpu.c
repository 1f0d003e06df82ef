/* The NVML side of power caps: GPU selection (through the library's CUDA-order selection), limits, setting
 * a limit with errors in words, and one restore step of a journal. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caps_internal.h"

void jc__capgpu_read_limits(jc__nvml *nvml, jc__capgpu *g) {
    g->limit_mw = g->enforced_mw = g->default_mw = g->min_mw = g->max_mw = 0;
    unsigned v;
    if (nvml->nvmlDeviceGetPowerManagementLimit && nvml->nvmlDeviceGetPowerManagementLimit(g->dev, &v) == NVML_SUCCESS)
        g->limit_mw = v;
    if (nvml->nvmlDeviceGetEnforcedPowerLimit && nvml->nvmlDeviceGetEnforcedPowerLimit(g->dev, &v) == NVML_SUCCESS)
        g->enforced_mw = v;
    if (nvml->nvmlDeviceGetPowerManagementDefaultLimit &&
        nvml->nvmlDeviceGetPowerManagementDefaultLimit(g->dev, &v) == NVML_SUCCESS)
        g->default_mw = v;
    unsigned lo, hi;
    if (nvml->nvmlDeviceGetPowerManagementLimitConstraints &&
        nvml->nvmlDeviceGetPowerManagementLimitConstraints(g->dev, &lo, &hi) == NVML_SUCCESS) {
        g->min_mw = lo;
        g->max_mw = hi;
    }
}

static jc_status enumerate(jc__nvml *nvml, jc__gpu_ident *ids, nvmlDevice_t *handles, int *n) {
    unsigned count = 0;
    nvmlReturn_t r = nvml->nvmlDeviceGetCount_v2(&count);
    if (r != NVML_SUCCESS) return jc__nvml_status(nvml, r, "counting GPUs");
    if (count > JC__CAP_MAX_GPUS) count = JC__CAP_MAX_GPUS;
    for (unsigned i = 0; i < count; i++) {
        jc_status st = jc__nvml_identify(nvml, i, &handles[i], &ids[i]);
        if (st != JC_OK) return st;
    }
    *n = (int)count;
    return JC_OK;
}

static void fill(jc__nvml *nvml, jc__capgpu *g, const jc__gpu_ident *id, nvmlDevice_t dev, int nvml_index,
                 int cuda_index) {
    memset(g, 0, sizeof *g);
    g->dev = dev;
    g->id = *id;
    g->nvml_index = nvml_index;
    g->cuda_index = cuda_index;
    jc__capgpu_read_limits(nvml, g);
}

jc_status jc__capgpu_select(jc__nvml *nvml, const char *sel, jc__capgpu *out, int max, int *count) {
    *count = 0;
    jc__gpu_ident ids[JC__CAP_MAX_GPUS];
    nvmlDevice_t handles[JC__CAP_MAX_GPUS];
    int n = 0;
    jc_status st = enumerate(nvml, ids, handles, &n);
    if (st != JC_OK) return st;
    int nvml_idx[JC_MAX_DEVICES], cuda_idx[JC_MAX_DEVICES], k = 0;
    char note[512];
    st = jc__gpu_select(ids, n, getenv("CUDA_VISIBLE_DEVICES"), getenv("CUDA_DEVICE_ORDER"), sel ? sel : "all",
                        nvml_idx, cuda_idx, &k, note, sizeof note);
    if (st != JC_OK) return st;
    for (int i = 0; i < k && *count < max; i++) {
        int ni = nvml_idx[i];
        fill(nvml, &out[(*count)++], &ids[ni], handles[ni], ni, cuda_idx[i]);
    }
    return JC_OK;
}

jc_status jc__capgpu_all(jc__nvml *nvml, jc__capgpu *out, int max, int *count) {
    *count = 0;
    jc__gpu_ident ids[JC__CAP_MAX_GPUS];
    nvmlDevice_t handles[JC__CAP_MAX_GPUS];
    int n = 0;
    jc_status st = enumerate(nvml, ids, handles, &n);
    if (st != JC_OK) return st;
    int nvml_idx[JC_MAX_DEVICES], cuda_idx[JC_MAX_DEVICES], k = 0;
    char note[512];
    /* Which of them this process sees, and as what CUDA index (an error here only means "none"). */
    if (jc__gpu_select(ids, n, getenv("CUDA_VISIBLE_DEVICES"), getenv("CUDA_DEVICE_ORDER"), "all", nvml_idx,
                       cuda_idx, &k, note, sizeof note) != JC_OK)
        k = 0;
    for (int i = 0; i < n && *count < max; i++) {
        int ci = -1;
        for (int m = 0; m < k; m++)
            if (nvml_idx[m] == i) ci = cuda_idx[m];
        fill(nvml, &out[(*count)++], &ids[i], handles[i], i, ci);
    }
    jc__clear_detail();
    return JC_OK;
}

const char *jc__capgpu_label(const jc__capgpu *g, char *buf, size_t len) {
    if (g->cuda_index >= 0)
        jc__fmt(buf, len, "GPU %d (%s, %s)", g->cuda_index, g->id.name, g->id.uuid);
    else
        jc__fmt(buf, len, "NVML GPU %d (%s, %s; not visible to this process)", g->nvml_index, g->id.name, g->id.uuid);
    return buf;
}

static const char *watts(char *buf, size_t len, unsigned mw) {
    if (mw % 1000 == 0)
        jc__fmt(buf, len, "%u", mw / 1000);
    else
        jc__fmt(buf, len, "%.3f", mw / 1000.0);
    return buf;
}

jc_status jc__capgpu_check(const jc__capgpu *g, double w, unsigned *mw) {
    char label[256], a[32], b[32];
    jc__capgpu_label(g, label, sizeof label);
    if (!isfinite(w) || w <= 0 || w > 4e6)
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "cap %g W for %s is not a valid power", w, label);
    if (!g->min_mw || !g->max_mw)
        return jc__fail(JC_ERR_NOT_SUPPORTED, "%s does not report its power limit range: its cap cannot be set",
                        label);
    double v = floor(w * 1000.0 + 0.5);
    if (v < g->min_mw || v > g->max_mw)
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "cap %g W for %s is out of range: it accepts %s W to %s W", w,
                        label, watts(a, sizeof a, g->min_mw), watts(b, sizeof b, g->max_mw));
    *mw = (unsigned)v;
    return JC_OK;
}

jc_status jc__capgpu_set(jc__nvml *nvml, const jc__capgpu *g, unsigned mw) {
    char label[256], a[32];
    jc__capgpu_label(g, label, sizeof label);
    if (!nvml->nvmlDeviceSetPowerManagementLimit)
        return jc__fail(JC_ERR_NOT_SUPPORTED, "this NVIDIA driver cannot set power limits (no "
                        "nvmlDeviceSetPowerManagementLimit)");
    nvmlReturn_t r = nvml->nvmlDeviceSetPowerManagementLimit(g->dev, mw);
    if (r == NVML_SUCCESS) return JC_OK;
    if (r == NVML_ERROR_NO_PERMISSION)
        return jc__fail(JC_ERR_NO_PERMISSION,
                        "not permitted to set the power limit of %s: that needs root (run as root or with sudo), "
                        "or CAP_SYS_ADMIN in a container (docker run --cap-add SYS_ADMIN)", label);
    char what[400];
    jc__fmt(what, sizeof what, "setting the power limit of %s to %s W", label, watts(a, sizeof a, mw));
    return jc__nvml_status(nvml, r, what);
}

jc_status jc__capgpu_probe(jc__nvml *nvml, jc__capgpu *g) {
    char label[256];
    jc__capgpu_read_limits(nvml, g);
    if (!g->limit_mw)
        return jc__fail(JC_ERR_NOT_SUPPORTED, "%s does not report its power limit: its cap cannot be managed",
                        jc__capgpu_label(g, label, sizeof label));
    jc_status st = jc__capgpu_set(nvml, g, g->limit_mw);
    if (st == JC_ERR_NO_PERMISSION) {
        char detail[1024];
        jc__fmt(detail, sizeof detail, "%s; nothing was changed", jc_last_detail());
        return jc__fail(st, "%s", detail);
    }
    return st;
}

jc_status jc__journal_restore_step(jc__nvml *nvml, const char *dir, const jc__journal *j, const jc__capgpu *g,
                                   unsigned *restored_mw, int *more) {
    *restored_mw = 0;
    *more = 0;
    if (j->set_mw != 0) {
        jc_status st = jc__capgpu_set(nvml, g, j->original_mw);
        if (st != JC_OK) return st;
        *restored_mw = j->original_mw;
    }
    if (j->owner_pid != 0 && j->base_mw != 0) {
        /* A session over a persistent cap: the persistent cap (its limit is the session's saved one) stays. */
        jc__journal p = *j;
        p.original_mw = j->base_mw;
        p.set_mw = j->original_mw;
        p.base_mw = 0;
        p.owner_pid = 0;
        p.owner_start = 0;
        p.guardian_pid = 0;
        p.guardian_start = 0;
        snprintf(p.owner_command, sizeof p.owner_command, "joulecap cap set");
        *more = 1;
        return jc__journal_write(dir, &p);
    }
    return jc__journal_remove(dir, j->uuid);
}

double jc__w_of(unsigned mw) { return mw ? mw / 1000.0 : NAN; }

/* Fills the public description of a GPU and of its journal, if any. */
void jc__capgpu_describe(const jc__capgpu *g, const char *dir, jc_cap_info *out) {
    memset(out, 0, sizeof *out);
    out->index = g->cuda_index;
    out->nvml_index = g->nvml_index;
    jc__fmt(out->name, sizeof out->name, "%s", g->id.name);
    jc__fmt(out->uuid, sizeof out->uuid, "%s", g->id.uuid);
    jc__fmt(out->pci_bus_id, sizeof out->pci_bus_id, "%s", g->id.pci_bus_id);
    out->limit_w = jc__w_of(g->limit_mw);
    out->enforced_limit_w = jc__w_of(g->enforced_mw);
    out->default_limit_w = jc__w_of(g->default_mw);
    out->min_limit_w = jc__w_of(g->min_mw);
    out->max_limit_w = jc__w_of(g->max_mw);
    out->saved_limit_w = out->set_limit_w = out->persistent_saved_limit_w = NAN;
    out->manager = JC_CAP_MANAGER_NONE;
    jc__journal j;
    int exists = 0;
    if (!dir || jc__journal_read(dir, g->id.uuid, &j, &exists) != JC_OK || !exists) {
        jc__clear_detail();
        return;
    }
    out->manager = jc__journal_manager(&j);
    out->saved_limit_w = jc__w_of(j.original_mw);
    out->set_limit_w = jc__w_of(j.set_mw);
    out->persistent_saved_limit_w = jc__w_of(j.base_mw);
    out->owner_pid = j.owner_pid;
    out->guardian_pid = j.guardian_pid;
    out->guardian_alive = j.guardian_pid > 0 && jc__proc_alive(j.guardian_pid, j.guardian_start);
    char cmd[256] = "";
    if (out->manager == JC_CAP_MANAGER_SESSION) jc__proc_cmdline(j.owner_pid, cmd, sizeof cmd);
    jc__fmt(out->owner_command, sizeof out->owner_command, "%s", cmd[0] ? cmd : j.owner_command);
    out->journal_created = j.created;
    jc__cap_path(out->journal_path, sizeof out->journal_path, dir, g->id.uuid, ".journal");
}


void jc__note_append(char *note, size_t len, const char *fmt, ...) {
    if (!note || len == 0) return;
    size_t used = strlen(note);
    if (used + 1 >= len) return;
    if (used) {
        jc__fmt(note + used, len - used, "; ");
        used = strlen(note);
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(note + used, len - used, fmt, ap);
    va_end(ap);
}

jc_status jc__journal_busy(const jc__journal *j, const jc__capgpu *g) {
    char owner[400], label[256];
    jc__journal_owner_text(j, owner, sizeof owner);
    return jc__fail(JC_ERR_BUSY,
                    "%s is capped by %s, which saved the limit %g W; it puts it back when it ends (or its guardian "
                    "does if it dies). Wait for it or stop it; 'joulecap cap get' shows who manages each GPU",
                    jc__capgpu_label(g, label, sizeof label), owner, j->original_mw / 1000.0);
}

/* Under the GPU's lock: when its journal is stale (owner dead), puts the saved limit back and says so in
 * note.  *j / *exists describe the journal left afterwards. */
jc_status jc__journal_repair_stale(jc__nvml *nvml, const char *dir, const jc__capgpu *g, jc__journal *j, int *exists,
                              char *note, size_t note_len) {
    if (!*exists || jc__journal_manager(j) != JC_CAP_MANAGER_STALE) return JC_OK;
    unsigned restored = 0;
    int more = 0;
    char label[256];
    jc_status st = jc__journal_restore_step(nvml, dir, j, g, &restored, &more);
    if (st != JC_OK) {
        char detail[800];
        jc__fmt(detail, sizeof detail, "%s", jc_last_detail());
        return jc__fail(st, "%s has a stale journal (owner process %d is dead) whose saved limit could not be put "
                        "back: %s", jc__capgpu_label(g, label, sizeof label), j->owner_pid, detail);
    }
    if (restored)
        jc__note_append(note, note_len, "%s: process %d died leaving its cap; restored its saved limit %g W first",
               jc__capgpu_label(g, label, sizeof label), j->owner_pid, restored / 1000.0);
    else
        jc__note_append(note, note_len, "%s: removed the stale journal of dead process %d (it had not changed the limit)",
               jc__capgpu_label(g, label, sizeof label), j->owner_pid);
    return jc__journal_read(dir, g->id.uuid, j, exists);
}

