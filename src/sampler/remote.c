/* GPUs read through joulecapd (remote.h): the connection, the parsers of its replies, and the reader's poll.
 *
 * One connection per context, shared by its GPU readers (one request at a time).  A reader asks for its GPU's
 * knots after the newest it has every 50 ms while fine resolution is needed (a window opened in the last 10 s,
 * CSV rows under a second apart: jc__reader_fine) and every 250 ms otherwise; "fine" goes with the request, so
 * the daemon reads every counter step only while some client needs it.  Each request costs a round trip on a
 * Unix socket (docs/daemon.md has the measured cost), against ~4 ms of CPU per counter read in the driver.
 *
 * The daemon is trusted for nothing: a reply that does not parse, knots out of order or off this node's
 * monotonic clock, a series id that changed (the daemon restarted: its series starts anew) or a connection
 * that fails twice end the GPU's energy here: lost with the reason, windows past the last knot cut (coverage
 * < 1), never a value made up across the gap. */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "../caps/wire.h"
#include "../core/context.h"
#include "../sources/fake.h"
#include "remote.h"

#define MS 1000000ull
#define NS 1000000000ull
#define PROTO_NEEDED 3
#define REPLY_TIMEOUT_MS 3000
#define POLL_FINE_NS (50 * MS)
#define POLL_COARSE_NS (250 * MS)
#define CLOCK_SKEW_NS (5 * NS) /* the daemon's "now" and ours differ by more: not this node's clock */
#define MAX_ROUNDS 64          /* SERIES requests in one poll (64 knots each) */

struct jc__remote {
    pthread_mutex_t lock; /* one request at a time */
    int fd;
    char path[108];
    char sid[64];
    char buf[JC__WIRE_MAX_REPLY];
    size_t used;
};

/* ------------------------------------------------------------------------------------------------------
 * Parsers (pure, fuzzed).
 * ---------------------------------------------------------------------------------------------------- */

static int get_u64(jc__wire_line *l, const char *key, uint64_t *v) {
    unsigned long long x;
    if (jc__wire_get_u64(l, key, &x) != 0) return -1;
    *v = x;
    return 0;
}

static int get_small(jc__wire_line *l, const char *key, unsigned max, int *v) {
    uint64_t x;
    if (get_u64(l, key, &x) != 0 || x > max) return -1;
    *v = (int)x;
    return 0;
}

static int parse_double(const char *s, double lo, double hi, double *v) {
    if (!s || !*s) return -1;
    char *end = NULL;
    errno = 0;
    double x = strtod(s, &end);
    if (end == s || *end || errno == ERANGE || !isfinite(x) || x < lo || x > hi) return -1;
    *v = x;
    return 0;
}

/* An optional number: absent is NaN; present must parse within [lo, hi]. */
static int get_opt(jc__wire_line *l, const char *key, double lo, double hi, double *v) {
    *v = NAN;
    const char *s = jc__wire_get(l, key);
    return s ? parse_double(s, lo, hi, v) : 0;
}

static void get_text(jc__wire_line *l, const char *key, char *buf, size_t len) {
    const char *s = jc__wire_get(l, key);
    jc__fmt(buf, len, "%s", s ? s : "");
}

static int split_ok(char *line, size_t len, jc__wire_line *l) {
    char why[200];
    return jc__wire_split(line, len, l, why, sizeof why) != 0 || strcmp(l->tok[0], "OK") != 0 ? -1 : 0;
}

