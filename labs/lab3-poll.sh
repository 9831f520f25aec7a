#!/usr/bin/env bash
# labs/lab3-poll.sh - Lab 3: poll mode vs interrupts: what a poll thread costs, what --pmd-sleep saves,
# and what --pmd-mode adaptive (sleep until the guest kicks) does for CPU, latency and kicks.
#
#   labs/lab3-poll.sh [--ci] [--sleep USEC]     (no root needed: --loopback uses no interface)
#
# Runs vhost-xdp --loopback three times, its poll thread pinned with --pmd-cores, with --trace=rings
# --stats 1: polling without pause (--pmd-sleep 0, the default), backing off when idle (--pmd-sleep
# USEC, default 100), and adaptive (--pmd-mode adaptive: poll under load, sleep on the kick fds when
# idle).  Each time, three phases, the frontend pinned on another CPU:
#   idle    a frontend connected and silent (tests/rtt_probe --idle): ready rings, nothing sent, as
#           an idle guest on a laptop;
#   sparse  the same probe then sends 100 frames a second, one at a time, each timed from the
#           moment it is published until it is back on its RX ring: the round trip (RTT);
#   load    DPDK's testpmd (virtio_user, io forwarding, 32 bursts of 64-byte packets going round).
# It prints one table, a row per mode and phase:
#   CPU used   utime + stime of the poll thread, from /proc/PID/task/TID/stat: the CPU it got;
#   busy       time on a CPU or ready to run and waiting for one (other programs hold it), from
#              /proc/PID/task/TID/schedstat: the same as "CPU used" on an otherwise idle machine;
#   rate       sparse: the probe's frames per second; load: packets per second from the guest,
#              from vhost-xdp's --stats lines;
#   RTT        sparse: the probe's round trip, median / 99th percentile, in microseconds;
#   kicks/s    kicks vhost-xdp read from the frontend, from the --trace=rings lines ("kick (count
#              N)" and "N more kicks" when main.c reads the kick fds, in poll mode; "N kicks in the
#              last second (read by the poll thread)" in adaptive mode, where the poll thread reads them);
#   calls/s    calls vhost-xdp sent ("call sent" lines and "N more calls sent").
# Then the adaptive thread's own account (its "exit: pmd 0: asleep ..." line) and what it all means.
# --ci (or LAB_CI=1): 2-second phases, no pause.  LAB_KEEP=DIR keeps the logs.
set -u
. "$(dirname "$0")/common.sh"

lab_init lab3 "$@"
SLEEP_US=100
set -- "${LAB_ARGS[@]+"${LAB_ARGS[@]}"}"
while [ $# -gt 0 ]; do
    case $1 in
    --sleep) SLEEP_US=${2:-}; shift 2 || true ;;
    *) echo "usage: $0 [--ci] [--sleep USEC]" >&2; exit 2 ;;
    esac
done
[[ $SLEEP_US =~ ^[1-9][0-9]*$ ]] && [ "$SLEEP_US" -le 10000 ] || { echo "$0: --sleep wants 1..10000 microseconds" >&2; exit 2; }
lab_need_cmd dpdk-testpmd dpdk-dev
lab_build
PROBE=$TOP/tests/rtt_probe
# The probe is one of the tests' programs (tests/rtt_probe.c): built here if missing or, outside
# --ci, out of date.
if [ ! -x "$PROBE" ] || { [ "$LAB_CI" != 1 ] && ! make -q -C "$TOP" tests/rtt_probe >/dev/null 2>&1; }; then
    make -s -C "$TOP" tests/rtt_probe >"$LAB_TMP/make-probe.log" 2>&1 ||
        { cat "$LAB_TMP/make-probe.log" >&2; lab_die "make tests/rtt_probe failed"; }
fi

SECS=5
[ "$LAB_CI" = 1 ] && SECS=2
GAP_US=10000        # the sparse phase: a frame every 10 ms, about 100 a second
HZ=$(getconf CLK_TCK)
# The poll thread and the frontend on two different CPUs, the last two (CPU 0 takes most interrupts).
NCPU=$(nproc)
PMD_CPU=$((NCPU > 1 ? NCPU - 2 : 0))
FE_CPU=$((NCPU - 1))
# testpmd's run directory (its --file-prefix), removed at the end.
PREFIX=vx-lab3-$$
lab_on_exit "exec 9>&-; rm -rf '$DPDK_RUNDIR/$PREFIX'"

