#!/usr/bin/env bash
# bench/test_bench.sh - the benchmark harness itself (bench/bench.sh), not vhost-xdp's speed.
#
# A bench measures and never asserts a speed; this test asserts that the harness works: a short run
# (one sample of one second, 64 B split ring) fills every cell of its tables with a number (the
# loopback, forward, vm2vm and switch rows, and the switch's two ratio lines), and the
# bench leaves nothing behind, whether it ends normally or by Ctrl-C in the middle of a run: no
# process it started, no network namespace or veth, no temporary directory, no DPDK runtime files,
# vm.nr_hugepages back where it was, no hugetlbfs mount.  Also: a bad knob is refused with one line
# and exit status 2.
#
# Needs dpdk-testpmd (a failure under CI=true when missing, as every test with a peer); the forward
# path and the hugepages only as root (otherwise the bench skips them, and so do these checks).
# Also the idle and rtt paths (tests/rtt_probe as the frontend) with BENCH_A_ARGS, against the same
# binary.  Then the TCP rows' harness (bench/bench_tcp.sh): a bad knob, and its smallest run (two guests);
# and the ring code's instruction count (bench/ring_cost.sh): a bad knob, a small run, twice.
set -u
. "$(dirname "$0")/../tests/lib.sh"
cd "$(dirname "$0")/.." || exit 1

require "the bench's frontend and reference backend" dpdk-testpmd
[ -x "$VX" ] || { not_ok "vhost-xdp is built ($VX)"; done_testing; }

ROOT=0
[ "$(id -u)" = 0 ] && ROOT=1
OUT=$(mktemp "${TMPDIR:-/tmp}/vx-test-bench.XXXXXX")
# The bench's own temporary directory (sockets, logs, hugetlbfs) goes in a directory of ours: it
# must be empty after each run, and any process naming it on its command line is one the bench started.
BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/vx-test-bench-tmp.XXXXXX")
BENCH_PID=''
trap 'stop_pid "$BENCH_PID"; rm -rf "$OUT" "$BENCH_TMP"' EXIT
HUGE_BEFORE=$(sysctl -n vm.nr_hugepages 2>/dev/null)
export BENCH_SECS=1 BENCH_SAMPLES=1 BENCH_WARMUP=0 BENCH_SIZES=64 BENCH_RINGS=split TMPDIR=$BENCH_TMP

# leftovers PID: what a bench with pid PID could have left; prints one line per thing found.
leftovers() {
    local pid=$1 p
    ps -eo pid=,args= | grep -F "$BENCH_TMP" | grep -v grep | sed 's/^ */process /'
    [ -z "$(ls -A "$BENCH_TMP")" ] || echo "files in TMPDIR: $(ls -A "$BENCH_TMP" | tr '\n' ' ')"
    ip netns list 2>/dev/null | grep -q "^vxbench-$pid\b" && echo "netns vxbench-$pid"
    ip link show "vxbh$pid" >/dev/null 2>&1 && echo "veth vxbh$pid"
    # Only this test's benches (their TMPDIR): another bench may be running on the machine meanwhile.
    grep -F "$BENCH_TMP" /proc/mounts | grep -q hugetlbfs && echo "a hugetlbfs mount of a bench"
    for p in /var/run/dpdk/vxb-fe-"$pid" /var/run/dpdk/vxb-be-"$pid" "${XDG_RUNTIME_DIR:-/tmp}"/dpdk/vxb-fe-"$pid"; do
        [ -e "$p" ] && echo "DPDK runtime directory $p"
    done
    [ "$(sysctl -n vm.nr_hugepages 2>/dev/null)" = "$HUGE_BEFORE" ] || echo "vm.nr_hugepages $(sysctl -n vm.nr_hugepages), was $HUGE_BEFORE"
    return 0
}

# ---- 1. a bad knob
BENCH_SECS=x bench/bench.sh >"$OUT" 2>&1
rc=$?
check "BENCH_SECS=x is refused with exit status 2 (got $rc)" [ "$rc" = 2 ]
check "... and one line saying what is wrong: $(head -n 1 "$OUT")" grep -q "^bench: BENCH_SECS=x: " "$OUT"

# ---- 2. a short run, to the end
bench/bench.sh >"$OUT" 2>&1 &
BENCH_PID=$!
wait "$BENCH_PID"
rc=$?
pid=$BENCH_PID BENCH_PID=''
sed 's/^/# /' "$OUT"
check "a short bench run exits with status 0 (got $rc)" [ "$rc" = 0 ]
paths="loopback vm2vm switch"
[ $ROOT = 1 ] && paths="loopback forward vm2vm switch"
for path in $paths; do
    # "loopback split    64 B   3.87 (3.84-4.75)     4.17 (3.77-4.74)       0.93"
    check "$path row: Mpps for vhost-xdp and DPDK and their ratio" \
        grep -Eq "^$path +split +64 B +[0-9]+\.[0-9]{2} \([0-9.]+-[0-9.]+\) +[0-9]+\.[0-9]{2} \([0-9.]+-[0-9.]+\) +[0-9]+\.[0-9]{2}\*?$" "$OUT"
    # "loopback split    64 B   1.9 (1.9)                    48% ( 0%)        52% ( 0%)        412"
    check "$path row: vhost-xdp's RSS, with and without guest memory and UMEM, both poll threads' CPU, its cycles per packet" \
        grep -Eq "^$path +split +64 B +[0-9]+\.[0-9] \([0-9]+\.[0-9]\) +[0-9]+% \( *[0-9]+%\) +[0-9]+% \( *[0-9]+%\) +[1-9][0-9]*$" "$OUT"
