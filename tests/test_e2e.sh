#!/usr/bin/env bash
# tests/test_e2e.sh - the whole data path: a frontend's virtio rings <-> vhost-xdp <-> AF_XDP <-> veth <-> peer.
#
# Topology, made fresh with names unique to this run and removed on every exit path:
#
#     frontend (testpmd virtio_user, or a QEMU guest)
#         | vhost-user socket
#     vhost-xdp --iface vxeh$$            root netns                netns vx-e2e-ns-$$
#         AF_XDP port, queue 0  ---- vxeh$$ (XDP program) <---> vxep$$ (the peer: AF_PACKET tool,
#                                                                 later 10.0.0.1/24 for the guest)
#
# Both veth ends have one RX and one TX queue (a multi-queue veth puts each packet on the queue of the
# sender's CPU; vhost-xdp listens on queue 0 only) and no IPv6 address generation, so the kernel sends
# no chatter of its own and the peer's counters count only the test's packets.
#
# Shows (issue 3, items 2-4):
#  1. DPDK testpmd (virtio_user) in txonly mode, 64 B and then 1464 B (64+1400, chained descriptors)
#     packets for a fixed time -> vhost-xdp -> veth: per run, testpmd TX-packets = the peer's rx_packets
#     + what the veth dropped (the host end's tx_dropped).  testpmd offers far more than the veth takes;
#     vhost-xdp takes a packet off the virtio ring only when it has a UMEM frame for it, so the ring
#     fills up and testpmd drops the excess itself (its forward stats' TX-dropped, printed): back-pressure,
#     not loss after the ring.
#     Then the peer sends N frames of 60..1514 B (tests/afxdp_tool raw-send) -> vhost-xdp -> testpmd in
#     rxonly mode: N = testpmd RX-packets + vhost-xdp drops + the AF_XDP socket's kernel drops (which the
#     veth counts too, as rx_dropped); and the bytes match when nothing was dropped.
#  2. A QEMU guest (TCG, vxtest=ping) pings 10.0.0.1 in the peer netns through vhost-xdp and the veth and
#     gets replies; vhost-xdp's NIC counters show both directions went through AF_XDP.
#  3. After SIGKILL of vhost-xdp the kernel detaches the XDP program (BPF link); vhost-xdp restarted on the
#     same interface and socket path (the socket file may be left behind) and the guest (QEMU reconnect=1)
#     gets replies again.
#  4. After SIGINT vhost-xdp exits 0 and `ip link show` of the interface shows no XDP program.
#  5. The same guest ping with mrg_rxbuf=off on the device.
#
# Needs root, iproute2, dpdk-testpmd (part 1) and qemu-system-x86_64 + the guest of tests/build_guest.sh
# (parts 2-5).  A missing one skips its part, or fails it under CI=true.  Takes 25-35 s (one testpmd,
# two guests).
# VX_E2E_KEEP=DIR copies the logs (vhost-xdp, testpmd, guest consoles) there at the end.
# Part 1 pins testpmd's two lcores on CPU 1 and vhost-xdp's poll thread on CPU 0 (both busy-poll); with a
# guest, vhost-xdp is not pinned and QEMU (TCG) takes whichever CPU is left.
set -u
. "$(dirname "$0")/lib.sh"


if [ "$(id -u)" != 0 ]; then missing "end-to-end test needs root (netns, veth, XDP)"; fi
require "end-to-end test (netns + veth)" ip
if [ ! -x "$VX" ]; then not_ok "vhost-xdp is built ($VX): run make"; done_testing; fi

need_afxdp_tool

