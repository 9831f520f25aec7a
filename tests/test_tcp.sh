#!/usr/bin/env bash
# tests/test_tcp.sh - TCP through vhost-xdp, checked byte for byte: QEMU guests (kernel virtio-net) to
# each other and to a peer behind a veth, IPv4 and IPv6, with and without the offloads (issue 13).
#
# Three guests boot once, in agent mode (tests/build_guest.sh, vxtest=agent: the test sends them
# commands on a second serial port), and are reused: each vhost-xdp below is started on their sockets
# and QEMU (reconnect=1) reconnects to it.
#   A  10.0.0.2 fd00::2  every offload (QEMU's defaults: CSUM, GUEST_CSUM, HOST/GUEST_TSO4/6, ECN)
#   B  10.0.0.3 fd00::3  csum=off,guest_csum=off,guest_tso4=off,guest_tso6=off,guest_ecn=off: it sends
#                        and receives plain, MTU-sized, fully checksummed segments
#   C  10.0.0.4 fd00::4  every offload, like A, but mrg_rxbuf=off: Linux then receives into "big
#                        packet" chains of up to 64 KiB instead of mergeable buffers
# Each case moves N bytes (tests/tcpcheck.c: a deterministic pattern, every byte checked by the
# receiver) in both directions over IPv4 and over IPv6, and checks what vhost-xdp says it did:
#   1. VM-to-VM, A <-> B (mixed): A's 64 KiB TSO packets are cut into segments for B and A's partial
#      checksums completed in software (B negotiated neither); B's segments reach A as they are;
#   2. VM-to-VM, A <-> C: the 64 KiB packets cross whole (TSO packets counted, 0 segments cut), into
#      C's big-packet chains (no mergeable buffers) and A's mergeable buffers;
#   3. --iface on a veth made by `ip link add type veth` (its peer's TX checksum offload on, as always):
#      A <-> the peer in a netns: A's TSO packets are cut into frames for the wire, their checksums left
#      to the kernel (AF_XDP TX metadata: the log says so and every segment is counted) or, on a kernel
#      without it, completed by vhost-xdp; the peer's partial checksums reach A as NEEDS_CSUM;
#   4. the same with B: the peer's partial checksums are completed in software (B has no GUEST_CSUM).
# In every case the receiving kernels' checksum error counters (InCsumErrors in /proc/net/snmp and
# snmp6, in the guests and in the peer's netns) do not move.
#
# Needs qemu-system-x86_64 and the guest of tests/build_guest.sh; root for parts 3-4 (netns, veth,
# XDP).  A missing one skips (fails under CI=true).  Three TCG guests on 2 CPUs: about 1-2 minutes.
# TCP_BYTES=N changes the transfer size (default 8 MiB); VX_TCP_KEEP=DIR keeps the logs there.
set -u
. "$(dirname "$0")/lib.sh"

require "TCP test with QEMU guests" qemu-system-x86_64
[ -x "$VX" ] || { not_ok "vhost-xdp is built ($VX)"; done_testing; }
TCPCHECK=$TESTS_DIR/tcpcheck
[ -x "$TCPCHECK" ] || { not_ok "tests/tcpcheck is built (make)"; done_testing; }
GUEST=${VX_GUEST_DIR:-$TESTS_DIR/guest}
# Built (or found up to date) as tests/test_qemu.sh does: with tcpcheck and the agent mode.
"$TESTS_DIR/build_guest.sh" "$GUEST" 2>/dev/null || missing "test guest (tests/build_guest.sh failed)"
gzip -dc "$GUEST/initramfs.cpio.gz" | busybox cpio -t 2>/dev/null | grep -q "^bin/tcpcheck$" ||
    { not_ok "the test guest has /bin/tcpcheck"; done_testing; }
N=${TCP_BYTES:-8388608}

