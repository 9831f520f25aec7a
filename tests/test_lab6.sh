#!/usr/bin/env bash
# tests/test_lab6.sh - Lab 6 as CI runs it: `labs/lab6-table.sh --ci`, one short round of every cell.
#
# The lab boots two guests from the virtio-pmd image (virtio_net and virtio-pmd), each with a port on
# vhost-xdp and a port on QEMU's tap, and measures every cell guest -> peer and peer -> guest at 64 B.
# No rate is asserted (rates depend on the machine); asserted is that every cell was measured, and
# measured right:
#   - it exits 0, and everything it started (QEMUs, vhost-xdp, testpmd) or made (netns, veth, bridge,
#     taps, temporary directory) is gone afterwards;
#   - a table row per cell and direction with packets per second and Mbit/s above 0;
#   - every cell moved packets, and its counts agree: guest -> peer through vhost-xdp, the peer
#     received exactly what vhost-xdp sent on the veth, and vhost-xdp took from the guest exactly
#     what the guest's driver sent; peer -> guest, the guest's driver received exactly what vhost-xdp
#     gave it; through the tap, the same against the tap's counters (guest -> peer, the guest may
#     count up to a ring more: testpmd's last burst is still in the TX ring when it resets the device);
#   - the chart's bars and the RATIO lines (with a number), the SVG file (a bar per cell);
#   - the reading: the verdict against the articles' 2-4x, the vhost-net sentence, and what other
#     programs took from the CPUs.
# Needs root, qemu-system-x86_64 and dpdk-testpmd; missing ones skip (fail under CI=true).  About two
# minutes on a quiet 2-CPU machine.
set -u
. "$(dirname "$0")/lib.sh"

TOP=$(cd "$TESTS_DIR/.." && pwd)

if [ "$(id -u)" != 0 ]; then
    if [ "${CI:-}" = true ]; then not_ok "lab 6 needs root (CI=true: a failure)"; else skip "lab 6 needs root"; fi
    done_testing
fi
require "lab 6 (labs/lab6-table.sh)" qemu-system-x86_64 dpdk-testpmd
[ -x "$VX" ] || { not_ok "$VX is built (run make)"; done_testing; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/vx-test-lab6-$$.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
out=$tmp/out
svg=$tmp/lab6.svg
"$TOP/labs/lab6-table.sh" --ci --svg "$svg" >"$out" 2>&1
rc=$?
show_output() { sed 's/^/# | /' "$out"; }

check "lab6-table.sh --ci exits 0 (status $rc)" [ "$rc" -eq 0 ]

# --- Everything it started or made is gone.
pids=$(sed -n 's/^guest [a-z]* (vxdrv=[a-z]*): QEMU pid \([0-9]*\),.*/\1/p; s/.*cleaned up: stopped pids \([0-9 ]*\);.*/\1/p' "$out" | tr '\n' ' ')
all_gone() { local p; [ -n "$pids" ] || return 1; for p in $pids; do ! kill -0 "$p" 2>/dev/null || return 1; done; }
check "every pid it started is stopped ($(echo "$pids" | wc -w) pids)" all_gone
lab_pid=$(sed -n 's/^veth pair: vxh\([0-9]*\) .*/\1/p' "$out" | head -n 1)
tmpdir=$(sed -n 's/.*cleaned up: .* \(\/[^ ]*\)$/\1/p' "$out" | tail -n 1)
nothing_left() {
    [ -n "$lab_pid" ] && [ -n "$tmpdir" ] && [ ! -e "$tmpdir" ] &&
        ! ip link show "vxh$lab_pid" >/dev/null 2>&1 &&
        ! ip netns list | grep -Eq "^vxlab(-h)?-$lab_pid( |$)" &&
        [ ! -e "$DPDK_RUNDIR/vxlab6-$lab_pid-sender" ]
}
check "netns vxlab-${lab_pid:-?} and vxlab-h-${lab_pid:-?} (veth, bridge, taps), ${tmpdir:-its temp dir} are removed" nothing_left

# --- The table: "  DIRECTION  GUEST DRIVER  HOST SIDE  64B  PPS  MBIT/S  MIN-MAX kpps  OFFERED  OTHER%"
hosts="vhost-xdp tap"
[ -c /dev/vhost-net ] && grep -q 'vhost-net + tap ' "$out" && hosts+=" vhost-net"
host_label() { case $1 in vhost-xdp) echo "vhost-xdp (AF_XDP)" ;; tap) echo "QEMU virtio-net + tap" ;; vhost-net) echo "vhost-net + tap" ;; esac; }
kind_label() { case $1 in kernel) echo "virtio_net (kernel)" ;; pmd) echo "virtio-pmd (DPDK)" ;; esac; }
dir_label() { case $1 in tx) echo "guest -> peer" ;; rx) echo "peer -> guest" ;; esac; }
row() {
    grep -F -- "  $(dir_label "$1") $(kind_label "$2")" "$out" | grep -F -- " $(host_label "$3") " |
        grep -E ' 64B +[0-9]+ +[0-9.]+ +[0-9]+-[0-9]+ kpps +([0-9]+|-) +[0-9]+%$' | head -n 1 |
        awk '{ for (i = 1; i < NF; i++) if ($i == "64B") { print $(i + 1), $(i + 2); exit } }'
}
measured() { local r; r=$(row "$@"); [ -n "$r" ] && echo "$r" | awk '{ exit !($1 > 0 && $2 > 0) }'; }
cells=0
for dir in tx rx; do
    for kind in kernel pmd; do
        for host in $hosts; do
            cells=$((cells + 1))
            check "table: $(dir_label "$dir"), $kind guest, $host: measured (pps Mbit/s: $(row "$dir" "$kind" "$host"))" \
                measured "$dir" "$kind" "$host"
        done
    done
