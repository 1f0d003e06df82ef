/* Context and Pending: the measurement bindings of the _joulecap extension.
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
#include "ext.h"

/* Longest wait for one window's samples in the resolver.  The sampler resolves a window end within about one
 * 100 ms counter step; this bound only matters when a source stalls. */
#define RESOLVE_TIMEOUT_S 10.0
/* The resolver polls its queue this often while windows keep coming, so stop() need not wake it... */
#define RESOLVER_POLL_NS 20000000ull
/* ...and sleeps until woken after this long without work. */
#define RESOLVER_IDLE_NS 1000000000ull

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
    double *energy_j;          /* ndev values each, in the same allocation */
    double *coverage;
    double *uncertainty_j;
    jc_energy_source *source;
    jc_health *health;
    char *name;
    struct pending *next;
} pending;

static pending *pending_new(int ndev) {
    if (ndev < 1) ndev = 1;
    if (ndev > JC_MAX_DEVICES) ndev = JC_MAX_DEVICES;
    pending *p = calloc(1, sizeof *p + (size_t)ndev * (3 * sizeof(double) + sizeof(jc_energy_source) +
                                                       sizeof(jc_health)));
    if (!p) return NULL;
    p->ndev = ndev;
    p->energy_j = (double *)(p + 1);
    p->coverage = p->energy_j + ndev;
    p->uncertainty_j = p->coverage + ndev;
    p->source = (jc_energy_source *)(p->uncertainty_j + ndev);
    p->health = (jc_health *)(p->source + ndev);
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
        p->coverage[i] = i < n ? r->coverage[i] : 0.0;
        p->uncertainty_j[i] = i < n ? r->uncertainty_j[i] : NAN;
        p->source[i] = i < n ? r->source[i] : JC_SOURCE_NONE;
        p->health[i] = i < n ? r->health[i] : JC_HEALTH_OK;
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
    fputs(",window,start_s", f);
    fputs(",cpu_coverage", f);
    for (int i = 1; i < L->ndev; i++) fprintf(f, ",gpu%d_coverage", L->gpu_index[i]);
    fputs(",cpu_state", f);
    for (int i = 1; i < L->ndev; i++) fprintf(f, ",gpu%d_state", L->gpu_index[i]);
    fputc('\n', f);
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
    fprintf(f, ",%.6f", p->start_ns >= L->epoch_ns ? (double)(p->start_ns - L->epoch_ns) * 1e-9 : 0.0);
    /* A value that covers only part of its window says so (coverage < 1) and why (the state). */
    for (int i = 0; i < L->ndev; i++) fprintf(f, ",%.4g", i < p->ndev ? p->coverage[i] : 0.0);
    for (int i = 0; i < L->ndev; i++) fprintf(f, ",%s", jc_health_name(i < p->ndev ? p->health[i] : JC_HEALTH_OK));
    fputc('\n', f);
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
        set_item(d, "max_limit_w", PyFloat_FromDouble(i->max_limit_mw * 1e-3)) ||
        set_item(d, "state", PyUnicode_FromString(jc_health_name(i->health))) ||
        set_item(d, "state_note", PyUnicode_DecodeUTF8(i->health_note, (Py_ssize_t)strlen(i->health_note), "replace"))) {
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

/* The per-device values of a window, as lists. */
typedef struct result_view {
    uint64_t start_ns, stop_ns;
    double elapsed_s;
    int n, resolved;
    const double *energy_j, *coverage, *uncertainty_j;
    const jc_energy_source *source;
    const jc_health *health;
} result_view;

static PyObject *result_dict_of(const result_view *r) {
    int n = r->n < 0 ? 0 : r->n > JC_MAX_DEVICES ? JC_MAX_DEVICES : r->n;
    PyObject *e = PyList_New(n), *s = PyList_New(n), *c = PyList_New(n), *u = PyList_New(n), *h = PyList_New(n);
    int ok = e && s && c && u && h;
    for (int i = 0; ok && i < n; i++) {
        PyObject *items[5] = {PyFloat_FromDouble(r->energy_j[i]),
                              PyUnicode_FromString(jc_energy_source_name(r->source[i])),
                              PyFloat_FromDouble(r->coverage[i]), PyFloat_FromDouble(r->uncertainty_j[i]),
                              PyUnicode_FromString(jc_health_name(r->health[i]))};
        PyObject *lists[5] = {e, s, c, u, h};
        for (int k = 0; k < 5; k++) {
            if (items[k]) PyList_SET_ITEM(lists[k], i, items[k]);
            else ok = 0;
        }
    }
    if (!ok) {
        Py_XDECREF(e);
        Py_XDECREF(s);
        Py_XDECREF(c);
        Py_XDECREF(u);
        Py_XDECREF(h);
        return NULL;
    }
    return Py_BuildValue("{s:K,s:K,s:d,s:N,s:N,s:N,s:N,s:N,s:O}", "start_ns", (unsigned long long)r->start_ns,
                         "stop_ns", (unsigned long long)r->stop_ns, "elapsed_s", r->elapsed_s, "energy_j", e,
                         "source", s, "coverage", c, "uncertainty_j", u, "state", h, "resolved",
                         r->resolved ? Py_True : Py_False);
}

static PyObject *result_dict(const jc_window_result *r, int ok) {
    result_view v = {r->start_ns, r->stop_ns, r->elapsed_s, r->device_count, ok && r->resolved, r->energy_j,
                     r->coverage, r->uncertainty_j, r->source, r->health};
    return result_dict_of(&v);
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

/* csv_status() -> rows written; raises the sampler CSV's write error (the file, the errno text, the rows kept). */
static PyObject *Context_csv_status(ContextObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!check_open(self)) return NULL;
    uint64_t rows = 0;
    jc_status st = jc_csv_status(self->ctx, &rows);
    if (st != JC_OK) return raise_status(st, jc_last_detail(), "csv_status");
    return PyLong_FromUnsignedLongLong(rows);
}

/* csv_close() -> rows written: the last row, the file closed; raises the sink's error. */
static PyObject *Context_csv_close(ContextObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!check_open(self)) return NULL;
    jc_status st;
    uint64_t rows = 0;
    char detail[1024] = "";
    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    st = jc_csv_close(self->ctx, &rows);
    if (st != JC_OK) snprintf(detail, sizeof detail, "%s", jc_last_detail());
    Py_END_ALLOW_THREADS
    self->busy--;
    if (st != JC_OK) return raise_status(st, detail, "csv_close");
    return PyLong_FromUnsignedLongLong(rows);
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
    {"csv_status", (PyCFunction)Context_csv_status, METH_NOARGS,
     "csv_status()\n--\n\nRows of the sampler CSV written so far; raises the sink's write error."},
    {"csv_close", (PyCFunction)Context_csv_close, METH_NOARGS,
     "csv_close()\n--\n\nWrites the last row and closes the sampler CSV; returns the rows written, raises the "
     "sink's write error."},
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

PyTypeObject ContextType = {
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
    result_view v = {p->start_ns, p->stop_ns, p->elapsed_s, p->ndev, p->resolved, p->energy_j,
                     p->coverage, p->uncertainty_j, p->source, p->health};
    return result_dict_of(&v);
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

PyTypeObject PendingType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "joulecap._joulecap.Pending",
    .tp_basicsize = sizeof(PendingObject),
    .tp_dealloc = (destructor)Pending_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The result of a stopped window, resolved by the context's resolver thread.",
    .tp_methods = Pending_methods,
    .tp_getset = Pending_getset,
};