lab_title "Lab 3: poll mode vs interrupts"
lab_explain <<EOF
A virtio device can wait for the guest's kick (an eventfd: the kernel wakes the thread, as
vhost-net does) or poll the rings without pause, as DPDK's poll-mode drivers and vhost-xdp do by
default: no wake-up to wait for, so less latency and more packets per second, but the poll thread
burns a whole CPU even when no packet comes.  Two ways in between:
  --pmd-sleep USEC     the back-off OVS-DPDK also offers (pmd-sleep-max): after a thousand empty
                       polls in a row the thread sleeps between polls, 1 us, then twice as long
                       each time, up to USEC, and goes back to full speed with the first packet;
  --pmd-mode adaptive  interrupt mode when idle: after 100 us without a packet the thread turns the
                       guest's kicks on, looks at the rings once more, and sleeps until a kick
                       comes; then it turns them off and polls again (Linux's NAPI, turned round).
Each mode runs three phases: idle (a frontend connected, sending nothing), sparse (one frame at a
time, about 100 a second, each timed round the loopback) and load (testpmd, flat out).
EOF
[ "$NCPU" -gt 1 ] || lab_say "only one CPU: the poll thread and the frontend share it, so the figures are low"
lab_pause

# cpu_sample TID: "TICKS RUN_NS WAIT_NS" now.  /proc/.../stat fields 14 and 15 (utime, stime) come
# after the command name in parentheses; schedstat is "on-CPU ns, run-queue wait ns, timeslices".
cpu_sample() {
    local stat ticks run=0 wait=0
    stat=$(cat "/proc/$VX_PID/task/$1/stat" 2>/dev/null) || return 1
    ticks=$(awk '{ print $12 + $13 }' <<<"${stat##*) }")
    [ -r "/proc/$VX_PID/task/$1/schedstat" ] && read -r run wait _ <"/proc/$VX_PID/task/$1/schedstat"
    echo "$ticks $run $wait"
}

# measure TID: sets USED and BUSY (percent of one CPU) over SECS seconds.
measure() {
    local a b t0 t1 ns
    a=($(cpu_sample "$1")) || lab_die "the poll thread $1 is gone"
    t0=$(date +%s%N)
    sleep "$SECS"
    b=($(cpu_sample "$1")) || lab_die "the poll thread $1 is gone"
    t1=$(date +%s%N)
    ns=$((t1 - t0))
    USED=$(( (b[0] - a[0]) * 1000000000 / HZ * 100 / ns ))
    if [ "${b[1]}" -gt 0 ]; then
        BUSY=$(( (b[1] - a[1] + b[2] - a[2]) * 100 / ns ))
    else
        BUSY=$USED      # no schedstat in this kernel: what it got is all we know
    fi
}

# The mean "from guest" rate of vhost-xdp's --stats lines after line $1 of its log, in Mpps.
mean_mpps() {
    awk -v from="$1" 'NR > from && match($0, /from guest [0-9.]+ [kM]?pps/) {
        split(substr($0, RSTART + 11, RLENGTH - 11), f, " ")
        v = f[1] * (f[2] ~ /^M/ ? 1e6 : f[2] ~ /^k/ ? 1e3 : 1); s += v; n++ }
        END { if (n) printf "%.2f", s / n / 1e6; else print "0.00" }' "$2"
}

