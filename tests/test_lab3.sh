#!/usr/bin/env bash
# tests/test_lab3.sh - Lab 3 as CI runs it: `labs/lab3-poll.sh --ci`, and what the README says it shows.
#
# The lab runs vhost-xdp --loopback three times (--pmd-sleep 0, --pmd-sleep 100, --pmd-mode
# adaptive), each with a frontend connected and silent (idle), then sending a frame every 10 ms
# (sparse, tests/rtt_probe), then testpmd's load, and prints a table.  Checked here:
#   - it exits 0, and every process it started (vhost-xdp, the probe, testpmd, three times each) is
#     gone afterwards, its temporary directory removed;
#   - it found the poll thread by its name, vx-pmd0, in /proc/PID/task/*/comm, three times;
#   - the table's nine rows (polling/back-off/adaptive x idle/sparse/load) with their numbers;
#   - idle, the polling thread is busy (running or ready to run) more than half the time, while the
#     one that backs off uses less than 30% of a CPU and the adaptive one less than 5%: "used" is the
#     CPU time the thread got (utime + stime), which a sleeping thread does not get however busy the
#     machine is, and "busy" for polling holds on a machine other tests keep busy too;
#   - sparse: every frame the probe sent came back byte for byte (three times); polling reads no
#     kick (0 kicks/s: vhost-xdp asked for none and the probe sent none), adaptive reads kicks (> 0/s)
#     and the probe sent some, and each mode gave a round trip;
#   - under load all three forward packets (> 0 Mpps);
#   - the summary lines, and the adaptive thread's exit line: it slept, and kicks woke it.
# Nothing here asserts a time, a rate or a round trip: those swing with the machine's load.
set -u
. "$(dirname "$0")/lib.sh"

TOP=$(cd "$TESTS_DIR/.." && pwd)

need_cmd dpdk-testpmd "lab 3 (labs/lab3-poll.sh)" || done_testing
[ -x "$VX" ] || { not_ok "$VX is built (run make)"; done_testing; }
[ -x "$TOP/tests/rtt_probe" ] || { not_ok "tests/rtt_probe is built (run make tests/rtt_probe)"; done_testing; }

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
check "it found the poll thread by name (vx-pmd0 in /proc/PID/task/*/comm), three times" \
    eval '[ "$(grep -c "^threads: .*vx-pmd0 .*(the poll thread vx-pmd0 is task [0-9]*)" "$out")" -eq 3 ]'

# row MODE PHASE: "USED BUSY RATE KICKS CALLS" from the table (RATE "-" when idle), e.g.
# "  adaptive  sparse        1%      3%      88 pps    137.7 / 11185 us       69        0"
row() {
    awk -v m="$1" -v p="$2" '$1 == m && $2 == p && $3 ~ /^[0-9]+%$/ && !f {
        f = 1; print $3 + 0, $4 + 0, $5, $(NF - 1), $NF }' "$out"
}
# rtt MODE: "MEDIAN P99" of the sparse row.
rtt() { sed -n "s/^  $1 *sparse .* \([0-9.]*\) \/ \([0-9.]*\) us .*/\1 \2/p" "$out" | head -n 1; }
declare -A used busy rate kicks calls
n=0
for m in polling back-off adaptive; do
    for p in idle sparse load; do
        read -r used[$m.$p] busy[$m.$p] rate[$m.$p] kicks[$m.$p] calls[$m.$p] <<<"$(row "$m" "$p")"
        isnum "${used[$m.$p]:-}" && isnum "${busy[$m.$p]:-}" && isnum "${kicks[$m.$p]:-}" && isnum "${calls[$m.$p]:-}" &&
            n=$((n + 1))
    done
done
check "the table has its nine rows (3 modes x idle, sparse, load) with CPU used, busy, kicks/s and calls/s ($n found)" \
    [ "$n" -eq 9 ]
check "idle, polling: the thread is busy more than half the time (busy ${busy[polling.idle]:-?}%, used ${used[polling.idle]:-?}%)" \
    eval 'isnum "${busy[polling.idle]:-}" && [ "${busy[polling.idle]}" -gt 50 ]'
check "idle, --pmd-sleep 100: the thread uses less than 30% of a CPU (used ${used[back-off.idle]:-?}%, busy ${busy[back-off.idle]:-?}%)" \
    eval 'isnum "${used[back-off.idle]:-}" && [ "${used[back-off.idle]}" -lt 30 ]'
