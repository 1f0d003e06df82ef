/* joulecap info: the devices joulecap can measure, where each energy comes from, and what cannot be read
 * and why. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "options.h"
#include "output.h"

static const char INFO_HELP[] =
    "Usage: joulecap info [--gpu SEL] [--json]\n"
    "\n"
    "Lists what joulecap can measure on this machine: the CPU (name, where its energy comes from: RAPL or an\n"
    "estimate, and why), and each selected GPU in CUDA order (CUDA index, NVML index, name, UUID, PCI bus id,\n"
    "energy source, power limits), the NVIDIA driver version or why NVML could not be loaded, and every\n"
    "quantity that cannot be read with the reason.\n"
    "\n"
    "Options:\n"
    "  --gpu SEL   GPUs to list: all (default), none, CUDA indices (0 or 0,2), UUIDs (GPU-8f3c...)\n"
    "  --json      print the same facts as one JSON object on stdout\n"
    "  -h, --help  this help\n"
    "\n"
    "Examples:\n"
    "  joulecap info\n"
    "  joulecap info --json | python3 -m json.tool\n"
    "  CUDA_VISIBLE_DEVICES=1 joulecap info      # GPU 0 is then the second physical GPU\n"
    "\n"
    "Exit status: 0 (also when there is no GPU or no NVML: that is reported, not an error), 2 bad option or\n"
    "unknown GPU, 3 joulecap failed.\n";

static const char *availability(jc_status st, const char *note, char *buf, size_t len) {
    if (st == JC_OK)
        snprintf(buf, len, "yes%s%s", note[0] ? " - " : "", note);
    else
        snprintf(buf, len, "no - %s%s%s", jc_strerror(st), note[0] ? ": " : "", note);
    return buf;
}

static void print_text(jc_context *ctx, const char *gpus_sel) {
    char buf[512], a[32], b[32], c[32], d[32], e[32];
    char version[96] = "", note[1024] = "";
    jc_status dst = jc_gpu_driver(ctx, version, sizeof version, note, sizeof note);
    int n = jc_device_count(ctx);
    printf("joulecap %s\n\n", jc_version());
    for (int i = 0; i < n; i++) {
        jc_device_info info;
        jc_status st = jc_device_info_get(ctx, i, &info);
        if (st != JC_OK) {
            printf("device %d: cannot describe it: %s\n\n", i, jc_last_detail());
            continue;
        }
        if (info.kind == JC_DEVICE_CPU) {
            printf("CPU: %s\n", info.name);
        } else {
            printf("GPU %d: %s\n", info.index, info.name);
            printf("  NVML index:    %d\n", info.nvml_index);
            printf("  UUID:          %s\n", info.uuid);
            printf("  PCI bus id:    %s\n", info.pci_bus_id);
        }
        if (info.energy_source == JC_SOURCE_ESTIMATE)
            printf("  energy:        estimate (not a measurement) - %s\n", jc_cli_estimate_reason(info.energy_note));
        else
            printf("  energy:        %s%s%s\n", jc_energy_source_name(info.energy_source),
                   info.energy_note[0] ? " - " : "", info.energy_note);
        printf("  state:         %s%s%s\n", jc_health_name(info.health), info.health_note[0] ? " - " : "",
               info.health_note);
        printf("  power:         %s\n", availability(info.power_status, info.power_note, buf, sizeof buf));
        printf("  utilisation:   %s\n", availability(info.util_status, info.util_note, buf, sizeof buf));
        printf("  temperature:   %s\n", availability(info.temp_status, info.temp_note, buf, sizeof buf));
        if (info.kind == JC_DEVICE_GPU) {
            printf("  power limit:   %s W (enforced %s W, default %s W, settable %s-%s W)\n",
                   jc_cli_fmt(a, sizeof a, info.limit_w, 1),
                   jc_cli_fmt(b, sizeof b, info.enforced_limit_w, 1),
                   jc_cli_fmt(c, sizeof c, info.default_limit_w, 1),
                   jc_cli_fmt(d, sizeof d, info.min_limit_w, 1),
                   jc_cli_fmt(e, sizeof e, info.max_limit_w, 1));
        }
        printf("\n");
    }
    const char *fake = secure_getenv("JOULECAP_FAKE");
    if (dst == JC_OK) {
        printf("NVIDIA driver: %s; %d GPU%s selected\n", version[0] ? version : "(version unknown)", n - 1,
               n - 1 == 1 ? "" : "s");
        if (fake && *fake)
            printf("fake GPUs: JOULECAP_FAKE=%s, joulecap's fake NVML; nothing real is measured or changed\n", fake);
        if (note[0]) printf("note: %s\n", note);
    } else {
        printf("NVML: absent, GPUs cannot be measured - %s\n", note[0] ? note : jc_strerror(dst));
        printf("      The CPU is still measured.\n");
        if (jc_cli_names_gpus(gpus_sel)) printf("note: --gpu %s selects GPUs, but NVML is not available\n", gpus_sel);
    }
}

static void json_device(FILE *f, const jc_device_info *info) {
    int first = 1;
    fputc('{', f);
    jc_json_key(f, &first, "kind");
    jc_json_str(f, jc_device_kind_name(info->kind));
    jc_json_key(f, &first, "index");
    if (info->kind == JC_DEVICE_CPU) fputs("null", f);
    else fprintf(f, "%d", info->index);
    jc_json_key(f, &first, "nvml_index");
    if (info->kind == JC_DEVICE_CPU) fputs("null", f);
    else fprintf(f, "%d", info->nvml_index);
    jc_json_key(f, &first, "name");
    jc_json_str(f, info->name);
    if (info->kind == JC_DEVICE_GPU) {
        jc_json_key(f, &first, "uuid");
        jc_json_str(f, info->uuid);
        jc_json_key(f, &first, "pci_bus_id");
        jc_json_str(f, info->pci_bus_id);
    }
    jc_json_key(f, &first, "energy_source");
    jc_json_str(f, jc_energy_source_name(info->energy_source));
    jc_json_key(f, &first, "energy_note");
    jc_json_str(f, info->energy_note);
    jc_json_key(f, &first, "state");
    jc_json_str(f, jc_health_name(info->health));
    jc_json_key(f, &first, "state_note");
    jc_json_str(f, info->health_note);
    const struct {
        const char *key;
        jc_status st;
        const char *note;
    } q[] = {{"power", info->power_status, info->power_note},
             {"utilisation", info->util_status, info->util_note},
             {"temperature", info->temp_status, info->temp_note}};
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        jc_json_key(f, &first, q[i].key);
        int f2 = 1;
        fputc('{', f);
        jc_json_key(f, &f2, "available");
        fputs(q[i].st == JC_OK ? "true" : "false", f);
        jc_json_key(f, &f2, "status");
        jc_json_str(f, jc_status_name(q[i].st));
        jc_json_key(f, &f2, "note");
        jc_json_str(f, q[i].note);
        fputc('}', f);
    }
    if (info->kind == JC_DEVICE_GPU) {
        jc_json_key(f, &first, "power_limits_w");
        int f2 = 1;
        fputc('{', f);
        jc_json_key(f, &f2, "current");
        jc_json_num(f, info->limit_w);
        jc_json_key(f, &f2, "enforced");
        jc_json_num(f, info->enforced_limit_w);
        jc_json_key(f, &f2, "default");
        jc_json_num(f, info->default_limit_w);
        jc_json_key(f, &f2, "min");
        jc_json_num(f, info->min_limit_w);
        jc_json_key(f, &f2, "max");
        jc_json_num(f, info->max_limit_w);
        fputc('}', f);
    }
    fputc('}', f);
}

static void print_json(jc_context *ctx, const char *gpus_sel) {
    FILE *f = stdout;
    char version[96] = "", note[1024] = "";
    jc_status dst = jc_gpu_driver(ctx, version, sizeof version, note, sizeof note);
    int first = 1;
    fputc('{', f);
    jc_json_key(f, &first, "joulecap_version");
    jc_json_str(f, jc_version());
    jc_json_key(f, &first, "nvml");
    {
        int f2 = 1;
        fputc('{', f);
        jc_json_key(f, &f2, "available");
        fputs(dst == JC_OK ? "true" : "false", f);
        jc_json_key(f, &f2, "driver_version");
        if (dst == JC_OK && version[0]) jc_json_str(f, version);
        else fputs("null", f);
        jc_json_key(f, &f2, "note");
        jc_json_str(f, note);
        const char *fake = secure_getenv("JOULECAP_FAKE");
        jc_json_key(f, &f2, "fake");
        jc_json_str(f, fake && *fake ? fake : NULL);
        fputc('}', f);
    }
    jc_json_key(f, &first, "devices");
    fputc('[', f);
    int n = jc_device_count(ctx), k = 0;
    for (int i = 0; i < n; i++) {
        jc_device_info info;
        if (jc_device_info_get(ctx, i, &info) != JC_OK) continue;
        if (k++) fputc(',', f);
        json_device(f, &info);
    }
    fputc(']', f);
    jc_json_key(f, &first, "notes");
    fputc('[', f);
    int nn = 0;
    if (note[0]) {
        jc_json_str(f, note);
        nn++;
    }
    if (dst != JC_OK && jc_cli_names_gpus(gpus_sel)) {
        char msg[256];
        snprintf(msg, sizeof msg, "--gpu %s selects GPUs, but NVML is not available", gpus_sel);
        if (nn++) fputc(',', f);
        jc_json_str(f, msg);
    }
    fputc(']', f);
    fputs("}\n", f);
}

int jc_cmd_info(int argc, char **argv) {
    jc_cli_opts o;
    int rc = jc_cli_parse("info", argc, argv, JC_OPT_GPU | JC_OPT_JSON, 0, 0, &o);
    if (rc) return rc;
    if (o.help) {
        fputs(INFO_HELP, stdout);
        return JC_EXIT_OK;
    }
    jc_options opts;
    jc_options_init(&opts);
    opts.gpus = o.gpus;
    jc_context *ctx = NULL;
    if ((rc = jc_cli_open(&ctx, &opts, "info"))) return rc;
    if (o.json)
        print_json(ctx, o.gpus);
    else
        print_text(ctx, o.gpus);
    jc_close(ctx);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        jc_cli_err("cannot write to standard output");
        return JC_EXIT_FAILURE;
    }
    return JC_EXIT_OK;
}
