/* The node's sampler for clients (protocol 3): processes that measure with the library read the GPUs' series
 * from here instead of opening NVML themselves (src/sampler/remote.c is the other side; docs/daemon.md,
 * "One sampler per node").
 *
 *   GPUS                      OK n=<count> driver=<version> sid=<series id> note=<text>
 *   GPU <n>                   OK nvml= uuid= name= pci= src= enote= pst= pnote= ust= unote= tst= tnote= limits
 *   SERIES <uuid> <ns> <0|1>  OK sid= now= h= hs= hwhy= sigma= dead= lt= p= u= c= k=<t>:<J>,... more=<0|1>
 *
 * The sampler is a library context over every GPU of the node (no CPU: each process reads its own CPU, which
 * costs nothing like a GPU counter read): the exporter's when --metrics runs, else one opened at the first
 * GPUS.  A reply copies what the readers have under the context's lock: it never calls NVML, so a hung GPU
 * holds up no client.  Knots go out with 17 significant digits, so a client's series is the daemon's, bit for
 * bit, and its windows interpolate exactly as the daemon would.  Everything here is read-only: any user may
 * ask; a reply is at most JCD_SERIES_MAX_KNOTS knots (~2.5 KB), and a client that does not read its replies is
 * closed by the main loop (JCD_OUT_MAX). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/context.h"
#include "jcd.h"

#define RETRY_S 5.0

typedef struct jcd_series {
    jc_context *own;      /* opened here (NULL while the exporter's is used, or none could be opened) */
    char why[600];        /* why there is none */
    double retry_at;      /* monotonic s */
    char sid[64];         /* this sampler's id: a client that sees it change knows the series started anew */
} jcd_series;

static jcd_series *series_of(jcd_state *s) {
    if (!s->series) s->series = calloc(1, sizeof *s->series);
    return s->series;
}

static void make_sid(jcd_series *x, const jc_context *ctx) {
    jc__fmt(x->sid, sizeof x->sid, "%d-%llu", (int)getpid(), (unsigned long long)jc_epoch_ns(ctx));
}

/* The sampler, opened on first use; NULL with why. */
static jc_context *sampler(jcd_state *s, char *why, size_t whylen) {
    jcd_series *x = series_of(s);
    if (!x) {
        jc__fmt(why, whylen, "out of memory");
        return NULL;
    }
    jc_context *ctx = s->exporter ? jcd_exporter_context(s->exporter) : x->own;
    if (ctx) {
        if (!x->sid[0]) make_sid(x, ctx);
        return ctx;
    }
    double now = jcd_mono();
    if (x->why[0] && now < x->retry_at) {
        jc__fmt(why, whylen, "%s", x->why);
        return NULL;
    }
    jc_options o;
    jc_options_init(&o);
    o.gpus = "all";
    o.interval_s = 0.1;
    o.flags = JC_NO_CPU;
    /* Every GPU of the node in NVML's order, whatever this process's environment says about CUDA. */
    unsetenv("CUDA_VISIBLE_DEVICES");
    unsetenv("CUDA_DEVICE_ORDER");
    jc_status st = jc_open(&x->own, &o);
    if (st != JC_OK) {
        x->own = NULL;
        jc__fmt(x->why, sizeof x->why, "joulecapd cannot open its sampler: %s", jc_last_detail());
        x->retry_at = now + RETRY_S;
        jcd_log("%s (retried in %.0f s at the next request)", x->why, RETRY_S);
        jc__fmt(why, whylen, "%s", x->why);
        return NULL;
    }
    x->why[0] = '\0';
    make_sid(x, x->own);
    int n = 0;
    for (int i = 0; i < jc_device_count(x->own); i++) {
        jc_device_info info;
        if (jc_device_info_get(x->own, i, &info) == JC_OK && info.kind == JC_DEVICE_GPU) n++;
    }
    jcd_log("sampler opened for clients: %d GPU%s", n, n == 1 ? "" : "s");
    return x->own;
}

