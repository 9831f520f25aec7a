#!/usr/bin/env bash
# tests/test_migrate.sh - live migration of a QEMU 7.2 guest between two vhost-user ports of one
# vhost-xdp, while a peer pings it and streams UDP to it (issue 16).
#
#   vhost-xdp --socket A --socket B --iface HOST: a switch of two vhost-user ports and the AF_XDP
#   uplink on a veth whose peer (10.0.0.1) is in a netns made here.  The source QEMU runs the guest
#   (10.0.0.2, agent mode) on socket A; the destination QEMU, started with the same command line plus
#   -incoming unix:... -S, waits on socket B.  Both have a monitor on a pair of fifos (-monitor pipe:).
#   1. the peer pings the guest, 10 a second, and streams UDP datagrams to it (a closed port: the
#      guest's kernel checks each one's checksum, then counts it in NoPorts);
#   2. a migration to a sink, slowed down and cancelled (migrate_cancel): vhost-xdp logs, then stops
#      logging, and the guest answers on from the source;
#   3. `migrate -d unix:...` on the source's monitor; `info migrate` until "completed"; the destination
#      is still paused: both QEMUs dump the guest's memory and tests/memcompare compares the two,
#      the bytes vhost-xdp writes (used rings, RX buffers) apart from the guest's own (a page
#      vhost-xdp wrote and did not mark in the dirty log would differ); then it runs;
#   4. on the destination: a TCP transfer from the peer into the guest, checked byte for byte; the
#      pings go on (the loss is counted and printed, not judged, split into the pings sent while
#      the test kept the destination paused for the comparison and the migration's own: see
#      ping_split), the UDP stream still arrives, the guest's kernel counted no checksum error
#      (InCsumErrors 0) and logged no broken-ring message;
#   5. vhost-xdp's side: the source's connection logged (SET_LOG_BASE, LOG_ALL, the log mapped),
#      and port B learned the guest's MAC once the guest spoke from there.
#
# QEMU under TCG loses guest writes.  On this loaded 2-CPU machine a destination guest sometimes froze
# (spinning on a lock with interrupts off) or crashed (list corruption, "stack-protector: Kernel stack
# is corrupted", "output.0:id 1 is not a head!") right after the migration.  QEMU's own virtio-net on
# a tap, with no vhost-xdp anywhere, did the same (1 of 3 runs, the control), and in the one crash
# caught with the memory comparison below, 24 pages differed, among them the TX ring's descriptor
# table and the kernel's page tables: pages only the guest writes, never vhost-xdp.  With one TCG
# thread for all vCPUs (-accel tcg,thread=single, used here) it still happened: 3 of 15 runs with the
# TCP transfer, against 2 of 7 with QEMU's default.  Under KVM QEMU tracks the guest's writes in
# the kernel, and none of this applies.  It happened mostly with the TCP transfer filling the guest
# during the migration (none in 20 runs without it), so make test runs the gentle form (pings and
# UDP during the migration, TCP after it) and VX_MIGRATE_TCP=during is run by hand.  The lost writes
# fell in pages only the guest writes (kernel data, page tables, the TX descriptor table), so under
# TCG the comparison judges the bytes vhost-xdp writes (the used rings, or a packed ring's
# descriptors and device event area, and the RX buffers the guest posted) and prints the rest.
#
# What it proves, and what it cannot.  Equal memories prove that every byte vhost-xdp wrote before
# the source stopped reached the destination, in that run.  They cannot prove that every page was
# marked: QEMU marks the whole used ring when it stops the rings, and a page the guest wrote too is
# copied anyway, so an unmarked page differs only when we wrote it after QEMU's last copy of it (a
# packet that came in the last round) and the guest did not touch it since.  Such a buffer has
# mostly been read already: the guest posts a new buffer in its descriptor's place at once, so it
# is named only by the descriptor tables of a moment before, which the test copies about once a
# second while the migration runs (desc_sample).  A build that marks nothing (the marking switched
# off) differed so, and failed the judged comparison, in 1 run of 6 here, in a buffer only an
# earlier table named (none of 6 more with four times the UDP, nor 3 packed=on runs, differed in
# any byte: a packet must land in the few milliseconds between QEMU's last read of the log and the
# rings' stop); the page count at the end caught it every time.  tests/test_virtqueue, tests/test_packed and tests/test_protocol check the marks
# themselves, page by page.
#
# Why one vhost-xdp with two sockets, not two vhost-xdp on the uplink: an AF_XDP socket owns its
# queue of the interface and the XDP program on it, so a second vhost-xdp on the same veth could not
# bind while the first runs.  One switch with a port per QEMU is also what a host runs (OVS-DPDK:
# the destination's port is another vhostuser port of the same bridge).  The guest's MAC moves from
# port A to port B when the guest first sends from the destination: it announces itself at once
# (VIRTIO_NET_F_GUEST_ANNOUNCE: QEMU asks the driver, which sends gratuitous ARPs), or answers a
# ping: from the source's stop on, port A is down and the switch floods the frames for the guest
# (switch.c, "A port that is down"), so a ping reaches it as soon as the destination runs.
#
# Needs root (netns, veth, XDP), qemu-system-x86_64 and the test guest; a missing one skips (fails
# under CI=true).  Two TCG guests on 2 CPUs, one booted: about 1 minute.  No timing assertions:
# deadlines only stop a hung test.
set -u
. "$(dirname "$0")/lib.sh"

