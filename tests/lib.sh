# tests/lib.sh - shared helpers for the shell tests (sourced, not run).
#
# Every shell test prints TAP lines ("ok N - what", "not ok N - what") and
# tests/run.sh adds them up.  Under CI=true a missing peer is a failure, not a
# skip: a green CI must have run the real peers.

TAP_N=0 TAP_FAILED=0
ok()     { TAP_N=$((TAP_N + 1)); echo "ok $TAP_N - $*"; }
not_ok() { TAP_N=$((TAP_N + 1)); TAP_FAILED=$((TAP_FAILED + 1)); echo "not ok $TAP_N - $*"; }
# check "description" command...: ok if the command succeeds; returns its success, so that
# `check "set-up" ... || done_testing` stops a test whose set-up failed.
check()  { local d=$1; shift; if "$@"; then ok "$d"; else not_ok "$d"; return 1; fi; }
skip()   { TAP_N=$((TAP_N + 1)); echo "ok $TAP_N - $* # SKIP"; }
# done_testing: the TAP plan line, then exit: status 1 if anything failed.
done_testing() { echo "1..$TAP_N"; [ "$TAP_FAILED" -eq 0 ]; exit; }
# missing "what is missing": a skip, or a failure under CI=true; then the test stops.
missing() {
    if [ "${CI:-}" = true ]; then not_ok "$1 (CI=true: a failure)"; else skip "$1"; fi
    done_testing
}

# need_cmd CMD "what for": returns 1 (after printing a skip, or a failure under
# CI=true) when CMD is not installed.
need_cmd() {
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "${CI:-}" = true ]; then not_ok "$2: $1 not installed (CI=true: a missing peer is a failure)"
    else skip "$2: $1 not installed"; fi
    return 1
}
# require "what for" CMD...: every CMD installed, else the test stops (need_cmd's skip or failure).
require() { local what=$1 c; shift; for c; do need_cmd "$c" "$what" || done_testing; done; }

# on_exit FUNC: FUNC runs however the test ends: its own exit (done_testing), Ctrl-C or SIGTERM.
# bash runs an EXIT trap on exit, not when a signal kills it: the two other traps turn SIGINT and
# SIGTERM into exits (with the shell's usual statuses, 130 and 143), so that what a test made (netns,
# veth, processes it started) is removed even when it is stopped half-way.
# shellcheck disable=SC2064  # "$1" is expanded now on purpose: the name of the function to run
on_exit() { trap "$1" EXIT; trap 'exit 130' INT; trap 'exit 143' TERM; }

# isnum VALUE: a non-negative decimal integer (a counter read from a peer's output).
isnum() { [[ ${1:-} =~ ^[0-9]+$ ]]; }

# Where DPDK's EAL keeps each instance's run-time files (a directory per --file-prefix): the tests
# and the bench remove their own prefixes' directories when they end.
if [ "$(id -u)" = 0 ]; then DPDK_RUNDIR=/var/run/dpdk; else DPDK_RUNDIR=${XDG_RUNTIME_DIR:-/tmp}/dpdk; fi

# Where the binary under test is (run from the top of the tree).
VX=${VX:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/vhost-xdp}
TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# need_afxdp_tool: tests/afxdp_tool (the AF_XDP tests' peer) in TOOL, built here if the Makefile has
# not built it or it is older than its sources; a failed build is a failure and the test stops.
need_afxdp_tool() {
    local top
    top=$(cd "$TESTS_DIR/.." && pwd)
    TOOL=$TESTS_DIR/afxdp_tool
    if [ ! -x "$TOOL" ] || [ "$TOOL" -ot "$TESTS_DIR/afxdp_tool.c" ] || [ "$TOOL" -ot "$top/nic_afxdp.c" ] ||
       [ "$TOOL" -ot "$top/vhost_xdp.h" ]; then
        ${CC:-gcc} -std=gnu11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -pthread -I"$top" \
            "$TESTS_DIR/afxdp_tool.c" "$top/nic_afxdp.c" -o "$TOOL" || { not_ok "build tests/afxdp_tool"; done_testing; }
    fi
}

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

