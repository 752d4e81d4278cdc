// A C++ program that leans on the standard library's allocations: containers of every
// kind, strings, shared and unique pointers, polymorphic objects, exceptions, streams and
// threads. Deterministic: prints the same digest under every allocator.
#include <algorithm>
#include <deque>
#include <functional>
#include <future>
#include <list>
#include <map>
#include <memory>
#include <numeric>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>
#include <cstdio>

struct Shape {
    virtual ~Shape() = default;
    virtual long area() const = 0;
};
struct Rect : Shape {
    long w, h;
    Rect(long w, long h) : w(w), h(h) {}
    long area() const override { return w * h; }
};
struct Tri : Shape {
    long b, h;
    std::string name;
    Tri(long b, long h) : b(b), h(h), name("tri" + std::to_string(b)) {}
    long area() const override { return b * h / 2 + (long)name.size(); }
};

static unsigned long mix(unsigned long h, unsigned long v) { return (h ^ v) * 1099511628211ul; }

static unsigned long work(int seed) {
    unsigned long h = 1469598103934665603ul;
    std::vector<std::unique_ptr<Shape>> shapes;
    for (int i = 0; i < 20000; i++) {
        if ((i + seed) % 3) shapes.push_back(std::make_unique<Rect>(i % 17, i % 13));
        else shapes.push_back(std::make_unique<Tri>(i % 19, i % 11));
    }
    std::sort(shapes.begin(), shapes.end(), [](auto &a, auto &b) { return a->area() < b->area(); });
    for (auto &s : shapes) h = mix(h, (unsigned long)s->area());
    std::map<std::string, std::vector<int>> index;
    std::unordered_map<int, std::string> names;
    std::set<long> seen;
    std::unordered_set<std::string> words;
    std::list<std::shared_ptr<std::string>> lst;
    std::deque<int> dq;
    for (int i = 0; i < 30000; i++) {
        std::string k = "key" + std::to_string((i * 7919 + seed) % 4000);
        index[k].push_back(i);
        names[i % 5000] = k + "/" + std::to_string(i);
        seen.insert((long)i * i % 10007);
        words.insert(k.substr(0, 4 + i % 3));
        auto sp = std::make_shared<std::string>(k);
        lst.push_back(sp);
        if (lst.size() > 500) lst.pop_front();
        dq.push_back(i);
        if (dq.size() > 1000) dq.pop_front();
    }
    for (auto &kv : index) h = mix(h, kv.second.size() + kv.first.size());
    for (int i = 0; i < 5000; i++) h = mix(h, names[i].size());
    h = mix(h, seen.size());
    h = mix(h, words.size());
    h = mix(h, std::accumulate(dq.begin(), dq.end(), 0ul));
    std::ostringstream os;
    for (int i = 0; i < 2000; i++) os << i << ':' << (i * 3.5) << ';';
    h = mix(h, os.str().size());
    int caught = 0;
    for (int i = 0; i < 500; i++) {
        try {
            if (i % 3 == 0) throw std::runtime_error("err " + std::to_string(i));
            std::vector<int> v(10);
            (void)v.at(static_cast<size_t>(i % 20));
        } catch (const std::exception &e) {
            caught += (int)std::string(e.what()).size() > 0;
        }
    }
    return mix(h, (unsigned long)caught);
}

int main() {
    std::vector<std::future<unsigned long>> fs;
    for (int t = 0; t < 4; t++) fs.push_back(std::async(std::launch::async, work, t));
    unsigned long h = 0;
    for (auto &f : fs) h ^= f.get();
    std::printf("stl digest %lx\n", h);
    return 0;
}
