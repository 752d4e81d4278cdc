/* Counts the process's memory mappings (lines of /proc/self/maps) while mie serves many
 * small blocks of every size class in several buckets, then many large blocks, and prints
 * the counts: mie must not create a mapping per small block (no per-slot guard pages).
 * With an argument, also checks that the gap after each of 40 slabs made late (65539-byte
 * blocks, each an 80 KiB slot alone in a 128 KiB slab) still faults, however the mappings were joined. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

void *malloc_type_malloc(size_t, unsigned long long) __attribute__((weak));

static int maps(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return -1;
    int n = 0, c;
    while ((c = fgetc(f)) != EOF)
        if (c == '\n') n++;
    fclose(f);
    return n;
}

int main(int argc, char **argv) {
    if (!malloc_type_malloc) {
        printf("mappings: not running under libmie.so\n");
        return 1;
    }
    enum { SMALL = 200000, LARGE = 300 };
    static void *small[SMALL];
    void *large[LARGE];
    int before = maps();
    /* Sizes 1 B .. 128 KiB (every class), pure-data and three pointer type ids. */
    for (int i = 0; i < SMALL; i++) {
        size_t n = (size_t)1 << (i % 17);
        n += (size_t)(i * 7919) % n;
        unsigned long long id = (i % 4 == 0) ? (1ull << 56) | 1 : (1ull << 49) | (unsigned long long)(i % 4);
        small[i] = malloc_type_malloc(n, id);
        if (!small[i]) return 3;
        memset(small[i], 1, n < 64 ? n : 64);
    }
    int after_small = maps();
    for (int i = 0; i < LARGE; i++) {
        large[i] = malloc(200000 + (size_t)i * 4096);
        if (!large[i]) return 3;
        ((char *)large[i])[0] = 1;
    }
    int after_large = maps();
    for (int i = 0; i < SMALL; i++) free(small[i]);
    for (int i = 0; i < LARGE; i++) free(large[i]);
    int after_free = maps();
    printf("mappings: before %d small %d large %d freed %d\n", before, after_small, after_large, after_free);
    if (argc > 1) {
        enum { GAPS = 40 };
        char *b[GAPS];
        int faulted = 0;
        for (int i = 0; i < GAPS; i++)
            if (!(b[i] = malloc(65539))) return 3;
        for (int i = 0; i < GAPS; i++) {
            fflush(stdout);
            pid_t pid = fork();
            if (pid < 0) return 4;
            if (pid == 0) {
                freopen("/dev/null", "w", stderr);
                ((volatile char *)b[i])[81920 + 4096] = 1; /* past the 80 KiB slot: the gap */
                _exit(0);
            }
            int st;
            if (waitpid(pid, &st, 0) == pid && WIFSIGNALED(st)) faulted++;
        }
        printf("guard gaps: %d of %d faulted\n", faulted, GAPS);
    }
    return 0;
}
