/* The power-cap journal on disk: the state directory, per-GPU lock files, atomic journal writes, and the
 * identity of the processes that own journals (pid + start time). */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "caps_internal.h"
#include "../sources/fake.h"

#define JOURNAL_MAGIC_V1 "joulecap-cap-journal 1"
#define JOURNAL_MAGIC "joulecap-cap-journal 2"
#define JOURNAL_MAX 4096 /* a journal is ~400 bytes: anything larger is not one */

double jc__wall_time(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------------------------------------------
 * State directory.
 * ---------------------------------------------------------------------------------------------------- */

static jc_status errno_fail(int err, const char *fmt, const char *a, const char *b) {
    jc_status st = err == EACCES || err == EPERM || err == EROFS ? JC_ERR_NO_PERMISSION : JC_ERR_IO;
    return jc__fail(st, fmt, a, b, strerror(err));
}

/* mkdir -p; the directories it creates get exactly `mode` (not mode & ~umask: a group-writable umask would
 * make them fail the checks below). */
static jc_status mkdir_p(const char *path, mode_t mode) {
    char tmp[512];
    if (strlen(path) >= sizeof tmp) return jc__fail(JC_ERR_INVALID_ARGUMENT, "state directory path too long: %s", path);
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char c = *p;
        *p = '\0';
        mode_t m = c ? 0755 : mode;
        if (mkdir(tmp, m) == 0) {
            if (chmod(tmp, m) != 0) return errno_fail(errno, "cannot set the mode of %s (for %s): %s", tmp, path);
        } else if (errno != EEXIST) {
            return errno_fail(errno, "cannot create the state directory %s: %s: %s", path, tmp);
        }
        *p = c;
        if (!c) break;
    }
    return JC_OK;
}

static int usable_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode) && access(path, W_OK | X_OK) == 0;
}

/* As ssh's StrictModes: the state directory belongs to this user (for reading only: or to root) and nobody
 * else may write to it; every directory above it belongs to root or to this user and is not writable by
 * others unless sticky (/tmp).  Otherwise another user could plant links or forged journals that root
 * would follow. */
static jc_status check_secure(const char *path, int writing) {
    uid_t me = geteuid();
    struct stat sb;
    if (stat(path, &sb) != 0) return errno_fail(errno, "cannot use the state directory %s%s: %s", path, "");
    if (!S_ISDIR(sb.st_mode)) return jc__fail(JC_ERR_IO, "the state directory %s is not a directory", path);
    if (sb.st_uid != me && !(!writing && sb.st_uid == 0))
        return jc__fail(JC_ERR_NO_PERMISSION,
                        "the state directory %s belongs to uid %u, not to this user (uid %u): its owner could plant "
                        "links or forged journals. Fix: 'chown %u %s', or use a directory of your own "
                        "(JOULECAP_STATE_DIR or --state-dir)",
                        path, (unsigned)sb.st_uid, (unsigned)me, (unsigned)me, path);
    if (sb.st_mode & 022)
        return jc__fail(JC_ERR_NO_PERMISSION,
                        "the state directory %s is writable by %s (mode %04o): other users could plant links or "
                        "forged journals. Fix: 'chmod go-w %s'",
                        path, (sb.st_mode & 002) ? "everyone" : "its group", (unsigned)(sb.st_mode & 07777), path);
    char up[512];
    jc__fmt(up, sizeof up, "%s", path);
    for (;;) {
        char *slash = strrchr(up, '/');
        if (!slash) break;
        if (slash == up) slash[1] = '\0';
        else *slash = '\0';
        if (stat(up, &sb) != 0)
            return errno_fail(errno, "cannot check %s (above the state directory %s): %s", up, path);
        if (sb.st_uid != 0 && sb.st_uid != me)
            return jc__fail(JC_ERR_NO_PERMISSION,
                            "%s (above the state directory %s) belongs to uid %u, neither root nor this user: it "
                            "could replace the state directory. Fix: 'chown root %s', or choose a state directory "
                            "elsewhere",
                            up, path, (unsigned)sb.st_uid, up);
        if ((sb.st_mode & 022) && !(sb.st_mode & S_ISVTX))
            return jc__fail(JC_ERR_NO_PERMISSION,
                            "%s (above the state directory %s) is writable by other users (mode %04o, no sticky "
                            "bit): they could replace the state directory. Fix: 'chmod go-w %s' (or 'chmod +t'), "
                            "or choose a state directory elsewhere",
                            up, path, (unsigned)(sb.st_mode & 07777), up);
        if (strcmp(up, "/") == 0) break;
    }
    return JC_OK;
}