# === Which accelerator the guest runs on: KVM when it really works, else TCG ===
# guest_accel: decides once per shell and sets GUEST_ACCEL (kvm or tcg), GUEST_ACCEL_ARGS (QEMU's
# options for it), GUEST_VECTORS (",vectors=0" under TCG, empty under KVM) and GUEST_ACCEL_WHY (one
# line saying why, for a lab or the demo to print).  VX_ACCEL=tcg forces TCG, VX_ACCEL=kvm forces KVM
# (to overrule the probe); VX_ACCEL=auto, the default, probes:
#   1. /dev/kvm exists and QEMU can open it (`-machine none`: no guest, a tenth of a second);
#   2. a guest kernel actually runs under it: $GUEST/vmlinuz with earlyprintk prints "Linux version"
#      on its serial port within 10 s.  Step 1 alone is not enough: under some nested hypervisors
#      /dev/kvm opens and the BIOS runs, but the kernel hangs when it switches to long mode.  The
#      answer of step 2 is kept in $GUEST/.kvm-probe for the rest of the host's boot (boot_id).
# Under TCG, QEMU 7.2 + vhost-user + MSI-X crashes: the device gets vectors=0 (legacy INTx).
guest_accel() {
    [ -n "${GUEST_ACCEL:-}" ] && return 0
    local why
    case ${VX_ACCEL:-auto} in
    tcg) why="VX_ACCEL=tcg" ;;
    kvm) GUEST_ACCEL=kvm GUEST_ACCEL_WHY="VX_ACCEL=kvm" ;;
    auto)
        if [ ! -e /dev/kvm ]; then
            why="no /dev/kvm on this machine"
        elif ! qemu-system-x86_64 -accel kvm -machine none -nodefaults -display none -monitor stdio \
                <<<quit >/dev/null 2>&1; then
            why="/dev/kvm exists but QEMU cannot open it: permissions, or KVM disabled in the firmware"
        elif kvm_runs_a_kernel; then
            GUEST_ACCEL=kvm GUEST_ACCEL_WHY="/dev/kvm works, a guest kernel boots under it"
        else
            why="/dev/kvm opens but a guest kernel hangs under it, as under some nested hypervisors"
        fi ;;
    *) why="VX_ACCEL=${VX_ACCEL} is not auto, kvm or tcg" ;;
    esac
    if [ "${GUEST_ACCEL:-}" = kvm ]; then
        GUEST_ACCEL_ARGS="-accel kvm -cpu host" GUEST_VECTORS=""
    else
        GUEST_ACCEL=tcg GUEST_ACCEL_WHY="$why" GUEST_ACCEL_ARGS="-accel tcg" GUEST_VECTORS=",vectors=0"
    fi
}

# kvm_runs_a_kernel: probe 2 of guest_accel (status 0 = it runs), remembered per boot in $GUEST/.kvm-probe.
kvm_runs_a_kernel() {
    local cache=$GUEST/.kvm-probe boot dir pid i found=1
    boot=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)
    if [ -n "$boot" ] && [ -f "$cache" ]; then
        case $(cat "$cache") in "$boot yes") return 0 ;; "$boot no") return 1 ;; esac
    fi
    dir=$(mktemp -d "${TMPDIR:-/tmp}/vx-kvm-probe.XXXXXX") || return 1
    qemu-system-x86_64 -accel kvm -cpu host -machine q35 -m 128M -nodefaults -no-user-config -display none \
        -no-reboot -serial "file:$dir/serial" -kernel "$GUEST/vmlinuz" \
        -append 'console=ttyS0 earlyprintk=serial,ttyS0 panic=-1' </dev/null >/dev/null 2>&1 &
    pid=$!
    for ((i = 0; i < 100; i++)); do
        grep -q 'Linux version' "$dir/serial" 2>/dev/null && { found=0; break; }
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    grep -q 'Linux version' "$dir/serial" 2>/dev/null && found=0
    stop_pid "$pid"
    rm -rf "$dir"
    if [ -n "$boot" ]; then
        echo "$boot $([ $found = 0 ] && echo yes || echo no)" 2>/dev/null > "$cache.$$" && mv "$cache.$$" "$cache"
    fi
    return $found
}

