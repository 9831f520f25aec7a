#!/usr/bin/env bash
# bench/bench.sh - `make bench`: vhost-xdp against DPDK's own vhost backend, same frontend, same CPUs.
#
# What it measures (issue 7).  The frontend is always DPDK's testpmd with a virtio_user port (the
# "virtio-pmd" of the articles), pinned to one CPU; the backend under test is pinned to the other:
#
#   loopback    testpmd virtio_user, io mode, "start tx_first 32": 32 bursts of packets circulate
#               frontend -> backend -> frontend as fast as the two sides can move them.
#                 A: vhost-xdp --loopback            (each TX packet straight back to the RX ring)
#                 B: testpmd net_vhost, io mode      (DPDK's vhost library doing the same)
#               Counted at the frontend: testpmd's own Rx-pps of `show port stats 0`, which it
#               computes from its packet counter and its clock between two such commands.
#   forward     testpmd virtio_user, txonly mode -> backend -> AF_XDP -> veth -> peer (a netns).
#                 A: vhost-xdp --iface VETH
#                 B: testpmd net_vhost + net_af_xdp on VETH, io mode (port 0 -> port 1)
#               Counted at the peer: rx_packets of the veth's other end, in its own network
#               namespace: frames the kernel really delivered there, whatever the sender thinks.
#               Needs root (netns, XDP); skipped with a line saying so otherwise.
#   vm2vm       one testpmd with two virtio_user ports (the two "guests"), both on one forwarding
#   switch      lcore, mac mode, "start tx_first 32": port 0's frames go to port 1's MAC and port 1's
#               to port 0's (--eth-peer), each rewritten by testpmd as it forwards it to its other
#               port, so the bursts circulate 0 -> backend -> 1 -> testpmd -> 0 ...
#                 A: vhost-xdp with the two sockets: vm2vm the VM-to-VM cross-connect (no uplink),
#                    switch the same two sockets with --switch (an L2 learning switch, switch.c);
#                    every frame's source MAC is its port's own, so after the first burst (a miss,
#                    flooded, learned) every frame is a table hit
#                 B: testpmd with two net_vhost ports, io mode (port 0 -> port 1 and back): DPDK's
#                    own VM-to-VM.  Run once per round and quoted in both rows when both paths
#                    run (it is the same run for either).
#               Counted at the frontend: Rx-pps of both ports, summed (frames through the backend,
#               both directions).  mac mode and not io: io would send a frame back into the switch
#               with the other port's source MAC, and every frame would move a station; txonly ->
#               rxonly would need two testpmds (testpmd has one forwarding mode for all its ports),
#               three processes on two CPUs.  When both paths run, each round runs
#               cross-connect, switch and B in turn (reversed the next round), and the end says
#               switch / cross-connect (issue 15's target: within 10%) and switch / DPDK (>= 1.0).
#
# Each combination of path x ring (split; packed = packed_vq=1) x frame size (64, 1518 B) is run
# A then B (the next round B then A: A B B A ..., so a slow drift of the machine hurts neither side
# more), each run BENCH_SAMPLES samples of BENCH_SECS seconds after BENCH_WARMUP seconds of warm-up;
# the table quotes the median sample, its range, and the ratio A/B of the medians.  It also gives
# vhost-xdp's resident memory (VmRSS, /proc/PID/status) at the end of each run, and what is left of
# it after taking away, mapping by mapping (/proc/PID/smaps), the guest memory it mapped
# (SET_MEM_TABLE: the frontend's shared memory) and the UMEM (AF_XDP's packet memory).
#
# A second table says, for each row, how much of the sample time each backend's poll thread really
# had its CPU ("ran") and how much of that it spent in the kernel ("sys": on the forward path, the
# AF_XDP send and the veth).  A bench is a measurement, never a test: nothing here passes or fails
# on speed.  On a shared or virtual machine the rates swing a lot from second to second (other
# processes on the same CPUs, the hypervisor's placement): compare ratios from the same run, look at
# the ranges, and distrust rows marked * (a poll thread had its CPU less than 90% of the time).
# At the end: issue 7's targets (and issue 15's for vm2vm and switch) next to the numbers of this run.
#
# Usage: bench/bench.sh                 the whole table (make bench)
#        bench/bench.sh --profile [loopback|forward|vm2vm|switch [split|packed [SIZE]]]
#                                       one vhost-xdp run (default loopback split 64), its poll
#                                       thread sampled by perf meanwhile; prints perf's top
#                                       functions and source lines (needs perf: linux-perf)
#
# Memory: with root, the two testpmds get 2 MiB hugepages (as DPDK is normally run): the bench
# reserves them with sysctl vm.nr_hugepages if too few are free, mounts a hugetlbfs of its own, and
# gives both back at the end.  Without root (or BENCH_HUGE=0) they run with --no-huge.  The first
# line of the output says which.
#
# Environment knobs (defaults keep a full run under about 5 minutes: vm2vm and switch add about 2 to
# loopback's and forward's 2 1/2; BENCH_PATHS="loopback forward" leaves them out):
#   BENCH_SECS=2          seconds per sample
#   BENCH_SAMPLES=3       samples per run (the median is quoted)
#   BENCH_WARMUP=1        seconds of traffic before the first sample
#   BENCH_ROUNDS=1        A/B rounds per combination (samples of all rounds are pooled)
#   BENCH_SIZES="64 1518" frame sizes in bytes (64..1518)
#   BENCH_RINGS="split packed"
#   BENCH_PATHS="loopback forward vm2vm switch"
#   BENCH_HUGE=auto       1: hugepages (needs root), 0: --no-huge, auto: hugepages when root
#   BENCH_FE_CPU=0 BENCH_BE_CPU=1   where the frontend and the backend run
#   BENCH_KEEP=DIR        keep the logs (testpmd, vhost-xdp) in DIR
#   VX=./vhost-xdp        the binary under test (make bench builds it first)
#   BENCH_VS=dpdk         what it is compared with: dpdk, or the path of another vhost-xdp binary
#                         (an A/B of two builds, e.g. before and after an optimisation: same runs,
#                         same table, "B" instead of DPDK)
#   BENCH_A_ARGS=''       more vhost-xdp options for side A (VX), split at spaces; BENCH_B_ARGS the
#   BENCH_B_ARGS=''       same for B (BENCH_VS a vhost-xdp).  Two modes of one binary:
#                           BENCH_VS=./vhost-xdp BENCH_A_ARGS='--pmd-mode adaptive' bench/bench.sh
#
# Two more paths, not in the default BENCH_PATHS (together about a minute more for two rings; each is
# one backend per ring and side, interleaved as above, and needs tests/rtt_probe: make tests/rtt_probe):
#   idle        a frontend connected and silent (tests/rtt_probe --idle) for BENCH_SECS: how much CPU
#               each backend's poll thread uses with nothing to do (ran, sys as in the second table);
#   rtt         the same probe sending one 64-byte frame at a time, the next one 1 ms or 100 ms after
#               the last came back, each timed from its publication until it is back on the probe's
#               RX ring (loopback: vhost-xdp --loopback, DPDK io forwarding), for BENCH_SAMPLES x
#               BENCH_SECS s per gap (BENCH_RTT_GAPS="1000 100000", in us): the round trip's median
#               and 99th percentile, per side.  This is the latency a lone packet pays (testpmd's
#               --latencystats times only RX -> TX inside testpmd); in --pmd-mode adaptive, the
#               backend's wake-up.
# Exit status: 0 when every run was measured, 1 when one failed (its log is shown), 2 for a bad knob.
set -u
. "$(dirname "$0")/../tests/lib.sh"     # wait_for, stop_pid, VX