/* Resolves symbolic links (the checks and every later use see one fixed path), then checks it. */
static jc_status finish_dir(char *buf, size_t len, int writing) {
    char real[PATH_MAX];
    if (!realpath(buf, real)) return errno_fail(errno, "cannot use the state directory %s%s: %s", buf, "");
    if (strlen(real) >= len || strlen(real) >= 480)
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "the state directory path %s is too long", real);
    jc__fmt(buf, len, "%s", real);
    return check_secure(buf, writing);
}

jc_status jc__cap_dir(const jc_cap_options *opts, char *buf, size_t len, int writing) {
    const char *explicit_dir = opts && opts->state_dir && *opts->state_dir ? opts->state_dir : NULL;
    if (!explicit_dir) {
        const char *env = secure_getenv("JOULECAP_STATE_DIR");
        if (env && *env) explicit_dir = env;
    }
    jc_status st;
    if (explicit_dir) {
        jc__fmt(buf, len, "%s", explicit_dir);
        st = mkdir_p(buf, 0755);
        return st == JC_OK ? finish_dir(buf, len, writing) : st;
    }
    if (jc__fake_wanted()) { /* a fake GPU's journals stay beside its private state, also as root */
        st = jc__fake_dir(buf, len);
        size_t n = strlen(buf);
        if (st == JC_OK && !jc__path(buf + n, len - n, "/caps"))
            st = jc__fail(JC_ERR_INVALID_ARGUMENT, "the state directory path %s/caps is too long", buf);
        if (st == JC_OK) st = mkdir_p(buf, 0700);
        return st == JC_OK ? finish_dir(buf, len, writing) : st;
    }
    if (usable_dir("/var/lib/joulecap") || (usable_dir("/var/lib") && mkdir_p("/var/lib/joulecap", 0755) == JC_OK)) {
        jc__fmt(buf, len, "/var/lib/joulecap");
        return finish_dir(buf, len, writing);
    }
    jc__clear_detail();
    const char *xdg = secure_getenv("XDG_RUNTIME_DIR");
    if (xdg && *xdg && usable_dir(xdg)) {
        jc__fmt(buf, len, "%s/joulecap", xdg);
        st = mkdir_p(buf, 0700);
        return st == JC_OK ? finish_dir(buf, len, writing) : st;
    }
    jc__fmt(buf, len, "/tmp/joulecap-%u", (unsigned)getuid());
    if (mkdir(buf, 0700) != 0 && errno != EEXIST)
        return jc__fail(JC_ERR_IO, "cannot create the state directory %s: %s", buf, strerror(errno));
    struct stat sb;
    if (lstat(buf, &sb) != 0 || !S_ISDIR(sb.st_mode) || sb.st_uid != geteuid())
        return jc__fail(JC_ERR_NO_PERMISSION,
                        "state directory %s is not a directory owned by this user: set JOULECAP_STATE_DIR", buf);
    return finish_dir(buf, len, writing);
}

/* The UUID with anything but [A-Za-z0-9._-] replaced by '_'. */
static void safe_name(char *out, size_t len, const char *uuid) {
    size_t i = 0;
    for (; uuid[i] && i + 1 < len; i++) {
        char c = uuid[i];
        out[i] = (isalnum((unsigned char)c) || c == '-' || c == '_' || c == '.') ? c : '_';
    }
    out[i] = '\0';
}

void jc__cap_path(char *buf, size_t len, const char *dir, const char *uuid, const char *suffix) {
    char safe[100];
    safe_name(safe, sizeof safe, uuid);
    jc__fmt(buf, len, "%s/%s%s", dir, safe, suffix);
}

