/* Power caps through joulecapd: the client side of its protocol (docs/daemon.md, src/caps/wire.h).
 *
 * A cap session is one connection holding a lease per GPU; the daemon puts each saved limit back when the
 * connection ends, however the process ends.  GPUs are chosen here, with CUDA's numbering of this process
 * (CUDA_VISIBLE_DEVICES), from the daemon's list, and named to it by UUID.  Every error of the daemon comes
 * back as its status with the text "joulecapd (PATH): ...". */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "caps_internal.h"
#include "client.h"
#include "../sources/fake.h"
#include "wire.h"

#define REPLY_TIMEOUT_MS 60000
#define MAX_LISTED (2 * JC__CAP_MAX_GPUS)

int jc__capd_route(char *path, size_t len) {
    const char *p = secure_getenv("JOULECAP_DAEMON_SOCKET");
    /* A fake GPU (JOULECAP_FAKE) never goes to the node's joulecapd: that one caps the real GPUs. */
    int fake = (!p || !*p) && jc__fake_wanted();
    if (!p || !*p) p = JC__WIRE_DEFAULT_SOCKET;
    if (path && len) jc__fmt(path, len, "%s", p);
    if (fake) return 0;
    struct stat sb;
    return lstat(p, &sb) == 0 && S_ISSOCK(sb.st_mode);
}

int jc_cap_route(char *text, size_t len) {
    char path[512];
    int d = jc__capd_route(path, sizeof path);
    if (text && len) {
        if (d) jc__fmt(text, len, "joulecapd (%s)", path);
        else jc__fmt(text, len, "direct NVML");
    }
    return d;
}

/* ------------------------------------------------------------------------------------------------------
 * The connection.
 * ---------------------------------------------------------------------------------------------------- */

typedef struct conn {
    int fd;
    char path[108];
    char buf[JC__WIRE_MAX_REPLY];
    size_t used;
    char state_dir[256];
    unsigned proto; /* the version HELLO agreed on */
} conn;

static jc_status conn_fail(const conn *c, jc_status st, const char *fmt, ...) JC__PRINTF(3, 4);
static jc_status conn_fail(const conn *c, jc_status st, const char *fmt, ...) {
    char text[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    return jc__fail(st, "joulecapd (%s): %s", c->path, text);
}

static void conn_close(conn *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}

static jc_status conn_send(conn *c, const char *req) {
    char line[JC__WIRE_MAX_REQUEST + 1];
    size_t n = strlen(req);
    if (n + 1 > JC__WIRE_MAX_REQUEST) return conn_fail(c, JC_ERR_INVALID_ARGUMENT, "request too long");
    memcpy(line, req, n);
    line[n++] = '\n';
    size_t done = 0;
    while (done < n) {
        ssize_t w = send(c->fd, line + done, n - done, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return conn_fail(c, JC_ERR_UNAVAILABLE, "the connection to joulecapd failed (%s): it stopped or restarted; "
                             "leases of this connection ended with it", strerror(errno));
        done += (size_t)w;
    }
    return JC_OK;
}

/* The next reply line, NUL-terminated in line[JC__WIRE_MAX_REPLY]. */
static jc_status conn_line(conn *c, char *line, size_t *len) {
    uint64_t end = jc_now_ns() + (uint64_t)REPLY_TIMEOUT_MS * 1000000ull;
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->used);
        if (nl) {
            size_t n = (size_t)(nl - c->buf);
            memcpy(line, c->buf, n);
            line[n] = '\0';
            *len = n;
            c->used -= n + 1;
            memmove(c->buf, nl + 1, c->used);
            return JC_OK;
        }
        if (c->used == sizeof c->buf)
            return conn_fail(c, JC_ERR_IO, "a reply line longer than %d bytes", JC__WIRE_MAX_REPLY);
        uint64_t now = jc_now_ns();
        if (now >= end) return conn_fail(c, JC_ERR_TIMEOUT, "no reply within %d s", REPLY_TIMEOUT_MS / 1000);
        struct pollfd p = {c->fd, POLLIN, 0};
        int r = poll(&p, 1, (int)((end - now) / 1000000ull) + 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) continue;
        ssize_t got = recv(c->fd, c->buf + c->used, sizeof c->buf - c->used, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0)
            return conn_fail(c, JC_ERR_UNAVAILABLE, "joulecapd closed the connection (it stopped or restarted): the "
                             "leases of this connection ended with it, their limits are put back by joulecapd");
        c->used += (size_t)got;
    }
}

static jc_status status_of(const char *word) {
    for (int s = 1; s < 64; s++) {
        const char *n = jc_status_name((jc_status)s);
        if (strncmp(n, "JC_ERR_", 7) == 0 && strcmp(n, "JC_ERR_UNKNOWN") != 0 && strcmp(n + 7, word) == 0)
            return (jc_status)s;
    }
    return JC_ERR_IO; /* PROTOCOL, or a status this library does not know */
}

