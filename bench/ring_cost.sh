#!/usr/bin/env bash
# bench/ring_cost.sh - `make bench-cost`: instructions per packet in virtqueue.c, guest to guest,
# counted by valgrind's callgrind (bench/ring_cost.c says what runs and why a count, not a rate).
#
#   bench/ring_cost.sh            this tree: split and packed rings, 64 and 1518 B frames
#   bench/ring_cost.sh REV        the same for the git revision REV too (its virtqueue.c and
#                                 vhost_xdp.h), and the ratio this tree / REV per row
#   RING_COST_PACKETS=100000      packets per run
# A second table: the same rows with live migration's dirty log on (virtqueue.c, "Live migration:
# dirty-page logging"), counted, and timed as well: the median of 5 runs each way, interleaved (a
# rate of the ring code alone in one thread; on a loaded machine read the counts).
# The counts are the same on every run with the same compiler: a difference of one instruction
# per packet is real.  They are not speed (`make bench` measures that); they say whether a change
# to the ring code made it do more or less work.  Needs valgrind and make's CC.
set -u
cd "$(dirname "$0")/.."
PACKETS=${RING_COST_PACKETS:-100000}
[[ $PACKETS =~ ^[1-9][0-9]{0,8}$ ]] || { echo "ring_cost: RING_COST_PACKETS=$PACKETS: want a count" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "ring_cost: valgrind not found: apt-get install -y valgrind" >&2; exit 1; }
CC=${CC:-cc}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ring_cost.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

# build NAME DIR: bench/ring_cost.c against DIR's virtqueue.c and vhost_xdp.h.
build() {
    $CC -O2 -g -std=gnu11 -D_GNU_SOURCE -I"$2" -o "$tmp/$1" bench/ring_cost.c "$2/virtqueue.c" ||
        { echo "ring_cost: cannot build against $2" >&2; exit 1; }
}
build this .
other=''
if [ $# -ge 1 ]; then
    mkdir "$tmp/rev"
    git archive "$1" virtqueue.c vhost_xdp.h | tar -x -C "$tmp/rev" ||
        { echo "ring_cost: $1: not a revision with virtqueue.c and vhost_xdp.h" >&2; exit 2; }
    build other "$tmp/rev"
    other=$1
fi

# per_packet NAME RING SIZE [log]: callgrind's instruction count inside vq_dequeue_burst_lend / packets.
per_packet() {
    valgrind --tool=callgrind --toggle-collect=vq_dequeue_burst_lend --callgrind-out-file="$tmp/cg.out" \
        "$tmp/$1" "$2" "$3" "$PACKETS" ${4:-} >"$tmp/run.out" 2>&1 || { echo "ring_cost: $1 $2 $3 failed" >&2; cat "$tmp/run.out" >&2; exit 1; }
    local ir n
    ir=$(sed -n 's/^summary: \([0-9]*\).*/\1/p' "$tmp/cg.out")
    n=$(sed -n 's/.* B: \([0-9]*\) packets.*/\1/p' "$tmp/run.out")
    awk -v a="$ir" -v b="$n" 'BEGIN { printf "%.1f", a / b }'
}

echo "ring_cost: instructions per packet in vq_dequeue_burst_lend + vq_enqueue_burst (callgrind), $PACKETS packets, $($CC --version | head -n 1)"
if [ -n "$other" ]; then
    printf '%-8s %7s %14s %14s %8s\n' ring frame "this tree" "$other" ratio
else
    printf '%-8s %7s %14s\n' ring frame "this tree"
fi
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }    # ratio A B: A / B
declare -A counted      # "RING SIZE": this tree's count, for the second table too
for ring in split packed; do
    for size in 64 1518; do
        a=$(per_packet this $ring $size)
        counted[$ring $size]=$a
        if [ -n "$other" ]; then
            b=$(per_packet other $ring $size)
            printf '%-8s %5s B %14s %14s %8s\n' $ring $size "$a" "$b" "$(ratio "$a" "$b")"
        else
            printf '%-8s %5s B %14s\n' $ring $size "$a"
        fi
    done
done

# The dirty log: counted on and off, and timed (ns per packet, median of 5 interleaved runs of 10x the
# packets, natively).
# timed RING SIZE [log]: one native run's ns per packet.
timed() { "$tmp/this" "$1" "$2" $((PACKETS * 10)) ${3:-} | sed -n 's/.* packets, \([0-9.]*\) ns each.*/\1/p'; }
median() { tr ' ' '\n' | sort -n | sed -n 3p; }
echo
echo "ring_cost: the same with live migration's dirty log on (this tree): instructions per packet, and ns per packet timed (median of 5, interleaved)"
printf '%-8s %7s %10s %10s %8s %10s %10s %8s\n' ring frame "instr off" "instr on" ratio "ns off" "ns on" ratio
for ring in split packed; do
    for size in 64 1518; do
        a=${counted[$ring $size]}
        b=$(per_packet this $ring $size log)
        offs='' ons=''
        for i in 1 2 3 4 5; do offs="$offs $(timed $ring $size)"; ons="$ons $(timed $ring $size log)"; done
        c=$(echo $offs | median) d=$(echo $ons | median)
        printf '%-8s %5s B %10s %10s %8s %10s %10s %8s\n' $ring $size "$a" "$b" "$(ratio "$b" "$a")" "$c" "$d" \
            "$(ratio "$d" "$c")"
    done
done
