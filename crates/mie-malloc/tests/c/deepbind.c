/* A library loaded with dlopen(RTLD_DEEPBIND) binds malloc and free to the C library's own,
 * whatever is preloaded (php-cli loads extensions this way). Built twice: as the library
 * (-DDEEPBIND_LIB) and as the program that loads it.
 *   give_to_lib: the program hands a block from mie to the library, which frees it with the
 *                C library's free: the C library stops the program; mie names the cause.
 *   take_from_lib: the library hands a block from the C library's malloc to the program,
 *                which frees it with mie's free: an invalid free, with the cause named.
 *   pointer_from_lib: the library hands the program its free as a function pointer (a
 *                destructor, as php's phar extension does), which the program calls with a
 *                block from mie: the report names the library, not the program. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef DEEPBIND_LIB
void lib_free(void *p) { free(p); }
typedef void (*free_fn)(void *);
free_fn lib_destructor(void) { return free; }
void *lib_alloc(size_t n) {
    char *p = malloc(n);
    memset(p, 1, n);
    return p;
}
#else
int main(int argc, char **argv) {
    if (argc < 3) return 2;
    setvbuf(stdout, NULL, _IONBF, 0);
    void *h = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!h) {
        printf("dlopen: %s\n", dlerror());
        return 2;
    }
    void (*lib_free)(void *) = (void (*)(void *))dlsym(h, "lib_free");
    void *(*lib_alloc)(size_t) = (void *(*)(size_t))dlsym(h, "lib_alloc");
    if (!strcmp(argv[1], "give_to_lib")) {
        char *p = malloc(100);
        memset(p, 2, 100);
        lib_free(p);
    } else if (!strcmp(argv[1], "pointer_from_lib")) {
        void (*(*lib_destructor)(void))(void *) = (void (*(*)(void))(void *))dlsym(h, "lib_destructor");
        void (*destroy)(void *) = lib_destructor();
        char *p = malloc(100);
        memset(p, 3, 100);
        destroy(p);
        printf("after destroy\n"); /* the call above is not a tail call */
    } else if (!strcmp(argv[1], "take_from_lib")) {
        char *p = lib_alloc(100);
        free(p);
    } else {
        return 2;
    }
    printf("NOT DETECTED: %s\n", argv[1]);
    return 0;
}
#endif
