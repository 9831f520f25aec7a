#!/usr/bin/env bash
# tests/test_lab4.sh - Lab 4 (labs/lab4-bypass.sh --ci) shows what the README says it shows.
#
# Runs the lab non-interactively, keeping its files (LAB_KEEP), and checks:
#   - step 1: while the guest's pings got replies through vhost-xdp, the host namespace's veth
#     driver counted frames (rx_packets moved) but its IP stack did not: Ip InReceives +0, Icmp
#     InMsgs +0;
#   - step 2: the XDP program is gone after vhost-xdp stops; the --pcap file holds ICMP echo requests
#     Out and echo replies In, at least as many replies as the guest counted in step 1; and tcpdump,
#     an independent pcap reader, finds the same numbers as the lab's own decoder and as many frames
#     as vhost-xdp says it captured;
#   - step 3: without vhost-xdp the peer's 3 pings of 10.0.0.3 are answered and move Ip InReceives
#     and Icmp InMsgs by 3 or more;
#   - it exits 0 and removes both namespaces.
# Needs root, ip, qemu-system-x86_64, tcpdump (the cross-check).  Takes 20-40 s (one TCG guest).
set -u
. "$(dirname "$0")/lib.sh"


[ "$(id -u)" = 0 ] || missing "lab 4 needs root"
require "lab 4" ip
require "lab 4" qemu-system-x86_64

TOP=$(cd "$TESTS_DIR/.." && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/vx-lab4-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
OUT=$TMP/lab4.out

LAB_KEEP=$TMP/keep "$TOP/labs/lab4-bypass.sh" --ci >"$OUT" 2>&1 </dev/null
rc=$?
check "labs/lab4-bypass.sh --ci exits 0 (got $rc)" test "$rc" = 0

num() { [[ ${1:-} =~ ^[0-9]+$ ]]; }
# moved STEP ROW: the "moved" column of ROW ("rx_packets", "Ip InReceives", "Icmp InMsgs") in the
# counter table under the heading of STEP ("1." or "3.").
moved() {
    awk -v s="--- $1" -v r="$2" 'index($0, s) == 1 { in_s = 1; next } /^--- / { in_s = 0 }
        in_s && index($0, r) { v = $NF; sub(/^\+/, "", v); print v; exit }' "$OUT"
}
rx1=$(moved 1. rx_packets) ip1=$(moved 1. "Ip InReceives") icmp1=$(moved 1. "Icmp InMsgs")
replies=$(sed -n 's/^  meanwhile the guest got \([0-9]*\) ping replies.*/\1/p' "$OUT")
check "step 1: the guest got ping replies through vhost-xdp (${replies:-none})" eval 'num "$replies" && [ "$replies" -gt 0 ]'
check "step 1: the host end's veth driver counted frames (rx_packets +${rx1:-?})" eval 'num "$rx1" && [ "$rx1" -gt 0 ]'
check "step 1: the host namespace's IP stack saw none of them (Ip InReceives +${ip1:-?}, Icmp InMsgs +${icmp1:-?})" \
    test "${ip1:-x}/${icmp1:-x}" = 0/0

check "step 2: no XDP program on the host end after vhost-xdp stopped" grep -q 'now: no XDP program' "$OUT"
read -r frames req rep < <(sed -n 's/^  pcap: \([0-9]*\) frames: \([0-9]*\) ICMP echo requests Out .*, \([0-9]*\) ICMP echo replies In .*/\1 \2 \3/p' "$OUT")
check "step 2: the capture holds echo requests Out (${req:-?}) and at least the guest's ${replies:-?} replies In (${rep:-?})" \
    eval 'num "$req" && num "$rep" && [ "$req" -gt 0 ] && [ "$rep" -ge "${replies:-1}" ]'
captured=$(sed -n 's/.*exit: pcap: \([0-9]*\) packets captured.*/\1/p' "$OUT")
PCAP=$TMP/keep/guest.pcap
if need_cmd tcpdump "lab 4: cross-check the capture with tcpdump"; then
    td_frames=$(tcpdump -n -r "$PCAP" 2>/dev/null | wc -l)
    td_req=$(tcpdump -n -e -r "$PCAP" 'icmp[icmptype] = 8' 2>/dev/null | grep -c '^[0-9:.]* Out ')
    td_rep=$(tcpdump -n -e -r "$PCAP" 'icmp[icmptype] = 0' 2>/dev/null | grep -c '^[0-9:.]*  *In ')
    check "step 2: tcpdump reads $td_frames frames = vhost-xdp's ${captured:-?} captured = the lab's ${frames:-?}" \
        eval '[ "$td_frames" = "$captured" ] && [ "$td_frames" = "$frames" ] && [ "$td_frames" -gt 0 ]'
    check "step 2: tcpdump finds the same echo requests Out ($td_req) and replies In ($td_rep) as the lab" \
        test "$td_req/$td_rep" = "${req:-x}/${rep:-x}"
fi

ip3=$(moved 3. "Ip InReceives") icmp3=$(moved 3. "Icmp InMsgs")
check "step 3: the peer's 3 pings of the host end are answered" grep -q 'ping: 3 packets transmitted, 3 .*received' "$OUT"
check "step 3: without vhost-xdp the stack counts them (Ip InReceives +${ip3:-?}, Icmp InMsgs +${icmp3:-?}, >= 3)" \
    eval 'num "$ip3" && num "$icmp3" && [ "$ip3" -ge 3 ] && [ "$icmp3" -ge 3 ]'
ns=$(sed -n 's/^veth pair: .*<-> .*in netns \(vxlab-[0-9]*\),.*/\1/p' "$OUT")
hns=$(sed -n 's/^veth pair: vxh[0-9]* (in netns \(vxlab-h-[0-9]*\),.*/\1/p' "$OUT")
check "it cleaned up: netns ${hns:-?} and ${ns:-?} are gone" \
    eval '[ -n "$ns" ] && [ -n "$hns" ] && grep -q "cleaned up: .*netns $hns, netns $ns" "$OUT" &&
          ! ip netns list | grep -qwE "$ns|$hns"'
[ "$TAP_FAILED" -gt 0 ] && sed 's/^/# /' "$OUT"
done_testing
