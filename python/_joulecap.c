/* _joulecap: the CPython extension behind the `joulecap` package, written against include/joulecap.h only.
 *
 * Context wraps a jc_context.  Besides the plain calls of the C API it has a *resolver*: a C thread (not a
 * Python thread; it never touches Python objects or the GIL) that takes stopped windows in stop order, waits
 * for their results, writes one CSV row per window to the snippet CSV (flushed at once) and releases the
 * window.  That is what lets EnergyMeasurementTool.stop() return in about a microsecond while the row still
 * lands in the file within about one GPU counter step (~0.1 s), with no Python thread and without waiting for
 * the Python program to call in again.  Results are handed to Python through Pending objects.
 *
 * Thread rules: every call that may block (jc_open, jc_close, result waits) releases the GIL.  jc_close must
 * not race with another call on the context, so calls that run without the GIL count themselves in `busy`
 * and close() refuses while any is in flight.  After fork() the child has neither the sampler nor the resolver
 * thread: a context inherited through fork is unusable there and is dropped without joining anything. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "joulecap.h"

/* Longest wait for one window's samples in the resolver.  The sampler resolves a window end within about one
 * 100 ms counter step; this bound only matters when a source stalls. */
#define RESOLVE_TIMEOUT_S 10.0
/* The resolver polls its queue this often while windows keep coming, so stop() need not wake it... */
#define RESOLVER_POLL_NS 20000000ull
/* ...and sleeps until woken after this long without work. */
#define RESOLVER_IDLE_NS 1000000000ull

/* ------------------------------------------------------------------------------------------------------ */
/* Errors: mapped to the classes of joulecap.errors by joulecap.errors._from_status(status, detail, op).  */

static PyObject *errors_module = NULL;

static PyObject *raise_status(jc_status st, const char *detail, const char *op) {
    char copy[1024];
    snprintf(copy, sizeof copy, "%s", detail ? detail : "");
    if (!errors_module) {
        errors_module = PyImport_ImportModule("joulecap.errors");
        if (!errors_module) return NULL;
    }
    PyObject *exc = PyObject_CallMethod(errors_module, "_from_status", "iss", (int)st, copy, op);
    if (!exc) return NULL;
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return NULL;
}

static PyObject *raise_last(jc_status st, const char *op) { return raise_status(st, jc_last_detail(), op); }

/* A joulecap.errors.StateError with a message of our own. */
static PyObject *raise_state(const char *msg) { return raise_status(JC_ERR_STATE, msg, "state"); }

/* ------------------------------------------------------------------------------------------------------ */
/* Fork detection without a getpid() syscall on the hot path.                                             */

static atomic_int fork_generation = 0;
static void after_fork_child(void) { atomic_fetch_add(&fork_generation, 1); }

/* ------------------------------------------------------------------------------------------------------ */
/* Monotonic deadlines for condition variables created with CLOCK_MONOTONIC.                              */

static uint64_t mono_ns(void) { return jc_now_ns(); }

static struct timespec ts_of(uint64_t ns) {
    struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    return ts;
}

static void cond_init_mono(pthread_cond_t *cv) {
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
}

/* ------------------------------------------------------------------------------------------------------ */
/* The resolver: pending windows, the snippet CSV.                                                        */

/* A stopped window on its way through the resolver.  The result is kept compact (the devices measured, not
 * JC_MAX_DEVICES), since a tight loop of windows can queue many of them. */
typedef struct pending {
    atomic_int refs; /* the queue's and the Python Pending object's */
    jc_window w;
    int done;        /* guarded by winlog.mu */
    jc_status status;
    uint64_t start_ns, stop_ns;
    double elapsed_s;
    int resolved;
    int ndev;
    double *energy_j;          /* ndev values, in the same allocation */
    jc_energy_source *source;  /* ndev values, in the same allocation */
    char *name;
    struct pending *next;
} pending;

static pending *pending_new(int ndev) {
    if (ndev < 1) ndev = 1;
    if (ndev > JC_MAX_DEVICES) ndev = JC_MAX_DEVICES;
    pending *p = calloc(1, sizeof *p + (size_t)ndev * (sizeof(double) + sizeof(jc_energy_source)));
    if (!p) return NULL;
    p->ndev = ndev;
    p->energy_j = (double *)(p + 1);
    p->source = (jc_energy_source *)(p->energy_j + ndev);
    return p;
}

static void pending_set(pending *p, const jc_window_result *r, jc_status st) {
    p->status = st;
    p->start_ns = r->start_ns;
    p->stop_ns = r->stop_ns;
    p->elapsed_s = r->elapsed_s;
    p->resolved = st == JC_OK && r->resolved;
    int n = r->device_count < p->ndev ? r->device_count : p->ndev;
    if (n < 0) n = 0;
    for (int i = 0; i < p->ndev; i++) {
        p->energy_j[i] = i < n ? r->energy_j[i] : NAN;
        p->source[i] = i < n ? r->source[i] : JC_SOURCE_NONE;
    }
    if (st != JC_OK && st != JC_ERR_TIMEOUT) p->ndev = n;
}

static void pending_unref(pending *p) {
    if (p && atomic_fetch_sub(&p->refs, 1) == 1) {
        free(p->name);
        free(p);
    }
}

typedef struct winlog {
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* the resolver waits here for work */
    pthread_cond_t done_cv; /* waiters for results wait here */
    pthread_t thread;
    int started, closing, sleeping;
    pending *head, *tail;
    size_t queued;
    uint64_t rows_written;
    jc_context *ctx; /* set while the context is open */
    uint64_t epoch_ns;
    int ndev;
    int gpu_index[JC_MAX_DEVICES];
    FILE *f;            /* snippet CSV, NULL when none */
    char *path;
    int write_error;    /* errno of the first failed write, 0 when none */
} winlog;

static void csv_cell_text(FILE *f, const char *s) {
    if (!s) return;
    if (strpbrk(s, ",\"\r\n") == NULL) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static int winlog_write_header(winlog *L) {
    FILE *f = L->f;
    fputs("elapsed_s,cpu_energy_kwh", f);
    for (int i = 1; i < L->ndev; i++) fprintf(f, ",gpu%d_energy_kwh", L->gpu_index[i]);
    fputs(",cpu_energy_source", f);
    for (int i = 1; i < L->ndev; i++) fprintf(f, ",gpu%d_energy_source", L->gpu_index[i]);
    fputs(",window,start_s\n", f);
    return fflush(f) == 0 ? 0 : errno;
}

/* Writes one row (not flushed: the resolver flushes before it waits and when its queue is empty). */
static void winlog_write_row(winlog *L, const pending *p) {
    FILE *f = L->f;
    fprintf(f, "%.6f", p->elapsed_s);
    for (int i = 0; i < L->ndev; i++) {
        fputc(',', f);
        if (i < p->ndev && !isnan(p->energy_j[i])) fprintf(f, "%.10g", p->energy_j[i] / 3.6e6);
    }
    for (int i = 0; i < L->ndev; i++)
        fprintf(f, ",%s", jc_energy_source_name(i < p->ndev ? p->source[i] : JC_SOURCE_NONE));
    fputc(',', f);
    csv_cell_text(f, p->name);
    fprintf(f, ",%.6f\n", p->start_ns >= L->epoch_ns ? (double)(p->start_ns - L->epoch_ns) * 1e-9 : 0.0);
    if (ferror(f) && !L->write_error) L->write_error = errno ? errno : EIO;
}

static void winlog_flush_file(winlog *L) {
    if (L->f && fflush(L->f) != 0 && !L->write_error) L->write_error = errno ? errno : EIO;
}

static void *resolver_main(void *arg) {
    winlog *L = arg;
    uint64_t last_work = mono_ns();
    int dirty = 0;
    pthread_mutex_lock(&L->mu);
    for (;;) {
        if (!L->head) {
            if (L->closing) break;
            uint64_t now = mono_ns();
            if (now - last_work < RESOLVER_IDLE_NS) {
                struct timespec ts = ts_of(now + RESOLVER_POLL_NS);
                pthread_cond_timedwait(&L->work_cv, &L->mu, &ts);
            } else {
                L->sleeping = 1;
                while (!L->head && !L->closing) pthread_cond_wait(&L->work_cv, &L->mu);
                L->sleeping = 0;
            }
            continue;
        }
        pending *p = L->head;
        pthread_mutex_unlock(&L->mu);

        jc_window_result r;
        memset(&r, 0, sizeof r);
        /* Rows are flushed before any wait, so the file never lags behind while the resolver blocks, and a
         * burst of windows costs one write() rather than one per row. */
        jc_status st = jc_window_result_get(L->ctx, p->w, 0.0, &r);
        if (st == JC_ERR_TIMEOUT) {
            if (dirty) winlog_flush_file(L);
            dirty = 0;
            st = jc_window_result_get(L->ctx, p->w, RESOLVE_TIMEOUT_S, &r);
        }
        pending_set(p, &r, st);
        if (L->f && (st == JC_OK || st == JC_ERR_TIMEOUT)) {
            winlog_write_row(L, p);
            dirty = 1;
        }
        jc_window_release(L->ctx, p->w);

        pthread_mutex_lock(&L->mu);
        if (dirty && !p->next) {
            winlog_flush_file(L); /* the queue is empty: the file is complete */
            dirty = 0;
        }
        p->done = 1;
        L->head = p->next;
        if (!L->head) L->tail = NULL;
        L->queued--;
        L->rows_written++;
        pthread_cond_broadcast(&L->done_cv);
        pending_unref(p); /* the queue's reference */
        last_work = mono_ns();
    }
    pthread_mutex_unlock(&L->mu);
    return NULL;
}

static winlog *winlog_new(void) {
    winlog *L = calloc(1, sizeof *L);
    if (!L) return NULL;
    pthread_mutex_init(&L->mu, NULL);
    cond_init_mono(&L->work_cv);
    cond_init_mono(&L->done_cv);
    return L;
}

/* Drains the queue and joins the resolver; closes the CSV.  Called without the GIL. */
static void winlog_shutdown(winlog *L) {
    pthread_mutex_lock(&L->mu);
    L->closing = 1;
    pthread_cond_broadcast(&L->work_cv);
    int started = L->started;
    pthread_mutex_unlock(&L->mu);
    if (started) pthread_join(L->thread, NULL);
    pthread_mutex_lock(&L->mu);
    L->started = 0;
    /* Anything left (no resolver ever ran): mark done with nothing. */
    while (L->head) {
        pending *p = L->head;
        L->head = p->next;
        p->status = JC_ERR_STATE;
        p->done = 1;
        pending_unref(p);
    }
    L->tail = NULL;
    L->queued = 0;
    pthread_cond_broadcast(&L->done_cv);
    if (L->f) {
        fflush(L->f);
        fsync(fileno(L->f));
        fclose(L->f);
        L->f = NULL;
    }
    L->ctx = NULL;
    pthread_mutex_unlock(&L->mu);
}

static void winlog_free(winlog *L) {
    if (!L) return;
    pthread_mutex_destroy(&L->mu);
    pthread_cond_destroy(&L->work_cv);
    pthread_cond_destroy(&L->done_cv);
    free(L->path);
    free(L);
}

/* ------------------------------------------------------------------------------------------------------ */
/* Context                                                                                                */

typedef struct {
    PyObject_HEAD
    jc_context *ctx;
    winlog *log;
    int fork_gen;
    int busy; /* calls running without the GIL (guarded by the GIL) */
    int forked_away;
    PyObject *weakreflist;
} ContextObject;

typedef struct {
    PyObject_HEAD
    ContextObject *owner;
    pending *p;
} PendingObject;

static PyTypeObject ContextType;
static PyTypeObject PendingType;

static int check_open(ContextObject *self) {
    if (self->ctx && self->fork_gen != atomic_load_explicit(&fork_generation, memory_order_relaxed)) {
        /* Inherited through fork: the sampler thread does not exist here. Drop it without touching it. */
        self->forked_away = 1;
        self->ctx = NULL;
    }
    if (!self->ctx) {
        raise_state(self->forked_away ? "this joulecap context was opened in the parent process before fork(); "
                                        "open a new one in this process"
                                      : "this joulecap context is closed; open a new one");
        return 0;
    }
    return 1;
}

static PyObject *Context_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    (void)args;
    (void)kwds;
    ContextObject *self = (ContextObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->ctx = NULL;
    self->log = winlog_new();
    if (!self->log) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static int Context_init(ContextObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"gpus",  "interval",       "counter_interval", "csv_path", "csv_interval",
                             "flags", "history_points", "window_csv",       NULL};
    const char *gpus = NULL, *csv_path = NULL, *window_csv = NULL;
    double interval = 0, counter_interval = 0, csv_interval = 0;
    unsigned int flags = 0;
    Py_ssize_t history = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|z$ddzdInz:Context", kwlist, &gpus, &interval,
                                     &counter_interval, &csv_path, &csv_interval, &flags, &history, &window_csv))
        return -1;
    if (self->ctx) {
        raise_state("Context.__init__ called twice");
        return -1;
    }
    if (history < 0) {
        raise_status(JC_ERR_INVALID_ARGUMENT, "history_points must be >= 0", "open");
        return -1;
    }
    jc_options o;
    jc_options_init(&o);
    o.gpus = gpus;
    o.interval_s = interval;
    o.counter_interval_s = counter_interval;
    o.csv_path = csv_path;
    o.csv_interval_s = csv_interval;
    o.flags = flags;
    o.history_points = (size_t)history;
    jc_context *ctx = NULL;
    jc_status st;
    char detail[1024];
    Py_BEGIN_ALLOW_THREADS
    st = jc_open(&ctx, &o);
    if (st != JC_OK) snprintf(detail, sizeof detail, "%s", jc_last_detail());
    Py_END_ALLOW_THREADS
    if (st != JC_OK) {
        raise_status(st, detail, "open");
        return -1;
    }
    winlog *L = self->log;
    L->ctx = ctx;
    L->epoch_ns = jc_epoch_ns(ctx);
    L->ndev = jc_device_count(ctx);
    for (int i = 0; i < L->ndev && i < JC_MAX_DEVICES; i++) {
        jc_device_info info;
        L->gpu_index[i] = jc_device_info_get(ctx, i, &info) == JC_OK ? info.index : i - 1;
    }
    if (window_csv) {
        L->path = strdup(window_csv);
        L->f = L->path ? fopen(window_csv, "w") : NULL;
        int err = L->f ? winlog_write_header(L) : errno;
        if (!L->f || err) {
            if (L->f) fclose(L->f);
            L->f = NULL;
            free(L->path);
            L->path = NULL;
            snprintf(detail, sizeof detail, "cannot create the CSV file %s: %s; choose a writable path",
                     window_csv, strerror(err ? err : ENOMEM));
            Py_BEGIN_ALLOW_THREADS
            jc_close(ctx);
            Py_END_ALLOW_THREADS
            L->ctx = NULL;
            raise_status(err == EACCES || err == EPERM || err == EROFS ? JC_ERR_NO_PERMISSION : JC_ERR_IO, detail,
                         "open");
            return -1;
        }
    }
    self->fork_gen = atomic_load(&fork_generation);
    self->ctx = ctx;
    return 0;
}

