#!/usr/bin/env bash
# tests/test_lab1.sh - Lab 1 as CI runs it: `labs/lab1-handshake.sh --ci`, and what the README says
# it shows.
#
# The lab boots the test guest (QEMU) on vhost-xdp --loopback --trace=rings, lets the guest's own
# packets come back to it for 3 s, stops both and prints the trace by phase.  Checked here:
#   - it exits 0, and the QEMU and vhost-xdp it started are gone afterwards (it prints their pids);
#   - QEMU's start-up messages in their order: GET_FEATURES, GET_PROTOCOL_FEATURES,
#     SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, SET_OWNER, SET_VRING_CALL, SET_VRING_ERR, SET_VRING_ENABLE;
#     then SET_FEATURES, SET_MEM_TABLE, SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR, SET_VRING_KICK,
#     ring 0 started, ring 1 started; then GET_VRING_BASE and the disconnect;
#   - feature names (our GET_FEATURES reply, the guest's SET_FEATURES), the SET_MEM_TABLE region
#     line and its REPLY_ACK, every per-ring message for both rings, a guide line per message type;
#   - the kick and call counts, with calls on both rings (the guest was interrupted for its packets).
set -u
. "$(dirname "$0")/lib.sh"

TOP=$(cd "$TESTS_DIR/.." && pwd)

need_cmd qemu-system-x86_64 "lab 1 (labs/lab1-handshake.sh)" || done_testing
[ -x "$VX" ] || { not_ok "$VX is built (run make)"; done_testing; }

out=$(mktemp "${TMPDIR:-/tmp}/vx-test-lab1-$$.XXXXXX")
trap 'rm -f "$out"' EXIT
"$TOP/labs/lab1-handshake.sh" --ci >"$out" 2>&1
rc=$?
show_output() { sed 's/^/# | /' "$out"; }

check "lab1-handshake.sh --ci exits 0 (status $rc)" [ "$rc" -eq 0 ]

# The pids it printed are stopped, its temporary directory removed.
vx_pid=$(sed -n 's/^vhost-xdp: pid \([0-9]*\),.*/\1/p' "$out" | head -n 1)
qemu_pid=$(sed -n 's/^guest: QEMU pid \([0-9]*\),.*/\1/p' "$out" | head -n 1)
tmpdir=$(sed -n 's/.*cleaned up: .* \(\/[^ ]*\)$/\1/p' "$out" | tail -n 1)
gone() { [ -n "$1" ] && ! kill -0 "$1" 2>/dev/null; }
check "vhost-xdp (pid ${vx_pid:-?}) and QEMU (pid ${qemu_pid:-?}) it started are stopped" \
    eval 'gone "$vx_pid" && gone "$qemu_pid"'
check "its temporary directory ${tmpdir:-?} is removed" eval '[ -n "$tmpdir" ] && [ ! -e "$tmpdir" ]'

# in_order PATTERN...: each extended regex matches a line after the line the previous one matched.
in_order() {
    awk -v list="$(printf '%s\n' "$@")" '
        BEGIN { n = split(list, want, "\n"); i = 1 }
        i <= n && $0 ~ want[i] { i++ }
        END { if (i <= n) { print "# not found in order: " want[i]; exit 1 } }' "$out"
}
check "start-up messages in order: GET_FEATURES ... SET_VRING_ENABLE" in_order \
    '<- GET_FEATURES \(1\)' '-> GET_FEATURES \(1\)' '<- GET_PROTOCOL_FEATURES \(15\)' \
    '<- SET_PROTOCOL_FEATURES \(16\)' '<- GET_QUEUE_NUM \(17\)' '<- SET_OWNER \(3\)' \
    '<- SET_VRING_CALL \(13\)' '<- SET_VRING_ERR \(14\)' '<- SET_VRING_ENABLE \(18\)' '= ring 1 enabled'
check "device start in order: SET_FEATURES, SET_MEM_TABLE, NUM, BASE, ADDR, KICK, ring 0 and 1 started" in_order \
    '^--- 2\. ' '<- SET_FEATURES \(2\)' '<- SET_MEM_TABLE \(5\)' '-> SET_MEM_TABLE \(5\)' \
    '<- SET_VRING_NUM \(8\)' '<- SET_VRING_BASE \(10\)' '<- SET_VRING_ADDR \(9\)' '<- SET_VRING_KICK \(12\)' \
    '= ring 0 started: size 256' '= ring 1 started: size 256'
