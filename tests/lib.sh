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
# diag_logs FILE...: the lines worth seeing of each log, as TAP comments: of a guest's serial
# console (*.serial) its VX lines, of any other log its last DIAG_LINES (15) lines, --stats left out.
diag_logs() {
    local f
    for f; do
        [ -s "$f" ] || continue
        echo "# ---- ${f##*/}"
        case $f in
        *.serial) tr -d '\r' <"$f" | grep -a 'VX' | tail -n 12 | sed 's/^/#   /' ;;
        *)        grep -av ': stats: ' "$f" | tail -n "${DIAG_LINES:-15}" | sed 's/^/#   /' ;;
        esac
    done
}

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
# guest (kernel and initramfs in $GUEST, from tests/build_guest.sh) as the README's "Lab 1" command does, under
# KVM or TCG as guest_accel decides, its virtio-net on the vhost-user socket SOCK; vxtest=MODE picks
# what the guest does.  Serial console in DIR/NAME.serial, QEMU's own output in DIR/NAME.qemu.log;
# sets QEMU_PID.  CHARDEV_OPTIONS default to reconnect=1 (QEMU connects, and reconnects after the
# backend dies); server=on,wait=off makes QEMU listen instead.  KERNEL_ARGS are added to the guest's
# command line (e.g. "vxip=10.0.0.3/24 vxpeer=10.0.0.2"); MAC defaults to 52:54:00:12:34:56 (a
# second guest on the same link needs another).  Two variables, set for one call, make a multiqueue
# guest: GUEST_SMP=N gives it N CPUs (default 1), GUEST_NETDEV_OPTS is added to -netdev, e.g.
#   GUEST_SMP=2 GUEST_NETDEV_OPTS=,queues=2 start_guest "$dir" a "$sock" mqping ,mq=on
# A third, GUEST_AGENT=PATH, gives the guest a second serial port on the fifos PATH.in and PATH.out
# (made here), for vxtest=agent: agent_cmd below sends it commands.  GUEST_QEMU_ARGS are added to
# QEMU's command line as they are (split at spaces), e.g. a monitor and -incoming (test_migrate.sh).
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
        -append "console=ttyS0 quiet panic=-1 vxtest=$mode${kargs:+ $kargs}" ${GUEST_QEMU_ARGS:-} \
        < /dev/null > "$dir/$name.qemu.log" 2>&1 &
    QEMU_PID=$!
}

# agent_cmd SERIAL AGENT ID CMD [SECS]: run CMD in a guest in agent mode (its console in SERIAL, its
# GUEST_AGENT path AGENT), and wait for its "VXDONE ID rc=N" (default: 60 s).  ID must be new for this
# guest.  Status: N, or 124 if it did not answer in time.  CMD's output is on the console.
agent_cmd() {
    local serial=$1 agent=$2 id=$3 cmd=$4 secs=${5:-60} rc fd
    # Opened read-write, the fifo never blocks us: not while QEMU reads it, and not once QEMU has
    # exited and nobody does (a guest that panicked, under -no-reboot; the command is then lost).
    exec {fd}<>"$agent.in" || return 1
    printf '%s %s\n' "$id" "$cmd" >&"$fd"
    exec {fd}>&-
    wait_for "guest command $id ($cmd)" "$secs" grep -aq "VXDONE $id rc=" "$serial" || return 124
    rc=$(tr -d '\r' < "$serial" | sed -n "s/.*VXDONE $id rc=\([0-9]*\).*/\1/p" | tail -n 1)
    return "${rc:-1}"
}