typedef int (*line_fn)(void *arg, char *line, size_t len);

/* Sends req and reads its reply: data lines go to each (NULL: none expected), the final "OK ..." line is
 * split into *ok (its text in fin[JC__WIRE_MAX_REPLY]); "ERR ..." becomes the failure. */
static jc_status conn_call(conn *c, const char *req, line_fn each, void *arg, char *fin, jc__wire_line *ok) {
    jc_status st = conn_send(c, req);
    while (st == JC_OK) {
        size_t len = 0;
        st = conn_line(c, fin, &len);
        if (st != JC_OK) break;
        if (strncmp(fin, "OK", 2) == 0 && (fin[2] == ' ' || fin[2] == '\0')) {
            char why[200];
            if (jc__wire_split(fin, len, ok, why, sizeof why) != 0)
                return conn_fail(c, JC_ERR_IO, "malformed reply (%s)", why);
            return JC_OK;
        }
        if (strncmp(fin, "ERR ", 4) == 0) {
            char why[200];
            jc__wire_line l;
            if (jc__wire_split(fin, len, &l, why, sizeof why) != 0 || l.n < 2)
                return conn_fail(c, JC_ERR_IO, "malformed error reply");
            const char *text = jc__wire_get(&l, "text");
            jc_status e = status_of(l.tok[1]);
            if (strcmp(l.tok[1], "PROTOCOL") == 0)
                return conn_fail(c, e, "refused a request of this library as malformed (%s): versions differ?",
                                 text ? text : "");
            return conn_fail(c, e, "%s", text ? text : l.tok[1]);
        }
        if (!each || each(arg, fin, len) != 0) return conn_fail(c, JC_ERR_IO, "malformed reply line");
    }
    return st;
}

static jc_status conn_open(conn *c) {
    memset(c, 0, sizeof *c);
    c->fd = -1;
    jc__capd_route(c->path, sizeof c->path);
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    if (strlen(c->path) >= sizeof a.sun_path)
        return conn_fail(c, JC_ERR_INVALID_ARGUMENT, "socket path too long (JOULECAP_DAEMON_SOCKET)");
    memcpy(a.sun_path, c->path, strlen(c->path));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return conn_fail(c, JC_ERR_IO, "cannot create a socket: %s", strerror(errno));
    int r;
    while ((r = connect(fd, (struct sockaddr *)&a, sizeof a)) != 0 && errno == EINTR) {
    }
    if (r != 0) {
        int e = errno;
        close(fd);
        if (e == EACCES || e == EPERM)
            return conn_fail(c, JC_ERR_NO_PERMISSION, "cannot connect: %s (the socket must be mode 0666)", strerror(e));
        return conn_fail(c, JC_ERR_UNAVAILABLE, "joulecapd is not answering (%s): its socket is there but the daemon "
                         "is not running. Start it (systemctl start joulecapd); to use NVML directly instead, as "
                         "root, remove the stale socket %s", strerror(e), c->path);
    }
    /* The daemon must be root (or this user, for a private one): nobody else may pose as it. */
    struct ucred cr;
    socklen_t l = sizeof cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &l) != 0 || (cr.uid != 0 && cr.uid != geteuid())) {
        close(fd);
        return conn_fail(c, JC_ERR_NO_PERMISSION, "the socket is served by uid %u, neither root nor this user: not "
                         "trusted", (unsigned)cr.uid);
    }
    c->fd = fd;
    char fin[JC__WIRE_MAX_REPLY], req[32];
    jc__wire_line ok;
    snprintf(req, sizeof req, "HELLO %d", JC__WIRE_VERSION);
    jc_status st = conn_call(c, req, NULL, NULL, fin, &ok);
    unsigned long long proto = 0;
    if (st == JC_OK && (jc__wire_get_u64(&ok, "proto", &proto) != 0 || proto < 1 || proto > JC__WIRE_VERSION))
        st = conn_fail(c, JC_ERR_NOT_SUPPORTED, "speaks protocol %llu; this library speaks %d", proto, JC__WIRE_VERSION);
    if (st != JC_OK) {
        conn_close(c);
        return st;
    }
    const char *dir = jc__wire_get(&ok, "state_dir");
    jc__fmt(c->state_dir, sizeof c->state_dir, "%s", dir ? dir : "");
    c->proto = (unsigned)proto;
    return JC_OK;
}

/* ------------------------------------------------------------------------------------------------------
 * GPUs as the daemon lists them.
 * ---------------------------------------------------------------------------------------------------- */

static int get_u32(jc__wire_line *l, const char *key, unsigned *v) {
    unsigned long long x;
    if (jc__wire_get_u64(l, key, &x) != 0 || x > 0xffffffffull) return -1;
    *v = (unsigned)x;
    return 0;
}

