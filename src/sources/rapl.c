/* RAPL energy from the powercap sysfs class: zone selection, counter unwrapping, and the permission story.
 * Rules (docs/cpu-sources.md has the reasoning):
 *  - zones are recognised by their `name`, never by their directory number;
 *  - package-N and package-N-die-M are added (a package-N zone wins over dies of the same package);
 *  - dram is added when its parent zone (directory id minus the last ":N") is an added package or die;
 *  - core, uncore and any other subzone overlap their package and are ignored;
 *  - psys (whole platform, includes the packages) is used only when no package zone exists;
 *  - the same zone exposed twice (intel-rapl:N through MSRs and intel-rapl-mmio:N / intel-rapl-tpmi:N) is
 *    counted once, from the intel-rapl: (MSR) directory;
 *  - a zone's `enabled` file is about power *capping*, not about the counter, so it is not consulted. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cpu.h"

#define RAPL_PATH_MAX 1024

typedef enum zone_kind { ZONE_PACKAGE, ZONE_DIE, ZONE_DRAM, ZONE_PSYS } zone_kind;

typedef struct rapl_zone {
    char dir[96];   /* directory under class/powercap, e.g. "intel-rapl:0:2" */
    char name[64];  /* contents of its name file: "package-0", "dram", ... */
    char owner[64]; /* dram: the parent's name ("package-0"); others: own name */
    zone_kind kind;
    int pkg, die; /* package and die numbers of the zone (dram: of its owner); die -1 when none */
    int rank;     /* 0 for the intel-rapl: (MSR) interface, 1 for mmio/tpmi/others: lower wins duplicates */
    int keep;
    char energy_path[RAPL_PATH_MAX];
    uint64_t max_uj;   /* max_energy_range_uj: the counter runs 0..max_uj and then restarts at 0 */
    uint64_t prev_uj;  /* last raw value read */
    uint64_t total_uj; /* unwrapped energy since open */
} rapl_zone;

struct jc__rapl {
    rapl_zone *zones;
    size_t n;
    char *zones_desc;
};

/* Parses a non-negative decimal at *p (at least one digit), advancing *p. */
static int parse_uint(const char **p, int *out) {
    const char *s = *p;
    long v = 0;
    if (*s < '0' || *s > '9') return 0;
    while (*s >= '0' && *s <= '9') {
        v = v * 10 + (*s - '0');
        if (v > 1000000) return 0;
        s++;
    }
    *out = (int)v;
    *p = s;
    return 1;
}

/* "package-N" -> die = -1; "package-N-die-M" -> die = M. */
static int parse_package_name(const char *name, int *pkg, int *die) {
    const char *p = name;
    if (strncmp(p, "package-", 8) != 0) return 0;
    p += 8;
    if (!parse_uint(&p, pkg)) return 0;
    *die = -1;
    if (*p == '\0') return 1;
    if (strncmp(p, "-die-", 5) != 0) return 0;
    p += 5;
    if (!parse_uint(&p, die)) return 0;
    return *p == '\0';
}

/* The RAPL driver reports the MSR interface as intel-rapl:* (also on AMD).  mmio and tpmi expose the same
 * package counters again on some parts. */
static int interface_rank(const char *dir) { return strncmp(dir, "intel-rapl:", 11) == 0 ? 0 : 1; }

static int cmp_by_rank_then_dir(const void *a, const void *b) {
    const rapl_zone *za = a, *zb = b;
    if (za->rank != zb->rank) return za->rank - zb->rank;
    return strcmp(za->dir, zb->dir);
}

/* Stable description order: packages and dies by number, then dram by owner, then psys. */
static int cmp_for_description(const void *a, const void *b) {
    const rapl_zone *za = a, *zb = b;
    int ga = za->kind == ZONE_DRAM ? 1 : za->kind == ZONE_PSYS ? 2 : 0;
    int gb = zb->kind == ZONE_DRAM ? 1 : zb->kind == ZONE_PSYS ? 2 : 0;
    if (ga != gb) return ga - gb;
    if (za->pkg != zb->pkg) return za->pkg - zb->pkg;
    if (za->die != zb->die) return za->die - zb->die;
    return strcmp(za->dir, zb->dir);
}

