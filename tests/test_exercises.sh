#!/usr/bin/env bash
# tests/test_exercises.sh - the labs' exercises: every answer in labs/answers/ applied to a copy of the
# tree, built, and its predicted effect checked for real, so that the exercises cannot rot as the code
# changes.
#
# For each labs/answers/labN-M.patch: the tracked files of the working tree (as they are now, uncommitted
# edits included) are copied to a directory of their own, the patch must apply with no fuzz and no
# reject (`patch -p1 -F0`; its preamble in words is ignored), and `make vhost-xdp` must build it.  An
# unpatched copy is built the same way.  Then each answer's prediction (what the README's exercise says
# the lab will show) is checked with a quick run that makes the same observation, and, where it is
# cheap, the unpatched build is checked to show the opposite (so that the check can fail):
#   Labs 1, 2, 6  DPDK testpmd (virtio_user, io forwarding) against `vhost-xdp --loopback --trace=rings`:
#                 the features testpmd sets, vhost-xdp's replies, the kicks and calls in the trace;
#                 tests/exercise_probe (tests/frontend.c as an EVENT_IDX driver): kicks per frame;
#                 objdump: the fence in vq_publish_used;
#   Lab 3         the poll thread's CPU (from /proc, as lab 3 measures it) and its count of polls;
#   Lab 4         a veth pair in two namespaces of this run: the peer pings vhost-xdp's end; who gets
#                 the frames (the host stack's Ip InReceives, vhost-xdp's "nic rx");
#   Lab 5         testpmd txonly -> vhost-xdp --iface: AF_XDP kicks (sendto, counted by strace) per
#                 packet, and what the wire gets when TX frames never come back;
#   Lab 7         tests/exercise_probe sends a TSO packet and a NEEDS_CSUM frame through the loopback
#                 (how many segments come back), and receives the veth peer's TCP SYNs through
#                 vhost-xdp --iface, checking every checksum as the receiving kernel would.
# An answer with no check here fails ("no check for ..."): a new answer needs its check.
#   tests/test_exercises.sh [labN-M ...]    (default: every answer)
# No rate or time is asserted; the only bounds are counts.  Needs dpdk-testpmd and strace, and root for
# the answers checked on the veth pair (labs 4, 5 and 7-1: namespaces, XDP); a missing one is a skip, a
# failure under CI=true.  About 2 minutes on a quiet machine.
set -u
. "$(dirname "$0")/lib.sh"

TOP=$(cd "$(dirname "$0")/.." && pwd)
cd "$TOP" || exit 1
SECS=2                  # each measurement (lab 3) and each testpmd run
PINGS=100               # tests/exercise_probe's one-at-a-time frames (its PINGS)

require "the exercises' peers" dpdk-testpmd strace objdump patch make ip
command -v ping >/dev/null 2>&1 || require "the peer's ping in lab 4" busybox

TMP=$(mktemp -d "${TMPDIR:-/tmp}/vx-exercises.XXXXXX")
NS_P=vxex-p-$$ NS_H=vxex-h-$$ HOST=vxeh$$ PEER=vxep$$
PIDS=()
cleanup() {
    exec 9>&-
    local p
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do stop_pid "$p"; done
    ip netns del "$NS_P" 2>/dev/null
    ip netns del "$NS_H" 2>/dev/null
    ip link del "$HOST" 2>/dev/null
    rm -rf "$TMP" "$DPDK_RUNDIR/vx-ex-$$"
}
on_exit cleanup

