#!/usr/bin/env bash
# labs/traces/capture.sh - record the vhost-user conversations the comments and labs refer to, with
# vhost-xdp's own --trace, from real frontends:
#
#   labs/traces/capture.sh qemu     -> labs/traces/qemu-7.2.trace
#       QEMU 7.2 with a Linux guest (the test guest of tests/build_guest.sh, kernel virtio_net,
#       vxtest=loopback) on `vhost-xdp --loopback --trace`: QEMU's start-up, the guest driver's
#       probe and DRIVER_OK, traffic, then QEMU's `quit` (the rings stopped).
#   labs/traces/capture.sh dpdk     -> labs/traces/dpdk-22.11.trace
#       DPDK 22.11's testpmd with a virtio_user port (io forwarding, `start tx_first`) on
#       `vhost-xdp --loopback --trace`: the port's start, traffic, `stop`, `quit`.
#   labs/traces/capture.sh dpdk-reconnect -> labs/traces/dpdk-22.11-reconnect.trace
#       The same testpmd as a server (virtio_user server=1) and `vhost-xdp --client --loopback`,
#       killed with SIGKILL while packets flow and started again: the second process's side of
#       virtio_user resuming its session (no SET_OWNER; split rings sent base 0, resumed at used->idx),
#       then traffic again, `stop`, `quit`.
#
# Each file is vhost-xdp's stderr, "<-" for a message received, "->" for our reply, "=" for a ring
# event, with a header saying how it was made; addresses and fd numbers are those of that run.
# Needs qemu-system-x86 and busybox-static (qemu), dpdk-dev (dpdk); no root.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
what=${1:-}
case $what in qemu|dpdk|dpdk-reconnect) ;; *) echo "usage: $0 qemu|dpdk|dpdk-reconnect" >&2; exit 2 ;; esac
make -s vhost-xdp
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vxtrace.XXXXXX")
pids=()
cleanup() { local p; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
sock=$tmp/vx.sock
if [ "$what" != dpdk-reconnect ]; then
    ./vhost-xdp --socket "$sock" --loopback --trace > "$tmp/vx.log" 2>&1 &
    vx=$!; pids+=("$vx")
    for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
fi

if [ "$what" = qemu ]; then
    out=labs/traces/qemu-7.2.trace
    tests/build_guest.sh >/dev/null
    mkfifo "$tmp/mon.in"
    exec 8<>"$tmp/mon.in"
    qemu-system-x86_64 -accel tcg -machine q35 -smp 1 -m 256M -nodefaults -no-user-config -display none \
        -no-reboot -serial "file:$tmp/serial" -monitor stdio \
        -object memory-backend-memfd,id=mem,size=256M,share=on -numa node,memdev=mem \
        -chardev "socket,id=chr0,path=$sock,reconnect=1" -netdev vhost-user,id=net0,chardev=chr0 \
        -device virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,romfile=,vectors=0 \
        -kernel tests/guest/vmlinuz -initrd tests/guest/initramfs.cpio.gz \
        -append 'console=ttyS0 quiet panic=-1 vxtest=loopback' <&8 > "$tmp/qemu.log" 2>&1 &
    q=$!; pids+=("$q")
    for _ in $(seq 900); do grep -q 'VXSTAT rx_packets=[1-9]' "$tmp/serial" 2>/dev/null && break; sleep 0.1; done
    sleep 2
    echo quit >&8
    for _ in $(seq 100); do kill -0 "$q" 2>/dev/null || break; sleep 0.1; done
    how="QEMU $(qemu-system-x86_64 --version | head -n 1 | sed 's/QEMU emulator version //'), TCG, q35, 256 MiB memfd share=on,
# virtio-net-pci vectors=0, guest: Debian 12's 6.1 cloud kernel, virtio_net, pinging itself through
# the loopback; then \`quit\` on QEMU's monitor."
    guest_line=$(tr -d '\r' < "$tmp/serial" | grep -a 'VXSTAT' | tail -n 1)
elif [ "$what" = dpdk-reconnect ]; then
    out=labs/traces/dpdk-22.11-reconnect.trace
    mkfifo "$tmp/fe.in"
    exec 9<>"$tmp/fe.in"
    dpdk-testpmd --lcores '0@0,1@0' --no-huge -m 256 --no-pci --file-prefix="vxtrace-$$" \
        --vdev "net_virtio_user0,path=$sock,queues=1,server=1" \
        -- -i --nb-cores=1 --total-num-mbufs=16384 --forward-mode=io <&9 > "$tmp/testpmd.log" 2>&1 &
    t=$!; pids+=("$t")
    for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
    ./vhost-xdp --socket "$sock" --client --loopback > "$tmp/vx1.log" 2>&1 &
    vx1=$!; pids+=("$vx1")
    for _ in $(seq 100); do grep -q 'frontend connected' "$tmp/vx1.log" && break; sleep 0.1; done
    sleep 1
    printf '%s\n' "start tx_first 4" >&9
    sleep 2
    kill -KILL "$vx1"
    ./vhost-xdp --socket "$sock" --client --loopback --trace > "$tmp/vx.log" 2>&1 &
    vx=$!; pids+=("$vx")
    for _ in $(seq 100); do grep -q 'ring 1 started' "$tmp/vx.log" && break; sleep 0.1; done
    printf '%s\n' stop "start tx_first 4" >&9
    sleep 2
    printf '%s\n' stop quit >&9
    for _ in $(seq 100); do kill -0 "$t" 2>/dev/null || break; sleep 0.1; done
    how="DPDK $(dpkg-query -W -f '${Version}' dpdk-dev 2>/dev/null || echo 22.11) dpdk-testpmd, --no-huge,
# --vdev net_virtio_user0,path=SOCKET,queues=1,server=1 (split rings, mrg_rxbuf=1 in_order=1), io
# forwarding, \`start tx_first 4\` with a first \`vhost-xdp --client --loopback\`, killed with SIGKILL
# while packets flowed; this is the second one's trace, from its connection: virtio_user resumes its
# session, then \`stop\`, \`start tx_first 4\`, \`stop\` and \`quit\`."
    guest_line=$(grep -a 'RX-packets' "$tmp/testpmd.log" | tail -n 1 | tr -s ' ')
    rm -rf "${DPDK_RUNDIR:-/var/run/dpdk}/vxtrace-$$" 2>/dev/null || true
else
    out=labs/traces/dpdk-22.11.trace
    mkfifo "$tmp/fe.in"
    exec 9<>"$tmp/fe.in"
    dpdk-testpmd --lcores '0@0,1@0' --no-huge -m 256 --no-pci --file-prefix="vxtrace-$$" \
        --vdev "net_virtio_user0,path=$sock,queues=1" \
        -- -i --nb-cores=1 --total-num-mbufs=16384 --forward-mode=io <&9 > "$tmp/testpmd.log" 2>&1 &
    t=$!; pids+=("$t")
    printf '%s\n' "start tx_first 4" >&9
    sleep 2
    printf '%s\n' stop quit >&9
    for _ in $(seq 100); do kill -0 "$t" 2>/dev/null || break; sleep 0.1; done
    how="DPDK $(dpkg-query -W -f '${Version}' dpdk-dev 2>/dev/null || echo 22.11) dpdk-testpmd, --no-huge,
# --vdev net_virtio_user0,path=SOCKET,queues=1 (mrg_rxbuf=1 in_order=1 packed_vq=0 by default), io
# forwarding, \`start tx_first 4\`, then \`stop\` and \`quit\`."
    guest_line=$(grep -a 'RX-packets' "$tmp/testpmd.log" | tail -n 1 | tr -s ' ')
    rm -rf "${DPDK_RUNDIR:-/var/run/dpdk}/vxtrace-$$" 2>/dev/null || true
fi
sleep 0.5
kill -TERM "$vx"; wait "$vx" 2>/dev/null || true
{
    echo "# $out: a real vhost-user conversation, recorded by labs/traces/capture.sh $what"
    echo "# with vhost-xdp --loopback --trace on $(date -u +%Y-%m-%d)."
    echo "# Frontend: $how"
    echo "# Lines: \"<-\" a message we received (request name and number, header flags, payload, fds),"
    echo "# \"->\" our reply, \"=\" a ring event.  Addresses and fd numbers are those of this run."
    [ -n "$guest_line" ] && echo "# The frontend's own count at the end: $guest_line"
    # The socket as the README's commands name it, not this run's temporary directory.
    grep -a -E 'trace: |vhost-xdp: (ring|frontend|exit|pmd|MTU|port|listening|signal|SET_[A-Z_]* before)' "$tmp/vx.log" |
        sed "s/^vhost-xdp: //; s|$sock|/tmp/vx.sock|g"
} > "$out"
echo "$out: $(grep -c ' <- ' "$out") messages received"