done
# "  split    64 B: switch / cross-connect 1.04 (target >= 0.90), switch / DPDK 0.73 (target >= 1.0)"
check "vm2vm and switch: the ratios switch / cross-connect and switch / DPDK" \
    grep -Eq "^  split +64 B: switch / cross-connect [0-9]+\.[0-9]{2} \(target >= 0.90\), switch / DPDK [0-9]+\.[0-9]{2} " "$OUT"
if [ $ROOT = 1 ]; then
    check "as root the testpmds ran on hugepages" grep -q "testpmd memory: 2 MiB hugepages" "$OUT"
    # The UMEM is 16 MiB and fully resident: what is left without it must be much less than VmRSS.
    check "forward: RSS without the UMEM is at least 16 MiB below VmRSS" \
        awk '$1 == "forward" && /%/ { gsub(/[()]/, "", $6); f = ($5 - $6 >= 16) } END { exit !f }' "$OUT"
else
    skip "hugepages and the forward path need root"
fi
left=$(leftovers "$pid")
check "nothing left after a normal end${left:+: $left}" [ -z "$left" ]

# ---- 2b. the idle and rtt paths, two modes of one binary (BENCH_VS the same vhost-xdp,
# BENCH_A_ARGS on side A): every cell of their two tables filled; one gap only (about 6 s)
BENCH_VS=dpdk BENCH_B_ARGS='--pmd-mode adaptive' bench/bench.sh >"$OUT" 2>&1
rc=$?
check "BENCH_B_ARGS with BENCH_VS=dpdk is refused with exit status 2 (got $rc)" [ "$rc" = 2 ]
if [ -x tests/rtt_probe ]; then
    BENCH_PATHS="idle rtt" BENCH_RTT_GAPS=1000 BENCH_VS=$VX BENCH_A_ARGS='--pmd-mode adaptive' bench/bench.sh >"$OUT" 2>&1 &
    BENCH_PID=$!
    wait "$BENCH_PID"
    rc=$?
    pid=$BENCH_PID BENCH_PID=''
    sed 's/^/# /' "$OUT"
    check "idle and rtt paths, BENCH_A_ARGS='--pmd-mode adaptive' against the same binary: exit status 0 (got $rc)" [ "$rc" = 0 ]
    check "... side A ran with its extra options (the header names them)" \
        grep -q "^bench: vhost-xdp = .* --pmd-mode adaptive, compared with $VX;" "$OUT"
    # "idle   split    0%                     99%"
    check "... the idle row: each poll thread's CPU" grep -Eq "^idle +split +[0-9]+% +[0-9]+% *$" "$OUT"
    # "rtt    split      1 ms   39.1 / 4150 us           15.3 / 45875 us"
    check "... the rtt row: median / p99 for each side" \
        grep -Eq "^rtt +split +1 ms +[0-9.]+ / [0-9.]+ us +[0-9.]+ / [0-9.]+ us *$" "$OUT"
    left=$(leftovers "$pid")
    check "... nothing left${left:+: $left}" [ -z "$left" ]
elif [ "${CI:-}" = true ]; then
    not_ok "the idle and rtt paths need tests/rtt_probe (make tests/rtt_probe)"
else
    skip "tests/rtt_probe is not built" "the idle and rtt paths"
fi

# ---- 3. Ctrl-C in the middle of a run (SIGINT to the bench alone; job control so it is not ignored,
# and SIGINT set back to its default, in case this test itself was started with it ignored)
set -m
BENCH_SAMPLES=30 env --default-signal=INT bench/bench.sh >"$OUT" 2>&1 &
BENCH_PID=$!
set +m
wait_for "the bench to start its first run" 60 grep -q "^bench: loopback" "$OUT"
sleep 2
kids=$(ps -eo pid=,ppid= | awk -v b="$BENCH_PID" '$2 == b { print $1 }' | tr '\n' ' ')
kill -INT "$BENCH_PID"
wait_for "the bench to exit after SIGINT" 30 eval '! kill -0 "$BENCH_PID" 2>/dev/null'
wait "$BENCH_PID" 2>/dev/null
rc=$?
pid=$BENCH_PID BENCH_PID=''
check "interrupted, the bench exits with status 130 (got $rc)" [ "$rc" = 130 ]
check "it says it was interrupted" grep -q "bench: interrupted, cleaning up" "$OUT"
check "what it had started is stopped (children were: ${kids:-none})" \
    eval 'for k in $kids; do kill -0 "$k" 2>/dev/null && exit 1; done; [ -n "$kids" ]'
