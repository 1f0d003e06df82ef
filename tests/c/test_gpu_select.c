/* GPU selection as CUDA numbers GPUs (src/sources/gpu_select.c). */
#include "jc_test.h"
#include "sources/nvml.h"

static jc__gpu_ident gpus[3] = {
    {"NVIDIA H100", "GPU-aaaa1111-0000-0000-0000-000000000000", "00000000:19:00.0"},
    {"NVIDIA H100", "GPU-bbbb2222-0000-0000-0000-000000000000", "00000000:3B:00.0"},
    {"NVIDIA H100", "GPU-cccc3333-0000-0000-0000-000000000000", "00000000:4C:00.0"},
};

static int sel(const char *cvd, const char *selection, int *nvml, int *cuda, char *note) {
    int n = -1;
    jc_status st = jc__gpu_select(gpus, 3, cvd, "PCI_BUS_ID", selection, nvml, cuda, &n, note, 512);
    return st == JC_OK ? n : -(int)st;
}

TEST(all_visible_by_default) {
    int nv[8], cu[8];
    char note[512];
    ASSERT_EQ(sel(NULL, NULL, nv, cu, note), 3);
    ASSERT_EQ(nv[2], 2);
    ASSERT_EQ(cu[2], 2);
    ASSERT_EQ(sel(NULL, "none", nv, cu, note), 0);
}

TEST(cuda_visible_devices_renumbers) {
    int nv[8], cu[8];
    char note[512];
    ASSERT_EQ(sel("2,0", NULL, nv, cu, note), 2);
    ASSERT_EQ(nv[0], 2); /* CUDA 0 is NVML 2 */
    ASSERT_EQ(cu[0], 0);
    ASSERT_EQ(nv[1], 0);
    ASSERT_EQ(sel("2,0", "1", nv, cu, note), 1);
    ASSERT_EQ(nv[0], 0);
    ASSERT_EQ(cu[0], 1);
}

TEST(uuids_and_prefixes) {
    int nv[8], cu[8];
    char note[512];
    ASSERT_EQ(sel("GPU-cccc3333-0000-0000-0000-000000000000,GPU-bbbb", NULL, nv, cu, note), 2);
    ASSERT_EQ(nv[0], 2);
    ASSERT_EQ(nv[1], 1);
    ASSERT_EQ(sel(NULL, "GPU-bbbb2222", nv, cu, note), 1);
    ASSERT_EQ(nv[0], 1);
    ASSERT_EQ(sel(NULL, "cccc", nv, cu, note), 1);
    ASSERT_EQ(nv[0], 2);
}

TEST(invalid_entry_cuts_the_list) {
    int nv[8], cu[8];
    char note[512];
    ASSERT_EQ(sel("1,9,0", NULL, nv, cu, note), 1);
    ASSERT_CONTAINS(note, "'9'");
    ASSERT_EQ(sel("", NULL, nv, cu, note), 0);
}

TEST(errors_name_what_exists) {
    int nv[8], cu[8];
    char note[512];
    ASSERT_EQ(sel(NULL, "7", nv, cu, note), -JC_ERR_NOT_FOUND);
    ASSERT_CONTAINS(jc_last_detail(), "GPU 7 does not exist");
    ASSERT_CONTAINS(jc_last_detail(), "GPU-aaaa1111");
    ASSERT_EQ(sel(NULL, "GPU-ffff", nv, cu, note), -JC_ERR_NOT_FOUND);
    ASSERT_EQ(sel(NULL, "0,0", nv, cu, note), -JC_ERR_INVALID_ARGUMENT);
    ASSERT_EQ(sel("MIG-1234", NULL, nv, cu, note), -JC_ERR_NOT_SUPPORTED);
    ASSERT_CONTAINS(jc_last_detail(), "MIG");
    ASSERT_EQ(sel("1", "1", nv, cu, note), -JC_ERR_NOT_FOUND);
}

TEST(fastest_first_warns_on_mixed_models) {
    jc__gpu_ident mixed[2] = {gpus[0], gpus[1]};
    snprintf(mixed[1].name, sizeof mixed[1].name, "NVIDIA A40");
    int nv[8], cu[8], n;
    char note[512];
    ASSERT_OK(jc__gpu_select(mixed, 2, NULL, NULL, NULL, nv, cu, &n, note, sizeof note));
    ASSERT_CONTAINS(note, "CUDA_DEVICE_ORDER");
    ASSERT_OK(jc__gpu_select(mixed, 2, NULL, "PCI_BUS_ID", NULL, nv, cu, &n, note, sizeof note));
    ASSERT_STR_EQ(note, "");
}

JC_TEST_MAIN(TEST_ENTRY(all_visible_by_default), TEST_ENTRY(cuda_visible_devices_renumbers),
             TEST_ENTRY(uuids_and_prefixes), TEST_ENTRY(invalid_entry_cuts_the_list),
             TEST_ENTRY(errors_name_what_exists), TEST_ENTRY(fastest_first_warns_on_mixed_models))