/* One holder's fields (prefix "" for the lease, "p_" for the persistent cap). */
typedef struct holder {
    unsigned saved, set, uid, pid;
    char user[64], command[256];
    double since;
} holder;

static int get_holder(jc__wire_line *l, const char *prefix, holder *h) {
    char k[32];
#define K(name) (snprintf(k, sizeof k, "%s%s", prefix, name), k)
    memset(h, 0, sizeof *h);
    const char *user, *cmd, *since;
    if (get_u32(l, K("saved_mw"), &h->saved) || get_u32(l, K("set_mw"), &h->set) || get_u32(l, K("uid"), &h->uid) ||
        get_u32(l, K("pid"), &h->pid) || !(user = jc__wire_get(l, K("user"))) ||
        !(cmd = jc__wire_get(l, K("command"))) || !(since = jc__wire_get(l, K("since"))))
        return -1;
#undef K
    char *end = NULL;
    h->since = strtod(since, &end);
    if (end == since || *end || !(h->since >= 0 && h->since < 1e11)) return -1;
    jc__fmt(h->user, sizeof h->user, "%s", user);
    jc__fmt(h->command, sizeof h->command, "%s", cmd);
    return 0;
}

int jc__capd_parse_gpu(char *line, size_t len, jc_cap_info *info, int *present) {
    memset(info, 0, sizeof *info);
    jc__wire_line l;
    char why[200];
    if (jc__wire_split(line, len, &l, why, sizeof why) != 0 || strcmp(l.tok[0], "GPU") != 0) return -1;
    const char *uuid = jc__wire_get(&l, "uuid"), *name = jc__wire_get(&l, "name"), *pci = jc__wire_get(&l, "pci");
    const char *nvml = jc__wire_get(&l, "nvml"), *who = jc__wire_get(&l, "holder");
    unsigned p, lim, enf, def, lo, hi;
    if (!uuid || !jc__wire_uuid_ok(uuid) || !name || !pci || !nvml || !who || get_u32(&l, "present", &p) || p > 1 ||
        get_u32(&l, "limit_mw", &lim) || get_u32(&l, "enforced_mw", &enf) || get_u32(&l, "default_mw", &def) ||
        get_u32(&l, "min_mw", &lo) || get_u32(&l, "max_mw", &hi))
        return -1;
    unsigned ni = 0;
    if (strcmp(nvml, "-1") == 0) info->nvml_index = -1;
    else if (jc__wire_u32(nvml, &ni) == 0 && ni < 100000) info->nvml_index = (int)ni;
    else return -1;
    *present = (int)p;
    info->index = -1;
    jc__fmt(info->uuid, sizeof info->uuid, "%s", uuid);
    jc__fmt(info->name, sizeof info->name, "%s", name);
    jc__fmt(info->pci_bus_id, sizeof info->pci_bus_id, "%s", pci);
    info->limit_w = jc__w_of(lim);
    info->enforced_limit_w = jc__w_of(enf);
    info->default_limit_w = jc__w_of(def);
    info->min_limit_w = jc__w_of(lo);
    info->max_limit_w = jc__w_of(hi);
    info->saved_limit_w = info->set_limit_w = info->persistent_saved_limit_w = NAN;
    holder lease, pers;
    int has_lease = get_holder(&l, "", &lease) == 0, has_pers = get_holder(&l, "p_", &pers) == 0;
    const holder *h = NULL;
    if (strcmp(who, "none") == 0) {
        info->manager = JC_CAP_MANAGER_NONE;
    } else if (strcmp(who, "lease") == 0 || strcmp(who, "pending") == 0) {
        if (!has_lease) return -1;
        info->manager = who[0] == 'l' ? JC_CAP_MANAGER_SESSION : JC_CAP_MANAGER_STALE;
        h = &lease;
        if (has_pers) info->persistent_saved_limit_w = jc__w_of(pers.saved);
    } else if (strcmp(who, "persistent") == 0) {
        if (!has_pers) return -1;
        info->manager = JC_CAP_MANAGER_PERSISTENT;
        h = &pers;
    } else if (strcmp(who, "broken") == 0) {
        info->manager = JC_CAP_MANAGER_DAMAGED;
        const char *b = jc__wire_get(&l, "broken");
        jc__fmt(info->error, sizeof info->error, "%s", b ? b : "damaged journal");
    } else {
        return -1;
    }
    if (h) {
        info->saved_limit_w = jc__w_of(h->saved);
        info->set_limit_w = jc__w_of(h->set);
        info->owner_pid = (int)h->pid;
        info->owner_uid = h->uid;
        jc__fmt(info->owner_user, sizeof info->owner_user, "%s", h->user);
        jc__fmt(info->owner_command, sizeof info->owner_command, "%s", h->command);
        info->journal_created = h->since;
    }
    return 0;
}

