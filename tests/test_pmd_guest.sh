#!/usr/bin/env bash
# tests/test_pmd_guest.sh - DPDK's virtio PMD inside a QEMU guest, its virtio-net devices served by
# vhost-xdp --loopback: the guest half of the articles' picture (tests/build_guest.sh --pmd).
#
# One guest boot with three virtio-net ports, each on a vhost-xdp --loopback of its own (QEMU 7.2 waits
# for every vhost-user socket before it runs the guest, so all three listen from the start; --pmd-sleep
# keeps the idle ones cheap):
#   port 0  split ring, mergeable RX buffers (QEMU's defaults)      vhost-xdp with --trace=all
#   port 1  packed=on                                                vhost-xdp with --trace
#   port 2  mrg_rxbuf=off                                            vhost-xdp with --trace
# The guest's /init starts testpmd on port 0 from its kernel command line (vxpmd=io); the rest of the
# runs are commands written to its second serial port.  Checked:
#   1. io forwarding on port 0: after "start tx_first 4" (128 frames) the frames circulate (testpmd
#      received many times 128), vhost-xdp saw no kick after the device started and sent no interrupt
#      (the PMD polls; both sides set the "don't notify me" flags, seen in the ring view), and the
#      PMD took MRG_RXBUF but not EVENT_IDX;
#   2. testpmd stopped and started again in the same boot: the PMD resets the device (SET_STATUS 0),
#      QEMU stops the rings (GET_VRING_BASE) and sets them up again from slot 0 on the same
#      connection; the frames circulate again;
#   3. counts agree: over both runs vhost-xdp took from the guest exactly what testpmd sent, gave
#      back at most the 128 frames in flight more than testpmd received (testpmd stops reading first),
#      and counted as drops whatever it took and could not give back (nothing vanishes);
#   4. vhost-xdp killed (SIGKILL) under a running testpmd (txonly, split ring) and started again on
#      the same socket: QEMU reconnects and restarts each ring where its used->idx stands, and
#      testpmd's TX counter moves again;
#   5. packed=on (RING_PACKED negotiated) and mrg_rxbuf=off (MRG_RXBUF not negotiated): io forwarding
#      circulates, and the counts agree as in 3;
#   6. "quit": testpmd ends, the guest powers off, QEMU exits.
# Needs qemu-system-x86_64 and dpdk-testpmd (the image is built from Debian's dpdk-dev); missing ones
# skip (fail under CI=true).  About a minute and a half on a quiet 2-CPU machine (TCG).
set -u
. "$(dirname "$0")/lib.sh"

