/* A program that allocates only through its own wrapper, as perl, lua, vim and openssl do:
 * mie sees one call site. Once the wrapper's site is found hot (and its name says it
 * allocates), blocks are bucketed by the wrapper's caller: eight callers of one wrapper
 * spread over several buckets. Prints the number of distinct buckets among the callers,
 * and whether every caller's blocks kept one bucket. With the argument "chain" the callers
 * call an outer wrapper that calls the inner one (sqlite3Malloc -> sqlite3MemMalloc):
 * blocks are bucketed by the outer wrapper's caller. */
#include <stdio.h>
#include <stdlib.h>

int mie_bucket_of(const void *p) __attribute__((weak));

__attribute__((noinline)) void *my_xmalloc(size_t n) {
    void *p = malloc(n);
    if (!p) abort();
    __asm__ volatile("" ::: "memory"); /* keep the call a call, not a tail jump */
    return p;
}

__attribute__((noinline)) void *my_outer_alloc(size_t n) {
    void *p = my_xmalloc(n);
    __asm__ volatile("" ::: "memory");
    return p;
}

static int chain;

typedef void *(*caller_fn)(void);
#define CALLER(i)                                                        \
    __attribute__((noinline)) static void *caller##i(void) {             \
        void *p = chain ? my_outer_alloc(48) : my_xmalloc(48);           \
        __asm__ volatile("" ::: "memory");                               \
        return p;                                                        \
    }
CALLER(0) CALLER(1) CALLER(2) CALLER(3) CALLER(4) CALLER(5) CALLER(6) CALLER(7)
static caller_fn callers[8] = {caller0, caller1, caller2, caller3, caller4, caller5, caller6, caller7};

int main(int argc, char **argv) {
    if (!mie_bucket_of) return 4; /* not under mie */
    chain = argc > 1 && argv[1][0] == 'c';
    static void *keep[40000];
    for (int i = 0; i < 40000; i++) keep[i] = callers[i % 8]();
    int seen[8] = {0}, distinct = 0, inconsistent = 0;
    for (int i = 0; i < 8; i++) {
        void *p = callers[i]();
        int b = mie_bucket_of(p);
        printf("caller%d: bucket %d\n", i, b);
        if (b >= 0 && b < 8 && !seen[b]++) distinct++;
        /* Later calls from the same caller (answered by the thread's memo of sites and
           callers, or looked up again when sampled) land in the same bucket. */
        for (int j = 0; j < 200; j++) {
            void *q = callers[i]();
            if (mie_bucket_of(q) != b) inconsistent++;
            free(q);
        }
        free(p);
    }
    for (int i = 0; i < 40000; i++) free(keep[i]);
    printf("distinct buckets: %d\n", distinct);
    printf("inconsistent: %d\n", inconsistent);
    return 0;
}
