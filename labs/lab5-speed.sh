#!/usr/bin/env bash
# labs/lab5-speed.sh - Lab 5, speed: how many packets a second get out through vhost-xdp, against the
# same traffic through the kernel's path.  Run it as root: `sudo labs/lab5-speed.sh`.
#
# The articles say a DPDK vhost-user backend moves 2-4x the packets of the kernel's vhost-net.  This lab
# measures the same kind of ratio on the machine it runs on, with the pieces of this repository:
#
# Part 1, a guest.  The test guest's own kernel packet generator (pktgen, vxtest=blast in
# tests/build_guest.sh) sends UDP frames as fast as the guest can, for the same time and frame size,
#   (a) vhost-xdp:  guest virtio-net -> vhost-user rings -> vhost-xdp -> AF_XDP -> veth -> peer netns,
#                   counted at the peer end's rx_packets;
#   (b) QEMU tap:   guest virtio-net -> QEMU's own virtio-net device -> tap in a netns of its own,
#                   counted at the tap's rx_packets (the kernel path; the tap is what vhost-net uses);
#   (c) vhost-net:  only where /dev/vhost-net exists: (b) with vhost=on, the articles' baseline.
# Part 2, DPDK (when dpdk-testpmd is installed): testpmd's txonly engine, the same program both times,
#   (a) vhost-xdp:  testpmd net_virtio_user -> vhost-xdp -> AF_XDP -> veth -> peer,
#   (b) af_packet:  testpmd net_af_packet straight on the veth (the kernel's socket path) -> peer.
# Part 2 takes the guest's CPU out of the picture; it is not the articles' comparison (no VM on the
# kernel side), but it shows what the vhost-xdp path can carry when the sender is fast.
#
# Each (path, size) is measured in rounds, interleaved (A B A B: the host's scheduling swings results
# from one second to the next), as the median of 1-second samples of the receiver's counter, after a
# second of warm-up.  It prints a table, a text bar chart and the ratios (lines "RATIO ..."), writes
# the chart as SVG (--svg FILE, default ./lab5-speed.svg), and says what the numbers show.
#
# Usage: sudo labs/lab5-speed.sh [--ci] [--rounds N] [--secs S] [--svg FILE|--svg '']
#   --ci         (or LAB_CI=1) short: 1 round, 64 B frames only, 5 s per run, about a minute
#   --rounds N   interleaved rounds (default 2)
#   --secs S     seconds each guest sends each frame size (default 8; the first and last are not
#                counted); testpmd runs are as long
#   --svg FILE   where to write the SVG chart ('' for none)
# Exit status: 0 when every path was measured, 1 when something failed, 2 for a bad option.
set -u
. "$(dirname "$0")/common.sh"

lab_init lab5 "$@"

# === Options ==================================================================

usage() {
    echo "usage: sudo $0 [--ci] [--rounds N] [--secs S] [--svg FILE]" >&2
    exit 2
}
ROUNDS=2 SECS=8 SIZES="64 1500" SVG=lab5-speed.svg
[ "$LAB_CI" = 1 ] && ROUNDS=1 SECS=5 SIZES="64"
set -- "${LAB_ARGS[@]}"
while [ $# -gt 0 ]; do
    case $1 in
    --rounds) [[ ${2:-} =~ ^[1-9][0-9]?$ ]] || { echo "lab5: --rounds wants 1..99, not '${2:-}'" >&2; usage; }
              ROUNDS=$2; shift 2 ;;
    --secs)   if ! [[ ${2:-} =~ ^[0-9]+$ ]] || [ "$2" -lt 3 ] || [ "$2" -gt 600 ]; then
                  echo "lab5: --secs wants 3..600, not '${2:-}'" >&2; usage
              fi
              SECS=$2; shift 2 ;;
    --svg)    [ $# -ge 2 ] || { echo "lab5: --svg wants a file name (or '')" >&2; usage; }
              SVG=$2; shift 2 ;;
    -h|--help) usage ;;
    *)        echo "lab5: unknown option '$1'" >&2; usage ;;
    esac
done
SAMPLES=$((SECS - 2))     # 1-s samples per run: not the first second (warm-up), not the last

