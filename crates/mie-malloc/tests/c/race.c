/* Two threads free the same block at the same instant. Whatever the interleaving, mie must
 * report a double free (at one of the two calls, or when the owner collects the second
 * free), and never hand the slot out twice.
 *   local_remote:  the owner (the allocating thread) and another thread free it;
 *   remote_remote: two threads that do not own it free it. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *volatile block;
static atomic_int go, ready;

static void free_at_signal(void) {
    atomic_fetch_add(&ready, 1);
    while (!atomic_load_explicit(&go, memory_order_acquire))
        ;
    free(block);
}

static void *racer(void *arg) {
    (void)arg;
    free_at_signal();
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    setvbuf(stdout, NULL, _IONBF, 0);
    int remote_remote = !strcmp(argv[1], "remote_remote");
    /* Warm up so the block comes from a thread cache with slabs of its own. */
    for (int i = 0; i < 1000; i++) free(malloc(48));
    block = malloc(48);
    pthread_t t[2];
    int n = remote_remote ? 2 : 1;
    for (int i = 0; i < n; i++) pthread_create(&t[i], NULL, racer, NULL);
    while (atomic_load(&ready) < n)
        ;
    if (remote_remote) {
        atomic_store_explicit(&go, 1, memory_order_release);
    } else {
        atomic_fetch_add(&ready, 1);
        atomic_store_explicit(&go, 1, memory_order_release);
        free(block);
    }
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
    /* Both frees returned: the owner must find the second one when it collects (its next
     * refill or its exit), before the slot can be handed out twice. */
    void *seen[4096];
    for (int i = 0; i < 4096; i++) {
        seen[i] = malloc(48);
        for (int j = 0; j < i; j++)
            if (seen[j] == seen[i]) {
                printf("SLOT HANDED OUT TWICE\n");
                return 1;
            }
    }
    printf("NOT DETECTED: %s\n", argv[1]);
    return 0;
}
