/* ext.h: what the files of the _joulecap extension share (python/ext/).  Internal to the extension; the
 * public surface is the Python module that module.c builds.  Everything here is hidden (-fvisibility=hidden):
 * only PyInit__joulecap leaves the shared object. */
#ifndef JOULECAP_PY_EXT_H
#define JOULECAP_PY_EXT_H

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
#include "joulecap_sim.h"

/* --- module.c ------------------------------------------------------------------------------------------ */

/* Errors: mapped to the classes of joulecap.errors by joulecap.errors._from_status(status, detail, op).
 * Each returns NULL with the exception set. */
PyObject *raise_status(jc_status st, const char *detail, const char *op);
PyObject *raise_last(jc_status st, const char *op);
/* A joulecap.errors.StateError with a message of our own. */
PyObject *raise_state(const char *msg);

/* Fork detection without a getpid() syscall on the hot path: bumped in the child after every fork(). */
extern atomic_int fork_generation;

/* Sets d[key] = v and drops the reference to v; -1 (exception set) when v is NULL or the set fails. */
int set_item(PyObject *d, const char *key, PyObject *v);
/* None for JC_OK, else the status name ('JC_ERR_...'). */
PyObject *status_or_none(jc_status st);

/* --- caps.c: module functions ------------------------------------------------------------------------- */

PyObject *mod_cap_list(PyObject *m, PyObject *args, PyObject *kwds);
PyObject *mod_cap_get(PyObject *m, PyObject *args, PyObject *kwds);
PyObject *mod_cap_reset(PyObject *m, PyObject *args, PyObject *kwds);
PyObject *mod_cap_restore(PyObject *m, PyObject *args, PyObject *kwds);
PyObject *mod_cap_route(PyObject *m, PyObject *unused);

/* --- the types, added to the module by PyInit__joulecap ------------------------------------------------ */

extern PyTypeObject ContextType;    /* context.c */
extern PyTypeObject PendingType;    /* context.c */
extern PyTypeObject CapSessionType; /* caps.c */
extern PyTypeObject SweepType;      /* profiler.c */
extern PyTypeObject ProfilerType;   /* profiler.c */

#endif
