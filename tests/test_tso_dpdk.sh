#!/usr/bin/env bash
# tests/test_tso_dpdk.sh - DPDK's virtio_user with TSO against vhost-xdp: testpmd's csum engine with
# `tso set`, a real TCP transfer through it, every byte checked (issue 13).
#
#   peer A (netns, veth) -- vhost-xdp A --iface -- testpmd port 0 (virtio_user)
#                                                  csum forwarding, TSO 500
#   peer B (netns, veth) -- vhost-xdp B --iface -- testpmd port 1 (virtio_user)
#
# testpmd bridges its two virtio_user ports (csum engine: port 0 <-> port 1), each on the socket of a
# vhost-xdp whose AF_XDP port is a veth made by `ip link add type veth` (TX checksum offload on: the
# peers' checksums arrive partial).  With `tso set 500` the csum engine marks every TCP packet it
# forwards for TSO at 500 bytes, and the virtio PMD puts gso_type TCPV4, gso_size 500 and NEEDS_CSUM in
# the virtio-net header: vhost-xdp must cut each of the peer's 1448-byte segments into three frames
# (500, 500, 448 bytes of payload) with right IP and TCP fields and checksums.  (The csum engine also
# rewrites the Ethernet addresses: --eth-peer gives it the peers' MACs.)  Checks:
#   - the virtio_user ports negotiated CSUM and HOST_TSO4 (vhost-xdp --trace, SET_FEATURES);
#   - TCP A -> B and B -> A, N bytes each, every byte checked (tests/tcpcheck.c);
#   - the peers' receive checksum errors (InCsumErrors) do not move;
#   - vhost-xdp counted TSO packets and cut them into more segments;
#   - the frames it sent to the wire (its --pcap, read by tcpdump, which verifies checksums itself):
#     no TCP payload above 500 bytes; no checksum tcpdump calls incorrect, unless vhost-xdp left the TCP
#     checksums to the kernel (AF_XDP TX metadata, its log says so): then the capture holds them as the
#     kernel got them, partial, and every segment must be counted as left to the kernel;
#   - what really reached peer B (tcpdump on B's end of the veth): B's host end has its TX checksum
#     offload turned off (ethtool -K HOST tx off), so the kernel completes every checksum vhost-xdp left
#     to it before the veth, at the csum_start/csum_offset vhost-xdp gave it: each one must be correct
#     (and B's stack verifies them too: its InCsumErrors above).
# Needs root, iproute2, dpdk-testpmd, tcpdump and ethtool; a missing one skips (fails under CI=true).  About 20 s.
set -u
. "$(dirname "$0")/lib.sh"

if [ "$(id -u)" != 0 ]; then missing "DPDK TSO test needs root (netns, veth, XDP)"; fi
require "DPDK TSO test" ip dpdk-testpmd tcpdump ethtool
[ -x "$VX" ] || { not_ok "vhost-xdp is built ($VX)"; done_testing; }
TCPCHECK=$TESTS_DIR/tcpcheck
[ -x "$TCPCHECK" ] || { not_ok "tests/tcpcheck is built (make)"; done_testing; }
N=${TCP_BYTES:-4000000}
MSS=500

ID=$$
dir=$(mktemp -d "${TMPDIR:-/tmp}/vx-tso-$ID.XXXXXX")
PREFIX=vx-tso-$ID
VXA='' VXB='' TP='' RECV='' WIRE=''
cleanup() {
    exec 7>&- 2>/dev/null
    stop_pid "$WIRE"; stop_pid "$RECV"; stop_pid "$TP"; stop_pid "$VXA"; stop_pid "$VXB"
    for x in a b; do ip link del "vxt${x}h$ID" 2>/dev/null; ip netns del "vx-tso-$x-$ID" 2>/dev/null; done
    rm -rf "$dir" "$DPDK_RUNDIR/$PREFIX"
}
on_exit cleanup

diag() {
    local f
    for f; do
        [ -s "$f" ] || continue
        echo "# ---- ${f##*/}"
        grep -av 'checksum offload is\|: stats: ' "$f" | tail -n 15 | sed 's/^/#   /'
    done
}

# Two veth pairs, the peers in netns of their own, with MACs we choose (testpmd's --eth-peer).
MAC_A=02:00:00:00:09:01 MAC_B=02:00:00:00:09:02
for x in a b; do
    ns=vx-tso-$x-$ID host=vxt${x}h$ID peer=vxt${x}p$ID n=1 mac=$MAC_A
    [ $x = b ] && n=2 mac=$MAC_B
    ip netns add "$ns" &&
    ip link add "$host" numrxqueues 1 numtxqueues 1 type veth peer name "$peer" numrxqueues 1 numtxqueues 1 &&
    ip link set "$peer" netns "$ns" && ip link set "$host" up &&
    ip -n "$ns" link set "$peer" address "$mac" && ip -n "$ns" link set "$peer" up &&
    ip -n "$ns" addr add "10.0.9.$n/24" dev "$peer" || { not_ok "veth pair $x"; done_testing; }
