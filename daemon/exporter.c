/* joulecapd --metrics: the node's sampler and counters that never go back.
 *
 * The daemon opens one jc_context over every GPU and the CPU, as any program using the library would; its
 * reader threads do every NVML and RAPL read, and a scrape only copies what they have (no NVML call).
 *
 * Energy counters: exported = offset + the context's energy since it opened, at the scrape's instant minus
 * JCD_ENERGY_LAG_S (interpolated between the sampler's counter reads, so consecutive scrapes see a smooth
 * total rather than the ~1 s steps of the reads), and never below the last value exported.  The offset makes
 * the total continue across joulecapd restarts: every JCD_SAVE_S the housekeeping thread writes, per device,
 * the highest total exported so far (the floor) and, for a GPU, a pair (total, raw NVML counter) taken at
 * one instant; at the next start, the new total begins at the floor, or at pair + what the raw counter moved
 * since, when the node did not reboot, the counter did not go back (driver reload) and the difference is a
 * plausible energy for the time that passed.  So energy used while joulecapd was down is counted where the
 * GPU's own counter can tell it.  The library already stitches GPU counter resets while it runs.
 *
 *   joulecapd-counters 1
 *   boot_id 5c1d...
 *   device key=GPU-8f3c... floor_j=12345.678 pair_j=12300.1 pair_mj=123456789 pair_boot_ns=98765432100
 *   device key=cpu floor_j=2345.6
 *   crc32 1a2b3c4d
 *
 * Threads: the main loop publishes leases and limits (jcd_exporter_publish), libmicrohttpd's thread takes
 * snapshots, the housekeeping thread saves; e->lock guards what they share. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "jcd.h"
#include "sources/nvml.h"

#define COUNTERS_FILE "counters.state"
#define MAGIC "joulecapd-counters 1"
#define MAX_SAVED 256
#define PENDING_GIVE_UP_NS (10ull * 1000000000ull)
#define JC__HEALTH_LOG 32 /* the library keeps the last 32 changes of each device */
#define JCD_WARMUP_S 30.0

/* One device's counter. */
typedef struct counter {
    char key[96];          /* UUID, or "cpu" */
    char label[160];       /* for the log */
    int dev;               /* device index in the context */
    double max_w;          /* what the device can draw: bounds the energy counted across a restart */
    nvmlDevice_t h;        /* its own NVML handle (raw counter reads for the pairs); NULL: none */
    int ready;             /* offset known: exported */
    double offset_j;
    double last_j;         /* highest value exported (at least the saved floor) */
    double durable_j;      /* the floor last written to disk: nothing above it is exported */
    int have_saved;        /* from the previous run */
    double saved_floor_j;
    int saved_pair;
    double saved_pair_j;
    unsigned long long saved_pair_mj;
    long long saved_pair_boot_ns;
    int pair;              /* this run's latest pair */
    double pair_j;
    unsigned long long pair_mj;
    long long pair_boot_ns;
    size_t events_seen;    /* health changes logged so far */
    /* After a restart from a pair: totals before this run's first instant (start_t_ns) are interpolated
     * between the saved pair and the start (boot-time ns), so that the lagged export runs on smoothly. */
    int bridge;
    uint64_t start_t_ns;
    long long bridge_b0, bridge_b1;
    double bridge_j0, bridge_j1;
    int pending;           /* a raw read whose instant the sampler has not covered yet */
    uint64_t pend_t_ns;
    unsigned long long pend_mj;
    long long pend_boot_ns;
} counter;

/* A line of counters.state for a device the context does not have (kept as it was). */
typedef struct saved_line {
    char key[96];
    char text[sizeof ((jcd_saved_counter *)0)->line];
} saved_line;

typedef struct pub_gpu {
    char uuid[96];
    unsigned limit_mw, enforced_mw;
} pub_gpu;

struct jcd_exporter {
    pthread_mutex_t lock;
    pthread_cond_t cv;
    jc_context *ctx;
    int ndev;
    counter ctr[JC_MAX_DEVICES];
    saved_line other[MAX_SAVED];
    int nother;
    char boot_id[64];
    long long boot_minus_mono; /* CLOCK_BOOTTIME - CLOCK_MONOTONIC, ns */
    char hostname[256];
    int state_fd;
    char state_dir[512];
    jcd_jobs jobs;
    jc__nvml *nvml;
    /* published by the main loop */
    pub_gpu gpus[JCD_MAX_GPUS];
    int ngpus;
    jcd_mlease leases[2 * JCD_MAX_GPUS];
    int nleases;
    double next_refresh;
    /* warm-up: a window keeps the counter read at every step for the first JCD_WARMUP_S */
    jc_window warmup;
    int warming;
    uint64_t warmup_end_ns;
    /* housekeeping */
    pthread_t thread;
    int thread_started, stopping, thread_done;
    int save_failed; /* logged once until a save works again */
    uint64_t last_save_ns;
};

