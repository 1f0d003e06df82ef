/* CPU temperature from hwmon drivers (coretemp, k10temp, zenpower, cpu_thermal), else from CPU thermal
 * zones.  The reading is the maximum over the chosen sensors (one per package), in deg C.
 *  - coretemp: the "Package id N" sensors; only when a device has none (very old CPUs), its "Core N" ones.
 *  - k10temp / zenpower: Tdie when present (Tctl carries a fan-control offset on some Ryzen/Threadripper
 *    parts), else Tctl, else temp1.  Tccd* are per-chiplet and not used.
 *  - cpu_thermal (Raspberry Pi and other SoCs): temp1.
 *  - thermal zones: the first type present of x86_pkg_temp, cpu-thermal, cpu_thermal, soc_thermal, then
 *    acpitz as a last resort (ACPI's zone is often a motherboard sensor, not the die). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"

#define TEMP_PATH_MAX 1024

typedef struct temp_sensor {
    char path[TEMP_PATH_MAX]; /* file in millidegrees C */
    char label[64];
} temp_sensor;

struct jc__cputemp {
    temp_sensor *s;
    size_t n, cap;
    char describe[512];
};

/* Reads a millidegree file; 0 on success. */
static int read_millideg(const char *path, double *c) {
    char buf[64];
    if (jc__read_text(path, buf, sizeof buf, NULL, 0) != JC_OK) return -1;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (end == buf || errno != 0) return -1;
    *c = (double)v / 1000.0;
    return 0;
}

/* ---- directory listing with natural order (hwmon2 before hwmon10) ---- */

typedef struct name_list {
    char **v;
    size_t n;
} name_list;

static void names_free(name_list *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static int natural_cmp(const char *a, const char *b) {
    while (*a && *b) {
        if (*a >= '0' && *a <= '9' && *b >= '0' && *b <= '9') {
            char *ea = NULL, *eb = NULL;
            unsigned long long x = strtoull(a, &ea, 10), y = strtoull(b, &eb, 10);
            if (x != y) return x < y ? -1 : 1;
            a = ea;
            b = eb;
            continue;
        }
        if (*a != *b) return (unsigned char)*a - (unsigned char)*b;
        a++, b++;
    }
    return (unsigned char)*a - (unsigned char)*b;
}

static int natural_qsort_cmp(const void *a, const void *b) {
    return natural_cmp(*(char *const *)a, *(char *const *)b);
}

/* Entries of dir starting with prefix, sorted; an absent dir gives an empty list.  -1 on out of memory. */
static int list_dir(const char *dir, const char *prefix, name_list *out) {
    out->v = NULL;
    out->n = 0;
    DIR *d = opendir(dir);
    if (!d) return 0;
    size_t cap = 0;
    struct dirent *e;
    int rc = 0;
    size_t plen = strlen(prefix);
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || strncmp(e->d_name, prefix, plen) != 0) continue;
        if (out->n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            char **nv = realloc(out->v, ncap * sizeof *nv);
            if (!nv) {
                rc = -1;
                break;
            }
            out->v = nv;
            cap = ncap;
        }
        char *copy = malloc(strlen(e->d_name) + 1);
        if (!copy) {
            rc = -1;
            break;
        }
        memcpy(copy, e->d_name, strlen(e->d_name) + 1);
        out->v[out->n++] = copy;
    }
    closedir(d);
    if (rc != 0) {
        names_free(out);
        return -1;
    }
    if (out->n > 1) qsort(out->v, out->n, sizeof *out->v, natural_qsort_cmp);
    return 0;
}

/* ---- sensor set ---- */

static int add_sensor(jc__cputemp *t, const char *path, const char *label) {
    double c;
    if (read_millideg(path, &c) != 0) return 0; /* unreadable now: not a sensor we can use */
    if (t->n == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 8;
        temp_sensor *ns = realloc(t->s, ncap * sizeof *ns);
        if (!ns) return -1;
        t->s = ns;
        t->cap = ncap;
    }
    temp_sensor *s = &t->s[t->n++];
    jc__fmt(s->path, sizeof s->path, "%s", path);
    jc__fmt(s->label, sizeof s->label, "%s", label);
    return 0;
}

/* hwmon devices keep name and temp files in hwmonN/ (or hwmonN/device/ on kernels before 3.x's cleanup). */
static int hwmon_base(const char *hwmon_dir, const char *entry, char *base, size_t len, char *name, size_t nlen) {
    if (jc__path(base, len, "%s/%s", hwmon_dir, entry)) {
        char p[TEMP_PATH_MAX];
        if (jc__path(p, sizeof p, "%s/name", base) && jc__read_text(p, name, nlen, NULL, 0) == JC_OK) return 1;
    }
    if (jc__path(base, len, "%s/%s/device", hwmon_dir, entry)) {
        char p[TEMP_PATH_MAX];
        if (jc__path(p, sizeof p, "%s/name", base) && jc__read_text(p, name, nlen, NULL, 0) == JC_OK) return 1;
    }
    return 0;
}

