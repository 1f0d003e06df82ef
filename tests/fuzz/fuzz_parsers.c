/* libFuzzer harness for the library's parsers of outside input: the first byte picks the parser.
 *   0  a direct-mode cap journal (src/caps/journal.c); one that parses must survive a format / parse round trip
 *   1  a power-limit sweep CSV (src/profiler/sim.c, `joulecap profile --simulate FILE`); one that loads must
 *      hold the documented invariants (>= 2 distinct caps, all values finite and positive, limits ordered),
 *      interpolate to finite positive values, and let the best-cap search and a simulated GPU finish
 *   2  /proc/stat snapshots separated by form feeds (src/sources/procstat.c): utilisation in [0, 100]
 *   3  /proc/cpuinfo (src/sources/cpu_estimate.c): a model, >= 1 thread, an estimate in its bounds
 *   4  one sysfs number file, read by jc__read_u64 / jc__read_text (src/core/files.c)
 *   5  a sysfs tree as text: "== class/powercap/intel-rapl:0/energy_uj", then that file's bytes, and so on.
 *      RAPL (src/sources/rapl.c) and CPU temperature (src/sources/cputemp.c) open on it at the first
 *      "== READ" line, read at each later one (files in between change what they read) and once at the end:
 *      energy is finite and never decreases
 *   6  a /proc/<pid>/stat line, for a journal owner's start time (src/caps/journal.c)
 *   7  CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER and a GPU selection, one a line, "<unset>" for none
 *      (src/sources/gpu_select.c), over 4 GPUs (first byte 7), 3 (15), 2 (23), 1 (31) or none (39)
 * Build: cmake -DCMAKE_C_COMPILER=clang -DJC_FUZZ=ON; run: fuzz_parsers -max_total_time=60 CORPUS_DIR
 * (JC_FUZZ_PARSER=N in the environment: parser N only).
 * Targets 4 and 5 write small files under a directory of their own (in /dev/shm when it exists), removed at
 * exit.  tests/fuzz/standalone.c runs the same function without libFuzzer. */
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "caps/caps_internal.h"
#include "profiler/profiler_internal.h"
#include "sources/cpu.h"
#include "sources/nvml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A NUL-terminated copy (the parsers read C strings; an embedded NUL stays where it was). */
static char *dup_text(const char *p, size_t n) {
    char *s = malloc(n + 1);
    if (!s) abort();
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

static void check_string(const char *s, size_t size) {
    if (memchr(s, '\0', size) == NULL) abort();
}

/* ---- 0: cap journal ---------------------------------------------------------------------------------- */

static void command_line(const char *in, char *out, size_t len) {
    size_t i = 0;
    for (; in[i] && i + 1 < len; i++) out[i] = (unsigned char)in[i] < 0x20 ? ' ' : in[i];
    out[i] = '\0';
}

static void journal(const char *p, size_t n) {
    if (n >= 4096) return; /* jc__journal_read refuses anything that large before parsing it */
    /* The file's name must be its uuid: take the stem from the uuid line, so that the rest gets parsed. */
    char stem[128] = "GPU-fuzz";
    const char *u = memmem(p, n, "\nuuid ", 6);
    if (u) {
        u += 6;
        size_t k = 0;
        while (u + k < p + n && u[k] != '\n' && u[k] != '\0' && k + 1 < sizeof stem) k++;
        memcpy(stem, u, k);
        stem[k] = '\0';
    }
    char *text = dup_text(p, n);
    jc__journal j, k;
    char why[160] = "";
    int r = jc__journal_parse(text, n, stem, &j, why, sizeof why);
    free(text);
    check_string(why, sizeof why);
    if (r != 0) return;
    if (!jc__cap_name_ok(j.uuid) || strcmp(j.uuid, stem) != 0 || j.original_mw == 0) abort();
    if (j.owner_pid < 0 || j.guardian_pid < 0 || !(j.created >= 0 && j.created < 1e11)) abort();
    check_string(j.owner_command, sizeof j.owner_command);
    char out[1024]; /* jc__journal_write's buffer */
    int len = jc__journal_format(&j, out, sizeof out);
    if (len < 0 || (size_t)len >= sizeof out || strlen(out) != (size_t)len) abort(); /* could not rewrite it */
    if (jc__journal_parse(out, (size_t)len, j.uuid, &k, why, sizeof why) != 0) abort();
    char c1[sizeof j.owner_command], c2[sizeof k.owner_command];
    command_line(j.owner_command, c1, sizeof c1);
    command_line(k.owner_command, c2, sizeof c2);
    if (strcmp(j.uuid, k.uuid) != 0 || j.original_mw != k.original_mw || j.set_mw != k.set_mw ||
        j.base_mw != k.base_mw || j.owner_pid != k.owner_pid || j.owner_start != k.owner_start ||
        j.guardian_pid != k.guardian_pid || j.guardian_start != k.guardian_start || strcmp(c1, c2) != 0 ||
        fabs(j.created - k.created) > 0.0011)
        abort();
}

/* ---- 1: sweep CSV ------------------------------------------------------------------------------------ */

static void sweep(const char *p, size_t n) {
    if (n == 0) return; /* fmemopen wants a size */
    char *text = dup_text(p, n);
    FILE *f = fmemopen(text, n, "r");
    if (!f) abort();
    jc_sweep *s = NULL;
    jc_status st = jc__sweep_read(f, "fuzz.csv", &s);
    fclose(f);
    free(text);
    if (st != JC_OK) {
        if (s) abort();
        return;
    }
    const double *cap, *t, *pw;
    size_t m = jc__sweep_points(s, &cap, &t, &pw);
    if (m < 2) abort();
    for (size_t i = 0; i < m; i++) {
        if (!(isfinite(cap[i]) && cap[i] > 0 && isfinite(t[i]) && t[i] > 0 && isfinite(pw[i]) && pw[i] > 0))
            abort();
        if (i && !(cap[i] > cap[i - 1])) abort();
    }
    double mn, mx, df;
    jc_sweep_limits(s, &mn, &mx, &df);
    if (!(isfinite(mn) && isfinite(mx) && isfinite(df) && mn > 0 && mn < mx && df >= mn && df <= mx)) abort();
    /* Interpolated values stay finite and positive: at the limits, beyond the ends, at every recorded cap
     * and halfway to the next. */
    double at[200] = {0, mn, df, mx, 0.5 * (mn + mx), 1e300};
    size_t nat = 6;
    for (size_t i = 0; i < m && nat + 2 <= sizeof at / sizeof at[0]; i++) {
        at[nat++] = cap[i];
        if (i + 1 < m) at[nat++] = 0.5 * (cap[i] + cap[i + 1]);
    }
    for (size_t i = 0; i < nat; i++) {
        double tt, pp;
        jc_sweep_eval(s, at[i], &tt, &pp);
        if (!(isfinite(tt) && tt > 0 && isfinite(pp) && pp > 0)) abort();
    }
    /* What `joulecap profile --simulate` does with it: the best cap on a 1 W grid, a simulated GPU.  (Not
     * for spans of 2e4 to 1e6 W: they only make the search's loop longer, and the fuzzer 10 times slower;
     * longer spans are refused at once.) */
    double bc, bv;
    int search = !(df - mn > 2e4 && df - mn <= 1e6);
    if (search && jc_sweep_best_cap(s, JC_OBJECTIVE_ED2P, 0.1, 0.5, 1.0, &bc, &bv) == JC_OK && isfinite(bc) &&
        !(bc >= mn - 1e-6 && bc <= df + 1e-6))
        abort();
    jc_simgpu *g = NULL;
    if (jc_simgpu_new(s, NULL, &g) == JC_OK) {
        double te, e;
        jc_simgpu_step(g, &te, &e);
        if (jc_simgpu_set_cap(g, mn) != JC_OK) abort();
        jc_simgpu_step(g, &te, &e);
        if (jc_simgpu_set_cap(g, mx) != JC_OK) abort();
        jc_simgpu_step(g, &te, &e);
        jc_simgpu_free(g);
    }
    jc_sweep_free(s);
}

/* ---- 2: /proc/stat ----------------------------------------------------------------------------------- */

/* As jc__read_text gives it: at most 1023 bytes, trailing newlines and spaces cut. */
static void read_text_like(const char *p, size_t n, char *buf, size_t len) {
    if (n > len - 1) n = len - 1;
    memcpy(buf, p, n);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ')) buf[--n] = '\0';
}

static void procstat(const char *p, size_t n) {
    jc__procstat ps;
    memset(&ps, 0, sizeof ps);
    snprintf(ps.path, sizeof ps.path, "fuzz/stat");
    const char *end = p + n;
    int snapshots = 0;
    while (p <= end && snapshots < 64) {
        const char *ff = memchr(p, '\f', (size_t)(end - p));
        size_t len = ff ? (size_t)(ff - p) : (size_t)(end - p);
        char buf[1024], why[600] = "";
        read_text_like(p, len, buf, sizeof buf);
        uint64_t busy, total;
        jc_status st = jc__procstat_parse(buf, ps.path, &busy, &total, why, sizeof why);
        check_string(why, sizeof why);
        if (st == JC_OK) {
            if (!ps.have_prev) {
                ps.prev_busy = busy;
                ps.prev_total = total;
                ps.have_prev = 1;
            } else {
                double util = -1;
                st = jc__procstat_update(&ps, busy, total, &util, why, sizeof why);
                if (st == JC_OK && !(util >= 0 && util <= 100)) abort();
                if (st != JC_OK && st != JC_ERR_TIMEOUT) abort();
                if (st == JC_OK && (ps.prev_total != total || ps.prev_busy != busy)) abort();
            }
        }
        snapshots++;
        if (!ff) break;
        p = ff + 1;
    }
}

/* ---- 3: /proc/cpuinfo -------------------------------------------------------------------------------- */

static void cpuinfo(const char *p, size_t n) {
    char *text = dup_text(p, n);
    FILE *f = n ? fmemopen(text, n, "r") : NULL;
    if (n && !f) abort();
    jc__cpu_estimate e;
    char why[512] = "";
    jc_status st = jc__cpu_estimate_from(f, &e, why, sizeof why);
    if (f) fclose(f);
    free(text);
    if (st != JC_OK) abort(); /* an estimate never fails: it falls back */
    check_string(e.model, sizeof e.model);
    check_string(e.describe, sizeof e.describe);
    check_string(why, sizeof why);
    if (!e.model[0] || e.threads < 1) abort();
    if (!(isfinite(e.max_w_per_thread) && e.max_w_per_thread > 0 && e.idle_w_per_thread >= 0 &&
          e.idle_w_per_thread <= e.max_w_per_thread))
        abort();
    const double utils[] = {-5, 0, 37.5, 100, 1e9, NAN, INFINITY, -INFINITY};
    double lo = e.threads * e.idle_w_per_thread, hi = e.threads * e.max_w_per_thread;
    for (size_t i = 0; i < sizeof utils / sizeof utils[0]; i++) {
        double w = jc__cpu_estimate_power_w(&e, utils[i]);
        if (!(w >= lo * (1 - 1e-12) && w <= hi * (1 + 1e-12))) abort();
    }
}

/* ---- files under a scratch directory (targets 4 and 5) ----------------------------------------------- */

static char scratch[256];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void rm_tree(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static void remove_scratch(void) {
    if (scratch[0]) rm_tree(scratch);
}

static const char *scratch_dir(void) {
    if (!scratch[0]) {
        const char *tmp = getenv("TMPDIR");
        struct stat sb;
        if (stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) && access("/dev/shm", W_OK) == 0) tmp = "/dev/shm";
        if (!tmp || !*tmp) tmp = "/tmp";
        snprintf(scratch, sizeof scratch, "%s/jc-fuzz-parsers-XXXXXX", tmp);
        if (!mkdtemp(scratch)) {
            perror(scratch);
            abort();
        }
        atexit(remove_scratch);
    }
    return scratch;
}

static int write_file(const char *path, const char *p, size_t n) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) break;
        p += w;
        n -= (size_t)w;
    }
    close(fd);
    return 0;
}