# === Knobs ===================================================================

BENCH_SECS=${BENCH_SECS:-2}
BENCH_SAMPLES=${BENCH_SAMPLES:-3}
BENCH_WARMUP=${BENCH_WARMUP:-1}
BENCH_ROUNDS=${BENCH_ROUNDS:-1}
BENCH_SIZES=${BENCH_SIZES:-64 1518}
BENCH_RINGS=${BENCH_RINGS:-split packed}
BENCH_PATHS=${BENCH_PATHS:-loopback forward vm2vm switch}
BENCH_HUGE=${BENCH_HUGE:-auto}
FE_CPU=${BENCH_FE_CPU:-0}
BE_CPU=${BENCH_BE_CPU:-1}

usage_error() { echo "bench: $*" >&2; exit 2; }
is_count() { [[ $1 =~ ^[1-9][0-9]{0,2}$ ]]; }     # 1..999
is_count "$BENCH_SECS"    || usage_error "BENCH_SECS=$BENCH_SECS: want seconds, 1..999"
is_count "$BENCH_SAMPLES" || usage_error "BENCH_SAMPLES=$BENCH_SAMPLES: want a count, 1..999"
is_count "$BENCH_ROUNDS"  || usage_error "BENCH_ROUNDS=$BENCH_ROUNDS: want a count, 1..999"
[[ $BENCH_WARMUP =~ ^[0-9]{1,3}$ ]] || usage_error "BENCH_WARMUP=$BENCH_WARMUP: want seconds, 0..999"
for s in $BENCH_SIZES; do
    # 64 B is the Ethernet minimum (with FCS); 1518 B the largest untagged frame, and what fits one mbuf.
    { [[ $s =~ ^[0-9]{2,4}$ ]] && [ "$s" -ge 64 ] && [ "$s" -le 1518 ]; } ||
        usage_error "BENCH_SIZES: '$s' is not a frame size in 64..1518"
done
for r in $BENCH_RINGS; do [[ $r =~ ^(split|packed)$ ]] || usage_error "BENCH_RINGS: '$r' is not split or packed"; done
for p in $BENCH_PATHS; do [[ $p =~ ^(loopback|forward|vm2vm|switch|idle|rtt)$ ]] || usage_error "BENCH_PATHS: '$p' is not loopback, forward, vm2vm, switch, idle or rtt"; done
[[ $BENCH_HUGE =~ ^(auto|0|1)$ ]] || usage_error "BENCH_HUGE=$BENCH_HUGE: want auto, 0 or 1"
BENCH_VS=${BENCH_VS:-dpdk}
if [ "$BENCH_VS" = dpdk ]; then
    REF=dpdk REF_NAME=DPDK
else
    [ -x "$BENCH_VS" ] && [ -f "$BENCH_VS" ] || usage_error "BENCH_VS=$BENCH_VS: want dpdk or an executable vhost-xdp"
    REF=other REF_NAME=B
fi
BENCH_A_ARGS=${BENCH_A_ARGS:-} BENCH_B_ARGS=${BENCH_B_ARGS:-}
[ "$REF" = other ] || [ -z "$BENCH_B_ARGS" ] || usage_error "BENCH_B_ARGS is for BENCH_VS=another vhost-xdp, not DPDK"
NCPU=$(nproc)
for c in "$FE_CPU" "$BE_CPU"; do
    { [[ $c =~ ^[0-9]+$ ]] && [ "$c" -lt "$NCPU" ]; } || usage_error "CPU '$c' is not one of this machine's 0..$((NCPU - 1))"
done

command -v dpdk-testpmd >/dev/null || { echo "bench: dpdk-testpmd not found: apt-get install -y dpdk-dev" >&2; exit 1; }
[ -x "$VX" ] || { echo "bench: $VX is not built: run make vhost-xdp (make bench does)" >&2; exit 1; }

# === Set-up and clean-up =====================================================

# Every name is unique to this run ($$), so that benches and tests on the same machine never meet.
TMP=$(mktemp -d "${TMPDIR:-/tmp}/vxbench.XXXXXX") || { echo "bench: mktemp failed" >&2; exit 1; }
SOCK=$TMP/vx.sock
SOCK2=$TMP/vx2.sock     # vm2vm and switch: the second port
NS=vxbench-$$ HOST_IF=vxbh$$ PEER_IF=vxbp$$
FE_PREFIX=vxb-fe-$$ BE_PREFIX=vxb-be-$$     # testpmd --file-prefix: its files in DPDK_RUNDIR and hugetlbfs
FE_PID='' BE_PID='' PERF_PID='' NS_MADE='' HUGE_MOUNT='' HUGE_ADDED=0 FAILED=0

