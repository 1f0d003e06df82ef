/* CPU-side sources against fake sysfs/procfs trees in tests/sysfs and tests/proc.  Tests that change counters
 * work on a copy of a tree in a temporary directory. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jc_test.h"
#include "sources/cpu.h"

#define NOBODY 65534

/* ---- helpers ---- */

static const char *data_dir(void) {
    const char *d = getenv("JC_TEST_DATA");
    if (!d || !*d) JC_FAILF("JC_TEST_DATA is not set (run through ctest)");
    return d;
}

static void data_path(char *buf, size_t len, const char *sub) {
    int n = snprintf(buf, len, "%s/%s", data_dir(), sub);
    ASSERT_TRUE(n > 0 && (size_t)n < len);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) JC_FAILF("cannot write %s: %s", path, strerror(errno));
    fputs(text, f);
    fputs("\n", f);
    ASSERT_EQ(fclose(f), 0);
}

static void write_rel(const char *dir, const char *rel, const char *text) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    write_file(path, text);
}

static void write_u64(const char *dir, const char *rel, uint64_t v) {
    char path[1024], text[32];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    snprintf(text, sizeof text, "%llu", (unsigned long long)v);
    write_file(path, text);
}

static void copy_tree(const char *src, const char *dst) {
    DIR *d = opendir(src);
    if (!d) JC_FAILF("cannot open %s: %s", src, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char s[1024], t[1024];
        snprintf(s, sizeof s, "%s/%s", src, e->d_name);
        snprintf(t, sizeof t, "%s/%s", dst, e->d_name);
        struct stat st;
        ASSERT_EQ(lstat(s, &st), 0);
        if (S_ISDIR(st.st_mode)) {
            ASSERT_EQ(mkdir(t, 0755), 0);
            ASSERT_EQ(chmod(t, 0755), 0);
            copy_tree(s, t);
        } else {
            FILE *in = fopen(s, "rb"), *out = fopen(t, "wb");
            ASSERT_TRUE(in && out);
            char buf[4096];
            size_t n;
            while ((n = fread(buf, 1, sizeof buf, in)) > 0) ASSERT_EQ(fwrite(buf, 1, n, out), n);
            fclose(in);
            ASSERT_EQ(fclose(out), 0);
            ASSERT_EQ(chmod(t, 0644), 0);
        }
    }
    closedir(d);
}

/* A fresh world-traversable temp dir holding a copy of tests/<sub> (or nothing when sub is NULL). */
static void make_copy(const char *sub, char *out, size_t len) {
    snprintf(out, len, "/tmp/jc-cpu-XXXXXX");
    if (!mkdtemp(out)) JC_FAILF("mkdtemp: %s", strerror(errno));
    ASSERT_EQ(chmod(out, 0755), 0);
    if (sub) {
        char src[1024];
        data_path(src, sizeof src, sub);
        copy_tree(src, out);
    }
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void rm_tree(const char *dir) { nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static void rm_sub(const char *dir, const char *rel) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    rm_tree(p);
}

static int chown_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return lchown(path, NOBODY, NOBODY);
}

/* ---- RAPL ---- */

#define PKG_MAX 262143328850ull
#define DRAM_MAX 65712999613ull

TEST(rapl_two_sockets_zones) {
    char root[1024], why[512] = "";
    data_path(root, sizeof root, "sysfs/intel-2socket");
    jc__rapl *r = NULL;
    ASSERT_OK(jc__rapl_open(root, &r, why, sizeof why));
    /* package-0 once (the mmio duplicate dropped), both drams, no core/uncore/psys */
    ASSERT_STR_EQ(jc__rapl_zones(r), "package-0, package-1, dram (package-0), dram (package-1)");
    double e = -1;
    ASSERT_OK(jc__rapl_read(r, &e, why, sizeof why));
    ASSERT_NEAR(e, 0.0, 1e-12);
    jc__rapl_close(r);
}