/* ---- 4: one number file ------------------------------------------------------------------------------ */

static void number_file(const char *p, size_t n) {
    char path[400];
    snprintf(path, sizeof path, "%s/number", scratch_dir());
    if (write_file(path, p, n) != 0) abort();
    uint64_t v = 12345;
    char why[600] = "";
    jc_status st = jc__read_u64(path, &v, why, sizeof why);
    if (st != JC_OK) {
        if (v != 12345) abort(); /* a failed read leaves the value alone */
        check_string(why, sizeof why);
    } else {
        /* What sysfs means by a u64: "[whitespace][+]digits", as much of it as fits in 63 bytes. */
        char text[64];
        read_text_like(p, n, text, sizeof text);
        const char *s = text;
        while (*s == ' ' || (*s >= '\t' && *s <= '\r')) s++;
        if (*s == '+') s++;
        if (*s < '0' || *s > '9') abort(); /* "-1" is not 18446744073709551615 */
        uint64_t want = 0;
        for (; *s >= '0' && *s <= '9'; s++) want = want * 10 + (uint64_t)(*s - '0');
        if (want != v) abort();
    }
    for (size_t len = 1; len <= 66; len += 13) {
        char buf[66];
        memset(buf, 'x', sizeof buf);
        st = jc__read_text(path, buf, len, why, sizeof why);
        if (st != JC_OK) abort();
        size_t l = strnlen(buf, len), got = n < len - 1 ? n : len - 1;
        if (l >= len) abort();
        /* Trailing newlines and spaces are cut (from the bytes read: a NUL byte ends the string earlier). */
        if (!memchr(p, '\0', got) && l > 0 && (buf[l - 1] == '\n' || buf[l - 1] == ' ')) abort();
    }
}

