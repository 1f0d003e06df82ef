/* Status codes, their texts, and the per-thread failure detail behind jc_last_detail(). */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

static _Thread_local char detail_buf[1024];

const char *jc_strerror(jc_status status) {
    switch (status) {
    case JC_OK: return "success";
    case JC_ERR_INVALID_ARGUMENT: return "invalid argument";
    case JC_ERR_NO_MEMORY: return "out of memory";
    case JC_ERR_NOT_FOUND: return "not found";
    case JC_ERR_NOT_SUPPORTED: return "not supported";
    case JC_ERR_NO_PERMISSION: return "permission denied";
    case JC_ERR_IO: return "input/output error";
    case JC_ERR_NVML: return "NVML error";
    case JC_ERR_STATE: return "call out of order";
    case JC_ERR_TIMEOUT: return "timed out";
    case JC_ERR_GPU_LOST: return "GPU lost";
    case JC_ERR_UNAVAILABLE: return "source unavailable";
    case JC_ERR_BUSY: return "resource owned by another process";
    case JC_ERR_THREAD: return "cannot start thread";
    }
    return "unknown status";
}

const char *jc_status_name(jc_status status) {
    switch (status) {
    case JC_OK: return "JC_OK";
    case JC_ERR_INVALID_ARGUMENT: return "JC_ERR_INVALID_ARGUMENT";
    case JC_ERR_NO_MEMORY: return "JC_ERR_NO_MEMORY";
    case JC_ERR_NOT_FOUND: return "JC_ERR_NOT_FOUND";
    case JC_ERR_NOT_SUPPORTED: return "JC_ERR_NOT_SUPPORTED";
    case JC_ERR_NO_PERMISSION: return "JC_ERR_NO_PERMISSION";
    case JC_ERR_IO: return "JC_ERR_IO";
    case JC_ERR_NVML: return "JC_ERR_NVML";
    case JC_ERR_STATE: return "JC_ERR_STATE";
    case JC_ERR_TIMEOUT: return "JC_ERR_TIMEOUT";
    case JC_ERR_GPU_LOST: return "JC_ERR_GPU_LOST";
    case JC_ERR_UNAVAILABLE: return "JC_ERR_UNAVAILABLE";
    case JC_ERR_BUSY: return "JC_ERR_BUSY";
    case JC_ERR_THREAD: return "JC_ERR_THREAD";
    }
    return "JC_ERR_UNKNOWN";
}

const char *jc_last_detail(void) { return detail_buf; }

const char *jc_version(void) { return JC_VERSION_STRING; }

jc_status jc__check_size(size_t size, size_t want, const char *type) {
    if (size == want) return JC_OK;
    return jc__fail(JC_ERR_INVALID_ARGUMENT,
                    "%s.size is %zu, this library's %s has %zu bytes: fill it with %s_init() first%s", type, size,
                    type, want, type, size ? " (or the program was built against another joulecap.h)" : "");
}

jc_status jc__fail(jc_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail_buf, sizeof detail_buf, fmt, ap);
    va_end(ap);
    return status;
}

jc_status jc__fail_why(jc_status status, char *why, size_t whylen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail_buf, sizeof detail_buf, fmt, ap);
    va_end(ap);
    if (why && whylen) jc__fmt(why, whylen, "%s", detail_buf);
    return status;
}

int jc__path(char *buf, size_t len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, len, fmt, ap);
    va_end(ap);
    return n >= 0 && (size_t)n < len;
}

void jc__clear_detail(void) { detail_buf[0] = '\0'; }

void jc__fmt(char *buf, size_t len, const char *fmt, ...) {
    if (len == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}