# === QEMU's monitor on fifos, and live migration (tests/test_migrate.sh, labs/lab9-migrate.sh) ===
# The human monitor (HMP) of a QEMU started with `-monitor pipe:DIR/NAME.mon`, which reads
# DIR/NAME.mon.in and writes DIR/NAME.mon.out:
#   hmp_open DIR NAME        makes the two fifos, holds .in open read-write (a command never blocks,
#                            not even once QEMU has exited) and starts a reader copying .out into
#                            DIR/NAME.mon.log; the reader's pid is left in HMP_READER, for the caller
#                            to stop.  Status 1 if the fifos cannot be made.
#   hmp NAME CMD             one command
#   hmp_log NAME             what the monitor has printed so far, without carriage returns
#   hmp_migrate_status NAME  its last "Migration status: ..." after one more `info migrate`
declare -gA HMP_FD=() HMP_LOG=()
hmp_open() {
    local fd
    mkfifo "$1/$2.mon.in" "$1/$2.mon.out" || return 1
    exec {fd}<>"$1/$2.mon.in"
    HMP_FD[$2]=$fd HMP_LOG[$2]=$1/$2.mon.log
    cat "$1/$2.mon.out" >"${HMP_LOG[$2]}" &
    HMP_READER=$!
}
hmp() { printf '%s\n' "$2" >&"${HMP_FD[$1]}"; }
hmp_log() { tr -d '\r' <"${HMP_LOG[$1]}"; }
hmp_migrate_status() { hmp "$1" "info migrate"; sleep 0.5; hmp_log "$1" | grep -a "^Migration status:" | tail -n 1; }

# guest_accel_migrating: guest_accel, with one TCG thread for all vCPUs under TCG
# (-accel tcg,thread=single): with QEMU's default, a thread per vCPU, migrated guests came out
# corrupt more often on a loaded 2-CPU machine (tests/test_migrate.sh says what was measured).
guest_accel_migrating() {
    guest_accel
    [ "$GUEST_ACCEL" = tcg ] && GUEST_ACCEL_ARGS="-accel tcg,thread=single"
    return 0
}

# guest_features SERIAL: the feature bits the guest driver negotiated (character i = bit i).
guest_features() {
    tr -d '\r' 2>/dev/null < "$1" | sed -n 's/.*VXFEATURES \([01]*\).*/\1/p' | head -n 1
}

# === The virtio-pmd guest (tests/build_guest.sh --pmd; tests/test_pmd_guest.sh, labs/lab6-table.sh) ===
# One image, two drivers: vxdrv=pmd (DPDK's virtio PMD in the guest's user space, dpdk-testpmd) or
# vxdrv=kernel (the guest kernel's virtio_net).  Its virtio-net devices are "ports" 0, 1, ... in the
# order pmd_nic adds them; runs are started and stopped by commands the host writes to the guest's
# second serial port (a pipe), and the guest answers with lines on its console (VXRUN, VXCOUNT, ...:
# see the virtio-pmd part of tests/build_guest.sh).
#
#   pmd_nic KIND ARG [DEVOPTS]  add a port to the next guest:  vhost-user SOCK (QEMU connects to SOCK,
#                          reconnect=1), tap IFNAME (QEMU's own virtio-net device on a tap: the kernel's
#                          path), vhost-net IFNAME (the tap with vhost=on: the kernel moves the rings);
#                          DEVOPTS are added to -device (",packed=on").  Port k gets PCI slot 3+k and
#                          MAC 52:54:00:12:34:(56+k) in hex (pmd_mac k; PMD_MAC_BASE=0x66 for :66+k).
#   start_pmd_guest DIR NAME KARGS   boot it (KARGS: vxdrv=, vxpmd=, ...; see build_guest.sh) under
#                          KVM or TCG as guest_accel decides (TCG: -cpu max, vectors=0), in the network
#                          namespace PMD_NETNS if set (to open its taps).  Console in DIR/NAME.serial;
#                          sets QEMU_PID, PMD_SERIAL and PMD_CTL (our fd on its command pipe) and
#                          empties the port list.  Needs vhost-user sockets listening when it starts:
#                          QEMU 7.2 waits for its first connection before it runs the guest.
#   pmd_send LINE          one command ("run MODE PORT SIZE [SECS [DSTMAC]]", "stop", "quit")
#   pmd_mark               the console's line count now: pmd_wait and pmd_line look only after it
#   pmd_wait MARK REGEX SECS  wait until a console line after MARK matches REGEX (grep -E); status 1,
#                          with a line saying why, on timeout, a VXERROR line, or QEMU's exit
#   pmd_line MARK REGEX    the last console line after MARK matching REGEX
#   pmd_field NAME LINE    the value of NAME=value in LINE (empty if missing)
#   pmd_pin PID            QEMU's vCPU thread on CPU 0 (2+ CPUs)
PMD_GUEST=${PMD_GUEST:-$TESTS_DIR/guest-pmd}
PMD_NICS=() PMD_NPORTS=0
pmd_mac() { printf '52:54:00:12:34:%02x' $((${PMD_MAC_BASE:-0x56} + $1)); }
pmd_nic() {
    local kind=$1 arg=$2 devopts=${3:-} k=$PMD_NPORTS netdev
    case $kind in
    vhost-user) PMD_NICS+=(-chardev "socket,id=chr$k,path=$arg,reconnect=1"); netdev="vhost-user,id=net$k,chardev=chr$k" ;;
    tap)        netdev="tap,id=net$k,ifname=$arg,script=no,downscript=no,vhost=off" ;;
    vhost-net)  netdev="tap,id=net$k,ifname=$arg,script=no,downscript=no,vhost=on" ;;
    *)          echo "pmd_nic: unknown kind '$kind'" >&2; return 1 ;;
    esac
    PMD_NICS+=(-netdev "$netdev" -device "virtio-net-pci,netdev=net$k,mac=$(pmd_mac "$k"),romfile=,addr=$((3 + k))$devopts")
    PMD_NPORTS=$((k + 1))
}

