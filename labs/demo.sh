#!/usr/bin/env bash
# labs/demo.sh - `sudo make demo`: a QEMU guest pings through vhost-xdp and AF_XDP, on one command.
#
# What it does, in order:
#   1. checks what it needs and installs what is missing (below), builds ./vhost-xdp (make) and the
#      test guest (tests/build_guest.sh: Debian's cloud kernel + a busybox initramfs);
#   2. makes a network namespace with a veth pair: the host end vxhPID stays here, the peer end vxpPID
#      is 10.0.0.1/24 in netns vxlab-PID;
#   3. starts vhost-xdp with its NIC port on the host end (AF_XDP: an XDP program hands it every frame
#      the veth receives) and a QEMU guest on its vhost-user socket (KVM when it works, else TCG);
#   4. shows, once a second, the guest's ping of 10.0.0.1 and vhost-xdp's stats beside it;
#   5. on Ctrl-C (or, with --once, after a few replies) stops QEMU and vhost-xdp and deletes the
#      namespace and the veth; it prints every name and pid it made, so you can check.
#
# Usage: sudo make demo [DEMO_ARGS=--once]    or    sudo labs/demo.sh [--once]
#   --once        (or DEMO_ONCE=1) stop after DEMO_REPLIES (default 3) ping replies: for tests and CI
#   DEMO_INSTALL=1  install missing packages without asking
#   VX_ACCEL=tcg    use TCG even where KVM works
#
# Installing: the demo needs gcc (build-essential), iproute2, qemu-system-x86 and busybox-static.
# When one is missing and the run is interactive (a terminal, no --once), it shows the apt-get
# command and asks before running it, as apt itself would.  A non-interactive run (--once,
# DEMO_ONCE=1 or no terminal) never installs on its own: it prints the command and exits 1, unless
# DEMO_INSTALL=1 says to install.
# Exit status: 0 after Ctrl-C or a successful --once run; 1 when something is missing or fails;
# 2 for a bad option.
set -u
. "$(dirname "$0")/common.sh"

LAB_INT_STATUS=0    # Ctrl-C is how the demo ends
lab_init demo "$@"

usage() {
    cat <<'EOF'
usage: sudo make demo [DEMO_ARGS=--once]    or    sudo labs/demo.sh [--once]
  --once          (or DEMO_ONCE=1) stop after DEMO_REPLIES (default 3) ping replies
  DEMO_INSTALL=1  install missing packages without asking
  VX_ACCEL=tcg    use TCG even where KVM works
EOF
}
ONCE=${DEMO_ONCE:-0}
REPLIES=${DEMO_REPLIES:-3}
for a in "${LAB_ARGS[@]}"; do
    case $a in
    --once) ONCE=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "demo: unknown option $a" >&2; usage >&2; exit 2 ;;
    esac
done
[[ $REPLIES =~ ^[1-9][0-9]*$ ]] || { echo "demo: DEMO_REPLIES=$REPLIES: want a positive number" >&2; exit 2; }
INTERACTIVE=1
{ [ "$ONCE" = 1 ] || [ "$LAB_CI" = 1 ] || [ ! -t 0 ]; } && INTERACTIVE=0

[ "$(id -u)" = 0 ] || lab_die "it needs root (network namespaces, XDP): run: sudo make demo"

# === 1. What the demo needs ====================================================

# missing_packages: the Debian/Ubuntu packages of the tools that are not here, on one line.
missing_packages() {
    local pkgs=''
    { command -v "${CC:-gcc}" >/dev/null 2>&1 && [ -f /usr/include/stdio.h ] &&
        [ -f /usr/include/linux/if_xdp.h ]; } || pkgs+=" build-essential linux-libc-dev"
    command -v ip >/dev/null 2>&1 || pkgs+=" iproute2"
    command -v qemu-system-x86_64 >/dev/null 2>&1 || pkgs+=" qemu-system-x86"
    # The guest's initramfs needs a static busybox; a dynamically linked /bin/busybox cannot run there.
    if command -v dpkg-query >/dev/null 2>&1; then
        dpkg-query -W -f='${Status}\n' busybox-static 2>/dev/null | grep -q 'ok installed' || pkgs+=" busybox-static"
    else
        [ -x /bin/busybox ] || pkgs+=" busybox-static"
    fi
    echo "${pkgs# }"
}

