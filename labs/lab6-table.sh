#!/usr/bin/env bash
# labs/lab6-table.sh - Lab 6, the articles' table: virtio-pmd in the guest and vhost-user in the host,
# against the kernel on both sides.  Run it as root: `sudo labs/lab6-table.sh`.
#
# The articles' "2-4x" compares their whole picture, DPDK's virtio PMD in the guest's user space and
# a vhost-user backend in the host's, with the kernel on both sides: the guest kernel's virtio_net and
# the host kernel's tap (vhost-net).  This lab measures the four cells of that table on the machine it
# runs on, guest side x host side:
#
#                          host: QEMU's kernel path (tap)        host: vhost-xdp (vhost-user, AF_XDP)
#   guest: virtio_net      both kernels in the path              the guest kernel only
#   guest: virtio-pmd      the host kernel's tap path only       no kernel touches the rings
#
# plus a third column, vhost-net (the tap with the kernel's vhost thread moving the rings, the
# articles' own baseline), where /dev/vhost-net works.  Every cell sends to the same peer: a veth end
# in a network namespace of its own (10.0.0.1).  The host side is the veth's other end, in a second
# namespace: vhost-xdp attaches its AF_XDP socket to it, and a Linux bridge joins it to the taps QEMU
# writes to.  So the frames of every cell leave through the same veth and are counted in the same place.
#
# Two guests, booted once from one image (tests/build_guest.sh --pmd) and identical but for the
# driver: vxdrv=kernel (virtio_net; pktgen sends, eth's rx_packets counts) and vxdrv=pmd (dpdk-testpmd
# on uio_pci_generic; txonly sends, rxonly counts).  Each has one virtio-net port per host side: port 0
# on vhost-user (vhost-xdp's socket), port 1 on a tap (QEMU's own virtio-net device), port 2 on a tap
# with vhost=on (only with vhost-net).  A cell is a run on one port: the host tells the guest over its
# second serial port which run to start and when to stop, so the cells of one round follow each other
# in the same minutes (A B C D A B C D: this machine's speed swings from one minute to the next).
# vhost-xdp runs only during its own cells, so that its spinning poll thread takes nothing from the
# others.  CPUs: the guest's vCPU on CPU 0, vhost-xdp's poll thread and (peer -> guest) the peer's
# sender on CPU 1: the threads that spin never share a CPU.  QEMU's main thread (its own virtio-net
# device, the tap's writes, and under TCG every interrupt) goes where the scheduler puts it.
#
# Two directions:
#   guest -> peer   the guest sends UDP as fast as it can (pktgen, or testpmd txonly); counted at the
#                   peer's rx_packets, sampled once a second by the host;
#   peer -> guest   testpmd (txonly, AF_PACKET) in the peer's namespace sends as fast as it can to the
#                   guest port's MAC; counted by the guest's driver (testpmd rxonly's port statistics,
#                   or eth's rx_packets), reported on its console.
# Each (cell, direction, frame size) is the median of 1-second samples over all rounds.  Per cell it
# also checks that the counts agree: what the receiver counted against what vhost-xdp (its exit lines)
# or the tap says it forwarded, and it reports the CPU other programs used meanwhile.  It prints a
# table, a text chart, RATIO lines, writes the chart as SVG, and says what the numbers show.
#
# Usage: sudo labs/lab6-table.sh [--ci] [--rounds N] [--secs S] [--svg FILE|--svg '']
#   --ci         (or LAB_CI=1) short: 1 round, 64 B frames only, 5 s per cell, about two minutes
#   --rounds N   interleaved rounds (default 2)
#   --secs S     seconds of traffic per cell (default 6; the first is not counted)
#   --svg FILE   where to write the SVG chart (default ./lab6-table.svg; '' for none)
# Exit status: 0 when every cell moved packets and every count agreed, 1 otherwise, 2 for a bad option.
set -u
. "$(dirname "$0")/common.sh"

lab_init lab6 "$@"

# === Options ==================================================================

usage() {
    echo "usage: sudo $0 [--ci] [--rounds N] [--secs S] [--svg FILE]" >&2
    exit 2
}
ROUNDS=2 SECS=6 SIZES="64 1500" SVG=lab6-table.svg
[ "$LAB_CI" = 1 ] && ROUNDS=1 SECS=5 SIZES="64"
set -- "${LAB_ARGS[@]}"
while [ $# -gt 0 ]; do
    case $1 in
    --rounds) [[ ${2:-} =~ ^[1-9][0-9]?$ ]] || { echo "lab6: --rounds wants 1..99, not '${2:-}'" >&2; usage; }
              ROUNDS=$2; shift 2 ;;
    --secs)   if ! [[ ${2:-} =~ ^[0-9]+$ ]] || [ "$2" -lt 3 ] || [ "$2" -gt 600 ]; then
                  echo "lab6: --secs wants 3..600, not '${2:-}'" >&2; usage
              fi
              SECS=$2; shift 2 ;;
    --svg)    [ $# -ge 2 ] || { echo "lab6: --svg wants a file name (or '')" >&2; usage; }
              SVG=$2; shift 2 ;;
    -h|--help) usage ;;
    *)        echo "lab6: unknown option '$1'" >&2; usage ;;
    esac
done
SAMPLES=$((SECS - 1))    # 1-s samples per cell: not the first second (warm-up)

