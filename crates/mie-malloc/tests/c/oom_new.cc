// operator new under a tight RLIMIT_AS follows the C++ rules: the throwing forms throw
// std::bad_alloc, the nothrow forms return nullptr, an installed new-handler is called (and
// can free memory so the allocation succeeds), and the program goes on.
#include <cstdio>
#include <cstdlib>
#include <new>
#include <sys/resource.h>
#include <vector>

static int fails;
#define CHECK(c)                                                  \
    do {                                                          \
        if (!(c)) {                                               \
            std::printf("FAILED line %d: %s\n", __LINE__, #c);    \
            fails++;                                              \
        }                                                         \
    } while (0)

static std::vector<char *> *reserve_pool;
static int handler_calls;

static void give_back() {
    handler_calls++;
    if (reserve_pool && !reserve_pool->empty()) {
        delete[] reserve_pool->back();
        reserve_pool->pop_back();
    } else {
        std::set_new_handler(nullptr);
    }
}

int main() {
    std::setvbuf(stdout, nullptr, _IONBF, 0);
    std::vector<char *> pool;
    pool.reserve(4096);
    reserve_pool = &pool;
    struct rlimit rl = {384ull << 20, 384ull << 20};
    if (setrlimit(RLIMIT_AS, &rl) != 0) return 2;
    const size_t big = 1ull << 34; // never fits
    bool threw = false;
    try {
        char *p = new char[big];
        p[0] = 1;
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    CHECK(threw);
    CHECK(new (std::nothrow) char[big] == nullptr);
    CHECK(::operator new(big, std::nothrow) == nullptr);
    threw = false;
    try {
        void *volatile sink = ::operator new(big, std::align_val_t{64});
        (void)sink;
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    CHECK(threw);
    // Fill memory with 8 MiB arrays until new throws, then free them all and go on.
    size_t n = 0;
    try {
        for (;;) {
            pool.push_back(new char[8 << 20]);
            pool.back()[0] = 1;
            n++;
        }
    } catch (const std::bad_alloc &) {
    }
    CHECK(n > 4);
    // The new-handler frees one array per call until the allocation fits.
    std::set_new_handler(give_back);
    char *p = new char[16 << 20];
    CHECK(p != nullptr && handler_calls > 0);
    delete[] p;
    std::set_new_handler(nullptr);
    for (char *q : pool) delete[] q;
    pool.clear();
    char *again = new char[8 << 20];
    CHECK(again != nullptr);
    delete[] again;
    if (fails) return 1;
    std::printf("oom_new: ok (%zu arrays, new-handler called %d times)\n", n, handler_calls);
    return 0;
}