static long long boot_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void read_boot_id(char *buf, size_t len) {
    buf[0] = '\0';
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
    if (!f) return;
    if (fgets(buf, (int)len, f)) buf[strcspn(buf, "\n")] = '\0';
    fclose(f);
    if (!jc__wire_uuid_ok(buf)) buf[0] = '\0';
}

jcd_jobs *jcd_exporter_jobs(jcd_exporter *e) { return &e->jobs; }

/* ------------------------------------------------------------------------------------------------------
 * counters.state
 * ---------------------------------------------------------------------------------------------------- */

static int put_double(char *buf, size_t len, size_t *used, const char *key, double v) {
    char t[40];
    snprintf(t, sizeof t, "%.17g", v);
    return jc__wire_put(buf, len, used, key, t);
}

static int get_double(jc__wire_line *l, const char *key, double *v) {
    const char *s = jc__wire_get(l, key);
    if (!s) return -1;
    char *end = NULL;
    *v = strtod(s, &end);
    return end == s || *end || !isfinite(*v) || *v < 0 || *v > 1e18 ? -1 : 0;
}

/* The line of one counter (lock held). */
static int counter_line(const counter *c, double floor_j, char *buf, size_t len) {
    size_t used = (size_t)snprintf(buf, len, "device");
    if (jc__wire_put(buf, len, &used, "key", c->key) || put_double(buf, len, &used, "floor_j", floor_j)) return -1;
    int pair = c->pair ? 1 : c->saved_pair && !c->ready ? 2 : 0;
    if (pair) {
        double pj = pair == 1 ? c->pair_j : c->saved_pair_j;
        unsigned long long pm = pair == 1 ? c->pair_mj : c->saved_pair_mj;
        long long pb = pair == 1 ? c->pair_boot_ns : c->saved_pair_boot_ns;
        if (put_double(buf, len, &used, "pair_j", pj) || jc__wire_put_u64(buf, len, &used, "pair_mj", pm) ||
            jc__wire_put_i64(buf, len, &used, "pair_boot_ns", pb))
            return -1;
    }
    return (int)used;
}

static double latest_energy(jcd_exporter *e, int dev) {
    jc_reading r;
    if (jc_reading_get(e->ctx, dev, &r) != JC_OK || !isfinite(r.energy_j)) return NAN;
    return r.energy_j;
}

/* The total of c at the instant t (jc_now_ns clock), e_j being the context's energy at t (NAN: unknown);
 * NAN when unknown (lock held). */
static double total_at(const jcd_exporter *e, const counter *c, uint64_t t, double e_j) {
    if (c->bridge && t < c->start_t_ns) {
        double span = (double)(c->bridge_b1 - c->bridge_b0);
        double f = span > 0 ? ((double)((long long)t + e->boot_minus_mono - c->bridge_b0)) / span : 1.0;
        f = f < 0 ? 0 : f > 1 ? 1 : f;
        return c->bridge_j0 + f * (c->bridge_j1 - c->bridge_j0);
    }
    if (t <= jc_epoch_ns(e->ctx)) return c->offset_j;
    return isfinite(e_j) ? c->offset_j + e_j : NAN;
}

/* Writes counters.state.  A periodic save writes, per device, the total the scrapes will reach by the next
 * save (they lag JCD_ENERGY_LAG_S, saves come every JCD_SAVE_S), and the scrapes never exceed it until then: no
 * restart starts below a value served.  The last save (final) writes what a scrape would serve now, so that a
 * clean restart continues exactly from there. */