TEST(rapl_overlapping_zones_not_added) {
    char dir[256], why[512] = "";
    make_copy("sysfs/intel-2socket", dir, sizeof dir);
    jc__rapl *r = NULL;
    ASSERT_OK(jc__rapl_open(dir, &r, why, sizeof why));
    const char *pc = "class/powercap";
    char rel[128];
#define BUMP(zone, base, delta)                                                                            \
    do {                                                                                                   \
        snprintf(rel, sizeof rel, "%s/%s/energy_uj", pc, zone);                                            \
        write_u64(dir, rel, (uint64_t)(base) + (uint64_t)(delta));                                         \
    } while (0)
    BUMP("intel-rapl:0", 100000000, 3000000);      /* package-0: +3 J */
    BUMP("intel-rapl:1", 110000000, 4000000);      /* package-1: +4 J */
    BUMP("intel-rapl:0:2", 20000000, 1000000);     /* dram of package-0: +1 J */
    BUMP("intel-rapl:1:0", 21000000, 2000000);     /* dram of package-1 (enabled=0): +2 J */
    BUMP("intel-rapl:0:0", 40000000, 5000000);     /* core: inside package-0 */
    BUMP("intel-rapl:0:1", 2000000, 1000000);      /* uncore: inside package-0 */
    BUMP("intel-rapl:2", 500000000, 900000000);    /* psys: includes the packages */
    BUMP("intel-rapl-mmio:0", 100000500, 7000000); /* the same package-0 through MMIO */
    double e = 0;
    ASSERT_OK(jc__rapl_read(r, &e, why, sizeof why));
    ASSERT_NEAR(e, 10.0, 1e-9);
    BUMP("intel-rapl:1", 110000000, 4500000); /* cumulative since open */
    ASSERT_OK(jc__rapl_read(r, &e, why, sizeof why));
    ASSERT_NEAR(e, 10.5, 1e-9);
    jc__rapl_close(r);
    rm_tree(dir);
}

TEST(rapl_counter_wrap) {
    char dir[256], why[512] = "";
    make_copy("sysfs/intel-2socket", dir, sizeof dir);
    /* package-0 close to its max, dram of package-1 exactly at its max */
    write_u64(dir, "class/powercap/intel-rapl:0/energy_uj", PKG_MAX - 328850);
    write_u64(dir, "class/powercap/intel-rapl:1:0/energy_uj", DRAM_MAX);
    jc__rapl *r = NULL;
    ASSERT_OK(jc__rapl_open(dir, &r, why, sizeof why));
    /* package-0 wraps: (max - prev) + 1 + cur = 328850 + 1 + 1000000 uJ; dram goes max -> 0: 1 uJ */
    write_u64(dir, "class/powercap/intel-rapl:0/energy_uj", 1000000);
    write_u64(dir, "class/powercap/intel-rapl:1:0/energy_uj", 0);
    double e = 0;
    ASSERT_OK(jc__rapl_read(r, &e, why, sizeof why));
    ASSERT_NEAR(e, (328850.0 + 1 + 1000000 + 1) * 1e-6, 1e-12);
    /* after the wrap, counting continues normally */
    write_u64(dir, "class/powercap/intel-rapl:0/energy_uj", 1500000);
    ASSERT_OK(jc__rapl_read(r, &e, why, sizeof why));
    ASSERT_NEAR(e, (328850.0 + 1 + 1000000 + 1 + 500000) * 1e-6, 1e-12);
    jc__rapl_close(r);
    rm_tree(dir);
}

TEST(rapl_mmio_used_when_msr_absent) {
    char dir[256], why[512] = "";
    make_copy("sysfs/intel-2socket", dir, sizeof dir);
    rm_sub(dir, "class/powercap/intel-rapl:0");
    rm_sub(dir, "class/powercap/intel-rapl:0:0");
    rm_sub(dir, "class/powercap/intel-rapl:0:1");
    rm_sub(dir, "class/powercap/intel-rapl:0:2");
    jc__rapl *r = NULL;
    ASSERT_OK(jc__rapl_open(dir, &r, why, sizeof why));
    ASSERT_STR_EQ(jc__rapl_zones(r), "package-0, package-1, dram (package-1)");
    write_u64(dir, "class/powercap/intel-rapl-mmio:0/energy_uj", 100000500 + 2000000);
    double e = 0;
    ASSERT_OK(jc__rapl_read(r, &e, why, sizeof why));
    ASSERT_NEAR(e, 2.0, 1e-9);
    jc__rapl_close(r);
    rm_tree(dir);
}

