// A library built with `mie c++` (tests/cc.rs): its allocations carry compiler type ids,
// and its blocks cross into the program that uses it in both directions.
#include <stdlib.h>
#include <string.h>

struct Node {
    Node *next;
    char *name;
    void (*visit)(Node *);
    long weight;
};

extern "C" {
// The classic wrapper: clang cannot see the type of the malloc inside it.
void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (!p)
        abort();
    return p;
}

// An allocator called through a function pointer (as Lua's l_alloc is).
typedef void *(*alloc_fn)(void *ud, void *ptr, size_t osize, size_t nsize);
static void *l_alloc(void *, void *ptr, size_t, size_t nsize) {
    if (nsize == 0) {
        free(ptr);
        return 0;
    }
    return realloc(ptr, nsize);
}
alloc_fn volatile lib_allocator = l_alloc;

Node *lib_node_typed(void) {
    Node *n = (Node *)malloc(sizeof(Node));
    memset(n, 0, sizeof *n);
    return n;
}
Node *lib_node_xmalloc(void) {
    Node *n = (Node *)xmalloc(sizeof(Node));
    memset(n, 0, sizeof *n);
    return n;
}
Node *lib_node_fnptr(void) {
    Node *n = (Node *)lib_allocator(0, 0, 0, sizeof(Node));
    memset(n, 0, sizeof *n);
    return n;
}
char *lib_chars(size_t n) {
    char *c = (char *)malloc(n);
    memset(c, 'x', n);
    return c;
}
char *lib_zeroed(size_t n) { return (char *)calloc(n, 1); }
char *lib_grow(char *p, size_t n) { return (char *)realloc(p, n); }
void *lib_aligned(size_t n) {
    void *p = 0;
    return posix_memalign(&p, 64, n) == 0 ? p : 0;
}
void lib_free(void *p) { free(p); }
Node *lib_new_node(void) { return new Node(); }
long *lib_new_array(size_t n) { return new long[n](); }
void lib_delete_node(Node *n) { delete n; }
void lib_delete_array(long *a) { delete[] a; }
}
