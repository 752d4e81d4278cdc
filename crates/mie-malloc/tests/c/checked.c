/* The bounds-checked memory and string functions of libmie.so.
 *
 *   checked FUNC          one call of FUNC that would write one byte past a 40-byte block.
 *                         The block's page is made read-only first: had the function written
 *                         a single byte before its check, the process would die of SIGSEGV
 *                         instead of mie's report. Prints NOT DETECTED if the call returns.
 *   checked read_memcpy   memcpy reading one byte past its (unreadable-page) source block
 *   checked read_strcpy   strcpy from a block with no NUL in it
 *   checked freed_memcpy  memcpy into a freed block
 *   checked hinted_freed  the same after legal copies into and out of the block (each
 *                         thread remembers the block of its last checked copy)
 *   checked hinted_shrunk memcpy past a block's new end after realloc shrank it in place
 *   checked hinted_shrunk_wide  the same in a class with 32-bit slot records (1 KiB)
 *   checked hinted_read   memcpy reading past a source block it read from legally before
 *   checked hinted_underflow_read   memcpy reading from 3 bytes before a block it read
 *                         from legally just before (its hint holds the block)
 *   checked hinted_underflow_write  memcpy writing from 3 bytes before a block it wrote
 *                         into legally just before
 *   checked hinted_signal legal copies into one block while a signal handler copies into
 *                         and out of another some 20 000 times (both change the thread's
 *                         hints), then one byte too many into the first: caught
 *   checked hinted_strcpy strcpy from a block with no NUL in it, read legally just before
 *                         (the scan's limit comes from the thread's hint)
 *   checked hinted_strcpy_freed  strcpy from a string in a freed block it copied before
 *   checked large_found_again  memmove inside a large block after another large block's
 *                         free made every large hint stale (the block is found again without
 *                         the full check), then past its end after an in-place shrink
 *   checked large_remembered_shrunk  memcpy past a large block's new end after an in-place
 *                         shrink, the block copied into before with a small block's copy in
 *                         between (the last large block is remembered apart from the hints)
 *   checked legal         every function, every length near the block end, contents checked
 *   checked fortified     __strcpy_chk past a stack buffer: glibc's own fortify failure
 *   checked object_size   mie_object_size answers
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <wchar.h>

void *__memcpy_chk(void *, const void *, size_t, size_t);
void *__memmove_chk(void *, const void *, size_t, size_t);
void *__mempcpy_chk(void *, const void *, size_t, size_t);
void *__memset_chk(void *, int, size_t, size_t);
char *__strcpy_chk(char *, const char *, size_t);
char *__stpcpy_chk(char *, const char *, size_t);
char *__strncpy_chk(char *, const char *, size_t, size_t);
char *__strcat_chk(char *, const char *, size_t);
char *__strncat_chk(char *, const char *, size_t, size_t);
wchar_t *__wmemcpy_chk(wchar_t *, const wchar_t *, size_t, size_t);
wchar_t *__wmemmove_chk(wchar_t *, const wchar_t *, size_t, size_t);
wchar_t *__wmemset_chk(wchar_t *, wchar_t, size_t, size_t);
void *mempcpy(void *, const void *, size_t);
size_t mie_object_size(const void *) __attribute__((weak));
ssize_t __read_chk(int, void *, size_t, size_t);
ssize_t __pread_chk(int, void *, size_t, off_t, size_t);
ssize_t __recv_chk(int, void *, size_t, size_t, int);
size_t __fread_chk(void *, size_t, size_t, size_t, FILE *);
char *__fgets_chk(char *, size_t, int, FILE *);

#define N 40
#define NONE ((size_t)-1)

/* hinted_signal: the handler's block and how often it ran. */
static char *sig_block;
static volatile sig_atomic_t sig_runs;

static void sig_copy(int sig) {
    (void)sig;
    static char buf[100];
    memcpy(sig_block, buf, 100);
    memcpy(buf, sig_block, 100);
    sig_runs++;
}

static void protect(void *p, int prot) {
    long pg = sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)(pg - 1);
    /* The block (and its slot's slack) may straddle a page boundary: cover the pages it
     * spans, and no more (the next page may be unmapped: the end of mie's segment). */
    uintptr_t end = ((uintptr_t)p + 64 + pg - 1) & ~(uintptr_t)(pg - 1);
    if (mprotect((void *)a, end - a, prot) != 0) {
        perror("mprotect");
        exit(3);
    }
}

