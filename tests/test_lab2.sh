#!/usr/bin/env bash
# tests/test_lab2.sh - Lab 2 (labs/lab2-ring.sh --ci) shows what the README says it shows.
#
# Runs the lab non-interactively and reads the three ring-view snapshots it prints (the test parses
# them itself; it does not take the lab's own "from snapshot A to B" lines on trust, except for the
# one comparison whose first reading the lab does not print):
#   - between snapshots 1 and 2 the guest got more ping replies, and the indices moved: ring 1 (TX)
#     avail->idx and used->idx, ring 0 (RX) used->idx;
#   - in every snapshot, ring 1's in flight is small (we take TX packets at once), ring 0's is large
#     (the guest keeps its RX ring stocked), both rings show event idx (used_event, avail_event);
#   - after the peer's end goes down, ring 1 still moves (snapshot 2 -> 3), no more replies arrive and
#     ring 0's used->idx stands still (the lab's line "from a second after the link went down");
#   - it exits 0 and removes its netns and veth.
# Needs root, ip, qemu-system-x86_64.  Takes 20-40 s (one TCG guest).
set -u
. "$(dirname "$0")/lib.sh"


[ "$(id -u)" = 0 ] || missing "lab 2 needs root"
require "lab 2" ip
require "lab 2" qemu-system-x86_64

TOP=$(cd "$TESTS_DIR/.." && pwd)
OUT=$(mktemp "${TMPDIR:-/tmp}/vx-lab2-test.XXXXXX")
trap 'rm -f "$OUT"' EXIT

"$TOP/labs/lab2-ring.sh" --ci >"$OUT" 2>&1 </dev/null
rc=$?
check "labs/lab2-ring.sh --ci exits 0 (got $rc)" test "$rc" = 0

# field SNAP RING NAME: a number from snapshot SNAP's ring view, e.g. field 2 1 avail->idx; "ok" of
# SNAP gives the guest's replies in its heading.
field() {
    awk -v s="$1" -v r="$2" -v f="$3" '
        /^--- snapshot / { cur = $3; ring = -1
                           if (f == "ok" && cur == s) { sub(/.*ok=/, ""); sub(/ .*/, ""); print; exit } }
        cur == s && /^  ring [0-9]+ / { ring = $2 }
        cur == s && ring == r { for (i = 1; i < NF; i++) if ($i == f) { print $(i + 1); exit } }' "$OUT"
}
num() { [[ ${1:-} =~ ^[0-9]+$ ]]; }
# up A B: B is past A (u16 indices wrap)
up() { num "$1" && num "$2" && [ $((($2 - $1) & 0xffff)) -gt 0 ] && [ $((($2 - $1) & 0xffff)) -lt 32768 ]; }

check "three snapshots, each with ring 0 (RX) and ring 1 (TX)" \
    eval '[ "$(grep -c "^--- snapshot [123] " "$OUT")" = 3 ] && [ "$(grep -c "^  ring 0 (RX of pair 0)" "$OUT")" = 3 ] &&
          [ "$(grep -c "^  ring 1 (TX of pair 0)" "$OUT")" = 3 ]'
ok1=$(field 1 0 ok) ok2=$(field 2 0 ok)
check "the guest's ping replies arrive between snapshots 1 and 2 (ok $ok1 -> $ok2)" up "$ok1" "$ok2"
for f in avail-\>idx used-\>idx; do
    a=$(field 1 1 "$f") b=$(field 2 1 "$f")
    check "ring 1 (TX) $f moves from snapshot 1 to 2 ($a -> $b)" up "$a" "$b"
done
a=$(field 1 0 used-\>idx) b=$(field 2 0 used-\>idx)
check "ring 0 (RX) used->idx moves from snapshot 1 to 2 ($a -> $b)" up "$a" "$b"
for s in 1 2 3; do
    f0=$(field $s 0 flight) f1=$(field $s 1 flight)
    check "snapshot $s: ring 0 keeps many buffers in flight ($f0 > 128), ring 1 few ($f1 < 8)" \
        eval 'num "$f0" && num "$f1" && [ "$f0" -gt 128 ] && [ "$f1" -lt 8 ]'
done
check "both rings show event idx: used_event and avail_event in every snapshot" \
    eval '[ "$(grep -c "used_event [0-9]" "$OUT")" = 6 ] && [ "$(grep -c "avail_event [0-9]" "$OUT")" = 6 ]'
a=$(field 2 1 avail-\>idx) b=$(field 3 1 avail-\>idx)
check "peer down: ring 1 (TX) avail->idx still moves from snapshot 2 to 3 ($a -> $b)" up "$a" "$b"
down=$(grep '^from a second after the link went down to snapshot 3:' "$OUT")
check "peer down: no more replies and ring 0 (RX) used->idx +0, while ring 1 moves: ${down#*: }" \
    eval '[[ $down =~ got\ 0\ more\ replies\;\ ring\ 1\ \(TX\)\ avail-\>idx\ \+[1-9][0-9]*\ .*ring\ 0\ \(RX\)\ avail-\>idx\ \+[0-9]+\ used-\>idx\ \+0$ ]]'
ns=$(sed -n 's/^veth pair: .*in netns \(vxlab-[0-9]*\),.*/\1/p' "$OUT")
host=$(sed -n 's/^veth pair: \(vxh[0-9]*\) .*/\1/p' "$OUT")
check "it cleaned up: netns ${ns:-?} and veth ${host:-?} are gone" \
    eval '[ -n "$ns" ] && [ -n "$host" ] && grep -q "cleaned up: .*netns $ns" "$OUT" && ! ip netns list | grep -qw "$ns" &&
          ! ip link show dev "$host" >/dev/null 2>&1'
[ "$TAP_FAILED" -gt 0 ] && sed 's/^/# /' "$OUT"
done_testing
