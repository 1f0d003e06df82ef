/* JOULECAP_FAKE: where the bundled fake NVML, its scenarios and the fake GPU's private state are. */
#include "fake.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FAKE_LIBRARY "libjoulecap-fakenvml.so"

/* Short names of bundled scenarios. */
static const struct {
    const char *name, *scenario;
} ALIASES[] = {{"h100", "h100-constant-300w"}};

const char *jc__fake_wanted(void) {
    const char *v = secure_getenv("JOULECAP_FAKE");
    return v && *v ? v : NULL;
}

/* The scenario's name without folder and ".scn", aliases resolved: the name of its private directory. */
static void scenario_stem(const char *value, char *out, size_t len) {
    const char *base = strrchr(value, '/');
    base = base ? base + 1 : value;
    size_t n = strlen(base);
    if (n > 4 && strcmp(base + n - 4, ".scn") == 0) n -= 4;
    for (size_t i = 0; i < sizeof ALIASES / sizeof ALIASES[0]; i++)
        if (strlen(ALIASES[i].name) == n && strncmp(base, ALIASES[i].name, n) == 0) {
            base = ALIASES[i].scenario;
            n = strlen(base);
        }
    size_t k = 0;
    for (; k < n && k + 1 < len; k++) {
        char c = base[k];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                 c == '_' || (c == '.' && k > 0);
        out[k] = ok ? c : '_';
    }
    out[k] = '\0';
    if (k == 0) jc__fmt(out, len, "scenario");
}

/* Creates path (mode 0700) if it is missing and checks that it is this user's alone. */
static jc_status private_dir(const char *path) {
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return jc__fail(errno == EACCES || errno == EROFS ? JC_ERR_NO_PERMISSION : JC_ERR_IO,
                        "JOULECAP_FAKE: cannot create the fake GPU's private directory %s: %s", path,
                        strerror(errno));
    struct stat sb;
    if (lstat(path, &sb) != 0)
        return jc__fail(JC_ERR_IO, "JOULECAP_FAKE: cannot check %s: %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return jc__fail(JC_ERR_NO_PERMISSION, "JOULECAP_FAKE: %s is not a directory (a link or a file): refused. "
                        "Check who made it, then remove it", path);
    if (sb.st_uid != geteuid())
        return jc__fail(JC_ERR_NO_PERMISSION, "JOULECAP_FAKE: %s belongs to uid %u, not to this user (uid %u): "
                        "refused. Remove it, or point TMPDIR elsewhere", path, (unsigned)sb.st_uid,
                        (unsigned)geteuid());
    if (sb.st_mode & 077)
        return jc__fail(JC_ERR_NO_PERMISSION, "JOULECAP_FAKE: %s is open to other users (mode %04o): refused. "
                        "Fix: 'chmod 700 %s'", path, (unsigned)(sb.st_mode & 07777), path);
    return JC_OK;
}

static int is_dir(const char *path) {
    struct stat sb;
    return path && path[0] == '/' && stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

jc_status jc__fake_dir(char *buf, size_t len) {
    const char *value = jc__fake_wanted();
    if (!value) return jc__fail(JC_ERR_INVALID_ARGUMENT, "JOULECAP_FAKE is not set");
    const char *base = secure_getenv("XDG_RUNTIME_DIR");
    if (!is_dir(base)) base = secure_getenv("TMPDIR");
    if (!is_dir(base)) base = "/tmp";
    char stem[128];
    scenario_stem(value, stem, sizeof stem);
    if (!jc__path(buf, len, "%s/joulecap-fake-%u", base, (unsigned)geteuid()))
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "JOULECAP_FAKE: the path %s/joulecap-fake-... is too long", base);
    jc_status st = private_dir(buf);
    if (st != JC_OK) return st;
    size_t n = strlen(buf);
    if (!jc__path(buf + n, len - n, "/%s", stem))
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "JOULECAP_FAKE: the path %s/%s is too long", buf, stem);
    return private_dir(buf);
}

/* The folder of the program or shared object this code was linked into (the joulecap tool, the Python
 * extension, libjoulecap.so), and the folder of the running program; "" where unknown. */
