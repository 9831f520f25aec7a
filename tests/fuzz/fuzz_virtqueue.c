/*
 * tests/fuzz/fuzz_virtqueue.c - libFuzzer target: the split-ring walker
 * (virtqueue.c) over guest memory built from the fuzzer's input.
 *
 * The input is a hostile guest: it lays out one ring (size, feature bits,
 * ring areas, base index, descriptors, indirect tables, buffers, avail and
 * used rings) in one or two regions of guest memory, and then a short script
 * of what happens next: the backend dequeues (guest TX) or enqueues (guest
 * RX) bursts, the guest pokes its memory between bursts, the control thread
 * re-attaches the ring.  Format: fuzz_format.h.
 *
 * What must hold, whatever the input:
 *   - memory safety: each region has PROT_NONE guard pages on both sides,
 *     and every packet buffer ends at an ASan redzone, so a read or write
 *     outside guest memory or past a packet's room is a crash;
 *   - vq_attach() accepts exactly the rings whose three areas lie inside one
 *     region each and are aligned (16/2/4);
 *   - after each burst (check_burst): the count returned is <= n; the
 *     counters agree with it; last_avail_idx moved forward by at most what
 *     the guest published and never past avail->idx; one used entry per
 *     avail entry consumed, each naming a descriptor inside the ring; a ring
 *     whose avail idx ran more than its size ahead is broken; a broken ring
 *     returns 0 and touches nothing; the call eventfd is written exactly
 *     when the guest asked for an interrupt.
 *
 * Packed rings (virtio 1.2 §2.8): header.features bit 4 makes the ring
 * packed, of size 1 + size_log2 (1..256, mostly not powers of two), base
 * slot and wrap counter from last_avail (bit 15).  VQF_AVAIL_IDX then writes
 * the driver event suppression area (flags a, off_wrap b) and
 * VQF_AVAIL_ENTRY the flags of descriptor n (a).  check_burst_packed() holds
 * it to the same rules: counts agree, indices stay inside the ring with
 * last_used == last_avail, a broken ring touches nothing, and the eventfd is
 * written exactly when the driver event area asks for it.
 *
 * Build and run: `make fuzz` (see tests/fuzz/run.sh).  Product logs are
 * silenced; VX_FUZZ_LOG=1 shows them (useful when replaying one input).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "vhost_xdp.h"
#include "fuzz_format.h"

#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

static FILE *out;               /* the real stderr: product logs go to /dev/null */

#define CHECK(cond) do { if (!(cond)) fail(__LINE__, #cond); } while (0)

static void fail(int line, const char *cond)
{
    fprintf(out, "fuzz_virtqueue.c:%d: invariant broken: %s\n", line, cond);
    fflush(out);
    abort();
}

static uint8_t *region[2];      /* our two regions, each between guard pages */
static struct vx_mem mem;
static int call_fd = -1;
static uint8_t *pkt_buf[VX_BURST];  /* VX_PKT_MAX bytes each: a packet uses the end */

static void init(void)
{
    out = stderr;
    if (!getenv("VX_FUZZ_LOG")) {
        FILE *null = fopen("/dev/null", "w");
        if (null)
            stderr = null;      /* glibc allows it; vx_log() writes to stderr */
    }
    long page = sysconf(_SC_PAGESIZE);
    for (int i = 0; i < 2; i++) {
        uint8_t *p = mmap(NULL, VQF_REGION + 2 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED || mprotect(p + page, VQF_REGION, PROT_READ | PROT_WRITE))
            abort();
        region[i] = p + page;
    }
    call_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (call_fd < 0)
        abort();
    for (int i = 0; i < VX_BURST; i++)
        if (!(pkt_buf[i] = malloc(VX_PKT_MAX)))
            abort();
}

/* Is [off, off + len) of frontend virtual space inside one region, aligned? */
static bool area_ok(uint32_t off, uint64_t len, uint32_t align)
{
    uint32_t r = off / VQF_REGION, in = off % VQF_REGION;
    return r < mem.nregions && len <= VQF_REGION - in && in % align == 0;
}