ID=$$
NS=vx-e2e-ns-$ID
HOST=vxeh$ID
PEER=vxep$ID
TMP=$(mktemp -d "${TMPDIR:-/tmp}/vx-e2e.XXXXXX")
SOCK=$TMP/vx.sock
GUEST=${VX_GUEST_DIR:-$TESTS_DIR/guest}
FILE_PREFIX=vx-e2e-$ID
FE_CPU=$(($(nproc) > 1 ? 1 : 0))     # testpmd's lcores here, vhost-xdp's poll thread on CPU 0
VX_PID='' TP_PID='' QEMU_PID=''
cleanup() {
    exec 9>&- 2>/dev/null
    stop_pid "$TP_PID"
    stop_pid "$QEMU_PID"
    stop_pid "$VX_PID"
    ip link del "$HOST" 2>/dev/null
    ip netns del "$NS" 2>/dev/null
    [ -n "${VX_E2E_KEEP:-}" ] && mkdir -p "$VX_E2E_KEEP" && cp "$TMP"/*.log "$TMP"/*.serial "$VX_E2E_KEEP"/ 2>/dev/null
    rm -rf "$TMP" "$DPDK_RUNDIR/$FILE_PREFIX"
}
on_exit cleanup

# diag FILE...: the tail of each log as TAP comments (a guest console: its VX lines, then its tail; a
# vhost-xdp log: its lines other than --stats, then its last stats).
diag() {
    local f
    for f; do
        [ -s "$f" ] || continue
        case $f in
        *.serial) echo "# ---- ${f##*/}: guest lines"
                  tr -d '\r' <"$f" | grep -a 'VX' | grep -av 'VXSTAT\|VXPING' | sed 's/^/#   /'
                  echo "# ---- tail of ${f##*/}"
                  tail -n 6 "$f" | tr -d '\r' | sed 's/^/#   /' ;;
        */vx-*)   echo "# ---- ${f##*/}: the last lines other than stats, then the last stats"
                  grep -v ': stats: ' "$f" | tail -n 15 | sed 's/^/#   /'
                  grep ': stats: ' "$f" | tail -n 4 | sed 's/^/#   /' ;;
        *)        echo "# ---- tail of ${f##*/}"
                  tail -n 20 "$f" | tr -d '\r\033' | sed 's/^/#   /' ;;
        esac
    done
}

in_ns() { ip netns exec "$NS" "$@"; }
# `ip link show` marks an XDP program with " xdp", " xdpgeneric"... after the MTU and a "prog/xdp" line
# (the netns name in "link-netns vx-e2e-ns-N" matches neither).
xdp_attached() { ip link show dev "$HOST" | grep -qE 'prog/xdp| xdp(generic|drv|offload)? '; }
no_xdp() { ! xdp_attached; }
gone() { ! kill -0 "$1" 2>/dev/null; }
# The socket is listening: /proc/net/unix flags 00010000 (__SO_ACCEPTCON) on that path.
listening() { awk -v p="$1" '$NF == p && $4 == "00010000" { f = 1 } END { exit !f }' /proc/net/unix; }
host_stat() { cat "/sys/class/net/$HOST/statistics/$1"; }
peer_stat() { in_ns cat "/sys/class/net/$PEER/statistics/$1"; }

# start_vx LOG [vhost-xdp options]: vhost-xdp on $HOST and $SOCK, until it listens; pid in VX_PID.
start_vx() {
    local log=$1; shift
    "$VX" --socket "$SOCK" --iface "$HOST" --stats 1 "$@" </dev/null 2>>"$log" >&2 &
    VX_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        listening "$SOCK" && return 0
        gone "$VX_PID" && { echo "# vhost-xdp exited at start"; wait "$VX_PID"; VX_PID=''; return 1; }
        sleep 0.1
    done
    echo "# timed out after 10 s waiting for vhost-xdp to listen on its socket"
    return 1
}

# stop_vx SIGNAL: send it, wait up to 5 s; the exit status in VX_RC ("timeout" if it did not exit).
stop_vx() {
    kill -"$1" "$VX_PID" 2>/dev/null
    if wait_for "vhost-xdp to exit after SIG$1" 5 gone "$VX_PID"; then
        wait "$VX_PID" 2>/dev/null; VX_RC=$?
    else
        VX_RC=timeout; stop_pid "$VX_PID"
    fi
    VX_PID=''
}

