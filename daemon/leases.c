/* joulecapd's requests: leases (one writer per GPU, as long as its connection), persistent caps, and
 * putting limits back.  Every change is recorded in the GPU's journal before it is made, and a limit counts
 * as set only once NVML reads it back. */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "jcd.h"

/* ------------------------------------------------------------------------------------------------------
 * Replies.
 * ---------------------------------------------------------------------------------------------------- */

typedef struct reply {
    char buf[JC__WIRE_MAX_REPLY];
    size_t used;
} reply;

static void r_begin(reply *r, const char *verb) { r->used = (size_t)snprintf(r->buf, sizeof r->buf, "%s", verb); }
static void r_str(reply *r, const char *k, const char *v) { jc__wire_put(r->buf, sizeof r->buf, &r->used, k, v); }
static void r_u(reply *r, const char *k, unsigned long long v) { jc__wire_put_u64(r->buf, sizeof r->buf, &r->used, k, v); }
static void r_i(reply *r, const char *k, long long v) { jc__wire_put_i64(r->buf, sizeof r->buf, &r->used, k, v); }

static const char *status_word(jc_status st) {
    const char *n = jc_status_name(st);
    return strncmp(n, "JC_ERR_", 7) == 0 ? n + 7 : n;
}

/* ERR <STATUS> text=... */
static void send_err(jcd_client *c, jc_status st, const char *fmt, ...) JC__PRINTF(3, 4);
static void send_err(jcd_client *c, jc_status st, const char *fmt, ...) {
    char text[1100];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    reply r;
    char verb[48];
    snprintf(verb, sizeof verb, "ERR %s", status_word(st));
    r_begin(&r, verb);
    r_str(&r, "text", text);
    jcd_send(c, r.buf);
}

/* ERR with this thread's failure detail. */
static void send_detail(jcd_client *c, jc_status st) { send_err(c, st, "%s", jc_last_detail()); }

static void fmt_time(double t, char *buf, size_t len) {
    time_t s = (time_t)t;
    struct tm tm;
    if (t <= 0 || !localtime_r(&s, &tm) || strftime(buf, len, "%Y-%m-%d %H:%M:%S %Z", &tm) == 0)
        jc__fmt(buf, len, "an unknown time");
}

/* "user alice (uid 1001), process 4123 (python train.py), since 2026-12-06 10:11:12 CET" */
static void holder_text(const jcd_holder *h, char *buf, size_t len) {
    char when[64];
    fmt_time(h->since, when, sizeof when);
    jc__fmt(buf, len, "user %s (uid %u), process %d (%s), since %s", h->user[0] ? h->user : "?", h->uid, h->pid,
            h->command[0] ? h->command : "command unknown", when);
}

/* ------------------------------------------------------------------------------------------------------
 * Journal and limits.
 * ---------------------------------------------------------------------------------------------------- */

static int save(jcd_state *s, const jcd_gpu *g) {
    jcd_journal j;
    memset(&j, 0, sizeof j);
    jc__fmt(j.uuid, sizeof j.uuid, "%s", g->g.id.uuid);
    j.persistent = g->persistent;
    j.lease = g->lease;
    char why[600];
    if (jcd_journal_save(s->state_fd, &j, why, sizeof why) != 0) {
        jc__fail(JC_ERR_IO, "joulecapd cannot write its journal in %s: %s", s->state_dir, why);
        return -1;
    }
    return 0;
}

/* Puts mw back on g (nothing to do when it is in force already). */
static jc_status put_back(jcd_state *s, jcd_gpu *g, unsigned mw) {
    jc_status st = jcd_gpus_ready(s, jcd_mono());
    if (st != JC_OK) return st;
    jcd_gpu_refresh(s, g);
    if (g->present && g->g.limit_mw == mw) return JC_OK;
    unsigned got;
    return jcd_gpu_set(s, g, mw, &got);
}

/* Ends g's lease: the limit saved at TAKE goes back now.  When that fails the lease stays in the journal
 * (without a connection) and is retried. */
