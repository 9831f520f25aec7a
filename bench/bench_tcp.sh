#!/usr/bin/env bash
# bench/bench_tcp.sh - `make bench`, TCP rows: QEMU guests' TCP throughput through vhost-xdp with the
# virtio-net offloads, with --no-offloads, and through QEMU's own tap backend (issue 13).
#
# What it measures.  Three configurations, two guests each (kernel virtio-net, tests/build_guest.sh
# in agent mode), all booted once at the start and measured in turn, interleaved:
#   offloads      vhost-xdp as it starts: CSUM, GUEST_CSUM, HOST/GUEST_TSO4/6 offered; the guests'
#                 TCP moves 64 KiB packets, one chain each, and nobody computes a checksum between
#                 two guests
#   no-offloads   vhost-xdp --no-offloads: the guests' TCP cuts every segment to the MTU and
#                 checksums each one itself
#   tap           QEMU's virtio-net device in QEMU itself, on a tap device (vhost=off: this machine
#                 has no /dev/vhost-net; with it, a fourth configuration "vhost-net" runs too); the
#                 guest negotiates the same offloads with QEMU, which passes them to the tap
# and two paths:
#   guest -> guest   guest A sends to guest B: vhost-xdp VM-to-VM (two --socket), or a Linux bridge
#                    between the two taps
#   guest -> peer    guest A sends to a peer in a network namespace: vhost-xdp --iface on a veth
#                    (restarted on A's socket; QEMU reconnects), or the same bridge
# Each sample is one TCP transfer of BENCH_TCP_BYTES, every byte checked (tests/tcpcheck.c), rated
# at the receiver; the table quotes the median and the range, and the ratios of the medians.  It
# also says how many chains (packets) the sending guest's TX ring carried per 64 KiB, from
# vhost-xdp's counters: the number of descriptor chains, used entries and interrupts per 64 KiB.
#
# Under TCG (no working KVM here) the guests' CPUs are emulated and set the pace: the figures say
# where a guest's time goes, not what a KVM guest gets.  A bench is a measurement: nothing fails on
# speed.  Needs root (netns, veth, bridge, tap, XDP), qemu-system-x86_64 and the test guest.
#
# Knobs:
#   BENCH_TCP_BYTES=268435456   bytes per transfer (256 MiB: about a second, the steady rate; 32 MiB,
#                               the default before, took 0.1 s, mostly the connection's start)
#   BENCH_TCP_SAMPLES=3         transfers per configuration, path and round
#   BENCH_TCP_ROUNDS=1          rounds (each measures every configuration on both paths)
#   BENCH_TCP_CONFIGS="offloads no-offloads tap"
#   BENCH_TCP_PATHS="g2g g2p"
#   BENCH_TCP_PMD_SLEEP=0       vhost-xdp's --pmd-sleep while measured (0: it polls without pause,
#                               as a poll-mode backend is meant to; only the vhost-xdp of the
#                               configuration being measured runs, the others' guests wait)
#   BENCH_TCP_PMD_MODE=poll     vhost-xdp's --pmd-mode: adaptive lets its thread sleep when there is
#                               nothing to do, giving the CPU back to the two emulated guests (on a
#                               2-CPU machine they are what sets the pace); --pmd-sleep is then 0
#   BENCH_KEEP=DIR              keep the logs and guest consoles in DIR
# Exit status: 0 when every sample was measured, 1 when one failed, 2 for a bad knob.
set -u
. "$(dirname "$0")/../tests/lib.sh"

BYTES=${BENCH_TCP_BYTES:-268435456}
SAMPLES=${BENCH_TCP_SAMPLES:-3}
ROUNDS=${BENCH_TCP_ROUNDS:-1}
CONFIGS=${BENCH_TCP_CONFIGS:-offloads no-offloads tap}
PATHS=${BENCH_TCP_PATHS:-g2g g2p}
PMD_SLEEP=${BENCH_TCP_PMD_SLEEP:-0}
PMD_MODE=${BENCH_TCP_PMD_MODE:-poll}
usage_error() { echo "bench_tcp: $*" >&2; exit 2; }
[[ $BYTES =~ ^[1-9][0-9]{5,10}$ ]] || usage_error "BENCH_TCP_BYTES=$BYTES: want at least 100000 bytes"
[[ $SAMPLES =~ ^[1-9][0-9]?$ ]] || usage_error "BENCH_TCP_SAMPLES=$SAMPLES: want 1..99"
[[ $ROUNDS =~ ^[1-9][0-9]?$ ]] || usage_error "BENCH_TCP_ROUNDS=$ROUNDS: want 1..99"
for c in $CONFIGS; do [[ $c =~ ^(offloads|no-offloads|tap)$ ]] || usage_error "BENCH_TCP_CONFIGS: '$c' is not offloads, no-offloads or tap"; done
for p in $PATHS; do [[ $p =~ ^(g2g|g2p)$ ]] || usage_error "BENCH_TCP_PATHS: '$p' is not g2g or g2p"; done
{ [[ $PMD_SLEEP =~ ^[0-9]{1,5}$ ]] && [ "$PMD_SLEEP" -le 10000 ]; } ||
    usage_error "BENCH_TCP_PMD_SLEEP=$PMD_SLEEP: want microseconds, 0..10000"
