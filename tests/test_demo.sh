#!/usr/bin/env bash
# tests/test_demo.sh - `make demo` (labs/demo.sh) does what the README says, and leaves nothing behind.
#
#  0. Run without a terminal and with qemu-system-x86_64 missing (a PATH without it): it names the
#     package, prints the exact apt-get command, installs nothing and exits 1; with DEMO_INSTALL=1
#     it runs that command (a fake apt-get here) and checks again.
#  1. `make demo DEMO_ARGS=--once`: exits 0 after the guest's ping replies; its output shows them, a
#     status line where vhost-xdp forwarded packets both ways (from guest, nic tx, nic rx, to guest
#     all > 0), and vhost-xdp's exit totals.  Afterwards none of what it printed exists any more: its
#     netns, its veth (ip link), an XDP program on any link (ip -d link), its vhost-xdp and QEMU pids.
#  2. The demo without --once, ended as a student ends it: SIGINT to the demo's own pid (printed by
#     it) once the first reply is in.  It exits 0 and leaves nothing behind, as in 1.
#  3. The same, but SIGINT to the whole job, as Ctrl-C in a terminal sends it to make, the demo,
#     QEMU and vhost-xdp at once.
# The demo is run with job control (set -m): a background job of a non-interactive shell would have
# SIGINT ignored, and bash cannot trap an ignored signal.  And with SIGINT set back to its default
# (env --default-signal): a test run that was itself started in the background inherits it ignored,
# which set -m does not undo (the demo then ran on after Ctrl-C, in a CI run started that way).  Each run makes its own netns and veth
# (names with its pid); if this test is stopped half-way, its trap stops the job's process group and
# deletes the names the demo printed.
# Needs root, ip and qemu-system-x86_64 (the guest is built by the demo, via tests/build_guest.sh).
# Takes 30-90 s (three TCG guest boots).
set -u
. "$(dirname "$0")/lib.sh"


[ "$(id -u)" = 0 ] || missing "make demo needs root"
require "make demo" ip
require "make demo" qemu-system-x86_64

TOP=$(cd "$TESTS_DIR/.." && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/vx-demo-test.XXXXXX")
JOB=''
cleanup() {
    # Only if a run was cut short: its process group, then what it printed it had made.
    if [ -n "$JOB" ] && kill -0 "$JOB" 2>/dev/null; then
        kill -TERM -- "-$JOB" 2>/dev/null; sleep 2; kill -KILL -- "-$JOB" 2>/dev/null
    fi
    local f
    for f in "$TMP"/*.out; do
        [ -f "$f" ] || continue
        names "$f"
        [ -n "$HOST" ] && ip link del "$HOST" 2>/dev/null
        [ -n "$NS" ] && ip netns del "$NS" 2>/dev/null
    done
    rm -rf "$TMP"
}
on_exit cleanup

# names OUT: what the demo said it made, from its lines
#   "demo: pid D (...)", "veth pair: vxhN (...) <-> vxpN (in netns vxlab-N, ...)",
#   "vhost-xdp: pid V, log ...", "guest: QEMU pid Q, console in ..."
names() {
    DEMO_PID=$(sed -n 's/^demo: pid \([0-9]*\) .*/\1/p' "$1" | head -n 1)
    HOST=$(sed -n 's/^veth pair: \(vxh[0-9]*\) .*/\1/p' "$1" | head -n 1)
    PEER=$(sed -n 's/^veth pair: .* <-> \(vxp[0-9]*\) .*/\1/p' "$1" | head -n 1)
    NS=$(sed -n 's/^veth pair: .*in netns \(vxlab-[0-9]*\),.*/\1/p' "$1" | head -n 1)
    VXP=$(sed -n 's/^vhost-xdp: pid \([0-9]*\),.*/\1/p' "$1" | head -n 1)
    QP=$(sed -n 's/^guest: QEMU pid \([0-9]*\),.*/\1/p' "$1" | head -n 1)
    XDP_ID=$(sed -n 's/^XDP program on .*: prog\/xdp id \([0-9]*\).*/\1/p' "$1" | head -n 1)
}

# is_cmd PID WORD: PID runs a program whose command line has WORD (the pid the demo printed is the
# process it names, not a shell around it).
is_cmd() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q -- "$2"; }
gone() { ! kill -0 "$1" 2>/dev/null; }