typedef struct listing {
    conn *c;
    jc_cap_info *info; /* MAX_LISTED */
    int present[MAX_LISTED];
    int n, bad;
} listing;

static int on_gpu(void *arg, char *line, size_t len) {
    listing *L = arg;
    if (L->n >= MAX_LISTED) return 0; /* more than this library tracks: ignored */
    if (jc__capd_parse_gpu(line, len, &L->info[L->n], &L->present[L->n]) != 0) return -1;
    jc_cap_info *i = &L->info[L->n];
    if (i->manager != JC_CAP_MANAGER_NONE && L->c->state_dir[0])
        jc__fmt(i->journal_path, sizeof i->journal_path, "%s/%s.journal", L->c->state_dir, i->uuid);
    L->n++;
    return 0;
}

static jc_status fetch(conn *c, listing *L) {
    memset(L, 0, sizeof *L);
    L->c = c;
    L->info = calloc(MAX_LISTED, sizeof *L->info);
    if (!L->info) return jc__fail(JC_ERR_NO_MEMORY, "out of memory");
    char fin[JC__WIRE_MAX_REPLY];
    jc__wire_line ok;
    jc_status st = conn_call(c, "LIST", on_gpu, L, fin, &ok);
    if (st == JC_OK && jc__wire_get(&ok, "nvml"))
        st = conn_fail(c, JC_ERR_UNAVAILABLE, "joulecapd cannot use NVML: %s", jc__wire_get(&ok, "nvml"));
    return st;
}

/* The listing's GPUs that sel names, in this process's CUDA numbering: their positions in L go to pos[0..k),
 * and every listed GPU gets its CUDA index (-1: not visible). */
static jc_status choose(listing *L, const char *sel, int *pos, int *k) {
    jc__gpu_ident ids[JC_MAX_DEVICES];
    int where[JC_MAX_DEVICES], n = 0;
    for (int i = 0; i < L->n && n < JC__CAP_MAX_GPUS; i++) {
        if (!L->present[i]) continue;
        memset(&ids[n], 0, sizeof ids[n]);
        jc__fmt(ids[n].uuid, sizeof ids[n].uuid, "%s", L->info[i].uuid);
        jc__fmt(ids[n].name, sizeof ids[n].name, "%s", L->info[i].name);
        jc__fmt(ids[n].pci_bus_id, sizeof ids[n].pci_bus_id, "%s", L->info[i].pci_bus_id);
        where[n++] = i;
    }
    int nvml_idx[JC_MAX_DEVICES], cuda_idx[JC_MAX_DEVICES], got = 0;
    char note[512];
    jc_status st = jc__gpu_select(ids, n, getenv("CUDA_VISIBLE_DEVICES"), getenv("CUDA_DEVICE_ORDER"),
                                  sel ? sel : "all", nvml_idx, cuda_idx, &got, note, sizeof note);
    if (st != JC_OK) return st;
    /* Every GPU gets its CUDA index (or -1) for what is reported. */
    for (int i = 0; i < L->n; i++) L->info[i].index = -1;
    int all_n[JC_MAX_DEVICES], all_c[JC_MAX_DEVICES], na = 0;
    if (jc__gpu_select(ids, n, getenv("CUDA_VISIBLE_DEVICES"), getenv("CUDA_DEVICE_ORDER"), "all", all_n, all_c, &na,
                       note, sizeof note) == JC_OK)
        for (int m = 0; m < na; m++) L->info[where[all_n[m]]].index = all_c[m];
    *k = 0;
    for (int m = 0; m < got; m++) pos[(*k)++] = where[nvml_idx[m]];
    jc__clear_detail();
    return JC_OK;
}

static void listing_free(listing *L) {
    free(L->info);
    L->info = NULL;
}

/* A jc__capgpu with what the range check and the labels need. */
static void as_capgpu(const jc_cap_info *i, jc__capgpu *g) {
    memset(g, 0, sizeof *g);
    g->cuda_index = i->index;
    g->nvml_index = i->nvml_index;
    jc__fmt(g->id.uuid, sizeof g->id.uuid, "%s", i->uuid);
    jc__fmt(g->id.name, sizeof g->id.name, "%s", i->name);
    g->min_mw = isnan(i->min_limit_w) ? 0 : (unsigned)llround(i->min_limit_w * 1000);
    g->max_mw = isnan(i->max_limit_w) ? 0 : (unsigned)llround(i->max_limit_w * 1000);
}

static const char *label_of(const jc_cap_info *i, char *buf, size_t len) {
    jc__capgpu g;
    as_capgpu(i, &g);
    return jc__capgpu_label(&g, buf, len);
}

