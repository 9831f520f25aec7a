#!/usr/bin/env bash
# tests/test_lab7.sh - Lab 7 (labs/lab7-offloads.sh --ci) shows what the README says it shows.
#
# Runs the lab non-interactively and checks, in its output:
#   - step 1 (offloads): A negotiated CSUM, GUEST_CSUM, GUEST_TSO4 and HOST_TSO4; the transfer
#     arrived whole; a --trace=rings header line of a TSO packet (gso_type TCPV4, NEEDS_CSUM) that
#     "crosses whole"; vhost-xdp counted TSO packets, cut none and completed no checksum;
#   - step 2 (--no-offloads): C negotiated none of them; the transfer arrived; no offloads line;
#   - step 3: chains per 64 KiB below 5 with the offloads, above 40 without (TCP's 1448-byte
#     segments: 45 per 64 KiB); a RATIO line (a number: no speed is asserted);
#   - step 4 (to a veth peer): a header line "cut for the NIC into N segments"; vhost-xdp cut more
#     segments than TSO packets and saw partial checksums from the peer;
#   - it exits 0, and the netns and the processes it started are gone.
# Needs root, ip and qemu-system-x86_64 (a missing one skips; fails under CI=true).  Four TCG guests
# boot in parallel: about 25-40 s.
set -u
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || missing "lab 7 needs root"
require "lab 7" ip qemu-system-x86_64

TOP=$(cd "$TESTS_DIR/.." && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/vx-lab7-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
OUT=$TMP/lab7.out

"$TOP/labs/lab7-offloads.sh" --ci >"$OUT" 2>&1 </dev/null
rc=$?
check "labs/lab7-offloads.sh --ci exits 0 (got $rc)" test "$rc" = 0

num() { [[ ${1:-} =~ ^[0-9]+$ ]]; }
# step N: the lines of step N's section.
step() { awk -v s="--- $1" 'index($0, s) == 1 { on = 1; next } /^--- / { on = 0 } on' "$OUT"; }
field() { sed -n "s/.*$1 \([0-9]*\).*/\1/p" | head -n 1; }

s1=$(step 1.) s2=$(step 2.) s3=$(step 3.) s4=$(step 4.)
check "step 1: A negotiated CSUM, GUEST_CSUM, GUEST_TSO4 and HOST_TSO4" \
    eval 'grep -q "negotiated: CSUM GUEST_CSUM GUEST_TSO4 .*HOST_TSO4" <<<"$s1"'
check "step 1: the transfer arrived whole" eval 'grep -q "VXTCP recv ok bytes=8388608 " <<<"$s1"'
check "step 1: --trace=rings shows a TSO packet's header, NEEDS_CSUM, crossing whole" \
    eval 'grep -q "trace: ring 1: header flags=NEEDS_CSUM gso_type=TCPV4 .*gso_size=[0-9]* csum_start=[0-9]* csum_offset=16; [0-9]* bytes in [0-9]* buffers: crosses whole" <<<"$s1"'
tso1=$(field "TSO packets" <<<"$s1") cut1=$(field "cut into" <<<"$s1") cs1=$(field "checksums completed" <<<"$s1")
check "step 1: vhost-xdp counted ${tso1:-?} TSO packets, cut ${cut1:-?}, completed ${cs1:-?} checksums (want >0, 0, 0)" \
    eval 'num "$tso1" && [ "$tso1" -gt 0 ] && [ "$cut1" = 0 ] && [ "$cs1" = 0 ]'
check "step 2: C negotiated none of the offloads" eval 'grep -q "negotiated: none of them" <<<"$s2"'
check "step 2: the transfer arrived whole, and vhost-xdp had no offload to count" \
    eval 'grep -q "VXTCP recv ok bytes=8388608 " <<<"$s2" && grep -q "no offloads line" <<<"$s2"'
c1=$(sed -n 's/^ *A -> B, offloads *[0-9]* *\([0-9.]*\) .*/\1/p' <<<"$s3") c2=$(sed -n 's/^ *C -> D, --no-offloads *[0-9]* *\([0-9.]*\) .*/\1/p' <<<"$s3")
check "step 3: chains per 64 KiB: ${c1:-?} with the offloads (< 5), ${c2:-?} without (> 40)" \
    eval 'awk -v a="${c1:-99}" -v b="${c2:-0}" "BEGIN { exit !(a < 5 && b > 40) }"'
check "step 3: a RATIO line" eval 'grep -Eq "RATIO offloads / no-offloads, guest to guest: [0-9]+\.[0-9]+x" <<<"$s3"'
tso4=$(field "TSO packets" <<<"$s4") cut4=$(field "cut into" <<<"$s4") part4=$(field "partial checksums from the NIC" <<<"$s4")
check "step 4: a header line of a packet cut for the NIC" eval 'grep -q "cut for the NIC into [0-9]* segments" <<<"$s4"'
check "step 4: ${tso4:-?} TSO packets cut into ${cut4:-?} segments; ${part4:-?} partial checksums from the peer" \
    eval 'num "$tso4" && num "$cut4" && num "$part4" && [ "$cut4" -gt "$tso4" ] && [ "$part4" -gt 0 ]'
check_lab_cleanup "$OUT"
[ "$TAP_FAILED" -gt 0 ] && sed 's/^/# /' "$OUT"
done_testing
