#!/usr/bin/env bash
# Instructions per malloc+free on arm64, with and without MTE, counted under qemu-aarch64
# -cpu max in single-step mode (every executed instruction is logged once; valgrind does not
# run arm64 programs here). Like `mie bench --instructions`, each case runs with two
# iteration counts and the difference is divided out, so start-up and exit cancel; random
# placement and sampling leave about +-10 instructions of noise.
#
#   bash scripts/arm64-instructions.sh [path/to/arm64/libmie.so]
#
# Default library: the release cross build (built here if missing). Needs the arm64 tools
# (scripts/setup-arm64.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

lib=${1:-target/cross/aarch64-unknown-linux-gnu/release/libmie.so}
if [ $# -eq 0 ]; then
    RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc cargo build --release -p mie-malloc \
        --target aarch64-unknown-linux-gnu --target-dir target/cross >&2
fi
lib=$(realpath "$lib")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
aarch64-linux-gnu-gcc -O2 -fno-builtin -pthread -rdynamic crates/mie-cli/bench/ops.c -o "$work/ops"

# Instructions of one run: qemu logs each executed translation block, one instruction each.
count() {
    local mte=$1 mode=$2 n=$3 size=$4
    qemu-aarch64 -singlestep -d nochain,exec -D /dev/fd/3 -cpu max \
        -E GLIBC_TUNABLES=glibc.cpu.name=a64fx -E "MIE_OPTIONS=mte=$mte" \
        /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 --library-path /usr/aarch64-linux-gnu/lib \
        --preload "$lib" "$work/ops" "$mode" "$n" "$size" 3>&1 >/dev/null 2>/dev/null | grep -c '^Trace'
}

per_op() {
    local lo hi
    lo=$(count "$1" "$2" 10000 "$3")
    hi=$(count "$1" "$2" 20000 "$3")
    echo $(((hi - lo) / 10000))
}

printf '%-34s %10s %10s\n' "arm64 instructions per operation" "no MTE" "MTE"
for c in "pair 16" "pair 24" "pair 64" "pair 1024" "fifo 32" "xmalloc 16"; do
    set -- $c
    printf '%-34s %10s %10s\n' "$1 $2 B" "$(per_op 0 "$1" "$2")" "$(per_op 1 "$1" "$2")"
done