int jc__remote_parse_gpu(char *line, size_t len, jc__remote_gpu *out) {
    memset(out, 0, sizeof *out);
    jc__wire_line l;
    if (split_ok(line, len, &l) != 0) return -1;
    const char *uuid = jc__wire_get(&l, "uuid"), *pci = jc__wire_get(&l, "pci");
    int nvml, src, pst, ust, tst;
    uint64_t lim[5];
    if (!uuid || !jc__wire_uuid_ok(uuid) || !pci || get_small(&l, "nvml", 99999, &nvml) ||
        get_small(&l, "src", JC_SOURCE_ESTIMATE, &src) || get_small(&l, "pst", 63, &pst) ||
        get_small(&l, "ust", 63, &ust) || get_small(&l, "tst", 63, &tst) || get_u64(&l, "limit_mw", &lim[0]) ||
        get_u64(&l, "enforced_mw", &lim[1]) || get_u64(&l, "default_mw", &lim[2]) || get_u64(&l, "min_mw", &lim[3]) ||
        get_u64(&l, "max_mw", &lim[4]))
        return -1;
    for (int i = 0; i < 5; i++)
        if (lim[i] > 100000000ull) return -1; /* 100 kW */
    jc_device_info *i = &out->info;
    out->nvml_index = nvml;
    jc__fmt(out->id.uuid, sizeof out->id.uuid, "%s", uuid);
    jc__fmt(out->id.pci_bus_id, sizeof out->id.pci_bus_id, "%s", pci);
    get_text(&l, "name", out->id.name, sizeof out->id.name);
    if (!out->id.name[0]) jc__fmt(out->id.name, sizeof out->id.name, "NVIDIA GPU");
    i->energy_source = (jc_energy_source)src;
    i->power_status = (jc_status)pst;
    i->util_status = (jc_status)ust;
    i->temp_status = (jc_status)tst;
    get_text(&l, "enote", i->energy_note, sizeof i->energy_note);
    get_text(&l, "pnote", i->power_note, sizeof i->power_note);
    get_text(&l, "unote", i->util_note, sizeof i->util_note);
    get_text(&l, "tnote", i->temp_note, sizeof i->temp_note);
    /* The wire's mW (0 = unknown) as the API's W (NaN = unknown). */
    double *w[5] = {&i->limit_w, &i->enforced_limit_w, &i->default_limit_w, &i->min_limit_w, &i->max_limit_w};
    for (int k = 0; k < 5; k++) *w[k] = lim[k] ? (double)lim[k] / 1000.0 : NAN;
    return 0;
}

/* "t:J,t:J,...": strictly increasing instants, finite energies, at most JC__REMOTE_MAX_KNOTS. */
static int parse_knots(const char *s, jc__remote_series *out) {
    char buf[JC__WIRE_MAX_REPLY];
    jc__fmt(buf, sizeof buf, "%s", s);
    char *save = NULL;
    for (char *k = strtok_r(buf, ",", &save); k; k = strtok_r(NULL, ",", &save)) {
        if (out->nknots >= JC__REMOTE_MAX_KNOTS) return -1;
        char *colon = strchr(k, ':');
        if (!colon) return -1;
        *colon = '\0';
        unsigned long long t = 0;
        size_t d = 0;
        for (; k[d] >= '0' && k[d] <= '9' && d < 19; d++) t = t * 10 + (unsigned long long)(k[d] - '0');
        double e;
        if (d == 0 || k[d] != '\0' || t == 0 || parse_double(colon + 1, -1e15, 1e15, &e) != 0) return -1;
        if (out->nknots && t <= out->knot_t[out->nknots - 1]) return -1;
        out->knot_t[out->nknots] = t;
        out->knot_j[out->nknots] = e;
        out->nknots++;
    }
    return 0;
}

int jc__remote_parse_series(char *line, size_t len, jc__remote_series *out) {
    memset(out, 0, sizeof *out);
    jc__wire_line l;
    if (split_ok(line, len, &l) != 0) return -1;
    const char *sid = jc__wire_get(&l, "sid"), *k = jc__wire_get(&l, "k");
    if (!sid || !*sid || strlen(sid) >= sizeof out->sid || get_u64(&l, "now", &out->now_ns) ||
        get_small(&l, "h", JC_HEALTH_LOST, &out->health) || get_u64(&l, "hs", &out->health_since_ns) ||
        get_u64(&l, "dead", &out->dead_ns) || get_u64(&l, "lt", &out->latest_ns) ||
        get_small(&l, "more", 1, &out->more) || get_opt(&l, "sigma", 0, 1e10, &out->sigma_ns) ||
        get_opt(&l, "p", 0, 1e6, &out->power_w) || get_opt(&l, "u", 0, 100, &out->util_pct) ||
        get_opt(&l, "c", -300, 1000, &out->temp_c))
        return -1;
    jc__fmt(out->sid, sizeof out->sid, "%s", sid);
    get_text(&l, "hwhy", out->health_note, sizeof out->health_note);
    if (k && parse_knots(k, out) != 0) return -1;
    if (out->more && out->nknots == 0) return -1; /* "more" without progress would loop */
    return 0;
}

