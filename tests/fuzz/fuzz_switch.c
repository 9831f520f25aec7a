/*
 * tests/fuzz/fuzz_switch.c - libFuzzer target for switch.c's MAC table and
 * forwarding decision: any sequence of bursts, from any port, of frames of
 * any length and any addresses, with the clock moving and the ageing sweep
 * running between them.
 *
 * switch.c is included whole, so that its static parts (sw_classify,
 * sw_learn, sw_lookup, the table) are called directly; the ports' I/O it
 * would call (virtqueue.c, nic_afxdp.c, offload.c, pcap.c, pmd_loop.c) is
 * stubbed: only the decision is fuzzed, never a ring.
 *
 * The input: one byte of set-up (the number of ports, 2..VX_MAX_DEVS + 1,
 * the last one the uplink when bit 7 is set), then records
 *   [port] [nframes] then per frame: [len] [len bytes]
 * and a port byte of 0xff advances the clock by its next byte's seconds and
 * runs the ageing sweep; 0xfe makes its next byte the set of guest ports
 * that are up (bit p; the uplink always is: "A port that is down").  After
 * each burst the invariants are checked:
 *   - no frame is ever listed for the port it came from;
 *   - each frame is listed for one port (a hit) or for every other port
 *     (a flood), or none (a runt, or a known destination on its own port);
 *   - a frame listed for one port alone (with three ports or more: not a
 *     flood) is listed for a port that is up, and the table held its
 *     destination on that port before the burst (during a burst the table
 *     only learns sources on the port the burst came from, a lookup then
 *     says "own port", or loses an entry to eviction, a lookup then
 *     misses: neither can send a frame to another single port);
 *   - a burst sent whole to one port ("one port", sw_classify's fast
 *     path) is checked as the same burst listed for that port;
 *   - the table holds at most SW_ENTRIES stations, each on a port that
 *     exists, none with a multicast, broadcast or zero MAC;
 *   - the counters add up: hits + misses + floods + dropped = frames seen,
 *     and not_learned = the frames (of 14 bytes or more) whose source is a
 *     multicast, broadcast or zero MAC.
 * A broken invariant aborts with a line saying which.
 *
 *   make fuzz (tests/fuzz/run.sh fuzz_switch)
 */
#include "../../switch.c"

/* The target's own code is not instrumented for coverage: its checks walk
 * the whole table after every burst, and each comparison there called
 * libFuzzer's comparison hook (78% of the time, perf), for "coverage" that
 * says nothing about switch.c.  switch.c itself stays instrumented. */
#define HARNESS __attribute__((no_sanitize("coverage")))

#include <stdio.h>

/* === The I/O switch.c would do: stubs, never called by sw_classify ====== */

int vq_dequeue_burst_lend(struct vx_vring *vr, struct vx_pkt *pkts, int n, vq_deliver_fn *deliver, void *ctx)
{
    (void)vr, (void)pkts, (void)n, (void)deliver, (void)ctx;
    return 0;
}
int vq_enqueue_burst(struct vx_vring *vr, struct vx_pkt *pkts, int n)
{
    (void)vr, (void)pkts;
    return n;
}
int pmd_mtu_filter(struct vx_dev *dev, struct vx_vring *rx, struct vx_pkt *pkts, int n)
{
    (void)dev, (void)rx, (void)pkts;
    return n;
}
void ofl_to_guest(struct vx_vring *tx, const struct vx_vring *rx, struct vx_pkt *pkts, int n, struct vx_pkt *scratch,
                  ofl_send_fn *send, void *ctx)
{
    (void)tx, (void)rx, (void)scratch;
    send(ctx, pkts, n);
}
void ofl_from_nic(struct vx_vring *rx, struct vx_pkt *pkts, int n)
{
    (void)rx, (void)pkts, (void)n;
}
void pcap_burst(struct pcap_ring *r, enum pcap_dir dir, const struct vx_pkt *pkts, int n)
{
    (void)r, (void)dir, (void)pkts, (void)n;
}
int nic_rx_burst(struct nic_port *p, struct vx_pkt *pkts, int n)
{
    (void)p, (void)pkts, (void)n;
    return 0;
}
void nic_rx_release(struct nic_port *p, const struct vx_pkt *pkts, int n)
{
    (void)p, (void)pkts, (void)n;
}
int pmd_rarp_take(struct vx_dev *dev, const struct vx_vring *tx, struct vx_pkt *pkt)
{
    (void)dev, (void)tx, (void)pkt;
    return 0;
}
int nic_tx_alloc(struct nic_port *p, struct vx_pkt *pkts, int n)
{
    (void)p, (void)pkts, (void)n;
    return 0;
}
void nic_tx_submit(struct nic_port *p, struct vx_pkt *pkts, int nfilled, int nalloc)
{
    (void)p, (void)pkts, (void)nfilled, (void)nalloc;
}
uint32_t nic_queue(const struct nic_port *p)
{
    (void)p;
    return 0;
}