lab_need_root
lab_need_cmd ip iproute2
lab_need_cmd qemu-system-x86_64 qemu-system-x86
lab_build
lab_guest

RESULTS=$LAB_TMP/samples    # one line per 1-s sample: part path size pps bits_per_second
GUESTPPS=$LAB_TMP/guestpps  # one line per guest run and size: path size pps-that-pktgen-reports
GUESTRUNS=$LAB_TMP/guestruns  # per guest run: path pktgen-sent eth0-sent eth0-dropped received kernel-dropped
: >"$RESULTS"; : >"$GUESTPPS"; : >"$GUESTRUNS"
FAILED=0

# === Counting at the receiver =================================================

# counters NS IF: "seconds packets bytes" of IF's receive counters, IF in namespace NS.  The receiver's
# rx_packets counts what really arrived, whatever the sender believes it sent.
counters() {
    local now=${EPOCHREALTIME:-$(date +%s.%N)}
    ip netns exec "$1" cat "/sys/class/net/$2/statistics/rx_packets" "/sys/class/net/$2/statistics/rx_bytes" |
        awk -v t="$now" '{ v[NR] = $1 } END { print t, v[1], v[2] }'
}

# sample PART PATH SIZE NS IF: SAMPLES 1-second rates of IF's receive counters into RESULTS; prints
# the median packets per second of this run.
sample() {
    local part=$1 path=$2 size=$3 ns=$4 ifname=$5 i before after run=$LAB_TMP/run.samples
    : >"$run"
    before=$(counters "$ns" "$ifname")
    for ((i = 0; i < SAMPLES; i++)); do
        sleep 1
        after=$(counters "$ns" "$ifname")
        echo "$before $after" | awk -v p="$part" -v w="$path" -v s="$size" \
            '{ t = $4 - $1; if (t > 0) printf "%s %s %s %.0f %.0f\n", p, w, s, ($5 - $2) / t, ($6 - $3) * 8 / t }' >>"$run"
        before=$after
    done
    cat "$run" >>"$RESULTS"
    awk '{ print $4 }' "$run" | median_of
}

# median_of: the median of the numbers on stdin, one a line (0 for none).
median_of() {
    sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2];
                                        else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# median PART PATH SIZE [COLUMN]: the median of one (part, path, size)'s samples over all rounds
# (column 4: packets per second, 5: bits per second).
median() {
    awk -v p="$1" -v w="$2" -v s="$3" -v c="${4:-4}" '$1 == p && $2 == w && $3 == s { print $c }' "$RESULTS" | median_of
}

mac_of() { ip netns exec "$1" cat "/sys/class/net/$2/address"; }

# untrack PID: a run's QEMU or vhost-xdp, stopped by us already, leaves lab_cleanup's list (so that
# cleanup never signals a pid the system may have given to another process since).
untrack() {
    local p keep=()
    for p in "${LAB_PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    LAB_PIDS=("${keep[@]}")
}
stop_run() { stop_pid "$1"; untrack "$1"; }

# === Part 1: a guest's pktgen =================================================

# wait_serial SERIAL PATTERN SECS PID: wait until the guest's console shows PATTERN; fail if QEMU died
# or the guest reported an error (a VXERROR line: e.g. a guest built before vxtest=blast existed).
wait_serial() {
    local serial=$1 pattern=$2 deadline=$((SECONDS + $3)) pid=$4 error
    while [ "$SECONDS" -lt "$deadline" ]; do
        [ -f "$serial" ] && tr -d '\r' <"$serial" | grep -aq -- "$pattern" && return 0
        error=$(tr -d '\r' 2>/dev/null <"$serial" | grep -ao 'VXERROR.*' | head -n 1)
        [ -n "$error" ] && { lab_say "  the guest says: $error"; return 1; }
        kill -0 "$pid" 2>/dev/null || { lab_say "  QEMU (pid $pid) exited; its console:"; tail -n 5 "$serial" | lab_explain; return 1; }
        sleep 0.1
    done
    lab_say "  timed out after $3 s waiting for '$pattern' on the guest's console"
    return 1
}

# field NAME LINE: the value of NAME=value in LINE (0 if missing).
field() { local v; v=$(echo "$2" | sed -n "s/.* $1=\([0-9]*\).*/\1/p"); echo "${v:-0}"; }