lab_need_root
lab_need_cmd ip iproute2
lab_need_cmd bridge iproute2
lab_need_cmd taskset util-linux
lab_need_cmd qemu-system-x86_64 qemu-system-x86
lab_need_cmd dpdk-testpmd dpdk-dev
lab_build
lab_guest
PMD_GUEST=${PMD_GUEST:-$TOP/tests/guest-pmd}
[ -f "$PMD_GUEST/vmlinuz" ] ||
    lab_say "preparing the virtio-pmd guest in $PMD_GUEST (tests/build_guest.sh --pmd: testpmd and its libraries)"
VX_GUEST_DIR=$GUEST "$TOP/tests/build_guest.sh" --pmd "$PMD_GUEST" 2>"$LAB_TMP/build_pmd.log" ||
    { cat "$LAB_TMP/build_pmd.log" >&2; lab_die "could not build the virtio-pmd guest (tests/build_guest.sh --pmd)"; }

RESULTS=$LAB_TMP/samples    # one line per 1-s sample: dir kind host size pps bits_per_second
OFFERED=$LAB_TMP/offered    # peer -> guest: one line per 1-s sample of what the peer sent: dir kind host size pps
OTHER=$LAB_TMP/other        # one line per cell: dir kind host size percent-of-a-CPU-other-programs-used
COUNTS=$LAB_TMP/counts      # one line per cell: dir kind host size match|differs
: >"$RESULTS"; : >"$OFFERED"; : >"$OTHER"; : >"$COUNTS"
FAILED=0
HCPU=$(($(nproc) > 1 ? 1 : 0))    # vhost-xdp's poll thread and the sender (the guest's vCPU gets CPU 0)

# === The network: peer, veth, bridge, taps =====================================

# lab_netns --host-ns: the peer end (LAB_PEER, 10.0.0.1) in LAB_NS, the host end (LAB_HOST) in LAB_HNS.
lab_netns --host-ns
BR=vxb$$
declare -A TAP=([kernel/tap]=vxtk$$ [pmd/tap]=vxtp$$ [kernel/vhost-net]=vxnk$$ [pmd/vhost-net]=vxnp$$)
HOSTS="vhost-xdp tap"
VHOST_NET_WHY="no /dev/vhost-net here (the vhost_net module is not loaded, or cannot be)"
if [ -c /dev/vhost-net ]; then
    if (exec 3<>/dev/vhost-net) 2>/dev/null; then HOSTS+=" vhost-net" VHOST_NET_WHY=
    else VHOST_NET_WHY="/dev/vhost-net exists but cannot be opened"; fi
fi
port_of() { case $1 in vhost-xdp) echo 0 ;; tap) echo 1 ;; vhost-net) echo 2 ;; esac; }
# Each guest's ports get MACs of their own (kernel 52:54:00:12:34:56.., pmd ..:66..): both guests'
# taps are on one bridge.
mac_base() { case $1 in kernel) echo 0x56 ;; pmd) echo 0x66 ;; esac; }
guest_mac() { PMD_MAC_BASE=$(mac_base "$1") pmd_mac "$(port_of "$2")"; }

make_bridge() {
    local t kind host
    # Bridged frames skip iptables here (on a host with br_netfilter loaded they would each be
    # filtered, a cost no one would pay on purpose); the setting is this namespace's own.
    lab_in_hns sysctl -q -w net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 \
        net.bridge.bridge-nf-call-arptables=0 2>/dev/null
    lab_in_hns ip link add "$BR" type bridge && lab_in_hns ip link set dev "$BR" addrgenmode none &&
        lab_in_hns ip link set dev "$LAB_HOST" master "$BR" && lab_in_hns ip link set dev "$BR" up ||
        lab_die "making bridge $BR in $LAB_HNS failed"
    for kind in kernel pmd; do
        for host in $HOSTS; do
            [ "$host" = vhost-xdp ] && continue
            t=${TAP[$kind/$host]}
            # A persistent tap, made before QEMU opens it by name.  Its MAC in the bridge's table, so
            # that frames to one guest are not flooded to the other's tap too.
            lab_in_hns ip tuntap add dev "$t" mode tap && lab_in_hns ip link set dev "$t" addrgenmode none &&
                lab_in_hns ip link set dev "$t" master "$BR" && lab_in_hns ip link set dev "$t" up &&
                lab_in_hns bridge fdb add "$(guest_mac "$kind" "$host")" dev "$t" master static ||
                lab_die "making tap $t in $LAB_HNS failed"
        done
    done
    # The peer's MAC too: frames to it go to the veth only, even before the bridge has seen it send.
    lab_in_hns bridge fdb add "$PEER_MAC" dev "$LAB_HOST" master static || lab_die "bridge fdb add $PEER_MAC failed"
    lab_say "bridge: $BR in netns $LAB_HNS joins $LAB_HOST and the taps $(for k in "${!TAP[@]}"; do
        case " $HOSTS " in *" ${k#*/} "*) printf '%s ' "${TAP[$k]}" ;; esac; done)"
}

# counter NS IF NAME: one of IF's statistics (NS '' = the host's namespace LAB_HNS)
counter() { ip netns exec "${1:-$LAB_HNS}" cat "/sys/class/net/$2/statistics/$3"; }
peer_rx() { counter "$LAB_NS" "$LAB_PEER" rx_packets; }
peer_tx() { counter "$LAB_NS" "$LAB_PEER" tx_packets; }

# === CPU: what other programs took ===============================================

