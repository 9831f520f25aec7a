#!/usr/bin/env bash
# tests/test_lab3.sh - Lab 3 as CI runs it: `labs/lab3-poll.sh --ci`, and what the README says it shows.
#
# The lab runs vhost-xdp --loopback twice (--pmd-sleep 0, then --pmd-sleep 100), measures the poll
# thread vx-pmd0 idle and under testpmd's load, and prints a table.  Checked here:
#   - it exits 0, and every process it started (vhost-xdp twice, testpmd twice) is gone afterwards,
#     its temporary directory removed;
#   - it found the poll thread by its name, vx-pmd0, in /proc/PID/task/*/comm;
#   - the table's four rows (polling/back-off x idle/load) with their numbers;
#   - idle, the polling thread is busy (running or ready to run) more than half the time, while the
#     one that backs off uses less than 30% of a CPU.  "Busy" for the first, "used" for the second:
#     both hold on a machine other tests keep busy, where a polling thread gets only its share;
#   - under load both forward packets (> 0 Mpps): the back-off does not stop the traffic.
set -u
. "$(dirname "$0")/lib.sh"

TOP=$(cd "$TESTS_DIR/.." && pwd)

need_cmd dpdk-testpmd "lab 3 (labs/lab3-poll.sh)" || done_testing
[ -x "$VX" ] || { not_ok "$VX is built (run make)"; done_testing; }

out=$(mktemp "${TMPDIR:-/tmp}/vx-test-lab3-$$.XXXXXX")
trap 'rm -f "$out"' EXIT
"$TOP/labs/lab3-poll.sh" --ci >"$out" 2>&1
rc=$?

check "lab3-poll.sh --ci exits 0 (status $rc)" [ "$rc" -eq 0 ]

# Every pid it stopped (its cleanup line names them) is gone, its temporary directory removed.
pids=$(sed -n 's/.*cleaned up: stopped pids \([0-9 ]*\);.*/\1/p' "$out" | tail -n 1)
tmpdir=$(sed -n 's/.*cleaned up: .* \(\/[^ ]*\)$/\1/p' "$out" | tail -n 1)
all_gone() { local p; [ -n "$pids" ] || return 1; for p in $pids; do ! kill -0 "$p" 2>/dev/null || return 1; done; }
check "the processes it started (pids: ${pids:-none found}) are stopped" all_gone
check "its temporary directory ${tmpdir:-?} is removed" eval '[ -n "$tmpdir" ] && [ ! -e "$tmpdir" ]'
check "it found the poll thread by name (vx-pmd0 in /proc/PID/task/*/comm), twice" \
    eval '[ "$(grep -c "^threads: .*vx-pmd0 .*(the poll thread vx-pmd0 is task [0-9]*)" "$out")" -eq 2 ]'

# row MODE LOAD: "USED BUSY" (percent) and, under load, the rate, from the table.
row() {
    sed -n "s/^  $1 (--pmd-sleep [0-9]*) *$2 *\([0-9]*\)% *\([0-9]*\)% *\([0-9.]*\).*/\1 \2 \3/p" "$out" | head -n 1
}
read -r pi_used pi_busy _ <<<"$(row polling idle)"
read -r pl_used pl_busy pl_rate <<<"$(row polling load)"
read -r bi_used bi_busy _ <<<"$(row back-off idle)"
read -r bl_used bl_busy bl_rate <<<"$(row back-off load)"
check "the table has its four rows: polling and back-off, idle and load, CPU used and busy" eval '
    isnum "${pi_used:-}" && isnum "${pi_busy:-}" && isnum "${pl_used:-}" && isnum "${pl_busy:-}" &&
    isnum "${bi_used:-}" && isnum "${bi_busy:-}" && isnum "${bl_used:-}" && isnum "${bl_busy:-}"'
check "idle, polling: the thread is busy more than half the time (busy ${pi_busy:-?}%, used ${pi_used:-?}%)" \
    eval 'isnum "${pi_busy:-}" && [ "$pi_busy" -gt 50 ]'
check "idle, --pmd-sleep 100: the thread uses less than 30% of a CPU (used ${bi_used:-?}%, busy ${bi_busy:-?}%)" \
    eval 'isnum "${bi_used:-}" && [ "$bi_used" -lt 30 ]'
check "under load both forward packets (polling ${pl_rate:-?} Mpps, back-off ${bl_rate:-?} Mpps)" \
    eval 'awk -v a="${pl_rate:-0}" -v b="${bl_rate:-0}" "BEGIN { exit !(a > 0 && b > 0) }"'
check "its two summary lines: idle busy polling -> back-off, and both rates under load" eval '
    grep -Eq "^  idle: --pmd-sleep 100 took the poll thread from [0-9]+% busy to [0-9]+% \(it used [0-9]+% of a CPU\)$" "$out" &&
    grep -Eq "^  load: [0-9.]+ Mpps polling, [0-9.]+ Mpps with --pmd-sleep 100$" "$out"'
check "the lab says what back-off costs: latency, up to the sleep, for sparse traffic" \
    grep -q 'sleeps waits until it wakes, up to 100 us more' "$out"

# The lab's whole output when something is wrong (or asked for), as TAP comments.
if [ "$TAP_FAILED" -ne 0 ] || [ -n "${VX_SHOW_LOG:-}" ]; then sed 's/^/# | /' "$out"; fi
done_testing
