/* Legal uses of the whole malloc family; exits 0 and prints "legal: ok" when every check
 * passes, otherwise names the failed check. */
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void *reallocarray(void *, size_t, size_t);
void free_sized(void *, size_t) __attribute__((weak));
void free_aligned_sized(void *, size_t, size_t) __attribute__((weak));
void *malloc_type_malloc(size_t, unsigned long long) __attribute__((weak));
void *malloc_type_calloc(size_t, size_t, unsigned long long) __attribute__((weak));
void *malloc_type_realloc(void *, size_t, unsigned long long) __attribute__((weak));
void *malloc_type_aligned_alloc(size_t, size_t, unsigned long long) __attribute__((weak));
int malloc_type_posix_memalign(void **, size_t, size_t, unsigned long long) __attribute__((weak));
void *malloc_type_valloc(size_t, unsigned long long) __attribute__((weak));
void *__alloc_token_malloc(size_t, size_t) __attribute__((weak));
void *__alloc_token_calloc(size_t, size_t, size_t) __attribute__((weak));
void *__alloc_token_realloc(void *, size_t, size_t) __attribute__((weak));
int mie_bucket_of(const void *) __attribute__((weak));

#define CHECK(c)                                                          \
    do {                                                                  \
        if (!(c)) {                                                       \
            printf("legal: FAILED %s (line %d)\n", #c, __LINE__);         \
            return 1;                                                     \
        }                                                                 \
    } while (0)

static int all(const unsigned char *p, size_t n, unsigned char v) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != v) return 0;
    return 1;
}