check "idle, --pmd-mode adaptive: the thread uses less than 5% of a CPU (used ${used[adaptive.idle]:-?}%, busy ${busy[adaptive.idle]:-?}%)" \
    eval 'isnum "${used[adaptive.idle]:-}" && [ "${used[adaptive.idle]}" -lt 5 ]'

# The probe's own lines, one per mode: "  probe: 200 frames, each back byte for byte, in 2.01 s; 0 kicks sent; ..."
probe_lines=$(grep -Ec '^  probe: [1-9][0-9]* frames, each back byte for byte, in [0-9.]+ s; [0-9]+ kicks sent' "$out")
check "sparse: every frame the probe sent came back byte for byte, in each of the three modes ($probe_lines of 3)" \
    [ "$probe_lines" -eq 3 ]
probe_kicks() { grep -E '^  probe: ' "$out" | sed -n "${1}s/.*; \([0-9]*\) kicks sent;.*/\1/p"; }
pk=$(probe_kicks 1) ak=$(probe_kicks 3)
check "sparse, polling: no kick read (${kicks[polling.sparse]:-?}/s) and none sent by the probe (${pk:-?}): NO_NOTIFY is obeyed" \
    eval '[ "${kicks[polling.sparse]:-x}" = 0 ] && [ "${pk:-x}" = 0 ]'
check "sparse, adaptive: kicks read (${kicks[adaptive.sparse]:-?}/s) and sent by the probe (${ak:-?}): the thread slept between frames" \
    eval 'isnum "${kicks[adaptive.sparse]:-}" && [ "${kicks[adaptive.sparse]}" -gt 0 ] && isnum "${ak:-}" && [ "$ak" -gt 0 ]'
nrtt=0
for m in polling back-off adaptive; do read -r med p99 <<<"$(rtt "$m")"; [ -n "${p99:-}" ] && nrtt=$((nrtt + 1)); done
check "sparse: a round trip (median / p99) for each mode ($nrtt of 3)" [ "$nrtt" -eq 3 ]
check "under load all three forward packets (${rate[polling.load]:-?}, ${rate[back-off.load]:-?}, ${rate[adaptive.load]:-?} Mpps)" \
    eval 'awk -v a="${rate[polling.load]:-0}" -v b="${rate[back-off.load]:-0}" -v c="${rate[adaptive.load]:-0}" \
        "BEGIN { exit !(a > 0 && b > 0 && c > 0) }"'
check "the summary lines: idle CPU, sparse round trips and kicks, load rates, for the three modes" eval '
    grep -Eq "^  idle: the poll thread used [0-9]+% of a CPU polling \(busy [0-9]+%\), [0-9]+% backing off, [0-9]+% adaptive$" "$out" &&
    grep -Eq "^  sparse: round trip \(median\) [0-9.]+ us polling, [0-9.]+ us backing off, [0-9.]+ us adaptive; kicks [0-9]+/s polling, [0-9]+/s adaptive$" "$out" &&
    grep -Eq "^  load: [0-9.]+ Mpps polling, [0-9.]+ Mpps backing off, [0-9.]+ Mpps adaptive$" "$out"'
exit_line=$(sed -n 's/^  adaptive, the poll thread.s own account at exit: //p' "$out")
check "adaptive's exit line: it slept, and kicks woke it (${exit_line:-none})" eval '
    [[ "$exit_line" =~ ^asleep\ [0-9.]+%\ \|\ sleeps\ ([0-9]+)\ \|\ woken\ by\ kick\ ([0-9]+), ]] &&
    [ "${BASH_REMATCH[1]}" -gt 0 ] && [ "${BASH_REMATCH[2]}" -gt 0 ]'
check "the lab says what back-off costs (latency, up to the sleep) and that adaptive is NAPI" eval '
    grep -q "waits until it wakes, up to 100 us more" "$out" && grep -q "That is NAPI" "$out"'

# The lab's whole output when something is wrong (or asked for), as TAP comments.
if [ "$TAP_FAILED" -ne 0 ] || [ -n "${VX_SHOW_LOG:-}" ]; then sed 's/^/# | /' "$out"; fi
done_testing
