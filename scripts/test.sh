#!/usr/bin/env bash
# The whole test suite: x86-64 natively, then arm64 under qemu-aarch64 -cpu max (MTE emulated).
# libmie.so is a cdylib that `cargo test` does not build by itself, so each leg builds the
# workspace first; the C-program tests then preload target/.../libmie.so.
# Set MIE_SKIP_ARM64=1 to run the x86-64 leg only (.ci/run installs the arm64 tools).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== x86-64"
cargo build --workspace
cargo test --workspace "$@"

if [ "${MIE_SKIP_ARM64:-0}" = 1 ]; then
    echo "== arm64: skipped (MIE_SKIP_ARM64=1)"
    exit 0
fi
for tool in /usr/bin/rustc aarch64-linux-gnu-gcc aarch64-linux-gnu-g++ qemu-aarch64; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "arm64 leg needs $tool: run 'bash scripts/setup-arm64.sh' (or set MIE_SKIP_ARM64=1)" >&2
        exit 1
    fi
done
echo "== arm64 (qemu-aarch64 -cpu max)"
# Debian's rustc-web carries the arm64 standard library; rustup's toolchain has none.
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
cross=(--workspace --target aarch64-unknown-linux-gnu --target-dir target/cross)
cargo build "${cross[@]}"
cargo test "${cross[@]}" "$@"
