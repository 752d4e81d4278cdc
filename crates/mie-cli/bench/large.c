/* Large allocations: blocks of 64 KiB to 8 MiB in a small working set, each written once
 * per page (as a buffer that is filled), checked and freed. */
#include "bench.h"

#define SLOTS 16

int main(int argc, char **argv) {
    int scale = scale_arg(argc, argv);
    uint64_t rng = 31337, sum = 0;
    unsigned char *p[SLOTS] = {0};
    size_t n[SLOTS] = {0};
    uint64_t key[SLOTS] = {0};
    for (int i = 0; i < 3000 * scale; i++) {
        int j = (int)rng_below(&rng, SLOTS);
        if (p[j]) {
            for (size_t o = 0; o < n[j]; o += 4096) sum += p[j][o];
            sum += verify(p[j], n[j], key[j]);
            free(p[j]);
        }
        /* Log-uniform between 64 KiB and 8 MiB: small large blocks are the common ones. */
        size_t n_ = (size_t)65536 << rng_below(&rng, 7);
        n_ += rng_below(&rng, n_);
        p[j] = xmalloc(n_);
        n[j] = n_;
        key[j] = rng_next(&rng);
        for (size_t o = 0; o < n_; o += 4096) p[j][o] = (unsigned char)o;
        stamp(p[j], n_, key[j]);
    }
    for (int j = 0; j < SLOTS; j++)
        if (p[j]) free(p[j]);
    printf("ok %llu\n", (unsigned long long)sum);
    return 0;
}