/* Adds the sensors of one hwmon device whose labels are chosen by `pick` (in order of preference: the first
 * pattern that matches any label wins).  A pattern ending in '*' is a prefix.  Returns -1 on out of memory. */
static int add_hwmon_sensors(jc__cputemp *t, const char *base, const char *const *pick, size_t npick,
                             int fallback_all) {
    name_list files;
    if (list_dir(base, "temp", &files) != 0) return -1;
    int rc = 0, added = 0;
    for (size_t k = 0; k < npick && !added && rc == 0; k++) {
        size_t plen = strlen(pick[k]);
        int prefix = plen > 0 && pick[k][plen - 1] == '*';
        for (size_t i = 0; i < files.n && rc == 0; i++) {
            const char *f = files.v[i];
            const char *us = strchr(f, '_');
            if (!us || strcmp(us, "_label") != 0) continue;
            char lpath[TEMP_PATH_MAX], ipath[TEMP_PATH_MAX], label[64];
            if (!jc__path(lpath, sizeof lpath, "%s/%s", base, f)) continue;
            if (jc__read_text(lpath, label, sizeof label, NULL, 0) != JC_OK) continue;
            int match = prefix ? strncmp(label, pick[k], plen - 1) == 0 : strcmp(label, pick[k]) == 0;
            if (!match) continue;
            if (!jc__path(ipath, sizeof ipath, "%s/%.*s_input", base, (int)(us - f), f)) continue;
            size_t before = t->n;
            rc = add_sensor(t, ipath, label);
            if (t->n > before) added = 1;
        }
    }
    if (!added && fallback_all && rc == 0) {
        for (size_t i = 0; i < files.n && rc == 0; i++) {
            const char *f = files.v[i];
            const char *us = strchr(f, '_');
            if (!us || strcmp(us, "_input") != 0) continue;
            char ipath[TEMP_PATH_MAX], lpath[TEMP_PATH_MAX], label[64];
            if (!jc__path(ipath, sizeof ipath, "%s/%s", base, f)) continue;
            if (!jc__path(lpath, sizeof lpath, "%s/%.*s_label", base, (int)(us - f), f) ||
                jc__read_text(lpath, label, sizeof label, NULL, 0) != JC_OK)
                jc__fmt(label, sizeof label, "%.*s", (int)(us - f), f);
            rc = add_sensor(t, ipath, label);
        }
    }
    names_free(&files);
    return rc;
}

typedef struct hwmon_driver {
    const char *name;
    const char *pick[2];
    size_t npick;
    int fallback_all; /* no preferred label: use every temp*_input of the device */
} hwmon_driver;

static const hwmon_driver HWMON_DRIVERS[] = {
    {"coretemp", {"Package id*", NULL}, 1, 1},
    {"k10temp", {"Tdie", "Tctl"}, 2, 1},
    {"zenpower", {"Tdie", "Tctl"}, 2, 1},
    {"cpu_thermal", {NULL, NULL}, 0, 1},
};

static const char *const THERMAL_TYPES[] = {"x86_pkg_temp", "cpu-thermal", "cpu_thermal", "soc_thermal", "acpitz"};

static void describe(jc__cputemp *t, const char *what) {
    size_t used = (size_t)snprintf(t->describe, sizeof t->describe, "%s: ", what);
    for (size_t i = 0; i < t->n && used < sizeof t->describe; i++) {
        int w = snprintf(t->describe + used, sizeof t->describe - used, "%s%s", i ? ", " : "", t->s[i].label);
        if (w < 0) break;
        used += (size_t)w;
    }
}

/* 1 when sensors were found, 0 when not, -1 on out of memory. */
static int find_hwmon(jc__cputemp *t, const char *root) {
    char dir[TEMP_PATH_MAX];
    if (!jc__path(dir, sizeof dir, "%s/class/hwmon", root)) return 0;
    name_list devs;
    if (list_dir(dir, "hwmon", &devs) != 0) return -1;
    int rc = 0;
    for (size_t k = 0; k < sizeof HWMON_DRIVERS / sizeof HWMON_DRIVERS[0] && rc == 0 && t->n == 0; k++) {
        const hwmon_driver *drv = &HWMON_DRIVERS[k];
        for (size_t i = 0; i < devs.n && rc == 0; i++) {
            char base[TEMP_PATH_MAX], name[64];
            if (!hwmon_base(dir, devs.v[i], base, sizeof base, name, sizeof name)) continue;
            if (strcmp(name, drv->name) != 0) continue;
            if (add_hwmon_sensors(t, base, drv->pick, drv->npick, drv->fallback_all) != 0) rc = -1;
        }
        if (rc == 0 && t->n > 0) {
            char what[64];
            jc__fmt(what, sizeof what, "hwmon %s", drv->name);
            describe(t, what);
        }
    }
    names_free(&devs);
    return rc < 0 ? -1 : t->n > 0;
}