void jcd_series_close(jcd_state *s) {
    if (!s->series) return;
    jc_close(s->series->own);
    free(s->series);
    s->series = NULL;
}

typedef struct reply {
    char buf[JC__WIRE_MAX_REPLY];
    size_t used;
} reply;

static void r_begin(reply *r) { r->used = (size_t)snprintf(r->buf, sizeof r->buf, "OK"); }
static void r_str(reply *r, const char *k, const char *v) { jc__wire_put(r->buf, sizeof r->buf, &r->used, k, v); }
static void r_u(reply *r, const char *k, unsigned long long v) { jc__wire_put_u64(r->buf, sizeof r->buf, &r->used, k, v); }
static void r_num(reply *r, const char *k, double v) {
    if (!isfinite(v)) return; /* unreadable: left out */
    char t[40];
    snprintf(t, sizeof t, "%.17g", v);
    r_str(r, k, t);
}

/* The wire carries limits in whole mW, 0 when unknown (the library's W are NaN then). */
static unsigned mw_of(double w) { return isfinite(w) && w > 0 && w < 4e6 ? (unsigned)lround(w * 1000.0) : 0; }

static void send_err(jcd_client *c, const char *status, const char *text) {
    reply r;
    r.used = (size_t)snprintf(r.buf, sizeof r.buf, "ERR %s", status);
    r_str(&r, "text", text);
    jcd_send(c, r.buf);
}

/* The sampler's device of GPU number n (0-based among its GPUs) or of uuid; -1 when none.  Lock held. */
static int gpu_device(const jc_context *ctx, int n, const char *uuid) {
    int k = 0;
    for (int i = 0; i < ctx->ndev; i++) {
        const jc__device *d = &ctx->dev[i];
        if (d->info.kind != JC_DEVICE_GPU) continue;
        if (uuid ? strcmp(d->info.uuid, uuid) == 0 : k == n) return i;
        k++;
    }
    return -1;
}

static void do_gpus(jcd_client *c, jc_context *ctx, const jcd_series *x) {
    int n = 0;
    for (int i = 0; i < jc_device_count(ctx); i++) n += ctx->dev[i].info.kind == JC_DEVICE_GPU;
    char ver[96] = "", note[1024] = "";
    jc_gpu_driver(ctx, ver, sizeof ver, note, sizeof note);
    reply r;
    r_begin(&r);
    r_u(&r, "n", (unsigned)n);
    r_str(&r, "driver", ver);
    r_str(&r, "sid", x->sid);
    r_str(&r, "note", note);
    jcd_send(c, r.buf);
}

static void do_gpu(jcd_client *c, jc_context *ctx, unsigned n) {
    pthread_mutex_lock(&ctx->lock);
    int i = gpu_device(ctx, (int)n, NULL);
    jc_device_info info;
    if (i >= 0) info = ctx->dev[i].info;
    pthread_mutex_unlock(&ctx->lock);
    if (i < 0) {
        send_err(c, "NOT_FOUND", "joulecapd's sampler has no GPU of that number");
        return;
    }
    reply r;
    r_begin(&r);
    r_u(&r, "nvml", (unsigned)(info.nvml_index < 0 ? 0 : info.nvml_index));
    r_str(&r, "uuid", info.uuid);
    r_str(&r, "pci", info.pci_bus_id);
    r_u(&r, "src", (unsigned)info.energy_source);
    r_u(&r, "pst", (unsigned)info.power_status);
    r_u(&r, "ust", (unsigned)info.util_status);
    r_u(&r, "tst", (unsigned)info.temp_status);
    r_u(&r, "limit_mw", mw_of(info.limit_w));
    r_u(&r, "enforced_mw", mw_of(info.enforced_limit_w));
    r_u(&r, "default_mw", mw_of(info.default_limit_w));
    r_u(&r, "min_mw", mw_of(info.min_limit_w));
    r_u(&r, "max_mw", mw_of(info.max_limit_w));
    /* The texts last: a key that would not fit the line is left out (the client then has no note). */
    r_str(&r, "name", info.name);
    r_str(&r, "enote", info.energy_note);
    r_str(&r, "pnote", info.power_note);
    r_str(&r, "unote", info.util_note);
    r_str(&r, "tnote", info.temp_note);
    jcd_send(c, r.buf);
}

