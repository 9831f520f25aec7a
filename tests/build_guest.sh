#!/usr/bin/env bash
# tests/build_guest.sh [OUTDIR] - build the tiny QEMU guest the tests and `make demo` boot.
# tests/build_guest.sh --pmd [OUTDIR] - the virtio-pmd guest instead (its own part, "The virtio-pmd image").
#
# OUTDIR (default tests/guest, git-ignored) gets:
#   vmlinuz             Debian 12's 6.1 cloud kernel, downloaded and unpacked, never installed
#   initramfs.cpio.gz   busybox-static + the virtio-net modules + /init (below)
#   kernel/             the unpacked kernel pieces, kept so a rebuild does not download again
#
# The guest's /init reads `vxtest=MODE` from the kernel command line:
#   vxtest=loopback   eth0 up as 10.0.0.2/24, then forever: every 0.5 s send an ARP request and a
#                     ping to 10.0.0.1 (a loopback backend sends them straight back to the guest)
#                     and print "VXSTAT rx_packets=N tx_packets=M" on the console.
#   vxtest=ping       eth0 up as 10.0.0.2/24, then forever: ping the peer (10.0.0.1) every 0.5 s and
#                     print "VXPING ok=N fail=M" (replies so far) and the VXSTAT line.
#   vxtest=blast      eth0 up, then the kernel's own packet generator (pktgen.ko, from the same
#                     kernel package) sends UDP frames to vxpeer as fast as the guest can (or at
#                     vxpps=N packets a second), for vxsecs=S seconds (default 10) per frame size in
#                     vxsize=A,B,... (default 64: bytes per Ethernet frame, without the 4-byte FCS).
#                     vxdstmac=MAC is the frames' destination (default: broadcast).  For each size
#                     it prints "VXBLAST run size=A" when it starts and, when it stops,
#                     "VXBLAST done size=A usec=T sent=N pps=P tx_packets=X tx_dropped=Y": pktgen's
#                     own time, count and rate, then eth0's counters since boot.
#                     Then "VXBLAST finished"; used by labs/lab5-speed.sh.
#   vxtest=mqping     for a multiqueue device (mq=on, -smp 2): eth0 up, then forever: from each CPU
#                     in turn, one ping to the peer pinned there with taskset (Linux's virtio_net
#                     maps CPU i to TX queue i through XPS, so each CPU's pings leave on its own
#                     queue), "VXMQPING cpu0 ok=N fail=M cpu1 ok=N fail=M" (replies so far), and
#                     "VXQSTAT rx_queue_0_packets=N ... tx_queue_1_packets=N", the per-queue counters
#                     virtio_net shows only through ethtool -S (printed by /bin/ethstats, below).
#                     Once at the start: "VXQUEUES tx=N rx=M" (eth0's queues in sysfs) and "VXXPS
#                     tx-0=MASK ..." (which CPUs use each TX queue).
#   vxtest=agent      eth0 up, then commands from the test, one per line "ID COMMAND...", read from the
#                     second serial port (ttyS1: start_guest's GUEST_AGENT in tests/lib.sh), each run by
#                     the guest's shell (a trailing & runs it in the background) and answered on the
#                     console with "VXDONE ID rc=N"; "VXAGENT ready" first.  Its helpers:
#                     `csum_errors` prints "VXCSUM tcp=N udp=N udp6=N", the receive checksum errors the
#                     kernel counted (InCsumErrors of /proc/net/snmp and snmp6); /bin/tcpcheck is
#                     tests/tcpcheck.c (a TCP transfer checked byte for byte).  Used by tests/test_tcp.sh.
#   (no vxtest)       a shell on the console.
# Every mode first prints "VXFEATURES <bits>" (the virtio feature bits the driver negotiated,
# /sys/.../features: character i is bit i) and "VXREADY" once eth0 is up. Optional: vxip=A.B.C.D/N,
# vxpeer=A.B.C.D override the addresses, vxip6=ADDR/N adds an IPv6 address (without duplicate address
# detection, so it is usable at once). The guest never powers off: it runs until QEMU is killed.
#
# /bin/ethstats is tests/guest_ethstats.c (ethtool -S through ioctl SIOCETHTOOL: busybox has no
# ethtool) and /bin/tcpcheck is tests/tcpcheck.c, both compiled here with `${CC:-gcc} -static -Os`: the
# initramfs has no C library.
#
# Needs: busybox-static (/bin/busybox), a C compiler with a static libc (libc6-dev), and either apt (Debian 12, after `apt-get update`) or
# GUEST_KERNEL_DEB=path/to/linux-image-6.1*-amd64.deb. Skips the build when OUTDIR is up to date.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/guest}
busybox=${BUSYBOX:-/bin/busybox}
# Insertion order matters: each module needs the ones before it.
modules="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net"
# Copied into the initramfs too, but loaded only by the mode that needs them (vxtest=blast).
tool_modules="pktgen"
# Unpacked into kernel/ too, but not put in this initramfs: the virtio-pmd image (--pmd) needs them.
pmd_modules="uio uio_pci_generic"

