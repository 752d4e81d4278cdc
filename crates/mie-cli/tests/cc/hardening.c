/* Bugs a heap allocator cannot see, stopped by the checks `mie cc` turns on, each with a
 * mie report: an array index past a struct member's end (-fsanitize=bounds, trap), a stack
 * buffer overrun by strcpy (_FORTIFY_SOURCE), the same without fortify (stack protector). */
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
struct S { int a[4]; int secret; };
__attribute__((noinline)) int get(struct S *s, int i) { return s->a[i]; }
__attribute__((noinline)) void smash(const char *src) { char buf[8]; strcpy(buf, src); puts(buf); }
int main(int argc, char **argv) {
    struct S s = {{1,2,3,4}, 42};
    if (argc > 1 && argv[1][0] == 'b') printf("%d\n", get(&s, atoi(argv[2])));
    if (argc > 1 && argv[1][0] == 's') smash(argv[2]);
    return 0;
}
