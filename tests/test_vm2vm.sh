#!/usr/bin/env bash
# tests/test_vm2vm.sh - two vhost-user ports, VM-to-VM: one vhost-xdp, two sockets, two guests.
#
# vhost-xdp --socket A --socket B (no --loopback, no --iface): each device is the other's port, the
# OVS-DPDK "two dpdkvhostuser ports" case.  Two QEMU guests (tests/lib.sh start_guest, vxtest=ping),
# guest A 10.0.0.2 on socket A, guest B 10.0.0.3 (another MAC) on socket B, each pinging the other.
#   1. both guests get replies: ARP and ICMP cross from A's TX ring to B's RX ring and back;
#   2. --stats prints one line per device, each with packets moving;
#   3. guest B's QEMU is killed: vhost-xdp logs the disconnect and keeps running, guest A's pings
#      now fail, and what A sends towards B is dropped and counted on device 1;
#   4. guest B starts again on the same socket (reconnect=1): both guests get replies again;
#   5. SIGTERM: vhost-xdp exits 0 with per-device totals.
# Then, with DPDK testpmd (virtio_user) if installed: a txonly frontend on socket A and an rxonly one
# on socket B; B receives packets, and vhost-xdp's device 1 counts them as given to its guest.
#
# CPU: two TCG guests and one poll thread share 2 CPUs here, so the poll thread backs off when idle
# (--pmd-sleep 200) and is not pinned.  No timing asserts: deadlines only stop a hung test.
set -u
. "$(dirname "$0")/lib.sh"

require "VM-to-VM test with two QEMU guests" qemu-system-x86_64
[ -x "$VX" ] || { not_ok "vhost-xdp is built ($VX)"; done_testing; }

GUEST=${VX_GUEST_DIR:-$TESTS_DIR/guest}
[ -f "$GUEST/vmlinuz" ] || missing "test guest (run tests/build_guest.sh)"

dir=$(mktemp -d "${TMPDIR:-/tmp}/vx-vm2vm-$$.XXXXXX")
SOCK_A=$dir/a.sock SOCK_B=$dir/b.sock
VX_PID='' QEMU_A='' QEMU_B='' TX_PID='' RX_PID=''
cleanup() {
    exec 7>&- 6>&-
    stop_pid "$QEMU_A"; stop_pid "$QEMU_B"
    stop_pid "$TX_PID"; stop_pid "$RX_PID"
    stop_pid "$VX_PID"
    rm -rf "$dir" "$DPDK_RUNDIR/vx-v2v-tx-$$" "$DPDK_RUNDIR/vx-v2v-rx-$$"
}
on_exit cleanup

diag() {
    local f
    for f; do
        echo "# --- tail of ${f##*/}"
        tail -n 12 "$f" 2>/dev/null | tr -d '\r' | sed 's/^/#   /'
    done
}
# ping_counts SERIAL: "OK FAIL" from the guest's last "VXPING ok=N fail=M" (empty before one).
ping_counts() { tr -d '\r' 2>/dev/null <"$1" | sed -n 's/.*VXPING ok=\([0-9]*\) fail=\([0-9]*\).*/\1 \2/p' | tail -n 1; }
ping_ok()   { local c; c=$(ping_counts "$1"); echo "${c% *}"; }
ping_fail() { local c; c=$(ping_counts "$1"); echo "${c#* }"; }
# more_than SERIAL FIELD N: the guest's ok (or fail) count is above N.
more_than() { local v; v=$(ping_"$2" "$1"); [ -n "$v" ] && [ "$v" -gt "$3" ]; }
alive() { kill -0 "$1" 2>/dev/null; }
# last_drops DEV: device DEV's drop total in its last --stats line.
last_drops() { grep -a "stats: device $1 " "$dir/vx.log" | tail -n 1 | sed -n 's/.*| drops \([0-9]*\) .*/\1/p'; }

# --- usage errors first (exit 2, one line)
"$VX" --socket "$dir/x" --socket "$dir/y" --loopback >/dev/null 2>"$dir/err"; st=$?
check "two --socket with --loopback: usage error (exit $st)" \
    grep -q "two --socket: the devices are each other's port" "$dir/err" || diag "$dir/err"