die() { echo "build_guest.sh: $*" >&2; exit 1; }

# =====================================================================================================
# === The virtio-pmd image: `tests/build_guest.sh --pmd [OUTDIR]` =====================================
# A part of its own, read after parts 1 and 2 below (the kernel guest): it sits here only because it
# must run before them.  It builds a second image, default tests/guest-pmd/ (git-ignored):
#   vmlinuz             the kernel guest's kernel (parts 1-2 run first: one download serves both)
#   initramfs.cpio.gz   busybox, DPDK 22.11's dpdk-testpmd with every library it links and four PMD
#                       plugins, the kernel's virtio-net modules and pktgen (the same as the kernel
#                       guest's), uio + uio_pci_generic, and its /init
# The guest's /init is tests/guest_pmd_init.sh, which documents what it reads (vxdrv=pmd|kernel: DPDK's
# virtio PMD or the kernel's virtio_net on every port; vxpmd=MODE vxsize= vxsecs=: a run from the kernel
# command line; commands on a second serial port) and the lines it prints on the console (VXREADY,
# VXRUN, VXCOUNT, ...).  tests/lib.sh boots it (start_pmd_guest) and talks to it (pmd_send, pmd_wait).
# testpmd's own output goes to /tmp/testpmd.log in the guest: every character on the emulated UART
# costs the guest CPU time.  QEMU needs `-cpu max` under TCG (Debian builds DPDK for the corei7
# instruction set, which QEMU's default CPU model lacks: testpmd dies of SIGILL) and `-cpu host` under KVM.
# Needs, besides what the kernel guest needs: dpdk-dev (dpdk-testpmd and its plugins).