/* ------------------------------------------------------------------------------------------------------
 * The connection.
 * ---------------------------------------------------------------------------------------------------- */

int jc__remote_wanted(char *path, size_t pathlen, char *why, size_t whylen) {
    const char *v = secure_getenv("JOULECAP_DAEMON");
    const char *sock = secure_getenv("JOULECAP_DAEMON_SOCKET");
    path[0] = why[0] = '\0';
    if (v && strcmp(v, "off") == 0) {
        jc__fmt(why, whylen, "JOULECAP_DAEMON=off");
        return 0;
    }
    int explicit = v && *v && strcmp(v, "auto") != 0;
    if (explicit) jc__fmt(path, pathlen, "%s", v);
    else jc__fmt(path, pathlen, "%s", sock && *sock ? sock : JC__WIRE_DEFAULT_SOCKET);
    /* A fake GPU never reads the node's joulecapd (that one reads the real GPUs), unless told a socket. */
    if (!explicit && !(sock && *sock) && jc__fake_wanted()) {
        jc__fmt(why, whylen, "JOULECAP_FAKE: the fake GPU is read in this process");
        return 0;
    }
    struct stat sb;
    if (lstat(path, &sb) != 0 || !S_ISSOCK(sb.st_mode)) {
        jc__fmt(why, whylen, "no joulecapd socket at %s", path);
        return 0;
    }
    return 1;
}

static void conn_drop(jc__remote *r) {
    if (r->fd >= 0) close(r->fd);
    r->fd = -1;
    r->used = 0;
}

static int send_line(jc__remote *r, const char *req, char *why, size_t whylen) {
    char line[JC__WIRE_MAX_REQUEST + 1];
    size_t n = strlen(req);
    if (n + 1 > JC__WIRE_MAX_REQUEST) {
        jc__fmt(why, whylen, "request too long");
        return -1;
    }
    memcpy(line, req, n);
    line[n++] = '\n';
    for (size_t done = 0; done < n;) {
        ssize_t w = send(r->fd, line + done, n - done, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            jc__fmt(why, whylen, "sending failed: %s", strerror(errno));
            return -1;
        }
        done += (size_t)w;
    }
    return 0;
}

/* The next line, NUL-terminated into line[JC__WIRE_MAX_REPLY]: 0, or -1 with why. */
static int read_line(jc__remote *r, char *line, size_t *len, char *why, size_t whylen) {
    uint64_t end = jc_now_ns() + REPLY_TIMEOUT_MS * MS;
    for (;;) {
        char *nl = memchr(r->buf, '\n', r->used);
        if (nl) {
            size_t n = (size_t)(nl - r->buf);
            memcpy(line, r->buf, n);
            line[n] = '\0';
            *len = n;
            r->used -= n + 1;
            memmove(r->buf, nl + 1, r->used);
            return 0;
        }
        if (r->used == sizeof r->buf) {
            jc__fmt(why, whylen, "a reply longer than %d bytes", JC__WIRE_MAX_REPLY);
            return -1;
        }
        uint64_t now = jc_now_ns();
        if (now >= end) {
            jc__fmt(why, whylen, "no reply within %.0f s", REPLY_TIMEOUT_MS / 1e3);
            return -1;
        }
        struct pollfd p = {r->fd, POLLIN, 0};
        int pr = poll(&p, 1, (int)((end - now) / MS) + 1);
        if (pr <= 0) continue;
        ssize_t got = recv(r->fd, r->buf + r->used, sizeof r->buf - r->used, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
            jc__fmt(why, whylen, "it closed the connection (%s)", got == 0 ? "stopped or restarted" : strerror(errno));
            return -1;
        }
        r->used += (size_t)got;
    }
}