int jc__cap_name_ok(const char *stem) {
    if (!stem[0] || strlen(stem) >= 96 || stem[0] == '.') return 0;
    for (const char *p = stem; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.') return 0;
    return 1;
}

/* Refuses what is not a plain file of this user (or root): a link, a FIFO, another user's file. */
static jc_status check_file(int fd, const char *path, const char *what) {
    struct stat sb;
    if (fstat(fd, &sb) != 0) return jc__fail(JC_ERR_IO, "cannot check the %s %s: %s", what, path, strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return jc__fail(JC_ERR_NO_PERMISSION, "the %s %s is not a regular file: refused. Check who made it, then "
                        "remove it (rm %s)", what, path, path);
    if (sb.st_uid != geteuid() && sb.st_uid != 0)
        return jc__fail(JC_ERR_NO_PERMISSION, "the %s %s belongs to uid %u, neither this user nor root: refused. "
                        "Check who made it, then remove it (rm %s)", what, path, (unsigned)sb.st_uid, path);
    return JC_OK;
}

static jc_status link_refused(const char *path, const char *what) {
    return jc__fail(JC_ERR_NO_PERMISSION, "the %s %s is a symbolic link: joulecap follows no links in its state "
                    "directory. Check who made it, then remove it (rm %s)", what, path, path);
}

jc_status jc__cap_lock(const char *dir, const char *uuid, int *fd) {
    char path[640];
    jc__cap_path(path, sizeof path, dir, uuid, ".lock");
    int flags = O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    int f = open(path, O_RDWR | flags, 0600);
    /* A read-only state directory (or file system): flock needs no write access, so the guardian can still
     * lock an existing lock file and restore. */
    if (f < 0 && (errno == EROFS || errno == EACCES)) f = open(path, O_RDONLY | flags, 0600);
    if (f < 0) {
        if (errno == ELOOP) return link_refused(path, "lock file");
        return jc__fail(errno == EACCES || errno == EPERM || errno == EROFS ? JC_ERR_NO_PERMISSION : JC_ERR_IO,
                        "cannot open the lock file %s: %s", path, strerror(errno));
    }
    jc_status st = check_file(f, path, "lock file");
    if (st != JC_OK) {
        close(f);
        return st;
    }
    while (flock(f, LOCK_EX) != 0) {
        if (errno == EINTR) continue;
        int err = errno;
        close(f);
        return jc__fail(JC_ERR_IO, "cannot lock %s: %s", path, strerror(err));
    }
    *fd = f;
    return JC_OK;
}

void jc__cap_unlock(int fd) {
    if (fd < 0) return;
    flock(fd, LOCK_UN);
    close(fd);
}

/* ------------------------------------------------------------------------------------------------------
 * Journal files.
 * ---------------------------------------------------------------------------------------------------- */

uint64_t jc__fnv1a64(const void *data, size_t n) {
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* A decimal number made of digits only, at most max. */
static int parse_num(const char *v, unsigned long long max, unsigned long long *out) {
    size_t n = strlen(v);
    if (n == 0 || n > 20) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)v[i])) return 0;
    errno = 0;
    unsigned long long x = strtoull(v, NULL, 10);
    if (errno || x > max) return 0;
    *out = x;
    return 1;
}

static const char *const KEYS[] = {"uuid",         "original_mw", "set_mw",         "base_mw", "owner_pid",
                                   "owner_start",  "guardian_pid", "guardian_start", "created", "owner_command"};
#define NKEYS (sizeof KEYS / sizeof KEYS[0])

static int bad(char *why, size_t wl, const char *fmt, ...) JC__PRINTF(3, 4);
static int bad(char *why, size_t wl, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, wl, fmt, ap);
    va_end(ap);
    return -1;
}