# One more attempt when QEMU, not vhost-xdp, broke the guest.  Under TCG QEMU loses a guest write
# now and then (above); once in three full CI runs it killed the destination guest, once in five
# its network (no frame in or out, a broken-ring line in its kernel log; QEMU's own virtio-net did
# the same in stop 21's control runs), each time with QEMU's pages differing and none of
# vhost-xdp's.  The test then runs once more from fresh guests: the first attempt runs in a child
# whose output is kept; when it ends with status 75 (only that case: a check after the memory
# comparison failed, memcompare found vhost-xdp's bytes equal and QEMU's not, TCG) its whole output
# is printed as comments, the evidence kept, and the second attempt is the one counted.  Any other
# result of the first attempt is passed on as it is.
if [ -z "${VX_MIGRATE_ATTEMPT:-}" ]; then
    attempt_out=$(mktemp "${TMPDIR:-/tmp}/vx-migrate-attempt.XXXXXX")
    VX_MIGRATE_ATTEMPT=1 "$0" "$@" >"$attempt_out" 2>&1; attempt_rc=$?
    if [ "$attempt_rc" = 75 ]; then
        echo "# the first attempt failed after QEMU (TCG) lost guest writes, none of vhost-xdp's; its output:"
        sed 's/^/#   1st: /' "$attempt_out"; rm -f "$attempt_out"
        echo "# the second attempt, from fresh guests:"
        VX_MIGRATE_ATTEMPT=2 exec "$0" "$@"
    fi
    cat "$attempt_out"; rm -f "$attempt_out"
    exit "$attempt_rc"
fi

require "live migration test with QEMU guests" qemu-system-x86_64 ip
[ -x "$VX" ] || { not_ok "vhost-xdp is built ($VX)"; done_testing; }
TCPCHECK=$TESTS_DIR/tcpcheck
[ -x "$TCPCHECK" ] || { not_ok "tests/tcpcheck is built (make)"; done_testing; }
MEMCOMPARE=$TESTS_DIR/memcompare
[ -x "$MEMCOMPARE" ] || { not_ok "tests/memcompare is built (make)"; done_testing; }
TCP_DURING=0; [ "${VX_MIGRATE_TCP:-after}" = during ] && TCP_DURING=1
N=${TCP_BYTES:-$([ "$TCP_DURING" = 1 ] && echo 268435456 || echo 16777216)}
if [ "$(id -u)" != 0 ]; then missing "migration test: needs root (netns, veth, XDP)"; fi
GUEST=${VX_GUEST_DIR:-$TESTS_DIR/guest}
guest_accel_migrating     # one TCG thread: see above
# VX_MIGRATE_NIC: options for both guests' virtio-net-pci, e.g. ",packed=on" or ",mrg_rxbuf=off"
NIC=${VX_MIGRATE_NIC:-}
[ -n "$NIC" ] && echo "# the guest's NIC: virtio-net-pci$NIC"
"$TESTS_DIR/build_guest.sh" "$GUEST" 2>/dev/null || missing "test guest (tests/build_guest.sh failed)"

ID=$$
dir=$(mktemp -d "${TMPDIR:-/tmp}/vx-migrate-$ID.XXXXXX")
NS=vx-mig-ns-$ID HOST=vxmh$ID PEER=vxmp$ID
GUEST_IP=10.0.0.2 GUEST_MAC=52:54:00:12:34:2a
VX_PID='' QSRC='' QDST='' PING_PID='' UDP_PID='' TCP_PID='' MON_PIDS='' NS_MADE=''
cleanup() {
    stop_pid "$UDP_PID"; stop_pid "$(cat "$dir/udp.pid" 2>/dev/null)"; stop_pid "$PING_PID"; stop_pid "$TCP_PID"
    stop_pid "$QSRC"; stop_pid "$QDST"
    stop_pid "$VX_PID"
    local p; for p in $MON_PIDS; do stop_pid "$p"; done
    if [ -n "$NS_MADE" ]; then ip link del "$HOST" 2>/dev/null; ip netns del "$NS" 2>/dev/null; fi
    [ -n "${VX_MIGRATE_KEEP:-}" ] && mkdir -p "$VX_MIGRATE_KEEP" &&
        find "$dir" -maxdepth 1 -type f -exec cp {} "$VX_MIGRATE_KEEP"/ \;     # not the fifos
    rm -rf "$dir"
}
on_exit cleanup

