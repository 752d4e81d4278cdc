# A pure-Python workload for `mie bench`, run with PYTHONMALLOC=malloc so that every object
# allocation reaches the allocator under test. Prints "ok <checksum>"; the checksum depends
# only on the scale (PYTHONHASHSEED=0).
import json
import os

scale = int(os.environ.get("MIE_BENCH_SCALE", "1"))


class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y
        self.tags = ["p", str(x % 7)]


def churn(n):
    total = 0
    words = {}
    for i in range(n):
        key = "k%d-%s" % (i % 5000, "x" * (i % 13))
        words.setdefault(key, []).append(i)
        if i % 3 == 0:
            words.pop("k%d-%s" % ((i * 7) % 5000, "x" * ((i * 7) % 13)), None)
    for k, v in sorted(words.items()):
        total += len(k) + sum(v) % 1000
    pts = [Point(i, i * i % 1013) for i in range(n // 2)]
    pts.sort(key=lambda p: (p.y, -p.x))
    total += sum(p.x for p in pts[:1000])
    doc = {"items": [{"id": i, "name": "item%d" % i, "vals": list(range(i % 20))} for i in range(n // 10)]}
    text = json.dumps(doc)
    back = json.loads(text)
    total += len(text) + len(back["items"])
    s = []
    for i in range(n // 4):
        s.append(str(i) * (1 + i % 5))
    joined = "".join(s)
    total += len(joined) + joined.count("7")
    sets = [set(range(i % 50)) for i in range(n // 20)]
    total += sum(len(a | b) for a, b in zip(sets, sets[1:]))
    return total


print("ok", sum(churn(60000) for _ in range(scale)))
