#!/usr/bin/env bash
# tests/fuzz/run.sh - run the libFuzzer targets that `make fuzz` built, for a bounded time.
#   tests/fuzz/run.sh [target ...]       (default: fuzz_vhost_user fuzz_virtqueue fuzz_offload fuzz_switch)
#   FUZZ_SECONDS=60                      fuzzing time per target
#   FUZZ_RUNS=10000000                   instead: this many executions per target, however long
#                                        they take (make fuzz-long)
#
# For each target:
#   1. replay every input in tests/fuzz/regressions/<target>/ (past crashes must stay fixed);
#   2. fuzz for FUZZ_SECONDS, starting from the committed seeds in tests/fuzz/corpus/<target>/
#      (read only: libFuzzer writes new inputs to the first corpus directory only, which is the
#      scratch one, build-fuzz/corpus/<target>/, emptied at each run);
#   3. print executions, coverage and crashes; a crash, leak, timeout or out-of-memory input is
#      saved in build-fuzz/crashes/<target>/ with the command that replays it.
# Exit status 0 iff no regression input failed and no crash was found.  Full logs: build-fuzz/<target>.log.
set -u
cd "$(dirname "$0")/../.."
secs=${FUZZ_SECONDS:-60}
runs=${FUZZ_RUNS:-}
targets=${*:-fuzz_vhost_user fuzz_virtqueue fuzz_offload fuzz_switch}
if [ -n "$runs" ]; then limit=(-runs="$runs"); else limit=(-max_total_time="$secs"); fi
failed=0

for t in $targets; do
    bin=build-fuzz/$t
    log=build-fuzz/$t.log
    [ -x "$bin" ] || { echo "$t: $bin not built (run make fuzz)"; failed=1; continue; }

    # 1. Regressions first: each file once.
    regs=(tests/fuzz/regressions/"$t"/*)
    if [ -e "${regs[0]}" ]; then
        if "$bin" "${regs[@]}" > "build-fuzz/$t.regressions.log" 2>&1; then
            echo "$t: ${#regs[@]} regression inputs pass"
        else
            echo "$t: a regression input fails again:"
            grep -E 'Running:|invariant broken|ERROR|SUMMARY' "build-fuzz/$t.regressions.log" | head -n 20 | sed 's/^/    /'
            failed=1
            continue
        fi
    fi

    # 2. Fuzz.
    scratch=build-fuzz/corpus/$t crashes=build-fuzz/crashes/$t
    rm -rf "$scratch" "$crashes"
    mkdir -p "$scratch" "$crashes"
    start=$SECONDS
    "$bin" "${limit[@]}" -timeout=10 -print_final_stats=1 -artifact_prefix="$crashes/" \
        "$scratch" "tests/fuzz/corpus/$t" > "$log" 2>&1
    rc=$? took=$((SECONDS - start))

    # 3. Report.
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov0=$(grep -m 1 'INITED cov:' "$log" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
    last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -n 1)
    cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<< "$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<< "$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<< "$last")
    found=$(find "$crashes" -type f | wc -l)
    echo "$t: ${execs:-?} executions in ${took} s (${rate:-?}/s), cov ${cov:-?} (seeds alone: ${cov0:-?}), ft ${ft:-?}, corpus ${corp:-?}, crashes $found"
    if [ "$found" -gt 0 ] || [ "$rc" -ne 0 ]; then
        failed=1
        echo "$t: FAILED (exit status $rc); the end of $log:"
        grep -E 'invariant broken|ERROR|SUMMARY|#[0-9]+ in ' "$log" | head -n 25 | sed 's/^/    /'
        for f in "$crashes"/*; do
            [ -e "$f" ] && echo "    replay: VX_FUZZ_LOG=1 $bin $f   (then minimize: $bin -minimize_crash=1 -runs=100000 $f)"
        done
    fi
done
[ "$failed" -eq 0 ]
