/* Hot paths, one at a time, for counting instructions under callgrind: the harness runs
 * each mode with two iteration counts and takes the difference, so start-up and exit cancel.
 *   pair SIZE       malloc(SIZE) + free, N times
 *   fifo SIZE       100 x malloc(SIZE), then their 100 frees oldest first; N pairs in all
 *   xmalloc SIZE    malloc(SIZE) through a wrapper function (`xmalloc`) + free, N times
 *   cross SIZE      malloc here, free in another thread (1000 blocks per hand-over), N blocks
 *   memcpy_heap     64-byte memcpy between two heap blocks, N times
 *   memcpy_stack    64-byte memcpy between two stack buffers, N times
 *   new SIZE        C++ operator new(SIZE) + sized operator delete, N times (the process's
 *                   definitions: libstdc++ is loaded for an allocator that has none)
 *   memcpy_miss     48-byte memcpy between two of 256 heap blocks, a different pair each time
 *                   (neither block is the one the last copy used), N times */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *volatile sink;
static char *blocks[1000];
static sem_t go, done;
static long rounds;

/* An allocation wrapper as perl, git and openssl have: mie buckets its blocks by the
 * wrapper's caller. Exported (-rdynamic) so its name can be read, as in a real program. */
__attribute__((noinline)) void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (!p) abort();
    return p;
}

static void *freer(void *arg) {
    (void)arg;
    for (long r = 0; r < rounds; r++) {
        sem_wait(&go);
        for (int i = 0; i < 1000; i++) free(blocks[i]);
        sem_post(&done);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *mode = argv[1];
    long n = atol(argv[2]);
    size_t size = argc > 3 ? (size_t)atol(argv[3]) : 16;
    if (!strcmp(mode, "pair")) {
        for (long i = 0; i < n; i++) {
            char *p = malloc(size);
            sink = p;
            free(p);
        }
    } else if (!strcmp(mode, "fifo")) {
        char *batch[100];
        for (long r = 0; r < n / 100; r++) {
            for (int i = 0; i < 100; i++) batch[i] = malloc(size);
            sink = batch[99];
            for (int i = 0; i < 100; i++) free(batch[i]);
        }
    } else if (!strcmp(mode, "xmalloc")) {
        for (long i = 0; i < n; i++) {
            char *p = xmalloc(size);
            sink = p;
            free(p);
        }
    } else if (!strcmp(mode, "new")) {
        dlopen("libstdc++.so.6", RTLD_NOW | RTLD_GLOBAL);
        void *(*op_new)(size_t) = (void *(*)(size_t))dlsym(RTLD_DEFAULT, "_Znwm");
        void (*op_delete)(void *, size_t) = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "_ZdlPvm");
        if (!op_new || !op_delete) return 3;
        for (long i = 0; i < n; i++) {
            char *p = op_new(size);
            sink = p;
            op_delete(p, size);
        }
    } else if (!strcmp(mode, "cross")) {
        rounds = n / 1000;
        sem_init(&go, 0, 0);
        sem_init(&done, 0, 0);
        pthread_t t;
        pthread_create(&t, NULL, freer, NULL);
        for (long r = 0; r < rounds; r++) {
            for (int i = 0; i < 1000; i++) blocks[i] = malloc(size);
            sem_post(&go);
            sem_wait(&done);
        }
        pthread_join(t, NULL);
    } else if (!strcmp(mode, "memcpy_heap")) {
        char *a = malloc(64), *b = calloc(1, 64);
        for (long i = 0; i < n; i++) {
            memcpy(a, b, 64);
            sink = a;
        }
    } else if (!strcmp(mode, "memcpy_miss")) {
        static char *bl[256];
        for (int i = 0; i < 256; i++) bl[i] = calloc(1, 64);
        for (long i = 0; i < n; i++) {
            memcpy(bl[i & 255], bl[(i + 128) & 255], 48);
            sink = bl[i & 255];
        }
    } else if (!strcmp(mode, "memcpy_stack")) {
        char a[64], b[64];
        memset(b, 1, sizeof b);
        for (long i = 0; i < n; i++) {
            memcpy(a, b, 64);
            sink = a;
        }
    } else {
        return 2;
    }
    return 0;
}