done

# --- The counts, from the COUNT lines (numbers compared here, not the lab's own verdict).
# guest -> peer, vhost-xdp: "the guest sent G, vhost-xdp took F and sent N, the peer received P"
tx_vx_ok() {
    sed -En "s/^  COUNT tx $1 vhost-xdp 64B: the guest sent ([0-9]+), vhost-xdp took ([0-9]+) and sent ([0-9]+), the peer received ([0-9]+): .*/\1 \2 \3 \4/p" "$out" |
        awk '{ n++; if (!($4 > 0 && $3 == $4 && $1 == $2 && $2 == $3)) bad++ } END { exit !(n > 0 && !bad) }'
}
# peer -> guest, vhost-xdp: "... gave T to the guest (dropped D), the guest received R"
rx_vx_ok() {
    sed -En "s/^  COUNT rx $1 vhost-xdp 64B: .* gave ([0-9]+) to the guest \(dropped [0-9]+\), the guest received ([0-9]+): .*/\1 \2/p" "$out" |
        awk '{ n++; if (!($2 > 0 && $1 == $2)) bad++ } END { exit !(n > 0 && !bad) }'
}
# the tap: guest -> peer "the guest sent G, the tap took T from QEMU, the peer received P";
# peer -> guest "the tap gave T to QEMU (dropped D: ...), the guest received R"
# (testpmd's last burst may still be in the TX ring when it stops and resets QEMU's device: the
# guest's count may exceed the tap's by at most a ring, 256.)
tx_tap_ok() {
    sed -En "s/^  COUNT tx $1 $2 64B: the guest sent ([0-9]+), the tap took ([0-9]+) from QEMU, the peer received ([0-9]+)[ :(].*/\1 \2 \3/p" "$out" |
        awk '{ n++; if (!($3 > 0 && $2 == $3 && $1 >= $2 && $1 <= $2 + 256)) bad++ } END { exit !(n > 0 && !bad) }'
}
rx_tap_ok() {
    sed -En "s/^  COUNT rx $1 $2 64B: .* the tap gave ([0-9]+) to QEMU \(dropped [0-9]+: its queue was full\), the guest received ([0-9]+): .*/\1 \2/p" "$out" |
        awk '{ n++; if (!($2 > 0 && $1 == $2)) bad++ } END { exit !(n > 0 && !bad) }'
}
count_line() { grep -m1 -o "COUNT $1 $2 $3 64B: .*" "$out" || echo "COUNT $1 $2 $3: no line"; }
for kind in kernel pmd; do
    check "$(count_line tx "$kind" vhost-xdp)" tx_vx_ok "$kind"
    check "$(count_line rx "$kind" vhost-xdp)" rx_vx_ok "$kind"
    for host in $hosts; do
        [ "$host" = vhost-xdp ] && continue
        check "$(count_line tx "$kind" "$host")" tx_tap_ok "$kind" "$host"
        check "$(count_line rx "$kind" "$host")" rx_tap_ok "$kind" "$host"
    done
done

# --- The chart, the ratios, the SVG.
has() { grep -Eq -- "$1" "$out"; }
bars() { [ "$(grep -cE '^    virtio(_net|-pmd) \+ [a-z-]+ +\|#+ *\| +[0-9.]+ kpps$' "$out")" -eq "$cells" ]; }
check "chart: a bar per cell and direction ($cells)" bars
for dir in tx rx; do
    check "$(grep -o "RATIO $dir 64 B: virtio-pmd + vhost-xdp / virtio_net + tap = [^ ]*" "$out" || echo "RATIO $dir 64 B line") (a number)" \
        has "^  RATIO $dir 64 B: virtio-pmd \+ vhost-xdp / virtio_net \+ tap = [0-9]+\.[0-9]+x "
    check "RATIO $dir 64 B: both halves apart (host: virtio_net + vhost-xdp / tap; guest: virtio-pmd + tap / virtio_net + tap)" \
        eval 'has "^  RATIO $dir 64 B: virtio_net \+ vhost-xdp / virtio_net \+ tap = [0-9]+\.[0-9]+x " &&
              has "^  RATIO $dir 64 B: virtio-pmd \+ tap / virtio_net \+ tap = [0-9]+\.[0-9]+x "'
done
svg_ok() {
    [ -s "$svg" ] && head -n 1 "$svg" | grep -q '^<svg xmlns="http://www.w3.org/2000/svg"' &&
        [ "$(tail -n 1 "$svg")" = "</svg>" ] && [ "$(grep -c '<rect ' "$svg")" -eq "$cells" ]
}
check "SVG chart written with $cells bars" svg_ok

# --- The reading.
check "reading: the whole picture against the articles' 2-4x, both directions" \
    eval 'has "path: (below|above|inside|partly inside) the articles. 2-4x\.  Peer -> guest: [0-9]+\.[0-9]+x at 64 B,$" &&
          has "^  (below|above|inside|partly inside) it\.  The two halves apart"'
if [ -c /dev/vhost-net ]; then
    check "reading: vhost-net measured, or why not" has "^  vhost-net (was measured too|, the articles' baseline, was not measured)"
else
    check "reading: says vhost-net is missing, so the 2-4x is neither confirmed nor refuted" \
        has "^  vhost-net, the articles' baseline, was not measured: no /dev/vhost-net"
fi
check "reading: what other programs took from the CPUs ($(grep -o 'Other programs used [0-9]*% of a CPU on average' "$out"))" \
    has "^  Other programs used [0-9]+% of a CPU on average during the samples"

if [ "$TAP_FAILED" -ne 0 ] || [ -n "${VX_SHOW_LOG:-}" ]; then show_output; fi
done_testing
