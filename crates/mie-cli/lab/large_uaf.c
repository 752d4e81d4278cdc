/* Use after free of a large block: a 256 KiB image buffer is freed while a decoder still
 * holds it, and a new 256 KiB object with a function pointer takes the same memory. On
 * glibc the attacker first makes large blocks come from the heap instead of mmap (freeing a
 * 512 KiB mapping raises the dynamic mmap threshold), so freed memory is reused at once. */
#include "lab.h"

struct codec {
    void (*decode)(void);
    char state[256 * 1024 - 8];
};

static void decode_normally(void) { puts("decoded normally"); }
static void win(void) { pwned("a stale pointer into a freed large block overwrote a codec's function pointer"); }

int main(void) {
    lab_init();
    free(malloc(512 * 1024));
    char *image = alloc_typed(256 * 1024, DATA_TYPE(24));
    memset(image, 0, 256 * 1024);
    free(image); /* the decoder still holds `image` */
    struct codec *c = alloc_typed(sizeof *c, PTR_TYPE(25));
    c->decode = decode_normally;
    void (*target)(void) = win;
    copy_bytes(image, &target, 8); /* the decoder writes its output through the stale pointer */
    c->decode();
    free(c);
    noeffect("the stale pointer did not reach the codec");
    return 0;
}
