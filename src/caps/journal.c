/* The power-cap journal on disk: the state directory, per-GPU lock files, atomic journal writes, and the
 * identity of the processes that own journals (pid + start time). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "caps_internal.h"

#define JOURNAL_MAGIC "joulecap-cap-journal 1"

double jc__wall_time(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------------------------------------------
 * State directory.
 * ---------------------------------------------------------------------------------------------------- */

static jc_status mkdir_p(const char *path, mode_t mode) {
    char tmp[512];
    if (strlen(path) >= sizeof tmp) return jc__fail(JC_ERR_INVALID_ARGUMENT, "state directory path too long: %s", path);
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return jc__fail(errno == EACCES || errno == EPERM ? JC_ERR_NO_PERMISSION : JC_ERR_IO,
                            "cannot create the state directory %s: %s: %s", path, tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, mode) != 0 && errno != EEXIST)
        return jc__fail(errno == EACCES || errno == EPERM ? JC_ERR_NO_PERMISSION : JC_ERR_IO,
                        "cannot create the state directory %s: %s", path, strerror(errno));
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return jc__fail(JC_ERR_IO, "state directory %s is not a directory", path);
    return JC_OK;
}

static int usable_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode) && access(path, W_OK | X_OK) == 0;
}

jc_status jc__cap_dir(const jc_cap_options *opts, char *buf, size_t len) {
    const char *explicit_dir = opts && opts->state_dir && *opts->state_dir ? opts->state_dir : NULL;
    if (!explicit_dir) {
        const char *env = secure_getenv("JOULECAP_STATE_DIR");
        if (env && *env) explicit_dir = env;
    }
    if (explicit_dir) {
        jc__fmt(buf, len, "%s", explicit_dir);
        return mkdir_p(buf, 0755);
    }
    if (usable_dir("/var/lib/joulecap") || (usable_dir("/var/lib") && mkdir("/var/lib/joulecap", 0755) == 0)) {
        jc__fmt(buf, len, "/var/lib/joulecap");
        return JC_OK;
    }
    const char *xdg = secure_getenv("XDG_RUNTIME_DIR");
    if (xdg && *xdg && usable_dir(xdg)) {
        jc__fmt(buf, len, "%s/joulecap", xdg);
        return mkdir_p(buf, 0700);
    }
    jc__fmt(buf, len, "/tmp/joulecap-%u", (unsigned)getuid());
    if (mkdir(buf, 0700) != 0 && errno != EEXIST)
        return jc__fail(JC_ERR_IO, "cannot create the state directory %s: %s", buf, strerror(errno));
    struct stat sb;
    if (lstat(buf, &sb) != 0 || !S_ISDIR(sb.st_mode) || sb.st_uid != getuid())
        return jc__fail(JC_ERR_NO_PERMISSION,
                        "state directory %s is not a directory owned by this user: set JOULECAP_STATE_DIR", buf);
    return JC_OK;
}

void jc__cap_path(char *buf, size_t len, const char *dir, const char *uuid, const char *suffix) {
    char safe[100];
    size_t i = 0;
    for (; uuid[i] && i + 1 < sizeof safe; i++) {
        char c = uuid[i];
        safe[i] = (isalnum((unsigned char)c) || c == '-' || c == '_' || c == '.') ? c : '_';
    }
    safe[i] = '\0';
    jc__fmt(buf, len, "%s/%s%s", dir, safe, suffix);
}

