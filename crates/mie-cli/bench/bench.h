/* Shared by the `mie bench` workloads.
 *
 * Every workload is a plain C program that takes one argument, a scale (1 = the quick size),
 * does a fixed, seeded amount of allocator work, checks the contents of what it allocated and
 * prints "ok <checksum>". The checksum depends only on the seed and the scale, never on
 * addresses or thread timing, so the bench can compare it across allocators: a wrong answer
 * is a failed run, not a fast one. Time and peak RSS are measured from outside. */
#ifndef MIE_BENCH_H
#define MIE_BENCH_H
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline uint64_t rng_next(uint64_t *s) {
    /* splitmix64: fast and good enough to pick sizes and slots. */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t rng_below(uint64_t *s, uint64_t n) { return rng_next(s) % n; }

static inline int scale_arg(int argc, char **argv) {
    int s = argc > 1 ? atoi(argv[1]) : 1;
    return s > 0 ? s : 1;
}

static inline void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (!p) {
        fprintf(stderr, "out of memory allocating %zu bytes\n", n);
        exit(3);
    }
    return p;
}

/* Fill the head (up to 64 bytes) and the last byte of a block with a pattern derived from `key`; check it
 * later. Touching every byte would turn large-block workloads into memset benchmarks. */
static inline void stamp(unsigned char *p, size_t n, uint64_t key) {
    size_t head = n - 1 < 64 ? n - 1 : 64;
    for (size_t i = 0; i < head; i++) p[i] = (unsigned char)(key + i);
    p[n - 1] = (unsigned char)(key >> 8);
}

static inline uint64_t verify(const unsigned char *p, size_t n, uint64_t key) {
    size_t head = n - 1 < 64 ? n - 1 : 64;
    for (size_t i = 0; i < head; i++)
        if (p[i] != (unsigned char)(key + i)) {
            fprintf(stderr, "corrupted block: byte %zu of %zu\n", i, n);
            exit(4);
        }
    if (p[n - 1] != (unsigned char)(key >> 8)) {
        fprintf(stderr, "corrupted block: last byte of %zu\n", n);
        exit(4);
    }
    return key * 31 + n;
}

static inline void spawn(int n, void *(*fn)(void *), void *args, size_t arg_size) {
    pthread_t t[64];
    for (int i = 0; i < n; i++)
        if (pthread_create(&t[i], NULL, fn, (char *)args + (size_t)i * arg_size) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            exit(5);
        }
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
}
#endif
