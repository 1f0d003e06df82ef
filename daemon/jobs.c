/* Per-job GPU energy: totals that clients report (ENERGY <job> <uuid> <mJ>, protocol 2), kept per job, user
 * and GPU, exported as joulecap_job_gpu_energy_joules_total{job,user,gpu} and saved in <state dir>/jobs.state
 * so that they never go back across restarts.
 *
 * The user is the connection's (SO_PEERCRED), never the client's word; the job name is the client's
 * ($JOULECAP_JOB, $SLURM_JOB_ID, $TORCHELASTIC_RUN_ID), so a user can only add to series labelled with their own
 * name.  A total not reported for JCD_JOB_TTL_S is dropped; the table is bounded (JCD_MAX_JOBS, and
 * JCD_MAX_JOBS_PER_UID for one user).
 *
 *   joulecapd-jobs 1
 *   job uid=1001 user=alice uuid=GPU-8f3c... nvml=0 mj=1234567 last=1764064769.123 name=train%2042
 *   crc32 1a2b3c4d */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jcd.h"

#define MAGIC "joulecapd-jobs 1"
#define FILE_NAME "jobs.state"
#define MJ_CAP (1ull << 62) /* totals saturate here, long before a u64 would wrap */

int jcd_jobs_init(jcd_jobs *t) {
    memset(t, 0, sizeof *t);
    t->v = calloc(JCD_MAX_JOBS, sizeof *t->v);
    if (!t->v) return -1;
    pthread_mutex_init(&t->lock, NULL);
    return 0;
}

void jcd_jobs_free(jcd_jobs *t) {
    if (!t->v) return;
    pthread_mutex_destroy(&t->lock);
    free(t->v);
    t->v = NULL;
}

int jcd_jobs_add(jcd_jobs *t, const char *job, unsigned uid, const char *user, const char *uuid, int nvml,
                 unsigned long long mj, double now, unsigned long long *total, char *why, size_t whylen) {
    pthread_mutex_lock(&t->lock);
    jcd_job *e = NULL;
    int mine = 0;
    for (int i = 0; i < t->n && !e; i++) {
        jcd_job *x = &t->v[i];
        mine += x->uid == uid;
        if (x->uid == uid && strcmp(x->uuid, uuid) == 0 && strcmp(x->job, job) == 0) e = x;
    }
    if (!e) {
        if (t->n >= JCD_MAX_JOBS || mine >= JCD_MAX_JOBS_PER_UID) {
            pthread_mutex_unlock(&t->lock);
            jc__fmt(why, whylen, "joulecapd keeps %s job totals already (%d of this user; a total is dropped %d h "
                    "after its last report)", t->n >= JCD_MAX_JOBS ? "as many" : "too many", mine,
                    JCD_JOB_TTL_S / 3600);
            return -1;
        }
        e = &t->v[t->n++];
        memset(e, 0, sizeof *e);
        jc__fmt(e->job, sizeof e->job, "%s", job);
        e->uid = uid;
        jc__fmt(e->uuid, sizeof e->uuid, "%s", uuid);
    }
    jc__fmt(e->user, sizeof e->user, "%s", user);
    e->nvml = nvml;
    e->mj = e->mj + mj > MJ_CAP ? MJ_CAP : e->mj + mj;
    e->last = now;
    t->dirty = 1;
    *total = e->mj;
    pthread_mutex_unlock(&t->lock);
    return 0;
}

int jcd_jobs_expire(jcd_jobs *t, double now, double ttl_s) {
    pthread_mutex_lock(&t->lock);
    int w = 0, dropped = 0;
    for (int i = 0; i < t->n; i++) {
        if (now - t->v[i].last > ttl_s) {
            dropped++;
            continue;
        }
        if (w != i) t->v[w] = t->v[i];
        w++;
    }
    t->n = w;
    if (dropped) t->dirty = 1;
    pthread_mutex_unlock(&t->lock);
    return dropped;
}

int jcd_jobs_copy(jcd_jobs *t, jcd_job **out) {
    pthread_mutex_lock(&t->lock);
    int n = t->n;
    *out = n ? malloc((size_t)n * sizeof **out) : NULL;
    if (n && !*out) n = 0;
    if (n) memcpy(*out, t->v, (size_t)n * sizeof **out);
    pthread_mutex_unlock(&t->lock);
    return n;
}

/* ------------------------------------------------------------------------------------------------------
 * The state file.
 * ---------------------------------------------------------------------------------------------------- */

int jcd_jobs_format(const jcd_job *v, int n, char **text, size_t *len) {
    size_t cap = 64 + (size_t)n * 900, used = 0;
    char *buf = malloc(cap);
    if (!buf) return -1;
    used = (size_t)snprintf(buf, cap, MAGIC "\n");
    for (int i = 0; i < n; i++) {
        const jcd_job *e = &v[i];
        used += (size_t)snprintf(buf + used, cap - used, "job");
        char last[48];
        snprintf(last, sizeof last, "%.3f", e->last > 0 && e->last < 1e11 ? e->last : 0.0);
        if (jc__wire_put_u64(buf, cap, &used, "uid", e->uid) || jc__wire_put(buf, cap, &used, "user", e->user) ||
            jc__wire_put(buf, cap, &used, "uuid", e->uuid) || jc__wire_put_i64(buf, cap, &used, "nvml", e->nvml) ||
            jc__wire_put_u64(buf, cap, &used, "mj", e->mj) || jc__wire_put(buf, cap, &used, "last", last) ||
            jc__wire_put(buf, cap, &used, "name", e->job) || used + 2 > cap) {
            free(buf);
            return -1;
        }
        buf[used++] = '\n';
    }
    used += (size_t)snprintf(buf + used, cap - used, "crc32 %08x\n", jcd_crc32(buf, used));
    *text = buf;
    *len = used;
    return 0;
}