/* === The target ========================================================= */

#define BROKEN(...) do { fprintf(stderr, "invariant broken: " __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)

static struct vx_dev devs[VX_MAX_DEVS];
static struct nic_port *no_nics[1];

/* Start a switch of `nports` ports (the last the uplink if `uplink`),
 * table empty, counters zero. */
HARNESS static void fresh_switch(int nports, bool uplink)
{
    static bool started;
    int ndevs = uplink ? nports - 1 : nports;
    for (int d = 0; d < VX_MAX_DEVS; d++) {
        devs[d].queue_pairs = 1;
        devs[d].opt.socket_path = "fuzz.sock";
    }
    if (!started) {                     /* the lanes' buffers once: they are large */
        if (sw_start(devs, VX_MAX_DEVS, "fuzz0", no_nics, 1, 30) < 0)
            abort();
        started = true;
    }
    sw_nports = 0;
    for (int d = 0; d < ndevs; d++)
        sw_ports[sw_nports++] = (struct sw_port){ &devs[d], "fuzz.sock" };
    sw_uplink = uplink ? sw_nports : SW_UPLINK_NONE;
    if (uplink)
        sw_ports[sw_nports++] = (struct sw_port){ NULL, "fuzz0" };
    memset(sw_keys, 0, sizeof sw_keys);
    memset(sw_seen, 0, sizeof sw_seen);
    memset(sw_lanes[0].counts, 0, sizeof sw_lanes[0].counts);
    memset(sw_lanes[0].nout, 0, sizeof sw_lanes[0].nout);
    sw_lanes[0].one_port = -1;
    sw_lanes[0].last_src = ~0ull;
    sw_lanes[0].up = (1u << sw_nports) - 1;     /* every port up, until a 0xfe record says otherwise */
    sw_clock = 1;
    sw_started_at = 0;
}

/* The table as it was before the burst, and a lookup in it. */
static uint64_t keys_before[SW_ENTRIES];

HARNESS static int lookup_before(uint64_t mac)
{
    const uint64_t *slot = &keys_before[sw_bucket(mac) * SW_WAYS];
    for (int w = 0; w < SW_WAYS; w++)
        if (slot[w] && (slot[w] & SW_MAC_MASK) == mac)
            return (int)((slot[w] >> 48) & 0xff);
    return -1;
}

