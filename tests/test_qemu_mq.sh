#!/usr/bin/env bash
# tests/test_qemu_mq.sh - multiqueue virtio-net (VIRTIO_NET_F_MQ, virtio 1.2 §5.1.6.5.5) with real Linux
# guests: two QEMU guests, each with two CPUs and two queue pairs, on one vhost-xdp in VM-to-VM mode.
#
#   vhost-xdp --socket A --socket B --queues 2
#   QEMU -smp 2 -netdev vhost-user,...,queues=2 -device virtio-net-pci,...,mq=on     (twice)
#
# In VM-to-VM mode queue pair k of A is linked to queue pair k of B (pmd_loop.c, pmd_vm2vm_pair): what A
# sends on its TX queue k arrives on B's RX queue k.  Linux's virtio_net opens min(queue pairs, CPUs)
# pairs and maps CPU i to TX queue i (XPS), so the guests (tests/build_guest.sh, vxtest=mqping) ping each
# other with one ping pinned to CPU 0, then one pinned to CPU 1, and print their per-queue counters
# (ethtool -S's rx_queue_N_packets / tx_queue_N_packets, through the guest's /bin/ethstats).
# Asserts:
#   1. both guests negotiated VIRTIO_NET_F_MQ (feature bit 22) and have 2 TX and 2 RX queues;
#   2. both guests get replies to their pings from CPU 0 and from CPU 1;
#   3. in each guest, rx_queue_0/1_packets and tx_queue_0/1_packets are all > 0;
#   4. --stats prints a line per queue pair of each device;
#   5. vhost-xdp's exit lines, per device and queue pair: from guest and to guest > 0; what it took from a
#      guest's queue pair is at least what that guest's driver counts as sent there (the driver counts a
#      packet when vhost-xdp has given its buffer back), and what it gave a guest at least what the guest
#      counts as received; and the k <-> k link exactly: A's pair k "from guest" = B's pair k "to guest"
#      + B's pair k drops, and the other way round (every packet taken from one guest's TX ring k is put
#      on the other's RX ring k or counted as dropped there; TX rings drop nothing from a sane guest).
#
# CPU: two TCG guests with two vCPUs each and a poll thread share the 2 CPUs here: the poll thread backs
# off when idle (--pmd-sleep 200).  Measured here: about 10 s (each guest reaches userspace in 2-3 s).  No timing asserts: deadlines only stop
# a hung test.
set -u
. "$(dirname "$0")/lib.sh"

require "multiqueue test with two QEMU guests" qemu-system-x86_64
[ -x "$VX" ] || { not_ok "vhost-xdp is built ($VX)"; done_testing; }
GUEST=${VX_GUEST_DIR:-$TESTS_DIR/guest}

dir=$(mktemp -d "${TMPDIR:-/tmp}/vx-qemu-mq-$$.XXXXXX")
SOCK_A=$dir/a.sock SOCK_B=$dir/b.sock
VX_PID='' QEMU_A='' QEMU_B=''
cleanup() {
    stop_pid "$QEMU_A"; stop_pid "$QEMU_B"
    stop_pid "$VX_PID"
    rm -rf "$dir"
}
on_exit cleanup

