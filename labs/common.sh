# labs/common.sh - what the labs and the demo share (sourced, not run):
#
#     . "$(dirname "$0")/common.sh"
#
# A lab is one command a student runs as root (`sudo labs/lab2-ring.sh`): it builds what it needs,
# sets up the pieces (a veth pair in a network namespace, vhost-xdp, a QEMU guest), shows one thing
# with a short explanation, tears everything down and exits 0.  This file does the setting up and the
# tearing down, so that a lab script reads as the steps of the lab.  It sources tests/lib.sh, the
# tests' own helpers: wait_for, stop_pid, start_guest, guest_accel.
#
# The functions, in the order a lab calls them:
#
#   lab_init NAME "$@"     First.  NAME names the lab in messages ("lab2").  Takes --ci off the
#                          arguments (or env LAB_CI=1): then LAB_CI=1, meaning short and
#                          non-interactive, as tests/ runs it.  The other arguments are left in the
#                          array LAB_ARGS.  Sets TOP (the top of the tree), VX (./vhost-xdp), GUEST
#                          (tests/guest), LAB_TMP (a temporary directory, removed on exit), LAB_SOCK
#                          (the vhost-user socket, in LAB_TMP) and the traps that run lab_cleanup on
#                          exit, Ctrl-C (SIGINT) and SIGTERM.
#   lab_need_root          Exit 1 with "NAME: run it as root: sudo ..." unless we are root.
#   lab_need_cmd CMD PKG   Exit 1 with "NAME: CMD not found: apt-get install -y PKG" if CMD is missing.
#   lab_build              Build ./vhost-xdp with make if it is missing or out of date (under LAB_CI
#                          only if missing: the tests run the binary `make test` built).
#   lab_guest              Build the test guest (tests/build_guest.sh: Debian's kernel + a busybox
#                          initramfs) into $GUEST if it is not built yet; exit 1 if that fails.
#   lab_netns [--host-ns]  A veth pair with names unique to this run (printed), removed by lab_cleanup:
#                            LAB_NS    network namespace vxlab-PID, holding the peer end
#                            LAB_PEER  the peer end (vxpPID), 10.0.0.1/24, up: the guest pings it
#                            LAB_HOST  the host end (vxhPID), up, no address: vhost-xdp's AF_XDP port
#                          One queue on each end (vhost-xdp serves queue 0) and no IPv6 address (so
#                          the kernel sends nothing of its own).  The host end stays in the root
#                          namespace unless --host-ns: then it goes into a second namespace LAB_HNS
#                          (vxlab-h-PID) and lab_start_vx runs vhost-xdp there, so the host side has a
#                          network stack of its own whose counters nothing else touches.
#   lab_in_ns CMD...       Run CMD in LAB_NS (the peer's side).
#   lab_in_hns CMD...      Run CMD where the host end is: LAB_HNS with --host-ns, else here.
#   lab_start_vx LOG [ARGS...]  Start `vhost-xdp --socket $LAB_SOCK ARGS...` (its stderr, where it logs,
#                          in LOG; in LAB_HNS with --host-ns) and wait until it listens.  Sets VX_PID
#                          (printed; stopped by lab_cleanup).  Exit 1, with its log, if it does not start.
#   lab_boot_guest NAME MODE [DEVOPTS]  Boot the test guest on $LAB_SOCK with vxtest=MODE (ping: ping
#                          10.0.0.1 every 0.5 s; loopback: see tests/build_guest.sh), using start_guest
#                          of tests/lib.sh: KVM when it works, else TCG with vectors=0; prints which
#                          and why.  Sets QEMU_PID (printed; stopped by lab_cleanup) and LAB_SERIAL
#                          (its console, $LAB_TMP/NAME.serial).  DEVOPTS are added to -device.
#   lab_ping_ok            The guest's ping replies so far (from its last "VXPING ok=N fail=M" line).
#   lab_ping_line          That line ("VXPING ok=N fail=M"), or nothing yet.
#   lab_wait_ping MIN [SECS]  Wait until the guest has had more than MIN replies (default: 90 s, a
#                          TCG guest on a busy machine boots slowly).  Status 1, with a line saying
#                          why, on timeout or if QEMU or vhost-xdp died.
#   lab_track PID          Stop PID (stop_pid: SIGTERM, then SIGKILL) in lab_cleanup.
#   lab_stop PID           Stop PID now (stop_pid) and take it off lab_cleanup's list, so that
#                          cleanup never signals a pid the system may since have given to another
#                          process.  lab_cleanup's line still names it among the stopped pids.
#   lab_on_exit CMD        Run CMD (a string, eval'ed) in lab_cleanup, before the pids are stopped.
#   lab_title TEXT         Output: a banner with the lab's title.
#   lab_step TEXT          Output: a heading for the next step.
#   lab_explain            Output: the text on stdin (a here-document), indented by two spaces.
#   lab_say TEXT           Output: one line.
#   lab_pause              Interactive runs: "press Enter to go on".  Nothing under LAB_CI or
#                          without a terminal on stdin.
#   lab_die TEXT           "NAME: TEXT" on stderr, exit 1 (lab_cleanup still runs).
#   lab_cleanup            The EXIT trap: runs the lab_on_exit commands, stops every pid started
#                          (the last started first), deletes the veth pair and the namespaces,
#                          removes LAB_TMP and prints one line "NAME: cleaned up: ..." naming them.
#                          With env LAB_KEEP=DIR it first copies LAB_TMP's files (logs, consoles) there.
#   LAB_INT_STATUS         The exit status after Ctrl-C: 130 unless the script sets it (the demo
#                          sets 0: Ctrl-C is how a student ends it).
#
# COMMON_READY