/* Closes everything; the GIL is released around the joins. */
static void context_close(ContextObject *self) {
    if (self->ctx && self->fork_gen != atomic_load(&fork_generation)) {
        self->forked_away = 1;
        self->ctx = NULL;
    }
    jc_context *ctx = self->ctx;
    if (!ctx) return;
    self->ctx = NULL;
    winlog *L = self->log;
    Py_BEGIN_ALLOW_THREADS
    winlog_shutdown(L);
    jc_close(ctx);
    Py_END_ALLOW_THREADS
}

static void Context_dealloc(ContextObject *self) {
    if (self->weakreflist) PyObject_ClearWeakRefs((PyObject *)self);
    context_close(self);
    /* A context inherited through fork leaks its log on purpose: its mutex may be held by a thread that does
     * not exist in this process. */
    if (!self->forked_away) winlog_free(self->log);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Context_close(ContextObject *self, PyObject *Py_UNUSED(ignored)) {
    if (self->busy) return raise_state("cannot close the joulecap context while another thread is waiting on it");
    context_close(self);
    Py_RETURN_NONE;
}

static PyObject *Context_enter(ContextObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!check_open(self)) return NULL;
    Py_INCREF(self);
    return (PyObject *)self;
}

static PyObject *Context_exit(ContextObject *self, PyObject *args) {
    (void)args;
    return Context_close(self, NULL);
}

static PyObject *Context_get_closed(ContextObject *self, void *closure) {
    (void)closure;
    if (self->ctx && self->fork_gen != atomic_load(&fork_generation)) return PyBool_FromLong(1);
    return PyBool_FromLong(self->ctx == NULL);
}

static PyObject *Context_get_epoch_ns(ContextObject *self, void *closure) {
    (void)closure;
    if (!check_open(self)) return NULL;
    return PyLong_FromUnsignedLongLong(jc_epoch_ns(self->ctx));
}

static PyObject *Context_get_window_csv(ContextObject *self, void *closure) {
    (void)closure;
    if (!self->log->path) Py_RETURN_NONE;
    return PyUnicode_DecodeFSDefault(self->log->path);
}

/* --- devices ------------------------------------------------------------------------------------------ */

static int set_item(PyObject *d, const char *key, PyObject *v) {
    if (!v) return -1;
    int rc = PyDict_SetItemString(d, key, v);
    Py_DECREF(v);
    return rc;
}

static PyObject *status_or_none(jc_status st) {
    if (st == JC_OK) Py_RETURN_NONE;
    return PyUnicode_FromString(jc_status_name(st));
}

static PyObject *device_dict(const jc_device_info *i) {
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    if (set_item(d, "kind", PyUnicode_FromString(i->kind == JC_DEVICE_CPU ? "cpu" : "gpu")) ||
        set_item(d, "index", PyLong_FromLong(i->index)) ||
        set_item(d, "nvml_index", PyLong_FromLong(i->nvml_index)) ||
        set_item(d, "name", PyUnicode_DecodeUTF8(i->name, (Py_ssize_t)strlen(i->name), "replace")) ||
        set_item(d, "uuid", PyUnicode_DecodeUTF8(i->uuid, (Py_ssize_t)strlen(i->uuid), "replace")) ||
        set_item(d, "pci_bus_id", PyUnicode_DecodeUTF8(i->pci_bus_id, (Py_ssize_t)strlen(i->pci_bus_id), "replace")) ||
        set_item(d, "energy_source", PyUnicode_FromString(jc_energy_source_name(i->energy_source))) ||
        set_item(d, "energy_note", PyUnicode_DecodeUTF8(i->energy_note, (Py_ssize_t)strlen(i->energy_note), "replace")) ||
        set_item(d, "power_status", status_or_none(i->power_status)) ||
        set_item(d, "power_note", PyUnicode_DecodeUTF8(i->power_note, (Py_ssize_t)strlen(i->power_note), "replace")) ||
        set_item(d, "util_status", status_or_none(i->util_status)) ||
        set_item(d, "util_note", PyUnicode_DecodeUTF8(i->util_note, (Py_ssize_t)strlen(i->util_note), "replace")) ||
        set_item(d, "temp_status", status_or_none(i->temp_status)) ||
        set_item(d, "temp_note", PyUnicode_DecodeUTF8(i->temp_note, (Py_ssize_t)strlen(i->temp_note), "replace")) ||
        set_item(d, "limit_w", PyFloat_FromDouble(i->limit_mw * 1e-3)) ||
        set_item(d, "enforced_limit_w", PyFloat_FromDouble(i->enforced_limit_mw * 1e-3)) ||
        set_item(d, "default_limit_w", PyFloat_FromDouble(i->default_limit_mw * 1e-3)) ||
        set_item(d, "min_limit_w", PyFloat_FromDouble(i->min_limit_mw * 1e-3)) ||
        set_item(d, "max_limit_w", PyFloat_FromDouble(i->max_limit_mw * 1e-3))) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

static PyObject *Context_device_count(ContextObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!check_open(self)) return NULL;
    return PyLong_FromLong(jc_device_count(self->ctx));
}

static PyObject *Context_devices(ContextObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!check_open(self)) return NULL;
    int n = jc_device_count(self->ctx);
    PyObject *list = PyList_New(n);
    if (!list) return NULL;
    for (int k = 0; k < n; k++) {
        jc_device_info info;
        jc_status st = jc_device_info_get(self->ctx, k, &info);
        if (st != JC_OK) {
            Py_DECREF(list);
            return raise_last(st, "device");
        }
        PyObject *d = device_dict(&info);
        if (!d) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, k, d);
    }
    return list;
}

static PyObject *Context_gpu_driver(ContextObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!check_open(self)) return NULL;
    char version[128] = "", note[1200] = "";
    jc_status st = jc_gpu_driver(self->ctx, version, sizeof version, note, sizeof note);
    return Py_BuildValue("{s:s,s:s,s:O}", "version", version, "note", note, "available",
                         st == JC_OK ? Py_True : Py_False);
}

/* --- windows ------------------------------------------------------------------------------------------ */

