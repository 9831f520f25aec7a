#!/usr/bin/env bash
# tests/test_qemu_adaptive.sh - QEMU guests (the Linux guest's own virtio-net driver) through vhost-xdp
# --iface VETH --pmd-mode adaptive: pings at three rates and TCP both ways, every packet accounted for,
# with the poll thread asleep between them.
#
# Four guests boot at once (tests/build_guest.sh, agent mode), one per ring layout and kick scheme:
#   split  event_idx=on     the guest kicks when avail->idx passes avail_event (QEMU 7.2 + Linux ack
#                           EVENT_IDX by default): vhost-xdp arms by setting avail_event
#   split  event_idx=off    the guest kicks unless used->flags has VRING_USED_F_NO_NOTIFY
#   packed event_idx=on     packed rings (virtio 1.2 §2.8): the device event suppression area, ENABLE
#   packed event_idx=off    or DISABLE (vhost-xdp never uses DESC, so both cases read the same flags)
# Each has a vhost-xdp of its own (--iface on a veth made here, --pmd-mode adaptive --stats 1) and a peer
# in a network namespace of its own (10.0.0.1, the guest 10.0.0.2; names carry this shell's pid).
# Per guest, from the peer's namespace, each started once the poll thread is seen asleep (its state in
# /proc is S: a polling thread is always running, R; in adaptive mode it sleeps only in poll()):
#   1. ping -i 0.001 -c 200, ping -i 0.1 -c 5, ping -i 2 -c 2 (each request wakes the thread through the
#      AF_XDP socket, each reply through the guest's kick): every request answered, as the peer's kernel
#      counts them (ping_check says why not ping's own count);
#   2. tests/tcpcheck, 4 MiB guest -> peer and 4 MiB peer -> guest, every byte checked by the receiver
#      (the peer -> guest direction is where the guest's RX ring runs dry and vhost-xdp sleeps on the RX
#      ring's kick, "buffers added", instead of the socket);
#   3. the negotiated features: EVENT_IDX (bit 29) and RING_PACKED (bit 34) as the device asked;
#   4. the exit lines (after SIGTERM, below): sleeps > 0, woken by kick > 0 and by NIC > 0, signal 0 (the
#      wake-up fd did every wake-up), missed kicks 0 (every buffer the guest published while kicks were
#      on came with a kick), and one cause counted per sleep;
#   5. SIGTERM while the thread sleeps, the guest still connected: exit status 0 within 5 s (it takes
#      milliseconds; the deadline only catches a hang), and the sleep was ended by the wake-up eventfd:
#      "hand-over" in the exit line is above the last --stats line's.
# About "missed kicks 0" under TCG: the guest's driver publishes its avail index, issues a full barrier,
# reads our flag and kicks, all in one stretch of its vCPU's code; a kick reaches vhost-xdp through an
# eventfd QEMU writes for the guest's notify write (an emulated ioeventfd under TCG).  A false "missed
# kick" needs that vCPU thread to stop for longer than the 100 ms sleep timeout between its avail write
# and its notify write, and even then vhost-xdp looks at the kick fd once more before it counts one.
#
# Needs root (netns, veth, XDP), qemu-system-x86_64, the guest of tests/build_guest.sh and tests/tcpcheck
# (make).  A missing one skips (fails under CI=true).  No timing is asserted: every wait is on a
# condition with a deadline.  About 30 s on a 2-CPU machine at load 4-5, half of it the four TCG boots.
# VX_QA_KEEP=DIR keeps the logs there.
set -u
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || missing "QEMU guests through --iface in adaptive mode: needs root (netns, veth, XDP)"
require "QEMU guests through --iface in adaptive mode" qemu-system-x86_64 ip busybox
[ -x "$VX" ] || { not_ok "vhost-xdp is built ($VX)"; done_testing; }
TCPCHECK=$TESTS_DIR/tcpcheck
[ -x "$TCPCHECK" ] || { not_ok "tests/tcpcheck is built (make)"; done_testing; }
GUEST=${VX_GUEST_DIR:-$TESTS_DIR/guest}
"$TESTS_DIR/build_guest.sh" "$GUEST" 2>/dev/null || missing "test guest (tests/build_guest.sh failed)"
N=$((4 * 1024 * 1024))

