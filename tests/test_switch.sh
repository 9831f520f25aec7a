#!/usr/bin/env bash
# tests/test_switch.sh - the L2 learning switch (switch.c) with real guests: three QEMU guests and a
# peer behind a veth uplink, on one vhost-xdp (issue 15).
#
#   vhost-xdp --socket A --socket B --socket C --socket D --socket F --iface HOST: five vhost-user
#   ports and the AF_XDP uplink on a veth whose peer (10.0.0.1) is in a netns made here.  Guests
#   (tests/build_guest.sh, agent mode, booted in parallel): A 10.0.0.2 on socket A, B 10.0.0.3 on B,
#   C 10.0.0.4 on C.  Socket D is empty until C moves there; F takes the hostile port.
#   1. every pair pings: each guest the two others and the peer, the peer each guest;
#   2. a broadcast from the uplink (the peer's broadcast ping) reaches each guest exactly once: each
#      guest's kernel counts one more ICMP echo request (InEchos), and vhost-xdp counts the flood;
#   3. TCP through the switch, checked byte for byte (tests/tcpcheck.c): A -> B, and A -> the peer;
#   4. C is killed and started again on socket D (same MAC, same address): the peer and A reach it
#      again, and the switch counts the move (or relearns it, if the entry aged meanwhile); what was
#      sent to C's old port while nobody was there is dropped and counted on device 2;
#   5. a hostile port: tests/test_switch --flood sends from thousands of random source MACs on
#      socket F while A and B ping each other: their pings keep succeeding, the table stays at most
#      4096 entries, and the evictions are counted; then the same from a DPDK port on socket F:
#      testpmd's virtio_user forwarding (io retry) what its net_pcap port reads from a file of 10,000
#      such frames (tests/test_switch --flood-pcap), at testpmd's full speed;
#   6. SIGUSR1 prints the MAC table (fdb/show); SIGTERM: exit 0 with the switch's exit lines.
# Needs root (netns, veth, XDP), qemu-system-x86_64 and the test guest; a missing one skips (fails
# under CI=true).  Three TCG guests on 2 CPUs: about 1-2 minutes.  No timing assertions: deadlines
# only stop a hung test.
set -u
. "$(dirname "$0")/lib.sh"

require "switch test with QEMU guests" qemu-system-x86_64 ip
[ -x "$VX" ] || { not_ok "vhost-xdp is built ($VX)"; done_testing; }
TCPCHECK=$TESTS_DIR/tcpcheck FLOOD=$TESTS_DIR/test_switch
[ -x "$TCPCHECK" ] && [ -x "$FLOOD" ] || { not_ok "tests/tcpcheck and tests/test_switch are built (make)"; done_testing; }
if [ "$(id -u)" != 0 ]; then missing "switch test: needs root (netns, veth, XDP)"; fi
GUEST=${VX_GUEST_DIR:-$TESTS_DIR/guest}
"$TESTS_DIR/build_guest.sh" "$GUEST" 2>/dev/null || missing "test guest (tests/build_guest.sh failed)"
N=${TCP_BYTES:-2097152}

