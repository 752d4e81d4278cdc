/* 8 threads allocate random sizes, fill them with a pattern, hand them to other threads
 * through locked mailboxes; receivers check the pattern and free. Then: fork from the
 * multithreaded process while threads are allocating, and the child allocates. Then:
 * many short-lived threads, whose caches must be returned (mapped memory stays bounded). */
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define T 8
#define PER 40000
#define BOX 1024

struct box {
    pthread_mutex_t mu;
    void *items[BOX];
    size_t sizes[BOX];
    int n;
} boxes[T];

static volatile int failed;
static volatile int stop_churn;

static uint64_t rnd(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static int check_free(void *p, size_t n) {
    unsigned char *c = p;
    unsigned char v = (unsigned char)(n * 31);
    for (size_t i = 0; i < n; i++)
        if (c[i] != v) return 0;
    free(p);
    return 1;
}

static void drain(int me) {
    struct box *b = &boxes[me];
    pthread_mutex_lock(&b->mu);
    for (int i = 0; i < b->n; i++)
        if (!check_free(b->items[i], b->sizes[i])) failed = 1;
    b->n = 0;
    pthread_mutex_unlock(&b->mu);
}

static void *worker(void *arg) {
    int me = (int)(intptr_t)arg;
    uint64_t s = 0x12345 + me * 7919;
    for (int i = 0; i < PER; i++) {
        uint64_t r = rnd(&s);
        size_t n = (r % 16 == 0) ? (r >> 8) % 300000 + 1 : (r >> 8) % 2000 + 1;
        unsigned char *p = malloc(n);
        if (!p) { failed = 1; return NULL; }
        memset(p, (int)(n * 31) & 0xff, n);
        int to = (int)((r >> 40) % T);
        struct box *b = &boxes[to];
        pthread_mutex_lock(&b->mu);
        if (b->n < BOX) {
            b->items[b->n] = p;
            b->sizes[b->n] = n;
            b->n++;
            p = NULL;
        }
        pthread_mutex_unlock(&b->mu);
        if (p && !check_free(p, n)) failed = 1;
        if (i % 64 == 0) drain(me);
    }
    drain(me);
    return NULL;
}

static void *churn(void *arg) {
    (void)arg;
    while (!stop_churn) free(malloc(100));
    return NULL;
}

static void *short_lived(void *arg) {
    void *ps[64];
    for (int i = 0; i < 64; i++) ps[i] = malloc(i * 50 + 1);
    for (int i = 0; i < 64; i++) free(ps[i]);
    return arg;
}

int main(int argc, char **argv) {
    /* "nofork": qemu-user 7.2 itself crashes on fork from a multithreaded guest (with
       glibc's malloc too), so the arm64 run under qemu skips that phase. */
    int do_fork = !(argc > 1 && !strcmp(argv[1], "nofork"));
    pthread_t th[T];
    for (int i = 0; i < T; i++) pthread_mutex_init(&boxes[i].mu, NULL);
    for (int i = 0; i < T; i++) pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i);
    for (int i = 0; i < T; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < T; i++) drain(i);
    if (failed) { printf("threads: FAILED cross-thread contents\n"); return 1; }

    /* fork while other threads allocate */
    pthread_t c[3];
    for (int i = 0; i < 3; i++) pthread_create(&c[i], NULL, churn, NULL);
    for (int k = 0; k < 20 * do_fork; k++) {
        pid_t pid = fork();
        if (pid == 0) {
            void *ps[1000];
            for (int i = 0; i < 1000; i++) { ps[i] = malloc(i + 1); memset(ps[i], 1, i + 1); }
            for (int i = 0; i < 1000; i++) free(ps[i]);
            pthread_t t;
            pthread_create(&t, NULL, short_lived, NULL);
            pthread_join(t, NULL);
            _exit(0);
        }
        int st;
        waitpid(pid, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) { printf("threads: FAILED fork child status %d\n", st); return 1; }
    }
    stop_churn = 1;
    for (int i = 0; i < 3; i++) pthread_join(c[i], NULL);

    /* thread exit returns caches: 2000 threads must not grow the mapping without bound */
    size_t before = mallinfo2().arena;
    for (int k = 0; k < 2000; k++) {
        pthread_t t;
        pthread_create(&t, NULL, short_lived, NULL);
        pthread_join(t, NULL);
    }
    size_t after = mallinfo2().arena;
    if (after > before + (64u << 20)) { printf("threads: FAILED mapping grew %zu -> %zu\n", before, after); return 1; }
    printf("threads: ok (mapped %zu -> %zu)\n", before, after);
    return 0;
}
