/* Per-job energy through joulecapd (docs/daemon.md): the client side of ENERGY (protocol 2).  A process adds
 * the GPU energy of its windows to its job's totals on the node; the daemon names the user, the process names
 * the job. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/internal.h"
#include "client.h"
#include "wire.h"

#define JOB_MAX 128

jc_status jc_job_name(char *buf, size_t len) {
    static const char *const vars[] = {"JOULECAP_JOB", "SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"};
    if (!buf || len == 0) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_job_name: no buffer");
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (!v || !*v || (i == 2 && strcmp(v, "none") == 0)) continue;
        size_t n = 0;
        for (; v[n]; n++)
            if ((unsigned char)v[n] < 0x20 || (unsigned char)v[n] > 0x7e) break;
        if (v[n] || n > JOB_MAX)
            return jc__fail(JC_ERR_INVALID_ARGUMENT, "%s is not a job name: 1 to %d bytes of printable ASCII",
                            vars[i], JOB_MAX);
        if (n + 1 > len) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_job_name: buffer of %zu bytes too small", len);
        memcpy(buf, v, n + 1);
        return JC_OK;
    }
    return jc__fail(JC_ERR_NOT_FOUND, "no job name: set JOULECAP_JOB, or run under Slurm (SLURM_JOB_ID) or "
                    "torchrun (TORCHELASTIC_RUN_ID)");
}

jc_status jc_job_report(jc_context *ctx, const char *job, const jc_window_result *r) {
    if (!ctx || !r) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_job_report: NULL argument");
    char name[JOB_MAX + 1];
    if (!job) {
        jc_status st = jc_job_name(name, sizeof name);
        if (st != JC_OK) return st;
        job = name;
    }
    size_t jl = strlen(job);
    for (size_t i = 0; i < jl; i++)
        if ((unsigned char)job[i] < 0x20 || (unsigned char)job[i] > 0x7e) jl = 0;
    if (jl == 0 || jl > JOB_MAX)
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "job name '%.40s': 1 to %d bytes of printable ASCII", job, JOB_MAX);
    /* The GPUs' energies, in whole mJ. */
    char uuid[JC_MAX_DEVICES][96];
    unsigned long long mj[JC_MAX_DEVICES];
    int n = 0, nd = jc_device_count(ctx);
    for (int d = 0; d < r->device_count && d < nd && d < JC_MAX_DEVICES; d++) {
        jc_device_info info;
        double e = r->energy_j[d];
        if (!isfinite(e) || e < 0 || e > 1e10 || jc_device_info_get(ctx, d, &info) != JC_OK ||
            info.kind != JC_DEVICE_GPU || !jc__wire_uuid_ok(info.uuid))
            continue;
        jc__fmt(uuid[n], sizeof uuid[n], "%s", info.uuid);
        mj[n++] = (unsigned long long)llround(e * 1000.0);
    }
    if (n == 0) {
        jc__clear_detail();
        return JC_OK;
    }
    char path[512];
    if (!jc__capd_route(path, sizeof path))
        return jc__fail(JC_ERR_UNAVAILABLE, "no joulecapd on this node (no socket %s): job energy is kept by "
                        "joulecapd --metrics", path);
    jc__capd_conn *c;
    unsigned proto = 0;
    jc_status st = jc__capd_connect(&c, &proto);
    if (st != JC_OK) return st;
    if (proto < 2) {
        st = jc__fail(JC_ERR_NOT_SUPPORTED, "joulecapd (%s) speaks protocol %u: too old for job energy (protocol "
                      "2); update it", jc__capd_path(c), proto);
        jc__capd_disconnect(c);
        return st;
    }
    /* The job name as one token: percent-encoded like a reply value. */
    char enc[3 * JOB_MAX + 8];
    size_t used = 0;
    if (jc__wire_put(enc, sizeof enc, &used, "j", job) != 0) {
        jc__capd_disconnect(c);
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "job name too long");
    }
    for (int i = 0; st == JC_OK && i < n; i++) {
        char req[JC__WIRE_MAX_REQUEST], fin[JC__WIRE_MAX_REPLY];
        jc__wire_line ok;
        snprintf(req, sizeof req, "ENERGY %s %s %llu", enc + 3, uuid[i], mj[i]);
        st = jc__capd_request(c, req, fin, &ok);
    }
    jc__capd_disconnect(c);
    if (st == JC_OK) jc__clear_detail();
    return st;
}
