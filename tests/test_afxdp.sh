#!/usr/bin/env bash
# tests/test_afxdp.sh - the AF_XDP port (nic_afxdp.c) against a veth peer in a network namespace.
#
# Topology, made fresh with names unique to this run and removed on every exit path:
#
#     root netns                          netns vx-ns-PID
#     vxhPID (AF_XDP port, queue 0) <---> vxpPID (AF_PACKET peer)
#
# Both veth ends have one RX and one TX queue: a multi-queue veth puts each packet on the queue of the
# sender's CPU, and our port listens on queue 0 only.  IPv6 address generation is off, so the kernel sends
# no chatter of its own on the link.  tests/afxdp_tool (built from tests/afxdp_tool.c + nic_afxdp.c) is both
# ends; each side prints "seq length hash" per frame and the two lists must be identical.
#
# Shows, in generic (skb) and native (drv) XDP mode: the peer sends N frames of 60..1514 bytes and the
# AF_XDP port receives exactly those bytes; the AF_XDP port sends N frames and the peer receives exactly
# those.  Then: the program is gone after a normal exit and after SIGINT; after SIGKILL the kernel detaches
# it (BPF link) and a restart works; a stale program attached through netlink is replaced with a log
# line; and the errors a user meets (missing or down interface, queue out of range, zero-copy on veth, no
# privileges, RLIMIT_MEMLOCK too small) each give one clear line and leave nothing attached.
#
# Needs root and iproute2 (under CI=true their absence is a failure).  Takes a few seconds.
set -u
. "$(dirname "$0")/lib.sh"

show() { [ -s "$1" ] && sed 's/^/#   /' "$1" >&2; return 0; }

if [ "$(id -u)" != 0 ]; then
    if [ "${CI:-}" = true ]; then not_ok "AF_XDP test needs root (CI=true: a missing peer is a failure)"; exit 1; fi
    skip "AF_XDP test needs root"
    exit 0
fi
require "AF_XDP test (netns + veth)" ip

# The tool: built here if the Makefile has not built it (or it is older than its sources).
need_afxdp_tool

ID=$$
NS=vx-ns-$ID
HOST=vxh$ID
PEER=vxp$ID
TMP=$(mktemp -d "${TMPDIR:-/tmp}/vx-afxdp.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    ip link del "$HOST" 2>/dev/null
    ip netns del "$NS" 2>/dev/null
    rm -rf "$TMP"
}
on_exit cleanup

# start_bg OUT ERR cmd...: start cmd (a program, not a function, so that the pid is the program's) in
# the background; its pid in BG, remembered for cleanup.
start_bg() { local out=$1 err=$2; shift 2; "$@" >"$out" 2>"$err" & BG=$!; PIDS+=("$BG"); }
# reap PID: wait for it, its exit status in RC, and forget it (a reaped pid may be reused).
reap() {
    local pid=$1 p keep=()
    wait "$pid" 2>/dev/null; RC=$?      # 2>/dev/null: no "Killed" notice from the shell
    for p in "${PIDS[@]}"; do [ "$p" != "$pid" ] && keep+=("$p"); done
    PIDS=("${keep[@]}")
}
in_ns() { ip netns exec "$NS" "$@"; }
# `ip link show` marks an XDP program with " xdp", " xdpgeneric"... after the MTU and a "prog/xdp" line.
xdp_attached() { ip link show dev "$HOST" | grep -qE 'prog/xdp| xdp(generic|drv|offload)? '; }
no_xdp() { ! xdp_attached; }
ready() { rm -f "$TMP/ready"; }
wait_ready() { wait_for "$1 to be ready" 5 test -e "$TMP/ready"; }

ip netns add "$NS" &&
    ip link add "$HOST" numtxqueues 1 numrxqueues 1 type veth peer name "$PEER" numtxqueues 1 numrxqueues 1 \
        netns "$NS" &&
    ip link set dev "$HOST" addrgenmode none && ip -n "$NS" link set dev "$PEER" addrgenmode none &&
    ip link set dev "$HOST" up && ip -n "$NS" link set dev "$PEER" up
setup_rc=$?
check "veth pair $HOST <-> $NS/$PEER, one queue each, up" test "$setup_rc" = 0 || exit 1

# peer -> AF_XDP: rx_exchange LABEL N TOOL-OPTIONS...; the tool's log stays in $TMP/rx.err.
rx_exchange() {
    local label=$1 n=$2; shift 2
    ready
    start_bg "$TMP/rx.got" "$TMP/rx.err" "$TOOL" recv "$HOST" "$n" --timeout 10 --ready "$TMP/ready" "$@"
    local pid=$BG
    if ! wait_ready "AF_XDP receiver"; then
        reap "$pid"; not_ok "$label"; show "$TMP/rx.err"; return 1
    fi
    in_ns "$TOOL" raw-send "$PEER" "$n" >"$TMP/rx.sent" 2>"$TMP/rx.send.err"
    reap "$pid"
    if [ "$RC" = 0 ] && cmp -s "$TMP/rx.sent" "$TMP/rx.got"; then ok "$label"; return 0; fi
    not_ok "$label (receiver status $RC, $(wc -l <"$TMP/rx.got") of $n frames)"
    show "$TMP/rx.err"; show "$TMP/rx.send.err"
    return 1
}