static int save_counters(jcd_exporter *e, int final, char *why, size_t whylen) {
    double latest[JC_MAX_DEVICES], ahead[JC_MAX_DEVICES], floors[JC_MAX_DEVICES];
    uint64_t now = jc_now_ns();
    uint64_t back = (uint64_t)(((final ? JCD_ENERGY_LAG_S : JCD_ENERGY_LAG_S - JCD_SAVE_S - 0.5)) * 1e9);
    uint64_t t = now > back ? now - back : 0;
    for (int i = 0; i < JC_MAX_DEVICES; i++) ahead[i] = NAN;
    if (t > jc_epoch_ns(e->ctx)) jc_energy_at(e->ctx, &t, 1, 0, ahead);
    for (int i = 0; i < e->ndev; i++) latest[i] = latest_energy(e, e->ctr[i].dev);
    size_t cap = 256 + (size_t)(e->ndev + e->nother) * 700, used = 0;
    char *text = malloc(cap);
    if (!text) {
        jc__fmt(why, whylen, "out of memory");
        return -1;
    }
    pthread_mutex_lock(&e->lock);
    used = (size_t)snprintf(text, cap, MAGIC "\nboot_id %s\n", e->boot_id[0] ? e->boot_id : "unknown");
    for (int i = 0; i < e->ndev; i++) {
        counter *c = &e->ctr[i];
        floors[i] = 0;
        if (!c->key[0]) continue;
        double floor_j = c->have_saved ? c->saved_floor_j : 0;
        if (c->ready) {
            floor_j = c->last_j;
            double x = total_at(e, c, t, ahead[i]);
            if (!isfinite(x) && isfinite(latest[i])) x = c->offset_j + latest[i];
            if (isfinite(x) && x > floor_j) floor_j = x;
        }
        floors[i] = floor_j;
        int n = counter_line(c, floor_j, text + used, cap - used - 1);
        if (n < 0) continue;
        used += (size_t)n;
        text[used++] = '\n';
    }
    for (int i = 0; i < e->nother; i++) used += (size_t)snprintf(text + used, cap - used, "%s\n", e->other[i].text);
    pthread_mutex_unlock(&e->lock);
    used += (size_t)snprintf(text + used, cap - used, "crc32 %08x\n", jcd_crc32(text, used));
    int r = jcd_file_save(e->state_fd, COUNTERS_FILE, text, used, why, whylen);
    free(text);
    if (r == 0) {
        pthread_mutex_lock(&e->lock);
        for (int i = 0; i < e->ndev; i++)
            if (e->ctr[i].key[0] && floors[i] > e->ctr[i].durable_j) e->ctr[i].durable_j = floors[i];
        pthread_mutex_unlock(&e->lock);
    }
    return r;
}

int jcd_counters_parse(const char *text, size_t len, char *boot_id, size_t boot_len, jcd_saved_counter *v, int max,
                       int *n, char *why, size_t whylen) {
    *n = 0;
    if (boot_len) boot_id[0] = '\0';
    size_t body = 0, pos = 0;
    if (jcd_crc_check(text, len, &body, why, whylen) != 0) return -1;
    int lineno = 0;
    while (pos < body) {
        size_t end = pos;
        while (end < body && text[end] != '\n') end++;
        char line[sizeof v->line];
        size_t ln = end - pos;
        lineno++;
        if (ln >= sizeof line) {
            jc__fmt(why, whylen, "line %d too long", lineno);
            return -1;
        }
        memcpy(line, text + pos, ln);
        line[ln] = '\0';
        pos = end + 1;
        if (lineno == 1) {
            if (strcmp(line, MAGIC) != 0) {
                jc__fmt(why, whylen, "not a joulecapd counters file of version 1");
                return -1;
            }
            continue;
        }
        if (lineno == 2) {
            const char *b = line + 8;
            if (strncmp(line, "boot_id ", 8) != 0 || (strcmp(b, "unknown") != 0 && !jc__wire_uuid_ok(b))) {
                jc__fmt(why, whylen, "line 2 is not 'boot_id ID'");
                return -1;
            }
            if (boot_len) jc__fmt(boot_id, boot_len, "%s", strcmp(b, "unknown") == 0 ? "" : b);
            continue;
        }
        if (*n >= max) {
            jc__fmt(why, whylen, "more than %d devices", max);
            return -1;
        }
        jcd_saved_counter *c = &v[*n];
        memset(c, 0, sizeof *c);
        memcpy(c->line, line, ln + 1);
        jc__wire_line l;
        const char *key;
        unsigned long long pb = 0;
        if (jc__wire_split(line, ln, &l, why, whylen) != 0 || strcmp(l.tok[0], "device") != 0 ||
            !(key = jc__wire_get(&l, "key")) || !key[0] || strlen(key) >= sizeof c->key ||
            (strcmp(key, "cpu") != 0 && !jc__wire_uuid_ok(key)) || get_double(&l, "floor_j", &c->floor_j)) {
            jc__fmt(why, whylen, "line %d is not a valid device line", lineno);
            return -1;
        }
        jc__fmt(c->key, sizeof c->key, "%s", key);
        c->pair = jc__wire_get(&l, "pair_j") != NULL;
        if (c->pair && (get_double(&l, "pair_j", &c->pair_j) || jc__wire_get_u64(&l, "pair_mj", &c->pair_mj) ||
                        jc__wire_get_u64(&l, "pair_boot_ns", &pb) || pb > (1ull << 62))) {
            jc__fmt(why, whylen, "line %d has a bad pair", lineno);
            return -1;
        }
        c->pair_boot_ns = (long long)pb;
        for (int k = 0; k < *n; k++)
            if (strcmp(v[k].key, c->key) == 0) {
                jc__fmt(why, whylen, "line %d: %s twice", lineno, c->key);
                return -1;
            }
        (*n)++;
    }
    if (lineno < 2) {
        jc__fmt(why, whylen, "no boot_id line");
        return -1;
    }
    return 0;
}