# vx_exit LOG: the exit lines of vhost-xdp in EX_NIC_RX EX_NIC_TX EX_FROM EX_TO EX_DROPS EX_BROKEN, and the
# AF_XDP socket's own drop counters (logged only when non-zero) in EX_KDROP (rx + rx ring full).
vx_exit() {
    local l
    read -r EX_NIC_RX EX_NIC_TX < <(sed -n 's/.*exit: nic rx \([0-9]*\) packets, nic tx \([0-9]*\) packets.*/\1 \2/p' "$1" | tail -n 1)
    l=$(sed -n 's/.*exit: from guest \([0-9]*\) packets, to guest \([0-9]*\) packets, \([0-9]*\) drops, \([0-9]*\) broken.*/\1 \2 \3 \4/p' "$1" | tail -n 1)
    read -r EX_FROM EX_TO EX_DROPS EX_BROKEN <<<"$l"
    l=$(sed -n 's/.*the kernel dropped: rx \([0-9]*\), rx ring full \([0-9]*\),.*/\1 \2/p' "$1" | tail -n 1)
    local a=0 b=0
    [ -n "$l" ] && read -r a b <<<"$l"
    EX_KDROP=$((a + b))
}

# ---- the veth pair
ip netns add "$NS" &&
    ip link add "$HOST" numtxqueues 1 numrxqueues 1 type veth peer name "$PEER" numtxqueues 1 numrxqueues 1 \
        netns "$NS" &&
    ip link set dev "$HOST" addrgenmode none && ip -n "$NS" link set dev "$PEER" addrgenmode none &&
    ip link set dev "$HOST" up && ip -n "$NS" link set dev "$PEER" up && ip -n "$NS" link set dev lo up
setup_rc=$?
check "veth pair $HOST <-> $NS/$PEER, one queue each, up, no IPv6 addresses" test "$setup_rc" = 0 || done_testing