TEST(rapl_amd_core_not_added) {
    char dir[256], why[512] = "";
    make_copy("sysfs/amd-1socket", dir, sizeof dir);
    jc__rapl *r = NULL;
    ASSERT_OK(jc__rapl_open(dir, &r, why, sizeof why));
    ASSERT_STR_EQ(jc__rapl_zones(r), "package-0");
    write_u64(dir, "class/powercap/intel-rapl:0/energy_uj", 5000000 + 2500000);
    write_u64(dir, "class/powercap/intel-rapl:0:0/energy_uj", 3000000 + 2000000);
    double e = 0;
    ASSERT_OK(jc__rapl_read(r, &e, why, sizeof why));
    ASSERT_NEAR(e, 2.5, 1e-9);
    jc__rapl_close(r);
    rm_tree(dir);
}

TEST(rapl_dies_added) {
    char dir[256], why[512] = "";
    make_copy("sysfs/intel-die", dir, sizeof dir);
    jc__rapl *r = NULL;
    ASSERT_OK(jc__rapl_open(dir, &r, why, sizeof why));
    ASSERT_STR_EQ(jc__rapl_zones(r),
                  "package-0-die-0, package-0-die-1, dram (package-0-die-0), dram (package-0-die-1)");
    write_u64(dir, "class/powercap/intel-rapl:0/energy_uj", 1000000 + 1000000);
    write_u64(dir, "class/powercap/intel-rapl:1/energy_uj", 2000000 + 3000000);
    write_u64(dir, "class/powercap/intel-rapl:1:0/energy_uj", 400000 + 250000);
    double e = 0;
    ASSERT_OK(jc__rapl_read(r, &e, why, sizeof why));
    ASSERT_NEAR(e, 4.25, 1e-9);
    jc__rapl_close(r);
    rm_tree(dir);
}

TEST(rapl_package_preferred_over_its_dies) {
    char dir[256], why[512] = "";
    make_copy("sysfs/intel-die", dir, sizeof dir);
    char p[512];
    snprintf(p, sizeof p, "%s/class/powercap/intel-rapl:2", dir);
    ASSERT_EQ(mkdir(p, 0755), 0);
    write_rel(dir, "class/powercap/intel-rapl:2/name", "package-0");
    write_u64(dir, "class/powercap/intel-rapl:2/energy_uj", 9000000);
    write_u64(dir, "class/powercap/intel-rapl:2/max_energy_range_uj", PKG_MAX);
    jc__rapl *r = NULL;
    ASSERT_OK(jc__rapl_open(dir, &r, why, sizeof why));
    ASSERT_STR_EQ(jc__rapl_zones(r), "package-0");
    jc__rapl_close(r);
    rm_tree(dir);
}

TEST(rapl_psys_only) {
    char dir[256], why[512] = "";
    make_copy("sysfs/psys-only", dir, sizeof dir);
    jc__rapl *r = NULL;
    ASSERT_OK(jc__rapl_open(dir, &r, why, sizeof why));
    ASSERT_STR_EQ(jc__rapl_zones(r), "psys");
    write_u64(dir, "class/powercap/intel-rapl:1/energy_uj", 7000000 + 1234567);
    double e = 0;
    ASSERT_OK(jc__rapl_read(r, &e, why, sizeof why));
    ASSERT_NEAR(e, 1.234567, 1e-12);
    jc__rapl_close(r);
    rm_tree(dir);
}

TEST(rapl_absent) {
    const char *trees[] = {"sysfs/norapl", "sysfs/empty"};
    for (size_t i = 0; i < 2; i++) {
        char root[1024], why[512] = "";
        data_path(root, sizeof root, trees[i]);
        jc__rapl *r = (jc__rapl *)&r; /* must be reset to NULL */
        ASSERT_STATUS(jc__rapl_open(root, &r, why, sizeof why), JC_ERR_UNAVAILABLE);
        ASSERT_TRUE(r == NULL);
        ASSERT_CONTAINS(why, "no RAPL");
        ASSERT_CONTAINS(why, "class/powercap does not exist");
        ASSERT_CONTAINS(why, "virtual machine");
        ASSERT_CONTAINS(jc_last_detail(), "no RAPL");
    }
}