# ---- the copies: base (unpatched) and one per answer, built two at a time -----------------------------
mapfile -t ANSWERS < <(cd labs/answers 2>/dev/null && ls ./*.patch 2>/dev/null | sed 's|^\./||; s|\.patch$||' | sort -V)
[ "${#ANSWERS[@]}" -gt 0 ] || { not_ok "labs/answers/ holds answers"; done_testing; }
if [ $# -gt 0 ]; then       # tests/test_exercises.sh lab4-1 lab4-2: only those answers
    for a in "$@"; do [ -f "labs/answers/$a.patch" ] || { not_ok "labs/answers/$a.patch exists"; done_testing; }; done
    ANSWERS=("$@")
fi
mkdir "$TMP/tree"
git ls-files -z | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
    xargs -0 cp --parents -t "$TMP/tree" || { not_ok "copy the tree's tracked files"; done_testing; }
build_one() {   # build_one NAME: copy, patch (unless base), make; the outcome in $TMP/NAME.status
    local name=$1 dir=$TMP/$1
    cp -a "$TMP/tree" "$dir"
    if [ "$name" != base ] && ! patch -d "$dir" -p1 -F0 -N -s --no-backup-if-mismatch -r - \
            <"labs/answers/$name.patch" >"$TMP/$name.patch.log" 2>&1; then
        echo "patch" >"$TMP/$name.status"; return
    fi
    if make -C "$dir" -s -j2 vhost-xdp >"$TMP/$name.build.log" 2>&1; then echo ok; else echo build; fi >"$TMP/$name.status"
}
export -f build_one; export TMP
start=$SECONDS
printf '%s\n' base "${ANSWERS[@]}" | xargs -P 2 -I{} bash -c 'build_one {}'
echo "# built the tree and ${#ANSWERS[@]} patched copies in $((SECONDS - start)) s"
check "the unpatched tree builds" [ "$(cat "$TMP/base.status" 2>/dev/null)" = ok ] ||
    { sed 's/^/#   /' "$TMP/base.build.log"; done_testing; }
BASE=$TMP/base/vhost-xdp
declare -A BUILT
for a in "${ANSWERS[@]}"; do
    st=$(cat "$TMP/$a.status" 2>/dev/null)
    case $st in
    ok) ok "$a: applies cleanly (no fuzz) and builds"; BUILT[$a]=1 ;;
    patch) not_ok "$a: labs/answers/$a.patch applies cleanly (no fuzz)"; sed 's/^/#   /' "$TMP/$a.patch.log" ;;
    *) not_ok "$a: the patched tree builds"; tail -n 15 "$TMP/$a.build.log" | sed 's/^/#   /' ;;
    esac
done
bin() { echo "$TMP/$1/vhost-xdp"; }
# has NAME: the answer exists and built (its checks run); a missing answer is not this test's business.
has() { [ -n "${BUILT[$1]:-}" ]; }
CHECKED=()
checked() { CHECKED+=("$@"); }

# The C probe (built by the Makefile; built here if it is missing or older than its sources).
PROBE=tests/exercise_probe
if [ ! -x "$PROBE" ] || [ "$PROBE" -ot tests/exercise_probe.c ] || [ "$PROBE" -ot tests/frontend.c ]; then
    gcc -O2 -g -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread -o "$PROBE" tests/exercise_probe.c \
        tests/frontend.c || { not_ok "build tests/exercise_probe"; done_testing; }
fi
# probe NAME BIN MODE...: run the probe, its own TAP lines as comments; PROBE_LINE = its "PROBE" line.
probe() {
    local name=$1 bin=$2; shift 2
    "$PROBE" "$bin" "$@" >"$TMP/$name.probe" 2>&1
    sed 's/^/#   /' "$TMP/$name.probe" | grep -v '^#   ok ' | grep -v '^#   1\.\.'
    PROBE_LINE=$(grep '^PROBE ' "$TMP/$name.probe" | tail -n 1)
}
# field LINE KEY: the value of KEY=VALUE in LINE.
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" $1"; }

# ---- testpmd against vhost-xdp --loopback --trace=rings (labs 1, 2 and 6) -----------------------------
listening() { awk -v p="$1" '$NF == p && $4 == "00010000" { f = 1 } END { exit !f }' /proc/net/unix; }
gone() { ! kill -0 "$1" 2>/dev/null; }
FE_CPU=$(($(nproc) > 1 ? 1 : 0))
# testpmd NAME SOCK LOG MODE VXLOG: virtio_user on SOCK, 32 bursts injected ("start tx_first 32"), io
# forwarding (MODE io) or txonly, for SECS seconds after vhost-xdp's --trace=rings log VXLOG shows the
# rings started (testpmd may take many seconds to start on a busy machine); its port statistics in
# LOG.  TESTPMD_RX: RX-packets.
testpmd() {
    local name=$1 sock=$2 log=$3 mode=$4 vxlog=$5 pid
    rm -f "$TMP/fe.in"; mkfifo "$TMP/fe.in"
    exec 9<>"$TMP/fe.in"
    dpdk-testpmd --lcores "0@$FE_CPU,1@$FE_CPU" --no-huge -m 256 --no-pci --file-prefix="vx-ex-$$" \
        --vdev "net_virtio_user0,path=$sock,queues=1" \
        -- -i --nb-cores=1 --total-num-mbufs=16384 --forward-mode="$mode" <&9 >"$log" 2>&1 &
    pid=$!; PIDS+=("$pid")
    if [ "$mode" = io ]; then printf '%s\n' "start tx_first 32" >&9; else printf '%s\n' start >&9; fi
    wait_for "testpmd ($name) to start the rings" 60 grep -q "ring 1 started" "$vxlog"
    sleep "$SECS"
    printf '%s\n' stop "show port stats all" quit >&9
    wait_for "testpmd ($name) to quit" 10 gone "$pid" || stop_pid "$pid"
    wait "$pid" 2>/dev/null
    exec 9>&-
    rm -rf "$DPDK_RUNDIR/vx-ex-$$"
    TESTPMD_RX=$(awk '/RX-packets:/ { v = $2 } END { print v + 0 }' "$log")
}
# loopback_run NAME BIN: vhost-xdp BIN --loopback --trace=rings and testpmd io forwarding; sets
# FEATURES (testpmd's SET_FEATURES line), OFFERED (our GET_FEATURES reply), REPLIES (replies to
# SET_MEM_TABLE and SET_STATUS), KICKS and CALLS (ring events after the rings started), TESTPMD_RX.
loopback_run() {
    local name=$1 bin=$2 sock=$TMP/$1.sock log=$TMP/$1.vx.log pid
    "$bin" --socket "$sock" --loopback --trace=rings </dev/null >"$log" 2>&1 &
    pid=$!; PIDS+=("$pid")
    if ! wait_for "vhost-xdp ($name) to listen" 10 listening "$sock"; then
        FEATURES='' OFFERED='' REPLIES=0 KICKS=0 CALLS=0 TESTPMD_RX=0; stop_pid "$pid"; return 1
    fi
    testpmd "$name" "$sock" "$TMP/$name.testpmd.log" io "$log"
    stop_pid "$pid"
    FEATURES=$(grep ' <- SET_FEATURES ' "$log" | tail -n 1 | sed 's/.* size=8 //')
    OFFERED=$(grep ' -> GET_FEATURES ' "$log" | tail -n 1 | sed 's/.* size=8 //')
    REPLIES=$(grep -cE ' -> (SET_MEM_TABLE|SET_STATUS) ' "$log")
    KICKS=$(sed -n 's/.*trace: ring [0-9]*: kick (count \([0-9]*\)).*/\1/p' "$log" | awk '{ s += $1 } END { print s + 0 }')
    CALLS=$(awk '/trace: ring [0-9]+: call sent/ { s++ } /more calls sent/ { for (i = 1; i < NF; i++) if ($i == "more") s += $(i - 1) }
                 END { print s + 0 }' "$log")
    echo "# $name: testpmd RX-packets $TESTPMD_RX; kicks $KICKS, calls $CALLS; replies $REPLIES; SET_FEATURES $FEATURES"
}
circulates() { check "$1: testpmd's packets still circulate (RX-packets $TESTPMD_RX > 1024 injected)" [ "$TESTPMD_RX" -gt 1024 ]; }

if has lab1-1 || has lab1-2 || has lab2-2 || has lab2-3 || has lab3-1 || has lab6-1 || has lab6-2; then
    loopback_run base "$BASE"
    circulates "unpatched"
    check "unpatched: testpmd sets MRG_RXBUF, gets 2+ replies (REPLY_ACK), kicks <= 8 (NO_NOTIFY), 0 calls (the PMD's NO_INTERRUPT)" \
        eval '[[ $FEATURES == *MRG_RXBUF* ]] && [ "$REPLIES" -ge 2 ] && [ "$KICKS" -le 8 ] && [ "$CALLS" -eq 0 ]'
    BASE_FEATURES=$FEATURES BASE_KICKS=$KICKS BASE_RX=$TESTPMD_RX
fi

if has lab1-1; then checked lab1-1
    loopback_run lab1-1 "$(bin lab1-1)"
    check "lab1-1: MRG_RXBUF gone from our GET_FEATURES reply and from testpmd's SET_FEATURES" \
        eval '[ -n "$FEATURES" ] && [[ $OFFERED != *MRG_RXBUF* ]] && [[ $FEATURES != *MRG_RXBUF* ]]'
    check "lab1-1: the rings start without mergeable buffers" \
        eval '! grep -q "started:.*mergeable" "$TMP/lab1-1.vx.log" && grep -q "ring 0 started" "$TMP/lab1-1.vx.log"'
    circulates lab1-1
fi
if has lab1-2; then checked lab1-2
    loopback_run lab1-2 "$(bin lab1-2)"
    check "lab1-2: no NEED_REPLY from testpmd, no reply to SET_MEM_TABLE or SET_STATUS (unpatched: 2+)" \
        eval '[ "$REPLIES" -eq 0 ] && ! grep -q "SET_MEM_TABLE.*NEED_REPLY" "$TMP/lab1-2.vx.log" && grep -q "<- SET_MEM_TABLE" "$TMP/lab1-2.vx.log"'
    circulates lab1-2
fi
if has lab2-2; then checked lab2-2
    loopback_run lab2-2 "$(bin lab2-2)"
    check "lab2-2: testpmd (no EVENT_IDX) kicks once per burst: $KICKS kicks > 100 (unpatched $BASE_KICKS)" [ "$KICKS" -gt 100 ]
    circulates lab2-2
    probe lab2-2 "$(bin lab2-2)" kicks
    check "lab2-2: an EVENT_IDX driver does not notice: $(field "$PROBE_LINE" ping_tx_kicks) kicks for $PINGS single frames" \
        eval '[ "$(field "$PROBE_LINE" event_idx)" = 1 ] && [ "$(field "$PROBE_LINE" pings)" = $PINGS ] && [ "$(field "$PROBE_LINE" ping_tx_kicks)" -le 2 ]'
fi
if has lab2-3; then checked lab2-3
    fences() { objdump -d --no-show-raw-insn "$1" | awk '/^[0-9a-f]+ <.*>:$/ { f = $2 }
        f == "<vq_publish_used>:" && /mfence|lock or/ { n++ } END { print n + 0 }'; }
    nb=$(fences "$BASE") np=$(fences "$(bin lab2-3)")
    check "lab2-3: vq_publish_used's full fence (mfence or lock or) is gone: $np left (unpatched $nb)" \
        eval '[ "$nb" -ge 1 ] && [ "$np" -eq 0 ]'
    loopback_run lab2-3 "$(bin lab2-3)"
    circulates "lab2-3 (the race is too rare to see)"
fi
if has lab6-1; then checked lab6-1
    loopback_run lab6-1 "$(bin lab6-1)"
    # --trace=rings shows 5 calls a ring and second, and counts the others at the next second's first call.
    check "lab6-1: the PMD asked for no interrupt and gets calls: $CALLS in the trace, >= 5 (unpatched 0)" [ "$CALLS" -ge 5 ]
    circulates lab6-1
fi
if has lab6-2; then checked lab6-2
    loopback_run lab6-2 "$(bin lab6-2)"
    check "lab6-2: EVENT_IDX gone from our GET_FEATURES reply; testpmd's SET_FEATURES unchanged (it never took it)" \
        eval '[[ $OFFERED != *EVENT_IDX* ]] && [ -n "$FEATURES" ] && [ "$FEATURES" = "$BASE_FEATURES" ]'
    circulates lab6-2
    probe lab6-2 "$(bin lab6-2)" kicks
    check "lab6-2: the EVENT_IDX driver falls back to NO_NOTIFY: event_idx=$(field "$PROBE_LINE" event_idx), $(field "$PROBE_LINE" ping_tx_kicks) kicks" \
        eval '[ "$(field "$PROBE_LINE" event_idx)" = 0 ] && [ "$(field "$PROBE_LINE" pings)" = $PINGS ] && [ "$(field "$PROBE_LINE" ping_tx_kicks)" -le 2 ]'
fi

# ---- tests/exercise_probe on the loopback: kicks per frame (lab 2-1), TSO segments (lab 7-2) -----------
if has lab2-1; then checked lab2-1
    probe base "$BASE" kicks; base_line=$PROBE_LINE
    check "unpatched: an EVENT_IDX driver does not kick for single frames ($(field "$base_line" ping_tx_kicks) of $PINGS)" \
        eval '[ "$(field "$base_line" event_idx)" = 1 ] && [ "$(field "$base_line" pings)" = $PINGS ] && [ "$(field "$base_line" ping_tx_kicks)" -le 2 ]'
    probe lab2-1 "$(bin lab2-1)" kicks
    check "lab2-1: avail_event follows us: $(field "$PROBE_LINE" ping_tx_kicks) kicks for $PINGS single frames (>= $((PINGS / 2)))" \
        eval '[ "$(field "$PROBE_LINE" pings)" = $PINGS ] && [ "$(field "$PROBE_LINE" ping_tx_kicks)" -ge $((PINGS / 2)) ]'
fi
if has lab7-2; then checked lab7-2
    probe base-tso "$BASE" tso; a=$PROBE_LINE
    probe base-tso-guest "$BASE" tso guest; b=$PROBE_LINE
    check "unpatched: to a driver without GUEST_*: 3 segments, 1 plain frame, every checksum right ($a)" \
        eval '[ "$(field "$a" tso_frames)" = 3 ] && [ "$(field "$a" plain_frames)" = 1 ] && [ "$(field "$a" csum_bad)" = 0 ] && [ "$(field "$a" partial)" = 0 ]'
    check "unpatched: to a GUEST_CSUM+GUEST_TSO4 driver: the TSO packet whole, both partial ($b)" \
        eval '[ "$(field "$b" guest_tso4)" = 1 ] && [ "$(field "$b" tso_frames)" = 1 ] && [ "$(field "$b" plain_frames)" = 1 ] && [ "$(field "$b" partial)" = 2 ]'
    probe lab7-2 "$(bin lab7-2)" tso guest; b=$PROBE_LINE
    check "lab7-2: without GUEST_TSO4 the TSO packet is cut: 3 frames instead of 1, still partial, none bad ($b)" \
        eval '[ "$(field "$b" guest_tso4)" = 0 ] && [ "$(field "$b" tso_frames)" = 3 ] && [ "$(field "$b" csum_bad)" = 0 ]'
fi

# ---- lab 3: the poll thread ---------------------------------------------------------------------------
# pmd_tid PID: the tid of vhost-xdp's poll thread vx-pmd0.
pmd_tid() { local t; for t in /proc/"$1"/task/*; do [ "$(cat "$t/comm" 2>/dev/null)" = vx-pmd0 ] && { echo "${t##*/}"; return 0; }; done; return 1; }
# busy PID: percent of SECS seconds the poll thread ran or waited to run (schedstat), as lab 3's "busy".
busy() {
    local tid a b t0 t1
    tid=$(pmd_tid "$1") || { echo -1; return; }
    read -r a1 a2 _ <"/proc/$1/task/$tid/schedstat"; t0=$(date +%s%N)
    sleep "$SECS"
    read -r b1 b2 _ <"/proc/$1/task/$tid/schedstat"; t1=$(date +%s%N)
    echo $(( (b1 - a1 + b2 - a2) * 100 / (t1 - t0) ))
}
# idle_run NAME BIN ARGS...: vhost-xdp --loopback with no frontend for SECS seconds; BUSY, LIFE_MS (how
# long the process lived, at most), then the log.
idle_run() {
    local name=$1 bin=$2 sock=$TMP/$1.sock pid t0; shift 2
    t0=$(date +%s%N)
    "$bin" --socket "$sock" --loopback "$@" </dev/null >"$TMP/$name.vx.log" 2>&1 &
    pid=$!; PIDS+=("$pid")
    wait_for "vhost-xdp ($name) to listen" 10 listening "$sock" && wait_for "its poll thread" 5 pmd_tid "$pid" >/dev/null
    BUSY=$(busy "$pid")
    stop_pid "$pid"
    LIFE_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
}
if has lab3-1; then checked lab3-1
    idle_run base3 "$BASE"; b=$BUSY
    idle_run lab3-1 "$(bin lab3-1)"; p=$BUSY
    check "lab3-1: the poll thread that sleeps 1 ms per poll is busy $p% of the time (< 50%; unpatched $b% > 50%)" \
        eval '[ "$p" -ge 0 ] && [ "$p" -lt 50 ] && [ "$b" -gt 50 ]'
    # A poll moves at most one burst (32) each way and now lasts at least 1 ms; vhost-xdp lived at most
    # the milliseconds loopback_run took.
    t0=$(date +%s%N); loopback_run lab3-1 "$(bin lab3-1)"; ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    check "lab3-1: testpmd received $TESTPMD_RX packets in $ms ms, at most 32 per ms (unpatched ${BASE_RX:-?})" \
        eval '[ "$TESTPMD_RX" -gt 1024 ] && [ "$TESTPMD_RX" -le $((32 * (ms + 1))) ]'
fi
if has lab3-2; then checked lab3-2
    polls() { sed -n "s/.*pmd 0: \([0-9]*\) polls, \([0-9]*\) found nothing.*/\1 \2/p" "$TMP/$1.vx.log" | tail -n 1; }
    idle_run lab3-2 "$(bin lab3-2)"; read -r n0 e0 <<<"$(polls lab3-2)"
    idle_run lab3-2s "$(bin lab3-2)" --pmd-sleep 100; read -r n1 e1 <<<"$(polls lab3-2s)"
    # With --pmd-sleep 100, after the first 1000 empty polls each poll sleeps 1, 2, 4 ... 64 us, then
    # 100 us every time (a sleep never ends early): at most 1000 + 7 + 10 per millisecond lived.
    max=$((1000 + 7 + 10 * LIFE_MS))
    echo "# lab3-2: idle polling: ${n0:-?} polls (${e0:-?} empty); --pmd-sleep 100: ${n1:-?} polls (${e1:-?} empty) in $LIFE_MS ms"
    check "lab3-2: every idle poll finds nothing, ${n0:-?} polling > 10 x ${n1:-?} with --pmd-sleep 100 (<= $max)" \
        eval 'isnum "$n0" && isnum "$n1" && [ "$e0" = "$n0" ] && [ "$e1" = "$n1" ] && [ "$n1" -le "$max" ] && [ "$n0" -gt $((10 * n1)) ]'
fi

# ---- labs 4 and 5: a veth pair, vhost-xdp's end in a namespace of its own -------------------------------
ns_setup() {
    ip netns add "$NS_P" && ip netns add "$NS_H" &&
    ip link add "$HOST" numtxqueues 1 numrxqueues 1 type veth peer name "$PEER" numtxqueues 1 numrxqueues 1 netns "$NS_P" &&
    ip link set dev "$HOST" netns "$NS_H" &&
    ip -n "$NS_H" link set dev "$HOST" addrgenmode none && ip -n "$NS_P" link set dev "$PEER" addrgenmode none &&
    ip -n "$NS_H" link set dev lo up && ip -n "$NS_P" link set dev lo up &&
    ip -n "$NS_H" link set dev "$HOST" up && ip -n "$NS_P" link set dev "$PEER" up &&
    ip -n "$NS_H" addr add 10.0.0.3/24 dev "$HOST" && ip -n "$NS_P" addr add 10.0.0.1/24 dev "$PEER" &&
    # Static neighbours: no ARP, so that every frame counted is the ping's.
    ip -n "$NS_P" neigh add 10.0.0.3 lladdr "$(cat "/sys/class/net/$HOST/address" 2>/dev/null ||
        ip netns exec "$NS_H" cat "/sys/class/net/$HOST/address")" dev "$PEER" &&
    ip -n "$NS_H" neigh add 10.0.0.1 lladdr "$(ip netns exec "$NS_P" cat "/sys/class/net/$PEER/address")" dev "$HOST"
}
in_h() { ip netns exec "$NS_H" "$@"; }
PING=(ping)     # iputils' ping, or busybox's (installed for the guest image)
command -v ping >/dev/null 2>&1 || PING=(busybox ping)
listening_h() { in_h awk -v p="$1" '$NF == p && $4 == "00010000" { f = 1 } END { exit !f }' /proc/net/unix; }
inreceives() { in_h awk '/^Ip: [0-9]/ { print $4 }' /proc/net/snmp; }
# nic_start NAME BIN ARGS...: vhost-xdp --iface --trace=rings in NS_H, listening; VXPID.
nic_start() {
    local name=$1 bin=$2 sock=$TMP/$1.sock; shift 2
    ip netns exec "$NS_H" "$bin" --socket "$sock" --iface "$HOST" --trace=rings "$@" </dev/null >"$TMP/$name.vx.log" 2>&1 &
    VXPID=$!; PIDS+=("$VXPID")
    wait_for "vhost-xdp ($name) to listen" 10 listening_h "$sock" ||
        { sed 's/^/#   /' "$TMP/$name.vx.log"; return 1; }
}
exit_field() { sed -n "s/.*exit: .*$2 \([0-9]*\) packets.*/\1/p" "$TMP/$1.vx.log" | tail -n 1; }
# lab4_run NAME BIN: the peer pings 10.0.0.3 (vhost-xdp's end) 3 times; REPLIES, STACK (InReceives
# moved), NICRX (vhost-xdp's "nic rx").
lab4_run() {
    local name=$1 before out
    nic_start "$name" "$2" || { REPLIES=- STACK=- NICRX=-; return 1; }
    before=$(inreceives)
    out=$(ip netns exec "$NS_P" "${PING[@]}" -c 3 -i 0.2 -w 2 10.0.0.3 2>&1)
    REPLIES=$(sed -n 's/.* \([0-9]*\) \(packets \)\{0,1\}received.*/\1/p' <<<"$out")
    STACK=$(( $(inreceives) - before ))
    stop_pid "$VXPID"
    NICRX=$(exit_field "$name" "nic rx")
    echo "# $name: ping replies ${REPLIES:-?}, Ip InReceives +$STACK, vhost-xdp nic rx ${NICRX:-?}"
}
NIC_ANSWERS=(lab4-1 lab4-2 lab5-1 lab5-2 lab7-1)     # the answers checked on the veth pair
nic_answers() { local a; for a in "${NIC_ANSWERS[@]}"; do has "$a" && return 0; done; return 1; }
if nic_answers && [ "$(id -u)" != 0 ]; then
    if [ "${CI:-}" = true ]; then not_ok "labs 4, 5 and 7 (veth) need root (CI=true: a failure)"; else skip "labs 4, 5 and 7 (veth) need root"; fi
elif nic_answers; then
    if ! check "a veth pair in namespaces $NS_H and $NS_P" ns_setup; then
        :
    else
        if has lab4-1 || has lab4-2; then
            lab4_run base4 "$BASE"
            check "unpatched: the peer's pings reach vhost-xdp (nic rx $NICRX >= 3), not the stack (+$STACK), no reply" \
                eval 'isnum "$NICRX" && [ "$NICRX" -ge 3 ] && [ "$STACK" = 0 ] && [ "$REPLIES" = 0 ]'
        fi
        if has lab4-1; then checked lab4-1
            lab4_run lab4-1 "$(bin lab4-1)"
            check "lab4-1: XDP_PASS: the stack gets them (InReceives +$STACK >= 3) and answers ($REPLIES replies), vhost-xdp none ($NICRX)" \
                eval '[ "$STACK" -ge 3 ] && [ "$REPLIES" = 3 ] && [ "$NICRX" = 0 ]'
        fi
        if has lab4-2; then checked lab4-2
            lab4_run lab4-2 "$(bin lab4-2)"
            check "lab4-2: XDP_DROP: nobody gets them (InReceives +$STACK, nic rx $NICRX, $REPLIES replies)" \
                eval '[ "$STACK" = 0 ] && [ "$REPLIES" = 0 ] && [ "$NICRX" = 0 ]'
        fi
        # lab5_run NAME BIN [ARGS...]: testpmd txonly -> vhost-xdp --iface (strace counting its sendto
        # calls); TX (nic tx), FULL (tx ring full), KICKS (sendto calls), WIRE (the peer's rx_packets).
        lab5_run() {
            local name=$1 bin=$2 spid w0; shift 2
            nic_start "$name" "$bin" "$@" || { TX=0 FULL=0 KICKS=0 WIRE=0; return 1; }
            w0=$(ip netns exec "$NS_P" cat "/sys/class/net/$PEER/statistics/rx_packets")
            strace -f -c -e trace=sendto -o "$TMP/$name.strace" -p "$VXPID" 2>/dev/null &
            spid=$!; PIDS+=("$spid")
            sleep 0.5
            testpmd "$name" "$TMP/$name.sock" "$TMP/$name.testpmd.log" txonly "$TMP/$name.vx.log"
            kill -INT "$spid" 2>/dev/null; wait "$spid" 2>/dev/null
            stop_pid "$VXPID"
            WIRE=$(( $(ip netns exec "$NS_P" cat "/sys/class/net/$PEER/statistics/rx_packets") - w0 ))
            TX=$(exit_field "$name" "nic tx")
            FULL=$(sed -n 's/.*tx ring full \([0-9]*\).*/\1/p' "$TMP/$name.vx.log" | tail -n 1)
            KICKS=$(awk '$NF == "sendto" { print $4 }' "$TMP/$name.strace" 2>/dev/null | tail -n 1)
            echo "# $name: nic tx ${TX:-?}, tx ring full ${FULL:-?}, sendto ${KICKS:-0}, the peer received $WIRE"
            TX=${TX:-0} FULL=${FULL:-0} KICKS=${KICKS:-0}
        }
        if has lab5-1; then checked lab5-1
            lab5_run base5 "$BASE"; bt=$TX bk=$KICKS
            lab5_run lab5-1 "$(bin lab5-1)"
            check "lab5-1: a burst of one: an AF_XDP kick per packet ($KICKS sendto for $TX, >= 90%); unpatched $bk for $bt (<= 50%)" \
                eval '[ "$TX" -gt 100 ] && [ $((KICKS * 10)) -ge $((TX * 9)) ] && [ "$bt" -gt 100 ] && [ $((bk * 2)) -le "$bt" ]'
        fi
        if has lab5-2; then checked lab5-2
            # --frames 256: 128 RX frames, 128 TX frames (nic_afxdp.c, fill_ring_prime).
            lab5_run lab5-2 "$(bin lab5-2)" --frames 256
            check "lab5-2: no completions reaped: exactly the 128 TX frames sent ($TX), then TX ring full ($FULL), the peer got <= 128 ($WIRE)" \
                eval '[ "$TX" = 128 ] && [ "$FULL" -gt 0 ] && [ "$WIRE" -le 128 ]'
            lab5_run base5f "$BASE" --frames 256
            check "unpatched with --frames 256: frames come back and are sent again (nic tx $TX > 128)" [ "$TX" -gt 128 ]
        fi
        # nic_probe NAME BIN [guest]: tests/exercise_probe as the guest of vhost-xdp --iface (in NS_H),
        # while the peer opens a TCP connection to it (10.0.0.2, nobody answers: its SYN, sent again
        # after a second), whose checksums its veth leaves partial.
        nic_probe() {
            local name=$1 bin=$2; shift 2
            VX_BACKEND_WRAPPER="ip netns exec $NS_H" \
            PROBE_SENDER="ip netns exec $NS_P timeout 1.5 bash -c 'exec 3<>/dev/tcp/10.0.0.2/5001' 2>/dev/null; true" \
                probe "$name" "$bin" nic "$@" "$HOST"
        }
        if has lab7-1; then checked lab7-1
            ip -n "$NS_P" neigh replace 10.0.0.2 lladdr 52:54:00:12:34:56 dev "$PEER"
            nic_probe base7 "$BASE"; a=$PROBE_LINE
            nic_probe base7g "$BASE" guest; b=$PROBE_LINE
            check "unpatched: the peer's partial checksums completed for a driver without GUEST_CSUM, NEEDS_CSUM with it ($a; $b)" \
                eval '[ "$(field "$a" tcp_frames)" -ge 1 ] && [ "$(field "$a" csum_bad)" = 0 ] && [ "$(field "$b" tcp_frames)" -ge 1 ] && [ "$(field "$b" partial)" = "$(field "$b" tcp_frames)" ]'
            nic_probe lab7-1 "$(bin lab7-1)"; a=$PROBE_LINE
            nic_probe lab7-1g "$(bin lab7-1)" guest; b=$PROBE_LINE
            check "lab7-1: every TCP frame from the peer arrives with a wrong checksum and no NEEDS_CSUM, with or without GUEST_CSUM ($a; $b)" \
                eval '[ "$(field "$a" tcp_frames)" -ge 1 ] && [ "$(field "$a" csum_bad)" = "$(field "$a" tcp_frames)" ] && [ "$(field "$b" tcp_frames)" -ge 1 ] && [ "$(field "$b" csum_bad)" = "$(field "$b" tcp_frames)" ] && [ "$(field "$b" partial)" = 0 ]'
        fi
    fi
fi

# ---- every answer has a check --------------------------------------------------------------------------
for a in "${ANSWERS[@]}"; do
    has "$a" || continue
    [[ " ${CHECKED[*]} " == *" $a "* ]] || not_ok "no check for $a in tests/test_exercises.sh"
done
echo "# $((SECONDS)) s in all"
done_testing
