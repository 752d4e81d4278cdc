/* Non-adjacent overflow at a computed offset: an unchecked index into a table of 8-byte
 * slots. The attacker computes the index that reaches a function pointer three objects
 * further on from glibc's deterministic layout (each 0x28-byte object takes a 0x30 chunk),
 * jumping over everything in between: canaries next to the table never see the write. */
#include "lab.h"

struct plugin {
    void (*init)(void);
    char name[0x20];
};

static void init_normally(void) { puts("plugin initialised normally"); }
static void win(void) { pwned("an out-of-bounds index wrote a function pointer three objects away"); }

int main(void) {
    lab_init();
    uint64_t *table = alloc_typed(0x28, DATA_TYPE(6));
    char *a = alloc_typed(0x28, DATA_TYPE(7));
    char *b = alloc_typed(0x28, DATA_TYPE(8));
    struct plugin *p = alloc_typed(sizeof *p, PTR_TYPE(9));
    p->init = init_normally;
    size_t index = 3 * 0x30 / 8; /* the attacker's computed index: 18, the table has 5 */
    table[index] = (uint64_t)(uintptr_t)win; /* the bug: no bounds check */
    p->init();
    free(p);
    free(b);
    free(a);
    free(table);
    noeffect("the write did not reach the plugin");
    return 0;
}
