/* GPU selection as CUDA numbers GPUs: CUDA_DEVICE_ORDER gives the base order, CUDA_VISIBLE_DEVICES picks and
 * renumbers, and the caller's selection picks from what is visible.  NVML always enumerates in PCI bus order,
 * so the mapping goes through UUIDs and PCI bus ids, never through raw indices. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "nvml.h"

static void trim(char *s) {
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
    size_t i = 0;
    while (s[i] && isspace((unsigned char)s[i])) i++;
    if (i) memmove(s, s + i, n - i + 1);
}

static int parse_index(const char *s, int *out) {
    if (!*s) return 0;
    for (const char *p = s; *p; p++)
        if (!isdigit((unsigned char)*p)) return 0;
    long v = strtol(s, NULL, 10);
    if (v > 1000000) return 0;
    *out = (int)v;
    return 1;
}

/* Index into order[0..n) of the GPU whose UUID starts with tok ("GPU-" optional), -1 none, -2 ambiguous. */
static int match_uuid(const jc__gpu_ident *gpus, const int *order, int n, const char *tok) {
    char want[100];
    if (strncasecmp(tok, "GPU-", 4) == 0)
        jc__fmt(want, sizeof want, "%s", tok);
    else
        jc__fmt(want, sizeof want, "GPU-%s", tok);
    size_t len = strlen(want);
    int found = -1;
    for (int i = 0; i < n; i++) {
        if (strncasecmp(gpus[order[i]].uuid, want, len) == 0) {
            if (found >= 0) return -2;
            found = i;
        }
    }
    return found;
}

static void list_gpus(char *buf, size_t len, const jc__gpu_ident *gpus, const int *order, int n) {
    size_t used = 0;
    buf[0] = '\0';
    if (n == 0) {
        jc__fmt(buf, len, "no GPU is visible");
        return;
    }
    for (int i = 0; i < n && used + 1 < len; i++) {
        int w = snprintf(buf + used, len - used, "%s%d: %s %s", i ? "; " : "", i, gpus[order[i]].name,
                         gpus[order[i]].uuid);
        if (w < 0) break;
        used += (size_t)w;
    }
}

static int cmp_pci(const jc__gpu_ident *gpus, int a, int b) {
    int c = strcasecmp(gpus[a].pci_bus_id, gpus[b].pci_bus_id);
    return c ? c : (a - b);
}

