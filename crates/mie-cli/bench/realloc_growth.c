/* realloc growth: strings built by appending short pieces (one realloc per append, as naive
 * string builders do) and vectors grown by doubling, interleaved so their blocks mix. */
#include "bench.h"

#define STRINGS 64

int main(int argc, char **argv) {
    int scale = scale_arg(argc, argv);
    uint64_t rng = 4242, sum = 0;
    for (int rep = 0; rep < 100 * scale; rep++) {
        char *s[STRINGS] = {0};
        size_t len[STRINGS] = {0};
        size_t target = 512 + rng_below(&rng, 16384);
        for (size_t step = 0; step < target / 16; step++)
            for (int i = 0; i < STRINGS; i++) {
                size_t add = 1 + rng_below(&rng, 31);
                s[i] = realloc(s[i], len[i] + add + 1);
                if (!s[i]) exit(3);
                memset(s[i] + len[i], 'a' + (int)(add % 26), add);
                len[i] += add;
                s[i][len[i]] = 0;
            }
        for (int i = 0; i < STRINGS; i++) {
            for (size_t k = 0; k < len[i]; k += 97) sum += (unsigned char)s[i][k];
            free(s[i]);
        }
        /* A vector of longs doubling to 2^17 elements (1 MiB). */
        long *v = NULL;
        size_t cap = 0;
        for (size_t n = 0; n < (1u << 17); n++) {
            if (n == cap) {
                cap = cap ? 2 * cap : 4;
                v = realloc(v, cap * sizeof *v);
                if (!v) exit(3);
            }
            v[n] = (long)n;
        }
        for (size_t n = 0; n < (1u << 17); n += 1000) sum += (uint64_t)v[n];
        free(v);
    }
    printf("ok %llu\n", (unsigned long long)sum);
    return 0;
}
