#!/usr/bin/env bash
# tests/test_lab8.sh - Lab 8 (labs/lab8-switch.sh --ci) shows what the README says it shows.
#
# Runs the lab non-interactively and checks, in its output:
#   - step 1: vhost-xdp is a switch of 4 sockets and the uplink, and says that poll thread 0 polls
#     lane 0 with all five ports; with --queues 2 --pmd-cores 0,1, thread 1 polls lane 1;
#   - step 2: A's pings of B were answered; on port 0 (A) a flood (A's ARP request) and A learned,
#     then hits on both ports (A's echo requests, B's answers); the uplink's peer got the flood;
#   - step 3: the MAC table (SIGUSR1) has A's MAC on port 0, B's on port 1, a station on the uplink;
#   - step 4: C's MAC is on port 2, then on port 3, which counted it moved (and port 2 learned it);
#   - step 5: the table emptied by ageing (aged > 0); A's next ping of B was answered, its first
#     frame a miss on port 0, and B was learned again;
#   - it exits 0, and the netns and the processes it started are gone.
# Needs root, ip, qemu-system-x86_64 and dpdk-testpmd (a missing one skips; fails under CI=true).
# Two TCG guests boot in parallel, --mac-age is 10 s: about 30-45 s.
set -u
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || missing "lab 8 needs root"
require "lab 8" ip qemu-system-x86_64 dpdk-testpmd

TOP=$(cd "$TESTS_DIR/.." && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/vx-lab8-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
OUT=$TMP/lab8.out

"$TOP/labs/lab8-switch.sh" --ci >"$OUT" 2>&1 </dev/null
rc=$?
check "labs/lab8-switch.sh --ci exits 0 (got $rc)" test "$rc" = 0

# step N: the lines of step N's section.
step() { awk -v s="--- $1" 'index($0, s) == 1 { on = 1; next } /^--- / { on = 0 } on' "$OUT"; }
# delta TEXT ROW COLUMN: in a counter table of TEXT, the "+N" of ROW ("0 guest A") in COLUMN
# (1 hits, 2 misses, 3 floods, 4 learned, 5 moved); 0 if the row is not there (nothing moved).
delta() {
    awk -v r="    $2 " -v c="$3" 'index($0, r) == 1 { n = 0; for (i = 1; i <= NF; i++) if ($i ~ /^\(\+[0-9]+\)$/) { n++; if (n == c) { gsub(/[()+]/, "", $i); print $i; f = 1; exit } } }
        END { if (!f) print 0 }' <<<"$1"
}
ge() { [ "${1:-0}" -ge "$2" ]; }

s1=$(step 1.) s2=$(step 2.) s3=$(step 3.) s4=$(step 4.) s5=$(step 5.)
check "step 1: a switch of 4 vhost-user ports and the uplink" \
    eval 'grep -q "port: an L2 learning switch of 4 vhost-user ports and the uplink vxh" <<<"$s1"'
check "step 1: pmd 0 polls lane 0: the four sockets and the uplink" \
    eval 'grep -q "switch: pmd 0 polls lane 0: port 0 (a.sock) queue pair 0, .*port 3 (d.sock) queue pair 0, port 4 (uplink vxh[0-9]*) queue 0" <<<"$s1"'
check "step 1: with --queues 2 --pmd-cores 0,1, pmd 1 polls lane 1" \
    eval 'grep -q "switch: pmd 1 polls lane 1: port 0 (a.sock) queue pair 1," <<<"$s1"'
fa=$(delta "$s2" "0 guest A" 3) la=$(delta "$s2" "0 guest A" 4) ha=$(delta "$s2" "0 guest A" 1) hb=$(delta "$s2" "1 guest B" 1)
peer=$(sed -n "s/.*peer received \([0-9]*\) frame.*/\1/p" <<<"$s2")
check "step 2: A's 3 pings of B answered" eval 'grep -q "ping -c 3 10.0.0.3: 3 replies" <<<"$s2"'
check "step 2: port 0 flooded (+$fa) and learned A (+$la); hits on A's port (+$ha) and B's (+$hb)" \
    eval 'ge "$fa" 1 && ge "$la" 1 && ge "$ha" 3 && ge "$hb" 4'
check "step 2: the uplink's peer received the flood (${peer:-?} frames)" eval 'ge "${peer:-0}" 1'
check "step 3: the MAC table: A on port 0, B on port 1, a station on the uplink (port 4)" \
    eval 'grep -Eq "^ +0 +0  52:54:00:12:38:0a " <<<"$s3" && grep -Eq "^ +1 +0  52:54:00:12:38:0b " <<<"$s3" &&
          grep -Eq "^ +4 +0  ([0-9a-f]{2}:){5}[0-9a-f]{2} " <<<"$s3"'
check "step 4: C's MAC on port 2, then on port 3" \
    eval 'grep -A1 "on socket c" <<<"$s4" | grep -Eq "^ +2 +0  52:54:00:12:38:0c " &&
          grep -A1 "on socket d" <<<"$s4" | grep -Eq "^ +3 +0  52:54:00:12:38:0c "'
l2=$(delta "$s4" "2 C, first socket" 4) m3=$(delta "$s4" "3 C, second socket" 5)
check "step 4: port 2 learned C (+$l2), port 3 counted it moved (+$m3)" eval 'ge "$l2" 1 && ge "$m3" 1'
aged=$(sed -n 's/.* later: .*table: 0 of 4096 entries, aged \([0-9]*\).*/\1/p' <<<"$s5")
ma=$(delta "$s5" "0 guest A" 2) lb=$(delta "$s5" "1 guest B" 4)
check "step 5: the table emptied by ageing (aged ${aged:-?})" eval 'ge "${aged:-0}" 1'
check "step 5: A's ping answered; its first frame a miss on port 0 (+$ma), B learned again (+$lb)" \
    eval 'grep -q "A pings B again: 2 replies" <<<"$s5" && ge "$ma" 1 && ge "$lb" 1'
check_lab_cleanup "$OUT"
[ "$TAP_FAILED" -gt 0 ] && sed 's/^/# /' "$OUT"
done_testing
