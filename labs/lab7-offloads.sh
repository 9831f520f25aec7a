#!/usr/bin/env bash
# labs/lab7-offloads.sh - Lab 7: the virtio-net offloads.  Two guests send each other TCP through
# vhost-xdp, with the offloads (CSUM, GUEST_CSUM, TSO) and with --no-offloads; then one guest sends
# to a peer behind a veth.  The lab counts the descriptor chains per 64 KiB, says who computes the
# checksums, and shows one packet's virtio-net header as --trace prints it.
#
#     sudo labs/lab7-offloads.sh [--ci]
#
# Topology (VM-to-VM: each vhost-xdp has two sockets, each the other's port):
#
#   guest A 10.0.7.2 --vhost-user-- vhost-xdp             --vhost-user-- guest B 10.0.7.3
#   guest C 10.0.8.2 --vhost-user-- vhost-xdp --no-offloads --vhost-user-- guest D 10.0.8.3
#   then guest A --vhost-user-- vhost-xdp --iface vxhPID ==veth== vxpPID 10.0.7.1 (netns vxlab-PID)
#
# Steps: (1) A sends B N MiB, with vhost-xdp --trace=rings: one packet's header, the counters;
# (2) C sends D the same, without offloads: the counters; (3) the two side by side: Mbit/s, chains
# per 64 KiB, who computed the checksums; (4) vhost-xdp restarted on A's socket with --iface: A sends
# the peer N MiB; vhost-xdp cuts each 64 KiB packet for the wire and leaves the TCP checksums to the
# kernel (AF_XDP TX metadata) or computes them, and the peer's own partial checksums reach A as NEEDS_CSUM.  The transfers are tests/tcpcheck.c's with
# -n (zeros, bytes counted: under an emulated CPU the pattern check would cost more than the network;
# tests/test_tcp.sh checks every byte).  --ci (or LAB_CI=1): 8 MiB instead of 64, no pauses.
set -u
. "$(dirname "$0")/common.sh"
lab_init lab7 "$@"
[ ${#LAB_ARGS[@]} -eq 0 ] || { echo "usage: sudo $0 [--ci]" >&2; exit 2; }
lab_need_root
lab_need_cmd ip iproute2
lab_need_cmd qemu-system-x86_64 qemu-system-x86
lab_build
"$VX" --help | grep -q -- --no-offloads || lab_die "this vhost-xdp has no --no-offloads option: rebuild it (make)"
TCPCHECK=$TOP/tests/tcpcheck        # the peer's end of step 4 (the guests have their own)
[ -x "$TCPCHECK" ] || make -s -C "$TOP" tests/tcpcheck >"$LAB_TMP/make.log" 2>&1 ||
    { cat "$LAB_TMP/make.log" >&2; lab_die "make tests/tcpcheck failed"; }
lab_guest
MIB=64
[ "$LAB_CI" = 1 ] && MIB=8
BYTES=$((MIB * 1048576))

lab_title "Lab 7: offloads: 64 KiB TCP segments through vhost-xdp"

# === Two vhost-xdp, four guests =============================================

# vx NAME ARGS...: a vhost-xdp of this lab, log in LAB_TMP/NAME.log; VXP[NAME] its pid.
declare -A VXP
vx() {
    local name=$1; shift
    "$VX" "$@" </dev/null >"$LAB_TMP/$name.log" 2>&1 &
    VXP[$name]=$!
    lab_track "${VXP[$name]}"
    wait_for "vhost-xdp $name" 10 grep -q "listening on" "$LAB_TMP/$name.log" ||
        { cat "$LAB_TMP/$name.log" >&2; lab_die "vhost-xdp $name did not start"; }
}
# guest NAME IP MAC: a test guest in agent mode (commands on its second serial port).
guest() {
    GUEST_AGENT=$LAB_TMP/$1 start_guest "$LAB_TMP" "$1" "$LAB_TMP/$1.sock" agent "" "" "vxip=$2/24" "$3"
    lab_track "$QEMU_PID"
}
vx offl --socket "$LAB_TMP/a.sock" --socket "$LAB_TMP/b.sock" --pmd-sleep 100 --trace=rings
vx nooffl --socket "$LAB_TMP/c.sock" --socket "$LAB_TMP/d.sock" --pmd-sleep 100 --no-offloads
guest a 10.0.7.2 52:54:00:12:37:02
guest b 10.0.7.3 52:54:00:12:37:03
guest c 10.0.8.2 52:54:00:12:38:02
guest d 10.0.8.3 52:54:00:12:38:03
guest_accel
lab_say "four guests on two vhost-xdp: A, B with the offloads; C, D with --no-offloads"
lab_say "guests: $GUEST_ACCEL ($GUEST_ACCEL_WHY); booting..."
for g in a b c d; do
    wait_for "guest $g" 300 grep -aqs "VXAGENT ready" "$LAB_TMP/$g.serial" || lab_die "guest $g did not boot"
done

declare -A NCMD
gcmd() { NCMD[$1]=$((${NCMD[$1]:-0} + 1)); agent_cmd "$LAB_TMP/$1.serial" "$LAB_TMP/$1" "${NCMD[$1]}" "$2" "${3:-180}"; }
recv_line() { tr -d '\r' <"$LAB_TMP/$1.serial" | grep -a 'VXTCP recv ' | tail -n 1; }
mbit() { sed -n 's/.*mbit=\([0-9]*\).*/\1/p' <<<"$1"; }
# features G: the offload bits guest G's driver took, by name.
features() {
    local f names='' b n
    f=$(guest_features "$LAB_TMP/$1.serial")
    for b in 0:CSUM 1:GUEST_CSUM 7:GUEST_TSO4 8:GUEST_TSO6 11:HOST_TSO4 12:HOST_TSO6; do
        n=${b#*:}
        [ "${f:${b%%:*}:1}" = 1 ] && names+="${names:+ }$n"
    done
    echo "${names:-none of them}"
}
# send FROM TO ADDR: FROM sends TO (a guest, or "peer") BYTES over TCP; the receiver's line in RESULT.
send() {
    local port=$((6000 + RANDOM % 1000))
    if [ "$2" = peer ]; then
        lab_in_ns "$TCPCHECK" recv -n -t 120 "$port" "$BYTES" >"$LAB_TMP/peer.out" 2>&1 &
        local rp=$!
        wait_for "the peer to listen" 10 grep -q listening "$LAB_TMP/peer.out"
        gcmd "$1" "tcpcheck send -n -t 120 $3 $port $BYTES" >/dev/null
        wait "$rp"
        RESULT=$(grep 'VXTCP recv' "$LAB_TMP/peer.out")
    else
        gcmd "$2" "tcpcheck recv -n -t 120 $port $BYTES &" >/dev/null
        gcmd "$1" "tcpcheck send -n -t 120 $3 $port $BYTES" >/dev/null
        wait_for "$2's result" 30 eval "recv_line $2 | grep -q bytes="
        RESULT=$(recv_line "$2")
    fi
    grep -q "VXTCP recv ok" <<<"$RESULT" || lab_die "the transfer $1 -> $2 failed: ${RESULT:-no result}"
}
# largest_header LOG WHAT: of the header lines --trace=rings logged (TX ring 1), the one of the
# longest packet; the first ones come from TCP's slow start, still short.
largest_header() {
    grep -a "trace: ring 1: header .*$2" "$LAB_TMP/$1.log" |
        awk '{ for (i = 1; i < NF; i++) if ($(i + 1) == "bytes") n = $i } n + 0 > max { max = n + 0; line = $0 } END { print line }' |
        sed 's/^vhost-xdp: /    /'
}
# stop_vx NAME: SIGTERM, then its exit lines are in its log.
stop_vx() { lab_stop "${VXP[$1]}"; }
exit_field() { grep -a "exit: ${2}from guest" "$LAB_TMP/$1.log" | sed -n 's/.*from guest \([0-9]*\) packets.*/\1/p' | tail -n 1; }
offload_line() { grep -a "exit: ${2}offloads:" "$LAB_TMP/$1.log" | tail -n 1 | sed 's/.*offloads: //'; }

# === 1. with the offloads ===================================================

lab_step "1. guest A sends guest B $MIB MiB over TCP, both with the offloads"
lab_say "  A's driver negotiated: $(features a)"
send a b 10.0.7.3
R1=$RESULT
lab_say "  $R1"
lab_say "  the largest of A's packets --trace=rings showed (one every 1/3 s), with its virtio-net header:"
largest_header offl 'crosses whole'
stop_vx offl
DEV_A="device 0 ($LAB_TMP/a.sock): "
P1=$(exit_field offl "$DEV_A")
lab_say "  vhost-xdp's exit lines for A: from guest $P1 packets; offloads: $(offload_line offl "$DEV_A")"
lab_explain <<'EOF'

A's TCP hands its driver segments of up to 64 KiB with a header that says gso_type TCPV4, gso_size
(the MSS at which they would have to be cut) and NEEDS_CSUM: the TCP checksum is not computed, its
field holds only the pseudo-header's sum.  virtio-net puts such a segment in one descriptor chain:
its header and linear part, then the pages of the data, one descriptor each ("in N buffers"), all
behind one indirect descriptor, so one slot of the ring and one used entry.  B negotiated
GUEST_TSO4 and GUEST_CSUM: vhost-xdp copies the 64 KiB into B's receive buffers with the same header
("crosses whole", "cut into 0 segments", "checksums completed 0").  B's stack takes NEEDS_CSUM as
"checksum not needed": between two guests in one host, no wire can corrupt the bytes, and nobody
computes the checksum at all.
EOF
lab_pause

# === 2. without ==============================================================

lab_step "2. guest C sends guest D the same, through vhost-xdp --no-offloads"
lab_say "  C's driver negotiated: $(features c)"
send c d 10.0.8.3
R2=$RESULT
lab_say "  $R2"
stop_vx nooffl
DEV_C="device 0 ($LAB_TMP/c.sock): "
P2=$(exit_field nooffl "$DEV_C")
lab_say "  vhost-xdp's exit lines for C: from guest $P2 packets; $(offload_line nooffl "$DEV_C" | grep . || echo "no offloads line: no header asked for anything")"
lab_explain <<'EOF'

Without CSUM and HOST_TSO4 offered, C's driver offers its stack neither checksum nor segmentation
offload: TCP cuts the data into MSS-sized segments (1448 bytes at MTU 1500) and computes each
segment's checksum, and D's stack verifies each one.  Every segment is a chain of its own: an
avail entry, a walk, a copy, a used entry, and (if D asks) an interrupt, about 45 times per 64 KiB.
EOF
lab_pause

# === 3. side by side =========================================================

lab_step "3. side by side ($MIB MiB, guests under $GUEST_ACCEL)"
per64() { awk -v p="$1" -v b="$BYTES" 'BEGIN { if (p > 0) printf "%.1f", p * 65536 / b; else printf "-" }'; }
printf '    %-30s %10s %16s  %s\n' "" "Mbit/s" "chains / 64 KiB" "checksums computed by"
printf '    %-30s %10s %16s  %s\n' "A -> B, offloads" "$(mbit "$R1")" "$(per64 "$P1")" "nobody"
printf '    %-30s %10s %16s  %s\n' "C -> D, --no-offloads" "$(mbit "$R2")" "$(per64 "$P2")" "C (each segment), verified by D"
M1=$(mbit "$R1") M2=$(mbit "$R2")
[ -n "$M1" ] && [ -n "$M2" ] && [ "$M2" -gt 0 ] &&
    lab_say "  RATIO offloads / no-offloads, guest to guest: $(awk -v a="$M1" -v b="$M2" 'BEGIN { printf "%.2f", a / b }')x"
lab_explain <<'EOF'

(The chains counted are all of the sending guest's TX ring: its data and a few packets of the
connection's set-up.)  The rate difference is the guests' work: one 64 KiB chain instead of 45,
and no checksum anywhere.  Under TCG, where every guest instruction is emulated, that work is
almost all there is; under KVM the guests would be faster and vhost-xdp's copy would weigh more.
EOF
lab_pause

# === 4. to a wire ============================================================

lab_step "4. guest A sends a peer behind a veth: vhost-xdp --iface on A's socket"
lab_netns
ip -n "$LAB_NS" addr add 10.0.7.1/24 dev "$LAB_PEER"
vx wire --socket "$LAB_TMP/a.sock" --iface "$LAB_HOST" --pmd-sleep 100 --trace=rings
lab_say "  (QEMU reconnects A to the new vhost-xdp; A keeps its features)"
send a peer 10.0.7.1
R4=$RESULT
lab_say "  $R4"
lab_say "  the largest of A's packets --trace=rings showed, cut for the wire:"
largest_header wire 'cut for the NIC'
stop_vx wire
lab_say "  vhost-xdp's exit lines: offloads: $(offload_line wire "")"
lab_explain <<'EOF'

A wire takes only MTU-sized frames with whole checksums, so here vhost-xdp does what a NIC's TSO
does in hardware, in the poll thread: it cuts each 64 KiB packet into frames of headers + gso_size
bytes (IP length and id, TCP sequence number and flags rewritten), computes each IP header
checksum, and leaves each TCP checksum to the kernel, as a NIC driver would be asked to: with
AF_XDP's TX metadata (Linux 6.11+) each frame says where its checksum goes, and the kernel marks its
skb CHECKSUM_PARTIAL ("checksums left to the NIC's kernel"; on an older kernel, or with zero-copy,
vhost-xdp computes them, and the log's "TX checksums" line says so).  The other way, the peer's stack left its checksums for its veth
"hardware" (CHECKSUM_PARTIAL, the veth's TX checksum offload): vhost-xdp recognises the
pseudo-header sum in the field and hands such frames to A as NEEDS_CSUM ("partial checksums from
the NIC"), which A may take as they are.
EOF