# kernel_drops PATH: what the kernel dropped where PATH's packets arrive.  On the veth: the host end's
# tx_dropped, the packets the peer's receive queue (the backlog, net.core.netdev_max_backlog) had no
# room for; on the tap: its rx_dropped.
kernel_drops() {
    case $1 in
    vhost-xdp) cat "/sys/class/net/$LAB_HOST/statistics/tx_dropped" ;;
    *)         ip netns exec "$TAP_NS" cat "/sys/class/net/$TAP/statistics/rx_dropped" ;;
    esac
}

# guest_sizes PATH SERIAL PID NS IF: for each frame size the guest's pktgen sends, sample the receiver
# while it sends (the guest prints "VXBLAST run size=N" as it starts, "VXBLAST done ..." as it stops).
# Also adds up what pktgen says it sent and what the receiver got over the whole run, into GUESTRUNS.
guest_sizes() {
    local path=$1 serial=$2 pid=$3 ns=$4 ifname=$5 size first=120 done_line sent=0 n rx0 rx1 drop0 drop1 pps
    # A TCG guest on a busy machine can take a while to boot: generous before the first line.
    wait_serial "$serial" "VXREADY" "$first" "$pid" || return 1
    rx0=$(counters "$ns" "$ifname" | awk '{ print $2 }') drop0=$(kernel_drops "$path")
    for size in $SIZES; do
        wait_serial "$serial" "VXBLAST run size=$size" $((SECS + 30)) "$pid" || return 1
        sleep 1
        pps=$(sample guest "$path" "$size" "$ns" "$ifname")
        wait_serial "$serial" "VXBLAST done size=$size" $((SECS + 30)) "$pid" || return 1
        done_line=$(tr -d '\r' <"$serial" | grep -ao "VXBLAST done size=$size .*" | tail -n 1)
        n=$(field sent "$done_line")
        sent=$((sent + ${n:-0}))
        echo "$path $size $(field pps "$done_line")" >>"$GUESTPPS"
        lab_say "  $path, $size B: receiver median $pps pps over $SAMPLES s" \
                "(guest's pktgen: ${done_line#"VXBLAST done size=$size "})"
    done
    sleep 0.5    # what is still in the rings arrives
    rx1=$(counters "$ns" "$ifname" | awk '{ print $2 }') drop1=$(kernel_drops "$path")
    # eth0's counters in the last line count since boot: a few packets of its own before pktgen's.
    echo "$path $sent $(field tx_packets "$done_line") $(field tx_dropped "$done_line") $((rx1 - rx0))" \
         "$((drop1 - drop0))" >>"$GUESTRUNS"
}

# blast_args MAC: the guest's kernel command line after vxtest= (see tests/build_guest.sh): pktgen
# sends to 10.0.0.1 and the receiver's MAC address, so the frames are the receiver's own.
blast_args() { echo "blast vxsecs=$SECS vxsize=${SIZES// /,} vxdstmac=$1"; }

guest_run_vhost_xdp() {
    local round=$1 pid
    lab_start_vx "$LAB_TMP/vx-guest-$round.log" --iface "$LAB_HOST" --stats 1
    # start_guest puts "vxtest=$mode" on the kernel command line: the blast options ride along.
    lab_boot_guest "g-vx-$round" "$(blast_args "$(mac_of "$LAB_NS" "$LAB_PEER")")"
    pid=$QEMU_PID
    guest_sizes vhost-xdp "$LAB_SERIAL" "$pid" "$LAB_NS" "$LAB_PEER" || FAILED=1
    stop_run "$pid"
    stop_run "$VX_PID"
}

