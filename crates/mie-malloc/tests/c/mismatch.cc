// Allocation-kind checks: each mode releases a block the wrong way and must end in an
// alloc-dealloc-mismatch report; "legal" releases every kind the right way, sized and
// aligned forms included, for small, large and zero-size blocks.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <new>

extern "C" void free_sized(void *, size_t) __attribute__((weak));
extern "C" void free_aligned_sized(void *, size_t, size_t) __attribute__((weak));

struct Obj {
    long a, b, c;
};

static void *volatile sink;

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *m = argv[1];
    setvbuf(stdout, nullptr, _IONBF, 0);
    const std::align_val_t a64{64};
    if (!strcmp(m, "legal")) {
        for (size_t n : {1ul, 24ul, 100ul, 5000ul, 300000ul}) {
            void *p = ::operator new(n);
            ::operator delete(p);
            p = ::operator new(n);
            ::operator delete(p, n);
            p = ::operator new[](n);
            ::operator delete[](p);
            p = ::operator new[](n);
            ::operator delete[](p, n);
            p = ::operator new(n, a64);
            ::operator delete(p, a64);
            p = ::operator new(n, a64);
            ::operator delete(p, n, a64);
            p = ::operator new[](n, a64);
            ::operator delete[](p, a64);
            p = ::operator new[](n, a64);
            ::operator delete[](p, n, a64);
            p = ::operator new(n, std::nothrow);
            ::operator delete(p, std::nothrow);
            p = malloc(n);
            free_sized(p, n);
            p = aligned_alloc(64, n);
            free_aligned_sized(p, 64, n);
        }
        Obj *o = new Obj;
        delete o;
        Obj *arr = new Obj[10];
        delete[] arr;
        free_sized(malloc(0), 0);
        void *r = realloc(malloc(10), 100);
        free_sized(r, 100);
        printf("mismatch legal: ok\n");
        return 0;
    }
    if (!strcmp(m, "free_of_new")) free(new Obj);
    else if (!strcmp(m, "delete_of_malloc")) ::operator delete(malloc(24));
    else if (!strcmp(m, "delete_of_new_array")) ::operator delete(::operator new[](24));
    else if (!strcmp(m, "delete_array_of_new")) ::operator delete[](::operator new(24));
    else if (!strcmp(m, "delete_array_of_malloc")) ::operator delete[](malloc(24));
    else if (!strcmp(m, "aligned_delete_of_new")) ::operator delete(::operator new(64), a64);
    else if (!strcmp(m, "sized_delete_wrong_size")) ::operator delete(::operator new(24), 32);
    else if (!strcmp(m, "sized_delete_large_wrong_size")) ::operator delete[](::operator new[](300000), 299999);
    else if (!strcmp(m, "free_sized_wrong_size")) free_sized(malloc(40), 41);
    else if (!strcmp(m, "realloc_of_new")) sink = realloc(::operator new(24), 48);
    else if (!strcmp(m, "delete_of_malloc0")) ::operator delete(malloc(0));
    else return 2;
    printf("NOT DETECTED: %s\n", m);
    return 0;
}
