#!/usr/bin/env bash
# tests/test_dpdk.sh - DPDK testpmd (virtio_user) as the frontend, vhost-xdp --loopback as the backend.
#
# One vhost-xdp process serves eight testpmd frontends in a row, one per packed_vq x mrg_rxbuf x in_order
# combination: split rings (virtio 1.2 §2.7) first, then packed rings (§2.8, VIRTIO_F_RING_PACKED; one of
# them with a ring of 96 descriptors, not a power of two).  vhost-xdp offers VIRTIO_F_IN_ORDER (virtio 1.2
# §2.7.9, §2.8.8): with in_order=1 testpmd takes it and reads each TX burst back as one used entry.
# Each testpmd injects 32 bursts ("start tx_first 32") and forwards in io mode: whatever comes back through
# vhost-xdp's loopback is sent again, so the same packets go round the loop until "stop".
# Asserts, per run: the packets circulate (many times more received than injected, and still growing a second
# later), no RX/TX errors, RX-bytes = RX-packets x packet size, and vhost-xdp survives the disconnect (the
# next run shows it also accepts a new frontend).  With vhost-xdp as the backend (run with --trace), also:
# the features testpmd sets (SET_FEATURES) include IN_ORDER exactly when the run asks for in_order=1.
# Then two queue pairs (testpmd queues=2 --rxq=2 --txq=2, split and packed) against a vhost-xdp --queues 2 of
# their own: both queues carry packets both ways, and testpmd's per-queue counters (show port xstats) equal
# vhost-xdp's per-queue-pair exit lines exactly (see run_mq).
#
# Environment:
#   VX_BACKEND_CMD   backend command line instead of vhost-xdp; {sock} = socket path, {id} = this test's pid.
#                    VX_BACKEND_CMD=dpdk runs DPDK's own vhost backend (testpmd net_vhost, io mode = loopback),
#                    the reference this test was developed against.
#   CI=true          a missing dpdk-testpmd is a failure, not a skip.
#
# testpmd pitfalls: it needs two lcores (both pinned on one CPU here) and --total-num-mbufs
# to fit in -m 256; its stdout is block-buffered when redirected, so its log is read only after "quit";
# it is driven through a fifo on stdin that this script holds open (EOF on stdin makes a
# non-interactive testpmd exit at once).
set -u
. "$(dirname "$0")/lib.sh"

# lib.sh: t (check that counts FAILS, the exit status), gone, listening, need_testpmd.
need_testpmd "DPDK virtio_user frontend"

# Where DPDK keeps its --file-prefix directories (root: /var/run/dpdk).
# testpmd's two lcores go on CPU 1 when there is one (the backend's poll thread gets the other CPU).
FE_CPU=$(($(nproc) > 1 ? 1 : 0))

STANDIN="dpdk-testpmd --lcores '0@0,1@0' --no-huge -m 256 --no-pci --file-prefix=vx-be-{id}"
STANDIN+=" --vdev 'net_vhost0,iface={sock},queues=1,client=0'"
STANDIN+=" -- --nb-cores=1 --total-num-mbufs=16384 --forward-mode=io --auto-start"
BE_CMD=${VX_BACKEND_CMD:-"$(printf %q "$VX") --socket {sock} --loopback --trace"}
[ "$BE_CMD" = dpdk ] && BE_CMD=$STANDIN
if [ -z "${VX_BACKEND_CMD:-}" ] && [ ! -x "$VX" ]; then
    not_ok "vhost-xdp is built ($VX)"
    exit 1
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/vx-dpdk.XXXXXX")
SOCK=$TMP/vx.sock
BE_PID='' FE_PID=''
cleanup() {
    exec 9>&- 8>&-
    stop_pid "$FE_PID"
    stop_pid "$BE_PID"
    stop_pid "${MQ_PID:-}"
    rm -rf "$TMP" "$DPDK_RUNDIR/vx-fe-$$" "$DPDK_RUNDIR/vx-be-$$"
}
on_exit cleanup

