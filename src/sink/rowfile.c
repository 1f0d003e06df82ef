/* A file of CSV rows written by a thread of its own.  Rows are formatted into a buffer under the context lock
 * (no I/O there); the writer takes the buffer and writes it with whole-line write()s without the lock, so a
 * slow disk holds up no reader, window or row.  A write error stops the file: it is cut back to its last whole
 * row and the error (file, errno text, rows kept) is kept for the caller.  Used by the sampler CSV (csv.c) and
 * the window CSV (windows.c). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sink.h"

#define NS 1000000000ull

int jc__rowfile_append(jc__rowfile *rf, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = rf->outcap - rf->outlen;
        int n = vsnprintf(rf->out ? rf->out + rf->outlen : NULL, rf->out ? room : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return 0;
        if (rf->out && (size_t)n < room) {
            rf->outlen += (size_t)n;
            return 1;
        }
        size_t cap = rf->outcap ? rf->outcap * 2 : 4096;
        while (cap < rf->outlen + (size_t)n + 1) cap *= 2;
        char *grown = realloc(rf->out, cap);
        if (!grown) return 0;
        rf->out = grown;
        rf->outcap = cap;
    }
}

/* Writes all of buf; returns 0 or the errno of the failure (*done gets the bytes written). */
static int write_all(int fd, const char *buf, size_t len, size_t *done) {
    *done = 0;
    while (*done < len) {
        ssize_t n = write(fd, buf + *done, len - *done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return n < 0 ? errno : ENOSPC;
        *done += (size_t)n;
    }
    return 0;
}

static int is_regular(int fd) {
    struct stat st;
    return fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

/* Records the first error and cuts the file back to its whole rows (lock held). */
static void failed(jc__rowfile *rf, int err) {
    if (rf->error != JC_OK) return;
    int cut = is_regular(rf->fd) && ftruncate(rf->fd, rf->whole_bytes) == 0;
    rf->error = err == EACCES || err == EPERM ? JC_ERR_NO_PERMISSION : JC_ERR_IO;
    jc__fmt(rf->error_text, sizeof rf->error_text,
            "writing the CSV file %s failed: %s; it holds the header and the first %llu rows%s, later rows were "
            "not written", rf->path, strerror(err), (unsigned long long)rf->rows_written,
            cut ? " and ends on a whole row" : "");
    rf->outlen = 0;
}

static void *writer_main(void *arg) {
    jc__rowfile *rf = arg;
    pthread_mutex_t *lock = rf->lock;
    char *buf = NULL;
    size_t cap = 0;
    pthread_mutex_lock(lock);
    for (;;) {
        while (rf->outlen == 0 && !rf->stop) pthread_cond_wait(&rf->cv, lock);
        if (rf->outlen == 0 && rf->stop) break;
        if (cap < rf->outlen) {
            char *grown = realloc(buf, rf->outlen);
            if (!grown) {
                failed(rf, ENOMEM);
                continue;
            }
            buf = grown;
            cap = rf->outlen;
        }
        size_t len = rf->outlen;
        memcpy(buf, rf->out, len);
        rf->outlen = 0;
        rf->writing = 1;
        pthread_mutex_unlock(lock);
        size_t done;
        int err = write_all(rf->fd, buf, len, &done);
        pthread_mutex_lock(lock);
        rf->writing = 0;
        /* Count the whole rows that made it; on an error the partial one is cut off. */
        size_t whole = 0;
        for (size_t i = 0; i < done; i++)
            if (buf[i] == '\n') {
                whole = i + 1;
                rf->rows_written++;
            }
        rf->whole_bytes += (off_t)whole;
        if (err) failed(rf, err);
        pthread_cond_broadcast(rf->done_cv);
    }
    pthread_mutex_unlock(lock);
    free(buf);
    return NULL;
}

jc_status jc__rowfile_open(jc__rowfile *rf, const char *path, pthread_mutex_t *lock, pthread_cond_t *done_cv) {
    memset(rf, 0, sizeof *rf);
    rf->fd = -1;
    rf->lock = lock;
    rf->done_cv = done_cv;
    int out = strcmp(path, "-") == 0;
    const char *shown = out ? "standard output" : path;
    size_t n = strlen(shown) + 1;
    rf->path = malloc(n);
    if (!rf->path) return jc__fail(JC_ERR_NO_MEMORY, "cannot allocate a CSV sink");
    memcpy(rf->path, shown, n);
    if (out) {
        /* The inherited standard output, as it is (a file opened for appending, a pipe, a terminal). */
        rf->fd = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
        if (rf->fd < 0) return jc__fail(JC_ERR_IO, "cannot use standard output for the CSV: %s", strerror(errno));
    } else {
        rf->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
        if (rf->fd < 0)
            return jc__fail(errno == EACCES || errno == EPERM || errno == EROFS ? JC_ERR_NO_PERMISSION : JC_ERR_IO,
                            "cannot create the CSV file %s: %s; choose a writable path", path, strerror(errno));
    }
    return JC_OK;
}

jc_status jc__rowfile_start(jc__rowfile *rf) {
    /* The header (formatted by the caller) is written at once: a file that cannot take it fails the open. */
    size_t done;
    int err = write_all(rf->fd, rf->out, rf->outlen, &done);
    if (err) return jc__fail(JC_ERR_IO, "cannot write the CSV file %s: %s", rf->path, strerror(err));
    rf->whole_bytes = (off_t)rf->outlen;
    rf->outlen = 0;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&rf->cv, &ca);
    pthread_condattr_destroy(&ca);
    int rc = pthread_create(&rf->writer, NULL, writer_main, rf);
    if (rc != 0) {
        pthread_cond_destroy(&rf->cv);
        return jc__fail(JC_ERR_THREAD, "cannot start the CSV writer thread: %s", strerror(rc));
    }
    rf->started = 1;
    return JC_OK;
}

void jc__rowfile_kick(jc__rowfile *rf) {
    if (rf->started && !rf->stop && rf->outlen) pthread_cond_signal(&rf->cv);
}

int jc__rowfile_drained(const jc__rowfile *rf) { return rf->error != JC_OK || (!rf->outlen && !rf->writing); }

void jc__rowfile_stop(jc__rowfile *rf) {
    /* No row is taken after this; the writer writes what it has, then ends. */
    pthread_mutex_lock(rf->lock);
    int started = rf->started, fd = rf->fd;
    rf->stop = 1;
    if (started) pthread_cond_signal(&rf->cv);
    pthread_mutex_unlock(rf->lock);
    if (started) pthread_join(rf->writer, NULL);
    pthread_mutex_lock(rf->lock);
    rf->started = 0;
    rf->fd = -1;
    pthread_mutex_unlock(rf->lock);
    if (started) pthread_cond_destroy(&rf->cv);
    if (fd < 0) return;
    int bad_sync = is_regular(fd) && fsync(fd) != 0, sync_err = errno;
    int bad_close = close(fd) != 0, close_err = errno;
    pthread_mutex_lock(rf->lock);
    if (rf->error == JC_OK && (bad_sync || bad_close)) {
        rf->error = JC_ERR_IO;
        jc__fmt(rf->error_text, sizeof rf->error_text, "cannot %s the CSV file %s: %s", bad_sync ? "flush" : "close",
                rf->path, strerror(bad_sync ? sync_err : close_err));
    }
    pthread_mutex_unlock(rf->lock);
}

void jc__rowfile_free(jc__rowfile *rf) {
    jc__rowfile_stop(rf);
    free(rf->out);
    free(rf->path);
    rf->out = rf->path = NULL;
}

jc_status jc__rowfile_status(const jc__rowfile *rf) {
    return rf->error == JC_OK ? JC_OK : jc__fail(rf->error, "%s", rf->error_text);
}

jc_status jc__rowfile_sync(jc__rowfile *rf, double timeout_s) {
    uint64_t deadline = jc_now_ns() + (uint64_t)(timeout_s * 1e9);
    while (!jc__rowfile_drained(rf) && jc_now_ns() < deadline) {
        jc__rowfile_kick(rf);
        struct timespec ts = {(time_t)(deadline / NS), (long)(deadline % NS)};
        pthread_cond_timedwait(rf->done_cv, rf->lock, &ts);
    }
    if (rf->error != JC_OK) return jc__fail(rf->error, "%s", rf->error_text);
    if (!jc__rowfile_drained(rf))
        return jc__fail(JC_ERR_TIMEOUT, "the rows of %s were not written within %g s", rf->path, timeout_s);
    int fd = rf->fd;
    pthread_mutex_unlock(rf->lock);
    /* The fd lives until the sink is stopped, which must not race with this call: fsync without the lock. */
    int bad = is_regular(fd) && fsync(fd) != 0;
    int err = errno;
    pthread_mutex_lock(rf->lock);
    if (bad) return jc__fail(JC_ERR_IO, "cannot flush %s: %s", rf->path, strerror(err));
    return JC_OK;
}