# cpu_busy: jiffies the machine's CPUs spent on anything but idle and niced programs (user, system,
# steal: the hypervisor running someone else).  Programs at a high nice level (a fuzzer at nice 19)
# yield their CPU to ours and are left out.  proc_cpu PID...: what those processes (all threads) used.
cpu_busy() { awk '/^cpu / { print $2 + $4 + $9 }' /proc/stat; }
proc_cpu() { local p t=0 v; for p; do v=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null); t=$((t + ${v:-0})); done; echo $t; }
# The lab's own: its QEMUs, vhost-xdp, the sender, and the kernel threads that run network softirqs
# when the CPU they were raised on is busy (ksoftirqd/N: the veth and the bridge are run there for
# our frames; other programs' traffic there is counted as ours too).
our_pids() { echo "${GPID[kernel]:-} ${GPID[pmd]:-} ${VX_PID:-} ${SENDER_PID:-} $(pgrep '^ksoftirqd/' | tr '\n' ' ')"; }
# other_start / other_end DIR KIND HOST SIZE: around the samples, percent of one CPU used by others.
# shellcheck disable=SC2046  # our_pids: a list of pids, split on purpose
other_start() { O_T0=${EPOCHREALTIME/,/.} O_B0=$(cpu_busy) O_M0=$(proc_cpu $(our_pids)); }
# shellcheck disable=SC2046
other_end() {
    local t1=${EPOCHREALTIME/,/.} b1 m1
    b1=$(cpu_busy) m1=$(proc_cpu $(our_pids))
    awk -v c="$1 $2 $3 $4" -v t0="$O_T0" -v t1="$t1" -v b=$((b1 - O_B0)) -v m=$((m1 - O_M0)) -v hz="$(getconf CLK_TCK)" \
        'BEGIN { o = t1 > t0 ? 100 * (b - m) / hz / (t1 - t0) : 0; if (o < 0) o = 0; printf "%s %.0f\n", c, o }' >>"$OTHER"
}

# === The guests ================================================================

declare -A GPID GCTL GSERIAL
use_guest() { QEMU_PID=${GPID[$1]} PMD_CTL=${GCTL[$1]} PMD_SERIAL=${GSERIAL[$1]}; }

# boot_guest KIND: the image with vxdrv=KIND and one port per host side, in LAB_HNS (its taps are
# there).  QEMU 7.2 runs no guest before its vhost-user socket answers, so a vhost-xdp --loopback
# serves port 0 while it boots (boot_done stops it).  Both guests boot at once.
declare -A BOOT_VX
boot_guest() {
    local kind=$1 host
    LAB_SOCK=$LAB_TMP/$kind.sock
    lab_start_vx "$LAB_TMP/vx-boot-$kind.log" --loopback --pmd-sleep 100 --trace >/dev/null
    BOOT_VX[$kind]=$VX_PID
    # shellcheck disable=SC2034  # read by pmd_mac (tests/lib.sh)
    PMD_MAC_BASE=$(mac_base "$kind")
    for host in $HOSTS; do
        case $host in
        vhost-xdp) pmd_nic vhost-user "$LAB_SOCK" ;;
        *)         pmd_nic "$host" "${TAP[$kind/$host]}" ;;
        esac
    done
    PMD_NETNS=$LAB_HNS start_pmd_guest "$LAB_TMP" "$kind" "vxdrv=$kind"
    lab_track "$QEMU_PID"
    GPID[$kind]=$QEMU_PID GCTL[$kind]=$PMD_CTL GSERIAL[$kind]=$PMD_SERIAL
    lab_say "guest $kind (vxdrv=$kind): QEMU pid $QEMU_PID, console $PMD_SERIAL"
}
# boot_done KIND: wait for the guest's VXREADY (and, with the kernel driver, its rings), stop the
# boot-time vhost-xdp, pin QEMU's vCPU thread to CPU 0 (pmd_pin).
boot_done() {
    local kind=$1 log=$LAB_TMP/vx-boot-$1.log
    use_guest "$kind"
    pmd_wait 0 '^VXREADY' 300 || { tail -n 5 "$LAB_TMP/$kind.qemu.log" | lab_explain; lab_die "the $kind guest did not start"; }
    if [ "$kind" = kernel ]; then
        wait_for "the kernel guest's rings" 60 grep -q 'ring 1 started' "$log" || lab_die "the kernel guest's rings did not start"
    fi
    lab_stop "${BOOT_VX[$kind]}"
    pmd_pin "$QEMU_PID"
    lab_say "guest $kind ready: $(pmd_line 0 '^VXREADY')"
}

# === One cell ===================================================================

# vx_start KIND: vhost-xdp on KIND's socket, forwarding to the veth; waits until QEMU is connected
# again (it retries once a second) and, for the kernel guest, its rings run.
vx_start() {
    local log=$1 kind=$2
    LAB_SOCK=$LAB_TMP/$kind.sock
    # --trace: the handshake in its log (and the line that says the rings run); the data path pays
    # one untaken branch for it.
    lab_start_vx "$log" --iface "$LAB_HOST" --pmd-cores "$HCPU" --trace >/dev/null
    wait_for "QEMU to connect to vhost-xdp" 30 grep -q 'frontend connected' "$log" || return 1
    [ "$kind" = kernel ] && { wait_for "the kernel guest's rings to resume" 30 grep -q 'ring 1 started' "$log" || return 1; }
    return 0
}
# vx_exit LOG WHAT: a count from vhost-xdp's exit lines ("nic tx", "nic rx", "from guest", "to guest")
vx_exit() { sed -n "s/.*exit: .*$2 \([0-9]*\) packets.*/\1/p" "$1" | tail -n 1; }
vx_drops() { sed -n 's/.*exit: from guest .*, \([0-9]*\) drops.*/\1/p' "$1" | tail -n 1; }