/* Guest memory in frontend-virtual order: region 0, then region 1. */
static uint8_t *guest_at(uint32_t off)
{
    return region[off / VQF_REGION] + off % VQF_REGION;
}

static bool eventfd_fired(void)
{
    uint64_t v;
    return read(call_fd, &v, sizeof v) == sizeof v && v > 0;
}

/* === One burst and everything that must hold around it =================== */

struct ring_snapshot {
    uint16_t last_avail, last_used;
    bool avail_wrap, used_wrap;
    bool broken;
    struct vx_ring_stats stats;
};

static struct ring_snapshot snap(const struct vx_vring *vr)
{
    return (struct ring_snapshot){ vr->last_avail_idx, vr->last_used_idx, vr->avail_wrap_counter,
                                   vr->used_wrap_counter, vr->broken, vr->stats };
}

/* Packed: did the driver event area ask for an interrupt after the device
 * used the slots from (old, old_wrap) to (new, new_wrap)?  §2.8.10, counted
 * round a track of two laps. */
static bool packed_want_call(const struct vx_vring *vr, const struct ring_snapshot *s0, const struct ring_snapshot *s1)
{
    if (s0->last_used == s1->last_used && s0->used_wrap == s1->used_wrap)
        return false;
    uint16_t flags = vr->driver_event->flags, off_wrap = vr->driver_event->off_wrap;
    if (flags != VRING_PACKED_EVENT_FLAG_DESC || !vr->event_idx)
        return flags != VRING_PACKED_EVENT_FLAG_DISABLE;
    uint32_t num = vr->num, track = 2 * num;
    uint32_t ev = ((off_wrap & 0x7fffu) + ((off_wrap >> 15) ? 0 : num)) % track;
    uint32_t old = s0->last_used + (s0->used_wrap ? 0 : num), new = s1->last_used + (s1->used_wrap ? 0 : num);
    uint32_t since_event = (new + 2 * track - ev - 1) % track, used = (new + track - old) % track;
    return since_event < used;
}

static void check_burst_packed(struct vx_vring *vr, bool dequeue, int n, int ret, const struct ring_snapshot *s0,
                               const struct vx_pkt *pkts, uint32_t room, const struct vx_pkt *big)
{
    struct ring_snapshot s1 = snap(vr);
    int in_big = big && big->len;       /* vq_dequeue_burst_big: a packet in big, counted too */
    CHECK(ret >= 0 && ret + in_big <= n);
    CHECK(s1.stats.packets - s0->stats.packets == (uint64_t)(ret + in_big));
    CHECK(!in_big || (big->len <= big->room && (big->len > room || big->hdr.gso_type)));
    CHECK(s1.stats.broken == (s1.broken ? 1u : 0u));
    CHECK(!s0->broken || s1.broken);
    CHECK(s1.last_avail < vr->num && s1.last_used == s1.last_avail && s1.used_wrap == s1.avail_wrap);
    if (s0->broken) {
        CHECK(ret == 0 && s1.last_avail == s0->last_avail && s1.avail_wrap == s0->avail_wrap);
        CHECK(s1.stats.drops - s0->stats.drops == (dequeue ? 0u : (uint64_t)n));
        CHECK(!eventfd_fired());
        return;
    }
    if (dequeue) {
        uint64_t bytes = in_big ? big->len : 0;
        for (int i = 0; i < ret; i++) {
            CHECK(pkts[i].len <= room);
            CHECK(!big || !pkts[i].hdr.gso_type || !pkts[i].len);   /* with big, a TSO packet goes there */
            bytes += pkts[i].len;
        }
        CHECK(s1.stats.bytes - s0->stats.bytes == bytes);
    } else {
        CHECK(s1.stats.packets - s0->stats.packets + s1.stats.drops - s0->stats.drops == (uint64_t)n);
    }
    CHECK(eventfd_fired() == (vr->call_fd >= 0 && packed_want_call(vr, s0, &s1)));
}