require "virtio-pmd guest test" qemu-system-x86_64 dpdk-testpmd
[ -x "$VX" ] || { not_ok "$VX is built (run make)"; done_testing; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/vx-pmd-guest.XXXXXX")
VX_PIDS=() QEMU_PID=
cleanup() {
    local p
    stop_pid "$QEMU_PID"
    for p in "${VX_PIDS[@]}"; do stop_pid "$p"; done
    if [ "$TAP_FAILED" -ne 0 ] || [ -n "${VX_SHOW_LOG:-}" ]; then diag; fi
    rm -rf "$dir"
}
on_exit cleanup

# diag: the guest's console lines (not the once-a-second counters) and the end of each vhost-xdp log.
diag() {
    local f
    echo "# --- guest console"
    tr -d '\r' 2>/dev/null <"$dir/g.serial" | grep -av '^VXCOUNT' | tail -n 40 | sed 's/^/#   /'
    tail -n 5 "$dir/g.qemu.log" 2>/dev/null | sed 's/^/#   qemu: /'
    for f in "$dir"/vx*.log; do
        [ -f "$f" ] || continue
        echo "# --- ${f##*/}"; grep -v 'stats:' "$f" | tail -n 8 | sed 's/^/#   /'
    done
}

# start_vx PORT LOG ARGS...: vhost-xdp --loopback on port PORT's socket; sets VXP[PORT].
declare -a VXP
listening() { awk -v p="$1" '$NF == p && $4 == "00010000" { f = 1 } END { exit !f }' /proc/net/unix; }
start_vx() {
    local port=$1 log=$2; shift 2
    rm -f "$dir/vx$port.sock"    # a socket file a killed vhost-xdp left behind
    "$VX" --socket "$dir/vx$port.sock" --loopback --pmd-sleep 50 "$@" </dev/null >"$log" 2>&1 &
    VXP[port]=$!
    VX_PIDS+=("${VXP[port]}")
    wait_for "vhost-xdp on $dir/vx$port.sock" 10 listening "$dir/vx$port.sock"
}
# stop_vx PORT: SIGTERM, wait: its exit lines are in its log.
stop_vx() { stop_pid "${VXP[$1]}"; }
# exit_count LOG WHAT: "from guest" or "to guest" packets in vhost-xdp's exit line.
exit_count() { sed -n "s/.*exit: .*$2 \([0-9]*\) packets.*/\1/p" "$1" | tail -n 1; }
drops() { sed -n 's/.*exit: from guest .*, \([0-9]*\) drops.*/\1/p' "$1" | tail -n 1; }

# counts_after MARK: the rx= of the guest's last VXCOUNT line after MARK (empty if none).
rx_after() { pmd_field rx "$(pmd_line "$1" '^VXCOUNT ')"; }
tx_after() { pmd_field tx "$(pmd_line "$1" '^VXCOUNT ')"; }
# moving MARK FIELD MIN: a VXCOUNT line after MARK has FIELD above MIN.
moving() { local v; v=$(pmd_field "$2" "$(pmd_line "$1" '^VXCOUNT ')"); isnum "$v" && [ "$v" -gt "$3" ]; }

# run_io PORT WHAT: start "run io PORT 64" (unless WHAT is "boot": the kernel command line started
# it), wait until more than 20 x 128 frames came back, stop it; sets END (the "VXRUN end" line).
TXFIRST_FRAMES=128    # vxtxfirst=4 (the default) bursts of 32
run_io() {
    local port=$1 what=$2 mark
    mark=$(pmd_mark)
    [ "$what" = boot ] || pmd_send "run io $port 64"
    END=
    pmd_wait "$mark" "^VXRUN started drv=pmd mode=io port=$port " 120 || return 1
    wait_for "port $port's frames to circulate" 60 moving "$mark" rx $((20 * TXFIRST_FRAMES)) || return 1
    mark=$(pmd_mark)
    pmd_send stop
    pmd_wait "$mark" '^VXRUN end ' 60 || return 1
    END=$(pmd_line "$mark" '^VXRUN end ')
}
# circulated: the run's testpmd received many times the 128 frames it injected, and exited cleanly.
circulated() {
    local rx tx rc
    rx=$(pmd_field rx "$END") tx=$(pmd_field tx "$END") rc=$(pmd_field rc "$END")
    isnum "$rx" && isnum "$tx" && [ "$rc" = 0 ] && [ "$rx" -gt $((20 * TXFIRST_FRAMES)) ] && [ "$tx" -ge "$rx" ]
}
# agree LOG TX RX [RUNS]: vhost-xdp's exit lines against testpmd's totals: from guest = TX exactly;
# every frame taken from the guest was either given back to it or counted as a drop (to guest +
# drops = from guest: nothing vanishes); to guest between RX and RX + 128 x RUNS (the frames in
# flight when testpmd stopped reading: delivered, never read), and the drops no more than those
# 128 x RUNS either. (Drops do happen, rarely: when testpmd stops, the device is reset and the RX
# ring can stop, or fill, while a burst from the TX ring is on its way; seen once in CI, 32 frames.)
agree() {
    local from to d
    from=$(exit_count "$1" 'from guest') to=$(exit_count "$1" 'to guest') d=$(drops "$1")
    isnum "$from" && isnum "$to" && isnum "$d" && [ "$from" = "$2" ] && [ $((to + d)) = "$from" ] &&
        [ "$d" -le $((${4:-1} * TXFIRST_FRAMES)) ] &&
        [ "$to" -ge "$3" ] && [ "$to" -le $(($3 + ${4:-1} * TXFIRST_FRAMES)) ]
}
features() { grep -a '<- SET_FEATURES' "$1" | tail -n 1 | sed 's/.*(\(.*\)).*/\1/'; }
has_feature() { case "|$(features "$1")|" in *"|$2|"*) return 0 ;; esac; return 1; }

# === 0. The image and the three backends ===
if "$TESTS_DIR/build_guest.sh" --pmd "$PMD_GUEST" 2>"$dir/build.log"; then
    ok "virtio-pmd guest image built ($(tail -n 1 "$dir/build.log" | sed 's/^build_guest.sh: //'))"
else
    not_ok "build the virtio-pmd guest (tests/build_guest.sh --pmd)"; sed 's/^/#   /' "$dir/build.log"; done_testing
fi
check "three vhost-xdp --loopback listen (ports 0, 1, 2)" \
    eval 'start_vx 0 "$dir/vx0.log" --trace=all && start_vx 1 "$dir/vx1.log" --trace && start_vx 2 "$dir/vx2.log" --trace' ||
    done_testing

