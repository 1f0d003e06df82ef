/* Runs the fuzz harness without libFuzzer (any compiler, in ctest): every file of the seed corpus, then a
 * fixed number of deterministic mutations of them (byte flips, inserts, deletes, splices, cuts). */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_SEEDS 256
#define MAX_LEN 8192

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR [ITERATIONS]\n", argv[0]);
        return 2;
    }
    long iterations = argc > 2 ? atol(argv[2]) : 200000;
    static uint8_t seeds[MAX_SEEDS][MAX_LEN];
    static size_t lens[MAX_SEEDS];
    int n = 0;
    DIR *d = opendir(argv[1]);
    if (!d) {
        perror(argv[1]);
        return 1;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < MAX_SEEDS) {
        if (e->d_name[0] == '.') continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", argv[1], e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        lens[n] = fread(seeds[n], 1, MAX_LEN, f);
        fclose(f);
        LLVMFuzzerTestOneInput(seeds[n], lens[n]);
        n++;
    }
    closedir(d);
    if (n == 0) {
        fprintf(stderr, "no seed in %s\n", argv[1]);
        return 1;
    }
    static uint8_t buf[MAX_LEN];
    for (long it = 0; it < iterations; it++) {
        int s = (int)(next() % (uint64_t)n);
        size_t len = lens[s];
        memcpy(buf, seeds[s], len);
        int edits = 1 + (int)(next() % 8);
        for (int k = 0; k < edits; k++) {
            size_t at = len ? (size_t)(next() % len) : 0;
            switch (next() % 6) {
            case 0: if (len) buf[at] ^= (uint8_t)(1u << (next() % 8)); break;
            case 1: if (len) buf[at] = (uint8_t)next(); break;
            case 2: /* insert a byte */
                if (len < MAX_LEN) {
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = (uint8_t)"\n %=\0\r\tA9-"[next() % 11];
                    len++;
                }
                break;
            case 3: /* delete a run */
                if (len) {
                    size_t r = 1 + (size_t)(next() % 16);
                    if (r > len - at) r = len - at;
                    memmove(buf + at, buf + at + r, len - at - r);
                    len -= r;
                }
                break;
            case 4: /* splice in a piece of another seed */ {
                int o = (int)(next() % (uint64_t)n);
                size_t from = lens[o] ? (size_t)(next() % lens[o]) : 0, r = 1 + (size_t)(next() % 64);
                if (r > lens[o] - from) r = lens[o] - from;
                if (len + r <= MAX_LEN) {
                    memmove(buf + at + r, buf + at, len - at);
                    memcpy(buf + at, seeds[o] + from, r);
                    len += r;
                }
                break;
            }
            default: len = at; break; /* cut */
            }
        }
        if (len && next() % 4 != 0) buf[0] = seeds[s][0]; /* keep the target most of the time */
        LLVMFuzzerTestOneInput(buf, len);
    }
    const char *self = strrchr(argv[0], '/');
    printf("%s: %d seeds, %ld mutations: no crash\n", self ? self + 1 : argv[0], n, iterations);
    return 0;
}