/* Reads counters.state into the counters (matched by key) and e->other.  A damaged file is set aside. */
static void load_counters(jcd_exporter *e) {
    size_t cap = 256 + MAX_SAVED * 700 + 1, len = 0;
    char *text = malloc(cap);
    jcd_saved_counter *v = calloc(MAX_SAVED, sizeof *v);
    if (!text || !v) {
        free(text);
        free(v);
        jcd_log("metrics: out of memory reading the saved counters: they start at 0");
        return;
    }
    char why[400], boot[64];
    int n = 0, r = jcd_file_load(e->state_fd, COUNTERS_FILE, text, cap, &len, why, sizeof why);
    if (r == -2) {
        jcd_log("metrics: no saved counters in %s: energy counters start at 0", e->state_dir);
    } else {
        if (r == 0 && len == cap) {
            jc__fmt(why, sizeof why, "larger than %zu bytes", cap - 1);
            r = -1;
        }
        if (r == 0) r = jcd_counters_parse(text, len, boot, sizeof boot, v, MAX_SAVED, &n, why, sizeof why);
        if (r != 0) {
            char aside[128];
            jc__fmt(aside, sizeof aside, COUNTERS_FILE ".bad-%lld", (long long)time(NULL));
            renameat(e->state_fd, COUNTERS_FILE, e->state_fd, aside);
            jcd_log("metrics: %s/%s is damaged (%s): set aside as %s; energy counters start at 0 (Prometheus sees "
                    "a counter reset)", e->state_dir, COUNTERS_FILE, why, aside);
            n = 0;
        }
    }
    for (int k = 0; k < n; k++) {
        counter *c = NULL;
        for (int i = 0; i < e->ndev && !c; i++)
            if (strcmp(e->ctr[i].key, v[k].key) == 0) c = &e->ctr[i];
        if (!c) { /* a device not here now: its line is kept as it was */
            jc__fmt(e->other[e->nother].key, sizeof e->other[0].key, "%s", v[k].key);
            jc__fmt(e->other[e->nother++].text, sizeof e->other[0].text, "%s", v[k].line);
            continue;
        }
        c->have_saved = 1;
        c->saved_floor_j = c->last_j = c->durable_j = v[k].floor_j;
        c->saved_pair = v[k].pair && boot[0] && strcmp(boot, e->boot_id) == 0;
        c->saved_pair_j = v[k].pair_j;
        c->saved_pair_mj = v[k].pair_mj;
        c->saved_pair_boot_ns = v[k].pair_boot_ns;
    }
    free(text);
    free(v);
}

/* ------------------------------------------------------------------------------------------------------
 * Start of a counter, pairs, housekeeping.
 * ---------------------------------------------------------------------------------------------------- */

/* Sets the offset of c (lock held).  e_j: the context's energy at the instant of the raw read mj (NAN: no raw
 * read). */
static void counter_start(counter *c, double e_j, unsigned long long mj, long long bns, uint64_t t) {
    double floor_j = c->have_saved ? c->saved_floor_j : 0;
    c->ready = 1;
    c->last_j = c->durable_j = floor_j;
    if (!c->have_saved) {
        c->offset_j = 0;
        jcd_log("metrics: %s: energy counter starts at 0 (nothing saved for it)", c->label);
        return;
    }
    if (c->saved_pair && isfinite(e_j) && mj >= c->saved_pair_mj && bns >= c->saved_pair_boot_ns) {
        double down_j = (double)(mj - c->saved_pair_mj) / 1000.0;
        double dt = (double)(bns - c->saved_pair_boot_ns) * 1e-9;
        if (down_j <= (c->max_w * 1.5 + 50.0) * dt + 100.0) {
            double total = c->saved_pair_j + down_j;
            if (total < floor_j) total = floor_j;
            c->offset_j = total - e_j;
            c->bridge = 1;
            c->start_t_ns = t;
            c->bridge_b0 = c->saved_pair_boot_ns;
            c->bridge_j0 = c->saved_pair_j;
            c->bridge_b1 = bns;
            c->bridge_j1 = total;
            jcd_log("metrics: %s: energy counter continues from %.3f J: the saved %.3f J plus %.3f J that the "
                    "GPU's counter counted in the %.1f s since", c->label, total, c->saved_pair_j, down_j, dt);
            return;
        }
        jcd_log("metrics: %s: the GPU's counter moved %.0f J in %.1f s since the last save, more than it can draw: "
                "not counted", c->label, down_j, dt);
    } else if (c->saved_pair && isfinite(e_j)) {
        jcd_log("metrics: %s: the GPU's counter went back since the last save (a driver reload or a reset)",
                c->label);
    }
    c->offset_j = floor_j;
    jcd_log("metrics: %s: energy counter continues from the saved %.3f J (the time joulecapd was down is not "
            "counted)", c->label, floor_j);
}

