#!/usr/bin/env bash
# labs/lab1-handshake.sh - Lab 1: the vhost-user handshake, read in vhost-xdp --trace.
#
#   labs/lab1-handshake.sh [--ci] [--no-event-idx]    (no root needed: --loopback uses no interface)
#
# Starts vhost-xdp --loopback --trace=rings, boots the test guest (QEMU, KVM or TCG) on its socket,
# waits until the guest's eth0 is up and its own packets come back to it, lets them flow for a few
# seconds, stops QEMU, then vhost-xdp, and prints what the trace recorded:
#   1. QEMU's messages at start-up, before the guest boots;
#   2. the messages when the guest's virtio_net driver sets DRIVER_OK: SET_FEATURES with the feature
#      names, SET_MEM_TABLE with its regions, and per ring NUM, BASE, ADDR, KICK, CALL, ENABLE;
#   3. the kicks the guest sent and the calls (interrupts) we sent while packets flowed;
#   4. what QEMU sends when it stops.
# Each message type gets one line saying what it means, the first time it appears.
# --ci (or LAB_CI=1): a shorter run (3 s of traffic), no pause.  --no-event-idx: the guest's device
# without VIRTIO_RING_F_EVENT_IDX (QEMU's event_idx=off), to compare the kicks.  LAB_KEEP=DIR keeps
# the logs.
set -u
. "$(dirname "$0")/common.sh"

lab_init lab1 "$@"
DEVOPTS=''
for a in "${LAB_ARGS[@]}"; do
    case $a in
    --no-event-idx) DEVOPTS=,event_idx=off ;;
    *) echo "usage: $0 [--ci] [--no-event-idx]" >&2; exit 2 ;;
    esac
done
lab_need_cmd qemu-system-x86_64 qemu-system-x86
lab_build
lab_guest

TRAFFIC_SECS=15
[ "$LAB_CI" = 1 ] && TRAFFIC_SECS=3
VX_LOG=$LAB_TMP/vhost-xdp.log

lab_title "Lab 1: the vhost-user handshake, read in --trace"
lab_explain <<'EOF'
vhost-xdp serves the guest's virtio-net device: QEMU tells it, in vhost-user messages on a unix
socket, where guest memory and each ring are.  --trace prints each message on one line: "<-" what
QEMU sent (name, header flags, payload decoded, fds received), "->" our reply.  --trace=rings adds
ring events: started, enabled, the guest's kicks, the calls (interrupts) we send it.
EOF

lab_step "Start vhost-xdp and boot the guest"
lab_start_vx "$VX_LOG" --loopback --trace=rings
lab_boot_guest lab1 loopback "$DEVOPTS"

# The guest prints VXREADY once eth0 is up, then every 0.5 s an ARP request and a ping to itself
# (--loopback sends every frame straight back) and "VXSTAT rx_packets=N tx_packets=M".
guest_rx() { tr -d '\r' 2>/dev/null <"$LAB_SERIAL" | sed -n 's/.*VXSTAT rx_packets=\([0-9]*\) .*/\1/p' | tail -n 1; }
traffic_flows() { local n; n=$(guest_rx); [ -n "$n" ] && [ "$n" -ge 4 ]; }
alive() { kill -0 "$QEMU_PID" 2>/dev/null && kill -0 "$VX_PID" 2>/dev/null; }
deadline=$((SECONDS + 180))
until traffic_flows; do
    alive || lab_die "QEMU or vhost-xdp exited early; vhost-xdp's log: $(tail -n 5 "$VX_LOG")"
    [ "$SECONDS" -lt "$deadline" ] || lab_die "no traffic after 180 s (guest console: $(tail -c 300 "$LAB_SERIAL"))"
    sleep 0.2
done
lab_say "guest: eth0 is up and its packets come back to it ($(guest_rx) received so far)"
lab_say "letting it run for $TRAFFIC_SECS s"
sleep "$TRAFFIC_SECS"
STAT=$(tr -d '\r' <"$LAB_SERIAL" | grep -ao 'VXSTAT rx_packets=[0-9]* tx_packets=[0-9]*' | tail -n 1)

lab_step "Stop QEMU, then vhost-xdp"
STOP_AT=$(wc -l <"$VX_LOG")          # the log lines after this one are the stop
stop_pid "$QEMU_PID"
wait_for "frontend disconnected" 10 grep -q "frontend disconnected" "$VX_LOG" || true
stop_pid "$VX_PID"
lab_say "both stopped; vhost-xdp wrote $(wc -l <"$VX_LOG") log lines"

# === Reading the trace ========================================================