diag() { DIAG_LINES=25 diag_logs "$@"; }
in_ns() { ip netns exec "$NS" "$@"; }

# --- the uplink: a veth, its peer in a netns (lib.sh: make_uplink)
check "veth $HOST <-> $PEER (netns $NS, 10.0.0.1)" make_uplink || done_testing

# --- the switch: port 0 for the source, port 1 for the destination; --trace decodes the messages
SA=$dir/a.sock SB=$dir/b.sock LOG=$dir/vx.log
"$VX" --socket "$SA" --socket "$SB" --iface "$HOST" --pmd-sleep 50 --stats 1 --trace </dev/null >"$LOG" 2>&1 &
VX_PID=$!
check "vhost-xdp: a switch of 2 sockets and the uplink $HOST" \
    wait_for "the switch" 15 grep -q "port: an L2 learning switch of 2 vhost-user ports and the uplink $HOST" "$LOG" ||
    { diag "$LOG"; done_testing; }
wait_for "two sockets" 10 eval 'test -S "$SA" -a -S "$SB"'

# --- the monitors, src and dst (lib.sh: hmp_open, hmp, hmp_log)
monitor() { hmp_open "$dir" "$1" && MON_PIDS="$MON_PIDS $HMP_READER"; }
monitor src && monitor dst || { not_ok "monitor fifos"; done_testing; }

# --- the source, booted; the destination, the same machine waiting for the migration
GUEST_AGENT=$dir/src GUEST_QEMU_ARGS="-monitor pipe:$dir/src.mon" \
    start_guest "$dir" src "$SA" agent "$NIC" "" "vxip=$GUEST_IP/24" "$GUEST_MAC"; QSRC=$QEMU_PID
wait_for "the source guest" 180 grep -aqs "VXAGENT ready" "$dir/src.serial" ||
    { not_ok "the source guest boots into agent mode"; diag "$dir/src.serial" "$dir/src.qemu.log" "$LOG"; done_testing; }
GUEST_AGENT=$dir/dst GUEST_QEMU_ARGS="-monitor pipe:$dir/dst.mon -incoming unix:$dir/mig.sock -S" \
    start_guest "$dir" dst "$SB" agent "$NIC" "" "vxip=$GUEST_IP/24" "$GUEST_MAC"; QDST=$QEMU_PID
check "the source guest booted on socket A; the destination QEMU waits on socket B (-incoming)" \
    wait_for "the destination's vhost-user connection" 30 grep -q "frontend connected on $SB" "$LOG" ||
    { diag "$dir/dst.qemu.log" "$LOG"; done_testing; }

CMD_ID=0
gcmd() {    # gcmd SIDE CMD [SECS]: a command for the guest, on the side that runs it
    CMD_ID=$((CMD_ID + 1))
    agent_cmd "$dir/$1.serial" "$dir/$1" "$CMD_ID" "$2" "${3:-60}"
}
counters() {    # counters SIDE: UDPC="noports indatagrams csumerrors", the guest's UDP counters
    gcmd "$1" 'echo VXUDP $(snmp Udp NoPorts) $(snmp Udp InDatagrams) $(snmp Udp InCsumErrors)' >/dev/null
    UDPC=$(tr -d '\r' <"$dir/$1.serial" | sed -n 's/.*VXUDP \([0-9]* [0-9]* [0-9]*\).*/\1/p' | tail -n 1)
}
pping() { local i; for i in 1 2 3; do in_ns busybox ping -c 1 -W 3 "$1" >/dev/null && return 0; done; return 1; }
check "the peer pings the guest on the source" pping "$GUEST_IP" || diag "$dir/src.serial" "$LOG"
if [ -n "$NIC" ]; then     # the layout asked for is the one the guest's driver took
    feat=$(guest_features "$dir/src.serial")
    want=''; case $NIC in *packed=on*) want="${want}RING_PACKED(34)=1 " ;; esac
    case $NIC in *mrg_rxbuf=off*) want="${want}MRG_RXBUF(15)=0 " ;; esac
    case $NIC in *guest_announce=off*) want="${want}GUEST_ANNOUNCE(21)=0" ;; esac
    check "the guest negotiated what virtio-net-pci$NIC asks: $want" eval \
        '{ [[ $NIC != *packed=on* ]] || [ "${feat:34:1}" = 1 ]; } && { [[ $NIC != *mrg_rxbuf=off* ]] || [ "${feat:15:1}" = 0 ]; } &&
         { [[ $NIC != *guest_announce=off* ]] || [ "${feat:21:1}" = 0 ]; } && [ -n "$feat" ]'