/* Sends req and reads its one reply line: 0 (an OK line in line), or -1 with why (an ERR's text). */
static int call(jc__remote *r, const char *req, char *line, size_t *len, char *why, size_t whylen) {
    if (send_line(r, req, why, whylen) != 0 || read_line(r, line, len, why, whylen) != 0) {
        conn_drop(r);
        return -1;
    }
    if (strncmp(line, "OK", 2) == 0 && (line[2] == ' ' || line[2] == '\0')) return 0;
    if (strncmp(line, "ERR ", 4) == 0) {
        char copy[JC__WIRE_MAX_REPLY], w[200];
        jc__fmt(copy, sizeof copy, "%s", line);
        jc__wire_line l;
        const char *text = jc__wire_split(copy, strlen(copy), &l, w, sizeof w) == 0 ? jc__wire_get(&l, "text") : NULL;
        jc__fmt(why, whylen, "%s", text ? text : "an error without text");
        return -1;
    }
    jc__fmt(why, whylen, "a malformed reply");
    conn_drop(r);
    return -1;
}

/* Connects and says HELLO: 0, or -1 with why. */
static int conn_open(jc__remote *r, char *why, size_t whylen) {
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    if (strlen(r->path) >= sizeof a.sun_path) {
        jc__fmt(why, whylen, "socket path too long");
        return -1;
    }
    memcpy(a.sun_path, r->path, strlen(r->path));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        jc__fmt(why, whylen, "cannot create a socket: %s", strerror(errno));
        return -1;
    }
    /* A daemon that does not accept (hung, or its backlog full) must not hold jc_open: connect gives up after
     * the send timeout on a Unix socket (EAGAIN). */
    struct timeval tv = {REPLY_TIMEOUT_MS / 1000, (REPLY_TIMEOUT_MS % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int rc;
    while ((rc = connect(fd, (struct sockaddr *)&a, sizeof a)) != 0 && errno == EINTR) {
    }
    if (rc != 0) {
        jc__fmt(why, whylen, "not answering (%s)", strerror(errno));
        close(fd);
        return -1;
    }
    /* The daemon must be root (or this user, for a private one): nobody else may pose as the sampler. */
    struct ucred cr;
    socklen_t cl = sizeof cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) != 0 || (cr.uid != 0 && cr.uid != geteuid())) {
        jc__fmt(why, whylen, "the socket is served by uid %u, neither root nor this user: not trusted",
                (unsigned)cr.uid);
        close(fd);
        return -1;
    }
    r->fd = fd;
    r->used = 0;
    char line[JC__WIRE_MAX_REPLY], req[32];
    size_t len;
    snprintf(req, sizeof req, "HELLO %d", JC__WIRE_VERSION);
    if (call(r, req, line, &len, why, whylen) != 0) return -1;
    jc__wire_line l;
    unsigned long long proto = 0;
    if (split_ok(line, len, &l) != 0 || jc__wire_get_u64(&l, "proto", &proto) != 0) {
        jc__fmt(why, whylen, "a malformed HELLO reply");
        conn_drop(r);
        return -1;
    }
    if (proto < PROTO_NEEDED) {
        const char *ver = jc__wire_get(&l, "version");
        jc__fmt(why, whylen, "too old: joulecapd %s speaks protocol %llu, its sampler needs %d", ver ? ver : "?",
                proto, PROTO_NEEDED);
        conn_drop(r);
        return -1;
    }
    return 0;
}

jc_status jc__remote_open(const char *path, jc__remote **out, jc__remote_gpu *gpus, int max, int *n, char *driver,
                          size_t driverlen, char *why, size_t whylen) {
    *out = NULL;
    *n = 0;
    jc__remote *r = calloc(1, sizeof *r);
    if (!r) return jc__fail_why(JC_ERR_NO_MEMORY, why, whylen, "out of memory");
    r->fd = -1;
    pthread_mutex_init(&r->lock, NULL);
    jc__fmt(r->path, sizeof r->path, "%s", path);
    char line[JC__WIRE_MAX_REPLY], w[600];
    size_t len;
    jc__wire_line l;
    unsigned long long count = 0;
    if (conn_open(r, w, sizeof w) != 0 || call(r, "GPUS", line, &len, w, sizeof w) != 0) goto fail;
    if (split_ok(line, len, &l) != 0 || jc__wire_get_u64(&l, "n", &count) != 0 || !jc__wire_get(&l, "sid") ||
        strlen(jc__wire_get(&l, "sid")) >= sizeof r->sid) {
        jc__fmt(w, sizeof w, "a malformed GPUS reply");
        goto fail;
    }
    jc__fmt(r->sid, sizeof r->sid, "%s", jc__wire_get(&l, "sid"));
    get_text(&l, "driver", driver, driverlen);
    for (unsigned long long i = 0; i < count && *n < max; i++) {
        char req[32];
        snprintf(req, sizeof req, "GPU %llu", i);
        if (call(r, req, line, &len, w, sizeof w) != 0) goto fail;
        if (jc__remote_parse_gpu(line, len, &gpus[*n]) != 0) {
            jc__fmt(w, sizeof w, "a malformed GPU reply");
            goto fail;
        }
        (*n)++;
    }
    *out = r;
    return JC_OK;
fail:
    jc__fmt(why, whylen, "joulecapd (%s) %s", path, w);
    jc__remote_close(r);
    return JC_ERR_UNAVAILABLE;
}

