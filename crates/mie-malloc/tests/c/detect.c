/* Each mode commits one heap error; under libmie.so every one must end in a report and
 * SIGABRT (or, for a large block's use after free, SIGSEGV on its inaccessible pages).
 * The line after the error prints "NOT DETECTED" so a silent pass is visible. */
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ADDR_MASK ((1ull << 56) - 1)

static char global_buf[64];

static void *volatile sink;

static volatile int program_handler_calls;
static void program_handler(int sig, siginfo_t *si, void *uc) {
    (void)sig; (void)si; (void)uc;
    program_handler_calls++;
}
static void *allocating_thread(void *arg) { (void)arg; free(malloc(32)); return NULL; }

/* A pool thread that uses the heap and is still there at exit (nobody joins it). */
static void *idle_thread(void *arg) { (void)arg; sink = malloc(32); for (;;) pause(); return NULL; }

/* A thread that overruns a buffer it never frees, then ends (its slab goes to the pool). */
static void *overrunning_thread(void *arg) {
    (void)arg;
    char *p = malloc(40);
    for (int i = 0; i < 48; i++) ((volatile char *)p)[i] = ('A' + i % 26) & ~1; /* even */
    for (int i = 0; i < 20; i++) sink = malloc(40);
    return NULL;
}

/* Two of the `n` blocks `ps` in neighbouring slots of `slot` bytes (addresses compared without
   the arm64 MTE tag in the top byte): 1 with *first and *second set, 0 if there are none. */
static int neighbours(char **ps, int n, size_t slot, char **first, char **second) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            if (((uintptr_t)ps[j] & ADDR_MASK) == ((uintptr_t)ps[i] & ADDR_MASK) + slot) {
                *first = ps[i];
                *second = ps[j];
                return 1;
            }
    return 0;
}

/* A thread that finds two of its blocks in neighbouring slots and hands them to main, waits
   until main has freed the second, then allocates (its refills take back what other
   threads freed in its slabs). */
static char *volatile neighbour_first, *volatile neighbour_second;
static volatile int neighbour_freed;
static void *neighbours_thread(void *arg) {
    (void)arg;
    char *ps[400];
    for (int i = 0; i < 400; i++) ps[i] = malloc(40);
    char *first, *second;
    if (neighbours(ps, 400, 48, &first, &second)) {
        neighbour_first = first;
        neighbour_second = second;
    } else {
        neighbour_second = (char *)1;
        return NULL;
    }
    while (!neighbour_freed) usleep(1000);
    for (int i = 0; i < 2000; i++) sink = malloc(40); /* kept: the bins run dry */
    return NULL;
}

/* A pool thread that overruns a buffer it never frees, then waits, alive at exit (its slab
   stays its own). */
static volatile int worker_overran;
static void *overrunning_idle_thread(void *arg) {
    size_t n = (size_t)arg; /* 40, or a large block */
    sink = malloc(32); /* a thread cache of its own (a large block alone needs none) */
    char *p = malloc(n);
    for (size_t i = 0; i < n + 8; i++) ((volatile char *)p)[i] = ('A' + i % 26) & ~1; /* even */
    sink = p;
    worker_overran = 1;
    for (;;) pause();
    return NULL;
}

/* What GNU tools do at exit (gnulib's close_stdout): close stdout and stderr in an exit
   handler, which runs before mie's exit checks. */
static void close_standard_streams(void) { fclose(stdout); fclose(stderr); }

