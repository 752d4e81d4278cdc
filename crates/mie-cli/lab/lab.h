/* Shared by the protection lab's attack programs (`mie demo`).
 *
 * Each program is a small, realistic bug plus the exploit step that turns it into control of
 * the program: it prints "PWNED: ..." and exits when the attack takes control, and
 * "NOEFFECT: ..." when the exploit step did not reach its goal. Offsets and sizes are the
 * ones an attacker would learn from glibc's deterministic heap layout (glibc 2.36, 64-bit):
 * chunk headers of 16 bytes with the size field 8 bytes before the user data, LIFO tcache
 * bins of 7, safe-linked free lists.
 *
 * Allocations name their type the way a typed-allocation compiler emits them (Apple's
 * malloc_type_malloc): a descriptor saying whether the type holds pointers. glibc has no such
 * entry point, so there the weak reference is null and plain malloc is used: the same binary
 * runs unchanged under both allocators. */
#ifndef MIE_LAB_H
#define MIE_LAB_H
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef unsigned long long malloc_type_id_t;
void *malloc_type_malloc(size_t size, malloc_type_id_t type) __attribute__((weak));

#define DATA_TYPE(n) ((1ull << 56) | (n)) /* no pointers: bytes, text */
#define PTR_TYPE(n) ((1ull << 48) | (n))  /* holds pointers */

#ifdef LAB_COMPILER_TYPES
/* `mie demo --typed`: no hand-written type ids; plain malloc, whose type the compiler
 * (clang -fsanitize=alloc-token, through `mie cc`) works out from `sizeof *p`. */
#define alloc_typed(n, t) ((void)(t), malloc(n))
#else
static inline void *alloc_typed(size_t n, malloc_type_id_t t) {
    return malloc_type_malloc ? malloc_type_malloc(n, t) : malloc(n);
}
#endif

/* The attack took control: say so and stop (the program's state is the attacker's now). */
static inline void pwned(const char *what) {
    printf("PWNED: %s\n", what);
    fflush(stdout);
    _exit(0);
}

static inline void noeffect(const char *what) {
    printf("NOEFFECT: %s\n", what);
    fflush(stdout);
}

/* The program goes on with its normal work: objects of type `t` come and go. An allocator
 * that checks freed memory when it hands it out again finds a dangling write here. */
static inline void keep_working(size_t n, malloc_type_id_t t) {
    for (int i = 0; i < 4000; i++) {
        volatile char *p = alloc_typed(n, t);
        p[0] = 1;
        free((void *)p);
    }
}

/* The program's own copy routine (a byte loop, as in much real code). The bad writes and
 * reads of the lab go through it rather than libc's memcpy, so the access itself is what
 * the hardware sees on every machine and emulator. */
static inline void copy_bytes(void *dst, const void *src, size_t n) {
    volatile unsigned char *d = dst;
    const volatile unsigned char *s = src;
    for (size_t i = 0; i < n; i++) d[i] = s[i];
}

static inline void lab_init(void) { setvbuf(stdout, NULL, _IONBF, 0); }
#endif
