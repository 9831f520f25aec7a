#!/usr/bin/env bash
# tests/test_afxdp_mq.sh - multiqueue on the AF_XDP side: --queue Q-R, one socket per NIC queue,
# queue pair k <-> NIC queue Q+k (issue 6, "Multiqueue").
#
# Topology, made fresh with names unique to this run and removed on every exit path:
#
#     testpmd virtio_user queues=2 (2 RX + 2 TX queues)
#         | vhost-user socket
#     vhost-xdp --iface vxmh$$ --queue 0-1     root netns               netns vx-mq-ns-$$
#         two AF_XDP sockets, queues 0 and 1 --- vxmh$$ (2 queues) <---> vxmp$$ (2 queues, the peer)
#
# Shows:
#  1. Usage: --queues and a range of another length, a range of more than 8 queues, an empty --queue,
#     --queue range without --iface: exit status 2 with one line; a range past the interface's queues:
#     exit 1 naming the queue and the interface's count.
#  2. testpmd txonly on both TX queues -> vhost-xdp: queue pair 0 goes out of NIC queue 0 and pair 1 out
#     of NIC queue 1 (vhost-xdp's per-pair and per-NIC-queue exit lines: each non-zero and equal pair by
#     pair); the peer received them all (testpmd TX-packets = peer rx_packets + veth tx_dropped).
#  3. The peer sends frames from CPU 0 and from CPU 1: a veth puts each frame on the RX queue of the
#     sender's TX queue, so both NIC queues receive; each NIC queue's frames reach the guest on its own
#     queue pair (nic queue k rx = pair k "to guest" + pair k drops), and testpmd's per-queue counters
#     (rx_q0_good_packets, rx_q1_good_packets) are both non-zero.
#  4. SIGINT: exit 0, no XDP program left on the interface.
#
# Needs root, iproute2, taskset, dpdk-testpmd (a missing one is a skip, a failure under CI=true).
set -u
. "$(dirname "$0")/lib.sh"


if [ "$(id -u)" != 0 ]; then missing "multiqueue AF_XDP test needs root (netns, veth, XDP)"; fi
require "multiqueue AF_XDP test" ip taskset dpdk-testpmd
if [ ! -x "$VX" ]; then not_ok "vhost-xdp is built ($VX): run make"; done_testing; fi
need_afxdp_tool

ID=$$
NS=vx-mq-ns-$ID
HOST=vxmh$ID
PEER=vxmp$ID
TMP=$(mktemp -d "${TMPDIR:-/tmp}/vx-mq.XXXXXX")
SOCK=$TMP/vx.sock
FILE_PREFIX=vx-mq-$ID
FE_CPU=$(($(nproc) > 1 ? 1 : 0))
VX_PID='' TP_PID=''
cleanup() {
    exec 9>&- 2>/dev/null
    stop_pid "$TP_PID"
    stop_pid "$VX_PID"
    ip link del "$HOST" 2>/dev/null
    ip netns del "$NS" 2>/dev/null
    rm -rf "$TMP" "$DPDK_RUNDIR/$FILE_PREFIX"
}
on_exit cleanup

in_ns() { ip netns exec "$NS" "$@"; }
xdp_attached() { ip link show dev "$HOST" | grep -qE 'prog/xdp| xdp(generic|drv|offload)? '; }
no_xdp() { ! xdp_attached; }
gone() { ! kill -0 "$1" 2>/dev/null; }
listening() { awk -v p="$1" '$NF == p && $4 == "00010000" { f = 1 } END { exit !f }' /proc/net/unix; }
host_stat() { cat "/sys/class/net/$HOST/statistics/$1"; }
peer_stat() { in_ns cat "/sys/class/net/$PEER/statistics/$1"; }
diag() { local f; for f; do [ -s "$f" ] && { echo "# ---- tail of ${f##*/}"; tail -n 25 "$f" | sed 's/^/#   /'; }; done; }

# ---- the veth pair, two queues each way on both ends
ip netns add "$NS" &&
    ip link add "$HOST" numtxqueues 2 numrxqueues 2 type veth peer name "$PEER" numtxqueues 2 numrxqueues 2 \
        netns "$NS" &&
    ip link set dev "$HOST" addrgenmode none && ip -n "$NS" link set dev "$PEER" addrgenmode none &&
    ip link set dev "$HOST" up && ip -n "$NS" link set dev "$PEER" up