start_pmd_guest() {
    local dir=$1 name=$2 kargs=${3:-} accel i nics=()
    GUEST=${GUEST:-$PMD_GUEST} guest_accel
    # Debian's DPDK is built for the corei7 instruction set: QEMU's default TCG CPU lacks some of it.
    accel=$GUEST_ACCEL_ARGS
    [ "$GUEST_ACCEL" = tcg ] && accel+=" -cpu max"
    # vectors=0 (TCG: no MSI-X, see guest_accel) on every port
    for ((i = 0; i < ${#PMD_NICS[@]}; i++)); do
        case ${PMD_NICS[i]} in virtio-net-pci,*) nics+=("${PMD_NICS[i]}$GUEST_VECTORS") ;; *) nics+=("${PMD_NICS[i]}") ;; esac
    done
    rm -f "$dir/$name.ctl.in" "$dir/$name.ctl.out"
    mkfifo "$dir/$name.ctl.in" "$dir/$name.ctl.out" || return 1
    # Opened read-write: neither we nor QEMU ever wait for the other end to open it.
    exec {PMD_CTL}<>"$dir/$name.ctl.in"
    PMD_SERIAL=$dir/$name.serial
    # shellcheck disable=SC2086  # accel is several words
    ${PMD_NETNS:+ip netns exec "$PMD_NETNS"} qemu-system-x86_64 $accel -machine q35 -smp 1 -m 512M \
        -name "$name,debug-threads=on" -nodefaults -no-user-config -display none -no-reboot \
        -serial "file:$PMD_SERIAL" -chardev "pipe,id=ctl,path=$dir/$name.ctl" -serial chardev:ctl \
        -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem "${nics[@]}" \
        -kernel "$PMD_GUEST/vmlinuz" -initrd "$PMD_GUEST/initramfs.cpio.gz" \
        -append "console=ttyS0 quiet panic=-1 vxctl=ttyS1${kargs:+ $kargs}" \
        </dev/null >"$dir/$name.qemu.log" 2>&1 &
    QEMU_PID=$!    # `ip netns exec` execs QEMU: this is QEMU's own pid
    PMD_NICS=() PMD_NPORTS=0
}

pmd_send() { echo "$*" >&"$PMD_CTL"; }
pmd_console() { tr -d '\r' 2>/dev/null <"$PMD_SERIAL"; }
pmd_mark() { pmd_console | wc -l; }
pmd_line() { pmd_console | tail -n +$(($1 + 1)) | grep -aE -- "$2" | tail -n 1; }
pmd_field() { echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -n 1; }
pmd_wait() {
    local mark=$1 re=$2 deadline=$((SECONDS + $3)) err
    while [ "$SECONDS" -lt "$deadline" ]; do
        [ -n "$(pmd_line "$mark" "$re")" ] && return 0
        err=$(pmd_line "$mark" 'VXERROR')
        [ -n "$err" ] && { echo "# the guest says: $err" >&2; pmd_console | grep -a '^VXLOG' | tail -n 15 | sed 's/^/#   /' >&2; return 1; }
        kill -0 "$QEMU_PID" 2>/dev/null || { echo "# QEMU (pid $QEMU_PID) exited while waiting for '$re'" >&2; return 1; }
        sleep 0.1
    done
    echo "# timed out after $3 s waiting for '$re' on the guest's console" >&2
    return 1
}

# pmd_pin PID: QEMU's vCPU thread ("CPU 0/TCG", under KVM "CPU 0/KVM") on CPU 0, so that it never
# shares a CPU with a poll thread pinned to CPU 1 (vhost-xdp --pmd-cores 1): both spin.  QEMU's other
# threads stay free: its main thread runs its own virtio-net device (the tap path) and, under TCG,
# delivers every interrupt; pinned next to someone else's spinning thread it lost half its rate.
pmd_pin() {
    local pid=$1 t i
    [ "$(nproc)" -ge 2 ] || return 0
    for ((i = 0; i < 50; i++)); do
        grep -qs '^CPU 0/' /proc/"$pid"/task/*/comm && break
        sleep 0.1
    done
    for t in /proc/"$pid"/task/*; do
        case $(cat "$t/comm" 2>/dev/null) in "CPU 0/"*) taskset -p -c 0 "${t##*/}" >/dev/null ;; esac
    done
}

