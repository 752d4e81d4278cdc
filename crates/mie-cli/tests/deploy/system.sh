#!/bin/sh
# Runs inside `unshare -m` (a private mount namespace): /etc gets an overlay and /opt/mie-test
# a tmpfs, so `mie install --system` writes an ld.so.preload that no process outside this
# namespace ever sees. Usage: system.sh MIE SETID_PROGRAM WORK
set -eu
mie=$1 setid=$2 work=$3
mount --make-rprivate /
mkdir -p "$work/upper" "$work/work"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$work/upper,workdir=$work/work" /etc
mkdir -p /opt/mie-test
mount -t tmpfs -o mode=755 tmpfs /opt/mie-test
"$mie" install --prefix /opt/mie-test/mie --system
echo "preload: $(cat /etc/ld.so.preload)"
# Every program started now loads libmie: a shell, ls, python3, and a set-uid program run
# by another user.
echo "sh: $(sh -c 'grep -q libmie /proc/$$/maps && echo yes || echo no')"
MIE_OPTIONS=log_path=/opt/mie-test/ls:stats=1 ls / >/dev/null
echo "ls: $(cat /opt/mie-test/ls.* | grep -c 'stats: live')"
echo "python3: $(python3 -c 'print(open("/proc/self/maps").read().count("libmie") > 0)')"
cp "$setid" /opt/mie-test/setid
chmod 4755 /opt/mie-test/setid
setpriv --reuid=65534 --regid=65534 --clear-groups /opt/mie-test/setid
"$mie" uninstall --system
echo "after uninstall: $(cat /etc/ld.so.preload 2>/dev/null || echo none)"
echo "sh after: $(sh -c 'grep -q libmie /proc/$$/maps && echo yes || echo no')"