ID=$$
dir=$(mktemp -d "${TMPDIR:-/tmp}/vx-tcp-$ID.XXXXXX")
NS=vx-tcp-ns-$ID HOST=vxth$ID PEER=vxtp$ID
VX_PID='' VX0_PID='' QA='' QB='' QC='' RECV_PID='' NS_MADE=''
cleanup() {
    stop_pid "$RECV_PID"
    stop_pid "$QA"; stop_pid "$QB"; stop_pid "$QC"
    stop_pid "$VX_PID"; stop_pid "$VX0_PID"
    if [ -n "$NS_MADE" ]; then ip link del "$HOST" 2>/dev/null; ip netns del "$NS" 2>/dev/null; fi
    [ -n "${VX_TCP_KEEP:-}" ] && mkdir -p "$VX_TCP_KEEP" && cp "$dir"/*.log "$dir"/*.serial "$VX_TCP_KEEP"/ 2>/dev/null
    rm -rf "$dir"
}
on_exit cleanup

# diag FILE...: the lines worth seeing of each log, as TAP comments.
diag() { DIAG_LINES=15 diag_logs "$@"; }

# start_vx LOG ARGS...: a vhost-xdp, until it listens on its socket(s); its pid in VX_PID.
start_vx() {
    local log=$1; shift
    "$VX" "$@" </dev/null >"$log" 2>&1 &
    VX_PID=$!
    wait_for "vhost-xdp to listen" 10 grep -q "listening on" "$log" || { diag "$log"; return 1; }
}
# stop_vx: SIGTERM, and wait for its exit lines.
stop_vx() {
    kill -TERM "$VX_PID" 2>/dev/null
    wait "$VX_PID" 2>/dev/null
    VX_PID=''
}

# Counters of the last exit lines of LOG: offload_field LOG DEV FIELD -> the number (FIELD: "TSO
# packets", "cut into", "checksums completed", "partial checksums from the NIC", "bad headers").
offload_field() {
    local log=$1 dev=$2 field=$3 line
    line=$(grep -a "exit: ${dev}offloads:" "$log" | tail -n 1)
    sed -n "s/.*$field \([0-9]*\).*/\1/p" <<<"$line"
}

# --- the guests: A and C with every offload, B with none; each on its own socket
SOCK_A=$dir/a.sock SOCK_B=$dir/b.sock SOCK_C=$dir/c.sock
B_OFF=",csum=off,guest_csum=off,guest_tso4=off,guest_tso6=off,guest_ecn=off"
check "vhost-xdp VM-to-VM on A and B" start_vx "$dir/vx-ab.log" --socket "$SOCK_A" --socket "$SOCK_B" \
    --pmd-sleep 50 || done_testing
# C waits for its turn (case 2) on a loopback vhost-xdp of its own, so that it boots meanwhile.
"$VX" --socket "$SOCK_C" --loopback --pmd-sleep 1000 </dev/null >"$dir/vx-c0.log" 2>&1 &
VX0_PID=$!
wait_for "vhost-xdp on C's socket" 10 grep -q "listening on" "$dir/vx-c0.log"
GUEST_AGENT=$dir/a start_guest "$dir" a "$SOCK_A" agent "" "" "vxip=10.0.0.2/24 vxip6=fd00::2/64"
QA=$QEMU_PID
GUEST_AGENT=$dir/b start_guest "$dir" b "$SOCK_B" agent "$B_OFF" "" "vxip=10.0.0.3/24 vxip6=fd00::3/64" 52:54:00:12:34:57
QB=$QEMU_PID
GUEST_AGENT=$dir/c start_guest "$dir" c "$SOCK_C" agent ",mrg_rxbuf=off" "" "vxip=10.0.0.4/24 vxip6=fd00::4/64" 52:54:00:12:34:58
QC=$QEMU_PID
for g in a b c; do
    wait_for "guest $g" 180 grep -aqs "VXAGENT ready" "$dir/$g.serial" ||
        { not_ok "guest $g boots into agent mode"; diag "$dir/$g.serial" "$dir/$g.qemu.log"; done_testing; }
