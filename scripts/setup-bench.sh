#!/usr/bin/env bash
# Installs what `mie bench` compares against (Debian packages): the peer allocators
# jemalloc, mimalloc, tcmalloc and Scudo (standalone runtime from libclang-rt-19-dev), and
# the real programs of the python and sqlite workloads, and valgrind (for
# `mie bench --instructions`). `mie bench` skips, with a line,
# whatever is missing, so this is optional.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
pkgs=(libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4 libclang-rt-19-dev python3 sqlite3 gcc libc6-dev valgrind)
missing=()
for p in "${pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}"
fi