static void check_burst(struct vx_vring *vr, bool dequeue, int n, int ret, const struct ring_snapshot *s0,
                        uint16_t avail_idx, const struct vx_pkt *pkts, uint32_t room, uint64_t len_sum,
                        const struct vx_pkt *big)
{
    struct ring_snapshot s1 = snap(vr);
    uint16_t adv = s1.last_avail - s0->last_avail, used_adv = s1.last_used - s0->last_used;
    uint16_t pending = avail_idx - s0->last_avail;
    int in_big = big && big->len;       /* vq_dequeue_burst_big: a packet in big, counted too */

    CHECK(ret >= 0 && ret + in_big <= n);
    CHECK(s1.stats.packets - s0->stats.packets == (uint64_t)(ret + in_big));
    CHECK(!in_big || (big->len <= big->room && (big->len > room || big->hdr.gso_type)));
    CHECK(s1.stats.broken == (s1.broken ? 1u : 0u));   /* marked once, never cleared here */
    CHECK(!s0->broken || s1.broken);
    if (s0->broken || pending > vr->num) {
        /* Broken before, or becomes broken now: nothing moves. */
        CHECK(s1.broken);
        CHECK(ret == 0 && adv == 0 && used_adv == 0);
        CHECK(s1.stats.bytes == s0->stats.bytes);
        CHECK(s1.stats.drops - s0->stats.drops == (dequeue ? 0u : (uint64_t)n));
        CHECK(!eventfd_fired());
        return;
    }
    /* Never past what the guest published; one used entry per avail entry. */
    CHECK(adv <= pending);
    CHECK(used_adv == adv);
    CHECK((uint16_t)(avail_idx - s1.last_avail) <= pending);
    if (dequeue) {
        CHECK(ret + in_big <= adv);
        CHECK(s1.stats.drops - s0->stats.drops == (uint64_t)(adv - ret - in_big));
        uint64_t bytes = in_big ? big->len : 0;
        for (int i = 0; i < ret; i++) {
            CHECK(pkts[i].len <= room);
            CHECK(!big || !pkts[i].hdr.gso_type || !pkts[i].len);   /* with big, a TSO packet goes there */
            bytes += pkts[i].len;
        }
        CHECK(s1.stats.bytes - s0->stats.bytes == bytes);
    } else {
        CHECK(s1.stats.packets - s0->stats.packets + s1.stats.drops - s0->stats.drops == (uint64_t)n);
        CHECK(s1.stats.bytes - s0->stats.bytes <= len_sum);
        CHECK(ret <= adv);
        if (!vr->mrg_rxbuf)
            CHECK(ret == adv);  /* one chain per packet, and a chain is used only by a packet */
    }
    /* The used entries we published name descriptors inside the ring.  Only
     * checked on TX: on RX the guest may have placed a receive buffer over
     * its own used ring, and then the packet bytes land there too (its loss,
     * not a fault of ours). */
    for (uint16_t i = s0->last_used; dequeue && i != s1.last_used; i++) {
        const struct vring_used_elem *e = &vr->used->ring[i & (vr->num - 1)];
        CHECK(e->id < vr->num);
        CHECK(e->len == 0);
    }
    if (used_adv)
        CHECK(vr->used->idx == s1.last_used);
    /* An interrupt exactly when the guest asked for one (§2.7.10). */
    bool want = false;
    if (used_adv && vr->call_fd >= 0) {
        if (vr->event_idx)
            want = vring_need_event(vr->avail->ring[vr->num], s1.last_used, s0->last_used);
        else
            want = !(vr->avail->flags & VRING_AVAIL_F_NO_INTERRUPT);
    }
    CHECK(eventfd_fired() == want);
}

/* Guest TX: a burst of n, each packet's room `a`; with b bit 0, towards a
 * port of small buffers (vq_dequeue_burst_big, as the AF_XDP port): a TSO
 * packet, or one longer than its room, lands in big (VX_PKT_MAX, ending at
 * a redzone), and the burst then goes through offload.c as to a NIC. */
static uint8_t *big_buf;

