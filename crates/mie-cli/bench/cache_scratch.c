/* cache-scratch-like false sharing: the main thread allocates one small object per thread
 * and hands it over; each thread frees it, then repeatedly allocates a small object, writes
 * it many times and frees it. An allocator that gives threads objects from the same cache
 * line makes the writes fight over that line. */
#include "bench.h"

#define THREADS 4
#define OBJ 8

typedef struct { unsigned char *first; int iters; uint64_t sum; } arg_t;

static void *worker(void *a_) {
    arg_t *a = a_;
    free(a->first);
    for (int i = 0; i < a->iters; i++) {
        volatile unsigned char *p = xmalloc(OBJ);
        for (int w = 0; w < 200; w++)
            for (int b = 0; b < OBJ; b++) p[b] = (unsigned char)(p[b] + w + b);
        a->sum += p[0] + p[OBJ - 1];
        free((void *)p);
    }
    return NULL;
}

int main(int argc, char **argv) {
    int scale = scale_arg(argc, argv);
    arg_t args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i].first = xmalloc(OBJ);
        args[i].iters = 100000 * scale;
        args[i].sum = 0;
    }
    spawn(THREADS, worker, args, sizeof(arg_t));
    printf("ok %d\n", THREADS);
    return 0;
}
