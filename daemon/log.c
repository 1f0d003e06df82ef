/* joulecapd's log (stderr in the foreground, syslog once it went to the background) and its clock.  Any
 * thread may log: the exporter's threads do. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "jcd.h"

static atomic_int use_syslog; /* set once, before any thread: the daemon has no other global */

void jcd_log_to_syslog(void) { atomic_store(&use_syslog, 1); }

double jcd_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void jcd_log(const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (atomic_load(&use_syslog)) {
        syslog(LOG_NOTICE, "%s", msg);
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    time_t t = ts.tv_sec;
    char when[32] = "";
    if (localtime_r(&t, &tm)) strftime(when, sizeof when, "%H:%M:%S", &tm);
    fprintf(stderr, "joulecapd[%d] %s.%03ld: %s\n", (int)getpid(), when, ts.tv_nsec / 1000000L, msg);
}