# The kernel side: QEMU's own virtio-net device on a tap (no vhost-user).  The tap lives in a netns of
# its own, made once (lab_netns's namespace already has 10.0.0.1 on the veth), and QEMU runs in it.
TAP_NS=vxlab-tap-$$ TAP=vxt$$
make_tap() {
    ip netns add "$TAP_NS" || lab_die "ip netns add $TAP_NS failed"
    lab_on_exit "ip netns del $TAP_NS 2>/dev/null && lab_say 'lab5: deleted netns $TAP_NS (and tap $TAP in it)'"
    # A persistent tap, made before QEMU opens it by name: it can be set up (and has its MAC) first.
    if ! { ip -n "$TAP_NS" tuntap add dev "$TAP" mode tap &&
           ip -n "$TAP_NS" link set dev "$TAP" addrgenmode none &&
           ip -n "$TAP_NS" link set dev lo up &&
           ip -n "$TAP_NS" link set dev "$TAP" up &&
           ip -n "$TAP_NS" addr add 10.0.0.1/24 dev "$TAP"; }; then
        lab_die "making tap $TAP in netns $TAP_NS failed"
    fi
    lab_say "tap: $TAP in netns $TAP_NS, 10.0.0.1/24 (QEMU's kernel-side backend)"
}

# guest_run_tap ROUND VHOST: the same guest, kernel and command line, with -netdev tap (VHOST=on: the
# kernel's vhost-net moves the rings instead of QEMU).  The rest of QEMU's options are start_guest's.
guest_run_tap() {
    local round=$1 vhost=$2 path=tap name=g-tap-$1
    [ "$vhost" = on ] && path=vhost-net name=g-vhostnet-$1
    guest_accel
    # shellcheck disable=SC2086  # GUEST_ACCEL_ARGS is several words
    ip netns exec "$TAP_NS" qemu-system-x86_64 $GUEST_ACCEL_ARGS -machine q35 -smp 1 -m 256M -nodefaults \
        -no-user-config -display none -no-reboot -serial "file:$LAB_TMP/$name.serial" \
        -object memory-backend-memfd,id=mem,size=256M,share=on -numa node,memdev=mem \
        -netdev "tap,id=net0,ifname=$TAP,script=no,downscript=no,vhost=$vhost" \
        -device "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,romfile=$GUEST_VECTORS" \
        -kernel "$GUEST/vmlinuz" -initrd "$GUEST/initramfs.cpio.gz" \
        -append "console=ttyS0 quiet panic=-1 vxtest=$(blast_args "$(mac_of "$TAP_NS" "$TAP")")" \
        </dev/null >"$LAB_TMP/$name.qemu.log" 2>&1 &
    local pid=$!    # `ip netns exec` execs QEMU: this is QEMU's pid
    lab_track "$pid"
    lab_say "guest: QEMU pid $pid, console in $LAB_TMP/$name.serial (its virtio-net on tap $TAP, vhost=$vhost)"
    guest_sizes "$path" "$LAB_TMP/$name.serial" "$pid" "$TAP_NS" "$TAP" || FAILED=1
    stop_run "$pid"
}

# === Part 2: DPDK testpmd =====================================================

# testpmd's two lcores share one CPU, vhost-xdp's poll thread gets another (both busy-poll).
TP_CPU=$(($(nproc) > 1 ? 1 : 0))

peer_packets() { counters "$LAB_NS" "$LAB_PEER" | awk '{ print $2 }'; }
peer_moved()   { [ "$(peer_packets)" -gt $((PEER_START + 1000)) ]; }
gone()         { ! kill -0 "$1" 2>/dev/null; }

# testpmd_run PATH SIZE VDEV: testpmd txonly on VDEV for SIZE-byte frames; sample the peer meanwhile.
# Without -i testpmd runs until a line arrives on its stdin: a fifo we hold open, then write to.
testpmd_run() {
    local path=$1 size=$2 vdev=$3 prefix=vxlab5-$$-$1 log=$LAB_TMP/testpmd-$1-$2.log pid
    rm -f "$LAB_TMP/tp.in"; mkfifo "$LAB_TMP/tp.in"
    exec 8<>"$LAB_TMP/tp.in"
    dpdk-testpmd --lcores "0@$TP_CPU,1@$TP_CPU" --no-huge -m 256 --no-pci --file-prefix="$prefix" \
        --vdev "$vdev" -- --nb-cores=1 --total-num-mbufs=16384 --forward-mode=txonly --txpkts="$size" \
        --auto-start <&8 >"$log" 2>&1 &
    pid=$!
    lab_track "$pid"
    lab_say "testpmd: pid $pid, log $log"
    # Started when the peer's counter moves (testpmd takes a second or two to set up).
    PEER_START=$(peer_packets)
    if ! wait_for "testpmd's first packets at $LAB_PEER" 30 peer_moved; then
        lab_say "  testpmd ($path, $size B) sent nothing; the end of its log:"; tail -n 5 "$log" | lab_explain
        FAILED=1
    else
        sleep 1
        lab_say "  $path, $size B: receiver median $(sample dpdk "$path" "$size" "$LAB_NS" "$LAB_PEER") pps over $SAMPLES s"
    fi
    echo >&8    # "Press enter to exit"
    wait_for "testpmd to quit" 10 gone "$pid" || true
    exec 8>&-
    stop_run "$pid"
    rm -rf "${DPDK_RUNDIR:?}/$prefix"
}