[ "$st" = 2 ] && ok "... with exit status 2" || not_ok "... with exit status 2 (got $st)"
"$VX" --socket "$dir/x" --socket "$dir/y" --socket "$dir/z" --loopback >/dev/null 2>"$dir/err"; st=$?
check "three --socket and --loopback: usage error (exit $st)" grep -q "several --socket: .* drop --loopback" "$dir/err"
[ "$st" = 2 ] && ok "... with exit status 2" || not_ok "... with exit status 2 (got $st)"

# --- one vhost-xdp, two sockets
"$VX" --socket "$SOCK_A" --socket "$SOCK_B" --pmd-sleep 200 --stats 1 </dev/null >"$dir/vx.log" 2>&1 &
VX_PID=$!
check "vhost-xdp listens on both sockets" wait_for "two sockets" 10 test -S "$SOCK_A" -a -S "$SOCK_B" \
    || { diag "$dir/vx.log"; done_testing; }

start_guest "$dir" a "$SOCK_A" ping "" "" "vxip=10.0.0.2/24 vxpeer=10.0.0.3"; QEMU_A=$QEMU_PID
start_guest "$dir" b "$SOCK_B" ping "" "" "vxip=10.0.0.3/24 vxpeer=10.0.0.2" 52:54:00:12:34:57; QEMU_B=$QEMU_PID

# TCG boot of two guests on 2 shared CPUs: give them time.
if wait_for "guest A's replies from B" 120 more_than "$dir/a.serial" ok 2 &&
   wait_for "guest B's replies from A" 60 more_than "$dir/b.serial" ok 2; then
    ok "A (10.0.0.2) and B (10.0.0.3) ping each other: A $(ping_counts "$dir/a.serial"), B $(ping_counts "$dir/b.serial") (ok fail)"
else
    not_ok "A and B ping each other"; diag "$dir/vx.log" "$dir/a.serial" "$dir/b.serial"
fi
sleep 1.2   # one more --stats line
pkts_line() { grep -a "stats: device $1 (" "$dir/vx.log" | grep -v "from guest 0 pps" | grep -q "to guest [1-9]"; }
check "--stats: a line per device, packets moving on both" eval 'pkts_line 0 && pkts_line 1' \
    || diag "$dir/vx.log"

# --- guest B goes away: A is cut off, vhost-xdp keeps serving
stop_pid "$QEMU_B"; QEMU_B=''
check "vhost-xdp sees B's frontend disconnect" wait_for "disconnect" 10 grep -q "frontend disconnected from $SOCK_B;" "$dir/vx.log"
fail0=$(ping_fail "$dir/a.serial"); fail0=${fail0:-0}
drops0=$(last_drops 1); drops0=${drops0:-0}
check "with B gone, A's pings fail (fail was $fail0)" wait_for "A's failures" 30 more_than "$dir/a.serial" fail $((fail0 + 1))
drops_up() { local d; d=$(last_drops 1); [ -n "$d" ] && [ "$d" -gt "$drops0" ]; }
check "A's frames towards B are dropped and counted on device 1 (was $drops0)" wait_for "drops" 10 drops_up \
    || diag "$dir/vx.log"
check "vhost-xdp still running" alive "$VX_PID"

# --- B comes back on the same socket
okA=$(ping_ok "$dir/a.serial")
start_guest "$dir" b2 "$SOCK_B" ping "" "" "vxip=10.0.0.3/24 vxpeer=10.0.0.2" 52:54:00:12:34:57; QEMU_B=$QEMU_PID
if wait_for "B's replies again" 120 more_than "$dir/b2.serial" ok 2 &&
   wait_for "A's replies again" 30 more_than "$dir/a.serial" ok $((okA + 1)); then
    ok "B restarted: both get replies again: A $(ping_counts "$dir/a.serial"), B $(ping_counts "$dir/b2.serial")"
else
    not_ok "B restarted: both get replies again"; diag "$dir/vx.log" "$dir/a.serial" "$dir/b2.serial"
