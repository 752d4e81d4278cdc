#!/usr/bin/env bash
# Print the functions of libmie.so that programs run, as input-section patterns for
# crates/mie-malloc/link/hot-text.ld, most common first: each program runs under valgrind's
# callgrind with the library preloaded, and every function with an instruction executed
# counts once per program. Review the output and paste what belongs into hot-text.ld.
#
#   bash scripts/hot-text.sh [PROGRAM ARGS...]     (default: a set of everyday commands)
#
# Needs valgrind and python3. Writes nothing outside a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p mie-malloc >&2
lib="$PWD/target/release/libmie.so"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ "$#" -gt 0 ]; then
    progs=("$*")
else
    progs=("/bin/true" "/bin/sleep 0" "ls /" "cat /etc/passwd" "bash -c echo" "perl -e 1" "python3 -c 1" "git --version")
fi
i=0
for p in "${progs[@]}"; do
    i=$((i + 1))
    # shellcheck disable=SC2086
    valgrind --tool=callgrind --dump-instr=yes --trace-children=yes --callgrind-out-file="$tmp/cg.$i.%p" \
        env LD_PRELOAD="$lib" $p >/dev/null 2>&1 || echo "note: '$p' exited with an error" >&2
done

python3 - "$lib" "$tmp" <<'EOF'
import collections, glob, re, subprocess, sys, bisect
lib, tmp = sys.argv[1], sys.argv[2]
name = lib.rsplit('/', 1)[1]
# The library's functions: address, size, raw (mangled) name.
syms = []
for l in subprocess.run(['nm', '-S', '--defined-only', lib], capture_output=True, text=True).stdout.splitlines():
    p = l.split()
    if len(p) == 4 and p[2] in 'tTwW':
        syms.append((int(p[0], 16), int(p[1], 16), p[3]))
syms.sort()
starts = [s[0] for s in syms]
runs = collections.defaultdict(set)  # program -> functions
for f in glob.glob(tmp + '/cg.*'):
    prog = f.split('/')[-1].split('.')[1]
    objs, obj, addr, incall = {}, None, 0, False
    for l in open(f):
        m = re.match(r'c?ob=\((\d+)\)(?: (.*))?', l)
        if m:
            if m.group(2):
                objs[m.group(1)] = m.group(2).strip()
            if l.startswith('ob='):
                obj = objs[m.group(1)]
            continue
        if l.startswith('calls='):
            incall = True
            continue
        m = re.match(r'^(0x[0-9a-f]+|\+\d+|-\d+|\*)\s', l)
        if not m:
            continue
        a = m.group(1)
        if a.startswith('0x'):
            addr = int(a, 16)
        elif a[0] in '+-':
            addr += int(a)
        if incall:
            incall = False
            continue
        if obj and obj.endswith(name):
            i = bisect.bisect_right(starts, addr) - 1
            if i >= 0 and addr < syms[i][0] + syms[i][1]:
                runs[prog].add(syms[i][2])
count = collections.Counter(fn for fns in runs.values() for fn in fns)
size = {s[2]: s[1] for s in syms}
for fn, n in sorted(count.items(), key=lambda x: (-x[1], x[0])):
    if fn.startswith('_ZN'):
        pat = re.sub(r'17h[0-9a-f]{16}E$', '17h*', fn)
        pat = re.sub(r'\$[^*]*closure[^*]*\$', '*closure*', pat)
        print(f'    *(.text.*{pat})  /* {n} of {len(runs)} programs, {size[fn]} bytes */')
    else:
        print(f'    /* {fn}: {n} of {len(runs)} programs, {size[fn]} bytes (not a Rust function: see the file) */')
EOF
