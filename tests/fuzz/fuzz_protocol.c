/* libFuzzer harness for what joulecapd and its clients read from others: the first byte picks the parser.
 *   0  a client's byte stream: line framing, then every request (daemon/protocol.c)
 *   1  a reply line of the daemon's LIST, as the library parses it (src/caps/client.c)
 *   2  a journal file (daemon/journal.c); one that parses must survive a format / parse round trip
 *   3  the config file (daemon/config.c)
 *   4  a SERIES reply of the node's sampler, as the library parses it (src/sampler/remote.c): knots strictly
 *      increasing in time, finite, within bounds, at most JC__REMOTE_MAX_KNOTS
 *   5  a GPU reply of the node's sampler (src/sampler/remote.c)
 * Build: cmake -DCMAKE_C_COMPILER=clang -DJC_FUZZ=ON; run: fuzz_protocol -max_total_time=60 CORPUS_DIR.
 * tests/fuzz/standalone.c runs the same function without libFuzzer. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "caps/client.h"
#include "jcd.h"
#include "sampler/remote.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void stream(const char *p, size_t n) {
    jcd_inbuf in;
    memset(&in, 0, sizeof in);
    size_t off = 0;
    while (off < n) {
        size_t room;
        char *dst = jcd_inbuf_space(&in, &room);
        if (room == 0) return; /* the daemon closes such a client */
        size_t chunk = 1 + (off * 7919u) % 211u; /* uneven reads, as from a socket */
        if (chunk > room) chunk = room;
        if (chunk > n - off) chunk = n - off;
        memcpy(dst, p + off, chunk);
        in.used += chunk;
        off += chunk;
        char line[JC__WIRE_MAX_REQUEST];
        size_t len;
        int r;
        while ((r = jcd_inbuf_next(&in, line, &len)) == 1) {
            jcd_request q;
            char why[300];
            if (len >= JC__WIRE_MAX_REQUEST || line[len] != '\0') abort();
            if (jcd_request_parse(line, len, &q, why, sizeof why) != 0) return; /* closes the client */
            if (q.verb < JCD_HELLO || q.verb > JCD_SERIES) abort();
            int uuid = q.verb != JCD_HELLO && q.verb != JCD_LIST && q.verb != JCD_REPAIR && q.verb != JCD_GPUS &&
                       q.verb != JCD_GPU;
            if (q.verb == JCD_SERIES && q.fine > 1) abort();
            if (uuid && !jc__wire_uuid_ok(q.uuid)) abort();
            if ((q.verb == JCD_SET || q.verb == JCD_PERSIST) && q.mw == 0) abort();
        }
        if (r < 0) return;
    }
}

static void reply(const char *p, size_t n) {
    char buf[JC__WIRE_MAX_REPLY];
    if (n >= sizeof buf) n = sizeof buf - 1;
    memcpy(buf, p, n);
    jc_cap_info info;
    int present = 0;
    if (jc__capd_parse_gpu(buf, n, &info, &present) == 0) {
        if (strlen(info.uuid) >= sizeof info.uuid || strlen(info.owner_command) >= sizeof info.owner_command) abort();
        if (present != 0 && present != 1) abort();
    }
}

static int same_holder(const jcd_holder *a, const jcd_holder *b) {
    return a->active == b->active && a->original_mw == b->original_mw && a->set_mw == b->set_mw &&
           a->uid == b->uid && a->pid == b->pid && a->pid_start == b->pid_start && strcmp(a->user, b->user) == 0 &&
           strcmp(a->command, b->command) == 0 && fabs(a->since - b->since) < 0.0011;
}

static void journal(const char *p, size_t n) {
    jcd_journal j, k;
    char why[300];
    if (jcd_journal_parse(p, n, &j, why, sizeof why) != 0) return;
    char text[JCD_JOURNAL_MAX];
    int len = jcd_journal_format(&j, text, sizeof text);
    if (len < 0) return; /* a record that would not fit is never written */
    if (jcd_journal_parse(text, (size_t)len, &k, why, sizeof why) != 0) abort();
    if (strcmp(j.uuid, k.uuid) != 0 || !same_holder(&j.lease, &k.lease) || !same_holder(&j.persistent, &k.persistent))
        abort();
}

static void config(const char *p, size_t n) {
    static jcd_config c;
    char err[600];
    if (jcd_config_parse(p, n, "fuzz.conf", &c, err, sizeof err) == 0) {
        if (c.n < 0 || c.n > JCD_MAX_RULES) abort();
        for (int i = 0; i < c.n; i++)
            if (!c.rules[i].name[0]) abort();
    }
}

static void series_reply(const char *p, size_t n) {
    char buf[JC__WIRE_MAX_REPLY];
    if (n >= sizeof buf) n = sizeof buf - 1;
    memcpy(buf, p, n);
    buf[n] = '\0';
    static jc__remote_series s;
    if (jc__remote_parse_series(buf, n, &s) != 0) return;
    if (s.nknots < 0 || s.nknots > JC__REMOTE_MAX_KNOTS || s.health < 0 || s.health > JC_HEALTH_LOST) abort();
    if (s.more && s.nknots == 0) abort();
    if (!s.sid[0] || strlen(s.sid) >= sizeof s.sid || strlen(s.health_note) >= sizeof s.health_note) abort();
    for (int i = 0; i < s.nknots; i++) {
        if (s.knot_t[i] == 0 || !isfinite(s.knot_j[i]) || fabs(s.knot_j[i]) > 1e15) abort();
        if (i && s.knot_t[i] <= s.knot_t[i - 1]) abort();
    }
    if (!isnan(s.power_w) && !(s.power_w >= 0 && s.power_w <= 1e6)) abort();
    if (!isnan(s.util_pct) && !(s.util_pct >= 0 && s.util_pct <= 100)) abort();
    if (!isnan(s.sigma_ns) && !(s.sigma_ns >= 0)) abort();
}

static void gpu_reply(const char *p, size_t n) {
    char buf[JC__WIRE_MAX_REPLY];
    if (n >= sizeof buf) n = sizeof buf - 1;
    memcpy(buf, p, n);
    buf[n] = '\0';
    static jc__remote_gpu g;
    if (jc__remote_parse_gpu(buf, n, &g) != 0) return;
    if (!jc__wire_uuid_ok(g.id.uuid) || !g.id.name[0] || g.nvml_index < 0) abort();
    if ((int)g.info.energy_source < 0 || g.info.energy_source > JC_SOURCE_ESTIMATE) abort();
    if (strlen(g.info.energy_note) >= sizeof g.info.energy_note) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    switch (data[0] % 6) {
    case 0: stream(p, n); break;
    case 1: reply(p, n); break;
    case 2: journal(p, n); break;
    case 3: config(p, n); break;
    case 4: series_reply(p, n); break;
    default: gpu_reply(p, n); break;
    }
    return 0;
}