done
ok "three guests booted (agent mode)"
# The feature bits each guest's driver took (character i = bit i): CSUM 0, GUEST_CSUM 1, GUEST_TSO4 7,
# HOST_TSO4 11.  (QEMU leaves HOST_TSO4 on with csum=off; the driver never uses it without CSUM, and
# vhost-xdp reads no header from a guest without CSUM.)
fa=$(guest_features "$dir/a.serial") fb=$(guest_features "$dir/b.serial")
fc=$(guest_features "$dir/c.serial")
check "A negotiated CSUM, GUEST_CSUM, GUEST_TSO4 and HOST_TSO4; B neither CSUM nor GUEST_CSUM nor GUEST_TSO4; C GUEST_TSO4 without MRG_RXBUF (15)" \
    test "${fa:0:1}${fa:1:1}${fa:7:1}${fa:11:1}/${fb:0:1}${fb:1:1}${fb:7:1}/${fc:7:1}${fc:15:1}" = 1111/000/10 ||
    echo "# $fa / $fb / $fc"

# Guest commands: a number per guest, never reused (agent_cmd waits for "VXDONE ID").
declare -A CMD_ID=([a]=0 [b]=0 [c]=0)
gcmd() {    # gcmd GUEST CMD [SECS]
    CMD_ID[$1]=$((CMD_ID[$1] + 1))
    agent_cmd "$dir/$1.serial" "$dir/$1" "${CMD_ID[$1]}" "$2" "${3:-60}"
}
# csum_errors GUEST: "tcp udp udp6" receive checksum errors its kernel counted (from the last VXCSUM).
guest_csum() {
    gcmd "$1" csum_errors >/dev/null
    tr -d '\r' <"$dir/$1.serial" | sed -n 's/.*VXCSUM tcp=\([0-9]*\) udp=\([0-9]*\) udp6=\([0-9]*\).*/\1 \2 \3/p' | tail -n 1
}
# The last "VXTCP ROLE ..." line of a guest's console.
guest_result() { tr -d '\r' <"$dir/$1.serial" | grep -a "VXTCP $2 " | tail -n 1; }

# xfer_gg FROM TO ADDR PORT: guest FROM sends N bytes to guest TO at ADDR; ok when both ends say ok.
xfer_gg() {
    local from=$1 to=$2 addr=$3 port=$4 seed=$RANDOM
    gcmd "$to" "tcpcheck recv -t 60 $port $N $seed &" >/dev/null
    gcmd "$from" "tcpcheck send -t 60 $addr $port $N $seed" 120
    local st=$? r
    wait_for "guest $to's receiver" 30 eval "guest_result $to recv | grep -q 'bytes='"
    r=$(guest_result "$to" recv)
    if [ $st = 0 ] && grep -q "VXTCP recv ok bytes=$N " <<<"$r"; then
        ok "$from -> $to ($addr): $N bytes, every one checked ($(sed 's/.*mbit=/Mbit\/s /' <<<"$r"))"
    else
        not_ok "$from -> $to ($addr): sender status $st, receiver: ${r:-nothing}"
        diag "$dir/$from.serial" "$dir/$to.serial"
    fi
}

# === 1. VM-to-VM, A <-> B: mixed features ===
csum_a0=$(guest_csum a) csum_b0=$(guest_csum b)
xfer_gg a b 10.0.0.3 5001
xfer_gg b a 10.0.0.2 5002
xfer_gg a b fd00::3 5003
xfer_gg b a fd00::2 5004
csum_a1=$(guest_csum a) csum_b1=$(guest_csum b)
check "A's and B's receive checksum errors unchanged (tcp udp udp6: A $csum_a0 -> $csum_a1, B $csum_b0 -> $csum_b1)" \
    test "$csum_a1/$csum_b1" = "$csum_a0/$csum_b0"
stop_vx
log=$dir/vx-ab.log
dev_a="device 0 ($SOCK_A): "
tso=$(offload_field "$log" "$dev_a" "TSO packets") segs=$(offload_field "$log" "$dev_a" "cut into")
csum=$(offload_field "$log" "$dev_a" "checksums completed") bad=$(offload_field "$log" "$dev_a" "bad headers")
check "A -> B: A's TSO packets were cut for B ($tso TSO packets, $segs segments) and its checksums completed ($csum), 0 bad headers" \
    eval '[ "${tso:-0}" -gt 0 ] && [ "${segs:-0}" -gt "${tso:-0}" ] && [ "${csum:-0}" -gt 0 ] && [ "$bad" = 0 ]' || diag "$log"