static void do_dequeue(struct vx_vring *vr, const struct vqf_op *op)
{
    int n = op->n % (VX_BURST + 1);
    uint32_t room = op->a;
    struct vx_pkt pkts[VX_BURST];
    for (int i = 0; i < n; i++)     /* the room ends at the buffer's ASan redzone */
        pkts[i] = (struct vx_pkt){ .len = 0xdeadbeef, .room = room, .data = pkt_buf[i] + VX_PKT_MAX - room };
    struct ofl_cut cut = { .big = { .room = VX_PKT_MAX, .data = big_buf } };
    struct vx_pkt *big = (op->b & 1) ? &cut.big : NULL;
    struct ring_snapshot s0 = snap(vr);
    uint16_t avail_idx = vr->packed ? 0 : vr->avail->idx;
    int ret = big ? vq_dequeue_burst_big(vr, pkts, n, big) : vq_dequeue_burst(vr, pkts, n);
    if (vr->packed)
        check_burst_packed(vr, true, n, ret, &s0, pkts, room, big);
    else
        check_burst(vr, true, n, ret, &s0, avail_idx, pkts, room, 0, big);
    if (big && room >= 128) {       /* what the AF_XDP port does next; room: a frame holds headers */
        int filled = ofl_to_nic(&cut, vr, pkts, ret, n);
        CHECK(filled >= 0 && filled <= n);
        for (int polls = 0; cut.big.len && polls < 1100; polls++)
            filled = ofl_to_nic(&cut, vr, pkts, 0, n ? n : 1);
        CHECK(cut.big.len == 0 || n == 0);
    }
}

static void do_enqueue(struct vx_vring *vr, const struct vqf_op *op)
{
    int n = op->n % (VX_BURST + 1);
    struct vx_pkt pkts[VX_BURST];
    uint64_t sum = 0;
    for (int i = 0; i < n; i++) {
        uint32_t len = (op->a + (uint32_t)i * (op->b & 0xffff)) % (VX_PKT_MAX + 1);
        /* Reading past len runs into the buffer's ASan redzone. */
        pkts[i] = (struct vx_pkt){ .len = len, .room = len, .data = pkt_buf[i] + VX_PKT_MAX - len };
        sum += len;
    }
    struct ring_snapshot s0 = snap(vr);
    if (vr->packed) {
        int ret = vq_enqueue_burst(vr, pkts, n);
        check_burst_packed(vr, false, n, ret, &s0, pkts, 0, NULL);
        return;
    }
    uint16_t avail_idx = vr->avail->idx;
    int ret = vq_enqueue_burst(vr, pkts, n);
    check_burst(vr, false, n, ret, &s0, avail_idx, pkts, 0, sum, NULL);
}