done
in_a() { ip netns exec "vx-tso-a-$ID" "$@"; }
in_b() { ip netns exec "vx-tso-b-$ID" "$@"; }
# B's host end checksums nothing itself: a checksum left partial is completed by the kernel before
# the veth, so what reaches peer B is what a wire would carry.
ethtool -K "vxtbh$ID" tx off >/dev/null 2>&1 || { not_ok "ethtool -K vxtbh$ID tx off"; done_testing; }

# vhost-xdp on each host end; --pmd-sleep: three polling threads (two vhost-xdp, testpmd) share 2 CPUs.
for x in a b; do
    "$VX" --socket "$dir/$x.sock" --iface "vxt${x}h$ID" --pmd-sleep 20 --trace --pcap "$dir/$x.pcap" \
        </dev/null >"$dir/vx-$x.log" 2>&1 &
    eval "VX${x^^}=\$!"
    wait_for "vhost-xdp $x" 10 grep -q "listening on" "$dir/vx-$x.log" || { not_ok "vhost-xdp $x starts"; diag "$dir/vx-$x.log"; done_testing; }
done
ok "two vhost-xdp on two veths (peers $MAC_A, $MAC_B)"

# testpmd: both ports with TX checksum and TSO offloads (--tx-offloads: IPV4 0x2 is not offered by
# virtio, so TCP_CKSUM 0x8 | UDP_CKSUM 0x4 | TCP_TSO 0x20), then the csum engine set up on stopped ports.
mkfifo "$dir/tp.in"
exec 7<>"$dir/tp.in"
dpdk-testpmd --lcores "0@0,1@$(($(nproc) > 1 ? 1 : 0))" --no-huge -m 256 --no-pci --file-prefix="$PREFIX" \
    --vdev "net_virtio_user0,path=$dir/a.sock,queues=1" --vdev "net_virtio_user1,path=$dir/b.sock,queues=1" \
    -- -i --nb-cores=1 --total-num-mbufs=16384 --tx-offloads=0x2c --eth-peer="0,$MAC_A" --eth-peer="1,$MAC_B" \
    <&7 >"$dir/testpmd.log" 2>&1 &
TP=$!
both() { [ "$(grep -ac 'frontend connected' "$dir/vx-a.log" "$dir/vx-b.log" | awk -F: '{ s += $2 } END { print s }')" -ge 2 ]; }
wait_for "testpmd to connect both ports" 30 both || { not_ok "testpmd connects"; diag "$dir/testpmd.log"; done_testing; }
sleep 2
{
    echo "port stop all"
    for p in 0 1; do echo "csum set ip sw $p"; echo "csum set tcp hw $p"; echo "csum set udp hw $p"; echo "tso set $MSS $p"; done
    echo "port start all"; echo "set fwd csum"; echo "start"
} >&7
# testpmd's output is block-buffered into its log: no line to wait for.  The first transfer's sender
# retries its connect until forwarding has started (tcpcheck -t).
for x in a b; do
    check "virtio_user $x negotiated CSUM and HOST_TSO4 (SET_FEATURES)" \
        eval "grep -a '<- SET_FEATURES' '$dir/vx-$x.log' | tail -n 1 | grep -q 'CSUM|.*HOST_TSO4'" || diag "$dir/vx-$x.log"
done

snmp_field() { awk -v p="$1:" -v f="$2" '$1 == p { if (!n) { for (i = 2; i <= NF; i++) if ($i == f) n = i } else { print $n; exit } }'; }
csum_errors() { "$@" cat /proc/net/snmp | snmp_field Tcp InCsumErrors; }
ea0=$(csum_errors in_a) eb0=$(csum_errors in_b)

