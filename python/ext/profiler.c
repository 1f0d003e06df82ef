/* ------------------------------------------------------------------------------------------------------ */
/* Profiler: jc_profiler_* (docs/profiler.md), sweeps and the simulated GPU.                              */
#include "ext.h"

typedef struct {
    PyObject_HEAD
    jc_sweep *sw;
} SweepObject;


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

PyTypeObject SweepType = {
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
        set_item(d, "energy_saving_ci", PyFloat_FromDouble(r.energy_saving_ci)) ||
        set_item(d, "slowdown_ci", PyFloat_FromDouble(r.slowdown_ci)) ||
        set_item(d, "candidate_cap_w", PyFloat_FromDouble(r.candidate_cap_w)) ||
        set_item(d, "candidate_gain", PyFloat_FromDouble(r.candidate_gain)) ||
        set_item(d, "candidate_gain_ci", PyFloat_FromDouble(r.candidate_gain_ci)) ||
        set_item(d, "measurably_better", PyBool_FromLong(r.measurably_better)) ||
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
                         t->rel_se_objective, "stop_reason", (int)t->stop_reason, "phase", (int)t->phase);
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

PyTypeObject ProfilerType = {
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