static int parse_window(PyObject *o, jc_window *w) {
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred()) return 0;
    *w = (jc_window)v;
    return 1;
}

/* start(name=None) -> window id.  The timestamp is taken here, in C. */
static PyObject *Context_start(ContextObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    uint64_t t = jc_now_ns();
    if (!check_open(self)) return NULL;
    if (nargs > 1 || (kwnames && PyTuple_GET_SIZE(kwnames) > 0)) {
        PyErr_SetString(PyExc_TypeError, "start() takes at most one positional argument (name)");
        return NULL;
    }
    const char *name = NULL;
    if (nargs == 1 && args[0] != Py_None) {
        if (!PyUnicode_Check(args[0])) {
            PyErr_SetString(PyExc_TypeError, "window name must be a str or None");
            return NULL;
        }
        name = PyUnicode_AsUTF8(args[0]);
        if (!name) return NULL;
    }
    jc_window w;
    jc_status st = jc_window_start_at(self->ctx, name, t, &w);
    if (st != JC_OK) return raise_last(st, "start");
    return PyLong_FromLongLong((long long)w);
}

static PyObject *Context_start_at(ContextObject *self, PyObject *args) {
    unsigned long long t;
    PyObject *name_o = Py_None;
    if (!PyArg_ParseTuple(args, "K|O:start_at", &t, &name_o)) return NULL;
    if (!check_open(self)) return NULL;
    const char *name = NULL;
    if (name_o != Py_None) {
        name = PyUnicode_AsUTF8(name_o);
        if (!name) return NULL;
    }
    jc_window w;
    jc_status st = jc_window_start_at(self->ctx, name, (uint64_t)t, &w);
    if (st != JC_OK) return raise_last(st, "start");
    return PyLong_FromLongLong((long long)w);
}

static PyObject *Context_stop(ContextObject *self, PyObject *arg) {
    uint64_t t = jc_now_ns();
    if (!check_open(self)) return NULL;
    jc_window w;
    if (!parse_window(arg, &w)) return NULL;
    jc_status st = jc_window_stop_at(self->ctx, w, t);
    if (st != JC_OK) return raise_last(st, "stop");
    return PyLong_FromUnsignedLongLong(t);
}

static PyObject *Context_stop_at(ContextObject *self, PyObject *args) {
    long long w;
    unsigned long long t;
    if (!PyArg_ParseTuple(args, "LK:stop_at", &w, &t)) return NULL;
    if (!check_open(self)) return NULL;
    jc_status st = jc_window_stop_at(self->ctx, (jc_window)w, (uint64_t)t);
    if (st != JC_OK) return raise_last(st, "stop");
    Py_RETURN_NONE;
}

static int ensure_resolver(winlog *L) {
    if (L->started) return 0;
    int rc = pthread_create(&L->thread, NULL, resolver_main, L);
    if (rc == 0) L->started = 1;
    return rc;
}

/* stop_pending(window) -> Pending: stops the window now and hands it to the resolver, which writes its CSV
 * row (when the context has a window CSV) and releases it.  The window id is not valid afterwards. */
static PyObject *Context_stop_pending(ContextObject *self, PyObject *arg) {
    uint64_t t = jc_now_ns();
    if (!check_open(self)) return NULL;
    jc_window w;
    if (!parse_window(arg, &w)) return NULL;
    PendingObject *po = PyObject_New(PendingObject, &PendingType);
    if (!po) return NULL;
    po->owner = NULL;
    po->p = NULL;
    pending *p = pending_new(self->log->ndev);
    if (!p) {
        Py_DECREF(po);
        return PyErr_NoMemory();
    }
    const char *name = jc_window_name(self->ctx, w);
    if (name) p->name = strdup(name);
    jc_status st = jc_window_stop_at(self->ctx, w, t);
    if (st != JC_OK) {
        free(p->name);
        free(p);
        Py_DECREF(po);
        return raise_last(st, "stop");
    }
    p->w = w;
    atomic_init(&p->refs, 2);
    winlog *L = self->log;
    pthread_mutex_lock(&L->mu);
    int rc = ensure_resolver(L);
    if (rc == 0) {
        if (L->tail)
            L->tail->next = p;
        else
            L->head = p;
        L->tail = p;
        L->queued++;
        if (L->sleeping) pthread_cond_signal(&L->work_cv);
    }
    pthread_mutex_unlock(&L->mu);
    if (rc != 0) {
        jc_window_release(self->ctx, w);
        free(p->name);
        free(p);
        Py_DECREF(po);
        char msg[256];
        snprintf(msg, sizeof msg, "cannot start the joulecap resolver thread: %s", strerror(rc));
        return raise_status(JC_ERR_THREAD, msg, "stop");
    }
    Py_INCREF(self);
    po->owner = self;
    po->p = p;
    return (PyObject *)po;
}

static PyObject *result_dict_of(uint64_t start_ns, uint64_t stop_ns, double elapsed_s, int n, const double *energy_j,
                                const jc_energy_source *source, int resolved) {
    if (n < 0) n = 0;
    if (n > JC_MAX_DEVICES) n = JC_MAX_DEVICES;
    PyObject *e = PyList_New(n), *s = PyList_New(n);
    if (!e || !s) {
        Py_XDECREF(e);
        Py_XDECREF(s);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        PyObject *v = PyFloat_FromDouble(energy_j[i]);
        PyObject *name = PyUnicode_FromString(jc_energy_source_name(source[i]));
        if (!v || !name) {
            Py_XDECREF(v);
            Py_XDECREF(name);
            Py_DECREF(e);
            Py_DECREF(s);
            return NULL;
        }
        PyList_SET_ITEM(e, i, v);
        PyList_SET_ITEM(s, i, name);
    }
    return Py_BuildValue("{s:K,s:K,s:d,s:N,s:N,s:O}", "start_ns", (unsigned long long)start_ns, "stop_ns",
                         (unsigned long long)stop_ns, "elapsed_s", elapsed_s, "energy_j", e, "source", s,
                         "resolved", resolved ? Py_True : Py_False);
}

static PyObject *result_dict(const jc_window_result *r, int ok) {
    return result_dict_of(r->start_ns, r->stop_ns, r->elapsed_s, r->device_count, r->energy_j, r->source,
                          ok && r->resolved);
}

static int check_timeout(double timeout) {
    if (isnan(timeout) || timeout < 0 || timeout > 1e6) {
        raise_status(JC_ERR_INVALID_ARGUMENT, "timeout must be a number of seconds from 0 to 1e6", "wait");
        return 0;
    }
    return 1;
}

/* result(window, timeout=10.0) -> dict; resolved is False when the samples did not arrive in time. */
static PyObject *Context_result(ContextObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"window", "timeout", NULL};
    long long w;
    double timeout = RESOLVE_TIMEOUT_S;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "L|d:result", kwlist, &w, &timeout)) return NULL;
    if (!check_open(self) || !check_timeout(timeout)) return NULL;
    jc_window_result r;
    jc_status st;
    char detail[1024] = "";
    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    st = jc_window_result_get(self->ctx, (jc_window)w, timeout, &r);
    if (st != JC_OK) snprintf(detail, sizeof detail, "%s", jc_last_detail());
    Py_END_ALLOW_THREADS
    self->busy--;
    if (st != JC_OK && st != JC_ERR_TIMEOUT) return raise_status(st, detail, "result");
    return result_dict(&r, st == JC_OK);
}

static PyObject *Context_release(ContextObject *self, PyObject *arg) {
    if (!check_open(self)) return NULL;
    jc_window w;
    if (!parse_window(arg, &w)) return NULL;
    jc_status st = jc_window_release(self->ctx, w);
    if (st != JC_OK) return raise_last(st, "release");
    Py_RETURN_NONE;
}

static PyObject *Context_window_name(ContextObject *self, PyObject *arg) {
    if (!check_open(self)) return NULL;
    jc_window w;
    if (!parse_window(arg, &w)) return NULL;
    const char *name = jc_window_name(self->ctx, w);
    if (!name) Py_RETURN_NONE;
    return PyUnicode_FromString(name);
}

static PyObject *Context_energy_between(ContextObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"t0_ns", "t1_ns", "timeout", NULL};
    unsigned long long t0, t1;
    double timeout = RESOLVE_TIMEOUT_S;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "KK|d:energy_between", kwlist, &t0, &t1, &timeout)) return NULL;
    if (!check_open(self) || !check_timeout(timeout)) return NULL;
    jc_window_result r;
    jc_status st;
    char detail[1024] = "";
    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    st = jc_energy_between(self->ctx, (uint64_t)t0, (uint64_t)t1, timeout, &r);
    if (st != JC_OK) snprintf(detail, sizeof detail, "%s", jc_last_detail());
    Py_END_ALLOW_THREADS
    self->busy--;
    if (st != JC_OK && st != JC_ERR_TIMEOUT) return raise_status(st, detail, "energy_between");
    return result_dict(&r, st == JC_OK);
}

static PyObject *Context_read_latest(ContextObject *self, PyObject *arg) {
    if (!check_open(self)) return NULL;
    long dev = PyLong_AsLong(arg);
    if (dev == -1 && PyErr_Occurred()) return NULL;
    jc_reading r;
    jc_status st = jc_read_latest(self->ctx, (int)dev, &r);
    if (st != JC_OK) return raise_last(st, "read_latest");
    return Py_BuildValue("{s:K,s:d,s:d,s:d,s:d}", "t_ns", (unsigned long long)r.t_ns, "energy_j", r.energy_j,
                         "power_w", r.power_w, "util_pct", r.util_pct, "temp_c", r.temp_c);
}

/* sync(t_ns=now, timeout=10.0) -> bool: waits until the sampler has taken a sample after t_ns. */
static PyObject *Context_sync(ContextObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"t_ns", "timeout", NULL};
    unsigned long long t = 0;
    double timeout = RESOLVE_TIMEOUT_S;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|Kd:sync", kwlist, &t, &timeout)) return NULL;
    if (!check_open(self) || !check_timeout(timeout)) return NULL;
    if (t == 0) t = jc_now_ns();
    jc_status st;
    char detail[1024] = "";
    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    st = jc_sync(self->ctx, (uint64_t)t, timeout);
    if (st != JC_OK) snprintf(detail, sizeof detail, "%s", jc_last_detail());
    Py_END_ALLOW_THREADS
    self->busy--;
    if (st == JC_ERR_TIMEOUT) Py_RETURN_FALSE;
    if (st != JC_OK) return raise_status(st, detail, "sync");
    Py_RETURN_TRUE;
}