static int find_thermal(jc__cputemp *t, const char *root) {
    char dir[TEMP_PATH_MAX];
    if (!jc__path(dir, sizeof dir, "%s/class/thermal", root)) return 0;
    name_list zones;
    if (list_dir(dir, "thermal_zone", &zones) != 0) return -1;
    int rc = 0;
    for (size_t k = 0; k < sizeof THERMAL_TYPES / sizeof THERMAL_TYPES[0] && rc == 0 && t->n == 0; k++) {
        for (size_t i = 0; i < zones.n && rc == 0; i++) {
            char p[TEMP_PATH_MAX], type[64];
            if (!jc__path(p, sizeof p, "%s/%s/type", dir, zones.v[i])) continue;
            if (jc__read_text(p, type, sizeof type, NULL, 0) != JC_OK || strcmp(type, THERMAL_TYPES[k]) != 0)
                continue;
            if (!jc__path(p, sizeof p, "%s/%s/temp", dir, zones.v[i])) continue;
            rc = add_sensor(t, p, zones.v[i]);
        }
        if (rc == 0 && t->n > 0) {
            char what[64];
            jc__fmt(what, sizeof what, "thermal zone %s", THERMAL_TYPES[k]);
            describe(t, what);
        }
    }
    names_free(&zones);
    return rc < 0 ? -1 : t->n > 0;
}

jc_status jc__cputemp_open(const char *sysfs_root, jc__cputemp **out, char *why, size_t whylen) {
    if (!out) return jc__fail_why(JC_ERR_INVALID_ARGUMENT, why, whylen, "jc__cputemp_open: out is NULL");
    *out = NULL;
    if (!sysfs_root) sysfs_root = jc__sysfs_root();
    jc__cputemp *t = calloc(1, sizeof *t);
    if (!t) return jc__fail_why(JC_ERR_NO_MEMORY, why, whylen, "out of memory opening CPU temperature");
    int found = find_hwmon(t, sysfs_root);
    if (found == 0) found = find_thermal(t, sysfs_root);
    if (found <= 0) {
        jc__cputemp_close(t);
        if (found < 0) return jc__fail_why(JC_ERR_NO_MEMORY, why, whylen, "out of memory listing CPU sensors");
        return jc__fail_why(JC_ERR_UNAVAILABLE, why, whylen,
                         "no CPU temperature: no readable coretemp/k10temp/zenpower/cpu_thermal sensor under "
                         "%s/class/hwmon and no CPU thermal zone under %s/class/thermal",
                         sysfs_root, sysfs_root);
    }
    *out = t;
    return JC_OK;
}

jc_status jc__cputemp_read(jc__cputemp *t, double *temp_c, char *why, size_t whylen) {
    if (!t || !temp_c) return jc__fail_why(JC_ERR_INVALID_ARGUMENT, why, whylen, "jc__cputemp_read: NULL argument");
    int have = 0;
    double best = 0.0;
    jc_status last = JC_ERR_IO;
    char err[600] = "";
    for (size_t i = 0; i < t->n; i++) {
        char buf[64];
        jc_status st = jc__read_text(t->s[i].path, buf, sizeof buf, err, sizeof err);
        if (st != JC_OK) {
            last = st;
            continue;
        }
        char *end = NULL;
        errno = 0;
        long long v = strtoll(buf, &end, 10);
        if (end == buf || errno != 0) {
            jc__fmt(err, sizeof err, "%s: not a number: '%s'", t->s[i].path, buf);
            last = JC_ERR_IO;
            continue;
        }
        double c = (double)v / 1000.0;
        if (!have || c > best) best = c;
        have = 1;
    }
    if (!have) return jc__fail_why(last, why, whylen, "no CPU temperature sensor could be read: %s", err);
    *temp_c = best;
    return JC_OK;
}

const char *jc__cputemp_describe(const jc__cputemp *t) { return t ? t->describe : ""; }

void jc__cputemp_close(jc__cputemp *t) {
    if (!t) return;
    free(t->s);
    free(t);
}
