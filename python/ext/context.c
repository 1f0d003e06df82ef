/* Context and Pending: the measurement bindings of the _joulecap extension, a thin layer over joulecap.h.
 *
 * The library writes the window CSV itself (jc_options.window_csv_path, jc_window_finish): stop() hands the
 * window over and returns a Pending at once; the row lands in the file about one counter step later without
 * the Python program calling in again.  A Pending fetches its result from the library when asked (releasing
 * the window then), or when its context closes.
 *
 * Thread rules: every call that may block (jc_open, jc_close, result waits) releases the GIL.  jc_close must
 * not race with another call on the context, so calls that run without the GIL count themselves in `busy`
 * and close() refuses while any is in flight.  After fork() the child has none of the library's threads: a
 * context inherited through fork is unusable there and is dropped without touching it. */
#include "ext.h"

/* Longest wait for one window's values when the caller sets no timeout: a stalled device is cut after
 * stall_s, so this bound only matters when something is badly wrong. */
#define RESOLVE_TIMEOUT_S 10.0

/* ------------------------------------------------------------------------------------------------------ */
/* Context                                                                                                */

typedef struct PendingObject PendingObject;

typedef struct {
    PyObject_HEAD
    jc_context *ctx;
    char *window_csv;
    int fork_gen;
    int busy; /* calls running without the GIL (guarded by the GIL) */
    int forked_away;
    PendingObject *pendings; /* results not yet fetched (a list linked through the Pendings, GIL held) */
    PyObject *weakreflist;
} ContextObject;

struct PendingObject {
    PyObject_HEAD
    ContextObject *owner;
    jc_window w;
    char *name;
    PyObject *result;    /* the dict, once fetched (the window is released then) */
    jc_status status;    /* of a fetch that failed for good */
    PendingObject *prev, *next;
};


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
    o.window_csv_path = window_csv;
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
    if (window_csv && !(self->window_csv = strdup(window_csv))) {
        Py_BEGIN_ALLOW_THREADS
        jc_close(ctx);
        Py_END_ALLOW_THREADS
        PyErr_NoMemory();
        return -1;
    }
    self->fork_gen = atomic_load(&fork_generation);
    self->ctx = ctx;
    return 0;
}

static int pending_fetch(PendingObject *self, double timeout);

/* Closes everything; the GIL is released around the joins.  Results not yet fetched are fetched first, so that
 * a Measurement read after its tool closed still has its values. */
static void context_close(ContextObject *self) {
    if (self->ctx && self->fork_gen != atomic_load(&fork_generation)) {
        self->forked_away = 1;
        self->ctx = NULL;
    }
    jc_context *ctx = self->ctx;
    if (!ctx) return;
    while (self->pendings) {
        PendingObject *p = self->pendings;
        Py_INCREF(p);
        if (pending_fetch(p, RESOLVE_TIMEOUT_S) < 0) PyErr_Clear();
        if (self->pendings == p) { /* failed for good: unlink, it keeps its status */
            self->pendings = p->next;
            if (p->next) p->next->prev = NULL;
            p->next = p->prev = NULL;
        }
        Py_DECREF(p);
    }
    self->ctx = NULL;
    Py_BEGIN_ALLOW_THREADS
    jc_close(ctx);
    Py_END_ALLOW_THREADS
}

static void Context_dealloc(ContextObject *self) {
    if (self->weakreflist) PyObject_ClearWeakRefs((PyObject *)self);
    context_close(self);
    free(self->window_csv);
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
    if (!self->window_csv) Py_RETURN_NONE;
    return PyUnicode_DecodeFSDefault(self->window_csv);
}

/* --- devices ------------------------------------------------------------------------------------------ */

/* The Python dicts keep 0.0 for an unknown power limit, as before the C API gave NaN for it. */
static double limit_or_zero(double w) { return isnan(w) ? 0.0 : w; }

