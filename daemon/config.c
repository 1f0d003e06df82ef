/* joulecapd's config: who may change power limits.  Everyone may read; root always may write.
 *
 *   # comment
 *   allow_user  alice        a user name, or a numeric uid
 *   allow_group gpu-cap      a group name or gid: primary or supplementary group of the connecting process
 *
 * Names are looked up when a client asks to write (not at load), so a rule naming a user who does not exist
 * on this node yet is no error. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jcd.h"

#define LINE_MAX_BYTES 512

static int name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 32) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                 c == '.' || (c == '-' && i > 0) || (c == '$' && i == n - 1 && i > 0);
        if (!ok) return 0;
    }
    return 1;
}

static int all_digits(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return 0;
    return 1;
}

int jcd_config_parse(const char *text, size_t len, const char *path, jcd_config *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    jc__fmt(out->path, sizeof out->path, "%s", path);
    out->present = 1;
    size_t pos = 0;
    int lineno = 0;
    while (pos < len) {
        lineno++;
        size_t end = pos;
        while (end < len && text[end] != '\n') end++;
        size_t n = end - pos;
        if (n >= LINE_MAX_BYTES) {
            jc__fmt(err, errlen, "%s:%d: line longer than %d bytes", path, lineno, LINE_MAX_BYTES - 1);
            return -1;
        }
        char line[LINE_MAX_BYTES];
        memcpy(line, text + pos, n);
        line[n] = '\0';
        pos = end < len ? end + 1 : end;
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)line[i];
            if (c == '\0' || (c < 0x20 && c != '\t') || c == 0x7f) {
                jc__fmt(err, errlen, "%s:%d: control byte 0x%02x", path, lineno, c);
                return -1;
            }
            if (c == '\t') line[i] = ' ';
        }
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        char *save = NULL;
        char *key = strtok_r(line, " ", &save);
        if (!key) continue;
        char *value = strtok_r(NULL, " ", &save);
        char *extra = value ? strtok_r(NULL, " ", &save) : NULL;
        int group;
        if (strcmp(key, "allow_user") == 0) group = 0;
        else if (strcmp(key, "allow_group") == 0) group = 1;
        else {
            jc__fmt(err, errlen, "%s:%d: unknown keyword '%.40s': the lines are 'allow_user NAME' and "
                    "'allow_group NAME' (names or numeric ids), '#' starts a comment", path, lineno, key);
            return -1;
        }
        if (!value || extra) {
            jc__fmt(err, errlen, "%s:%d: '%s' takes exactly one %s name or id", path, lineno, key,
                    group ? "group" : "user");
            return -1;
        }
        if (out->n >= JCD_MAX_RULES) {
            jc__fmt(err, errlen, "%s:%d: more than %d rules", path, lineno, JCD_MAX_RULES);
            return -1;
        }
        jcd_rule *r = &out->rules[out->n];
        memset(r, 0, sizeof *r);
        r->group = group;
        r->line = lineno;
        if (all_digits(value)) {
            unsigned v;
            if (jc__wire_u32(value, &v) != 0 || v == 0xffffffffu) {
                jc__fmt(err, errlen, "%s:%d: id '%.40s' out of range", path, lineno, value);
                return -1;
            }
            r->numeric = 1;
            r->id = v;
        } else if (!name_ok(value)) {
            jc__fmt(err, errlen, "%s:%d: '%.40s' is not a valid %s name (letters, digits, '_', '.', '-'; at "
                    "most 32)", path, lineno, value, group ? "group" : "user");
            return -1;
        }
        jc__fmt(r->name, sizeof r->name, "%s", value);
        out->n++;
    }
    return 0;
}

int jcd_config_load(const char *path, jcd_config *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    jc__fmt(out->path, sizeof out->path, "%s", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT) return 0; /* no file: root only */
        jc__fmt(err, errlen, "cannot open the config %s: %s%s", path, strerror(errno),
                errno == ELOOP ? " (a symlink: not followed)" : "");
        return -1;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        jc__fmt(err, errlen, "the config %s is not a regular file", path);
        return -1;
    }
    if ((sb.st_uid != 0 && sb.st_uid != geteuid()) || (sb.st_mode & 022)) {
        close(fd);
        jc__fmt(err, errlen, "the config %s must be owned by root and writable by its owner only (it is uid %u, "
                "mode %03o): anyone who can write it can give themselves the right to cap GPUs; fix: chown root "
                "%s && chmod 644 %s", path, (unsigned)sb.st_uid, (unsigned)(sb.st_mode & 0777), path, path);
        return -1;
    }
    if (sb.st_size > 256 * 1024) {
        close(fd);
        jc__fmt(err, errlen, "the config %s is larger than 256 KiB", path);
        return -1;
    }
    size_t cap = (size_t)sb.st_size + 1;
    char *text = malloc(cap);
    if (!text) {
        close(fd);
        jc__fmt(err, errlen, "out of memory reading %s", path);
        return -1;
    }
    size_t used = 0;
    for (;;) {
        if (used + 1 >= cap) break;
        ssize_t r = read(fd, text + used, cap - 1 - used);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            free(text);
            close(fd);
            jc__fmt(err, errlen, "cannot read the config %s: %s", path, strerror(e));
            return -1;
        }
        if (r == 0) break;
        used += (size_t)r;
    }
    close(fd);
    int rc = jcd_config_parse(text, used, path, out, err, errlen);
    free(text);
    return rc;
}