# === Pieces a few tests share ===========================================================================

# make_uplink: the netns $NS and a veth pair: $HOST up here, $PEER up in $NS with 10.0.0.1/24, one RX and
# one TX queue each (vhost-xdp --iface then runs one queue pair).  NS_MADE=1 comes first, so that the
# test's cleanup removes what was made even when a step fails.  (test_switch.sh, test_migrate.sh)
make_uplink() {
    NS_MADE=1
    ip netns add "$NS" &&
    ip link add "$HOST" numrxqueues 1 numtxqueues 1 type veth peer name "$PEER" numrxqueues 1 numtxqueues 1 &&
    ip link set "$PEER" netns "$NS" && ip link set "$HOST" up && ip -n "$NS" link set "$PEER" up &&
    ip -n "$NS" addr add 10.0.0.1/24 dev "$PEER"
}

# For the tests that drive DPDK's testpmd (test_dpdk.sh, test_dpdk_reconnect.sh, test_adaptive_dpdk.sh):
# t DESC CMD...: check() that goes on after a failure and counts it in FAILS (the test's exit status).
FAILS=0
t() { local d=$1; shift; if "$@"; then ok "$d"; else not_ok "$d"; FAILS=$((FAILS + 1)); fi; }
# gone PID: the process has ended.
gone() { ! kill -0 "$1" 2>/dev/null; }
# listening PATH: the socket is listening: /proc/net/unix flags 00010000 (__SO_ACCEPTCON) on that path.
listening() { awk -v p="$1" '$NF == p && $4 == "00010000" { f = 1 } END { exit !f }' /proc/net/unix; }
# need_testpmd "what for": dpdk-testpmd installed, or the test ends here: a skip, a failure under CI=true.
need_testpmd() { need_cmd dpdk-testpmd "$1" || { [ "${CI:-}" = true ] && exit 1; exit 0; }; }