check "stop in order: GET_VRING_BASE and its reply, then the disconnect" in_order \
    '^--- 4\. ' '<- GET_VRING_BASE \(11\)' '-> GET_VRING_BASE \(11\)' '= frontend disconnected'

has() { grep -Eq -- "$1" "$out"; }
check "our GET_FEATURES reply names the features we offer (CSUM, HOST_TSO4, MRG_RXBUF, INDIRECT_DESC, EVENT_IDX, PROTOCOL_FEATURES, VERSION_1 among them)" \
    has '-> GET_FEATURES \(1\) flags=0x5\[v1,REPLY\] size=8 0x[0-9a-f]+ \(CSUM\|(.*\|)?HOST_TSO4\|(.*\|)?MRG_RXBUF\|(.*\|)?INDIRECT_DESC\|EVENT_IDX\|PROTOCOL_FEATURES\|VERSION_1(\|.*)?\)$'
check "the guest's SET_FEATURES names VERSION_1, MRG_RXBUF, EVENT_IDX" \
    has '<- SET_FEATURES \(2\) flags=0x1\[v1\] size=8 0x[0-9a-f]+ \((.*\|)?MRG_RXBUF\|(.*\|)?EVENT_IDX\|(.*\|)?VERSION_1(\|.*)?\)$'
check "SET_MEM_TABLE: NEED_REPLY, the 256 MiB region (gpa, size, uaddr, mmap_offset) and its fd" \
    has '<- SET_MEM_TABLE \(5\) flags=0x9\[v1,NEED_REPLY\] size=40 nregions=1 \{gpa=0x0 size=0x10000000 uaddr=0x[0-9a-f]+ mmap_offset=0x0\} fds: [0-9]+$'
check "SET_MEM_TABLE: our REPLY_ACK u64=0 (success)" has '-> SET_MEM_TABLE \(5\) flags=0x5\[v1,REPLY\] size=8 u64=0 \(success\)'
for r in 0 1; do
    check "ring $r: SET_VRING_NUM 256, BASE 0, ADDR (desc/avail/used), KICK and CALL with an fd, ENABLE 1" eval "
        has '<- SET_VRING_NUM \(8\) .* index=$r num=256$' && has '<- SET_VRING_BASE \(10\) .* index=$r num=0$' &&
        has '<- SET_VRING_ADDR \(9\) .* index=$r flags=0x0 desc=0x[0-9a-f]+ avail=0x[0-9a-f]+ used=0x[0-9a-f]+' &&
        has '<- SET_VRING_KICK \(12\) .* index=$r fds: [0-9]+$' && has '<- SET_VRING_CALL \(13\) .* index=$r fds: [0-9]+$' &&
        has '<- SET_VRING_ENABLE \(18\) .* index=$r num=1$'"
done
check "a guide line for each message type (GET_FEATURES, SET_MEM_TABLE, SET_VRING_KICK, GET_VRING_BASE ...)" eval "
    has '^  GET_FEATURES: which virtio features' && has '^  SET_FEATURES: what the guest driver accepted' &&
    has '^  SET_MEM_TABLE: guest RAM' && has '^  SET_VRING_NUM: ' && has '^  SET_VRING_BASE: ' &&
    has '^  SET_VRING_ADDR: ' && has '^  SET_VRING_KICK: ' && has '^  SET_VRING_CALL: ' &&
    has '^  SET_VRING_ENABLE: ' && has '^  GET_VRING_BASE: '"
check "traffic: the guest received its own packets (VXSTAT rx_packets > 0)" has 'guest console: VXSTAT rx_packets=[1-9][0-9]* '
check "kick and call counts for both rings, calls > 0 on each" eval "
    has '^  ring 0 \(RX\): [0-9]+ kicks from the guest, [1-9][0-9]* calls' &&
    has '^  ring 1 \(TX\): [0-9]+ kicks from the guest, [1-9][0-9]* calls'"
check "EVENT_IDX negotiated, and the lab says what that means for kicks" has '^  EVENT_IDX is negotiated: the guest kicks only when'

# The lab's whole output when something is wrong (or asked for), as TAP comments.
if [ "$TAP_FAILED" -ne 0 ] || [ -n "${VX_SHOW_LOG:-}" ]; then show_output; fi
done_testing
