// A program that replaces only the global operator new (with malloc, as LLVM and many
// programs do) and keeps the default operator delete. That is legal C++: under mie it must
// run to completion without a report. Mode "lib": the replacement lives in a shared library
// bound to itself (-Bsymbolic, as LLVM's libLLVM.so), which also does the deletes.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <string>
#include <vector>

#ifdef REPLACED_NEW_LIB
void *operator new(std::size_t n) {
    void *p = std::malloc(n ? n : 1);
    if (!p) throw std::bad_alloc();
    return p;
}
struct Item {
    long a[3];
    std::string name;
};
extern "C" long lib_work(int rounds) {
    long sum = 0;
    for (int r = 0; r < rounds; r++) {
        Item *it = new Item{{r, r + 1, r + 2}, std::string(40, 'x')};
        sum += it->a[2] + (long)it->name.size();
        delete it;
        std::vector<Item *> v;
        for (int i = 0; i < 50; i++) v.push_back(new Item{{i, 0, 0}, "n"});
        for (Item *p : v) delete p;
    }
    return sum;
}
// Blocks from the library's own operator new (malloc), deleted by the program with the
// global operator delete: what rust-lld does with blocks from libLLVM.so.
extern "C" void *lib_new_block(std::size_t n) { return ::operator new(n); }
#else
#ifndef NO_REPLACEMENT
void *operator new(std::size_t n) {
    void *p = std::malloc(n ? n : 1);
    if (!p) throw std::bad_alloc();
    return p;
}
#endif
extern "C" long lib_work(int rounds) __attribute__((weak));
extern "C" void *lib_new_block(std::size_t n) __attribute__((weak));

struct Node {
    long v[3];
    Node *next;
    ~Node() { v[0] = 0; }
};

int main(int argc, char **argv) {
    setvbuf(stdout, nullptr, _IONBF, 0);
    const char *m = argc > 1 ? argv[1] : "main";
    if (!strcmp(m, "lib")) {
        if (!lib_work) return 2;
        printf("replaced_new lib: %ld\n", lib_work(200));
        return 0;
    }
    if (!strcmp(m, "lib_blocks")) {
        if (!lib_new_block) return 2;
        for (int i = 0; i < 100; i++) ::operator delete(lib_new_block(24 + i));
        printf("replaced_new lib_blocks: done\n");
        return 0;
    }
    if (!strcmp(m, "new_array_delete")) {
        // A real mismatch, as a third-party benchmark does: new char[] released by delete.
        for (int i = 0; i < 100; i++) {
            char *p = new char[64];
            p[0] = 1;
            delete p;
        }
        printf("new_array_delete: done\n");
        return 0;
    }
    if (!strcmp(m, "delete_interior")) {
        // delete of a new[] array of a type with a destructor: the pointer is past the
        // array cookie, inside the block: an alloc-dealloc mismatch, always fatal.
        Node *a = new Node[4];
        delete a;
        printf("NOT DETECTED: %s\n", m);
        return 0;
    }
    long sum = 0;
    for (int i = 0; i < 1000; i++) {
        Node *n = new Node{{i, i, i}, nullptr};
        sum += n->v[1];
        delete n;
    }
    std::map<std::string, std::vector<int>> m2;
    for (int i = 0; i < 500; i++) m2[std::to_string(i)].assign(i % 17, i);
    for (auto &kv : m2) sum += (long)kv.second.size();
    Node *arr = new Node[10];
    delete[] arr;
    printf("replaced_new main: %ld\n", sum);
    return 0;
}
#endif