static jc_status permission_reason(const char *path, char *why, size_t whylen) {
    return jc__fail_why(JC_ERR_NO_PERMISSION, why, whylen,
                     "RAPL energy_uj is readable only by root on this kernel (CVE-2020-8694 mitigation; %s): "
                     "run as root, or grant read access until reboot with `sudo chmod o+r "
                     "/sys/class/powercap/intel-rapl:*/energy_uj /sys/class/powercap/intel-rapl:*:*/energy_uj`",
                     path);
}

/* Reads one counter, mapping EACCES/EPERM to the explanation above. */
static jc_status read_counter(const rapl_zone *z, uint64_t *value, char *why, size_t whylen) {
    char err[512];
    jc_status st = jc__read_u64(z->energy_path, value, err, sizeof err);
    if (st == JC_ERR_NO_PERMISSION) return permission_reason(z->energy_path, why, whylen);
    if (st != JC_OK) return jc__fail_why(st, why, whylen, "RAPL zone %s (%s): %s", z->dir, z->name, err);
    return JC_OK;
}

/* Energy between two raw readings.  The counter holds values 0..max and the step after max is 0, so across
 * one wrap the energy is (max - prev) + 1 + cur.  (The hardware counts in units of ~15-61 uJ and max is
 * mask * unit, so the true modulus is max + unit: the +1 is off by less than one unit per wrap.)  Two wraps
 * between reads cannot be seen; callers read far more often than the minutes a wrap takes. */
static uint64_t counter_delta(uint64_t prev, uint64_t cur, uint64_t max) {
    if (cur >= prev) return cur - prev;
    if (prev > max) return cur; /* inconsistent max: count only what is visible since the restart */
    return (max - prev) + 1 + cur;
}

/* a + b, held at UINT64_MAX rather than wrapping: forged counters (a max_energy_range_uj of 2^64 - 1) could
 * otherwise add up past 2^64 uJ and make the energy go backwards. */
static uint64_t add_sat(uint64_t a, uint64_t b) { return a + b < a ? UINT64_MAX : a + b; }

static void free_rapl(jc__rapl *r) {
    if (!r) return;
    free(r->zones);
    free(r->zones_desc);
    free(r);
}

/* Lists zone candidates (entries with a name and an energy_uj) of the kinds we may add. */
static jc_status scan_zones(const char *base, rapl_zone **out, size_t *count, char *skipped, size_t skippedlen,
                            char *why, size_t whylen) {
    DIR *d = opendir(base);
    if (!d) {
        int err = errno;
        if (err == ENOENT || err == ENOTDIR)
            return jc__fail_why(JC_ERR_UNAVAILABLE, why, whylen,
                             "no RAPL: %s does not exist (virtual machine or unsupported CPU)", base);
        if (err == EACCES || err == EPERM)
            return jc__fail_why(JC_ERR_NO_PERMISSION, why, whylen, "no RAPL: cannot list %s: %s", base,
                             strerror(err));
        return jc__fail_why(JC_ERR_IO, why, whylen, "no RAPL: cannot list %s: %s", base, strerror(err));
    }
    rapl_zone *zones = NULL;
    size_t n = 0, cap = 0;
    skipped[0] = '\0';
    jc_status st = JC_OK;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char path[RAPL_PATH_MAX], name[64], err[256];
        if (!jc__path(path, sizeof path, "%s/%s/name", base, e->d_name)) continue;
        if (jc__read_text(path, name, sizeof name, err, sizeof err) != JC_OK) continue; /* a control type */
        char epath[RAPL_PATH_MAX];
        struct stat sb;
        if (!jc__path(epath, sizeof epath, "%s/%s/energy_uj", base, e->d_name)) continue;
        if (stat(epath, &sb) != 0) continue; /* a zone without an energy counter */

        rapl_zone z;
        memset(&z, 0, sizeof z);
        if (strlen(e->d_name) >= sizeof z.dir) continue;
        memcpy(z.dir, e->d_name, strlen(e->d_name) + 1);
        memcpy(z.name, name, strlen(name) + 1);
        memcpy(z.energy_path, epath, strlen(epath) + 1);
        z.rank = interface_rank(z.dir);
        z.die = -1;
        if (parse_package_name(name, &z.pkg, &z.die)) {
            z.kind = z.die < 0 ? ZONE_PACKAGE : ZONE_DIE;
            memcpy(z.owner, name, strlen(name) + 1);
        } else if (strcmp(name, "dram") == 0) {
            z.kind = ZONE_DRAM;
            /* intel-rapl:0:2 -> parent intel-rapl:0 (class/powercap is flat: the hierarchy is in the id) */
            char parent[96];
            memcpy(parent, z.dir, sizeof parent);
            char *colon = strrchr(parent, ':');
            char *first = strchr(parent, ':');
            if (!colon || colon == first) continue; /* a top-level dram zone: no package to attach it to */
            *colon = '\0';
            char ppath[RAPL_PATH_MAX];
            if (!jc__path(ppath, sizeof ppath, "%s/%s/name", base, parent)) continue;
            if (jc__read_text(ppath, z.owner, sizeof z.owner, err, sizeof err) != JC_OK) continue;
            if (!parse_package_name(z.owner, &z.pkg, &z.die)) continue;
        } else if (strcmp(name, "psys") == 0) {
            z.kind = ZONE_PSYS;
            memcpy(z.owner, name, strlen(name) + 1);
            z.pkg = 1 << 20;
        } else {
            /* core, uncore, ...: part of their package's energy */
            size_t used = strlen(skipped);
            if (used + strlen(name) + 3 < skippedlen)
                jc__fmt(skipped + used, skippedlen - used, "%s%s", used ? ", " : "", name);
            continue;
        }
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            rapl_zone *nz = realloc(zones, ncap * sizeof *nz);
            if (!nz) {
                st = jc__fail_why(JC_ERR_NO_MEMORY, why, whylen, "out of memory listing RAPL zones");
                break;
            }
            zones = nz;
            cap = ncap;
        }
        zones[n++] = z;
    }
    closedir(d);
    if (st != JC_OK) {
        free(zones);
        return st;
    }
    *out = zones;
    *count = n;
    return JC_OK;
}

