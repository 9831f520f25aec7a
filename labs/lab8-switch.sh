#!/usr/bin/env bash
# labs/lab8-switch.sh - Lab 8: a virtual switch.  The picture every OVS-DPDK class draws: several
# guests and an uplink on one switch.  vhost-xdp with four vhost-user sockets and an AF_XDP uplink
# is that switch (switch.c); the lab shows its ideas one by one in its own counters and MAC table.
#
#     sudo labs/lab8-switch.sh [--ci]
#
# Topology (one vhost-xdp; port p is the p-th --socket, the uplink the port after the last):
#
#   guest A 10.0.0.2 --a.sock-- port 0 \
#   guest B 10.0.0.3 --b.sock-- port 1  \
#   guest C          --c.sock-- port 2   vhost-xdp (switch.c)  port 4 --AF_XDP-- vxhPID ==veth== vxpPID 10.0.0.1
#   (later C again)  --d.sock-- port 3  /                                                     (netns vxlab-PID)
#
# A and B are QEMU guests (tests/build_guest.sh's image, agent mode: the lab sends them commands);
# C is a DPDK application on a virtio_user port (testpmd, as a container attaches to OVS-DPDK),
# which sends a few frames from its own MAC: all this lab needs from it, and it starts in a second.
#
# Steps: (1) the switch's ports and which poll thread polls which (and the same for two lanes on
# two threads); (2) A pings B: the first frame, A's ARP request, is flooded (the slow path) and
# teaches the table A's port; B's answer and every frame after it are table hits; --stats' counters
# before and after, and what reached the uplink's peer; (3) the MAC table, as SIGUSR1 prints it
# (ovs-appctl fdb/show); (4) C sends from socket c, goes away, comes back on socket d with the same
# MAC: the table moves it; (5) ageing (--mac-age 10): the stations stop sending, their entries go;
# A's next frame to B is a miss again, flooded, and B's answer teaches the table once more.
# --ci (or LAB_CI=1): no pauses.
set -u
. "$(dirname "$0")/common.sh"
lab_init lab8 "$@"
[ ${#LAB_ARGS[@]} -eq 0 ] || { echo "usage: sudo $0 [--ci]" >&2; exit 2; }
lab_need_root
lab_need_cmd ip iproute2
lab_need_cmd qemu-system-x86_64 qemu-system-x86
lab_need_cmd dpdk-testpmd dpdk-dev
lab_build
"$VX" --help | grep -q -- --mac-age || lab_die "this vhost-xdp has no --mac-age option: rebuild it (make)"
lab_guest

MAC_AGE=10
MAC_A=52:54:00:12:38:0a MAC_B=52:54:00:12:38:0b MAC_C=52:54:00:12:38:0c
NAMES=("guest A" "guest B" "C, first socket" "C, second socket" "the uplink")

lab_title "Lab 8: a virtual switch: guests and an uplink on one vhost-xdp"
lab_netns
LAB_SOCK=$LAB_TMP/a.sock        # lab_start_vx's --socket: port 0
VX_LOG=$LAB_TMP/vhost-xdp.log
lab_start_vx "$VX_LOG" --socket "$LAB_TMP/b.sock" --socket "$LAB_TMP/c.sock" --socket "$LAB_TMP/d.sock" \
    --iface "$LAB_HOST" --mac-age "$MAC_AGE" --pmd-sleep 50 --stats 0.5
lab_say "  vhost-xdp --socket a.sock --socket b.sock --socket c.sock --socket d.sock --iface $LAB_HOST --mac-age $MAC_AGE --pmd-sleep 50 --stats 0.5"
lab_say "  (the sockets are in $LAB_TMP; the lines below leave that directory out)"

# A and B boot in parallel meanwhile.
# ipv6.disable=1: without IPv6 a guest sends nothing of its own (router solicitations, MLD reports,
# duplicate address detection: multicast, flooded), so every frame counted below is the lab's.
guest() {   # guest NAME IP MAC
    GUEST_AGENT=$LAB_TMP/$1 start_guest "$LAB_TMP" "$1" "$LAB_TMP/$1.sock" agent "" "" "vxip=$2/24 ipv6.disable=1" "$3"
    lab_track "$QEMU_PID"
}
guest a 10.0.0.2 "$MAC_A"
guest b 10.0.0.3 "$MAC_B"
guest_accel
lab_say "guests A ($MAC_A) and B ($MAC_B): $GUEST_ACCEL ($GUEST_ACCEL_WHY); booting..."

# === Helpers =================================================================

short() { sed "s|$LAB_TMP/||g; s/^vhost-xdp: //"; }
declare -A NCMD
gcmd() { NCMD[$1]=$((${NCMD[$1]:-0} + 1)); agent_cmd "$LAB_TMP/$1.serial" "$LAB_TMP/$1" "${NCMD[$1]}" "$2" "${3:-60}"; }
# replies G: the "N packets received" of guest G's last ping.
replies() { tr -d '\r' <"$LAB_TMP/$1.serial" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p' | tail -n 1; }
peer_rx() { lab_in_ns cat "/sys/class/net/$LAB_PEER/statistics/rx_packets"; }

# fresh_stats: wait until vhost-xdp has printed a --stats round that began after now (its "switch
# table" line ends a round), so that the counters read next include what just happened.
stats_rounds() { grep -ac "stats: switch table:" "$VX_LOG"; }
fresh_stats() {
    local n
    n=$(stats_rounds)
    wait_for "a --stats round" 10 eval '[ "$(stats_rounds)" -gt "$((n + 1))" ]'
}
# counts P: "hits misses floods learned moved" of port P (0s until it has counted something: --stats
# leaves out a port that has not).  The counters only grow, so its last line is its latest.
counts() {
    local line
    line=$(grep -a "stats: switch port $1 (" "$VX_LOG" | tail -n 1)
    [ -n "$line" ] || { echo "0 0 0 0 0"; return; }
    sed -E 's/.*: hits ([0-9]+), misses ([0-9]+), floods ([0-9]+), learned ([0-9]+), moved ([0-9]+),.*/\1 \2 \3 \4 \5/' <<<"$line"
}
snapshot() { local p; for p in 0 1 2 3 4; do echo "$p $(counts "$p")"; done; }
# table BEFORE AFTER: the counters of each port that moved, "after (+difference)".
table() {
    printf '    %-24s %-13s %-13s %-13s %-13s %-13s\n' "port (frames in on it)" hits misses floods learned moved
    paste -d ' ' <(echo "$1") <(echo "$2") | while read -r p h0 m0 f0 l0 v0 _ h1 m1 f1 l1 v1; do
        [ "$h0 $m0 $f0 $l0 $v0" = "$h1 $m1 $f1 $l1 $v1" ] && continue
        printf '    %-24s %-13s %-13s %-13s %-13s %-13s\n' "$p ${NAMES[p]}" "$h1 (+$((h1 - h0)))" "$m1 (+$((m1 - m0)))" \
            "$f1 (+$((f1 - f0)))" "$l1 (+$((l1 - l0)))" "$v1 (+$((v1 - v0)))"
    done
}
# fdb: SIGUSR1, and the table vhost-xdp prints for it (as `ovs-appctl fdb/show br0`).
fdb() {
    local mark
    mark=$(wc -l <"$VX_LOG")
    kill -USR1 "$VX_PID"
    wait_for "the MAC table" 5 eval 'tail -n +$((mark + 1)) "$VX_LOG" | grep -aq "^ports: "'
    tail -n +$((mark + 1)) "$VX_LOG" | sed -n '/vhost-xdp: fdb:/,/^ports: /p' | grep -av "^vhost-xdp: fdb:" | short |
        sed 's/^/    /'
}
table_line() { grep -a "stats: switch table:" "$VX_LOG" | tail -n 1 | short; }

# C: testpmd with one virtio_user port on SOCKET, MAC_C; sends 4 frames to A (txonly's burst, "start
# tx_first"), then only receives (rxonly: with one port, io mode would send every flooded frame it
# gets straight back into the switch, from other stations' MACs).  Stopped at once after.
C_PID=''
c_sends() {
    local sock=$1 log=$LAB_TMP/c-$2.log
    rm -f "$LAB_TMP/c.in"
    mkfifo "$LAB_TMP/c.in" && exec 7<>"$LAB_TMP/c.in"
    stdbuf -oL dpdk-testpmd --lcores "0@0,1@0" --no-huge -m 256 --no-pci --file-prefix="vxlab8-c-$$" \
        --vdev "net_virtio_user0,path=$sock,queues=1,mac=$MAC_C" \
        -- -i --nb-cores=1 --total-num-mbufs=2048 --eth-peer="0,$MAC_A" <&7 >"$log" 2>&1 &
    C_PID=$!
    lab_track "$C_PID"
    printf '%s\n' "set fwd rxonly" "set burst 4" "start tx_first" >&7
    wait_for "C to start" 30 grep -q "rxonly packet forwarding - ports=1" "$log" ||
        { cat "$log" >&2; lab_die "C (testpmd on $sock) did not start"; }
    sleep 0.5
    printf '%s\n' "stop" "quit" >&7
    wait_for "C to quit" 15 eval '! kill -0 "$C_PID" 2>/dev/null'
    lab_stop "$C_PID"
    exec 7>&-
    rm -rf "${DPDK_RUNDIR:?}/vxlab8-c-$$"
}
lab_on_exit 'rm -rf "${DPDK_RUNDIR:?}/vxlab8-c-$$"'

# === 1. ports and poll threads ================================================

lab_step "1. the switch: its ports, and which poll thread polls which"
grep -a "port: an L2 learning switch\|switch: pmd" "$VX_LOG" | short | sed 's/^/  /'
lab_explain <<'EOF'

Each --socket is a port, as a dpdkvhostuser port of OVS-DPDK's bridge; --iface adds the uplink,
OVS's DPDK NIC (here an AF_XDP socket on a veth).  Lane k is queue pair k of every port plus NIC
queue k: one poll thread polls a whole lane, as OVS assigns rx queues to its PMD threads, so a
frame goes out on the lane it came in on and never crosses threads.  One queue pair: one lane,
one thread.  The same four sockets with --queues 2 --pmd-cores 0,1 (started for a moment, without
the uplink):
EOF
mkdir -p "$LAB_TMP/lanes"
"$VX" --socket "$LAB_TMP/lanes/a.sock" --socket "$LAB_TMP/lanes/b.sock" --socket "$LAB_TMP/lanes/c.sock" \
    --socket "$LAB_TMP/lanes/d.sock" --queues 2 --pmd-cores 0,1 --pmd-sleep 1000 </dev/null >"$LAB_TMP/lanes.log" 2>&1 &
LANES_PID=$!
lab_track "$LANES_PID"
wait_for "the two lanes" 10 grep -q "switch: pmd 1 polls lane 1" "$LAB_TMP/lanes.log"
lab_stop "$LANES_PID"
grep -a "switch: pmd" "$LAB_TMP/lanes.log" | short | sed 's|lanes/||g; s/^/  /'
lab_explain <<'EOF'
(with two lanes, each frontend must use both of its queue pairs: what comes in on lane 1 leaves
on lane 1 only.)
EOF
for g in a b; do
    wait_for "guest $g" 300 grep -aqs "VXAGENT ready" "$LAB_TMP/$g.serial" || lab_die "guest $g did not boot"
done
lab_pause

# === 2. a flood, then hits ===================================================

lab_step "2. A pings B: the first frame is flooded and learned, the next ones are table hits"
fresh_stats
S0=$(snapshot) R0=$(peer_rx)
gcmd a "ping -c 3 -W 3 10.0.0.3" 60
fresh_stats
S1=$(snapshot) R1=$(peer_rx)
lab_say "  A: ping -c 3 10.0.0.3: $(replies a) replies; --stats before and after:"
table "$S0" "$S1"
lab_say "  the uplink's peer received $((R1 - R0)) frame(s) meanwhile (its rx_packets); $(table_line)"
lab_explain <<'EOF'

A knows only B's address, so its first frame is an ARP request to ff:ff:ff:ff:ff:ff from A's MAC.
The switch learns "A's MAC is behind port 0" (learned +1) and floods the broadcast to every other
port (floods +1): B, the two other sockets (nobody there: dropped, counted on their devices) and
the uplink, whose peer received it.  B answers to A's MAC: the table knows it, so the answer goes
to port 0 alone (a hit), and B is learned on port 1.  From then on every echo request and reply is
a hit, to one port: the peer never sees them.  In OVS the flood is the slow path (the first packet
of a flow goes up to ovs-vswitchd, the "upcall", which decides and installs a flow); the hits are
the datapath's flow cache.  Here the decision is a lookup in the MAC table, a cache line, for each
frame (sw_classify() in switch.c); under load, a frame from the same two stations as the frame
before it in its burst goes where that one went, with no lookup (OVS batches a burst's packets by
flow for the same reason).
EOF
lab_pause

# === 3. the MAC table ========================================================

lab_step "3. the MAC table (SIGUSR1; ovs-appctl fdb/show br0 prints the same columns)"
gcmd b "ping -c 1 -W 3 10.0.0.1" 30 >/dev/null     # B and the peer: a station on the uplink too
lab_say "  (B pinged the peer too: $(replies b) reply)"
fdb
lab_explain <<'EOF'

One entry per station: the port it was last seen on, its MAC, and the seconds since (Age).  The
table holds at most 4096 (1024 buckets of 4; a new station in a full bucket evicts the oldest),
and it is the only thing the poll threads share: one 64-bit word per entry, changed with a
compare-and-swap, no lock.  `--fdb-view SECONDS` prints it every SECONDS.
EOF
lab_pause

# === 4. a station moves =====================================================

lab_step "4. C comes up on socket c, goes away, and comes back on socket d"
fresh_stats
S0=$(snapshot)
c_sends "$LAB_TMP/c.sock" first
fresh_stats
lab_say "  C (testpmd, MAC $MAC_C) sent 4 frames to A on socket c and quit; the table:"
fdb | grep -a "$MAC_C" || lab_say "    (no entry for C)"
c_sends "$LAB_TMP/d.sock" again
fresh_stats
S1=$(snapshot)
lab_say "  C again, on socket d, the same 4 frames; the table:"
fdb | grep -a "$MAC_C" || lab_say "    (no entry for C)"
table "$S0" "$S1"
lab_explain <<'EOF'

A guest restarted on another port (or migrated to another host: QEMU then announces it with a
RARP from its MAC) shows up with a MAC the table knows on another port.  At its first frame the
entry moves (moved +1 on port 3): the next frames to C go to port 3.  Until C sends, frames to it
are flooded: the table still names its old port, but that port is down (its RX ring stopped when
C went), so the entry is not used and the frames reach C wherever it runs again.  (OVS keeps
sending to the old port, and what goes there before C's first frame is lost: one reason a migrated
guest announces itself.)
C's frames to A are hits both times: A is in the table.  (Other hits here, if any, on A's, B's
or the uplink's port: their kernels checking a neighbour's address again a few seconds after the
pings, with a unicast ARP request that the neighbour answers.)
EOF
lab_pause

# === 5. ageing ===============================================================

lab_step "5. ageing: --mac-age $MAC_AGE; nobody sends for a while"
lab_say "  now: $(table_line)"
empty() { grep -a "stats: switch table:" "$VX_LOG" | tail -n 1 | grep -q "table: 0 of"; }
t0=$SECONDS
wait_for "the table to empty" $((MAC_AGE + 20)) empty
lab_say "  $((SECONDS - t0)) s later: $(table_line)"
fdb
S0=$(snapshot)
gcmd a "ping -c 2 -W 3 10.0.0.3" 60
fresh_stats
S1=$(snapshot)
lab_say "  A pings B again: $(replies a) replies"
table "$S0" "$S1"
lab_explain <<'EOF'

An entry not seen for --mac-age seconds (OVS's mac-aging-time, 300 by default) is removed by the
control thread's once-a-second sweep (sw_tick(), counted "aged").  A still has B's MAC in its ARP
cache, so its next echo request goes straight to B's MAC, unicast, which the table no longer
knows: a miss (misses +1), flooded as a broadcast is, and so it still reaches B.  B's reply is a
hit (A was learned again from that same request) and B is learned from it: the next frames are
hits again.  Ageing is what keeps the table right when a station goes away without a word.
EOF
