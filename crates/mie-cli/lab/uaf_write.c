/* Use-after-free write: a logged-out user's object is freed but a stale pointer to it is
 * still used to update its flags. The next object of the same size, an account, takes the
 * freed chunk (glibc's tcache is LIFO), so the stale write lands on the account's admin flag. */
#include "lab.h"

struct user {
    char *name;
    uint64_t pad[2];
    uint64_t flags;
};

struct account {
    char *owner;
    uint64_t balance;
    uint64_t limit;
    uint64_t is_admin;
};

int main(void) {
    lab_init();
    struct user *u = alloc_typed(sizeof *u, PTR_TYPE(11));
    u->name = "mallory";
    free(u); /* logout */
    struct account *acct = alloc_typed(sizeof *acct, PTR_TYPE(12));
    memset(acct, 0, sizeof *acct);
    acct->owner = "bob";
    u->flags = 1; /* the bug: the stale pointer is still written through */
    if (acct->is_admin) pwned("a write through a freed user's pointer made bob's account admin");
    keep_working(sizeof *u, PTR_TYPE(11));
    free(acct);
    noeffect("the stale write did not reach the account");
    return 0;
}