TEST(rapl_only_overlapping_subzones) {
    char dir[256], why[512] = "";
    make_copy("sysfs/amd-1socket", dir, sizeof dir);
    rm_sub(dir, "class/powercap/intel-rapl:0");
    jc__rapl *r = NULL;
    ASSERT_STATUS(jc__rapl_open(dir, &r, why, sizeof why), JC_ERR_UNAVAILABLE);
    ASSERT_CONTAINS(why, "no package");
    ASSERT_CONTAINS(why, "only: core");
    rm_tree(dir);
}

/* Runs in a child that is not root.  Exit codes name the failed check. */
static int permission_child(const char *denied_root, const char *owned_root) {
    char why[1024] = "";
    jc__rapl *r = NULL;
    /* 1: the patched-kernel layout: energy_uj mode 0400 owned by root */
    if (jc__rapl_open(denied_root, &r, why, sizeof why) != JC_ERR_NO_PERMISSION) return 10;
    if (r != NULL) return 11;
    if (!strstr(why, "root") || !strstr(why, "CVE-2020-8694") || !strstr(why, "chmod")) return 12;
    if (!strstr(jc_last_detail(), "CVE-2020-8694")) return 13;
    /* 2: access lost after open: read reports it the same way and leaves the total untouched */
    if (jc__rapl_open(owned_root, &r, why, sizeof why) != JC_OK) return 20;
    char p[1024];
    snprintf(p, sizeof p, "%s/class/powercap/intel-rapl:1/energy_uj", owned_root);
    if (chmod(p, 0) != 0) return 21;
    double e = -1;
    why[0] = '\0';
    if (jc__rapl_read(r, &e, why, sizeof why) != JC_ERR_NO_PERMISSION) return 22;
    if (!strstr(why, "CVE-2020-8694") || e != -1) return 23;
    if (chmod(p, 0644) != 0) return 24;
    if (jc__rapl_read(r, &e, why, sizeof why) != JC_OK || e != 0.0) return 25;
    jc__rapl_close(r);
    return 0;
}

