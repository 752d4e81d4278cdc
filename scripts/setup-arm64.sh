#!/usr/bin/env bash
# Installs the arm64 cross toolchain and qemu (Debian packages; run as root).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
dpkg --add-architecture arm64
apt-get update -qq
apt-get install -y -qq rustc-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu \
    g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
