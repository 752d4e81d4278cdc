/* Cross-thread use after free: the main thread cancels a job and frees it while a worker
 * thread still holds it; the main thread then creates a credentials object of the same size,
 * which takes the job's memory. The worker finishes and records the job's status through
 * its stale pointer: on glibc that is the credentials' admin flag. */
#include "lab.h"

struct job {
    char *name;
    uint64_t progress;
    uint64_t status;
};

struct creds {
    char *user;
    uint64_t uid;
    uint64_t is_admin;
};

static struct job *volatile shared;
static volatile int go, done;

static void *worker(void *arg) {
    (void)arg;
    struct job *j = shared;
    while (!go) sched_yield();
    j->status = 1; /* "finished": written through the stale pointer */
    done = 1;
    return NULL;
}

int main(void) {
    lab_init();
    struct job *j = alloc_typed(sizeof *j, PTR_TYPE(28));
    j->name = "backup";
    shared = j;
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    free(j); /* cancelled: the bug is that the worker still holds it */
    struct creds *c = alloc_typed(sizeof *c, PTR_TYPE(29));
    memset(c, 0, sizeof *c);
    c->user = "guest";
    go = 1;
    pthread_join(t, NULL);
    if (c->is_admin) pwned("another thread's stale write made a guest admin");
    keep_working(sizeof *j, PTR_TYPE(28));
    free(c);
    noeffect("the worker's stale write did not reach the credentials");
    return 0;
}
