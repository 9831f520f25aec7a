#!/usr/bin/env bash
# labs/lab2-ring.sh - Lab 2: the rings, watched with the ring view while the guest pings.
#
#     sudo labs/lab2-ring.sh [--ci]
#
# The demo's setup (lab_netns, vhost-xdp on the veth's host end through AF_XDP, the test guest
# pinging 10.0.0.1 every half second); then three snapshots of vhost-xdp's ring view, each asked
# for with SIGUSR1 at a moment the lab chooses (the same view `--ring-view SECONDS` prints
# periodically):
#   1. once the guest's pings get replies;
#   2. a few seconds later: every index has moved on, by about the number of packets each way;
#   3. after the peer's end of the veth is set down: the guest still sends (its TX ring moves) but
#      nothing comes back (its RX ring's used->idx stands still).
# After each later snapshot the lab prints how far each index moved.  Interactive runs wait for
# Enter before each snapshot; --ci (or LAB_CI=1) waits a fixed few seconds instead.
# The ring view is printed by vq_ring_view() in virtqueue.c; the fields are virtio 1.2 §2.7.
set -u
. "$(dirname "$0")/common.sh"
lab_init lab2 "$@"
[ ${#LAB_ARGS[@]} -eq 0 ] || { echo "usage: sudo $0 [--ci]" >&2; exit 2; }
lab_need_root
lab_need_cmd ip iproute2
lab_need_cmd qemu-system-x86_64 qemu-system-x86
lab_build
lab_guest

lab_title "Lab 2: the rings, watched while the guest pings"
lab_netns
VX_LOG=$LAB_TMP/vhost-xdp.log
lab_start_vx "$VX_LOG" --iface "$LAB_HOST"
lab_boot_guest guest ping
lab_say "waiting for the guest to boot and its pings to get replies..."
lab_wait_ping 1 || exit 1
lab_say "the guest's pings get replies: $(lab_ping_line)"

lab_explain <<'EOF'

Each snapshot shows, per ring, the numbers both sides keep in the shared ring memory (virtio 1.2
§2.7) and the ones only vhost-xdp keeps:
  avail->idx      written by the guest: how many buffers it has ever offered (a free-running u16)
  used->idx       written by vhost-xdp: how many it has ever given back
  last_avail_idx  vhost-xdp's own: the next avail slot it will take; in flight = avail->idx minus it
  used_event      (event idx) written by the guest: "interrupt me when used->idx passes this"
  avail_event     (event idx) written by vhost-xdp: "kick me when avail->idx passes this"; we poll
                  the ring instead, so it stays where it is and the guest hardly ever kicks
Ring 0 is the guest's RX ring: it offers empty buffers for us to fill, so avail->idx runs ahead of
used->idx by about the ring's size and "in flight" is large.  Ring 1 is its TX ring: it offers
packets to send; we take each one at once, so in flight is 0 and used->idx = avail->idx.
EOF

# snapshot N [quiet]: ask vhost-xdp for its ring view (SIGUSR1), wait until it is in the log, print
# it without the legend (unless quiet), and keep the indices of rings 0 and 1 in IDX[N] ("avail0
# used0 avail1 used1") and the guest's replies so far in OKS[N].
VIEWS=0
declare -A IDX OKS
snapshot() {
    local n=$1 quiet=${2:-} block
    VIEWS=$((VIEWS + 1))
    kill -USR1 "$VX_PID"
    wait_for "the ring view in vhost-xdp's log" 10 \
        eval '[ "$(grep -c "  legend: in flight" "$VX_LOG")" -ge '"$VIEWS"' ]' || lab_die "no ring view from vhost-xdp"
    # The VIEWS-th block: from "ring view:" up to its legend.
    block=$(awk -v k="$VIEWS" '/vhost-xdp: ring view:/ { n++ } n == k && /  legend:/ { exit } n == k' "$VX_LOG")
    OKS[$n]=$(lab_ping_ok)
    if [ -z "$quiet" ]; then
        lab_step "snapshot $n (the guest's $(lab_ping_line))"
        printf '%s\n' "$block"
    fi
    IDX[$n]=$(printf '%s\n' "$block" | awk '
        /^  ring [0-9]+ /  { r = $2 }
        /avail->idx/       { a[r] = $2 }
        /used->idx/        { u[r] = $2 }
        END { print a[0], u[0], a[1], u[1] }')
}

# moved A B [FROM]: how far each index moved from snapshot A to snapshot B (u16 arithmetic: they wrap).
moved() {
    local a0 u0 a1 u1 b0 v0 b1 v1
    read -r a0 u0 a1 u1 <<<"${IDX[$1]}"
    read -r b0 v0 b1 v1 <<<"${IDX[$2]}"
    lab_say "from ${3:-snapshot $1} to snapshot $2: the guest got $((OKS[$2] - OKS[$1])) more replies;" \
        "ring 1 (TX) avail->idx +$(((b1 - a1) & 0xffff)) used->idx +$(((v1 - u1) & 0xffff));" \
        "ring 0 (RX) avail->idx +$(((b0 - a0) & 0xffff)) used->idx +$(((v0 - u0) & 0xffff))"
}

# wait_a_bit: the time between two snapshots: Enter in an interactive run, else a few seconds.
wait_a_bit() {
    if [ "$LAB_CI" = 0 ] && [ -t 0 ]; then lab_pause; else sleep "$1"; fi
}

snapshot 1
lab_explain <<'EOF'

Note ring 0's used_event: the guest asks for an interrupt as soon as used->idx passes it, that is
for the very next packet (it is idle, so it wants to hear at once).  Now the guest goes on pinging.
EOF
wait_a_bit 3
snapshot 2
moved 1 2
lab_explain <<'EOF'

Each ping is one packet on ring 1 (echo request, plus an ARP now and then) and one on ring 0 (the
reply): avail->idx and used->idx of ring 1 moved together (we take each packet as soon as it is
offered; a snapshot may catch one in flight), and
ring 0's used->idx moved by the replies we wrote into the guest's buffers.  Ring 0's avail->idx
moves less often, and then by a lot: Linux's virtio_net refills its RX ring in batches, once more
than 32 buffers (half its NAPI budget) have been used, so in flight shrinks, then jumps back.

Now the peer's end of the veth goes down: the guest keeps pinging, nothing answers.  The lab waits
a second (a packet already on its way may still arrive), reads the ring view without showing it,
and takes snapshot 3 a little later.
EOF
lab_in_ns ip link set dev "$LAB_PEER" down
sleep 1
snapshot down quiet
wait_a_bit 3
snapshot 3
moved down 3 "a second after the link went down"
lab_explain <<'EOF'

Ring 1 still moves: the guest sends, and vhost-xdp takes each packet and sends it to a veth whose
other end is down (the kernel drops it there).  Ring 0 stands still: no reply comes back, so we
write nothing into the guest's RX buffers and used->idx does not move.
EOF
lab_say ""
lab_say "lab2: done"
