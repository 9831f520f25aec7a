#!/usr/bin/env bash
# tests/run.sh - run every test, show its TAP output, end with one summary line.
#   tests/run.sh [test ...]     (default: all of them, in this order)
set -u
cd "$(dirname "$0")/.."
all="tests/test_virtqueue tests/test_offload tests/test_ringview tests/test_protocol tests/test_hostile tests/test_adaptive tests/test_trace tests/test_tracedecode tests/test_pcap tests/test_mtu_rarp tests/test_cli.sh tests/test_packed tests/test_dpdk.sh tests/test_dpdk_reconnect.sh tests/test_adaptive_dpdk.sh tests/test_qemu.sh tests/test_qemu_adaptive.sh tests/test_qemu_mtu.sh tests/test_switch tests/test_vm2vm.sh tests/test_switch.sh tests/test_migrate.sh tests/test_migrate_packed.sh tests/test_tcp.sh tests/test_tso_dpdk.sh tests/test_qemu_mq.sh tests/test_afxdp.sh tests/test_afxdp_mq.sh tests/test_e2e.sh tests/test_demo.sh tests/test_lab1.sh tests/test_lab2.sh tests/test_lab3.sh tests/test_lab4.sh tests/test_lab5.sh tests/test_pmd_guest.sh tests/test_lab6.sh tests/test_lab7.sh tests/test_lab8.sh tests/test_lab9.sh bench/test_bench.sh tests/test_exercises.sh tests/test_shape.sh"
list=${*:-$all}
pass=0 fail=0 skipped=0
for t in $list; do
    echo "# ---- $t"
    out=$(mktemp)
    start=$SECONDS
    "./$t" 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    echo "# ---- $t: $((SECONDS - start)) s"
    p=$(grep -c '^ok ' "$out" | tr -d ' ')
    s=$(grep -c '^ok .*# SKIP' "$out" | tr -d ' ')
    f=$(grep -c '^not ok ' "$out" | tr -d ' ')
    # A test that dies without printing a failure still counts as one.
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then echo "not ok - $t exited with status $rc"; f=1; fi
    pass=$((pass + p - s)) skipped=$((skipped + s)) fail=$((fail + f))
    rm -f "$out"
done
echo "$pass passed, $fail failed, $skipped skipped"
[ "$fail" -eq 0 ]