TEST(rapl_permission_denied) {
    char denied[256], owned[256], p[1024];
    make_copy("sysfs/intel-2socket", denied, sizeof denied);
    make_copy("sysfs/intel-2socket", owned, sizeof owned);
    int root = geteuid() == 0;
    const char *zones[] = {"intel-rapl:0", "intel-rapl:0:0", "intel-rapl:0:1", "intel-rapl:0:2", "intel-rapl:1",
                           "intel-rapl:1:0", "intel-rapl:2", "intel-rapl-mmio:0"};
    for (size_t i = 0; i < sizeof zones / sizeof zones[0]; i++) {
        snprintf(p, sizeof p, "%s/class/powercap/%s/energy_uj", denied, zones[i]);
        /* as root, 0400 root-owned is what patched kernels do; a non-root owner needs 0000 to be refused */
        ASSERT_EQ(chmod(p, root ? 0400 : 0000), 0);
    }
    if (root) ASSERT_EQ(nftw(owned, chown_entry, 16, FTW_PHYS), 0);
    fflush(NULL);
    pid_t pid = fork();
    ASSERT_TRUE(pid >= 0);
    if (pid == 0) {
        if (root) {
            if (setgroups(0, NULL) != 0 || setgid(NOBODY) != 0 || setuid(NOBODY) != 0) _exit(2);
            if (geteuid() == 0) _exit(3);
        }
        _exit(permission_child(denied, owned));
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    rm_tree(denied);
    rm_tree(owned);
}

/* ---- /proc/stat ---- */

TEST(procstat_utilisation_from_deltas) {
    char dir[256], why[512] = "";
    make_copy("proc/xeon-8480", dir, sizeof dir);
    jc__procstat ps;
    ASSERT_OK(jc__procstat_open(dir, &ps, why, sizeof why));
    char stat[512];
    snprintf(stat, sizeof stat, "%s/stat", dir);
    /* from "cpu  10000 500 3000 80000 1000 200 300 100 50 0": user +600 (of which guest +400, already in
     * user), system +200, idle +1000, iowait +100, irq +50, softirq +50 -> total 2000, busy 900 */
    write_file(stat, "cpu  10600 500 3200 81000 1100 250 350 100 450 0\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 1 2 3");
    double u = -1;
    ASSERT_OK(jc__procstat_read(&ps, &u, why, sizeof why));
    ASSERT_NEAR(u, 45.0, 1e-9);
    /* steal counts as busy: +100 steal, +300 idle -> 25 % */
    write_file(stat, "cpu  10600 500 3200 81300 1100 250 350 200 450 0");
    ASSERT_OK(jc__procstat_read(&ps, &u, why, sizeof why));
    ASSERT_NEAR(u, 25.0, 1e-9);
    /* no tick since the last read: said, not invented; the next read spans both intervals */
    ASSERT_STATUS(jc__procstat_read(&ps, &u, why, sizeof why), JC_ERR_TIMEOUT);
    ASSERT_CONTAINS(why, "no CPU time accounted");
    write_file(stat, "cpu  10700 500 3200 81400 1100 250 350 200 450 0");
    ASSERT_OK(jc__procstat_read(&ps, &u, why, sizeof why));
    ASSERT_NEAR(u, 50.0, 1e-9);
    /* fully idle, fully busy */
    write_file(stat, "cpu  10700 500 3200 82400 1100 250 350 200 450 0");
    ASSERT_OK(jc__procstat_read(&ps, &u, why, sizeof why));
    ASSERT_NEAR(u, 0.0, 1e-9);
    write_file(stat, "cpu  11700 500 3200 82400 1100 250 350 200 450 0");
    ASSERT_OK(jc__procstat_read(&ps, &u, why, sizeof why));
    ASSERT_NEAR(u, 100.0, 1e-9);
    rm_tree(dir);
}

TEST(procstat_first_read_since_open) {
    char dir[256], why[512] = "";
    make_copy("proc/qemu", dir, sizeof dir);
    jc__procstat ps;
    ASSERT_OK(jc__procstat_open(dir, &ps, why, sizeof why));
    char stat[512];
    snprintf(stat, sizeof stat, "%s/stat", dir);
    /* "cpu  400 0 200 7000 10 0 5 30 0 0" -> +150 user, +50 idle */
    write_file(stat, "cpu  550 0 200 7050 10 0 5 30 0 0");
    double u = -1;
    ASSERT_OK(jc__procstat_read(&ps, &u, why, sizeof why));
    ASSERT_NEAR(u, 75.0, 1e-9);
    rm_tree(dir);
}

TEST(procstat_errors) {
    char dir[256], why[512] = "";
    make_copy(NULL, dir, sizeof dir);
    jc__procstat ps;
    ASSERT_STATUS(jc__procstat_open(dir, &ps, why, sizeof why), JC_ERR_UNAVAILABLE);
    ASSERT_CONTAINS(why, "does not exist");
    char stat[512];
    snprintf(stat, sizeof stat, "%s/stat", dir);
    write_file(stat, "intr 1 2 3");
    ASSERT_STATUS(jc__procstat_open(dir, &ps, why, sizeof why), JC_ERR_IO);
    write_file(stat, "cpu  1 2 3 4 5 6 7 8 0 0");
    ASSERT_OK(jc__procstat_open(dir, &ps, why, sizeof why));
    remove(stat);
    double u;
    ASSERT_STATUS(jc__procstat_read(&ps, &u, why, sizeof why), JC_ERR_UNAVAILABLE);
    rm_tree(dir);
}

/* ---- temperature ---- */

TEST(cputemp_coretemp_max_over_packages) {
    char dir[256], why[512] = "";
    make_copy("sysfs/norapl", dir, sizeof dir);
    jc__cputemp *t = NULL;
    ASSERT_OK(jc__cputemp_open(dir, &t, why, sizeof why));
    ASSERT_STR_EQ(jc__cputemp_describe(t), "hwmon coretemp: Package id 0, Package id 1");
    double c = 0;
    ASSERT_OK(jc__cputemp_read(t, &c, why, sizeof why));
    ASSERT_NEAR(c, 61.0, 1e-9); /* not Core 1's 70: cores are not packages */
    write_u64(dir, "class/hwmon/hwmon1/temp1_input", 75500);
    ASSERT_OK(jc__cputemp_read(t, &c, why, sizeof why));
    ASSERT_NEAR(c, 75.5, 1e-9);
    jc__cputemp_close(t);
    rm_tree(dir);
}

TEST(cputemp_k10temp) {
    char root[1024], why[512] = "";
    data_path(root, sizeof root, "sysfs/amd-1socket");
    jc__cputemp *t = NULL;
    ASSERT_OK(jc__cputemp_open(root, &t, why, sizeof why));
    ASSERT_STR_EQ(jc__cputemp_describe(t), "hwmon k10temp: Tctl");
    double c = 0;
    ASSERT_OK(jc__cputemp_read(t, &c, why, sizeof why));
    ASSERT_NEAR(c, 45.25, 1e-9);
    jc__cputemp_close(t);
}

TEST(cputemp_thermal_zone_fallback) {
    char dir[256], why[512] = "";
    make_copy("sysfs/norapl", dir, sizeof dir);
    rm_sub(dir, "class/hwmon");
    jc__cputemp *t = NULL;
    ASSERT_OK(jc__cputemp_open(dir, &t, why, sizeof why));
    ASSERT_STR_EQ(jc__cputemp_describe(t), "thermal zone x86_pkg_temp: thermal_zone1, thermal_zone2");
    double c = 0;
    ASSERT_OK(jc__cputemp_read(t, &c, why, sizeof why));
    ASSERT_NEAR(c, 60.0, 1e-9);
    jc__cputemp_close(t);
    /* acpitz only as the last resort */
    write_rel(dir, "class/thermal/thermal_zone1/type", "iwlwifi_1");
    write_rel(dir, "class/thermal/thermal_zone2/type", "iwlwifi_2");
    ASSERT_OK(jc__cputemp_open(dir, &t, why, sizeof why));
    ASSERT_STR_EQ(jc__cputemp_describe(t), "thermal zone acpitz: thermal_zone0");
    ASSERT_OK(jc__cputemp_read(t, &c, why, sizeof why));
    ASSERT_NEAR(c, 27.8, 1e-9);
    jc__cputemp_close(t);
    rm_tree(dir);
}

TEST(cputemp_none) {
    const char *trees[] = {"sysfs/empty", "sysfs/intel-2socket"};
    for (size_t i = 0; i < 2; i++) {
        char root[1024], why[512] = "";
        data_path(root, sizeof root, trees[i]);
        jc__cputemp *t = (jc__cputemp *)&t;
        ASSERT_STATUS(jc__cputemp_open(root, &t, why, sizeof why), JC_ERR_UNAVAILABLE);
        ASSERT_TRUE(t == NULL);
        ASSERT_CONTAINS(why, "no CPU temperature");
        ASSERT_CONTAINS(why, "class/hwmon");
    }
}

TEST(cputemp_sensor_disappears) {
    char dir[256], why[512] = "";
    make_copy("sysfs/amd-1socket", dir, sizeof dir);
    jc__cputemp *t = NULL;
    ASSERT_OK(jc__cputemp_open(dir, &t, why, sizeof why));
    rm_sub(dir, "class/hwmon/hwmon1/temp1_input");
    double c = 0;
    ASSERT_STATUS(jc__cputemp_read(t, &c, why, sizeof why), JC_ERR_NOT_FOUND);
    ASSERT_CONTAINS(why, "temp1_input");
    jc__cputemp_close(t);
    rm_tree(dir);
}

/* ---- estimate ---- */

static void check_monotone(const jc__cpu_estimate *e) {
    double prev = jc__cpu_estimate_power_w(e, 0.0);
    for (int u = 5; u <= 100; u += 5) {
        double p = jc__cpu_estimate_power_w(e, u);
        ASSERT_TRUE(p > prev);
        prev = p;
    }
    ASSERT_NEAR(jc__cpu_estimate_power_w(e, 150.0), jc__cpu_estimate_power_w(e, 100.0), 1e-12);
    ASSERT_NEAR(jc__cpu_estimate_power_w(e, -5.0), jc__cpu_estimate_power_w(e, 0.0), 1e-12);
}

TEST(estimate_table_model) {
    char root[1024], why[512] = "";
    data_path(root, sizeof root, "proc/xeon-8480");
    jc__cpu_estimate e;
    ASSERT_OK(jc__cpu_estimate_open(root, &e, why, sizeof why));
    ASSERT_STR_EQ(e.model, "Intel(R) Xeon(R) Platinum 8480+");
    ASSERT_EQ(e.threads, 8);
    ASSERT_EQ(e.from_table, 1);
    ASSERT_NEAR(e.max_w_per_thread, 350.0 / 112, 1e-12);
    ASSERT_NEAR(e.idle_w_per_thread, 0.1 * 350.0 / 112, 1e-12);
    ASSERT_CONTAINS(e.describe, "Intel(R) Xeon(R) Platinum 8480+ (TDP 350 W / 112 threads), 8 logical CPUs");
    ASSERT_CONTAINS(e.describe, "P = n*(0.31 + 2.81*u) W");
    ASSERT_NEAR(jc__cpu_estimate_power_w(&e, 0), 8 * 0.3125, 1e-9);
    ASSERT_NEAR(jc__cpu_estimate_power_w(&e, 50), 8 * (0.3125 + 2.8125 * 0.5), 1e-9);
    ASSERT_NEAR(jc__cpu_estimate_power_w(&e, 100), 8 * 3.125, 1e-9);
    check_monotone(&e);
}

TEST(estimate_unknown_model) {
    char root[1024], why[512] = "";
    data_path(root, sizeof root, "proc/qemu");
    jc__cpu_estimate e;
    ASSERT_OK(jc__cpu_estimate_open(root, &e, why, sizeof why));
    ASSERT_EQ(e.from_table, 0);
    ASSERT_EQ(e.threads, 2);
    ASSERT_NEAR(e.max_w_per_thread, 10.0, 1e-12);
    ASSERT_NEAR(e.idle_w_per_thread, 1.0, 1e-12);
    ASSERT_CONTAINS(e.describe, "unknown CPU model 'QEMU Virtual CPU version 2.5+': default 10 W per thread");
    ASSERT_CONTAINS(why, "not in the built-in table");
    ASSERT_NEAR(jc__cpu_estimate_power_w(&e, 100), 20.0, 1e-9);
    check_monotone(&e);
}

TEST(estimate_model_matching) {
    /* medians of the table's EPYC and Xeon parts (6 each) */
    const double epyc = 0.5 * (280.0 / 128 + 225.0 / 96), xeon = 0.5 * (350.0 / 96 + 150.0 / 40);
    const struct {
        const char *model;
        int from_table;
        double max_w;
    } cases[] = {
        {"AMD EPYC 7R13 Processor", 1, 225.0 / 96},
        {"AMD EPYC 9654 96-Core Processor", 1, 360.0 / 192},
        {"AMD EPYC 7763 64-Core Processor", 1, 280.0 / 128},
        {"Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", 1, 150.0 / 40},
        {"Intel(R) Xeon(R) Platinum 8468", 1, 350.0 / 96},
        {"Intel(R) Xeon(R) Platinum 8468V", 0, xeon},
        {"Intel(R) Xeon(R) Platinum 8480C", 0, xeon},
        {"Intel(R) Xeon(R) CPU @ 2.20GHz", 0, xeon},
        {"Intel Xeon Processor (Icelake)", 0, xeon},
        {"AMD EPYC", 0, epyc},
        {"AMD EPYC-Rome Processor", 0, epyc},
        {"13th Gen Intel(R) Core(TM) i9-13900K", 1, 125.0 / 32},
        {"13th Gen Intel(R) Core(TM) i9-13900KS", 0, 10.0},
        {"AMD Ryzen 9 7950X 16-Core Processor", 1, 170.0 / 32},
        {"AMD Ryzen 9 7950X3D 16-Core Processor", 0, 10.0},
        {"AMD EPYC 77630", 0, epyc},
        {"Neoverse-N1", 0, 10.0},
    };
    char dir[256], path[512], text[256], why[512];
    make_copy(NULL, dir, sizeof dir);
    snprintf(path, sizeof path, "%s/cpuinfo", dir);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(text, sizeof text, "processor\t: 0\nmodel name\t: %s\n\nprocessor\t: 1\nmodel name\t: %s\n",
                 cases[i].model, cases[i].model);
        write_file(path, text);
        jc__cpu_estimate e;
        ASSERT_OK(jc__cpu_estimate_open(dir, &e, why, sizeof why));
        if (e.from_table != cases[i].from_table) JC_FAILF("'%s': from_table %d", cases[i].model, e.from_table);
        ASSERT_STR_EQ(e.model, cases[i].model);
        ASSERT_EQ(e.threads, 2);
        ASSERT_NEAR(e.max_w_per_thread, cases[i].max_w, 1e-12);
        ASSERT_NEAR(e.idle_w_per_thread, 0.1 * cases[i].max_w, 1e-12);
        if (!e.from_table) ASSERT_CONTAINS(why, "not in the built-in table");
    }
    ASSERT_CONTAINS(why, "default of 10 W per thread");
    rm_tree(dir);
}