fi

# === 1. pings at 10/s and a UDP stream, from the peer
# 300 pings, 30 s: a cancelled migration first (3-5 s), then the real one (5-15 s here).  (A count,
# not a signal at the end: a background job of a script ignores SIGINT, which is what makes ping print
# its summary.)
counters src; read -r np0 nd0 ce0 <<<"$UDPC"
# Each line of ping's output is stamped with the time it came (busybox ping flushes each line), so
# that a lost ping can be placed in time (ping_split, below).
stamp() { local l; while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done; }
in_ns busybox ping -c 300 -i 0.1 -W 2 "$GUEST_IP" 2>&1 | stamp >"$dir/ping.out" &
PING_PID=$!
# 1000-byte datagrams to the discard port (closed in the guest), each numbered; about 50 a second,
# 3000 at most.  (Its pid in a file: `ip netns exec` may run it as a child of its own.)
in_ns bash -c "echo \$\$ >'$dir/udp.pid'; exec 3>/dev/udp/$GUEST_IP/9
    for ((i = 0; i < 3000; i++)); do printf '%08d%0992d' \$i 0 >&3 2>/dev/null; sleep 0.02; done" &
UDP_PID=$!
status() { hmp_migrate_status src; }

# === 2. a migration cancelled half way: to a sink (exec:cat), slowed to 4 MB/s so that it is still
# copying when migrate_cancel comes; logging goes on, then off again, and the source guest runs on
hmp src "migrate_set_parameter max-bandwidth 4M"
hmp src "migrate -d \"exec:cat >/dev/null\""
wait_for "dirty logging on" 30 grep -aq "a.sock: dirty logging on" "$LOG"
sleep 1
hmp src "migrate_cancel"
t0=$SECONDS st=''
while [ $((SECONDS - t0)) -lt 30 ]; do st=$(status); case $st in *cancelled*|*completed*|*failed*) break ;; esac; done
wait_for "dirty logging off" 20 grep -aq "a.sock: dirty logging off" "$LOG"
check "migrate_cancel: \"${st:-nothing}\"; vhost-xdp logged from LOG_ALL on to LOG_ALL off" eval \
    'grep -q cancelled <<<"$st" && grep -aq "a.sock: dirty logging on" "$LOG" && grep -aq "a.sock: dirty logging off" "$LOG"' ||
    diag "$dir/src.mon.log" "$LOG"
check "the source guest still answers the peer after the cancel" pping "$GUEST_IP"
hmp src "migrate_set_parameter max-bandwidth 1G"

# ring_areas: the source's rings as memcompare's arguments, INDEX:LAYOUT:NUM:DESC:DRIVER:DEVICE, from
# --trace: the ring's addresses in SET_VRING_ADDR with VHOST_VRING_F_LOG (flags=0x1: only the source
# logs) are QEMU's virtual addresses, turned into guest-physical ones through the memory table
# QEMU sent before (SET_MEM_TABLE's regions: gpa, size, uaddr); its size from SET_VRING_NUM, its
# layout from SET_FEATURES.  The used ring's (or device event area's) address must come out as the
# message's log= (QEMU logs the used ring at its guest-physical address): checked, a mismatch printed.
ring_areas() {
    local line regions='' layout=split i d a u l
    local -A num=() ring=()
    gpa_of() {      # gpa_of UADDR: through the regions, or nothing
        local g s r
        while read -r g s r; do
            (( $1 >= r && $1 - r < s )) && { printf '0x%x' $(( g + $1 - r )); return; }
        done <<<"$regions"
    }
    while IFS= read -r line; do
        case $line in
        *"<- SET_MEM_TABLE "*)
            regions=$(grep -o '{gpa=[^ ]* size=[^ ]* uaddr=[^ ]*' <<<"$line" | sed 's/{gpa=//; s/ size=/ /; s/ uaddr=/ /') ;;
        *"<- SET_FEATURES "*) layout=split; [[ $line == *RING_PACKED* ]] && layout=packed ;;
        *"<- SET_VRING_NUM "*)
            [[ $line =~ index=([0-9]+)\ num=([0-9]+) ]] && num[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]} ;;
        *"<- SET_VRING_ADDR "*" flags=0x1 desc="*)
            [[ $line =~ index=([0-9]+)\ flags=0x1\ desc=(0x[0-9a-f]+)\ avail=(0x[0-9a-f]+)\ used=(0x[0-9a-f]+)\ log=(0x[0-9a-f]+) ]] || continue
            i=${BASH_REMATCH[1]} l=${BASH_REMATCH[5]}
            d=$(gpa_of "${BASH_REMATCH[2]}") a=$(gpa_of "${BASH_REMATCH[3]}") u=$(gpa_of "${BASH_REMATCH[4]}")
            [ -n "$d" ] && [ -n "$a" ] && [ "$((u))" = "$((l))" ] ||
                echo "# ring $i: its used ring's address ${u:-not in the memory table} is not log=$l (SET_VRING_ADDR)" >&2
            ring[$i]="$i:$layout:${num[$i]:-0}:${d:-0}:${a:-0}:$l" ;;
        esac
    done < <(grep -a "trace: <- SET_\(MEM_TABLE\|FEATURES\|VRING_NUM\|VRING_ADDR\) " "$LOG")
    for i in $(printf '%s\n' "${!ring[@]}" | sort -n); do printf '%s ' "${ring[$i]}"; done
}
RINGS=$(ring_areas)
# desc_sample: a copy of each RX ring's descriptor table, from the source's memory, now (pmemsave; a
# 4 KiB file per ring), for memcompare: the guest replaces each buffer it has read with a new one
# at once, so the buffers vhost-xdp filled in the migration's last rounds are listed only in the
# tables of a moment before.  Taken before the migration and each time round the loop that waits
# for it, about once a second (at this test's 60 packets a second, each of the 256 buffers stays
# posted for 4 s or so; a TCP transfer during the migration goes through them much faster, and
# most are not seen).
TABLES='' NTABLE=0
desc_sample() {
    local r i layout num d rest
    for r in $RINGS; do
        IFS=: read -r i layout num d rest <<<"$r"
        [ $((i % 2)) = 0 ] || continue
        NTABLE=$((NTABLE + 1))
        hmp src "pmemsave $d $((16 * num)) \"$dir/desc.$i.$NTABLE\""
        TABLES="$TABLES $i=$dir/desc.$i.$NTABLE"
    done
}