# The trace lines of one phase, without the "vhost-xdp: trace: " prefix and without the kick/call
# lines (counted below), with one line of explanation before the first message of each type.
# $1, $2: the first and last log line numbers of the phase.
show_messages() {
    awk -v from="$1" -v to="$2" '
    BEGIN {
        g["GET_FEATURES"] = "which virtio features can you do? (our reply names the bits we offer)"
        g["GET_PROTOCOL_FEATURES"] = "which vhost-user extensions do you speak? (our reply names ours)"
        g["SET_PROTOCOL_FEATURES"] = "the extensions both sides will use"
        g["GET_QUEUE_NUM"] = "how many queue pairs can you serve? (MQ)"
        g["SET_OWNER"] = "this connection owns the device from now on"
        g["SET_VRING_CALL"] = "the eventfd we write to interrupt the guest about a ring (the fd rides in SCM_RIGHTS)"
        g["SET_VRING_ERR"] = "the eventfd to report a broken ring on"
        g["SET_VRING_ENABLE"] = "ring on (num=1) or off (num=0): with PROTOCOL_FEATURES a ring runs only when enabled"
        g["SET_FEATURES"] = "what the guest driver accepted: fixes the ring format and the 12-byte net header"
        g["SET_MEM_TABLE"] = "guest RAM: one fd per region, which we mmap; gpa = guest-physical, uaddr = QEMU virtual"
        g["SET_VRING_NUM"] = "the ring size (entries)"
        g["SET_VRING_BASE"] = "where to start reading the avail ring (our last_avail_idx)"
        g["SET_VRING_ADDR"] = "where desc, avail and used are, as QEMU virtual addresses (translated through uaddr)"
        g["SET_VRING_KICK"] = "the eventfd the guest kicks; with it the ring is complete and starts"
        g["GET_VRING_BASE"] = "stop the ring; our reply says where to resume (last_avail_idx)"
        g["GET_STATUS"] = "read back the virtio device status byte (QEMU reads it before each SET_STATUS)"
        g["SET_STATUS"] = "the status the guest driver set: 8 FEATURES_OK, 15 = +DRIVER_OK (running), 0 = reset (rings stop on GET_VRING_BASE)"
    }
    NR < from || NR > to { next }
    /trace: ring [0-9]+: (kick|call|[0-9]+ more calls)/ { next }
    /trace: / {
        sub(/^.*trace: /, "")
        if ($1 == "<-" && !($2 in seen)) {
            seen[$2] = 1
            printf "  %s: %s\n", $2, ($2 in g) ? g[$2] : "(see vhost-user.rst)"
        }
        if ($1 == "<-" || $1 == "->") print "      " $0
        else print "      = " $0
        next
    }
    /frontend (connected|disconnected)|not supported|malformed/ { sub(/^vhost-xdp: /, ""); print "      = " $0 }
    ' "$VX_LOG"
}

# Kicks: "ring N: kick (count K)", K kicks since the last read of the eventfd.  Calls: one line per
# call, at most 5 a second, then "ring N: M more calls sent in the last second, not shown" (printed
# at the next call, so the last second's hidden calls may be missing: a lower bound).
kicks() { sed -n "s/.*trace: ring $1: kick (count \([0-9]*\)).*/\1/p" "$VX_LOG" | awk '{ s += $1 } END { print s + 0 }'; }
calls() {
    { grep -c "trace: ring $1: call sent" "$VX_LOG"
      sed -n "s/.*trace: ring $1: \([0-9]*\) more calls sent.*/\1/p" "$VX_LOG"; } | awk '{ s += $1 } END { print s + 0 }'
}

first_set_features=$(grep -n "trace: <- SET_FEATURES" "$VX_LOG" | head -n 1 | cut -d: -f1)
[ -n "$first_set_features" ] || lab_die "no SET_FEATURES in the trace: the guest's driver never started the device"

lab_step "1. QEMU connects, before the guest boots"
lab_explain <<'EOF'
QEMU learns what we can do and gives us, per ring, the eventfds for interrupts and errors.
No ring exists yet: there is no memory table and no ring address.
EOF
show_messages 1 $((first_set_features - 1))
lab_pause

lab_step "2. The guest's virtio_net driver sets DRIVER_OK: QEMU hands us the rings"
lab_explain <<'EOF'
Ring 0 is the guest's RX (we write packets into its buffers), ring 1 its TX (we read them).
A ring starts once it has a size, addresses, a memory table to translate them, and a kick fd.
EOF
show_messages "$first_set_features" "$STOP_AT"
lab_pause

negotiated=$(grep "trace: <- SET_FEATURES" "$VX_LOG" | tail -n 1 | sed 's/.*(\(.*\))$/\1/')
lab_step "3. Traffic: kicks and calls during $TRAFFIC_SECS s of the guest pinging itself"
lab_say "  negotiated: $negotiated"
lab_say "  guest console: ${STAT:-no VXSTAT line}"
for r in 0 1; do
    name=RX; [ $r = 1 ] && name=TX
    lab_say "  ring $r ($name): $(kicks $r) kicks from the guest, $(calls $r) calls (interrupts) we sent"
done
case "|$negotiated|" in
*"|EVENT_IDX|"*) lab_explain <<'EOF'
EVENT_IDX is negotiated: the guest kicks only when its avail->idx passes the avail_event we publish.
We poll the rings and never move avail_event from 0, so after the first buffers the guest has no
reason to kick (the next time would be after 65536 buffers).  The other way round it is the guest
that publishes used_event, and we call (interrupt) it when our used->idx passes it.
EOF
;;
*) lab_explain <<'EOF'
EVENT_IDX is not negotiated: we set VRING_USED_F_NO_NOTIFY in used->flags, asking the guest not to
kick us at all; it may still kick while it has not seen the flag yet.
EOF
;;
esac
lab_pause

lab_step "4. QEMU stops"
lab_explain <<'EOF'
GET_VRING_BASE stops a ring and returns where a next back-end should resume; then QEMU goes away.
EOF
show_messages $((STOP_AT + 1)) 1000000000
lab_say ""
lab_say "lab1: done (the whole log: LAB_KEEP=DIR labs/lab1-handshake.sh keeps it)"
