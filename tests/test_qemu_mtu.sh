#!/usr/bin/env bash
# tests/test_qemu_mtu.sh - QEMU's host_mtu=N against vhost-xdp (NET_SET_MTU, VIRTIO_NET_F_MTU).
#
# With `-device virtio-net-pci,host_mtu=1400`, QEMU offers VIRTIO_NET_F_MTU (bit 3) to the guest
# with mtu = 1400 in the device's config space (virtio 1.2 §5.1.4), but only if the backend offers
# the bit too, and it sends NET_SET_MTU 1400 to a backend that has PROTOCOL_F_NET_MTU, refusing to
# start the device if the backend says no.
#   1. vhost-xdp --loopback (largest MTU 65535): the guest negotiates bit 3, vhost-xdp logs
#      "NET_SET_MTU 1400 accepted", and the guest's packets come back
#   2. vhost-xdp --loopback --mtu 1300: vhost-xdp logs "NET_SET_MTU 1400 refused" and QEMU reports
#      that the backend does not support the MTU
# The test guest prints VXFEATURES (the negotiated bits), not eth0's MTU: bit 3 and the log line
# together say that the guest was given 1400.
set -u
. "$(dirname "$0")/lib.sh"

need_cmd qemu-system-x86_64 "QEMU host_mtu test" || done_testing
[ -x "$VX" ] || { not_ok "$VX is built (run make)"; done_testing; }

dir=$(mktemp -d)
SOCK=$dir/vx.sock
GUEST=${VX_GUEST_DIR:-$TESTS_DIR/guest}
BACKEND_PID='' QEMU_PID=''
cleanup() {
    stop_pid "$QEMU_PID"; QEMU_PID=
    stop_pid "$BACKEND_PID"; BACKEND_PID=
    rm -rf "$dir"
    return 0
}
on_exit cleanup

# show FILE...: the tail of each file as TAP comments.
show() { local f; for f; do [ -s "$f" ] && { echo "# --- tail of ${f##*/}"; tail -n 12 "$f" | tr -d '\r' | sed 's/^/#   /'; }; done; return 0; }

# start_vx LOG ARGS...: vhost-xdp on $SOCK, until its socket exists.
start_vx() {
    local log=$1; shift
    "$VX" --socket "$SOCK" --loopback "$@" < /dev/null > "$log" 2>&1 &
    BACKEND_PID=$!
    wait_for "vhost-xdp's socket" 10 test -S "$SOCK"
}

# guest_rx SERIAL: the guest's last rx_packets report (empty before the first one).
guest_rx() { tr -d '\r' 2>/dev/null < "$1" | sed -n 's/.*VXSTAT rx_packets=\([0-9]*\) tx_packets=.*/\1/p' | tail -n 1; }
rx_moved() { local rx; rx=$(guest_rx "$1"); [ -n "$rx" ] && [ "$rx" -gt 0 ]; }

check "guest kernel + initramfs built ($GUEST)" "$TESTS_DIR/build_guest.sh" "$GUEST" 2> "$dir/build.log" ||
    { show "$dir/build.log"; done_testing; }

# === 1. host_mtu=1400, vhost-xdp accepts up to 65535 ===
log=$dir/vx1.log
if check "vhost-xdp --loopback listens" start_vx "$log"; then
    start_guest "$dir" mtu "$SOCK" loopback ",host_mtu=1400"
    if check "host_mtu=1400: the guest's packets come back" wait_for "guest rx_packets > 0" 60 rx_moved "$dir/mtu.serial"; then
        bits=$(guest_features "$dir/mtu.serial")
        if [ "${bits:3:1}" = 1 ]; then ok "host_mtu=1400: the guest negotiated VIRTIO_NET_F_MTU (bit 3)"
        else not_ok "host_mtu=1400: the guest negotiated VIRTIO_NET_F_MTU (bit 3)"; echo "# VXFEATURES ${bits:-missing}"; fi
        check "host_mtu=1400: vhost-xdp logged 'NET_SET_MTU 1400 accepted'" grep -q 'NET_SET_MTU 1400 accepted' "$log"
        grep -h 'MTU' "$log" | sed 's/^/#   /'
    fi
    [ "$TAP_FAILED" -eq 0 ] || show "$log" "$dir/mtu.qemu.log" "$dir/mtu.serial"
fi
stop_pid "$QEMU_PID"; QEMU_PID=
stop_pid "$BACKEND_PID"; BACKEND_PID=
rm -f "$SOCK"

# === 2. host_mtu=1400 against --mtu 1300: refused, and QEMU says so ===
failed_before=$TAP_FAILED
log=$dir/vx2.log
if check "vhost-xdp --loopback --mtu 1300 listens" start_vx "$log" --mtu 1300; then
    start_guest "$dir" small "$SOCK" loopback ",host_mtu=1400"
    check "--mtu 1300: vhost-xdp logged 'NET_SET_MTU 1400 refused'" \
        wait_for "the refusal in vhost-xdp's log" 60 grep -q 'NET_SET_MTU 1400 refused' "$log"
    check "--mtu 1300: QEMU reports that the backend does not support the MTU" \
        wait_for "QEMU's error" 10 grep -q 'MTU not supported by the backend' "$dir/small.qemu.log"
    grep -h 'MTU' "$log" "$dir/small.qemu.log" | sed 's/^/#   /'
    [ "$TAP_FAILED" -eq "$failed_before" ] || show "$log" "$dir/small.qemu.log" "$dir/small.serial"
fi
done_testing
