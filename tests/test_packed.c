/*
 * tests/test_packed.c - unit tests for virtqueue.c's packed rings (virtio 1.2 §2.8).
 *
 * The test plays the guest driver of a packed ring: it writes descriptors
 * into the one descriptor ring with the AVAIL/USED flags of its wrap counter
 * (the head's flags last), calls vq_dequeue_burst() (guest TX) or
 * vq_enqueue_burst() (guest RX), and reads back what a driver reads: the used
 * descriptors {id, len, flags} at its next used slot, skipping each chain's
 * other slots, and the call eventfd.
 *
 * Guest memory is one region mmap'ed between PROT_NONE guard pages, as in
 * test_virtqueue.c: an access outside it is a SIGSEGV, reported as "not ok".
 * Guest-physical addresses (descriptors) differ from the frontend's virtual
 * ones (the ring areas), so mixing the two spaces fails.
 *
 * Covered: attach (any size, alignment, the base slot); finding where a ring
 * stands after a backend restart when SET_VRING_BASE is stale (normal and
 * stale bases, in-flight chains, a full ring, the ambiguous multi-slot case,
 * flags no driver writes); TX and RX going round
 * the ring many times at sizes 256 and 100 (not a power of two) with chains
 * that straddle the end of the ring; indirect tables; mergeable RX buffers
 * over the wrap; packets too big; the driver event suppression modes
 * ENABLE / DISABLE / DESC (also across the wrap); VIRTIO_F_IN_ORDER (one
 * used descriptor per TX burst, RX unbatched); the lending TX dequeue
 * (vq_dequeue_burst_lend: frames lent in place, used descriptors only after
 * deliver); malformed rings, which must be marked broken, never crash; the
 * ring view.
 *
 * Build: see the Makefile (tests/test_packed: tests/test_packed.c virtqueue.c).
 * Output: TAP, the plan last.  Exit status 0 iff every test passed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "vhost_xdp.h"
#include "unit.h"             /* TAP cases, fatal-signal report, guarded memory */
#include "dirty_log.h"        /* the dirty-log bitmap and check_marked(), as in test_virtqueue.c */

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

/* === Guest memory ======================================================== */

#define GPA      0x100000ull             /* guest-physical base */
#define UVA      0x7f0000000000ull       /* frontend virtual base */
#define MEM_SIZE (2u * 1024 * 1024)
#define DESC_OFF   0x0000u               /* room for 1024 descriptors */
#define DRIVER_OFF 0x4000u               /* driver event suppression area */
#define DEVICE_OFF 0x4004u               /* device event suppression area */
#define TABLE_OFF  0x8000u               /* indirect tables, 256 bytes per id */
#define BUF_OFF    0x100000u             /* buffers, BUF_SIZE per id */
#define BUF_SIZE   2048u

#define F(bit) (1ull << (bit))
#define PACKED (F(VIRTIO_F_RING_PACKED) | F(VIRTIO_F_VERSION_1))
#define MRG F(VIRTIO_NET_F_MRG_RXBUF)
#define IND F(VIRTIO_RING_F_INDIRECT_DESC)
#define EVT F(VIRTIO_RING_F_EVENT_IDX)
#define INO F(VIRTIO_F_IN_ORDER)
#define HDR 12u                          /* VERSION_1: the 12-byte net header */

static struct vx_mem mem;
static uint8_t *host;
static int call_fd = -1;

static void mem_init(void)
{
    host = map_guarded(MEM_SIZE, (size_t)page_size);
    mem.nregions = 1;
    mem.regions[0] = (struct vx_mem_region){ .guest_phys_addr = GPA, .memory_size = MEM_SIZE,
                                             .userspace_addr = UVA, .host = host };
}

static uint8_t pat(uint32_t seed, uint32_t k) { return (uint8_t)(seed * 31 + k * 7 + (k >> 8)); }

/* === The driver's side of a packed ring =================================== */

#define AVAIL_F ((uint16_t)(1u << VRING_PACKED_DESC_F_AVAIL))
#define USED_F  ((uint16_t)(1u << VRING_PACKED_DESC_F_USED))
#define NEXT    VRING_DESC_F_NEXT
#define WRITE   VRING_DESC_F_WRITE
#define INDIR   VRING_DESC_F_INDIRECT

static struct {
    uint16_t num;
    struct vring_packed_desc *desc;
    struct vring_packed_desc_event *driver_event, *device_event;
    uint16_t next_avail, next_used;     /* the driver's slots */
    bool avail_wrap, used_wrap;         /* its wrap counters, from 1 */
    uint16_t chain_descs[1024];         /* ring slots of each outstanding id */
} g;

static struct vx_vring vr;

static bool notified(void)
{
    uint64_t v;
    return read(call_fd, &v, sizeof v) == (ssize_t)sizeof v;
}

/* A fresh ring of `num` slots, attached as vhost_user.c would. */
static void ring_setup(uint16_t num, uint64_t features, bool rx)
{
    memset(host, 0, BUF_OFF);
    memset(&g, 0, sizeof g);
    g.num = num;
    g.desc = (struct vring_packed_desc *)(host + DESC_OFF);
    g.driver_event = (struct vring_packed_desc_event *)(host + DRIVER_OFF);
    g.device_event = (struct vring_packed_desc_event *)(host + DEVICE_OFF);
    g.avail_wrap = g.used_wrap = true;
    while (notified())
        ;
    memset(&vr, 0, sizeof vr);
    vr.index = rx ? 0 : 1;
    vr.num = num;
    vr.desc_user_addr = UVA + DESC_OFF;
    vr.avail_user_addr = UVA + DRIVER_OFF;
    vr.used_user_addr = UVA + DEVICE_OFF;
    vr.kick_fd = vr.err_fd = -1;
    vr.call_fd = call_fd;
    vr.avail_wrap_counter = true;               /* SET_VRING_BASE 0x8000 */
    int rc = vq_attach(&vr, &mem, features);
    CHECK(rc == 0, "vq_attach on a well-formed packed ring returned %d", rc);
    CHECK(vr.packed, "the ring is not packed after vq_attach with VIRTIO_F_RING_PACKED");
    CHECK(g.device_event->flags == VRING_PACKED_EVENT_FLAG_DISABLE, "device event flags 0x%x, want DISABLE",
          g.device_event->flags);
    vr.ready = true;
}

static uint64_t buf_gpa(uint16_t id, uint32_t part) { return GPA + BUF_OFF + (uint64_t)id * BUF_SIZE + part * 512u; }

/*
 * Make a chain available: n descriptors {addr[i], len[i], flags[i]} in
 * consecutive slots from next_avail, going round the ring; NEXT on all but
 * the last; the buffer id only in the last (§2.8.6: others get junk); the
 * head's flags written last, with a release store.  Returns the id: the
 * head's slot, unique among outstanding chains.
 */
static uint16_t drv_add(int n, const uint64_t *addr, const uint32_t *len, const uint16_t *flags)
{
    uint16_t id = g.next_avail, slot = g.next_avail, head_flags = 0;
    bool wrap = g.avail_wrap;
    for (int i = 0; i < n; i++) {
        uint16_t f = flags[i] | (i < n - 1 ? NEXT : 0) | (wrap ? AVAIL_F : USED_F);
        g.desc[slot].addr = addr[i];
        g.desc[slot].len = len[i];
        g.desc[slot].id = i == n - 1 ? id : 0xdead;
        if (i == 0)
            head_flags = f;
        else
            g.desc[slot].flags = f;
        if (++slot == g.num)
            slot = 0, wrap = !wrap;
    }
    __atomic_store_n(&g.desc[id].flags, head_flags, __ATOMIC_RELEASE);
    g.chain_descs[id] = (uint16_t)n;
    g.next_avail = slot;
    g.avail_wrap = wrap;
    return id;
}

/* A chain of one descriptor. */
static void add_one(uint64_t addr, uint32_t len, uint16_t flags)
{
    drv_add(1, &addr, &len, &flags);
}

/* TX: fill the read-only parts buf_gpa(id, 0..nseg-1) of lens[] bytes with
 * a packet: a zero header, then the frame's bytes from `seed`. */
static void tx_fill(uint16_t id, const uint32_t *lens, int nseg, uint32_t seed, uint64_t *addr)
{
    uint32_t k = 0;
    for (int i = 0; i < nseg; i++) {
        addr[i] = buf_gpa(id, (uint32_t)i);
        for (uint32_t j = 0; j < lens[i]; j++, k++)
            host[addr[i] - GPA + j] = k < HDR ? 0 : pat(seed, k - HDR);
    }
}

/* TX: one packet in parts of lens[] bytes (header included), one chain. */
static uint16_t tx_add_lens(const uint32_t *lens, int nseg, uint32_t seed)
{
    uint64_t addr[4];
    uint16_t flags[4] = { 0 };
    tx_fill(g.next_avail, lens, nseg, seed, addr);
    return drv_add(nseg, addr, lens, flags);
}

/* TX: one packet of `len` bytes (header included) made of `nseg` read-only
 * parts in the id's buffer; contents from `seed`, header bytes too. */
static uint16_t tx_add(uint32_t len, int nseg, uint32_t seed)
{
    uint32_t lens[4];
    for (int i = 0; i < nseg; i++)
        lens[i] = i < nseg - 1 ? len / (uint32_t)nseg : len - (uint32_t)(nseg - 1) * (len / (uint32_t)nseg);
    return tx_add_lens(lens, nseg, seed);
}

/* RX: a write-only chain of nseg parts of seglen bytes each. */
static uint16_t rx_add(int nseg, uint32_t seglen)
{
    uint64_t addr[4];
    uint32_t lens[4];
    uint16_t flags[4];
    for (int i = 0; i < nseg; i++)
        addr[i] = buf_gpa(g.next_avail, (uint32_t)i), lens[i] = seglen, flags[i] = WRITE;
    return drv_add(nseg, addr, lens, flags);
}

/* The driver's poll: the used descriptor at next_used, if there is one,
 * then skip the chain's slots (§2.8.6). */
static bool drv_used(uint16_t *id, uint32_t *len, uint16_t *flags)
{
    struct vring_packed_desc *d = &g.desc[g.next_used];
    uint16_t f = __atomic_load_n(&d->flags, __ATOMIC_ACQUIRE);
    if (!!(f & AVAIL_F) != g.used_wrap || !!(f & USED_F) != g.used_wrap)
        return false;
    *id = d->id;
    *len = d->len;
    *flags = f;
    if (*id >= g.num || !g.chain_descs[*id])
        return true;            /* the caller's check on the id fails */
    uint32_t next = g.next_used + g.chain_descs[*id];
    g.chain_descs[*id] = 0;
    if (next >= g.num)
        next -= g.num, g.used_wrap = !g.used_wrap;
    g.next_used = (uint16_t)next;
    return true;
}