cleanup() {
    local rc=$?
    trap '' INT TERM        # a second Ctrl-C must not cut the cleaning short
    { exec 9>&- 8>&-; } 2>/dev/null
    stop_pid "$PERF_PID"
    stop_pid "$FE_PID"
    stop_pid "$BE_PID"
    [ -n "$NS_MADE" ] && { ip link del "$HOST_IF" 2>/dev/null; ip netns del "$NS" 2>/dev/null; }
    [ -n "$HUGE_MOUNT" ] && umount "$HUGE_MOUNT" 2>/dev/null
    # Give back the hugepages we added, and only those: another bench may have added some meanwhile.
    [ "$HUGE_ADDED" -gt 0 ] && sysctl -q -w vm.nr_hugepages=$(($(sysctl -n vm.nr_hugepages) - HUGE_ADDED)) >/dev/null 2>&1
    rm -rf "${DPDK_RUNDIR:?}/$FE_PREFIX" "${DPDK_RUNDIR:?}/$BE_PREFIX"
    if [ -n "${BENCH_KEEP:-}" ]; then mkdir -p "$BENCH_KEEP" && cp "$TMP"/*.log "$BENCH_KEEP"/ 2>/dev/null; fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'echo; echo "bench: interrupted, cleaning up" >&2; exit 130' INT
trap 'exit 143' TERM

# Hugepages for the testpmds: 2 x -m 256 and some slack, in a hugetlbfs mounted in TMP.
HUGE_PAGES_NEEDED=384
free_hugepages() { awk '/^HugePages_Free:/ { print $2 }' /proc/meminfo; }
setup_memory() {
    MEM_ARGS=(--no-huge -m 256) MEM_SAID="--no-huge (4 KiB pages)"
    local want=$BENCH_HUGE
    [ "$want" = auto ] && { [ "$(id -u)" = 0 ] && want=1 || want=0; }
    [ "$want" = 1 ] || return 0
    if [ "$(id -u)" != 0 ]; then echo "bench: BENCH_HUGE=1 needs root (sysctl, mount)" >&2; exit 1; fi
    [ "$(awk '/^Hugepagesize:/ { print $2 }' /proc/meminfo)" = 2048 ] || { MEM_SAID+=", no 2 MiB hugepages here"; return 0; }
    # Pages of our own, always, even when enough are free: free pages that another bench reserved
    # go when it gives them back, in the middle of our run (seen on a shared machine: the next
    # testpmd then fails with "Cannot init memory").  Giving back lowers the count by what each
    # added; the kernel never takes a page in use.
    local free old
    old=$(sysctl -n vm.nr_hugepages)
    sysctl -q -w vm.nr_hugepages=$((old + HUGE_PAGES_NEEDED)) >/dev/null 2>&1
    HUGE_ADDED=$(($(sysctl -n vm.nr_hugepages) - old))     # the kernel may give fewer
    free=$(free_hugepages)
    if [ "${free:-0}" -lt "$HUGE_PAGES_NEEDED" ]; then
        MEM_SAID+=" (could get only ${free:-0} of $HUGE_PAGES_NEEDED hugepages)"
        return 0
    fi
    mkdir -p "$TMP/huge" && mount -t hugetlbfs -o pagesize=2M none "$TMP/huge" || { MEM_SAID+=" (mounting hugetlbfs failed)"; return 0; }
    HUGE_MOUNT=$TMP/huge
    # --single-file-segments: one file per memory list, so virtio_user's memory table stays within
    # vhost-user's 8 regions (without it, DPDK's default hugepage mode sends more than 8 regions and
    # the backend refuses the table: "Too many memory regions").
    MEM_ARGS=(-m 256 --single-file-segments --huge-dir "$HUGE_MOUNT")
    MEM_SAID="2 MiB hugepages"
    [ "$HUGE_ADDED" -gt 0 ] && MEM_SAID+=" ($HUGE_ADDED reserved with vm.nr_hugepages for this run, given back at the end)"
}

# The veth pair for the forward runs, made fresh for each run: its counters start at 0 and no XDP
# program of the previous backend can be left on it.
make_veth() {
    [ -n "$NS_MADE" ] || { ip netns add "$NS" || return 1; NS_MADE=1; }
    ip link add "$HOST_IF" numtxqueues 1 numrxqueues 1 type veth \
        peer name "$PEER_IF" numtxqueues 1 numrxqueues 1 netns "$NS" &&
    ip link set dev "$HOST_IF" addrgenmode none && ip -n "$NS" link set dev "$PEER_IF" addrgenmode none &&
    ip link set dev "$HOST_IF" up && ip -n "$NS" link set dev "$PEER_IF" up
}
del_veth() { ip link del "$HOST_IF" 2>/dev/null; }

# === The two backends ========================================================

# The socket listens: /proc/net/unix shows its path with flags 00010000 (__SO_ACCEPTCON).
listening() { awk -v p="${1:-$SOCK}" '$NF == p && $4 == "00010000" { f = 1 } END { exit !f }' /proc/net/unix; }
alive() { kill -0 "$1" 2>/dev/null; }
gone() { ! kill -0 "$1" 2>/dev/null; }

# wait_listening NAME: the backend listens, or it died / took too long (status 1).
wait_listening() {
    local i
    for ((i = 0; i < 150; i++)); do
        listening && return 0
        alive "$BE_PID" || { echo "bench: $1 exited before listening on $SOCK" >&2; return 1; }
        sleep 0.1
    done
    echo "bench: $1 did not listen on $SOCK within 15 s" >&2
    return 1
}

# start_vhost_xdp PATH LOG [BINARY]: vhost-xdp (or BINARY) on BE_CPU, its poll thread too
# (--pmd-cores), so that the control thread and the poll thread share one CPU as testpmd's two
# lcores do.  UMEM: the default 4096 frames of 4096 bytes, said out loud because the RSS column
# takes it away.
UMEM_KB=$((4096 * 4096 / 1024))
start_vhost_xdp() {
    local port=(--loopback) extra=$BENCH_A_ARGS
    [ "$1" = forward ] && port=(--iface "$HOST_IF" --frames 4096 --frame-size 4096)
    [ "$1" = vm2vm ] && port=(--socket "$SOCK2")
    [ "$1" = switch ] && port=(--socket "$SOCK2" --switch)
    [ -n "${3:-}" ] && extra=$BENCH_B_ARGS
    rm -f "$SOCK" "$SOCK2"
    # shellcheck disable=SC2086  # $extra: the user's options, split at spaces on purpose
    taskset -c "$BE_CPU" "${3:-$VX}" --socket "$SOCK" "${port[@]}" --pmd-cores "$BE_CPU" $extra </dev/null >"$2" 2>&1 &
    BE_PID=$!
    wait_listening vhost-xdp && wait_second_port "$1" vhost-xdp
}

# start_dpdk PATH LOG: testpmd with DPDK's vhost PMD (and for forward its AF_XDP PMD), io mode:
# port 0 -> port 1 and back (loopback: port 0 -> itself).  Non-interactive, it runs until a line
# comes on stdin: a fifo held open on fd 8.
start_dpdk() {
    local vdevs=(--vdev "net_vhost0,iface=$SOCK,queues=1")
    [ "$1" = forward ] && vdevs+=(--vdev "net_af_xdp0,iface=$HOST_IF,start_queue=0,queue_count=1")
    two_ports "$1" && vdevs+=(--vdev "net_vhost1,iface=$SOCK2,queues=1")
    rm -f "$SOCK" "$SOCK2" "$TMP/be.in"
    mkfifo "$TMP/be.in" && exec 8<>"$TMP/be.in"
    dpdk-testpmd --lcores "0@$BE_CPU,1@$BE_CPU" "${MEM_ARGS[@]}" --no-pci --file-prefix="$BE_PREFIX" "${vdevs[@]}" \
        -- --nb-cores=1 --total-num-mbufs=16384 --forward-mode=io --auto-start <&8 >"$2" 2>&1 &
    BE_PID=$!
    wait_listening "testpmd (net_vhost)" && wait_second_port "$1" "testpmd (net_vhost)"
}

# SIGTERM (stop_pid): vhost-xdp and testpmd both shut down cleanly on it.
stop_backend() {
    { exec 8>&-; } 2>/dev/null
    stop_pid "$BE_PID"
    BE_PID=''
    rm -rf "${DPDK_RUNDIR:?}/$BE_PREFIX"
}

# === The frontend ============================================================

# start_frontend RING LOG: testpmd virtio_user on FE_CPU, interactive, commands through a fifo on
# fd 9.  stdbuf -oL: testpmd's output is block-buffered into a file; line-buffered, each
# `show port stats` can be read as soon as it is printed.
start_frontend() {
    local packed=0
    [ "$1" = packed ] && packed=1
    rm -f "$TMP/fe.in"
    mkfifo "$TMP/fe.in" && exec 9<>"$TMP/fe.in"
    : >"$2"         # exists before testpmd opens it: fe_show counts its lines at once
    stdbuf -oL dpdk-testpmd --lcores "0@$FE_CPU,1@$FE_CPU" "${MEM_ARGS[@]}" --no-pci --file-prefix="$FE_PREFIX" \
        --vdev "net_virtio_user0,path=$SOCK,queues=1,packed_vq=$packed" \
        -- -i --nb-cores=1 --total-num-mbufs=16384 <&9 8>&- >"$2" 2>&1 &
    FE_PID=$!
}
fe_say() { printf '%s\n' "$@" >&9; }

stop_frontend() {
    if [ -n "$FE_PID" ] && alive "$FE_PID"; then
        fe_say stop quit 2>/dev/null
        wait_for "the frontend testpmd to quit" 10 gone "$FE_PID" 2>/dev/null
    fi
    exec 9>&-
    stop_pid "$FE_PID"
    FE_PID=''
    rm -rf "${DPDK_RUNDIR:?}/$FE_PREFIX"
}

more_stats() { [ "$(grep -c 'Rx-pps:' "$1" 2>/dev/null)" -gt "$2" ]; }
# fe_show LOG: `show port stats 0`, wait for its answer, print its Rx-pps (packets per second
# received since the previous show: testpmd measures the interval itself).
fe_show() {
    local before
    before=$(grep -c 'Rx-pps:' "$1" 2>/dev/null)
    fe_say "show port stats 0"
    wait_for "testpmd's port statistics" 20 more_stats "$1" "$before" || return 1
    grep 'Rx-pps:' "$1" | tail -n 1 | awk '{ print $2 }'
}

# === Two ports: vm2vm and switch =============================================

# The two "guests" are two virtio_user ports of one testpmd (on FE_CPU, one forwarding lcore for
# both: with two CPUs, the frontends on one and the backend on the other is the only layout where
# neither side steals the other's CPU; DPDK's side gets the same).  Each port has its own MAC, and
# testpmd's mac mode addresses what it sends on a port to the other port's MAC (--eth-peer): a
# switch sees two stations that never move, and learns both from the first burst.
FE_MAC0=02:00:00:00:00:01 FE_MAC1=02:00:00:00:00:02

two_ports() { [ "$1" = vm2vm ] || [ "$1" = switch ]; }
in_run() { [[ " $PATHS_RUN " == *" $1 "* ]]; }

# wait_second_port PATH NAME: for vm2vm and switch, the backend listens on SOCK2 too.
wait_second_port() {
    two_ports "$1" || return 0
    wait_for "$2 to listen on $SOCK2" 15 listening "$SOCK2" || { echo "bench: $2 did not listen on $SOCK2" >&2; return 1; }
}

# start_frontend_pair RING LOG: as start_frontend, with two virtio_user ports.
start_frontend_pair() {
    local packed=0
    [ "$1" = packed ] && packed=1
    rm -f "$TMP/fe.in"
    mkfifo "$TMP/fe.in" && exec 9<>"$TMP/fe.in"
    : >"$2"
    stdbuf -oL dpdk-testpmd --lcores "0@$FE_CPU,1@$FE_CPU" "${MEM_ARGS[@]}" --no-pci --file-prefix="$FE_PREFIX" \
        --vdev "net_virtio_user0,path=$SOCK,queues=1,packed_vq=$packed,mac=$FE_MAC0" \
        --vdev "net_virtio_user1,path=$SOCK2,queues=1,packed_vq=$packed,mac=$FE_MAC1" \
        -- -i --nb-cores=1 --total-num-mbufs=16384 --eth-peer="0,$FE_MAC1" --eth-peer="1,$FE_MAC0" \
        <&9 8>&- >"$2" 2>&1 &
    FE_PID=$!
}

# fe_show_both LOG: `show port stats all`, and the sum of its two Rx-pps: the frames the backend
# delivered per second, both directions.
fe_show_both() {
    local before
    before=$(grep -c 'Rx-pps:' "$1" 2>/dev/null)
    fe_say "show port stats all"
    wait_for "testpmd's port statistics" 20 more_stats "$1" $((before + 1)) || return 1
    grep 'Rx-pps:' "$1" | tail -n 2 | awk '{ s += $2 } END { print s }'
}

# traffic_vm2vm LOG SIZE: 32 bursts on each port, circulating (mac mode); returns once frames come
# back and the warm-up is over.  sample_vm2vm LOG: SAMPLE = both ports' Rx-pps, summed.
traffic_vm2vm() {
    local pps
    fe_say "set fwd mac" "set txpkts $2" "start tx_first 32"
    fe_show_both "$1" >/dev/null || return 1
    sleep "$BENCH_WARMUP"
    pps=$(fe_show_both "$1") || return 1
    [ "${pps:-0}" -gt 0 ] || { echo "bench: no frames crossed between the two frontend ports" >&2; return 1; }
}
sample_vm2vm() { sleep "$BENCH_SECS"; SAMPLE=$(fe_show_both "$1"); }
traffic_switch() { traffic_vm2vm "$@"; }
sample_switch() { sample_vm2vm "$@"; }

# run_pair_rounds RING SIZE: when both vm2vm and switch run, their rounds interleaved: cross-connect,
# switch, reference (reversed the next round), so that the ratio switch / cross-connect compares
# neighbours in time.  DPDK's run serves both rows (the same two net_vhost ports either way): its
# samples and CPU line are copied to the switch's key.  With BENCH_VS, B runs both ways.
run_pair_rounds() {
    local ring=$1 size=$2 round i run runs first_r first_c lines
    for ((round = 1; round <= BENCH_ROUNDS; round++)); do
        runs=("vm2vm vhost-xdp" "switch vhost-xdp" "vm2vm $REF")
        [ "$REF" = other ] && runs+=("switch other")
        for ((i = 0; i < ${#runs[@]}; i++)); do
            run=${runs[i]}
            ((round % 2)) || run=${runs[${#runs[@]} - 1 - i]}
            first_r=$(($(wc -l <"$RESULTS") + 1)) first_c=$(($(wc -l <"$CPU") + 1))
            run_one "${run% *}" "$ring" "$size" "${run#* }"
            [ "$run" = "vm2vm dpdk" ] || continue
            lines=$(tail -n +"$first_r" "$RESULTS")
            [ -n "$lines" ] && sed 's/^vm2vm /switch /' <<<"$lines" >>"$RESULTS"
            lines=$(tail -n +"$first_c" "$CPU")
            [ -n "$lines" ] && sed 's/^vm2vm /switch /' <<<"$lines" >>"$CPU"
        done
    done
}

# print_switch_ratios: issue 15's targets next to this run's numbers (a report, not a verdict).
print_switch_ratios() {
    local ring size sw
    in_run vm2vm && in_run switch || return 0
    echo "issue 15 targets, from this run (two frontend ports; the switch with every frame a table hit):"
    for ring in $BENCH_RINGS; do for size in $BENCH_SIZES; do
        sw=$(median switch "$ring" "$size" vhost-xdp)
        printf '  %-6s %4s B: switch / cross-connect %s (target >= 0.90)' "$ring" "$size" \
            "$(ratio "$sw" "$(median vm2vm "$ring" "$size" vhost-xdp)")"
        [ "$REF" = dpdk ] && printf ', switch / DPDK %s (target >= 1.0)' "$(ratio "$sw" "$(median switch "$ring" "$size" dpdk)")"
        echo
    done; done
}

# === Counting at the veth peer ===============================================

# peer_count: "seconds packets" of the peer end's rx_packets, read in its namespace.
peer_count() {
    local now=$EPOCHREALTIME
    echo "$now $(ip netns exec "$NS" cat "/sys/class/net/$PEER_IF/statistics/rx_packets")"
}
peer_moved() { [ "$(peer_count | awk '{ print $2 }')" -gt 1000 ]; }

# === One run =================================================================

RESULTS=$TMP/results    # "path ring size backend pps", one line per sample
MEMORY=$TMP/memory      # "path ring size backend vmrss_kb guest_kb umem_kb", one line per vhost-xdp run
CPU=$TMP/cpu            # "path ring size backend busy% sys%", the poll thread's, one line per run
CYCLES=$TMP/cycles      # "path ring size backend tsc_per_packet", from a vhost-xdp's exit line, one per run
: >"$RESULTS"; : >"$MEMORY"; : >"$CPU"; : >"$CYCLES"

# cycles_of KEY LOG: what a vhost-xdp's poll thread says a packet cost it, from its exit line
# ("exit: pmd 0: polls ..., B% busy | TSC cycles C% busy, N per packet": the busy iterations' TSC
# cycles over the packets they moved, OVS's pmd-stats-show idea; pmd_loop.c, "Where the cycles go").
# The whole run, warm-up included; a backend without the line (DPDK, an older vhost-xdp) adds nothing.
cycles_of() {
    local n
    n=$(sed -n 's/.*exit: pmd 0: .*TSC cycles [0-9.]*% busy, \([0-9]*\) per packet.*/\1/p' "$2" | tail -n 1)
    [ -n "$n" ] && echo "$1 $n" >>"$CYCLES"
    return 0
}

