/*
 * C++ operator new failure path for libmie.so.
 *
 * Rust frames must never be on the stack while a C++ exception unwinds, so the loop over
 * the new-handler and the throw of std::bad_alloc live here, in C compiled with unwind
 * tables. libstdc++ is referenced weakly: a C program that never uses operator new does
 * not pull it in, and a C++ program (which is what calls operator new) always has it.
 */
#include <stddef.h>

typedef void (*mie_new_handler)(void);

extern void *mie_cxx_alloc(size_t size, size_t align, size_t key, int key_kind, size_t cs);
extern void mie_cxx_oom(size_t size) __attribute__((noreturn));
/* The process's operator new of a form (bit 0 array, bit 1 aligned, bit 2 nothrow) when
   libmie is not the process's allocator (crates/mie-malloc/src/forward.rs), else 0. */
extern size_t mie_forward_new(int form);

/* std::get_new_handler(), the exception ABI, and std::bad_alloc's typeinfo/vtable/dtor. */
extern mie_new_handler _ZSt15get_new_handlerv(void) __attribute__((weak));
extern void *__cxa_allocate_exception(size_t) __attribute__((weak));
extern void __cxa_throw(void *, void *, void (*)(void *)) __attribute__((weak, noreturn));
extern char _ZTISt9bad_alloc[] __attribute__((weak));
extern void *_ZTVSt9bad_alloc[] __attribute__((weak));
extern void _ZNSt9bad_allocD1Ev(void *) __attribute__((weak));

static void throw_bad_alloc(size_t size) __attribute__((noreturn));
static void throw_bad_alloc(size_t size) {
    if (__cxa_allocate_exception && __cxa_throw && _ZTISt9bad_alloc && _ZTVSt9bad_alloc && _ZNSt9bad_allocD1Ev) {
        /* std::bad_alloc is a single vtable pointer; the object's vptr skips the
           offset-to-top and typeinfo slots at the start of the vtable. */
        void **exc = (void **)__cxa_allocate_exception(sizeof(void *));
        exc[0] = (void *)&_ZTVSt9bad_alloc[2];
        __cxa_throw(exc, _ZTISt9bad_alloc, _ZNSt9bad_allocD1Ev);
    }
    mie_cxx_oom(size);
}

static mie_new_handler current_handler(void) {
    return _ZSt15get_new_handlerv ? _ZSt15get_new_handlerv() : (mie_new_handler)0;
}

#define NEW_ARRAY_FLAG ((size_t)1 << 40)
#define NEW_ALIGNED_FLAG ((size_t)1 << 41)

/* A typed operator new in a process whose allocator is not mie: the process's own form of
   operator new, called from here so that its std::bad_alloc unwinds through C frames only.
   The nothrow_t argument is a tag type that no operator new reads. */
static const char nothrow_tag;
static int forwarded(size_t size, size_t align, int nothrow, void **out) {
    int array = (align & NEW_ARRAY_FLAG) != 0, aligned = (align & NEW_ALIGNED_FLAG) != 0;
    size_t f = mie_forward_new(array | aligned << 1 | nothrow << 2);
    if (!f)
        return 0;
    size_t a = align & (NEW_ARRAY_FLAG - 1);
    if (aligned && nothrow)
        *out = ((void *(*)(size_t, size_t, const void *))f)(size, a, &nothrow_tag);
    else if (aligned)
        *out = ((void *(*)(size_t, size_t))f)(size, a);
    else if (nothrow)
        *out = ((void *(*)(size_t, const void *))f)(size, &nothrow_tag);
    else
        *out = ((void *(*)(size_t))f)(size);
    return 1;
}

static void *cxx_new(size_t size, size_t align, size_t key, int key_kind, int nothrow, size_t cs) {
    void *fp;
    if (key_kind != 0 && forwarded(size, align, nothrow, &fp))
        return fp;
    for (;;) {
        void *p = mie_cxx_alloc(size, align, key, key_kind, cs);
        if (p)
            return p;
        mie_new_handler h = current_handler();
        if (!h) {
            if (nothrow)
                return 0;
            throw_bad_alloc(size);
        }
        h(); /* may free memory, throw, or abort */
    }
}

void *mie_cxx_new(size_t size, size_t align, size_t cs) { return cxx_new(size, align, cs, 0, 0, cs); }
void *mie_cxx_new_nothrow(size_t size, size_t align, size_t cs) { return cxx_new(size, align, cs, 0, 1, cs); }
void *mie_cxx_new_token(size_t size, size_t align, size_t tok, size_t cs) { return cxx_new(size, align, tok, 1, 0, cs); }
void *mie_cxx_new_token_nothrow(size_t size, size_t align, size_t tok, size_t cs) { return cxx_new(size, align, tok, 1, 1, cs); }
/* AllocToken's fast ABI: the id comes from the entry point's name (mie_fast_token maps it). */
void *mie_cxx_new_fast(size_t size, size_t align, size_t id) { return cxx_new(size, align, id, 2, 0, 0); }
void *mie_cxx_new_fast_nothrow(size_t size, size_t align, size_t id) { return cxx_new(size, align, id, 2, 1, 0); }
