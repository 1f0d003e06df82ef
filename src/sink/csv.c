/* The sampler CSV: a row per csv_interval_s.  The coordinator formats each row (under the lock, no I/O) as
 * soon as the energy at its instant is known; rowfile.c writes it.  A write error stops the sink and is kept
 * for jc_csv_status(), jc_csv_sync(), jc_csv_close() and the CLI. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/context.h"

#define NS 1000000000ull
#define MAX_PENDING_ROWS 4096 /* rows waiting for a slow source's samples (at most stall_s) */

static void cell(jc__rowfile *f, double v, const char *fmt) {
    jc__rowfile_append(f, ",");
    if (!isnan(v)) jc__rowfile_append(f, fmt, v);
}

jc_status jc__csv_open(jc_context *ctx, const char *path) {
    jc__csv *c = calloc(1, sizeof *c);
    if (!c) return jc__fail(JC_ERR_NO_MEMORY, "cannot allocate the CSV sink");
    ctx->csv = c;
    c->next_row_ns = UINT64_MAX;
    jc__rowfile *f = &c->file;
    jc_status st = jc__rowfile_open(f, path, &ctx->lock, &ctx->data_cv);
    if (st != JC_OK) return st;
    jc__rowfile_append(f, "elapsed_s,cpu_energy_kwh,cpu_util_pct,cpu_temp_c");
    for (int i = 1; i < ctx->ndev; i++) {
        int g = ctx->dev[i].info.index;
        jc__rowfile_append(f, ",gpu%d_energy_kwh,gpu%d_util_pct,gpu%d_temp_c,gpu%d_power_w", g, g, g, g);
    }
    jc__rowfile_append(f, ",cpu_energy_source");
    for (int i = 1; i < ctx->ndev; i++) jc__rowfile_append(f, ",gpu%d_energy_source", ctx->dev[i].info.index);
    jc__rowfile_append(f, ",cpu_state");
    for (int i = 1; i < ctx->ndev; i++) jc__rowfile_append(f, ",gpu%d_state", ctx->dev[i].info.index);
    jc__rowfile_append(f, "\n");
    return jc__rowfile_start(f);
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
    jc__rowfile *f = &ctx->csv->file;
    jc__rowfile_append(f, "%.3f", jc__s(t - ctx->epoch_ns));
    for (int i = 0; i < ctx->ndev; i++) {
        jc__device *d = &ctx->dev[i];
        /* Only a whole value: an edge cut back to a stalled or lost device's last sample leaves the cell empty. */
        double since = (d->epoch_resolved && e[i].state == 1) ? e[i].e - d->epoch_j : NAN;
        cell(f, since / JC_J_PER_KWH, "%.9g");
        cell(f, d->latest.util_pct, "%.1f");
        cell(f, d->latest.temp_c, "%.1f");
        if (i > 0) cell(f, d->latest.power_w, "%.2f");
    }
    for (int i = 0; i < ctx->ndev; i++)
        jc__rowfile_append(f, ",%s", jc_energy_source_name(ctx->dev[i].info.energy_source));
    for (int i = 0; i < ctx->ndev; i++)
        jc__rowfile_append(f, ",%s", jc_health_name(jc__health_worst(&ctx->dev[i], t, t)));
    jc__rowfile_append(f, "\n");
}

void jc__csv_pump(jc_context *ctx, uint64_t now) {
    jc__csv *c = ctx->csv;
    if (c->file.stop) return; /* closed by jc_csv_close() */
    uint64_t step = (uint64_t)(ctx->opts.csv_interval_s * 1e9 + 0.5);
    while (c->next_row_ns <= now) {
        if (c->nrows < MAX_PENDING_ROWS && c->file.error == JC_OK) push_row(c, c->next_row_ns);
        c->next_row_ns += step;
    }
    size_t done = 0;
    while (done < c->nrows) {
        jc__edge e[JC_MAX_DEVICES] = {{0}};
        if (!jc__resolve_edge(ctx, c->rows[done], e, 1)) break;
        if (c->file.error == JC_OK) format_row(ctx, c->rows[done], e);
        done++;
    }
    if (done) {
        memmove(c->rows, c->rows + done, (c->nrows - done) * sizeof *c->rows);
        c->nrows -= done;
    }
    jc__rowfile_kick(&c->file);
}

void jc__csv_finish(jc_context *ctx, double timeout_s) {
    jc__csv *c = ctx->csv;
    if (!c || !ctx->thread_started) return;
    pthread_mutex_lock(&ctx->lock);
    if (c->file.stop) {
        pthread_mutex_unlock(&ctx->lock);
        return;
    }
    uint64_t now = jc_now_ns();
    jc__csv_pump(ctx, now);
    /* A last row at the instant of closing, then no more. */
    if (c->file.error == JC_OK && (c->nrows == 0 || c->rows[c->nrows - 1] < now)) push_row(c, now);
    c->next_row_ns = UINT64_MAX;
    uint64_t deadline = now + (uint64_t)(timeout_s * 1e9);
    while ((c->nrows > 0 || !jc__rowfile_drained(&c->file)) && jc_now_ns() < deadline) {
        jc__rowfile_kick(&c->file);
        struct timespec ts = {(time_t)(deadline / NS), (long)(deadline % NS)};
        pthread_cond_timedwait(&ctx->data_cv, &ctx->lock, &ts);
    }
    pthread_mutex_unlock(&ctx->lock);
}

void jc__csv_close(jc_context *ctx) {
    jc__csv *c = ctx->csv;
    if (!c) return;
    jc__rowfile_free(&c->file);
    free(c->rows);
    free(c);
    ctx->csv = NULL;
}

jc_status jc_csv_status(jc_context *ctx, uint64_t *rows_written) {
    if (!ctx) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_csv_status: NULL context");
    pthread_mutex_lock(&ctx->lock);
    jc_status st;
    if (!ctx->csv) {
        st = jc__fail(JC_ERR_STATE, "this context has no CSV sink");
    } else {
        if (rows_written) *rows_written = ctx->csv->file.rows_written;
        st = jc__rowfile_status(&ctx->csv->file);
    }
    pthread_mutex_unlock(&ctx->lock);
    return st;
}

jc_status jc_csv_close(jc_context *ctx, uint64_t *rows_written) {
    if (!ctx) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_csv_close: NULL context");
    if (!ctx->csv) return jc__fail(JC_ERR_STATE, "this context has no CSV sink");
    jc__csv_finish(ctx, jc__s(ctx->stall_ns) + 0.5);
    jc__rowfile_stop(&ctx->csv->file);
    return jc_csv_status(ctx, rows_written);
}

jc_status jc_csv_sync(jc_context *ctx) {
    if (!ctx) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_csv_sync: NULL context");
    pthread_mutex_lock(&ctx->lock);
    jc_status st;
    if (!ctx->csv || ctx->csv->file.stop)
        st = ctx->csv && ctx->csv->file.error != JC_OK ? jc__rowfile_status(&ctx->csv->file)
                                                        : jc__fail(JC_ERR_STATE, "this context has no open CSV sink");
    else
        st = jc__rowfile_sync(&ctx->csv->file, 10.0);
    pthread_mutex_unlock(&ctx->lock);
    return st;
}