dpdk_run_vhost_xdp() {
    local round=$1 size
    lab_start_vx "$LAB_TMP/vx-dpdk-$round.log" --iface "$LAB_HOST" --pmd-cores 0
    for size in $SIZES; do testpmd_run vhost-xdp "$size" "net_virtio_user0,path=$LAB_SOCK,queues=1"; done
    stop_run "$VX_PID"
}

dpdk_run_af_packet() {
    local size
    for size in $SIZES; do testpmd_run af_packet "$size" "net_af_packet0,iface=$LAB_HOST"; done
}

# === Output: table, chart, SVG ================================================

# The (part, path) pairs measured, in order, with the names the table and chart show.
label() {
    case $1/$2 in
    guest/vhost-xdp) echo "guest: vhost-user -> vhost-xdp -> AF_XDP" ;;
    guest/tap)       echo "guest: QEMU virtio-net -> tap (kernel)" ;;
    guest/vhost-net) echo "guest: vhost-net -> tap (kernel)" ;;
    dpdk/vhost-xdp)  echo "testpmd: virtio_user -> vhost-xdp -> AF_XDP" ;;
    dpdk/af_packet)  echo "testpmd: af_packet socket (kernel)" ;;
    esac
}
# rows: "part path size" for every measured combination, in the order of PATHS.
rows() {
    local pp size
    for pp in $PATHS; do for size in $SIZES; do echo "${pp%/*} ${pp#*/} $size"; done; done
}

# spread PART PATH SIZE: "min-max" of the 1-s samples in kpps: how much the rate swung.
spread() {
    awk -v p="$1" -v w="$2" -v s="$3" '$1 == p && $2 == w && $3 == s { if (n++ == 0 || $4 < lo) lo = $4; if ($4 > hi) hi = $4 }
        END { printf "%.0f-%.0f\n", lo / 1000, hi / 1000 }' "$RESULTS"
}

# pktgen_pps PATH SIZE: the mean of the rates the guest's pktgen reported for its runs.
pktgen_pps() {
    awk -v w="$1" -v s="$2" '$1 == w && $2 == s && $3 != "" { t += $3; n++ } END { print n ? int(t / n) : "-" }' "$GUESTPPS"
}

print_table() {
    local part path size gp
    printf '  %-45s %6s %10s %9s %16s %11s\n' "path" "frame" "pps" "Mbit/s" "1-s samples" "pktgen pps"
    rows | while read -r part path size; do
        gp=-
        [ "$part" = guest ] && gp=$(pktgen_pps "$path" "$size")
        printf '  %-45s %5sB %10s %9.1f %11s kpps %11s\n' "$(label "$part" "$path")" "$size" \
            "$(median "$part" "$path" "$size")" "$(median "$part" "$path" "$size" 5 | awk '{ print $1 / 1e6 }')" \
            "$(spread "$part" "$path" "$size")" "$gp"
    done
}