# nothing_left WHAT OUT: the netns, veth, XDP program and processes the demo printed are all gone.
nothing_left() {
    local what=$1 out=$2
    names "$out"
    check "$what: printed its netns, veth, vhost-xdp and QEMU pids ($NS $HOST/$PEER vhost-xdp $VXP QEMU $QP)" \
        test -n "$NS" -a -n "$HOST" -a -n "$PEER" -a -n "$VXP" -a -n "$QP"
    check "$what: says it cleaned up: $(grep -o 'cleaned up: .*' "$out" | head -n 1)" \
        grep -q "cleaned up: stopped pids .*deleted veth $HOST/$PEER, netns $NS" "$out"
    check "$what: afterwards ip netns list has no $NS" eval '! ip netns list | grep -qw "$NS"'
    check "$what: afterwards ip link show has neither $HOST nor $PEER" \
        eval '! ip link show dev "$HOST" >/dev/null 2>&1 && ! ip link show | grep -qE "$HOST|$PEER"'
    check "$what: afterwards no link carries its XDP program (ip -d link: no prog/xdp id ${XDP_ID:-?})" \
        eval '[ -n "$XDP_ID" ] && ! ip -d link show | grep -q "prog/xdp id $XDP_ID "'
    check "$what: afterwards vhost-xdp ($VXP) and QEMU ($QP) are gone" eval 'gone "$VXP" && gone "$QP"'
}

# both_ways OUT: the demo's last status line with the guest's replies and vhost-xdp forwarding both
# ways in the same second (from guest, to guest, nic tx, nic rx all above 0), or status 1.
R='[1-9][0-9.]* [kM]?pps'
both_ways() {
    grep -E "guest: VXPING ok=[1-9][0-9]* .*vhost-xdp: from guest $R, to guest $R, drops [0-9]+ \| nic tx $R, nic rx $R" \
        "$1" | tail -n 1 | grep .
}
output_shows() {
    local line
    line=$(both_ways "$2")
    check "$1: a status line with the guest's replies and vhost-xdp forwarding both ways: ${line#"${line%%[! ]*}"}" \
        test -n "$line"
}

# ---- 0. A missing package, in a non-interactive run: the exact command, exit 1, nothing installed.
# A PATH with every command the demo uses before it checks, except qemu-system-x86_64, and an apt-get
# that only records that it was called.
mkdir -p "$TMP/bin"
for c in bash env id dirname mktemp rm cat sed grep sh gcc cc ip dpkg-query tr head tail sleep; do
    p=$(command -v "$c") && ln -s "$p" "$TMP/bin/$c"
done
printf '#!/bin/sh\necho "$*" >> "%s/apt-get.called"\nexit 1\n' "$TMP" >"$TMP/bin/apt-get"
chmod +x "$TMP/bin/apt-get"
PATH=$TMP/bin "$TMP/bin/bash" "$TOP/labs/demo.sh" --once >"$TMP/missing.log" 2>&1 </dev/null
rc=$?
check "no qemu-system-x86_64, non-interactive: the demo exits 1 (got $rc)" test "$rc" = 1
check "it names the missing package: $(grep -o 'missing packages: .*' "$TMP/missing.log")" \
    grep -q '^demo: missing packages: qemu-system-x86$' "$TMP/missing.log"
check "it prints the exact command: $(grep -o 'install them with: .*' "$TMP/missing.log")" \
    grep -qF "install them with:  sudo sh -c 'apt-get update && apt-get install -y --no-install-recommends qemu-system-x86'" \
    "$TMP/missing.log"
check "it installs nothing without DEMO_INSTALL=1 (apt-get not run)" test ! -e "$TMP/apt-get.called"
# DEMO_INSTALL=1: it runs that command (this apt-get succeeds without installing: the demo then says
# what is still missing).
printf '#!/bin/sh\necho "$*" >> "%s/apt-get.called"\n' "$TMP" >"$TMP/bin/apt-get"
DEMO_INSTALL=1 PATH=$TMP/bin "$TMP/bin/bash" "$TOP/labs/demo.sh" --once >>"$TMP/missing.log" 2>&1 </dev/null
rc=$?
check "DEMO_INSTALL=1: it runs apt-get update, then apt-get install -y --no-install-recommends qemu-system-x86" \
    test "$(cat "$TMP/apt-get.called" 2>/dev/null)" = "update