/* Health changes of the devices since the last round go to the log, with their reasons (the metric
 * joulecap_device_up carries only the state). */
static void log_health(jcd_exporter *e) {
    for (int i = 0; i < e->ndev; i++) {
        counter *c = &e->ctr[i];
        jc_health_event ev[JC__HEALTH_LOG];
        size_t total = 0;
        if (jc_device_health_get(e->ctx, i, ev, JC__HEALTH_LOG, &total) != JC_OK || total <= c->events_seen) continue;
        size_t kept = total < JC__HEALTH_LOG ? total : JC__HEALTH_LOG;
        size_t first = total - kept; /* the index of ev[0] among all changes */
        for (size_t k = c->events_seen > first ? c->events_seen - first : 0; k < kept; k++) {
            jc_device_info info;
            char who[160];
            if (jc_device_info_get(e->ctx, i, &info) == JC_OK && info.kind == JC_DEVICE_GPU)
                jc__fmt(who, sizeof who, "GPU %d (%s)", info.nvml_index, info.uuid);
            else
                jc__fmt(who, sizeof who, "CPU");
            jcd_log("metrics: %s is %s%s%s", who, jc_health_name(ev[k].health), ev[k].reason[0] ? ": " : "",
                    ev[k].reason);
        }
        c->events_seen = total;
    }
}

/* One round: health changes to the log, pairs, then the files (every JCD_SAVE_S, or when a counter has just
 * started). */
static void housekeeping_round(jcd_exporter *e) {
    uint64_t now = jc_now_ns();
    if (e->warming && now >= e->warmup_end_ns) {
        jc_window_stop(e->ctx, e->warmup);
        jc_window_release(e->ctx, e->warmup);
        e->warming = 0;
    }
    int was_ready = 0, is_ready = 0;
    for (int i = 0; i < e->ndev; i++) was_ready += e->ctr[i].ready;
    log_health(e);
    for (int i = 0; i < e->ndev; i++) {
        counter *c = &e->ctr[i];
        if (!c->pending) continue;
        double en[JC_MAX_DEVICES];
        for (int k = 0; k < JC_MAX_DEVICES; k++) en[k] = NAN;
        jc_energy_at(e->ctx, &c->pend_t_ns, 1, 0, en);
        double v = en[c->dev];
        pthread_mutex_lock(&e->lock);
        if (isfinite(v)) {
            if (!c->ready) counter_start(c, v, c->pend_mj, c->pend_boot_ns, c->pend_t_ns);
            c->pair = 1;
            c->pair_j = c->offset_j + v;
            c->pair_mj = c->pend_mj;
            c->pair_boot_ns = c->pend_boot_ns;
            c->pending = 0;
        } else if (now > c->pend_t_ns + PENDING_GIVE_UP_NS) {
            c->pending = 0;
            if (!c->ready) counter_start(c, NAN, 0, 0, 0);
        }
        pthread_mutex_unlock(&e->lock);
    }
    for (int i = 0; i < e->ndev; i++) {
        counter *c = &e->ctr[i];
        if (!c->h || c->pending || !c->key[0]) continue;
        unsigned long long mj = 0;
        uint64_t t0 = jc_now_ns();
        long long b0 = boot_ns();
        nvmlReturn_t r = e->nvml->nvmlDeviceGetTotalEnergyConsumption(c->h, &mj);
        uint64_t t1 = jc_now_ns();
        long long b1 = boot_ns();
        pthread_mutex_lock(&e->lock);
        if (r == NVML_SUCCESS) {
            c->pending = 1;
            c->pend_t_ns = t0 + (t1 - t0) / 2;
            c->pend_boot_ns = b0 + (b1 - b0) / 2;
            c->pend_mj = mj;
        } else if (!c->ready) {
            counter_start(c, NAN, 0, 0, 0);
        }
        pthread_mutex_unlock(&e->lock);
    }
    for (int i = 0; i < e->ndev; i++) is_ready += e->ctr[i].ready;
    if (is_ready == was_ready && e->last_save_ns && now < e->last_save_ns + (uint64_t)(JCD_SAVE_S * 1e9) - 50000000ull)
        return;
    e->last_save_ns = now;
    char why[600];
    if (save_counters(e, 0, why, sizeof why) != 0) {
        if (!e->save_failed) jcd_log("metrics: cannot save the counters in %s: %s", e->state_dir, why);
        e->save_failed = 1;
    } else {
        e->save_failed = 0;
    }
    jcd_jobs_expire(&e->jobs, jc__wall_time(), JCD_JOB_TTL_S);
    if (jcd_jobs_save(&e->jobs, e->state_fd, why, sizeof why) != 0)
        jcd_log("metrics: cannot save the job totals in %s: %s", e->state_dir, why);
}