# chart: one group per (part, size), bars scaled to the group's fastest path, then its RATIO line.
print_chart() {
    local part size base pp path p
    for part in guest dpdk; do
        for size in $SIZES; do
            local max=0 any=0
            for pp in $PATHS; do
                [ "${pp%/*}" = "$part" ] || continue
                p=$(median "$part" "${pp#*/}" "$size"); any=1
                [ "$p" -gt "$max" ] && max=$p
            done
            [ $any = 1 ] || continue
            echo "  $part, $size B frames:"
            for pp in $PATHS; do
                [ "${pp%/*}" = "$part" ] || continue
                path=${pp#*/}
                p=$(median "$part" "$path" "$size")
                awk -v l="$path" -v p="$p" -v m="$max" 'BEGIN { n = m > 0 ? int(40 * p / m + 0.5) : 0; if (p > 0 && n < 1) n = 1;
                    bar = ""; for (i = 0; i < n; i++) bar = bar "#"; for (; i < 40; i++) bar = bar " ";
                    printf "    %-10s |%s| %8.1f kpps\n", l, bar, p / 1000 }'
            done
            [ "$part" = guest ] && base=tap || base=af_packet
            for pp in $PATHS; do
                [ "${pp%/*}" = "$part" ] || continue
                path=${pp#*/}
                [ "$path" = "$base" ] && continue
                awk -v part="$part" -v s="$size" -v a="$path" -v b="$base" \
                    -v pa="$(median "$part" "$path" "$size")" -v pb="$(median "$part" "$base" "$size")" \
                    'BEGIN { if (pb > 0) printf "  RATIO %s %s B: %s / %s = %.2fx\n", part, s, a, b, pa / pb;
                             else printf "  RATIO %s %s B: %s / %s = n/a (%s measured nothing)\n", part, s, a, b, b }'
            done
        done
    done
}

# write_svg FILE: the same bars as the chart, one row per (part, path, size), scaled to the largest.
write_svg() {
    local file=$1
    rows | while read -r part path size; do echo "$(label "$part" "$path") $size B|$(median "$part" "$path" "$size")"; done |
    awk -F'|' '{ name[NR] = $1; v[NR] = $2; if ($2 > max) max = $2 }
        END {
            h = 30 + 24 * NR + 20
            printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"760\" height=\"%d\" font-family=\"monospace\" font-size=\"12\">\n", h
            printf "<text x=\"10\" y=\"18\" font-weight=\"bold\">vhost-xdp lab 5: packets per second at the receiver (median)</text>\n"
            for (i = 1; i <= NR; i++) {
                y = 30 + 24 * (i - 1); w = max > 0 ? 300 * v[i] / max : 0
                color = name[i] ~ /vhost-xdp/ ? "#2a7ab0" : "#b0552a"
                printf "<text x=\"10\" y=\"%d\">%s</text>\n", y + 15, name[i]
                printf "<rect x=\"370\" y=\"%d\" width=\"%.1f\" height=\"18\" fill=\"%s\"/>\n", y + 2, w, color
                printf "<text x=\"%.1f\" y=\"%d\">%.1f kpps</text>\n", 375 + w, y + 15, v[i] / 1000
            }
            printf "</svg>\n"
        }' >"$file"
}

# === What the numbers say =====================================================

# ratio PART A B SIZE: median pps of path A over path B, one decimal ("0" when B measured nothing).
ratio() { awk -v a="$(median "$1" "$2" "$4")" -v b="$(median "$1" "$3" "$4")" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print 0 }'; }

# ratios PART A B: "2.1x at 64 B, 1.9x at 1500 B"
ratios() {
    local size out=''
    for size in $SIZES; do out+="${out:+, }$(ratio "$1" "$2" "$3" "$size")x at $size B"; done
    echo "$out"
}

# against_claim PART A B: where the ratios fall against the articles' 2-4x.
against_claim() {
    local size all=''
    for size in $SIZES; do all+=" $(ratio "$1" "$2" "$3" "$size")"; done
    echo "$all" | awk '{ lo = hi = $1; for (i = 2; i <= NF; i++) { if ($i < lo) lo = $i; if ($i > hi) hi = $i }
        if (hi < 2) print "below"; else if (lo > 4) print "above"; else if (lo >= 2 && hi <= 4) print "inside";
        else print "partly inside" }'
}

