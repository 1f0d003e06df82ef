/* The window CSV (jc_options.window_csv_path): a row per window handed over with jc_window_finish(), in that
 * order, formatted by the coordinator as soon as the window's values are known and written by rowfile.c.  This
 * is the seed's snippet CSV; the columns are in joulecap.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/context.h"

#define NS 1000000000ull

jc_status jc__wlog_open(jc_context *ctx, const char *path) {
    jc__wlog *L = calloc(1, sizeof *L);
    if (!L) return jc__fail(JC_ERR_NO_MEMORY, "cannot allocate the window CSV");
    ctx->wlog = L;
    jc__rowfile *f = &L->file;
    jc_status st = jc__rowfile_open(f, path, &ctx->lock, &ctx->data_cv);
    if (st != JC_OK) return st;
    jc__rowfile_append(f, "elapsed_s,cpu_energy_kwh");
    for (int i = 1; i < ctx->ndev; i++) jc__rowfile_append(f, ",gpu%d_energy_kwh", ctx->dev[i].info.index);
    jc__rowfile_append(f, ",cpu_energy_source");
    for (int i = 1; i < ctx->ndev; i++) jc__rowfile_append(f, ",gpu%d_energy_source", ctx->dev[i].info.index);
    jc__rowfile_append(f, ",window,start_s,cpu_coverage");
    for (int i = 1; i < ctx->ndev; i++) jc__rowfile_append(f, ",gpu%d_coverage", ctx->dev[i].info.index);
    jc__rowfile_append(f, ",cpu_state");
    for (int i = 1; i < ctx->ndev; i++) jc__rowfile_append(f, ",gpu%d_state", ctx->dev[i].info.index);
    jc__rowfile_append(f, "\n");
    return jc__rowfile_start(f);
}

jc_status jc__wlog_push(jc_context *ctx, jc__window *w, jc_window id) {
    jc__wlog *L = ctx->wlog;
    if (L->len == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 64;
        int64_t *grown = malloc(cap * sizeof *grown);
        if (!grown) return jc__fail(JC_ERR_NO_MEMORY, "cannot queue the window for its CSV row");
        for (size_t i = 0; i < L->len; i++) grown[i] = L->queue[(L->head + i) % L->cap];
        free(L->queue);
        L->queue = grown;
        L->head = 0;
        L->cap = cap;
    }
    L->queue[(L->head + L->len++) % L->cap] = id;
    w->logging = 1;
    return JC_OK;
}

/* A text cell, quoted when it holds a comma, a quote or a line break. */
static void text_cell(jc__rowfile *f, const char *s) {
    jc__rowfile_append(f, ",");
    if (!s) return;
    if (!strpbrk(s, ",\"\r\n")) {
        jc__rowfile_append(f, "%s", s);
        return;
    }
    jc__rowfile_append(f, "\"");
    for (const char *p = s; *p; p++) {
        if (*p == '"') jc__rowfile_append(f, "\"\"");
        else jc__rowfile_append(f, "%c", *p);
    }
    jc__rowfile_append(f, "\"");
}

static void format_row(jc_context *ctx, const jc__window *w) {
    jc__rowfile *f = &ctx->wlog->file;
    jc_window_result r;
    jc__window_result(ctx, w, &r);
    jc__rowfile_append(f, "%.6f", r.elapsed_s);
    for (int i = 0; i < ctx->ndev; i++) {
        jc__rowfile_append(f, ",");
        if (!isnan(r.energy_j[i])) jc__rowfile_append(f, "%.10g", r.energy_j[i] / JC_J_PER_KWH);
    }
    for (int i = 0; i < ctx->ndev; i++) jc__rowfile_append(f, ",%s", jc_energy_source_name(r.source[i]));
    text_cell(f, w->name);
    jc__rowfile_append(f, ",%.6f", w->t0 >= ctx->epoch_ns ? jc__s(w->t0 - ctx->epoch_ns) : 0.0);
    /* A value that covers only part of its window says so (coverage < 1) and why (the state). */
    for (int i = 0; i < ctx->ndev; i++) jc__rowfile_append(f, ",%.4g", r.coverage[i]);
    for (int i = 0; i < ctx->ndev; i++) jc__rowfile_append(f, ",%s", jc_health_name(r.health[i]));
    jc__rowfile_append(f, "\n");
}

