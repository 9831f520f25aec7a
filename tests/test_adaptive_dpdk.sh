#!/usr/bin/env bash
# tests/test_adaptive_dpdk.sh - DPDK testpmd (virtio_user) through vhost-xdp --loopback --pmd-mode adaptive:
# every packet comes back after the poll thread has gone to sleep, however long the pause before it.
#
# What DPDK 22.11's virtio_user does about notifications (seen with this test's --trace and with
# --pmd-mode poll --trace=rings; it is also what its virtio PMD's source says):
#   - it acks no VIRTIO_RING_F_EVENT_IDX (SET_FEATURES, asserted below), so a split ring is always the
#     "event idx off" case: vhost-xdp turns kicks on by clearing VRING_USED_F_NO_NOTIFY in used->flags;
#   - after every TX burst it publishes avail->idx (packed: the descriptors' flags), issues a full barrier,
#     and reads the device's flag: split `used->flags & NO_NOTIFY`, packed `device event flags != DISABLE`;
#     when kicks are wanted it writes the ring's kick eventfd itself (one write per burst);
#   - so in poll mode, where every ring says "do not kick", it kicks no ring during traffic: the only
#     kicks are one per ring each time the port starts (its start routine notifies every queue without
#     looking at the flag); in adaptive mode the armed TX ring gets one kick per burst;
#   - it sets VRING_AVAIL_F_NO_INTERRUPT on its rings: it polls, and wants no calls;
#   - `port stop 0` / `port start 0` send no vhost-user message at all: vhost-xdp's rings keep running
#     (and the thread keeps sleeping) across them; only the port's start kicks each ring once.
#
# One vhost-xdp (--pmd-mode adaptive, --trace=all, --stats 1) serves two testpmd frontends in a row, in
# rxonly mode (what comes back is counted, not sent again):
#   split ring, mrg_rxbuf=1 in_order=1 (virtio_user's defaults), then
#   packed ring (packed_vq=1), mrg_rxbuf=0 in_order=0
# and in each run, with `show port stats 0` read after every step:
#   1. a train of 50 "start tx_first 1" / "stop" pairs written 1 ms apart (one burst of 32 packets each):
#      testpmd's own start and stop take about as long, so vhost-xdp sees idle gaps from a fraction of a
#      millisecond to a few, around its 100 us threshold, where the thread is arming or has just gone
#      to sleep when the next kick comes.  A packet that comes back after its burst's "stop" is read at
#      the next start, so the train is checked as a whole: after a last "start" (rxonly, nothing sent)
#      RX-packets == TX-packets, and more were sent than before;
#   2. cycles after pauses of 100 ms (3) and 2 s (1, that is 20 sleep timeouts): before each burst, the
#      poll thread is seen asleep (its state in /proc is S: a polling thread is always running, R, and
#      in adaptive mode the thread sleeps only in poll()); then "start tx_first 1", wait (generous
#      deadline) until the 32 are sent and back, "stop": RX-packets == TX-packets after each cycle;
#   3. `port stop 0`, `port start 0` while the thread sleeps, then a cycle: traffic resumes;
#   4. testpmd quits while the thread sleeps: its rings are stopped (SET_VRING_ENABLE 0, GET_VRING_BASE:
#      a hand-over, pmd_quiesce waking the sleeper), testpmd exits 0 (it waits for the GET_VRING_BASE
#      replies), and the next run's testpmd is a new frontend on the same, sleeping vhost-xdp;
#   5. SET_FEATURES: no EVENT_IDX, RING_PACKED and MRG_RXBUF as asked.
# Then SIGTERM while the thread sleeps (testpmd has quit first: DPDK's virtio_user dies of SIGPIPE when
# its backend goes away under it): vhost-xdp exits 0, within 5 s (it takes milliseconds; the deadline
# only catches a hang), and the sleep that ended was ended by the wake-up eventfd, not by its 100 ms
# timeout: "hand-over" in its exit line is above the last --stats line's.  And from the exit lines:
# sleeps > 0, woken by kick > 0, signal 0 (the wake-up fd did every wake-up), missed kicks 0 (no burst
# published under "kick me" came without a kick: DPDK kicks, and vhost-xdp's re-check after arming
# works), each sleep counted under exactly one cause, and the packets vhost-xdp counts equal the sums
# of testpmd's counters.
#
# No timing is asserted (the machines are shared and noisy): every wait is on a condition, with a deadline.
# Environment: CI=true: a missing dpdk-testpmd is a failure, not a skip.  About 15 s.
set -u
. "$(dirname "$0")/lib.sh"

