#!/usr/bin/env bash
# Reliability: real programs' own test suites and workloads under libmie.so compared with
# glibc (CPython's regression tests, sqlite3, git, redis-server with redis-benchmark, a
# C++ STL program), then the stress, out-of-memory and model-fuzzing runs.
#
#   bash scripts/reliability.sh [--quick]
#
# --quick is the bounded form CI runs (about two minutes); without it: more CPython modules,
# bigger workloads, a 60 s stress run and 20000 fuzz sequences. Installs its Debian packages
# when they are missing. Exits 1 if anything fails under mie that passes under glibc.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1

need=()
for p in python3 libpython3.11-testsuite sqlite3 git redis-server redis-tools g++ gcc; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --release -p mie-malloc -q || exit 1
LIB=$ROOT/target/release/libmie.so
WORK=$(mktemp -d /tmp/mie-reliability.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
RESULTS=()
FAILED=0

# run NAME FUNCTION: the function once with glibc and once with every program it starts
# under libmie.so; each prints a one-line result last ("exit N: ..."). Records
# "name | glibc | mie"; a report from mie, or a result that differs, is a failure.
run() {
    local name=$1 fn=$2 g m
    g=$( (unset LD_PRELOAD; "$fn") 2>"$WORK/$name.glibc.err" | tail -1)
    m=$( (export LD_PRELOAD="$LIB"; "$fn") 2>"$WORK/$name.mie.err" | tail -1)
    RESULTS+=("$(printf '%-8s | %-58s | %s' "$name" "${g:-(no output)}" "${m:-(no output)}")")
    if grep -q "^mie: " "$WORK/$name.mie.err" && grep -v "^mie: warning" "$WORK/$name.mie.err" | grep -q "^mie: "; then
        echo "== $name: mie reported an error:" >&2
        grep -A8 "^mie: " "$WORK/$name.mie.err" | head -20 >&2
        FAILED=1
    elif [ "$g" != "$m" ]; then
        echo "== $name: results differ (glibc: $g; mie: $m)" >&2
        tail -20 "$WORK/$name.mie.err" >&2
        FAILED=1
    fi
}

# CPython's regression tests. PYTHONMALLOC=malloc sends every object to the allocator.
if [ "$QUICK" = 1 ]; then
    PY_MODS="test_list test_dict test_set test_bytes test_unicode test_re test_json test_gc"
else
    PY_MODS="test_list test_dict test_set test_bytes test_unicode test_re test_json test_pickle test_threading test_gc test_collections test_itertools test_array test_struct test_deque test_heapq test_bisect test_math test_string test_userdict test_weakref test_copy test_enum test_decimal"
fi
python_suite() {
    local out
    out=$(PYTHONMALLOC=malloc timeout 900 /usr/bin/python3 -m test $PY_MODS 2>&1)
    local st=$?
    local n ok
    n=$(echo "$PY_MODS" | wc -w)
    ok=$(echo "$out" | grep -oE "^(All )?[0-9]+ tests? OK" | grep -oE "[0-9]+" | head -1)
    echo "$out" | grep -E "tests? failed|FAILED|Tests result" >&2
    echo "exit $st: ${ok:-0} of $n test modules OK"
    return $st
}
run cpython python_suite

# sqlite3: generated tables, indexes, joins, updates, deletes, then integrity_check.
SCALE=$([ "$QUICK" = 1 ] && echo 2 || echo 8)
sed "s/{scale}/$SCALE/g" crates/mie-cli/bench/sqlite_workload.sql > "$WORK/db.sql"
sqlite_suite() {
    local out
    out=$(timeout 600 sqlite3 "$WORK/db-$RANDOM.sqlite" < "$WORK/db.sql" 2>&1)
    local st=$?
    echo "$out" | grep -q "^ok$" || st=1
    echo "exit $st: $(echo "$out" | wc -l) result lines, integrity_check $(echo "$out" | tail -1), digest $(echo "$out" | md5sum | cut -c1-8)"
    return $st
}
run sqlite sqlite_suite

# git: a generated history (fixed dates, so hashes are reproducible), branches, merge,
# repack, gc and fsck.
COMMITS=$([ "$QUICK" = 1 ] && echo 40 || echo 200)
git_suite() {
    local d="$WORK/repo-$RANDOM"
    export GIT_AUTHOR_NAME=mie GIT_AUTHOR_EMAIL=mie@example.org GIT_COMMITTER_NAME=mie GIT_COMMITTER_EMAIL=mie@example.org
    export GIT_AUTHOR_DATE="2026-01-01T00:00:00Z" GIT_COMMITTER_DATE="2026-01-01T00:00:00Z"
    /usr/bin/git init -q -b main "$d" || return 1
    cd "$d" || return 1
    for i in $(seq 1 "$COMMITS"); do
        for f in $(seq 1 5); do
            printf 'line %s of file %s\n%s\n' "$i" "$f" "$(seq "$i" $((i + f * 20)) | tr '\n' ' ')" >> "file$(( (i * 7 + f) % 60 )).txt"
        done
        /usr/bin/git add -A && /usr/bin/git commit -q -m "commit $i" || return 1
        if [ $((i % 10)) = 0 ]; then
            /usr/bin/git checkout -q -b "b$i" && echo "branch $i" > "branch$i.txt" && /usr/bin/git add -A && /usr/bin/git commit -q -m "branch $i" && /usr/bin/git checkout -q main && /usr/bin/git merge -q --no-edit "b$i" || return 1
        fi
    done
    /usr/bin/git repack -qad && /usr/bin/git gc -q && /usr/bin/git fsck --full --strict 2>&1 || return 1
    echo "exit 0: $(/usr/bin/git rev-list --count HEAD) commits, HEAD $(/usr/bin/git rev-parse --short HEAD), $(/usr/bin/git log -p | md5sum | cut -c1-8)"
}
run git git_suite

# redis-server on loopback with redis-benchmark (both under the allocator being tested).
REQS=$([ "$QUICK" = 1 ] && echo 20000 || echo 200000)
redis_suite() {
    # A port below the kernel's ephemeral range (32768 and up by default): a random port
    # inside it can be the local end of a live connection, and the server's bind then
    # fails ("Address already in use"). Another port is tried if the server does not answer.
    local port pid up=0
    for _ in 1 2 3; do
        port=$((20000 + RANDOM % 12000))
        redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >"$WORK/redis.log" 2>&1 &
        pid=$!
        for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && up=1 && break; sleep 0.1; done
        [ "$up" = 1 ] && break
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        cat "$WORK/redis.log" >&2
    done
    if [ "$up" != 1 ]; then
        echo "exit 1: redis-server did not answer on three ports"
        return 1
    fi
    local out st=0
    out=$(timeout 300 redis-benchmark -p "$port" -n "$REQS" -c 20 -r 100000 -d 200 -q -t set,get,incr,lpush,rpop,sadd,hset,spop,lrange_100 2>&1) || st=1
    local keys
    keys=$(redis-cli -p "$port" dbsize 2>/dev/null)
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1
    wait "$pid" || st=1
    echo "$out" | tr '\r' '\n' | grep -E "requests per second" | sed 's/^/  /' >&2
    local tests
    tests=$(echo "$out" | tr '\r' '\n' | grep -c "requests per second")
    [ "$tests" -ge 9 ] || st=1
    [ "${keys:-0}" -gt 0 ] || st=1
    if [ "$st" != 0 ]; then
        # What the benchmark and the server said (a report from mie among it).
        echo "$out" | tr '\r' '\n' | grep -v "rps=" | tail -20 >&2
        tail -20 "$WORK/redis.log" >&2
    fi
    echo "exit $st: $tests benchmark tests of $REQS requests, server exited cleanly"
    return $st
}
run redis redis_suite

# A C++ program using the STL heavily (containers, strings, smart pointers, exceptions,
# streams, threads).
g++ -O2 -pthread -o "$WORK/stl" scripts/compat/stl.cc || exit 1
stl_suite() {
    "$WORK/stl"
}
run stl stl_suite

# Stress and out of memory (C programs from the test suite, preloaded directly).
SECS=$([ "$QUICK" = 1 ] && echo 10 || echo 60)
gcc -O1 -pthread -o "$WORK/stress" crates/mie-malloc/tests/c/stress.c || exit 1
gcc -O1 -Wno-alloc-size-larger-than -o "$WORK/oom" crates/mie-malloc/tests/c/oom.c || exit 1
g++ -O1 -o "$WORK/oom_new" crates/mie-malloc/tests/c/oom_new.cc || exit 1
STRESS=$(LD_PRELOAD="$LIB" timeout 600 "$WORK/stress" "$SECS" 16 1 2>&1 | tail -1)
echo "$STRESS" | grep -q "stress: ok" || FAILED=1
OOM=$(LD_PRELOAD="$LIB" "$WORK/oom" 2>&1 | tail -1)
echo "$OOM" | grep -q "oom: ok" || FAILED=1
OOMNEW=$(LD_PRELOAD="$LIB" "$WORK/oom_new" 2>&1 | tail -1)
echo "$OOMNEW" | grep -q "oom_new: ok" || FAILED=1

# Model-based fuzzing of the allocator (proptest).
CASES=$([ "$QUICK" = 1 ] && echo 2000 || echo 20000)
START=$(date +%s)
if PROPTEST_CASES=$CASES cargo test --release -q -p mie-alloc --test model >"$WORK/model.log" 2>&1; then
    MODEL="ok: $CASES sequences of up to 300 operations in $(( $(date +%s) - START )) s"
else
    MODEL="FAILED (see below)"
    tail -40 "$WORK/model.log" >&2
    FAILED=1
fi

echo
printf '%-8s | %-58s | %s\n' "program" "glibc" "mie"
printf '%s\n' "---------+------------------------------------------------------------+-----------------------------------------------------------"
printf '%s\n' "${RESULTS[@]}"
echo
echo "stress (mie, 16 threads, ${SECS} s): $STRESS"
echo "out of memory (mie): $OOM"
echo "operator new out of memory (mie): $OOMNEW"
echo "model fuzzing: $MODEL"
if [ "$FAILED" = 1 ]; then
    echo "reliability: FAILED"
    exit 1
fi
echo "reliability: ok"
