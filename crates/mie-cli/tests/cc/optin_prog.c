// A program built with gcc that uses a library built with `mie c++` (tests/cc.rs). Run
// without mie it must behave as with a plain build of the library; run under mie (LD_PRELOAD)
// the library's allocations are typed. Prints what the test checks.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct Node Node;
void *xmalloc(size_t);
Node *lib_node_typed(void), *lib_node_xmalloc(void), *lib_node_fnptr(void), *lib_new_node(void);
char *lib_chars(size_t), *lib_zeroed(size_t), *lib_grow(char *, size_t);
void *lib_aligned(size_t);
long *lib_new_array(size_t);
void lib_free(void *), lib_delete_node(Node *), lib_delete_array(long *);
void *_Znwm(size_t);
void _ZdlPv(void *);

int main(void) {
    for (int i = 0; i < 2000; i++) {
        // The library's blocks, freed by the program.
        free(lib_node_typed());
        free(lib_node_xmalloc());
        free(lib_node_fnptr());
        char *c = lib_grow(lib_chars(100), 3000);
        free(c);
        free(lib_zeroed(64));
        free(lib_aligned(200));
        _ZdlPv(lib_new_node()); // operator delete, as the program's `delete` would call it
        // The program's blocks, freed (and grown) by the library.
        char *m = malloc(48);
        strcpy(m, "the program's");
        m = lib_grow(m, 5000);
        lib_free(m);
        lib_delete_node((Node *)_Znwm(32));
        lib_delete_array(lib_new_array(10));
    }
    // Under mie: which buckets the library's allocations went to (0 = pointer-free data).
    int (*bucket_of)(const void *) = (int (*)(const void *))dlsym(RTLD_DEFAULT, "mie_bucket_of");
    if (bucket_of) {
        void *typed = lib_node_typed(), *x = lib_node_xmalloc(), *f = lib_node_fnptr(), *chars = lib_chars(32);
        printf("buckets: typed %d xmalloc %d fnptr %d chars %d\n", bucket_of(typed), bucket_of(x), bucket_of(f), bucket_of(chars));
    }
    // The process's mappings, apart from libmie.so's own: without mie, as many as with a
    // plain build of the library (no heap of mie's is set up).
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[512];
    int n = 0;
    while (maps && fgets(line, sizeof line, maps))
        n += strstr(line, "libmie.so") == 0;
    printf("mappings %d\n", n);
    if (getenv("SHOW_MAPS")) { rewind(maps); while (fgets(line, sizeof line, maps)) fputs(line, stderr); }
    puts("ok");
    return 0;
}
