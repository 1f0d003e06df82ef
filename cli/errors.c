/* Errors of the joulecap tool: messages on stderr and the exit codes they mean. */
#include "errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "options.h"

void jc_cli_err(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("joulecap: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int jc_cli_usage_err(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("joulecap: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    if (cmd)
        fprintf(stderr, "Try 'joulecap %s --help' for the options and examples.\n", cmd);
    else
        fprintf(stderr, "Try 'joulecap --help' for the commands and examples.\n");
    return JC_EXIT_USAGE;
}

int jc_cli_exit_for(jc_status st) {
    switch (st) {
    case JC_ERR_INVALID_ARGUMENT:
    case JC_ERR_NOT_FOUND:
    case JC_ERR_NOT_SUPPORTED: return JC_EXIT_USAGE;
    default: return JC_EXIT_FAILURE;
    }
}

int jc_cli_open(jc_context **ctx, const jc_options *opts, const char *cmd) {
    jc_status st = jc_open(ctx, opts);
    if (st == JC_OK) return 0;
    const char *detail = jc_last_detail();
    int code = jc_cli_exit_for(st);
    if (opts->gpus && (st == JC_ERR_NOT_FOUND || st == JC_ERR_INVALID_ARGUMENT || st == JC_ERR_NOT_SUPPORTED) &&
        (strstr(detail, "GPU") || strstr(detail, "CUDA_VISIBLE_DEVICES"))) {
        jc_cli_err("bad GPU selection '--gpu %s': %s", opts->gpus, detail[0] ? detail : jc_strerror(st));
        fprintf(stderr, "Select GPUs as CUDA numbers them (0, 0,2, a UUID such as GPU-8f3c..., all or none); "
                        "'joulecap info' lists them.\n");
    } else if (opts->csv_path && (st == JC_ERR_IO || st == JC_ERR_NO_PERMISSION) && strstr(detail, "CSV")) {
        jc_cli_err("cannot create the output file '%s': %s", opts->csv_path, detail);
    } else if (st == JC_ERR_NOT_SUPPORTED && strstr(detail, "CUDA_VISIBLE_DEVICES")) {
        jc_cli_err("cannot select GPUs: %s", detail);
    } else {
        jc_cli_err("cannot start measuring: %s: %s", jc_strerror(st), detail[0] ? detail : "(no detail)");
        if (code == JC_EXIT_USAGE) fprintf(stderr, "Try 'joulecap %s --help'.\n", cmd);
    }
    return code;
}

int jc_cli_check_gpus(jc_context *ctx, const char *sel) {
    if (!jc_cli_names_gpus(sel) || jc_device_count(ctx) > 1) return 0;
    char version[96] = "", note[1024] = "";
    jc_gpu_driver(ctx, version, sizeof version, note, sizeof note);
    jc_cli_err("--gpu %s selects GPUs, but no GPU can be measured here: %s", sel,
               note[0] ? note : "NVML found no GPU");
    fprintf(stderr, "Run 'joulecap info' to see what is available, or leave out --gpu to measure the CPU only.\n");
    return JC_EXIT_USAGE;
}
