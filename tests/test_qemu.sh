#!/usr/bin/env bash
# tests/test_qemu.sh - a Linux guest's own virtio-net driver against the backend in loopback mode.
#
# QEMU (TCG) boots the tiny guest of tests/build_guest.sh with vxtest=loopback: the guest sends ARP
# requests and pings, the backend (--loopback) returns every frame on the guest's RX ring, and the
# guest prints its counters on the serial console ("VXSTAT rx_packets=N tx_packets=M").
#   1. default device: the guest's own packets come back; MRG_RXBUF (bit 15) negotiated
#   2. the backend dies (SIGKILL) and starts again on the same socket: QEMU reconnects
#      (reconnect=1) and packets flow again
#   3. the backend exits on SIGTERM and removes its socket
#   4. a fresh guest with mrg_rxbuf=off: packets come back; MRG_RXBUF not negotiated
#   5. client mode: QEMU listens (server=on), vhost-xdp --client connects; after that QEMU is
#      stopped, a new QEMU on the same path gets the backend again (vhost-xdp only)
#   6. a fresh guest with packed=on: packed virtqueues (virtio 1.2 §2.8), RING_PACKED (bit 34)
#      negotiated, packets come back.  Then the backend is killed (SIGKILL) and restarted: QEMU 7.2
#      cannot tell a new backend where a packed ring stands (it has no used->idx to read back, and
#      we do not offer INFLIGHT_SHMFD), so it sends the base of the previous start; vhost-xdp finds
#      the true position in the descriptors' flags (one line per ring says so), and the guest's
#      packets come back again.
#
# Another backend in place of vhost-xdp (for comparison, or before vhost-xdp exists):
#   VX_BACKEND=dpdk tests/test_qemu.sh            DPDK's own vhost backend (testpmd, io forwarding)
#   VX_BACKEND_CMD='cmd ... {sock} ...' tests/test_qemu.sh
# The command is run with eval; {sock} becomes the socket path (the backend listens, QEMU connects).
set -u
. "$(dirname "$0")/lib.sh"

fails=0
fail() { not_ok "$@"; fails=$((fails + 1)); }
done_testing() { echo "1..$TAP_N"; [ "$fails" -eq 0 ]; exit; }

need_cmd qemu-system-x86_64 "QEMU guest test" || done_testing

dir=$(mktemp -d)
SOCK=$dir/vx.sock
GUEST=${VX_GUEST_DIR:-$TESTS_DIR/guest}
BACKEND_PID= QEMU_PID=

case ${VX_BACKEND:-} in
dpdk) BACKEND_CMD="dpdk-testpmd --lcores '0@0,1@0' --no-huge -m 256 --no-pci --file-prefix=vx-qemu-$$ \
--vdev 'net_vhost0,iface={sock},queues=1' -- --nb-cores=1 --total-num-mbufs=16384 \
--forward-mode=io --port-topology=loop --auto-start --stats-period 10" ;;
'')   BACKEND_CMD=${VX_BACKEND_CMD:-"$(printf %q "$VX") --socket {sock} --loopback"}
      if [ -z "${VX_BACKEND_CMD:-}" ] && [ ! -x "$VX" ]; then
          fail "$VX is built (run make)"; rm -rf "$dir"; done_testing
      fi ;;
*)    echo "# VX_BACKEND=$VX_BACKEND: unknown (known: dpdk)" >&2; fail "backend choice"; rm -rf "$dir"; done_testing ;;
esac

cleanup() {
    stop_pid "$QEMU_PID"; QEMU_PID=
    stop_pid "$BACKEND_PID"; BACKEND_PID=
    rm -rf "$dir"
    # testpmd leaves its runtime directory behind (root: /var/run/dpdk, others: $XDG_RUNTIME_DIR/dpdk).
    [ "${VX_BACKEND:-}" = dpdk ] && rm -rf "/var/run/dpdk/vx-qemu-$$" "${XDG_RUNTIME_DIR:-/nonexistent}/dpdk/vx-qemu-$$"
    return 0
}
on_exit cleanup

# diag FILE...: the tail of each log as TAP comments; for a guest console, also its VX lines
# other than the counters (features, VXREADY, VXERROR).
diag() {
    local f
    for f; do
        [ -s "$f" ] || continue
        case $f in
        *.serial) echo "# --- ${f##*/}: guest lines"
                  tr -d '\r' < "$f" | grep -a 'VX' | grep -av VXSTAT | sed 's/^/#   /'
                  echo "# --- tail of ${f##*/}"
                  tail -n 5 "$f" | tr -d '\r' | sed 's/^/#   /' ;;
        *)        echo "# --- tail of ${f##*/}"
                  tail -n 15 "$f" | tr -d '\r\033' | sed 's/^/#   /' ;;
        esac
    done
}