/*
 * The in-order driver's poll (§2.8.8): one used descriptor may stand for a
 * batch.  Its id names the batch's last chain; the driver walks its own
 * chains from next_used up to that one and takes them all as used.
 * Returns how many chains the used descriptor stood for, 0 if there is none
 * yet, -1 if its id names no outstanding chain.
 */
static int drv_used_batch(uint16_t *id, uint32_t *len, uint16_t *flags)
{
    struct vring_packed_desc *d = &g.desc[g.next_used];
    uint16_t f = __atomic_load_n(&d->flags, __ATOMIC_ACQUIRE);
    if (!!(f & AVAIL_F) != g.used_wrap || !!(f & USED_F) != g.used_wrap)
        return 0;
    *id = d->id;
    *len = d->len;
    *flags = f;
    for (int chains = 1; chains <= g.num; chains++) {
        uint16_t head = g.next_used, n = g.chain_descs[head];
        if (!n)
            return -1;
        g.chain_descs[head] = 0;
        uint32_t next = g.next_used + n;
        if (next >= g.num)
            next -= g.num, g.used_wrap = !g.used_wrap;
        g.next_used = (uint16_t)next;
        if (head == *id)
            return chains;
    }
    return -1;
}

/* The backend's slots and wrap counters agree with the driver's. */
static void check_in_step(void)
{
    CHECK(vr.last_avail_idx == g.next_used && vr.avail_wrap_counter == g.used_wrap,
          "backend at slot %u wrap %d, driver's next used slot %u wrap %d", vr.last_avail_idx,
          vr.avail_wrap_counter, g.next_used, g.used_wrap);
    CHECK(vr.last_used_idx == vr.last_avail_idx && vr.used_wrap_counter == vr.avail_wrap_counter,
          "last_used %u/%d differs from last_avail %u/%d", vr.last_used_idx, vr.used_wrap_counter,
          vr.last_avail_idx, vr.avail_wrap_counter);
}

/* === Bursts ============================================================== */

#define NOUT VX_BURST
static struct vx_pkt out[NOUT];
static uint8_t *out_buf[NOUT];

static int deq(int n)
{
    for (int i = 0; i < NOUT; i++)
        out[i] = (struct vx_pkt){ .len = 0xdeadbeef, .room = VX_PKT_MAX, .data = out_buf[i] };
    return vq_dequeue_burst(&vr, out, n);
}

static uint8_t *pkt_buf[NOUT];

static struct vx_pkt mkpkt(int i, uint32_t len, uint32_t seed)
{
    for (uint32_t k = 0; k < len; k++)
        pkt_buf[i][k] = pat(seed, k);
    return (struct vx_pkt){ .len = len, .room = len, .data = pkt_buf[i] };
}

static bool same_as_pattern(const uint8_t *p, uint32_t len, uint32_t seed, uint32_t from)
{
    for (uint32_t k = 0; k < len; k++)
        if (p[k] != pat(seed, from + k))
            return false;
    return true;
}

/* === Attach ============================================================== */

static int try_attach(uint16_t num, uint64_t d, uint64_t drv, uint64_t dev, uint16_t base)
{
    struct vx_vring v = { .index = 3, .num = num, .desc_user_addr = d, .avail_user_addr = drv,
                          .used_user_addr = dev, .last_avail_idx = base, .kick_fd = -1, .call_fd = -1,
                          .err_fd = -1 };
    fflush(stderr);
    FILE *saved = stderr;
    stderr = fopen("/dev/null", "w");   /* the refusals are logged; not wanted here */
    int rc = vq_attach(&v, &mem, PACKED);
    fclose(stderr);
    stderr = saved;
    return rc;
}

static void t_attach(void)
{
    begin("attach: any size 1..32768 (not only powers of two), 16/4/4 alignment, base slot inside the ring");
    uint64_t d = UVA + DESC_OFF, drv = UVA + DRIVER_OFF, dev = UVA + DEVICE_OFF;
    CHECK(try_attach(256, d, drv, dev, 0) == 0, "size 256 refused");
    CHECK(try_attach(100, d, drv, dev, 99) == 0, "size 100, base 99 refused");
    CHECK(try_attach(1, d, drv, dev, 0) == 0, "size 1 refused");
    CHECK(try_attach(0, d, drv, dev, 0) < 0, "size 0 accepted");
    CHECK(try_attach(100, d, drv, dev, 100) < 0, "base slot 100 in a ring of 100 accepted");
    CHECK(try_attach(100, d + 8, drv, dev, 0) < 0, "descriptor ring 8-byte aligned accepted");
    CHECK(try_attach(100, d, drv + 2, dev, 0) < 0, "driver event area 2-byte aligned accepted");
    CHECK(try_attach(100, d, drv, UVA + MEM_SIZE - 2, 0) < 0, "device event area partly outside memory accepted");
    CHECK(try_attach(100, GPA + DESC_OFF, drv, dev, 0) < 0, "a guest-physical ring address accepted");
    CHECK(try_attach(32768, UVA + MEM_SIZE - 16 * 32768u, drv, dev, 0) == 0, "size 32768 at the end refused");
    end();
}

/* === TX ================================================================== */

/* The chains' shapes in the round tests: 1-3 descriptors by turns, or (for
 * the four-at-a-time path, virtqueue.c "Packed ring: four at a time") mostly
 * one, with a chain of two every ninth to break the fours. */
static bool mostly_one;
static int round_nseg(uint32_t seed, int most)
{
    return mostly_one ? (seed % 9 == 4 ? 2 : 1) : 1 + (int)(seed % (uint32_t)most);
}

/* Round the ring `rounds` times: bursts of chains of 1..3 descriptors (some
 * straddle the end of the ring), each packet checked, each used descriptor
 * read back as the driver does. */
static void tx_rounds(uint16_t num, uint64_t features, int rounds)
{
    ring_setup(num, features, false);
    uint32_t seed = 1, sent = 0, got_total = 0, expect_seed = 1;
    uint16_t ids[NOUT];
    int bursts = 0;
    while (got_total < (uint32_t)rounds * num && case_failures == 0) {
        int n = 1 + bursts % 13, added = 0;
        for (int i = 0; i < n; i++) {
            int nseg = num < 3 ? 1 : round_nseg(seed, 3);
            uint32_t used_slots = (uint32_t)(g.next_avail - g.next_used + (g.avail_wrap != g.used_wrap ? num : 0));
            if (used_slots + (uint32_t)nseg > num)
                break;      /* the ring is full */
            ids[added++] = tx_add(HDR + 60 + seed % 200, nseg, seed);
            seed++;
        }
        int got = deq(NOUT);
        CHECK(got == added, "burst %d: dequeued %d of %d", bursts, got, added);
        for (int i = 0; i < got; i++, expect_seed++) {
            uint32_t len = 60 + expect_seed % 200;
            CHECK(out[i].len == len && same_as_pattern(out[i].data, len, expect_seed, 0),
                  "burst %d packet %d: len %u (want %u) or bytes differ", bursts, i, out[i].len, len);
            uint16_t id, flags;
            uint32_t ulen;
            CHECK(drv_used(&id, &ulen, &flags), "burst %d: no used descriptor at slot %u", bursts, g.next_used);
            CHECK(id == ids[i] && !(flags & WRITE), "used id %u flags 0x%x, want id %u without WRITE", id, flags,
                  ids[i]);
        }
        sent += (uint32_t)added;
        got_total += (uint32_t)got;
        check_in_step();
        bursts++;
    }
    CHECK(vr.stats.packets == sent && vr.stats.drops == 0 && !vr.broken, "stats: %llu packets (want %u), %llu drops",
          (unsigned long long)vr.stats.packets, sent, (unsigned long long)vr.stats.drops);
}

static void t_tx_wrap(void)
{
    begin("TX, size 256: 5 laps of the ring, chains of 1-3 descriptors across the end, ids from the last descriptor");
    tx_rounds(256, PACKED, 5);
    end();
    begin("TX, size 100 (not a power of two): 7 laps, wrap counter flips at slot 100");
    tx_rounds(100, PACKED, 7);
    end();
    begin("TX, size 1: every packet flips the wrap counters");
    tx_rounds(1, PACKED, 20);
    end();
}

/* TX with IN_ORDER: bursts of 1..13 chains of 1-3 slots (or until the ring
 * is full); each burst must come back as exactly one used descriptor, over
 * the burst's first slot, naming its last chain, with every other slot of
 * the burst left as the driver wrote it. */
static void tx_in_order_rounds(uint16_t num, int rounds)
{
    ring_setup(num, PACKED | INO, false);
    uint32_t seed = 1, got_total = 0, expect_seed = 1;
    static struct vring_packed_desc before[1024];
    uint16_t ids[NOUT];
    int bursts = 0;
    while (got_total < (uint32_t)rounds * num && case_failures == 0) {
        int n = 1 + bursts % 13, added = 0;
        uint16_t first = g.next_avail;
        for (int i = 0; i < n; i++) {
            int nseg = round_nseg(seed, 3);
            uint32_t used_slots = (uint32_t)(g.next_avail - g.next_used + (g.avail_wrap != g.used_wrap ? num : 0));
            if (used_slots + (uint32_t)nseg > num)
                break;      /* the ring is full */
            ids[added++] = tx_add(HDR + 60 + seed % 200, nseg, seed);
            seed++;
        }
        memcpy(before, g.desc, sizeof before[0] * num);
        int got = deq(NOUT);
        CHECK(got == added, "burst %d: dequeued %d of %d", bursts, got, added);
        for (int i = 0; i < got; i++, expect_seed++) {
            uint32_t len = 60 + expect_seed % 200;
            CHECK(out[i].len == len && same_as_pattern(out[i].data, len, expect_seed, 0),
                  "burst %d packet %d: len %u (want %u) or bytes differ", bursts, i, out[i].len, len);
        }
        int changed = 0;
        for (uint16_t i = 0; i < num; i++)
            changed += memcmp(&before[i], &g.desc[i], sizeof before[i]) != 0;
        CHECK(changed == 1 && memcmp(&before[first], &g.desc[first], sizeof before[first]) != 0,
              "burst %d: %d descriptors written, want 1 (at the burst's first slot %u)", bursts, changed, first);
        uint16_t id = 0, flags = 0;
        uint32_t ulen = 1;
        int chains = drv_used_batch(&id, &ulen, &flags);
        CHECK(chains == added && id == ids[added - 1] && ulen == 0 && !(flags & WRITE),
              "burst %d: used {id %u len %u flags 0x%x} stands for %d chains; want id %u len 0, no WRITE, %d chains",
              bursts, id, ulen, flags, chains, ids[added - 1], added);
        got_total += (uint32_t)got;
        check_in_step();
        bursts++;
    }
    CHECK(!vr.broken && vr.stats.drops == 0, "broken %d, drops %llu", vr.broken, (unsigned long long)vr.stats.drops);
}

