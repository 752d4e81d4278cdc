/* Use-after-free read (information leak): a session object holding a key is freed at
 * logout, but a stale pointer to it is still used to render a status page. */
#include "lab.h"

struct session {
    char user[16];
    char key[32];
};

int main(void) {
    lab_init();
    struct session *s = alloc_typed(sizeof *s, DATA_TYPE(10));
    strcpy(s->user, "alice");
    strcpy(s->key, "k3y-7f9a0c21-alice");
    free(s); /* logout */
    /* The bug: the status page still holds `s`. glibc's free only overwrote the first 16
     * bytes (its free-list link and key), so the session key is still there. */
    char leaked[32];
    copy_bytes(leaked, s->key, sizeof leaked);
    leaked[31] = 0;
    if (strcmp(leaked, "k3y-7f9a0c21-alice") == 0) pwned("read the session key of a freed session");
    noeffect("the freed session no longer held its key");
    return 0;
}
