#!/usr/bin/env bash
# tests/test_dpdk_reconnect.sh - vhost-xdp killed under DPDK's virtio_user, started again: the traffic resumes.
#
# DPDK testpmd's virtio_user listens (server=1) and vhost-xdp connects to it (--client --loopback).  Three
# runs, one testpmd each: packed rings (virtio 1.2 §2.8) without and with MRG_RXBUF, and split rings (§2.7)
# with it (virtio_user's default; IN_ORDER too, its default everywhere).  In each run:
#   1. testpmd injects 32 bursts of 64-byte packets ("start tx_first 32") and forwards in io mode, so they go
#      round the loop through vhost-xdp; once vhost-xdp's --stats says they are moving, it is killed with
#      SIGKILL, in mid-flow, and a new vhost-xdp is started.
#   2. virtio_user accepts the new connection and resumes its session without SET_OWNER (DPDK 22.11,
#      virtio_user_dev_server_reconnect): asserted on the new process's --trace (no SET_OWNER received, and
#      its "before SET_OWNER: taking it as the owner" line, once; the first process did receive SET_OWNER).
#   3. Where each ring starts again.  Packed: virtio_user resets its packed rings and drops what was in flight,
#      so SET_VRING_BASE says slot 0 wrap 1 and the descriptors agree: the ring starts at slot 0, and no
#      "is not where the ring stands" line.  Split: virtio_user keeps its rings but sends base 0; vhost-xdp
#      resumes at used->idx instead (virtqueue.c, "Ring recovery"): the "split ring: SET_VRING_BASE 0 is not
#      where the ring stands (used->idx U)" line for each ring whose used->idx is not 0.
#   4. The traffic resumes: testpmd injects again; its counters grow by more than the 1024 packets injected
#      (they went round) and still grow a second later; no RX or TX errors.
#   5. The counts agree, after a drain (testpmd stops forwarding and receives what is left for a second):
#      - packed: nothing circulates between the reconnect and the new injection (virtio_user dropped it),
#        so between testpmd's sample after the reconnect (S1) and its last one (S2), per direction:
#        vhost-xdp's "from guest" = testpmd's TX-packets S2 - S1, "to guest" = RX-packets S2 - S1, and
#        "to guest" + drops = "from guest";
#      - split: what was in flight at the kill goes round again at once, so the counts are the whole run's:
#        every packet testpmd sent was completed by the first process (the TX ring's used->idx when the
#        second one starts) or taken by the second, and every packet testpmd received was given by one of
#        them.  used->idx is 16 bits, so: TX-packets = used->idx of ring 1 + "from guest" (mod 65536),
#        RX-packets = used->idx of ring 0 + "to guest" (mod 65536).  A resume at the wrong index would be
#        off by up to a ring's size (256), which the modulus does not hide.
#   6. testpmd quits cleanly; the second vhost-xdp (still trying to reconnect) exits 0 on SIGTERM.
#
# Environment: CI=true: a missing dpdk-testpmd is a failure, not a skip.
# testpmd runs under `stdbuf -oL` so that its log can be waited on line by line (its stdout is otherwise
# block-buffered when redirected); it is driven through a fifo on stdin that this script holds open.
set -u
. "$(dirname "$0")/lib.sh"

has() { grep -q -- "$2" "$1" 2>/dev/null; }
# count FILE TEXT: lines of FILE containing TEXT (0 if none, or no file).
count() { local n; n=$(grep -c -- "$2" "$1" 2>/dev/null); echo "${n:-0}"; }

# lib.sh: t (check that counts FAILS, the exit status), gone, listening, need_testpmd.
need_testpmd "DPDK virtio_user frontend (server=1)"
if [ ! -x "$VX" ]; then
    not_ok "vhost-xdp is built ($VX)"
    exit 1
fi
FE_CPU=$(($(nproc) > 1 ? 1 : 0))    # testpmd's two lcores; vhost-xdp's poll thread gets the other CPU

