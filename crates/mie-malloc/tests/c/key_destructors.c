/* Frees and mallocs from a thread's key destructors, which run after mie's own key
 * destructor gave the thread's cache back (the program's key is created after mie's), so
 * they go through the fallback cache. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static pthread_key_t key;
static void dtor(void *v) {
    free(v);
    for (int i = 0; i < 1000; i++) {
        char *p = malloc(16 + i % 200);
        memset(p, 1, 16 + i % 200);
        free(p);
    }
    static int rounds;
    if (__atomic_add_fetch(&rounds, 1, __ATOMIC_RELAXED) < 3) pthread_setspecific(key, malloc(10));
}
static void *run(void *a) {
    (void)a;
    free(malloc(100));
    pthread_setspecific(key, malloc(32));
    return NULL;
}
int main(void) {
    free(malloc(1));
    pthread_key_create(&key, dtor);
    for (int r = 0; r < 50; r++) {
        pthread_t t[4];
        for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, run, NULL);
        for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    }
    puts("key destructors: ok");
    return 0;
}