# pmd_host_files: every path the image takes from this host, one a line, each symlink followed by what
# it points to: testpmd, each library ldd names for it, and the four plugins (with their libraries).
# Why four: EAL loads every library in its plugin directory at start-up.  testpmd links the PCI and vdev
# buses itself, but not the "ring" mempool driver (without it: "Creation of mbuf pool ... failed") nor
# the virtio PMD; the rest of Debian's directory would pull in every driver and its libraries.
pmd_plugins="librte_bus_pci librte_bus_vdev librte_mempool_ring librte_net_virtio"
pmd_host_files() {
    local testpmd plugindir f p
    testpmd=$(command -v dpdk-testpmd) || die "no dpdk-testpmd: apt-get install -y dpdk-dev"
    plugindir=$(ls -d /usr/lib/x86_64-linux-gnu/dpdk/pmds-* 2>/dev/null | head -n 1)
    [ -d "$plugindir" ] || die "no DPDK plugin directory /usr/lib/x86_64-linux-gnu/dpdk/pmds-*: apt-get install -y dpdk-dev"
    for f in "$testpmd" $(for p in $pmd_plugins; do ls "$plugindir/$p".so*; done); do
        echo "$f"
        # ldd's "name => /path (address)" lines, and the dynamic loader's own "/path (address)" line
        ldd "$f" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
    done | sort -u | while read -r f; do
        # The directory part canonical (Debian's /lib is a link to /usr/lib), then the link chain.
        f=$(readlink -f "$(dirname "$f")")/$(basename "$f")
        while [ -L "$f" ]; do
            echo "$f"
            p=$(readlink "$f")
            case $p in /*) f=$p ;; *) f=$(dirname "$f")/$p ;; esac
        done
        echo "$f"
    done | sort -u
}

pmd_build() {
    local pout=$1 kguest=${VX_GUEST_DIR:-$here/guest} stamp m root
    # Parts 1 and 2, run first: the kernel guest, whose kernel/ directory holds the kernel and every
    # module both images need (vmlinuz and modules must come from one package).
    "$0" "$kguest" || die "the kernel guest (tests/build_guest.sh $kguest) failed: the virtio-pmd image uses its kernel"
    mkdir -p "$pout"
    pout=$(cd "$pout" && pwd)
    if command -v flock >/dev/null 2>&1; then exec 9>"$pout/.lock"; flock 9; fi
    command -v dpdk-testpmd >/dev/null 2>&1 || die "no dpdk-testpmd: apt-get install -y dpdk-dev"
    # Rebuilt when this script, busybox, the kernel package or any file taken from DPDK changes.
    stamp=$( { cat "$0" "$here/guest_pmd_init.sh" "$busybox" "$kguest/kernel/package"; pmd_host_files | xargs cat; } | cksum | cut -d' ' -f1)
    if [ -f "$pout/vmlinuz" ] && [ -f "$pout/initramfs.cpio.gz" ] && [ "$(cat "$pout/.stamp" 2>/dev/null)" = "$stamp" ]; then
        echo "build_guest.sh: $pout is up to date" >&2
        return 0
    fi
    pmd_tmp=$(mktemp -d)
    trap 'rm -rf "$pmd_tmp"' EXIT
    root=$pmd_tmp/root
    # Debian's layout, which the libraries' paths assume: /lib and /lib64 are links into /usr.
    mkdir -p "$root"/{bin,dev,proc,sys,tmp,run,usr/bin,usr/lib/modules,usr/lib64}
    ln -s usr/lib "$root/lib"
    ln -s usr/lib64 "$root/lib64"
    ln -s bin "$root/sbin"
    cp "$busybox" "$root/bin/busybox"
    for m in $("$busybox" --list); do [ -e "$root/bin/$m" ] || ln -s busybox "$root/bin/$m"; done
    for m in $modules $tool_modules $pmd_modules; do
        cp "$kguest/kernel/$m.ko" "$root/usr/lib/modules/" || die "no $m.ko in $kguest/kernel"
    done
    # tar keeps each symlink a symlink: a library reached under two names stays one file (loaded once).
    pmd_host_files | sed 's|^/||' | tar -C / --no-recursion -cf - -T - | tar -C "$root" -xf - ||
        die "copying dpdk-testpmd and its libraries into the image failed"
    # The /init: tests/guest_pmd_init.sh, with the kernel guest's module list (load order) filled in.
    sed "s/KERNEL_MODULES/$modules/" "$here/guest_pmd_init.sh" > "$root/init"
    chmod 755 "$root/init"
    (cd "$root" && find . | "$busybox" cpio -o -H newc 2>/dev/null) | gzip -6 > "$pmd_tmp/initramfs.cpio.gz"
    cp "$kguest/kernel/vmlinuz" "$pout/vmlinuz"
    mv "$pmd_tmp/initramfs.cpio.gz" "$pout/initramfs.cpio.gz"
    echo "$stamp" > "$pout/.stamp"
    echo "build_guest.sh: built $pout/vmlinuz and $pout/initramfs.cpio.gz ($(du -sh "$root" | cut -f1) unpacked," \
         "$(du -h "$pout/initramfs.cpio.gz" | cut -f1) gzipped; $(cat "$kguest/kernel/package"))" >&2
}

if [ "${1:-}" = --pmd ]; then
    pmd_build "${2:-$here/guest-pmd}"
    exit
fi
# === End of the virtio-pmd image; parts 1 and 2, the kernel guest, follow. ============================

mkdir -p "$out"
out=$(cd "$out" && pwd)
# Tests may run in parallel: one build at a time per OUTDIR.
if command -v flock >/dev/null 2>&1; then exec 9>"$out/.lock"; flock 9; fi

stamp=$(cat "$0" "$here/guest_ethstats.c" "$here/tcpcheck.c" "$busybox" 2>/dev/null | cksum | cut -d' ' -f1)
if [ -f "$out/vmlinuz" ] && [ -f "$out/initramfs.cpio.gz" ] && [ "$(cat "$out/.stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "build_guest.sh: $out is up to date" >&2
    exit 0
fi

[ -x "$busybox" ] || die "$busybox not found: apt-get install -y busybox-static"
file_type=$("$busybox" 2>&1 | head -1 || true)
case $file_type in BusyBox*) ;; *) die "$busybox does not run as busybox";; esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# === 1. The kernel: vmlinuz and the virtio-net modules out of the Debian package ===
get_kernel() {
    local deb=${GUEST_KERNEL_DEB:-} pkg
    if [ -z "$deb" ]; then
        command -v apt-get >/dev/null 2>&1 || die "no apt-get: set GUEST_KERNEL_DEB=path/to/linux-image-6.1.0-*-cloud-amd64 .deb"
        pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-6/{print $2; exit}')
        [ -n "$pkg" ] || die "apt-cache knows no linux-image-cloud-amd64 (Debian 12 kernel): run 'apt-get update' first, or set GUEST_KERNEL_DEB"
        echo "build_guest.sh: downloading $pkg" >&2
        mkdir "$tmp/deb"
        # As root, apt drops to the _apt user, who cannot write into our private temp dir.
        local sandbox=()
        [ "$(id -u)" = 0 ] && sandbox=(-o APT::Sandbox::User=root)
        (cd "$tmp/deb" && apt-get download "${sandbox[@]}" "$pkg" >&2) ||
            die "could not download $pkg: run 'apt-get update' (and check the network), or set GUEST_KERNEL_DEB"
        deb=$(ls "$tmp"/deb/*.deb)
    fi
    [ -f "$deb" ] || die "kernel package $deb not found"
    rm -rf "$out/kernel" "$tmp/k"
    mkdir -p "$tmp/k" "$out/kernel"
    # Unpack only what the guest needs (the whole package is ~100 MB unpacked).
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp/k" --wildcards './boot/vmlinuz-*' '*/virtio*.ko*' '*failover.ko*' '*/pktgen.ko*' '*/uio*.ko*' ||
        die "could not unpack $deb"
    cp "$tmp"/k/boot/vmlinuz-* "$out/kernel/vmlinuz" || die "no boot/vmlinuz-* in $deb"
    local m f
    for m in $modules $tool_modules $pmd_modules; do
        f=$(find "$tmp/k/lib/modules" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" | head -1)
        [ -n "$f" ] || die "module $m not in $deb"
        case $f in   # busybox insmod may not read compressed modules
        *.xz)  "$busybox" unxz -c "$f" > "$out/kernel/$m.ko" ;;
        *.zst) zstd -q -d -c "$f" > "$out/kernel/$m.ko" || die "need zstd for $f" ;;
        *)     cp "$f" "$out/kernel/$m.ko" ;;
        esac
    done
    basename "$deb" > "$out/kernel/package"
}
ok=1
for m in vmlinuz $modules $tool_modules $pmd_modules; do [ -f "$out/kernel/$m" ] || [ -f "$out/kernel/$m.ko" ] || ok=0; done
[ $ok = 1 ] || get_kernel