static int same_zone(const rapl_zone *a, const rapl_zone *b) {
    return a->kind == b->kind && strcmp(a->owner, b->owner) == 0;
}

static int is_kept_owner(const rapl_zone *zones, size_t n, const char *owner) {
    for (size_t i = 0; i < n; i++)
        if (zones[i].keep && (zones[i].kind == ZONE_PACKAGE || zones[i].kind == ZONE_DIE) &&
            strcmp(zones[i].name, owner) == 0)
            return 1;
    return 0;
}

static void select_zones(rapl_zone *zones, size_t n) {
    if (n == 0) return;
    /* MSR interface first, so that the first zone of each identity is the one kept. */
    qsort(zones, n, sizeof *zones, cmp_by_rank_then_dir);
    for (size_t i = 0; i < n; i++) {
        zones[i].keep = 1;
        for (size_t j = 0; j < i; j++)
            if (zones[j].keep && same_zone(&zones[i], &zones[j])) zones[i].keep = 0;
    }
    /* A package zone already contains its dies. */
    for (size_t i = 0; i < n; i++) {
        if (!zones[i].keep || zones[i].kind != ZONE_DIE) continue;
        for (size_t j = 0; j < n; j++)
            if (zones[j].keep && zones[j].kind == ZONE_PACKAGE && zones[j].pkg == zones[i].pkg) zones[i].keep = 0;
    }
    int have_package = 0;
    for (size_t i = 0; i < n; i++)
        if (zones[i].keep && (zones[i].kind == ZONE_PACKAGE || zones[i].kind == ZONE_DIE)) have_package = 1;
    for (size_t i = 0; i < n; i++) {
        if (!zones[i].keep) continue;
        if (zones[i].kind == ZONE_DRAM && !is_kept_owner(zones, n, zones[i].owner)) zones[i].keep = 0;
        if (zones[i].kind == ZONE_PSYS && have_package) zones[i].keep = 0;
    }
}

static jc_status build_description(jc__rapl *r, char *why, size_t whylen) {
    size_t len = 1;
    for (size_t i = 0; i < r->n; i++) len += strlen(r->zones[i].name) + strlen(r->zones[i].owner) + 8;
    r->zones_desc = malloc(len);
    if (!r->zones_desc) return jc__fail_why(JC_ERR_NO_MEMORY, why, whylen, "out of memory describing RAPL zones");
    size_t used = 0;
    r->zones_desc[0] = '\0';
    for (size_t i = 0; i < r->n; i++) {
        const rapl_zone *z = &r->zones[i];
        const char *sep = i ? ", " : "";
        int w = z->kind == ZONE_DRAM ? snprintf(r->zones_desc + used, len - used, "%sdram (%s)", sep, z->owner)
                                     : snprintf(r->zones_desc + used, len - used, "%s%s", sep, z->name);
        if (w > 0) used += (size_t)w;
    }
    return JC_OK;
}

