/*
 * switch.c - OVS-DPDK in miniature: an L2 learning switch between many
 * vhost-user ports and the AF_XDP uplink.  Second reading: read pmd_loop.c
 * first; this file is what its one call, sw_lane(), does.
 *
 * What it is.  With three or more --socket, or --iface and two or more
 * --socket (or --switch), vhost-xdp stops being a cross-connect and
 * becomes a switch: port p is the device of the p-th --socket, and the
 * uplink (--iface) is the port after the last socket.  Every frame goes
 * where OVS's NORMAL action would send it:
 *   - its source MAC is learned: "this MAC is behind the port it came
 *     from" (a multicast, broadcast or all-zero source never is: no
 *     station has one; the frame is still forwarded);
 *   - a destination the table knows (a "hit") goes to that port alone;
 *   - broadcast, multicast and an unknown unicast destination (a "miss")
 *     are flooded: to every port but the one the frame came from;
 *   - so is a known destination whose port is down (its guest's first RX
 *     ring stopped: the guest was stopped, shut down, migrated away, or
 *     its frontend left), also counted a miss; the entry stays (see below);
 *   - nothing ever goes back out of the port it came in on: a frame whose
 *     known destination is its own port is dropped.
 * The first frame towards a new station is a miss (flooded, as OVS's first
 * packet of a flow takes the slow path, the upcall); the station's answer
 * teaches the table where it is, and the next frames are hits (OVS's flow
 * cache).  --stats counts both per port; SIGUSR1 and --fdb-view print the
 * table as `ovs-appctl fdb/show` does.
 *
 * Lanes and threads: how a frame crosses poll threads.  It never does.
 * Lane k is queue pair k of every device plus NIC queue k of the uplink;
 * pmd_loop.c gives lane k to poll thread k % nthreads, as it gives it
 * queue pair k in every other mode.  A frame that comes in on lane k goes
 * out on lane k: the receiving guest's RX ring 2k, or NIC queue k's TX
 * ring, both polled (and so owned) by the same thread.  That is OVS's
 * "a TX queue per PMD thread on every port", made simple by giving every
 * port as many queue pairs as there are lanes (--queues).  No lock, no
 * handoff ring, no frame copied between threads.  The price: a frontend
 * should use every queue pair it is offered (a guest with fewer queues
 * than --queues misses what arrives on the others' lanes: dropped and
 * counted on its RX ring, which is not started).  With one queue pair,
 * the default, there is one lane and everything is one thread's.
 *
 * The one thing the threads share is the MAC table (the "forwarding
 * database", fdb).  It is lock-free: each entry is one 64-bit word (valid
 * bit, port, MAC), read whole with a relaxed load and changed with a
 * compare-and-swap, so a reader sees an entry before or after a change,
 * never half of one; a second word holds when the entry was last seen.
 * Two threads learning into the same slot at once: one wins, the other's
 * station is learned again from its next frame (a miss, one flood).
 *
 * Hostile input.  The table is SW_ENTRIES entries (4096), never more:
 * SW_BUCKETS buckets of SW_WAYS slots, a MAC's bucket chosen by a hash.
 * A new station in a full bucket evicts the bucket's least recently seen
 * entry (counted, "evicted").  So a guest sending from thousands of random
 * source MACs costs the others nothing worse than misses: an evicted
 * station's frames are flooded, and reach it, until it is learned again.
 * And no port can starve another: every iteration of a poll thread takes
 * one burst (VX_BURST frames) from each port of its lane, in turn.
 *
 * Ageing: an entry not seen for --mac-age seconds (default 300, as OVS's
 * mac-aging-time) is removed by the control thread's once-a-second sweep
 * (sw_tick), counted "aged".  A station that shows up on another port (a
 * guest restarted elsewhere, the RARP a migrated guest sends) moves at its
 * first frame there ("moved").
 *
 * A port that is down.  Between a guest's last frame from its old port and
 * its first from the new one, frames to it would go to the old port and be
 * lost there: for a live migration, that is every ping between the source
 * stopping and the guest's announce on the destination (0.1-0.3 s under
 * TCG, tests/test_migrate.sh).  A Linux bridge forgets a port's stations
 * when the port goes down (its FDB flush on link down); here the entry is
 * kept, so that the move stays visible, but not used while the port is
 * down, its first RX ring (queue pair 0's) stopped: the frame is flooded,
 * reaches the guest wherever it runs again, and its answer moves the
 * entry.  The old port's copy is dropped and counted on its RX ring, as
 * anything sent to a port whose frontend is gone.  (Queue pair 0, not the
 * frame's lane: a guest that uses fewer queue pairs than offered is up,
 * and misses what comes on the others' lanes, as before.)  Which ports are
 * up is read once per round (sw_lane: a load per port), not per frame.
 *
 * Offloads: between guests, offload.c does what the receiver did not
 * negotiate (ofl_to_guest), per destination.  With an uplink the devices
 * offer no checksum or TSO bits (main.c says so at start): the uplink
 * port would need each frame cut and checksummed per destination, which
 * this first version of the switch does not do; frames from the NIC are
 * completed once, before they are flooded (ofl_from_nic).
 *
 * Counters follow vhost_xdp.h's "Threads, atomics and counters": each
 * lane has its own per-port counters, written by the lane's thread only;
 * the control thread sums the lanes.  The table's "aged" counter is the
 * control thread's own.
 *
 * One ping through the switch, guest A (port 0) to guest B (port 1), the
 * table empty (tests/test_switch.sh does this with three guests):
 *   1. A's ARP request, to ff:ff:ff:ff:ff:ff from A: A's MAC is learned on
 *      port 0 ("learned"); broadcast: flooded to every port but 0
 *      ("floods"), so B, C and the uplink's peer each get one copy;
 *   2. B's ARP reply, to A from B: B's MAC is learned on port 1; A's MAC
 *      is in the table: to port 0 alone ("hits");
 *   3. the ICMP echo request, A to B, and B's echo reply: hits, both ways,
 *      and every frame after them.  C and the uplink never see them.
 * A unicast frame to a MAC that has not sent yet is a "miss": flooded as
 * a broadcast is, until its owner answers and is learned.
 *
 * SEND_RARP (QEMU's announcement of a migrated guest that cannot announce
 * itself, without GUEST_ANNOUNCE): pmd_loop.c's frame, taken at the port's
 * next burst from queue pair 0 and switched ahead of it as the guest's own
 * (learned on its port, flooded), as DPDK's vhost library puts it in the
 * guest's TX path for OVS to see.
 *
 * Not here yet: offloads towards the uplink; VLANs (every port is an
 * access port of one VLAN, shown as 0).
 *
 * Read in this order: the table (lookup, learn), the forwarding decision
 * (sw_classify), the sending (sw_flush), the receiving (sw_lane, the one
 * call from pmd_loop.c), then start/stop and the control thread's side
 * (ageing, the table view, the counters).
 */