static void t_tx_in_order(void)
{
    begin("TX in order, size 256: 5 laps, one used descriptor per burst {id of the last chain, len 0} at its first slot");
    tx_in_order_rounds(256, 5);
    end();
    begin("TX in order, size 100 (not a power of two): 7 laps, bursts across the wrap");
    tx_in_order_rounds(100, 7);
    end();
    begin("TX in order, size 7: bursts that fill the whole ring, one used descriptor each");
    tx_in_order_rounds(7, 30);
    end();
}

static void t_tx_indirect(void)
{
    begin("TX indirect: a 3-entry table takes one ring slot, at the end of a size-100 ring; WRITE on a table entry tolerated");
    ring_setup(100, PACKED | IND, false);
    g.next_avail = g.next_used = 99;        /* as if SET_VRING_BASE said slot 99 */
    vr.last_avail_idx = vr.last_used_idx = 99;
    for (int p = 0; p < 2; p++) {
        uint16_t id = g.next_avail;
        struct vring_packed_desc *t = (struct vring_packed_desc *)(host + TABLE_OFF + id * 256u);
        uint32_t lens[3] = { HDR, 100, 50 }, k = 0;
        for (int i = 0; i < 3; i++) {
            t[i] = (struct vring_packed_desc){ .addr = buf_gpa(id, (uint32_t)i), .len = lens[i],
                                               .flags = i < 2 ? NEXT : 0 };  /* NEXT is ignored in a table */
        t[0].flags = WRITE;     /* as DPDK 22.11 leaves its header entry: accepted on TX */
            for (uint32_t j = 0; j < lens[i]; j++, k++)
                host[BUF_OFF + id * BUF_SIZE + (uint32_t)i * 512u + j] = k < HDR ? 0 : pat(7 + (uint32_t)p, k - HDR);
        }
        uint64_t a = GPA + TABLE_OFF + id * 256u;
        uint32_t l = 3 * 16;
        uint16_t f = INDIR;
        drv_add(1, &a, &l, &f);
    }
    int got = deq(NOUT);
    CHECK(got == 2, "dequeued %d, want 2", got);
    for (int p = 0; p < got; p++)
        CHECK(out[p].len == 150 && same_as_pattern(out[p].data, 150, 7 + (uint32_t)p, 0), "packet %d: len %u", p,
              out[p].len);
    uint16_t id, flags;
    uint32_t len;
    CHECK(drv_used(&id, &len, &flags) && id == 99, "first used id %u, want 99", id);
    CHECK(drv_used(&id, &len, &flags) && id == 0, "second used id %u, want 0 (after the wrap)", id);
    check_in_step();
    CHECK(!vr.avail_wrap_counter, "the avail wrap counter did not flip at the end of the ring");
    end();
}

/* Towards small buffers (the AF_XDP port): vq_dequeue_burst_big, as in
 * test_virtqueue's t_tx_big, across the end of a size-5 ring; and the RX
 * header taken from the packet. */
static void t_tx_big(void)
{
    begin("TX towards small buffers: a TSO packet and an over-long one go to big, each ending its burst, across the wrap");
    ring_setup(5, PACKED | F(VIRTIO_NET_F_CSUM), false);
    g.next_avail = g.next_used = 3;
    vr.last_avail_idx = vr.last_used_idx = 3;
    uint16_t a = tx_add(HDR + 100, 1, 170);
    uint16_t b = tx_add(HDR + 150, 2, 171);
    host[buf_gpa(b, 0) - GPA + 1] = 1;          /* its header: gso_type TCPV4 */
    tx_add(HDR + 1000, 2, 172);                 /* 1000 bytes: longer than the 200-byte buffers */
    static uint8_t bigbuf[VX_PKT_MAX];
    struct vx_pkt big = { .room = VX_PKT_MAX, .data = bigbuf };
    uint32_t sizes[2] = { 200, 200 };
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < NOUT; i++)
            out[i] = (struct vx_pkt){ .len = 0xdeadbeef, .room = sizes[round], .data = out_buf[i] };
        int got = vq_dequeue_burst_big(&vr, out, NOUT, &big);
        if (round == 0)
            CHECK(got == 1 && out[0].len == 100 && same_as_pattern(out[0].data, 100, 170, 0) && big.len == 150 &&
                  big.hdr.gso_type == 1 && same_as_pattern(big.data, 150, 171, 0),
                  "first burst: %d packets, big %u bytes, gso_type %u", got, big.len, big.hdr.gso_type);
        else
            CHECK(got == 0 && big.len == 1000 && big.bufs == 2 && same_as_pattern(big.data, 1000, 172, 0),
                  "second burst: %d packets, big %u bytes in %u buffers", got, big.len, big.bufs);
    }
    uint16_t id, flags;
    uint32_t len;
    CHECK(drv_used(&id, &len, &flags) && id == a, "used id %u, want %u", id, a);
    CHECK(drv_used(&id, &len, &flags) && id == b, "used id %u, want %u", id, b);
    CHECK(drv_used(&id, &len, &flags), "the third chain used");
    check_in_step();
    CHECK(vr.stats.packets == 3 && vr.stats.bytes == 1250 && vr.stats.drops == 0, "stats: %llu packets, %llu bytes",
          (unsigned long long)vr.stats.packets, (unsigned long long)vr.stats.bytes);
    end();

    begin("RX: the packet's header is written in front of it (packed, GUEST_CSUM; one buffer and mergeable)");
    for (int mrg = 0; mrg < 2; mrg++) {
        ring_setup(8, PACKED | F(VIRTIO_NET_F_GUEST_CSUM) | (mrg ? MRG : 0), true);
        uint16_t ids[3];
        for (int i = 0; i < 3; i++)
            ids[i] = rx_add(1, 400);
        struct vx_pkt p = mkpkt(0, mrg ? 900 : 300, 173);
        p.hdr = (struct vx_net_hdr){ .flags = 1, .gso_type = 1, .hdr_len = 66, .gso_size = 100, .csum_start = 34,
                                     .csum_offset = 16 };
        int sent = vq_enqueue_burst(&vr, &p, 1);
        const uint8_t *h = host + (buf_gpa(ids[0], 0) - GPA);
        CHECK(sent == 1 && !memcmp(h, &p.hdr, 10) && h[10] == (mrg ? 3 : 1) && h[11] == 0,
              "%s: sent %d, header %02x %02x, num_buffers %u", mrg ? "mergeable" : "one buffer", sent, h[0], h[1], h[10]);
    }
    end();
}

/* === TX lending: vq_dequeue_burst_lend() (guest to guest) ================ */

/*
 * The lending dequeue (pmd_loop.c's guest-to-guest path) on a packed ring:
 * pkts[i].data points straight at the frame in guest memory when the frame
 * lies whole in the chain's last buffer (else it is copied into the caller's
 * buffer), deliver() is called once with the burst, and only then are the
 * used descriptors written: in a packed ring writing the used descriptor is
 * what gives the buffer back (§2.8.6), so none may be written before deliver()
 * is done with the lent bytes.
 *
 * The test's deliver() checks each packet where it is called (the only time
 * lent pointers are valid): the pointer, length and bytes; and whether any
 * descriptor of the ring changed since the burst was offered.
 */
#define LEND_MAX (VX_BURST + 8)     /* room for a burst asked larger than VX_BURST */

struct lend_want {
    uint32_t len, seed;
    const uint8_t *data;            /* where pkts[i].data must point */
};

static struct {
    int calls, n;                   /* deliver() calls, and n of the last one */
    bool ring_written;              /* a descriptor changed before deliver() ran */
    int nwant;
    struct lend_want want[LEND_MAX];
} lend;

static struct vring_packed_desc lend_before[1024];  /* the ring as offered */
static uint8_t mem_before[MEM_SIZE];                /* all guest memory as offered */
static struct vx_pkt lend_out[LEND_MAX];

static void lend_deliver(void *ctx, struct vx_pkt *pkts, int n)
{
    CHECK(ctx == &lend, "deliver got ctx %p, want %p", ctx, (void *)&lend);
    lend.calls++;
    lend.n = n;
    lend.ring_written = memcmp(lend_before, g.desc, sizeof lend_before[0] * g.num) != 0;
    CHECK(n == lend.nwant, "deliver got %d packets, want %d", n, lend.nwant);
    for (int i = 0; i < n && i < lend.nwant; i++) {
        const struct lend_want *w = &lend.want[i];
        CHECK(pkts[i].data == w->data, "deliver: packet %d at %p, want %p (%s)", i, (void *)pkts[i].data,
              (const void *)w->data, w->data >= host && w->data < host + MEM_SIZE ? "lent, in guest memory"
                                                                                 : "copied, the caller's buffer");
        CHECK(pkts[i].len == w->len && same_as_pattern(pkts[i].data, w->len, w->seed, 0),
              "deliver: packet %d len %u (want %u) or bytes differ", i, pkts[i].len, w->len);
    }
}

static void lend_expect(uint32_t len, uint32_t seed, const uint8_t *data)
{
    lend.want[lend.nwant++] = (struct lend_want){ len, seed, data };
}

/* The k-th delivered packet's buffer, if it is copied. */
static uint8_t *caller_buf(int k) { return k < NOUT ? out_buf[k] : pkt_buf[k - NOUT]; }

/* Remember the ring and guest memory as offered (deliver() compares). */
static void lend_snapshot(void)
{
    memcpy(lend_before, g.desc, sizeof lend_before[0] * g.num);
    memcpy(mem_before, host, MEM_SIZE);
}

/* Guest memory outside the descriptor ring that changed since the
 * snapshot (TX must only read buffers and tables): first offset, or -1. */
static long lend_wrote_guest(void)
{
    for (size_t i = DESC_OFF + 16u * g.num; i < MEM_SIZE; i++)
        if (host[i] != mem_before[i])
            return (long)i;
    return -1;
}

static int lend_deq(int n, uint32_t room)
{
    lend.calls = 0;
    lend.n = -1;
    lend.ring_written = false;
    for (int i = 0; i < LEND_MAX; i++)
        lend_out[i] = (struct vx_pkt){ .len = 0xdeadbeef, .room = room, .data = caller_buf(i) };
    return vq_dequeue_burst_lend(&vr, lend_out, n, lend_deliver, &lend);
}

/* One TX chain of the layouts below: parts of lens[], direct in the ring or
 * in an indirect table (one ring slot).  Lent iff the frame (after the
 * HDR-byte header) starts in the last part. */
struct lend_chain {
    int nseg;
    uint32_t lens[3];
    bool indirect;
};

static const struct lend_chain lend_chains[] = {
    { 1, { HDR + 100 }, false },        /* (a) header and frame in one descriptor: lent */
    { 2, { HDR, 300 }, false },         /* (b) header descriptor, frame descriptor: lent */
    { 3, { HDR, 150, 250 }, false },    /* (c) frame over two descriptors: copied */
    { 2, { HDR, 400 }, true },          /* (d) indirect {header, frame}: lent */
    { 2, { 4, 8 + 200 }, false },       /* (e) 4 bytes of header, then 8 + frame: lent at +8 */
    { 3, { HDR, 100, 200 }, true },     /* (f) indirect {header, frame, frame}: copied */
};

