/* Raw NVML trace for offline analysis (read-only): thread A reads nvmlDeviceGetTotalEnergyConsumption back to
 * back; thread B reads the fields 186 (instant power) and 185 (average power)
 * in one nvmlDeviceGetFieldValues call every PERIOD_MS.  Writes two CSV files.
 *   trace_dump SECONDS PERIOD_MS counter.csv fields.csv [STOP_FILE]
 * Self-contained (NVML loader only): gcc -O2 -Iinclude -Isrc bench/trace_dump.c src/sources/nvml.c
 *   src/core/status.c src/core/files.c -ldl -lpthread */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sources/nvml.h"

static uint64_t jc_now_ns_(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
#define jc_now_ns jc_now_ns_

static jc__nvml *nvml;
static nvmlDevice_t dev;
static volatile int stop_flag;

static void *counter_main(void *arg) {
    FILE *f = arg;
    fprintf(f, "t_before_ns,t_after_ns,energy_mj\n");
    while (!stop_flag) {
        unsigned long long mj = 0;
        uint64_t a = jc_now_ns();
        nvmlReturn_t r = nvml->nvmlDeviceGetTotalEnergyConsumption(dev, &mj);
        uint64_t b = jc_now_ns();
        if (r == NVML_SUCCESS) fprintf(f, "%llu,%llu,%llu\n", (unsigned long long)a, (unsigned long long)b, mj);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 5) return 2;
    double seconds = atof(argv[1]), period_ms = atof(argv[2]);
    char why[512];
    if (jc__nvml_open(&nvml, why, sizeof why) != JC_OK) {
        fprintf(stderr, "%s\n", why);
        return 1;
    }
    nvml->nvmlDeviceGetHandleByIndex_v2(0, &dev);
    FILE *fc = fopen(argv[3], "w"), *ff = fopen(argv[4], "w");
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    uint64_t mono = jc_now_ns();
    fprintf(ff, "# realtime_minus_mono_us=%lld\n",
            (long long)((int64_t)rt.tv_sec * 1000000 + rt.tv_nsec / 1000) - (long long)(mono / 1000));
    fprintf(ff, "t_before_ns,t_after_ns,f83_ret,f83_ts,f83_val,f191_ret,f191_ts,f191_val,f186_ret,f186_ts,f186_val,"
                "f185_ret,f185_ts,f185_val\n");
    pthread_t th;
    pthread_create(&th, NULL, counter_main, fc);
    uint64_t end = jc_now_ns() + (uint64_t)(seconds * 1e9);
    unsigned ids[4] = {186, 185, 186, 185};
    const char *stop_file = argc > 5 ? argv[5] : NULL;
    while (jc_now_ns() < end && !(stop_file && access(stop_file, F_OK) == 0)) {
        nvmlFieldValue_t fv[4];
        memset(fv, 0, sizeof fv);
        for (int i = 0; i < 4; i++) fv[i].fieldId = ids[i];
        uint64_t a = jc_now_ns();
        nvml->nvmlDeviceGetFieldValues(dev, 2, fv);
        uint64_t b = jc_now_ns();
        fprintf(ff, "%llu,%llu", (unsigned long long)a, (unsigned long long)b);
        for (int i = 0; i < 4; i++) {
            unsigned long long v = fv[i].valueType == NVML_VALUE_TYPE_UNSIGNED_LONG_LONG ? fv[i].value.ullVal
                                   : fv[i].valueType == NVML_VALUE_TYPE_UNSIGNED_LONG    ? fv[i].value.ulVal
                                                                                        : fv[i].value.uiVal;
            fprintf(ff, ",%d,%lld,%llu", fv[i].nvmlReturn, fv[i].timestamp, v);
        }
        fputc('\n', ff);
        usleep((useconds_t)(period_ms * 1000));
    }
    stop_flag = 1;
    pthread_join(th, NULL);
    /* CPU cost per call, measured alone on this thread. */
    struct timespec c0, c1;
    uint64_t w0 = jc_now_ns();
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    for (int i = 0; i < 100; i++) {
        unsigned long long mj;
        nvml->nvmlDeviceGetTotalEnergyConsumption(dev, &mj);
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
    uint64_t w1 = jc_now_ns();
    fprintf(stderr, "energy read: wall %.3f ms, cpu %.3f ms per call\n", (w1 - w0) / 1e8,
            ((c1.tv_sec - c0.tv_sec) * 1e9 + (c1.tv_nsec - c0.tv_nsec)) / 1e8);
    w0 = jc_now_ns();
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    for (int i = 0; i < 10000; i++) {
        nvmlFieldValue_t fv;
        memset(&fv, 0, sizeof fv);
        fv.fieldId = 186;
        nvml->nvmlDeviceGetFieldValues(dev, 1, &fv);
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
    w1 = jc_now_ns();
    fprintf(stderr, "field 186 read: wall %.4f ms, cpu %.4f ms per call\n", (w1 - w0) / 1e10,
            ((c1.tv_sec - c0.tv_sec) * 1e9 + (c1.tv_nsec - c0.tv_nsec)) / 1e10);
    fclose(fc);
    fclose(ff);
    jc__nvml_close(nvml);
    return 0;
}