# xfer FROM TO ADDR PORT
xfer() {
    local seed=$RANDOM r st
    "in_$2" "$TCPCHECK" recv -t 60 "$4" "$N" "$seed" >"$dir/recv.out" 2>&1 &
    RECV=$!
    wait_for "the receiver to listen" 10 grep -q listening "$dir/recv.out"
    "in_$1" "$TCPCHECK" send -t 60 "$3" "$4" "$N" "$seed" >"$dir/send.out" 2>&1; st=$?
    wait "$RECV"; RECV=''
    r=$(grep 'VXTCP recv' "$dir/recv.out")
    if [ "$st" = 0 ] && grep -q "VXTCP recv ok bytes=$N " <<<"$r"; then
        ok "peer $1 -> peer $2 through testpmd (csum, TSO $MSS): $N bytes, every one checked ($(sed 's/.*mbit=/Mbit\/s /' <<<"$r"))"
    else
        not_ok "peer $1 -> peer $2: sender status $st ($(cat "$dir/send.out")), receiver: ${r:-nothing}"
        diag "$dir/vx-a.log" "$dir/vx-b.log" "$dir/testpmd.log"
    fi
}
in_b tcpdump -i "vxtbp$ID" -nn -U -w "$dir/b-wire.pcap" tcp >"$dir/b-wire.log" 2>&1 &
WIRE=$!
wait_for "tcpdump on peer B" 10 grep -q "listening on" "$dir/b-wire.log"
xfer a b 10.0.9.2 7001
xfer b a 10.0.9.1 7002
sleep 0.5; stop_pid "$WIRE"; WIRE=''
ea1=$(csum_errors in_a) eb1=$(csum_errors in_b)
check "the peers' TCP receive checksum errors unchanged (A $ea0 -> $ea1, B $eb0 -> $eb1)" test "$ea0/$eb0" = "$ea1/$eb1"

printf 'stop\nquit\n' >&7
wait_for "testpmd to exit" 20 eval '! kill -0 "$TP" 2>/dev/null'
stop_pid "$TP"; TP=''
for x in a b; do
    pid=VX${x^^}
    kill -TERM "${!pid}"; wait "${!pid}"; eval "$pid=''"
    line=$(grep -a "exit: offloads:" "$dir/vx-$x.log")
    tso=$(sed -n 's/.*TSO packets \([0-9]*\).*/\1/p' <<<"$line") segs=$(sed -n 's/.*cut into \([0-9]*\).*/\1/p' <<<"$line")
    check "vhost-xdp $x cut the TSO packets for the wire: $tso TSO packets into $segs segments" \
        eval '[ "${tso:-0}" -gt 0 ] && [ "${segs:-0}" -gt "${tso:-0}" ]' || diag "$dir/vx-$x.log"
    # What went out on the wire ("Out" in the capture: from testpmd towards the peer), as tcpdump sees
    # it: each packet's first line says Out or In (-e), its TCP line the payload length and whether
    # the checksum is correct.
    tcpdump -r "$dir/$x.pcap" -nn -e -v 2>/dev/null | tr -d '\r' | awk '
        /^[0-9]/ { out = / Out / }
        out && /Flags/ { n = split($0, w, " "); print w[n], (/incorrect/ ? "incorrect" : "ok") }' >"$dir/$x.txt"
    big=$(sort -n "$dir/$x.txt" | tail -n 1 | cut -d' ' -f1)
    bad=$(grep -c incorrect "$dir/$x.txt")
    data=$(grep -c "^$MSS " "$dir/$x.txt")
    left=$(sed -n "s/.*checksums left to the NIC's kernel \([0-9]*\).*/\1/p" <<<"$line")
    if grep -q "TX checksums: completed by the kernel" "$dir/vx-$x.log"; then
        check "vhost-xdp $x's capture: $data TCP segments of exactly $MSS bytes, none larger (largest ${big:-?}); every segment's checksum left to the kernel (${left:-?} >= $segs)" \
            eval '[ "$data" -gt 0 ] && [ "${big:-99999}" -le "$MSS" ] && [ "${left:-0}" -ge "${segs:-1}" ]'
    else
        check "vhost-xdp $x's capture: $data TCP segments of exactly $MSS bytes, none larger (largest ${big:-?}), $bad checksums tcpdump calls incorrect" \
            eval '[ "$data" -gt 0 ] && [ "${big:-99999}" -le "$MSS" ] && [ "$bad" = 0 ]'
    fi
done
# Peer B's end of the veth: the frames from A (payload > 0), every TCP checksum as the wire has it.
tcpdump -r "$dir/b-wire.pcap" -nn -v 'src host 10.0.9.1' 2>/dev/null | tr -d '\r' |
    awk '/Flags/ && / length [1-9]/ { print (/incorrect/ ? "incorrect" : (/correct/ ? "correct" : "unchecked")) }' >"$dir/b-wire.txt"
good=$(grep -c '^correct' "$dir/b-wire.txt") bad=$(grep -c incorrect "$dir/b-wire.txt")
check "at peer B, after the kernel completed them: $good of A's data segments with a correct TCP checksum, $bad incorrect" \
    eval '[ "$good" -gt 0 ] && [ "$bad" = 0 ] && [ "$good" = "$(wc -l <"$dir/b-wire.txt")" ]'
done_testing