static jc_status end_lease(jcd_state *s, jcd_gpu *g, const char *why) {
    char label[256], who[600];
    jcd_gpu_label(g, label, sizeof label);
    holder_text(&g->lease, who, sizeof who);
    double t0 = jcd_mono();
    jc_status st = put_back(s, g, g->lease.original_mw);
    g->lessee = NULL;
    if (st != JC_OK) {
        double wait = g->tries < 5 ? (double)(2 << g->tries) : 60;
        g->tries++;
        g->next_try = jcd_mono() + wait;
        jcd_log("%s: the lease of %s ended (%s) but its saved limit %g W could not be put back: %s; retrying in "
                "%.0f s", label, who, why, g->lease.original_mw / 1000.0, jc_last_detail(), wait);
        return st;
    }
    g->tries = 0;
    jcd_log("%s: limit %g W put back in %.1f ms; the lease of %s ended: %s", label, g->lease.original_mw / 1000.0,
            (jcd_mono() - t0) * 1e3, who, why);
    memset(&g->lease, 0, sizeof g->lease);
    if (save(s, g) != 0) jcd_log("%s", jc_last_detail());
    return JC_OK;
}

/* ------------------------------------------------------------------------------------------------------
 * Requests.
 * ---------------------------------------------------------------------------------------------------- */

static void name_of(const jcd_client *c, char *buf, size_t len) {
    if (c->user[0]) jc__fmt(buf, len, "%s", c->user);
    else jc__fmt(buf, len, "%u", c->uid);
}

static int may_write(jcd_state *s, jcd_client *c) {
    char rule[700];
    if (jcd_config_allows(&s->config, c->uid, c->gid, c->groups, c->ngroups, rule, sizeof rule)) return 1;
    char name[64];
    name_of(c, name, sizeof name);
    send_err(c, JC_ERR_NO_PERMISSION,
             "user %s (uid %u) may not change GPU power limits through joulecapd: %s (root always may; everyone "
             "may read). Fix: add 'allow_user %s' (or 'allow_group GROUP' for one of its groups) to %s, then "
             "reload joulecapd (systemctl reload joulecapd, or kill -HUP %d)",
             name, c->uid, rule, name, s->config.path, (int)getpid());
    return 0;
}

static void gpu_list_text(jcd_state *s, char *buf, size_t len) {
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < s->ngpus && used + 1 < len; i++) {
        if (!s->gpus[i].present) continue;
        int w = snprintf(buf + used, len - used, "%s%s", used ? ", " : "", s->gpus[i].g.id.uuid);
        if (w < 0) break;
        used += (size_t)w;
    }
    if (!used) jc__fmt(buf, len, "none");
}

/* The GPU a write names, or NULL after an error reply. */
static jcd_gpu *writable(jcd_state *s, jcd_client *c, const char *uuid, int allow_broken) {
    jcd_gpu *g = jcd_gpu_find(s, uuid);
    if (!g) {
        char list[1000];
        gpu_list_text(s, list, sizeof list);
        send_err(c, JC_ERR_NOT_FOUND, "joulecapd knows no GPU %s (its GPUs: %s)", uuid, list);
        return NULL;
    }
    if (g->broken[0] && !allow_broken) {
        send_err(c, JC_ERR_IO, "%s", g->broken);
        return NULL;
    }
    char label[256];
    if (!g->present) {
        send_err(c, JC_ERR_NOT_FOUND, "%s: NVML does not list this GPU now", jcd_gpu_label(g, label, sizeof label));
        return NULL;
    }
    jc_status st = jcd_gpus_ready(s, jcd_mono());
    if (st != JC_OK) {
        send_detail(c, st);
        return NULL;
    }
    return g;
}