static void *housekeeping(void *arg) {
    jcd_exporter *e = arg;
    pthread_mutex_lock(&e->lock);
    while (!e->stopping) {
        pthread_mutex_unlock(&e->lock);
        housekeeping_round(e);
        pthread_mutex_lock(&e->lock);
        int starting = 0;
        for (int i = 0; i < e->ndev; i++) starting |= e->ctr[i].key[0] && !e->ctr[i].ready;
        double wait = starting ? 0.1 : JCD_SAVE_S;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        long long ns = (long long)ts.tv_nsec + (long long)(wait * 1e9);
        ts.tv_sec += (time_t)(ns / 1000000000LL);
        ts.tv_nsec = (long)(ns % 1000000000LL);
        while (!e->stopping && pthread_cond_timedwait(&e->cv, &e->lock, &ts) != ETIMEDOUT) {
        }
    }
    e->thread_done = 1;
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------
 * Open, close.
 * ---------------------------------------------------------------------------------------------------- */

/* The NVML handle of the GPU with this UUID (for the raw reads of the pairs), or NULL. */
static nvmlDevice_t handle_of(jcd_exporter *e, int nvml_index, const char *uuid) {
    if (!e->nvml || nvml_index < 0) return NULL;
    nvmlDevice_t dev;
    jc__gpu_ident id;
    if (jc__nvml_identify(e->nvml, (unsigned)nvml_index, &dev, &id) != JC_OK || strcmp(id.uuid, uuid) != 0)
        return NULL;
    if (!e->nvml->nvmlDeviceGetTotalEnergyConsumption) return NULL;
    return dev;
}

int jcd_exporter_open(jcd_state *s, jcd_exporter **out, char *why, size_t whylen) {
    *out = NULL;
    jcd_exporter *e = calloc(1, sizeof *e);
    if (!e) {
        jc__fmt(why, whylen, "out of memory");
        return -1;
    }
    e->state_fd = -1;
    if (jcd_jobs_init(&e->jobs) != 0) {
        free(e);
        jc__fmt(why, whylen, "out of memory");
        return -1;
    }
    pthread_mutex_init(&e->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&e->cv, &ca);
    pthread_condattr_destroy(&ca);
    jc__fmt(e->state_dir, sizeof e->state_dir, "%s", s->state_dir);
    e->state_fd = dup(s->state_fd);
    if (gethostname(e->hostname, sizeof e->hostname - 1) != 0 || !e->hostname[0])
        jc__fmt(e->hostname, sizeof e->hostname, "unknown");
    read_boot_id(e->boot_id, sizeof e->boot_id);
    e->boot_minus_mono = boot_ns() - (long long)jc_now_ns();
    /* The node's GPUs in NVML's order, whatever this process's environment says about CUDA. */
    const char *cvd = getenv("CUDA_VISIBLE_DEVICES");
    if (cvd) jcd_log("metrics: CUDA_VISIBLE_DEVICES=%s ignored: joulecapd measures every GPU of the node", cvd);
    unsetenv("CUDA_VISIBLE_DEVICES");
    unsetenv("CUDA_DEVICE_ORDER");
    jc_options o;
    jc_options_init(&o);
    o.gpus = "all";
    o.interval_s = 0.1;
    jc_status st = jc_open(&e->ctx, &o);
    if (st != JC_OK) {
        jc__fmt(why, whylen, "cannot open the sampler: %s: %s", jc_strerror(st), jc_last_detail());
        jcd_exporter_close(e);
        return -1;
    }
    /* Warm-up: while a window is open the library reads each GPU's counter at every 100 ms step, which pins
     * the clock of its steps within seconds.  Without it (about one read a second) the first fit of that
     * clock is coarse, and on the fake 300 W GPU the exported rate was off by 1-2% with jumps of +-11% for
     * about a second at each refit during the first minute; after a 10 s warm-up it is within 0.5%. */
    if (jc_window_start(e->ctx, "joulecapd warm-up", &e->warmup) == JC_OK) {
        e->warming = 1;
        e->warmup_end_ns = jc_now_ns() + (uint64_t)(JCD_WARMUP_S * 1e9);
    }
    char nvwhy[300];
    if (jc__nvml_open(&e->nvml, nvwhy, sizeof nvwhy) != JC_OK) e->nvml = NULL;
    e->ndev = jc_device_count(e->ctx);
    for (int i = 0; i < e->ndev && i < JC_MAX_DEVICES; i++) {
        jc_device_info info;
        counter *c = &e->ctr[i];
        c->dev = i;
        if (jc_device_info_get(e->ctx, i, &info) != JC_OK || info.energy_source == JC_SOURCE_NONE) continue;
        if (info.kind == JC_DEVICE_GPU) {
            jc__fmt(c->key, sizeof c->key, "%s", info.uuid);
            jc__fmt(c->label, sizeof c->label, "GPU %d (%s)", info.nvml_index, info.uuid);
            c->max_w = isfinite(info.max_limit_w) ? info.max_limit_w : 1000.0;
            if (info.energy_source == JC_SOURCE_COUNTER) c->h = handle_of(e, info.nvml_index, info.uuid);
        } else {
            jc__fmt(c->key, sizeof c->key, "cpu");
            jc__fmt(c->label, sizeof c->label, "CPU (%s)", jc_energy_source_name(info.energy_source));
        }
    }
    load_counters(e);
    /* A GPU whose saved pair can count the time joulecapd was down starts once its first raw reading is
     * covered by the sampler (about a second); the others start now. */
    for (int i = 0; i < e->ndev; i++)
        if (e->ctr[i].key[0] && (!e->ctr[i].h || !e->ctr[i].saved_pair)) counter_start(&e->ctr[i], NAN, 0, 0, 0);
    char jwhy[400];
    int jr = jcd_jobs_load(&e->jobs, e->state_fd, jwhy, sizeof jwhy);
    if (jr == -1) {
        char aside[64];
        jc__fmt(aside, sizeof aside, "jobs.state.bad-%lld", (long long)time(NULL));
        renameat(e->state_fd, "jobs.state", e->state_fd, aside);
        jcd_log("metrics: %s/jobs.state is damaged (%s): set aside as %s; job totals start at 0", e->state_dir, jwhy,
                aside);
    }
    if (pthread_create(&e->thread, NULL, housekeeping, e) != 0) {
        jc__fmt(why, whylen, "cannot start the housekeeping thread: %s", strerror(errno));
        jcd_exporter_close(e);
        return -1;
    }
    e->thread_started = 1;
    s->exporter = e;
    jcd_exporter_publish(e, s, jcd_mono());
    *out = e;
    return 0;
}

void jcd_exporter_close(jcd_exporter *e) {
    if (!e) return;
    int hung = 0;
    if (e->thread_started) {
        pthread_mutex_lock(&e->lock);
        e->stopping = 1;
        pthread_cond_broadcast(&e->cv);
        pthread_mutex_unlock(&e->lock);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 5;
        if (pthread_timedjoin_np(e->thread, NULL, &ts) != 0) {
            hung = 1; /* inside an NVML call of a hung GPU: left behind, with e */
            pthread_detach(e->thread);
            jcd_log("metrics: the housekeeping thread is stuck in NVML: left behind");
        }
    }
    if (e->ctx && !hung) {
        /* The raw readings of the last round become pairs (their instants are a few seconds old, or wait for
         * the sampler at most 1.5 s): the next start counts the time between from the GPU's counter. */
        for (int i = 0; i < e->ndev; i++) {
            counter *c = &e->ctr[i];
            if (!c->pending) continue;
            double en[JC_MAX_DEVICES];
            for (int k = 0; k < JC_MAX_DEVICES; k++) en[k] = NAN;
            jc_energy_at(e->ctx, &c->pend_t_ns, 1, 1.5, en);
            if (isfinite(en[c->dev]) && c->ready) {
                c->pair = 1;
                c->pair_j = c->offset_j + en[c->dev];
                c->pair_mj = c->pend_mj;
                c->pair_boot_ns = c->pend_boot_ns;
            }
            c->pending = 0;
        }
        log_health(e);
    }
    if (e->ctx) {
        char why[600];
        if (save_counters(e, 1, why, sizeof why) != 0) jcd_log("metrics: cannot save the counters: %s", why);
        if (jcd_jobs_save(&e->jobs, e->state_fd, why, sizeof why) != 0)
            jcd_log("metrics: cannot save the job totals: %s", why);
    }
    if (hung) return;
    jc_close(e->ctx);
    jc__nvml_close(e->nvml);
    jcd_jobs_free(&e->jobs);
    if (e->state_fd >= 0) close(e->state_fd);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->lock);
    free(e);
}

