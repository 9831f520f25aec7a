#!/usr/bin/env bash
# tests/test_lab9.sh - Lab 9 (labs/lab9-migrate.sh --ci) shows what the README says it shows.
#
# Runs the lab non-interactively and checks, in its output:
#   - step 2: the source's monitor says the migration completed;
#   - step 3: the messages, decoded by --trace: SET_LOG_BASE and its reply (u64=0), the log mapped,
#     SET_FEATURES with LOG_ALL and the line "dirty logging on (LOG_ALL)", SET_VRING_ADDR with
#     flags=0x1 (VHOST_VRING_F_LOG) for rings 0 and 1; the source's GET_VRING_BASE replies, and on the
#     destination's port SET_VRING_BASE with those same numbers and the rings started there;
#   - step 4: QEMU's info migrate: total time, downtime, transferred ram, dirty sync count;
#   - step 5: vhost-xdp marked more than 0 pages in the dirty log (its --stats line for device 0);
#   - step 6: the guest negotiated GUEST_ANNOUNCE and port 1 (the destination's) counted its MAC moved;
#   - step 7: the ping's summary, and at least 10 replies from the destination (the loss is printed,
#     not judged: it depends on the downtime, which a busy machine stretches);
#   - it exits 0, and the netns and the processes it started are gone.
# If the destination guest froze or crashed after the migration (it happens under TCG on a loaded
# machine, with QEMU's own virtio-net too: tests/test_migrate.sh), the lab says so and exits 1: this
# test then fails, naming that, and does not run it again.
# Needs root, ip, busybox and qemu-system-x86_64 (a missing one skips; fails under CI=true).
# One TCG guest boots, one migration of 256 MiB: about 15-30 s.
set -u
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || missing "lab 9 needs root"
require "lab 9" ip busybox qemu-system-x86_64

TOP=$(cd "$TESTS_DIR/.." && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/vx-lab9-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
OUT=$TMP/lab9.out

"$TOP/labs/lab9-migrate.sh" --ci >"$OUT" 2>&1 </dev/null
rc=$?
check "labs/lab9-migrate.sh --ci exits 0 (got $rc)" test "$rc" = 0
check "the destination guest answered after the migration (else the lab says it does not)" \
    eval '! grep -q "THE DESTINATION GUEST DOES NOT ANSWER" "$OUT"'

# step N: the lines of step N's section.
step() { awk -v s="--- $1" 'index($0, s) == 1 { on = 1; next } /^--- / { on = 0 } on' "$OUT"; }
has() { grep -Eq -- "$2" <<<"$1"; }
s2=$(step 2.) s3=$(step 3.) s4=$(step 4.) s5=$(step 5.) s6=$(step 6.) s7=$(step 7.)

check "step 2: Migration status: completed" has "$s2" "Migration status: completed"
check "step 3: SET_LOG_BASE with the log's fd, our reply u64=0, the log mapped" eval \
    'has "$s3" "<- SET_LOG_BASE \(6\) .*mmap_size=0x[0-9a-f]+ .*fds: [0-9]+" && has "$s3" "-> SET_LOG_BASE \(6\) .*u64=0" &&
     has "$s3" "a.sock: dirty log mapped: [0-9]+ bytes"'
check "step 3: SET_FEATURES with LOG_ALL, and \"dirty logging on (LOG_ALL)\"" eval \
    'has "$s3" "<- SET_FEATURES \(2\) .*\|LOG_ALL\|" && has "$s3" "a.sock: dirty logging on \(LOG_ALL\)"'
check "step 3: SET_VRING_ADDR with flags=0x1 (VHOST_VRING_F_LOG) for rings 0 and 1" eval \
    'has "$s3" "<- SET_VRING_ADDR \(9\) .*index=0 flags=0x1 " && has "$s3" "<- SET_VRING_ADDR \(9\) .*index=1 flags=0x1 "'
# The source's bases (GET_VRING_BASE replies), then the destination's SET_VRING_BASE and ring starts.
base() { sed -n "s/.*-> GET_VRING_BASE (11) .* index=$1 num=\([0-9]*\).*/\1/p" <<<"$s3" | head -n 1; }
b0=$(base 0) b1=$(base 1)
check "step 3: the source's GET_VRING_BASE replied ring 0 at ${b0:-?}, ring 1 at ${b1:-?}" eval '[ -n "$b0" ] && [ -n "$b1" ]'
check "step 3: the destination's rings got those bases (SET_VRING_BASE) and started there (last_avail_idx)" eval \
    '[ -n "$b0" ] && [ -n "$b1" ] && has "$s3" "<- SET_VRING_BASE \(10\) .* index=0 num=$b0\$" &&
     has "$s3" "<- SET_VRING_BASE \(10\) .* index=1 num=$b1\$" &&
     has "$s3" "ring 0 started: .*last_avail_idx $b0," && has "$s3" "ring 1 started: .*last_avail_idx $b1,"'
check "step 4: info migrate: total time, downtime, transferred ram, dirty sync count" eval \
    'has "$s4" "total time: [0-9]+ ms" && has "$s4" "downtime: [0-9]+ ms" &&
     has "$s4" "transferred ram: [0-9]+ kbytes" && has "$s4" "dirty sync count: [0-9]+"'
grep -aE "^  (total time|downtime|dirty sync count):" <<<"$s4" | sed 's/^ */# /'
marked=$(sed -n 's/.*stats: device 0 (a.sock): dirty log: \([0-9]*\) pages marked.*/\1/p' <<<"$s5" | tail -n 1)
check "step 5: vhost-xdp marked ${marked:-no} pages in the dirty log (device 0, --stats)" eval '[ "${marked:-0}" -gt 0 ]'
check "step 6: the guest negotiated GUEST_ANNOUNCE" has "$s6" "VIRTIO_NET_F_GUEST_ANNOUNCE \(bit 21\): yes"
moved=$(sed -n 's/.*stats: switch port 1 (b.sock): .*moved \([0-9]*\).*/\1/p' <<<"$s6" | tail -n 1)
check "step 6: port 1 (the destination's) counted the guest's MAC moved (moved ${moved:-?})" eval '[ "${moved:-0}" -ge 1 ]'
dest=$(sed -n 's/.* \([0-9]*\) from the destination;.*/\1/p' <<<"$s7")
check "step 7: the ping's summary; ${dest:-no} replies from the destination" eval \
    'has "$s7" "[0-9]+ packets transmitted, [0-9]+ packets received" && [ "${dest:-0}" -ge 10 ]'
grep -a "^  replies: " <<<"$s7" | sed 's/^ */# /'
check_lab_cleanup "$OUT"
[ "$TAP_FAILED" -gt 0 ] && sed 's/^/# /' "$OUT"
done_testing