void jc__remote_close(jc__remote *r) {
    if (!r) return;
    conn_drop(r);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

const char *jc__remote_path(const jc__remote *r) { return r ? r->path : ""; }

/* ------------------------------------------------------------------------------------------------------
 * The reader's side.
 * ---------------------------------------------------------------------------------------------------- */

/* One SERIES round trip, reconnecting once when the connection failed: 0, or -1 with why. */
static int series(jc__remote *r, const char *req, jc__remote_series *s, char *why, size_t whylen) {
    pthread_mutex_lock(&r->lock);
    int rc = -1;
    for (int attempt = 0; attempt < 2 && rc != 0; attempt++) {
        char line[JC__WIRE_MAX_REPLY];
        size_t len;
        if (r->fd < 0 && conn_open(r, why, whylen) != 0) break;
        if (call(r, req, line, &len, why, whylen) != 0) {
            if (r->fd >= 0) break; /* an ERR reply: the connection is fine, the answer is no */
            continue;
        }
        if (jc__remote_parse_series(line, len, s) != 0) {
            jc__fmt(why, whylen, "a malformed SERIES reply");
            conn_drop(r);
            break;
        }
        if (strcmp(s->sid, r->sid) != 0) {
            jc__fmt(why, whylen, "restarted: its series started anew");
            conn_drop(r);
            break;
        }
        uint64_t now = jc_now_ns();
        if (s->now_ns + CLOCK_SKEW_NS < now || s->now_ns > now + CLOCK_SKEW_NS ||
            (s->nknots && s->knot_t[s->nknots - 1] > s->now_ns)) {
            jc__fmt(why, whylen, "sends times off this node's monotonic clock (its now %.3f s, ours %.3f s)",
                    jc__s(s->now_ns), jc__s(now));
            conn_drop(r);
            break;
        }
        rc = 0;
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}

/* The daemon is gone for this GPU: its energy ends at the last knot (lock not held). */
static void remote_lost(jc__device *d, const char *why) {
    jc_context *ctx = d->ctx;
    uint64_t t = jc_now_ns();
    pthread_mutex_lock(&ctx->lock);
    if (!d->dead) {
        d->dead = 1;
        d->dead_ns = t;
        double at = jc__s(t - (ctx->epoch_ns && t > ctx->epoch_ns ? ctx->epoch_ns : t));
        jc__fmt(d->info.energy_note, sizeof d->info.energy_note, "read through joulecapd until %.3f s: joulecapd "
                "(%s) %s", at, jc__remote_path(ctx->remote), why);
        jc__health_set(d, JC_HEALTH_LOST, t, "joulecapd (%s) %s at %.3f s: energy after its last sample is not "
                       "measured", jc__remote_path(ctx->remote), why, at);
        d->latest.power_w = d->latest.util_pct = d->latest.temp_c = NAN;
        pthread_cond_broadcast(&ctx->data_cv);
    }
    pthread_mutex_unlock(&ctx->lock);
}

/* The daemon's knots held to the in-process counter's rules (plausible.c): energy never falls, and rises by no
 * more than twice the card's maximum power allows.  Knots at or before the series' last are dropped (lock held).
 * 0, or -1 with why. */
static int plausible_knots(const jc__device *d, const jc__remote_series *s, int *first, char *why, size_t whylen) {
    const jc__point *last = jc__ring_last(&d->knots);
    uint64_t t0 = last ? last->t_ns : 0;
    double e0 = last ? last->v : NAN;
    *first = 0;
    while (*first < s->nknots && last && s->knot_t[*first] <= t0) (*first)++;
    for (int k = *first; k < s->nknots; k++) {
        double t = jc__s(s->knot_t[k] - (t0 ? t0 : s->knot_t[k])), de = s->knot_j[k] - e0;
        if (!isnan(e0) && (de < 0 || de > 2.0 * d->max_power_w * (t + 0.2))) {
            jc__fmt(why, whylen, "sends implausible energies (%+.3f J in %.3f s on a card of %.0f W at most)", de,
                    t, d->max_power_w);
            return -1;
        }
        t0 = s->knot_t[k];
        e0 = s->knot_j[k];
    }
    return 0;
}

/* Copies one reply into the device's series and state (lock not held).  -1 with why where its knots are
 * implausible: nothing is copied. */
static int apply(jc__device *d, const jc__remote_series *s, char *why, size_t whylen) {
    jc_context *ctx = d->ctx;
    uint64_t now = jc_now_ns();
    int first;
    pthread_mutex_lock(&ctx->lock);
    if (plausible_knots(d, s, &first, why, whylen) != 0) {
        pthread_mutex_unlock(&ctx->lock);
        return -1;
    }
    for (int k = first; k < s->nknots; k++) jc__ring_push(&d->knots, s->knot_t[k], s->knot_j[k]);
    if (s->nknots) {
        uint64_t last = s->knot_t[s->nknots - 1];
        if (last > d->remote_since_ns) d->remote_since_ns = last;
        jc__reader_ok(d, last);
        jc__health_knot(d, last);
    }
    if (!isnan(s->sigma_ns)) d->knot_sigma_ns = s->sigma_ns;
    if (s->latest_ns && !d->dead) {
        d->latest.t_ns = s->latest_ns;
        d->latest.power_w = s->power_w;
        d->latest.util_pct = s->util_pct;
        d->latest.temp_c = s->temp_c;
    }
    if (s->health == JC_HEALTH_DEGRADED) {
        jc__health_degrade(d, s->health_since_ns < now ? s->health_since_ns : now, "joulecapd's sampler: %s",
                           s->health_note);
        d->degraded_until_ns = now + 2 * NS; /* ends soon after the daemon stops saying so */
    }
    if (s->dead_ns && !d->dead) {
        /* The daemon's own reader lost the GPU or its counter: so do we, at the same instant (never later than
         * now on this node's clock). */
        d->dead = 1;
        d->dead_ns = s->dead_ns < now ? s->dead_ns : now;
        jc__fmt(d->info.energy_note, sizeof d->info.energy_note, "joulecapd's sampler: %s", s->health_note);
        jc__health_set(d, JC_HEALTH_LOST, d->dead_ns, "joulecapd's sampler: %s", s->health_note);
    }
    pthread_cond_broadcast(&ctx->data_cv);
    pthread_mutex_unlock(&ctx->lock);
    return 0;
}

void jc__remote_poll(jc__device *d, uint64_t now) {
    if (d->dead || now < d->remote_next_ns) return;
    int fine = d->fine || d->knots.len == 0; /* no knot yet: ask often until the first comes */
    d->remote_next_ns = now + (fine ? POLL_FINE_NS : POLL_COARSE_NS);
    for (int round = 0; round < MAX_ROUNDS; round++) {
        char req[256], why[600];
        snprintf(req, sizeof req, "SERIES %s %llu %d", d->info.uuid, (unsigned long long)d->remote_since_ns,
                 d->fine ? 1 : 0);
        jc__remote_series s;
        jc__reader_busy(d, 1);
        int rc = series(d->ctx->remote, req, &s, why, sizeof why);
        jc__reader_busy(d, 0);
        if (rc != 0) {
            remote_lost(d, why);
            return;
        }
        if (apply(d, &s, why, sizeof why) != 0) { /* this GPU only: the connection serves the others */
            remote_lost(d, why);
            return;
        }
        if (!s.more) break;
    }
}