static PyObject *Context_csv_sync(ContextObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!check_open(self)) return NULL;
    jc_status st;
    char detail[1024] = "";
    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    st = jc_csv_sync(self->ctx);
    if (st != JC_OK) snprintf(detail, sizeof detail, "%s", jc_last_detail());
    Py_END_ALLOW_THREADS
    self->busy--;
    if (st != JC_OK) return raise_status(st, detail, "csv_sync");
    Py_RETURN_NONE;
}

/* flush(timeout=None) -> bool: waits until every stopped window has been resolved and written. */
static PyObject *Context_flush(ContextObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"timeout", NULL};
    PyObject *timeout_o = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:flush", kwlist, &timeout_o)) return NULL;
    double timeout = -1;
    if (timeout_o != Py_None) {
        timeout = PyFloat_AsDouble(timeout_o);
        if (timeout == -1 && PyErr_Occurred()) return NULL;
        if (!check_timeout(timeout)) return NULL;
    }
    winlog *L = self->log;
    int empty, werr;
    Py_BEGIN_ALLOW_THREADS
    uint64_t deadline = timeout < 0 ? UINT64_MAX : mono_ns() + (uint64_t)(timeout * 1e9);
    pthread_mutex_lock(&L->mu);
    if (L->head) pthread_cond_signal(&L->work_cv);
    while (L->head) {
        if (deadline == UINT64_MAX) {
            pthread_cond_wait(&L->done_cv, &L->mu);
        } else {
            if (mono_ns() >= deadline) break;
            struct timespec ts = ts_of(deadline);
            pthread_cond_timedwait(&L->done_cv, &L->mu, &ts);
        }
    }
    empty = L->head == NULL;
    winlog_flush_file(L);
    werr = L->write_error;
    pthread_mutex_unlock(&L->mu);
    Py_END_ALLOW_THREADS
    if (werr) {
        char msg[512];
        snprintf(msg, sizeof msg, "writing %s failed: %s", L->path ? L->path : "the CSV file", strerror(werr));
        return raise_status(JC_ERR_IO, msg, "write");
    }
    return PyBool_FromLong(empty);
}

static PyObject *Context_get_pending_count(ContextObject *self, void *closure) {
    (void)closure;
    winlog *L = self->log;
    pthread_mutex_lock(&L->mu);
    size_t n = L->queued;
    pthread_mutex_unlock(&L->mu);
    return PyLong_FromSize_t(n);
}

static PyMethodDef Context_methods[] = {
    {"close", (PyCFunction)Context_close, METH_NOARGS,
     "close()\n--\n\nStops the sampler, writes pending window rows, flushes and closes the CSV files."},
    {"__enter__", (PyCFunction)Context_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)Context_exit, METH_VARARGS, NULL},
    {"device_count", (PyCFunction)Context_device_count, METH_NOARGS,
     "device_count()\n--\n\nNumber of devices: the CPU (device 0) plus the selected GPUs."},
    {"devices", (PyCFunction)Context_devices, METH_NOARGS,
     "devices()\n--\n\nList of dicts describing device 0 (CPU) and the GPUs in CUDA order."},
    {"gpu_driver", (PyCFunction)Context_gpu_driver, METH_NOARGS,
     "gpu_driver()\n--\n\nDict with the driver version, whether NVML is available and why not."},
    {"start", (PyCFunction)(void (*)(void))Context_start, METH_FASTCALL | METH_KEYWORDS,
     "start(name=None)\n--\n\nOpens a window now; returns its id."},
    {"start_at", (PyCFunction)Context_start_at, METH_VARARGS,
     "start_at(t_ns, name=None)\n--\n\nOpens a window at a jc_now_ns() time."},
    {"stop", (PyCFunction)Context_stop, METH_O, "stop(window)\n--\n\nCloses a window now; returns the time (ns)."},
    {"stop_at", (PyCFunction)Context_stop_at, METH_VARARGS, "stop_at(window, t_ns)\n--\n\nCloses a window at t_ns."},
    {"stop_pending", (PyCFunction)Context_stop_pending, METH_O,
     "stop_pending(window)\n--\n\nCloses a window now and hands it to the resolver thread, which writes its CSV row "
     "and releases it.  Returns a Pending."},
    {"result", (PyCFunction)(void (*)(void))Context_result, METH_VARARGS | METH_KEYWORDS,
     "result(window, timeout=10.0)\n--\n\nWaits for a stopped window's samples; returns a dict."},
    {"release", (PyCFunction)Context_release, METH_O, "release(window)\n--\n\nForgets a window."},
    {"window_name", (PyCFunction)Context_window_name, METH_O, "window_name(window)\n--\n\nThe window's name."},
    {"energy_between", (PyCFunction)(void (*)(void))Context_energy_between, METH_VARARGS | METH_KEYWORDS,
     "energy_between(t0_ns, t1_ns, timeout=10.0)\n--\n\nEnergy per device between two jc_now_ns() times."},
    {"read_latest", (PyCFunction)Context_read_latest, METH_O,
     "read_latest(device)\n--\n\nLatest sample of a device (0 = CPU): dict of t_ns, energy_j, power_w, util_pct, "
     "temp_c (NaN where unreadable)."},
    {"sync", (PyCFunction)(void (*)(void))Context_sync, METH_VARARGS | METH_KEYWORDS,
     "sync(t_ns=now, timeout=10.0)\n--\n\nWaits until the sampler has taken a sample after t_ns."},
    {"csv_sync", (PyCFunction)Context_csv_sync, METH_NOARGS, "csv_sync()\n--\n\nFlushes and fsyncs the sampler CSV."},
    {"flush", (PyCFunction)(void (*)(void))Context_flush, METH_VARARGS | METH_KEYWORDS,
     "flush(timeout=None)\n--\n\nWaits until every stopped window is resolved and its row written; returns True "
     "when none is left."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Context_getset[] = {
    {"closed", (getter)Context_get_closed, NULL, "True once closed.", NULL},
    {"epoch_ns", (getter)Context_get_epoch_ns, NULL, "jc_now_ns() time at which the context opened.", NULL},
    {"window_csv", (getter)Context_get_window_csv, NULL, "Path of the window CSV, or None.", NULL},
    {"pending_count", (getter)Context_get_pending_count, NULL, "Windows stopped but not yet written.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ContextType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "joulecap._joulecap.Context",
    .tp_basicsize = sizeof(ContextObject),
    .tp_dealloc = (destructor)Context_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Context(gpus=None, *, interval=0.0, counter_interval=0.0, csv_path=None, csv_interval=0.0, "
              "flags=0, history_points=0, window_csv=None)\n--\n\n"
              "A libjoulecap context: the sources, the sampler thread, windows, and optionally the sampler CSV "
              "(csv_path) and the window CSV (window_csv).",
    .tp_weaklistoffset = offsetof(ContextObject, weakreflist),
    .tp_methods = Context_methods,
    .tp_getset = Context_getset,
    .tp_init = (initproc)Context_init,
    .tp_new = Context_new,
};

/* ------------------------------------------------------------------------------------------------------ */
/* Pending                                                                                                */

static void Pending_dealloc(PendingObject *self) {
    pending_unref(self->p);
    Py_XDECREF(self->owner);
    PyObject_Free(self);
}

static PyObject *Pending_get_ready(PendingObject *self, void *closure) {
    (void)closure;
    winlog *L = self->owner->log;
    pthread_mutex_lock(&L->mu);
    int done = self->p->done;
    pthread_mutex_unlock(&L->mu);
    return PyBool_FromLong(done);
}

static PyObject *Pending_get_name(PendingObject *self, void *closure) {
    (void)closure;
    if (!self->p->name) Py_RETURN_NONE;
    return PyUnicode_FromString(self->p->name);
}

/* wait(timeout=None) -> dict, or None when the result is not there within timeout seconds. */
static PyObject *Pending_wait(PendingObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"timeout", NULL};
    PyObject *timeout_o = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:wait", kwlist, &timeout_o)) return NULL;
    double timeout = -1;
    if (timeout_o != Py_None) {
        timeout = PyFloat_AsDouble(timeout_o);
        if (timeout == -1 && PyErr_Occurred()) return NULL;
        if (!check_timeout(timeout)) return NULL;
    }
    if (self->owner->fork_gen != atomic_load(&fork_generation) && !self->owner->forked_away && self->owner->ctx)
        return raise_state("this result belongs to a joulecap context of the parent process (before fork())");
    winlog *L = self->owner->log;
    pending *p = self->p;
    int done;
    pthread_mutex_lock(&L->mu);
    done = p->done;
    pthread_mutex_unlock(&L->mu);
    if (!done && timeout != 0) {
        Py_BEGIN_ALLOW_THREADS
        uint64_t deadline = timeout < 0 ? UINT64_MAX : mono_ns() + (uint64_t)(timeout * 1e9);
        pthread_mutex_lock(&L->mu);
        pthread_cond_signal(&L->work_cv);
        while (!p->done) {
            if (deadline == UINT64_MAX) {
                pthread_cond_wait(&L->done_cv, &L->mu);
            } else {
                if (mono_ns() >= deadline) break;
                struct timespec ts = ts_of(deadline);
                pthread_cond_timedwait(&L->done_cv, &L->mu, &ts);
            }
        }
        done = p->done;
        pthread_mutex_unlock(&L->mu);
        Py_END_ALLOW_THREADS
    }
    if (!done) Py_RETURN_NONE;
    /* The row is in the file once the result is known: flush what the resolver may still buffer. */
    pthread_mutex_lock(&L->mu);
    winlog_flush_file(L);
    pthread_mutex_unlock(&L->mu);
    if (p->status != JC_OK && p->status != JC_ERR_TIMEOUT) {
        char msg[256];
        snprintf(msg, sizeof msg, "the window could not be resolved (%s)%s", jc_status_name(p->status),
                 p->status == JC_ERR_STATE ? ": its context was closed before the window was handed over" : "");
        return raise_status(p->status, msg, "result");
    }
    return result_dict_of(p->start_ns, p->stop_ns, p->elapsed_s, p->ndev, p->energy_j, p->source, p->resolved);
}

static PyMethodDef Pending_methods[] = {
    {"wait", (PyCFunction)(void (*)(void))Pending_wait, METH_VARARGS | METH_KEYWORDS,
     "wait(timeout=None)\n--\n\nWaits for the window's result; returns a dict, or None after timeout seconds."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Pending_getset[] = {
    {"ready", (getter)Pending_get_ready, NULL, "True once the result is known (and its row written).", NULL},
    {"name", (getter)Pending_get_name, NULL, "The window's name.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject PendingType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "joulecap._joulecap.Pending",
    .tp_basicsize = sizeof(PendingObject),
    .tp_dealloc = (destructor)Pending_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The result of a stopped window, resolved by the context's resolver thread.",
    .tp_methods = Pending_methods,
    .tp_getset = Pending_getset,
};

/* ------------------------------------------------------------------------------------------------------ */
/* Power caps: jc_cap_* (docs/caps.md).                                                                   */

static PyObject *str_or_none(const char *s) {
    if (!s || !*s) Py_RETURN_NONE;
    return PyUnicode_DecodeUTF8(s, (Py_ssize_t)strlen(s), "replace");
}

static PyObject *cap_info_dict(const jc_cap_info *i) {
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    if (set_item(d, "index", PyLong_FromLong(i->index)) || set_item(d, "nvml_index", PyLong_FromLong(i->nvml_index)) ||
        set_item(d, "name", PyUnicode_DecodeUTF8(i->name, (Py_ssize_t)strlen(i->name), "replace")) ||
        set_item(d, "uuid", PyUnicode_DecodeUTF8(i->uuid, (Py_ssize_t)strlen(i->uuid), "replace")) ||
        set_item(d, "pci_bus_id", PyUnicode_DecodeUTF8(i->pci_bus_id, (Py_ssize_t)strlen(i->pci_bus_id), "replace")) ||
        set_item(d, "limit_w", PyFloat_FromDouble(i->limit_w)) ||
        set_item(d, "enforced_limit_w", PyFloat_FromDouble(i->enforced_limit_w)) ||
        set_item(d, "default_limit_w", PyFloat_FromDouble(i->default_limit_w)) ||
        set_item(d, "min_limit_w", PyFloat_FromDouble(i->min_limit_w)) ||
        set_item(d, "max_limit_w", PyFloat_FromDouble(i->max_limit_w)) ||
        set_item(d, "manager", PyUnicode_FromString(jc_cap_manager_name(i->manager))) ||
        set_item(d, "saved_limit_w", PyFloat_FromDouble(i->saved_limit_w)) ||
        set_item(d, "set_limit_w", PyFloat_FromDouble(i->set_limit_w)) ||
        set_item(d, "persistent_saved_limit_w", PyFloat_FromDouble(i->persistent_saved_limit_w)) ||
        set_item(d, "owner_pid", PyLong_FromLong(i->owner_pid)) ||
        set_item(d, "guardian_pid", PyLong_FromLong(i->guardian_pid)) ||
        set_item(d, "guardian_alive", PyBool_FromLong(i->guardian_alive)) ||
        set_item(d, "owner_command", str_or_none(i->owner_command)) ||
        set_item(d, "journal_created", PyFloat_FromDouble(i->journal_created)) ||
        set_item(d, "journal_path", str_or_none(i->journal_path))) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

/* cap_list(gpus=None, *, state_dir=None) -> list of dicts (limits in W and who manages them). */
static PyObject *mod_cap_list(PyObject *m, PyObject *args, PyObject *kwds) {
    (void)m;
    static char *kwlist[] = {"gpus", "state_dir", NULL};
    const char *gpus = NULL, *state_dir = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|z$z:cap_list", kwlist, &gpus, &state_dir)) return NULL;
    jc_cap_options o;
    jc_cap_options_init(&o);
    o.gpus = gpus;
    o.state_dir = state_dir;
    enum { MAXG = 64 };
    jc_cap_info *info = calloc(MAXG, sizeof *info);
    if (!info) return PyErr_NoMemory();
    int n = 0;
    jc_status st;
    char detail[1024] = "";
    Py_BEGIN_ALLOW_THREADS
    st = jc_cap_list(&o, info, MAXG, &n);
    if (st != JC_OK) snprintf(detail, sizeof detail, "%s", jc_last_detail());
    Py_END_ALLOW_THREADS
    if (st != JC_OK) {
        free(info);
        return raise_status(st, detail, "cap");
    }
    PyObject *list = PyList_New(n);
    for (int i = 0; list && i < n; i++) {
        PyObject *d = cap_info_dict(&info[i]);
        if (!d) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, d);
    }
    free(info);
    return list;
}

/* cap_get(gpu, *, state_dir=None) -> dict for one GPU ("0", "GPU-8f3c..."). */
static PyObject *mod_cap_get(PyObject *m, PyObject *args, PyObject *kwds) {
    (void)m;
    static char *kwlist[] = {"gpu", "state_dir", NULL};
    const char *gpu = NULL, *state_dir = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "s|$z:cap_get", kwlist, &gpu, &state_dir)) return NULL;
    jc_cap_options o;
    jc_cap_options_init(&o);
    o.state_dir = state_dir;
    jc_cap_info info;
    jc_status st;
    char detail[1024] = "";
    Py_BEGIN_ALLOW_THREADS
    st = jc_cap_get(gpu, &o, &info);
    if (st != JC_OK) snprintf(detail, sizeof detail, "%s", jc_last_detail());
    Py_END_ALLOW_THREADS
    if (st != JC_OK) return raise_status(st, detail, "cap");
    return cap_info_dict(&info);
}

/* cap_reset(gpu, *, state_dir=None) -> dict(did, limit_w, note): outside any session (jc_cap_reset). */
static PyObject *mod_cap_reset(PyObject *m, PyObject *args, PyObject *kwds) {
    (void)m;
    static char *kwlist[] = {"gpu", "state_dir", NULL};
    const char *gpu = NULL, *state_dir = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "s|$z:cap_reset", kwlist, &gpu, &state_dir)) return NULL;
    jc_cap_options o;
    jc_cap_options_init(&o);
    o.state_dir = state_dir;
    jc_cap_reset_kind did = JC_CAP_RESET_NONE;
    double limit = NAN;
    char note[1024] = "", detail[1024] = "";
    jc_status st;
    Py_BEGIN_ALLOW_THREADS
    st = jc_cap_reset(gpu, &o, &did, &limit, note, sizeof note);
    if (st != JC_OK) snprintf(detail, sizeof detail, "%s", jc_last_detail());
    Py_END_ALLOW_THREADS
    if (st != JC_OK) return raise_status(st, detail, "cap");
    return Py_BuildValue("{s:s,s:d,s:s}", "did", jc_cap_reset_kind_name(did), "limit_w", limit, "note", note);
}

static const char *restore_action_name(jc_cap_restore_action a) {
    switch (a) {
    case JC_CAP_RESTORED: return "restored";
    case JC_CAP_LEFT_LIVE: return "left-live";
    case JC_CAP_RESTORE_FAILED: return "failed";
    }
    return "unknown";
}

/* cap_restore(gpus=None, *, state_dir=None) -> list of dicts: repairs stale and persistent journals. */
static PyObject *mod_cap_restore(PyObject *m, PyObject *args, PyObject *kwds) {
    (void)m;
    static char *kwlist[] = {"gpus", "state_dir", NULL};
    const char *gpus = NULL, *state_dir = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|z$z:cap_restore", kwlist, &gpus, &state_dir)) return NULL;
    jc_cap_options o;
    jc_cap_options_init(&o);
    o.gpus = gpus;
    o.state_dir = state_dir;
    enum { MAXE = 64 };
    jc_cap_restore_entry *e = calloc(MAXE, sizeof *e);
    if (!e) return PyErr_NoMemory();
    int n = 0;
    jc_status st;
    char detail[1024] = "";
    Py_BEGIN_ALLOW_THREADS
    st = jc_cap_restore(&o, e, MAXE, &n);
    if (st != JC_OK) snprintf(detail, sizeof detail, "%s", jc_last_detail());
    Py_END_ALLOW_THREADS
    if (st != JC_OK && n == 0) {
        free(e);
        return raise_status(st, detail, "cap");
    }
    PyObject *list = PyList_New(n);
    for (int i = 0; list && i < n; i++) {
        PyObject *status = status_or_none(e[i].status);
        PyObject *d = status ? Py_BuildValue("{s:s,s:i,s:s,s:N,s:d,s:i,s:s,s:s}", "uuid", e[i].uuid, "index",
                                             e[i].index, "action", restore_action_name(e[i].action), "status", status,
                                             "limit_w", e[i].limit_w, "owner_pid", e[i].owner_pid, "was",
                                             jc_cap_manager_name(e[i].was), "note", e[i].note)
                             : NULL;
        if (!d) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, d);
    }
    free(e);
    return list;
}