# And a TCP transfer into the guest, checked byte for byte (tests/tcpcheck.c).  make test's run starts
# it on the destination, after the migration (16 MiB): the data path through the new port.  By hand,
# VX_MIGRATE_TCP=during starts it with the migration (256 MiB, 10-20 s here): the RX ring at full
# speed while the last round is copied, where a page written and not logged would show, and where
# QEMU under TCG loses guest writes most often (above).
tcp_start() {   # tcp_start SIDE: the guest on SIDE receives, the peer sends
    seed=$RANDOM
    gcmd "$1" "tcpcheck recv -t 120 5001 $N $seed &" >/dev/null
    wait_for "the guest's receiver" 30 grep -aq "VXTCP listening" "$dir/$1.serial"
    sleep 2
    in_ns "$TCPCHECK" send -t 120 "$GUEST_IP" 5001 "$N" "$seed" >"$dir/tcp-send.out" 2>&1 &
    TCP_PID=$!
}
[ "$TCP_DURING" = 1 ] && { tcp_start src; sleep 1; }

# === 3. migrate
desc_sample
# The downtime QEMU aims at: 100 ms, not its default 300 ms (3 pings at 10/s).  From the source's
# stop to the destination's start the guest runs nowhere, and what is sent to it then is lost
# whatever the backend does; an operator who cares sets this (libvirt: virsh
# migrate-setmaxdowntime).  QEMU's estimate is rough under TCG: it reported up to 460 ms at 300.
hmp src "migrate_set_parameter downtime-limit 100"
T_MIG=$EPOCHREALTIME
hmp src "migrate -d unix:$dir/mig.sock"
t0=$SECONDS st=''
while [ $((SECONDS - t0)) -lt 90 ]; do
    desc_sample
    st=$(status)
    case $st in *completed*|*failed*|*cancelled*) break ;; esac
    sleep 0.5
done
pinging=no; kill -0 "$PING_PID" 2>/dev/null && pinging=yes
answered0=$(grep -c "bytes from" "$dir/ping.out")
tcp_running=no; kill -0 "$TCP_PID" 2>/dev/null && tcp_running=yes
check "migrate: the source's monitor says \"${st:-nothing}\" after $((SECONDS - t0)) s" eval 'grep -q completed <<<"$st"' ||
    { diag "$dir/src.mon.log" "$dir/src.qemu.log" "$dir/dst.qemu.log" "$LOG"; done_testing; }