/* After a burst of n frames from port `in`: where each went. */
HARNESS static void check_burst(struct sw_lane *l, int in, const struct vx_pkt *pkts, int n)
{
    if (l->one_port >= 0) {             /* "one port": the whole burst for it, as a list would say */
        for (int d = 0; d < sw_nports; d++)
            if (l->nout[d])
                BROKEN("burst for port %d alone, and %d frames listed for port %d", l->one_port, l->nout[d], d);
        if (l->one_port >= sw_nports || !(l->up >> l->one_port & 1))
            BROKEN("burst for port %d alone, which is down or not a port", l->one_port);
        for (int j = 0; j < n; j++)
            l->out[l->one_port][j] = pkts[j];
        l->nout[l->one_port] = n;
        l->one_port = -1;
    }
    if (l->nout[in])
        BROKEN("%d frames listed back to their own port %d", l->nout[in], in);
    for (int i = 0; i < n; i++) {
        int to = 0;
        for (int d = 0; d < sw_nports; d++)
            for (int j = 0; j < l->nout[d]; j++)
                to += l->out[d][j].data == pkts[i].data;
        if (to != 0 && to != 1 && to != sw_nports - 1)
            BROKEN("frame %d of port %d listed for %d ports of %d", i, in, to, sw_nports);
        for (int d = 0; to == 1 && sw_nports > 2 && d < sw_nports; d++)
            for (int j = 0; j < l->nout[d]; j++)
                if (l->out[d][j].data == pkts[i].data && !(l->up >> d & 1))
                    BROKEN("frame %d of port %d listed for port %d alone, which is down", i, in, d);
        for (int d = 0; to == 1 && sw_nports > 2 && d < sw_nports; d++)
            for (int j = 0; j < l->nout[d]; j++)
                if (l->out[d][j].data == pkts[i].data && lookup_before(sw_mac(pkts[i].data)) != d)
                    BROKEN("frame %d of port %d listed for port %d alone, where the table did not have it", i, in, d);
    }
    memset(l->nout, 0, sizeof l->nout);
}

/* The table and the counters, whole. */
HARNESS static void check_table(uint64_t frames, uint64_t no_station)
{
    int n = 0;
    for (int i = 0; i < SW_ENTRIES; i++) {
        uint64_t key = sw_keys[i];
        if (!key)
            continue;
        n++;
        if ((int)((key >> 48) & 0xff) >= sw_nports)
            BROKEN("entry %d on port %d of %d", i, (int)((key >> 48) & 0xff), sw_nports);
        if ((key & 1) || !(key & SW_MAC_MASK))  /* the first byte's group bit is the word's lowest */
            BROKEN("entry %d holds a multicast or zero MAC", i);
        if ((int)(i / SW_WAYS) != (int)sw_bucket(key & SW_MAC_MASK))
            BROKEN("entry %d is in the wrong bucket", i);
    }
    if (n > SW_ENTRIES)
        BROKEN("%d entries", n);
    uint64_t seen = 0, not_learned = 0;
    for (int p = 0; p < sw_nports; p++) {
        const struct sw_counts *c = &sw_lanes[0].counts[p];
        seen += c->hits + c->misses + c->floods + c->dropped;
        not_learned += c->not_learned;
    }
    if (seen != frames)
        BROKEN("counters say %llu frames, %llu were sent", (unsigned long long)seen, (unsigned long long)frames);
    if (not_learned != no_station)
        BROKEN("not_learned says %llu frames, %llu came from no station", (unsigned long long)not_learned,
               (unsigned long long)no_station);
}

HARNESS int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int nports = 2 + (data[0] & 0x7f) % VX_MAX_DEVS;
    fresh_switch(nports, data[0] & 0x80);
    struct sw_lane *l = &sw_lanes[0];
    static uint8_t frames[VX_BURST][256];
    uint64_t total = 0, no_station = 0;
    size_t at = 1;
    while (at + 2 <= size) {
        uint8_t port = data[at++], count = data[at++];
        if (port == 0xff) {             /* time passes: the sweep */
            sw_clock += count;
            sw_tick((double)sw_clock);
            continue;
        }
        if (port == 0xfe) {             /* ports go down or up */
            l->up = count | (sw_uplink >= 0 ? 1u << sw_uplink : 0);
            continue;
        }
        int in = port % sw_nports, n = 0;
        for (int k = 0; k < count % (VX_BURST + 1) && at < size; k++) {
            uint32_t len = data[at++];
            if (len > size - at)
                len = (uint32_t)(size - at);
            memcpy(frames[n], data + at, len);
            at += len;
            if (len >= 14 && ((frames[n][6] & 1) || !sw_mac(frames[n] + 6)))
                no_station++;
            l->in[n] = (struct vx_pkt){ .len = len, .room = sizeof frames[n], .data = frames[n] };
            n++;
        }
        memcpy(keys_before, sw_keys, sizeof keys_before);
        sw_classify(l, in, l->in, n);
        check_burst(l, in, l->in, n);
        total += (uint64_t)n;
        check_table(total, no_station);
    }
    return 0;
}
