/* A shell's life: a heap of a few thousand kept blocks, a little churn per command, and a
 * fork and exec of /bin/true for each (the child inherits the allocator: LD_PRELOAD). Fork
 * copies the page tables of everything the heap touched; exec starts the allocator again. */
#include "bench.h"
#include <sys/wait.h>
#include <unistd.h>

#define KEEP 3000

int main(int argc, char **argv) {
    int scale = scale_arg(argc, argv);
    uint64_t rng = 4242;
    unsigned char **keep = calloc(KEEP, sizeof *keep);
    size_t *n = calloc(KEEP, sizeof *n);
    if (!keep || !n) exit(3);
    for (int i = 0; i < KEEP; i++) {
        /* A shell's sizes: words, paths, variables, the odd buffer. */
        n[i] = rng_below(&rng, 20) ? 8 + rng_below(&rng, 120) : 128 + rng_below(&rng, 4000);
        keep[i] = xmalloc(n[i]);
        stamp(keep[i], n[i], (uint64_t)i);
    }
    int runs = 150 * scale, ok = 0;
    for (int r = 0; r < runs; r++) {
        for (int j = 0; j < 20; j++) {
            size_t m = 16 + rng_below(&rng, 200);
            unsigned char *p = xmalloc(m);
            stamp(p, m, (uint64_t)j);
            verify(p, m, (uint64_t)j);
            free(p);
        }
        pid_t pid = fork();
        if (pid < 0) exit(5);
        if (pid == 0) {
            execl("/bin/true", "true", (char *)0);
            _exit(127);
        }
        int st;
        if (waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0) ok++;
    }
    uint64_t sum = 0;
    for (int i = 0; i < KEEP; i++) {
        sum += verify(keep[i], n[i], (uint64_t)i);
        free(keep[i]);
    }
    free(keep);
    free(n);
    printf("ok %llu %d\n", (unsigned long long)sum, ok);
    return ok == runs ? 0 : 6;
}
