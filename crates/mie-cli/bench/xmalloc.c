/* xmalloc-test-like producer/consumer: producers allocate blocks and hand them over in
 * batches through a queue; consumers check and free them. Every free is cross-thread. */
#include "bench.h"

#define PAIRS 2
#define BATCH 64
#define QCAP 256

typedef struct {
    unsigned char *p[BATCH];
    size_t n[BATCH];
    uint64_t key[BATCH];
} batch_t;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
    batch_t *q[QCAP];
    int head, len, producers_left;
} queue_t;

static queue_t queue = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, {0}, 0, 0, PAIRS};
static int batches;

typedef struct { int id; uint64_t sum; } arg_t;

static void *producer(void *a_) {
    arg_t *a = a_;
    uint64_t rng = 99 + (uint64_t)a->id;
    for (int b = 0; b < batches; b++) {
        batch_t *bt = xmalloc(sizeof *bt);
        for (int i = 0; i < BATCH; i++) {
            size_t n = 16 + rng_below(&rng, 241);
            bt->p[i] = xmalloc(n);
            bt->n[i] = n;
            bt->key[i] = rng_next(&rng);
            stamp(bt->p[i], n, bt->key[i]);
        }
        pthread_mutex_lock(&queue.mu);
        while (queue.len == QCAP) pthread_cond_wait(&queue.not_full, &queue.mu);
        queue.q[(queue.head + queue.len++) % QCAP] = bt;
        pthread_cond_signal(&queue.not_empty);
        pthread_mutex_unlock(&queue.mu);
    }
    pthread_mutex_lock(&queue.mu);
    queue.producers_left--;
    pthread_cond_broadcast(&queue.not_empty);
    pthread_mutex_unlock(&queue.mu);
    return NULL;
}

static void *consumer(void *a_) {
    arg_t *a = a_;
    for (;;) {
        pthread_mutex_lock(&queue.mu);
        while (queue.len == 0 && queue.producers_left > 0) pthread_cond_wait(&queue.not_empty, &queue.mu);
        if (queue.len == 0) {
            pthread_mutex_unlock(&queue.mu);
            return NULL;
        }
        batch_t *bt = queue.q[queue.head];
        queue.head = (queue.head + 1) % QCAP;
        queue.len--;
        pthread_cond_signal(&queue.not_full);
        pthread_mutex_unlock(&queue.mu);
        for (int i = 0; i < BATCH; i++) {
            a->sum += verify(bt->p[i], bt->n[i], bt->key[i]);
            free(bt->p[i]);
        }
        free(bt);
    }
}

static void *role(void *a_) {
    arg_t *a = a_;
    return a->id < PAIRS ? producer(a) : consumer(a);
}

int main(int argc, char **argv) {
    batches = 6000 * scale_arg(argc, argv);
    arg_t args[2 * PAIRS] = {0};
    for (int i = 0; i < 2 * PAIRS; i++) args[i].id = i;
    spawn(2 * PAIRS, role, args, sizeof(arg_t));
    uint64_t sum = 0;
    for (int i = PAIRS; i < 2 * PAIRS; i++) sum += args[i].sum;
    printf("ok %llu\n", (unsigned long long)sum); /* sum is order-independent: a plain total */
    return 0;
}
