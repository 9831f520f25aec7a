#!/usr/bin/env bash
# labs/lab9-migrate.sh - Lab 9: a guest moves.  A QEMU guest is live-migrated from one vhost-user
# port of vhost-xdp to another while a peer pings it ten times a second; the lab shows what the
# backend is told and does (vhost-user.rst, "Migration"), what QEMU measured, and that the ping
# never stopped.
#
#     sudo labs/lab9-migrate.sh [--ci]
#
# Topology (one vhost-xdp, a switch of two sockets and an uplink):
#
#   source QEMU      --a.sock-- port 0 \
#        | migrate -d unix:mig.sock      vhost-xdp  port 2 --AF_XDP-- vxhPID ==veth== vxpPID 10.0.0.1
#   destination QEMU --b.sock-- port 1 /                                   (netns vxlab-PID, pings the guest)
#   (the same command line + -incoming unix:mig.sock)
#
# The guest is tests/build_guest.sh's image in agent mode (10.0.0.2).  Both QEMUs have a human
# monitor (HMP) on a pair of fifos (-monitor pipe:): the lab types `migrate` and `info migrate`
# there, as a student would at the (qemu) prompt.  Why one vhost-xdp with two sockets and not two
# vhost-xdp: an AF_XDP socket owns its queue of the veth, so a second one could not bind it; and one
# switch with a port per QEMU is what a host runs (OVS-DPDK: another vhostuser port of the bridge).
#
# Steps: (1) the two QEMUs and the ping; (2) `migrate`, until the source's monitor says completed;
# (3) the messages vhost-xdp decoded (--trace): the log mapped (SET_LOG_BASE), logging on
# (SET_FEATURES with LOG_ALL, SET_VRING_ADDR with VHOST_VRING_F_LOG), the source's rings stopped
# (GET_VRING_BASE) and the destination's started at the same place; (4) QEMU's `info migrate`;
# (5) the pages vhost-xdp marked in the dirty log; (6) the guest announces itself from the
# destination and the switch moves its MAC; (7) the ping's summary.  --ci (or LAB_CI=1): no pauses.
#
# Under TCG on a busy machine QEMU 7.2 sometimes hands the destination a guest that freezes or
# crashes right after the migration (with its own virtio-net too: tests/test_migrate.sh's header).
# The lab then says so, shows the guest's console, and exits 1; it does not try again.
set -u
. "$(dirname "$0")/common.sh"
lab_init lab9 "$@"
[ ${#LAB_ARGS[@]} -eq 0 ] || { echo "usage: sudo $0 [--ci]" >&2; exit 2; }
lab_need_root
lab_need_cmd ip iproute2
lab_need_cmd qemu-system-x86_64 qemu-system-x86
lab_need_cmd busybox busybox-static
lab_build
lab_guest

GUEST_IP=10.0.0.2 GUEST_MAC=52:54:00:12:39:0a
MIG=$LAB_TMP/mig.sock

lab_title "Lab 9: a guest moves: live migration from one vhost-xdp port to another"
lab_netns
# shellcheck disable=SC2034  # (read by common.sh)
LAB_SOCK=$LAB_TMP/a.sock        # lab_start_vx's --socket: port 0, the source
VX_LOG=$LAB_TMP/vhost-xdp.log
lab_start_vx "$VX_LOG" --socket "$LAB_TMP/b.sock" --iface "$LAB_HOST" --pmd-sleep 50 --stats 1 --trace
lab_say "  vhost-xdp --socket a.sock --socket b.sock --iface $LAB_HOST --pmd-sleep 50 --stats 1 --trace"
lab_say "  (the sockets are in $LAB_TMP; the lines below leave that directory out)"

# === Helpers =================================================================

short() { sed "s|$LAB_TMP/||g; s/^vhost-xdp: //"; }
mark() { wc -l <"$VX_LOG"; }
since() { tail -n +$(($1 + 1)) "$VX_LOG"; }       # since MARK: vhost-xdp's lines after MARK
# The two monitors and the guests' agents: tests/lib.sh's hmp_open, hmp, hmp_log and agent_cmd.
monitor() { hmp_open "$LAB_TMP" "$1" || lab_die "mkfifo failed"; lab_track "$HMP_READER"; }
status() { hmp_migrate_status src; }
# gcmd SIDE CMD SECS: a command for the guest's agent on that side.
NCMD=0
gcmd() { NCMD=$((NCMD + 1)); agent_cmd "$LAB_TMP/$1.serial" "$LAB_TMP/$1" "$NCMD" "$2" "$3"; }
replies() { grep -c "bytes from" "$LAB_TMP/ping.out"; }

# === The two QEMUs ===========================================================

guest_accel_migrating      # tests/lib.sh: one TCG thread, under TCG
monitor src
monitor dst
wait_for "socket b" 10 eval 'lab_in_hns test -S "$LAB_TMP/b.sock"' || lab_die "vhost-xdp did not make b.sock"
# ipv6.disable=1: the guest sends nothing of its own, so every frame below is the lab's.
boot() {    # boot NAME SOCKET [QEMU ARGS]
    GUEST_AGENT=$LAB_TMP/$1 GUEST_QEMU_ARGS="-monitor pipe:$LAB_TMP/$1.mon${3:+ $3}" \
        start_guest "$LAB_TMP" "$1" "$2" agent "" "" "vxip=$GUEST_IP/24 ipv6.disable=1" "$GUEST_MAC"
    lab_track "$QEMU_PID"
}
boot src "$LAB_TMP/a.sock"
QSRC=$QEMU_PID
boot dst "$LAB_TMP/b.sock" "-incoming unix:$MIG"
QDST=$QEMU_PID
lab_say "guest: $GUEST_ACCEL_ARGS ($GUEST_ACCEL_WHY), source QEMU pid $QSRC, destination QEMU pid $QDST"

lab_step "1. two QEMUs, one guest: the source runs it on socket a, the destination waits on socket b"
wait_for "the destination to connect" 30 grep -aq "frontend connected on $LAB_TMP/b.sock" "$VX_LOG" ||
    lab_die "the destination QEMU did not connect to b.sock (its log: $(tail -n 3 "$LAB_TMP/dst.qemu.log"))"
wait_for "the source guest" 180 grep -aqs "VXAGENT ready" "$LAB_TMP/src.serial" ||
    lab_die "the source guest did not boot (its console: $(tail -n 3 "$LAB_TMP/src.serial"))"
grep -a "frontend connected" "$VX_LOG" | short | sed 's/^/  /'
# (A few tries: the guest's first ARP answer may come late on a busy machine.)
t0=$SECONDS
until lab_in_ns busybox ping -c 1 -W 2 "$GUEST_IP" >/dev/null; do
    [ $((SECONDS - t0)) -lt 30 ] || lab_die "the peer cannot ping the guest on the source"
done
if command -v tcpdump >/dev/null; then
    # The guest's own ARP frames, as the peer sees them (for step 6).
    ip netns exec "$LAB_NS" tcpdump -l -n -i "$LAB_PEER" "arp and ether src $GUEST_MAC" >"$LAB_TMP/arp.out" 2>"$LAB_TMP/arp.err" &
    lab_track $!
    wait_for "tcpdump" 10 grep -q "listening on" "$LAB_TMP/arp.err"
fi
# (`ip netns exec`, not the function lab_in_ns: with &, a function runs in a subshell, and $! would be
# that shell's pid, not ping's; ping must get the SIGINT that makes it print its summary.)
ip netns exec "$LAB_NS" busybox ping -i 0.1 -W 2 "$GUEST_IP" >"$LAB_TMP/ping.out" 2>&1 &
PING_PID=$!
lab_track "$PING_PID"
wait_for "ten replies" 20 eval '[ "$(replies)" -ge 10 ]' || lab_die "the peer's pings are not answered"
lab_say "  the peer: ping -i 0.1 $GUEST_IP (10 a second): $(replies) replies so far, from the source"
lab_explain <<'EOF'

Both QEMUs have the same command line (memory, device, MAC); the destination's adds
`-incoming unix:mig.sock`: it connects to its vhost-user socket and negotiates features, but it
runs nothing and starts no ring until the guest's memory and state have arrived.  On a real pair
of hosts the two would be on two machines, each with its own switch; here both are ports of one.
EOF
lab_pause

# === The migration ===========================================================

lab_step "2. the migration: on the source's monitor, migrate -d unix:mig.sock"
M0=$(mark) A0=$(replies) t0=$SECONDS st=''
hmp src "migrate_set_parameter downtime-limit 100"     # step 4 says why
hmp src "migrate -d unix:$MIG"
while [ $((SECONDS - t0)) -lt 90 ]; do
    st=$(status)
    case $st in *completed*|*failed*|*cancelled*) break ;; esac
    kill -0 "$QSRC" 2>/dev/null || break
done
A1=$(replies)
lab_say "  ${st:-no answer from the source monitor} (after about $((SECONDS - t0)) s)"
grep -q completed <<<"$st" ||
    lab_die "the migration did not complete: $(hmp_log src | grep -av '^(qemu)' | tail -n 3 | tr '\n' ' ')"
# The pings go on to the destination, or the destination's guest did not survive (see the top).
if ! wait_for "replies from the destination" 20 eval '[ "$(replies)" -ge $((A1 + 10)) ]'; then
    lab_say ""
    lab_say "  THE DESTINATION GUEST DOES NOT ANSWER: $((A1 - A0)) replies during the migration, none after."
    if ! kill -0 "$QDST" 2>/dev/null; then
        lab_say "  The destination QEMU exited: $(tail -n 2 "$LAB_TMP/dst.qemu.log" | tr '\n' ' ')"
    elif gcmd dst "echo VXALIVE" 15; then
        lab_say "  Its kernel still runs commands (its agent answered), but its network is dead."
    else
        hmp dst "info status"; sleep 1
        lab_say "  Its kernel does not answer its agent either: frozen or crashed (QEMU: $(hmp_log dst |
            grep -a "^VM status" | tail -n 1)).  Its console since the migration, the last lines:"
    fi
    tr -d '\r' <"$LAB_TMP/dst.serial" | grep -av "^VX" | tail -n 15 | sed 's/^/    /' | grep . ||
        lab_say "    (nothing)"
    lab_explain <<'EOF'