# peer_samples DIR KIND HOST SIZE WHAT: SAMPLES 1-s rates of the peer's WHAT (rx_packets: what it
# received; tx_packets: what it sent) into RESULTS (rx) or OFFERED (tx).  Each rate is divided by the
# time measured around the two reads, not by 1: on a busy host `sleep 1` and `ip netns exec` may take
# noticeably longer.
peer_samples() {
    local i b a t0 t1 out=$RESULTS f=rx_packets
    [ "$5" = tx ] && out=$OFFERED f=tx_packets
    b=$(counter "$LAB_NS" "$LAB_PEER" $f) t0=${EPOCHREALTIME/,/.}
    for ((i = 0; i < SAMPLES; i++)); do
        sleep 1
        a=$(counter "$LAB_NS" "$LAB_PEER" $f) t1=${EPOCHREALTIME/,/.}
        awk -v c="$1 $2 $3 $4" -v s="$4" -v n=$((a - b)) -v t0="$t0" -v t1="$t1" -v o="$out" \
            'BEGIN { p = n / (t1 - t0); if (o ~ /samples$/) printf "%s %.0f %.0f\n", c, p, p * s * 8; else printf "%s %.0f\n", c, p }' >>"$out"
        b=$a t0=$t1
    done
}

# guest_run MARK LINE: send LINE ("run ..."), wait for the guest's "VXRUN started" (testpmd prints it
# once it forwards: EAL, the PCI probe and the port's start take seconds under TCG, more on a busy
# host, hence the generous 120 s)
guest_run() { pmd_send "$2"; pmd_wait "$1" '^VXRUN started ' 120; }
# guest_stop: "stop", wait for "VXRUN end"; sets END
guest_stop() {
    local mark; mark=$(pmd_mark)
    pmd_send stop
    END=
    pmd_wait "$mark" '^VXRUN end ' 120 && END=$(pmd_line "$mark" '^VXRUN end ')
}
peer_rx_moved() { [ "$(peer_rx)" -gt $((PEER0 + 1000)) ]; }
guest_rx_moved() { local v; v=$(pmd_field rx "$(pmd_line "$1" '^VXCOUNT ')"); isnum "$v" && [ "$v" -gt 1000 ]; }

# cell_tx KIND HOST SIZE: the guest sends to the peer; the peer's rx_packets are sampled.
cell_tx() {
    local kind=$1 host=$2 size=$3 port mark
    port=$(port_of "$host")
    mark=$(pmd_mark)
    PEER0=$(peer_rx)
    guest_run "$mark" "run txonly $port $size 0 $PEER_MAC" || return 1
    # Sampling starts once frames arrive: a kernel guest waits for its link after vhost-xdp's restart.
    wait_for "the peer to receive" 60 peer_rx_moved || { guest_stop; return 1; }
    sleep 1    # warm-up
    other_start
    peer_samples tx "$kind" "$host" "$size" rx
    other_end tx "$kind" "$host" "$size"
    guest_stop
    sleep 0.5    # what is still in the rings and queues arrives
}

# The peer's sender: testpmd txonly on an AF_PACKET socket (its TX ring: no system call per frame)
# on the peer end, to the guest port's MAC.  Started and stopped around each peer -> guest cell.  It
# is the fastest sender the lab can count on (the host's own pktgen is a kernel module a laptop may
# not have); when a cell receives nearly all it offers, the reading says the sender set the pace.
SENDER_PID=
sender_start() {
    local mac=$1 size=$2 prefix=vxlab6-$$-sender
    rm -f "$LAB_TMP/sender.in"; mkfifo "$LAB_TMP/sender.in"
    exec 8<>"$LAB_TMP/sender.in"
    ip netns exec "$LAB_NS" dpdk-testpmd --lcores "0@$HCPU,1@$HCPU" --no-huge -m 256 --no-pci --file-prefix="$prefix" \
        --vdev "net_af_packet0,iface=$LAB_PEER" -- --nb-cores=1 --total-num-mbufs=16384 --forward-mode=txonly \
        --txpkts="$size" --eth-peer="0,$mac" --tx-ip=10.0.0.1,10.0.0.2 --tx-udp=9,9 --auto-start \
        <&8 >"$LAB_TMP/sender.log" 2>&1 &
    SENDER_PID=$!
    lab_track "$SENDER_PID"
}
sender_stop() {
    [ -n "$SENDER_PID" ] || return 0
    echo >&8    # "Press enter to exit"
    wait_for "the sender to quit" 10 eval '! kill -0 "$SENDER_PID" 2>/dev/null' || true
    exec 8>&-
    lab_stop "$SENDER_PID"; SENDER_PID=
    rm -rf "${DPDK_RUNDIR:?}/vxlab6-$$-sender"
}

# cell_rx KIND HOST SIZE: the peer sends to the guest; the guest's driver counts.
cell_rx() {
    local kind=$1 host=$2 size=$3 port mark line
    port=$(port_of "$host")
    mark=$(pmd_mark)
    guest_run "$mark" "run rxonly $port $size" || return 1
    sender_start "$(guest_mac "$kind" "$host")" "$size"
    wait_for "the guest to receive" 60 guest_rx_moved "$mark" || { sender_stop; guest_stop; return 1; }
    sleep 1    # warm-up
    mark=$(pmd_mark)
    other_start
    peer_samples rx "$kind" "$host" "$size" tx    # what the peer offered, meanwhile
    other_end rx "$kind" "$host" "$size"
    # The guest's own rates in this window (testpmd prints its statistics every 1-2 s under TCG).
    pmd_console | tail -n +$((mark + 1)) | grep -a '^VXCOUNT ' | while read -r line; do
        awk -v c="rx $kind $host $size" -v s="$size" -v p="$(pmd_field rx_pps "$line")" \
            'BEGIN { printf "%s %d %.0f\n", c, p, p * s * 8 }'
    done >>"$RESULTS"
    sender_stop
    # The guest reads what is still queued for it (a slow guest may take a while): wait until its
    # counter stands still over two reports.
    mark=$(pmd_mark)
    wait_for "the guest to read what is queued for it" 20 rx_still "$mark" || true
    guest_stop
}
# rx_still MARK: the last two VXCOUNT lines after MARK show the same rx.
rx_still() {
    local a
    a=$(pmd_console | tail -n +$(($1 + 1)) | grep -a '^VXCOUNT ' | tail -n 2 | sed -n 's/.* rx=\([0-9]*\) .*/\1/p' | uniq -c)
    [ "$(echo "$a" | awk '{ print $1 }')" = 2 ]
}

