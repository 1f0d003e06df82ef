/* CPU utilisation from the aggregate "cpu" line of /proc/stat, as the busy share of the time accounted
 * between two reads.  Never sleeps: the interval is whatever passed between the caller's calls. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"

/* "cpu  user nice system idle iowait irq softirq steal guest guest_nice" (USER_HZ ticks, all CPUs).
 * guest and guest_nice are already counted in user and nice, so they are left out of the total.
 * busy = total - idle - iowait: iowait is time with nothing to run.  steal (a VM's vCPU wanting to run while
 * the host runs something else) counts as busy, as in top's "100 - idle - wa". */
static jc_status snapshot(const char *path, uint64_t *busy, uint64_t *total, char *why, size_t whylen) {
    char buf[1024], err[600];
    /* Only the first line matters; read_text stops at the buffer's size, so a huge /proc/stat costs 1 KiB. */
    jc_status st = jc__read_text(path, buf, sizeof buf, err, sizeof err);
    if (st == JC_ERR_NOT_FOUND)
        return jc__fail_why(JC_ERR_UNAVAILABLE, why, whylen, "no CPU utilisation: %s does not exist", path);
    if (st != JC_OK) return jc__fail_why(st, why, whylen, "cannot read CPU utilisation: %s", err);
    return jc__procstat_parse(buf, path, busy, total, why, whylen);
}

jc_status jc__procstat_parse(const char *buf, const char *path, uint64_t *busy, uint64_t *total, char *why,
                             size_t whylen) {
    if (strncmp(buf, "cpu ", 4) != 0)
        return jc__fail_why(JC_ERR_IO, why, whylen, "%s: first line does not start with \"cpu \"", path);
    uint64_t v[8] = {0};
    const char *p = buf + 4;
    int fields = 0;
    for (; fields < 8; fields++) {
        while (*p == ' ') p++;
        if (*p < '0' || *p > '9') break;
        char *end = NULL;
        v[fields] = strtoull(p, &end, 10);
        p = end;
    }
    if (fields < 4) return jc__fail_why(JC_ERR_IO, why, whylen, "%s: \"cpu\" line has %d fields, want >= 4", path, fields);
    uint64_t t = 0;
    for (int i = 0; i < 8; i++) t += v[i]; /* user nice system idle iowait irq softirq steal */
    *total = t;
    *busy = t - v[3] - v[4];
    return JC_OK;
}

jc_status jc__procstat_open(const char *proc_root, jc__procstat *ps, char *why, size_t whylen) {
    if (!ps) return jc__fail_why(JC_ERR_INVALID_ARGUMENT, why, whylen, "jc__procstat_open: ps is NULL");
    memset(ps, 0, sizeof *ps);
    if (!proc_root) proc_root = jc__proc_root();
    int n = snprintf(ps->path, sizeof ps->path, "%s/stat", proc_root);
    if (n < 0 || (size_t)n >= sizeof ps->path)
        return jc__fail_why(JC_ERR_INVALID_ARGUMENT, why, whylen, "proc root path too long: %s", proc_root);
    jc_status st = snapshot(ps->path, &ps->prev_busy, &ps->prev_total, why, whylen);
    if (st != JC_OK) return st;
    ps->have_prev = 1;
    return JC_OK;
}

jc_status jc__procstat_read(jc__procstat *ps, double *util_pct, char *why, size_t whylen) {
    if (!ps || !util_pct || !ps->have_prev)
        return jc__fail_why(JC_ERR_INVALID_ARGUMENT, why, whylen, "jc__procstat_read: not opened or NULL argument");
    uint64_t busy, total;
    jc_status st = snapshot(ps->path, &busy, &total, why, whylen);
    if (st != JC_OK) return st;
    return jc__procstat_update(ps, busy, total, util_pct, why, whylen);
}

jc_status jc__procstat_update(jc__procstat *ps, uint64_t busy, uint64_t total, double *util_pct, char *why,
                              size_t whylen) {
    if (total <= ps->prev_total) {
        /* No tick accounted since the last read (reads < 1/USER_HZ apart): keep the old snapshot, so the
         * next call covers the longer interval, and say so rather than invent 0 %. */
        if (total < ps->prev_total) { /* counters went backwards (cannot happen on Linux): resynchronise */
            ps->prev_total = total;
            ps->prev_busy = busy;
        }
        return jc__fail_why(JC_ERR_TIMEOUT, why, whylen,
                       "no CPU time accounted in %s since the previous read (reads closer than one tick)",
                       ps->path);
    }
    uint64_t dt = total - ps->prev_total;
    /* iowait may decrease on NO_HZ kernels, so busy can move oddly: clamp to [0, dt]. */
    double db = busy >= ps->prev_busy ? (double)(busy - ps->prev_busy) : 0.0;
    if (db > (double)dt) db = (double)dt;
    ps->prev_total = total;
    ps->prev_busy = busy;
    *util_pct = 100.0 * db / (double)dt;
    if (*util_pct > 100.0) *util_pct = 100.0; /* db == dt can round to 100.00000000000001 */
    return JC_OK;
}
