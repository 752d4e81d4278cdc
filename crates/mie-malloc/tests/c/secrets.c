/* An attacker who can over-read one heap block (an unterminated string runs through its
 * canary, which has no zero byte) learns that block's canary and address. If the canary were
 * an invertible mix of (key ^ address), that one pair would give the key up to 256 guesses
 * and with it every other canary in the process. This program mounts exactly that attack on
 * two neighbouring live blocks and prints whether the second block's canary was predicted.
 *
 * First it checks the attack itself against canaries made the invertible way (so a broken
 * attack cannot pass for a strong canary). Exit 0: not predicted; 1: predicted; 2: the leak
 * or the self-check failed. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ADDR_MASK ((1ull << 56) - 1)
#define ONES 0x0101010101010101ull

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t inverse(uint64_t a) { /* of an odd number, mod 2^64 (Newton) */
    uint64_t x = a;
    for (int i = 0; i < 6; i++) x *= 2 - a * x;
    return x;
}

static uint64_t unmix64(uint64_t y) {
    y ^= (y >> 31) ^ (y >> 62);
    y *= inverse(0x94d049bb133111ebull);
    y ^= (y >> 27) ^ (y >> 54);
    y *= inverse(0xbf58476d1ce4e5b9ull);
    y ^= (y >> 30) ^ (y >> 60);
    return y;
}

/* Given one (address, canary word) pair, predict the canary word at `next`. Returns the
 * number of key guesses that predict `want`. */
static int predict(uint64_t addr, uint64_t canary, uint64_t next, uint64_t want) {
    int hits = 0;
    for (unsigned low = 0; low < 256; low++) {
        /* The canary forces bit 0 of every byte to 1; guess the original bits. */
        uint64_t guess = canary & ~ONES;
        for (int b = 0; b < 8; b++)
            if (low >> b & 1) guess |= 1ull << (8 * b);
        uint64_t key = unmix64(guess) ^ addr;
        if ((mix64(key ^ next) | ONES) == want) hits++;
    }
    return hits;
}

/* Read the canary word of a live malloc(20) block through an over-read of its slack: the
 * byte at address a is pattern >> 8*(a % 8). Returns 0 if the bytes do not look like one
 * consistent word with no zero byte. */
static int leak(const char *p, size_t size, size_t slot, uint64_t *word) {
    uintptr_t a0 = (uintptr_t)p & ADDR_MASK;
    unsigned char seen[8] = {0}, bytes[8] = {0};
    for (size_t i = size; i < slot; i++) {
        unsigned char b = ((const volatile unsigned char *)p)[i];
        unsigned pos = (a0 + i) % 8;
        if (b == 0 || (seen[pos] && bytes[pos] != b))
            return 0;
        seen[pos] = 1;
        bytes[pos] = b;
    }
    for (int i = 0; i < 8; i++)
        if (!seen[i]) return 0;
    memcpy(word, bytes, 8);
    return 1;
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    /* Self-check: the attack recovers invertible canaries. */
    uint64_t key = 0x1234567890abcdefull ^ (uintptr_t)&key;
    uint64_t a = 0x7f0012345670, b = a + 32;
    if (predict(a, mix64(key ^ a) | ONES, b, mix64(key ^ b) | ONES) == 0) {
        printf("self-check failed: the attack does not break invertible canaries\n");
        return 2;
    }
    /* The real heap: two blocks of 20 bytes (32-byte slots: 12 canary bytes each). */
    char *blocks[64];
    int leaked = 0, predicted = 0;
    for (int i = 0; i < 64; i++) {
        blocks[i] = malloc(20);
        memset(blocks[i], 'A', 20);
    }
    for (int i = 0; i + 1 < 64; i++) {
        uint64_t ca, cb;
        if (!leak(blocks[i], 20, 32, &ca) || !leak(blocks[i + 1], 20, 32, &cb))
            continue;
        leaked++;
        uintptr_t pa = (uintptr_t)blocks[i] & ADDR_MASK, pb = (uintptr_t)blocks[i + 1] & ADDR_MASK;
        if (predict(pa, ca, pb, cb))
            predicted++;
    }
    for (int i = 0; i < 64; i++) free(blocks[i]);
    printf("%d leaked canary pairs, %d next canaries predicted\n", leaked, predicted);
    if (leaked < 32)
        return 2;
    return predicted ? 1 : 0;
}