static int fails;
#define CHECK(c)                                                         \
    do {                                                                 \
        if (!(c)) {                                                      \
            printf("FAILED line %d: %s\n", __LINE__, #c);                \
            fails++;                                                     \
        }                                                                \
    } while (0)

static int all(const char *p, size_t n, char v) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != v) return 0;
    return 1;
}

/* One overflowing call per function: the destination is a 40-byte block. */
static void overflow(const char *f) {
    char *d = malloc(N);
    char src[2 * N + 1];
    memset(d, 'd', N);
    memset(src, 's', sizeof src - 1);
    src[sizeof src - 1] = 0;
    char s41[N + 2]; /* a 41-character string: with its NUL, 42 bytes */
    memset(s41, 'x', N + 1);
    s41[N + 1] = 0;
    char s40[N + 1]; /* 40 characters: strcpy writes 41 with the NUL */
    memset(s40, 'y', N);
    s40[N] = 0;
    wchar_t ws[N];
    for (int i = 0; i < N; i++) ws[i] = L'w';
    /* Data sources for the reads into a buffer: /dev/zero and a connected socket pair. */
    int zfd = open("/dev/zero", O_RDONLY);
    FILE *zf = fopen("/dev/zero", "r");
    int sv[2];
    if (zfd < 0 || !zf || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 || write(sv[1], src, sizeof src) < 0) exit(3);
    protect(d, PROT_READ);
    if (!strcmp(f, "memcpy")) memcpy(d, src, N + 1);
    else if (!strcmp(f, "read")) read(zfd, d, N + 1);
    else if (!strcmp(f, "pread")) pread(zfd, d, N + 1, 0);
    else if (!strcmp(f, "recv")) recv(sv[0], d, N + 1, 0);
    else if (!strcmp(f, "fread")) fread(d, 1, N + 1, zf);
    else if (!strcmp(f, "fgets")) fgets(d, N + 1, zf);
    else if (!strcmp(f, "__read_chk")) __read_chk(zfd, d, N + 1, NONE);
    else if (!strcmp(f, "__pread_chk")) __pread_chk(zfd, d, N + 1, 0, NONE);
    else if (!strcmp(f, "__recv_chk")) __recv_chk(sv[0], d, N + 1, NONE, 0);
    else if (!strcmp(f, "__fread_chk")) __fread_chk(d, NONE, 1, N + 1, zf);
    else if (!strcmp(f, "__fgets_chk")) __fgets_chk(d, NONE, N + 1, zf);
    else if (!strcmp(f, "memmove")) memmove(d, src, N + 1);
    else if (!strcmp(f, "mempcpy")) mempcpy(d, src, N + 1);
    else if (!strcmp(f, "memset")) memset(d, 0, N + 1);
    else if (!strcmp(f, "strcpy")) strcpy(d, s40);
    else if (!strcmp(f, "stpcpy")) stpcpy(d, s40);
    else if (!strcmp(f, "strncpy")) strncpy(d, "short", N + 1); /* pads to N + 1 */
    else if (!strcmp(f, "memccpy")) memccpy(d, src, '#', N + 1);
    else if (!strcmp(f, "wmemcpy")) wmemcpy((wchar_t *)d, ws, N / sizeof(wchar_t) + 1);
    else if (!strcmp(f, "wmemmove")) wmemmove((wchar_t *)d, ws, N / sizeof(wchar_t) + 1);
    else if (!strcmp(f, "wmemset")) wmemset((wchar_t *)d, L'z', N / sizeof(wchar_t) + 1);
    else if (!strcmp(f, "__memcpy_chk")) __memcpy_chk(d, src, N + 1, NONE);
    else if (!strcmp(f, "__memmove_chk")) __memmove_chk(d, src, N + 1, NONE);
    else if (!strcmp(f, "__mempcpy_chk")) __mempcpy_chk(d, src, N + 1, NONE);
    else if (!strcmp(f, "__memset_chk")) __memset_chk(d, 0, N + 1, NONE);
    else if (!strcmp(f, "__strcpy_chk")) __strcpy_chk(d, s40, NONE);
    else if (!strcmp(f, "__stpcpy_chk")) __stpcpy_chk(d, s40, NONE);
    else if (!strcmp(f, "__strncpy_chk")) __strncpy_chk(d, "short", N + 1, NONE);
    else if (!strcmp(f, "__wmemcpy_chk")) __wmemcpy_chk((wchar_t *)d, ws, N / sizeof(wchar_t) + 1, NONE);
    else if (!strcmp(f, "__wmemmove_chk")) __wmemmove_chk((wchar_t *)d, ws, N / sizeof(wchar_t) + 1, NONE);
    else if (!strcmp(f, "__wmemset_chk")) __wmemset_chk((wchar_t *)d, L'z', N / sizeof(wchar_t) + 1, NONE);
    else {
        /* The concatenations: the destination already holds a 30-character string. */
        protect(d, PROT_READ | PROT_WRITE);
        memset(d, 'a', 30);
        d[30] = 0;
        protect(d, PROT_READ);
        if (!strcmp(f, "strcat")) strcat(d, "0123456789"); /* 30 + 10 + NUL = 41 */
        else if (!strcmp(f, "strncat")) strncat(d, "0123456789abc", 10);
        else if (!strcmp(f, "__strcat_chk")) __strcat_chk(d, "0123456789", NONE);
        else if (!strcmp(f, "__strncat_chk")) __strncat_chk(d, "0123456789abc", 10, NONE);
        else exit(2);
    }
    printf("NOT DETECTED: %s\n", f);
}