# start_guest DIR NAME SOCK MODE [DEVICE_OPTIONS] [CHARDEV_OPTIONS] [KERNEL_ARGS] [MAC]: boot the test
# guest (kernel and initramfs in $GUEST, from tests/build_guest.sh) with the DESIGN.md recipe, under
# KVM or TCG as guest_accel decides, its virtio-net on the vhost-user socket SOCK; vxtest=MODE picks
# what the guest does.  Serial console in DIR/NAME.serial, QEMU's own output in DIR/NAME.qemu.log;
# sets QEMU_PID.  CHARDEV_OPTIONS default to reconnect=1 (QEMU connects, and reconnects after the
# backend dies); server=on,wait=off makes QEMU listen instead.  KERNEL_ARGS are added to the guest's
# command line (e.g. "vxip=10.0.0.3/24 vxpeer=10.0.0.2"); MAC defaults to 52:54:00:12:34:56 (a
# second guest on the same link needs another).  Two variables, set for one call, make a multiqueue
# guest: GUEST_SMP=N gives it N CPUs (default 1), GUEST_NETDEV_OPTS is added to -netdev, e.g.
#   GUEST_SMP=2 GUEST_NETDEV_OPTS=,queues=2 start_guest "$dir" a "$sock" mqping ,mq=on
# A third, GUEST_AGENT=PATH, gives the guest a second serial port on the fifos PATH.in and PATH.out
# (made here), for vxtest=agent: agent_cmd below sends it commands.
start_guest() {
    local dir=$1 name=$2 sock=$3 mode=$4 devopts=${5:-} chardev=${6:-reconnect=1}
    local kargs=${7:-} mac=${8:-52:54:00:12:34:56} agent=()
    if [ -n "${GUEST_AGENT:-}" ]; then
        mkfifo "$GUEST_AGENT.in" "$GUEST_AGENT.out" && agent=(-serial "pipe:$GUEST_AGENT")
    fi
    guest_accel
    # shellcheck disable=SC2086  # GUEST_ACCEL_ARGS is two or four words
    qemu-system-x86_64 $GUEST_ACCEL_ARGS -machine q35 -smp "${GUEST_SMP:-1}" -m 256M -nodefaults -no-user-config \
        -display none -no-reboot -serial "file:$dir/$name.serial" "${agent[@]}" \
        -object memory-backend-memfd,id=mem,size=256M,share=on -numa node,memdev=mem \
        -chardev "socket,id=chr0,path=$sock,$chardev" \
        -netdev "vhost-user,id=net0,chardev=chr0${GUEST_NETDEV_OPTS:-}" \
        -device "virtio-net-pci,netdev=net0,mac=$mac,romfile=$GUEST_VECTORS$devopts" \
        -kernel "$GUEST/vmlinuz" -initrd "$GUEST/initramfs.cpio.gz" \
        -append "console=ttyS0 quiet panic=-1 vxtest=$mode${kargs:+ $kargs}" \
        < /dev/null > "$dir/$name.qemu.log" 2>&1 &
    QEMU_PID=$!
}

# agent_cmd SERIAL AGENT ID CMD [SECS]: run CMD in a guest in agent mode (its console in SERIAL, its
# GUEST_AGENT path AGENT), and wait for its "VXDONE ID rc=N" (default: 60 s).  ID must be new for this
# guest.  Status: N, or 124 if it did not answer in time.  CMD's output is on the console.
agent_cmd() {
    local serial=$1 agent=$2 id=$3 cmd=$4 secs=${5:-60} rc
    # QEMU holds the fifo open for reading (O_RDWR): this open never blocks.
    printf '%s %s\n' "$id" "$cmd" > "$agent.in" || return 1
    wait_for "guest command $id ($cmd)" "$secs" grep -aq "VXDONE $id rc=" "$serial" || return 124
    rc=$(tr -d '\r' < "$serial" | sed -n "s/.*VXDONE $id rc=\([0-9]*\).*/\1/p" | tail -n 1)
    return "${rc:-1}"
}

# guest_features SERIAL: the feature bits the guest driver negotiated (character i = bit i).
guest_features() {
    tr -d '\r' 2>/dev/null < "$1" | sed -n 's/.*VXFEATURES \([01]*\).*/\1/p' | head -n 1
}
