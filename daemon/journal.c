/* joulecapd's journal: one file per GPU in the state directory, what to put back after a crash.
 *
 *   joulecapd-journal 1
 *   uuid GPU-8f3c2a1e-5b7d-4c9e-a0f1-2d3e4b5c6a7f
 *   persistent original_mw=700000 set_mw=400000 uid=0 user=root pid=812 pid_start=99 since=1764064769.123 command=...
 *   lease original_mw=400000 set_mw=300000 uid=1001 user=alice pid=4123 pid_start=8812 since=... command=...
 *   crc32 1a2b3c4d
 *
 * Holder lines use the wire format (key=value, percent-encoded).  The CRC-32 covers every byte before the
 * "crc32" line; a file that is cut, changed or has anything after that line is refused, never half-used.
 * Every file operation goes through the directory's descriptor with O_NOFOLLOW. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jcd.h"

#define MAGIC "joulecapd-journal 1"

unsigned jcd_crc32(const char *p, size_t n) {
    unsigned c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= (unsigned char)p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return ~c;
}

int jcd_crc_check(const char *text, size_t len, size_t *body, char *why, size_t whylen) {
    if (len == 0) {
        jc__fmt(why, whylen, "empty file");
        return -1;
    }
    if (text[len - 1] != '\n') {
        jc__fmt(why, whylen, "cut short (no newline at the end)");
        return -1;
    }
    /* The last line is the checksum of everything before it. */
    size_t last = len - 1;
    while (last > 0 && text[last - 1] != '\n') last--;
    char crc[16];
    size_t cl = len - 1 - last;
    if (cl < 7 || cl > 14 || memcmp(text + last, "crc32 ", 6) != 0) {
        jc__fmt(why, whylen, "no crc32 line at the end (cut short?)");
        return -1;
    }
    memcpy(crc, text + last + 6, cl - 6);
    crc[cl - 6] = '\0';
    char *end = NULL;
    unsigned long v = strtoul(crc, &end, 16);
    if (cl - 6 != 8 || *end || v > 0xffffffffUL) {
        jc__fmt(why, whylen, "malformed crc32 line");
        return -1;
    }
    if (jcd_crc32(text, last) != (unsigned)v) {
        jc__fmt(why, whylen, "checksum mismatch (the file was changed or is damaged)");
        return -1;
    }
    *body = last;
    return 0;
}

static int put_holder(char *buf, size_t len, size_t *used, const char *kind, const jcd_holder *h) {
    size_t u = *used;
    int w = snprintf(buf + u, len - u, "%s", kind);
    if (w < 0 || (size_t)w >= len - u) return -1;
    u += (size_t)w;
    if (jc__wire_put_u64(buf, len, &u, "original_mw", h->original_mw) || jc__wire_put_u64(buf, len, &u, "set_mw", h->set_mw) ||
        jc__wire_put_u64(buf, len, &u, "uid", h->uid) || jc__wire_put(buf, len, &u, "user", h->user) ||
        jc__wire_put_i64(buf, len, &u, "pid", h->pid) || jc__wire_put_u64(buf, len, &u, "pid_start", h->pid_start) ||
        jc__wire_put_time(buf, len, &u, "since", h->since) || jc__wire_put(buf, len, &u, "command", h->command))
        return -1;
    if (u + 2 > len) return -1;
    buf[u++] = '\n';
    buf[u] = '\0';
    *used = u;
    return 0;
}

int jcd_journal_format(const jcd_journal *j, char *buf, size_t len) {
    int w = snprintf(buf, len, MAGIC "\nuuid %s\n", j->uuid);
    if (w < 0 || (size_t)w >= len) return -1;
    size_t used = (size_t)w;
    if (j->persistent.active && put_holder(buf, len, &used, "persistent", &j->persistent)) return -1;
    if (j->lease.active && put_holder(buf, len, &used, "lease", &j->lease)) return -1;
    w = snprintf(buf + used, len - used, "crc32 %08x\n", jcd_crc32(buf, used));
    if (w < 0 || (size_t)w >= len - used) return -1;
    return (int)(used + (size_t)w);
}

