/* Out of memory: under a tight RLIMIT_AS every allocation function returns NULL with errno
 * ENOMEM (never a crash), the program frees what it got and allocates again; absurd and
 * overflowing sizes are refused cleanly. Prints "oom: ok ..." or the failed checks.
 *
 * The small-block rounds come last: address space that one (size class, bucket) has
 * mapped stays with it (its pages go back to the OS, its addresses do not), so after them
 * an allocation of another size or from another call site may find no address space left
 * under the limit. That is the price of never handing addresses from one type to another. */
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static int fails;
#define CHECK(c)                                              \
    do {                                                      \
        if (!(c)) {                                           \
            printf("FAILED line %d: %s\n", __LINE__, #c);     \
            fails++;                                          \
        }                                                     \
    } while (0)

/* Allocate blocks of `n` bytes until the limit is reached; return how many. */
static size_t exhaust(void **keep, size_t max, size_t n) {
    size_t got = 0;
    while (got < max) {
        errno = 0;
        void *p = malloc(n);
        if (!p) {
            CHECK(errno == ENOMEM);
            break;
        }
        memset(p, 0x5a, n < 4096 ? n : 4096);
        keep[got++] = p;
    }
    return got;
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    /* Warm up (mie's reservations and thread cache exist before the limit). */
    free(malloc(100));
    free(malloc(1 << 20));
    struct rlimit rl = {512ull << 20, 512ull << 20};
    if (setrlimit(RLIMIT_AS, &rl) != 0) {
        perror("setrlimit");
        return 2;
    }
    enum { MAX = 1 << 16 };
    static void *keep[MAX];
    size_t rounds[3], got_small = 0;
    for (int r = 0; r < 3; r++) {
        /* Large blocks until the limit, free them all, again: nothing is lost. */
        size_t got = exhaust(keep, MAX, 8 << 20);
        CHECK(got > 4 && got < MAX);
        rounds[r] = got;
        for (size_t i = 0; i < got; i++) free(keep[i]);
    }
    printf("rounds: %zu %zu %zu\n", rounds[0], rounds[1], rounds[2]);
    CHECK(rounds[2] + 8 >= rounds[0]);
    /* The rest of the family fails the same way under the limit. */
    errno = 0;
    CHECK(calloc(1, 1ull << 33) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(aligned_alloc(4096, 1ull << 33) == NULL && errno == ENOMEM);
    void *q = (void *)1;
    CHECK(posix_memalign(&q, 64, 1ull << 33) == ENOMEM && q == (void *)1);
    void *p = malloc(64);
    errno = 0;
    CHECK(realloc(p, 1ull << 33) == NULL && errno == ENOMEM);
    CHECK(p && malloc_usable_size(p) >= 64); /* the old block is untouched */
    free(p);
    /* Small blocks until the limit too, then free them all and do it again: the freed
     * blocks serve the same allocation site again, all of them (those still waiting in the
     * quarantine end their delay when the address space runs out). */
    got_small = exhaust(keep, MAX, 40000);
    CHECK(got_small > 1000 && got_small < MAX);
    for (size_t i = 0; i < got_small; i++) free(keep[i]);
    size_t got_again = exhaust(keep, MAX, 40000);
    CHECK(got_again >= got_small);
    for (size_t i = 0; i < got_again; i++) free(keep[i]);
    /* Absurd and overflowing sizes, with or without a limit. */
    errno = 0;
    CHECK(malloc(SIZE_MAX) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(calloc(SIZE_MAX / 3, 4) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(reallocarray(NULL, SIZE_MAX / 2, 3) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(aligned_alloc(64, SIZE_MAX - 10) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(memalign(1 << 20, SIZE_MAX / 2) == NULL && errno == ENOMEM);
    if (fails) {
        printf("oom: %d failures\n", fails);
        return 1;
    }
    printf("oom: ok (%zu, %zu, %zu large blocks per round; %zu, %zu small)\n", rounds[0], rounds[1], rounds[2], got_small, got_again);
    return 0;
}
