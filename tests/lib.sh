# tests/lib.sh - shared helpers for the shell tests (sourced, not run).
#
# Every shell test prints TAP lines ("ok N - what", "not ok N - what") and
# tests/run.sh adds them up.  Under CI=true a missing peer is a failure, not a
# skip: a green CI must have run the real peers.

TAP_N=0
ok()     { TAP_N=$((TAP_N + 1)); echo "ok $TAP_N - $*"; }
not_ok() { TAP_N=$((TAP_N + 1)); echo "not ok $TAP_N - $*"; }
# check "description" command...: ok if the command succeeds
check()  { local d=$1; shift; if "$@"; then ok "$d"; else not_ok "$d"; fi; }
skip()   { TAP_N=$((TAP_N + 1)); echo "ok $TAP_N - $* # SKIP"; }

# need_cmd CMD "what for": returns 1 (after printing a skip, or a failure under
# CI=true) when CMD is not installed.
need_cmd() {
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "${CI:-}" = true ]; then not_ok "$2: $1 not installed (CI=true: a missing peer is a failure)"
    else skip "$2: $1 not installed"; fi
    return 1
}

# Where the binary under test is (run from the top of the tree).
VX=${VX:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/vhost-xdp}
TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# wait_for "what" SECONDS command...: poll every 0.1 s until the command succeeds.
wait_for() {
    local what=$1 secs=$2; shift 2
    local i
    for ((i = 0; i < secs * 10; i++)); do "$@" && return 0; sleep 0.1; done
    echo "# timed out after ${secs}s waiting for $what" >&2
    return 1
}

# stop_pid PID: SIGTERM what we started, SIGKILL if it lingers; never by name.
stop_pid() {
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    return 0
}

# start_guest DIR NAME SOCK MODE [DEVICE_OPTIONS] [CHARDEV_OPTIONS]: boot the test guest (kernel and
# initramfs in $GUEST, from tests/build_guest.sh) under TCG with the DESIGN.md recipe, its virtio-net
# on the vhost-user socket SOCK; vxtest=MODE picks what the guest does.  Serial console in
# DIR/NAME.serial, QEMU's own output in DIR/NAME.qemu.log; sets QEMU_PID.  CHARDEV_OPTIONS default to
# reconnect=1 (QEMU connects, and reconnects after the backend dies); server=on,wait=off makes QEMU
# listen instead.  vectors=0: QEMU 7.2 + vhost-user + MSI-X under TCG crashes.
start_guest() {
    local dir=$1 name=$2 sock=$3 mode=$4 devopts=${5:-} chardev=${6:-reconnect=1}
    qemu-system-x86_64 -accel tcg -machine q35 -smp 1 -m 256M -nodefaults -no-user-config \
        -display none -no-reboot -serial "file:$dir/$name.serial" \
        -object memory-backend-memfd,id=mem,size=256M,share=on -numa node,memdev=mem \
        -chardev "socket,id=chr0,path=$sock,$chardev" \
        -netdev vhost-user,id=net0,chardev=chr0 \
        -device "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,romfile=,vectors=0$devopts" \
        -kernel "$GUEST/vmlinuz" -initrd "$GUEST/initramfs.cpio.gz" \
        -append "console=ttyS0 quiet panic=-1 vxtest=$mode" \
        < /dev/null > "$dir/$name.qemu.log" 2>&1 &
    QEMU_PID=$!
}

# guest_features SERIAL: the feature bits the guest driver negotiated (character i = bit i).
guest_features() {
    tr -d '\r' 2>/dev/null < "$1" | sed -n 's/.*VXFEATURES \([01]*\).*/\1/p' | head -n 1
}