/* Legal calls of every function at every length up to the block end. */
static void legal(void) {
    for (size_t n = N - 9; n <= N; n++) {
        char *d = malloc(N), *s = malloc(N);
        memset(s, 'q', N);
        CHECK(memcpy(d, s, n) == d && all(d, n, 'q'));
        memset(d, 0, N);
        CHECK(memmove(d, s, n) == d && all(d, n, 'q'));
        CHECK(mempcpy(d, s, n) == d + n);
        CHECK(memset(d, 'm', n) == d && all(d, n, 'm'));
        CHECK(memccpy(d, s, 'q', n) == d + 1);
        CHECK(memccpy(d, s, '#', n) == NULL && all(d, n, 'q'));
        /* Overlapping move inside one block, up to its last byte. */
        memset(d, 'o', N);
        CHECK(memmove(d + 1, d, n - 1) == d + 1);
        char str[N + 1];
        memset(str, 'k', n - 1);
        str[n - 1] = 0;
        CHECK(strcpy(d, str) == d && strlen(d) == n - 1);
        CHECK(stpcpy(d, str) == d + n - 1);
        CHECK(strncpy(d, "ab", n) == d && d[0] == 'a' && all(d + 2, n - 2, 0));
        strcpy(d, "");
        CHECK(strcat(d, str) == d && strlen(d) == n - 1);
        strcpy(d, "");
        CHECK(strncat(d, str, n - 1) == d && strlen(d) == n - 1);
        CHECK(__memcpy_chk(d, s, n, N) == d);
        CHECK(__memmove_chk(d, s, n, N) == d);
        CHECK(__mempcpy_chk(d, s, n, N) == d + n);
        CHECK(__memset_chk(d, 1, n, N) == d);
        CHECK(__strcpy_chk(d, str, N) == d);
        CHECK(__stpcpy_chk(d, str, N) == d + n - 1);
        CHECK(__strncpy_chk(d, str, n, N) == d);
        strcpy(d, "");
        CHECK(__strcat_chk(d, str, N) == d && strlen(d) == n - 1);
        strcpy(d, "");
        CHECK(__strncat_chk(d, str, n - 1, N) == d && strlen(d) == n - 1);
        size_t wn = n / sizeof(wchar_t);
        wchar_t *wd = (wchar_t *)d, *wsrc = (wchar_t *)s;
        CHECK(wmemset(wd, L'v', wn) == wd);
        CHECK(wmemcpy(wd, wsrc, wn) == wd && all(d, wn * sizeof(wchar_t), 'q'));
        CHECK(wmemmove(wd, wsrc, wn) == wd);
        CHECK(__wmemcpy_chk(wd, wsrc, wn, N / sizeof(wchar_t)) == wd);
        CHECK(__wmemmove_chk(wd, wsrc, wn, N / sizeof(wchar_t)) == wd);
        CHECK(__wmemset_chk(wd, L'v', wn, N / sizeof(wchar_t)) == wd);
        free(d);
        free(s);
    }
    /* Reads into a buffer of exactly its size. */
    {
        char *d = malloc(N);
        int fd = open("/dev/zero", O_RDONLY);
        FILE *zf = fopen("/dev/zero", "r");
        CHECK(fd >= 0 && zf);
        memset(d, 'r', N);
        CHECK(read(fd, d, N) == N && all(d, N, 0));
        memset(d, 'r', N);
        CHECK(pread(fd, d, N, 0) == N && all(d, N, 0));
        CHECK(fread(d, 1, N, zf) == N);
        CHECK(fgets(d, N, zf) == d);
        CHECK(__read_chk(fd, d, N, N) == N);
        CHECK(__fread_chk(d, N, 4, N / 4, zf) == N / 4);
        close(fd);
        fclose(zf);
        free(d);
    }
    /* Pointers outside the heap pass through. */
    char a[64], b[64];
    memset(b, 'g', sizeof b);
    CHECK(memcpy(a, b, sizeof a) == a && all(a, sizeof a, 'g'));
    static char g[100];
    CHECK(strcpy(g, "global") == g && !strcmp(g, "global"));
    /* Large blocks: legal up to the requested size. */
    char *big = malloc(300000);
    memset(big, 'L', 300000);
    CHECK(memcpy(big + 299000, b, 64) == big + 299000);
    CHECK(memmove(big + 1, big, 299999) == big + 1);
    free(big);
    printf(fails ? "legal: %d failures\n" : "legal: ok\n", fails);
}