static int get_holder(jc__wire_line *l, jcd_holder *h, char *why, size_t whylen) {
    unsigned long long v[5];
    const char *keys[5] = {"original_mw", "set_mw", "uid", "pid", "pid_start"};
    for (int i = 0; i < 5; i++)
        if (jc__wire_get_u64(l, keys[i], &v[i]) != 0) {
            jc__fmt(why, whylen, "%s line without a valid %s", l->tok[0], keys[i]);
            return -1;
        }
    const char *user = jc__wire_get(l, "user"), *cmd = jc__wire_get(l, "command"), *since = jc__wire_get(l, "since");
    if (!user || !cmd || !since) {
        jc__fmt(why, whylen, "%s line without user, command or since", l->tok[0]);
        return -1;
    }
    if (v[0] == 0 || v[0] > 0xffffffffull || v[1] > 0xffffffffull || v[2] > 0xffffffffull || v[3] > 0x7fffffffull) {
        jc__fmt(why, whylen, "%s line with a value out of range", l->tok[0]);
        return -1;
    }
    char *end = NULL;
    double t = strtod(since, &end);
    if (end == since || *end || !(t >= 0 && t < 1e11)) {
        jc__fmt(why, whylen, "%s line with a bad time", l->tok[0]);
        return -1;
    }
    memset(h, 0, sizeof *h);
    h->active = 1;
    h->original_mw = (unsigned)v[0];
    h->set_mw = (unsigned)v[1];
    h->uid = (unsigned)v[2];
    h->pid = (int)v[3];
    h->pid_start = v[4];
    h->since = t;
    jc__fmt(h->user, sizeof h->user, "%s", user);
    jc__fmt(h->command, sizeof h->command, "%s", cmd);
    return 0;
}

int jcd_journal_parse(const char *text, size_t len, jcd_journal *j, char *why, size_t whylen) {
    memset(j, 0, sizeof *j);
    if (len > JCD_JOURNAL_MAX) {
        jc__fmt(why, whylen, "larger than %d bytes", JCD_JOURNAL_MAX);
        return -1;
    }
    size_t last;
    if (jcd_crc_check(text, len, &last, why, whylen) != 0) return -1;
    size_t pos = 0;
    int lineno = 0;
    while (pos < last) {
        size_t e = pos;
        while (e < last && text[e] != '\n') e++;
        size_t n = e - pos;
        lineno++;
        char buf[JC__WIRE_MAX_REPLY];
        if (n >= sizeof buf) {
            jc__fmt(why, whylen, "line %d too long", lineno);
            return -1;
        }
        memcpy(buf, text + pos, n);
        buf[n] = '\0';
        pos = e + 1;
        if (lineno == 1) {
            if (strcmp(buf, MAGIC) != 0) {
                jc__fmt(why, whylen, "not a joulecapd journal of version 1 (first line '%.40s')", buf);
                return -1;
            }
            continue;
        }
        jc__wire_line l;
        if (jc__wire_split(buf, n, &l, why, whylen) != 0) return -1;
        if (lineno == 2) {
            if (strcmp(l.tok[0], "uuid") != 0 || l.n != 2 || !jc__wire_uuid_ok(l.tok[1])) {
                jc__fmt(why, whylen, "line 2 is not 'uuid GPU-...'");
                return -1;
            }
            jc__fmt(j->uuid, sizeof j->uuid, "%s", l.tok[1]);
        } else if (strcmp(l.tok[0], "persistent") == 0 && !j->persistent.active) {
            if (get_holder(&l, &j->persistent, why, whylen)) return -1;
        } else if (strcmp(l.tok[0], "lease") == 0 && !j->lease.active) {
            if (get_holder(&l, &j->lease, why, whylen)) return -1;
        } else {
            jc__fmt(why, whylen, "unexpected line %d ('%.20s')", lineno, l.tok[0]);
            return -1;
        }
    }
    if (!j->uuid[0]) {
        jc__fmt(why, whylen, "no uuid line");
        return -1;
    }
    return 0;
}