# === 1. Boot; io forwarding on port 0 from the kernel command line ===
pmd_nic vhost-user "$dir/vx0.sock"
pmd_nic vhost-user "$dir/vx1.sock" ,packed=on
pmd_nic vhost-user "$dir/vx2.sock" ,mrg_rxbuf=off
t0=$SECONDS
start_pmd_guest "$dir" g "vxpmd=io vxport=0 vxsize=64"
check "the guest finds 3 ports and binds them to uio_pci_generic (VXREADY)" pmd_wait 0 '^VXREADY' 180 || done_testing
echo "# $(pmd_line 0 '^VXPORTS')"
if run_io 0 boot && circulated; then
    ok "port 0 (split): testpmd's io frames circulate ($END, $((SECONDS - t0)) s after QEMU started)"
    run1=$END
else
    not_ok "port 0 (split): testpmd's io frames circulate (${END:-no VXRUN end line})"; done_testing
fi
check "the PMD negotiated MRG_RXBUF and not EVENT_IDX (it polls): $(features "$dir/vx0.log")" \
    eval 'has_feature "$dir/vx0.log" MRG_RXBUF && ! has_feature "$dir/vx0.log" EVENT_IDX'

# === 2. testpmd stopped and started again: the PMD resets the device ===
# The ring view (SIGUSR1) while it runs: avail->flags NO_INTERRUPT (the PMD polls the used ring) and
# used->flags NO_NOTIFY (we poll the avail ring).
mark=$(pmd_mark)
pmd_send "run io 0 64"
ringview=
if pmd_wait "$mark" '^VXRUN started drv=pmd mode=io port=0 ' 120 &&
   wait_for "port 0's frames to circulate" 60 moving "$mark" rx $((20 * TXFIRST_FRAMES)); then
    kill -USR1 "${VXP[0]}"
    wait_for "the ring view" 5 grep -q 'ring 1 (TX' "$dir/vx0.log"
    sleep 0.5
    ringview=$(sed -n '/ring view:/,$p' "$dir/vx0.log" | grep -E 'avail->idx|used->idx' | tr -s ' ')
    mark=$(pmd_mark)
    pmd_send stop
    pmd_wait "$mark" '^VXRUN end ' 60 && END=$(pmd_line "$mark" '^VXRUN end ')
fi
if circulated; then ok "testpmd started again in the same boot: its frames circulate ($END)"; run2=$END
else not_ok "testpmd started again in the same boot: its frames circulate (${END:-no VXRUN end line})"; run2=; fi
no_notify() { [ "$(echo "$ringview" | grep -c 'avail->flags 0x0001 NO_INTERRUPT')" = 2 ] &&
              [ "$(echo "$ringview" | grep -c 'used->flags 0x0001 NO_NOTIFY')" = 2 ]; }
check "ring view: avail->flags NO_INTERRUPT and used->flags NO_NOTIFY on both rings" no_notify ||
    echo "$ringview" | sed 's/^/#   /'
# The reset, in vhost-xdp's trace: between the two runs, on one connection, SET_STATUS 0, both rings
# stopped by GET_VRING_BASE, then features, memory and rings again, each from slot 0.
reset_seen() {
    local t=$dir/vx0.log
    ! grep -q 'frontend disconnected' "$t" &&
        [ "$(grep -c 'SET_STATUS (39) .* u64=0$' "$t")" -ge 1 ] &&
        [ "$(grep -c 'ring [01] stopped (GET_VRING_BASE)' "$t")" -ge 2 ] &&
        [ "$(grep -c '<- SET_FEATURES' "$t")" -ge 2 ] &&
        [ "$(grep -c 'ring [01] started: .*last_avail_idx 0,' "$t")" -ge 4 ]
}
check "--trace: the PMD's reset (SET_STATUS 0, GET_VRING_BASE x2) and a new set-up from slot 0, one connection" reset_seen
# Kicks after the device started, and calls: none (a kick or two per ring while it starts).
late_kicks() {
    awk '/SET_STATUS \(39\) .* u64=15$/ { on = 1; next } /SET_STATUS \(39\) .* u64=0$/ { on = 0 }
         on && /trace: ring [01]: kick/ { n++ } END { print n + 0 }' "$dir/vx0.log"
}
calls() { grep -cE 'trace: ring [01]: (call|[0-9]+ more calls)' "$dir/vx0.log"; }
check "no interrupt sent ($(calls) call lines) and at most one kick per ring and start ($(late_kicks))" \
    eval '[ "$(calls)" = 0 ] && [ "$(late_kicks)" -le 4 ]'