static void busy(jcd_client *c, jcd_gpu *g) {
    char label[256], who[600];
    jcd_gpu_label(g, label, sizeof label);
    holder_text(&g->lease, who, sizeof who);
    if (g->lessee)
        send_err(c, JC_ERR_BUSY, "%s is leased by %s, through joulecapd; the lease ends (and its saved limit %g W "
                 "comes back) when that process closes its connection or exits. Wait for it or stop it; "
                 "'joulecap cap get' shows who holds each GPU", label, who, g->lease.original_mw / 1000.0);
    else
        send_err(c, JC_ERR_BUSY, "%s: the lease of %s ended but joulecapd could not put its saved limit %g W back "
                 "yet (it retries; its log says why)", label, who, g->lease.original_mw / 1000.0);
}

/* The GPU leased by c, or NULL after an error reply. */
static jcd_gpu *leased(jcd_state *s, jcd_client *c, const char *uuid) {
    jcd_gpu *g = writable(s, c, uuid, 0);
    if (!g) return NULL;
    if (g->lease.active && g->lessee == c) return g;
    if (g->lease.active) busy(c, g);
    else {
        char label[256];
        send_err(c, JC_ERR_STATE, "%s is not leased by this connection: TAKE it first",
                 jcd_gpu_label(g, label, sizeof label));
    }
    return NULL;
}

static void holder_of(jcd_holder *h, const jcd_client *c, unsigned original_mw) {
    memset(h, 0, sizeof *h);
    h->active = 1;
    h->original_mw = original_mw;
    h->uid = c->uid;
    jc__fmt(h->user, sizeof h->user, "%s", c->user);
    h->pid = c->pid;
    h->pid_start = c->pid_start;
    jc__fmt(h->command, sizeof h->command, "%s", c->command);
    h->since = jc__wall_time();
}

static void do_hello(jcd_state *s, jcd_client *c, const jcd_request *q) {
    char rule[700];
    int ok = jcd_config_allows(&s->config, c->uid, c->gid, c->groups, c->ngroups, rule, sizeof rule);
    reply r;
    r_begin(&r, "OK");
    c->proto = q->version < JC__WIRE_VERSION ? q->version : JC__WIRE_VERSION;
    r_u(&r, "proto", c->proto);
    r_str(&r, "version", JC_VERSION_STRING);
    r_str(&r, "state_dir", s->state_dir);
    r_u(&r, "uid", c->uid);
    r_str(&r, "user", c->user);
    r_u(&r, "may_write", (unsigned)ok);
    r_str(&r, "rule", rule);
    jcd_send(c, r.buf);
}

static void put_holder(reply *r, const char *prefix, const jcd_holder *h) {
    char k[32];
#define K(name) (snprintf(k, sizeof k, "%s%s", prefix, name), k)
    r_u(r, K("saved_mw"), h->original_mw);
    r_u(r, K("set_mw"), h->set_mw);
    r_u(r, K("uid"), h->uid);
    r_str(r, K("user"), h->user);
    r_i(r, K("pid"), h->pid);
    r_str(r, K("command"), h->command);
    jc__wire_put_time(r->buf, sizeof r->buf, &r->used, K("since"), h->since);
#undef K
}

static void do_list(jcd_state *s, jcd_client *c) {
    jcd_gpus_ready(s, jcd_mono());
    int n = 0;
    for (int i = 0; i < s->ngpus; i++) {
        jcd_gpu *g = &s->gpus[i];
        jcd_gpu_refresh(s, g);
        reply r;
        r_begin(&r, "GPU");
        r_str(&r, "uuid", g->g.id.uuid);
        r_i(&r, "nvml", g->g.nvml_index);
        r_str(&r, "name", g->g.id.name);
        r_str(&r, "pci", g->g.id.pci_bus_id);
        r_u(&r, "present", (unsigned)g->present);
        r_u(&r, "limit_mw", g->g.limit_mw);
        r_u(&r, "enforced_mw", g->g.enforced_mw);
        r_u(&r, "default_mw", g->g.default_mw);
        r_u(&r, "min_mw", g->g.min_mw);
        r_u(&r, "max_mw", g->g.max_mw);
        const char *holder = g->broken[0] ? "broken" : g->lease.active ? (g->lessee ? "lease" : "pending")
                                                    : g->persistent.active ? "persistent" : "none";
        r_str(&r, "holder", holder);
        if (g->lease.active) put_holder(&r, "", &g->lease);
        if (g->persistent.active) put_holder(&r, "p_", &g->persistent);
        if (g->broken[0]) r_str(&r, "broken", g->broken);
        jcd_send(c, r.buf);
        n++;
    }
    reply r;
    r_begin(&r, "OK");
    r_u(&r, "count", (unsigned)n);
    if (!s->nvml) r_str(&r, "nvml", s->nvml_why);
    jcd_send(c, r.buf);
}