check "B -> A: B sent no TSO packet and no partial checksum (no offloads line for B)" \
    eval '! grep -aq "exit: device 1 .*offloads:" "$log"'

# === 2. VM-to-VM, A <-> C: both with every offload ===
stop_pid "$VX0_PID"; VX0_PID=''
check "vhost-xdp VM-to-VM on A and C" start_vx "$dir/vx-ac.log" --socket "$SOCK_A" --socket "$SOCK_C" \
    --pmd-sleep 50 || done_testing
csum_c0=$(guest_csum c) csum_a0=$(guest_csum a)
xfer_gg a c 10.0.0.4 5011
xfer_gg c a 10.0.0.2 5012
xfer_gg a c fd00::4 5013
xfer_gg c a fd00::2 5014
csum_a1=$(guest_csum a) csum_c1=$(guest_csum c)
check "A's and C's receive checksum errors unchanged (A $csum_a0 -> $csum_a1, C $csum_c0 -> $csum_c1)" \
    test "$csum_a1/$csum_c1" = "$csum_a0/$csum_c0"
stop_vx
log=$dir/vx-ac.log
for d in 0 1; do
    sock=$SOCK_A; [ $d = 1 ] && sock=$SOCK_C
    tso=$(offload_field "$log" "device $d ($sock): " "TSO packets") segs=$(offload_field "$log" "device $d ($sock): " "cut into")
    check "device $d: its guest's TSO packets crossed whole ($tso TSO packets, ${segs:-?} segments cut)" \
        eval '[ "${tso:-0}" -gt 0 ] && [ "$segs" = 0 ]' || diag "$log"
done
stop_pid "$QC"; QC=''

# === 3-4. A and B <-> a peer behind a veth (AF_XDP) ===
if [ "$(id -u)" != 0 ]; then
    if [ "${CI:-}" = true ]; then not_ok "guest <-> veth peer: needs root (CI=true: a failure)"
    else skip "guest <-> veth peer: needs root (netns, veth, XDP)"; fi
    done_testing
fi
require "guest <-> veth peer" ip ethtool
NS_MADE=1
ip netns add "$NS" &&
ip link add "$HOST" numrxqueues 1 numtxqueues 1 type veth peer name "$PEER" numrxqueues 1 numtxqueues 1 &&
ip link set "$PEER" netns "$NS" && ip link set "$HOST" up && ip -n "$NS" link set "$PEER" up &&
ip -n "$NS" addr add 10.0.0.1/24 dev "$PEER" && ip -n "$NS" addr add fd00::1/64 dev "$PEER" nodad
check "veth $HOST <-> $PEER (netns $NS) made as 'ip link add type veth' makes it" test $? = 0 || done_testing
in_ns() { ip netns exec "$NS" "$@"; }
check "the peer's TX checksum offload is on (the default): its TCP/UDP checksums are left partial" \
    eval 'in_ns ethtool -k "$PEER" | grep -q "^tx-checksumming: on"'
# The peer's receive checksum errors: "tcp udp udp6" of its netns.
snmp_field() { awk -v p="$1:" -v f="$2" '$1 == p { if (!n) { for (i = 2; i <= NF; i++) if ($i == f) n = i } else { print $n; exit } }' "$3"; }
peer_csum() {
    in_ns cat /proc/net/snmp >"$dir/snmp" && in_ns cat /proc/net/snmp6 >"$dir/snmp6"
    echo "$(snmp_field Tcp InCsumErrors "$dir/snmp") $(snmp_field Udp InCsumErrors "$dir/snmp") $(awk '$1 == "Udp6InCsumErrors" { print $2 }' "$dir/snmp6")"
}