/* ---- 5: a sysfs tree: RAPL and CPU temperature ------------------------------------------------------- */

/* "class/powercap/intel-rapl:0/name": components of [A-Za-z0-9:._-], none "." or "..", at most 8. */
static int safe_path(const char *s, size_t n) {
    if (n == 0 || n > 200 || s[0] == '/' || s[n - 1] == '/') return 0;
    int depth = 1;
    size_t comp = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '/') {
            if (comp == 0 || ++depth > 8) return 0;
            comp = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == ':' ||
              c == '.' || c == '_' || c == '-'))
            return 0;
        comp++;
        if (c == '.' && (comp == 1 || comp == 2) && (i + 1 == n || s[i + 1] == '/') &&
            (comp == 1 || s[i - 1] == '.'))
            return 0;
    }
    return 1;
}

static void put_file(const char *root, const char *rel, size_t rlen, const char *p, size_t n) {
    if (!safe_path(rel, rlen)) return;
    char path[600];
    snprintf(path, sizeof path, "%s/%.*s", root, (int)rlen, rel);
    for (char *q = path + strlen(root) + 1; *q; q++) {
        if (*q != '/') continue;
        *q = '\0';
        mkdir(path, 0755);
        *q = '/';
    }
    write_file(path, p, n);
}

/* The next "== " line at or after p (p at a line start); end when none. */
static const char *next_header(const char *p, const char *end) {
    while (p < end) {
        if (end - p >= 3 && memcmp(p, "== ", 3) == 0) return p;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) return end;
        p = nl + 1;
    }
    return end;
}