[[ $PMD_MODE =~ ^(poll|adaptive)$ ]] || usage_error "BENCH_TCP_PMD_MODE=$PMD_MODE: want poll or adaptive"
[ "$PMD_MODE" = adaptive ] && [ "$PMD_SLEEP" != 0 ] && usage_error "BENCH_TCP_PMD_MODE=adaptive wants BENCH_TCP_PMD_SLEEP=0"
[ -c /dev/vhost-net ] && CONFIGS+=" vhost-net"

if [ "$(id -u)" != 0 ]; then echo "bench_tcp: skipped: it needs root (netns, veth, bridge, tap, XDP)"; exit 0; fi
for c in qemu-system-x86_64 ip; do
    command -v "$c" >/dev/null || { echo "bench_tcp: $c not found (apt-get install -y qemu-system-x86 iproute2)" >&2; exit 1; }
done
GUEST=${VX_GUEST_DIR:-$TESTS_DIR/guest}
"$TESTS_DIR/build_guest.sh" "$GUEST" >/dev/null 2>&1 || { echo "bench_tcp: cannot build the test guest (tests/build_guest.sh)" >&2; exit 1; }
TCPCHECK=$TESTS_DIR/tcpcheck
[ -x "$TCPCHECK" ] || { echo "bench_tcp: tests/tcpcheck is not built (make)" >&2; exit 1; }
[ -x "$VX" ] || { echo "bench_tcp: $VX is not built (make)" >&2; exit 1; }

# === Set-up and clean-up =====================================================