static void do_take(jcd_state *s, jcd_client *c, const jcd_request *q) {
    if (!may_write(s, c)) return;
    jcd_gpu *g = writable(s, c, q->uuid, 0);
    if (!g) return;
    char label[256];
    jcd_gpu_label(g, label, sizeof label);
    if (g->lease.active && g->lessee == c) {
        reply r;
        r_begin(&r, "OK");
        r_u(&r, "saved_mw", g->lease.original_mw);
        r_u(&r, "limit_mw", g->g.limit_mw);
        jcd_send(c, r.buf);
        return;
    }
    if (g->lease.active && !g->lessee) end_lease(s, g, "retried before a new lease");
    if (g->lease.active) {
        busy(c, g);
        return;
    }
    jcd_gpu_refresh(s, g);
    if (!g->g.limit_mw) {
        send_err(c, JC_ERR_NOT_SUPPORTED, "%s does not report its power limit: its cap cannot be managed", label);
        return;
    }
    holder_of(&g->lease, c, g->g.limit_mw);
    g->lessee = c;
    if (save(s, g) != 0) {
        char d[1100];
        jc__fmt(d, sizeof d, "%s", jc_last_detail());
        memset(&g->lease, 0, sizeof g->lease);
        g->lessee = NULL;
        send_err(c, JC_ERR_IO, "%s; nothing was changed", d);
        return;
    }
    char who[600];
    holder_text(&g->lease, who, sizeof who);
    jcd_log("%s: leased by %s; saved limit %g W", label, who, g->lease.original_mw / 1000.0);
    reply r;
    r_begin(&r, "OK");
    r_u(&r, "saved_mw", g->lease.original_mw);
    r_u(&r, "limit_mw", g->g.limit_mw);
    jcd_send(c, r.buf);
}

/* Sets mw on g and reads it back; on failure the limit before (prev_mw) is put back and c gets the error. */
static int set_checked(jcd_state *s, jcd_client *c, jcd_gpu *g, unsigned mw, unsigned prev_mw, unsigned *got) {
    unsigned m = 0;
    jc_status st = jc__capgpu_check(&g->g, mw / 1000.0, &m);
    if (st == JC_OK) st = jcd_gpu_set(s, g, m, got);
    if (st == JC_OK) return 0;
    char d[1100];
    jc__fmt(d, sizeof d, "%s", jc_last_detail());
    if (st != JC_ERR_INVALID_ARGUMENT && put_back(s, g, prev_mw) != JC_OK) {
        char label[256];
        jcd_log("%s: could not put %g W back after a failed set: %s", jcd_gpu_label(g, label, sizeof label),
                prev_mw / 1000.0, jc_last_detail());
    }
    send_err(c, st, "%s", d);
    return -1;
}

static void ok_limit(jcd_client *c, unsigned mw) {
    reply r;
    r_begin(&r, "OK");
    r_u(&r, "limit_mw", mw);
    jcd_send(c, r.buf);
}