# delivery PATH: summed over PATH's guest runs, what pktgen sent, what the guest's driver put on the
# ring (eth0's tx_packets) or dropped (tx_dropped), what arrived, what the receiving kernel dropped
# (kernel_drops), and the share of eth0's packets that did not arrive.
delivery() {
    awk -v w="$1" '$1 == w { s += $2; t += $3; d += $4; r += $5; k += $6 }
        END { l = t > r ? 100 * (t - r) / t : 0
              printf "%s: pktgen sent %d, eth0 sent %d (dropped %d), %d arrived, the receiving kernel dropped %d" \
                     " (%.1f %% lost after eth0)\n", w, s, t, d, r, k, l }' "$GUESTRUNS"
}
# max_loss: the largest share, in percent, of the packets eth0 sent that did not arrive, of any path.
max_loss() {
    awk '{ t[$1] += $3; r[$1] += $5 } END { m = 0; for (w in t) if (t[w] > r[w] && 100 * (t[w] - r[w]) / t[w] > m)
        m = 100 * (t[w] - r[w]) / t[w]; printf "%.0f\n", m }' "$GUESTRUNS"
}

# host_busy: when the lab started, the host's 1-minute load average left it less than the two CPUs
# it needs to itself (a poll thread and the guest's CPU, or testpmd).
host_busy() { awk -v l="$LOAD0" -v n="$NCPU" 'BEGIN { exit !(l > n - 2 + 0.5) }'; }
# all_above PART A B X: every size's ratio A/B is at least X.
all_above() {
    local size
    for size in $SIZES; do awk -v r="$(ratio "$1" "$2" "$3" "$size")" -v x="$4" 'BEGIN { exit !(r >= x) }' || return 1; done
}

reading() {
    local pp
    lab_explain <<EOF
Part 1: through vhost-xdp the guest got $(ratios guest vhost-xdp tap) as many packets a second out
as through QEMU's tap backend: $(against_claim guest vhost-xdp tap) the articles' 2-4x.
EOF
    for pp in $PATHS; do
        [ "${pp%/*}" = guest ] && delivery "${pp#*/}" | lab_explain
    done
    if [ "$(max_loss)" -lt 1 ]; then
        lab_explain <<EOF
Nothing was lost on the way: when a path is slow the guest's TX queue fills and pktgen waits, so
each rate is how fast the guest could hand its packets to that path.  The guest's CPU sets the
pace, and what differs is what each path costs it.  With the tap, each kick of the TX queue is an
exit to QEMU, whose thread then writes every packet to the tap with a system call, under the lock
it shares with the guest's CPU.  With vhost-user the guest hardly kicks at all: vhost-xdp polls
the ring from a CPU of its own and does the copy there.
EOF
    else
        lab_explain <<EOF
Some packets were lost after the guest sent them (above).  Where the receiving kernel dropped them,
its backlog queue overflowed: the softirq that empties it runs on the sending CPU, and on a busy
machine (other programs, or busy-polling threads) it gets that CPU too late.  There the host, not
the guest's CPU, set the limit; the rates still compare what reached the receiver in the same time.
EOF
    fi
    if all_above guest vhost-xdp tap 1; then
        lab_say "  Here that made vhost-xdp the faster path."
    elif ! all_above guest tap vhost-xdp 1; then
        lab_say "  Here vhost-xdp was the faster path at some frame sizes only."
    elif host_busy; then
        lab_explain <<EOF
Here vhost-xdp was not the faster path, and this host was busy (load average $LOAD0 on $NCPU CPUs
when the lab started): a poll thread pays off only with a CPU to itself.  Here it shared one with
the guest's CPU and other programs, and took from the guest the time it would have sent in.
EOF
    else
        lab_explain <<EOF
Here vhost-xdp was not the faster path.  Check that its poll thread had a CPU to itself
(top -H while the lab runs): a poll thread that shares a CPU slows down everything else on it.
EOF
    fi
    [ "$ACCEL" = tcg ] && lab_explain <<EOF
This guest runs under TCG, QEMU's emulator: its CPU is many times slower than real hardware and
each exit costs much more, so the ratios show where the time goes here, not what a KVM guest gets.
EOF
    case " $PATHS " in
    *" guest/vhost-net "*)
        lab_explain <<EOF
The articles' own baseline, the kernel's vhost-net, was measured too: vhost-xdp got
$(ratios guest vhost-xdp vhost-net) its rate, $(against_claim guest vhost-xdp vhost-net) the articles' 2-4x.
EOF
        ;;
    *)
        lab_explain <<EOF