ID=$$
TMP=$(mktemp -d "${TMPDIR:-/tmp}/vxbench-tcp.XXXXXX") || exit 1
NS=vxbt-$ID BR=vxbtbr$ID
PIDS=() LINKS=() FAILED=0
declare -A VXPID QPID SUBNET=([offloads]=1 [no-offloads]=2 [tap]=3 [vhost-net]=4)
cleanup() {
    local rc=$? p l
    trap '' INT TERM
    for p in "${PIDS[@]}" "${VXPID[@]}" "${QPID[@]}"; do stop_pid "$p"; done
    for l in "${LINKS[@]}"; do ip link del "$l" 2>/dev/null; done
    ip link del "$BR" 2>/dev/null
    ip netns del "$NS" 2>/dev/null
    [ -n "${BENCH_KEEP:-}" ] && mkdir -p "$BENCH_KEEP" && cp "$TMP"/*.log "$TMP"/*.serial "$BENCH_KEEP"/ 2>/dev/null
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'echo; echo "bench_tcp: interrupted, cleaning up" >&2; exit 130' INT
trap 'exit 143' TERM

in_ns() { ip netns exec "$NS" "$@"; }

# The peer: one netns, one interface per configuration (10.N.0.1/24).  vhost-xdp configurations:
# a veth whose host end is vhost-xdp's AF_XDP port; tap configurations: a veth in the bridge.
net_setup() {
    ip netns add "$NS" || return 1
    local c n
    for c in $CONFIGS; do
        n=${SUBNET[$c]}
        ip link add "vxbt${n}h$ID" numrxqueues 1 numtxqueues 1 type veth peer name "vxbt${n}p$ID" \
            numrxqueues 1 numtxqueues 1 netns "$NS" || return 1
        LINKS+=("vxbt${n}h$ID")
        ip link set "vxbt${n}h$ID" up && in_ns ip link set "vxbt${n}p$ID" up &&
            in_ns ip addr add "10.$n.0.1/24" dev "vxbt${n}p$ID" || return 1
    done
    if [[ " $CONFIGS " == *" tap "* || " $CONFIGS " == *" vhost-net "* ]]; then
        ip link add "$BR" type bridge && ip link set "$BR" up || return 1
        for c in tap vhost-net; do
            if [[ " $CONFIGS " == *" $c "* ]]; then ip link set "vxbt${SUBNET[$c]}h$ID" master "$BR" || return 1; fi
        done
    fi
}

# vhost-xdp for configuration C in MODE: vm2vm (A's and B's sockets) or iface (A's socket and the
# veth), with --pmd-sleep SLEEP (default BENCH_TCP_PMD_SLEEP).
vx_start() {
    local c=$1 mode=$2 args=(--pmd-sleep "${3:-$PMD_SLEEP}")
    [ "$PMD_MODE" = adaptive ] && [ "${3:-$PMD_SLEEP}" = 0 ] && args=(--pmd-mode adaptive)
    [ "$c" = no-offloads ] && args+=(--no-offloads)
    if [ "$mode" = vm2vm ]; then args+=(--socket "$TMP/$c-a.sock" --socket "$TMP/$c-b.sock")
    else args+=(--socket "$TMP/$c-a.sock" --iface "vxbt${SUBNET[$c]}h$ID"); fi
    local before
    before=$(grep -c 'listening on' "$TMP/vx-$c.log" 2>/dev/null)
    "$VX" "${args[@]}" </dev/null >>"$TMP/vx-$c.log" 2>&1 &
    VXPID[$c]=$!
    wait_for "vhost-xdp ($c, $mode) to listen" 10 eval "[ \$(grep -c 'listening on' '$TMP/vx-$c.log') -gt ${before:-0} ]"
}
vx_stop() { stop_pid "${VXPID[$1]}"; VXPID[$1]=''; }

# Two guests per configuration in agent mode, A 10.N.0.2 and B 10.N.0.3.
boot() {
    local c=$1 n=${SUBNET[$1]} g mac ip
    for g in a b; do
        mac=52:54:00:12:3$n:0$([ $g = a ] && echo 2 || echo 3) ip=10.$n.0.$([ $g = a ] && echo 2 || echo 3)/24
        if [ "$c" = tap ] || [ "$c" = vhost-net ]; then boot_tap "$c" "$g" "$mac" "$ip"
        else GUEST_AGENT=$TMP/$c-$g start_guest "$TMP" "$c-$g" "$TMP/$c-$g.sock" agent "" "" "vxip=$ip" "$mac"; fi
        QPID[$c-$g]=$QEMU_PID
    done
}

# The tap configurations: start_guest's command line with -netdev tap instead of vhost-user.
boot_tap() {
    local c=$1 g=$2 mac=$3 ip=$4 tap=vxbt${SUBNET[$1]}$2$ID vhost=off
    [ "$c" = vhost-net ] && vhost=on
    ip tuntap add dev "$tap" mode tap vnet_hdr && ip link set "$tap" master "$BR" && ip link set "$tap" up || return 1
    LINKS+=("$tap")
    mkfifo "$TMP/$c-$g.in" "$TMP/$c-$g.out"
    guest_accel
    # shellcheck disable=SC2086
    qemu-system-x86_64 $GUEST_ACCEL_ARGS -machine q35 -smp 1 -m 256M -nodefaults -no-user-config -display none \
        -no-reboot -serial "file:$TMP/$c-$g.serial" -serial "pipe:$TMP/$c-$g" \
        -netdev "tap,id=net0,ifname=$tap,script=no,downscript=no,vhost=$vhost" \
        -device "virtio-net-pci,netdev=net0,mac=$mac,romfile=$GUEST_VECTORS" \
        -kernel "$GUEST/vmlinuz" -initrd "$GUEST/initramfs.cpio.gz" \
        -append "console=ttyS0 quiet panic=-1 vxtest=agent vxip=$ip" </dev/null >"$TMP/$c-$g.qemu.log" 2>&1 &
    QEMU_PID=$!
}

# === A sample ================================================================

declare -A NCMD
gcmd() { NCMD[$1]=$((${NCMD[$1]:-0} + 1)); agent_cmd "$TMP/$1.serial" "$TMP/$1" "${NCMD[$1]}" "$2" "${3:-120}"; }
last_recv() { tr -d '\r' <"$TMP/$1.serial" | grep -a 'VXTCP recv ' | tail -n 1; }

# Where the CPU time goes during a transfer: ticks (utime + stime) of a process or of one thread.
ticks() { [ -r "$1/stat" ] && sed 's/.*) //' "$1/stat" | awk '{ print $12 + $13 }' || echo 0; }
poll_task() {   # the poll thread of configuration C's vhost-xdp, or nothing
    local t
    [ -n "${VXPID[$1]:-}" ] || return 0
    for t in /proc/"${VXPID[$1]}"/task/*; do [ "$(cat "$t/comm" 2>/dev/null)" = vx-pmd0 ] && echo "$t"; done
}
# cpu_sample C BEFORE|AFTER: "ticks_pmd ticks_a ticks_b seconds"; CPU C PATH: the shares since BEFORE.
cpu_now() { echo "$(ticks "$(poll_task "$1")") $(ticks "/proc/${QPID[$1-a]}") $(ticks "/proc/${QPID[$1-b]}") $EPOCHREALTIME"; }
cpu_record() {
    echo "$2 $3" | awk -v hz="$(getconf CLK_TCK)" -v k="$1" '{ t = $8 - $4; if (t > 0)
        printf "%s %.0f %.0f %.0f\n", k, 100 * ($5 - $1) / hz / t, 100 * ($6 - $2) / hz / t, 100 * ($7 - $3) / hz / t }' >>"$TMP/cpu"
}

# sample C PATH: one transfer from guest A of configuration C; SAMPLE = the receiver's Mbit/s.
sample() {
    local c=$1 path=$2 n=${SUBNET[$1]} port=$((5000 + RANDOM % 1000)) r st cpu0
    SAMPLE=''
    cpu0=$(cpu_now "$c")
    if [ "$path" = g2g ]; then
        local before
        before=$(tr -d '\r' <"$TMP/$c-b.serial" | grep -ac 'VXTCP recv ')
        gcmd "$c-b" "tcpcheck recv -n -t 90 $port $BYTES &" >/dev/null
        gcmd "$c-a" "tcpcheck send -n -t 90 10.$n.0.3 $port $BYTES" 180; st=$?
        wait_for "guest B's result" 30 eval "[ \$(tr -d '\r' <'$TMP/$c-b.serial' | grep -ac 'VXTCP recv ') -gt $before ]"
        r=$(last_recv "$c-b")
    else
        in_ns "$TCPCHECK" recv -n -t 90 "$port" "$BYTES" >"$TMP/peer.out" 2>&1 &
        local rp=$!
        wait_for "the peer to listen" 10 grep -q listening "$TMP/peer.out"
        gcmd "$c-a" "tcpcheck send -n -t 90 10.$n.0.1 $port $BYTES" 180; st=$?
        wait "$rp"
        r=$(grep 'VXTCP recv' "$TMP/peer.out")
    fi
    if [ "$st" = 0 ] && grep -q "VXTCP recv ok bytes=$BYTES " <<<"$r"; then
        SAMPLE=$(sed -n 's/.*mbit=\([0-9.]*\).*/\1/p' <<<"$r")
        cpu_record "$path $c" "$cpu0" "$(cpu_now "$c")"
    else
        echo "bench_tcp: $c $path: transfer failed (sender $st, receiver: ${r:-nothing})" >&2
        FAILED=1
    fi
}

