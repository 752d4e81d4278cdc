/* Type isolation: blocks of the same size from different type ids, and from different call
 * sites that land in different buckets, never share an address over 100k alloc/free
 * cycles; the same type does reuse. Also: an address never changes bucket. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *malloc_type_malloc(size_t, unsigned long long) __attribute__((weak));
int mie_bucket_of(const void *) __attribute__((weak));

#define N 100000
#define SLOTS (1 << 22)

/* A tiny open-addressing set of addresses with an owner tag. */
static uintptr_t keys[SLOTS];
static unsigned char owner[SLOTS];

static int seen(uintptr_t a, unsigned char who, int *reused) {
    size_t i = (a >> 4) * 0x9E3779B97F4A7C15ull >> 42;
    while (keys[i] && keys[i] != a) i = (i + 1) & (SLOTS - 1);
    if (keys[i] == a) {
        if (owner[i] != who) return -1;
        (*reused)++;
        return 1;
    }
    keys[i] = a;
    owner[i] = who;
    return 0;
}

__attribute__((noinline)) static void *site_a(size_t n) { void *p = malloc(n); __asm__ volatile("" ::: "memory"); return p; }
__attribute__((noinline)) static void *site_b(size_t n) { void *p = malloc(n); __asm__ volatile("" ::: "memory"); return p; }

int main(void) {
    if (!mie_bucket_of || !malloc_type_malloc) {
        printf("isolation: FAILED: not running under libmie.so\n");
        return 1;
    }
    unsigned long long ids[3] = {(1ull << 56) | 11, (1ull << 49) | 22, (1ull << 49) | 33};
    /* Pick ids 2 and 3 only if they landed in different pointer buckets. */
    void *x = malloc_type_malloc(96, ids[1]), *y = malloc_type_malloc(96, ids[2]);
    int distinct_ptr_ids = mie_bucket_of(x) != mie_bucket_of(y);
    free(x);
    free(y);
    int reused[4] = {0};
    for (int i = 0; i < N; i++) {
        int k = i % 3;
        if (k == 2 && !distinct_ptr_ids) continue;
        void *p = malloc_type_malloc(96, ids[k]);
        int b = mie_bucket_of(p);
        if (seen((uintptr_t)p, (unsigned char)(k + 1), &reused[k]) < 0) {
            printf("isolation: FAILED: type %d received an address of another type: %p\n", k, p);
            return 1;
        }
        if ((k == 0) != (b == 0)) {
            printf("isolation: FAILED: type %d in bucket %d\n", k, b);
            return 1;
        }
        free(p);
    }
    if (reused[0] < N / 10 || reused[1] < N / 10) {
        printf("isolation: FAILED: same type did not reuse (%d, %d)\n", reused[0], reused[1]);
        return 1;
    }
    /* Call sites: meaningful only when the two sites hash to different buckets. */
    x = site_a(96);
    y = site_b(96);
    int ba = mie_bucket_of(x), bb = mie_bucket_of(y);
    free(x);
    free(y);
    memset(keys, 0, sizeof keys);
    int sites_tested = 0;
    if (ba != bb) {
        sites_tested = 1;
        for (int i = 0; i < N; i++) {
            int k = i & 1;
            void *p = k ? site_b(96) : site_a(96);
            if (mie_bucket_of(p) != (k ? bb : ba)) {
                printf("isolation: FAILED: call site %d changed bucket\n", k);
                return 1;
            }
            if (seen((uintptr_t)p, (unsigned char)(k + 10), &reused[2 + k]) < 0) {
                printf("isolation: FAILED: call site %d received an address of the other: %p\n", k, p);
                return 1;
            }
            free(p);
        }
        if (reused[2] < N / 10 || reused[3] < N / 10) {
            printf("isolation: FAILED: call sites did not reuse\n");
            return 1;
        }
    }
    printf("isolation: ok (pointer ids distinct buckets: %d, call sites distinct buckets: %d, reuse %d/%d/%d/%d)\n",
           distinct_ptr_ids, sites_tested, reused[0], reused[1], reused[2], reused[3]);
    return 0;
}