jc_status jc__rapl_open(const char *sysfs_root, jc__rapl **out, char *why, size_t whylen) {
    if (!out) return jc__fail_why(JC_ERR_INVALID_ARGUMENT, why, whylen, "jc__rapl_open: out is NULL");
    *out = NULL;
    if (!sysfs_root) sysfs_root = jc__sysfs_root();
    char base[RAPL_PATH_MAX];
    if (!jc__path(base, sizeof base, "%s/class/powercap", sysfs_root))
        return jc__fail_why(JC_ERR_INVALID_ARGUMENT, why, whylen, "sysfs root path too long: %s", sysfs_root);

    rapl_zone *all = NULL;
    size_t n_all = 0;
    char skipped[256];
    jc_status st = scan_zones(base, &all, &n_all, skipped, sizeof skipped, why, whylen);
    if (st != JC_OK) return st;
    select_zones(all, n_all);

    jc__rapl *r = calloc(1, sizeof *r);
    if (!r) {
        free(all);
        return jc__fail_why(JC_ERR_NO_MEMORY, why, whylen, "out of memory opening RAPL");
    }
    for (size_t i = 0; i < n_all; i++)
        if (all[i].keep) all[r->n++] = all[i]; /* compact in place: kept zones move towards the front */
    r->zones = all;
    if (r->n == 0) {
        free_rapl(r);
        return jc__fail_why(JC_ERR_UNAVAILABLE, why, whylen,
                         "no RAPL: %s has no package, die or psys zone with an energy counter%s%s%s", base,
                         skipped[0] ? " (only: " : "", skipped, skipped[0] ? ")" : "");
    }
    qsort(r->zones, r->n, sizeof *r->zones, cmp_for_description);

    for (size_t i = 0; i < r->n; i++) {
        rapl_zone *z = &r->zones[i];
        char path[RAPL_PATH_MAX], err[512] = "path too long";
        if (!jc__path(path, sizeof path, "%s/%s/max_energy_range_uj", base, z->dir) ||
            jc__read_u64(path, &z->max_uj, err, sizeof err) != JC_OK) {
            /* The message names the zone: write it before the zones are freed. */
            st = jc__fail_why(JC_ERR_IO, why, whylen,
                              "RAPL zone %s (%s): cannot read max_energy_range_uj, so its wraps cannot be "
                              "corrected: %s",
                              z->dir, z->name, err);
            free_rapl(r);
            return st;
        }
        st = read_counter(z, &z->prev_uj, why, whylen);
        if (st != JC_OK) {
            free_rapl(r);
            return st;
        }
    }
    st = build_description(r, why, whylen);
    if (st != JC_OK) {
        free_rapl(r);
        return st;
    }
    *out = r;
    return JC_OK;
}

jc_status jc__rapl_read(jc__rapl *rapl, double *energy_j, char *why, size_t whylen) {
    if (!rapl || !energy_j) return jc__fail_why(JC_ERR_INVALID_ARGUMENT, why, whylen, "jc__rapl_read: NULL argument");
    /* Read every counter before updating any, so that a failure leaves the state as it was. */
    uint64_t stack_vals[16];
    uint64_t *vals = stack_vals;
    if (rapl->n > sizeof stack_vals / sizeof stack_vals[0]) {
        vals = malloc(rapl->n * sizeof *vals);
        if (!vals) return jc__fail_why(JC_ERR_NO_MEMORY, why, whylen, "out of memory reading RAPL");
    }
    jc_status st = JC_OK;
    for (size_t i = 0; i < rapl->n && st == JC_OK; i++) st = read_counter(&rapl->zones[i], &vals[i], why, whylen);
    if (st == JC_OK) {
        uint64_t total = 0;
        for (size_t i = 0; i < rapl->n; i++) {
            rapl_zone *z = &rapl->zones[i];
            z->total_uj = add_sat(z->total_uj, counter_delta(z->prev_uj, vals[i], z->max_uj));
            z->prev_uj = vals[i];
            total = add_sat(total, z->total_uj);
        }
        *energy_j = (double)total * 1e-6;
    }
    if (vals != stack_vals) free(vals);
    return st;
}

const char *jc__rapl_zones(const jc__rapl *rapl) { return rapl && rapl->zones_desc ? rapl->zones_desc : ""; }

void jc__rapl_close(jc__rapl *rapl) { free_rapl(rapl); }