# AF_XDP -> peer: tx_exchange LABEL N TOOL-OPTIONS...
tx_exchange() {
    local label=$1 n=$2; shift 2
    ready
    start_bg "$TMP/tx.got" "$TMP/tx.recv.err" ip netns exec "$NS" "$TOOL" raw-recv "$PEER" "$n" --timeout 10 --ready "$TMP/ready"
    local pid=$BG
    if ! wait_ready "peer receiver"; then
        reap "$pid"; not_ok "$label"; show "$TMP/tx.recv.err"; return 1
    fi
    "$TOOL" send "$HOST" "$n" "$@" >"$TMP/tx.sent" 2>"$TMP/tx.err"
    local send_rc=$?
    reap "$pid"
    if [ "$send_rc" = 0 ] && [ "$RC" = 0 ] && cmp -s "$TMP/tx.sent" "$TMP/tx.got"; then ok "$label"; return 0; fi
    not_ok "$label (sender status $send_rc, peer status $RC, $(wc -l <"$TMP/tx.got") of $n frames)"
    show "$TMP/tx.err"; show "$TMP/tx.recv.err"
    return 1
}

N=2000
for mode in skb native; do
    name=$([ $mode = skb ] && echo "generic (skb)" || echo "native (drv)")
    rx_exchange "$name: peer sends $N frames of 60..1514 B, the AF_XDP port receives exactly those bytes" \
        $N --mode $mode
    check "$name: the port says which mode it runs in" grep -q "XDP $name, copy" "$TMP/rx.err"
    tx_exchange "$name: the AF_XDP port sends $N frames of 60..1514 B, the peer receives exactly those bytes" \
        $N --mode $mode
    check "$name: after a normal exit the interface has no XDP program" no_xdp
done

# SIGINT: attached while running, gone after.
ready
start_bg /dev/null "$TMP/int.err" "$TOOL" recv "$HOST" 0 --timeout 30 --ready "$TMP/ready"
pid=$BG
wait_ready "AF_XDP port"
check "while the port is open, ip link shows our XDP program" xdp_attached
kill -INT "$pid"
reap "$pid"
check "SIGINT: the tool closes the port and exits 0" test "$RC" = 0
check "SIGINT: afterwards the interface has no XDP program" no_xdp

# SIGKILL: no chance to clean up; the BPF link makes the kernel detach the program.
ready
start_bg /dev/null "$TMP/kill.err" "$TOOL" recv "$HOST" 0 --timeout 30 --ready "$TMP/ready"
pid=$BG
wait_ready "AF_XDP port"
kill -KILL "$pid"
reap "$pid"
check "SIGKILL: the kernel detached the program (BPF link)" wait_for "XDP program gone" 2 no_xdp
rx_exchange "SIGKILL: a restart on the same interface and queue works at once" 200

# A stale program attached through netlink (as `ip link set dev IF xdp ...` would) outlives its process.
"$TOOL" netlink-attach "$HOST" --mode skb 2>"$TMP/stale.err"
check "a stale program attached through netlink stays after its process exits" \
    sh -c "ip link show dev '$HOST' | grep -q 'name stale_test'"
rx_exchange "stale program: nic_open replaces it (auto mode) and receives" 200
check "stale program: the replacement is said in one log line" grep -q "replaced a stale XDP program" "$TMP/rx.err"
check "auto mode on veth picks native (drv)" grep -q "XDP native (drv)" "$TMP/rx.err"
check "stale program: afterwards the interface has no XDP program" no_xdp

# Errors a user meets: exit status 1, one clear line, nothing left attached.
# expect_error LABEL PATTERN cmd...
expect_error() {
    local label=$1 pattern=$2; shift 2
    "$@" >/dev/null 2>"$TMP/err"
    local rc=$?
    if [ "$rc" != 0 ] && grep -q -- "$pattern" "$TMP/err" && no_xdp; then
        ok "$label: $(grep -m1 -- "$pattern" "$TMP/err" | sed 's/^vhost-xdp: //')"
    else
        not_ok "$label (status $rc)"; show "$TMP/err"
    fi
}
expect_error "missing interface" "interface not found" "$TOOL" recv "vxnone$ID" 1 --timeout 1
expect_error "queue out of range" "queue 1 out of range" "$TOOL" recv "$HOST" 1 --queue 1 --timeout 1
expect_error "zero-copy on veth" "does not support AF_XDP zero-copy" "$TOOL" recv "$HOST" 1 --zerocopy --timeout 1
ip link set dev "$HOST" down
expect_error "interface down" "interface is down" "$TOOL" recv "$HOST" 1 --timeout 1
ip link set dev "$HOST" up
if command -v setpriv >/dev/null; then
    expect_error "no privileges (root without capabilities)" "Operation not permitted" \
        setpriv --bounding-set=-all --inh-caps=-all "$TOOL" recv "$HOST" 1 --timeout 1
    expect_error "RLIMIT_MEMLOCK too small without CAP_IPC_LOCK" "RLIMIT_MEMLOCK" \
        setpriv --bounding-set=-ipc_lock,-sys_resource --inh-caps=-ipc_lock,-sys_resource \
        bash -c 'ulimit -l 1024; exec "$0" recv "$1" 1 --timeout 1' "$TOOL" "$HOST"
else
    skip "privilege and RLIMIT_MEMLOCK errors: setpriv (util-linux) not installed"
fi

done_testing
