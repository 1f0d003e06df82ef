/* The NVML side of power caps: GPU selection (through the library's CUDA-order selection), limits, setting
 * a limit with errors in words, and one restore step of a journal. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

int jc__sel_is_all(const char *sel) { return !sel || !*sel || strcasecmp(sel, "all") == 0; }

/* Every GPU NVML counts.  One that cannot be identified (GPU_IS_LOST on its handle or UUID) is kept with its
 * status and reason and does not stop the others; it takes the PCI bus id of the GPU before it, so that it
 * keeps its place in PCI order (NVML enumerates in that order) and the CUDA numbering of the rest holds. */
static jc_status enumerate(jc__nvml *nvml, jc__capgpu *all, int *n) {
    *n = 0;
    unsigned count = 0;
    nvmlReturn_t r = nvml->nvmlDeviceGetCount_v2(&count);
    if (r != NVML_SUCCESS) return jc__nvml_status(nvml, r, "counting GPUs");
    if (count > JC__CAP_MAX_GPUS) count = JC__CAP_MAX_GPUS;
    for (unsigned i = 0; i < count; i++) {
        jc__capgpu *g = &all[i];
        memset(g, 0, sizeof *g);
        g->nvml_index = (int)i;
        g->cuda_index = -1;
        jc_status st = jc__nvml_identify(nvml, i, &g->dev, &g->id);
        if (st == JC_OK) {
            jc__capgpu_read_limits(nvml, g);
            continue;
        }
        g->status = st;
        jc__fmt(g->why, sizeof g->why, "%s", jc_last_detail());
        memset(&g->id, 0, sizeof g->id);
        jc__fmt(g->id.name, sizeof g->id.name, "unidentified GPU");
        jc__clear_detail();
    }
    *n = (int)count;
    return JC_OK;
}

/* The enumeration and the CUDA-order selection over it; all is JC__CAP_MAX_GPUS long. */
static jc_status select_from(jc__nvml *nvml, const char *sel, jc__capgpu *all, int *n, int *nvml_idx, int *cuda_idx,
                             int *k) {
    jc_status st = enumerate(nvml, all, n);
    if (st != JC_OK) return st;
    jc__gpu_ident ids[JC__CAP_MAX_GPUS];
    for (int i = 0; i < *n; i++) ids[i] = all[i].id;
    char note[512];
    return jc__gpu_select(ids, *n, getenv("CUDA_VISIBLE_DEVICES"), getenv("CUDA_DEVICE_ORDER"), sel ? sel : "all",
                          nvml_idx, cuda_idx, k, note, sizeof note);
}

jc_status jc__capgpu_select(jc__nvml *nvml, const char *sel, jc__capgpu *out, int max, int *count) {
    *count = 0;
    jc__capgpu *all = calloc(JC__CAP_MAX_GPUS, sizeof *all);
    if (!all) return jc__fail(JC_ERR_NO_MEMORY, "out of memory");
    int n = 0, k = 0, nvml_idx[JC_MAX_DEVICES], cuda_idx[JC_MAX_DEVICES];
    jc_status st = select_from(nvml, sel, all, &n, nvml_idx, cuda_idx, &k);
    for (int i = 0; st == JC_OK && i < k && *count < max; i++) {
        out[*count] = all[nvml_idx[i]];
        out[(*count)++].cuda_index = cuda_idx[i];
    }
    free(all);
    return st;
}

jc_status jc__capgpu_all(jc__nvml *nvml, jc__capgpu *out, int max, int *count) {
    *count = 0;
    jc__capgpu *all = calloc(JC__CAP_MAX_GPUS, sizeof *all);
    if (!all) return jc__fail(JC_ERR_NO_MEMORY, "out of memory");
    int n = 0, k = 0, nvml_idx[JC_MAX_DEVICES], cuda_idx[JC_MAX_DEVICES];
    jc_status st = select_from(nvml, "all", all, &n, nvml_idx, cuda_idx, &k);
    if (st != JC_OK && n > 0) {
        k = 0; /* which of them this process sees: an error here only means "none" */
        st = JC_OK;
    }
    for (int i = 0; st == JC_OK && i < n && *count < max; i++) {
        out[*count] = all[i];
        for (int m = 0; m < k; m++)
            if (nvml_idx[m] == i) out[*count].cuda_index = cuda_idx[m];
        (*count)++;
    }
    free(all);
    if (st == JC_OK) jc__clear_detail();
    return st;
}

jc_status jc__capgpu_usable(const jc__capgpu *g) {
    if (g->status == JC_OK) return JC_OK;
    char label[256];
    return jc__fail(g->status, "%s cannot be used: %s. Its limit can be neither read nor set (and its journal, if "
                    "any, is kept); the other GPUs are not affected", jc__capgpu_label(g, label, sizeof label), g->why);
}