int main(void) {
    /* The mie-only entry points come from the preloaded libmie.so. */
    CHECK(mie_bucket_of && malloc_type_malloc && __alloc_token_malloc && free_sized);
    /* realloc growth and shrink keep contents, through every class and into large. */
    unsigned char *p = malloc(1);
    CHECK(p);
    p[0] = 7;
    size_t n = 1;
    while (n < (8u << 20)) {
        size_t m = n * 3 / 2 + 1;
        p = realloc(p, m);
        CHECK(p);
        CHECK(p[0] == 7);
        CHECK(malloc_usable_size(p) == m);
        memset(p + 1, (int)(m & 0xff), m - 1);
        CHECK(all(p + 1, m - 1, (unsigned char)(m & 0xff)));
        n = m;
    }
    while (n > 1) {
        size_t m = n / 3;
        if (m == 0) m = 1;
        unsigned char v = p[m - 1];
        p = realloc(p, m);
        CHECK(p && p[0] == 7 && p[m - 1] == v);
        n = m;
    }
    free(p);
    CHECK(realloc(malloc(10), 0) == NULL); /* glibc semantics: frees */
    p = realloc(NULL, 33);
    CHECK(p);
    free(p);

    /* Every alignment through every aligned entry point. */
    for (size_t a = 1; a <= (1u << 22); a <<= 1) {
        for (size_t sz = 0; sz < 3 * a && sz < (1u << 23); sz = sz * 2 + 1) {
            void *q = NULL;
            if (a >= sizeof(void *)) {
                CHECK(posix_memalign(&q, a, sz) == 0);
                CHECK(((uintptr_t)q & (a - 1)) == 0);
                memset(q, 1, sz);
                free(q);
            }
            q = aligned_alloc(a, sz);
            CHECK(q && ((uintptr_t)q & (a - 1)) == 0);
            memset(q, 2, sz);
            free(q);
            q = memalign(a, sz);
            CHECK(q && ((uintptr_t)q & (a - 1)) == 0);
            free(q);
        }
    }
    long page = sysconf(_SC_PAGESIZE);
    void *v = valloc(100);
    CHECK(v && ((uintptr_t)v % page) == 0);
    free(v);
    v = pvalloc(100);
    CHECK(v && ((uintptr_t)v % page) == 0 && malloc_usable_size(v) >= (size_t)page);
    free(v);
    void *q = (void *)1;
    CHECK(posix_memalign(&q, 24, 10) == EINVAL && q == (void *)1);
    CHECK(posix_memalign(&q, 2, 10) == EINVAL);
    errno = 0;
    CHECK(aligned_alloc(48, 96) == NULL && errno == EINVAL);

    /* calloc zeroes, also when reusing slots that held data. */
    for (int round = 0; round < 3; round++) {
        void *ps[200];
        for (int i = 0; i < 200; i++) {
            ps[i] = malloc(i * 37 + 1);
            memset(ps[i], 0xee, i * 37 + 1);
        }
        for (int i = 0; i < 200; i++) free(ps[i]);
        for (int i = 0; i < 200; i++) {
            unsigned char *c = calloc(i * 37 + 1, 1);
            CHECK(c && all(c, i * 37 + 1, 0));
            ps[i] = c;
        }
        for (int i = 0; i < 200; i++) free(ps[i]);
    }
    unsigned char *big = calloc(1 << 20, 3);
    CHECK(big && all(big, 3 << 20, 0));
    free(big);
    /* Large blocks whose pages are reused warm (moved from freed blocks) still come back
     * zeroed from calloc, and keep their contents through realloc. */
    for (int round = 0; round < 8; round++) {
        size_t n = (size_t)(200 + 150 * round) << 10;
        unsigned char *w = malloc(n);
        CHECK(w);
        memset(w, 0xcd, n);
        free(w);
        unsigned char *z = calloc(n, 1);
        CHECK(z && all(z, n, 0));
        memset(z, 0x5a, n);
        z = realloc(z, 2 * n);
        CHECK(z && all(z, n, 0x5a));
        free(z);
    }

    /* Refusals: overflow and absurd sizes give NULL + ENOMEM, never a crash. */
    errno = 0;
    CHECK(calloc(SIZE_MAX / 2, 3) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(reallocarray(NULL, SIZE_MAX / 2, 3) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(malloc(SIZE_MAX - 10) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(malloc((size_t)1 << 62) == NULL && errno == ENOMEM);
    p = malloc(10);
    errno = 0;
    CHECK(realloc(p, SIZE_MAX - 100) == NULL && errno == ENOMEM);
    free(p); /* the original block is intact after a failed realloc */
    p = reallocarray(NULL, 10, 10);
    CHECK(p && malloc_usable_size(p) == 100);
    free(p);

    /* malloc(0): distinct, freeable pointers. */
    void *z1 = malloc(0), *z2 = malloc(0);
    CHECK(z1 && z2 && z1 != z2 && malloc_usable_size(z1) == 0);
    free(z1);
    free(z2);
    /* Many at once are all distinct; calloc and realloc handle them; a zero-length copy
     * into one is legal. */
    {
        enum { Z = 5000 };
        static char *zs[Z];
        for (int i = 0; i < Z; i++) {
            zs[i] = i % 2 ? malloc(0) : calloc(0, 8);
            CHECK(zs[i] != NULL);
            if (i) CHECK(zs[i] != zs[i - 1]);
        }
        memcpy(zs[7], "x", 0);
        char *grown = realloc(zs[0], 40);
        CHECK(grown && malloc_usable_size(grown) == 40);
        memset(grown, 'g', 40);
        zs[0] = grown;
        for (int i = 0; i < Z; i++) free(zs[i]);
    }
    free(NULL);
    CHECK(malloc_usable_size(NULL) == 0);

    /* Sized frees. */
    p = malloc(77);
    free_sized(p, 77);
    p = aligned_alloc(256, 300);
    free_aligned_sized(p, 256, 300);

    /* Typed entry points: pure data vs pointer-bearing descriptors (DESIGN.md §4). */
    unsigned long long data_id = (1ull << 56) | 0x1234;
    unsigned long long ptr_id = (1ull << 49) | 0x5678;
    void *d = malloc_type_malloc(64, data_id), *t = malloc_type_malloc(64, ptr_id);
    CHECK(mie_bucket_of(d) == 0 && mie_bucket_of(t) > 0);
    d = malloc_type_realloc(d, 100, data_id);
    CHECK(mie_bucket_of(d) == 0);
    free(d);
    free(t);
    d = malloc_type_calloc(10, 10, data_id);
    CHECK(d && all(d, 100, 0) && mie_bucket_of(d) == 0);
    free(d);
    d = malloc_type_aligned_alloc(128, 128, ptr_id);
    CHECK(d && ((uintptr_t)d & 127) == 0);
    free(d);
    CHECK(malloc_type_posix_memalign(&d, 64, 10, data_id) == 0 && ((uintptr_t)d & 63) == 0);
    free(d);
    d = malloc_type_valloc(10, data_id);
    CHECK(d && ((uintptr_t)d % page) == 0);
    free(d);
    /* AllocToken: the lower half of the token space is pointer-free. */
    d = __alloc_token_malloc(32, 5);
    t = __alloc_token_malloc(32, ((size_t)1 << 63) | 5);
    CHECK(mie_bucket_of(d) == 0 && mie_bucket_of(t) > 0);
    d = __alloc_token_realloc(d, 48, 5);
    CHECK(mie_bucket_of(d) == 0);
    free(d);
    free(t);
    d = __alloc_token_calloc(4, 4, 1);
    CHECK(d && all(d, 16, 0));
    free(d);

    /* Introspection entry points work. */
    struct mallinfo2 mi = mallinfo2();
    CHECK(mi.arena > 0);
    CHECK(malloc_trim(0) == 1);
    printf("legal: ok\n");
    return 0;
}