jc_status jc__cap_lock(const char *dir, const char *uuid, int *fd) {
    char path[640];
    jc__cap_path(path, sizeof path, dir, uuid, ".lock");
    int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (f < 0)
        return jc__fail(errno == EACCES || errno == EPERM ? JC_ERR_NO_PERMISSION : JC_ERR_IO,
                        "cannot open the lock file %s: %s", path, strerror(errno));
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

jc_status jc__journal_read_path(const char *path, jc__journal *j) {
    memset(j, 0, sizeof *j);
    char text[2048], why[300];
    jc_status st = jc__read_text(path, text, sizeof text, why, sizeof why);
    if (st != JC_OK) return jc__fail(st, "cannot read the journal %s", why);
    char *save = NULL;
    char *line = strtok_r(text, "\n", &save);
    if (!line || strcmp(line, JOURNAL_MAGIC) != 0)
        return jc__fail(JC_ERR_IO, "%s is not a joulecap journal (first line '%s')", path, line ? line : "");
    while ((line = strtok_r(NULL, "\n", &save)) != NULL) {
        char *sp = strchr(line, ' ');
        if (!sp) continue;
        *sp = '\0';
        const char *k = line, *v = sp + 1;
        if (strcmp(k, "uuid") == 0) jc__fmt(j->uuid, sizeof j->uuid, "%s", v);
        else if (strcmp(k, "original_mw") == 0) j->original_mw = (unsigned)strtoul(v, NULL, 10);
        else if (strcmp(k, "set_mw") == 0) j->set_mw = (unsigned)strtoul(v, NULL, 10);
        else if (strcmp(k, "base_mw") == 0) j->base_mw = (unsigned)strtoul(v, NULL, 10);
        else if (strcmp(k, "owner_pid") == 0) j->owner_pid = (int)strtol(v, NULL, 10);
        else if (strcmp(k, "owner_start") == 0) j->owner_start = strtoull(v, NULL, 10);
        else if (strcmp(k, "guardian_pid") == 0) j->guardian_pid = (int)strtol(v, NULL, 10);
        else if (strcmp(k, "guardian_start") == 0) j->guardian_start = strtoull(v, NULL, 10);
        else if (strcmp(k, "created") == 0) j->created = strtod(v, NULL);
        else if (strcmp(k, "owner_command") == 0) jc__fmt(j->owner_command, sizeof j->owner_command, "%s", v);
    }
    if (!j->uuid[0] || j->original_mw == 0)
        return jc__fail(JC_ERR_IO, "journal %s is incomplete (no uuid or original_mw)", path);
    return JC_OK;
}

jc_status jc__journal_read(const char *dir, const char *uuid, jc__journal *j, int *exists) {
    char path[640];
    jc__cap_path(path, sizeof path, dir, uuid, ".journal");
    *exists = 0;
    if (access(path, F_OK) != 0) {
        if (errno == ENOENT) return JC_OK;
        return jc__fail(JC_ERR_IO, "cannot check the journal %s: %s", path, strerror(errno));
    }
    jc_status st = jc__journal_read_path(path, j);
    if (st == JC_ERR_NOT_FOUND) return JC_OK; /* removed in between */
    if (st == JC_OK) *exists = 1;
    return st;
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
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

jc_status jc__journal_write(const char *dir, const jc__journal *j) {
    char path[640], tmp[700], text[1024];
    jc__cap_path(path, sizeof path, dir, j->uuid, ".journal");
    /* The command line must stay on its line. */
    char cmd[sizeof j->owner_command];
    size_t i = 0;
    for (; j->owner_command[i] && i + 1 < sizeof cmd; i++)
        cmd[i] = (unsigned char)j->owner_command[i] < 0x20 ? ' ' : j->owner_command[i];
    cmd[i] = '\0';
    int len = snprintf(text, sizeof text,
                       JOURNAL_MAGIC "\nuuid %s\noriginal_mw %u\nset_mw %u\nbase_mw %u\nowner_pid %d\n"
                       "owner_start %llu\nguardian_pid %d\nguardian_start %llu\ncreated %.3f\nowner_command %s\n",
                       j->uuid, j->original_mw, j->set_mw, j->base_mw, j->owner_pid, j->owner_start,
                       j->guardian_pid, j->guardian_start, j->created, cmd);
    if (len < 0 || (size_t)len >= sizeof text) return jc__fail(JC_ERR_IO, "journal text too long");
    static const char *const hex = "0123456789abcdef";
    unsigned long long r = (unsigned long long)jc_now_ns() ^ ((unsigned long long)getpid() << 20);
    char rnd[9];
    for (int k = 0; k < 8; k++) rnd[k] = hex[(r >> (4 * k)) & 15];
    rnd[8] = '\0';
    jc__fmt(tmp, sizeof tmp, "%s.tmp.%d.%s", path, (int)getpid(), rnd);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return jc__fail(errno == EACCES || errno == EPERM ? JC_ERR_NO_PERMISSION : JC_ERR_IO,
                        "cannot create the journal %s: %s", tmp, strerror(errno));
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
        return jc__fail(JC_ERR_IO, "cannot remove the journal %s: %s", path, strerror(errno));
    sync_dir(dir);
    return JC_OK;
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
    /* "pid (comm) state ppid ...": comm may hold spaces and parentheses, so start after the last ')'. */
    char *p = strrchr(text, ')');
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
