#!/bin/sh
# tests/guest_pmd_init.sh - /init of the virtio-pmd guest (tests/build_guest.sh --pmd puts it in the
# image, with KERNEL_MODULES replaced by the kernel guest's module list).  Busybox sh; runs as PID 1.
#
# The guest's virtio-net PCI devices are its "ports", numbered in PCI order (give them addr= on QEMU's
# -device so the order is yours).  vxdrv= on the kernel command line picks who drives them:
#   vxdrv=pmd (default)  DPDK's virtio poll-mode driver in user space: every port is handed to
#                        uio_pci_generic (so virtio_pci never sees it) and each run starts dpdk-testpmd
#                        on one port, on 2 MiB hugepages mounted in the guest (vxhuge=N pages, 64);
#   vxdrv=kernel         the kernel's own virtio_net on every port (eth0, eth1, ... in port order), up,
#                        no address, IPv6 off (so the guest sends nothing of its own).
# A run is "MODE PORT SIZE": MODE is testpmd's forwarding mode (io, txonly, rxonly, macswap, ...; the
# kernel driver knows txonly, sent by pktgen, and rxonly, counted at eth's rx_packets); SIZE the bytes
# per frame, without the FCS.  Frames sent are UDP 10.0.0.2:9 -> 10.0.0.1:9 to DSTMAC (default: testpmd's
# 02:00:00:00:00:00, pktgen's broadcast).  In io mode testpmd first sends vxtxfirst=N bursts of 32
# (default 4) that then circulate.  A run starts from the kernel command line
#   vxpmd=MODE [vxport=P] [vxsize=SIZE] [vxsecs=S] [vxdstmac=MAC]   (S = 0, the default: until "stop")
# and, with vxctl=ttyS1 (QEMU's second -serial, e.g. a pipe the host writes to), from commands, one a
# line:
#   run MODE PORT SIZE [SECS [DSTMAC]]    start a run (SECS > 0: stop it after SECS, then read on)
#   stop                                   stop the run
#   quit                                   stop the run, power off
# The console (ttyS0) carries lines with a stable prefix for the host to parse:
#   VXPORTS drv=D n=N BDF...        the ports found;   VXREADY up=SECONDS   set up, ready for runs
#   VXCMD LINE                      a command as read
#   VXRUN started drv=D mode=M port=P size=S up=SECONDS
#   VXCOUNT up=SECONDS port=P rx=N tx=M rx_pps=R tx_pps=S    about once a second during a run: the
#                                  driver's counters since the run started (testpmd's port statistics,
#                                  or eth's) and its rates
#   VXRUN end drv=D mode=M port=P size=S rx=N tx=M ...   the run's totals (testpmd: its forward
#                                            statistics, with rx_dropped=, tx_dropped=; kernel: pktgen's
#                                            sent=, eth's tx_dropped=)
#   VXERROR WHAT                    something failed (VXLOG lines: the end of testpmd's log)
#   VXBYE                           "quit": powering off
# testpmd's own output goes to /tmp/testpmd.log (every character on the emulated UART costs the guest
# CPU time).  Used by tests/test_pmd_guest.sh and labs/lab6-table.sh, through tests/lib.sh.
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

drv=pmd mode= port=0 size=64 secs=0 dstmac= txfirst=4 huge=64 ctl=
for arg in $(cat /proc/cmdline); do
    case $arg in
    vxdrv=*)     drv=${arg#vxdrv=} ;;
    vxpmd=*)     mode=${arg#vxpmd=} ;;
    vxport=*)    port=${arg#vxport=} ;;
    vxsize=*)    size=${arg#vxsize=} ;;
    vxsecs=*)    secs=${arg#vxsecs=} ;;
    vxdstmac=*)  dstmac=${arg#vxdstmac=} ;;
    vxtxfirst=*) txfirst=${arg#vxtxfirst=} ;;
    vxhuge=*)    huge=${arg#vxhuge=} ;;
    vxctl=*)     ctl=${arg#vxctl=} ;;
    esac
done

up() { cut -d' ' -f1 /proc/uptime; }
load() { for m; do [ -d /sys/module/$m ] || insmod /lib/modules/$m.ko || echo "VXERROR insmod $m failed"; done; }

# The ports: virtio-net PCI functions (vendor 0x1af4; device 0x1000 transitional, 0x1041 modern), in
# PCI address order.
ports=
for d in /sys/bus/pci/devices/*; do
    [ "$(cat $d/vendor)" = 0x1af4 ] || continue
    case $(cat $d/device) in 0x1000|0x1041) ports="$ports ${d##*/}" ;; esac