# poll_state PID: the state letter (R running, S asleep, ...) of the poll thread vx-pmd0 of vhost-xdp PID,
# from /proc (the state is the field after "(comm)" in its stat).  (test_adaptive_dpdk.sh,
# test_qemu_adaptive.sh: a thread in --pmd-mode adaptive is seen asleep before traffic starts)
poll_state() {
    local task
    for task in /proc/"$1"/task/*; do
        [ "$(cat "$task/comm" 2>/dev/null)" = vx-pmd0 ] || continue
        sed 's/.*) \(.\).*/\1/' "$task/stat" 2>/dev/null
        return
    done
}
poll_asleep() { [ "$(poll_state "$1")" = S ]; }
# poll_slept PID SECONDS: wait (SECONDS at most) for the thread to be seen asleep; prints S, or the state
# it was in instead.  (Not read again afterwards: its 100 ms timeout wakes it for a moment, and on a
# loaded machine it can then wait for a CPU, in state R, for milliseconds.)
poll_slept() { if wait_for "the poll thread to sleep" "$2" poll_asleep "$1"; then echo S; else poll_state "$1"; fi; }

# num_after NAME LINE: the number after "NAME " in LINE (a counter of a --stats or exit line), or nothing.
num_after() { sed -n "s/.*$1 \([0-9]*\).*/\1/p" <<<"$2"; }
# term_asleep PID LOG SECS: SIGTERM to vhost-xdp PID while its poll thread sleeps (--pmd-mode adaptive;
# test_adaptive_dpdk.sh, test_qemu_adaptive.sh).  Waits (5 s at most) for one more "stats: pmd 0:" line
# in LOG, then (SECS at most) for the thread to be seen asleep; sends SIGTERM and waits 5 s at most for
# the exit (it takes milliseconds: the deadline only catches a hang); PID is stopped in any case.  Sets
# SLEPT (S, or the state seen instead), LAST_STATS (the last --stats line before the SIGTERM), EXIT_RC
# (PID's exit status, or "timeout"), EXIT_MS (how long the exit took, or ">5000") and EXIT_LINE (PID's
# "exit: pmd 0:" line).
term_asleep() {
    local pid=$1 log=$2 n0 t0
    n0=$(grep -c 'stats: pmd 0: ' "$log")
    wait_for "a --stats line" 5 eval '[ "$(grep -c "stats: pmd 0: " "$log")" -gt "$n0" ]'
    # The last --stats line first, then the signal as soon as the thread is seen asleep: the thread
    # wakes now and then on its own (a frame, a kick, its 100 ms timeout), and one that woke between
    # "asleep" and the signal exits without reading the wake-up eventfd.
    LAST_STATS=$(grep 'stats: pmd 0: ' "$log" | tail -n 1)
    SLEPT=$(poll_slept "$pid" "$3")
    t0=$(date +%s%N)
    kill -TERM "$pid"
    if wait_for "vhost-xdp $pid to exit" 5 gone "$pid"; then
        EXIT_MS=$((($(date +%s%N) - t0) / 1000000)); wait "$pid"; EXIT_RC=$?
    else
        EXIT_MS='>5000' EXIT_RC=timeout
    fi
    stop_pid "$pid"
    EXIT_LINE=$(grep 'exit: pmd 0: ' "$log" | tail -n 1)
}

# check_lab_cleanup OUT: a lab run as root said what it made and stopped (its "veth pair: ... in netns
# vxlab-PID," and "cleaned up: stopped pids ...;" lines in OUT): that netns is gone and none of those
# processes is alive.
check_lab_cleanup() {
    local out=$1 ns pids
    ns=$(sed -n 's/^veth pair: .*in netns \(vxlab-[0-9]*\),.*/\1/p' "$out")
    pids=$(sed -n 's/.*cleaned up: stopped pids \([0-9 ]*\);.*/\1/p' "$out")
    # (check's eval sees ns and pids: bash's locals are visible to the functions called)
    check "it cleaned up: netns ${ns:-?} gone, no process it started left (${pids:-?})" \
        eval '[ -n "$ns" ] && ! ip netns list | grep -qw "$ns" && [ -n "$pids" ] &&
              { alive=0; for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done; [ $alive = 0 ]; }'
}