#include "vhost_xdp.h"

#include <stdlib.h>

#define SW_WAYS         4                       /* slots per bucket: 4 x 8 bytes, half a cache line */
#define SW_BUCKETS      1024
#define SW_ENTRIES      (SW_BUCKETS * SW_WAYS)  /* 4096: the table's bound */
#define SW_VALID        (1ull << 63)            /* entry word: bit 63 valid, bits 48-55 port, 0-47 MAC */
#define SW_MAC_MASK     ((1ull << 48) - 1)
#define SW_UPLINK_NONE  (-1)

/* What a port is: a device (a vhost-user socket), or the uplink. */
struct sw_port {
    struct vx_dev *dev;             /* NULL: the uplink */
    const char *name;               /* the socket path, or the interface */
};

/* One lane's counters for one port (vhost_xdp.h: one writer, the lane's thread). */
struct sw_counts {
    uint64_t hits;                  /* frames in whose destination the table knew */
    uint64_t misses;                /* unknown unicast destination: flooded (the slow path) */
    uint64_t floods;                /* broadcast and multicast: flooded */
    uint64_t learned;               /* new stations learned behind this port */
    uint64_t moved;                 /* stations that moved here from another port */
    uint64_t evicted;               /* entries a station of this port pushed out of a full bucket */
    uint64_t not_learned;           /* frames from a multicast, broadcast or zero source (never learned) */
    uint64_t dropped;               /* frames not forwarded: runts, back to their own port, no NIC frame */
};

/* One lane: its buffers (its thread's only) and its counters. */
struct sw_lane {
    int k;                                  /* queue pair k, NIC queue k */
    struct pcap_ring *pcap;                 /* the polling thread's capture ring, or NULL */
    int in_port;                            /* the port of the burst being switched */
    struct vx_vring *in_tx;                 /* ... its guest TX ring (NULL: from the uplink) */
    struct vx_pkt in[VX_BURST];             /* the burst from one port ... */
    uint8_t *bufs[VX_BURST];                /* ... and its own buffers, for frames not lent */
    struct vx_pkt out[VX_MAX_DEVS + 1][VX_BURST];  /* per destination port: the frames for it */
    int nout[VX_MAX_DEVS + 1];
    int one_port;                           /* or the whole burst is for this port, unlisted (-1: no) */
    struct vx_pkt scratch[VX_BURST];        /* offload.c's, guest to guest */
    struct vx_pkt nic_rx[VX_BURST], nic_tx[VX_BURST];  /* AF_XDP frames, lent by nic_afxdp.c */
    int held_rx, held_tx;                   /* frames held across a guest access (sw_fault_recover) */
    struct vx_vring nic_ring;               /* stands for "a guest without offloads" to ofl_from_nic */
    uint32_t up;                            /* this round's ports that can take frames: bit p */
    uint64_t last_src;                      /* the last source learned, and when: a station's */
    uint32_t last_clock;                    /* frames refresh its entry once a second, not each */
    struct sw_counts counts[VX_MAX_DEVS + 1];
};