LAB_TOP_=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$LAB_TOP_/tests/lib.sh"

# === Start and stop ========================================================

lab_init() {
    LAB_NAME=$1; shift
    LAB_CI=${LAB_CI:-0}
    LAB_ARGS=()
    local a
    for a; do
        if [ "$a" = --ci ]; then LAB_CI=1; else LAB_ARGS+=("$a"); fi
    done
    TOP=$LAB_TOP_
    GUEST=${GUEST:-$TOP/tests/guest}
    LAB_PIDS=() LAB_STOPPED='' LAB_EXIT_CMDS=() LAB_NS='' LAB_HNS='' LAB_HOST='' LAB_PEER='' VX_PID='' QEMU_PID=''
    LAB_INT_STATUS=${LAB_INT_STATUS:-130}
    LAB_TMP=$(mktemp -d "${TMPDIR:-/tmp}/vx$LAB_NAME.XXXXXX") || { echo "$LAB_NAME: mktemp failed" >&2; exit 1; }
    LAB_SOCK=$LAB_TMP/vx.sock
    trap lab_cleanup EXIT
    trap 'lab_on_signal INT' INT
    trap 'lab_on_signal TERM' TERM
}

# Ctrl-C: the EXIT trap does the cleaning; a script started in the background
# by a non-interactive shell has SIGINT ignored and never gets here (start
# it with job control, set -m, to send it one).
lab_on_signal() {
    echo
    lab_say "$LAB_NAME: SIG$1: stopping"
    if [ "$1" = INT ]; then exit "$LAB_INT_STATUS"; else exit 143; fi
}

