/* Hot paths, one at a time, for counting instructions under callgrind: the harness runs
 * each mode with two iteration counts and takes the difference, so start-up and exit cancel.
 *   pair SIZE       malloc(SIZE) + free, N times
 *   cross SIZE      malloc here, free in another thread (1000 blocks per hand-over), N blocks
 *   memcpy_heap     64-byte memcpy between two heap blocks, N times
 *   memcpy_stack    64-byte memcpy between two stack buffers, N times */
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *volatile sink;
static char *blocks[1000];
static sem_t go, done;
static long rounds;

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
