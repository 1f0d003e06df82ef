/* NVIDIA GPUs through NVML, loaded at run time with dlopen (libnvidia-ml.so.1, or the path in
 * JOULECAP_NVML_LIBRARY).  No CUDA header is needed at build time: the subset used is in nvml_api.h. */
#ifndef JC_SOURCES_NVML_H
#define JC_SOURCES_NVML_H

#include <stdint.h>

#include "../core/internal.h"
#include "nvml_api.h"

typedef struct jc__nvml {
    void *lib;
    int initialised;
#define X(ret, name, args, req) ret(*name) args;
    JC_NVML_FUNCTIONS(X)
#undef X
    char driver_version[NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE];
} jc__nvml;

/* Loads and initialises NVML.  JC_ERR_UNAVAILABLE with a reason when the library or driver is absent. */
jc_status jc__nvml_open(jc__nvml **out, char *why, size_t whylen);
void jc__nvml_close(jc__nvml *nvml);

/* Maps an NVML return code to a jc_status and sets the failure detail to "<what>: <NVML text>". */
jc_status jc__nvml_status(const jc__nvml *nvml, nvmlReturn_t r, const char *what);

/* Identity of one GPU, enough to map CUDA numbering onto NVML's. */
typedef struct jc__gpu_ident {
    char name[96];
    char uuid[96];
    char pci_bus_id[32];
} jc__gpu_ident;

jc_status jc__nvml_identify(jc__nvml *nvml, unsigned index, nvmlDevice_t *dev, jc__gpu_ident *id);

/* Power reads.  *mw gets instant power (field 186) when the driver has it; otherwise the 1 s average and
 * *is_average = 1.  *timestamp_us is the driver's timestamp of the value (0 when unknown). */
nvmlReturn_t jc__nvml_power(jc__nvml *nvml, nvmlDevice_t dev, int prefer_instant, unsigned *mw,
                            int64_t *timestamp_us, int *is_average);

/* GPU selection as CUDA numbers GPUs.
 * gpus[0..n) are the GPUs in NVML order.  cuda_visible: the value of CUDA_VISIBLE_DEVICES, NULL when unset.
 * order: CUDA_DEVICE_ORDER (NULL = FASTEST_FIRST).  selection: "all"/NULL, "none", or a comma list of CUDA
 * indices and UUIDs (unique prefixes allowed).  Writes the chosen GPUs as NVML indices and CUDA indices in
 * selection order.  Errors name what exists.  note gets warnings (approximate FASTEST_FIRST order, list cut
 * at an invalid CUDA_VISIBLE_DEVICES entry). */
jc_status jc__gpu_select(const jc__gpu_ident *gpus, int n, const char *cuda_visible, const char *order,
                         const char *selection, int *nvml_idx, int *cuda_idx, int *count, char *note,
                         size_t notelen);

#endif