left=$(leftovers "$pid")
check "nothing left after Ctrl-C${left:+: $left}" [ -z "$left" ]

# ---- 4. the TCP rows (bench/bench_tcp.sh): a bad knob, then the smallest run: one configuration,
# guest to guest, one transfer of 1 MB (two TCG guests boot: about 15 s)
BENCH_TCP_SAMPLES=0 bench/bench_tcp.sh >"$OUT" 2>&1
rc=$?
check "bench_tcp: BENCH_TCP_SAMPLES=0 is refused with exit status 2 (got $rc)" [ "$rc" = 2 ]
BENCH_TCP_PMD_MODE=sleepy bench/bench_tcp.sh >"$OUT" 2>&1
rc=$?
check "bench_tcp: BENCH_TCP_PMD_MODE=sleepy is refused with exit status 2 (got $rc)" [ "$rc" = 2 ]
if [ $ROOT = 1 ] && command -v qemu-system-x86_64 >/dev/null; then
    BENCH_TCP_CONFIGS=offloads BENCH_TCP_PATHS=g2g BENCH_TCP_SAMPLES=1 BENCH_TCP_BYTES=1000000 \
        BENCH_TCP_PMD_MODE=adaptive bench/bench_tcp.sh >"$OUT" 2>&1 &
    BENCH_PID=$!
    wait "$BENCH_PID"
    rc=$? pid=$BENCH_PID BENCH_PID=''
    sed 's/^/# /' "$OUT"
    check "a short bench_tcp run exits with status 0 (got $rc)" [ "$rc" = 0 ]
    # "guest -> guest  600 (540-651)        -                     -"
    check "bench_tcp: the guest -> guest row has Mbit/s and a range" \
        grep -Eq "^guest -> guest +[0-9]+ \([0-9]+-[0-9]+\)" "$OUT"
    check "bench_tcp: chains per 64 KiB from vhost-xdp's counters" grep -Eq "[0-9]+\.[0-9] chains .* per 64 KiB" "$OUT"
    check "bench_tcp: BENCH_TCP_PMD_MODE=adaptive ran vhost-xdp in adaptive mode" grep -q -- "--pmd-mode adaptive" "$OUT"
    left=$( { ps -eo args= | grep -F "$BENCH_TMP" | grep -v grep; ip netns list | grep "^vxbt-$pid\b";
              ip -br link | grep "vxbt.*$pid"; } 2>/dev/null)
    check "bench_tcp: nothing left (guests, vhost-xdp, netns, veths, taps, bridge)${left:+: $left}" [ -z "$left" ]
else
    skip "bench_tcp's run needs root and qemu-system-x86_64"
fi

# The ring code's instruction count (bench/ring_cost.sh, make bench-cost): a bad knob, then a small
# run whose four rows each hold a count, the same on a second run (a count, not a rate).
if command -v valgrind >/dev/null; then
    RING_COST_PACKETS=0 bench/ring_cost.sh >"$OUT" 2>&1
    rc=$?
    check "ring_cost: RING_COST_PACKETS=0 is refused with exit status 2 (got $rc)" [ "$rc" = 2 ]
    RING_COST_PACKETS=3000 bench/ring_cost.sh >"$OUT" 2>&1
    rc=$?
    sed 's/^/# /' "$OUT"
    rows=$(grep -Ec '^(split|packed) +(64|1518) B +[0-9]+\.[0-9]$' "$OUT")
    check "ring_cost: exit status 0 and four rows of instructions per packet (got $rc, $rows rows)" \
        eval '[ "$rc" = 0 ] && [ "$rows" = 4 ]'
    # The second table, the dirty log on: the counts off and on, their ratio, then timings (not compared)
    logrows=$(awk '/dirty log on/ { t = 1 } t && /^(split|packed) +(64|1518) B / && $5 > $4 { n++ } END { print n + 0 }' "$OUT")
    check "ring_cost: the dirty log's table, four rows where logging on counts more instructions than off ($logrows)" \
        [ "$logrows" = 4 ]
    counts() { grep -E '^(split|packed) +(64|1518) B +[0-9]+\.[0-9]$'; }
    first=$(counts <"$OUT")
    RING_COST_PACKETS=3000 bench/ring_cost.sh 2>/dev/null | counts >"$OUT"
    check "ring_cost: the same counts on a second run" [ "$first" = "$(cat "$OUT")" ]
elif [ "${CI:-}" = true ]; then
    not_ok "ring_cost needs valgrind (apt-get install valgrind)"
else
    skip "ring_cost needs valgrind"
fi

done_testing