ID=$$
dir=$(mktemp -d "${TMPDIR:-/tmp}/vx-qa-$ID.XXXXXX")
# guest k: name, -device options, what the driver must have negotiated (EVENT_IDX bit 29, RING_PACKED bit 34)
NAMES=(split-evidx split-noevidx packed-evidx packed-noevidx)
DEVOPTS=(",event_idx=on" ",event_idx=off" ",packed=on,event_idx=on" ",packed=on,event_idx=off")
WANT=(10 00 11 01)
declare -a VXP QP MADE
cleanup() {
    local k
    for k in 0 1 2 3; do stop_pid "${QP[k]:-}"; stop_pid "${VXP[k]:-}"; done
    for k in 0 1 2 3; do
        [ -n "${MADE[k]:-}" ] || continue
        ip link del "vxqh$ID$k" 2>/dev/null
        ip netns del "vx-qa-$ID-$k" 2>/dev/null
    done
    [ -n "${VX_QA_KEEP:-}" ] && mkdir -p "$VX_QA_KEEP" && cp "$dir"/*.log "$dir"/*.serial "$VX_QA_KEEP"/ 2>/dev/null
    rm -rf "$dir"
}
on_exit cleanup

# slept K: lib.sh's poll_slept for vhost-xdp K: S when its poll thread was seen asleep within 20 s.
slept() { poll_slept "${VXP[$1]}" 20; }

# ---- set-up: for each guest a netns + veth, a vhost-xdp on the veth, and the guest
for k in 0 1 2 3; do
    ns=vx-qa-$ID-$k host=vxqh$ID$k peer=vxqp$ID$k
    MADE[k]=1
    if ! { ip netns add "$ns" &&
           ip link add "$host" numrxqueues 1 numtxqueues 1 type veth peer name "$peer" numrxqueues 1 numtxqueues 1 &&
           ip link set "$peer" netns "$ns" && ip link set "$host" up && ip -n "$ns" link set lo up &&
           ip -n "$ns" link set "$peer" up && ip -n "$ns" addr add 10.0.0.1/24 dev "$peer"; }; then
        not_ok "${NAMES[k]}: netns $ns and veth $host <-> $peer"; done_testing
    fi
    "$VX" --socket "$dir/$k.sock" --iface "$host" --pmd-mode adaptive --stats 1 </dev/null >"$dir/vx-$k.log" 2>&1 &
    VXP[k]=$!
done
for k in 0 1 2 3; do
    wait_for "vhost-xdp ${NAMES[k]} to listen" 15 grep -q "listening on" "$dir/vx-$k.log" ||
        { not_ok "${NAMES[k]}: vhost-xdp --iface vxqh$ID$k --pmd-mode adaptive listens"; diag_logs "$dir/vx-$k.log"; done_testing; }
done
ok "four vhost-xdp --iface VETH --pmd-mode adaptive, each with a peer in its own netns"
t0=$SECONDS
for k in 0 1 2 3; do
    GUEST_AGENT=$dir/g$k start_guest "$dir" "g$k" "$dir/$k.sock" agent "${DEVOPTS[k]}" "" "vxip=10.0.0.2/24 vxpeer=10.0.0.1"
    QP[k]=$QEMU_PID
done
booted=1
for k in 0 1 2 3; do
    wait_for "guest ${NAMES[k]}" 240 grep -aqs "VXAGENT ready" "$dir/g$k.serial" ||
        { not_ok "guest ${NAMES[k]} boots into agent mode"; diag_logs "$dir/g$k.serial" "$dir/g$k.qemu.log" "$dir/vx-$k.log"; booted=0; }
done
[ "$booted" = 1 ] || done_testing
ok "four guests booted in parallel ($((SECONDS - t0)) s, $GUEST_ACCEL)"

# ---- the checks, one background job per guest; each writes "PASS text" / "FAIL text" / "# text" lines
# to DIR/K.res, replayed as TAP afterwards in order.
in_ns() { local k=$1; shift; ip netns exec "vx-qa-$ID-$k" "$@"; }
res() { echo "$2" >>"$dir/$1.res"; }
verdict() { local k=$1 what=$2; shift 2; if "$@"; then res "$k" "PASS $what"; else res "$k" "FAIL $what"; return 1; fi; }

# icmp K FIELD: a counter of the Icmp lines of /proc/net/snmp in the peer's netns (OutEchos: requests
# sent, InEchoReps: replies received).
icmp() { in_ns "$1" cat /proc/net/snmp | awk -v f="$2" '$1 == "Icmp:" { if (!n) { for (i = 2; i <= NF; i++) if ($i == f) n = i } else { print $n; exit } }'; }
# ping_check K ARGS...: ping the guest from the peer's netns, once the thread sleeps; count the requests
# and replies where the peer's kernel counts them.  ping is busybox's (the guest needs busybox-static
# anyway; Debian's iputils ping is not always installed), which sets its socket's receive buffer to about
# 7 KB: a TCG guest that was kept off its CPU for a while answers a 1 ms ping train in batches of tens of
# replies, and the socket drops what does not fit: ping then says "10% packet loss" for replies that did
# reach the peer.  So "received" is the kernel's count of echo replies (Icmp InEchoReps), as "sent" is its
# count of echo requests (OutEchos); ping's own summary is shown beside them.
ping_check() {
    local k=$1 s out tx0 rx0 tx rx; shift
    s=$(slept "$k")
    tx0=$(icmp "$k" OutEchos) rx0=$(icmp "$k" InEchoReps)
    out=$(in_ns "$k" busybox ping -q "$@" 10.0.0.2 2>&1)
    # every request answered: the last replies may still be on their way when ping gives up waiting
    replied() { tx=$(($(icmp "$k" OutEchos) - tx0)) rx=$(($(icmp "$k" InEchoReps) - rx0)); [ "$rx" -ge "$tx" ]; }
    wait_for "the replies" 10 replied
    verdict "$k" "${NAMES[k]}: ping $* from the peer, the thread asleep before (state $s): the peer sent $tx echo requests and received $rx replies (ping says: $(grep -o '[0-9]* packets transmitted.*loss' <<<"$out"))" \
        eval '[ "$tx" -gt 0 ] && [ "$tx" = "$rx" ] && [ "$s" = S ]' ||
        res "$k" "# $(tr '\n' ' ' <<<"$out")"
}

# gcmd K ID CMD [SECS]: a command in guest K (tests/lib.sh, agent_cmd).
gcmd() { agent_cmd "$dir/g$1.serial" "$dir/g$1" "$2" "$3" "${4:-90}"; }
guest_result() { tr -d '\r' <"$dir/g$1.serial" | grep -a "VXTCP $2 " | tail -n 1; }

# tcp_check K to|from PORT: 4 MiB guest -> peer (to) or peer -> guest (from), checked byte for byte.
tcp_check() {
    local k=$1 way=$2 port=$3 seed=$RANDOM s st r what
    s=$(slept "$k")
    if [ "$way" = to ]; then
        what="guest -> peer"
        in_ns "$k" "$TCPCHECK" recv -t 60 "$port" "$N" "$seed" >"$dir/peer-recv-$k.out" 2>&1 &
        local rp=$!
        wait_for "the peer to listen" 10 grep -qs listening "$dir/peer-recv-$k.out"
        gcmd "$k" "$port" "tcpcheck send -t 60 10.0.0.1 $port $N $seed"; st=$?
        wait "$rp"
        r=$(grep VXTCP "$dir/peer-recv-$k.out" | tail -n 1)
    else
        what="peer -> guest"
        gcmd "$k" "$port" "tcpcheck recv -t 60 $port $N $seed &"
        in_ns "$k" "$TCPCHECK" send -t 60 10.0.0.2 "$port" "$N" "$seed" >"$dir/peer-send-$k.out" 2>&1; st=$?
        wait_for "guest ${NAMES[k]}'s receiver" 60 eval "guest_result $k recv | grep -q 'bytes='"
        r=$(guest_result "$k" recv)
    fi
    verdict "$k" "${NAMES[k]}: TCP $what, $N bytes, every one checked, the thread asleep before (state $s): sender status $st, receiver: ${r:-nothing}" \
        eval '[ "$st" = 0 ] && grep -q "VXTCP recv ok bytes=$N " <<<"$r" && [ "$s" = S ]'
}

checks() {
    local k=$1 f
    f=$(guest_features "$dir/g$k.serial")
    verdict "$k" "${NAMES[k]}: the driver negotiated EVENT_IDX ${WANT[k]:0:1} and RING_PACKED ${WANT[k]:1:1} (bits 29, 34 of ${f:-?})" \
        test "${f:29:1}${f:34:1}" = "${WANT[k]}"
    ping_check "$k" -i 0.001 -c 200
    ping_check "$k" -i 0.1 -c 5
    ping_check "$k" -i 2 -c 2
    tcp_check "$k" to 5001
    tcp_check "$k" from 5002
}
rm -f "$dir"/*.res
jobs_pids=()
for k in 0 1 2 3; do checks "$k" & jobs_pids+=($!); done
for p in "${jobs_pids[@]}"; do wait "$p"; done
for k in 0 1 2 3; do
    while IFS= read -r line; do
        case $line in
        "PASS "*) ok "${line#PASS }" ;;
        "FAIL "*) not_ok "${line#FAIL }"; failed_k[k]=1 ;;
        *)        echo "$line" ;;
        esac
    done <"$dir/$k.res"
done

# ---- SIGTERM while asleep, and the exit lines
for k in 0 1 2 3; do
    log=$dir/vx-$k.log
    term_asleep "${VXP[k]}" "$log" 20    # lib.sh: SLEPT, LAST_STATS, EXIT_RC, EXIT_MS, EXIT_LINE
    VXP[k]=''
    s=$SLEPT last=$LAST_STATS rc=$EXIT_RC ms=$EXIT_MS exitl=$EXIT_LINE
    echo "# ${NAMES[k]}: ${exitl#vhost-xdp: }"
    h0=$(num_after hand-over "$last") h1=$(num_after hand-over "$exitl")
    check "${NAMES[k]}: SIGTERM while the thread sleeps (state $s), guest connected: exit status 0 (got $rc) after $ms ms, woken by the wake-up eventfd (hand-over ${h0:-?} -> ${h1:-?})" \
        eval '[ "$s" = S ] && [ "$rc" = 0 ] && isnum "$h0" && isnum "$h1" && [ "$h1" -gt "$h0" ]' || failed_k[k]=1
    sl=$(num_after sleeps "$exitl") kick=$(num_after 'woken by kick' "$exitl") nic=$(num_after NIC "$exitl")
    to=$(num_after timeout "$exitl") sig=$(num_after signal "$exitl") missed=$(num_after 'missed kicks' "$exitl")
    check "${NAMES[k]}: sleeps ${sl:-?} > 0, woken by kick ${kick:-?} > 0 and by NIC ${nic:-?} > 0" \
        eval 'isnum "$sl" && isnum "$kick" && isnum "$nic" && [ "$sl" -gt 0 ] && [ "$kick" -gt 0 ] && [ "$nic" -gt 0 ]' || failed_k[k]=1
    check "${NAMES[k]}: missed kicks ${missed:-?} = 0, signal ${sig:-?} = 0" \
        eval '[ "${missed:-x}" = 0 ] && [ "${sig:-x}" = 0 ]' || failed_k[k]=1
    check "${NAMES[k]}: one cause per sleep: ${sl:-?} = kick ${kick:-?} + NIC ${nic:-?} + hand-over ${h1:-?} + timeout ${to:-?} + signal ${sig:-?}" \
        eval 'isnum "$sl" && [ "$sl" = $((kick + nic + h1 + to + sig)) ]' || failed_k[k]=1
    [ -n "${failed_k[k]:-}" ] && DIAG_LINES=25 diag_logs "$log" "$dir/g$k.serial"
done
done_testing