jc_status jc__gpu_select(const jc__gpu_ident *gpus, int n, const char *cuda_visible, const char *order_env,
                         const char *selection, int *nvml_idx, int *cuda_idx, int *count, char *note,
                         size_t notelen) {
    *count = 0;
    if (note && notelen) note[0] = '\0';
    if (n < 0 || n > JC_MAX_DEVICES - 1) return jc__fail(JC_ERR_INVALID_ARGUMENT, "too many GPUs (%d)", n);
    int base[JC_MAX_DEVICES];
    for (int i = 0; i < n; i++) base[i] = i;
    /* Base order: PCI bus order for PCI_BUS_ID; CUDA's default FASTEST_FIRST is approximated by PCI order
     * too (exact when all GPUs are the same model, which we check). */
    /* A GPU NVML could not identify (no bus id) keeps its NVML place; the others are sorted around it. */
    int known[JC_MAX_DEVICES], nk = 0;
    for (int i = 0; i < n; i++)
        if (gpus[i].pci_bus_id[0]) known[nk++] = i;
    for (int i = 1; i < nk; i++) {
        int v = known[i], j = i;
        while (j > 0 && cmp_pci(gpus, known[j - 1], v) > 0) {
            known[j] = known[j - 1];
            j--;
        }
        known[j] = v;
    }
    for (int i = 0, k = 0; i < n; i++)
        if (gpus[i].pci_bus_id[0]) base[i] = known[k++];
    int pci_order = order_env && strcmp(order_env, "PCI_BUS_ID") == 0;
    if (!pci_order) {
        for (int i = 1; i < n; i++) {
            if (gpus[base[i]].pci_bus_id[0] && strcmp(gpus[base[i]].name, gpus[base[0]].name) != 0) {
                jc__fmt(note, notelen, "GPUs of different models and CUDA_DEVICE_ORDER is not PCI_BUS_ID: "
                        "CUDA numbers the fastest first, joulecap assumes PCI order; set "
                        "CUDA_DEVICE_ORDER=PCI_BUS_ID or select GPUs by UUID");
                break;
            }
        }
    }
    /* CUDA_VISIBLE_DEVICES: CUDA stops at the first invalid entry; an empty value hides every GPU. */
    int visible[JC_MAX_DEVICES];
    int nvis = 0;
    if (!cuda_visible) {
        for (int i = 0; i < n; i++) visible[nvis++] = base[i];
    } else {
        char buf[2048];
        jc__fmt(buf, sizeof buf, "%s", cuda_visible);
        char *save = NULL;
        for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            trim(tok);
            int idx, pos = -1;
            if (strncasecmp(tok, "MIG-", 4) == 0)
                return jc__fail(JC_ERR_NOT_SUPPORTED,
                                "CUDA_VISIBLE_DEVICES names a MIG instance (%s): joulecap measures whole GPUs; "
                                "NVML reports energy per physical GPU, not per MIG slice. Use the parent GPU's "
                                "UUID or index",
                                tok);
            if (parse_index(tok, &idx)) {
                if (idx < n) pos = idx;
            } else if (*tok) {
                int m = match_uuid(gpus, base, n, tok);
                if (m >= 0) pos = m;
            }
            int dup = 0;
            for (int k = 0; pos >= 0 && k < nvis; k++)
                if (visible[k] == base[pos]) dup = 1;
            if (pos < 0 || dup) {
                char more[160];
                jc__fmt(more, sizeof more, "%sCUDA_VISIBLE_DEVICES entry '%s' is not a GPU here: CUDA "
                        "ignores it and every entry after it", (note && note[0]) ? "; " : "", tok);
                if (note) strncat(note, more, notelen - strlen(note) - 1);
                break;
            }
            visible[nvis++] = base[pos];
        }
    }
    char names[1024];
    list_gpus(names, sizeof names, gpus, visible, nvis);
    if (!selection || !*selection || strcasecmp(selection, "all") == 0) {
        for (int i = 0; i < nvis; i++) {
            nvml_idx[i] = visible[i];
            cuda_idx[i] = i;
        }
        *count = nvis;
        return JC_OK;
    }
    if (strcasecmp(selection, "none") == 0) return JC_OK;
    char buf[2048];
    jc__fmt(buf, sizeof buf, "%s", selection);
    char *save = NULL;
    int k = 0;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        trim(tok);
        int idx, pos = -1;
        if (parse_index(tok, &idx)) {
            if (idx >= nvis)
                return jc__fail(JC_ERR_NOT_FOUND, "GPU %d does not exist; the GPUs are: %s", idx, names);
            pos = idx;
        } else {
            if (strncasecmp(tok, "MIG-", 4) == 0)
                return jc__fail(JC_ERR_NOT_SUPPORTED,
                                "'%s' is a MIG instance: joulecap measures whole GPUs; use the parent GPU", tok);
            if (!*tok || (tok[0] == '-'))
                return jc__fail(JC_ERR_INVALID_ARGUMENT,
                                "bad GPU selection '%s': use 'all', 'none', CUDA indices like 0,1, or UUIDs",
                                selection);
            pos = match_uuid(gpus, visible, nvis, tok);
            if (pos == -2)
                return jc__fail(JC_ERR_INVALID_ARGUMENT, "GPU UUID prefix '%s' matches several GPUs: %s", tok,
                                names);
            if (pos < 0)
                return jc__fail(JC_ERR_NOT_FOUND, "no visible GPU has UUID '%s'; the GPUs are: %s", tok, names);
        }
        for (int j = 0; j < k; j++)
            if (cuda_idx[j] == pos)
                return jc__fail(JC_ERR_INVALID_ARGUMENT, "GPU %d is selected twice in '%s'", pos, selection);
        nvml_idx[k] = visible[pos];
        cuda_idx[k] = pos;
        k++;
    }
    if (k == 0)
        return jc__fail(JC_ERR_INVALID_ARGUMENT,
                        "empty GPU selection '%s': use 'all', 'none', CUDA indices like 0,1, or UUIDs", selection);
    *count = k;
    return JC_OK;
}
