/* Use-after-free type confusion: a message buffer (plain bytes) is freed while a stale
 * pointer to it remains; an event object of the same size, holding a callback, is allocated
 * next and gets the same memory. Writing attacker bytes through the stale message pointer
 * now writes the event's callback. */
#include "lab.h"

struct message {
    char text[32];
};

struct event {
    void (*callback)(void);
    char tag[24];
};

static void callback_normally(void) { puts("event fired normally"); }
static void win(void) { pwned("bytes written through a freed message became an event's callback"); }

int main(void) {
    lab_init();
    struct message *m = alloc_typed(sizeof *m, DATA_TYPE(13));
    strcpy(m->text, "hello");
    free(m);
    struct event *e = alloc_typed(sizeof *e, PTR_TYPE(14));
    e->callback = callback_normally;
    /* The bug: a late "edit message" request still goes to the freed message. */
    unsigned char input[8];
    void (*target)(void) = win;
    memcpy(input, &target, 8);
    copy_bytes(m->text, input, sizeof input);
    e->callback();
    keep_working(sizeof *m, DATA_TYPE(13));
    free(e);
    noeffect("the event's callback was not reached");
    return 0;
}
