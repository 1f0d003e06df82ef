/* joulecapd's requests: line framing and parsing.  Pure functions over hostile bytes (fuzzed by
 * tests/fuzz/fuzz_protocol.c).
 *
 *   HELLO <version>          first request of a connection
 *   LIST                     every GPU, its limits and who holds it
 *   TAKE <uuid>              a lease: this connection becomes the GPU's only writer
 *   SET <uuid> <mW>          under the lease
 *   RESTORE <uuid>           the saved limit back, the lease kept
 *   RELEASE <uuid>           the saved limit back, the lease ended
 *   PERSIST <uuid> <mW>      a persistent cap (kept after the connection, until RESET)
 *   RESET <uuid>             persistent cap -> its saved limit; none -> the default limit
 *   REPAIR [<uuid>]          persistent caps and leases waiting to be put back -> saved limits
 *   ENERGY <job> <uuid> <mJ> protocol 2: adds mJ to the (job, user, GPU) total; job percent-encoded
 *   GPUS                     protocol 3: how many GPUs the node's sampler reads (series.c)
 *   GPU <n>                  protocol 3: GPU n of the sampler: identity, what it can read
 *   SERIES <uuid> <ns> <0|1> protocol 3: the sampler's knots after <ns> (CLOCK_MONOTONIC), its latest sample
 *                            and health; 1: this client needs the counter read at every step */
#include <string.h>

#include "jcd.h"

static const struct {
    const char *name;
    jcd_verb verb;
    int args; /* 0 none, 1 version, 2 uuid, 3 uuid + mW, 4 an optional uuid, 5 job + uuid + mJ, 6 a number,
               * 7 uuid + ns + 0|1 */
} VERBS[] = {
    {"HELLO", JCD_HELLO, 1},   {"LIST", JCD_LIST, 0},       {"TAKE", JCD_TAKE, 2},
    {"SET", JCD_SET, 3},       {"RESTORE", JCD_RESTORE, 2}, {"RELEASE", JCD_RELEASE, 2},
    {"PERSIST", JCD_PERSIST, 3}, {"RESET", JCD_RESET, 2},   {"REPAIR", JCD_REPAIR, 4},
    {"ENERGY", JCD_ENERGY, 5},   {"GPUS", JCD_GPUS, 0},       {"GPU", JCD_GPU, 6},
    {"SERIES", JCD_SERIES, 7},
};

/* A plain unsigned decimal of at most 19 digits (no sign, no leading zero): 0 and *v, or -1. */
static int parse_u63(const char *s, unsigned long long *v) {
    unsigned long long x = 0;
    size_t d = 0;
    for (; s[d] >= '0' && s[d] <= '9' && d < 19; d++) x = x * 10 + (unsigned long long)(s[d] - '0');
    if (d == 0 || s[d] != '\0' || (d > 1 && s[0] == '0')) return -1;
    *v = x;
    return 0;
}

/* SERIES <uuid> <since_ns> <0|1> */
static int parse_series(jc__wire_line *l, jcd_request *out, char *why, size_t whylen) {
    if (!jc__wire_uuid_ok(l->tok[1])) {
        jc__fmt(why, whylen, "'%.40s' is not a GPU UUID", l->tok[1]);
        return -1;
    }
    jc__fmt(out->uuid, sizeof out->uuid, "%s", l->tok[1]);
    if (parse_u63(l->tok[2], &out->since_ns) != 0) {
        jc__fmt(why, whylen, "'%.24s' is not an instant in ns (a whole number)", l->tok[2]);
        return -1;
    }
    if (strcmp(l->tok[3], "0") != 0 && strcmp(l->tok[3], "1") != 0) {
        jc__fmt(why, whylen, "'%.16s' is not 0 or 1 (fine reads wanted)", l->tok[3]);
        return -1;
    }
    out->fine = l->tok[3][0] == '1';
    return 0;
}