# memory_of PID: "VmRSS guest umem" in kB.  In smaps, guest memory is every shared mapping that is
# not an AF_XDP ring (those are mapped from the socket): the regions of SET_MEM_TABLE (a memfd with
# --no-huge; with hugepages their pages are not in VmRSS at all, and Rss says 0 for them too).  The
# UMEM is the private anonymous mapping of exactly frames x frame size (vhost-xdp populates it whole).
memory_of() {
    awk -v umem="$UMEM_KB" '
        FILENAME ~ /status$/ { if ($1 == "VmRSS:") rss = $2; next }
        /^[0-9a-f]+-[0-9a-f]+ / { kind = ""; perms = $2; path = $6
            if (perms ~ /s$/ && path !~ /^socket:/) kind = "guest"
            else if (perms == "rw-p" && path == "") kind = "anon"
            next }
        $1 == "Size:" && kind == "anon" { kind = ($2 == umem) ? "umem" : "" }
        $1 == "Rss:" { if (kind == "guest") guest += $2; else if (kind == "umem") um += $2 }
        END { printf "%d %d %d\n", rss, guest, um }' "/proc/$1/status" "/proc/$1/smaps" 2>/dev/null
}

# The backend's poll thread: vhost-xdp's vx-pmd0, or testpmd's forwarding lcore (lcore 1).  How much
# of the sample time it really ran, and how much of that in the kernel, tells a starved thread (a
# busy machine) from a slow one, and the AF_XDP path's system calls from our own work.
poll_tid() {
    local t
    for t in /proc/"$1"/task/*; do
        case $(cat "$t/comm" 2>/dev/null) in vx-pmd0|rte-worker-1|lcore-worker-1) echo "${t##*/}"; return 0 ;; esac
    done
    return 1
}
# cpu_now PID TID: "seconds user_ticks system_ticks" (/proc/PID/task/TID/stat fields 14 and 15).
cpu_now() { echo "$EPOCHREALTIME $(sed 's/.*) //' "/proc/$1/task/$2/stat" 2>/dev/null | awk '{ print $12, $13 }')"; }
# cpu_share "BEFORE" "AFTER": "busy% sys%" of the wall time between the two.
cpu_share() {
    echo "$1 $2" | awk -v hz="$(getconf CLK_TCK)" '{ t = $4 - $1; if (t <= 0 || NF < 6) { print "- -"; exit }
        printf "%.0f %.0f\n", 100 * ($5 + $6 - $2 - $3) / hz / t, 100 * ($6 - $3) / hz / t }'
}