install -y --no-install-recommends qemu-system-x86"
check "DEMO_INSTALL=1: it checks again and says what is still missing, exit 1 (got $rc)" \
    eval '[ "$rc" = 1 ] && grep -q "still missing after installing: qemu-system-x86" "$TMP/missing.log"'
[ "$TAP_FAILED" -gt 0 ] && sed 's/^/# /' "$TMP/missing.log"

# ---- 1. make demo DEMO_ARGS=--once
OUT1=$TMP/once.out
set -m
make -s -C "$TOP" demo DEMO_ARGS=--once >"$OUT1" 2>&1 </dev/null &
JOB=$!
set +m
wait "$JOB"; rc=$?
JOB=''
check "make demo DEMO_ARGS=--once exits 0 (got $rc)" test "$rc" = 0
replies=$(sed -n 's/^demo: the guest got \([0-9]*\) ping replies .*/\1/p' "$OUT1")
check "--once: the guest got ${replies:-no} ping replies through vhost-xdp (at least 3)" eval '[ "${replies:-0}" -ge 3 ]'
output_shows "--once" "$OUT1"
tot=$(grep -o 'vhost-xdp: exit: from guest [0-9]* packets, to guest [0-9]* packets' "$OUT1")
check "--once: vhost-xdp's exit totals: ${tot#vhost-xdp: exit: }" \
    eval '[[ $tot =~ from\ guest\ [1-9][0-9]*\ packets,\ to\ guest\ [1-9][0-9]*\ packets ]]'
grep -q '^guest: \(KVM\|TCG\)' "$OUT1"; check "--once: says which accelerator: $(grep -o '^guest: \(KVM\|TCG\)[^:]*' "$OUT1")" test $? = 0
nothing_left "--once" "$OUT1"
[ "$TAP_FAILED" -gt 0 ] && sed 's/^/# /' "$OUT1"

# ---- 2, 3. Without --once, until SIGINT
# run_until_sigint NAME TARGET: start the demo, wait for a status line with packets both ways, check the pids it printed
# are vhost-xdp and QEMU, send SIGINT to TARGET (demo: the demo's pid; job: the whole process group).
run_until_sigint() {
    local name=$1 target=$2 out=$TMP/$1.out fails0=$TAP_FAILED rc
    set -m
    env --default-signal=INT make -s -C "$TOP" demo >"$out" 2>&1 </dev/null &
    JOB=$!
    set +m
    if ! wait_for "a status line with packets both ways" 180 both_ways "$out" >/dev/null; then
        not_ok "$name: the guest's ping replies, forwarded both ways"; sed 's/^/# /' "$out"
        kill -INT -- "-$JOB"; wait_for "the demo to exit" 60 gone "$JOB"; JOB=''
        return
    fi
    names "$out"
    check "$name: the pids it printed are vhost-xdp ($VXP) and QEMU ($QP), running" \
        eval 'is_cmd "$VXP" vhost-xdp && is_cmd "$QP" qemu-system'
    if [ "$target" = demo ]; then kill -INT "$DEMO_PID"; else kill -INT -- "-$JOB"; fi
    if wait_for "the demo to exit after SIGINT" 60 gone "$JOB"; then
        wait "$JOB"; rc=$?
    else
        rc=timeout
    fi
    JOB=''
    if [ "$target" = demo ]; then
        check "$name: SIGINT to the demo (pid $DEMO_PID): make demo exits 0 (got $rc)" test "$rc" = 0
    else
        check "$name: SIGINT to the job (make, demo, QEMU, vhost-xdp): it exits (status $rc)" test "$rc" != timeout
    fi
    output_shows "$name" "$out"
    nothing_left "$name" "$out"
    [ "$TAP_FAILED" -gt "$fails0" ] && sed 's/^/# /' "$out"
}
run_until_sigint sigint-demo demo
run_until_sigint ctrl-c job

done_testing