# === 3. Counts: vhost-xdp's exit lines against testpmd's totals over both runs ===
stop_vx 0
tx12=$(( $(pmd_field tx "$run1") + $(pmd_field tx "${run2:-tx=0}") ))
rx12=$(( $(pmd_field rx "$run1") + $(pmd_field rx "${run2:-rx=0}") ))
check "port 0: vhost-xdp from guest $(exit_count "$dir/vx0.log" 'from guest') = testpmd TX $tx12; to guest $(exit_count "$dir/vx0.log" 'to guest') + $(drops "$dir/vx0.log") drops = that, within 2 x 128 of testpmd RX $rx12" \
    agree "$dir/vx0.log" "$tx12" "$rx12" 2

# === 4. vhost-xdp killed under a running testpmd (txonly: it keeps sending), and started again ===
# (io forwarding would not do: while the backend is away QEMU finishes what is in the TX ring itself,
# so the frames that were circulating are gone and nothing is left to forward.)
check "vhost-xdp started again on port 0's socket" start_vx 0 "$dir/vx0-b.log" --trace
wait_for "QEMU to reconnect" 30 grep -q 'frontend connected' "$dir/vx0-b.log"
mark=$(pmd_mark)
pmd_send "run txonly 0 64"
if pmd_wait "$mark" '^VXRUN started drv=pmd mode=txonly port=0 ' 120 && wait_for "testpmd to send" 60 moving "$mark" tx 10000; then
    kill -KILL "${VXP[0]}"; wait "${VXP[0]}" 2>/dev/null
    sleep 3    # testpmd's statistics come every 1-2 s: the counter stops
    stalled=$(tx_after "$mark")
    kmark=$(pmd_mark)
    if start_vx 0 "$dir/vx0-c.log" --trace && wait_for "testpmd's TX counter to move again" 60 moving "$kmark" tx "${stalled:-0}"; then
        ok "after SIGKILL and a restart of vhost-xdp, testpmd sends again (TX $stalled -> $(tx_after "$kmark"))"
    else
        not_ok "after SIGKILL and a restart of vhost-xdp, testpmd sends again (TX stuck at ${stalled:-?})"
    fi
    resumed() { grep -Eq 'ring 1 started: .*last_avail_idx [1-9][0-9]*, used idx [1-9]' "$dir/vx0-c.log"; }
    check "QEMU restarted the TX ring where its used->idx stood: $(grep -o 'ring 1 started: [^,]*, [^,]*, [^,]*' "$dir/vx0-c.log" | head -n 1)" resumed
    mark=$(pmd_mark)
    pmd_send stop
    pmd_wait "$mark" '^VXRUN end ' 60
    END=$(pmd_line "$mark" '^VXRUN end ')
    stop_vx 0
    got=$(exit_count "$dir/vx0-c.log" 'from guest')
    check "the run ends cleanly ($END); the restarted vhost-xdp took ${got:-no} frames from it" \
        eval '[ "$(pmd_field rc "$END")" = 0 ] && isnum "$got" && [ "$got" -gt 0 ]'
else
    not_ok "testpmd txonly on port 0 before the kill"
fi

# === 5. Packed ring, and no mergeable RX buffers ===
for port in 1 2; do
    case $port in 1) what="packed=on" ;; 2) what="mrg_rxbuf=off" ;; esac
    if run_io "$port" cmd && circulated; then ok "port $port ($what): testpmd's io frames circulate ($END)"
    else not_ok "port $port ($what): testpmd's io frames circulate (${END:-no VXRUN end line})"; continue; fi
    stop_vx "$port"
    check "port $port: vhost-xdp from guest $(exit_count "$dir/vx$port.log" 'from guest') = testpmd TX $(pmd_field tx "$END"), to guest (+ drops) within 128 of RX $(pmd_field rx "$END")" \
        agree "$dir/vx$port.log" "$(pmd_field tx "$END")" "$(pmd_field rx "$END")"
done
check "port 1 (packed=on): RING_PACKED negotiated ($(features "$dir/vx1.log"))" has_feature "$dir/vx1.log" RING_PACKED
check "port 2 (mrg_rxbuf=off): MRG_RXBUF not negotiated ($(features "$dir/vx2.log"))" eval '! has_feature "$dir/vx2.log" MRG_RXBUF'

# === 6. quit ===
mark=$(pmd_mark)
pmd_send quit
gone() { ! kill -0 "$QEMU_PID" 2>/dev/null; }
check "quit: the guest powers off and QEMU exits" eval 'pmd_wait "$mark" "^VXBYE" 30 && wait_for "QEMU to exit" 30 gone'
echo "# $((SECONDS - t0)) s from QEMU's start"
done_testing
