/* No block may show a previous block's bytes: fill blocks with a secret, free them, allocate
 * again (small, large, a large block served from a bigger freed one's pages), and look for
 * any byte of the secret in the new blocks. glibc gives fresh zero pages for large blocks;
 * mie reuses freed pages (warm reuse) and must clear them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECRET 0xA5

static size_t count_secret(const unsigned char *p, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += p[i] == SECRET;
    return c;
}

static int round_trip(size_t first, size_t second, int count) {
    unsigned char *old[16];
    for (int i = 0; i < count; i++) {
        old[i] = malloc(first);
        memset(old[i], SECRET, first);
    }
    for (int i = 0; i < count; i++) free(old[i]);
    int bad = 0;
    for (int i = 0; i < count; i++) {
        unsigned char *p = malloc(second);
        size_t c = count_secret(p, second);
        if (c) {
            printf("stale: %zu secret bytes in a %zu-byte block after freeing %zu-byte blocks\n", c, second, first);
            bad = 1;
        }
        old[i] = p;
    }
    for (int i = 0; i < count; i++) free(old[i]);
    return bad;
}

int main(void) {
    int bad = 0;
    bad |= round_trip(100, 100, 16);
    bad |= round_trip(5000, 5000, 16);
    bad |= round_trip(256 << 10, 256 << 10, 4);
    bad |= round_trip(1 << 20, 1 << 20, 4);
    bad |= round_trip(3 << 20, 1 << 20, 2);
    bad |= round_trip(300000, 200000, 4);
    puts(bad ? "stale: FAILED" : "stale: ok");
    return bad;
}