# === 2. The initramfs: busybox, modules, /init ===
root=$tmp/root
mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules}
ln -s bin "$root/sbin"
cp "$busybox" "$root/bin/busybox"
for app in $("$busybox" --list); do
    [ -e "$root/bin/$app" ] || ln -s busybox "$root/bin/$app"
done
for m in $modules $tool_modules; do cp "$out/kernel/$m.ko" "$root/lib/modules/"; done
# ethtool -S for the guest: static, since the initramfs has busybox and nothing else.
${CC:-gcc} -static -Os -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -o "$root/bin/ethstats" "$here/guest_ethstats.c" 2>"$tmp/cc.log" ||
    die "cannot build a static tests/guest_ethstats.c with ${CC:-gcc} -static (install gcc and libc6-dev, glibc's libc.a): $(head -n 3 "$tmp/cc.log")"
${CC:-gcc} -static -Os -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -o "$root/bin/tcpcheck" "$here/tcpcheck.c" 2>"$tmp/cc.log" ||
    die "cannot build a static tests/tcpcheck.c with ${CC:-gcc} -static: $(head -n 3 "$tmp/cc.log")"

cat > "$root/init" <<'EOF'
#!/bin/sh
# /init of the vhost-xdp test guest (written by tests/build_guest.sh).
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The initramfs has no /dev/console of its own: reopen stdio on the one devtmpfs provides.
exec </dev/console >/dev/console 2>&1
for m in MODULES; do
    insmod /lib/modules/$m.ko || echo "VXERROR insmod $m failed"
done

