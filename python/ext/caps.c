/* ------------------------------------------------------------------------------------------------------ */
/* Power caps: jc_cap_* (docs/caps.md).                                                                   */
#include "ext.h"

static PyObject *str_or_none(const char *s) {
    if (!s || !*s) Py_RETURN_NONE;
    return PyUnicode_DecodeUTF8(s, (Py_ssize_t)strlen(s), "replace");
}

static PyObject *none_ref(void) {
    Py_INCREF(Py_None);
    return Py_None;
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
        set_item(d, "owner_user", str_or_none(i->owner_user)) ||
        set_item(d, "owner_uid", i->owner_user[0] ? PyLong_FromUnsignedLong(i->owner_uid) : none_ref()) ||
        set_item(d, "owner_command", str_or_none(i->owner_command)) ||
        set_item(d, "journal_created", PyFloat_FromDouble(i->journal_created)) ||
        set_item(d, "journal_path", str_or_none(i->journal_path)) ||
        set_item(d, "status", PyUnicode_FromString(jc_status_name(i->status))) ||
        set_item(d, "error", str_or_none(i->error))) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

/* A list of cap_info_dict()s, or NULL with the exception set. */
static PyObject *cap_info_list(const jc_cap_info *info, int n) {
    PyObject *list = PyList_New(n);
    for (int i = 0; list && i < n; i++) {
        PyObject *d = cap_info_dict(&info[i]);
        if (!d) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, d);
    }
    return list;
}

/* Parses (selection, *, state_dir=None) by fmt ("s|$z:name" for one GPU, "|z$z:name" for a list) into o. */
static int parse_cap_args(PyObject *args, PyObject *kwds, const char *fmt, const char **sel, jc_cap_options *o) {
    static char *kw_gpu[] = {"gpu", "state_dir", NULL};
    static char *kw_gpus[] = {"gpus", "state_dir", NULL};
    const char *state_dir = NULL;
    jc_cap_options_init(o);
    if (!PyArg_ParseTupleAndKeywords(args, kwds, fmt, fmt[0] == 's' ? kw_gpu : kw_gpus, sel, &state_dir)) return 0;
    o->state_dir = state_dir;
    return 1;
}

/* st = call, run without the GIL; on failure detail (a char array) gets this thread's jc_last_detail(). */
#define CAP_CALL(st, detail, call)                                                                  \
    do {                                                                                            \
        Py_BEGIN_ALLOW_THREADS                                                                      \
        (st) = (call);                                                                              \
        if ((st) != JC_OK) snprintf((detail), sizeof(detail), "%s", jc_last_detail());              \
        Py_END_ALLOW_THREADS                                                                        \
    } while (0)

/* cap_route() -> (True, "joulecapd (PATH)") through the daemon, (False, "direct NVML") otherwise. */
PyObject *mod_cap_route(PyObject *m, PyObject *unused) {
    (void)m;
    (void)unused;
    char text[600];
    int d = jc_cap_route(text, sizeof text);
    return Py_BuildValue("(Ns)", PyBool_FromLong(d), text);
}

/* cap_list(gpus=None, *, state_dir=None) -> list of dicts (limits in W and who manages them). */
PyObject *mod_cap_list(PyObject *m, PyObject *args, PyObject *kwds) {
    (void)m;
    jc_cap_options o;
    if (!parse_cap_args(args, kwds, "|z$z:cap_list", &o.gpus, &o)) return NULL;
    enum { MAXG = 64 };
    jc_cap_info *info = calloc(MAXG, sizeof *info);
    if (!info) return PyErr_NoMemory();
    int n = 0;
    jc_status st;
    char detail[1024] = "";
    CAP_CALL(st, detail, jc_cap_list(&o, info, MAXG, &n));
    PyObject *list = st == JC_OK ? cap_info_list(info, n) : raise_status(st, detail, "cap");
    free(info);
    return list;
}

