/* Many small same-size objects: build and tear down binary trees (the binarytrees
 * benchmark shape), plus one long-lived tree that stays allocated throughout. */
#include "bench.h"

typedef struct node { struct node *l, *r; long v; } node;

static node *build(int depth, long v) {
    node *n = xmalloc(sizeof *n);
    n->v = v;
    if (depth > 0) {
        n->l = build(depth - 1, 2 * v);
        n->r = build(depth - 1, 2 * v + 1);
    } else {
        n->l = n->r = NULL;
    }
    return n;
}

static long check(node *n) { return n->l ? n->v + check(n->l) - check(n->r) : n->v; }

static void drop(node *n) {
    if (n->l) {
        drop(n->l);
        drop(n->r);
    }
    free(n);
}

int main(int argc, char **argv) {
    int scale = scale_arg(argc, argv);
    node *keep = build(16, 1);
    long sum = 0;
    for (int rep = 0; rep < scale; rep++)
        for (int d = 4; d <= 16; d += 2) {
            int count = 1 << (16 - d + 4);
            for (int i = 0; i < count; i++) {
                node *t = build(d, i);
                sum += check(t);
                drop(t);
            }
        }
    sum += check(keep);
    drop(keep);
    printf("ok %ld\n", sum);
    return 0;
}
