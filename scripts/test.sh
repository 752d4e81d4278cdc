#!/usr/bin/env bash
# The whole test suite. libmie.so is a cdylib that `cargo test` does not build by itself,
# so build the workspace first; the C-program tests then preload target/debug/libmie.so.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace
cargo test --workspace "$@"
