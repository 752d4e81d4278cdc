// operator new/delete in every standard form, a new-handler, bad_alloc and nothrow.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <vector>

#define CHECK(c) do { if (!(c)) { std::printf("cxx: FAILED %s (line %d)\n", #c, __LINE__); return 1; } } while (0)

struct alignas(256) Big { char b[300]; };
struct Node { Node *next; std::string s; };

static void *reserve_block;
static int handler_calls;
static void handler() {
    handler_calls++;
    if (reserve_block) { std::free(reserve_block); reserve_block = nullptr; return; }
    std::set_new_handler(nullptr);
}

int main() {
    Node *head = nullptr;
    for (int i = 0; i < 10000; i++) head = new Node{head, std::to_string(i)};
    int count = 0;
    while (head) { Node *n = head->next; delete head; head = n; count++; }
    CHECK(count == 10000);
    int *arr = new int[1000]();
    for (int i = 0; i < 1000; i++) CHECK(arr[i] == 0);
    delete[] arr;
    Big *b = new Big;
    CHECK(((uintptr_t)b & 255) == 0);
    delete b;
    Big *bs = new Big[7];
    CHECK(((uintptr_t)bs & 255) == 0);
    delete[] bs;
    void *p = ::operator new(100, std::align_val_t(4096));
    CHECK(((uintptr_t)p & 4095) == 0);
    ::operator delete(p, 100, std::align_val_t(4096));
    p = ::operator new(50, std::nothrow);
    CHECK(p);
    ::operator delete(p, std::nothrow);
    p = ::operator new[](50, std::align_val_t(64), std::nothrow);
    CHECK(p && ((uintptr_t)p & 63) == 0);
    ::operator delete[](p, std::align_val_t(64), std::nothrow);
    p = ::operator new(64);
    ::operator delete(p, 64);
    std::map<std::string, std::vector<std::unique_ptr<int>>> m;
    for (int i = 0; i < 5000; i++) m[std::to_string(i % 100)].push_back(std::make_unique<int>(i));
    CHECK(m.size() == 100);

    // bad_alloc propagates out of operator new
    bool caught = false;
    try { p = ::operator new(SIZE_MAX / 2); } catch (const std::bad_alloc &) { caught = true; }
    CHECK(caught);
    caught = false;
    try { p = ::operator new[](SIZE_MAX / 4, std::align_val_t(64)); } catch (const std::bad_alloc &) { caught = true; }
    CHECK(caught);
    CHECK(::operator new(SIZE_MAX / 2, std::nothrow) == nullptr);
    // (the array form of the default alignment too: its first attempt is malloc's fast path,
    // and only a failure goes on to the loop that throws)
    caught = false;
    try { p = ::operator new[](SIZE_MAX / 4); } catch (const std::bad_alloc &) { caught = true; }
    CHECK(caught);
    CHECK(::operator new[](SIZE_MAX / 4, std::nothrow) == nullptr);
    // the new-handler is called until it gives up
    reserve_block = std::malloc(10);
    std::set_new_handler(handler);
    caught = false;
    try { p = ::operator new(SIZE_MAX / 2); } catch (const std::bad_alloc &) { caught = true; }
    CHECK(caught && handler_calls == 2);
    std::printf("cxx: ok\n");
    return 0;
}