# show_log FILE: the end of a log, for a run that failed.
show_log() { echo "bench: ---- last lines of ${1##*/}" >&2; tail -n 15 "$1" | sed 's/^/bench:   /' >&2; }

# traffic_loopback LOG SIZE: the frontend circulates 32 bursts (io mode); returns once packets come
# back and the warm-up is over.  sample_loopback LOG: SAMPLE = packets per second back at the frontend.
traffic_loopback() {
    local pps
    fe_say "set fwd io" "set txpkts $2" "start tx_first 32"
    fe_show "$1" >/dev/null || return 1          # the first show only starts testpmd's clock
    sleep "$BENCH_WARMUP"
    pps=$(fe_show "$1") || return 1              # the warm-up interval: not counted
    [ "${pps:-0}" -gt 0 ] || { echo "bench: no packets came back to the frontend" >&2; return 1; }
}
sample_loopback() { sleep "$BENCH_SECS"; SAMPLE=$(fe_show "$1"); }

# traffic_forward LOG SIZE: the frontend sends (txonly); returns once the peer receives and the
# warm-up is over.  sample_forward: SAMPLE = packets per second the peer received.
traffic_forward() {
    fe_say "set fwd txonly" "set txpkts $2" "start"
    wait_for "the first packets at $PEER_IF" 30 peer_moved || { echo "bench: nothing reached the peer $PEER_IF" >&2; return 1; }
    sleep "$BENCH_WARMUP"
    PEER_LAST=$(peer_count)
}
sample_forward() {
    local now
    sleep "$BENCH_SECS"
    now=$(peer_count)
    SAMPLE=$(echo "$PEER_LAST $now" | awk '{ t = $3 - $1; if (t > 0) printf "%.0f\n", ($4 - $2) / t }')
    PEER_LAST=$now
}

# measure KEY PATH LOG SIZE: traffic, then the samples, with the poll thread's CPU time around them
# (and, for --profile, perf recording it meanwhile).
measure() {
    local key=$1 path=$2 log=$3 size=$4 i tid cpu0 cpu1
    "traffic_$path" "$log" "$size" || return 1
    tid=$(poll_tid "$BE_PID")
    [ -n "$tid" ] && cpu0=$(cpu_now "$BE_PID" "$tid")
    [ "$PROFILE" = 1 ] && profile_start "$tid"
    for ((i = 0; i < BENCH_SAMPLES; i++)); do
        "sample_$path" "$log" || return 1
        [ -n "$SAMPLE" ] || return 1
        echo "$key $SAMPLE" >>"$RESULTS"
    done
    [ "$PROFILE" = 1 ] && profile_stop
    if [ -n "$tid" ]; then cpu1=$(cpu_now "$BE_PID" "$tid"); echo "$key $(cpu_share "$cpu0" "$cpu1")" >>"$CPU"; fi
    return 0
}

