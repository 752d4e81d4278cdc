/* Guarded sampling (run with MIE_OPTIONS=sample_rate=1): exact reports with stacks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((noinline)) static char *make_block(size_t n) { return malloc(n); }

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *m = argv[1];
    setvbuf(stdout, NULL, _IONBF, 0);
    if (!strcmp(m, "overflow_by_one")) {
        char *p = make_block(32);
        ((volatile char *)p)[32] = 1; /* one byte past the end: the guard page */
    } else if (!strcmp(m, "use_after_free")) {
        char *p = make_block(32);
        free(p);
        printf("%d\n", ((volatile char *)p)[0]);
    } else if (!strcmp(m, "overflow_in_padding")) {
        char *p = make_block(13);
        ((volatile char *)p)[13] = 2; /* inside the 16-byte rounding: the canary, at free (even: never a canary byte) */
        free(p);
    } else if (!strcmp(m, "double_free")) {
        char *p = make_block(100);
        free(p);
        free(p);
    } else if (!strcmp(m, "legal")) {
        /* More blocks than guarded slots; realloc and usable size through sampled blocks. */
        char *ps[500];
        for (int i = 0; i < 500; i++) { ps[i] = make_block(i + 1); memset(ps[i], i & 0xff, i + 1); }
        for (int i = 0; i < 500; i++) {
            ps[i] = realloc(ps[i], i + 100);
            for (int j = 0; j <= i; j++) if ((unsigned char)ps[i][j] != (i & 0xff)) { printf("FAILED contents\n"); return 1; }
        }
        for (int i = 0; i < 500; i++) free(ps[i]);
        printf("sample legal: ok\n");
        return 0;
    } else {
        return 2;
    }
    printf("NOT DETECTED: %s\n", m);
    return 0;
}
