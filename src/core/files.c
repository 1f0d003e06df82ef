/* Small-file reads for sysfs and procfs, and the overridable roots that let tests use fake trees. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

static jc_status errno_status(int err) {
    switch (err) {
    case ENOENT:
    case ENOTDIR: return JC_ERR_NOT_FOUND;
    case EACCES:
    case EPERM: return JC_ERR_NO_PERMISSION;
    default: return JC_ERR_IO;
    }
}

jc_status jc__read_text(const char *path, char *buf, size_t len, char *why, size_t whylen) {
    if (len == 0) return JC_ERR_INVALID_ARGUMENT;
    buf[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        if (why) jc__fmt(why, whylen, "%s: %s", path, strerror(err));
        return errno_status(err);
    }
    size_t used = 0;
    for (;;) {
        if (used + 1 >= len) break;
        ssize_t n = read(fd, buf + used, len - 1 - used);
        if (n < 0) {
            if (errno == EINTR) continue;
            int err = errno;
            close(fd);
            if (why) jc__fmt(why, whylen, "%s: %s", path, strerror(err));
            return errno_status(err);
        }
        if (n == 0) break;
        used += (size_t)n;
    }
    close(fd);
    buf[used] = '\0';
    while (used > 0 && (buf[used - 1] == '\n' || buf[used - 1] == ' ')) buf[--used] = '\0';
    return JC_OK;
}

jc_status jc__read_u64(const char *path, uint64_t *value, char *why, size_t whylen) {
    char buf[64];
    jc_status st = jc__read_text(path, buf, sizeof buf, why, whylen);
    if (st != JC_OK) return st;
    const char *digits = buf;
    while (isspace((unsigned char)*digits)) digits++;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    if (end == buf || errno != 0 || *digits == '-') { /* strtoull takes "-1" for 18446744073709551615 */
        if (why) jc__fmt(why, whylen, "%s: not a number: '%s'", path, buf);
        return JC_ERR_IO;
    }
    *value = (uint64_t)v;
    return JC_OK;
}

const char *jc__sysfs_root(void) {
    const char *r = secure_getenv("JOULECAP_SYSFS_ROOT");
    return (r && *r) ? r : "/sys";
}

const char *jc__proc_root(void) {
    const char *r = secure_getenv("JOULECAP_PROC_ROOT");
    return (r && *r) ? r : "/proc";
}