/* Offer chain c and, if it is to be the k-th packet deliver() sees (k < 0:
 * it is dropped), say what deliver() must see for it.  Returns its id. */
static uint16_t lend_offer(const struct lend_chain *c, int k, uint32_t seed)
{
    uint16_t id = g.next_avail;
    uint64_t addr[3];
    uint32_t before_last = 0, total = 0;
    for (int i = 0; i < c->nseg; i++)
        total += c->lens[i], before_last += i < c->nseg - 1 ? c->lens[i] : 0;
    if (c->indirect) {
        struct vring_packed_desc *t = (struct vring_packed_desc *)(host + TABLE_OFF + id * 256u);
        tx_fill(id, c->lens, c->nseg, seed, addr);
        for (int i = 0; i < c->nseg; i++)
            t[i] = (struct vring_packed_desc){ .addr = addr[i], .len = c->lens[i] };
        uint64_t ta = GPA + TABLE_OFF + id * 256u;
        uint32_t tl = 16u * (uint32_t)c->nseg;
        uint16_t f = INDIR;
        drv_add(1, &ta, &tl, &f);
    } else {
        tx_add_lens(c->lens, c->nseg, seed);
    }
    const uint8_t *lent = host + (buf_gpa(id, (uint32_t)c->nseg - 1) - GPA) + (HDR - before_last);
    if (k >= 0)
        lend_expect(total - HDR, seed, before_last <= HDR ? lent : caller_buf(k));
    return id;
}

/*
 * Bursts of the first `nch` layouts round a ring of `num` slots, from slot
 * `start`, so that bursts cross the end of the ring in many places and both
 * wrap counters flip.  Each burst: deliver() sees the right pointers and an
 * untouched ring; afterwards the used descriptors are there in ring order
 * (IN_ORDER: one for the burst), and no other guest memory was written.
 */
static void lend_rounds(uint16_t num, uint64_t features, uint16_t start, int nch, int bursts)
{
    ring_setup(num, features, false);
    g.next_avail = g.next_used = start;
    vr.last_avail_idx = vr.last_used_idx = start;
    uint32_t seed = 300;
    for (int b = 0; b < bursts && case_failures == 0; b++) {
        uint16_t ids[8], first = g.next_avail;
        lend.nwant = 0;
        for (int k = 0; k < nch; k++)
            ids[k] = lend_offer(&lend_chains[k], k, seed++);
        lend_snapshot();
        int r = lend_deq(NOUT, VX_PKT_MAX);
        CHECK(r == nch && lend.calls == 1, "burst %d: returned %d, deliver called %d times; want %d, once", b, r,
              lend.calls, nch);
        CHECK(!lend.ring_written, "burst %d: descriptors were written before deliver: the guest had its buffers "
              "back while the frames were lent", b);
        long w = lend_wrote_guest();
        CHECK(w < 0, "burst %d: guest memory written at offset 0x%lx", b, w);
        /* One used descriptor per chain (IN_ORDER: per burst), none elsewhere. */
        int changed = 0;
        for (uint16_t i = 0; i < num; i++)
            changed += memcmp(&lend_before[i], &g.desc[i], sizeof lend_before[i]) != 0;
        CHECK(changed == (vr.in_order ? 1 : nch), "burst %d (first slot %u): %d descriptors written, want %d", b,
              first, changed, vr.in_order ? 1 : nch);
        uint16_t id, flags;
        uint32_t len;
        if (vr.in_order) {
            int chains = drv_used_batch(&id, &len, &flags);
            CHECK(chains == nch && id == ids[nch - 1] && len == 0 && !(flags & WRITE),
                  "burst %d: used {id %u len %u flags 0x%x} stands for %d chains; want id %u, len 0, %d chains", b,
                  id, len, flags, chains, ids[nch - 1], nch);
        } else {
            for (int k = 0; k < nch; k++) {
                bool used = drv_used(&id, &len, &flags);
                CHECK(used && id == ids[k] && len == 0 && !(flags & WRITE),
                      "burst %d chain %d: used %d {id %u len %u flags 0x%x}, want {id %u, len 0}", b, k, used, id,
                      len, flags, ids[k]);
            }
        }
        check_in_step();
    }
    CHECK(!vr.broken && vr.stats.drops == 0 && vr.stats.packets == (uint64_t)nch * (uint64_t)bursts,
          "broken %d, drops %llu, packets %llu", vr.broken, (unsigned long long)vr.stats.drops,
          (unsigned long long)vr.stats.packets);
}

/* A malformed chain (outside guest memory) after `good` well-formed ones,
 * then one more well-formed chain that must not be touched. */
static void lend_malformed(uint64_t features, int good, bool all_one)
{
    ring_setup(64, features, false);
    lend.nwant = 0;
    uint16_t ids[3];
    for (int k = 0; k < good; k++)      /* (a) lent, (c) copied by turns; or all (a) */
        ids[k] = lend_offer(&lend_chains[all_one ? 0 : 2 * (k % 2)], k, 400 + (uint32_t)k);
    uint16_t bad = g.next_avail;
    add_one(GPA + MEM_SIZE - 10, 100, 0);
    tx_add(HDR + 100, 1, 402);
    lend_snapshot();
    fflush(stderr);
    FILE *saved = stderr, *cap = tmpfile();
    stderr = cap;
    int r = lend_deq(NOUT, VX_PKT_MAX);
    fflush(cap);
    stderr = saved;
    char log[400] = "";
    rewind(cap);
    log[fread(log, 1, sizeof log - 1, cap)] = 0;
    fclose(cap);
    bool one_line = strstr(log, "ring broken") && strchr(log, '\n') == log + strlen(log) - 1;
    CHECK(r == good && lend.calls == (good ? 1 : 0), "returned %d, deliver called %d times; want %d, %d", r,
          lend.calls, good, good ? 1 : 0);
    CHECK(!lend.ring_written, "descriptors written before deliver");
    CHECK(vr.broken && vr.stats.broken == 1 && one_line, "broken %d, stats.broken %llu, log: %s", vr.broken,
          (unsigned long long)vr.stats.broken, log);
    uint16_t id, flags;
    uint32_t len;
    if (good && vr.in_order) {
        int chains = drv_used_batch(&id, &len, &flags);
        CHECK(chains == good && id == ids[good - 1], "used {id %u} stands for %d chains, want id %u, %d", id, chains,
              ids[good - 1], good);
    } else {
        for (int k = 0; k < good; k++)
            CHECK(drv_used(&id, &len, &flags) && id == ids[k], "chain %d: no used descriptor, or id %u (want %u)",
                  k, id, ids[k]);
    }
    CHECK(memcmp(&lend_before[bad], &g.desc[bad], sizeof lend_before[0] * (size_t)(g.num - bad)) == 0,
          "a descriptor from the malformed chain's slot %u on was written", bad);
    CHECK(vr.last_avail_idx == bad, "backend at slot %u, want %u (the malformed chain's)", vr.last_avail_idx, bad);
    long w = lend_wrote_guest();
    CHECK(w < 0, "guest memory written at offset 0x%lx", w);
}

static void t_tx_lend(void)
{
    static const struct { const char *name; uint16_t num; uint64_t features; uint16_t start; int nch, bursts; } c[] = {
        { "TX lend, size 8: 12 bursts of 4 layouts (7 slots) across the end: (a) one descriptor, (b) own frame "
          "descriptor, (d) indirect lent at the frame's first byte, (c) two frame descriptors copied; no "
          "descriptor written before deliver, then one used per chain in ring order", 8, PACKED | IND, 5, 4, 12 },
        { "TX lend, size 8, IN_ORDER: the same, then ONE used descriptor per burst, written after deliver", 8,
          PACKED | IND | INO, 5, 4, 12 },
        { "TX lend, size 100: 25 bursts of 6 layouts (also 4|8+frame lent at +8, a 3-entry indirect table "
          "copied) from slot 95", 100, PACKED | IND, 95, 6, 25 },
        { "TX lend, size 100, IN_ORDER: the same, one used descriptor per burst", 100, PACKED | IND | INO, 95, 6, 25 },
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        begin(c[i].name);
        lend_rounds(c[i].num, c[i].features, c[i].start, c[i].nch, c[i].bursts);
        end();
    }

    static const uint64_t order[] = { PACKED, PACKED | INO };
    for (int o = 0; o < 2; o++) {
        begin(o ? "TX lend, IN_ORDER: a burst asked for more than VX_BURST takes VX_BURST, one used descriptor"
                : "TX lend: a burst asked for more than VX_BURST (40 of 40 offered) takes VX_BURST, the rest next time");
        ring_setup(100, order[o], false);
        uint16_t ids[LEND_MAX];
        lend.nwant = 0;
        static const struct lend_chain one = { 1, { HDR + 60 }, false };
        for (int k = 0; k < LEND_MAX; k++)
            ids[k] = lend_offer(&one, k, 500 + (uint32_t)k);
        lend.nwant = VX_BURST;          /* the first burst: the first VX_BURST expectations */
        lend_snapshot();
        int r = lend_deq(LEND_MAX, VX_PKT_MAX);
        CHECK(r == VX_BURST && lend.calls == 1 && lend.n == VX_BURST, "returned %d, deliver called %d times with %d; "
              "want %d, once", r, lend.calls, lend.n, VX_BURST);
        CHECK(!lend.ring_written, "descriptors written before deliver");
        CHECK(vr.last_avail_idx == VX_BURST, "backend at slot %u, want %d", vr.last_avail_idx, VX_BURST);
        memmove(lend.want, lend.want + VX_BURST, sizeof lend.want[0] * (LEND_MAX - VX_BURST));
        lend.nwant = LEND_MAX - VX_BURST;
        lend_snapshot();
        r = lend_deq(LEND_MAX, VX_PKT_MAX);
        CHECK(r == LEND_MAX - VX_BURST && lend.calls == 1, "second burst returned %d, deliver called %d times", r,
              lend.calls);
        uint16_t id, flags;
        uint32_t len;
        if (o) {
            CHECK(drv_used_batch(&id, &len, &flags) == VX_BURST && id == ids[VX_BURST - 1], "first burst: used id %u",
                  id);
            CHECK(drv_used_batch(&id, &len, &flags) == LEND_MAX - VX_BURST && id == ids[LEND_MAX - 1],
                  "second burst: used id %u", id);
        } else {
            for (int k = 0; k < LEND_MAX; k++)
                CHECK(drv_used(&id, &len, &flags) && id == ids[k], "chain %d: no used descriptor or id %u", k, id);
        }
        check_in_step();
        end();
    }

    begin("TX lend: deliver is not called for an empty ring, nor when every chain was dropped");
    ring_setup(100, PACKED, false);
    lend.nwant = 0;
    int r = lend_deq(NOUT, VX_PKT_MAX);
    CHECK(r == 0 && lend.calls == 0, "empty ring: returned %d, deliver called %d times", r, lend.calls);
    uint16_t big = tx_add(HDR + 1500, 1, 510), tiny = tx_add(8, 1, 511);
    r = lend_deq(NOUT, 1024);
    CHECK(r == 0 && lend.calls == 0, "two dropped chains: returned %d, deliver called %d times", r, lend.calls);
    uint16_t id, flags;
    uint32_t len;
    CHECK(drv_used(&id, &len, &flags) && id == big, "dropped chain 1 not used, or id %u", id);
    CHECK(drv_used(&id, &len, &flags) && id == tiny, "dropped chain 2 not used, or id %u", id);
    CHECK(vr.stats.drops == 2 && vr.stats.packets == 0, "drops %llu packets %llu", (unsigned long long)vr.stats.drops,
          (unsigned long long)vr.stats.packets);
    end();

    begin("TX lend: frames larger than room are dropped, counted, never delivered; the next packets land in the "
          "caller's buffers or are lent; the guest's buffers are not written");
    ring_setup(100, PACKED, false);
    g.next_avail = g.next_used = 97;                /* across the end of the ring */
    vr.last_avail_idx = vr.last_used_idx = 97;
    static const struct lend_chain over1 = { 1, { HDR + 1500 }, false }, copied1 = { 3, { HDR, 60, 40 }, false },
                                   small = { 1, { HDR + 64 }, false }, over2 = { 2, { HDR, 1500 }, false },
                                   copied2 = { 3, { HDR, 30, 30 }, false };
    uint16_t ids[5];
    lend.nwant = 0;
    ids[0] = lend_offer(&over1, -1, 520);           /* lies in one buffer, but too big */
    ids[1] = lend_offer(&copied1, 0, 521);
    ids[2] = lend_offer(&small, 1, 522);
    ids[3] = lend_offer(&over2, -1, 523);           /* lies in one buffer, but too big */
    ids[4] = lend_offer(&copied2, 2, 524);
    lend_snapshot();
    r = lend_deq(NOUT, 1024);
    CHECK(r == 3 && lend.calls == 1, "returned %d, deliver called %d times; want 3, once", r, lend.calls);
    CHECK(!lend.ring_written, "descriptors written before deliver");
    for (int k = 0; k < 5; k++)
        CHECK(drv_used(&id, &len, &flags) && id == ids[k], "chain %d: no used descriptor or id %u", k, id);
    CHECK(vr.stats.drops == 2 && vr.stats.packets == 3, "drops %llu packets %llu", (unsigned long long)vr.stats.drops,
          (unsigned long long)vr.stats.packets);
    long w = lend_wrote_guest();
    CHECK(w < 0, "guest memory written at offset 0x%lx (a TX buffer is read-only for us)", w);
    check_in_step();
    end();

    begin("TX lend: a malformed chain after a lent and a copied one: ring broken, the two delivered, then used; "
          "nothing from the malformed chain on is written");
    lend_malformed(PACKED, 2, false);
    end();
    begin("TX lend, IN_ORDER: the same, the two given back in one used descriptor");
    lend_malformed(PACKED | INO, 2, false);
    end();
    begin("TX lend: a malformed first chain: ring broken, deliver not called, nothing written");
    lend_malformed(PACKED, 0, false);
    end();
}