/* One call site, so the churn below uses the same bucket as the block it follows. */
__attribute__((noinline)) static char *alloc_at_one_site(size_t n) { return malloc(n); }

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    const char *m = argv[1];
    setvbuf(stdout, NULL, _IONBF, 0);
    if (!strcmp(m, "double_free")) {
        char *p = malloc(24);
        free(p);
        free(p);
    } else if (!strcmp(m, "double_free_full_stderr")) {
        /* stderr a full pipe in non-blocking mode (node.js sets its streams so), read by a
           child that starts only after a while: the report must wait for room, not be lost. */
        int pfd[2];
        if (pipe(pfd)) return 2;
        fflush(stdout);
        if (fork() == 0) {
            close(pfd[1]);
            usleep(300 * 1000);
            char b[4096];
            ssize_t n;
            while ((n = read(pfd[0], b, sizeof b)) > 0)
                for (ssize_t i = 0; i < n; i++)
                    if (b[i] != 'x') { (void)!write(1, b + i, n - i); break; }
            _exit(0);
        }
        close(pfd[0]);
        dup2(pfd[1], 2);
        close(pfd[1]);
        fcntl(2, F_SETFL, fcntl(2, F_GETFL) | O_NONBLOCK);
        char fill[4096];
        memset(fill, 'x', sizeof fill);
        while (write(2, fill, sizeof fill) > 0) {}
        char *p = malloc(24);
        free(p);
        free(p);
    } else if (!strcmp(m, "double_free_delayed")) {
        /* The slot has left the quarantine and may be cached again: still caught. */
        char *p = malloc(40);
        free(p);
        for (int i = 0; i < 10000; i++) free(malloc(40));
        free(p);
    } else if (!strcmp(m, "interior_free")) {
        char *p = malloc(64);
        free(p + 16);
    } else if (!strcmp(m, "misaligned_free")) {
        char *p = malloc(64);
        free(p + 1);
    } else if (!strcmp(m, "stack_free")) {
        char buf[32];
        sink = buf;
        free(sink);
    } else if (!strcmp(m, "global_free")) {
        free(global_buf);
    } else if (!strcmp(m, "foreign_free")) {
        /* "House of spirit": a fake block in a non-heap buffer. */
        static size_t fake[8] = {0, 0x41};
        free(&fake[2]);
    } else if (!strcmp(m, "realloc_freed")) {
        char *p = malloc(32);
        free(p);
        sink = realloc(p, 64);
    } else if (!strcmp(m, "realloc_interior")) {
        char *p = malloc(100);
        sink = realloc(p + 8, 200);
    } else if (!strcmp(m, "usable_size_freed")) {
        char *p = malloc(32);
        free(p);
        printf("%zu\n", malloc_usable_size(p));
    } else if (!strcmp(m, "usable_size_foreign")) {
        printf("%zu\n", malloc_usable_size(global_buf));
    } else if (!strcmp(m, "overflow")) {
        /* Plain stores, not memset: a checked memset would stop this at the call. */
        char *p = malloc(20);
        for (int i = 0; i < 24; i++) ((volatile char *)p)[i] = 'B'; /* 4 past (even: canary bytes are odd) */
        free(p);
    } else if (!strcmp(m, "off_by_one_nul")) {
        char *p = malloc(16);
        const char *s = "0123456789abcdef"; /* 16 chars + NUL: one byte past */
        for (int i = 0; i <= 16; i++) ((volatile char *)p)[i] = s[i];
        free(p);
    } else if (!strcmp(m, "overflow_on_realloc")) {
        char *p = malloc(100);
        ((volatile char *)p)[100] = 2; /* even: never equal to a canary byte */
        sink = realloc(p, 4000);
    } else if (!strcmp(m, "write_after_free")) {
        /* Write through a dangling pointer, then churn so the slot is handed out again. */
        char *p = alloc_at_one_site(48);
        free(p);
        ((volatile char *)p)[8] = 'X';
        for (int i = 0; i < 100000; i++) free(alloc_at_one_site(48));
    } else if (!strcmp(m, "write_after_free_at_exit")) {
        /* Write through a dangling pointer, then exit while the block still waits in the
           quarantine: the exit check finds it. */
        char *p = malloc(48);
        free(p);
        ((volatile char *)p)[8] = 'X';
        printf("exiting\n");
        exit(0);
    } else if (!strncmp(m, "never_freed_overflow", 20)) {
        /* _stderr_closed: the streams closed by an exit handler; _early: by main, before exit;
           _threads: another thread still uses the heap at exit. */
        if (!strcmp(m, "never_freed_overflow_stderr_closed")) atexit(close_standard_streams);
        if (!strcmp(m, "never_freed_overflow_threads")) {
            pthread_t t;
            pthread_create(&t, NULL, idle_thread, NULL);
            while (!sink) usleep(1000);
        }
        /* A buffer that lives until exit, overrun by plain stores (CVE-2021-3156's shape):
           no free ever checks its canary, the exit sweep does. 56 bytes, a class of its own:
           the 32-byte node glibc allocates when mie registers its main-thread exit hook
           (__cxa_thread_atexit_impl) would share a 40-byte block's class, and in the slot
           after it (2 runs in 300) its free in exit's __call_tls_dtors finds the overrun
           before the sweep does. */
        char *p = malloc(56);
        /* Even bytes: a canary byte is always odd, so byte 0 past the end is always seen. */
        for (int i = 0; i < 64; i++) ((volatile char *)p)[i] = ('A' + i % 26) & ~1;
        /* Churn in other classes only (64 bytes and up): a block of p's class could take the
           slot after p, and its free would find the overrun before exit (about 1 run in 150). */
        for (int i = 0; i < 200; i++) free(malloc(64 + (i * 37) % 3000));
        printf("exiting\n");
        if (!strcmp(m, "never_freed_overflow_stderr_closed_early")) close_standard_streams();
        exit(0);
    } else if (!strcmp(m, "ended_thread_never_freed_overflow")) {
        /* The overrun block belongs to a thread that has ended; another one is still there.
           main has a cache of its own first (else it would take the ended thread's). */
        pthread_t t, w;
        free(malloc(64));
        pthread_create(&t, NULL, idle_thread, NULL);
        while (!sink) usleep(1000);
        pthread_create(&w, NULL, overrunning_thread, NULL);
        pthread_join(w, NULL);
        for (int i = 0; i < 200; i++) free(malloc(64 + (i * 37) % 3000));
        printf("exiting\n");
        exit(0);
    } else if (!strcmp(m, "idle_worker_never_freed_overflow") || !strcmp(m, "idle_worker_never_freed_large_overflow")) {
        /* The overrun block belongs to a thread that is still there at exit, waiting (a
           pool thread nobody stops): its slab is swept too, and so is the large block. */
        pthread_t t;
        free(malloc(64));
        size_t n = !strcmp(m, "idle_worker_never_freed_overflow") ? 40 : 200000;
        pthread_create(&t, NULL, overrunning_idle_thread, (void *)n);
        while (!worker_overran) usleep(1000);
        for (int i = 0; i < 200; i++) free(malloc(64 + (i * 37) % 3000));
        printf("exiting\n");
        exit(0);
    } else if (!strcmp(m, "never_freed_skip_overflow")) {
        /* An out-of-bounds store that skips the block's canary (an index past the end, not a
           run of stores): 8 bytes in a 16-byte slot, and byte 8 of the slot after it, which
           never held a block. The sweep at exit finds the never-used slot written and names
           the live block before it. (A block whose next slot is one of these, or starts a
           page, where a slab may end, is not the one written.) */
        char *b[8];
        for (int i = 0; i < 8; i++) b[i] = malloc(8);
        char *q = NULL;
        for (int i = 0; i < 8 && !q; i++) {
            int taken = ((uintptr_t)(b[i] + 16) & 4095) == 0;
            for (int j = 0; j < 8; j++) taken |= b[j] == b[i] + 16;
            if (!taken) q = b[i];
        }
        ((volatile char *)q)[24] = 'X';
        printf("exiting\n");
        exit(0);
    } else if (!strcmp(m, "never_freed_large_overflow")) {
        /* Among other large blocks, live and freed (the sweep's scan of the large-block table
           stops after the last live block: every live one must still be reached). */
        void *other[6];
        for (int i = 0; i < 6; i++) other[i] = malloc(150000 + 4096 * i);
        free(other[1]);
        free(other[4]);
        char *p = malloc(200000);
        void *after = malloc(300000);
        ((volatile char *)p)[200000] = 2; /* even: never a canary byte */
        (void)after;
        printf("exiting\n");
        exit(0);
    } else if (!strcmp(m, "slab_gap_overflow")) {
        /* 65539 bytes (an 80 KiB slot alone in its 128 KiB slab), overrun by 64 KiB: the copy
           runs out of the slot into the unmapped gap after it and faults there. */
        char *p = malloc(65539);
        for (size_t i = 0; i < 65539 + 65536; i++) ((volatile char *)p)[i] = 'A' + i % 26;
    } else if (!strcmp(m, "null_deref")) {
        volatile int *q = (volatile int *)((unsigned long)argc * 0);
        printf("%d\n", q[3]);
    } else if (!strcmp(m, "divide_by_zero")) {
        volatile int zero = argc - argc;
        printf("%d\n", 10 / zero);
    } else if (!strcmp(m, "memcpy_before_block")) {
        /* A read that starts 32 bytes before a live 8-byte block (two free slots before it). */
        char *a = malloc(8), out[64];
        memcpy(out, (char *)((volatile unsigned long)a - 32), 40);
        printf("NOT DETECTED %d\n", out[0]);
    } else if (!strcmp(m, "large_double_free_later")) {
        /* Freed twice, the second time long after its quarantine ended. */
        char *p = malloc(256 << 10);
        free(p);
        for (int i = 0; i < 1024; i++)
            free(malloc(256 << 10));
        free(p);
    } else if (!strcmp(m, "large_interior_free")) {
        char *p = malloc(256 << 10);
        free((char *)((volatile unsigned long)p + 4096));
    } else if (!strcmp(m, "large_far_write")) {
        /* 1 MiB past a 256 KiB block: beyond its guard page, in mie's large-block window. */
        char *p = malloc(256 << 10);
        ((volatile char *)p)[(256 << 10) + (1 << 20)] = 1;
    } else if (!strcmp(m, "first_slot_underflow")) {
        /* A write just before a block that is the first slot of its slab, then its free. */
        for (int i = 0; i < 100000; i++) {
            char *p = alloc_at_one_site(48);
            if (((unsigned long)p & 0xffff) == 0) {
                /* Even: never a canary byte (odd, keyed), never a free slot's zero. An odd
                   value left the byte as it was when the canary byte there was that value
                   (1 run in about 400). */
                ((volatile char *)p)[-8] = 2;
                free(p);
                break;
            }
        }
    } else if (!strcmp(m, "pooled_slab_underflow")) {
        /* The same with the slab before in its pool, owned by no thread: this one freed
           every block there and gave it back, empty, at malloc_trim. */
        enum { N = 3000, SLAB = 16384 }; /* 100-byte blocks: 112-byte slots, 16 KiB slabs */
        static char *ps[N];
        for (int i = 0; i < N; i++) ps[i] = alloc_at_one_site(100);
        for (int i = 0; i < N; i++) {
            uintptr_t b = (uintptr_t)ps[i] & ADDR_MASK;
            int before = 0;
            for (int j = 0; j < N && b % SLAB == 0; j++)
                before += ((uintptr_t)ps[j] & ADDR_MASK) >= b - SLAB && ((uintptr_t)ps[j] & ADDR_MASK) < b;
            if (!before) continue; /* not a first slot, or the first slab of its segment */
            for (int j = 0; j < N; j++)
                if (((uintptr_t)ps[j] & ADDR_MASK) >= b - SLAB && ((uintptr_t)ps[j] & ADDR_MASK) < b) free(ps[j]);
            malloc_trim(0);
            printf("block %p, %d blocks freed in the slab before\n", (void *)ps[i], before);
            ((volatile char *)ps[i])[-1] = 2; /* even: never a canary byte */
            free(ps[i]);
            printf("NOT DETECTED: %s\n", m);
            return 0;
        }
        printf("no block in a first slot after a slab of the same site\n");
        return 4;
    } else if (!strcmp(m, "remote_underflow")) {
        /* A write just before a block that another thread allocated, then its free by this
           thread: the thread that owns the slab finds it when it takes the block back. */
        pthread_t t;
        if (pthread_create(&t, NULL, neighbours_thread, NULL)) return 2;
        while (!neighbour_second) usleep(1000);
        if (neighbour_second == (char *)1) return 4;
        printf("first %p second %p\n", (void *)neighbour_first, (void *)neighbour_second);
        ((volatile char *)neighbour_second)[-1] = 2; /* even: never a canary byte */
        free(neighbour_second);
        malloc_trim(0); /* tells the owner now (remote frees are told in batches) */
        neighbour_freed = 1;
        pthread_join(t, NULL);
        printf("NOT DETECTED: %s\n", m);
        return 0;
    } else if (!strcmp(m, "large_double_free")) {
        char *p = malloc(1 << 20);
        free(p);
        free(p);
    } else if (!strcmp(m, "large_overflow")) {
        char *p = malloc(300000);
        ((volatile char *)p)[300000] = 0;
        free(p);
    } else if (!strcmp(m, "large_use_after_free")) {
        char *p = malloc(1 << 20);
        free(p);
        ((volatile char *)p)[100] = 1; /* pages are inaccessible: SIGSEGV */
    } else if (!strcmp(m, "large_use_after_reuse")) {
        /* The freed block's pages are moved to the next block of that size: the new block
         * works, and the old address still faults. */
        char *p = malloc(1 << 20);
        memset(p, 1, 1 << 20);
        free(p);
        char *q = malloc(1 << 20);
        memset(q, 2, 1 << 20);
        if (q == p || q[12345] != 2) return 3;
        ((volatile char *)p)[100] = 1;
    } else if (!strcmp(m, "underflow_short") || !strcmp(m, "underflow_long")) {
        /* Find two blocks in neighbouring slots, write one byte just before the second (an
         * underflow), then free the first: its canary covers the end of its slot. */
        size_t n = !strcmp(m, "underflow_short") ? 40 : 1100;
        size_t slot = n == 40 ? 48 : 1280;
        char *ps[400];
        for (int i = 0; i < 400; i++) ps[i] = alloc_at_one_site(n);
        char *first, *second;
        if (!neighbours(ps, 400, slot, &first, &second)) {
            printf("no neighbouring slots found\n");
            return 3;
        }
        printf("first %p second %p\n", (void *)first, (void *)second);
        ((volatile char *)second)[-1] = 2; /* even: never a canary byte */
        free(first);
        printf("NOT DETECTED: %s\n", m);
        return 0;
    } else if (!strcmp(m, "overflow_found_by_next")) {
        /* Find two blocks in neighbouring slots, overflow the first by 8 bytes (its whole
         * slack), then free the second: its start check reads the first one's canary, and
         * the write is the first block's overflow, not an underflow of the second. */
        char *ps[400];
        for (int i = 0; i < 400; i++) ps[i] = alloc_at_one_site(40);
        char *first, *second;
        if (!neighbours(ps, 400, 48, &first, &second)) {
            printf("no neighbouring slots found\n");
            return 3;
        }
        printf("first %p second %p\n", (void *)first, (void *)second);
        for (int b = 0; b < 8; b++) ((volatile char *)first)[40 + b] = 'B'; /* even: never a canary byte */
        free(second);
        printf("NOT DETECTED: %s\n", m);
        return 0;
    } else if (!strcmp(m, "underflow_free_neighbour")) {
        /* One byte written just before a block whose previous slot is free: found when the
           block is freed (x86-64: the free slot's zero tail is checked), or at the write (MTE). */
        char *ps[400];
        for (int i = 0; i < 400; i++) ps[i] = alloc_at_one_site(40);
        char *first, *second;
        if (!neighbours(ps, 400, 48, &first, &second)) {
            printf("no neighbouring slots found\n");
            return 3;
        }
        free(first);
        printf("block %p\n", (void *)second);
        ((volatile char *)second)[-1] = 2;
        free(second);
        printf("NOT DETECTED: %s\n", m);
        return 0;
    } else if (!strcmp(m, "zero_read")) {
        char *p = malloc(0);
        printf("%d\n", ((volatile char *)p)[0]);
    } else if (!strcmp(m, "zero_write")) {
        char *p = malloc(0);
        ((volatile char *)p)[3] = 1;
    } else if (!strcmp(m, "zero_double_free")) {
        char *p = malloc(0);
        free(p);
        free(p);
    } else if (!strcmp(m, "zero_memcpy")) {
        char *p = malloc(0);
        memcpy(p, "abc", 4);
    } else if (!strcmp(m, "large_guard_overflow")) {
        char *p = malloc(4 << 20);
        ((volatile char *)p)[(4 << 20) + 4096] = 1; /* into the guard page after the block */
    } else if (!strcmp(m, "wild_heap_write")) {
        char *p = malloc(64);
        ((volatile char *)p)[(size_t)3 << 30] = 1; /* 3 GiB on: inside mie's heap range, no slab there */
    } else if (!strcmp(m, "raise_segv")) {
        /* A SIGSEGV sent to oneself is not a fault: it must end the process (signal 11),
         * as it does without mie. */
        raise(SIGSEGV);
        printf("alive after raise\n");
        return 0;
    } else if (!strcmp(m, "kill_segv")) {
        kill(getpid(), SIGSEGV);
        printf("alive after kill\n");
        return 0;
    } else if (!strcmp(m, "sent_segv_then_uaf")) {
        /* The program's own SIGSEGV handler, installed after mie's; a new thread makes mie
         * put itself back in front and chain to it. A sent signal reaches the program's
         * handler and the program goes on; mie still reports the heap error after it. */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = program_handler;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGSEGV, &sa, NULL);
        pthread_t t;
        pthread_create(&t, NULL, allocating_thread, NULL);
        pthread_join(t, NULL);
        raise(SIGSEGV);
        kill(getpid(), SIGSEGV);
        printf("program handler ran %d times\n", program_handler_calls);
        char *p = malloc(1 << 20);
        free(p);
        ((volatile char *)p)[100] = 1;
    } else if (!strcmp(m, "exec_small") || !strcmp(m, "exec_large")) {
        /* A corrupted function pointer into a live heap block: the heap is not executable. */
        size_t n = !strcmp(m, "exec_small") ? 64 : 300000;
        unsigned char *p = malloc(n);
        memset(p, 0xc3, n); /* ret, on x86-64 */
        void (*f)(void) = (void (*)(void))(void *)p;
        f();
    } else if (!strcmp(m, "readonly_page")) {
        /* The program makes a page of its own block read-only and writes to it: not a heap
         * error, the process gets SIGSEGV as without mie, with a note. */
        char *p = malloc(1 << 20);
        char *page = (char *)(((uintptr_t)p + 8191) & ~(uintptr_t)4095);
        mprotect(page, 4096, PROT_READ);
        page[10] = 1;
    } else {
        return 2;
    }
    printf("NOT DETECTED: %s\n", m);
    return 0;
}
