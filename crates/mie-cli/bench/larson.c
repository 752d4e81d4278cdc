/* larson-like server workload: each thread owns a working set of blocks and replaces random
 * ones with new blocks of random size; after every round the sets rotate between threads,
 * so most frees happen on a thread other than the one that allocated the block. */
#include "bench.h"

#define THREADS 4
#define SLOTS 2000

typedef struct {
    unsigned char *p[SLOTS];
    size_t n[SLOTS];
    uint64_t key[SLOTS];
} set_t;

static set_t sets[THREADS];
static pthread_barrier_t barrier;
static int rounds, ops;

typedef struct { int id; uint64_t sum; } arg_t;

static void *worker(void *a_) {
    arg_t *a = a_;
    uint64_t rng = 1234 + (uint64_t)a->id;
    for (int r = 0; r < rounds; r++) {
        set_t *s = &sets[(a->id + r) % THREADS];
        for (int i = 0; i < ops; i++) {
            int j = (int)rng_below(&rng, SLOTS);
            if (s->p[j]) {
                a->sum += verify(s->p[j], s->n[j], s->key[j]);
                free(s->p[j]);
            }
            size_t n = 16 + rng_below(&rng, 497);
            s->p[j] = xmalloc(n);
            s->n[j] = n;
            s->key[j] = rng_next(&rng);
            stamp(s->p[j], n, s->key[j]);
        }
        pthread_barrier_wait(&barrier);
    }
    return NULL;
}

int main(int argc, char **argv) {
    int scale = scale_arg(argc, argv);
    rounds = 50;
    ops = 10000 * scale;
    pthread_barrier_init(&barrier, NULL, THREADS);
    arg_t args[THREADS] = {0};
    for (int i = 0; i < THREADS; i++) args[i].id = i;
    spawn(THREADS, worker, args, sizeof(arg_t));
    uint64_t sum = 0;
    for (int i = 0; i < THREADS; i++) {
        sum += args[i].sum;
        for (int j = 0; j < SLOTS; j++)
            if (sets[i].p[j]) {
                sum += verify(sets[i].p[j], sets[i].n[j], sets[i].key[j]);
                free(sets[i].p[j]);
            }
    }
    printf("ok %llu\n", (unsigned long long)sum);
    return 0;
}