diag() { # diag FILE N: FILE as TAP comments, at most its first and last N lines
    echo "# ---- ${1##*/}"
    awk -v n="$2" '{ l[NR] = $0 } END { for (i = 1; i <= NR; i++)
        if (i <= n || i > NR - n) print "#   " l[i]; else if (i == n + 1) print "#   ..." }' "$1" 2>/dev/null
}

# ---- the backend: started once, stdin a fifo that never reaches EOF (the stand-in testpmd needs that)
BE_CMD=${BE_CMD//\{sock\}/$SOCK}
BE_CMD=${BE_CMD//\{id\}/$$}
echo "# backend: $BE_CMD"
mkfifo "$TMP/be.in"
exec 8<>"$TMP/be.in"
( eval "exec $BE_CMD" ) <&8 >"$TMP/backend.log" 2>&1 &
BE_PID=$!
exec 8>&-
if ! wait_for "the backend to listen on its socket" 10 listening "$SOCK"; then
    not_ok "backend listens on its vhost-user socket"
    diag "$TMP/backend.log" 20
    exit 1
fi
ok "backend listens on its vhost-user socket"

# ---- one testpmd frontend: run_one PACKED_VQ MRG_RXBUF IN_ORDER TXPKTS PACKET_SIZE [QUEUE_SIZE]
run_one() {
    local packed=$1 mrg=$2 ino=$3 txpkts=$4 size=$5 qsize=${6:-256} rc
    local name="packed_vq=$packed mrg_rxbuf=$mrg in_order=$ino txpkts=$txpkts"
    [ "$qsize" != 256 ] && name+=" queue_size=$qsize"
    local log=$TMP/testpmd-p$packed-m$mrg-i$ino.log fails_before=$FAILS
    local be_lines_before
    be_lines_before=$(wc -l <"$TMP/backend.log")
    rm -f "$TMP/fe.in"
    mkfifo "$TMP/fe.in"
    exec 9<>"$TMP/fe.in"
    dpdk-testpmd --lcores "0@$FE_CPU,1@$FE_CPU" --no-huge -m 256 --no-pci --file-prefix="vx-fe-$$" \
        --vdev "net_virtio_user0,path=$SOCK,queues=1,mrg_rxbuf=$mrg,in_order=$ino,packed_vq=$packed,queue_size=$qsize" \
        -- -i --nb-cores=1 --total-num-mbufs=16384 --forward-mode=io <&9 >"$log" 2>&1 &
    FE_PID=$!
    # testpmd reads these once it reaches its prompt (after the port has started).
    printf '%s\n' "set txpkts $txpkts" "start tx_first 32" >&9
    sleep 2
    echo "show port stats all" >&9
    sleep 1
    # The third sample is taken after "stop": the counters are frozen then, so bytes and packets agree.
    printf '%s\n' "show port stats all" stop "show port stats all" quit >&9
    if wait_for "testpmd ($name) to quit" 8 gone "$FE_PID"; then
        wait "$FE_PID"; rc=$?
    else
        stop_pid "$FE_PID"; rc=timeout
    fi
    FE_PID=''
    exec 9>&-
    rm -rf "$DPDK_RUNDIR/vx-fe-$$"
    t "$name: testpmd ran and quit cleanly (exit status $rc)" [ "$rc" = 0 ]

    # One line per "NIC statistics" block: rx_packets rx_missed rx_bytes rx_errors rx_nombuf tx_packets
    # tx_errors rx_pps (the block ends with a line of '#'; "Forward statistics" blocks are not read).
    local -a s
    mapfile -t s < <(awk '
        /NIC statistics for port/ { n++; in_blk = 1; next }
        /^ *#+ *$/                { in_blk = 0 }
        in_blk { for (i = 1; i < NF; i++) if ($i ~ /:$/) v[n, $i] = $(i + 1) }
        END { for (k = 1; k <= n; k++) {
                  split("RX-packets: RX-missed: RX-bytes: RX-errors: RX-nombuf: TX-packets: TX-errors: Rx-pps:", f, " ")
                  line = ""
                  for (j = 1; j <= 8; j++) line = line ((k, f[j]) in v ? v[k, f[j]] : "?") " "
                  print line } }' "$log")
    local p1 p2 p3 b3 pps e1 e2 e3 x y z
    if [ "${#s[@]}" -ne 3 ]; then
        not_ok "$name: testpmd printed 3 port statistics samples (got ${#s[@]})"
        FAILS=$((FAILS + 1))
        [ "${#s[@]}" -eq 0 ] && NO_PORT=1    # the port never came up: the next runs would fail the same way
    else
        read -r p1 _ _ _ _ _ _ _ <<<"${s[0]}"
        read -r p2 _ _ _ _ _ _ pps <<<"${s[1]}"
        read -r p3 _ b3 _ _ _ _ _ <<<"${s[2]}"
        echo "# $name: RX-packets $p1 after 2 s, $p2 a second later ($pps pps), $p3 at stop"
        # More than were injected: each came back and went round again (a count, not a rate: on a
        # loaded machine 2 s may hold few rounds).
        t "$name: packets circulate (RX-packets $p1 after 2 s > the 1024 injected)" \
            eval 'isnum "$p1" && [ "$p1" -gt 1024 ]'
        t "$name: still circulating a second later (RX-packets $p1 -> $p2)" \
            eval 'isnum "$p1" && isnum "$p2" && [ "$p2" -gt "$p1" ]'
        # RX-missed, RX-errors, RX-nombuf, TX-errors in every sample
        read -r _ e1 _ x y _ z _ <<<"${s[0]}"; e1="$e1/$x/$y/$z"
        read -r _ e2 _ x y _ z _ <<<"${s[1]}"; e2="$e2/$x/$y/$z"
        read -r _ e3 _ x y _ z _ <<<"${s[2]}"; e3="$e3/$x/$y/$z"
        t "$name: no RX-missed/RX-errors/RX-nombuf/TX-errors ($e1, $e2, $e3)" \
            eval '[ "$e1" = 0/0/0/0 ] && [ "$e2" = 0/0/0/0 ] && [ "$e3" = 0/0/0/0 ]'
        t "$name: RX-bytes $b3 = RX-packets $p3 x $size bytes" \
            eval 'isnum "$p3" && isnum "$b3" && [ "$b3" -eq $((p3 * size)) ]'
    fi
    t "$name: backend still running after testpmd quit" kill -0 "$BE_PID"

    # IN_ORDER negotiated iff asked for: the last SET_FEATURES of this run in vhost-xdp's --trace.
    if [ -z "${VX_BACKEND_CMD:-}" ]; then
        local feats want=no got=no
        feats=$(tail -n +"$((be_lines_before + 1))" "$TMP/backend.log" | grep ' SET_FEATURES ' | tail -n 1)
        [ "$ino" = 1 ] && want=yes
        [[ $feats == *IN_ORDER* ]] && got=yes
        echo "# $name: ${feats:-no SET_FEATURES traced}"
        t "$name: IN_ORDER negotiated: $got (want $want)" eval '[ -n "$feats" ] && [ "$got" = "$want" ]'
    fi

    # Packed rings: vhost-xdp checks every SET_VRING_BASE of a packed ring against the ring itself (after a
    # backend crash QEMU's is stale: virtqueue.c, "Packed ring recovery").  testpmd starts fresh rings at
    # slot 0 wrap 1, in_order=1 gives back a TX burst in one used descriptor and 64,1400 chains two slots:
    # the check must agree with testpmd every time (no correction line).
    if [ -z "${VX_BACKEND_CMD:-}" ] && [ "$packed" = 1 ]; then
        local corrected
        corrected=$(tail -n +"$((be_lines_before + 1))" "$TMP/backend.log" | grep -c 'is not where the ring stands')
        t "$name: the packed rings' start position, checked against the descriptors, agrees with testpmd's base" \
            [ "$corrected" = 0 ]
    fi

    if [ "$FAILS" -ne "$fails_before" ]; then
        diag "$log" 20
        diag "$TMP/backend.log" 15
    fi
}

# Each run only if the backend is still there and the previous frontend's port came up at all.
NO_PORT=''
go_on() { kill -0 "$BE_PID" 2>/dev/null && [ -z "$NO_PORT" ]; }
run_one 0 0 0 64 64
go_on && run_one 0 0 1 1024 1024
go_on && run_one 0 1 0 64,1400 1464     # two-segment packets: chained TX descriptors
go_on && run_one 0 1 1 64 64            # virtio_user's defaults
go_on && run_one 1 0 0 64 64            # packed rings from here on
go_on && run_one 1 0 1 1024 1024 96     # not a power of two (DPDK wants size/4 a multiple of 4)
go_on && run_one 1 1 0 64,1400 1464     # chained TX descriptors in consecutive slots
go_on && run_one 1 1 1 64 64

# ---- two queue pairs (VIRTIO_NET_F_MQ, virtio 1.2 §5.1.6.5.5): run_mq PACKED_VQ PMD_CORES
# A vhost-xdp of its own (--queues 2 --pmd-cores PMD_CORES), so that its exit lines count this run alone:
# split rings with two poll threads (--pmd-cores 0,1: one per pair; the second shares CPU 1 with testpmd,
# so pair 1 moves far fewer packets), packed rings with one thread on CPU 0 polling both pairs.
# testpmd has two RX and two TX queues and forwards RX queue k to TX queue k (io mode, one stream per
# queue); vhost-xdp's loopback returns what it takes from TX ring 2k+1 on RX ring 2k, so each queue's
# packets stay on their own queue pair.  After "stop" testpmd switches to rxonly and runs a second more:
# that drains what the loopback left in the RX rings, so the counts must agree exactly, per queue pair k:
#   vhost-xdp "from guest" = testpmd tx_qK_good_packets (every packet testpmd put on TX queue K was taken);
#   vhost-xdp "to guest" + its drops = its "from guest" (loopback: each packet is given back, or dropped
#       and counted when RX ring k has no buffer: none in the runs here);
#   vhost-xdp "to guest" = testpmd rx_qK_good_packets (everything given back was received).
# (testpmd's io forwarding also drops packets itself when a TX ring is full: its "TX-dropped", never
# handed to the ring and in neither count.)
run_mq() {
    local packed=$1 cpus=$2 rc vrc name="queues=2 packed_vq=$1 --pmd-cores $2" fails_before=$FAILS
    local log=$TMP/testpmd-mq-p$packed.log vlog=$TMP/vhost-xdp-mq-p$packed.log sock=$TMP/mq.sock
    "$VX" --socket "$sock" --loopback --queues 2 --pmd-cores "$cpus" </dev/null >"$vlog" 2>&1 &
    MQ_PID=$!
    if ! wait_for "vhost-xdp --queues 2 to listen" 10 listening "$sock"; then
        not_ok "$name: vhost-xdp --queues 2 --pmd-cores $cpus listens"; FAILS=$((FAILS + 1))
        diag "$vlog" 20; stop_pid "$MQ_PID"; MQ_PID=''
        return
    fi
    rm -f "$TMP/fe.in"
    mkfifo "$TMP/fe.in"
    exec 9<>"$TMP/fe.in"
    dpdk-testpmd --lcores "0@$FE_CPU,1@$FE_CPU" --no-huge -m 256 --no-pci --file-prefix="vx-fe-$$" \
        --vdev "net_virtio_user0,path=$sock,queues=2,packed_vq=$packed" \
        -- -i --nb-cores=1 --rxq=2 --txq=2 --total-num-mbufs=16384 --forward-mode=io <&9 >"$log" 2>&1 &
    FE_PID=$!
    printf '%s\n' "set txpkts 64" "start tx_first 32" >&9
    sleep 3
    printf '%s\n' stop "set fwd rxonly" start >&9
    sleep 1
    printf '%s\n' stop "show port xstats 0" quit >&9
    if wait_for "testpmd ($name) to quit" 8 gone "$FE_PID"; then
        wait "$FE_PID"; rc=$?
    else
        stop_pid "$FE_PID"; rc=timeout
    fi
    FE_PID=''
    exec 9>&-
    rm -rf "$DPDK_RUNDIR/vx-fe-$$"
    t "$name: testpmd with 2 RX and 2 TX queues ran and quit cleanly (exit status $rc)" [ "$rc" = 0 ]
    kill -TERM "$MQ_PID" 2>/dev/null
    if wait_for "vhost-xdp --queues 2 to exit" 5 gone "$MQ_PID"; then wait "$MQ_PID"; vrc=$?; else vrc=timeout; fi
    stop_pid "$MQ_PID"; MQ_PID=''
    t "$name: vhost-xdp exits 0 on SIGTERM (got $vrc)" [ "$vrc" = 0 ]

    # testpmd's per-queue counters (DPDK 22.11 xstats names) and vhost-xdp's per-pair exit lines.
    xstat() { sed -n "s/^$1: *\([0-9]*\)\$/\1/p" "$log" | tail -n 1; }
    pair() {  # pair K FIELD: FIELD = from | to | drops of vhost-xdp's "exit: queue pair K:" line
        sed -n "s/.*exit: queue pair $1: from guest \([0-9]*\) packets, to guest \([0-9]*\) packets, \([0-9]*\) drops.*/\1 \2 \3/p" \
            "$vlog" | awk -v f="$2" '{ print f == "from" ? $1 : f == "to" ? $2 : $3 }'
    }
    local k tx rx from to drops
    for k in 0 1; do
        tx=$(xstat "tx_q${k}_good_packets") rx=$(xstat "rx_q${k}_good_packets")
        from=$(pair $k from) to=$(pair $k to) drops=$(pair $k drops)
        echo "# $name: queue $k: testpmd tx_q${k}_good_packets ${tx:-?} rx_q${k}_good_packets ${rx:-?};" \
             "vhost-xdp pair $k: from guest ${from:-?}, to guest ${to:-?}, ${drops:-?} drops"
        # 1024 = the 32 bursts of 32 that "start tx_first 32" injects per queue: more means they went round.
        t "$name: queue $k carried traffic both ways: testpmd tx_q$k ${tx:-?} and rx_q$k ${rx:-?}, vhost-xdp pair $k from guest ${from:-?} and to guest ${to:-?}, all > 1024" \
            eval 'isnum "$tx" && isnum "$rx" && isnum "$from" && isnum "$to" &&
                  [ "$tx" -gt 1024 ] && [ "$rx" -gt 1024 ] && [ "$from" -gt 1024 ] && [ "$to" -gt 1024 ]'
        t "$name: pair $k: vhost-xdp took from TX queue $k exactly what testpmd sent on it (${from:-?} = ${tx:-?})" \
            eval 'isnum "$from" && [ "$from" = "$tx" ]'
        t "$name: pair $k: vhost-xdp gave it back on RX queue $k: to guest ${to:-?} + ${drops:-?} drops = from guest ${from:-?}" \
            eval 'isnum "$to" && isnum "$drops" && isnum "$from" && [ $((to + drops)) = "$from" ]'
        t "$name: pair $k: testpmd received on RX queue $k exactly what vhost-xdp gave it (rx_q$k ${rx:-?} = ${to:-?})" \
            eval 'isnum "$rx" && [ "$rx" = "$to" ]'
    done
    if [ "$FAILS" -ne "$fails_before" ]; then
        diag "$log" 30
        diag "$vlog" 15
    fi
}
MQ_PID=''
if [ -n "${VX_BACKEND_CMD:-}" ]; then
    skip "queues=2 runs: they read vhost-xdp's per-queue-pair exit lines (VX_BACKEND_CMD is set)"
else
    run_mq 0 "$( [ "$(nproc)" -gt 1 ] && echo 0,1 || echo 0)"
    run_mq 1 0
fi

# ---- clean shutdown
if kill -0 "$BE_PID" 2>/dev/null; then
    kill -TERM "$BE_PID"
    if wait_for "the backend to exit" 5 gone "$BE_PID"; then
        wait "$BE_PID"; rc=$?
        ok "backend exits within 5 s of SIGTERM (exit status $rc)"
    else
        not_ok "backend exits within 5 s of SIGTERM"; FAILS=$((FAILS + 1))
        diag "$TMP/backend.log" 20
    fi
    BE_PID=''
fi

echo "1..$TAP_N"
[ "$FAILS" -eq 0 ]