/* JC_ERR_BUSY when a selected GPU is leased (checked before any change). */
static jc_status check_free(conn *c, const jc_cap_info *i) {
    char label[256];
    label_of(i, label, sizeof label);
    if (i->manager == JC_CAP_MANAGER_DAMAGED) return conn_fail(c, JC_ERR_IO, "%s: %s", label, i->error);
    if (i->manager != JC_CAP_MANAGER_SESSION && i->manager != JC_CAP_MANAGER_STALE) return JC_OK;
    return conn_fail(c, JC_ERR_BUSY, "%s is leased by user %s (uid %u), process %d (%s)%s; nothing was changed", label,
                     i->owner_user, i->owner_uid, i->owner_pid, i->owner_command,
                     i->manager == JC_CAP_MANAGER_STALE ? ", whose limit joulecapd has not put back yet" : "");
}

/* ------------------------------------------------------------------------------------------------------
 * Reads.
 * ---------------------------------------------------------------------------------------------------- */

jc_status jc__capd_list(const jc_cap_options *opts, jc_cap_info *out, int max, int *count) {
    *count = 0;
    conn c;
    jc_status st = conn_open(&c);
    if (st != JC_OK) return st;
    listing L;
    st = fetch(&c, &L);
    conn_close(&c);
    int pos[JC_MAX_DEVICES], k = 0;
    if (st == JC_OK) st = choose(&L, opts ? opts->gpus : NULL, pos, &k);
    for (int m = 0; st == JC_OK && m < k && m < max; m++) out[(*count)++] = L.info[pos[m]];
    listing_free(&L);
    if (st == JC_OK) jc__clear_detail();
    return st;
}

/* ------------------------------------------------------------------------------------------------------
 * Sessions: one connection, a lease per GPU.
 * ---------------------------------------------------------------------------------------------------- */

struct jc__capd_session {
    pthread_mutex_t lock;
    conn c;
    int owner_pid;
    int n;
    jc_cap_info gpus[JC__CAP_MAX_GPUS]; /* as at open, index = CUDA index */
    unsigned set_mw[JC__CAP_MAX_GPUS];  /* the limit set last; 0: not changed */
};