static PyObject *device_dict(const jc_device_info *i) {
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    if (set_item(d, "kind", PyUnicode_FromString(jc_device_kind_name(i->kind))) ||
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
        set_item(d, "limit_w", PyFloat_FromDouble(limit_or_zero(i->limit_w))) ||
        set_item(d, "enforced_limit_w", PyFloat_FromDouble(limit_or_zero(i->enforced_limit_w))) ||
        set_item(d, "default_limit_w", PyFloat_FromDouble(limit_or_zero(i->default_limit_w))) ||
        set_item(d, "min_limit_w", PyFloat_FromDouble(limit_or_zero(i->min_limit_w))) ||
        set_item(d, "max_limit_w", PyFloat_FromDouble(limit_or_zero(i->max_limit_w))) ||
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

/* stop_pending(window) -> Pending: stops the window now and hands it to the library's window CSV (when the
 * context has one), which writes its row once its values are known.  The window id is not valid afterwards. */
static PyObject *Context_stop_pending(ContextObject *self, PyObject *arg) {
    uint64_t t = jc_now_ns();
    if (!check_open(self)) return NULL;
    jc_window w;
    if (!parse_window(arg, &w)) return NULL;
    const char *name = jc_window_name(self->ctx, w);
    char *copy = name ? strdup(name) : NULL;
    if (name && !copy) return PyErr_NoMemory();
    jc_status st = jc_window_finish(self->ctx, w, t);
    if (st != JC_OK) {
        free(copy);
        return raise_last(st, "stop");
    }
    PendingObject *po = PyObject_New(PendingObject, &PendingType);
    if (!po) {
        free(copy);
        jc_window_release(self->ctx, w);
        return NULL;
    }
    Py_INCREF(self);
    po->owner = self;
    po->w = w;
    po->name = copy;
    po->result = NULL;
    po->status = JC_OK;
    po->prev = NULL;
    po->next = self->pendings;
    if (self->pendings) self->pendings->prev = po;
    self->pendings = po;
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

/* job_report(window, job=None, timeout=0.0, force=False) -> None while a stopped window's values are not
 * known (the window is kept; force: report what is known); else (status_name, detail) of jc_job_report and the
 * window released.  The daemon's answer is returned, never raised: job energy is best effort. */
static PyObject *Context_job_report(ContextObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"window", "job", "timeout", "force", NULL};
    long long w;
    const char *job = NULL;
    double timeout = 0.0;
    int force = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "L|zdp:job_report", kwlist, &w, &job, &timeout, &force))
        return NULL;
    if (!check_open(self) || !check_timeout(timeout)) return NULL;
    jc_window_result r;
    jc_status st, rs = JC_OK;
    char detail[1024] = "";
    int done;
    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    st = jc_window_result_get(self->ctx, (jc_window)w, timeout, &r);
    done = st != JC_ERR_TIMEOUT || force;
    if (st == JC_OK || (st == JC_ERR_TIMEOUT && force)) rs = jc_job_report(self->ctx, job, &r);
    else if (st != JC_ERR_TIMEOUT) rs = st;
    if (rs != JC_OK) snprintf(detail, sizeof detail, "%s", jc_last_detail());
    if (done) jc_window_release(self->ctx, (jc_window)w);
    Py_END_ALLOW_THREADS
    self->busy--;
    if (!done) Py_RETURN_NONE;
    return Py_BuildValue("(ss)", rs == JC_OK ? "OK" : jc_status_name(rs), detail);
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

/* energy_at(times_ns, timeout=10.0) -> (rows, complete): rows[k] = [J per device] at times_ns[k] (cumulative
 * since the context opened; NaN where not covered); complete is False when the samples after the latest instant
 * had not arrived within timeout. */
static PyObject *Context_energy_at(ContextObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"times_ns", "timeout", NULL};
    PyObject *seq_o;
    double timeout = RESOLVE_TIMEOUT_S;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|d:energy_at", kwlist, &seq_o, &timeout)) return NULL;
    if (!check_open(self) || !check_timeout(timeout)) return NULL;
    PyObject *seq = PySequence_Fast(seq_o, "energy_at: times_ns must be a sequence of ints (ns)");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int nd = jc_device_count(self->ctx);
    uint64_t *t = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *t);
    double *e = PyMem_Malloc((size_t)(n ? n : 1) * (size_t)nd * sizeof *e);
    if (!t || !e) {
        PyMem_Free(t);
        PyMem_Free(e);
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        t[k] = PyLong_AsUnsignedLongLong(PySequence_Fast_GET_ITEM(seq, k));
        if (PyErr_Occurred()) {
            PyMem_Free(t);
            PyMem_Free(e);
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_DECREF(seq);
    jc_status st;
    char detail[1024] = "";
    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    st = jc_energy_at(self->ctx, t, (size_t)n, timeout, e);
    if (st != JC_OK) snprintf(detail, sizeof detail, "%s", jc_last_detail());
    Py_END_ALLOW_THREADS
    self->busy--;
    PyMem_Free(t);
    if (st != JC_OK && st != JC_ERR_TIMEOUT) {
        PyMem_Free(e);
        return raise_status(st, detail, "energy_at");
    }
    PyObject *rows = PyList_New(n);
    for (Py_ssize_t k = 0; rows && k < n; k++) {
        PyObject *row = PyList_New(nd);
        if (!row) {
            Py_CLEAR(rows);
            break;
        }
        for (int i = 0; i < nd; i++) {
            PyObject *v = PyFloat_FromDouble(e[(size_t)k * (size_t)nd + (size_t)i]);
            if (!v) {
                Py_DECREF(row);
                Py_CLEAR(rows);
                break;
            }
            PyList_SET_ITEM(row, i, v);
        }
        if (rows) PyList_SET_ITEM(rows, k, row);
    }
    PyMem_Free(e);
    if (!rows) return NULL;
    return Py_BuildValue("(NO)", rows, st == JC_OK ? Py_True : Py_False);
}

static PyObject *Context_read_latest(ContextObject *self, PyObject *arg) {
    if (!check_open(self)) return NULL;
    long dev = PyLong_AsLong(arg);
    if (dev == -1 && PyErr_Occurred()) return NULL;
    jc_reading r;
    jc_status st = jc_reading_get(self->ctx, (int)dev, &r);
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

/* flush(timeout=None) -> bool: waits until every stopped window's row is written; True when none is left. */
static PyObject *Context_flush(ContextObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"timeout", NULL};
    PyObject *timeout_o = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:flush", kwlist, &timeout_o)) return NULL;
    double timeout = 1e6;
    if (timeout_o != Py_None) {
        timeout = PyFloat_AsDouble(timeout_o);
        if (timeout == -1 && PyErr_Occurred()) return NULL;
        if (!check_timeout(timeout)) return NULL;
    }
    if (!check_open(self)) return NULL;
    if (!self->window_csv) Py_RETURN_TRUE;
    jc_status st;
    size_t left = 0;
    char detail[1024] = "";
    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    st = jc_window_csv_flush(self->ctx, timeout, &left);
    if (st != JC_OK) snprintf(detail, sizeof detail, "%s", jc_last_detail());
    Py_END_ALLOW_THREADS
    self->busy--;
    if (st == JC_ERR_TIMEOUT) Py_RETURN_FALSE;
    if (st != JC_OK) return raise_status(st, detail, "write");
    Py_RETURN_TRUE;
}

/* window_csv_status(): raises the window CSV's write error, if it had one; cheap. */
static PyObject *Context_window_csv_status(ContextObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!check_open(self)) return NULL;
    if (!self->window_csv) Py_RETURN_NONE;
    jc_status st = jc_window_csv_flush(self->ctx, 0.0, NULL);
    if (st != JC_OK && st != JC_ERR_TIMEOUT) return raise_status(st, jc_last_detail(), "write");
    Py_RETURN_NONE;
}