/* cap_get(gpu, *, state_dir=None) -> dict for one GPU ("0", "GPU-8f3c..."). */
PyObject *mod_cap_get(PyObject *m, PyObject *args, PyObject *kwds) {
    (void)m;
    const char *gpu = NULL;
    jc_cap_options o;
    if (!parse_cap_args(args, kwds, "s|$z:cap_get", &gpu, &o)) return NULL;
    jc_cap_info info;
    jc_status st;
    char detail[1024] = "";
    CAP_CALL(st, detail, jc_cap_info_get(gpu, &o, &info));
    if (st != JC_OK) return raise_status(st, detail, "cap");
    return cap_info_dict(&info);
}

/* cap_reset(gpu, *, state_dir=None) -> dict(did, limit_w, note): outside any session (jc_cap_reset). */
PyObject *mod_cap_reset(PyObject *m, PyObject *args, PyObject *kwds) {
    (void)m;
    const char *gpu = NULL;
    jc_cap_options o;
    if (!parse_cap_args(args, kwds, "s|$z:cap_reset", &gpu, &o)) return NULL;
    jc_cap_reset_kind did = JC_CAP_RESET_NONE;
    double limit = NAN;
    char note[1024] = "", detail[1024] = "";
    jc_status st;
    CAP_CALL(st, detail, jc_cap_reset(gpu, &o, &did, &limit, note, sizeof note));
    if (st != JC_OK) return raise_status(st, detail, "cap");
    return Py_BuildValue("{s:s,s:d,s:s}", "did", jc_cap_reset_kind_name(did), "limit_w", limit, "note", note);
}

/* cap_restore(gpus=None, *, state_dir=None) -> list of dicts: repairs stale and persistent journals. */
PyObject *mod_cap_restore(PyObject *m, PyObject *args, PyObject *kwds) {
    (void)m;
    jc_cap_options o;
    if (!parse_cap_args(args, kwds, "|z$z:cap_restore", &o.gpus, &o)) return NULL;
    enum { MAXE = 64 };
    jc_cap_restore_entry *e = calloc(MAXE, sizeof *e);
    if (!e) return PyErr_NoMemory();
    int n = 0;
    jc_status st;
    char detail[1024] = "";
    CAP_CALL(st, detail, jc_cap_restore(&o, e, MAXE, &n));
    if (st != JC_OK && n == 0) {
        free(e);
        return raise_status(st, detail, "cap");
    }
    PyObject *list = PyList_New(n);
    for (int i = 0; list && i < n; i++) {
        PyObject *status = status_or_none(e[i].status);
        PyObject *d = status ? Py_BuildValue("{s:s,s:i,s:s,s:N,s:d,s:i,s:s,s:s}", "uuid", e[i].uuid, "index",
                                             e[i].index, "action", jc_cap_restore_action_name(e[i].action), "status", status,
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
    CAP_CALL(st, detail, jc_cap_session_open(&o, &s));
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
    CAP_CALL(st, detail, jc_cap_session_set(self->s, gpu, watts));
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
    CAP_CALL(st, detail, jc_cap_session_reset(self->s, gpu, &did));
    self->busy--;
    if (st != JC_OK) return raise_status(st, detail, "cap");
    return PyUnicode_FromString(jc_cap_reset_kind_name(did));
}

static PyObject *CapSession_restore(CapSessionObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!cap_session_check(self)) return NULL;
    jc_status st;
    char detail[1024] = "";
    self->busy++;
    CAP_CALL(st, detail, jc_cap_session_restore(self->s));
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
        st = jc_cap_session_info_get(self->s, i, &info[i]);
        if (st != JC_OK) snprintf(detail, sizeof detail, "%s", jc_last_detail());
    }
    Py_END_ALLOW_THREADS
    self->busy--;
    PyObject *list = st == JC_OK ? cap_info_list(info, n) : raise_status(st, detail, "cap");
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

PyTypeObject CapSessionType = {
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
