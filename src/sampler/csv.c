/* CSV sink: a row per csv_interval_s, written and flushed as soon as the energy at the row's instant is known
 * (at most about one counter step later), so a killed process loses at most the rows not yet resolved. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../core/context.h"

static void cell(FILE *f, double v, const char *fmt) {
    fputc(',', f);
    if (!isnan(v)) fprintf(f, fmt, v);
}

jc_status jc__csv_open(jc_context *ctx) {
    ctx->csv = fopen(ctx->csv_path, "we"); /* close-on-exec: a forked command must not inherit it */
    if (!ctx->csv)
        return jc__fail(errno == EACCES ? JC_ERR_NO_PERMISSION : JC_ERR_IO,
                        "cannot create the CSV file %s: %s; choose a writable path", ctx->csv_path,
                        strerror(errno));
    FILE *f = ctx->csv;
    fprintf(f, "elapsed_s,cpu_energy_kwh,cpu_util_pct,cpu_temp_c");
    for (int i = 1; i < ctx->ndev; i++) {
        int g = ctx->dev[i].info.index;
        fprintf(f, ",gpu%d_energy_kwh,gpu%d_util_pct,gpu%d_temp_c,gpu%d_power_w", g, g, g, g);
    }
    fprintf(f, ",cpu_energy_source");
    for (int i = 1; i < ctx->ndev; i++) fprintf(f, ",gpu%d_energy_source", ctx->dev[i].info.index);
    fputc('\n', f);
    if (fflush(f) != 0)
        return jc__fail(JC_ERR_IO, "cannot write the CSV file %s: %s", ctx->csv_path, strerror(errno));
    return JC_OK;
}

static int push_row(jc_context *ctx, uint64_t t) {
    if (ctx->nrows == ctx->caprows) {
        size_t cap = ctx->caprows ? ctx->caprows * 2 : 16;
        jc__csv_row *grown = realloc(ctx->rows, cap * sizeof *grown);
        if (!grown) return 0;
        ctx->rows = grown;
        ctx->caprows = cap;
    }
    ctx->rows[ctx->nrows++].t_ns = t;
    return 1;
}

static void write_row(jc_context *ctx, uint64_t t, const double *e) {
    FILE *f = ctx->csv;
    fprintf(f, "%.3f", jc__s(t - ctx->epoch_ns));
    for (int i = 0; i < ctx->ndev; i++) {
        jc__device *d = &ctx->dev[i];
        double since = (d->epoch_resolved && !isnan(e[i])) ? e[i] - d->epoch_j : NAN;
        cell(f, since / 3.6e6, "%.9g");
        cell(f, d->latest.util_pct, "%.1f");
        cell(f, d->latest.temp_c, "%.1f");
        if (i > 0) cell(f, d->latest.power_w, "%.2f");
    }
    for (int i = 0; i < ctx->ndev; i++) fprintf(f, ",%s", jc_energy_source_name(ctx->dev[i].info.energy_source));
    fputc('\n', f);
    fflush(f);
}

void jc__csv_pump(jc_context *ctx, uint64_t now) {
    uint64_t step = (uint64_t)(ctx->opts.csv_interval_s * 1e9 + 0.5);
    while (ctx->next_row_ns <= now) {
        /* Bounded: if rows cannot resolve (a stalled source), keep at most 4096 pending. */
        if (ctx->nrows < 4096) push_row(ctx, ctx->next_row_ns);
        ctx->next_row_ns += step;
    }
    size_t done = 0;
    while (done < ctx->nrows) {
        double e[JC_MAX_DEVICES];
        unsigned char r[JC_MAX_DEVICES] = {0};
        if (!jc__resolve_edge(ctx, ctx->rows[done].t_ns, e, r)) break;
        write_row(ctx, ctx->rows[done].t_ns, e);
        done++;
    }
    if (done) {
        memmove(ctx->rows, ctx->rows + done, (ctx->nrows - done) * sizeof *ctx->rows);
        ctx->nrows -= done;
    }
}

void jc__csv_finish(jc_context *ctx, double timeout_s) {
    if (!ctx->csv || !ctx->thread_started) return;
    pthread_mutex_lock(&ctx->lock);
    uint64_t now = jc_now_ns();
    jc__csv_pump(ctx, now);
    /* A last row at the instant of closing, then no more. */
    if (ctx->nrows == 0 || ctx->rows[ctx->nrows - 1].t_ns < now) push_row(ctx, now);
    ctx->next_row_ns = UINT64_MAX;
    uint64_t deadline = now + (uint64_t)(timeout_s * 1e9);
    while (ctx->nrows > 0 && jc_now_ns() < deadline) {
        struct timespec ts = {(time_t)(deadline / 1000000000ull), (long)(deadline % 1000000000ull)};
        pthread_cond_timedwait(&ctx->data_cv, &ctx->lock, &ts);
    }
    pthread_mutex_unlock(&ctx->lock);
}

void jc__csv_close(jc_context *ctx) {
    if (ctx->csv) {
        fflush(ctx->csv);
        fsync(fileno(ctx->csv));
        fclose(ctx->csv);
        ctx->csv = NULL;
    }
    free(ctx->rows);
    ctx->rows = NULL;
    ctx->nrows = ctx->caprows = 0;
}

jc_status jc_csv_sync(jc_context *ctx) {
    if (!ctx) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_csv_sync: NULL context");
    pthread_mutex_lock(&ctx->lock);
    jc_status st = JC_OK;
    if (!ctx->csv)
        st = jc__fail(JC_ERR_STATE, "this context has no CSV sink");
    else if (fflush(ctx->csv) != 0 || fsync(fileno(ctx->csv)) != 0)
        st = jc__fail(JC_ERR_IO, "cannot flush %s: %s", ctx->csv_path, strerror(errno));
    pthread_mutex_unlock(&ctx->lock);
    return st;
}