install_missing() {
    local pkgs cmd answer
    pkgs=$(missing_packages)
    [ -z "$pkgs" ] && return 0
    command -v apt-get >/dev/null 2>&1 ||
        lab_die "missing: $pkgs (Debian/Ubuntu package names); install them with your package manager"
    # apt-get update first: on a fresh machine the package lists may be empty.
    cmd="apt-get update && apt-get install -y --no-install-recommends $pkgs"
    lab_say "demo: missing packages: $pkgs"
    if [ "${DEMO_INSTALL:-0}" != 1 ]; then
        if [ "$INTERACTIVE" = 0 ]; then
            lab_say "demo: install them with:  sudo sh -c '$cmd'   (or run with DEMO_INSTALL=1)"
            exit 1
        fi
        read -r -p "Install them now with '$cmd'? [Y/n] " answer
        case $answer in ''|[Yy]*) ;; *) lab_say "demo: not installing; nothing was changed"; exit 1 ;; esac
    fi
    DEBIAN_FRONTEND=noninteractive sh -c "$cmd" || lab_die "installing failed: $cmd"
    pkgs=$(missing_packages)
    [ -z "$pkgs" ] || lab_die "still missing after installing: $pkgs"
}

lab_title "vhost-xdp demo: a QEMU guest pings through vhost-xdp, AF_XDP and a veth"
lab_say "demo: pid $$ (Ctrl-C ends it and cleans up)"
install_missing
lab_build
lab_guest

# === 2-3. The veth pair, vhost-xdp, the guest ==================================

lab_netns
VX_LOG=$LAB_TMP/vhost-xdp.log
lab_start_vx "$VX_LOG" --iface "$LAB_HOST" --stats 1
lab_say "XDP program on $LAB_HOST: $(ip -d link show dev "$LAB_HOST" | grep -o 'prog/xdp id [0-9]*' | head -n 1)"
lab_boot_guest guest ping

# At exit, before lab_cleanup stops them: QEMU first (the frontend goes away), then vhost-xdp, whose
# last log lines are its totals.
show_totals() {
    lab_stop "$QEMU_PID"
    lab_stop "$VX_PID"
    lab_say ""
    grep -a 'exit:' "$VX_LOG" | sed 's/^/  /'
}
lab_on_exit show_totals

# === 4. Show it ================================================================

# stats_brief: vhost-xdp's last two --stats lines, shortened to their packet rates.
stats_brief() {
    local vq nic
    vq=$(grep -a 'stats: from guest' "$VX_LOG" | tail -n 1 |
        sed -n 's/.*from guest \([^|]*pps\) .*| to guest \([^|]*pps\) .*| drops \([0-9]*\).*/from guest \1, to guest \2, drops \3/p')
    nic=$(grep -a 'stats: nic rx' "$VX_LOG" | tail -n 1 |
        sed -n 's/.*nic rx \([^|]*pps\) .*| nic tx \([^|]*pps\) .*/nic tx \2, nic rx \1/p')
    echo "${vq:-(no stats yet)}${nic:+ | $nic}"
}

lab_explain <<EOF

The guest (10.0.0.2) pings $LAB_PEER (10.0.0.1, in netns $LAB_NS) every half second.  Each echo
request leaves the guest's TX ring, vhost-xdp copies it into a UMEM frame and sends it out of
$LAB_HOST (nic tx); the reply comes back on $LAB_HOST, the XDP program redirects it to vhost-xdp's
AF_XDP socket (nic rx), and vhost-xdp copies it into the guest's RX ring (to guest).  Once a second:
the guest's ping count | vhost-xdp's rates.
EOF
t0=$SECONDS deadline=$((SECONDS + 120)) first=''
while :; do
    sleep 1
    kill -0 "$QEMU_PID" 2>/dev/null || { tail -n 5 "$LAB_TMP"/guest.qemu.log; lab_die "QEMU exited"; }
    kill -0 "$VX_PID" 2>/dev/null || { tail -n 5 "$VX_LOG"; lab_die "vhost-xdp exited"; }
    ping=$(lab_ping_line)
    n=$(echo "$ping" | sed -n 's/VXPING ok=\([0-9]*\) .*/\1/p')
    printf '  [%3d s] guest: %-22s | vhost-xdp: %s\n' $((SECONDS - t0)) "${ping:-booting}" "$(stats_brief)"
    if [ -n "$n" ] && [ "$n" -gt 0 ] && [ -z "$first" ]; then
        first=$SECONDS
        lab_say "  (first reply after $((SECONDS - t0)) s)"
    fi
    if [ "$ONCE" = 1 ] && [ -n "$n" ] && [ "$n" -ge "$REPLIES" ] && [ "$SECONDS" -gt "$first" ]; then
        lab_say "demo: the guest got $n ping replies through vhost-xdp and $LAB_HOST (--once: stopping)"
        exit 0
    fi
    if [ -z "$first" ] && [ "$SECONDS" -ge "$deadline" ]; then
        lab_say "demo: no ping reply after 120 s; the guest's console says:"
        tr -d '\r' <"$LAB_SERIAL" | tail -n 5 | sed 's/^/    /'
        lab_say "demo: vhost-xdp's log says:"
        grep -av 'stats:' "$VX_LOG" | tail -n 5 | sed 's/^/    /'
        exit 1
    fi
done