# run_one PATH RING SIZE BACKEND: start the backend, then the frontend; measure; stop both.
run_one() {
    local path=$1 ring=$2 size=$3 backend=$4 ok=1
    local key="$path $ring $size $backend" be_log=$TMP/$path-$ring-$size-$backend-backend.log
    local fe_log=$TMP/$path-$ring-$size-$backend-frontend.log first
    first=$(($(wc -l <"$RESULTS") + 1))    # this run's samples are the lines from here on
    printf 'bench: %-8s %-6s %4s B  %-9s ' "$path" "$ring" "$size" "${backend/other/B}"
    if [ "$path" = forward ]; then make_veth || { echo; echo "bench: making veth $HOST_IF failed" >&2; FAILED=1; return; }; fi
    case $backend in
    vhost-xdp) start_vhost_xdp "$path" "$be_log" ;;
    other)     start_vhost_xdp "$path" "$be_log" "$BENCH_VS" ;;
    dpdk)      start_dpdk "$path" "$be_log" ;;
    esac || ok=0
    if [ $ok = 1 ]; then
        if two_ports "$path"; then start_frontend_pair "$ring" "$fe_log"; else start_frontend "$ring" "$fe_log"; fi
        measure "$key" "$path" "$fe_log" "$size" || ok=0
        alive "$BE_PID" || { echo "bench: $key: the backend died" >&2; ok=0; }
        [ $ok = 1 ] && [ "$backend" = vhost-xdp ] && echo "$key $(memory_of "$BE_PID")" >>"$MEMORY"
    fi
    stop_frontend
    stop_backend
    [ $ok = 1 ] && cycles_of "$key" "$be_log"
    [ "$path" = forward ] && del_veth
    if [ $ok = 1 ]; then
        tail -n +"$first" "$RESULTS" | awk '{ printf "%.2f ", $5 / 1e6 }'
        echo "Mpps"
    else
        echo "FAILED"
        FAILED=1
        show_log "$be_log"
        [ -f "$fe_log" ] && show_log "$fe_log"
    fi
}

# === Profile (--profile) =====================================================

# perf samples the poll thread by the clock (cpu-clock: these virtual machines have no hardware
# counters), 4999 times a second.  The binary is the -O2 -g one `make` builds: static functions are
# inlined, so the source lines (second list) say where inside the callers the time goes.
profile_start() {
    [ -n "$1" ] || { echo "bench: --profile: no poll thread found" >&2; return 1; }
    perf record -q -e cpu-clock -F 4999 -t "$1" -o "$TMP/perf.data" -- sleep $((BENCH_SAMPLES * BENCH_SECS)) \
        >"$TMP/perf.log" 2>&1 &
    PERF_PID=$!
}
profile_stop() { wait "$PERF_PID"; PERF_PID=''; }

profile_report() {
    [ -s "$TMP/perf.data" ] || { echo "bench: --profile: perf recorded nothing (its log: $(cat "$TMP/perf.log"))" >&2; return 1; }
    echo "profile: the poll thread, perf cpu-clock samples; functions (inlined code counted in its caller):"
    perf report -i "$TMP/perf.data" --stdio --sort symbol 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 15
    echo "profile: source lines:"
    perf report -i "$TMP/perf.data" --stdio --sort srcline 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 25
}

# === The tables ==============================================================

# key PATH RING SIZE BACKEND is the first four words of each line of RESULTS, MEMORY and CPU.
lines_of() { awk -v k="$2 $3 $4 $5" '{ s = $1; for (i = 2; i <= 4; i++) s = s " " $i } s == k' "$1"; }
# median ...: the median sample in pps ("" if none); range ...: "min-max" in Mpps.
samples_of() { lines_of "$RESULTS" "$@" | awk '{ print $5 }' | sort -n; }
median() { samples_of "$@" | awk '{ v[NR] = $1 } END { if (NR) printf "%.0f\n", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
range() { samples_of "$@" | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) printf "%.2f-%.2f", lo / 1e6, hi / 1e6 }'; }
mpps() { if [ -n "$1" ]; then awk -v p="$1" 'BEGIN { printf "%.2f", p / 1e6 }'; else echo -; fi; }
ratio() { if [ -n "$1" ] && [ -n "$2" ] && [ "$2" -gt 0 ]; then awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; else echo -; fi; }
# memory PATH RING SIZE: vhost-xdp's "VmRSS MiB" and "without guest memory and UMEM MiB" (the
# largest of its runs).
memory() {
    lines_of "$MEMORY" "$@" vhost-xdp | awk '{ if ($5 > rss) rss = $5; if ($5 - $6 - $7 > rest) rest = $5 - $6 - $7; n++ }
        END { if (n) printf "%.1f %.1f", rss / 1024, rest / 1024; else printf "- -" }'
}
# cpu PATH RING SIZE BACKEND: "busy% (sys%)" of the poll thread, averaged over its runs.
cpu() {
    lines_of "$CPU" "$@" | awk '$5 != "-" { b += $5; s += $6; n++ } END { if (n) printf "%3.0f%% (%2.0f%%)", b / n, s / n; else printf "-" }'
}

# cycles PATH RING SIZE BACKEND: TSC cycles per packet of the poll thread, averaged over its runs.
cycles() {
    lines_of "$CYCLES" "$@" | awk '{ c += $5; n++ } END { if (n) printf "%.0f", c / n; else printf "-" }'
}

# starved PATH RING SIZE: "*" if a poll thread of either side had its CPU less than 90% of the
# sample time: the row measured the machine's other load as much as the backends.
starved() {
    awk -v a="$1 $2 $3 vhost-xdp" -v b="$1 $2 $3 $REF" '{ s = $1; for (i = 2; i <= 4; i++) s = s " " $i }
        (s == a || s == b) && $5 != "-" && $5 < 90 { f = 1 } END { if (f) printf "*" }' "$CPU"
}

print_tables() {
    local path ring size a b
    printf '%-8s %-6s %6s   %-20s %-20s %5s\n' path ring frame "vhost-xdp Mpps" "$REF_NAME Mpps" ratio
    for path in $PATHS_RUN; do for ring in $BENCH_RINGS; do for size in $BENCH_SIZES; do
        a=$(median "$path" "$ring" "$size" vhost-xdp) b=$(median "$path" "$ring" "$size" $REF)
        printf '%-8s %-6s %4s B   %-20s %-20s %5s%s\n' "$path" "$ring" "$size" \
            "$(mpps "$a") ($(range "$path" "$ring" "$size" vhost-xdp))" \
            "$(mpps "$b") ($(range "$path" "$ring" "$size" $REF))" "$(ratio "$a" "$b")" "$(starved "$path" "$ring" "$size")"
    done; done; done
    echo
    printf '%-8s %-6s %6s   %-27s %-15s %-15s  %s\n' path ring frame "vhost-xdp RSS MiB (without" "vhost-xdp poll" \
        "$REF_NAME poll" "TSC cycles per packet"
    printf '%-8s %-6s %6s   %-27s %-15s %-15s  %s\n' "" "" "" "guest memory and UMEM)" "thread ran (sys)" "thread ran (sys)" \
        "vhost-xdp$([ "$REF" = dpdk ] || echo " / B")"
    for path in $PATHS_RUN; do for ring in $BENCH_RINGS; do for size in $BENCH_SIZES; do
        read -r a b <<<"$(memory "$path" "$ring" "$size")"
        printf '%-8s %-6s %4s B   %-27s %-16s %-15s  %s\n' "$path" "$ring" "$size" "$a ($b)" \
            "$(cpu "$path" "$ring" "$size" vhost-xdp)" "$(cpu "$path" "$ring" "$size" $REF)" \
            "$(cycles "$path" "$ring" "$size" vhost-xdp)$([ "$REF" = dpdk ] || echo " / $(cycles "$path" "$ring" "$size" $REF)")"
    done; done; done
}