TMP=$(mktemp -d "${TMPDIR:-/tmp}/vx-dpdk-rc.XXXXXX")
FE_PID='' BE_PID=''
cleanup() {
    exec 9>&-
    stop_pid "$BE_PID"
    stop_pid "$FE_PID"
    rm -rf "$TMP" "$DPDK_RUNDIR/vx-rc-$$"
}
on_exit cleanup

diag() { # diag FILE N: FILE as TAP comments, at most its first and last N lines
    echo "# ---- ${1##*/}"
    awk -v n="$2" '{ l[NR] = $0 } END { for (i = 1; i <= NR; i++)
        if (i <= n || i > NR - n) print "#   " l[i]; else if (i == n + 1) print "#   ..." }' "$1" 2>/dev/null
}

# stats LOG K: the K-th "NIC statistics" block of a testpmd log as "RX-packets RX-errors TX-packets TX-errors"
stats() {
    awk -v k="$2" '/NIC statistics for port/ { n++; blk = n == k; next } /^ *#+ *$/ { blk = 0 }
        blk { for (i = 1; i < NF; i++) if ($i ~ /:$/) v[$i] = $(i + 1) }
        END { print (v["RX-packets:"] == "" ? "?" : v["RX-packets:"]), (v["RX-errors:"] == "" ? "?" : v["RX-errors:"]),
                    (v["TX-packets:"] == "" ? "?" : v["TX-packets:"]), (v["TX-errors:"] == "" ? "?" : v["TX-errors:"]) }' "$1"
}
# moving LOG: vhost-xdp's --stats has reported packets from the guest (a rate other than 0 pps).
moving() { grep -q 'stats: from guest [0-9.]*[1-9][0-9.]* [kM]*pps' "$1" 2>/dev/null; }
# sampled LOG N: testpmd has printed N "NIC statistics" blocks.
sampled() { [ "$(count "$1" 'NIC statistics for port')" -ge "$2" ]; }
# used_idx LOG RING: the used idx the ring started at in the second process (its "ring N started" line).
used_idx() { sed -n "s/.*trace: ring $2 started: .* used idx \([0-9]*\),.*/\1/p" "$1" | head -n 1; }