ID=$$
dir=$(mktemp -d "${TMPDIR:-/tmp}/vx-switch-$ID.XXXXXX")
NS=vx-sw-ns-$ID HOST=vxsh$ID PEER=vxsp$ID
VX_PID='' QA='' QB='' QC='' FLOOD_PID='' RECV_PID='' TP_PID='' NS_MADE=''
cleanup() {
    stop_pid "$FLOOD_PID"; stop_pid "$RECV_PID"; stop_pid "$TP_PID"
    rm -rf "${DPDK_RUNDIR:?}/vxsw-$ID"
    stop_pid "$QA"; stop_pid "$QB"; stop_pid "$QC"
    stop_pid "$VX_PID"
    if [ -n "$NS_MADE" ]; then ip link del "$HOST" 2>/dev/null; ip netns del "$NS" 2>/dev/null; fi
    [ -n "${VX_SWITCH_KEEP:-}" ] && mkdir -p "$VX_SWITCH_KEEP" && cp "$dir"/*.log "$dir"/*.serial "$VX_SWITCH_KEEP"/ 2>/dev/null
    rm -rf "$dir"
}
on_exit cleanup

diag() { DIAG_LINES=20 diag_logs "$@"; }
in_ns() { ip netns exec "$NS" "$@"; }

# --- the uplink: a veth, its peer in a netns (lib.sh: make_uplink)
check "veth $HOST <-> $PEER (netns $NS, 10.0.0.1)" make_uplink || done_testing

# --- the switch
S=$dir/a.sock SB=$dir/b.sock SC=$dir/c.sock SD=$dir/d.sock SF=$dir/f.sock
LOG=$dir/vx.log
"$VX" --socket "$S" --socket "$SB" --socket "$SC" --socket "$SD" --socket "$SF" --iface "$HOST" \
    --pmd-sleep 50 --stats 1 </dev/null >"$LOG" 2>&1 &
VX_PID=$!
check "vhost-xdp: a switch of 5 sockets and the uplink $HOST" \
    wait_for "the switch" 15 grep -q "port: an L2 learning switch of 5 vhost-user ports and the uplink $HOST" "$LOG" ||
    { diag "$LOG"; done_testing; }
wait_for "five sockets" 10 eval 'test -S "$S" -a -S "$SB" -a -S "$SC" -a -S "$SD" -a -S "$SF"'
grep -a "switch: pmd\|offloads:" "$LOG" | sed 's/^/# /'

# --- three guests, booted in parallel (agent mode: commands on a second serial port)
boot() {    # boot NAME SOCK IP MAC
    GUEST_AGENT=$dir/$1 start_guest "$dir" "$1" "$2" agent "" "" "vxip=$3/24" "$4"
}
boot a "$S" 10.0.0.2 52:54:00:12:34:0a; QA=$QEMU_PID
boot b "$SB" 10.0.0.3 52:54:00:12:34:0b; QB=$QEMU_PID
boot c "$SC" 10.0.0.4 52:54:00:12:34:0c; QC=$QEMU_PID
for g in a b c; do
    wait_for "guest $g" 180 grep -aqs "VXAGENT ready" "$dir/$g.serial" ||
        { not_ok "guest $g boots into agent mode"; diag "$dir/$g.serial" "$dir/$g.qemu.log" "$LOG"; done_testing; }
done
ok "three guests booted (agent mode), in parallel"

declare -A CMD_ID=([a]=0 [b]=0 [c]=0 [c2]=0)
gcmd() {    # gcmd GUEST CMD [SECS]
    CMD_ID[$1]=$((CMD_ID[$1] + 1))
    agent_cmd "$dir/$1.serial" "$dir/$1" "${CMD_ID[$1]}" "$2" "${3:-60}"
}
# A ping that may lose its first packet to ARP under TCG: up to three tries.
PING3='for i in 1 2 3; do ping -c 1 -W 3'
gping() { gcmd "$1" "$PING3 $2 >/dev/null && break; done" 40; }
# The peer's ping: busybox's (busybox-static is installed for the guest image; iputils may not be).
pping() { local i; for i in 1 2 3; do in_ns busybox ping -c 1 -W 3 "$1" >/dev/null && return 0; done; return 1; }

# === 1. every pair
declare -A IP=([a]=10.0.0.2 [b]=10.0.0.3 [c]=10.0.0.4)
for g in a b c; do
    for h in a b c peer; do
        [ "$g" = "$h" ] && continue
        to=${IP[$h]:-10.0.0.1}
        check "guest $g pings $h ($to)" gping "$g" "$to" || diag "$dir/$g.serial"
    done
done
for g in a b c; do check "the peer pings guest $g (${IP[$g]})" pping "${IP[$g]}"; done

# === 2. a broadcast from the uplink reaches each guest exactly once
# (the guests answer a broadcast ping only with icmp_echo_ignore_broadcasts 0; they count it either way)
echos() {   # echos GUEST: the ICMP echo requests its kernel received (InEchos)
    gcmd "$1" 'echo VXECHOS $(snmp Icmp InEchos)' >/dev/null
    tr -d '\r' <"$dir/$1.serial" | sed -n 's/.*VXECHOS \([0-9]*\).*/\1/p' | tail -n 1
}
for g in a b c; do gcmd "$g" 'echo 0 > /proc/sys/net/ipv4/icmp_echo_ignore_broadcasts' >/dev/null; done
sleep 1
e0=() e1=()
for g in a b c; do e0+=("$(echos $g)"); done
floods0=$(grep -a "stats: switch port 5 " "$LOG" | tail -n 1 | sed -n 's/.*, floods \([0-9]*\),.*/\1/p')
in_ns busybox ping -c 1 -W 2 10.0.0.255 >"$dir/bping.out" 2>&1    # busybox pings a broadcast address as asked
# Each guest's count, once it has moved (an emulated guest on a busy machine may take more than a
# second to get to the packet: once here, C's count had not moved after 1 s), or after 10 s; then a
# second look 1 s later, so that a copy that came twice would be seen.
gs=(a b c) t0=$SECONDS
for i in 0 1 2; do
    e=$(echos "${gs[$i]}")
    while [ "${e:-0}" = "${e0[$i]:-0}" ] && [ $((SECONDS - t0)) -lt 10 ]; do sleep 0.5; e=$(echos "${gs[$i]}"); done