lab_cleanup() {
    local rc=$? i cmd removed=''
    trap '' INT TERM    # a second Ctrl-C must not cut the cleaning short
    for cmd in "${LAB_EXIT_CMDS[@]}"; do eval "$cmd"; done
    for ((i = ${#LAB_PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${LAB_PIDS[i]}"
        LAB_STOPPED+=" ${LAB_PIDS[i]}"
    done
    # Deleting one end of a veth deletes the pair; deleting a netns deletes what is in it.
    if [ -n "$LAB_HOST" ]; then
        [ -z "$LAB_HNS" ] && ip link del "$LAB_HOST" 2>/dev/null
        removed+=" veth $LAB_HOST/$LAB_PEER,"
    fi
    [ -n "$LAB_HNS" ] && ip netns del "$LAB_HNS" 2>/dev/null && removed+=" netns $LAB_HNS,"
    [ -n "$LAB_NS" ] && ip netns del "$LAB_NS" 2>/dev/null && removed+=" netns $LAB_NS,"
    if [ -n "${LAB_KEEP:-}" ]; then mkdir -p "$LAB_KEEP" && cp -r "$LAB_TMP"/. "$LAB_KEEP"/ 2>/dev/null; fi
    rm -rf "$LAB_TMP"
    if [ -n "$LAB_STOPPED$removed" ]; then
        lab_say "$LAB_NAME: cleaned up: stopped pids${LAB_STOPPED:- none}; deleted${removed:- nothing,} $LAB_TMP"
    fi
    exit "$rc"
}

lab_track()   { LAB_PIDS+=("$1"); }
lab_stop() {
    local p keep=()
    stop_pid "$1"
    LAB_STOPPED+=" $1"
    for p in "${LAB_PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    LAB_PIDS=("${keep[@]}")
}
lab_on_exit() { LAB_EXIT_CMDS+=("$1"); }

# === Output ================================================================

lab_say()     { printf '%s\n' "$*"; }
lab_title()   { printf '\n==== %s ====\n\n' "$*"; }
lab_step()    { printf '\n--- %s\n' "$*"; }
lab_explain() { sed 's/^./  &/'; }
lab_die()     { echo "$LAB_NAME: $*" >&2; exit 1; }
lab_pause() {
    [ "$LAB_CI" = 1 ] && return 0
    [ -t 0 ] || return 0
    read -r -p "  (press Enter to go on) " _
}

# === What the lab needs ====================================================

lab_need_root() {
    [ "$(id -u)" = 0 ] || lab_die "run it as root (it makes network namespaces and attaches an XDP program): sudo $0"
}

lab_need_cmd() {
    command -v "$1" >/dev/null 2>&1 || lab_die "$1 not found: apt-get install -y $2"
}

lab_build() {
    if [ "$VX" != "$TOP/vhost-xdp" ]; then
        [ -x "$VX" ] || lab_die "VX=$VX is not an executable"
        return 0
    fi
    if [ -x "$VX" ]; then
        [ "$LAB_CI" = 1 ] && return 0
        make -q -C "$TOP" vhost-xdp >/dev/null 2>&1 && return 0
    fi
    command -v "${CC:-gcc}" >/dev/null 2>&1 || lab_die "no C compiler to build vhost-xdp: apt-get install -y gcc make"
    lab_say "building vhost-xdp (make vhost-xdp)"
    make -s -C "$TOP" vhost-xdp >"$LAB_TMP/make.log" 2>&1 || { cat "$LAB_TMP/make.log" >&2; lab_die "make vhost-xdp failed"; }
}

lab_guest() {
    if [ ! -f "$GUEST/vmlinuz" ]; then
        lab_say "preparing the guest in $GUEST (tests/build_guest.sh: downloads Debian's cloud kernel package once)"
    fi
    "$TOP/tests/build_guest.sh" "$GUEST" 2>"$LAB_TMP/build_guest.log" ||
        { cat "$LAB_TMP/build_guest.log" >&2; lab_die "could not build the guest (tests/build_guest.sh)"; }
}

# === The veth pair ===========================================================

lab_netns() {
    LAB_NS=vxlab-$$ LAB_HOST=vxh$$ LAB_PEER=vxp$$
    [ "${1:-}" = --host-ns ] && LAB_HNS=vxlab-h-$$
    # The names are set first: if a step fails, lab_cleanup removes what exists.
    ip netns add "$LAB_NS" || lab_die "ip netns add $LAB_NS failed"
    if [ -n "$LAB_HNS" ]; then ip netns add "$LAB_HNS" || lab_die "ip netns add $LAB_HNS failed"; fi
    ip link add "$LAB_HOST" numtxqueues 1 numrxqueues 1 type veth \
        peer name "$LAB_PEER" numtxqueues 1 numrxqueues 1 netns "$LAB_NS" ||
        lab_die "ip link add $LAB_HOST type veth failed"
    if [ -n "$LAB_HNS" ]; then ip link set dev "$LAB_HOST" netns "$LAB_HNS" || lab_die "moving $LAB_HOST to $LAB_HNS failed"; fi
    lab_in_hns ip link set dev "$LAB_HOST" addrgenmode none &&
        lab_in_ns ip link set dev "$LAB_PEER" addrgenmode none &&
        lab_in_hns ip link set dev "$LAB_HOST" up &&
        lab_in_ns ip link set dev lo up &&
        lab_in_ns ip link set dev "$LAB_PEER" up &&
        lab_in_ns ip addr add 10.0.0.1/24 dev "$LAB_PEER" || lab_die "setting up the veth pair failed"
    if [ -n "$LAB_HNS" ]; then
        lab_in_hns ip link set dev lo up
        lab_say "veth pair: $LAB_HOST (in netns $LAB_HNS, vhost-xdp's port) <-> $LAB_PEER (in netns $LAB_NS, 10.0.0.1/24)"
    else
        lab_say "veth pair: $LAB_HOST (root netns, vhost-xdp's port) <-> $LAB_PEER (in netns $LAB_NS, 10.0.0.1/24)"
    fi
}

lab_in_ns() { ip netns exec "$LAB_NS" "$@"; }
lab_in_hns() {
    if [ -n "$LAB_HNS" ]; then ip netns exec "$LAB_HNS" "$@"; else "$@"; fi
}

# === vhost-xdp and the guest =================================================

# The socket listens: /proc/net/unix (of vhost-xdp's namespace) shows the path
# with flags 00010000 (__SO_ACCEPTCON).
lab_listening_() {
    lab_in_hns awk -v p="$LAB_SOCK" '$NF == p && $4 == "00010000" { f = 1 } END { exit !f }' /proc/net/unix
}

lab_start_vx() {
    local log=$1 i cmd; shift
    cmd=("$VX" --socket "$LAB_SOCK" "$@")
    [ -n "$LAB_HNS" ] && cmd=(ip netns exec "$LAB_HNS" "${cmd[@]}")
    # A plain command, not a shell function, so that $! is vhost-xdp's own pid (`ip netns exec`
    # execs it): a function run with & would be a subshell, and stopping it would leave vhost-xdp.
    "${cmd[@]}" </dev/null 2>>"$log" >&2 &
    VX_PID=$!
    lab_track "$VX_PID"
    for ((i = 0; i < 100; i++)); do
        lab_listening_ && { lab_say "vhost-xdp: pid $VX_PID, log $log"; return 0; }
        kill -0 "$VX_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$log" >&2
    lab_die "vhost-xdp did not start (its log is above)"
}

lab_boot_guest() {
    local name=$1 mode=$2 devopts=${3:-}
    guest_accel
    if [ "$GUEST_ACCEL" = kvm ]; then
        lab_say "guest: KVM with -cpu host: $GUEST_ACCEL_WHY"
    else
        lab_say "guest: TCG (QEMU's emulator, slower; vectors=0): $GUEST_ACCEL_WHY"
    fi
    start_guest "$LAB_TMP" "$name" "$LAB_SOCK" "$mode" "$devopts"
    lab_track "$QEMU_PID"
    LAB_SERIAL=$LAB_TMP/$name.serial
    lab_say "guest: QEMU pid $QEMU_PID, console in $LAB_SERIAL"
}

lab_ping_line() { tr -d '\r' 2>/dev/null <"$LAB_SERIAL" | grep -ao 'VXPING ok=[0-9]* fail=[0-9]*' | tail -n 1; }
lab_ping_ok()   { lab_ping_line | sed -n 's/VXPING ok=\([0-9]*\) .*/\1/p'; }

lab_wait_ping() {
    local min=$1 deadline=$((SECONDS + ${2:-90})) n
    while [ "$SECONDS" -lt "$deadline" ]; do
        n=$(lab_ping_ok)
        [ -n "$n" ] && [ "$n" -gt "$min" ] && return 0
        kill -0 "$QEMU_PID" 2>/dev/null || { lab_say "$LAB_NAME: QEMU exited (see $LAB_TMP/*.qemu.log)"; return 1; }
        kill -0 "$VX_PID" 2>/dev/null || { lab_say "$LAB_NAME: vhost-xdp exited"; return 1; }
        sleep 0.2
    done
    lab_say "$LAB_NAME: timed out after ${2:-90} s waiting for more than $min ping replies (guest: $(lab_ping_line))"
    return 1
}