fi
stop_pid "$QEMU_A"; QEMU_A=''
stop_pid "$QEMU_B"; QEMU_B=''

# --- clean exit with per-device totals
kill -TERM "$VX_PID"; wait "$VX_PID"; st=$?; VX_PID=''
check "SIGTERM: vhost-xdp exits 0 (got $st)" test "$st" = 0
check "exit totals per device" eval 'grep -aq "exit: device 0 (.*): from guest [1-9]" "$dir/vx.log" &&
                                     grep -aq "exit: device 1 (.*): from guest [1-9]" "$dir/vx.log"' \
    || diag "$dir/vx.log"
grep -a "exit:\|stats: device" "$dir/vx.log" | tail -n 4 | sed 's/^/# /'

# --- DPDK: txonly on A, rxonly on B
if ! need_cmd dpdk-testpmd "VM-to-VM with two virtio_user frontends"; then done_testing; fi
: >"$dir/vx2.log"
"$VX" --socket "$SOCK_A" --socket "$SOCK_B" --stats 1 </dev/null >"$dir/vx2.log" 2>&1 &
VX_PID=$!
wait_for "two sockets" 10 test -S "$SOCK_A" -a -S "$SOCK_B" || { not_ok "vhost-xdp listens (DPDK run)"; done_testing; }
mkfifo "$dir/rx.in" "$dir/tx.in"
exec 6<>"$dir/rx.in" 7<>"$dir/tx.in"
testpmd() { # testpmd NAME SOCK MODE FIFO-FD CPU
    dpdk-testpmd --lcores "0@$5,1@$5" --no-huge -m 256 --no-pci --file-prefix="vx-v2v-$1-$$" \
        --vdev "net_virtio_user0,path=$2,queues=1" -- -i --nb-cores=1 --total-num-mbufs=16384 \
        --forward-mode="$3" <&"$4" >"$dir/$1.log" 2>&1 &
}
testpmd rx "$SOCK_B" rxonly 6 $(($(nproc) > 1 ? 1 : 0)); RX_PID=$!
testpmd tx "$SOCK_A" txonly 7 0; TX_PID=$!
both_up() { [ "$(grep -ac 'frontend connected' "$dir/vx2.log")" -ge 2 ]; }
wait_for "both testpmd connected" 30 both_up || diag "$dir/vx2.log"
sleep 2
echo "start" >&6; echo "start" >&7
sleep 3
printf 'stop\nshow port stats all\nquit\n' >&7
wait_for "the txonly testpmd to exit" 20 eval '! alive "$TX_PID"'
sleep 1     # the receiver empties B's RX ring
printf 'stop\nshow port stats all\nquit\n' >&6
wait_for "testpmd exits" 20 eval '! alive "$TX_PID" && ! alive "$RX_PID"'
wait "$TX_PID" "$RX_PID" 2>/dev/null; TX_PID='' RX_PID=''
rx=$(grep -a "RX-packets:" "$dir/rx.log" | tail -n 1 | awk '{print $2}')
tx=$(grep -a "TX-packets:" "$dir/tx.log" | tail -n 1 | sed -n 's/.*TX-packets: *\([0-9]*\).*/\1/p')
kill -TERM "$VX_PID"; wait "$VX_PID"; VX_PID=''
grep -a "exit:" "$dir/vx2.log" | sed 's/^/# /'
if [ -n "$rx" ] && [ "$rx" -gt 0 ]; then
    ok "testpmd txonly on A -> rxonly on B: B received $rx packets (A sent ${tx:-?})"
else
    not_ok "testpmd txonly on A -> rxonly on B: B received ${rx:-nothing}"; diag "$dir/vx2.log" "$dir/rx.log" "$dir/tx.log"
fi
given=$(sed -n 's/.*exit: device 1 (.*): from guest [0-9]* packets, to guest \([0-9]*\) packets.*/\1/p' "$dir/vx2.log")
check "what device 1 gave its frontend ($given) is what B's testpmd received (${rx:-?})" test "${given:-x}" = "${rx:-y}"
done_testing
