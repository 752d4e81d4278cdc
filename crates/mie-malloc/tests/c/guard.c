/* Guard mode (MIE_OPTIONS=guard=1): each bug below must stop at the access, with the
 * report naming it; "NOT DETECTED" after it shows a silent pass. Mode "clean" works
 * with many blocks, realloc, calloc and memalign and must finish without a report. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *m = argv[1];
    setvbuf(stdout, NULL, _IONBF, 0);
    if (!strcmp(m, "clean")) {
        char *keep[2000];
        for (int i = 0; i < 2000; i++) {
            keep[i] = malloc(1 + i % 300);
            memset(keep[i], 'a', 1 + i % 300);
        }
        for (int round = 0; round < 20; round++)
            for (int i = 0; i < 2000; i += 3) {
                free(keep[i]);
                keep[i] = calloc(1, 8 + (i + round) % 500);
            }
        char *r = malloc(10);
        for (int n = 20; n < 70000; n *= 2) {
            r = realloc(r, n);
            r[n - 1] = 1;
        }
        free(r);
        void *a = NULL;
        if (posix_memalign(&a, 64, 100) || ((uintptr_t)a & 63)) return 3;
        free(a);
        for (int i = 0; i < 2000; i++) free(keep[i]);
        printf("guard clean: ok\n");
        return 0;
    }
    if (!strcmp(m, "overflow")) {
        char *p = malloc(32); /* a multiple of 16: its end touches the guard page */
        ((volatile char *)p)[32] = 'X';
    } else if (!strcmp(m, "overflow_odd")) {
        char *p = malloc(13); /* guard_align=1: byte-precise */
        ((volatile char *)p)[13] = 'X';
    } else if (!strcmp(m, "underflow")) {
        char *p = malloc(40); /* guard_below=1 */
        ((volatile char *)p)[-1] = 'X';
    } else if (!strcmp(m, "uaf_read")) {
        long *p = malloc(48);
        p[2] = 7;
        free(p);
        printf("%ld\n", ((volatile long *)p)[2]);
    } else if (!strcmp(m, "stale_after_realloc")) {
        char *p = malloc(40), *q = realloc(p, 41);
        (void)q;
        ((volatile char *)p)[0] = 'X';
    } else if (!strcmp(m, "double_free")) {
        char *p = malloc(24);
        free(p);
        free(p);
    } else {
        return 2;
    }
    printf("NOT DETECTED: %s\n", m);
    return 0;
}