# cell DIR KIND HOST SIZE ROUND: one measurement, and its count check.
cell() {
    local dir=$1 kind=$2 host=$3 size=$4 round=$5 log=$LAB_TMP/vx-$1-$2-$4-$5.log t=${TAP[$2/$3]:-}
    local p_rx0 p_tx0 t_rx0 t_tx0 t_drop0 p_rx p_tx t_rx t_tx t_drop g_rx g_tx verdict what
    use_guest "$kind"
    END=
    if [ "$host" = vhost-xdp ]; then
        vx_start "$log" "$kind" || { lab_say "  $dir $kind/$host: vhost-xdp did not get the guest back"; FAILED=1; lab_stop "$VX_PID"; VX_PID=; return; }
    fi
    p_rx0=$(peer_rx) p_tx0=$(peer_tx)
    [ -n "$t" ] && t_rx0=$(counter '' "$t" rx_packets) t_tx0=$(counter '' "$t" tx_packets) t_drop0=$(counter '' "$t" tx_dropped)
    if ! "cell_$dir" "$kind" "$host" "$size"; then
        lab_say "  $dir $kind/$host $size B: no traffic (see $LAB_TMP)"; FAILED=1
    fi
    [ "$host" = vhost-xdp ] && { lab_stop "$VX_PID"; VX_PID=; }
    p_rx=$(($(peer_rx) - p_rx0)) p_tx=$(($(peer_tx) - p_tx0))
    # What the guest's driver counted: testpmd's port statistics since the port started (port_rx:
    # its forward statistics leave out what it flushed from the ring before forwarding), or eth's.
    g_rx=$(pmd_field port_rx "${END:-}") g_tx=$(pmd_field tx "${END:-}")
    [ -n "$g_rx" ] || g_rx=$(pmd_field rx "${END:-}")
    # Does what the receiver counted match what the host side says it forwarded?
    if [ "$dir" = tx ]; then
        if [ "$host" = vhost-xdp ]; then
            what="the guest sent ${g_tx:-?}, vhost-xdp took $(vx_exit "$log" 'from guest') and sent $(vx_exit "$log" 'nic tx'), the peer received $p_rx"
            [ "$(vx_exit "$log" 'nic tx')" = "$p_rx" ] && [ "$(vx_exit "$log" 'from guest')" = "$g_tx" ] && verdict=match || verdict=differs
        else
            # QEMU's own device sends what the guest queued from a bottom half, after a kick: what
            # is still in the TX ring when testpmd stops (and resets the device) never leaves.  At
            # most a ring (256); the tap and the peer must agree exactly.
            t_rx=$(($(counter '' "$t" rx_packets) - t_rx0))
            what="the guest sent ${g_tx:-?}, the tap took $t_rx from QEMU, the peer received $p_rx"
            if [ "$t_rx" = "$p_rx" ] && isnum "$g_tx" && [ "$g_tx" -ge "$t_rx" ] && [ "$g_tx" -le $((t_rx + 256)) ]; then
                verdict=match
                [ "$g_tx" = "$t_rx" ] || what+=" ($((g_tx - t_rx)) left in the TX ring at the reset)"
            else
                verdict=differs
            fi
        fi
    else
        if [ "$host" = vhost-xdp ]; then
            what="the peer sent $p_tx, vhost-xdp took $(vx_exit "$log" 'nic rx'), gave $(vx_exit "$log" 'to guest') to the guest (dropped $(vx_drops "$log")), the guest received ${g_rx:-?}"
            [ "$(vx_exit "$log" 'to guest')" = "$g_rx" ] && verdict=match || verdict=differs
        else
            t_tx=$(($(counter '' "$t" tx_packets) - t_tx0)) t_drop=$(($(counter '' "$t" tx_dropped) - t_drop0))
            what="the peer sent $p_tx, the tap gave $t_tx to QEMU (dropped $t_drop: its queue was full), the guest received ${g_rx:-?}"
            [ "$t_tx" = "$g_rx" ] && verdict=match || verdict=differs
        fi
    fi
    echo "$dir $kind $host $size $verdict" >>"$COUNTS"
    lab_say "  COUNT $dir $kind $host ${size}B: $what: $verdict"
}

# === Output: table, chart, SVG ====================================================

# median_of: the median of the numbers on stdin, one a line (0 for none).
median_of() {
    sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2];
                                        else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# median DIR KIND HOST SIZE [COLUMN] (5: pps, 6: bits/s) over every round's samples; offered: the
