/* _joulecap: the CPython extension behind the `joulecap` package, written against include/joulecap.h only.
 *
 * This file: the module (its functions, types and constants), the error mapping and the helpers the other
 * files share (ext.h).  Context and Pending live in context.c, the cap bindings in caps.c, the profiler
 * bindings in profiler.c. */
#include "ext.h"

/* ------------------------------------------------------------------------------------------------------ */
/* Errors: mapped to the classes of joulecap.errors by joulecap.errors._from_status(status, detail, op).  */

static PyObject *errors_module = NULL;

PyObject *raise_status(jc_status st, const char *detail, const char *op) {
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

PyObject *raise_last(jc_status st, const char *op) { return raise_status(st, jc_last_detail(), op); }

/* A joulecap.errors.StateError with a message of our own. */
PyObject *raise_state(const char *msg) { return raise_status(JC_ERR_STATE, msg, "state"); }

/* ------------------------------------------------------------------------------------------------------ */
/* Fork detection without a getpid() syscall on the hot path.                                             */

atomic_int fork_generation = 0;
static void after_fork_child(void) { atomic_fetch_add(&fork_generation, 1); }

/* ------------------------------------------------------------------------------------------------------ */
/* Dict helpers shared by the bindings.                                                                   */

int set_item(PyObject *d, const char *key, PyObject *v) {
    if (!v) return -1;
    int rc = PyDict_SetItemString(d, key, v);
    Py_DECREF(v);
    return rc;
}

PyObject *status_or_none(jc_status st) {
    if (st == JC_OK) Py_RETURN_NONE;
    return PyUnicode_FromString(jc_status_name(st));
}

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

/* job_name() -> the job of this process ($JOULECAP_JOB, $SLURM_JOB_ID, $TORCHELASTIC_RUN_ID), or None. */
static PyObject *mod_job_name(PyObject *m, PyObject *Py_UNUSED(ignored)) {
    (void)m;
    char buf[256];
    if (jc_job_name(buf, sizeof buf) != JC_OK) Py_RETURN_NONE;
    return PyUnicode_FromString(buf);
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
    {"job_name", mod_job_name, METH_NOARGS,
     "job_name()\n--\n\nThe job of this process ($JOULECAP_JOB, $SLURM_JOB_ID, $TORCHELASTIC_RUN_ID), or None."},
    {"cap_route", mod_cap_route, METH_NOARGS,
     "cap_route()\n--\n\n(True, 'joulecapd (PATH)') when caps go through joulecapd, else (False, 'direct NVML')."},
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
        {"EVERY_STEP", JC_EVERY_STEP},
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
    if (PyModule_AddObject(m, "J_PER_KWH", PyFloat_FromDouble(JC_J_PER_KWH)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddStringConstant(m, "LIB_VERSION", JC_VERSION_STRING) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