# lib.sh: t (check that counts FAILS, the exit status), gone, listening, need_testpmd, poll_slept.
need_testpmd "DPDK virtio_user frontend"
[ -x "$VX" ] || { not_ok "vhost-xdp is built ($VX)"; exit 1; }
FE_CPU=$(($(nproc) > 1 ? 1 : 0))    # testpmd's two lcores; vhost-xdp's thread is not pinned

TMP=$(mktemp -d "${TMPDIR:-/tmp}/vx-adpdk.XXXXXX")
SOCK=$TMP/vx.sock BELOG=$TMP/vhost-xdp.log
BE_PID='' FE_PID=''
cleanup() {
    exec 9>&- 7>&-
    stop_pid "$FE_PID"
    stop_pid "$BE_PID"
    rm -rf "$TMP" "$DPDK_RUNDIR/vx-adpdk-$$"
}
on_exit cleanup

diag() { # diag FILE N: FILE as TAP comments, at most its first and last N lines (--stats lines left out)
    echo "# ---- ${1##*/}"
    grep -v ': stats: from guest' "$1" 2>/dev/null | awk -v n="$2" '{ l[NR] = $0 } END { for (i = 1; i <= NR; i++)
        if (i <= n || i > NR - n) print "#   " l[i]; else if (i == n + 1) print "#   ..." }'
}

# slept: lib.sh's poll_slept for this test's vhost-xdp: S when its poll thread was seen asleep within 10 s.
slept() { poll_slept "$BE_PID" 10; }