# per_second FROM TO SECONDS LOG: "KICKS CALLS" per second in lines FROM+1..TO of vhost-xdp's log.
# Kicks: main.c's "kick (count N)" and "N more kicks in M reads" (poll modes), the poll thread's
# "N kicks in the last second" (adaptive); calls: each "call sent", and "N more calls sent".
per_second() {
    awk -v from="$1" -v to="$2" -v secs="$3" 'NR <= from || NR > to { next }
        /trace: .*kick \(count [0-9]+\)/ { sub(/.*kick \(count /, ""); k += $1 + 0; next }
        /trace: .* more kicks in / { sub(/.*ring [0-9]+: /, ""); k += $1; next }
        /trace: .* kicks in the last second/ { sub(/.*ring [0-9]+: /, ""); k += $1; next }
        /trace: .*: call sent/ { c++; next }
        /trace: .* more calls sent/ { sub(/.*ring [0-9]+: /, ""); c += $1 }
        END { printf "%.0f %.0f\n", k / secs, c / secs }' "$4"
}

lines_of() { wc -l <"$1"; }
# traffic_flows LOG FROM: the last --stats line after line FROM says thousands of packets a second.
traffic_flows() { awk -v from="$2" 'NR > from && /stats: from guest/ { l = $0 } END { print l }' "$1" | grep -Eq 'from guest [0-9.]+ [kM]pps'; }
gone() { ! kill -0 "$1" 2>/dev/null; }
has_line() { grep -q "$1" "$2" 2>/dev/null; }

ROWS=()
# row MODE PHASE USED BUSY RATE RTT KICKS/S CALLS/S: one line of the table.
row() { ROWS+=("$(printf '  %-9s %-7s %7s%% %6s%% %11s %19s %8s %8s' "$@")"); }
# us VALUE: a round trip for the table, one decimal below 100 us.
us() { awk -v v="$1" 'BEGIN { printf (v < 100 ? "%.1f" : "%.0f"), v }'; }

# phase_idle_sparse NAME TID LOG: the probe connects, stays silent (idle), then sends a frame
# every GAP_US (sparse); adds the idle row, sets IDLE_USED, IDLE_BUSY and what sparse_row needs.
phase_idle_sparse() {
    local name=$1 tid=$2 log=$3 out=$LAB_TMP/probe-$1.log pid from to secs rtt line ks
    lab_say "idle: a frontend (tests/rtt_probe, on CPU $FE_CPU) connected and silent, measuring for $SECS s"
    taskset -c "$FE_CPU" "$PROBE" --socket "$LAB_SOCK" --idle "$SECS.7" --seconds "$SECS" --count 100000 \
        --gap "$GAP_US" >"$out" 2>&1 &
    pid=$!
    lab_track "$pid"
    wait_for "the probe to connect" 20 has_line "^rtt_probe: idle for" "$out" ||
        { cat "$out" >&2; lab_die "the probe did not connect (its output is above)"; }
    from=$(lines_of "$log")
    measure "$tid"
    IDLE_USED=$USED IDLE_BUSY=$BUSY
    read -r ks _ <<<"$(per_second "$from" "$(lines_of "$log")" "$SECS" "$log")"
    row "$name" idle "$USED" "$BUSY" - - "$ks" 0

    lab_say "sparse: the probe sends a frame every $((GAP_US / 1000)) ms and times each one's round trip"
    wait_for "the probe to send" 20 has_line "^rtt_probe: sending" "$out" || lab_die "the probe did not start sending"
    from=$(lines_of "$log")
    measure "$tid"
    wait_for "the probe to finish" $((SECS * 5 + 20)) gone "$pid" || lab_die "the probe did not finish"
    wait "$pid" || { cat "$out" >&2; lab_die "the probe failed (its output is above)"; }
    SPARSE_FROM=$from SPARSE_USED=$USED SPARSE_BUSY=$BUSY SPARSE_OUT=$out
}

# kicks_read LOG FROM N: vhost-xdp has logged at least N kicks after line FROM.
kicks_read() { [ "$(per_second "$2" "$(lines_of "$1")" 1 "$1" | cut -d' ' -f1)" -ge "$3" ]; }

# sparse_row NAME LOG: the sparse row, before the next frontend connects.  In adaptive mode the
# poll thread's kick count for a second is logged when that second is over: wait (at most 3 s)
# until the log has counted every kick the probe says it sent.
sparse_row() {
    local line frames secs sent
    line=$(grep '^rtt_probe: .* frames, each back' "$SPARSE_OUT")
    lab_say "  probe: ${line#rtt_probe: }"
    sent=$(sed -n 's/.*; \([0-9]*\) kicks sent;.*/\1/p' <<<"$line")
    wait_for "vhost-xdp to log the probe's ${sent:-0} kicks" 3 kicks_read "$2" "$SPARSE_FROM" "${sent:-0}" 2>/dev/null
    read -r frames secs <<<"$(sed -n 's/^rtt_probe: \([0-9]*\) frames, .* in \([0-9.]*\) s;.*/\1 \2/p' <<<"$line")"
    read -r RTT_MED RTT_P99 <<<"$(sed -n 's/^rtt: .* median \([0-9.]*\) p99 \([0-9.]*\) us.*/\1 \2/p' "$SPARSE_OUT")"
    read -r SPARSE_KICKS SPARSE_CALLS <<<"$(per_second "$SPARSE_FROM" "$(lines_of "$2")" "${secs:-$SECS}" "$2")"
    row "$1" sparse "$SPARSE_USED" "$SPARSE_BUSY" \
        "$(awk -v n="${frames:-0}" -v s="${secs:-1}" 'BEGIN { printf "%.0f pps", n / s }')" \
        "$(us "$RTT_MED") / $(us "$RTT_P99") us" "$SPARSE_KICKS" "$SPARSE_CALLS"
}

# phase_load NAME TID LOG: first the sparse row; then testpmd's io forwarding round the loopback
# and the load row.  Sets RTT_MED, RTT_P99, SPARSE_KICKS and LOAD_MPPS.
phase_load() {
    local name=$1 tid=$2 log=$3 fe_log=$LAB_TMP/testpmd-$1.log from fe_pid ks cs
    sparse_row "$name" "$log"
    lab_say "load: testpmd on CPU $FE_CPU sends 32 bursts of 64-byte packets round the loopback"
    rm -f "$LAB_TMP/fe.in"
    mkfifo "$LAB_TMP/fe.in"
    exec 9<>"$LAB_TMP/fe.in"   # testpmd quits at EOF on stdin: we hold the fifo open
    dpdk-testpmd --lcores "0@$FE_CPU,1@$FE_CPU" --no-huge -m 256 --no-pci --file-prefix="$PREFIX" \
        --vdev "net_virtio_user0,path=$LAB_SOCK,queues=1" \
        -- -i --nb-cores=1 --total-num-mbufs=16384 --forward-mode=io <&9 >"$fe_log" 2>&1 &
    fe_pid=$!
    lab_track "$fe_pid"
    from=$(lines_of "$log")
    printf '%s\n' "set txpkts 64" "start tx_first 32" >&9
    wait_for "packets through vhost-xdp" 30 traffic_flows "$log" "$from" ||
        { tail -n 5 "$fe_log" >&2; lab_die "no traffic from testpmd (its log is above)"; }
    from=$(lines_of "$log")
    measure "$tid"
    LOAD_MPPS=$(mean_mpps "$from" "$log")
    read -r ks cs <<<"$(per_second "$from" "$(lines_of "$log")" "$SECS" "$log")"
    row "$name" load "$USED" "$BUSY" "$LOAD_MPPS Mpps" - "$ks" "$cs"
    printf '%s\n' stop quit >&9
    wait_for "testpmd to quit" 10 gone "$fe_pid" || stop_pid "$fe_pid"
    exec 9>&-
}

# run_mode NAME ARGS...: one vhost-xdp, its three phases; sets the mode's variables (by name).
run_mode() {
    local name=$1 log=$LAB_TMP/vhost-xdp-$1.log tid; shift
    lab_step "$name: vhost-xdp --loopback --pmd-cores $PMD_CPU $* --trace=rings --stats 1"
    lab_start_vx "$log" --loopback --pmd-cores "$PMD_CPU" "$@" --trace=rings --stats 1
    tid=$(grep -lx vx-pmd0 /proc/"$VX_PID"/task/*/comm 2>/dev/null | head -n 1 | cut -d/ -f5)
    [ -n "$tid" ] || lab_die "no thread named vx-pmd0 in /proc/$VX_PID/task"
    lab_say "threads: $(cat /proc/"$VX_PID"/task/*/comm | tr '\n' ' ')(the poll thread vx-pmd0 is task $tid)"
    phase_idle_sparse "$name" "$tid" "$log"
    phase_load "$name" "$tid" "$log"
    lab_stop "$VX_PID"
    EXIT_LINE=$(sed -n 's/^vhost-xdp: exit: pmd 0: //p' "$log" | tail -n 1)
}

run_mode polling --pmd-sleep 0
P_IDLE=$IDLE_BUSY P_USED=$IDLE_USED P_RTT=$RTT_MED P_KICKS=$SPARSE_KICKS P_MPPS=$LOAD_MPPS
run_mode back-off --pmd-sleep "$SLEEP_US"
B_USED=$IDLE_USED B_RTT=$RTT_MED B_MPPS=$LOAD_MPPS
run_mode adaptive --pmd-mode adaptive
A_USED=$IDLE_USED A_RTT=$RTT_MED A_KICKS=$SPARSE_KICKS A_MPPS=$LOAD_MPPS A_EXIT=$EXIT_LINE

lab_step "What each mode cost"
lab_say "  polling = --pmd-sleep 0, back-off = --pmd-sleep $SLEEP_US, adaptive = --pmd-mode adaptive"
printf '  %-9s %-7s %8s %7s %11s %19s %8s %8s\n' mode phase "CPU used" busy rate "RTT median / p99" kicks/s calls/s
printf '%s\n' "${ROWS[@]}"
lab_say ""
lab_say "  idle: the poll thread used ${P_USED}% of a CPU polling (busy ${P_IDLE}%), ${B_USED}% backing off, ${A_USED}% adaptive"
lab_say "  sparse: round trip (median) ${P_RTT} us polling, ${B_RTT} us backing off, ${A_RTT} us adaptive; kicks ${P_KICKS}/s polling, ${A_KICKS}/s adaptive"
lab_say "  load: $P_MPPS Mpps polling, $B_MPPS Mpps backing off, $A_MPPS Mpps adaptive"
lab_say "  adaptive, the poll thread's own account at exit: ${A_EXIT:-(no exit line)}"
lab_explain <<EOF

"CPU used" is what the thread got; "busy" the time it was running or ready to run, waiting for a
CPU other programs held: the two differ only on a machine that is busy with something else.

Polling: idle, the thread is busy all the time (every poll finds the rings empty and polls again),
and it takes all the CPU it is given.  Nobody kicks: vhost-xdp sets VRING_USED_F_NO_NOTIFY
(virtqueue.c, vq_attach) and the frontend obeys.  In return, while the thread has its CPU, a frame
is seen at the next poll, a microsecond or so later; on a machine other programs keep busy, the
spinning thread is often off its CPU, and a frame waits until it is scheduled again (milliseconds).
Back-off: idle, it sleeps between empty polls; what it still uses is the cost of waking up,
thousands of times a second.  The price is latency: a frame that arrives while the thread sleeps
waits until it wakes, up to $SLEEP_US us more, and sparse traffic (a ping, a request now and then)
pays it on every packet, in each direction.  Still no kicks: the frontend is never asked for one.
Adaptive: idle, the thread sleeps in poll() on the kick eventfds and uses next to nothing (a
wake-up every 100 ms to look once more, in case a frontend does not kick).  Sparse traffic pays one
kick (an eventfd write by the frontend; a VM exit for a real guest) and one wake-up per packet:
kicks/s follows the packet rate, and the round trip is the kernel's wake-up, tens of microseconds.
Under load the thread never finds 100 us without a packet, never turns kicks on, and runs the
same loop as polling: the same rate, and no kicks.  (On a machine other programs keep busy, the
frontend itself stalls now and then; 100 us without a packet is then enough for the thread to arm,
and the load row shows some kicks and a little less CPU.)
That is NAPI, the trade the guest's own virtio-net driver makes with our calls: interrupts while
traffic is sparse, polling while it is heavy.  (The frontends here, testpmd and the probe, poll and
set VRING_AVAIL_F_NO_INTERRUPT, so vhost-xdp sends no calls: calls/s is 0 in every row.  A Linux
guest asks for calls when it runs out of work; Lab 1 and Lab 2 count them.)
For the articles' argument: a poll-mode backend is not faster because polling is magic, but because
it never waits for a wake-up; it pays with a CPU that is never given back.  Adaptive keeps the
throughput (the load rows) and gives the CPU back when idle; what it cannot keep is the
microsecond round trip of a lone packet.  Rates and round trips swing from run to run on a shared
machine: compare several runs.
EOF
lab_pause
exit 0