static void do_set(jcd_state *s, jcd_client *c, const jcd_request *q) {
    if (!may_write(s, c)) return;
    jcd_gpu *g = leased(s, c, q->uuid);
    if (!g) return;
    unsigned got = 0;
    if (set_checked(s, c, g, q->mw, g->lease.set_mw ? g->lease.set_mw : g->lease.original_mw, &got) != 0) return;
    g->lease.set_mw = got;
    if (save(s, g) != 0) jcd_log("%s", jc_last_detail()); /* the saved limit is on disk already */
    ok_limit(c, got);
}

static void do_restore(jcd_state *s, jcd_client *c, const jcd_request *q, int release) {
    if (!may_write(s, c)) return;
    jcd_gpu *g = leased(s, c, q->uuid);
    if (!g) return;
    unsigned back = g->lease.original_mw;
    jc_status st;
    if (release) {
        st = end_lease(s, g, "released by its holder");
    } else {
        st = put_back(s, g, back);
        if (st == JC_OK && g->lease.set_mw) {
            g->lease.set_mw = 0;
            if (save(s, g) != 0) jcd_log("%s", jc_last_detail());
        }
    }
    if (st != JC_OK) {
        send_detail(c, st);
        return;
    }
    ok_limit(c, back);
}

static void do_persist(jcd_state *s, jcd_client *c, const jcd_request *q) {
    if (!may_write(s, c)) return;
    jcd_gpu *g = writable(s, c, q->uuid, 0);
    if (!g) return;
    if (g->lease.active) {
        busy(c, g);
        return;
    }
    unsigned m = 0;
    if (jc__capgpu_check(&g->g, q->mw / 1000.0, &m) != JC_OK) {
        send_detail(c, JC_ERR_INVALID_ARGUMENT);
        return;
    }
    jcd_gpu_refresh(s, g);
    int fresh = !g->persistent.active;
    jcd_holder before = g->persistent;
    unsigned prev = g->g.limit_mw;
    if (fresh) {
        /* The limit to put back is on disk before anything changes. */
        holder_of(&g->persistent, c, g->g.limit_mw);
        if (save(s, g) != 0) {
            char d[1100];
            jc__fmt(d, sizeof d, "%s", jc_last_detail());
            memset(&g->persistent, 0, sizeof g->persistent);
            send_err(c, JC_ERR_IO, "%s; nothing was changed", d);
            return;
        }
    }
    unsigned got = 0;
    if (set_checked(s, c, g, m, prev, &got) != 0) {
        g->persistent = before;
        if (save(s, g) != 0) jcd_log("%s", jc_last_detail());
        return;
    }
    unsigned original = g->persistent.original_mw;
    holder_of(&g->persistent, c, original);
    g->persistent.set_mw = got;
    if (save(s, g) != 0) jcd_log("%s", jc_last_detail());
    char label[256], who[600];
    holder_text(&g->persistent, who, sizeof who);
    jcd_log("%s: persistent cap %g W set by %s; saved limit %g W", jcd_gpu_label(g, label, sizeof label),
            got / 1000.0, who, original / 1000.0);
    reply r;
    r_begin(&r, "OK");
    r_u(&r, "limit_mw", got);
    r_u(&r, "saved_mw", original);
    jcd_send(c, r.buf);
}

static void do_reset(jcd_state *s, jcd_client *c, const jcd_request *q) {
    if (!may_write(s, c)) return;
    jcd_gpu *g = writable(s, c, q->uuid, 1);
    if (!g) return;
    char label[256];
    jcd_gpu_label(g, label, sizeof label);
    if (g->lease.active) {
        busy(c, g);
        return;
    }
    jcd_gpu_refresh(s, g);
    const char *did;
    unsigned target;
    if (g->persistent.active && !g->broken[0]) {
        did = "saved";
        target = g->persistent.original_mw;
    } else {
        did = "default";
        target = g->g.default_mw;
        if (!target) {
            send_err(c, JC_ERR_NOT_SUPPORTED, "%s does not report its default power limit", label);
            return;
        }
    }
    jc_status st = put_back(s, g, target);
    if (st != JC_OK) {
        send_detail(c, st);
        return;
    }
    if (g->broken[0]) jcd_log("%s: damaged journal removed by a reset to the default limit", label);
    g->broken[0] = '\0';
    memset(&g->persistent, 0, sizeof g->persistent);
    if (save(s, g) != 0) jcd_log("%s", jc_last_detail());
    jcd_log("%s: reset to the %s limit %g W", label, did, target / 1000.0);
    reply r;
    r_begin(&r, "OK");
    r_str(&r, "did", did);
    r_u(&r, "limit_mw", target);
    jcd_send(c, r.buf);
}