const char *jc__capgpu_label(const jc__capgpu *g, char *buf, size_t len) {
    if (g->status != JC_OK && g->cuda_index >= 0)
        jc__fmt(buf, len, "GPU %d (NVML GPU %d, unidentified)", g->cuda_index, g->nvml_index);
    else if (g->status != JC_OK)
        jc__fmt(buf, len, "NVML GPU %d (unidentified; not visible to this process)", g->nvml_index);
    else if (g->cuda_index >= 0)
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

jc_status jc__capgpu_set(jc__nvml *nvml, const jc__capgpu *g, unsigned mw, unsigned *now_mw) {
    char label[256], a[32], b[32];
    if (now_mw) *now_mw = 0;
    jc__capgpu_label(g, label, sizeof label);
    if (!nvml->nvmlDeviceSetPowerManagementLimit)
        return jc__fail(JC_ERR_NOT_SUPPORTED, "this NVIDIA driver cannot set power limits (no "
                        "nvmlDeviceSetPowerManagementLimit)");
    nvmlReturn_t r = nvml->nvmlDeviceSetPowerManagementLimit(g->dev, mw);
    if (r == NVML_ERROR_NO_PERMISSION)
        return jc__fail(JC_ERR_NO_PERMISSION,
                        "not permitted to set the power limit of %s: that needs root (run as root or with sudo), "
                        "or CAP_SYS_ADMIN in a container (docker run --cap-add SYS_ADMIN)", label);
    char what[400];
    if (r != NVML_SUCCESS) {
        jc__fmt(what, sizeof what, "setting the power limit of %s to %s W", label, watts(a, sizeof a, mw));
        return jc__nvml_status(nvml, r, what);
    }
    /* Read back: a set that returned success but did not take is an error, never recorded as done. */
    unsigned now = 0;
    r = nvml->nvmlDeviceGetPowerManagementLimit ? nvml->nvmlDeviceGetPowerManagementLimit(g->dev, &now)
                                                : NVML_ERROR_FUNCTION_NOT_FOUND;
    if (r != NVML_SUCCESS) {
        jc__fmt(what, sizeof what, "reading back the power limit of %s after setting it to %s W (whether it took "
                "is unknown)", label, watts(a, sizeof a, mw));
        return jc__nvml_status(nvml, r, what);
    }
    if (now_mw) *now_mw = now;
    if (now + 999 < mw || now > mw + 999) /* within 1 W: a driver may round */
        return jc__fail(JC_ERR_NVML, "the power limit of %s did not take: asked %s W, the GPU reports %s W "
                        "(NVML returned success)", label, watts(a, sizeof a, mw), watts(b, sizeof b, now));
    return JC_OK;
}

unsigned jc__set_mw_after_failure(unsigned prev, unsigned before, unsigned now, unsigned mw) {
    if (!now) return mw;                /* unknown: assume it took, so that restore puts the saved limit back */
    return now == before ? prev : now; /* unchanged: as before; changed to something else: that */
}

jc_status jc__capgpu_probe(jc__nvml *nvml, jc__capgpu *g) {
    char label[256];
    jc__capgpu_read_limits(nvml, g);
    if (!g->limit_mw)
        return jc__fail(JC_ERR_NOT_SUPPORTED, "%s does not report its power limit: its cap cannot be managed",
                        jc__capgpu_label(g, label, sizeof label));
    jc_status st = jc__capgpu_set(nvml, g, g->limit_mw, NULL);
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
    char label[256], a[32], b[32], c[32];
    if (g->min_mw && g->max_mw && (j->original_mw < g->min_mw || j->original_mw > g->max_mw))
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "the journal of %s saved the limit %s W, outside the GPU's range %s "
                        "to %s W: not put back. Check the limit ('joulecap cap get'), then 'joulecap cap restore "
                        "--discard %s' and set the limit you want", jc__capgpu_label(g, label, sizeof label),
                        watts(a, sizeof a, j->original_mw), watts(b, sizeof b, g->min_mw),
                        watts(c, sizeof c, g->max_mw), j->uuid);
    jc_status st;
    if (j->set_mw != 0) {
        st = jc__capgpu_set(nvml, g, j->original_mw, NULL);
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
        st = jc__journal_write(dir, &p);
    } else {
        st = jc__journal_remove(dir, j->uuid);
    }
    if (st != JC_OK && *restored_mw) {
        /* The limit is back; only the bookkeeping failed (a read-only state directory): say both. */
        char detail[700];
        jc__fmt(detail, sizeof detail, "%s", jc_last_detail());
        return jc__fail(st, "put back %s W on %s, but %s; run 'joulecap cap restore' once the state directory is "
                        "writable (it puts the same limit back and tidies up)", watts(a, sizeof a, *restored_mw),
                        jc__capgpu_label(g, label, sizeof label), detail);
    }
    return st;
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
    out->status = g->status;
    if (g->status != JC_OK) {
        jc__fmt(out->error, sizeof out->error, "%s", g->why);
        return; /* no UUID: its journal cannot be found */
    }
    jc__journal j;
    int exists = 0;
    if (!dir) return;
    if (jc__journal_read(dir, g->id.uuid, &j, &exists) != JC_OK) {
        out->manager = JC_CAP_MANAGER_DAMAGED;
        jc__fmt(out->error, sizeof out->error, "%s", jc_last_detail());
        jc__cap_path(out->journal_path, sizeof out->journal_path, dir, g->id.uuid, ".journal");
        jc__clear_detail();
        return;
    }
    if (!exists) return;
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