hmp_log src | grep -aE "^(total time|downtime|transferred ram|dirty sync count):" | tail -n 4 | sed 's/^/# /'
# The destination waits, paused (-S), with the memory the migration gave it; the source is stopped
# for good.  Every page must be the same on both: a page vhost-xdp wrote and did not mark in the log
# (or marked too late) would differ, and so would a guest write QEMU itself lost.  Both dumped with
# pmemsave (guest-physical 0 .. 256 MiB) and compared by tests/memcompare.c, which tells the bytes
# vhost-xdp may write ("ours": each ring's used ring, or a packed ring's descriptors and device
# event area, and every buffer an RX ring's descriptor table lists as device-writable, at the end or
# in the copies desc_sample took) from the rest ("others": the guest's own writes, which QEMU tracks
# itself).
memdump() {     # memdump SIDE: guest memory into SIDE.mem, once the monitor has answered
    local mem=$dir/$1.mem
    hmp "$1" "pmemsave 0 0x10000000 \"$mem\""; hmp "$1" "info version"
    wait_for "$1's memory dump" 60 eval "hmp_log $1 | grep -aq '^[0-9]*\\.[0-9]*\\.[0-9]'" &&
        [ "$(stat -c %s "$mem" 2>/dev/null)" = 268435456 ]
}
if memdump src && memdump dst; then
    # shellcheck disable=SC2086  # RINGS, TABLES: one argument each
    cmpout=$("$MEMCOMPARE" "$dir/src.mem" "$dir/dst.mem" $RINGS $TABLES); cmprc=$?
else
    cmpout='' cmprc=2
fi
ours=$(grep "^ours: " <<<"$cmpout") others=$(grep "^others: " <<<"$cmpout")
echo "# the source's rings (INDEX:LAYOUT:NUM:DESC:DRIVER:DEVICE, guest-physical): ${RINGS:-none found in --trace}"
grep -E "^(judged|note): " <<<"$cmpout" | sed "s/^/# memcompare ($NTABLE earlier descriptor tables): /"
# Judged under KVM: every byte.  Under TCG, QEMU itself loses guest writes now and then (above: a
# gentle run found two kernel pages differing by one byte each, 0x1967000 and 0x196d000, about 1 run
# in 20, with a guest that ran on): the guest's own bytes are printed, not judged; the bytes
# vhost-xdp may write are judged there too.
check "the destination's memory is the source's where vhost-xdp writes (used rings or packed descriptors, RX buffers): ${ours:-no comparison}" \
    eval '[ "$cmprc" = 0 ] && [ -n "$RINGS" ]' || echo "$cmpout" | sed 's/^/#   /'
if [ "$GUEST_ACCEL" = kvm ]; then
    check "the destination's memory is the source's everywhere else too: ${others:-no comparison}" \
        eval 'grep -q "^others: 0 differing" <<<"$others"'
else
    echo "# and everywhere else, ${others:-no comparison} (QEMU's: not judged under TCG)"
fi
grep -q "^ours: 0 differing" <<<"$ours" && grep -q "^others: 0 differing" <<<"$others" && rm -f "$dir/src.mem" "$dir/dst.mem"
T_CONT=$EPOCHREALTIME
FAILED_AT_COMPARISON=$TAP_FAILED
# finish: the end of the test from here on.  A check after the comparison failed, in the first
# attempt, under TCG, with vhost-xdp's bytes equal and QEMU's not: QEMU's loss, not ours, so the
# attempt asks for a second (above); otherwise the plan line and the exit status.
finish() {
    if [ "$TAP_FAILED" -gt "$FAILED_AT_COMPARISON" ] && [ "$VX_MIGRATE_ATTEMPT" = 1 ] && [ "$GUEST_ACCEL" != kvm ] &&
       grep -q "^ours: 0 differing" <<<"$ours" && grep -q "^others: [1-9]" <<<"$others"; then
        echo "# QEMU lost guest writes ($others) and a check after the migration failed: once more from fresh guests"
        exit 75
    fi
    done_testing
}
hmp dst "cont"
hmp dst "info status"
wait_for "the destination running" 20 eval 'hmp_log dst | grep -aq "VM status: running"'
check "the destination runs the guest" eval 'hmp_log dst | grep -aq "VM status: running"' ||
    diag "$dir/dst.mon.log" "$dir/dst.qemu.log"
# A destination guest that crashed or froze ends the test here, with its console and the state of its
# CPU, not with a minute's wait on every later command.
if ! check "the destination guest answers its agent" gcmd dst 'echo VXALIVE' 30; then
    hmp dst "info registers"; sleep 1
    hmp_log dst | grep -aE "^(RIP|RAX|RSP)=" | tail -n 3 | sed 's/^/#   /'
    tr -d '\r' <"$dir/dst.serial" | grep -av "^VX" | tail -n 30 | sed 's/^/#   /'
    finish
fi