/* ------------------------------------------------------------------------------------------------------
 * Publishing (main loop) and scrapes.
 * ---------------------------------------------------------------------------------------------------- */

static void lease_of(jcd_mlease *l, const jcd_gpu *g, const char *holder, const jcd_holder *h) {
    memset(l, 0, sizeof *l);
    l->nvml = g->g.nvml_index;
    jc__fmt(l->uuid, sizeof l->uuid, "%s", g->g.id.uuid);
    jc__fmt(l->pci, sizeof l->pci, "%s", g->g.id.pci_bus_id);
    jc__fmt(l->name, sizeof l->name, "%s", g->g.id.name);
    jc__fmt(l->holder, sizeof l->holder, "%s", holder);
    if (h->user[0]) jc__fmt(l->user, sizeof l->user, "%s", h->user);
    else jc__fmt(l->user, sizeof l->user, "%u", h->uid);
    l->uid = h->uid;
    l->pid = h->pid;
}

void jcd_exporter_publish(jcd_exporter *e, jcd_state *s, double now) {
    if (!e) return;
    if (now >= e->next_refresh) {
        e->next_refresh = now + JCD_SAVE_S;
        for (int i = 0; i < s->ngpus; i++) jcd_gpu_refresh(s, &s->gpus[i]);
    }
    pthread_mutex_lock(&e->lock);
    e->ngpus = e->nleases = 0;
    for (int i = 0; i < s->ngpus && i < JCD_MAX_GPUS; i++) {
        const jcd_gpu *g = &s->gpus[i];
        if (g->present) {
            pub_gpu *p = &e->gpus[e->ngpus++];
            jc__fmt(p->uuid, sizeof p->uuid, "%s", g->g.id.uuid);
            p->limit_mw = g->g.limit_mw;
            p->enforced_mw = g->g.enforced_mw;
        }
        if (g->lease.active) lease_of(&e->leases[e->nleases++], g, g->lessee ? "lease" : "pending", &g->lease);
        if (g->persistent.active) lease_of(&e->leases[e->nleases++], g, "persistent", &g->persistent);
    }
    pthread_mutex_unlock(&e->lock);
}

