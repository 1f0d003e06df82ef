/* CSV sink: a row per csv_interval_s.  The coordinator formats each row (under the lock, no I/O) as soon as
 * the energy at its instant is known; a writer thread of its own writes the rows with whole-line write()s, so
 * a slow disk holds up no window and no reader.  A write error stops the sink: the file is cut back to its last
 * whole row and the error is kept for jc_csv_status(), jc_csv_sync() and the CLI. */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../core/context.h"

#define NS 1000000000ull
#define MAX_PENDING_ROWS 4096 /* rows waiting for a stalled source's samples */

static int append(jc__csv *c, const char *fmt, ...) JC__PRINTF(2, 3);
static int append(jc__csv *c, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = c->outcap - c->outlen;
        int n = vsnprintf(c->out ? c->out + c->outlen : NULL, c->out ? room : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return 0;
        if (c->out && (size_t)n < room) {
            c->outlen += (size_t)n;
            return 1;
        }
        size_t cap = c->outcap ? c->outcap * 2 : 4096;
        while (cap < c->outlen + (size_t)n + 1) cap *= 2;
        char *grown = realloc(c->out, cap);
        if (!grown) return 0;
        c->out = grown;
        c->outcap = cap;
    }
}

static void cell(jc__csv *c, double v, const char *fmt) {
    append(c, ",");
    if (!isnan(v)) append(c, fmt, v);
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
    return fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

/* Records the sink's first error and cuts the file back to its whole rows (lock held). */
static void sink_failed(jc__csv *c, int err) {
    if (c->error != JC_OK) return;
    int cut = is_regular(c->fd) && ftruncate(c->fd, c->whole_bytes) == 0;
    c->error = err == EACCES || err == EPERM ? JC_ERR_NO_PERMISSION : JC_ERR_IO;
    jc__fmt(c->error_text, sizeof c->error_text,
            "writing the CSV file %s failed: %s; it holds the header and the first %llu rows%s, later rows were "
            "not written", c->path, strerror(err), (unsigned long long)c->rows_written,
            cut ? " and ends on a whole row" : "");
    c->outlen = 0;
}

static void *writer_main(void *arg) {
    jc_context *ctx = arg;
    jc__csv *c = ctx->csv;
    char *buf = NULL;
    size_t cap = 0;
    pthread_mutex_lock(&ctx->lock);
    for (;;) {
        while (c->outlen == 0 && !c->writer_stop) pthread_cond_wait(&c->cv, &ctx->lock);
        if (c->outlen == 0 && c->writer_stop) break;
        /* Take the formatted rows, write them without the lock. */
        if (cap < c->outlen) {
            char *grown = realloc(buf, c->outlen);
            if (!grown) {
                sink_failed(c, ENOMEM);
                continue;
            }
            buf = grown;
            cap = c->outlen;
        }
        size_t len = c->outlen;
        memcpy(buf, c->out, len);
        c->outlen = 0;
        uint64_t rows = 0;
        for (size_t i = 0; i < len; i++) rows += buf[i] == '\n';
        c->writing = 1;
        pthread_mutex_unlock(&ctx->lock);
        size_t done;
        int err = write_all(c->fd, buf, len, &done);
        pthread_mutex_lock(&ctx->lock);
        c->writing = 0;
        if (err) {
            /* Keep the whole rows that made it; sink_failed cuts off the partial one. */
            size_t whole = 0;
            for (size_t i = 0; i < done; i++)
                if (buf[i] == '\n') {
                    whole = i + 1;
                    c->rows_written++;
                }
            c->whole_bytes += (off_t)whole;
            sink_failed(c, err);
        } else {
            c->rows_written += rows;
            c->whole_bytes += (off_t)len;
        }
        pthread_cond_broadcast(&ctx->data_cv);
    }
    pthread_mutex_unlock(&ctx->lock);
    free(buf);
    return NULL;
}

jc_status jc__csv_open(jc_context *ctx, const char *path) {
    jc__csv *c = calloc(1, sizeof *c);
    if (!c) return jc__fail(JC_ERR_NO_MEMORY, "cannot allocate the CSV sink");
    ctx->csv = c;
    c->fd = -1;
    c->next_row_ns = UINT64_MAX;
    size_t n = strlen(path) + 1;
    c->path = malloc(n);
    if (!c->path) return jc__fail(JC_ERR_NO_MEMORY, "cannot allocate the CSV sink");
    memcpy(c->path, path, n);
    if (strcmp(path, "-") == 0) {
        /* The inherited standard output, as it is (a file opened for appending, a pipe, a terminal). */
        c->fd = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
        if (c->fd < 0) return jc__fail(JC_ERR_IO, "cannot use standard output for the CSV: %s", strerror(errno));
        free(c->path);
        c->path = malloc(sizeof "standard output");
        if (!c->path) return jc__fail(JC_ERR_NO_MEMORY, "cannot allocate the CSV sink");
        memcpy(c->path, "standard output", sizeof "standard output");
    } else {
        c->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
        if (c->fd < 0)
            return jc__fail(errno == EACCES ? JC_ERR_NO_PERMISSION : JC_ERR_IO,
                            "cannot create the CSV file %s: %s; choose a writable path", path, strerror(errno));
    }
    append(c, "elapsed_s,cpu_energy_kwh,cpu_util_pct,cpu_temp_c");
    for (int i = 1; i < ctx->ndev; i++) {
        int g = ctx->dev[i].info.index;
        append(c, ",gpu%d_energy_kwh,gpu%d_util_pct,gpu%d_temp_c,gpu%d_power_w", g, g, g, g);
    }
    append(c, ",cpu_energy_source");
    for (int i = 1; i < ctx->ndev; i++) append(c, ",gpu%d_energy_source", ctx->dev[i].info.index);
    append(c, ",cpu_state");
    for (int i = 1; i < ctx->ndev; i++) append(c, ",gpu%d_state", ctx->dev[i].info.index);
    append(c, "\n");
    size_t done;
    int err = write_all(c->fd, c->out, c->outlen, &done);
    if (err) return jc__fail(JC_ERR_IO, "cannot write the CSV file %s: %s", c->path, strerror(err));
    c->whole_bytes = (off_t)c->outlen;
    c->outlen = 0;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    int rc = pthread_create(&c->writer, NULL, writer_main, ctx);
    if (rc != 0) {
        pthread_cond_destroy(&c->cv);
        return jc__fail(JC_ERR_THREAD, "cannot start the CSV writer thread: %s", strerror(rc));
    }
    c->writer_started = 1;
    return JC_OK;
}

static int push_row(jc__csv *c, uint64_t t) {
    if (c->nrows == c->caprows) {
        size_t cap = c->caprows ? c->caprows * 2 : 16;
        uint64_t *grown = realloc(c->rows, cap * sizeof *grown);
        if (!grown) return 0;
        c->rows = grown;
        c->caprows = cap;
    }
    c->rows[c->nrows++] = t;
    return 1;
}

/* Formats the row at t (lock held; no I/O). */
static void format_row(jc_context *ctx, uint64_t t, const jc__edge *e) {
    jc__csv *c = ctx->csv;
    append(c, "%.3f", jc__s(t - ctx->epoch_ns));
    for (int i = 0; i < ctx->ndev; i++) {
        jc__device *d = &ctx->dev[i];
        /* Only a whole value: an edge cut back to a stalled or lost device's last sample leaves the cell empty. */
        double since = (d->epoch_resolved && e[i].state == 1) ? e[i].e - d->epoch_j : NAN;
        cell(c, since / 3.6e6, "%.9g");
        cell(c, d->latest.util_pct, "%.1f");
        cell(c, d->latest.temp_c, "%.1f");
        if (i > 0) cell(c, d->latest.power_w, "%.2f");
    }
    for (int i = 0; i < ctx->ndev; i++) append(c, ",%s", jc_energy_source_name(ctx->dev[i].info.energy_source));
    for (int i = 0; i < ctx->ndev; i++) append(c, ",%s", jc_health_name(jc__health_worst(&ctx->dev[i], t, t)));
    append(c, "\n");
}

void jc__csv_pump(jc_context *ctx, uint64_t now) {
    jc__csv *c = ctx->csv;
    uint64_t step = (uint64_t)(ctx->opts.csv_interval_s * 1e9 + 0.5);
    while (c->next_row_ns <= now) {
        /* Bounded: rows wait for samples only while a device is slow, never longer than stall_s. */
        if (c->nrows < MAX_PENDING_ROWS && c->error == JC_OK) push_row(c, c->next_row_ns);
        else c->rows_dropped++;
        c->next_row_ns += step;
    }
    size_t done = 0;
    size_t before = c->outlen;
    while (done < c->nrows) {
        jc__edge e[JC_MAX_DEVICES] = {{0}};
        if (!jc__resolve_edge(ctx, c->rows[done], e, 1)) break;
        if (c->error == JC_OK) format_row(ctx, c->rows[done], e);
        done++;
    }
    if (done) {
        memmove(c->rows, c->rows + done, (c->nrows - done) * sizeof *c->rows);
        c->nrows -= done;
    }
    if (c->outlen > before) pthread_cond_signal(&c->cv);
}

void jc__csv_finish(jc_context *ctx, double timeout_s) {
    jc__csv *c = ctx->csv;
    if (!c || c->fd < 0 || !ctx->thread_started) return;
    pthread_mutex_lock(&ctx->lock);
    uint64_t now = jc_now_ns();
    jc__csv_pump(ctx, now);
    /* A last row at the instant of closing, then no more. */
    if (c->error == JC_OK && (c->nrows == 0 || c->rows[c->nrows - 1] < now)) push_row(c, now);
    c->next_row_ns = UINT64_MAX;
    uint64_t deadline = now + (uint64_t)(timeout_s * 1e9);
    while ((c->nrows > 0 || c->outlen > 0 || c->writing) && jc_now_ns() < deadline) {
        struct timespec ts = {(time_t)(deadline / NS), (long)(deadline % NS)};
        pthread_cond_timedwait(&ctx->data_cv, &ctx->lock, &ts);
    }
    pthread_mutex_unlock(&ctx->lock);
}

/* Stops the writer and closes the file; the sink's counts and error stay for jc_csv_status(). */
static void stop_sink(jc_context *ctx) {
    jc__csv *c = ctx->csv;
    if (c->writer_started) {
        pthread_mutex_lock(&ctx->lock);
        c->writer_stop = 1;
        pthread_cond_signal(&c->cv);
        pthread_mutex_unlock(&ctx->lock);
        pthread_join(c->writer, NULL);
        pthread_cond_destroy(&c->cv);
        c->writer_started = 0;
    }
    if (c->fd >= 0) {
        if (is_regular(c->fd) && fsync(c->fd) != 0 && c->error == JC_OK) {
            c->error = JC_ERR_IO;
            jc__fmt(c->error_text, sizeof c->error_text, "cannot flush the CSV file %s: %s", c->path,
                    strerror(errno));
        }
        if (close(c->fd) != 0 && c->error == JC_OK) {
            c->error = JC_ERR_IO;
            jc__fmt(c->error_text, sizeof c->error_text, "cannot close the CSV file %s: %s", c->path,
                    strerror(errno));
        }
        c->fd = -1;
    }
}

void jc__csv_close(jc_context *ctx) {
    jc__csv *c = ctx->csv;
    if (!c) return;
    stop_sink(ctx);
    free(c->rows);
    free(c->out);
    free(c->path);
    free(c);
    ctx->csv = NULL;
}

jc_status jc_csv_close(jc_context *ctx, uint64_t *rows_written) {
    if (!ctx) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_csv_close: NULL context");
    if (!ctx->csv) return jc__fail(JC_ERR_STATE, "this context has no CSV sink");
    if (ctx->csv->fd >= 0) {
        jc__csv_finish(ctx, jc__s(ctx->stall_ns) + 0.5);
        stop_sink(ctx);
    }
    return jc_csv_status(ctx, rows_written);
}

jc_status jc_csv_status(jc_context *ctx, uint64_t *rows_written) {
    if (!ctx) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_csv_status: NULL context");
    pthread_mutex_lock(&ctx->lock);
    jc_status st = JC_OK;
    if (!ctx->csv) {
        st = jc__fail(JC_ERR_STATE, "this context has no CSV sink");
    } else {
        if (rows_written) *rows_written = ctx->csv->rows_written;
        if (ctx->csv->error != JC_OK) st = jc__fail(ctx->csv->error, "%s", ctx->csv->error_text);
    }
    pthread_mutex_unlock(&ctx->lock);
    return st;
}

jc_status jc_csv_sync(jc_context *ctx) {
    if (!ctx) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_csv_sync: NULL context");
    pthread_mutex_lock(&ctx->lock);
    jc_status st = JC_OK;
    jc__csv *c = ctx->csv;
    if (!c || c->fd < 0) {
        st = c && c->error != JC_OK ? jc__fail(c->error, "%s", c->error_text)
                                     : jc__fail(JC_ERR_STATE, "this context has no open CSV sink");
    } else {
        uint64_t deadline = jc_now_ns() + 10 * NS;
        while ((c->outlen > 0 || c->writing) && c->error == JC_OK && jc_now_ns() < deadline) {
            struct timespec ts = {(time_t)(deadline / NS), (long)(deadline % NS)};
            pthread_cond_timedwait(&ctx->data_cv, &ctx->lock, &ts);
        }
        if (c->error != JC_OK) st = jc__fail(c->error, "%s", c->error_text);
    }
    int fd = st == JC_OK ? c->fd : -1;
    pthread_mutex_unlock(&ctx->lock);
    /* The fd lives until jc_close, which must not race with this call; fsync without the lock. */
    if (fd >= 0 && is_regular(fd) && fsync(fd) != 0)
        st = jc__fail(JC_ERR_IO, "cannot flush %s: %s", c->path, strerror(errno));
    return st;
}