int jc__journal_parse(char *text, size_t len, const char *stem, jc__journal *j, char *why, size_t wl) {
    memset(j, 0, sizeof *j);
    if (len == 0) return bad(why, wl, "it is empty");
    if (strlen(text) != len) return bad(why, wl, "it holds a NUL byte");
    if (text[len - 1] != '\n') return bad(why, wl, "its last line is cut short");
    char *nl = strchr(text, '\n');
    size_t first = (size_t)(nl - text);
    int v2;
    if (first == strlen(JOURNAL_MAGIC) && strncmp(text, JOURNAL_MAGIC, first) == 0) v2 = 1;
    else if (first == strlen(JOURNAL_MAGIC_V1) && strncmp(text, JOURNAL_MAGIC_V1, first) == 0) v2 = 0;
    else return bad(why, wl, "its first line is not '" JOURNAL_MAGIC "'");
    char *body_end = text + len;
    if (v2) {
        /* The last line: "checksum fnv1a64 <16 hex digits>" over every byte before it. */
        char *last = text + len - 1;
        while (last > text && last[-1] != '\n') last--;
        static const char pre[] = "checksum fnv1a64 ";
        if (strncmp(last, pre, sizeof pre - 1) != 0)
            return bad(why, wl, "it has no checksum line at its end (cut short, or edited)");
        char want[32];
        jc__fmt(want, sizeof want, "%016llx\n", (unsigned long long)jc__fnv1a64(text, (size_t)(last - text)));
        if (strcmp(last + sizeof pre - 1, want) != 0) return bad(why, wl, "its checksum does not match");
        body_end = last;
    }
    *body_end = '\0';
    int seen[NKEYS] = {0};
    int lineno = 1;
    char *save = NULL;
    for (char *line = strtok_r(nl + 1, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        char *sp = strchr(line, ' ');
        if (!sp) return bad(why, wl, "line %d has no value", lineno);
        *sp = '\0';
        const char *v = sp + 1;
        size_t k = 0;
        while (k < NKEYS && strcmp(line, KEYS[k]) != 0) k++;
        if (k == NKEYS) return bad(why, wl, "line %d: unknown key '%.40s'", lineno, line);
        if (seen[k]++) return bad(why, wl, "line %d: '%s' given twice", lineno, line);
        unsigned long long x = 0;
        int ok = 1;
        switch (k) {
        case 0: ok = jc__cap_name_ok(v); if (ok) jc__fmt(j->uuid, sizeof j->uuid, "%s", v); break;
        case 1: ok = parse_num(v, 4000000000ull, &x) && x > 0; j->original_mw = (unsigned)x; break;
        case 2: ok = parse_num(v, 4000000000ull, &x); j->set_mw = (unsigned)x; break;
        case 3: ok = parse_num(v, 4000000000ull, &x); j->base_mw = (unsigned)x; break;
        case 4: ok = parse_num(v, 0x7fffffffull, &x); j->owner_pid = (int)x; break;
        case 5: ok = parse_num(v, ~0ull, &x); j->owner_start = x; break;
        case 6: ok = parse_num(v, 0x7fffffffull, &x); j->guardian_pid = (int)x; break;
        case 7: ok = parse_num(v, ~0ull, &x); j->guardian_start = x; break;
        case 8: {
            char *end = NULL;
            j->created = strtod(v, &end);
            ok = *v && end && !*end && j->created >= 0 && j->created < 1e11;
            break;
        }
        default: jc__fmt(j->owner_command, sizeof j->owner_command, "%s", v); break;
        }
        if (!ok) return bad(why, wl, "line %d: bad %s '%.40s'", lineno, KEYS[k], v);
    }
    for (size_t k = 0; k < NKEYS; k++)
        if (!seen[k]) return bad(why, wl, "it has no %s line (cut short?)", KEYS[k]);
    if (strcmp(j->uuid, stem) != 0) return bad(why, wl, "it names another GPU (%s)", j->uuid);
    return 0;
}

jc_status jc__journal_damaged(const char *dir, const char *stem, const char *why) {
    char path[640];
    jc__cap_path(path, sizeof path, dir, stem, ".journal");
    return jc__fail(JC_ERR_IO,
                    "the journal %s is damaged (%s): joulecap does not trust it, restores nothing from it and keeps "
                    "it. The GPU may still be capped: check its limit ('joulecap cap get'), set the file aside "
                    "with 'joulecap cap restore --discard %s', then set the limit you want ('joulecap cap reset "
                    "--gpu %s' sets the default)",
                    path, why, stem, stem);
}

jc_status jc__journal_read(const char *dir, const char *uuid, jc__journal *j, int *exists) {
    char path[640];
    jc__cap_path(path, sizeof path, dir, uuid, ".journal");
    *exists = 0;
    memset(j, 0, sizeof *j);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT) return JC_OK;
        if (errno == ELOOP) return link_refused(path, "journal");
        return jc__fail(errno == EACCES ? JC_ERR_NO_PERMISSION : JC_ERR_IO, "cannot read the journal %s: %s", path,
                        strerror(errno));
    }
    jc_status st = check_file(fd, path, "journal");
    char text[JOURNAL_MAX + 1];
    size_t used = 0;
    while (st == JC_OK && used < sizeof text - 1) {
        ssize_t n = read(fd, text + used, sizeof text - 1 - used);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) st = jc__fail(JC_ERR_IO, "cannot read the journal %s: %s", path, strerror(errno));
        if (n <= 0) break;
        used += (size_t)n;
    }
    close(fd);
    if (st != JC_OK) return st;
    text[used] = '\0';
    char why[160], stem[100];
    safe_name(stem, sizeof stem, uuid);
    if (used >= JOURNAL_MAX) return jc__journal_damaged(dir, stem, "it is too large to be one");
    if (jc__journal_parse(text, used, stem, j, why, sizeof why) != 0) return jc__journal_damaged(dir, stem, why);
    *exists = 1;
    return JC_OK;
}