static void do_series(jcd_client *c, jc_context *ctx, const jcd_series *x, const jcd_request *q) {
    reply r;
    r_begin(&r);
    r_str(&r, "sid", x->sid);
    char knots[JC__WIRE_MAX_REPLY];
    size_t kused = 0;
    int more = 0;
    pthread_mutex_lock(&ctx->lock);
    /* "now" under the lock that commits knots: no knot sent can be later than it (the client checks). */
    uint64_t now = jc_now_ns();
    r_u(&r, "now", now);
    int i = gpu_device(ctx, 0, q->uuid);
    if (i < 0) {
        pthread_mutex_unlock(&ctx->lock);
        send_err(c, "NOT_FOUND", "joulecapd's sampler does not read that GPU");
        return;
    }
    if (q->fine) {
        /* Read every counter step while a client needs it: as a window edge does in the library, but held
         * only JCD_FINE_HOLD_S after the last request that asked (clients ask again while they need it). */
        uint64_t hold = (uint64_t)((10.0 - JCD_FINE_HOLD_S) * 1e9); /* reader.c's FINE_HOLD_NS is 10 s */
        uint64_t t = now > hold ? now - hold : 1;
        if (t > ctx->last_window_ns) {
            ctx->last_window_ns = t;
            pthread_cond_broadcast(&ctx->wake_cv);
        }
    }
    const jc__device *d = &ctx->dev[i];
    r_u(&r, "h", (unsigned)d->info.health);
    r_u(&r, "hs", d->info.health_since_ns);
    r_num(&r, "sigma", d->knot_sigma_ns);
    r_u(&r, "dead", d->dead ? (d->dead_ns ? d->dead_ns : 1) : 0);
    r_u(&r, "lt", d->latest.t_ns);
    r_num(&r, "p", d->latest.power_w);
    r_num(&r, "u", d->latest.util_pct);
    r_num(&r, "c", d->latest.temp_c);
    size_t k = jc__ring_lower_bound(&d->knots, q->since_ns + 1);
    int sent = 0;
    for (; k < d->knots.len; k++) {
        const jc__point *p = jc__ring_at(&d->knots, k);
        char one[64];
        int w = snprintf(one, sizeof one, "%s%llu:%.17g", sent ? "," : "", (unsigned long long)p->t_ns, p->v);
        if (sent >= JCD_SERIES_MAX_KNOTS || w < 0 || kused + (size_t)w > 3000) { /* the line keeps room for the rest */
            more = 1;
            break;
        }
        memcpy(knots + kused, one, (size_t)w + 1);
        kused += (size_t)w;
        sent++;
    }
    char hwhy[256];
    jc__fmt(hwhy, sizeof hwhy, "%s", d->info.health_note);
    pthread_mutex_unlock(&ctx->lock);
    if (sent) r_str(&r, "k", knots);
    r_u(&r, "more", (unsigned)more);
    r_str(&r, "hwhy", hwhy); /* last: the one key that may not fit */
    jcd_send(c, r.buf);
}

void jcd_series_handle(jcd_state *s, jcd_client *c, const jcd_request *q) {
    char why[700];
    jc_context *ctx = sampler(s, why, sizeof why);
    if (!ctx) {
        send_err(c, "UNAVAILABLE", why);
        return;
    }
    switch (q->verb) {
    case JCD_GPUS: do_gpus(c, ctx, s->series); return;
    case JCD_GPU: do_gpu(c, ctx, q->index); return;
    case JCD_SERIES: do_series(c, ctx, s->series, q); return;
    default: return;
    }
}