static PyObject *Context_get_pending_count(ContextObject *self, void *closure) {
    (void)closure;
    if (!self->ctx || !self->window_csv) return PyLong_FromLong(0);
    size_t n = 0;
    (void)jc_window_csv_flush(self->ctx, 0.0, &n); /* JC_ERR_TIMEOUT while rows are due */
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
     "stop_pending(window)\n--\n\nCloses a window now and hands it to the library's window CSV, which writes its row "
     "once its values are known.  Returns a Pending; the window is released when its result is fetched."},
    {"result", (PyCFunction)(void (*)(void))Context_result, METH_VARARGS | METH_KEYWORDS,
     "result(window, timeout=10.0)\n--\n\nWaits for a stopped window's samples; returns a dict."},
    {"release", (PyCFunction)Context_release, METH_O, "release(window)\n--\n\nForgets a window."},
    {"job_report", (PyCFunction)(void (*)(void))Context_job_report, METH_VARARGS | METH_KEYWORDS,
     "job_report(window, job=None, timeout=0.0, force=False)\n--\n\nAdds a stopped window's GPU energy to the job's "
     "totals at joulecapd (jc_job_report) and releases it: (status_name, detail), or None while its values are not "
     "known."},
    {"window_name", (PyCFunction)Context_window_name, METH_O, "window_name(window)\n--\n\nThe window's name."},
    {"energy_between", (PyCFunction)(void (*)(void))Context_energy_between, METH_VARARGS | METH_KEYWORDS,
     "energy_between(t0_ns, t1_ns, timeout=10.0)\n--\n\nEnergy per device between two jc_now_ns() times."},
    {"read_latest", (PyCFunction)Context_read_latest, METH_O,
     "read_latest(device)\n--\n\nLatest sample of a device (0 = CPU): dict of t_ns, energy_j, power_w, util_pct, "
     "temp_c (NaN where unreadable)."},
    {"sync", (PyCFunction)(void (*)(void))Context_sync, METH_VARARGS | METH_KEYWORDS,
     "sync(t_ns=now, timeout=10.0)\n--\n\nWaits until the sampler has taken a sample after t_ns."},
    {"csv_sync", (PyCFunction)Context_csv_sync, METH_NOARGS, "csv_sync()\n--\n\nFlushes and fsyncs the sampler CSV."},
    {"window_csv_status", (PyCFunction)Context_window_csv_status, METH_NOARGS,
     "window_csv_status()\n--\n\nRaises the window CSV's write error, if it had one."},
    {"energy_at", (PyCFunction)(void (*)(void))Context_energy_at, METH_VARARGS | METH_KEYWORDS,
     "energy_at(times_ns, timeout=10.0)\n--\n\nCumulative energy per device at many instants in one call: "
     "(rows, complete)."},
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