# activate C PATH: only configuration C's vhost-xdp runs, in vm2vm (g2g) or iface (g2p) mode, so
# that no other poll thread takes CPU from the guests measured (2 CPUs here); QEMU reconnects the
# guests to it (the first transfer's sender retries its connect meanwhile).  A tap configuration
# needs none.
ACTIVE=''
activate() {
    [ "$ACTIVE" = "$1 $2" ] && return 0
    local x
    for x in "${!VXPID[@]}"; do [ -n "${VXPID[$x]}" ] && vx_stop "$x"; done
    if [ "$1" != tap ] && [ "$1" != vhost-net ]; then vx_start "$1" "$([ "$2" = g2g ] && echo vm2vm || echo iface)"; fi
    ACTIVE="$1 $2"
}

# === Main ====================================================================

net_setup || { echo "bench_tcp: setting up the network (netns $NS, veths, bridge $BR) failed" >&2; exit 1; }
# While the guests boot every vhost-xdp runs (QEMU waits for its backend at start), backing off
# when idle; afterwards only the one measured.
for c in $CONFIGS; do if [ "$c" != tap ] && [ "$c" != vhost-net ]; then vx_start "$c" vm2vm 1000; fi; done
for c in $CONFIGS; do boot "$c" || { echo "bench_tcp: booting the $c guests failed" >&2; exit 1; }; done
guest_accel
echo "bench_tcp: $(nproc) CPUs, guests under ${GUEST_ACCEL^^} ($GUEST_ACCEL_WHY); $([ -c /dev/vhost-net ] && echo "/dev/vhost-net present" || echo "no /dev/vhost-net here: the tap rows are QEMU's own virtio-net (vhost=off)")"
echo "bench_tcp: booting $(($(wc -w <<<"$CONFIGS") * 2)) guests ($CONFIGS)..."
for g in "${!QPID[@]}"; do
    wait_for "guest $g" 300 grep -aqs "VXAGENT ready" "$TMP/$g.serial" ||
        { echo "bench_tcp: guest $g did not boot" >&2; tail -n 5 "$TMP/$g.serial" >&2; exit 1; }
