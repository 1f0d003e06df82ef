/* JOULECAP_FAKE=<scenario>: one switch for a fake GPU with private state, for docs, tests and demos
 * (docs/fake-nvml.md).  The NVML source then loads the bundled fake NVML library with that scenario and a state
 * file of this user's own, and cap journals go to a directory beside it, so that nothing real is read or changed
 * and nothing lands in /var/lib/joulecap, even as root. */
#ifndef JC_SOURCES_FAKE_H
#define JC_SOURCES_FAKE_H

#include <stddef.h>

#include "../core/internal.h"

/* The value of JOULECAP_FAKE (read with secure_getenv), or NULL when unset or empty. */
const char *jc__fake_wanted(void);

/* The private directory of this scenario, created when missing (mode 0700):
 * $XDG_RUNTIME_DIR/joulecap-fake-<euid>/<scenario>, or $TMPDIR (default /tmp)/joulecap-fake-<euid>/<scenario>
 * when XDG_RUNTIME_DIR is unset.  Refused (JC_ERR_NO_PERMISSION) when either level is a link, belongs to
 * another user, or others may enter it. */
jc_status jc__fake_dir(char *buf, size_t len);

/* The fake NVML library (libjoulecap-fakenvml.so) and the scenario file JOULECAP_FAKE names: a bundled
 * scenario ("h100" is h100-constant-300w.scn, "h100-sweep" is h100-sweep.scn) from the scenarios folder beside
 * the library, or a path (any value with a '/').  The library is looked for beside the program or shared
 * object this code is part of: in a wheel joulecap/_fake/ (from joulecap/bin/joulecap or the extension module
 * in joulecap/), in a CMake build tree the build folder. */
jc_status jc__fake_nvml(char *lib, size_t liblen, char *scenario, size_t scenariolen);

/* The fake NVML's own entry point for this switch, looked up with dlsym: the scenario and the state file to
 * use in place of JOULECAP_FAKE_NVML_SCENARIO and JOULECAP_FAKE_NVML_STATE (fake/fakenvml.c). */
#define JC__FAKE_CONFIGURE "joulecap_fake_configure"
typedef void (*jc__fake_configure_fn)(const char *scenario, const char *state_path);

#endif
