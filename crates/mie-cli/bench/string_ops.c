/* Memory and string functions on heap blocks: memcpy, memmove, memset, strcpy and strlen
 * of 16 to 256 bytes between a few long-lived blocks. Under mie every one of these calls is
 * range-checked against its blocks first, so the difference to glibc is the cost of those
 * checks (few allocations happen here). */
#include "bench.h"

#define BUFS 64
#define SIZE 320

int main(int argc, char **argv) {
    int scale = scale_arg(argc, argv);
    char *b[BUFS];
    for (int i = 0; i < BUFS; i++) {
        b[i] = xmalloc(SIZE);
        memset(b[i], 'a' + i % 26, SIZE - 1);
        b[i][SIZE - 1] = 0;
    }
    uint64_t rng = 5150, sum = 0;
    long calls = 2000000L * scale;
    for (long i = 0; i < calls; i++) {
        uint64_t r = rng_next(&rng);
        char *d = b[r % BUFS], *s = b[(r >> 8) % BUFS];
        size_t n = 16 + (r >> 16) % 241;
        switch ((r >> 40) % 5) {
        case 0: memcpy(d, s, n); break;
        case 1: memmove(d + 8, d, n); break;
        case 2: memset(d, (int)(r >> 48) | 1, n); break;
        case 3: /* strcpy of an n-character string */
            s[n] = 0;
            strcpy(d, s);
            s[n] = 'x';
            break;
        default: sum += strlen(s + (n % 32)); break;
        }
        d[SIZE - 1] = 0;
        sum += (unsigned char)d[n / 2];
    }
    for (int i = 0; i < BUFS; i++) free(b[i]);
    printf("ok %llu\n", (unsigned long long)sum);
    return 0;
}