typedef struct tree_state {
    jc__rapl *rapl;
    jc__cputemp *temp;
    double energy;
    int reads;
} tree_state;

static void tree_read(tree_state *ts) {
    char why[1024] = "";
    if (ts->rapl) {
        double e = -1;
        jc_status st = jc__rapl_read(ts->rapl, &e, why, sizeof why);
        if (st == JC_OK) {
            if (!(isfinite(e) && e >= 0 && e >= ts->energy)) abort();
            ts->energy = e;
        } else {
            check_string(why, sizeof why);
        }
    }
    if (ts->temp) {
        double c = NAN;
        if (jc__cputemp_read(ts->temp, &c, why, sizeof why) == JC_OK && !isfinite(c)) abort();
    }
    ts->reads++;
}

static void sysfs_tree(const char *p, size_t n) {
    char root[400];
    snprintf(root, sizeof root, "%s/sys", scratch_dir());
    rm_tree(root);
    if (mkdir(root, 0755) != 0) abort();
    tree_state ts = {NULL, NULL, 0.0, 0};
    int opened = 0, files = 0;
    const char *end = p + n, *h = next_header(p, end);
    while (h < end && files < 200) {
        const char *nl = memchr(h, '\n', (size_t)(end - h));
        const char *name = h + 3, *name_end = nl ? nl : end;
        const char *body = nl ? nl + 1 : end;
        const char *next = next_header(body, end);
        size_t nlen = (size_t)(name_end - name);
        if (nlen == 4 && memcmp(name, "READ", 4) == 0) {
            if (!opened) {
                char why[1024] = "";
                if (jc__rapl_open(root, &ts.rapl, why, sizeof why) == JC_OK) {
                    if (strlen(jc__rapl_zones(ts.rapl)) == 0) abort();
                } else if (ts.rapl) {
                    abort();
                }
                if (jc__cputemp_open(root, &ts.temp, why, sizeof why) == JC_OK) {
                    if (strlen(jc__cputemp_describe(ts.temp)) == 0) abort();
                } else if (ts.temp) {
                    abort();
                }
                opened = 1;
            } else {
                tree_read(&ts);
            }
        } else {
            put_file(root, name, nlen, body, (size_t)(next - body));
            files++;
        }
        h = next;
    }
    if (!opened) {
        char why[1024] = "";
        jc__rapl_open(root, &ts.rapl, why, sizeof why);
        jc__cputemp_open(root, &ts.temp, why, sizeof why);
    }
    tree_read(&ts);
    jc__rapl_close(ts.rapl);
    jc__cputemp_close(ts.temp);
}