/* === The input ============================================================ */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool initialised;
    if (!initialised) {
        init();
        for (int i = 0; i < VX_BURST; i++)
            memset(pkt_buf[i], 0x5a, VX_PKT_MAX);
        big_buf = malloc(VX_PKT_MAX);
        initialised = true;
    }
    struct vqf_header h;
    if (size < sizeof h)
        return 0;
    memcpy(&h, data, sizeof h);
    data += sizeof h, size -= sizeof h;
    uint32_t nops = h.nops % (VQF_MAX_OPS + 1);
    if (size < nops * sizeof(struct vqf_op))
        nops = size / sizeof(struct vqf_op);
    struct vqf_op ops[VQF_MAX_OPS];
    memcpy(ops, data, nops * sizeof ops[0]);
    data += nops * sizeof ops[0], size -= nops * sizeof ops[0];

    /* Guest memory: the rest of the input, then zeros. */
    mem.nregions = (h.layout & 2) ? 1 : 2;
    for (uint32_t i = 0; i < 2; i++) {
        size_t take = size > VQF_REGION ? VQF_REGION : size;
        memcpy(region[i], data, take);
        memset(region[i] + take, 0, VQF_REGION - take);
        data += take, size -= take;
        mem.regions[i] = (struct vx_mem_region){
            .guest_phys_addr = i == 0 ? VQF_GPA0 : (h.layout & 1) ? VQF_GPA1_FAR : VQF_GPA0 + VQF_REGION,
            .memory_size = VQF_REGION,
            .userspace_addr = VQF_UVA0 + i * VQF_REGION,
            .host = region[i],
        };
    }
    uint32_t span = 2 * VQF_REGION;

    /* The ring, as vhost_user.c leaves it just before vq_attach(). */
    uint64_t features = 0;
    if (h.features & 1) features |= 1ull << VIRTIO_NET_F_MRG_RXBUF;
    if (h.features & 2) features |= 1ull << VIRTIO_RING_F_INDIRECT_DESC;
    if (h.features & 4) features |= 1ull << VIRTIO_RING_F_EVENT_IDX;
    if (h.features & 8) features |= 1ull << VIRTIO_F_VERSION_1;
    bool packed = h.features & 16;
    if (packed) features |= 1ull << VIRTIO_F_RING_PACKED;
    if (h.features & 32) features |= 1ull << VIRTIO_NET_F_CSUM | 1ull << VIRTIO_NET_F_HOST_TSO4 |
                                     1ull << VIRTIO_NET_F_HOST_TSO6 | 1ull << VIRTIO_NET_F_HOST_ECN;
    struct vx_vring vr = { .index = 1, .num = packed ? (uint16_t)(1 + h.size_log2) : (uint16_t)(1u << (h.size_log2 % 9)),
                           .kick_fd = -1, .call_fd = (h.layout & 4) ? call_fd : -1, .err_fd = -1,
                           .last_avail_idx = packed ? h.last_avail & 0x7fff : h.last_avail,
                           .avail_wrap_counter = h.last_avail >> 15 };
    uint32_t desc_off = h.desc_off % span, avail_off = h.avail_off % span, used_off = h.used_off % span;
    vr.desc_user_addr = VQF_UVA0 + desc_off;
    vr.avail_user_addr = VQF_UVA0 + avail_off;
    vr.used_user_addr = VQF_UVA0 + used_off;
    vr.addr_set = vr.kick_received = vr.enabled = true;

    bool expect = packed ? area_ok(desc_off, 16ull * vr.num, 16) && area_ok(avail_off, 4, 4) &&
                           area_ok(used_off, 4, 4) && vr.last_avail_idx < vr.num
                         : area_ok(desc_off, 16ull * vr.num, 16) && area_ok(avail_off, 6 + 2ull * vr.num, 2) &&
                           area_ok(used_off, 6 + 8ull * vr.num, 4);
    int r = vq_attach(&vr, &mem, features);
    CHECK((r == 0) == expect);
    if (r < 0)
        return 0;
    CHECK(vr.hdr_len == ((features & ((1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_NET_F_MRG_RXBUF))) ? 12u : 10u));
    CHECK(packed ? vr.last_used_idx == vr.last_avail_idx : vr.last_used_idx == vr.used->idx);
    eventfd_fired();    /* start from a quiet eventfd */

    for (uint32_t k = 0; k < nops; k++) {
        const struct vqf_op *op = &ops[k];
        switch (op->kind % VQF_NOPS) {
        case VQF_DEQUEUE:
            do_dequeue(&vr, op);
            break;
        case VQF_ENQUEUE:
            do_enqueue(&vr, op);
            break;
        case VQF_POKE: {
            uint32_t off = ((uint32_t)op->n << 16 | op->a) % (mem.nregions * VQF_REGION);
            uint32_t len = VQF_REGION - off % VQF_REGION;
            memcpy(guest_at(off), &op->b, len < 4 ? len : 4);
            break;
        }
        case VQF_AVAIL_IDX:
            if (packed)
                vr.driver_event->flags = op->a, vr.driver_event->off_wrap = (uint16_t)op->b;
            else
                vr.avail->idx = op->a;
            break;
        case VQF_AVAIL_ENTRY:
            if (packed)
                vr.desc_packed[op->n % vr.num].flags = op->a;
            else
                vr.avail->ring[op->n % vr.num] = op->a;
            break;
        case VQF_REATTACH: {
            bool broken = vr.broken;
            CHECK(vq_attach(&vr, &mem, features) == 0);
            CHECK(vr.broken == broken);     /* a broken ring stays broken */
            CHECK(packed ? vr.last_used_idx == vr.last_avail_idx : vr.last_used_idx == vr.used->idx);
            break;
        }
        }
    }
    eventfd_fired();
    return 0;
}