done
sleep 1
for i in 0 1 2; do e1+=("$(echos "${gs[$i]}")"); done
check "one broadcast ping from the uplink: each guest received it exactly once (InEchos a ${e0[0]}->${e1[0]}, b ${e0[1]}->${e1[1]}, c ${e0[2]}->${e1[2]})" \
    eval '[ $((e1[0] - e0[0])) = 1 ] && [ $((e1[1] - e0[1])) = 1 ] && [ $((e1[2] - e0[2])) = 1 ]' ||
    { cat "$dir/bping.out" | sed 's/^/#   /'; }
sleep 1.5
floods1=$(grep -a "stats: switch port 5 " "$LOG" | tail -n 1 | sed -n 's/.*, floods \([0-9]*\),.*/\1/p')
check "the switch counted the uplink's broadcast as a flood (floods ${floods0:-?} -> ${floods1:-?})" \
    eval '[ "${floods1:-0}" -gt "${floods0:-0}" ]'

# === 3. TCP through the switch, byte for byte
guest_result() { tr -d '\r' <"$dir/$1.serial" | grep -a "VXTCP $2 " | tail -n 1; }
seed=$RANDOM
gcmd b "tcpcheck recv -t 60 5001 $N $seed &" >/dev/null
gcmd a "tcpcheck send -t 60 10.0.0.3 5001 $N $seed" 120; st=$?
wait_for "B's receiver" 30 eval "guest_result b recv | grep -q 'bytes='"
r=$(guest_result b recv)
check "TCP guest A -> guest B through the switch: $N bytes, every one checked (sender $st: $r)" \
    eval '[ "$st" = 0 ] && grep -q "VXTCP recv ok bytes=$N " <<<"$r"' || diag "$dir/a.serial" "$dir/b.serial"
in_ns "$TCPCHECK" recv -t 60 5002 "$N" "$seed" >"$dir/peer-recv.out" 2>&1 &
RECV_PID=$!
wait_for "the peer to listen" 10 grep -qs listening "$dir/peer-recv.out"
gcmd a "tcpcheck send -t 60 10.0.0.1 5002 $N $seed" 120; st=$?
wait "$RECV_PID"; RECV_PID=''
r=$(grep VXTCP "$dir/peer-recv.out" | tail -n 1)
check "TCP guest A -> the uplink's peer: $N bytes, every one checked (sender $st: $r)" \
    eval '[ "$st" = 0 ] && grep -q "VXTCP recv ok bytes=$N " <<<"$r"' || diag "$dir/a.serial" "$LOG"

