#!/usr/bin/env bash
# labs/lab4-bypass.sh - Lab 4: AF_XDP bypass.  The guest's packets cross the veth (vhost-xdp's
# --pcap file has every one of them) while the host's network stack never sees them: its IP
# counters do not move.  Then vhost-xdp stops, and the same stack counts a ping at once.
#
#     sudo labs/lab4-bypass.sh [--ci]
#
# Topology: the host end of the veth and vhost-xdp are in a network namespace of their own
# (lab_netns --host-ns), so that namespace's stack counters (/proc/net/snmp, read inside it with
# `ip netns exec`) count only what this lab sends there; the peer end (10.0.0.1) is in another.
#
#   guest 10.0.0.2 --vhost-user-- vhost-xdp --AF_XDP-- vxhPID  ====veth====  vxpPID 10.0.0.1
#                                 [ netns vxlab-h-PID: the "host" ]          [ netns vxlab-PID ]
#
# Steps: (1) the guest pings the peer for a few seconds; the lab reads, in the host namespace, the
# veth's own packet counter (the driver's), Ip InReceives and Icmp InMsgs (the IP stack's) before
# and after; (2) vhost-xdp stops; the lab prints its --pcap file: tcpdump -r if tcpdump is
# installed, else its own decoding, then a count of echo requests and replies (always its own);
# (3) the host end gets 10.0.0.3/24, the peer pings it three times, and the stack's counters move.
# --ci (or LAB_CI=1): shorter and without pauses.
set -u
. "$(dirname "$0")/common.sh"
lab_init lab4 "$@"
[ ${#LAB_ARGS[@]} -eq 0 ] || { echo "usage: sudo $0 [--ci]" >&2; exit 2; }
lab_need_root
lab_need_cmd ip iproute2
lab_need_cmd qemu-system-x86_64 qemu-system-x86
lab_need_cmd od coreutils
# The peer's ping in step 3: iputils' ping, or busybox's (the guest's busybox-static is installed).
PING=(ping)
command -v ping >/dev/null 2>&1 || PING=(busybox ping)
command -v "${PING[0]}" >/dev/null 2>&1 || lab_die "no ping: apt-get install -y iputils-ping"
lab_build
"$VX" --help | grep -q -- --pcap || lab_die "this vhost-xdp has no --pcap option: rebuild it (make)"
lab_guest

lab_title "Lab 4: AF_XDP bypass: on the wire, not in the host's stack"
lab_netns --host-ns
PCAP=$LAB_TMP/guest.pcap
VX_LOG=$LAB_TMP/vhost-xdp.log
lab_start_vx "$VX_LOG" --iface "$LAB_HOST" --pcap "$PCAP" --pcap-limit 4M
lab_say "vhost-xdp: $(grep -o 'XDP [a-z]* ([a-z]*)' "$VX_LOG" | head -n 1) program on $LAB_HOST, capturing to $PCAP"
lab_boot_guest guest ping
lab_say "waiting for the guest to boot and its pings to get replies..."
lab_wait_ping 1 || exit 1

# === The host namespace's counters ==========================================

# snmp GROUP FIELD: a counter of /proc/net/snmp in the host namespace (a header line, then a value line).
snmp() {
    lab_in_hns cat /proc/net/snmp | awk -v g="$1:" -v f="$2" '
        $1 == g && !h { for (i = 2; i <= NF; i++) col[$i] = i; h = 1; next }
        $1 == g && h  { print $(col[f]); exit }'
}
# counters: "veth_rx_packets ip_in_receives icmp_in_msgs" of the host namespace, on one line.
counters() {
    echo "$(lab_in_hns cat "/sys/class/net/$LAB_HOST/statistics/rx_packets") $(snmp Ip InReceives) $(snmp Icmp InMsgs)"
}
# table BEFORE AFTER: the three counters side by side, and how far each moved.
table() {
    local a b
    read -r -a a <<<"$1"; read -r -a b <<<"$2"
    printf '    %-44s %8s %8s %8s\n' "in netns $LAB_HNS" before after moved
    printf '    %-44s %8s %8s %+8d\n' "$LAB_HOST rx_packets (the veth driver)" "${a[0]}" "${b[0]}" $((b[0] - a[0]))
    printf '    %-44s %8s %8s %+8d\n' "Ip InReceives (the IP stack, /proc/net/snmp)" "${a[1]}" "${b[1]}" $((b[1] - a[1]))
    printf '    %-44s %8s %8s %+8d\n' "Icmp InMsgs" "${a[2]}" "${b[2]}" $((b[2] - a[2]))
}

lab_step "1. the guest pings 10.0.0.1 through vhost-xdp; the host namespace's counters"
C1=$(counters) ok1=$(lab_ping_ok)
if [ "$LAB_CI" = 1 ]; then sleep 3; else sleep 6; fi
C2=$(counters) ok2=$(lab_ping_ok)
table "$C1" "$C2"
lab_say "  meanwhile the guest got $((ok2 - ok1)) ping replies ($(lab_ping_line))"
lab_explain <<'EOF'

The replies from 10.0.0.1 arrive on the host end of the veth: its driver counts them (rx_packets).
But before the kernel builds an sk_buff for its stack, the XDP program redirects each frame to
vhost-xdp's AF_XDP socket: the IP stack of this namespace never receives them (Ip InReceives does
not move), and no ICMP reaches it (Icmp InMsgs).  The echo requests leave from vhost-xdp's AF_XDP
TX ring, not from a socket of this stack either.
EOF
lab_pause

# === The capture ==============================================================

# pcap_decode FILE: one line per frame of vhost-xdp's --pcap file (classic pcap, Linux "cooked"
# link type 113: a 16-byte SLL header instead of the Ethernet header; see pcap.c), and the totals
# in PCAP_FRAMES PCAP_REQ_OUT PCAP_REP_IN PCAP_ARP.  Read with od: no tool beyond coreutils.
pcap_decode() {
    local b n off len p dir proto ip ihl what
    read -r -d '' -a b < <(od -An -v -tx1 "$1")
    n=${#b[@]}
    PCAP_FRAMES=0 PCAP_REQ_OUT=0 PCAP_REP_IN=0 PCAP_ARP=0
    [ "$n" -ge 24 ] && [ "${b[0]}${b[1]}${b[2]}${b[3]}" = d4c3b2a1 ] ||
        { echo "    (not a little-endian pcap file)"; return 1; }
    u32le() { echo $((16#${b[$1 + 3]}${b[$1 + 2]}${b[$1 + 1]}${b[$1]})); }
    ipv4() { echo "$((16#${b[$1]})).$((16#${b[$1 + 1]})).$((16#${b[$1 + 2]})).$((16#${b[$1 + 3]}))"; }
    off=24                                  # after the file header
    while [ $((off + 32)) -le "$n" ]; do
        len=$(u32le $((off + 8)))           # incl_len: SLL header + the frame after its Ethernet header
        p=$((off + 16))                     # the SLL header
        # A record cut short (vhost-xdp killed while writing) ends the file; a frame too short for
        # an IPv4 or ARP header is only counted.
        [ $((p + len)) -le "$n" ] || break
        case ${b[p]}${b[p + 1]} in 0000) dir=In ;; 0004) dir=Out ;; *) dir="?" ;; esac
        proto=${b[p + 14]}${b[p + 15]} ip=$((p + 16)) what=''
        if [ "$len" -lt $((16 + 28)) ]; then
            what="a short frame"
        elif [ "$proto" = 0800 ]; then
            ihl=$(((16#${b[ip]} & 15) * 4))
            what="IPv4 $(ipv4 $((ip + 12))) > $(ipv4 $((ip + 16)))"
            if [ "${b[ip + 9]}" = 01 ]; then
                case ${b[ip + ihl]} in
                08) what+=" ICMP echo request"; [ "$dir" = Out ] && PCAP_REQ_OUT=$((PCAP_REQ_OUT + 1)) ;;
                00) what+=" ICMP echo reply";   [ "$dir" = In ] && PCAP_REP_IN=$((PCAP_REP_IN + 1)) ;;
                *)  what+=" ICMP type $((16#${b[ip + ihl]}))" ;;
                esac
            fi
        elif [ "$proto" = 0806 ]; then
            PCAP_ARP=$((PCAP_ARP + 1))
            what="ARP $([ "${b[ip + 7]}" = 01 ] && echo request || echo reply) $(ipv4 $((ip + 14))) asks for $(ipv4 $((ip + 24)))"
            [ "${b[ip + 7]}" = 02 ] && what="ARP reply $(ipv4 $((ip + 14))) is at its MAC"
        elif [ "$proto" = 86dd ]; then
            what="IPv6 (the guest's own neighbour discovery and multicast reports)"
        else
            what="ethertype 0x$proto"
        fi
        PCAP_FRAMES=$((PCAP_FRAMES + 1))
        [ -n "${PCAP_SHOW:-}" ] && [ "$PCAP_FRAMES" -le 8 ] && printf '    %-3s %s, %d bytes\n' "$dir" "$what" $((len - 16 + 14))
        off=$((p + len))
    done
}

lab_step "2. vhost-xdp stops; what its --pcap file holds"
lab_stop "$QEMU_PID"
lab_stop "$VX_PID"      # SIGTERM: it detaches the XDP program, flushes the capture and prints totals
grep -a 'exit:\|pcap' "$VX_LOG" | grep -av 'listening\|capturing to' | sed 's/^/  /'
lab_say "  $LAB_HOST now: $(lab_in_hns ip -d link show dev "$LAB_HOST" | grep -q 'prog/xdp' && echo "still has an XDP program" || echo "no XDP program (detached when vhost-xdp closed its BPF link)")"
if command -v tcpdump >/dev/null 2>&1; then
    lab_say "  tcpdump -n -t -e -r $PCAP 'icmp or arp' (the first 8 frames; -e shows In/Out):"
    tcpdump -n -t -e -r "$PCAP" 'icmp or arp' 2>/dev/null | head -n 8 | sed 's/^/    /'
    pcap_decode "$PCAP"
else
    lab_say "  (tcpdump is not installed: apt-get install -y tcpdump; the lab decodes the file itself, the first 8 frames:)"
    PCAP_SHOW=1 pcap_decode "$PCAP"
fi
lab_say "  pcap: $PCAP_FRAMES frames: $PCAP_REQ_OUT ICMP echo requests Out (from the guest), $PCAP_REP_IN ICMP echo replies In (to the guest), $PCAP_ARP ARP"
lab_explain <<'EOF'

"Out" is what the guest sent (vhost-xdp took it from the guest's TX ring and put it on the veth),
"In" what vhost-xdp gave the guest (received from the veth through AF_XDP).  Every echo request
and reply crossed the veth, in the same namespace whose stack counted none of them.
EOF
lab_pause

# === Without vhost-xdp ========================================================

lab_step "3. without vhost-xdp: the peer pings the host end itself (10.0.0.3)"
lab_in_hns ip addr add 10.0.0.3/24 dev "$LAB_HOST" || lab_die "could not add 10.0.0.3/24 to $LAB_HOST"
C3=$(counters)
lab_in_ns "${PING[@]}" -c 3 -i 0.2 -W 2 10.0.0.3 | grep -a 'packets transmitted' | sed 's/^/    ping: /'
C4=$(counters)
table "$C3" "$C4"
lab_explain <<'EOF'

With no XDP program on it, the veth hands each frame to the kernel's stack as usual: three echo
requests are three more Ip InReceives and Icmp InMsgs, and the stack answers them itself.  With
vhost-xdp attached, the same frames would have gone to the guest instead.
EOF
lab_say ""
lab_say "lab4: done"