There is no /dev/vhost-net here (the vhost_net module), so the articles' baseline is missing:
vhost-net takes the rings off QEMU's hands and is faster than QEMU's own virtio-net + tap.  This
machine can therefore neither confirm nor refute the 2-4x claim; it shows the cost of exits.
EOF
        ;;
    esac
    case " $PATHS " in *" dpdk/af_packet "*)
        lab_explain <<EOF
Part 2: with testpmd as the sender no guest CPU sets the pace.  vhost-xdp carried
$(ratios dpdk vhost-xdp af_packet) of what testpmd's own AF_PACKET socket put on the same veth.
Both end in the veth and the peer's kernel (one softirq per packet).  With af_packet, testpmd's
CPU does all of it: its sendto() runs the veth and the peer's softirq.  With vhost-xdp, testpmd only
fills the virtio ring; vhost-xdp copies each packet once more and its CPU does the kernel's part.
EOF
        if all_above dpdk vhost-xdp af_packet 1; then
            lab_say "  Here the work shared by two CPUs outran the extra copy: vhost-xdp was faster."
        elif all_above dpdk af_packet vhost-xdp 1; then
            lab_say "  Here the extra copy and hand-over cost more than the second CPU gave: af_packet was faster."
        else
            lab_say "  Here neither was faster at every frame size."
        fi
    esac
    if host_busy; then
        lab_explain <<EOF
This host was busy (load average $LOAD0 on $NCPU CPUs when the lab started): run the lab again on
an idle machine, with more rounds (--rounds 5), before trusting these ratios.
EOF
    fi
}

# === The lab ==================================================================

lab_title "Lab 5: speed - vhost-xdp against the kernel's path"
lab_explain <<EOF
A guest sends UDP frames as fast as it can (the kernel's pktgen, inside the guest), first through
vhost-user and vhost-xdp to an AF_XDP socket on a veth, then through QEMU's own virtio-net and a tap:
the kernel's path.  Each is counted where it arrives.  Then DPDK's testpmd does the same from user
space, through vhost-xdp and through an AF_PACKET socket.  $ROUNDS round(s), ${SIZES// / and } B frames,
$SECS s per run, median of the 1-second samples.  (--ci: shorter.)
EOF

NCPU=$(nproc) LOAD0=$(cut -d' ' -f1 /proc/loadavg)
lab_say "host: $NCPU CPUs, load average $LOAD0 (the lab needs two CPUs to itself)"
lab_netns
make_tap
guest_accel; ACCEL=$GUEST_ACCEL
PATHS="guest/vhost-xdp guest/tap"
[ -e /dev/vhost-net ] && PATHS+=" guest/vhost-net"
if command -v dpdk-testpmd >/dev/null 2>&1; then
    PATHS+=" dpdk/vhost-xdp dpdk/af_packet"
else
    lab_say "dpdk-testpmd not installed (apt-get install -y dpdk-dev): part 2 is left out"
fi

lab_step "Part 1: the guest's pktgen through each path"
for ((round = 1; round <= ROUNDS; round++)); do
    lab_say "round $round of $ROUNDS:"
    guest_run_vhost_xdp "$round"
    guest_run_tap "$round" off
    [ -e /dev/vhost-net ] && guest_run_tap "$round" on
done

case " $PATHS " in *" dpdk/vhost-xdp "*)
    lab_step "Part 2: DPDK testpmd (txonly) through each path"
    for ((round = 1; round <= ROUNDS; round++)); do
        lab_say "round $round of $ROUNDS:"
        dpdk_run_vhost_xdp "$round"
        dpdk_run_af_packet
    done
esac

lab_step "Results: packets per second at the receiver (median of every round's 1-s samples)"
print_table
lab_step "Chart"
print_chart
if [ -n "$SVG" ]; then
    write_svg "$SVG" && lab_say "  (the same as SVG: $SVG)"
fi
lab_step "What this shows"
reading

# Every row must have been measured, with packets.
for pp in $PATHS; do
    for size in $SIZES; do
        [ "$(median "${pp%/*}" "${pp#*/}" "$size")" -gt 0 ] || { lab_say "lab5: $pp at $size B: no packets measured"; FAILED=1; }
    done
done
[ "$FAILED" = 0 ] || lab_die "some paths were not measured (see above)"