mode= ip=10.0.0.2/24 peer=10.0.0.1 ip6=
pps=0 secs=10 sizes=64 dstmac=ff:ff:ff:ff:ff:ff
for arg in $(cat /proc/cmdline); do
    case $arg in
    vxtest=*)   mode=${arg#vxtest=} ;;
    vxip=*)     ip=${arg#vxip=} ;;
    vxpeer=*)   peer=${arg#vxpeer=} ;;
    vxip6=*)    ip6=${arg#vxip6=} ;;
    vxpps=*)    pps=${arg#vxpps=} ;;
    vxsecs=*)   secs=${arg#vxsecs=} ;;
    vxsize=*)   sizes=${arg#vxsize=} ;;
    vxdstmac=*) dstmac=${arg#vxdstmac=} ;;
    esac
done

# eth0 up with an address; print the negotiated features and VXREADY.
net_up() {
    i=0
    while [ ! -e /sys/class/net/eth0 ]; do
        i=$((i + 1)); [ $i -gt 50 ] && { echo "VXERROR no eth0"; return 1; }
        sleep 0.1
    done
    # Blast counts every frame eth0 sends (labs/lab5-speed.sh): without IPv6 the guest's own stack sends
    # none of its own (router solicitations, MLD reports, DAD), before pktgen or after its counters are read.
    [ "$mode" = blast ] && echo 1 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6
    ip link set lo up
    ip link set eth0 up
    ip addr add "$ip" dev eth0
    if [ -n "$ip6" ]; then
        echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad
        ip -6 addr add "$ip6" dev eth0
    fi
    echo "VXFEATURES $(cat /sys/class/net/eth0/device/features)"
    echo "VXREADY"
}

counter() { cat /sys/class/net/eth0/statistics/$1; }

# Loopback: the backend returns every frame to the guest, so the guest sees its own ARP requests.
mode_loopback() {
    net_up || return
    while :; do
        arping -q -c 1 -w 1 -I eth0 "$peer" >/dev/null 2>&1 &
        ping -q -c 1 -W 1 "$peer" >/dev/null 2>&1 &
        echo "VXSTAT rx_packets=$(counter rx_packets) tx_packets=$(counter tx_packets)"
        sleep 0.5
    done
}

# Ping: a real peer answers (through vhost-xdp's AF_XDP port and a veth).  Every 0.5 s one ping with
# a 1 s timeout; "VXPING ok=N fail=M" counts replies, then the usual VXSTAT line.
mode_ping() {
    net_up || return
    okc=0 failc=0
    while :; do
        if ping -q -c 1 -W 1 "$peer" >/dev/null 2>&1; then okc=$((okc + 1)); else failc=$((failc + 1)); fi
        echo "VXPING ok=$okc fail=$failc"
        echo "VXSTAT rx_packets=$(counter rx_packets) tx_packets=$(counter tx_packets)"
        sleep 0.5
    done
}

# Multiqueue ping: one ping at a time from each CPU (taskset pins it there).  The per-queue counters
# come from ethtool's statistics (/bin/ethstats); only the *_queue_N_packets ones are printed.
mode_mqping() {
    net_up || return
    ncpu=$(nproc)
    echo "VXQUEUES tx=$(ls -d /sys/class/net/eth0/queues/tx-* | wc -l) rx=$(ls -d /sys/class/net/eth0/queues/rx-* | wc -l)"
    xps=
    for q in /sys/class/net/eth0/queues/tx-*; do xps="$xps ${q##*/}=$(cat "$q/xps_cpus" 2>/dev/null)"; done
    echo "VXXPS$xps"
    while :; do
        line=VXMQPING
        for cpu in $(seq 0 $((ncpu - 1))); do
            # one word per ping in /tmp/ping.CPU: the replies so far are its "ok" lines
            if taskset -c "$cpu" ping -q -c 1 -W 1 "$peer" >/dev/null 2>&1; then echo ok; else echo fail; fi >> /tmp/ping.$cpu
            line="$line cpu$cpu ok=$(grep -c ok /tmp/ping.$cpu) fail=$(grep -c fail /tmp/ping.$cpu)"
        done
        echo "$line"
        echo "VXQSTAT $(ethstats eth0 | sed -n 's/^ *\([rt]x_queue_[0-9]*_packets\): \([0-9]*\)$/\1=\2/p' | tr '\n' ' ')"
        sleep 0.5
    done
}

# Blast: the guest kernel's pktgen (Documentation/networking/pktgen.rst) builds UDP frames and hands
# them straight to virtio_net's transmit function, with no socket and no system call per packet: the
# most a guest can push.  One kernel thread (kpktgend_0) drives eth0; it is driven by writing
# commands to files under /proc/net/pktgen.
pg_set() { echo "$2" > "/proc/net/pktgen/$1" || echo "VXERROR pktgen: '$2' refused by $1"; }
mode_blast() {
    net_up || return
    insmod /lib/modules/pktgen.ko || { echo "VXERROR insmod pktgen failed"; return; }
    pg_set kpktgend_0 "rem_device_all"
    pg_set kpktgend_0 "add_device eth0"
    pg_set eth0 "count 0"           # no limit: we stop it after $secs seconds
    pg_set eth0 "delay 0"
    pg_set eth0 "clone_skb 64"      # send each built frame 64 times: measure the path, not the builder
    pg_set eth0 "dst $peer"
    pg_set eth0 "dst_mac $dstmac"
    pg_set eth0 "udp_dst_min 9"     # the discard port
    pg_set eth0 "udp_dst_max 9"
    [ "$pps" -gt 0 ] && pg_set eth0 "ratep $pps"
    for size in $(echo "$sizes" | tr ',' ' '); do
        pg_set eth0 "pkt_size $size"
        echo "VXBLAST run size=$size"
        # "start" returns only when the run stops; "stop" from here ends it after $secs seconds.
        echo start > /proc/net/pktgen/pgctrl &
        sleep "$secs"
        echo stop > /proc/net/pktgen/pgctrl
        wait
        # pktgen's summary: "Result: OK: 5000123(c..+d..) usec, 812345 (64byte,0frags)" then
        # "  162468pps 83Mb/sec (...) errors: 0"
        res=$(tr '\n' ' ' < /proc/net/pktgen/eth0 | sed -n 's/.*Result: OK: \([0-9]*\)(.*usec, \([0-9]*\) (.*  *\([0-9]*\)pps .*/usec=\1 sent=\2 pps=\3/p')
        # eth0's own counters (since boot): what virtio_net queued, and what it dropped.
        echo "VXBLAST done size=$size ${res:-result=unknown} tx_packets=$(counter tx_packets) tx_dropped=$(counter tx_dropped)"
    done
    echo "VXBLAST finished"
    echo "VXSTAT rx_packets=$(counter rx_packets) tx_packets=$(counter tx_packets)"
}

# Agent: the test drives the guest through the second serial port (ttyS1), raw, without echo: one
# command per line, "ID COMMAND...", run here; "VXDONE ID rc=N" on the console when it returns.
# snmp PROTO FIELD: a counter of /proc/net/snmp (its lines come in pairs: names, then values).
snmp() { awk -v p="$1:" -v f="$2" '$1 == p { if (!n) { for (i = 2; i <= NF; i++) if ($i == f) n = i } else { print $n; exit } }' /proc/net/snmp; }
csum_errors() {
    echo "VXCSUM tcp=$(snmp Tcp InCsumErrors) udp=$(snmp Udp InCsumErrors) udp6=$(awk '$1 == "Udp6InCsumErrors" { print $2 }' /proc/net/snmp6)"
}
mode_agent() {
    net_up || return
    exec 3<>/dev/ttyS1
    stty raw -echo <&3
    echo "VXAGENT ready"
    while read -r id cmd <&3; do
        eval "$cmd"
        echo "VXDONE $id rc=$?"
    done
    echo "VXERROR agent: ttyS1 closed"
}

# New modes: add mode_NAME here and a line in the case below.
case $mode in
loopback) mode_loopback ;;
ping)     mode_ping ;;
mqping)   mode_mqping ;;
blast)    mode_blast ;;
agent)    mode_agent ;;
'')       net_up; setsid cttyhack sh ;;
*)        echo "VXERROR unknown vxtest=$mode" ;;
esac
# /init must never exit (the kernel would panic): wait for QEMU to be killed.
while :; do sleep 3600; done
EOF
sed -i "s/MODULES/$modules/" "$root/init"
chmod 755 "$root/init"

(cd "$root" && find . | "$busybox" cpio -o -H newc 2>/dev/null) | gzip -9 > "$tmp/initramfs.cpio.gz"
cp "$out/kernel/vmlinuz" "$out/vmlinuz"
mv "$tmp/initramfs.cpio.gz" "$out/initramfs.cpio.gz"
echo "$stamp" > "$out/.stamp"
echo "build_guest.sh: built $out/vmlinuz and $out/initramfs.cpio.gz ($(cat "$out/kernel/package"))" >&2
