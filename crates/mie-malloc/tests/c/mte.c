/* MTE attacks (arm64 only): each access below must fault *at the access* with an MTE
 * report; the line after it prints "NOT DETECTED" so a silent pass is visible. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *mie_debug_slab_metadata(const void *) __attribute__((weak));

#define ADDR(p) ((uintptr_t)(p) & ((1ull << 56) - 1))
#define TAG(p) (((uintptr_t)(p) >> 56) & 0xf)

__attribute__((noinline)) static char *one_site(size_t n) { return malloc(n); }

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *m = argv[1];
    setvbuf(stdout, NULL, _IONBF, 0);
    if (!strcmp(m, "neighbour_overflow")) {
        /* 40-byte blocks live in 48-byte slots: find two neighbours, write one granule past
           the first slot, i.e. into the first granule of the second block. */
        char *a[256];
        for (int i = 0; i < 256; i++) a[i] = one_site(40);
        for (int i = 0; i < 256; i++)
            for (int j = 0; j < 256; j++)
                if (ADDR(a[j]) == ADDR(a[i]) + 48) {
                    printf("neighbours %p %p\n", a[i], a[j]);
                    ((volatile char *)a[i])[48] = 'X';
                    printf("NOT DETECTED: %s\n", m);
                    return 0;
                }
        printf("no neighbours found\n");
        return 3;
    } else if (!strcmp(m, "far_into_unused")) {
        /* One 200-byte block (224-byte slots, 16 KiB slabs, 73 slots): an access two slots
           away, into a slot no block was ever given (its granules carry the allocator's
           tag), is an overflow of the block (or, near the slab's end, an underflow of it).
           The access stays in the block's slab: the next one may not exist yet. */
        volatile char *p = one_site(200);
        size_t idx = (ADDR(p) & 0x3fff) / 224;
        if (idx + 3 < 73) {
            printf("direction overflow\n");
            p[2 * 224 + 8] = 'X';
        } else {
            printf("direction underflow\n");
            p[-(2 * 224) + 8] = 'X';
        }
        printf("NOT DETECTED: %s\n", m);
        return 0;
    } else if (!strcmp(m, "granule_edge") && argc == 4) {
        /* Every byte of the block's granules is accessible (read and written back, so the
           canary stays intact); the first byte past them faults, read or write. */
        size_t n = strtoul(argv[2], NULL, 10), edge = (n + 15) & ~(size_t)15;
        volatile char *p = one_site(n);
        printf("block %p\n", (void *)p);
        for (size_t i = 0; i < edge; i++) p[i] = p[i];
        printf("accessed %zu bytes\n", edge);
        if (!strcmp(argv[3], "read"))
            printf("read %d\n", p[edge]);
        else
            p[edge] = 'X';
    } else if (!strcmp(m, "read_after_free")) {
        char *p = one_site(64);
        p[0] = 7;
        free(p);
        printf("read %d\n", ((volatile char *)p)[0]);
    } else if (!strcmp(m, "stale_after_reuse")) {
        /* Wait until the slot is handed out again, then use the old pointer. */
        char *p = one_site(64);
        free(p);
        for (int i = 0; i < 1000000; i++) {
            char *q = one_site(64);
            if (ADDR(q) == ADDR(p)) {
                printf("slot reused: old tag %lu, new tag %lu\n", (unsigned long)TAG(p), (unsigned long)TAG(q));
                ((volatile char *)p)[0] = 'X';
                printf("NOT DETECTED: %s\n", m);
                return 0;
            }
            free(q);
        }
        printf("slot never reused\n");
        return 3;
    } else if (!strcmp(m, "forged_free_tag")) {
        /* A write into a freed slot through a pointer forged with the free tag (15), the one
           write to a free slot that does not fault: it must not show in the block that gets
           the slot next (the slot is zeroed when it is handed out again). */
        char *p = one_site(40);
        free(p);
        volatile char *forged = (volatile char *)(ADDR(p) | (15ull << 56));
        for (int i = 0; i < 40; i++) forged[i] = (char)0xA5;
        for (int i = 0; i < 1000000; i++) {
            unsigned char *q = (unsigned char *)one_site(40);
            if (ADDR(q) == ADDR(p)) {
                int dirty = 0;
                for (int j = 0; j < 40; j++) dirty += q[j] != 0;
                printf("forged_free_tag: slot reused, %d non-zero bytes\n", dirty);
                return dirty != 0;
            }
            free(q);
        }
        printf("slot never reused\n");
        return 3;
    } else if (!strcmp(m, "wrong_tag_free")) {
        char *p = one_site(64);
        uintptr_t forged = (uintptr_t)p ^ (1ull << 56);
        free((void *)forged);
    } else if (!strcmp(m, "metadata_walk")) {
        char *p = one_site(64);
        if (!mie_debug_slab_metadata) return 4;
        char *meta = mie_debug_slab_metadata(p);
        /* Keep p's tag, aim at the metadata: what a corrupted index or length would do. */
        volatile char *walk = (volatile char *)(ADDR(meta) | ((uintptr_t)TAG(p) << 56));
        walk[0] = 0;
    } else {
        return 2;
    }
    printf("NOT DETECTED: %s\n", m);
    return 0;
}