/* === RX ================================================================== */

static void rx_rounds(uint16_t num, int rounds)
{
    ring_setup(num, PACKED, true);
    uint32_t seed = 100, delivered = 0;
    int bursts = 0;
    while (delivered < (uint32_t)rounds * num && case_failures == 0) {
        int n = 1 + bursts % 11;
        uint16_t ids[NOUT];
        struct vx_pkt pkts[NOUT];
        for (int i = 0; i < n; i++) {
            int nseg = round_nseg(seed + (uint32_t)i, 2);
            uint32_t x = seed + (uint32_t)i;
            ids[i] = rx_add(nseg, 400);     /* room: 400 or 800 bytes, the packet fills part of it */
            pkts[i] = mkpkt(i, nseg == 2 ? 400 + x % 380 : 30 + x % 350, x);
        }
        int sent = vq_enqueue_burst(&vr, pkts, n);
        CHECK(sent == n, "burst %d: delivered %d of %d", bursts, sent, n);
        for (int i = 0; i < sent; i++) {
            uint16_t id, flags;
            uint32_t len, plen = pkts[i].len;
            CHECK(drv_used(&id, &len, &flags), "burst %d: no used descriptor", bursts);
            CHECK(id == ids[i] && len == HDR + plen && (flags & WRITE), "used {id %u len %u flags 0x%x}, want "
                  "{%u, %u, WRITE}", id, len, flags, ids[i], HDR + plen);
            const uint8_t *b = host + BUF_OFF + id * BUF_SIZE;
            CHECK(b[10] == 1 && b[11] == 0, "num_buffers %u, want 1", b[10] | b[11] << 8);
            /* The frame after the header, over the chain's two parts if it has two. */
            uint32_t first = plen < 400 - HDR ? plen : 400 - HDR;
            CHECK(same_as_pattern(b + HDR, first, seed + (uint32_t)i, 0) &&
                  same_as_pattern(b + 512, plen - first, seed + (uint32_t)i, first), "packet bytes differ");
        }
        seed += (uint32_t)n;
        delivered += (uint32_t)sent;
        check_in_step();
        bursts++;
    }
}

static void t_rx_wrap(void)
{
    begin("RX, size 256: 4 laps, chains of 1-2 write-only descriptors, used len = header + frame, WRITE set");
    rx_rounds(256, 4);
    end();
    begin("RX, size 100 (not a power of two): 6 laps");
    rx_rounds(100, 6);
    end();
}

static void t_rx_too_big(void)
{
    begin("RX without MRG_RXBUF: a packet too big for the next chain is dropped, the chain kept for the next one");
    ring_setup(100, PACKED, true);
    uint16_t id = rx_add(1, 300);
    struct vx_pkt pkts[2] = { mkpkt(0, 1000, 1), mkpkt(1, 200, 2) };
    int sent = vq_enqueue_burst(&vr, pkts, 2);
    CHECK(sent == 1 && pkts[0].len == 200, "delivered %d, first %u bytes; want 1, the 200-byte one", sent, pkts[0].len);
    uint16_t uid, flags;
    uint32_t len;
    CHECK(drv_used(&uid, &len, &flags) && uid == id && len == HDR + 200, "used {id %u len %u}", uid, len);
    CHECK(vr.stats.drops == 1 && vr.stats.packets == 1, "drops %llu packets %llu", (unsigned long long)vr.stats.drops,
          (unsigned long long)vr.stats.packets);
    CHECK(vq_avail_buffers(&vr) == 0, "buffers still offered after the only one was used");
    end();
}

static void rx_mrg_wrap(uint64_t features)
{
    ring_setup(100, features, true);
    g.next_avail = g.next_used = 97;
    vr.last_avail_idx = vr.last_used_idx = 97;
    uint16_t ids[6];
    for (int i = 0; i < 6; i++)
        ids[i] = rx_add(1, 512);
    CHECK(vq_avail_buffers(&vr) == 6, "vq_avail_buffers %d, want 6", vq_avail_buffers(&vr));
    struct vx_pkt p = mkpkt(0, 2100, 5);
    int sent = vq_enqueue_burst(&vr, &p, 1);
    CHECK(sent == 1, "delivered %d", sent);
    uint32_t total = 0, want_len[5] = { 512, 512, 512, 512, HDR + 2100 - 4 * 512 };
    for (int i = 0; i < 5; i++) {
        uint16_t id, flags;
        uint32_t len;
        CHECK(drv_used(&id, &len, &flags), "no used descriptor %d", i);
        CHECK(id == ids[i] && len == want_len[i], "used %d: {id %u len %u}, want {%u %u}", i, id, len, ids[i],
              want_len[i]);
        const uint8_t *b = host + BUF_OFF + id * BUF_SIZE;
        uint32_t skip = i == 0 ? HDR : 0;
        if (i == 0)
            CHECK(b[10] == 5 && b[11] == 0, "num_buffers %u, want 5", b[10] | b[11] << 8);
        CHECK(same_as_pattern(b + skip, len - skip, 5, total), "bytes of buffer %d differ", i);
        total += len - skip;
    }
    CHECK(total == 2100, "the buffers hold %u bytes of the frame", total);
    check_in_step();
    CHECK(!vr.avail_wrap_counter && vr.last_avail_idx == 2, "at slot %u wrap %d, want slot 2 wrap 0",
          vr.last_avail_idx, vr.avail_wrap_counter);
    CHECK(vq_avail_buffers(&vr) == 1, "one buffer left, vq_avail_buffers says %d", vq_avail_buffers(&vr));
}

static void t_rx_mrg(void)
{
    begin("RX mergeable over the wrap (size 100): 2100 bytes in five 512-byte buffers at slots 97..1, "
          "num_buffers 5");
    rx_mrg_wrap(PACKED | MRG);
    end();
    begin("RX mergeable with IN_ORDER: the same, still one used descriptor per buffer with its own length");
    rx_mrg_wrap(PACKED | MRG | INO);
    end();

    begin("RX mergeable: not enough buffers yet: nothing is written, the ring is untouched, then it fits");
    ring_setup(100, PACKED | MRG, true);
    rx_add(1, 512);
    rx_add(1, 512);
    uint8_t before[2 * 16];
    memcpy(before, g.desc, sizeof before);
    struct vx_pkt p = mkpkt(0, 2000, 6);
    int sent = vq_enqueue_burst(&vr, &p, 1);
    CHECK(sent == 0 && memcmp(before, g.desc, sizeof before) == 0, "delivered %d; descriptors changed: %d", sent,
          memcmp(before, g.desc, sizeof before) != 0);
    CHECK(vr.stats.drops == 1 && !vr.broken && vr.last_avail_idx == 0, "drops %llu broken %d slot %u",
          (unsigned long long)vr.stats.drops, vr.broken, vr.last_avail_idx);
    rx_add(1, 512);
    rx_add(1, 512);
    p = mkpkt(0, 2000, 6);
    sent = vq_enqueue_burst(&vr, &p, 1);
    CHECK(sent == 1 && vr.last_avail_idx == 4, "delivered %d, now at slot %u", sent, vr.last_avail_idx);
    end();
}