# run_one PACKED_VQ MRG_RXBUF
run_one() {
    local packed=$1 mrg=$2 rc name="packed_vq=$1 mrg_rxbuf=$2"
    local sock=$TMP/p$packed-m$mrg.sock log=$TMP/testpmd-p$packed-m$mrg.log
    local be1=$TMP/vhost-xdp-1-p$packed-m$mrg.log be2=$TMP/vhost-xdp-2-p$packed-m$mrg.log fails_before=$FAILS
    rm -f "$TMP/fe.in"
    mkfifo "$TMP/fe.in"
    exec 9<>"$TMP/fe.in"
    stdbuf -oL dpdk-testpmd --lcores "0@$FE_CPU,1@$FE_CPU" --no-huge -m 256 --no-pci --file-prefix="vx-rc-$$" \
        --vdev "net_virtio_user0,path=$sock,server=1,queues=1,packed_vq=$packed,mrg_rxbuf=$mrg" \
        -- -i --nb-cores=1 --total-num-mbufs=16384 --forward-mode=io <&9 >"$log" 2>&1 &
    FE_PID=$!
    if ! wait_for "testpmd ($name) to listen" 20 listening "$sock"; then
        not_ok "$name: testpmd's virtio_user listens on its socket (server=1)"; FAILS=$((FAILS + 1))
        diag "$log" 20; stop_pid "$FE_PID"; FE_PID=''; exec 9>&-
        return
    fi

    # 1. The first vhost-xdp, traffic, SIGKILL in mid-flow.
    "$VX" --socket "$sock" --client --loopback --trace --stats 1 </dev/null >"$be1" 2>&1 &
    BE_PID=$!
    wait_for "the first vhost-xdp's rings to start" 20 has "$be1" 'trace: ring 1 started'
    printf '%s\n' "set txpkts 64" "start tx_first 32" >&9
    t "$name: traffic flows through the first vhost-xdp (its --stats reports packets)" \
        wait_for "packets through the first vhost-xdp" 20 moving "$be1"
    kill -KILL "$BE_PID" 2>/dev/null
    wait "$BE_PID" 2>/dev/null
    BE_PID=''

    # 2. The second one: virtio_user resumes its session.
    "$VX" --socket "$sock" --client --loopback --trace --stats 1 </dev/null >"$be2" 2>&1 &
    BE_PID=$!
    t "$name: virtio_user reconnects to a new vhost-xdp after SIGKILL and both rings start again" \
        wait_for "the second vhost-xdp's rings to start" 30 has "$be2" 'trace: ring 1 started'
    local owner1 owner2 taken
    owner1=$(count "$be1" '<- SET_OWNER (3)') owner2=$(count "$be2" '<- SET_OWNER (3)')
    taken=$(count "$be2" 'before SET_OWNER: taking it as the owner')
    echo "# $name: $(grep -m1 'before SET_OWNER' "$be2" | sed 's/^vhost-xdp: //')"
    t "$name: the session is resumed without SET_OWNER (first process received $owner1, second $owner2) and taken as the owner once (logged $taken times)" \
        eval '[ "$owner1" = 1 ] && [ "$owner2" = 0 ] && [ "$taken" = 1 ]'

    # 3. Where the rings start again.
    local u0 u1 r0 r1 stale
    u0=$(used_idx "$be2" 0) u1=$(used_idx "$be2" 1)
    grep 'trace: ring [01] started\|is not where the ring stands' "$be2" | sed 's/^vhost-xdp: /# /'
    if [ "$packed" = 1 ]; then
        stale=$(count "$be2" 'is not where the ring stands')
        r0=$(count "$be2" 'trace: ring 0 started: size 256 packed, last_avail_idx 0,')
        r1=$(count "$be2" 'trace: ring 1 started: size 256 packed, last_avail_idx 0,')
        t "$name: both packed rings start at slot 0, where virtio_user reset them, and the descriptors agree with its base (no correction: $stale)" \
            eval '[ "$r0" = 1 ] && [ "$r1" = 1 ] && [ "$stale" = 0 ]'
    else
        local want=0 got
        [ "${u0:-0}" != 0 ] && want=$((want + 1))
        [ "${u1:-0}" != 0 ] && want=$((want + 1))
        got=$(count "$be2" 'split ring: SET_VRING_BASE 0 is not where the ring stands (used->idx')
        r0=$(count "$be2" "trace: ring 0 started: size 256, last_avail_idx ${u0:-x}, used idx ${u0:-x},")
        r1=$(count "$be2" "trace: ring 1 started: size 256, last_avail_idx ${u1:-x}, used idx ${u1:-x},")
        t "$name: virtio_user sends base 0 for its running split rings; vhost-xdp resumes each at used->idx (${u0:-?}, ${u1:-?}), saying so for each that is not 0 ($got of $want)" \
            eval 'isnum "$u0" && isnum "$u1" && [ "$r0" = 1 ] && [ "$r1" = 1 ] && [ "$got" = "$want" ]'
    fi

    # 4. Inject again, watch it circulate, drain, and sample.
    printf '%s\n' stop "show port stats all" "start tx_first 32" >&9
    wait_for "testpmd's sample after the reconnect" 10 sampled "$log" 1
    sleep 2
    echo "show port stats all" >&9
    sleep 1
    printf '%s\n' "show port stats all" stop "set fwd rxonly" start >&9
    sleep 1
    printf '%s\n' stop "show port stats all" >&9
    local sampled_all=0
    wait_for "testpmd's last sample" 15 sampled "$log" 4 && sampled_all=1
    # testpmd quits first, while its backend is still there: the other way round, its vhost-user
    # messages at quit can meet a closed socket, and DPDK 22.11's virtio_user dies of SIGPIPE (141).
    echo quit >&9
    if wait_for "testpmd ($name) to quit" 10 gone "$FE_PID"; then wait "$FE_PID"; rc=$?; else stop_pid "$FE_PID"; rc=timeout; fi
    FE_PID=''
    exec 9>&-
    rm -rf "$DPDK_RUNDIR/vx-rc-$$"
    kill -TERM "$BE_PID" 2>/dev/null
    local vrc
    if wait_for "the second vhost-xdp to exit" 5 gone "$BE_PID"; then wait "$BE_PID"; vrc=$?; else vrc=timeout; fi
    stop_pid "$BE_PID"; BE_PID=''
    t "$name: the second vhost-xdp exits 0 on SIGTERM (got $vrc)" [ "$vrc" = 0 ]
    t "$name: testpmd quit cleanly (exit status $rc)" [ "$rc" = 0 ]
    t "$name: virtio_user says the reconnection succeeded" has "$log" 'reconnection succeeds'

    local rx1 e1 tx1 f1 rxa rxb rx2 e2 tx2 f2 from to drops
    read -r rx1 e1 tx1 f1 <<<"$(stats "$log" 1)"
    read -r rxa _ _ _ <<<"$(stats "$log" 2)"
    read -r rxb _ _ _ <<<"$(stats "$log" 3)"
    read -r rx2 e2 tx2 f2 <<<"$(stats "$log" 4)"
    read -r from to drops < <(sed -n 's/.*exit: from guest \([0-9]*\) packets, to guest \([0-9]*\) packets, \([0-9]*\) drops.*/\1 \2 \3/p' "$be2")
    echo "# $name: testpmd RX-packets/TX-packets after the reconnect $rx1/$tx1, then RX $rxa, $rxb, at the end $rx2/$tx2;" \
         "second vhost-xdp: from guest ${from:-?}, to guest ${to:-?}, ${drops:-?} drops"
    t "$name: testpmd printed its 4 samples" [ "$sampled_all" = 1 ]
    t "$name: the traffic resumes: RX-packets grew by more than the 1024 injected ($rx1 -> $rx2) and was still growing ($rxa -> $rxb)" \
        eval 'isnum "$rx1" && isnum "$rx2" && isnum "$rxa" && isnum "$rxb" && [ $((rx2 - rx1)) -gt 1024 ] && [ "$rxb" -gt "$rxa" ]'
    t "$name: no RX or TX errors ($e1/$f1, $e2/$f2)" eval '[ "$e1/$f1/$e2/$f2" = 0/0/0/0 ]'
    t "$name: the second vhost-xdp gave back what it took: to guest ${to:-?} + ${drops:-?} drops = from guest ${from:-?}" \
        eval 'isnum "$from" && isnum "$to" && isnum "$drops" && [ $((to + drops)) = "$from" ]'
    if [ "$packed" = 1 ]; then
        t "$name: everything testpmd sent after the reconnect reached the second vhost-xdp: TX-packets $tx2 - $tx1 = from guest ${from:-?}" \
            eval 'isnum "$tx1" && isnum "$tx2" && isnum "$from" && [ $((tx2 - tx1)) = "$from" ]'
        t "$name: testpmd received what the second vhost-xdp gave: RX-packets $rx2 - $rx1 = to guest ${to:-?}" \
            eval 'isnum "$rx1" && isnum "$rx2" && isnum "$to" && [ $((rx2 - rx1)) = "$to" ]'
    else
        t "$name: every packet testpmd sent was completed by the first vhost-xdp or taken by the second: TX-packets $tx2 = used->idx ${u1:-?} + from guest ${from:-?} (mod 65536)" \
            eval 'isnum "$tx2" && isnum "$u1" && isnum "$from" && [ $(((tx2 - u1 - from) % 65536)) = 0 ]'
        t "$name: every packet testpmd received came from one of them: RX-packets $rx2 = used->idx ${u0:-?} + to guest ${to:-?} (mod 65536)" \
            eval 'isnum "$rx2" && isnum "$u0" && isnum "$to" && [ $(((rx2 - u0 - to) % 65536)) = 0 ]'
    fi
    if [ "$FAILS" -ne "$fails_before" ]; then
        diag "$log" 25
        diag "$be1" 10
        diag "$be2" 40
    fi
}

run_one 1 0     # packed rings
run_one 1 1     # packed rings, MRG_RXBUF
run_one 0 1     # split rings, MRG_RXBUF (virtio_user's defaults)

echo "1..$TAP_N"
[ "$FAILS" -eq 0 ]