# ============================================================================================
# Part 1: DPDK testpmd (virtio_user) <-> vhost-xdp <-> veth <-> peer, counted
# ============================================================================================
TPLOG=$TMP/testpmd.log
# tp CMD...: commands to testpmd's stdin (the fifo on fd 9); they run in order once it reaches its prompt.
tp() { printf '%s\n' "$@" >&9; }
# tp_sample: "show port stats all" and wait until its block is out (testpmd runs under stdbuf -oL, so the
# log is line-buffered): every command sent before has then finished.  The block's numbers go in
# TP_RXP TP_RXB TP_TXP TP_TXB TP_ERR (RX-missed/RX-errors/RX-nombuf/TX-errors).
TP_SAMPLES=0
tp_sample() {
    TP_SAMPLES=$((TP_SAMPLES + 1))
    tp "show port stats all"
    local want=$TP_SAMPLES
    wait_for "testpmd's port statistics #$want" "${1:-10}" \
        sh -c "[ \$(grep -c 'NIC statistics for port' '$TPLOG') -ge $want ] &&
               [ \$(grep -c '^ *Tx-pps:' '$TPLOG') -ge $want ]" || return 1
    local v
    v=$(awk -v k="$want" '
        /NIC statistics for port/ { n++; blk = (n == k); next }
        /^ *#+ *$/ { blk = 0 }
        blk { for (i = 1; i < NF; i++) if ($i ~ /:$/) v[$i] = $(i + 1) }
        END { print v["RX-packets:"], v["RX-bytes:"], v["TX-packets:"], v["TX-bytes:"],
                    v["RX-missed:"] "/" v["RX-errors:"] "/" v["RX-nombuf:"] "/" v["TX-errors:"] }' "$TPLOG")
    read -r TP_RXP TP_RXB TP_TXP TP_TXB TP_ERR <<<"$v"
    isnum "$TP_RXP" && isnum "$TP_TXP"
}
# fwd_txdropped K: TX-dropped of testpmd's K-th "Forward statistics" block (printed at each "stop"): what the
# forwarding engine could not put on the TX ring because it was full.
fwd_txdropped() {
    awk -v k="$1" '/Forward statistics for port/ { n++; next }
        n == k && /TX-dropped:/ { for (i = 1; i < NF; i++) if ($i == "TX-dropped:") print $(i + 1); exit }' "$TPLOG"
}
# settle: until the peer's rx_packets + the host end's tx_dropped stop moving for two samples in a row
# (vhost-xdp drains the ring testpmd filled before "stop"), at most 5 s.
settle() {
    local a b='' i same=0
    for ((i = 0; i < 25; i++)); do
        a="$(peer_stat rx_packets) $(host_stat tx_dropped)"
        if [ "$a" = "$b" ]; then same=$((same + 1)); [ "$same" -ge 2 ] && return 0; else same=0; fi
        b=$a; sleep 0.2
    done
    return 1
}

dpdk_part() {
    local vxlog=$TMP/vx-dpdk.log fails_before=$TAP_FAILED
    if ! start_vx "$vxlog" --pmd-cores 0; then
        not_ok "testpmd: vhost-xdp starts on $HOST"; diag "$vxlog"; return
    fi
    check "vhost-xdp on $HOST: XDP program attached while it runs ($(grep -o 'XDP [a-z]* ([a-z]*)[^"]*' "$vxlog" | head -n 1))" \
        xdp_attached

    rm -f "$TMP/tp.in"; mkfifo "$TMP/tp.in"
    exec 9<>"$TMP/tp.in"
    stdbuf -oL dpdk-testpmd --lcores "0@$FE_CPU,1@$FE_CPU" --no-huge -m 256 --no-pci --file-prefix="$FILE_PREFIX" \
        --vdev "net_virtio_user0,path=$SOCK,queues=1" \
        -- -i --nb-cores=1 --total-num-mbufs=16384 --forward-mode=txonly <&9 >"$TPLOG" 2>&1 &
    TP_PID=$!
    if ! tp_sample 20; then
        not_ok "testpmd (virtio_user on vhost-xdp's socket) comes up"; diag "$TPLOG" "$vxlog"
        stop_pid "$TP_PID"; TP_PID=''; exec 9>&-; stop_vx TERM; return
    fi
    ok "testpmd (virtio_user on vhost-xdp's socket) comes up"

    # --- txonly: two runs of 1.5 s each, testpmd -> vhost-xdp -> veth -> peer
    local txsum=0 nstop=0 tp_up=1 run txpkts size p0 d0 p1 d1 b0 b1 tx0 txb0 dtx dtxb drx ddrop drxb
    for run in 64:64 64,1400:1464; do
        txpkts=${run%:*} size=${run#*:}
        settle
        p0=$(peer_stat rx_packets) b0=$(peer_stat rx_bytes) d0=$(host_stat tx_dropped)
        tp_sample || { not_ok "testpmd answers (before txonly $size B)"; tp_up=''; break; }
        tx0=$TP_TXP txb0=$TP_TXB
        tp "set txpkts $txpkts" start
        sleep 1.5
        tp stop
        if ! tp_sample; then not_ok "testpmd answers (after txonly $size B)"; tp_up=''; break; fi
        nstop=$((nstop + 1))
        settle || echo "# txonly $size B: the peer's counters were still moving after 5 s"
        p1=$(peer_stat rx_packets) b1=$(peer_stat rx_bytes) d1=$(host_stat tx_dropped)
        dtx=$((TP_TXP - tx0)) dtxb=$((TP_TXB - txb0)) drx=$((p1 - p0)) drxb=$((b1 - b0)) ddrop=$((d1 - d0))
        txsum=$((txsum + dtx))
        echo "# txonly $size B for 1.5 s: testpmd TX-packets $dtx ($dtxb B), peer $PEER rx_packets $drx ($drxb B)," \
             "host end $HOST tx_dropped $ddrop, testpmd errors $TP_ERR; testpmd's txonly engine dropped" \
             "$(fwd_txdropped $nstop) more that found the virtio ring full (back-pressure, not loss on the link)"
        check "txonly $size B: testpmd TX-packets $dtx = peer rx_packets $drx + veth tx_dropped $ddrop (and > 1000)" \
            eval '[ "$dtx" -gt 1000 ] && [ "$dtx" -eq $((drx + ddrop)) ]'
        if [ "$ddrop" -eq 0 ]; then
            check "txonly $size B: testpmd TX-bytes $dtxb = peer rx_bytes $drxb = $dtx x $size" \
                eval '[ "$dtxb" -eq "$drxb" ] && [ "$dtxb" -eq $((dtx * size)) ]'
        fi
    done

    # --- rxonly: the peer sends N frames of 60..1514 B -> veth -> vhost-xdp -> testpmd
    local n=20000 rx0 rxb0 sent_bytes hp0 pd0 rs_rc last=-1 same=0 i
    tp "set fwd rxonly" start
    [ -n "$tp_up" ] && ! tp_sample && { not_ok "testpmd answers (rxonly started)"; tp_up=''; }
    if [ -z "$tp_up" ]; then
        stop_pid "$TP_PID"; TP_PID=''; exec 9>&-; stop_vx TERM; diag "$TPLOG" "$vxlog"; return
    fi
    rx0=$TP_RXP rxb0=$TP_RXB
    hp0=$(host_stat rx_dropped) pd0=$(peer_stat tx_dropped)
    # The sender shares vhost-xdp's CPU, not testpmd's: a testpmd that loses its CPU for a time slice stops
    # emptying its RX ring, and vhost-xdp drops (and counts) what does not fit there.
    local pin=()
    [ "$FE_CPU" != 0 ] && command -v taskset >/dev/null && pin=(taskset -c 0)
    in_ns "${pin[@]}" "$TOOL" raw-send "$PEER" "$n" >"$TMP/raw-send.out" 2>"$TMP/raw-send.err"
    rs_rc=$?
    check "peer: raw-send sent $n frames of 60..1514 B from $PEER (exit status $rs_rc)" \
        eval '[ "$rs_rc" = 0 ] && [ "$(wc -l <"$TMP/raw-send.out")" = "$n" ]'
    sent_bytes=$(awk '{ s += $2 } END { print s + 0 }' "$TMP/raw-send.out")
    # until testpmd has them all, or its count has stopped moving for two samples in a row
    for ((i = 0; i < 25; i++)); do
        tp_sample || break
        [ $((TP_RXP - rx0)) -ge "$n" ] && break
        if [ "$TP_RXP" = "$last" ]; then same=$((same + 1)); [ "$same" -ge 2 ] && break; else same=0; fi
        last=$TP_RXP; sleep 0.2
    done
    tp stop
    tp_sample
    local drxp=$((TP_RXP - rx0)) drxbytes=$((TP_RXB - rxb0))
    local hdrop=$(($(host_stat rx_dropped) - hp0)) pdrop=$(($(peer_stat tx_dropped) - pd0))
    tp quit
    if wait_for "testpmd to quit" 10 gone "$TP_PID"; then wait "$TP_PID"; TP_RC=$?; else stop_pid "$TP_PID"; TP_RC=timeout; fi
    TP_PID=''
    exec 9>&-
    rm -rf "$DPDK_RUNDIR/$FILE_PREFIX"
    check "testpmd quit cleanly (exit status $TP_RC)" test "$TP_RC" = 0
    check "testpmd: no RX-missed/RX-errors/RX-nombuf/TX-errors ($TP_ERR)" test "$TP_ERR" = 0/0/0/0

    # vhost-xdp's exit lines: its drops (RX: no room in the ring) and the AF_XDP socket's kernel drops
    check "vhost-xdp still running after testpmd quit" kill -0 "$VX_PID"
    stop_vx INT
    check "SIGINT: vhost-xdp exits with status 0 (got $VX_RC)" test "$VX_RC" = 0
    check "SIGINT: afterwards ip link show $HOST shows no XDP program" no_xdp
    vx_exit "$vxlog"
    echo "# vhost-xdp exit: from guest $EX_FROM, to guest $EX_TO, drops $EX_DROPS, broken rings $EX_BROKEN;" \
         "nic rx $EX_NIC_RX, nic tx $EX_NIC_TX; AF_XDP socket kernel drops $EX_KDROP"
    echo "# rxonly: peer sent $n frames ($sent_bytes B), testpmd RX-packets $drxp ($drxbytes B)," \
         "veth drops: host end rx_dropped $hdrop, peer end tx_dropped $pdrop (raw-send re-sends those)"
    # vhost-xdp takes from the AF_XDP RX ring only what the guest has buffers for; when testpmd falls
    # behind, frames wait there and, once it is full, the kernel drops them: the socket counts them (rx
    # ring full) and so does the veth (its XDP redirect failed, rx_dropped).  The same frames, twice.
    check "rxonly: peer sent $n = testpmd RX-packets $drxp + vhost-xdp drops $EX_DROPS + AF_XDP kernel drops $EX_KDROP" \
        eval '[ "$n" -eq $((drxp + EX_DROPS + EX_KDROP)) ]'
    check "rxonly: the veth's rx_dropped $hdrop are the AF_XDP socket's kernel drops $EX_KDROP" test "$hdrop" = "$EX_KDROP"
    check "rxonly: vhost-xdp nic rx $EX_NIC_RX = testpmd RX-packets $drxp + vhost-xdp drops $EX_DROPS" \
        eval 'isnum "$EX_NIC_RX" && [ "$EX_NIC_RX" -eq $((drxp + EX_DROPS)) ]'
    check "rxonly: testpmd received frames from the peer ($drxp of $n, $((drxp * 100 / n)) %)" test "$drxp" -gt 0
    if [ $((EX_DROPS + EX_KDROP + hdrop)) -eq 0 ]; then
        check "rxonly: testpmd RX-bytes $drxbytes = the $sent_bytes B the peer sent" test "$drxbytes" = "$sent_bytes"
    fi
    check "txonly total: testpmd TX-packets $txsum = vhost-xdp from guest $EX_FROM = nic tx $EX_NIC_TX" \
        eval '[ "$txsum" = "$EX_FROM" ] && [ "$txsum" = "$EX_NIC_TX" ]'
    check "vhost-xdp: no broken rings ($EX_BROKEN)" test "$EX_BROKEN" = 0

    if [ "$TAP_FAILED" -ne "$fails_before" ]; then
        diag "$TPLOG" "$vxlog" "$TMP/raw-send.err"
    fi
}

if need_cmd dpdk-testpmd "end to end with DPDK virtio_user"; then
    dpdk_part
fi

# ============================================================================================
# Parts 2-5: a QEMU guest pings the peer through vhost-xdp
# ============================================================================================
# start_qemu NAME EXTRA_DEVICE_OPTIONS: the pinging guest (lib.sh, start_guest).
start_qemu() { start_guest "$TMP" "$1" "$SOCK" ping "$2"; }
# ping_ok SERIAL: the guest's replies so far (last "VXPING ok=N fail=M"); ping_line: the whole report.
ping_ok() { tr -d '\r' 2>/dev/null <"$1" | sed -n 's/.*VXPING ok=\([0-9]*\) fail=.*/\1/p' | tail -n 1; }
ping_line() { tr -d '\r' 2>/dev/null <"$1" | grep -ao 'VXPING ok=[0-9]* fail=[0-9]*' | tail -n 1; }
# wait_ping SERIAL MIN SECS: until the guest reports ok > MIN; 1 on timeout or if QEMU or vhost-xdp died.
wait_ping() {
    local serial=$1 min=$2 okc deadline=$((SECONDS + $3))
    while [ "$SECONDS" -lt "$deadline" ]; do
        okc=$(ping_ok "$serial")
        [ -n "$okc" ] && [ "$okc" -gt "$min" ] && return 0
        gone "$QEMU_PID" && { echo "# QEMU exited"; return 1; }
        gone "$VX_PID" && { echo "# vhost-xdp exited"; return 1; }
        sleep 0.2
    done
    echo "# timed out after ${3}s: guest $(ping_line "$serial"), needed ok > $min"
    return 1
}
check_mrg_rxbuf() {    # MRG_RXBUF is feature bit 15 (virtio 1.2 §5.1.3)
    local bits
    bits=$(guest_features "$1")
    if [ -n "$bits" ] && [ "${bits:15:1}" = "$2" ]; then ok "$3"; else not_ok "$3"; echo "# VXFEATURES ${bits:-missing}"; fi
}
# sigint_check NAME LOG: SIGINT vhost-xdp; exit 0, no XDP program left, both directions through AF_XDP.
sigint_check() {
    local name=$1 log=$2
    stop_vx INT
    check "$name: SIGINT: vhost-xdp exits with status 0 (got $VX_RC)" test "$VX_RC" = 0
    check "$name: SIGINT: afterwards ip link show $HOST shows no XDP program" no_xdp
    vx_exit "$log"
    echo "# $name: vhost-xdp exit: nic rx $EX_NIC_RX, nic tx $EX_NIC_TX; from guest $EX_FROM, to guest $EX_TO," \
         "drops $EX_DROPS, broken rings $EX_BROKEN"
    check "$name: both directions went through AF_XDP (nic tx $EX_NIC_TX > 0, nic rx $EX_NIC_RX > 0, no broken rings)" \
        eval 'isnum "$EX_NIC_TX" && isnum "$EX_NIC_RX" && [ "$EX_NIC_TX" -gt 0 ] && [ "$EX_NIC_RX" -gt 0 ] &&
              [ "$EX_BROKEN" = 0 ]'
}

qemu_part() {
    if "$TESTS_DIR/build_guest.sh" "$GUEST" 2>"$TMP/build.log"; then
        ok "guest kernel + initramfs ($GUEST)"
    else
        not_ok "build the guest (tests/build_guest.sh)"; diag "$TMP/build.log"; return
    fi
    ip -n "$NS" addr add 10.0.0.1/24 dev "$PEER" ||
        { not_ok "peer address 10.0.0.1/24 on $NS/$PEER"; return; }

    # --- guest 1, default device (mergeable RX buffers): ping, SIGKILL + restart, SIGINT
    local s=$TMP/g1.serial log1=$TMP/vx-g1a.log log2=$TMP/vx-g1b.log t0 ok0
    if ! start_vx "$log1"; then not_ok "guest: vhost-xdp starts on $HOST"; diag "$log1"; return; fi
    t0=$SECONDS
    start_qemu g1 ""
    if wait_ping "$s" 2 45; then
        ok "guest pings 10.0.0.1 in $NS through vhost-xdp and the veth and gets replies ($(ping_line "$s") after $((SECONDS - t0)) s)"
        check_mrg_rxbuf "$s" 1 "guest negotiated MRG_RXBUF (the default device)"

        kill -KILL "$VX_PID"; wait "$VX_PID" 2>/dev/null; VX_PID=''
        check "SIGKILL: the kernel detached the XDP program (BPF link)" wait_for "XDP program gone" 3 no_xdp
        echo "# SIGKILL: the socket file was $([ -e "$SOCK" ] || echo "not ")left behind; restarting vhost-xdp on it"
        sleep 1    # a ping or two fails while nobody serves the guest
        ok0=$(ping_ok "$s")
        t0=$SECONDS
        if start_vx "$log2" && wait_ping "$s" "$((ok0 + 1))" 20; then
            ok "after SIGKILL + restart on $HOST, the guest's pings get replies again (ok $ok0 -> $(ping_ok "$s"), $(ping_line "$s"), $((SECONDS - t0)) s)"
            sigint_check "guest (restarted vhost-xdp)" "$log2"
        else
            not_ok "after SIGKILL + restart on $HOST, the guest's pings get replies again"
            diag "$log1" "$log2" "$TMP/g1.qemu.log" "$s"
        fi
    else
        not_ok "guest pings 10.0.0.1 in $NS through vhost-xdp and the veth and gets replies"
        diag "$log1" "$TMP/g1.qemu.log" "$s"
    fi
    stop_pid "$QEMU_PID"; QEMU_PID=''
    [ -n "$VX_PID" ] && stop_vx TERM
    # The peer would otherwise probe the first guest's address (unicast ARP) into the next vhost-xdp
    # before the second guest's rings exist: harmless, but counted as drops.
    ip -n "$NS" neigh flush dev "$PEER"

    # --- guest 2, mrg_rxbuf=off
    s=$TMP/g2.serial log1=$TMP/vx-g2.log
    if ! start_vx "$log1"; then not_ok "mrg_rxbuf=off: vhost-xdp starts on $HOST"; diag "$log1"; return; fi
    t0=$SECONDS
    start_qemu g2 ",mrg_rxbuf=off"
    if wait_ping "$s" 2 45; then
        ok "mrg_rxbuf=off: guest pings 10.0.0.1 through vhost-xdp and gets replies ($(ping_line "$s") after $((SECONDS - t0)) s)"
        check_mrg_rxbuf "$s" 0 "mrg_rxbuf=off: MRG_RXBUF not negotiated"
        sigint_check "mrg_rxbuf=off" "$log1"
    else
        not_ok "mrg_rxbuf=off: guest pings 10.0.0.1 through vhost-xdp and gets replies"
        diag "$log1" "$TMP/g2.qemu.log" "$s"
    fi
    stop_pid "$QEMU_PID"; QEMU_PID=''
    [ -n "$VX_PID" ] && stop_vx TERM
}

if need_cmd qemu-system-x86_64 "end to end with a QEMU guest"; then
    qemu_part
fi

done_testing