# xfer_gp GUEST DIR ADDR PORT: DIR "to" = guest -> peer (peer receives at ADDR), "from" = peer -> guest.
xfer_gp() {
    local g=$1 way=$2 addr=$3 port=$4 seed=$RANDOM r st
    if [ "$way" = to ]; then
        in_ns "$TCPCHECK" recv -t 60 "$port" "$N" "$seed" >"$dir/peer-recv.out" 2>&1 &
        RECV_PID=$!
        wait_for "the peer to listen" 10 grep -q listening "$dir/peer-recv.out"
        gcmd "$g" "tcpcheck send -t 60 $addr $port $N $seed" 120; st=$?
        wait "$RECV_PID"; RECV_PID=''
        r=$(grep VXTCP "$dir/peer-recv.out" | tail -n 1)
    else
        gcmd "$g" "tcpcheck recv -t 60 $port $N $seed &" >/dev/null
        in_ns "$TCPCHECK" send -t 60 "$addr" "$port" "$N" "$seed" >"$dir/peer-send.out" 2>&1; st=$?
        wait_for "guest $g's receiver" 30 eval "guest_result $g recv | grep -q 'bytes='"
        r=$(guest_result "$g" recv)
    fi
    local what="$g -> peer ($addr)"; [ "$way" = from ] && what="peer -> $g ($addr)"
    if [ "$st" = 0 ] && grep -q "VXTCP recv ok bytes=$N " <<<"$r"; then
        ok "$what: $N bytes, every one checked ($(sed 's/.*mbit=/Mbit\/s /' <<<"$r"))"
    else
        not_ok "$what: sender status $st, receiver: ${r:-nothing}"; diag "$dir/$g.serial" "$dir/vx-$g-peer.log"
    fi
}

for g in a b; do
    sock=$SOCK_A addr=10.0.0.2 addr6=fd00::2
    [ $g = b ] && sock=$SOCK_B addr=10.0.0.3 addr6=fd00::3
    log=$dir/vx-$g-peer.log
    check "vhost-xdp --iface $HOST on guest $g's socket" start_vx "$log" --socket "$sock" --iface "$HOST" \
        --pmd-sleep 50 || continue
    p0=$(peer_csum) g0=$(guest_csum $g)
    xfer_gp $g to 10.0.0.1 5021
    xfer_gp $g from $addr 5022
    xfer_gp $g to fd00::1 5023
    xfer_gp $g from "$addr6" 5024
    p1=$(peer_csum) g1=$(guest_csum $g)
    check "receive checksum errors unchanged (tcp udp udp6): peer $p0 -> $p1, guest $g $g0 -> $g1" test "$p0/$g0" = "$p1/$g1"
    stop_vx
    tso=$(offload_field "$log" "" "TSO packets") segs=$(offload_field "$log" "" "cut into")
    csum=$(offload_field "$log" "" "checksums completed") partial=$(offload_field "$log" "" "partial checksums from the NIC")
    if [ $g = a ]; then
        check "A -> peer: TSO packets cut for the wire ($tso into $segs segments); peer -> A: $partial partial checksums passed on as NEEDS_CSUM" \
            eval '[ "${tso:-0}" -gt 0 ] && [ "${segs:-0}" -gt "${tso:-0}" ] && [ "${partial:-0}" -gt 0 ]' || diag "$log"
        # Who completed A's TCP checksums towards the wire: the kernel, from AF_XDP's TX metadata
        # (Linux 6.11+, copy mode: every segment left to it), or vhost-xdp where the log says so.
        left=$(offload_field "$log" "" "checksums left to the NIC's kernel")
        if grep -q "queue 0: TX checksums: completed by the kernel (AF_XDP TX metadata, copy mode)" "$log"; then
            check "A -> peer: every segment's checksum left to the kernel (AF_XDP TX metadata): ${left:-?} >= $segs segments" \
                eval '[ "${left:-0}" -ge "${segs:-1}" ]' || diag "$log"
        else
            check "A -> peer: the log says vhost-xdp completes the TX checksums itself, and none was left to the kernel" \
                eval 'grep -q "queue 0: TX checksums: completed in software by vhost-xdp" "$log" && [ "${left:-0}" = 0 ]' ||
                diag "$log"
        fi
    else
        check "peer -> B: $partial partial checksums, completed in software ($csum checksums completed)" \
            eval '[ "${partial:-0}" -gt 0 ] && [ "${csum:-0}" -ge "${partial:-0}" ] && [ "${tso:-0}" = 0 ]' || diag "$log"
    fi
    check "the partial checksums were explained once in the log" \
        test "$(grep -c 'left for the hardware' "$log")" = 1 || diag "$log"
done
done_testing