/* Two blocks of N bytes in neighbouring slots (48 bytes apart), from one call site. */
__attribute__((noinline)) static char *one_site(size_t n) { return malloc(n); }
static int neighbours(char **first, char **second) {
    static char *ps[400];
    for (int i = 0; i < 400; i++) ps[i] = one_site(N);
    for (int i = 0; i < 400; i++)
        for (int j = 0; j < 400; j++)
            if (((uintptr_t)ps[j] & ((1ull << 56) - 1)) == ((uintptr_t)ps[i] & ((1ull << 56) - 1)) + 48) {
                *first = ps[i];
                *second = ps[j];
                return 1;
            }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *m = argv[1];
    setvbuf(stdout, NULL, _IONBF, 0);
    if (!strcmp(m, "legal")) {
        legal();
        return fails != 0;
    } else if (!strcmp(m, "read_memcpy")) {
        char *s = malloc(N);
        memset(s, 'r', N);
        char d[2 * N];
        protect(s, PROT_NONE);
        memcpy(d, s, N + 1);
    } else if (!strcmp(m, "read_strcpy")) {
        char *s = malloc(N);
        memset(s, 'r', N); /* no NUL anywhere in the block */
        char d[4 * N];
        strcpy(d, s);
    } else if (!strcmp(m, "hinted_strcpy")) {
        char *s = malloc(N);
        memset(s, 'r', N); /* no NUL anywhere in the block */
        char d[4 * N];
        memcpy(d, s, N); /* the thread now remembers the block of s */
        strcpy(d, s);
    } else if (!strcmp(m, "hinted_strcpy_freed")) {
        char *s = malloc(N);
        strcpy(s, "a string");
        char d[N];
        strcpy(d, s); /* the thread now remembers the block of s */
        strcpy(d, s + 2);
        free(s);
        strcpy(d, s);
    } else if (!strcmp(m, "large_hinted_shrunk")) {
        /* A copy into a large block (the thread remembers it), an in-place shrink, then a
           copy past the new end: the shrink must end what the thread remembered. */
        free(malloc(16)); /* the thread's cache, which holds what it remembers */
        char *big = malloc(300000);
        char src[64] = {0};
        memcpy(big + 1000, src, 64);
        char *same = realloc(big, 200000);
        if (same != big) return 3;
        memcpy(same + 199990, src, 11);
    } else if (!strcmp(m, "large_remembered_shrunk")) {
        free(malloc(16)); /* the thread's cache, which holds what it remembers */
        char *big = malloc(300000), *small = malloc(N);
        char src[64] = {0};
        memcpy(big + 1000, src, 64);
        memcpy(small, src, N);
        memcpy(big + 2000, src, 64); /* through the remembered large block */
        memcpy(small, src, N);
        char *same = realloc(big, 200000);
        if (same != big) return 3;
        memcpy(same + 199990, src, 11);
    } else if (!strcmp(m, "large_found_again")) {
        free(malloc(16)); /* the thread's cache, which holds what it remembers */
        char *big = malloc(300000), *other = malloc(200000);
        memset(big, 7, 4096);
        memmove(big + 1000, big, 64);
        free(other); /* every large block's hint is stale now */
        for (int i = 0; i < 3; i++) memmove(big + 2000 + i, big, 64);
        char *same = realloc(big, 200000);
        if (same != big) return 3;
        memmove(same + 199990, same, 11);
    } else if (!strcmp(m, "large_memcpy")) {
        char *big = malloc(300000);
        char src[64] = {0};
        memcpy(big + 299990, src, 11);
    } else if (!strcmp(m, "underflow_memcpy_free") || !strcmp(m, "underflow_memcpy_live")) {
        /* A source that starts 3 bytes before a live block (in the slot before it, free or
           live): an underflow of that block. */
        char *a, *b, d[64];
        if (!neighbours(&a, &b)) return 3;
        if (!strcmp(m, "underflow_memcpy_free")) free(a);
        printf("block %p\n", (void *)b);
        memcpy(d, b - 3, 16);
    } else if (!strcmp(m, "hinted_underflow_read") || !strcmp(m, "hinted_underflow_write")) {
        /* As above, after legal copies out of (into) the block: the thread's hint holds
           it, and a range that starts before it must miss the hint. */
        char *a, *b, d[64] = {0};
        if (!neighbours(&a, &b)) return 3;
        printf("block %p\n", (void *)b);
        int rd = !strcmp(m, "hinted_underflow_read");
        for (int i = 0; i < 3; i++) {
            if (rd) memcpy(d, b, 16);
            else memcpy(b, d, 16);
        }
        if (rd) memcpy(d, b - 3, 16);
        else memcpy(b - 3, d, 16);
    } else if (!strcmp(m, "freed_memcpy")) {
        char *d = malloc(N);
        free(d);
        char src[8] = "dangle";
        memcpy(d, src, 8);
    } else if (!strcmp(m, "hinted_freed")) {
        char *d = malloc(N);
        char src[N] = "legal";
        for (int i = 0; i < 3; i++) memcpy(d, src, N), memcpy(src, d, N);
        free(d);
        memcpy(d, src, 8);
    } else if (!strcmp(m, "hinted_shrunk")) {
        char *d = malloc(N);
        char src[N] = "legal";
        memcpy(d, src, N);
        char *e = realloc(d, 20);
        if (e != d) return 5; /* moved: the case is not exercised */
        memcpy(e, src, 21);
    } else if (!strcmp(m, "hinted_shrunk_wide")) {
        static char src[1000] = "legal";
        char *d = malloc(1000);
        memcpy(d, src, 1000);
        memcpy(d, src, 1000);
        char *e = realloc(d, 900);
        if (e != d) return 5; /* moved: the case is not exercised */
        memcpy(e, src, 901);
    } else if (!strcmp(m, "hinted_signal")) {
        char *d = malloc(N);
        sig_block = malloc(100);
        char src[N + 1] = "legal";
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = sig_copy;
        sa.sa_flags = SA_RESTART;
        sigaction(SIGALRM, &sa, NULL);
        struct itimerval t = {{0, 20}, {0, 20}};
        setitimer(ITIMER_REAL, &t, NULL);
        for (long i = 0; sig_runs < 20000; i++) {
            memcpy(d, src, N);
            memcpy(src, d, i % N + 1);
        }
        struct itimerval off = {{0, 0}, {0, 0}};
        setitimer(ITIMER_REAL, &off, NULL);
        printf("signal copies: %s\n", sig_runs >= 20000 ? "20000 or more" : "too few");
        memcpy(d, src, N + 1);
    } else if (!strcmp(m, "hinted_read")) {
        char *s = malloc(N);
        char dst[N + 1];
        memset(s, 'x', N);
        memcpy(dst, s, N);
        memcpy(dst, s, N + 1);
    } else if (!strcmp(m, "fortified")) {
        char buf[8];
        volatile size_t n = sizeof buf;
        __strcpy_chk(buf, "this does not fit", n);
    } else if (!strcmp(m, "object_size")) {
        if (!mie_object_size) return 4; /* not under mie */
        char *p = malloc(N);
        char stack[4];
        printf("%zu %zu %zu %d\n", mie_object_size(p), mie_object_size(p + 10), mie_object_size(p + N),
               mie_object_size(stack) == SIZE_MAX);
        char *big = malloc(200000);
        printf("%zu\n", mie_object_size(big + 100));
        free(p);
        printf("%zu\n", mie_object_size(p));
        return 0;
    } else {
        overflow(m);
        return 0;
    }
    printf("NOT DETECTED: %s\n", m);
    return 0;
}