Under TCG (no KVM) on a loaded machine, QEMU 7.2 sometimes hands the destination a guest that
freezes or crashes right after the migration, with QEMU's own virtio-net as well as with
vhost-user (tests/test_migrate.sh's header says what is known).  This run shows that, not what
the lab is about; run it again, or on a machine with KVM.
EOF
    lab_die "the destination guest does not answer after the migration"
fi
wait_for "the guest's announce in --stats" 10 eval \
    'grep -a "stats: switch port 1 " "$VX_LOG" | tail -n 1 | grep -Eq "moved [1-9]"'
sleep 1.2   # one more --stats round
lab_pause

# === 2. The messages =========================================================

lab_step "3. what vhost-xdp was told (--trace, from the migrate command on)"
# The source's messages up to its rings' stop (GET_VRING_BASE), then the destination's from its
# first SET_VRING_BASE: the source does nothing after the stop, and the destination nothing before.
# (Each of the source's messages also restarts its rings, a "ring N started" line: left out.)
since "$M0" | short | awk '
    /<- GET_VRING_BASE/ && phase == 0 { phase = 1; print "  the source (a.sock), when its guest stops for the last round:" }
    /<- SET_VRING_BASE/ && phase == 1 { phase = 2; print "  the destination (b.sock), once the guest state has arrived:" }
    phase == 0 && /SET_LOG_BASE|dirty log mapped|SET_FEATURES \(2\).*LOG_ALL|dirty logging on|SET_VRING_ADDR.* flags=0x1 / {
        if (!head++) print "  the source (a.sock), as the migration starts:"; print "    " $0 }
    phase == 1 && /GET_VRING_BASE/ { print "    " $0 }
    phase == 2 && /<- SET_VRING_BASE|ring [0-9]+ started/ { print "    " $0; if (/started/ && ++n == 2) exit }'
lab_explain <<'EOF'

vhost-user.rst, "Migration": QEMU copies the guest's memory while the guest runs, in rounds, each
time the pages written since the last.  It sees the guest's own writes, but not the backend's:
vhost-xdp writes received frames and used-ring entries into guest memory behind its back.  So:
  SET_LOG_BASE     QEMU shares a bitmap, one bit per 4 KiB page of guest memory (the log);
                   vhost-xdp maps it and replies (PROTOCOL_F_LOG_SHMFD): QEMU waits for that;
  SET_FEATURES     the same features plus LOG_ALL: from now on every page vhost-xdp writes is
                   marked in the log ("dirty logging on");
  SET_VRING_ADDR   flags=0x1 (VHOST_VRING_F_LOG) per ring: log the used ring's writes too, at the
                   guest-physical address `log=` (QEMU's rings are in its own virtual addresses);
  GET_VRING_BASE   the source guest stopped for the last round: its rings stop, and the reply
                   (num) is where each one stopped: the next avail entry vhost-xdp would take;
  SET_VRING_BASE   on the destination's port (b.sock): the same numbers, so its rings start
                   exactly there ("last_avail_idx"): no packet taken twice, none forgotten.
EOF
lab_pause

# === 3. info migrate =========================================================

lab_step "4. QEMU's side: info migrate on the source's monitor"
hmp_log src | grep -aE "^(total time|downtime|transferred ram|dirty sync count):" | tail -n 4 | sed 's/^/  /'
lab_explain <<'EOF'

Total time: the whole migration, the guest running meanwhile.  Downtime: how long the guest was
stopped for the last round (its last dirty pages and the devices' state); the pings lost below
fall in there.  QEMU stops the guest once it reckons the rest fits in downtime-limit, which the
lab set to 100 ms before step 2 (migrate_set_parameter; QEMU's default is 300 ms, three pings at
10 a second; libvirt calls it migrate-setmaxdowntime).  Transferred ram: what was sent (pages
still zero cost almost nothing).  Dirty sync count: how many times QEMU read the dirty bitmaps,
its own and vhost-xdp's log, one round each.
EOF
lab_pause

# === 4. The pages marked =====================================================

lab_step "5. the pages vhost-xdp marked in the log (--stats)"
grep -a "stats: device 0 .*dirty log: " "$VX_LOG" | tail -n 1 | short | sed 's/^/  /'
lab_explain <<'EOF'

Each frame vhost-xdp gave the guest (the peer's echo requests) was written into a guest buffer,
then a used-ring entry and used->idx; each page written is marked, an atomic OR of its bit
(virtqueue.c, "Live migration: dirty-page logging").  Counted: bits turned from 0 to 1.  QEMU
clears the bits it reads at each sync, so a page written again in the next round counts again;
a few buffers and the used ring's page, written over and over, make a small number.  A page
written and not marked would reach the destination as it was before: a stale frame, or a used
entry the guest's driver finds broken ("id is not a head").  Logging off, it costs one branch.
EOF
lab_pause

# === 5. The announce =========================================================

lab_step "6. the guest announces itself from the destination"
feat=$(guest_features "$LAB_TMP/src.serial")
lab_say "  the guest's driver negotiated VIRTIO_NET_F_GUEST_ANNOUNCE (bit 21): $([ "${feat:21:1}" = 1 ] && echo yes || echo no)"
grep -a "stats: switch port 1 " "$VX_LOG" | tail -n 1 | short | sed -E 's/(moved [0-9]+),.*/\1, .../; s/^/  /'
if [ -s "$LAB_TMP/arp.out" ]; then
    lab_say "  the peer saw the guest's ARP frames (tcpdump, from before the migration on):"
    sed 's/^/    /' "$LAB_TMP/arp.out"
fi
lab_explain <<'EOF'

The switch last saw the guest's MAC on port 0 (the source).  Port 0 went down when the source
stopped its rings, so the switch floods the guest's frames instead of sending them to a stopped
QEMU (switch.c, "A port that is down"), and one copy reaches port 1 once the destination runs.
A switch that kept sending to port 0 (OVS does) would need news, and the guest gives it: it
negotiated GUEST_ANNOUNCE, so on the destination QEMU sets VIRTIO_NET_S_ANNOUNCE in the device's
config and interrupts the guest, whose driver sends gratuitous ARPs ("who-has 10.0.0.2 tell
10.0.0.2") from its MAC and acks on the control queue (virtio 1.2 §5.1.6.5.4); QEMU does that
five times, 50, 150, 250 and 350 ms apart (its announce-* parameters).  The guest's first frame
on port 1 (an announce, or its answer to a flooded ping) moved the MAC there ("moved 1"), as a
switch does for a station that changed ports.  For a guest without GUEST_ANNOUNCE, QEMU would ask
the backend instead (SEND_RARP: send a RARP in the guest's name), which vhost-xdp switches as the
guest's own first frame on its port.  (A "who-has 10.0.0.1" line is the guest checking its
neighbour again, not an announce.)
EOF
lab_pause

# === 6. The ping =============================================================

lab_step "7. the ping that never stopped"
kill -INT "$PING_PID"
wait_for "the ping's summary" 10 grep -q "packets transmitted" "$LAB_TMP/ping.out"
lab_stop "$PING_PID"
sent=$(sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p' "$LAB_TMP/ping.out")
got=$(sed -n 's/.* \([0-9]*\) packets received.*/\1/p' "$LAB_TMP/ping.out")
grep -A1 "ping statistics" "$LAB_TMP/ping.out" | sed 's/^/  /'
lab_say "  replies: $A0 before the migration, $((A1 - A0)) during it, $(( ${got:-0} - A1 )) from the destination; $(( ${sent:-0} - ${got:-0} )) lost"
lab_explain <<'EOF'

The peer never stopped pinging, and the guest never lost its address or its connections: the
same memory, the same MAC, the same rings from the same index.  The pings lost are those that
met the guest stopped (the downtime above): sent after the source stopped its rings and before
the destination ran, they had no guest to reach.
EOF
