#!/usr/bin/env bash
# The whole test suite: x86-64 natively, then arm64 under qemu-aarch64 -cpu max (MTE emulated).
# libmie.so is a cdylib that `cargo test` does not build by itself, so each leg builds the
# workspace first; the C-program tests then preload target/.../libmie.so.
# The arm64 tools (Debian packages) are installed on first use when running as root;
# MIE_SKIP_ARM64=1 runs the x86-64 leg only.
set -euo pipefail
cd "$(dirname "$0")/.."

# The C tests need gcc/g++; `mie cc` and its tests clang 22 (LLVM AllocToken); `mie enable`
# patchelf; the system-install test python3.
need=()
for tool in gcc g++ clang-22 clang++-22 patchelf python3; do
    command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc g++ libc6-dev clang-22 patchelf python3
    else
        echo "the tests need ${need[*]} (apt-get install gcc g++ clang-22 patchelf python3)" >&2
        exit 1
    fi
fi

echo "== x86-64"
cargo build --workspace
cargo test --workspace "$@"

if [ "${MIE_SKIP_ARM64:-0}" = 1 ]; then
    echo "== arm64: skipped (MIE_SKIP_ARM64=1)"
    exit 0
fi
arm64_ready() {
    for tool in /usr/bin/rustc aarch64-linux-gnu-gcc aarch64-linux-gnu-g++ qemu-aarch64; do
        command -v "$tool" >/dev/null 2>&1 || return 1
    done
    dpkg -s libstd-rust-web-dev:arm64 >/dev/null 2>&1
}
if ! arm64_ready; then
    if [ "$(id -u)" = 0 ]; then
        echo "== installing the arm64 tools (scripts/setup-arm64.sh)"
        bash scripts/setup-arm64.sh
    else
        echo "the arm64 leg needs its tools: run 'sudo bash scripts/setup-arm64.sh' (or set MIE_SKIP_ARM64=1)" >&2
        exit 1
    fi
fi
echo "== arm64 (qemu-aarch64 -cpu max)"
# Debian's rustc-web carries the arm64 standard library; rustup's toolchain has none.
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
cross=(--workspace --target aarch64-unknown-linux-gnu --target-dir target/cross)
cargo build "${cross[@]}"
# qemu-user 7.2 can hang in a fork from a multithreaded guest: the forked copy of the test
# harness never reaches its exec, and the test waits for ever. A run that has not finished
# in 15 minutes (a normal one takes a few) is killed and run once more; a run that fails, or
# hangs twice, fails the suite.
for attempt in 1 2; do
    rc=0
    timeout -k 30 900 cargo test "${cross[@]}" "$@" || rc=$?
    if [ "$rc" != 124 ] && [ "$rc" != 137 ]; then
        exit "$rc"
    fi
    echo "== arm64: the tests did not finish in 15 minutes (attempt $attempt; a qemu-user fork hang?)"
done
exit 1