static void t_rx_indirect(void)
{
    begin("RX indirect: header and frame into a 2-entry write-only table");
    ring_setup(100, PACKED | IND, true);
    uint16_t id = g.next_avail;
    struct vring_packed_desc *t = (struct vring_packed_desc *)(host + TABLE_OFF);
    t[0] = (struct vring_packed_desc){ .addr = buf_gpa(id, 0), .len = HDR, .flags = WRITE };
    t[1] = (struct vring_packed_desc){ .addr = buf_gpa(id, 1), .len = 1500, .flags = WRITE };
    uint64_t a = GPA + TABLE_OFF;
    uint32_t l = 32;
    uint16_t f = INDIR;
    drv_add(1, &a, &l, &f);
    struct vx_pkt p = mkpkt(0, 700, 9);
    CHECK(vq_enqueue_burst(&vr, &p, 1) == 1, "not delivered");
    uint16_t uid, flags;
    uint32_t len;
    CHECK(drv_used(&uid, &len, &flags) && uid == id && len == HDR + 700, "used {id %u len %u}", uid, len);
    CHECK(same_as_pattern(host + BUF_OFF + id * BUF_SIZE + 512, 700, 9, 0), "frame bytes differ");
    end();
}

/* === Notification ======================================================== */

/* One TX packet per call; was the call eventfd written? */
static bool tx_one_notified(void)
{
    tx_add(HDR + 60, 1, 3);
    int got = deq(NOUT);
    uint16_t id, flags;
    uint32_t len;
    CHECK(got == 1 && drv_used(&id, &len, &flags), "the packet did not go through");
    return notified();
}

static void set_event(uint16_t flags, uint16_t slot, bool wrap)
{
    g.driver_event->off_wrap = (uint16_t)(slot | (wrap ? 1u << VRING_PACKED_EVENT_F_WRAP_CTR : 0));
    g.driver_event->flags = flags;
}

static void t_notify(void)
{
    begin("event suppression: ENABLE interrupts, DISABLE does not, reserved value 3 does");
    ring_setup(100, PACKED, false);
    set_event(VRING_PACKED_EVENT_FLAG_ENABLE, 0, false);
    CHECK(tx_one_notified(), "ENABLE: no interrupt");
    set_event(VRING_PACKED_EVENT_FLAG_DISABLE, 0, false);
    CHECK(!tx_one_notified(), "DISABLE: interrupted");
    set_event(3, 0, false);
    CHECK(tx_one_notified(), "reserved flags value: no interrupt");
    CHECK(deq(NOUT) == 0 && !notified(), "an empty burst interrupted");
    end();

    begin("event suppression DESC with EVENT_IDX: only when the named slot of the named lap is used");
    ring_setup(100, PACKED | EVT, false);
    set_event(VRING_PACKED_EVENT_FLAG_DESC, 2, true);
    CHECK(!tx_one_notified(), "slot 0 used, event at slot 2: interrupted");
    CHECK(!tx_one_notified(), "slot 1 used, event at slot 2: interrupted");
    CHECK(tx_one_notified(), "slot 2 used, event at slot 2: no interrupt");
    CHECK(!tx_one_notified(), "slot 3 used, event at slot 2 (past): interrupted");
    set_event(VRING_PACKED_EVENT_FLAG_DESC, 4, false);
    CHECK(!tx_one_notified(), "slot 4 of lap 1 used, event at slot 4 of lap 2: interrupted");
    /* A burst of three chains, slots 5..7: the event at 6 is inside. */
    set_event(VRING_PACKED_EVENT_FLAG_DESC, 6, true);
    for (int i = 0; i < 3; i++)
        tx_add(HDR + 60, 1, 3);
    CHECK(deq(NOUT) == 3 && notified(), "event at slot 6, slots 5..7 used in one burst: no interrupt");
    end();

    begin("event suppression DESC across the wrap (size 100): slots 98..2 in one burst, event at slot 1 of lap 2");
    ring_setup(100, PACKED | EVT, false);
    g.next_avail = g.next_used = 98;
    vr.last_avail_idx = vr.last_used_idx = 98;
    set_event(VRING_PACKED_EVENT_FLAG_DESC, 1, false);
    for (int i = 0; i < 5; i++)
        tx_add(HDR + 60, 1, 3);
    CHECK(deq(NOUT) == 5 && notified(), "no interrupt");
    for (int i = 0; i < 5; i++) {
        uint16_t id, flags;
        uint32_t len;
        drv_used(&id, &len, &flags);
    }
    set_event(VRING_PACKED_EVENT_FLAG_DESC, 1, true);   /* slot 1 of the lap after next: not yet */
    for (int i = 0; i < 3; i++)
        tx_add(HDR + 60, 1, 3);
    CHECK(deq(NOUT) == 3 && !notified(), "event in a later lap: interrupted");
    end();

    begin("event suppression DESC without EVENT_IDX negotiated: treated as ENABLE");
    ring_setup(100, PACKED, false);
    set_event(VRING_PACKED_EVENT_FLAG_DESC, 50, true);
    CHECK(tx_one_notified(), "no interrupt");
    end();
}

/* === Malformed rings ===================================================== */

/* Each case: the guest offers one bad chain; the ring must end broken with
 * one log line, the burst return 0, nothing used. */
struct bad_case {
    const char *name;
    bool rx;
    uint64_t features;
    void (*offer)(void);
};

static void bad_outside(void) { add_one(GPA + MEM_SIZE - 10, 100, 0); }
static void bad_wraps(void) { add_one(UINT64_MAX - 5, 100, 0); }
static void bad_uva(void) { add_one(UVA + BUF_OFF, 100, 0); }
static void bad_tx_write(void) { add_one(buf_gpa(0, 0), 100, WRITE); }
static void bad_rx_readonly(void) { add_one(buf_gpa(0, 0), 100, 0); }
static void bad_rx_short(void) { add_one(buf_gpa(0, 0), 8, WRITE); }
static void bad_ind_not_negotiated(void) { add_one(GPA + TABLE_OFF, 32, INDIR); }
static void bad_ind_len(void) { add_one(GPA + TABLE_OFF, 24, INDIR); }
static void bad_ind_zero(void) { add_one(GPA + TABLE_OFF, 0, INDIR); }
static void bad_ind_next(void)
{
    uint64_t a[2] = { GPA + TABLE_OFF, buf_gpa(0, 0) };
    uint32_t l[2] = { 32, 100 };
    uint16_t f[2] = { INDIR, 0 };
    drv_add(2, a, l, f);
}
static void bad_ind_entry_outside(void)
{
    struct vring_packed_desc *t = (struct vring_packed_desc *)(host + TABLE_OFF);
    t[0] = (struct vring_packed_desc){ .addr = buf_gpa(0, 0), .len = 100 };
    t[1] = (struct vring_packed_desc){ .addr = GPA + MEM_SIZE - 4, .len = 100 };
    add_one(GPA + TABLE_OFF, 32, INDIR);
}
/* Every slot of the ring with NEXT set: a chain longer than the ring. */
static void bad_endless_chain(void)
{
    for (uint16_t i = 0; i < g.num; i++)
        g.desc[i] = (struct vring_packed_desc){ .addr = buf_gpa(0, 0), .len = 16, .id = i,
                                                .flags = NEXT | AVAIL_F | (vr.index == 0 ? WRITE : 0) };
}

static const struct bad_case bad_cases[] = {
    { "TX buffer past the end of guest memory", false, PACKED, bad_outside },
    { "TX buffer whose address + len wraps around 2^64", false, PACKED, bad_wraps },
    { "TX buffer given as a frontend virtual address", false, PACKED, bad_uva },
    { "TX descriptor marked write-only", false, PACKED, bad_tx_write },
    { "RX descriptor read-only", true, PACKED, bad_rx_readonly },
    { "RX buffer of 8 bytes cannot hold the header", true, PACKED, bad_rx_short },
    { "indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC", false, PACKED, bad_ind_not_negotiated },
    { "indirect table of 24 bytes (not a multiple of 16)", false, PACKED | IND, bad_ind_len },
    { "indirect table of 0 bytes", false, PACKED | IND, bad_ind_zero },
    { "indirect descriptor with NEXT", false, PACKED | IND, bad_ind_next },
    { "indirect table entry outside guest memory", false, PACKED | IND, bad_ind_entry_outside },
    { "TX chain with NEXT on every slot (longer than the ring)", false, PACKED, bad_endless_chain },
    { "RX chain with NEXT on every slot (longer than the ring)", true, PACKED, bad_endless_chain },
};

static void run_bad(const struct bad_case *c)
{
    char name[200];
    snprintf(name, sizeof name, "malformed, %s: ring broken, nothing used, next bursts do nothing", c->name);
    begin(name);
    ring_setup(64, c->features, c->rx);
    c->offer();
    uint8_t before[64 * 16];
    memcpy(before, g.desc, sizeof before);
    fflush(stderr);
    FILE *saved = stderr, *cap = tmpfile();
    stderr = cap;
    struct vx_pkt p = mkpkt(0, 100, 1);
    int ret = c->rx ? vq_enqueue_burst(&vr, &p, 1) : deq(NOUT);
    int ret2 = c->rx ? vq_avail_buffers(&vr) + vq_enqueue_burst(&vr, &p, 1) : deq(NOUT);
    fflush(cap);
    stderr = saved;
    char log[400] = "";
    rewind(cap);
    size_t n = fread(log, 1, sizeof log - 1, cap);
    log[n] = 0;
    fclose(cap);
    CHECK(vr.broken && vr.stats.broken == 1, "broken %d, stats.broken %llu", vr.broken,
          (unsigned long long)vr.stats.broken);
    CHECK(ret == 0 && ret2 == 0, "bursts returned %d and %d", ret, ret2);
    CHECK(memcmp(before, g.desc, sizeof before) == 0, "the descriptor ring was written");
    CHECK(strstr(log, "ring broken") && strchr(log, '\n') == log + strlen(log) - 1,
          "want one \"ring broken\" line, got: %s", log);
    CHECK(!notified(), "the guest was interrupted");
    end();
}

/* === The ring view ======================================================= */

static void t_ring_view(void)
{
    begin("ring view of a packed ring: slots, wrap counters, the next slot, the event areas");
    ring_setup(100, PACKED | EVT, true);
    g.next_avail = g.next_used = 99;
    vr.last_avail_idx = vr.last_used_idx = 99;
    rx_add(1, 512);
    rx_add(1, 512);
    struct vx_pkt p = mkpkt(0, 100, 1);
    vq_enqueue_burst(&vr, &p, 1);
    set_event(VRING_PACKED_EVENT_FLAG_DESC, 7, false);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    vq_ring_view(&vr, f);
    fclose(f);
    CHECK(strstr(text, "size 100, packed, running"), "no \"size 100, packed, running\"");
    CHECK(strstr(text, "last_avail_idx 0 (wrap 0)  last_used_idx 0 (wrap 0)"), "wrong slots or wrap counters");
    CHECK(strstr(text, "available (buffers waiting)"), "slot 0 not shown available");
    CHECK(strstr(text, "driver event: DESC slot 7 wrap 0  device event: DISABLE"), "wrong event areas");
    for (char *l = text; l && *l;) {
        char *nl = strchr(l, '\n');
        printf("#   %.*s\n", nl ? (int)(nl - l) : (int)strlen(l), l);
        l = nl ? nl + 1 : NULL;
    }
    free(text);
    end();
}