# === 4. on the destination
[ "$TCP_DURING" = 1 ] || tcp_start dst
counters dst; read -r np1 nd1 ce1 <<<"$UDPC"
wait_for "the pings to end" 60 eval '! kill -0 "$PING_PID" 2>/dev/null'
wait "$PING_PID" 2>/dev/null; PING_PID=''
stop_pid "$UDP_PID"; UDP_PID=''; stop_pid "$(cat "$dir/udp.pid" 2>/dev/null)"
wait_for "the TCP transfer" 120 eval '! kill -0 "$TCP_PID" 2>/dev/null'
wait "$TCP_PID"; tst=$?; TCP_PID=''
r=$(cat "$dir/src.serial" "$dir/dst.serial" | tr -d '\r' | grep -a "VXTCP recv" | tail -n 1)
what=$([ "$TCP_DURING" = 1 ] && echo "through the migration (still sending when it completed: $tcp_running)" || echo "on the destination")
check "TCP peer -> guest $what: $N bytes, every one checked (sender $tst: $r)" \
    eval '[ "$tst" = 0 ] && grep -q "VXTCP recv ok bytes=$N " <<<"$r"' || { cat "$dir/tcp-send.out"; diag "$dir/dst.serial"; }
gcmd dst csum_errors >/dev/null
cs=$(tr -d '\r' <"$dir/dst.serial" | grep -a "VXCSUM" | tail -n 1)
check "no TCP or UDP checksum error in the guest ($cs)" eval 'grep -q "VXCSUM tcp=0 udp=0 " <<<"$cs"'
sleep 1
counters dst; read -r np2 nd2 ce2 <<<"$UDPC"
sent=$(sed -n 's/^[0-9.]* \([0-9]*\) packets transmitted.*/\1/p' "$dir/ping.out")
got=$(sed -n 's/.* \([0-9]*\) packets received.*/\1/p' "$dir/ping.out")
lost=$(( ${sent:-0} - ${got:-0} ))
answered1=$(grep -c "bytes from" "$dir/ping.out")
# Where the lost pings went.  The destination, started with -S, would have run the guest as soon as
# the migration completed; this test keeps it paused until both memories are dumped and compared
# (several seconds), and every ping sent meanwhile is lost for the test's sake.  That pause runs from
# the completion (the migrate command's time plus info migrate's "total time") to the `cont`.
# ping_split places each lost ping (icmp_seq k, not answered) in time: an answered one was sent at
# its line's stamp less its round trip, a lost one between its answered neighbours, 0.1 s apart.
#   paused: sent during the test's pause;
#   own:    the migration's own: sent from the migrate command to the destination's first answer
#           after the pause (the downtime QEMU reports, and until the switch moved the guest's MAC);
#   other:  any other time (the cancelled migration, the TCP transfer on the destination).
ping_split() {  # ping_split FILE START PAUSE_FROM PAUSE_TO: "PAUSED OWN OTHER SEQS" (counts; SEQS: own's)
    # (SEQS: each of the migration's own lost pings as icmp_seq(+-S s), S its time before the pause
    # began or after it ended.)
    awk -v start="$2" -v p0="$3" -v p1="$4" '
        / bytes from / && match($0, /seq=[0-9]+/) {
            k = substr($0, RSTART + 4, RLENGTH - 4) + 0; rtt = 0
            if (match($0, /time=[0-9.]+/)) rtt = substr($0, RSTART + 5, RLENGTH - 5) / 1000
            if (!(k in at)) at[k] = $1 - rtt
        }
        / packets transmitted/ { n = $2 }
        END {
            first = -1                  # the first answer sent after the pause
            for (k = 0; k < n; k++) if ((k in at) && at[k] > p1) { first = at[k]; break }
            prev = -1
            for (k = 0; k < n; k++) {
                if (k in at) { prev = k; continue }
                for (next_k = k + 1; next_k < n && !(next_k in at); next_k++) ;
                if (prev >= 0 && next_k < n) t = at[prev] + (at[next_k] - at[prev]) * (k - prev) / (next_k - prev)
                else if (prev >= 0) t = at[prev] + (k - prev) * 0.1
                else if (next_k < n) t = at[next_k] - (next_k - k) * 0.1
                else t = 0
                if (t >= p0 && t <= p1) paused++
                else if (t >= start && (first < 0 || t < first)) {
                    own++        # named with its time from the nearer end of the pause
                    seqs = seqs sprintf("%s%d(%+.2fs)", seqs == "" ? "" : ",", k, t < p0 ? t - p0 : t - p1)
                }
                else other++
            }
            printf "%d %d %d %s\n", paused, own, other, seqs == "" ? "-" : seqs
        }' "$1"
}
total_ms=$(hmp_log src | sed -n 's/^total time: \([0-9]*\) ms.*/\1/p' | tail -n 1)
downtime_ms=$(hmp_log src | sed -n 's/^downtime: \([0-9]*\) ms.*/\1/p' | tail -n 1)
T_DONE=$(awk -v t="$T_MIG" -v ms="${total_ms:-0}" 'BEGIN { printf "%.6f", t + ms / 1000 }')
read -r lost_paused lost_own lost_other own_seqs < <(ping_split "$dir/ping.out" "$T_MIG" "$T_DONE" "$T_CONT")
pause_s=$(awk -v a="$T_DONE" -v b="$T_CONT" 'BEGIN { printf "%.1f", b - a }')
echo "# pings at 10/s through the migration (and the TCP transfer): ${sent:-?} sent, ${got:-?} answered, $lost lost:" \
    "${lost_paused:-?} in the test's pause for the memory dumps (${pause_s} s), ${lost_own:-?} the migration's own" \
    "(icmp_seq ${own_seqs:-?}; downtime ${downtime_ms:-?} ms), ${lost_other:-?} at other times"