void jc__wlog_pump(jc_context *ctx) {
    jc__wlog *L = ctx->wlog;
    if (!L || L->file.stop) return;
    while (L->len) {
        jc_window id = L->queue[L->head];
        jc__window *w = jc__window_peek(ctx, id);
        if (w && !jc__window_edges_done(ctx, w)) break; /* rows keep the order windows were finished in */
        if (w) {
            if (L->file.error == JC_OK) {
                format_row(ctx, w);
                w->row_seq = ++L->rows_formatted;
            }
            w->logging = 0;
            if (w->released) jc__window_free(ctx, w, id);
        }
        L->head = (L->head + 1) % L->cap;
        L->len--;
    }
    jc__rowfile_kick(&L->file);
}

jc_status jc__wlog_wait_row(jc_context *ctx, jc__window *w, jc_window id, double timeout_s) {
    jc__wlog *L = ctx->wlog;
    uint64_t deadline = jc_now_ns() + (uint64_t)(timeout_s * 1e9);
    for (;;) {
        if (!L || L->file.error != JC_OK) return JC_OK; /* no row to wait for; the error is the sink's own */
        jc__wlog_pump(ctx);
        if (w->row_seq && L->file.rows_written >= w->row_seq) return JC_OK;
        if (jc_now_ns() >= deadline)
            return jc__fail(JC_ERR_TIMEOUT, "the row of window '%s' was not written within %g s",
                            w->name ? w->name : "", timeout_s);
        struct timespec ts = {(time_t)(deadline / NS), (long)(deadline % NS)};
        pthread_cond_timedwait(&ctx->data_cv, &ctx->lock, &ts);
        if (jc__window_peek(ctx, id) != w) return jc__fail(JC_ERR_NOT_FOUND, "the window was released while waiting");
    }
}

/* Waits (lock held) until every finished window's row is written, the file failed, or timeout_s passed. */
static void drain(jc_context *ctx, jc__wlog *L, double timeout_s) {
    uint64_t deadline = jc_now_ns() + (uint64_t)(timeout_s * 1e9);
    for (;;) {
        jc__wlog_pump(ctx);
        if (L->file.error != JC_OK || (!L->len && jc__rowfile_drained(&L->file)) || jc_now_ns() >= deadline) return;
        struct timespec ts = {(time_t)(deadline / NS), (long)(deadline % NS)};
        pthread_cond_timedwait(&ctx->data_cv, &ctx->lock, &ts);
    }
}

void jc__wlog_finish(jc_context *ctx, double timeout_s) {
    if (!ctx->wlog) return;
    pthread_mutex_lock(&ctx->lock);
    drain(ctx, ctx->wlog, timeout_s);
    pthread_mutex_unlock(&ctx->lock);
}

void jc__wlog_close(jc_context *ctx) {
    jc__wlog *L = ctx->wlog;
    if (!L) return;
    jc__rowfile_free(&L->file);
    free(L->queue);
    free(L);
    ctx->wlog = NULL;
}

jc_status jc_window_csv_flush(jc_context *ctx, double timeout_s, size_t *pending) {
    if (!ctx) return jc__fail(JC_ERR_INVALID_ARGUMENT, "jc_window_csv_flush: NULL context");
    if (isnan(timeout_s) || timeout_s < 0 || timeout_s > 1e6)
        return jc__fail(JC_ERR_INVALID_ARGUMENT, "timeout %g s is out of range: use 0 to 1e6 s", timeout_s);
    pthread_mutex_lock(&ctx->lock);
    jc__wlog *L = ctx->wlog;
    jc_status st = JC_OK;
    if (!L) {
        if (pending) *pending = 0;
        st = jc__fail(JC_ERR_STATE, "this context has no window CSV");
    } else {
        drain(ctx, L, timeout_s);
        if (pending) *pending = L->len;
        if (L->file.error != JC_OK)
            st = jc__rowfile_status(&L->file);
        else if (L->len || !jc__rowfile_drained(&L->file))
            st = jc__fail(JC_ERR_TIMEOUT, "%zu window rows of %s are not written yet", L->len, L->file.path);
    }
    pthread_mutex_unlock(&ctx->lock);
    return st;
}
