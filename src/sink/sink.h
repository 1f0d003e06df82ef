/* Sinks: files of rows written by a thread of their own (rowfile.c), fed by the sampler CSV (csv.c) and the
 * window CSV (windows.c). */
#ifndef JC_SINK_SINK_H
#define JC_SINK_SINK_H

#include <pthread.h>
#include <sys/types.h>

#include "../core/internal.h"

typedef struct jc__rowfile {
    int fd;
    char *path;                /* as shown in messages ("standard output" for "-") */
    pthread_mutex_t *lock;     /* the context's lock: guards everything below */
    pthread_cond_t *done_cv;   /* broadcast after each write (the context's data_cv) */
    char *out;                 /* formatted whole rows waiting for the writer */
    size_t outlen, outcap;
    off_t whole_bytes;         /* bytes of whole rows on disk */
    uint64_t rows_written;
    jc_status error;           /* sticky: the first write error */
    char error_text[512];
    int writing, stop, started;
    pthread_t writer;
    pthread_cond_t cv;         /* wakes the writer */
} jc__rowfile;

/* Opens path ("-": a duplicate of standard output).  Format the header with jc__rowfile_append, then start. */
jc_status jc__rowfile_open(jc__rowfile *rf, const char *path, pthread_mutex_t *lock, pthread_cond_t *done_cv);
/* Writes the header at once (its failure fails the open) and starts the writer thread. */
jc_status jc__rowfile_start(jc__rowfile *rf);
/* Appends formatted text (lock held); whole rows only, ending in '\n'.  0 when out of memory. */
int jc__rowfile_append(jc__rowfile *rf, const char *fmt, ...) JC__PRINTF(2, 3);
void jc__rowfile_kick(jc__rowfile *rf);           /* wakes the writer when rows wait (lock held) */
int jc__rowfile_drained(const jc__rowfile *rf);   /* nothing left to write, or failed (lock held) */
/* Waits (lock held) until the rows so far are written, then fsyncs a regular file. */
jc_status jc__rowfile_sync(jc__rowfile *rf, double timeout_s);
jc_status jc__rowfile_status(const jc__rowfile *rf); /* JC_OK or the first error, as a detail (lock held) */
void jc__rowfile_stop(jc__rowfile *rf);           /* joins the writer, fsyncs and closes (lock not held) */
void jc__rowfile_free(jc__rowfile *rf);

/* The sampler CSV: a row per csv_interval_s. */
typedef struct jc__csv {
    jc__rowfile file;
    uint64_t next_row_ns;
    uint64_t *rows;            /* instants of rows not yet resolved, oldest first */
    size_t nrows, caprows;
} jc__csv;

/* The window CSV: a row per window handed over with jc_window_finish, in that order. */
typedef struct jc__wlog {
    jc__rowfile file;
    int64_t *queue;            /* finished windows waiting for their values, oldest first */
    size_t head, len, cap;
    uint64_t rows_formatted;
} jc__wlog;

#endif