/* ---- 6: /proc/<pid>/stat ----------------------------------------------------------------------------- */

static void pid_stat(const char *p, size_t n) {
    char buf[1024];
    read_text_like(p, n, buf, sizeof buf);
    unsigned long long start = 777;
    int zombie = 5;
    int r = jc__proc_stat_parse(buf, &start, &zombie);
    if (r < -2 || r > 0 || (zombie != 0 && zombie != 1) || (zombie && r != -1) || (r != 0 && start != 777)) abort();
}

/* ---- 7: GPU selection -------------------------------------------------------------------------------- */

static const jc__gpu_ident GPUS[] = {
    {"NVIDIA H100 80GB HBM3", "GPU-aaaa1111-0000-0000-0000-000000000000", "00000000:3B:00.0"},
    {"NVIDIA H100 80GB HBM3", "GPU-bbbb2222-0000-0000-0000-000000000000", "00000000:19:00.0"},
    {"NVIDIA A100-SXM4-40GB", "GPU-aaaa3333-0000-0000-0000-000000000000", "00000000:4C:00.0"},
    {"NVIDIA H100 80GB HBM3", "GPU-cccc4444-0000-0000-0000-000000000000", ""},
};

static void gpu_select(int ngpu, const char *p, size_t n) {
    char *text = dup_text(p, n), *line[3] = {NULL, NULL, NULL};
    char *s = text;
    for (int i = 0; i < 3 && s; i++) {
        char *nl = strchr(s, '\n');
        if (nl) *nl = '\0';
        line[i] = strcmp(s, "<unset>") == 0 ? NULL : s;
        s = nl ? nl + 1 : NULL;
    }
    int nv[JC_MAX_DEVICES], cu[JC_MAX_DEVICES], count = -1;
    char note[512];
    jc_status st = jc__gpu_select(GPUS, ngpu, line[0], line[1], line[2], nv, cu, &count, note, sizeof note);
    free(text);
    check_string(note, sizeof note);
    if (st != JC_OK) {
        if (count != 0) abort();
        return;
    }
    if (count < 0 || count > ngpu) abort();
    for (int i = 0; i < count; i++) {
        if (nv[i] < 0 || nv[i] >= ngpu || cu[i] < 0 || cu[i] >= ngpu) abort();
        for (int j = 0; j < i; j++)
            if (nv[j] == nv[i] || cu[j] == cu[i]) abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int only = -2; /* JC_FUZZ_PARSER=N: every input goes to parser N, whatever its first byte */
    if (only == -2) {
        const char *e = getenv("JC_FUZZ_PARSER");
        only = e && *e ? atoi(e) % 8 : -1;
    }
    if (size < 1) return 0;
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    switch (only >= 0 ? only : data[0] % 8) {
    case 0: journal(p, n); break;
    case 1: sweep(p, n); break;
    case 2: procstat(p, n); break;
    case 3: cpuinfo(p, n); break;
    case 4: number_file(p, n); break;
    case 5: sysfs_tree(p, n); break;
    case 6: pid_stat(p, n); break;
    default: gpu_select(4 - (data[0] / 8) % 5, p, n); break;
    }
    return 0;
}