static void journal_line(jcd_client *c, const jcd_gpu *g, const char *was, const char *action, unsigned mw,
                         const jcd_holder *h, jc_status st, const char *note) {
    reply r;
    r_begin(&r, "JOURNAL");
    r_str(&r, "uuid", g->g.id.uuid);
    r_i(&r, "nvml", g->g.nvml_index);
    r_str(&r, "was", was);
    r_str(&r, "action", action);
    r_u(&r, "limit_mw", mw);
    r_i(&r, "pid", h ? h->pid : 0);
    r_str(&r, "status", st == JC_OK ? "OK" : status_word(st));
    r_str(&r, "note", note);
    jcd_send(c, r.buf);
}

static void do_repair(jcd_state *s, jcd_client *c, const jcd_request *q) {
    if (!may_write(s, c)) return;
    jcd_gpus_ready(s, jcd_mono());
    if (q->uuid[0] && !jcd_gpu_find(s, q->uuid)) {
        char list[1000];
        gpu_list_text(s, list, sizeof list);
        send_err(c, JC_ERR_NOT_FOUND, "joulecapd knows no GPU %s (its GPUs: %s)", q->uuid, list);
        return;
    }
    int n = 0;
    for (int i = 0; i < s->ngpus; i++) {
        jcd_gpu *g = &s->gpus[i];
        if (q->uuid[0] && strcmp(q->uuid, g->g.id.uuid) != 0) continue;
        char note[1100], who[600];
        if (g->broken[0]) {
            journal_line(c, g, "broken", "failed", 0, NULL, JC_ERR_IO, g->broken);
            n++;
            continue;
        }
        if (g->lease.active && g->lessee) {
            holder_text(&g->lease, who, sizeof who);
            jc__fmt(note, sizeof note, "leased by the live %s: left alone", who);
            journal_line(c, g, "session", "left-live", 0, &g->lease, JC_OK, note);
            n++;
            continue;
        }
        if (g->lease.active) {
            jcd_holder h = g->lease;
            holder_text(&h, who, sizeof who);
            jc_status st = end_lease(s, g, "repaired");
            if (st == JC_OK)
                jc__fmt(note, sizeof note, "the lease of %s had ended: put back %g W", who, h.original_mw / 1000.0);
            else
                jc__fmt(note, sizeof note, "%s", jc_last_detail());
            journal_line(c, g, "stale", st == JC_OK ? "restored" : "failed", h.original_mw, &h, st, note);
            n++;
            if (st != JC_OK) continue;
        }
        if (g->persistent.active) {
            jcd_holder h = g->persistent;
            jc_status st = g->present ? put_back(s, g, h.original_mw)
                                      : jc__fail(JC_ERR_NOT_FOUND, "GPU %s is not on this machine now (NVML does not "
                                                 "list it); its journal is kept", g->g.id.uuid);
            if (st == JC_OK) {
                memset(&g->persistent, 0, sizeof g->persistent);
                if (save(s, g) != 0) jcd_log("%s", jc_last_detail());
                jc__fmt(note, sizeof note, "persistent cap removed: put back %g W", h.original_mw / 1000.0);
            } else {
                jc__fmt(note, sizeof note, "%s", jc_last_detail());
            }
            journal_line(c, g, "persistent", st == JC_OK ? "restored" : "failed", h.original_mw, &h, st, note);
            n++;
        }
    }
    reply r;
    r_begin(&r, "OK");
    r_u(&r, "count", (unsigned)n);
    jcd_send(c, r.buf);
}

