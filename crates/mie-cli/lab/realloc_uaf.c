/* realloc use-after-free: a log buffer grows with realloc, which moves it, but a cursor
 * into the old buffer is kept and written through. The old memory has meanwhile gone to a
 * new object of the same size, a connection holding a callback. */
#include "lab.h"

struct conn {
    void (*on_data)(void);
    char peer[0x38];
};

static void on_data_normally(void) { puts("connection callback ran normally"); }
static void win(void) { pwned("a write through a pointer into a realloc'd-away buffer hit a callback"); }

int main(void) {
    lab_init();
    char *log = alloc_typed(0x40, DATA_TYPE(22));
    strcpy(log, "start;");
    char *other = alloc_typed(0x20, DATA_TYPE(30)); /* some later object: the log cannot grow in place */
    char *cursor = log; /* kept across the realloc: the bug */
    log = realloc(log, 0x400);
    struct conn *c = alloc_typed(sizeof *c, PTR_TYPE(23));
    c->on_data = on_data_normally;
    void (*target)(void) = win;
    copy_bytes(cursor, &target, 8); /* append through the stale cursor */
    c->on_data();
    keep_working(0x40, DATA_TYPE(22));
    free(c);
    free(log);
    free(other);
    noeffect("the stale cursor did not reach the connection");
    return 0;
}
