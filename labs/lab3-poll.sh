#!/usr/bin/env bash
# labs/lab3-poll.sh - Lab 3: poll mode vs interrupts, what a poll thread costs and what --pmd-sleep saves.
#
#   labs/lab3-poll.sh [--ci] [--sleep USEC]     (no root needed: --loopback uses no interface)
#
# Runs vhost-xdp --loopback twice, its poll thread pinned with --pmd-cores: first polling without
# pause (--pmd-sleep 0, the default), then backing off when idle (--pmd-sleep USEC, default 100).
# Each time it measures the poll thread ("vx-pmd0") for a few seconds with no frontend (idle), then
# with DPDK's testpmd (virtio_user, io forwarding, 32 bursts of 64-byte packets going round the
# loopback) pinned on another CPU (load), and prints one table:
#   CPU used   utime + stime of the thread, from /proc/PID/task/TID/stat: the CPU it got;
#   busy       time on a CPU or ready to run and waiting for one (other programs hold it), from
#              /proc/PID/task/TID/schedstat: the same as "CPU used" on an otherwise idle machine;
#   forwarded  packets per second from the guest, from vhost-xdp's --stats lines.
# On a machine other programs keep busy, a polling thread gets only its share of a CPU ("CPU used")
# but is still busy all the time; a thread that backs off uses little whatever the machine does
# (waking up costs a few microseconds of CPU each time), though it may wait for a CPU once awake.
# --ci (or LAB_CI=1): 2-second measurements, no pause.  LAB_KEEP=DIR keeps the logs.
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

SECS=5
[ "$LAB_CI" = 1 ] && SECS=2
HZ=$(getconf CLK_TCK)
# The poll thread and testpmd on two different CPUs, the last two (CPU 0 takes most interrupts).
NCPU=$(nproc)
PMD_CPU=$((NCPU > 1 ? NCPU - 2 : 0))
FE_CPU=$((NCPU - 1))
# testpmd's run directory (its --file-prefix), removed at the end.
PREFIX=vx-lab3-$$
lab_on_exit "exec 9>&-; rm -rf '$DPDK_RUNDIR/$PREFIX'"

lab_title "Lab 3: poll mode vs interrupts"
lab_explain <<'EOF'
A virtio device can wait for the guest's kick (an eventfd: the kernel wakes the thread, as
vhost-net does) or poll the rings without pause, as DPDK's poll-mode drivers and vhost-xdp do:
no wake-up to wait for, so less latency and more packets per second, but the poll thread burns a
whole CPU even when no packet comes.  --pmd-sleep USEC is the middle way OVS-DPDK also offers
(pmd-sleep-max): after a thousand empty polls in a row the thread sleeps between polls, 1 us, then
twice as long each time, up to USEC, and goes back to full speed with the first packet.
EOF
[ "$NCPU" -gt 1 ] || lab_say "only one CPU: the poll thread and testpmd share it, so the load figures are low"
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
traffic_flows() { grep -a 'stats: from guest' "$1" | tail -n 1 | grep -Eq 'from guest [0-9.]+ [kM]pps'; }
gone() { ! kill -0 "$1" 2>/dev/null; }

