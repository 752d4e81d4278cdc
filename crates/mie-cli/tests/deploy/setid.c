#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int mie_bucket_of(const void *) __attribute__((weak));
int main(int argc, char **argv) {
    printf("euid %d uid %d under mie: %s\n", geteuid(), getuid(), mie_bucket_of ? "yes" : "no");
    if (argc > 1) { char *volatile p = malloc(32); free(p); free(p); }
    return 0;
}