static int printable(const char *s, size_t max) {
    size_t n = 0;
    for (; s[n]; n++)
        if ((unsigned char)s[n] < 0x20 || (unsigned char)s[n] > 0x7e || n >= max) return 0;
    return 1;
}

int jcd_jobs_parse(const char *text, size_t len, jcd_job *v, int max, int *n, char *why, size_t whylen) {
    *n = 0;
    size_t body;
    if (jcd_crc_check(text, len, &body, why, whylen) != 0) return -1;
    size_t pos = 0;
    int lineno = 0;
    while (pos < body) {
        size_t e = pos;
        while (e < body && text[e] != '\n') e++;
        size_t ln = e - pos;
        char buf[JC__WIRE_MAX_REPLY];
        lineno++;
        if (ln >= sizeof buf) {
            jc__fmt(why, whylen, "line %d too long", lineno);
            return -1;
        }
        memcpy(buf, text + pos, ln);
        buf[ln] = '\0';
        pos = e + 1;
        if (lineno == 1) {
            if (strcmp(buf, MAGIC) != 0) {
                jc__fmt(why, whylen, "not a joulecapd job file of version 1");
                return -1;
            }
            continue;
        }
        jc__wire_line l;
        if (jc__wire_split(buf, ln, &l, why, whylen) != 0) return -1;
        unsigned long long uid, mj;
        const char *user = jc__wire_get(&l, "user"), *uuid = jc__wire_get(&l, "uuid"), *nv = jc__wire_get(&l, "nvml");
        const char *last = jc__wire_get(&l, "last"), *name = jc__wire_get(&l, "name");
        if (strcmp(l.tok[0], "job") != 0 || jc__wire_get_u64(&l, "uid", &uid) || uid > 0xffffffffull ||
            jc__wire_get_u64(&l, "mj", &mj) || mj > MJ_CAP || !user || !uuid || !nv || !last || !name ||
            !jc__wire_uuid_ok(uuid) || !name[0] || !printable(name, JCD_JOB_MAX) || !printable(user, 63)) {
            jc__fmt(why, whylen, "line %d is not a valid job line", lineno);
            return -1;
        }
        char *te = NULL, *ne = NULL;
        double t = strtod(last, &te);
        long nvml = strtol(nv, &ne, 10);
        if (te == last || *te || !(t >= 0 && t < 1e11) || ne == nv || *ne || nvml < -1 || nvml > 100000) {
            jc__fmt(why, whylen, "line %d has a bad time or GPU index", lineno);
            return -1;
        }
        if (*n >= max) {
            jc__fmt(why, whylen, "more than %d jobs", max);
            return -1;
        }
        jcd_job *j = &v[(*n)++];
        memset(j, 0, sizeof *j);
        jc__fmt(j->job, sizeof j->job, "%s", name);
        j->uid = (unsigned)uid;
        jc__fmt(j->user, sizeof j->user, "%s", user);
        jc__fmt(j->uuid, sizeof j->uuid, "%s", uuid);
        j->nvml = (int)nvml;
        j->mj = mj;
        j->last = t;
    }
    if (lineno < 1) {
        jc__fmt(why, whylen, "no header line");
        return -1;
    }
    return 0;
}

int jcd_jobs_save(jcd_jobs *t, int dirfd, char *why, size_t whylen) {
    pthread_mutex_lock(&t->lock);
    if (!t->dirty) {
        pthread_mutex_unlock(&t->lock);
        return 0;
    }
    char *text;
    size_t len;
    int r = jcd_jobs_format(t->v, t->n, &text, &len);
    if (r == 0) t->dirty = 0;
    pthread_mutex_unlock(&t->lock);
    if (r != 0) {
        jc__fmt(why, whylen, "out of memory");
        return -1;
    }
    r = jcd_file_save(dirfd, FILE_NAME, text, len, why, whylen);
    free(text);
    if (r != 0) {
        pthread_mutex_lock(&t->lock);
        t->dirty = 1; /* tried again at the next round */
        pthread_mutex_unlock(&t->lock);
    }
    return r;
}

int jcd_jobs_load(jcd_jobs *t, int dirfd, char *why, size_t whylen) {
    size_t cap = 64 + (size_t)JCD_MAX_JOBS * 900;
    char *text = malloc(cap);
    if (!text) {
        jc__fmt(why, whylen, "out of memory");
        return -1;
    }
    size_t len;
    int r = jcd_file_load(dirfd, FILE_NAME, text, cap, &len, why, whylen);
    if (r == 0 && len == cap) {
        jc__fmt(why, whylen, "larger than %zu bytes", cap - 1);
        r = -1;
    }
    int n = 0;
    if (r == 0) r = jcd_jobs_parse(text, len, t->v, JCD_MAX_JOBS, &n, why, whylen);
    free(text);
    pthread_mutex_lock(&t->lock);
    t->n = r == 0 ? n : 0;
    pthread_mutex_unlock(&t->lock);
    return r; /* -2: there is none yet */
}