/* === Recovery: where a packed ring stands after a restart ================= */

/*
 * A backend that starts on a ring the driver has been using (a new process
 * after a crash, or the same one after GET_VRING_BASE): a fresh vx_vring at
 * SET_VRING_BASE (slot, wrap), the position marked as the frontend's, so that
 * vq_attach() checks it against the ring (virtqueue.c, "Packed ring
 * recovery").  The ring memory and the driver (g) are left as they are.
 * Returns what vq_attach logged.
 */
static const char *restart_at(uint16_t num, uint64_t features, bool rx, uint16_t slot, bool wrap)
{
    static char log[2048];
    memset(&vr, 0, sizeof vr);
    vr.index = rx ? 0 : 1;
    vr.num = num;
    vr.desc_user_addr = UVA + DESC_OFF;
    vr.avail_user_addr = UVA + DRIVER_OFF;
    vr.used_user_addr = UVA + DEVICE_OFF;
    vr.kick_fd = vr.err_fd = -1;
    vr.call_fd = call_fd;
    vr.last_avail_idx = slot;
    vr.avail_wrap_counter = wrap;
    vr.base_from_frontend = true;
    fflush(stderr);
    FILE *saved = stderr, *cap = tmpfile();
    stderr = cap;
    int rc = vq_attach(&vr, &mem, features);
    fflush(cap);
    stderr = saved;
    rewind(cap);
    log[fread(log, 1, sizeof log - 1, cap)] = 0;
    fclose(cap);
    CHECK(rc == 0, "vq_attach returned %d", rc);
    vr.ready = true;
    return log;
}

/* TX: n one-descriptor packets, dequeued and their used descriptors read
 * back by the driver, in order. */
static void tx_single(int n, uint32_t *seed)
{
    for (int done = 0; done < n && case_failures == 0;) {
        int k = n - done < 7 ? n - done : 7;
        uint16_t ids[7];
        for (int i = 0; i < k; i++)
            ids[i] = tx_add(HDR + 60 + (*seed + (uint32_t)i) % 200, 1, *seed + (uint32_t)i);
        int got = deq(NOUT);
        CHECK(got == k, "dequeued %d of %d", got, k);
        for (int i = 0; i < got; i++) {
            uint16_t id, flags;
            uint32_t len, want = 60 + (*seed + (uint32_t)i) % 200;
            CHECK(out[i].len == want && same_as_pattern(out[i].data, want, *seed + (uint32_t)i, 0),
                  "packet %u: len %u, want %u, or bytes differ", *seed + (uint32_t)i, out[i].len, want);
            CHECK(drv_used(&id, &len, &flags) && id == ids[i], "no used descriptor for id %u at slot %u", ids[i],
                  g.next_used);
        }
        *seed += (uint32_t)k;
        done += k;
    }
}

static void t_recovery_fresh(void)
{
    begin("recovery: a fresh ring (all zeros) with 5 one-slot chains offered: base slot 0 wrap 1 kept, nothing "
          "logged; a stale base (slot 7 wrap 0) corrected to slot 0 wrap 1, 5 chains in flight");
    ring_setup(100, PACKED, false);
    uint32_t seed = 1;
    for (int i = 0; i < 5; i++)
        tx_add(HDR + 60, 1, seed + (uint32_t)i);
    const char *log = restart_at(100, PACKED, false, 0, true);
    CHECK(!log[0] && vr.last_avail_idx == 0 && vr.avail_wrap_counter, "at %u/%d, logged: %s", vr.last_avail_idx,
          vr.avail_wrap_counter, log);
    log = restart_at(100, PACKED, false, 7, false);
    CHECK(vr.last_avail_idx == 0 && vr.avail_wrap_counter && vr.last_used_idx == 0 && vr.used_wrap_counter,
          "at %u/%d (used %u/%d), want 0/1", vr.last_avail_idx, vr.avail_wrap_counter, vr.last_used_idx,
          vr.used_wrap_counter);
    CHECK(strstr(log, "ring 1: packed ring: SET_VRING_BASE slot 7 wrap 0 is not where the ring stands") &&
          strstr(log, "slot 0 wrap 1: resuming there, 5 chains in flight") && !strstr(log, "ambiguous"), "log: %s", log);
    CHECK(deq(NOUT) == 5, "the 5 chains offered are not taken");
    end();
}

/* A backend killed after `laps` laps of one-slot TX chains; the driver offers
 * `more` chains while it is down; the new one starts at the stale base of the
 * first start (slot 0, wrap 1), as QEMU 7.2 sends it. */
static void recovery_tx(uint16_t num, int laps, int more)
{
    ring_setup(num, PACKED, false);
    uint32_t seed = 1;
    tx_single(laps * num + num / 2, &seed);
    uint16_t at = g.next_used;
    bool at_wrap = g.used_wrap;
    uint32_t next_seed = seed;
    for (int i = 0; i < more; i++, seed++)
        tx_add(HDR + 60 + seed % 200, 1, seed);
    const char *log = restart_at(num, PACKED, false, 0, true);
    CHECK(vr.last_avail_idx == at && vr.avail_wrap_counter == at_wrap, "resumed at slot %u wrap %d; the driver's "
          "next used slot is %u wrap %d", vr.last_avail_idx, vr.avail_wrap_counter, at, at_wrap);
    char want[96];
    snprintf(want, sizeof want, "resuming there, %d chains in flight", more);
    CHECK(strstr(log, "is not where the ring stands") && strstr(log, want), "log: %s", log);
    /* The chains offered meanwhile come out first, in order, then traffic goes on. */
    int got = deq(NOUT);
    CHECK(got == more, "dequeued %d, want the %d offered while the backend was down", got, more);
    for (int i = 0; i < got; i++) {
        uint16_t id, flags;
        uint32_t len, want_len = 60 + (next_seed + (uint32_t)i) % 200;
        CHECK(out[i].len == want_len && same_as_pattern(out[i].data, want_len, next_seed + (uint32_t)i, 0),
              "packet %d after the restart: len %u, want %u, or bytes differ", i, out[i].len, want_len);
        CHECK(drv_used(&id, &len, &flags), "no used descriptor where the driver looks (slot %u)", g.next_used);
    }
    tx_single(2 * num, &seed);
    check_in_step();
}

/* The same on an RX ring with mergeable buffers: 1-slot 2 KiB buffers,
 * packets of 100-1500 bytes; after the restart each packet lands in the
 * next buffer the driver offered, none used twice or skipped. */
static void recovery_rx(uint16_t num, int laps)
{
    ring_setup(num, PACKED | MRG, true);
    uint32_t seed = 500;
    for (int lap = 0; lap <= laps; lap++) {
        bool restarted = false;
        if (lap == laps) {      /* the crash: a new backend from the stale base */
            const char *log = restart_at(num, PACKED | MRG, true, 0, true);
            CHECK(strstr(log, "is not where the ring stands"), "log: %s", log);
            restarted = true;
        }
        for (int done = 0; done < num && case_failures == 0; done += 8) {
            uint16_t ids[8];
            struct vx_pkt pkts[8];
            for (int i = 0; i < 8; i++) {
                ids[i] = rx_add(1, BUF_SIZE);
                pkts[i] = mkpkt(i, 100 + (seed + (uint32_t)i) * 37 % 1400, seed + (uint32_t)i);
            }
            int sent = vq_enqueue_burst(&vr, pkts, 8);
            CHECK(sent == 8, "%s: delivered %d of 8", restarted ? "after the restart" : "before", sent);
            for (int i = 0; i < sent; i++) {
                uint16_t id, flags;
                uint32_t len;
                CHECK(drv_used(&id, &len, &flags) && id == ids[i] && len == HDR + pkts[i].len,
                      "%s: used {id %u len %u}, want {%u, %u}", restarted ? "after the restart" : "before", id, len,
                      ids[i], HDR + pkts[i].len);
                CHECK(same_as_pattern(host + BUF_OFF + (size_t)id * BUF_SIZE + HDR, pkts[i].len, seed + (uint32_t)i, 0),
                      "frame bytes differ in buffer %u", id);
            }
            seed += 8;
        }
    }
    check_in_step();
}

static void t_recovery(void)
{
    t_recovery_fresh();
    begin("recovery, TX size 100: killed after 3.5 laps, 6 chains offered meanwhile, restarted from the stale base "
          "slot 0 wrap 1: resumes at the driver's slot, the 6 come out first, in order, then 2 more laps");
    recovery_tx(100, 3, 6);
    end();
    begin("recovery, TX size 256: killed after 2.5 laps, nothing offered meanwhile: 0 chains in flight");
    recovery_tx(256, 2, 0);
    end();
    begin("recovery, RX size 256 with mergeable buffers: restarted from the stale base after 3 laps, each packet "
          "lands in the next buffer the driver offered");
    recovery_rx(256, 3);
    end();

    begin("recovery: a normal restart (GET_VRING_BASE's position given back) is kept, nothing logged: chains of 1-3 "
          "slots, and IN_ORDER bursts of several chains under one used descriptor");
    tx_rounds(100, PACKED, 3);
    uint16_t slot = vr.last_avail_idx;
    bool wrap = vr.avail_wrap_counter;
    const char *log = restart_at(100, PACKED, false, slot, wrap);
    CHECK(!log[0] && vr.last_avail_idx == slot && vr.avail_wrap_counter == wrap, "at %u/%d, want %u/%d; logged: %s",
          vr.last_avail_idx, vr.avail_wrap_counter, slot, wrap, log);
    tx_in_order_rounds(100, 3);
    slot = vr.last_avail_idx;
    wrap = vr.avail_wrap_counter;
    log = restart_at(100, PACKED | INO, false, slot, wrap);
    CHECK(!log[0] && vr.last_avail_idx == slot && vr.avail_wrap_counter == wrap, "IN_ORDER: at %u/%d, want %u/%d; "
          "logged: %s", vr.last_avail_idx, vr.avail_wrap_counter, slot, wrap, log);
    end();

    begin("recovery, the ambiguous case: the last chain used took two slots and the base is stale: the shortest "
          "reading (one slot) is taken, and the line says it was ambiguous");
    ring_setup(100, PACKED, false);
    uint32_t seed = 1;
    tx_single(30, &seed);
    tx_add(HDR + 100, 2, seed);     /* two slots, 30 and 31; its id (30) is in slot 31 */
    CHECK(deq(NOUT) == 1, "the two-slot chain is not taken");
    log = restart_at(100, PACKED, false, 0, true);
    CHECK(vr.last_avail_idx == 31 && vr.avail_wrap_counter, "at %u/%d, want slot 31 (the shortest reading)",
          vr.last_avail_idx, vr.avail_wrap_counter);
    CHECK(strstr(log, "ambiguous: the last used descriptor (slot 30, buffer id 30) may stand for a longer chain "
                      "(2 readings)"), "log: %s", log);
    end();

    begin("recovery: a full ring (every slot available, none used in a lap): resumes a lap behind the driver, all "
          "8 chains in flight");
    ring_setup(8, PACKED, false);
    seed = 1;
    tx_single(13, &seed);           /* slot 5 of lap 1 */
    for (int i = 0; i < 8; i++)
        tx_add(HDR + 60, 1, seed + (uint32_t)i);
    log = restart_at(8, PACKED, false, 2, true);
    CHECK(vr.last_avail_idx == 5 && !vr.avail_wrap_counter && strstr(log, "8 chains in flight"),
          "at %u/%d, want 5/0; log: %s", vr.last_avail_idx, vr.avail_wrap_counter, log);
    CHECK(deq(NOUT) == 8, "the 8 chains are not taken");
    end();

    begin("recovery: AVAIL bits that change twice along the ring (no driver writes that): the base is trusted, "
          "one line says why");
    ring_setup(100, PACKED, false);
    g.desc[10].flags = AVAIL_F;
    g.desc[20].flags = AVAIL_F;
    log = restart_at(100, PACKED, false, 40, true);
    CHECK(vr.last_avail_idx == 40 && vr.avail_wrap_counter && strstr(log, "AVAIL bits change more than once") &&
          strstr(log, "SET_VRING_BASE slot 40 wrap 1 trusted"), "at %u/%d; log: %s", vr.last_avail_idx,
          vr.avail_wrap_counter, log);
    end();
}