static void pending_unlink(PendingObject *self) {
    ContextObject *o = self->owner;
    if (self->prev) self->prev->next = self->next;
    else if (o && o->pendings == self) o->pendings = self->next;
    if (self->next) self->next->prev = self->prev;
    self->prev = self->next = NULL;
}

static void Pending_dealloc(PendingObject *self) {
    ContextObject *o = self->owner;
    int linked = o && (o->pendings == self || self->prev);
    if (linked) {
        pending_unlink(self);
        if (o->ctx && o->fork_gen == atomic_load(&fork_generation)) jc_window_release(o->ctx, self->w);
    }
    Py_XDECREF(self->result);
    free(self->name);
    Py_XDECREF(o);
    PyObject_Free(self);
}

/* Fetches the result (timeout < 0: the default bound).  1 fetched, 0 not yet, -1 error set. */
static int pending_fetch(PendingObject *self, double timeout) {
    if (self->result) return 1;
    ContextObject *o = self->owner;
    if (self->status != JC_OK) {
        raise_status(self->status, "the window could not be resolved: its context was closed first", "result");
        return -1;
    }
    if (!o->ctx || o->fork_gen != atomic_load(&fork_generation)) {
        raise_state(o->ctx ? "this result belongs to a joulecap context of the parent process (before fork())"
                           : "this result's joulecap context was closed before its values were known");
        return -1;
    }
    int forever = timeout < 0;
    jc_window_result r;
    jc_status st;
    char detail[1024] = "";
    o->busy++;
    Py_BEGIN_ALLOW_THREADS
    st = jc_window_result_get(o->ctx, self->w, forever ? RESOLVE_TIMEOUT_S : timeout, &r);
    if (st != JC_OK) snprintf(detail, sizeof detail, "%s", jc_last_detail());
    Py_END_ALLOW_THREADS
    o->busy--;
    /* Past the bound, the best estimate so far (resolved False) is the result. */
    if (st == JC_ERR_TIMEOUT && !forever) return 0;
    if (st != JC_OK && st != JC_ERR_TIMEOUT) {
        self->status = st;
        pending_unlink(self);
        raise_status(st, detail, "result");
        return -1;
    }
    self->result = result_dict(&r, st == JC_OK);
    if (!self->result) return -1;
    pending_unlink(self);
    jc_window_release(o->ctx, self->w);
    return 1;
}

static PyObject *Pending_get_ready(PendingObject *self, void *closure) {
    (void)closure;
    if (self->result) Py_RETURN_TRUE;
    if (self->status != JC_OK || !self->owner->ctx) Py_RETURN_FALSE;
    int rc = pending_fetch(self, 0.0);
    if (rc < 0) return NULL;
    return PyBool_FromLong(rc);
}

static PyObject *Pending_get_name(PendingObject *self, void *closure) {
    (void)closure;
    if (!self->name) Py_RETURN_NONE;
    return PyUnicode_FromString(self->name);
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
    int rc = pending_fetch(self, timeout);
    if (rc < 0) return NULL;
    if (rc == 0) Py_RETURN_NONE;
    Py_INCREF(self->result);
    return self->result;
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
    .tp_doc = "The result of a stopped window, fetched from the library when asked for.",
    .tp_methods = Pending_methods,
    .tp_getset = Pending_getset,
};