static void session_free(jc__capd_session *s) {
    conn_close(&s->c);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

jc_status jc__capd_session_open(const jc_cap_options *opts, jc__capd_session **out) {
    *out = NULL;
    jc__capd_session *s = calloc(1, sizeof *s);
    if (!s) return jc__fail(JC_ERR_NO_MEMORY, "cannot allocate a cap session");
    pthread_mutex_init(&s->lock, NULL);
    s->owner_pid = (int)getpid();
    jc_status st = conn_open(&s->c);
    if (st != JC_OK) {
        pthread_mutex_destroy(&s->lock);
        free(s);
        return st;
    }
    listing L;
    st = fetch(&s->c, &L);
    int pos[JC_MAX_DEVICES], k = 0;
    if (st == JC_OK) st = choose(&L, opts ? opts->gpus : NULL, pos, &k);
    if (st == JC_OK && k == 0)
        st = jc__fail(JC_ERR_INVALID_ARGUMENT, "the GPU selection '%s' names no GPU: a cap session needs one",
                      opts && opts->gpus ? opts->gpus : "all");
    for (int m = 0; st == JC_OK && m < k && s->n < JC__CAP_MAX_GPUS; m++) s->gpus[s->n++] = L.info[pos[m]];
    listing_free(&L);
    /* The leases; a failure closes the connection, which ends those already taken. */
    for (int i = 0; st == JC_OK && i < s->n; i++) {
        char req[160], fin[JC__WIRE_MAX_REPLY];
        jc__wire_line ok;
        snprintf(req, sizeof req, "TAKE %s", s->gpus[i].uuid);
        st = conn_call(&s->c, req, NULL, NULL, fin, &ok);
    }
    if (st != JC_OK) {
        session_free(s);
        return st;
    }
    *out = s;
    jc__clear_detail();
    return JC_OK;
}

static jc_status check_owner(const jc__capd_session *s) {
    if ((int)getpid() != s->owner_pid)
        return jc__fail(JC_ERR_STATE, "this cap session belongs to process %d (this is a forked child): its caps "
                        "can only be changed there", s->owner_pid);
    return JC_OK;
}

static jc_status targets(const jc__capd_session *s, int gpu, int *idx, int *n) {
    *n = 0;
    for (int i = 0; i < s->n; i++)
        if (gpu == -1 || s->gpus[i].index == gpu) idx[(*n)++] = i;
    if (*n) return JC_OK;
    char list[512] = "";
    size_t used = 0;
    for (int i = 0; i < s->n && used + 1 < sizeof list; i++) {
        int w = snprintf(list + used, sizeof list - used, "%s%d", i ? ", " : "", s->gpus[i].index);
        if (w < 0) break;
        used += (size_t)w;
    }
    return jc__fail(JC_ERR_NOT_FOUND, "GPU %d is not one of this cap session's GPUs (%s)", gpu, list);
}

/* One request naming GPU i ("SET uuid mW", "RESTORE uuid"); *mw gets limit_mw of the reply. */
static jc_status gpu_call(jc__capd_session *s, const char *verb, int i, unsigned arg_mw, unsigned *mw) {
    char req[200], fin[JC__WIRE_MAX_REPLY];
    jc__wire_line ok;
    if (arg_mw) snprintf(req, sizeof req, "%s %s %u", verb, s->gpus[i].uuid, arg_mw);
    else snprintf(req, sizeof req, "%s %s", verb, s->gpus[i].uuid);
    jc_status st = conn_call(&s->c, req, NULL, NULL, fin, &ok);
    if (st == JC_OK && mw && get_u32(&ok, "limit_mw", mw) != 0) st = conn_fail(&s->c, JC_ERR_IO, "malformed reply");
    return st;
}

jc_status jc__capd_session_set(jc__capd_session *s, int gpu, double watts) {
    pthread_mutex_lock(&s->lock);
    int idx[JC__CAP_MAX_GPUS], n = 0;
    unsigned mw[JC__CAP_MAX_GPUS];
    jc_status st = check_owner(s);
    if (st == JC_OK) st = targets(s, gpu, idx, &n);
    for (int k = 0; st == JC_OK && k < n; k++) {
        jc__capgpu g;
        as_capgpu(&s->gpus[idx[k]], &g);
        st = jc__capgpu_check(&g, watts, &mw[k]);
    }
    for (int k = 0; st == JC_OK && k < n; k++) {
        unsigned got = 0;
        st = gpu_call(s, "SET", idx[k], mw[k], &got);
        if (st == JC_OK) s->set_mw[idx[k]] = got;
    }
    pthread_mutex_unlock(&s->lock);
    if (st == JC_OK) jc__clear_detail();
    return st;
}

jc_status jc__capd_session_reset(jc__capd_session *s, int gpu, jc_cap_reset_kind *did) {
    pthread_mutex_lock(&s->lock);
    int idx[JC__CAP_MAX_GPUS], n = 0;
    jc_status st = check_owner(s);
    if (st == JC_OK) st = targets(s, gpu, idx, &n);
    for (int k = 0; st == JC_OK && k < n; k++) {
        int i = idx[k];
        if (s->set_mw[i]) {
            st = gpu_call(s, "RESTORE", i, 0, NULL);
            if (st == JC_OK) s->set_mw[i] = 0;
            if (st == JC_OK && did) *did = JC_CAP_RESET_SAVED;
        } else {
            char label[256];
            double def = s->gpus[i].default_limit_w;
            unsigned got = 0;
            if (isnan(def))
                st = jc__fail(JC_ERR_NOT_SUPPORTED, "%s does not report its default power limit",
                              label_of(&s->gpus[i], label, sizeof label));
            else
                st = gpu_call(s, "SET", i, (unsigned)llround(def * 1000), &got);
            if (st == JC_OK) s->set_mw[i] = got;
            if (st == JC_OK && did) *did = JC_CAP_RESET_DEFAULT;
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (st == JC_OK) jc__clear_detail();
    return st;
}

jc_status jc__capd_session_restore(jc__capd_session *s) {
    pthread_mutex_lock(&s->lock);
    jc_status st = check_owner(s);
    for (int i = 0; st == JC_OK && i < s->n; i++) {
        if (!s->set_mw[i]) continue;
        st = gpu_call(s, "RESTORE", i, 0, NULL);
        if (st == JC_OK) s->set_mw[i] = 0;
    }
    pthread_mutex_unlock(&s->lock);
    if (st == JC_OK) jc__clear_detail();
    return st;
}

jc_status jc__capd_session_close(jc__capd_session *s) {
    if (!s) return JC_OK;
    if ((int)getpid() != s->owner_pid) {
        session_free(s); /* a forked child: its copy of the connection only */
        return JC_OK;
    }
    pthread_mutex_lock(&s->lock);
    jc_status first = JC_OK;
    char detail[1024] = "";
    for (int i = 0; i < s->n; i++) {
        jc_status st = gpu_call(s, "RELEASE", i, 0, NULL);
        if (st == JC_ERR_UNAVAILABLE) break; /* the connection is gone: so are its leases */
        if (st != JC_OK && first == JC_OK) {
            first = st;
            jc__fmt(detail, sizeof detail, "%s", jc_last_detail());
        }
    }
    pthread_mutex_unlock(&s->lock);
    session_free(s);
    if (first != JC_OK) return jc__fail(first, "%s", detail);
    jc__clear_detail();
    return JC_OK;
}

int jc__capd_session_gpu_count(const jc__capd_session *s) { return s ? s->n : 0; }

jc_status jc__capd_session_gpu(jc__capd_session *s, int i, jc_cap_info *out) {
    if (i < 0 || i >= s->n)
        return jc__fail(JC_ERR_NOT_FOUND, "GPU %d of the session: it has %d (0 to %d)", i, s->n, s->n - 1);
    pthread_mutex_lock(&s->lock);
    listing L;
    jc_status st = fetch(&s->c, &L);
    int found = 0;
    for (int k = 0; st == JC_OK && k < L.n; k++) {
        if (strcmp(L.info[k].uuid, s->gpus[i].uuid) != 0) continue;
        *out = L.info[k];
        out->index = s->gpus[i].index;
        found = 1;
    }
    listing_free(&L);
    pthread_mutex_unlock(&s->lock);
    if (st == JC_OK && !found) st = conn_fail(&s->c, JC_ERR_NOT_FOUND, "GPU %s is no longer listed", s->gpus[i].uuid);
    if (st == JC_OK) jc__clear_detail();
    return st;
}

const char *jc__capd_session_note(const jc__capd_session *s) {
    (void)s;
    return "";
}

/* ------------------------------------------------------------------------------------------------------
 * Persistent caps, reset, repair.
 * ---------------------------------------------------------------------------------------------------- */

jc_status jc__capd_set_persistent(const char *gpu, double watts, char *note, size_t note_len) {
    conn c;
    jc_status st = conn_open(&c);
    if (st != JC_OK) return st;
    listing L;
    st = fetch(&c, &L);
    int pos[JC_MAX_DEVICES], k = 0;
    unsigned mw[JC_MAX_DEVICES];
    if (st == JC_OK) st = choose(&L, gpu, pos, &k);
    if (st == JC_OK && k == 0) st = jc__fail(JC_ERR_NOT_FOUND, "the selection '%s' names no GPU", gpu ? gpu : "all");
    /* Every GPU is checked before any changes. */
    for (int m = 0; st == JC_OK && m < k; m++) {
        jc__capgpu g;
        as_capgpu(&L.info[pos[m]], &g);
        st = jc__capgpu_check(&g, watts, &mw[m]);
        if (st == JC_OK) st = check_free(&c, &L.info[pos[m]]);
    }
    (void)note;
    (void)note_len; /* nothing is repaired on the way: the daemon has no stale journals to report */
    for (int m = 0; st == JC_OK && m < k; m++) {
        char req[200], fin[JC__WIRE_MAX_REPLY];
        jc__wire_line ok;
        snprintf(req, sizeof req, "PERSIST %s %u", L.info[pos[m]].uuid, mw[m]);
        st = conn_call(&c, req, NULL, NULL, fin, &ok);
    }
    listing_free(&L);
    conn_close(&c);
    if (st == JC_OK) jc__clear_detail();
    return st;
}

jc_status jc__capd_reset(const char *gpu, jc_cap_reset_kind *did, double *limit_w, char *note, size_t note_len) {
    conn c;
    jc_status st = conn_open(&c);
    if (st != JC_OK) return st;
    listing L;
    st = fetch(&c, &L);
    int pos[JC_MAX_DEVICES], k = 0;
    if (st == JC_OK) st = choose(&L, gpu, pos, &k);
    if (st == JC_OK && k != 1)
        st = jc__fail(JC_ERR_INVALID_ARGUMENT, "'%s' selects %d GPUs: name exactly one (a CUDA index or a UUID)", gpu, k);
    if (st == JC_OK) {
        char req[200], fin[JC__WIRE_MAX_REPLY], label[256];
        jc__wire_line ok;
        snprintf(req, sizeof req, "RESET %s", L.info[pos[0]].uuid);
        st = conn_call(&c, req, NULL, NULL, fin, &ok);
        const char *what = st == JC_OK ? jc__wire_get(&ok, "did") : NULL;
        unsigned mw = 0;
        if (st == JC_OK && (!what || get_u32(&ok, "limit_mw", &mw) != 0))
            st = conn_fail(&c, JC_ERR_IO, "malformed reply to RESET");
        if (st == JC_OK) {
            int saved = strcmp(what, "saved") == 0;
            if (did) *did = saved ? JC_CAP_RESET_SAVED : JC_CAP_RESET_DEFAULT;
            if (limit_w) *limit_w = jc__w_of(mw);
            label_of(&L.info[pos[0]], label, sizeof label);
            if (saved)
                jc__note_append(note, note_len, "%s: put back the limit saved before joulecap changed it (%g W), via "
                                "joulecapd (%s)", label, mw / 1000.0, c.path);
            else
                jc__note_append(note, note_len, "%s: joulecap had not changed its limit; set the default limit %g W, "
                                "via joulecapd (%s)", label, mw / 1000.0, c.path);
        }
    }
    listing_free(&L);
    conn_close(&c);
    if (st == JC_OK) jc__clear_detail();
    return st;
}

typedef struct repair {
    listing *L;
    jc_cap_restore_entry *out;
    int max, n;
    jc_status first;
    char first_detail[600];
} repair;

static int on_journal(void *arg, char *line, size_t len) {
    repair *R = arg;
    jc__wire_line l;
    char why[200];
    if (jc__wire_split(line, len, &l, why, sizeof why) != 0 || strcmp(l.tok[0], "JOURNAL") != 0) return -1;
    const char *uuid = jc__wire_get(&l, "uuid"), *was = jc__wire_get(&l, "was"), *action = jc__wire_get(&l, "action");
    const char *status = jc__wire_get(&l, "status"), *note = jc__wire_get(&l, "note");
    unsigned mw = 0, pid = 0;
    if (!uuid || !was || !action || !status || !note || get_u32(&l, "limit_mw", &mw) || get_u32(&l, "pid", &pid))
        return -1;
    jc_cap_restore_entry e;
    memset(&e, 0, sizeof e);
    jc__fmt(e.uuid, sizeof e.uuid, "%s", uuid);
    e.index = -1;
    for (int i = 0; i < R->L->n; i++)
        if (strcmp(R->L->info[i].uuid, uuid) == 0) e.index = R->L->info[i].index;
    e.action = strcmp(action, "restored") == 0 ? JC_CAP_RESTORED
             : strcmp(action, "left-live") == 0 ? JC_CAP_LEFT_LIVE : JC_CAP_RESTORE_FAILED;
    e.status = strcmp(status, "OK") == 0 ? JC_OK : status_of(status);
    if (e.action == JC_CAP_RESTORE_FAILED && e.status == JC_OK) e.status = JC_ERR_IO;
    e.limit_w = e.action == JC_CAP_RESTORED ? jc__w_of(mw) : NAN;
    e.owner_pid = strcmp(was, "persistent") == 0 ? 0 : (int)pid;
    e.was = strcmp(was, "persistent") == 0 ? JC_CAP_MANAGER_PERSISTENT
          : strcmp(was, "session") == 0 ? JC_CAP_MANAGER_SESSION
          : strcmp(was, "broken") == 0 ? JC_CAP_MANAGER_DAMAGED : JC_CAP_MANAGER_STALE;
    jc__fmt(e.note, sizeof e.note, "%s", note);
    if (e.action == JC_CAP_RESTORE_FAILED && R->first == JC_OK) {
        R->first = e.status;
        jc__fmt(R->first_detail, sizeof R->first_detail, "%s: %s", uuid, note);
    }
    if (R->n < R->max) R->out[R->n++] = e;
    return 0;
}

jc_status jc__capd_restore(const jc_cap_options *opts, jc_cap_restore_entry *out, int max, int *count) {
    conn c;
    jc_status st = conn_open(&c);
    if (st != JC_OK) return st;
    listing L;
    st = fetch(&c, &L);
    int pos[JC_MAX_DEVICES], k = 0;
    if (st == JC_OK) st = choose(&L, opts && opts->gpus ? opts->gpus : "all", pos, &k);
    repair R = {&L, out, max, 0, JC_OK, ""};
    char fin[JC__WIRE_MAX_REPLY];
    jc__wire_line ok;
    if (st == JC_OK && !(opts && opts->gpus)) st = conn_call(&c, "REPAIR", on_journal, &R, fin, &ok);
    for (int m = 0; st == JC_OK && opts && opts->gpus && m < k; m++) {
        char req[160];
        snprintf(req, sizeof req, "REPAIR %s", L.info[pos[m]].uuid);
        st = conn_call(&c, req, on_journal, &R, fin, &ok);
    }
    listing_free(&L);
    conn_close(&c);
    if (count) *count = R.n;
    if (st != JC_OK) return st;
    if (R.first != JC_OK) return conn_fail(&c, R.first, "%s", R.first_detail);
    jc__clear_detail();
    return JC_OK;
}

/* ------------------------------------------------------------------------------------------------------
 * A connection for requests other than caps (src/caps/job.c).
 * ---------------------------------------------------------------------------------------------------- */

struct jc__capd_conn {
    conn c;
};

jc_status jc__capd_connect(jc__capd_conn **out, unsigned *proto) {
    *out = NULL;
    jc__capd_conn *k = calloc(1, sizeof *k);
    if (!k) return jc__fail(JC_ERR_NO_MEMORY, "out of memory");
    jc_status st = conn_open(&k->c);
    if (st != JC_OK) {
        free(k);
        return st;
    }
    *proto = k->c.proto;
    *out = k;
    return JC_OK;
}

jc_status jc__capd_request(jc__capd_conn *k, const char *req, char *fin, jc__wire_line *ok) {
    return conn_call(&k->c, req, NULL, NULL, fin, ok);
}

const char *jc__capd_path(const jc__capd_conn *k) { return k->c.path; }

void jc__capd_disconnect(jc__capd_conn *k) {
    if (!k) return;
    conn_close(&k->c);
    free(k);
}
