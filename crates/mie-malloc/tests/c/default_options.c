/* A program that carries its own mie options (as __asan_default_options does for ASan):
   statistics at exit. Exported by linking with -lmie, or with -rdynamic under LD_PRELOAD. */
#include <stdio.h>
#include <stdlib.h>

const char *__mie_default_options(void) { return "stats=1"; }

int main(void) {
    char *p = malloc(100);
    p[0] = 1;
    printf("ran %d\n", p[0]);
    free(p);
    return 0;
}