/* The user name of uid, "" when unknown. */
static void user_name(unsigned uid, char *buf, size_t len) {
    buf[0] = '\0';
    struct passwd pw, *res = NULL;
    char tmp[4096];
    if (getpwuid_r((uid_t)uid, &pw, tmp, sizeof tmp, &res) == 0 && res) jc__fmt(buf, len, "%s", pw.pw_name);
}

static void group_name(unsigned gid, char *buf, size_t len) {
    buf[0] = '\0';
    struct group gr, *res = NULL;
    char tmp[8192];
    if (getgrgid_r((gid_t)gid, &gr, tmp, sizeof tmp, &res) == 0 && res) jc__fmt(buf, len, "%s", gr.gr_name);
}

static int rule_matches(const jcd_rule *r, unsigned id, const char *name) {
    if (r->numeric) return r->id == id;
    return name[0] && strcmp(r->name, name) == 0;
}

int jcd_config_allows(const jcd_config *c, unsigned uid, unsigned gid, const unsigned *groups, int ngroups,
                      char *rule, size_t rulelen) {
    if (uid == 0) {
        jc__fmt(rule, rulelen, "root");
        return 1;
    }
    char name[128];
    user_name(uid, name, sizeof name);
    for (int i = 0; i < c->n; i++) {
        const jcd_rule *r = &c->rules[i];
        if (!r->group && rule_matches(r, uid, name)) {
            jc__fmt(rule, rulelen, "allow_user %s (%s:%d)", r->name, c->path, r->line);
            return 1;
        }
    }
    for (int k = -1; k < ngroups; k++) {
        unsigned g = k < 0 ? gid : groups[k];
        char gname[128];
        group_name(g, gname, sizeof gname);
        for (int i = 0; i < c->n; i++) {
            const jcd_rule *r = &c->rules[i];
            if (r->group && rule_matches(r, g, gname)) {
                jc__fmt(rule, rulelen, "allow_group %s (%s:%d)", r->name, c->path, r->line);
                return 1;
            }
        }
    }
    jc__fmt(rule, rulelen, "no rule of %s names this user or one of its groups", c->path);
    return 0;
}

static void append(char *buf, size_t len, const char *fmt, const char *a, const char *b) {
    size_t used = strlen(buf);
    if (used + 1 < len) snprintf(buf + used, len - used, fmt, a, b);
}

void jcd_config_describe(const jcd_config *c, char *buf, size_t len) {
    if (len == 0) return;
    buf[0] = '\0';
    append(buf, len, "%s%s", c->present ? "config " : "no config file ", c->path);
    append(buf, len, "%s%s\n", c->present ? "" : " (only root may change limits)", "");
    append(buf, len, "%s%s\n", "everyone may read limits and who holds them", "");
    append(buf, len, "%s%s\n", "may change limits: root (always)", "");
    for (int i = 0; i < c->n; i++) {
        const jcd_rule *r = &c->rules[i];
        char what[400] = "", line[32];
        snprintf(line, sizeof line, "%d", r->line);
        if (!r->group) {
            char name[128];
            if (r->numeric) user_name(r->id, name, sizeof name);
            else {
                struct passwd pw, *res = NULL;
                char tmp[4096];
                name[0] = '\0';
                if (getpwnam_r(r->name, &pw, tmp, sizeof tmp, &res) == 0 && res)
                    snprintf(name, sizeof name, "uid %u", (unsigned)pw.pw_uid);
            }
            snprintf(what, sizeof what, "  user %s (%s)", r->name,
                     name[0] ? name : "unknown on this node now");
        } else {
            char name[128];
            if (r->numeric) group_name(r->id, name, sizeof name);
            else {
                struct group gr, *res = NULL;
                char tmp[8192];
                name[0] = '\0';
                if (getgrnam_r(r->name, &gr, tmp, sizeof tmp, &res) == 0 && res)
                    snprintf(name, sizeof name, "gid %u", (unsigned)gr.gr_gid);
            }
            snprintf(what, sizeof what, "  members of group %s (%s)", r->name,
                     name[0] ? name : "unknown on this node now");
        }
        append(buf, len, "%s, line %s\n", what, line);
    }
}
