/* The state file: what several processes using the same fake GPUs must agree on (the start time and each
 * device's power limit).  A small text file, read and written whole under flock: shared lock to read,
 * exclusive lock to change.  The file is opened per operation, so a forked child never shares an open file
 * description (and with it a lock) with its parent.
 *
 *   joulecap-fakenvml-state 1
 *   start_ns <CLOCK_MONOTONIC ns>
 *   devices <n>
 *   device <index> <limit_mw> <prev_limit_mw> <eff_ms> <anchor_mj>     (one line per device)
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fake.h"

#define STATE_MAGIC "joulecap-fakenvml-state 1"
#define STATE_BUF 4096

/* Opens the state file, never through a symbolic link (another user's link in a shared /tmp must not make us
 * write where it points), and only a regular file. */
static int open_locked(const char *path, int create, int lock, int *fd_out, char *msg, size_t msglen) {
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT : 0), 0600);
    if (fd < 0 && errno == ELOOP) {
        snprintf(msg, msglen, "state file %s: is a symbolic link, refused (name the file itself)", path);
        return -1;
    }
    if (fd < 0) {
        snprintf(msg, msglen, "state file %s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(msg, msglen, "state file %s: not a regular file", path);
        close(fd);
        return -1;
    }
    while (flock(fd, lock) != 0) {
        if (errno == EINTR) continue;
        snprintf(msg, msglen, "state file %s: cannot lock: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    *fd_out = fd;
    return 0;
}

static void close_locked(int fd) {
    flock(fd, LOCK_UN);
    close(fd);
}

/* Parses the file's text into *st.  Returns 0, or -1 if the text is not a complete state. */
static int parse_state(char *text, fake_state *st) {
    char *save = NULL;
    char *line = strtok_r(text, "\n", &save);
    if (!line || strcmp(line, STATE_MAGIC) != 0) return -1;
    line = strtok_r(NULL, "\n", &save);
    if (!line || sscanf(line, "start_ns %lld", &st->start_ns) != 1) return -1;
    line = strtok_r(NULL, "\n", &save);
    if (!line || sscanf(line, "devices %u", &st->ndevices) != 1 || st->ndevices > FAKE_MAX_DEVICES) return -1;
    for (unsigned i = 0; i < st->ndevices; i++) {
        fake_dev_state *d = &st->dev[i];
        unsigned index;
        line = strtok_r(NULL, "\n", &save);
        if (!line || sscanf(line, "device %u %u %u %lf %lf", &index, &d->limit_mw, &d->prev_limit_mw, &d->eff_ms,
                            &d->anchor_mj) != 5)
            return -1;
        if (index != i || !isfinite(d->eff_ms) || !isfinite(d->anchor_mj)) return -1;
    }
    return 0;
}

static int read_fd(int fd, fake_state *st) {
    char buf[STATE_BUF];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0 || (size_t)n == sizeof buf - 1) return -1;
    buf[n] = '\0';
    return parse_state(buf, st);
}

static int write_fd(int fd, const char *path, const fake_state *st, char *msg, size_t msglen) {
    char buf[STATE_BUF];
    size_t len = (size_t)snprintf(buf, sizeof buf, "%s\nstart_ns %lld\ndevices %u\n", STATE_MAGIC, st->start_ns,
                                  st->ndevices);
    for (unsigned i = 0; i < st->ndevices && len < sizeof buf; i++) {
        const fake_dev_state *d = &st->dev[i];
        len += (size_t)snprintf(buf + len, sizeof buf - len, "device %u %u %u %.17g %.17g\n", i, d->limit_mw,
                                d->prev_limit_mw, d->eff_ms, d->anchor_mj);
    }
    if (len >= sizeof buf) {
        snprintf(msg, msglen, "state file %s: state too large", path);
        return -1;
    }
    if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, len, 0) != (ssize_t)len) {
        snprintf(msg, msglen, "state file %s: cannot write: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static unsigned limit_mw(double w) { return (unsigned)llround(w * 1000.0); }

/* Whether a state read from the file fits this scenario (else it is replaced by a fresh one). */
static int state_fits(const fake_state *st, const fake_scenario *sc, long long now_ns) {
    if (st->ndevices != sc->ndevices || st->start_ns > now_ns) return 0;
    for (unsigned i = 0; i < st->ndevices; i++) {
        const fake_device *d = &sc->devices[i];
        unsigned lo = limit_mw(d->min_limit_w), hi = limit_mw(d->max_limit_w);
        const fake_dev_state *s = &st->dev[i];
        if (s->limit_mw < lo || s->limit_mw > hi || s->prev_limit_mw < lo || s->prev_limit_mw > hi) return 0;
    }
    return 1;
}

int fake_state_open(const char *path, const fake_scenario *sc, long long now_ns, fake_state *st, char *msg,
                    size_t msglen) {
    int fd;
    if (open_locked(path, 1, LOCK_EX, &fd, msg, msglen) != 0) return -1;
    if (read_fd(fd, st) == 0 && state_fits(st, sc, now_ns)) {
        close_locked(fd);
        return 0;
    }
    memset(st, 0, sizeof *st);
    st->start_ns = now_ns;
    st->ndevices = sc->ndevices;
    for (unsigned i = 0; i < sc->ndevices; i++) {
        st->dev[i].limit_mw = st->dev[i].prev_limit_mw = limit_mw(sc->devices[i].initial_limit_w);
        st->dev[i].eff_ms = 0;
        st->dev[i].anchor_mj = 0;
    }
    int rc = write_fd(fd, path, st, msg, msglen);
    close_locked(fd);
    return rc;
}

int fake_state_read(const char *path, unsigned ndevices, fake_state *st, char *msg, size_t msglen) {
    int fd;
    if (open_locked(path, 0, LOCK_SH, &fd, msg, msglen) != 0) return -1;
    int rc = read_fd(fd, st);
    close_locked(fd);
    if (rc != 0 || st->ndevices != ndevices) {
        snprintf(msg, msglen, "state file %s: unreadable or written for another scenario", path);
        return -1;
    }
    return 0;
}

int fake_state_update(const char *path, unsigned ndevices, unsigned index, fake_state_update_fn fn, void *arg,
                      char *msg, size_t msglen) {
    int fd;
    fake_state st;
    if (open_locked(path, 0, LOCK_EX, &fd, msg, msglen) != 0) return -1;
    if (read_fd(fd, &st) != 0 || st.ndevices != ndevices || index >= ndevices) {
        close_locked(fd);
        snprintf(msg, msglen, "state file %s: unreadable or written for another scenario", path);
        return -1;
    }
    int rc = fn(&st.dev[index], arg);
    if (rc == 0) rc = write_fd(fd, path, &st, msg, msglen);
    close_locked(fd);
    return rc;
}