/* --- CapSession ---------------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    jc_cap_session *s;
    int busy; /* calls running without the GIL (guarded by the GIL) */
    long pid; /* process that opened it */
} CapSessionObject;

static PyTypeObject CapSessionType;

static int cap_session_check(CapSessionObject *self) {
    if (!self->s) {
        raise_state("this power-cap session is closed");
        return 0;
    }
    return 1;
}

static PyObject *CapSession_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    (void)args;
    (void)kwds;
    CapSessionObject *self = (CapSessionObject *)type->tp_alloc(type, 0);
    if (self) self->s = NULL;
    return (PyObject *)self;
}

static int CapSession_init(CapSessionObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"gpus", "state_dir", "guardian_path", NULL};
    const char *gpus = NULL, *state_dir = NULL, *guardian = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|z$zz:CapSession", kwlist, &gpus, &state_dir, &guardian))
        return -1;
    if (self->s) {
        raise_state("CapSession.__init__ called twice");
        return -1;
    }
    jc_cap_options o;
    jc_cap_options_init(&o);
    o.gpus = gpus;
    o.state_dir = state_dir;
    o.guardian_path = guardian;
    jc_cap_session *s = NULL;
    jc_status st;
    char detail[1024] = "";
    Py_BEGIN_ALLOW_THREADS
    st = jc_cap_session_open(&o, &s);
    if (st != JC_OK) snprintf(detail, sizeof detail, "%s", jc_last_detail());
    Py_END_ALLOW_THREADS
    if (st != JC_OK) {
        raise_status(st, detail, "cap");
        return -1;
    }
    self->s = s;
    self->pid = (long)getpid();
    return 0;
}

static jc_status cap_session_close_now(CapSessionObject *self, char *detail, size_t len) {
    jc_cap_session *s = self->s;
    if (!s) return JC_OK;
    self->s = NULL;
    jc_status st;
    Py_BEGIN_ALLOW_THREADS
    st = jc_cap_session_close(s);
    if (st != JC_OK && detail) snprintf(detail, len, "%s", jc_last_detail());
    Py_END_ALLOW_THREADS
    return st;
}