# print_targets: issue 7's targets next to what this run measured (a report, not a verdict: the
# numbers move with the machine's load, see the ran column).
print_targets() {
    local ring r worst='' rss=0 path size m
    echo "issue 7 targets, from this run:"
    for ring in $BENCH_RINGS; do
        r=$(ratio "$(median loopback "$ring" 64 vhost-xdp)" "$(median loopback "$ring" 64 dpdk)")
        [[ " $PATHS_RUN " == *" loopback "* ]] && [[ " $BENCH_SIZES " == *" 64 "* ]] &&
            echo "  loopback 64 B $ring ring: ratio $r (target >= 1.0)"
    done
    if [[ " $PATHS_RUN " == *" forward "* ]]; then
        for ring in $BENCH_RINGS; do for size in $BENCH_SIZES; do
            r=$(ratio "$(median forward "$ring" "$size" vhost-xdp)" "$(median forward "$ring" "$size" dpdk)")
            [ "$r" != - ] && { [ -z "$worst" ] || awk -v a="$r" -v b="$worst" 'BEGIN { exit !(a < b) }'; } && worst=$r
        done; done
        echo "  forward to AF_XDP: lowest ratio ${worst:--} (target >= 1.0)"
    fi
    for path in $PATHS_RUN; do for ring in $BENCH_RINGS; do for size in $BENCH_SIZES; do
        read -r _ m <<<"$(memory "$path" "$ring" "$size")"
        [ "$m" != - ] && awk -v a="$m" -v b="$rss" 'BEGIN { exit !(a > b) }' && rss=$m
    done; done; done
    echo "  vhost-xdp RSS without guest memory and UMEM: at most $rss MiB (target <= 16 MiB)"
}

# === Idle and round trip (BENCH_PATHS idle, rtt) ============================

# Both run the backend alone with tests/rtt_probe as its frontend, on FE_CPU: one backend per ring
# and side, first silent (idle), then one probe run per gap (rtt).  QUIET: "idle RING BACKEND
# ran% sys%" and "rtt RING GAP_US BACKEND median_us p99_us" lines, one per run.
PROBE=$(cd "$(dirname "$0")/.." && pwd)/tests/rtt_probe
QUIET=$TMP/quiet
RTT_GAPS=${BENCH_RTT_GAPS:-1000 100000}
for g in $RTT_GAPS; do [[ $g =~ ^[0-9]{1,7}$ ]] || usage_error "BENCH_RTT_GAPS: '$g' is not a gap in microseconds, 0..9999999"; done
: >"$QUIET"

# quiet_one RING BACKEND: start it, measure, stop it; one result line per path and gap.
quiet_one() {
    local ring=$1 backend=$2 log=$TMP/quiet-$1-$2-backend.log out=$TMP/quiet-$1-$2-probe.log
    local packed=() pid tid cpu0 cpu1 gap r ok=1
    [ "$ring" = packed ] && packed=(--packed)
    printf 'bench: %-8s %-6s %-9s ' "$QUIET_RUN" "$ring" "${backend/other/B}"
    case $backend in
    vhost-xdp) start_vhost_xdp loopback "$log" ;;
    other)     start_vhost_xdp loopback "$log" "$BENCH_VS" ;;
    dpdk)      start_dpdk loopback "$log" ;;
    esac || ok=0
    if [ $ok = 1 ] && [[ " $QUIET_RUN " == *" idle "* ]]; then
        taskset -c "$FE_CPU" "$PROBE" --socket "$SOCK" "${packed[@]}" --idle "$BENCH_SECS.5" --count 1 >"$out" 2>&1 &
        pid=$!
        if wait_for "the probe to connect" 20 grep -q "^rtt_probe: idle for" "$out" && tid=$(poll_tid "$BE_PID"); then
            cpu0=$(cpu_now "$BE_PID" "$tid")
            sleep "$BENCH_SECS"
            cpu1=$(cpu_now "$BE_PID" "$tid")
            echo "idle $ring $backend $(cpu_share "$cpu0" "$cpu1")" >>"$QUIET"
            printf 'idle %s ' "$(cpu_share "$cpu0" "$cpu1" | cut -d' ' -f1)%"
        else
            ok=0
        fi
        wait "$pid" || ok=0
    fi
    for gap in $RTT_GAPS; do
        [ $ok = 1 ] && [[ " $QUIET_RUN " == *" rtt "* ]] || break
        taskset -c "$FE_CPU" "$PROBE" --socket "$SOCK" "${packed[@]}" --gap "$gap" --count 1000000 \
            --seconds $((BENCH_SECS * BENCH_SAMPLES)) >"$out" 2>&1 || ok=0
        r=$(sed -n 's/^rtt: .* median \([0-9.]*\) p99 \([0-9.]*\) us.*/\1 \2/p' "$out")
        [ -n "$r" ] || ok=0
        [ $ok = 1 ] && echo "rtt $ring $gap $backend $r" >>"$QUIET" && printf 'rtt %s us ' "${r% *}"
    done
    stop_backend
    if [ $ok = 1 ]; then echo; else echo "FAILED"; FAILED=1; show_log "$log"; show_log "$out"; fi
}

run_quiet_paths() {
    local ring round backend order
    [ -n "$QUIET_RUN" ] || return 0
    for ring in $BENCH_RINGS; do
        for ((round = 1; round <= BENCH_ROUNDS; round++)); do
            if ((round % 2)); then order="vhost-xdp $REF"; else order="$REF vhost-xdp"; fi
            for backend in $order; do quiet_one "$ring" "$backend"; done
        done
    done
}

# quiet_cell KEY...: the mean over rounds of the numbers after KEY in QUIET ("-" if none).
quiet_cell() {
    local n=$# k="$*"
    awk -v k="$k" -v n="$n" '{ s = $1; for (i = 2; i <= n; i++) s = s " " $i }
        s == k { for (i = n + 1; i <= NF; i++) v[i - n] += $i; m = NF - n; c++ }
        END { if (!c) { printf "-"; exit }
              for (i = 1; i <= m; i++) { f = v[i] / c < 100 ? "%s%.1f" : "%s%.0f"; printf f, (i > 1 ? " " : ""), v[i] / c } }' "$QUIET"
}

print_quiet_tables() {
    local ring gap a b
    [ -n "$QUIET_RUN" ] || return 0
    echo
    if [[ " $QUIET_RUN " == *" idle "* ]]; then
        printf '%-6s %-6s   %-22s %-22s\n' idle ring "vhost-xdp poll thread" "$REF_NAME poll thread"
        for ring in $BENCH_RINGS; do
            read -r a _ <<<"$(quiet_cell idle "$ring" vhost-xdp)"
            read -r b _ <<<"$(quiet_cell idle "$ring" "$REF")"
            printf '%-6s %-6s   %-22s %-22s\n' idle "$ring" "${a%.*}%" "${b%.*}%"
        done
        echo "idle: a frontend connected and sending nothing for $BENCH_SECS s (tests/rtt_probe --idle): the share of"
        echo "a CPU the backend's poll thread used (utime + stime); mean of $BENCH_ROUNDS round(s)."
    fi
    if [[ " $QUIET_RUN " == *" rtt "* ]]; then
        printf '%-6s %-6s %8s   %-24s %-24s\n' rtt ring gap "vhost-xdp median / p99" "$REF_NAME median / p99"
        for ring in $BENCH_RINGS; do for gap in $RTT_GAPS; do
            printf '%-6s %-6s %5s ms   %-24s %-24s\n' rtt "$ring" "$(awk -v g="$gap" 'BEGIN { print g / 1000 }')" \
                "$(quiet_cell rtt "$ring" "$gap" vhost-xdp | sed 's/ / \/ /') us" "$(quiet_cell rtt "$ring" "$gap" "$REF" | sed 's/ / \/ /') us"
        done; done
        echo "rtt: one 64-byte frame at a time round the loopback (tests/rtt_probe), the next one a gap after the last"
        echo "came back, each timed from its publication to its return; median and 99th percentile in us, for"
        echo "$((BENCH_SECS * BENCH_SAMPLES)) s per gap (mean of $BENCH_ROUNDS round(s)).  At 100 ms few frames are sent: p99 is nearly the maximum."
    fi
}