ROWS=()
# run_mode NAME USEC: one vhost-xdp, idle then loaded; adds two rows to the table and sets
# IDLE_USED, IDLE_BUSY and LOAD_MPPS.
run_mode() {
    local name=$1 usec=$2 log=$LAB_TMP/vhost-xdp-$2.log tid fe_log=$LAB_TMP/testpmd-$2.log from fe_pid
    lab_step "$name: vhost-xdp --loopback --pmd-cores $PMD_CPU --pmd-sleep $usec"
    lab_start_vx "$log" --loopback --pmd-cores "$PMD_CPU" --pmd-sleep "$usec" --stats 1
    tid=$(grep -lx vx-pmd0 /proc/"$VX_PID"/task/*/comm 2>/dev/null | head -n 1 | cut -d/ -f5)
    [ -n "$tid" ] || lab_die "no thread named vx-pmd0 in /proc/$VX_PID/task"
    lab_say "threads: $(cat /proc/"$VX_PID"/task/*/comm | tr '\n' ' ')(the poll thread vx-pmd0 is task $tid)"

    lab_say "idle: no frontend, measuring for $SECS s"
    measure "$tid"
    IDLE_USED=$USED IDLE_BUSY=$BUSY
    ROWS+=("$(printf '  %-30s %-6s %7s%% %7s%% %14s' "$name (--pmd-sleep $usec)" idle "$USED" "$BUSY" -)")

    lab_say "load: testpmd on CPU $FE_CPU sends 32 bursts of 64-byte packets round the loopback"
    rm -f "$LAB_TMP/fe.in"
    mkfifo "$LAB_TMP/fe.in"
    exec 9<>"$LAB_TMP/fe.in"   # testpmd quits at EOF on stdin: we hold the fifo open
    dpdk-testpmd --lcores "0@$FE_CPU,1@$FE_CPU" --no-huge -m 256 --no-pci --file-prefix="$PREFIX" \
        --vdev "net_virtio_user0,path=$LAB_SOCK,queues=1" \
        -- -i --nb-cores=1 --total-num-mbufs=16384 --forward-mode=io <&9 >"$fe_log" 2>&1 &
    fe_pid=$!
    lab_track "$fe_pid"
    printf '%s\n' "set txpkts 64" "start tx_first 32" >&9
    wait_for "packets through vhost-xdp" 30 traffic_flows "$log" ||
        { tail -n 5 "$fe_log" >&2; lab_die "no traffic from testpmd (its log is above)"; }
    from=$(wc -l <"$log")
    measure "$tid"
    LOAD_MPPS=$(mean_mpps "$from" "$log")
    ROWS+=("$(printf '  %-30s %-6s %7s%% %7s%% %9s Mpps' "$name (--pmd-sleep $usec)" load "$USED" "$BUSY" "$LOAD_MPPS")")
    printf '%s\n' stop quit >&9
    wait_for "testpmd to quit" 10 gone "$fe_pid" || stop_pid "$fe_pid"
    exec 9>&-
    stop_pid "$VX_PID"
}

run_mode polling 0
POLL_BUSY=$IDLE_BUSY POLL_MPPS=$LOAD_MPPS
run_mode back-off "$SLEEP_US"

lab_step "What the poll thread cost"
printf '  %-30s %-6s %8s %8s %14s\n' mode load "CPU used" busy forwarded
printf '%s\n' "${ROWS[@]}"
lab_say ""
lab_say "  idle: --pmd-sleep $SLEEP_US took the poll thread from ${POLL_BUSY}% busy to ${IDLE_BUSY}% (it used ${IDLE_USED}% of a CPU)"
lab_say "  load: $POLL_MPPS Mpps polling, $LOAD_MPPS Mpps with --pmd-sleep $SLEEP_US"
lab_explain <<EOF

"CPU used" is what the thread got; "busy" the time it was running or ready to run, waiting for a
CPU other programs held: the two differ only on a machine that is busy with something else.
Idle, the polling thread is busy all the time: every poll finds the rings empty and polls again,
and it takes all the CPU it is given.  With --pmd-sleep it sleeps between empty polls; what it
still uses is the cost of waking up, thousands of times a second.
Under a steady load every poll finds packets and neither thread sleeps.  But when the frontend
stalls for a moment (its CPU taken by something else), the back-off thread falls asleep and the
packets that come meanwhile wait for it: on a busy machine its load row shows it, less than 100%
busy and fewer packets per second.  (Rates swing from run to run on a shared machine: compare
several runs.)
The price is latency, which this table does not show: a packet that arrives while the thread
sleeps waits until it wakes, up to $SLEEP_US us more, and sparse traffic (a ping, a request now and
then) pays it on every packet, in each direction.  The ring must also hold what arrives meanwhile:
at 10 Mpps, 100 us is 1000 packets, more than a 256-entry ring.  That is why DPDK polls by default
and OVS-DPDK makes pmd-sleep-max an option.
EOF
lab_pause
exit 0