static jc_status write_all(int fd, const char *buf, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return JC_ERR_IO;
        }
        buf += w;
        n -= (size_t)w;
    }
    return JC_OK;
}

static void sync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

int jc__journal_format(const jc__journal *j, char *text, size_t len) {
    /* The command line must stay on its line. */
    char cmd[sizeof j->owner_command];
    size_t i = 0;
    for (; j->owner_command[i] && i + 1 < sizeof cmd; i++)
        cmd[i] = (unsigned char)j->owner_command[i] < 0x20 ? ' ' : j->owner_command[i];
    cmd[i] = '\0';
    int n = snprintf(text, len,
                     JOURNAL_MAGIC "\nuuid %s\noriginal_mw %u\nset_mw %u\nbase_mw %u\nowner_pid %d\n"
                     "owner_start %llu\nguardian_pid %d\nguardian_start %llu\ncreated %.3f\nowner_command %s\n",
                     j->uuid, j->original_mw, j->set_mw, j->base_mw, j->owner_pid, j->owner_start, j->guardian_pid,
                     j->guardian_start, j->created, cmd);
    if (n < 0 || (size_t)n + 40 >= len) return -1;
    int m = snprintf(text + n, len - (size_t)n, "checksum fnv1a64 %016llx\n",
                     (unsigned long long)jc__fnv1a64(text, (size_t)n));
    return n + m;
}

jc_status jc__journal_write(const char *dir, const jc__journal *j) {
    char path[640], tmp[700], text[1024];
    jc__cap_path(path, sizeof path, dir, j->uuid, ".journal");
    int len = jc__journal_format(j, text, sizeof text);
    if (len < 0) return jc__fail(JC_ERR_IO, "journal text too long");
    static const char *const hex = "0123456789abcdef";
    unsigned long long r = (unsigned long long)jc_now_ns() ^ ((unsigned long long)getpid() << 20);
    char rnd[9];
    for (int k = 0; k < 8; k++) rnd[k] = hex[(r >> (4 * k)) & 15];
    rnd[8] = '\0';
    jc__fmt(tmp, sizeof tmp, "%s.tmp.%d.%s", path, (int)getpid(), rnd);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0644);
    if (fd < 0)
        return jc__fail(errno == EACCES || errno == EPERM || errno == EROFS ? JC_ERR_NO_PERMISSION : JC_ERR_IO,
                        "cannot write the journal %s: %s", tmp, strerror(errno));
    if (write_all(fd, text, (size_t)len) != JC_OK || fsync(fd) != 0) {
        int err = errno;
        close(fd);
        unlink(tmp);
        return jc__fail(JC_ERR_IO, "cannot write the journal %s: %s", tmp, strerror(err));
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        int err = errno;
        unlink(tmp);
        return jc__fail(JC_ERR_IO, "cannot rename the journal to %s: %s", path, strerror(err));
    }
    sync_dir(dir);
    return JC_OK;
}

jc_status jc__journal_remove(const char *dir, const char *uuid) {
    char path[640];
    jc__cap_path(path, sizeof path, dir, uuid, ".journal");
    if (unlink(path) != 0 && errno != ENOENT)
        return jc__fail(errno == EACCES || errno == EPERM || errno == EROFS ? JC_ERR_NO_PERMISSION : JC_ERR_IO,
                        "cannot remove the journal %s: %s", path, strerror(errno));
    sync_dir(dir);
    return JC_OK;
}

jc_status jc__journal_set_aside(const char *dir, const char *uuid, char *kept_as, size_t len) {
    char path[640], bad[700], stamp[32];
    jc__cap_path(path, sizeof path, dir, uuid, ".journal");
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    for (int k = 0; k < 100; k++) {
        if (k == 0) jc__fmt(bad, sizeof bad, "%s.bad-%s", path, stamp);
        else jc__fmt(bad, sizeof bad, "%s.bad-%s-%d", path, stamp, k);
        /* link + unlink: never replaces an earlier file set aside. */
        if (link(path, bad) == 0) {
            if (unlink(path) != 0) {
                int err = errno;
                unlink(bad);
                return jc__fail(JC_ERR_IO, "cannot move the journal %s aside: %s", path, strerror(err));
            }
            sync_dir(dir);
            if (kept_as) jc__fmt(kept_as, len, "%s", bad);
            return JC_OK;
        }
        if (errno != EEXIST)
            return jc__fail(errno == EACCES || errno == EPERM || errno == EROFS ? JC_ERR_NO_PERMISSION : JC_ERR_IO,
                            "cannot move the journal %s aside to %s: %s", path, bad, strerror(errno));
    }
    return jc__fail(JC_ERR_IO, "cannot move the journal %s aside: too many files set aside already", path);
}

