/* Stress: many more threads than cores allocate random sizes and alignments, fill every
 * block with a pattern derived from its address and size, hand blocks to each other through
 * a shared table (so most frees are cross-thread), grow and shrink blocks through realloc
 * chains, and check every block's pattern before it is freed. Meanwhile a timer signal keeps
 * interrupting allocations, short-lived threads allocate into the table and exit (their
 * blocks are freed by others), and the process forks while all this runs: each child
 * allocates, checks and frees on its own before exiting.
 *
 *   stress SECONDS THREADS [FORK]     (FORK 0: no forks, for emulators that cannot fork a
 *                                      multithreaded guest reliably)
 * Prints "stress: ok <operations> ops, <forks> forks, <signals> signals" or a failure. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 4096

typedef struct {
    unsigned char *p;
    size_t n;
    uint64_t key;
} block;

static _Atomic(block *) table[SLOTS];
static atomic_int stop;
static atomic_long ops, signals, failures;

static uint64_t next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static unsigned char pat(uint64_t key, size_t i) { return (unsigned char)(key * 31 + i * 7 + 1); }

/* Bytes [from, n) get the block's pattern (every byte of small blocks, a sample of big ones). */
static void fill(const block *b, size_t from) {
    size_t step = b->n > 4096 ? 61 : 1;
    for (size_t i = from; i < b->n; i += step) b->p[i] = pat(b->key, i);
    b->p[b->n - 1] = pat(b->key, b->n - 1);
}

static int check(const block *b, size_t n) {
    size_t step = b->n > 4096 ? 61 : 1;
    for (size_t i = 0; i < n; i += step)
        if (b->p[i] != pat(b->key, i)) return 0;
    return n < b->n || b->p[n - 1] == pat(b->key, n - 1);
}

static size_t pick_size(uint64_t *rng) {
    uint64_t r = next(rng) % 1000;
    if (r < 700) return 1 + next(rng) % 128;
    if (r < 950) return 129 + next(rng) % 4000;
    if (r < 998) return 4097 + next(rng) % 120000;
    return 131072 + next(rng) % 1000000;
}

static block *make(uint64_t *rng) {
    size_t n = pick_size(rng);
    unsigned char *p = NULL;
    switch (next(rng) % 4) {
    case 0: {
        size_t a = (size_t)1 << (4 + next(rng) % 9); /* 16 .. 4096 */
        if (posix_memalign((void **)&p, a, n) != 0) p = NULL;
        if (p && ((uintptr_t)p % a)) atomic_fetch_add(&failures, 1);
        break;
    }
    case 1:
        p = calloc(1, n);
        if (p)
            for (size_t i = 0; i < n; i += 97)
                if (p[i]) atomic_fetch_add(&failures, 1);
        break;
    default: p = malloc(n);
    }
    block *b = malloc(sizeof *b);
    if (!p || !b) {
        fprintf(stderr, "stress: out of memory\n");
        exit(3);
    }
    b->p = p;
    b->n = n;
    b->key = next(rng);
    fill(b, 0);
    return b;
}

static void drop(block *b) {
    if (!check(b, b->n)) {
        fprintf(stderr, "stress: corrupted block %p (%zu bytes)\n", (void *)b->p, b->n);
        atomic_fetch_add(&failures, 1);
    }
    free(b->p);
    free(b);
}

/* Grow or shrink a block through realloc: the common prefix must survive the move. */
static void regrow(block *b, uint64_t *rng) {
    size_t n = pick_size(rng);
    unsigned char *q = realloc(b->p, n);
    if (!q) {
        fprintf(stderr, "stress: realloc failed\n");
        exit(3);
    }
    size_t common = b->n < n ? b->n : n;
    size_t old_n = b->n;
    b->p = q;
    b->n = n;
    /* Check the kept bytes exactly (small prefixes) or by sample (as they were filled). */
    size_t step = old_n > 4096 ? 61 : 1;
    for (size_t i = 0; i < common; i += step)
        if (q[i] != pat(b->key, i)) {
            fprintf(stderr, "stress: realloc lost byte %zu of %zu\n", i, common);
            atomic_fetch_add(&failures, 1);
            break;
        }
    /* Re-stamp the whole block with the step its new size uses. */
    fill(b, 0);
}

static void *worker(void *arg) {
    uint64_t rng = (uint64_t)(uintptr_t)arg * 7919 + 1;
    while (!atomic_load(&stop)) {
        int i = (int)(next(&rng) % SLOTS);
        block *mine = make(&rng);
        if (next(&rng) % 8 == 0) regrow(mine, &rng);
        block *old = atomic_exchange(&table[i], mine);
        if (old) drop(old);
        atomic_fetch_add(&ops, 1);
    }
    return NULL;
}

/* Short-lived: put a few blocks in the table and exit; others free them. */
static void *visitor(void *arg) {
    uint64_t rng = (uint64_t)(uintptr_t)arg * 104729 + 3;
    for (int k = 0; k < 64; k++) {
        block *old = atomic_exchange(&table[next(&rng) % SLOTS], make(&rng));
        if (old) drop(old);
    }
    return NULL;
}

static void on_alarm(int sig) {
    (void)sig;
    atomic_fetch_add(&signals, 1);
}

/* In a forked child: the allocator must work although other threads held its locks. */
static int child_work(void) {
    uint64_t rng = (uint64_t)getpid();
    block *mine[256];
    for (int i = 0; i < 256; i++) mine[i] = make(&rng);
    for (int i = 0; i < 256; i++) drop(mine[i]);
    return atomic_load(&failures) ? 1 : 0;
}

int main(int argc, char **argv) {
    int seconds = argc > 1 ? atoi(argv[1]) : 3;
    int threads = argc > 2 ? atoi(argv[2]) : 8;
    int do_fork = argc > 3 ? atoi(argv[3]) : 1;
    if (threads > 64) threads = 64;
    setvbuf(stdout, NULL, _IONBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 1000}, {0, 1000}}; /* every millisecond */
    setitimer(ITIMER_REAL, &it, NULL);

    pthread_t t[64];
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(i + 1));
    long forks = 0, visitors = 0;
    time_t end = time(NULL) + seconds;
    while (time(NULL) < end) {
        pthread_t v;
        if (pthread_create(&v, NULL, visitor, (void *)(uintptr_t)(1000 + visitors)) == 0) {
            pthread_join(v, NULL);
            visitors++;
        }
        pid_t pid = do_fork ? fork() : -1;
        if (pid == 0) _exit(child_work());
        if (pid > 0) {
            int st;
            while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
            }
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                fprintf(stderr, "stress: forked child failed (status %d)\n", st);
                atomic_fetch_add(&failures, 1);
            }
            forks++;
        }
        usleep(50000);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    for (int i = 0; i < SLOTS; i++) {
        block *b = atomic_exchange(&table[i], NULL);
        if (b) drop(b);
    }
    if (atomic_load(&failures)) {
        printf("stress: FAILED %ld failures\n", atomic_load(&failures));
        return 1;
    }
    printf("stress: ok %ld ops, %ld forks, %ld visiting threads, %ld signals\n", atomic_load(&ops), forks, visitors, atomic_load(&signals));
    return 0;
}