TEST(estimate_family_median) {
    char dir[256], path[512], why[512] = "";
    make_copy(NULL, dir, sizeof dir);
    snprintf(path, sizeof path, "%s/cpuinfo", dir);
    write_file(path, "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n");
    jc__cpu_estimate e;
    ASSERT_OK(jc__cpu_estimate_open(dir, &e, why, sizeof why));
    ASSERT_EQ(e.from_table, 0);
    ASSERT_CONTAINS(e.describe, "CPU model 'AMD EPYC' not in the table: median of its 6 EPYC parts, 2.27 W per thread");
    ASSERT_CONTAINS(why, "median TDP per thread of the table's EPYC parts");
    check_monotone(&e);
    rm_tree(dir);
}

TEST(estimate_without_cpuinfo) {
    char dir[256], why[512] = "";
    make_copy(NULL, dir, sizeof dir);
    jc__cpu_estimate e;
    ASSERT_OK(jc__cpu_estimate_open(dir, &e, why, sizeof why));
    ASSERT_STR_EQ(e.model, "unknown");
    ASSERT_EQ(e.from_table, 0);
    ASSERT_EQ(e.threads, sysconf(_SC_NPROCESSORS_ONLN));
    ASSERT_CONTAINS(e.describe, "no cpuinfo");
    check_monotone(&e);
    rm_tree(dir);
}