static void code_dirs(char obj[PATH_MAX], char exe[PATH_MAX]) {
    obj[0] = exe[0] = '\0';
    Dl_info info;
    struct link_map *lm = NULL;
    /* dladdr names the main program by argv[0], which need not be a path: its link map's name is "". */
    if (dladdr1((void *)&jc__fake_nvml, &info, (void **)&lm, RTLD_DL_LINKMAP) && lm && lm->l_name &&
        lm->l_name[0] && realpath(lm->l_name, obj)) {
        char *slash = strrchr(obj, '/');
        if (slash) *slash = '\0';
    }
    ssize_t n = readlink("/proc/self/exe", exe, PATH_MAX - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) *slash = '\0';
    } else {
        exe[0] = '\0';
    }
}

static int is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* The bundled scenario names, sorted (for the error when one is not found). */
static void list_scenarios(const char *dir, char *out, size_t len) {
    out[0] = '\0';
    struct dirent **names = NULL;
    int n = scandir(dir, &names, NULL, alphasort);
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        size_t k = strlen(names[i]->d_name);
        if (k > 4 && strcmp(names[i]->d_name + k - 4, ".scn") == 0 && used + 1 < len) {
            int w = snprintf(out + used, len - used, "%s%.*s", used ? ", " : "", (int)(k - 4), names[i]->d_name);
            if (w > 0) used += (size_t)w;
        }
        free(names[i]);
    }
    free(names);
}

jc_status jc__fake_nvml(char *lib, size_t liblen, char *scenario, size_t scenariolen) {
    const char *value = jc__fake_wanted();
    if (!value) return jc__fail(JC_ERR_INVALID_ARGUMENT, "JOULECAP_FAKE is not set");
    char dirs[2][PATH_MAX];
    code_dirs(dirs[0], dirs[1]);
    static const char *const places[] = {"%s/" FAKE_LIBRARY, "%s/_fake/" FAKE_LIBRARY, "%s/../_fake/" FAKE_LIBRARY};
    lib[0] = '\0';
    for (int d = 0; d < 2 && !lib[0]; d++) {
        if (!dirs[d][0]) continue;
        for (size_t p = 0; p < sizeof places / sizeof places[0]; p++) {
            char cand[PATH_MAX + 64];
            snprintf(cand, sizeof cand, places[p], dirs[d]);
            if (is_file(cand) && realpath(cand, lib)) break;
            lib[0] = '\0';
        }
    }
    if (!lib[0])
        return jc__fail(JC_ERR_UNAVAILABLE, "JOULECAP_FAKE=%s: the fake NVML library (%s) is not beside %s: it comes "
                        "with the Python package (joulecap/_fake/) and with a CMake build of joulecap", value,
                        FAKE_LIBRARY, dirs[0][0] ? dirs[0] : dirs[1]);
    if (strlen(lib) >= liblen) return jc__fail(JC_ERR_INVALID_ARGUMENT, "JOULECAP_FAKE: path too long: %s", lib);

    if (strchr(value, '/')) {
        if (!is_file(value))
            return jc__fail(JC_ERR_NOT_FOUND, "JOULECAP_FAKE=%s: no such scenario file", value);
        if (!realpath(value, scenario) || strlen(scenario) >= scenariolen)
            return jc__fail(JC_ERR_IO, "JOULECAP_FAKE=%s: cannot resolve the path", value);
        return JC_OK;
    }
    char scn_dir[PATH_MAX], stem[128];
    jc__fmt(scn_dir, sizeof scn_dir, "%s", lib);
    *strrchr(scn_dir, '/') = '\0'; /* realpath gave an absolute path */
    size_t n = strlen(scn_dir);
    jc__fmt(scn_dir + n, sizeof scn_dir - n, "/scenarios");
    scenario_stem(value, stem, sizeof stem);
    if (!jc__path(scenario, scenariolen, "%s/%s.scn", scn_dir, stem))
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "JOULECAP_FAKE: path too long: %s/%s.scn", scn_dir, stem);
    if (!is_file(scenario)) {
        char names[1024];
        list_scenarios(scn_dir, names, sizeof names);
        return jc__fail(JC_ERR_NOT_FOUND, "JOULECAP_FAKE=%s: no scenario %s.scn in %s. Name a .scn file by its "
                        "path, or a bundled scenario: h100 (= h100-constant-300w, one H100 at 300 W), %s", value, stem,
                        scn_dir, names[0] ? names : "(none found)");
    }
    return JC_OK;
}