static void CapSession_dealloc(CapSessionObject *self) {
    /* An unclosed session puts its limits back when it is freed (in a forked child: frees memory only). */
    if (self->s) cap_session_close_now(self, NULL, 0);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *CapSession_close(CapSessionObject *self, PyObject *Py_UNUSED(ignored)) {
    if (self->busy) return raise_state("cannot close the power-cap session while another thread is using it");
    char detail[1024] = "";
    jc_status st = cap_session_close_now(self, detail, sizeof detail);
    if (st != JC_OK) return raise_status(st, detail, "cap");
    Py_RETURN_NONE;
}

/* set(gpu, watts): gpu is the CUDA index (-1: every GPU of the session). */
static PyObject *CapSession_set(CapSessionObject *self, PyObject *args) {
    int gpu;
    double watts;
    if (!PyArg_ParseTuple(args, "id:set", &gpu, &watts)) return NULL;
    if (!cap_session_check(self)) return NULL;
    jc_status st;
    char detail[1024] = "";
    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    st = jc_cap_session_set(self->s, gpu, watts);
    if (st != JC_OK) snprintf(detail, sizeof detail, "%s", jc_last_detail());
    Py_END_ALLOW_THREADS
    self->busy--;
    if (st != JC_OK) return raise_status(st, detail, "cap");
    Py_RETURN_NONE;
}

/* reset(gpu) -> "saved" | "default". */
static PyObject *CapSession_reset(CapSessionObject *self, PyObject *args) {
    int gpu;
    if (!PyArg_ParseTuple(args, "i:reset", &gpu)) return NULL;
    if (!cap_session_check(self)) return NULL;
    jc_cap_reset_kind did = JC_CAP_RESET_NONE;
    jc_status st;
    char detail[1024] = "";
    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    st = jc_cap_session_reset(self->s, gpu, &did);
    if (st != JC_OK) snprintf(detail, sizeof detail, "%s", jc_last_detail());
    Py_END_ALLOW_THREADS
    self->busy--;
    if (st != JC_OK) return raise_status(st, detail, "cap");
    return PyUnicode_FromString(jc_cap_reset_kind_name(did));
}

static PyObject *CapSession_restore(CapSessionObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!cap_session_check(self)) return NULL;
    jc_status st;
    char detail[1024] = "";
    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    st = jc_cap_session_restore(self->s);
    if (st != JC_OK) snprintf(detail, sizeof detail, "%s", jc_last_detail());
    Py_END_ALLOW_THREADS
    self->busy--;
    if (st != JC_OK) return raise_status(st, detail, "cap");
    Py_RETURN_NONE;
}

/* gpus() -> list of dicts (as cap_get), read now. */
static PyObject *CapSession_gpus(CapSessionObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!cap_session_check(self)) return NULL;
    int n = jc_cap_session_gpu_count(self->s);
    if (n < 0) n = 0;
    jc_cap_info *info = calloc((size_t)(n > 0 ? n : 1), sizeof *info);
    if (!info) return PyErr_NoMemory();
    jc_status st = JC_OK;
    char detail[1024] = "";
    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    for (int i = 0; i < n && st == JC_OK; i++) {
        st = jc_cap_session_gpu(self->s, i, &info[i]);
        if (st != JC_OK) snprintf(detail, sizeof detail, "%s", jc_last_detail());
    }
    Py_END_ALLOW_THREADS
    self->busy--;
    if (st != JC_OK) {
        free(info);
        return raise_status(st, detail, "cap");
    }
    PyObject *list = PyList_New(n);
    for (int i = 0; list && i < n; i++) {
        PyObject *d = cap_info_dict(&info[i]);
        if (!d) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, d);
    }
    free(info);
    return list;
}

static PyObject *CapSession_get_note(CapSessionObject *self, void *closure) {
    (void)closure;
    if (!self->s) Py_RETURN_NONE;
    return str_or_none(jc_cap_session_note(self->s));
}

static PyObject *CapSession_get_closed(CapSessionObject *self, void *closure) {
    (void)closure;
    return PyBool_FromLong(self->s == NULL);
}

static PyObject *CapSession_get_pid(CapSessionObject *self, void *closure) {
    (void)closure;
    return PyLong_FromLong(self->pid);
}

static PyObject *CapSession_enter(CapSessionObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!cap_session_check(self)) return NULL;
    Py_INCREF(self);
    return (PyObject *)self;
}

static PyObject *CapSession_exit(CapSessionObject *self, PyObject *args) {
    (void)args;
    return CapSession_close(self, NULL);
}

static PyMethodDef CapSession_methods[] = {
    {"set", (PyCFunction)CapSession_set, METH_VARARGS,
     "set(gpu, watts)\n--\n\nSets the cap of the session's GPU with CUDA index gpu (-1: all of them), in W."},
    {"reset", (PyCFunction)CapSession_reset, METH_VARARGS,
     "reset(gpu)\n--\n\nPuts back the saved limit when this session changed it ('saved'), else sets the default "
     "limit ('default'), which the session's end undoes."},
    {"restore", (PyCFunction)CapSession_restore, METH_NOARGS,
     "restore()\n--\n\nPuts every saved limit back now; the session stays open."},
    {"close", (PyCFunction)CapSession_close, METH_NOARGS,
     "close()\n--\n\nPuts every saved limit back, removes the journals and stops the guardian."},
    {"gpus", (PyCFunction)CapSession_gpus, METH_NOARGS,
     "gpus()\n--\n\nLimits and journal of each of the session's GPUs (dicts as cap_get), read now."},
    {"__enter__", (PyCFunction)CapSession_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)CapSession_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef CapSession_getset[] = {
    {"note", (getter)CapSession_get_note, NULL, "What opening repaired (stale journals), or None.", NULL},
    {"closed", (getter)CapSession_get_closed, NULL, "True once closed.", NULL},
    {"pid", (getter)CapSession_get_pid, NULL, "The process that opened the session.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject CapSessionType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "joulecap._joulecap.CapSession",
    .tp_basicsize = sizeof(CapSessionObject),
    .tp_dealloc = (destructor)CapSession_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "CapSession(gpus=None, *, state_dir=None, guardian_path=None)\n--\n\n"
              "A jc_cap_session: takes the GPUs (permission checked, guardian started, journals written; no "
              "limit changed), sets caps, and puts the saved limits back at close(), when freed, or - through "
              "the guardian process - when this process dies.",
    .tp_methods = CapSession_methods,
    .tp_getset = CapSession_getset,
    .tp_init = (initproc)CapSession_init,
    .tp_new = CapSession_new,
};

/* ------------------------------------------------------------------------------------------------------ */
/* Profiler: jc_profiler_* (docs/profiler.md), sweeps and the simulated GPU.                              */

typedef struct {
    PyObject_HEAD
    jc_sweep *sw;
} SweepObject;

static PyTypeObject SweepType;

static int parse_double_seq(PyObject *o, const char *what, double **out, Py_ssize_t *n) {
    PyObject *seq = PySequence_Fast(o, what);
    if (!seq) return 0;
    Py_ssize_t k = PySequence_Fast_GET_SIZE(seq);
    double *v = PyMem_Malloc((size_t)(k > 0 ? k : 1) * sizeof(double));
    if (!v) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return 0;
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        v[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        if (v[i] == -1.0 && PyErr_Occurred()) {
            PyMem_Free(v);
            Py_DECREF(seq);
            return 0;
        }
    }
    Py_DECREF(seq);
    *out = v;
    *n = k;
    return 1;
}

static PyObject *Sweep_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    (void)args;
    (void)kwds;
    SweepObject *self = (SweepObject *)type->tp_alloc(type, 0);
    if (self) self->sw = NULL;
    return (PyObject *)self;
}

/* Sweep(path) or Sweep(caps_w, times_s, powers_w, *, min_limit_w=nan, max_limit_w=nan, default_limit_w=nan). */
static int Sweep_init(SweepObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"path_or_caps", "time_per_step_s", "avg_power_w", "min_limit_w", "max_limit_w",
                             "default_limit_w", NULL};
    PyObject *first = NULL, *times = NULL, *powers = NULL;
    double mn = NAN, mx = NAN, df = NAN;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OO$ddd:Sweep", kwlist, &first, &times, &powers, &mn, &mx, &df))
        return -1;
    if (self->sw) {
        raise_state("Sweep.__init__ called twice");
        return -1;
    }
    jc_status st;
    if (!times && !powers) {
        PyObject *b = NULL;
        if (!PyUnicode_FSConverter(first, &b)) return -1;
        st = jc_sweep_load(PyBytes_AS_STRING(b), &self->sw);
        Py_DECREF(b);
    } else {
        if (!times || !powers) {
            PyErr_SetString(PyExc_TypeError, "Sweep(caps_w, time_per_step_s, avg_power_w): give all three sequences");
            return -1;
        }
        double *c = NULL, *t = NULL, *p = NULL;
        Py_ssize_t nc = 0, nt = 0, np = 0;
        if (!parse_double_seq(first, "caps_w must be a sequence of numbers", &c, &nc) ||
            !parse_double_seq(times, "time_per_step_s must be a sequence of numbers", &t, &nt) ||
            !parse_double_seq(powers, "avg_power_w must be a sequence of numbers", &p, &np)) {
            PyMem_Free(c);
            PyMem_Free(t);
            return -1;
        }
        if (nc != nt || nc != np) {
            PyMem_Free(c);
            PyMem_Free(t);
            PyMem_Free(p);
            raise_status(JC_ERR_INVALID_ARGUMENT, "the three sequences of a sweep must have the same length", "sweep");
            return -1;
        }
        st = jc_sweep_new(c, t, p, (size_t)nc, mn, mx, df, &self->sw);
        PyMem_Free(c);
        PyMem_Free(t);
        PyMem_Free(p);
    }
    if (st != JC_OK) {
        raise_last(st, "sweep");
        return -1;
    }
    return 0;
}

static void Sweep_dealloc(SweepObject *self) {
    jc_sweep_free(self->sw);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int sweep_check(SweepObject *self) {
    if (!self->sw) {
        raise_state("this Sweep was not initialised");
        return 0;
    }
    return 1;
}

static PyObject *Sweep_get_limits(SweepObject *self, void *closure) {
    (void)closure;
    if (!sweep_check(self)) return NULL;
    double mn, mx, df;
    jc_sweep_limits(self->sw, &mn, &mx, &df);
    return Py_BuildValue("(ddd)", mn, mx, df);
}

static PyObject *Sweep_eval(SweepObject *self, PyObject *arg) {
    if (!sweep_check(self)) return NULL;
    double cap = PyFloat_AsDouble(arg);
    if (cap == -1.0 && PyErr_Occurred()) return NULL;
    double t, p;
    jc_sweep_eval(self->sw, cap, &t, &p);
    return Py_BuildValue("(dd)", t, p);
}

static int parse_objective(PyObject *o, jc_objective *out) {
    if (o == NULL || o == Py_None) {
        *out = JC_OBJECTIVE_ED2P;
        return 1;
    }
    const char *name = PyUnicode_AsUTF8(o);
    if (!name) return 0;
    jc_status st = jc_objective_parse(name, out);
    if (st != JC_OK) {
        raise_last(st, "profiler");
        return 0;
    }
    return 1;
}

/* best_cap(objective="ed2p", max_slowdown=0.05, eta=0.5, grid_w=1.0) -> (cap_w, value) */
static PyObject *Sweep_best_cap(SweepObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"objective", "max_slowdown", "eta", "grid_w", NULL};
    PyObject *obj = NULL;
    double ms = 0.05, eta = 0.5, grid = 1.0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|Oddd:best_cap", kwlist, &obj, &ms, &eta, &grid)) return NULL;
    if (!sweep_check(self)) return NULL;
    jc_objective o;
    if (!parse_objective(obj, &o)) return NULL;
    double cap, value;
    jc_status st = jc_sweep_best_cap(self->sw, o, ms, eta, grid, &cap, &value);
    if (st != JC_OK) return raise_last(st, "sweep");
    return Py_BuildValue("(dd)", cap, value);
}