/* ENERGY <job> <uuid> <mJ> (protocol 2): adds to the job's total of this user and GPU (jobs.c). */
static void do_energy(jcd_state *s, jcd_client *c, const jcd_request *q) {
    if (c->proto < 2) {
        jcd_protocol_error(c, "ENERGY needs protocol 2 (this connection's HELLO agreed on 1)");
        return;
    }
    if (!s->exporter) {
        send_err(c, JC_ERR_NOT_SUPPORTED, "joulecapd runs without --metrics, so it keeps no job energy (start it "
                 "with --metrics ADDR: docs/daemon.md)");
        return;
    }
    jcd_gpu *g = jcd_gpu_find(s, q->uuid);
    if (!g || !g->present) {
        char list[1000];
        gpu_list_text(s, list, sizeof list);
        send_err(c, JC_ERR_NOT_FOUND, "joulecapd knows no GPU %s (its GPUs: %s)", q->uuid, list);
        return;
    }
    char user[64], why[400];
    name_of(c, user, sizeof user);
    unsigned long long total = 0;
    if (jcd_jobs_add(jcd_exporter_jobs(s->exporter), q->job, c->uid, user, q->uuid, g->g.nvml_index, q->mj,
                     jc__wall_time(), &total, why, sizeof why) != 0) {
        send_err(c, JC_ERR_BUSY, "%s", why);
        return;
    }
    reply r;
    r_begin(&r, "OK");
    r_u(&r, "total_mj", total);
    jcd_send(c, r.buf);
}

void jcd_handle(jcd_state *s, jcd_client *c, const jcd_request *q) {
    if (!c->hello && q->verb != JCD_HELLO) {
        jcd_protocol_error(c, "HELLO must come first");
        return;
    }
    switch (q->verb) {
    case JCD_HELLO:
        if (c->hello) {
            jcd_protocol_error(c, "HELLO twice");
            return;
        }
        c->hello = 1;
        do_hello(s, c, q);
        return;
    case JCD_LIST: do_list(s, c); return;
    case JCD_TAKE: do_take(s, c, q); return;
    case JCD_SET: do_set(s, c, q); return;
    case JCD_RESTORE: do_restore(s, c, q, 0); return;
    case JCD_RELEASE: do_restore(s, c, q, 1); return;
    case JCD_PERSIST: do_persist(s, c, q); return;
    case JCD_RESET: do_reset(s, c, q); return;
    case JCD_REPAIR: do_repair(s, c, q); return;
    case JCD_ENERGY: do_energy(s, c, q); return;
    case JCD_GPUS:
    case JCD_GPU:
    case JCD_SERIES:
        if (c->proto < 3) {
            jcd_protocol_error(c, "GPUS, GPU and SERIES need protocol 3 (this connection's HELLO agreed on less)");
            return;
        }
        jcd_series_handle(s, c, q);
        return;
    }
}

/* ------------------------------------------------------------------------------------------------------
 * Connections ending, start, stop.
 * ---------------------------------------------------------------------------------------------------- */

void jcd_client_gone(jcd_state *s, jcd_client *c, const char *why) {
    for (int i = 0; i < s->ngpus; i++)
        if (s->gpus[i].lease.active && s->gpus[i].lessee == c) end_lease(s, &s->gpus[i], why);
}

int jcd_leases_pending(const jcd_state *s) {
    int n = 0;
    for (int i = 0; i < s->ngpus; i++) n += s->gpus[i].lease.active && !s->gpus[i].lessee && !s->gpus[i].broken[0];
    return n;
}

int jcd_leases_retry(jcd_state *s, double now) {
    for (int i = 0; i < s->ngpus; i++) {
        jcd_gpu *g = &s->gpus[i];
        if (g->lease.active && !g->lessee && !g->broken[0] && now >= g->next_try) end_lease(s, g, "retried");
    }
    return jcd_leases_pending(s);
}