# start_backend LOG: run the backend on $SOCK, wait until it listens.
start_backend() {
    local log=$1 cmd=${BACKEND_CMD//\{sock\}/$SOCK}
    echo "# backend: $cmd" >> "$log"
    ( eval "exec $cmd" ) < /dev/null >> "$log" 2>&1 &
    BACKEND_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        [ -S "$SOCK" ] && return 0
        kill -0 "$BACKEND_PID" 2>/dev/null || { echo "# the backend exited"; return 1; }
        sleep 0.1
    done
    echo "# timed out after 10s waiting for the backend's socket $SOCK"
    return 1
}

# start_qemu NAME EXTRA_DEVICE_OPTIONS [CHARDEV_OPTIONS]: the loopback guest (lib.sh, start_guest).
start_qemu() { start_guest "$dir" "$1" "$SOCK" loopback "$2" "${3:-}"; }

# guest_rx SERIAL: the guest's last complete rx_packets report (empty before the first one).
guest_rx() {
    tr -d '\r' 2>/dev/null < "$1" | sed -n 's/.*VXSTAT rx_packets=\([0-9]*\) tx_packets=.*/\1/p' | tail -n 1
}

# wait_rx SERIAL MIN SECS: until the guest reports rx_packets > MIN; 1 on timeout or if QEMU or
# the backend died. (A deadline, not a count of sleeps: each poll forks a few processes.)
wait_rx() {
    local serial=$1 min=$2 rx deadline=$((SECONDS + $3))
    while [ "$SECONDS" -lt "$deadline" ]; do
        rx=$(guest_rx "$serial")
        [ -n "$rx" ] && [ "$rx" -gt "$min" ] && return 0
        kill -0 "$QEMU_PID" 2>/dev/null || { echo "# QEMU exited"; return 1; }
        kill -0 "$BACKEND_PID" 2>/dev/null || { echo "# the backend exited"; return 1; }
        sleep 0.2
    done
    echo "# timed out after ${3}s: guest rx_packets=${rx:-none}, needed > $min"
    return 1
}

# check_feature NAME BIT WANT WHAT: feature BIT in the guest's VXFEATURES line is WANT (0 or 1).
check_feature() {
    local name=$1 bit=$2 want=$3 what=$4 bits
    bits=$(guest_features "$dir/$name.serial")
    if [ -n "$bits" ] && [ "${bits:$bit:1}" = "$want" ]; then ok "$what"
    else fail "$what"; echo "# VXFEATURES ${bits:-missing}"; fi
}
# MRG_RXBUF is feature bit 15 (virtio 1.2 §5.1.3), RING_PACKED bit 34 (§6).
check_mrg_rxbuf() { check_feature "$1" 15 "$2" "$3"; }

# === 0. The guest ===
if "$TESTS_DIR/build_guest.sh" "$GUEST" 2> "$dir/build.log"; then
    ok "guest kernel + initramfs built ($GUEST)"
else
    fail "build the guest (tests/build_guest.sh)"; diag "$dir/build.log"; done_testing
fi

# === 1. Default device: the guest's packets come back ===
blog=$dir/backend1.log
if start_backend "$blog"; then
    ok "backend listens on its socket"
    t0=$SECONDS
    start_qemu default ""
    if wait_rx "$dir/default.serial" 0 40; then
        ok "guest's own packets come back (rx_packets=$(guest_rx "$dir/default.serial") after $((SECONDS - t0))s)"
        check_mrg_rxbuf default 1 "guest negotiated MRG_RXBUF by default"

        # === 2. SIGKILL the backend, start it again; QEMU reconnects ===
        kill -KILL "$BACKEND_PID"; wait "$BACKEND_PID" 2>/dev/null; BACKEND_PID=
        sleep 1    # let the guest print the count at which traffic stopped
        rx0=$(guest_rx "$dir/default.serial")
        if [ -e "$SOCK" ]; then echo "# removing the socket the killed backend left behind"; rm -f "$SOCK"; fi
        echo "# backend killed at rx_packets=$rx0; restarting it"
        t0=$SECONDS
        blog=$dir/backend2.log
        if start_backend "$blog" && wait_rx "$dir/default.serial" "$rx0" 20; then
            ok "after SIGKILL + restart of the backend, packets come back again ($rx0 -> $(guest_rx "$dir/default.serial") after $((SECONDS - t0))s)"
        else
            fail "after SIGKILL + restart of the backend, packets come back again"
            diag "$dir/backend1.log" "$blog" "$dir/default.qemu.log" "$dir/default.serial"
        fi
    else
        fail "guest's own packets come back"
        diag "$blog" "$dir/default.qemu.log" "$dir/default.serial"
    fi

    # === 3. Clean stop: the backend removes its socket on SIGTERM ===
    stop_pid "$QEMU_PID"; QEMU_PID=
    if kill -0 "$BACKEND_PID" 2>/dev/null; then
        stop_pid "$BACKEND_PID"; BACKEND_PID=
        if [ ! -e "$SOCK" ]; then ok "backend removed its socket on SIGTERM"
        else fail "backend removed its socket on SIGTERM"; rm -f "$SOCK"; diag "$blog"; fi
    fi
else
    fail "backend listens on its socket"; diag "$blog"
fi
stop_pid "$BACKEND_PID"; BACKEND_PID=
rm -f "$SOCK"

# === 4. mrg_rxbuf=off: a fresh backend and a fresh guest ===
blog=$dir/backend3.log
if start_backend "$blog"; then
    t0=$SECONDS
    start_qemu nomrg ",mrg_rxbuf=off"
    if wait_rx "$dir/nomrg.serial" 0 40; then
        ok "mrg_rxbuf=off: guest's own packets come back (rx_packets=$(guest_rx "$dir/nomrg.serial") after $((SECONDS - t0))s)"
        check_mrg_rxbuf nomrg 0 "mrg_rxbuf=off: MRG_RXBUF not negotiated"
    else
        fail "mrg_rxbuf=off: guest's own packets come back"
        diag "$blog" "$dir/nomrg.qemu.log" "$dir/nomrg.serial"
    fi
else
    fail "mrg_rxbuf=off: backend listens on its socket"; diag "$blog"
fi

# === 6. packed=on: packed virtqueues, and a backend restart in the middle ===
stop_pid "$QEMU_PID"; QEMU_PID=
stop_pid "$BACKEND_PID"; BACKEND_PID=
rm -f "$SOCK"
blog=$dir/backend-packed.log
if start_backend "$blog"; then
    t0=$SECONDS
    start_qemu packed ",packed=on"
    if wait_rx "$dir/packed.serial" 0 40; then
        ok "packed=on: guest's own packets come back (rx_packets=$(guest_rx "$dir/packed.serial") after $((SECONDS - t0))s)"
        check_feature packed 34 1 "packed=on: RING_PACKED (bit 34) negotiated"
        check_mrg_rxbuf packed 1 "packed=on: MRG_RXBUF negotiated too (mergeable RX on a packed ring)"
        kill -KILL "$BACKEND_PID"; wait "$BACKEND_PID" 2>/dev/null; BACKEND_PID=
        sleep 1
        rx0=$(guest_rx "$dir/packed.serial")
        rm -f "$SOCK"
        t0=$SECONDS
        blog=$dir/backend-packed2.log
        echo "# backend killed at rx_packets=$rx0; restarting it"
        if start_backend "$blog" && wait_rx "$dir/packed.serial" "$rx0" 30 &&
           grep -q 'packed ring: SET_VRING_BASE .* is not where the ring stands' "$blog"
        then
            ok "packed=on: after SIGKILL + restart, packets come back again ($rx0 -> $(guest_rx "$dir/packed.serial") after $((SECONDS - t0))s); QEMU's stale base corrected: $(grep -o 'ring [0-9]*: packed ring: SET_VRING_BASE.* chains in flight' "$blog" | head -n 1)"
        else
            fail "packed=on: after SIGKILL + restart, packets come back again, QEMU's stale base corrected"
            diag "$dir/backend-packed.log" "$blog" "$dir/packed.qemu.log" "$dir/packed.serial"
        fi
    else
        fail "packed=on: guest's own packets come back"
        diag "$blog" "$dir/packed.qemu.log" "$dir/packed.serial"
    fi
else
    fail "packed=on: backend listens on its socket"; diag "$blog"
fi

# === 5. Client mode: QEMU listens, vhost-xdp --client connects, and again after QEMU goes away ===
stop_pid "$QEMU_PID"; QEMU_PID=
stop_pid "$BACKEND_PID"; BACKEND_PID=
rm -f "$SOCK"
if [ -z "${VX_BACKEND:-}${VX_BACKEND_CMD:-}" ]; then
    blog=$dir/backend4.log
    "$VX" --socket "$SOCK" --client --loopback < /dev/null > "$blog" 2>&1 &
    BACKEND_PID=$!
    sleep 1.5   # the backend is up first and retries every second until QEMU listens
    for round in 1 2; do
        t0=$SECONDS
        start_qemu "client$round" "" "server=on,wait=off"
        if wait_rx "$dir/client$round.serial" 0 40; then
            ok "--client, QEMU listening (guest $round): guest's own packets come back (rx_packets=$(guest_rx "$dir/client$round.serial") after $((SECONDS - t0))s)"
        else
            fail "--client, QEMU listening (guest $round): guest's own packets come back"
            diag "$blog" "$dir/client$round.qemu.log" "$dir/client$round.serial"
        fi
        stop_pid "$QEMU_PID"; QEMU_PID=
        rm -f "$SOCK"
    done
    if kill -0 "$BACKEND_PID" 2>/dev/null && [ "$(grep -c 'frontend connected' "$blog")" -ge 2 ]; then
        ok "--client: the backend reconnected to the second QEMU after the first went away"
    else
        fail "--client: the backend reconnected to the second QEMU after the first went away"; diag "$blog"
    fi
fi

done_testing