int jcd_state_open(const char *dir, int *fd, char *why, size_t whylen) {
    *fd = -1;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        jc__fmt(why, whylen, "cannot create the state directory %s: %s", dir, strerror(errno));
        return -1;
    }
    int f = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (f < 0) {
        jc__fmt(why, whylen, "cannot open the state directory %s: %s%s", dir, strerror(errno),
                errno == ELOOP || errno == ENOTDIR ? " (a symlink or not a directory: refused)" : "");
        return -1;
    }
    struct stat sb;
    if (fstat(f, &sb) != 0 || sb.st_uid != geteuid() || (sb.st_mode & 022)) {
        jc__fmt(why, whylen, "the state directory %s must belong to uid %u and not be writable by group or "
                "others (it is uid %u, mode %03o): fix: chown %u %s && chmod 700 %s", dir, (unsigned)geteuid(),
                (unsigned)sb.st_uid, (unsigned)(sb.st_mode & 0777), (unsigned)geteuid(), dir, dir);
        close(f);
        return -1;
    }
    *fd = f;
    return 0;
}

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int jcd_file_save(int dirfd, const char *name, const char *text, size_t len, char *why, size_t whylen) {
    char tmp[300];
    jc__fmt(tmp, sizeof tmp, ".%s.tmp", name);
    unlinkat(dirfd, tmp, 0); /* a leftover of a crash; we are the only writer */
    int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        jc__fmt(why, whylen, "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    if (write_all(fd, text, len) != 0 || fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlinkat(dirfd, tmp, 0);
        jc__fmt(why, whylen, "cannot write %s: %s", tmp, strerror(e));
        return -1;
    }
    close(fd);
    if (renameat(dirfd, tmp, dirfd, name) != 0) {
        int e = errno;
        unlinkat(dirfd, tmp, 0);
        jc__fmt(why, whylen, "cannot rename %s to %s: %s", tmp, name, strerror(e));
        return -1;
    }
    if (fsync(dirfd) != 0) {
        jc__fmt(why, whylen, "cannot sync the state directory: %s", strerror(errno));
        return -1;
    }
    return 0;
}

int jcd_journal_save(int dirfd, const jcd_journal *j, char *why, size_t whylen) {
    char name[128];
    if (!jc__wire_uuid_ok(j->uuid)) {
        jc__fmt(why, whylen, "bad GPU UUID");
        return -1;
    }
    jc__fmt(name, sizeof name, "%s.journal", j->uuid);
    if (!j->persistent.active && !j->lease.active) {
        if (unlinkat(dirfd, name, 0) != 0 && errno != ENOENT) {
            jc__fmt(why, whylen, "cannot remove the journal %s: %s", name, strerror(errno));
            return -1;
        }
        fsync(dirfd);
        return 0;
    }
    char text[JCD_JOURNAL_MAX];
    int len = jcd_journal_format(j, text, sizeof text);
    if (len < 0) {
        jc__fmt(why, whylen, "journal of %s too long", j->uuid);
        return -1;
    }
    char w[400];
    if (jcd_file_save(dirfd, name, text, (size_t)len, w, sizeof w) != 0) {
        jc__fmt(why, whylen, "the journal: %s", w);
        return -1;
    }
    return 0;
}

int jcd_file_load(int dirfd, const char *name, char *buf, size_t cap, size_t *len, char *why, size_t whylen) {
    *len = 0;
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        jc__fmt(why, whylen, "cannot open: %s%s", strerror(e), e == ELOOP ? " (a symlink: refused)" : "");
        return e == ENOENT ? -2 : -1;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_uid != geteuid() || sb.st_nlink != 1) {
        close(fd);
        jc__fmt(why, whylen, "not a regular file of uid %u with one link: refused", (unsigned)geteuid());
        return -1;
    }
    size_t used = 0;
    for (;;) {
        ssize_t r = read(fd, buf + used, cap - used);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            jc__fmt(why, whylen, "cannot read: %s", strerror(e));
            return -1;
        }
        if (r == 0) break;
        used += (size_t)r;
        if (used == cap) break;
    }
    close(fd);
    *len = used;
    return 0;
}

int jcd_journal_load(int dirfd, const char *name, jcd_journal *j, char *why, size_t whylen) {
    memset(j, 0, sizeof *j);
    char text[JCD_JOURNAL_MAX + 1];
    size_t used;
    if (jcd_file_load(dirfd, name, text, sizeof text, &used, why, whylen) != 0) return -1;
    return jcd_journal_parse(text, used, j, why, whylen);
}