done
port_bdf() { echo $ports | cut -d' ' -f$(($1 + 1)); }
# port_if P: the kernel driver's interface for port P
port_if() { ls /sys/bus/pci/devices/$(port_bdf $1)/virtio*/net 2>/dev/null | head -n 1; }

# virtio-pmd: uio_pci_generic gives user space the device's registers (its BARs through sysfs) and
# interrupts; DPDK's PMD then drives the virtqueues itself.  uio_pci_generic has no table of devices
# it claims: driver_override names it for each port, drivers_probe binds it.  (vfio would need an
# IOMMU, or the no-IOMMU mode Debian's kernels are built without.)
setup_pmd() {
    load uio uio_pci_generic
    for bdf in $ports; do
        echo uio_pci_generic > /sys/bus/pci/devices/$bdf/driver_override
        echo $bdf > /sys/bus/pci/drivers_probe
        [ -e /sys/bus/pci/devices/$bdf/uio ] || echo "VXERROR $bdf: uio_pci_generic did not take it"
    done
    # DPDK's memory: 2 MiB pages, so that a packet buffer never straddles a page (the PMD hands the
    # device guest-physical addresses; EAL finds them in /proc/self/pagemap, "IOVA as PA").
    echo $huge > /proc/sys/vm/nr_hugepages
    mkdir -p /dev/hugepages
    mount -t hugetlbfs nodev /dev/hugepages
}
setup_kernel() {
    load KERNEL_MODULES
    p=0
    for bdf in $ports; do
        i=0
        while [ -z "$(port_if $p)" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        ifc=$(port_if $p)
        [ -n "$ifc" ] || { echo "VXERROR port $p ($bdf): no interface"; p=$((p + 1)); continue; }
        echo 1 > /proc/sys/net/ipv6/conf/$ifc/disable_ipv6
        ip link set $ifc up
        echo "VXFEATURES port=$p $ifc $(cat /sys/class/net/$ifc/device/features)"
        p=$((p + 1))
    done
}

# === A run: testpmd (drv=pmd), or pktgen / eth's counters (drv=kernel) ===
run_pid= rep_pid= run_desc=
counter() { cat /sys/class/net/$1/statistics/$2; }
# counts: "rx=N tx=M" of the current run so far
# report: once a second while a run lasts, "VXCOUNT up=T port=P rx=N tx=M rx_pps=R tx_pps=S": the
# driver's counters since the run started and its rates.  testpmd counts in its own memory: its rates
# are those of the statistics it prints (--stats-period 1; under TCG a block comes every 1-2 s: a line
# only when a new one came); the kernel's counters are read from sysfs, the rates computed here.
report() {
    local seen= line now prx=0 ptx=0 pup
    pup=$(up)
    while kill -0 $run_pid 2>/dev/null; do
        sleep 1
        if [ $drv = pmd ]; then
            line=$(awk '/RX-packets:/ { rx = $2 } /TX-packets:/ { tx = $2 } /Rx-pps:/ { rp = $2; n++ } /Tx-pps:/ { tp = $2 }
                        END { printf "%d rx=%d tx=%d rx_pps=%d tx_pps=%d", n, rx, tx, rp, tp }' /tmp/testpmd.log)
            [ "${line%% *}" = "$seen" ] && continue
            seen=${line%% *}
            echo "VXCOUNT up=$(up) port=$cur_port ${line#* }"
        else
            now=$(up) rx=$(($(counter $ifc rx_packets) - rx0)) tx=$(($(counter $ifc tx_packets) - tx0))
            echo "VXCOUNT up=$now port=$cur_port rx=$rx tx=$tx $(awk -v t=$now -v t0=$pup -v r=$rx -v r0=$prx -v x=$tx -v x0=$ptx \
                'BEGIN { d = t - t0; if (d <= 0) d = 1; printf "rx_pps=%d tx_pps=%d", (r - r0) / d, (x - x0) / d }')"
            pup=$now prx=$rx ptx=$tx
        fi
    done
}
# counts: "rx=N tx=M" of the kernel driver's run so far
counts() { echo "rx=$(($(counter $ifc rx_packets) - rx0)) tx=$(($(counter $ifc tx_packets) - tx0))"; }

pmd_start() {   # MODE PORT SIZE DSTMAC
    local bdf extra=
    bdf=$(port_bdf $2)
    [ -n "$bdf" ] || { echo "VXERROR no port $2"; return 1; }
    # io: nothing to forward until something arrives, so "start tx_first N" first sends N bursts.
    if [ $1 = io ]; then echo "start tx_first $txfirst" > /tmp/testpmd.cmds; extra=--cmdline-file=/tmp/testpmd.cmds; fi
    [ -n "$4" ] && extra="$extra --eth-peer=0,$4"
    # Two lcores on the one vCPU (testpmd needs a main lcore and a forwarding one; the main one
    # sleeps between its once-a-second statistics).
    dpdk-testpmd --lcores 0@0,1@0 --in-memory --no-telemetry -a $bdf -- \
        --nb-cores=1 --forward-mode=$1 --auto-start --stats-period 1 --total-num-mbufs=4096 \
        --txpkts=$3 --tx-ip=10.0.0.2,10.0.0.1 --tx-udp=9,9 $extra </dev/null >/tmp/testpmd.log 2>&1 &
    run_pid=$!
    i=0
    while ! grep -q 'packet forwarding - ports' /tmp/testpmd.log; do
        kill -0 $run_pid 2>/dev/null && [ $i -lt 900 ] || {
            echo "VXERROR testpmd did not start forwarding"; tail -n 15 /tmp/testpmd.log | sed 's/^/VXLOG /'
            kill -INT $run_pid 2>/dev/null; wait $run_pid; run_pid=; return 1; }
        sleep 0.1; i=$((i + 1))
    done
}
pmd_stop() {    # sets totals: testpmd's forward statistics on exit ("RX-packets: N RX-dropped: D ...")
    kill -INT $run_pid; wait $run_pid; rc=$?
    # (RX-error and RX-nombufs lines appear only when not 0; port_rx: the PMD's own count in the last
    # periodic statistics, before the stop.)
    totals=$(awk -v rc=$rc '/RX-packets:/ { rx = $2; rxd = $4 } /RX-missed:/ { prx = $2 } /TX-packets:/ { tx = $2; txd = $4 }
        /RX-error:/ { rxe = $2 } /RX-nombufs:/ { rxn = $2 }
        END { printf "rx=%d tx=%d rx_dropped=%d tx_dropped=%d rx_errors=%d rx_nombuf=%d port_rx=%d rc=%d",
              rx, tx, rxd, txd, rxe, rxn, prx, rc }' /tmp/testpmd.log)
    [ $rc = 0 ] || { echo "VXERROR testpmd exited with status $rc"; tail -n 15 /tmp/testpmd.log | sed 's/^/VXLOG /'; }
}

# pktgen (the kernel's packet generator, net/core/pktgen.c): a kernel thread hands frames straight to
# the driver, no socket and no system call per frame: the most the kernel driver can be given to send.
pg() { echo "$2" > /proc/net/pktgen/$1 || echo "VXERROR pktgen $1: '$2' refused"; }
kernel_start() {   # MODE PORT SIZE DSTMAC
    ifc=$(port_if $2)
    [ -n "$ifc" ] || { echo "VXERROR no port $2"; return 1; }
    # The link is down while a vhost-user backend is away (QEMU reconnects every second), and pktgen
    # stops at once on a device without carrier: wait for it.
    i=0
    while [ "$(cat /sys/class/net/$ifc/carrier)" != 1 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    rx0=$(counter $ifc rx_packets) tx0=$(counter $ifc tx_packets) txd0=$(counter $ifc tx_dropped)
    case $1 in
    rxonly) sleep 2147483647 & run_pid=$! ;;
    txonly)
        load pktgen
        pg kpktgend_0 rem_device_all; pg kpktgend_0 "add_device $ifc"
        pg $ifc "count 0"; pg $ifc "delay 0"
        pg $ifc "clone_skb 64"     # each frame built once, sent 64 times: measure the path, not the builder
        pg $ifc "pkt_size $3"; pg $ifc "src_min 10.0.0.2"; pg $ifc "src_max 10.0.0.2"; pg $ifc "dst 10.0.0.1"
        pg $ifc "udp_src_min 9"; pg $ifc "udp_src_max 9"; pg $ifc "udp_dst_min 9"; pg $ifc "udp_dst_max 9"
        pg $ifc "dst_mac ${4:-ff:ff:ff:ff:ff:ff}"
        echo start > /proc/net/pktgen/pgctrl &    # returns when stopped
        run_pid=$! ;;
    *) echo "VXERROR vxdrv=kernel runs txonly or rxonly, not $1"; return 1 ;;
    esac
}
run_start() {   # MODE PORT SIZE DSTMAC
    [ -z "$run_pid" ] || run_stop
    run_desc="drv=$drv mode=$1 port=$2 size=$3"
    cur_port=$2 cur_mode=$1
    ${drv}_start "$@" || return 1
    echo "VXRUN started $run_desc up=$(up)"
    report &
    rep_pid=$!
}
run_stop() {
    [ -n "$run_pid" ] || { echo "VXERROR no run to stop"; return; }
    kill $rep_pid 2>/dev/null; wait $rep_pid 2>/dev/null
    if [ $drv = pmd ]; then
        pmd_stop
        echo "VXRUN end $run_desc $totals up=$(up)"
    else
        if [ $cur_mode = txonly ]; then
            echo stop > /proc/net/pktgen/pgctrl; wait $run_pid
            sent=$(sed -n 's/.*Result: OK: [0-9]*(.*usec, \([0-9]*\) (.*/\1/p' /proc/net/pktgen/$ifc)
        else
            kill $run_pid; wait $run_pid 2>/dev/null; sent=0
        fi
        echo "VXRUN end $run_desc $(counts) sent=${sent:-0} tx_dropped=$(($(counter $ifc tx_dropped) - txd0)) up=$(up)"
    fi
    run_pid= rep_pid=
}

echo "VXPORTS drv=$drv n=$(echo $ports | wc -w)$ports"
setup_$drv
echo "VXREADY up=$(up)"
if [ -n "$mode" ]; then
    run_start $mode $port $size "$dstmac" && [ "$secs" -gt 0 ] && { sleep $secs; run_stop; }
fi
if [ -n "$ctl" ] && [ -c /dev/$ctl ]; then
    stty -F /dev/$ctl raw -echo
    exec 3</dev/$ctl
    while read -r cmd a1 a2 a3 a4 a5 <&3; do
        echo "VXCMD $cmd $a1 $a2 $a3 $a4 $a5"
        case $cmd in
        run)  run_start $a1 $a2 $a3 "$a5" && [ "${a4:-0}" -gt 0 ] && { sleep $a4; run_stop; } ;;
        stop) run_stop ;;
        quit) [ -z "$run_pid" ] || run_stop; echo "VXBYE"; poweroff -f ;;
        *)    echo "VXERROR unknown command '$cmd'" ;;
        esac
    done
    echo "VXERROR $ctl: end of input"
fi
# /init must never exit (the kernel would panic): wait for QEMU to be stopped.
while :; do sleep 3600; done