static struct sw_port sw_ports[VX_MAX_DEVS + 1];
static int sw_nports;
static int sw_uplink = SW_UPLINK_NONE;      /* the uplink's port number, or none */
static struct nic_port **sw_nics;           /* NIC queue k: lane k's uplink */
static struct sw_lane *sw_lanes;            /* one per queue pair */
static int sw_nlanes;
static bool sw_on;

/*
 * The table.  Slot i of bucket b is sw_keys[b * SW_WAYS + i], one word:
 *
 *    63  62      56 55      48 47                                     0
 *   +---+----------+----------+----------------------------------------+
 *   | V |    0     |   port   |  MAC, its 6 bytes in wire order        |
 *   +---+----------+----------+----------------------------------------+
 *
 * V (valid) set: the slot holds a station; 0: the slot is empty.  Being
 * one aligned 64-bit word, it is written and read whole (x86 and arm64 do
 * that for a plain aligned load or store): a thread that reads it sees a
 * station and its port together, never the MAC of one and the port of
 * another.  Nothing else needs ordering: an entry points nowhere, so no
 * other memory must be visible before it.
 *
 * sw_seen[i] is the sw_clock second slot i's station was last seen;
 * sw_clock counts seconds since sw_start, set by the control thread
 * (sw_tick) at least once a second and read relaxed by the poll threads:
 * no poll thread reads a clock per packet for the ageing.
 */
static uint64_t sw_keys[SW_ENTRIES];
static uint32_t sw_seen[SW_ENTRIES];
static uint32_t sw_clock = 1;
static uint32_t sw_mac_age = 300;
static double sw_started_at;
static uint64_t sw_aged;                    /* the control thread's */

/* === The table ============================================================ */

/* The 6 bytes at p as a number (wire order in the low 48 bits). */
static inline uint64_t sw_mac(const uint8_t *p)
{
    uint64_t m = 0;
    memcpy(&m, p, 6);
    return m;
}

/* A source MAC (as sw_mac) that names a station: not all zero, and not a
 * group address (the first byte's lowest bit: multicast, broadcast), which
 * no station sends from.  Only stations are learned. */
static inline bool sw_station(uint64_t mac)
{
    return mac && !(mac & 1);
}

/* A MAC's bucket: Fibonacci hashing (multiply by 2^64 / golden ratio, keep
 * the top 10 bits: 1024 buckets), which spreads MACs that differ in any
 * byte, so that a guest's MAC and its neighbour's (52:54:00:12:34:56 and
 * ...:57, as QEMU users number them) land in different buckets. */
static inline uint32_t sw_bucket(uint64_t mac)
{
    return (uint32_t)((mac * 0x9E3779B97F4A7C15ull) >> (64 - 10)) & (SW_BUCKETS - 1);
}

/* The port behind `mac`, or -1 if the table does not know it.  Up to
 * SW_WAYS relaxed loads in one cache line: the per-packet cost of a hit. */
static inline int sw_lookup(uint64_t mac)
{
    const uint64_t *slot = &sw_keys[sw_bucket(mac) * SW_WAYS];
    for (int w = 0; w < SW_WAYS; w++) {
        uint64_t key = __atomic_load_n(&slot[w], __ATOMIC_RELAXED);
        if (key && (key & SW_MAC_MASK) == mac)
            return (int)((key >> 48) & 0xff);
    }
    return -1;
}

/*
 * Learn that `mac` is behind `port`.  Known and unmoved: only its time is
 * refreshed (a store only when the second changed: a station's every frame
 * would otherwise write a shared cache line).  Known on another port: the
 * entry moves.  New: an empty slot of its bucket, else the least recently
 * seen one, evicted.  The time is written before the entry is published,
 * so that the sweep never finds a new entry with an old slot's time.
 */