/* === Live migration: the dirty log ======================================= */

/*
 * As in test_virtqueue.c: with vr.log set (vhost_user.c does it while a
 * migration logs), the pages written must be marked, exactly: here the
 * used descriptors (written over the descriptor ring, on page 0x100) and
 * the RX bytes; the bitmap ends at a guard page.  The packed ring's areas
 * are logged through the memory table, log_guest_addr is not used.
 */

/* The log on for vr: LOG_MAX bytes (pages up to 1023; memory ends at page 0x2ff), all clear. */
static void log_on(void)
{
    log_start(&vr, LOG_MAX);
}

#define DESC_PAGE    PAGE_OF(GPA + DESC_OFF)

static void t_dirty_log(void)
{
    struct vx_pkt p;
    uint16_t id;
    uint32_t len;
    uint16_t flags;

    begin("dirty log: packed RX marks the buffer's two pages (across a page boundary) and the used descriptor's");
    ring_setup(256, PACKED | MRG, true);
    add_one(GPA + 0x100f80, 1024, WRITE);
    log_on();
    p = mkpkt(0, 300, 21);
    CHECK(vq_enqueue_burst(&vr, &p, 1) == 1, "not delivered");
    CHECK(drv_used(&id, &len, &flags) && len == HDR + 300, "used descriptor len %u", len);
    check_marked(&vr, (const uint64_t[]){ DESC_PAGE, PAGE_OF(GPA + 0x100f80), PAGE_OF(GPA + 0x101000) }, 3);
    end();

    begin("dirty log: packed RX over two mergeable buffers (measured, then filled): both buffers' pages");
    ring_setup(256, PACKED | MRG, true);
    add_one(GPA + 0x110000, 100, WRITE);
    add_one(GPA + 0x120000, 2048, WRITE);
    log_on();
    p = mkpkt(0, 500, 22);
    CHECK(vq_enqueue_burst(&vr, &p, 1) == 1, "not delivered");
    check_marked(&vr, (const uint64_t[]){ DESC_PAGE, PAGE_OF(GPA + 0x110000), PAGE_OF(GPA + 0x120000) }, 3);
    end();

    begin("dirty log: packed RX through an indirect table: the buffer's page marked, the table's (only read) not");
    ring_setup(256, PACKED | IND, true);
    struct vring_packed_desc *t = (struct vring_packed_desc *)(host + TABLE_OFF);
    t[0] = (struct vring_packed_desc){ .addr = GPA + 0x130000, .len = 2048, .flags = WRITE };
    add_one(GPA + TABLE_OFF, 16, INDIR);
    log_on();
    p = mkpkt(0, 200, 23);
    CHECK(vq_enqueue_burst(&vr, &p, 1) == 1, "not delivered");
    check_marked(&vr, (const uint64_t[]){ DESC_PAGE, PAGE_OF(GPA + 0x130000) }, 2);
    end();

    begin("dirty log: packed TX marks only the used descriptor's page (TX buffers are only read)");
    ring_setup(256, PACKED, false);
    tx_add(HDR + 60, 1, 24);
    log_on();
    CHECK(deq(NOUT) == 1, "not dequeued");
    check_marked(&vr, (const uint64_t[]){ DESC_PAGE }, 1);
    end();

    begin("dirty log: interrupt mode's device event area write (vq_notify_enable) is marked");
    ring_setup(256, PACKED, true);
    log_on();
    vq_notify_enable(&vr);
    check_marked(&vr, (const uint64_t[]){ PAGE_OF(GPA + DEVICE_OFF) }, 1);
    end();
}

/* === Four at a time ====================================================== */

/* virtqueue.c takes four one-descriptor chains at once when the next four
 * slots hold them (aligned, inside the ring).  Its results must be those of
 * the one-at-a-time path in every shape: the round tests again with chains
 * mostly of one descriptor (the fours taken, broken by a chain of two every
 * ninth and by the ring's end), and a bad chain inside a four. */
static void t_four(void)
{
    mostly_one = true;
    begin("four at a time, TX, size 256: 5 laps of chains mostly of one descriptor (a two every ninth breaks the fours)");
    tx_rounds(256, PACKED, 5);
    end();
    begin("four at a time, TX, size 102 (the last two slots never a four): 7 laps");
    tx_rounds(102, PACKED, 7);
    end();
    begin("four at a time, TX in order, size 100: 7 laps, one used descriptor per burst");
    tx_in_order_rounds(100, 7);
    end();
    begin("four at a time, RX, size 256: 4 laps, buffers mostly of one descriptor");
    rx_rounds(256, 4);
    end();
    begin("four at a time, RX, size 102: 6 laps");
    rx_rounds(102, 6);
    end();
    mostly_one = false;

    begin("four at a time, TX, size 102, from slot 100: the two chains before the ring's end, then two after it; "
          "what lies in memory after the ring (made to look like two available descriptors) is never read as slots");
    ring_setup(102, PACKED, false);
    g.next_avail = g.next_used = 100;
    vr.last_avail_idx = vr.last_used_idx = 100;
    uint16_t tids[4];
    for (int i = 0; i < 4; i++)
        tids[i] = tx_add(HDR + 60 + (uint32_t)i, 1, 600 + (uint32_t)i);
    for (int i = 102; i < 104; i++) {       /* past desc[101]: not the ring */
        uint64_t a;
        tx_fill(50, (uint32_t[]){ HDR + 90 }, 1, 700, &a);
        g.desc[i].addr = a;
        g.desc[i].len = HDR + 90;
        g.desc[i].id = 50;
        g.desc[i].flags = AVAIL_F;          /* "available" in the first lap */
    }
    int tgot = deq(NOUT);
    CHECK(tgot == 4, "dequeued %d, want 4", tgot);
    for (int i = 0; i < tgot; i++) {
        uint16_t id, flags;
        uint32_t len;
        CHECK(out[i].len == 60 + (uint32_t)i && same_as_pattern(out[i].data, out[i].len, 600 + (uint32_t)i, 0),
              "packet %d: %u bytes (want %u) or bytes differ", i, out[i].len, 60 + i);
        CHECK(drv_used(&id, &len, &flags) && id == tids[i], "chain %d: no used descriptor or id %u (want %u)", i, id,
              tids[i]);
    }
    CHECK(vr.last_avail_idx == 2 && !vr.avail_wrap_counter, "backend at slot %u wrap %d, want 2, 0",
          vr.last_avail_idx, vr.avail_wrap_counter);
    end();

    begin("four at a time, TX lend: a chain outside guest memory third in a four: the two before it delivered and "
          "used, ring broken, nothing from it on written");
    lend_malformed(PACKED, 2, true);
    end();
    begin("four at a time, TX lend, IN_ORDER: the same, the two in one used descriptor");
    lend_malformed(PACKED | INO, 2, true);
    end();
    begin("four at a time, TX lend: a chain outside guest memory fourth in a four: the three before it delivered");
    lend_malformed(PACKED, 3, true);
    end();

    begin("four at a time, RX without MRG_RXBUF: the third of four packets too big for its buffer: dropped, the "
          "fourth takes that buffer, the others theirs, in order");
    ring_setup(100, PACKED, true);
    uint16_t ids[4];
    for (int i = 0; i < 4; i++)
        ids[i] = rx_add(1, 300);
    struct vx_pkt pkts[4] = { mkpkt(0, 100, 11), mkpkt(1, 120, 12), mkpkt(2, 1000, 13), mkpkt(3, 140, 14) };
    int sent = vq_enqueue_burst(&vr, pkts, 4);
    CHECK(sent == 3 && pkts[0].len == 100 && pkts[1].len == 120 && pkts[2].len == 140,
          "delivered %d (%u, %u, %u bytes); want 3: 100, 120, 140", sent, pkts[0].len, pkts[1].len, pkts[2].len);
    for (int i = 0; i < 3; i++) {
        uint16_t id, flags;
        uint32_t len;
        CHECK(drv_used(&id, &len, &flags) && id == ids[i] && len == HDR + pkts[i].len &&
                  same_as_pattern(host + BUF_OFF + id * BUF_SIZE + HDR, pkts[i].len, 11u + (uint32_t)(i < 2 ? i : 3), 0),
              "buffer %d: used {id %u len %u}, want {%u, %u}, or bytes differ", i, id, len, ids[i], HDR + pkts[i].len);
    }
    CHECK(vr.stats.drops == 1 && vr.stats.packets == 3 && vq_avail_buffers(&vr) == 1,
          "drops %llu packets %llu, buffers left %d; want 1, 3, 1", (unsigned long long)vr.stats.drops,
          (unsigned long long)vr.stats.packets, vq_avail_buffers(&vr));
    end();
}

int main(void)
{
    unit_init();
    mem_init();
    for (int i = 0; i < NOUT; i++)
        if (!(out_buf[i] = malloc(VX_PKT_MAX)) || !(pkt_buf[i] = malloc(VX_PKT_MAX)))
            return 2;
    call_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (call_fd < 0)
        return 2;

    t_attach();
    t_tx_wrap();
    t_tx_in_order();
    t_tx_indirect();
    t_tx_big();
    t_tx_lend();
    t_rx_wrap();
    t_four();
    t_rx_too_big();
    t_rx_mrg();
    t_rx_indirect();
    t_notify();
    log_map();
    t_dirty_log();
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++)
        run_bad(&bad_cases[i]);
    t_ring_view();
    t_recovery();

    printf("1..%d\n", tap_n);
    if (tap_failed)
        printf("# %d of %d failed\n", tap_failed, tap_n);
    return tap_failed ? 1 : 0;
}