int jc__journal_list(const char *dir, char (*stems)[128], int max) {
    DIR *d = opendir(dir);
    if (!d) {
        jc__fail(JC_ERR_IO, "cannot read the state directory %s: %s", dir, strerror(errno));
        return -1;
    }
    int n = 0;
    struct dirent *e;
    static const char suffix[] = ".journal";
    while ((e = readdir(d)) != NULL && n < max) {
        size_t l = strlen(e->d_name);
        if (e->d_name[0] == '.' || l <= sizeof suffix - 1 || strcmp(e->d_name + l - (sizeof suffix - 1), suffix) != 0)
            continue;
        jc__fmt(stems[n], sizeof stems[0], "%.*s", (int)(l - (sizeof suffix - 1)), e->d_name);
        n++;
    }
    closedir(d);
    return n;
}

/* ------------------------------------------------------------------------------------------------------
 * Processes.
 * ---------------------------------------------------------------------------------------------------- */

int jc__proc_start(int pid, unsigned long long *start, int *zombie) {
    if (zombie) *zombie = 0;
    if (pid <= 0) return -1;
    char path[64], text[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    jc_status st = jc__read_text(path, text, sizeof text, NULL, 0);
    if (st == JC_ERR_NOT_FOUND) return -1;
    if (st != JC_OK) return -2;
    return jc__proc_stat_parse(text, start, zombie);
}

int jc__proc_stat_parse(const char *text, unsigned long long *start, int *zombie) {
    if (zombie) *zombie = 0;
    /* "pid (comm) state ppid ...": comm may hold spaces and parentheses, so start after the last ')'. */
    const char *p = strrchr(text, ')');
    if (!p) return -2;
    p++;
    char state = 0;
    unsigned long long v = 0;
    for (int field = 3; field <= 22; field++) {
        while (*p == ' ') p++;
        if (!*p) return -2;
        if (field == 3) state = *p;
        if (field == 22) v = strtoull(p, NULL, 10);
        while (*p && *p != ' ') p++;
    }
    if (state == 'Z' || state == 'X') {
        if (zombie) *zombie = 1;
        return -1;
    }
    *start = v;
    return 0;
}

int jc__proc_alive(int pid, unsigned long long start) {
    unsigned long long s = 0;
    int r = jc__proc_start(pid, &s, NULL);
    if (r == -1) return 0;
    if (r == -2) return 1; /* exists, cannot check: assume it is the owner */
    return s == start;
}

void jc__proc_cmdline(int pid, char *buf, size_t len) {
    if (len == 0) return;
    buf[0] = '\0';
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    if (n <= 0) {
        buf[0] = '\0';
        return;
    }
    buf[n] = '\0';
    while (n > 0 && buf[n - 1] == '\0') n--;
    for (ssize_t i = 0; i < n; i++)
        if ((unsigned char)buf[i] < 0x20) buf[i] = ' ';
    buf[n] = '\0';
}

jc_cap_manager jc__journal_manager(const jc__journal *j) {
    if (j->owner_pid == 0) return JC_CAP_MANAGER_PERSISTENT;
    return jc__proc_alive(j->owner_pid, j->owner_start) ? JC_CAP_MANAGER_SESSION : JC_CAP_MANAGER_STALE;
}

void jc__journal_owner_text(const jc__journal *j, char *buf, size_t len) {
    char cmd[256];
    jc__proc_cmdline(j->owner_pid, cmd, sizeof cmd);
    if (!cmd[0]) jc__fmt(cmd, sizeof cmd, "%s", j->owner_command);
    if (j->owner_pid == (int)getpid())
        jc__fmt(buf, len, "process %d (this process: another cap session%s%s)", j->owner_pid, cmd[0] ? ", " : "",
                cmd);
    else if (cmd[0])
        jc__fmt(buf, len, "process %d (%s)", j->owner_pid, cmd);
    else
        jc__fmt(buf, len, "process %d", j->owner_pid);
}