# === Main ====================================================================

# --profile [PATH RING SIZE]: one vhost-xdp run (default: loopback split 64), its poll thread
# recorded by perf during the samples, then perf's top functions and source lines.
PROFILE=0
if [ "${1:-}" = --profile ]; then
    PROFILE=1
    BENCH_PATHS=${2:-loopback} BENCH_RINGS=${3:-split} BENCH_SIZES=${4:-64}
    [[ $BENCH_PATHS =~ ^(loopback|forward|vm2vm|switch)$ ]] || usage_error "--profile: '$BENCH_PATHS' is not loopback, forward, vm2vm or switch"
    [[ $BENCH_RINGS =~ ^(split|packed)$ ]] || usage_error "--profile: '$BENCH_RINGS' is not split or packed"
    { [[ $BENCH_SIZES =~ ^[0-9]{2,4}$ ]] && [ "$BENCH_SIZES" -ge 64 ] && [ "$BENCH_SIZES" -le 1518 ]; } ||
        usage_error "--profile: '$BENCH_SIZES' is not a frame size in 64..1518"
    command -v perf >/dev/null || { echo "bench: --profile needs perf: apt-get install -y linux-perf" >&2; exit 1; }
elif [ $# -gt 0 ]; then
    usage_error "usage: bench/bench.sh [--profile [loopback|forward|vm2vm|switch [split|packed [SIZE]]]] (knobs: see the top of the file)"
fi

PATHS_RUN='' QUIET_RUN=''
for p in $BENCH_PATHS; do
    case $p in idle|rtt) QUIET_RUN+="${QUIET_RUN:+ }$p"; continue ;; esac    # "Idle and round trip", below
    if [ "$p" = forward ] && [ "$(id -u)" != 0 ]; then
        echo "bench: forward runs skipped: they need root (a network namespace, an XDP program)"
        continue
    fi
    PATHS_RUN+="${PATHS_RUN:+ }$p"
done
[ -n "$PATHS_RUN$QUIET_RUN" ] || { echo "bench: nothing to run" >&2; exit 1; }
[ -z "$QUIET_RUN" ] || [ -x "$PROBE" ] || { echo "bench: BENCH_PATHS $QUIET_RUN needs $PROBE: make tests/rtt_probe" >&2; exit 1; }
setup_memory

echo "bench: $NCPU CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -n 1)), kernel $(uname -r)," \
     "DPDK $(dpkg-query -W -f '${Version}' dpdk-dev 2>/dev/null || echo '?')"
echo "bench: frontend testpmd virtio_user on CPU $FE_CPU, backend on CPU $BE_CPU; testpmd memory: $MEM_SAID"
in_run vm2vm || in_run switch &&
    echo "bench: vm2vm, switch: one frontend testpmd, its two virtio_user ports on one lcore (CPU $FE_CPU); the backend's two ports on CPU $BE_CPU"
echo "bench: $BENCH_ROUNDS round(s) x $BENCH_SAMPLES samples x $BENCH_SECS s per run after $BENCH_WARMUP s warm-up; median quoted"
echo "bench: vhost-xdp = $VX${BENCH_A_ARGS:+ $BENCH_A_ARGS}${BENCH_VS:+, compared with $BENCH_VS}${BENCH_B_ARGS:+ $BENCH_B_ARGS}; loopback: Rx-pps at the frontend; forward: rx_packets at the veth peer $NS/$PEER_IF;" \
     "vm2vm, switch: Rx-pps of both frontend ports, summed"
if [ "$PROFILE" = 1 ]; then
    run_one "$BENCH_PATHS" "$BENCH_RINGS" "$BENCH_SIZES" vhost-xdp
    echo "profile: poll thread ran $(cpu "$BENCH_PATHS" "$BENCH_RINGS" "$BENCH_SIZES" vhost-xdp) of the time (in the kernel);" \
         "$(lines_of "$CPU" "$BENCH_PATHS" "$BENCH_RINGS" "$BENCH_SIZES" vhost-xdp | awk -v p="$(median "$BENCH_PATHS" "$BENCH_RINGS" "$BENCH_SIZES" vhost-xdp)" \
            '$5 != "-" && p > 0 { printf "%.0f ns of its CPU per packet at the median rate (idle polls included)", $5 / 100 * 1e9 / p }')"
    profile_report || FAILED=1
    exit "$FAILED"
fi
for path in $PATHS_RUN; do for ring in $BENCH_RINGS; do for size in $BENCH_SIZES; do
    if two_ports "$path" && in_run vm2vm && in_run switch; then     # the two paths' rounds interleaved
        [ "$path" = vm2vm ] && run_pair_rounds "$ring" "$size"
        continue
    fi
    for ((round = 1; round <= BENCH_ROUNDS; round++)); do
        if ((round % 2)); then order="vhost-xdp $REF"; else order="$REF vhost-xdp"; fi
        for backend in $order; do run_one "$path" "$ring" "$size" "$backend"; done
    done
done; done; done
run_quiet_paths                             # BENCH_PATHS idle, rtt: "Idle and round trip"
[ -n "$PATHS_RUN" ] || { print_quiet_tables; exit "$FAILED"; }

echo
print_tables | tee "$TMP/table"
echo
if [ "$REF" = dpdk ]; then
    echo "ratio = vhost-xdp / DPDK (testpmd net_vhost; forward: net_vhost + net_af_xdp), of the medians; (min-max) of"
else
    echo "ratio = vhost-xdp ($VX) / B ($BENCH_VS), of the medians; (min-max) of"
fi
echo "the samples.  RSS: vhost-xdp's VmRSS at the end of its run, and without the guest memory it mapped and the"
echo "UMEM ($((UMEM_KB / 1024)) MiB, forward only).  ran (sys): the share of the sample time the backend's poll thread"
echo "was on its CPU (below 100%: something else ran there), and the part of it spent in the kernel."
grep -q '^[a-z].*[0-9]\*$' "$TMP/table" 2>/dev/null &&
    echo "*: a poll thread had its CPU less than 90% of the time: the machine was busy, the row is unreliable."
in_run vm2vm || in_run switch &&
    echo "vm2vm: vhost-xdp's VM-to-VM cross-connect; switch: the same two sockets with --switch$(in_run vm2vm && in_run switch && [ "$REF" = dpdk ] && echo "; both rows' DPDK column is the same runs")."
[ "$REF" = dpdk ] && print_targets
print_switch_ratios
print_quiet_tables
[ "$FAILED" = 0 ] || echo "bench: some runs failed (their logs are above); their rows show -"
exit "$FAILED"