check "the pings went on through the migration: $((answered1 - answered0)) answered by the destination (of ${got:-0} of ${sent:-0}; $lost lost)" \
    eval '[ "$pinging" = yes ] && [ "${sent:-0}" = 300 ] && [ $((answered1 - answered0)) -ge 20 ]' || tail -n 3 "$dir/ping.out" | sed 's/^/#   /'
rx0=$(( ${np0:-0} + ${nd0:-0} )) rx1=$(( ${np1:-0} + ${nd1:-0} )) rx2=$(( ${np2:-0} + ${nd2:-0} ))
check "the UDP stream reached the guest before ($rx0 -> $rx1 datagrams by the migration's end) and on the destination after it ($rx1 -> $rx2)" \
    eval '[ "$rx1" -gt "$rx0" ] && [ "$rx2" -gt "$rx1" ]'
check "no UDP checksum error in the guest (InCsumErrors ${ce0:-?} before, ${ce2:-?} after)" \
    eval '[ -n "${ce2:-}" ] && [ "${ce2}" = "${ce0:-x}" ] && [ "$ce2" = 0 ]'
gcmd dst 'echo VXRINGMSG $(dmesg | grep -cE "is not a head|out of range|unexpected|vring")' >/dev/null
bad=$(tr -d '\r' <"$dir/dst.serial" | sed -n 's/.*VXRINGMSG \([0-9]*\).*/\1/p' | tail -n 1)
check "the guest's kernel logged no broken-ring message after the migration (${bad:-?} lines)" eval '[ "${bad:-1}" = 0 ]' ||
    { gcmd dst 'dmesg | grep -E "is not a head|out of range|unexpected|vring" | tail -n 5 | sed "s/^/VXRINGLINE /"' >/dev/null
      tr -d '\r' <"$dir/dst.serial" | grep -a "VXRINGLINE" | sed 's/^/#   /'; }

# === 5. vhost-xdp's side
check "the source's connection: SET_LOG_BASE decoded, the log mapped, LOG_ALL negotiated" eval \
    'grep -aq "trace: <- SET_LOG_BASE (6)" "$LOG" && grep -aq "dirty log mapped: " "$LOG" &&
     grep -a "trace: <- SET_FEATURES (2)" "$LOG" | grep -aq LOG_ALL' || diag "$LOG"
grep -aE "trace: <- SET_LOG_BASE|dirty log mapped" "$LOG" | head -n 2 | sed 's/^/# /'
# A guest without GUEST_ANNOUNCE cannot announce itself: the destination's QEMU asks the backend
# to (SEND_RARP, sent while the destination is still paused), and the switch sends the RARP from
# the guest's port once its rings run (switch.c, "SEND_RARP").
if [[ $NIC == *guest_announce=off* ]]; then
    check "no GUEST_ANNOUNCE: the destination's QEMU sent SEND_RARP, and the switch sent the RARP from port 1" eval \
        'grep -aq "trace: <- SEND_RARP (19) .*mac=$GUEST_MAC" "$LOG" && grep -aq "RARP from $GUEST_MAC sent on queue pair 0" "$LOG"' ||
        grep -a "RARP" "$LOG" | tail -n 3 | sed 's/^/#   /'
fi
sleep 1.2
line=$(grep -a "stats: switch port 1 " "$LOG" | tail -n 1)
check "port 1 (socket B) learned the guest's MAC from the destination: $line" eval 'grep -Eq "learned [1-9]|moved [1-9]" <<<"$line"'
hmp src quit
stop_pid "$QSRC"; QSRC=''; stop_pid "$QDST"; QDST=''
kill -TERM "$VX_PID"; wait "$VX_PID"; st=$?; VX_PID=''
check "SIGTERM: vhost-xdp exits 0 (got $st)" test "$st" = 0
marks=$(grep -a "exit: device 0 .*: dirty log: " "$LOG" | sed -n 's/.*dirty log: \([0-9]*\) pages marked.*/\1/p')
check "the source's port marked ${marks:-no} pages in QEMU's dirty log (the exit line)" eval '[ "${marks:-0}" -gt 0 ]'
finish