# peer's sending rate (peer -> guest).
median() { awk -v c="$1 $2 $3 $4" -v k="${5:-5}" '$1" "$2" "$3" "$4 == c { print $k }' "$RESULTS" | median_of; }
offered() { awk -v c="$1 $2 $3 $4" '$1" "$2" "$3" "$4 == c { print $5 }' "$OFFERED" | median_of; }
spread() {
    awk -v c="$1 $2 $3 $4" '$1" "$2" "$3" "$4 == c { if (n++ == 0 || $5 < lo) lo = $5; if ($5 > hi) hi = $5 }
        END { printf "%.0f-%.0f\n", lo / 1000, hi / 1000 }' "$RESULTS"
}
other_cpu() { awk -v c="$1 $2 $3 $4" '$1" "$2" "$3" "$4 == c { if ($5 > m) m = $5 } END { print m + 0 }' "$OTHER"; }

kind_label() { case $1 in kernel) echo "virtio_net (kernel)" ;; pmd) echo "virtio-pmd (DPDK)" ;; esac; }
host_label() {
    case $1 in
    vhost-xdp) echo "vhost-xdp (AF_XDP)" ;;
    tap)       echo "QEMU virtio-net + tap" ;;
    vhost-net) echo "vhost-net + tap" ;;
    esac
}
dir_label() { case $1 in tx) echo "guest -> peer" ;; rx) echo "peer -> guest" ;; esac; }
cells() { local k h; for k in kernel pmd; do for h in $HOSTS; do echo "$k $h"; done; done; }

print_table() {
    local dir size kind host off
    printf '  %-13s %-20s %-22s %6s %9s %8s %15s %9s %6s\n' direction "guest driver" "host side" frame pps Mbit/s \
        "1-s samples" offered other
    for dir in tx rx; do
        for size in $SIZES; do
            cells | while read -r kind host; do
                off=-
                [ "$dir" = rx ] && off=$(offered "$dir" "$kind" "$host" "$size")
                printf '  %-13s %-20s %-22s %5sB %9s %8.1f %10s kpps %9s %5s%%\n' "$(dir_label "$dir")" "$(kind_label "$kind")" \
                    "$(host_label "$host")" "$size" "$(median "$dir" "$kind" "$host" "$size")" \
                    "$(median "$dir" "$kind" "$host" "$size" 6 | awk '{ print $1 / 1e6 }')" \
                    "$(spread "$dir" "$kind" "$host" "$size")" "$off" "$(other_cpu "$dir" "$kind" "$host" "$size")"
            done
        done
    done
}