# === 4. C killed, started again on socket D
stop_pid "$QC"; QC=''
wait_for "C's disconnect" 10 grep -q "frontend disconnected from $SC;" "$LOG"
drops0=$(grep -a "stats: device 2 (" "$LOG" | tail -n 1 | sed -n 's/.*| drops \([0-9]*\) .*/\1/p')
in_ns busybox ping -c 2 -W 1 10.0.0.4 >/dev/null 2>&1       # to C's MAC, still behind port 2: nobody there
sleep 1.5
drops1=$(grep -a "stats: device 2 (" "$LOG" | tail -n 1 | sed -n 's/.*| drops \([0-9]*\) .*/\1/p')
check "with C gone, what is sent to its port is dropped and counted on device 2 (drops ${drops0:-?} -> ${drops1:-?})" \
    eval '[ "${drops1:-0}" -gt "${drops0:-0}" ]' || diag "$LOG"
GUEST_AGENT=$dir/c2 start_guest "$dir" c2 "$SD" agent "" "" "vxip=10.0.0.4/24" 52:54:00:12:34:0c; QC=$QEMU_PID
wait_for "guest c2" 180 grep -aqs "VXAGENT ready" "$dir/c2.serial" ||
    { not_ok "C boots again on socket D"; diag "$dir/c2.serial" "$LOG"; done_testing; }
check "C, started on socket D, pings the peer" gping c2 10.0.0.1 || diag "$dir/c2.serial"
check "the peer reaches C on its new port" pping 10.0.0.4
check "A reaches C on its new port" gping a 10.0.0.4
sleep 1.5
line=$(grep -a "stats: switch port 3 " "$LOG" | tail -n 1)
check "port 3 (socket D) learned C's MAC: $line" eval 'grep -Eq "learned [1-9]|moved [1-9]" <<<"$line"'

# === 5. a hostile port: random source MACs while A and B ping each other
# pings_start TAG: A pings B 16 times, 0.5 s apart, in the background (while a hostile port sends);
# pings_answered TAG: how many of them were answered, once they are done.
pings_start() { gcmd a "ping -c 16 -i 0.5 -W 2 10.0.0.3 > /tmp/ping$1 2>&1 &" >/dev/null; }
pings_answered() {
    sleep 3
    gcmd a "echo VXPING$1 \$(grep -c 'bytes from' /tmp/ping$1)" >/dev/null
    tr -d '\r' <"$dir/a.serial" | sed -n "s/.*VXPING$1 \([0-9]*\).*/\1/p" | tail -n 1
}
# port_counter NAME LINE: a counter of a "stats: switch port" line; table_entries: the stations in
# the table, from the last "stats: switch table" line.
port_counter() { sed -n "s/.*, $1 \([0-9]*\).*/\1/p" <<<"$2"; }
table_entries() { grep -a "stats: switch table: " "$LOG" | tail -n 1 | sed -n 's/.*switch table: \([0-9]*\) of.*/\1/p'; }
pings_start FLOOD
"$FLOOD" --flood "$SF" 6 3000 >"$dir/flood.out" 2>&1 &
FLOOD_PID=$!
wait "$FLOOD_PID"; st=$?; FLOOD_PID=''
check "the hostile port sent from random source MACs ($(cat "$dir/flood.out"))" eval '[ "$st" = 0 ] && grep -q "flood: [1-9][0-9]* frames sent" "$dir/flood.out"'
got=$(pings_answered FLOOD)
check "A's pings to B during the flood kept getting answers (${got:-0} of 16)" eval '[ "${got:-0}" -ge 8 ]'
sleep 1.2
line=$(grep -a "stats: switch port 4 " "$LOG" | tail -n 1)
ev=$(port_counter evicted "$line") lr=$(port_counter learned "$line") entries=$(table_entries)
check "the hostile port: ${lr:-?} learned, ${ev:-?} evicted; the table holds ${entries:-?} of 4096" \
    eval '[ "${lr:-0}" -gt 4096 ] && [ "${ev:-0}" -gt 0 ] && [ "${entries:-99999}" -le 4096 ]' || echo "# $line"