done
RESULTS=$TMP/results
: >"$RESULTS"
order=$CONFIGS
for ((round = 1; round <= ROUNDS; round++)); do
    paths=$PATHS
    ((round % 2)) || paths=$(tr ' ' '\n' <<<"$PATHS" | tac | tr '\n' ' ')
    for path in $paths; do
        for c in $order; do
            activate "$c" "$path"
            printf 'bench_tcp: %-4s %-12s' "$path" "$c"
            for ((i = 0; i < SAMPLES; i++)); do
                sample "$c" "$path"
                [ -n "$SAMPLE" ] && echo "$path $c $SAMPLE" >>"$RESULTS"
                printf ' %s' "${SAMPLE:-FAILED}"
            done
            echo " Mbit/s"
        done
        order=$(tr ' ' '\n' <<<"$order" | tac | tr '\n' ' ')     # interleaved: A B C, then C B A
    done
done

# The sending guest's chains per 64 KiB: its TX ring's packets and bytes, from vhost-xdp's exit lines
# (a vhost-xdp configuration, guest A = device 0 in VM-to-VM, the only device with --iface).
for c in $CONFIGS; do [ -n "${VXPID[$c]:-}" ] && vx_stop "$c"; done
chains() {
    awk '/exit: (device 0 \(.*\): )?from guest [0-9]+ packets/ {
            for (i = 1; i <= NF; i++) if ($i == "from" && $(i + 1) == "guest") p += $(i + 2) }
         END { print p + 0 }' "$TMP/vx-$1.log"
}

median() { awk -v p="$1" -v c="$2" '$1 == p && $2 == c { print $3 }' "$RESULTS" | sort -g |
           awk '{ v[NR] = $1 } END { if (NR) printf "%.0f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
range() { awk -v p="$1" -v c="$2" '$1 == p && $2 == c { print $3 }' "$RESULTS" | sort -g |
          awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) printf "%.0f-%.0f", lo, hi }'; }
ratio() { if [ -n "$1" ] && [ -n "$2" ] && [ "$2" != 0 ]; then awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; else echo -; fi; }
echo
printf '%-15s' "TCP Mbit/s"
for c in $CONFIGS; do printf ' %-20s' "$c"; done
printf ' %s\n' "offloads/no-offloads  offloads/tap"
for path in $PATHS; do
    printf '%-15s' "$([ "$path" = g2g ] && echo "guest -> guest" || echo "guest -> peer")"
    for c in $CONFIGS; do printf ' %-20s' "$(median "$path" "$c") ($(range "$path" "$c"))"; done
    printf ' %-21s %s\n' "$(ratio "$(median "$path" offloads)" "$(median "$path" no-offloads)")" \
        "$(ratio "$(median "$path" offloads)" "$(median "$path" tap)")"
done
echo
echo "median (min-max) of $((SAMPLES * ROUNDS)) transfers of $BYTES bytes each, rated at the receiver; guests under ${GUEST_ACCEL^^};"
echo "vhost-xdp --pmd-mode $PMD_MODE --pmd-sleep $PMD_SLEEP, only the configuration measured running."
echo "CPU during the transfers (% of one CPU, mean): vhost-xdp's poll thread, guest A's QEMU, guest B's QEMU"
awk '{ k = $1 " " $2; p[k] += $3; a[k] += $4; b[k] += $5; n[k]++ }
     END { for (k in n) printf "  %-22s poll %3.0f%%  A %3.0f%%  B %3.0f%%\n", k, p[k] / n[k], a[k] / n[k], b[k] / n[k] }' \
    "$TMP/cpu" 2>/dev/null | sort
total=$((SAMPLES * ROUNDS * BYTES * $(wc -w <<<"$PATHS")))
for c in offloads no-offloads; do
    [[ " $CONFIGS " == *" $c "* ]] || continue
    p=$(chains "$c")
    [ "$p" -gt 0 ] && echo "vhost-xdp $c: the sending guest's TX ring carried $p packets for $total bytes of TCP:" \
        "$(awk -v p="$p" -v t="$total" 'BEGIN { printf "%.1f", p * 65536 / t }') chains (and used entries) per 64 KiB"
done
exit "$FAILED"