void jcd_exporter_snapshot(jcd_exporter *e, jcd_msnap *snap, jcd_job **jobs) {
    memset(snap, 0, offsetof(jcd_msnap, dev));
    jc__fmt(snap->hostname, sizeof snap->hostname, "%s", e->hostname);
    uint64_t now = jc_now_ns(), lag = (uint64_t)(JCD_ENERGY_LAG_S * 1e9);
    uint64_t t = now > lag ? now - lag : 0;
    double en[JC_MAX_DEVICES];
    for (int i = 0; i < JC_MAX_DEVICES; i++) en[i] = NAN;
    if (t > jc_epoch_ns(e->ctx)) jc_energy_at(e->ctx, &t, 1, 0, en);
    snap->ndev = 0;
    for (int i = 0; i < e->ndev; i++) {
        jc_device_info info;
        jc_reading r;
        if (jc_device_info_get(e->ctx, i, &info) != JC_OK || jc_reading_get(e->ctx, i, &r) != JC_OK) continue;
        jcd_mdev *d = &snap->dev[snap->ndev++];
        memset(d, 0, sizeof *d);
        d->gpu = info.kind == JC_DEVICE_GPU;
        d->nvml = info.nvml_index;
        jc__fmt(d->uuid, sizeof d->uuid, "%s", info.uuid);
        jc__fmt(d->pci, sizeof d->pci, "%s", info.pci_bus_id);
        jc__fmt(d->name, sizeof d->name, "%s", info.name);
        d->source = info.energy_source;
        d->health = info.health;
        d->power_w = r.power_w;
        d->util_ratio = isfinite(r.util_pct) ? r.util_pct / 100.0 : NAN;
        d->temp_c = r.temp_c;
        pthread_mutex_lock(&e->lock);
        counter *c = &e->ctr[i];
        double x = c->ready && c->key[0] ? total_at(e, c, t, en[i]) : NAN;
        if (c->ready && c->key[0] && !isfinite(x) && isfinite(r.energy_j)) x = c->offset_j + r.energy_j;
        if (isfinite(x)) {
            /* Never above what is on disk: a restart, even after a crash, starts at least there. */
            if (x > c->durable_j) x = c->durable_j;
            if (x > c->last_j) c->last_j = x;
            d->have_energy = 1;
            d->energy_j = c->last_j;
        } else if (!c->ready && c->have_saved) { /* waiting for its first pair: where the last run ended */
            d->have_energy = 1;
            d->energy_j = c->last_j;
        }
        if (d->gpu)
            for (int k = 0; k < e->ngpus; k++)
                if (strcmp(e->gpus[k].uuid, d->uuid) == 0) {
                    d->limit_mw = e->gpus[k].limit_mw;
                    d->enforced_mw = e->gpus[k].enforced_mw;
                }
        pthread_mutex_unlock(&e->lock);
    }
    pthread_mutex_lock(&e->lock);
    snap->nleases = e->nleases;
    memcpy(snap->leases, e->leases, (size_t)e->nleases * sizeof e->leases[0]);
    pthread_mutex_unlock(&e->lock);
    snap->njobs = jcd_jobs_copy(&e->jobs, jobs);
    snap->jobs = *jobs;
}