diag() {
    local f
    for f; do
        echo "# --- ${f##*/}: guest lines and tail"
        { tr -d '\r' <"$f" | grep -a 'VX' | grep -av 'VXMQPING\|VXQSTAT'; tail -n 8 "$f"; } 2>/dev/null |
            tr -d '\r' | sed 's/^/#   /'
    done
}
alive() { kill -0 "$1" 2>/dev/null; }
# last SERIAL TAG: the guest's last complete TAG line, without the tag.
last() { tr -d '\r' 2>/dev/null <"$1" | grep -a "^$2 " | tail -n 1 | sed "s/^$2 //"; }
# field LINE NAME: the number after NAME= in LINE (empty if absent).
field() { sed -n "s/.*\\(^\\| \\)$2=\\([0-9]*\\).*/\\2/p" <<<"$1"; }
# pings_ok SERIAL N: the guest has more than N replies from each of CPU 0 and CPU 1.
pings_ok() {
    local l a b
    l=$(last "$1" VXMQPING) a=$(field "$l" ok) b=${l#*cpu1 }
    b=$(field "$b" ok)
    [ -n "$a" ] && [ -n "$b" ] && [ "$a" -gt "$2" ] && [ "$b" -gt "$2" ]
}

# === 0. The guest (with /bin/ethstats and vxtest=mqping) ===
if "$TESTS_DIR/build_guest.sh" "$GUEST" 2>"$dir/build.log"; then
    ok "guest kernel + initramfs built ($GUEST)"
else
    not_ok "build the guest (tests/build_guest.sh)"; sed 's/^/#   /' "$dir/build.log"; done_testing
fi

# === 1. One vhost-xdp, two sockets, two queue pairs each ===
"$VX" --socket "$SOCK_A" --socket "$SOCK_B" --queues 2 --pmd-sleep 200 --stats 2 </dev/null >"$dir/vx.log" 2>&1 &
VX_PID=$!
check "vhost-xdp --queues 2 listens on both sockets" wait_for "two sockets" 10 test -S "$SOCK_A" -a -S "$SOCK_B" ||
    { sed 's/^/#   /' "$dir/vx.log"; done_testing; }

t0=$SECONDS
GUEST_SMP=2 GUEST_NETDEV_OPTS=,queues=2 start_guest "$dir" a "$SOCK_A" mqping ,mq=on "" \
    "vxip=10.0.0.2/24 vxpeer=10.0.0.3"
QEMU_A=$QEMU_PID
GUEST_SMP=2 GUEST_NETDEV_OPTS=,queues=2 start_guest "$dir" b "$SOCK_B" mqping ,mq=on "" \
    "vxip=10.0.0.3/24 vxpeer=10.0.0.2" 52:54:00:12:34:57
QEMU_B=$QEMU_PID
echo "# guests run under $GUEST_ACCEL: $GUEST_ACCEL_WHY"

# === 2. MQ negotiated, two queues each ===
if wait_for "both guests' VXQUEUES line" 120 eval 'last "$dir/a.serial" VXQUEUES | grep -q . &&
                                                   last "$dir/b.serial" VXQUEUES | grep -q .'; then
    for g in a b; do
        bits=$(guest_features "$dir/$g.serial") queues=$(last "$dir/$g.serial" VXQUEUES)
        echo "# guest $g: VXFEATURES $bits; VXQUEUES $queues; VXXPS $(last "$dir/$g.serial" VXXPS)"
        # VIRTIO_NET_F_MQ is bit 22 (virtio 1.2 §5.1.3); character i of VXFEATURES is bit i.
        check "guest $g negotiated VIRTIO_NET_F_MQ (feature bit 22 = ${bits:22:1})" test "${bits:22:1}" = 1 ||
            diag "$dir/$g.serial"
        check "guest $g has two TX and two RX queues ($queues)" test "$queues" = "tx=2 rx=2"
    done
else
    not_ok "both guests brought eth0 up"; diag "$dir/a.serial" "$dir/b.serial"; sed 's/^/#   /' "$dir/vx.log"
    done_testing
fi

# === 3. Replies from both CPUs, in both guests ===
if wait_for "replies to A's pings from both CPUs" 90 pings_ok "$dir/a.serial" 2 &&
   wait_for "replies to B's pings from both CPUs" 60 pings_ok "$dir/b.serial" 2; then
    ok "A and B ping each other from CPU 0 and CPU 1: A $(last "$dir/a.serial" VXMQPING); B $(last "$dir/b.serial" VXMQPING) (after $((SECONDS - t0)) s)"
else
    not_ok "A and B ping each other from CPU 0 and CPU 1"; diag "$dir/a.serial" "$dir/b.serial"
    sed 's/^/#   /' "$dir/vx.log"
fi
sleep 2.5   # a --stats line with both guests' traffic in it

# Stop the guests and the backend; each guest's last VXQSTAT line was printed while everything ran.
declare -A G
for g in a b; do
    q=$(last "$dir/$g.serial" VXQSTAT)
    echo "# guest $g: $q"
    for k in 0 1; do
        G[$g,rx$k]=$(field "$q" "rx_queue_${k}_packets") G[$g,tx$k]=$(field "$q" "tx_queue_${k}_packets")
    done
done
stop_pid "$QEMU_A"; QEMU_A=''
stop_pid "$QEMU_B"; QEMU_B=''
kill -TERM "$VX_PID"; wait "$VX_PID"; st=$?; VX_PID=''
check "SIGTERM: vhost-xdp exits 0 (got $st)" test "$st" = 0

# === 4. The guests' per-queue counters ===
for g in a b; do
    t="${G[$g,tx0]:-?} ${G[$g,tx1]:-?} ${G[$g,rx0]:-?} ${G[$g,rx1]:-?}"
    check "guest $g: every queue carried packets: tx_queue_0/1_packets, rx_queue_0/1_packets = $t" \
        eval '[[ "$t" =~ ^[1-9][0-9]*\ [1-9][0-9]*\ [1-9][0-9]*\ [1-9][0-9]*$ ]]' || diag "$dir/$g.serial"
done

# === 5. vhost-xdp's per-queue-pair lines ===
grep -a 'queue pair' "$dir/vx.log" | tail -n 8 | sed 's/^/# /'
stats_line() { grep -aq "stats: device $1 (.*): queue pair $2: from guest" "$dir/vx.log"; }
check "--stats: a line per queue pair of each device" \
    eval 'stats_line 0 0 && stats_line 0 1 && stats_line 1 0 && stats_line 1 1'
# X[dev,pair,from|to|drops] from "exit: device D (PATH): queue pair K: from guest N packets, to guest M packets, X drops"
declare -A X
while read -r d k from to drops; do
    X[$d,$k,from]=$from X[$d,$k,to]=$to X[$d,$k,drops]=$drops
done < <(sed -n 's/.*exit: device \([01]\) (.*): queue pair \([01]\): from guest \([0-9]*\) packets, to guest \([0-9]*\) packets, \([0-9]*\) drops.*/\1 \2 \3 \4 \5/p' "$dir/vx.log")
for d in 0 1; do
    g=$([ $d = 0 ] && echo a || echo b) o=$((1 - d))
    for k in 0 1; do
        from=${X[$d,$k,from]:-} to=${X[$d,$k,to]:-} gtx=${G[$g,tx$k]:-} grx=${G[$g,rx$k]:-}
        check "device $d (guest $g) queue pair $k: from guest ${from:-?} >= the guest's tx_queue_${k}_packets ${gtx:-?} > 0" \
            eval 'isnum "$from" && isnum "$gtx" && [ "$gtx" -gt 0 ] && [ "$from" -ge "$gtx" ]'
        check "device $d (guest $g) queue pair $k: to guest ${to:-?} >= the guest's rx_queue_${k}_packets ${grx:-?} > 0" \
            eval 'isnum "$to" && isnum "$grx" && [ "$grx" -gt 0 ] && [ "$to" -ge "$grx" ]'
        oto=${X[$o,$k,to]:-} odrops=${X[$o,$k,drops]:-}
        check "queue pair $k is one link: device $d from guest ${from:-?} = device $o to guest ${oto:-?} + drops ${odrops:-?}" \
            eval 'isnum "$from" && isnum "$oto" && isnum "$odrops" && [ "$from" -eq $((oto + odrops)) ]'
    done
done
echo "# run time $((SECONDS - t0)) s from the guests' start"
done_testing