check "veth pair $HOST <-> $NS/$PEER, two queues each, up" test $? = 0 || done_testing

# ---- 1. usage
# usage_case STATUS "expected text" args...: vhost-xdp exits with STATUS and says the text, nothing attached.
usage_case() {
    local want=$1 text=$2 out rc; shift 2
    out=$("$VX" --socket "$TMP/u.sock" "$@" 2>&1 </dev/null); rc=$?
    check "vhost-xdp $* -> exit $want, \"$text\" (got $rc: $(echo "$out" | grep -m1 -F -- "$text" || echo "$out" | tail -n 1))" \
        eval '[ "$rc" = "$want" ] && grep -qF -- "$text" <<<"$out" && no_xdp'
}
usage_case 2 "--queues 3 and --queue 0-1: one NIC queue per queue pair" --iface "$HOST" --queues 3 --queue 0-1
usage_case 2 "--queues 2 and --queue 0-2: one NIC queue per queue pair" --iface "$HOST" --queue 0-2 --queues 2
usage_case 2 "--queue 0-8: want a queue id Q or a range Q-R of at most 8 queues" --iface "$HOST" --queue 0-8
usage_case 2 "--queue : want a queue id Q" --iface "$HOST" --queue ''
usage_case 2 "--queue 1-0: want a queue id Q" --iface "$HOST" --queue 1-0
usage_case 2 "--queue is for --iface" --loopback --queue 0-1
usage_case 1 "$HOST: queue 2 out of range: the interface has 2 RX queues" --iface "$HOST" --queue 1-2

# ---- vhost-xdp on both NIC queues, testpmd with two queue pairs
VXLOG=$TMP/vx.log TPLOG=$TMP/testpmd.log
"$VX" --socket "$SOCK" --iface "$HOST" --queue 0-1 --pmd-cores 0 </dev/null 2>"$VXLOG" &
VX_PID=$!
check "vhost-xdp --iface $HOST --queue 0-1 listens" wait_for "vhost-xdp to listen" 10 listening "$SOCK" ||
    { diag "$VXLOG"; done_testing; }
check "one XDP program, sockets on queues 0 and 1 ($(grep -o 'AF_XDP on [^,]*' "$VXLOG"))" \
    eval 'xdp_attached && grep -q "queue 0: AF_XDP port ready" "$VXLOG" && grep -q "queue 1: AF_XDP port ready" "$VXLOG"'

rm -f "$TMP/tp.in"; mkfifo "$TMP/tp.in"
exec 9<>"$TMP/tp.in"
stdbuf -oL dpdk-testpmd --lcores "0@$FE_CPU,1@$FE_CPU" --no-huge -m 256 --no-pci --file-prefix="$FILE_PREFIX" \
    --vdev "net_virtio_user0,path=$SOCK,queues=2" \
    -- -i --nb-cores=1 --rxq=2 --txq=2 --total-num-mbufs=16384 --forward-mode=txonly <&9 >"$TPLOG" 2>&1 &
TP_PID=$!
tp() { printf '%s\n' "$@" >&9; }
# tp_mark WHAT: "show port xstats 0" and wait until its block is in the log (every command before it ran).
tp_mark() {
    local want=$(( $(grep -c 'rx_q0_good_packets' "$TPLOG") + 1 ))
    tp "show port xstats 0"
    wait_for "testpmd's xstats ($1)" 15 sh -c "[ \$(grep -c 'rx_q0_good_packets' '$TPLOG') -ge $want ]"
}
# xstat NAME: the last value testpmd printed for that xstat.
xstat() { awk -v k="$1:" '$1 == k { v = $2 } END { print v + 0 }' "$TPLOG"; }
check "testpmd virtio_user queues=2 comes up on vhost-xdp's socket" tp_mark txonly ||
    { diag "$TPLOG" "$VXLOG"; done_testing; }

# ---- 2. txonly on both queues
p0=$(peer_stat rx_packets) d0=$(host_stat tx_dropped)
tp start; sleep 2; tp stop
tp_mark txonly-done
sleep 1      # vhost-xdp drains what testpmd put on the rings before "stop"
TX0=$(xstat tx_q0_good_packets) TX1=$(xstat tx_q1_good_packets)
drx=$(($(peer_stat rx_packets) - p0)) ddrop=$(($(host_stat tx_dropped) - d0))
echo "# txonly 2 s: testpmd tx_q0_packets $TX0, tx_q1_packets $TX1; peer rx_packets $drx, veth tx_dropped $ddrop"
check "testpmd sent on both TX queues ($TX0, $TX1)" eval '[ "$TX0" -gt 100 ] && [ "$TX1" -gt 100 ]'
check "the peer got them all: $((TX0 + TX1)) = peer rx_packets $drx + veth tx_dropped $ddrop" \
    test $((TX0 + TX1)) = $((drx + ddrop))