static void sw_learn(struct sw_counts *c, uint64_t mac, int port)
{
    uint32_t i0 = sw_bucket(mac) * SW_WAYS, now = __atomic_load_n(&sw_clock, __ATOMIC_RELAXED);
    uint64_t key = SW_VALID | (uint64_t)port << 48 | mac;
    int victim = (int)i0;           /* the slot a new station takes: empty, or the least recently seen */
    uint32_t victim_seen = UINT32_MAX;
    for (uint32_t i = i0; i < i0 + SW_WAYS; i++) {
        uint64_t cur = __atomic_load_n(&sw_keys[i], __ATOMIC_RELAXED);
        uint32_t seen = __atomic_load_n(&sw_seen[i], __ATOMIC_RELAXED);
        if (cur && (cur & SW_MAC_MASK) == mac) {
            if (seen != now)
                __atomic_store_n(&sw_seen[i], now, __ATOMIC_RELAXED);
            if (cur != key && __atomic_compare_exchange_n(&sw_keys[i], &cur, key, false, __ATOMIC_RELEASE,
                                                          __ATOMIC_RELAXED))
                vx_counter_add(c->moved, 1);
            return;
        }
        if (victim_seen != 0 && (!cur || seen < victim_seen)) {     /* an empty slot wins outright */
            victim = (int)i;
            victim_seen = cur ? seen : 0;
        }
    }
    uint64_t old = __atomic_load_n(&sw_keys[victim], __ATOMIC_RELAXED);
    __atomic_store_n(&sw_seen[victim], now, __ATOMIC_RELAXED);
    if (!__atomic_compare_exchange_n(&sw_keys[victim], &old, key, false, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
        return;     /* another thread took the slot meanwhile: learned from the next frame */
    vx_counter_add(c->learned, 1);
    if (old)
        vx_counter_add(c->evicted, 1);
}

/* === Deciding: one burst, sorted by destination ============================ */

/* Add frame p to port d's list for this burst. */
static inline void sw_out(struct sw_lane *l, int d, const struct vx_pkt *p)
{
    l->out[d][l->nout[d]++] = *p;
}

/* "One port" ends (sw_classify): frames 0 .. none-1, hits on port `one`
 * not listed yet, go into its list.  Returns what `none` becomes: -1,
 * which no frame number equals, so the burst stays listed. */
static int sw_spill(struct sw_lane *l, int one, const struct vx_pkt *pkts, int none)
{
    for (int j = 0; j < none; j++)
        sw_out(l, one, &pkts[j]);
    return -1;
}

#define SW_FLOOD  (-1)      /* sw_decide: to every other port */
#define SW_DROP   (-2)      /* ... to none */

/*
 * The forwarding decision for one frame from port `in` (at least an
 * Ethernet header): learn its source, then the port of its destination if
 * the table knows it and the port is up (a hit), else SW_FLOOD; SW_DROP
 * for a destination behind the port it came from, where it never goes back.
 */
static inline int sw_decide(struct sw_lane *l, struct sw_counts *c, int in, const uint8_t *f, uint32_t now)
{
    uint64_t src = sw_mac(f + 6), dst = sw_mac(f);
    if (!sw_station(src))
        vx_counter_add(c->not_learned, 1);
    else if (src != l->last_src || now != l->last_clock || sw_lookup(src) != in) {
        sw_learn(c, src, in);   /* once a second per station and burst, unless it moved */
        l->last_src = src;
        l->last_clock = now;
    }
    int to = (f[0] & 1) ? -1 : sw_lookup(dst);
    if (to >= sw_nports || to == in)    /* its own port (or a stale number) */
        return SW_DROP;
    return to >= 0 && (l->up >> to & 1) ? to : SW_FLOOD;
}

/*
 * The decision for every frame of a burst from port `in`: to the one known
 * port, to every other port, or to none.  The vx_pkt is copied into each
 * destination's list; its bytes are not (a flooded frame is copied once
 * per destination, by that destination's send, straight from where it
 * lies).
 *
 * Two fast paths, for what a loaded switch mostly sees: streams, frame
 * after frame between the same two stations (OVS batches a burst's packets
 * by flow for the same reason).
 *   "Same stations": a frame whose 12 address bytes are the frame before's,
 *   which was a hit, goes where it went, without learning or looking up
 *   again (nothing between the two frames can have changed that: the
 *   table learns only the sources of this burst, and the frame before's
 *   was learned before its destination was looked up).  Not for a source
 *   that is no station (counted not_learned, frame by frame, by sw_decide).
 *   "One port": while every frame of the burst so far is a hit on the same
 *   port, nothing is listed; the first frame that is not spills them into
 *   that port's list, and a burst that never had one is sent as it lies
 *   (one_port).
 * Measured (make bench, switch, 64 B, against the build before each,
 * interleaved): "one port" +4% split and packed (TSC cycles per packet
 * 142 -> 136, 145 -> 141), then "same stations" +8% split and +25% packed
 * (141 -> 126, 145 -> 116): the switch then costs what the cross-connect
 * does.
 */
static void sw_classify(struct sw_lane *l, int in, struct vx_pkt *pkts, int n)
{
    struct sw_counts *c = &l->counts[in];
    uint32_t now = __atomic_load_n(&sw_clock, __ATOMIC_RELAXED);
    int one = -1, none = 0;         /* frames 0 .. none-1 are hits on port `one`, not listed yet */
    uint64_t prev_a = 0;            /* the frame before: its 12 address bytes ... */
    uint32_t prev_b = 0;
    int prev_to = SW_DROP;          /* ... and where it went */
    for (int i = 0; i < n; i++) {
        const uint8_t *f = pkts[i].data;
        int to = SW_DROP;                   /* not even an Ethernet header */
        if (pkts[i].len >= 14) {
            uint64_t a;
            uint32_t b;
            memcpy(&a, f, 8);
            memcpy(&b, f + 8, 4);
            if (sw_station(sw_mac(f + 6)) && prev_to >= 0 && a == prev_a && b == prev_b)
                to = prev_to;               /* "same stations" */
            else
                to = sw_decide(l, c, in, f, now);
            prev_a = a, prev_b = b;
        }
        prev_to = to;
        if (to >= 0) {                      /* a hit */
            vx_counter_add(c->hits, 1);
            if (none == i && (one == to || none == 0)) {    /* "one port" still */
                one = to;
                none++;
                continue;
            }
            none = sw_spill(l, one, pkts, none);
            sw_out(l, to, &pkts[i]);
            continue;
        }
        none = sw_spill(l, one, pkts, none);
        if (to == SW_DROP) {
            vx_counter_add(c->dropped, 1);
            continue;
        }
        vx_counter_add(*(f[0] & 1 ? &c->floods : &c->misses), 1);
        for (int d = 0; d < sw_nports; d++)
            if (d != in)
                sw_out(l, d, &pkts[i]);
    }
    l->one_port = none > 0 ? one : -1;      /* none > 0 here: the whole burst, never spilled */
}

/* === Sending: each destination's list ====================================== */

struct sw_send_ctx {
    struct sw_lane *l;
    struct vx_dev *to;
    struct vx_vring *rx;
};

/* Frames for a guest, as it may have them (ofl_to_guest made them so):
 * within its MTU, into its RX ring if its frontend is there; if not, they
 * are dropped and counted on that RX ring, as VM-to-VM does. */
static void sw_send_guest(void *arg, struct vx_pkt *pkts, int n)
{
    struct sw_send_ctx *s = arg;
    int fit = pmd_mtu_filter(s->to, s->rx, pkts, n);
    int sent = 0;
    if (__atomic_load_n(&s->rx->ready, __ATOMIC_SEQ_CST))
        sent = vq_enqueue_burst(s->rx, pkts, fit);
    else
        vx_counter_add(s->rx->stats.drops, fit);
    if (s->l->pcap)
        pcap_burst(s->l->pcap, PCAP_TO_GUEST, pkts, sent);
}

/* Frames from a guest for the uplink: each copied into a free UMEM frame.
 * The devices offer no offload with an uplink, so a frame asking for one
 * (a checksum left partial, a TSO packet) is one no driver should send:
 * dropped, as is one larger than a frame; so is what finds no free frame. */
static void sw_send_nic(struct sw_lane *l, int d, struct vx_pkt *pkts, int n)
{
    struct nic_port *nic = sw_nics[l->k];
    int frames = l->held_tx = nic_tx_alloc(nic, l->nic_tx, n);
    int filled = 0;
    for (int i = 0; i < n && filled < frames; i++) {
        if (pkts[i].len > l->nic_tx[filled].room || pkts[i].hdr.flags || pkts[i].hdr.gso_type)
            continue;
        memcpy(l->nic_tx[filled].data, pkts[i].data, pkts[i].len);
        l->nic_tx[filled].len = pkts[i].len;
        l->nic_tx[filled].hdr = (struct vx_net_hdr){ 0 };
        filled++;
    }
    nic_tx_submit(nic, l->nic_tx, filled, frames);
    l->held_tx = 0;
    if (filled < n)
        vx_counter_add(l->counts[d].dropped, (uint64_t)(n - filled));
}

/*
 * One destination's frames of this burst, sent.  Why lists,
 * and not each frame sent as it is decided: a guest's RX ring is written
 * once per list (vq_enqueue_burst: the used index published, and the guest
 * interrupted if it asked, once for all of them), and the uplink's frames
 * are taken and submitted once (one kick).  That is what a burst is for;
 * frame by frame, a burst of 32 to one guest would publish and maybe
 * interrupt 32 times.  The lists keep each port's frames in the order they
 * came, so a flow is never reordered.
 */
static void sw_send(struct sw_lane *l, int d, struct vx_pkt *pkts, int n)
{
    if (d == sw_uplink) {
        sw_send_nic(l, d, pkts, n);
        return;
    }
    struct sw_send_ctx s = { l, sw_ports[d].dev, &sw_ports[d].dev->vrings[2 * l->k] };
    if (l->in_tx)       /* guest to guest: offload.c does what the receiver did not negotiate */
        ofl_to_guest(l->in_tx, s.rx, pkts, n, l->scratch, sw_send_guest, &s);
    else                /* from the uplink: headers already written (sw_from_nic) */
        sw_send_guest(&s, pkts, n);
}

/* The burst `pkts` decided by sw_classify, sent: whole to one port, or
 * each destination's list. */
static void sw_flush(struct sw_lane *l, struct vx_pkt *pkts, int n)
{
    if (l->one_port >= 0) {
        int d = l->one_port;
        l->one_port = -1;
        sw_send(l, d, pkts, n);
        return;
    }
    for (int d = 0; d < sw_nports; d++) {
        int nd = l->nout[d];
        if (!nd)
            continue;
        l->nout[d] = 0;
        sw_send(l, d, l->out[d], nd);
    }
}

/* === Receiving: one burst from each port ================================== */

/* vq_dequeue_burst_lend's callback: the burst, lent from the sending
 * guest's memory, captured, decided and sent before its chains go back. */
static void sw_deliver(void *arg, struct vx_pkt *pkts, int n)
{
    struct sw_lane *l = arg;
    if (l->pcap)
        pcap_burst(l->pcap, PCAP_FROM_GUEST, pkts, n);
    sw_classify(l, l->in_port, pkts, n);
    sw_flush(l, pkts, n);
}

/* One burst from guest port p's TX ring 2k+1. */
static int sw_from_guest(struct sw_lane *l, int p)
{
    struct vx_vring *tx = &sw_ports[p].dev->vrings[2 * l->k + 1];
    if (!__atomic_load_n(&tx->ready, __ATOMIC_SEQ_CST))
        return 0;
    for (int i = 0; i < VX_BURST; i++)      /* lent frames left data pointing into guest memory */
        l->in[i].data = l->bufs[i];
    l->in_port = p;
    l->in_tx = tx;
    int injected = pmd_rarp_take(sw_ports[p].dev, tx, &l->in[0]);     /* SEND_RARP: queue pair 0 only */
    if (injected)
        sw_deliver(l, l->in, 1);
    return injected + vq_dequeue_burst_lend(tx, l->in, VX_BURST, sw_deliver, l);
}

/* One burst from the uplink's NIC queue k: checksums the sender left
 * partial completed once (no guest of a switch with an uplink has
 * GUEST_CSUM), then decided and sent; the frames go back to the kernel. */
static int sw_from_nic(struct sw_lane *l)
{
    struct nic_port *nic = sw_nics[l->k];
    int n = l->held_rx = nic_rx_burst(nic, l->nic_rx, VX_BURST);
    if (n == 0)
        return 0;
    ofl_from_nic(&l->nic_ring, l->nic_rx, n);
    l->in_port = sw_uplink;
    l->in_tx = NULL;
    sw_classify(l, sw_uplink, l->nic_rx, n);
    sw_flush(l, l->nic_rx, n);
    nic_rx_release(nic, l->nic_rx, n);
    l->held_rx = 0;
    return n;
}

/*
 * pmd_loop.c's one call: one burst from every port of lane k, in turn
 * (the round that keeps any port from starving the others: a port that
 * always has 32 frames waiting gets one burst per round, as a port with
 * one frame does).  Returns the frames taken, for the idle back-off.
 * What a frame costs here beyond the cross-connect: two lookups (source
 * and destination, a cache line each), a learn only when its station's
 * entry is stale, and a copy of its vx_pkt into its destination's list.
 */
int sw_lane(int k, struct pcap_ring *pcap)
{
    struct sw_lane *l = &sw_lanes[k];
    int moved = 0;
    l->pcap = pcap;
    l->up = 0;          /* which ports are up ("A port that is down"): the uplink always */
    for (int p = 0; p < sw_nports; p++)
        if (p == sw_uplink || __atomic_load_n(&sw_ports[p].dev->vrings[0].ready, __ATOMIC_ACQUIRE))
            l->up |= 1u << p;
    for (int p = 0; p < sw_nports; p++)
        moved += p == sw_uplink ? sw_from_nic(l) : sw_from_guest(l, p);
    return moved;
}

/* After a SIGBUS in guest memory (pmd_loop.c, "Guest memory faults"):
 * the AF_XDP frames lane k held across the guest access go back to the
 * port, and the burst's lists are forgotten. */
void sw_fault_recover(int k)
{
    struct sw_lane *l = &sw_lanes[k];
    if (l->held_tx)
        nic_tx_submit(sw_nics[k], l->nic_tx, 0, l->held_tx);
    if (l->held_rx)
        nic_rx_release(sw_nics[k], l->nic_rx, l->held_rx);
    l->held_tx = l->held_rx = 0;
    memset(l->nout, 0, sizeof l->nout);
    l->one_port = -1;
}

/* === Start and stop (main.c) ============================================= */

/* The ports and the lanes, before the poll threads start (they read all of
 * it without a lock: pthread_create publishes it).  ndevs devices, then the
 * uplink if nnics (one NIC queue per lane).  Returns 0, or -1 after a log
 * line. */
int sw_start(struct vx_dev *devs, int ndevs, const char *ifname, struct nic_port **nics, int nnics,
             uint32_t mac_age)
{
    sw_nports = 0;
    for (int d = 0; d < ndevs; d++)
        sw_ports[sw_nports++] = (struct sw_port){ &devs[d], devs[d].opt.socket_path };
    if (nnics) {
        sw_uplink = sw_nports;
        sw_ports[sw_nports++] = (struct sw_port){ NULL, ifname };
    }
    sw_nics = nics;
    sw_nlanes = (int)devs[0].queue_pairs;
    sw_mac_age = mac_age;
    sw_started_at = vx_now();
    sw_lanes = calloc((size_t)sw_nlanes, sizeof *sw_lanes);
    for (int k = 0; sw_lanes && k < sw_nlanes; k++) {
        sw_lanes[k].k = k;
        sw_lanes[k].last_src = ~0ull;       /* no MAC: the first frame always learns */
        sw_lanes[k].one_port = -1;
        for (int b = 0; b < VX_BURST; b++) {
            sw_lanes[k].in[b].room = sw_lanes[k].scratch[b].room = VX_PKT_MAX;
            sw_lanes[k].in[b].data = sw_lanes[k].bufs[b] = malloc(VX_PKT_MAX);
            sw_lanes[k].scratch[b].data = malloc(VX_PKT_MAX);   /* untouched until an offload needs it */
            if (!sw_lanes[k].bufs[b] || !sw_lanes[k].scratch[b].data) {
                vx_log("switch: out of memory for lane %d's buffers", k);
                return -1;
            }
        }
    }
    if (!sw_lanes) {
        vx_log("switch: out of memory for %d lanes", sw_nlanes);
        return -1;
    }
    sw_on = true;
    return 0;
}

bool sw_running(void)
{
    return sw_on;
}

/* When set-up fails after sw_start(), with every poll thread stopped.  At
 * the end of a run the lanes stay until the exit, as the NIC's ports do:
 * their counters are read for the exit lines, and a poll thread that
 * pmd_stop() had to leave behind may still be in one. */
void sw_stop(void)
{
    for (int k = 0; sw_lanes && k < sw_nlanes; k++)
        for (int b = 0; b < VX_BURST; b++) {
            free(sw_lanes[k].bufs[b]);
            free(sw_lanes[k].scratch[b].data);
        }
    free(sw_lanes);
    sw_lanes = NULL;
    sw_on = false;
}

/* The log's picture of who polls what, once the threads exist:
 *   vhost-xdp: switch: pmd 0 polls lane 0: port 0 (a.sock) queue pair 0, ..., port 3 (uplink veth0) queue 0 */
void sw_log_lanes(int nthreads)
{
    for (int k = 0; k < sw_nlanes; k++) {
        char line[900];
        int n = snprintf(line, sizeof line, "switch: pmd %d polls lane %d:", k % nthreads, k);
        for (int p = 0; p < sw_nports && n < (int)sizeof line; p++)
            n += snprintf(line + n, sizeof line - (size_t)n, "%s port %d (%s%s) %s %d", p ? "," : "", p,
                          p == sw_uplink ? "uplink " : "", sw_ports[p].name,
                          p == sw_uplink ? "queue" : "queue pair", p == sw_uplink ? (int)nic_queue(sw_nics[k]) : k);
        vx_log("%s", line);
    }
}

/* === The control thread's side: ageing, the table view, the counters ======= */

/* Called by the control loop at every wake-up (at least once a second):
 * the clock the poll threads stamp entries with, and, once a second, the
 * ageing sweep.  An entry refreshed by a poll thread between our two loads
 * and the compare-and-swap may be aged a moment early: one miss, one flood,
 * and it is learned again. */
void sw_tick(double now)
{
    uint32_t clock = 1 + (uint32_t)(now - sw_started_at);
    if (!sw_on || clock == __atomic_load_n(&sw_clock, __ATOMIC_RELAXED))
        return;
    __atomic_store_n(&sw_clock, clock, __ATOMIC_RELAXED);
    for (int i = 0; i < SW_ENTRIES; i++) {
        uint64_t key = __atomic_load_n(&sw_keys[i], __ATOMIC_RELAXED);
        uint32_t seen = __atomic_load_n(&sw_seen[i], __ATOMIC_RELAXED);
        if (key && clock - seen > sw_mac_age &&
            __atomic_compare_exchange_n(&sw_keys[i], &key, 0, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            vx_counter_add(sw_aged, 1);
    }
}

/* An entry of the view: port, MAC, age. */
struct sw_row {
    int port;
    uint64_t mac;
    uint32_t age;
};

static int sw_row_cmp(const void *a, const void *b)
{
    const struct sw_row *x = a, *y = b;
    if (x->port != y->port)
        return x->port - y->port;
    return memcmp(&x->mac, &y->mac, 6);     /* stable enough for a view: grouped by port */
}

/*
 * The table as `ovs-appctl fdb/show br0` prints it, port by port (there
 * are no VLANs here: always 0), then what the port numbers are.  From
 * tests/test_switch.c's run, three guests:
 *
 *    port  VLAN  MAC                Age
 *       0     0  52:54:00:00:00:01    0
 *       1     0  52:54:00:00:00:02    1
 *   ports: 0 a.sock, 1 b.sock, 2 c.sock; 2 of 4096 entries
 */
void sw_print_fdb(FILE *out)
{
    static struct sw_row rows[SW_ENTRIES];      /* the control thread's alone */
    int n = 0;
    uint32_t clock = __atomic_load_n(&sw_clock, __ATOMIC_RELAXED);
    for (int i = 0; i < SW_ENTRIES; i++) {
        uint64_t key = __atomic_load_n(&sw_keys[i], __ATOMIC_RELAXED);
        uint32_t seen = __atomic_load_n(&sw_seen[i], __ATOMIC_RELAXED);
        if (key)
            rows[n++] = (struct sw_row){ (int)((key >> 48) & 0xff), key & SW_MAC_MASK, clock > seen ? clock - seen : 0 };
    }
    qsort(rows, (size_t)n, sizeof rows[0], sw_row_cmp);
    fprintf(out, " port  VLAN  MAC                Age\n");
    for (int i = 0; i < n; i++) {
        const uint8_t *m = (const uint8_t *)&rows[i].mac;
        fprintf(out, "%5d  %4d  %02x:%02x:%02x:%02x:%02x:%02x  %3u\n", rows[i].port, 0, m[0], m[1], m[2], m[3],
                m[4], m[5], rows[i].age);
    }
    fprintf(out, "ports:");
    for (int p = 0; p < sw_nports; p++)
        fprintf(out, "%s %d %s%s", p ? "," : "", p, p == sw_uplink ? "uplink " : "", sw_ports[p].name);
    fprintf(out, "; %d of %d entries\n", n, SW_ENTRIES);
}

/* One port's counters, summed over the lanes (relaxed loads: a snapshot at
 * most a burst stale). */
static struct sw_counts sw_sum(int p)
{
    struct sw_counts t = { 0 };
    for (int k = 0; k < sw_nlanes; k++) {
        const struct sw_counts *c = &sw_lanes[k].counts[p];
#define ADD(f) t.f += __atomic_load_n(&c->f, __ATOMIC_RELAXED)
        ADD(hits); ADD(misses); ADD(floods); ADD(learned); ADD(moved); ADD(evicted); ADD(not_learned); ADD(dropped);
#undef ADD
    }
    return t;
}

/* --stats and the exit lines (`what` is "stats" or "exit"): a line per
 * port, counting the frames that came in on it (--stats leaves out a port
 * that has counted nothing yet), then the table's line:
 *   vhost-xdp: stats: switch port 0 (a.sock): hits 812, misses 3, floods 6, learned 1, moved 0, evicted 0, ...
 *   vhost-xdp: stats: switch table: 3 entries, aged 0 */
void sw_print_stats(const char *what)
{
    if (!sw_on)
        return;
    int entries = 0;
    for (int i = 0; i < SW_ENTRIES; i++)
        entries += __atomic_load_n(&sw_keys[i], __ATOMIC_RELAXED) != 0;
    for (int p = 0; p < sw_nports; p++) {
        struct sw_counts c = sw_sum(p);
        if (!strcmp(what, "stats") && !(c.hits | c.misses | c.floods | c.not_learned | c.dropped))
            continue;
        vx_log("%s: switch port %d (%s%s): hits %llu, misses %llu, floods %llu, learned %llu, moved %llu, "
               "evicted %llu, not learned %llu, dropped %llu", what, p, p == sw_uplink ? "uplink " : "",
               sw_ports[p].name, (unsigned long long)c.hits, (unsigned long long)c.misses,
               (unsigned long long)c.floods, (unsigned long long)c.learned, (unsigned long long)c.moved,
               (unsigned long long)c.evicted, (unsigned long long)c.not_learned, (unsigned long long)c.dropped);
    }
    vx_log("%s: switch table: %d of %d entries, aged %llu (--mac-age %u)", what, entries, SW_ENTRIES,
           (unsigned long long)__atomic_load_n(&sw_aged, __ATOMIC_RELAXED), sw_mac_age);
}