# ratio DIR SIZE KIND_A HOST_A KIND_B HOST_B: median A / median B, two decimals ("0" if B is 0)
ratio() {
    awk -v a="$(median "$1" "$3" "$4" "$2")" -v b="$(median "$1" "$5" "$6" "$2")" \
        'BEGIN { if (b > 0) printf "%.2f", a / b; else print 0 }'
}
# The comparisons the articles make, and the two halves of theirs.
ratio_lines() {
    echo "pmd vhost-xdp kernel tap|the whole picture against both kernels"
    echo "kernel vhost-xdp kernel tap|the host half alone (Lab 5's question)"
    echo "pmd tap kernel tap|the guest half alone"
    echo "pmd vhost-xdp kernel vhost-xdp|the PMD, when vhost-xdp is the host side"
    case " $HOSTS " in *" vhost-net "*)
        echo "pmd vhost-xdp kernel vhost-net|the articles' own comparison: their picture against vhost-net"
        echo "kernel vhost-xdp kernel vhost-net|the host half against vhost-net" ;;
    esac
}
short() { case $1/$2 in pmd/*) printf 'virtio-pmd + %s' "$2" ;; kernel/*) printf 'virtio_net + %s' "$2" ;; esac; }

print_chart() {
    local dir size kind host p max line ka ha kb hb why
    for dir in tx rx; do
        for size in $SIZES; do
            max=0
            while read -r kind host; do p=$(median "$dir" "$kind" "$host" "$size"); [ "$p" -gt "$max" ] && max=$p; done < <(cells)
            echo "  $(dir_label "$dir"), $size B frames:"
            cells | while read -r kind host; do
                awk -v l="$(short "$kind" "$host")" -v p="$(median "$dir" "$kind" "$host" "$size")" -v m="$max" \
                    'BEGIN { n = m > 0 ? int(40 * p / m + 0.5) : 0; if (p > 0 && n < 1) n = 1;
                             bar = ""; for (i = 0; i < n; i++) bar = bar "#"; for (; i < 40; i++) bar = bar " ";
                             printf "    %-24s |%s| %8.1f kpps\n", l, bar, p / 1000 }'
            done
            ratio_lines | while IFS='|' read -r line why; do
                read -r ka ha kb hb <<<"$line"
                printf '  RATIO %s %s B: %s / %s = %sx  (%s)\n' "$dir" "$size" "$(short "$ka" "$ha")" "$(short "$kb" "$hb")" \
                    "$(ratio "$dir" "$size" "$ka" "$ha" "$kb" "$hb")" "$why"
            done
        done
    done
}

# write_svg FILE: one group per (direction, size), a bar per cell, scaled to the largest of all.
write_svg() {
    local dir size kind host
    for dir in tx rx; do for size in $SIZES; do
        cells | while read -r kind host; do
            echo "$(dir_label "$dir"), $size B|$(short "$kind" "$host")|$kind|$host|$(median "$dir" "$kind" "$host" "$size")"
        done
    done; done |
    awk -F'|' '{ g[NR] = $1; name[NR] = $2; kind[NR] = $3; host[NR] = $4; v[NR] = $5; if ($5 > max) max = $5 }
        END {
            y = 40; out = ""
            for (i = 1; i <= NR; i++) {
                if (g[i] != g[i - 1]) { out = out sprintf("<text x=\"10\" y=\"%d\" font-weight=\"bold\">%s</text>\n", y + 14, g[i]); y += 22 }
                w = max > 0 ? 360 * v[i] / max : 0
                color = host[i] == "vhost-xdp" ? (kind[i] == "pmd" ? "#1f5f8b" : "#5a9bd4") : (kind[i] == "pmd" ? "#b0552a" : "#e0a070")
                out = out sprintf("<text x=\"20\" y=\"%d\">%s</text>\n", y + 14, name[i])
                out = out sprintf("<rect x=\"230\" y=\"%d\" width=\"%.1f\" height=\"18\" fill=\"%s\"/>\n", y + 2, w, color)
                out = out sprintf("<text x=\"%.1f\" y=\"%d\">%.1f kpps</text>\n", 235 + w, y + 15, v[i] / 1000)
                y += 24
            }
            printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"720\" height=\"%d\" font-family=\"monospace\" font-size=\"12\">\n", y + 10
            printf "<text x=\"10\" y=\"20\" font-weight=\"bold\">vhost-xdp lab 6: packets per second at the receiver (median)</text>\n"
            printf "%s</svg>\n", out
        }' >"$1"
}

# === What the numbers say =========================================================

# against_claim DIR KIND_A HOST_A KIND_B HOST_B: where the ratio falls against the articles' 2-4x at
# every frame size
against_claim() {
    local size all=''
    for size in $SIZES; do all+=" $(ratio "$1" "$size" "$2" "$3" "$4" "$5")"; done
    echo "$all" | awk '{ lo = hi = $1; for (i = 2; i <= NF; i++) { if ($i < lo) lo = $i; if ($i > hi) hi = $i }
        if (hi < 2) print "below"; else if (lo > 4) print "above"; else if (lo >= 2 && hi <= 4) print "inside";
        else print "partly inside" }'
}
ratios() {
    local size out=''
    for size in $SIZES; do out+="${out:+, }$(ratio "$1" "$size" "$2" "$3" "$4" "$5")x at $size B"; done
    echo "$out"
}
# sender_bound: the peer -> guest cells that received 90% or more of what the peer offered: there the
# sender, not the path, set the rate.
sender_bound() {
    local size kind host m o
    for size in $SIZES; do
        while read -r kind host; do
            m=$(median rx "$kind" "$host" "$size") o=$(offered rx "$kind" "$host" "$size")
            awk -v m="$m" -v o="$o" 'BEGIN { exit !(o > 0 && m >= 0.9 * o) }' && printf '%s at %s B; ' "$(short "$kind" "$host")" "$size"
        done < <(cells)
    done
}

reading() {
    local sb
    lab_explain <<EOF
Guest -> peer: the articles' picture (virtio-pmd in the guest, vhost-xdp in the host) moved
$(ratios tx pmd vhost-xdp kernel tap) the packets of the guest kernel's virtio_net on QEMU's tap
path: $(against_claim tx pmd vhost-xdp kernel tap) the articles' 2-4x.  Peer -> guest: $(ratios rx pmd vhost-xdp kernel tap),
$(against_claim rx pmd vhost-xdp kernel tap) it.  The two halves apart: the host half alone (virtio_net on vhost-xdp against
virtio_net on the tap) $(ratios tx kernel vhost-xdp kernel tap) guest -> peer; the guest half alone (virtio-pmd
against virtio_net, both on the tap) $(ratios tx pmd tap kernel tap).

Which kernel each cell leaves out:
- virtio_net + tap: both.  The guest kernel's driver and stack handle every frame, then QEMU's own
  virtio-net device (its main thread) writes it to the tap with a system call, and the host kernel's
  bridge carries it to the veth.  Each kick the guest writes is an exit into QEMU.
- virtio_net + vhost-xdp: the host kernel's stack.  vhost-xdp's poll thread reads the guest's rings
  itself and hands the frames to an AF_XDP socket; the guest kernel still builds each one.
- virtio-pmd + tap: the guest kernel.  testpmd fills the rings from the guest's user space, but QEMU
  and the host kernel still move every frame.
- virtio-pmd + vhost-xdp: both, as in the articles.  testpmd polls the used ring and never takes an
  interrupt; vhost-xdp polls the avail ring and never waits for a kick (Lab 1, tests/test_pmd_guest.sh:
  no kick after the device starts, no interrupt at all).  One kernel step is left here: AF_XDP in copy
  mode on a veth, where the kernel copies each frame into the veth; a NIC with zero-copy AF_XDP (or
  DPDK's own driver) would leave that out too.
EOF
    if [ "$ACCEL" = tcg ]; then
        lab_explain <<EOF
These guests run under TCG, QEMU's emulator ($GUEST_ACCEL_WHY): each guest instruction
costs many host instructions, and each exit (a kick, a device register, an interrupt) far more than
under KVM.  Two things follow.  The virtio_net rows are the most distorted: the kernel driver pays
for every interrupt, and here interrupts are legacy INTx (vectors=0, the work-around for QEMU 7.2's
crash with MSI-X under TCG), delivered through an emulated interrupt controller; no KVM laptop runs
that way.  And every rate is bounded by the emulated guest CPU, so the host side matters less here
than it would with a fast guest.  These ratios show where the time goes under emulation; what a KVM
guest would show was not measured here.
EOF
    fi
    sb=$(sender_bound)
    [ -n "$sb" ] && lab_explain <<EOF
Peer -> guest, these cells received 90% or more of what the peer's sender offered: $sb there the
sender (testpmd on an AF_PACKET socket, on CPU $HCPU beside vhost-xdp's poll thread) set the rate, not the
path, and the cell says only "at least this fast".
EOF
    if [ -n "$VHOST_NET_WHY" ]; then
        lab_explain <<EOF
vhost-net, the articles' baseline, was not measured: $VHOST_NET_WHY.  vhost-net
takes the rings off QEMU's main thread into a kernel thread, so it is faster than the tap column here:
against it the ratios would be smaller.  This machine can therefore not confirm or refute the 2-4x
as the articles state it; the table shows each kernel's share of the cost.
EOF
    else
        lab_explain <<EOF
vhost-net was measured too: the articles' picture moved $(ratios tx pmd vhost-xdp kernel vhost-net) the packets of
virtio_net on vhost-net guest -> peer, $(against_claim tx pmd vhost-xdp kernel vhost-net) the articles' 2-4x.
EOF
    fi
    other_summary | lab_explain
}

# other_summary: what other programs took from this machine's CPUs during the samples.
other_summary() {
    awk -v n="$(nproc)" '{ s += $5; if ($5 > m) m = $5; c++ }
        END { if (c == 0) exit; printf "Other programs used %.0f%% of a CPU on average during the samples (at most %.0f%%, of %d CPUs)", s / c, m, n
              if (m > 25) printf ": the machine was busy and the\nrates are disturbed; run the lab again when it is idle (uptime, top) before trusting them.\n"
              else printf ": the rates were measured\non a quiet machine.\n" }' "$OTHER"
}

# === The lab ==========================================================================

lab_title "Lab 6: the articles' table - virtio-pmd and vhost-xdp against the kernel, both sides"
lab_explain <<EOF
Two guests from one image, one with the kernel's virtio_net, one with DPDK's virtio PMD (testpmd),
each with a port on vhost-xdp and a port on QEMU's own virtio-net + tap; every frame leaves through
the same veth to the same peer.  Guest -> peer (counted at the peer) and peer -> guest (counted by
the guest's driver), $ROUNDS round(s), ${SIZES// / and } B frames, $SECS s per cell, median of 1-s samples.
EOF

NCPU=$(nproc) LOAD0=$(cut -d' ' -f1 /proc/loadavg)
lab_say "host: $NCPU CPUs, load average $LOAD0; guest vCPUs on CPU 0, vhost-xdp's poll thread and the peer's sender on CPU $HCPU"
PEER_MAC=$(ip netns exec "$LAB_NS" cat "/sys/class/net/$LAB_PEER/address")
# The peer only counts.  Left alone, its kernel answers each UDP frame to its closed port 9 with an
# ICMP "port unreachable" (up to 1000 a second) and, to send those, asks by ARP broadcast who
# 10.0.0.2 is: broadcasts the bridge floods to every tap, where they pile up in the queue of a guest
# port no driver reads, until its next run starts.  No ICMP messages at all from this namespace:
lab_in_ns sysctl -q -w net.ipv4.icmp_msgs_per_sec=0 net.ipv4.icmp_msgs_burst=0 ||
    lab_say "(could not silence the peer's ICMP: a few of its frames may reach the guests)"
make_bridge
GUEST=${GUEST:-$TOP/tests/guest} guest_accel; ACCEL=$GUEST_ACCEL
if [ "$ACCEL" = kvm ]; then lab_say "guests: KVM ($GUEST_ACCEL_WHY)"
else lab_say "guests: TCG, QEMU's emulator (-cpu max, vectors=0): $GUEST_ACCEL_WHY"; fi
[ -n "$VHOST_NET_WHY" ] && lab_say "host sides: vhost-xdp, tap; no vhost-net: $VHOST_NET_WHY"

lab_step "Booting the two guests"
boot_guest kernel
boot_guest pmd
boot_done kernel
boot_done pmd
VX_PID=

lab_step "Measuring: $ROUNDS round(s) of every cell"
for ((round = 1; round <= ROUNDS; round++)); do
    for dir in tx rx; do
        for size in $SIZES; do
            lab_say "round $round of $ROUNDS, $(dir_label "$dir"), $size B:"
            while read -r kind host; do
                cell "$dir" "$kind" "$host" "$size" "$round"
                lab_say "    $(short "$kind" "$host"): median so far $(median "$dir" "$kind" "$host" "$size") pps"
            done < <(cells)
        done
    done
done

lab_step "Results: packets per second at the receiver (median of every round's 1-s samples)"
print_table
lab_explain <<EOF
(offered: what the peer's sender put on the veth, peer -> guest; other: the most CPU other programs
used during a cell's samples, in % of one CPU.)
EOF
lab_step "Chart"
print_chart
if [ -n "$SVG" ]; then write_svg "$SVG" && lab_say "  (the same as SVG: $SVG)"; fi
lab_step "What this shows"
reading

# Every cell moved packets, and every count agreed.
for dir in tx rx; do
    for size in $SIZES; do
        while read -r kind host; do
            [ "$(median "$dir" "$kind" "$host" "$size")" -gt 0 ] ||
                { lab_say "lab6: $dir $kind/$host at $size B: no packets measured"; FAILED=1; }
        done < <(cells)
    done
done
if grep -q ' differs$' "$COUNTS"; then
    lab_say "lab6: counts that differ: $(awk '$5 == "differs" { printf "%s %s/%s %s B; ", $1, $2, $3, $4 }' "$COUNTS")(the COUNT lines above)"
    FAILED=1
fi
[ "$FAILED" = 0 ] || lab_die "some cells were not measured, or their counts differ (see above)"