static PyMethodDef Sweep_methods[] = {
    {"eval", (PyCFunction)Sweep_eval, METH_O,
     "eval(cap_w)\n--\n\n(time_per_step_s, avg_power_w) at a cap: linear between recorded caps, constant beyond."},
    {"best_cap", (PyCFunction)(void (*)(void))Sweep_best_cap, METH_VARARGS | METH_KEYWORDS,
     "best_cap(objective='ed2p', max_slowdown=0.05, eta=0.5, grid_w=1.0)\n--\n\n"
     "(cap_w, value): the cap in [min, default] minimising the objective of the interpolated sweep."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Sweep_getset[] = {
    {"limits", (getter)Sweep_get_limits, NULL, "(min_limit_w, max_limit_w, default_limit_w)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject SweepType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "joulecap._joulecap.Sweep",
    .tp_basicsize = sizeof(SweepObject),
    .tp_dealloc = (destructor)Sweep_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Sweep(path) or Sweep(caps_w, time_per_step_s, avg_power_w, *, min_limit_w=nan, max_limit_w=nan, "
              "default_limit_w=nan)\n--\n\nA power-limit sweep (jc_sweep) for the simulated GPU.",
    .tp_methods = Sweep_methods,
    .tp_getset = Sweep_getset,
    .tp_init = (initproc)Sweep_init,
    .tp_new = Sweep_new,
};

/* --- Profiler ------------------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    jc_profiler *p;
} ProfilerObject;

static PyTypeObject ProfilerType;

static PyObject *Profiler_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    (void)args;
    (void)kwds;
    ProfilerObject *self = (ProfilerObject *)type->tp_alloc(type, 0);
    if (self) self->p = NULL;
    return (PyObject *)self;
}

static int opt_double(PyObject *o, double *out) {
    if (!o || o == Py_None) return 1;
    double v = PyFloat_AsDouble(o);
    if (v == -1.0 && PyErr_Occurred()) return 0;
    *out = v;
    return 1;
}

static int Profiler_init(ProfilerObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"min_limit_w", "max_limit_w", "default_limit_w", "objective", "max_slowdown", "eta",
                             "caps", "time_budget", "counter_period", "settle_s", "settle_steps", "precision",
                             "max_trial_s", "min_trial_s", "resolution_w", NULL};
    jc_profiler_config c;
    jc_profiler_config_init(&c);
    PyObject *obj = NULL, *ms = NULL, *eta = NULL, *caps = NULL, *budget = NULL, *period = NULL, *settle = NULL,
             *settle_steps = NULL, *prec = NULL, *maxt = NULL, *mint = NULL, *res = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ddd|$OOOOOOOOOOOO:Profiler", kwlist, &c.min_limit_w, &c.max_limit_w,
                                     &c.default_limit_w, &obj, &ms, &eta, &caps, &budget, &period, &settle,
                                     &settle_steps, &prec, &maxt, &mint, &res))
        return -1;
    if (self->p) {
        raise_state("Profiler.__init__ called twice");
        return -1;
    }
    if (!parse_objective(obj, &c.objective) || !opt_double(ms, &c.max_slowdown) || !opt_double(eta, &c.eta) ||
        !opt_double(budget, &c.time_budget_s) || !opt_double(period, &c.counter_period_s) ||
        !opt_double(settle, &c.settle_s) || !opt_double(prec, &c.precision) || !opt_double(maxt, &c.max_trial_s) ||
        !opt_double(mint, &c.min_trial_s) || !opt_double(res, &c.resolution_w))
        return -1;
    if (settle_steps && settle_steps != Py_None) {
        long v = PyLong_AsLong(settle_steps);
        if (v == -1 && PyErr_Occurred()) return -1;
        if (v < 0 || v > 1000000) {
            raise_status(JC_ERR_INVALID_ARGUMENT, "profiler config: settle_steps must be in [0, 1000000]", "profiler");
            return -1;
        }
        c.settle_steps = (int)v;
    }
    double *cv = NULL;
    Py_ssize_t n = 0;
    if (caps && caps != Py_None) {
        if (!parse_double_seq(caps, "caps must be a sequence of numbers (W)", &cv, &n)) return -1;
        if (n == 0) {
            PyMem_Free(cv);
            raise_status(JC_ERR_INVALID_ARGUMENT, "profiler config: caps is empty (give None for adaptive caps)",
                         "profiler");
            return -1;
        }
        c.caps_w = cv;
        c.caps_count = (size_t)n;
    }
    jc_status st = jc_profiler_new(&c, &self->p);
    PyMem_Free(cv);
    if (st != JC_OK) {
        raise_last(st, "profiler");
        return -1;
    }
    return 0;
}

static void Profiler_dealloc(ProfilerObject *self) {
    jc_profiler_free(self->p);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int profiler_check(ProfilerObject *self) {
    if (!self->p) {
        raise_state("this Profiler was not initialised");
        return 0;
    }
    return 1;
}

static const char *action_name(jc_profiler_action_kind k) {
    switch (k) {
    case JC_PROFILER_SET_CAP: return "set_cap";
    case JC_PROFILER_RUN: return "run";
    case JC_PROFILER_DONE: return "done";
    }
    return "unknown";
}

/* next_action() -> (kind, cap_w), kind "set_cap" | "run" | "done". */
static PyObject *Profiler_next_action(ProfilerObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!profiler_check(self)) return NULL;
    jc_profiler_action a;
    jc_status st = jc_profiler_next_action(self->p, &a);
    if (st != JC_OK) return raise_last(st, "profiler");
    return Py_BuildValue("(sd)", action_name(a.kind), a.cap_w);
}

static PyObject *Profiler_cap_applied(ProfilerObject *self, PyObject *args) {
    double cap, t, e;
    if (!PyArg_ParseTuple(args, "ddd:cap_applied", &cap, &t, &e)) return NULL;
    if (!profiler_check(self)) return NULL;
    jc_status st = jc_profiler_cap_applied(self->p, cap, t, e);
    if (st != JC_OK) return raise_last(st, "profiler");
    Py_RETURN_NONE;
}

static PyObject *Profiler_observe_step(ProfilerObject *self, PyObject *args) {
    double t, e;
    if (!PyArg_ParseTuple(args, "dd:observe_step", &t, &e)) return NULL;
    if (!profiler_check(self)) return NULL;
    jc_status st = jc_profiler_observe_step(self->p, t, e);
    if (st != JC_OK) return raise_last(st, "profiler");
    Py_RETURN_NONE;
}

static PyObject *Profiler_finish(ProfilerObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!profiler_check(self)) return NULL;
    jc_status st = jc_profiler_finish(self->p);
    if (st != JC_OK) return raise_last(st, "profiler");
    Py_RETURN_NONE;
}

static PyObject *Profiler_result(ProfilerObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!profiler_check(self)) return NULL;
    jc_profiler_result r;
    jc_status st = jc_profiler_result_get(self->p, &r);
    if (st != JC_OK) return raise_last(st, "profiler");
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    if (set_item(d, "done", PyBool_FromLong(r.done)) ||
        set_item(d, "objective", PyUnicode_FromString(jc_objective_name(r.objective) ? jc_objective_name(r.objective) : "")) ||
        set_item(d, "cap_w", PyFloat_FromDouble(r.cap_w)) || set_item(d, "cap_measured", PyBool_FromLong(r.cap_measured)) ||
        set_item(d, "time_per_step_s", PyFloat_FromDouble(r.time_per_step_s)) ||
        set_item(d, "avg_power_w", PyFloat_FromDouble(r.avg_power_w)) ||
        set_item(d, "energy_per_step_j", PyFloat_FromDouble(r.energy_per_step_j)) ||
        set_item(d, "objective_value", PyFloat_FromDouble(r.objective_value)) ||
        set_item(d, "best_measured_cap_w", PyFloat_FromDouble(r.best_measured_cap_w)) ||
        set_item(d, "best_measured_objective", PyFloat_FromDouble(r.best_measured_objective)) ||
        set_item(d, "reference_cap_w", PyFloat_FromDouble(r.reference_cap_w)) ||
        set_item(d, "reference_time_per_step_s", PyFloat_FromDouble(r.reference_time_per_step_s)) ||
        set_item(d, "reference_avg_power_w", PyFloat_FromDouble(r.reference_avg_power_w)) ||
        set_item(d, "energy_saving", PyFloat_FromDouble(r.energy_saving)) ||
        set_item(d, "slowdown", PyFloat_FromDouble(r.slowdown)) || set_item(d, "binding", PyBool_FromLong(r.binding)) ||
        set_item(d, "profile_seconds", PyFloat_FromDouble(r.profile_seconds)) ||
        set_item(d, "trial_count", PyLong_FromLong(r.trial_count)) ||
        set_item(d, "total_steps", PyLong_FromLong(r.total_steps)) ||
        set_item(d, "reason", PyUnicode_DecodeUTF8(r.reason, (Py_ssize_t)strlen(r.reason), "replace"))) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

static PyObject *trial_dict(const jc_profiler_trial *t) {
    return Py_BuildValue("{s:d,s:i,s:i,s:d,s:d,s:d,s:d,s:d,s:d,s:d,s:d,s:d,s:d,s:i,s:i}", "cap_w", t->cap_w, "steps",
                         t->steps, "dropped_steps", t->dropped_steps, "start_s", t->start_s, "seconds", t->seconds,
                         "energy_j", t->energy_j, "time_per_step_s", t->time_per_step_s, "avg_power_w",
                         t->avg_power_w, "energy_per_step_j", t->energy_per_step_j, "objective", t->objective,
                         "rel_se_time", t->rel_se_time, "rel_se_power", t->rel_se_power, "rel_se_objective",
                         t->rel_se_objective, "stop_reason", t->stop_reason, "phase", t->phase);
}

static PyObject *Profiler_trials(ProfilerObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!profiler_check(self)) return NULL;
    int n = jc_profiler_trial_count(self->p);
    PyObject *list = PyList_New(n > 0 ? n : 0);
    for (int i = 0; list && i < n; i++) {
        jc_profiler_trial t;
        jc_status st = jc_profiler_trial_get(self->p, i, &t);
        if (st != JC_OK) {
            Py_DECREF(list);
            return raise_last(st, "profiler");
        }
        PyObject *d = trial_dict(&t);
        if (!d) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, d);
    }
    return list;
}

