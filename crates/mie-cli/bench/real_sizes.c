/* Random sizes with the shape of real programs' requests: most at or below 128 bytes, some
 * up to 1 KiB, a few to 64 KiB and a rare tail to 1 MiB, in a working set of long- and
 * short-lived blocks; two threads, each with its own set. */
#include "bench.h"

#define THREADS 2
#define SLOTS 20000

typedef struct { int id, ops; uint64_t sum; } arg_t;

static size_t pick(uint64_t *rng) {
    uint64_t r = rng_below(rng, 10000);
    if (r < 6000) return 8 + rng_below(rng, 57);          /* 8..64 */
    if (r < 8500) return 65 + rng_below(rng, 64);         /* 65..128 */
    if (r < 9500) return 129 + rng_below(rng, 896);       /* ..1 KiB */
    if (r < 9990) return 1025 + rng_below(rng, 64512);    /* ..64 KiB */
    return 65537 + rng_below(rng, 983040);                /* ..1 MiB */
}

static void *worker(void *a_) {
    arg_t *a = a_;
    uint64_t rng = 777 + (uint64_t)a->id;
    unsigned char **p = calloc(SLOTS, sizeof *p);
    size_t *n = calloc(SLOTS, sizeof *n);
    uint64_t *key = calloc(SLOTS, sizeof *key);
    if (!p || !n || !key) exit(3);
    for (int i = 0; i < a->ops; i++) {
        /* Short-lived blocks churn in the first tenth of the set, long-lived ones elsewhere. */
        int j = rng_below(&rng, 4) ? (int)rng_below(&rng, SLOTS / 10) : (int)rng_below(&rng, SLOTS);
        if (p[j]) {
            a->sum += verify(p[j], n[j], key[j]);
            free(p[j]);
        }
        n[j] = pick(&rng);
        p[j] = xmalloc(n[j]);
        key[j] = rng_next(&rng);
        stamp(p[j], n[j], key[j]);
    }
    for (int j = 0; j < SLOTS; j++)
        if (p[j]) {
            a->sum += verify(p[j], n[j], key[j]);
            free(p[j]);
        }
    free(p);
    free(n);
    free(key);
    return NULL;
}

int main(int argc, char **argv) {
    int scale = scale_arg(argc, argv);
    arg_t args[THREADS];
    for (int i = 0; i < THREADS; i++) args[i] = (arg_t){i, 1000000 * scale, 0};
    spawn(THREADS, worker, args, sizeof(arg_t));
    printf("ok %llu\n", (unsigned long long)(args[0].sum + args[1].sum));
    return 0;
}
