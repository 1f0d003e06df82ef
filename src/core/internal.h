/* Internal helpers shared by every layer of libjoulecap (not part of the public API). */
#ifndef JC_INTERNAL_H
#define JC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "joulecap.h"

#if defined(__GNUC__)
#define JC__PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define JC__PRINTF(a, b)
#endif

/* Records the detail text of a failure for jc_last_detail() on this thread and returns status, so that
 * error paths read `return jc__fail(JC_ERR_IO, "cannot open %s: %s", path, strerror(errno));`. */
jc_status jc__fail(jc_status status, const char *fmt, ...) JC__PRINTF(2, 3);
/* jc__fail that also copies the text into a caller's `why` buffer (sources report reasons both ways). */
jc_status jc__fail_why(jc_status status, char *why, size_t whylen, const char *fmt, ...) JC__PRINTF(4, 5);
/* snprintf for paths that reports truncation instead of hiding it: 1 when the whole path fit. */
int jc__path(char *buf, size_t len, const char *fmt, ...) JC__PRINTF(3, 4);
/* Checks the size field of a caller's options struct (joulecap.h, "Conventions"): JC_OK when it is this
 * library's size, else JC_ERR_INVALID_ARGUMENT saying to fill the struct with <type>_init(). */
jc_status jc__check_size(size_t size, size_t want, const char *type);
/* Clears the detail (called at the start of public calls that succeed). */
void jc__clear_detail(void);

/* snprintf into a fixed buffer, never overflowing, always terminated. */
void jc__fmt(char *buf, size_t len, const char *fmt, ...) JC__PRINTF(3, 4);

/* Reads a whole small file (sysfs, procfs) into buf, NUL-terminated, trailing newline stripped.
 * Returns JC_OK, JC_ERR_NOT_FOUND, JC_ERR_NO_PERMISSION or JC_ERR_IO; errno text in why. */
jc_status jc__read_text(const char *path, char *buf, size_t len, char *why, size_t whylen);
/* Reads an unsigned decimal integer from a file (for example energy_uj). */
jc_status jc__read_u64(const char *path, uint64_t *value, char *why, size_t whylen);

/* Root of sysfs and procfs: JOULECAP_SYSFS_ROOT / JOULECAP_PROC_ROOT or "/sys" / "/proc". */
const char *jc__sysfs_root(void);
const char *jc__proc_root(void);

/* Seconds from nanoseconds. */
static inline double jc__s(uint64_t ns) { return (double)ns * 1e-9; }

#endif