static PyObject *Profiler_predict(ProfilerObject *self, PyObject *arg) {
    if (!profiler_check(self)) return NULL;
    double cap = PyFloat_AsDouble(arg);
    if (cap == -1.0 && PyErr_Occurred()) return NULL;
    double t, p;
    jc_status st = jc_profiler_predict(self->p, cap, &t, &p);
    if (st != JC_OK) return raise_last(st, "profiler");
    return Py_BuildValue("(dd)", t, p);
}

/* run_simulated(sweep, *, step_s=0.05, noise=0.02, counter_period=0.1, settle_s=0.3, seed=1): drives the
 * profiler against a simulated GPU playing the sweep back on a virtual clock, until DONE. */
static PyObject *Profiler_run_simulated(ProfilerObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"sweep", "step_s", "noise", "counter_period", "settle_s", "seed", NULL};
    PyObject *sw = NULL;
    jc_sim_options o;
    jc_sim_options_init(&o);
    unsigned long long seed = o.seed;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!|$ddddK:run_simulated", kwlist, &SweepType, &sw, &o.step_s,
                                     &o.noise, &o.counter_period_s, &o.settle_s, &seed))
        return NULL;
    if (!profiler_check(self) || !sweep_check((SweepObject *)sw)) return NULL;
    o.seed = (uint64_t)seed;
    jc_simgpu *g = NULL;
    jc_status st = jc_simgpu_new(((SweepObject *)sw)->sw, &o, &g);
    if (st != JC_OK) return raise_last(st, "simulate");
    char detail[1024] = "";
    Py_BEGIN_ALLOW_THREADS
    st = jc_profiler_run_simulated(self->p, g);
    if (st != JC_OK) snprintf(detail, sizeof detail, "%s", jc_last_detail());
    Py_END_ALLOW_THREADS
    jc_simgpu_free(g);
    if (st != JC_OK) return raise_status(st, detail, "simulate");
    Py_RETURN_NONE;
}

static PyMethodDef Profiler_methods[] = {
    {"next_action", (PyCFunction)Profiler_next_action, METH_NOARGS,
     "next_action()\n--\n\n(kind, cap_w): kind 'set_cap' (set cap_w, then cap_applied), 'run' (run a step, then "
     "observe_step) or 'done' (cap_w is the recommendation)."},
    {"cap_applied", (PyCFunction)Profiler_cap_applied, METH_VARARGS,
     "cap_applied(cap_w, t_s, energy_j)\n--\n\nThe cap asked for is in force; clock and energy counter now."},
    {"observe_step", (PyCFunction)Profiler_observe_step, METH_VARARGS,
     "observe_step(t_s, energy_j)\n--\n\nA step ended at t_s with the energy counter at energy_j (J, cumulative)."},
    {"finish", (PyCFunction)Profiler_finish, METH_NOARGS,
     "finish()\n--\n\nStops now and recommends from what was measured."},
    {"result", (PyCFunction)Profiler_result, METH_NOARGS, "result()\n--\n\nThe recommendation and its reason (dict)."},
    {"trials", (PyCFunction)Profiler_trials, METH_NOARGS, "trials()\n--\n\nEvery cap tried, in order (dicts)."},
    {"predict", (PyCFunction)Profiler_predict, METH_O,
     "predict(cap_w)\n--\n\n(time_per_step_s, avg_power_w) of the model at a cap."},
    {"run_simulated", (PyCFunction)(void (*)(void))Profiler_run_simulated, METH_VARARGS | METH_KEYWORDS,
     "run_simulated(sweep, *, step_s=0.05, noise=0.02, counter_period=0.1, settle_s=0.3, seed=1)\n--\n\n"
     "Runs the profiler to the end against a simulated GPU playing a Sweep back on a virtual clock."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ProfilerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "joulecap._joulecap.Profiler",
    .tp_basicsize = sizeof(ProfilerObject),
    .tp_dealloc = (destructor)Profiler_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Profiler(min_limit_w, max_limit_w, default_limit_w, *, objective='ed2p', max_slowdown=0.05, eta=0.5, "
              "caps=None, time_budget=0, counter_period=0.1, settle_s=0.3, settle_steps=1, precision=0.01, "
              "max_trial_s=3, min_trial_s=0, resolution_w=0)\n--\n\n"
              "The power-cap profiler's state machine (jc_profiler); None keeps a default.  Not thread-safe.",
    .tp_methods = Profiler_methods,
    .tp_init = (initproc)Profiler_init,
    .tp_new = Profiler_new,
};

/* ------------------------------------------------------------------------------------------------------ */
/* Module                                                                                                 */

static PyObject *mod_now_ns(PyObject *m, PyObject *Py_UNUSED(ignored)) {
    (void)m;
    return PyLong_FromUnsignedLongLong(jc_now_ns());
}

static PyObject *mod_version(PyObject *m, PyObject *Py_UNUSED(ignored)) {
    (void)m;
    return PyUnicode_FromString(jc_version());
}

static PyObject *mod_status_name(PyObject *m, PyObject *arg) {
    (void)m;
    long v = PyLong_AsLong(arg);
    if (v == -1 && PyErr_Occurred()) return NULL;
    return PyUnicode_FromString(jc_status_name((jc_status)v));
}

static PyObject *mod_strerror(PyObject *m, PyObject *arg) {
    (void)m;
    long v = PyLong_AsLong(arg);
    if (v == -1 && PyErr_Occurred()) return NULL;
    return PyUnicode_FromString(jc_strerror((jc_status)v));
}

static PyMethodDef module_methods[] = {
    {"now_ns", mod_now_ns, METH_NOARGS, "now_ns()\n--\n\nThe library's monotonic clock (CLOCK_MONOTONIC), ns."},
    {"version", mod_version, METH_NOARGS, "version()\n--\n\nVersion of libjoulecap."},
    {"status_name", mod_status_name, METH_O, "status_name(status)\n--\n\n'JC_ERR_...' for a status code."},
    {"strerror", mod_strerror, METH_O, "strerror(status)\n--\n\nOne-line text for a status code."},
    {"cap_list", (PyCFunction)(void (*)(void))mod_cap_list, METH_VARARGS | METH_KEYWORDS,
     "cap_list(gpus=None, *, state_dir=None)\n--\n\nPower limits (W) and who manages them, per selected GPU."},
    {"cap_get", (PyCFunction)(void (*)(void))mod_cap_get, METH_VARARGS | METH_KEYWORDS,
     "cap_get(gpu, *, state_dir=None)\n--\n\nPower limits (W) and who manages them for one GPU ('0', a UUID)."},
    {"cap_reset", (PyCFunction)(void (*)(void))mod_cap_reset, METH_VARARGS | METH_KEYWORDS,
     "cap_reset(gpu, *, state_dir=None)\n--\n\nOutside any session: a journal's saved limit back, else the default "
     "limit; dict(did, limit_w, note)."},
    {"cap_restore", (PyCFunction)(void (*)(void))mod_cap_restore, METH_VARARGS | METH_KEYWORDS,
     "cap_restore(gpus=None, *, state_dir=None)\n--\n\nRepairs stale and persistent journals; one dict per journal."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "joulecap._joulecap", "CPython binding of libjoulecap (include/joulecap.h).", -1,
    module_methods,        NULL,                 NULL,                                                    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__joulecap(void);
PyMODINIT_FUNC PyInit__joulecap(void) {
    static int atfork_done = 0;
    if (!atfork_done) {
        pthread_atfork(NULL, NULL, after_fork_child);
        atfork_done = 1;
    }
    if (PyType_Ready(&ContextType) < 0 || PyType_Ready(&PendingType) < 0 || PyType_Ready(&CapSessionType) < 0 ||
        PyType_Ready(&SweepType) < 0 || PyType_Ready(&ProfilerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    Py_INCREF(&ContextType);
    if (PyModule_AddObject(m, "Context", (PyObject *)&ContextType) < 0) {
        Py_DECREF(&ContextType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&PendingType);
    if (PyModule_AddObject(m, "Pending", (PyObject *)&PendingType) < 0) {
        Py_DECREF(&PendingType);
        Py_DECREF(m);
        return NULL;
    }
    struct {
        const char *name;
        PyTypeObject *type;
    } types[] = {{"CapSession", &CapSessionType}, {"Sweep", &SweepType}, {"Profiler", &ProfilerType}};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        Py_INCREF(types[i].type);
        if (PyModule_AddObject(m, types[i].name, (PyObject *)types[i].type) < 0) {
            Py_DECREF(types[i].type);
            Py_DECREF(m);
            return NULL;
        }
    }
    struct {
        const char *name;
        long value;
    } consts[] = {
        {"NO_GPU", JC_NO_GPU},
        {"NO_CPU", JC_NO_CPU},
        {"MAX_DEVICES", JC_MAX_DEVICES},
        {"OK", JC_OK},
        {"ERR_INVALID_ARGUMENT", JC_ERR_INVALID_ARGUMENT},
        {"ERR_NO_MEMORY", JC_ERR_NO_MEMORY},
        {"ERR_NOT_FOUND", JC_ERR_NOT_FOUND},
        {"ERR_NOT_SUPPORTED", JC_ERR_NOT_SUPPORTED},
        {"ERR_NO_PERMISSION", JC_ERR_NO_PERMISSION},
        {"ERR_IO", JC_ERR_IO},
        {"ERR_NVML", JC_ERR_NVML},
        {"ERR_STATE", JC_ERR_STATE},
        {"ERR_TIMEOUT", JC_ERR_TIMEOUT},
        {"ERR_GPU_LOST", JC_ERR_GPU_LOST},
        {"ERR_UNAVAILABLE", JC_ERR_UNAVAILABLE},
        {"ERR_BUSY", JC_ERR_BUSY},
        {"ERR_THREAD", JC_ERR_THREAD},
    };
    for (size_t i = 0; i < sizeof consts / sizeof consts[0]; i++) {
        if (PyModule_AddIntConstant(m, consts[i].name, consts[i].value) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    if (PyModule_AddStringConstant(m, "LIB_VERSION", JC_VERSION_STRING) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