# ---- 3. the peer sends from each CPU; the veth keeps the sender's queue
# A veth hands a frame to the peer's RX queue of the same number as the TX queue it was sent on.  The
# peer's TX queue is the kernel's choice (netdev_pick_tx): XPS when configured, else a hash that is
# random per socket.  XPS maps CPU 0 -> TX queue 0 and CPU 1 -> TX queue 1, so raw-send pinned to a CPU
# picks the queue, hence the NIC queue on our side.
check "peer: XPS CPU 0 -> tx-0, CPU 1 -> tx-1" in_ns sh -c \
    "echo 1 >/sys/class/net/$PEER/queues/tx-0/xps_cpus && echo 2 >/sys/class/net/$PEER/queues/tx-1/xps_cpus"
tp "set fwd rxonly" start
tp_mark rxonly
n=1000
for cpu in 0 $FE_CPU; do
    in_ns taskset -c "$cpu" "$TOOL" raw-send "$PEER" "$n" >/dev/null 2>>"$TMP/raw-send.err"
done
sleep 1
tp stop
tp_mark rxonly-done
RX0=$(xstat rx_q0_good_packets) RX1=$(xstat rx_q1_good_packets)
tp quit
wait_for "testpmd to quit" 10 gone "$TP_PID" || stop_pid "$TP_PID"
TP_PID=''
exec 9>&-

# ---- 4. SIGINT, then the exit lines
kill -INT "$VX_PID"
wait_for "vhost-xdp to exit" 10 gone "$VX_PID"
wait "$VX_PID"; rc=$?; VX_PID=''
check "SIGINT: vhost-xdp exits 0 (got $rc)" test "$rc" = 0
check "SIGINT: no XDP program left on $HOST" no_xdp
exit_line() { sed -n "s/.*exit: $1.*/&/p" "$VXLOG" | tail -n 1; }
num() { sed -n "s/.*$1 \([0-9]*\) $2.*/\1/p" <<<"$3"; }
for k in 0 1; do
    pl=$(exit_line "queue pair $k:") nl=$(exit_line "nic queue $k:")
    eval "FROM$k=\$(num 'from guest' packets \"\$pl\") TO$k=\$(num 'to guest' packets \"\$pl\")"
    eval "DROP$k=\$(sed -n 's/.*packets, \([0-9]*\) drops.*/\1/p' <<<\"\$pl\")"
    eval "NRX$k=\$(num ': rx' packets \"\$nl\") NTX$k=\$(num ', tx' packets \"\$nl\")"
    echo "# $pl"; echo "# $nl"
done
grep 'the kernel dropped' "$VXLOG" | sed 's/^/# /' 
echo "# testpmd rx_q0_good_packets $RX0, rx_q1_good_packets $RX1 (of 2 x $n sent by the peer)"
for k in 0 1; do
    eval "fg=\$FROM$k tg=\$TO$k dr=\$DROP$k nr=\$NRX$k nt=\$NTX$k tx=\$TX$k rx=\$RX$k"
    check "queue pair $k: from guest $fg = testpmd tx_q${k}_good_packets $tx = nic queue $k tx $nt" \
        eval 'isnum "$fg" && [ "$fg" -gt 0 ] && [ "$fg" = "$tx" ] && [ "$fg" = "$nt" ]'
    check "nic queue $k received ($nr) and its frames went to queue pair $k: to guest $tg + drops $dr" \
        eval 'isnum "$nr" && [ "$nr" -gt 0 ] && [ "$nr" = $((tg + dr)) ]'
    check "testpmd rx_q${k}_good_packets $rx = queue pair $k to guest $tg (> 0)" \
        eval '[ "$rx" -gt 0 ] && [ "$rx" = "$tg" ]'
done
[ "$TAP_FAILED" -gt 0 ] && diag "$VXLOG" "$TPLOG" "$TMP/raw-send.err"
done_testing
