#!/usr/bin/env bash
# tests/test_cli.sh - the command line: every bad option value is refused with one line that names the
# option and says what it wants (exit status 2, nothing on stdout, nothing set up), --help is on stdout
# (exit 0), and a set-up step that fails after the options were accepted exits 1 having undone what it
# had done (no socket file left, no thread left running: the process ends).
#
#  1. A table of bad command lines: exit status 2 and the first line of stderr "vhost-xdp: TEXT".
#  2. --help: the usage on stdout, exit 0, stderr empty; an unknown option: exit 2, the usage on stderr.
#  3. Start-up failures after parsing (exit 1): a socket path in a directory that does not exist; an
#     interface that does not exist; a poll thread pinned to a CPU the machine does not have (CPU 1023:
#     the first thread has started by then, so this is the path that stops it again); each time the
#     socket file is gone afterwards.
# Needs nothing but the binary; no root.  Takes about a second.
set -u
. "$(dirname "$0")/lib.sh"

[ -x "$VX" ] || { not_ok "vhost-xdp is built ($VX): run make"; done_testing; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/vx-cli.XXXXXX")
SOCK=$TMP/vx.sock
cleanup() { rm -rf "$TMP"; }
on_exit cleanup

# run ARGS...: vhost-xdp with ARGS (10 s at most); sets RC, OUT (stdout) and ERR (stderr).
run() {
    timeout 10 "$VX" "$@" >"$TMP/out" 2>"$TMP/err" </dev/null
    RC=$?
    OUT=$(cat "$TMP/out") ERR=$(cat "$TMP/err")
}

# refused "TEXT" ARGS...: exit status 2, stdout empty, stderr's first line is "vhost-xdp: " + a line
# containing TEXT, and no socket file was made.
refused() {
    local text=$1; shift
    rm -f "$SOCK"
    run "$@"
    local first=${ERR%%$'\n'*}
    check "$* -> exit 2: ${first}" eval '[ "$RC" = 2 ] && [ -z "$OUT" ] && [[ $first == "vhost-xdp: "* ]] &&
        [[ $first == *"$text"* ]] && [ ! -e "$SOCK" ]' ||
        echo "#   want \"$text\", exit 2; got exit $RC, stderr: $(head -c 300 "$TMP/err")"
}

# === 1. Bad option values: one line each, exit status 2 ===
S=(--socket "$SOCK")
refused "at most 8 sockets" "${S[@]}" --socket "$TMP/b" --socket "$TMP/c" --socket "$TMP/d" --socket "$TMP/e" \
    --socket "$TMP/f" --socket "$TMP/g" --socket "$TMP/h" --socket "$TMP/i"
refused "several --socket: the devices are each other's port (VM-to-VM) or a switch's ports; drop --loopback" \
    "${S[@]}" --socket "$TMP/b" --socket "$TMP/c" --loopback
refused "--switch: a switch needs two ports or more" "${S[@]}" --switch --loopback
refused "choose one port: --loopback or --iface IF" "${S[@]}" --switch
refused "--fdb-view: only a switch has a MAC table" "${S[@]}" --socket "$TMP/b" --fdb-view 1
refused "--mac-age 0: want seconds from 1 to 86400" "${S[@]}" --socket "$TMP/b" --socket "$TMP/c" --mac-age 0
refused "--mac-age x: want seconds from 1 to 86400" "${S[@]}" --socket "$TMP/b" --socket "$TMP/c" --mac-age x
refused "--fdb-view -1: want a positive number of seconds" "${S[@]}" --socket "$TMP/b" --socket "$TMP/c" --fdb-view -1
refused "--socket PATH is required" --loopback
refused "choose one port: --loopback or --iface IF" "${S[@]}"
refused "choose one port: --loopback or --iface IF" "${S[@]}" --loopback --iface lo
refused "two --socket: the devices are each other's port" "${S[@]}" --socket "$TMP/b" --loopback
refused "given twice: each device needs its own socket" "${S[@]}" "${S[@]}"
refused "given twice: each device needs its own socket" "${S[@]}" --socket "$TMP/b" "${S[@]}"
refused "unexpected argument 'extra'" "${S[@]}" --loopback extra
refused "--queue x: want a queue id Q or a range Q-R of at most 8 queues" "${S[@]}" --iface lo --queue x
refused "--queue 0-8: want a queue id Q or a range" "${S[@]}" --iface lo --queue 0-8
refused "--queue 3-1: want a queue id Q or a range" "${S[@]}" --iface lo --queue 3-1
refused "--queue 0-: want a queue id Q or a range" "${S[@]}" --iface lo --queue 0-
refused "--queue : want a queue id Q or a range" "${S[@]}" --iface lo --queue ''
refused "--queues 2 and --queue 0-2: one NIC queue per queue pair" "${S[@]}" --iface lo --queues 2 --queue 0-2
refused "--queues 3 and --queue 0-1: one NIC queue per queue pair" "${S[@]}" --iface lo --queue 0-1 --queues 3
refused "--queue is for --iface" "${S[@]}" --loopback --queue 0-1
refused "--queues 0: want a number from 1 to 8" "${S[@]}" --loopback --queues 0
refused "--queues 9: want a number from 1 to 8" "${S[@]}" --loopback --queues 9
refused "--queues : want a number from 1 to 8" "${S[@]}" --loopback --queues ''
refused "--queues 2x: want a number from 1 to 8" "${S[@]}" --loopback --queues 2x
refused "--frames 100: out of range" "${S[@]}" --iface lo --frames 100
refused "--frames 3000: out of range" "${S[@]}" --iface lo --frames 3000
refused "--frame-size 1024: out of range" "${S[@]}" --iface lo --frame-size 1024
refused "--frame-size 3000: out of range" "${S[@]}" --iface lo --frame-size 3000
refused "--xdp-mode fast: want auto, native or skb" "${S[@]}" --iface lo --xdp-mode fast
refused "--trace=everything: want messages, rings or all" "${S[@]}" --loopback --trace=everything
refused "--pmd-sleep 10001: want microseconds from 0 to 10000" "${S[@]}" --loopback --pmd-sleep 10001
refused "--pmd-sleep : want microseconds" "${S[@]}" --loopback --pmd-sleep ''
refused "--pmd-mode bogus: want poll or adaptive" "${S[@]}" --loopback --pmd-mode bogus
check "--pmd-mode bogus: that one line is all of stderr" eval '[ "$(wc -l <"$TMP/err")" = 1 ]'
refused "--pmd-sleep 100 with --pmd-mode adaptive: choose one" "${S[@]}" --loopback --pmd-sleep 100 --pmd-mode adaptive
check "--pmd-sleep 100 --pmd-mode adaptive: that one line is all of stderr" eval '[ "$(wc -l <"$TMP/err")" = 1 ]'
refused "--mtu 67: want a number from 68 to 65535" "${S[@]}" --loopback --mtu 67
refused "--mtu 65536: want a number from 68 to 65535" "${S[@]}" --loopback --mtu 65536
refused "--mtu : want a number from 68 to 65535" "${S[@]}" --loopback --mtu ''
refused "--mtu 1800: this port carries at most 1778 (--frame-size 2048)" "${S[@]}" --iface lo --frame-size 2048 --mtu 1800
refused "--pmd-cores 1-0: want a CPU list like 1 or 0,1 or 2-3" "${S[@]}" --loopback --pmd-cores 1-0
refused "--pmd-cores a: want a CPU list" "${S[@]}" --loopback --pmd-cores a
refused "--pmd-cores 0,,1: want a CPU list" "${S[@]}" --loopback --pmd-cores 0,,1
refused "--pmd-cores : want a CPU list" "${S[@]}" --loopback --pmd-cores ''
refused "--pmd-cores 1024: want a CPU list" "${S[@]}" --loopback --pmd-cores 1024
refused "--pmd-cores 0-64: want a CPU list" "${S[@]}" --loopback --pmd-cores 0-64
refused "--stats 0: want a positive number of seconds" "${S[@]}" --loopback --stats 0
refused "--stats nan: want a positive number of seconds" "${S[@]}" --loopback --stats nan
refused "--ring-view -1: want a positive number of seconds" "${S[@]}" --loopback --ring-view -1
refused "--pcap-limit 10: want a size of at least 24 bytes" "${S[@]}" --loopback --pcap /dev/null --pcap-limit 10

# === 2. --help and an unknown option ===
run --help
check "--help: exit 0, the usage on stdout, nothing on stderr" \
    eval '[ "$RC" = 0 ] && [[ $OUT == "usage: vhost-xdp --socket PATH"* ]] && [[ $OUT == *"--pmd-cores LIST"* ]] && [ -z "$ERR" ]'
run "${S[@]}" --loopback --bogus
check "--bogus: exit 2, getopt's complaint and the usage on stderr, nothing on stdout" \
    eval '[ "$RC" = 2 ] && [ -z "$OUT" ] && [[ $ERR == *"--bogus"* ]] && [[ $ERR == *"usage: vhost-xdp"* ]]'
run "${S[@]}" --loopback -Q 1
check "-Q 1 (a letter only long options use): refused, exit 2" eval '[ "$RC" = 2 ] && [ -z "$OUT" ]'

# === 3. Start-up failures after the options were accepted: exit 1, nothing left ===
rm -f "$SOCK"
run --socket "$TMP/no-such-dir/vx.sock" --loopback
check "a socket in a missing directory: exit 1, \"cannot listen\"" \
    eval '[ "$RC" = 1 ] && [[ $ERR == *"no-such-dir/vx.sock: cannot listen: No such file or directory"* ]]'
run "${S[@]}" --iface "vxcli$$"
check "an interface that does not exist: exit 1, \"interface not found\", no socket file" \
    eval '[ "$RC" = 1 ] && [[ $ERR == *"vxcli$$: interface not found"* ]] && [ ! -e "$SOCK" ]'
run "${S[@]}" --loopback --pmd-cores 0,1023
check "--pmd-cores 0,1023 (no CPU 1023): exit 1, \"cannot start thread on CPU 1023\", socket file removed" \
    eval '[ "$RC" = 1 ] && [[ $ERR == *"pmd 0: polling"* ]] && [[ $ERR == *"pmd 1: cannot start thread on CPU 1023"* ]] &&
          [ ! -e "$SOCK" ]' || echo "#   exit $RC, stderr: $(head -c 400 "$TMP/err")"
done_testing
