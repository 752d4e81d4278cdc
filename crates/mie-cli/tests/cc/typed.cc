// Built with `mie c++`: compiler type ids decide the buckets. Two types of one size, one
// holding pointers and one pure data, and two pointer types; allocated with malloc and new.
#include <cstdio>
#include <cstdlib>
#include <set>

extern "C" int mie_bucket_of(const void *) __attribute__((weak));

struct WithPtr { WithPtr *next; long a, b; };
struct Plain { char s[24]; };
struct OtherPtr { long x; void *p; long y; };

int main() {
    if (!mie_bucket_of) { std::puts("not under mie"); return 4; }
    WithPtr *w = (WithPtr *)malloc(sizeof(WithPtr));
    Plain *d = (Plain *)malloc(sizeof(Plain));
    OtherPtr *o = (OtherPtr *)malloc(sizeof(OtherPtr));
    WithPtr *nw = new WithPtr();
    Plain *nd = new Plain();
    OtherPtr *no = new OtherPtr();
    std::printf("malloc WithPtr %d Plain %d OtherPtr %d\n", mie_bucket_of(w), mie_bucket_of(d), mie_bucket_of(o));
    std::printf("new WithPtr %d Plain %d OtherPtr %d\n", mie_bucket_of(nw), mie_bucket_of(nd), mie_bucket_of(no));
    // Churn both types: a freed slot of one is never handed to the other.
    std::set<void *> seen_w, seen_d;
    for (int i = 0; i < 20000; i++) {
        WithPtr *a = (WithPtr *)malloc(sizeof(WithPtr));
        Plain *b = (Plain *)malloc(sizeof(Plain));
        seen_w.insert(a);
        seen_d.insert(b);
        free(a);
        free(b);
    }
    int shared = 0;
    for (void *p : seen_w) shared += seen_d.count(p);
    std::printf("addresses shared by WithPtr and Plain: %d (of %zu and %zu)\n", shared, seen_w.size(), seen_d.size());
    free(w); free(d); free(o);
    delete nw; delete nd; delete no;
    return 0;
}