/* ENERGY <job> <uuid> <mJ>: the job name decoded (printable ASCII, spaces allowed), a whole number of mJ. */
static int parse_energy(jc__wire_line *l, jcd_request *out, char *why, size_t whylen) {
    char job[JC__WIRE_MAX_REQUEST];
    jc__fmt(job, sizeof job, "%s", l->tok[1]);
    size_t n = 0;
    if (jc__wire_decode(job) == 0) {
        for (; job[n]; n++)
            if ((unsigned char)job[n] < 0x20 || (unsigned char)job[n] > 0x7e) break;
    }
    if (n == 0 || job[n] != '\0' || n > JCD_JOB_MAX) {
        jc__fmt(why, whylen, "'%.40s' is not a job name (1 to %d bytes of printable ASCII, percent-encoded)",
                l->tok[1], JCD_JOB_MAX);
        return -1;
    }
    memcpy(out->job, job, n + 1);
    if (!jc__wire_uuid_ok(l->tok[2])) {
        jc__fmt(why, whylen, "'%.40s' is not a GPU UUID", l->tok[2]);
        return -1;
    }
    jc__fmt(out->uuid, sizeof out->uuid, "%s", l->tok[2]);
    const char *e = l->tok[3];
    unsigned long long v = 0;
    size_t d = 0;
    for (; e[d] >= '0' && e[d] <= '9' && d < 14; d++) v = v * 10 + (unsigned long long)(e[d] - '0');
    if (d == 0 || e[d] != '\0' || (d > 1 && e[0] == '0') || v > JCD_ENERGY_MAX_MJ) {
        jc__fmt(why, whylen, "'%.20s' is not an energy in mJ (a whole number, at most %llu)", e, JCD_ENERGY_MAX_MJ);
        return -1;
    }
    out->mj = v;
    return 0;
}

int jcd_request_parse(const char *line, size_t len, jcd_request *out, char *why, size_t whylen) {
    memset(out, 0, sizeof *out);
    if (len >= JC__WIRE_MAX_REQUEST) {
        jc__fmt(why, whylen, "request longer than %d bytes", JC__WIRE_MAX_REQUEST - 1);
        return -1;
    }
    char buf[JC__WIRE_MAX_REQUEST];
    memcpy(buf, line, len);
    jc__wire_line l;
    if (jc__wire_split(buf, len, &l, why, whylen) != 0) return -1;
    int k = -1;
    for (size_t i = 0; i < sizeof VERBS / sizeof VERBS[0]; i++)
        if (strcmp(l.tok[0], VERBS[i].name) == 0) k = (int)i;
    if (k < 0) {
        jc__fmt(why, whylen, "unknown request '%.16s'", l.tok[0]);
        return -1;
    }
    int want = VERBS[k].args == 0 ? 1 : VERBS[k].args == 3 ? 3 : VERBS[k].args == 5 || VERBS[k].args == 7 ? 4 : 2;
    if (VERBS[k].args == 4 && l.n == 1) want = 1;
    if (l.n != want) {
        jc__fmt(why, whylen, "%s takes %d argument%s, not %d", VERBS[k].name, want - 1, want == 2 ? "" : "s",
                l.n - 1);
        return -1;
    }
    out->verb = VERBS[k].verb;
    if (VERBS[k].args == 5) return parse_energy(&l, out, why, whylen);
    if (VERBS[k].args == 7) return parse_series(&l, out, why, whylen);
    if (VERBS[k].args == 6) {
        if (jc__wire_u32(l.tok[1], &out->index) != 0 || out->index >= 100000) {
            jc__fmt(why, whylen, "'%.16s' is not a GPU number", l.tok[1]);
            return -1;
        }
        return 0;
    }
    if (VERBS[k].args == 1) {
        if (jc__wire_u32(l.tok[1], &out->version) != 0 || out->version == 0) {
            jc__fmt(why, whylen, "HELLO needs a protocol version, a positive number");
            return -1;
        }
    } else if (VERBS[k].args >= 2 && l.n >= 2) {
        if (!jc__wire_uuid_ok(l.tok[1])) {
            jc__fmt(why, whylen, "'%.40s' is not a GPU UUID", l.tok[1]);
            return -1;
        }
        jc__fmt(out->uuid, sizeof out->uuid, "%s", l.tok[1]);
        if (VERBS[k].args == 3 && (jc__wire_u32(l.tok[2], &out->mw) != 0 || out->mw == 0)) {
            jc__fmt(why, whylen, "'%.16s' is not a limit in mW (a positive whole number)", l.tok[2]);
            return -1;
        }
    }
    return 0;
}

char *jcd_inbuf_space(jcd_inbuf *in, size_t *room) {
    *room = sizeof in->buf - in->used;
    return in->buf + in->used;
}

int jcd_inbuf_next(jcd_inbuf *in, char *line, size_t *len) {
    char *nl = memchr(in->buf, '\n', in->used);
    if (!nl) {
        *len = 0;
        return in->used >= sizeof in->buf ? -1 : 0;
    }
    size_t n = (size_t)(nl - in->buf);
    memcpy(line, in->buf, n);
    line[n] = '\0';
    *len = n;
    in->used -= n + 1;
    memmove(in->buf, nl + 1, in->used);
    return 1;
}