# fe CMD...: lines to testpmd's stdin.
fe() { printf '%s\n' "$@" >&9; }
# nap SECONDS: bash's own read timeout on a fifo nobody writes: a 1 ms pause costs no fork (an
# external sleep 0.001 takes several ms here).
mkfifo "$TMP/nap"
exec 7<>"$TMP/nap"
nap() { read -rt "$1" -u 7; }
# stats: RX and TX = port 0's RX-packets and TX-packets now (`show port stats 0`; testpmd's answer is
# waited for: its stdout is line buffered by stdbuf).  Both empty if testpmd does not answer within 20 s.
STATS_SEEN=0
stats() {
    local want=$((STATS_SEEN + 1)) i
    RX='' TX=''
    fe "show port stats 0"
    for ((i = 0; i < 2000; i++)); do
        [ "$(grep -c 'Tx-bps:' "$FELOG" 2>/dev/null)" -ge "$want" ] && break
        kill -0 "$FE_PID" 2>/dev/null || return
        sleep 0.01
    done
    STATS_SEEN=$want
    read -r RX TX < <(awk -v k="$want" '/NIC statistics for port/ { n++; blk = n == k; next } /Tx-bps:/ { blk = 0 }
        blk && /RX-packets:/ { rx = $2 } blk && /TX-packets:/ { tx = $2 }
        END { if (rx != "" && tx != "") print rx, tx }' "$FELOG")
}
# until_back TX_WANTED: read the stats until TX-packets >= TX_WANTED and RX-packets == TX-packets (10 s
# deadline; status 1 then).
until_back() {
    local want=$1 deadline=$((SECONDS + 10))
    while :; do
        stats
        isnum "$RX" && isnum "$TX" && [ "$TX" -ge "$want" ] && [ "$RX" = "$TX" ] && return 0
        [ "$SECONDS" -ge "$deadline" ] && return 1
        kill -0 "$FE_PID" 2>/dev/null || return 1
        sleep 0.02
    done
}
# cycle NAME: wait for the poll thread to sleep, send one burst, wait for it back, stop, read the stats.
# Appends "RX=TX" (or "RX!=TX") to CYCLES; returns 1 when the cycle went wrong.
cycle() {
    local before=$TX state
    state=$(slept)
    fe "start tx_first 1"
    until_back $((before + 32))
    fe stop
    stats
    CYCLES+=" $RX/$TX"
    [ "$state" = S ] || { CYCLES+="(not seen asleep: state $state)"; return 1; }
    isnum "$RX" && [ "$RX" = "$TX" ] && [ "$TX" = $((before + 32)) ]
}

# ---- the backend, for both runs
"$VX" --socket "$SOCK" --loopback --pmd-mode adaptive --trace=all --stats 1 </dev/null >"$BELOG" 2>&1 &
BE_PID=$!
if ! wait_for "vhost-xdp to listen" 10 listening "$SOCK"; then
    not_ok "vhost-xdp --pmd-mode adaptive listens on its socket"; diag "$BELOG" 20
    exit 1
fi
ok "vhost-xdp --loopback --pmd-mode adaptive listens on its socket"

SUM_TX=0 SUM_RX=0
# run_one PACKED_VQ MRG_RXBUF IN_ORDER
run_one() {
    local packed=$1 mrg=$2 ino=$3 name="packed_vq=$1 mrg_rxbuf=$2 in_order=$3" rc fails_before=$FAILS
    local mark k ok_all
    FELOG=$TMP/testpmd-p$packed.log STATS_SEEN=0 RX=0 TX=0
    mark=$(wc -l <"$BELOG")
    rm -f "$TMP/fe.in"
    mkfifo "$TMP/fe.in"
    exec 9<>"$TMP/fe.in"
    stdbuf -oL dpdk-testpmd --lcores "0@$FE_CPU,1@$FE_CPU" --no-huge -m 256 --no-pci --file-prefix="vx-adpdk-$$" \
        --vdev "net_virtio_user0,path=$SOCK,queues=1,packed_vq=$packed,mrg_rxbuf=$mrg,in_order=$ino" \
        -- -i --nb-cores=1 --total-num-mbufs=16384 --forward-mode=rxonly <&9 >"$FELOG" 2>&1 &
    FE_PID=$!
    stats
    if ! isnum "$TX"; then
        not_ok "$name: testpmd's port comes up and answers 'show port stats 0'"; FAILS=$((FAILS + 1))
        diag "$FELOG" 20; diag "$BELOG" 20
        stop_pid "$FE_PID"; FE_PID=''; exec 9>&-
        return
    fi

    # 5. what virtio_user negotiated
    local feats
    feats=$(tail -n +"$((mark + 1))" "$BELOG" | grep ' SET_FEATURES ' | tail -n 1)
    echo "# $name: ${feats#vhost-xdp: trace: }"
    t "$name: virtio_user acks no EVENT_IDX (the 'event idx off' case), RING_PACKED $packed, MRG_RXBUF $mrg" \
        eval '[ -n "$feats" ] && [[ $feats != *EVENT_IDX* ]] &&
              [ "$([[ $feats == *RING_PACKED* ]] && echo 1 || echo 0)" = "$packed" ] &&
              [ "$([[ $feats == *MRG_RXBUF* ]] && echo 1 || echo 0)" = "$mrg" ]'

    # 1. the train
    local before=$TX
    for ((k = 0; k < 50; k++)); do fe "start tx_first 1" stop; nap 0.001; done
    fe start
    until_back $((before + 1))
    fe stop
    stats
    echo "# $name: after the train: TX-packets $before -> $TX (50 bursts of 32: $((before + 1600))), RX-packets $RX"
    t "$name: 50 bursts 1 ms apart: every packet sent came back (RX-packets $RX == TX-packets $TX > $before)" \
        eval 'isnum "$RX" && [ "$RX" = "$TX" ] && [ "$TX" -gt "$before" ]'

    # 2. cycles after 100 ms and 2 s
    CYCLES='' ok_all=1
    for k in 1 2 3; do sleep 0.1; cycle || ok_all=0; done
    t "$name: 3 bursts after 100 ms pauses, the thread asleep before each: RX == TX after each (RX/TX:$CYCLES)" \
        [ "$ok_all" = 1 ]
    CYCLES='' ok_all=1
    sleep 2; cycle || ok_all=0
    t "$name: a burst after 2 s (20 sleep timeouts), the thread asleep: RX == TX ($CYCLES)" [ "$ok_all" = 1 ]

    # 3. port stop / port start while it sleeps
    local s1 s2
    s1=$(slept)
    fe "port stop 0"
    stats                   # answered once the port has stopped
    s2=$(slept)
    fe "port start 0"
    CYCLES='' ok_all=1
    cycle || ok_all=0
    t "$name: 'port stop 0' and 'port start 0' while the thread sleeps (state $s1, $s2), then a burst: RX == TX ($CYCLES)" \
        eval '[ "$ok_all" = 1 ] && [ "$s1$s2" = SS ]'
    SUM_TX=$((SUM_TX + ${TX:-0})) SUM_RX=$((SUM_RX + ${RX:-0}))

    # 4. quit while it sleeps: the rings are stopped under a sleeping thread
    local s3 stopped
    s3=$(slept)
    fe quit
    if wait_for "testpmd ($name) to quit" 15 gone "$FE_PID"; then wait "$FE_PID"; rc=$?; else stop_pid "$FE_PID"; rc=timeout; fi
    FE_PID=''
    exec 9>&-
    rm -rf "$DPDK_RUNDIR/vx-adpdk-$$"
    stopped=$(tail -n +"$((mark + 1))" "$BELOG" | grep -c 'trace: ring [01] stopped (GET_VRING_BASE)')
    t "$name: testpmd quits while the thread sleeps (state $s3): both rings stopped ($stopped GET_VRING_BASE), testpmd exits 0 (got $rc)" \
        eval '[ "$s3" = S ] && [ "$stopped" = 2 ] && [ "$rc" = 0 ]'
    t "$name: vhost-xdp still running, waiting for the next frontend" kill -0 "$BE_PID"
    if [ "$FAILS" -ne "$fails_before" ]; then
        diag "$FELOG" 15
        diag "$BELOG" 30
    fi
}

run_one 0 1 1
kill -0 "$BE_PID" 2>/dev/null && run_one 1 0 0

# ---- SIGTERM while the thread sleeps (no frontend now: it sleeps on its wake-up eventfd alone)
if kill -0 "$BE_PID" 2>/dev/null; then
    term_asleep "$BE_PID" "$BELOG" 10     # lib.sh: SLEPT, LAST_STATS, EXIT_RC, EXIT_MS, EXIT_LINE
    BE_PID=''
    s=$SLEPT last=$LAST_STATS rc=$EXIT_RC ms=$EXIT_MS exitl=$EXIT_LINE
    echo "# last --stats line: ${last#vhost-xdp: }"
    echo "# exit line:         ${exitl#vhost-xdp: }"
    h0=$(num_after hand-over "$last") h1=$(num_after hand-over "$exitl")
    t "SIGTERM while the thread sleeps (state $s): exit status 0 (got $rc) after $ms ms, woken by the wake-up eventfd (hand-over ${h0:-?} -> ${h1:-?})" \
        eval '[ "$s" = S ] && [ "$rc" = 0 ] && isnum "$h0" && isnum "$h1" && [ "$h1" -gt "$h0" ]'
    t "no 'did not stop' line" eval '! grep -q "did not stop" "$BELOG"'
    sl=$(num_after sleeps "$exitl") kick=$(num_after 'woken by kick' "$exitl") nic=$(num_after NIC "$exitl")
    to=$(num_after timeout "$exitl") sig=$(num_after signal "$exitl") missed=$(num_after 'missed kicks' "$exitl")
    t "exit line: sleeps ${sl:-?} > 0, woken by kick ${kick:-?} > 0" \
        eval 'isnum "$sl" && isnum "$kick" && [ "$sl" -gt 0 ] && [ "$kick" -gt 0 ]'
    t "exit line: missed kicks ${missed:-?} = 0 (virtio_user kicked every burst published under 'kick me')" [ "${missed:-x}" = 0 ]
    t "exit line: signal ${sig:-?} = 0 (no sleep broken by the watchdog's signal)" [ "${sig:-x}" = 0 ]
    t "exit line: one cause per sleep: ${sl:-?} = kick ${kick:-?} + NIC ${nic:-?} + hand-over ${h1:-?} + timeout ${to:-?} + signal ${sig:-?}" \
        eval 'isnum "$sl" && [ "$sl" = $((kick + nic + h1 + to + sig)) ]'
    read -r from to_g drops < <(sed -n 's/.*exit: from guest \([0-9]*\) packets, to guest \([0-9]*\) packets, \([0-9]*\) drops.*/\1 \2 \3/p' "$BELOG")
    t "vhost-xdp took what testpmd sent and gave back what it received: from guest ${from:-?} = $SUM_TX, to guest ${to_g:-?} = $SUM_RX, ${drops:-?} drops" \
        eval '[ "${from:-x}" = "$SUM_TX" ] && [ "${to_g:-x}" = "$SUM_RX" ] && [ "${drops:-x}" = 0 ]'
    [ "$FAILS" -eq 0 ] || diag "$BELOG" 30
fi

echo "1..$TAP_N"
[ "$FAILS" -eq 0 ]