void jcd_leases_stop(jcd_state *s) {
    for (int i = 0; i < s->ngpus; i++)
        if (s->gpus[i].lease.active && !s->gpus[i].broken[0]) end_lease(s, &s->gpus[i], "joulecapd is stopping");
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

void jcd_leases_start(jcd_state *s) {
    int fd = dup(s->state_fd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0) close(fd);
        jcd_log("cannot read the state directory %s: %s", s->state_dir, strerror(errno));
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        if (name[0] == '.') {
            if (ends_with(name, ".journal.tmp")) unlinkat(s->state_fd, name, 0); /* cut short by a crash */
            continue;
        }
        if (!ends_with(name, ".journal")) continue;
        char uuid[128];
        jc__fmt(uuid, sizeof uuid, "%.*s", (int)(strlen(name) - 8), name);
        if (!jc__wire_uuid_ok(uuid)) {
            jcd_log("%s/%s: not a journal name: ignored", s->state_dir, name);
            continue;
        }
        jcd_journal j;
        char why[600];
        int bad = jcd_journal_load(s->state_fd, name, &j, why, sizeof why);
        if (!bad && strcmp(j.uuid, uuid) != 0) {
            bad = 1;
            jc__fmt(why, sizeof why, "it names another GPU (%s)", j.uuid);
        }
        jcd_gpu *g = jcd_gpu_add(s, uuid);
        if (!g) {
            jcd_log("%s/%s: more journals than GPUs joulecapd can track: ignored", s->state_dir, name);
            continue;
        }
        if (bad) {
            jc__fmt(g->broken, sizeof g->broken,
                    "the journal %s/%s of this GPU is damaged (%s): joulecapd does not know which limit to put back "
                    "and refuses changes to this GPU. Check its limit (nvidia-smi -q -d POWER), then run 'joulecap "
                    "cap reset --gpu %s' (sets the default limit and removes the journal) or fix the limit and "
                    "remove the file", s->state_dir, name, why, uuid);
            jcd_log("%s", g->broken);
            continue;
        }
        g->persistent = j.persistent;
        g->lease = j.lease;
        g->lessee = NULL;
    }
    closedir(d);
    /* Leases left by the previous run: their connections are gone. */
    for (int i = 0; i < s->ngpus; i++) {
        jcd_gpu *g = &s->gpus[i];
        if (g->lease.active) end_lease(s, g, "left by the previous joulecapd (it was killed, crashed, or the node rebooted)");
        if (!g->persistent.active || g->lease.active || !s->nvml || !g->present) continue;
        char label[256];
        jcd_gpu_label(g, label, sizeof label);
        jcd_gpu_refresh(s, g);
        if (g->persistent.set_mw == 0) {
            /* Recorded before a set that never completed. */
            if (put_back(s, g, g->persistent.original_mw) == JC_OK) {
                jcd_log("%s: a persistent cap that was being set when joulecapd stopped: %g W put back", label,
                        g->persistent.original_mw / 1000.0);
                memset(&g->persistent, 0, sizeof g->persistent);
            } else {
                jcd_log("%s: cannot put back %g W: %s", label, g->persistent.original_mw / 1000.0, jc_last_detail());
            }
        } else if (g->g.limit_mw != g->persistent.set_mw) {
            jcd_log("%s: the persistent cap %g W is no longer in force (the limit is %g W: a reboot, a driver "
                    "reload or another tool changed it): forgotten", label, g->persistent.set_mw / 1000.0,
                    g->g.limit_mw / 1000.0);
            memset(&g->persistent, 0, sizeof g->persistent);
        } else {
            jcd_log("%s: persistent cap %g W kept (saved limit %g W)", label, g->persistent.set_mw / 1000.0,
                    g->persistent.original_mw / 1000.0);
            continue;
        }
        if (save(s, g) != 0) jcd_log("%s", jc_last_detail());
    }
}