# --- 5b. the same from a DPDK port: testpmd, a virtio_user port on socket F (the flood's frontend
# is gone) and a net_pcap port reading the file; io forwarding sends what the file holds, once
# (--no-flush-rx: testpmd would otherwise drain the file as stale packets before forwarding).
if need_cmd dpdk-testpmd "the hostile DPDK port"; then
    "$FLOOD" --flood-pcap "$dir/flood.pcap" 10000 >"$dir/flood-pcap.out" 2>&1 ||
        not_ok "tests/test_switch --flood-pcap: $(cat "$dir/flood-pcap.out")"
    before=$(grep -a "stats: switch port 4 " "$LOG" | tail -n 1)
    pings_start DPDK
    mkfifo "$dir/tp.in" && exec 7<>"$dir/tp.in"
    stdbuf -oL dpdk-testpmd --lcores "0@0,1@0" --no-huge -m 256 --no-pci --file-prefix="vxsw-$ID" \
        --vdev "net_pcap0,rx_pcap=$dir/flood.pcap,tx_pcap=$dir/tp-out.pcap" \
        --vdev "net_virtio_user1,path=$SF,queues=1,mac=02:00:00:00:00:f1" \
        -- -i --nb-cores=1 --total-num-mbufs=16384 --no-flush-rx <&7 >"$dir/tp.log" 2>&1 &
    TP_PID=$!
    # io retry: a burst the virtio_user ring has no room for is tried again (up to 1000 times,
    # 100 us apart) instead of dropped: three TCG guests leave the poll thread little CPU.
    printf '%s\n' "set fwd io retry" "set burst tx delay 100 retry 1000" "start" >&7
    wait_for "testpmd to forward" 30 grep -q "io packet forwarding with retry" "$dir/tp.log" || diag "$dir/tp.log"
    sleep 4
    printf '%s\n' "stop" "quit" >&7
    wait_for "testpmd to quit" 15 eval '! kill -0 "$TP_PID" 2>/dev/null'
    stop_pid "$TP_PID"; TP_PID=''
    exec 7>&-
    tp_tx=$(sed -n '/Forward statistics for port 1 /,/^ *-*$/s/.*TX-packets: *\([0-9]*\).*/\1/p' "$dir/tp.log" | head -n 1)
    check "testpmd's virtio_user port sent ${tp_tx:-?} of the file's 10000 frames to socket F" \
        eval '[ "${tp_tx:-0}" -gt 4096 ]' || diag "$dir/tp.log"
    got=$(pings_answered DPDK)
    check "A's pings to B during the DPDK port's flood kept getting answers (${got:-0} of 16)" eval '[ "${got:-0}" -ge 8 ]'
    sleep 1.2
    after=$(grep -a "stats: switch port 4 " "$LOG" | tail -n 1)
    lr=$(( $(port_counter learned "$after") - $(port_counter learned "$before") ))
    ev=$(( $(port_counter evicted "$after") - $(port_counter evicted "$before") ))
    entries=$(table_entries)
    check "the DPDK port: $lr stations learned of ${tp_tx:-?} frames, $ev evicted; the table holds ${entries:-?} of 4096" \
        eval '[ "$lr" -gt 4096 ] && [ "$lr" -le "${tp_tx:-0}" ] && [ "$ev" -gt 0 ] && [ "${entries:-99999}" -le 4096 ]' ||
        echo "# $before" "# $after"
fi

# === 6. the table view, and the exit
mark=$(wc -l <"$LOG")
kill -USR1 "$VX_PID"
wait_for "the MAC table" 5 eval 'tail -n +$((mark + 1)) "$LOG" | grep -q "^ports: "'
check "SIGUSR1: the MAC table, fdb/show style, A's MAC on port 0" \
    eval 'tail -n +$((mark + 1)) "$LOG" | grep -q "^    0     0  52:54:00:12:34:0a"'
tail -n +$((mark + 1)) "$LOG" | grep -a -A3 "vhost-xdp: fdb:" | sed 's/^/# /'
stop_pid "$QA"; QA=''; stop_pid "$QB"; QB=''; stop_pid "$QC"; QC=''
kill -TERM "$VX_PID"; wait "$VX_PID"; st=$?; VX_PID=''
check "SIGTERM: vhost-xdp exits 0 (got $st)" test "$st" = 0
check "exit: a line per switch port and the table's" eval 'grep -aq "exit: switch port 5 (uplink $HOST)" "$LOG" &&
    grep -aq "exit: switch table:" "$LOG"' || diag "$LOG"
grep -a "exit: switch" "$LOG" | sed 's/^/# /'
done_testing