JC_TEST_MAIN(TEST_ENTRY(rapl_two_sockets_zones), TEST_ENTRY(rapl_overlapping_zones_not_added),
             TEST_ENTRY(rapl_counter_wrap), TEST_ENTRY(rapl_mmio_used_when_msr_absent),
             TEST_ENTRY(rapl_amd_core_not_added), TEST_ENTRY(rapl_dies_added),
             TEST_ENTRY(rapl_package_preferred_over_its_dies), TEST_ENTRY(rapl_psys_only), TEST_ENTRY(rapl_absent),
             TEST_ENTRY(rapl_only_overlapping_subzones), TEST_ENTRY(rapl_permission_denied),
             TEST_ENTRY(procstat_utilisation_from_deltas), TEST_ENTRY(procstat_first_read_since_open),
             TEST_ENTRY(procstat_errors), TEST_ENTRY(cputemp_coretemp_max_over_packages), TEST_ENTRY(cputemp_k10temp),
             TEST_ENTRY(cputemp_thermal_zone_fallback), TEST_ENTRY(cputemp_none),
             TEST_ENTRY(cputemp_sensor_disappears), TEST_ENTRY(estimate_table_model),
             TEST_ENTRY(estimate_unknown_model), TEST_ENTRY(estimate_model_matching),
             TEST_ENTRY(estimate_family_median), TEST_ENTRY(estimate_without_cpuinfo))
